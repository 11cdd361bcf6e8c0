// The local exact replica of one filter version (issue 12): every key's exact consent state in SharedArrayBuffers,
// so that serving threads and scrub workers answer checks from the very same memory without I/O or copies.
//
// Layout: one open-addressing table (linear probing, no deletes: a key, once in, stays until the version is
// dropped) of 5 uint32 words = 20 bytes per slot, over `ceil(capacity / maxLoad)` slots:
//
//   w0  kind (3 bits, 29-31) | brand code (29 bits)       kind 0: empty; 1…6: a packed key, its (type, recipientType)
//       kind 7 | 29 bits of the key's second hash word     kind 7: a key kept as text in the arena
//   w1  packed: the phone's digits as a number, low 32 bits · text: the arena offset of the key text
//   w2  phone bits 32-39 (0-7) | status (8: 1 = RET) | source index (9-13) | seq bits 32-47 (14-29)
//   w3  consentDate (epoch seconds)
//   w4  seq bits 0-31
//
// A packed key is (brand < 2^29, type, recipientType, phone '+' and ≤ 12 digits): all of it is in w0, w1 and
// w2's low byte, and compared whole — exact, no fingerprint. Every other key (e-mails, longer phones, larger brand
// codes) is kept as its canonical key text (key.ts: "654321EB" + recipient) in the arena, a byte area beside the
// table: a 2-byte header (length in chars; bit 15: two bytes per char) and the chars. Its slot carries 29 bits of
// hash only to skip most other keys without reading the arena; a hit compares the whole text.
//
// Hashing: a text key by key.ts's hashKey (h1 picks the home slot, h2 gives the 29-bit tag); a packed key by
// murmur3's mix over its three packed words, which are parsed anyway (see home(): hashKey measured ≈ 10× slower).
//
// Threads: ONE writer (the thread that created the table) and any number of readers (attach() in other threads).
// Until the writer first calls shared(), no other thread can hold the buffers: the build writes with plain stores.
// From then on (the buffers reach readers by postMessage, which orders the build's writes before them):
// - Key words (w0, w1, w2's low byte) and arena bytes never change once a slot is published. A new key's words,
//   state and arena text are written first, then w0 is stored with Atomics.store: a reader sees w0 either 0 (empty:
//   a miss, as it was before the insert) or, once its Atomics.load of w0 returns the key's word, everything
//   written before it. Probes read w0 plainly and load it atomically only on a match (findPacked).
// - A state (w2's high bits, w3, w4) changes under a seqlock striped over 64 slots (a lock word per slot would cost
//   4 more bytes per slot): the writer bumps the stripe's counter to odd, stores the three words, bumps it to even;
//   a reader loads the counter, the three words and the counter again, and retries when it was odd or moved. Every
//   access there is an Atomics operation (sequentially consistent), so the argument is the plain seqlock one: a
//   reader that saw any word of an update saw the counter after that update's first bump. The price: an
//   Atomics.load measured ≈ 5.5 ns here against ≈ 0.5 ns for a plain load, five of them per hit.

import { comboAt, brandEnd, COMBO_CODE, comboOf, decodeStateInto, newReplicaState, packPhone, parseBrand, BRAND_INVALID, type ReplicaState } from './replica-codec.js'
import { hashKey, keyHash } from './key.js'
import type { ConsentType, RecipientType } from '../domain/vocabulary.js'

export { newReplicaState, decodeStateInto, type ReplicaState } from './replica-codec.js'

const SLOT_WORDS = 5
const SLOT_BYTES = SLOT_WORDS * 4
const KIND_SHIFT = 29
const KIND_TEXT = 7
const LOW29 = 0x1fffffff
const PACKED_BRAND_LIMIT = 2 ** 29
const PHONE_HI_MASK = 0xff
const STATUS_RET = 1 << 8
const SOURCE_SHIFT = 9
const SOURCE_MASK = 31
const SEQ_HI_SHIFT = 14
const SEQ_HI_MASK = 0xffff
const STRIPE_SHIFT = 6 // 64 slots per seqlock counter
const TWO_32 = 4294967296
const MAX_SEQ = 2 ** 48
const MAX_SOURCE = 32

// The arena: a record is a 2-byte little-endian header and the key text's chars (one byte each, or two when any
// char is above 0xff).
const ARENA_HEADER = 2
const ARENA_WIDE = 0x8000
/** Longest recipient accepted (e-mails are ≤ 265 chars); with the brand and code it fits the 15-bit header. */
export const MAX_RECIPIENT_CHARS = 1024

// meta words (Int32Array over its own SharedArrayBuffer): what every thread needs besides slots and arena.
const META_KEYS = 0
const META_ARENA_USED = 1
const META_CAPACITY = 2
const META_WORDS = 4

/**
 * Default highest load factor. 20 B/slot ÷ 0.8 = 25 B per key at full capacity, so a caller can give 25 % headroom
 * and stay under 32 B per consent. bench/replica-memory.js at 1M keys: 0.7 / 0.8 / 0.9 gave 2.4 / 2.7 / 2.7 M hits/s
 * and 2.7 / 3.3 / 2.5 M misses/s (linear probing: misses walk longer as the table fills).
 */
export const DEFAULT_MAX_LOAD = 0.8

export interface ReplicaOptions {
  /** Keys the table must hold (the version's key count with headroom for the changes until the next rebuild). */
  capacity: number
  /** Bytes for keys kept as text: 2 + the key text's length each (an e-mail under a 6-digit brand: 10 + its length). 0: phone keys only. */
  emailBytes: number
  /** Highest load factor of the slots, in (0, 0.95]; DEFAULT_MAX_LOAD if absent. */
  maxLoad?: number
}

/** What a worker needs to attach to a table: post it as is (SharedArrayBuffers are shared, not copied). */
export interface ReplicaShared {
  readonly slots: SharedArrayBuffer
  readonly locks: SharedArrayBuffer
  readonly arena: SharedArrayBuffer
  readonly meta: SharedArrayBuffer
}

export type ReplicaErrorCode = 'REPLICA_FULL' | 'REPLICA_ARENA_FULL'

/**
 * The table cannot take one more key (REPLICA_FULL) or one more key text (REPLICA_ARENA_FULL). Nothing was changed:
 * the table still answers exactly what it held; the caller serves this version the Redis way or rebuilds bigger.
 */
export class ReplicaFullError extends RangeError {
  readonly code: ReplicaErrorCode

  constructor (code: ReplicaErrorCode, message: string) {
    super(message)
    this.name = 'ReplicaFullError'
    this.code = code
  }
}

/** w2's state bits of a state: status, source index, seq bits 32-47. */
function stateBitsOf (st: ReplicaState): number {
  return (st.status === 'RET' ? STATUS_RET : 0) | (st.sourceIndex << SOURCE_SHIFT) | (Math.floor(st.seq / TWO_32) << SEQ_HI_SHIFT)
}

/** Keys parsed at a time by upsertEncodedMany. */
const BULK = 1024

class BulkChunk {
  readonly home = new Int32Array(BULK)
  /** 0: a text key (applied through upsertEncoded) */
  readonly w0 = new Uint32Array(BULK)
  readonly lo = new Uint32Array(BULK)
  readonly hi = new Uint32Array(BULK)
  readonly bits = new Uint32Array(BULK)
  readonly date = new Uint32Array(BULK)
  readonly seq = new Float64Array(BULK)
}

// murmur3's 32-bit body and finaliser over the three words of a packed key: its home slot.
function packedHash (w0: number, lo: number, hi: number): number {
  let h = mix(mix(mix(0x9747b28c, w0), lo), hi) ^ 12
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

function mix (h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51)
  k = (k << 15) | (k >>> 17)
  h ^= Math.imul(k, 0x1b873593)
  h = (h << 13) | (h >>> 19)
  return (Math.imul(h, 5) + 0xe6546b64) | 0
}

export class ReplicaTable {
  readonly slotCount: number
  readonly capacity: number
  /** false in a table from attach(): only the thread that created the table writes. */
  readonly writable: boolean
  private readonly slots: Uint32Array
  private readonly locks: Int32Array
  private readonly arena: Uint8Array
  private readonly meta: Int32Array
  private readonly buffers: ReplicaShared
  // The writer's own copies of the counters (the meta words are what other threads read).
  private count: number
  private arenaUsed: number
  private lastBrand = ''
  private lastBrandValue = BRAND_INVALID
  // The slot words of the key last located (locate()): plain fields, no object per call.
  private qWord0 = 0
  private qLo = 0
  private qHi = 0
  private readonly scratch: ReplicaState = newReplicaState()
  /** Whether shared() was called: until then no other thread can hold the buffers, and writes need no Atomics. */
  private published: boolean
  // upsertEncodedMany's parsed chunk (packed keys: home slot, slot words, state), made on first use.
  private bulk: BulkChunk | null = null

  private constructor (shared: ReplicaShared, writable: boolean) {
    this.buffers = shared
    this.slots = new Uint32Array(shared.slots)
    this.locks = new Int32Array(shared.locks)
    this.arena = new Uint8Array(shared.arena)
    this.meta = new Int32Array(shared.meta)
    this.slotCount = this.slots.length / SLOT_WORDS
    this.capacity = Atomics.load(this.meta, META_CAPACITY)
    this.writable = writable
    this.published = !writable
    this.count = Atomics.load(this.meta, META_KEYS)
    this.arenaUsed = Atomics.load(this.meta, META_ARENA_USED)
  }

  /** An empty table for `capacity` keys, writable by the calling thread. */
  static create (opts: ReplicaOptions): ReplicaTable {
    const { capacity, emailBytes } = opts
    const maxLoad = opts.maxLoad ?? DEFAULT_MAX_LOAD
    if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > 2 ** 30) {
      throw new RangeError(`replica capacity must be an integer in 1 … 2^30 keys, got ${capacity}`)
    }
    if (!Number.isSafeInteger(emailBytes) || emailBytes < 0 || emailBytes > TWO_32 - 1) {
      throw new RangeError(`replica emailBytes must be an integer in 0 … 2^32 - 1, got ${emailBytes}`)
    }
    if (!(maxLoad > 0 && maxLoad <= 0.95)) throw new RangeError(`replica maxLoad must be in (0, 0.95], got ${maxLoad}`)
    // At least one slot stays empty, so that every probe ends.
    const slotCount = Math.max(capacity + 1, Math.ceil(capacity / maxLoad))
    const meta = new SharedArrayBuffer(META_WORDS * 4)
    new Int32Array(meta)[META_CAPACITY] = capacity
    return new ReplicaTable({
      slots: new SharedArrayBuffer(slotCount * SLOT_BYTES),
      locks: new SharedArrayBuffer(((slotCount >>> STRIPE_SHIFT) + 1) * 4),
      arena: new SharedArrayBuffer(emailBytes),
      meta
    }, true)
  }

  /** A reader over a table another thread created (its shared()). Lookups only. */
  static attach (shared: ReplicaShared): ReplicaTable {
    const ok = shared.slots instanceof SharedArrayBuffer && shared.slots.byteLength > 0 && shared.slots.byteLength % SLOT_BYTES === 0 &&
      shared.locks instanceof SharedArrayBuffer && shared.locks.byteLength === ((shared.slots.byteLength / SLOT_BYTES) >>> STRIPE_SHIFT) * 4 + 4 &&
      shared.arena instanceof SharedArrayBuffer && shared.meta instanceof SharedArrayBuffer && shared.meta.byteLength === META_WORDS * 4
    if (!ok) throw new TypeError('replica: attach() takes what ReplicaTable#shared() gave')
    return new ReplicaTable(shared, false)
  }

  /**
   * A table built from (key text, encoded state) pairs (Redis's HSCAN of a version's buckets, load's snapshot), as
   * upsertEncoded would apply them one by one (through upsertEncodedMany): a key given twice keeps its newest seq.
   */
  static fromEntries (entries: Iterable<readonly [string, string]>, opts: ReplicaOptions): ReplicaTable {
    const t = ReplicaTable.create(opts)
    const chunk: string[] = []
    for (const [key, state] of entries) {
      chunk.push(key, state)
      if (chunk.length === 2 * BULK) { t.upsertEncodedMany(chunk); chunk.length = 0 }
    }
    t.upsertEncodedMany(chunk)
    return t
  }

  /** The buffers to post to a worker, which calls ReplicaTable.attach on them. */
  shared (): ReplicaShared {
    if (!this.published) {
      // From now on other threads may read: counters through Atomics, every write through the seqlock/publish path.
      this.published = true
      Atomics.store(this.meta, META_KEYS, this.count)
      Atomics.store(this.meta, META_ARENA_USED, this.arenaUsed)
    }
    return this.buffers
  }

  /** Keys held now (any thread). */
  get keys (): number {
    return this.writable ? this.count : Atomics.load(this.meta, META_KEYS)
  }

  /** Bytes of shared memory the table holds (slots, locks, arena, meta), for metrics. */
  get bytes (): number {
    const b = this.buffers
    return b.slots.byteLength + b.locks.byteLength + b.arena.byteLength + b.meta.byteLength
  }

  /** Arena bytes used by keys kept as text (any thread). */
  get arenaBytesUsed (): number {
    return this.writable ? this.arenaUsed : Atomics.load(this.meta, META_ARENA_USED)
  }

  /**
   * Fills `out` with the state of the key and returns true, or returns false (no record; also for a type,
   * recipientType or brand code that no key can have). Allocates nothing: `out` is the caller's scratch object
   * (newReplicaState()), reused. A fresh object per hit measured no faster or slower in bench/replica-memory.js's
   * tight loop (2.74 vs 2.71 M hits/s at 1M keys), but it is garbage per recipient once the loop does real work.
   * There is no batch form: prefetching the home slots of 32 keys before looking them up measured no gain (1.76 vs
   * 2.02 M hits/s at 3M keys; parsing each key twice costs what the overlapped cache misses save).
   */
  lookup (brandCode: string, type: ConsentType, recipientType: RecipientType, recipient: string, out: ReplicaState): boolean {
    const combo = comboOf(type, recipientType)
    if (combo === 0) return false
    const b = this.brandValue(brandCode)
    if (b === BRAND_INVALID) return false
    const slot = this.locate(b, combo, brandCode, COMBO_CODE[combo]!, recipient, recipient, 0)
    if (slot < 0) return false
    this.readState(slot, out)
    return true
  }

  /** lookup by the key's canonical text (key.ts keyText: "654321MB+905321234567"). */
  lookupText (keyText: string, out: ReplicaState): boolean {
    const end = brandEnd(keyText)
    const combo = comboAt(keyText, end)
    if (combo === 0) return false
    const b = parseBrand(keyText, end)
    if (b === BRAND_INVALID) return false
    const slot = this.locate(b, combo, keyText, '', '', keyText, end + 2)
    if (slot < 0) return false
    this.readState(slot, out)
    return true
  }

  /**
   * Applies `state` to the key when its seq is newer than the stored one, or inserts the key (apply-states.lua's rule:
   * changes may arrive twice or out of order). Returns whether it applied. Throws a RangeError for a key or state no
   * consent can have (nothing is changed), and ReplicaFullError when a new key does not fit.
   */
  upsert (brandCode: string, type: ConsentType, recipientType: RecipientType, recipient: string, state: ReplicaState): boolean {
    this.checkWrite(state)
    const combo = comboOf(type, recipientType)
    if (combo === 0) throw new RangeError(`replica: no such type/recipientType ${String(type)}/${String(recipientType)}`)
    if (recipient.length === 0 || recipient.length > MAX_RECIPIENT_CHARS) throw new RangeError(`replica: recipient must have 1 … ${MAX_RECIPIENT_CHARS} chars`)
    const b = this.brandValue(brandCode)
    if (b === BRAND_INVALID) throw new RangeError(`replica: brand code must be a canonical positive integer of ≤ 15 digits, got ${JSON.stringify(brandCode)}`)
    const code = COMBO_CODE[combo]!
    return this.put(this.locate(b, combo, brandCode, code, recipient, recipient, 0), brandCode, code, recipient, stateBitsOf(state), state.consentDate, state.seq)
  }

  /** upsert by key text and encoded state (state.ts), as Redis holds them; nothing is allocated per entry. */
  upsertEncoded (keyText: string, encodedState: string): boolean {
    const st = this.scratch
    if (!decodeStateInto(encodedState, st)) throw new RangeError(`replica: not an encoded state: ${JSON.stringify(encodedState)}`)
    this.checkWrite(st)
    const end = brandEnd(keyText)
    const combo = comboAt(keyText, end)
    const recLength = keyText.length - end - 2
    if (combo === 0 || recLength < 1 || recLength > MAX_RECIPIENT_CHARS) throw new RangeError('replica: not a key text (brand code, two code letters, recipient)')
    const b = parseBrand(keyText, end)
    if (b === BRAND_INVALID) throw new RangeError('replica: the key text\'s brand code is not a canonical positive integer of ≤ 15 digits')
    return this.put(this.locate(b, combo, keyText, '', '', keyText, end + 2), keyText, '', '', stateBitsOf(st), st.consentDate, st.seq)
  }

  /**
   * upsertEncoded over [keyText, encodedState, keyText, encodedState, …] (the shape of an HSCAN or HGETALL reply);
   * returns how many applied. The bulk build path: it parses a chunk of keys first and then probes for all of them
   * in a tight loop, so the CPU overlaps their cache misses (bench/replica-memory.js at 3M keys, string making
   * taken out: 0.49 µs a key against 0.89 for upsertEncoded per key). A bad entry
   * throws after the entries before it were applied.
   */
  upsertEncodedMany (pairs: readonly string[]): number {
    if ((pairs.length & 1) !== 0) throw new RangeError('replica: upsertEncodedMany takes [keyText, encodedState, …] pairs')
    const bk = this.bulk ??= new BulkChunk()
    const st = this.scratch
    let applied = 0
    for (let from = 0; from < pairs.length; from += 2 * BULK) {
      const to = Math.min(pairs.length, from + 2 * BULK)
      let n = 0
      let bad: unknown = null
      for (let i = from; i < to; i += 2, n++) {
        const keyText = pairs[i]!
        if (!decodeStateInto(pairs[i + 1]!, st)) { bad = new RangeError(`replica: not an encoded state: ${JSON.stringify(pairs[i + 1])}`); break }
        try {
          this.checkWrite(st)
        } catch (err) {
          bad = err
          break
        }
        const end = brandEnd(keyText)
        const combo = comboAt(keyText, end)
        const b = parseBrand(keyText, end)
        if (combo === 0 || b === BRAND_INVALID || keyText.length - end - 2 < 1 || keyText.length - end - 2 > MAX_RECIPIENT_CHARS) {
          bk.w0[n] = 0 // upsertEncoded says what is wrong with it
          continue
        }
        bk.home[n] = this.home(b, combo, keyText, '', '', keyText, end + 2)
        bk.w0[n] = this.qWord0 >>> KIND_SHIFT === KIND_TEXT ? 0 : this.qWord0
        bk.lo[n] = this.qLo
        bk.hi[n] = this.qHi
        bk.bits[n] = stateBitsOf(st)
        bk.date[n] = st.consentDate
        bk.seq[n] = st.seq
      }
      for (let k = 0; k < n; k++) {
        const w0 = bk.w0[k]!
        if (w0 === 0) {
          if (this.upsertEncoded(pairs[from + 2 * k]!, pairs[from + 2 * k + 1]!)) applied++
          continue
        }
        const lo = bk.lo[k]!
        const hi = bk.hi[k]!
        this.qWord0 = w0
        this.qLo = lo
        this.qHi = hi
        if (this.put(this.findPacked(bk.home[k]!, w0, lo, hi), '', '', '', bk.bits[k]!, bk.date[k]!, bk.seq[k]!)) applied++
      }
      if (bad !== null) throw bad
    }
    return applied
  }

  // --- internals -------------------------------------------------------------------------------------------------

  private checkWrite (s: ReplicaState): void {
    if (!this.writable) throw new Error('replica: this thread attached the table; only the thread that created it writes')
    if (s.status !== 'ONAY' && s.status !== 'RET') throw new RangeError(`replica: status must be ONAY or RET, got ${String(s.status)}`)
    if (!Number.isInteger(s.sourceIndex) || s.sourceIndex < 0 || s.sourceIndex >= MAX_SOURCE) throw new RangeError(`replica: sourceIndex must be an integer in 0 … 31, got ${s.sourceIndex}`)
    if (!Number.isInteger(s.consentDate) || s.consentDate < 0 || s.consentDate >= TWO_32) throw new RangeError(`replica: consentDate must be epoch seconds in 0 … 2^32 - 1, got ${s.consentDate}`)
    if (!Number.isInteger(s.seq) || s.seq < 0 || s.seq >= MAX_SEQ) throw new RangeError(`replica: seq must be an integer in 0 … 2^48 - 1, got ${s.seq}`)
  }

  /** parseBrand of a whole brand code, remembering the last one: a batch checks one brand (saves ~12 ns a lookup). */
  private brandValue (brandCode: string): number {
    if (brandCode === this.lastBrand) return this.lastBrandValue
    const b = parseBrand(brandCode, brandCode.length)
    this.lastBrand = brandCode
    this.lastBrandValue = b
    return b
  }

  /**
   * The slot of the key (brand value `b`, `combo`, recipient rec[recStart…), whose canonical text is a + b2 + c), or
   * -1 - (the empty slot where it would go). Leaves the key's slot words in qWord0/qLo/qHi for put().
   */
  private locate (b: number, combo: number, a: string, b2: string, c: string, rec: string, recStart: number): number {
    const home = this.home(b, combo, a, b2, c, rec, recStart)
    const w0 = this.qWord0
    return w0 >>> KIND_SHIFT === KIND_TEXT ? this.findText(home, w0, a, b2, c) : this.findPacked(home, w0, this.qLo, this.qHi)
  }

  /**
   * The home slot of the key, its slot words left in qWord0/qLo/qHi. A packed key is hashed from its packed words
   * (packedHash) rather than by key.ts's hashKey over its 21 chars: measured 55 ns for hashKey against ≈ 5 ns, a
   * quarter of a cached lookup. Text keys use hashKey.
   */
  private home (b: number, combo: number, a: string, b2: string, c: string, rec: string, recStart: number): number {
    const phone = b < PACKED_BRAND_LIMIT ? packPhone(rec, recStart, rec.length) : -1
    let h1: number
    if (phone >= 0) {
      const w0 = ((combo << KIND_SHIFT) | b) >>> 0
      const lo = phone >>> 0
      const hi = (phone - lo) / TWO_32
      this.qWord0 = w0
      this.qLo = lo
      this.qHi = hi
      h1 = packedHash(w0, lo, hi)
    } else {
      hashKey(a, b2, c)
      this.qWord0 = ((KIND_TEXT << KIND_SHIFT) | (keyHash[1]! & LOW29)) >>> 0
      h1 = keyHash[0]!
    }
    return Math.floor((h1 * this.slotCount) / TWO_32) // multiply-shift: the home slot without a modulo
  }

  // Probing reads w0 plainly; only a candidate (w0 equal) is loaded again with Atomics.load, which orders the reads
  // of its other words and arena text after the writer's publishing store (an Atomics.load costs ≈ 5.5 ns here,
  // a plain load ≈ 0.5). An empty w0 ends the probe: the key is not there, or not yet. A plain read that is stale
  // can only show 0 for a slot being filled (slots are never emptied or reused), i.e. the answer before the insert.

  private findPacked (home: number, w0: number, lo: number, hi: number): number {
    const s = this.slots
    const n = this.slotCount
    let i = home
    for (;;) {
      const o = i * SLOT_WORDS
      const v = s[o]!
      if (v === 0) return -1 - i
      if (v === w0 && Atomics.load(s, o) === w0 && s[o + 1] === lo && (s[o + 2]! & PHONE_HI_MASK) === hi) return i
      if (++i === n) i = 0
    }
  }

  private findText (home: number, w0: number, a: string, b: string, c: string): number {
    const s = this.slots
    const n = this.slotCount
    let i = home
    for (;;) {
      const o = i * SLOT_WORDS
      const v = s[o]!
      if (v === 0) return -1 - i
      if (v === w0 && Atomics.load(s, o) === w0 && this.textEquals(s[o + 1]!, a, b, c)) return i
      if (++i === n) i = 0
    }
  }

  /** Whether the arena record at `at` holds the text a + b + c. */
  private textEquals (at: number, a: string, b: string, c: string): boolean {
    const ar = this.arena
    const header = ar[at]! | (ar[at + 1]! << 8)
    if ((header & ~ARENA_WIDE) !== a.length + b.length + c.length) return false
    const wide = (header & ARENA_WIDE) !== 0
    let p = at + ARENA_HEADER
    for (let part = 0, s = a; part < 3; part++, s = part === 1 ? b : c) {
      for (let i = 0; i < s.length; i++) {
        const ch = wide ? ar[p]! | (ar[p + 1]! << 8) : ar[p]!
        if (ch !== s.charCodeAt(i)) return false
        p += wide ? 2 : 1
      }
    }
    return true
  }

  /** The state of `slot` into `out`, consistent (the stripe's seqlock). */
  private readState (slot: number, out: ReplicaState): void {
    const s = this.slots
    const locks = this.locks
    const o = slot * SLOT_WORDS
    const lock = slot >>> STRIPE_SHIFT
    for (;;) {
      const before = Atomics.load(locks, lock)
      if ((before & 1) !== 0) continue // the writer is in the middle of this stripe: a few stores, then even again
      const w2 = Atomics.load(s, o + 2)
      const date = Atomics.load(s, o + 3)
      const seqLo = Atomics.load(s, o + 4)
      if (Atomics.load(locks, lock) !== before) continue
      out.status = (w2 & STATUS_RET) !== 0 ? 'RET' : 'ONAY'
      out.sourceIndex = (w2 >>> SOURCE_SHIFT) & SOURCE_MASK
      out.consentDate = date
      out.seq = ((w2 >>> SEQ_HI_SHIFT) & SEQ_HI_MASK) * TWO_32 + seqLo
      return
    }
  }

  /**
   * Writes a state (stateBits: w2's state bits) for the key locate() answered `f` for (its text is a + b + c, its
   * slot words in qWord0/qLo/qHi), under the seq rule. Until shared() is first called no other thread can read the
   * table, so the stores are plain; after it, the seqlock and the publishing store (see the top of this file).
   */
  private put (f: number, a: string, b: string, c: string, stateBits: number, date: number, seq: number): boolean {
    const seqLo = seq % TWO_32
    const s = this.slots
    if (f >= 0) {
      const o = f * SLOT_WORDS
      // The writer reads its own words: no other thread writes them.
      const stored = ((s[o + 2]! >>> SEQ_HI_SHIFT) & SEQ_HI_MASK) * TWO_32 + s[o + 4]!
      if (stored >= seq) return false
      const w2 = (s[o + 2]! & PHONE_HI_MASK) | stateBits
      if (!this.published) {
        s[o + 2] = w2
        s[o + 3] = date
        s[o + 4] = seqLo
        return true
      }
      const lock = f >>> STRIPE_SHIFT
      Atomics.add(this.locks, lock, 1) // odd: readers of this stripe retry
      Atomics.store(s, o + 2, w2)
      Atomics.store(s, o + 3, date)
      Atomics.store(s, o + 4, seqLo)
      Atomics.add(this.locks, lock, 1) // even again
      return true
    }
    if (this.count >= this.capacity) {
      throw new ReplicaFullError('REPLICA_FULL', `replica is full: it holds its capacity of ${this.capacity} keys`)
    }
    const slot = -1 - f
    const o = slot * SLOT_WORDS
    const w0 = this.qWord0
    if (w0 >>> KIND_SHIFT === KIND_TEXT) {
      s[o + 1] = this.writeText(a, b, c)
      s[o + 2] = stateBits
    } else {
      s[o + 1] = this.qLo
      s[o + 2] = this.qHi | stateBits
    }
    s[o + 3] = date
    s[o + 4] = seqLo
    this.count++
    if (!this.published) {
      s[o] = w0
      return true
    }
    Atomics.store(s, o, w0) // publish: after every other word of the slot and its arena text
    Atomics.store(this.meta, META_KEYS, this.count)
    return true
  }

  /** Appends the text a + b + c to the arena and returns its offset; throws ReplicaFullError when it does not fit. */
  private writeText (a: string, b: string, c: string): number {
    const len = a.length + b.length + c.length
    let wide = false
    for (let part = 0, s = a; part < 3 && !wide; part++, s = part === 1 ? b : c) {
      for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0xff) { wide = true; break }
    }
    const need = ARENA_HEADER + (wide ? 2 * len : len)
    const at = this.arenaUsed
    const ar = this.arena
    if (at + need > ar.length) {
      throw new ReplicaFullError('REPLICA_ARENA_FULL', `replica's key text arena is full: ${at} of ${ar.length} bytes used, a key needs ${need}`)
    }
    ar[at] = len & 0xff
    ar[at + 1] = (len >>> 8) | (wide ? ARENA_WIDE >>> 8 : 0)
    let p = at + ARENA_HEADER
    for (let part = 0, s = a; part < 3; part++, s = part === 1 ? b : c) {
      for (let i = 0; i < s.length; i++) {
        const ch = s.charCodeAt(i)
        ar[p++] = ch & 0xff
        if (wide) ar[p++] = ch >>> 8
      }
    }
    this.arenaUsed = p
    if (this.published) Atomics.store(this.meta, META_ARENA_USED, p)
    else this.meta[META_ARENA_USED] = p
    return at
  }
}
