// The one way a JSON route is served: abort tracking, body limit, Content-Type and JSON checks, İYS error bodies,
// metrics and logging of unexpected errors. Handlers get the parsed body and the request facts they asked for
// (uWS request objects are only valid synchronously, so parameters, headers and the query are copied up front).

import type { Logger } from 'pino'
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js'
import { ERRORS, GatewayError } from '../domain/errors.js'
import type { Metrics, Route } from '../metrics.js'
import { readBody } from './body.js'
import { JSON_TYPE, send, sendError, type Exchange } from './respond.js'

export interface RequestFacts {
  params: string[]
  query: string
  headers: Record<string, string>
}

export interface Reply {
  status: number
  body: string
  contentType?: string
}

export type Handler = (body: unknown, req: RequestFacts) => Promise<Reply> | Reply

export interface RouterDeps {
  metrics: Metrics
  log: Logger
  maxBodyBytes: number
}

export interface RouteOptions {
  /** How many :parameters the pattern has. */
  params?: number
  /** Header names (lower case) the handler reads. */
  headers?: readonly string[]
}

export class Router {
  private readonly app: TemplatedApp
  private readonly deps: RouterDeps
  /** Requests being answered right now (for a graceful shutdown). */
  inFlight = 0
  private draining = false

  constructor (app: TemplatedApp, deps: RouterDeps) {
    this.app = app
    this.deps = deps
  }

  /** POST with a JSON body (an empty body is H1042, bad JSON H014). */
  post (pattern: string, route: Route, handler: Handler, opts: RouteOptions = {}): void {
    this.app.post(pattern, (res, req) => {
      const ex = this.begin(res)
      if (this.refuseIfDraining(ex, route)) return
      const facts = this.facts(req, opts)
      const contentType = req.getHeader('content-type')
      if (contentType !== '' && !contentType.startsWith('application/json')) {
        this.fail(ex, route, new GatewayError('UNSUPPORTED_MEDIA_TYPE'))
        return
      }
      readBody(ex, req, this.deps.maxBodyBytes, (err, body) => {
        if (err !== null) { this.fail(ex, route, err); return }
        if (body!.length === 0) { this.fail(ex, route, new GatewayError('H1042')); return }
        let parsed: unknown
        try {
          parsed = JSON.parse(body!.toString('utf8'))
        } catch (e) {
          this.fail(ex, route, new GatewayError('H014', { message: `${ERRORS.H014.message} (${(e as Error).message})` }))
          return
        }
        this.run(ex, route, handler, parsed, facts)
      })
    })
  }

  /** GET: the handler gets no body. */
  get (pattern: string, route: Route, handler: Handler, opts: RouteOptions = {}): void {
    this.app.get(pattern, (res, req) => {
      const ex = this.begin(res)
      if (this.refuseIfDraining(ex, route)) return
      this.run(ex, route, handler, undefined, this.facts(req, opts))
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
    if (result instanceof Promise) result.then(r => this.reply(ex, route, r), e => this.fail(ex, route, e))
    else this.reply(ex, route, result)
  }

  reply (ex: Exchange, route: Route, r: Reply): void {
    send(ex, r.status, r.body, r.contentType ?? JSON_TYPE, this.draining)
    this.settle(ex)
    this.deps.metrics.request(route, r.status, (performance.now() - ex.startedAt) / 1000)
  }

  begin (res: HttpResponse): Exchange {
    const ex: Exchange = { res, aborted: false, startedAt: performance.now(), done: false }
    this.inFlight++
    res.onAborted(() => { ex.aborted = true; this.settle(ex) })
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

  /** True (and answered 503) when the gateway is shutting down. */
  refuseIfDraining (ex: Exchange, route: Route): boolean {
    if (!this.draining) return false
    this.fail(ex, route, new GatewayError('SERVICE_UNAVAILABLE', { message: 'The gateway is shutting down; retry on another instance.' }), true)
    return true
  }

  fail (ex: Exchange, route: Route, err: unknown, close = false): void {
    const ge = err instanceof GatewayError ? err : new GatewayError('H015', { cause: err })
    if (ge.code === 'H015') this.deps.log.error({ err }, 'unexpected error')
    sendError(ex, ge, close || ge.code === 'BODY_TOO_LARGE')
    this.settle(ex)
    this.deps.metrics.request(route, ge.status, (performance.now() - ex.startedAt) / 1000)
  }

  private facts (req: HttpRequest, opts: RouteOptions): RequestFacts {
    const params: string[] = []
    for (let i = 0; i < (opts.params ?? 0); i++) params.push(decodeURIComponent(req.getParameter(i) ?? ''))
    const headers: Record<string, string> = {}
    for (const h of opts.headers ?? []) headers[h] = req.getHeader(h)
    return { params, query: req.getQuery() ?? '', headers }
  }
}

export const json = (status: number, value: unknown): Reply => ({ status, body: JSON.stringify(value) })
