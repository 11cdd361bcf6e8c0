// One SMPP 3.4 session over a TCP or TLS socket, either side of it: our front end's sessions with providers'
// platforms (server.ts) and our binds to the operators (carriers/smpp-upstream.ts).
//
// node-smpp is the PDU codec (new PDU(buffer), pdu.toBuffer()), but for what a `decode` hook reads itself (the front
// end's submit_sm, smpp/submit-reader.ts); the session is ours because the package's stops
// reading for good after one PDU it cannot decode, and because both of our sides need the same things it lacks:
// a PDU that cannot be decoded is answered generic_nack and the session goes on (only a length that breaks the
// framing closes it), every request we send has a deadline, and what is in flight is counted (the window).

import type { Socket } from 'node:net'
import smpp, { PDU } from 'smpp'
import { CodedError } from '../domain/errors.js'

const { errors } = smpp

/** Header length: command_length, command_id, command_status, sequence_number. */
const HEADER = 16
/** Longest PDU accepted: a submit_sm with a full message_payload fits (64 KiB of text is not an SMS). */
export const MAX_PDU_BYTES = 65_536
PDU.maxLength = MAX_PDU_BYTES
/** Unsent bytes beyond which the peer is taken as not reading (a window of answers is a few KiB). */
const MAX_UNSENT_BYTES = 4 * 1024 * 1024

export class SessionClosedError extends CodedError<'SMPP_SESSION_CLOSED'> {
  constructor (message: string) { super('SMPP_SESSION_CLOSED', message) }
}
export class ResponseTimeoutError extends CodedError<'SMPP_RESPONSE_TIMEOUT'> {
  constructor (message: string) { super('SMPP_RESPONSE_TIMEOUT', message) }
}

export interface SessionOptions {
  /** How long a request we send waits for its response (ms). */
  responseTimeoutMs: number
  /** Send enquire_link after this long without any PDU from the peer (ms); 0: never. A missed answer closes. */
  enquireLinkMs?: number
  /**
   * Every request from the peer (not responses, not enquire_link, which the session answers itself), with its
   * bytes as they came (valid only during the call: copy what outlives it, as requestEncoded does).
   */
  onRequest: (pdu: PDU, session: SmppSession, bytes: Buffer) => void
  /**
   * Decodes a PDU in place of node-smpp (the front end's submit_sm reader, smpp/submit-reader.ts); null: node-smpp
   * decodes it. Must not throw, and must return null for what node-smpp would refuse (it is then refused as before).
   */
  decode?: (bytes: Buffer) => PDU | null
  /** A PDU that could not be decoded (already answered generic_nack): for a metric or a log line, never the bytes. */
  onMalformed?: (reason: string) => void
  /** Once, when the socket is gone; `err` when it went with an error. */
  onClose?: (err?: Error) => void
}

interface Pending {
  resolve: (pdu: PDU) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

export class SmppSession {
  readonly socket: Socket
  /** Requests we sent that have no response yet (the window in use). */
  inFlight = 0
  closed = false
  private readonly opts: SessionOptions
  private readonly pending = new Map<number, Pending>()
  private sequence = 0
  /** The start of a PDU not yet complete, as chunks (joined once complete: a trickling peer costs no re-copying). */
  private partial: Buffer[] = []
  private partialBytes = 0
  /** Bytes the partial PDU needs in all: its command_length once known, else the 4 that give it. */
  private partialNeeds = 0
  private lastHeardAt = Date.now()
  private keepalive: NodeJS.Timeout | null = null
  private corked = false

  constructor (socket: Socket, opts: SessionOptions) {
    this.socket = socket
    this.opts = opts
    socket.setNoDelay(true)
    socket.on('data', chunk => this.onData(chunk))
    socket.on('error', err => this.shut(err))
    socket.on('close', () => this.shut())
    const every = opts.enquireLinkMs ?? 0
    if (every > 0) {
      this.keepalive = setInterval(() => this.probe(every), Math.max(100, every / 2))
      this.keepalive.unref()
    }
  }

  /** Sends a request and resolves with its response (any command_status: the caller judges it). */
  request (command: string, fields: Record<string, unknown> = {}): Promise<PDU> {
    const pdu = new PDU(command, fields)
    pdu.sequence_number = this.nextSequence()
    return this.sendRequest(pdu.sequence_number, pdu.toBuffer())
  }

  /**
   * Sends an already encoded request (a provider's submit_sm passed on to an operator byte for byte: its text,
   * coding and UDH stay exactly as the provider wrote them) under a sequence number of this session.
   */
  requestEncoded (encoded: Buffer): Promise<PDU> {
    const copy = Buffer.from(encoded)
    const seq = this.nextSequence()
    copy.writeUInt32BE(seq, 12)
    return this.sendRequest(seq, copy)
  }

  /** Answers a request: its `_resp` (or generic_nack) with `status` and, on success, the fields. */
  respond (req: PDU, status: number, fields?: Record<string, unknown>): void {
    if (this.closed) return
    const resp = req.response(status === 0 ? { ...fields } : { command_status: status })
    this.write(resp.toBuffer())
  }

  /** Sends a PDU that expects no answer of ours to wait for (generic_nack, a response built elsewhere). */
  sendPdu (pdu: PDU): void {
    if (!this.closed) this.write(pdu.toBuffer())
  }

  /** Ends the session: unbind (answered or not within the response timeout), then the socket. */
  async unbind (): Promise<void> {
    if (this.closed) return
    try { await this.request('unbind') } catch { /* closing anyway */ }
    this.close()
  }

  close (): void {
    if (!this.closed) this.socket.end()
    this.shut()
  }

  destroy (): void {
    this.socket.destroy()
    this.shut()
  }

  private nextSequence (): number {
    this.sequence = this.sequence >= 0x7fffffff ? 1 : this.sequence + 1
    return this.sequence
  }

  private sendRequest (seq: number, bytes: Buffer): Promise<PDU> {
    if (this.closed) return Promise.reject(new SessionClosedError('the SMPP session is closed'))
    return new Promise<PDU>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(seq)) this.inFlight--
        reject(new ResponseTimeoutError(`no SMPP response within ${this.opts.responseTimeoutMs} ms`))
      }, this.opts.responseTimeoutMs)
      this.pending.set(seq, { resolve, reject, timer })
      this.inFlight++
      this.write(bytes)
    })
  }

  // The PDUs written in one turn of the event loop leave in one write: a socket write per PDU was 29% of the
  // front end's CPU at 17,000 submit_sm/s (bench smpp profile: the answer to the platform and the submit to the
  // operator each paid a syscall).
  private write (bytes: Buffer): void {
    if (!this.socket.writable) return
    // A peer that sends but does not read would grow our unsent answers without end: it is cut off instead.
    if (this.socket.writableLength > MAX_UNSENT_BYTES) { this.destroy(); return }
    if (!this.corked) {
      this.corked = true
      this.socket.cork()
      process.nextTick(this.uncork)
    }
    this.socket.write(bytes)
  }

  private readonly uncork = (): void => {
    this.corked = false
    this.socket.uncork()
  }

  private onData (chunk: Buffer): void {
    if (this.closed) return // what a peer sends after we closed is not answered
    this.lastHeardAt = Date.now()
    let buf = chunk
    if (this.partialBytes > 0) {
      this.partial.push(chunk)
      this.partialBytes += chunk.length
      if (this.partialBytes < this.partialNeeds) return
      buf = Buffer.concat(this.partial, this.partialBytes)
      this.partial = []
      this.partialBytes = 0
    }
    let at = 0
    while (buf.length - at >= 4) {
      const length = buf.readUInt32BE(at)
      if (length < HEADER || length > MAX_PDU_BYTES) {
        // The framing is lost: nothing after this can be found reliably. Say why and close.
        const seq = buf.length - at >= HEADER ? buf.readUInt32BE(at + 12) : 0
        this.nack(seq, errors.ESME_RINVCMDLEN!, `command_length ${length} is outside ${HEADER}..${MAX_PDU_BYTES}`)
        this.close()
        return
      }
      if (buf.length - at < length) break
      this.onPdu(buf.subarray(at, at + length))
      at += length
      if (this.closed) return
    }
    if (at === buf.length) return
    // A partial PDU is copied out so that it does not pin the whole chunk it came in.
    const rest = at === 0 ? buf : Buffer.from(buf.subarray(at))
    this.partial = [rest]
    this.partialBytes = rest.length
    this.partialNeeds = rest.length >= 4 ? rest.readUInt32BE(0) : 4
  }

  private onPdu (bytes: Buffer): void {
    let pdu: PDU
    try {
      pdu = this.opts.decode?.(bytes) ?? new PDU(bytes)
    } catch (err) {
      this.nack(bytes.readUInt32BE(12), errors.ESME_RINVCMDLEN!, `undecodable PDU: ${(err as Error).message}`)
      return
    }
    if (pdu.command === 'unknown') {
      this.nack(pdu.sequence_number, errors.ESME_RINVCMDID!, `unknown command_id 0x${(pdu.command_id >>> 0).toString(16)}`)
      return
    }
    if (pdu.isResponse()) {
      const p = this.pending.get(pdu.sequence_number)
      if (p === undefined) return // late (timed out) or not ours: nothing waits for it
      this.pending.delete(pdu.sequence_number)
      this.inFlight--
      clearTimeout(p.timer)
      p.resolve(pdu)
      return
    }
    if (pdu.command === 'enquire_link') { this.respond(pdu, 0); return }
    try {
      this.opts.onRequest(pdu, this, bytes)
    } catch (err) {
      // A handler bug must cost this PDU, not the session: answer it as a system error.
      this.respond(pdu, errors.ESME_RSYSERR!)
      this.opts.onMalformed?.(`handler failed: ${(err as Error).message}`)
    }
  }

  private nack (seq: number, status: number, reason: string): void {
    this.sendPdu(new PDU('generic_nack', { sequence_number: seq, command_status: status }))
    this.opts.onMalformed?.(reason)
  }

  /** Keep-alive: enquire_link when the peer has been quiet; a peer that does not answer it is gone. */
  private probe (every: number): void {
    if (this.closed || Date.now() - this.lastHeardAt < every) return
    this.request('enquire_link').catch(() => { if (!this.closed) this.destroy() })
  }

  private shut (err?: Error): void {
    if (this.closed && this.pending.size === 0 && this.keepalive === null) return
    const first = !this.closed
    this.closed = true
    if (this.keepalive !== null) { clearInterval(this.keepalive); this.keepalive = null }
    for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new SessionClosedError('the SMPP session closed before the response')) }
    this.pending.clear()
    this.inFlight = 0
    if (first) this.opts.onClose?.(err)
  }
}
