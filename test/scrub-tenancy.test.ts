// Scrub jobs belong to the tenant whose key uploaded them: the listing shows a key only its tenant's jobs (for the
// brands it may act for), another tenant's job and its result are 403, a jobId taken by another tenant says no more
// than that, the owner survives a restart, and a job from before owners were recorded is nobody's.

import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createKey, newKey } from '../src/auth/keys.js'
import { emptyTotals, type JobRecord } from '../src/scrub/job-record.js'
import { bearer, tenantKey } from './helpers/auth.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const LIST = 'recipient\n+905321110001\n+905321110002\n'

describe('scrub jobs are their tenant\'s', () => {
  let services: TestServices
  let gw: RunningGateway
  let env: Record<string, string>
  let b: { keyId: string, apiKey: string } // tenant 700002, brand 610000
  let narrow: string // tenant 700001, limited to brand 600099
  let jobA: string
  let jobB: string

  const call = async (path: string, key: string, init: RequestInit = {}): Promise<{ status: number, json: any, text: string }> => {
    const res = await fetch(gw.url + path, { ...init, headers: { ...bearer(key), ...(init.headers as Record<string, string> | undefined) } })
    const text = await res.text()
    let json: any = null
    try { json = JSON.parse(text) } catch { /* CSV */ }
    return { status: res.status, json, text }
  }
  const upload = (key: string, brandCode: string, jobId?: string): Promise<{ status: number, json: any }> =>
    call(`/v1/scrub?brandCode=${brandCode}&type=MESAJ${jobId !== undefined ? `&jobId=${jobId}` : ''}`, key, { method: 'POST', headers: { 'content-type': 'text/csv' }, body: LIST })
  const done = async (jobId: string, key: string): Promise<any> => {
    let job: any
    await until(async () => { job = (await call(`/v1/scrub/${jobId}`, key)).json; return job.state === 'done' || job.state === 'failed' }, 30_000, 'the scrub job')
    return job
  }
  const listed = async (key: string): Promise<string[]> => {
    const r = await call('/v1/scrub', key)
    expect(r.status).toBe(200)
    return r.json.jobs.map((j: JobRecord) => j.jobId)
  }

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    const scrubDir = join(services.dir, 'scrub')
    env = { ...services.env, SCRUB_DIR: scrubDir }
    b = await tenantKey(services.env.DATABASE_URL!, { iysCode: '700002', brands: ['610000'] })
    narrow = (await createKey(services.pool, newKey({ iysCode: '700001', brandCodes: '600099', scopes: 'scrub', rate: '0' }))).apiKey
    // A job left by a gateway from before owners were recorded: done, with a result, and no owner.
    const legacy: JobRecord = {
      jobId: 'legacy-1', state: 'done', params: { brandCode: '600001', type: 'MESAJ', recipientType: 'BIREYSEL', commercial: true }, format: 'csv',
      createdAt: new Date().toISOString(), finishedAt: new Date().toISOString(), expiresAt: new Date(Date.now() + 3600_000).toISOString(), bytes: LIST.length, totals: emptyTotals()
    }
    mkdirSync(join(scrubDir, 'legacy-1'), { recursive: true })
    writeFileSync(join(scrubDir, 'legacy-1', 'job.json'), JSON.stringify(legacy))
    writeFileSync(join(scrubDir, 'legacy-1', 'result.csv'), 'recipient,normalized,allowed,reason,line,duplicateOf\n')
    gw = await startTestGateway(env)
    const a = await upload(gw.apiKey, '600001', 'tenant-a-job')
    expect(a.status, JSON.stringify(a.json)).toBe(202)
    jobA = a.json.jobId
    const other = await upload(b.apiKey, '610000')
    expect(other.status, JSON.stringify(other.json)).toBe(202)
    jobB = other.json.jobId
    await done(jobA, gw.apiKey)
    await done(jobB, b.apiKey)
  }, 60_000)

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  it('records the tenant and the key that uploaded a job', async () => {
    const r = await call(`/v1/scrub/${jobA}`, gw.apiKey)
    expect(r.status).toBe(200)
    expect(r.json.owner).toEqual({ iysCode: '700001', keyId: gw.apiKey.split('.')[0] })
    expect((await call(`/v1/scrub/${jobB}`, b.apiKey)).json.owner).toEqual({ iysCode: '700002', keyId: b.keyId })
  })

  it('lists to each key only its tenant\'s jobs, and of those only the brands it may act for', async () => {
    expect(await listed(gw.apiKey)).toEqual([jobA])
    expect(await listed(b.apiKey)).toEqual([jobB])
    expect(await listed(narrow)).toEqual([])
  })

  it('answers 403 FORBIDDEN for another tenant\'s job and its result, and 404 for no job', async () => {
    for (const [key, jobId] of [[b.apiKey, jobA], [gw.apiKey, jobB], [narrow, jobA]] as const) {
      for (const path of [`/v1/scrub/${jobId}`, `/v1/scrub/${jobId}/result`, `/v1/scrub/${jobId}/result?only=allowed`]) {
        const r = await call(path, key)
        expect(r.status, path).toBe(403)
        expect(r.json.errors[0]).toMatchObject({ code: 'FORBIDDEN', location: ['jobId'], value: jobId })
        expect(r.text).not.toContain('+90532')
      }
    }
    expect((await call('/v1/scrub/no-such-job', b.apiKey)).status).toBe(404)
    // The owner gets both.
    expect((await call(`/v1/scrub/${jobA}/result`, gw.apiKey)).text).toContain('+905321110001')
    expect((await call(`/v1/scrub/${jobB}/result`, b.apiKey)).text).toContain('+905321110002')
  })

  it('answers a jobId another tenant has taken with JOB_EXISTS and nothing about that job', async () => {
    const r = await upload(b.apiKey, '610000', 'tenant-a-job')
    expect(r.status).toBe(409)
    expect(r.json).toEqual({ errors: [{ code: 'JOB_EXISTS', location: ['jobId'], value: 'tenant-a-job', message: 'A scrub job named tenant-a-job exists already; choose another jobId.' }] })
    // Its own taken id says where the job is.
    const own = await upload(gw.apiKey, '600001', 'tenant-a-job')
    expect(own.json.errors[0].message).toContain('(done)')
    expect(await listed(b.apiKey)).toEqual([jobB])
    expect((await call(`/v1/scrub/${jobA}`, gw.apiKey)).json.state).toBe('done')
  })

  it('serves a job from before owners were recorded to nobody', async () => {
    expect(await listed(gw.apiKey)).not.toContain('legacy-1')
    expect((await call('/v1/scrub/legacy-1', gw.apiKey)).status).toBe(403)
    expect((await call('/v1/scrub/legacy-1/result', gw.apiKey)).status).toBe(403)
  })

  it('keeps the owner across a restart', async () => {
    await gw.close()
    gw = await startTestGateway(env) // a new key of the same tenant
    expect(await listed(gw.apiKey)).toEqual([jobA])
    expect(await listed(b.apiKey)).toEqual([jobB])
    expect((await call(`/v1/scrub/${jobA}`, b.apiKey)).status).toBe(403)
    expect((await call(`/v1/scrub/${jobA}/result`, gw.apiKey)).status).toBe(200)
  }, 30_000)
})
