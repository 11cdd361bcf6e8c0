// Issue 8, defect 4: one bad İYS push item must not stop the push pipeline. A bad item (null, not an object, wrong
// types, a NUL character) is refused on its own with its reason; later pushes (citizens' rejections) are applied and
// block checks; a NUL in a pushed string is stored and answered 200; a row that keeps throwing is closed as failed
// instead of blocking the queue; and work left pending by a database outage is applied when Postgres comes back,
// without waiting for another push or request to arrive. Real Postgres and Redis; the outage is a TCP proxy cut.

import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLogger } from '../src/log.js'
import { Metrics } from '../src/metrics.js'
import { BacklogMonitor } from '../src/store/backlog.js'
import { createRequest, RequestProcessor } from '../src/store/consent-requests.js'
import { migrate } from '../src/store/migrate.js'
import { createPool } from '../src/store/pg.js'
import { PushProcessor, storePush } from '../src/store/push-inbox.js'
import type { ValidConsent } from '../src/domain/consent.js'
import { runCli } from './helpers/cli.js'
import { check, postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { createTestDatabase, createTestRedis, type TestDatabase, type TestRedis } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const IYS = 700001
const BRAND = 600001
const AUTH = 'Basic ' + Buffer.from('iys:s3cret').toString('base64')
const log = createLogger('silent')

const pushItem = (recipient: string, status: 'ONAY' | 'RET', consentDate: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ iysCode: IYS, brandCode: BRAND, consentDate, creationDate: consentDate, source: 'IYS_KISAMESAJ', recipient, recipientType: 'BIREYSEL', status, type: 'MESAJ', ...extra })

interface InboxRow { id: string, done: boolean, outcome: Array<{ index: number, outcome: string, code?: string, reason?: string }> | null, failed_reason: string | null, attempts: number }

describe('İYS push pipeline under poison input and outages', () => {
  let db: TestDatabase
  let redis: TestRedis
  let gw: RunningGateway
  let pool: pg.Pool
  let env: Record<string, string>

  beforeAll(async () => {
    db = await createTestDatabase()
    redis = await createTestRedis()
    env = { DATABASE_URL: db.url, REDIS_URL: redis.url, REDIS_PREFIX: redis.prefix }
    pool = new pg.Pool({ connectionString: db.url, max: 3 })
    await migrate(pool)
    const load = await runCli(['load'], env) // an (empty) filter version, followed by the change applier from here on
    if (load.code !== 0) throw new Error(`load failed: ${load.stderr}`)
    gw = await startTestGateway({ ...env, IYS_PUSH_USER: 'iys', IYS_PUSH_PASSWORD: 's3cret' })
  }, 120_000)

  afterAll(async () => {
    await gw?.close()
    await pool?.end()
    await redis?.cleanup()
    await db?.drop()
  })

  const push = async (body: string): Promise<{ status: number, json: any }> => {
    const res = await fetch(gw.url + '/iys/push', { method: 'POST', headers: { 'content-type': 'application/json', authorization: AUTH }, body })
    const text = await res.text()
    return { status: res.status, json: text === '' ? null : JSON.parse(text) }
  }
  // Read as one JSON object, so that the query itself works on any schema version (the test must fail on the
  // behaviour, not on a column that an older schema lacks).
  const inboxRow = async (id: number): Promise<InboxRow> => {
    const r = (await pool.query<{ r: Record<string, any> }>('SELECT to_jsonb(i) AS r FROM iys_push_inbox i WHERE id = $1', [id])).rows[0]!.r
    return { id: String(r.id), done: r.processed_at !== null, outcome: r.outcome ?? null, failed_reason: r.failed_reason ?? null, attempts: r.attempts }
  }
  const processed = (id: number): Promise<void> => until(async () => (await inboxRow(id)).done, 15_000, `push inbox row ${id} to be processed`)
  const reason = async (recipient: string): Promise<string> => (await check(gw.url, { brandCode: BRAND, type: 'MESAJ', recipient }))[0]!.reason

  it('a push of {"list":[null]} is refused item by item and a later RET push for a consented recipient is applied and blocks checks', async () => {
    const recipient = '+905301110001'
    const onay = await postJson(`${gw.url}/sps/${IYS}/brands/${BRAND}/consents`, { recipient, type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: '2024-01-01 10:00:00', recipientType: 'BIREYSEL' })
    expect(onay.status).toBe(200)
    await until(async () => (await reason(recipient)) === 'CONSENT', 10_000, 'the ONAY to reach the filter')

    const poison = await push('{"list":[null]}')
    expect(poison.status).toBe(200)
    const ret = await push(JSON.stringify({ list: [pushItem(recipient, 'RET', '2025-03-01 09:00:00')] }))
    expect(ret.status).toBe(200)

    await processed(ret.json.id)
    await until(async () => (await reason(recipient)) === 'REJECTED', 10_000, 'the pushed RET to block checks')
    const stored = await pool.query('SELECT status, seq FROM consents WHERE recipient = $1', [recipient])
    expect(stored.rows[0].status).toBe('RET')
    const bad = await inboxRow(poison.json.id)
    expect(bad.done).toBe(true)
    expect(bad.outcome).toEqual([{ index: 0, outcome: 'refused', code: 'INVALID_FIELD', reason: 'A consent must be a JSON object.' }])
    expect((await inboxRow(ret.json.id)).outcome).toEqual([{ index: 0, outcome: 'applied' }])
  })

  it('bad items in a list are refused with their reasons and the good items beside them are applied', async () => {
    const good = '+905301110002'
    const list = [7, 'x', [], { ...pushItem('+905301110003', 'ONAY', '2025-03-01 09:00:00'), status: 5 }, { ...pushItem('+905301110004', 'ONAY', 'yesterday') },
      pushItem(good, 'ONAY', '2025-03-01 09:00:00'), { ...pushItem('+905301110005', 'ONAY', '2025-03-01 09:00:00'), transactionId: { a: 1 } }]
    const res = await push(JSON.stringify({ list }))
    expect(res.status).toBe(200)
    await processed(res.json.id)
    const row = await inboxRow(res.json.id)
    expect(row.outcome!.map(o => [o.index, o.outcome, o.code])).toEqual([
      [0, 'refused', 'INVALID_FIELD'], [1, 'refused', 'INVALID_FIELD'], [2, 'refused', 'INVALID_FIELD'], [3, 'refused', 'H115'],
      [4, 'refused', 'H158'], [5, 'applied', undefined], [6, 'refused', 'INVALID_FIELD']])
    for (const o of row.outcome!) if (o.outcome === 'refused') expect(o.reason!.length).toBeGreaterThan(5)
    expect((await pool.query('SELECT status FROM consents WHERE recipient = $1', [good])).rows).toEqual([{ status: 'ONAY' }])
  })

  it('a pushed string with a NUL character is answered 200 and its item is refused with a reason, and later pushes apply', async () => {
    const body = JSON.stringify({ list: [pushItem('+905301110006\u0000', 'ONAY', '2025-03-01 09:00:00'), pushItem('+905301110007', 'ONAY', '2025-03-01 09:00:00', { transactionId: 'a\u0000b' })] })
    expect(body).toContain('\\u0000') // the escape as İYS would send it
    const res = await push(body)
    expect(res.status).toBe(200)
    await processed(res.json.id)
    const row = await inboxRow(res.json.id)
    expect(row.outcome).toEqual([
      { index: 0, outcome: 'refused', code: 'INVALID_FIELD', reason: 'A field contains a NUL character.' },
      { index: 1, outcome: 'refused', code: 'INVALID_FIELD', reason: 'A field contains a NUL character.' }])
    const later = await push(JSON.stringify({ list: [pushItem('+905301110008', 'ONAY', '2025-03-01 09:00:00')] }))
    expect(later.status).toBe(200)
    await processed(later.json.id)
    expect((await inboxRow(later.json.id)).outcome).toEqual([{ index: 0, outcome: 'applied' }])
  })

  it('an inbox row that keeps throwing is closed as failed with its reason and the rows behind it are applied', async () => {
    // Not something the receiver can store (it stores JSON it parsed): a row damaged by hand or by an older version.
    const { rows } = await pool.query<{ id: string }>('INSERT INTO iys_push_inbox (payload) VALUES ($1) RETURNING id', ['{"list":[{"broken"'])
    const broken = Number(rows[0]!.id)
    const after = await push(JSON.stringify({ list: [pushItem('+905301110009', 'ONAY', '2025-03-01 09:00:00')] }))
    expect(after.status).toBe(200)
    await processed(after.json.id)
    expect((await inboxRow(after.json.id)).outcome).toEqual([{ index: 0, outcome: 'applied' }])
    const row = await inboxRow(broken)
    expect(row.done).toBe(true)
    expect(row.attempts).toBe(5)
    expect(row.failed_reason).toMatch(/^SyntaxError: /)
    expect(row.outcome).toBeNull()
    const metrics = await (await fetch(gw.url + '/metrics')).text()
    expect(metrics).toMatch(/^iys_queue_failed_total\{queue="push"\} 1$/m)
  })

  it('a push and a consent request pending while the Postgres link is cut are applied after it comes back, with nothing new arriving', async () => {
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: Number(new URL(db.url).port || 5432) })
    const viaProxy = new URL(db.url)
    viaProxy.host = `127.0.0.1:${proxy.port}`
    const proxied = createPool(viaProxy.href, 2, { connectTimeoutMs: 1000 })
    const pushes = new PushProcessor(proxied, log)
    const requests = new RequestProcessor(proxied, log)
    try {
      await proxy.cut()
      // Stored directly (the receiver's own pool would be fine), then kicked once while processing cannot reach Postgres.
      const id = await storePush(pool, { list: [pushItem('+905301110010', 'ONAY', '2025-03-01 09:00:00')] })
      const consent: ValidConsent = { iysCode: String(IYS), brandCode: String(BRAND), recipient: '+905301110011', recipientType: 'BIREYSEL', type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: Date.parse('2025-03-01T06:00:00Z') / 1000 }
      const req = await createRequest(pool, String(IYS), String(BRAND), [consent], null)
      pushes.drainer.kick()
      requests.drainer.kick()
      await pushes.drainer.idle()
      await requests.drainer.idle()
      expect((await inboxRow(id)).done).toBe(false)
      await proxy.restore()
      await until(async () => (await inboxRow(id)).done, 40_000, 'the pending push to be applied after the link came back')
      expect((await inboxRow(id)).outcome).toEqual([{ index: 0, outcome: 'applied' }])
      expect((await inboxRow(id)).attempts).toBe(0) // an outage is not the row's fault
      await until(async () => (await pool.query('SELECT done_at IS NOT NULL AS done FROM consent_requests WHERE request_id = $1', [req.requestId])).rows[0].done, 40_000, 'the pending consent request to be applied')
      const r = await pool.query('SELECT results FROM consent_requests WHERE request_id = $1', [req.requestId])
      expect(r.rows[0].results[0].status).toBe('success')
    } finally {
      await (pushes.drainer as { stop?: () => Promise<void> }).stop?.()
      await (requests.drainer as { stop?: () => Promise<void> }).stop?.()
      await proxy.restore()
      await proxied.end()
      await proxy.cut()
    }
  })

  it('the backlog metrics count pending pushes and consent requests and the age of the oldest', async () => {
    const metrics = new Metrics()
    const monitor = new BacklogMonitor(pool, metrics, log)
    const client = await pool.connect()
    try {
      // Pending rows with a known age, in a transaction the processors never see (rolled back at the end).
      await client.query('BEGIN')
      await client.query("INSERT INTO iys_push_inbox (payload, received_at) VALUES ('{\"list\":[]}', now() - interval '90 seconds'), ('{\"list\":[]}', now())")
      await client.query("INSERT INTO consent_requests (request_id, iys_code, brand_code, items, created_at) VALUES ('r1', 1, 1, '[]', now() - interval '40 seconds')")
      const inTx = new BacklogMonitor({ query: client.query.bind(client) } as unknown as pg.Pool, metrics, log)
      await inTx.poll()
      const text = await metrics.registry.metrics()
      expect(text).toMatch(/^iys_push_backlog 2$/m)
      expect(Number(/^iys_push_backlog_oldest_seconds (\S+)$/m.exec(text)![1])).toBeGreaterThanOrEqual(90)
      expect(text).toMatch(/^iys_consent_requests_backlog 1$/m)
      expect(Number(/^iys_consent_requests_backlog_oldest_seconds (\S+)$/m.exec(text)![1])).toBeGreaterThanOrEqual(40)
    } finally {
      await client.query('ROLLBACK')
      client.release()
    }
    await monitor.poll()
    const text = await metrics.registry.metrics()
    expect(text).toMatch(/^iys_push_backlog 0$/m)
    expect(text).toMatch(/^iys_push_backlog_oldest_seconds 0$/m)
  })
})
