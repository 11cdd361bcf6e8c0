// Configuration is read from the environment once, validated, and frozen. A bad value stops start-up with one
// line that names the variable; a misspelt variable in our namespaces is an error with a hint, not ignored.

import { createHash } from 'node:crypto'
import { availableParallelism, hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CodedError } from './domain/errors.js'
import { canonicalCode } from './domain/vocabulary.js'
import { parseSmppStatusMap, type SmppStatusMap } from './domain/smpp-status.js'
import { parseUnsubscribeSecrets } from './auth/unsubscribe-tokens.js'
import { projectUrl } from './util/paths.js'
import { CLUSTER_SCHEME, parseClusterNodes } from './store/redis.js'

export interface Config {
  readonly host: string
  readonly port: number
  /** REDIS_URL, or `cluster:` + REDIS_CLUSTER_NODES (store/redis.ts createRedis); null: the embedded store. */
  readonly redisUrl: string | null
  readonly redisPrefix: string
  readonly databaseUrl: string | null
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  readonly maxBodyBytes: number
  readonly bloomFpr: number
  readonly filterPollMs: number
  /** How often a gateway asks Postgres whether API keys changed (a revoked key stops within this). */
  readonly authPollMs: number
  /** Accept the README's demo API key (only without DATABASE_URL; by default only in the fully embedded trial). */
  readonly demoKey: boolean
  /** Several processes on one port on purpose (uWS's SO_REUSEPORT); otherwise a port in use stops start-up. */
  readonly reusePort: boolean
  /** HTTP serving threads on the one port (http/serve-threads.ts): 1 is the main thread alone; more needs REDIS_URL. */
  readonly serveThreads: number
  /** POST /oauth2/token: token lifetimes (s; İYS's: 2 h and 4 h) and token requests per source address per hour (0: no limit). */
  readonly oauth: Readonly<{ accessSeconds: number, refreshSeconds: number, requestsPerHour: number, secret: string | null }>
  readonly redisTimeoutMs: number
  /** Rebuild the filter from Postgres by itself when Redis lost it (one gateway at a time, by advisory lock). */
  readonly autoRebuild: boolean
  /** The local exact replica of the served version (filter/replica.ts), Redis mode only. */
  readonly replica: Readonly<{ enabled: boolean, maxLagMs: number, maxBytes: number }>
  readonly tacirAllowedWithoutRecord: boolean
  readonly storeFailureMode: 'closed' | 'open'
  readonly embeddedSeedFile: string
  readonly upstreams: Readonly<{ MESAJ: string | null, EPOSTA: string | null, ARAMA: string | null }>
  /** Carrier calls: per-attempt timeout, retries, back-off, connections, circuit breaker. */
  readonly upstream: Readonly<{
    timeoutMs: number, retries: number, backoffMs: number, backoffMaxMs: number, connections: number
    breaker: Readonly<{ failureRatio: number, minCalls: number, windowMs: number, cooldownMs: number }>
  }>
  readonly iysPushUser: string | null
  readonly iysPushPassword: string | null
  /** The push receiver's lockout: this many failed sign-ins from one source within windowMs lock it for lockMs. */
  readonly iysPushLockout: Readonly<{ maxFailures: number, windowMs: number, lockMs: number }>
  /** İYS API for `sync-iys`: base URL, credentials, the service provider and the brands to follow. */
  readonly iys: Readonly<{ apiUrl: string, username: string | null, password: string | null, iysCode: string | null, brandCodes: readonly string[], pollMs: number, writeThrough: boolean, resultPollMs: number }>
  /** Evidence ledger retention: a change is kept this many days after a later change replaced it. */
  readonly historyRetentionDays: number
  /** How often the retention job runs (ms); 0 disables it in this process. */
  readonly retentionIntervalMs: number
  /** Bulk scrubbing: where jobs keep their input and results, how long results stay, limits and threads. */
  readonly scrub: Readonly<{
    dir: string, retentionHours: number, maxBytes: number, threads: number, chunkLines: number
    /** longest line of a list (bytes); a total of upload and result bytes on disk; concurrent uploads per client */
    maxLineBytes: number, maxTotalBytes: number, maxUploadsPerClient: number
  }>
  /**
   * The SMPP front end (smpp/server.ts): ports (null: off), the TLS certificate and key files, window per bind, binds
   * per key, response timeout, keep-alive, command_status mapping, receipt routing and concatenation memory.
   */
  readonly smpp: Readonly<{
    port: number | null, tlsPort: number | null, tlsCertFile: string | null, tlsKeyFile: string | null
    window: number, maxBindsPerKey: number, responseTimeoutMs: number, enquireLinkMs: number, statuses: SmppStatusMap
    receiptTtlHours: number, queueMax: number, concatTtlMs: number
  }>
  /**
   * The SMTP front end (smtp/server.ts): ports (null: off), TLS, the name it greets with, limits, the relay spool and
   * its retries, the one-click unsubscribe (base URL, signing secrets, optional mailto) and optional DKIM signing.
   */
  readonly smtp: Readonly<{
    port: number | null, tlsPort: number | null, tlsCertFile: string | null, tlsKeyFile: string | null, hostname: string
    maxMessageBytes: number, maxRecipients: number, spoolDir: string, spoolMaxBytes: number, retryMaxHours: number
    retryBaseMs: number, unsubscribeUrl: string | null, unsubscribeSecrets: readonly string[], unsubscribeMailto: string | null
    dkim: Readonly<{ domainName: string, keySelector: string, privateKeyFile: string }> | null
  }>
  /** Decision log (needs DATABASE_URL): on/off, journal and spool folder, flush interval, fsync interval, retention. */
  readonly decisions: Readonly<{ enabled: boolean, spoolDir: string, flushMs: number, fsyncMs: number, retentionDays: number }>
}

export class ConfigError extends CodedError<'CONFIG_INVALID'> {
  constructor (message: string) {
    super('CONFIG_INVALID', message)
  }
}

/** A setting a command cannot run without: its value, or a ConfigError that names it and the command. */
export function need (value: string | null, name: string, command = 'this command'): string {
  if (value === null || value === '') throw new ConfigError(`${name} must be set for ${command}`)
  return value
}

type Env = Record<string, string | undefined>

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const

/** Every variable we read; the README's configuration table lists the same names and defaults. */
export const KNOWN_VARIABLES = [
  'HOST', 'PORT', 'REDIS_URL', 'REDIS_PREFIX', 'REDIS_CLUSTER_NODES', 'REDIS_TIMEOUT_MS', 'DATABASE_URL', 'LOG_LEVEL',
  'MAX_BODY_BYTES', 'BLOOM_FPR', 'FILTER_POLL_MS', 'AUTH_POLL_MS', 'AUTH_DEMO_KEY', 'REUSE_PORT', 'TACIR_ALLOW_WITHOUT_RECORD', 'STORE_FAILURE_MODE',
  'EMBEDDED_SEED_FILE', 'UPSTREAM_MESAJ_URL', 'UPSTREAM_EPOSTA_URL', 'UPSTREAM_ARAMA_URL', 'IYS_PUSH_USER',
  'IYS_PUSH_PASSWORD', 'IYS_PUSH_MAX_FAILURES', 'IYS_PUSH_FAILURE_WINDOW_MS', 'IYS_PUSH_LOCKOUT_MS', 'IYS_API_URL', 'IYS_USERNAME', 'IYS_PASSWORD', 'IYS_CODE', 'IYS_BRAND_CODES', 'IYS_SYNC_INTERVAL_MS',
  'IYS_WRITE_THROUGH', 'IYS_RESULT_POLL_MS',
  'HISTORY_RETENTION_DAYS', 'RETENTION_INTERVAL_MS', 'SCRUB_DIR', 'SCRUB_RETENTION_HOURS', 'SCRUB_MAX_BYTES', 'SCRUB_THREADS',
  'SCRUB_CHUNK_LINES', 'SCRUB_MAX_LINE_BYTES', 'SCRUB_MAX_TOTAL_BYTES', 'SCRUB_MAX_UPLOADS_PER_CLIENT', 'UPSTREAM_TIMEOUT_MS', 'UPSTREAM_RETRIES', 'UPSTREAM_BACKOFF_MS', 'UPSTREAM_BACKOFF_MAX_MS',
  'UPSTREAM_CONNECTIONS', 'UPSTREAM_BREAKER_FAILURE_RATIO', 'UPSTREAM_BREAKER_MIN_CALLS', 'UPSTREAM_BREAKER_WINDOW_MS',
  'UPSTREAM_BREAKER_COOLDOWN_MS', 'DECISION_LOG', 'DECISION_SPOOL_DIR', 'DECISION_FLUSH_MS', 'DECISION_FSYNC_MS', 'DECISION_RETENTION_DAYS',
  'AUTO_REBUILD', 'AUTH_TOKEN_SECRET', 'AUTH_ACCESS_TOKEN_SECONDS', 'AUTH_REFRESH_TOKEN_SECONDS', 'AUTH_TOKEN_REQUESTS_PER_HOUR',
  'REPLICA', 'REPLICA_MAX_LAG_MS', 'REPLICA_MAX_BYTES', 'SERVE_THREADS',
  'SMPP_PORT', 'SMPP_TLS_PORT', 'SMPP_TLS_CERT', 'SMPP_TLS_KEY', 'SMPP_WINDOW', 'SMPP_MAX_BINDS', 'SMPP_RESPONSE_TIMEOUT_MS',
  'SMPP_ENQUIRE_LINK_MS', 'SMPP_STATUS_MAP', 'SMPP_RECEIPT_TTL_HOURS', 'SMPP_QUEUE_MAX', 'SMPP_CONCAT_TTL_MS',
  'SMTP_PORT', 'SMTP_TLS_PORT', 'SMTP_TLS_CERT', 'SMTP_TLS_KEY', 'SMTP_HOSTNAME', 'SMTP_MAX_MESSAGE_BYTES', 'SMTP_MAX_RECIPIENTS',
  'SMTP_SPOOL_DIR', 'SMTP_SPOOL_MAX_BYTES', 'SMTP_RETRY_MAX_HOURS', 'SMTP_RETRY_BASE_MS', 'SMTP_UNSUBSCRIBE_URL', 'SMTP_UNSUBSCRIBE_SECRETS',
  'SMTP_UNSUBSCRIBE_MAILTO', 'SMTP_DKIM_DOMAIN', 'SMTP_DKIM_SELECTOR', 'SMTP_DKIM_KEY'
] as const

// Variables starting with these belong to us: an unknown one is a typo, not someone else's setting.
const OUR_PREFIXES = ['REDIS_', 'UPSTREAM_', 'IYS_', 'BLOOM_', 'FILTER_', 'TACIR_', 'STORE_', 'EMBEDDED_', 'MAX_BODY', 'HISTORY_', 'RETENTION_', 'SCRUB_', 'DECISION_', 'AUTO_', 'AUTH_', 'REPLICA_', 'SERVE_', 'SMPP_', 'SMTP_']

function closest (name: string): string | null {
  let best: string | null = null
  let bestD = 4
  for (const k of KNOWN_VARIABLES) {
    const d = editDistance(name, k)
    if (d < bestD) { bestD = d; best = k }
  }
  return best
}

function editDistance (a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1))
      prev = cur
    }
  }
  return row[b.length]!
}

/**
 * Warnings for variables outside our prefixes that look like a misspelt setting of ours (`PORTT`, `DATABSE_URL`,
 * `log_level`): within edit distance 2 of a known name, 1 for names of four letters (`HOME` is two from `HOST`).
 * Only warnings: anything else in the environment may be another program's setting.
 */
export function configWarnings (env: Env = process.env): string[] {
  const warnings: string[] = []
  for (const name of Object.keys(env)) {
    if (OUR_PREFIXES.some(p => name.startsWith(p)) || (KNOWN_VARIABLES as readonly string[]).includes(name)) continue
    const upper = name.toUpperCase() // `redis_url` is a near miss too
    for (const k of KNOWN_VARIABLES) {
      if (editDistance(upper, k) <= (k.length <= 4 ? 1 : 2)) { warnings.push(`${name} is not a setting and is ignored (did you mean ${k}?)`); break }
    }
  }
  return warnings
}

function int (env: Env, name: string, def: number, min: number, max: number): number {
  const v = env[name]
  if (v === undefined || v === '') return def
  if (!/^\d+$/.test(v) || +v < min || +v > max) throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${v}"`)
  return +v
}

/** The SMTP front end's settings (Config.smtp); what needs what is checked here, once. */
function smtpSettings (env: Env): Config['smtp'] {
  const port = optionalPort(env, 'SMTP_PORT')
  const tlsPort = optionalPort(env, 'SMTP_TLS_PORT')
  const tlsCertFile = env.SMTP_TLS_CERT ?? null
  const tlsKeyFile = env.SMTP_TLS_KEY ?? null
  if ((tlsCertFile === null) !== (tlsKeyFile === null)) throw new ConfigError('SMTP_TLS_CERT and SMTP_TLS_KEY must be set together (PEM files)')
  if (tlsPort !== null && tlsCertFile === null) throw new ConfigError('SMTP_TLS_PORT needs SMTP_TLS_CERT and SMTP_TLS_KEY (PEM files)')
  const on = port !== null || tlsPort !== null
  // Tokens must verify after a restart and on every gateway: the secrets are configuration, never made up here.
  let secrets: string[]
  try { secrets = parseUnsubscribeSecrets(env.SMTP_UNSUBSCRIBE_SECRETS ?? '') } catch (err) { throw new ConfigError(`SMTP_UNSUBSCRIBE_SECRETS: ${(err as Error).message}`) }
  // Accepted mail must have somewhere to go: the relay is the EPOSTA carrier, over SMTP.
  if (on && !/^smtps?:/i.test(env.UPSTREAM_EPOSTA_URL ?? '')) throw new ConfigError('SMTP_PORT needs UPSTREAM_EPOSTA_URL=smtp://… or smtps://… (the relay accepted mail goes on to)')
  if (on && secrets.length === 0) throw new ConfigError('SMTP_PORT needs SMTP_UNSUBSCRIBE_SECRETS (the one-click unsubscribe links are signed with it; e.g. openssl rand -hex 32)')
  const dkimNames = ['SMTP_DKIM_DOMAIN', 'SMTP_DKIM_SELECTOR', 'SMTP_DKIM_KEY'] as const
  const dkimSet = dkimNames.filter(n => (env[n] ?? '') !== '')
  if (dkimSet.length !== 0 && dkimSet.length !== 3) throw new ConfigError('SMTP_DKIM_DOMAIN, SMTP_DKIM_SELECTOR and SMTP_DKIM_KEY must be set together')
  // Unset: the gateway's own address once it listens (server.ts), right for a trial, not behind a load balancer.
  const unsubscribeUrl = url(env, 'SMTP_UNSUBSCRIBE_URL', ['http:', 'https:'])
  return Object.freeze({
    port,
    tlsPort,
    tlsCertFile,
    tlsKeyFile,
    hostname: env.SMTP_HOSTNAME ?? hostname(),
    maxMessageBytes: int(env, 'SMTP_MAX_MESSAGE_BYTES', 25 * 1024 * 1024, 1024, 1024 ** 3),
    maxRecipients: int(env, 'SMTP_MAX_RECIPIENTS', 100, 1, 10_000),
    spoolDir: env.SMTP_SPOOL_DIR ?? join(tmpdir(), 'iys-gateway', 'smtp-spool'),
    spoolMaxBytes: int(env, 'SMTP_SPOOL_MAX_BYTES', 4 * 1024 ** 3, 1024 * 1024, 2 ** 50),
    retryMaxHours: int(env, 'SMTP_RETRY_MAX_HOURS', 48, 1, 24 * 30),
    retryBaseMs: int(env, 'SMTP_RETRY_BASE_MS', 60_000, 100, 3_600_000),
    unsubscribeUrl: unsubscribeUrl?.replace(/\/+$/, '') ?? null,
    unsubscribeSecrets: Object.freeze(secrets),
    unsubscribeMailto: env.SMTP_UNSUBSCRIBE_MAILTO ?? null,
    dkim: dkimSet.length === 3 ? Object.freeze({ domainName: env.SMTP_DKIM_DOMAIN!, keySelector: env.SMTP_DKIM_SELECTOR!, privateKeyFile: env.SMTP_DKIM_KEY! }) : null
  })
}

/** A port that is off unless set (0: any free port, for tests). */
function optionalPort (env: Env, name: string): number | null {
  const v = env[name]
  return v === undefined || v === '' ? null : int(env, name, 0, 0, 65535)
}

function ratio (env: Env, name: string, def: number): number {
  const v = env[name]
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!(n > 0 && n <= 1)) throw new ConfigError(`${name} must be a number in (0, 1], got "${v}"`)
  return n
}

/** AUTH_TOKEN_SECRET: mixed into the token signing keys, so that reading the database is not enough to mint tokens. */
function tokenSecret (env: Env): string | null {
  const s = env.AUTH_TOKEN_SECRET ?? ''
  if (s === '') return null
  if (s.length < 32) throw new ConfigError('AUTH_TOKEN_SECRET must be at least 32 characters (e.g. openssl rand -base64 32)')
  return s
}

function bool (env: Env, name: string, def: boolean): boolean {
  const v = env[name]
  if (v === undefined || v === '') return def
  if (v === 'true' || v === '1') return true
  if (v === 'false' || v === '0') return false
  throw new ConfigError(`${name} must be true or false, got "${v}"`)
}

function url (env: Env, name: string, protocols: readonly string[]): string | null {
  const v = env[name]
  if (v === undefined || v === '') return null
  let u: URL
  try { u = new URL(v) } catch { throw new ConfigError(`${name} is not a URL`) }
  if (!protocols.includes(u.protocol)) throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got ${u.protocol}`)
  return v
}

function oneOf<T extends string> (env: Env, name: string, values: readonly T[], def: T): T {
  const v = env[name]
  if (v === undefined || v === '') return def
  if (!(values as readonly string[]).includes(v)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got "${v}"`)
  return v as T
}

/**
 * The Redis address every part of the gateway connects with (store/redis.ts): REDIS_URL, or `cluster:` and the seed
 * nodes of REDIS_CLUSTER_NODES; null for the embedded store.
 */
function redisAddress (env: Env): string | null {
  const single = url(env, 'REDIS_URL', ['redis:', 'rediss:'])
  const nodes = env.REDIS_CLUSTER_NODES ?? ''
  if (nodes === '') return single
  if (single !== null) throw new ConfigError('REDIS_URL and REDIS_CLUSTER_NODES are exclusive: set one (a cluster is found from its nodes)')
  try { parseClusterNodes(nodes) } catch (err) { throw new ConfigError((err as Error).message) }
  return CLUSTER_SCHEME + nodes
}

export function loadConfig (env: Env = process.env): Config {
  for (const name of Object.keys(env)) {
    if (!OUR_PREFIXES.some(p => name.startsWith(p)) || (KNOWN_VARIABLES as readonly string[]).includes(name)) continue
    const hint = closest(name)
    throw new ConfigError(`unknown setting ${name}${hint !== null ? ` (did you mean ${hint}?)` : ''}`)
  }
  const redisUrl = redisAddress(env)
  const fprText = env.BLOOM_FPR
  const bloomFpr = fprText === undefined || fprText === '' ? 0.001 : Number(fprText)
  if (!(bloomFpr > 0 && bloomFpr <= 0.5)) throw new ConfigError(`BLOOM_FPR must be a number in (0, 0.5], got "${fprText}"`)
  const redisPrefix = env.REDIS_PREFIX ?? 'iys:'
  // Printable ASCII: key names are then byte-for-byte their text (the bulk loader writes RESP by hand), and no
  // braces, which Redis Cluster reads as hash tags.
  if (!/^[\x21-\x7a\x7c\x7e]{1,64}$/.test(redisPrefix)) {
    throw new ConfigError('REDIS_PREFIX must be 1 to 64 printable ASCII characters without spaces or braces')
  }
  const user = env.IYS_PUSH_USER ?? null
  const password = env.IYS_PUSH_PASSWORD ?? null
  if ((user === null) !== (password === null)) throw new ConfigError('IYS_PUSH_USER and IYS_PUSH_PASSWORD must be set together')
  const brandCodes = (env.IYS_BRAND_CODES ?? '').split(',').map(s => s.trim()).filter(s => s !== '')
  const canonical = brandCodes.map(canonicalCode)
  if (canonical.includes(null)) throw new ConfigError('IYS_BRAND_CODES must be a comma-separated list of İYS brand codes')
  // The demo key is public (README): by default only the embedded trial (no Redis, no Postgres) accepts it.
  const demoKey = bool(env, 'AUTH_DEMO_KEY', redisUrl === null && (env.DATABASE_URL ?? '') === '')
  if (demoKey && (env.DATABASE_URL ?? '') !== '') throw new ConfigError('AUTH_DEMO_KEY cannot be true with DATABASE_URL: keys come from Postgres there (iys-gateway keys create)')
  const autoRebuild = bool(env, 'AUTO_REBUILD', redisUrl !== null && env.DATABASE_URL !== undefined && env.DATABASE_URL !== '')
  if (autoRebuild && redisUrl === null) throw new ConfigError('AUTO_REBUILD needs REDIS_URL or REDIS_CLUSTER_NODES (the filter is rebuilt into Redis)')
  if (autoRebuild && (env.DATABASE_URL ?? '') === '') throw new ConfigError('AUTO_REBUILD needs DATABASE_URL (the filter is rebuilt from Postgres)')
  const serveThreads = int(env, 'SERVE_THREADS', 1, 1, 64)
  // The serving threads read the main thread's filter through SharedArrayBuffers and Redis; the embedded store is a
  // Map in the main thread's heap, which no other thread can read.
  if (serveThreads > 1 && redisUrl === null) throw new ConfigError('SERVE_THREADS above 1 needs REDIS_URL or REDIS_CLUSTER_NODES (the embedded store serves from the main thread only)')
  const smppTlsPort = optionalPort(env, 'SMPP_TLS_PORT')
  const tlsCertFile = env.SMPP_TLS_CERT ?? null
  const tlsKeyFile = env.SMPP_TLS_KEY ?? null
  if (smppTlsPort !== null && (tlsCertFile === null || tlsKeyFile === null)) throw new ConfigError('SMPP_TLS_PORT needs SMPP_TLS_CERT and SMPP_TLS_KEY (PEM files)')
  let statuses: SmppStatusMap
  try {
    statuses = parseSmppStatusMap(env.SMPP_STATUS_MAP ?? '')
  } catch (err) {
    throw new ConfigError(`SMPP_STATUS_MAP: ${(err as Error).message}`)
  }
  const smtp = smtpSettings(env)
  const iysCodeText = env.IYS_CODE ?? ''
  const iysCode = iysCodeText === '' ? null : canonicalCode(iysCodeText)
  if (iysCodeText !== '' && iysCode === null) throw new ConfigError('IYS_CODE must be an İYS code (digits)')
  // İYS write-through (iys/outbox.ts): on by default once there is something to write through with.
  const iysReady = (env.IYS_USERNAME ?? '') !== '' && (env.IYS_PASSWORD ?? '') !== '' && iysCode !== null && (env.DATABASE_URL ?? '') !== ''
  const writeThrough = bool(env, 'IYS_WRITE_THROUGH', iysReady)
  if (writeThrough && !iysReady) throw new ConfigError('IYS_WRITE_THROUGH needs IYS_USERNAME, IYS_PASSWORD, IYS_CODE and DATABASE_URL')
  return Object.freeze({
    host: env.HOST ?? '127.0.0.1',
    port: int(env, 'PORT', 8080, 0, 65535),
    redisUrl,
    redisPrefix,
    databaseUrl: url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']),
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    maxBodyBytes: int(env, 'MAX_BODY_BYTES', 1024 * 1024, 1024, 1024 * 1024 * 1024),
    bloomFpr,
    filterPollMs: int(env, 'FILTER_POLL_MS', 250, 10, 60_000),
    authPollMs: int(env, 'AUTH_POLL_MS', 250, 10, 1000),
    demoKey,
    reusePort: bool(env, 'REUSE_PORT', false),
    serveThreads,
    oauth: Object.freeze({
      accessSeconds: int(env, 'AUTH_ACCESS_TOKEN_SECONDS', 7200, 1, 86_400),
      refreshSeconds: int(env, 'AUTH_REFRESH_TOKEN_SECONDS', 14_400, 1, 30 * 86_400),
      requestsPerHour: int(env, 'AUTH_TOKEN_REQUESTS_PER_HOUR', 1000, 0, 1_000_000),
      secret: tokenSecret(env)
    }),
    redisTimeoutMs: int(env, 'REDIS_TIMEOUT_MS', 500, 10, 60_000),
    autoRebuild,
    replica: Object.freeze({
      enabled: bool(env, 'REPLICA', true),
      maxLagMs: int(env, 'REPLICA_MAX_LAG_MS', 3000, 100, 600_000),
      maxBytes: int(env, 'REPLICA_MAX_BYTES', 2 * 1024 ** 3, 0, 64 * 1024 ** 3)
    }),
    tacirAllowedWithoutRecord: bool(env, 'TACIR_ALLOW_WITHOUT_RECORD', true),
    storeFailureMode: oneOf(env, 'STORE_FAILURE_MODE', ['closed', 'open'] as const, 'closed'),
    // data/ at the project root: one level up from src/config.ts, two from its build, dist/src/config.js.
    embeddedSeedFile: env.EMBEDDED_SEED_FILE ?? fileURLToPath(projectUrl('data/sample-consents.csv')),
    upstreams: Object.freeze({
      MESAJ: url(env, 'UPSTREAM_MESAJ_URL', ['http:', 'https:', 'smpp:', 'smpps:']),
      EPOSTA: url(env, 'UPSTREAM_EPOSTA_URL', ['http:', 'https:', 'smtp:', 'smtps:']),
      ARAMA: url(env, 'UPSTREAM_ARAMA_URL', ['http:', 'https:'])
    }),
    upstream: Object.freeze({
      timeoutMs: int(env, 'UPSTREAM_TIMEOUT_MS', 2000, 10, 120_000),
      retries: int(env, 'UPSTREAM_RETRIES', 2, 0, 10),
      backoffMs: int(env, 'UPSTREAM_BACKOFF_MS', 50, 1, 60_000),
      backoffMaxMs: int(env, 'UPSTREAM_BACKOFF_MAX_MS', 1000, 1, 600_000),
      connections: int(env, 'UPSTREAM_CONNECTIONS', 64, 1, 10_000),
      breaker: Object.freeze({
        failureRatio: ratio(env, 'UPSTREAM_BREAKER_FAILURE_RATIO', 0.5),
        minCalls: int(env, 'UPSTREAM_BREAKER_MIN_CALLS', 20, 1, 1_000_000),
        windowMs: int(env, 'UPSTREAM_BREAKER_WINDOW_MS', 10_000, 100, 3_600_000),
        cooldownMs: int(env, 'UPSTREAM_BREAKER_COOLDOWN_MS', 5000, 10, 3_600_000)
      })
    }),
    iysPushUser: user,
    iysPushPassword: password,
    iysPushLockout: Object.freeze({
      maxFailures: int(env, 'IYS_PUSH_MAX_FAILURES', 10, 1, 1000),
      windowMs: int(env, 'IYS_PUSH_FAILURE_WINDOW_MS', 300_000, 1000, 86_400_000),
      lockMs: int(env, 'IYS_PUSH_LOCKOUT_MS', 900_000, 1000, 86_400_000)
    }),
    iys: Object.freeze({
      apiUrl: url(env, 'IYS_API_URL', ['http:', 'https:']) ?? 'https://api.iys.org.tr',
      username: env.IYS_USERNAME ?? null,
      password: env.IYS_PASSWORD ?? null,
      iysCode,
      brandCodes: Object.freeze(canonical as string[]),
      pollMs: int(env, 'IYS_SYNC_INTERVAL_MS', 60_000, 1000, 86_400_000),
      writeThrough,
      resultPollMs: int(env, 'IYS_RESULT_POLL_MS', 300_000, 100, 86_400_000)
    }),
    historyRetentionDays: int(env, 'HISTORY_RETENTION_DAYS', 400, 366, 36_500),
    retentionIntervalMs: int(env, 'RETENTION_INTERVAL_MS', 3_600_000, 0, 86_400_000),
    scrub: Object.freeze({
      dir: env.SCRUB_DIR ?? join(tmpdir(), 'iys-gateway', 'scrub'),
      retentionHours: int(env, 'SCRUB_RETENTION_HOURS', 72, 1, 24 * 365),
      maxBytes: int(env, 'SCRUB_MAX_BYTES', 16 * 1024 ** 3, 1024, 2 ** 50),
      threads: int(env, 'SCRUB_THREADS', Math.max(1, availableParallelism() - 1), 1, 256),
      chunkLines: int(env, 'SCRUB_CHUNK_LINES', 8192, 100, 1_000_000),
      maxLineBytes: int(env, 'SCRUB_MAX_LINE_BYTES', 4096, 64, 1 << 20),
      maxTotalBytes: int(env, 'SCRUB_MAX_TOTAL_BYTES', 64 * 1024 ** 3, 1 << 20, 2 ** 52),
      maxUploadsPerClient: int(env, 'SCRUB_MAX_UPLOADS_PER_CLIENT', 4, 1, 100_000)
    }),
    smpp: Object.freeze({
      port: optionalPort(env, 'SMPP_PORT'),
      tlsPort: smppTlsPort,
      tlsCertFile,
      tlsKeyFile,
      window: int(env, 'SMPP_WINDOW', 64, 1, 10_000),
      maxBindsPerKey: int(env, 'SMPP_MAX_BINDS', 8, 1, 1000),
      responseTimeoutMs: int(env, 'SMPP_RESPONSE_TIMEOUT_MS', 10_000, 100, 600_000),
      enquireLinkMs: int(env, 'SMPP_ENQUIRE_LINK_MS', 30_000, 0, 3_600_000),
      statuses,
      receiptTtlHours: int(env, 'SMPP_RECEIPT_TTL_HOURS', 72, 1, 24 * 30),
      queueMax: int(env, 'SMPP_QUEUE_MAX', 100_000, 1, 10_000_000),
      concatTtlMs: int(env, 'SMPP_CONCAT_TTL_MS', 600_000, 1000, 86_400_000)
    }),
    smtp,
    decisions: Object.freeze({
      enabled: bool(env, 'DECISION_LOG', true),
      // Per database by default: a spool is replayed into the database it was meant for, never another one.
      spoolDir: env.DECISION_SPOOL_DIR ?? join(tmpdir(), 'iys-gateway', 'spool', createHash('sha256').update(env.DATABASE_URL ?? '').digest('hex').slice(0, 16)),
      flushMs: int(env, 'DECISION_FLUSH_MS', 200, 10, 60_000),
      // Group commit of the decision journal: a machine crash loses at most this window (0: fsync before each answer).
      fsyncMs: int(env, 'DECISION_FSYNC_MS', 50, 0, 10_000),
      retentionDays: int(env, 'DECISION_RETENTION_DAYS', 400, 1, 36_500)
    })
  })
}
