// Poison input for the fault suite: the exact bodies of issue 8's defects, and a seeded fuzz of raw HTTP requests
// over every route. Requests are written byte for byte on a net.Socket, because fetch would normalise exactly the
// things we want to send (bad percent-encoding, invalid UTF-8, duplicate or wrong Content-Length, odd headers).

import { connect } from 'node:net'
import { mulberry32 } from '../../src/util/random.js'
import { isDocumented5xx } from './fault-truth.js'

/** `status` null: no answer, either `closed` by the server or given up after the timeout. */
export interface RawAnswer { status: number | null, body: string, ms: number, timedOut: boolean }

/** Sends one raw request (Connection: close is the caller's to add) and reads until the server closes or `timeoutMs`. */
export function sendRaw (port: number, request: Buffer, timeoutMs = 3000): Promise<RawAnswer> {
  return new Promise(resolve => {
    const t0 = Date.now()
    const chunks: Buffer[] = []
    const sock = connect(port, '127.0.0.1')
    let done = false
    let timedOut = false
    // Interim answers (100 Continue) come before the real one.
    const final = (): string => Buffer.concat(chunks).toString('latin1').replace(/^(HTTP\/1\.[01] 1\d\d[^\r]*\r\n(?:[^\r]+\r\n)*\r\n)+/, '')
    const finish = (): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      sock.destroy()
      const text = final()
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text)
      const sep = text.indexOf('\r\n\r\n')
      resolve({ status: m === null ? null : Number(m[1]), body: sep < 0 ? '' : Buffer.from(text.slice(sep + 4), 'latin1').toString('utf8'), ms: Date.now() - t0, timedOut })
    }
    const timer = setTimeout(() => { timedOut = true; finish() }, timeoutMs)
    sock.on('data', (d: Buffer) => {
      chunks.push(d)
      // One answer is all we wait for: a complete head plus a body of its Content-Length.
      const text = final()
      const sep = text.indexOf('\r\n\r\n')
      if (sep < 0) return
      const cl = /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, sep))
      if (cl !== null && Buffer.byteLength(text.slice(sep + 4), 'latin1') >= Number(cl[1])) finish()
    })
    sock.on('error', finish)
    sock.on('close', finish)
    sock.write(request)
  })
}

export function rawRequest (method: string, path: string, headers: [string, string][], body: Buffer | string = '', opts: { contentLength?: 'auto' | 'none' | 'duplicate' | number } = {}): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close']
  for (const [k, v] of headers) lines.push(`${k}: ${v}`)
  const cl = opts.contentLength ?? 'auto'
  if (cl === 'auto') lines.push(`Content-Length: ${b.length}`)
  else if (cl === 'duplicate') lines.push(`Content-Length: ${b.length}`, `Content-Length: ${b.length}`)
  else if (typeof cl === 'number') lines.push(`Content-Length: ${cl}`)
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), b])
}

export const PUSH_USER = 'iys'
export const PUSH_PASSWORD = 'fault-pw'
const BASIC = 'Basic ' + Buffer.from(`${PUSH_USER}:${PUSH_PASSWORD}`).toString('base64')
const SP = '/sps/700001/brands/600001'
const JSON_CT: [string, string] = ['Content-Type', 'application/json']

export interface PoisonCase { name: string, request: Buffer, /** what a right answer looks like */ expect: '4xx' | 'not-200' | 'any' }

const nested = (depth: number, leaf = '"+905321234567"'): string => '['.repeat(depth) + leaf + ']'.repeat(depth)

/** `Authorization: Bearer <apiKey>`: every route but the probes and the push receiver (basic auth) needs a key. */
const bearer = (apiKey: string): [string, string] => ['Authorization', `Bearer ${apiKey}`]

/**
 * The bodies and paths of issue 8's defects 1, 3, 4, 5 and 9, as written there, sent with `apiKey` (so that they
 * reach the handlers, not only the router's 401).
 */
export function defectCases (scrubBytes: number, apiKey: string): PoisonCase[] {
  const key = bearer(apiKey)
  const post = (path: string, body: string, headers: [string, string][] = [JSON_CT, key]): Buffer => rawRequest('POST', path, headers, body)
  const get = (path: string): Buffer => rawRequest('GET', path, [key])
  const consent = (extra: Record<string, unknown>): string => JSON.stringify({ recipient: '+905321234567', type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: '2024-01-01 10:00:00', recipientType: 'BIREYSEL', ...extra })
  const push = (item: unknown): string => JSON.stringify({ list: [item] })
  const pushItem = { iysCode: 700001, brandCode: 600001, consentDate: '2025-05-05 12:00:00', creationDate: '2025-05-05 12:00:05', source: 'IYS_KISAMESAJ', recipient: '+905321234567', recipientType: 'BIREYSEL', status: 'RET', type: 'MESAJ', transactionId: 'f'.repeat(64) }
  return [
    // 1: a malformed path parameter on every route that has one
    { name: 'd1 GET /v1/scrub/%', request: get('/v1/scrub/%'), expect: '4xx' },
    { name: 'd1 GET /v1/scrub/%/result', request: get('/v1/scrub/%/result'), expect: '4xx' },
    { name: 'd1 POST /sps/%ZZ/brands/1/consents', request: post('/sps/%ZZ/brands/1/consents', consent({})), expect: '4xx' },
    { name: 'd1 GET …/consents/request/%E0%A4%A', request: get(`${SP}/consents/request/%E0%A4%A`), expect: '4xx' },
    { name: 'd1 POST …/consents/%ZZ/status/MESAJ', request: post(`${SP}/consents/%ZZ/status/MESAJ`, '{"recipients":["+905321234567"]}'), expect: '4xx' },
    { name: 'd1 POST /sps/700001/brands/%/consents/status', request: post('/sps/700001/brands/%/consents/status', '{}'), expect: '4xx' },
    // 3: a NUL byte (and the other bytes COPY cares about) in free text that reaches the decision log
    { name: 'd3 check recipient "x\\u0000"', request: post('/v1/check', '{"brandCode":600001,"type":"MESAJ","recipient":"x\\u0000"}'), expect: 'any' },
    { name: 'd3 check recipients with \\t \\n \\r \\\\ \\b', request: post('/v1/check', JSON.stringify({ brandCode: 600001, type: 'MESAJ', recipients: ['a\tb', 'a\nb', 'a\rb', 'a\\b', 'a\bb', '\\.', '\\N', 'x\u0000y'] })), expect: 'any' },
    { name: 'd3 check recipient object with NUL', request: post('/v1/check', '{"brandCode":600001,"type":"MESAJ","recipient":{"a":"\\u0000"}}'), expect: 'any' },
    { name: 'd3 messages recipient "x\\u0000"', request: post('/v1/messages', JSON.stringify({ iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: true, messages: [{ recipient: 'x\u0000', sender: 'ACME', text: 'T\u0000' }] })), expect: 'any' },
    // 4: one bad push item, and a NUL inside a pushed string
    { name: 'd4 push {"list":[null]}', request: post('/iys/push', '{"list":[null]}', [JSON_CT, ['Authorization', BASIC]]), expect: 'any' },
    { name: 'd4 push with \\u0000 in a string', request: post('/iys/push', push({ ...pushItem, source: 'IYS_\u0000' }), [JSON_CT, ['Authorization', BASIC]]), expect: 'any' },
    { name: 'd4 push list of junk', request: post('/iys/push', JSON.stringify({ list: [1, 'x', [], {}, { recipient: null }, true] }), [JSON_CT, ['Authorization', BASIC]]), expect: 'any' },
    { name: 'd4 consent with \\u0000', request: post(`${SP}/consents`, consent({ recipient: '+90532\u00001234567' })), expect: '4xx' },
    { name: 'd4 consent request with \\u0000', request: post(`${SP}/consents/request`, '[' + consent({ source: 'HS_\u0000' }) + ']'), expect: '4xx' },
    // 5: a scrub upload without line breaks
    { name: `d5 scrub upload of ${scrubBytes} bytes without a line break`, request: rawRequest('POST', '/v1/scrub?brandCode=600001&type=MESAJ', [['Content-Type', 'text/csv'], key], Buffer.alloc(scrubBytes, 0x35)), expect: 'any' },
    // 9: deep nesting, duplicate Content-Length
    { name: 'd9 check recipients nested 20,000 deep', request: post('/v1/check', `{"brandCode":600001,"type":"MESAJ","recipients":[${nested(20_000)}]}`), expect: '4xx' },
    { name: 'd9 check recipient nested 20,000 deep', request: post('/v1/check', `{"brandCode":600001,"type":"MESAJ","recipient":${nested(20_000)}}`), expect: '4xx' },
    { name: 'd9 check recipient object nested 5,000 deep', request: post('/v1/check', `{"brandCode":600001,"type":"MESAJ","recipient":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`), expect: '4xx' },
    { name: 'd9 messages recipient nested 20,000 deep', request: post('/v1/messages', `{"iysCode":700001,"brandCode":600001,"type":"MESAJ","commercial":true,"messages":[{"recipient":${nested(20_000)},"sender":"A","text":"T"}]}`), expect: '4xx' },
    { name: 'd9 duplicate Content-Length', request: rawRequest('POST', '/v1/check', [JSON_CT, key], '{"brandCode":600001,"type":"MESAJ","recipient":"+905321234567"}', { contentLength: 'duplicate' }), expect: 'not-200' },
    { name: 'd9 two different Content-Length', request: Buffer.concat([Buffer.from(`POST /v1/check HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n${key.join(': ')}\r\nContent-Length: 5\r\nContent-Length: 64\r\n\r\n`), Buffer.from('{"brandCode":600001,"type":"MESAJ","recipient":"+905321234567"}')]), expect: 'not-200' }
  ]
}

// ---------------------------------------------------------------------------------------------------------------
// The fuzz: seeded, every route, random JSON shapes and raw bytes.

interface Route { method: string, path: () => string, json: boolean, fields: readonly string[] }

const FIELDS = {
  check: ['brandCode', 'type', 'recipientType', 'commercial', 'recipient', 'recipients'],
  messages: ['iysCode', 'brandCode', 'type', 'recipientType', 'commercial', 'messages', 'recipient', 'messageId', 'sender', 'text', 'from', 'subject', 'body', 'callerId'],
  consent: ['recipient', 'type', 'source', 'status', 'consentDate', 'recipientType', 'retailerCode', 'retailerAccess'],
  push: ['list', 'iysCode', 'brandCode', 'consentDate', 'creationDate', 'source', 'recipient', 'recipientType', 'status', 'type', 'transactionId'],
  none: [] as string[]
}

const BAD_SEGMENTS = ['%', '%Z', '%ZZ', '%E0%A4%A', '%00', '%FF', '%C3%28', '%ED%A0%80', '%%', '%2', '%2F..%2F', '..', '%u0041', 'a%20b', '\u00ff', '\u0000']

/** `count` seeded cases; each carries `apiKey` unless the fuzz chose an Authorization header of its own. */
export function fuzzCases (count: number, seed: number, apiKey: string): PoisonCase[] {
  const rnd = mulberry32(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
  const seg = (valid: string): string => {
    const r = rnd()
    if (r < 0.45) return valid
    if (r < 0.8) return pick(BAD_SEGMENTS)
    if (r < 0.9) return valid + pick(BAD_SEGMENTS)
    return 'x'.repeat(1 + Math.floor(rnd() * 5000))
  }
  const routes: Route[] = [
    { method: 'POST', path: () => '/v1/check', json: true, fields: FIELDS.check },
    { method: 'POST', path: () => '/v1/messages', json: true, fields: FIELDS.messages },
    { method: 'POST', path: () => `/sps/${seg('700001')}/brands/${seg('600001')}/consents`, json: true, fields: FIELDS.consent },
    { method: 'POST', path: () => `/sps/${seg('700001')}/brands/${seg('600001')}/consents/request`, json: true, fields: FIELDS.consent },
    { method: 'GET', path: () => `/sps/${seg('700001')}/brands/${seg('600001')}/consents/request/${seg('a1b2c3')}`, json: false, fields: FIELDS.none },
    { method: 'POST', path: () => `/sps/${seg('700001')}/brands/${seg('600001')}/consents/status`, json: true, fields: FIELDS.consent },
    { method: 'POST', path: () => `/sps/${seg('700001')}/brands/${seg('600001')}/consents/${seg('BIREYSEL')}/status/${seg('MESAJ')}`, json: true, fields: ['recipients'] },
    { method: 'POST', path: () => '/iys/push', json: true, fields: FIELDS.push },
    { method: 'POST', path: () => `/v1/scrub?brandCode=${seg('600001')}&type=${seg('MESAJ')}&jobId=${seg('fz' + Math.floor(rnd() * 1e6))}`, json: false, fields: FIELDS.none },
    { method: 'GET', path: () => `/v1/scrub/${seg('nojob')}`, json: false, fields: FIELDS.none },
    { method: 'GET', path: () => `/v1/scrub/${seg('nojob')}/result?only=${seg('allowed')}`, json: false, fields: FIELDS.none },
    { method: 'GET', path: () => '/v1/scrub', json: false, fields: FIELDS.none },
    { method: 'GET', path: () => `/v1/consents/history?brandCode=${seg('600001')}&type=${seg('MESAJ')}&recipient=${seg('%2B905321234567')}`, json: false, fields: FIELDS.none },
    { method: 'GET', path: () => `/v1/evidence?brandCode=${seg('600001')}&type=${seg('MESAJ')}&recipient=${seg('x')}`, json: false, fields: FIELDS.none },
    { method: 'GET', path: () => `/v1/consents/state?brandCode=${seg('600001')}&recipient=${seg('x')}`, json: false, fields: FIELDS.none },
    { method: 'GET', path: () => pick(['/healthz', '/readyz', '/metrics', '/nope', '/' + seg('x'), '/v1/' + seg('check')]), json: false, fields: FIELDS.none }
  ]

  const str = (): string => {
    const r = rnd()
    if (r < 0.15) return pick(['MESAJ', 'ARAMA', 'EPOSTA', 'BIREYSEL', 'TACIR', 'ONAY', 'RET', 'HS_WEB', 'IYS_KISAMESAJ', '2024-01-01 10:00:00', '+905321234567', 'a@b.co'])
    if (r < 0.3) return 'x\u0000' + pick(['', 'y', '\u0000'])
    if (r < 0.4) return '\ud800' + pick(['', 'a', '\udc00\udc00'])
    if (r < 0.5) return pick(['\t', '\n', '\r', '\\', '\\N', '\\.', '"', '\u2028', '\u00ff\u00fe', '🙂', '\u0130\u0131', '%', '%ZZ'])
    if (r < 0.55) return 'y'.repeat(Math.floor(rnd() * 70_000))
    return Math.floor(rnd() * 1e12).toString(36)
  }
  const num = (): string => pick(['0', '-0', '1', '-1', '600001', '700001', '1e308', '1e400', '-1e400', '123456789012345678901234567890', '0.5', '1.0e-400', '9007199254740993', '6e5', '0x10', 'NaN', 'Infinity'])
  const value = (depth: number, fields: readonly string[]): string => {
    const r = rnd()
    if (depth > 4 || r < 0.3) {
      const leaf = rnd()
      if (leaf < 0.4) return JSON.stringify(str())
      if (leaf < 0.75) return num()
      return pick(['true', 'false', 'null', '""', '[]', '{}'])
    }
    if (r < 0.62) {
      // now and then a list over the 1000-item limits, of small leaves (a list of lists would grow without bound)
      if (rnd() < 0.05) return '[' + Array.from({ length: 990 + Math.floor(rnd() * 20) }, () => rnd() < 0.5 ? num() : '"+9053212345' + Math.floor(rnd() * 100) + '"').join(',') + ']'
      const n = Math.floor(rnd() * 6)
      return '[' + Array.from({ length: n }, () => value(depth + 1, fields)).join(',') + ']'
    }
    if (r < 0.68) return rnd() < 0.5 ? '['.repeat(3000) + ']'.repeat(3000) : '{"a":'.repeat(2000) + '1' + '}'.repeat(2000)
    return object(depth + 1, fields)
  }
  const object = (depth: number, fields: readonly string[]): string => {
    const n = Math.floor(rnd() * 8)
    const parts: string[] = []
    for (let i = 0; i < n; i++) {
      const k = fields.length > 0 && rnd() < 0.8 ? pick(fields) : str().slice(0, 40)
      parts.push(JSON.stringify(k) + ':' + value(depth, fields))
    }
    return '{' + parts.join(',') + '}'
  }
  const body = (route: Route): Buffer => {
    const r = rnd()
    if (!route.json && route.method === 'POST') {
      // scrub uploads: CSV-ish lines, a long line, raw bytes
      if (r < 0.4) return Buffer.from(Array.from({ length: Math.floor(rnd() * 50) }, () => pick(['+905321234567', 'x', '', '"', '\u0000', '5'.repeat(5000)])).join(pick(['\n', '\r\n', '\r', ''])))
      return Buffer.from(Array.from({ length: Math.floor(rnd() * 400) }, () => Math.floor(rnd() * 256)))
    }
    if (route.method === 'GET' && r < 0.8) return Buffer.alloc(0)
    if (r < 0.6) return Buffer.from(object(0, route.fields), 'utf8')
    if (r < 0.7) return Buffer.from(value(0, route.fields), 'utf8')
    if (r < 0.8) { const s = object(0, route.fields); return Buffer.from(s.slice(0, Math.floor(rnd() * s.length)), 'utf8') } // truncated
    if (r < 0.9) {
      // invalid UTF-8 inside a JSON string
      const bad = [Buffer.from([0xc3, 0x28]), Buffer.from([0xff]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xe0, 0xa4]), Buffer.from([0xf4, 0x90, 0x80, 0x80])]
      return Buffer.concat([Buffer.from('{"brandCode":600001,"type":"MESAJ","recipient":"'), pick(bad), Buffer.from('"}')])
    }
    return Buffer.from(Array.from({ length: Math.floor(rnd() * 200) }, () => Math.floor(rnd() * 256)))
  }
  const headers = (route: Route, path: string): [string, string][] => {
    const h: [string, string][] = []
    const r = rnd()
    if (route.json) h.push(['Content-Type', r < 0.75 ? 'application/json' : pick(['text/plain', 'application/json; charset=latin1', 'application/jsonx', '', '\u00ff', 'multipart/form-data'])])
    else if (route.method === 'POST') h.push(['Content-Type', pick(['text/csv', 'application/x-ndjson', 'text/plain', 'application/json', 'image/png'])])
    if (path.startsWith('/iys/push') || rnd() < 0.1) h.push(['Authorization', rnd() < 0.6 ? BASIC : pick(['Basic', 'Basic !!!', 'Basic ' + Buffer.from(':').toString('base64'), 'Bearer x', 'Basic ' + 'A'.repeat(9000)])])
    if (rnd() < 0.05) h.push(['X-Long', 'v'.repeat(Math.floor(rnd() * 12_000))])
    if (rnd() < 0.03) h.push([pick(['Bad Header', 'X-\u00ff', 'X-Nul']), pick(['\u00ff', 'a', ''])])
    if (rnd() < 0.03) h.push(['Transfer-Encoding', pick(['chunked', 'gzip', 'chunked, chunked'])])
    if (rnd() < 0.03) h.push(['Expect', '100-continue'])
    return h
  }
  const out: PoisonCase[] = []
  for (let i = 0; i < count; i++) {
    const route = pick(routes)
    const method = rnd() < 0.95 ? route.method : pick(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'GE T', 'POST'])
    const path = route.path()
    const b = body(route)
    const r = rnd()
    const cl = r < 0.9 ? 'auto' : r < 0.94 ? 'duplicate' : r < 0.97 ? 'none' : Math.max(0, b.length - 3)
    const hs = headers(route, path)
    if (!hs.some(([k]) => k === 'Authorization')) hs.push(bearer(apiKey))
    out.push({ name: `fuzz #${i} ${method} ${path.slice(0, 60)}`, request: rawRequest(method, path, hs, b, { contentLength: cl }), expect: 'any' })
  }
  return out
}

export interface BurstFigures {
  sent: number
  byStatus: Record<string, number>
  /** connections the server closed without an answer (a request it could not parse), and requests given up on */
  noAnswer: number
  timedOut: number
  durationMs: number
  bad5xx: number
  /** cases whose expectation (4xx / not 200) was not met */
  unmet: number
  /** cases after which the gateway process was found dead (it was restarted to go on) */
  killers: string[]
  samples: string[]
}

/** Sends cases with bounded concurrency; counts statuses, undocumented 5xx and unmet expectations. */
export async function burst (port: number, cases: PoisonCase[], concurrency: number, timeoutMs = 3000,
  /** after each case (told whether it was answered): true when the case killed the server (the callback restarts it) */
  afterCase?: (answered: boolean) => Promise<boolean>): Promise<BurstFigures> {
  const f: BurstFigures = { sent: 0, byStatus: {}, noAnswer: 0, timedOut: 0, durationMs: 0, bad5xx: 0, unmet: 0, killers: [], samples: [] }
  const t0 = Date.now()
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < cases.length) {
      const c = cases[next++]!
      const a = await sendRaw(port, c.request, timeoutMs)
      f.sent++
      const key = a.status === null ? 'none' : String(a.status)
      f.byStatus[key] = (f.byStatus[key] ?? 0) + 1
      if (a.status === null && !a.timedOut) f.noAnswer++
      if (a.timedOut) { f.timedOut++; if (a.status === null && f.samples.length < 15) f.samples.push(`${c.name.slice(0, 90)} → no answer within ${timeoutMs} ms`) }
      const bad = a.status !== null && a.status >= 500 && !isDocumented5xx(a.status, a.body)
      if (bad) f.bad5xx++
      const unmet = (c.expect === '4xx' && (a.status === null || a.status < 400 || a.status >= 500)) || (c.expect === 'not-200' && a.status === 200)
      if (unmet) f.unmet++
      if ((bad || unmet) && f.samples.length < 15) f.samples.push(`${c.name.slice(0, 90)} → ${a.status ?? 'no answer'} ${a.body.slice(0, 160)}`)
      if (afterCase !== undefined && await afterCase(a.status !== null)) f.killers.push(c.name.slice(0, 120))
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  f.durationMs = Date.now() - t0
  return f
}
