// İYS dates are `YYYY-MM-DD HH:mm:ss` in Turkey time, which is UTC+3 all year (no DST since 2016).
// We keep them as epoch seconds internally: compact in Redis and trivially comparable.

/** Turkey's offset from UTC in seconds: the one definition of it. */
export const TR_OFFSET_S = 3 * 3600
/** The same offset as a Postgres interval literal (`INTERVAL '+03:00'`), for `AT TIME ZONE` in queries. */
export const TR_INTERVAL_SQL = `INTERVAL '+${String(TR_OFFSET_S / 3600).padStart(2, '0')}:00'`
const DATE_RE = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/

/** 2015-05-01 00:00:00 Turkey time: the earliest consentDate İYS accepts (H156) and the only one for HS_2015 (H155). */
export const IYS_EPOCH_S = Date.UTC(2015, 4, 1) / 1000 - TR_OFFSET_S

export type ParsedDate = { ok: true, seconds: number } | { ok: false, code: 'H158' | 'H157' }

/** Parses an İYS date. H158: not in the `yyyy-mm-dd hh:mm:ss` shape; H157: shaped right but no such moment. */
export function parseIysDate (text: string): ParsedDate {
  const m = DATE_RE.exec(text)
  if (m === null) return { ok: false, code: 'H158' }
  const y = +m[1]!; const mo = +m[2]!; const d = +m[3]!; const h = +m[4]!; const mi = +m[5]!; const s = +m[6]!
  const ms = Date.UTC(y, mo - 1, d, h, mi, s)
  const back = new Date(ms)
  // Date.UTC reads years 0-99 as 1900-1999; no İYS date is that old, so such a year is simply not a valid date.
  if (y < 1000 || mo < 1 || mo > 12 || h > 23 || mi > 59 || s > 59 || back.getUTCDate() !== d || back.getUTCMonth() !== mo - 1) {
    return { ok: false, code: 'H157' }
  }
  return { ok: true, seconds: ms / 1000 - TR_OFFSET_S }
}

const pad2 = (n: number): string => (n < 10 ? '0' : '') + n

// Every answer with a consent formats its date: the date part is cached per day (İYS dates start in 2015, so a
// small array covers them all), leaving a few integer operations per call and no Date object.
const DAY_S = 86_400
const prefixByDay: string[] = []

/** "YYYY-MM-DD " of a day (days since the epoch, Turkey time). */
function dayPrefix (day: number): string {
  let prefix = day >= 0 && day < 100_000 ? prefixByDay[day] : undefined
  if (prefix === undefined) {
    const d = new Date(day * DAY_S * 1000)
    prefix = d.getUTCFullYear() + '-' + pad2(d.getUTCMonth() + 1) + '-' + pad2(d.getUTCDate()) + ' '
    if (day >= 0 && day < 100_000) prefixByDay[day] = prefix
  }
  return prefix
}

/** Formats epoch seconds as an İYS date in Turkey time. */
export function formatIysDate (seconds: number): string {
  const local = seconds + TR_OFFSET_S
  const day = Math.floor(local / DAY_S)
  const rem = local - day * DAY_S
  const h = (rem / 3600) | 0
  const m = ((rem % 3600) / 60) | 0
  return dayPrefix(day) + pad2(h) + ':' + pad2(m) + ':' + pad2(rem % 60)
}

/**
 * formatIysDate's text as ASCII bytes at buf[pos…] (at most 24 of them); returns the position after it. The /v1/check
 * answer writes dates this way, with no string per answer item.
 */
export function writeIysDate (seconds: number, buf: Uint8Array, pos: number): number {
  const local = seconds + TR_OFFSET_S
  const day = Math.floor(local / DAY_S)
  const prefix = dayPrefix(day)
  for (let i = 0; i < prefix.length; i++) buf[pos++] = prefix.charCodeAt(i)
  const rem = local - day * DAY_S
  const h = (rem / 3600) | 0
  const m = ((rem % 3600) / 60) | 0
  const s = rem % 60
  buf[pos++] = 48 + ((h / 10) | 0); buf[pos++] = 48 + (h % 10); buf[pos++] = 58
  buf[pos++] = 48 + ((m / 10) | 0); buf[pos++] = 48 + (m % 10); buf[pos++] = 58
  buf[pos++] = 48 + ((s / 10) | 0); buf[pos++] = 48 + (s % 10)
  return pos
}
