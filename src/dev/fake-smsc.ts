// A fake operator SMSC speaking SMPP 3.4, for tests, the benchmark and trying the SMPP carrier by hand: a development
// tool (serving code never imports it), built on our own SmppSession over net.createServer (tls.createServer with
// `tls`). It behaves like a well-behaved operator, with knobs to make it a bad one:
//
//   bind_transceiver / bind_transmitter / bind_receiver   the configured system_id and password, else
//                                                          ESME_RINVSYSID / ESME_RINVPASWD; a second bind on one
//                                                          session ESME_RALYBND
//   submit_sm        a fresh message_id (status 0); recorded with its decoded PDU and raw bytes; ESME_RINVBNDSTS on a
//                    session that is not bound to send
//   unbind, enquire_link   answered
//
// Knobs: answerNext(n, status) answers the next n submits with a status (0x58 throttling...); setDelay(ms) delays
// every answer; setSilent(true) never answers (a submit whose fate the ESME cannot know); stop() / start() on the same
// port (the operator down, its sessions dropped, and back); deliverReceipt() and deliverMo() send a deliver_sm.
// Memory is bounded: the last `maxRecorded` submits are kept (the counters stay exact), so a benchmark can run long.
//
// By hand: node dist/src/dev/fake-smsc.js --port 2776 --system-id X --password Y [--delay-ms 0] [--host 127.0.0.1]
// prints a line a second with the counters while they change.

import { once } from 'node:events'
import { createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer, type TlsOptions } from 'node:tls'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import smpp, { type PDU } from 'smpp'
import { encodeText } from '../carriers/smpp-upstream.js'
import { SmppSession } from '../wire/smpp-session.js'
import { untilStopped, usage } from './command.js'

export type BindType = 'transceiver' | 'transmitter' | 'receiver'

export interface FakeSmscOptions {
  /** Default 0 (a free port, kept across stop()/start()). */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  /** Default 'smsc-test'. */
  systemId?: string
  /** Default 'secret'. */
  password?: string
  /** Serve SMPP over TLS with this key and certificate (smpps://). */
  tls?: Pick<TlsOptions, 'key' | 'cert'>
  /** Submits kept for submits(), oldest forgotten first (0: none). Default 10 000. */
  maxRecorded?: number
  /** Answer delay for every submit (ms). Default 0. */
  delayMs?: number
}

export interface SubmitRecord {
  /** The submit_sm as node-smpp decodes it. */
  readonly pdu: PDU
  /** Its bytes as they arrived (the sequence number is the sender's, at offset 12). */
  readonly raw: Buffer
  /** The session it came on (1, 2, ... in connection order). */
  readonly session: number
  /** When it arrived (ms since the epoch). */
  readonly at: number
  /** The status answered; null while unanswered (delayed, silent, or the session went first). */
  status: number | null
  /** The message_id answered with status 0. */
  messageId: string | null
}

export interface BindRecord {
  readonly session: number
  readonly type: BindType
  readonly systemId: string
  /** 0 when bound, else the refusal (ESME_RINVPASWD...). The password is not kept. */
  readonly status: number
}

export interface FakeSmscStats {
  /** Sessions bound now. */
  bound: number
  /** Bind requests, refused ones included. */
  bindAttempts: number
  bindsRefused: number
  /** submit_sm received. */
  submits: number
  /** Answered with status 0. */
  accepted: number
  /** Answered with a non-zero status. */
  refused: number
  /** Received and not answered yet (delayed or silent). */
  unanswered: number
  /** The most unanswered at any one time since the start or reset(). */
  maxUnanswered: number
  /** deliver_sm sent (receipts and MO). */
  delivered: number
}

export interface FakeSmsc {
  readonly host: string
  readonly port: number
  /** smpp://systemId:password@host:port (smpps:// with tls), with `query` appended. Credentials default to the configured ones. */
  url (query?: string, systemId?: string, password?: string): string
  /** The recorded submits, oldest first. */
  submits (): SubmitRecord[]
  binds (): BindRecord[]
  stats (): FakeSmscStats
  /** Forgets the recorded submits and binds and zeroes the counters (bound and unanswered stay true). */
  reset (): void
  /** Answers the next `n` submits with `status` instead of 0 (queued after earlier answerNext calls). */
  answerNext (n: number, status: number): void
  /** Delays every answer by `ms` from now on. */
  setDelay (ms: number): void
  /** Never answer submits (true) or answer them again (false; the ones left unanswered stay so). */
  setSilent (on: boolean): void
  /** The operator goes down: stops listening and drops every session. */
  stop (): Promise<void>
  /** And comes back on the same port. */
  start (): Promise<void>
  /**
   * A delivery receipt for `messageId` (deliver_sm, esm_class 0x04, with receipted_message_id and message_state), on the
   * session that submitted it if it is still bound to receive, else on any such session. Resolves to the ESME's
   * deliver_sm_resp status.
   */
  deliverReceipt (messageId: string, stat?: ReceiptStat): Promise<number>
  /** An MO message from a handset `from` to `to`, on a session bound to receive. Resolves to the ESME's answer status. */
  deliverMo (from: string, to: string, text: string): Promise<number>
  close (): Promise<void>
}

const { errors } = smpp

/** The stat values of the receipt text (SMPP 3.4 Appendix B) and their message_state. */
const RECEIPT_STATES = { DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8 } as const
export type ReceiptStat = keyof typeof RECEIPT_STATES

const BIND_TYPES: Readonly<Record<string, BindType>> = { bind_transceiver: 'transceiver', bind_transmitter: 'transmitter', bind_receiver: 'receiver' }
const SUBMIT_SM = 0x00000004
const HEADER = 16

interface Conn {
  readonly id: number
  readonly session: SmppSession
  type: BindType | null
  /** Submits this session will never get an answer to (silent), for the unanswered count when it goes. */
  held: number
  /** Raw submit_sm bytes framed off the socket before the session decodes them, by sequence number. */
  readonly raw: Map<number, Buffer>
}

function stamp (ms: number): string {
  const d = new Date(ms)
  const p = (n: number): string => String(n).padStart(2, '0')
  return `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}`
}

function address (a: string): { ton: number, npi: number, addr: string } {
  return a.startsWith('+') ? { ton: 1, npi: 1, addr: a.slice(1) } : /^\d+$/.test(a) ? { ton: 0, npi: 1, addr: a } : { ton: 5, npi: 0, addr: a }
}

class FakeSmscServer implements FakeSmsc {
  readonly host: string
  readonly #systemId: string
  readonly #password: string
  readonly #tls: FakeSmscOptions['tls']
  readonly #server: Server
  readonly #maxRecorded: number
  readonly #conns = new Map<number, Conn>()
  #port: number
  #listening = false
  #connSeq = 0
  #idSeq = 0
  #delayMs: number
  #silent = false
  #answers: number[] = []
  #submits: SubmitRecord[] = []
  #byId = new Map<string, SubmitRecord>()
  #binds: BindRecord[] = []
  #st: FakeSmscStats = { bound: 0, bindAttempts: 0, bindsRefused: 0, submits: 0, accepted: 0, refused: 0, unanswered: 0, maxUnanswered: 0, delivered: 0 }

  constructor (opts: FakeSmscOptions) {
    this.host = opts.host ?? '127.0.0.1'
    this.#port = opts.port ?? 0
    this.#systemId = opts.systemId ?? 'smsc-test'
    this.#password = opts.password ?? 'secret'
    this.#tls = opts.tls
    this.#maxRecorded = opts.maxRecorded ?? 10_000
    this.#delayMs = opts.delayMs ?? 0
    if (!Number.isInteger(this.#maxRecorded) || this.#maxRecorded < 0) throw new RangeError(`fake SMSC: bad maxRecorded: ${this.#maxRecorded}`)
    this.setDelay(this.#delayMs)
    const onSocket = (s: Socket): void => this.#accept(s)
    this.#server = opts.tls !== undefined ? createTlsServer({ ...opts.tls }, onSocket) : createNetServer({ noDelay: true }, onSocket)
  }

  get port (): number { return this.#port }

  url (query = '', systemId = this.#systemId, password = this.#password): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host
    const q = query === '' ? '' : query.startsWith('?') ? query : `?${query}`
    return `${this.#tls !== undefined ? 'smpps' : 'smpp'}://${encodeURIComponent(systemId)}:${encodeURIComponent(password)}@${host}:${this.#port}${q}`
  }

  async start (): Promise<void> {
    if (this.#listening) return
    this.#server.listen(this.#port, this.host)
    await once(this.#server, 'listening')
    this.#port = (this.#server.address() as AddressInfo).port
    this.#listening = true
  }

  async stop (): Promise<void> {
    if (!this.#listening) return
    this.#listening = false
    const closed = new Promise<void>(resolve => this.#server.close(() => resolve()))
    for (const c of this.#conns.values()) c.session.destroy()
    await closed
  }

  close (): Promise<void> { return this.stop() }

  submits (): SubmitRecord[] { return this.#submits.slice() }
  binds (): BindRecord[] { return this.#binds.slice() }
  stats (): FakeSmscStats { return { ...this.#st } }

  reset (): void {
    this.#submits = []
    this.#byId.clear()
    this.#binds = []
    const { bound, unanswered } = this.#st
    this.#st = { bound, bindAttempts: 0, bindsRefused: 0, submits: 0, accepted: 0, refused: 0, unanswered, maxUnanswered: unanswered, delivered: 0 }
  }

  answerNext (n: number, status: number): void {
    if (!Number.isInteger(n) || n < 0 || !Number.isInteger(status) || status < 0) throw new RangeError(`fake SMSC: bad answerNext(${n}, ${status})`)
    for (let i = 0; i < n; i++) this.#answers.push(status)
  }

  setDelay (ms: number): void {
    if (!(Number.isFinite(ms) && ms >= 0)) throw new RangeError(`fake SMSC: bad delay: ${ms}`)
    this.#delayMs = ms
  }

  setSilent (on: boolean): void { this.#silent = on }

  #accept (socket: Socket): void {
    const id = ++this.#connSeq
    const raw = new Map<number, Buffer>()
    // Before the session's own listener: the bytes of each submit_sm are kept as they came, for submits().raw.
    tapSubmits(socket, raw)
    const session = new SmppSession(socket, {
      responseTimeoutMs: 10_000,
      onRequest: (pdu) => this.#onRequest(conn, pdu),
      onClose: () => {
        this.#conns.delete(id)
        if (conn.type !== null) this.#st.bound--
        this.#st.unanswered -= conn.held
        conn.type = null
      }
    })
    const conn: Conn = { id, session, type: null, held: 0, raw }
    this.#conns.set(id, conn)
  }

  #onRequest (conn: Conn, pdu: PDU): void {
    const s = conn.session
    const bindType = BIND_TYPES[pdu.command]
    if (bindType !== undefined) {
      this.#st.bindAttempts++
      const systemId = String(pdu.system_id ?? '')
      const status = conn.type !== null
        ? errors.ESME_RALYBND!
        : systemId !== this.#systemId ? errors.ESME_RINVSYSID! : pdu.password !== this.#password ? errors.ESME_RINVPASWD! : 0
      this.#binds.push({ session: conn.id, type: bindType, systemId, status })
      if (status !== 0) { this.#st.bindsRefused++; s.respond(pdu, status); return }
      conn.type = bindType
      this.#st.bound++
      s.respond(pdu, 0, { system_id: 'FAKESMSC' })
      return
    }
    switch (pdu.command) {
      case 'submit_sm': this.#submit(conn, pdu); return
      case 'unbind': s.respond(pdu, 0); s.close(); return
      default: s.respond(pdu, errors.ESME_RINVCMDID!)
    }
  }

  #submit (conn: Conn, pdu: PDU): void {
    const s = conn.session
    const raw = conn.raw.get(pdu.sequence_number)
    conn.raw.delete(pdu.sequence_number)
    if (conn.type === null || conn.type === 'receiver') { s.respond(pdu, errors.ESME_RINVBNDSTS!); return }
    this.#st.submits++
    const rec: SubmitRecord = { pdu, raw: raw ?? Buffer.alloc(0), session: conn.id, at: Date.now(), status: null, messageId: null }
    this.#record(rec)
    this.#st.unanswered++
    if (this.#st.unanswered > this.#st.maxUnanswered) this.#st.maxUnanswered = this.#st.unanswered
    if (this.#silent) { conn.held++; return }
    const status = this.#answers.length > 0 ? this.#answers.shift()! : 0
    const answer = (): void => {
      this.#st.unanswered--
      rec.status = status
      if (status !== 0) { this.#st.refused++; s.respond(pdu, status); return }
      const id = (++this.#idSeq).toString(16).padStart(10, '0')
      rec.messageId = id
      if (this.#maxRecorded > 0) this.#byId.set(id, rec)
      this.#st.accepted++
      s.respond(pdu, 0, { message_id: id })
    }
    if (this.#delayMs > 0) {
      conn.held++ // until the timer fires: if the session goes first, onClose counts it off
      setTimeout(() => { if (!s.closed) { conn.held--; answer() } }, this.#delayMs).unref()
    } else {
      answer()
    }
  }

  #record (rec: SubmitRecord): void {
    if (this.#maxRecorded === 0) return
    if (this.#submits.length >= this.#maxRecorded) {
      // Drop the oldest half at once: amortised O(1) per submit.
      const dropped = this.#submits.splice(0, Math.max(1, this.#submits.length >> 1))
      for (const d of dropped) if (d.messageId !== null) this.#byId.delete(d.messageId)
    }
    this.#submits.push(rec)
  }

  #receiverFor (sessionId: number | undefined): Conn {
    const canReceive = (c: Conn | undefined): c is Conn => c !== undefined && !c.session.closed && (c.type === 'transceiver' || c.type === 'receiver')
    const own = sessionId === undefined ? undefined : this.#conns.get(sessionId)
    if (canReceive(own)) return own
    for (const c of this.#conns.values()) if (canReceive(c)) return c
    throw new Error('fake SMSC: no session is bound to receive')
  }

  async #deliver (conn: Conn, fields: Record<string, unknown>): Promise<number> {
    this.#st.delivered++
    const resp = await conn.session.request('deliver_sm', fields)
    return resp.command_status
  }

  deliverReceipt (messageId: string, stat: ReceiptStat = 'DELIVRD'): Promise<number> {
    try {
      const rec = this.#byId.get(messageId)
      const conn = this.#receiverFor(rec?.session)
      const now = Date.now()
      const text = `id:${messageId} sub:001 dlvrd:${stat === 'DELIVRD' ? '001' : '000'} submit date:${stamp(rec?.at ?? now)} done date:${stamp(now)} stat:${stat} err:000 text:`
      const p = rec?.pdu
      return this.#deliver(conn, {
        // From the handset back to the originator.
        source_addr_ton: p?.dest_addr_ton ?? 1,
        source_addr_npi: p?.dest_addr_npi ?? 1,
        source_addr: p?.destination_addr ?? '',
        dest_addr_ton: p?.source_addr_ton ?? 0,
        dest_addr_npi: p?.source_addr_npi ?? 0,
        destination_addr: p?.source_addr ?? '',
        esm_class: 0x04,
        data_coding: 0,
        short_message: encodeText(text).bytes, // all of it in the GSM alphabet
        receipted_message_id: messageId,
        message_state: RECEIPT_STATES[stat]
      })
    } catch (err) {
      return Promise.reject(err)
    }
  }

  deliverMo (from: string, to: string, text: string): Promise<number> {
    try {
      const conn = this.#receiverFor(undefined)
      const src = address(from)
      const dst = address(to)
      const e = encodeText(text)
      return this.#deliver(conn, {
        source_addr_ton: src.ton,
        source_addr_npi: src.npi,
        source_addr: src.addr,
        dest_addr_ton: dst.ton,
        dest_addr_npi: dst.npi,
        destination_addr: dst.addr,
        esm_class: 0,
        data_coding: e.dataCoding,
        short_message: e.bytes
      })
    } catch (err) {
      return Promise.reject(err)
    }
  }
}

/** Frames the PDUs off `socket` (as the session does) and keeps a copy of each submit_sm by sequence number. */
function tapSubmits (socket: Socket, into: Map<number, Buffer>): void {
  let pending: Buffer | null = null
  socket.on('data', (chunk: Buffer) => {
    const buf = pending === null ? chunk : Buffer.concat([pending, chunk])
    let at = 0
    while (buf.length - at >= HEADER) {
      const length = buf.readUInt32BE(at)
      if (length < HEADER) return // the session closes on a broken frame
      if (buf.length - at < length) break
      if (buf.readUInt32BE(at + 4) === SUBMIT_SM) into.set(buf.readUInt32BE(at + 12), Buffer.from(buf.subarray(at, at + length)))
      at += length
    }
    pending = at === buf.length ? null : Buffer.from(buf.subarray(at))
  })
}

export async function startFakeSmsc (opts: FakeSmscOptions = {}): Promise<FakeSmsc> {
  const smsc = new FakeSmscServer(opts)
  await smsc.start()
  return smsc
}

// ---- By hand ---------------------------------------------------------------------------------------------------


/**
 * `fake-smsc [--port 2775] [--host 127.0.0.1] [--system-id smsc-test] [--password secret] [--delay-ms 0]`: runs the
 * fake SMSC until SIGTERM or SIGINT, printing its URL, then a line a second with the counters while they change.
 * Resolves to the exit code.
 */
export async function fakeSmscCommand (argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '2775' },
      host: { type: 'string', default: '127.0.0.1' },
      'system-id': { type: 'string', default: 'smsc-test' },
      password: { type: 'string', default: 'secret' },
      'delay-ms': { type: 'string', default: '0' }
    }
  })
  const port = Number(values.port)
  if (!/^\d+$/.test(values.port) || port > 65535) throw usage('--port must be an integer from 0 to 65535')
  if (!/^\d+(\.\d+)?$/.test(values['delay-ms'])) throw usage('--delay-ms must be a number of milliseconds ≥ 0')
  const smsc = await startFakeSmsc({ port, host: values.host, systemId: values['system-id'], password: values.password, delayMs: Number(values['delay-ms']), maxRecorded: 10_000 })
  // The URL without the password: it is on the command line already, and need not be in a terminal's scrollback twice.
  process.stdout.write(`fake SMSC listening on smpp://${encodeURIComponent(values['system-id'])}:…@${smsc.host}:${smsc.port}\n`)
  let last = ''
  let lastSubmits = 0
  const timer = setInterval(() => {
    const s = smsc.stats()
    const line = `bound=${s.bound} binds=${s.bindAttempts} refused_binds=${s.bindsRefused} submits=${s.submits} accepted=${s.accepted} refused=${s.refused} unanswered=${s.unanswered} delivered=${s.delivered}`
    if (line !== last) process.stdout.write(`${line} (${s.submits - lastSubmits}/s)\n`)
    last = line
    lastSubmits = s.submits
  }, 1000)
  await untilStopped()
  clearInterval(timer)
  await smsc.close()
  return 0
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  fakeSmscCommand(process.argv.slice(2)).then(code => { process.exitCode = code }, (err: Error) => {
    process.stderr.write(`fake-smsc: ${err.message}\n`)
    process.exitCode = 2
  })
}
