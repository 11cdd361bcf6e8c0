// A fake İYS API for the pull, written from the OpenAPI spec (../shared/reference/iys-openapi-3.2.0.json):
//   POST /oauth2/token                                    password and refresh_token grants (JSON or form body)
//   GET  /sps/{iysCode}/brands/{brandCode}/consents/changes   pages after `after`, ≤ `limit` (max 1000), 204 at the end
// Tokens expire after `expiresIn` seconds; an unknown or expired one gets 401 H351. Knobs inject rate-limit
// answers (429 H124/H083 on the pull, 429 H084 on the token endpoint) and other failures, expire every token, slow
// answers down; counters and a request log let tests assert what a client did.

import { randomBytes } from 'node:crypto'
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
  kind: 'token' | 'changes' | 'other'
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
  H015: 'Beklenmedik bir hata oluştu!'
}

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
    await new Promise<void>(resolve => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>(resolve => this.server.close(() => resolve()))
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
    if (req.method === 'POST' && url.pathname === '/oauth2/token') return this.token(req, body, res)
    const m = /^\/sps\/(\d+)\/brands\/(\d+)\/consents\/changes$/.exec(url.pathname)
    if (req.method === 'GET' && m !== null) return await this.pull(req, url, m[1]!, m[2]!, res)
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

  private async pull (req: IncomingMessage, url: URL, iysCode: string, brandCode: string, res: ServerResponse): Promise<void> {
    const n = ++this.counters.changesRequests
    this.onChanges?.(n)
    const after = url.searchParams.get('after')
    const limitText = url.searchParams.get('limit')
    const rec: RequestRecord = { at: Date.now(), kind: 'changes', status: 0, brandCode, after, limit: limitText === null ? 1000 : Number(limitText) }
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')
    const until = auth === null ? undefined : this.access.get(auth[1]!)
    if (until === undefined || until < Date.now()) {
      this.counters.unauthorized++
      rec.code = 'H351'
      return this.send(res, rec, 401, H351)
    }
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
