// Every gateway's in-memory copy of the API keys, so that authenticating a request costs no I/O: with DATABASE_URL,
// loaded from Postgres and reloaded whenever auth_state.version moves (polled every AUTH_POLL_MS, so a created or
// revoked key takes effect on every gateway within that interval); without it, the one demo key of the trial.
//
// When Postgres goes away the last copy keeps serving (checks must not stop because the key table is unreachable);
// a key revoked meanwhile stops working when the gateway reaches Postgres again. A gateway that never loaded the
// keys answers 401 to everything, and says so in /readyz.
//
// The SMPP credentials of the keys and the tenants' originator → brand table come with the same load, so an SMPP
// bind and a submit_sm's brand are answered from memory too, and follow the same version and the same outage rule.

import { timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { RecipientType } from '../domain/vocabulary.js'
import type { Pool } from '../store/pg.js'
import { secretMatches, sha256, smppDigest, splitApiKey } from './keys.js'
import { originatorKey } from './originators.js'
import { hasScope, SCOPES, type Authenticator, type Principal, type Scope } from './principal.js'

/**
 * The trial's key (README): accepted only without DATABASE_URL (no key table there) and by default only in the fully
 * embedded trial (AUTH_DEMO_KEY), for the seed's service provider and any brand, with every scope; announced loudly.
 */
export const DEMO_API_KEY = 'ik_0000000000000000.demo-key-for-trials-never-for-production'
export const DEMO_IYS_CODE = '700001'
export const DEMO_KEY_WARNING = `the demo API key "${DEMO_API_KEY}" (README) is accepted, with every scope, for every brand — for trials only (AUTH_DEMO_KEY); production needs DATABASE_URL and \`iys-gateway keys create\``

/** The trial's SMPP credentials (demo KeyStore only): system_id and password of the demo key. */
export const DEMO_SMPP_SYSTEM_ID = 'demo'
export const DEMO_SMPP_PASSWORD = 'demo1234'
/** The demo key's default brand (SMPP and SMTP): the brand of data/sample-consents.csv. */
export const DEMO_BRAND_CODE = '600001'

/** What a bind's submit_sm falls back on when its TLVs do not say (`keys … --smpp-brand-code` and the like). */
export interface SmppDefaults {
  /** canonical; null: the brand must come from a TLV or the originator table */
  readonly brandCode: string | null
  /** null: the submit_sm must say */
  readonly commercial: boolean | null
  readonly recipientType: RecipientType
}

/** An accepted SMPP bind: the key it stands for and its defaults. */
export interface SmppLogin { readonly principal: Principal, readonly defaults: SmppDefaults }

/** Why a bind is refused, as the SMPP command_status to answer it with. */
export type SmppRefusal = 'ESME_RINVSYSID' | 'ESME_RINVPASWD'

/** A tenant's brand mapped to an originator (for MO messages, which reach the originator, not a tenant). */
export interface OriginatorOwner { readonly iysCode: string, readonly brandCode: string }

export const NO_KEYS_WARNING = 'no DATABASE_URL and AUTH_DEMO_KEY is off: no API key exists, every request but /healthz, /readyz and /metrics is answered 401'

/** Access tokens from POST /oauth2/token (auth/tokens.ts): the key a token stands for, or null. */
export interface TokenVerifier {
  keyIdOf (token: string): string | null
}

interface Entry { principal: Principal, digest: Buffer }
/** salt: the key id (keys.ts smppDigest) */
interface SmppEntry { login: SmppLogin, keyId: string, digest: Buffer }

const NO_OWNERS: readonly OriginatorOwner[] = Object.freeze([])

/** Bearer values verified once and remembered until the next reload (so a request hashes nothing); bounded. */
const MAX_VERIFIED = 10_000

export interface KeyStoreStatus {
  source: 'postgres' | 'demo' | 'none'
  keys: number
  version: number
  /** the last successful load (ms since epoch); 0: never */
  loadedAt: number
  /** the last poll that reached Postgres (ms since epoch) */
  checkedAt: number
  problem: string | null
}

export class KeyStore implements Authenticator {
  private entries = new Map<string, Entry>()
  /** by system_id */
  private smpp = new Map<string, SmppEntry>()
  /** iysCode → originator (key form) → brand code */
  private originators = new Map<string, Map<string, string>>()
  /** originator (key form) → every tenant brand mapped to it */
  private owners = new Map<string, readonly OriginatorOwner[]>()
  private verified = new Map<string, Principal>()
  private tokens: TokenVerifier | null = null
  private readonly pool: Pool | null
  private readonly pollMs: number
  private readonly log: Logger | null
  private version = 0
  private loadedAt = 0
  private checkedAt = 0
  private problem: string | null = null
  private timer: NodeJS.Timeout | null = null
  private polling: Promise<void> | null = null

  private constructor (pool: Pool | null, pollMs: number, log: Logger | null) {
    this.pool = pool
    this.pollMs = pollMs
    this.log = log
  }

  /** The keys of a deployment: Postgres's, reloaded when they change. Call start(). */
  static postgres (pool: Pool, opts: { pollMs: number, log: Logger }): KeyStore {
    return new KeyStore(pool, opts.pollMs, opts.log)
  }

  /** No key at all: a gateway without DATABASE_URL and without the demo key answers 401 to everything. */
  static none (): KeyStore {
    const store = new KeyStore(null, 0, null)
    store.loadedAt = Date.now()
    return store
  }

  /** The embedded trial's one key (DEMO_API_KEY). */
  static demo (): KeyStore {
    const store = new KeyStore(null, 0, null)
    const [keyId, secret] = DEMO_API_KEY.split('.') as [string, string]
    const principal: Principal = Object.freeze({ keyId, iysCode: DEMO_IYS_CODE, brands: 'any', scopes: new Set<Scope>(SCOPES), ratePerSecond: 0, demo: true })
    store.entries.set(keyId, { principal, digest: sha256(secret) })
    // The sample data's brand by default, so that a trial's submit_sm needs no TLV and no originator table.
    const defaults: SmppDefaults = Object.freeze({ brandCode: DEMO_BRAND_CODE, commercial: null, recipientType: 'BIREYSEL' })
    store.smpp.set(DEMO_SMPP_SYSTEM_ID, { login: Object.freeze({ principal, defaults }), keyId, digest: smppDigest(keyId, DEMO_SMPP_PASSWORD) })
    store.loadedAt = Date.now()
    return store
  }

  /** Lets access tokens in (set once the token issuer exists; it needs this store to resolve keys). */
  useTokens (tokens: TokenVerifier): void {
    this.tokens = tokens
  }

  /**
   * The key's principal as loaded now, or null once it is revoked or gone: what long sessions (SMPP binds, SMTP
   * connections) check before each message, so that a revocation or a change of brands or rate reaches them too.
   */
  principalOf (keyId: string): Principal | null {
    return this.entries.get(keyId)?.principal ?? null
  }

  authenticate (bearer: string): Principal | null {
    const known = this.verified.get(bearer)
    if (known !== undefined) return known
    let principal: Principal | null = null
    const parts = splitApiKey(bearer)
    if (parts !== null) {
      const entry = this.entries.get(parts.keyId)
      if (entry !== undefined && secretMatches(parts.secret, entry.digest)) principal = entry.principal
    } else if (this.tokens !== null) {
      const keyId = this.tokens.keyIdOf(bearer)
      // Not remembered: a token expires on its own clock, and verifying one is as cheap as the lookup.
      return keyId === null ? null : this.entries.get(keyId)?.principal ?? null
    }
    if (principal !== null) {
      if (this.verified.size >= MAX_VERIFIED) this.verified.clear()
      this.verified.set(bearer, principal)
    }
    return principal
  }

  /** The principal of a key that is not revoked (for the token endpoint), or null. */
  principal (keyId: string): Principal | null {
    return this.entries.get(keyId)?.principal ?? null
  }

  /** Whether `secret` is the secret of key `keyId` (for the token endpoint's password grant). */
  verify (keyId: string, secret: string): Principal | null {
    const entry = this.entries.get(keyId)
    return entry !== undefined && secretMatches(secret, entry.digest) ? entry.principal : null
  }

  /**
   * An SMPP bind's credentials: the key's login, or the command_status to refuse it with (an unknown or revoked
   * system_id, or a key whose SMPP credentials were removed: ESME_RINVSYSID; a wrong password: ESME_RINVPASWD).
   * Synchronous, from memory; the digests are compared in constant time.
   */
  authenticateSmpp (systemId: string, password: string): SmppLogin | SmppRefusal {
    const entry = this.smpp.get(systemId)
    if (entry === undefined) return 'ESME_RINVSYSID'
    const given = smppDigest(entry.keyId, password)
    return given.length === entry.digest.length && timingSafeEqual(given, entry.digest) ? entry.login : 'ESME_RINVPASWD'
  }

  /** The brand (canonical code) tenant `iysCode` mapped originator `originatorText` to, or null. */
  originatorBrand (iysCode: string, originatorText: string): string | null {
    const own = this.originators.get(iysCode)
    if (own === undefined) return null
    // A source_addr usually arrives in its key form already (and originatorKey is idempotent): one lookup, no
    // normalising, in the common case.
    const hit = own.get(originatorText)
    if (hit !== undefined) return hit
    const key = originatorKey(originatorText)
    return key === null ? null : own.get(key) ?? null
  }

  /** Every tenant brand mapped to originator `originatorText` (an MO message's destination); empty when none. */
  originatorOwners (originatorText: string): readonly OriginatorOwner[] {
    const hit = this.owners.get(originatorText)
    if (hit !== undefined) return hit
    const key = originatorKey(originatorText)
    return key === null ? NO_OWNERS : this.owners.get(key) ?? NO_OWNERS
  }

  status (): KeyStoreStatus {
    // Polls that stopped reaching Postgres (a revocation would not arrive) are a problem even before one fails.
    const stale = this.pool !== null && this.checkedAt > 0 && Date.now() - this.checkedAt > Math.max(10 * this.pollMs, 3000)
    const problem = this.problem ?? (stale ? `API keys not refreshed for ${Math.round((Date.now() - this.checkedAt) / 1000)} s` : null)
    return { source: this.pool !== null ? 'postgres' : this.entries.size > 0 ? 'demo' : 'none', keys: this.entries.size, version: this.version, loadedAt: this.loadedAt, checkedAt: this.checkedAt, problem }
  }

  /** First load (a failure is logged and retried by the poll), then polls for changes. */
  async start (): Promise<void> {
    if (this.pool === null) return
    await this.poll()
    this.timer = setInterval(() => { this.polling ??= this.poll().finally(() => { this.polling = null }) }, this.pollMs)
    this.timer.unref()
  }

  async stop (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    await this.polling
  }

  private async poll (): Promise<void> {
    const pool = this.pool!
    try {
      const { rows } = await pool.query<{ version: string }>('SELECT version::text FROM auth_state')
      const version = Number(rows[0]?.version ?? 0)
      if (version !== this.version || this.loadedAt === 0) await this.load(pool, version)
      if (this.problem !== null) this.log?.info('API keys reachable again')
      this.problem = null
      this.checkedAt = Date.now()
    } catch (err) {
      // The reason goes to the log only: /readyz is public and says no more than what is wrong.
      if (this.problem === null) this.log?.error({ err }, 'cannot read the API keys from Postgres; serving the last copy')
      this.problem = 'API keys cannot be read from Postgres (serving the last copy; revocations wait)'
    }
  }

  private async load (pool: Pool, version: number): Promise<void> {
    const [keys, brands, originators] = await Promise.all([
      pool.query<{
        key_id: string, iys_code: string, secret_sha256: Buffer, brand_codes: string[] | null, scopes: Scope[], rate_per_second: number
        smpp_system_id: string | null, smpp_password_sha256: Buffer | null, smpp_brand_code: string | null, smpp_commercial: boolean | null, smpp_recipient_type: RecipientType | null
      }>(`SELECT key_id, iys_code::text, secret_sha256, brand_codes::text[], scopes, rate_per_second,
                 smpp_system_id, smpp_password_sha256, smpp_brand_code::text, smpp_commercial, smpp_recipient_type
            FROM api_keys WHERE revoked_at IS NULL`),
      pool.query<{ iys_code: string, brands: string[] }>('SELECT iys_code::text, array_agg(brand_code::text) AS brands FROM brands GROUP BY iys_code'),
      pool.query<{ iys_code: string, originator: string, brand_code: string }>(
        'SELECT iys_code::text, originator, brand_code::text FROM originators ORDER BY originator, iys_code')
    ])
    const tenantBrands = new Map(brands.rows.map(r => [r.iys_code, new Set(r.brands)]))
    const entries = new Map<string, Entry>()
    const smpp = new Map<string, SmppEntry>()
    for (const k of keys.rows) {
      const all = tenantBrands.get(k.iys_code) ?? new Set<string>()
      const own = k.brand_codes === null ? all : new Set(k.brand_codes.filter(b => all.has(b)))
      const principal: Principal = Object.freeze({ keyId: k.key_id, iysCode: k.iys_code, brands: own, scopes: new Set(k.scopes), ratePerSecond: k.rate_per_second, demo: false })
      entries.set(k.key_id, { digest: k.secret_sha256, principal })
      // keys.ts refuses SMPP credentials without `send`; a row edited by hand does not get a bind either.
      if (k.smpp_system_id !== null && k.smpp_password_sha256 !== null && hasScope(principal, 'send')) {
        const defaults: SmppDefaults = Object.freeze({ brandCode: k.smpp_brand_code, commercial: k.smpp_commercial, recipientType: k.smpp_recipient_type ?? 'BIREYSEL' })
        smpp.set(k.smpp_system_id, { login: Object.freeze({ principal, defaults }), keyId: k.key_id, digest: k.smpp_password_sha256 })
      }
    }
    const byTenant = new Map<string, Map<string, string>>()
    const owners = new Map<string, OriginatorOwner[]>()
    for (const o of originators.rows) {
      let own = byTenant.get(o.iys_code)
      if (own === undefined) byTenant.set(o.iys_code, own = new Map())
      own.set(o.originator, o.brand_code)
      let list = owners.get(o.originator)
      if (list === undefined) owners.set(o.originator, list = [])
      list.push(Object.freeze({ iysCode: o.iys_code, brandCode: o.brand_code }))
    }
    for (const list of owners.values()) Object.freeze(list)
    this.entries = entries
    this.smpp = smpp
    this.originators = byTenant
    this.owners = owners
    this.verified = new Map()
    this.version = version
    this.loadedAt = Date.now()
  }
}
