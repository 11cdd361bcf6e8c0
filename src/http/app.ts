// The HTTP front end over uWebSockets.js. It only translates: bytes → CheckQuery → Checker → bytes. The decision
// logic lives in check/ and policy/, so other front ends (SMPP, SMTP) reuse it unchanged.

import type { Logger } from 'pino'
import { ERRORS, GatewayError } from '../domain/errors.js'
import type { Checker, CheckResult } from '../check/checker.js'
import type { Metrics, Route } from '../metrics.js'
import { readBody } from './body.js'
import { parseCheckRequest } from './check-request.js'
import { send, sendError, type Exchange } from './respond.js'
import { uWS } from './uws.js'

export interface Readiness {
  ready: boolean
  [detail: string]: unknown
}

export interface AppDeps {
  checker: Checker
  metrics: Metrics
  log: Logger
  maxBodyBytes: number
  readiness: () => Readiness
  /** Called with every batch of decisions after the answer is sent (decision log, later). */
  onDecisions?: (type: string, results: CheckResult[]) => void
}

export function createApp (deps: AppDeps): uWS.TemplatedApp {
  const { checker, metrics, log } = deps
  const app = uWS.App()

  const begin = (res: uWS.HttpResponse): Exchange => {
    const ex: Exchange = { res, aborted: false, startedAt: performance.now() }
    res.onAborted(() => { ex.aborted = true })
    return ex
  }
  const finish = (ex: Exchange, route: Route, status: number): void => {
    metrics.request(route, status, (performance.now() - ex.startedAt) / 1000)
  }
  const fail = (ex: Exchange, route: Route, err: unknown): void => {
    const ge = err instanceof GatewayError ? err : new GatewayError('H015', { cause: err })
    if (ge.code === 'H015') log.error({ err }, 'unexpected error')
    sendError(ex, ge, ge.code === 'BODY_TOO_LARGE')
    finish(ex, route, ge.status)
  }

  app.post('/v1/check', (res, req) => {
    const ex = begin(res)
    const contentType = req.getHeader('content-type')
    if (contentType !== '' && !contentType.startsWith('application/json')) {
      fail(ex, 'check', new GatewayError('UNSUPPORTED_MEDIA_TYPE'))
      return
    }
    readBody(ex, req, deps.maxBodyBytes, (err, body) => {
      if (err !== null) { fail(ex, 'check', err); return }
      if (body!.length === 0) { fail(ex, 'check', new GatewayError('H1042')); return }
      let parsed: unknown
      try {
        parsed = JSON.parse(body!.toString('utf8'))
      } catch (e) {
        fail(ex, 'check', new GatewayError('H014', { message: `${ERRORS.H014.message} (${(e as Error).message})` }))
        return
      }
      let query
      try { query = parseCheckRequest(parsed) } catch (e) { fail(ex, 'check', e); return }
      checker.check(query).then(results => {
        send(ex, 200, serializeResults(results))
        finish(ex, 'check', 200)
        for (let i = 0; i < results.length; i++) metrics.decision(results[i]!.reason, query.type)
        deps.onDecisions?.(query.type, results)
      }, e => fail(ex, 'check', e))
    })
  })

  app.get('/healthz', (res) => {
    const ex = begin(res)
    send(ex, 200, '{"status":"ok"}')
    finish(ex, 'health', 200)
  })

  app.get('/readyz', (res) => {
    const ex = begin(res)
    const r = deps.readiness()
    const status = r.ready ? 200 : 503
    send(ex, status, JSON.stringify(r))
    finish(ex, 'ready', status)
  })

  app.get('/metrics', (res) => {
    const ex = begin(res)
    metrics.registry.metrics().then(text => {
      send(ex, 200, text, metrics.registry.contentType)
      finish(ex, 'metrics', 200)
    }, e => fail(ex, 'metrics', e))
  })

  app.any('/*', (res, req) => {
    const ex = begin(res)
    const known = ['/v1/check', '/healthz', '/readyz', '/metrics'].includes(req.getUrl())
    fail(ex, 'other', new GatewayError(known ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND', { value: req.getMethod().toUpperCase() + ' ' + req.getUrl() }))
  })

  return app
}

// Hand-written serialisation of the hot path's answer: the shapes are fixed and only `recipient` (the caller's raw
// input) needs escaping; `normalized` is E.164 or an e-mail that passed a strict ASCII pattern without quotes or
// backslashes. Measurably faster than JSON.stringify over per-item objects, and it leaves `state` out.
export function serializeResults (results: CheckResult[]): string {
  let s = '{"results":['
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!
    if (i > 0) s += ','
    s += '{"recipient":' + (r.recipient === undefined ? 'null' : JSON.stringify(r.recipient)) +
      ',"normalized":' + (r.normalized === null ? 'null' : '"' + r.normalized + '"') +
      ',"allowed":' + r.allowed + ',"reason":"' + r.reason + '"'
    if (r.consent !== undefined) {
      s += ',"consent":{"status":"' + r.consent.status + '","source":"' + r.consent.source + '","consentDate":"' + r.consent.consentDate + '"}'
    }
    if (r.error !== undefined) s += ',"error":{"code":"' + r.error.code + '","message":' + JSON.stringify(r.error.message) + '}'
    s += '}'
  }
  return s + ']}'
}
