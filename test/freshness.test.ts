// The consent pipeline's freshness as the metrics show it (store/freshness.ts): the change applier's lag behind the
// ledger, sync-iys's last pulls (recorded by sync-iys itself in Postgres, exported by every gateway), the decision
// spool on disk, and Postgres going away — for which /readyz names Postgres and the routes that need it answer 503.

import { mkdirSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spoolFigures } from '../src/audit/journal.js'
import { IysApiError, type IysApi } from '../src/iys/client.js'
import { createLogger } from '../src/log.js'
import { Metrics } from '../src/metrics.js'
import { FreshnessMonitor } from '../src/store/freshness.js'
import { createPool } from '../src/store/pg.js'
import { runSyncIys } from '../loaders/sync-iys.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { commitRet } from './helpers/ledger.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const log = createLogger('silent')

/** The value of an unlabelled metric (or of `name{labels}`) in Prometheus text. */
function value (text: string, series: string): number {
  const line = text.split('\n').find(l => l.startsWith(series + ' '))
  if (line === undefined) throw new Error(`${series} is not in the metrics`)
  return Number(line.slice(series.length + 1))
}

let services: TestServices
beforeAll(async () => { services = await testServices({ migrate: true, dirPrefix: 'iys-fresh-' }) })
afterAll(async () => { await services?.close() })

describe('the freshness monitor', () => {
  it('exports the ledger head, the applied watermark and the age of the oldest change not yet applied', async () => {
    const { pool } = services
    const first = await commitRet(pool, '+905320000001')
    const second = await commitRet(pool, '+905320000002')
    const third = await commitRet(pool, '+905320000003')
    await pool.query("UPDATE consent_history SET received_at = now() - interval '90 seconds' WHERE seq = $1", [second])
    let applied = first
    const metrics = new Metrics()
    const monitor = new FreshnessMonitor(pool, metrics, log, { appliedSeq: () => applied })
    await monitor.poll()
    let text = await metrics.registry.metrics()
    expect(value(text, 'iys_ledger_seq')).toBe(third)
    expect(value(text, 'iys_applied_seq')).toBe(first)
    expect(value(text, 'iys_applier_lag_seconds')).toBeGreaterThanOrEqual(90) // the oldest unapplied is `second`
    expect(value(text, 'iys_applier_lag_seconds')).toBeLessThan(120)
    applied = third
    await monitor.poll()
    text = await metrics.registry.metrics()
    expect(value(text, 'iys_applied_seq')).toBe(third)
    expect(value(text, 'iys_applier_lag_seconds')).toBe(0)
  })

  it('exports what sync-iys recorded: brands, failing brands, and the stalest success and attempt', async () => {
    const { pool } = services
    const nothingNew: IysApi = { changes: async () => null } as unknown as IysApi
    const refusing: IysApi = { changes: async () => { throw new IysApiError('H351', 401, 'refused', { transient: false }) } } as unknown as IysApi
    const base = { pool, iysCode: '700001', once: true, log, pollMs: 10 }
    await runSyncIys({ ...base, client: nothingNew, brandCodes: ['600001'] })
    await expect(runSyncIys({ ...base, client: refusing, brandCodes: ['600002'] })).rejects.toThrow(IysApiError)
    const { rows } = await pool.query('SELECT brand_code::text AS b, succeeded_at IS NOT NULL AS ok, failed_at IS NOT NULL AS failed, error_code FROM iys_sync_cursors ORDER BY brand_code')
    expect(rows).toEqual([{ b: '600001', ok: true, failed: false, error_code: null }, { b: '600002', ok: false, failed: true, error_code: 'H351' }])

    const metrics = new Metrics()
    const monitor = new FreshnessMonitor(pool, metrics, log)
    // The brand that pulled to the end did so two hours ago; the failing one was first tried three hours ago.
    await pool.query("UPDATE iys_sync_cursors SET succeeded_at = now() - interval '2 hours', attempted_at = now() - interval '2 hours' WHERE brand_code = 600001")
    await pool.query("UPDATE iys_sync_cursors SET created_at = now() - interval '3 hours' WHERE brand_code = 600002")
    await monitor.poll()
    const text = await metrics.registry.metrics()
    expect(value(text, 'iys_sync_brands')).toBe(2)
    expect(value(text, 'iys_sync_failing_brands')).toBe(1)
    expect(value(text, 'iys_sync_success_age_seconds')).toBeGreaterThanOrEqual(3 * 3600)
    expect(value(text, 'iys_sync_attempt_age_seconds')).toBeGreaterThanOrEqual(2 * 3600)

    // A later successful pull of the failing brand clears it.
    await runSyncIys({ ...base, client: nothingNew, brandCodes: ['600002'] })
    await monitor.poll()
    expect(value(await metrics.registry.metrics(), 'iys_sync_failing_brands')).toBe(0)
  })

  it('exports the decision spool: segments, bytes, the oldest, and the quarantined records', async () => {
    const spool = join(services.dir, 'spool')
    mkdirSync(join(spool, 'quarantine'), { recursive: true })
    writeFileSync(join(spool, 'boot1-00000001.jnl'), 'x'.repeat(100))
    writeFileSync(join(spool, 'boot1-00000002.jnl'), 'y'.repeat(50))
    writeFileSync(join(spool, 'boot1.live'), '{}') // a heartbeat, not a segment
    const old = (Date.now() - 300_000) / 1000
    utimesSync(join(spool, 'boot1-00000001.jnl'), old, old)
    writeFileSync(join(spool, 'quarantine', 'b1.tsv'), 'row\n')
    writeFileSync(join(spool, 'quarantine', 'b1.json'), '{}\n')
    const metrics = new Metrics()
    await new FreshnessMonitor(services.pool, metrics, log, { spool: () => spoolFigures(spool) }).poll()
    const text = await metrics.registry.metrics()
    expect(value(text, 'iys_decision_log_spool_segments')).toBe(2)
    expect(value(text, 'iys_decision_log_spool_bytes')).toBe(150)
    expect(value(text, 'iys_decision_log_spool_oldest_seconds')).toBeGreaterThanOrEqual(300)
    expect(value(text, 'iys_decision_log_quarantine_files')).toBe(1)
  })

  it('says when Postgres stops answering, and keeps ageing the backlog it last saw', async () => {
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    const pool = createPool(services.db.url.replace(':5432/', `:${proxy.port}/`), 2, { connectTimeoutMs: 1000 })
    const client = await services.pool.connect()
    try {
      await client.query("INSERT INTO iys_push_inbox (payload, received_at) VALUES ('{\"list\":[]}', now() - interval '30 seconds')")
      const metrics = new Metrics()
      const monitor = new FreshnessMonitor(pool, metrics, log)
      await monitor.poll()
      expect(monitor.postgres).toEqual({ reachable: true })
      let text = await metrics.registry.metrics()
      expect(value(text, 'iys_postgres_unreachable')).toBe(0)
      const seen = value(text, 'iys_push_backlog_oldest_seconds')
      expect(seen).toBeGreaterThanOrEqual(30)

      await proxy.cut()
      await new Promise(resolve => setTimeout(resolve, 1100))
      await monitor.poll()
      expect(monitor.postgres.reachable).toBe(false)
      text = await metrics.registry.metrics()
      expect(value(text, 'iys_postgres_unreachable')).toBe(1)
      expect(value(text, 'iys_push_backlog')).toBe(1)
      expect(value(text, 'iys_push_backlog_oldest_seconds')).toBeGreaterThan(seen + 1)

      await proxy.restore()
      await monitor.poll()
      expect(monitor.postgres).toEqual({ reachable: true })
      expect(value(await metrics.registry.metrics(), 'iys_postgres_unreachable')).toBe(0)
    } finally {
      await client.query('DELETE FROM iys_push_inbox')
      client.release()
      await pool.end().catch(() => {})
      await proxy.cut()
    }
  })
})

describe('a gateway whose Postgres goes away', () => {
  let proxy: TcpProxy
  let gateway: RunningGateway

  beforeAll(async () => {
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    gateway = await startTestGateway({ DATABASE_URL: services.db.url.replace(':5432/', `:${proxy.port}/`) })
  })
  afterAll(async () => {
    await proxy?.restore()
    await gateway?.close()
    await proxy?.cut()
  })

  const state = (): Promise<Response> => fetch(`${gateway.url}/v1/consents/state?brandCode=600001&type=MESAJ&recipient=%2B905320000009`, { headers: gateway.auth })
  const readyz = async (): Promise<any> => (await fetch(gateway.url + '/readyz')).json()

  it('names Postgres in /readyz, answers its routes 503 DATABASE_UNAVAILABLE, and recovers by itself', async () => {
    expect((await state()).status).toBe(200)
    expect((await readyz()).postgres).toBe('ok')

    await proxy.cut()
    const res = await state()
    expect(res.status).toBe(503)
    expect(res.headers.get('retry-after')).toBe('5')
    const body = await res.json() as { errors: Array<{ code: string, message: string }> }
    expect(body.errors[0]!.code).toBe('DATABASE_UNAVAILABLE')
    expect(body.errors[0]!.message).toMatch(/Postgres \(DATABASE_URL\)/)
    await until(async () => /^not answering since .*DATABASE_URL/.test((await readyz()).postgres ?? ''), 15_000, '/readyz to name Postgres')
    const r = await readyz()
    expect(r.ready).toBe(true) // checks never ask Postgres: the gateway stays in rotation
    const metrics = await (await fetch(gateway.url + '/metrics')).text()
    expect(value(metrics, 'iys_postgres_unreachable')).toBe(1)
    expect(value(metrics, 'iys_http_requests_total{route="history",status="503"}')).toBeGreaterThanOrEqual(1)

    await proxy.restore()
    await until(async () => (await readyz()).postgres === 'ok', 15_000, '/readyz to see Postgres back')
    expect((await state()).status).toBe(200)
  }, 60_000)
})
