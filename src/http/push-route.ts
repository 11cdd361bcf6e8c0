// The İYS push receiver: İYS posts consent changes here with basic auth; the body is stored before it is answered
// (store/push-inbox.ts), then applied.
//
// Sign-in: the credentials are compared in constant time whatever their length (both sides through HMAC-SHA-256
// with a key of this process, then timingSafeEqual on the equal-length digests), and a source address that keeps
// failing is locked out (auth/lockout.ts): IYS_PUSH_MAX_FAILURES failures within IYS_PUSH_FAILURE_WINDOW_MS lock it
// for IYS_PUSH_LOCKOUT_MS, answered 429 with Retry-After without looking at its credentials. A failure is logged
// with the source, whether a user name was right and its length, never the header, the user name or the password.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import { sourceOf, type Lockout } from '../auth/lockout.js'
import { ERRORS, errorItem, GatewayError } from '../domain/errors.js'
import type { Metrics } from '../metrics.js'
import type { PushProcessor } from '../store/push-inbox.js'
import { json, type RequestFacts, type Router } from './router.js'

export interface PushRouteDeps {
  push: Pick<PushProcessor, 'store'>
  credentials: { user: string, password: string } | null
  /** failed sign-ins per source (config.iysPushLockout) */
  lockout: Lockout
  log: Logger
  metrics: Metrics
}

export function pushRoute (router: Router, deps: PushRouteDeps): void {
  const { lockout, log, metrics } = deps
  const verify = deps.credentials === null ? null : basicAuthVerifier(deps.credentials)
  const refused = { missing: metrics.pushAuthFailures.labels('missing'), wrong: metrics.pushAuthFailures.labels('wrong'), locked: metrics.pushAuthFailures.labels('locked') }

  // The sign-in runs before the body is read: a locked-out or unauthenticated source never gets a body parsed.
  const signIn = (req: RequestFacts): void => {
    if (verify === null) throw new GatewayError('NOT_CONFIGURED')
    const source = sourceOf(req.remoteAddress)
    const lockedMs = lockout.lockedFor(source)
    if (lockedMs > 0) {
      refused.locked.inc()
      const retryAfterS = Math.ceil(lockedMs / 1000)
      throw new GatewayError('RATE_LIMITED', { retryAfterS, message: `Too many failed sign-ins from this address; try again in ${retryAfterS} s.` })
    }
    const verdict = verify(req.headers.authorization ?? '')
    if (verdict !== true) {
      refused[verdict.kind].inc()
      const locked = lockout.fail(source)
      log.warn({ source, kind: verdict.kind, userLength: verdict.userLength, userMatches: verdict.userMatches }, 'İYS push: failed sign-in')
      if (locked) {
        metrics.pushLockouts.inc()
        log.warn({ source }, 'İYS push: source locked out after repeated failed sign-ins')
      }
      throw new GatewayError('UNAUTHORIZED')
    }
    lockout.succeed(source)
  }

  router.post('/iys/push', 'push', async (body) => {
    const list = (body as { list?: unknown } | null)?.list
    if (typeof body !== 'object' || body === null || !Array.isArray(list)) {
      throw new GatewayError('INVALID_PUSH', { items: [errorItem('INVALID_FIELD', 'list', undefined, ERRORS.INVALID_PUSH.message)] })
    }
    const id = await deps.push.store(body) // on the receiver's own pool; starts processing
    return json(200, { received: list.length, id })
  }, { headers: ['authorization'], remote: true, auth: 'public', beforeBody: signIn }) // İYS's own basic auth, not an API key
}

/** Why a sign-in failed, for the log and the metric: never the credentials themselves. */
export interface SignInFailure {
  /** missing: no basic credentials at all; wrong: credentials that do not match */
  kind: 'missing' | 'wrong'
  /** length of the user name given (0 when none) */
  userLength: number
  /** whether the user name was the right one (then the password was not) */
  userMatches: boolean
}

/**
 * A checker of `Authorization: Basic …` headers against `creds`. Both sides go through HMAC-SHA-256 under a random
 * key of this process, so timingSafeEqual compares two 32-byte digests whatever the lengths given (comparing the
 * lengths first, as before, told a guesser the length of user:password).
 */
export function basicAuthVerifier (creds: { user: string, password: string }): (header: string) => true | SignInFailure {
  const key = randomBytes(32)
  const mac = (data: Buffer | string): Buffer => createHmac('sha256', key).update(data).digest()
  const expected = mac(`${creds.user}:${creds.password}`)
  const expectedUser = mac(creds.user)
  return (header) => {
    // RFC 7617: the scheme is case-insensitive; base64 decoding in Node ignores what is not base64.
    const space = header.indexOf(' ')
    if (space !== 5 || header.slice(0, 5).toLowerCase() !== 'basic') return { kind: 'missing', userLength: 0, userMatches: false }
    const given = Buffer.from(header.slice(6).trim(), 'base64')
    if (timingSafeEqual(mac(given), expected)) return true
    const colon = given.indexOf(0x3a)
    const user = colon < 0 ? given : given.subarray(0, colon)
    return { kind: 'wrong', userLength: user.length, userMatches: timingSafeEqual(mac(user), expectedUser) }
  }
}
