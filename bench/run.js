// `npm run bench`: runs the benchmark scenarios in sequence, each beside a baseline measured in the same run, then
// prints a Markdown table for the README and writes the same as JSON to bench/out/results-<date>.json.
//
//   npm run bench [-- --only name[,name]] [--quick] [--size-10m] [--scrub-lines N] [--present P] [--generator wrk|autocannon] [--no-build]
//
// Each run owns a Postgres database (iys_bench_<pid>) and a Redis prefix (bench:<pid>:) and removes both at the end,
// as well as every child process it started, whatever happens: tests and other deployments are never disturbed.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { loadavg } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { checkBatchScenario, checkSingleScenario, stopServers } from './check.js'
import {
  BENCH_DIR, OUT_DIR, ROOT, abortAll, dropDatabase, isAborting, fmtInt, fmtNum, fmtRatio, hasCommand, killAll, killAllSync, log, print, run,
  setGatewayDefaults, systemInfo, unlinkPrefix
} from './lib.js'
import { importScenario, loadScenario, ROWS_MAIN, ROWS_QUICK } from './load.js'
import { messagesScenario } from './messages.js'
import { propagationScenario } from './propagation.js'
import { SCRUB_LINES_MAIN, SCRUB_LINES_QUICK, scrubScenario } from './scrub.js'
import { smppScenario } from './smpp.js'
import { smtpScenario } from './smtp.js'

const SCENARIOS = ['bloom', 'check-single', 'check-batch', 'load', 'import', 'propagation', 'scrub', 'messages', 'smpp', 'smtp']

const USAGE = `usage: npm run bench -- [--only ${SCENARIOS.join(',')}] [--quick] [--size-10m] [--scrub-lines N] [--present P] [--generator wrk|autocannon] [--no-build]
  --only        run a subset of the scenarios (comma-separated)
  --quick       small sizes and short runs, to smoke-test the runner (about three minutes for every scenario)
  --size-10m    also time import and load on a 10,000,000-row data set (generating and importing it takes a while)
  --scrub-lines lines of the list the scrub scenario sends (default ${SCRUB_LINES_MAIN.toLocaleString('en')}; --quick ${SCRUB_LINES_QUICK.toLocaleString('en')})
  --present     % of the keys in the check bodies that have a record (default 50, as issue 12 asks: 33 ONAY, 17 RET; 95 is the realistic case)
  --generator   force the HTTP load generator (default: wrk when installed, else autocannon in worker processes)
  --no-build    do not compile src/ first (benchmarks the dist/ that is there)
before each timed step the runner waits (up to 60 s, 3 s with --quick) for the machine to be quiet, and it reports
the CPU other processes used during each HTTP run: on a shared machine, figures taken beside a busy neighbour are flagged.
environment: BENCH_DATABASE_URL (admin connection, default postgres://postgres@127.0.0.1:5432/postgres),
             BENCH_REDIS_URL (default redis://127.0.0.1:6379),
             BENCH_CPU_PROF=DIR (the measured check gateway, and the smpp and smtp scenarios' gateways, write a V8 CPU profile
                               into DIR when they stop; smpp and smtp print their top self-time functions),
             BENCH_SERVE_THREADS=N (the check gateways serve on N threads, SERVE_THREADS; default 1)`

function options () {
  let values
  try {
    ({ values } = parseArgs({
      args: process.argv.slice(2),
      options: {
        only: { type: 'string' },
        quick: { type: 'boolean', default: false },
        'size-10m': { type: 'boolean', default: false },
        'scrub-lines': { type: 'string' },
        present: { type: 'string' },
        generator: { type: 'string' },
        'no-build': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false }
      }
    }))
  } catch (err) {
    process.stderr.write(`bench: ${err.message}\n${USAGE}\n`)
    process.exit(2)
  }
  if (values.help) { process.stdout.write(USAGE + '\n'); process.exit(0) }
  const only = values.only === undefined ? SCENARIOS : values.only.split(',').map(s => s.trim()).filter(Boolean)
  const unknown = only.filter(s => !SCENARIOS.includes(s))
  if (unknown.length > 0 || only.length === 0) {
    process.stderr.write(`bench: unknown scenario ${unknown.join(', ') || '(none given)'}; known: ${SCENARIOS.join(', ')}\n`)
    process.exit(2)
  }
  if (values.generator !== undefined && !['wrk', 'autocannon'].includes(values.generator)) {
    process.stderr.write('bench: --generator must be wrk or autocannon\n')
    process.exit(2)
  }
  let scrubLines = values.quick ? SCRUB_LINES_QUICK : SCRUB_LINES_MAIN
  if (values['scrub-lines'] !== undefined) {
    scrubLines = Number(values['scrub-lines'])
    if (!/^\d+$/.test(values['scrub-lines']) || scrubLines < 1000 || scrubLines > 20_000_000) {
      process.stderr.write('bench: --scrub-lines must be an integer from 1000 to 20000000\n')
      process.exit(2)
    }
  }
  const present = values.present === undefined ? 50 : Number(values.present)
  if (!/^\d+$/.test(values.present ?? '60') || present < 3 || present > 98) {
    process.stderr.write('bench: --present must be an integer from 3 to 98 (% of checked keys that have a record)\n')
    process.exit(2)
  }
  return { only: new Set(only), quick: values.quick, size10m: values['size-10m'], scrubLines, present, generator: values.generator, build: !values['no-build'] }
}

// ---------------------------------------------------------------------------------------------------------------

async function bloomScenario (ctx) {
  const file = join(BENCH_DIR, 'bloom.js')
  if (!existsSync(file)) return skipped('bloom', 'bench/bloom.js is missing')
  const args = [file, ...(ctx.quick ? ['--n', '200000'] : [])]
  const r = await run(process.execPath, args, { label: 'bloom', timeoutMs: 900_000 })
  const lines = r.stdout.trim().split('\n')
  let j = null
  for (const line of lines) {
    try { const o = JSON.parse(line); if (o?.scenario === 'bloom-lookup') j = o } catch {}
  }
  if (j === null) throw new Error('bench/bloom.js printed no {"scenario":"bloom-lookup"} line')
  for (const line of lines) if (!line.startsWith('{')) process.stdout.write(`   ${line}\n`)
  const ours = `${fmtNum(j.value, 1)} ns/lookup (${fmtNum(1e3 / j.value, 1)} M/s)`
  const base = `${fmtNum(j.baseline, 1)} ns/lookup (${fmtNum(1e3 / j.baseline, 2)} M/s)`
  // bloom.js's ratio is baseline ns ÷ ours ns, i.e. ours ÷ baseline in throughput, like every other ratio here.
  const notes = [`n=${fmtInt(j.n)}, target fpr ${j.fpr}; measured fpr ${j.ours_fpr} vs ${j.baseline_fpr}; false negatives ${j.ours_false_negatives} / ${j.baseline_false_negatives}; size ${fmtNum(j.ours_bytes / 1048576)} vs ${fmtNum(j.baseline_bytes / 1048576)} MiB`]
  print('bloom', ours, `bloom-filters ${base}`, j.ratio, notes)
  return {
    scenario: 'bloom',
    status: 'ok',
    measure: `bloom lookup incl. hashing, ${fmtInt(j.n)} keys`,
    ours: { value: 1e9 / j.value, text: ours },
    baseline: { label: 'bloom-filters BloomFilter.has', value: 1e9 / j.baseline, text: base },
    ratio: j.ratio,
    notes,
    details: j
  }
}

function skipped (scenario, reason) {
  process.stdout.write(`\n== ${scenario}\n   skipped: ${reason}\n`)
  return { scenario, status: 'skipped', reason }
}

// Short notes for the table: the one figure of each scenario that the ratio does not show.
function tableNote (r) {
  const d = r.details ?? {}
  switch (r.scenario) {
    case 'bloom': return `fpr ${d.ours_fpr} vs ${d.baseline_fpr}`
    case 'check-single': case 'check-batch':
      return `p99 ${fmtNum(d.gateway.p99Ms)} vs ${fmtNum(d.bare.p99Ms)} ms; ${d.verified.wrong === 0 ? 'answers verified' : `${d.verified.wrong} WRONG answers`}` +
        (d.gateway.otherCpu > 0.15 || d.bare.otherCpu > 0.15 ? '; other processes were busy during the run' : '')
    case 'load': case 'load-10m':
      return `Redis ${fmtNum(d.bytesPerConsentUsedMemoryDelta, 0)} B/consent (used_memory Δ), ${fmtNum(d.bytesPerConsentMemoryUsage, 0)} B by MEMORY USAGE`
    case 'import': case 'import-10m':
      return `${fmtInt(d.rows)} rows, ${fmtInt(d.applied)} applied; import also writes the ledger`
    case 'propagation': case 'propagation-new':
      return `ratio = check RTT ÷ propagation p50; goal p99 < ${d.goalP99Ms} ms ${d.goalMet ? 'met' : 'NOT met'}; from send p99 ${fmtNum(d.fromSend.p99)} ms; ${d.samples} samples` +
        (d.failed + d.timeouts > 0 ? `, ${d.failed} failed, ${d.timeouts} timed out` : '')
    case 'scrub':
      return `peak RSS ${fmtInt(d.peakRssBytes / 1048576)} MiB; upload ${fmtNum(d.uploadSeconds, 1)} s + processing ${fmtNum(d.processSeconds, 1)} s + download ${fmtNum(d.downloadSeconds, 1)} s; ` +
        (d.verified.wrong === 0 && d.verified.missing === 0 ? 'every line verified' : `${d.verified.wrong} WRONG lines`)
    case 'scrub-filter':
      return `${fmtInt(d.lines)} lines; over the gateway's real filter ${d.oursRealFilter !== null ? fmtNum(d.oursRealFilter.nsPerLine, 1) + ' ns/line' : 'n/a'}; normalise alone ${fmtNum(d.normalizeOnly.nsPerLine, 1)} ns`
    case 'scrub-check-p99':
      return `ratio = p99 alone ÷ p99 beside the scrub; scrub ran at ${fmtInt(d.concurrentScrubLinesPerSecond)} lines/s meanwhile; ` +
        `another Redis client's GET p99 ${fmtNum(d.redisWaitMsDuringScrub.p99)} ms (max ${fmtNum(d.redisWaitMsDuringScrub.max)}) during a scrub`
    case 'messages':
      return `added p50 ${fmtNum(d.addedP50Ms)} / p99 ${fmtNum(d.addedP99Ms)} ms under load, ${fmtNum(d.added1P50Ms)} / ${fmtNum(d.added1P99Ms)} ms on 1 connection; decision log ${fmtInt(d.decisionLog.writtenPerSecond)}/s`
    case 'messages-decision-log':
      return d.keepsUp ? `keeps up: ${fmtInt(d.rowsWritten)} rows for ${fmtInt(d.answered)} answered after the final flush (a decision is journalled before its answer: requests cut off in flight at the end have one too)` : `MISMATCH: ${fmtInt(d.rowsWritten)} rows for ${fmtInt(d.answered)} answered`
    case 'smpp':
      return `p50 ${fmtNum(d.gateway.measured.p50Ms)} / p99 ${fmtNum(d.gateway.measured.p99Ms)} ms vs ${fmtNum(d.direct.measured.p50Ms)} / ${fmtNum(d.direct.measured.p99Ms)} ms; ` +
        `gateway CPU ${fmtInt((d.gateway.cpu?.gateway ?? NaN) * 100)}% of a core; goals ≥ ${d.goals.ratio}× ${d.goals.ratioMet ? 'met' : 'NOT met'}, ≥ ${fmtInt(d.goals.rate)}/s ${d.goals.rateMet ? 'met' : 'NOT met'}; ` +
        (d.check.gwConsistent ? 'SMSC accepted = gateway ok answers' : 'MISMATCH between SMSC accepted and ok answers')
    case 'smtp':
      return `accepted ${fmtInt(d.gateway.measured.okPerSecond)}/s (${fmtRatio(d.acceptedRatio)}), ${fmtInt(d.gateway.spoolAtEnd)} in the spool at the end; ` +
        `p50 ${fmtNum(d.gateway.measured.p50Ms)} / p99 ${fmtNum(d.gateway.measured.p99Ms)} ms vs ${fmtNum(d.direct.measured.p50Ms)} / ${fmtNum(d.direct.measured.p99Ms)} ms; ` +
        `gateway CPU ${fmtInt((d.gateway.cpu?.gateway ?? NaN) * 100)}% of a core; goal ≥ ${d.goals.ratio}× ${d.goals.ratioMet ? 'met' : 'NOT met'}; ` +
        (d.check.gateway.exact && d.check.direct.exact ? 'every accepted message arrived exactly once' : 'MISMATCH between accepted and arrived messages')
    default: return ''
  }
}

function markdown (results, info, ctx) {
  const esc = (s) => String(s).replace(/\|/g, '\\|')
  const lines = [
    `Benchmarks — ${info.date.slice(0, 10)}, Node ${info.node}, ${info.cpu}, ${info.cores} cores${ctx.quick ? ' (--quick: small sizes, short runs)' : ''}`,
    '',
    '| Scenario | Measure | iys-gateway | Baseline | Baseline figure | Ratio | Notes |',
    '|---|---|---|---|---|---|---|'
  ]
  for (const r of results) {
    if (r.status !== 'ok') {
      lines.push(`| ${r.scenario} | ${r.status} | — | — | — | — | ${esc(r.reason)} |`)
      continue
    }
    lines.push(`| ${r.scenario} | ${esc(r.measure)} | ${esc(r.ours.text)} | ${esc(r.baseline?.label ?? 'none')} | ${esc(r.baseline?.text ?? '—')} | ${fmtRatio(r.ratio)} | ${esc(tableNote(r))} |`)
  }
  lines.push('')
  lines.push('Ratio = iys-gateway ÷ baseline in throughput, or baseline ÷ iys-gateway for latencies (higher is better). ' +
    `HTTP load generator: ${ctx.generatorUsed ?? ctx.generator}. Gateway, Redis, Postgres and the load generator share the machine's ${info.cores} cores ` +
    `(1-min load average at the start of each scenario: ${results.filter(r => r.loadavgAtStart !== undefined).map(r => `${r.scenario} ${r.loadavgAtStart}`).join(', ') || 'n/a'}).`)
  lines.push(ctx.size10m
    ? '10M-row data set: included (load-10m, import-10m).'
    : `Data set: ${fmtInt(ctx.quick ? ROWS_QUICK : ROWS_MAIN)} generated consents; the 10M-row data set is opt-in (\`npm run bench -- --size-10m\`).`)
  if (results.some(r => r.scenario === 'smpp')) lines.push('SMPP: its own data set (10,000 recipients with an ONAY for the bind\'s brand: every submit_sm is checked, allowed and forwarded); ESME = node-smpp client in its own process, fake SMSC in its own.')
  if (results.some(r => r.scenario === 'smtp')) lines.push('SMTP: its own data set (10,000 addresses with an EPOSTA ONAY for the key\'s brand: every message is allowed, spooled and relayed); client = nodemailer pool in its own process, fake relay in its own; the figure is what arrived at the relay, the accepted rate is in the notes.')
  if (results.some(r => r.scenario === 'scrub')) lines.push(`Scrub list: ${fmtInt(ctx.scrubLines)} lines (\`--scrub-lines N\`), with its own consents (half the list's lines have a record).`)
  return lines.join('\n')
}

// ---------------------------------------------------------------------------------------------------------------

async function main () {
  const opts = options()
  const info = systemInfo()
  const pid = process.pid
  const ctx = {
    pid,
    quick: opts.quick,
    size10m: opts.size10m,
    scrubLines: opts.scrubLines,
    present: opts.present,
    adminUrl: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    redisUrl: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
    prefix: `bench:${pid}:`,
    // Under bench/out (git-ignored) rather than /tmp: data files are large, and shared /tmp gets swept.
    tmpDir: (mkdirSync(OUT_DIR, { recursive: true }), mkdtempSync(join(OUT_DIR, `tmp-${pid}-`))),
    databases: new Set(),
    datasets: new Map(),
    psql: hasCommand('psql'),
    generator: opts.generator ?? (hasCommand('wrk', ['-v']) ? 'wrk' : 'autocannon'),
    redisPid: null,
    quietWaitMs: opts.quick ? 3000 : 60_000,
    redis: null
  }

  // Gateways of this run keep scrub jobs and spooled decisions in the run's own folder (removed at the end).
  setGatewayDefaults({ SCRUB_DIR: join(ctx.tmpDir, 'scrub'), DECISION_SPOOL_DIR: join(ctx.tmpDir, 'spool') })

  let cleaned = null
  const cleanup = () => {
    cleaned ??= (async () => {
      await killAll().catch(err => log(`clean-up: ${err.message}`))
      for (const db of ctx.databases) await dropDatabase(ctx.adminUrl, db).catch(err => log(`clean-up: cannot drop ${db}: ${err.message}`))
      if (ctx.redis !== null) {
        const n = await unlinkPrefix(ctx.redis, ctx.prefix).catch(err => { log(`clean-up: Redis: ${err.message}`); return 0 })
        log(`clean-up: dropped ${[...ctx.databases].join(', ') || 'no database'}, unlinked ${fmtInt(n)} Redis keys under ${ctx.prefix}`)
        ctx.redis.disconnect()
      }
      rmSync(ctx.tmpDir, { recursive: true, force: true })
    })()
    return cleaned
  }
  process.on('exit', killAllSync)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      log(`\nbench: ${sig}, cleaning up`)
      abortAll()
      cleanup().finally(() => process.exit(130))
    })
  }

  const results = []
  try {
    if (opts.build) {
      log('building src → dist (tsc)')
      await run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], { label: 'tsc', timeoutMs: 300_000 })
    }
    ctx.redis = new Redis(ctx.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2, connectTimeout: 5000 })
    ctx.redis.on('error', () => {})
    await ctx.redis.connect()
    const pidText = /^process_id:(\d+)/m.exec(await ctx.redis.info('server'))?.[1]
    if (pidText !== undefined && existsSync(`/proc/${pidText}/stat`)) ctx.redisPid = Number(pidText)

    log(`bench: pid ${pid}, database iys_bench_${pid}, Redis prefix ${ctx.prefix}, HTTP load by ${ctx.generator}` +
      `${ctx.quick ? ', --quick' : ''}${ctx.size10m ? ', --size-10m' : ''}`)
    if (ctx.generator === 'wrk') ctx.generatorUsed = 'wrk (2 threads)'
    else ctx.generatorUsed = 'autocannon (worker processes, summed)'

    const plan = []
    if (opts.only.has('bloom')) plan.push(['bloom', () => bloomScenario(ctx)])
    if (opts.only.has('check-single')) plan.push(['check-single', () => checkSingleScenario(ctx)])
    if (opts.only.has('check-batch')) plan.push(['check-batch', () => checkBatchScenario(ctx)])
    // The servers are idle during load/import but still hold memory and a Redis connection: stop them first.
    plan.push([null, () => stopServers(ctx)])
    if (opts.only.has('load')) plan.push(['load', () => loadScenario(ctx, 'main')])
    if (opts.only.has('import')) plan.push(['import', () => importScenario(ctx, 'main')])
    if (opts.size10m && opts.only.has('load')) plan.push(['load-10m', () => loadScenario(ctx, '10m')])
    if (opts.size10m && opts.only.has('import')) plan.push(['import-10m', () => importScenario(ctx, '10m')])
    // These change the data set (rejections, new keys, decisions), so they come after everything that reads it.
    if (opts.only.has('propagation')) plan.push(['propagation', () => propagationScenario(ctx)])
    if (opts.only.has('scrub')) plan.push(['scrub', () => scrubScenario(ctx)])
    if (opts.only.has('messages')) plan.push(['messages', () => messagesScenario(ctx)])
    // Its own small data set (database and Redis prefix of its own): independent of the others.
    if (opts.only.has('smpp')) plan.push(['smpp', () => smppScenario(ctx)])
    if (opts.only.has('smtp')) plan.push(['smtp', () => smtpScenario(ctx)])

    for (const [name, fn] of plan) {
      if (isAborting()) break
      if (name === null) { await fn(); continue }
      const started = Date.now()
      const load1 = +loadavg()[0].toFixed(2) // a busy machine (tests, builds) depresses every figure: keep a trace
      try {
        const out = await fn()
        // A scenario may report several rows (e.g. scrub: end to end, filter step, check p99 beside it).
        for (const r of Array.isArray(out) ? out : [out]) {
          r.wallSeconds = (Date.now() - started) / 1000
          r.loadavgAtStart = load1
          results.push(r)
        }
      } catch (err) {
        process.stdout.write(`\n== ${name}\n   FAILED: ${err.message}\n`)
        results.push({ scenario: name, status: 'failed', reason: err.message })
      }
    }
  } finally {
    await cleanup()
  }

  const md = markdown(results, info, ctx)
  process.stdout.write('\n' + md + '\n')
  mkdirSync(OUT_DIR, { recursive: true })
  const stamp = info.date.replace(/:/g, '-').replace(/\.\d+Z$/, 'Z')
  const file = join(OUT_DIR, `results-${stamp}.json`)
  writeFileSync(file, JSON.stringify({
    ...info,
    quick: ctx.quick,
    size10m: ctx.size10m,
    rows: ctx.quick ? ROWS_QUICK : ROWS_MAIN,
    scrubLines: ctx.scrubLines,
    present: ctx.present,
    generator: ctx.generatorUsed,
    markdown: md,
    results
  }, null, 2) + '\n')
  process.stdout.write(`\nresults written to ${file}\n`)
  return results.some(r => r.status === 'failed') ? 1 : 0
}

main().then(code => { process.exitCode = code }, err => {
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`)
  process.exitCode = 1
})
