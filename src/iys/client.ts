// A small client for the İYS API: only what we call — the token endpoint, the consent changes pull (`sync-iys`) and
// the consent writes of the write-through outbox (iys/outbox.ts): single (POST …/consents) and asynchronous batch
// (POST …/consents/request, GET …/consents/request/{requestId}), through İYS's v2 endpoints by default because v2
// answers a re-sent identical consent with the transactionId of the first (see outbox.ts: idempotency).
//
// Tokens (spec, "KİMLİK DOĞRULAMA"): an access token lives 2 h, its refresh token 4 h, and the token endpoint takes
// at most 100 requests an hour per IP. So we log in once, refresh with the refresh_token grant shortly before the
// access token runs out, and log in with the password again only when a refresh is refused. A 401 H351 answer
// (token missing or invalid) gets one renewal and one retry of the request.
//
// Rate limits (spec, "Canlı ortam kullanımı hakkında"): at most 10 requests a second per IP, answered beyond that
// with 429 H124 (H083 from some subsystems, same meaning). We pace requests below that, and on such an answer wait
// for Retry-After if İYS sends one, else back off exponentially with jitter, capped. H084 is the token endpoint's
// hourly limit; İYS restarts its one-hour counter on every request made before the hour is up, so after H084 we do
// not ask for a token again until that hour (or Retry-After) has passed.
//
// Every other failure is an IysApiError whose message carries İYS's code. Nothing here logs a recipient, a token
// or a password.

import { setTimeout as sleep } from 'node:timers/promises'
import { Pool, type Dispatcher } from 'undici'
import type { Logger } from '../log.js'
import { retryAfterMs } from '../util/retry-after.js'
import { CodedError } from '../domain/errors.js'

/** One consent change as İYS lists it (AgreementPull.list). Fields are İYS's, unchecked: validate before use. */
export interface IysChange {
  consentDate?: string
  creationDate?: string
  source?: string
  recipient?: string
  recipientType?: string
  status?: string
  type?: string
  transactionId?: string
  [field: string]: unknown
}

export interface IysChangesPage {
  /** Where this page ends: pass it back as `after` for the next page. */
  after: string
  list: IysChange[]
}

/** What `sync-iys` needs from İYS; tests and other transports can stand in for it. */
export interface IysApi {
  /** One page of consent changes after `after` (null: from the start of İYS's window); null when there are none (204). */
  changes (iysCode: string, brandCode: string, after: string | null, limit: number, signal?: AbortSignal): Promise<IysChangesPage | null>
  close (): Promise<void>
}

/** One consent as İYS's write endpoints take it (components.schemas.Consent; no retailer fields: we model none). */
export interface IysConsent {
  consentDate: string
  /** left out for a TACIR consent whose provider left it out (İYS allows that on a first record) */
  source?: string
  recipient: string
  recipientType: string
  status: string
  type: string
}

/** İYS's answer to a single consent write (AddConsentResponseMessage). */
export interface IysAdded { transactionId: string, creationDate: string }

/** One item of GET …/consents/request/{requestId} (SearchConsentResponse), as İYS gives it, checked for shape only. */
export interface IysRequestItem {
  index: number
  status: 'success' | 'failure' | 'enqueue'
  transactionId?: string
  creationDate?: string
  error?: { code: string, message: string }
}

/** What the write-through outbox needs from İYS; a refusal is an IysApiError with İYS's code (see `refused`). */
export interface IysWriteApi {
  addConsent (iysCode: string, brandCode: string, consent: IysConsent, signal?: AbortSignal): Promise<IysAdded>
  /** Posts up to 1000 consents for asynchronous processing; İYS's requestId. */
  addConsentRequest (iysCode: string, brandCode: string, consents: readonly IysConsent[], signal?: AbortSignal): Promise<{ requestId: string }>
  /** The per-item results of a request so far (İYS may answer an empty list before it has processed it). */
  requestResults (iysCode: string, brandCode: string, requestId: string, signal?: AbortSignal): Promise<IysRequestItem[]>
  close (): Promise<void>
}

export class IysApiError extends CodedError<'IYS_API'> {
  /** İYS's code (H351, H124, …), the OAuth2 `error` of the token endpoint, or NETWORK / BAD_RESPONSE. */
  readonly iysCode: string
  /** HTTP status, 0 when there was no answer. */
  readonly status: number
  /** Worth trying again later (network, 5xx, a rate limit that outlasted our retries); false for refusals. */
  readonly transient: boolean
  /** İYS's own message for its code ('' when it gave none): kept with a refused consent, never logged with data. */
  readonly iysMessage: string
  /** İYS's Retry-After of the last rate-limit answer, when it sent one. */
  readonly retryAfterMs: number | null

  constructor (code: string, status: number, message: string, opts: { transient?: boolean, cause?: unknown, iysMessage?: string, retryAfterMs?: number | null } = {}) {
    super('IYS_API', message, { cause: opts.cause })
    this.iysCode = code
    this.status = status
    this.transient = opts.transient ?? (status === 0 || status >= 500 || status === 429)
    this.iysMessage = opts.iysMessage ?? ''
    this.retryAfterMs = opts.retryAfterMs ?? null
  }

  /**
   * İYS refused the content of a write (400/422 with an H code: H174, H178, H467, …): sending it again cannot
   * succeed. Not a refusal: a bad token or a missing permission (401/403, our configuration), a rate limit, an outage.
   */
  get refused (): boolean {
    return (this.status === 400 || this.status === 422) && /^H\d{3}$/.test(this.iysCode)
  }
}

export interface IysClientOptions {
  apiUrl: string
  username: string
  password: string
  log?: Logger
  /** Least time between two requests (ms); İYS allows 10 a second per IP. Default 125 (8/s). */
  minIntervalMs?: number
  /** Exponential back-off after H124/H083 without Retry-After: first wait (ms), default 1000 … */
  backoffBaseMs?: number
  /** … doubling up to this cap (ms), default 60 000. */
  backoffMaxMs?: number
  /** Rate-limit answers in a row before giving up on a request, default 8 (about 3 minutes with the defaults). */
  maxRetries?: number
  /** How long the token endpoint stays off limits after H084 without Retry-After (ms), default one hour. */
  authLockoutMs?: number
  /** Per-request timeout for headers and body (ms), default 30 000. */
  timeoutMs?: number
  /** Which consent write endpoints: 'v2' (default; idempotent for identical re-sends) or 'v1'. */
  writeVersion?: 'v1' | 'v2'
}

interface Token {
  access: string
  refresh: string | null
  /** renew the access token from this moment on (epoch ms), a little before it expires */
  renewAt: number
  /** the refresh token is no use after this (epoch ms) */
  refreshUntil: number
}

interface Answer { status: number, retryAfterMs: number | null, body: unknown }

type TokenGrant = { grant_type: 'password', username: string, password: string } | { grant_type: 'refresh_token', refresh_token: string }

/** Counters for tests and logs. */
export interface IysClientStats { requests: number, logins: number, refreshes: number, unauthorized: number, rateLimited: number }

/** The first İYS error item of a body: `{"errors":[{code,message}]}`, or the OTP subsystems' `subSystemErrorInfo`. */
function iysError (body: unknown): { code: string, message: string } | null {
  if (typeof body !== 'object' || body === null) return null
  const b = body as { errors?: unknown, subSystemErrorInfo?: { errors?: unknown }, error?: unknown, error_description?: unknown }
  const list = Array.isArray(b.errors) ? b.errors : Array.isArray(b.subSystemErrorInfo?.errors) ? b.subSystemErrorInfo.errors : null
  const first = list?.[0] as { code?: unknown, message?: unknown } | undefined
  if (first !== undefined && typeof first.code === 'string') return { code: first.code, message: typeof first.message === 'string' ? first.message : '' }
  // The token endpoint answers OAuth2-style: {"error":"invalid_request","error_description":"..."}
  if (typeof b.error === 'string') return { code: b.error, message: typeof b.error_description === 'string' ? b.error_description : '' }
  return null
}

export class IysClient implements IysApi, IysWriteApi {
  private readonly http: Pool
  private readonly base: string
  private readonly username: string
  private readonly password: string
  private readonly log: Logger | undefined
  private readonly minIntervalMs: number
  private readonly backoffBaseMs: number
  private readonly backoffMaxMs: number
  private readonly maxRetries: number
  private readonly authLockoutMs: number
  private readonly writePrefix: string
  private token: Token | null = null
  private renewing: Promise<Token> | null = null
  private nextSlot = 0
  private authBlockedUntil = 0
  readonly stats: IysClientStats = { requests: 0, logins: 0, refreshes: 0, unauthorized: 0, rateLimited: 0 }

  constructor (opts: IysClientOptions) {
    const url = new URL(opts.apiUrl)
    this.base = url.pathname.replace(/\/+$/, '')
    const timeout = opts.timeoutMs ?? 30_000
    // Keep-alive: a pull is many small requests to one host.
    this.http = new Pool(url.origin, { connections: 2, keepAliveTimeout: 30_000, headersTimeout: timeout, bodyTimeout: timeout })
    this.username = opts.username
    this.password = opts.password
    this.log = opts.log
    this.minIntervalMs = opts.minIntervalMs ?? 125
    this.backoffBaseMs = opts.backoffBaseMs ?? 1000
    this.backoffMaxMs = opts.backoffMaxMs ?? 60_000
    this.maxRetries = opts.maxRetries ?? 8
    this.authLockoutMs = opts.authLockoutMs ?? 3_600_000
    this.writePrefix = (opts.writeVersion ?? 'v2') === 'v2' ? `${this.base}/v2` : this.base
  }

  async changes (iysCode: string, brandCode: string, after: string | null, limit: number, signal?: AbortSignal): Promise<IysChangesPage | null> {
    let path = `${this.base}/sps/${encodeURIComponent(iysCode)}/brands/${encodeURIComponent(brandCode)}/consents/changes?limit=${limit}`
    if (after !== null) path += `&after=${encodeURIComponent(after)}`
    const res = await this.authorized('GET', path, undefined, signal)
    if (res.status === 204) return null
    if (res.status !== 200) throw this.failure('changes', res)
    const body = res.body as { after?: unknown, list?: unknown } | null
    if (body === null || typeof body !== 'object' || !Array.isArray(body.list) || typeof body.after !== 'string') {
      throw new IysApiError('BAD_RESPONSE', 200, 'İYS changes: the answer is not an AgreementPull ({after, list})', { transient: true })
    }
    return { after: body.after, list: body.list as IysChange[] }
  }

  async addConsent (iysCode: string, brandCode: string, consent: IysConsent, signal?: AbortSignal): Promise<IysAdded> {
    const res = await this.authorized('POST', this.consentsPath(iysCode, brandCode), JSON.stringify(consent), signal)
    if (res.status !== 200) throw this.failure('consent write', res)
    const body = res.body as { transactionId?: unknown, creationDate?: unknown } | null
    if (typeof body?.transactionId !== 'string' || typeof body.creationDate !== 'string') {
      throw new IysApiError('BAD_RESPONSE', 200, 'İYS consent write: the answer has no transactionId and creationDate', { transient: true })
    }
    return { transactionId: body.transactionId, creationDate: body.creationDate }
  }

  async addConsentRequest (iysCode: string, brandCode: string, consents: readonly IysConsent[], signal?: AbortSignal): Promise<{ requestId: string }> {
    const res = await this.authorized('POST', this.consentsPath(iysCode, brandCode) + '/request', JSON.stringify(consents), signal)
    if (res.status !== 200 && res.status !== 202) throw this.failure('consent request', res)
    const body = res.body as { requestId?: unknown } | null
    if (typeof body?.requestId !== 'string' || body.requestId === '') {
      throw new IysApiError('BAD_RESPONSE', res.status, 'İYS consent request: the answer has no requestId', { transient: true })
    }
    return { requestId: body.requestId }
  }

  async requestResults (iysCode: string, brandCode: string, requestId: string, signal?: AbortSignal): Promise<IysRequestItem[]> {
    const res = await this.authorized('GET', `${this.consentsPath(iysCode, brandCode)}/request/${encodeURIComponent(requestId)}`, undefined, signal)
    if (res.status === 204) return []
    if (res.status !== 200) throw this.failure('consent request results', res)
    if (!Array.isArray(res.body)) throw new IysApiError('BAD_RESPONSE', 200, 'İYS consent request results: the answer is not a list', { transient: true })
    const out: IysRequestItem[] = []
    for (const raw of res.body as unknown[]) {
      const item = raw as { index?: unknown, status?: unknown, transactionId?: unknown, creationDate?: unknown, error?: { code?: unknown, message?: unknown } } | null
      if (item === null || typeof item !== 'object' || typeof item.index !== 'number') continue
      if (item.status !== 'success' && item.status !== 'failure' && item.status !== 'enqueue') continue
      out.push({
        index: item.index,
        status: item.status,
        ...(typeof item.transactionId === 'string' ? { transactionId: item.transactionId } : {}),
        ...(typeof item.creationDate === 'string' ? { creationDate: item.creationDate } : {}),
        ...(item.error !== undefined && item.error !== null && typeof item.error.code === 'string'
          ? { error: { code: item.error.code, message: typeof item.error.message === 'string' ? item.error.message : '' } }
          : {})
      })
    }
    return out
  }

  async close (): Promise<void> {
    await this.http.close()
  }

  private consentsPath (iysCode: string, brandCode: string): string {
    return `${this.writePrefix}/sps/${encodeURIComponent(iysCode)}/brands/${encodeURIComponent(brandCode)}/consents`
  }

  /** A request with the access token; a 401 (the token refused before we thought it would expire: revoked, clock
   *  skew) gets one renewal and one retry. */
  private async authorized (method: 'GET' | 'POST', path: string, body: string | undefined, signal: AbortSignal | undefined): Promise<Answer> {
    let res = await this.withToken(method, path, body, signal)
    if (res.status === 401) {
      this.stats.unauthorized++
      this.log?.info({ code: iysError(res.body)?.code }, 'İYS refused the access token; renewing it')
      if (this.token !== null) this.token.renewAt = 0
      res = await this.withToken(method, path, body, signal)
    }
    return res
  }

  private async withToken (method: 'GET' | 'POST', path: string, body: string | undefined, signal: AbortSignal | undefined): Promise<Answer> {
    const token = await this.accessToken(signal)
    const headers: Record<string, string> = { authorization: `Bearer ${token.access}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    return await this.send(method, path, headers, body, signal)
  }

  private async accessToken (signal: AbortSignal | undefined): Promise<Token> {
    if (this.token !== null && Date.now() < this.token.renewAt) return this.token
    // One renewal at a time, shared by every caller that needs it.
    this.renewing ??= this.renew(signal).finally(() => { this.renewing = null })
    return await this.renewing
  }

  private async renew (signal: AbortSignal | undefined): Promise<Token> {
    const old = this.token
    if (old?.refresh != null && Date.now() < old.refreshUntil) {
      try {
        this.token = await this.grant({ grant_type: 'refresh_token', refresh_token: old.refresh }, signal)
        this.stats.refreshes++
        this.log?.debug('İYS access token refreshed')
        return this.token
      } catch (err) {
        // A refused refresh token (expired, revoked) means logging in again; anything else is a real failure.
        if (!(err instanceof IysApiError) || err.transient) throw err
        this.log?.info({ code: err.iysCode }, 'İYS refused the refresh token; logging in again')
      }
    }
    this.token = null
    this.token = await this.grant({ grant_type: 'password', username: this.username, password: this.password }, signal)
    this.stats.logins++
    this.log?.debug('İYS login')
    return this.token
  }

  private async grant (grant: TokenGrant, signal: AbortSignal | undefined): Promise<Token> {
    const wait = this.authBlockedUntil - Date.now()
    if (wait > 0) await sleep(wait, undefined, { signal })
    const issued = Date.now()
    const res = await this.send('POST', `${this.base}/oauth2/token`, { 'content-type': 'application/json' }, JSON.stringify(grant), signal)
    const body = res.body as { access_token?: unknown, refresh_token?: unknown, expires_in?: unknown, refresh_expires_in?: unknown } | null
    if (res.status !== 200 || body === null || typeof body.access_token !== 'string') {
      const what = grant.grant_type === 'password' ? 'login' : 'token refresh'
      const e = iysError(res.body)
      throw new IysApiError(e?.code ?? `HTTP_${res.status}`, res.status,
        `İYS ${what} refused (HTTP ${res.status}${e !== null ? ` ${e.code}` : ''})${e?.message ? `: ${e.message}` : ''}`)
    }
    const lifeMs = (typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : 7200) * 1000
    const refreshMs = typeof body.refresh_expires_in === 'number' && body.refresh_expires_in > 0 ? body.refresh_expires_in * 1000 : Infinity
    // Renew a minute early (a quarter of the lifetime for short-lived tokens), so that no request leaves with a
    // token about to expire on the way.
    const margin = Math.min(60_000, lifeMs / 4)
    return {
      access: body.access_token,
      refresh: typeof body.refresh_token === 'string' ? body.refresh_token : null,
      renewAt: issued + lifeMs - margin,
      refreshUntil: issued + refreshMs - margin
    }
  }

  /** One request with pacing and rate-limit retries. Answers other than 429 are returned to the caller. */
  private async send (method: 'GET' | 'POST', path: string, headers: Record<string, string>, body: string | undefined, signal: AbortSignal | undefined): Promise<Answer> {
    for (let attempt = 0; ; attempt++) {
      const res = await this.once(method, path, headers, body, signal)
      if (res.status !== 429) return res
      this.stats.rateLimited++
      const code = iysError(res.body)?.code ?? 'H124'
      if (attempt >= this.maxRetries) {
        throw new IysApiError(code, 429, `İYS rate limit (${code}) still in force after ${attempt} retries`, { transient: true, retryAfterMs: res.retryAfterMs })
      }
      let waitMs: number
      if (code === 'H084') {
        // The token endpoint's hourly limit: İYS restarts the hour on any earlier request, so wait it out whole.
        waitMs = res.retryAfterMs ?? this.authLockoutMs
        this.authBlockedUntil = Date.now() + waitMs
      } else {
        // Equal jitter: at least half the exponential step, so that we never come back sooner than that.
        const step = Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** attempt)
        waitMs = res.retryAfterMs ?? Math.round(step / 2 + Math.random() * step / 2)
      }
      this.log?.warn({ code, waitMs, attempt: attempt + 1 }, 'İYS rate limit: backing off')
      await sleep(waitMs, undefined, { signal })
    }
  }

  private async once (method: 'GET' | 'POST', path: string, headers: Record<string, string>, body: string | undefined, signal: AbortSignal | undefined): Promise<Answer> {
    const now = Date.now()
    const slot = Math.max(now, this.nextSlot)
    this.nextSlot = slot + this.minIntervalMs
    if (slot > now) await sleep(slot - now, undefined, { signal })
    this.stats.requests++
    let res: Dispatcher.ResponseData
    try {
      res = await this.http.request({ method, path, headers: { accept: 'application/json', ...headers }, body, signal })
    } catch (err) {
      if ((err as Error).name === 'AbortError' || signal?.aborted === true) throw err
      throw new IysApiError('NETWORK', 0, `İYS unreachable: ${(err as Error).message}`, { cause: err })
    }
    const text = await res.body.text()
    let parsed: unknown = null
    if (text !== '') {
      try { parsed = JSON.parse(text) } catch { parsed = null }
    }
    return { status: res.statusCode, retryAfterMs: retryAfterMs(res.headers) ?? null, body: parsed }
  }

  private failure (what: string, res: Answer): IysApiError {
    const e = iysError(res.body)
    const code = e?.code ?? `HTTP_${res.status}`
    return new IysApiError(code, res.status, `İYS ${what}: ${code} (HTTP ${res.status})${e?.message ? `: ${e.message}` : ''}`, { iysMessage: e?.message ?? '' })
  }
}
