// `iys-gateway scrub FILE` with Redis unreachable, or with no filter version in it, says so on one line and exits 1
// (it used to print the line and then never exit, waiting on a reconnecting client).

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli } from './helpers/cli.js'
import { freePort } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

describe('scrub FILE when it cannot scrub', () => {
  let services: TestServicesWithRedis
  let file: string
  beforeAll(async () => {
    services = await testServices({ redis: true })
    file = join(services.dir, 'list.csv')
    writeFileSync(file, 'recipient\n+905321234567\n')
  })
  afterAll(async () => { await services?.close() })

  const scrub = (env: Record<string, string>): ReturnType<typeof runCli> =>
    runCli(['scrub', file, '--brand-code', '600001', '--type', 'MESAJ'], env, 45_000)

  it('exits 1 when Redis is not reachable', async () => {
    const r = await scrub({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` })
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/Redis/i)
  })

  it('exits 1 when Redis holds no filter version', async () => {
    const r = await scrub({ REDIS_URL: services.env.REDIS_URL!, REDIS_PREFIX: services.env.REDIS_PREFIX! })
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('no filter version')
  })
})
