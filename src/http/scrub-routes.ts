// Bulk scrub over HTTP. The upload is streamed to the job's input file as it arrives (uWS pause/resume follows the
// disk), never held in memory; 202 {jobId} is answered when the upload is complete. Uploads are bounded three ways:
// one list by SCRUB_MAX_BYTES (413), all jobs' files on disk by SCRUB_MAX_TOTAL_BYTES (507), uploads in progress
// per client by SCRUB_MAX_UPLOADS_PER_CLIENT (429). The result is streamed back from disk with uWS backpressure,
// optionally filtered to the allowed or the blocked lines. A job is its tenant's (scrub/jobs.ts, visibleTo): the
// listing shows a key only the jobs it may see, and another tenant's job (or one for a brand the key may not act
// for) is 403 FORBIDDEN, its result too; a jobId taken by any job is 409 JOB_EXISTS, saying nothing more about a job
// the caller may not see.
// With DATABASE_URL any gateway answers for any job (scrub/shared.ts): the gateway that ran a job serves its result
// from its disk as above; another streams it from Postgres, as its chunks arrive there. A job this gateway does not
// have, while Postgres does not answer, is 503 DATABASE_UNAVAILABLE (it may be another gateway's).

import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs'
import { StringDecoder } from 'node:string_decoder'
import type { HttpResponse } from 'uWebSockets.js'
import { requireBrand, type Principal } from '../auth/principal.js'
import { GatewayError } from '../domain/errors.js'
import { JOB_ID, namesNeedPostgres, visibleTo, type ScrubJobs } from '../scrub/jobs.js'
import type { JobRecord, ScrubParams } from '../scrub/job-record.js'
import { JobTaken } from '../scrub/shared.js'
import type { ScrubQueue } from '../scrub/engine.js'
import type { InputFormat } from '../scrub/chunk.js'
import { keyParams } from './params.js'
import { json, type Router } from './router.js'
import { statusLine, type Exchange } from './respond.js'

export interface ScrubRouteDeps {
  jobs: ScrubJobs
  queue: ScrubQueue
  maxBytes: number
  /** SCRUB_MAX_TOTAL_BYTES: uploads and results of all jobs on disk; no upload is taken past it */
  maxTotalBytes: number
  /** SCRUB_MAX_UPLOADS_PER_CLIENT: uploads in progress at once with one API key */
  maxUploadsPerClient: number
}

export function parseScrubParams (query: URLSearchParams): ScrubParams {
  const key = keyParams(query)
  const c = query.get('commercial') ?? 'true'
  if (c !== 'true' && c !== 'false') throw new GatewayError('INVALID_FIELD', { location: 'commercial', value: c, message: 'commercial must be true or false.' })
  return { ...key, commercial: c === 'true' }
}

/**
 * The job `id` (on any gateway) if `p` may see it: NOT_FOUND when there is none, FORBIDDEN when it is not `p`'s.
 * Rejects with the database's error when the job is not this gateway's and Postgres cannot say (the router's 503).
 */
async function jobFor (jobs: ScrubJobs, id: string, p: Principal): Promise<JobRecord> {
  const job = await jobs.find(id)
  if (job === undefined) throw new GatewayError('NOT_FOUND', { message: 'No such scrub job (it may have passed its retention).' })
  if (!visibleTo(job, p)) throw new GatewayError('FORBIDDEN', { location: 'jobId', value: id, message: 'This API key may not read this scrub job: it belongs to another tenant or brand.' })
  return job
}

/** 409 for a jobId `taken` holds; another tenant's job is not described (that the id is taken is all it learns). */
const jobExists = (jobId: string, taken: JobRecord, p: Principal): GatewayError => new GatewayError('JOB_EXISTS', {
  location: 'jobId',
  value: jobId,
  // Another tenant's job: that the id is taken is all it learns (it must be told something, or it would wait for a
  // job that is not its own).
  message: visibleTo(taken, p)
    ? `A scrub job named ${jobId} exists already (${taken.state}); choose another jobId, or follow that job with GET /v1/scrub/${jobId}.`
    : `A scrub job named ${jobId} exists already; choose another jobId.`
})

/** Chunks of an upload held in memory while its job is being created; past this the socket is paused. */
const EARLY_MAX_BYTES = 1 << 20

const tooLarge = (deps: ScrubRouteDeps): GatewayError =>
  new GatewayError('BODY_TOO_LARGE', { message: `The list is larger than SCRUB_MAX_BYTES (${deps.maxBytes} bytes).` })
const storageFull = (deps: ScrubRouteDeps): GatewayError => new GatewayError('STORAGE_FULL', {
  message: `The scrub jobs on this gateway would use more than SCRUB_MAX_TOTAL_BYTES (${deps.maxTotalBytes} bytes) of disk for uploads and results (${deps.jobs.usedBytes} in use); send the list again once finished jobs have passed their retention, or send a smaller one.`
})

export function scrubRoutes (router: Router, deps: ScrubRouteDeps): void {
  const { jobs } = deps
  /** uploads in progress per API key (not per address: behind a balancer every tenant would share one count) */
  const uploading = new Map<string, number>()

  // Streamed both ways, so these two are exchange handlers: the router has opened the exchange and refused
  // draining and bad framing already; a throw here is its 500.
  const SCRUB = { auth: { scopes: ['scrub'] } } as const
  router.handle('post', '/v1/scrub', 'scrub', (ex, req, principal) => {
    const client = principal.keyId
    const query = new URLSearchParams(req.getQuery() ?? '')
    const contentType = req.getHeader('content-type')
    const declared = req.getHeader('content-length')
    const jobId = query.get('jobId')
    let params: ScrubParams
    let format: InputFormat
    try {
      params = parseScrubParams(query)
      requireBrand(principal, params.brandCode, null, false)
      if (contentType.startsWith('application/x-ndjson') || contentType.startsWith('application/ndjson')) format = 'ndjson'
      else if (contentType === '' || contentType.startsWith('text/csv') || contentType.startsWith('text/plain')) format = 'csv'
      else throw new GatewayError('UNSUPPORTED_MEDIA_TYPE', { message: 'Send the list as text/csv or application/x-ndjson.' })
      if (declared !== '' && Number(declared) > deps.maxBytes) throw tooLarge(deps)
      if (jobId !== null && !JOB_ID.test(jobId)) throw new GatewayError('INVALID_FIELD', { location: 'jobId', value: jobId, message: 'jobId must be 1-64 of A-Z a-z 0-9 _ -.' })
      // A jobId this gateway holds is refused here, before the body; one another gateway holds, when its claim in
      // Postgres fails (jobs.create), as soon as Postgres says so.
      const taken = jobId === null ? undefined : jobs.get(jobId)
      if (taken !== undefined) throw jobExists(jobId!, taken, principal)
      if (jobId !== null && jobs.sharedDown) throw namesNeedPostgres()
      const open = uploading.get(client) ?? 0
      if (open >= deps.maxUploadsPerClient) {
        throw new GatewayError('TOO_MANY_UPLOADS', { message: `This API key has ${open} scrub uploads in progress, as many as SCRUB_MAX_UPLOADS_PER_CLIENT allows; send the next one when one of them has finished.` })
      }
      if (jobs.usedBytes + (declared !== '' && Number(declared) > 0 ? Number(declared) : 0) > deps.maxTotalBytes) throw storageFull(deps)
    } catch (err) {
      // The body is not read: the connection closes after the answer rather than take the rest of it.
      router.fail(ex, 'scrub', err, true)
      return
    }
    uploading.set(client, (uploading.get(client) ?? 0) + 1)
    let released = false
    const release = (): void => {
      if (released) return
      released = true
      const n = uploading.get(client)! - 1
      if (n === 0) uploading.delete(client)
      else uploading.set(client, n)
    }
    receiveUpload(router, ex, deps, params, format, jobId ?? randomUUID(), jobId !== null, principal, release)
  }, SCRUB)

  router.get('/v1/scrub', 'scrub', async (_, req) => json(200, { jobs: await jobs.listFor(req.principal) }), SCRUB)

  router.get('/v1/scrub/:jobId', 'scrub', async (_, req) => json(200, await jobFor(jobs, req.params[0]!, req.principal)), { params: 1, ...SCRUB })

  router.handle('get', '/v1/scrub/:jobId/result', 'scrub', async (ex, req, principal) => {
    const id = req.getParameter(0) ?? '' // read before any await: uWS request objects are valid synchronously only
    const only = new URLSearchParams(req.getQuery() ?? '').get('only')
    try {
      const job = await jobFor(jobs, id, principal)
      if (only !== null && only !== 'allowed' && only !== 'blocked') throw new GatewayError('INVALID_FIELD', { location: 'only', value: only, message: 'only must be allowed or blocked.' })
      if (job.state !== 'done') throw new GatewayError('RESULT_NOT_READY', { message: `The job is ${job.state}${job.reason !== undefined ? ': ' + job.reason : ''}; its result is served only when it is done.` })
    } catch (err) {
      router.fail(ex, 'scrub', err)
      return
    }
    if (ex.aborted) return // gone while the job was looked up (the router's abort handler settled it)
    // The gateway that ran the job serves it from its disk (the copy to Postgres waits meanwhile); others from Postgres.
    const local = jobs.hasLocalResult(id)
    if (local) jobs.downloadStarted()
    const source: AsyncIterable<Buffer> = local ? createReadStream(jobs.resultPath(id), { highWaterMark: 256 * 1024 }) : jobs.sharedResult(id)
    streamResult(ex, source, only as 'allowed' | 'blocked' | null, err => { router.fail(ex, 'scrub', err) })
      .catch(() => { if (!ex.aborted) { try { ex.res.close() } catch { /* already closed */ } } })
      .finally(() => { if (local) jobs.downloadEnded(); router.settle(ex) })
  }, SCRUB)
}

/**
 * Streams the body to the job's input file. Every outcome answers and settles the exchange once and calls
 * `release` once: 202 when the file is complete; otherwise the job is failed with the reason, its partial input is
 * deleted (it can never run) and its bytes are given back to SCRUB_MAX_TOTAL_BYTES.
 */
function receiveUpload (router: Router, ex: Exchange, deps: ScrubRouteDeps, params: ScrubParams, format: InputFormat, id: string, named: boolean, principal: Principal, release: () => void): void {
  const { jobs } = deps
  const res = ex.res
  // The job exists from the first byte, so a broken upload leaves a failed job that says why.
  let file: WriteStream | null = null
  let job: JobRecord | null = null
  const early: Buffer[] = [] // chunks that arrive before the job folder is ready (and its id claimed in Postgres)
  let earlyBytes = 0
  let lastSeen = false
  let bytes = 0
  let ended = false // no more data is taken: the last byte arrived, or the upload failed
  let failed: string | null = null
  let paused = false

  const removeInput = (): void => { jobs.removeInput(id).catch(() => {}) }
  const failJob = (j: JobRecord, reason: string): void => { jobs.finish(j, 'failed', reason).catch(() => {}) } // job.json unwritable: failed in memory

  const failUpload = (reason: string, err?: GatewayError): void => {
    if (failed !== null) return
    failed = reason
    ended = true
    release()
    // The rest of the body is not read: the connection closes after the answer.
    if (err !== undefined) router.fail(ex, 'scrub', err, true)
    if (job === null) return // still being created: the creation finishes it
    failJob(job, reason)
    const f = file
    if (f === null || f.closed) removeInput()
    else { f.once('close', removeInput); f.destroy() }
  }

  // Replaces the router's abort handler (uWS keeps one), so it settles the exchange itself. A client that hangs up
  // after its last byte has still sent a whole list: that job goes on.
  res.onAborted(() => {
    ex.aborted = true
    router.settle(ex)
    if (!ended) failUpload(`the upload broke off after ${bytes} bytes`)
  })

  const complete = (): void => {
    ended = true
    // Never leave the socket paused: the answer goes out on it, and keep-alive requests follow on it.
    if (paused && !ex.aborted) { paused = false; res.resume() }
    const f = file!
    f.end()
    once(f, 'close').then(async () => {
      if (failed !== null) return
      job!.bytes = bytes
      job!.state = 'queued'
      job!.uploadedAt = new Date().toISOString()
      await jobs.save(job!)
      release()
      deps.queue.enqueue(job!)
      router.reply(ex, 'scrub', json(202, { jobId: id }))
    }).catch(err => { failUpload(`the upload could not be stored: ${(err as Error).message}`, new GatewayError('H015', { cause: err })) })
  }

  const write = (chunk: Buffer, isLast: boolean): void => {
    if (!file!.write(chunk) && !paused && !isLast) {
      paused = true
      res.pause()
      file!.once('drain', () => { if (paused && !ended && !ex.aborted) { paused = false; res.resume() } })
    }
    if (isLast) complete()
  }

  res.onData((ab, isLast) => {
    if (ended) return
    const n = ab.byteLength
    bytes += n
    if (bytes > deps.maxBytes) {
      failUpload(`the list is larger than SCRUB_MAX_BYTES (${deps.maxBytes} bytes)`, tooLarge(deps))
      return
    }
    if (jobs.usedBytes + n > deps.maxTotalBytes) {
      failUpload(`the scrub jobs would use more than SCRUB_MAX_TOTAL_BYTES (${deps.maxTotalBytes} bytes) of disk`, storageFull(deps))
      return
    }
    jobs.addInputBytes(id, n) // counted from here on (the job's record exists from the call to create)
    const chunk = Buffer.from(new Uint8Array(ab)) // a copy: uWS reuses `ab` after this callback
    if (file === null) {
      early.push(chunk)
      lastSeen = isLast
      earlyBytes += n
      // A creation that waits (Postgres slow to answer the claim) holds the client, not memory.
      if (earlyBytes > EARLY_MAX_BYTES && !paused && !isLast) { paused = true; res.pause() }
      return
    }
    write(chunk, isLast)
  })

  jobs.create(params, format, id, { iysCode: principal.iysCode, keyId: principal.keyId }, { named }).then(j => {
    job = j
    if (failed !== null) { failJob(j, failed); removeInput(); return }
    const f = file = createWriteStream(jobs.inputPath(id))
    f.on('error', (err) => { failUpload(`the upload could not be stored: ${err.message}`, new GatewayError('H015', { cause: err })) })
    const pending = early.splice(0)
    const pausedEarly = paused
    pending.forEach((c, i) => { write(c, lastSeen && i === pending.length - 1) })
    if (pending.length === 0 && lastSeen) write(Buffer.alloc(0), true)
    if (pausedEarly && paused && !ended && !ex.aborted) {
      const resume = (): void => { if (paused && !ended && !ex.aborted) { paused = false; res.resume() } }
      if (f.writableNeedDrain) f.once('drain', resume)
      else resume()
    }
  }, err => {
    // Not created: nothing of it is left (a jobId another gateway holds, or Postgres unable to say whether one does).
    if (err instanceof JobTaken) failUpload(`the jobId ${id} is taken`, jobExists(id, err.record, principal))
    else if (err instanceof GatewayError) failUpload(err.message, err)
    else failUpload('the job could not be created', new GatewayError('H015', { cause: err }))
  })
}

/**
 * Streams a result (the file on this gateway's disk, or its chunks in Postgres) with backpressure; `only` keeps the
 * allowed or the blocked lines. A failure before the first byte is answered by `fail` (an error body); after it, the
 * caller closes the connection (the client sees a cut-off transfer, never a short result that looks whole).
 */
async function streamResult (ex: Exchange, source: AsyncIterable<Buffer>, only: 'allowed' | 'blocked' | null, fail: (err: unknown) => void): Promise<void> {
  const res: HttpResponse = ex.res
  const chunks = source[Symbol.asyncIterator]()
  let next: IteratorResult<Buffer>
  try {
    next = await chunks.next()
  } catch (err) {
    fail(err)
    return
  }
  if (ex.aborted) { await chunks.return?.(); return }
  // Replaces the router's abort handler (uWS keeps one): a client that hangs up while we wait for the socket to
  // drain must end that wait too, or the file stays open and the exchange is never settled.
  let wake: (() => void) | null = null
  res.onAborted(() => { ex.aborted = true; wake?.() })
  res.cork(() => { res.writeStatus(statusLine(200)).writeHeader('Content-Type', 'text/csv; charset=utf-8') })
  const decoder = new StringDecoder('utf8') // a character split between two chunks stays whole
  let rest = ''
  let first = true
  try {
    for (; next.done !== true; next = await chunks.next()) {
      if (ex.aborted) return
      const chunk = next.value
      let out: string | Buffer
      if (only === null) out = chunk
      else {
        const lines = (rest + decoder.write(chunk)).split('\n')
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
      if (!ok && !ex.aborted) {
        await new Promise<void>(resolve => { wake = resolve; res.onWritable(() => { resolve(); return true }) })
        wake = null
      }
    }
  } finally {
    await chunks.return?.() // closes the file, or ends the reads from Postgres
  }
  if (!ex.aborted) res.cork(() => res.end())
}

/** `allowed` is the 4th field from the end (`allowed,reason,line,duplicateOf`); none of those is ever quoted. */
function isAllowedRow (row: string): boolean {
  let p = row.length
  for (let k = 0; k < 4; k++) p = row.lastIndexOf(',', p - 1)
  return row.startsWith('true', p + 1)
}
