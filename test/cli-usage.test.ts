// The command line as scripts see it, through the real binary: every command refuses an unknown flag (exit 2, one
// line naming it), prints its own usage with --help (exit 0), `--version` is package.json's, no command prints the
// usage; a command that needs the schema says "run `iys-gateway migrate` first"; an unreachable Postgres or Redis is
// one line naming the variable to check; near-miss environment names get a warning; `generate` prints a summary.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { configWarnings } from '../src/config.js'
import { runCli, type CliResult } from './helpers/cli.js'
import { freePort } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const VERSION = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version as string
const nonEmpty = (text: string): string[] => text.split('\n').filter(l => l.trim() !== '')

/** Every command with the arguments it needs to get as far as reading its flags. */
const COMMANDS: string[][] = [
  ['serve'], ['migrate'], ['keys', 'create', '--iys-code', '700001'], ['keys', 'list'], ['brands', 'add', '--iys-code', '1', '--brand-code', '2'],
  ['import', 'x.csv'], ['load'], ['scrub', 'x.csv', '--brand-code', '600001', '--type', 'MESAJ'], ['fake-carrier'], ['fake-smsc'], ['fake-smtp'], ['originators', 'list'], ['keys', 'smpp', 'ik_0000000000000000', '--off'],
  ['generate', '--rows', '1'], ['sync-iys', '--once']
]

describe('command line usage', () => {
  it.each(COMMANDS)('%s refuses an unknown flag with exit 2 and one line naming it', async (...args) => {
    // The databases in these URLs do not exist: a command that got past its flags would fail with exit 1.
    const r = await runCli([...args, '--frobnicate'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', REDIS_URL: 'redis://127.0.0.1:1' }, 30_000)
    expect({ code: r.code, stdout: r.stdout }, r.stderr).toEqual({ code: 2, stdout: '' })
    expect(nonEmpty(r.stderr)).toEqual([`iys-gateway: unknown option '--frobnicate' (see iys-gateway ${args[0]} --help)`])
  })

  it.each(COMMANDS.map(c => [c[0]!]))('%s --help prints its usage and exits 0, whatever the environment', async (command) => {
    const r = await runCli([command, '--help'], { PORT: 'not a port' }, 30_000)
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toBe('')
    expect(r.stdout).toMatch(new RegExp(`^usage: iys-gateway\\n  ${command}\\b`))
    expect(r.stdout).not.toContain('commands:') // its own usage, not the whole list
  })

  it('--version prints the version of package.json; help prints the usage (exit 0); no command prints it too (exit 2)', async () => {
    const v = await runCli(['--version'], {})
    expect({ code: v.code, stdout: v.stdout }).toEqual({ code: 0, stdout: VERSION + '\n' })
    const help = await runCli(['help'], {})
    expect(help.code).toBe(0)
    for (const c of COMMANDS) expect(help.stdout).toContain(`  ${c[0]!}`)
    expect(help.stdout).toContain('exit codes: 0 ok, 1 failure, 2 usage or configuration error')
    expect((await runCli(['--help'], {})).stdout).toBe(help.stdout)
    expect((await runCli(['help', 'import'], {})).stdout).toContain('--max-rejects N|P%')
    const none = await runCli([], {})
    expect({ code: none.code, stdout: none.stdout }).toEqual({ code: 2, stdout: '' })
    expect(none.stderr).toBe(help.stdout)
  })

  it('answers an unknown command, a missing option value and a stray argument with one line, exit 2', async () => {
    const cases: [string[], string][] = [
      [['frob'], 'iys-gateway: unknown command "frob" (see iys-gateway --help)'],
      [['--port', '9000'], 'iys-gateway: unknown option --port (see iys-gateway --help)'],
      [['generate', '--rows'], 'iys-gateway: option \'--rows\' needs a value (see iys-gateway generate --help)'],
      [['load', 'now'], 'iys-gateway: unexpected argument \'now\': this command takes no arguments (see iys-gateway load --help)']
    ]
    for (const [args, line] of cases) {
      const r = await runCli(args, {})
      expect({ args, code: r.code, stderr: nonEmpty(r.stderr) }).toEqual({ args, code: 2, stderr: [line] })
    }
  })
})

describe('configuration warnings', () => {
  it('warns about near misses of our names outside our prefixes, and about nothing else', () => {
    expect(configWarnings({ PORTT: '9000', DATABSE_URL: 'x', log_level: 'debug', redis_url: 'x', HOME: '/root', PATH: '/bin', PGPORT: '5432', TERM: 'xterm', HOSTNAME: 'h', LANG: 'C', USER: 'u', PWD: '/', NODE_ENV: 'production' })).toEqual([
      'PORTT is not a setting and is ignored (did you mean PORT?)',
      'DATABSE_URL is not a setting and is ignored (did you mean DATABASE_URL?)',
      'log_level is not a setting and is ignored (did you mean LOG_LEVEL?)',
      'redis_url is not a setting and is ignored (did you mean REDIS_URL?)'
    ])
    expect(configWarnings({ PORT: '1', DATABASE_URL: 'x', REDIS_URL: 'y' })).toEqual([])
  })

  it('prints them on stderr at start-up and goes on', async () => {
    const r = await runCli(['generate', '--rows', '1'], { PORTT: '9000', DATABSE_URL: 'postgres://x' })
    expect(r.code, r.stderr).toBe(0)
    expect(r.stderr).toContain('iys-gateway: warning: PORTT is not a setting and is ignored (did you mean PORT?)\n')
    expect(r.stderr).toContain('iys-gateway: warning: DATABSE_URL is not a setting and is ignored (did you mean DATABASE_URL?)\n')
  })

  it('still refuses a misspelt name with our prefix (REDIS_ULR) as a configuration error', async () => {
    const r = await runCli(['generate', '--rows', '1'], { REDIS_ULR: 'redis://x' })
    expect(r.code).toBe(2)
    expect(nonEmpty(r.stderr)).toEqual(['iys-gateway: configuration error: unknown setting REDIS_ULR (did you mean REDIS_URL?)'])
  })
})

describe('generate', () => {
  it('prints a summary: JSON on stdout with --out, and only on stderr when the CSV goes to stdout', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'iys-gen-'))
    onTestFinished(() => { rmSync(dir, { recursive: true, force: true }) })
    const file = join(dir, 'c.csv')
    const out = await runCli(['generate', '--rows', '500', '--brands', '3', '--out', file], {})
    expect(out.code, out.stderr).toBe(0)
    const summary = JSON.parse(out.stdout)
    expect(summary).toMatchObject({ rows: 500, brands: 3, file })
    expect(summary.seconds).toBeGreaterThan(0)
    expect(readFileSync(file, 'utf8').split('\n')).toHaveLength(502) // header, rows, final newline
    expect(out.stderr).toMatch(/^generate: 500 rows, .*— 3 brands → .*c\.csv\n$/m)

    const piped = await runCli(['generate', '--rows', '500', '--brands', '3'], {})
    expect(piped.code, piped.stderr).toBe(0)
    expect(piped.stdout).toBe(readFileSync(file, 'utf8')) // only the CSV
    expect(piped.stderr).toMatch(/^generate: 500 rows, .*s — 3 brands → stdout\n$/m)
  })
})

describe('commands that need the stores', () => {
  let ws: TestServices
  let dir: string
  beforeAll(async () => { ws = await testServices({ dirPrefix: 'iys-cliu-' }); dir = ws.dir }) // not migrated
  afterAll(async () => { await ws?.close() })

  const oneLine = (r: CliResult): string => {
    expect(r.code, r.stderr).toBe(1)
    expect(r.stdout).toBe('')
    const lines = nonEmpty(r.stderr)
    expect(lines).toHaveLength(1)
    return lines[0]!
  }

  it('load, import and sync-iys before migrate say "run `iys-gateway migrate` first" in one line, exit 1', async () => {
    const env = { ...ws.env, REDIS_URL: 'redis://127.0.0.1:6379', IYS_USERNAME: 'u', IYS_PASSWORD: 'p', IYS_CODE: '700001', IYS_BRAND_CODES: '600001', IYS_WRITE_THROUGH: 'false' }
    for (const args of [['load'], ['import', join(dir, 'none.csv')], ['sync-iys', '--once']]) {
      expect(oneLine(await runCli(args, env))).toBe(`iys-gateway ${args[0]}: the database has no schema: run \`iys-gateway migrate\` first`)
    }
  })

  it('an unreachable Postgres is one line that names it and DATABASE_URL', async () => {
    const port = await freePort()
    const line = oneLine(await runCli(['import', 'x.csv'], { DATABASE_URL: `postgres://postgres:secret@127.0.0.1:${port}/iys` }))
    expect(line).toMatch(new RegExp(`^iys-gateway import: cannot use Postgres at 127\\.0\\.0\\.1:${port}/iys: .*ECONNREFUSED.* \\(check DATABASE_URL\\)$`))
    expect(line).not.toContain('secret')
    const missing = oneLine(await runCli(['keys', 'list'], { DATABASE_URL: ws.env.DATABASE_URL!.replace(/\/[^/]+$/, '/no_such_db') }))
    expect(missing).toMatch(/^iys-gateway keys: cannot use Postgres at .*\/no_such_db: database "no_such_db" does not exist \(check DATABASE_URL\)$/)
  })

  it('load with a closed Redis port prints one line naming REDIS_URL, not ioredis stack traces', async () => {
    expect((await runCli(['migrate'], ws.env)).code).toBe(0)
    const port = await freePort()
    const line = oneLine(await runCli(['load'], { ...ws.env, REDIS_URL: `redis://127.0.0.1:${port}` }, 60_000))
    expect(line).toMatch(new RegExp(`^iys-gateway load: Redis at 127\\.0\\.0\\.1:${port} is not reachable after \\d+ ms \\(connect ECONNREFUSED .*\\) \\(check REDIS_URL\\)$`))
  })
})
