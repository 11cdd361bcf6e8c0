// The local exact replica in a serving gateway (filter/mirror.ts, replica-source.ts): built from Redis when a version
// is served and kept current from the change stream; a version past REPLICA_MAX_BYTES is served the Redis way, with
// a warning in /readyz's replica state and the metrics, never a crash. (The differential test runs 100,000 checks
// against SQL through both paths; fail-closed.test.ts shows the lag bound; propagation.test.ts a RET reaching it.)

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runSteps } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { commitRet } from './helpers/ledger.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

const ONAY = ['+905321110001', '+905321110002', '+905321110003']

describe('the local replica in a gateway', () => {
  let services: TestServicesWithRedis
  let serving: RunningGateway
  let tooSmall: RunningGateway

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-replica-' })
    const file = join(services.dir, 'c.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      ONAY.map(p => `700001,600001,${p},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join('') +
      '700001,600001,someone@example.com,BIREYSEL,EPOSTA,ONAY,HS_WEB,2024-01-15 10:00:00\n')
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    serving = await startTestGateway({ ...services.env, REPLICA: 'true' })
    tooSmall = await startTestGateway({ ...services.env, REPLICA: 'true', REPLICA_MAX_BYTES: '1000' })
  }, 120_000)

  afterAll(async () => {
    await tooSmall?.close()
    await serving?.close()
    await services?.close()
  })

  const readyz = async (gw: RunningGateway): Promise<any> => (await fetch(gw.url + '/readyz')).json()
  const metric = async (gw: RunningGateway, name: string): Promise<number> => {
    const line = (await (await fetch(gw.url + '/metrics')).text()).split('\n').find(l => l.startsWith(name + ' '))
    return Number(line?.split(' ')[1])
  }

  it('serves checks from the replica once built, and a RET committed later reaches it through the change stream', async () => {
    await until(async () => (await readyz(serving)).replica?.serving === true, 30_000, 'the replica to serve')
    const r = await readyz(serving)
    expect(r.replica).toMatchObject({ state: 'ready', serving: true, keys: 4 })
    expect(await metric(serving, 'iys_replica_keys')).toBe(4)
    expect(await metric(serving, 'iys_replica_bytes')).toBeGreaterThan(0)
    expect(await check(serving.url, { brandCode: 600001, type: 'MESAJ', recipient: ONAY[0] })).toMatchObject([{ allowed: true, reason: 'CONSENT' }])
    expect(await check(serving.url, { brandCode: 600001, type: 'EPOSTA', recipient: 'SOMEONE@example.com' })).toMatchObject([{ allowed: true, reason: 'CONSENT' }])
    const bloomMaybe = await metric(serving, 'iys_bloom_maybe_total')
    await commitRet(services.pool, ONAY[1]!, { notify: true })
    await until(async () => (await check(serving.url, { brandCode: 600001, type: 'MESAJ', recipient: ONAY[1] }))[0]!.reason === 'REJECTED', 10_000, 'the RET to reach the replica')
    expect(await readyz(serving)).toMatchObject({ replica: { serving: true, keys: 4 } })
    // Answered locally: no lookup went past the bloom filter to Redis.
    expect(await metric(serving, 'iys_bloom_maybe_total')).toBe(bloomMaybe)
  })

  it('serves a version larger than REPLICA_MAX_BYTES the Redis way, saying so, with the same answers', async () => {
    await until(async () => (await readyz(tooSmall)).replica?.state === 'too_large', 30_000, 'the replica to be refused')
    expect(await metric(tooSmall, 'iys_replica_serving')).toBe(0)
    expect(await metric(tooSmall, 'iys_replica_keys')).toBe(0)
    for (const recipient of ONAY) {
      const [mine, theirs] = await Promise.all([serving, tooSmall].map(async gw => (await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipient }))[0]!.reason))
      expect(mine).toBe(theirs)
    }
    expect((await check(tooSmall.url, { brandCode: 600001, type: 'MESAJ', recipients: ONAY })).map(r => r.reason)).toEqual(['CONSENT', 'REJECTED', 'CONSENT'])
    expect(await metric(tooSmall, 'iys_bloom_maybe_total')).toBeGreaterThan(0) // asked Redis
  })
})
