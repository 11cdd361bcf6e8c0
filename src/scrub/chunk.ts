// One chunk of a scrub job: lines in, result rows out. The same function runs in a piscina worker (Redis mode) and
// inline (embedded mode), and it decides through the same Checker as POST /v1/check, so a scrub and a check can
// never disagree. The chunk's rows come back as UTF-8 bytes, written as decided (`recipient,normalized,allowed,
// reason,line,`), with where each row and its `recipient,normalized,` prefix end, and each decision once more as
// numbers: the job runner writes the bytes as they are and builds only the DUPLICATE rows (from the prefix), so that
// the thread that also serves checks does no per-line string work.

import { Checker, type CheckerOptions, type CheckQuery } from '../check/checker.js'
import { errorCode } from '../domain/errors.js'
import type { FilterView } from '../filter/view.js'
import { hashText, keyHash } from '../filter/key.js'
import { csvField, splitCsvLine } from '../formats/csv.js'
import { REASON_INDEX, REASONS } from '../policy/decide.js'

export type InputFormat = 'csv' | 'ndjson'

export interface ChunkInput {
  /**
   * The chunk's lines joined by '\n' (no line holds one): one string is copied to a worker in one go, where an array
   * of strings is serialised string by string (8192 lines posted and received: 0.46 ms joined and split, 1.4 ms as an array).
   */
  text: string
  /** the input line number of each line */
  numbers: Float64Array
  format: InputFormat
  /** csv: index of the recipient column */
  column: number
}

export interface ChunkOutput {
  /** the rows as decided, UTF-8: `recipient,normalized,allowed,reason,line,\n` per line */
  rows: Uint8Array
  /** per line: the byte offset in `rows` where its row ends */
  rowEnds: Uint32Array
  /** per line: where its `recipient,normalized,` ends (a DUPLICATE row is that prefix and fields of its own) */
  prefixEnds: Uint32Array
  /** reason index (REASONS) per line */
  reasons: Uint8Array
  /** 1 where the line is allowed */
  allowed: Uint8Array
  /** 1 where the line has a normalised recipient (and so takes part in duplicate detection) */
  valid: Uint8Array
  /** 64-bit hash of the normalised recipient, for duplicate detection */
  h1: Uint32Array
  h2: Uint32Array
  /** name of the error when the exact store failed for this chunk (its lines then say STORE_UNAVAILABLE) */
  storeError: string | null
}

const utf8 = new TextEncoder()

/** The `allowed,reason` of a result row by allowed (0/1) and reason index: built once, never per line. */
export const DECISION_FIELDS: readonly (readonly string[])[] = [REASONS.map(r => 'false,' + r), REASONS.map(r => 'true,' + r)]

/** The recipient a line carries; undefined when the line itself is malformed. */
export function recipientOf (line: string, format: InputFormat, column: number): unknown {
  if (format === 'csv') {
    if (line.indexOf('"') === -1) {
      // splitCsvLine's quote-free case (split on ',') without its array of fields: a line is mostly its recipient
      // alone (splitCsvLine took 7 % of a worker's profile on the bench list, this 0.3 %).
      let start = 0
      for (let k = 0; k < column; k++) {
        const c = line.indexOf(',', start)
        if (c === -1) return undefined
        start = c + 1
      }
      const end = line.indexOf(',', start)
      return end === -1 ? (start === 0 ? line : line.slice(start)) : line.slice(start, end)
    }
    const f = splitCsvLine(line)
    return f === null ? undefined : f[column]
  }
  let v: unknown
  try { v = JSON.parse(line) } catch { return undefined }
  if (typeof v === 'string') return v
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return (v as Record<string, unknown>).recipient
  return undefined
}

export async function checkChunk (getView: () => FilterView | null, policy: CheckerOptions, query: Omit<CheckQuery, 'recipients'>, input: ChunkInput): Promise<ChunkOutput> {
  const lines = input.text.split('\n')
  const n = lines.length
  const recipients = new Array<unknown>(n)
  for (let i = 0; i < n; i++) recipients[i] = recipientOf(lines[i]!, input.format, input.column)
  let storeError: string | null = null
  const checker = new Checker(getView, policy, { storeError: (err) => { storeError = errorCode(err) } })
  const results = await checker.check({ ...query, recipients })
  const reasons = new Uint8Array(n)
  const allowed = new Uint8Array(n)
  const valid = new Uint8Array(n)
  const h1 = new Uint32Array(n)
  const h2 = new Uint32Array(n)
  const rowEnds = new Uint32Array(n)
  const prefixEnds = new Uint32Array(n)
  // One string for the chunk, encoded once: offsets are counted in chars, which are bytes unless a line was not ASCII.
  // Appending to it measured cheaper than joining an array of rows (the join's flattening cost more than the encoder's).
  let text = ''
  for (let i = 0; i < n; i++) {
    const r = results[i]!
    const raw = recipients[i]
    // A malformed line is shown as it was, so that the user can find it; a recipient as given. One given in its
    // normalised form needs no quoting (a normalised recipient has no comma, quote, line break or edge space).
    const norm = r.normalized ?? ''
    const shown = raw === norm ? norm : csvField(typeof raw === 'string' ? raw : raw === undefined ? lines[i]! : JSON.stringify(raw))
    text += shown + ',' + norm + ','
    prefixEnds[i] = text.length
    const reason = REASON_INDEX[r.reason]
    const ok = r.allowed ? 1 : 0
    text += DECISION_FIELDS[ok]![reason]! + ',' + input.numbers[i]! + ',\n'
    rowEnds[i] = text.length
    reasons[i] = reason
    allowed[i] = ok
    // Only a recipient that could be sent to takes part in duplicate detection: a repeated invalid one
    // (an e-mail for MESAJ, say) stays INVALID_RECIPIENT on every line.
    if (r.normalized !== null && r.reason !== 'INVALID_RECIPIENT') {
      valid[i] = 1
      hashText(r.normalized)
      h1[i] = keyHash[0]!
      h2[i] = keyHash[1]!
    }
  }
  const rows = utf8.encode(text) // memory of its own (a small Buffer would be a slice of a shared pool): it can be moved
  if (rows.length !== text.length) toByteOffsets(text, prefixEnds, rowEnds)
  return { rows, rowEnds, prefixEnds, reasons, allowed, valid, h1, h2, storeError }
}

/** Char offsets into `text` made UTF-8 byte offsets, in place (a chunk with a line that is not ASCII). */
function toByteOffsets (text: string, prefixEnds: Uint32Array, rowEnds: Uint32Array): void {
  let chars = 0
  let bytes = 0
  for (let i = 0; i < rowEnds.length; i++) {
    const p = prefixEnds[i]!
    const e = rowEnds[i]!
    bytes += Buffer.byteLength(text.slice(chars, p))
    prefixEnds[i] = bytes
    bytes += e - p // `allowed,reason,line,` is ASCII
    rowEnds[i] = bytes
    chars = e
  }
}
