// Turkish public holidays and business days, for İYS's three-business-day rule (H467: "Üç iş günü öncesinde alınan
// izinler kaydedilemez"). A business day is a day (Turkey time, UTC+3) that is neither a Saturday, a Sunday nor a
// public holiday of Law 2429 (Ulusal Bayram ve Genel Tatiller Hakkında Kanun).
//
// - Fixed holidays, every year: 1 January, 23 April, 1 May, 19 May, 15 July, 30 August, 29 October.
// - Religious holidays: Ramazan Bayramı (3 days) and Kurban Bayramı (4 days). Their first days below are those of
//   the Diyanet İşleri Başkanlığı's published calendar for 2024–2030 (checked against the astronomical new moons of
//   those months); extend RELIGIOUS_HOLIDAYS before 2030 ends (test/iys-validate.test.ts fails from 2030 on).
//   After the last year of the table only weekends and the fixed holidays are skipped.
// - Half days (the arife before each bayram, and 28 October) are working mornings: they count as business days.
//   Administrative leave the government grants to public servants (bridge days) is not a public holiday: not skipped.

import { TR_OFFSET_S } from './time.js'

const DAY_S = 86_400

/** The years RELIGIOUS_HOLIDAYS covers (documented in the README). */
export const HOLIDAY_TABLE_YEARS = { first: 2024, last: 2030 } as const

/** [month, day] of the holidays that fall on the same date every year. */
const FIXED: readonly (readonly [number, number])[] = [[1, 1], [4, 23], [5, 1], [5, 19], [7, 15], [8, 30], [10, 29]]

/** First day of Ramazan Bayramı (3 days) and of Kurban Bayramı (4 days), by year (Diyanet). */
export const RELIGIOUS_HOLIDAYS: Readonly<Record<number, { ramazan: string, kurban: string }>> = {
  2024: { ramazan: '2024-04-10', kurban: '2024-06-16' },
  2025: { ramazan: '2025-03-30', kurban: '2025-06-06' },
  2026: { ramazan: '2026-03-20', kurban: '2026-05-27' },
  2027: { ramazan: '2027-03-09', kurban: '2027-05-16' },
  2028: { ramazan: '2028-02-26', kurban: '2028-05-05' },
  2029: { ramazan: '2029-02-14', kurban: '2029-04-24' },
  2030: { ramazan: '2030-02-04', kurban: '2030-04-13' }
}

/** A Turkish calendar day as a number: days since 1970-01-01 in Turkey time. */
export const trDay = (epochSeconds: number): number => Math.floor((epochSeconds + TR_OFFSET_S) / DAY_S)

const dayOf = (isoDate: string): number => Date.parse(isoDate + 'T00:00:00Z') / 1000 / DAY_S

const HOLIDAYS: ReadonlySet<number> = (() => {
  const days = new Set<number>()
  for (const { ramazan, kurban } of Object.values(RELIGIOUS_HOLIDAYS)) {
    for (let i = 0; i < 3; i++) days.add(dayOf(ramazan) + i)
    for (let i = 0; i < 4; i++) days.add(dayOf(kurban) + i)
  }
  return days
})()

/** Whether `day` (a trDay) is a public holiday of the table (fixed, or religious within HOLIDAY_TABLE_YEARS). */
export function isPublicHoliday (day: number): boolean {
  if (HOLIDAYS.has(day)) return true
  const d = new Date(day * DAY_S * 1000)
  const m = d.getUTCMonth() + 1
  const dd = d.getUTCDate()
  return FIXED.some(([fm, fd]) => fm === m && fd === dd)
}

/** Whether `day` (a trDay) is a business day: not a Saturday, a Sunday or a public holiday. */
export function isBusinessDay (day: number): boolean {
  const weekday = new Date(day * DAY_S * 1000).getUTCDay() // 0 Sunday … 6 Saturday
  return weekday !== 0 && weekday !== 6 && !isPublicHoliday(day)
}

/** The `n`th business day before `day` (a trDay), `day` itself not counted. */
export function businessDaysBefore (day: number, n: number): number {
  let d = day
  for (let found = 0; found < n;) if (isBusinessDay(--d)) found++
  return d
}

/**
 * İYS's H467, read as the regulation's "register a consent within three business days": a consent taken on day D
 * may be registered up to the end of the third business day after D. So, in Turkey's calendar days, consentDate's
 * day must be no earlier than the third business day before today (a consent of Friday is accepted until the end of
 * Wednesday, with no holiday between; of Saturday or Sunday likewise, until the end of Wednesday). Hours do not
 * matter, only days.
 */
export function olderThanThreeBusinessDays (consentDateSeconds: number, nowSeconds: number): boolean {
  return trDay(consentDateSeconds) < businessDaysBefore(trDay(nowSeconds), 3)
}
