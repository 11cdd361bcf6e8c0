// Real Postgres and Redis for tests. Each caller gets its own database (created here, dropped by `drop()`) and
// its own Redis key prefix, so test files run in parallel without touching each other or the machine's data.
// A missing service fails the test with a clear message; it is never skipped.

import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { Redis } from 'ioredis'
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

export interface MigratedWorkspace {
  db: TestDatabase
  /** environment for the CLI: DATABASE_URL of the test database */
  env: Record<string, string>
  pool: pg.Pool
  /** a temporary folder for the test's files */
  dir: string
  close (): Promise<void>
}

/** A test database with the schema migrated by the real CLI, a pool on it and a temporary folder; close() removes all. */
export async function migratedWorkspace (dirPrefix: string): Promise<MigratedWorkspace> {
  const { mkdtempSync, rmSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { runCli } = await import('./cli.js')
  const db = await createTestDatabase()
  const env = { DATABASE_URL: db.url }
  const migrated = await runCli(['migrate'], env)
  if (migrated.code !== 0) throw new Error(`migrate failed: ${migrated.stderr}`)
  const dir = mkdtempSync(join(tmpdir(), dirPrefix))
  const pool = new pg.Pool({ connectionString: db.url, max: 1 })
  return {
    db,
    env,
    pool,
    dir,
    async close () {
      await pool.end()
      await db.drop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
