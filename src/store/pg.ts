// Postgres is the truth. One pool per process; the check path never touches it.

import pg from 'pg'

export type Pool = pg.Pool
export type PoolClient = pg.PoolClient

export function createPool (url: string, max = 4): pg.Pool {
  // A Postgres that does not answer must fail a connection attempt, not hang it: the decision log then spools.
  const pool = new pg.Pool({ connectionString: url, max, application_name: 'iys-gateway', connectionTimeoutMillis: 5000 })
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
