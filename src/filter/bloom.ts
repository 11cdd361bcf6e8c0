// Split-block bloom filter (Putze, Sanders & Singler; the layout Parquet and Impala use): every key maps to one
// 256-bit block (32 bytes, inside one cache line) and sets one bit in each of the block's eight 32-bit words.
// A lookup touches one cache line and does no allocation.
//
// A filter is BLOOM_SEGMENTS equal segments, and a key's block lies in segment h1 >>> 25 (its hash's top 7 bits) at
// (h1's other 25 bits) × blocks-per-segment / 2^25: the same spread as one multiply-shift over the whole filter, but
// a segment can live apart from the others. Redis keeps each segment beside the key's bucket group (key.ts bucketOf
// puts every key in the bucket group of its segment), so that in a Redis Cluster a change's state and its bloom bits
// are one hash slot, and a version's bits are spread over the shards with its buckets (layout.ts).
//
// The bits live in a SharedArrayBuffer so that worker threads (bulk scrub) read the very same memory with no copy.
// There is one writer (the thread that applies changes); bits are only ever set, so readers need no lock: a
// reader sees a bit either before or after it is set, and a key is inserted before it is reported as stored.

// Odd constants from the Parquet specification: multiply-shift takes each word's bit from a different hash.
const S0 = 0x47b6137b; const S1 = 0x44974d91; const S2 = 0x8824ad5b; const S3 = 0xa2b7289d
const S4 = 0x705495c7; const S5 = 0x2df1424b; const S6 = 0x9efc4947; const S7 = 0x5c6bfb31

const SALTS = [S0, S1, S2, S3, S4, S5, S6, S7]

export const BLOCK_BYTES = 32
/** Segments of every filter (a power of two: the segment is the top log2 bits of h1). */
export const BLOOM_SEGMENTS = 128
const SEGMENT_SHIFT = 25 // 32 - log2(BLOOM_SEGMENTS)
const IN_SEGMENT = (1 << SEGMENT_SHIFT) - 1
const TWO_25 = 1 << SEGMENT_SHIFT

/** The segment of a key's block: its hash's top bits. */
export function segmentOf (h1: number): number {
  return h1 >>> SEGMENT_SHIFT
}

/** Expected false-positive rate of a split-block filter with `blocks` blocks holding `n` keys. */
export function expectedFpr (n: number, blocks: number): number {
  // Keys per block are Poisson(λ); a block with j keys answers a foreign key "maybe" with (1 - (31/32)^j)^8.
  const lambda = n / blocks
  let p = Math.exp(-lambda) // P(j = 0)
  let fpr = 0
  const jMax = Math.ceil(lambda + 12 * Math.sqrt(lambda + 1) + 20)
  for (let j = 0; j <= jMax; j++) {
    if (j > 0) p *= lambda / j
    fpr += p * Math.pow(1 - Math.pow(31 / 32, j), 8)
  }
  return fpr
}

/** The fewest blocks that keep the expected false-positive rate at or below `fpr` for `n` keys. */
export function blocksFor (n: number, fpr: number): number {
  if (!(fpr > 0 && fpr < 1)) throw new RangeError(`false-positive rate must be in (0, 1), got ${fpr}`)
  const count = Math.max(1, Math.ceil(n))
  let lo = 1
  let hi = Math.max(1, Math.ceil(count / 2))
  while (expectedFpr(count, hi) > fpr) hi *= 2
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2)
    if (expectedFpr(count, mid) <= fpr) hi = mid
    else lo = mid + 1
  }
  return lo
}

/** The blocks of a filter for `n` keys at `fpr`: blocksFor, rounded up to whole segments. */
export function filterBlocks (n: number, fpr: number): number {
  return Math.ceil(blocksFor(n, fpr) / BLOOM_SEGMENTS) * BLOOM_SEGMENTS
}

/** The block a key's bits are in, counted within its segment (blocks of the filter / BLOOM_SEGMENTS per segment). */
function blockInSegment (h1: number, perSegment: number): number {
  return ((h1 & IN_SEGMENT) * perSegment) / TWO_25 | 0 // exact: < 2^25 × 2^22 before the division
}

export class BloomFilter {
  readonly blocks: number
  /** blocks / BLOOM_SEGMENTS */
  readonly perSegment: number
  readonly words: Uint32Array
  readonly buffer: SharedArrayBuffer | ArrayBuffer

  constructor (buffer: SharedArrayBuffer | ArrayBuffer) {
    const segmentBytes = BLOCK_BYTES * BLOOM_SEGMENTS
    if (buffer.byteLength === 0 || buffer.byteLength % segmentBytes !== 0) {
      throw new RangeError(`bloom buffer must be a positive multiple of ${segmentBytes} bytes (${BLOOM_SEGMENTS} segments of ${BLOCK_BYTES}-byte blocks), got ${buffer.byteLength}`)
    }
    this.buffer = buffer
    this.words = new Uint32Array(buffer)
    this.blocks = buffer.byteLength / BLOCK_BYTES
    this.perSegment = this.blocks / BLOOM_SEGMENTS
  }

  /** An empty filter sized for `n` keys at false-positive rate `fpr`, over a SharedArrayBuffer. */
  static forCapacity (n: number, fpr: number): BloomFilter {
    return new BloomFilter(new SharedArrayBuffer(filterBlocks(n, fpr) * BLOCK_BYTES))
  }

  /** The bytes of segment `g` (a view, not a copy). */
  segment (g: number): Uint8Array {
    const bytes = this.perSegment * BLOCK_BYTES
    return new Uint8Array(this.buffer, g * bytes, bytes)
  }

  /** A filter over a copy of serialised bits (little-endian words, as `bytes()` gives them). */
  static fromBytes (bytes: Uint8Array): BloomFilter {
    const sab = new SharedArrayBuffer(bytes.byteLength)
    new Uint8Array(sab).set(bytes)
    return new BloomFilter(sab)
  }

  bytes (): Uint8Array {
    return new Uint8Array(this.buffer)
  }

  add (h1: number, h2: number): void {
    const w = this.words
    const o = (segmentOf(h1) * this.perSegment + blockInSegment(h1, this.perSegment)) << 3
    w[o] |= 1 << (Math.imul(h2, S0) >>> 27)
    w[o + 1] |= 1 << (Math.imul(h2, S1) >>> 27)
    w[o + 2] |= 1 << (Math.imul(h2, S2) >>> 27)
    w[o + 3] |= 1 << (Math.imul(h2, S3) >>> 27)
    w[o + 4] |= 1 << (Math.imul(h2, S4) >>> 27)
    w[o + 5] |= 1 << (Math.imul(h2, S5) >>> 27)
    w[o + 6] |= 1 << (Math.imul(h2, S6) >>> 27)
    w[o + 7] |= 1 << (Math.imul(h2, S7) >>> 27)
  }

  /** false: certainly absent. true: maybe present (ask the exact store). */
  has (h1: number, h2: number): boolean {
    const w = this.words
    const o = (segmentOf(h1) * this.perSegment + blockInSegment(h1, this.perSegment)) << 3
    return (w[o]! & (1 << (Math.imul(h2, S0) >>> 27))) !== 0 &&
      (w[o + 1]! & (1 << (Math.imul(h2, S1) >>> 27))) !== 0 &&
      (w[o + 2]! & (1 << (Math.imul(h2, S2) >>> 27))) !== 0 &&
      (w[o + 3]! & (1 << (Math.imul(h2, S3) >>> 27))) !== 0 &&
      (w[o + 4]! & (1 << (Math.imul(h2, S4) >>> 27))) !== 0 &&
      (w[o + 5]! & (1 << (Math.imul(h2, S5) >>> 27))) !== 0 &&
      (w[o + 6]! & (1 << (Math.imul(h2, S6) >>> 27))) !== 0 &&
      (w[o + 7]! & (1 << (Math.imul(h2, S7) >>> 27))) !== 0
  }
}

/**
 * The 8 bits BloomFilter#add sets for (h1, h2) in a filter of `blocks` blocks, as Redis SETBIT offsets into the
 * serialised segment segmentOf(h1) (segment() layout: little-endian words; SETBIT counts from the most significant bit
 * of a byte). This is how Redis's copy of a filter version follows changes without being downloaded.
 */
export function redisBitOffsets (blocks: number, h1: number, h2: number, out: number[]): void {
  const o = blockInSegment(h1, blocks / BLOOM_SEGMENTS) << 3
  for (let i = 0; i < 8; i++) {
    const bit = Math.imul(h2, SALTS[i]!) >>> 27
    const byte = (o + i) * 4 + (bit >> 3)
    out[i] = byte * 8 + (7 - (bit & 7))
  }
}
