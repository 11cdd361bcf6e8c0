// The SMPP command_status a submit_sm_resp carries for a decision or a carrier outcome: the names and defaults, and
// SMPP_STATUS_MAP, are domain/smpp-status.ts's (config.ts reads them); this maps our outcomes onto them.

import { SMPP_ERRORS as E, type SmppOutcome, type SmppStatusMap } from '../domain/smpp-status.js'
import { ALLOWED_BY_REASON, type Reason } from '../policy/decide.js'
import type { OutcomeStatus } from '../carriers/upstream.js'

/** The policy reasons that block a message: the ones with an outcome of their own. */
export type BlockingReason = Extract<Reason, SmppOutcome>

const CARRIER_OUTCOME: Readonly<Record<Exclude<OutcomeStatus, 'accepted'>, SmppOutcome>> = Object.freeze({
  rejected: 'CARRIER_REJECTED',
  failed: 'CARRIER_FAILED',
  timeout: 'CARRIER_TIMEOUT',
  circuit_open: 'CARRIER_CIRCUIT_OPEN',
  no_upstream: 'NO_UPSTREAM',
  unknown: 'CARRIER_UNKNOWN'
})

/** The status for a policy decision: ESME_ROK (0) when its reason allows the message (forward it), else the reason's. */
export function statusOfReason (map: SmppStatusMap, reason: Reason): number {
  if (ALLOWED_BY_REASON[reason]) return E.ESME_ROK
  // A blocking reason added to the policy without an outcome here is a system error, never a success.
  return (map as Readonly<Record<string, number>>)[reason] ?? E.ESME_RSYSERR
}

/** The status for an upstream outcome that did not forward the message. */
export function statusOfOutcome (map: SmppStatusMap, status: Exclude<OutcomeStatus, 'accepted'>): number {
  return map[CARRIER_OUTCOME[status]]
}

