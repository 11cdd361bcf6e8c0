// Poison and abuse on bulk scrub uploads (issue 8, defects 5, 9d, 9e): a list with no line breaks, two uploads
// racing for one jobId, a full scrub disk, one client opening many uploads at once. The splitter under both scrub
// and import is tested on its own too: its work must grow linearly with the input, whatever the line lengths.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readConsentFile } from '../src/formats/consent-file.js'
import { readLineBatches, type LineBatch } from '../src/formats/csv.js'
import { createLogger } from '../src/log.js'
import { ScrubJobs } from '../src/scrub/jobs.js'
import { seedGenerated } from './helpers/cli.js'
import { authFor, postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const Q = 'brandCode=600001&type=MESAJ'

async function collect (input: AsyncIterable<Buffer | string>, maxLineBytes?: number, stats?: { scanned: number, copied: number }): Promise<{ lines: [number, string][], tooLong: number[] }> {
  const lines: [number, string][] = []
  const tooLong: number[] = []
  for await (const b of readLineBatches(input, { maxLineBytes, stats }) as AsyncGenerator<LineBatch>) {
    b.lines.forEach((l, i) => lines.push([b.numbers[i]!, l]))
    tooLong.push(...b.tooLong)
  }
  return { lines, tooLong }
}

/** The lines of `text` as a plain split would give them (the splitter's reference). */
function reference (text: string, max: number): { lines: [number, string][], tooLong: number[] } {
  const lines: [number, string][] = []
  const tooLong: number[] = []
  const parts = text.split('\n')
  if (parts[parts.length - 1] === '') parts.pop()
  parts.forEach((p, i) => {
    const s = p.endsWith('\r') ? p.slice(0, -1) : p
    if (s.length === 0) return
    if (Buffer.byteLength(s) > max) tooLong.push(i + 1)
    else lines.push([i + 1, s])
  })
  return { lines, tooLong }
}

describe('line splitting (scrub and import)', () => {
  it('splits a 1 MiB line fed in 1 KiB chunks with linear work, reporting it by line number without keeping it', async () => {
    const long = Buffer.alloc(1 << 20, '5')
    const body = Buffer.concat([Buffer.from('+905001112233\n'), long, Buffer.from('\n05001112234\r\n')])
    const chunks: Buffer[] = []
    for (let i = 0; i < body.length; i += 1024) chunks.push(body.subarray(i, i + 1024))
    const stats = { scanned: 0, copied: 0 }
    const got = await collect(Readable.from(chunks), 4096, stats)
    expect(got.lines).toEqual([[1, '+905001112233'], [3, '05001112234']])
    expect(got.tooLong).toEqual([2])
    // Each byte is looked at once (plus at most one byte per chunk where two scans meet): the old splitter re-read
    // the growing remainder on every chunk, about 512 MiB of work for this input.
    expect(stats.scanned).toBeLessThanOrEqual(body.length + chunks.length)
    // The long line is skipped, never gathered: at most the limit (and a '\r') is ever held back.
    expect(stats.copied).toBeLessThanOrEqual(4097 + 64)
  })

  it('gives the same lines as a plain split for any chunking, with CRLF, multi-byte characters and long lines', async () => {
    let seed = 7
    const rnd = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed / 0x7fffffff }
    const pieces = ['+905001112233', 'çğışöü@örnek.com.tr', '', '\r', 'a'.repeat(60), 'ü'.repeat(25), 'x'.repeat(49), '"a,b",c', '€'.repeat(16)]
    for (let round = 0; round < 40; round++) {
      const rows: string[] = []
      for (let i = 0; i < 60; i++) rows.push(pieces[Math.floor(rnd() * pieces.length)]! + (rnd() < 0.3 ? '\r' : ''))
      const text = rows.join('\n') + (rnd() < 0.5 ? '\n' : '')
      const bytes = Buffer.from(text)
      const chunks: Buffer[] = []
      for (let i = 0; i < bytes.length;) { const n = 1 + Math.floor(rnd() * 40); chunks.push(bytes.subarray(i, i + n)); i += n }
      expect(await collect(Readable.from(chunks), 50)).toEqual(reference(text, 50))
    }
  })

  it('reports a too-long line of a consent import by its line number and reads the rows around it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-longline-'))
    try {
      const file = join(dir, 'c.csv')
      const row = (r: string): string => `700001,600001,${r},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-02 10:00:00`
      writeFileSync(file, ['iysCode,brandCode,recipient,recipientType,type,status,source,consentDate', row('+905001112233'), row('5'.repeat(100_000)), row('+905001112234')].join('\n') + '\n')
      const consents: number[] = []
      const rejects: { line: number, code: string, message: string }[] = []
      for await (const b of readConsentFile(file, Math.floor(Date.now() / 1000))) {
        consents.push(...b.lines)
        rejects.push(...b.rejects.map(r => ({ line: r.line, code: r.error.code, message: r.error.message })))
      }
      expect(consents).toEqual([2, 4])
      expect(rejects).toHaveLength(1)
      expect(rejects[0]!.line).toBe(3)
      expect(rejects[0]!.message).toMatch(/longer than 65536 bytes/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('scrub job names', () => {
  it('takes a jobId at once, so that two creations racing for it cannot both succeed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-jobid-'))
    try {
      const jobs = new ScrubJobs(dir, 1, createLogger('silent'))
      await jobs.init()
      const params = { brandCode: '600001', type: 'MESAJ' as const, recipientType: 'BIREYSEL' as const, commercial: true }
      const [a, b] = await Promise.allSettled([jobs.create(params, 'csv', 'race-1'), jobs.create(params, 'csv', 'race-1')])
      expect(a.status).toBe('fulfilled')
      expect(b.status).toBe('rejected')
      expect(jobs.get('race-1')).toBe((a as PromiseFulfilledResult<unknown>).value)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

/** A streamed upload the test controls: headers and chunks go out when asked; the answer is awaited separately. */
function openUpload (base: string, path: string, headers: Record<string, string> = {}): { write: (b: Buffer | string) => Promise<void>, end: () => void, answer: Promise<{ status: number, body: any } | { error: string }> } {
  const { port } = new URL(base)
  const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-type': 'text/csv', ...authFor(base), ...headers } })
  const answer = new Promise<{ status: number, body: any } | { error: string }>((resolve) => {
    req.on('response', (res: IncomingMessage) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { text += d })
      res.on('end', () => { resolve({ status: res.statusCode!, body: text === '' ? null : JSON.parse(text) }) })
      res.on('error', (e) => { resolve({ error: e.message }) })
    })
    req.on('error', (e) => { resolve({ error: e.message }) })
  })
  req.flushHeaders()
  return {
    write: (b) => new Promise<void>((resolve) => { if (req.destroyed) { resolve(); return } req.write(b, () => { resolve() }) }),
    end: () => { req.end() },
    answer
  }
}

describe('scrub uploads under poison input and abuse', () => {
  let services: TestServices
  let gw: RunningGateway
  let limited: RunningGateway
  let scrubDir: string
  let limitedDir: string
  let present: string[]

  beforeAll(async () => {
    services = await testServices({ redis: true, poolSize: 1, dirPrefix: 'iys-scrub-faults-' })
    const { dir } = services
    scrubDir = join(dir, 'jobs')
    limitedDir = join(dir, 'limited')
    const env = { ...services.env, SCRUB_THREADS: '1', SCRUB_CHUNK_LINES: '1000' }
    await seedGenerated(env, join(dir, 'c.csv'), { rows: 2000, brands: 1, retShare: 0.3, seed: 5 })
    present = (await services.pool.query<{ r: string }>("SELECT recipient AS r FROM consents WHERE brand_code = 600001 AND type = 'MESAJ' AND recipient_type = 'BIREYSEL' ORDER BY recipient LIMIT 20")).rows.map(x => x.r)
    gw = await startTestGateway({ ...env, SCRUB_DIR: scrubDir })
    limited = await startTestGateway({ ...env, SCRUB_DIR: limitedDir, SCRUB_MAX_TOTAL_BYTES: String(1 << 20), SCRUB_MAX_UPLOADS_PER_CLIENT: '2' })
  }, 120_000)

  afterAll(async () => {
    await gw?.close()
    await limited?.close()
    await services?.close()
  })

  const jobOf = async (base: string, jobId: string): Promise<any> => (await fetch(`${base}/v1/scrub/${jobId}`, { headers: authFor(base) })).json()
  const finished = async (base: string, jobId: string): Promise<any> => {
    let job: any
    await until(async () => { job = await jobOf(base, jobId); return job.state === 'done' || job.state === 'failed' }, 120_000, 'the scrub job')
    return job
  }
  const resultRows = async (base: string, jobId: string): Promise<string[][]> => {
    const text = await (await fetch(`${base}/v1/scrub/${jobId}/result`, { headers: authFor(base) })).text()
    const lines = text.trimEnd().split('\n')
    expect(lines[0]).toBe('recipient,normalized,allowed,reason,line,duplicateOf')
    return lines.slice(1).map(l => l.split(','))
  }
  const requestsCounted = async (g: RunningGateway, status: number): Promise<number> => {
    const m = (await g.gw.metrics.registry.getSingleMetric('iys_http_requests_total')!.get()).values
    return m.filter(v => v.labels.route === 'scrub' && Number(v.labels.status) === status).reduce((a, v) => a + v.value, 0)
  }

  it('reports a 12 MiB line without line breaks by its line number, scrubs the good lines after it, and keeps answering checks', async () => {
    const good = present.slice(0, 3)
    const after = [present[3]!, '05009998877', present[4]!]
    const up = openUpload(gw.url, `/v1/scrub?${Q}&jobId=no-newline-1`)
    let uploading = true
    let sent = 0
    let answered = 0
    const checks = (async () => {
      while (uploading) {
        sent++
        const r = await postJson(gw.url + '/v1/check', { brandCode: 600001, type: 'MESAJ', recipient: present[0] })
        if (r.status === 200 && r.json.results[0].reason !== undefined) answered++
      }
    })()
    await up.write(good.join('\n') + '\n')
    const block = Buffer.alloc(256 * 1024, '5')
    for (let i = 0; i < 48; i++) await up.write(block) // 12 MiB, no line break
    await up.write('\n' + after.join('\r\n') + '\r\n')
    up.end()
    const answer = await up.answer
    expect(answer).toMatchObject({ status: 202, body: { jobId: 'no-newline-1' } })
    const job = await finished(gw.url, 'no-newline-1')
    uploading = false
    await checks
    expect(job.state).toBe('done')
    expect(job.totals.read).toBe(7)
    expect(job.totals.tooLong).toBe(1)
    expect(job.totals.invalid).toBe(1)
    const rows = await resultRows(gw.url, 'no-newline-1')
    expect(rows.map(r => r[4])).toEqual(['1', '2', '3', '4', '5', '6', '7'])
    // The long line is an error of its own, shown empty (never copied into the result).
    expect(rows[3]).toEqual(['', '', 'false', 'INVALID_RECIPIENT', '4', ''])
    for (const i of [0, 1, 2, 4, 5, 6]) expect(['CONSENT', 'REJECTED', 'NO_CONSENT']).toContain(rows[i]![3])
    expect(rows[4]![1]).toBe(after[0])
    expect(rows[5]![1]).toBe('+905009998877')
    expect(job.resultBytes).toBeLessThan(4096)
    // Checks sent while the list was uploaded and scrubbed were all answered.
    expect(answered).toBe(sent)
    expect(answered).toBeGreaterThan(0)
  }, 120_000)

  it('answers 409 to a second upload naming a jobId that is still uploading, and completes the first', async () => {
    const a = openUpload(gw.url, `/v1/scrub?${Q}&jobId=same-id-1`)
    const b = openUpload(gw.url, `/v1/scrub?${Q}&jobId=same-id-1`)
    await Promise.all([a.write(present[0]! + '\n'), b.write('05009998877\n05009998876\n')])
    const second = await b.answer
    expect(second).toMatchObject({ status: 409, body: { errors: [{ code: 'JOB_EXISTS', location: ['jobId'], value: 'same-id-1' }] } })
    b.end()
    await a.write(present[1]! + '\n')
    a.end()
    expect(await a.answer).toMatchObject({ status: 202, body: { jobId: 'same-id-1' } })
    const job = await finished(gw.url, 'same-id-1')
    expect(job.state).toBe('done')
    expect(job.totals.read).toBe(2)
    expect((await resultRows(gw.url, 'same-id-1')).map(r => r[1])).toEqual([present[0], present[1]])
    // A finished job's id is taken too.
    const again = await fetch(`${gw.url}/v1/scrub?${Q}&jobId=same-id-1`, { method: 'POST', headers: { 'content-type': 'text/csv', ...gw.auth }, body: 'x\n' })
    expect(again.status).toBe(409)
  })

  it('refuses a third concurrent upload from one client with 429, and takes uploads again once one is finished', async () => {
    const a = openUpload(limited.url, `/v1/scrub?${Q}&jobId=cap-a`)
    const b = openUpload(limited.url, `/v1/scrub?${Q}&jobId=cap-b`)
    await a.write(present[0]! + '\n')
    await b.write(present[1]! + '\n')
    await until(async () => (await jobOf(limited.url, 'cap-a')).state === 'uploading' && (await jobOf(limited.url, 'cap-b')).state === 'uploading', 10_000, 'two uploads in progress')
    const c = await fetch(`${limited.url}/v1/scrub?${Q}&jobId=cap-c`, { method: 'POST', headers: { 'content-type': 'text/csv', ...limited.auth }, body: '05009998877\n' })
    expect(c.status).toBe(429)
    expect(((await c.json()) as any).errors[0].code).toBe('TOO_MANY_UPLOADS')
    expect((await fetch(`${limited.url}/v1/scrub/cap-c`, { headers: limited.auth })).status).toBe(404) // refused before any job was made
    a.end()
    expect(await a.answer).toMatchObject({ status: 202 })
    const d = await fetch(`${limited.url}/v1/scrub?${Q}&jobId=cap-d`, { method: 'POST', headers: { 'content-type': 'text/csv', ...limited.auth }, body: '05009998877\n' })
    expect(d.status).toBe(202)
    b.end()
    expect(await b.answer).toMatchObject({ status: 202 })
    for (const id of ['cap-a', 'cap-b', 'cap-d']) expect((await finished(limited.url, id)).state).toBe('done')
  })

  it('refuses an upload that would pass SCRUB_MAX_TOTAL_BYTES with 507 midway, removing its partial file', async () => {
    const before507 = await requestsCounted(limited, 507)
    // No Content-Length (chunked): the quota is only found exceeded while the body arrives.
    const up = openUpload(limited.url, `/v1/scrub?${Q}&jobId=quota-midway`)
    const block = Buffer.from('05009998877\n'.repeat(5000)) // 60,000 bytes
    let answer: { status: number, body: any } | { error: string } | null = null
    void up.answer.then(a => { answer = a })
    for (let i = 0; i < 40 && answer === null; i++) await up.write(block) // up to 2.4 MB against a 1 MiB quota
    up.end()
    const got = await up.answer
    expect(got).toMatchObject({ status: 507, body: { errors: [{ code: 'STORAGE_FULL' }] } })
    const job = await finished(limited.url, 'quota-midway')
    expect(job.state).toBe('failed')
    expect(job.reason).toMatch(/SCRUB_MAX_TOTAL_BYTES/)
    await until(() => !existsSync(join(limitedDir, 'quota-midway', 'input')), 10_000, 'the partial input to be removed')
    // The exchange was answered and counted (so a shutdown does not wait for it).
    expect(await requestsCounted(limited, 507)).toBe(before507 + 1)
    // Its bytes were given back: a list that fits is taken.
    const ok = await fetch(`${limited.url}/v1/scrub?${Q}&jobId=quota-after`, { method: 'POST', headers: { 'content-type': 'text/csv', ...limited.auth }, body: '05009998877\n'.repeat(40_000) }) // 480 kB
    expect(ok.status).toBe(202)
    expect((await finished(limited.url, 'quota-after')).state).toBe('done')
  })

  it('refuses new uploads with 507 while the uploads and results on disk are over SCRUB_MAX_TOTAL_BYTES', async () => {
    // quota-after's input (480 kB) and its result (several times that) are on disk now: over the 1 MiB quota.
    const declared = await fetch(`${limited.url}/v1/scrub?${Q}&jobId=quota-over`, { method: 'POST', headers: { 'content-type': 'text/csv', ...limited.auth }, body: '05009998877\n' })
    expect(declared.status).toBe(507)
    const body = (await declared.json()) as any
    expect(body.errors[0].code).toBe('STORAGE_FULL')
    expect(body.errors[0].message).toMatch(/SCRUB_MAX_TOTAL_BYTES/)
    expect((await fetch(`${limited.url}/v1/scrub/quota-over`, { headers: limited.auth })).status).toBe(404)
  })
})
