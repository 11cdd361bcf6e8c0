// Retry-After (RFC 9110 §10.2.3), read one way for every HTTP peer we wait for: the carriers and İYS.

/** Response headers as undici gives them (lower-case names). */
export type HeaderMap = Readonly<Record<string, string | string[] | undefined>>

/** Retry-After in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs (headers: HeaderMap, now = Date.now()): number | undefined {
  const v = headers['retry-after']
  const s = Array.isArray(v) ? v[0] : v
  if (s === undefined || s === '') return undefined
  if (/^\d+$/.test(s)) return Number(s) * 1000
  const t = Date.parse(s)
  return Number.isNaN(t) ? undefined : Math.max(0, t - now)
}
