// Scrub jobs across gateways (issue 14): gateways sharing one Postgres and one Redis, each with a scrub folder of its
// own, answer for each other's jobs. A job uploaded to A reads the same on B, and B serves its result byte for byte
// (from Postgres: B's folder never holds it); tenancy holds on B as on A, and a jobId is one job across gateways; a job
// whose gateway stopped mid-run is failed by the other once the lease has passed (and not before, nor by a gateway
// that was itself cut off), and its gateway, back on its folder, does not run it again; a gateway cut off from
// Postgres scrubs on and shares its jobs when Postgres is back; retention deletes the shared copy.

import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKey, newKey } from '../src/auth/keys.js'
import { createLogger } from '../src/log.js'
import { ScrubJobs } from '../src/scrub/jobs.js'
import type { JobRecord } from '../src/scrub/job-record.js'
import { LEASE_MS, RESULT_CHUNK_BYTES } from '../src/scrub/shared.js'
import { bearer, tenantKey } from './helpers/auth.js'
import { runSteps } from './helpers/cli.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const Q = 'brandCode=600001&type=MESAJ'
const phone = (block: number, i: number): string => `+90532${block}${String(i).padStart(6, '0')}`
const ONAY = Array.from({ length: 200 }, (_, i) => phone(2, i))
const RET = Array.from({ length: 200 }, (_, i) => phone(3, i))

interface Call { status: number, text: string, bytes: Buffer, json: any }

async function call (base: string, path: string, key: string, init: RequestInit = {}): Promise<Call> {
  const res = await fetch(base + path, { ...init, headers: { ...bearer(key), ...(init.headers as Record<string, string> | undefined) } })
  const bytes = Buffer.from(await res.arrayBuffer())
  const text = bytes.toString('utf8')
  let json: any = null
  try { json = JSON.parse(text) } catch { /* CSV */ }
  return { status: res.status, text, bytes, json }
}

/** A list of `lines` lines: recipients with ONAY, RET and none, duplicates, malformed lines, non-ASCII text. */
function list (lines: number): string {
  const out: string[] = []
  for (let i = 0; i < lines; i++) {
    const k = i % 10
    const d = Math.floor(i / 10)
    out.push(k === 0 ? ONAY[d % ONAY.length]! : k === 1 ? RET[d % RET.length]! : k === 2 ? `çöğüş-${i}` : k === 3 ? out[i - 3]! : phone(5, i))
  }
  return out.join('\n') + '\n'
}

describe('scrub jobs across gateways', () => {
  let services: TestServicesWithRedis
  let a: RunningGateway
  let b: RunningGateway
  let key: string // tenant 700001, every brand
  const env = (dir: string, extra: Record<string, string> = {}): Record<string, string> =>
    ({ ...services.env, SCRUB_DIR: join(services.dir, dir), SCRUB_THREADS: '1', SCRUB_CHUNK_LINES: '1000', ...extra })

  const upload = async (gw: RunningGateway, body: string, query = Q, k = key): Promise<Call> =>
    await call(gw.url, `/v1/scrub?${query}`, k, { method: 'POST', headers: { 'content-type': 'text/csv' }, body })
  const settled = async (gw: RunningGateway, jobId: string): Promise<any> => {
    let job: any
    await until(async () => { job = (await call(gw.url, `/v1/scrub/${jobId}`, key)).json; return job.state === 'done' || job.state === 'failed' }, 120_000, `scrub job ${jobId}`)
    return job
  }
  const gatewayId = (dir: string): string => readFileSync(join(services.dir, dir, '.gateway-id'), 'utf8').trim()
  const row = async (jobId: string): Promise<{ state: string, gateway_id: string, result_stored: boolean, chunks: number, stored_chunks: number } | undefined> =>
    (await services.pool.query(`SELECT state, gateway_id, result_stored, result_chunks AS chunks,
       (SELECT count(*)::int FROM scrub_result_chunks c WHERE c.job_id = j.job_id) AS stored_chunks FROM scrub_jobs j WHERE job_id = $1`, [jobId])).rows[0]

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-scrub-shared-' })
    const consents = join(services.dir, 'c.csv')
    writeFileSync(consents, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      ONAY.map(p => `700001,600001,${p},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join('') +
      RET.map(p => `700001,600001,${p},BIREYSEL,MESAJ,ONAY,HS_WEB,2023-06-01 09:30:00\n700001,600001,${p},BIREYSEL,MESAJ,RET,IYS_KISAMESAJ,2025-02-11 18:45:12\n`).join(''))
    await runSteps([['migrate'], ['import', consents], ['load']], services.env)
    a = await startTestGateway(env('a'))
    b = await startTestGateway(env('b'))
    key = a.apiKey
  }, 120_000)

  afterAll(async () => {
    await a?.close()
    await b?.close()
    await services?.close()
  })

  describe('a job uploaded to one gateway', () => {
    let jobId: string
    let onA: Call

    beforeAll(async () => {
      const up = await upload(a, list(60_000), `${Q}&jobId=shared-1`)
      expect(up.status, up.text).toBe(202)
      jobId = up.json.jobId
      expect((await settled(a, jobId)).state).toBe('done')
      onA = await call(a.url, `/v1/scrub/${jobId}/result`, key)
      expect(onA.status).toBe(200)
    }, 180_000)

    it('reads the same on the other gateway, and its result there is byte-identical (from Postgres)', async () => {
      // Byte for byte: the record is kept in Postgres as the gateway that ran it wrote it.
      await until(async () => (await call(b.url, `/v1/scrub/${jobId}`, key)).text === (await call(a.url, `/v1/scrub/${jobId}`, key)).text, 30_000, 'the job on B to read as on A')
      const job = (await call(b.url, `/v1/scrub/${jobId}`, key)).json
      expect(job).toMatchObject({ jobId, state: 'done', owner: { iysCode: '700001' }, totals: { read: 60_000 } })
      expect(onA.bytes.length).toBeGreaterThan(2 * RESULT_CHUNK_BYTES) // more than one chunk, and a short last one
      const onB = await call(b.url, `/v1/scrub/${jobId}/result`, key)
      expect(onB.status).toBe(200)
      expect(onB.bytes.equals(onA.bytes)).toBe(true)
      expect(onB.text).toContain('çöğüş-2,')
      for (const only of ['allowed', 'blocked']) {
        const fromA = await call(a.url, `/v1/scrub/${jobId}/result?only=${only}`, key)
        const fromB = await call(b.url, `/v1/scrub/${jobId}/result?only=${only}`, key)
        expect(fromB.bytes.equals(fromA.bytes), only).toBe(true)
        expect(fromB.text.split('\n').length, only).toBeGreaterThan(100)
      }
      // B served it from Postgres: its own folder has no trace of the job, and Postgres holds every chunk.
      expect(existsSync(join(services.dir, 'b', jobId))).toBe(false)
      expect(await row(jobId)).toMatchObject({ state: 'done', gateway_id: gatewayId('a'), result_stored: true, chunks: Math.ceil(onA.bytes.length / RESULT_CHUNK_BYTES), stored_chunks: Math.ceil(onA.bytes.length / RESULT_CHUNK_BYTES) })
      // And lists it.
      expect((await call(b.url, '/v1/scrub', key)).json.jobs.map((j: JobRecord) => j.jobId)).toContain(jobId)
    }, 60_000)

    it('keeps it its tenant\'s on the other gateway: another tenant, or a key for another brand, gets 403 and no listing', async () => {
      const other = (await tenantKey(services.env.DATABASE_URL!, { iysCode: '700002', brands: ['610000'] })).apiKey
      const narrow = (await createKey(services.pool, newKey({ iysCode: '700001', brandCodes: '600099', scopes: 'scrub', rate: '0' }))).apiKey
      for (const k of [other, narrow]) {
        await until(async () => (await call(b.url, '/v1/scrub', k)).status === 200, 30_000, 'B to load the new keys')
        for (const path of [`/v1/scrub/${jobId}`, `/v1/scrub/${jobId}/result`, `/v1/scrub/${jobId}/result?only=allowed`]) {
          const r = await call(b.url, path, k)
          expect(r.status, path).toBe(403)
          expect(r.json.errors[0]).toMatchObject({ code: 'FORBIDDEN', value: jobId })
          expect(r.text).not.toContain('+90532')
        }
        expect((await call(b.url, '/v1/scrub', k)).json.jobs.map((j: JobRecord) => j.jobId)).not.toContain(jobId)
      }
    }, 60_000)

    it('holds its jobId on every gateway: the same name uploaded to the other is 409, saying nothing to another tenant', async () => {
      const other = (await tenantKey(services.env.DATABASE_URL!, { iysCode: '700002', brands: ['610000'] })).apiKey
      await until(async () => (await call(b.url, '/v1/scrub', other)).status === 200, 30_000, 'B to load the new key')
      const theirs = await upload(b, '+905321110001\n', `brandCode=610000&type=MESAJ&jobId=${jobId}`, other)
      expect(theirs.status).toBe(409)
      expect(theirs.json).toEqual({ errors: [{ code: 'JOB_EXISTS', location: ['jobId'], value: jobId, message: `A scrub job named ${jobId} exists already; choose another jobId.` }] })
      const ours = await upload(b, '+905321110001\n', `${Q}&jobId=${jobId}`)
      expect(ours.status).toBe(409)
      expect(ours.json.errors[0].message).toContain('(done)')
      // Nothing of either attempt is left on B, and the job is A's as before.
      expect(existsSync(join(services.dir, 'b', jobId))).toBe(false)
      expect((await row(jobId))?.gateway_id).toBe(gatewayId('a'))
      expect((await call(b.url, `/v1/scrub/${jobId}/result`, key)).bytes.equals(onA.bytes)).toBe(true)
    }, 60_000)

    it('answers 404 for an id no upload could take, without asking Postgres (which refuses a NUL: it was a 500)', async () => {
      for (const path of ['/v1/scrub/%00', '/v1/scrub/a%00b/result', `/v1/scrub/${'x'.repeat(65)}`]) {
        const r = await call(b.url, path, key)
        expect(r.status, path).toBe(404)
        expect(r.json.errors[0].code).toBe('NOT_FOUND')
      }
    })
  })

  it('fails on the other gateway a job whose gateway stopped mid-run, once the lease has passed, and its gateway does not run it again', async () => {
    const c = await startTestGateway(env('c'))
    let jobId: string
    try {
      const up = await upload(c, list(1_000_000))
      expect(up.status, up.text).toBe(202)
      jobId = up.json.jobId
      // Running on C, and B reads it so from Postgres; then C stops before the job ends.
      await until(async () => (await call(b.url, `/v1/scrub/${jobId}`, key)).json?.state === 'running', 60_000, 'the job to run, as B sees it')
      // While it runs, both answer the same (the record as C last saved it), totals included.
      await until(async () => (await call(c.url, `/v1/scrub/${jobId}`, key)).text === (await call(b.url, `/v1/scrub/${jobId}`, key)).text, 30_000, 'C and B to answer the same')
    } finally {
      await c.close()
    }
    const running = (await call(b.url, `/v1/scrub/${jobId}`, key)).json
    expect(running.state).toBe('running')
    expect(running.totals.read).toBeLessThan(1_000_000)

    // The lease passing is simulated on Postgres's clock (the only one the rule reads): C's last heartbeat an hour ago.
    const c2 = gatewayId('c')
    await services.pool.query("UPDATE scrub_gateways SET heartbeat_at = heartbeat_at - interval '1 hour' WHERE gateway_id = $1", [c2])
    // A gateway whose own heartbeats resumed only just now (Postgres was away from it too) does not judge the others.
    await services.pool.query('UPDATE scrub_gateways SET streak_since = now() WHERE gateway_id = $1', [gatewayId('b')])
    expect((await call(b.url, `/v1/scrub/${jobId}`, key)).json.state).toBe('running')
    // One whose heartbeats have landed for longer than the lease does.
    await services.pool.query(`UPDATE scrub_gateways SET streak_since = now() - interval '${2 * LEASE_MS} milliseconds' WHERE gateway_id = $1`, [gatewayId('b')])
    const failed = await call(b.url, `/v1/scrub/${jobId}`, key)
    expect(failed.json).toMatchObject({ jobId, state: 'failed', totals: running.totals })
    expect(failed.json.reason).toMatch(/gateway that was running this job stopped .* before the job finished/)
    expect(failed.json.expiresAt).toBeDefined()
    expect((await row(jobId))?.state).toBe('failed')
    expect((await call(a.url, `/v1/scrub/${jobId}`, key)).text).toBe(failed.text)
    expect((await call(b.url, `/v1/scrub/${jobId}/result`, key)).json.errors[0].code).toBe('RESULT_NOT_READY')
    expect((await call(b.url, '/v1/scrub', key)).json.jobs.find((j: JobRecord) => j.jobId === jobId)?.state).toBe('failed')

    // C back on its folder takes the failure instead of running the job again, and answers as the others.
    const back = await startTestGateway(env('c'))
    try {
      expect((await call(back.url, `/v1/scrub/${jobId}`, key)).text).toBe(failed.text)
      expect(existsSync(join(services.dir, 'c', jobId, 'input'))).toBe(false)
      await new Promise(resolve => setTimeout(resolve, 500))
      expect((await call(back.url, `/v1/scrub/${jobId}`, key)).json.state).toBe('failed')
    } finally {
      await back.close()
    }
  }, 240_000)

  it('scrubs on while Postgres is away from its gateway, refuses only named uploads meanwhile, and shares the job once it is back', async () => {
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5432 })
    const d = await startTestGateway(env('d', { DATABASE_URL: `postgres://postgres@127.0.0.1:${proxy.port}/${services.db.name}` }))
    try {
      await proxy.cut()
      const named = await upload(d, '+905321110001\n', `${Q}&jobId=named-while-away`)
      expect(named.status).toBe(503)
      expect(named.json.errors[0].code).toBe('DATABASE_UNAVAILABLE')
      const up = await upload(d, list(20_000))
      expect(up.status, up.text).toBe(202)
      const jobId: string = up.json.jobId
      expect((await settled(d, jobId)).state).toBe('done')
      const onD = await call(d.url, `/v1/scrub/${jobId}/result`, key)
      expect(onD.status).toBe(200)
      expect(await row(jobId)).toBeUndefined()
      await proxy.restore()
      await until(async () => (await row(jobId))?.result_stored === true, 90_000, 'the job and its result to reach Postgres')
      expect((await call(b.url, `/v1/scrub/${jobId}`, key)).text).toBe((await call(d.url, `/v1/scrub/${jobId}`, key)).text)
      expect((await call(b.url, `/v1/scrub/${jobId}/result`, key)).bytes.equals(onD.bytes)).toBe(true)
      expect((await call(b.url, '/v1/scrub/named-while-away', key)).status).toBe(404)
    } finally {
      await d.close()
      await proxy.cut()
    }
  }, 180_000)

  it('streams a result on another gateway while it is still being copied, and fails the job if its gateway goes before the copy ends', async () => {
    const log = createLogger('silent')
    const params = { brandCode: '600001', type: 'MESAJ' as const, recipientType: 'BIREYSEL' as const, commercial: true }
    const owner = { iysCode: '700001', keyId: key.split('.')[0]! }
    const result = 'recipient,normalized,allowed,reason,line,duplicateOf\n' + Array.from({ length: 50_000 }, (_, i) => `${phone(6, i)},${phone(6, i)},false,NO_CONSENT,${i + 1},\n`).join('')
    /** A done job of `jobs` whose result copy waits: a download from that gateway's disk is (said to be) going on. */
    const heldJob = async (jobs: ScrubJobs): Promise<string> => {
      jobs.downloadStarted()
      const job = await jobs.create(params, 'csv', undefined, owner)
      writeFileSync(jobs.inputPath(job.jobId), '+905321110001\n')
      writeFileSync(jobs.resultPath(job.jobId), result)
      await jobs.finish(job, 'done')
      await until(async () => (await row(job.jobId))?.state === 'done', 30_000, 'the done record to reach Postgres')
      expect((await row(job.jobId))?.chunks).toBe(0)
      return job.jobId
    }
    /** B's download of `id` has found no chunk yet and is waiting for the copy (its last query, in pg_stat_activity). */
    const waiting = async (): Promise<boolean> => (await services.pool.query(
      "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT j.record, j.state, j.result_stored AS stored%'")).rows.length > 0

    const held = new ScrubJobs(join(services.dir, 'held'), 1, log, () => {}, services.pool)
    await held.init()
    try {
      const id = await heldJob(held)
      const download = call(b.url, `/v1/scrub/${id}/result`, key)
      await until(waiting, 30_000, 'B to wait for the result\'s chunks')
      held.downloadEnded() // the copy goes on, and B streams the chunks as they come
      const r = await download
      expect(r.status).toBe(200)
      expect(r.text).toBe(result)
    } finally {
      held.stop()
    }

    // A gateway that goes before its done job's result is copied: B fails the job once the lease has passed.
    const going = new ScrubJobs(join(services.dir, 'going'), 1, log, () => {}, services.pool)
    await going.init()
    const id = await heldJob(going)
    going.stop()
    await services.pool.query(`UPDATE scrub_gateways SET streak_since = now() - interval '${2 * LEASE_MS} milliseconds' WHERE gateway_id = $1`, [gatewayId('b')])
    expect((await call(b.url, `/v1/scrub/${id}`, key)).json.state).toBe('done') // its gateway is not silent for long yet
    const download = call(b.url, `/v1/scrub/${id}/result`, key)
    await services.pool.query("UPDATE scrub_gateways SET heartbeat_at = heartbeat_at - interval '1 hour' WHERE gateway_id = $1", [gatewayId('going')])
    const r = await download
    expect(r.status).toBe(409)
    expect(r.json.errors[0].code).toBe('RESULT_NOT_READY')
    expect(r.json.errors[0].message).toMatch(/The job is failed: the gateway that ran this job stopped .* before its result was copied/)
    const job = (await call(b.url, `/v1/scrub/${id}`, key)).json
    expect(job.state).toBe('failed')
    expect((await row(id))?.state).toBe('failed')
  }, 120_000)

  it('deletes the shared copy with the retention: of its own jobs, and of jobs of a gateway that is gone', async () => {
    const log = createLogger('silent')
    const params = { brandCode: '600001', type: 'MESAJ' as const, recipientType: 'BIREYSEL' as const, commercial: true }
    const owner = { iysCode: '700001', keyId: key.split('.')[0]! }
    const result = 'recipient,normalized,allowed,reason,line,duplicateOf\n' + '+905321110001,+905321110001,false,NO_CONSENT,1,\n'.repeat(40_000)
    const doneJob = async (jobs: ScrubJobs): Promise<string> => {
      const job = await jobs.create(params, 'csv', undefined, owner)
      writeFileSync(jobs.inputPath(job.jobId), '+905321110001\n')
      job.state = 'running'
      await jobs.save(job)
      writeFileSync(jobs.resultPath(job.jobId), result)
      await jobs.finish(job, 'done')
      await until(async () => (await row(job.jobId))?.result_stored === true, 30_000, 'the result to reach Postgres')
      return job.jobId
    }
    const here = new ScrubJobs(join(services.dir, 'retention-here'), 1, log, () => {}, services.pool)
    const gone = new ScrubJobs(join(services.dir, 'retention-gone'), 1, log, () => {}, services.pool)
    await here.init()
    await gone.init()
    try {
      const own = await doneJob(here)
      const orphan = await doneJob(gone)
      gone.stop() // its gateway is gone: it never sweeps again
      for (const id of [own, orphan]) {
        expect((await call(b.url, `/v1/scrub/${id}/result`, key)).text).toBe(result)
        expect((await row(id))?.stored_chunks).toBe(Math.ceil(result.length / RESULT_CHUNK_BYTES))
      }
      // Within the retention (1 hour here) nothing goes.
      expect(await here.sweep(Date.now() + 30 * 60_000)).toBe(0)
      expect(await row(own)).toBeDefined()
      expect(await row(orphan)).toBeDefined()
      // Past it, the gateway deletes its job's folder and its shared copy, and the expired job of the gateway that is gone.
      expect(await here.sweep(Date.now() + 61 * 60_000)).toBe(1)
      expect(existsSync(join(services.dir, 'retention-here', own))).toBe(false)
      for (const id of [own, orphan]) {
        expect(await row(id)).toBeUndefined()
        expect((await services.pool.query('SELECT count(*)::int AS n FROM scrub_result_chunks WHERE job_id = $1', [id])).rows[0].n).toBe(0)
        expect((await call(b.url, `/v1/scrub/${id}`, key)).status).toBe(404)
        expect((await call(b.url, `/v1/scrub/${id}/result`, key)).status).toBe(404)
      }
      // The real gateways' jobs, within their retention, are still there.
      expect((await services.pool.query("SELECT count(*)::int AS n FROM scrub_jobs WHERE job_id = 'shared-1'")).rows[0].n).toBe(1)
    } finally {
      here.stop()
      gone.stop()
    }
  }, 120_000)
})
