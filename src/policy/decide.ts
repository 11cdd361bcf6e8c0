// The policy of DESIGN.md §1 as one pure function: no I/O, no protocol. HTTP, scrub workers and (later) the SMPP
// and SMTP front ends all turn their input into these arguments and back.

import type { RecipientType } from '../domain/vocabulary.js'
import type { ConsentState } from '../filter/state.js'

export const REASONS = [
  'CONSENT', 'REJECTED', 'NO_CONSENT', 'TACIR_NO_RECORD', 'INFORMATIONAL', 'INVALID_RECIPIENT', 'STORE_UNAVAILABLE'
] as const
export type Reason = (typeof REASONS)[number]

/** Each reason's position in REASONS: compact per-line codes (scrub) and per-reason counters (metrics). */
export const REASON_INDEX: Readonly<Record<Reason, number>> = Object.freeze(Object.fromEntries(REASONS.map((r, i) => [r, i])) as Record<Reason, number>)

export const ALLOWED_BY_REASON: Readonly<Record<Reason, boolean>> = Object.freeze({
  CONSENT: true,
  REJECTED: false,
  NO_CONSENT: false,
  TACIR_NO_RECORD: true,
  INFORMATIONAL: true,
  INVALID_RECIPIENT: false,
  STORE_UNAVAILABLE: false
})

export interface PolicyOptions {
  /** Rule 3: a TACIR recipient with no record is allowed (opt-out regime) unless this is false. */
  readonly tacirAllowedWithoutRecord: boolean
}

/**
 * Decides a commercial message to a valid recipient from the latest record for its key (null: no record).
 * Informational messages and invalid recipients are decided before a lookup is made, by the caller, because
 * they need no state: see checker.ts.
 */
export function decide (recipientType: RecipientType, state: ConsentState | null, policy: PolicyOptions): Reason {
  if (state !== null) return state.status === 'ONAY' ? 'CONSENT' : 'REJECTED'
  if (recipientType === 'TACIR') return policy.tacirAllowedWithoutRecord ? 'TACIR_NO_RECORD' : 'NO_CONSENT'
  return 'NO_CONSENT'
}
