// Postgres is the truth. One pool per process; the check path never touches it.

import pg from 'pg'

export type Pool = pg.Pool
export type PoolClient = pg.PoolClient

export function createPool (url: string, max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, application_name: 'iys-gateway' })
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => {})
  return pool
}
