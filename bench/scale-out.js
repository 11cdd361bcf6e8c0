// Scale-out simulation (issue 14): k gateway processes against a real Redis Cluster here (3 masters with a replica
// each, src/dev/redis-cluster.ts) and one Postgres, k = 1…K. For each k: every gateway is driven with single checks
// at once (wrk, one per gateway, 16 connections each, the same bodies: `--present` of the keys have a record) and the
// figures are summed; then `--samples` RETs are written through one more gateway (the writer: Postgres, the consent
// API and the change applier, not measured) and each is timed until every one of the k gateways answers REJECTED.
// Both with the gateways answering from their local replica and the Redis way (REPLICA=false), which is what puts
// the cluster itself on the check path. This machine has two cores: k gateways share them with the cluster, wrk and
// Postgres, so the total cannot grow with k here; what the run shows is how the total is shared, what propagation
// does as k grows, and the cluster's share of the CPU. The capacity plan in the README scales these on paper.
//
//   npm run build && node bench/scale-out.js [--rows 200000] [--gateways 3] [--seconds 8] [--samples 60] [--present 50]
//
// Prints a readable block, then one JSON line.

import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { arg } from './args.js'
import {
  CLI, cpuByName, createDatabase, dbUrl, dropDatabase, fmtInt, fmtNum, gatewayEnv, hasCommand, killAll, killChild,
  log, machineBusySeconds, metricsText, percentile, postJson, query, run, runHttpLoad, setGatewayDefaults, sleep, startGateway, systemInfo
} from './lib.js'
import { startRedisCluster } from '../dist/src/dev/redis-cluster.js'
import { formatIysDate } from '../dist/src/domain/time.js'
import { mulberry32 } from '../dist/src/util/random.js'

const rows = Number(arg('rows', '200000'))
const maxGateways = Number(arg('gateways', '3'))
const seconds = Number(arg('seconds', '8'))
const samples = Number(arg('samples', '60'))
const present = Number(arg('present', '50')) / 100
if (!(rows >= 10_000) || !(maxGateways >= 1 && maxGateways <= 8) || !(seconds >= 2) || !(samples >= 10) || !(present >= 0 && present <= 1)) {
  console.error('bench/scale-out: --rows ≥ 10000, --gateways 1…8, --seconds ≥ 2, --samples ≥ 10, --present 0…100')
  process.exit(2)
}
const ADMIN = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
const CONNECTIONS = 16
const POLL_LIMIT_MS = 5000

const tmp = mkdtempSync(join(tmpdir(), 'iys-scale-'))
setGatewayDefaults({ SCRUB_DIR: join(tmp, 'scrub'), DECISION_SPOOL_DIR: join(tmp, 'spool') })
const dbName = `iys_scale_${randomBytes(4).toString('hex')}`
const prefix = `scale${randomBytes(3).toString('hex')}:`
let cluster = null

try {
  const generator = hasCommand('wrk', ['-v']) ? 'wrk' : 'autocannon'
  log(`[scale-out] starting a Redis Cluster (3 masters, 3 replicas) and a database of ${fmtInt(rows)} consents`)
  cluster = await startRedisCluster({ args: ['--cluster-require-full-coverage', 'no'] })
  await createDatabase(ADMIN, dbName)
  const url = dbUrl(ADMIN, dbName)
  const redisVars = { ...cluster.env, REDIS_PREFIX: prefix }
  const cliEnv = gatewayEnv({ DATABASE_URL: url, ...redisVars })
  const file = join(tmp, 'consents.csv')
  for (const step of [['migrate'], ['generate', '--rows', String(rows), '--brands', '4', '--seed', '21', '--out', file], ['import', file], ['load']]) {
    await run(process.execPath, [CLI, ...step], { env: cliEnv, label: step[0] })
  }
  const writer = await startGateway('writer', { DATABASE_URL: url, ...redisVars })

  // Check bodies: MESAJ/BIREYSEL of one brand, `present` of them with a record.
  const keys = await query(url, `SELECT brand_code::text AS brand, iys_code::text AS iys, recipient, status FROM consents
    WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND recipient LIKE '+905%' ORDER BY random() LIMIT 20000`)
  const rnd = mulberry32(5)
  const bodies = keys.slice(0, 4000).map(k => JSON.stringify({
    brandCode: k.brand, type: 'MESAJ', recipient: rnd() < present ? k.recipient : '+9054' + String((rnd() * 1e8) | 0).padStart(8, '0')
  }))
  const onay = keys.filter(k => k.status === 'ONAY')
  let nextOnay = 0

  const results = []
  for (const mode of ['replica', 'redis']) {
    for (let k = 1; k <= maxGateways; k++) {
      const gws = []
      for (let i = 0; i < k; i++) gws.push(await startGateway(`gateway ${i + 1}/${k} (${mode})`, { ...redisVars, REPLICA: mode === 'replica' ? 'true' : 'false' }))
      if (mode === 'replica') {
        for (const g of gws) {
          const until = Date.now() + 60_000
          while (!/^iys_replica_serving 1$/m.test(await metricsText(g.url))) {
            if (Date.now() > until) throw new Error(`${g.url}: the replica did not serve within 60 s`)
            await sleep(100)
          }
        }
      }
      await sleep(1000)
      const redisSeconds = () => [...cpuByName('redis-server').values()].reduce((a, b) => a + b, 0)
      const redis0 = redisSeconds()
      const busy0 = machineBusySeconds()
      const loads = await Promise.all(gws.map((g, i) => runHttpLoad({ generator, url: g.url + '/v1/check', bodies, connections: CONNECTIONS, seconds, tmpDir: tmp, label: `scale-${mode}-${k}-${i}` })))
      const redisCpu = (redisSeconds() - redis0) / seconds
      const machine = (machineBusySeconds() - busy0) / seconds
      const total = loads.reduce((s, l) => s + l.rps, 0)
      const bad = loads.reduce((s, l) => s + l.non2xx + l.errors, 0)

      // Propagation: a RET on the writer, until every one of the k gateways answers REJECTED.
      const lat = []
      let timeouts = 0
      for (let s = 0; s < samples; s++) {
        const key = onay[nextOnay++]
        if (key === undefined) throw new Error('ran out of ONAY keys for the propagation samples; raise --rows')
        const body = { recipient: key.recipient, type: 'MESAJ', source: 'HS_WEB', status: 'RET', consentDate: formatIysDate(Math.floor(Date.now() / 1000) - 60) }
        const t0 = performance.now()
        const res = await postJson(`${writer.url}/sps/${key.iys}/brands/${key.brand}/consents`, body)
        if (res.status !== 200) throw new Error(`RET write answered ${res.status}: ${JSON.stringify(res.json)}`)
        const seen = await Promise.all(gws.map(async g => {
          while (performance.now() - t0 < POLL_LIMIT_MS) {
            const r = await postJson(g.url + '/v1/check', { brandCode: key.brand, type: 'MESAJ', recipient: key.recipient })
            if (r.json?.results?.[0]?.reason === 'REJECTED') return performance.now() - t0
          }
          return NaN
        }))
        if (seen.some(Number.isNaN)) timeouts++
        else lat.push(Math.max(...seen))
        await sleep(20)
      }
      lat.sort((a, b) => a - b)
      const row = {
        mode, gateways: k, totalRps: Math.round(total), perGatewayRps: Math.round(total / k),
        p99Ms: Math.max(...loads.map(l => l.p99Ms)), non2xxOrErrors: bad, redisCpu: +redisCpu.toFixed(2), machineCpu: +machine.toFixed(2),
        propagationP50Ms: +percentile(lat, 50).toFixed(2), propagationP99Ms: +percentile(lat, 99).toFixed(2), propagationTimeouts: timeouts
      }
      results.push(row)
      log(`[scale-out] ${mode}, ${k} gateway(s): ${fmtInt(total)} checks/s in all (${fmtInt(total / k)} each, p99 ${fmtNum(row.p99Ms)} ms${bad > 0 ? `, ${bad} non-2xx/errors` : ''}), ` +
        `Redis ${fmtNum(redisCpu * 100, 0)} % of a core, machine ${fmtNum(machine * 100, 0)} % of ${systemInfo().cores * 100} %; ` +
        `RET → REJECTED on all ${k}: p50 ${fmtNum(row.propagationP50Ms)} ms, p99 ${fmtNum(row.propagationP99Ms)} ms${timeouts > 0 ? `, ${timeouts} over ${POLL_LIMIT_MS} ms` : ''}`)
      for (const g of gws) await killChild(g.child)
    }
  }
  // Postgres sizes for the capacity plan: the current state and the ledger per row (tables and their indexes), and the
  // decision log per decision (checks on the writer, which has a decision log, then its flush).
  log('[scale-out] sizing Postgres: the decision log of a few seconds of checks on the writer')
  await runHttpLoad({ generator, url: writer.url + '/v1/check', bodies, connections: CONNECTIONS, seconds: 4, tmpDir: tmp, label: 'scale-decisions' })
  await sleep(3000)
  await killChild(writer.child)
  const sizes = (await query(url, `SELECT
      (SELECT count(*) FROM consents)::float8 AS consents, pg_total_relation_size('consents')::float8 AS consents_bytes,
      (SELECT count(*) FROM consent_history)::float8 AS changes, pg_total_relation_size('consent_history')::float8 AS changes_bytes,
      (SELECT count(*) FROM decisions)::float8 AS decisions,
      ((SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits WHERE inhparent = 'decisions'::regclass)
        + pg_total_relation_size('decision_batches'))::float8 AS decisions_bytes`))[0] // decisions: its partitions hold the rows
  const perRow = (bytes, n) => n > 0 ? Math.round(bytes / n) : NaN
  const postgres = {
    consentBytes: perRow(sizes.consents_bytes, sizes.consents), changeBytes: perRow(sizes.changes_bytes, sizes.changes),
    decisionBytes: perRow(sizes.decisions_bytes, sizes.decisions), decisions: sizes.decisions
  }
  log(`[scale-out] Postgres: ${postgres.consentBytes} B per consent (consents and its indexes), ${postgres.changeBytes} B per ledger change, ${postgres.decisionBytes} B per decision (${fmtInt(postgres.decisions)} decisions)`)

  console.log('')
  console.log('| mode | gateways | checks/s in all | per gateway | worst p99 | Redis CPU | machine CPU | RET → REJECTED on all, p50 / p99 |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const r of results) {
    console.log(`| ${r.mode === 'replica' ? 'replica' : 'Redis way'} | ${r.gateways} | ${fmtInt(r.totalRps)} | ${fmtInt(r.perGatewayRps)} | ${fmtNum(r.p99Ms)} ms | ${fmtNum(r.redisCpu * 100, 0)} % | ${fmtNum(r.machineCpu * 100, 0)} % | ${fmtNum(r.propagationP50Ms)} / ${fmtNum(r.propagationP99Ms)} ms${r.propagationTimeouts > 0 ? ` (${r.propagationTimeouts} timeouts)` : ''} |`)
  }
  console.log(JSON.stringify({ system: systemInfo(), rows, connectionsPerGateway: CONNECTIONS, seconds, present, generator, results, postgres }))
} finally {
  await killAll()
  await cluster?.stop()
  await dropDatabase(ADMIN, dbName).catch(err => log(`clean-up: cannot drop ${dbName}: ${err.message}`))
  rmSync(tmp, { recursive: true, force: true })
}
