// Differential test of the bulk import's rules: `iys-gateway import --rules iys|provider` judges rows in SQL
// (loaders/import.ts); judge() in domain/rules.ts is the same rules in JS. Thousands of random rows over a handful
// of keys (so every key sees hundreds of rows, many with equal dates, in random file order), imported into keys
// that are partly stored already, must come out exactly as folding judge() over each key's rows in
// (consentDate, line) order predicts: the code of every refused line, the state of every key, and every ledger row.

import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { judge, type Authority, type StoredState } from '../src/domain/rules.js'
import { formatIysDate, parseIysDate } from '../src/domain/time.js'
import type { ConsentStatus } from '../src/domain/vocabulary.js'
import { mulberry32 } from '../src/util/random.js'
import { runCli } from './helpers/cli.js'
import { testServices, type TestServices } from './helpers/services.js'

const ROWS = 3000
const SEED = Number(process.env.RULES_SEED ?? 20240601)
const SOURCES = ['HS_WEB', 'HS_MOBIL', 'HS_CAGRI_MERKEZI', 'IYS_WEB', 'IYS_KISAMESAJ']
const BASE = (parseIysDate('2024-01-01 00:00:00') as { seconds: number }).seconds
const HOUR = 3600

interface Key { type: 'MESAJ' | 'ARAMA' | 'EPOSTA', rt: 'BIREYSEL' | 'TACIR', recipient: string }
// Ten keys of one brand: several channels and recipient types, phones and e-mail.
const KEYS: Key[] = [
  { type: 'MESAJ', rt: 'BIREYSEL', recipient: '+905322000001' },
  { type: 'MESAJ', rt: 'TACIR', recipient: '+905322000001' },
  { type: 'ARAMA', rt: 'BIREYSEL', recipient: '+905322000001' },
  { type: 'MESAJ', rt: 'BIREYSEL', recipient: '+905322000002' },
  { type: 'ARAMA', rt: 'TACIR', recipient: '+905322000002' },
  { type: 'EPOSTA', rt: 'BIREYSEL', recipient: 'rules1@example.com' },
  { type: 'EPOSTA', rt: 'TACIR', recipient: 'rules1@example.com' },
  { type: 'MESAJ', rt: 'BIREYSEL', recipient: '+905322000003' },
  { type: 'ARAMA', rt: 'BIREYSEL', recipient: '+905322000003' },
  { type: 'EPOSTA', rt: 'BIREYSEL', recipient: 'rules2@example.com' }
]
const keyName = (k: Key): string => `${k.type}/${k.rt}/${k.recipient}`

interface Row { line: number, key: number, status: ConsentStatus, source: string, date: number }
interface Held { status: ConsentStatus, source: string, date: number }

/** Random rows in file order. Dates fall on `slots` hours from `from`, so equal dates are frequent. */
function randomRows (rnd: () => number, keys: number, from: number, slots: number): Row[] {
  const rows: Row[] = []
  for (let i = 0; i < ROWS; i++) {
    rows.push({
      line: i + 2, // after the header
      key: (rnd() * keys) | 0,
      status: rnd() < 0.55 ? 'ONAY' : 'RET',
      source: SOURCES[(rnd() * SOURCES.length) | 0]!,
      date: BASE + (from + ((rnd() * slots) | 0)) * HOUR
    })
  }
  return rows
}

function csv (brand: number, rows: Row[]): string {
  return 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' + rows.map(r => {
    const k = KEYS[r.key]!
    return `700001,${brand},${k.recipient},${k.rt},${k.type},${r.status},${r.source},${formatIysDate(r.date)}`
  }).join('\n') + '\n'
}

interface Expected {
  /** refused line → code */
  codes: Map<number, string>
  /** accepted rows per key, in ledger (seq) order */
  ledger: Map<number, Held[]>
}

/**
 * The JS side: per key, the rows in (consentDate, line) order, each judged by judge() against the state the rows
 * before it left. For 'iys', judge() says 'stale' where the SQL names a code: H178 when the row is older than the
 * record before it, H174 when it equals it in date and status (import.ts's header).
 */
function fold (rows: Row[], stored: Map<number, Held>, authority: Authority): Expected {
  const codes = new Map<number, string>()
  const ledger = new Map<number, Held[]>()
  const byKey = new Map<number, Row[]>()
  for (const r of rows) byKey.set(r.key, [...(byKey.get(r.key) ?? []), r])
  for (const [key, list] of byKey) {
    list.sort((a, b) => a.date - b.date || a.line - b.line)
    let current: Held | null = stored.get(key) ?? null
    const accepted: Held[] = []
    for (const r of list) {
      const state: StoredState | null = current === null ? null : { status: current.status, consentDate: current.date }
      const verdict = judge(state, r.status, r.date, authority)
      if (verdict === 'apply') {
        current = { status: r.status, source: r.source, date: r.date }
        accepted.push(current)
      } else if (verdict === 'stale') {
        codes.set(r.line, r.date < state!.consentDate ? 'H178' : 'H174')
      } else {
        codes.set(r.line, verdict)
      }
    }
    ledger.set(key, accepted)
  }
  return { codes, ledger }
}

describe('bulk import rules (SQL) vs judge() (JS), differential', () => {
  let env: Record<string, string>
  let pool: pg.Pool
  let dir: string

  let ws: TestServices

  beforeAll(async () => {
    ws = await testServices({ migrate: true, poolSize: 1, dirPrefix: 'iys-rules-' })
    ;({ env, pool, dir } = ws)
  })

  afterAll(async () => { await ws?.close() })

  async function importRows (brand: number, rows: Row[], authority: Authority, name: string): Promise<{ summary: Record<string, unknown>, codes: Map<number, string> }> {
    const file = join(dir, name + '.csv')
    writeFileSync(file, csv(brand, rows))
    const res = await runCli(['import', file, '--rules', authority], env)
    expect(res.code, res.stderr).toBe(0)
    const summary = JSON.parse(res.stdout) as Record<string, unknown>
    const codes = new Map<number, string>()
    if (existsSync(file + '.rejects.csv')) {
      for (const l of readFileSync(file + '.rejects.csv', 'utf8').trim().split('\n').slice(1)) {
        const [line, code] = l.split(',')
        codes.set(Number(line), code!)
      }
    }
    return { summary, codes }
  }

  async function storedLedger (brand: number): Promise<Map<number, Held[]>> {
    const { rows } = await pool.query<{ type: string, recipient_type: string, recipient: string, status: ConsentStatus, source: string, d: string }>(
      'SELECT type, recipient_type, recipient, status, source, extract(epoch FROM consent_date)::bigint AS d FROM consent_history WHERE brand_code = $1 ORDER BY seq', [brand])
    const out = new Map<number, Held[]>()
    for (const r of rows) {
      const key = KEYS.findIndex(k => k.type === r.type && k.rt === r.recipient_type && k.recipient === r.recipient)
      expect(key).toBeGreaterThanOrEqual(0)
      out.set(key, [...(out.get(key) ?? []), { status: r.status, source: r.source, date: Number(r.d) }])
    }
    return out
  }

  async function storedState (brand: number): Promise<Map<number, Held>> {
    const { rows } = await pool.query<{ type: string, recipient_type: string, recipient: string, status: ConsentStatus, source: string, d: string }>(
      'SELECT type, recipient_type, recipient, status, source, extract(epoch FROM consent_date)::bigint AS d FROM consents WHERE brand_code = $1', [brand])
    const out = new Map<number, Held>()
    for (const r of rows) {
      const key = KEYS.findIndex(k => k.type === r.type && k.rt === r.recipient_type && k.recipient === r.recipient)
      out.set(key, { status: r.status, source: r.source, date: Number(r.d) })
    }
    return out
  }

  /** Every difference between what the SQL did and what the JS fold expects, as readable lines (empty: agreement). */
  function differences (rows: Row[], got: Map<number, string>, want: Expected, stored: Map<number, Held>): string[] {
    const out: string[] = []
    const byLine = new Map(rows.map(r => [r.line, r]))
    for (const line of new Set([...got.keys(), ...want.codes.keys()])) {
      const g = got.get(line) ?? 'accepted'
      const w = want.codes.get(line) ?? 'accepted'
      if (g !== w) {
        const r = byLine.get(line)!
        const before = stored.get(r.key)
        out.push(`line ${line} (${keyName(KEYS[r.key]!)} ${r.status} ${formatIysDate(r.date)}; stored before the import: ${before === undefined ? 'none' : `${before.status} ${formatIysDate(before.date)}`}): SQL ${g}, judge() ${w}`)
      }
    }
    return out.sort()
  }

  const describeLedger = (m: Map<number, Held[]>): string[] =>
    [...m.entries()].filter(([, l]) => l.length > 0).sort((a, b) => a[0] - b[0])
      .flatMap(([k, l]) => l.map(r => `${keyName(KEYS[k]!)} ${r.status} ${r.source} ${formatIysDate(r.date)}`))

  // [rules of the first import (which stores 6 of the 10 keys), rules of the second import (all 10 keys)]
  const ROUNDS: [Authority, Authority][] = [['iys', 'iys'], ['provider', 'provider'], ['iys', 'provider'], ['provider', 'iys']]

  for (const [round, [first, second]] of ROUNDS.entries()) {
    it(`agrees on every row, state and ledger entry: --rules ${first}, then --rules ${second} over partly stored keys (seed ${SEED + round})`, async () => {
      const brand = 610001 + round
      const rnd = mulberry32(SEED + round)
      const expectedLedger = new Map<number, Held[]>()

      // Hours 0..39 for the first import, 20..59 for the second: about half of the second's rows predate what the
      // first stored.
      const phases: [Authority, Row[]][] = [[first, randomRows(rnd, 6, 0, 40)], [second, randomRows(rnd, KEYS.length, 20, 40)]]
      for (const [phase, [authority, rows]] of phases.entries()) {
        const stored = await storedState(brand)
        const want = fold(rows, stored, authority)
        const { summary, codes } = await importRows(brand, rows, authority, `round${round}-${phase}`)

        const diff = differences(rows, codes, want, stored)
        expect(diff.slice(0, 20), `seed ${SEED + round}, import ${phase + 1} (--rules ${authority}): ${diff.length} rows differ (the first 20 shown)`).toEqual([])

        for (const [k, l] of want.ledger) expectedLedger.set(k, [...(expectedLedger.get(k) ?? []), ...l])
        const accepted = [...want.ledger.values()].reduce((n, l) => n + l.length, 0)
        expect(summary).toMatchObject({ rows: ROWS, valid: ROWS, applied: accepted, rejected: ROWS - accepted })

        // The ledger holds every accepted row, per key in (consentDate, line) order, and the state is its last row.
        const ledger = await storedLedger(brand)
        expect(describeLedger(ledger)).toEqual(describeLedger(expectedLedger))
        const state = await storedState(brand)
        const wantState = new Map([...expectedLedger].filter(([, l]) => l.length > 0).map(([k, l]) => [k, l.at(-1)!]))
        expect([...state].sort((a, b) => a[0] - b[0])).toEqual([...wantState].sort((a, b) => a[0] - b[0]))
      }
      // Nothing else was written for this brand.
      const all = await pool.query<{ n: string }>('SELECT count(*) AS n FROM consent_history WHERE brand_code = $1', [brand])
      expect(Number(all.rows[0]!.n)).toBe([...expectedLedger.values()].reduce((n, l) => n + l.length, 0))
    })
  }

  it('the random data reaches every refusal code of each authority', () => {
    // A guard on the generator, not on the code under test: if it stopped producing ties, old rows or first RETs,
    // the differential rounds above would prove less than they claim.
    const rnd = mulberry32(SEED)
    const first = randomRows(rnd, 6, 0, 40)
    const stored = new Map<number, Held>()
    for (const [k, l] of fold(first, stored, 'iys').ledger) if (l.length > 0) stored.set(k, l.at(-1)!)
    const second = randomRows(rnd, KEYS.length, 20, 40)
    const iys = new Set(fold(second, stored, 'iys').codes.values())
    const provider = new Set(fold(second, stored, 'provider').codes.values())
    expect([...iys].sort()).toEqual(['H174', 'H178'])
    expect([...provider].sort()).toEqual(['H174', 'H175', 'H178'])
  })
})
