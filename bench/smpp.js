// Scenario `smpp` (issue 13): submit_sm per second through the gateway's SMPP front end to the fake operator SMSC,
// against the same ESME load straight to the fake SMSC: same binds, same window, same duration, same run.
//
//   ESME (node-smpp client) ──submit_sm──▶ gateway SMPP_PORT ──decision, log, receipt owner──▶ fake SMSC   (measured)
//   ESME (node-smpp client) ──submit_sm──▶ fake SMSC                                                        (baseline)
//
// Three processes besides the runner, so that no two measured parties share an event loop: the load generator (this
// file run as `node bench/smpp.js --worker JSON`: BINDS bind_transceiver sessions, each keeping WINDOW submit_sm
// outstanding, per-PDU latency submit → submit_sm_resp, statuses counted), the gateway (`iys-gateway serve` with
// SMPP_PORT, Redis, Postgres for its decision log and UPSTREAM_MESAJ_URL=smpp://… with the same binds and window),
// and the fake SMSC (`node dist/src/dev/fake-smsc.js`, whose counters are read from the line it prints each second).
//
// The data set is the scenario's own: RECIPIENTS numbers +90532… with an ONAY for brand 600001 (MESAJ, BIREYSEL),
// in its own database (iys_bench_<pid>_smpp) and Redis prefix (bench:<pid>:smpp:), removed with the run's. The ESME
// binds with the SMPP credentials of a key made by `iys-gateway keys create --smpp-system-id` (default brand 600001,
// so every submit_sm is checked, allowed and forwarded). At the end the SMSC's accepted count is compared with the
// ESME's status-0 answers and the gateway's own count of them: every answer must have reached the operator.
//
// BENCH_CPU_PROF=DIR: the gateway runs with --cpu-prof and its profile's top self-time functions are printed.
// By hand: node bench/smpp.js --profile FILE.cpuprofile [N] summarises any V8 CPU profile the same way.

import { createRequire } from 'node:module'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  CLI, ROOT, cpuSample, cpuShares, createDatabase, dbUrl, fmtInt, fmtNum, fmtPct, fmtRatio, freePort, frontEndTiming, gatewayEnv,
  gatewayMetrics, killChild, log, metricSum, newProfiles, percentile, print, run, sleep, spawnTracked, waitOutput, waitQuiet,
  waitReady, workerResult
} from './lib.js'

const SELF = fileURLToPath(import.meta.url)
export const BINDS = 4
export const WINDOW = 64
const RECIPIENTS = 10_000
const IYS_CODE = '700001'
const BRAND = '600001'
const SYSTEM_ID = 'bench1'
const SMSC_ID = 'smsc-test'
const SMSC_PASSWORD = 'secret'
const SENDER = 'ACME'
const TEXT = 'Bu hafta tum urunlerde indirim. Iptal icin RET yazip 3338e gonderin.'
const GOAL_RATIO = 0.85
const GOAL_RATE = 15_000
/** A run during which processes outside the scenario used more than this share of a core is measured again… */
const NEIGHBOUR_MAX = 0.25
/** …up to this many attempts in all (the quietest is reported). */
const ATTEMPTS = 3
const FAKE_SMSC = join(ROOT, 'dist', 'src', 'dev', 'fake-smsc.js')

/** The data set's recipients as the ESME addresses them (TON 1 international): 905321000000, 905321000001… */
const recipientList = (n) => Array.from({ length: n }, (_, i) => `90532${String(1_000_000 + i)}`)

const pct = fmtPct

// ---------------------------------------------------------------------------------------------------------------
// The data set: its own database and Redis prefix, RECIPIENTS ONAY records, and the ESME's SMPP credentials.

async function smppDataset (ctx) {
  if (ctx.smppData !== undefined) return ctx.smppData
  const db = `iys_bench_${ctx.pid}_smpp`
  const url = dbUrl(ctx.adminUrl, db)
  const prefix = `${ctx.prefix}smpp:`
  ctx.databases.add(db) // registered before creation so that a failure half-way still drops it
  await createDatabase(ctx.adminUrl, db)
  const env = gatewayEnv({ DATABASE_URL: url })
  // keys create migrates first, and creates tenant 700001 with brand 600001.
  const k = await run(process.execPath, [CLI, 'keys', 'create', '--iys-code', IYS_CODE, '--brand-codes', BRAND, '--scopes', 'send', '--rate', '0',
    '--name', 'bench-smpp', '--smpp-system-id', SYSTEM_ID, '--smpp-brand-code', BRAND], { env, label: 'keys create', timeoutMs: 120_000 })
  const key = JSON.parse(k.stdout.trim().split('\n').pop())
  if (typeof key.smppPassword !== 'string') throw new Error(`keys create printed no smppPassword: ${k.stdout.slice(0, 300)}`)

  const recipients = recipientList(RECIPIENTS)
  const file = join(ctx.tmpDir, 'smpp-consents.csv')
  writeFileSync(file, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
    recipients.map(r => `${IYS_CODE},${BRAND},+${r},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join(''))
  const imp = await run(process.execPath, [CLI, 'import', file, '--rejects', join(ctx.tmpDir, 'smpp-rejects.csv')], { env, label: 'import (smpp)', timeoutMs: 120_000 })
  const imported = JSON.parse(imp.stdout.trim().split('\n').pop())
  const ld = await run(process.execPath, [CLI, 'load'], { env: gatewayEnv({ DATABASE_URL: url, REDIS_URL: ctx.redisUrl, REDIS_PREFIX: prefix }), label: 'load (smpp)', timeoutMs: 120_000 })
  const loaded = JSON.parse(ld.stdout.trim().split('\n').pop())
  log(`[smpp] data set: ${fmtInt(RECIPIENTS)} ONAY recipients for brand ${BRAND} in ${db}, Redis ${prefix} (import ${JSON.stringify(imported)}; load ${fmtInt(loaded.rows)} rows)`)
  ctx.smppData = { db, url, prefix, recipients: RECIPIENTS, password: key.smppPassword }
  return ctx.smppData
}

// ---------------------------------------------------------------------------------------------------------------
// The fake SMSC in its own process: its counters come from the line it prints each second while they change.

const STATS_LINE = /bound=(\d+) binds=(\d+) refused_binds=(\d+) submits=(\d+) accepted=(\d+) refused=(\d+) unanswered=(\d+)/g

function smscStatsNow (child) {
  let last = null
  for (const m of child.stdoutText.matchAll(STATS_LINE)) last = m
  if (last === null) return { bound: 0, submits: 0, accepted: 0, refused: 0, unanswered: 0 }
  return { bound: Number(last[1]), submits: Number(last[4]), accepted: Number(last[5]), refused: Number(last[6]), unanswered: Number(last[7]) }
}

/** The SMSC's counters once they have stopped moving (it prints at most a line a second). */
async function smscSettled (child, maxMs = 15_000) {
  const deadline = Date.now() + maxMs
  let a = smscStatsNow(child)
  for (;;) {
    await sleep(1300)
    const b = smscStatsNow(child)
    if ((b.submits === a.submits && b.accepted === a.accepted && b.unanswered === 0) || Date.now() > deadline) return b
    a = b
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One load-generator run in its own process; the runner samples CPU at the worker's phase markers.

async function runEsme (ctx, { label, port, systemId, password, warmup = 0, seconds = 0, count = null, recipients, pids = {} }) {
  const cfg = { host: '127.0.0.1', port, systemId, binds: BINDS, window: WINDOW, warmup, seconds, count, recipients, sender: SENDER, text: TEXT }
  const child = spawnTracked(process.execPath, [SELF, '--worker', JSON.stringify(cfg)], { env: { ...process.env, BENCH_SMPP_PASSWORD: password }, label })
  const procs = { ...pids, esme: child.pid, redis: ctx.redisPid }
  const at = {}
  const r = await workerResult(child, label, warmup + seconds + 90, phase => { at[phase] = cpuSample(procs) })
  if (at.measure !== undefined && at.end !== undefined) {
    const { cpu, gatewayThreads } = cpuShares(at.measure, at.end, pids.gateway)
    r.cpu = cpu
    r.gatewayThreads = gatewayThreads
  }
  return r
}

// ---------------------------------------------------------------------------------------------------------------

async function gatewayCounters (url, child) {
  const text = await gatewayMetrics(url, child)
  return {
    ok: metricSum(text, 'iys_smpp_pdus_total', { command: 'submit_sm', status: 'ok' }),
    answered: metricSum(text, 'iys_smpp_pdus_total', { command: 'submit_sm' }),
    upstream: metricSum(text, 'iys_upstream_messages_total', { type: 'MESAJ' })
  }
}

export async function smppScenario (ctx) {
  const T = frontEndTiming(ctx)
  const ds = await smppDataset(ctx)

  const smscPort = await freePort()
  const smsc = spawnTracked(process.execPath, [FAKE_SMSC, '--port', String(smscPort), '--system-id', SMSC_ID, '--password', SMSC_PASSWORD], { env: gatewayEnv({}), label: 'fake-smsc' })
  let gw = null
  const profDir = process.env.BENCH_CPU_PROF || null
  const profBefore = new Set(profDir !== null && existsSync(profDir) ? readdirSync(profDir) : [])
  try {
    await waitOutput(smsc, /fake SMSC listening/, 15_000)

    // --- the gateway: SMPP front end, Redis, the decision log in Postgres, the SMPP carrier to the fake SMSC ----------
    const httpPort = await freePort()
    const smppPort = await freePort()
    const vars = {
      REDIS_URL: ctx.redisUrl,
      REDIS_PREFIX: ds.prefix,
      DATABASE_URL: ds.url,
      PORT: String(httpPort),
      SMPP_PORT: String(smppPort),
      SMPP_WINDOW: String(WINDOW),
      SMPP_MAX_BINDS: String(Math.max(8, BINDS)),
      UPSTREAM_MESAJ_URL: `smpp://${SMSC_ID}:${SMSC_PASSWORD}@127.0.0.1:${smscPort}?binds=${BINDS}&window=${WINDOW}`
    }
    const env = gatewayEnv(vars)
    // The gateway refuses unknown variables of its namespaces: nothing of the caller's shell in SMPP_/REPLICA_/… but ours.
    for (const k of Object.keys(env)) if (/^(SMPP_|REPLICA|SERVE_|AUTO_)/.test(k) && !(k in vars)) delete env[k]
    const prof = profDir !== null ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []
    gw = spawnTracked(process.execPath, [...prof, CLI, 'serve'], { env, label: 'gateway (smpp)' })
    const gwPid = gw.pid
    const gwUrl = `http://127.0.0.1:${httpPort}`
    const ready = await waitReady(gwUrl + '/readyz', gw, 60_000)
    log(`[smpp] gateway ready (SMPP ${smppPort}, HTTP ${httpPort}${ready?.replica !== undefined ? `, replica serving ${ready.replica.serving}` : ''}); fake SMSC on ${smscPort}`)

    // --- answers checked before timing: every submit_sm is accepted with an id, both ways -----------------------------
    const gwTarget = { port: smppPort, systemId: SYSTEM_ID, password: ds.password }
    const directTarget = { port: smscPort, systemId: SMSC_ID, password: SMSC_PASSWORD }
    for (const [who, t] of [['gateway', gwTarget], ['direct', directTarget]]) {
      const p = await runEsme(ctx, { label: `esme probe ${who}`, ...t, count: 200, recipients: ds.recipients })
      const bad = Object.entries(p.total.statuses).filter(([s]) => s !== 'ESME_ROK')
      if (bad.length > 0 || p.total.ok !== 200) throw new Error(`probe ${who}: not every submit_sm accepted: ${JSON.stringify(p.total)}`)
    }

    // A shared machine: a run beside a busy neighbour (more than NEIGHBOUR_MAX of a core used by processes outside
    // this scenario) is repeated, at most ATTEMPTS times in all, and the quietest attempt is reported. Every attempt
    // is checked: the ESME's status-0 answers, the gateway's count of them and the SMSC's accepted count must agree.
    const quietest = async (label, once) => {
      const attempts = []
      for (;;) {
        await waitQuiet(ctx.quietWaitMs)
        const a = await once()
        attempts.push(a)
        const others = a.r.cpu?.others ?? 0
        if (!(others > NEIGHBOUR_MAX) || attempts.length >= ATTEMPTS) break
        log(`    (smpp ${label}: ${pct(others)} of a core went to other processes during the run; measuring again)`)
      }
      const best = attempts.reduce((x, y) => ((y.r.cpu?.others ?? 0) < (x.r.cpu?.others ?? 0) ? y : x))
      return { ...best, attempts: attempts.length, consistent: attempts.every(a => a.consistent), all: attempts.map(a => ({ okPerSecond: a.r.measured.okPerSecond, others: a.r.cpu?.others, consistent: a.consistent })) }
    }

    // --- through the gateway ------------------------------------------------------------------------------------------
    const G = await quietest('gateway', async () => {
      const sm0 = await smscSettled(smsc)
      const gc0 = await gatewayCounters(gwUrl, gw)
      const r = await runEsme(ctx, { label: 'esme gateway', ...gwTarget, warmup: T.warmup, seconds: T.seconds, recipients: ds.recipients, pids: { gateway: gw.pid, smsc: smsc.pid } })
      const sm1 = await smscSettled(smsc)
      const gc1 = await gatewayCounters(gwUrl, gw)
      const accepted = sm1.accepted - sm0.accepted
      const okMetric = gc1.ok - gc0.ok
      const consistent = r.total.ok === accepted && r.total.ok === okMetric && sm1.refused === sm0.refused && r.total.lost === 0
      return { r, accepted, okMetric, refused: sm1.refused - sm0.refused, consistent }
    })
    const g = G.r
    const gwAccepted = G.accepted
    const gwOkMetric = G.okMetric
    const gwConsistent = G.consistent
    // Stopped before the baseline: the baseline runs beside no idle gateway, and the profile (if any) is written now.
    await killChild(gw, 30_000)
    gw = null

    // --- straight to the fake SMSC --------------------------------------------------------------------------------------
    const D = await quietest('direct', async () => {
      const sd0 = await smscSettled(smsc)
      const r = await runEsme(ctx, { label: 'esme direct', ...directTarget, warmup: T.warmup, seconds: T.seconds, recipients: ds.recipients, pids: { smsc: smsc.pid } })
      const sd1 = await smscSettled(smsc)
      const accepted = sd1.accepted - sd0.accepted
      return { r, accepted, consistent: r.total.ok === accepted && r.total.lost === 0 }
    })
    const d = D.r
    const directAccepted = D.accepted
    const directConsistent = D.consistent

    // --- figures ------------------------------------------------------------------------------------------------------
    const ratio = g.measured.okPerSecond / d.measured.okPerSecond
    const ratioMet = ratio >= GOAL_RATIO
    const rateMet = g.measured.okPerSecond >= GOAL_RATE
    const text = (r) => `${fmtInt(r.measured.okPerSecond)} submit_sm/s, p50 ${fmtNum(r.measured.p50Ms)} ms, p99 ${fmtNum(r.measured.p99Ms)} ms`
    const notBad = (r) => Object.entries(r.measured.statuses).filter(([s]) => s !== 'ESME_ROK').map(([s, n]) => `${s} ${fmtInt(n)}`).join(', ')
    const notes = [
      `node-smpp ESME in its own process: ${BINDS} bind_transceiver × window ${WINDOW} outstanding submit_sm, ${T.seconds} s after a ${T.warmup} s warm-up each; ${fmtInt(RECIPIENTS)} ONAY recipients cycled; gateway upstream smpp://…?binds=${BINDS}&window=${WINDOW}; fake SMSC in its own process`,
      `through the gateway: ${fmtInt(g.measured.okPerSecond)} submit_sm/s, latency p50 ${fmtNum(g.measured.p50Ms)} / p90 ${fmtNum(g.measured.p90Ms)} / p99 ${fmtNum(g.measured.p99Ms)} / max ${fmtNum(g.measured.maxMs)} ms`,
      `direct to the fake SMSC: ${fmtInt(d.measured.okPerSecond)} submit_sm/s, latency p50 ${fmtNum(d.measured.p50Ms)} / p90 ${fmtNum(d.measured.p90Ms)} / p99 ${fmtNum(d.measured.p99Ms)} / max ${fmtNum(d.measured.maxMs)} ms`,
      `goal ≥ ${GOAL_RATIO}× of direct: ${fmtRatio(ratio)} — ${ratioMet ? 'met' : 'NOT met'}; goal ≥ ${fmtInt(GOAL_RATE)} checked submit_sm/s: ${fmtInt(g.measured.okPerSecond)} — ${rateMet ? 'met' : 'NOT met'}`,
      `CPU (share of one core) during the gateway run: gateway ${pct(g.cpu?.gateway)} (${(g.gatewayThreads ?? []).slice(0, 3).map(t => `${t.name} ${pct(t.share)}`).join(', ')}), fake SMSC ${pct(g.cpu?.smsc)}, ESME ${pct(g.cpu?.esme)}, Redis ${pct(g.cpu?.redis)}, Postgres ${pct(g.cpu?.postgres)}, anything else ${pct(g.cpu?.others)}; machine ${pct(g.cpu?.machine)} of 200%`,
      `CPU during the direct run: fake SMSC ${pct(d.cpu?.smsc)}, ESME ${pct(d.cpu?.esme)}, anything else ${pct(d.cpu?.others)}; machine ${pct(d.cpu?.machine)} of 200%`,
      `check: the fake SMSC accepted ${fmtInt(gwAccepted)} submit_sm from the gateway during its run; the ESME got ${fmtInt(g.total.ok)} status-0 answers, the gateway counted ${fmtInt(gwOkMetric)} — ${gwConsistent ? 'every answer reached the operator' : 'MISMATCH'}; direct: ${fmtInt(directAccepted)} accepted for ${fmtInt(d.total.ok)} answers — ${directConsistent ? 'equal' : 'MISMATCH'}`,
      'ESME, gateway, fake SMSC, Redis and Postgres (decision log) share the machine\'s 2 cores; the direct run leaves the gateway\'s, Redis\'s and Postgres\'s share to the ESME and the SMSC'
    ]
    for (const [who, r] of [['gateway', g], ['direct', d]]) {
      if (r.cpu?.others > 0.25) notes.push(`WARNING: processes outside this scenario used ${pct(r.cpu.others)} of a core during the ${who} run: its figures are suspect`)
    }
    if (notBad(g) !== '') notes.push(`WARNING: non-zero statuses through the gateway: ${notBad(g)}`)
    if (notBad(d) !== '') notes.push(`WARNING: non-zero statuses direct: ${notBad(d)}`)
    if (g.total.lost + d.total.lost + g.total.errors + d.total.errors > 0) notes.push(`WARNING: ${g.total.lost + d.total.lost} submit_sm never answered, ${g.total.errors + d.total.errors} session errors`)
    if (G.attempts + D.attempts > 2) notes.push(`measured again beside busy neighbours: gateway ${G.attempts} attempt(s) (${G.all.map(a => `${fmtInt(a.okPerSecond)}/s, others ${pct(a.others)}`).join('; ')}), direct ${D.attempts} (${D.all.map(a => `${fmtInt(a.okPerSecond)}/s, others ${pct(a.others)}`).join('; ')}); the quietest of each is reported`)
    if (!gwConsistent || !directConsistent) notes.push(`WARNING: counts disagree: gateway run ESME ok ${g.total.ok}, gateway ok ${gwOkMetric}, SMSC accepted ${gwAccepted} (refused ${G.refused}); direct ESME ok ${d.total.ok}, SMSC accepted ${directAccepted}`)

    let profile = null
    if (profDir !== null) {
      await sleep(500)
      // The main thread's profile (thread id 0) of the gateway's process.
      const all = newProfiles(profDir, profBefore, gwPid)
      if (all.length > 0) {
        profile = { file: all[0], ...summariseProfile(all[0], 15) }
        notes.push(`CPU profile of the gateway (${relative(ROOT, all[0])}): busy ${fmtNum(profile.busyMs / 1000, 1)} s of ${fmtNum(profile.totalMs / 1000, 1)} s sampled; top self time: ` +
          profile.top.map(t => `${t.name} ${fmtNum(t.share * 100, 1)}%`).join('; '))
      } else {
        notes.push(`WARNING: BENCH_CPU_PROF is set but the gateway wrote no profile into ${profDir}`)
      }
    }

    print('smpp', text(g), `ESME straight to the fake SMSC ${text(d)}`, ratio, notes)
    return {
      scenario: 'smpp',
      status: 'ok',
      measure: `submit_sm/s (status 0: checked, forwarded) through the gateway → fake SMSC, ${BINDS} binds × window ${WINDOW}`,
      ours: { value: g.measured.okPerSecond, text: text(g) },
      baseline: { label: 'same ESME straight to the fake SMSC', value: d.measured.okPerSecond, text: text(d) },
      ratio,
      notes,
      details: {
        binds: BINDS,
        window: WINDOW,
        seconds: T.seconds,
        warmup: T.warmup,
        recipients: RECIPIENTS,
        gateway: g,
        direct: d,
        goals: { ratio: GOAL_RATIO, ratioMet, rate: GOAL_RATE, rateMet },
        attempts: { gateway: G.all, direct: D.all },
        check: { gwAccepted, gwOkMetric, esmeOk: g.total.ok, gwConsistent, directAccepted, directOk: d.total.ok, directConsistent },
        profile
      }
    }
  } finally {
    if (gw !== null) await killChild(gw, 30_000)
    await killChild(smsc)
    log('    (smpp: gateway and fake SMSC stopped)')
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A V8 CPU profile (.cpuprofile) summarised: self time aggregated by function + script + line, busiest first.

export function summariseProfile (file, top = 15) {
  const p = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map(p.nodes.map(n => [n.id, n]))
  const self = new Map()
  const deltas = p.timeDeltas ?? []
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (deltas[i + 1] ?? deltas[i] ?? 0) / 1000)
  const agg = new Map()
  let totalMs = 0
  for (const [id, ms] of self) {
    const cf = byId.get(id).callFrame
    let url = cf.url ?? ''
    if (url.startsWith('file://')) url = relative(ROOT, fileURLToPath(url))
    const nm = url.lastIndexOf('node_modules/')
    if (nm >= 0) url = url.slice(nm + 'node_modules/'.length)
    const name = `${cf.functionName || '(anonymous)'}${url !== '' ? ` ${url}:${cf.lineNumber + 1}` : ''}`
    agg.set(name, (agg.get(name) ?? 0) + ms)
    totalMs += ms
  }
  const idleMs = agg.get('(idle)') ?? 0
  const busyMs = totalMs - idleMs
  const rows = [...agg].filter(([n]) => n !== '(idle)').sort((a, b) => b[1] - a[1])
  // By script as well: where the busy time is, package by package.
  const byScript = new Map()
  for (const [n, ms] of rows) {
    const m = /^.* ([^ ]+):\d+$/.exec(n)
    const script = m === null ? n : m[1].startsWith('dist/') ? m[1] : m[1].startsWith('node:') ? 'node:* (Node internals)' : m[1].split('/')[0]
    byScript.set(script, (byScript.get(script) ?? 0) + ms)
  }
  return {
    totalMs,
    idleMs,
    busyMs,
    top: rows.slice(0, top).map(([name, ms]) => ({ name, ms, share: ms / busyMs })),
    byScript: [...byScript].sort((a, b) => b[1] - a[1]).slice(0, top).map(([script, ms]) => ({ script, ms, share: ms / busyMs }))
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The ESME load generator (`node bench/smpp.js --worker JSON`; the password comes in BENCH_SMPP_PASSWORD). Prints
// `PHASE measure` when the warm-up ends, `PHASE end` when the measured span ends, then `RESULT {json}`.

async function worker (cfg) {
  const require = createRequire(import.meta.url)
  const smpp = require('smpp')
  const names = new Map(Object.entries(smpp.errors).map(([n, c]) => [c, n]))
  const statusName = (s) => names.get(s) ?? `0x${s.toString(16)}`
  const password = process.env.BENCH_SMPP_PASSWORD ?? ''
  const { host, port, systemId, binds: B, window: W, warmup, seconds, count, recipients, sender, text } = cfg // recipients: how many
  const message = Buffer.from(text, 'latin1') // ASCII: the GSM 03.38 default alphabet, data_coding 0
  const fields = recipientList(recipients).map(r => ({
    source_addr_ton: 5, source_addr_npi: 0, source_addr: sender,
    dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: r,
    registered_delivery: 1, data_coding: 0, short_message: message
  }))

  let phase = count === null && warmup > 0 ? 0 : 1 // 0 warm-up, 1 measured, 2 done
  let stopping = false
  let next = (process.pid * 7919) % fields.length
  const total = { sent: 0, answered: 0, ok: 0, lost: 0, errors: 0, statuses: {} }
  const meas = { answered: 0, ok: 0, statuses: {}, lat: [] }
  let onIdle = null

  const bindOne = () => new Promise((resolve, reject) => {
    const s = smpp.connect({ host, port, noDelay: true }, () => {
      s.bind_transceiver({ system_id: systemId, password }, (pdu) => {
        if (pdu.command_status === 0) resolve(b)
        else reject(new Error(`bind_transceiver refused: ${statusName(pdu.command_status)}`))
      })
    })
    const b = { s, inflight: 0, scheduled: false, closed: false }
    s.on('error', (err) => { total.errors++; if (!b.bound) reject(err) })
    s.on('close', () => { b.closed = true; total.lost += b.inflight; b.inflight = 0; if (onIdle !== null) onIdle() })
    // Requests from the peer: answered (keep-alive, receipts, an unbind).
    s.on('enquire_link', (pdu) => { s.send(pdu.response()) })
    s.on('deliver_sm', (pdu) => { s.send(pdu.response()) })
    s.on('unbind', (pdu) => { s.send(pdu.response()); s.close() })
  })

  const send = (b) => {
    const t0 = performance.now()
    const f = fields[next]
    next = next + 1 === fields.length ? 0 : next + 1
    b.inflight++
    total.sent++
    const ok = b.s.submit_sm(f, (pdu) => {
      const t1 = performance.now()
      b.inflight--
      total.answered++
      const st = pdu.command_status
      const name = st === 0 ? 'ESME_ROK' : statusName(st)
      total.statuses[name] = (total.statuses[name] ?? 0) + 1
      if (st === 0) total.ok++
      if (phase === 1) {
        meas.answered++
        if (st === 0) meas.ok++
        meas.statuses[name] = (meas.statuses[name] ?? 0) + 1
        meas.lat.push(t1 - t0)
      }
      kick(b)
      if (onIdle !== null) onIdle()
    })
    if (!ok) { b.inflight--; total.sent--; total.errors++ }
    return ok
  }
  // Sends are batched per turn of the event loop (one write for the responses read together), corked.
  const pump = (b) => {
    b.scheduled = false
    if (stopping || b.closed) return
    b.s.socket.cork()
    while (b.inflight < W && (count === null || total.sent < count)) if (!send(b)) break
    b.s.socket.uncork()
  }
  const kick = (b) => { if (!b.scheduled && !stopping) { b.scheduled = true; process.nextTick(pump, b) } }

  let bindsUp
  try {
    bindsUp = await Promise.all(Array.from({ length: B }, bindOne))
  } catch (err) {
    process.stdout.write(`RESULT ${JSON.stringify({ error: err.message })}\n`)
    process.exit(1)
  }
  for (const b of bindsUp) b.bound = true

  const started = performance.now()
  let measureStart = started
  let measureEnd = null
  const idle = () => bindsUp.every(b => b.inflight === 0 || b.closed)
  const allAnswered = new Promise(resolve => {
    onIdle = () => {
      if (count !== null && total.answered + total.lost >= count) resolve()
      else if (stopping && idle()) resolve()
    }
  })
  for (const b of bindsUp) kick(b)
  if (count === null) {
    if (phase === 0) {
      await sleep(warmup * 1000)
      phase = 1
      measureStart = performance.now()
      process.stdout.write('PHASE measure\n')
    } else {
      process.stdout.write('PHASE measure\n')
    }
    await sleep(seconds * 1000)
    phase = 2
    measureEnd = performance.now()
    process.stdout.write('PHASE end\n')
    stopping = true
    if (idle()) onIdle()
  }
  await Promise.race([allAnswered, sleep(20_000)])
  measureEnd ??= performance.now()
  total.lost += bindsUp.reduce((s, b) => s + b.inflight, 0)

  // Unbind every session (answered or not within 3 s), then report.
  await Promise.all(bindsUp.map(b => new Promise(resolve => {
    if (b.closed) { resolve(); return }
    const t = setTimeout(() => { b.s.destroy(); resolve() }, 3000)
    b.s.socket.once('close', () => { clearTimeout(t); resolve() })
    b.s.unbind({}, () => { b.s.close() })
  })))

  const lat = Float64Array.from(meas.lat).sort()
  const secs = (measureEnd - measureStart) / 1000
  const cpu = process.cpuUsage()
  process.stdout.write(`RESULT ${JSON.stringify({
    total,
    measured: {
      seconds: secs,
      answered: meas.answered,
      ok: meas.ok,
      perSecond: meas.answered / secs,
      okPerSecond: meas.ok / secs,
      statuses: meas.statuses,
      p50Ms: percentile(lat, 50),
      p90Ms: percentile(lat, 90),
      p99Ms: percentile(lat, 99),
      maxMs: lat.length > 0 ? lat[lat.length - 1] : NaN
    },
    esmeCpuSeconds: (cpu.user + cpu.system) / 1e6
  })}\n`)
  process.exit(0)
}

if (process.argv[1] === SELF && process.argv[2] === '--worker') {
  worker(JSON.parse(process.argv[3])).catch(err => {
    process.stdout.write(`RESULT ${JSON.stringify({ error: err.stack ?? err.message })}\n`)
    process.exit(1)
  })
} else if (process.argv[1] === SELF && process.argv[2] === '--profile') {
  const s = summariseProfile(process.argv[3], Number(process.argv[4] ?? 15))
  process.stdout.write(`busy ${fmtNum(s.busyMs / 1000, 2)} s of ${fmtNum(s.totalMs / 1000, 2)} s sampled (idle ${fmtNum(s.idleMs / 1000, 2)} s); shares are of busy time\n\nself time by function:\n`)
  for (const t of s.top) process.stdout.write(`${fmtNum(t.share * 100, 1).padStart(6)}%  ${fmtNum(t.ms, 0).padStart(8)} ms  ${t.name}\n`)
  process.stdout.write('\nself time by script / package:\n')
  for (const t of s.byScript) process.stdout.write(`${fmtNum(t.share * 100, 1).padStart(6)}%  ${fmtNum(t.ms, 0).padStart(8)} ms  ${t.script}\n`)
}
