// The HTTP front end over uWebSockets.js. It only translates: bytes → CheckQuery → Checker → bytes. The decision
// logic lives in check/ and policy/, so other front ends (SMPP, SMTP) reuse it unchanged.

import type { Logger } from 'pino'
import { journalUnavailable } from '../audit/decision-log.js'
import type { DecisionsHook } from '../audit/decisions-hook.js'
import { deferAppends, NOTHING_DEFERRED } from '../audit/journal.js'
import type { Checker, CheckQuery, CheckResult } from '../check/checker.js'
import { requireBrand, type Authenticator } from '../auth/principal.js'
import type { Metrics, ReadyReason } from '../metrics.js'
import { parseCheckRequest, serializeResults } from './check-request.js'
import { OPENAPI_DOCUMENT } from './openapi.js'
import { Router, type Reply, type RouterDeps } from './router.js'
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
  /** Where the router counts answered requests, when not `metrics` (SERVE_THREADS: per thread too). */
  requests?: RouterDeps['metrics']
  /** SERVE_THREADS: the secret proxied requests carry (RouterDeps.peerSecret). */
  peerSecret?: string
}

export interface CheckRouteDeps {
  checker: Pick<Checker, 'check'>
  /**
   * The post-decision hook of a check, called before its answer is sent: returns once the decisions are journalled
   * (the main thread: DecisionsHook), or a promise that settles then (a serving thread asks the main thread,
   * http/serve-thread.ts). A throw or rejection is the answer instead (a 503 when the journal refuses).
   */
  afterChecks: (query: CheckQuery, results: CheckResult[]) => void | Promise<void>
}

/** POST /v1/check, on the main thread's router and on every serving thread's (one route code for both). */
export function checkRoute (router: Router, deps: CheckRouteDeps): void {
  const { checker, afterChecks } = deps
  router.post('/v1/check', 'check', (body, req) => {
    const query = parseCheckRequest(body)
    requireBrand(req.principal, query.brandCode, null, false)
    // A `recipients` list (up to 1000) is timed apart from a single check: one histogram would hide either.
    const route = (body as { recipients?: unknown }).recipients !== undefined ? 'check_batch' : 'check'
    const answer = (results: CheckResult[]): Reply | Promise<Reply> => {
      const journalled = afterChecks(query, results) // journalled before the answer is sent
      const reply: Reply = { status: 200, body: serializeResults(results), route }
      return journalled instanceof Promise ? journalled.then(() => reply) : reply
    }
    // Answered from the replica (or the bloom filter alone), the check is synchronous: no promise hop.
    const results = checker.check(query)
    return results instanceof Promise ? results.then(answer) : answer(results)
  }, { auth: { scopes: ['check'] } })
}

export function createApp (deps: AppDeps): { app: uWS.TemplatedApp, router: Router } {
  const { metrics, decisions } = deps
  const app = uWS.App()
  const router = new Router(app, { ...deps, metrics: deps.requests ?? metrics })

  // A check's decision lines join those of the other requests of this turn of the event loop in one write, which its
  // answer waits for (journal.ts deferAppends): a write() per check was 9 % of the gateway's CPU in perf.
  checkRoute(router, {
    checker: deps.checker,
    afterChecks: (query, results) => {
      const { written } = deferAppends(() => { decisions.afterDecisions('check', query, results) }, 'loop')
      return written === NOTHING_DEFERRED ? undefined : written.catch((err: unknown) => { throw journalUnavailable(err) })
    }
  })

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
