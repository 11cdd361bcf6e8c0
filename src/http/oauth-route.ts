// POST /oauth2/token as İYS answers it (operation createToken2 of the spec), so that an İYS client logs in here
// unchanged: `grant_type=password` with `username` = the API key's keyId and `password` = its secret, or
// `grant_type=refresh_token`; a form (application/x-www-form-urlencoded) or a JSON body; İYS's Oauth2Response on
// success and its Bad2Request bodies (`{"error","error_description"}`, 400) on failure. Tokens: auth/tokens.ts.
//
// İYS allows 10 token requests per hour from an address (429 H084). Here the limit is per source address and
// gateway process, AUTH_TOKEN_REQUESTS_PER_HOUR (default 1000, 0: none): generous, because behind a load balancer
// every client may arrive from the balancer's address, and a token costs us one HMAC, not a Keycloak session. It
// counts every request, as İYS's does, so it also bounds password guessing from one address (a secret is 32 random
// bytes: guessing is hopeless anyway).

import { HourlyLimit } from '../auth/hourly-limit.js'
import { sourceOf } from '../auth/lockout.js'
import type { KeyStore } from '../auth/key-store.js'
import type { TokenIssuer } from '../auth/tokens.js'
import { CodedError, GatewayError } from '../domain/errors.js'
import { readBody } from './body.js'
import type { Router } from './router.js'

export interface OauthRouteDeps {
  keys: Pick<KeyStore, 'verify' | 'principal'>
  tokens: TokenIssuer
  /** token requests per source address per hour in this process; 0: not limited */
  requestsPerHour: number
}

/** A token request is a few hundred bytes; anything much larger is not one. */
const MAX_BODY = 16 * 1024

/** İYS's 400 answers (the spec's examples of Bad2Request), by what is wrong. */
const BAD = {
  noGrant: ['invalid_request', 'Giriş yöntemi belirtilmemiş.'],
  emptyGrant: ['invalid_grant', 'Giriş yöntemi boş olamaz.'],
  unsupportedGrant: ['invalid_grant', 'Desteklenmeyen giriş yöntemi.'],
  unknownGrant: ['invalid_request', 'Bilinmeyen giriş yöntemi.'],
  credentials: ['invalid_request', 'Kullanıcı kimlik bilgileri geçersiz.'],
  // İYS is a Keycloak: these are Keycloak's words for a refresh token it cannot use (as test/helpers/fake-iys.ts)
  refreshInvalid: ['invalid_grant', 'Invalid refresh token'],
  refreshInactive: ['invalid_grant', 'Token is not active']
} as const satisfies Record<string, readonly [string, string]>

/** Per field: missing, empty, and not a string (a JSON number, say). */
const FIELD = {
  username: { missing: 'Kullanıcı adı verilmemiş.', empty: 'Kullanıcı adı boş bırakılamaz.', type: 'Desteklenmeyen kullanıcı adı türü.' },
  password: { missing: 'Şifre verilmemiş.', empty: 'Şifre boş bırakılamaz.', type: 'Desteklenmeyen şifre türü.' },
  refresh_token: { missing: 'Yenileme jetonu verilmemiş.', empty: 'Yenileme jetonu boş olamaz.', type: 'Desteklenmeyen yenileme jetonu türü.' }
} as const

/** OAuth 2.0 grants İYS does not offer: "unsupported" (any other word is "unknown"). */
const OTHER_OAUTH_GRANTS = new Set(['authorization_code', 'client_credentials', 'implicit', 'urn:ietf:params:oauth:grant-type:device_code',
  'urn:ietf:params:oauth:grant-type:jwt-bearer', 'urn:ietf:params:oauth:grant-type:saml2-bearer', 'urn:ietf:params:oauth:grant-type:token-exchange'])

/** A token request OAuth2 refuses: answered 400 with OAuth2's `{error, error_description}`, not İYS's errors list. */
class TokenRequestError extends CodedError<'OAUTH_REQUEST'> {
  constructor (readonly error: string, readonly description: string) { super('OAUTH_REQUEST', description) }
}

const bad = ([error, description]: readonly [string, string]): TokenRequestError => new TokenRequestError(error, description)

export function oauthRoute (router: Router, deps: OauthRouteDeps): void {
  const { keys, tokens } = deps
  const limit = deps.requestsPerHour > 0 ? new HourlyLimit(deps.requestsPerHour) : null

  const answer = async (params: Record<string, unknown>): Promise<string> => {
    const grant = params.grant_type
    if (grant === undefined) throw bad(BAD.noGrant)
    if (typeof grant !== 'string') throw bad(BAD.unsupportedGrant)
    if (grant === '') throw bad(BAD.emptyGrant)
    if (grant !== 'password' && grant !== 'refresh_token') throw bad(OTHER_OAUTH_GRANTS.has(grant) ? BAD.unsupportedGrant : BAD.unknownGrant)
    if (!await tokens.ready()) throw new GatewayError('SERVICE_UNAVAILABLE', { message: 'Tokens cannot be issued now: the signing secret is not loaded from Postgres.' })
    if (grant === 'password') {
      const username = field(params, 'username')
      const password = field(params, 'password')
      const principal = keys.verify(username, password)
      if (principal === null) throw bad(BAD.credentials)
      return JSON.stringify(tokens.issue(principal))
    }
    const check = tokens.checkRefresh(field(params, 'refresh_token'))
    if (check === 'invalid') throw bad(BAD.refreshInvalid)
    const principal = check === 'expired' ? null : keys.principal(check.keyId)
    if (principal === null) throw bad(BAD.refreshInactive) // expired, or its key was revoked
    return JSON.stringify(tokens.issue(principal))
  }

  router.handle('post', '/oauth2/token', 'token', (ex, req) => {
    const contentType = req.getHeader('content-type').toLowerCase()
    if (limit !== null) {
      const waitS = limit.take(sourceOf(router.remoteAddress(ex, req)))
      if (waitS > 0) throw new GatewayError('H084', { retryAfterS: waitS })
    }
    readBody(ex, req, MAX_BODY, (err, body) => {
      if (err !== null) { router.fail(ex, 'token', err); return }
      answer(parseParams(contentType, body!.toString('utf8'))).then(
        text => { router.reply(ex, 'token', { status: 200, body: text }) },
        (e: unknown) => {
          if (e instanceof TokenRequestError) router.reply(ex, 'token', { status: 400, body: JSON.stringify({ error: e.error, error_description: e.description }) })
          else router.fail(ex, 'token', e)
        })
    })
  }, { auth: 'public', iys: true }) // the way in: no key yet
}

/**
 * The request's parameters: a form by its Content-Type, JSON otherwise, and with no (or another) Content-Type
 * whichever the body looks like. A body that parses as neither is a request without a grant_type (as İYS answers).
 */
function parseParams (contentType: string, text: string): Record<string, unknown> {
  const form = contentType.startsWith('application/x-www-form-urlencoded') ||
    (!contentType.startsWith('application/json') && !text.trimStart().startsWith('{'))
  if (form) {
    const params: Record<string, string> = {}
    for (const [k, v] of new URLSearchParams(text)) if (!(k in params)) params[k] = v // the first of a repeated field
    return params
  }
  try {
    const parsed: unknown = JSON.parse(text)
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? parsed as Record<string, unknown> : {}
  } catch {
    return {}
  }
}

/** A parameter that must be a non-empty string, or İYS's 400 for it. */
function field (params: Record<string, unknown>, name: keyof typeof FIELD): string {
  const v = params[name]
  const words = FIELD[name]
  if (v === undefined || v === null) throw new TokenRequestError('invalid_request', words.missing)
  if (typeof v !== 'string') throw new TokenRequestError('invalid_request', words.type)
  if (v === '') throw new TokenRequestError('invalid_grant', words.empty)
  return v
}
