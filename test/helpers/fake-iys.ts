// A fake İYS API for the pull and the consent writes, written from the OpenAPI spec (../shared/reference/iys-openapi-3.2.0.json):
//   POST /oauth2/token                                    password and refresh_token grants (JSON or form body)
//   GET  /sps/{iysCode}/brands/{brandCode}/consents/changes   pages after `after`, ≤ `limit` (max 1000), 204 at the end
//   POST [/v2]/sps/{iysCode}/brands/{brandCode}/consents            one consent → {transactionId, creationDate}
//   POST [/v2]/sps/{iysCode}/brands/{brandCode}/consents/request    ≤ 1000 consents → 202 {requestId, subRequests}
//   GET  [/v2]/sps/{iysCode}/brands/{brandCode}/consents/request/{requestId}   per-item results (success/failure)
// Tokens expire after `expiresIn` seconds; an unknown or expired one gets 401 H351. Knobs inject rate-limit
// answers (429 H124/H083 on the pull, 429 H084 on the token endpoint) and other failures, expire every token, slow
// answers down; counters and a request log let tests assert what a client did.
//
// Writes follow İYS's state rules over the fake's own register (H175 a first RET, H174 the same status, H178 an older
// consentDate), plus refusals a test asks for by recipient (`refuseItems`). v2 keeps İYS's idempotency: a single
// consent re-sent unchanged gets the transactionId of the first, and a batch item identical to one already registered
// is answered success with that transactionId and `originalRequestInformation`; v1 answers a re-send with H174. A
// list that repeats a consent (recipientType, type, recipient) is refused whole with 422 H194.
// `registered` lists every transaction the fake recorded, so a test can assert that each consent arrived exactly
// once. `goDown('refuse' | 503)` / `comeBack()` simulate an outage; `writeFaults` answers the next write requests
// with a fault (e.g. 429 H124 with Retry-After); a batch's results appear `resultDelayMs` after it was posted.

import { randomBytes, randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FakeChange {
  consentDate?: string
  creationDate: string
  source: string
  recipient: string
  recipientType?: string
  status: string
  type: string
  transactionId: string
  [field: string]: unknown
}

export interface Fault {
  status: number
  code: string
  message?: string
  /** Retry-After header value, in seconds */
  retryAfter?: number
}

/** A consent as the write endpoints take it. */
export interface FakeConsent {
  consentDate: string
  source: string
  recipient: string
  recipientType: string
  status: string
  type: string
  [field: string]: unknown
}

/** One transaction the fake İYS recorded. */
export interface Registered {
  transactionId: string
  creationDate: string
  brandCode: string
  via: 'single' | 'batch'
  version: 'v1' | 'v2'
  requestId?: string
  consent: FakeConsent
}

interface ItemResult {
  requestId?: string
  subRequestId: string
  index: number
  status: 'success' | 'failure'
  transactionId?: string
  creationDate?: string
  error?: { code: string, message: string }
  isAddConsentV2Service?: string
  originalRequestInformation?: { requestId: string, subRequestId: string }
}

interface FakeRequest { requestId: string, brandCode: string, version: 'v1' | 'v2', readyAt: number, results: ItemResult[] }

export interface FakeIysOptions {
  username?: string
  password?: string
  iysCode?: string
  /** access token lifetime (s), default 7200 */
  expiresIn?: number
  /** refresh token lifetime (s), default 14400 */
  refreshExpiresIn?: number
  /** added before each changes answer (ms) */
  delayMs?: number
}

export interface RequestRecord {
  at: number
  kind: 'token' | 'changes' | 'consent' | 'request' | 'results' | 'other'
  /** consent writes: 'v1' or 'v2' */
  version?: 'v1' | 'v2'
  /** consent writes: the consents in the body */
  items?: number
  requestId?: string
  status: number
  grant?: string
  brandCode?: string
  after?: string | null
  limit?: number
  /** İYS code of an error answer */
  code?: string
}

const H351 = { errors: [{ message: 'Eksik veya geçersiz jeton!', code: 'H351' }] }
const MESSAGES: Record<string, string> = {
  H124: 'Saniyede kabul edilen istek limitine ulaşıldı. Lütfen daha sonra tekrar deneyiniz.',
  H083: 'Saniyede kabul edilen istek limitinine ulaşıldı. Lütfen daha sonra tekrar deneyiniz.',
  H084: 'Saatte kabul edilen kimlik doğrulama istek limitine ulaşıldı. Lütfen daha sonra tekrar deneyiniz.',
  H015: 'Beklenmedik bir hata oluştu!',
  H174: 'İzin durumu (status) güncellemesi için farklı bir durum girilmelidir.',
  H175: 'İlk defa kaydedilen bir iznin durum (status) bilgisi RET olmamalıdır.',
  H178: 'Sistemdeki iznin tarihinden önceki tarihli izinlerle güncelleme yapılamaz.',
  H194: 'İzin listede daha önce tanımlandı. Liste içinde izinler alıcı tipi (recipientType), tip (type) ve alıcı (recipient) değerleri için tekrarlanamaz.',
  H467: 'Üç iş günü öncesinde alınan izinler kaydedilemez.'
}

const TR_OFFSET_MS = 3 * 3600 * 1000
/** İYS's date format, Turkey time: `YYYY-MM-DD HH:mm:ss`. */
const iysNow = (): string => new Date(Date.now() + TR_OFFSET_MS).toISOString().slice(0, 19).replace('T', ' ')
const iysSeconds = (text: string): number => Date.parse(text.replace(' ', 'T') + '+03:00') / 1000
const consentKey = (brandCode: string, c: FakeConsent): string => `${brandCode}|${c.type}|${c.recipientType ?? 'BIREYSEL'}|${c.recipient}`
/** İYS's v2 idempotency compares the whole request: the path's codes and every field of the body. */
const fingerprint = (brandCode: string, c: FakeConsent): string =>
  brandCode + '|' + JSON.stringify(Object.keys(c).sort().map(k => [k, c[k]]))

/** The spec's `after` shape: `<creation epoch seconds>_<transactionId>`. */
export const afterToken = (c: FakeChange): string => `${Math.floor(Date.parse(c.creationDate.replace(' ', 'T') + '+03:00') / 1000)}_${c.transactionId}`

export class FakeIys {
  readonly server: Server
  url = ''
  readonly username: string
  readonly password: string
  readonly iysCode: string
  expiresIn: number
  refreshExpiresIn: number
  delayMs: number
  /** changes per brand code, in İYS's order (creationDate) */
  readonly changes = new Map<string, FakeChange[]>()
  readonly log: RequestRecord[] = []
  readonly counters = { tokenRequests: 0, logins: 0, refreshes: 0, changesRequests: 0, unauthorized: 0, rateLimited: 0 }
  /** Faults for the next changes requests, first in first out. */
  readonly changesFaults: Fault[] = []
  /** Faults for the next token requests. */
  readonly tokenFaults: Fault[] = []
  /** Answer every changes request with this while set (a broken İYS). */
  failChanges: Fault | null = null
  /** Called before each changes request is answered, with its 1-based number (e.g. to expire tokens mid-stream). */
  onChanges: ((n: number) => void) | null = null
  // ---- consent writes ----
  /** Every transaction recorded, in order. */
  readonly registered: Registered[] = []
  /** İYS's current state per brand|type|recipientType|recipient. */
  readonly state = new Map<string, { status: string, consentDate: number, transactionId: string }>()
  /** Refuse consents for these recipients with this İYS code (single and batch items). */
  readonly refuseItems = new Map<string, string>()
  /** Faults for the next write requests (single, request, results), first in first out. */
  readonly writeFaults: Fault[] = []
  /** A batch's results are answered as an empty list until this long after it was posted (ms). */
  resultDelayMs = 0
  /** Called with every write request once İYS has processed it, before it is answered: throwing loses the answer. */
  onWrite: ((rec: RequestRecord) => void) | null = null
  private down: 'refuse' | 503 | null = null
  private port = 0
  private readonly requests = new Map<string, FakeRequest>()
  private readonly v2Singles = new Map<string, { transactionId: string, creationDate: string }>()
  private readonly v2Items = new Map<string, { transactionId: string, creationDate: string, requestId: string, subRequestId: string }>()
  private readonly access = new Map<string, number>()
  private readonly refresh = new Map<string, number>()

  constructor (opts: FakeIysOptions = {}) {
    this.username = opts.username ?? 'hs@example.com'
    this.password = opts.password ?? 'secret'
    this.iysCode = opts.iysCode ?? '700001'
    this.expiresIn = opts.expiresIn ?? 7200
    this.refreshExpiresIn = opts.refreshExpiresIn ?? 14400
    this.delayMs = opts.delayMs ?? 0
    this.server = createServer((req, res) => { this.handle(req, res).catch(() => { res.destroy() }) })
  }

  async listen (): Promise<this> {
    await new Promise<void>(resolve => this.server.listen(this.port, '127.0.0.1', resolve))
    this.port = (this.server.address() as AddressInfo).port
    this.url = `http://127.0.0.1:${this.port}`
    return this
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    if (!this.server.listening) return
    await new Promise<void>(resolve => this.server.close(() => resolve()))
  }

  /** An outage: 'refuse' stops listening (connection refused), 503 answers every request with 503. */
  async goDown (mode: 'refuse' | 503): Promise<void> {
    this.down = mode
    if (mode === 'refuse') await this.close()
  }

  /** Back from goDown(), on the same port. */
  async comeBack (): Promise<void> {
    const was = this.down
    this.down = null
    if (was === 'refuse') await this.listen()
  }

  /** Puts a record in İYS's register as if recorded earlier (e.g. one the gateway never heard of). */
  setState (brandCode: string, c: FakeConsent): void {
    this.state.set(consentKey(brandCode, c), { status: c.status, consentDate: iysSeconds(c.consentDate), transactionId: randomBytes(32).toString('hex') })
  }

  /** The transactions recorded for one recipient, in order. */
  registeredFor (recipient: string): Registered[] {
    return this.registered.filter(r => r.consent.recipient === recipient)
  }

  setChanges (brandCode: string, list: FakeChange[]): void {
    this.changes.set(brandCode, list)
  }

  /** Every access token stops working (as after its 2 hours); with `refresh`, every refresh token too. */
  expireTokens (opts: { refresh?: boolean } = {}): void {
    this.access.clear()
    if (opts.refresh === true) this.refresh.clear()
  }

  /** The `after` values of the changes requests of one brand, in order (null: none sent). */
  aftersSeen (brandCode: string): (string | null)[] {
    return this.log.filter(r => r.kind === 'changes' && r.brandCode === brandCode && r.status !== 401 && r.status !== 429).map(r => r.after ?? null)
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake')
    const chunks: Buffer[] = []
    for await (const c of req) chunks.push(c as Buffer)
    const body = Buffer.concat(chunks).toString('utf8')
    if (this.down === 503) return this.send(res, { at: Date.now(), kind: 'other', status: 0 }, 503, { errors: [{ code: 'H015', message: MESSAGES.H015 }] })
    if (req.method === 'POST' && url.pathname === '/oauth2/token') return this.token(req, body, res)
    const m = /^\/sps\/(\d+)\/brands\/(\d+)\/consents\/changes$/.exec(url.pathname)
    if (req.method === 'GET' && m !== null) return await this.pull(req, url, m[1]!, m[2]!, res)
    const w = /^(\/v2)?\/sps\/(\d+)\/brands\/(\d+)\/consents(\/request(?:\/([^/]+))?)?$/.exec(url.pathname)
    if (w !== null) {
      const version = w[1] === '/v2' ? 'v2' : 'v1'
      const kind = w[4] === undefined ? 'consent' : w[5] === undefined ? 'request' : 'results'
      if ((kind === 'results') === (req.method === 'GET')) return this.write(req, body, res, { version, kind, iysCode: w[2]!, brandCode: w[3]!, requestId: w[5] })
    }
    this.send(res, { at: Date.now(), kind: 'other', status: 404 }, 404, { errors: [{ code: 'H404', message: 'not found' }] })
  }

  private send (res: ServerResponse, rec: RequestRecord, status: number, body?: unknown, headers: Record<string, string> = {}): void {
    rec.status = status
    this.log.push(rec)
    if (body === undefined) { res.writeHead(status, headers).end(); return }
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
  }

  private fault (res: ServerResponse, rec: RequestRecord, f: Fault): void {
    if (f.status === 429) this.counters.rateLimited++
    rec.code = f.code
    const headers: Record<string, string> = f.retryAfter !== undefined ? { 'retry-after': String(f.retryAfter) } : {}
    this.send(res, rec, f.status, { errors: [{ code: f.code, message: f.message ?? MESSAGES[f.code] ?? f.code }] }, headers)
  }

  private token (req: IncomingMessage, raw: string, res: ServerResponse): void {
    this.counters.tokenRequests++
    const rec: RequestRecord = { at: Date.now(), kind: 'token', status: 0 }
    let p: Record<string, unknown>
    try {
      p = (req.headers['content-type'] ?? '').includes('x-www-form-urlencoded')
        ? Object.fromEntries(new URLSearchParams(raw))
        : JSON.parse(raw) as Record<string, unknown>
    } catch {
      return this.send(res, rec, 400, { error: 'invalid_request', error_description: 'Giriş yöntemi belirtilmemiş.' })
    }
    rec.grant = String(p.grant_type)
    const f = this.tokenFaults.shift()
    if (f !== undefined) return this.fault(res, rec, f)
    if (p.grant_type === 'password') {
      if (p.username !== this.username || p.password !== this.password) {
        return this.send(res, rec, 400, { error: 'invalid_request', error_description: 'Kullanıcı kimlik bilgileri geçersiz.' })
      }
      this.counters.logins++
    } else if (p.grant_type === 'refresh_token') {
      const until = this.refresh.get(String(p.refresh_token))
      if (until === undefined || until < Date.now()) {
        return this.send(res, rec, 400, { error: 'invalid_grant', error_description: 'Token is not active' })
      }
      this.refresh.delete(String(p.refresh_token))
      this.counters.refreshes++
    } else {
      return this.send(res, rec, 400, { error: 'invalid_request', error_description: 'Bilinmeyen giriş yöntemi.' })
    }
    const access = randomBytes(24).toString('hex')
    const refresh = randomBytes(24).toString('hex')
    this.access.set(access, Date.now() + this.expiresIn * 1000)
    this.refresh.set(refresh, Date.now() + this.refreshExpiresIn * 1000)
    this.send(res, rec, 200, { access_token: access, refresh_token: refresh, expires_in: this.expiresIn, refresh_expires_in: this.refreshExpiresIn, token_type: 'bearer' })
  }

  /** Whether the request carries an access token this fake issued and that has not expired. */
  private authorized (req: IncomingMessage): boolean {
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')
    const until = auth === null ? undefined : this.access.get(auth[1]!)
    return until !== undefined && until >= Date.now()
  }

  private refuseToken (res: ServerResponse, rec: RequestRecord): void {
    this.counters.unauthorized++
    rec.code = 'H351'
    this.send(res, rec, 401, H351)
  }

  private write (req: IncomingMessage, raw: string, res: ServerResponse, w: { version: 'v1' | 'v2', kind: 'consent' | 'request' | 'results', iysCode: string, brandCode: string, requestId: string | undefined }): void {
    const brandCode = String(Number(w.brandCode))
    const rec: RequestRecord = { at: Date.now(), kind: w.kind, version: w.version, status: 0, brandCode, ...(w.requestId !== undefined ? { requestId: w.requestId } : {}) }
    if (!this.authorized(req)) return this.refuseToken(res, rec)
    const f = this.writeFaults.shift()
    if (f !== undefined) return this.fault(res, rec, f)
    if (String(Number(w.iysCode)) !== this.iysCode) {
      rec.code = 'H353'
      return this.send(res, rec, 403, { errors: [{ message: 'iysCode, kullanıcı izinleriyle eşleştirilemiyor', code: 'H353' }] })
    }
    if (w.kind === 'results') {
      const r = this.requests.get(w.requestId!)
      this.onWrite?.(rec)
      if (r === undefined || r.brandCode !== brandCode || r.version !== w.version || Date.now() < r.readyAt) return this.send(res, rec, 200, [])
      return this.send(res, rec, 200, r.results)
    }
    let body: unknown
    try { body = JSON.parse(raw) } catch { body = null }
    if (w.kind === 'consent') {
      if (typeof body !== 'object' || body === null || Array.isArray(body)) return this.send(res, rec, 400, { errors: [{ code: 'H085', message: 'İzin ekleme isteği geçerli olmalıdır.' }] })
      rec.items = 1
      const c = body as FakeConsent
      const fp = fingerprint(brandCode, c)
      const again = w.version === 'v2' ? this.v2Singles.get(fp) : undefined
      if (again !== undefined) { this.onWrite?.(rec); return this.send(res, rec, 200, again) }
      const outcome = this.record(brandCode, c, 'single', w.version)
      if ('code' in outcome) {
        rec.code = outcome.code
        this.onWrite?.(rec)
        return this.send(res, rec, 422, { errors: [{ code: outcome.code, message: MESSAGES[outcome.code] ?? outcome.code }] })
      }
      const answer = { transactionId: outcome.transactionId, creationDate: outcome.creationDate }
      if (w.version === 'v2') this.v2Singles.set(fp, answer)
      // After İYS has recorded it: a test that throws here loses the answer of a processed write.
      this.onWrite?.(rec)
      return this.send(res, rec, 200, answer)
    }
    if (!Array.isArray(body) || body.length === 0) return this.send(res, rec, 400, { errors: [{ code: 'H092', message: 'İzin listesi boş olmamalıdır.' }] })
    if (body.length > 1000) return this.send(res, rec, 400, { errors: [{ code: 'H091', message: 'En fazla 1000 izin gönderilebilir.' }] })
    rec.items = body.length
    // H194: a list may not repeat a consent (recipientType, type, recipient); İYS refuses the list whole.
    const keys = (body as FakeConsent[]).map(c => consentKey(brandCode, c))
    const dup = keys.findIndex((k, i) => keys.indexOf(k) !== i)
    if (dup >= 0) {
      rec.code = 'H194'
      return this.send(res, rec, 422, { errors: [{ code: 'H194', message: MESSAGES.H194, location: [String(dup)] }] })
    }
    const requestId = randomBytes(16).toString('hex')
    rec.requestId = requestId
    const creationDate = iysNow()
    const subRequests: unknown[] = []
    const results: ItemResult[] = []
    ;(body as FakeConsent[]).forEach((c, index) => {
      const subRequestId = randomUUID()
      subRequests.push({ ...c, subRequestId, creationDate })
      const fp = fingerprint(brandCode, c)
      const original = w.version === 'v2' ? this.v2Items.get(fp) : undefined
      if (original !== undefined) {
        results.push({
          requestId, subRequestId, index, status: 'success', transactionId: original.transactionId, creationDate: original.creationDate,
          isAddConsentV2Service: 'true', originalRequestInformation: { requestId: original.requestId, subRequestId: original.subRequestId }
        })
        return
      }
      const outcome = this.record(brandCode, c, 'batch', w.version, requestId)
      if ('code' in outcome) {
        results.push({ subRequestId, index, status: 'failure', error: { code: outcome.code, message: MESSAGES[outcome.code] ?? outcome.code } })
        return
      }
      if (w.version === 'v2') this.v2Items.set(fp, { transactionId: outcome.transactionId, creationDate: outcome.creationDate, requestId, subRequestId })
      results.push({ requestId, subRequestId, index, status: 'success', transactionId: outcome.transactionId, creationDate: outcome.creationDate })
    })
    this.requests.set(requestId, { requestId, brandCode, version: w.version, readyAt: Date.now() + this.resultDelayMs, results })
    this.onWrite?.(rec)
    this.send(res, rec, 202, { requestId, subRequests })
  }

  /** İYS's rules for one consent against the register; records it, or names the code it is refused with. */
  private record (brandCode: string, c: FakeConsent, via: 'single' | 'batch', version: 'v1' | 'v2', requestId?: string): Registered | { code: string } {
    const refused = this.refuseItems.get(c.recipient)
    if (refused !== undefined) return { code: refused }
    const k = consentKey(brandCode, c)
    const cur = this.state.get(k)
    const date = iysSeconds(c.consentDate)
    if (cur === undefined && c.status === 'RET') return { code: 'H175' }
    if (cur !== undefined && date < cur.consentDate) return { code: 'H178' }
    if (cur !== undefined && cur.status === c.status) return { code: 'H174' }
    const r: Registered = { transactionId: randomBytes(32).toString('hex'), creationDate: iysNow(), brandCode, via, version, consent: { ...c }, ...(requestId !== undefined ? { requestId } : {}) }
    this.state.set(k, { status: c.status, consentDate: date, transactionId: r.transactionId })
    this.registered.push(r)
    return r
  }

  private async pull (req: IncomingMessage, url: URL, iysCode: string, brandCode: string, res: ServerResponse): Promise<void> {
    const n = ++this.counters.changesRequests
    this.onChanges?.(n)
    const after = url.searchParams.get('after')
    const limitText = url.searchParams.get('limit')
    const rec: RequestRecord = { at: Date.now(), kind: 'changes', status: 0, brandCode, after, limit: limitText === null ? 1000 : Number(limitText) }
    if (!this.authorized(req)) return this.refuseToken(res, rec)
    const f = this.changesFaults.shift() ?? this.failChanges ?? undefined
    if (f !== undefined) return this.fault(res, rec, f)
    if (String(Number(iysCode)) !== this.iysCode || !this.changes.has(String(Number(brandCode)))) {
      rec.code = 'H353'
      return this.send(res, rec, 403, { errors: [{ message: 'brandCode, kullanıcı izinleriyle eşleştirilemiyor', code: 'H353' }] })
    }
    const limit = rec.limit!
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      rec.code = 'H507'
      return this.send(res, rec, 422, { errors: [{ code: 'H507', location: ['limit'], value: limitText, message: 'limit alanı için karakter üst sınırı 1000 olmalıdır.' }] })
    }
    const list = this.changes.get(String(Number(brandCode)))!
    let from = 0
    if (after !== null) {
      const tx = after.slice(after.indexOf('_') + 1)
      const i = list.findIndex(c => c.transactionId === tx)
      from = i >= 0 ? i + 1 : list.findIndex(c => afterToken(c) > after)
      if (from < 0) from = list.length
    }
    if (this.delayMs > 0) await new Promise(resolve => setTimeout(resolve, this.delayMs))
    const page = list.slice(from, from + limit)
    if (page.length === 0) return this.send(res, rec, 204)
    this.send(res, rec, 200, { after: afterToken(page[page.length - 1]!), list: page })
  }
}

export async function startFakeIys (opts: FakeIysOptions = {}): Promise<FakeIys> {
  return await new FakeIys(opts).listen()
}
