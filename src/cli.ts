// `iys-gateway <command>`: serve · migrate · keys · brands · originators · import FILE · load · sync-iys · scrub FILE · fake-carrier · fake-smsc · fake-smtp · generate.
// Exit codes: 0 ok, 1 failure, 2 usage or configuration error. An error is one line on stderr (details go to the
// log); an unknown flag is a usage error for every command, never ignored. `iys-gateway COMMAND --help` prints the
// command's usage, `iys-gateway --version` the version. stdout holds only what scripts read (JSON summaries, the
// generated CSV); progress and logs go to stderr.

import { createWriteStream, readFileSync } from 'node:fs'
import { once } from 'node:events'
import { parseArgs } from 'node:util'
import { ConfigError, configWarnings, loadConfig, need, type Config } from './config.js'
import { layout } from './filter/layout.js'
import { canonicalCode } from './domain/vocabulary.js'
import { createLogger, type Logger } from './log.js'
import { parseScrubParams } from './http/scrub-routes.js'
import { startGateway } from './server.js'
import { fakeCarrierCommand } from './dev/fake-carrier.js'
import { fakeSmscCommand } from './dev/fake-smsc.js'
import { fakeSmtpCommand } from './dev/fake-smtp.js'
import { migrate } from './store/migrate.js'
import pg from 'pg'
import { createPool, isDbUnreachable, type Pool } from './store/pg.js'
import { createRedis, waitReady } from './store/redis.js'
import { projectUrl } from './util/paths.js'
import { brandsCommand, BRANDS_USAGE, keysCommand, KEYS_USAGE, originatorsCommand, ORIGINATORS_USAGE, UsageError } from './cli-keys.js'
// The offline programs: this command table is the one place in src/ that imports loaders/ (test/layout.test.ts).
import { generateConsents } from '../loaders/generate.js'
import { importConsents, importFailure, parseRejectLimit } from '../loaders/import.js'
import { loadFilter } from '../loaders/load.js'
import { Progress } from '../loaders/progress.js'
import { scrubCommand } from '../loaders/scrub-file.js'
import { syncIysCommand } from '../loaders/sync-iys.js'

/** Each command's usage, in the order `iys-gateway --help` lists them. */
const COMMANDS: Record<string, string> = {
  serve: `  serve                         run the gateway (embedded store unless REDIS_URL is set); takes no flags:
                                settings come from the environment (PORT=9000, not --port 9000)`,
  migrate: '  migrate                       create or upgrade the Postgres schema (needs DATABASE_URL)',
  keys: KEYS_USAGE,
  brands: BRANDS_USAGE,
  originators: ORIGINATORS_USAGE,
  import: `  import FILE [--rules iys|provider] [--iys-code C] [--brand-code B] [--rejects FILE] [--actor NAME] [--max-rejects N|P%]
                                bulk-load a consent file (.csv, .json, .ndjson/.jsonl) into Postgres (DATABASE_URL);
                                exit 1 when rows were refused and none applied, or more than --max-rejects refused
                                (the good rows are applied either way)`,
  load: '  load                          rebuild the filter from Postgres into Redis and flip to it (DATABASE_URL, REDIS_URL)',
  scrub: `  scrub FILE --brand-code B --type T [--recipient-type R] [--informational] [--out FILE]
                                scrub a recipient list locally (CSV or NDJSON) against the same stores`,
  'fake-carrier': `  fake-carrier [--port 8081] [--host 127.0.0.1] [--latency-ms 0] [--failure-rate 0] [--seed S]
                                a fake carrier (the generic JSON wire format) for tests, benchmarks and docker-compose`,
  'fake-smtp': `  fake-smtp [--port 2525] [--host 127.0.0.1] [--user U --password P] [--delay-ms 0]
                                a fake upstream mail relay (SMTP) for trying the SMTP front end by hand`,
  'fake-smsc': `  fake-smsc [--port 2775] [--host 127.0.0.1] [--system-id smsc-test] [--password secret] [--delay-ms 0]
                                a fake operator SMSC (SMPP 3.4) for trying the SMPP front end and carrier by hand`,
  generate: `  generate --rows N [--brands B] [--ret-share 0.2] [--seed S] [--out FILE]
                                write a synthetic consent CSV (stdout unless --out); a summary on stderr`,
  'sync-iys': `  sync-iys [--once] [--brand-code B]
                                pull İYS consent changes into Postgres (DATABASE_URL, IYS_*); --once: until none is new`
}

const USAGE = `usage: iys-gateway <command> [options]      (iys-gateway <command> --help, iys-gateway --version)

commands:
${Object.values(COMMANDS).join('\n')}

exit codes: 0 ok, 1 failure, 2 usage or configuration error
configuration comes from the environment: see README.md`

function version (): string {
  return (JSON.parse(readFileSync(projectUrl('package.json'), 'utf8')) as { version: string }).version
}

/** The arguments before a `--` (after it, everything is a positional, even `--help`). */
const options = (args: string[]): string[] => args.includes('--') ? args.slice(0, args.indexOf('--')) : args

export async function main (argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  // Help and version need no configuration: they work whatever the environment holds.
  if (command === '--version' || command === '-V' || command === 'version') { process.stdout.write(version() + '\n'); return 0 }
  if (command === undefined) { process.stderr.write(USAGE + '\n'); return 2 }
  if (command === 'help' || command === '--help' || command === '-h') {
    const topic = rest[0] !== undefined ? COMMANDS[rest[0]] : undefined
    process.stdout.write((topic !== undefined ? `usage: iys-gateway\n${topic}` : USAGE) + '\n')
    return 0
  }
  if (!Object.hasOwn(COMMANDS, command)) return usageError(command.startsWith('-') ? `unknown option ${command}` : `unknown command "${command}"`, null)
  if (options(rest).some(a => a === '--help' || a === '-h')) { process.stdout.write(`usage: iys-gateway\n${COMMANDS[command]!}\n`); return 0 }

  let config: Config
  try {
    config = loadConfig()
  } catch (err) {
    process.stderr.write(`iys-gateway: configuration error: ${(err as Error).message}\n`)
    return 2
  }
  for (const w of configWarnings()) process.stderr.write(`iys-gateway: warning: ${w}\n`)
  // serve logs to stdout, as services do; the other commands to stderr, beside their progress line.
  const log = createLogger(config.logLevel, undefined, command === 'serve' ? (process.stdout.isTTY ? process.stdout : undefined) : process.stderr)
  try {
    return await run(command, rest, config, log)
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) return usageError(parseArgsMessage(err as Error), command)
    if (err instanceof ConfigError) {
      process.stderr.write(`iys-gateway: configuration error: ${err.message}\n`)
      return 2
    }
    log.debug({ err }, 'command failed')
    process.stderr.write(`iys-gateway ${command}: ${describeDbError(err, config.databaseUrl) ?? (err as Error).message}\n`)
    return 1
  }
}

/** One line on stderr, exit 2. */
function usageError (message: string, command: string | null): number {
  process.stderr.write(`iys-gateway: ${message} (see iys-gateway ${command ?? ''}${command !== null ? ' ' : ''}--help)\n`)
  return 2
}

/** node:util parseArgs' messages, cut to their first sentence ("Unknown option '--x'. To specify a positional …"). */
function parseArgsMessage (err: Error): string {
  const code = (err as { code?: string }).code
  const option = /'(-[^']*)'/.exec(err.message)?.[1]
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option !== undefined) return `unknown option '${option}'`
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return err.message.replace(/\. This command does not take positional arguments/, ': this command takes no arguments').replace(/^Unexpected/, 'unexpected').replace(/\.$/, '')
  const first = err.message.split(/\.\s/)[0]!.replace(/\.$/, '').replace(/^Option '(-[^' ]+)[^']*' argument missing/, 'option \'$1\' needs a value')
  return first.charAt(0).toLowerCase() + first.slice(1)
}

async function run (command: string, rest: string[], config: Config, log: Logger): Promise<number> {
  switch (command) {
    case 'serve':
      // Settings come from the environment (PORT=9000, not --port 9000): any flag is a usage error, never ignored.
      parseArgs({ args: rest, options: {} })
      return await serve(config, log)
    case 'migrate': {
      parseArgs({ args: rest, options: {} })
      const pool = createPool(need(config.databaseUrl, 'DATABASE_URL'), 1)
      try {
        const r = await migrate(pool)
        process.stdout.write(`schema at version ${r.version} (${r.applied} migration${r.applied === 1 ? '' : 's'} applied)\n`)
      } finally { await pool.end() }
      return 0
    }
    case 'keys': return await keysCommand(config, rest)
    case 'brands': return await brandsCommand(config, rest)
    case 'originators': return await originatorsCommand(config, rest)
    case 'import': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { rejects: { type: 'string' }, actor: { type: 'string' }, rules: { type: 'string', default: 'iys' }, 'iys-code': { type: 'string' }, 'brand-code': { type: 'string' }, 'max-rejects': { type: 'string' } }
      })
      if (positionals.length !== 1) throw new UsageError('import takes exactly one FILE')
      const rules = values.rules
      if (rules !== 'iys' && rules !== 'provider') throw new UsageError('--rules must be iys or provider')
      const defaults: { iysCode?: string, brandCode?: string } = {}
      for (const [flag, key] of [['iys-code', 'iysCode'], ['brand-code', 'brandCode']] as const) {
        const v = values[flag]
        if (v === undefined) continue
        const code = canonicalCode(v)
        if (code === null) throw new UsageError(`--${flag} must be a positive integer`)
        defaults[key] = code
      }
      const limit = values['max-rejects'] === undefined ? null : parseRejectLimit(values['max-rejects'])
      if (limit === null && values['max-rejects'] !== undefined) throw new UsageError('--max-rejects must be a number of rows (100) or a percentage of the rows (0.5%)')
      const pool = await schemaPool(config, 1, 'import')
      try {
        const r = await importConsents(pool, { file: positionals[0]!, rejectFile: values.rejects, actor: values.actor, rules, defaults })
        process.stdout.write(JSON.stringify(r) + '\n')
        const failure = importFailure(r, rules, limit)
        if (failure === null) return 0
        process.stderr.write(`iys-gateway import: ${failure}\n`)
        return 1
      } finally { await pool.end() }
    }
    case 'load': {
      parseArgs({ args: rest, options: {} })
      const pool = await schemaPool(config, 2, 'load') // the snapshot, and the replay of changes after it
      const redis = createRedis(need(config.redisUrl, 'REDIS_URL', 'load'), { timeoutMs: config.redisTimeoutMs, name: 'iys-load', failFast: false })
      // Connection errors are reported once, by waitReady or the failing command: not as ioredis's stack traces.
      redis.on('error', () => {})
      try {
        await waitReady(redis, 10_000)
        const r = await loadFilter({ pool, redis, redisUrl: config.redisUrl!, layout: layout(config.redisPrefix), fpr: config.bloomFpr, log })
        process.stdout.write(JSON.stringify(r) + '\n')
        return 0
      } finally {
        await pool.end()
        redis.disconnect()
      }
    }
    case 'scrub': {
      const { values, positionals } = parseArgs({
        args: rest,
        allowPositionals: true,
        options: { 'brand-code': { type: 'string' }, type: { type: 'string' }, 'recipient-type': { type: 'string', default: 'BIREYSEL' }, informational: { type: 'boolean', default: false }, out: { type: 'string' } }
      })
      if (positionals.length !== 1) throw new UsageError('scrub takes exactly one FILE')
      const q = new URLSearchParams({ type: values.type ?? '', recipientType: values['recipient-type']!, commercial: String(!values.informational) })
      if (values['brand-code'] !== undefined) q.set('brandCode', values['brand-code'])
      let params
      try { params = parseScrubParams(q) } catch (err) { throw new UsageError((err as Error).message + ' (--brand-code, --type, --recipient-type)') }
      const file = positionals[0]!
      const summary = await scrubCommand(config, log, file, params, values.out ?? file + '.result.csv')
      process.stdout.write(JSON.stringify(summary) + '\n')
      return 0
    }
    case 'fake-carrier':
      return await fakeCarrierCommand(rest)
    case 'fake-smsc':
      return await fakeSmscCommand(rest)
    case 'fake-smtp':
      return await fakeSmtpCommand(rest)
    case 'generate': {
      const { values } = parseArgs({
        args: rest,
        options: { rows: { type: 'string' }, brands: { type: 'string', default: '5' }, 'ret-share': { type: 'string', default: '0.2' }, seed: { type: 'string', default: '1' }, out: { type: 'string' } }
      })
      const rows = Number(values.rows)
      const brands = Number(values.brands)
      const retShare = Number(values['ret-share'])
      const seed = Number(values.seed)
      if (!Number.isInteger(rows) || rows < 1) throw new UsageError('--rows must be a positive integer')
      if (!Number.isInteger(brands) || brands < 1) throw new UsageError('--brands must be a positive integer')
      if (!(retShare >= 0 && retShare <= 1)) throw new UsageError('--ret-share must be between 0 and 1')
      if (!Number.isInteger(seed)) throw new UsageError('--seed must be an integer')
      const file = values.out ?? null
      const out = file !== null ? createWriteStream(file) : process.stdout
      const progress = new Progress({ label: 'generate', totalRows: rows })
      const started = Date.now()
      await generateConsents({ rows, brands, retShare, seed }, out, n => { progress.update(n) })
      if (out !== process.stdout) { out.end(); await once(out, 'close') }
      const seconds = (Date.now() - started) / 1000
      // The summary goes where it cannot mix with the CSV: stderr always (the progress line's last), and as JSON on
      // stdout when the CSV went to a file.
      progress.done(`${brands} brand${brands === 1 ? '' : 's'} → ${file ?? 'stdout'}`)
      if (file !== null) process.stdout.write(JSON.stringify({ rows, brands, file, seconds }) + '\n')
      return 0
    }
    case 'sync-iys': {
      const { values } = parseArgs({ args: rest, options: { once: { type: 'boolean', default: false }, 'brand-code': { type: 'string' } } })
      const b = values['brand-code']
      const brandCode = b === undefined ? null : canonicalCode(b)
      if (b !== undefined && brandCode === null) throw new UsageError('--brand-code must be an İYS brand code (digits)')
      if (config.databaseUrl !== null) await (await schemaPool(config, 1, 'sync-iys')).end() // before any İYS call
      return await syncIysCommand(config, log, { once: values.once, brandCode })
    }
  }
  throw new UsageError(`unknown command "${command}"`) // unreachable: main checked it against COMMANDS
}

/**
 * A pool for a command that needs the schema. One round trip checks both that Postgres answers (else one line
 * naming DATABASE_URL) and that it was migrated (else "run `iys-gateway migrate` first"), before any work is done.
 */
async function schemaPool (config: Config, max: number, command: string): Promise<Pool> {
  const pool = createPool(need(config.databaseUrl, 'DATABASE_URL', command), max)
  try {
    const r = await pool.query<{ migrated: boolean }>('SELECT to_regclass(\'consents\') IS NOT NULL AS migrated')
    if (!r.rows[0]!.migrated) throw new Error('the database has no schema: run `iys-gateway migrate` first')
    return pool
  } catch (err) {
    await pool.end()
    throw err
  }
}

async function serve (config: Config, log: Logger): Promise<number> {
  const gw = await startGateway(config, log)
  await new Promise<void>(resolve => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'shutting down')
      gw.close().then(resolve, resolve)
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
  })
  return 0
}

/**
 * One line for a command that could not reach or use the database, naming what to check: the host and database of
 * `url` (never its password) and DATABASE_URL, or `iys-gateway migrate` when the schema is missing. Null when `err`
 * is none of those (a constraint, a bug), which is reported as it is.
 */
function describeDbError (err: unknown, url: string | null): string | null {
  const code = (err as { code?: unknown } | null)?.code
  const message = err instanceof Error ? err.message : String(err)
  // 42P01 undefined table: the schema is not there (or is older than this version)
  if (err instanceof pg.DatabaseError && code === '42P01') return 'the database has no schema (or an older one): run `iys-gateway migrate` first'
  let where = 'Postgres'
  try {
    const u = new URL(url ?? '')
    where = `Postgres at ${u.hostname}:${u.port !== '' ? u.port : '5432'}${u.pathname.length > 1 ? u.pathname : ''}`
  } catch { /* no URL: the variable itself is what to check */ }
  // 28xxx authentication, 3D000 no such database, and what a route answers 503 for (store/pg.ts: network errors, not
  // file errors, and node-postgres's own connection failures). Redis's are worded where they happen (waitReady).
  const connection = (err instanceof pg.DatabaseError && /^(28|3D)/.test(String(code ?? ''))) || isDbUnreachable(err)
  return connection ? `cannot use ${where}: ${message} (check DATABASE_URL)` : null
}
