import { describe, expect, it } from 'vitest'
import { checkTypeFit, isRecipientError, normalizeRecipient } from '../src/domain/normalize.js'
import { IYS_EPOCH_S, formatIysDate, parseIysDate } from '../src/domain/time.js'

const codeOf = (v: string | { code: string }): string | null => (typeof v === 'string' ? null : v.code)

describe('normalizeRecipient with Turkish phone numbers', () => {
  const forms = [
    '05321234567',
    '5321234567',
    '+905321234567',
    '+90 532 123 45 67',
    '0090 532 1234567',
    '90-532-123-4567',
    '(0532) 123 45 67',
    '905321234567',
    '0532 123 45 67',
    '0532.123.45.67',
    '  05321234567  '
  ]
  it.each(forms)('turns %j into +905321234567', (raw) => {
    expect(normalizeRecipient(raw)).toBe('+905321234567')
  })

  it('repairs a trunk zero kept after the country code (+9005… becomes +905…)', () => {
    expect(normalizeRecipient('+9005321234567')).toBe('+905321234567')
    expect(normalizeRecipient('009005321234567')).toBe('+905321234567')
  })

  it('accepts a number given as a JavaScript number', () => {
    expect(normalizeRecipient(5321234567)).toBe('+905321234567')
    expect(normalizeRecipient(905321234567)).toBe('+905321234567')
  })

  it('accepts Turkish geographic and 850 numbers', () => {
    expect(normalizeRecipient('0212 123 45 67')).toBe('+902121234567')
    expect(normalizeRecipient('0850 222 00 00')).toBe('+908502220000')
  })

  it('returns an already canonical number unchanged', () => {
    const s = '+905551112233'
    expect(normalizeRecipient(s)).toBe(s)
  })
})

describe('normalizeRecipient with foreign phone numbers', () => {
  it.each(['+4915112345678', '+12025550123', '+447911123456'])('keeps the E.164 number %j as it is', (raw) => {
    expect(normalizeRecipient(raw)).toBe(raw)
  })

  it('accepts a foreign number written with the 00 international prefix', () => {
    expect(normalizeRecipient('0049 151 12345678')).toBe('+4915112345678')
  })

  it.each(['4915112345678', '12025550123', '447911123456'])('refuses the foreign number %j written without + (H121)', (raw) => {
    expect(codeOf(normalizeRecipient(raw))).toBe('H121')
  })
})

describe('normalizeRecipient refusals', () => {
  it('refuses a phone number longer than 15 characters (H160 or H121)', () => {
    expect(['H160', 'H121']).toContain(codeOf(normalizeRecipient('+9055436100000000')))
    expect(['H160', 'H121']).toContain(codeOf(normalizeRecipient('+4915112345678901')))
  })

  it.each([
    ['letters', 'abc'],
    ['letters mixed with digits', '0532abc4567'],
    ['a Turkish number one digit short', '0532123456'],
    ['a Turkish number one digit long', '053212345678'],
    ['a Turkish number whose national part starts with 1', '+901321234567'],
    ['a Turkish number whose national part starts with 0', '+900321234567'],
    ['a plus sign in the middle', '0532+1234567'],
    ['only separators', '+ ( ) -'],
    ['a plus followed by zero', '+05321234567'],
    ['a too short E.164 number', '+12345']
  ])('refuses %s with H121', (_what, raw) => {
    expect(codeOf(normalizeRecipient(raw))).toBe('H121')
  })

  it.each([
    ['undefined', undefined],
    ['null', null],
    ['an empty string', ''],
    ['only spaces', '   '],
    ['an object', { recipient: '+905321234567' }],
    ['an array', ['+905321234567']],
    ['a boolean', true]
  ])('refuses %s as a missing recipient (H114)', (_what, raw) => {
    const r = normalizeRecipient(raw)
    expect(isRecipientError(r)).toBe(true)
    expect(codeOf(r)).toBe('H114')
  })

  it('gives an error object with a Turkish message, never throws', () => {
    const r = normalizeRecipient('not a phone')
    expect(r).toMatchObject({ code: 'H121' })
    expect(typeof (r as { message: string }).message).toBe('string')
    expect((r as { message: string }).message.length).toBeGreaterThan(10)
  })
})

describe('normalizeRecipient with e-mail addresses', () => {
  it('trims and lower-cases an address', () => {
    expect(normalizeRecipient('  Ali.Veli@Example.COM ')).toBe('ali.veli@example.com')
    expect(normalizeRecipient('AYSE_KAYA@GMAIL.COM')).toBe('ayse_kaya@gmail.com')
  })

  it('accepts sub-domains, plus tags and hyphens', () => {
    expect(normalizeRecipient('ali+iys@posta.firma.com.tr')).toBe('ali+iys@posta.firma.com.tr')
    expect(normalizeRecipient('a-b@x-y.co')).toBe('a-b@x-y.co')
  })

  const long = (n: number): string => {
    // A valid-looking address of exactly n characters: 60-char local part, labels of at most 63 characters.
    const local = 'a'.repeat(60)
    let domain = 'com'
    while (local.length + 1 + domain.length < n) {
      const room = n - (local.length + 1 + domain.length) - 1
      domain = 'b'.repeat(Math.min(63, Math.max(1, room))) + '.' + domain
    }
    return local + '@' + domain
  }

  it('accepts a 265-character address, the longest İYS allows', () => {
    const a = long(265)
    expect(a.length).toBe(265)
    expect(normalizeRecipient(a)).toBe(a)
  })

  it.each([
    ['a@b', 'a domain without a dot'],
    ['ali@', 'no domain'],
    ['@example.com', 'no local part'],
    ['örnek@mail.com', 'a non-ASCII local part'],
    ['ali@şirket.com.tr', 'a non-ASCII domain'],
    ['ali veli@example.com', 'a space inside'],
    ['ali@@example.com', 'two @ signs'],
    ['ali@-example.com', 'a label starting with a hyphen'],
    ['ali@example..com', 'an empty label']
  ])('refuses %j (%s) with H120', (raw) => {
    expect(codeOf(normalizeRecipient(raw))).toBe('H120')
  })

  it('refuses a 266-character address with H120', () => {
    const a = long(266)
    expect(a.length).toBe(266)
    expect(codeOf(normalizeRecipient(a))).toBe('H120')
  })
})

describe('checkTypeFit', () => {
  it('accepts phones for MESAJ and ARAMA and e-mail for EPOSTA', () => {
    expect(checkTypeFit('+905321234567', 'MESAJ')).toBeNull()
    expect(checkTypeFit('+905321234567', 'ARAMA')).toBeNull()
    expect(checkTypeFit('+4915112345678', 'MESAJ')).toBeNull()
    expect(checkTypeFit('ali@example.com', 'EPOSTA')).toBeNull()
  })

  it('refuses an e-mail address for MESAJ or ARAMA with H464', () => {
    expect(checkTypeFit('ali@example.com', 'MESAJ')?.code).toBe('H464')
    expect(checkTypeFit('ali@example.com', 'ARAMA')?.code).toBe('H464')
  })

  it('refuses a phone number for EPOSTA with H464', () => {
    expect(checkTypeFit('+905321234567', 'EPOSTA')?.code).toBe('H464')
  })

  it('names the channel in the H464 message', () => {
    expect(checkTypeFit('ali@example.com', 'ARAMA')?.message).toContain('ARAMA')
    expect(checkTypeFit('+905321234567', 'EPOSTA')?.message).toContain('EPOSTA')
  })
})

describe('İYS dates', () => {
  it('parses a well-formed date as Turkey time (UTC+3)', () => {
    const r = parseIysDate('2020-01-01 03:00:00')
    expect(r).toEqual({ ok: true, seconds: Date.UTC(2020, 0, 1) / 1000 })
  })

  it.each([
    '2020-01-01',
    '2020-01-01T10:00:00',
    '2020-01-01 10:00',
    '2020-1-01 10:00:00',
    '20-01-01 10:00:00',
    ' 2020-01-01 10:00:00',
    '2020-01-01 10:00:00Z',
    '2020/01/01 10:00:00',
    ''
  ])('refuses %j as badly shaped (H158)', (text) => {
    expect(parseIysDate(text)).toEqual({ ok: false, code: 'H158' })
  })

  it.each([
    '2020-02-30 10:00:00',
    '2021-02-29 10:00:00',
    '2020-13-01 25:00:00',
    '2020-13-01 10:00:00',
    '2020-00-10 10:00:00',
    '2020-01-00 10:00:00',
    '2020-04-31 10:00:00',
    '2020-01-01 24:00:00',
    '2020-01-01 10:60:00',
    '2020-01-01 10:00:60'
  ])('refuses the impossible date %j (H157)', (text) => {
    expect(parseIysDate(text)).toEqual({ ok: false, code: 'H157' })
  })

  it('accepts 29 February in a leap year', () => {
    expect(parseIysDate('2024-02-29 23:59:59').ok).toBe(true)
  })

  it.each([
    '2015-05-01 00:00:00',
    '2020-02-29 12:34:56',
    '2023-12-31 23:59:59',
    '2024-01-01 00:00:00',
    '2016-09-07 02:59:59'
  ])('formats %j back to the same text', (text) => {
    const r = parseIysDate(text)
    expect(r.ok).toBe(true)
    if (r.ok) expect(formatIysDate(r.seconds)).toBe(text)
  })

  it('never accepts a date it cannot format back, even for years before 100', () => {
    // Either refused, or read as the year written: never silently moved to 1900 + year.
    for (const text of ['0099-01-01 00:00:00', '0015-05-01 00:00:00']) {
      const r = parseIysDate(text)
      if (r.ok) expect(formatIysDate(r.seconds)).toBe(text)
    }
  })

  it('puts IYS_EPOCH_S at 2015-05-01 00:00:00 Turkey time', () => {
    expect(formatIysDate(IYS_EPOCH_S)).toBe('2015-05-01 00:00:00')
    expect(parseIysDate('2015-05-01 00:00:00')).toEqual({ ok: true, seconds: IYS_EPOCH_S })
    expect(IYS_EPOCH_S).toBe(Date.UTC(2015, 3, 30, 21) / 1000)
  })

  it('orders parsed dates the way the texts order', () => {
    const a = parseIysDate('2021-06-01 09:00:00')
    const b = parseIysDate('2021-06-01 09:00:01')
    expect(a.ok && b.ok && a.seconds + 1 === b.seconds).toBe(true)
  })
})
