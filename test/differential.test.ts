// Differential test: 100,000 random checks answered by the gateway and by a plain SQL query over the same Postgres
// data must agree on every single item: from the local replica, from Redis (bloom + lookup), and from the embedded
// store. The SQL side is written from DESIGN.md §1 directly and shares no code with the gateway; the test builds the
// canonical recipient itself and sends a messy rendering.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { seedGenerated } from './helpers/cli.js'
import { differences, gatewayAnswers, randomItems, sqlAnswers } from './helpers/differential.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const CHECKS = 100_000

describe('gateway vs SQL, differential', () => {
  let services: TestServices
  let gateway: RunningGateway
  let redisWay: RunningGateway
  let embedded: RunningGateway
  let pool: pg.Pool

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-diff-' })
    const { env } = services
    const file = join(services.dir, 'c.csv')
    await seedGenerated(env, file, { rows: 60_000, brands: 4, retShare: 0.3, seed: 99 })
    pool = services.pool
    gateway = await startTestGateway({ ...env, REPLICA: 'true' })
    redisWay = await startTestGateway({ ...env, REPLICA: 'false' })
    // The embedded mode (no Redis, no Postgres) over the same consents: its seed file is the current state exported
    // from Postgres, one row per key, in the İYS CSV it reads.
    const { rows: seed } = await services.pool.query<{ line: string }>(`
      SELECT concat_ws(',', iys_code, brand_code, recipient, recipient_type, type, status, source,
                       to_char(consent_date AT TIME ZONE 'Europe/Istanbul', 'YYYY-MM-DD HH24:MI:SS')) AS line
      FROM consents`)
    const seedFile = join(services.dir, 'embedded-seed.csv')
    writeFileSync(seedFile, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' + seed.map(r => r.line).join('\n') + '\n')
    embedded = await startTestGateway({ EMBEDDED_SEED_FILE: seedFile })
    // The first gateway answers from its local replica (built, and kept current by the appliers' heartbeats).
    await until(async () => /^iys_replica_serving 1$/m.test(await (await fetch(gateway.url + '/metrics')).text()), 30_000, 'the replica to serve')
  }, 180_000)

  afterAll(async () => {
    await embedded?.close()
    await redisWay?.close()
    await gateway?.close()
    await services?.close()
  })

  it.each([['the local replica', () => gateway, 1], ['Redis (REPLICA=false)', () => redisWay, 0], ['the embedded store (no Redis)', () => embedded, 0]] as const)('agrees with SQL on 100,000 random checks (present, absent, rejected, every type, messy input), answered from %s', async (_, gw, serving) => {
    const gateway = gw()
    expect((await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM consents')).rows[0]!.n).toBeGreaterThan(50_000)
    const items = await randomItems(pool, CHECKS, 20261129)
    const got = await gatewayAnswers(gateway.url, items)
    const expected = await sqlAnswers(pool, items)
    expect(differences(items, got, expected).slice(0, 20)).toEqual([])
    // …and the path named is the one that answered.
    expect(await (await fetch(gateway.url + '/metrics')).text()).toMatch(new RegExp(`^iys_replica_serving ${serving}$`, 'm'))
    if (gateway === embedded) expect(await (await fetch(gateway.url + '/readyz')).json()).toMatchObject({ mode: 'embedded' })
    // The sample covers every outcome.
    const seen = new Set(expected.map(e => e.reason))
    for (const r of ['INVALID_RECIPIENT', 'INFORMATIONAL', 'CONSENT', 'REJECTED', 'TACIR_NO_RECORD', 'NO_CONSENT']) expect(seen).toContain(r)
  }, 180_000)
})
