// End to end as a user runs it: generate → import → load → serve → check over HTTP, against the machine's real
// Postgres and Redis (own database, own key prefix).

import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from './helpers/cli.js'
import { check, postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestRedis, type TestServicesWithRedis } from './helpers/services.js'
import { layout } from '../src/filter/layout.js'

describe('generate → import → load → serve → check', () => {
  let services: TestServicesWithRedis
  let redis: TestRedis
  let env: Record<string, string>
  let gateway: RunningGateway
  let pool: pg.Pool
  let dir: string

  beforeAll(async () => {
    // Not migrated: the first test runs `migrate` itself.
    services = await testServices({ redis: true, dirPrefix: 'iys-int-' })
    ;({ redis, env, pool, dir } = services)
  })

  afterAll(async () => {
    await gateway?.close()
    await services?.close()
  })

  it('migrate creates the schema and is safe to run twice', async () => {
    const first = await runCli(['migrate'], env)
    expect(first.stderr).toBe('')
    expect(first.code).toBe(0)
    const second = await runCli(['migrate'], env)
    expect(second.code).toBe(0)
    expect(second.stdout).toContain('0 migrations applied')
    const { rows } = await pool.query("SELECT count(*)::int AS n FROM information_schema.tables WHERE table_name IN ('consents', 'consent_history')")
    expect(rows[0].n).toBe(2)
  })

  it('generate writes a CSV that import loads completely, the latest change per key being the current state', async () => {
    const file = join(dir, 'consents.csv')
    const gen = await runCli(['generate', '--rows', '20000', '--brands', '3', '--seed', '11', '--out', file], env)
    expect(gen.code).toBe(0)
    const imp = await runCli(['import', file], env)
    expect(imp.code).toBe(0)
    const r = JSON.parse(imp.stdout.trim().split('\n').pop()!)
    expect(r.rows).toBe(20000)
    expect(r.rejected).toBe(0)
    // İYS's rules (the default for files): every row of this synthetic history is a change in the ledger, and the
    // current state holds one row per key, the one with the highest seq.
    const history = await pool.query('SELECT count(*)::int AS n, count(DISTINCT seq)::int AS seqs FROM consent_history')
    expect(history.rows[0]).toEqual({ n: r.applied, seqs: r.applied })
    expect(r.applied).toBe(20000)
    const { rows } = await pool.query(`SELECT count(*)::int AS n,
      count(*) FILTER (WHERE seq = (SELECT max(h.seq) FROM consent_history h WHERE h.brand_code = c.brand_code AND h.type = c.type
                                      AND h.recipient_type = c.recipient_type AND h.recipient = c.recipient))::int AS latest
      FROM consents c`)
    expect(rows[0].n).toBeLessThan(20000) // the generator repeats some keys
    expect(rows[0].latest).toBe(rows[0].n)
  })

  it('load builds a filter version in Redis and flips the pointer to it', async () => {
    const res = await runCli(['load'], env)
    expect(res.code).toBe(0)
    const r = JSON.parse(res.stdout.trim().split('\n').pop()!)
    const { rows } = await pool.query('SELECT count(*)::int AS n FROM consents')
    expect(r.rows).toBe(rows[0].n)
    expect(await redis.client.get(layout(redis.prefix).current)).toBe(String(r.version))
    expect(await redis.client.exists(layout(redis.prefix).bloomSegment(r.version, 127))).toBe(1)
    gateway = await startTestGateway(env)
    expect(gateway.gw.version()).toBe(r.version)
  })

  it('answers from Redis what Postgres holds: consent, rejection, no record, TACIR, informational, invalid', async () => {
    const pick = async (where: string): Promise<any> => (await pool.query(
      `SELECT brand_code::text AS brand, type, recipient_type AS rt, recipient, status, source,
              to_char(consent_date AT TIME ZONE INTERVAL '+03:00', 'YYYY-MM-DD HH24:MI:SS') AS date
       FROM consents WHERE ${where} ORDER BY seq LIMIT 1`)).rows[0]
    const onay = await pick("status = 'ONAY' AND recipient_type = 'BIREYSEL' AND type = 'MESAJ'")
    const ret = await pick("status = 'RET' AND type = 'EPOSTA'")

    const [a] = await check(gateway.url, { brandCode: Number(onay.brand), type: 'MESAJ', recipient: onay.recipient })
    expect(a).toEqual({ recipient: onay.recipient, normalized: onay.recipient, allowed: true, reason: 'CONSENT', consent: { status: 'ONAY', source: onay.source, consentDate: onay.date } })

    const shouted = '  ' + ret.recipient.toUpperCase() + ' '
    const [b] = await check(gateway.url, { brandCode: ret.brand, type: 'EPOSTA', recipientType: ret.rt, recipients: [shouted] })
    expect(b).toMatchObject({ normalized: ret.recipient, allowed: false, reason: 'REJECTED', consent: { status: 'RET', source: ret.source, consentDate: ret.date } })

    // A number nobody recorded: blocked for BIREYSEL, allowed for TACIR (opt-out), allowed when informational.
    const nobody = '+905009998877'
    const exists = await pool.query('SELECT 1 FROM consents WHERE recipient = $1', [nobody])
    expect(exists.rowCount).toBe(0)
    const [c] = await check(gateway.url, { brandCode: onay.brand, type: 'MESAJ', recipient: '0500 999 88 77' })
    expect(c).toMatchObject({ normalized: nobody, allowed: false, reason: 'NO_CONSENT' })
    const [d] = await check(gateway.url, { brandCode: onay.brand, type: 'MESAJ', recipientType: 'TACIR', recipient: nobody })
    expect(d).toMatchObject({ allowed: true, reason: 'TACIR_NO_RECORD' })
    const [e] = await check(gateway.url, { brandCode: onay.brand, type: 'MESAJ', commercial: false, recipient: nobody })
    expect(e).toMatchObject({ allowed: true, reason: 'INFORMATIONAL' })
    const [f] = await check(gateway.url, { brandCode: onay.brand, type: 'MESAJ', commercial: false, recipient: '12ab' })
    expect(f).toMatchObject({ allowed: false, reason: 'INVALID_RECIPIENT', error: { code: 'H121' } })
  })

  it('keeps request order in a batch and answers every item', async () => {
    const { rows } = await pool.query("SELECT brand_code::text AS brand, recipient, status FROM consents WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND brand_code = (SELECT min(brand_code) FROM consents) ORDER BY seq LIMIT 300")
    const inputs: unknown[] = []
    for (const r of rows) inputs.push(r.recipient, 'not-a-number')
    const results = await check(gateway.url, { brandCode: rows[0].brand, type: 'MESAJ', recipients: inputs })
    expect(results).toHaveLength(inputs.length)
    results.forEach((r, i) => {
      expect(r.recipient).toBe(inputs[i])
      if (i % 2 === 1) expect(r.reason).toBe('INVALID_RECIPIENT')
      else expect(r.reason).toBe(rows[i / 2].status === 'ONAY' ? 'CONSENT' : 'REJECTED')
    })
  })

  it('exposes health, readiness and metrics without recipients in them', async () => {
    expect((await fetch(gateway.url + '/healthz')).status).toBe(200)
    const ready = await fetch(gateway.url + '/readyz')
    expect(ready.status).toBe(200)
    expect(await ready.json()).toMatchObject({ ready: true, mode: 'redis', redis: 'ok', uws: 'native' })
    const text = await (await fetch(gateway.url + '/metrics')).text()
    expect(text).toMatch(/iys_http_requests_total\{route="check",status="200"\} \d+/)
    expect(text).toMatch(/iys_decisions_total\{reason="CONSENT",type="MESAJ"\} [1-9]/)
    expect(text).toMatch(/iys_http_request_duration_seconds_bucket\{le="0.001",route="check"\}/)
    // Answered from the local replica (REPLICA, on by default), which holds every key of the version; the bloom
    // filter's counters belong to the Redis path (replica-serving.test.ts).
    expect(text).toMatch(/^iys_replica_serving 1$/m)
    expect(text).toMatch(/^iys_replica_keys [1-9]\d*$/m)
    expect(text).not.toMatch(/\+90\d{10}|@/)
    const { status } = await postJson(gateway.url + '/v1/check', { brandCode: 1, type: 'FAX', recipient: 'x' })
    expect(status).toBe(422)
  })
})
