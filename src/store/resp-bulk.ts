// A write-only Redis connection for bulk loads. It writes RESP by hand into large buffers and counts replies
// instead of building a command object and a promise per command as ioredis does: for millions of HSETs that
// per-command cost was 60% of `load`'s time (most of it garbage collection). It supports only commands that
// answer one line (integers, +OK, errors), which is all a bulk load sends; any error reply fails the load.

import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'

const CHUNK = 1 << 20
const MAX_OUTSTANDING = 200_000 // commands sent but not answered before we wait for Redis

export class RespBulkWriter {
  private readonly socket: Socket
  private out = Buffer.allocUnsafe(CHUNK)
  private pos = 0
  private sent = 0
  private answered = 0
  private error: Error | null = null
  private waiter: (() => void) | null = null
  /** Wakes a backpressure() that waits for 'drain', which never comes once the socket is destroyed. */
  private drainWaiter: (() => void) | null = null
  private waitFor = 0
  private lineStart = true

  private constructor (socket: Socket) {
    this.socket = socket
    socket.setNoDelay(true)
    socket.on('data', (d: Buffer) => this.onData(d))
    socket.on('error', (err) => { this.fail(err) })
    socket.on('close', () => { this.fail(new Error('Redis closed the bulk-load connection')) })
  }

  /** Connects with the credentials and database of a redis:// or rediss:// URL. */
  static async connect (url: string): Promise<RespBulkWriter> {
    const u = new URL(url)
    const port = u.port === '' ? 6379 : Number(u.port)
    const host = u.hostname.replace(/^\[|\]$/g, '')
    const socket = u.protocol === 'rediss:' ? tlsConnect({ host, port, servername: host }) : netConnect({ host, port })
    await new Promise<void>((resolve, reject) => {
      socket.once(u.protocol === 'rediss:' ? 'secureConnect' : 'connect', resolve)
      socket.once('error', reject)
    })
    const w = new RespBulkWriter(socket)
    if (u.password !== '') {
      const user = decodeURIComponent(u.username)
      w.command(user !== '' ? ['AUTH', user, decodeURIComponent(u.password)] : ['AUTH', decodeURIComponent(u.password)])
    }
    const db = u.pathname.replace(/^\//, '')
    if (db !== '' && db !== '0') w.command(['SELECT', db])
    await w.drain()
    return w
  }

  /** A whole command from strings (rarely used: the hot path composes commands with the primitives below). */
  command (args: string[]): void {
    this.arrayHeader(args.length)
    for (const a of args) this.bulkString(a)
    this.end()
  }

  /** Makes room for `bytes` more bytes in the current chunk. Call before composing a command. */
  reserve (bytes: number): void {
    if (this.pos + bytes <= this.out.length) return
    this.flushChunk()
    if (bytes > this.out.length) this.out = Buffer.allocUnsafe(bytes)
  }

  arrayHeader (n: number): void {
    this.out[this.pos++] = 42 /* * */
    this.int(n)
    this.crlf()
  }

  /** A bulk string of ASCII text. */
  bulkString (s: string): void {
    this.bulkHeader(s.length)
    this.pos += this.out.write(s, this.pos, 'latin1')
    this.crlf()
  }

  /** A bulk string copied from bytes src[start, end). */
  bulkBytes (src: Uint8Array, start: number, end: number): void {
    this.bulkHeader(end - start)
    this.out.set(src.subarray(start, end), this.pos)
    this.pos += end - start
    this.crlf()
  }

  /** `$<length>\r\n`: the caller then writes exactly `length` bytes and a crlf(). */
  bulkHeader (length: number): void {
    this.out[this.pos++] = 36 /* $ */
    this.int(length)
    this.crlf()
  }

  /** Pre-encoded bytes (a constant command head, a key prefix). */
  bytes (b: Uint8Array): void {
    this.out.set(b, this.pos)
    this.pos += b.length
  }

  byte (c: number): void {
    this.out[this.pos++] = c
  }

  /** A non-negative integer in decimal, without building a string. */
  int (n: number): void {
    this.digits(n, 10)
  }

  /** A non-negative integer in base 36 (lower case), as Number#toString(36) would write it. */
  base36 (n: number): void {
    this.digits(n, 36)
  }

  crlf (): void {
    this.out[this.pos++] = 13
    this.out[this.pos++] = 10
  }

  private digits (n: number, base: number): void {
    const len = digitCount(n, base)
    let p = this.pos + len
    this.pos = p
    do {
      const d = n % base
      this.out[--p] = d < 10 ? 48 + d : 87 + d
      n = (n - d) / base
    } while (n > 0)
  }

  /** Marks the end of one command; waits for Redis when too many are unanswered. */
  end (): void {
    this.sent++
  }

  /** True when the caller should `await writer.backpressure()` before composing more. */
  get congested (): boolean {
    return this.sent - this.answered > MAX_OUTSTANDING || this.socket.writableNeedDrain
  }

  async backpressure (): Promise<void> {
    this.flushChunk()
    if (this.sent - this.answered > MAX_OUTSTANDING / 2) await this.until(this.sent - MAX_OUTSTANDING / 2)
    if (this.socket.writableNeedDrain && this.error === null) {
      await new Promise<void>(resolve => {
        const done = (): void => { this.socket.off('drain', done); this.drainWaiter = null; resolve() }
        this.drainWaiter = done
        this.socket.once('drain', done)
      })
    }
    if (this.error !== null) throw this.error
  }

  /** Sends what is buffered and waits until Redis has answered every command; throws the first error reply. */
  async drain (): Promise<void> {
    this.flushChunk()
    await this.until(this.sent)
    if (this.error !== null) throw this.error
  }

  close (): void {
    this.socket.removeAllListeners('close')
    this.socket.destroy()
    this.fail(new Error('the bulk-load connection was closed'))
  }

  private flushChunk (): void {
    if (this.pos === 0) return
    // The socket keeps a reference to what it was given: hand it this chunk and start a fresh one.
    this.socket.write(this.out.subarray(0, this.pos))
    this.out = Buffer.allocUnsafe(CHUNK)
    this.pos = 0
  }

  private until (count: number): Promise<void> {
    if (this.answered >= count || this.error !== null) return Promise.resolve()
    this.waitFor = count
    return new Promise(resolve => { this.waiter = resolve })
  }

  private onData (d: Buffer): void {
    // Every reply we can receive is one line. An error line starts with '-' after a newline (or at the start).
    let lineStart = this.lineStart
    for (let i = 0; i < d.length; i++) {
      const c = d[i]
      if (lineStart && c === 45 /* - */ && this.error === null) {
        const nl = d.indexOf(13, i)
        this.error = new Error(`Redis refused a bulk-load command: ${d.toString('latin1', i + 1, nl === -1 ? d.length : nl)}`)
      }
      lineStart = c === 10
      if (lineStart) this.answered++
    }
    this.lineStart = lineStart
    if (this.waiter !== null && (this.answered >= this.waitFor || this.error !== null)) {
      const w = this.waiter
      this.waiter = null
      w()
    }
  }

  private fail (err: Error): void {
    if (this.error === null) this.error = err
    if (this.waiter !== null) { const w = this.waiter; this.waiter = null; w() }
    this.drainWaiter?.()
  }
}

/** How many digits `n` (a non-negative integer) has in `base`. */
export function digitCount (n: number, base: number): number {
  let len = 1
  while (n >= base) { n = Math.floor(n / base); len++ }
  return len
}
