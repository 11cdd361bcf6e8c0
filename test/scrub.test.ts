// Bulk scrubbing through the HTTP API against the real Postgres and Redis: results identical to /v1/check,
// duplicates and malformed lines reported by line, a multi-million-line job, a restart between finish and download,
// a broken upload, and retention.

import { readFileSync, writeFileSync, existsSync } from 'node:fs'
import { request } from 'node:http'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createLogger } from '../src/log.js'
import { messyPhone } from '../loaders/generate.js'
import { mulberry32 } from '../src/util/random.js'
import { ScrubJobs } from '../src/scrub/jobs.js'
import { seedGenerated } from './helpers/cli.js'
import { authFor, check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const Q = 'brandCode=600001&type=MESAJ'

describe('bulk scrub', () => {
  let services: TestServices
  let gw: RunningGateway
  let env: Record<string, string>
  let dir: string
  let scrubDir: string
  let present: string[]

  beforeAll(async () => {
    services = await testServices({ redis: true, poolSize: 1, dirPrefix: 'iys-scrub-' })
    dir = services.dir
    scrubDir = join(dir, 'jobs')
    env = { ...services.env, SCRUB_DIR: scrubDir, SCRUB_THREADS: '2', SCRUB_CHUNK_LINES: '5000' }
    const file = join(dir, 'c.csv')
    await seedGenerated(env, file, { rows: 40_000, brands: 2, retShare: 0.3, seed: 8 })
    present = (await services.pool.query<{ r: string }>("SELECT recipient AS r FROM consents WHERE brand_code = 600001 AND type = 'MESAJ' AND recipient_type = 'BIREYSEL'")).rows.map(x => x.r)
    gw = await startTestGateway(env)
  }, 120_000)

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  const upload = async (body: string, contentType = 'text/csv', query = Q): Promise<string> => {
    const res = await fetch(`${gw.url}/v1/scrub?${query}`, { method: 'POST', headers: { 'content-type': contentType, ...gw.auth }, body })
    expect(res.status).toBe(202)
    return ((await res.json()) as { jobId: string }).jobId
  }
  const finished = async (jobId: string, base = gw.url): Promise<any> => {
    let job: any
    await until(async () => { job = await (await fetch(`${base}/v1/scrub/${jobId}`, { headers: authFor(base) })).json(); return job.state === 'done' || job.state === 'failed' }, 120_000, 'the scrub job')
    return job
  }
  const resultRows = async (jobId: string, only = '', base = gw.url): Promise<string[][]> => {
    const text = await (await fetch(`${base}/v1/scrub/${jobId}/result${only}`, { headers: authFor(base) })).text()
    const lines = text.trimEnd().split('\n')
    expect(lines[0]).toBe('recipient,normalized,allowed,reason,line,duplicateOf')
    return lines.slice(1).map(l => { const f = l.split(','); const n = f.length; return [f.slice(0, n - 5).join(','), ...f.slice(n - 5)] })
  }

  it('answers every line as /v1/check does (100,000 lines: mixed formats, invalid lines, duplicates)', async () => {
    const rnd = mulberry32(77)
    const inputs: string[] = []
    for (let i = 0; i < 100_000; i++) {
      const roll = rnd()
      if (roll < 0.5) inputs.push(messyPhone(present[Math.floor(rnd() * present.length)]!, rnd))
      else if (roll < 0.9) inputs.push(messyPhone('+905' + String(Math.floor(rnd() * 1e9)).padStart(9, '0'), rnd))
      else if (roll < 0.95) inputs.push(['abc', '+90532', '12', 'x@y.com'][Math.floor(rnd() * 4)]!)
      else inputs.push(inputs[Math.floor(rnd() * Math.max(1, inputs.length))] ?? 'abc') // an exact repeat
    }
    const csv = inputs.map(s => (/[",]/.test(s) || s.startsWith(' ') ? `"${s}"` : s)).join('\n') + '\n'
    const jobId = await upload(csv)
    const job = await finished(jobId)
    expect(job.state).toBe('done')
    expect(job.totals.read).toBe(100_000)
    const rows = await resultRows(jobId)
    expect(rows).toHaveLength(100_000)

    // The same recipients through /v1/check, in batches of 1000.
    const expected: { allowed: boolean, reason: string, normalized: string | null }[] = []
    for (let s = 0; s < inputs.length; s += 1000) {
      const res = await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients: inputs.slice(s, s + 1000) })
      for (const r of res) expected.push({ allowed: r.allowed, reason: r.reason, normalized: r.normalized })
    }
    const firstLineOf = new Map<string, number>()
    const differences: string[] = []
    rows.forEach((row, i) => {
      const [, normalized, allowed, reason, line, duplicateOf] = row as [string, string, string, string, string, string]
      const e = expected[i]!
      if (Number(line) !== i + 1) differences.push(`row ${i}: line ${line}`)
      if (normalized !== (e.normalized ?? '')) differences.push(`line ${line}: normalized ${normalized} vs ${e.normalized}`)
      const sendable = e.normalized !== null && e.reason !== 'INVALID_RECIPIENT' // only these take part in duplicate detection
      if (sendable && firstLineOf.has(e.normalized!)) {
        if (reason !== 'DUPLICATE' || Number(duplicateOf) !== firstLineOf.get(e.normalized!) || allowed !== 'false') differences.push(`line ${line}: expected DUPLICATE of ${firstLineOf.get(e.normalized!)}, got ${reason} ${duplicateOf}`)
        return
      }
      if (sendable) firstLineOf.set(e.normalized!, Number(line))
      if (reason !== e.reason || allowed !== String(e.allowed)) differences.push(`line ${line}: scrub ${reason}/${allowed}, check ${e.reason}/${e.allowed}`)
    })
    expect(differences.slice(0, 10)).toEqual([])
    const reasons = new Set(rows.map(r => r[3]))
    for (const r of ['CONSENT', 'REJECTED', 'NO_CONSENT', 'INVALID_RECIPIENT', 'DUPLICATE']) expect(reasons).toContain(r)
    expect(job.totals.duplicates).toBe(rows.filter(r => r[3] === 'DUPLICATE').length)
    expect(job.totals.allowed).toBe(rows.filter(r => r[2] === 'true').length)

    // Filters keep exactly the allowed or the blocked lines.
    const allowed = await resultRows(jobId, '?only=allowed')
    const blocked = await resultRows(jobId, '?only=blocked')
    expect(allowed.length).toBe(job.totals.allowed)
    expect(allowed.every(r => r[2] === 'true')).toBe(true)
    expect(blocked.length + allowed.length).toBe(100_000)
    expect(blocked.every(r => r[2] === 'false')).toBe(true)
  }, 180_000)

  it('reads NDJSON and a CSV header row, reporting malformed lines with their line numbers', async () => {
    const nd = ['"+905009998877"', '{"recipient":"0500 999 88 76"}', '{broken', '42', '{"name":"no recipient"}'].join('\n') + '\n'
    const a = await upload(nd, 'application/x-ndjson')
    expect((await finished(a)).state).toBe('done')
    const rows = await resultRows(a)
    expect(rows.map(r => [r[4], r[3]])).toEqual([['1', 'NO_CONSENT'], ['2', 'NO_CONSENT'], ['3', 'INVALID_RECIPIENT'], ['4', 'INVALID_RECIPIENT'], ['5', 'INVALID_RECIPIENT']])
    const b = await upload('name,recipient\nAli,+905009998877\n"Veli, Jr",0500 999 88 76\n')
    expect((await finished(b)).state).toBe("done")
    const rowsB = await resultRows(b)
    expect(rowsB.map(r => [r[1], r[4]])).toEqual([['+905009998877', '2'], ['+905009998876', '3']])
  })

  it('refuses bad parameters before reading the list', async () => {
    const res = await fetch(`${gw.url}/v1/scrub?brandCode=600001&type=FAX`, { method: 'POST', headers: { 'content-type': 'text/csv', ...gw.auth }, body: 'x\n' })
    expect(res.status).toBe(422)
    expect(((await res.json()) as any).errors[0].code).toBe('H117')
    const res2 = await fetch(`${gw.url}/v1/scrub?${Q}`, { method: 'POST', headers: { 'content-type': 'application/pdf', ...gw.auth }, body: 'x\n' })
    expect(res2.status).toBe(415)
  })

  it('runs a multi-million-line job through the HTTP API', async () => {
    const rnd = mulberry32(5)
    const parts: string[] = []
    for (let i = 0; i < 2_000_000; i++) parts.push(i % 3 === 0 ? present[i % present.length]! : '05' + String(Math.floor(rnd() * 1e9)).padStart(9, '0'))
    const jobId = await upload(parts.join("\n") + "\n")
    const job = await finished(jobId)
    expect(job.state).toBe('done')
    expect(job.totals.read).toBe(2_000_000)
    expect(job.totals.checked).toBe(2_000_000)
    expect(job.totals.allowed + job.totals.blocked).toBe(2_000_000)
    expect(job.resultBytes).toBeGreaterThan(2_000_000 * 30)
  }, 300_000)

  it('serves a finished result after a gateway restart', async () => {
    const jobId = await upload('+905009998877\n05009998876\n')
    expect((await finished(jobId)).state).toBe('done')
    const before = await resultRows(jobId)
    await gw.close()
    gw = await startTestGateway(env)
    expect((await (await fetch(`${gw.url}/v1/scrub/${jobId}`, { headers: gw.auth })).json() as any).state).toBe('done')
    expect(await resultRows(jobId)).toEqual(before)
  })

  it('leaves a failed job with a clear reason, and no result, when the upload breaks off', async () => {
    const { port } = new URL(gw.url)
    await new Promise<void>((resolve) => {
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: `/v1/scrub?${Q}&jobId=broken-upload-1`, headers: { 'content-type': 'text/csv', 'content-length': '1000000', ...gw.auth } })
      req.on('error', () => resolve())
      req.write('+905009998877\n'.repeat(1000), () => setTimeout(() => { req.destroy(); resolve() }, 100))
    })
    let job: any
    await until(async () => { job = await (await fetch(`${gw.url}/v1/scrub/broken-upload-1`, { headers: gw.auth })).json(); return job.state === 'failed' }, 15_000, 'the broken upload to fail')
    expect(job.reason).toMatch(/broke off after \d+ bytes/)
    const res = await fetch(`${gw.url}/v1/scrub/broken-upload-1/result`, { headers: gw.auth })
    expect(res.status).toBe(409)
    expect(existsSync(join(scrubDir, 'broken-upload-1', 'result.csv'))).toBe(false)
  })

  it('deletes finished jobs once their retention has passed', async () => {
    const jobs = new ScrubJobs(join(dir, 'retention'), 1, createLogger('silent'))
    await jobs.init()
    const job = await jobs.create({ brandCode: '1', type: 'MESAJ', recipientType: 'BIREYSEL', commercial: true }, 'csv')
    writeFileSync(jobs.inputPath(job.jobId), 'x\n')
    await jobs.finish(job, 'done')
    expect(await jobs.sweep(Date.now() + 30 * 60_000)).toBe(0)
    expect(await jobs.sweep(Date.now() + 61 * 60_000)).toBe(1)
    expect(existsSync(join(dir, 'retention', job.jobId))).toBe(false)
    expect(jobs.get(job.jobId)).toBeUndefined()
    expect(readFileSync).toBeDefined()
  })
})
