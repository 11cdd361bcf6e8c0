// Postgres is the truth. One pool per process; the check path never touches it.

import pg from 'pg'

export type Pool = pg.Pool
export type PoolClient = pg.PoolClient

export interface PoolOptions {
  /** application_name, to tell the pools apart in pg_stat_activity */
  name?: string
  /** how long to wait for a connection (default 5000 ms) */
  connectTimeoutMs?: number
  /** a query that has not answered by then fails (default: none) */
  queryTimeoutMs?: number
}

export function createPool (url: string, max = 4, opts: PoolOptions = {}): pg.Pool {
  // A Postgres that does not answer must fail a connection attempt, not hang it: the decision log then spools.
  const pool = new pg.Pool({
    connectionString: url,
    max,
    application_name: opts.name ?? 'iys-gateway',
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    ...(opts.queryTimeoutMs !== undefined ? { query_timeout: opts.queryTimeoutMs } : {})
  })
  // A client losing its connection must not crash the process: idle ones are dropped by the pool ('error'), and
  // one that is checked out reports the loss through its failing query, so its own 'error' event is only noise.
  pool.on('error', () => {})
  pool.on('connect', (client) => { client.on('error', () => {}) })
  return pool
}

/** Runs `fn` in a transaction on one pooled connection: COMMIT when it resolves, ROLLBACK when it throws. */
export async function inTransaction<T> (pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect()
  let broken = false
  try {
    await client.query('BEGIN')
    const result = await fn(client)
    await client.query('COMMIT')
    return result
  } catch (err) {
    await client.query('ROLLBACK').catch(() => { broken = true })
    throw err
  } finally {
    client.release(broken) // a connection that cannot even roll back is closed, not reused
  }
}

/**
 * True when Postgres could not be reached or dropped the connection (no SQLSTATE of the work's own): what a route
 * answers 503 DATABASE_UNAVAILABLE for, rather than a 500.
 */
export function isDbUnreachable (err: unknown): boolean {
  if (err instanceof pg.DatabaseError) return /^(08|57P)/.test(err.code ?? '') // connection exceptions, shutting down
  // Network errors only (a file error has a syscall too, and must stay a 500): refused, reset, unresolvable, timed out
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|EPIPE)$/.test(code)) return true
  return err instanceof Error && PG_CONNECTION_LOST.test(err.message)
}

// node-postgres reports a dropped or unobtainable connection without a code
const PG_CONNECTION_LOST = /Connection terminated|connection timeout|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable/i

/**
 * True for a failure of the database rather than of the work: no connection, a connection lost, the server
 * shutting down or out of resources, a deadlock or serialization conflict. Such work is retried as it is; any
 * other error (a constraint, a value Postgres refuses, a bug) would fail the same way again.
 */
export function isTransientDbError (err: unknown): boolean {
  // SQLSTATE classes: 08 connection, 40 rollback (deadlock, serialization), 53 resources, 57 operator, 58 system,
  // and 42 (undefined table or column: the schema is not migrated yet), which no row is to blame for either
  if (err instanceof pg.DatabaseError) return /^(08|40|42|53|57|58)/.test(err.code ?? '')
  if (typeof (err as { syscall?: unknown } | null)?.syscall === 'string') return true // ECONNREFUSED, ECONNRESET, ...
  return err instanceof Error && PG_CONNECTION_LOST.test(err.message)
}
