// A streaming CSV reader for consent files: RFC 4180 fields (quotes, doubled quotes), any line ending, a header row.
// Hand-written because import and scrub read tens of millions of lines: splitting whole chunks on '\n' and taking
// the quote-free fast path per line is several times faster than the general-purpose parsers we tried, and the
// line number of every row is exact (a bad row is reported by line). A quoted field that spans lines is not
// supported: no İYS field can contain a newline, so such a row is reported as malformed.

/**
 * The fields of one CSV line, or null when its quotes are malformed. `sep` is the field separator: ',' by default,
 * ';' for what spreadsheet software writes in locales whose decimal separator is a comma (Turkish among them).
 */
export function splitCsvLine (s: string, sep = ','): string[] | null {
  if (!s.includes('"')) return s.split(sep)
  const sepCode = sep.charCodeAt(0)
  const out: string[] = []
  let i = 0
  const n = s.length
  while (true) {
    if (s.charCodeAt(i) === 34 /* " */) {
      let v = ''
      i++
      while (true) {
        const q = s.indexOf('"', i)
        if (q === -1) return null // unterminated quote
        v += s.slice(i, q)
        if (s.charCodeAt(q + 1) === 34) { v += '"'; i = q + 2; continue }
        i = q + 1
        break
      }
      out.push(v)
      if (i === n) return out
      if (s.charCodeAt(i) !== sepCode) return null // text after a closing quote
      i++
    } else {
      const c = s.indexOf(sep, i)
      const end = c === -1 ? n : c
      const v = s.slice(i, end)
      if (v.includes('"')) return null // a quote inside an unquoted field
      out.push(v)
      if (c === -1) return out
      i = c + 1
    }
    if (i === n) { out.push(''); return out }
  }
}

/** Default longest line (bytes, without its line ending) readLineBatches hands out; longer ones are reported. */
export const DEFAULT_MAX_LINE_BYTES = 4096

export interface LineBatch {
  lines: string[]
  /** 1-based line number of each entry of lines */
  numbers: number[]
  /** line numbers (ascending) of lines longer than the limit: they are not in `lines`, and their bytes were skipped */
  tooLong: number[]
}

export interface LineReadOptions {
  /** longest line handed out, in bytes without the line ending (default DEFAULT_MAX_LINE_BYTES) */
  maxLineBytes?: number
  /** work counters, for tests: bytes looked at by the newline scans, bytes held back across chunks */
  stats?: { scanned: number, copied: number }
}

/**
 * The non-empty lines of a byte stream, a chunk's worth at a time (per-line async iteration costs a promise per
 * line). Handles \n and \r\n and UTF-8 sequences split across chunks.
 *
 * Linear whatever the input: every byte is scanned once, and a line's bytes are held back across chunks only up to
 * the limit. A longer line (a list with no line breaks at all, say) is reported by its number in `tooLong` and its
 * bytes are dropped up to the next newline, so it can neither grow memory nor hold the event loop. The whole lines
 * of a chunk are decoded in one go and split as a string (one native call per chunk, not per line).
 */
export async function * readLineBatches (input: AsyncIterable<Buffer | string>, opts: LineReadOptions = {}): AsyncGenerator<LineBatch> {
  const max = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES
  const stats = opts.stats ?? { scanned: 0, copied: 0 }
  // The start of a line that runs across chunks: at most the limit and a '\r', kept as bytes so that a UTF-8
  // sequence cut between chunks is decoded whole.
  const carry = Buffer.allocUnsafe(max + 1)
  let carried = 0
  let skipping = false // inside a line already reported too long: its bytes are dropped up to the next '\n'
  let line = 1 // number of the line being read
  let batch: LineBatch = { lines: [], numbers: [], tooLong: [] }

  /** The line in buf[start, end) (end at its '\n'), without a trailing '\r'. */
  const take = (buf: Buffer, start: number, end: number): void => {
    if (end > start && buf[end - 1] === 13) end--
    if (end - start > max) batch.tooLong.push(line)
    else if (end > start) { batch.lines.push(buf.toString('utf8', start, end)); batch.numbers.push(line) }
  }

  for await (const c of input) {
    const chunk = typeof c === 'string' ? Buffer.from(c, 'utf8') : c
    const n = chunk.length
    const first = chunk.indexOf(10)
    if (first === -1) { // the open line goes on through the whole chunk
      stats.scanned += n
      if (!skipping) {
        if (carried + n > max + 1) { batch.tooLong.push(line); skipping = true; carried = 0 } else { chunk.copy(carry, carried); carried += n; stats.copied += n }
      }
    } else {
      const last = chunk.lastIndexOf(10)
      stats.scanned += n + 1 // forward to `first`, back to `last`, and the whole lines between them (`last` twice)
      // The line open since an earlier chunk ends at `first`.
      if (skipping) skipping = false
      else if (carried === 0) take(chunk, 0, first)
      else if (carried + first > max + 1) batch.tooLong.push(line)
      else { chunk.copy(carry, carried, 0, first); stats.copied += first; take(carry, 0, carried + first) }
      carried = 0
      line++
      if (last > first) splitWhole(chunk.toString('utf8', first + 1, last + 1))
      // The bytes after the last '\n' open the next line.
      const tail = n - last - 1
      if (tail > max + 1) { batch.tooLong.push(line); skipping = true } else if (tail > 0) { chunk.copy(carry, 0, last + 1); carried = tail; stats.copied += tail }
    }
    if (batch.lines.length > 0 || batch.tooLong.length > 0) {
      yield batch
      batch = { lines: [], numbers: [], tooLong: [] }
    }
  }
  if (!skipping && carried > 0) take(carry, 0, carried)
  if (batch.lines.length > 0 || batch.tooLong.length > 0) yield batch

  /** Whole lines, each ended by '\n'. A UTF-16 unit is at most 3 UTF-8 bytes: most lines need no byte count. */
  function splitWhole (text: string): void {
    let start = 0
    let nl: number
    while ((nl = text.indexOf('\n', start)) !== -1) {
      const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl
      const len = end - start
      if (len > 0) {
        if (len > max || (len * 3 > max && Buffer.byteLength(text.slice(start, end)) > max)) batch.tooLong.push(line)
        else { batch.lines.push(text.slice(start, end)); batch.numbers.push(line) }
      }
      start = nl + 1
      line++
    }
  }
}

/** RFC 4180 field: quoted when it holds a comma, quote or line break, or starts/ends with a space. */
export function csvField (s: string): string {
  if (s.length === 0) return s
  const c0 = s.charCodeAt(0)
  const cl = s.charCodeAt(s.length - 1)
  if (!/[",\r\n]/.test(s) && c0 !== 32 && c0 !== 9 && cl !== 32 && cl !== 9) return s
  return '"' + s.replace(/"/g, '""') + '"'
}
