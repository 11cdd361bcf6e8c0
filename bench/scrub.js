// Scenario `scrub` (issue 4): a bulk scrub end to end through the HTTP API, its filter step against the
// `bloom-filters` package, and single-check latency with and without a scrub running on the same gateway.
//
// The list (--scrub-lines, default 10M; --quick 500k) is generated here, deterministically: ~50% recipients that
// have a record (80% ONAY, 20% RET), ~47% that have none, ~1% invalid, ~2% repeats of an earlier line; 15% of the
// valid ones written the ways people type numbers. Half the list being present means millions of distinct present
// keys, more than the shared data set holds, so the scenario seeds its own database (iys_bench_<pid>_scrub) with
// exactly the list's present keys (one INSERT … SELECT generate_series: a fixture, not the import being measured)
// and runs `iys-gateway load` into its own Redis prefix. The gateway runs as in production: Redis for the filter, and
// DATABASE_URL set to that database, so a scrub writes its decisions to the decision log (issue 11) while it runs.
//
// 1. End to end: from the first byte of `POST /v1/scrub` to the last byte of `GET /v1/scrub/{id}/result`: lines/s,
//    and the gateway's peak RSS (VmRSS polled every 100 ms during the job, and VmHWM). Every result line is then
//    compared with what the list says it must be (reason per input line).
// 2. Filter step per line (bench/scrub-filter.js, a child process): normalise + hash + our bloom against
//    normalise + bloom-filters' `has`, over the same first lines of the same list, same keys, capacity and fpr.
// 3. /v1/check p99 (wrk, 16 connections) on the same gateway, alone and while scrub jobs of the same list run back
//    to back.

import { closeSync, createReadStream, createWriteStream, openSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs'
import http from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { mulberry32 } from '../dist/src/util/random.js'
import { layout } from '../dist/src/filter/layout.js'
import { readBloom } from '../dist/src/filter/bloom-store.js'
import {
  BENCH_DIR, CLI, cpuSeconds, createDatabase, dbUrl, dropDatabase, fmtInt, fmtNum, gatewayEnv, killChild, log, machineBusySeconds, percentile, postJson, print, procMemory,
  query, run, runHttpLoad, sleep, startGateway, threadCpuSeconds, threadShares, unlinkPrefix, waitQuiet, authFor
} from './lib.js'

export const SCRUB_LINES_MAIN = 10_000_000
export const SCRUB_LINES_QUICK = 500_000
const BRAND = '690001'
const IYS = '790001'
const CHECK_CONNECTIONS = 16
const REASONS = ['CONSENT', 'REJECTED', 'NO_CONSENT', 'INVALID_RECIPIENT', 'DUPLICATE']
const [CONSENT, REJECTED, NO_CONSENT, INVALID, DUPLICATE] = [0, 1, 2, 3, 4]
const INVALID_FORMS = ['0532 12', 'not a phone', 'ali.yilmaz@example.com', '+90 532 123 45 67 89', '12345', '+1 (555) abc']

/**
 * Key i → a distinct +905XXXXXXXXX: 387420489 (3^18) is coprime with 10^9, so i ↦ i·3^18 + c mod 10^9 is a
 * bijection; present keys are 0…P-1 (numbered in order of first appearance), absent keys L, L+1, … (L = lines).
 * The SQL fixture below computes the same numbers (in bigint).
 */
// i·387420489 mod 10^9 computed exactly in doubles: i·387420489 = i·387420·1000 + i·489, and every partial stays far
// below 2^53 for any i this list uses.
const canonical = (i) => '+905' + String(((((i * 387420) % 1e6) * 1000 + i * 489 + 123456789) % 1e9)).padStart(9, '0')
const isRet = (p) => p % 5 === 4

function messy (c, rnd) {
  const n = c.slice(3)
  switch ((rnd() * 7) | 0) {
    case 0: return '0' + n
    case 1: return n
    case 2: return '+90 ' + n.slice(0, 3) + ' ' + n.slice(3, 6) + ' ' + n.slice(6, 8) + ' ' + n.slice(8)
    case 3: return '(0' + n.slice(0, 3) + ') ' + n.slice(3, 6) + ' ' + n.slice(6, 8) + ' ' + n.slice(8)
    case 4: return '0090 ' + n.slice(0, 3) + ' ' + n.slice(3)
    case 5: return '90-' + n.slice(0, 3) + '-' + n.slice(3, 6) + '-' + n.slice(6)
    default: return ' ' + c + ' '
  }
}

/** Writes the list; returns what each line must be decided as, and the counts. (Exported, like scrubOnce, for profiling by hand.) */
export function generateList (file, L, M) {
  const rnd = mulberry32(20260401)
  const expected = new Uint8Array(L)
  const keyOf = new Int32Array(L) // key number of each valid line, -1 for invalid ones
  const counts = { present: 0, absent: 0, invalid: 0, duplicate: 0, messy: 0, ret: 0 }
  let P = 0
  let A = 0
  let presentKeysInM = 0
  let presentLinesInM = 0
  const fd = openSync(file, 'w')
  let buf = []
  try {
    for (let i = 0; i < L; i++) {
      const u = rnd()
      let key = -1
      let line
      if (u < 0.97 || i === 0) {
        if (u < 0.50) {
          key = P++
          expected[i] = isRet(key) ? REJECTED : CONSENT
          counts.present++
          if (isRet(key)) counts.ret++
        } else {
          key = L + A++
          expected[i] = NO_CONSENT
          counts.absent++
        }
      } else if (u < 0.98) {
        line = INVALID_FORMS[(rnd() * INVALID_FORMS.length) | 0]
        // An invalid line is INVALID every time, even an e-mail on the SMS channel that normalises (H464):
        // only recipients that could be sent to take part in duplicate detection.
        expected[i] = INVALID
        counts.invalid++
      } else {
        let j = (rnd() * i) | 0
        while (keyOf[j] < 0) j = (j + 1) % i
        key = keyOf[j]
        expected[i] = DUPLICATE
        counts.duplicate++
      }
      keyOf[i] = key
      if (key >= 0) {
        const c = canonical(key)
        if (rnd() < 0.15) { line = messy(c, rnd); counts.messy++ } else line = c
      }
      if (i < M && key >= 0 && key < L) presentLinesInM++
      if (i === M - 1) presentKeysInM = P
      buf.push(line)
      if (buf.length === 100_000) { writeSync(fd, buf.join('\n') + '\n'); buf = [] }
    }
    if (buf.length > 0) writeSync(fd, buf.join('\n') + '\n')
  } finally { closeSync(fd) }
  if (M >= L) presentKeysInM = P
  return { expected, counts, presentKeys: P, absentKeys: A, presentKeysInM, presentLinesInM, bytes: statSync(file).size }
}

// ---------------------------------------------------------------------------------------------------------------
// The scrub client: upload, progress, result.

function upload (url, file, signal) {
  const size = statSync(file).size
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'content-type': 'text/csv', 'content-length': size, ...authFor(url) }, signal }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', d => { text += d })
      res.on('end', () => resolve({ status: res.statusCode, text }))
      res.on('error', reject)
    })
    req.on('error', reject)
    const src = createReadStream(file, { highWaterMark: 1 << 20 })
    src.on('error', err => { req.destroy(err) })
    src.pipe(req)
  })
}

function download (url, out, signal) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { signal, headers: authFor(url) }, res => {
      if (res.statusCode !== 200) {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', d => { text += d })
        res.on('end', () => reject(new Error(`GET result: HTTP ${res.statusCode} ${text.slice(0, 200)}`)))
        return
      }
      let bytes = 0
      res.on('data', d => { bytes += d.length })
      pipeline(res, createWriteStream(out)).then(() => resolve(bytes), reject)
    })
    req.on('error', reject)
  })
}

/**
 * One job end to end. `progress.current` follows the job's checked lines (polled every 50 ms). Returns the
 * phases in ms and the job's final record.
 */
export async function scrubOnce (gwUrl, file, out, { limitMs, progress = null, onUploaded = null }) {
  const signal = AbortSignal.timeout(limitMs)
  const t0 = performance.now()
  const up = await upload(`${gwUrl}/v1/scrub?brandCode=${BRAND}&type=MESAJ&recipientType=BIREYSEL`, file, signal)
  if (up.status !== 202) throw new Error(`POST /v1/scrub answered ${up.status}: ${up.text.slice(0, 300)}`)
  const { jobId } = JSON.parse(up.text)
  const tUp = performance.now()
  onUploaded?.(jobId)
  let job
  while (true) {
    if (signal.aborted) throw new Error(`scrub job ${jobId} not done after ${limitMs / 1000} s`)
    const res = await fetch(`${gwUrl}/v1/scrub/${jobId}`, { signal, headers: authFor(gwUrl) })
    job = await res.json()
    if (progress !== null) progress.current = job.totals?.checked ?? 0
    if (job.state === 'done') break
    if (job.state === 'failed') throw new Error(`scrub job ${jobId} failed: ${job.reason}`)
    await sleep(50)
  }
  const tDone = performance.now()
  const bytes = await download(`${gwUrl}/v1/scrub/${jobId}/result`, out, signal)
  const tEnd = performance.now()
  if (progress !== null) { progress.base += job.totals.checked; progress.current = 0 }
  return { jobId, job, resultBytes: bytes, uploadMs: tUp - t0, processMs: tDone - tUp, downloadMs: tEnd - tDone, totalMs: tEnd - t0 }
}

/** Compares every result line with the list: reason of input line N must be expected[N-1]. */
async function verifyResult (file, expected) {
  const L = expected.length
  const seen = new Uint8Array(L)
  const got = new Float64Array(REASONS.length + 1)
  let rows = 0
  let wrong = 0
  let example = null
  let rest = ''
  let header = true
  const code = new Map(REASONS.map((r, i) => [r, i]))
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20, encoding: 'latin1' })) {
    const lines = (rest + chunk).split('\n')
    rest = lines.pop()
    for (const l of lines) {
      if (header) { header = false; continue }
      // recipient,normalized,allowed,reason,line,duplicateOf (the last four never quoted)
      const p4 = l.lastIndexOf(',')
      const p3 = l.lastIndexOf(',', p4 - 1)
      const p2 = l.lastIndexOf(',', p3 - 1)
      const lineNo = Number(l.slice(p3 + 1, p4))
      const reason = l.slice(p2 + 1, p3)
      const c = code.get(reason) ?? REASONS.length
      got[c]++
      rows++
      if (!(lineNo >= 1 && lineNo <= L) || seen[lineNo - 1] === 1) { wrong++; example ??= { row: rows, problem: 'bad or repeated line number', text: l.slice(0, 120) }; continue }
      seen[lineNo - 1] = 1
      if (c !== expected[lineNo - 1]) { wrong++; example ??= { line: lineNo, expected: REASONS[expected[lineNo - 1]], got: reason, text: l.slice(0, 120) } }
    }
  }
  const byReason = Object.fromEntries(REASONS.map((r, i) => [r, got[i]]))
  if (got[REASONS.length] > 0) byReason.other = got[REASONS.length]
  return { rows, wrong, missing: L - rows, example, byReason }
}

/** Waits until the gateway's replica serves (built and current: /readyz), or fails the scenario after 2 minutes. */
async function replicaServing (url) {
  const deadline = Date.now() + 120_000
  for (;;) {
    const r = await fetch(url + '/readyz').then(res => res.json()).catch(() => null)
    if (r?.replica?.serving === true) return
    if (Date.now() > deadline) throw new Error(`the scrub gateway's replica did not start serving: ${JSON.stringify(r?.replica)}`)
    await sleep(200)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Single checks for the p99 runs.

function checkBodies (presentKeys, L, absentKeys, count) {
  const rnd = mulberry32(99)
  const bodies = []
  const expected = []
  const retKeys = Math.floor(presentKeys / 5) // keys 4, 9, 14, … are RET
  for (let i = 0; i < count; i++) {
    const slot = i % 5
    let key
    if (slot < 2) { key = (rnd() * presentKeys) | 0; if (isRet(key)) key-- } // ONAY (key 4 → 3, …)
    else if (slot === 2) key = ((rnd() * retKeys) | 0) * 5 + 4 // RET
    else key = L + ((rnd() * absentKeys) | 0) // no record
    const c = canonical(key)
    bodies.push(JSON.stringify({ brandCode: Number(BRAND), type: 'MESAJ', recipient: i % 3 === 0 ? messy(c, rnd) : c }))
    expected.push(key >= L ? 'NO_CONSENT' : isRet(key) ? 'REJECTED' : 'CONSENT')
  }
  return { bodies, expected }
}

async function checkLoad (ctx, url, bodies, label, seconds, warmup, pid) {
  await runHttpLoad({ generator: ctx.generator, url, bodies, connections: CHECK_CONNECTIONS, seconds: warmup, tmpDir: ctx.tmpDir, label: label + '-warmup' })
  const c0 = cpuSeconds(pid)
  const th0 = threadCpuSeconds(pid)
  const m0 = machineBusySeconds()
  const r = await runHttpLoad({ generator: ctx.generator, url, bodies, connections: CHECK_CONNECTIONS, seconds, tmpDir: ctx.tmpDir, label })
  r.serverCpu = (cpuSeconds(pid) - c0) / r.seconds
  r.threads = threadShares(th0, threadCpuSeconds(pid), r.seconds, pid)
  r.machineCpu = (machineBusySeconds() - m0) / r.seconds
  return r
}

const pct = (x) => Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a'
/** "main 98%, node 45%, …": the busiest threads of a process. */
const fmtThreads = (threads) => threads.slice(0, 4).map(t => `${t.name} ${pct(t.share)}`).join(', ')

// ---------------------------------------------------------------------------------------------------------------

const MiB = 1048576

export async function scrubScenario (ctx) {
  const L = ctx.scrubLines
  const M = Math.min(L, ctx.quick ? 200_000 : 1_000_000)
  const timing = ctx.quick ? { seconds: 3, warmup: 1 } : { seconds: 10, warmup: 2 }
  const limitMs = 120_000 + L * 0.1 // a job slower than 10k lines/s is hung: give up
  const label = L >= 1e6 ? `${fmtNum(L / 1e6, L % 1e6 === 0 ? 0 : 1)}M` : `${fmtInt(L / 1e3)}k`

  // --- the list ---------------------------------------------------------------------------------------------------
  const listFile = join(ctx.tmpDir, `scrub-${L}.csv`)
  let t = performance.now()
  const list = generateList(listFile, L, M)
  log(`[scrub] list of ${fmtInt(L)} lines (${fmtNum(list.bytes / MiB, 1)} MiB) written in ${fmtNum((performance.now() - t) / 1000, 1)} s: ` +
    `${fmtInt(list.counts.present)} present (${fmtInt(list.counts.ret)} RET), ${fmtInt(list.counts.absent)} absent, ${fmtInt(list.counts.invalid)} invalid, ${fmtInt(list.counts.duplicate)} repeats, ${fmtInt(list.counts.messy)} typed messily`)

  // --- its consent data: own database and Redis prefix -------------------------------------------------------------
  const db = `iys_bench_${ctx.pid}_scrub`
  const url = dbUrl(ctx.adminUrl, db)
  const prefix = `${ctx.prefix}scrub:`
  ctx.databases.add(db)
  await createDatabase(ctx.adminUrl, db)
  await run(process.execPath, [CLI, 'migrate'], { env: gatewayEnv({ DATABASE_URL: url }), label: 'migrate', timeoutMs: 120_000 })
  t = performance.now()
  log(`[scrub] seeding ${fmtInt(list.presentKeys)} consents (SQL fixture)`)
  await query(url, `
    INSERT INTO consents (brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, seq, transaction_id)
    SELECT ${BRAND}, 'MESAJ', 'BIREYSEL', '+905' || lpad(((i * 387420489 + 123456789) % 1000000000)::text, 9, '0'), ${IYS},
           CASE WHEN i % 5 = 4 THEN 'RET' ELSE 'ONAY' END, 'HS_WEB',
           timestamptz '2024-01-01 12:00:00+03' + (i % 86400) * interval '1 second', i + 1, 'bench-' || i
    FROM generate_series(0::bigint, $1::bigint - 1) AS i`, [list.presentKeys])
  await query(url, "SELECT setval('consent_seq', $1)", [list.presentKeys])
  const seedSeconds = (performance.now() - t) / 1000
  log(`[scrub] loading Postgres → Redis (prefix ${prefix})`)
  const ld = await run(process.execPath, [CLI, 'load'], {
    env: gatewayEnv({ DATABASE_URL: url, REDIS_URL: ctx.redisUrl, REDIS_PREFIX: prefix }), label: 'load', forward: true, timeoutMs: 60_000 + list.presentKeys * 0.2
  })
  const loaded = JSON.parse(ld.stdout.trim().split('\n').pop())

  const jobsDir = join(ctx.tmpDir, 'scrub-jobs')
  // With the database: the scrub's decisions go to its decision log, part of what is measured.
  // BENCH_DECISION_LOG=false runs the same gateway without it, for an A/B of what the decision log costs a scrub.
  const noLog = process.env.BENCH_DECISION_LOG === 'false' ? { DECISION_LOG: 'false' } : {}
  // The scrub workers answer from the gateway's local replica while it is current (issue 12); BENCH_REPLICA=false runs
  // the same gateway the Redis way, for an A/B.
  const replica = process.env.BENCH_REPLICA !== 'false'
  const gw = await startGateway('gateway (scrub)', { REDIS_URL: ctx.redisUrl, REDIS_PREFIX: prefix, SCRUB_DIR: jobsDir, DATABASE_URL: url, REPLICA: String(replica), ...noLog })
  if (replica) await replicaServing(gw.url)
  const resultFile = join(ctx.tmpDir, `scrub-${L}.result.csv`)
  const dropJob = (jobId) => rmSync(join(jobsDir, jobId), { recursive: true, force: true })
  try {
    // --- 1. end to end --------------------------------------------------------------------------------------------
    await waitQuiet(ctx.quietWaitMs)
    const rssBefore = procMemory(gw.child.pid)
    let peakRss = rssBefore.rss
    const sampler = setInterval(() => { const m = procMemory(gw.child.pid); if (m.rss > peakRss) peakRss = m.rss }, 100)
    const cpu0 = cpuSeconds(gw.child.pid)
    const th0 = threadCpuSeconds(gw.child.pid)
    const r0 = ctx.redisPid !== null ? cpuSeconds(ctx.redisPid) : NaN
    const m0 = machineBusySeconds()
    log(`[scrub] end to end: ${fmtInt(L)} lines through POST /v1/scrub → result`)
    // A second Redis client times a tiny GET every millisecond meanwhile: how long Redis itself keeps other
    // clients (every gateway's single checks) waiting while it runs the scrub's lookups.
    const pinger = ctx.redis.duplicate()
    pinger.on('error', () => {})
    const pings = []
    let pinging = true
    const pingLoop = (async () => {
      while (pinging) {
        const s = performance.now()
        try { await pinger.get(layout(prefix).current) } catch { break }
        pings.push(performance.now() - s)
        await sleep(1)
      }
    })()
    let e2e
    try {
      e2e = await scrubOnce(gw.url, listFile, resultFile, { limitMs })
    } finally {
      clearInterval(sampler)
      pinging = false
      await pingLoop
      pinger.disconnect()
    }
    pings.sort((x, y) => x - y)
    const redisWait = { n: pings.length, p50: percentile(pings, 50), p99: percentile(pings, 99), max: pings[pings.length - 1] ?? NaN }
    const gwCpu = (cpuSeconds(gw.child.pid) - cpu0) / (e2e.totalMs / 1000)
    const machineCpu = (machineBusySeconds() - m0) / (e2e.totalMs / 1000)
    const redisCpu = ctx.redisPid !== null ? (cpuSeconds(ctx.redisPid) - r0) / (e2e.totalMs / 1000) : NaN
    const threads = threadShares(th0, threadCpuSeconds(gw.child.pid), e2e.totalMs / 1000, gw.child.pid)
    const servedAfter = replica ? (await fetch(gw.url + '/readyz').then(res => res.json()).catch(() => null))?.replica?.serving === true : false
    const after = procMemory(gw.child.pid)
    peakRss = Math.max(peakRss, after.rss)
    dropJob(e2e.jobId)
    const rate = L / (e2e.totalMs / 1000)
    const check = await verifyResult(resultFile, list.expected)
    rmSync(resultFile, { force: true })
    log(`[scrub] ${fmtInt(rate)} lines/s end to end (upload ${fmtNum(e2e.uploadMs / 1000, 2)} s, processing ${fmtNum(e2e.processMs / 1000, 2)} s, download ${fmtNum(e2e.downloadMs / 1000, 2)} s), peak RSS ${fmtInt(peakRss / MiB)} MiB; result verified: ${check.wrong === 0 && check.missing === 0 ? 'all lines as expected' : `${check.wrong} wrong, ${check.missing} missing`}`)

    // --- 2. the filter step, ours against bloom-filters --------------------------------------------------------------
    const bloomFile = join(ctx.tmpDir, 'scrub-bloom.bin')
    const meta = await ctx.redis.hgetall(layout(prefix).meta(loaded.version))
    const bits = await readBloom(ctx.redis, layout(prefix), loaded.version, Number(meta.blocks))
    if (bits !== null) writeFileSync(bloomFile, bits.bytes())
    await waitQuiet(ctx.quietWaitMs)
    log(`[scrub] filter step over the first ${fmtInt(M)} lines: ours against bloom-filters (in a child process)`)
    const fr = await run(process.execPath, [join(BENCH_DIR, 'scrub-filter.js'), '--file', listFile, '--lines', String(M), '--present', String(list.presentKeysInM),
      '--present-lines', String(list.presentLinesInM), '--brand', BRAND, ...(bits !== null ? ['--bloom-file', bloomFile] : [])],
    { label: 'scrub-filter', timeoutMs: 600_000 })
    const filter = JSON.parse(fr.stdout.trim().split('\n').pop())
    rmSync(bloomFile, { force: true })

    // --- 3. single-check p99, alone and beside scrub jobs -------------------------------------------------------------
    const cb = checkBodies(list.presentKeys, L, list.absentKeys, 400)
    let cwrong = 0
    let cexample = null
    for (let i = 0; i < cb.bodies.length; i++) {
      const r = await postJson(gw.url + '/v1/check', cb.bodies[i])
      const got = r.json?.results?.[0]?.reason ?? `HTTP ${r.status}`
      if (got !== cb.expected[i]) { cwrong++; cexample ??= { body: cb.bodies[i], expected: cb.expected[i], got } }
    }
    await waitQuiet(ctx.quietWaitMs)
    log(`[scrub] /v1/check p99 alone (${CHECK_CONNECTIONS} connections, ${timing.seconds} s)`)
    const alone = await checkLoad(ctx, gw.url + '/v1/check', cb.bodies, 'scrub-check-alone', timing.seconds, timing.warmup, gw.child.pid)

    await waitQuiet(ctx.quietWaitMs)
    log(`[scrub] /v1/check p99 while scrub jobs of the ${label} list run back to back`)
    const progress = { base: 0, current: 0 }
    let stop = false
    let jobsRun = 0
    let loopError = null
    let firstUploaded
    const uploaded = new Promise(resolve => { firstUploaded = resolve })
    const loop = (async () => {
      while (!stop) {
        const r = await scrubOnce(gw.url, listFile, '/dev/null', { limitMs, progress, onUploaded: firstUploaded })
        dropJob(r.jobId)
        jobsRun++
      }
    })().catch(err => { loopError = err; firstUploaded() })
    await uploaded // from here the job is being processed (the upload was part of the load too)
    if (loopError !== null) throw loopError
    const lines0 = progress.base + progress.current
    const t0 = performance.now()
    const busy = await checkLoad(ctx, gw.url + '/v1/check', cb.bodies, 'scrub-check-busy', timing.seconds, timing.warmup, gw.child.pid)
    const lines1 = progress.base + progress.current
    const busySeconds = (performance.now() - t0) / 1000
    stop = true
    await loop
    if (loopError !== null) throw loopError
    const concurrentRate = (lines1 - lines0) / busySeconds

    // --- figures -------------------------------------------------------------------------------------------------------
    const baseRate = 1e9 / filter.baseline.nsPerLine
    const okList = check.wrong === 0 && check.missing === 0
    const ours = `${fmtInt(rate)} lines/s (${fmtNum(e2e.totalMs / 1000, 1)} s), peak RSS ${fmtInt(peakRss / MiB)} MiB`
    const notes = [
      `${fmtInt(L)} lines (${fmtNum(list.bytes / MiB, 1)} MiB): ${fmtInt(list.counts.present)} with a record (${fmtInt(list.counts.ret)} RET), ${fmtInt(list.counts.absent)} without, ${fmtInt(list.counts.invalid)} invalid, ${fmtInt(list.counts.duplicate)} repeats; ${fmtInt(list.counts.messy)} typed messily`,
      `phases: upload ${fmtNum(e2e.uploadMs / 1000, 2)} s (until 202), processing ${fmtNum(e2e.processMs / 1000, 2)} s (job's own rate ${fmtInt(e2e.job.rate)} lines/s), result download ${fmtNum(e2e.downloadMs / 1000, 2)} s (${fmtNum(e2e.resultBytes / MiB, 1)} MiB)`,
      `gateway RSS: ${fmtInt(rssBefore.rss / MiB)} MiB before, peak ${fmtInt(peakRss / MiB)} MiB during (VmRSS every 100 ms), VmHWM ${fmtInt(after.hwm / MiB)} MiB; goal < 1 GiB: ${peakRss < 1024 * MiB ? 'met' : 'NOT met'}`,
      `scrub workers answered from ${replica ? `the gateway's local replica (REPLICA=true; still serving at the end: ${servedAfter ? 'yes' : 'NO'})` : 'Redis (BENCH_REPLICA=false)'}`,
      `goal ≥ 2,000,000 lines/s end to end (issue 12): ${rate >= 2e6 ? 'met' : 'not met'}; CPU (share of one core): gateway ${pct(gwCpu)} (${fmtThreads(threads)}), Redis ${pct(redisCpu)}, machine ${pct(machineCpu)} of 200% (SCRUB_THREADS default: cores − 1)`,
      `Redis round trip of a tiny GET from another client during the job: p50 ${fmtNum(redisWait.p50, 2)} ms, p99 ${fmtNum(redisWait.p99, 2)} ms, max ${fmtNum(redisWait.max, 2)} ms (${fmtInt(redisWait.n)} samples): each chunk's lookup script runs atomically in Redis`,
      `result: ${okList ? `every one of ${fmtInt(check.rows)} lines decided as the list says` : `${check.wrong} WRONG, ${check.missing} missing, e.g. ${JSON.stringify(check.example)}`} (${Object.entries(check.byReason).map(([k, v]) => `${k} ${fmtInt(v)}`).join(', ')})`,
      `baseline: the filter step alone with bloom-filters (normalise + key text + has, one core, in process) over the first ${fmtInt(filter.lines)} lines: the whole pipeline against one step of it`,
      `data: ${fmtInt(list.presentKeys)} consents seeded by SQL in ${fmtNum(seedSeconds, 1)} s, loaded to Redis in ${fmtNum(ld.seconds, 1)} s`
    ]
    print('scrub', ours, `bloom-filters filter step ${fmtInt(baseRate)} lines/s`, rate / baseRate, notes)

    const fOurs = `${fmtNum(filter.ours.nsPerLine, 1)} ns/line`
    const fBase = `${fmtNum(filter.baseline.nsPerLine, 1)} ns/line`
    const fNotes = [
      `${fmtInt(filter.lines)} lines (${fmtInt(filter.validLines)} valid), ${fmtInt(filter.presentKeys)} keys in both filters at fpr ${filter.fpr}: ours ${fmtNum(filter.oursBytes / MiB, 2)} MiB, bloom-filters ${fmtNum(filter.baselineBits / 8 / MiB, 2)} MiB`,
      `normalising alone: ${fmtNum(filter.normalizeOnly.nsPerLine, 1)} ns/line; filter part alone: ours ${fmtNum(filter.ours.nsPerLine - filter.normalizeOnly.nsPerLine, 1)} vs ${fmtNum(filter.baseline.nsPerLine - filter.normalizeOnly.nsPerLine, 1)} ns/line (${fmtNum(filter.filterOnlyRatio, 1)}×)`,
      filter.oursRealFilter !== null ? `ours over the gateway's real filter (${fmtInt(list.presentKeys)} keys, ${fmtNum(filter.realFilterBytes / MiB, 1)} MiB, from Redis): ${fmtNum(filter.oursRealFilter.nsPerLine, 1)} ns/line` : 'the gateway\'s filter could not be read from Redis',
      `measured false-positive rate over the absent lines: ours ${fmtNum(filter.oursFalsePositiveRate * 100, 3)}%, bloom-filters ${fmtNum(filter.baselineFalsePositiveRate * 100, 3)}%` +
        (filter.realFilterFalsePositiveRate !== null ? `, real filter ${fmtNum(filter.realFilterFalsePositiveRate * 100, 3)}%` : ''),
      `ours: median of ${filter.ours.rounds} passes; bloom-filters: one pass (it is ~${fmtInt(filter.ratio)}× slower)`
    ]
    print('scrub-filter', fOurs, `bloom-filters ${fBase}`, filter.ratio, fNotes)

    const pText = (r) => `p99 ${fmtNum(r.p99Ms)} ms (p50 ${fmtNum(r.p50Ms)} ms, ${fmtInt(r.rps)} req/s)`
    const pNotes = [
      `${alone.generator}, ${CHECK_CONNECTIONS} connections, ${timing.seconds} s after a ${timing.warmup} s warm-up, same gateway, same 400 bodies (40% ONAY, 20% RET, 40% absent; a third typed messily)`,
      `during the busy run ${jobsRun} scrub job(s) of the ${label} list ran back to back, scrubbing ${fmtInt(concurrentRate)} lines/s meanwhile`,
      `gateway CPU: ${pct(alone.serverCpu)} alone (${fmtThreads(alone.threads)}), ${pct(busy.serverCpu)} beside the scrub (${fmtThreads(busy.threads)}); machine ${pct(alone.machineCpu)} / ${pct(busy.machineCpu)} of 200%`,
      `ratio = p99 alone ÷ p99 beside the scrub (1× = the scrub costs single checks nothing)`,
      `answers checked before timing: ${400 - cwrong}/400 as the list says`
    ]
    if (cwrong > 0) pNotes.push(`WARNING: ${cwrong} check answers differ, e.g. ${JSON.stringify(cexample)}`)
    for (const [who, r] of [['alone', alone], ['busy', busy]]) if (r.non2xx > 0 || r.errors > 0) pNotes.push(`WARNING: ${who}: ${r.non2xx} non-2xx answers and ${r.errors} socket errors/timeouts`)
    print('scrub-check-p99', `beside a scrub ${pText(busy)}`, `alone ${pText(alone)}`, alone.p99Ms / busy.p99Ms, pNotes)

    return [{
      scenario: 'scrub',
      status: 'ok',
      measure: `lines/s, POST /v1/scrub upload → last result byte (${label} lines)`,
      ours: { value: rate, text: ours },
      baseline: { label: 'bloom-filters filter step alone (1 core)', value: baseRate, text: `${fmtInt(baseRate)} lines/s` },
      ratio: rate / baseRate,
      notes,
      details: {
        lines: L, bytes: list.bytes, counts: list.counts, presentKeys: list.presentKeys, seconds: e2e.totalMs / 1000,
        uploadSeconds: e2e.uploadMs / 1000, processSeconds: e2e.processMs / 1000, downloadSeconds: e2e.downloadMs / 1000, resultBytes: e2e.resultBytes,
        jobRate: e2e.job.rate, jobTotals: e2e.job.totals, peakRssBytes: peakRss, vmHwmBytes: after.hwm, rssBeforeBytes: rssBefore.rss,
        gatewayCpu: gwCpu, gatewayThreads: threads, redisCpu, machineCpu, redisWaitMs: redisWait, verified: check, seedSeconds, loadSeconds: ld.seconds
      }
    }, {
      scenario: 'scrub-filter',
      status: 'ok',
      measure: `ns/line, normalise + hash + bloom per line (${fmtInt(filter.lines)} lines of the list)`,
      ours: { value: 1e9 / filter.ours.nsPerLine, text: fOurs },
      baseline: { label: 'normalise + bloom-filters BloomFilter.has', value: 1e9 / filter.baseline.nsPerLine, text: fBase },
      ratio: filter.ratio,
      notes: fNotes,
      details: filter
    }, {
      scenario: 'scrub-check-p99',
      status: 'ok',
      measure: `p99 of POST /v1/check (1 recipient, ${CHECK_CONNECTIONS} connections) beside a running scrub`,
      ours: { value: busy.p99Ms, unit: 'ms p99', text: pText(busy) },
      baseline: { label: 'same gateway, no scrub running', value: alone.p99Ms, unit: 'ms p99', text: pText(alone) },
      ratio: alone.p99Ms / busy.p99Ms,
      notes: pNotes,
      details: { alone, busy, jobsDuringBusy: jobsRun, concurrentScrubLinesPerSecond: concurrentRate, verifiedWrong: cwrong, redisWaitMsDuringScrub: redisWait }
    }]
  } finally {
    await killChild(gw.child)
    // Millions of decision rows: give Postgres its disk back now rather than at the end of the whole run.
    await dropDatabase(ctx.adminUrl, db).then(() => ctx.databases.delete(db), err => log(`    (could not drop ${db} yet: ${err.message})`))
    rmSync(resultFile, { force: true })
    rmSync(jobsDir, { recursive: true, force: true })
    rmSync(listFile, { force: true })
    // Millions of keys: give Redis its memory back now rather than at the end of the whole run.
    const n = await unlinkPrefix(ctx.redis, prefix).catch(err => { log(`    (Redis clean-up of ${prefix} failed: ${err.message})`); return 0 })
    log(`    (scrub: gateway stopped, ${fmtInt(n)} Redis keys under ${prefix} unlinked)`)
  }
}
