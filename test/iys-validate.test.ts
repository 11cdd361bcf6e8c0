// İYS's validation on the mirrored routes, written from the specification (reference/iys-openapi-3.2.0.json): the
// cases issue 10 lists, and the specification's own 422 examples for "Tekil İzin Ekleme" and the status queries,
// each paired with the input that produces it. Pure functions; the routes are in test/iys-v2.test.ts.

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { ERRORS, GatewayError, type ErrorItem } from '../src/domain/errors.js'
import { businessDaysBefore, HOLIDAY_TABLE_YEARS, isBusinessDay, olderThanThreeBusinessDays, RELIGIOUS_HOLIDAYS, trDay } from '../src/domain/holidays.js'
import { IYS_SOURCES, NO_SOURCE } from '../src/domain/vocabulary.js'
import { checkRecipientList, checkStatusQuery, iysEmail, isIysConsent, pathCodes, validateIysConsent } from '../src/domain/iys-validation.js'

const SPEC = JSON.parse(readFileSync(fileURLToPath(new URL('../reference/iys-openapi-3.2.0.json', import.meta.url)), 'utf8'))
const examples = (path: string, status: string): Record<string, { value: { errors: any[] } }> =>
  SPEC.paths[path].post.responses[status].content['application/json'].examples

/** Turkey time → epoch seconds. */
const tr = (text: string): number => Date.parse(text.replace(' ', 'T') + '+03:00') / 1000
// A Wednesday with no holiday near: the third business day before it is Friday 2026-11-27.
const NOW = tr('2026-12-02 12:00:00')
const GOOD = { recipient: '+905321110100', recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: '2026-12-02 09:00:00' }

const check = (item: unknown, now = NOW): ErrorItem[] => {
  const v = validateIysConsent(item, '700001', '600001', now)
  return isIysConsent(v) ? [] : v
}
const codes = (item: unknown, now = NOW): string[] => check(item, now).map(e => e.code)
const without = (field: keyof typeof GOOD, extra: Record<string, unknown> = {}): Record<string, unknown> => {
  const o: Record<string, unknown> = { ...GOOD, ...extra }
  delete o[field]
  return o
}

describe('a consent İYS accepts', () => {
  it('is returned as stored, with a fingerprint', () => {
    const v = validateIysConsent(GOOD, '700001', '600001', NOW)
    expect(isIysConsent(v) && v.consent).toEqual({ iysCode: '700001', brandCode: '600001', recipient: '+905321110100', recipientType: 'BIREYSEL', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: tr('2026-12-02 09:00:00') })
    expect(isIysConsent(v) && v.fingerprint).toMatch(/^[0-9a-f]{64}$/)
  })

  it('defaults a missing recipientType to BIREYSEL (the schema\'s default), and is then the same consent', () => {
    const a = validateIysConsent(without('recipientType'), '700001', '600001', NOW)
    const b = validateIysConsent(GOOD, '700001', '600001', NOW)
    expect(isIysConsent(a) && isIysConsent(b) && a.fingerprint === b.fingerprint).toBe(true)
  })

  it('takes the specification\'s request examples (retailer fields included)', () => {
    const single = SPEC.paths['/sps/{iysCode}/brands/{brandCode}/consents'].post.requestBody.content['application/json'].examples.AddOneConsentRequest.value
    expect(check({ ...single, consentDate: '2026-12-01 07:07:07' })).toEqual([])
    const batch = SPEC.paths['/sps/{iysCode}/brands/{brandCode}/consents/request'].post.requestBody.content['application/json'].examples.AddMultipleConsent.value
    for (const item of batch) expect(check({ ...item, consentDate: '2026-12-01 09:40:00' })).toEqual([])
  })

  it('lower-cases an e-mail address, as İYS stores it', () => {
    const v = validateIysConsent({ ...GOOD, type: 'EPOSTA', recipient: 'Ali.Veli+kampanya@Mail.COM' }, '700001', '600001', NOW)
    expect(isIysConsent(v) && v.consent.recipient).toBe('ali.veli+kampanya@mail.com')
  })
})

describe('the cases issue 10 lists', () => {
  it('refuses a consentDate more than three business days ago (H467), in Turkey time', () => {
    expect(codes({ ...GOOD, consentDate: '2026-11-27 00:00:00' })).toEqual([]) // Friday: the third business day back
    expect(codes({ ...GOOD, consentDate: '2026-11-28 10:00:00' })).toEqual([]) // Saturday
    expect(check({ ...GOOD, consentDate: '2026-11-26 23:59:59' })).toEqual([{ code: 'H467', message: ERRORS.H467.message, location: ['consentDate'], value: '2026-11-26 23:59:59' }])
    // 00:30 on Wednesday in Turkey is still Tuesday in UTC: the day is Turkey's, so Thursday 26 is too old.
    expect(codes({ ...GOOD, consentDate: '2026-11-26 12:00:00' }, Date.parse('2026-12-01T21:30:00Z') / 1000)).toEqual(['H467'])
    expect(codes({ ...GOOD, consentDate: '2026-11-27 12:00:00' }, Date.parse('2026-12-01T21:30:00Z') / 1000)).toEqual([])
  })

  it('skips Ramazan Bayramı, Kurban Bayramı and fixed holidays, but counts the half-day arife', () => {
    // Ramazan Bayramı 2026: Fri 20 – Sun 22 March; arife Thu 19 counts. From Tue 24: Mon 23, Thu 19, Wed 18.
    expect(codes({ ...GOOD, consentDate: '2026-03-18 00:00:00' }, tr('2026-03-24 12:00:00'))).toEqual([])
    expect(codes({ ...GOOD, consentDate: '2026-03-17 23:59:59' }, tr('2026-03-24 12:00:00'))).toEqual(['H467'])
    // Kurban Bayramı 2026: Wed 27 – Sat 30 May; arife Tue 26. From Mon 1 June: Tue 26, Mon 25, Fri 22.
    expect(codes({ ...GOOD, consentDate: '2026-05-22 08:00:00' }, tr('2026-06-01 10:00:00'))).toEqual([])
    expect(codes({ ...GOOD, consentDate: '2026-05-21 18:00:00' }, tr('2026-06-01 10:00:00'))).toEqual(['H467'])
    // Cumhuriyet Bayramı, Thu 29 October 2026 (28 October, a half day, counts). From Mon 2 November: Fri 30, Wed 28, Tue 27.
    expect(codes({ ...GOOD, consentDate: '2026-10-27 08:00:00' }, tr('2026-11-02 10:00:00'))).toEqual([])
    expect(codes({ ...GOOD, consentDate: '2026-10-26 18:00:00' }, tr('2026-11-02 10:00:00'))).toEqual(['H467'])
  })

  it.each([...IYS_SOURCES, 'IYS_CAGRI_MERKEZI', 'IYS_KISA_MESAJ', NO_SOURCE])('refuses the İYS-side source %s from a provider (H119)', (source) => {
    expect(check({ ...GOOD, source })).toEqual([{ code: 'H119', message: ERRORS.H119.message, location: ['source'], value: source }])
  })

  it('refuses recipientType "" (H116) instead of reading it as BIREYSEL', () => {
    expect(check({ ...GOOD, recipientType: '' })).toEqual([{ code: 'H116', message: ERRORS.H116.message, location: ['recipientType'], value: '' }])
  })

  it.each(['05321237777', '5321237777', '905321237777', '+90532 1237777', '+9005321237777', '+90532123777', '+0554321'])('refuses the phone %j, not in E.164, instead of repairing it (H121)', (recipient) => {
    expect(check({ ...GOOD, recipient })).toEqual([{ code: 'H121', message: ERRORS.H121.message, location: ['recipient'], value: recipient }])
  })

  it('takes E.164 numbers of Turkey and elsewhere as they are', () => {
    for (const recipient of ['+905321237777', '+902121230000', '+908502220000', '+4915112345678', '+12025550123']) expect(check({ ...GOOD, recipient }), recipient).toEqual([])
    expect(codes({ ...GOOD, recipient: '+90 532 123 77 77' })).toEqual(['H160', 'H121']) // 17 characters
  })

  it.each([
    'ali!x@mail.com', 'ali#x@mail.com', "ali'x@mail.com", 'ali%x@mail.com', 'ali&x@mail.com', 'ali/x@mail.com', 'ali=x@mail.com',
    'ali?x@mail.com', 'ali^x@mail.com', 'ali{x}@mail.com', 'ali(x)@mail.com', 'ali,x@mail.com', 'ali x@mail.com',
    'a@b.co', 'ab@c.de', 'a@bc.d', 'a@b.c', 'örnek@mail.com', 'ali@maıl.com', 'ornekmail.com', 'ali@@mail.com', 'ali@mail',
    ' ali@mail.com', 'ali@mail..com', 'ali@ma_il.com', 'o'.repeat(257) + '@mail.com'
  ])('refuses the e-mail %j by İYS\'s rules (H120)', (recipient) => {
    expect(check({ ...GOOD, type: 'EPOSTA', recipient })).toEqual([{ code: 'H120', message: ERRORS.H120.message, location: ['recipient'], value: recipient }])
  })

  it.each(['a@bc.de', 'ab@cd.ef', 'ali.veli@mail.com.tr', 'ali+etiket@mail.com', '-ali@mail.com', '_ali@mail.com', '.ali@mail.com', 'a__b--c@mail.com', 'ALI@MAIL.COM', 'a1@sub-domain.example.org'])('takes the e-mail %j', (recipient) => {
    expect(check({ ...GOOD, type: 'EPOSTA', recipient })).toEqual([])
    expect(iysEmail(recipient)).toBe(recipient.toLowerCase())
  })

  it('reports a 16-character phone with H160 and H121, in that order', () => {
    expect(check({ ...GOOD, recipient: '9055436100000000' })).toEqual([
      { code: 'H160', message: ERRORS.H160.message, location: ['recipient'], value: '9055436100000000' },
      { code: 'H121', message: ERRORS.H121.message, location: ['recipient'], value: '9055436100000000' }
    ])
  })

  it('reports HS_2015 with a 2014 date with H156 and H155, in that order', () => {
    expect(codes({ ...GOOD, source: 'HS_2015', consentDate: '2014-02-10 09:30:00' })).toEqual(['H156', 'H155'])
    expect(codes({ ...GOOD, source: 'HS_2015', consentDate: '2020-04-30 23:59:00' })).toEqual(['H155'])
    expect(codes({ ...GOOD, source: 'HS_2015', consentDate: '2015-05-01 00:00:00' })).toEqual([]) // HS_2015's only date: no H467
  })

  it('reports type and source both missing with both codes', () => {
    const o = without('type')
    delete o.source
    expect(check(o)).toEqual([
      { code: 'H111', message: ERRORS.H111.message, location: ['type'] },
      { code: 'H113', message: ERRORS.H113.message, location: ['source'] }
    ])
  })

  it('reports every error of a consent, in İYS\'s field order', () => {
    expect(codes({ recipient: '05321110100', type: 'MESAJJ', source: 'IYS_WEB', status: 'ONAYY', consentDate: '2042-01-01 10:00:00', recipientType: 'TACIRR', colour: 'red' }))
      .toEqual(['H118', 'H121', 'H117', 'H119', 'H115', 'H162', 'H116'])
  })

  it('sends every value as text: numbers and booleans as written, lists and objects as JSON', () => {
    expect(check({ ...GOOD, extra: 1001 })[0]).toMatchObject({ code: 'H118', location: ['extra'], value: '1001' })
    expect(check({ ...GOOD, extra: [1, 2] })[0]).toMatchObject({ code: 'H118', value: '[1,2]' })
    expect(check({ ...GOOD, extra: { a: 1 } })[0]).toMatchObject({ code: 'H118', value: '{"a":1}' })
    expect(check({ ...GOOD, extra: null })[0]).toMatchObject({ code: 'H118', value: 'null' })
    expect(check({ ...GOOD, type: 5 })[0]).toMatchObject({ code: 'H117', value: '5' })
    expect(check({ ...GOOD, status: true })[0]).toMatchObject({ code: 'H115', value: 'true' })
    expect(check({ ...GOOD, recipient: 905321110100 })[0]).toMatchObject({ code: 'H121', value: '905321110100' })
    for (const e of check({ recipient: 1, type: 2, source: 3, status: 4, consentDate: 5, recipientType: 6, x: [7] })) {
      if (e.value !== undefined) expect(typeof e.value).toBe('string')
    }
  })

  it('lets a TACIR consent leave out source and consentDate, and says so (the store refuses that on an update)', () => {
    const v = validateIysConsent({ recipient: '+905321110150', recipientType: 'TACIR', type: 'ARAMA', status: 'ONAY' }, '700001', '600001', NOW)
    expect(isIysConsent(v)).toBe(true)
    if (!isIysConsent(v)) return
    expect(v.omitted).toEqual({ source: true, consentDate: true })
    expect(v.consent.source).toBe(NO_SOURCE)
    expect(v.consent.consentDate).toBe(NOW)
    // A BIREYSEL consent may not.
    expect(codes({ recipient: '+905321110150', recipientType: 'BIREYSEL', type: 'ARAMA', status: 'ONAY' })).toEqual(['H113', 'H112'])
    expect(codes({ recipient: '+905321110150', type: 'ARAMA', status: 'ONAY' })).toEqual(['H113', 'H112'])
  })
})

describe('retailer fields (retailerCode, retailerAccess)', () => {
  it('are accepted when well formed, and do not change the consent', () => {
    const v = validateIysConsent({ ...GOOD, retailerCode: 55550127, retailerAccess: [58795354, '30143398'] }, '700001', '600001', NOW)
    expect(isIysConsent(v) && v.consent).toEqual((validateIysConsent(GOOD, '700001', '600001', NOW) as any).consent)
  })

  it('refuse an empty retailerAccess list (H163, value "[]")', () => {
    expect(check({ ...GOOD, retailerAccess: [] })).toEqual([{ code: 'H163', message: 'İzin erişimi olan bayilerin (retailer) listesi boş olmamalıdır.', location: ['retailerAccess'], value: '[]' }])
  })

  it('refuse an empty retailerCode alone (H267, 400: before the fields)', () => {
    expect(check({ ...GOOD, retailerCode: '', type: 'MESAJJ' })).toEqual([{ code: 'H267', message: 'retailerCode değeri boş string olmamalıdır!', location: ['retailerCode'] }])
    expect(ERRORS.H267.status).toBe(400)
  })

  it('refuse retailer codes that are not numbers as a request İYS cannot read (H085)', () => {
    expect(codes({ ...GOOD, retailerCode: 'abc' })).toEqual(['H085'])
    expect(codes({ ...GOOD, retailerCode: 1.5 })).toEqual(['H085'])
    expect(codes({ ...GOOD, retailerAccess: 58795354 })).toEqual(['H085'])
    expect(check({ ...GOOD, retailerAccess: [1, 'x'] })).toEqual([{ code: 'H085', message: ERRORS.H085.message, location: ['retailerAccess', 1], value: 'x' }])
  })

  it('refuse more than 3000 retailers (H126) and codes no retailer can have (H180)', () => {
    expect(codes({ ...GOOD, retailerAccess: Array.from({ length: 3001 }, (_, i) => 10000000 + i) })).toEqual(['H126'])
    expect(codes({ ...GOOD, retailerAccess: Array.from({ length: 3000 }, (_, i) => 10000000 + i) })).toEqual([])
    expect(check({ ...GOOD, retailerCode: 123456789 })).toEqual([{ code: 'H180', message: 'retailerCode kullanıcı üzerinde bulunamadı.', location: ['retailerCode'], value: '123456789' }])
    expect(check({ ...GOOD, retailerAccess: [58795354, 0] })[0]).toMatchObject({ code: 'H180', location: ['retailerAccess', 1], value: '0' })
  })
})

describe('the specification\'s 422 examples of Tekil İzin Ekleme', () => {
  const EX = examples('/sps/{iysCode}/brands/{brandCode}/consents', '422')
  const EMAIL = { ...GOOD, type: 'EPOSTA' }
  // The input each example answers (H525, the subscription's consent quota, is not modelled).
  const inputs: Record<string, unknown> = {
    OneConsentRequestMissingType: without('type'),
    OneConsentRequestMissingSource: without('source'),
    OneConsentRequestMissingRecipient: without('recipient'),
    OneConsentRequestMissingStatus: without('status'),
    OneConsentRequestMissingConsentDate: without('consentDate'),
    OneConsentRequestInvalidType: { ...GOOD, type: 'EPOSTAa' },
    OneConsentRequestInvalidSource: { ...GOOD, source: 'HS_FIZIKSEL_OTAM' },
    OneConsentRequestInvalidEmail: { ...EMAIL, recipient: EX.OneConsentRequestInvalidEmail!.value.errors[0].value },
    OneConsentRequestInvalidPhoneNumber: { ...GOOD, recipient: '9055436100000000' },
    OneConsentRequestInvalidStatus: { ...GOOD, status: 'ONAYY' },
    OneConsentRequestInvalidConsentDate: { ...GOOD, consentDate: '2020-15-01 13:35:00' },
    OneConsentRequestInvalidConsentDate2: { ...GOOD, consentDate: '2015-04-30 23:59:00' },
    OneConsentRequestInvalidConsentDate3: { ...GOOD, source: 'HS_2015', consentDate: '2020-04-30 23:59:00' },
    OneConsentRequestUnacceptableProperty: { ...GOOD, unacceptableProperty: 'unacceptableValue' },
    OneConsentRequestInvalidRecipientType: { ...GOOD, recipientType: 'TACIRR' },
    OneConsentTurkishCharsProblem: { ...EMAIL, recipient: 'örnek@mail.com' },
    HS_KARAR_statusError: { ...GOOD, source: 'HS_KARAR' },
    threeDay: { ...GOOD, consentDate: '2020-01-13 13:35:13' }
  }

  it('are all paired with an input here (but the quota)', () => {
    expect(Object.keys(EX).filter(k => !(k in inputs)).sort()).toEqual(['insufficientConsentLimit'])
  })

  it.each(Object.keys(inputs))('%s: the same codes, locations and values', (name) => {
    const expected = EX[name]!.value.errors.map((e: any) => ({ code: e.code, location: e.location, ...(e.value !== undefined ? { value: e.value } : {}) }))
    const got = check(inputs[name])
    expect(got.map(e => ({ code: e.code, location: e.location, ...(e.value !== undefined ? { value: e.value } : {}) }))).toEqual(expected)
    // The message is the error table's (test/errors.test.ts), or this example's where İYS's wording is more precise.
    got.forEach((e, i) => expect([ERRORS[e.code].message, EX[name]!.value.errors[i].message]).toContain(e.message))
  })
})

describe('path codes', () => {
  const thrown = (a: string, b: string): unknown => { try { pathCodes(a, b); return null } catch (e) { return (e as GatewayError).toBody() } }

  it('answer a non-integer iysCode H190 and brandCode H191, both when both', () => {
    expect(thrown('abc', '600001')).toEqual({ errors: [{ code: 'H190', message: 'iysCode integer bir değer olmalıdır.', location: ['iysCode'], value: 'abc' }] })
    expect(thrown('700001', '6x')).toEqual({ errors: [{ code: 'H191', message: 'brandCode integer bir değer olmalıdır.', location: ['brandCode'], value: '6x' }] })
    expect((thrown('1.5', '') as any).errors.map((e: any) => e.code)).toEqual(['H190', 'H191'])
    expect(ERRORS.H190.status).toBe(422)
  })

  it('keep integers that are no code as written (the tenancy check answers H353), and canonicalise the rest', () => {
    expect(pathCodes('000700001', '+600001')).toEqual({ iysCode: '700001', brandCode: '600001' })
    expect(pathCodes('0', '-5')).toEqual({ iysCode: '0', brandCode: '-5' })
  })
})

describe('the status queries', () => {
  const EX = examples('/sps/{iysCode}/brands/{brandCode}/consents/status', '422')
  const Q = { recipient: '+905321110100', recipientType: 'BIREYSEL', type: 'MESAJ' }
  const inputs: Record<string, unknown> = {
    InvalidType: { ...Q, type: 'ARAMAA' },
    missingType: { recipient: Q.recipient, recipientType: 'BIREYSEL' },
    missingRecipientType: { recipient: Q.recipient, type: 'MESAJ' },
    invalidRecipientType: { ...Q, recipientType: 'TACIRR' },
    invalidEmailAddress: { ...Q, type: 'EPOSTA', recipient: 'ornekmail.com' },
    invalidPhoneNumber: { ...Q, recipient: '+05543213232' },
    longPhoneNumber: { ...Q, recipient: '+0554321323223333333333' }
  }

  it.each(Object.keys(inputs))('single, %s: the specification\'s codes, locations and values', (name) => {
    const got = checkStatusQuery(inputs[name]) as ErrorItem[]
    expect(got.map(e => [e.code, e.location, e.value])).toEqual(EX[name]!.value.errors.map((e: any) => [e.code, e.location, e.value]))
  })

  it('single: H097 for a body that is not an object; no repair of a national phone; the query otherwise', () => {
    expect(checkStatusQuery([1, 2])).toEqual([{ code: 'H097', message: ERRORS.H097.message }])
    expect((checkStatusQuery({ ...Q, recipient: '05321110100' }) as ErrorItem[]).map(e => e.code)).toEqual(['H121'])
    expect(checkStatusQuery({ ...Q, recipient: 'Ali@Mail.com', type: 'EPOSTA' })).toEqual({ recipient: 'ali@mail.com', recipientType: 'BIREYSEL', type: 'EPOSTA' })
  })

  const LX = examples('/sps/{iysCode}/brands/{brandCode}/consents/{recipientType}/status/{type}', '422')
  const listInputs: Record<string, [string, string, unknown]> = {
    recipientsNotFound: ['BIREYSEL', 'MESAJ', {}],
    invalidRecipientFormat: ['BIREYSEL', 'MESAJ', { recipients: {} }],
    emptyRecipientList: ['BIREYSEL', 'MESAJ', { recipients: [] }],
    invalidRecipientType: ['BIREYSEL', 'MESAJ', { recipients: ['test@gmail.com'] }],
    invalidRecipientType2: ['BIREYSEL', 'EPOSTA', { recipients: ['+905312560714'] }],
    nonRepeatableRecipient: ['BIREYSEL', 'MESAJ', { recipients: ['+905054566789', '+905055566790', '+905055566791', '+905055566791'] }]
  }

  it.each(Object.keys(listInputs))('list, %s: the specification\'s codes and locations; values as text', (name) => {
    const [rt, t, body] = listInputs[name]!
    const got = checkRecipientList(rt, t, body, 1000) as ErrorItem[]
    const text = (v: unknown): unknown => v === undefined || typeof v === 'string' ? v : JSON.stringify(v)
    expect(got.map(e => [e.code, e.location, e.value])).toEqual(LX[name]!.value.errors.map((e: any) => [e.code, e.location, text(e.value)]))
    got.forEach((e, i) => expect([ERRORS[e.code].message, LX[name]!.value.errors[i].message]).toContain(e.message))
  })

  it('list: every error, path values checked too; the distinct recipients otherwise', () => {
    expect((checkRecipientList('KURUMSAL', 'FAX', { recipients: ['+905321110100'] }, 1000) as ErrorItem[]).map(e => e.code)).toEqual(['H116', 'H117'])
    expect((checkRecipientList('BIREYSEL', 'MESAJ', { recipients: ['0532 111 04 01', 'a@b.com', '+905321110100'] }, 1000) as ErrorItem[]).map(e => e.code)).toEqual(['H121', 'H464'])
    expect((checkRecipientList('BIREYSEL', 'MESAJ', { recipients: Array.from({ length: 1001 }, () => '+905321110100') }, 1000) as ErrorItem[])[0]).toMatchObject({ code: 'H091', value: '1001' })
    expect(checkRecipientList('TACIR', 'MESAJ', { recipients: ['+905321110100', '+905321110101'] }, 1000)).toEqual({ recipientType: 'TACIR', type: 'MESAJ', recipients: ['+905321110100', '+905321110101'] })
  })
})

describe('the holiday table', () => {
  it(`covers ${HOLIDAY_TABLE_YEARS.first}–${HOLIDAY_TABLE_YEARS.last} and this year and the next (extend it from Diyanet's calendar when this fails)`, () => {
    for (let y = HOLIDAY_TABLE_YEARS.first; y <= HOLIDAY_TABLE_YEARS.last; y++) expect(RELIGIOUS_HOLIDAYS[y], String(y)).toBeDefined()
    expect(HOLIDAY_TABLE_YEARS.last).toBeGreaterThanOrEqual(new Date().getUTCFullYear() + 1)
  })

  it('agrees with the lunar calendar: 1 Şevval to 10 Zilhicce is 67–69 days, and each bayram a lunar year (354–355 days) after the last', () => {
    const days = (a: string, b: string): number => (Date.parse(b) - Date.parse(a)) / 86_400_000
    const years = Object.keys(RELIGIOUS_HOLIDAYS).map(Number).sort()
    for (const y of years) {
      const { ramazan, kurban } = RELIGIOUS_HOLIDAYS[y]!
      expect(ramazan.startsWith(String(y)) && kurban.startsWith(String(y))).toBe(true)
      expect(days(ramazan, kurban), String(y)).toBeGreaterThanOrEqual(67)
      expect(days(ramazan, kurban), String(y)).toBeLessThanOrEqual(69)
      const next = RELIGIOUS_HOLIDAYS[y + 1]
      if (next === undefined) continue
      expect([354, 355]).toContain(days(ramazan, next.ramazan))
      expect([354, 355]).toContain(days(kurban, next.kurban))
    }
  })

  it('knows weekends, fixed holidays, all bayram days, and that the arife is a working day', () => {
    const day = (d: string): number => trDay(tr(d + ' 12:00:00'))
    expect(['2026-12-05', '2026-12-06', '2027-01-01', '2026-04-23', '2026-05-01', '2026-05-19', '2026-07-15', '2026-08-30', '2026-10-29'].filter(d => isBusinessDay(day(d)))).toEqual([])
    expect(['2026-03-20', '2026-03-21', '2026-03-22', '2026-05-27', '2026-05-28', '2026-05-29', '2026-05-30', '2030-02-04', '2030-04-16'].filter(d => isBusinessDay(day(d)))).toEqual([])
    expect(['2026-03-19', '2026-05-26', '2026-10-28', '2026-12-02'].every(d => isBusinessDay(day(d)))).toBe(true)
    expect(businessDaysBefore(day('2026-12-02'), 3)).toBe(day('2026-11-27'))
    expect(olderThanThreeBusinessDays(tr('2026-11-27 00:00:00'), tr('2026-12-02 23:59:59'))).toBe(false)
  })
})
