// Bulk scrub over HTTP. The upload is streamed to the job's input file as it arrives (uWS pause/resume follows the
// disk), never held in memory; 202 {jobId} is answered when the upload is complete. The result is streamed back
// from disk with uWS backpressure, optionally filtered to the allowed or the blocked lines.

import { once } from 'node:events'
import { createReadStream, createWriteStream } from 'node:fs'
import type { HttpResponse } from 'uWebSockets.js'
import { GatewayError } from '../domain/errors.js'
import { JOB_ID, type ScrubJobs, type ScrubParams } from '../scrub/jobs.js'
import type { ScrubQueue } from '../scrub/engine.js'
import type { InputFormat } from '../scrub/chunk.js'
import { keyParams } from './params.js'
import { json, type Router } from './router.js'
import { statusLine, type Exchange } from './respond.js'
import { uWS } from './uws.js'

export interface ScrubRouteDeps {
  jobs: ScrubJobs
  queue: ScrubQueue
  maxBytes: number
}

export function parseScrubParams (query: URLSearchParams): ScrubParams {
  const key = keyParams(query)
  const c = query.get('commercial') ?? 'true'
  if (c !== 'true' && c !== 'false') throw new GatewayError('INVALID_FIELD', { location: 'commercial', value: c, message: 'commercial must be true or false.' })
  return { ...key, commercial: c === 'true' }
}

export function scrubRoutes (router: Router, app: uWS.TemplatedApp, deps: ScrubRouteDeps): void {
  const { jobs } = deps

  app.post('/v1/scrub', (res, req) => {
    const ex = router.begin(res)
    const query = new URLSearchParams(req.getQuery() ?? '')
    const contentType = req.getHeader('content-type')
    const declared = req.getHeader('content-length')
    let params: ScrubParams
    let format: InputFormat
    try {
      params = parseScrubParams(query)
      if (contentType.startsWith('application/x-ndjson') || contentType.startsWith('application/ndjson')) format = 'ndjson'
      else if (contentType === '' || contentType.startsWith('text/csv') || contentType.startsWith('text/plain')) format = 'csv'
      else throw new GatewayError('UNSUPPORTED_MEDIA_TYPE', { message: 'Send the list as text/csv or application/x-ndjson.' })
      if (declared !== '' && Number(declared) > deps.maxBytes) throw new GatewayError('BODY_TOO_LARGE', { message: `The list is larger than SCRUB_MAX_BYTES (${deps.maxBytes} bytes).` })
      const id = query.get('jobId')
      if (id !== null && (!JOB_ID.test(id) || jobs.has(id))) throw new GatewayError('INVALID_FIELD', { location: 'jobId', value: id, message: 'jobId must be 1-64 of A-Z a-z 0-9 _ - and not used before.' })
    } catch (err) {
      router.fail(ex, 'scrub', err)
      return
    }
    receiveUpload(router, ex, deps, params, format, query.get('jobId') ?? undefined)
  })

  router.get('/v1/scrub', 'scrub', () => json(200, { jobs: jobs.list() }))

  router.get('/v1/scrub/:jobId', 'scrub', (_, req) => {
    const job = jobs.get(req.params[0]!)
    if (job === undefined) throw new GatewayError('NOT_FOUND', { message: 'No such scrub job (it may have passed its retention).' })
    return json(200, job)
  }, { params: 1 })

  app.get('/v1/scrub/:jobId/result', (res, req) => {
    const ex = router.begin(res)
    const id = req.getParameter(0) ?? ''
    const only = new URLSearchParams(req.getQuery() ?? '').get('only')
    const job = jobs.get(id)
    try {
      if (job === undefined) throw new GatewayError('NOT_FOUND', { message: 'No such scrub job (it may have passed its retention).' })
      if (only !== null && only !== 'allowed' && only !== 'blocked') throw new GatewayError('INVALID_FIELD', { location: 'only', value: only, message: 'only must be allowed or blocked.' })
      if (job.state !== 'done') throw new GatewayError('RESULT_NOT_READY', { message: `The job is ${job.state}${job.reason !== undefined ? ': ' + job.reason : ''}; its result is served only when it is done.` })
    } catch (err) {
      router.fail(ex, 'scrub', err)
      return
    }
    streamResult(ex, jobs.resultPath(id), only as 'allowed' | 'blocked' | null)
      .catch(() => { if (!ex.aborted) ex.res.close() })
      .finally(() => { router.settle(ex) })
  })
}

function receiveUpload (router: Router, ex: Exchange, deps: ScrubRouteDeps, params: ScrubParams, format: InputFormat, jobId: string | undefined): void {
  const { jobs } = deps
  const res = ex.res
  // The job exists from the first byte, so a broken upload leaves a failed job that says why.
  let file: ReturnType<typeof createWriteStream> | null = null
  let job: Awaited<ReturnType<ScrubJobs['create']>> | null = null
  const early: Buffer[] = [] // chunks that arrive before the job folder is ready
  let bytes = 0
  let done = false
  let paused = false

  const failUpload = (reason: string, err?: GatewayError): void => {
    if (done) return
    done = true
    file?.destroy()
    if (job !== null) void jobs.finish(job, 'failed', reason)
    if (err !== undefined) router.fail(ex, 'scrub', err)
  }

  // Replaces the router's abort handler (uWS keeps one), so it settles the exchange itself.
  res.onAborted(() => { ex.aborted = true; router.settle(ex); failUpload(`the upload broke off after ${bytes} bytes`) })

  const write = (chunk: Buffer, isLast: boolean): void => {
    if (done) return
    if (!file!.write(chunk) && !paused && !isLast) {
      paused = true
      res.pause()
      file!.once('drain', () => { if (paused && !done && !ex.aborted) { paused = false; res.resume() } })
    }
    if (isLast) {
      done = true
      // Never leave the socket paused: the answer goes out on it, and keep-alive requests follow on it.
      if (paused && !ex.aborted) { paused = false; res.resume() }
      file!.end()
      once(file!, 'close').then(async () => {
        job!.bytes = bytes
        job!.state = 'queued'
        job!.uploadedAt = new Date().toISOString()
        await jobs.save(job!)
        deps.queue.enqueue(job!)
        router.reply(ex, 'scrub', json(202, { jobId: job!.jobId }))
      }).catch(err => { failUpload(`the upload could not be stored: ${(err as Error).message}`, new GatewayError('H015', { cause: err })) })
    }
  }

  let lastSeen = false
  res.onData((ab, isLast) => {
    if (done) return
    const chunk = Buffer.from(new Uint8Array(ab)) // uWS reuses `ab` after this callback
    bytes += chunk.length
    if (bytes > deps.maxBytes) {
      failUpload(`the list is larger than SCRUB_MAX_BYTES (${deps.maxBytes} bytes)`, new GatewayError('BODY_TOO_LARGE', { message: `The list is larger than SCRUB_MAX_BYTES (${deps.maxBytes} bytes).` }))
      return
    }
    if (file === null) { early.push(chunk); lastSeen = isLast; return }
    write(chunk, isLast)
  })

  jobs.create(params, format, jobId).then(j => {
    job = j
    if (done) { void jobs.finish(j, 'failed', `the upload broke off after ${bytes} bytes`); return }
    file = createWriteStream(jobs.inputPath(j.jobId))
    file.on('error', (err) => { failUpload(`the upload could not be stored: ${err.message}`, new GatewayError('H015', { cause: err })) })
    const pending = early.splice(0)
    pending.forEach((c, i) => { write(c, lastSeen && i === pending.length - 1) })
    if (pending.length === 0 && lastSeen) write(Buffer.alloc(0), true)
  }, err => { failUpload('the job could not be created', new GatewayError('H015', { cause: err })) })
}

/** Streams the result file with backpressure; `only` keeps the allowed or the blocked lines. */
async function streamResult (ex: Exchange, path: string, only: 'allowed' | 'blocked' | null): Promise<void> {
  const res: HttpResponse = ex.res
  res.cork(() => { res.writeStatus(statusLine(200)).writeHeader('Content-Type', 'text/csv; charset=utf-8') })
  const stream = createReadStream(path, { highWaterMark: 256 * 1024 })
  let rest = ''
  let first = true
  for await (const chunk of stream) {
    if (ex.aborted) { stream.destroy(); return }
    let out: string | Buffer
    if (only === null) out = chunk as Buffer
    else {
      const lines = (rest + (chunk as Buffer).toString('utf8')).split('\n')
      rest = lines.pop()!
      let text = ''
      for (const l of lines) {
        if (first) { first = false; text += l + '\n'; continue } // the header
        if (isAllowedRow(l) === (only === 'allowed')) text += l + '\n'
      }
      out = text
    }
    let ok = true
    res.cork(() => { ok = res.write(out) })
    if (!ok) {
      await new Promise<void>(resolve => res.onWritable(() => { resolve(); return true }))
    }
  }
  if (!ex.aborted) res.cork(() => res.end())
}

/** `allowed` is the 4th field from the end (`allowed,reason,line,duplicateOf`); none of those is ever quoted. */
function isAllowedRow (row: string): boolean {
  let p = row.length
  for (let k = 0; k < 4; k++) p = row.lastIndexOf(',', p - 1)
  return row.startsWith('true', p + 1)
}
