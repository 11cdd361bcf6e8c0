// API keys for tests. A gateway with DATABASE_URL has no key until one is created; tests that are not about
// authentication use `tenantKey` (every scope, for the test tenant, which owns the brands the tests use). Tests about
// authentication create the keys they need with `createKey` from src/auth/keys.ts.

import { createKey, addBrand, newKey, type CreatedKey } from '../../src/auth/keys.js'
import { DEMO_API_KEY } from '../../src/auth/key-store.js'
import { migrate } from '../../src/store/migrate.js'
import { createPool } from '../../src/store/pg.js'

export { DEMO_API_KEY }

/** The service provider the tests' consents belong to (as in data/sample-consents.csv). */
export const TEST_IYS_CODE = '700001'
/** The brands the tests use: 600000–600099 belong to the test tenant. */
export const TEST_BRANDS: readonly string[] = Array.from({ length: 100 }, (_, i) => String(600000 + i))

/** `{ authorization: 'Bearer …' }` for fetch. */
export const bearer = (apiKey: string): { authorization: string } => ({ authorization: `Bearer ${apiKey}` })

/**
 * Creates (in a migrated database) a key of the test tenant with every scope and no rate limit; the tenant owns
 * TEST_BRANDS (and `brands`, when given), so the key may act for any of them.
 */
export async function tenantKey (databaseUrl: string, opts: { iysCode?: string, brands?: readonly string[], scopes?: string, rate?: number } = {}): Promise<CreatedKey> {
  const pool = createPool(databaseUrl, 2)
  try {
    await migrate(pool)
    const iysCode = opts.iysCode ?? TEST_IYS_CODE
    const brands = opts.brands ?? (iysCode === TEST_IYS_CODE ? TEST_BRANDS : [])
    await pool.query('INSERT INTO tenants (iys_code) VALUES ($1) ON CONFLICT DO NOTHING', [iysCode])
    await pool.query(`INSERT INTO brands (brand_code, iys_code) SELECT b::bigint, $1 FROM unnest($2::text[]) b ON CONFLICT DO NOTHING`, [iysCode, brands])
    if (brands.length > 0) await addBrand(pool, iysCode, brands[0]!, null) // bumps the version gateways poll
    return await createKey(pool, newKey({ iysCode, scopes: opts.scopes ?? 'admin', rate: String(opts.rate ?? 0) }))
  } finally {
    await pool.end()
  }
}
