// RFC 8058 one-click unsubscribe: the target of the List-Unsubscribe links the SMTP relay adds to commercial mail
// (<SMTP_UNSUBSCRIBE_URL>/v1/unsubscribe/<token>, auth/unsubscribe-tokens.ts).
//
//   POST  records a RET for the token's recipient and brand on EPOSTA (source HS_EPOSTA) through the consent API's
//         write path as a citizen's rejection (writeCitizenRejections: the ledger, İYS write-through, NOTIFY, so every
//         gateway refuses the address within a second; a key with no record gets its RET too, not sent to İYS), for
//         BIREYSEL and TACIR both: the token cannot know which the mail went out as. No login and no cookies (the
//         RFC): the token is the authority. The body must say List-Unsubscribe=One-Click (a form, urlencoded or
//         multipart, or that text alone). A RET already in force changes nothing and is still 200: a repeat is 200.
//   GET   changes nothing (link scanners follow GETs): a page whose button POSTs the same form to the same URL.
//
// An unknown or altered token is 404 with no detail. Postgres unreachable (or a transient failure) is 503 with
// Retry-After, which mail providers retry; without DATABASE_URL, or without secrets, 503 NOT_CONFIGURED.

import type { Logger } from 'pino'
import client from 'prom-client'
import { verifyUnsubscribe, type UnsubscribeClaim } from '../auth/unsubscribe-tokens.js'
import { GatewayError } from '../domain/errors.js'
import { RECIPIENT_TYPES } from '../domain/vocabulary.js'
import type { Metrics } from '../metrics.js'
import { writeCitizenRejections } from '../store/consent-store.js'
import type { ValidConsent } from '../domain/consent.js'
import { isTransientDbError, type Pool } from '../store/pg.js'
import { readBody } from './body.js'
import type { Reply, Router } from './router.js'

export interface UnsubscribeRouteDeps {
  /** SMTP_UNSUBSCRIBE_SECRETS: any one verifies a token. None: both routes answer 503 NOT_CONFIGURED. */
  secrets: readonly string[]
  /** The gateway's pool; null without DATABASE_URL (the POST answers 503 NOT_CONFIGURED: nothing can be recorded). */
  pool: Pool | null
  log: Logger
  /** Where iys_unsubscribes_total{result} is registered; without it, not counted. */
  metrics?: Pick<Metrics, 'registry'>
}

export const UNSUBSCRIBE_PATH = '/v1/unsubscribe/:token'
/** Who the ledger says made the change. */
export const UNSUBSCRIBE_ACTOR = 'unsubscribe'
const ONE_CLICK = 'List-Unsubscribe=One-Click'
/** A one-field form, multipart included, is far below this. */
const MAX_BODY = 16 * 1024
const HTML = 'text/html; charset=utf-8'

// The pages, built once: no external assets, no script; a form without `action` posts to the page's own URL.
const page = (title: string, body: string): string => `<!doctype html>
<html lang="tr"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex">
<title>${title}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222}button{font:inherit;padding:.5rem 1.2rem;cursor:pointer}</style>
</head><body>
${body}
</body></html>
`
const CONFIRM_PAGE = page('Abonelikten çık / Unsubscribe', `<h1>Abonelikten çık</h1>
<p>Bu markanın size ticari e-posta göndermesine verdiğiniz izni geri almak için düğmeye basın (İYS'de RET).</p>
<p lang="en">To stop this brand sending you commercial e-mail, press the button: your consent is withdrawn (RET in İYS).</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Abonelikten çık / Unsubscribe</button></form>`)
const DONE_PAGE = page('Abonelikten çıkıldı / Unsubscribed', `<h1>Abonelikten çıkıldı</h1>
<p>Bu marka size artık ticari e-posta göndermeyecek.</p>
<p lang="en">You are unsubscribed: this brand will send you no more commercial e-mail.</p>`)
const CONFIRM: Reply = { status: 200, body: CONFIRM_PAGE, contentType: HTML }
const DONE: Reply = { status: 200, body: DONE_PAGE, contentType: HTML }

const NO_SECRETS = 'One-click unsubscribe is not configured on this gateway (SMTP_UNSUBSCRIBE_SECRETS).'
const NO_DATABASE = 'This gateway cannot record an unsubscribe: it runs without DATABASE_URL.'

type Result = 'recorded' | 'unchanged' | 'invalid_token'

export function unsubscribeRoute (router: Router, deps: UnsubscribeRouteDeps): void {
  const { secrets, pool, log } = deps
  const counted = unsubscribeCounter(deps.metrics)

  /** The token's claim; a throw (the answer) when there are no secrets or it does not verify. */
  const claimOf = (token: string, post: boolean): UnsubscribeClaim => {
    if (secrets.length === 0) throw new GatewayError('NOT_CONFIGURED', { message: NO_SECRETS })
    const claim = verifyUnsubscribe(secrets, token)
    if (claim === null) {
      if (post) counted?.invalid_token.inc()
      throw new GatewayError('NOT_FOUND', { message: 'No such unsubscribe link.' })
    }
    return claim
  }

  const record = async (claim: UnsubscribeClaim): Promise<Reply> => {
    if (pool === null) throw new GatewayError('NOT_CONFIGURED', { message: NO_DATABASE })
    const consentDate = Math.floor(Date.now() / 1000)
    const consents = RECIPIENT_TYPES.map((recipientType): ValidConsent =>
      ({ iysCode: claim.iysCode, brandCode: claim.brandCode, recipient: claim.recipient, recipientType, type: 'EPOSTA', status: 'RET', source: 'HS_EPOSTA', consentDate }))
    let applied = 0
    try {
      applied = await writeCitizenRejections(pool, consents, UNSUBSCRIBE_ACTOR)
    } catch (err) {
      // A deadlock or an overloaded Postgres is worth the mail provider's retry as much as an unreachable one.
      if (isTransientDbError(err)) throw new GatewayError('DATABASE_UNAVAILABLE', { cause: err, retryAfterS: 5 })
      throw err
    }
    const result: Result = applied > 0 ? 'recorded' : 'unchanged'
    counted?.[result].inc()
    // Never the address: the ledger has it (actor 'unsubscribe').
    log.info({ iysCode: claim.iysCode, brandCode: claim.brandCode, result }, 'one-click unsubscribe')
    return DONE
  }

  // Read as bytes (the router's post() takes JSON only), as the token endpoint reads its form (oauth-route.ts).
  router.handle('post', UNSUBSCRIBE_PATH, 'consents', (ex, req) => {
    // uWS request objects are valid only now; a token is base64url, so there is nothing to percent-decode.
    const token = req.getParameter(0) ?? ''
    const contentType = req.getHeader('content-type')
    readBody(ex, req, MAX_BODY, (err, body) => {
      if (err !== null) { router.fail(ex, 'consents', err); return }
      let answer: Promise<Reply>
      try {
        const claim = claimOf(token, true)
        if (!isOneClick(body!, contentType)) {
          throw new GatewayError('INVALID_FIELD', { location: 'List-Unsubscribe', message: `The body must be ${ONE_CLICK} (RFC 8058).` })
        }
        answer = record(claim)
      } catch (e) {
        router.fail(ex, 'consents', e)
        return
      }
      answer.then(r => { router.reply(ex, 'consents', r) }, (e: unknown) => { router.fail(ex, 'consents', e) })
    })
  }, { auth: 'public' }) // the token is the authority (RFC 8058: no login, no cookies)

  router.get(UNSUBSCRIBE_PATH, 'other', (_, req) => {
    claimOf(req.params[0]!, false)
    return CONFIRM
  }, { params: 1, auth: 'public' })
}

/**
 * Whether a POST body asks for the one-click unsubscribe: exactly that text whatever the Content-Type, or a form
 * (application/x-www-form-urlencoded, multipart/form-data) with List-Unsubscribe=One-Click among its fields.
 */
export function isOneClick (body: Buffer, contentType: string): boolean {
  const text = body.toString('utf8')
  if (text.trim() === ONE_CLICK) return true
  const type = contentType.split(';', 1)[0]!.trim().toLowerCase()
  if (type === 'application/x-www-form-urlencoded') return new URLSearchParams(text.trim()).getAll('List-Unsubscribe').includes('One-Click')
  if (type === 'multipart/form-data') return multipartValues(text, contentType, 'List-Unsubscribe').includes('One-Click')
  return false
}

/** The values of the multipart/form-data fields named `name` (RFC 7578); parts with a filename are not fields. */
function multipartValues (text: string, contentType: string, name: string): string[] {
  const m = /;\s*boundary=(?:"([^"]+)"|([^\s;]+))/i.exec(contentType)
  const boundary = m?.[1] ?? m?.[2]
  if (boundary === undefined) return []
  const out: string[] = []
  for (const part of text.split('--' + boundary)) {
    const split = part.indexOf('\r\n\r\n')
    if (split < 0) continue
    const head = part.slice(0, split)
    const disposition = /^content-disposition:\s*form-data\s*;(.*)$/im.exec(head)?.[1] ?? ''
    if (/\bfilename\*?=/i.test(disposition)) continue
    const field = /(?:^|;)\s*name="([^"]*)"/i.exec(disposition)?.[1] ?? /(?:^|;)\s*name=([^;\s]+)/i.exec(disposition)?.[1]
    if (field === name) out.push(part.slice(split + 4).replace(/\r\n$/, ''))
  }
  return out
}

/** iys_unsubscribes_total{result}, pre-bound; registered once per registry. */
function unsubscribeCounter (metrics: Pick<Metrics, 'registry'> | undefined): Record<Result, client.Counter.Internal> | null {
  if (metrics === undefined) return null
  const name = 'iys_unsubscribes_total'
  const counter = (metrics.registry.getSingleMetric(name) as client.Counter<'result'> | undefined) ??
    new client.Counter({ name, help: 'One-click unsubscribe POSTs by result: recorded (a RET was written), unchanged (the rules refused it: RET already, or no record), invalid_token', labelNames: ['result'], registers: [metrics.registry] })
  return { recorded: counter.labels('recorded'), unchanged: counter.labels('unchanged'), invalid_token: counter.labels('invalid_token') }
}
