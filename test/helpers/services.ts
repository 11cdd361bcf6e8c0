// Real Postgres and Redis for tests. Each caller gets its own database (created here, dropped by `drop()`) and
// its own Redis key prefix, so test files run in parallel without touching each other or the machine's data.
// Integration test files take both (and a pool and a folder) from testServices(), with one close().
// A missing service fails the test with a clear message; it is never skipped.

import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { Redis } from 'ioredis'
import { migrate } from '../../src/store/migrate.js'
import { unlinkPattern } from '../../src/store/redis.js'

export const PG_ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const REDIS_TEST_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0'

const id = (): string => `${process.pid}_${randomBytes(4).toString('hex')}`

export interface TestDatabase {
  name: string
  url: string
  drop (): Promise<void>
}

export async function createTestDatabase (): Promise<TestDatabase> {
  const name = `iys_test_${id()}`
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL })
  try {
    await admin.connect()
  } catch (err) {
    throw new Error(`Postgres is required for this test and is not reachable at ${PG_ADMIN_URL}: ${(err as Error).message}`)
  }
  await admin.query(`CREATE DATABASE ${name}`)
  await admin.end()
  const url = PG_ADMIN_URL.replace(/\/[^/]*$/, '/' + name)
  return {
    name,
    url,
    async drop () {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL })
      await c.connect()
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
      await c.end()
    }
  }
}

export interface TestRedis {
  prefix: string
  url: string
  client: Redis
  cleanup (): Promise<void>
}

export async function createTestRedis (): Promise<TestRedis> {
  const prefix = `test:${id()}:`
  const client = new Redis(REDIS_TEST_URL, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  try {
    await client.connect()
    await client.ping()
  } catch (err) {
    client.disconnect()
    throw new Error(`Redis is required for this test and is not reachable at ${REDIS_TEST_URL}: ${(err as Error).message}`)
  }
  return {
    prefix,
    url: REDIS_TEST_URL,
    client,
    async cleanup () {
      await unlinkPattern(client, prefix + '*')
      client.disconnect()
    }
  }
}

export interface ServicesOptions {
  /** also a Redis key prefix of its own on the shared Redis (REDIS_URL and REDIS_PREFIX in `env`) */
  redis?: boolean
  /** create the schema (the same migrate() that `iys-gateway migrate` runs) before returning */
  migrate?: boolean
  /** connections of `pool` (default 2; the pool connects only when used) */
  poolSize?: number
  /** name prefix of the temporary folder (default iys-test-) */
  dirPrefix?: string
}

export interface TestServices {
  db: TestDatabase
  /** set when asked for with `redis: true` */
  redis: TestRedis | undefined
  /** environment for the CLI and test gateways: DATABASE_URL, and REDIS_URL and REDIS_PREFIX with `redis: true` */
  env: Record<string, string>
  pool: pg.Pool
  /** a temporary folder for the test's files */
  dir: string
  /** Ends the pool, deletes the Redis prefix, drops the database and removes the folder. Close gateways first. */
  close (): Promise<void>
}

export type TestServicesWithRedis = TestServices & { redis: TestRedis }

/**
 * The services of one integration test file: its own database (migrated if asked), Redis prefix, pool and folder,
 * with one close(). If a step fails, what was already created is removed before the error is thrown.
 */
export async function testServices (options: ServicesOptions & { redis: true }): Promise<TestServicesWithRedis>
export async function testServices (options?: ServicesOptions): Promise<TestServices>
export async function testServices (options: ServicesOptions = {}): Promise<TestServices> {
  const closers: Array<() => unknown> = []
  const close = async (): Promise<void> => { for (const c of closers.splice(0).reverse()) await c() }
  try {
    const dir = mkdtempSync(join(tmpdir(), options.dirPrefix ?? 'iys-test-'))
    closers.push(() => rmSync(dir, { recursive: true, force: true }))
    const db = await createTestDatabase()
    closers.push(() => db.drop())
    const env: Record<string, string> = { DATABASE_URL: db.url }
    let redis: TestRedis | undefined
    if (options.redis === true) {
      const r = await createTestRedis()
      closers.push(() => r.cleanup())
      Object.assign(env, { REDIS_URL: r.url, REDIS_PREFIX: r.prefix })
      redis = r
    }
    const pool = new pg.Pool({ connectionString: db.url, max: options.poolSize ?? 2 })
    // An idle client ended by the server (the database dropped WITH (FORCE) at close, a test cutting Postgres) is an
    // 'error' event on the pool; without a listener it would be an uncaught exception that fails the whole run.
    pool.on('error', () => {})
    closers.push(() => pool.end())
    if (options.migrate === true) await migrate(pool)
    return { db, redis, env, pool, dir, close }
  } catch (err) {
    await close()
    throw err
  }
}
