// The one way a route is served: abort tracking, body limit, Content-Type and JSON checks, İYS error bodies,
// metrics and logging of unexpected errors, and the route table the catch-all answers 404 or 405 from. Handlers get
// the parsed body and the request facts they asked for (uWS request objects are only valid synchronously, so
// parameters, headers and the query are copied up front, and only for the routes that read them).

import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js'
import { ANONYMOUS, hasScope, type Authenticator, type Principal, type Scope } from '../auth/principal.js'
import { ERRORS, GatewayError } from '../domain/errors.js'
import type { Metrics, Route } from '../metrics.js'
import { jsonNestingExceeds, MAX_JSON_DEPTH, PLAIN_LENGTH, readBody } from './body.js'
import { JSON_TYPE, send, sendError, type Exchange } from './respond.js'
import { isDbUnreachable } from '../store/pg.js'
import { BYTES } from './uws.js'

export interface RequestFacts {
  /** the :parameters, decoded; empty unless the route asked for them (RouteOptions.params) */
  readonly params: readonly string[]
  /** the raw query string; '' unless the route asked for it (RouteOptions.query) */
  readonly query: string
  /** the headers the route named (RouteOptions.headers), by lower-case name */
  readonly headers: Readonly<Record<string, string>>
  /** who is calling (authenticated by the router); ANONYMOUS on public routes */
  readonly principal: Principal
  /** the TCP peer's address (behind a proxy: the proxy's); '' unless the route asked for it (RouteOptions.remote) */
  readonly remoteAddress: string
}

export interface Reply {
  status: number
  /** text, or the bytes of an answer built as such (the check answer: check-request.ts) */
  body: string | Uint8Array
  contentType?: string
  /** the route the answer is counted under in the metrics, when not the registered one (check vs check_batch) */
  route?: Route
}

export type Handler = (body: unknown, req: RequestFacts) => Promise<Reply> | Reply

/**
 * A route that drives the uWS response itself (streaming); it gets the exchange the router opened for it. A throw
 * or a rejection becomes a 500 for that request, unless the handler answered already.
 */
export type ExchangeHandler = (ex: Exchange, req: HttpRequest, principal: Principal) => void | Promise<void>

type Method = 'get' | 'post' | 'put' | 'del' | 'patch' | 'options' | 'head' | 'connect' | 'trace' | 'any'

export interface RouterDeps {
  /** where each answered request is counted (a serving thread's goes to the main thread's Metrics) */
  metrics: Pick<Metrics, 'request'>
  log: Logger
  maxBodyBytes: number
  /** API keys and access tokens (auth/key-store.ts) */
  auth: Authenticator
  /** per-key token buckets (auth/rate-limit.ts): 0 to go on, else the seconds to wait */
  rateLimit: { take (keyId: string, ratePerSecond: number, now?: number): number }
  /**
   * With serving threads (SERVE_THREADS), the secret a thread's proxied request proves itself with in PEER_HEADER
   * (`<secret> <client address>`): only then is the header's address taken as the peer's. Unset: the header is ignored.
   */
  peerSecret?: string
}

/** The header a serving thread names the client's address in when it proxies a request to the main thread. */
export const PEER_HEADER = 'x-iys-thread-peer'

export interface RouteOptions {
  /** How many :parameters the pattern has. */
  params?: number
  /** Header names (lower case) the handler reads. */
  headers?: readonly string[]
  /** Whether the handler reads the query string. */
  query?: boolean
  /** Whether the handler reads the peer's address. */
  remote?: boolean
  /**
   * POST: checks that run on the request's facts before its body is read (a sign-in of the route's own); a throw is
   * the answer, and the connection is closed rather than the body read.
   */
  beforeBody?: (req: RequestFacts) => void
  /**
   * Who may call: 'public' (no key), or a key with any one of `scopes` (admin may do anything). Every route says so
   * (no default: a route cannot be left open by forgetting it).
   */
  auth?: 'public' | { scopes: readonly Scope[] }
  /** An İYS-shaped route: authentication and rate-limit errors are İYS's (H351, H353, H124) rather than ours. */
  iys?: boolean
}

/** What a route that asks for nothing gets: shared and frozen, so the hot path (POST /v1/check) copies nothing. */
const NO_FACTS: RequestFacts = Object.freeze({ params: Object.freeze([]), query: '', headers: Object.freeze({}), principal: ANONYMOUS, remoteAddress: '' })

/** NO_FACTS with a principal, made once per principal (a key store reload makes new principals; these go with them). */
const factsOf = new WeakMap<Principal, RequestFacts>()
function principalFacts (principal: Principal): RequestFacts {
  if (principal === ANONYMOUS) return NO_FACTS
  let facts = factsOf.get(principal)
  if (facts === undefined) factsOf.set(principal, facts = Object.freeze({ ...NO_FACTS, principal }))
  return facts
}

/** What a route that needs a key accepts: any one of its scopes; İYS's error bodies on İYS-shaped routes. */
interface Guard {
  scopes: readonly Scope[]
  iys: boolean
}

/** A registered pattern, split at '/', with its method: what the catch-all tells 404 from 405 by. */
interface KnownRoute {
  method: Method
  pattern: string
  segments: readonly string[]
  /** the scopes a key needs (any one of them); null: public */
  scopes: readonly Scope[] | null
}

/**
 * Every route is registered through this class, and every handler it registers runs inside a guard: a throw inside
 * a uWS callback ends the process, so anything a handler throws (or rejects with) becomes a 500 H015 for that
 * request only, logged as an unexpected error. Request framing (Content-Length) and path decoding are checked here
 * once for all routes.
 */
export class Router {
  private readonly app: TemplatedApp
  private readonly deps: RouterDeps
  private readonly table: KnownRoute[] = []
  /** Requests being answered right now (for a graceful shutdown). */
  inFlight = 0
  private draining = false
  private lengthHeaders = 0
  private readonly peerSecret: Buffer | null
  private readonly countLengthHeader = (key: string): void => { if (key === 'content-length') this.lengthHeaders++ }

  constructor (app: TemplatedApp, deps: RouterDeps) {
    this.app = app
    this.deps = deps
    this.peerSecret = deps.peerSecret !== undefined ? Buffer.from(deps.peerSecret) : null
  }

  /** POST with a JSON body (an empty body is H1042, bad JSON H014, nesting deeper than MAX_JSON_DEPTH JSON_TOO_DEEP). */
  post (pattern: string, route: Route, handler: Handler, opts: RouteOptions): void {
    const asks = asksForFacts(opts)
    this.handle('post', pattern, route, (ex, req, principal) => {
      const facts = asks ? this.facts(ex, req, opts, principal) : principalFacts(principal)
      if (opts.beforeBody !== undefined) {
        try {
          opts.beforeBody(facts)
        } catch (err) {
          this.fail(ex, route, err, true)
          return
        }
      }
      const contentType = req.getHeader(BYTES.contentType)
      if (contentType !== '' && !contentType.startsWith('application/json')) {
        this.fail(ex, route, new GatewayError('UNSUPPORTED_MEDIA_TYPE'))
        return
      }
      readBody(ex, req, this.deps.maxBodyBytes, (err, body) => {
        if (err !== null) { this.fail(ex, route, err); return }
        if (body!.length === 0) { this.fail(ex, route, new GatewayError('H1042')); return }
        if (jsonNestingExceeds(body!)) { this.fail(ex, route, new GatewayError('JSON_TOO_DEEP', { message: `The JSON body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels.` })); return }
        let parsed: unknown
        try {
          parsed = JSON.parse(body!.toString('utf8'))
        } catch (e) {
          this.fail(ex, route, new GatewayError('H014', { message: `${ERRORS.H014.message} (${(e as Error).message})` }))
          return
        }
        this.run(ex, route, handler, parsed, facts)
      })
    }, opts)
  }

  /** GET: the handler gets no body. */
  get (pattern: string, route: Route, handler: Handler, opts: RouteOptions): void {
    const asks = asksForFacts(opts)
    this.handle('get', pattern, route, (ex, req, principal) => {
      this.run(ex, route, handler, undefined, asks ? this.facts(ex, req, opts, principal) : principalFacts(principal))
    }, opts)
  }

  /**
   * Every route is registered here, and recorded in the route table. Routes that stream use it directly and answer
   * through `ex` (or `reply`/`fail`).
   */
  handle (method: Method, pattern: string, route: Route, fn: ExchangeHandler, opts: Pick<RouteOptions, 'auth' | 'iys'>): void {
    if (opts.auth === undefined) throw new Error(`route ${pattern} does not say who may call it (RouteOptions.auth)`)
    this.table.push({ method, pattern, segments: pattern.split('/'), scopes: opts.auth === 'public' ? null : opts.auth.scopes })
    this.listen(method, pattern, route, fn, opts.auth === 'public' ? null : { scopes: opts.auth.scopes, iys: opts.iys === true })
  }

  /** Every registered route with who may call it (for tests that walk them all, e.g. test/auth-matrix.test.ts). */
  routes (): { method: string, pattern: string, scopes: readonly Scope[] | null }[] {
    return this.table.map(r => ({ method: uwsName(r.method).toUpperCase(), pattern: r.pattern, scopes: r.scopes }))
  }

  /**
   * Registers the catch-all, after every route: a request no route took is 405 METHOD_NOT_ALLOWED when some route
   * serves its path with another method, 404 NOT_FOUND otherwise. Only here is the route table read.
   */
  catchAll (route: Route): void {
    this.listen('any', '/*', route, (ex, req) => {
      const url = req.getUrl()
      const method = req.getMethod()
      const served = this.table.some(r => r.method !== 'any' && uwsName(r.method) !== method && patternMatches(r.segments, url))
      this.fail(ex, route, new GatewayError(served ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND', { value: method.toUpperCase() + ' ' + url }))
    }, null)
  }

  /**
   * The one place a route reaches uWS: opens the exchange, refuses ambiguous framing and draining, and turns a throw
   * into a 500 for this request.
   */
  private listen (method: Method, pattern: string, route: Route, fn: ExchangeHandler, guard: Guard | null): void {
    const bodied = carriesBody(method)
    this.app[method](pattern, (res, req) => {
      const ex = this.begin(res)
      try {
        if (this.refuseIfDraining(ex, route)) return
        const bad = this.framingError(req, bodied)
        if (bad !== null) { this.refuseFraming(ex, route, bad); return }
        const principal = guard === null ? ANONYMOUS : this.authorize(req, guard, ex.startedAt)
        const out = fn(ex, req, principal)
        if (out instanceof Promise) out.then(undefined, (err: unknown) => { this.fail(ex, route, err) })
      } catch (err) {
        this.fail(ex, route, err)
      }
    })
  }

  private run (ex: Exchange, route: Route, handler: Handler, body: unknown, facts: RequestFacts): void {
    let result: Promise<Reply> | Reply
    try {
      result = handler(body, facts)
    } catch (e) {
      this.fail(ex, route, e)
      return
    }
    if (result instanceof Promise) result.then(r => { this.reply(ex, route, r) }, e => { this.fail(ex, route, e) })
    else this.reply(ex, route, result)
  }

  /** Answers `r`; never throws (a broken reply, e.g. a handler that returned nothing, becomes a 500). */
  reply (ex: Exchange, route: Route, r: Reply): void {
    if (ex.done) return
    try {
      send(ex, r.status, r.body, r.contentType ?? JSON_TYPE, this.draining)
    } catch (err) {
      this.fail(ex, route, err)
      return
    }
    this.settle(ex)
    this.deps.metrics.request(r.route ?? route, r.status, (performance.now() - ex.startedAt) / 1000)
  }

  begin (res: HttpResponse): Exchange {
    const ex = new OpenExchange(res, performance.now())
    res.onAborted(() => { ex.aborted = true; this.settle(ex) })
    this.inFlight++
    return ex
  }

  /** Marks an exchange answered (or abandoned); counted once. */
  settle (ex: Exchange): void {
    if (ex.done) return
    ex.done = true
    this.inFlight--
  }

  /**
   * Graceful shutdown, step one: requests that arrive from now on (keep-alive connections stay open after the
   * listen socket closes) get 503 with `Connection: close`; resolves when the requests in flight are answered.
   */
  async drain (timeoutMs: number): Promise<void> {
    this.draining = true
    const deadline = Date.now() + timeoutMs
    while (this.inFlight > 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  }

  /**
   * Who is calling, before anything of the request is read (an unauthenticated client never gets to upload a
   * body): 401 without a valid key or token, 403 when the key lacks every scope the route accepts, 429 when its
   * rate is spent. Brands and iysCodes named in the path or body are the handler's to check (requireBrand).
   */
  private authorize (req: HttpRequest, guard: Guard, now: number): Principal {
    const bearer = bearerOf(req.getHeader(BYTES.authorization))
    const principal = bearer === '' ? null : this.deps.auth.authenticate(bearer)
    if (principal === null) {
      throw guard.iys
        ? new GatewayError('H351')
        : new GatewayError('UNAUTHORIZED', { message: bearer === '' ? 'An API key is required: Authorization: Bearer <apiKey>.' : 'The API key or token is not valid (unknown, revoked or expired).' })
    }
    if (!mayCall(principal, guard.scopes)) {
      throw guard.iys
        ? new GatewayError('H353', { message: 'Kullanıcının bu işlem için yetkisi bulunmamaktadır.' })
        : new GatewayError('FORBIDDEN', { message: `This API key lacks the scope this route needs: ${guard.scopes.join(' or ')}.` })
    }
    if (principal.ratePerSecond > 0) {
      const wait = this.deps.rateLimit.take(principal.keyId, principal.ratePerSecond, now) // the request's clock: no second read
      if (wait > 0) throw rateLimited(guard.iys, wait)
    }
    return principal
  }

  /** True (and answered 503) when the gateway is shutting down. */
  refuseIfDraining (ex: Exchange, route: Route): boolean {
    if (!this.draining) return false
    this.fail(ex, route, new GatewayError('SERVICE_UNAVAILABLE', { message: 'The gateway is shutting down; retry on another instance.' }), true)
    return true
  }

  /** Answers an error; never throws. Unexpected errors (anything but a GatewayError) are a 500 H015, and logged. */
  fail (ex: Exchange, route: Route, err: unknown, close = false): void {
    const ge = err instanceof GatewayError ? err : isDbUnreachable(err) ? new GatewayError('DATABASE_UNAVAILABLE', { cause: err, retryAfterS: 5 }) : new GatewayError('H015', { cause: err })
    if (ge.code === 'H015') this.deps.log.error({ err }, 'unexpected error')
    if (ex.done) return // answered already, or the client is gone
    try {
      sendError(ex, ge, close || ge.code === 'BODY_TOO_LARGE')
    } catch (e) {
      this.deps.log.error({ err: e }, 'could not answer an error; closing the connection')
      try { ex.res.close() } catch { /* already closed */ }
    }
    this.settle(ex)
    this.deps.metrics.request(route, ge.status, (performance.now() - ex.startedAt) / 1000)
  }

  /**
   * A request whose body length is ambiguous is refused, and its connection closed: uWS frames the body by the first
   * Content-Length it sees, and a proxy in front that picks another would read the rest as a different request
   * (request smuggling). uWS itself drops most malformed values (signs, hex, lists) before JS sees them; an empty
   * value and a second header reach us. The headers are walked only when a Content-Length is present or the
   * route's method carries a body, so a GET pays one lookup.
   */
  private framingError (req: HttpRequest, bodied: boolean): GatewayError | null {
    const length = req.getHeader(BYTES.contentLength)
    if (length === '' && !bodied) return null
    this.lengthHeaders = 0
    req.forEach(this.countLengthHeader)
    if (this.lengthHeaders > 1) return new GatewayError('BAD_CONTENT_LENGTH', { location: 'content-length', message: 'The request has more than one Content-Length header.' })
    if (this.lengthHeaders === 1 && !PLAIN_LENGTH.test(length)) return new GatewayError('BAD_CONTENT_LENGTH', { location: 'content-length', value: length })
    return null
  }

  /**
   * Answers a framing error and closes the connection, on the next turn of the event loop: uWS goes on parsing
   * whatever follows in the same read (by its own framing) and would run a request hidden in the body, but it
   * drops the connection instead when a request arrives while an earlier answer is still pending. So a smuggled
   * request is never run, and the 400 gets out whenever nothing follows.
   */
  private refuseFraming (ex: Exchange, route: Route, err: GatewayError): void {
    setImmediate(() => { this.fail(ex, route, err, true) })
  }

  /**
   * The client's address: the TCP peer's, or, for a request a serving thread proxied (it carries the process's secret
   * in PEER_HEADER, which no client knows), the address of that thread's client, so per-client limits see the client.
   */
  remoteAddress (ex: Exchange, req: HttpRequest): string {
    const secret = this.peerSecret
    if (secret !== null) {
      const claimed = req.getHeader(PEER_HEADER)
      // Compared in constant time: the header reaches the public port too, where a client may try guessing.
      if (claimed.length > secret.length + 1 && claimed.charCodeAt(secret.length) === 32) {
        const given = Buffer.from(claimed.slice(0, secret.length))
        if (given.length === secret.length && timingSafeEqual(given, secret)) return claimed.slice(secret.length + 1)
      }
    }
    return Buffer.from(ex.res.getRemoteAddressAsText()).toString()
  }

  /** The facts `opts` asks for, copied from `req`; what it does not ask for is left empty. */
  private facts (ex: Exchange, req: HttpRequest, opts: RouteOptions, principal: Principal): RequestFacts {
    let params = NO_FACTS.params
    if (opts.params !== undefined && opts.params > 0) {
      const decoded: string[] = []
      for (let i = 0; i < opts.params; i++) {
        const raw = req.getParameter(i) ?? ''
        decoded.push(raw.includes('%') ? decodeSegment(raw) : raw)
      }
      params = decoded
    }
    let headers = NO_FACTS.headers
    if (opts.headers !== undefined && opts.headers.length > 0) {
      const named: Record<string, string> = {}
      for (const h of opts.headers) named[h] = req.getHeader(h)
      headers = named
    }
    const remoteAddress = opts.remote === true ? this.remoteAddress(ex, req) : ''
    return { params, query: opts.query === true ? req.getQuery() ?? '' : '', headers, principal, remoteAddress }
  }
}

/** A class, not an object literal: each literal was migrated to a new map in begin() (MigrateToMap, 1.5 % of a single check's samples in perf). */
class OpenExchange implements Exchange {
  aborted = false
  done = false
  constructor (public res: HttpResponse, public startedAt: number) {}
}

/**
 * The 429 for a wait of `seconds`, made once per wait (up to a minute) and thrown again: a client past its rate is
 * refused without building an Error each time (capturing its stack was 16 % of the gateway's CPU under a flood of
 * 429s in perf). Nothing mutates a GatewayError, and a 429 is never logged, so sharing one is safe.
 */
const rateLimitedErrors: GatewayError[][] = [[], []]
function rateLimited (iys: boolean, seconds: number): GatewayError {
  const make = (): GatewayError => new GatewayError(iys ? 'H124' : 'RATE_LIMITED', { retryAfterS: seconds })
  if (seconds > 60) return make()
  return rateLimitedErrors[iys ? 1 : 0]![seconds] ??= make()
}

/** The credential of an `Authorization: Bearer …` header ('' when there is none); the scheme in any case. */
function bearerOf (header: string): string {
  if (header.startsWith('Bearer ')) return header.length > 7 ? header.slice(7).trim() : '' // what clients send
  return header.length > 7 && header.charCodeAt(6) === 32 && header.slice(0, 6).toLowerCase() === 'bearer' ? header.slice(7).trim() : ''
}

/** Whether `p` has any one of `scopes` (a loop: this runs on every request). */
function mayCall (p: Principal, scopes: readonly Scope[]): boolean {
  for (let i = 0; i < scopes.length; i++) if (hasScope(p, scopes[i]!)) return true
  return false
}

const asksForFacts = (opts: RouteOptions): boolean =>
  (opts.params ?? 0) > 0 || (opts.headers?.length ?? 0) > 0 || opts.query === true || opts.remote === true

/** The method as uWS's `getMethod()` spells it (lower case; uWS registers DELETE as `del`). */
const uwsName = (method: Method): string => method === 'del' ? 'delete' : method

/**
 * Whether a registered pattern (split at '/') takes `url` as uWS would: a `:parameter` takes any one segment, a
 * final `*` the rest of the path; anything else is matched literally.
 */
function patternMatches (segments: readonly string[], url: string): boolean {
  const parts = url.split('/')
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!
    if (s === '*' && i === segments.length - 1) return parts.length >= segments.length
    if (i >= parts.length) return false
    if (s.charCodeAt(0) !== 58 /* : */ && s !== parts[i]) return false
  }
  return parts.length === segments.length
}

/** A percent-encoded path segment, decoded; a malformed one (`%`, `%ZZ`, bytes that are not UTF-8) is a 400. */
function decodeSegment (raw: string): string {
  try {
    return decodeURIComponent(raw)
  } catch {
    throw new GatewayError('MALFORMED_PATH', { location: 'path', value: raw })
  }
}

/** Whether requests to a route of this method are expected to carry a body (`any` may). */
const carriesBody = (method: Method): boolean => method !== 'get' && method !== 'head' && method !== 'options'

export const json = (status: number, value: unknown): Reply => ({ status, body: JSON.stringify(value) })
