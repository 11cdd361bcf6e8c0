// Who is calling: the tenant (an İYS service provider, by iysCode) and the API key that authenticated the request,
// with what the key may do. Every route except /healthz, /readyz and /metrics (and the İYS push receiver, which has
// its own basic auth) needs one; the router authenticates, checks the route's scope and rate-limits before a handler
// runs, and handlers check brands and iysCodes in paths and bodies with `mayActFor` / `requireBrand`.

import { GatewayError } from '../domain/errors.js'

export const SCOPES = ['check', 'send', 'consents:write', 'consents:read', 'scrub', 'evidence', 'admin'] as const
export type Scope = (typeof SCOPES)[number]

export const isScope = (s: unknown): s is Scope => typeof s === 'string' && (SCOPES as readonly string[]).includes(s)

export interface Principal {
  readonly keyId: string
  /** the tenant: an İYS service provider code, canonical (no leading zeros) */
  readonly iysCode: string
  /**
   * canonical brand codes this key may act for: the key's own list, or every brand of its tenant; 'any' only for
   * the demo key of a gateway without DATABASE_URL (no brand registry there). Ask `mayActFor`, not this field.
   */
  readonly brands: ReadonlySet<string> | 'any'
  /** what the key may do; `admin` implies every other scope */
  readonly scopes: ReadonlySet<Scope>
  /** requests per second (token bucket); 0 = not limited */
  readonly ratePerSecond: number
  /** the built-in trial key of the embedded default (never present with DATABASE_URL) */
  readonly demo: boolean
}

/** What the router asks for a bearer value: an API key `<keyId>.<secret>` or an access token from /oauth2/token. */
export interface Authenticator {
  /**
   * The principal for `bearer`, or null when it is unknown, wrong, revoked or expired. Synchronous and answered
   * from memory: it runs on every request.
   */
  authenticate (bearer: string): Principal | null
}

/** Whether a key may act in `scope` (admin may do anything its tenant may). */
export const hasScope = (p: Principal, scope: Scope): boolean => p.scopes.has(scope) || p.scopes.has('admin')

/** Whether a key may act for `brandCode` (canonical) of tenant `iysCode` (canonical; null when the request names none). */
export const mayActFor = (p: Principal, brandCode: string, iysCode: string | null = null): boolean =>
  (iysCode === null || iysCode === p.iysCode) && (p.brands === 'any' || p.brands.has(brandCode))

/** The principal of a public route (/healthz, /readyz, /metrics, the İYS push receiver): may do nothing. */
export const ANONYMOUS: Principal = Object.freeze({
  keyId: '', iysCode: '', brands: new Set<string>(), scopes: new Set<Scope>(), ratePerSecond: 0, demo: false
})

/** Throws İYS's 403 H353 unless `iysCode` is the caller's tenant (an İYS-shaped route that names no brand). */
export function requireTenant (p: Principal, iysCode: string): void {
  if (iysCode !== p.iysCode) throw notYours('iysCode', iysCode, true)
}

/**
 * Throws 403 unless `p` may act for `brandCode` of `iysCode` (null: the request names no iysCode): FORBIDDEN on our
 * routes, İYS's H353 on the İYS-shaped ones (`iys`).
 */
export function requireBrand (p: Principal, brandCode: string, iysCode: string | null, iys: boolean): void {
  if (mayActFor(p, brandCode, iysCode)) return
  throw iysCode !== null && iysCode !== p.iysCode ? notYours('iysCode', iysCode, iys) : notYours('brandCode', brandCode, iys)
}

/** The 403 for a code that is not the caller's: İYS's H353 body, or ours naming the code. */
const notYours = (field: 'iysCode' | 'brandCode', value: string, iys: boolean): GatewayError => iys
  ? new GatewayError('H353', { location: field, message: `${field}, kullanıcı izinleriyle eşleştirilemiyor` })
  : new GatewayError('FORBIDDEN', { location: field, value, message: `This API key may not act for ${field} ${value}.` })
