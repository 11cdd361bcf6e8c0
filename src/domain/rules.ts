// İYS's state rules for a consent write, as one pure function. The bulk import applies the same rules in SQL
// (loaders/import.ts); test/rules.test.ts checks that both agree.
//
// Who is the authority decides which rules apply:
// - 'provider' writes (our İYS-shaped API, `import --rules provider`) follow İYS's checks for a provider's write:
//   H175 a first record cannot be RET, H174 the status must change, H178 the date cannot be older than the stored one.
// - 'iys' writes (push notifications, pulled changes, `import` by default) already passed İYS: they are facts. One that is not newer
//   than what we hold is stale (we have it, or something later), anything else is applied, even a first RET
//   (a citizen can reject through İYS a brand that never told us about the consent).

import type { ConsentStatus } from './vocabulary.js'

export type Authority = 'provider' | 'iys'

export interface StoredState {
  status: ConsentStatus
  /** epoch seconds */
  consentDate: number
}

export type Verdict = 'apply' | 'stale' | 'H174' | 'H175' | 'H178'

export function judge (current: StoredState | null, status: ConsentStatus, consentDate: number, authority: Authority): Verdict {
  if (authority === 'iys') {
    if (current !== null && consentDate <= current.consentDate && status === current.status) return 'stale'
    if (current !== null && consentDate < current.consentDate) return 'stale'
    return 'apply'
  }
  if (current === null) return status === 'RET' ? 'H175' : 'apply'
  if (consentDate < current.consentDate) return 'H178'
  if (status === current.status) return 'H174'
  return 'apply'
}
