// The differential check shared by the differential tests (one Redis, a Redis Cluster): random checks answered by a
// gateway and by a plain SQL query over the same Postgres data. The SQL side is written from DESIGN.md §1 directly
// and shares no code with the gateway; the items carry the canonical recipient the test built and a messy rendering
// of it as the input.

import type pg from 'pg'
import { messyPhone } from '../../loaders/generate.js'
import { mulberry32 } from '../../src/util/random.js'
import { check } from './gateway.js'

const TYPES = ['MESAJ', 'ARAMA', 'EPOSTA'] as const
const RTS = ['BIREYSEL', 'TACIR'] as const

export interface Item {
  brand: string
  type: string
  rt: string
  commercial: boolean
  canonical: string | null // null: the input is invalid for this type by construction
  input: string
}

export interface Answer { allowed: boolean, reason: string }

/** `n` random check items over the keys in `consents`: present, absent, rejected, every type, messy input. */
export async function randomItems (pool: pg.Pool, n: number, seed: number): Promise<Item[]> {
  const rnd = mulberry32(seed)
  const { rows: keys } = await pool.query<{ b: string, t: string, r: string, rc: string }>(
    'SELECT brand_code::text AS b, type AS t, recipient_type AS r, recipient AS rc FROM consents')
  const brands = [...new Set(keys.map(k => k.b))]
  const pickOf = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
  const messyEmail = (e: string): string => (rnd() < 0.5 ? e.toUpperCase() : e) + (rnd() < 0.3 ? ' ' : '')
  const randomPhone = (): string => '+905' + String(Math.floor(rnd() * 1e9)).padStart(9, '0')

  const items: Item[] = []
  for (let i = 0; i < n; i++) {
    const roll = rnd()
    const commercial = rnd() < 0.92
    let brand: string; let type: string; let rt: string; let canonical: string | null
    if (roll < 0.55) { // a stored key exactly
      const k = pickOf(keys); brand = k.b; type = k.t; rt = k.r; canonical = k.rc
    } else if (roll < 0.75) { // a stored recipient under another brand, type or recipient type
      const k = pickOf(keys); brand = pickOf(brands); rt = pickOf(RTS); canonical = k.rc
      type = k.t === 'EPOSTA' ? 'EPOSTA' : pickOf(['MESAJ', 'ARAMA'])
    } else if (roll < 0.97) { // nobody
      brand = pickOf(brands); rt = pickOf(RTS); type = pickOf(TYPES)
      canonical = type === 'EPOSTA' ? `nobody${Math.floor(rnd() * 1e9)}@example.org` : randomPhone()
    } else { // invalid input: garbage, or a channel that does not fit the recipient
      brand = pickOf(brands); rt = pickOf(RTS); type = pickOf(TYPES); canonical = null
    }
    let input: string
    if (canonical === null) input = pickOf(['abc', '+90532', '', '05321234567@', type === 'EPOSTA' ? '+905321234567' : 'x@example.com'])
    else input = canonical.startsWith('+') ? messyPhone(canonical, rnd) : messyEmail(canonical)
    items.push({ brand, type, rt, commercial, canonical, input })
  }
  return items
}

/** The gateway's answers: grouped by query parameters, batches of up to 1000, a few requests in flight. */
export async function gatewayAnswers (url: string, items: Item[]): Promise<Answer[]> {
  const groups = new Map<string, number[]>()
  items.forEach((it, i) => {
    const g = `${it.brand}|${it.type}|${it.rt}|${it.commercial}`
    const list = groups.get(g)
    if (list === undefined) groups.set(g, [i]); else list.push(i)
  })
  const got = new Array<Answer>(items.length)
  const jobs: (() => Promise<void>)[] = []
  for (const idx of groups.values()) {
    for (let s = 0; s < idx.length; s += 1000) {
      const part = idx.slice(s, s + 1000)
      const first = items[part[0]!]!
      jobs.push(async () => {
        const res = await check(url, {
          brandCode: first.brand, type: first.type, recipientType: first.rt, commercial: first.commercial,
          recipients: part.map(i => items[i]!.input)
        })
        res.forEach((r, j) => { got[part[j]!] = { allowed: r.allowed, reason: r.reason } })
      })
    }
  }
  await Promise.all(Array.from({ length: 4 }, async () => { while (jobs.length > 0) await jobs.pop()!() }))
  return got
}

/** What SQL says: the policy of DESIGN.md §1 as a query. */
export async function sqlAnswers (pool: pg.Pool, items: Item[]): Promise<Answer[]> {
  const client = await pool.connect()
  let expected: Answer[]
  try {
    await client.query('DROP TABLE IF EXISTS probe') // the pooled connection may hold the other case's
    await client.query('CREATE TEMP TABLE probe (i int, brand_code bigint, type text, recipient_type text, recipient text, commercial bool, valid bool)')
    await client.query(`INSERT INTO probe SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::bool[])`, [
      items.map((_, i) => i), items.map(x => x.brand), items.map(x => x.type), items.map(x => x.rt),
      items.map(x => x.canonical ?? ''), items.map(x => x.commercial), items.map(x => x.canonical !== null)
    ])
    const { rows } = await client.query<{ reason: string }>(`
      SELECT CASE
               WHEN NOT p.valid THEN 'INVALID_RECIPIENT'
               WHEN NOT p.commercial THEN 'INFORMATIONAL'
               WHEN c.status = 'ONAY' THEN 'CONSENT'
               WHEN c.status = 'RET' THEN 'REJECTED'
               WHEN p.recipient_type = 'TACIR' THEN 'TACIR_NO_RECORD'
               ELSE 'NO_CONSENT'
             END AS reason
      FROM probe p
      LEFT JOIN consents c ON c.brand_code = p.brand_code AND c.type = p.type
                          AND c.recipient_type = p.recipient_type AND c.recipient = p.recipient
      ORDER BY p.i`)
    const allowed = new Set(['CONSENT', 'INFORMATIONAL', 'TACIR_NO_RECORD'])
    expected = rows.map(r => ({ allowed: allowed.has(r.reason), reason: r.reason }))
  } finally {
    client.release()
  }
  return expected
}

/** One line per item where the gateway and SQL disagree. */
export function differences (items: Item[], got: Answer[], expected: Answer[]): string[] {
  const differences: string[] = []
  for (let i = 0; i < items.length; i++) {
    const g = got[i]!; const e = expected[i]!
    if (g.allowed !== e.allowed || g.reason !== e.reason) {
      const it = items[i]!
      differences.push(`#${i} ${it.brand}/${it.type}/${it.rt}/${it.commercial} ${JSON.stringify(it.input)}: gateway ${g.reason}, SQL ${e.reason}`)
    }
  }
  return differences
}
