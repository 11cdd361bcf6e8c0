// The HTTP front end over uWebSockets.js. It only translates: bytes → CheckQuery → Checker → bytes. The decision
// logic lives in check/ and policy/, so other front ends (SMPP, SMTP) reuse it unchanged.

import type { Logger } from 'pino'
import type { Checker, CheckQuery, CheckResult } from '../check/checker.js'
import type { Metrics } from '../metrics.js'
import { parseCheckRequest } from './check-request.js'
import { Router } from './router.js'
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
  /** Called with every batch of decisions once they are made (the decision log). */
  onDecisions?: (query: CheckQuery, results: CheckResult[]) => void
  /** Registers further routes (consent API, push, history) on the same router. */
  routes?: (router: Router) => void
}

export function createApp (deps: AppDeps): { app: uWS.TemplatedApp, router: Router } {
  const { checker, metrics } = deps
  const app = uWS.App()
  const router = new Router(app, deps)

  router.post('/v1/check', 'check', async (body) => {
    const query = parseCheckRequest(body)
    const results = await checker.check(query)
    metrics.decisions(query.type, results)
    deps.onDecisions?.(query, results)
    return { status: 200, body: serializeResults(results) }
  })

  router.get('/healthz', 'health', () => ({ status: 200, body: '{"status":"ok"}' }))

  router.get('/readyz', 'ready', () => {
    const r = deps.readiness()
    return { status: r.ready ? 200 : 503, body: JSON.stringify(r) }
  })

  router.get('/metrics', 'metrics', async () => ({ status: 200, body: await metrics.registry.metrics(), contentType: metrics.registry.contentType }))

  // Route modules register through the router only (its guard keeps a throw from reaching uWS, which would end the process).
  deps.routes?.(router)

  // Last: what no route took is 404, or 405 for a path a route serves with another method (the router's table).
  router.catchAll('other')

  return { app, router }
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
