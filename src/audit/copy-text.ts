// The line format of the decision journal, which is Postgres COPY text format (so a segment of check decisions is
// shipped as it is), plus two kinds of line for /v1/messages, merged into one row per message at shipping time:
//
//   <decided_at>\t<source>\t… 15 columns …\n     a finished decision (every /v1/check decision, blocked messages)
//   M<key>\t<the first 13 columns>\n              a message decision written BEFORE the message goes to the carrier
//   O<key>\t<upstream_status>\t<carrier_id>\n     its carrier outcome, written after (same segment: see journal.ts)
//
// An M line whose O line never came (the process died while forwarding) ships with upstream_status 'interrupted':
// the message may have reached the carrier. Data lines start with a digit (the timestamp), never with M or O.

/** The decisions table's columns, in line order. */
export const COLUMNS = '(decided_at, source, iys_code, brand_code, type, recipient_type, recipient, normalized, commercial, allowed, reason, consent_seq, message_id, upstream_status, carrier_id)'

/** The upstream status of a message decision whose carrier outcome was never journalled. */
export const INTERRUPTED = 'interrupted'

// Everything COPY text format gives a meaning to (backslash, tab, newline, CR), NUL (Postgres text cannot hold it)
// and UTF-16 surrogates (a lone one has no UTF-8 form). The test is one scan; replacing runs only when it matches.
const SPECIAL = /[\\\t\n\r\0\uD800-\uDFFF]/
const REPLACE = /[\\\t\n\r\0]|[\uD800-\uDBFF][\uDC00-\uDFFF]|[\uD800-\uDFFF]/g
const ESCAPES: Readonly<Record<string, string>> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\uFFFD' }
const escapeOne = (c: string): string => (c.length === 2 ? c : ESCAPES[c] ?? '\uFFFD') // a valid pair stays

/**
 * COPY text escaping for free text (a client's recipient, messageId or a carrier's id may hold anything). NUL and
 * lone surrogates become U+FFFD: the row must be storable, and they cannot be (the recipient is invalid anyway).
 */
export function esc (s: string): string {
  return SPECIAL.test(s) ? s.replace(REPLACE, escapeOne) : s
}

export const opt = (s: string | null): string => (s === null ? '\\N' : esc(s))

export function countLines (text: string): number {
  let n = 0
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++
  return n
}

/**
 * A journal segment as COPY text: the torn last line of a crash mid-write is dropped (its answer never left the
 * process, and its message was never forwarded), and message decisions are merged with their carrier outcomes.
 */
export function segmentToCopy (raw: string): { text: string, rows: number } {
  const end = raw.lastIndexOf('\n') + 1
  const text = end < raw.length ? raw.slice(0, end) : raw
  if (text.charCodeAt(0) !== 77 /* M */ && !text.includes('\nM')) return { text, rows: countLines(text) }
  const outcomes = new Map<string, string>()
  const lines = text.split('\n')
  lines.pop() // after the last '\n'
  for (const l of lines) {
    if (l.charCodeAt(0) === 79 /* O */) { const tab = l.indexOf('\t'); outcomes.set(l.slice(1, tab), l.slice(tab + 1)) }
  }
  let out = ''
  let rows = 0
  for (const l of lines) {
    const c = l.charCodeAt(0)
    if (c === 79) continue
    if (c === 77) {
      const tab = l.indexOf('\t')
      out += l.slice(tab + 1) + '\t' + (outcomes.get(l.slice(1, tab)) ?? INTERRUPTED + '\t\\N') + '\n'
    } else {
      out += l + '\n'
    }
    rows++
  }
  return { text: out, rows }
}
