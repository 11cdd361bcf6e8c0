// Tenants, brands and API keys in Postgres: what `iys-gateway keys …` and `brands …` do. An API key is
// `<keyId>.<secret>`; the secret is shown once, at creation, and only its SHA-256 is stored. Every change bumps
// auth_state.version, which gateways poll (auth/key-store.ts), so a new or revoked key takes effect everywhere
// within the poll interval.
//
// A key with the `send` scope may also have SMPP credentials (`--smpp-system-id`): a system_id and a generated
// 8-character password, shown once like the secret, with per-bind defaults for submit_sm. The originator → brand
// table (`originators …`) lives here too: it is tenant data, reloaded by the gateways with the keys.

import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto'
import pg from 'pg'
import { CodedError } from '../domain/errors.js'
import { canonicalCode, isRecipientType, RECIPIENT_TYPES, type RecipientType } from '../domain/vocabulary.js'
import { inTransaction, type Pool, type PoolClient } from '../store/pg.js'
import { originatorKey, MAX_ORIGINATOR_LENGTH } from './originators.js'
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
  /** SMPP credentials to create with the key (null or absent: none) */
  smpp?: NewSmpp | null
}

/** SMPP credentials to set on a key: its system_id and the per-bind defaults (the password is generated). */
export interface NewSmpp {
  systemId: string
  /** canonical; must be a brand the key may act for */
  brandCode: string | null
  /** null: the submit_sm must say (TLV) */
  commercial: boolean | null
  /** null: BIREYSEL */
  recipientType: RecipientType | null
}

/** What `keys create --smpp-system-id` and `keys smpp` print, once: the password is not stored. */
export interface SmppCredentials { smppSystemId: string, smppPassword: string }

export interface CreatedKey { keyId: string, secret: string, apiKey: string, smppSystemId?: string, smppPassword?: string }

export interface KeyRow {
  keyId: string
  iysCode: string
  brandCodes: string[] | null
  scopes: Scope[]
  name: string
  ratePerSecond: number
  createdAt: string
  revokedAt: string | null
  /** null: no SMPP; the defaults below are null then too */
  smppSystemId: string | null
  smppBrandCode: string | null
  smppCommercial: boolean | null
  smppRecipientType: RecipientType | null
}

export interface OriginatorRow { iysCode: string, originator: string, brandCode: string, createdAt: string }

/** SMPP 3.4 system_id: a C-octet string of at most 16 octets, so 15 characters; visible ASCII only (no space). */
const SMPP_SYSTEM_ID = /^[!-~]{1,15}$/
/** SMPP 3.4 password: at most 9 octets, so 8 characters. */
export const SMPP_PASSWORD_LENGTH = 8
/** No 0/O, 1/l/I: passwords are read off a screen and typed into an ESME's configuration. 55 symbols, 46 bits. */
const SMPP_PASSWORD_ALPHABET = '23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ'

export const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest()

/** Splits `<keyId>.<secret>`; null when it is not shaped so. */
export function splitApiKey (apiKey: string): { keyId: string, secret: string } | null {
  const dot = apiKey.indexOf('.')
  if (dot !== 19 || !KEY_ID.test(apiKey.slice(0, dot))) return null
  return { keyId: apiKey.slice(0, dot), secret: apiKey.slice(dot + 1) }
}

/** What is stored of an SMPP password: salted by the key id, so that equal passwords of two keys differ. */
export const smppDigest = (keyId: string, password: string): Buffer => createHash('sha256').update(`${keyId}:${password}`).digest()

/** Whether `secret` hashes to `digest`, in constant time. */
export const secretMatches = (secret: string, digest: Buffer): boolean => {
  const given = sha256(secret)
  return given.length === digest.length && timingSafeEqual(given, digest)
}

/** Reads and checks the options of `keys create` (canonical codes, known scopes, a sane rate). */
export function newKey (o: {
  iysCode?: string, brandCodes?: string, scopes?: string, name?: string, rate?: string
  smppSystemId?: string, smppBrandCode?: string, smppCommercial?: string, smppRecipientType?: string
}): NewKey {
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
  const smpp = o.smppSystemId === undefined ? noSmppDefaults(o) : newSmpp({ systemId: o.smppSystemId, brandCode: o.smppBrandCode, commercial: o.smppCommercial, recipientType: o.smppRecipientType })
  if (smpp !== null) {
    if (!scopes.includes('send') && !scopes.includes('admin')) throw new KeyError('--smpp-system-id needs a key with the send scope (or admin)')
    if (smpp.brandCode !== null && brandCodes !== null && !brandCodes.includes(smpp.brandCode)) throw new KeyError(`--smpp-brand-code ${smpp.brandCode} is not one of the key's --brand-codes`)
  }
  return { iysCode, brandCodes, scopes, name: o.name ?? '', ratePerSecond: rate, smpp }
}

/** SMPP defaults without a system id mean nothing: refused rather than ignored. */
function noSmppDefaults (o: { smppBrandCode?: string, smppCommercial?: string, smppRecipientType?: string }): null {
  if (o.smppBrandCode !== undefined || o.smppCommercial !== undefined || o.smppRecipientType !== undefined) {
    throw new KeyError('--smpp-brand-code, --smpp-commercial and --smpp-recipient-type need --smpp-system-id')
  }
  return null
}

/** Reads and checks SMPP credentials' options (`keys create --smpp-system-id …`, `keys smpp`). */
export function newSmpp (o: { systemId?: string, brandCode?: string, commercial?: string, recipientType?: string }): NewSmpp {
  if (o.systemId === undefined || !SMPP_SYSTEM_ID.test(o.systemId)) throw new KeyError('--smpp-system-id must be 1 to 15 visible ASCII characters (SMPP system_id; no spaces)')
  let brandCode: string | null = null
  if (o.brandCode !== undefined) {
    brandCode = canonicalCode(o.brandCode)
    if (brandCode === null) throw new KeyError(`--smpp-brand-code: "${o.brandCode}" is not an İYS brand code`)
  }
  let commercial: boolean | null = null
  if (o.commercial !== undefined) {
    if (o.commercial !== 'true' && o.commercial !== 'false') throw new KeyError('--smpp-commercial must be true or false')
    commercial = o.commercial === 'true'
  }
  let recipientType: RecipientType | null = null
  if (o.recipientType !== undefined) {
    if (!isRecipientType(o.recipientType)) throw new KeyError(`--smpp-recipient-type must be ${RECIPIENT_TYPES.join(' or ')}`)
    recipientType = o.recipientType
  }
  return { systemId: o.systemId, brandCode, commercial, recipientType }
}

/** An 8-character SMPP password from SMPP_PASSWORD_ALPHABET (randomInt: uniform, from the CSPRNG). */
export function smppPassword (): string {
  let p = ''
  for (let i = 0; i < SMPP_PASSWORD_LENGTH; i++) p += SMPP_PASSWORD_ALPHABET[randomInt(SMPP_PASSWORD_ALPHABET.length)]
  return p
}

/**
 * Creates a key (and its tenant, when new). Brands it names are registered to the tenant; one that belongs to
 * another tenant is refused, and nothing is written.
 */
export async function createKey (pool: Pool, k: NewKey): Promise<CreatedKey> {
  const keyId = KEY_ID_PREFIX + randomBytes(8).toString('hex')
  const secret = randomBytes(32).toString('base64url')
  const smpp = k.smpp ?? null
  const password = smpp !== null ? smppPassword() : null
  await clashing(inTransaction(pool, async client => {
    await ensureTenant(client, k.iysCode)
    if (k.brandCodes !== null) for (const b of k.brandCodes) await registerBrand(client, k.iysCode, b, null)
    if (smpp !== null) await checkSmpp(client, keyId, k.iysCode, k.brandCodes, smpp)
    await client.query(
      `INSERT INTO api_keys (key_id, iys_code, secret_sha256, brand_codes, scopes, name, rate_per_second,
                             smpp_system_id, smpp_password_sha256, smpp_brand_code, smpp_commercial, smpp_recipient_type)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
      [keyId, k.iysCode, sha256(secret), k.brandCodes, k.scopes, k.name, k.ratePerSecond,
        smpp?.systemId ?? null, password === null ? null : smppDigest(keyId, password), smpp?.brandCode ?? null, smpp?.commercial ?? null, smpp?.recipientType ?? null])
    await bump(client)
  }), smpp)
  const created: CreatedKey = { keyId, secret, apiKey: `${keyId}.${secret}` }
  if (smpp !== null) Object.assign(created, { smppSystemId: smpp.systemId, smppPassword: password! })
  return created
}

/**
 * Sets or replaces the SMPP credentials of a key that is not revoked and has the `send` scope (or admin), with a new
 * password (returned, once). Refused (KeyError) for an unknown, revoked or send-less key, a system id another key has
 * (a revoked one too, until `keys smpp KEYID --off` frees it) and a default brand the key may not act for.
 */
export async function setSmpp (pool: Pool, keyId: string, smpp: NewSmpp): Promise<SmppCredentials> {
  const password = smppPassword()
  await clashing(inTransaction(pool, async client => {
    const { rows } = await client.query<{ iys_code: string, brand_codes: string[] | null, scopes: Scope[], revoked: boolean }>(
      'SELECT iys_code::text, brand_codes::text[], scopes, revoked_at IS NOT NULL AS revoked FROM api_keys WHERE key_id = $1 FOR UPDATE', [keyId])
    const key = rows[0]
    if (key === undefined) throw new KeyError(`no key ${keyId} (\`keys list\` shows the keys)`)
    if (key.revoked) throw new KeyError(`key ${keyId} is revoked: it cannot have SMPP credentials`)
    if (!key.scopes.includes('send') && !key.scopes.includes('admin')) throw new KeyError(`key ${keyId} has no send scope (nor admin): SMPP credentials need it`)
    await checkSmpp(client, keyId, key.iys_code, key.brand_codes, smpp)
    await client.query(
      `UPDATE api_keys SET smpp_system_id = $2, smpp_password_sha256 = $3, smpp_brand_code = $4, smpp_commercial = $5, smpp_recipient_type = $6
        WHERE key_id = $1`, [keyId, smpp.systemId, smppDigest(keyId, password), smpp.brandCode, smpp.commercial, smpp.recipientType])
    await bump(client)
  }), smpp)
  return { smppSystemId: smpp.systemId, smppPassword: password }
}

/** Removes a key's SMPP credentials (its binds are refused from the next reload); false when there is no such key. */
export async function clearSmpp (pool: Pool, keyId: string): Promise<boolean> {
  return inTransaction(pool, async client => {
    const { rowCount } = await client.query(
      `UPDATE api_keys SET smpp_system_id = NULL, smpp_password_sha256 = NULL, smpp_brand_code = NULL, smpp_commercial = NULL, smpp_recipient_type = NULL
        WHERE key_id = $1`, [keyId])
    await bump(client)
    return (rowCount ?? 0) > 0
  })
}

/** A system id taken by another key, and a default brand of another tenant, are refused with their own line. */
async function checkSmpp (client: PoolClient, keyId: string, iysCode: string, brandCodes: readonly string[] | null, smpp: NewSmpp): Promise<void> {
  const { rows } = await client.query<{ key_id: string, revoked: boolean }>(
    'SELECT key_id, revoked_at IS NOT NULL AS revoked FROM api_keys WHERE smpp_system_id = $1 AND key_id <> $2', [smpp.systemId, keyId])
  if (rows[0] !== undefined) throw systemIdTaken(smpp.systemId, rows[0].key_id, rows[0].revoked)
  if (smpp.brandCode === null) return
  if (brandCodes !== null && !brandCodes.includes(smpp.brandCode)) {
    throw new KeyError(`--smpp-brand-code ${smpp.brandCode} is not one of key ${keyId}'s brands (${brandCodes.join(', ')})`)
  }
  // An unrestricted key acts for every brand of its tenant: the default brand is registered to it like --brand-codes.
  if (brandCodes === null) await registerBrand(client, iysCode, smpp.brandCode, null)
}

const systemIdTaken = (systemId: string, keyId: string | null, revoked: boolean): KeyError => new KeyError(
  `SMPP system id "${systemId}" is already used by ${keyId === null ? 'another key' : `key ${keyId}`}${revoked ? ` (revoked; \`keys smpp ${keyId ?? 'KEYID'} --off\` frees it)` : ''}: system ids are unique across tenants`)

/** Two writers racing for one system id: the loser's unique violation becomes the same refusal. */
async function clashing<T> (p: Promise<T>, smpp: NewSmpp | null): Promise<T> {
  try {
    return await p
  } catch (err) {
    if (smpp !== null && err instanceof pg.DatabaseError && err.code === '23505' && err.constraint === 'api_keys_smpp_system_id_key') throw systemIdTaken(smpp.systemId, null, false)
    throw err
  }
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
    `SELECT key_id, iys_code::text, brand_codes::text[], scopes, name, rate_per_second, created_at, revoked_at,
            smpp_system_id, smpp_brand_code::text, smpp_commercial, smpp_recipient_type
       FROM api_keys WHERE $1::bigint IS NULL OR iys_code = $1 ORDER BY created_at, key_id`, [iysCode])
  return rows.map(r => ({
    keyId: r.key_id,
    iysCode: r.iys_code,
    brandCodes: r.brand_codes,
    scopes: r.scopes,
    name: r.name,
    ratePerSecond: r.rate_per_second,
    createdAt: (r.created_at as Date).toISOString(),
    revokedAt: r.revoked_at === null ? null : (r.revoked_at as Date).toISOString(),
    smppSystemId: r.smpp_system_id,
    smppBrandCode: r.smpp_brand_code,
    smppCommercial: r.smpp_commercial,
    // the effective default: NULL is BIREYSEL for a key with SMPP
    smppRecipientType: r.smpp_system_id === null ? null : r.smpp_recipient_type ?? 'BIREYSEL'
  }))
}

/** The key form of an originator for `originators …`, or a KeyError that says why the text cannot be one. */
export function originatorOf (text: string | undefined): string {
  const key = text === undefined ? null : originatorKey(text)
  if (key === null) throw new KeyError(`--originator must be a sender ID, short code or number: 1 to ${MAX_ORIGINATOR_LENGTH} printable ASCII characters`)
  return key
}

/**
 * Maps a tenant's originator (key form, originatorOf) to one of its brands; the brand is registered to the tenant
 * like `brands add` (refused when it belongs to another). Adding an originator again replaces its brand.
 */
export async function addOriginator (pool: Pool, iysCode: string, originator: string, brandCode: string): Promise<OriginatorRow> {
  return inTransaction(pool, async client => {
    await ensureTenant(client, iysCode)
    await registerBrand(client, iysCode, brandCode, null)
    const { rows } = await client.query(
      `INSERT INTO originators (iys_code, originator, brand_code) VALUES ($1, $2, $3)
       ON CONFLICT (iys_code, originator) DO UPDATE SET brand_code = excluded.brand_code
       RETURNING iys_code::text, originator, brand_code::text, created_at`, [iysCode, originator, brandCode])
    await bump(client)
    return originatorRow(rows[0])
  })
}

export async function listOriginators (pool: Pool, iysCode: string | null): Promise<OriginatorRow[]> {
  const { rows } = await pool.query(
    `SELECT iys_code::text, originator, brand_code::text, created_at FROM originators
      WHERE $1::bigint IS NULL OR iys_code = $1 ORDER BY iys_code, originator`, [iysCode])
  return rows.map(originatorRow)
}

/** Removes a tenant's originator (key form); false when it has no such originator. */
export async function removeOriginator (pool: Pool, iysCode: string, originator: string): Promise<boolean> {
  return inTransaction(pool, async client => {
    const { rowCount } = await client.query('DELETE FROM originators WHERE iys_code = $1 AND originator = $2', [iysCode, originator])
    await bump(client)
    return (rowCount ?? 0) > 0
  })
}

const originatorRow = (r: { iys_code: string, originator: string, brand_code: string, created_at: Date }): OriginatorRow =>
  ({ iysCode: r.iys_code, originator: r.originator, brandCode: r.brand_code, createdAt: r.created_at.toISOString() })

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
