// The Redis Cluster test harness (src/dev/redis-cluster.ts) against ioredis' Cluster client, as the gateway will
// use it: hash tags place keys on different masters, multi-key commands work within one slot only, and a killed master
// is replaced by its replica while the same client keeps answering. Timings are printed, not asserted.

import { existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Cluster } from 'ioredis'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRedisCluster, type RedisCluster } from '../src/dev/redis-cluster.js'

// {a}, {b} and {c} hash to slots 15495, 3300 and 7365: one in each third that `redis-cli --cluster create` assigns.
const TAGS = ['{a}', '{b}', '{c}']

describe('the harness without the Redis tools', () => {
  it('fails naming the Debian package that is missing', async () => {
    const bin = mkdtempSync(join(tmpdir(), 'iys-no-redis-'))
    const path = process.env.PATH ?? ''
    const server = path.split(':').map(d => join(d, 'redis-server')).find(f => existsSync(f))
    try {
      process.env.PATH = bin
      await expect(startRedisCluster()).rejects.toThrow(/apt-get install redis-server/)
      symlinkSync(server!, join(bin, 'redis-server')) // redis-server present, redis-cli not
      await expect(startRedisCluster()).rejects.toThrow(/redis-cli .*apt-get install redis-tools/)
    } finally {
      process.env.PATH = path
      rmSync(bin, { recursive: true })
    }
  })
})

describe('a real Redis Cluster: 3 masters with 1 replica each', () => {
  let cluster: RedisCluster
  let client: Cluster

  beforeAll(async () => {
    const t0 = Date.now()
    cluster = await startRedisCluster()
    console.log(`Redis Cluster started in ${Date.now() - t0} ms: ${cluster.env.REDIS_CLUSTER_NODES}`)
    // ioredis' defaults on purpose: the failover test prints what an untuned client sees during the outage. Measured
    // here: retryDelayOnFailover and retryDelayOnClusterDown 200 with maxRedirections 32 turn every failure into a wait
    // (of up to the ~2.5 s failover); scaleReads 'slave' (+ cluster-allow-reads-when-down) keeps reads answering.
    client = new Cluster(cluster.ports.map(port => ({ host: '127.0.0.1', port })))
  })

  afterAll(async () => {
    client?.disconnect()
    await cluster?.stop()
  })

  it('has three masters with one replica each, covering all 16384 slots', async () => {
    const masters = await cluster.masters()
    expect(masters).toHaveLength(3)
    for (const m of masters) expect(m.replicas).toHaveLength(1)
    expect(masters.flatMap(m => m.slots).reduce((s, [a, b]) => s + b - a + 1, 0)).toBe(16384)
  })

  it('puts keys with three different hash tags on three different masters', async () => {
    const keys = TAGS.map(t => `${t}:consent`)
    const owners = await Promise.all(keys.map(k => cluster.masterOf(k)))
    expect(new Set(owners).size).toBe(3)
    for (const k of keys) await client.set(k, `value of ${k}`)
    for (const [i, k] of keys.entries()) {
      expect(await client.get(k)).toBe(`value of ${k}`)
      // the key is on its master, and on no other master
      for (const m of await cluster.masters()) {
        if (m.port === owners[i]) expect(await cluster.call(m.port, 'EXISTS', k)).toBe(1)
        else await expect(cluster.call(m.port, 'EXISTS', k)).rejects.toThrow(/^MOVED/)
      }
    }
  })

  it('runs a multi-key command within one hash tag and refuses one across slots with CROSSSLOT', async () => {
    await client.mset('{a}:x', '1', '{a}:y', '2')
    expect(await client.mget('{a}:x', '{a}:y')).toEqual(['1', '2'])
    await expect(client.mget('{a}:x', '{b}:x')).rejects.toThrow(/CROSSSLOT/)
  })

  let victim: number // the master killed below
  let heir: number // its replica

  it('fails a killed master over to its replica; the same client reads the key again', async () => {
    const key = '{a}:failover'
    const other = '{b}:failover' // on a master that stays up
    await client.set(key, 'kept')
    await client.set(other, 'kept')
    await cluster.waitReplicated() // a write the replica had not received yet would be lost: not what this test is about
    victim = await cluster.masterOf(key)
    heir = (await cluster.masters()).find(m => m.port === victim)!.replicas[0]!

    const t0 = Date.now()
    await cluster.kill(victim)
    const probes = [
      probe(t0, () => client.get(key)),
      probe(t0, () => client.set('{a}:written', 'w')),
      probe(t0, () => client.get(other))
    ]
    const failoverMs = await cluster.waitFailover(victim)
    const [reads, writes, otherReads] = await Promise.all(probes.map(async p => { p.stop(); return p.done }))
    console.log(`failover of ${victim} to ${heir}: cluster healthy again ${failoverMs} ms after SIGKILL\n` +
      `  GET of a key of the killed master:${reads}\n  SET of a key of the killed master:${writes}\n  GET of a key of another master:${otherReads}`)

    expect(await cluster.masterOf(key)).toBe(heir)
    expect(await client.get(key)).toBe('kept')
    expect(await client.get(other)).toBe('kept')
    await client.set(key, 'written after failover')
    expect(await client.get(key)).toBe('written after failover')
  }, 30_000)

  it('brings the killed master back as a replica of its heir, with the data', async () => {
    const t0 = Date.now()
    await cluster.restart(victim)
    console.log(`node ${victim} rejoined in ${Date.now() - t0} ms`)
    const masters = await cluster.masters()
    expect(masters.map(m => m.port)).not.toContain(victim)
    expect(masters.find(m => m.port === heir)!.replicas).toEqual([victim])
    expect(await cluster.call(victim, 'ROLE')).toEqual(['slave', '127.0.0.1', heir, 'connected', expect.any(Number)])
    await cluster.waitReplicated()
    expect(await cluster.call(victim, 'DBSIZE')).toBe(await cluster.call(heir, 'DBSIZE'))
  }, 30_000)

  it('stop() kills every node, and may be called again', async () => {
    client.disconnect()
    await cluster.stop()
    await cluster.stop()
    for (const port of cluster.ports) await expect(cluster.call(port, 'PING')).rejects.toThrow()
  })
})

interface Probe { stop (): void, done: Promise<string> }

/** Runs `op` in a loop until stopped; returns a timeline of what it got (ms since t0), consecutive repeats merged. */
function probe (t0: number, op: () => Promise<unknown>): Probe {
  let running = true
  const runs: Array<{ got: string, from: number, to: number, n: number, slowest: number }> = []
  const done = (async () => {
    while (running) {
      const start = Date.now()
      const got = await op().then(v => `ok ${String(v)}`, (err: Error) => `${err.name}: ${err.message}`)
      const ms = Date.now() - start
      const last = runs.at(-1)
      if (last?.got === got) Object.assign(last, { to: Date.now() - t0, n: last.n + 1, slowest: Math.max(last.slowest, ms) })
      else runs.push({ got, from: start - t0, to: Date.now() - t0, n: 1, slowest: ms })
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    return runs.map(r => `\n    ${r.from}-${r.to} ms: ${r.n} x ${r.got} (slowest ${r.slowest} ms)`).join('')
  })()
  return { stop: () => { running = false }, done }
}
