// SERVE_THREADS=2 (http/serve-threads.ts, serve-thread.ts): a serving thread beside the main thread on the one port.
// Every request here goes over a connection of its own, so the kernel spreads them over both threads' sockets; the
// per-thread counter shows that both answered. The threaded gateway must answer exactly as a SERVE_THREADS=1 gateway
// over the same data, see a RET written through it at once on every thread, journal every check of every thread,
// serve every other route through its proxy with the same auth, and stop cleanly.

import { request } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.js'
import { runSteps } from './helpers/cli.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

const KEYS = 3000
const phoneOf = (i: number): string => '+90533' + String(1_000_000 + i)
const SP = '/sps/700001/brands/600001'

/** `YYYY-MM-DD HH:mm:ss` in Turkey time (UTC+3) of `ms`. */
const turkeyTime = (ms: number): string => new Date(ms + 3 * 3_600_000).toISOString().slice(0, 19).replace('T', ' ')

interface Answer { status: number, text: string, headers: Record<string, string | string[] | undefined> }

/** One request over a connection of its own (no keep-alive agent): each may land on either thread. */
function fresh (base: string, method: string, path: string, headers: Record<string, string>, body?: string | Buffer, localAddress?: string): Promise<Answer> {
  const url = new URL(base)
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, agent: false, localAddress, headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) } }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString(), headers: res.headers }) })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

describe('SERVE_THREADS=2', () => {
  let services: TestServicesWithRedis
  let threaded: RunningGateway
  let single: RunningGateway
  /** no decision log: a thread then answers without waiting for the main thread, which gets counts only */
  let unjournalled: RunningGateway

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-threads-' })
    const file = join(services.dir, 'c.csv')
    const lines = ['iysCode,brandCode,recipient,recipientType,type,status,source,consentDate']
    // Keys 0 … KEYS-1 stored (a quarter RET); as many again with no record.
    for (let i = 0; i < KEYS; i++) lines.push(`700001,600001,${phoneOf(i)},BIREYSEL,MESAJ,${i % 4 === 0 ? 'RET' : 'ONAY'},HS_WEB,2024-01-15 10:00:00`)
    writeFileSync(file, lines.join('\n') + '\n')
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    threaded = await startTestGateway({ ...services.env, REPLICA: 'true', SERVE_THREADS: '2' })
    single = await startTestGateway({ ...services.env, REPLICA: 'true', DECISION_LOG: 'false' })
    unjournalled = await startTestGateway({ ...services.env, REPLICA: 'true', DECISION_LOG: 'false', SERVE_THREADS: '2' })
    const ready = async (gw: RunningGateway): Promise<any> => (await fetch(gw.url + '/readyz')).json()
    for (const gw of [threaded, single, unjournalled]) await until(async () => (await ready(gw)).replica?.serving === true, 30_000, 'the replicas to serve')
    for (const gw of [threaded, unjournalled]) await until(async () => (await ready(gw)).serveThreads === 2, 15_000, 'the serving thread to listen')
  }, 120_000)

  afterAll(async () => {
    await unjournalled?.close()
    await single?.close()
    await threaded?.close()
    await services?.close()
  })

  const threadCounts = async (gw: RunningGateway = threaded): Promise<number[]> => {
    const text = await (await fetch(gw.url + '/metrics')).text()
    return [0, 1].map(t => Number(new RegExp(`^iys_serve_thread_requests_total\\{thread="${t}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0))
  }
  const checkOn = async (gw: RunningGateway, recipients: string[]): Promise<any[]> => {
    const r = await fresh(gw.url, 'POST', '/v1/check', { 'content-type': 'application/json', ...gw.auth }, JSON.stringify({ brandCode: '600001', type: 'MESAJ', recipients }))
    expect(r.status).toBe(200)
    return JSON.parse(r.text).results
  }
  const decisionRows = async (): Promise<number> => Number((await services.pool.query('SELECT count(*)::int AS n FROM decisions')).rows[0].n)

  const decisionsCounted = async (gw: RunningGateway): Promise<number> =>
    [...(await (await fetch(gw.url + '/metrics')).text()).matchAll(/^iys_decisions_total\{[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0)

  it('answers checks on both threads exactly as SERVE_THREADS=1 does, and journals every decision of both', async () => {
    const before = await threadCounts()
    const unjournalledBefore = await threadCounts(unjournalled)
    const countedBefore = await decisionsCounted(unjournalled)
    const rowsBefore = await decisionRows()
    let sent = 0
    const all = Array.from({ length: 2 * KEYS }, (_, i) => phoneOf(i))
    // Batches of 25 and single checks, each over a new connection, a few at a time.
    const bodies: string[][] = []
    for (let i = 0; i < all.length; i += 25) bodies.push(all.slice(i, i + 25))
    for (let i = 0; i < 100; i++) bodies.push([all[(i * 37) % all.length]!])
    for (let i = 0; i < bodies.length; i += 8) {
      await Promise.all(bodies.slice(i, i + 8).map(async recipients => {
        const [a, b, c] = await Promise.all([checkOn(threaded, recipients), checkOn(single, recipients), checkOn(unjournalled, recipients)])
        expect(a).toEqual(b)
        expect(c).toEqual(b)
        sent += recipients.length
      }))
    }
    // The answers are the data's: spot checks of each kind.
    expect((await checkOn(threaded, [phoneOf(0), phoneOf(1), phoneOf(KEYS)])).map(r => r.reason)).toEqual(['REJECTED', 'CONSENT', 'NO_CONSENT'])
    sent += 3
    const after = await threadCounts()
    expect(after[0]! - before[0]!).toBeGreaterThan(0)
    expect(after[1]! - before[1]!).toBeGreaterThan(0)
    await until(async () => await decisionRows() - rowsBefore === sent, 15_000, 'every check decision in the decision log')
    // Without a journal, each thread's decisions are still counted in the one /metrics.
    const unjournalledAfter = await threadCounts(unjournalled)
    expect(unjournalledAfter[1]! - unjournalledBefore[1]!).toBeGreaterThan(0)
    await until(async () => await decisionsCounted(unjournalled) - countedBefore === sent - 3, 5_000, 'every decision counted')
  }, 120_000)

  it('makes a RET written through its consent API effective on every thread at once', async () => {
    const target = phoneOf(1) // stored ONAY
    const r = await fresh(threaded.url, 'POST', SP + '/consents', { 'content-type': 'application/json', ...threaded.auth },
      JSON.stringify({ recipient: target, recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'RET', consentDate: turkeyTime(Date.now() - 3_600_000) }))
    expect(r.status, r.text).toBe(200)
    const before = await threadCounts()
    await until(async () => (await checkOn(threaded, [target]))[0].reason === 'REJECTED', 10_000, 'the RET to reach a check')
    // From then on, every check on every thread sees it (the replica is one shared table).
    const answers = await Promise.all(Array.from({ length: 40 }, async () => (await checkOn(threaded, [target]))[0].reason))
    expect(new Set(answers)).toEqual(new Set(['REJECTED']))
    const after = await threadCounts()
    expect(after[1]! - before[1]!).toBeGreaterThan(0)
  }, 30_000)

  it('serves every other route through the main thread with the same auth, on both threads', async () => {
    const before = await threadCounts()
    for (let i = 0; i < 20; i++) {
      const list = await fresh(threaded.url, 'GET', '/v1/scrub', threaded.auth)
      expect(list.status).toBe(200)
      expect(JSON.parse(list.text)).toHaveProperty('jobs')
      expect((await fresh(threaded.url, 'GET', '/v1/scrub', {})).status).toBe(401)
      expect((await fresh(threaded.url, 'GET', '/v1/scrub', { authorization: 'Bearer ik_0000000000000001.wrong' })).status).toBe(401)
      expect((await fresh(threaded.url, 'GET', '/metrics', {})).text).toContain('iys_serve_thread_requests_total')
      const status = await fresh(threaded.url, 'POST', SP + '/consents/status', { 'content-type': 'application/json', ...threaded.auth }, JSON.stringify({ recipient: phoneOf(2), recipientType: 'BIREYSEL', type: 'MESAJ' }))
      expect(status.status).toBe(200)
      expect(JSON.parse(status.text)).toMatchObject({ status: 'ONAY' })
      expect((await fresh(threaded.url, 'GET', '/v1/check', threaded.auth)).status).toBe(405)
      expect((await fresh(threaded.url, 'GET', '/nowhere', threaded.auth)).status).toBe(404)
    }
    // A scrub: its upload streamed in through the proxy, its result streamed back.
    const list = Array.from({ length: 2 * KEYS }, (_, i) => phoneOf(i)).join('\n') + '\n'
    const up = await fresh(threaded.url, 'POST', '/v1/scrub?brandCode=600001&type=MESAJ', { 'content-type': 'text/csv', ...threaded.auth }, list)
    expect(up.status).toBe(202)
    const jobId = JSON.parse(up.text).jobId as string
    await until(async () => JSON.parse((await fresh(threaded.url, 'GET', `/v1/scrub/${jobId}`, threaded.auth)).text).state === 'done', 60_000, 'the scrub job')
    const result = await fresh(threaded.url, 'GET', `/v1/scrub/${jobId}/result`, threaded.auth)
    expect(result.status).toBe(200)
    const rows = result.text.trim().split('\n')
    expect(rows.length).toBe(2 * KEYS + 1) // a header and one row per line
    expect(rows.filter(r => r.includes(',REJECTED,')).length).toBeGreaterThan(KEYS / 4 - 2)
    const after = await threadCounts()
    // The main thread answered every proxied request; the serving thread its own 401s at most.
    expect(after[0]! - before[0]!).toBeGreaterThanOrEqual(20 * 5)
  }, 120_000)

  it('starts a serving thread again when it dies, and answers right meanwhile from the main thread', async () => {
    const serveThreads = async (): Promise<number> => ((await (await fetch(threaded.url + '/readyz')).json()) as { serveThreads: number }).serveThreads
    await threaded.gw.serveThreads!.fail(1)
    expect(await serveThreads()).toBe(1)
    // Meanwhile every new connection reaches the main thread's socket, and is answered as SERVE_THREADS=1 answers.
    const recipients = Array.from({ length: 40 }, (_, i) => phoneOf(100 + i))
    const expected = (await checkOn(single, recipients)).map(r => r.reason)
    expect(new Set(expected)).toEqual(new Set(['CONSENT', 'REJECTED']))
    for (let round = 0; round < 5; round++) expect((await checkOn(threaded, recipients)).map(r => r.reason)).toEqual(expected)
    await until(async () => (await serveThreads()) === 2, 15_000, 'the serving thread to be started again')
    const before = await threadCounts()
    await until(async () => {
      expect((await checkOn(threaded, recipients)).map(r => r.reason)).toEqual(expected)
      return (await threadCounts())[1]! > before[1]!
    }, 15_000, 'the restarted thread to answer checks')
  }, 60_000)

  it('stops both threads on close, answering nothing afterwards', async () => {
    const { port } = new URL(threaded.url)
    await threaded.close()
    await expect(fresh(`http://127.0.0.1:${port}`, 'GET', '/healthz', {})).rejects.toThrow()
    threaded = undefined as unknown as RunningGateway
  }, 30_000)
})

describe('SERVE_THREADS=2 and per-client limits', () => {
  let services: TestServicesWithRedis
  let gw: RunningGateway

  beforeAll(async () => {
    services = await testServices({ redis: true, migrate: true, dirPrefix: 'iys-threads-peer-' })
    gw = await startTestGateway({ ...services.env, SERVE_THREADS: '2', IYS_PUSH_USER: 'iys', IYS_PUSH_PASSWORD: 'push-secret', IYS_PUSH_MAX_FAILURES: '3' })
    await until(async () => ((await (await fetch(gw.url + '/readyz')).json()) as { serveThreads?: number }).serveThreads === 2, 15_000, 'the serving thread to listen')
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  const push = (password: string, from: string, extra: Record<string, string> = {}): Promise<Answer> =>
    fresh(gw.url, 'POST', '/iys/push', { 'content-type': 'application/json', authorization: 'Basic ' + Buffer.from('iys:' + password).toString('base64'), ...extra }, '{"list":[]}', from)

  it('locks out the client that failed, whichever thread took its requests, and only that client', async () => {
    // 127.0.0.2 fails six times, claiming another address in the header the threads use (without the secret).
    for (let i = 0; i < 6; i++) expect([401, 429]).toContain((await push('wrong', '127.0.0.2', { 'x-iys-thread-peer': '0123456789abcdef 10.9.9.9' })).status)
    for (let i = 0; i < 10; i++) expect((await push('push-secret', '127.0.0.2')).status).toBe(429)
    // Had a proxied request been taken for the proxy's own address (127.0.0.1), this client would be locked too.
    for (let i = 0; i < 10; i++) expect((await push('push-secret', '127.0.0.1')).status).toBe(200)
  }, 30_000)
})

describe('SERVE_THREADS configuration', () => {
  it('defaults to 1, takes 1 to 64, and refuses more than 1 without REDIS_URL in one line', () => {
    expect(loadConfig({}).serveThreads).toBe(1)
    expect(loadConfig({ SERVE_THREADS: '64', REDIS_URL: 'redis://127.0.0.1:6379' }).serveThreads).toBe(64)
    expect(() => loadConfig({ SERVE_THREADS: '65', REDIS_URL: 'redis://127.0.0.1:6379' })).toThrow('SERVE_THREADS must be an integer from 1 to 64, got "65"')
    expect(() => loadConfig({ SERVE_THREADS: '2' })).toThrow('SERVE_THREADS above 1 needs REDIS_URL or REDIS_CLUSTER_NODES (the embedded store serves from the main thread only)')
    expect(() => loadConfig({ SERVE_THREAD: '2' })).toThrow('unknown setting SERVE_THREAD (did you mean SERVE_THREADS?)')
  })
})
