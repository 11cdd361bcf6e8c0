// Where the derived index lives in Redis. Every key starts with REDIS_PREFIX {P}, so deployments and test runs
// can share one Redis. A filter version N is a set of keys beside the others; `filter:current` points at one.
// Version numbers can repeat (the counter lives in Redis and is lost with it), so every version also gets a
// generation id, random and never reused: a version is identified by (N, generation), never by N alone.
//
// The same layout serves one Redis and a Redis Cluster. In a cluster a script or a multi-key command may only touch
// keys of one hash slot, and the slot of a key is that of the text between its first `{` and `}` (its hash tag):
//   - the control keys carry the tag `{P}`: they share one slot, so the pointer scripts (claim, flip, the applier's
//     commit) stay atomic. With them each version's meta, which those scripts read. All small.
//   - the buckets, where the states (nearly all the memory) live, carry the hash tag of their group g = bucket mod
//     BUCKET_GROUPS (GROUP_TAGS): 128 slots, evenly spaced, spread over the shards by Redis Cluster's own slot
//     assignment; so does segment g of the version's bloom bits (bloom.ts: a key's bucket group is its bloom segment). A batch lookup sends one script
//     per group it touches (view.ts), the applier writes a change's state and bits with one script per group
//     (changes.ts), `load` writes each bucket and segment to the master of its group's slot (build.ts). One Redis
//     has every slot: the tags change nothing there.
//
//   {P}filter:current        string  N of the version gateways serve
//   {P}filter:generation     string  generation id of that version (set in the same script as the pointer, and
//                                    read with it in one MGET)
//   {P}filter:next           string  counter: INCR gives the next version number
//   {P}filter:building       string  "N+1|generation" while a build writes N+1: changes are applied to it as well
//                                    as to N; the flip happens only if the claim is still this build's (build.ts)
//   {P}applied               string  highest change seq applied to Redis (the change applier resumes after it)
//   {P}changes               stream  one entry per applied change (key text, seq, state), trimmed to ~100k, and
//                                    heartbeats; gateways follow it (mirror.ts)
//   {P}gw                    hash    gatewayId -> "N|unix ms|generation": which version each live gateway serves
//   {P}v{N}:meta             hash    gen, buckets, blocks, count, seq (highest change seq in the snapshot), builtAt
//   P v{N}:bloom{t}          string  segment g of the bloom filter bits (little-endian 32-bit words, bloom.ts); {t}
//                                    is group g's hash tag (GROUP_TAGS)
//   P v{N}:b:{bucket}{t}     hash    key text -> encoded state (state.ts); ~64 keys a bucket so Redis keeps each
//                                    bucket as a compact listpack (hash-max-listpack-entries defaults to 128), and
//                                    the sentinel field "~" whose value is the generation id: one lookup also
//                                    proves that the bucket belongs to the version the gateway serves (view.ts)

import { randomBytes } from 'node:crypto'
import { BLOOM_SEGMENTS } from './bloom.js'

export interface Layout {
  readonly current: string
  readonly generation: string
  readonly next: string
  readonly building: string
  readonly applied: string
  readonly changes: string
  readonly gateways: string
  readonly prefix: string
  meta (version: number): string
  /** Segment `g` of a version's bloom bits (bloom.ts), in bucket group g's slot. */
  bloomSegment (version: number, g: number): string
  bucketPrefix (version: number): string
  /** The key of bucket `b` of version `version` (bucketKey). */
  bucket (version: number, b: number): string
  /** SCAN patterns that match every key of a version (its control-slot keys, its buckets). */
  versionPatterns (version: number): string[]
}

export function layout (prefix: string): Layout {
  const control = `{${prefix}}` // REDIS_PREFIX has no braces (config.ts)
  return Object.freeze({
    current: control + 'filter:current',
    generation: control + 'filter:generation',
    next: control + 'filter:next',
    building: control + 'filter:building',
    applied: control + 'applied',
    changes: control + 'changes',
    gateways: control + 'gw',
    prefix,
    meta: (v: number) => `${control}v${v}:meta`,
    bloomSegment: (v: number, g: number) => `${prefix}v${v}:bloom${groupTag(g)}`,
    bucketPrefix: (v: number) => `${prefix}v${v}:b:`,
    bucket: (v: number, b: number) => bucketKey(`${prefix}v${v}:b:`, b),
    versionPatterns: (v: number) => [`${control}v${v}:*`, `${prefix}v${v}:*`]
  })
}

/** Bucket groups: each is one hash slot of a Redis Cluster (see above), and one bloom segment. The group is `b & mask`. */
export const BUCKET_GROUPS = BLOOM_SEGMENTS

/**
 * The hash tag of each group: the shortest base-36 text whose slot falls in [128·g, 128·g + 128), so that the groups'
 * slots are evenly spaced over the 16384 and a cluster that gives each master a contiguous, equal range of slots (as
 * `redis-cli --cluster create` and rebalancing do) gets an equal share of groups: 43/43/42 on three masters, 16 each on
 * eight. Tags like {0}…{127} fall where CRC16 puts them: about 16 ± 4 groups a master on eight.
 */
const GROUP_TAGS: readonly string[] = ('14 10 6u 18 6l 6h 6d 7z 4n 29 25 21 3 7 4w 4s 1p 1t 1x 65 1a 1e 1i 1m f b n j w s 3z 2d ' +
  '15 11 6t 19 6m 6i 6e 6a 4o 28 24 20 2 6 4v 4r 1q 1u 1y 64 73 1d 1h 1l g c o k v r 2a z 16 12 6w 6s 6n 6j 6f 6b 4l 4h ' +
  '27 23 1 5 9 38 1r 1v 1z 67 1c 1g 1k 1o d 3e l h u q 2b y 17 13 6v 6r 6o 6k 6g 6c 4m 4i 26 22 0 4 8 39 1s 1w 62 66 ' +
  '1b 1f 1j 1n e a m i t p 2c x').split(' ').map(t => `{${t}}`)

/**
 * Redis Cluster's hash slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key without one, mod 16384.
 * By hand, ten lines: ioredis computes it with a package of its own that is not ours to import.
 */
export function hashSlot (key: string): number {
  const open = key.indexOf('{')
  const close = open === -1 ? -1 : key.indexOf('}', open + 1)
  const text = close > open + 1 ? key.slice(open + 1, close) : key
  let crc = 0
  for (const byte of Buffer.from(text, 'utf8')) {
    crc ^= byte << 8
    for (let i = 0; i < 8; i++) crc = (crc & 0x8000) !== 0 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc % 16384
}

/** The hash slot of each group (`GROUP_SLOTS[g]` in [128·g, 128·g + 128)). */
export const GROUP_SLOTS: readonly number[] = GROUP_TAGS.map(hashSlot)

/** The group (hash slot) of bucket `b`. */
export function bucketGroup (b: number): number {
  return b & (BUCKET_GROUPS - 1)
}

/** The hash tag of bucket `b`'s group (GROUP_TAGS). */
export function groupTag (b: number): string {
  return GROUP_TAGS[b & (BUCKET_GROUPS - 1)]!
}

/** The key of bucket `b` under a version's bucket prefix: `P v{N}:b:{b}{tag of its group}`. */
export function bucketKey (bucketPrefix: string, b: number): string {
  return bucketPrefix + b + GROUP_TAGS[b & (BUCKET_GROUPS - 1)]!
}

/** A field every bucket of a complete version has ("~" cannot start a key text, which starts with a digit). */
export const BUCKET_SENTINEL = '~'

/**
 * A new generation id: 48 random bits, 8 characters. Short on purpose, as it is stored once per bucket (the
 * sentinel's value); a repeat needs the same version number and the same 48 bits, which does not happen.
 */
export function newGeneration (): string {
  return randomBytes(6).toString('base64url')
}

/** Keys per bucket at the filter's capacity; stays well under Redis's listpack threshold of 128 entries. */
export const KEYS_PER_BUCKET = 64
/** A version is sized for this many times the rows it starts with, leaving room for changes until the next load. */
export const GROWTH_HEADROOM = 1.25
