// Bad input to POST /v1/check gets a clear error in İYS's body shape and changes nothing; per-recipient problems
// are per-item results, never request errors; and after all of it the gateway still answers. Runs against an
// in-process gateway on the embedded store, seeded from a small consent file written here.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ERRORS } from '../src/domain/errors.js'
import { authFor, startTestGateway, type RunningGateway } from './helpers/gateway.js'

const SEED = `iysCode,brandCode,recipient,recipientType,type,status,source,consentDate
700001,600001,+905327000001,BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00
700001,600001,+905327000002,BIREYSEL,MESAJ,RET,IYS_KISAMESAJ,2024-02-01 10:00:00
`
const LIMIT = 2048

let dir: string
let gw: RunningGateway
let small: RunningGateway

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'iys-http-errors-'))
  const seed = join(dir, 'seed.csv')
  writeFileSync(seed, SEED)
  gw = await startTestGateway({ EMBEDDED_SEED_FILE: seed })
  small = await startTestGateway({ EMBEDDED_SEED_FILE: seed, MAX_BODY_BYTES: String(LIMIT) })
})

afterAll(async () => {
  await gw?.close()
  await small?.close()
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

interface Answer { status: number, contentType: string | null, json: any }

async function post (body: unknown, opts: { base?: string, path?: string, contentType?: string, raw?: boolean } = {}): Promise<Answer> {
  const url = (opts.base ?? gw.url) + (opts.path ?? '/v1/check')
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': opts.contentType ?? 'application/json', ...authFor(url) },
    body: opts.raw === true ? body as string : JSON.stringify(body)
  })
  const text = await res.text()
  return { status: res.status, contentType: res.headers.get('content-type'), json: text === '' ? null : JSON.parse(text) }
}

/** Asserts an İYS-shaped error body with one item of `code`, and returns that item. */
function errorOf (a: Answer, status: number, code: string): { code: string, message: string, location?: string[], value?: unknown } {
  expect(a.status, JSON.stringify(a.json)).toBe(status)
  expect(a.contentType).toMatch(/^application\/json/)
  expect(a.json).toEqual({ errors: [expect.objectContaining({ code, message: expect.any(String) })] })
  const item = a.json.errors[0]
  expect(item.message.length).toBeGreaterThan(0)
  if (item.location !== undefined) expect(Array.isArray(item.location)).toBe(true)
  return item
}

const VALID = { brandCode: 600001, type: 'MESAJ', recipient: '+905327000001' }
const phone = (i: number): string => '+90532' + String(8_000_000 + i).padStart(7, '0')

describe('POST /v1/check: malformed bodies', () => {
  it('answers malformed JSON with 400 H014 in İYS\'s error shape', async () => {
    const item = errorOf(await post('{"brandCode": 600001, "type": ', { raw: true }), 400, 'H014')
    expect(item.message.startsWith(ERRORS.H014.message)).toBe(true)
  })

  it('answers an empty body with 400 H1042', async () => {
    const item = errorOf(await post('', { raw: true }), 400, 'H1042')
    expect(item.message).toBe(ERRORS.H1042.message)
  })

  it.each([
    ['a JSON array', '[{"brandCode":600001,"type":"MESAJ","recipient":"+905327000001"}]'],
    ['a JSON string', '"hello"'],
    ['a JSON number', '42'],
    ['JSON null', 'null']
  ])('answers %s with 422 INVALID_FIELD', async (_what, body) => {
    errorOf(await post(body, { raw: true }), 422, 'INVALID_FIELD')
  })
})

describe('POST /v1/check: fields', () => {
  it('answers a missing brandCode with 422 naming brandCode', async () => {
    const item = errorOf(await post({ type: 'MESAJ', recipient: '+905327000001' }), 422, 'MISSING_FIELD')
    expect(item.location).toEqual(['brandCode'])
  })

  it.each(['abc', -5, 1.5, 0, '000', '', null, true])('answers brandCode %j with 422 INVALID_BRAND_CODE', async (brandCode) => {
    const item = errorOf(await post({ ...VALID, brandCode }), 422, 'INVALID_BRAND_CODE')
    expect(item.location).toEqual(['brandCode'])
    expect(item.value).toEqual(brandCode)
  })

  it('accepts brandCode as a number or as a string of digits, zero-padded as İYS tokens write it', async () => {
    for (const brandCode of [600001, '600001', '0600001']) {
      const a = await post({ ...VALID, brandCode })
      expect(a.status).toBe(200)
      expect(a.json.results[0].reason).toBe('CONSENT')
    }
  })

  it('answers a missing type with 422 H111', async () => {
    const item = errorOf(await post({ brandCode: 600001, recipient: '+905327000001' }), 422, 'H111')
    expect(item.message).toBe(ERRORS.H111.message)
    expect(item.location).toEqual(['type'])
  })

  it('answers type "FAX" with 422 H117, location ["type"] and value "FAX"', async () => {
    const item = errorOf(await post({ ...VALID, type: 'FAX' }), 422, 'H117')
    expect(item).toEqual({ code: 'H117', message: ERRORS.H117.message, location: ['type'], value: 'FAX' })
  })

  it('answers a lower-case type with H117 (İYS values are case-sensitive)', async () => {
    errorOf(await post({ ...VALID, type: 'mesaj' }), 422, 'H117')
  })

  it('answers recipientType "KURUM" with 422 H116', async () => {
    const item = errorOf(await post({ ...VALID, recipientType: 'KURUM' }), 422, 'H116')
    expect(item.message).toBe(ERRORS.H116.message)
    expect(item.location).toEqual(['recipientType'])
    expect(item.value).toBe('KURUM')
  })

  it('answers commercial "yes" with 422 INVALID_FIELD at location commercial', async () => {
    const item = errorOf(await post({ ...VALID, commercial: 'yes' }), 422, 'INVALID_FIELD')
    expect(item.location).toEqual(['commercial'])
  })

  it('answers a body with both recipient and recipients with 422', async () => {
    errorOf(await post({ ...VALID, recipients: ['+905327000002'] }), 422, 'INVALID_FIELD')
  })

  it('answers a body with neither recipient nor recipients with 422 H114', async () => {
    const item = errorOf(await post({ brandCode: 600001, type: 'MESAJ' }), 422, 'H114')
    expect(item.location).toEqual(['recipient'])
  })

  it.each([
    ['a string', '+905327000001'],
    ['an object', { 0: '+905327000001' }],
    ['null', null],
    ['empty', []]
  ])('answers recipients that is %s with 422 at location recipients', async (_what, recipients) => {
    const item = errorOf(await post({ brandCode: 600001, type: 'MESAJ', recipients }), 422, 'INVALID_FIELD')
    expect(item.location).toEqual(['recipients'])
  })

  it('answers 1001 recipients with 422 TOO_MANY_RECIPIENTS', async () => {
    const recipients = Array.from({ length: 1001 }, (_, i) => phone(i))
    const item = errorOf(await post({ brandCode: 600001, type: 'MESAJ', recipients }), 422, 'TOO_MANY_RECIPIENTS')
    expect(item.location).toEqual(['recipients'])
  })

  it('answers exactly 1000 recipients with 200 and 1000 results in request order', async () => {
    const recipients = Array.from({ length: 1000 }, (_, i) => phone(i))
    // Put the seeded recipients at known places, in a non-canonical form, to see decisions land in the right slot.
    recipients[17] = '0532 700 00 01'
    recipients[998] = '05327000002'
    const a = await post({ brandCode: 600001, type: 'MESAJ', recipients })
    expect(a.status).toBe(200)
    const results = a.json.results as { recipient: string, normalized: string, reason: string }[]
    expect(results).toHaveLength(1000)
    expect(results.map(r => r.recipient)).toEqual(recipients)
    expect(results[0]!.normalized).toBe(phone(0))
    expect(results[999]!.normalized).toBe(phone(999))
    expect(results[17]).toMatchObject({ normalized: '+905327000001', reason: 'CONSENT' })
    expect(results[998]).toMatchObject({ normalized: '+905327000002', reason: 'REJECTED' })
    expect(results.filter(r => r.reason === 'NO_CONSENT')).toHaveLength(998)
  })

  it('answers an unknown field with 422 naming it', async () => {
    const item = errorOf(await post({ ...VALID, recipientTyp: 'TACIR' }), 422, 'INVALID_FIELD')
    expect(item.location).toEqual(['recipientTyp'])
    expect(item.message).toContain('recipientTyp')
  })

  it('answers a "__proto__" key as an unknown field, not as a prototype', async () => {
    const item = errorOf(await post('{"brandCode":600001,"type":"MESAJ","recipient":"+905327000001","__proto__":{"commercial":false}}', { raw: true }), 422, 'INVALID_FIELD')
    expect(item.location).toEqual(['__proto__'])
  })
})

describe('POST /v1/check: body size limit', () => {
  // A syntactically valid request that is larger than the limit: the size alone must refuse it.
  const bigBody = JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipients: Array.from({ length: 300 }, (_, i) => phone(i)) })

  it('the oversize body used here is really over the limit and valid otherwise', async () => {
    expect(Buffer.byteLength(bigBody)).toBeGreaterThan(LIMIT)
    expect((await post(bigBody, { raw: true })).status).toBe(200) // the normal gateway (1 MiB) takes it
  })

  it('answers a body over the limit with a Content-Length header with 413 BODY_TOO_LARGE', async () => {
    const item = errorOf(await post(bigBody, { base: small.url, raw: true }), 413, 'BODY_TOO_LARGE')
    expect(item.message).toContain(String(LIMIT))
  })

  it('answers a chunked body (no Content-Length) that grows over the limit with 413 BODY_TOO_LARGE', async () => {
    const a = await streamed(small.url, chunksUntilAnswered(Buffer.from(bigBody), 256))
    expect(a.sawContentLength).toBe(false)
    const item = errorOf({ status: a.status, contentType: a.contentType, json: JSON.parse(a.text) }, 413, 'BODY_TOO_LARGE')
    expect(item.message).toContain(String(LIMIT))
  })

  it('accepts a chunked body under the limit, assembled from several chunks', async () => {
    const body = JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipients: ['+905327000001', '+905327000002', '+905327000003'] })
    const a = await streamed(small.url, function * () {
      for (let i = 0; i < body.length; i += 20) yield Buffer.from(body.slice(i, i + 20))
    })
    expect(a.status, a.text).toBe(200)
    expect(JSON.parse(a.text).results.map((r: { reason: string }) => r.reason)).toEqual(['CONSENT', 'REJECTED', 'NO_CONSENT'])
  })

  it('accepts a body of exactly the limit with a Content-Length header', async () => {
    const base = JSON.stringify({ ...VALID })
    const body = base.slice(0, -1) + ' '.repeat(LIMIT - Buffer.byteLength(base)) + '}'
    expect(Buffer.byteLength(body)).toBe(LIMIT)
    const a = await post(body, { base: small.url, raw: true })
    expect(a.status).toBe(200)
    expect(a.json.results[0].reason).toBe('CONSENT')
  })
})

describe('routing and content type', () => {
  it('answers Content-Type text/plain with 415', async () => {
    errorOf(await post(VALID, { contentType: 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE')
  })

  it('answers GET /v1/check with 405', async () => {
    const res = await fetch(gw.url + '/v1/check')
    errorOf({ status: res.status, contentType: res.headers.get('content-type'), json: await res.json() }, 405, 'METHOD_NOT_ALLOWED')
  })

  it('answers an unknown path with 404 NOT_FOUND', async () => {
    for (const [method, path] of [['GET', '/v2/nothing'], ['POST', '/v1/checks'], ['DELETE', '/']]) {
      const res = await fetch(gw.url + path, { method })
      errorOf({ status: res.status, contentType: res.headers.get('content-type'), json: await res.json() }, 404, 'NOT_FOUND')
    }
  })
})

describe('per-recipient problems are items, not request errors', () => {
  const long = 'a'.repeat(288) + '@example.com' // 300 characters, over İYS's 265
  const longPhone = '5'.repeat(300)

  it.each([
    ['a number that is no phone number', 42],
    ['null', null],
    ['an object', { phone: '+905327000001' }],
    ['an array', ['+905327000001']],
    ['a 300-character e-mail address', long],
    ['a 300-digit string', longPhone],
    ['text that is no phone number', 'call me'],
    ['an empty string', '']
  ])('a recipient that is %s is INVALID_RECIPIENT with HTTP 200', async (_what, recipient) => {
    const a = await post({ brandCode: 600001, type: 'MESAJ', recipients: [recipient, '+905327000001'] })
    expect(a.status, JSON.stringify(a.json)).toBe(200)
    expect(a.json.results).toHaveLength(2)
    expect(a.json.results[0]).toMatchObject({ recipient, normalized: null, allowed: false, reason: 'INVALID_RECIPIENT', error: { code: expect.stringMatching(/^H\d+$/) } })
    // The good recipient beside it is decided as usual.
    expect(a.json.results[1]).toMatchObject({ recipient: '+905327000001', allowed: true, reason: 'CONSENT' })
  })

  it('a single invalid recipient (not a list) is an item too', async () => {
    const a = await post({ brandCode: 600001, type: 'MESAJ', recipient: { evil: true } })
    expect(a.status).toBe(200)
    expect(a.json.results).toEqual([expect.objectContaining({ recipient: { evil: true }, allowed: false, reason: 'INVALID_RECIPIENT' })])
  })

  it('an e-mail address checked for MESAJ is H464 for that item', async () => {
    const a = await post({ brandCode: 600001, type: 'MESAJ', recipients: ['Ali@Example.com'] })
    expect(a.status).toBe(200)
    expect(a.json.results[0]).toMatchObject({ normalized: 'ali@example.com', allowed: false, reason: 'INVALID_RECIPIENT', error: { code: 'H464' } })
  })

  it('echoes a recipient with quotes, backslashes and control characters as valid JSON', async () => {
    const nasty = '"},{"allowed":true\\\u0000\n\u2028ç'
    const a = await post({ brandCode: 600001, type: 'MESAJ', recipients: [nasty] })
    expect(a.status).toBe(200)
    expect(a.json.results).toHaveLength(1)
    expect(a.json.results[0]).toMatchObject({ recipient: nasty, allowed: false, reason: 'INVALID_RECIPIENT' })
  })
})

describe('after all of that', () => {
  it('the gateways still answer a valid check with 200', async () => {
    for (const base of [gw.url, small.url]) {
      const b = await post(VALID, { base })
      expect(b.status).toBe(200)
      expect(b.json).toEqual({ results: [{ recipient: '+905327000001', normalized: '+905327000001', allowed: true, reason: 'CONSENT', consent: { status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-15 10:00:00' } }] })
      expect((await fetch(base + '/healthz')).status).toBe(200)
    }
  })
})

// ---------------------------------------------------------------------------------------------------------------

interface StreamedAnswer { status: number, contentType: string | null, text: string, sawContentLength: boolean }

/** Yields `body` in `size`-byte chunks, then keeps sending filler so the stream goes on until the server answers. */
function chunksUntilAnswered (body: Buffer, size: number): () => Generator<Buffer> {
  return function * () {
    for (let i = 0; i < body.length; i += size) yield body.subarray(i, i + size)
    for (let i = 0; i < 1000; i++) yield Buffer.alloc(size, 0x20)
  }
}

/**
 * POSTs a body with chunked transfer-encoding (no Content-Length), one chunk every few milliseconds, and stops
 * sending as soon as an answer arrives. Ends the request when the chunks run out.
 */
function streamed (base: string, chunks: () => Generator<Buffer>): Promise<StreamedAnswer> {
  return new Promise((resolve, reject) => {
    const url = new URL(base + '/v1/check')
    let answered = false
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked', ...authFor(base) } })
    const sawContentLength = req.getHeader('content-length') !== undefined
    req.on('response', (res) => {
      answered = true
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => {
        resolve({ status: res.statusCode!, contentType: res.headers['content-type'] ?? null, text, sawContentLength })
        req.destroy()
      })
      res.on('error', reject)
    })
    // Once answered, the server may close while we are still writing: that is expected, not a failure.
    req.on('error', (err) => { if (!answered) reject(err) })
    void (async () => {
      for (const chunk of chunks()) {
        if (answered || req.destroyed) return
        req.write(chunk)
        await sleep(2)
      }
      if (!answered && !req.destroyed) req.end()
    })()
  })
}
