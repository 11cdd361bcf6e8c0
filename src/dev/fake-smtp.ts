// A fake mail relay (the real one behind UPSTREAM_EPOSTA_URL=smtp://…), for tests, the benchmark and trying the SMTP
// carrier by hand: a development tool (serving code never imports it), built on smtp-server. It behaves like a
// well-behaved relay, with knobs to make it a bad one:
//
//   AUTH PLAIN / LOGIN   required when `auth` is given (535 for wrong credentials, 530 for MAIL without a login);
//                        not offered otherwise
//   STARTTLS             offered with `tls` (a key and certificate); `implicitTls` serves TLS from the first byte
//   MAIL, RCPT, DATA     250; the message is recorded (envelope and raw bytes, after SMTP's dot-unstuffing) and
//                        answered `250 OK: queued as <id>`, as Postfix writes it
//
// Knobs: rejectNext(n, code, text, at) refuses the next n transactions at MAIL, RCPT (every recipient) or the end of
// DATA with `code text` (550 permanent, 451 temporary...); delay(ms) holds the answer to the end of DATA (a relay
// scanning content: the message is recorded at once, so a client that gives up may still have delivered it);
// stop() / start() on the same port (the relay down, its connections dropped, and back).
// Memory is bounded: the last `maxRecorded` messages are kept (the counters stay exact).
//
// By hand: node dist/src/dev/fake-smtp.js --port 2525 [--user U --password P] [--delay-ms 0] [--host 127.0.0.1]
// prints a line a second with the counters while they change.

import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { SMTPServer, type SMTPServerDataStream, type SMTPServerSession } from 'smtp-server'
import { untilStopped, usage } from './command.js'

export type SmtpStage = 'MAIL' | 'RCPT' | 'DATA'

export interface FakeSmtpOptions {
  /** Default 0 (a free port, kept across stop()/start()). */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  /** Require AUTH PLAIN/LOGIN with these credentials. Default: no AUTH. */
  auth?: { user: string, pass: string }
  /** Offer STARTTLS with this key and certificate (or serve TLS from the first byte with implicitTls). */
  tls?: { key: string | Buffer, cert: string | Buffer }
  implicitTls?: boolean
  /** Messages kept for messages(), oldest forgotten first (0: none). Default 10 000. */
  maxRecorded?: number
  /** Delay of the answer to the end of DATA (ms). Default 0. */
  delayMs?: number
  /** Advertised SIZE limit (bytes); larger messages are refused 552. Default: none. */
  size?: number
}

export interface ReceivedMail {
  /** The envelope: `from` '' for the null sender. */
  readonly envelope: { readonly from: string, readonly to: readonly string[] }
  /** The message as it arrived, dot-unstuffed. */
  readonly raw: Buffer
  /** The login it came under, null without AUTH. */
  readonly user: string | null
  /** Whether the session was TLS (STARTTLS or implicit). */
  readonly secure: boolean
  /** The name the client gave in EHLO/HELO. */
  readonly clientName: string
  /** The ESMTP parameters of MAIL FROM (BODY, SIZE...), upper-case names. */
  readonly mailParams: Readonly<Record<string, string | true>>
  /** The id in our 250 answer. */
  readonly queueId: string
  /** The connection it came on (1, 2, ... in connection order). */
  readonly connection: number
  /** When it arrived (ms since the epoch). */
  readonly at: number
}

export interface FakeSmtpStats {
  /** Connections open now. */
  open: number
  /** Connections accepted since the start or reset(). */
  connections: number
  logins: number
  loginsRefused: number
  /** Messages recorded (end of DATA reached and not refused). */
  accepted: number
  /** Answers refused by rejectNext (each refused RCPT counts), and messages over `size`. */
  refused: number
}

export interface FakeSmtp {
  readonly host: string
  readonly port: number
  /** smtp://user:pass@host:port (smtps:// with implicitTls), with `query` appended; credentials default to `auth`'s. */
  url (query?: string, user?: string, pass?: string): string
  /** The recorded messages, oldest first. */
  messages (): ReceivedMail[]
  stats (): FakeSmtpStats
  /** Forgets the messages and zeroes the counters (open stays true). */
  reset (): void
  /** Refuses the next `n` transactions with `code text` at `at` (default RCPT); queued after earlier calls. */
  rejectNext (n: number, code: number, text?: string, at?: SmtpStage): void
  /** Holds every answer to the end of DATA for `ms` from now on. */
  delay (ms: number): void
  /** The relay goes down: stops listening and drops every connection. */
  stop (): Promise<void>
  /** And comes back on the same port. */
  start (): Promise<void>
  close (): Promise<void>
}

interface Refusal { readonly code: number, readonly text: string, readonly at: SmtpStage }

function refusal (r: Refusal): Error {
  return Object.assign(new Error(r.text), { responseCode: r.code })
}

class FakeSmtpServer implements FakeSmtp {
  readonly host: string
  readonly #opts: FakeSmtpOptions
  readonly #maxRecorded: number
  /** The refusal drawn by each session's current transaction (by session id). */
  readonly #current = new Map<string, Refusal | null>()
  readonly #connOf = new Map<string, number>()
  #server: SMTPServer | null = null
  #port: number
  #connSeq = 0
  #idSeq = 0
  #delayMs: number
  #refusals: Refusal[] = []
  #messages: ReceivedMail[] = []
  #st: FakeSmtpStats = { open: 0, connections: 0, logins: 0, loginsRefused: 0, accepted: 0, refused: 0 }

  constructor (opts: FakeSmtpOptions) {
    this.host = opts.host ?? '127.0.0.1'
    this.#port = opts.port ?? 0
    this.#opts = opts
    this.#maxRecorded = opts.maxRecorded ?? 10_000
    this.#delayMs = 0
    if (!Number.isInteger(this.#maxRecorded) || this.#maxRecorded < 0) throw new RangeError(`fake SMTP: bad maxRecorded: ${this.#maxRecorded}`)
    if (opts.implicitTls === true && opts.tls === undefined) throw new TypeError('fake SMTP: implicitTls needs tls (a key and certificate)')
    this.delay(opts.delayMs ?? 0)
  }

  get port (): number { return this.#port }

  url (query = '', user = this.#opts.auth?.user, pass = this.#opts.auth?.pass): string {
    const host = this.host.includes(':') ? `[${this.host}]` : this.host
    const q = query === '' ? '' : query.startsWith('?') ? query : `?${query}`
    const cred = user === undefined ? '' : `${encodeURIComponent(user)}:${encodeURIComponent(pass ?? '')}@`
    return `${this.#opts.implicitTls === true ? 'smtps' : 'smtp'}://${cred}${host}:${this.#port}${q}`
  }

  async start (): Promise<void> {
    if (this.#server !== null) return
    // A new SMTPServer each time: one that was closed does not listen again.
    const server = this.#create()
    this.#server = server
    await new Promise<void>((resolve, reject) => {
      server.server.once('error', reject)
      server.listen(this.#port, this.host, () => { server.server.off('error', reject); resolve() })
    })
    const addr = server.server.address()
    if (addr !== null && typeof addr === 'object') this.#port = addr.port
  }

  async stop (): Promise<void> {
    const server = this.#server
    if (server === null) return
    this.#server = null
    const closed = new Promise<void>(resolve => server.close(() => resolve()))
    // close() drops the sockets still in a handshake itself; the sessions' own (topmost) sockets go now rather than
    // after its grace period, as a relay that dies would drop them.
    for (const c of server.connections) c._socket.destroy()
    await closed
  }

  close (): Promise<void> { return this.stop() }

  messages (): ReceivedMail[] { return this.#messages.slice() }
  stats (): FakeSmtpStats { return { ...this.#st } }

  reset (): void {
    this.#messages = []
    this.#st = { open: this.#st.open, connections: 0, logins: 0, loginsRefused: 0, accepted: 0, refused: 0 }
  }

  rejectNext (n: number, code: number, text = code >= 500 ? 'Rejected' : 'Try again later', at: SmtpStage = 'RCPT'): void {
    if (!Number.isInteger(n) || n < 0 || !Number.isInteger(code) || code < 400 || code > 599) throw new RangeError(`fake SMTP: bad rejectNext(${n}, ${code})`)
    if (/[\r\n]/.test(text)) throw new RangeError('fake SMTP: the text must be one line')
    for (let i = 0; i < n; i++) this.#refusals.push({ code, text, at })
  }

  delay (ms: number): void {
    if (!(Number.isFinite(ms) && ms >= 0)) throw new RangeError(`fake SMTP: bad delay: ${ms}`)
    this.#delayMs = ms
  }

  #create (): SMTPServer {
    const o = this.#opts
    const auth = o.auth
    const disabled: string[] = []
    if (o.tls === undefined) disabled.push('STARTTLS')
    if (auth === undefined) disabled.push('AUTH')
    return new SMTPServer({
      logger: false,
      banner: 'fake relay',
      // A reverse DNS lookup per connection costs ~100 ms here and tells a fake nothing.
      disableReverseLookup: true,
      disabledCommands: disabled,
      ...(o.tls !== undefined ? { key: o.tls.key, cert: o.tls.cert, secure: o.implicitTls === true } : {}),
      // Without TLS the login goes in clear: this is a fake on a test machine.
      ...(auth !== undefined ? { authMethods: ['PLAIN', 'LOGIN'], allowInsecureAuth: true } : { authOptional: true }),
      ...(o.size !== undefined ? { size: o.size } : {}),
      closeTimeout: 100,
      onConnect: (session, cb) => {
        this.#connOf.set(session.id, ++this.#connSeq)
        this.#st.connections++
        this.#st.open++
        cb()
      },
      onClose: session => {
        this.#st.open--
        this.#current.delete(session.id)
        this.#connOf.delete(session.id)
      },
      onAuth: (a, _session, cb) => {
        if (auth !== undefined && a.username === auth.user && a.password === auth.pass) {
          this.#st.logins++
          cb(null, { user: a.username })
          return
        }
        this.#st.loginsRefused++
        cb(Object.assign(new Error('Authentication failed'), { responseCode: 535 }))
      },
      onMailFrom: (_address, session, cb) => {
        const r = this.#refusals.length > 0 ? this.#refusals.shift()! : null
        this.#current.set(session.id, r)
        if (r?.at === 'MAIL') { this.#st.refused++; cb(refusal(r)); return }
        cb()
      },
      onRcptTo: (_address, session, cb) => {
        const r = this.#current.get(session.id)
        if (r?.at === 'RCPT') { this.#st.refused++; cb(refusal(r)); return }
        cb()
      },
      onData: (stream, session, cb) => this.#data(stream, session, cb)
    })
  }

  #data (stream: SMTPServerDataStream, session: SMTPServerSession, cb: (err?: Error | null, message?: string) => void): void {
    const chunks: Buffer[] = []
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.once('end', () => {
      const r = this.#current.get(session.id) ?? null
      this.#current.delete(session.id)
      if (stream.sizeExceeded) {
        this.#st.refused++
        cb(Object.assign(new Error('Message exceeds fixed maximum message size'), { responseCode: 552 }))
        return
      }
      if (r?.at === 'DATA') {
        this.#st.refused++
        const answer = (): void => cb(refusal(r))
        if (this.#delayMs > 0) setTimeout(answer, this.#delayMs).unref(); else answer()
        return
      }
      const env = session.envelope
      const queueId = (++this.#idSeq).toString(16).toUpperCase().padStart(10, '0')
      const mailFrom = env.mailFrom === false ? null : env.mailFrom
      this.#record({
        envelope: { from: mailFrom?.address ?? '', to: env.rcptTo.map(a => a.address) },
        raw: Buffer.concat(chunks),
        user: typeof session.user === 'string' ? session.user : null,
        secure: session.secure,
        clientName: session.hostNameAppearsAs,
        mailParams: mailFrom !== null && mailFrom.args !== false ? { ...mailFrom.args } : {},
        queueId,
        connection: this.#connOf.get(session.id) ?? 0,
        at: Date.now()
      })
      this.#st.accepted++
      const answer = (): void => cb(null, `OK: queued as ${queueId}`)
      if (this.#delayMs > 0) setTimeout(answer, this.#delayMs).unref(); else answer()
    })
  }

  #record (m: ReceivedMail): void {
    if (this.#maxRecorded === 0) return
    // Drop the oldest half at once: amortised O(1) per message.
    if (this.#messages.length >= this.#maxRecorded) this.#messages.splice(0, Math.max(1, this.#messages.length >> 1))
    this.#messages.push(m)
  }
}

export async function startFakeSmtp (opts: FakeSmtpOptions = {}): Promise<FakeSmtp> {
  const smtp = new FakeSmtpServer(opts)
  await smtp.start()
  return smtp
}

// ---- By hand ---------------------------------------------------------------------------------------------------


/**
 * `fake-smtp [--port 2525] [--host 127.0.0.1] [--user U --password P] [--delay-ms 0]`: runs the fake relay until
 * SIGTERM or SIGINT, printing its URL, then a line a second with the counters while they change. Without --user it
 * takes mail from anyone. Resolves to the exit code.
 */
export async function fakeSmtpCommand (argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '2525' },
      host: { type: 'string', default: '127.0.0.1' },
      user: { type: 'string' },
      password: { type: 'string' },
      'delay-ms': { type: 'string', default: '0' }
    }
  })
  const port = Number(values.port)
  if (!/^\d+$/.test(values.port) || port > 65535) throw usage('--port must be an integer from 0 to 65535')
  if (!/^\d+(\.\d+)?$/.test(values['delay-ms'])) throw usage('--delay-ms must be a number of milliseconds ≥ 0')
  if ((values.user === undefined) !== (values.password === undefined)) throw usage('--user and --password go together')
  const auth = values.user !== undefined ? { user: values.user, pass: values.password! } : undefined
  const smtp = await startFakeSmtp({ port, host: values.host, ...(auth !== undefined ? { auth } : {}), delayMs: Number(values['delay-ms']), maxRecorded: 10_000 })
  // The URL without the password: it is on the command line already, and need not be in a terminal's scrollback twice.
  const who = auth !== undefined ? `${encodeURIComponent(auth.user)}:…@` : ''
  process.stdout.write(`fake SMTP relay listening on smtp://${who}${smtp.host}:${smtp.port}\n`)
  let last = ''
  let lastAccepted = 0
  const timer = setInterval(() => {
    const s = smtp.stats()
    const line = `open=${s.open} connections=${s.connections} logins=${s.logins} refused_logins=${s.loginsRefused} accepted=${s.accepted} refused=${s.refused}`
    if (line !== last) process.stdout.write(`${line} (${s.accepted - lastAccepted}/s)\n`)
    last = line
    lastAccepted = s.accepted
  }, 1000)
  await untilStopped()
  clearInterval(timer)
  await smtp.close()
  return 0
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  fakeSmtpCommand(process.argv.slice(2)).then(code => { process.exitCode = code }, (err: Error) => {
    process.stderr.write(`fake-smtp: ${err.message}\n`)
    process.exitCode = 2
  })
}
