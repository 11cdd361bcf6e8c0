// Differential test: 100,000 random checks answered by the gateway and by a plain SQL query over the same Postgres
// data must agree on every single item: from the local replica, from Redis (bloom + lookup), and from the embedded
// store. The SQL side is written from DESIGN.md §1 directly and shares no code with the gateway; the test builds the
// canonical recipient itself and sends a messy rendering.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { messyPhone } from '../loaders/generate.js'
import { mulberry32 } from '../src/util/random.js'
import { seedGenerated } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const CHECKS = 100_000
const TYPES = ['MESAJ', 'ARAMA', 'EPOSTA'] as const
const RTS = ['BIREYSEL', 'TACIR'] as const

interface Item {
  brand: string
  type: string
  rt: string
  commercial: boolean
  canonical: string | null // null: the input is invalid for this type by construction
  input: string
}

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
    const rnd = mulberry32(20261129)
    const { rows: keys } = await pool.query<{ b: string, t: string, r: string, rc: string }>(
      'SELECT brand_code::text AS b, type AS t, recipient_type AS r, recipient AS rc FROM consents')
    expect(keys.length).toBeGreaterThan(50_000)
    const brands = [...new Set(keys.map(k => k.b))]
    const pickOf = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
    const messyEmail = (e: string): string => (rnd() < 0.5 ? e.toUpperCase() : e) + (rnd() < 0.3 ? ' ' : '')
    const randomPhone = (): string => '+905' + String(Math.floor(rnd() * 1e9)).padStart(9, '0')

    const items: Item[] = []
    for (let i = 0; i < CHECKS; i++) {
      const roll = rnd()
      const commercial = rnd() < 0.92
      let brand: string; let type: string; let rt: string; let canonical: string | null
      if (roll < 0.55) { // a stored key exactly
        const k = pickOf(keys); brand = k.b; type = k.t; rt = k.r; canonical = k.rc
      } else if (roll < 0.75) { // a stored recipient under another brand, type or recipient type
        const k = pickOf(keys); brand = pickOf(brands); rt = pickOf(RTS); canonical = k.rc
        type = k.t === 'EPOSTA' ? 'EPOSTA' : pickOf(['MESAJ', 'ARAMA'])
      } else if (roll < 0.97) { // nobody
        brand = pickOf(brands); rt = pickOf(RTS); type = pickOf(TYPES)
        canonical = type === 'EPOSTA' ? `nobody${Math.floor(rnd() * 1e9)}@example.org` : randomPhone()
      } else { // invalid input: garbage, or a channel that does not fit the recipient
        brand = pickOf(brands); rt = pickOf(RTS); type = pickOf(TYPES); canonical = null
      }
      let input: string
      if (canonical === null) input = pickOf(['abc', '+90532', '', '05321234567@', type === 'EPOSTA' ? '+905321234567' : 'x@example.com'])
      else input = canonical.startsWith('+') ? messyPhone(canonical, rnd) : messyEmail(canonical)
      items.push({ brand, type, rt, commercial, canonical, input })
    }

    // The gateway: group by query parameters, batches of up to 1000, a few requests in flight.
    const groups = new Map<string, number[]>()
    items.forEach((it, i) => {
      const g = `${it.brand}|${it.type}|${it.rt}|${it.commercial}`
      const list = groups.get(g)
      if (list === undefined) groups.set(g, [i]); else list.push(i)
    })
    const got = new Array<{ allowed: boolean, reason: string }>(items.length)
    const jobs: (() => Promise<void>)[] = []
    for (const idx of groups.values()) {
      for (let s = 0; s < idx.length; s += 1000) {
        const part = idx.slice(s, s + 1000)
        const first = items[part[0]!]!
        jobs.push(async () => {
          const res = await check(gateway.url, {
            brandCode: first.brand, type: first.type, recipientType: first.rt, commercial: first.commercial,
            recipients: part.map(i => items[i]!.input)
          })
          res.forEach((r, j) => { got[part[j]!] = { allowed: r.allowed, reason: r.reason } })
        })
      }
    }
    await Promise.all(Array.from({ length: 4 }, async () => { while (jobs.length > 0) await jobs.pop()!() }))

    // SQL: the policy of DESIGN.md §1 as a query.
    const client = await pool.connect()
    let expected: { allowed: boolean, reason: string }[]
    try {
      await client.query('DROP TABLE IF EXISTS probe') // the pooled connection may hold the other case's
      await client.query('CREATE TEMP TABLE probe (i int, brand_code bigint, type text, recipient_type text, recipient text, commercial bool, valid bool)')
      await client.query(`INSERT INTO probe SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::bool[])`, [
        items.map((_, i) => i), items.map(x => x.brand), items.map(x => x.type), items.map(x => x.rt),
        items.map(x => x.canonical ?? ''), items.map(x => x.commercial), items.map(x => x.canonical !== null)
      ])
      const { rows } = await client.query<{ reason: string }>(`
        SELECT CASE
                 WHEN NOT p.valid THEN 'INVALID_RECIPIENT'
                 WHEN NOT p.commercial THEN 'INFORMATIONAL'
                 WHEN c.status = 'ONAY' THEN 'CONSENT'
                 WHEN c.status = 'RET' THEN 'REJECTED'
                 WHEN p.recipient_type = 'TACIR' THEN 'TACIR_NO_RECORD'
                 ELSE 'NO_CONSENT'
               END AS reason
        FROM probe p
        LEFT JOIN consents c ON c.brand_code = p.brand_code AND c.type = p.type
                            AND c.recipient_type = p.recipient_type AND c.recipient = p.recipient
        ORDER BY p.i`)
      const allowed = new Set(['CONSENT', 'INFORMATIONAL', 'TACIR_NO_RECORD'])
      expected = rows.map(r => ({ allowed: allowed.has(r.reason), reason: r.reason }))
    } finally {
      client.release()
    }

    const differences: string[] = []
    for (let i = 0; i < items.length; i++) {
      const g = got[i]!; const e = expected[i]!
      if (g.allowed !== e.allowed || g.reason !== e.reason) {
        const it = items[i]!
        differences.push(`#${i} ${it.brand}/${it.type}/${it.rt}/${it.commercial} ${JSON.stringify(it.input)}: gateway ${g.reason}, SQL ${e.reason}`)
      }
    }
    expect(differences.slice(0, 20)).toEqual([])
    // …and the path named is the one that answered.
    expect(await (await fetch(gateway.url + '/metrics')).text()).toMatch(new RegExp(`^iys_replica_serving ${serving}$`, 'm'))
    if (gateway === embedded) expect(await (await fetch(gateway.url + '/readyz')).json()).toMatchObject({ mode: 'embedded' })
    // The sample covers every outcome.
    const seen = new Set(expected.map(e => e.reason))
    for (const r of ['INVALID_RECIPIENT', 'INFORMATIONAL', 'CONSENT', 'REJECTED', 'TACIR_NO_RECORD', 'NO_CONSENT']) expect(seen).toContain(r)
  }, 180_000)
})
