import { StringDecoder } from 'node:string_decoder'

// A streaming CSV reader for consent files: RFC 4180 fields (quotes, doubled quotes), any line ending, a header row.
// Hand-written because import and scrub read tens of millions of lines: splitting whole chunks on '\n' and taking
// the quote-free fast path per line is several times faster than the general-purpose parsers we tried, and the
// line number of every row is exact (a bad row is reported by line). A quoted field that spans lines is not
// supported: no İYS field can contain a newline, so such a row is reported as malformed.

export function splitCsvLine (s: string): string[] | null {
  if (!s.includes('"')) return s.split(',')
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
      if (s.charCodeAt(i) !== 44 /* , */) return null // text after a closing quote
      i++
    } else {
      const c = s.indexOf(',', i)
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

export interface LineBatch {
  lines: string[]
  /** 1-based line number of each entry of lines */
  numbers: number[]
}

/**
 * The non-empty lines of a byte stream, a chunk's worth at a time (per-line async iteration costs a promise per
 * line). Handles \n and \r\n and UTF-8 sequences split across chunks.
 */
export async function * readLineBatches (input: AsyncIterable<Buffer | string>): AsyncGenerator<LineBatch> {
  const decoder = new StringDecoder('utf8')
  let rest = ''
  let line = 0
  for await (const chunk of input) {
    const text = rest + (typeof chunk === 'string' ? chunk : decoder.write(chunk))
    const batch: LineBatch = { lines: [], numbers: [] }
    let start = 0
    let nl: number
    while ((nl = text.indexOf('\n', start)) !== -1) {
      line++
      const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl
      if (end > start) { batch.lines.push(text.slice(start, end)); batch.numbers.push(line) }
      start = nl + 1
    }
    rest = text.slice(start)
    if (batch.lines.length > 0) yield batch
  }
  rest += decoder.end()
  if (rest.length > 0) {
    line++
    const end = rest.charCodeAt(rest.length - 1) === 13 ? rest.length - 1 : rest.length
    if (end > 0) yield { lines: [rest.slice(0, end)], numbers: [line] }
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
