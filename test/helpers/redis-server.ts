// A private redis-server on a free loopback port, for tests that stop and restart Redis. It keeps nothing on disk.

import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { Redis } from 'ioredis'

export async function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

export async function until (cond: () => Promise<boolean> | boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 25))
  }
}

export class PrivateRedis {
  readonly port: number
  private child: ChildProcess | null = null

  constructor (port: number) { this.port = port }

  get url (): string { return `redis://127.0.0.1:${this.port}` }

  static async start (): Promise<PrivateRedis> {
    const r = new PrivateRedis(await freePort())
    await r.start()
    return r
  }

  async start (): Promise<void> {
    this.child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
    this.child.once('error', () => {})
    const probe = new Redis(this.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    probe.on('error', () => {})
    await until(async () => {
      try { await probe.connect(); await probe.ping(); return true } catch { probe.disconnect(); return false }
    }, 10_000, `redis-server on port ${this.port} (is redis-server on the PATH?)`)
    probe.disconnect()
  }

  /** SIGSTOP: the server keeps its connections open and answers nothing (a hung Redis). */
  pause (): void { if (this.child?.pid !== undefined) process.kill(this.child.pid, 'SIGSTOP') }

  /** SIGCONT after pause(). */
  resume (): void { if (this.child?.pid !== undefined) process.kill(this.child.pid, 'SIGCONT') }

  async stop (): Promise<void> {
    const c = this.child
    if (c !== null && c.exitCode === null) this.resume() // a stopped process does not act on SIGKILL until continued on some systems
    if (c === null || c.exitCode !== null) return
    this.child = null
    const exited = new Promise(resolve => c.once('exit', resolve))
    c.kill('SIGKILL')
    await exited
  }
}
