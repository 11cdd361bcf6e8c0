// A full rebuild of the derived index (`iys-gateway load`, and a gateway's automatic rebuild when Redis lost it).
// Postgres → (COPY TO, streamed) → a new filter version in Redis beside the current one → atomic flip of the
// pointer → the old version is removed once every live gateway serves the new one. A build that fails removes what
// it wrote and leaves the current version serving, untouched.
//
// One build at a time per database: each holds the session-level advisory lock REBUILD_LOCK_KEY on its snapshot
// connection for its whole run (Postgres releases it if that connection dies). `load` waits for it; a gateway's
// automatic rebuild only tries it, so of many gateways that see Redis empty exactly one rebuilds.

import type { Logger } from 'pino'
import copyStreams from 'pg-copy-streams'
import { SOURCES } from '../domain/vocabulary.js'
import type { Pool, PoolClient } from '../store/pg.js'
import { unlinkPattern, type RedisClient } from '../store/redis.js'
import { digitCount, type RespBulkWriter } from '../store/resp-bulk.js'
import { BucketWriters } from './bucket-writers.js'
import { createEmptyBloom, writeBloom } from './bloom-store.js'
import { BLOOM_SEGMENTS, BloomFilter } from './bloom.js'
import { ChangeApplier } from './changes.js'
import { bucketOf, hashBytes, keyHash, keyTextSql } from './key.js'
import { BUCKET_GROUPS, BUCKET_SENTINEL, GROWTH_HEADROOM, KEYS_PER_BUCKET, groupTag, newGeneration, type Layout } from './layout.js'
import { withScripts } from './scripts.js'
import { SEQ_SEPARATOR, STATUS_CODE, stateColumnsSql } from './state.js'

/**
 * The Postgres advisory lock (session level, one bigint key) a filter build holds. A fixed constant, distinct from
 * CONSENT_WRITE_LOCK (0x1f5a7e02) and any other lock of this schema: "iys filter build" in spirit, 0x1f5a7e0b.
 */
export const REBUILD_LOCK_KEY = 0x1f5a7e0b

/** What a build reports as it goes (the CLI's Progress; nothing for a gateway's rebuild, which logs). */
export interface BuildProgress {
  expect (rows: number): void
  update (rows: number): void
  setPhase (phase: string): void
  done (message: string): void
}

export interface LoadOptions {
  pool: Pool
  redis: RedisClient
  /** The address `redis` was made from: bucket writes go over bulk RESP connections of their own (bucket-writers.ts). */
  redisUrl: string
  layout: Layout
  fpr: number
  log: Logger
  /** Makes the progress reporter once the version number is known. */
  progress?: (version: number) => BuildProgress | null
  /**
   * 'wait' (default): wait for a build that holds REBUILD_LOCK_KEY to end, then build. 'try': when another build
   * holds the lock, build nothing and resolve null.
   */
  lock?: 'wait' | 'try'
  /** Checked once the lock is held: false builds nothing (resolves null), e.g. another gateway just rebuilt. */
  stillNeeded?: () => Promise<boolean>
  /** How long to wait for live gateways to move to the new version before removing the old (ms). */
  drainTimeoutMs?: number
  /** A gateway whose heartbeat is older than this is considered gone (ms). */
  heartbeatStaleMs?: number
  /**
   * Aborting ends the build: its Postgres connection (and with it the lock) and its bulk Redis connection are closed,
   * so that whatever it waits on fails, and it never flips. The caller closes `redis` (the automatic rebuild's deadline).
   */
  signal?: AbortSignal
}

export interface LoadResult {
  version: number
  generation: string
  previous: number | null
  rows: number
  seq: number
  seconds: number
}

// The key text and the pieces of the encoded state, computed by Postgres from the tables that own both encodings
// (key.ts, state.ts; the change applier reads the same columns), so that Node only splits on tabs:
//   key \t status code \t source index \t consentDate epoch seconds \t seq
const COPY_SQL = `COPY (SELECT ${keyTextSql()} AS k, ${stateColumnsSql()} FROM consents) TO STDOUT`

// The build's scripts (claim, flip, unbuild) are lua/*.lua, called through scripts.ts; their headers say what they
// guard against.

// Whether this session still holds REBUILD_LOCK_KEY (a bigint advisory lock appears as classid 0 (the high 32 bits),
// objid (the low 32 bits), objsubid 1). The lock connection is idle during the Redis phase; a Postgres restart or a
// cut link kills it silently, and another build may then hold the lock.
const LOCK_HELD_SQL = `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
  AND classid = 0 AND objid = $1::bigint::oid AND objsubid = 1 AND granted) AS ok`

export async function buildFilter (opts: LoadOptions): Promise<LoadResult | null> {
  const client = await opts.pool.connect()
  let locked = false
  let failed = false
  // A checked-out client whose connection dies (a Postgres restart) emits 'error': without a listener that would end
  // the process. The next query on it fails, and the check before the flip (LOCK_HELD_SQL) is such a query.
  const onError = (): void => {}
  client.on('error', onError)
  const onAbort = (): void => { client.end().catch(() => {}) }
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    opts.signal?.throwIfAborted()
    if (opts.lock === 'try') {
      locked = (await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [REBUILD_LOCK_KEY])).rows[0]!.ok
      if (!locked) return null
    } else {
      await client.query('SELECT pg_advisory_lock($1)', [REBUILD_LOCK_KEY])
      locked = true
    }
    if (opts.stillNeeded !== undefined && !await opts.stillNeeded()) return null
    return await buildLocked(opts, client)
  } catch (err) {
    failed = true
    throw err
  } finally {
    // After a failure the connection may be mid-COPY or broken: close it (that also drops the lock), never reuse it.
    if (locked && !failed) await client.query('SELECT pg_advisory_unlock($1)', [REBUILD_LOCK_KEY]).catch(() => {})
    client.off('error', onError)
    opts.signal?.removeEventListener('abort', onAbort)
    client.release(failed)
  }
}

async function buildLocked (opts: LoadOptions, client: PoolClient): Promise<LoadResult> {
  const { pool, layout, log } = opts
  const redis = withScripts(opts.redis)
  const started = Date.now()
  const version = await redis.incr(layout.next)
  const generation = newGeneration()
  const claim = `${version}|${generation}`
  const progress = opts.progress?.(version) ?? null
  let rows = 0
  let seq = 0
  try {
    // One snapshot for the count, the highest seq and the rows: changes committed later are replayed by seq.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
    const stats = await client.query<{ n: string, seq: string }>('SELECT count(*) AS n, coalesce(max(seq), 0) AS seq FROM consents')
    const n = Number(stats.rows[0]!.n)
    progress?.expect(n)
    seq = Number(stats.rows[0]!.seq)
    const capacity = Math.max(1000, Math.ceil(n * GROWTH_HEADROOM))
    const bloom = BloomFilter.forCapacity(capacity, opts.fpr)
    // Whole bucket groups: a key's group is its bloom segment (key.ts bucketOf), and every group has buckets.
    const buckets = Math.ceil(capacity / KEYS_PER_BUCKET / BUCKET_GROUPS) * BUCKET_GROUPS
    const bucketPrefix = Buffer.from(layout.bucketPrefix(version), 'latin1')
    log.info({ version, generation, rows: n, buckets, bloomBytes: bloom.buffer.byteLength }, 'building filter version')
    // Announce the version being built (its shape first): from now on the change applier writes every change to
    // it as well as to the current version, so nothing committed during the build is missing after the flip.
    await redis.hset(layout.meta(version), { gen: generation, buckets, blocks: bloom.blocks, capacity })
    await createEmptyBloom(redis, layout, version, bloom.blocks)
    const stale = await redis.iysClaim(layout.building, layout.current, layout.applied, claim, String(seq))
    if (stale !== null) {
      // A build that died (killed, its lock dropped with its connection) left its half-written version behind.
      const removed = await removeVersion(redis, layout, parseInt(stale, 10))
      log.warn({ version: parseInt(stale, 10), keys: removed }, 'removed the version an unfinished build left behind')
    }

    const writers = await BucketWriters.open(redis, opts.redisUrl)
    const closeWriter = (): void => { writers.close() } // wakes a write waiting on Redis (resp-bulk.ts)
    opts.signal?.addEventListener('abort', closeWriter, { once: true })
    try {
      const copy = client.query(copyStreams.to(COPY_SQL))
      let carry: Buffer | null = null
      for await (const chunk of copy as AsyncIterable<Buffer>) {
        const buf: Buffer = carry === null ? chunk : Buffer.concat([carry, chunk])
        let start = 0
        let nl: number
        while ((nl = buf.indexOf(10, start)) !== -1) {
          writeRow(buf, start, nl, writers, bloom, buckets, bucketPrefix, rows)
          rows++
          start = nl + 1
        }
        carry = start < buf.length ? buf.subarray(start) : null
        await writers.backpressure()
        progress?.update(rows)
      }
      if (carry !== null) throw new Error('COPY output ended in the middle of a row')
      await client.query('COMMIT')
      // Every bucket carries a sentinel field whose value is the generation id, so that a single lookup (one HMGET)
      // also tells whether the bucket is the served version's: a Redis that restarted empty, or was loaded again
      // with the same version number, must never read as "no record" (filter/view.ts).
      const sentinelValue = Buffer.from(generation, 'latin1')
      for (let b = 0; b < buckets; b++) {
        const writer = writers.of(b)
        writer.reserve(64 + bucketPrefix.length)
        writer.bytes(HSET_HEAD)
        writeBucketKey(writer, bucketPrefix, b)
        writer.bulkString(BUCKET_SENTINEL)
        writer.bulkBytes(sentinelValue, 0, sentinelValue.length)
        writer.end()
        if ((b & 1023) === 0) await writers.backpressure()
      }
      await writers.drain()
    } finally {
      opts.signal?.removeEventListener('abort', closeWriter)
      writers.close()
    }

    await writeBloom(redis, layout, version, bloom)
    // Changes committed after the snapshot: the bulk write above may have overwritten the applier's newer states
    // with the snapshot's, and the SET the applier's bloom bits. Replaying them by seq (Lua keeps the newest) fixes both.
    progress?.setPhase('replaying changes since the snapshot')
    const applier = new ChangeApplier({ pool, redis, layout, log })
    for (let from = seq, next = -1; next !== from;) {
      if (next !== -1) from = next
      next = await applier.applyFrom(from)
    }
    await redis.hset(layout.meta(version), { count: rows, seq, builtAt: new Date().toISOString(), complete: 1 })
    opts.signal?.throwIfAborted()
    // Right before the flip: is the lock still ours? (flip.lua's claim check covers a build that claimed meanwhile.)
    if ((await client.query<{ ok: boolean }>(LOCK_HELD_SQL, [REBUILD_LOCK_KEY])).rows[0]?.ok !== true) {
      throw new Error('the filter build lost its Postgres advisory lock (connection lost?); not flipping')
    }
    const old = await redis.iysFlip(layout.current, layout.meta(version), layout.building, layout.applied, layout.generation, String(version), String(seq), generation, claim)
    const previous = old === null ? null : Number(old)
    progress?.done(`version ${version} is current`)
    log.info({ version, generation, previous, rows, seq }, 'flipped to new filter version')

    if (previous !== null && previous !== version) {
      await waitForGateways(redis, layout, version, generation, opts.drainTimeoutMs ?? 30_000, opts.heartbeatStaleMs ?? 5_000, log)
      const removed = await removeVersion(redis, layout, previous)
      log.info({ version: previous, keys: removed }, 'removed previous filter version')
    }
    return { version, generation, previous, rows, seq, seconds: (Date.now() - started) / 1000 }
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    // Nothing points at the new version unless the flip ran, and the flip is the last step that can fail.
    const cur = await redis.get(layout.current).catch(() => null)
    if (cur !== String(version)) {
      await redis.iysUnbuild(layout.building, claim).catch(() => 0)
      await removeVersion(redis, layout, version).catch(() => 0)
    }
    throw err
  }
}

/**
 * Removes every key of `version`; the number removed. Its bloom segments first: the applier writes no more to a
 * version whose segment is gone (lua/apply-states.lua), so no bucket comes back behind the scan.
 */
async function removeVersion (redis: RedisClient, layout: Layout, version: number): Promise<number> {
  let removed = 0
  for (const n of await Promise.all(Array.from({ length: BLOOM_SEGMENTS }, async (_, g) => await redis.unlink(layout.bloomSegment(version, g))))) removed += n
  for (const pattern of layout.versionPatterns(version)) removed += await unlinkPattern(redis, pattern)
  return removed
}

/** Waits until every live gateway reports serving `version` (or the timeout passes). */
async function waitForGateways (redis: RedisClient, layout: Layout, version: number, generation: string, timeoutMs: number, staleMs: number, log: Logger): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const beats = await redis.hgetall(layout.gateways)
    const now = Date.now()
    let behind = 0
    for (const [id, v] of Object.entries(beats)) {
      const [served, at, gen] = v.split('|')
      if (now - Number(at) > staleMs) {
        await redis.hdel(layout.gateways, id) // gone: it will re-register on its next poll if it comes back
        continue
      }
      // Gateways that report a generation are compared by it (numbers repeat); older ones by number.
      if (gen !== undefined && gen !== '' ? gen !== generation : Number(served) < version) behind++
    }
    if (behind === 0) return
    if (now > deadline) {
      log.warn({ behind, version }, 'some gateways have not moved to the new version; removing the old one anyway')
      return
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

const HSET_HEAD = Buffer.from('*4\r\n$4\r\nHSET\r\n', 'latin1')
// Each group's hash tag `{g}` as bytes (layout.ts bucketKey).
const GROUP_TAG_BYTES: readonly Buffer[] = Array.from({ length: BUCKET_GROUPS }, (_, g) => Buffer.from(groupTag(g), 'latin1'))

/** The bulk string of bucket `b`'s key: `{bucketPrefix}{b}{g}` (layout.ts bucketKey). */
function writeBucketKey (w: RespBulkWriter, bucketPrefix: Buffer, b: number): void {
  const tag = GROUP_TAG_BYTES[b & (BUCKET_GROUPS - 1)]!
  w.bulkHeader(bucketPrefix.length + digitCount(b, 10) + tag.length)
  w.bytes(bucketPrefix)
  w.int(b)
  w.bytes(tag)
  w.crlf()
}
// The encoded state's single-byte pieces (state.ts), compared and written as bytes.
const ONAY_BYTE = STATUS_CODE.ONAY.charCodeAt(0)
const RET_BYTE = STATUS_CODE.RET.charCodeAt(0)
const SEQ_SEPARATOR_BYTE = SEQ_SEPARATOR.charCodeAt(0)

/**
 * One COPY row buf[start, end) → bloom bit + `HSET {bucket key} key value`, composed straight from the
 * bytes Postgres sent into the writer's buffer: no string is built per row. Row layout: see COPY_SQL; the value
 * is the encoding of state.ts (status letter, source and dates in base 36).
 */
function writeRow (buf: Buffer, start: number, end: number, writers: BucketWriters, bloom: BloomFilter, buckets: number, bucketPrefix: Buffer, rowIndex: number): void {
  const t1 = buf.indexOf(9, start)
  const t2 = t1 + 2
  const t3 = buf.indexOf(9, t2 + 1)
  const t4 = buf.indexOf(9, t3 + 1)
  const status = buf[t1 + 1]
  const source = readInt(buf, t2 + 1, t3)
  const date = readInt(buf, t3 + 1, t4)
  const seq = readInt(buf, t4 + 1, end)
  // Postgres is the truth, but a row written around our code (a manual UPDATE) could hold a source we do not know;
  // refuse the whole load rather than publish a state we cannot encode. No key in the message.
  if (t1 === -1 || t4 === -1 || t4 > end || buf[t2] !== 9 || (status !== ONAY_BYTE && status !== RET_BYTE) ||
      !(source >= 0 && source < SOURCES.length) || !(date >= 0) || !(seq >= 0)) {
    throw new Error(`consents row ${rowIndex + 1} of the snapshot has an unknown status or source; fix it in Postgres and run load again`)
  }
  hashBytes(buf, start, t1)
  const h1 = keyHash[0]!; const h2 = keyHash[1]!
  bloom.add(h1, h2)
  const bucket = bucketOf(h1, h2, buckets)
  const w = writers.of(bucket)
  w.reserve(128 + bucketPrefix.length + (t1 - start))
  w.bytes(HSET_HEAD)
  writeBucketKey(w, bucketPrefix, bucket)
  w.bulkBytes(buf, start, t1)
  w.bulkHeader(2 + digitCount(source, 36) + digitCount(date, 36) + digitCount(seq, 36))
  w.byte(status)
  w.base36(source)
  w.base36(date)
  w.byte(SEQ_SEPARATOR_BYTE)
  w.base36(seq)
  w.crlf()
  w.end()
}

/** A non-negative decimal integer from ASCII bytes; NaN when empty or not digits (NULL is \\N in COPY text). */
function readInt (buf: Buffer, start: number, end: number): number {
  if (end <= start) return NaN
  let n = 0
  for (let i = start; i < end; i++) {
    const d = buf[i]! - 48
    if (d < 0 || d > 9) return NaN
    n = n * 10 + d
  }
  return n
}
