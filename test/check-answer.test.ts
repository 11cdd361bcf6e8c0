// The /v1/check answer is written straight into bytes (http/check-request.ts serializeResults): it must be exactly
// the JSON of the same results, UTF-8, whatever the caller's input holds.

import { describe, expect, it } from 'vitest'
import type { CheckResult } from '../src/check/checker.js'
import { formatIysDate } from '../src/domain/time.js'
import { serializeResults } from '../src/http/check-request.js'
import { mulberry32 } from '../src/util/random.js'

/** The answer as JSON.stringify would write it: the reference the byte writer is held to. */
function reference (results: readonly CheckResult[]): string {
  return JSON.stringify({
    results: results.map(r => ({
      recipient: r.recipient === undefined ? null : r.recipient,
      normalized: r.normalized,
      allowed: r.allowed,
      reason: r.reason,
      ...(r.state !== undefined ? { consent: { status: r.state.status, source: r.state.source, consentDate: formatIysDate(r.state.consentDate) } } : {}),
      ...(r.error !== undefined ? { error: { code: r.error.code, message: r.error.message } } : {})
    }))
  })
}

const SOURCES = ['HS_WEB', 'IYS_KISAMESAJ', 'HS_FIZIKSEL_ORTAM', 'HS_MESAJ'] as const
const ODD = ['ali', 'çağrı@örnek.com.tr', '😀+90532', '"quoted"\\back', 'tab\there', 'nul\u0000', '\uD800lone', 'line\nbreak', '']

describe('the check answer', () => {
  it('is byte for byte the UTF-8 of the JSON of its results, for odd inputs and long batches', () => {
    const rnd = mulberry32(7)
    for (let round = 0; round < 50; round++) {
      const n = 1 + Math.floor(rnd() * (round < 45 ? 20 : 1000))
      const results: CheckResult[] = []
      for (let i = 0; i < n; i++) {
        const kind = rnd()
        const recipient: unknown = kind < 0.1 ? ODD[Math.floor(rnd() * ODD.length)] : kind < 0.15 ? 12345 : kind < 0.17 ? { a: 'ş' } : kind < 0.19 ? undefined : '+90532' + Math.floor(1e6 + rnd() * 9e6)
        const roll = rnd()
        const status = roll < 0.35 ? 'ONAY' : roll < 0.5 ? 'RET' : null
        const r: CheckResult = { recipient, normalized: rnd() < 0.1 ? null : '+905321234567', allowed: status === 'ONAY', reason: status === 'ONAY' ? 'CONSENT' : status === 'RET' ? 'REJECTED' : 'NO_CONSENT' }
        // dates from 1970 to 2033 (the date is written as digits, formatIysDate is the reference), a few sources
        if (status !== null) r.state = { status, source: SOURCES[Math.floor(rnd() * SOURCES.length)]!, consentDate: Math.floor(rnd() * 2e9), seq: i }
        if (rnd() < 0.05) r.error = { code: 'H121', message: 'Alıcı (recipient) için E164 "biçim" \\ gerekli' }
        results.push(r)
      }
      const bytes = serializeResults(results)
      expect(Buffer.from(bytes).equals(Buffer.from(reference(results), 'utf8'))).toBe(true)
      expect(JSON.parse(bytes.toString('utf8'))).toEqual(JSON.parse(reference(results)))
    }
  })
})
