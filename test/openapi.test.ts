// GET /openapi.json is a true description of the gateway's own API. The document is checked on its own (an OpenAPI
// 3.1 shape, every schema compiles under ajv's strict 2020-12 dialect, every $ref resolves, every example fits its
// schema), against the router (every route that is not İYS-shaped has an operation and every operation a route,
// with the router's scopes), and against real answers: gateways (embedded; Postgres + Redis) are driven through
// every operation, to success and to the errors that can be provoked (400 401 403 404 405 409 413 415 422 429 503
// 507), and each answer's status, media type and body are validated against the document. An answer whose status
// the document does not list fails.

import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import addFormatsModule from 'ajv-formats'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKey, newKey } from '../src/auth/keys.js'
import { SCOPES } from '../src/auth/principal.js'
import { signUnsubscribe } from '../src/auth/unsubscribe-tokens.js'
import { ERRORS } from '../src/domain/errors.js'
import { startFakeCarrier, type FakeCarrier } from '../src/dev/fake-carrier.js'
import { OPENAPI_DOCUMENT } from '../src/http/openapi.js'
import { bearer, DEMO_API_KEY } from './helpers/auth.js'
import { runSteps } from './helpers/cli.js'
import { TcpProxy } from './helpers/tcp-proxy.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

// ajv-formats is CommonJS: its default export is the plugin (module.exports) at run time.
const addFormats = ((addFormatsModule as unknown as { default?: unknown }).default ?? addFormatsModule) as (ajv: Ajv2020) => Ajv2020

type Doc = Record<string, any>
const DOC = JSON.parse(JSON.stringify(OPENAPI_DOCUMENT)) as Doc
const BASE = 'https://iys-gateway.invalid/openapi.json'
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const

/** İYS's own API: documented by İYS's specification, not by ours. */
const isIysShaped = (pattern: string): boolean => /^\/(v2\/)?sps\/|^\/oauth2\/|^\/iys\//.test(pattern)

const pointer = (...parts: string[]): string => '#/' + parts.map(p => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/')

function resolvePointer (ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`${ref}: only local references are used`)
  let node: unknown = DOC
  for (const raw of ref.slice(2).split('/')) {
    const part = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~')
    if (node === null || typeof node !== 'object' || !(part in (node as object))) throw new Error(`${ref} does not resolve (at ${part})`)
    node = (node as Record<string, unknown>)[part]
  }
  return node
}

/** Every operation of the document: "GET /v1/scrub/{jobId}" → its object. */
const OPERATIONS = new Map<string, Doc>()
for (const [path, item] of Object.entries(DOC.paths as Doc)) {
  for (const m of METHODS) if (item[m] !== undefined) OPERATIONS.set(`${m.toUpperCase()} ${path}`, item[m])
}

// ---- ajv over the document ---------------------------------------------------------------------------------------

// strictRequired off: a oneOf branch's `required` names properties its parent schema defines (CheckRequest).
const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true })
addFormats(ajv)
// The document's own words at its root are not schema keywords; its schemas are reached by pointer below.
ajv.addVocabulary(['openapi', 'info', 'servers', 'paths', 'components', 'tags', 'security', 'webhooks', 'externalDocs', 'jsonSchemaDialect'])
ajv.addSchema(DOC, BASE)
const compiled = new Map<string, ValidateFunction>()
const validatorAt = (ref: string): ValidateFunction => {
  let v = compiled.get(ref)
  if (v === undefined) compiled.set(ref, v = ajv.compile({ $ref: BASE + ref }))
  return v
}

/** Every place the document holds a schema, by pointer: parameters, bodies, answers, headers, components. */
function schemaLocations (): string[] {
  const out: string[] = []
  for (const name of Object.keys(DOC.components.schemas)) out.push(pointer('components', 'schemas', name))
  for (const name of Object.keys(DOC.components.headers ?? {})) out.push(pointer('components', 'headers', name, 'schema'))
  const responses = (base: string[], rs: Doc): void => {
    for (const [status, r] of Object.entries(rs)) {
      for (const type of Object.keys(r.content ?? {})) out.push(pointer(...base, status, 'content', type, 'schema'))
      for (const [h, header] of Object.entries((r.headers ?? {}) as Doc)) if (header.$ref === undefined) out.push(pointer(...base, status, 'headers', h, 'schema'))
    }
  }
  responses(['components', 'responses'], DOC.components.responses)
  for (const [path, item] of Object.entries(DOC.paths as Doc)) {
    for (const m of METHODS) {
      const op = item[m]
      if (op === undefined) continue
      ;(op.parameters ?? []).forEach((_: unknown, i: number) => out.push(pointer('paths', path, m, 'parameters', String(i), 'schema')))
      for (const type of Object.keys(op.requestBody?.content ?? {})) out.push(pointer('paths', path, m, 'requestBody', 'content', type, 'schema'))
      responses(['paths', path, m, 'responses'], op.responses)
    }
  }
  return out
}

/** Every example in the document with the schema it illustrates. */
function examples (): Array<{ where: string, schema: string, value: unknown }> {
  const out: Array<{ where: string, schema: string, value: unknown }> = []
  const media = (base: string[], content: Doc | undefined): void => {
    for (const [type, m] of Object.entries(content ?? {})) {
      const schema = pointer(...base, type, 'schema')
      if (m.example !== undefined) out.push({ where: schema, schema, value: m.example })
      for (const [name, e] of Object.entries((m.examples ?? {}) as Doc)) out.push({ where: `${schema} (${name})`, schema, value: e.value })
    }
  }
  for (const [status, r] of Object.entries(DOC.components.responses as Doc)) media(['components', 'responses', status, 'content'], r.content)
  for (const [path, item] of Object.entries(DOC.paths as Doc)) {
    for (const m of METHODS) {
      const op = item[m]
      if (op === undefined) continue
      ;(op.parameters ?? []).forEach((p: Doc, i: number) => { if (p.example !== undefined) out.push({ where: `${path} ${p.name}`, schema: pointer('paths', path, m, 'parameters', String(i), 'schema'), value: p.example }) })
      media(['paths', path, m, 'requestBody', 'content'], op.requestBody?.content)
      for (const [status, r] of Object.entries(op.responses as Doc)) media(['paths', path, m, 'responses', status, 'content'], r.content)
    }
  }
  return out
}

// ---- validating real answers ---------------------------------------------------------------------------------

interface Answer { status: number, contentType: string, headers: Record<string, string>, text: string, json: any }

/** What the answers of this run covered: "GET /readyz 503", "components NotFound", … */
const seen = new Set<string>()

/**
 * Validates a real answer against `what`: an operation ("POST /v1/check") or a shared answer of the document
 * ("#NotFound"). The status must be documented, the media type one the document lists for it, the body valid.
 */
function conforms (what: string, a: Answer): void {
  let response: Doc
  let base: string[]
  if (what.startsWith('#')) {
    base = ['components', 'responses', what.slice(1)]
    response = DOC.components.responses[what.slice(1)]
    expect(response, `${what} is not in components.responses`).toBeDefined()
  } else {
    const op = OPERATIONS.get(what)
    expect(op, `${what} is not a documented operation`).toBeDefined()
    const [method, path] = what.split(' ') as [string, string]
    expect(Object.keys(op!.responses), `${what} answered ${a.status}, which the document does not list: ${a.text.slice(0, 300)}`).toContain(String(a.status))
    base = ['paths', path, method.toLowerCase(), 'responses', String(a.status)]
    response = op!.responses[String(a.status)]
  }
  const content = (response.content ?? {}) as Doc
  const mediaType = a.contentType.split(';')[0]!.trim().toLowerCase()
  if (Object.keys(content).length === 0) {
    expect(a.text, `${what} ${a.status} documents no body`).toBe('')
  } else {
    expect(Object.keys(content), `${what} ${a.status} answered ${a.contentType}`).toContain(mediaType)
    const validate = validatorAt(pointer(...base, 'content', mediaType, 'schema'))
    const body = mediaType === 'application/json' ? JSON.parse(a.text) : a.text
    if (!validate(body)) throw new Error(`${what} ${a.status}: the answer does not fit the document: ${ajv.errorsText(validate.errors)}\n${a.text.slice(0, 600)}`)
  }
  for (const [name, h] of Object.entries((response.headers ?? {}) as Doc)) {
    const value = a.headers[name.toLowerCase()]
    if (value === undefined) continue
    const schema = (h.$ref !== undefined ? resolvePointer(h.$ref) as Doc : h).schema as Doc
    const v = ajv.compile(schema)
    expect(v(schema.type === 'integer' ? Number(value) : value), `${what} ${a.status} header ${name}: ${value}`).toBe(true)
  }
  seen.add(`${what} ${a.status}`)
}

async function call (base: string, method: string, path: string, opts: { key?: string | null, body?: string, contentType?: string, accept?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = {}
  if (opts.key !== null && opts.key !== undefined) headers.authorization = bearer(opts.key).authorization
  if (opts.contentType !== undefined) headers['content-type'] = opts.contentType
  if (opts.accept !== undefined) headers.accept = opts.accept
  const res = await fetch(base + path, { method, headers, body: opts.body })
  const text = await res.text()
  const h: Record<string, string> = {}
  res.headers.forEach((v, k) => { h[k] = v })
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', headers: h, text, json: mediaIsJson(res.headers.get('content-type')) && text !== '' ? JSON.parse(text) : null }
}
const mediaIsJson = (type: string | null): boolean => (type ?? '').startsWith('application/json')

/** Calls operation `op` (its path filled in as `path`) and validates the answer; returns it. */
async function exercise (base: string, op: string, path: string, opts: Parameters<typeof call>[3] = {}): Promise<Answer> {
  const a = await call(base, op.split(' ')[0]!, path, opts)
  conforms(op, a)
  return a
}

const codeOf = (a: Answer): string => a.json?.errors?.[0]?.code

/**
 * One HTTP/1.1 exchange over a raw socket, for what fetch cannot send: two Content-Length headers, a body declared
 * but not sent. Resolves with the answer (framed by its Content-Length) or when the connection closes.
 */
function rawExchange (socket: Socket, request: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    const done = (): boolean => {
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return false
      const head = buf.subarray(0, end).toString('latin1').split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of head.slice(1)) { const i = line.indexOf(':'); headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim() }
      const length = Number(headers['content-length'] ?? 'NaN')
      if (!Number.isFinite(length) || buf.length < end + 4 + length) return false
      const text = buf.subarray(end + 4, end + 4 + length).toString('utf8')
      socket.off('data', onData)
      resolve({ status: Number(head[0]!.split(' ')[1]), contentType: headers['content-type'] ?? '', headers, text, json: mediaIsJson(headers['content-type'] ?? null) ? JSON.parse(text) : null })
      return true
    }
    const onData = (d: Buffer): void => { buf = Buffer.concat([buf, d]); done() }
    socket.on('data', onData)
    socket.once('error', reject)
    socket.once('close', () => { if (!done()) reject(new Error(`connection closed without a whole answer: ${buf.toString('latin1').slice(0, 200)}`)) })
    socket.write(request)
  })
}

async function openSocket (url: string): Promise<Socket> {
  const { hostname, port } = new URL(url)
  const s = connect({ host: hostname, port: Number(port) })
  await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject) })
  return s
}

async function until (what: string, fn: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

/** İYS's date format, Turkey time, now. */
const nowTr = (): string => new Date(Date.now() + 3 * 3_600_000).toISOString().replace('T', ' ').slice(0, 19)

// ---- the document on its own ------------------------------------------------------------------------------------

describe('the OpenAPI document', () => {
  it('is an OpenAPI 3.1 document with info, paths, the bearer scheme and unique operation ids', () => {
    expect(DOC.openapi).toMatch(/^3\.1\.\d+$/)
    expect(typeof DOC.info.title).toBe('string')
    expect(typeof DOC.info.version).toBe('string')
    expect(DOC.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' })
    const ids = [...OPERATIONS.values()].map(op => op.operationId)
    expect(new Set(ids).size).toBe(ids.length)
    for (const [name, op] of OPERATIONS) {
      expect(typeof op.operationId, name).toBe('string')
      expect(typeof op.summary, name).toBe('string')
      expect(Object.keys(op.responses).length, name).toBeGreaterThan(0)
      for (const [status, r] of Object.entries(op.responses as Doc)) {
        expect(status, name).toMatch(/^[1-5]\d\d$/)
        expect(typeof r.description, `${name} ${status}`).toBe('string')
      }
      expect(Object.keys(op.responses).some(s => s.startsWith('2')), `${name} has a success answer`).toBe(true)
    }
  })

  it('declares every path parameter its template names, and only those', () => {
    for (const [name, op] of OPERATIONS) {
      const path = name.split(' ')[1]!
      const inTemplate = [...path.matchAll(/\{([^}]+)\}/g)].map(m => m[1]).sort()
      const declared = (op.parameters ?? []).filter((p: Doc) => p.in === 'path').map((p: Doc) => p.name).sort()
      expect(declared, name).toEqual(inTemplate)
      for (const p of op.parameters ?? []) {
        expect(['query', 'header', 'path', 'cookie'], name).toContain(p.in)
        expect(p.schema, `${name} ${p.name}`).toBeDefined()
        if (p.in === 'path') expect(p.required, `${name} ${p.name}`).toBe(true)
      }
    }
  })

  it('says who may call each operation: public, or the bearer scheme with known scopes', () => {
    for (const [name, op] of OPERATIONS) {
      expect(Array.isArray(op.security), `${name} states its security`).toBe(true)
      for (const req of op.security) {
        expect(Object.keys(req), name).toEqual(['apiKey'])
        for (const scope of req.apiKey) expect(SCOPES, name).toContain(scope)
      }
    }
  })

  it('resolves every $ref', () => {
    const refs: string[] = []
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk)
      else if (node !== null && typeof node === 'object') {
        for (const [k, v] of Object.entries(node)) if (k === '$ref' && typeof v === 'string') refs.push(v); else walk(v)
      }
    }
    walk(DOC)
    expect(refs.length).toBeGreaterThan(20)
    for (const r of refs) expect(() => resolvePointer(r), r).not.toThrow()
  })

  it('compiles every schema in it with ajv (JSON Schema 2020-12, strict)', () => {
    const locations = schemaLocations()
    expect(locations.length).toBeGreaterThan(50)
    for (const at of locations) expect(() => validatorAt(at), at).not.toThrow()
  })

  it('has examples that fit their schemas', () => {
    const all = examples()
    expect(all.length).toBeGreaterThan(30)
    for (const e of all) {
      const v = validatorAt(e.schema)
      expect(v(e.value), `${e.where}: ${ajv.errorsText(v.errors)}`).toBe(true)
    }
  })

  it('lists, for every error answer, codes whose status is that answer\'s', () => {
    for (const [name, op] of OPERATIONS) {
      for (const [status, r] of Object.entries(op.responses as Doc)) {
        if (!/^[45]/.test(status)) continue
        const schema = r.content['application/json'].schema
        const codes: string[] = (schema.anyOf?.find((s: Doc) => s.properties?.errors !== undefined) ?? schema).properties.errors.items.properties.code.enum
        for (const code of codes) expect(ERRORS[code as keyof typeof ERRORS].status, `${name} ${status} ${code}`).toBe(Number(status))
      }
    }
  })

  it('refuses, through the checks below, an answer with an undocumented status or a body that does not fit', () => {
    const ok = { status: 200, contentType: 'application/json; charset=utf-8', headers: {}, text: '{"status":"ok"}', json: { status: 'ok' } }
    expect(() => { conforms('GET /healthz', ok) }).not.toThrow()
    expect(() => { conforms('GET /healthz', { ...ok, status: 418 }) }).toThrow(/does not list/)
    expect(() => { conforms('GET /healthz', { ...ok, text: '{"status":"fine"}' }) }).toThrow(/does not fit/)
    expect(() => { conforms('GET /healthz', { ...ok, contentType: 'text/plain' }) }).toThrow()
    const err = { ...ok, status: 422, text: '{"errors":[{"code":"NOT_FOUND","message":"x"}]}' }
    expect(() => { conforms('POST /v1/check', err) }).toThrow(/does not fit/) // a code that answer cannot carry
    seen.clear()
  })
})

// ---- the route table --------------------------------------------------------------------------------------------

/** Whether a router pattern (":param", a final "*") serves a documented path ("{param}"). */
function patternServes (pattern: string, docPath: string): boolean {
  const p = pattern.split('/')
  const d = docPath.split('/')
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '*' && i === p.length - 1) return d.length >= p.length
    if (i >= d.length) return false
    if (p[i]!.startsWith(':') ? !/^\{.+\}$/.test(d[i]!) : p[i] !== d[i]) return false
  }
  return p.length === d.length
}

/** Every route of `gw` that is not İYS-shaped has an operation, every operation a route, with the router's scopes. */
function expectRoutesDocumented (gw: RunningGateway): void {
  const routes = gw.gw.routes().filter(r => !isIysShaped(r.pattern))
  expect(routes.map(r => r.pattern)).toContain('/openapi.json')
  for (const r of routes) {
    const ops = [...OPERATIONS.entries()].filter(([name]) => name.split(' ')[0] === r.method && patternServes(r.pattern, name.split(' ')[1]!))
    expect(ops.length, `${r.method} ${r.pattern} has no operation in the document`).toBeGreaterThan(0)
    for (const [name, op] of ops) {
      const scopes = (op.security as Doc[]).flatMap(req => req.apiKey as string[])
      if (r.scopes === null) expect(scopes, `${name} is public`).toEqual([])
      else expect([...new Set(scopes)].sort(), name).toEqual([...new Set([...r.scopes, 'admin'])].sort())
    }
  }
  for (const name of OPERATIONS.keys()) {
    const [method, path] = name.split(' ') as [string, string]
    expect(routes.some(r => r.method === method && patternServes(r.pattern, path)), `${name} is documented but not served`).toBe(true)
  }
}

// ---- real answers: the embedded gateway --------------------------------------------------------------------------

const SEED = `iysCode,brandCode,recipient,recipientType,type,status,source,consentDate
700001,600001,+905327000001,BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00
700001,600001,+905327000002,BIREYSEL,MESAJ,RET,IYS_KISAMESAJ,2024-02-01 10:00:00
`
const UNSUBSCRIBE_SECRET = 'the openapi test unsubscribe secret of 32+ characters'
const ONE_CLICK = 'List-Unsubscribe=One-Click'
const ONAY = '+905327000001'
const RET = '+905327000002'

describe('real answers of an embedded gateway fit the document', () => {
  let dir: string
  let carrier: FakeCarrier
  let gw: RunningGateway
  const key = DEMO_API_KEY
  const post = (op: string, path: string, body: unknown, opts: Parameters<typeof call>[3] = {}): Promise<Answer> =>
    exercise(gw.url, op, path, { key, contentType: 'application/json', body: typeof body === 'string' ? body : JSON.stringify(body), ...opts })
  const get = (op: string, path: string, opts: Parameters<typeof call>[3] = {}): Promise<Answer> => exercise(gw.url, op, path, { key, ...opts })

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'iys-openapi-'))
    writeFileSync(join(dir, 'seed.csv'), SEED)
    carrier = await startFakeCarrier({ port: 0 })
    gw = await startTestGateway({
      EMBEDDED_SEED_FILE: join(dir, 'seed.csv'),
      UPSTREAM_MESAJ_URL: carrier.url,
      MAX_BODY_BYTES: '4096',
      SCRUB_MAX_BYTES: String(4 << 20),
      SCRUB_MAX_TOTAL_BYTES: String(1 << 20),
      SCRUB_MAX_UPLOADS_PER_CLIENT: '1',
      SMTP_UNSUBSCRIBE_SECRETS: UNSUBSCRIBE_SECRET
    })
  })

  afterAll(async () => {
    await gw?.close()
    await carrier?.close()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  it('serves the document at GET /openapi.json without a key', async () => {
    const a = await exercise(gw.url, 'GET /openapi.json', '/openapi.json')
    expect(a.status).toBe(200)
    expect(a.json).toEqual(DOC)
  })

  it('documents every route the embedded gateway registers, and no other', () => {
    expectRoutesDocumented(gw)
  })

  it('POST /v1/check: every reason, a batch, and the request errors', async () => {
    const single = await post('POST /v1/check', '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: ONAY })
    expect(single.json.results[0]).toMatchObject({ reason: 'CONSENT', consent: { status: 'ONAY' } })
    const batch = await post('POST /v1/check', '/v1/check', { brandCode: '600001', type: 'MESAJ', recipients: [ONAY, RET, '+905327000003', 'nope', 42, null] })
    expect(batch.json.results.map((r: Doc) => r.reason)).toEqual(['CONSENT', 'REJECTED', 'NO_CONSENT', 'INVALID_RECIPIENT', 'INVALID_RECIPIENT', 'INVALID_RECIPIENT'])
    const more = [
      await post('POST /v1/check', '/v1/check', { brandCode: 600001, type: 'MESAJ', recipientType: 'TACIR', recipient: '+905327000004' }),
      await post('POST /v1/check', '/v1/check', { brandCode: 600001, type: 'EPOSTA', commercial: false, recipient: 'Info@Example.com' }),
      await post('POST /v1/check', '/v1/check', { brandCode: 600001, type: 'EPOSTA', recipient: '+905327000001' })
    ]
    expect(more.map(a => a.json.results[0].reason)).toEqual(['TACIR_NO_RECORD', 'INFORMATIONAL', 'INVALID_RECIPIENT'])

    const errors: Array<[unknown, number, string]> = [
      ['{"brandCode": 600001, ', 400, 'H014'],
      ['', 400, 'H1042'],
      ['['.repeat(40) + ']'.repeat(40), 400, 'JSON_TOO_DEEP'],
      [{ type: 'MESAJ', recipient: ONAY }, 422, 'MISSING_FIELD'],
      [{ brandCode: 'abc', type: 'MESAJ', recipient: ONAY }, 422, 'INVALID_BRAND_CODE'],
      [{ brandCode: 600001, recipient: ONAY }, 422, 'H111'],
      [{ brandCode: 600001, type: 'FAX', recipient: ONAY }, 422, 'H117'],
      [{ brandCode: 600001, type: 'MESAJ', recipientType: 'X', recipient: ONAY }, 422, 'H116'],
      [{ brandCode: 600001, type: 'MESAJ' }, 422, 'H114'],
      [{ brandCode: 600001, type: 'MESAJ', recipient: ONAY, extra: 1 }, 422, 'INVALID_FIELD'],
      [{ brandCode: 600001, type: 'MESAJ', recipients: Array.from({ length: 1001 }, () => 1) }, 413, 'BODY_TOO_LARGE'],
      [{ brandCode: 600001, type: 'MESAJ', recipients: Array.from({ length: 1001 }, () => 1) }, 422, 'TOO_MANY_RECIPIENTS']
    ]
    for (const [body, status, code] of errors) {
      // 1001 one-digit recipients fit MAX_BODY_BYTES (4096); padded, they do not.
      const text = code === 'BODY_TOO_LARGE' ? JSON.stringify(body) + ' '.repeat(4096) : typeof body === 'string' ? body : JSON.stringify(body)
      const a = await post('POST /v1/check', '/v1/check', text)
      expect([a.status, codeOf(a)], text.slice(0, 80)).toEqual([status, code])
    }
    const media = await post('POST /v1/check', '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: ONAY }, { contentType: 'text/plain' })
    expect([media.status, codeOf(media)]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE'])
    const none = await post('POST /v1/check', '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: ONAY }, { key: null })
    expect([none.status, codeOf(none)]).toEqual([401, 'UNAUTHORIZED'])
    const wrong = await post('POST /v1/check', '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: ONAY }, { key: 'ik_0000000000000000.wrong' })
    expect(wrong.status).toBe(401)
  })

  it('two Content-Length headers are 400 BAD_CONTENT_LENGTH', async () => {
    const s = await openSocket(gw.url)
    const body = JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipient: ONAY })
    const a = await rawExchange(s, `POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    s.destroy()
    conforms('POST /v1/check', a)
    expect([a.status, codeOf(a)]).toEqual([400, 'BAD_CONTENT_LENGTH'])
  })

  it('POST /v1/messages: forwarded, blocked, no carrier for the channel, and the request errors', async () => {
    const sent = await post('POST /v1/messages', '/v1/messages', {
      iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: true,
      messages: [{ messageId: 'oa-1', recipient: ONAY, sender: 'ACME', text: 'hi' }, { recipient: RET, sender: 'ACME', text: 'hi' }, { recipient: 'x', sender: 'ACME', text: 'hi' }]
    })
    expect(sent.json.results.map((r: Doc) => [r.reason, r.forwarded, r.carrier?.status])).toEqual([['CONSENT', true, 'accepted'], ['REJECTED', false, undefined], ['INVALID_RECIPIENT', false, undefined]])
    const mail = await post('POST /v1/messages', '/v1/messages', {
      iysCode: '700001', brandCode: '600001', type: 'EPOSTA', commercial: false, messages: [{ recipient: 'a.b@example.com', from: 'x@acme.example', subject: 's', body: 'b' }]
    })
    expect(mail.json.results[0]).toMatchObject({ allowed: true, forwarded: false, carrier: { status: 'no_upstream', maybeDelivered: false } })
    const base = { iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: true, messages: [{ recipient: ONAY, sender: 'ACME', text: 'hi' }] }
    for (const [body, status, code] of [
      [{ ...base, commercial: undefined }, 422, 'MISSING_FIELD'],
      [{ ...base, messages: [{ recipient: ONAY }] }, 422, 'INVALID_FIELD'],
      [{ ...base, type: 'FAX' }, 422, 'H117'],
      ['nope', 400, 'H014']
    ] as Array<[unknown, number, string]>) {
      const a = await post('POST /v1/messages', '/v1/messages', body)
      expect([a.status, codeOf(a)]).toEqual([status, code])
    }
    const none = await post('POST /v1/messages', '/v1/messages', base, { key: null })
    expect(none.status).toBe(401)
  })

  it('the scrub routes: upload, progress, listing, result, and their refusals', async () => {
    const jobId = 'oa-' + randomUUID().slice(0, 8)
    const csv = `recipient\n${ONAY}\n${RET}\n+905327000003\nnot-a-phone\n${ONAY}\n`
    const up = await exercise(gw.url, 'POST /v1/scrub', `/v1/scrub?brandCode=600001&type=MESAJ&jobId=${jobId}`, { key, contentType: 'text/csv', body: csv })
    expect(up.json).toEqual({ jobId })
    await until('the scrub job to finish', async () => (await call(gw.url, 'GET', `/v1/scrub/${jobId}`, { key })).json.state === 'done')
    const job = await get('GET /v1/scrub/{jobId}', `/v1/scrub/${jobId}`)
    expect(job.json.totals).toMatchObject({ read: 5, allowed: 1, duplicates: 1 })
    const list = await get('GET /v1/scrub', '/v1/scrub')
    expect(list.json.jobs.map((j: Doc) => j.jobId)).toContain(jobId)
    const result = await get('GET /v1/scrub/{jobId}/result', `/v1/scrub/${jobId}/result`)
    expect(result.text.split('\n')[0]).toBe('recipient,normalized,allowed,reason,line,duplicateOf')
    const blocked = await get('GET /v1/scrub/{jobId}/result', `/v1/scrub/${jobId}/result?only=blocked`)
    expect(blocked.text).not.toContain(',true,')
    const ndjson = await exercise(gw.url, 'POST /v1/scrub', '/v1/scrub?brandCode=600001&type=MESAJ&commercial=false', { key, contentType: 'application/x-ndjson', body: `"${ONAY}"\n{"recipient":"${RET}"}\n` })
    expect(ndjson.status).toBe(202)

    const refusals: Array<[string, Parameters<typeof call>[3], number, string]> = [
      [`/v1/scrub?brandCode=600001&type=MESAJ&jobId=${jobId}`, { contentType: 'text/csv', body: csv }, 409, 'JOB_EXISTS'],
      ['/v1/scrub?brandCode=600001&type=FAX', { contentType: 'text/csv', body: csv }, 422, 'H117'],
      ['/v1/scrub?brandCode=600001&type=MESAJ&commercial=maybe', { contentType: 'text/csv', body: csv }, 422, 'INVALID_FIELD'],
      ['/v1/scrub?type=MESAJ', { contentType: 'text/csv', body: csv }, 422, 'INVALID_BRAND_CODE'],
      ['/v1/scrub?brandCode=600001&type=MESAJ', { contentType: 'application/json', body: '[]' }, 415, 'UNSUPPORTED_MEDIA_TYPE'],
      ['/v1/scrub?brandCode=600001&type=MESAJ', { contentType: 'text/csv', body: csv, key: null }, 401, 'UNAUTHORIZED']
    ]
    for (const [path, opts, status, code] of refusals) {
      const a = await exercise(gw.url, 'POST /v1/scrub', path, { key, ...opts })
      expect([a.status, codeOf(a)], path).toEqual([status, code])
    }

    // Declared sizes over SCRUB_MAX_BYTES (4 MiB) and over SCRUB_MAX_TOTAL_BYTES (1 MiB): refused before the body.
    for (const [bytes, status, code] of [[5 << 20, 413, 'BODY_TOO_LARGE'], [2 << 20, 507, 'STORAGE_FULL']] as const) {
      const s = await openSocket(gw.url)
      const a = await rawExchange(s, `POST /v1/scrub?brandCode=600001&type=MESAJ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: text/csv\r\nContent-Length: ${bytes}\r\n\r\nrecipient\n`)
      s.destroy()
      conforms('POST /v1/scrub', a)
      expect([a.status, codeOf(a)]).toEqual([status, code])
    }

    // An upload in progress holds this key's one upload (SCRUB_MAX_UPLOADS_PER_CLIENT=1); broken off, it fails its job.
    const stuck = `oa-stuck-${randomUUID().slice(0, 8)}`
    const s = await openSocket(gw.url)
    s.on('error', () => {})
    s.write(`POST /v1/scrub?brandCode=600001&type=MESAJ&jobId=${stuck} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: text/csv\r\nContent-Length: 1000\r\n\r\nrecipient\n${ONAY}\n`)
    await until('the upload to start', async () => (await call(gw.url, 'GET', `/v1/scrub/${stuck}`, { key })).status === 200)
    const busy = await exercise(gw.url, 'POST /v1/scrub', '/v1/scrub?brandCode=600001&type=MESAJ', { key, contentType: 'text/csv', body: csv })
    expect([busy.status, codeOf(busy)]).toEqual([429, 'TOO_MANY_UPLOADS'])
    const uploading = await get('GET /v1/scrub/{jobId}', `/v1/scrub/${stuck}`)
    expect(uploading.json.state).toBe('uploading')
    s.destroy()
    await until('the broken upload to fail its job', async () => (await call(gw.url, 'GET', `/v1/scrub/${stuck}`, { key })).json.state === 'failed')
    const failed = await get('GET /v1/scrub/{jobId}', `/v1/scrub/${stuck}`)
    expect(failed.json.reason).toMatch(/broke off/)
    const notReady = await get('GET /v1/scrub/{jobId}/result', `/v1/scrub/${stuck}/result`)
    expect([notReady.status, codeOf(notReady)]).toEqual([409, 'RESULT_NOT_READY'])

    for (const [op, path, status, code] of [
      ['GET /v1/scrub/{jobId}', '/v1/scrub/no-such-job', 404, 'NOT_FOUND'],
      ['GET /v1/scrub/{jobId}', '/v1/scrub/%ZZ', 400, 'MALFORMED_PATH'],
      ['GET /v1/scrub/{jobId}/result', '/v1/scrub/no-such-job/result', 404, 'NOT_FOUND'],
      ['GET /v1/scrub/{jobId}/result', `/v1/scrub/${jobId}/result?only=some`, 422, 'INVALID_FIELD'],
      ['GET /v1/scrub', '/v1/scrub', 401, 'UNAUTHORIZED']
    ] as const) {
      const a = await get(op, path, status === 401 ? { key: null } : {})
      expect([a.status, codeOf(a)], path).toEqual([status, code])
    }
  })

  it('the ledger routes answer 503 NOT_CONFIGURED without DATABASE_URL', async () => {
    const q = `brandCode=600001&type=MESAJ&recipient=${encodeURIComponent(ONAY)}`
    for (const op of ['GET /v1/consents/history', 'GET /v1/consents/state', 'GET /v1/evidence']) {
      const a = await get(op, `${op.split(' ')[1]}?${q}`)
      expect([a.status, codeOf(a)], op).toEqual([503, 'NOT_CONFIGURED'])
    }
  })

  it('the unsubscribe page shows, and its POST answers 503 NOT_CONFIGURED without DATABASE_URL', async () => {
    const path = `/v1/unsubscribe/${signUnsubscribe(UNSUBSCRIBE_SECRET, { iysCode: '700001', brandCode: '600001', recipient: 'oa@example.com' })}`
    expect((await exercise(gw.url, 'GET /v1/unsubscribe/{token}', path)).status).toBe(200)
    const a = await exercise(gw.url, 'POST /v1/unsubscribe/{token}', path, { contentType: 'application/x-www-form-urlencoded', body: ONE_CLICK })
    expect([a.status, codeOf(a)]).toEqual([503, 'NOT_CONFIGURED'])
  })

  it('the operations routes, and the answers for unknown paths and methods', async () => {
    expect((await exercise(gw.url, 'GET /healthz', '/healthz')).json).toEqual({ status: 'ok' })
    expect((await exercise(gw.url, 'GET /readyz', '/readyz')).json.ready).toBe(true)
    expect((await exercise(gw.url, 'GET /metrics', '/metrics')).text).toContain('iys_http_requests_total')
    const missing = await call(gw.url, 'GET', '/v1/nothing', { key })
    conforms('#NotFound', missing)
    expect(missing.status).toBe(404)
    const method = await call(gw.url, 'GET', '/v1/check', { key })
    conforms('#MethodNotAllowed', method)
    expect(method.status).toBe(405)
  })
})

describe('a gateway that is shutting down', () => {
  it('answers requests on open connections 503 SERVICE_UNAVAILABLE, as documented', async () => {
    const gw = await startTestGateway({})
    const sockets = await Promise.all([0, 1, 2].map(() => openSocket(gw.url)))
    const closing = gw.close()
    const body = JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipient: ONAY })
    const answers = await Promise.all([
      rawExchange(sockets[0]!, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'),
      rawExchange(sockets[1]!, 'GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n'),
      rawExchange(sockets[2]!, `POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${DEMO_API_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`)
    ])
    for (const s of sockets) s.destroy()
    await closing
    const ops = ['GET /healthz', 'GET /readyz', 'POST /v1/check']
    answers.forEach((a, i) => {
      conforms(ops[i]!, a)
      expect([a.status, codeOf(a)], ops[i]).toEqual([503, 'SERVICE_UNAVAILABLE'])
    })
  })
})

// ---- real answers: a gateway with Postgres and Redis --------------------------------------------------------------

describe('real answers of a gateway with Postgres and Redis fit the document', () => {
  let services: TestServicesWithRedis
  let proxy: TcpProxy
  let gw: RunningGateway
  let checkOnly: string
  let otherBrand: string
  let slow: string
  const RECIPIENT = '+905321230001'
  const q = (more = ''): string => `brandCode=600001&type=MESAJ&recipient=${encodeURIComponent(RECIPIENT)}${more}`

  beforeAll(async () => {
    services = await testServices({ redis: true, migrate: true, dirPrefix: 'iys-openapi-db-' })
    // Postgres through a proxy, to cut it at the end. No automatic rebuild: the gateway is not ready until `load`
    // runs (below), so /readyz answers 503 first.
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    const databaseUrl = `postgres://postgres@127.0.0.1:${proxy.port}/${services.db.name}`
    gw = await startTestGateway({ ...services.env, DATABASE_URL: databaseUrl, AUTO_REBUILD: 'false', AUTH_POLL_MS: '50', DECISION_FLUSH_MS: '50', SMTP_UNSUBSCRIBE_SECRETS: UNSUBSCRIBE_SECRET })
    checkOnly = (await createKey(services.pool, newKey({ iysCode: '700001', scopes: 'check', rate: '0' }))).apiKey
    otherBrand = (await createKey(services.pool, newKey({ iysCode: '700001', brandCodes: '600002', rate: '0' }))).apiKey
    slow = (await createKey(services.pool, newKey({ iysCode: '700001', scopes: 'consents:read', rate: '1' }))).apiKey
    for (const k of [checkOnly, otherBrand, slow]) await until('the new keys to be loaded', async () => (await call(gw.url, 'GET', '/v1/scrub', { key: k })).status !== 401)
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await proxy?.cut()
    await services?.close()
  })

  it('documents every route the gateway registers with Postgres, and no other', () => {
    expectRoutesDocumented(gw)
  })

  it('/readyz: 503 with the reason before the first filter version, 200 after load', async () => {
    const before = await exercise(gw.url, 'GET /readyz', '/readyz')
    expect(before.status).toBe(503)
    expect(before.json.ready).toBe(false)
    // A consent written through the İYS-shaped API, then the filter built from Postgres.
    const write = await call(gw.url, 'POST', '/sps/700001/brands/600001/consents', {
      key: gw.apiKey, contentType: 'application/json', body: JSON.stringify({ recipient: RECIPIENT, recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: nowTr() })
    })
    expect(write.status, write.text).toBe(200)
    await runSteps([['load']], services.env)
    await until('the gateway to be ready', async () => (await call(gw.url, 'GET', '/readyz')).status === 200)
    expect((await exercise(gw.url, 'GET /readyz', '/readyz')).json.ready).toBe(true)
  }, 60_000)

  it('the ledger: history, state, evidence (JSON and HTML) and their errors', async () => {
    const checked = await exercise(gw.url, 'POST /v1/check', '/v1/check', { key: gw.apiKey, contentType: 'application/json', body: JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipient: RECIPIENT }) })
    expect(checked.json.results[0].reason).toBe('CONSENT')
    const sent = await exercise(gw.url, 'POST /v1/messages', '/v1/messages', { key: gw.apiKey, contentType: 'application/json', body: JSON.stringify({ iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: true, messages: [{ recipient: RECIPIENT, sender: 'ACME', text: 'hi' }] }) })
    expect(sent.json.results[0]).toMatchObject({ allowed: true, forwarded: false, carrier: { status: 'no_upstream' } })

    const history = await exercise(gw.url, 'GET /v1/consents/history', `/v1/consents/history?${q()}`, { key: gw.apiKey })
    expect(history.json.history).toHaveLength(1)
    const state = await exercise(gw.url, 'GET /v1/consents/state', `/v1/consents/state?${q()}`, { key: gw.apiKey })
    expect(state.json.state.status).toBe('ONAY')
    const before = await exercise(gw.url, 'GET /v1/consents/state', `/v1/consents/state?${q('&at=2020-01-01T00:00:00%2B03:00')}`, { key: gw.apiKey })
    expect(before.json.state).toBeNull()
    await until('the decisions to reach Postgres', async () => (await call(gw.url, 'GET', `/v1/evidence?${q()}`, { key: gw.apiKey })).json.decisions.length >= 2)
    const evidence = await exercise(gw.url, 'GET /v1/evidence', `/v1/evidence?${q()}`, { key: gw.apiKey })
    expect(evidence.json.decisions.map((d: Doc) => d.consent?.status)).toEqual(['ONAY', 'ONAY'])
    const html = await exercise(gw.url, 'GET /v1/evidence', `/v1/evidence?${q()}`, { key: gw.apiKey, accept: 'text/html' })
    expect(html.text).toContain('<!doctype html>')

    for (const [op, path, status, code] of [
      ['GET /v1/consents/history', '/v1/consents/history?brandCode=600001&type=MESAJ', 422, 'H114'],
      ['GET /v1/consents/history', '/v1/consents/history?brandCode=600001&type=MESAJ&recipient=12', 422, 'H121'],
      ['GET /v1/consents/history', `/v1/consents/history?brandCode=600001&type=EPOSTA&recipient=${encodeURIComponent(RECIPIENT)}`, 422, 'H464'],
      ['GET /v1/consents/history', '/v1/consents/history?brandCode=600001&type=EPOSTA&recipient=a@b', 422, 'H120'],
      ['GET /v1/consents/state', `/v1/consents/state?${q('&at=yesterday')}`, 422, 'INVALID_FIELD'],
      ['GET /v1/consents/state', `/v1/consents/state?brandCode=600001&type=MESAJ&recipientType=X&recipient=${encodeURIComponent(RECIPIENT)}`, 422, 'H116'],
      ['GET /v1/evidence', `/v1/evidence?brandCode=abc&type=MESAJ&recipient=${encodeURIComponent(RECIPIENT)}`, 422, 'INVALID_BRAND_CODE'],
      ['GET /v1/evidence', `/v1/evidence?brandCode=600001&recipient=${encodeURIComponent(RECIPIENT)}`, 422, 'H111'],
      ['GET /v1/evidence', `/v1/evidence?${q('&from=soon')}`, 422, 'INVALID_FIELD']
    ] as const) {
      const a = await exercise(gw.url, op, path, { key: gw.apiKey })
      expect([a.status, codeOf(a)], path).toEqual([status, code])
    }
  })

  it('the one-click unsubscribe: the page, the POST (twice), and their errors', async () => {
    const token = signUnsubscribe(UNSUBSCRIBE_SECRET, { iysCode: '700001', brandCode: '600001', recipient: 'oa@example.com' })
    const path = `/v1/unsubscribe/${token}`
    const form = { contentType: 'application/x-www-form-urlencoded', body: ONE_CLICK }
    expect((await exercise(gw.url, 'GET /v1/unsubscribe/{token}', path)).text).toContain('List-Unsubscribe')
    for (let i = 0; i < 2; i++) expect((await exercise(gw.url, 'POST /v1/unsubscribe/{token}', path, form)).status).toBe(200)
    for (const [op, p, opts, status, code] of [
      ['GET /v1/unsubscribe/{token}', '/v1/unsubscribe/nonsense', {}, 404, 'NOT_FOUND'],
      ['GET /v1/unsubscribe/{token}', '/v1/unsubscribe/%ZZ', {}, 400, 'MALFORMED_PATH'],
      ['POST /v1/unsubscribe/{token}', '/v1/unsubscribe/nonsense', form, 404, 'NOT_FOUND'],
      ['POST /v1/unsubscribe/{token}', path, { contentType: 'application/x-www-form-urlencoded', body: 'List-Unsubscribe=Yes' }, 422, 'INVALID_FIELD'],
      ['POST /v1/unsubscribe/{token}', path, { contentType: 'text/plain', body: 'x'.repeat(20_000) }, 413, 'BODY_TOO_LARGE']
    ] as const) {
      const a = await exercise(gw.url, op, p, opts)
      expect([a.status, codeOf(a)], `${op} ${p}`).toEqual([status, code])
    }
  })

  it('keys that may not: 401, 403 for a scope or a brand, 429 over the rate', async () => {
    const noKey = await exercise(gw.url, 'GET /v1/consents/history', `/v1/consents/history?${q()}`, { key: null })
    expect([noKey.status, codeOf(noKey)]).toEqual([401, 'UNAUTHORIZED'])
    for (const [op, path, k] of [
      ['GET /v1/evidence', `/v1/evidence?${q()}`, checkOnly],
      ['GET /v1/scrub', '/v1/scrub', checkOnly],
      ['GET /v1/consents/history', `/v1/consents/history?${q()}`, otherBrand],
      ['GET /v1/consents/state', `/v1/consents/state?${q()}`, checkOnly]
    ] as const) {
      const a = await exercise(gw.url, op, path, { key: k })
      expect([a.status, codeOf(a)], `${op} ${k.slice(0, 8)}`).toEqual([403, 'FORBIDDEN'])
    }
    const brand = await exercise(gw.url, 'POST /v1/check', '/v1/check', { key: otherBrand, contentType: 'application/json', body: JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipient: RECIPIENT }) })
    expect([brand.status, codeOf(brand)]).toEqual([403, 'FORBIDDEN'])
    let limited: Answer | null = null
    for (let i = 0; i < 50 && limited === null; i++) {
      const a = await exercise(gw.url, 'GET /v1/consents/history', `/v1/consents/history?${q()}`, { key: slow })
      if (a.status === 429) limited = a
    }
    expect(limited, 'a key of rate 1 is limited').not.toBeNull()
    expect(codeOf(limited!)).toBe('RATE_LIMITED')
    expect(Number(limited!.headers['retry-after'])).toBeGreaterThanOrEqual(1)
  })

  it('the ledger routes answer 503 DATABASE_UNAVAILABLE while Postgres does not answer (last: it cuts Postgres)', async () => {
    await proxy.cut()
    for (const op of ['GET /v1/consents/history', 'GET /v1/consents/state', 'GET /v1/evidence']) {
      let a: Answer | null = null
      await until(`${op} to answer 503`, async () => (a = await exercise(gw.url, op, `${op.split(' ')[1]}?${q()}`, { key: gw.apiKey })).status === 503)
      expect(codeOf(a!), op).toBe('DATABASE_UNAVAILABLE')
      expect(Number(a!.headers['retry-after']), op).toBeGreaterThanOrEqual(1)
    }
    const token = signUnsubscribe(UNSUBSCRIBE_SECRET, { iysCode: '700001', brandCode: '600001', recipient: 'oa@example.com' })
    const unsubscribe = await exercise(gw.url, 'POST /v1/unsubscribe/{token}', `/v1/unsubscribe/${token}`, { contentType: 'application/x-www-form-urlencoded', body: ONE_CLICK })
    expect([unsubscribe.status, codeOf(unsubscribe)]).toEqual([503, 'DATABASE_UNAVAILABLE'])
    expect(Number(unsubscribe.headers['retry-after'])).toBeGreaterThanOrEqual(1)
    conforms('GET /readyz', await call(gw.url, 'GET', '/readyz'))
  }, 30_000)
})

// ---- coverage ---------------------------------------------------------------------------------------------------

describe('the answers above', () => {
  it('covered every operation\'s success and the errors that can be provoked', () => {
    for (const [name, op] of OPERATIONS) {
      const ok = Object.keys(op.responses).filter(s => s.startsWith('2'))
      expect(ok.some(s => seen.has(`${name} ${s}`)), `${name}: no success answer was validated`).toBe(true)
    }
    const expected = [
      'POST /v1/check 400', 'POST /v1/check 401', 'POST /v1/check 403', 'POST /v1/check 413', 'POST /v1/check 415', 'POST /v1/check 422', 'POST /v1/check 503',
      'POST /v1/messages 400', 'POST /v1/messages 401', 'POST /v1/messages 422',
      'POST /v1/scrub 401', 'POST /v1/scrub 409', 'POST /v1/scrub 413', 'POST /v1/scrub 415', 'POST /v1/scrub 422', 'POST /v1/scrub 429', 'POST /v1/scrub 507',
      'GET /v1/scrub 401', 'GET /v1/scrub 403',
      'GET /v1/scrub/{jobId} 400', 'GET /v1/scrub/{jobId} 404',
      'GET /v1/scrub/{jobId}/result 404', 'GET /v1/scrub/{jobId}/result 409', 'GET /v1/scrub/{jobId}/result 422',
      'GET /v1/consents/history 401', 'GET /v1/consents/history 403', 'GET /v1/consents/history 422', 'GET /v1/consents/history 429', 'GET /v1/consents/history 503',
      'GET /v1/consents/state 403', 'GET /v1/consents/state 422', 'GET /v1/consents/state 503',
      'GET /v1/evidence 403', 'GET /v1/evidence 422', 'GET /v1/evidence 503',
      'GET /v1/unsubscribe/{token} 400', 'GET /v1/unsubscribe/{token} 404',
      'POST /v1/unsubscribe/{token} 404', 'POST /v1/unsubscribe/{token} 413', 'POST /v1/unsubscribe/{token} 422', 'POST /v1/unsubscribe/{token} 503',
      'GET /healthz 503', 'GET /readyz 503',
      '#NotFound 404', '#MethodNotAllowed 405'
    ]
    for (const e of expected) expect(seen.has(e), `${e} was not validated`).toBe(true)
  })
})
