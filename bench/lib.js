// Shared helpers for the benchmark scenarios: child processes that are always reaped, a private Postgres database
// and Redis prefix per run, readiness polling, the HTTP load generators (wrk, or autocannon in worker processes)
// and a little statistics and formatting. Plain ESM so that the benchmark runs without a build step of its own.

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { DEMO_API_KEY } from '../dist/src/auth/key-store.js'

export const ROOT = fileURLToPath(new URL('..', import.meta.url))
export const CLI = join(ROOT, 'bin', 'iys-gateway.js')
export const BENCH_DIR = join(ROOT, 'bench')
export const OUT_DIR = join(ROOT, 'bench', 'out')

export const log = (...parts) => { process.stderr.write(parts.join(' ') + '\n') }
export const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

// ---------------------------------------------------------------------------------------------------------------
// Child processes. Every child goes into one set so that the runner can kill whatever is left on success, error
// or signal; each keeps the tail of its output so a failure can say why.

const children = new Set()
const TAIL = 8000
let aborting = false

/** After a signal: clean-up is running, so nothing new may start (it would outlive the clean-up). */
export function abortAll () { aborting = true }
export const isAborting = () => aborting

/** Spawns a tracked child. `forward` copies its stderr lines to ours (progress of long imports and loads). */
export function spawnTracked (cmd, args, { env = process.env, label = cmd, forward = false, cwd = ROOT } = {}) {
  if (aborting) throw new Error(`${label}: not started, the run is being aborted`)
  const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] })
  child.label = label
  child.stdoutText = ''
  child.stderrText = ''
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', d => { child.stdoutText = (child.stdoutText + d).slice(-4 * TAIL) })
  child.stderr.on('data', d => {
    child.stderrText = (child.stderrText + d).slice(-TAIL)
    if (forward) for (const line of d.split('\n')) if (line.trim() !== '') log(`    | ${line.replace(/\r|\x1b\[K/g, '')}`)
  })
  children.add(child)
  child.exited = new Promise(resolve => {
    child.once('close', (code, signal) => { children.delete(child); resolve({ code, signal }) })
    child.once('error', err => { children.delete(child); child.spawnError = err; resolve({ code: -1, signal: null }) })
  })
  return child
}

/** SIGTERM, then SIGKILL after `graceMs`. Resolves once the child is gone. */
export async function killChild (child, graceMs = 3000) {
  if (child.exitCode !== null || child.signalCode !== null || !children.has(child)) return
  child.kill('SIGTERM')
  const t = setTimeout(() => { try { child.kill('SIGKILL') } catch {} }, graceMs)
  await child.exited
  clearTimeout(t)
}

export async function killAll () {
  await Promise.all([...children].map(c => killChild(c)))
}

/** Last resort for `process.on('exit')`: synchronous, so only signals can be sent. */
export function killAllSync () {
  for (const c of children) { try { c.kill('SIGKILL') } catch {} }
}

/**
 * Runs a command to completion under a time limit (a hung child is killed, never waited for forever).
 * Resolves { code, stdout, stderr, seconds }; rejects when it cannot start, times out or (unless allowFail) exits non-zero.
 */
export async function run (cmd, args, { env, label = cmd, timeoutMs = 600_000, forward = false, allowFail = false } = {}) {
  const started = performance.now()
  const child = spawnTracked(cmd, args, { env, label, forward })
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; killChild(child, 2000) }, timeoutMs)
  const { code, signal } = await child.exited
  clearTimeout(timer)
  const seconds = (performance.now() - started) / 1000
  if (child.spawnError !== undefined) throw new Error(`${label}: cannot start ${cmd}: ${child.spawnError.message}`)
  if (timedOut) throw new Error(`${label}: timed out after ${timeoutMs / 1000}s`)
  if (code !== 0 && !allowFail) {
    throw new Error(`${label}: exited with ${code ?? signal}: ${(child.stderrText || child.stdoutText).trim().split('\n').slice(-5).join(' / ')}`)
  }
  return { code, stdout: child.stdoutText, stderr: child.stderrText, seconds }
}

/** True when `cmd` can be executed (used for wrk and psql). */
export function hasCommand (cmd, args = ['--version']) {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 5000 })
  return r.error === undefined
}

/**
 * The environment for an iys-gateway child. The gateway refuses unknown variables in its namespaces (a typo guard),
 * so anything of ours that happens to be set in the caller's shell is dropped and only what we choose is passed.
 */
const GATEWAY_PREFIXES = ['REDIS_', 'UPSTREAM_', 'IYS_', 'BLOOM_', 'FILTER_', 'TACIR_', 'STORE_', 'EMBEDDED_', 'MAX_BODY', 'DATABASE_URL', 'PORT', 'HOST', 'LOG_LEVEL',
  'HISTORY_', 'RETENTION_', 'SCRUB_', 'DECISION_', 'AUTH_']
// Per-run defaults the runner sets once (setGatewayDefaults): the scrub job folder and the decision spool default to
// shared folders under $TMPDIR, which a gateway of ours must never read from (it would run other processes' queued
// scrub jobs or replay their spooled decisions) nor leave files in.
let gatewayDefaults = {}
export function setGatewayDefaults (vars) { gatewayDefaults = { ...vars } }
export function gatewayEnv (vars) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) if (!GATEWAY_PREFIXES.some(p => k.startsWith(p))) env[k] = v
  // Gateways without DATABASE_URL accept the demo key (off by default on a Redis gateway): the bench sends it there.
  const demo = vars.DATABASE_URL === undefined ? { AUTH_DEMO_KEY: 'true' } : {}
  return { ...env, LOG_LEVEL: 'warn', HOST: '127.0.0.1', ...gatewayDefaults, ...demo, ...vars }
}

/** The API key of each gateway the bench started, by origin (the demo key for gateways without DATABASE_URL). */
const KEYS = new Map()

/** `{ authorization }` for requests to `url`: every request the benchmarks send carries its gateway's key. */
export function authFor (url) {
  return { authorization: `Bearer ${KEYS.get(new URL(url).origin) ?? DEMO_API_KEY}` }
}

/**
 * A key of every scope, no rate limit, for the data set in `databaseUrl`: its tenant (700001) owns every brand the
 * consents name. Created with the project's own code (dist/), as `iys-gateway keys create` would.
 */
export async function benchKey (databaseUrl) {
  const { createKey, newKey } = await import('../dist/src/auth/keys.js')
  const { migrate } = await import('../dist/src/store/migrate.js')
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 })
  try {
    await migrate(pool)
    await pool.query("INSERT INTO tenants (iys_code) VALUES (700001) ON CONFLICT DO NOTHING")
    await pool.query('INSERT INTO brands (brand_code, iys_code) SELECT DISTINCT brand_code, 700001 FROM consents ON CONFLICT DO NOTHING')
    await pool.query("INSERT INTO brands (brand_code, iys_code) SELECT b, 700001 FROM generate_series(600000, 600099) b ON CONFLICT DO NOTHING")
    // A rate that never binds, so that the rate limiter's path is part of what is measured.
    return (await createKey(pool, newKey({ iysCode: '700001', scopes: 'admin', rate: '1000000' }))).apiKey
  } finally {
    await pool.end()
  }
}

/** Starts `iys-gateway serve` on a free port with `vars` and waits until /readyz answers 200 (and knows its key). */
export async function startGateway (label, vars, timeoutMs = 30_000) {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const apiKey = vars.DATABASE_URL !== undefined ? await benchKey(vars.DATABASE_URL) : DEMO_API_KEY
  KEYS.set(url, apiKey)
  const child = spawnTracked(process.execPath, [CLI, 'serve'], { env: gatewayEnv({ ...vars, PORT: String(port) }), label })
  const ready = await waitReady(url + '/readyz', child, timeoutMs)
  if (ready?.uws !== undefined && ready.uws !== 'native') log(`WARNING: ${label} runs on the uWebSockets.js pure-JS fallback (${ready.uws}); its figures are not representative`)
  return { child, url, port, ready, apiKey }
}

/** Memory figures of a process from /proc/<pid>/status, in bytes: { rss, hwm } (NaN when gone). */
export function procMemory (pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (name) => { const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(s); return m === null ? NaN : Number(m[1]) * 1024 }
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
  } catch { return { rss: NaN, hwm: NaN } }
}

/** Sum of a Prometheus counter/gauge over the series whose labels include every `labels` pair. */
export function metricSum (text, name, labels = {}) {
  let sum = 0
  let found = false
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const rest = line.slice(name.length)
    if (rest[0] !== '{' && rest[0] !== ' ') continue
    let labelText = ''
    let valueText = rest
    if (rest[0] === '{') {
      const end = rest.indexOf('}')
      labelText = rest.slice(1, end)
      valueText = rest.slice(end + 1)
    }
    if (!Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) continue
    sum += Number(valueText.trim().split(/\s+/)[0])
    found = true
  }
  return found ? sum : 0
}

/** GET /metrics of a gateway as text. */
export async function metricsText (baseUrl) {
  const res = await fetch(baseUrl + '/metrics', { signal: AbortSignal.timeout(5000) })
  if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status}`)
  return res.text()
}

/** A port that was free a moment ago (the gateway CLI does not accept PORT=0). */
export function freePort () {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

/** Polls `url` until it answers 200 (returns the parsed body), the child dies, or `timeoutMs` passes. */
export async function waitReady (url, child, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${child.label} exited before it was ready: ${child.stderrText.trim().split('\n').slice(-3).join(' / ')}`)
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) })
      const text = await res.text()
      if (res.status === 200) { try { return JSON.parse(text) } catch { return text } }
      last = `${res.status} ${text.slice(0, 200)}`
    } catch (err) { last = err.message }
    await sleep(100)
  }
  throw new Error(`${child.label} not ready after ${timeoutMs / 1000}s (${url}: ${last})`)
}

/** POSTs a JSON body with a time limit; returns { status, json }. */
export async function postJson (url, body, timeoutMs = 10_000) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...authFor(url) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs)
  })
  const text = await res.text()
  let json = null
  try { json = JSON.parse(text) } catch {}
  return { status: res.status, json, text }
}

// ---------------------------------------------------------------------------------------------------------------
// Postgres and Redis: a private database and key prefix per run, removed at the end whatever happened.

export function dbUrl (adminUrl, name) {
  const u = new URL(adminUrl)
  u.pathname = '/' + name
  return u.toString()
}

async function withAdmin (adminUrl, fn) {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 })
  await client.connect()
  try { return await fn(client) } finally { await client.end() }
}

const ident = (name) => {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`unsafe database name ${name}`)
  return '"' + name + '"'
}

export async function createDatabase (adminUrl, name) {
  await withAdmin(adminUrl, async (c) => {
    const { rowCount } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
    // Another run with the same pid cannot be alive at the same time on this machine: this is a leftover of a
    // run that was killed with SIGKILL, and it is ours to replace.
    if (rowCount > 0) await c.query(`DROP DATABASE ${ident(name)} WITH (FORCE)`)
    await c.query(`CREATE DATABASE ${ident(name)}`)
  })
}

export async function dropDatabase (adminUrl, name) {
  // WITH (FORCE) (Postgres 13+) ends sessions a killed child may have left behind.
  await withAdmin(adminUrl, c => c.query(`DROP DATABASE IF EXISTS ${ident(name)} WITH (FORCE)`))
}

/** Runs one query on a database and returns the rows. */
export async function query (url, sql, params = []) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 })
  await client.connect()
  try { return (await client.query(sql, params)).rows } finally { await client.end() }
}

/** Deletes every key under `prefix` with SCAN + UNLINK (never KEYS: it would block a shared Redis). */
export async function unlinkPrefix (redis, prefix) {
  let cursor = '0'
  let n = 0
  const pattern = prefix.replace(/[*?[\]\\]/g, '\\$&') + '*'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    if (keys.length > 0) n += await redis.unlink(...keys)
  } while (cursor !== '0')
  return n
}

export async function usedMemory (redis) {
  const info = await redis.info('memory')
  const m = /^used_memory:(\d+)/m.exec(info)
  if (m === null) throw new Error('INFO memory has no used_memory')
  return Number(m[1])
}

/** Sum of MEMORY USAGE (exact: SAMPLES 0) over the keys matching `pattern`, pipelined in batches. */
export async function memoryUsageOf (redis, patterns) {
  let bytes = 0
  let keys = 0
  for (const pattern of patterns) {
    let cursor = '0'
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 2000)
      cursor = next
      if (batch.length === 0) continue
      const p = redis.pipeline()
      for (const k of batch) p.memory('USAGE', k, 'SAMPLES', '0')
      for (const [err, v] of await p.exec()) if (err === null && v !== null) { bytes += Number(v); keys++ }
    } while (cursor !== '0')
  }
  return { bytes, keys }
}

// ---------------------------------------------------------------------------------------------------------------
// CPU accounting from /proc: how much of a core the server (or the load generator) burnt during a run.

const CLK_TCK = 100 // USER_HZ is 100 on every Linux ABI Node runs on

export function cpuSeconds (pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / CLK_TCK // utime + stime (fields 14, 15)
  } catch { return NaN }
}

/** CPU seconds per thread of a process: [{ tid, name, seconds }] (the main thread has tid === pid). */
export function threadCpuSeconds (pid) {
  const out = []
  let tids = []
  try { tids = readdirSync(`/proc/${pid}/task`) } catch { return out }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.push({ tid: Number(tid), name, seconds: (Number(f[11]) + Number(f[12])) / CLK_TCK })
    } catch {} // the thread ended meanwhile
  }
  return out
}

/**
 * Share of a core each thread of `pid` used between two threadCpuSeconds() samples, busiest first, grouped as
 * "main" (the event loop) and the others by name (e.g. piscina workers, libuv's pool).
 */
export function threadShares (before, after, seconds, pid) {
  const b = new Map(before.map(t => [t.tid, t.seconds]))
  return after.map(t => ({ tid: t.tid, name: t.tid === pid ? 'main' : t.name, share: (t.seconds - (b.get(t.tid) ?? 0)) / seconds }))
    .filter(t => t.share >= 0.005)
    .sort((x, y) => y.share - x.share)
}

/** Busy CPU seconds of the whole machine so far (all cores), from the first line of /proc/stat. */
export function machineBusySeconds () {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal: everything but idle and iowait is busy
    return (f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] || 0)) / CLK_TCK
  } catch { return NaN }
}

/**
 * Waits (at most `maxWaitMs`) until the machine is quiet: less than `threshold` of a core busy over one second.
 * On a shared machine tests and builds come and go; measuring between them beats measuring beside them.
 */
/** CPU seconds of every process named `comm` (Postgres: the postmaster, its backends and workers), by pid. */
export function cpuByName (comm) {
  const out = new Map()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8')
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== comm) continue
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      out.set(d, (Number(f[11]) + Number(f[12])) / 100)
    } catch {} // gone meanwhile
  }
  return out
}

/**
 * A CPU sample of a front-end scenario (smpp.js, smtp.js): the processes in `pids` (name → pid; `gateway` also by
 * thread), Postgres's, and the machine's.
 */
export function cpuSample (pids) {
  return {
    at: performance.now(),
    procs: Object.fromEntries(Object.entries(pids).filter(([, p]) => p != null).map(([k, p]) => [k, cpuSeconds(p)])),
    gwThreads: pids.gateway != null ? threadCpuSeconds(pids.gateway) : [],
    postgres: cpuByName('postgres'),
    machine: machineBusySeconds()
  }
}

/** Shares of one core between two cpuSample()s: each process, Postgres, the machine, what none of them used; the gateway's threads. */
export function cpuShares (s0, s1, gatewayPid) {
  const secs = (s1.at - s0.at) / 1000
  const cpu = Object.fromEntries(Object.keys(s1.procs).map(k => [k, (s1.procs[k] - s0.procs[k]) / secs]))
  cpu.machine = (s1.machine - s0.machine) / secs
  let pgSeconds = 0
  for (const [pid, c] of s1.postgres) pgSeconds += c - (s0.postgres.get(pid) ?? 0)
  cpu.postgres = pgSeconds / secs
  // What none of the processes of this scenario used: the runner, the kernel's own threads, and any neighbour.
  // (Clock ticks are 10 ms: a few % either way is sampling, hence never below 0.)
  cpu.others = Math.max(0, cpu.machine - Object.entries(cpu).filter(([k]) => k !== 'machine').reduce((sum, [, v]) => sum + (Number.isFinite(v) ? v : 0), 0))
  return { cpu, gatewayThreads: gatewayPid != null ? threadShares(s0.gwThreads, s1.gwThreads, secs, gatewayPid) : [] }
}

/**
 * Waits for a load-generator worker (spawnTracked) to end, calling `onPhase('measure' | 'end')` at its `PHASE …`
 * lines, and returns its `RESULT {…}` object; throws with its output's end when it printed none or an error.
 */
export async function workerResult (child, label, limitSeconds, onPhase) {
  const limit = setTimeout(() => { killChild(child, 1000) }, limitSeconds * 1000)
  let pending = ''
  child.stdout.on('data', (d) => {
    pending += d
    let nl
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl)
      pending = pending.slice(nl + 1)
      if (line.startsWith('PHASE ')) onPhase(line.slice(6))
    }
  })
  const { code } = await child.exited
  clearTimeout(limit)
  const m = /^RESULT (\{.*\})$/m.exec(child.stdoutText)
  if (m === null) throw new Error(`${label}: no result (exit ${code}): ${(child.stderrText || child.stdoutText).trim().slice(-500)}`)
  const r = JSON.parse(m[1])
  if (r.error !== undefined) throw new Error(`${label}: ${r.error}`)
  return r
}

/** Waits until `child` printed a line matching `re`; its match. */
export async function waitOutput (child, re, ms) {
  const deadline = Date.now() + ms
  while (!re.test(child.stdoutText)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${child.label} exited: ${child.stderrText.trim().slice(-300)}`)
    if (Date.now() > deadline) throw new Error(`${child.label} did not print ${re} within ${ms / 1000} s`)
    await sleep(50)
  }
  return re.exec(child.stdoutText)
}

/** A gateway process's /metrics text; when it cannot be had, an error that says whether the gateway exited and how. */
export async function gatewayMetrics (url, child) {
  try {
    return await metricsText(url)
  } catch (err) {
    const gone = child.exitCode !== null || child.signalCode !== null ? `the gateway exited (${child.exitCode ?? child.signalCode})` : 'the gateway is running'
    throw new Error(`GET /metrics: ${err.message} (${err.cause?.message ?? ''}); ${gone}: ${child.stderrText.trim().split('\n').slice(-5).join(' / ')}`)
  }
}

/** The CPU profiles a process (`pid`) wrote into `dir` that were not in `before`: the main thread's (thread id 0) first. */
export function newProfiles (dir, before, pid) {
  if (!dir || !existsSync(dir)) return []
  // CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile
  const files = readdirSync(dir).filter(f => f.endsWith('.cpuprofile') && !before.has(f) && f.includes(`.${pid}.`))
  return files.sort((a, b) => Number(!a.includes(`.${pid}.0.`)) - Number(!b.includes(`.${pid}.0.`)) || a.localeCompare(b)).map(f => join(dir, f))
}

/** Warm-up and measured seconds of a front-end scenario (`--quick`: a smoke run). */
export const frontEndTiming = (ctx) => ctx.quick ? { warmup: 1, seconds: 3 } : { warmup: 3, seconds: 10 }

export const fmtPct = (x) => Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a'

export async function waitQuiet (maxWaitMs, threshold = 0.35) {
  const started = Date.now()
  let busy = NaN
  do {
    const b0 = machineBusySeconds()
    await sleep(1000)
    busy = machineBusySeconds() - b0
    if (!(busy >= threshold)) return { waitedMs: Date.now() - started, busy, quiet: true }
  } while (Date.now() - started < maxWaitMs)
  log(`    (machine still busy: ${Math.round(busy * 100)}% of a core after ${Math.round((Date.now() - started) / 1000)} s; measuring anyway)`)
  return { waitedMs: Date.now() - started, busy, quiet: false }
}

export function systemInfo () {
  let cpu = cpus()[0]?.model ?? 'unknown'
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    if (m !== null) cpu = m[1].trim()
  } catch {}
  return { date: new Date().toISOString(), node: process.version, cpu, cores: cpus().length, platform: `${process.platform} ${process.arch}`, loadavg: loadavg().map(x => +x.toFixed(2)) }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP load generation. wrk (C, one thread per core) is preferred so the generator is not the bottleneck; without
// it, autocannon runs in several worker processes (one Node process cannot saturate a uWS server) and the results
// are summed.

export const WRK_THREADS = 2 // the machine's core count caps it; more threads only add contention

/** The `done` hook every wrk script of ours ends with: one WRKJSON line that runHttpLoad parses. */
const WRK_DONE = `done = function (summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\nWRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
`

/** A wrk Lua script cycling through pre-formatted requests; each thread starts at a different offset. */
export function writeWrkScript (file, path, bodies, authorization) {
  const level = '='.repeat(4)
  const table = bodies.map(b => {
    if (b.includes(']' + level + ']')) throw new Error('body contains the Lua long-bracket terminator')
    return `[${level}[${b}]${level}]`
  }).join(',\n')
  writeFileSync(file, `-- generated by bench/lib.js
local bodies = {
${table}
}
local reqs = {}
local i = 0
local counter = 0
setup = function (thread)
  counter = counter + 1
  thread:set("tid", counter)
end
init = function (args)
  for k, b in ipairs(bodies) do
    reqs[k] = wrk.format("POST", "${path}", { ["Content-Type"] = "application/json", ["Authorization"] = ${JSON.stringify(authorization)} }, b)
  end
  i = ((tid or 1) * 7919) % #reqs
end
request = function ()
  i = i % #reqs + 1
  return reqs[i]
end
${WRK_DONE}`)
}


/**
 * A wrk Lua script whose every request is new: `format` is a Lua string.format pattern applied to
 * (id, row[1], row[2], ...) where `id` is unique per request across threads (`idPrefix` .. thread .. "-" .. n) and
 * rows cycle. With `idHeader` the id is also sent in that header (an idempotency key). Strings are quoted for Lua.
 */
export function writeWrkTemplateScript (file, { path, format, rows, idPrefix, idHeader = null, authorization }) {
  const q = (s) => JSON.stringify(String(s)) // a JSON string literal is a valid Lua string literal for ASCII text
  for (const r of rows) for (const v of r) if (!/^[\x20-\x7e]*$/.test(String(v))) throw new Error('wrk template rows must be printable ASCII')
  if (!/^[\x20-\x7e]*$/.test(format)) throw new Error('wrk template format must be printable ASCII')
  writeFileSync(file, `-- generated by bench/lib.js (writeWrkTemplateScript)
local rows = {
${rows.map(r => '{' + r.map(q).join(',') + '}').join(',\n')}
}
local fmt = ${q(format)}
local i = 0
local n = 0
local prefix = ""
local counter = 0
setup = function (thread)
  counter = counter + 1
  thread:set("tid", counter)
end
init = function (args)
  prefix = ${q(idPrefix)} .. (tid or 1) .. "-"
  i = ((tid or 1) * 7919) % #rows
end
request = function ()
  i = i % #rows + 1
  n = n + 1
  local id = prefix .. n
  local r = rows[i]
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = ${q(authorization)} }
  ${idHeader === null ? '' : `headers[${q(idHeader)}] = id`}
  return wrk.format("POST", ${q(path)}, headers, string.format(fmt, id, unpack(r)))
end
` + WRK_DONE)
}

/**
 * Drives `url` with `connections` for `seconds`, cycling through `bodies` (JSON strings).
 * Returns { generator, requests, seconds, rps, p50Ms, p99Ms, maxMs, non2xx, errors, generatorCpu }.
 */
export async function runHttpLoad ({ generator, url, bodies, connections, seconds, tmpDir, label, script = null }) {
  const u = new URL(url)
  if (u.hostname !== '127.0.0.1') throw new Error('load is only ever sent to 127.0.0.1')
  const limitMs = (seconds + 30) * 1000 // generous, but a stuck generator is still killed
  if (script !== null && generator !== 'wrk') throw new Error(`${label}: a Lua script needs wrk`)
  if (generator === 'wrk') {
    if (script === null) {
      script = join(tmpDir, `${label}.lua`)
      writeWrkScript(script, u.pathname, bodies, authFor(url).authorization)
    }
    const threads = Math.min(WRK_THREADS, connections)
    const child = spawnTracked('wrk', ['-t' + threads, '-c' + connections, '-d' + seconds + 's', '--timeout', '10s', '-s', script, url], { label: `wrk ${label}` })
    const timer = setTimeout(() => killChild(child, 1000), limitMs)
    const cpu0 = cpuSeconds(child.pid)
    let cpu1 = cpu0
    const sampler = setInterval(() => { const c = cpuSeconds(child.pid); if (!Number.isNaN(c)) cpu1 = c }, 200)
    const { code } = await child.exited
    clearTimeout(timer)
    clearInterval(sampler)
    if (child.spawnError !== undefined) throw child.spawnError
    const m = /WRKJSON (\{.*\})/.exec(child.stdoutText)
    if (code !== 0 || m === null) throw new Error(`wrk ${label} failed (${code}): ${(child.stderrText || child.stdoutText).trim().slice(-500)}`)
    const r = JSON.parse(m[1])
    const secs = r.duration_us / 1e6
    return {
      generator: `wrk ${threads} threads`,
      requests: r.requests,
      seconds: secs,
      rps: r.requests / secs,
      p50Ms: r.p50_us / 1000,
      p99Ms: r.p99_us / 1000,
      maxMs: r.max_us / 1000,
      non2xx: r.status,
      errors: r.connect + r.read + r.write + r.timeout,
      bytesPerResponse: r.requests > 0 ? r.bytes / r.requests : NaN,
      generatorCpu: (cpu1 - cpu0) / secs
    }
  }
  // autocannon: several worker processes splitting the connections, results summed. Latency percentiles cannot be
  // merged exactly without the histograms, so p99 is the worst worker's p99 (an upper bound of the true one).
  const workers = Math.max(1, Math.min(cpus().length, connections))
  const bodiesFile = join(tmpDir, `${label}.bodies.json`)
  writeFileSync(bodiesFile, JSON.stringify(bodies))
  const per = Array.from({ length: workers }, (_, w) => Math.floor(connections / workers) + (w < connections % workers ? 1 : 0))
  const runs = per.map((c, w) => run(process.execPath, [join(BENCH_DIR, 'autocannon-worker.js'), JSON.stringify({ url, connections: c, seconds, bodiesFile, headers: authFor(url) })],
    { label: `autocannon ${label} #${w + 1}`, timeoutMs: limitMs }))
  const outs = (await Promise.all(runs)).map(r => {
    const line = r.stdout.trim().split('\n').pop()
    return JSON.parse(line)
  })
  const secs = Math.max(...outs.map(o => o.seconds))
  const requests = outs.reduce((s, o) => s + o.requests, 0)
  return {
    generator: `autocannon ${workers} worker processes`,
    requests,
    seconds: secs,
    rps: outs.reduce((s, o) => s + o.requests / o.seconds, 0),
    p50Ms: Math.max(...outs.map(o => o.p50Ms)),
    p99Ms: Math.max(...outs.map(o => o.p99Ms)),
    maxMs: Math.max(...outs.map(o => o.maxMs)),
    non2xx: outs.reduce((s, o) => s + o.non2xx, 0),
    errors: outs.reduce((s, o) => s + o.errors, 0),
    bytesPerResponse: outs.reduce((s, o) => s + o.bytes, 0) / requests,
    generatorCpu: NaN
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Statistics and formatting.

/** Nearest-rank percentile of an ascending array. */
export function percentile (sorted, p) {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

export const median = (xs) => percentile([...xs].sort((a, b) => a - b), 50)

export function fmtInt (x) {
  return Number.isFinite(x) ? Math.round(x).toLocaleString('en') : 'n/a'
}

export function fmtNum (x, digits = 2) {
  if (!Number.isFinite(x)) return 'n/a'
  return x.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function fmtRatio (x) {
  if (!Number.isFinite(x)) return 'n/a'
  return (x >= 10 ? x.toFixed(1) : x >= 0.1 ? x.toFixed(2) : x.toPrecision(2)) + '×'
}

/** One scenario's figure beside its baseline, as it finishes. */
export function print (name, ours, baseline, ratio, notes) {
  process.stdout.write(`\n== ${name}\n   iys-gateway ${ours}   |   baseline ${baseline}   |   ratio ${fmtRatio(ratio)}\n`)
  for (const n of notes) process.stdout.write(`   - ${n}\n`)
}
