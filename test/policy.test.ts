// The policy of DESIGN.md §1, first as the pure decide() function over every combination of its inputs, then
// through the Checker over a real embedded filter (bloom + exact map) built from consent files written here.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { Checker, type CheckQuery, type CheckResult } from '../src/check/checker.js'
import type { ConsentType, RecipientType } from '../src/domain/vocabulary.js'
import { BLOCK_BYTES, BLOOM_SEGMENTS, BloomFilter } from '../src/filter/bloom.js'
import { buildEmbeddedView } from '../src/filter/embedded.js'
import { serializeResults } from '../src/http/check-request.js'
import type { ConsentState } from '../src/filter/state.js'
import type { FilterView, MemoryView } from '../src/filter/view.js'
import { ALLOWED_BY_REASON, REASONS, decide, type Reason } from '../src/policy/decide.js'

const HEADER = 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate'

let dir: string
beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'iys-policy-')) })
afterAll(() => { if (dir !== undefined) rmSync(dir, { recursive: true, force: true }) })

let fileNo = 0
async function viewOf (rows: string[]): Promise<MemoryView> {
  const file = join(dir, `consents-${++fileNo}.csv`)
  writeFileSync(file, [HEADER, ...rows].join('\n') + '\n')
  const seed = await buildEmbeddedView(file, 0.001)
  // A row the loader refused would silently change what these tests mean.
  expect(seed.rejects).toBe(0)
  expect(seed.rows).toBe(rows.length)
  return seed.view
}

const BASE_OPTS = { tacirAllowedWithoutRecord: true, storeFailureMode: 'closed' } as const

/** A result with the consent as the /v1/check answer shows it (the checker returns the state; the edge formats it). */
type Answered = CheckResult & { consent?: { status: string, source: string, consentDate: string } }
interface AnsweringChecker { check (q: CheckQuery): Promise<Answered[]> }

function checker (view: FilterView | null, opts: Partial<{ tacirAllowedWithoutRecord: boolean, storeFailureMode: 'closed' | 'open' }> = {}, storeError?: (e: unknown) => void): AnsweringChecker {
  const c = new Checker(() => view, { ...BASE_OPTS, ...opts }, storeError === undefined ? null : { storeError })
  const answered = (r: CheckResult): Answered => r.state === undefined ? r : { ...r, consent: JSON.parse(serializeResults([r]).toString()).results[0].consent }
  return { check: async q => (await c.check(q)).map(answered) }
}

function query (brandCode: string, type: ConsentType, recipients: unknown[], more: Partial<CheckQuery> = {}): CheckQuery {
  return { brandCode, type, recipientType: 'BIREYSEL', commercial: true, recipients, ...more }
}

async function one (c: AnsweringChecker, q: CheckQuery): Promise<Answered> {
  const r = await c.check(q)
  expect(r).toHaveLength(1)
  return r[0]!
}

// ---------------------------------------------------------------------------------------------------------------
// (a) decide() over every row of DESIGN.md §1 rules 2 and 3
// ---------------------------------------------------------------------------------------------------------------

describe('decide() over every combination of state, recipient type and the TACIR setting', () => {
  const state = (status: 'ONAY' | 'RET'): ConsentState => ({ status, source: 'HS_WEB', consentDate: 1_700_000_000, seq: 1 })

  // Written from DESIGN.md §1, not from the implementation: the latest record decides (RET blocks, ONAY allows);
  // without a record BIREYSEL is blocked (opt-in) and TACIR is allowed (opt-out) unless the tenant says otherwise.
  const rows: [('ONAY' | 'RET' | null), RecipientType, boolean, Reason, boolean][] = [
    ['ONAY', 'BIREYSEL', true, 'CONSENT', true],
    ['ONAY', 'BIREYSEL', false, 'CONSENT', true],
    ['ONAY', 'TACIR', true, 'CONSENT', true],
    ['ONAY', 'TACIR', false, 'CONSENT', true],
    ['RET', 'BIREYSEL', true, 'REJECTED', false],
    ['RET', 'BIREYSEL', false, 'REJECTED', false],
    ['RET', 'TACIR', true, 'REJECTED', false],
    ['RET', 'TACIR', false, 'REJECTED', false],
    [null, 'BIREYSEL', true, 'NO_CONSENT', false],
    [null, 'BIREYSEL', false, 'NO_CONSENT', false],
    [null, 'TACIR', true, 'TACIR_NO_RECORD', true],
    [null, 'TACIR', false, 'NO_CONSENT', false]
  ]

  it.each(rows)('state %s, %s, tacirAllowedWithoutRecord=%s → %s (allowed %s)', (status, rt, tacirAllowed, reason, allowed) => {
    const got = decide(rt, status === null ? null : state(status), { tacirAllowedWithoutRecord: tacirAllowed })
    expect(got).toBe(reason)
    expect(ALLOWED_BY_REASON[got]).toBe(allowed)
  })

  it('covers all twelve combinations exactly once', () => {
    expect(new Set(rows.map(r => `${r[0]}/${r[1]}/${r[2]}`)).size).toBe(12)
  })

  it('allows exactly the reasons that mean a message may go out', () => {
    expect(ALLOWED_BY_REASON).toEqual({
      CONSENT: true,
      REJECTED: false,
      NO_CONSENT: false,
      TACIR_NO_RECORD: true,
      INFORMATIONAL: true,
      INVALID_RECIPIENT: false,
      STORE_UNAVAILABLE: false
    })
    expect(Object.keys(ALLOWED_BY_REASON).sort()).toEqual([...REASONS].sort())
    expect(Object.isFrozen(ALLOWED_BY_REASON)).toBe(true)
  })
})

// ---------------------------------------------------------------------------------------------------------------
// (b) Checker over an embedded view built from consent files
// ---------------------------------------------------------------------------------------------------------------

describe('Checker: commercial and informational messages for both recipient types', () => {
  let view: MemoryView
  beforeAll(async () => {
    view = await viewOf([
      '700001,600001,+905321000001,BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00',
      '700001,600001,+905321000002,BIREYSEL,MESAJ,RET,IYS_KISAMESAJ,2024-02-01 10:00:00',
      '700001,600001,+905321000003,TACIR,MESAJ,ONAY,HS_ISLAK_IMZA,2024-01-15 10:00:00',
      '700001,600001,+905321000004,TACIR,MESAJ,RET,IYS_WEB,2024-02-01 10:00:00'
    ])
  })

  const ONAY_B = '+905321000001'; const RET_B = '+905321000002'
  const ONAY_T = '+905321000003'; const RET_T = '+905321000004'
  const NONE = '+905321000099'

  it('decides commercial BIREYSEL messages by the record, blocking when there is none', async () => {
    const r = await checker(view).check(query('600001', 'MESAJ', [ONAY_B, RET_B, NONE]))
    expect(r.map(x => [x.reason, x.allowed])).toEqual([['CONSENT', true], ['REJECTED', false], ['NO_CONSENT', false]])
  })

  it('decides commercial TACIR messages by the record, allowing when there is none', async () => {
    const r = await checker(view).check(query('600001', 'MESAJ', [ONAY_T, RET_T, NONE], { recipientType: 'TACIR' }))
    expect(r.map(x => [x.reason, x.allowed])).toEqual([['CONSENT', true], ['REJECTED', false], ['TACIR_NO_RECORD', true]])
  })

  it('blocks a TACIR recipient without a record when the tenant turns the opt-out regime off', async () => {
    const c = checker(view, { tacirAllowedWithoutRecord: false })
    const r = await c.check(query('600001', 'MESAJ', [ONAY_T, RET_T, NONE], { recipientType: 'TACIR' }))
    expect(r.map(x => [x.reason, x.allowed])).toEqual([['CONSENT', true], ['REJECTED', false], ['NO_CONSENT', false]])
  })

  it('allows informational messages to everyone, even recipients who rejected, for both recipient types', async () => {
    for (const recipientType of ['BIREYSEL', 'TACIR'] as const) {
      const r = await checker(view).check(query('600001', 'MESAJ', [ONAY_B, RET_B, ONAY_T, RET_T, NONE], { recipientType, commercial: false }))
      for (const x of r) {
        expect(x).toMatchObject({ allowed: true, reason: 'INFORMATIONAL' })
        expect(x.consent).toBeUndefined()
      }
    }
  })

  it('keeps BIREYSEL and TACIR records apart: a record for one type says nothing about the other', async () => {
    // RET_B rejected as BIREYSEL only: as TACIR there is no record (opt-out regime allows it).
    const asTacir = await checker(view).check(query('600001', 'MESAJ', [ONAY_B, RET_B], { recipientType: 'TACIR' }))
    expect(asTacir.map(x => x.reason)).toEqual(['TACIR_NO_RECORD', 'TACIR_NO_RECORD'])
    // ONAY_T consented as TACIR only: as BIREYSEL there is no consent.
    const asBireysel = await checker(view).check(query('600001', 'MESAJ', [ONAY_T, RET_T]))
    expect(asBireysel.map(x => x.reason)).toEqual(['NO_CONSENT', 'NO_CONSENT'])
  })

  it('finds the record whatever form the phone number is written in, and echoes the raw recipient', async () => {
    const r = await checker(view).check(query('600001', 'MESAJ', ['0532 100 00 01', '5321000002', '+90 (532) 100-00-01']))
    expect(r.map(x => [x.recipient, x.normalized, x.reason])).toEqual([
      ['0532 100 00 01', ONAY_B, 'CONSENT'],
      ['5321000002', RET_B, 'REJECTED'],
      ['+90 (532) 100-00-01', ONAY_B, 'CONSENT']
    ])
  })

  it('answers in request order when decided and looked-up items are mixed', async () => {
    const r = await checker(view).check(query('600001', 'MESAJ', [RET_B, 'not a phone', NONE, ONAY_B, 'x@example.com', RET_B]))
    expect(r.map(x => x.reason)).toEqual(['REJECTED', 'INVALID_RECIPIENT', 'NO_CONSENT', 'CONSENT', 'INVALID_RECIPIENT', 'REJECTED'])
  })
})

describe('Checker: the latest consentDate decides, whatever the order of the rows in the file', () => {
  const R = '+905322000001'
  const ret2023 = `700001,600001,${R},BIREYSEL,MESAJ,RET,IYS_KISAMESAJ,2023-03-10 12:00:00`
  const onay2024 = `700001,600001,${R},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-04-11 13:14:15`
  const onay2023 = `700001,600001,${R},BIREYSEL,MESAJ,ONAY,HS_MOBIL,2023-03-10 12:00:00`
  const ret2024 = `700001,600001,${R},BIREYSEL,MESAJ,RET,IYS_WEB,2024-04-11 13:14:15`

  it.each([
    ['in date order', [ret2023, onay2024]],
    ['in reverse date order', [onay2024, ret2023]]
  ])('ONAY after RET (RET 2023, ONAY 2024), rows %s → CONSENT', async (_order, rows) => {
    const r = await one(checker(await viewOf(rows)), query('600001', 'MESAJ', [R]))
    expect(r).toMatchObject({ allowed: true, reason: 'CONSENT', consent: { status: 'ONAY', source: 'HS_WEB', consentDate: '2024-04-11 13:14:15' } })
  })

  it.each([
    ['in date order', [onay2023, ret2024]],
    ['in reverse date order', [ret2024, onay2023]]
  ])('RET after ONAY (ONAY 2023, RET 2024), rows %s → REJECTED', async (_order, rows) => {
    const r = await one(checker(await viewOf(rows)), query('600001', 'MESAJ', [R]))
    expect(r).toMatchObject({ allowed: false, reason: 'REJECTED', consent: { status: 'RET', source: 'IYS_WEB', consentDate: '2024-04-11 13:14:15' } })
  })
})

describe('Checker: the consent in an answer', () => {
  it('carries status, source and consentDate as YYYY-MM-DD HH:mm:ss in Turkey time', async () => {
    // 01:30:05 in Turkey is 22:30:05 UTC the day before: a UTC formatter would give the wrong day and hour.
    const view = await viewOf([
      '700001,600001,+905323000001,BIREYSEL,MESAJ,ONAY,HS_CAGRI_MERKEZI,2024-01-01 01:30:05',
      '700001,600001,+905323000002,BIREYSEL,MESAJ,ONAY,HS_2015,2015-05-01 00:00:00',
      '700001,600001,+905323000003,BIREYSEL,MESAJ,RET,IYS_AHS_HAT_KAPATMA,2025-12-31 23:59:59'
    ])
    const r = await checker(view).check(query('600001', 'MESAJ', ['+905323000001', '+905323000002', '+905323000003']))
    expect(r.map(x => x.consent)).toEqual([
      { status: 'ONAY', source: 'HS_CAGRI_MERKEZI', consentDate: '2024-01-01 01:30:05' },
      { status: 'ONAY', source: 'HS_2015', consentDate: '2015-05-01 00:00:00' },
      { status: 'RET', source: 'IYS_AHS_HAT_KAPATMA', consentDate: '2025-12-31 23:59:59' }
    ])
    for (const x of r) expect(x.consent!.consentDate).toMatch(/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/)
  })

  it('has no consent when no record decided', async () => {
    const view = await viewOf(['700001,600001,+905323000001,BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00'])
    const r = await one(checker(view), query('600001', 'MESAJ', ['+905323000009']))
    expect(r.reason).toBe('NO_CONSENT')
    expect(r.consent).toBeUndefined()
  })
})

describe('Checker: invalid recipients', () => {
  let view: MemoryView
  beforeAll(async () => {
    view = await viewOf(['700001,600001,+905324000001,BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00'])
  })

  it.each([true, false])('are INVALID_RECIPIENT and never allowed (commercial %s)', async (commercial) => {
    const r = await checker(view).check(query('600001', 'MESAJ', ['not a phone', '', null, 12, { phone: '+905324000001' }], { commercial }))
    for (const x of r) expect(x).toMatchObject({ allowed: false, reason: 'INVALID_RECIPIENT', normalized: null })
    expect(r[0]!.error?.code).toBe('H121')
    expect(r[1]!.error?.code).toBe('H114')
  })

  it.each([true, false])('include a recipient of the wrong kind for the channel, with H464 (commercial %s)', async (commercial) => {
    const mesaj = await one(checker(view), query('600001', 'MESAJ', ['Ali@Example.com'], { commercial }))
    expect(mesaj).toMatchObject({ allowed: false, reason: 'INVALID_RECIPIENT', normalized: 'ali@example.com', error: { code: 'H464' } })
    const eposta = await one(checker(view), query('600001', 'EPOSTA', ['+905324000001'], { commercial }))
    expect(eposta).toMatchObject({ allowed: false, reason: 'INVALID_RECIPIENT', error: { code: 'H464' } })
  })
})

describe('Checker: brands and channels are independent', () => {
  const R = '+905325000001'
  let view: MemoryView
  beforeAll(async () => {
    view = await viewOf([
      `700001,600001,${R},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00`,
      `700001,600002,${R},BIREYSEL,ARAMA,RET,IYS_CM,2024-01-01 10:00:00`
    ])
  })

  it('an ONAY for brand A on MESAJ allows brand A on MESAJ only', async () => {
    expect((await one(checker(view), query('600001', 'MESAJ', [R]))).reason).toBe('CONSENT')
    expect(await one(checker(view), query('600003', 'MESAJ', [R]))).toMatchObject({ reason: 'NO_CONSENT', allowed: false })
    expect(await one(checker(view), query('600001', 'ARAMA', [R]))).toMatchObject({ reason: 'NO_CONSENT', allowed: false })
  })

  it('a RET for brand B on ARAMA blocks brand B on ARAMA only', async () => {
    expect(await one(checker(view), query('600002', 'ARAMA', [R]))).toMatchObject({ reason: 'REJECTED', allowed: false })
    expect(await one(checker(view), query('600002', 'MESAJ', [R]))).toMatchObject({ reason: 'NO_CONSENT' })
    expect(await one(checker(view), query('600001', 'ARAMA', [R], { recipientType: 'TACIR' }))).toMatchObject({ reason: 'TACIR_NO_RECORD' })
    // Brand A's MESAJ consent is untouched by brand B's rejection.
    expect((await one(checker(view), query('600001', 'MESAJ', [R]))).reason).toBe('CONSENT')
  })

  it('does not confuse brand codes that are prefixes of each other', async () => {
    expect((await one(checker(view), query('60000', 'MESAJ', [R]))).reason).toBe('NO_CONSENT')
    expect((await one(checker(view), query('6000011', 'MESAJ', [R]))).reason).toBe('NO_CONSENT')
  })
})

describe('Checker: when the store cannot answer', () => {
  /** A view whose bloom says "maybe" for every key and whose exact lookup always fails. */
  function brokenView (): FilterView & { lookup: ReturnType<typeof vi.fn> } {
    const bloom = new BloomFilter(new ArrayBuffer(BLOCK_BYTES * BLOOM_SEGMENTS))
    bloom.words.fill(0xffffffff)
    return { version: 1, bloom, buckets: 1, lookup: vi.fn(async () => { throw new Error('connection refused') }) }
  }
  const recipients = ['+905326000001', '+905326000002', '+905326000003']

  it.each([
    ['closed', false],
    ['open', true]
  ] as const)('with storeFailureMode %s, commercial checks are STORE_UNAVAILABLE with allowed %s', async (mode, allowed) => {
    for (const recipientType of ['BIREYSEL', 'TACIR'] as const) {
      const view = brokenView()
      const storeError = vi.fn()
      const r = await checker(view, { storeFailureMode: mode }, storeError).check(query('600001', 'MESAJ', recipients, { recipientType }))
      expect(r.map(x => [x.normalized, x.reason, x.allowed])).toEqual(recipients.map(n => [n, 'STORE_UNAVAILABLE', allowed]))
      expect(view.lookup).toHaveBeenCalledTimes(1) // one batch for the whole request
      expect(view.lookup.mock.calls[0]![0]).toHaveLength(3)
      expect(storeError).toHaveBeenCalledTimes(1)
      expect((storeError.mock.calls[0]![0] as Error).message).toBe('connection refused')
    }
  })

  it('still decides informational messages and invalid recipients without the store', async () => {
    const view = brokenView()
    const storeError = vi.fn()
    const c = checker(view, { storeFailureMode: 'closed' }, storeError)
    const info = await c.check(query('600001', 'MESAJ', recipients, { commercial: false }))
    expect(info.map(x => x.reason)).toEqual(['INFORMATIONAL', 'INFORMATIONAL', 'INFORMATIONAL'])
    const bad = await c.check(query('600001', 'MESAJ', ['nope']))
    expect(bad[0]).toMatchObject({ reason: 'INVALID_RECIPIENT', allowed: false })
    expect(view.lookup).not.toHaveBeenCalled()
    expect(storeError).not.toHaveBeenCalled()
  })

  it('decides without the store when the bloom filter says a key is certainly absent', async () => {
    const bloom = new BloomFilter(new ArrayBuffer(BLOCK_BYTES * BLOOM_SEGMENTS)) // empty: every key is certainly absent
    const lookup = vi.fn(async () => { throw new Error('must not be asked') })
    const storeError = vi.fn()
    const c = checker({ version: 1, bloom, buckets: 1, lookup }, { storeFailureMode: 'closed' }, storeError)
    expect((await one(c, query('600001', 'MESAJ', ['+905326000001']))).reason).toBe('NO_CONSENT')
    expect((await one(c, query('600001', 'MESAJ', ['+905326000001'], { recipientType: 'TACIR' }))).reason).toBe('TACIR_NO_RECORD')
    expect(lookup).not.toHaveBeenCalled()
    expect(storeError).not.toHaveBeenCalled()
  })

  it.each([
    ['closed', false],
    ['open', true]
  ] as const)('with no filter loaded at all and mode %s, commercial checks are STORE_UNAVAILABLE (allowed %s)', async (mode, allowed) => {
    const r = await one(checker(null, { storeFailureMode: mode }), query('600001', 'MESAJ', ['+905326000001']))
    expect(r).toMatchObject({ reason: 'STORE_UNAVAILABLE', allowed })
  })
})
