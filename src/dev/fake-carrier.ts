// A fake carrier speaking the JSON adapter's wire format (src/carriers/json-adapter.ts), for tests, benchmarks and
// docker-compose: a development tool, which is why it lives in src/dev/ (serving code never imports it; the CLI's
// `fake-carrier` command does). It behaves like a well-behaved carrier, with knobs to make it a bad one:
//
//   POST …/messages  202 {"id":"fc-<n>","messageId":"…","status":"accepted"}, or 400 {"errors":[…]} for a message it
//                    cannot send (missing field, `to` of the wrong kind for the channel).
//                    A repeated Idempotency-Key gets the first final answer (202 or 400) again, even while the first
//                    request is still waiting out its latency, and is not counted as sent twice.
//                    (any path ending in /messages, so an upstream URL with a base path works)
//   GET  /stats      the counters as JSON (not the lists), for scripts that run it as its own process.
//
// Knobs (start options and setMode()): `latencyMs` before every answer; `failureRate`, the share of new messages
// answered 503 (not taken, not remembered: a retry may succeed), drawn from a seeded generator; `down`: `'reset'`
// (or true) destroys the connection as each request arrives, without answering; `'refuse'` stops listening, so
// connections are refused; `flap`: alternately up and down (reset) every N requests or every N ms, starting up.
//
// The hot path is one closure per request and a Map lookup: tens of thousands of requests a second on one core.
// Memory is bounded: the accepted list keeps the last `maxRemembered` messages and the idempotency memory at least
// the last maxRemembered / 2 keys (counters stay exact), so a benchmark can run for hours.

import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { parseArgs } from 'node:util'
import type { ConsentType } from '../domain/vocabulary.js'
import { mulberry32 } from '../util/random.js'
import { untilStopped, usage } from './command.js'

export type DownMode = boolean | 'reset' | 'refuse'
/** Alternate up/down (reset) every `everyRequests` requests or every `everyMs` ms (one of the two). */
export type FlapMode = { everyRequests: number } | { everyMs: number }

export interface FakeCarrierMode {
  latencyMs?: number
  failureRate?: number
  down?: DownMode
  flap?: FlapMode | null
}

export interface FakeCarrierOptions {
  /** Default 0 (a free port). */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  latencyMs?: number
  failureRate?: number
  /** Seed of the failure draws; default: a random seed. */
  seed?: number
  /** Accepted messages listed by stats(), and idempotency keys remembered (at least half as many), oldest forgotten first. Default 1 000 000. */
  maxRemembered?: number
}

export interface AcceptedMessage {
  readonly messageId: string
  readonly type: ConsentType
  readonly to: string
  readonly carrierId: string
}

export interface FakeCarrierStats {
  /** Message requests (POST …/messages) that arrived, duplicates, failures and dropped ones included. */
  requests: number
  /** Distinct messages accepted (sent on, as a real carrier would). */
  sent: number
  sentByType: Record<ConsentType, number>
  /** Requests answered from the idempotency memory. */
  duplicates: number
  /** Distinct messages refused with 400. */
  rejected: number
  /** 503 answers drawn by failureRate. */
  failed: number
  /** Requests whose connection was destroyed (down or flapping). */
  dropped: number
  /** The accepted messages, oldest first (the last maxRemembered of them). */
  accepted: AcceptedMessage[]
}

export interface FakeCarrier {
  readonly url: string
  readonly port: number
  stats (): FakeCarrierStats
  /** Forgets every counter, key and accepted message; the mode stays as it is. */
  reset (): void
  setMode (mode: FakeCarrierMode): Promise<void>
  close (): Promise<void>
}

interface Answer { readonly status: number, readonly body: string }

const errorBody = (code: string, message: string): string => JSON.stringify({ errors: [{ code, message }] })
const UNAVAILABLE: Answer = Object.freeze({ status: 503, body: errorBody('UNAVAILABLE', 'carrier temporarily unavailable') })
const NOT_FOUND: Answer = Object.freeze({ status: 404, body: errorBody('NOT_FOUND', 'no such route') })
const PHONE_RE = /^\+[1-9]\d{7,14}$/

const str = (v: unknown): v is string => typeof v === 'string' && v !== ''

function invalid (j: unknown): string | null {
  if (j === null || typeof j !== 'object' || Array.isArray(j)) return 'body must be a JSON object'
  const m = j as Record<string, unknown>
  if (!str(m.messageId)) return 'messageId must be a non-empty string'
  if (!str(m.to)) return 'to must be a non-empty string'
  switch (m.type) {
    case 'MESAJ':
      if (!PHONE_RE.test(m.to)) return 'to must be an E.164 phone number for MESAJ'
      if (!str(m.sender)) return 'sender must be a non-empty string'
      if (!str(m.text)) return 'text must be a non-empty string'
      return null
    case 'ARAMA':
      if (!PHONE_RE.test(m.to)) return 'to must be an E.164 phone number for ARAMA'
      if (!str(m.callerId)) return 'callerId must be a non-empty string'
      return null
    case 'EPOSTA':
      if (!m.to.includes('@')) return 'to must be an e-mail address for EPOSTA'
      if (!str(m.from)) return 'from must be a non-empty string'
      if (!str(m.subject)) return 'subject must be a non-empty string'
      if (typeof m.body !== 'string') return 'body must be a string'
      return null
    default:
      return 'type must be MESAJ, EPOSTA or ARAMA'
  }
}

function check (name: string, v: number | undefined, ok: (v: number) => boolean): void {
  if (v !== undefined && !(typeof v === 'number' && ok(v))) throw new RangeError(`fake carrier: bad ${name}: ${String(v)}`)
}

function validateMode (m: FakeCarrierMode): void {
  check('latencyMs', m.latencyMs, v => Number.isFinite(v) && v >= 0)
  check('failureRate', m.failureRate, v => v >= 0 && v <= 1)
  if (m.down !== undefined && m.down !== true && m.down !== false && m.down !== 'reset' && m.down !== 'refuse') throw new RangeError(`fake carrier: bad down: ${String(m.down)}`)
  if (m.flap !== undefined && m.flap !== null) {
    const n = 'everyRequests' in m.flap ? m.flap.everyRequests : m.flap.everyMs
    check('flap', n, v => Number.isInteger(v) && v >= 1)
  }
}

class FakeCarrierServer implements FakeCarrier {
  readonly #server: Server
  readonly #host: string
  readonly #sockets = new Set<Socket>()
  readonly #maxRemembered: number
  readonly #random: () => number
  #port = 0
  #listening = false
  // mode
  #latencyMs: number
  #failureRate: number
  #reset = false
  #refuse = false
  #flapRequests = 0
  #flapMs = 0
  #flapCount = 0
  #flapStart = 0
  // memory
  #seq = 0
  // Two generations of keys: lookups read both, a full `#keys` becomes `#oldKeys`. Every operation is O(1), memory
  // is bounded, and at least the last maxRemembered / 2 keys are always remembered. (Evicting the oldest entry of
  // one Map is not O(1): V8 skips deleted slots from the front on every keys().next().)
  #keys = new Map<string, Answer>()
  #oldKeys = new Map<string, Answer>()
  // A ring once full: #acceptedHead is the oldest entry's index.
  #accepted: AcceptedMessage[] = []
  #acceptedHead = 0
  #st = FakeCarrierServer.#zero()

  constructor (opts: FakeCarrierOptions) {
    validateMode(opts)
    this.#host = opts.host ?? '127.0.0.1'
    this.#port = opts.port ?? 0
    this.#latencyMs = opts.latencyMs ?? 0
    this.#failureRate = opts.failureRate ?? 0
    this.#random = mulberry32(opts.seed ?? Math.floor(Math.random() * 2 ** 32))
    this.#maxRemembered = opts.maxRemembered ?? 1_000_000
    check('maxRemembered', this.#maxRemembered, v => Number.isInteger(v) && v >= 1)
    this.#server = createServer({ noDelay: true }, (req, res) => this.#onRequest(req, res))
    this.#server.on('connection', (s: Socket) => {
      this.#sockets.add(s)
      s.once('close', () => this.#sockets.delete(s))
    })
  }

  static #zero (): Omit<FakeCarrierStats, 'accepted' | 'sentByType'> & { sentByType: Record<ConsentType, number> } {
    return { requests: 0, sent: 0, sentByType: { MESAJ: 0, EPOSTA: 0, ARAMA: 0 }, duplicates: 0, rejected: 0, failed: 0, dropped: 0 }
  }

  get port (): number { return this.#port }
  get url (): string { return `http://${this.#host.includes(':') ? `[${this.#host}]` : this.#host}:${this.#port}` }

  async listen (): Promise<this> {
    this.#server.listen(this.#port, this.#host)
    await once(this.#server, 'listening')
    this.#port = (this.#server.address() as AddressInfo).port
    this.#listening = true
    return this
  }

  #down (): boolean {
    if (this.#reset) return true
    if (this.#flapRequests > 0) return (Math.floor(this.#flapCount++ / this.#flapRequests) & 1) === 1
    if (this.#flapMs > 0) return (Math.floor((Date.now() - this.#flapStart) / this.#flapMs) & 1) === 1
    return false
  }

  #onRequest (req: IncomingMessage, res: ServerResponse): void {
    if (req.method === 'POST' && req.url!.endsWith('/messages')) {
      this.#st.requests++
      if (this.#down()) {
        this.#st.dropped++
        req.socket.destroy()
        return
      }
      const key = req.headers['idempotency-key']
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c: string) => { body += c })
      req.on('end', () => this.#message(res, typeof key === 'string' && key !== '' ? key : undefined, body))
      return
    }
    if (this.#reset) { req.socket.destroy(); return }
    req.resume()
    if (req.method === 'GET' && req.url === '/stats') {
      const { accepted: _, ...counts } = this.stats()
      this.#write(res, { status: 200, body: JSON.stringify(counts) })
      return
    }
    this.#write(res, NOT_FOUND)
  }

  #message (res: ServerResponse, key: string | undefined, text: string): void {
    if (key !== undefined) {
      const first = this.#keys.get(key) ?? this.#oldKeys.get(key)
      if (first !== undefined) {
        this.#st.duplicates++
        this.#answer(res, first)
        return
      }
    }
    let j: unknown
    try { j = JSON.parse(text) } catch { j = undefined }
    const problem = j === undefined ? 'body is not JSON' : invalid(j)
    if (problem !== null) {
      this.#st.rejected++
      const a: Answer = { status: 400, body: errorBody('INVALID_FIELD', problem) }
      this.#remember(key, a)
      this.#answer(res, a)
      return
    }
    if (this.#failureRate > 0 && this.#random() < this.#failureRate) {
      this.#st.failed++
      this.#answer(res, UNAVAILABLE)
      return
    }
    const m = j as { messageId: string, type: ConsentType, to: string }
    const carrierId = `fc-${++this.#seq}`
    const a: Answer = { status: 202, body: `{"id":"${carrierId}","messageId":${JSON.stringify(m.messageId)},"status":"accepted"}` }
    this.#st.sent++
    this.#st.sentByType[m.type]++
    const rec: AcceptedMessage = { messageId: m.messageId, type: m.type, to: m.to, carrierId }
    if (this.#accepted.length < this.#maxRemembered) this.#accepted.push(rec)
    else {
      this.#accepted[this.#acceptedHead] = rec
      this.#acceptedHead = (this.#acceptedHead + 1) % this.#maxRemembered
    }
    this.#remember(key, a)
    this.#answer(res, a)
  }

  #remember (key: string | undefined, a: Answer): void {
    if (key === undefined) return
    if (this.#keys.size >= Math.max(1, this.#maxRemembered >> 1)) {
      this.#oldKeys = this.#keys
      this.#keys = new Map()
    }
    this.#keys.set(key, a)
  }

  #answer (res: ServerResponse, a: Answer): void {
    if (this.#latencyMs > 0) setTimeout(() => this.#write(res, a), this.#latencyMs).unref()
    else this.#write(res, a)
  }

  #write (res: ServerResponse, a: Answer): void {
    if (res.destroyed) return
    res.writeHead(a.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(a.body) })
    res.end(a.body)
  }

  stats (): FakeCarrierStats {
    const h = this.#acceptedHead
    const accepted = h === 0 ? this.#accepted.slice() : this.#accepted.slice(h).concat(this.#accepted.slice(0, h))
    return { ...this.#st, sentByType: { ...this.#st.sentByType }, accepted }
  }

  reset (): void {
    this.#st = FakeCarrierServer.#zero()
    this.#keys = new Map()
    this.#oldKeys = new Map()
    this.#accepted = []
    this.#acceptedHead = 0
    this.#flapCount = 0
    this.#flapStart = Date.now()
  }

  async setMode (mode: FakeCarrierMode): Promise<void> {
    validateMode(mode)
    if (mode.latencyMs !== undefined) this.#latencyMs = mode.latencyMs
    if (mode.failureRate !== undefined) this.#failureRate = mode.failureRate
    if (mode.flap !== undefined) {
      const f = mode.flap
      this.#flapRequests = f !== null && 'everyRequests' in f ? f.everyRequests : 0
      this.#flapMs = f !== null && 'everyMs' in f ? f.everyMs : 0
      this.#flapCount = 0
      this.#flapStart = Date.now()
    }
    if (mode.down !== undefined) {
      this.#reset = mode.down === true || mode.down === 'reset'
      this.#refuse = mode.down === 'refuse'
      if (this.#refuse && this.#listening) await this.#stopListening()
      else if (!this.#refuse && !this.#listening) await this.listen()
    }
  }

  async #stopListening (): Promise<void> {
    this.#listening = false
    const closed = new Promise<void>(resolve => this.#server.close(() => resolve()))
    for (const s of this.#sockets) s.destroy()
    await closed
  }

  async close (): Promise<void> {
    if (this.#listening) await this.#stopListening()
  }
}

export async function startFakeCarrier (opts: FakeCarrierOptions = {}): Promise<FakeCarrier> {
  return await new FakeCarrierServer(opts).listen()
}

// ---- `iys-gateway fake-carrier` -----------------------------------------------------------------------------


/**
 * `fake-carrier [--port 8081] [--host 127.0.0.1] [--latency-ms 0] [--failure-rate 0] [--seed N]`: runs the fake
 * carrier until SIGTERM or SIGINT. Prints one line with its URL when it listens. Resolves to the exit code.
 */
export async function fakeCarrierCommand (argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '8081' },
      host: { type: 'string', default: '127.0.0.1' },
      'latency-ms': { type: 'string', default: '0' },
      'failure-rate': { type: 'string', default: '0' },
      seed: { type: 'string' }
    }
  })
  const port = Number(values.port)
  const latencyMs = Number(values['latency-ms'])
  const failureRate = Number(values['failure-rate'])
  const seed = values.seed === undefined ? undefined : Number(values.seed)
  if (!/^\d+$/.test(values.port) || port > 65535) throw usage('--port must be an integer from 0 to 65535')
  if (!/^\d+(\.\d+)?$/.test(values['latency-ms'])) throw usage('--latency-ms must be a number of milliseconds ≥ 0')
  if (!/^\d+(\.\d+)?$/.test(values['failure-rate']) || failureRate > 1) throw usage('--failure-rate must be a number from 0 to 1')
  if (seed !== undefined && !Number.isInteger(seed)) throw usage('--seed must be an integer')
  const carrier = await startFakeCarrier({ port, host: values.host, latencyMs, failureRate, ...(seed !== undefined ? { seed } : {}) })
  process.stdout.write(`fake carrier listening on ${carrier.url} (POST /messages, GET /stats)\n`)
  await untilStopped()
  await carrier.close()
  return 0
}
