// The evidence ledger on our own /v1 routes: a recipient's consent history, its state at a moment, and the decisions
// taken for it (JSON, or printable HTML for a complaint file).

import { requireBrand, type Principal } from '../auth/principal.js'
import { evidenceHtml, findEvidence } from '../audit/evidence.js'
import { GatewayError } from '../domain/errors.js'
import type { ConsentType, RecipientType } from '../domain/vocabulary.js'
import { consentHistory, consentStateAt } from '../store/consent-queries.js'
import type { Pool } from '../store/pg.js'
import { keyParams, recipientFor } from './params.js'
import { json, type Router } from './router.js'

export function ledgerRoutes (router: Router, pool: Pool): void {
  const READ = { auth: { scopes: ['consents:read'] } } as const
  // Evidence ledger
  router.get('/v1/consents/history', 'history', async (_, req) => {
    const q = ledgerQuery(req.query, req.principal)
    return json(200, { ...q.echo, history: await consentHistory(pool, q.brandCode, q.type, q.recipientType, q.recipient) })
  }, { query: true, ...READ })

  router.get('/v1/evidence', 'history', async (_, req) => {
    const q = ledgerQuery(req.query, req.principal)
    const p = new URLSearchParams(req.query)
    const window = { from: dateParam(p, 'from', new Date(0)), to: dateParam(p, 'to', new Date()) }
    const query = { brandCode: q.brandCode, type: q.type, recipientType: p.get('recipientType'), recipient: q.recipient, ...window }
    const entries = await findEvidence(pool, query)
    if ((req.headers.accept ?? '').includes('text/html')) return { status: 200, body: evidenceHtml(query, entries, new Date()), contentType: 'text/html; charset=utf-8' }
    return json(200, { ...q.echo, from: window.from.toISOString(), to: window.to.toISOString(), decisions: entries })
  }, { headers: ['accept'], query: true, auth: { scopes: ['evidence'] } })

  router.get('/v1/consents/state', 'history', async (_, req) => {
    const q = ledgerQuery(req.query, req.principal)
    const at = dateParam(new URLSearchParams(req.query), 'at', new Date())
    const entry = await consentStateAt(pool, q.brandCode, q.type, q.recipientType, q.recipient, at)
    return json(200, { ...q.echo, at: at.toISOString(), state: entry })
  }, { query: true, ...READ })
}

// A `+` in a query string means a space, so `at=2026-03-01T10:00:00+03:00` typed into curl or a browser arrives as
// "2026-03-01T10:00:00 03:00". A space before an hh:mm offset at the end of a date-time can only have been a `+`
// (the same goes for /v1/evidence's from and to).
const PLUS_AS_SPACE = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$/

/** A date or date-time query parameter (ISO 8601), `def` when absent; `+` sent unencoded in the offset is accepted. */
function dateParam (p: URLSearchParams, name: string, def: Date): Date {
  const raw = p.get(name)
  if (raw === null) return def
  const text = raw.replace(PLUS_AS_SPACE, '$1+$2')
  const d = new Date(text)
  if (Number.isNaN(d.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(text)) {
    throw new GatewayError('INVALID_FIELD', { location: name, value: text, message: `${name} must be an ISO 8601 date or date-time, e.g. 2026-03-01T10:00:00+03:00 (%2B03:00 in a URL).` })
  }
  return d
}

function ledgerQuery (query: string, principal: Principal): { brandCode: string, type: ConsentType, recipientType: RecipientType, recipient: string, echo: Record<string, string> } {
  const p = new URLSearchParams(query)
  const { brandCode, type, recipientType } = keyParams(p)
  requireBrand(principal, brandCode, null, false) // a tenant reads only its own brands' records
  const recipient = recipientFor(p.get('recipient') ?? undefined, type)
  if (typeof recipient !== 'string') throw new GatewayError(recipient.code, { location: 'recipient', message: recipient.message })
  return { brandCode, type, recipientType, recipient, echo: { brandCode, type, recipientType, recipient } }
}
