// Scenarios 2 and 3 (`check-single`, `check-batch`): POST /v1/check against a real gateway (serve, Redis mode, over
// the loaded data set), beside a bare uWebSockets.js server that only parses the same bodies (bench/bare-uws.js).
// The gateway answers from its local replica (REPLICA, issue 12): it is kept current by the change stream, whose
// heartbeats come from a change applier, so a second gateway process with the data set's DATABASE_URL runs beside it
// only for that (idle: one pass a second). A third process, the same gateway with REPLICA=false, gives the Redis
// path's figure in the same run.
//
// Bodies are built once from the data set itself: present keys (ONAY and RET) sampled from Postgres, absent keys
// drawn at random and confirmed absent, some written the messy ways people type numbers. Every body is sent once
// and its answers compared with what the data says before any timing, so the figure is for correct work.

import { join } from 'node:path'
import { ensureLoaded } from './load.js'
import { mulberry32 } from '../dist/src/util/random.js'
import {
  BENCH_DIR, CLI, cpuSeconds, fmtInt, fmtNum, freePort, gatewayEnv, killChild, log, machineBusySeconds, postJson, print, query, waitQuiet,
  runHttpLoad, spawnTracked, waitReady
} from './lib.js'

const SINGLE_CONNECTIONS = 64
const BATCH_CONNECTIONS = 8
const BATCH_SIZE = 1000
const EXPECTED = { onay: 'CONSENT', ret: 'REJECTED', absent: 'NO_CONSENT', invalid: 'INVALID_RECIPIENT' }
// BENCH_SERVE_THREADS=N: the two measured gateways (replica and Redis way) serve on N threads (SERVE_THREADS).
const SERVE_THREADS = process.env.BENCH_SERVE_THREADS ?? '1'
const SHARED_CPU_NOTE = 'server, Redis and load generator share the same 2 cores: figures are lower bounds of a dedicated server'

function timing (ctx) {
  return ctx.quick ? { seconds: 3, warmup: 1 } : { seconds: 10, warmup: 2 }
}

// ---------------------------------------------------------------------------------------------------------------
// Servers: started once for both scenarios, stopped by the runner (and killed by its clean-up on any failure).

export async function startServers (ctx) {
  if (ctx.servers !== undefined) return ctx.servers
  const ds = await ensureLoaded(ctx, 'main')

  const gwPort = await freePort()
  // BENCH_CPU_PROF=DIR: the measured gateway writes a V8 CPU profile there when it stops (node --cpu-prof).
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF] : []
  const gw = spawnTracked(process.execPath, [...prof, CLI, 'serve'], {
    env: gatewayEnv({ REDIS_URL: ctx.redisUrl, REDIS_PREFIX: ds.prefix, PORT: String(gwPort), REPLICA: 'true', SERVE_THREADS }), label: 'gateway'
  })
  const gwUrl = `http://127.0.0.1:${gwPort}`
  const gwReady = await waitReady(gwUrl + '/readyz', gw, 30_000)
  const noReplicaPort = await freePort()
  const noReplica = spawnTracked(process.execPath, [CLI, 'serve'], {
    env: gatewayEnv({ REDIS_URL: ctx.redisUrl, REDIS_PREFIX: ds.prefix, PORT: String(noReplicaPort), REPLICA: 'false', SERVE_THREADS }), label: 'gateway (REPLICA=false)'
  })
  const noReplicaUrl = `http://127.0.0.1:${noReplicaPort}`
  await waitReady(noReplicaUrl + '/readyz', noReplica, 30_000)
  // The change applier whose heartbeats keep the replica current (no decision log: it serves no request).
  const applier = spawnTracked(process.execPath, [CLI, 'serve'], {
    env: gatewayEnv({ REDIS_URL: ctx.redisUrl, REDIS_PREFIX: ds.prefix, DATABASE_URL: ds.url, PORT: String(await freePort()), DECISION_LOG: 'false', AUTO_REBUILD: 'false' }), label: 'applier'
  })
  const deadline = Date.now() + 120_000
  const building = Date.now()
  for (;;) {
    const r = await fetch(gwUrl + '/readyz').then(res => res.json()).catch(() => null)
    if (r?.replica?.serving === true) {
      // From the gateway's first ready answer (the version served the Redis way) to its replica answering: the build
      // from Redis, the replay, and the first heartbeat of the applier started meanwhile.
      log(`[check] replica of ${r.replica.keys.toLocaleString('en')} keys (${(r.replica.bytes / 1048576).toFixed(1)} MiB) serving ${((Date.now() - building) / 1000).toFixed(1)} s after the gateway was ready`)
      break
    }
    if (Date.now() > deadline) throw new Error(`the gateway's replica did not start serving: ${JSON.stringify(r?.replica)}`)
    await new Promise(resolve => setTimeout(resolve, 200))
  }

  const barePort = await freePort()
  const bare = spawnTracked(process.execPath, [join(BENCH_DIR, 'bare-uws.js')], { env: { ...process.env, PORT: String(barePort) }, label: 'bare-uws' })
  const bareUrl = `http://127.0.0.1:${barePort}`
  const bareReady = await waitReady(bareUrl + '/readyz', bare, 15_000)

  for (const [name, r] of [['gateway', gwReady], ['bare-uws', bareReady]]) {
    if (r.uws !== 'native') log(`WARNING: ${name} runs on the uWebSockets.js pure-JS fallback (${r.uws}); its figures are not representative`)
  }
  ctx.servers = {
    ds,
    gateway: { child: gw, url: gwUrl + '/v1/check', uws: gwReady.uws },
    noReplica: { child: noReplica, url: noReplicaUrl + '/v1/check' },
    applier,
    bare: { child: bare, url: bareUrl + '/v1/check', uws: bareReady.uws }
  }
  return ctx.servers
}

export async function stopServers (ctx) {
  if (ctx.servers === undefined) return
  await Promise.all([killChild(ctx.servers.gateway.child), killChild(ctx.servers.noReplica.child), killChild(ctx.servers.applier), killChild(ctx.servers.bare.child)])
  ctx.servers = undefined
}

// ---------------------------------------------------------------------------------------------------------------
// Request bodies from the data set.

/** A canonical +905XXXXXXXXX written one of the ways people type it (the gateway must normalise it back). */
function messy (canonical, rnd) {
  const n = canonical.slice(3)
  switch ((rnd() * 4) | 0) {
    case 0: return '0' + n
    case 1: return n
    case 2: return '+90 ' + n.slice(0, 3) + ' ' + n.slice(3, 6) + ' ' + n.slice(6, 8) + ' ' + n.slice(8)
    default: return '(0' + n.slice(0, 3) + ') ' + n.slice(3, 6) + ' ' + n.slice(6, 8) + ' ' + n.slice(8)
  }
}

// Never valid for MESAJ: a short number, letters, an e-mail on the SMS channel, an empty string, too many digits.
const INVALID = ['0532 12', 'not a phone', 'ali.yilmaz@example.com', '', '+90 532 123 45 67 89', '12345']

// samples, singleBodies and batchBodies are exported so the same bodies can be rebuilt for profiling by hand.

/** Per brand: MESAJ/BIREYSEL keys that are ONAY, RET, and absent (checked against the table). */
export async function samples (ctx, ds) {
  if (ctx.samples !== undefined) return ctx.samples
  const per = ctx.quick ? 1000 : 3000
  const rows = await query(ds.url, `
    SELECT brand_code::text AS brand, recipient, status FROM (
      SELECT brand_code, recipient, status, row_number() OVER (PARTITION BY brand_code, status ORDER BY random()) AS rn
      FROM consents WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL'
    ) s WHERE rn <= $1`, [per])
  const byBrand = new Map()
  for (const r of rows) {
    if (!byBrand.has(r.brand)) byBrand.set(r.brand, { onay: [], ret: [], absent: [] })
    byBrand.get(r.brand)[r.status === 'RET' ? 'ret' : 'onay'].push(r.recipient)
  }
  const brands = [...byBrand.keys()].sort()
  if (brands.length === 0) throw new Error('no MESAJ/BIREYSEL consents in the data set')
  const rnd = mulberry32(42)
  const candBrand = []
  const candPhone = []
  for (const b of brands) {
    for (let i = 0; i < per; i++) {
      candBrand.push(b)
      candPhone.push('+905' + String((rnd() * 60) | 0).padStart(2, '0') + String((rnd() * 1e7) | 0).padStart(7, '0'))
    }
  }
  const hits = await query(ds.url, `
    SELECT brand_code::text AS brand, recipient FROM consents
    WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL'
      AND (brand_code, recipient) IN (SELECT * FROM unnest($1::bigint[], $2::text[]))`, [candBrand, candPhone])
  const taken = new Set(hits.map(h => h.brand + h.recipient))
  for (let i = 0; i < candBrand.length; i++) {
    if (!taken.has(candBrand[i] + candPhone[i])) byBrand.get(candBrand[i]).absent.push(candPhone[i])
  }
  for (const [b, s] of byBrand) if (s.onay.length === 0 || s.ret.length === 0) throw new Error(`brand ${b} has no ONAY or no RET sample`)
  ctx.samples = { brands, byBrand }
  return ctx.samples
}

function picker (S) {
  const cursors = new Map()
  return (brand, kind) => {
    const list = S.byBrand.get(brand)[kind]
    const k = brand + kind
    const i = cursors.get(k) ?? 0
    cursors.set(k, i + 1)
    return list[i % list.length]
  }
}

/**
 * What slot `i` of every 100 holds when `present` % of the keys have a record (two ONAY to one RET) and, in a batch,
 * 2 % are invalid (taken from the absent share).
 */
function kindAt (i, present, invalid) {
  const slot = i % 100
  const onay = Math.round(present * 2 / 3)
  return slot < onay ? 'onay' : slot < present ? 'ret' : invalid && slot >= 98 ? 'invalid' : 'absent'
}
const mixText = (present, invalid) => {
  const onay = Math.round(present * 2 / 3)
  return `${onay}% ONAY, ${present - onay}% RET, ${100 - present - (invalid ? 2 : 0)}% absent${invalid ? ', 2% invalid' : ''}`
}

/** Single-recipient bodies (present: % of them with a record); a third of them typed messily. */
export function singleBodies (S, count, present = 50) {
  const rnd = mulberry32(7)
  const pick = picker(S)
  const bodies = []
  const expected = []
  for (let i = 0; i < count; i++) {
    const brand = S.brands[i % S.brands.length]
    const kind = kindAt((i * 37) % 100, present, false) // 37 is prime to 100: every slot, spread over the bodies
    const canonical = pick(brand, kind)
    const recipient = i % 3 === 0 ? messy(canonical, rnd) : canonical
    bodies.push(JSON.stringify({ brandCode: Number(brand), type: 'MESAJ', recipient }))
    expected.push([EXPECTED[kind]])
  }
  return { bodies, expected, mix: `${mixText(present, false)}; 1/3 typed messily` }
}

/** 1000-recipient bodies (present: % with a record; 2 % invalid), shuffled; 10 % of valid ones messy. */
export function batchBodies (S, count, present = 50) {
  const rnd = mulberry32(11)
  const pick = picker(S)
  const bodies = []
  const expected = []
  for (let b = 0; b < count; b++) {
    const brand = S.brands[b % S.brands.length]
    const items = []
    for (let j = 0; j < BATCH_SIZE; j++) {
      const kind = kindAt(j, present, true)
      if (kind === 'invalid') { items.push([INVALID[j % INVALID.length], kind]); continue }
      const canonical = pick(brand, kind)
      items.push([rnd() < 0.1 ? messy(canonical, rnd) : canonical, kind])
    }
    for (let i = items.length - 1; i > 0; i--) {
      const k = (rnd() * (i + 1)) | 0
      const t = items[i]; items[i] = items[k]; items[k] = t
    }
    bodies.push(JSON.stringify({ brandCode: Number(brand), type: 'MESAJ', recipients: items.map(x => x[0]) }))
    expected.push(items.map(x => EXPECTED[x[1]]))
  }
  return { bodies, expected, mix: `${mixText(present, true)}; 10% of valid ones typed messily` }
}

/** Sends every body once and compares each answer's reason with what the data says. */
async function verify (url, bodies, expected) {
  let items = 0
  let wrong = 0
  let example = null
  for (let i = 0; i < bodies.length; i++) {
    const r = await postJson(url, bodies[i])
    const results = r.json?.results
    for (let k = 0; k < expected[i].length; k++) {
      items++
      const got = r.status === 200 && Array.isArray(results) ? results[k]?.reason : `HTTP ${r.status}`
      if (got !== expected[i][k]) {
        wrong++
        example ??= { body: i, item: k, expected: expected[i][k], got, answer: r.text.slice(0, 300) }
      }
    }
  }
  return { items, wrong, example }
}

async function measure (ctx, target, bodies, connections, label) {
  const { seconds, warmup } = timing(ctx)
  const common = { generator: ctx.generator, url: target.url, bodies, connections, tmpDir: ctx.tmpDir }
  const quiet = await waitQuiet(ctx.quietWaitMs)
  await runHttpLoad({ ...common, seconds: warmup, label: `${label}-warmup` }) // JIT, connection pools, caches
  const pid = target.child.pid
  const c0 = cpuSeconds(pid)
  const r0 = ctx.redisPid !== null ? cpuSeconds(ctx.redisPid) : NaN
  const m0 = machineBusySeconds()
  const r = await runHttpLoad({ ...common, seconds, label })
  r.serverCpu = (cpuSeconds(pid) - c0) / r.seconds
  r.redisCpu = ctx.redisPid !== null ? (cpuSeconds(ctx.redisPid) - r0) / r.seconds : NaN
  r.machineCpu = (machineBusySeconds() - m0) / r.seconds
  // Whatever else ran on the machine meanwhile (tests, builds): a figure taken beside a busy neighbour is suspect.
  r.otherCpu = r.machineCpu - r.serverCpu - (Number.isFinite(r.redisCpu) ? r.redisCpu : 0) - r.generatorCpu
  r.quietBefore = quiet
  r.connections = connections
  r.plannedSeconds = seconds
  r.warmupSeconds = warmup
  return r
}

const fmtBytes = (x) => !Number.isFinite(x) ? 'n/a' : x >= 10240 ? `${fmtNum(x / 1024, 1)} KiB` : `${fmtInt(x)} B`
const pct = (x) => Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a'

function loadNotes (g, b, check) {
  const notes = [
    `${g.generator}, ${g.connections} connections, ${g.plannedSeconds} s after a ${g.warmupSeconds} s warm-up`,
    `p99: gateway ${fmtNum(g.p99Ms)} ms, bare ${fmtNum(b.p99Ms)} ms (p50 ${fmtNum(g.p50Ms)} / ${fmtNum(b.p50Ms)} ms)`,
    `answer size incl. headers: gateway ${fmtBytes(g.bytesPerResponse)}, bare ${fmtBytes(b.bytesPerResponse)} (the bare server's answer is a constant)`,
    `CPU (share of one core): gateway ${pct(g.serverCpu)}, Redis ${pct(g.redisCpu)}, bare ${pct(b.serverCpu)}` +
      (Number.isFinite(g.generatorCpu) ? `, wrk ${pct(g.generatorCpu)} / ${pct(b.generatorCpu)}` : ''),
    SHARED_CPU_NOTE,
    `machine busy: ${pct(g.machineCpu)} / ${pct(b.machineCpu)} of one core` +
      (Number.isFinite(g.otherCpu) ? `; other processes ${pct(Math.max(0, g.otherCpu))} / ${pct(Math.max(0, b.otherCpu))}` : ''),
    `answers checked before timing: ${fmtInt(check.items - check.wrong)}/${fmtInt(check.items)} as the data says`
  ]
  for (const [who, r] of [['gateway', g], ['bare', b]]) {
    if (r.otherCpu > 0.15) notes.push(`WARNING: other processes used ${pct(r.otherCpu)} of a core during the ${who} run: its figure is depressed`)
  }
  if (g.generator.startsWith('autocannon')) {
    notes.push('autocannon is itself JavaScript: against the bare server it is probably the limit, which flatters the gateway\'s ratio (install wrk for a fair baseline)')
  } else if (b.generatorCpu > 0.9 * Number(b.generator.match(/\d+/)?.[0] ?? 1)) {
    notes.push(`WARNING: wrk used ${pct(b.generatorCpu)} of a core against the bare server: the generator may be the limit`)
  }
  if (check.wrong > 0) notes.push(`WARNING: ${check.wrong} answers differ from the data, e.g. ${JSON.stringify(check.example)}`)
  for (const [who, r] of [['gateway', g], ['bare', b]]) {
    if (r.non2xx > 0 || r.errors > 0) notes.push(`WARNING: ${who} had ${r.non2xx} non-2xx answers and ${r.errors} socket errors/timeouts`)
  }
  return notes
}

// ---------------------------------------------------------------------------------------------------------------

// One run of a check scenario: verify every body, load the gateway and the bare server alike, compare.
async function checkScenario (ctx, { scenario, bodySet, connections, perRequest, measure: label, text }) {
  const srv = await startServers(ctx)
  const S = await samples(ctx, srv.ds)
  const set = bodySet(S)
  const check = await verify(srv.gateway.url, set.bodies, set.expected)
  const g = await measure(ctx, srv.gateway, set.bodies, connections, `${scenario}-gateway`)
  const b = await measure(ctx, srv.bare, set.bodies, connections, `${scenario}-bare`)
  const redisWay = await measure(ctx, srv.noReplica, set.bodies, connections, `${scenario}-no-replica`)
  const ratio = g.rps / b.rps
  const notes = [
    `answered from the local replica; the same gateway with REPLICA=false (every check through Redis): ${text(redisWay)} = ${fmtNum(redisWay.rps / b.rps, 2)}× of bare`,
    ...loadNotes(g, b, check), `${set.bodies.length} distinct bodies${perRequest > 1 ? ` of ${perRequest} recipients` : ''}: ${set.mix}`]
  print(scenario, text(g), `bare uWS ${text(b)}`, ratio, notes)
  return {
    scenario,
    status: 'ok',
    measure: label,
    ours: { value: g.rps * perRequest, text: text(g) },
    baseline: { label: 'bare uWS (JSON.parse + constant answer)', value: b.rps * perRequest, text: text(b) },
    ratio,
    notes,
    details: { generator: g.generator, gateway: g, bare: b, noReplica: redisWay, noReplicaRatio: redisWay.rps / b.rps, p99Ratio: g.p99Ms / b.p99Ms, verified: check, bodies: set.bodies.length, mix: set.mix, rows: srv.ds.rows }
  }
}

export function checkSingleScenario (ctx) {
  return checkScenario(ctx, {
    scenario: 'check-single',
    bodySet: (S) => singleBodies(S, ctx.quick ? 200 : 400, ctx.present),
    connections: SINGLE_CONNECTIONS,
    perRequest: 1,
    measure: `req/s, POST /v1/check, 1 recipient, ${SINGLE_CONNECTIONS} connections`,
    text: (r) => `${fmtInt(r.rps)} req/s, p99 ${fmtNum(r.p99Ms)} ms`
  })
}

export function checkBatchScenario (ctx) {
  return checkScenario(ctx, {
    scenario: 'check-batch',
    bodySet: (S) => batchBodies(S, ctx.quick ? 8 : 32, ctx.present),
    connections: BATCH_CONNECTIONS,
    perRequest: BATCH_SIZE,
    measure: `recipients/s, POST /v1/check, ${BATCH_SIZE} recipients, ${BATCH_CONNECTIONS} connections`,
    text: (r) => `${fmtInt(r.rps * BATCH_SIZE)} recipients/s (${fmtNum(r.rps, 1)} req/s, p99 ${fmtNum(r.p99Ms)} ms)`
  })
}
