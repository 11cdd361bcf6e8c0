// Postgres COPY text format: the one escaper for every line we COPY (the decision journal, the import's staging).

// Everything COPY text format gives a meaning to (backslash, tab, newline, CR), NUL (Postgres text cannot hold it)
// and UTF-16 surrogates (a lone one has no UTF-8 form). The test is one scan; replacing runs only when it matches.
const SPECIAL = /[\\\t\n\r\0\uD800-\uDFFF]/
const REPLACE = /[\\\t\n\r\0]|[\uD800-\uDBFF][\uDC00-\uDFFF]|[\uD800-\uDFFF]/g
const ESCAPES: Readonly<Record<string, string>> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r', '\0': '\uFFFD' }
const escapeOne = (c: string): string => (c.length === 2 ? c : ESCAPES[c] ?? '\uFFFD') // a valid pair stays

/**
 * COPY text escaping for free text (a client's recipient, messageId, a carrier's id, İYS's transactionId may hold
 * anything). NUL and lone surrogates become U+FFFD: the row must be storable, and they cannot be.
 */
export function esc (s: string): string {
  return SPECIAL.test(s) ? s.replace(REPLACE, escapeOne) : s
}

/** A nullable value: COPY's \N, or the escaped text. */
export const opt = (s: string | null): string => (s === null ? '\\N' : esc(s))
