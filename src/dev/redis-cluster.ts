// A real Redis Cluster for the tests and the scale-out simulation (bench/scale-out.js): 3 masters with 1 replica each,
// six private redis-server processes on spare loopback ports, each in its own temp folder. Only nodes.conf is written
// there (no dump, no AOF), so a killed node restarts as the same node and rejoins, with no data: it comes back as a
// replica and resyncs from whoever took over its slots. Every process is SIGKILLed by stop() and, whatever happens to
// its user, on process exit. A missing redis-server or redis-cli fails it naming the Debian package; nothing is skipped.

import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'

const HOST = '127.0.0.1'
const SLOTS = 16384
/** Small, so that a killed master is failed over in about two seconds. */
const NODE_TIMEOUT_MS = 1000

export interface ClusterMaster {
  port: number
  id: string
  /** inclusive slot ranges */
  slots: Array<[number, number]>
  /** ports of its connected replicas */
  replicas: number[]
}

export interface RedisClusterOptions {
  /** more redis-server arguments for every node, e.g. ['--cluster-require-full-coverage', 'no'] */
  args?: string[]
}

// ---------------------------------------------------------------------------------------------------------------
// Processes and folders: nothing outlives the test process, even when a test fails or the worker is interrupted.
//
// Each redis-server runs under a small sh watchdog that reads a pipe from this process: when this process ends, however
// it ends (SIGKILL and crashes included), the pipe closes and the watchdog SIGKILLs redis-server. Closing the pipe is
// also how kill() kills. The sh exits when redis-server does, for whatever reason.
const WATCHDOG = 'redis-server "$@" & pid=$!; exec 3<&0; { read _ <&3; kill -9 $pid; } & wait $pid'

const dirs = new Set<string>()
let hooked = false
function removeDirs (): void {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
  dirs.clear()
}
function hookExit (): void {
  if (hooked) return
  hooked = true
  process.once('exit', removeDirs)
  // A worker stopped by a signal does not run 'exit' hooks: clean up, then die of the same signal.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { removeDirs(); process.kill(process.pid, sig) })
}

const exited = (c: ChildProcess): Promise<void> => c.exitCode !== null || c.signalCode !== null
  ? Promise.resolve()
  : new Promise(resolve => c.once('exit', () => resolve()))

function requireTool (name: string, debianPackage: string): void {
  const r = spawnSync(name, ['--version'], { stdio: 'ignore' })
  if (r.error !== undefined) throw new Error(`${name} is required for the Redis Cluster tests: apt-get install ${debianPackage} (${r.error.message})`)
}

const portFree = (port: number): Promise<boolean> => new Promise(resolve => {
  const s = createServer()
  s.once('error', () => resolve(false))
  s.listen(port, HOST, () => s.close(() => resolve(true)))
})

/** A port whose cluster bus port (port + 10000) is free too; both below Linux's ephemeral range (32768+), so no
 *  outgoing connection takes one of them between this check and redis-server's bind. */
async function sparePort (): Promise<number> {
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * 12_000)
    if (await portFree(port) && await portFree(port + 10_000)) return port
  }
}

/** Polls `check` (null: done; a string: why not yet) until done; the timeout error carries the last reason. */
async function waitFor (what: string, timeoutMs: number, check: () => Promise<string | null>): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const why = await check()
    if (why === null) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${why}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

/** One short-lived connection to one node: works the same before and after a node is killed or restarted. */
async function onNode<T> (port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({ host: HOST, port, lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000 })
  r.on('error', () => {})
  try { await r.connect(); return await fn(r) } finally { r.disconnect() }
}

interface NodeLine { id: string, port: number, flags: string[], masterId: string, connected: boolean, slots: Array<[number, number]> }

/** CLUSTER NODES: `<id> <ip:port@cport> <flags> <master|-> <ping> <pong> <epoch> <link> <slot ranges…>` */
function parseNodes (text: string): NodeLine[] {
  return text.trim().split('\n').map(line => {
    const [id, addr, flags, masterId, , , , link, ...slots] = line.split(' ')
    return {
      id: id!,
      port: Number(addr!.split('@')[0]!.split(':').at(-1)),
      flags: flags!.split(','),
      masterId: masterId!,
      connected: link === 'connected',
      slots: slots.filter(s => !s.startsWith('[')).map(s => { // [slot->-id]: a slot being migrated
        const [a, b] = s.split('-').map(Number)
        return [a!, b ?? a!] as [number, number]
      })
    }
  })
}

const BAD_FLAGS = ['fail', 'fail?', 'handshake', 'noaddr']
const healthy = (n: NodeLine): boolean => !n.flags.some(f => BAD_FLAGS.includes(f)) && (n.connected || n.flags.includes('myself'))
const infoField = (info: string, field: string): string | undefined => new RegExp(`^${field}:(.*)$`, 'm').exec(info)?.[1]?.trim()

// ---------------------------------------------------------------------------------------------------------------

class ClusterNode {
  child: ChildProcess | null = null
  constructor (readonly port: number, readonly dir: string, private readonly extraArgs: string[]) {}

  get alive (): boolean { return this.child !== null }

  log (): string {
    try { return readFileSync(join(this.dir, 'redis.log'), 'utf8').split('\n').slice(-15).join('\n') } catch { return '(no log)' }
  }

  /** Starts redis-server (with its nodes.conf, if it has one) and waits until it answers PING. */
  async start (): Promise<void> {
    const c = spawn('sh', ['-c', WATCHDOG, 'sh',
      '--port', String(this.port), '--bind', HOST, '--dir', this.dir, '--logfile', 'redis.log',
      '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
      '--save', '', '--appendonly', 'no',
      // a replica's first sync is diskless; Redis waits 5 s by default for more replicas to share it
      '--repl-diskless-sync-delay', '0', ...this.extraArgs
    ], { stdio: ['pipe', 'ignore', 'ignore'] })
    c.once('error', () => {})
    c.once('exit', () => {
      c.stdin!.destroy() // lets the watchdog's reader finish
      if (this.child === c) this.child = null
    })
    this.child = c
    await waitFor(`redis-server on port ${this.port}`, 10_000, async () => {
      if (this.child !== c) throw new Error(`redis-server on port ${this.port} exited at start:\n${this.log()}`)
      // its own folder proves it is ours, not another test's redis-server that won the port
      const dir = await onNode(this.port, r => r.config('GET', 'dir')).then(d => (d as string[])[1], (err: Error) => err.message)
      return dir === realpathSync(this.dir) ? null : `port ${this.port} answers with dir ${dir}`
    })
  }

  async kill (): Promise<void> {
    const c = this.child
    if (c === null) return
    c.stdin!.end() // the watchdog SIGKILLs redis-server
    await exited(c)
  }
}

export class RedisCluster {
  private stopped = false
  private readonly killedAt = new Map<number, number>()

  private constructor (private readonly all: ClusterNode[]) {}

  /** Starts six nodes, joins them with `redis-cli --cluster create`, and waits until every node sees a healthy cluster. */
  static async start (opts: RedisClusterOptions = {}): Promise<RedisCluster> {
    requireTool('redis-server', 'redis-server')
    requireTool('redis-cli', 'redis-tools')
    hookExit()
    const cluster = new RedisCluster([])
    try {
      for (let i = 0; i < 6; i++) cluster.all.push(await startNode(opts.args ?? []))
      await promisify(execFile)('redis-cli', ['--cluster', 'create', ...cluster.nodes, '--cluster-replicas', '1', '--cluster-yes'], { timeout: 30_000 })
        .catch((err: Error & { stdout?: string }) => { throw new Error(`redis-cli --cluster create failed: ${err.message}\n${err.stdout ?? ''}`) })
      await cluster.waitSettled('the new cluster', 30_000)
      return cluster
    } catch (err) {
      await cluster.stop()
      throw err
    }
  }

  /** host:port of every node, as REDIS_CLUSTER_NODES takes them (joined with ','). */
  get nodes (): string[] { return this.all.map(n => `${HOST}:${n.port}`) }

  /** The gateway's environment for this cluster. */
  get env (): { REDIS_CLUSTER_NODES: string } { return { REDIS_CLUSTER_NODES: this.nodes.join(',') } }

  get ports (): number[] { return this.all.map(n => n.port) }

  /** One command on one node (its own connection): `call(port, 'CLUSTER', 'INFO')`. */
  call (port: number, command: string, ...args: Array<string | number>): Promise<unknown> {
    return onNode(port, r => r.call(command, ...args))
  }

  /** The masters serving slots now, with their replicas, as the first live node sees them. */
  async masters (): Promise<ClusterMaster[]> {
    const lines = parseNodes(await this.askAnyLive('CLUSTER', 'NODES'))
    return lines
      .filter(n => n.flags.includes('master') && healthy(n) && n.slots.length > 0)
      .map(m => ({ port: m.port, id: m.id, slots: m.slots, replicas: lines.filter(r => r.masterId === m.id && healthy(r)).map(r => r.port) }))
      .sort((a, b) => a.slots[0]![0] - b.slots[0]![0])
  }

  /** The port of the master serving `key`'s slot (CLUSTER KEYSLOT: the server's own hashing, hash tags included). */
  async masterOf (key: string): Promise<number> {
    const slot = Number(await this.askAnyLive('CLUSTER', 'KEYSLOT', key))
    const m = (await this.masters()).find(m => m.slots.some(([a, b]) => slot >= a && slot <= b))
    if (m === undefined) throw new Error(`no live master serves slot ${slot} (key ${key})`)
    return m.port
  }

  /** SIGKILL: no goodbye to the cluster, as in a crash. */
  async kill (port: number): Promise<void> {
    await this.node(port).kill()
    this.killedAt.set(port, Date.now())
  }

  /** Starts a killed node again with its nodes.conf; resolves once it has rejoined and the cluster is healthy. */
  async restart (port: number): Promise<void> {
    const n = this.node(port)
    if (n.alive) throw new Error(`node ${port} is running`)
    await n.start()
    await this.waitSettled(`node ${port} to rejoin`, 30_000)
  }

  /** Waits until the killed master's slots are served by a promoted replica and every live node sees a healthy
   *  cluster; returns the ms since kill(oldMasterPort) (or since this call, for a node that was not killed here). */
  async waitFailover (oldMasterPort: number, timeoutMs = 30_000): Promise<number> {
    const from = this.killedAt.get(oldMasterPort) ?? Date.now()
    if (this.node(oldMasterPort).alive) throw new Error(`node ${oldMasterPort} is still running: kill it first`)
    await this.waitSettled(`a replica of ${oldMasterPort} to take over`, timeoutMs)
    return Date.now() - from
  }

  /** Waits until every live replica has every write its master has (replication offsets equal). */
  async waitReplicated (timeoutMs = 10_000): Promise<void> {
    await waitFor('replicas to catch up', timeoutMs, async () => {
      for (const m of await this.masters()) {
        const info = await onNode(m.port, r => r.info('replication'))
        const offset = infoField(info, 'master_repl_offset')
        const behind = [...info.matchAll(/^slave\d+:.*offset=(\d+)/gm)].filter(s => s[1] !== offset)
        if (behind.length > 0) return `replica of ${m.port} at ${behind[0]![1]}, master at ${offset}`
      }
      return null
    })
  }

  /** Kills every node and removes the folders; safe to call again. */
  async stop (): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    await Promise.all(this.all.map(n => n.kill()))
    for (const n of this.all) { rmSync(n.dir, { recursive: true, force: true }); dirs.delete(n.dir) }
  }

  private node (port: number): ClusterNode {
    const n = this.all.find(n => n.port === port)
    if (n === undefined) throw new Error(`no node on port ${port}`)
    return n
  }

  private async askAnyLive (command: string, ...args: string[]): Promise<string> {
    let last: unknown
    for (const n of this.all.filter(n => n.alive)) {
      try { return String(await this.call(n.port, command, ...args)) } catch (err) { last = err }
    }
    throw new Error(`no live node answered ${command} ${args.join(' ')}: ${String(last)}`)
  }

  /** Every live node: cluster_state ok with all slots ok, all slots served by live masters, its link to its master
   *  up if a replica, and the same picture of every live node (connected, unflagged, role, master, slots) as that
   *  node has of itself: gossip has spread the change. */
  private async waitSettled (what: string, timeoutMs: number): Promise<void> {
    const live = this.all.filter(n => n.alive).map(n => n.port)
    await waitFor(what, timeoutMs, async () => {
      const views = new Map<number, NodeLine[]>()
      for (const port of live) {
        const why = await onNode(port, async r => {
          const info = String(await r.call('CLUSTER', 'INFO'))
          if (infoField(info, 'cluster_state') !== 'ok') return 'cluster_state is ' + infoField(info, 'cluster_state')
          if (infoField(info, 'cluster_slots_ok') !== String(SLOTS)) return `cluster_slots_ok is ${infoField(info, 'cluster_slots_ok')}`
          const lines = parseNodes(String(await r.call('CLUSTER', 'NODES')))
          views.set(port, lines)
          const owners = new Uint8Array(SLOTS) // each slot exactly once: a rejoining old master may still claim its slots
          for (const m of lines.filter(n => n.flags.includes('master') && live.includes(n.port))) for (const [a, b] of m.slots) for (let i = a; i <= b; i++) owners[i]!++
          const odd = owners.findIndex(n => n !== 1)
          if (odd !== -1) return `slot ${odd} has ${owners[odd]} live masters`
          if (lines.find(n => n.flags.includes('myself'))!.flags.includes('slave')) {
            const link = infoField(await r.info('replication'), 'master_link_status')
            if (link !== 'up') return `master_link_status is ${link}`
          }
          return null
        }).catch((err: Error) => err.message)
        if (why !== null) return `node ${port}: ${why}`
      }
      const picture = (n: NodeLine): string => `${n.flags.includes('master') ? 'master' : `replica of ${n.masterId}`} of slots ${JSON.stringify(n.slots)}`
      for (const p of live) {
        const itself = picture(views.get(p)!.find(n => n.flags.includes('myself'))!)
        for (const [port, lines] of views) {
          const seen = lines.find(n => n.port === p)
          if (seen === undefined || !healthy(seen)) return `node ${port} does not see ${p} connected and healthy`
          if (picture(seen) !== itself) return `node ${port} sees ${p} as ${picture(seen)}, it is ${itself}`
        }
      }
      return null
    })
  }
}

/** A node on a spare port in a new folder; tries other ports if redis-server cannot bind (another test took it). */
async function startNode (args: string[]): Promise<ClusterNode> {
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'iys-redis-cluster-'))
    dirs.add(dir)
    const n = new ClusterNode(await sparePort(), dir, args)
    try {
      await n.start()
      return n
    } catch (err) {
      await n.kill()
      rmSync(dir, { recursive: true, force: true })
      dirs.delete(dir)
      if (attempt === 3) throw err
    }
  }
}

export const startRedisCluster = (opts?: RedisClusterOptions): Promise<RedisCluster> => RedisCluster.start(opts)
