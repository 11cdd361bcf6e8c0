// Where the derived index lives in Redis. Every key starts with REDIS_PREFIX, so deployments and test runs
// can share one Redis. A filter version N is a set of keys beside the others; `filter:current` points at one.
// Version numbers can repeat (the counter lives in Redis and is lost with it), so every version also gets a
// generation id, random and never reused: a version is identified by (N, generation), never by N alone.
//
//   {P}filter:current        string  N of the version gateways serve
//   {P}filter:generation     string  generation id of that version (set in the same script as the pointer, and
//                                    read with it in one MGET)
//   {P}filter:next           string  counter: INCR gives the next version number
//   {P}filter:building       string  "N+1|generation" while a build writes N+1: changes are applied to it as well
//                                    as to N; the flip happens only if the claim is still this build's (build.ts)
//   {P}applied               string  highest change seq applied to Redis (the change applier resumes after it)
//   {P}changes               stream  one entry per applied change (field k = key text), trimmed to ~100k; gateways
//                                    follow it to set bloom bits in their local mirrors
//   {P}gw                    hash    gatewayId -> "N|unix ms": which version each live gateway serves
//   {P}v{N}:meta             hash    gen, buckets, blocks, count, seq (highest change seq in the snapshot), builtAt
//   {P}v{N}:bloom            string  the bloom filter bits (little-endian 32-bit words)
//   {P}v{N}:b:{bucket}       hash    key text -> encoded state (state.ts); ~64 keys a bucket so Redis keeps each
//                                    bucket as a compact listpack (hash-max-listpack-entries defaults to 128), and
//                                    the sentinel field "~" whose value is the generation id: one lookup also
//                                    proves that the bucket belongs to the version the gateway serves (view.ts)

import { randomBytes } from 'node:crypto'

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
  bloom (version: number): string
  bucketPrefix (version: number): string
  versionPattern (version: number): string
}

export function layout (prefix: string): Layout {
  return Object.freeze({
    current: prefix + 'filter:current',
    generation: prefix + 'filter:generation',
    next: prefix + 'filter:next',
    building: prefix + 'filter:building',
    applied: prefix + 'applied',
    changes: prefix + 'changes',
    gateways: prefix + 'gw',
    prefix,
    meta: (v: number) => `${prefix}v${v}:meta`,
    bloom: (v: number) => `${prefix}v${v}:bloom`,
    bucketPrefix: (v: number) => `${prefix}v${v}:b:`,
    versionPattern: (v: number) => `${prefix}v${v}:*`
  })
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
