// Access and refresh tokens of POST /oauth2/token (http/oauth-route.ts). A token stands for the API key it was
// issued to (its `sub` is the keyId) and expires; it carries no permissions of its own: the key store resolves the
// key's current principal on every request, so a revoked key's tokens stop working with the key, and a changed
// key's tokens change with it.
//
// Stateless, not stored: a token is a JWT (HS256, as İYS's Keycloak tokens are JWTs that clients may decode for
// `exp`) signed with a secret every gateway shares through Postgres (table auth_token_secret, one row, created by the
// first gateway that needs it). So any gateway behind a load balancer verifies any gateway's token with one HMAC
// and no I/O, and issuing one writes nothing. Without DATABASE_URL (the trial) the secret is this process's own.
// What statelessness costs: a single token cannot be revoked before it expires (revoke the key instead), and a
// refresh token may be used more than once within its lifetime. Whoever can read that row could sign tokens, so
// AUTH_TOKEN_SECRET (the same on every gateway) is mixed in: then a copy of the database alone signs nothing.
// Rotating the secret: delete the row (or change AUTH_TOKEN_SECRET) and restart
// every gateway (every token dies; clients log in again).
//
// Access and refresh tokens are signed with different keys derived from the secret, so one is never taken for the
// other. Neither is shaped like an API key (`ik_<16 hex>.<secret>`, auth/keys.ts): a JWT starts `eyJ`.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { Pool } from '../store/pg.js'
import type { TokenVerifier } from './key-store.js'
import type { Principal } from './principal.js'

export interface TokenLifetimes {
  /** access token lifetime (s); İYS's is 2 hours */
  accessSeconds: number
  /** refresh token lifetime (s); İYS's is 4 hours */
  refreshSeconds: number
  /** AUTH_TOKEN_SECRET: mixed with the shared secret, so that a copy of the database cannot mint tokens; null: none */
  secret?: string | null
}

/** The body of a successful POST /oauth2/token, field for field İYS's (Oauth2Response). */
export interface TokenResponse {
  access_token: string
  refresh_token: string
  expires_in: number
  refresh_expires_in: number
  token_type: 'bearer'
}

/** What a refresh token says: the key to issue new tokens for, or why not. */
export type RefreshCheck = { keyId: string } | 'expired' | 'invalid'

type Kind = 'Bearer' | 'Refresh'

interface Claims {
  jti: string
  iat: number
  exp: number
  iss: string
  typ: Kind
  sub: string
  preferred_username: string
  serviceProvider: { iysCode: string }
}

const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url')
const HEADER_DOT = HEADER + '.'
/** Longer than any token issued here: refused before any hashing. */
const MAX_TOKEN_LENGTH = 1024
/** HMAC-SHA256 in base64url, unpadded */
const SIGNATURE_LENGTH = 43
/** Access tokens verified once and remembered until they expire, so a request pays a map lookup; bounded. */
const MAX_CACHED = 10_000
/** A failed load of the shared secret is tried again, on demand, at most this often. */
const RETRY_MS = 1000

interface SigningKeys { access: Buffer, refresh: Buffer }

function derive (shared: Buffer, own: string | null | undefined): SigningKeys {
  const secret = own === null || own === undefined ? shared : createHmac('sha256', own).update(shared).digest()
  return {
    access: createHmac('sha256', secret).update('iys-gateway access token v1').digest(),
    refresh: createHmac('sha256', secret).update('iys-gateway refresh token v1').digest()
  }
}

export class TokenIssuer implements TokenVerifier {
  private keys: SigningKeys | null = null
  private readonly cache = new Map<string, { keyId: string, expMs: number }>()
  private loading: Promise<boolean> | null = null
  private lastAttempt = 0

  private constructor (
    private readonly lifetimes: TokenLifetimes,
    private readonly pool: Pool | null,
    private readonly log: Logger | null,
    private readonly now: () => number
  ) {}

  /** Tokens of this process alone (a gateway without DATABASE_URL): a random secret, gone with the process. */
  static local (lifetimes: TokenLifetimes, opts: { now?: () => number } = {}): TokenIssuer {
    const issuer = new TokenIssuer(lifetimes, null, null, opts.now ?? Date.now)
    issuer.keys = derive(randomBytes(32), null)
    return issuer
  }

  /**
   * Tokens every gateway of the database accepts: the secret from auth_token_secret (created when absent). A failed
   * load is logged; until a later one succeeds (tried again when a token is presented or asked for) no token is
   * accepted or issued here.
   */
  static async postgres (pool: Pool, lifetimes: TokenLifetimes, opts: { log: Logger, now?: () => number }): Promise<TokenIssuer> {
    const issuer = new TokenIssuer(lifetimes, pool, opts.log, opts.now ?? Date.now)
    await issuer.ready()
    return issuer
  }

  /** Whether tokens can be issued and verified (the secret is loaded), after one load attempt if it is not. */
  async ready (): Promise<boolean> {
    if (this.keys !== null) return true
    if (this.pool === null) return false
    this.loading ??= this.load(this.pool).finally(() => { this.loading = null })
    return this.loading
  }

  /** A new access and refresh token for `p`'s key. Call after `ready()` answered true. */
  issue (p: Principal): TokenResponse {
    const keys = this.keys
    if (keys === null) throw new Error('token signing secret not loaded')
    const nowS = Math.ceil(this.now() / 1000) // rounded up: a token never expires before `expires_in` said
    const { accessSeconds, refreshSeconds } = this.lifetimes
    return {
      access_token: sign(keys.access, this.claims(p, 'Bearer', nowS, accessSeconds)),
      refresh_token: sign(keys.refresh, this.claims(p, 'Refresh', nowS, refreshSeconds)),
      expires_in: accessSeconds,
      refresh_expires_in: refreshSeconds,
      token_type: 'bearer'
    }
  }

  /** The key an access token stands for, or null (not one of ours, tampered with, or expired). Synchronous, no I/O. */
  keyIdOf (token: string): string | null {
    const known = this.cache.get(token)
    if (known !== undefined) {
      if (this.now() < known.expMs) return known.keyId
      this.cache.delete(token)
      return null
    }
    const keys = this.keys
    if (keys === null) {
      void this.retry()
      return null
    }
    const claims = verify(keys.access, token, 'Bearer')
    if (claims === null) return null
    const expMs = claims.exp * 1000
    if (this.now() >= expMs) return null
    if (this.cache.size >= MAX_CACHED) this.cache.clear()
    this.cache.set(token, { keyId: claims.sub, expMs })
    return claims.sub
  }

  /** What a refresh token says (the route then checks that its key still exists). */
  checkRefresh (token: string): RefreshCheck {
    const keys = this.keys
    if (keys === null) return 'invalid'
    const claims = verify(keys.refresh, token, 'Refresh')
    if (claims === null) return 'invalid'
    return this.now() < claims.exp * 1000 ? { keyId: claims.sub } : 'expired'
  }

  private claims (p: Principal, typ: Kind, nowS: number, seconds: number): Claims {
    return {
      jti: randomBytes(12).toString('base64url'),
      iat: nowS,
      exp: nowS + seconds,
      iss: 'iys-gateway',
      typ,
      sub: p.keyId,
      preferred_username: p.keyId,
      serviceProvider: { iysCode: p.iysCode }
    }
  }

  /** A load in the background, at most once per RETRY_MS (keyIdOf cannot wait for it). */
  private async retry (): Promise<void> {
    if (this.pool === null || this.loading !== null || this.now() - this.lastAttempt < RETRY_MS) return
    await this.ready()
  }

  private async load (pool: Pool): Promise<boolean> {
    this.lastAttempt = this.now()
    try {
      // Two statements, not one: the SELECT must see a row another gateway committed while our INSERT waited.
      await pool.query('INSERT INTO auth_token_secret (secret) VALUES ($1) ON CONFLICT DO NOTHING', [randomBytes(32)])
      const { rows } = await pool.query<{ secret: Buffer }>('SELECT secret FROM auth_token_secret')
      if (rows[0] === undefined) throw new Error('auth_token_secret has no row')
      this.keys = derive(rows[0].secret, this.lifetimes.secret)
      return true
    } catch (err) {
      this.log?.error({ err }, 'cannot load the token signing secret from Postgres; /oauth2/token tokens are refused until it loads')
      return false
    }
  }
}

function sign (key: Buffer, claims: Claims): string {
  const body = HEADER_DOT + Buffer.from(JSON.stringify(claims)).toString('base64url')
  return body + '.' + createHmac('sha256', key).update(body).digest('base64url')
}

/** The claims of `token` when it is a `typ` token signed with `key`; null otherwise. Expiry is the caller's. */
function verify (key: Buffer, token: string, typ: Kind): Claims | null {
  if (token.length > MAX_TOKEN_LENGTH || !token.startsWith(HEADER_DOT)) return null
  const dot = token.lastIndexOf('.')
  if (dot <= HEADER_DOT.length || token.length - dot - 1 !== SIGNATURE_LENGTH) return null
  const body = token.slice(0, dot)
  // The signature compared as text: base64url decoding is lenient (it skips stray characters), the text is not.
  const expected = Buffer.from(createHmac('sha256', key).update(body).digest('base64url'))
  const given = Buffer.from(token.slice(dot + 1))
  if (given.length !== expected.length || !timingSafeEqual(expected, given)) return null
  let claims: Claims
  try {
    claims = JSON.parse(Buffer.from(body.slice(HEADER_DOT.length), 'base64url').toString('utf8')) as Claims
  } catch {
    return null
  }
  return claims.typ === typ && typeof claims.sub === 'string' && typeof claims.exp === 'number' ? claims : null
}
