// The fault suite's truth: every consent row in Postgres, and the judgement of one answer against it; and what
// counts as a documented 5xx.

import type pg from 'pg'
import { ERRORS } from '../../src/domain/errors.js'

export type Status = 'ONAY' | 'RET'

/** Recipients the poison bodies and the fuzz write consents for: the load generator leaves them alone. */
export const POISON_RECIPIENTS: ReadonlySet<string> = new Set(['+905321234567', 'a@b.co'])
export const truthKey = (brand: string, type: string, rt: string, recipient: string): string => `${brand}|${type}|${rt}|${recipient}`

export type Wrong = 'retAllowed' | 'noOnayAllowed' | 'wrongBlocked' | 'wrongReason'

export class Truth {
  map = new Map<string, Status>()
  /** Keys that changed recently: until `until`, an answer right for the previous status is right too. */
  private readonly flux = new Map<string, { prev: Status | undefined, until: number }>()
  /** Recipients per (brand|type|rt) group, for the load generator. */
  groups = new Map<string, string[]>()
  brands: string[] = []

  async load (pool: pg.Pool): Promise<void> {
    const { rows } = await pool.query<{ b: string, t: string, r: string, rc: string, s: Status }>(
      'SELECT brand_code::text AS b, type AS t, recipient_type AS r, recipient AS rc, status AS s FROM consents')
    const map = new Map<string, Status>()
    const groups = new Map<string, string[]>()
    for (const x of rows) {
      map.set(truthKey(x.b, x.t, x.r, x.rc), x.s)
      if (POISON_RECIPIENTS.has(x.rc)) continue
      const g = `${x.b}|${x.t}|${x.r}`
      let list = groups.get(g)
      if (list === undefined) groups.set(g, list = [])
      list.push(x.rc)
    }
    this.map = map
    this.groups = groups
    this.brands = [...new Set(rows.map(x => x.b))].sort()
  }

  /** Reloads from Postgres; keys whose status changed are in flux until `until` (ms; both answers count as right). */
  async reload (pool: pg.Pool, until: number): Promise<number> {
    const old = this.map
    await this.load(pool)
    let changed = 0
    for (const [k, s] of this.map) if (old.get(k) !== s) { this.flux.set(k, { prev: old.get(k), until }); changed++ }
    for (const [k, s] of old) if (!this.map.has(k)) { this.flux.set(k, { prev: s, until }); changed++ }
    return changed
  }

  /** Marks one key changed now (a write the suite made itself). */
  set (key: string, status: Status, fluxMs: number): void {
    this.flux.set(key, { prev: this.map.get(key), until: Date.now() + fluxMs })
    this.map.set(key, status)
  }

  /** Moves the end of every open flux window to `until` (ms). */
  fluxUntil (until: number): void { for (const f of this.flux.values()) f.until = until }

  /** Ends every flux window now (the change is known to be applied everywhere). */
  settle (): void { this.flux.clear() }

  /**
   * Judges one commercial answer. STORE_UNAVAILABLE blocked is always right (fail closed); otherwise the answer must
   * be the policy's answer for the truth (TACIR without a record allowed, the default).
   */
  judge (key: string, rt: string, allowed: boolean, reason: string, at: number): Wrong | null {
    if (reason === 'STORE_UNAVAILABLE' && !allowed) return null
    const now = this.map.get(key)
    const f = this.flux.get(key)
    const candidates: (Status | undefined)[] = f !== undefined && at <= f.until ? [now, f.prev] : [now]
    for (const s of candidates) {
      const expAllowed = s === 'ONAY' || (s === undefined && rt === 'TACIR')
      const expReason = s === 'ONAY' ? 'CONSENT' : s === 'RET' ? 'REJECTED' : rt === 'TACIR' ? 'TACIR_NO_RECORD' : 'NO_CONSENT'
      if (allowed === expAllowed && reason === expReason) return null
    }
    if (allowed) {
      if (candidates.every(s => s === 'RET')) return 'retAllowed'
      if (rt === 'BIREYSEL' && candidates.every(s => s !== 'ONAY')) return 'noOnayAllowed'
      if (candidates.some(s => s === 'RET')) return 'retAllowed'
      return 'wrongReason'
    }
    return candidates.some(s => s === 'ONAY' || (s === undefined && rt === 'TACIR')) ? 'wrongBlocked' : 'wrongReason'
  }
}

// ---------------------------------------------------------------------------------------------------------------
// What counts as a documented 5xx: a 503 (or other non-500 5xx) whose error body carries a code of the ERRORS list
// with that very status. A 500 (H015, the safety net for an unexpected exception) is a defect found.

const documented5xx = new Set(Object.entries(ERRORS).filter(([, e]) => e.status >= 500 && e.status !== 500).map(([code, e]) => `${e.status} ${code}`))

export function isDocumented5xx (status: number, body: string): boolean {
  try {
    const code = (JSON.parse(body) as { errors?: { code?: string }[] }).errors?.[0]?.code
    return documented5xx.has(`${status} ${String(code)}`)
  } catch { return false }
}
