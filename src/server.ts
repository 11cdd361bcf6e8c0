// Wires a gateway process together: the filter source (Redis mirror, or the embedded map when REDIS_URL is unset),
// the checker, metrics and the HTTP app. Used by `iys-gateway serve` and by the tests (port 0).

import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { createServer, type AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { Checker } from './check/checker.js'
import type { Config } from './config.js'
import { buildEmbeddedView } from './filter/embedded.js'
import { layout } from './filter/layout.js'
import { describeMirrorProblem, FilterMirror, type MirrorProblem } from './filter/mirror.js'
import { AutoRebuilder, describeRebuild } from './filter/rebuild.js'
import type { FilterView } from './filter/view.js'
import { createApp, type Readiness } from './http/app.js'
import type { Router } from './http/router.js'
import { ServeThreads } from './http/serve-threads.js'
import { uWS, uwsNative } from './http/uws.js'
import { Metrics, type ReadyReason } from './metrics.js'
import { createRedis, waitReady, type RedisClient } from './store/redis.js'
import { createPool, type Pool } from './store/pg.js'
import { ChangeApplier } from './filter/changes.js'
import { consentRoutes, notConfiguredRoutes } from './http/consent-routes.js'
import { iysReadRoutes } from './http/iys-read-routes.js'
import { RequestProcessor } from './store/consent-requests.js'
import { startWriteThrough, writeThroughStatus } from './iys/outbox.js'
import { pruneHistory } from './store/consent-queries.js'
import { PushProcessor } from './store/push-inbox.js'
import { FreshnessMonitor } from './store/freshness.js'
import { DecisionLog } from './audit/decision-log.js'
import { spoolFigures } from './audit/journal.js'
import { DecisionsHook } from './audit/decisions-hook.js'
import { ScrubDecisionLog } from './audit/scrub-decisions.js'
import { scrubRoutes } from './http/scrub-routes.js'
import { pushRoute } from './http/push-route.js'
import { ledgerRoutes } from './http/ledger-routes.js'
import { messagesRoute } from './http/messages-route.js'
import { Upstreams } from './carriers/upstream.js'
import { OperatorMessages } from './smpp/operator-messages.js'
import { MemoryReceiptStore, RedisReceiptStore, type ReceiptStore } from './smpp/receipts.js'
import { SmppServer } from './smpp/server.js'
import { SharedParts } from './smpp/shared-parts.js'
import { SubmitHandler } from './smpp/submit.js'
import { MailRelay, RETRY_DELAYS } from './smtp/relay.js'
import { SmtpFrontEnd } from './smtp/server.js'
import { MailSpool } from './smtp/spool.js'
import { signUnsubscribe } from './auth/unsubscribe-tokens.js'
import { unsubscribeRoute } from './http/unsubscribe-route.js'
import { writeCitizenRejections } from './store/consent-store.js'
import { ScrubQueue } from './scrub/engine.js'
import { ScrubJobs } from './scrub/jobs.js'
import { createScrubPool } from './scrub/pool.js'
import { settlesWithin } from './util/settle.js'
import { DEMO_KEY_WARNING, KeyStore, NO_KEYS_WARNING } from './auth/key-store.js'
import { Lockout } from './auth/lockout.js'
import { RateLimiter } from './auth/rate-limit.js'
import { TokenIssuer } from './auth/tokens.js'
import { oauthRoute } from './http/oauth-route.js'

export interface Gateway {
  readonly port: number
  /** The SMPP front end's ports (SMPP_PORT, SMPP_TLS_PORT), null when off. */
  readonly smppPort: number | null
  readonly smppTlsPort: number | null
  /** The SMTP front end's ports (SMTP_PORT, SMTP_TLS_PORT), null when off. */
  readonly smtpPort: number | null
  readonly smtpTlsPort: number | null
  readonly metrics: Metrics
  readonly mode: 'redis' | 'embedded'
  /** the routes this gateway serves, with the scopes each needs (null: public) */
  routes (): ReturnType<Router['routes']>
  /** The filter version served right now (0: none). */
  version (): number
  /** The serving threads (SERVE_THREADS > 1), else null. */
  readonly serveThreads: Pick<ServeThreads, 'listening' | 'fail'> | null
  close (): Promise<void>
}

export const UWS_FALLBACK_WARNING = 'uWebSockets.js native binding did not load: running on its slow pure-JS fallback server'

export async function startGateway (config: Config, log: Logger): Promise<Gateway> {
  if (config.port !== 0 && !config.reusePort) await assertPortFree(config.host, config.port)
  const metrics = new Metrics()
  metrics.uwsNative.set(uwsNative ? 1 : 0)
  if (!uwsNative) log.error(UWS_FALLBACK_WARNING + ' — throughput will be a fraction of normal; check the Node.js version and platform')

  let redis: RedisClient | null = null
  let mirror: FilterMirror | null = null
  let applier: ChangeApplier | null = null
  let rebuilder: AutoRebuilder | null = null
  // Postgres: the consent API, İYS push, the evidence ledger and the change applier. Checks never touch it.
  const pool: Pool | null = config.databaseUrl !== null ? createPool(config.databaseUrl, 8) : null
  const decisionLog = pool !== null && config.decisions.enabled
    ? new DecisionLog({
      pool,
      spoolDir: config.decisions.spoolDir,
      flushMs: config.decisions.flushMs,
      fsyncMs: config.decisions.fsyncMs,
      retentionDays: config.decisions.retentionDays,
      log,
      onWritten: n => { metrics.decisionsWritten.inc(n) },
      onSpooled: n => { metrics.decisionsSpooled.inc(n) },
      onQuarantined: n => { metrics.decisionsQuarantined.inc(n) }
    })
    : null
  await decisionLog?.start()
  const requests = pool !== null ? new RequestProcessor(pool, log, { onFailed: () => { metrics.queueFailed.inc({ queue: 'requests' }) } }) : null
  // The push receiver has a small pool of its own: API writes queueing for the consent write lock (behind an
  // import slice, say) can hold every connection of the main pool, and İYS must still get its answer within 5 s.
  const pushPool: Pool | null = config.databaseUrl !== null ? createPool(config.databaseUrl, 2, { name: 'iys-gateway-push', connectTimeoutMs: 2000, queryTimeoutMs: 2500 }) : null
  const push = pool !== null ? new PushProcessor(pool, log, { receivePool: pushPool!, hooks: { onItems: (outcome, n) => { metrics.pushItems.inc({ outcome }, n) }, onFailed: () => { metrics.queueFailed.inc({ queue: 'push' }) } } }) : null
  requests?.drainer.kick() // requests and notifications left pending by a previous run
  push?.drainer.kick()
  // İYS write-through (iys/outbox.ts): null when İYS is not configured; /readyz says which.
  const outbox = startWriteThrough(config, pool, log, metrics)
  // The pipeline's freshness (queues, applier lag, sync-iys, the decision spool) and whether Postgres answers.
  const freshness = pool !== null
    ? new FreshnessMonitor(pool, metrics, log, { appliedSeq: () => applier?.appliedSeq ?? null, spool: decisionLog !== null ? () => spoolFigures(config.decisions.spoolDir) : null })
    : null
  let retentionTimer: NodeJS.Timeout | null = null
  if (pool !== null && config.retentionIntervalMs > 0) {
    const prune = (): void => {
      pruneHistory(pool, config.historyRetentionDays)
        .then(n => { if (n > 0) log.info({ deleted: n, days: config.historyRetentionDays }, 'evidence ledger retention') })
        .catch((err: Error) => { log.warn({ err }, 'evidence ledger retention failed; retried next interval') })
    }
    retentionTimer = setInterval(prune, config.retentionIntervalMs)
    retentionTimer.unref()
  }
  freshness?.start()
  let getView: () => FilterView | null
  let readiness: () => Readiness

  const warnings = uwsNative ? [] : [UWS_FALLBACK_WARNING]
  // API keys: Postgres's with DATABASE_URL (none until `keys create`), else the trial's demo key, said loudly.
  // The keys have a connection of their own with a short query timeout: a revocation must not wait behind queued
  // writes on the main pool, and a poll that never answers must not stop the polls after it.
  const authPool: Pool | null = config.databaseUrl !== null ? createPool(config.databaseUrl, 1, { name: 'iys-gateway-auth', connectTimeoutMs: 2000, queryTimeoutMs: 2000 }) : null
  const keys = authPool !== null ? KeyStore.postgres(authPool, { pollMs: config.authPollMs, log }) : config.demoKey ? KeyStore.demo() : KeyStore.none()
  await keys.start()
  if (config.demoKey) { log.warn(DEMO_KEY_WARNING); warnings.push(DEMO_KEY_WARNING) }
  if (pool === null && !config.demoKey) { log.warn(NO_KEYS_WARNING); warnings.push(NO_KEYS_WARNING) }
  // POST /oauth2/token's tokens, signed with a secret shared through Postgres (this process's own without it)
  const tokens = pool !== null ? await TokenIssuer.postgres(pool, config.oauth, { log }) : TokenIssuer.local(config.oauth)
  keys.useTokens(tokens)
  const uwsState = uwsNative ? 'native' : 'fallback'

  if (config.redisUrl !== null) {
    redis = createRedis(config.redisUrl, { timeoutMs: config.redisTimeoutMs, name: 'iys-gateway' })
    redis.on('error', () => {}) // reported through the mirror and the checks; ioredis reconnects by itself
    mirror = new FilterMirror(redis, layout(config.redisPrefix), {
      pollMs: config.filterPollMs,
      timeoutMs: config.redisTimeoutMs,
      log,
      onSwitch: (view, keys) => { metrics.filterVersion.set(view.version); metrics.filterKeys.set(keys) },
      onDrop: () => { metrics.filterVersion.set(0); metrics.filterKeys.set(0) },
      ...(config.replica.enabled ? { replica: { maxLagMs: config.replica.maxLagMs, maxBytes: config.replica.maxBytes } } : {}),
      ...(config.replica.enabled && pool !== null ? { ledger: pool } : {})
    })
    // Serve the current version from the first request when Redis is there; start anyway (not ready) when not.
    await waitReady(redis, 5000).catch(err => { log.error({ err }, 'Redis is not reachable at start-up; retrying in the background') })
    await mirror.start()
    if (pool !== null) {
      // Changes committed in Postgres (API, push, pull, import) reach Redis and, through the change stream, every
      // gateway's bloom. Every gateway with a database runs an applier: they are idempotent, so more is only redundancy.
      const replicaOwner = mirror
      applier = new ChangeApplier({ pool, redis, layout: layout(config.redisPrefix), log, onNotify: () => { replicaOwner.ledgerChanged() } })
      await applier.start()
      if (config.autoRebuild) {
        // Redis lost the index (or never had it): rebuild it from Postgres, one gateway at a time (filter/rebuild.ts).
        rebuilder = new AutoRebuilder({
          pool,
          redis,
          redisUrl: config.redisUrl,
          layout: layout(config.redisPrefix),
          fpr: config.bloomFpr,
          log,
          mirror,
          intervalMs: Math.max(2 * config.filterPollMs, 500),
          onBuilt: result => { metrics.filterRebuilds.inc({ result }) }
        })
        rebuilder.start()
      }
    }
    const m = mirror
    const r = redis
    const rb = rebuilder
    getView = () => m.view
    readiness = () => {
      const redisReady = r.status === 'ready'
      const view = m.view
      // Ready only when serving the version Redis points at now (same number and generation, checked at the last
      // poll); otherwise say why — and, when this or another gateway is rebuilding it, that.
      const rebuilding = rb !== null ? describeRebuild(rb.status) : null
      const problem = m.problem !== null
        ? describeMirrorProblem(m.problem) + (rebuilding !== null ? '; ' + rebuilding : '')
        : !redisReady ? `Redis connection is ${r.status}` : null
      const replica = m.replicaStatus()
      let reason: ReadyReason = m.problem !== null ? MIRROR_REASONS[m.problem.kind] : !redisReady ? 'redis_unreachable' : view === null ? 'no_filter_version' : 'ok'
      // Redis away, but every check is answered exactly from the replica, kept current from the ledger: ready, saying
      // so. Not when Redis has just come back and no poll has looked at it yet (it may have come back empty).
      if (reason === 'redis_unreachable' && replica.serving && !m.redisBackUnverified) reason = 'replica_without_redis'
      return {
        ready: reason === 'ok' || reason === 'replica_without_redis',
        reason,
        mode: 'redis',
        filterVersion: view?.version ?? 0,
        generation: view?.generation ?? null,
        redis: redisReady ? 'ok' : r.status,
        lastSync: m.lastSyncAt > 0 ? new Date(m.lastSyncAt).toISOString() : null,
        replica,
        ...(problem !== null ? { problem } : {}),
        uws: uwsState,
        warnings
      }
    }
  } else {
    const seed = await buildEmbeddedView(config.embeddedSeedFile, config.bloomFpr)
    log.warn({ seedFile: config.embeddedSeedFile, keys: seed.view.states.size, rejects: seed.rejects },
      'REDIS_URL is not set: serving the embedded in-process store (for trials and development, not production)')
    metrics.filterVersion.set(seed.view.version)
    metrics.filterKeys.set(seed.view.states.size)
    getView = () => seed.view
    readiness = () => ({ ready: true, reason: 'ok', mode: 'embedded', filterVersion: seed.view.version, keys: seed.view.states.size, uws: uwsState, warnings })
  }

  // Per-key token buckets, shared through Redis when there is one (leased in the background: no round trip per request).
  const rateLimit = new RateLimiter({ redis, prefix: config.redisPrefix + 'rate:', log, onLocal: local => { metrics.rateLimitLocal.set(local ? 1 : 0) } })

  const policy = { tacirAllowedWithoutRecord: config.tacirAllowedWithoutRecord, storeFailureMode: config.storeFailureMode }
  const checker = new Checker(getView, policy, {
    storeError: () => { metrics.storeErrors.inc() },
    bloom: (maybe, absent) => { if (maybe > 0) metrics.bloomMaybe.inc(maybe); if (absent > 0) metrics.bloomAbsent.inc(absent) }
  })

  // Bulk scrubbing: jobs on local disk, chunks on a worker pool over the same SharedArrayBuffer bloom (Redis mode).
  const jobs = new ScrubJobs(config.scrub.dir, config.scrub.retentionHours, log, (bytes) => { metrics.scrubDiskBytes.set(bytes) }, pool)
  const unfinished = await jobs.init()
  const scrubPool = config.redisUrl !== null
    ? createScrubPool({ redisUrl: config.redisUrl, redisPrefix: config.redisPrefix, redisTimeoutMs: config.redisTimeoutMs, policy }, config.scrub.threads)
    : null
  // One post-decision hook for every front end: metrics, the decision journal, and the stamp scrubs yield to.
  const decisions = new DecisionsHook({ metrics, decisionLog })
  // A done scrub job's decisions go to the decision log from its result file (audit/scrub-decisions.ts).
  const scrubLog = decisionLog !== null
    ? new ScrubDecisionLog({ pool: pool!, log, partitionFor: ms => decisionLog.partitionFor(ms), onWritten: n => { metrics.decisionsWritten.inc(n) } })
    : null
  const queue = new ScrubQueue({ jobs, getView, policy, pool: scrubPool, chunkLines: config.scrub.chunkLines, threads: config.scrub.threads, maxLineBytes: config.scrub.maxLineBytes, log, pauseMs: decisions.scrubPauseMs, hook: decisions, metrics, scrubLog })
  for (const job of unfinished) queue.enqueue(job)
  const sweepJobs = (): void => { jobs.sweep().catch((err: Error) => { log.warn({ err }, 'scrub job retention failed') }) }
  sweepJobs()
  const sweepTimer = setInterval(sweepJobs, 10 * 60_000)
  sweepTimer.unref()
  // SMPP (issue 13): receipts and MO messages from an SMPP operator are routed through a queue per target (Redis, or
  // this process's memory in the embedded trial) to the providers' binds on whichever gateway they are bound to.
  const receipts: ReceiptStore = redis !== null
    ? new RedisReceiptStore(redis, config.redisPrefix, { ttlSeconds: config.smpp.receiptTtlHours * 3600, queueMax: config.smpp.queueMax })
    : new MemoryReceiptStore({ ttlSeconds: config.smpp.receiptTtlHours * 3600, queueMax: config.smpp.queueMax })
  let smpp: SmppServer | null = null
  let smtp: SmtpFrontEnd | null = null
  let mailRelay: MailRelay | null = null
  const operatorMessages = new OperatorMessages({
    receipts,
    deliver: async (target, pdu) => { if (smpp !== null) await smpp.deliver(target, pdu); else await receipts.enqueue(target, pdu) },
    keys,
    writeRejections: pool !== null ? (consents, actor) => writeCitizenRejections(pool, consents, actor) : null,
    metrics,
    log
  })
  const upstreams = new Upstreams(config.upstreams, {
    ...config.upstream,
    log,
    onDeliver: (pdu, bytes) => operatorMessages.onDeliver(pdu, bytes),
    // DKIM signs each copy after our headers (List-Unsubscribe) were added: added later, they would break it.
    ...(config.smtp.dkim !== null ? { dkim: { domainName: config.smtp.dkim.domainName, keySelector: config.smtp.dkim.keySelector, privateKey: readFileSync(config.smtp.dkim.privateKeyFile, 'utf8') } } : {})
  })
  // SERVE_THREADS > 1 (Redis mode only: config.ts): the serving threads, started once this thread listens.
  let threads: ServeThreads | null = null
  const peerSecret = config.serveThreads > 1 ? randomBytes(24).toString('hex') : undefined
  const fullReadiness = (): Readiness => withKeys({
    ...readiness(), ...postgresStatus(freshness), writeThrough: writeThroughStatus(outbox), ...(threads !== null ? { serveThreads: threads.listening() } : {}),
    ...(smpp !== null ? { smpp: { binds: smpp.bound() } } : {})
  }, keys)
  metrics.watch({ readiness: fullReadiness, breakers: () => upstreams.refusing(), replica: () => mirror?.replicaStatus() ?? null })
  const pushCredentials = config.iysPushUser !== null ? { user: config.iysPushUser, password: config.iysPushPassword! } : null
  const { app, router } = createApp({
    checker,
    metrics,
    log,
    maxBodyBytes: config.maxBodyBytes,
    auth: keys,
    rateLimit,
    readiness: fullReadiness,
    decisions,
    ...(peerSecret !== undefined ? { peerSecret, requests: { request: (route, status, seconds) => { (threads ?? metrics).request(route, status, seconds) } } } : {}),
    routes: (router) => {
      oauthRoute(router, { keys, tokens, requestsPerHour: config.oauth.requestsPerHour })
      if (pool !== null) {
        consentRoutes(router, { pool, log, requests: requests! })
        iysReadRoutes(router, pool) // changes, history, brands
        pushRoute(router, { push: push!, credentials: pushCredentials, lockout: new Lockout(config.iysPushLockout), log, metrics })
        ledgerRoutes(router, pool)
      } else notConfiguredRoutes(router)
      scrubRoutes(router, { jobs, queue, maxBytes: config.scrub.maxBytes, maxTotalBytes: config.scrub.maxTotalBytes, maxUploadsPerClient: config.scrub.maxUploadsPerClient })
      messagesRoute(router, { checker, upstreams, metrics, decisions })
      // Every gateway answers the one-click unsubscribe links (behind a load balancer any of them gets the POST); one
      // without the secrets answers 503, which mail providers retry, rather than a 404 they would drop.
      unsubscribeRoute(router, { secrets: config.smtp.unsubscribeSecrets, pool, log, metrics })
    }
  })

  // uWS sets SO_REUSEPORT only on a port it is given, not on port 0: serving threads could not join a port the kernel
  // picked, so with PORT=0 (tests) the main thread asks the kernel for a free one first and listens on that.
  const wantedPort = config.port === 0 && peerSecret !== undefined ? await freePort(config.host) : config.port
  const listenSocket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
    app.listen(config.host, wantedPort, (token) => {
      if (token === false) reject(new Error(`cannot listen on ${config.host}:${wantedPort} (address in use or not available)`))
      else resolve(token)
    })
  })
  const port = uWS.us_socket_local_port(listenSocket)
  // The serving threads proxy what they do not answer themselves to this app on a loopback port of its own.
  let internalSocket: uWS.us_listen_socket | null = null
  if (peerSecret !== undefined) {
    internalSocket = await new Promise<uWS.us_listen_socket>((resolve, reject) => {
      app.listen('127.0.0.1', 0, (token) => { if (token === false) reject(new Error('cannot listen on a loopback port for the serving threads')); else resolve(token) })
    })
    threads = new ServeThreads({ config, port, internalPort: uWS.us_socket_local_port(internalSocket), peerSecret, journal: decisionLog !== null, mirror: mirror!, decisions, metrics, log })
    threads.start()
  }
  // SMTP (issue 15): the front end spools what it accepts; the relay sends each copy on to the EPOSTA carrier.
  let smtpPorts: { port: number | null, tlsPort: number | null } = { port: null, tlsPort: null }
  if (config.smtp.port !== null || config.smtp.tlsPort !== null) {
    const s = config.smtp
    const spool = new MailSpool({ dir: s.spoolDir, maxBytes: s.spoolMaxBytes, log })
    await spool.open()
    const unsubscribeBase = s.unsubscribeUrl ?? `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`
    // The links are for recipients on the internet: the gateway's own address is right for a trial only.
    if (s.unsubscribeUrl === null || !s.unsubscribeUrl.startsWith('https:')) {
      const w = `SMTP_UNSUBSCRIBE_URL is ${s.unsubscribeUrl === null ? 'unset' : 'not https'}: the one-click unsubscribe links in relayed mail point at ${unsubscribeBase}, which recipients must be able to reach (set the gateways' public https base URL)`
      log.warn(w)
      warnings.push(w)
    }
    const mailto = s.unsubscribeMailto
    const relay = mailRelay = new MailRelay({
      spool,
      relayer: upstreams.smtp()!, // config.ts: SMTP_PORT needs an smtp:// EPOSTA carrier
      unsubscribe: r => ({ url: `${unsubscribeBase}/v1/unsubscribe/${signUnsubscribe(s.unsubscribeSecrets[0]!, r)}`, ...(mailto !== null ? { mailto } : {}) }),
      onOutcome: (_id, outcome) => { metrics.smtpRelay.inc({ result: outcome }); metrics.smtpSpooled.set(spool.size) },
      log,
      retry: { baseMs: s.retryBaseMs, maxMs: RETRY_DELAYS.maxMs, giveUpAfterMs: s.retryMaxHours * 3_600_000 },
      bounceFrom: `MAILER-DAEMON@${s.hostname}`
    })
    relay.start()
    smtp = new SmtpFrontEnd({
      host: config.host,
      port: s.port,
      tlsPort: s.tlsPort,
      tls: s.tlsCertFile !== null ? { certFile: s.tlsCertFile, keyFile: s.tlsKeyFile! } : null,
      hostname: s.hostname,
      maxMessageBytes: s.maxMessageBytes,
      maxRecipients: s.maxRecipients
    }, { keys, checker, decisions, rateLimit, spool, spooled: () => { metrics.smtpSpooled.set(spool.size); relay.kick() }, metrics, log })
    smtpPorts = await smtp.start()
    log.info(smtpPorts, 'SMTP front end listening')
  }
  let smppPorts: { port: number | null, tlsPort: number | null } = { port: null, tlsPort: null }
  if (config.smpp.port !== null || config.smpp.tlsPort !== null) {
    const s = config.smpp
    smpp = new SmppServer({
      host: config.host,
      port: s.port,
      tlsPort: s.tlsPort,
      tls: s.tlsPort !== null ? { cert: readFileSync(s.tlsCertFile!), key: readFileSync(s.tlsKeyFile!) } : null,
      window: s.window,
      maxBindsPerKey: s.maxBindsPerKey,
      responseTimeoutMs: s.responseTimeoutMs,
      enquireLinkMs: s.enquireLinkMs
    }, {
      keys,
      submits: new SubmitHandler({
        checker,
        decisions,
        upstreams,
        receipts,
        metrics,
        statuses: s.statuses,
        originatorBrand: (iysCode, o) => keys.originatorBrand(iysCode, o),
        concatTtlMs: s.concatTtlMs,
        sharedParts: redis !== null ? new SharedParts(redis, config.redisPrefix, s.concatTtlMs) : null
      }),
      receipts,
      rateLimit,
      statuses: s.statuses,
      metrics,
      log
    })
    smppPorts = await smpp.start()
    log.info(smppPorts, 'SMPP front end listening')
  }
  log.info({ host: config.host, port, mode: redis !== null ? 'redis' : 'embedded', uws: uwsState, serveThreads: config.serveThreads }, 'iys-gateway listening')

  return {
    port,
    smppPort: smppPorts.port,
    smppTlsPort: smppPorts.tlsPort,
    smtpPort: smtpPorts.port,
    smtpTlsPort: smtpPorts.tlsPort,
    metrics,
    mode: redis !== null ? 'redis' : 'embedded',
    version: () => getView()?.version ?? 0,
    routes: () => router.routes(),
    serveThreads: threads,
    async close () {
      uWS.us_listen_socket_close(listenSocket)
      await smpp?.close() // unbinds the providers' platforms: they reconnect to another gateway
      await smtp?.close()
      await mailRelay?.stop() // copies in flight get their outcome on disk; the rest stay spooled for the next start
      // The serving threads first: what they have in flight needs this thread (acknowledgements, proxied requests).
      await threads?.stop(10_000)
      if (internalSocket !== null) uWS.us_listen_socket_close(internalSocket)
      await router.drain(10_000) // answer what is in flight; later requests on kept-alive connections get 503
      if (retentionTimer !== null) clearInterval(retentionTimer)
      clearInterval(sweepTimer)
      // A running scrub is not waited for: its job stays 'running' on disk and runs again at the next start.
      queue.stop()
      await scrubPool?.destroy()
      await rebuilder?.stop()
      if (applier !== null) await applier.stop()
      await requests?.drainer.stop()
      await outbox?.stop() // İYS write-through: an in-flight send is re-sent, as the same request, by the next sender
      await scrubLog?.stop() // a job's decisions not yet written are written at the next start
      await decisionLog?.close() // everything to Postgres, or to the spool when it is away
      if (!await settlesWithin(upstreams.close(), 3000)) await upstreams.destroy() // carriers that never answer
      await push?.drainer.stop()
      await freshness?.stop()
      if (pushPool !== null && !await settlesWithin(pushPool.end(), 2000)) log.warn('push receiver connections still busy at shutdown')
      if (mirror !== null) await mirror.stop()
      await keys.stop()
      if (authPool !== null && !await settlesWithin(authPool.end(), 2000)) log.warn('API key connection still busy at shutdown')
      rateLimit.close()
      if (pool !== null && !await settlesWithin(pool.end(), 5000)) log.warn('Postgres connections still busy at shutdown; leaving them to the process exit')
      if (redis !== null) redis.disconnect()
    }
  }
}

/** Readiness with the API keys: a gateway that never loaded them can serve nobody (every request is 401). */
function withKeys (r: Readiness, keys: KeyStore): Readiness {
  const k = keys.status()
  const apiKeys = { source: k.source, keys: k.keys, ...(k.problem !== null ? { problem: k.problem } : {}) }
  if (k.loadedAt > 0) return { ...r, apiKeys }
  const reason: ReadyReason = r.ready ? 'api_keys_not_loaded' : r.reason
  return { ...r, ready: false, reason, apiKeys, problem: [r.problem, 'API keys not loaded yet: every request is answered 401'].filter(Boolean).join('; ') }
}

/** The readiness reason of each mirror problem (filter/mirror.ts). */
const MIRROR_REASONS = {
  'no-version': 'no_filter_version',
  lost: 'filter_version_lost',
  unloadable: 'filter_version_unloadable',
  unreachable: 'redis_unreachable'
} as const satisfies Record<MirrorProblem['kind'], ReadyReason>

/**
 * Postgres in /readyz. It names Postgres but does not make the gateway unready: checks never ask Postgres (their
 * decisions spool to disk meanwhile), and taking every gateway out of the load balancer when the one database
 * fails would stop the checks too. The routes that need Postgres answer 503 DATABASE_UNAVAILABLE meanwhile.
 */
function postgresStatus (freshness: FreshnessMonitor | null): { postgres?: string } {
  if (freshness === null) return {}
  const pg = freshness.postgres
  return { postgres: pg.reachable ? 'ok' : `not answering since ${new Date(pg.since).toISOString()} (DATABASE_URL): the consent API, İYS push and evidence answer 503, decisions spool to disk; checks go on` }
}

/** A port free on `host` now (the kernel's pick). */
async function freePort (host: string): Promise<number> {
  const probe = createServer()
  await new Promise<void>((resolve, reject) => { probe.once('error', reject); probe.listen({ host, port: 0, exclusive: true }, resolve) })
  const { port } = probe.address() as AddressInfo
  await new Promise<void>(resolve => { probe.close(() => resolve()) })
  return port
}

/**
 * uWebSockets.js listens with SO_REUSEPORT, so a second gateway on a port in use would start and share it (an old
 * and a new version splitting the traffic). Node's own listen does not set that option, so a port a gateway holds
 * refuses it: checked first, before anything is started (what remains is the moment between this and uWS's listen).
 * REUSE_PORT=true asks for several processes on one port on purpose.
 */
async function assertPortFree (host: string, port: number): Promise<void> {
  const probe = createServer()
  await new Promise<void>((resolve, reject) => {
    probe.once('error', (err: NodeJS.ErrnoException) => {
      reject(new Error(err.code === 'EADDRINUSE'
        ? `cannot listen on ${host}:${port}: address in use (another gateway? REUSE_PORT=true runs several on one port on purpose)`
        : `cannot listen on ${host}:${port}: ${err.message}`))
    })
    probe.listen({ host, port, exclusive: true }, () => { probe.close(() => resolve()) })
  })
}
