// The SMPP front end (SMPP_PORT, SMPP_TLS_PORT): providers' platforms (Kannel, Jasmin, commercial SMS platforms)
// bind to us as they would to an operator's SMSC, and only what the law allows goes on to the operator.
//
//   bind_transmitter / _receiver / _transceiver  system_id + password of a tenant's API key (`keys create
//                                                --smpp-system-id`); at most SMPP_MAX_BINDS per key
//   submit_sm                                    decided and forwarded by submit.ts, answered when the operator has
//                                                answered (message_id = the operator's id) or at once when blocked
//   deliver_sm to the platform                   receipts and MO messages, routed by operator-messages.ts through a
//                                                queue per target (receipts.ts), drained while a receiver is bound
//   enquire_link, unbind                         answered; anything else a bound platform sends: ESME_RINVCMDID
// Per bind: at most SMPP_WINDOW submits being decided or forwarded at once (ESME_RMSGQFUL beyond), and the key's
// rate (ESME_RTHROTTLED beyond it), the same token bucket as its HTTP requests.

import { createServer as createTcpServer, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import type { PDU } from 'smpp'
import smpp from 'smpp'
import type { Logger } from '../log.js'
import type { KeyStore, SmppLogin } from '../auth/key-store.js'
import type { RateLimiter } from '../auth/rate-limit.js'
import type { Metrics } from '../metrics.js'
import type { ReceiptStore } from './receipts.js'
import { statusName, type SmppStatusMap } from '../domain/smpp-status.js'
import { SmppSession } from '../wire/smpp-session.js'
import './gsm-coder.js'
import { SubmitSmResp } from './resp.js'
import type { SubmitHandler } from './submit.js'
import { readSubmitSm } from './submit-reader.js'

const { errors } = smpp

const BIND_MODES: Readonly<Record<string, 'tx' | 'rx' | 'trx'>> = { bind_transmitter: 'tx', bind_receiver: 'rx', bind_transceiver: 'trx' }
/** What we call ourselves in bind responses. */
const OUR_SYSTEM_ID = 'IYSGW'
/** How often a bound receiver's queues are looked at for what other gateways queued (ms). */
const DRAIN_POLL_MS = 250
/** A platform's deliver_sm_resp statuses that mean "not now" (the rest refuse the PDU for good). */
const RETRY_LATER: ReadonlySet<number> = new Set([0x14, 0x58, 0x64, 0x08]) // MSGQFUL, THROTTLED, X_T_APPN, SYSERR
/** How long a connection may stay without a bind (ms). */
const BIND_TIMEOUT_MS = 30_000
/** PDUs taken from a queue at once. */
const DRAIN_BATCH = 64

export interface SmppServerSettings {
  host: string
  port: number | null
  tlsPort: number | null
  tls: { key: Buffer, cert: Buffer } | null
  /** submits being decided or forwarded at once per bind */
  window: number
  /** binds per API key across this gateway */
  maxBindsPerKey: number
  /** how long a deliver_sm we send waits for its response (ms) */
  responseTimeoutMs: number
  /** enquire_link after this long without a PDU from the platform (ms) */
  enquireLinkMs: number
}

export interface SmppServerDeps {
  keys: Pick<KeyStore, 'authenticateSmpp' | 'principalOf'>
  submits: SubmitHandler
  receipts: ReceiptStore
  rateLimit: Pick<RateLimiter, 'take'>
  statuses: SmppStatusMap
  metrics: Metrics
  log: Logger
}

/** One platform's session and what it bound as. */
interface Bind {
  readonly session: SmppSession
  login: SmppLogin | null
  systemId: string
  mode: 'tx' | 'rx' | 'trx' | null
  /** the queues it takes deliver_sm from once bound: its system_id's receipts, its tenant's MO messages */
  targets: readonly string[]
  /** submits being decided or forwarded now */
  busy: number
  draining: boolean
}

export class SmppServer {
  private readonly settings: SmppServerSettings
  private readonly deps: SmppServerDeps
  private readonly servers: Server[] = []
  private readonly binds = new Set<Bind>()
  private drainTimer: NodeJS.Timeout | null = null
  private closing = false

  constructor (settings: SmppServerSettings, deps: SmppServerDeps) {
    this.settings = settings
    this.deps = deps
  }

  /** Listens on the configured ports; resolves with the ports bound (a port 0 picks a free one). */
  async start (): Promise<{ port: number | null, tlsPort: number | null }> {
    const onSocket = (socket: Socket): void => { this.accept(socket) }
    const listen = async (server: Server, port: number): Promise<number> => {
      await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen({ host: this.settings.host, port, exclusive: true }, resolve) })
      this.servers.push(server)
      return (server.address() as { port: number }).port
    }
    const port = this.settings.port === null ? null : await listen(createTcpServer(onSocket), this.settings.port)
    const tls = this.settings.tls
    const tlsPort = this.settings.tlsPort === null || tls === null ? null : await listen(createTlsServer({ key: tls.key, cert: tls.cert }, onSocket), this.settings.tlsPort)
    this.drainTimer = setInterval(() => { for (const b of this.binds) this.drain(b) }, DRAIN_POLL_MS)
    this.drainTimer.unref()
    return { port, tlsPort }
  }

  /** Bound sessions now, per mode (metrics, /readyz). */
  bound (): number {
    let n = 0
    for (const b of this.binds) if (b.mode !== null) n++
    return n
  }

  /**
   * A deliver_sm for `target` (`sys:<system_id>` or `tenant:<iysCode>`), encoded: queued, then handed to a bound
   * receiver of this gateway at once if there is one (others take it from the queue by their poll).
   */
  async deliver (target: string, pdu: Buffer): Promise<void> {
    if (!await this.deps.receipts.enqueue(target, pdu)) this.deps.metrics.smppReceipts.inc({ result: 'queue_full_dropped_oldest' })
    for (const b of this.binds) if (b.mode !== null && b.mode !== 'tx' && b.targets.includes(target)) { this.drain(b); break }
  }

  /** Stops listening, unbinds every platform (answered or not within the response timeout) and closes. */
  async close (): Promise<void> {
    this.closing = true
    if (this.drainTimer !== null) clearInterval(this.drainTimer)
    // A server's close() calls back only once its connections are gone, and bound platforms never go by themselves:
    // stop listening, end the sessions (submits in progress first, then unbind, answered or not), then wait.
    const stopped = Promise.all(this.servers.map(s => new Promise<void>(resolve => s.close(() => resolve()))))
    await Promise.all([...this.binds].map(async b => {
      await this.idle(b, this.settings.responseTimeoutMs)
      await b.session.unbind()
      b.session.destroy()
    }))
    await stopped
  }

  /** Resolves once the bind has no submit in progress, or after `ms`. */
  private async idle (b: Bind, ms: number): Promise<void> {
    const deadline = Date.now() + ms
    while (b.busy > 0 && !b.session.closed && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  }

  private accept (socket: Socket): void {
    if (this.closing) { socket.destroy(); return }
    const bind: Bind = { session: null as unknown as SmppSession, login: null, systemId: '', mode: null, targets: [], busy: 0, draining: false }
    const session = new SmppSession(socket, {
      responseTimeoutMs: this.settings.responseTimeoutMs,
      enquireLinkMs: this.settings.enquireLinkMs,
      decode: readSubmitSm,
      onRequest: (pdu, _s, bytes) => { this.onRequest(bind, pdu, bytes) },
      onMalformed: () => { this.deps.metrics.smppPdus.inc({ command: 'malformed', status: 'nack' }) },
      onClose: () => {
        this.binds.delete(bind)
        this.deps.metrics.smppBinds.set(this.bound())
      }
    })
    ;(bind as { session: SmppSession }).session = session
    this.binds.add(bind)
    // A connection that never binds is closed (it would hold a socket and be answered forever otherwise).
    setTimeout(() => { if (bind.login === null && !session.closed) session.close() }, BIND_TIMEOUT_MS).unref()
    socket.on('error', () => {}) // a reset by the peer is its business; the session closes
  }

  private onRequest (bind: Bind, pdu: PDU, bytes: Buffer): void {
    const command = pdu.command
    if (command in BIND_MODES) { this.bind(bind, pdu); return }
    if (command === 'unbind') { void this.unbound(bind, pdu); return }
    if (bind.mode === null) { this.answer(bind, pdu, errors.ESME_RINVBNDSTS!); return }
    if (command === 'submit_sm' || command === 'submit_multi') {
      if (bind.mode === 'rx') { this.answer(bind, pdu, errors.ESME_RINVBNDSTS!); return }
      void this.submit(bind, pdu, bytes)
      return
    }
    // deliver_sm_resp and the like are responses (the session matches them); a platform's other requests
    // (query_sm, cancel_sm, replace_sm, data_sm…) are not offered.
    this.answer(bind, pdu, errors.ESME_RINVCMDID!)
  }

  /**
   * The platform unbinds: the submits it has in progress are answered first (a platform that lost their answers
   * would send them again: duplicate SMS), then unbind_resp, then the session ends. Submits after the unbind are refused.
   */
  private async unbound (bind: Bind, pdu: PDU): Promise<void> {
    bind.mode = null
    await this.idle(bind, this.settings.responseTimeoutMs)
    this.answer(bind, pdu, 0)
    bind.session.close()
  }

  private bind (bind: Bind, pdu: PDU): void {
    if (bind.mode !== null) { this.answer(bind, pdu, errors.ESME_RALYBND!); return }
    const login = this.deps.keys.authenticateSmpp(String(pdu.system_id ?? ''), String(pdu.password ?? ''))
    if (typeof login === 'string') {
      this.deps.log.warn({ systemId: String(pdu.system_id ?? '').slice(0, 16), status: login, remote: bind.session.socket.remoteAddress }, 'SMPP bind refused')
      this.answer(bind, pdu, errors[login]!)
      bind.session.close()
      return
    }
    let binds = 0
    for (const b of this.binds) if (b.login?.principal.keyId === login.principal.keyId) binds++
    if (binds >= this.settings.maxBindsPerKey) {
      this.deps.log.warn({ systemId: pdu.system_id, binds }, 'SMPP bind refused: SMPP_MAX_BINDS binds of this key are bound already')
      this.answer(bind, pdu, errors.ESME_RALYBND!)
      bind.session.close()
      return
    }
    bind.login = login
    bind.systemId = String(pdu.system_id)
    bind.mode = BIND_MODES[pdu.command]!
    bind.targets = ['sys:' + bind.systemId, 'tenant:' + login.principal.iysCode]
    bind.session.respond(pdu, 0, { system_id: OUR_SYSTEM_ID })
    this.deps.metrics.smppPdus.inc({ command: pdu.command, status: 'ok' })
    this.deps.metrics.smppBinds.set(this.bound())
    this.deps.log.info({ systemId: bind.systemId, keyId: login.principal.keyId, mode: bind.mode }, 'SMPP bound')
    if (bind.mode !== 'tx') this.drain(bind)
  }

  private async submit (bind: Bind, pdu: PDU, bytes: Buffer): Promise<void> {
    if (bind.busy >= this.settings.window) { this.answer(bind, pdu, this.deps.statuses.WINDOW_FULL); return }
    // The key as it is now: revoked since the bind, the platform is unbound; its brands or rate changed, they apply.
    const current = this.deps.keys.principalOf(bind.login!.principal.keyId)
    if (current === null) {
      this.answer(bind, pdu, errors.ESME_RINVBNDSTS!)
      this.deps.log.warn({ systemId: bind.systemId }, 'SMPP: the key of a bound platform was revoked; unbinding it')
      bind.mode = null
      void bind.session.unbind()
      return
    }
    if (current !== bind.login!.principal) bind.login = { ...bind.login!, principal: current }
    const login = bind.login!
    const admit = (): boolean => this.deps.rateLimit.take(login.principal.keyId, login.principal.ratePerSecond) === 0
    bind.busy++
    try {
      const who = { login, systemId: bind.systemId }
      if (pdu.command === 'submit_multi') {
        // The rate counts its destinations, each one a message (handleMulti asks `admit` per destination).
        const m = await this.deps.submits.handleMulti(who, pdu, bytes, admit)
        this.answer(bind, pdu, m.status, { message_id: m.messageId, unsuccess_sme: m.unsuccess })
        return
      }
      if (!admit()) { this.answer(bind, pdu, this.deps.statuses.THROTTLED); return }
      const a = await this.deps.submits.handle(who, pdu, bytes)
      this.answer(bind, pdu, a.status, a.messageId !== undefined ? { message_id: a.messageId } : undefined)
    } catch (err) {
      this.deps.log.error({ err }, 'SMPP submit_sm failed')
      this.answer(bind, pdu, errors.ESME_RSYSERR!)
    } finally {
      bind.busy--
    }
  }

  private answer (bind: Bind, pdu: PDU, status: number, fields?: Record<string, unknown>): void {
    if (pdu.command === 'submit_sm') bind.session.sendPdu(new SubmitSmResp(pdu.sequence_number, status, fields?.message_id as string | undefined))
    else bind.session.respond(pdu, status, fields)
    this.deps.metrics.smppPdus.inc({ command: pdu.command, status: status === 0 ? 'ok' : statusName(status) })
  }

  /** Hands a receiver its queued deliver_sm PDUs, one batch at a time; what it does not accept goes back. */
  private drain (bind: Bind): void {
    if (bind.draining || bind.mode === null || bind.mode === 'tx' || bind.session.closed) return
    bind.draining = true
    void (async () => {
      try {
        for (const target of bind.targets) {
          for (;;) {
            const pdus = await this.deps.receipts.take(target, DRAIN_BATCH)
            if (pdus.length === 0) break
            // Delivered, or refused for good by the platform (dropped, counted), or to try again later (no answer,
            // a temporary status): those go back in their order, and this bind is left alone until the next poll.
            const answers = await Promise.all(pdus.map(p => bind.session.requestEncoded(p).then(r => r.command_status, () => -1)))
            const again = pdus.filter((_, i) => answers[i] === -1 || RETRY_LATER.has(answers[i]!))
            const refused = answers.filter(a => a !== 0 && a !== -1 && !RETRY_LATER.has(a)).length
            this.deps.metrics.smppReceipts.inc({ result: 'delivered' }, answers.filter(a => a === 0).length)
            if (refused > 0) this.deps.metrics.smppReceipts.inc({ result: 'refused_by_platform' }, refused)
            if (again.length > 0) { await this.deps.receipts.putBack(target, again); return }
          }
        }
      } catch (err) {
        this.deps.log.warn({ err }, 'SMPP: could not take queued deliver_sm PDUs (Redis?); will try again')
      } finally {
        bind.draining = false
      }
    })()
  }
}

