// Every İYS code the gateway answers with must carry İYS's own HTTP status and Turkish message, as the İYS
// specification's error table (tag "HATA KODLARI" in iys-openapi-3.2.0.json) gives them, so that a payload written
// for İYS gets the same answer here. Gateway-only codes are plain English. Error bodies have İYS's shape.

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../src/config.js'
import { CodedError, ERRORS, errorCode, GatewayError, errorItem, INTERNAL_ERRORS, type ErrorCode } from '../src/domain/errors.js'
import { BLOCK_BYTES, BLOOM_SEGMENTS, BloomFilter } from '../src/filter/bloom.js'
import { StoreTimeoutError, VersionGoneError, type FilterView } from '../src/filter/view.js'
import { scrubFile } from '../src/scrub/engine.js'
import { emptyTotals } from '../src/scrub/job-record.js'

// The İYS specification, kept in the repository (reference/) so that the test runs from any clone.
const SPEC_PATH = fileURLToPath(new URL('../reference/iys-openapi-3.2.0.json', import.meta.url))

interface SpecRow { status: number, message: string }

const squash = (s: string): string => s.trim().replace(/\s+/g, ' ')

/** Every `| Hxxx | status | message |` row of every tag description, by code (a code may appear more than once). */
function specErrorTable (): Map<string, SpecRow[]> {
  const spec = JSON.parse(readFileSync(SPEC_PATH, 'utf8')) as { tags?: { description?: string }[], paths?: unknown }
  const table = new Map<string, SpecRow[]>()
  for (const tag of spec.tags ?? []) {
    for (const line of (tag.description ?? '').split('\n')) {
      const m = /^\s*\|\s*(H\d+)\s*\|\s*(\d{3})\s*\|(.*)$/.exec(line)
      if (m === null) continue
      // Some rows lack the closing pipe, and some messages contain a pipe themselves: drop one trailing pipe only.
      const message = squash(m[3]!.replace(/\|\s*$/, ''))
      const rows = table.get(m[1]!) ?? []
      rows.push({ status: Number(m[2]), message })
      table.set(m[1]!, rows)
    }
  }
  // A few codes are missing from the table and given only by an operation's own error examples (H506, H507 of the
  // changes pull): those count too, with the status of the response they are examples of.
  for (const [status, errors] of exampleErrors(spec)) {
    for (const e of errors) if (!table.has(e.code)) table.set(e.code, [{ status, message: squash(e.message) }])
  }
  return table
}

/** The `{errors:[{code, message}]}` bodies of every operation's response examples, with the response's status. */
function exampleErrors (spec: any): [number, { code: string, message: string }[]][] {
  const out: [number, { code: string, message: string }[]][] = []
  for (const operations of Object.values<any>(spec.paths ?? {})) {
    for (const op of Object.values<any>(operations)) {
      for (const [status, response] of Object.entries<any>(op?.responses ?? {})) {
        for (const media of Object.values<any>(response?.content ?? {})) {
          for (const example of Object.values<any>(media?.examples ?? {})) {
            const errors = example?.value?.errors
            if (Array.isArray(errors)) out.push([Number(status), errors.filter(e => /^H\d+$/.test(e?.code) && typeof e.message === 'string')])
          }
        }
      }
    }
  }
  return out
}

// Where the table's message is a template or names variants, our message may be a prefix of it. Keep this short.
const PREFIX_ALLOWED: Readonly<Record<string, string>> = {
  // The table says "... farklı bir durum girilmelidir. İzin durumu: ONAY / RET": the trailing sentence names the
  // current status as a variant; our fixed message stops before it.
  H174: 'the table appends "İzin durumu: ONAY / RET", a variant naming the current status'
}

const table = specErrorTable()
const codes = Object.keys(ERRORS) as ErrorCode[]
const iysCodes = codes.filter(c => /^H\d+$/.test(c))
const gatewayCodes = codes.filter(c => !/^H\d+$/.test(c))

describe('the İYS specification error table', () => {
  it('is found and parsed (hundreds of rows, including well-known codes)', () => {
    expect(table.size).toBeGreaterThan(100)
    expect(table.get('H014')).toEqual([{ status: 400, message: 'Gönderilen istek JSON formatına uygun olmalıdır.' }])
  })

  it('has only prefix allowances for codes we actually use', () => {
    for (const code of Object.keys(PREFIX_ALLOWED)) expect(iysCodes).toContain(code)
  })
})

describe('İYS error codes in ERRORS', () => {
  it('include the codes the check and consent paths rely on', () => {
    expect(iysCodes).toEqual(expect.arrayContaining(['H014', 'H1042', 'H111', 'H114', 'H116', 'H117', 'H121', 'H174', 'H175', 'H178', 'H464']))
  })

  it.each(iysCodes)('%s exists in the specification with the same HTTP status and Turkish message', (code) => {
    const rows = table.get(code)
    expect(rows, `${code} is not in the specification's error table`).toBeDefined()
    const ours = squash(ERRORS[code].message)
    for (const row of rows!) {
      expect(ERRORS[code].status, `${code} status`).toBe(row.status)
      if (code in PREFIX_ALLOWED) {
        expect(ours.length).toBeGreaterThan(0)
        expect(row.message.startsWith(ours), `${code}: "${ours}" should start "${row.message}"`).toBe(true)
      } else {
        expect(ours, `${code} message`).toBe(row.message)
      }
    }
  })
})

describe('gateway-only error codes', () => {
  it('exist alongside the İYS codes', () => {
    expect(gatewayCodes).toEqual(expect.arrayContaining(['BODY_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE', 'NOT_FOUND', 'METHOD_NOT_ALLOWED', 'INVALID_FIELD', 'TOO_MANY_RECIPIENTS']))
  })

  it.each(gatewayCodes)('%s is an upper-case word with a 4xx/5xx status and a non-empty English message', (code) => {
    expect(code).toMatch(/^[A-Z][A-Z_]*[A-Z]$/)
    expect(table.has(code)).toBe(false)
    const { status, message } = ERRORS[code]
    expect(status).toBeGreaterThanOrEqual(400)
    expect(status).toBeLessThan(600)
    expect(message.trim().length).toBeGreaterThan(0)
    // English: printable ASCII, except that the proper name İYS may appear.
    expect(message.replace(/İYS/g, 'IYS')).toMatch(/^[\x20-\x7e]+$/)
  })
})

describe('GatewayError', () => {
  it('takes its status and message from ERRORS', () => {
    const e = new GatewayError('H117')
    expect(e).toBeInstanceOf(Error)
    expect(e.code).toBe('H117')
    expect(e.status).toBe(422)
    expect(e.message).toBe(ERRORS.H117.message)
  })

  it('gives İYS\'s body with location as an array and the offending value', () => {
    const e = new GatewayError('H117', { location: 'type', value: 'FAX' })
    expect(e.toBody()).toEqual({ errors: [{ code: 'H117', message: ERRORS.H117.message, location: ['type'], value: 'FAX' }] })
    // The body survives JSON unchanged (what the client receives).
    expect(JSON.parse(JSON.stringify(e.toBody()))).toEqual(e.toBody())
  })

  it('leaves location and value out of the body when there are none', () => {
    const body = new GatewayError('H014').toBody()
    expect(body).toEqual({ errors: [{ code: 'H014', message: ERRORS.H014.message }] })
    expect(Object.keys(body.errors[0]!).sort()).toEqual(['code', 'message'])
  })

  it('keeps a falsy value such as 0 or an empty string in the body', () => {
    expect(new GatewayError('INVALID_BRAND_CODE', { location: 'brandCode', value: 0 }).toBody().errors[0]).toMatchObject({ value: 0, location: ['brandCode'] })
    expect(new GatewayError('H114', { location: 'recipient', value: '' }).toBody().errors[0]).toMatchObject({ value: '' })
  })

  it('uses a custom message in both the error and its body, keeping the code and status', () => {
    const e = new GatewayError('INVALID_FIELD', { location: 'commercial', message: 'commercial must be true or false.' })
    expect(e.message).toBe('commercial must be true or false.')
    expect(e.status).toBe(422)
    expect(e.toBody().errors[0]).toEqual({ code: 'INVALID_FIELD', message: 'commercial must be true or false.', location: ['commercial'] })
  })

  it('carries several items when given them', () => {
    const items = [errorItem('H111', 'type'), errorItem('H114', 'recipient')]
    const body = new GatewayError('H111', { items }).toBody()
    expect(body.errors.map(i => [i.code, i.location])).toEqual([['H111', ['type']], ['H114', ['recipient']]])
  })
})

describe('answer-level codes', () => {
  it('set the status of an answer whose items carry codes of their own, and stay out of the body', () => {
    const items = [{ index: 0, ...errorItem('H085') }, { index: 2, ...errorItem('H194') }]
    const e = new GatewayError('INVALID_ITEMS', { items })
    expect(e.status).toBe(422) // though H085 alone is a 400
    expect(e.toBody()).toEqual({ errors: items })
    const push = new GatewayError('INVALID_PUSH', { items: [errorItem('INVALID_FIELD', 'list', undefined, ERRORS.INVALID_PUSH.message)] })
    expect(push.status).toBe(400) // though INVALID_FIELD alone is a 422
    expect(push.toBody().errors.map(i => i.code)).toEqual(['INVALID_FIELD'])
  })
})

describe('error classes', () => {
  const SRC = fileURLToPath(new URL('../src/', import.meta.url))
  const LOADERS = fileURLToPath(new URL('../loaders/', import.meta.url))
  const sources = (dir: string): string[] => existsSync(dir)
    ? readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter(f => f.endsWith('.ts')).map(f => join(dir, f))
    : []
  // Classes still deriving from Error directly, in files other work of issue 9 is moving now; empty it as they go.
  it('all derive from CodedError, the one base that carries a stable code', () => {
    const direct: string[] = []
    for (const file of [...sources(SRC), ...sources(LOADERS)]) {
      for (const m of readFileSync(file, 'utf8').matchAll(/class (\w+)(?:<[^{]*?>)? extends Error\b/g)) direct.push(m[1]!)
    }
    expect(direct).toEqual(['CodedError'])
  })

  it('carry their codes: GatewayError an ERRORS code, the internal ones a code of INTERNAL_ERRORS', () => {
    expect(new GatewayError('H117')).toBeInstanceOf(CodedError)
    const internal = [new StoreTimeoutError(50), new VersionGoneError(3), new ConfigError('PORT must be a number')]
    expect(internal.map(e => [e instanceof CodedError, e.name, e.code])).toEqual([
      [true, 'StoreTimeoutError', 'STORE_TIMEOUT'], [true, 'VersionGoneError', 'VERSION_GONE'], [true, 'ConfigError', 'CONFIG_INVALID']
    ])
    for (const e of internal) expect(INTERNAL_ERRORS).toContain(e.code)
    expect(INTERNAL_ERRORS.filter(c => c in ERRORS)).toEqual([])
    expect(new Set(INTERNAL_ERRORS).size).toBe(INTERNAL_ERRORS.length)
  })

  it('are told apart by errorCode, which falls back to the name of any other error', () => {
    expect(errorCode(new VersionGoneError(1))).toBe('VERSION_GONE')
    expect(errorCode(new GatewayError('NOT_FOUND'))).toBe('NOT_FOUND')
    expect(errorCode(new TypeError('x'))).toBe('TypeError')
    expect(errorCode('a string')).toBe('Error')
    expect(errorCode(null)).toBe('Error')
  })
})

describe('a scrub chunk whose filter version went away', () => {
  it('runs again on the version served now, not answering STORE_UNAVAILABLE', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-errors-'))
    try {
      writeFileSync(join(dir, 'in.csv'), 'recipient\n+905326000001\n+905326000002\n')
      const bloom = new BloomFilter(new ArrayBuffer(BLOCK_BYTES * BLOOM_SEGMENTS))
      bloom.words.fill(0xffffffff) // "maybe" for every key: every line asks the exact store
      // A load flipped to version 2 and dropped version 1 while the chunk was reading it.
      const served: FilterView = { version: 2, bloom, buckets: 1, lookup: async (fields) => fields.map(() => null) }
      let current: FilterView = { version: 1, bloom, buckets: 1, lookup: async () => { current = served; throw new VersionGoneError(1) } }
      const totals = emptyTotals()
      await scrubFile({
        getView: () => current,
        policy: { tacirAllowedWithoutRecord: true, storeFailureMode: 'closed' },
        pool: null,
        chunkLines: 100,
        threads: 1,
        log: pino({ level: 'silent' })
      }, join(dir, 'in.csv'), join(dir, 'out.csv'), { brandCode: '600001', type: 'MESAJ', recipientType: 'BIREYSEL', commercial: true }, 'csv', totals)
      const reasons = readFileSync(join(dir, 'out.csv'), 'utf8').trimEnd().split('\n').slice(1).map(l => l.split(',')[3])
      expect(reasons).toEqual(['NO_CONSENT', 'NO_CONSENT']) // not STORE_UNAVAILABLE from the version that went away
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
