// A TCP proxy in front of a real service, to cut the network between the gateway and it (an outage that does not
// disturb the machine's Postgres for the other tests) and to restore it.

import { connect, createServer, type Server, type Socket } from 'node:net'
import { freePort } from './redis-server.js'

export class TcpProxy {
  readonly port: number
  private readonly target: { host: string, port: number }
  private server: Server | null = null
  private readonly sockets = new Set<Socket>()

  private constructor (port: number, target: { host: string, port: number }) {
    this.port = port
    this.target = target
  }

  static async start (target: { host: string, port: number }): Promise<TcpProxy> {
    const p = new TcpProxy(await freePort(), target)
    await p.restore()
    return p
  }

  /** Accepts connections again. */
  async restore (): Promise<void> {
    if (this.server !== null) return
    const server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host)
      for (const s of [client, upstream]) { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); s.on('error', () => {}) }
      client.pipe(upstream).pipe(client)
      // A side that goes away takes the other with it. pipe() ends the other side on a clean FIN only: a client
      // killed with unread data resets its connection, and without this the server end stayed open — a Postgres
      // backend of a SIGKILLed gateway then kept its transaction and its locks, and the next gateway waited on them.
      client.once('close', () => { upstream.destroy() })
      upstream.once('close', () => { client.destroy() })
    })
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(this.port, '127.0.0.1', resolve) })
    this.server = server
  }

  /** Drops every open connection and refuses new ones. */
  async cut (): Promise<void> {
    const s = this.server
    this.server = null
    for (const sock of this.sockets) sock.destroy()
    if (s !== null) await new Promise<void>(resolve => s.close(() => resolve()))
  }
}
