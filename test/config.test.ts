// Configuration comes from the environment, is validated once and frozen. A bad value is a ConfigError that names
// the variable; a misspelt variable in our namespaces is an error with a hint; other people's variables are ignored.
// The real command line turns a configuration error into exit code 2 and one line on stderr.

import { existsSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { ConfigError, KNOWN_VARIABLES, loadConfig } from '../src/config.js'
import { runCli } from './helpers/cli.js'
import { parseClusterNodes } from '../src/store/redis.js'

const configError = (env: Record<string, string>): ConfigError => {
  try {
    loadConfig(env)
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError)
    return err as ConfigError
  }
  throw new Error(`loadConfig(${JSON.stringify(env)}) did not throw`)
}

describe('loadConfig defaults', () => {
  it('gives the documented defaults for an empty environment', () => {
    const c = loadConfig({})
    expect(c).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      redisUrl: null,
      redisPrefix: 'iys:',
      databaseUrl: null,
      logLevel: 'info',
      maxBodyBytes: 1024 * 1024,
      bloomFpr: 0.001,
      storeFailureMode: 'closed',
      tacirAllowedWithoutRecord: true,
      upstreams: { MESAJ: null, EPOSTA: null, ARAMA: null },
      iysPushUser: null,
      iysPushPassword: null
    })
    expect(c.filterPollMs).toBeGreaterThan(0)
    expect(c.redisTimeoutMs).toBeGreaterThan(0)
  })

  it('seeds the embedded store from the sample consent file shipped with the repository by default', () => {
    const c = loadConfig({})
    expect(c.embeddedSeedFile).toMatch(/data\/sample-consents\.csv$/)
    expect(existsSync(c.embeddedSeedFile)).toBe(true)
  })

  it('returns a frozen object, nested parts included', () => {
    const c = loadConfig({})
    expect(Object.isFrozen(c)).toBe(true)
    expect(Object.isFrozen(c.upstreams)).toBe(true)
    expect(() => { (c as { port: number }).port = 1 }).toThrow(TypeError)
    expect(() => { (c.upstreams as { MESAJ: string | null }).MESAJ = 'http://x' }).toThrow(TypeError)
    expect(c.port).toBe(8080)
  })

  it('treats an empty value as unset for numbers and flags', () => {
    const c = loadConfig({ PORT: '', BLOOM_FPR: '', TACIR_ALLOW_WITHOUT_RECORD: '', STORE_FAILURE_MODE: '' })
    expect(c).toMatchObject({ port: 8080, bloomFpr: 0.001, tacirAllowedWithoutRecord: true, storeFailureMode: 'closed' })
  })
})

describe('loadConfig with valid settings', () => {
  it('reads every documented variable', () => {
    const c = loadConfig({
      HOST: '0.0.0.0',
      PORT: '9001',
      REDIS_URL: 'redis://127.0.0.1:6380/2',
      REDIS_PREFIX: 'test-run-7:',
      DATABASE_URL: 'postgres://u:p@localhost/iys',
      LOG_LEVEL: 'debug',
      MAX_BODY_BYTES: '4096',
      BLOOM_FPR: '0.01',
      TACIR_ALLOW_WITHOUT_RECORD: 'false',
      STORE_FAILURE_MODE: 'open',
      UPSTREAM_MESAJ_URL: 'http://sms.example:8081/send',
      UPSTREAM_EPOSTA_URL: 'https://mail.example/send',
      IYS_PUSH_USER: 'iys',
      IYS_PUSH_PASSWORD: 's3cret'
    })
    expect(c).toMatchObject({
      host: '0.0.0.0',
      port: 9001,
      redisUrl: 'redis://127.0.0.1:6380/2',
      redisPrefix: 'test-run-7:',
      databaseUrl: 'postgres://u:p@localhost/iys',
      logLevel: 'debug',
      maxBodyBytes: 4096,
      bloomFpr: 0.01,
      tacirAllowedWithoutRecord: false,
      storeFailureMode: 'open',
      upstreams: { MESAJ: 'http://sms.example:8081/send', EPOSTA: 'https://mail.example/send', ARAMA: null },
      iysPushUser: 'iys',
      iysPushPassword: 's3cret'
    })
  })

  it('accepts port 0 (any free port) and the flag spellings true/false/1/0', () => {
    expect(loadConfig({ PORT: '0' }).port).toBe(0)
    expect(loadConfig({ TACIR_ALLOW_WITHOUT_RECORD: '0' }).tacirAllowedWithoutRecord).toBe(false)
    expect(loadConfig({ TACIR_ALLOW_WITHOUT_RECORD: '1' }).tacirAllowedWithoutRecord).toBe(true)
    expect(loadConfig({ TACIR_ALLOW_WITHOUT_RECORD: 'true' }).tacirAllowedWithoutRecord).toBe(true)
  })
})

describe('loadConfig with a bad value', () => {
  const cases: [string, Record<string, string>, string][] = [
    ['PORT that is not a number', { PORT: 'abc' }, 'PORT'],
    ['PORT above 65535', { PORT: '70000' }, 'PORT'],
    ['negative PORT', { PORT: '-1' }, 'PORT'],
    ['BLOOM_FPR above 1', { BLOOM_FPR: '2' }, 'BLOOM_FPR'],
    ['BLOOM_FPR of zero', { BLOOM_FPR: '0' }, 'BLOOM_FPR'],
    ['BLOOM_FPR that is not a number', { BLOOM_FPR: 'low' }, 'BLOOM_FPR'],
    ['REDIS_URL with an http scheme', { REDIS_URL: 'http://x' }, 'REDIS_URL'],
    ['REDIS_URL that is not a URL', { REDIS_URL: 'localhost 6379' }, 'REDIS_URL'],
    ['DATABASE_URL with a redis scheme', { DATABASE_URL: 'redis://localhost' }, 'DATABASE_URL'],
    ['UPSTREAM_MESAJ_URL with an ftp scheme', { UPSTREAM_MESAJ_URL: 'ftp://carrier' }, 'UPSTREAM_MESAJ_URL'],
    ['LOG_LEVEL that pino does not know', { LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    ['STORE_FAILURE_MODE other than closed/open', { STORE_FAILURE_MODE: 'maybe' }, 'STORE_FAILURE_MODE'],
    ['TACIR_ALLOW_WITHOUT_RECORD spelt yes', { TACIR_ALLOW_WITHOUT_RECORD: 'yes' }, 'TACIR_ALLOW_WITHOUT_RECORD'],
    ['REDIS_PREFIX with a space', { REDIS_PREFIX: 'iys test:' }, 'REDIS_PREFIX'],
    ['REDIS_PREFIX with a hash-tag brace', { REDIS_PREFIX: '{iys}:' }, 'REDIS_PREFIX'],
    ['MAX_BODY_BYTES below the minimum', { MAX_BODY_BYTES: '10' }, 'MAX_BODY_BYTES'],
    ['IYS_PUSH_USER without IYS_PUSH_PASSWORD', { IYS_PUSH_USER: 'iys' }, 'IYS_PUSH_PASSWORD'],
    ['IYS_PUSH_PASSWORD without IYS_PUSH_USER', { IYS_PUSH_PASSWORD: 's3cret' }, 'IYS_PUSH_USER']
  ]
  it.each(cases)('rejects %s with a ConfigError naming the variable', (_what, env, name) => {
    const err = configError(env)
    expect(err.message).toContain(name)
    expect(err.message).not.toContain('\n')
  })

  it('does not echo the push password in the error', () => {
    expect(configError({ IYS_PUSH_PASSWORD: 'hunter2-secret' }).message).not.toContain('hunter2-secret')
  })
})

describe('loadConfig with variables it does not know', () => {
  it.each([
    ['REDIS_PREFX', 'REDIS_PREFIX'],
    ['UPSTREAM_MESAJ_UR', 'UPSTREAM_MESAJ_URL'],
    ['REDIS_ULR', 'REDIS_URL'],
    ['STORE_FAILURE_MOD', 'STORE_FAILURE_MODE'],
    ['IYS_PUSH_PASWORD', 'IYS_PUSH_PASSWORD']
  ])('refuses the misspelt %s with a hint naming %s', (typo, right) => {
    const err = configError({ [typo]: 'x' })
    expect(err.message).toContain(typo)
    expect(err.message).toMatch(new RegExp(`did you mean ${right}\\b`))
  })

  it('refuses an unknown variable in our namespaces even when nothing is close enough to suggest', () => {
    const err = configError({ REDIS_SOMETHING_ENTIRELY_DIFFERENT: '1' })
    expect(err.message).toContain('REDIS_SOMETHING_ENTIRELY_DIFFERENT')
  })

  it('ignores variables outside our namespaces', () => {
    const c = loadConfig({ PATH: '/usr/bin:/bin', HOME: '/home/x', npm_config_x: 'y', NODE_ENV: 'test', LANG: 'tr_TR.UTF-8', REDISCLI_AUTH: 'z' })
    expect(c.port).toBe(8080)
    expect(c.redisUrl).toBeNull()
  })

  it('takes a Redis Cluster from REDIS_CLUSTER_NODES, in the one address every part connects with', () => {
    const c = loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000, 127.0.0.1:7001,redis://10.0.0.3:7002', DATABASE_URL: 'postgres://x@h/db' })
    expect(c.redisUrl).toBe('cluster:127.0.0.1:7000, 127.0.0.1:7001,redis://10.0.0.3:7002')
    expect(c.autoRebuild).toBe(true) // a cluster counts as Redis for every default that asks for one
    expect(c.demoKey).toBe(false)
    expect(parseClusterNodes('rediss://u:p%40ss@a:7000,b:7001')).toEqual({
      nodes: [{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }],
      auth: { username: 'u', password: 'p@ss', tls: {} }
    })
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: 'a:7000', REDIS_URL: 'redis://a:6379' })).toThrow('REDIS_URL and REDIS_CLUSTER_NODES are exclusive')
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: 'a:99999' })).toThrow('REDIS_CLUSTER_NODES: "a:99999"')
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: 'redis://a:7000/2' })).toThrow('a cluster has one database')
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: 'http://a:7000' })).toThrow('must use redis: or rediss:')
    expect(() => loadConfig({ REDIS_CLUSTER_NODES: ' , ' })).toThrow('REDIS_CLUSTER_NODES lists no node')
  })

  it('accepts every variable it documents', () => {
    const env: Record<string, string> = {}
    for (const name of KNOWN_VARIABLES) env[name] = ''
    // REDIS_PREFIX must not be empty; the rest mean "default" when empty.
    delete env.REDIS_PREFIX
    expect(() => loadConfig(env)).not.toThrow()
  })
})

describe('the command line with a bad setting', () => {
  it('exits with code 2 and one line on stderr that names the variable', async () => {
    const r = await runCli(['serve'], { PORT: 'abc' }, 30_000)
    expect(r.code).toBe(2)
    const lines = r.stderr.split('\n').filter(l => l.trim() !== '')
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain('PORT')
    expect(lines[0]).toMatch(/config/i)
    expect(r.stdout).toBe('')
  })

  it.each([['serve', '--port', '9000'], ['migrate', '--force']])('refuses an unknown flag (%s %s) as a usage error, exit 2, instead of ignoring it', async (...args) => {
    const r = await runCli(args, {}, 30_000)
    expect(r.code).toBe(2)
    expect(r.stderr.split('\n')[0]).toContain(args[1])
    expect(r.stdout).toBe('')
  })
})
