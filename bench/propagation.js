// Scenario `propagation` (issue 3): how fast a consent change accepted by one gateway is seen by another.
//
// Two gateway processes on the same Redis and Postgres: A has DATABASE_URL (it serves the İYS-shaped consent API and
// runs the change applier: Postgres ledger → Redis Lua → change stream), B has Redis only (it answers /v1/check from
// its bloom mirror + Redis, like a gateway on another machine). For each of N recipients that hold an ONAY, one
// `RET` is POSTed to A while this process polls B's /v1/check for that recipient, one request at a time, until B
// answers REJECTED. The latency is taken from A's 200 answer (and from the moment the RET was sent) to the arrival of
// B's first REJECTED. The same is done for brand-new keys (a first ONAY for a recipient the data set never had): B
// can only answer CONSENT once the change stream has set the key's bits in its local bloom.
//
// Its resolution is one poll round trip; the baseline is that round trip (a plain /v1/check on B, p50), measured in
// the same run. The bar: p99 under 100 ms (the hard limit is 1 s).
//
// Then the same RETs during a Redis outage (issue 12): a private redis-server is loaded with the data set, two more
// gateways A' and B', both with DATABASE_URL and the local replica, serve from it, the redis-server is killed, and
// each RET written to A' must reach B' through the ledger in Postgres, which B''s replica follows while the change
// stream is silent (filter/mirror.ts).

import { Pool } from 'undici'
import { ensureLoaded } from './load.js'
import { authFor, CLI, fmtInt, fmtNum, freePort, gatewayEnv, killChild, log, percentile, print, query, run, sleep, spawnTracked, startGateway, waitQuiet } from './lib.js'
import { formatIysDate } from '../dist/src/domain/time.js'
import { mulberry32 } from '../dist/src/util/random.js'

const GOAL_P99_MS = 100
const HARD_LIMIT_MS = 1000
const POLL_LIMIT_MS = 3000 // per recipient: past it the sample is a timeout (and the run reports it)
const WARMUP = 10
const PAUSE_MS = 20 // between samples, so each starts with an idle applier and quiet gateways

/** İYS's `YYYY-MM-DD HH:mm:ss`, Turkey time, for a moment in ms (the gateway's own formatter). */
export function iysDate (ms) {
  return formatIysDate(Math.floor(ms / 1000))
}

/** ONAY keys (MESAJ/BIREYSEL) to reject, and recipients no brand has a record for, to give a first ONAY. */
async function pickKeys (ds, n) {
  const onay = await query(ds.url, `
    SELECT brand_code::text AS brand, iys_code::text AS iys, recipient FROM consents
    WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND status = 'ONAY' AND recipient LIKE '+905%'
    ORDER BY random() LIMIT $1`, [n])
  if (onay.length < n) throw new Error(`the data set has only ${onay.length} MESAJ/BIREYSEL ONAY keys, ${n} needed`)
  const brands = [...new Set(onay.map(r => r.brand + '/' + r.iys))].sort()
  const rnd = mulberry32(Date.now() & 0x7fffffff) // fresh each run: a key made "new" by an earlier run must not repeat
  const cand = []
  const seen = new Set()
  while (cand.length < n * 2) {
    const [brand, iys] = brands[cand.length % brands.length].split('/')
    const recipient = '+9054' + String((rnd() * 1e8) | 0).padStart(8, '0')
    if (seen.has(brand + recipient)) continue
    seen.add(brand + recipient)
    cand.push({ brand, iys, recipient })
  }
  const taken = new Set((await query(ds.url, `
    SELECT brand_code::text AS brand, recipient FROM consents
    WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL'
      AND (brand_code, recipient) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))`,
  [cand.map(c => c.brand), cand.map(c => c.recipient)])).map(r => r.brand + r.recipient))
  const fresh = cand.filter(c => !taken.has(c.brand + c.recipient)).slice(0, n)
  if (fresh.length < n) throw new Error('could not find enough recipients without a record')
  return { onay, fresh }
}

/** One kept-alive connection to a gateway, with that gateway's key. */
function client (url) {
  return Object.assign(new Pool(url, { connections: 1, pipelining: 1, keepAliveTimeout: 60_000 }), { auth: authFor(url) })
}

async function post (pool, path, body) {
  const r = await pool.request({ path, method: 'POST', headers: { 'content-type': 'application/json', ...pool.auth }, body, headersTimeout: 10_000, bodyTimeout: 10_000 })
  const text = await r.body.text()
  return { status: r.statusCode, text }
}

async function reasonOf (pool, body) {
  const r = await post(pool, '/v1/check', body)
  if (r.status !== 200) return `HTTP ${r.status}`
  return JSON.parse(r.text).results[0].reason
}

/**
 * One sample: the consent write to A and, from the same moment, a tight poll of B (one request in flight) until B
 * answers `want`. Times are performance.now() ms.
 */
async function sample (a, b, key, status, want, before) {
  const checkBody = JSON.stringify({ brandCode: Number(key.brand), type: 'MESAJ', recipient: key.recipient })
  const pre = await reasonOf(b, checkBody)
  if (pre !== before) return { error: `B answered ${pre} before the write (expected ${before})` }
  const writeBody = JSON.stringify({ recipient: key.recipient, type: 'MESAJ', source: 'HS_WEB', status, consentDate: iysDate(Date.now() - 5000) })
  const t0 = performance.now()
  let answered = NaN
  let write = null
  const pending = post(a, `/sps/${key.iys}/brands/${key.brand}/consents`, writeBody)
    .then(r => { answered = performance.now(); write = r }, err => { answered = performance.now(); write = { status: 0, text: err.message } })
  let polls = 0
  let seen = NaN
  let lastSent = NaN
  while (performance.now() - t0 < POLL_LIMIT_MS) {
    lastSent = performance.now()
    const reason = await reasonOf(b, checkBody)
    polls++
    if (reason === want) { seen = performance.now(); break }
    if (write !== null && write.status !== 200) break
  }
  await pending
  if (write.status !== 200) return { error: `A answered the write with ${write.status}: ${write.text.slice(0, 200)}` }
  if (Number.isNaN(seen)) return { timeout: true, writeMs: answered - t0, polls }
  return { fromAnswer: seen - answered, fromSend: seen - t0, writeMs: answered - t0, pollMs: seen - lastSent, polls }
}

async function series (a, b, keys, status, want, before, label) {
  const out = { fromAnswer: [], fromSend: [], writeMs: [], polls: [], errors: [], timeouts: 0 }
  let done = 0
  for (const key of keys) {
    const r = await sample(a, b, key, status, want, before)
    if (r.error !== undefined) out.errors.push(r.error)
    else if (r.timeout) out.timeouts++
    else {
      out.fromAnswer.push(r.fromAnswer)
      out.fromSend.push(r.fromSend)
      out.writeMs.push(r.writeMs)
      out.polls.push(r.polls)
    }
    if (out.errors.length > Math.max(5, keys.length / 10)) throw new Error(`${label}: too many failed samples, e.g. ${out.errors[0]}`)
    if (++done % 100 === 0) log(`    ${label}: ${done}/${keys.length}`)
    await sleep(PAUSE_MS)
  }
  for (const k of ['fromAnswer', 'fromSend', 'writeMs', 'polls']) out[k].sort((x, y) => x - y)
  return out
}

const stats = (xs) => ({ n: xs.length, p50: percentile(xs, 50), p90: percentile(xs, 90), p99: percentile(xs, 99), max: xs.length > 0 ? xs[xs.length - 1] : NaN, min: xs.length > 0 ? xs[0] : NaN })

/** Round trip of one plain /v1/check on B (same client, same keys), the resolution of every sample above. */
async function checkRoundTrip (b, keys, count) {
  const rtt = []
  for (let i = 0; i < count; i++) {
    const k = keys[i % keys.length]
    const body = JSON.stringify({ brandCode: Number(k.brand), type: 'MESAJ', recipient: k.recipient })
    const t = performance.now()
    await reasonOf(b, body)
    rtt.push(performance.now() - t)
  }
  return stats(rtt.sort((x, y) => x - y))
}

/**
 * The RET series during a Redis outage: a private redis-server loaded with the data set, gateways A' and B' with
 * DATABASE_URL and the replica on it, the redis-server SIGKILLed once both replicas serve, then the series.
 */
async function outageSeries (ctx, ds, keys) {
  const port = await freePort()
  const redisUrl = `redis://127.0.0.1:${port}`
  const redis = spawnTracked('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { label: 'redis (outage)' })
  const A = { child: null }
  const B = { child: null }
  let a = null
  let b = null
  try {
    for (let i = 0; ; i++) {
      const r = await run('redis-cli', ['-p', String(port), 'ping'], { label: 'redis-cli', allowFail: true })
      if (r.code === 0) break
      if (i > 100) throw new Error('the private redis-server for the outage series did not start')
      await sleep(100)
    }
    const env = { REDIS_URL: redisUrl, REDIS_PREFIX: ds.prefix, DATABASE_URL: ds.url }
    log(`[propagation] loading the data set into a private Redis for the outage series`)
    await run(process.execPath, [CLI, 'load'], { env: gatewayEnv(env), label: 'load (outage)', timeoutMs: 600_000 })
    Object.assign(A, await startGateway("gateway A'", { ...env, REPLICA: 'true', AUTO_REBUILD: 'false' }))
    Object.assign(B, await startGateway("gateway B'", { ...env, REPLICA: 'true', AUTO_REBUILD: 'false' }))
    const readyz = async (g) => (await fetch(g.url + '/readyz')).json()
    const wait = async (cond, what) => {
      const deadline = Date.now() + 120_000
      while (!(await cond())) { if (Date.now() > deadline) throw new Error(`outage series: ${what}`); await sleep(200) }
    }
    await wait(async () => (await readyz(A)).replica?.serving === true && (await readyz(B)).replica?.serving === true, 'the replicas did not start serving')
    await killChild(redis, 0)
    await wait(async () => (await readyz(B)).replica?.newsFrom === 'ledger', 'B\'s replica did not start following the ledger')
    a = client(A.url)
    b = client(B.url)
    await series(a, b, keys.slice(0, WARMUP), 'RET', 'REJECTED', 'CONSENT', 'warm-up RET (outage)')
    log(`[propagation] ${keys.length - WARMUP} RETs on A' → REJECTED on B' with Redis down`)
    const out = await series(a, b, keys.slice(WARMUP), 'RET', 'REJECTED', 'CONSENT', 'RET (outage)')
    const r = await readyz(B)
    out.note = `B' /readyz during the series: ${r.reason}, replica newsFrom ${r.replica?.newsFrom}`
    return out
  } finally {
    await a?.close().catch(() => {})
    await b?.close().catch(() => {})
    await Promise.all([A.child, B.child, redis].filter(c => c !== null).map(c => killChild(c)))
  }
}

export async function propagationScenario (ctx) {
  const ds = await ensureLoaded(ctx, 'main')
  const n = ctx.quick ? 50 : 300
  // The second half of the ONAY keys is for the outage series.
  const { onay: allOnay, fresh } = await pickKeys(ds, 2 * (n + WARMUP))
  const onay = allOnay.slice(0, n + WARMUP)
  const outageKeys = allOnay.slice(n + WARMUP)
  fresh.length = n + WARMUP

  const A = await startGateway('gateway A', { REDIS_URL: ctx.redisUrl, REDIS_PREFIX: ds.prefix, DATABASE_URL: ds.url })
  const B = await startGateway('gateway B', { REDIS_URL: ctx.redisUrl, REDIS_PREFIX: ds.prefix })
  const a = client(A.url)
  const b = client(B.url)
  try {
    // Warm-up: JIT on both gateways and this client, the applier's statements, connection pools.
    await series(a, b, onay.slice(0, WARMUP), 'RET', 'REJECTED', 'CONSENT', 'warm-up RET')
    await series(a, b, fresh.slice(0, WARMUP), 'ONAY', 'CONSENT', 'NO_CONSENT', 'warm-up new')
    const base0 = await checkRoundTrip(b, onay.slice(WARMUP), 200)

    await waitQuiet(ctx.quietWaitMs)
    log(`[propagation] ${n} RETs on A → REJECTED on B; then ${n} first ONAYs → CONSENT on B`)
    const ret = await series(a, b, onay.slice(WARMUP), 'RET', 'REJECTED', 'CONSENT', 'RET')
    const nu = await series(a, b, fresh.slice(WARMUP), 'ONAY', 'CONSENT', 'NO_CONSENT', 'new key')
    const base = await checkRoundTrip(b, onay.slice(WARMUP), ctx.quick ? 500 : 2000)

    const outage = await outageSeries(ctx, ds, outageKeys)
    const rows = []
    for (const [name, s, what] of [['propagation', ret, 'RET on A → first REJECTED on B'], ['propagation-new', nu, 'first ONAY of a new key on A → first CONSENT on B'], ['propagation-outage', outage, 'RET on A → first REJECTED on B while Redis is down (both follow the ledger)']]) {
      const fa = stats(s.fromAnswer)
      const fs = stats(s.fromSend)
      const w = stats(s.writeMs)
      const p = stats(s.polls)
      const over = s.fromAnswer.filter(x => x > HARD_LIMIT_MS).length + s.timeouts
      const ratio = base.p50 / fa.p50
      const goal = fa.p99 < GOAL_P99_MS && s.timeouts === 0 ? `met (p99 ${fmtNum(fa.p99)} ms < ${GOAL_P99_MS} ms)` : `NOT met (p99 ${fmtNum(fa.p99)} ms, ${s.timeouts} timeouts)`
      const ours = `p50 ${fmtNum(fa.p50)} ms, p99 ${fmtNum(fa.p99)} ms, max ${fmtNum(fa.max)} ms`
      const baseline = `p50 ${fmtNum(base.p50, 3)} ms (p99 ${fmtNum(base.p99, 3)} ms)`
      const notes = [
        `${fmtInt(fa.n)} samples (${s.errors.length} failed, ${s.timeouts} timed out after ${POLL_LIMIT_MS / 1000} s), measured from A's 200 answer to the arrival of B's first ${name === 'propagation-new' ? 'CONSENT' : 'REJECTED'}`,
        `from sending the write: p50 ${fmtNum(fs.p50)} ms, p99 ${fmtNum(fs.p99)} ms, max ${fmtNum(fs.max)} ms; the write itself (A's answer): p50 ${fmtNum(w.p50)} ms, p99 ${fmtNum(w.p99)} ms`,
        `polls of B per sample: p50 ${fmtInt(p.p50)}, max ${fmtInt(p.max)} (one in flight; resolution one round trip ≈ ${fmtNum(base.p50, 3)} ms)`,
        ...(name === 'propagation-outage' ? [`Redis killed: B' answered from its local replica, which followed the ledger in Postgres (${s.note})`] : []),
        `goal p99 < ${GOAL_P99_MS} ms: ${goal}; over the legal-aim 1 s: ${over}`,
        `ratio = B's plain /v1/check round trip (p50) ÷ propagation p50: how many check round trips a change takes to arrive`,
        `baseline before the series: p50 ${fmtNum(base0.p50, 3)} ms, after: p50 ${fmtNum(base.p50, 3)} ms`
      ]
      if (s.errors.length > 0) notes.push(`WARNING: failed samples, e.g. ${s.errors[0]}`)
      if (s.fromAnswer.length > 0 && s.fromAnswer[0] < 0) notes.push(`B answered before A's answer arrived in ${s.fromAnswer.filter(x => x < 0).length} samples (negative latency from the answer)`)
      print(name, ours, `one /v1/check round trip on B ${baseline}`, ratio, notes)
      rows.push({
        scenario: name,
        status: 'ok',
        measure: `ms, ${what} (two gateways, ${n} keys)`,
        ours: { value: fa.p50, unit: 'ms p50 (lower is better)', text: ours },
        baseline: { label: 'one /v1/check round trip on B', value: base.p50, unit: 'ms p50', text: baseline },
        ratio,
        notes,
        details: { samples: fa.n, failed: s.errors.length, timeouts: s.timeouts, fromAnswer: fa, fromSend: fs, write: w, polls: p, baseline: base, baselineBefore: base0, goalP99Ms: GOAL_P99_MS, goalMet: fa.p99 < GOAL_P99_MS && s.timeouts === 0, overOneSecond: over, errorsExample: s.errors.slice(0, 3) }
      })
    }
    return rows
  } finally {
    await a.close().catch(() => {})
    await b.close().catch(() => {})
    await Promise.all([killChild(A.child), killChild(B.child)])
  }
}
