// Scenarios 4 and 5 (`load`, `import`), and the data set every other scenario stands on.
//
// A data set is prepared lazily and once: generate a consent CSV → migrate a private database → `iys-gateway
// import` (timed: that is the import scenario) → `iys-gateway load` into a private Redis prefix (timed, with Redis
// memory before and after: that is the load scenario). The check scenarios only need it to exist, so
// `--only check-single` prepares it without reporting these figures.

import { statSync } from 'node:fs'
import { join } from 'node:path'
import { layout } from '../dist/src/filter/layout.js'
import {
  CLI, createDatabase, dbUrl, fmtInt, fmtNum, gatewayEnv, log, median, memoryUsageOf, print, query, run, sleep, usedMemory, waitQuiet
} from './lib.js'

const SEED = 1
const BRANDS = 5
export const ROWS_MAIN = 1_000_000
export const ROWS_QUICK = 100_000
// BENCH_10M_ROWS only exists to smoke-test the --size-10m path of the runner quickly.
export const ROWS_10M = Number(process.env.BENCH_10M_ROWS ?? 10_000_000)

/** Where a data set lives: its own database and Redis prefix (both under this run's pid, removed at the end). */
function spec (ctx, which) {
  if (which === '10m') {
    return { which, rows: ROWS_10M, db: `iys_bench_${ctx.pid}_10m`, prefix: `${ctx.prefix}10m:`, label: ROWS_10M === 10_000_000 ? '10M' : `${ROWS_10M / 1e3}k as 10M` }
  }
  const rows = ctx.quick ? ROWS_QUICK : ROWS_MAIN
  return { which, rows, db: `iys_bench_${ctx.pid}`, prefix: ctx.prefix, label: rows >= 1e6 ? `${rows / 1e6}M` : `${rows / 1e3}k` }
}

// Generous limits that still end a hung child (60 s + 200 µs a row: 4 min for 1M rows, 34 min for 10M).
const limitFor = (rows) => 60_000 + rows * 0.2

const COLUMNS = 'brand_code, type, recipient_type, recipient, status, source, consent_date, seq'

/** Generated, migrated and imported (the import is timed once, on a fresh database). */
export async function ensureImported (ctx, which = 'main') {
  let ds = ctx.datasets.get(which)
  if (ds !== undefined) return ds
  const s = spec(ctx, which)
  ds = { ...s, url: dbUrl(ctx.adminUrl, s.db), file: join(ctx.tmpDir, `consents-${s.rows}.csv`), loaded: null }

  log(`[data ${s.label}] generating ${fmtInt(s.rows)} consent rows (seed ${SEED}, ${BRANDS} brands)`)
  const gen = await run(process.execPath, [CLI, 'generate', '--rows', String(s.rows), '--brands', String(BRANDS), '--seed', String(SEED), '--out', ds.file],
    { env: gatewayEnv({}), label: 'generate', timeoutMs: limitFor(s.rows) })
  ds.generate = { seconds: gen.seconds, bytes: statSync(ds.file).size }

  ctx.databases.add(s.db) // registered before creation so that a failure half-way still drops it
  await createDatabase(ctx.adminUrl, s.db)
  const env = gatewayEnv({ DATABASE_URL: ds.url })
  await run(process.execPath, [CLI, 'migrate'], { env, label: 'migrate', timeoutMs: 120_000 })

  await waitQuiet(ctx.quietWaitMs)
  log(`[data ${s.label}] importing ${fmtInt(s.rows)} rows (${fmtNum(ds.generate.bytes / 1048576, 1)} MiB)`)
  const imp = await run(process.execPath, [CLI, 'import', ds.file, '--rejects', join(ctx.tmpDir, `rejects-${s.rows}.csv`)],
    { env, label: 'import', forward: true, timeoutMs: limitFor(s.rows) })
  const r = JSON.parse(imp.stdout.trim().split('\n').pop())
  ds.import = { seconds: imp.seconds, ...r }
  ctx.datasets.set(which, ds)
  return ds
}

/** Imported and loaded into Redis (the load is timed once, with Redis memory measured around it). */
export async function ensureLoaded (ctx, which = 'main') {
  const ds = await ensureImported(ctx, which)
  if (ds.loaded !== null) return ds
  await waitQuiet(ctx.quietWaitMs)
  const before = await usedMemory(ctx.redis)
  log(`[data ${ds.label}] loading Postgres → Redis (prefix ${ds.prefix})`)
  const env = gatewayEnv({ DATABASE_URL: ds.url, REDIS_URL: ctx.redisUrl, REDIS_PREFIX: ds.prefix })
  const ld = await run(process.execPath, [CLI, 'load'], { env, label: 'load', forward: true, timeoutMs: limitFor(ds.rows) })
  const r = JSON.parse(ld.stdout.trim().split('\n').pop())
  await sleep(200)
  const after = await usedMemory(ctx.redis)
  // The used_memory delta is what the brief asks for, but any other client of this Redis moves it too; the sum of
  // MEMORY USAGE over exactly this version's keys is immune to that, so both are reported.
  const own = await memoryUsageOf(ctx.redis, layout(ds.prefix).versionPatterns(r.version))
  ds.loaded = { seconds: ld.seconds, internalSeconds: r.seconds, rows: r.rows, version: r.version, memBefore: before, memAfter: after, own }
  return ds
}

function psqlAvailable (ctx) {
  return ctx.psql ? null : 'psql not found on PATH'
}

async function psql (url, command, label, timeoutMs) {
  return run('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', command], { label, timeoutMs })
}

// ---------------------------------------------------------------------------------------------------------------

export async function loadScenario (ctx, which = 'main') {
  const ds = await ensureLoaded(ctx, which)
  const L = ds.loaded
  const rate = L.rows / L.seconds
  const deltaPer = (L.memAfter - L.memBefore) / L.rows
  const ownPer = L.own.bytes / L.rows

  // Baseline: the cheapest possible full read of the same table by the stock client, same columns, same run.
  let baseline = null
  const skip = psqlAvailable(ctx)
  if (skip === null) {
    const runs = which === '10m' ? 1 : 3
    const secs = []
    await waitQuiet(ctx.quietWaitMs)
    for (let i = 0; i < runs; i++) {
      const r = await psql(ds.url, `\\copy (select ${COLUMNS} from consents) to '/dev/null'`, 'psql \\copy to', limitFor(ds.rows))
      secs.push(r.seconds)
    }
    const s = median(secs)
    baseline = { label: 'psql \\copy (select …) to /dev/null', value: L.rows / s, seconds: s, runs: secs }
  }
  const ratio = baseline === null ? NaN : rate / baseline.value
  const notes = [
    `${fmtInt(L.rows)} rows in ${fmtNum(L.seconds, 2)} s wall (CLI start included; load reports ${fmtNum(L.internalSeconds, 2)} s)`,
    `Redis ${fmtNum(deltaPer, 1)} B/consent (used_memory delta ${fmtNum((L.memAfter - L.memBefore) / 1048576, 1)} MiB), ${fmtNum(ownPer, 1)} B/consent by MEMORY USAGE over the ${fmtInt(L.own.keys)} keys of the version (buckets + bloom)`
  ]
  if (baseline !== null) notes.push(`psql median of ${baseline.runs.length}: ${baseline.runs.map(x => fmtNum(x, 2) + ' s').join(', ')}`)
  else notes.push(`baseline skipped: ${skip}`)
  print(`load (${ds.label})`, `${fmtInt(rate)} rows/s`, baseline === null ? 'n/a' : `${fmtInt(baseline.value)} rows/s`, ratio, notes)
  return {
    scenario: which === '10m' ? 'load-10m' : 'load',
    status: 'ok',
    measure: `rows/s, Postgres → Redis (${ds.label} rows)`,
    ours: { value: rate, text: `${fmtInt(rate)} rows/s` },
    baseline: baseline === null ? null : { label: baseline.label, value: baseline.value, text: `${fmtInt(baseline.value)} rows/s` },
    ratio,
    notes,
    details: {
      rows: L.rows, seconds: L.seconds, loadReportedSeconds: L.internalSeconds,
      redisUsedMemoryBefore: L.memBefore, redisUsedMemoryAfter: L.memAfter,
      bytesPerConsentUsedMemoryDelta: deltaPer, bytesPerConsentMemoryUsage: ownPer, versionKeys: L.own.keys,
      psqlSeconds: baseline?.runs ?? null
    }
  }
}

export async function importScenario (ctx, which = 'main') {
  const ds = await ensureImported(ctx, which)
  const I = ds.import
  const rate = I.rows / I.seconds

  // Baseline: psql \copy of the same consents, exported as a plain CSV, into a table shaped like `consents` (same
  // primary key and index). It does none of the import's parsing, normalisation, validation, staging, merge or
  // evidence-ledger writes, so it is the floor Postgres itself sets.
  let baseline = null
  const skip = psqlAvailable(ctx)
  if (skip === null) {
    const csv = join(ctx.tmpDir, `plain-${ds.rows}.csv`)
    const cols = 'brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, seq'
    await psql(ds.url, `\\copy (select ${cols} from consents) to '${csv}' csv`, 'psql export', limitFor(ds.rows))
    await query(ds.url, 'DROP TABLE IF EXISTS consents_copy; CREATE TABLE consents_copy (LIKE consents INCLUDING ALL)')
    const [{ n }] = await query(ds.url, 'SELECT count(*)::bigint AS n FROM consents')
    const rows = Number(n)
    const runs = which === '10m' ? 1 : 3
    const secs = []
    await waitQuiet(ctx.quietWaitMs)
    for (let i = 0; i < runs; i++) {
      if (i > 0) await query(ds.url, 'TRUNCATE consents_copy')
      const r = await psql(ds.url, `\\copy consents_copy (${cols}) from '${csv}' csv`, 'psql \\copy from', limitFor(ds.rows))
      secs.push(r.seconds)
    }
    await query(ds.url, 'DROP TABLE consents_copy')
    const s = median(secs)
    baseline = { label: 'psql \\copy consents_copy from plain CSV', value: rows / s, rows, seconds: s, runs: secs }
  }
  const ratio = baseline === null ? NaN : rate / baseline.value
  const notes = [
    `${fmtInt(I.rows)} rows read (${fmtInt(I.applied)} applied, ${fmtInt(I.superseded)} superseded, ${fmtInt(I.rejected)} rejected) in ${fmtNum(I.seconds, 2)} s wall`,
    'import also normalises, validates, merges through a staging table and writes the evidence ledger'
  ]
  if (baseline !== null) notes.push(`psql: ${fmtInt(baseline.rows)} rows, median of ${baseline.runs.length}: ${baseline.runs.map(x => fmtNum(x, 2) + ' s').join(', ')}`)
  else notes.push(`baseline skipped: ${skip}`)
  print(`import (${ds.label})`, `${fmtInt(rate)} rows/s`, baseline === null ? 'n/a' : `${fmtInt(baseline.value)} rows/s`, ratio, notes)
  return {
    scenario: which === '10m' ? 'import-10m' : 'import',
    status: 'ok',
    measure: `rows/s, CSV file → Postgres (${ds.label} rows)`,
    ours: { value: rate, text: `${fmtInt(rate)} rows/s` },
    baseline: baseline === null ? null : { label: baseline.label, value: baseline.value, text: `${fmtInt(baseline.value)} rows/s` },
    ratio,
    notes,
    details: { ...I, fileBytes: ds.generate.bytes, generateSeconds: ds.generate.seconds, psqlRows: baseline?.rows ?? null, psqlSeconds: baseline?.runs ?? null }
  }
}
