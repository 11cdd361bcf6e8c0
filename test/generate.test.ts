import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { checkTypeFit, normalizeRecipient } from '../src/domain/normalize.js'
import { IYS_EPOCH_S, parseIysDate } from '../src/domain/time.js'
import { CONSENT_TYPES, PROVIDER_SOURCES, RECIPIENT_TYPES, STATUSES, isConsentType } from '../src/domain/vocabulary.js'
import { generateConsents, messyPhone, type GenerateOptions } from '../loaders/generate.js'
import { mulberry32 } from '../src/util/random.js'

const HEADER = 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate'
const NOW = Date.UTC(2025, 5, 29, 21) / 1000 // 2025-06-30 00:00:00 Turkey time: fixed, so the bytes never change

/** Collects everything written; optionally slow, with a tiny buffer, to exercise backpressure. */
class Sink extends Writable {
  readonly parts: Buffer[] = []
  constructor (slow = false) {
    super({
      highWaterMark: slow ? 1024 : 16 * 1024,
      write: (chunk: Buffer, _enc, cb) => {
        this.parts.push(chunk)
        if (slow) setImmediate(cb)
        else cb()
      }
    })
  }

  text (): string { return Buffer.concat(this.parts).toString('utf8') }
}

async function generate (opts: Partial<GenerateOptions> = {}, slow = false): Promise<string> {
  const sink = new Sink(slow)
  const r = await generateConsents({ rows: 20_000, brands: 10, retShare: 0.1, seed: 1, now: NOW, ...opts }, sink)
  expect(r.rows).toBe(opts.rows ?? 20_000)
  return sink.text()
}

/** One RFC 4180 record (no embedded line breaks in our data): quoted fields may hold commas and doubled quotes. */
function parseCsvLine (line: string): string[] {
  const fields: string[] = []
  let i = 0
  for (;;) {
    if (line[i] === '"') {
      let v = ''
      i++
      for (;;) {
        const q = line.indexOf('"', i)
        if (q < 0) throw new Error(`unterminated quote in ${JSON.stringify(line)}`)
        v += line.slice(i, q)
        if (line[q + 1] === '"') { v += '"'; i = q + 2; continue }
        i = q + 1
        break
      }
      fields.push(v)
      if (i === line.length) return fields
      if (line[i] !== ',') throw new Error(`text after a closing quote in ${JSON.stringify(line)}`)
      i++
    } else {
      const c = line.indexOf(',', i)
      if (c < 0) { fields.push(line.slice(i)); return fields }
      const v = line.slice(i, c)
      if (v.includes('"')) throw new Error(`quote inside an unquoted field in ${JSON.stringify(line)}`)
      fields.push(v)
      i = c + 1
    }
  }
}

interface Row { iysCode: string, brandCode: string, recipient: string, recipientType: string, type: string, status: string, source: string, consentDate: string }

function rowsOf (csv: string): Row[] {
  expect(csv.endsWith('\n')).toBe(true)
  const lines = csv.slice(0, -1).split('\n')
  expect(lines[0]).toBe(HEADER)
  return lines.slice(1).map((line, i) => {
    const f = parseCsvLine(line)
    if (f.length !== 8) throw new Error(`line ${i + 2} has ${f.length} fields: ${line}`)
    const [iysCode, brandCode, recipient, recipientType, type, status, source, consentDate] = f as [string, string, string, string, string, string, string, string]
    return { iysCode, brandCode, recipient, recipientType, type, status, source, consentDate }
  })
}

describe('generateConsents', () => {
  it('gives the same bytes for the same seed and different bytes for another seed', async () => {
    const a = await generate({ seed: 42 })
    const b = await generate({ seed: 42 })
    const c = await generate({ seed: 43 })
    expect(b).toBe(a)
    expect(c).not.toBe(a)
  })

  it('writes the same bytes into a slow stream with a tiny buffer (backpressure)', async () => {
    const fast = await generate({ seed: 5, rows: 5_000 })
    const slow = await generate({ seed: 5, rows: 5_000 }, true)
    expect(slow).toBe(fast)
  })

  it('does not end the stream it writes to', async () => {
    const sink = new Sink()
    await generateConsents({ rows: 10, brands: 1, retShare: 0.1, seed: 1, now: NOW }, sink)
    expect(sink.writableEnded).toBe(false)
    sink.end()
  })

  it('reports progress that only grows and ends at the row count', async () => {
    const seen: number[] = []
    await generateConsents({ rows: 20_000, brands: 3, retShare: 0.1, seed: 3, now: NOW }, new Sink(), (n) => seen.push(n))
    expect(seen.length).toBeGreaterThan(1)
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThanOrEqual(seen[i - 1]!)
    expect(seen.at(-1)).toBe(20_000)
  })

  it('writes only the header for zero rows', async () => {
    expect(await generate({ rows: 0 })).toBe(HEADER + '\n')
  })

  it('refuses nonsensical options with a RangeError', async () => {
    const base = { rows: 10, brands: 1, retShare: 0.1, seed: 1 }
    for (const bad of [{ rows: -1 }, { rows: 1.5 }, { brands: 0 }, { retShare: 1.2 }, { retShare: Number.NaN }, { seed: 0.5 }, { iysCode: 0 }]) {
      await expect(generateConsents({ ...base, ...bad }, new Sink())).rejects.toThrow(RangeError)
    }
  })

  describe('with 20,000 rows, 10 brands and 10% RET', async () => {
    const csv = await generate({ seed: 7 })
    const rows = rowsOf(csv)

    it('has the header and 20,000 rows of 8 fields', () => {
      expect(csv.startsWith(HEADER + '\n')).toBe(true)
      expect(rows.length).toBe(20_000)
    })

    it('uses one iysCode and the brand codes 600001…600010', () => {
      const brands = new Set(rows.map((r) => r.brandCode))
      expect(new Set(rows.map((r) => r.iysCode))).toEqual(new Set(['700001']))
      expect(brands).toEqual(new Set(Array.from({ length: 10 }, (_, i) => String(600001 + i))))
    })

    it('writes recipients that all normalise and fit their channel', () => {
      const bad: string[] = []
      for (const r of rows) {
        const n = normalizeRecipient(r.recipient)
        if (typeof n !== 'string') { bad.push(`${r.recipient}: ${n.code}`); continue }
        if (!isConsentType(r.type)) { bad.push(`${r.recipient}: type ${r.type}`); continue }
        const fit = checkTypeFit(n, r.type)
        if (fit !== null) bad.push(`${r.recipient} for ${r.type}: ${fit.code}`)
        if (r.type !== 'EPOSTA' && !/^\+905[0-5]\d{8}$/.test(n)) bad.push(`${r.recipient}: not a 50x–55x mobile`)
      }
      expect(bad).toEqual([])
    })

    it('uses only İYS vocabulary, valid dates up to `now`, and the HS_2015/HS_KARAR rules', () => {
      const rtSet = new Set<string>(RECIPIENT_TYPES); const typeSet = new Set<string>(CONSENT_TYPES)
      const statusSet = new Set<string>(STATUSES); const sourceSet = new Set<string>(PROVIDER_SOURCES)
      const bad: string[] = []
      for (const r of rows) {
        const line = JSON.stringify(r)
        if (!rtSet.has(r.recipientType) || !typeSet.has(r.type) || !statusSet.has(r.status) || !sourceSet.has(r.source)) bad.push(`vocabulary: ${line}`)
        const d = parseIysDate(r.consentDate)
        if (!d.ok) bad.push(`date ${d.code}: ${line}`)
        else if (d.seconds < IYS_EPOCH_S || d.seconds > NOW) bad.push(`date out of range: ${line}`)
        if (r.source === 'HS_2015' && r.consentDate !== '2015-05-01 00:00:00') bad.push(`H155: ${line}`)
        if (r.source === 'HS_KARAR' && r.status !== 'RET') bad.push(`H408: ${line}`)
      }
      expect(bad).toEqual([])
      const sources = new Set(rows.map((r) => r.source))
      expect(sources.has('HS_2015')).toBe(true)
      expect(sources.has('HS_KARAR')).toBe(true)
      expect(sources.size).toBeGreaterThanOrEqual(10)
    })

    it('has a RET share within 3 points of retShare', () => {
      const ret = rows.filter((r) => r.status === 'RET').length / rows.length
      expect(Math.abs(ret - 0.1)).toBeLessThanOrEqual(0.03)
    })

    it('has all three channels, both recipient types, and about 85% phones and 20% TACIR', () => {
      const types = new Set(rows.map((r) => r.type))
      expect(types).toEqual(new Set(CONSENT_TYPES))
      expect(new Set(rows.map((r) => r.recipientType))).toEqual(new Set(RECIPIENT_TYPES))
      const phones = rows.filter((r) => r.type !== 'EPOSTA').length / rows.length
      const tacir = rows.filter((r) => r.recipientType === 'TACIR').length / rows.length
      expect(Math.abs(phones - 0.85)).toBeLessThan(0.04)
      expect(Math.abs(tacir - 0.2)).toBeLessThan(0.05)
      const mesaj = rows.filter((r) => r.type === 'MESAJ').length
      const arama = rows.filter((r) => r.type === 'ARAMA').length
      expect(Math.abs(mesaj - arama) / (mesaj + arama)).toBeLessThan(0.1)
    })

    it('writes phones in every mixed input form and some e-mails with capitals or spaces', () => {
      const forms = [/^0\d{10}$/, /^5\d{9}$/, /^\+90\d{10}$/, /^\+90 \d{3} \d{3} \d{2} \d{2}$/, /^0090 \d{3} \d{7}$/,
        /^90-\d{3}-\d{3}-\d{4}$/, /^\(0\d{3}\) \d{3} \d{2} \d{2}$/]
      const phones = rows.filter((r) => r.type !== 'EPOSTA').map((r) => r.recipient)
      for (const re of forms) expect(phones.some((p) => re.test(p))).toBe(true)
      for (const p of phones) expect(forms.some((re) => re.test(p))).toBe(true)
      const emails = rows.filter((r) => r.type === 'EPOSTA').map((r) => r.recipient)
      expect(emails.some((e) => /[A-Z]/.test(e))).toBe(true)
      expect(emails.some((e) => e !== e.trim())).toBe(true)
      expect(csv).toContain(',"') // padded e-mails are quoted
    })

    it('repeats some keys with another status and never twice with the same consentDate', () => {
      const byKey = new Map<string, Row[]>()
      for (const r of rows) {
        const key = `${r.brandCode}|${r.type}|${r.recipientType}|${normalizeRecipient(r.recipient) as string}`
        const list = byKey.get(key)
        if (list === undefined) byKey.set(key, [r])
        else list.push(r)
      }
      const repeated = [...byKey.values()].filter((l) => l.length > 1)
      const extraRows = repeated.reduce((s, l) => s + l.length - 1, 0)
      expect(extraRows / rows.length).toBeGreaterThan(0.015)
      expect(extraRows / rows.length).toBeLessThan(0.05)

      let outOfOrder = 0
      for (const list of repeated) {
        expect(new Set(list.map((r) => r.consentDate)).size).toBe(list.length)
        // In date order the statuses alternate, so every record is a real change (never H174).
        const sorted = [...list].sort((a, b) => (a.consentDate < b.consentDate ? -1 : 1))
        for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.status).not.toBe(sorted[i - 1]!.status)
        if (sorted.at(-1) !== list.at(-1)) outOfOrder++
      }
      // Some files carry an older record after a newer one: "latest consentDate wins", not "last line wins".
      expect(outOfOrder).toBeGreaterThan(0)
    })
  })

  it('writes no RET at all when retShare is 0 and only RET when it is 1', async () => {
    const none = rowsOf(await generate({ retShare: 0, rows: 5_000 }))
    expect(none.every((r) => r.status === 'ONAY')).toBe(true)
    const all = rowsOf(await generate({ retShare: 1, rows: 5_000 }))
    expect(all.every((r) => r.status === 'RET')).toBe(true)
  })

  it('keeps the RET share near retShare at 40% too', async () => {
    const rows = rowsOf(await generate({ retShare: 0.4, seed: 9 }))
    const ret = rows.filter((r) => r.status === 'RET').length / rows.length
    expect(Math.abs(ret - 0.4)).toBeLessThanOrEqual(0.03)
  })

  it('works with a single brand and with a custom iysCode', async () => {
    const rows = rowsOf(await generate({ brands: 1, iysCode: 123, rows: 2_000 }))
    expect(new Set(rows.map((r) => r.brandCode))).toEqual(new Set(['600001']))
    expect(new Set(rows.map((r) => r.iysCode))).toEqual(new Set(['123']))
  })
})

describe('messyPhone', () => {
  it('renders numbers in forms that all normalise back to the canonical number', () => {
    const rnd = mulberry32(99)
    const seenForms = new Set<string>()
    for (let i = 0; i < 2_000; i++) {
      const canonical = '+905' + String(10 + ((rnd() * 50) | 0)) + String(1e7 + ((rnd() * 1e7) | 0)).slice(1)
      const messy = messyPhone(canonical, rnd)
      seenForms.add(messy.replace(/\d/g, '9'))
      expect(normalizeRecipient(messy)).toBe(canonical)
    }
    expect(seenForms.size).toBe(7)
  })

  it('renders +905321234567 in the seven documented forms', () => {
    const all = new Set<string>()
    const rnd = mulberry32(1)
    for (let i = 0; i < 500; i++) all.add(messyPhone('+905321234567', rnd))
    expect(all).toEqual(new Set(['05321234567', '5321234567', '+905321234567', '+90 532 123 45 67', '0090 532 1234567',
      '90-532-123-4567', '(0532) 123 45 67']))
  })
})

describe('mulberry32', () => {
  it('is deterministic for a seed and stays within [0, 1)', () => {
    const a = mulberry32(123); const b = mulberry32(123); const c = mulberry32(124)
    let same = 0
    for (let i = 0; i < 1000; i++) {
      const x = a(); const y = b()
      expect(x).toBe(y)
      expect(x >= 0 && x < 1).toBe(true)
      if (c() === x) same++
    }
    expect(same).toBeLessThan(5)
  })
})
