// Scrub jobs' decisions in the decision log, the complaint evidence and the metrics, against the real Postgres and
// Redis (issue 11): every decision of a job (each DUPLICATE line excepted: its first occurrence carries the decision)
// is a row of `decisions` with the job's id, found by GET /v1/evidence for its recipient; iys_decisions_total counts
// exactly the file's decisions by reason; the scrub job metrics move; malformed lines are reported and logged;
// Postgres cut off during a job leaves the job done with its decisions pending (its result file kept), and they land
// exactly once when it returns. Without DATABASE_URL the decisions are still counted.

import { readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runSteps } from './helpers/cli.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const Q = 'brandCode=600001&type=MESAJ'
const phone = (block: number, i: number): string => `+90532${block}${String(i).padStart(6, '0')}`
const ONAY = Array.from({ length: 5 }, (_, i) => phone(2, i + 1))
const RET = Array.from({ length: 5 }, (_, i) => phone(3, i + 1))

interface Job { jobId: string, state: string, reason?: string, startedAt: string, finishedAt: string, totals: { read: number, duplicates: number }, decisionLog?: { state: string, rows?: number } }

/** iys_decisions_total{type="MESAJ"} by reason, and any other sample by its full name with labels. */
async function scrape (url: string): Promise<{ decisions: Record<string, number>, samples: Map<string, number> }> {
  const text = await (await fetch(url + '/metrics')).text()
  const decisions: Record<string, number> = {}
  const samples = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue
    const sp = line.lastIndexOf(' ')
    samples.set(line.slice(0, sp), Number(line.slice(sp + 1)))
    const m = /^iys_decisions_total\{reason="(\w+)",type="MESAJ"\} (\d+)$/.exec(line)
    if (m !== null) decisions[m[1]!] = Number(m[2])
  }
  return { decisions, samples }
}

const grown = (after: Record<string, number>, before: Record<string, number>): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0) !== 0) out[k] = v - (before[k] ?? 0)
  return out
}

describe('scrub decisions in the decision log, the evidence and the metrics', () => {
  let services: TestServicesWithRedis
  let proxy: TcpProxy
  let gw: RunningGateway
  let spool: string

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-scrub-log-' })
    const consents = join(services.dir, 'c.csv')
    writeFileSync(consents, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      ONAY.map(p => `700001,600001,${p},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join('') +
      RET.map(p => `700001,600001,${p},BIREYSEL,MESAJ,ONAY,HS_WEB,2023-06-01 09:30:00\n700001,600001,${p},BIREYSEL,MESAJ,RET,IYS_KISAMESAJ,2025-02-11 18:45:12\n`).join(''))
    await runSteps([['migrate'], ['import', consents], ['load']], services.env)
    // The gateway reaches Postgres through a proxy the outage test cuts; the test reads it directly (services.pool).
    proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    spool = join(services.dir, 'spool')
    gw = await startTestGateway(gatewayEnv())
  }, 120_000)

  const gatewayEnv = (): Record<string, string> => ({
    ...services.env,
    DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/${services.db.name}`,
    DECISION_SPOOL_DIR: spool,
    DECISION_FLUSH_MS: '50',
    SCRUB_DIR: join(services.dir, 'jobs'),
    SCRUB_THREADS: '1',
    SCRUB_CHUNK_LINES: '1000'
  })

  afterAll(async () => {
    await gw?.close()
    await proxy?.cut()
    await services?.close()
  })

  const upload = async (body: string, base = gw): Promise<string> => {
    const res = await fetch(`${base.url}/v1/scrub?${Q}`, { method: 'POST', headers: { 'content-type': 'text/csv', ...base.auth }, body })
    expect(res.status).toBe(202)
    return ((await res.json()) as { jobId: string }).jobId
  }
  const finished = async (jobId: string, base = gw): Promise<Job> => {
    let job: Job | undefined
    await until(async () => { job = await (await fetch(`${base.url}/v1/scrub/${jobId}`, { headers: base.auth })).json() as Job; return job.state === 'done' || job.state === 'failed' }, 60_000, 'the scrub job')
    return job!
  }
  const jobNow = async (jobId: string): Promise<Job> => await (await fetch(`${gw.url}/v1/scrub/${jobId}`, { headers: gw.auth })).json() as Job
  /** The result's rows: [recipient, normalized, allowed, reason, line, duplicateOf] (recipients here hold no comma). */
  const resultRows = async (jobId: string): Promise<string[][]> => {
    const text = await (await fetch(`${gw.url}/v1/scrub/${jobId}/result`, { headers: gw.auth })).text()
    return text.trimEnd().split('\n').slice(1).map(l => { const f = l.split(','); const n = f.length; return [f.slice(0, n - 5).join(','), ...f.slice(n - 5)] })
  }
  const logged = async (jobId: string): Promise<{ recipient: string, normalized: string | null, allowed: boolean, reason: string, source: string, iys_code: string, brand_code: string, type: string, recipient_type: string, commercial: boolean, has_seq: boolean }[]> =>
    (await services.pool.query("SELECT recipient, normalized, allowed, reason, source, iys_code::text, brand_code::text, type, recipient_type, commercial, consent_seq IS NOT NULL AS has_seq FROM decisions WHERE job_id = $1 ORDER BY recipient", [jobId])).rows

  it('writes every decision of a job to the decision table with its job id, and counts each in iys_decisions_total by reason', async () => {
    const before = await scrape(gw.url)
    const lines = [...ONAY, ...RET, phone(4, 1), phone(4, 2), 'not a phone', RET[0]!, '0' + ONAY[0]!.slice(3), 'x@y.com']
    const jobId = await upload(lines.join('\n') + '\n')
    const job = await finished(jobId)
    expect(job.state).toBe('done')
    const rows = await resultRows(jobId)
    expect(rows).toHaveLength(lines.length)
    const decided = rows.filter(r => r[3] !== 'DUPLICATE')
    expect(rows.length - decided.length).toBe(2) // RET[0] again, and ONAY[0] typed another way

    await until(async () => (await logged(jobId)).length === decided.length, 15_000, 'the job\'s decisions to be written')
    await until(async () => (await jobNow(jobId)).decisionLog?.state === 'written', 5000, 'the job to say its decisions are written')
    expect((await jobNow(jobId)).decisionLog).toEqual({ state: 'written', rows: decided.length })
    const inDb = await logged(jobId)
    const expected = decided.map(([recipient, normalized, allowed, reason]) => ({
      recipient: recipient!, normalized: normalized === '' ? null : normalized!, allowed: allowed === 'true', reason: reason!,
      source: 'scrub', iys_code: '700001', brand_code: '600001', type: 'MESAJ', recipient_type: 'BIREYSEL', commercial: true,
      has_seq: reason === 'CONSENT' || reason === 'REJECTED'
    })).sort((a, b) => (a.recipient < b.recipient ? -1 : a.recipient > b.recipient ? 1 : 0))
    expect(inDb).toEqual(expected)

    const byReason: Record<string, number> = {}
    for (const r of decided) byReason[r[3]!] = (byReason[r[3]!] ?? 0) + 1
    expect(byReason).toEqual({ CONSENT: 5, REJECTED: 5, NO_CONSENT: 2, INVALID_RECIPIENT: 2 })
    expect(grown((await scrape(gw.url)).decisions, before.decisions)).toEqual(byReason)
  })

  it('shows each scrub decision in GET /v1/evidence for the recipient: REJECTED in job X at T, with the consent it relied on', async () => {
    const target = RET[1]!
    const jobId = await upload(`${phone(4, 9)}\n${target}\n`)
    const job = await finished(jobId)
    expect(job.state).toBe('done')
    await until(async () => (await logged(jobId)).length === 2, 15_000, 'the job\'s decisions to be written')
    const res = await fetch(`${gw.url}/v1/evidence?${Q}&recipient=${encodeURIComponent(target)}`, { headers: gw.auth })
    expect(res.status).toBe(200)
    const body = await res.json() as { decisions: { decidedAt: string, source: string, jobId: string | null, allowed: boolean, reason: string, consent: { status: string } | null }[] }
    const mine = body.decisions.filter(d => d.jobId === jobId)
    expect(mine).toHaveLength(1)
    expect(mine[0]).toMatchObject({ source: 'scrub', jobId, allowed: false, reason: 'REJECTED', consent: { status: 'RET' } })
    const at = Date.parse(mine[0]!.decidedAt)
    expect(at).toBeGreaterThanOrEqual(Date.parse(job.startedAt) - 1000)
    expect(at).toBeLessThanOrEqual(Date.parse(job.finishedAt))
    // The earlier job that listed the recipient shows too: one entry per job that decided it.
    expect(body.decisions.filter(d => d.source === 'scrub').length).toBeGreaterThanOrEqual(2)
    const html = await (await fetch(`${gw.url}/v1/evidence?${Q}&recipient=${encodeURIComponent(target)}`, { headers: { ...gw.auth, accept: 'text/html' } })).text()
    expect(html).toContain('toplu tarama')
    expect(html).toContain(jobId)
  })

  it('moves the scrub job metrics: jobs running and queued, lines, finished runs', async () => {
    const before = (await scrape(gw.url)).samples
    const big = Array.from({ length: 150_000 }, (_, i) => phone(5, i)).join('\n') + '\n'
    const first = await upload(big)
    const second = await upload('+905320000001\n')
    const seen = { running: 0, queued: 0 }
    await until(async () => {
      const s = (await scrape(gw.url)).samples
      seen.running = Math.max(seen.running, s.get('iys_scrub_jobs{state="running"}') ?? 0)
      seen.queued = Math.max(seen.queued, s.get('iys_scrub_jobs{state="queued"}') ?? 0)
      return seen.running === 1 && seen.queued === 1
    }, 30_000, 'a running and a queued job in iys_scrub_jobs')
    expect((await finished(first)).state).toBe('done')
    expect((await finished(second)).state).toBe('done')
    const after = (await scrape(gw.url)).samples
    expect(after.get('iys_scrub_jobs{state="running"}')).toBe(0)
    expect(after.get('iys_scrub_jobs{state="queued"}')).toBe(0)
    expect(after.get('iys_scrub_queue_oldest_seconds')).toBe(0)
    expect(after.get('iys_scrub_lines_total')! - (before.get('iys_scrub_lines_total') ?? 0)).toBe(150_001)
    expect(after.get('iys_scrub_jobs_finished_total{result="done"}')! - (before.get('iys_scrub_jobs_finished_total{result="done"}') ?? 0)).toBe(2)
    expect(after.get('iys_scrub_jobs_finished_total{result="failed"}')).toBe(0)
    // 150,000 decisions in three batches of the decision log, every one once.
    await until(async () => (await services.pool.query('SELECT count(*)::int AS n FROM decisions WHERE job_id = $1', [first])).rows[0].n === 150_000, 30_000, 'the big job\'s decisions to be written')
    const { rows } = await services.pool.query('SELECT count(*)::int AS n, count(DISTINCT normalized)::int AS d FROM decisions WHERE job_id = $1', [first])
    expect(rows[0]).toEqual({ n: 150_000, d: 150_000 })
  }, 90_000)

  it('reports malformed lines by number and logs them with the rest: nothing is quarantined', async () => {
    const before = await scrape(gw.url)
    const lines = ['"a\tb\\c"', 'nul\u0000here', '\uD800lone', phone(6, 1), 'y'.repeat(5000), phone(6, 2)]
    const jobId = await upload(lines.join('\n') + '\n')
    const job = await finished(jobId)
    expect(job.state).toBe('done')
    const rows = await resultRows(jobId)
    expect(rows.map(r => [r[4], r[3]])).toEqual([['1', 'INVALID_RECIPIENT'], ['2', 'INVALID_RECIPIENT'], ['3', 'INVALID_RECIPIENT'], ['4', 'NO_CONSENT'], ['5', 'INVALID_RECIPIENT'], ['6', 'NO_CONSENT']])
    await until(async () => (await logged(jobId)).length === 6, 15_000, 'the job\'s decisions to be written')
    const inDb = await logged(jobId)
    expect(inDb.map(r => r.recipient).sort()).toEqual(['', 'a\tb\\c', 'nul\uFFFDhere', '\uFFFDlone', phone(6, 1), phone(6, 2)].sort())
    expect(inDb.filter(r => r.reason === 'INVALID_RECIPIENT')).toHaveLength(4)
    await until(async () => (await jobNow(jobId)).decisionLog?.state === 'written', 5000, 'the job to say its decisions are written')
    expect((await jobNow(jobId)).decisionLog).toEqual({ state: 'written', rows: 6 })
    expect(grown((await scrape(gw.url)).decisions, before.decisions)).toEqual({ INVALID_RECIPIENT: 4, NO_CONSENT: 2 })
    expect(readdirSync(join(spool, 'quarantine'))).toEqual([])
  })

  it('finishes a job while Postgres is unreachable, keeps its decisions pending with its result, and writes them exactly once when it returns', async () => {
    const count = async (jobId: string): Promise<number> => (await services.pool.query('SELECT count(*)::int AS n FROM decisions WHERE job_id = $1', [jobId])).rows[0].n
    await proxy.cut()
    let jobId = ''
    try {
      jobId = await upload(Array.from({ length: 60_000 }, (_, i) => phone(7, i)).join('\n') + '\n')
      const job = await finished(jobId)
      expect(job.state).toBe('done')
      expect(job.decisionLog).toEqual({ state: 'pending' })
      // The result is served meanwhile, and the job stays pending while the writes are retried.
      expect((await resultRows(jobId))).toHaveLength(60_000)
      await new Promise(resolve => setTimeout(resolve, 1500))
      expect((await jobNow(jobId)).decisionLog).toEqual({ state: 'pending' })
      expect(await count(jobId)).toBe(0)
    } finally {
      await proxy.restore()
    }
    await until(async () => (await jobNow(jobId)).decisionLog?.state === 'written', 60_000, 'the pending scrub decisions to be written')
    expect((await jobNow(jobId)).decisionLog).toEqual({ state: 'written', rows: 60_000 })
    const dup = await services.pool.query('SELECT normalized FROM decisions WHERE job_id = $1 GROUP BY normalized HAVING count(*) > 1', [jobId])
    expect(dup.rows).toEqual([])
    expect(await count(jobId)).toBe(60_000)
  }, 120_000)

  it('writes at the next start the decisions a stopped gateway had not written yet', async () => {
    const count = async (jobId: string): Promise<number> => (await services.pool.query('SELECT count(*)::int AS n FROM decisions WHERE job_id = $1', [jobId])).rows[0].n
    await proxy.cut()
    let jobId = ''
    try {
      jobId = await upload(Array.from({ length: 1000 }, (_, i) => phone(8, i)).join('\n') + '\n')
      expect((await finished(jobId)).decisionLog).toEqual({ state: 'pending' })
      await gw.close() // stops with the decisions still pending in job.json
    } finally {
      await proxy.restore()
    }
    gw = await startTestGateway(gatewayEnv())
    await until(async () => (await jobNow(jobId)).decisionLog?.state === 'written', 30_000, 'the restarted gateway to write the pending decisions')
    expect(await count(jobId)).toBe(1000)
  }, 90_000)

  it('counts the decisions of a job without DATABASE_URL too (embedded)', async () => {
    const embedded = await startTestGateway({ SCRUB_THREADS: '1' })
    try {
      const before = await scrape(embedded.url)
      // The embedded store is seeded from data/sample-consents.csv: +905321234567 has ONAY, +905327654321 RET.
      const jobId = await upload('+905321234567\n+905327654321\n+905000000001\nnonsense\n+905327654321\n', embedded)
      const job = await finished(jobId, embedded)
      expect(job.state).toBe('done')
      expect(job.decisionLog).toBeUndefined()
      expect(grown((await scrape(embedded.url)).decisions, before.decisions)).toEqual({ CONSENT: 1, REJECTED: 1, NO_CONSENT: 1, INVALID_RECIPIENT: 1 })
      expect((await scrape(embedded.url)).samples.get('iys_scrub_lines_total')).toBe(5)
    } finally {
      await embedded.close()
    }
  })
})
