// One serving thread (SERVE_THREADS, http/serve-threads.ts has the design): a uWebSockets.js app on the public port
// that answers POST /v1/check itself, through the same Router and check route as the main thread, and proxies every
// other request to the main thread's internal port.
//
// Auth: a KeyStore (and token verifier) of its own over one Postgres connection, rather than key snapshots posted by
// the main thread: the same tested code, polling on this thread's own loop, so a revocation reaches every thread
// within AUTH_POLL_MS whatever the main thread is busy with. Rate limits: a RateLimiter of its own, sharing the
// buckets through Redis like another gateway process would.

import { Readable } from 'node:stream'
import { parentPort, workerData } from 'node:worker_threads'
import { Pool as HttpPool } from 'undici'
import type { HttpRequest, HttpResponse } from 'uWebSockets.js'
import { KeyStore } from '../auth/key-store.js'
import { RateLimiter } from '../auth/rate-limit.js'
import { TokenIssuer } from '../auth/tokens.js'
import { Checker, type CheckQuery, type CheckResult } from '../check/checker.js'
import { GatewayError } from '../domain/errors.js'
import type { ConsentType } from '../domain/vocabulary.js'
import { layout } from '../filter/layout.js'
import type { ReplicaTable } from '../filter/replica.js'
import { tableOfShare, viewOfShare, type BloomShare, type ReplicaShare } from '../filter/shared-view.js'
import type { RedisView } from '../filter/view.js'
import { createLogger } from '../log.js'
import { REASON_INDEX, REASONS } from '../policy/decide.js'
import type { Route } from '../metrics.js'
import { createPool } from '../store/pg.js'
import { createRedis } from '../store/redis.js'
import { checkRoute } from './app.js'
import { PEER_HEADER, Router } from './router.js'
import { ackError, VOUCH_ID, VOUCH_UNTIL, type Ack, type FromThread, type JournalItem, type ServeThreadData, type ToThread } from './serve-threads.js'
import { statusLine } from './respond.js'
import { uWS } from './uws.js'

const data = workerData as ServeThreadData
const config = data.config
const port = parentPort!
const log = createLogger(config.logLevel).child({ thread: data.thread })
const post = (m: FromThread): void => { port.postMessage(m) }

const redis = createRedis(config.redisUrl!, { timeoutMs: config.redisTimeoutMs, name: 'iys-gateway-thread' })
redis.on('error', () => {}) // reported through the checks (STORE_UNAVAILABLE) and the main thread's /readyz
const keysLayout = layout(config.redisPrefix)

// ---- The filter: the main thread's bloom and replica, by their ids (a posted buffer is a new object every time).

const vouch = new BigInt64Array(data.vouch)
let view: RedisView | null = null
let bloomId = 0
let replica: { id: bigint, table: ReplicaTable } | null = null

/** The replica while the main thread vouches for it: read id, time, id (serve-threads.ts sync() clears the id first). */
function exact (): ReplicaTable | null {
  const r = replica
  if (r === null || Atomics.load(vouch, VOUCH_ID) !== r.id) return null
  const until = Number(Atomics.load(vouch, VOUCH_UNTIL))
  return Atomics.load(vouch, VOUCH_ID) === r.id && Date.now() < until ? r.table : null
}

function useView (b: BloomShare | null): void {
  if (b === null) { view = null; bloomId = 0; return }
  if (b.id === bloomId) return
  const v = viewOfShare(b, redis, keysLayout, config.redisTimeoutMs)
  v.exact = exact
  view = v
  bloomId = b.id
}

function useReplica (r: ReplicaShare): void {
  if (replica !== null && replica.id === BigInt(r.id)) return
  replica = { id: BigInt(r.id), table: tableOfShare(r) }
}

useView(data.view)
if (data.replica !== null) useReplica(data.replica)

// ---- Figures and decisions for the main thread, gathered over one turn of the event loop and posted together.

let requests: (Route | number)[] = []
let checks: JournalItem[] = []
let counted: Partial<Record<ConsentType, number[]>> = {}
let bloomMaybe = 0
let bloomAbsent = 0
let storeErrors = 0
let flushing = false
const waiting = new Map<number, { resolve: () => void, reject: (err: GatewayError) => void }>()
let lastId = 0

function flush (): void {
  flushing = false
  post({ t: 'batch', checks, counted, requests, bloomMaybe, bloomAbsent, storeErrors })
  checks = []; counted = {}; requests = []; bloomMaybe = bloomAbsent = storeErrors = 0
}
function flushSoon (): void {
  if (flushing) return
  flushing = true
  setImmediate(flush)
}

const checker = new Checker(() => view, { tacirAllowedWithoutRecord: config.tacirAllowedWithoutRecord, storeFailureMode: config.storeFailureMode }, {
  storeError: () => { storeErrors++; flushSoon() },
  bloom: (maybe, absent) => { bloomMaybe += maybe; bloomAbsent += absent; flushSoon() }
})

/**
 * Journals a check's decisions through the main thread: settles when it has acknowledged them. Without a journal
 * only their counts go there: posting a batch's results is a structured clone on both threads, here for nothing.
 */
function afterChecks (query: CheckQuery, results: CheckResult[]): Promise<void> | undefined {
  if (!data.journal) {
    const counts = counted[query.type] ??= new Array<number>(REASONS.length).fill(0)
    for (let i = 0; i < results.length; i++) counts[REASON_INDEX[results[i]!.reason]]!++
    flushSoon()
    return undefined
  }
  const id = ++lastId
  checks.push([id, { brandCode: query.brandCode, type: query.type, recipientType: query.recipientType, commercial: query.commercial }, results])
  flushSoon()
  return new Promise((resolve, reject) => { waiting.set(id, { resolve, reject }) })
}

function acknowledge (acks: Ack[]): void {
  for (const a of acks) {
    const id = typeof a === 'number' ? a : a.id
    const w = waiting.get(id)
    if (w === undefined) continue
    waiting.delete(id)
    if (typeof a === 'number') w.resolve()
    else w.reject(ackError(a))
  }
}

// ---- Auth and the app.

const authPool = config.databaseUrl !== null ? createPool(config.databaseUrl, 1, { name: 'iys-gateway-thread-auth', connectTimeoutMs: 2000, queryTimeoutMs: 2000 }) : null
const keys = authPool !== null ? KeyStore.postgres(authPool, { pollMs: config.authPollMs, log }) : config.demoKey ? KeyStore.demo() : KeyStore.none()
await keys.start()
// Without Postgres the main thread's tokens are signed with a secret of its own, which this thread cannot check:
// such a token gets 401 from a serving thread (OAuth tokens are for the İYS-shaped routes, which are proxied).
keys.useTokens(authPool !== null ? await TokenIssuer.postgres(authPool, config.oauth, { log }) : TokenIssuer.local(config.oauth))
const rateLimit = new RateLimiter({ redis, prefix: config.redisPrefix + 'rate:', log })

const app = uWS.App()
const router = new Router(app, {
  metrics: { request: (route, status, seconds) => { requests.push(route, status, seconds); flushSoon() } },
  log,
  maxBodyBytes: config.maxBodyBytes,
  auth: keys,
  rateLimit
})
checkRoute(router, { checker, afterChecks })

// ---- Everything else: proxied to the main thread, streamed both ways with backpressure.

const main = new HttpPool(`http://127.0.0.1:${data.internalPort}`, { connections: 64, pipelining: 1 })
/** Hop-by-hop headers and those undici or uWS write themselves. */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'expect', 'proxy-connection', 'te', 'trailer', PEER_HEADER])
const NOT_RETURNED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'date', 'uwebsockets'])

app.any('/*', (res, req) => { proxy(res, req) })

function proxy (res: HttpResponse, req: HttpRequest): void {
  const ex = router.begin(res)
  if (router.refuseIfDraining(ex, 'other')) return
  const abort = new AbortController()
  res.onAborted(() => { ex.aborted = true; router.settle(ex); abort.abort() })
  const method = req.getMethod().toUpperCase()
  const query = req.getQuery()
  const path = req.getUrl() + (query !== undefined && query !== '' ? '?' + query : '')
  const headers: string[] = []
  let bodied = false
  req.forEach((name, value) => {
    if (name === 'content-length' || name === 'transfer-encoding') bodied ||= name === 'transfer-encoding' || value !== '0'
    if (!NOT_FORWARDED.has(name)) headers.push(name, value)
  })
  headers.push(PEER_HEADER, data.peerSecret + ' ' + Buffer.from(res.getRemoteAddressAsText()).toString())

  // The upload: uWS chunks are valid only inside onData, so each is copied; a full stream pauses the client.
  // Once the answer is there (it may come before the whole upload: a 413, a 401), the rest of the upload is dropped
  // and the socket is not paused any more: a paused uWS socket does not write either.
  let answered = false
  let paused = false
  let body: Readable | null = null
  if (bodied) {
    body = new Readable({ read () { if (paused && !ex.aborted) { paused = false; res.resume() } } })
    const upload = body
    res.onData((ab, isLast) => {
      if (answered) return
      const more = upload.push(Buffer.from(new Uint8Array(ab)))
      if (isLast) upload.push(null)
      else if (!more) { paused = true; res.pause() }
    })
  }

  main.request({ path, method, headers, body, signal: abort.signal }).then(answer => {
    const length = answer.headers['content-length']
    const total = typeof length === 'string' ? Number(length) : -1
    answered = true
    if (ex.aborted) { answer.body.destroy(); return }
    if (paused) { paused = false; res.resume() }
    res.cork(() => {
      res.writeStatus(statusLine(answer.statusCode))
      for (const [name, value] of Object.entries(answer.headers)) {
        if (NOT_RETURNED.has(name) || value === undefined) continue
        if (Array.isArray(value)) for (const v of value) res.writeHeader(name, v)
        else res.writeHeader(name, value)
      }
    })
    streamBack(res, ex, answer.body, total, method === 'HEAD' || answer.statusCode === 204 || answer.statusCode === 304)
  }, (err: unknown) => {
    body?.destroy()
    if (ex.aborted) return
    log.warn({ err }, 'the main thread did not answer a proxied request')
    router.fail(ex, 'other', new GatewayError('SERVICE_UNAVAILABLE', { message: 'The gateway is restarting; retry.', retryAfterS: 1 }), true)
  })
}

/**
 * The main thread's answer, back to the client: with its Content-Length through tryEnd (uWS writes it), else
 * chunked through write; the upstream stream pauses whenever the client's socket is full and resumes in onWritable.
 */
function streamBack (res: HttpResponse, ex: ReturnType<Router['begin']>, stream: Readable, total: number, bodiless: boolean): void {
  const finish = (): void => { router.settle(ex) }
  if (bodiless) {
    stream.resume()
    if (!ex.aborted) res.cork(() => { res.endWithoutBody() })
    finish()
    return
  }
  let pending: Buffer | null = null
  let pendingOffset = 0
  res.onWritable(offset => {
    if (ex.aborted) return true
    if (pending !== null && total >= 0) {
      const [ok, done] = res.tryEnd(pending.subarray(offset - pendingOffset), total)
      if (ok || done) { pending = null; stream.resume() } // done: the stream's end follows
      return ok || done
    }
    pending = null
    stream.resume()
    return true
  })
  stream.on('data', (chunk: Buffer) => {
    if (ex.aborted) { stream.destroy(); return }
    res.cork(() => {
      if (total >= 0) {
        pendingOffset = res.getWriteOffset()
        const [ok, done] = res.tryEnd(chunk, total)
        if (!done && !ok) { pending = chunk; stream.pause() }
      } else if (!res.write(chunk)) {
        pending = chunk // written (buffered by uWS): only wait for the socket to drain
        stream.pause()
      }
    })
  })
  stream.on('end', () => {
    if (!ex.aborted && total < 0) res.cork(() => { res.end() })
    finish()
  })
  stream.on('error', () => {
    if (!ex.aborted) { ex.aborted = true; res.close() } // half an answer: the client must see it cut, not complete
    finish()
  })
}

// ---- Lifecycle.

const listenSocket = await new Promise<uWS.us_listen_socket | false>(resolve => { app.listen(config.host, data.port, resolve) })
if (listenSocket === false) {
  log.error({ host: config.host, port: data.port }, 'serving thread cannot listen on the public port')
  process.exit(1)
}
post({ t: 'listening' })

// A fault this thread cannot answer for (the router turns a handler's throw into a 500; this is anything else): its
// uWS sockets are closed first, since a thread that ends holding them takes the whole process down (Node aborts
// closing that loop), and the main thread starts it again with back-off. Its requests in flight are cut off.
process.on('uncaughtException', err => {
  log.error({ err }, 'serving thread failed; closing its connections and stopping (the main thread starts it again)')
  try { (app as unknown as { close (): void }).close() } catch { /* already closed */ }
  process.exit(1)
})

// Messages posted meanwhile (a new view, acknowledgements cannot be among them yet) wait in the port's queue.
port.on('message', (m: ToThread) => {
  switch (m.t) {
    case 'view': useView(m.view); break
    case 'replica': useReplica(m.replica); break
    case 'acks': acknowledge(m.acks); break
    case 'drain': void drain(m.timeoutMs); break
    case 'fail': setImmediate(() => { throw new Error('failed on request (ServeThreads#fail)') }); break
  }
})

async function drain (timeoutMs: number): Promise<void> {
  uWS.us_listen_socket_close(listenSocket as uWS.us_listen_socket)
  await router.drain(timeoutMs) // checks in flight get their acknowledgements meanwhile, proxied requests their answers
  // Every connection closed too (TemplatedApp#close: in this uWS build, not in its typings): a thread whose loop
  // still holds uWS sockets cannot be terminated (Node aborts the whole process closing that loop).
  ;(app as unknown as { close (): void }).close()
  if (flushing) flush()
  await keys.stop()
  rateLimit.close()
  await authPool?.end().catch(() => {})
  await main.close().catch(() => {})
  redis.disconnect()
  post({ t: 'drained' })
}
