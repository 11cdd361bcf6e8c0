// The decision journal: a gateway killed with SIGKILL in the middle of traffic loses no decision whose answer left
// the process, and no message that reached the carrier is without its decision record. The gateway runs as its own
// process (`iys-gateway serve` over dist/), is killed while check and message requests are in flight, and is started
// again on the same spool folder; then Postgres must hold every answered decision exactly once.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { segmentToCopy } from '../src/audit/copy-text.js'
import { esc } from '../src/formats/copy-text.js'
import { Journal, judgeRun, STALE_MS, WIDE_STALE_MS, type RunIdentity } from '../src/audit/journal.js'
import { startFakeCarrier, type FakeCarrier } from '../src/dev/fake-carrier.js'
import { BIN, cliEnv, runSteps } from './helpers/cli.js'
import { tenantKey } from './helpers/auth.js'
import { postJson, registerKey } from './helpers/gateway.js'
import { freePort, until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

interface Serve { child: ChildProcess, url: string }

/** The test tenant's key (made in beforeAll, in the database the served gateways load their keys from). */
let apiKey = ''

async function serve (env: Record<string, string>): Promise<Serve> {
  const port = await freePort()
  const child = spawn(process.execPath, [BIN, 'serve'], { env: cliEnv({ ...env, PORT: String(port), FILTER_POLL_MS: '50' }), stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const url = `http://127.0.0.1:${port}`
  await until(async () => {
    if (child.exitCode !== null) throw new Error(`serve exited with ${child.exitCode}: ${stderr}`)
    try { return (await fetch(url + '/readyz')).status === 200 } catch { return false }
  }, 30_000, 'the gateway to be ready')
  registerKey(url, apiKey) // what postJson authenticates with
  return { child, url }
}

const exited = (child: ChildProcess): Promise<void> => child.exitCode !== null || child.signalCode !== null
  ? Promise.resolve()
  : new Promise(resolve => child.once('exit', () => resolve()))

describe('decision journal', () => {
  let services: TestServices
  let carrier: FakeCarrier
  let pool: pg.Pool
  let env: Record<string, string>
  let gw: Serve | null = null

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-journal-' })
    const { env: direct, dir } = services
    pool = services.pool
    carrier = await startFakeCarrier({ port: 0 })
    await runSteps([['migrate'], ['load']], direct)
    apiKey = (await tenantKey(direct.DATABASE_URL!)).apiKey
    env = { ...direct, UPSTREAM_MESAJ_URL: carrier.url, DECISION_SPOOL_DIR: join(dir, 'spool'), SCRUB_DIR: join(dir, 'scrub') }
  }, 120_000)

  afterAll(async () => {
    if (gw !== null) { gw.child.kill('SIGTERM'); await exited(gw.child) }
    await carrier?.close()
    await services?.close()
  })

  it.each([['50', 1], ['0', 2]])('SIGKILL mid-traffic loses no answered decision and no forwarded message: after a restart each is in Postgres exactly once (DECISION_FSYNC_MS=%s)', async (fsyncMs, run) => {
    carrier.reset()
    const runEnv = { ...env, DECISION_FSYNC_MS: fsyncMs }
    gw = await serve(runEnv)
    const url = gw.url
    const answeredChecks: string[] = []
    const answeredMessages = new Map<string, boolean>() // messageId → reported forwarded
    let n = 0
    let stop = false
    const checker = async (): Promise<void> => {
      while (!stop) {
        const recipients = Array.from({ length: 20 }, () => '+9054' + run + String(++n).padStart(7, '0'))
        try {
          const { status, json } = await postJson(url + '/v1/check', { brandCode: 600001, type: 'MESAJ', recipients })
          if (status === 200) for (const r of json.results) answeredChecks.push(r.recipient)
        } catch { return } // the process is gone
      }
    }
    const sender = async (): Promise<void> => {
      while (!stop) {
        // Informational messages are forwarded without a consent; every third one is commercial and blocked.
        const messages = Array.from({ length: 10 }, () => { const i = ++n; return { messageId: `k-${run}-${i}`, recipient: '+9055' + String(i).padStart(8, '0'), sender: 'ACME', text: 'Siparişiniz yolda' } })
        try {
          const { status, json } = await postJson(url + '/v1/messages', { iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: n % 3 === 0, messages })
          if (status === 200) for (const r of json.results) answeredMessages.set(r.messageId, r.forwarded)
        } catch { return }
      }
    }
    const loops = [checker(), checker(), sender(), sender()]
    await until(() => answeredChecks.length >= 2000 && answeredMessages.size >= 300, 60_000, 'traffic to be answered')
    gw.child.kill('SIGKILL')
    await exited(gw.child)
    stop = true
    await Promise.all(loops)
    const atCarrier = carrier.stats().accepted.map(a => a.messageId)
    expect(atCarrier.length).toBeGreaterThan(0)

    gw = await serve(runEnv) // ships what the killed run left in the journal
    const rows = async (sql: string, ids: string[]): Promise<number> => (await pool.query<{ n: number }>(sql, [ids])).rows[0]!.n
    await until(async () => (await rows('SELECT count(DISTINCT recipient)::int AS n FROM decisions WHERE recipient = ANY($1)', answeredChecks)) === answeredChecks.length,
      30_000, 'every answered check decision to be in Postgres')
    const ids = [...answeredMessages.keys()]
    await until(async () => (await rows('SELECT count(DISTINCT message_id)::int AS n FROM decisions WHERE message_id = ANY($1)', ids)) === ids.length,
      30_000, 'every answered message decision to be in Postgres')
    expect(await rows('SELECT count(DISTINCT message_id)::int AS n FROM decisions WHERE message_id = ANY($1)', atCarrier)).toBe(atCarrier.length)

    // Exactly once: no decision twice, whether it was answered or not.
    const dup = await pool.query("SELECT coalesce(message_id, recipient) AS k FROM decisions GROUP BY 1 HAVING count(*) > 1")
    expect(dup.rows).toEqual([])
    // One row per message, with its carrier outcome: what was reported forwarded is 'accepted'; a message the
    // carrier got whose answer never left the process is 'accepted' or 'interrupted' (the kill came before its
    // outcome was journalled), never missing.
    const { rows: msgs } = await pool.query<{ id: string, status: string | null, allowed: boolean }>(
      "SELECT message_id AS id, upstream_status AS status, allowed FROM decisions WHERE source = 'messages' AND message_id LIKE $1", [`k-${run}-%`])
    const byId = new Map(msgs.map(m => [m.id, m]))
    for (const [id, forwarded] of answeredMessages) if (forwarded) expect(byId.get(id)?.status, id).toBe('accepted')
    for (const id of atCarrier) expect(['accepted', 'interrupted'], id).toContain(byId.get(id)!.status)
    for (const m of msgs) if (!m.allowed) expect(m.status).toBeNull()
    gw.child.kill('SIGTERM')
    await exited(gw.child)
    gw = null
  }, 180_000)
})

describe('journal segment format', () => {
  const T = '2025-01-01T10:00:00.000Z\tmessages\t700001\t600001\tMESAJ\tBIREYSEL\t+905550000001\t+905550000001\tfalse\ttrue\tINFORMATIONAL\t\\N\t'

  it('merges each message decision with its carrier outcome, and marks one without an outcome interrupted', () => {
    const raw = `M7.0\t${T}a\nM7.1\t${T}b\nO7.0\taccepted\tfc-1\n`
    expect(segmentToCopy(raw)).toEqual({ text: `${T}a\taccepted\tfc-1\n${T}b\tinterrupted\t\\N\n`, rows: 2 })
  })

  it('drops a torn last line: the crash came before its write completed, so its answer never left', () => {
    const check = T.replace('messages', 'check') + '\\N\t\\N\t\\N\n'
    expect(segmentToCopy(check + check.slice(0, 40))).toEqual({ text: check, rows: 1 })
    expect(segmentToCopy(check + 'M8.0\t' + T.slice(0, 30))).toEqual({ text: check, rows: 1 })
  })

  it('escapes what COPY gives a meaning to and replaces what Postgres text cannot hold', () => {
    expect(esc('+905321234567')).toBe('+905321234567')
    expect(esc('a\\b\tc\nd\re')).toBe('a\\\\b\\tc\\nd\\re')
    expect(esc('x\u0000y')).toBe('x\uFFFDy')
    expect(esc('\uD800x\uDC00')).toBe('\uFFFDx\uFFFD')
    expect(esc('ok \uD83D\uDE00')).toBe('ok \uD83D\uDE00') // a valid pair (an emoji) stays
  })
})

describe('journal liveness: whose segments may be shipped', () => {
  const self: RunIdentity = { pid: 1, host: 'gw-a', boot: 'kernel-1', pidNs: 'pid:[100]' }
  const exists = (pids: number[]) => (pid: number): boolean => pids.includes(pid)

  it('a run of this kernel and pid namespace is dead when its pid is gone or is our own, and alive while its pid exists', () => {
    expect(judgeRun({ ...self, pid: 7 }, 0, self, exists([]))).toBe('dead')
    expect(judgeRun({ ...self }, 0, self, exists([1]))).toBe('dead') // our pid under another boot id: a previous life
    expect(judgeRun({ ...self, pid: 7 }, STALE_MS * 2, self, exists([7]))).toBe('alive') // its pid may be reused...
    expect(judgeRun({ ...self, pid: 7 }, WIDE_STALE_MS + 1, self, exists([7]))).toBe('dead') // ...only a long silence says so
  })

  it('a run in another pid namespace of this host (a container, maybe pid 1 like us) is judged by its heartbeat only, its newest segment only after the wide margin', () => {
    const sibling = { ...self, pidNs: 'pid:[200]' }
    expect(judgeRun(sibling, 1_000, self, exists([]))).toBe('alive')
    expect(judgeRun(sibling, STALE_MS + 1, self, exists([]))).toBe('stale')
    expect(judgeRun(sibling, WIDE_STALE_MS + 1, self, exists([]))).toBe('dead')
    // A heartbeat without the namespace (an older version) proves nothing by its pid either.
    expect(judgeRun({ pid: 1, host: 'gw-a' }, 1_000, self, exists([]))).toBe('alive')
  })

  it('a run on another host is judged by its heartbeat only, whatever its pid', () => {
    const remote = { pid: 7, host: 'gw-b', boot: 'kernel-2', pidNs: 'pid:[100]' }
    expect(judgeRun(remote, 1_000, self, exists([]))).toBe('alive')
    expect(judgeRun(remote, STALE_MS + 1, self, exists([]))).toBe('stale')
    expect(judgeRun(remote, WIDE_STALE_MS + 1, self, exists([]))).toBe('dead')
    // The same host name on another kernel (boot id) is another machine, whose clock may differ.
    expect(judgeRun({ ...self, boot: 'kernel-2' }, 1_000, self, exists([]))).toBe('alive')
  })

  it('ships nothing of a live run in another pid namespace that has our pid, and only the older segments of one whose heartbeat went silent', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-live-'))
    const journal = new Journal({ dir, fsyncMs: 50, fullLines: 1000, onFull: () => {}, onSyncError: () => {} })
    try {
      await journal.start()
      const me = journal.identity
      const line = '2025-01-01T10:00:00.000Z\tcheck\n'
      for (const boot of ['0sibling', '0silent']) {
        writeFileSync(join(dir, `${boot}.live`), JSON.stringify({ ...me, pidNs: 'pid:[1]' }))
        for (const n of ['00000001', '00000002']) writeFileSync(join(dir, `${boot}-${n}.jnl`), line)
      }
      expect(me.host).toBe(hostname())
      expect(me.pid).toBe(process.pid)
      const silentSince = (Date.now() - STALE_MS * 2) / 1000
      utimesSync(join(dir, '0silent.live'), silentSince, silentSince)
      expect(await journal.shippable()).toEqual(['0silent-00000001.jnl'])
    } finally {
      await journal.close()
      await journal.release()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
