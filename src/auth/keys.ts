// Tenants, brands and API keys in Postgres: what `iys-gateway keys …` and `brands …` do. An API key is
// `<keyId>.<secret>`; the secret is shown once, at creation, and only its SHA-256 is stored. Every change bumps
// auth_state.version, which gateways poll (auth/key-store.ts), so a new or revoked key takes effect everywhere
// within the poll interval.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { CodedError } from '../domain/errors.js'
import { canonicalCode } from '../domain/vocabulary.js'
import { inTransaction, type Pool, type PoolClient } from '../store/pg.js'
import { isScope, SCOPES, type Scope } from './principal.js'

/** Key ids look like `ik_` + 16 hex digits; access tokens (auth/tokens.ts) never start so. */
export const KEY_ID_PREFIX = 'ik_'
const KEY_ID = /^ik_[0-9a-f]{16}$/

/** What a key gets when `--scopes` is not given: everything but admin. */
export const DEFAULT_SCOPES: readonly Scope[] = SCOPES.filter(s => s !== 'admin')
/** Requests per second a key gets when `--rate` is not given (0: not limited). */
export const DEFAULT_RATE = 1000

/** A refused key or tenant operation (unknown tenant, brand of another tenant, bad scope): the CLI's one line. */
export class KeyError extends CodedError<'USAGE'> {
  constructor (message: string) { super('USAGE', message) }
}

export interface NewKey {
  iysCode: string
  /** null: every brand of the tenant (now and later) */
  brandCodes: readonly string[] | null
  scopes: readonly Scope[]
  name: string
  ratePerSecond: number
}

export interface CreatedKey { keyId: string, secret: string, apiKey: string }

export interface KeyRow {
  keyId: string
  iysCode: string
  brandCodes: string[] | null
  scopes: Scope[]
  name: string
  ratePerSecond: number
  createdAt: string
  revokedAt: string | null
}

export const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest()

/** Splits `<keyId>.<secret>`; null when it is not shaped so. */
export function splitApiKey (apiKey: string): { keyId: string, secret: string } | null {
  const dot = apiKey.indexOf('.')
  if (dot !== 19 || !KEY_ID.test(apiKey.slice(0, dot))) return null
  return { keyId: apiKey.slice(0, dot), secret: apiKey.slice(dot + 1) }
}

/** Whether `secret` hashes to `digest`, in constant time. */
export const secretMatches = (secret: string, digest: Buffer): boolean => {
  const given = sha256(secret)
  return given.length === digest.length && timingSafeEqual(given, digest)
}

/** Reads and checks the options of `keys create` (canonical codes, known scopes, a sane rate). */
export function newKey (o: { iysCode?: string, brandCodes?: string, scopes?: string, name?: string, rate?: string }): NewKey {
  const iysCode = canonicalCode(o.iysCode)
  if (iysCode === null) throw new KeyError('--iys-code must be an İYS service provider code (digits)')
  let brandCodes: string[] | null = null
  if (o.brandCodes !== undefined) {
    brandCodes = []
    for (const text of o.brandCodes.split(',').map(s => s.trim()).filter(s => s !== '')) {
      const b = canonicalCode(text)
      if (b === null) throw new KeyError(`--brand-codes: "${text}" is not an İYS brand code`)
      if (!brandCodes.includes(b)) brandCodes.push(b)
    }
    if (brandCodes.length === 0) throw new KeyError('--brand-codes needs at least one brand code (leave it out for every brand of the tenant)')
  }
  let scopes: Scope[] = [...DEFAULT_SCOPES]
  if (o.scopes !== undefined) {
    scopes = []
    for (const s of o.scopes.split(',').map(t => t.trim()).filter(t => t !== '')) {
      if (!isScope(s)) throw new KeyError(`--scopes: unknown scope "${s}" (known: ${SCOPES.join(', ')})`)
      if (!scopes.includes(s)) scopes.push(s)
    }
    if (scopes.length === 0) throw new KeyError('--scopes needs at least one scope')
  }
  const rate = o.rate === undefined ? DEFAULT_RATE : Number(o.rate)
  if (!Number.isInteger(rate) || rate < 0 || rate > 1_000_000) throw new KeyError('--rate must be a whole number of requests per second, 0 for no limit')
  return { iysCode, brandCodes, scopes, name: o.name ?? '', ratePerSecond: rate }
}

/**
 * Creates a key (and its tenant, when new). Brands it names are registered to the tenant; one that belongs to
 * another tenant is refused, and nothing is written.
 */
export async function createKey (pool: Pool, k: NewKey): Promise<CreatedKey> {
  const keyId = KEY_ID_PREFIX + randomBytes(8).toString('hex')
  const secret = randomBytes(32).toString('base64url')
  await inTransaction(pool, async client => {
    await ensureTenant(client, k.iysCode)
    if (k.brandCodes !== null) for (const b of k.brandCodes) await registerBrand(client, k.iysCode, b, null)
    await client.query(
      `INSERT INTO api_keys (key_id, iys_code, secret_sha256, brand_codes, scopes, name, rate_per_second)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [keyId, k.iysCode, sha256(secret), k.brandCodes, k.scopes, k.name, k.ratePerSecond])
    await bump(client)
  })
  return { keyId, secret, apiKey: `${keyId}.${secret}` }
}

/** Registers a brand to a tenant (created when new); refused when the brand belongs to another tenant. */
export async function addBrand (pool: Pool, iysCode: string, brandCode: string, name: string | null): Promise<void> {
  await inTransaction(pool, async client => {
    await ensureTenant(client, iysCode)
    await registerBrand(client, iysCode, brandCode, name)
    await bump(client)
  })
}

export async function listBrands (pool: Pool, iysCode: string | null): Promise<{ iysCode: string, brandCode: string, name: string }[]> {
  const { rows } = await pool.query<{ iys_code: string, brand_code: string, name: string }>(
    'SELECT iys_code::text, brand_code::text, name FROM brands WHERE $1::bigint IS NULL OR iys_code = $1 ORDER BY iys_code, brand_code', [iysCode])
  return rows.map(r => ({ iysCode: r.iys_code, brandCode: r.brand_code, name: r.name }))
}

export async function listKeys (pool: Pool, iysCode: string | null): Promise<KeyRow[]> {
  const { rows } = await pool.query(
    `SELECT key_id, iys_code::text, brand_codes::text[], scopes, name, rate_per_second, created_at, revoked_at
       FROM api_keys WHERE $1::bigint IS NULL OR iys_code = $1 ORDER BY created_at, key_id`, [iysCode])
  return rows.map(r => ({
    keyId: r.key_id,
    iysCode: r.iys_code,
    brandCodes: r.brand_codes,
    scopes: r.scopes,
    name: r.name,
    ratePerSecond: r.rate_per_second,
    createdAt: (r.created_at as Date).toISOString(),
    revokedAt: r.revoked_at === null ? null : (r.revoked_at as Date).toISOString()
  }))
}

/** Revokes a key; false when there is no such key (revoking twice is fine and keeps the first time). */
export async function revokeKey (pool: Pool, keyId: string): Promise<boolean> {
  return inTransaction(pool, async client => {
    const { rowCount } = await client.query('UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1', [keyId])
    await bump(client)
    return (rowCount ?? 0) > 0
  })
}

async function ensureTenant (client: PoolClient, iysCode: string): Promise<void> {
  await client.query('INSERT INTO tenants (iys_code) VALUES ($1) ON CONFLICT DO NOTHING', [iysCode])
}

async function registerBrand (client: PoolClient, iysCode: string, brandCode: string, name: string | null): Promise<void> {
  const { rows } = await client.query<{ iys_code: string }>(
    `INSERT INTO brands (brand_code, iys_code, name) VALUES ($1, $2, coalesce($3, ''))
     ON CONFLICT (brand_code) DO UPDATE SET name = coalesce($3, brands.name) WHERE brands.iys_code = $2
     RETURNING iys_code::text`, [brandCode, iysCode, name])
  if (rows.length === 0) throw new KeyError(`brand ${brandCode} belongs to another service provider (iysCode); a brand has one tenant`)
}

const bump = async (client: PoolClient): Promise<void> => { await client.query('UPDATE auth_state SET version = version + 1') }
