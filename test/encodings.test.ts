// One encoding of the key text and of the state, whoever writes it. The same consents go through every path that
// writes the index — the embedded seed (a consent file), a consent write through the store followed by `load`
// (Postgres COPY → Redis), and the change applier (the ledger → Redis) — and every path must give byte-identical key
// texts, values, buckets and bloom bits. If two paths drifted, a key written by one would not be found by a check
// that builds it the other way, and a TACIR recipient who said RET would read as "no record": allowed.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { validateConsent, isValidConsent, type ValidConsent } from '../src/domain/consent.js'
import { buildFilter } from '../src/filter/build.js'
import { ChangeApplier } from '../src/filter/changes.js'
import { buildEmbeddedView } from '../src/filter/embedded.js'
import { bucketOf, hashKey, keyCode, keyHash, keyText } from '../src/filter/key.js'
import { layout, newGeneration } from '../src/filter/layout.js'
import { decodeState, encodeState } from '../src/filter/state.js'
import { CONSENT_COLUMNS } from '../src/formats/consent-file.js'
import { writeConsents } from '../src/store/consent-store.js'
import { sourceToIndex } from '../src/domain/vocabulary.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'
import { readBloom, writeBloom } from '../src/filter/bloom-store.js'
import { BloomFilter } from '../src/filter/bloom.js'

const log = pino({ level: 'silent' })
const FPR = 0.01

// Every type × recipient type, both statuses, the first and the last source (index 0 and 21, "l" in base 36), a
// phone and an e-mail recipient, a key written twice (its later RET wins), and a brand with other digits.
const RECORDS = [
  ['700001', '600001', '+905321234567', 'BIREYSEL', 'MESAJ', 'ONAY', 'HS_WEB', '2024-01-15 10:00:00'],
  ['700001', '600001', '+905321234567', 'BIREYSEL', 'ARAMA', 'ONAY', 'HS_FIZIKSEL_ORTAM', '2023-06-01 09:30:00'],
  ['700001', '600001', '+905327654321', 'TACIR', 'MESAJ', 'RET', 'IYS_FRAME_SMS', '2025-02-11 18:45:12'],
  ['700001', '600001', '+905327654321', 'TACIR', 'ARAMA', 'ONAY', 'HS_CAGRI_MERKEZI', '2022-12-31 23:59:59'],
  ['700001', '600001', 'ali.veli@example.com', 'BIREYSEL', 'EPOSTA', 'ONAY', 'HS_EPOSTA', '2024-07-01 08:00:00'],
  ['700001', '600001', 'ali.veli@example.com', 'TACIR', 'EPOSTA', 'RET', 'IYS_WEB', '2024-07-02 08:00:00'],
  ['700001', '600001', '+905301112233', 'BIREYSEL', 'MESAJ', 'ONAY', 'HS_MOBIL', '2021-03-03 03:03:03'],
  ['700001', '600001', '+905301112233', 'BIREYSEL', 'MESAJ', 'RET', 'IYS_KISAMESAJ', '2025-05-05 12:00:00'],
  ['700002', '987', '+905551234567', 'BIREYSEL', 'MESAJ', 'ONAY', 'HS_2015', '2015-05-01 00:00:00']
] as const

interface Index {
  /** key text → encoded state */
  values: Map<string, string>
  /** key text → bucket */
  buckets: Map<string, number>
  bloom: Buffer
}

/** Every field of buckets 0..n-1 of a version in Redis (without the sentinel), and its bloom bits. */
async function readIndex (services: TestServicesWithRedis, prefix: string, version: number, buckets: number, blocks: number): Promise<Index> {
  const redis = services.redis.client
  const keys = layout(prefix)
  const bloom = await readBloom(redis, keys, version, blocks)
  const out: Index = { values: new Map(), buckets: new Map(), bloom: Buffer.from(bloom!.buffer as ArrayBuffer) }
  for (let b = 0; b < buckets; b++) {
    for (const [field, value] of Object.entries(await redis.hgetall(keys.bucket(version, b)))) {
      if (field === '~') continue
      out.values.set(field, value)
      out.buckets.set(field, b)
    }
  }
  return out
}

describe('key text and state encoding', () => {
  let services: TestServicesWithRedis
  let consents: ValidConsent[]
  let embedded: Awaited<ReturnType<typeof buildEmbeddedView>>
  let loaded: Index
  let applied: Index
  let geometry: { buckets: number, blocks: number }

  beforeAll(async () => {
    services = await testServices({ redis: true, migrate: true, dirPrefix: 'iys-enc-' })
    const now = Date.now() / 1000
    consents = RECORDS.map(r => {
      const c = validateConsent(Object.fromEntries(CONSENT_COLUMNS.map((name, i) => [name, r[i]])), now)
      if (!isValidConsent(c)) throw new Error(`test record is invalid: ${JSON.stringify(c)}`)
      return c
    })

    // 1. The embedded seed: the same records as a consent file.
    const file = join(services.dir, 'seed.csv')
    writeFileSync(file, [CONSENT_COLUMNS.join(','), ...RECORDS.map(r => r.join(','))].join('\n') + '\n')
    embedded = await buildEmbeddedView(file, FPR, now)

    // 2. A consent write through the store, in file order (so that the ledger's seqs are the seed's line numbers), as
    // İYS's facts (a first RET is applied), then `load` from Postgres into Redis.
    const outcomes = await writeConsents(services.pool, consents.map(consent => ({ consent, authority: 'iys' as const, via: 'push' as const })))
    expect(outcomes.map(o => o.status)).toEqual(consents.map(() => 'applied'))
    const loadPrefix = services.redis.prefix + 'load:'
    const result = await buildFilter({ pool: services.pool, redis: services.redis.client, redisUrl: services.redis.url, layout: layout(loadPrefix), fpr: FPR, log, drainTimeoutMs: 0 })
    const meta = await services.redis.client.hgetall(layout(loadPrefix).meta(result!.version))
    geometry = { buckets: Number(meta.buckets), blocks: Number(meta.blocks) }
    loaded = await readIndex(services, loadPrefix, result!.version, geometry.buckets, geometry.blocks)

    // 3. The change applier, walking the whole ledger into an empty version of the same shape under another prefix.
    const applierPrefix = services.redis.prefix + 'applier:'
    const keys = layout(applierPrefix)
    const gen = newGeneration()
    await services.redis.client.hset(keys.meta(1), { gen, buckets: geometry.buckets, blocks: geometry.blocks })
    await writeBloom(services.redis.client, keys, 1, new BloomFilter(new SharedArrayBuffer(loaded.bloom.length)))
    // Every bucket of a complete version has its sentinel (load writes them): the applier writes only into those.
    for (let b = 0; b < geometry.buckets; b++) await services.redis.client.hset(keys.bucket(1, b), '~', gen)
    await services.redis.client.mset(keys.current, '1', keys.generation, gen)
    await new ChangeApplier({ pool: services.pool, redis: services.redis.client, layout: keys, log }).catchUp()
    applied = await readIndex(services, applierPrefix, 1, geometry.buckets, geometry.blocks)
  }, 60_000)

  afterAll(async () => {
    await services?.close()
  })

  it('writes the key text and state the format documents, for a pinned example', () => {
    // 2024-01-15 10:00:00 Turkey time is 1705302000 (base 36 "s7ajg0"); HS_WEB is source 2; the first line is seq 1.
    expect(embedded.view.states.get('600001MB+905321234567')).toBe('O2s7ajg0.1')
    expect(loaded.values.get('600001MB+905321234567')).toBe('O2s7ajg0.1')
    expect(applied.values.get('600001MB+905321234567')).toBe('O2s7ajg0.1')
    // A RET from the last source (21, "l"), a TACIR key.
    expect(loaded.values.get('600001MT+905327654321')).toMatch(/^Rl[0-9a-z]+\.3$/)
  })

  it('gives byte-identical key texts and values through the embedded seed, load and the change applier', () => {
    const sorted = (m: Map<string, string>): [string, string][] => [...m].sort(([a], [b]) => (a < b ? -1 : 1))
    expect(loaded.values.size).toBe(8) // nine lines, one key written twice
    expect(sorted(loaded.values)).toEqual(sorted(embedded.view.states))
    expect(sorted(applied.values)).toEqual(sorted(loaded.values))
  })

  it('gives each key the text, the bucket and the state the checker computes for it', () => {
    const latest = new Map<string, { c: ValidConsent, seq: number }>()
    consents.forEach((c, i) => { latest.set(keyText(c.brandCode, keyCode(c.type, c.recipientType), c.recipient), { c, seq: i + 1 }) })
    for (const [text, { c, seq }] of latest) {
      hashKey(c.brandCode, keyCode(c.type, c.recipientType), c.recipient)
      const bucket = bucketOf(keyHash[0]!, keyHash[1]!, geometry.buckets)
      expect(loaded.buckets.get(text), text).toBe(bucket)
      expect(applied.buckets.get(text), text).toBe(bucket)
      const value = encodeState(c.status, sourceToIndex(c.source), c.consentDate, seq)
      expect(loaded.values.get(text), text).toBe(value)
      expect(decodeState(value)).toEqual({ status: c.status, source: c.source, consentDate: c.consentDate, seq })
    }
  })

  it('sets the same bloom bits through every path', () => {
    expect(embedded.view.bloom.blocks).toBe(geometry.blocks)
    expect(applied.bloom.equals(loaded.bloom)).toBe(true)
    expect(Buffer.from(embedded.view.bloom.buffer as ArrayBuffer).equals(loaded.bloom)).toBe(true)
    expect(loaded.bloom.some(byte => byte !== 0)).toBe(true)
  })
})
