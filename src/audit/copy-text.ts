// The line format of the decision journal, which is Postgres COPY text format (so a segment of check decisions is
// shipped as it is; fields escaped by formats/copy-text.ts), plus two kinds of line for /v1/messages, merged into
// one row per message at shipping time:
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
