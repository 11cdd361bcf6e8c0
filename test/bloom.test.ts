import { describe, expect, it } from 'vitest'
import { BLOCK_BYTES, BLOOM_SEGMENTS, BloomFilter, blocksFor, expectedFpr, filterBlocks, redisBitOffsets, segmentOf } from '../src/filter/bloom.js'
import { bucketOf, hashKey, hashText, keyCode, keyHash, keyText } from '../src/filter/key.js'
import { mulberry32 } from '../src/util/random.js'

const CODES = [keyCode('MESAJ', 'BIREYSEL'), keyCode('ARAMA', 'BIREYSEL'), keyCode('MESAJ', 'TACIR'), keyCode('ARAMA', 'TACIR')]

/** `count` distinct key texts like "600001MB+905321234567", none of them in `exclude`. */
function keyTexts (count: number, seed: number, exclude: ReadonlySet<string> = new Set()): string[] {
  const rnd = mulberry32(seed)
  const out = new Set<string>()
  while (out.size < count) {
    const brand = String(600001 + ((rnd() * 20) | 0))
    const code = CODES[(rnd() * CODES.length) | 0]!
    const phone = '+905' + String(10 + ((rnd() * 50) | 0)) + String(1e7 + ((rnd() * 1e7) | 0)).slice(1)
    const k = brand + code + phone
    if (!exclude.has(k)) out.add(k)
  }
  return [...out]
}

function build (keys: readonly string[], fpr: number): BloomFilter {
  const f = BloomFilter.forCapacity(keys.length, fpr)
  for (const k of keys) {
    hashText(k)
    f.add(keyHash[0]!, keyHash[1]!)
  }
  return f
}

const has = (f: BloomFilter, k: string): boolean => {
  hashText(k)
  return f.has(keyHash[0]!, keyHash[1]!)
}

function measuredFpr (f: BloomFilter, absent: readonly string[]): number {
  let fp = 0
  for (const k of absent) if (has(f, k)) fp++
  return fp / absent.length
}

describe('split-block bloom filter', () => {
  // Absent-key counts are chosen so the expected number of false positives is ≥ 100: the 1.5× bound is then
  // several standard deviations away and the (seeded) test cannot flake.
  const cases = [
    { fpr: 0.001, n: 200_000, absent: 200_000 },
    { fpr: 0.01, n: 100_000, absent: 100_000 },
    { fpr: 0.0001, n: 100_000, absent: 1_000_000 }
  ]

  for (const { fpr, n, absent } of cases) {
    describe(`with ${n} keys at a target rate of ${fpr}`, () => {
      const present = keyTexts(n, 1000 + n)
      const f = build(present, fpr)
      const others = keyTexts(absent, 2000 + n, new Set(present))

      it('finds every key that was added (no false negatives)', () => {
        let missing = 0
        for (const k of present) if (!has(f, k)) missing++
        expect(missing).toBe(0)
      })

      it('answers "maybe" for absent keys at no more than 1.5 times the target rate', () => {
        const measured = measuredFpr(f, others)
        expect(measured).toBeGreaterThan(0)
        expect(measured).toBeLessThanOrEqual(1.5 * fpr)
      })

      it('is sized to the fewest whole segments of blocks that meet the target', () => {
        expect(f.blocks).toBe(filterBlocks(n, fpr))
        expect(f.blocks % BLOOM_SEGMENTS).toBe(0)
        expect(f.blocks - blocksFor(n, fpr)).toBeLessThan(BLOOM_SEGMENTS)
        expect(f.bytes().byteLength).toBe(f.blocks * BLOCK_BYTES)
        expect(f.buffer).toBeInstanceOf(SharedArrayBuffer)
      })
    })
  }

  it('answers exactly the same after a round trip through bytes()', () => {
    const present = keyTexts(20_000, 7)
    const f = build(present, 0.001)
    const g = BloomFilter.fromBytes(f.bytes())
    expect(g.blocks).toBe(f.blocks)
    let missing = 0
    for (const k of present) if (!has(g, k)) missing++
    expect(missing).toBe(0)
    let differ = 0
    let maybes = 0
    for (const k of keyTexts(50_000, 8)) {
      const a = has(f, k)
      if (a !== has(g, k)) differ++
      if (a) maybes++
    }
    expect(differ).toBe(0)
    expect(maybes).toBeGreaterThan(0)
  })

  it('copies the bytes in fromBytes, so later adds to the original do not show in the copy', () => {
    const f = BloomFilter.forCapacity(1000, 0.01)
    const g = BloomFilter.fromBytes(f.bytes())
    hashText('600001MB+905321234567')
    f.add(keyHash[0]!, keyHash[1]!)
    expect(f.has(keyHash[0]!, keyHash[1]!)).toBe(true)
    expect(g.has(keyHash[0]!, keyHash[1]!)).toBe(false)
  })

  it('answers "absent" for every key while empty', () => {
    const f = BloomFilter.forCapacity(10_000, 0.001)
    let maybes = 0
    for (const k of keyTexts(10_000, 9)) if (has(f, k)) maybes++
    expect(maybes).toBe(0)
  })

  it('refuses a buffer that is empty or not a whole number of segments of blocks', () => {
    expect(() => new BloomFilter(new ArrayBuffer(0))).toThrow(RangeError)
    expect(() => new BloomFilter(new ArrayBuffer(BLOCK_BYTES + 4))).toThrow(RangeError)
    expect(() => new BloomFilter(new ArrayBuffer(BLOCK_BYTES * (BLOOM_SEGMENTS + 1)))).toThrow(RangeError)
    expect(() => BloomFilter.fromBytes(new Uint8Array(31))).toThrow(RangeError)
    expect(new BloomFilter(new ArrayBuffer(BLOCK_BYTES * BLOOM_SEGMENTS * 2)).perSegment).toBe(2)
  })

  it('puts a key\'s bits in its segment (h1\'s top bits), as the Redis offsets of that segment say', () => {
    const f = BloomFilter.forCapacity(100_000, 0.001)
    const offsets = new Array<number>(8)
    for (const k of keyTexts(2_000, 13)) {
      hashText(k)
      const [h1, h2] = [keyHash[0]!, keyHash[1]!]
      const before = f.bytes().slice()
      f.add(h1, h2)
      const after = f.bytes()
      const seg = segmentOf(h1)
      const segBytes = f.perSegment * BLOCK_BYTES
      redisBitOffsets(f.blocks, h1, h2, offsets)
      for (let i = 0; i < after.length; i++) {
        if (after[i] === before[i]) continue
        expect(Math.floor(i / segBytes)).toBe(seg) // every byte the key changed is in its segment…
        for (let bit = 0; bit < 8; bit++) { // …and every bit it set is one of the offsets, counted in that segment
          if ((after[i]! & (1 << bit)) !== 0 && (before[i]! & (1 << bit)) === 0) expect(offsets).toContain((i - seg * segBytes) * 8 + (7 - bit))
        }
      }
    }
  })
})

describe('filter sizing', () => {
  it('needs at least as many blocks for more keys', () => {
    for (const fpr of [0.01, 0.001, 0.0001]) {
      let prev = 0
      for (const n of [0, 1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000]) {
        const b = blocksFor(n, fpr)
        expect(b).toBeGreaterThanOrEqual(prev)
        expect(b).toBeGreaterThanOrEqual(1)
        prev = b
      }
    }
  })

  it('needs at least as many blocks for a lower false-positive rate', () => {
    for (const n of [1, 1_000, 1_000_000]) {
      let prev = 0
      for (const fpr of [0.5, 0.1, 0.01, 0.001, 0.0001, 0.00001]) {
        const b = blocksFor(n, fpr)
        expect(b).toBeGreaterThanOrEqual(prev)
        prev = b
      }
    }
  })

  it('meets the requested rate and would miss it with one block fewer', () => {
    for (const n of [1, 1_000, 123_457, 1_000_000]) {
      for (const fpr of [0.01, 0.001, 0.0001]) {
        const b = blocksFor(n, fpr)
        expect(expectedFpr(n, b)).toBeLessThanOrEqual(fpr)
        if (b > 1) expect(expectedFpr(n, b - 1)).toBeGreaterThan(fpr)
      }
    }
  })

  it('uses about 1.8 bytes per key at 0.1% (the split-block overhead over a classic filter)', () => {
    const bytesPerKey = (blocksFor(1_000_000, 0.001) * BLOCK_BYTES) / 1_000_000
    expect(bytesPerKey).toBeGreaterThan(1.6)
    expect(bytesPerKey).toBeLessThan(2.2)
  })

  it('refuses a false-positive rate outside (0, 1)', () => {
    for (const bad of [0, 1, -0.1, 2, Number.NaN]) expect(() => blocksFor(1000, bad)).toThrow(RangeError)
  })
})

describe('key hashing', () => {
  const samples: Array<[string, string, string]> = [
    ['600001', 'MB', '+905321234567'],
    ['600001', 'MT', '+905321234567'],
    ['1', 'AB', '+4915112345678'],
    ['654321', 'EB', 'ali.veli@example.com'],
    ['999999999999999', 'ET', 'x@y.co'],
    ['600001', 'MB', '']
  ]

  it.each(samples)('gives hashKey(%j, %j, %j) the same hash as hashText of the joined text', (brand, code, recipient) => {
    hashKey(brand, code, recipient)
    const [k1, k2] = [keyHash[0], keyHash[1]]
    hashText(keyText(brand, code, recipient))
    expect([keyHash[0], keyHash[1]]).toEqual([k1, k2])
    hashText(brand + code + recipient)
    expect([keyHash[0], keyHash[1]]).toEqual([k1, k2])
  })

  it('gives the same hash for the same text every time', () => {
    hashText('600001MB+905321234567')
    const first = [keyHash[0], keyHash[1]]
    hashText('something else entirely')
    hashText('600001MB+905321234567')
    expect([keyHash[0], keyHash[1]]).toEqual(first)
  })

  it('separates keys that differ only in brand, channel, recipient type or one digit', () => {
    const texts = ['600001MB+905321234567', '600002MB+905321234567', '600001AB+905321234567',
      '600001MT+905321234567', '600001MB+905321234568', '60000MB1+905321234567']
    const seen = new Set<string>()
    for (const t of texts) {
      hashText(t)
      seen.add(keyHash[0] + ':' + keyHash[1])
    }
    expect(seen.size).toBe(texts.length)
  })

  it('takes a key\'s Redis bucket from the two hash words it is given, whatever was hashed since', () => {
    hashText('600001MB+905321234567')
    const [h1, h2] = [keyHash[0]!, keyHash[1]!]
    const bucket = bucketOf(h1, h2, 1024)
    hashText('something else entirely')
    expect(bucketOf(h1, h2, 1024)).toBe(bucket)
    // The formula of the stored layout: the group (bucket mod 128) is the key's bloom segment, h1's top 7 bits; within
    // it, h2 xor h1 rotated by 16 bits modulo the buckets per group.
    expect(bucket % BLOOM_SEGMENTS).toBe(segmentOf(h1))
    expect(bucket).toBe((h1 >>> 25) + 128 * ((((h2 ^ ((h1 << 16) | (h1 >>> 16))) >>> 0) % 8)))
  })

  it('spreads keys evenly over the Redis buckets', () => {
    const counts = new Uint32Array(1024)
    for (const k of keyTexts(1_024_000, 12)) {
      hashText(k)
      counts[bucketOf(keyHash[0]!, keyHash[1]!, counts.length)]++
    }
    // 1000 expected per bucket; ±20% is > 6 standard deviations.
    for (const c of counts) {
      expect(c).toBeGreaterThan(800)
      expect(c).toBeLessThan(1200)
    }
  })

  it('spreads similar keys evenly over the 32-bit range (no obvious bias in h1 or h2)', () => {
    const keys = keyTexts(64_000, 11)
    const buckets1 = new Uint32Array(64)
    const buckets2 = new Uint32Array(64)
    for (const k of keys) {
      hashText(k)
      buckets1[keyHash[0]! >>> 26]++
      buckets2[keyHash[1]! >>> 26]++
    }
    // 1000 expected per bucket; ±20% is > 6 standard deviations.
    for (const c of [...buckets1, ...buckets2]) {
      expect(c).toBeGreaterThan(800)
      expect(c).toBeLessThan(1200)
    }
  })
})
