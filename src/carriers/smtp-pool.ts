// A pool of SMTP sessions to one relay, for the SMTP carrier (smtp-upstream.ts): nodemailer's low-level
// SMTPConnection (connect, EHLO, STARTTLS, AUTH, pipelined MAIL/RCPT/DATA, dot-stuffing) under a queue of our own.
// It takes a finished message as bytes: nodemailer's pooled transport built a Mail object and a MIME node per message
// and streamed the raw copy through them, about a third of the gateway's busy time in the smtp benchmark's profile.
//
// What it does, and what it is for:
//   - at most `size` sessions, opened when a message finds no idle one; one message per session at a time; LIFO
//     reuse, so that under light load the sessions not needed sit idle and close on the relay's or our timeout.
//   - a message handed to a session the relay had closed while idle (or closes with a 421) before a byte of it went
//     out is put on a fresh session once; after that, or when any byte had left, the caller gets the error.
//   - after a refusal of the message (a 4xx/5xx to MAIL, RCPT or DATA, not a 421) the session is reset (RSET) and
//     used again; after anything else it is dropped.
//   - each answer says whether the message's bytes began to go out (`started`): after the relay's 354, when the
//     message stream was first read. An error after that may mean the relay has the message.
// Nothing here logs: the caller turns errors into outcomes (and nodemailer's own logger is off).

import { Readable, Writable } from 'node:stream'
import SMTPConnection, { type SMTPConnectionOptions, type SMTPEnvelope } from 'nodemailer/lib/smtp-connection'

/** What nodemailer puts on its errors (only what we read). */
export interface SmtpError extends Error {
  code?: string
  responseCode?: number
  response?: string
  command?: string
  rejected?: unknown
}

export type PoolAnswer =
  | { readonly ok: true, readonly response: string, readonly serverMessageId: string | null }
  | { readonly ok: false, readonly error: SmtpError, readonly started: boolean }

export interface SmtpPoolOptions {
  /** For SMTPConnection: host, port, TLS, name, timeouts (logger off). */
  readonly connection: SMTPConnectionOptions
  readonly auth: { readonly user: string, readonly pass: string } | null
  /** Sessions at most. */
  readonly size: number
}

// Exim's default smtp_accept_max_per_connection is 1000: past it, it answers MAIL with a 421. We leave before.
const MAX_MESSAGES_PER_SESSION = 1000

interface Job {
  readonly envelope: SMTPEnvelope
  readonly message: Buffer
  /** Put back once already: it goes on a session opened for it, and is not put back again. */
  requeued: boolean
  settled: boolean
  readonly resolve: (a: PoolAnswer) => void
}

type State = 'connecting' | 'idle' | 'busy' | 'resetting' | 'closed'

interface Session {
  readonly smtp: SMTPConnection
  state: State
  /** Messages handed to it (a session with none sent is fresh). */
  sent: number
  job: Job | null
  /** The message stream of the job in flight: read means its bytes began to go out. */
  source: OneChunk | null
  reused: boolean
}

/**
 * The message as a stream of one chunk: SMTPConnection pipes it only after the 354, so a read means it is going out.
 * It also corks the relay's socket until the end of the message: SMTPConnection's DataStream writes the message and
 * then, ticks later, the terminating dot, each its own write (syscall) otherwise; in the smtp benchmark's profile the
 * second one cost nearly what the first did.
 */
class OneChunk extends Readable {
  #chunk: Buffer | null
  readonly #socket: Writable | null
  constructor (chunk: Buffer, socket: Writable | null) {
    super()
    this.#chunk = chunk
    this.#socket = socket
  }

  override _read (): void {
    const c = this.#chunk
    this.#chunk = null
    if (c !== null) this.push(c)
    this.push(null)
  }

  override pipe<T extends NodeJS.WritableStream> (dest: T, options?: { end?: boolean }): T {
    const socket = this.#socket
    // `dest` is SMTPConnection's DataStream, piped to the socket: its 'end' comes after its last chunk was written;
    // 'pause' when the socket's buffer is full (a large message: the 'drain' it waits for needs the socket uncorked);
    // 'close' should it fail instead (and end() or destroy() of the socket uncork it anyway).
    if (socket !== null && dest instanceof Readable && !socket.writableEnded) {
      socket.cork()
      let corked = true
      const uncork = (): void => { if (corked) { corked = false; socket.uncork() } }
      dest.once('end', uncork)
      dest.once('pause', uncork)
      dest.once('close', uncork)
    }
    return super.pipe(dest, options)
  }
}

// The errors that say the session ended rather than that the relay refused the message (nodemailer's own reading,
// less a timeout: a relay that went silent gets no second wait of timeout_ms on another session).
function sessionEnded (err: SmtpError): boolean {
  return err.responseCode === 421 || err.code === 'ECONNECTION' || err.code === 'ESOCKET'
}

function closedError (text: string): SmtpError {
  return Object.assign(new Error(text), { code: 'ECONNECTION', command: 'CONN' })
}

export class SmtpPool {
  readonly #options: SMTPConnectionOptions
  readonly #auth: { user: string, pass: string } | null
  readonly #size: number
  readonly #sessions = new Set<Session>()
  /** Idle sessions, the last one used on top. */
  readonly #idle: Session[] = []
  readonly #queue: Job[] = []
  #closing = false
  #destroyed = false

  constructor (o: SmtpPoolOptions) {
    this.#options = { ...o.connection, logger: false, debug: false, transactionLog: false }
    this.#auth = o.auth === null ? null : { user: o.auth.user, pass: o.auth.pass }
    this.#size = o.size
  }

  /** Sends one message; never rejects. `envelope` is not kept past the call's first attempt (it is copied per attempt). */
  send (envelope: SMTPEnvelope, message: Buffer): Promise<PoolAnswer> {
    if (this.#destroyed) return Promise.resolve({ ok: false, error: closedError('the connection pool is closed'), started: false })
    return new Promise<PoolAnswer>(resolve => {
      this.#queue.push({ envelope, message, requeued: false, settled: false, resolve })
      this.#pump()
    })
  }

  /** Quits the idle sessions, and each busy one once its message has its answer. */
  close (): void {
    this.#closing = true
    for (const s of this.#idle.splice(0)) this.#quit(s)
  }

  /** Drops every session now; a message in flight gets ECONNECTION (started as it was), a queued one too. */
  destroy (): void {
    this.#closing = true
    this.#destroyed = true
    for (const job of this.#queue.splice(0)) this.#settle(job, { ok: false, error: closedError('the connection pool was closed'), started: false })
    for (const s of [...this.#sessions]) {
      const job = s.job
      const started = s.source?.readableDidRead === true
      this.#drop(s)
      if (job !== null) this.#settle(job, { ok: false, error: closedError('the connection pool was closed'), started })
    }
  }

  // ---- the queue ----

  #pump (): void {
    while (this.#queue.length > 0 && !this.#destroyed) {
      const job = this.#queue[0]!
      if (!job.requeued && this.#idle.length > 0) {
        this.#queue.shift()
        this.#start(this.#idle.pop()!, job)
      } else if (this.#sessions.size < this.#size) {
        this.#queue.shift()
        this.#open(job)
      } else if (job.requeued && this.#idle.length > 0) {
        // Room for the fresh session it must have: the idle session used least recently goes.
        this.#quit(this.#idle.shift()!)
      } else {
        return
      }
    }
  }

  #settle (job: Job, a: PoolAnswer): void {
    if (job.settled) return
    job.settled = true
    job.resolve(a)
  }

  // ---- a session's life ----

  #open (job: Job): void {
    const smtp = new SMTPConnection(this.#options)
    const s: Session = { smtp, state: 'connecting', sent: 0, job, source: null, reused: false }
    this.#sessions.add(s)
    // While connecting, errors come as events; once a message is in flight, send()'s callback has them (and the
    // event comes first): one listener always, or an 'error' without one would throw.
    smtp.on('error', (err: SmtpError) => { if (s.state === 'connecting') this.#setupFailed(s, err) })
    smtp.once('end', () => this.#ended(s))
    smtp.connect(err => {
      if (s.state !== 'connecting') return
      if (err != null) { this.#setupFailed(s, err); return }
      if (this.#auth === null || !smtp.allowsAuth) { this.#ready(s); return }
      smtp.login(this.#auth, loginErr => {
        if (s.state !== 'connecting') return
        if (loginErr != null) this.#setupFailed(s, loginErr)
        else this.#ready(s)
      })
    })
  }

  #ready (s: Session): void {
    const job = s.job!
    s.job = null
    this.#start(s, job)
  }

  #setupFailed (s: Session, err: SmtpError): void {
    const job = s.job
    this.#drop(s)
    if (job !== null) this.#settle(job, { ok: false, error: err, started: false })
    this.#pump()
  }

  #start (s: Session, job: Job): void {
    s.state = 'busy'
    s.job = job
    s.reused = s.sent > 0
    s.sent++
    const socket = s.smtp._socket
    const source = new OneChunk(job.message, socket instanceof Writable ? socket : null)
    s.source = source
    // A copy: SMTPConnection writes its bookkeeping into the envelope it is given.
    s.smtp.send({ ...job.envelope }, source, (err, info) => this.#answered(s, job, err as SmtpError | null, info))
  }

  #answered (s: Session, job: Job, err: SmtpError | null, info: { response?: string, serverMessageId?: string } | undefined): void {
    if (s.job !== job) return // destroy() answered it
    s.job = null
    const started = s.source?.readableDidRead === true
    s.source = null
    if (err == null) {
      this.#settle(job, { ok: true, response: info?.response ?? '250', serverMessageId: info?.serverMessageId ?? null })
      this.#release(s)
      return
    }
    if (s.reused && !started && !job.requeued && !this.#destroyed && sessionEnded(err)) {
      // Not a byte of it went out on a session that had served before: the relay had closed it while idle, or
      // closes it now (421). A fresh session gets the message; that is no second delivery.
      job.requeued = true
      this.#drop(s)
      this.#queue.unshift(job)
      this.#pump()
      return
    }
    this.#settle(job, { ok: false, error: err, started })
    if (s.smtp.destroyed || err.responseCode === 421 || (err.code !== 'EENVELOPE' && err.code !== 'EMESSAGE')) {
      this.#drop(s)
      this.#pump()
    } else if (err.responseCode === undefined) {
      // Refused here before a command went (SIZE, an address SMTP cannot carry): the session is as it was.
      this.#release(s)
    } else {
      // The relay refused this message; the session is fine once the transaction is reset.
      s.state = 'resetting'
      s.smtp.reset(resetErr => {
        if (s.state !== 'resetting') return
        if (resetErr != null) { this.#drop(s); this.#pump() } else this.#release(s)
      })
    }
  }

  #release (s: Session): void {
    if (this.#closing || s.sent >= MAX_MESSAGES_PER_SESSION) {
      this.#quit(s)
    } else {
      s.state = 'idle'
      this.#idle.push(s)
    }
    this.#pump()
  }

  /** The session ended (the relay closed it, a timeout, our close): out of the pool. */
  #ended (s: Session): void {
    const state = s.state
    this.#forget(s)
    if (state === 'connecting') {
      this.#setupFailed(s, closedError('the relay closed the connection before the session was ready'))
      return
    }
    if (state === 'busy') {
      // SMTPConnection ends the session before it calls send()'s callback with the reason; should no callback come,
      // the message still gets an answer.
      const job = s.job
      setImmediate(() => {
        if (job !== null && s.job === job) this.#answered(s, job, closedError('the connection to the relay closed'), undefined)
      })
    }
    this.#pump()
  }

  #quit (s: Session): void {
    this.#forget(s)
    s.smtp.quit()
  }

  #drop (s: Session): void {
    this.#forget(s)
    s.smtp.close()
  }

  #forget (s: Session): void {
    s.state = 'closed'
    this.#sessions.delete(s)
    const i = this.#idle.indexOf(s)
    if (i !== -1) this.#idle.splice(i, 1)
  }
}
