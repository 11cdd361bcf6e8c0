// SERVE_THREADS=N: N−1 serving threads beside the main thread, each a uWebSockets.js app on the same public port
// (uWS listens with SO_REUSEPORT: the kernel spreads connections over the listening sockets). This is the main
// thread's side; the thread itself is http/serve-thread.ts.
//
// A thread answers POST /v1/check itself, over this thread's filter: the bloom filter's and the replica's
// SharedArrayBuffers (posted when the mirror switches version, or the replica attaches or is dropped) plus a Redis
// connection of its own. Whether the replica may answer stays this thread's judgement (FilterMirror.vouchedReplica):
// shared through VOUCH, two 64-bit words read with Atomics, so no message is needed per request. Every other route is
// proxied by the thread to this thread's internal loopback port. Decisions stay with one writer: a thread posts each
// check's decisions here and answers only once they are journalled and acknowledged (the journal-before-answer rule
// holds on every thread); its request figures come along, so /metrics counts every thread.

import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import client from 'prom-client'
import type { Logger } from 'pino'
import type { DecisionsHook } from '../audit/decisions-hook.js'
import type { CheckQuery, CheckResult } from '../check/checker.js'
import type { Config } from '../config.js'
import { GatewayError, type ErrorCode } from '../domain/errors.js'
import { CONSENT_TYPES, type ConsentType } from '../domain/vocabulary.js'
import type { FilterMirror } from '../filter/mirror.js'
import type { ReplicaTable } from '../filter/replica.js'
import { bloomShare, replicaShare, sharedId, type BloomShare, type ReplicaShare } from '../filter/shared-view.js'
import type { RedisView } from '../filter/view.js'
import type { Metrics, Route } from '../metrics.js'
import { projectUrl } from '../util/paths.js'

/** VOUCH (BigInt64Array): the id of the replica that may answer (0: none), and until when (ms since the epoch). */
export const VOUCH_ID = 0
export const VOUCH_UNTIL = 1

export interface ServeThreadData {
  config: Config
  /** 1 … SERVE_THREADS−1 (the main thread is 0) */
  thread: number
  /** the public port (the main thread's, also when PORT=0 picked it) */
  port: number
  internalPort: number
  peerSecret: string
  /**
   * Whether decisions are journalled (a decision log): then a check's answer waits for the main thread's
   * acknowledgement; without one there is nothing to wait for, and the thread sends counts only (`counted`).
   */
  journal: boolean
  vouch: SharedArrayBuffer
  view: BloomShare | null
  replica: ReplicaShare | null
}

/** What a thread journals: the check's query without its recipients (the results carry them). */
export type QueryHead = Omit<CheckQuery, 'recipients'>
/** A check's decisions to journal, with the thread's number for the acknowledgement. */
export type JournalItem = [id: number, query: QueryHead, results: CheckResult[]]
/** Journalled (the id), or refused: the error the thread answers instead. */
export type Ack = number | { id: number, code: ErrorCode, message: string, retryAfterS: number | undefined }

export type ToThread =
  | { t: 'view', view: BloomShare | null }
  | { t: 'replica', replica: ReplicaShare }
  | { t: 'acks', acks: Ack[] }
  | { t: 'drain', timeoutMs: number }
  | { t: 'fail' }

export type FromThread =
  | { t: 'listening' }
  /** requests: route, status, seconds, … of the answers the thread gave itself (proxied ones are counted here) */
  /** counted: decisions by channel and reason index (REASONS), when nothing is journalled */
  | { t: 'batch', checks: JournalItem[], counted: Partial<Record<ConsentType, number[]>>, requests: (Route | number)[], bloomMaybe: number, bloomAbsent: number, storeErrors: number }
  | { t: 'drained' }

/** How often the replica's vouch is refreshed (it moves with every piece of news the mirror gets). */
const VOUCH_REFRESH_MS = 20
/** Restart back-off of a thread that died: doubling from the first to the last, reset after a thread lived a minute. */
const RESTART_FIRST_MS = 250
const RESTART_MAX_MS = 10_000

// The thread is compiled JavaScript: the built one, also when this module runs from src/ under the test runner.
const threadFile = fileURLToPath(projectUrl('dist/src/http/serve-thread.js'))

export interface ServeThreadsDeps {
  config: Config
  port: number
  internalPort: number
  peerSecret: string
  /** decisions are journalled (ServeThreadData.journal) */
  journal: boolean
  mirror: FilterMirror
  decisions: DecisionsHook
  metrics: Metrics
  log: Logger
}

interface Slot {
  thread: number
  worker: Worker | null
  listening: boolean
  startedAt: number
  failures: number
  restartTimer: NodeJS.Timeout | null
  drained: (() => void) | null
}

const NO_RECIPIENTS: readonly unknown[] = Object.freeze([])

export class ServeThreads {
  private readonly deps: ServeThreadsDeps
  private readonly slots: Slot[] = []
  private readonly vouch = new BigInt64Array(new SharedArrayBuffer(16))
  private postedView: RedisView | null = null
  private postedTable: ReplicaTable | null = null
  private timer: NodeJS.Timeout | null = null
  private stopping = false
  /** Requests each thread answered itself (the main thread's include what it answered for the others' proxies). */
  private readonly answered: client.Counter.Internal[]

  constructor (deps: ServeThreadsDeps) {
    this.deps = deps
    const counter = new client.Counter({ name: 'iys_serve_thread_requests_total', help: 'HTTP requests answered, by serving thread (0: the main thread, which also answers what the others proxy)', labelNames: ['thread'], registers: [deps.metrics.registry] })
    this.answered = Array.from({ length: deps.config.serveThreads }, (_, i) => counter.labels(String(i)))
    for (let i = 1; i < deps.config.serveThreads; i++) this.slots.push({ thread: i, worker: null, listening: false, startedAt: 0, failures: 0, restartTimer: null, drained: null })
  }

  /** Counts a request the main thread answered (its router's metrics go through here). */
  readonly request = (route: Route, status: number, seconds: number): void => {
    this.deps.metrics.request(route, status, seconds)
    this.answered[0]!.inc()
  }

  start (): void {
    this.sync()
    this.deps.mirror.onReplica = () => { this.sync() }
    this.timer = setInterval(() => { this.sync() }, VOUCH_REFRESH_MS)
    this.timer.unref()
    for (const slot of this.slots) this.spawn(slot)
  }

  /**
   * Makes serving thread `thread` (1 … N−1) fail as an uncaught error would: it closes its connections and ends, and
   * is started again with back-off like any thread that died. Resolves once it has ended. (Worker#terminate is no
   * way to do this: a thread ended holding uWS sockets takes the whole process down.) For tests of that path.
   */
  async fail (thread: number): Promise<void> {
    const worker = this.slots.find(s => s.thread === thread)?.worker
    if (worker == null) return
    const ended = new Promise(resolve => worker.once('exit', resolve))
    worker.postMessage({ t: 'fail' } satisfies ToThread)
    await ended
  }

  /** Threads listening on the public port, the main thread included. */
  listening (): number {
    let n = 1
    for (const s of this.slots) if (s.listening) n++
    return n
  }

  /**
   * Stops listening on every thread, answers what they have in flight (their checks still need this thread's
   * acknowledgements, their proxied requests this thread's router: call before draining it), then ends them.
   */
  async stop (timeoutMs: number): Promise<void> {
    this.stopping = true
    if (this.timer !== null) clearInterval(this.timer)
    this.deps.mirror.onReplica = null
    await Promise.all(this.slots.map(async slot => {
      if (slot.restartTimer !== null) clearTimeout(slot.restartTimer)
      const worker = slot.worker
      if (worker === null) return
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, timeoutMs + 1000)
        slot.drained = () => { clearTimeout(timer); resolve() }
        worker.once('exit', slot.drained)
        worker.postMessage({ t: 'drain', timeoutMs } satisfies ToThread)
      })
      slot.listening = false
      await worker.terminate()
    }))
  }

  private spawn (slot: Slot): void {
    const d = this.deps
    const view = d.mirror.view
    const vouched = d.mirror.vouchedReplica()
    const data: ServeThreadData = {
      config: d.config,
      thread: slot.thread,
      port: d.port,
      internalPort: d.internalPort,
      peerSecret: d.peerSecret,
      journal: d.journal,
      vouch: this.vouch.buffer as SharedArrayBuffer,
      view: view !== null ? bloomShare(view) : null,
      replica: vouched !== null ? replicaShare(vouched.table) : null
    }
    const worker = new Worker(threadFile, { workerData: data })
    slot.worker = worker
    slot.listening = false
    slot.startedAt = Date.now()
    worker.on('message', (m: FromThread) => {
      switch (m.t) {
        case 'batch': this.onBatch(worker, slot.thread, m); break
        case 'listening': slot.listening = true; break
        case 'drained': slot.listening = false; slot.drained?.(); break
      }
    })
    worker.on('error', err => { d.log.error({ err, thread: slot.thread }, 'serving thread failed') })
    worker.on('exit', code => {
      slot.worker = null
      slot.listening = false
      if (this.stopping) return
      // A thread that lived a while had a fault, not a start-up problem: start again from the shortest wait.
      slot.failures = Date.now() - slot.startedAt > 60_000 ? 1 : slot.failures + 1
      const waitMs = Math.min(RESTART_MAX_MS, RESTART_FIRST_MS * 2 ** (slot.failures - 1))
      d.log.error({ thread: slot.thread, code, restartInMs: waitMs }, 'serving thread stopped; starting it again')
      slot.restartTimer = setTimeout(() => { slot.restartTimer = null; if (!this.stopping) this.spawn(slot) }, waitMs)
      slot.restartTimer.unref()
    })
  }

  /** A thread's decisions, journalled and acknowledged in one message back; its request figures counted. */
  private onBatch (worker: Worker, thread: number, m: Extract<FromThread, { t: 'batch' }>): void {
    const { decisions, metrics } = this.deps
    if (m.checks.length > 0) {
      const acks: Ack[] = []
      for (const [id, head, results] of m.checks) {
        try {
          decisions.afterDecisions('check', { ...head, recipients: NO_RECIPIENTS }, results)
          acks.push(id)
        } catch (err) {
          const ge = err instanceof GatewayError ? err : new GatewayError('H015', { cause: err })
          if (ge.code === 'H015') this.deps.log.error({ err, thread }, 'unexpected error journalling a serving thread\'s decisions')
          acks.push({ id, code: ge.code, message: ge.message, retryAfterS: ge.retryAfterS })
        }
      }
      worker.postMessage({ t: 'acks', acks } satisfies ToThread)
    }
    for (const type of CONSENT_TYPES) {
      const counts = m.counted[type]
      if (counts !== undefined) decisions.afterCountedChecks(type, counts)
    }
    const r = m.requests
    for (let i = 0; i < r.length; i += 3) metrics.request(r[i] as Route, r[i + 1] as number, r[i + 2] as number)
    if (r.length > 0) this.answered[thread]!.inc(r.length / 3)
    if (m.bloomMaybe > 0) metrics.bloomMaybe.inc(m.bloomMaybe)
    if (m.bloomAbsent > 0) metrics.bloomAbsent.inc(m.bloomAbsent)
    if (m.storeErrors > 0) metrics.storeErrors.inc(m.storeErrors)
  }

  /**
   * Brings the threads to the mirror's state: a new view or replica is posted (a thread uses a replica only once it
   * has it and VOUCH names it), and VOUCH is set to what the mirror vouches for now. Cleared first, so a thread
   * that reads the id, the time and the id again never pairs one replica with another's time.
   */
  private sync (): void {
    const mirror = this.deps.mirror
    const view = mirror.view
    if (view !== this.postedView) {
      this.postedView = view
      this.broadcast({ t: 'view', view: view !== null ? bloomShare(view) : null })
    }
    const vouched = mirror.vouchedReplica()
    if (vouched === null) {
      Atomics.store(this.vouch, VOUCH_ID, 0n)
      return
    }
    const id = BigInt(sharedId(vouched.table))
    if (vouched.table !== this.postedTable) {
      this.postedTable = vouched.table
      this.broadcast({ t: 'replica', replica: replicaShare(vouched.table) })
    }
    if (Atomics.load(this.vouch, VOUCH_ID) !== id) Atomics.store(this.vouch, VOUCH_ID, 0n)
    Atomics.store(this.vouch, VOUCH_UNTIL, BigInt(vouched.until))
    Atomics.store(this.vouch, VOUCH_ID, id)
  }

  private broadcast (m: ToThread): void {
    for (const s of this.slots) s.worker?.postMessage(m)
  }
}

/** A thread's GatewayError from a refused acknowledgement. */
export function ackError (ack: Exclude<Ack, number>): GatewayError {
  return new GatewayError(ack.code, { message: ack.message, ...(ack.retryAfterS !== undefined ? { retryAfterS: ack.retryAfterS } : {}) })
}
