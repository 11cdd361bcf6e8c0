// Issue 8, defect 4: one bad İYS push item must not stop the push pipeline. A bad item (null, not an object, wrong
// types, a NUL character) is refused on its own with its reason; later pushes (citizens' rejections) are applied and
// block checks; a NUL in a pushed string is stored and answered 200; a row that keeps throwing is closed as failed
// instead of blocking the queue; and work left pending by a database outage is applied when Postgres comes back,
// without waiting for another push or request to arrive. Real Postgres and Redis; the outage is a TCP proxy cut.

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLogger } from '../src/log.js'
import { Metrics } from '../src/metrics.js'
import { FreshnessMonitor } from '../src/store/freshness.js'
import { createRequest, RequestProcessor } from '../src/store/consent-requests.js'
import { createPool } from '../src/store/pg.js'
import { PushProcessor, storePush } from '../src/store/push-inbox.js'
import type { ValidConsent } from '../src/domain/consent.js'
import { formatIysDate } from '../src/domain/time.js'
import { bearer, tenantKey } from './helpers/auth.js'
import { runCli } from './helpers/cli.js'
import { check, postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestDatabase, type TestServices } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const IYS = 700001
const BRAND = 600001
const AUTH = 'Basic ' + Buffer.from('iys:s3cret').toString('base64')
const log = createLogger('silent')

const pushItem = (recipient: string, status: 'ONAY' | 'RET', consentDate: string, extra: Record<string, unknown> = {}): Record<string, unknown> =>
  ({ iysCode: IYS, brandCode: BRAND, consentDate, creationDate: consentDate, source: 'IYS_KISAMESAJ', recipient, recipientType: 'BIREYSEL', status, type: 'MESAJ', ...extra })

// İYS's specification, kept in the repository (reference/): its examples are what İYS really sends.
const SPEC = JSON.parse(readFileSync(fileURLToPath(new URL('../reference/iys-openapi-3.2.0.json', import.meta.url)), 'utf8'))

/** Every distinct string value of a field of this name anywhere in the specification, in document order. */
function specValues (name: string): string[] {
  const out = new Set<string>()
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) { v.forEach(walk); return }
    if (typeof v !== 'object' || v === null) return
    for (const [k, x] of Object.entries(v)) {
      if (k === name && typeof x === 'string') out.add(x)
      else walk(x)
    }
  }
  walk(SPEC)
  return [...out]
}

interface InboxRow { id: string, done: boolean, outcome: Array<{ index: number, outcome: string, code?: string, reason?: string, note?: string }> | null, failed_reason: string | null, attempts: number }

describe('İYS push pipeline under poison input and outages', () => {
  let services: TestServices
  let db: TestDatabase
  let gw: RunningGateway
  let pool: pg.Pool
  let env: Record<string, string>

  beforeAll(async () => {
    services = await testServices({ redis: true, migrate: true, poolSize: 3 })
    ;({ db, pool, env } = services)
    const load = await runCli(['load'], env) // an (empty) filter version, followed by the change applier from here on
    if (load.code !== 0) throw new Error(`load failed: ${load.stderr}`)
    gw = await startTestGateway({ ...env, IYS_PUSH_USER: 'iys', IYS_PUSH_PASSWORD: 's3cret' })
  }, 120_000)

  afterAll(async () => {
    await gw?.close()
    await services?.close()
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
    // İYS refuses a consent taken more than three business days ago (H467): the ONAY is of this run, the RET later.
    const now = Math.floor(Date.now() / 1000)
    const onay = await postJson(`${gw.url}/sps/${IYS}/brands/${BRAND}/consents`, { recipient, type: 'MESAJ', source: 'HS_WEB', status: 'ONAY', consentDate: formatIysDate(now - 7200), recipientType: 'BIREYSEL' })
    expect(onay.status).toBe(200)
    await until(async () => (await reason(recipient)) === 'CONSENT', 10_000, 'the ONAY to reach the filter')

    const poison = await push('{"list":[null]}')
    expect(poison.status).toBe(200)
    const ret = await push(JSON.stringify({ list: [pushItem(recipient, 'RET', formatIysDate(now - 3600))] }))
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
      [4, 'refused', 'H158'], [5, 'applied', undefined], [6, 'applied', undefined]])
    for (const o of row.outcome!) if (o.outcome === 'refused') expect(o.reason!.length).toBeGreaterThan(5)
    expect((await pool.query('SELECT status FROM consents WHERE recipient = $1', [good])).rows).toEqual([{ status: 'ONAY' }])
    // A transactionId that is not text is İYS's metadata, not the consent: dropped and noted, the consent applied.
    expect(row.outcome![6]!.note).toMatch(/transactionId/)
    expect((await pool.query('SELECT status FROM consents WHERE recipient = $1', ['+905301110005'])).rows).toEqual([{ status: 'ONAY' }])
  })

  it('a pushed consent field with a NUL character is refused with a reason, a NUL in its transactionId only drops the transactionId, and later pushes apply', async () => {
    const body = JSON.stringify({ list: [pushItem('+905301110006\u0000', 'ONAY', '2025-03-01 09:00:00'), pushItem('+905301110007', 'ONAY', '2025-03-01 09:00:00', { transactionId: 'a\u0000b' })] })
    expect(body).toContain('\\u0000') // the escape as İYS would send it
    const res = await push(body)
    expect(res.status).toBe(200)
    await processed(res.json.id)
    const row = await inboxRow(res.json.id)
    expect(row.outcome![0]).toEqual({ index: 0, outcome: 'refused', code: 'INVALID_FIELD', reason: 'A field contains a NUL character.' })
    expect(row.outcome![1]).toMatchObject({ index: 1, outcome: 'applied' })
    expect(row.outcome![1]!.note).toMatch(/transactionId/)
    const stored = await pool.query('SELECT transaction_id FROM consents WHERE recipient = $1', ['+905301110007'])
    expect(stored.rows).toHaveLength(1)
    expect(stored.rows[0].transaction_id).toMatch(/^[0-9a-f]{64}$/) // İYS's was dropped: the gateway's own id stands in
    const later = await push(JSON.stringify({ list: [pushItem('+905301110008', 'ONAY', '2025-03-01 09:00:00')] }))
    expect(later.status).toBe(200)
    await processed(later.json.id)
    expect((await inboxRow(later.json.id)).outcome).toEqual([{ index: 0, outcome: 'applied' }])
  })

  it('İYS\'s own example payloads from its specification are applied whatever their transactionId and creationDate look like, and the RET among them blocks checks', async () => {
    // The payload İYS pushes when a push connection is registered (quoted in the registration operation's text).
    const registration: string = SPEC.paths['/sps/{iysCode}/brands/{brandCode}/push/registration'].post.description
    const testPush = JSON.parse(/İletilecek test verisi[^`]*``([\s\S]*?)``/.exec(registration)![1]!) as { list: Record<string, unknown>[] }
    // İYS's consent record examples: a RET with creationDate "2020-06-10 10:02:14:14", then a later one.
    const records = [SPEC.components.schemas.ConsentRecord['x-examples'].example, ...SPEC.components.schemas.ConsentRecordResponse['x-examples'].consentRecordResponseSample.consents] as Record<string, unknown>[]
    // The other consent record example gives "2020-06-10T10:02:14.143Z" and a consentDate without seconds in ISO form
    // ("2020-02-01T13:35Z"): İYS's own fact, read and applied with a note.
    const isoRecord = SPEC.components.responses['200'].content['application/json'].examples['consent get response example'].value.consents[0] as Record<string, unknown>
    // Every transactionId (one has a dotless ı) and creationDate the specification shows, on İYS's push test item.
    const txs = specValues('transactionId')
    const cds = specValues('creationDate')
    expect(txs.some(t => !/^[A-Za-z0-9_-]+$/.test(t))).toBe(true)
    expect(cds).toContain(isoRecord.creationDate)
    const variants = Array.from({ length: Math.max(txs.length, cds.length) }, (_, i) =>
      ({ ...testPush.list[0], recipient: `pushtest${i}@iys.org.tr`, transactionId: txs[i % txs.length], creationDate: cds[i % cds.length] }))

    const bodies = [testPush, ...records.map(r => ({ list: [r] })), { list: variants }, { list: [isoRecord] }]
    const outcomes: NonNullable<InboxRow['outcome']>[] = []
    for (const body of bodies) { // one at a time: the two RET records are the same key, in date order
      const res = await push(JSON.stringify(body))
      expect(res.status).toBe(200)
      await processed(res.json.id)
      outcomes.push((await inboxRow(res.json.id)).outcome!)
    }
    const iso = outcomes.pop()!
    expect(iso).toEqual([{ index: 0, outcome: 'applied', note: expect.stringMatching(/consentDate/) }])
    for (const list of outcomes) for (const o of list) expect(o).toEqual({ index: o.index, outcome: 'applied' })
    expect(outcomes.flat()).toHaveLength(1 + records.length + variants.length)

    const first = records[0]!
    // The records are of İYS's example tenant (their iysCode and brandCode): checked with a key of that tenant, which
    // every gateway loads within AUTH_POLL_MS (until then: 401).
    const specKey = await tenantKey(db.url, { iysCode: String(first.iysCode), brands: [String(first.brandCode)] })
    const specReason = async (): Promise<string> => {
      const res = await fetch(gw.url + '/v1/check', { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(specKey.apiKey) }, body: JSON.stringify({ brandCode: first.brandCode, type: first.type, recipient: first.recipient }) })
      return res.status === 200 ? ((await res.json()) as { results: { reason: string }[] }).results[0]!.reason : `HTTP ${res.status}`
    }
    await until(async () => (await specReason()) === 'REJECTED', 10_000, 'the pushed RET to block checks')
    const UTC = "to_char(creation_date AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    const pushed = await pool.query<{ tx: string }>("SELECT transaction_id AS tx FROM consent_history WHERE recipient LIKE 'pushtest%@iys.org.tr'")
    expect(pushed.rows.map(r => r.tx).sort()).toEqual([...txs, String(testPush.list[0]!.transactionId)].sort())
    // "2020-06-10 10:02:14:14" is Turkey time (UTC+3) with a fraction; "…T10:02:14.143Z" says UTC itself.
    const recordRows = await pool.query<{ cd: string }>(`SELECT ${UTC} AS cd FROM consent_history WHERE recipient = $1 ORDER BY seq`, [first.recipient])
    // The ISO record is the same key, applied last ("…T10:02:14.143Z" is UTC itself).
    expect(recordRows.rows.map(r => r.cd)).toEqual(['2020-06-10T07:02:14', '2020-06-10T07:02:14', '2020-06-10T10:02:14'])
    const isoIndex = cds.indexOf(isoRecord.creationDate as string)
    const isoRow = await pool.query(`SELECT ${UTC} AS cd FROM consents WHERE recipient = $1`, [`pushtest${isoIndex}@iys.org.tr`])
    expect(isoRow.rows[0].cd).toBe('2020-06-10T10:02:14')
    const isoConsent = await pool.query("SELECT to_char(consent_date AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS d FROM consents WHERE recipient = $1", [isoRecord.recipient])
    expect(isoConsent.rows[0].d).toBe('2020-02-01T13:35:00')
  })

  it('a push item whose creationDate cannot be read is applied with a note and the time it arrived as its creation date', async () => {
    const recipient = '+905301110012'
    const res = await push(JSON.stringify({ list: [pushItem(recipient, 'RET', '2025-03-01 09:00:00', { creationDate: 'dün öğleden sonra', transactionId: 'tx-ok' })] }))
    expect(res.status).toBe(200)
    await processed(res.json.id)
    const row = await inboxRow(res.json.id)
    expect(row.outcome).toHaveLength(1)
    expect(row.outcome![0]).toMatchObject({ index: 0, outcome: 'applied' })
    expect(row.outcome![0]!.note).toMatch(/creationDate/)
    const stored = await pool.query('SELECT status, transaction_id, creation_date > now() - interval \'1 hour\' AS recent FROM consents WHERE recipient = $1', [recipient])
    expect(stored.rows).toEqual([{ status: 'RET', transaction_id: 'tx-ok', recent: true }])
    await until(async () => (await reason(recipient)) === 'REJECTED', 10_000, 'the pushed RET to block checks')
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
    const monitor = new FreshnessMonitor(pool, metrics, log)
    const client = await pool.connect()
    try {
      // Pending rows with a known age, in a transaction the processors never see (rolled back at the end).
      await client.query('BEGIN')
      await client.query("INSERT INTO iys_push_inbox (payload, received_at) VALUES ('{\"list\":[]}', now() - interval '90 seconds'), ('{\"list\":[]}', now())")
      await client.query("INSERT INTO consent_requests (request_id, iys_code, brand_code, items, created_at) VALUES ('r1', 1, 1, '[]', now() - interval '40 seconds')")
      const inTx = new FreshnessMonitor({ query: client.query.bind(client) } as unknown as pg.Pool, metrics, log)
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
