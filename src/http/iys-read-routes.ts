// The mirrored İYS read endpoints, answered from our own Postgres (the ledger and the brand registry) with İYS's
// paths, parameters, answers and error codes (../shared/reference/iys-openapi-3.2.0.json):
//   GET  /sps/{iysCode}/brands/{brandCode}/consents/changes   İzin Hareketi Sorgulama (Pull): after, limit ≤ 1000, source
//   POST /sps/{iysCode}/brands/{brandCode}/consents/history   İzin Geçmişi Listeleme: newest first, limit ≤ 100, offset
//   GET  /sps/{iysCode}/brands                                Marka Listeleme: the caller's brands with consent counts
// Where we differ from İYS on purpose: changes are listed as soon as they commit (İYS holds back the last hour), and a
// cursor older than İYS's 7-day window still continues where it stopped (İYS would start the window over).

import { requireTenant } from '../auth/principal.js'
import { absent } from '../domain/consent.js'
import { errorItem, GatewayError, type ErrorItem } from '../domain/errors.js'
import { isConsentType, isRecipientType } from '../domain/vocabulary.js'
import { changesAfter, CHANGES_WINDOW_S, decodeAfter, firstSeqSince, historyOf, tenantBrands, type ChangeOrigin } from '../store/iys-reads.js'
import type { Pool } from '../store/pg.js'
import { checkRecipient, iysError, pathCode, refusal } from '../domain/iys-validation.js'
import { iysPath } from './params.js'
import { json, type Reply, type Router } from './router.js'

const SP = '/sps/:iysCode/brands/:brandCode'
/** İYS: `limit` of the changes pull, default and most. */
const CHANGES_LIMIT = 1000
/** İYS: `limit` of the history, default and most. */
const HISTORY_LIMIT = 100
/** The 204 of a pull with nothing (more) to list. */
const NO_CONTENT: Reply = Object.freeze({ status: 204, body: '' })

/** A whole number from a query parameter (perhaps beyond the safe integers: too large either way), or null. */
const wholeNumber = (text: string): number | null => /^\d+$/.test(text) ? Number(text) : null

export function iysReadRoutes (router: Router, pool: Pool): void {
  const READ = { auth: { scopes: ['consents:read'] }, iys: true } as const

  // İzin Hareketi Sorgulama (Pull): the brand's changes from our ledger in seq (commit) order, so that following
  // `after` lists every change exactly once, including those committed after the last page.
  router.get(`${SP}/consents/changes`, 'consents', async (_, req) => {
    const { brandCode } = iysPath(req)
    const q = new URLSearchParams(req.query)
    const errors: ErrorItem[] = []
    const source = q.get('source') ?? 'IYS' // İYS's default: the recipients' own changes
    if (source !== 'HS' && source !== 'IYS') errors.push(errorItem('H506', 'source', source))
    const limitText = q.get('limit')
    const limit = limitText === null ? CHANGES_LIMIT : wholeNumber(limitText)
    if (limit === null) errors.push(errorItem('H183', 'limit', limitText))
    else if (limit === 0) errors.push(errorItem('H187', 'limit', limitText))
    else if (limit > CHANGES_LIMIT) errors.push(errorItem('H507', 'limit', limitText))
    const after = q.get('after') ?? ''
    const cursor = after === '' ? null : decodeAfter(brandCode, after)
    if (after !== '' && cursor === null) {
      errors.push(errorItem('INVALID_FIELD', 'after', after, 'after must be the value a previous answer gave (<epoch seconds>_<id>).'))
    }
    if (errors.length > 0) throw refusal(errors)
    let afterSeq: bigint
    if (cursor !== null && 'seq' in cursor) afterSeq = cursor.seq
    else {
      // No cursor: İYS's window, the last 7 days. A foreign cursor (İYS's own, from before the base URL changed):
      // from its moment on, within the window; changes of that very second may be listed again.
      const windowStart = Math.floor(Date.now() / 1000) - CHANGES_WINDOW_S
      const since = cursor === null ? windowStart : Math.max(windowStart, cursor.sinceEpoch)
      afterSeq = await firstSeqSince(pool, new Date(since * 1000)) - 1n
    }
    const page = await changesAfter(pool, brandCode, afterSeq, source as ChangeOrigin, limit!)
    if (page.after === null) return NO_CONTENT
    return json(200, { after: page.after, list: page.list })
  }, { params: 2, query: true, ...READ })

  // İzin Geçmişi Listeleme: one recipient's changes, newest consentDate first, a page of `limit` from `offset`.
  router.post(`${SP}/consents/history`, 'history', async (body, req) => {
    const { brandCode } = iysPath(req)
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new GatewayError('H097')
    const b = body as Record<string, unknown>
    const q = new URLSearchParams(req.query)
    const errors: ErrorItem[] = []
    const limitText = q.get('limit')
    const limit = limitText === null ? HISTORY_LIMIT : wholeNumber(limitText)
    if (limit === null) errors.push(errorItem('H183', 'limit', limitText))
    else if (limit === 0) errors.push(errorItem('H187', 'limit', limitText))
    else if (limit > HISTORY_LIMIT) errors.push(errorItem('H186', 'limit', limitText))
    const offsetText = q.get('offset')
    const offset = offsetText === null ? 0 : wholeNumber(offsetText)
    if (offset === null || !Number.isSafeInteger(offset)) errors.push(errorItem('H182', 'offset', offsetText))
    const { type, recipientType } = b
    if (absent(type)) errors.push(errorItem('H111', 'type'))
    else if (!isConsentType(type)) errors.push(iysError('H117', ['type'], type))
    if (absent(recipientType)) errors.push(errorItem('H170', 'recipientType'))
    else if (!isRecipientType(recipientType)) errors.push(iysError('H116', ['recipientType'], recipientType))
    // The recipient is judged for its channel; without a valid type only its presence can be.
    const checked = checkRecipient(b.recipient, isConsentType(type) ? type : null, true)
    const recipient = 'recipient' in checked ? checked.recipient : null
    if (!('recipient' in checked)) errors.push(...checked.errors)
    // (the checks after `errors.length > 0` only narrow the types: any of them failing has put an error in the list)
    if (errors.length > 0 || !isConsentType(type) || !isRecipientType(recipientType) || recipient === null) throw refusal(errors)
    const page = await historyOf(pool, brandCode, type, recipientType, recipient, limit!, offset!)
    return json(200, { list: page.list, pagination: { totalCount: page.totalCount, pageSize: page.list.length, offset } })
  }, { params: 2, query: true, ...READ })

  // Marka Listeleme: the brands this key may act for (a key limited to some brands sees only those), with the
  // counts of their current consents. We keep no retailers (0) and no main/sub-brand flag (`master` is left out).
  router.get('/sps/:iysCode/brands', 'consents', async (_, req) => {
    const iysCode = pathCode(req.params[0]!, 'iysCode')
    requireTenant(req.principal, iysCode)
    const rows = await tenantBrands(pool, iysCode, req.principal.brands === 'any' ? null : [...req.principal.brands])
    return json(200, rows.map(r => ({
      brandCode: r.brandCode,
      stats: { consents: { approval: r.approval, rejection: r.rejection, total: r.total }, retailers: { total: 0 } },
      name: r.name
    })))
  }, { params: 1, ...READ })
}
