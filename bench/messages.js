// Scenario `messages` (issue 5): POST /v1/messages through the gateway to the fake carrier, against the same load
// sent straight to the fake carrier, same connections and duration, in the same run.
//
// The gateway runs in production shape: Redis (the loaded data set), DATABASE_URL (so the decision log writes every
// decision to Postgres) and UPSTREAM_MESAJ_URL pointing at `iys-gateway fake-carrier` (its own process). Every request
// carries one message (the fairest comparison with the carrier's one-message-per-request API) to a recipient that
// holds an ONAY, so every message is checked, allowed, forwarded and logged. Each request has a new messageId
// (generated per request by the wrk Lua script), so the carrier never answers from its idempotency memory.
// The direct run sends the JSON adapter's wire body (src/carriers/json-adapter.ts): POST {carrier}/messages with
// `idempotency-key: <messageId>` and {messageId, type, to, iysCode, brandCode, sender, text}.
//
// Two pairs of runs: saturated (CONNECTIONS connections: throughput ratio, p50/p99 under load) and one connection
// (added latency of the gateway hop without queueing). The decision log is measured from the gateway's metrics
// (iys_decision_log_written_total against iys_http_requests_total{route="messages"}) and from the `decisions` table:
// decisions/s written during the run, what was still buffered when it ended, and whether after a flush every
// answered request has exactly its one row.

import { join } from 'node:path'
import { ensureLoaded } from './load.js'
import {
  CLI, cpuSeconds, fmtInt, fmtNum, freePort, gatewayEnv, killChild, log, machineBusySeconds, metricSum, metricsText, print, query, runHttpLoad,
  sleep, spawnTracked, startGateway, threadCpuSeconds, threadShares, waitQuiet, waitReady, writeWrkTemplateScript, authFor
} from './lib.js'

const CONNECTIONS = 64
const TEXT = 'Bu hafta tum urunlerde indirim. Iptal icin RET yazip 3338e gonderin.'
const SENDER = 'ACME'

function timing (ctx) {
  return ctx.quick ? { seconds: 3, warmup: 1, latencySeconds: 2 } : { seconds: 10, warmup: 2, latencySeconds: 5 }
}

const pct = (x) => Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a'

async function getJson (url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
  return res.json()
}

/** Written and answered counters of the gateway, and the carrier's counters. */
async function counters (gwUrl, carrierUrl) {
  const text = await metricsText(gwUrl)
  const carrier = await getJson(carrierUrl + '/stats')
  return {
    written: metricSum(text, 'iys_decision_log_written_total'),
    spooled: metricSum(text, 'iys_decision_log_spooled_total'),
    answered: metricSum(text, 'iys_http_requests_total', { route: 'messages' }),
    answered200: metricSum(text, 'iys_http_requests_total', { route: 'messages', status: '200' }),
    forwarded: metricSum(text, 'iys_upstream_messages_total', { status: 'accepted' }),
    carrierSent: carrier.sent,
    carrierRequests: carrier.requests,
    carrierDuplicates: carrier.duplicates
  }
}

/** Waits (at most `ms`) until every answered message is written; returns the counters then. */
async function settle (gwUrl, carrierUrl, ms) {
  const deadline = Date.now() + ms
  let c = await counters(gwUrl, carrierUrl)
  while (c.written + c.spooled < c.answered && Date.now() < deadline) {
    await sleep(100)
    c = await counters(gwUrl, carrierUrl)
  }
  return c
}

async function decisionRows (url) {
  const [{ n }] = await query(url, "SELECT count(*)::bigint AS n FROM decisions WHERE source = 'messages'")
  return Number(n)
}

async function measure (ctx, { url, script, connections, seconds, label, pids }) {
  const c0 = pids.map(cpuSeconds)
  const th0 = threadCpuSeconds(pids[0])
  const r0 = ctx.redisPid !== null ? cpuSeconds(ctx.redisPid) : NaN
  const m0 = machineBusySeconds()
  const r = await runHttpLoad({ generator: 'wrk', url, connections, seconds, tmpDir: ctx.tmpDir, label, script })
  r.processCpu = pids.map((p, i) => (cpuSeconds(p) - c0[i]) / r.seconds)
  r.threads = threadShares(th0, threadCpuSeconds(pids[0]), r.seconds, pids[0])
  r.redisCpu = ctx.redisPid !== null ? (cpuSeconds(ctx.redisPid) - r0) / r.seconds : NaN
  r.machineCpu = (machineBusySeconds() - m0) / r.seconds
  r.connections = connections
  return r
}

export async function messagesScenario (ctx) {
  if (ctx.generator !== 'wrk') {
    process.stdout.write('\n== messages\n   skipped: needs wrk (a new messageId per request comes from its Lua script)\n')
    return { scenario: 'messages', status: 'skipped', reason: 'needs wrk (unique messageIds per request from a Lua script)' }
  }
  const ds = await ensureLoaded(ctx, 'main')
  const T = timing(ctx)

  // Recipients that hold an ONAY now (an earlier scenario may have rejected some keys of the data set).
  const keys = await query(ds.url, `
    SELECT brand_code::text AS brand, iys_code::text AS iys, recipient FROM consents
    WHERE type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND status = 'ONAY' AND recipient LIKE '+905%'
    ORDER BY random() LIMIT $1`, [ctx.quick ? 300 : 1000])
  if (keys.length < 10) throw new Error('the data set has too few MESAJ/BIREYSEL ONAY keys')

  const carrierPort = await freePort()
  const carrier = spawnTracked(process.execPath, [CLI, 'fake-carrier', '--port', String(carrierPort)], { env: gatewayEnv({}), label: 'fake-carrier' })
  const carrierUrl = `http://127.0.0.1:${carrierPort}`
  let gw = null
  try {
    await waitReady(carrierUrl + '/stats', carrier, 15_000)
    gw = await startGateway('gateway', {
      REDIS_URL: ctx.redisUrl, REDIS_PREFIX: ds.prefix, DATABASE_URL: ds.url, UPSTREAM_MESAJ_URL: carrierUrl
    })

    // Answers checked before timing: through the gateway every message is allowed and forwarded; straight to the
    // carrier every message is accepted with an id.
    let wrong = 0
    let example = null
    for (let i = 0; i < Math.min(20, keys.length); i++) {
      const k = keys[i]
      const id = `verify-${ctx.pid}-${i}`
      const g = await fetch(gw.url + '/v1/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...authFor(gw.url) },
        body: JSON.stringify({ iysCode: Number(k.iys), brandCode: Number(k.brand), type: 'MESAJ', commercial: true, messages: [{ messageId: id, recipient: k.recipient, sender: SENDER, text: TEXT }] }),
        signal: AbortSignal.timeout(5000)
      })
      const gj = await g.json().catch(() => null)
      const r = gj?.results?.[0]
      if (g.status !== 200 || r?.allowed !== true || r?.forwarded !== true || r?.carrier?.status !== 'accepted') { wrong++; example ??= { via: 'gateway', status: g.status, answer: JSON.stringify(gj).slice(0, 300) } }
      const d = await fetch(carrierUrl + '/messages', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'direct-' + id },
        body: JSON.stringify({ messageId: 'direct-' + id, type: 'MESAJ', to: k.recipient, iysCode: k.iys, brandCode: k.brand, sender: SENDER, text: TEXT }),
        signal: AbortSignal.timeout(5000)
      })
      const dj = await d.json().catch(() => null)
      if (d.status !== 202 || typeof dj?.id !== 'string') { wrong++; example ??= { via: 'direct', status: d.status, answer: JSON.stringify(dj).slice(0, 300) } }
    }
    if (wrong > 0) throw new Error(`answers before timing are wrong (${wrong}), e.g. ${JSON.stringify(example)}`)

    // The same recipients for both sides; the id is unique per request and per run label (no run repeats another's).
    // Lua's string.format has no positional arguments, so each body starts with the id (its first argument).
    const gatewayScript = (label) => {
      const file = join(ctx.tmpDir, `${label}.lua`)
      writeWrkTemplateScript(file, {
        path: '/v1/messages',
        format: `{"messages":[{"messageId":"%s","recipient":"%s","sender":"${SENDER}","text":"${TEXT}"}],"iysCode":%s,"brandCode":%s,"type":"MESAJ","commercial":true}`,
        rows: keys.map(k => [k.recipient, k.iys, k.brand]),
        idPrefix: `${label}-${ctx.pid}-`,
        authorization: authFor(gw.url).authorization
      })
      return file
    }
    const directScript = (label) => {
      const file = join(ctx.tmpDir, `${label}.lua`)
      writeWrkTemplateScript(file, {
        path: '/messages',
        format: `{"messageId":"%s","type":"MESAJ","to":"%s","iysCode":"%s","brandCode":"%s","sender":"${SENDER}","text":"${TEXT}"}`,
        rows: keys.map(k => [k.recipient, k.iys, k.brand]),
        idPrefix: `${label}-${ctx.pid}-`,
        idHeader: 'idempotency-key',
        authorization: authFor(gw.url).authorization // the carrier ignores it: both sides send the same header bytes
      })
      return file
    }

    const pidsGw = [gw.child.pid, carrier.pid]
    const pidsDirect = [carrier.pid]

    // --- saturated: gateway, then direct ------------------------------------------------------------------------
    await waitQuiet(ctx.quietWaitMs)
    await runHttpLoad({ generator: 'wrk', url: gw.url + '/v1/messages', connections: CONNECTIONS, seconds: T.warmup, tmpDir: ctx.tmpDir, label: 'msg-gw-warm', script: gatewayScript('msg-gw-warm') })
    const c0 = await settle(gw.url, carrierUrl, 10_000)
    const rows0 = await decisionRows(ds.url)
    const g = await measure(ctx, { url: gw.url + '/v1/messages', script: gatewayScript('msg-gw'), connections: CONNECTIONS, seconds: T.seconds, label: 'msg-gw', pids: pidsGw })
    const c1 = await counters(gw.url, carrierUrl) // the instant the load stopped: what the log had written by then
    const flushStarted = performance.now()
    const c2 = await settle(gw.url, carrierUrl, 15_000)
    const flushMs = performance.now() - flushStarted
    const rows2 = await decisionRows(ds.url)

    await waitQuiet(ctx.quietWaitMs)
    await runHttpLoad({ generator: 'wrk', url: carrierUrl + '/messages', connections: CONNECTIONS, seconds: T.warmup, tmpDir: ctx.tmpDir, label: 'msg-direct-warm', script: directScript('msg-direct-warm') })
    const d = await measure(ctx, { url: carrierUrl + '/messages', script: directScript('msg-direct'), connections: CONNECTIONS, seconds: T.seconds, label: 'msg-direct', pids: pidsDirect })

    // --- one connection: the latency the gateway hop adds without queueing ----------------------------------------
    await waitQuiet(ctx.quietWaitMs)
    const g1 = await measure(ctx, { url: gw.url + '/v1/messages', script: gatewayScript('msg-gw-1c'), connections: 1, seconds: T.latencySeconds, label: 'msg-gw-1c', pids: pidsGw })
    await waitQuiet(ctx.quietWaitMs)
    const d1 = await measure(ctx, { url: carrierUrl + '/messages', script: directScript('msg-direct-1c'), connections: 1, seconds: T.latencySeconds, label: 'msg-direct-1c', pids: pidsDirect })
    const c3 = await settle(gw.url, carrierUrl, 15_000)

    // --- figures ---------------------------------------------------------------------------------------------------
    const answered = c2.answered - c0.answered
    const writtenDuring = c1.written - c0.written
    const writtenAfterFlush = c2.written - c0.written
    const spooled = c2.spooled - c0.spooled
    const rowsWritten = rows2 - rows0
    const writtenRate = writtenDuring / g.seconds
    const answeredRate = (c1.answered - c0.answered) / g.seconds
    const lagAtEnd = (c1.answered - c0.answered) - writtenDuring
    // A decision is journalled before its answer leaves (or the message is forwarded), so requests still in flight
    // when wrk stops and hangs up have a row without an answer: at most one per connection.
    const unanswered = writtenAfterFlush + spooled - answered
    const keepsUp = unanswered >= 0 && unanswered <= CONNECTIONS && rowsWritten === writtenAfterFlush
    const forwardedDuring = c2.carrierSent - c0.carrierSent
    const ratio = g.rps / d.rps
    const text = (r) => `${fmtInt(r.rps)} req/s, p50 ${fmtNum(r.p50Ms)} ms, p99 ${fmtNum(r.p99Ms)} ms`
    const addedP50 = g.p50Ms - d.p50Ms
    const addedP99 = g.p99Ms - d.p99Ms
    const added1P50 = g1.p50Ms - d1.p50Ms
    const added1P99 = g1.p99Ms - d1.p99Ms
    const non2xx = [g, d, g1, d1].reduce((s, r) => s + r.non2xx + r.errors, 0)
    const notes = [
      `wrk 2 threads, ${CONNECTIONS} connections, ${T.seconds} s after a ${T.warmup} s warm-up each; one message per request, ${keys.length} ONAY recipients, a new messageId per request`,
      `added latency under load (${CONNECTIONS} connections): p50 +${fmtNum(addedP50)} ms, p99 +${fmtNum(addedP99)} ms`,
      `added latency with 1 connection (${T.latencySeconds} s each): p50 +${fmtNum(added1P50)} ms, p99 +${fmtNum(added1P99)} ms (gateway p50 ${fmtNum(g1.p50Ms)} / p99 ${fmtNum(g1.p99Ms)} ms, direct ${fmtNum(d1.p50Ms)} / ${fmtNum(d1.p99Ms)} ms; ${fmtInt(g1.rps)} vs ${fmtInt(d1.rps)} req/s)`,
      `CPU (share of one core) during the saturated runs: gateway ${pct(g.processCpu[0])} (${g.threads.slice(0, 3).map(t => `${t.name} ${pct(t.share)}`).join(', ')}), carrier ${pct(g.processCpu[1])} (direct run: carrier ${pct(d.processCpu[0])}), Redis ${pct(g.redisCpu)}, wrk ${pct(g.generatorCpu)} / ${pct(d.generatorCpu)}, machine ${pct(g.machineCpu)} / ${pct(d.machineCpu)}`,
      `decision log: ${fmtInt(writtenRate)} decisions/s written during the run (answered ${fmtInt(answeredRate)}/s); ${fmtInt(lagAtEnd)} still buffered when the load stopped, written ${fmtInt(flushMs)} ms later`,
      `after the flush: ${fmtInt(writtenAfterFlush)} written + ${fmtInt(spooled)} spooled for ${fmtInt(answered)} answered requests; ${fmtInt(rowsWritten)} new rows in decisions: ${keepsUp ? `every decision exactly once, ${fmtInt(unanswered)} more for requests cut off in flight when the load stopped` : 'MISMATCH'}`,
      `the carrier accepted ${fmtInt(forwardedDuring)} messages from the gateway in that span (${fmtInt(c2.carrierDuplicates - c0.carrierDuplicates)} idempotent repeats)`,
      'gateway, carrier, Redis, Postgres and wrk share the same 2 cores: the direct run leaves the gateway\'s and Postgres\'s share to the carrier'
    ]
    // One connection keeps wrk, the gateway and the carrier well under a core each: a busier machine means neighbours.
    for (const [who, r] of [['gateway', g1], ['direct', d1]]) {
      if (r.machineCpu > 1.3) notes.push(`WARNING: the machine was ${pct(r.machineCpu)} busy during the 1-connection ${who} run: other processes were running, its latency figures are suspect`)
    }
    if (!keepsUp) notes.push(`WARNING: the decision log did not account for every request: answered ${answered}, written ${writtenAfterFlush}, spooled ${spooled}, rows ${rowsWritten}`)
    if (non2xx > 0) notes.push(`WARNING: ${non2xx} non-2xx answers or socket errors across the runs (gateway ${g.non2xx}+${g.errors}, direct ${d.non2xx}+${d.errors})`)
    if (c3.written + c3.spooled < c3.answered) notes.push(`WARNING: after the latency runs ${c3.answered - c3.written - c3.spooled} decisions were still unwritten after 15 s`)
    print('messages', text(g), `fake carrier direct ${text(d)}`, ratio, notes)

    const details = {
      connections: CONNECTIONS, seconds: T.seconds, recipients: keys.length,
      gateway: g, direct: d, gateway1: g1, direct1: d1,
      addedP50Ms: addedP50, addedP99Ms: addedP99, added1P50Ms: added1P50, added1P99Ms: added1P99,
      decisionLog: { writtenPerSecond: writtenRate, answeredPerSecond: answeredRate, lagAtEnd, flushMs, answered, writtenAfterFlush, spooled, rowsWritten, keepsUp },
      carrierAccepted: forwardedDuring
    }
    const dlText = `${fmtInt(writtenRate)} decisions/s written`
    const dlNotes = [
      `during the saturated gateway run (${fmtNum(g.seconds, 1)} s); ${fmtInt(lagAtEnd)} buffered at its end (flush every DECISION_FLUSH_MS, default 200 ms)`,
      `after a final flush: ${fmtInt(writtenAfterFlush)} written, ${fmtInt(spooled)} spooled, ${fmtInt(rowsWritten)} rows for ${fmtInt(answered)} answered: ${keepsUp ? `keeps up, nothing lost or doubled (+${fmtInt(unanswered)} cut off in flight)` : 'MISMATCH'}`
    ]
    print('messages-decision-log', dlText, `messages answered ${fmtInt(answeredRate)}/s`, writtenRate / answeredRate, dlNotes)
    return [{
      scenario: 'messages',
      status: 'ok',
      measure: `req/s, POST /v1/messages (1 message, decision log on) → fake carrier, ${CONNECTIONS} connections`,
      ours: { value: g.rps, text: text(g) },
      baseline: { label: 'same load straight to the fake carrier', value: d.rps, text: text(d) },
      ratio,
      notes,
      details
    }, {
      scenario: 'messages-decision-log',
      status: 'ok',
      measure: 'decisions/s written to Postgres during the messages run',
      ours: { value: writtenRate, text: dlText },
      baseline: { label: 'messages answered by the gateway, same run', value: answeredRate, text: `${fmtInt(answeredRate)} req/s` },
      ratio: writtenRate / answeredRate,
      notes: dlNotes,
      details: details.decisionLog
    }]
  } finally {
    if (gw !== null) await killChild(gw.child)
    await killChild(carrier)
    log('    (messages: gateway and fake carrier stopped)')
  }
}
