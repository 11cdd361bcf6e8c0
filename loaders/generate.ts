// Synthetic İYS consent rows for tests and benchmarks: realistic shapes, deterministic for a seed, fast enough for
// tens of millions of rows (CSV in the header order İYS exports use).
//
// Uniqueness is by construction, not by remembering what was written: fresh keys are drawn by walking a keyed
// permutation (a small Feistel network) over the space brands × people × channels, so no two fresh rows share a
// (brand, type, recipientType, recipient) key and no 10M-entry set is needed. About 3% of rows then repeat a recent
// key with the other status and a consentDate outside every date that key already has, so "latest consentDate wins"
// and out-of-order files are exercised, but two rows of one key never carry the same consentDate.

import { csvField } from '../src/formats/csv.js'
import { once } from 'node:events'
import { IYS_EPOCH_S, TR_OFFSET_S, formatIysDate } from '../src/domain/time.js'
import { mulberry32 } from '../src/util/random.js'

export interface GenerateOptions {
  /** Data rows to write (the header is extra). */
  rows: number
  /** Number of brands; brand codes are 600001, 600002, … */
  brands: number
  /** Share of rows with status RET, 0…1. */
  retShare: number
  /** PRNG seed: the same options give the same bytes. */
  seed: number
  /** Service provider code written in every row (default 700001). */
  iysCode?: number
  /**
   * Latest consentDate, epoch seconds (default: today's midnight, Turkey time). Part of the output, so pass it
   * explicitly when the bytes must not change from one day to the next.
   */
  now?: number
}

export const CSV_HEADER = 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate'
export const FIRST_BRAND_CODE = 600001
export const DEFAULT_IYS_CODE = 700001

/**
 * Renders a canonical Turkish mobile number `+905XXXXXXXXX` the way people type it: 05321234567, 5321234567,
 * +905321234567, +90 532 123 45 67, 0090 532 1234567, 90-532-123-4567 or (0532) 123 45 67.
 */
export function messyPhone (canonical: string, rnd: () => number): string {
  const n = canonical.slice(3) // the 10-digit national significant number
  const op = n.slice(0, 3)
  switch ((rnd() * 7) | 0) {
    case 0: return '0' + n
    case 1: return n
    case 2: return canonical
    case 3: return '+90 ' + op + ' ' + n.slice(3, 6) + ' ' + n.slice(6, 8) + ' ' + n.slice(8)
    case 4: return '0090 ' + op + ' ' + n.slice(3)
    case 5: return '90-' + op + '-' + n.slice(3, 6) + '-' + n.slice(6)
    default: return '(0' + op + ') ' + n.slice(3, 6) + ' ' + n.slice(6, 8) + ' ' + n.slice(8)
  }
}


// ---------------------------------------------------------------------------------------------------------------
// Keyed permutation of [0, size): a 4-round balanced Feistel network over the smallest even power of two that
// covers the domain, with cycle walking (fewer than 4 steps on average). Halves stay ≤ 26 bits so everything is
// exact in doubles and int32 arithmetic.

function mix32 (x: number): number {
  x ^= x >>> 16
  x = Math.imul(x, 0x7feb352d)
  x ^= x >>> 15
  x = Math.imul(x, 0x846ca68b)
  return (x ^ (x >>> 16)) >>> 0
}

class Permutation {
  private readonly half: number
  private readonly mask: number
  private readonly keys: Uint32Array

  constructor (readonly size: number, rnd: () => number) {
    let bits = 2
    while (2 ** bits < size) bits += 2
    if (bits > 52) throw new RangeError('permutation domain too large')
    this.half = 2 ** (bits / 2)
    this.mask = this.half - 1
    this.keys = new Uint32Array(4)
    for (let i = 0; i < 4; i++) this.keys[i] = (rnd() * 4294967296) >>> 0
  }

  apply (x: number): number {
    const half = this.half; const mask = this.mask; const k = this.keys
    do {
      let l = Math.floor(x / half)
      let r = x - l * half
      for (let i = 0; i < 4; i++) {
        const t = l ^ (mix32(r ^ k[i]!) & mask)
        l = r
        r = t
      }
      x = l * half + r
    } while (x >= this.size)
    return x
  }
}

// ---------------------------------------------------------------------------------------------------------------
// People. Person p has one mobile number (a permutation of p over the 6×10⁸ numbers 500…559 XXX XX XX) and one
// e-mail address (first.last<n>@domain, injective in p because the separator is never a letter and n = p / names²).

const OPERATOR_PREFIXES = 60 // 500…559
const PHONE_SPACE = OPERATOR_PREFIXES * 1e7

const FIRST = ['ahmet', 'mehmet', 'mustafa', 'ali', 'huseyin', 'hasan', 'ibrahim', 'ismail', 'osman', 'yusuf',
  'murat', 'omer', 'emre', 'burak', 'serkan', 'kemal', 'cem', 'can', 'deniz', 'baris', 'onur', 'volkan', 'kaan',
  'ayse', 'fatma', 'emine', 'hatice', 'zeynep', 'elif', 'merve', 'ozlem', 'selin', 'ece', 'gizem', 'tugba', 'esra',
  'busra', 'seda', 'derya', 'melike']
const LAST = ['yilmaz', 'kaya', 'demir', 'sahin', 'celik', 'yildiz', 'yildirim', 'ozturk', 'aydin', 'ozdemir',
  'arslan', 'dogan', 'kilic', 'aslan', 'cetin', 'kara', 'koc', 'kurt', 'ozkan', 'simsek', 'polat', 'ozcan',
  'korkmaz', 'cakir', 'erdogan', 'yavuz', 'acar', 'sen', 'aktas', 'guler', 'bulut', 'keskin', 'unal', 'tekin',
  'bozkurt', 'gunes', 'avci', 'duman', 'tas', 'uysal']
const NAMES = FIRST.length * LAST.length
// Weighted by rough popularity among Turkish consumers.
const DOMAINS = ['gmail.com', 'gmail.com', 'gmail.com', 'gmail.com', 'hotmail.com', 'hotmail.com', 'hotmail.com',
  'yandex.com', 'outlook.com', 'outlook.com', 'icloud.com', 'yahoo.com', 'mynet.com', 'firma.com.tr', 'sirket.com.tr']

const PAD2: readonly string[] = Array.from({ length: 100 }, (_, i) => (i < 10 ? '0' : '') + i)

function emailOf (p: number): string {
  const h = mix32(p ^ 0x5eed)
  const f = p % FIRST.length
  const l = Math.floor(p / FIRST.length) % LAST.length
  const n = Math.floor(p / NAMES)
  const sep = (h & 3) === 0 ? '_' : '.'
  return FIRST[f]! + sep + LAST[l]! + (n > 0 ? String(n) : '') + '@' + DOMAINS[(h >>> 8) % DOMAINS.length]!
}

/** An e-mail as people type it: mostly clean, sometimes capitalised or padded with spaces (the normaliser fixes both). */
function messyEmail (email: string, rnd: () => number): string {
  const r = rnd()
  if (r < 0.85) return email
  if (r < 0.92) return email.replace(/(^|[._@])([a-z])/g, (_m, a: string, b: string) => a + b.toUpperCase())
  if (r < 0.95) return email.toUpperCase()
  return r < 0.98 ? ' ' + email : email + '  '
}

// ---------------------------------------------------------------------------------------------------------------

const TYPES = ['MESAJ', 'ARAMA', 'EPOSTA'] as const
const RECIPIENT_TYPES = ['BIREYSEL', 'TACIR'] as const
const STATUS = ['ONAY', 'RET'] as const
const ONAY = 0
const RET = 1

// Provider-side sources with rough weights. HS_2015 and HS_KARAR are handled apart (they have rules: H155, H408).
const SOURCE_WEIGHTS: ReadonlyArray<readonly [string, number]> = [
  ['HS_WEB', 25], ['HS_MOBIL', 20], ['HS_CAGRI_MERKEZI', 12], ['HS_FIZIKSEL_ORTAM', 10], ['HS_ISLAK_IMZA', 8],
  ['HS_EORTAM', 8], ['HS_MESAJ', 6], ['HS_EPOSTA', 4], ['HS_SOSYAL_MEDYA', 3], ['HS_ETKINLIK', 2], ['HS_ATM', 2]
]
const SOURCE_TABLE: readonly string[] = SOURCE_WEIGHTS.flatMap(([s, w]) => Array<string>(w).fill(s))

const EMAIL_SHARE = 0.15
const TACIR_SHARE = 0.2
const REPEAT_SHARE = 0.03
const HS_2015_SHARE = 0.01 // of fresh ONAY rows
const HS_KARAR_SHARE = 0.03 // of RET rows
const EARLIER_REPEAT_SHARE = 0.3 // of repeats whose earliest row is RET: an older ONAY arriving later in the file
// Fresh keys come from brands × people × 3 channels; e-mail draws are thinned to EMAIL_SHARE, so size the space to
// a few times the rows to stay far from exhausting it while still sharing people across brands and channels.
const SPACE_PER_ROW = 4
const RING = 8192 // recent fresh keys eligible for a repeat
const CHUNK_CHARS = 64 * 1024

function checkOptions (o: GenerateOptions): void {
  const bad = (what: string): never => { throw new RangeError(`generate: ${what}`) }
  if (!Number.isSafeInteger(o.rows) || o.rows < 0) bad(`rows must be a non-negative integer, got ${o.rows}`)
  if (!Number.isSafeInteger(o.brands) || o.brands < 1) bad(`brands must be a positive integer, got ${o.brands}`)
  if (!(o.retShare >= 0 && o.retShare <= 1)) bad(`retShare must be within 0…1, got ${o.retShare}`)
  if (!Number.isSafeInteger(o.seed)) bad(`seed must be an integer, got ${o.seed}`)
  if (o.iysCode !== undefined && (!Number.isSafeInteger(o.iysCode) || o.iysCode < 1)) bad(`iysCode must be a positive integer, got ${o.iysCode}`)
  if (o.now !== undefined && !(Number.isSafeInteger(o.now) && o.now > IYS_EPOCH_S)) bad(`now must be epoch seconds after 2015-05-01, got ${o.now}`)
}

/** Today's 00:00:00 in Turkey time (UTC+3), as epoch seconds. */
function todayMidnightTr (): number {
  const tr = Math.floor(Date.now() / 1000) + TR_OFFSET_S
  return tr - (tr % 86400) - TR_OFFSET_S
}

/**
 * Writes the CSV header and `opts.rows` rows to `out`, in chunks of ~64 KiB, honouring backpressure. Does not end
 * `out` (it may be stdout). `onProgress` gets the number of data rows written so far after each chunk.
 */
export async function generateConsents (
  opts: GenerateOptions, out: NodeJS.WritableStream, onProgress?: (rowsWritten: number) => void
): Promise<{ rows: number }> {
  checkOptions(opts)
  const rnd = mulberry32(opts.seed)
  const end = opts.now ?? todayMidnightTr()
  const span = end - IYS_EPOCH_S + 1
  const brands = opts.brands
  const rowPrefix = String(opts.iysCode ?? DEFAULT_IYS_CODE) + ','
  const brandCodes = Array.from({ length: brands }, (_, i) => String(FIRST_BRAND_CODE + i) + ',')
  // formatIysDate builds a Date per call; with a few thousand distinct days, caching "YYYY-MM-DD " per day and
  // appending hh:mm:ss from a table is several times faster. IYS_EPOCH_S is a Turkey midnight, so days align.
  const dayPrefix: string[] = []
  const dateText = (seconds: number): string => {
    const off = seconds - IYS_EPOCH_S
    const day = Math.floor(off / 86400)
    let tod = off - day * 86400
    const prefix = dayPrefix[day] ??= formatIysDate(IYS_EPOCH_S + day * 86400).slice(0, 11)
    const h = Math.floor(tod / 3600); tod -= h * 3600
    const m = Math.floor(tod / 60)
    return prefix + PAD2[h]! + ':' + PAD2[m]! + ':' + PAD2[tod - m * 60]!
  }

  // Status of a fresh row, corrected for repeats (which carry the other status) so the overall RET share is
  // retShare: overall ≈ (1 - r)·p + r·(1 - p). No RET at all (or only RET) leaves no room for repeats.
  const repeatShare = Math.min(REPEAT_SHARE, opts.retShare, 1 - opts.retShare)
  const freshRet = repeatShare > 0 ? (opts.retShare - repeatShare) / (1 - 2 * repeatShare) : opts.retShare

  const people = Math.min(PHONE_SPACE, Math.max(64, Math.ceil((opts.rows * SPACE_PER_ROW) / (brands * 3))))
  const keySpace = new Permutation(people * brands * 3, rnd)
  const phoneSpace = new Permutation(PHONE_SPACE, rnd)
  const emailAccept = (EMAIL_SHARE / (1 - EMAIL_SHARE)) * 2 // thins the uniform 1/3 e-mail draws to EMAIL_SHARE
  let nextKey = 0

  // Recent fresh keys, for repeats: enough to rebuild the key, plus the earliest and latest date it has so far.
  const rBrand = new Uint32Array(RING)
  const rPerson = new Uint32Array(RING)
  const rType = new Uint8Array(RING)
  const rMin = new Float64Array(RING)
  const rMax = new Float64Array(RING)
  const rStatusAtMin = new Uint8Array(RING)
  const rStatusAtMax = new Uint8Array(RING)
  let ringFilled = 0
  let ringNext = 0

  const isTacir = (p: number): boolean => mix32(p ^ 0x7ac1) / 4294967296 < TACIR_SHARE
  const phoneOf = (p: number): string => {
    const q = phoneSpace.apply(p)
    const prefix = Math.floor(q / 1e7)
    return '+905' + PAD2[prefix]! + String(1e7 + q - prefix * 1e7).slice(1)
  }
  const sourceFor = (status: number): string =>
    status === RET && rnd() < HS_KARAR_SHARE ? 'HS_KARAR' : SOURCE_TABLE[(rnd() * SOURCE_TABLE.length) | 0]!

  let chunk = CSV_HEADER + '\n'
  let written = 0

  const emit = (brand: number, p: number, type: number, status: number, source: string, date: string): void => {
    const recipient = type === 2 ? csvField(messyEmail(emailOf(p), rnd)) : messyPhone(phoneOf(p), rnd)
    chunk += rowPrefix + brandCodes[brand]! + recipient + ',' + RECIPIENT_TYPES[isTacir(p) ? 1 : 0] + ',' +
      TYPES[type] + ',' + STATUS[status] + ',' + source + ',' + date + '\n'
  }

  /** Repeats a recent key with the other status and a date outside its dates so far; false if there is no room. */
  const repeat = (): boolean => {
    if (ringFilled === 0) return false
    const i = (rnd() * ringFilled) | 0
    const min = rMin[i]!; const max = rMax[i]!
    let date: number
    let status: number
    if (rStatusAtMin[i] === RET && min > IYS_EPOCH_S && rnd() < EARLIER_REPEAT_SHARE) {
      // An older ONAY that shows up after the newer RET: the RET must still win.
      date = IYS_EPOCH_S + Math.floor(rnd() * (min - IYS_EPOCH_S))
      status = ONAY
      rMin[i] = date; rStatusAtMin[i] = status
    } else if (max < end) {
      date = max + 1 + Math.floor(rnd() * (end - max))
      status = 1 - rStatusAtMax[i]!
      rMax[i] = date; rStatusAtMax[i] = status
    } else {
      return false
    }
    emit(rBrand[i]!, rPerson[i]!, rType[i]!, status, sourceFor(status), dateText(date))
    return true
  }

  const fresh = (): void => {
    let brand = 0; let p = 0; let type = 0
    for (;;) {
      if (nextKey >= keySpace.size) throw new Error('generate: key space exhausted (too many rows for the brands)')
      let x = keySpace.apply(nextKey++)
      type = x % 3; x = (x - type) / 3
      brand = x % brands; p = (x - brand) / brands
      if (type !== 2 || rnd() < emailAccept) break
    }
    const status = rnd() < freshRet ? RET : ONAY
    let date: number
    let source: string
    if (status === ONAY && rnd() < HS_2015_SHARE) {
      date = IYS_EPOCH_S; source = 'HS_2015'
    } else {
      date = IYS_EPOCH_S + Math.floor(rnd() * span); source = sourceFor(status)
    }
    const slot = ringNext
    ringNext = (ringNext + 1) % RING
    if (ringFilled < RING) ringFilled++
    rBrand[slot] = brand; rPerson[slot] = p; rType[slot] = type
    rMin[slot] = date; rMax[slot] = date; rStatusAtMin[slot] = status; rStatusAtMax[slot] = status
    emit(brand, p, type, status, source, dateText(date))
  }

  const flush = async (): Promise<void> => {
    const ok = out.write(chunk)
    chunk = ''
    if (!ok) await once(out, 'drain')
  }

  for (let row = 0; row < opts.rows; row++) {
    if (!(rnd() < repeatShare && repeat())) fresh()
    written++
    if (chunk.length >= CHUNK_CHARS) {
      await flush()
      onProgress?.(written)
    }
  }
  if (chunk.length > 0) await flush()
  onProgress?.(written)
  return { rows: written }
}
