// The local exact replica (src/filter/replica.ts): exact answers against a plain Map, collisions, a full table and a
// full arena, bad input, and the SharedArrayBuffer contract with real worker threads (attach(), and a reader that
// hammers lookups while this thread applies millions of changes: no torn state, no half-inserted key).
// Workers load the compiled module (dist/, built by the global set-up), as the scrub workers do.

import { Worker } from 'node:worker_threads'
import { describe, expect, it } from 'vitest'
import { CONSENT_TYPES, RECIPIENT_TYPES, STATUSES, type ConsentType, type RecipientType } from '../src/domain/vocabulary.js'
import { hashKey, keyCode, keyHash, keyText } from '../src/filter/key.js'
import { ReplicaFullError, ReplicaTable, newReplicaState, type ReplicaState } from '../src/filter/replica.js'
import { encodeState } from '../src/filter/state.js'
import { mulberry32 } from '../src/util/random.js'

const DIST_REPLICA = new URL('../dist/src/filter/replica.js', import.meta.url).href

interface Key { brand: string, type: ConsentType, rt: RecipientType, recipient: string }
const textOf = (k: Key): string => keyText(k.brand, keyCode(k.type, k.rt), k.recipient)
const plain = (s: ReplicaState): ReplicaState => ({ status: s.status, sourceIndex: s.sourceIndex, consentDate: s.consentDate, seq: s.seq })

function lookup (t: ReplicaTable, k: Key): ReplicaState | null {
  const out = newReplicaState()
  return t.lookup(k.brand, k.type, k.rt, k.recipient, out) ? plain(out) : null
}

function lookupText (t: ReplicaTable, k: Key): ReplicaState | null {
  const out = newReplicaState()
  return t.lookupText(textOf(k), out) ? plain(out) : null
}

// Brands on both sides of the packed limit (2^29) and up to 15 digits; recipients of every form: Turkish mobiles,
// short and 12-digit phones (packed), 13 … 15-digit phones (text), phones whose number crosses 2^32, e-mails
// (ASCII, Latin-1, and a char above 0xff: two bytes per char in the arena).
const BRANDS = ['1', '7', '600001', '600002', '536870911', '536870912', '4294967296', '999999999999999']
const FIXED_RECIPIENTS = [
  '+905321234567', '+905321234568', '+1234567', '+4294967296', '+4294967297', '+999999999999', '+1000000000000',
  '+905321234567890', '+12345678901234', 'a@b.co', 'ali.veli@example.com.tr', 'ü@örnek.com', 'şule@örnek.com',
  'x'.repeat(250) + '@example.com'
]

function randomRecipient (rnd: () => number): string {
  const r = rnd()
  if (r < 0.55) return '+905' + String(1e9 + Math.floor(rnd() * 400)).slice(1) // few numbers: keys repeat
  if (r < 0.65) return '+' + String(1 + Math.floor(rnd() * 9)) + String(1e14 + Math.floor(rnd() * 300)).slice(1, 7 + Math.floor(rnd() * 9))
  if (r < 0.95) return `user${Math.floor(rnd() * 300)}@example${Math.floor(rnd() * 3)}.com`
  return FIXED_RECIPIENTS[Math.floor(rnd() * FIXED_RECIPIENTS.length)]!
}

function randomKey (rnd: () => number): Key {
  return {
    brand: BRANDS[Math.floor(rnd() * BRANDS.length)]!,
    type: CONSENT_TYPES[Math.floor(rnd() * CONSENT_TYPES.length)]!,
    rt: RECIPIENT_TYPES[Math.floor(rnd() * RECIPIENT_TYPES.length)]!,
    recipient: randomRecipient(rnd)
  }
}

function randomState (rnd: () => number): ReplicaState {
  const big = rnd() < 0.2
  return {
    status: STATUSES[Math.floor(rnd() * 2)]!,
    sourceIndex: Math.floor(rnd() * 32),
    consentDate: rnd() < 0.05 ? 4294967295 : Math.floor(rnd() * 4294967296),
    // Few seqs, so duplicates and out-of-order arrivals are common; some above 2^32 and up to 2^48 - 1.
    seq: big ? 2 ** 48 - 1 - Math.floor(rnd() * 50) * 2 ** 30 : Math.floor(rnd() * 200)
  }
}

describe('replica table', () => {
  it('answers exactly like a Map over 200,000 random upserts and lookups (duplicate, stale and out-of-order seqs)', () => {
    const rnd = mulberry32(12)
    const t = ReplicaTable.create({ capacity: 100_000, emailBytes: 4_000_000 })
    const ref = new Map<string, ReplicaState>()
    let applied = 0
    let mismatches = 0
    for (let op = 0; op < 200_000; op++) {
      // The first half before shared() (plain stores), the second after (seqlock and publishing stores).
      if (op === 100_000) t.shared()
      const k = randomKey(rnd)
      const text = textOf(k)
      if (rnd() < 0.6) {
        const s = randomState(rnd)
        const old = ref.get(text)
        const expected = old === undefined || old.seq < s.seq
        if (expected) ref.set(text, s)
        // Half by parts, half by key text and encoded state (the bulk path's input).
        const got = rnd() < 0.5
          ? t.upsert(k.brand, k.type, k.rt, k.recipient, s)
          : t.upsertEncoded(text, encodeState(s.status, s.sourceIndex, s.consentDate, s.seq))
        if (got !== expected) mismatches++
        if (got) applied++
      } else {
        const want = ref.get(text) ?? null
        if (JSON.stringify(lookup(t, k)) !== JSON.stringify(want)) mismatches++
      }
    }
    expect(mismatches).toBe(0)
    expect(applied).toBeGreaterThan(ref.size) // some keys were overwritten by newer states
    expect(t.keys).toBe(ref.size)
    expect(ref.size).toBeGreaterThan(10_000)
    // Every key, by parts and by text; and every key under the other types and a brand nobody has: misses.
    for (const [text, s] of ref) {
      expect(lookupTextRaw(t, text)).toEqual(s)
    }
    const rnd2 = mulberry32(13)
    let wrong = 0
    for (let i = 0; i < 50_000; i++) {
      const k = randomKey(rnd2)
      const want = ref.get(textOf(k)) ?? null
      if (JSON.stringify(lookup(t, k)) !== JSON.stringify(want)) wrong++
      if (JSON.stringify(lookupText(t, k)) !== JSON.stringify(want)) wrong++
      if (lookup(t, { ...k, brand: '600003' }) !== null) wrong++
    }
    expect(wrong).toBe(0)
  })

  it('keeps keys apart that differ only in type, recipientType, brand or one digit, and packed from text forms', () => {
    const t = ReplicaTable.create({ capacity: 1000, emailBytes: 10_000 })
    const keys: Key[] = []
    for (const brand of ['600001', '6000010', '536870911', '536870912']) {
      for (const type of CONSENT_TYPES) {
        for (const rt of RECIPIENT_TYPES) {
          for (const recipient of ['+905321234567', '+905321234576', '+90532123456', '+9053212345670', '+0905321234567', 'a@b.co', 'a@b.cO']) keys.push({ brand, type, rt, recipient })
        }
      }
    }
    keys.forEach((k, i) => t.upsert(k.brand, k.type, k.rt, k.recipient, { status: i % 2 === 0 ? 'RET' : 'ONAY', sourceIndex: i % 32, consentDate: 1_500_000_000 + i, seq: i + 1 }))
    expect(t.keys).toBe(keys.length)
    keys.forEach((k, i) => {
      expect(lookup(t, k)).toEqual({ status: i % 2 === 0 ? 'RET' : 'ONAY', sourceIndex: i % 32, consentDate: 1_500_000_000 + i, seq: i + 1 })
      expect(lookupText(t, k)?.seq).toBe(i + 1)
    })
    expect(lookup(t, { brand: '600002', type: 'MESAJ', rt: 'BIREYSEL', recipient: '+905321234567' })).toBeNull()
    expect(lookup(t, { brand: '600001', type: 'MESAJ', rt: 'BIREYSEL', recipient: '+905321234566' })).toBeNull()
  })

  it('answers exactly when every key collides: a table barely larger than its keys', () => {
    const rnd = mulberry32(7)
    const t = ReplicaTable.create({ capacity: 60, emailBytes: 10_000, maxLoad: 0.95 })
    expect(t.slotCount).toBe(64)
    const ref = new Map<string, ReplicaState>()
    const keys: Key[] = []
    while (keys.length < 60) {
      const k = randomKey(rnd)
      if (ref.has(textOf(k))) continue
      const s = randomState(rnd)
      expect(t.upsert(k.brand, k.type, k.rt, k.recipient, s)).toBe(true)
      ref.set(textOf(k), s)
      keys.push(k)
    }
    for (const k of keys) expect(lookup(t, k)).toEqual(ref.get(textOf(k)))
    let misses = 0
    for (let i = 0; i < 5000; i++) {
      const k = randomKey(rnd)
      if (!ref.has(textOf(k)) && lookup(t, k) === null) misses++
      else if (!ref.has(textOf(k))) throw new Error(`found a key that was never written: ${textOf(k)}`)
    }
    expect(misses).toBeGreaterThan(1000)
  })

  it('compares the whole text of keys whose 29-bit slot tags are equal', () => {
    // Two e-mail keys with the same hash tag (h2's low 29 bits), found by the birthday bound among 100,000.
    const seen = new Map<number, string>()
    let pair: [string, string] | null = null
    for (let i = 0; pair === null && i < 400_000; i++) {
      const r = `tag${i}@example.com`
      hashKey('600001', 'EB', r)
      const tag = keyHash[1]! & 0x1fffffff
      const other = seen.get(tag)
      if (other !== undefined) pair = [other, r]
      else seen.set(tag, r)
    }
    expect(pair).not.toBeNull()
    const t = ReplicaTable.create({ capacity: 4, emailBytes: 1000 })
    const [a, b] = pair!
    t.upsert('600001', 'EPOSTA', 'BIREYSEL', a, { status: 'RET', sourceIndex: 1, consentDate: 10, seq: 1 })
    expect(lookup(t, { brand: '600001', type: 'EPOSTA', rt: 'BIREYSEL', recipient: b })).toBeNull()
    t.upsert('600001', 'EPOSTA', 'BIREYSEL', b, { status: 'ONAY', sourceIndex: 2, consentDate: 20, seq: 2 })
    expect(lookup(t, { brand: '600001', type: 'EPOSTA', rt: 'BIREYSEL', recipient: a })).toEqual({ status: 'RET', sourceIndex: 1, consentDate: 10, seq: 1 })
    expect(lookup(t, { brand: '600001', type: 'EPOSTA', rt: 'BIREYSEL', recipient: b })).toEqual({ status: 'ONAY', sourceIndex: 2, consentDate: 20, seq: 2 })
    expect(t.keys).toBe(2)
  })

  it('refuses a key past its capacity with REPLICA_FULL and changes nothing; updates of held keys still apply', () => {
    const t = ReplicaTable.create({ capacity: 10, emailBytes: 0 })
    const phone = (i: number): string => '+90532123' + String(1000 + i)
    for (let i = 0; i < 10; i++) t.upsert('600001', 'MESAJ', 'BIREYSEL', phone(i), { status: 'ONAY', sourceIndex: 0, consentDate: 1, seq: i + 1 })
    let err: unknown = null
    try {
      t.upsert('600001', 'MESAJ', 'BIREYSEL', phone(10), { status: 'ONAY', sourceIndex: 0, consentDate: 1, seq: 99 })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ReplicaFullError)
    expect((err as ReplicaFullError).code).toBe('REPLICA_FULL')
    expect((err as Error).message).toMatch(/full.*10 keys/)
    expect(t.keys).toBe(10)
    expect(lookup(t, { brand: '600001', type: 'MESAJ', rt: 'BIREYSEL', recipient: phone(10) })).toBeNull()
    for (let i = 0; i < 10; i++) expect(lookup(t, { brand: '600001', type: 'MESAJ', rt: 'BIREYSEL', recipient: phone(i) })?.seq).toBe(i + 1)
    expect(t.upsert('600001', 'MESAJ', 'BIREYSEL', phone(3), { status: 'RET', sourceIndex: 5, consentDate: 2, seq: 50 })).toBe(true)
    expect(lookup(t, { brand: '600001', type: 'MESAJ', rt: 'BIREYSEL', recipient: phone(3) })).toEqual({ status: 'RET', sourceIndex: 5, consentDate: 2, seq: 50 })
  })

  it('refuses a key text past the arena with REPLICA_ARENA_FULL and changes nothing; phone keys still fit', () => {
    const t = ReplicaTable.create({ capacity: 100, emailBytes: 100 })
    const mail = (i: number): string => `someone${i}@example.com` // brand 6 + code 2 + 20 chars + a 2-byte header = 30 bytes
    const s = { status: 'ONAY' as const, sourceIndex: 3, consentDate: 5, seq: 7 }
    for (let i = 0; i < 3; i++) t.upsert('600001', 'EPOSTA', 'BIREYSEL', mail(i), s)
    expect(t.arenaBytesUsed).toBe(90)
    let err: unknown = null
    try {
      t.upsert('600001', 'EPOSTA', 'BIREYSEL', mail(3), s)
    } catch (e) {
      err = e
    }
    expect((err as ReplicaFullError).code).toBe('REPLICA_ARENA_FULL')
    expect(t.keys).toBe(3)
    expect(t.arenaBytesUsed).toBe(90)
    expect(lookup(t, { brand: '600001', type: 'EPOSTA', rt: 'BIREYSEL', recipient: mail(3) })).toBeNull()
    for (let i = 0; i < 3; i++) expect(lookup(t, { brand: '600001', type: 'EPOSTA', rt: 'BIREYSEL', recipient: mail(i) })).toEqual(s)
    expect(t.upsert('600001', 'MESAJ', 'BIREYSEL', '+905321234567', s)).toBe(true)
    expect(t.keys).toBe(4)
    // A table without an arena holds phone keys only, and says so for any other key.
    const phonesOnly = ReplicaTable.create({ capacity: 10, emailBytes: 0 })
    expect(() => phonesOnly.upsert('600001', 'MESAJ', 'BIREYSEL', '+905321234567890', s)).toThrow(ReplicaFullError)
    expect(phonesOnly.keys).toBe(0)
  })

  it('refuses keys and states no consent can have, changing nothing; lookups of such keys miss', () => {
    const t = ReplicaTable.create({ capacity: 10, emailBytes: 100 })
    const ok: ReplicaState = { status: 'ONAY', sourceIndex: 0, consentDate: 1, seq: 1 }
    const up = (brand: string, recipient: string, s: Partial<ReplicaState> = {}, type = 'MESAJ', rt = 'BIREYSEL'): void => {
      t.upsert(brand, type as ConsentType, rt as RecipientType, recipient, { ...ok, ...s })
    }
    for (const brand of ['', '0', '0123', '12a', '1234567890123456', ' 1']) expect(() => up(brand, '+905321234567'), brand).toThrow(RangeError)
    expect(() => up('1', '+905321234567', {}, 'SMS')).toThrow(RangeError)
    expect(() => up('1', '+905321234567', {}, 'MESAJ', 'KURUMSAL')).toThrow(RangeError)
    expect(() => up('1', '')).toThrow(RangeError)
    expect(() => up('1', '+905321234567', { status: 'HAYIR' as 'ONAY' })).toThrow(RangeError)
    for (const sourceIndex of [-1, 32, 1.5]) expect(() => up('1', '+905321234567', { sourceIndex })).toThrow(RangeError)
    for (const consentDate of [-1, 2 ** 32, NaN]) expect(() => up('1', '+905321234567', { consentDate })).toThrow(RangeError)
    for (const seq of [-1, 2 ** 48, 0.5]) expect(() => up('1', '+905321234567', { seq })).toThrow(RangeError)
    expect(() => t.upsertEncoded('1MB+905321234567', 'X1.1')).toThrow(RangeError)
    expect(() => t.upsertEncoded('1XX+905321234567', encodeState('ONAY', 1, 1, 1))).toThrow(RangeError)
    expect(() => t.upsertEncoded('01MB+905321234567', encodeState('ONAY', 1, 1, 1))).toThrow(RangeError)
    expect(() => t.upsertEncoded('1MB', encodeState('ONAY', 1, 1, 1))).toThrow(RangeError)
    expect(t.keys).toBe(0)
    expect(t.arenaBytesUsed).toBe(0)
    up('100', '+905321234567')
    const out = newReplicaState()
    expect(t.lookup('0100', 'MESAJ', 'BIREYSEL', '+905321234567', out)).toBe(false)
    expect(t.lookup('100', 'SMS' as ConsentType, 'BIREYSEL', '+905321234567', out)).toBe(false)
    expect(t.lookupText('0100MB+905321234567', out)).toBe(false)
    expect(t.lookupText('100MB+905321234567', out)).toBe(true)
  })

  it('builds from (key text, encoded state) entries, keeping the newest state of a key given twice', () => {
    const entries: [string, string][] = [
      ['600001MB+905321234567', encodeState('ONAY', 2, 1_600_000_000, 10)],
      ['600001EB' + 'a@b.co', encodeState('RET', 20, 1_600_000_001, 2 ** 40)],
      ['600001MB+905321234567', encodeState('RET', 3, 1_600_000_002, 9)],
      ['999999999999999AT+905321234567', encodeState('ONAY', 22, 1_600_000_003, 11)]
    ]
    const t = ReplicaTable.fromEntries(entries, { capacity: 10, emailBytes: 100 })
    expect(t.keys).toBe(3)
    const out = newReplicaState()
    expect(t.lookupText('600001MB+905321234567', out) && plain(out)).toEqual({ status: 'ONAY', sourceIndex: 2, consentDate: 1_600_000_000, seq: 10 })
    expect(t.lookup('600001', 'EPOSTA', 'BIREYSEL', 'a@b.co', out) && plain(out)).toEqual({ status: 'RET', sourceIndex: 20, consentDate: 1_600_000_001, seq: 2 ** 40 })
    expect(t.lookup('999999999999999', 'ARAMA', 'TACIR', '+905321234567', out) && plain(out)).toEqual({ status: 'ONAY', sourceIndex: 22, consentDate: 1_600_000_003, seq: 11 })
  })

  it('applies [keyText, encodedState, …] chunks like upsertEncoded one by one; a bad entry stops after those before it', () => {
    const rnd = mulberry32(21)
    const bulk = ReplicaTable.create({ capacity: 40_000, emailBytes: 2_000_000 })
    const one = ReplicaTable.create({ capacity: 40_000, emailBytes: 2_000_000 })
    const ref = new Map<string, ReplicaState>()
    let expectedApplied = 0
    for (let round = 0; round < 12; round++) {
      if (round === 6) bulk.shared()
      const pairs: string[] = []
      for (let i = 0; i < 3000; i++) {
        const k = randomKey(rnd)
        const st = randomState(rnd)
        pairs.push(textOf(k), encodeState(st.status, st.sourceIndex, st.consentDate, st.seq))
        const old = ref.get(textOf(k))
        if (old === undefined || old.seq < st.seq) { ref.set(textOf(k), st); expectedApplied++ }
        one.upsertEncoded(pairs[pairs.length - 2]!, pairs[pairs.length - 1]!)
      }
      expect(bulk.upsertEncodedMany(pairs)).toBe(expectedApplied)
      expectedApplied = 0
    }
    expect(bulk.keys).toBe(ref.size)
    expect(one.keys).toBe(ref.size)
    for (const [text, st] of ref) {
      expect(lookupTextRaw(bulk, text)).toEqual(st)
    }
    const bad = ['5MB+905321234567', encodeState('ONAY', 1, 1, 1), '6MB+905321234567', 'not a state', '9MB+905321234567', encodeState('ONAY', 1, 1, 1)]
    expect(() => bulk.upsertEncodedMany(bad)).toThrow(/not an encoded state/)
    expect(lookupTextRaw(bulk, '5MB+905321234567')?.seq).toBe(1)
    expect(lookupTextRaw(bulk, '6MB+905321234567')).toBeNull()
    expect(lookupTextRaw(bulk, '9MB+905321234567')).toBeNull()
    expect(() => bulk.upsertEncodedMany(['8MB+905321234567', encodeState('ONAY', 1, 1, 1), '08MB+905321234567', encodeState('ONAY', 1, 1, 1)])).toThrow(RangeError)
    expect(lookupTextRaw(bulk, '8MB+905321234567')?.seq).toBe(1)
    expect(() => bulk.upsertEncodedMany(['x'])).toThrow(RangeError)
  })

  it('reports its shared bytes (20 bytes a slot and a little more) and its keys', () => {
    const t = ReplicaTable.create({ capacity: 1_000_000, emailBytes: 1000 })
    expect(t.slotCount).toBe(1_250_000)
    expect(t.bytes).toBeGreaterThanOrEqual(1_250_000 * 20 + 1000)
    expect(t.bytes).toBeLessThan(1_250_000 * 20.1 + 1000)
    expect(t.keys).toBe(0)
  })
})

function lookupTextRaw (t: ReplicaTable, text: string): ReplicaState | null {
  const out = newReplicaState()
  return t.lookupText(text, out) ? plain(out) : null
}

// --- worker threads -----------------------------------------------------------------------------------------------

/** Runs `body` (CommonJS, with `R` the compiled replica module, `data` and `post`) in a worker thread. */
function runWorker<T> (body: string, data: unknown, onReady?: () => void): Promise<T> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads')
    import(workerData.url).then((R) => {
      const data = workerData.data
      const post = (m) => parentPort.postMessage(m)
      ${body}
    }).catch((err) => parentPort.postMessage({ error: String(err && err.stack || err) }))`
  return new Promise<T>((resolve, reject) => {
    const w = new Worker(code, { eval: true, workerData: { url: DIST_REPLICA, data } })
    w.on('message', (m: { ready?: true, error?: string }) => {
      if (m.ready === true) { onReady?.(); return }
      if (m.error !== undefined) reject(new Error(m.error))
      else resolve(m as T)
      void w.terminate()
    })
    w.on('error', reject)
  })
}

describe('replica table shared with worker threads', () => {
  it('answers the same in a worker that attached it (zero copy: the worker also sees keys added later)', async () => {
    const rnd = mulberry32(99)
    const t = ReplicaTable.create({ capacity: 30_000, emailBytes: 1_000_000 })
    const queries: Key[] = []
    for (let i = 0; i < 20_000; i++) {
      const k = randomKey(rnd)
      t.upsert(k.brand, k.type, k.rt, k.recipient, randomState(rnd))
      queries.push(k, randomKey(rnd))
    }
    const before = queries.map(k => lookup(t, k))
    expect(before.filter(s => s !== null).length).toBeGreaterThan(10_000)
    // After the worker attached: a new key and a newer state for an old one, which it must see in its view.
    const gate = new Int32Array(new SharedArrayBuffer(4))
    const later = (): void => {
      t.upsert('600001', 'MESAJ', 'TACIR', '+905559998877', { status: 'RET', sourceIndex: 4, consentDate: 77, seq: 2 ** 47 })
      const k = queries[0]!
      t.upsert(k.brand, k.type, k.rt, k.recipient, { status: 'RET', sourceIndex: 9, consentDate: 99, seq: 2 ** 48 - 1 })
      Atomics.store(gate, 0, 1)
      Atomics.notify(gate, 0)
    }
    queries.push({ brand: '600001', type: 'MESAJ', rt: 'TACIR', recipient: '+905559998877' })
    expect(lookup(t, queries.at(-1)!)).toBeNull()
    const body = `
      const t = R.ReplicaTable.attach(data.shared)
      post({ ready: true })
      Atomics.wait(new Int32Array(data.gate), 0, 0)
      const out = R.newReplicaState()
      const answer = () => data.queries.map(k => t.lookup(k.brand, k.type, k.rt, k.recipient, out)
        ? { status: out.status, sourceIndex: out.sourceIndex, consentDate: out.consentDate, seq: out.seq } : null)
      let refused = false
      try { t.upsert('1', 'MESAJ', 'BIREYSEL', '+905321234567', out) } catch { refused = true }
      post({ answers: answer(), keys: t.keys, bytes: t.bytes, refused })`
    const got = await runWorker<{ answers: (ReplicaState | null)[], keys: number, bytes: number, refused: boolean }>(body, { shared: t.shared(), queries, gate: gate.buffer }, later)
    const expected = queries.map(k => lookup(t, k))
    expect(expected[0]?.seq).toBe(2 ** 48 - 1)
    expect(expected.at(-1)?.seq).toBe(2 ** 47)
    expect(got.answers).toEqual(expected)
    expect(got.keys).toBe(t.keys)
    expect(got.bytes).toBe(t.bytes)
    expect(got.refused).toBe(true)
    expect(() => ReplicaTable.attach({ ...t.shared(), locks: new SharedArrayBuffer(4) })).toThrow(TypeError)
  })

  it('never shows a reader a torn state or a half-inserted key while the writer applies 2,000,000 changes', async () => {
    // Every state is derived from one number v: seq = 2^40 + v·65537 (its high bits change too), and status, source
    // and date are functions of v. A reader that finds a key checks that its four fields agree on one v.
    const HOT = 48
    const NEW = 150_000
    const UPDATES = 2_000_000
    const hot: Key[] = []
    for (let i = 0; i < HOT; i++) {
      const recipient = i % 3 === 0 ? `hot${i}@example.com` : i % 3 === 1 ? '+90532000' + String(1000 + i) : '+9053200012345' + String(i % 10)
      hot.push({ brand: String(600001 + (i % 4)), type: i % 3 === 0 ? 'EPOSTA' : 'MESAJ', rt: i % 2 === 0 ? 'BIREYSEL' : 'TACIR', recipient })
    }
    const fresh: Key[] = []
    for (let i = 0; i < NEW; i++) {
      fresh.push({ brand: '700001', type: 'ARAMA', rt: 'BIREYSEL', recipient: i % 5 === 0 ? `new${i}@example.com` : '+90533' + String(1e7 + i).slice(1) })
    }
    const stateOf = (v: number, s: ReplicaState): ReplicaState => {
      s.status = ((v >>> 1) & 1) === 1 ? 'RET' : 'ONAY'
      s.sourceIndex = v % 23
      s.consentDate = Math.imul(v, 0x9e3779b1) >>> 0
      s.seq = 2 ** 40 + v * 65537
      return s
    }
    const t = ReplicaTable.create({ capacity: HOT + NEW, emailBytes: 2_000_000 })
    const st = newReplicaState()
    hot.forEach((k, i) => t.upsert(k.brand, k.type, k.rt, k.recipient, stateOf(i + 1, st)))
    const stop = new Int32Array(new SharedArrayBuffer(4))

    const body = `
      const t = R.ReplicaTable.attach(data.shared)
      const stop = new Int32Array(data.stop)
      const out = R.newReplicaState()
      const keys = data.hot.concat(data.fresh)
      const last = new Float64Array(keys.length)
      let reads = 0, found = 0, torn = 0, changes = 0, freshFound = 0, firstBad = null
      post({ ready: true })
      while (Atomics.load(stop, 0) === 0) {
        for (let i = 0; i < 64; i++) {
          // Hot keys half the time; otherwise the key being inserted now (the next after t.keys), or any key.
          const j = (reads & 1) === 0 ? reads % data.hot.length
            : (reads & 2) === 0 ? Math.min(t.keys, keys.length - 1)
              : (Math.imul(reads, 2654435761) >>> 0) % keys.length
          const k = keys[j]
          reads++
          if (!t.lookup(k.brand, k.type, k.rt, k.recipient, out)) continue
          found++
          if (j >= data.hot.length) freshFound++
          const v = (out.seq - 2 ** 40) / 65537
          const ok = Number.isInteger(v) && v > 0 && out.status === (((v >>> 1) & 1) === 1 ? 'RET' : 'ONAY') &&
            out.sourceIndex === v % 23 && out.consentDate === (Math.imul(v, 0x9e3779b1) >>> 0)
          if (!ok) { torn++; if (firstBad === null) firstBad = { j, status: out.status, sourceIndex: out.sourceIndex, consentDate: out.consentDate, seq: out.seq } }
          if (out.seq < last[j]) torn++ // a key's seq never goes back
          if (out.seq !== last[j]) { changes++; last[j] = out.seq }
        }
      }
      post({ reads, found, torn, changes, freshFound, firstBad })`

    let resolveReady!: () => void
    const ready = new Promise<void>(resolve => { resolveReady = resolve })
    const result = runWorker<{ reads: number, found: number, torn: number, changes: number, freshFound: number, firstBad: unknown }>(
      body, { shared: t.shared(), stop: stop.buffer, hot, fresh }, resolveReady)
    await ready
    let inserted = 0
    for (let u = 0; u < UPDATES; u++) {
      const v = HOT + 1 + u
      if (u % 13 === 0 && inserted < NEW) {
        const k = fresh[inserted++]!
        expect(t.upsert(k.brand, k.type, k.rt, k.recipient, stateOf(v, st))).toBe(true)
      } else {
        const k = hot[u % HOT]!
        if (!t.upsert(k.brand, k.type, k.rt, k.recipient, stateOf(v, st))) throw new Error('a newer seq was not applied')
      }
    }
    Atomics.store(stop, 0, 1)
    const r = await result
    expect(r.firstBad).toBeNull()
    expect(r.torn).toBe(0)
    expect(t.keys).toBe(HOT + inserted)
    // The reader really ran beside the writer: it saw many states change and keys appear.
    expect(r.reads).toBeGreaterThan(100_000)
    expect(r.changes).toBeGreaterThan(1000)
    expect(r.freshFound).toBeGreaterThan(0)
  }, 120_000)
})
