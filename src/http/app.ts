// The HTTP front end over uWebSockets.js. It only translates: bytes → CheckQuery → Checker → bytes. The decision
// logic lives in check/ and policy/, so other front ends (SMPP, SMTP) reuse it unchanged.

import type { Logger } from 'pino'
import type { DecisionsHook } from '../audit/decisions-hook.js'
import type { Checker, CheckResult } from '../check/checker.js'
import { requireBrand, type Authenticator } from '../auth/principal.js'
import type { Metrics, ReadyReason } from '../metrics.js'
import { parseCheckRequest, serializeResults } from './check-request.js'
import { OPENAPI_DOCUMENT } from './openapi.js'
import { Router, type Reply } from './router.js'
import { uWS } from './uws.js'

export interface Readiness {
  ready: boolean
  /** 'ok', or the one reason it is not ready (bounded: the iys_ready label) */
  reason: ReadyReason
  [detail: string]: unknown
}

export interface AppDeps {
  checker: Checker
  metrics: Metrics
  log: Logger
  maxBodyBytes: number
  auth: Authenticator
  rateLimit: { take (keyId: string, ratePerSecond: number, now?: number): number }
  readiness: () => Readiness
  /** The post-decision hook every front end calls (metrics, scrub-yield stamp, decision journal). */
  decisions: DecisionsHook
  /** Registers further routes (consent API, push, history) on the same router. */
  routes?: (router: Router) => void
}

export function createApp (deps: AppDeps): { app: uWS.TemplatedApp, router: Router } {
  const { checker, metrics, decisions } = deps
  const app = uWS.App()
  const router = new Router(app, deps)

  router.post('/v1/check', 'check', (body, req) => {
    const query = parseCheckRequest(body)
    requireBrand(req.principal, query.brandCode, null, false)
    // A `recipients` list (up to 1000) is timed apart from a single check: one histogram would hide either.
    const route = (body as { recipients?: unknown }).recipients !== undefined ? 'check_batch' : 'check'
    const answer = (results: CheckResult[]): Reply => {
      decisions.afterDecisions('check', query, results) // journalled before the answer is sent
      return { status: 200, body: serializeResults(results), route }
    }
    // Answered from the replica (or the bloom filter alone), the check is synchronous: no promise hop.
    const results = checker.check(query)
    return results instanceof Promise ? results.then(answer) : answer(results)
  }, { auth: { scopes: ['check'] } })

  // Public: probes and scrapers carry no key (they reveal no recipient and change nothing).
  const PUBLIC = { auth: 'public' } as const
  router.get('/healthz', 'health', () => ({ status: 200, body: '{"status":"ok"}' }), PUBLIC)

  router.get('/readyz', 'ready', () => {
    const r = deps.readiness()
    return { status: r.ready ? 200 : 503, body: JSON.stringify(r) }
  }, PUBLIC)

  router.get('/metrics', 'metrics', async () => ({ status: 200, body: await metrics.registry.metrics(), contentType: metrics.registry.contentType }), PUBLIC)

  // The OpenAPI document of these routes (http/openapi.ts), serialised once; counted under the 'other' route label.
  const openapi: Reply = { status: 200, body: JSON.stringify(OPENAPI_DOCUMENT) }
  router.get('/openapi.json', 'other', () => openapi, PUBLIC)

  // Route modules register through the router only (its guard keeps a throw from reaching uWS, which would end the process).
  deps.routes?.(router)

  // Last: what no route took is 404, or 405 for a path a route serves with another method (the router's table).
  router.catchAll('other')

  return { app, router }
}
