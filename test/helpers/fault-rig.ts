// The fault suite's processes: a private redis-server that keeps its data on disk (so it can be SIGKILLed and come
// back with it, or be brought back empty) and the gateway as its own `serve` process (SIGTERM, SIGKILL, restart on
// the same port). The truth is in fault-truth.ts, the load generator in fault-load.ts.
//
// Every child process started here is registered, and a process 'exit' hook SIGKILLs (after SIGCONT) whatever is
// still running, so a failing or interrupted run never leaves a redis-server or a gateway behind.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { BIN, cliEnv } from './cli.js'
import { freePort, until } from './redis-server.js'

// ---------------------------------------------------------------------------------------------------------------
// Child processes: registered, and killed on exit whatever happens.

const children = new Set<ChildProcess>()
let hooked = false
function register (c: ChildProcess): void {
  children.add(c)
  c.once('exit', () => children.delete(c))
  if (hooked) return
  hooked = true
  process.once('exit', killAllChildren)
  // A test worker stopped by a signal does not run 'exit' hooks: clean up, then die of the same signal.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { killAllChildren(); process.kill(process.pid, sig) })
}

/** SIGKILLs every child this rig started that is still running (a stopped one is continued first). */
export function killAllChildren (): void {
  for (const c of children) {
    try { c.kill('SIGCONT'); c.kill('SIGKILL') } catch { /* gone */ }
  }
  children.clear()
}

export const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

const exited = (c: ChildProcess): Promise<void> => c.exitCode !== null || c.signalCode !== null
  ? Promise.resolve()
  : new Promise(resolve => c.once('exit', () => resolve()))

// ---------------------------------------------------------------------------------------------------------------
// A private redis-server with a dump file in its own folder.

export class FaultRedis {
  readonly port: number
  readonly dir: string
  private child: ChildProcess | null = null
  private stopped = false

  private constructor (port: number, dir: string) {
    this.port = port
    this.dir = dir
  }

  get url (): string { return `redis://127.0.0.1:${this.port}` }

  static async start (dir: string): Promise<FaultRedis> {
    mkdirSync(dir, { recursive: true })
    const r = new FaultRedis(await freePort(), dir)
    await r.start({ empty: true })
    return r
  }

  /** Starts redis-server; with its last dump unless `empty`. No automatic saves: a dump is taken by save(). */
  async start (opts: { empty: boolean }): Promise<void> {
    if (opts.empty) rmSync(join(this.dir, 'dump.rdb'), { force: true })
    const c = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--dbfilename', 'dump.rdb', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    c.once('error', () => {})
    register(c)
    this.child = c
    this.stopped = false
    const probe = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    probe.on('error', () => {})
    try {
      await until(async () => {
        try { await probe.connect(); return (await probe.ping()) === 'PONG' } catch { probe.disconnect(); return false }
      }, 20_000, `redis-server on port ${this.port} (is redis-server on the PATH?)`)
    } finally { probe.disconnect() }
  }

  /** SAVE: the dump a restart "with its data" comes back with. */
  async save (): Promise<void> {
    const c = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    c.on('error', () => {})
    try { await c.connect(); await c.save() } finally { c.disconnect() }
  }

  async kill (): Promise<void> {
    const c = this.child
    if (c === null) return
    this.child = null
    if (this.stopped) c.kill('SIGCONT')
    c.kill('SIGKILL')
    await exited(c)
  }

  pause (): void { this.child?.kill('SIGSTOP'); this.stopped = true }
  resume (): void { this.child?.kill('SIGCONT'); this.stopped = false }
}

// ---------------------------------------------------------------------------------------------------------------
// The gateway as its own process.

export class GatewayProcess {
  readonly port: number
  readonly url: string
  private readonly env: Record<string, string>
  private child: ChildProcess | null = null
  /** The last 64 KiB the gateway wrote to stderr (its log), for failure reports. */
  stderr = ''
  /** Every exit not caused by this rig (a crash): code/signal and the log tail at that moment. */
  readonly crashes: { at: number, code: number | null, signal: string | null, tail: string }[] = []
  private expectingExit = false

  constructor (port: number, env: Record<string, string>) {
    this.port = port
    this.url = `http://127.0.0.1:${port}`
    this.env = env
  }

  static async create (env: Record<string, string>): Promise<GatewayProcess> {
    return new GatewayProcess(await freePort(), env)
  }

  start (): void {
    this.expectingExit = false
    const c = spawn(process.execPath, [BIN, 'serve'], { env: cliEnv({ ...this.env, PORT: String(this.port) }), stdio: ['ignore', 'ignore', 'pipe'] })
    register(c)
    c.stderr!.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-65_536) })
    c.once('exit', (code, signal) => {
      if (!this.expectingExit) this.crashes.push({ at: Date.now(), code, signal, tail: this.stderr.slice(-4000) })
    })
    this.child = c
  }

  alive (): boolean {
    const c = this.child
    return c !== null && c.exitCode === null && c.signalCode === null
  }

  /** Waits until /readyz answers 200 (or throws with the log tail). */
  async waitReady (timeoutMs = 60_000): Promise<void> {
    await until(async () => {
      if (!this.alive()) throw new Error(`the gateway exited: ${this.stderr.slice(-2000)}`)
      try { return (await fetch(this.url + '/readyz', { signal: AbortSignal.timeout(1000) })).status === 200 } catch { return false }
    }, timeoutMs, `the gateway to be ready: ${this.stderr.slice(-2000)}`)
  }

  /** Sends a signal and waits for the exit (SIGKILL after `graceMs` if it does not go by itself). */
  async kill (signal: 'SIGTERM' | 'SIGKILL', graceMs = 30_000): Promise<{ ms: number, forced: boolean }> {
    const c = this.child
    if (c === null || !this.alive()) return { ms: 0, forced: false }
    this.expectingExit = true
    const t0 = Date.now()
    c.kill(signal)
    let forced = false
    const timer = setTimeout(() => { forced = true; c.kill('SIGKILL') }, graceMs)
    await exited(c)
    clearTimeout(timer)
    return { ms: Date.now() - t0, forced }
  }
}

export { freePort, until }
