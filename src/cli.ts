// `iys-gateway <command>`: serve · migrate · keys · brands · import FILE · load · sync-iys · scrub FILE · fake-carrier · generate. Exit codes: 0 ok, 1 failure,
// 2 usage or configuration error. Errors are one clear line on stderr; details go to the log.

import { createWriteStream } from 'node:fs'
import { once } from 'node:events'
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig, need, type Config } from './config.js'
import { layout } from './filter/layout.js'
import { canonicalCode } from './domain/vocabulary.js'
import { createLogger } from './log.js'
import { parseScrubParams } from './http/scrub-routes.js'
import { startGateway } from './server.js'
import { fakeCarrierCommand } from './dev/fake-carrier.js'
import { migrate } from './store/migrate.js'
import { createPool } from './store/pg.js'
import { createRedis, waitReady } from './store/redis.js'
import { brandsCommand, keysCommand, KEYS_USAGE, UsageError } from './cli-keys.js'
// The offline programs: this command table is the one place in src/ that imports loaders/ (test/layout.test.ts).
import { generateConsents } from '../loaders/generate.js'
import { importConsents } from '../loaders/import.js'
import { loadFilter } from '../loaders/load.js'
import { scrubCommand } from '../loaders/scrub-file.js'
import { syncIysCommand } from '../loaders/sync-iys.js'

const USAGE = `usage: iys-gateway <command> [options]

commands:
  serve                         run the gateway (embedded store unless REDIS_URL is set)
  migrate                       create or upgrade the Postgres schema (needs DATABASE_URL)
${KEYS_USAGE}
  import FILE [--rules iys|provider] [--iys-code C] [--brand-code B] [--rejects FILE] [--actor NAME]
                                bulk-load a consent file (.csv, .json, .ndjson/.jsonl) into Postgres (DATABASE_URL)
  load                          rebuild the filter from Postgres into Redis and flip to it (DATABASE_URL, REDIS_URL)
  scrub FILE --brand-code B --type T [--recipient-type R] [--informational] [--out FILE]
                                scrub a recipient list locally (CSV or NDJSON) against the same stores
  fake-carrier [--port 8081] [--latency-ms 0] [--failure-rate 0]
                                a fake carrier (the generic JSON wire format) for tests, benchmarks and docker-compose
  generate --rows N [--brands B] [--ret-share 0.2] [--seed S] [--out FILE]
                                write a synthetic consent CSV (stdout unless --out)
  sync-iys [--once] [--brand-code B]
                                pull İYS consent changes into Postgres (DATABASE_URL, IYS_*); --once: until none is new

configuration comes from the environment: see README.md`

export async function main (argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  let config: Config
  try {
    config = loadConfig()
  } catch (err) {
    process.stderr.write(`iys-gateway: configuration error: ${(err as Error).message}\n`)
    return 2
  }
  const log = createLogger(config.logLevel)
  try {
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
      case 'import': {
        const { values, positionals } = parseArgs({
          args: rest,
          allowPositionals: true,
          options: { rejects: { type: 'string' }, actor: { type: 'string' }, rules: { type: 'string', default: 'iys' }, 'iys-code': { type: 'string' }, 'brand-code': { type: 'string' } }
        })
        if (positionals.length !== 1) throw new UsageError('import takes exactly one FILE')
        if (values.rules !== 'iys' && values.rules !== 'provider') throw new UsageError('--rules must be iys or provider')
        const defaults: { iysCode?: string, brandCode?: string } = {}
        for (const [flag, key] of [['iys-code', 'iysCode'], ['brand-code', 'brandCode']] as const) {
          const v = values[flag]
          if (v === undefined) continue
          const code = canonicalCode(v)
          if (code === null) throw new UsageError(`--${flag} must be a positive integer`)
          defaults[key] = code
        }
        const pool = createPool(need(config.databaseUrl, 'DATABASE_URL'), 1)
        try {
          const r = await importConsents(pool, { file: positionals[0]!, rejectFile: values.rejects, actor: values.actor, rules: values.rules, defaults })
          process.stdout.write(JSON.stringify(r) + '\n')
          return 0
        } finally { await pool.end() }
      }
      case 'load': {
        parseArgs({ args: rest, options: {} })
        const pool = createPool(need(config.databaseUrl, 'DATABASE_URL'), 2) // the snapshot, and the replay of changes after it
        const redis = createRedis(need(config.redisUrl, 'REDIS_URL'), { timeoutMs: config.redisTimeoutMs, name: 'iys-load', failFast: false })
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
        const out = values.out !== undefined ? createWriteStream(values.out) : process.stdout
        await generateConsents({ rows, brands, retShare, seed }, out)
        if (out !== process.stdout) { out.end(); await once(out, 'close') }
        return 0
      }
      case 'sync-iys': {
        const { values } = parseArgs({ args: rest, options: { once: { type: 'boolean', default: false }, 'brand-code': { type: 'string' } } })
        const b = values['brand-code']
        const brandCode = b === undefined ? null : canonicalCode(b)
        if (b !== undefined && brandCode === null) throw new UsageError('--brand-code must be an İYS brand code (digits)')
        return await syncIysCommand(config, log, { once: values.once, brandCode })
      }
      case undefined: case '-h': case '--help': case 'help':
        process.stdout.write(USAGE + '\n')
        return command === undefined ? 2 : 0
      default:
        throw new UsageError(`unknown command "${command}"`)
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') === true) {
      process.stderr.write(`iys-gateway: ${(err as Error).message}\n${USAGE}\n`)
      return 2
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`iys-gateway: configuration error: ${err.message}\n`)
      return 2
    }
    log.debug({ err }, 'command failed')
    process.stderr.write(`iys-gateway ${command}: ${(err as Error).message}\n`)
    return 1
  }
}

async function serve (config: Config, log: ReturnType<typeof createLogger>): Promise<number> {
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
