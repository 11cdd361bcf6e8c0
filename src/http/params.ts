// Parameters shared by the GET/streaming endpoints (ledger, evidence, scrub) and the consent queries: brandCode,
// type, recipientType and a recipient, with the same error codes as the JSON bodies.

import { requireBrand } from '../auth/principal.js'
import { errorItem, GatewayError, type ErrorItem } from '../domain/errors.js'
import { pathCodes } from '../domain/iys-validation.js'
import { checkTypeFit, normalizeRecipient } from '../domain/normalize.js'
import { canonicalCode, isConsentType, isRecipientType, type ConsentType, type RecipientType } from '../domain/vocabulary.js'
import type { RequestFacts } from './router.js'

export function keyParams (p: URLSearchParams): { brandCode: string, type: ConsentType, recipientType: RecipientType } {
  const brandCode = canonicalCode(p.get('brandCode'))
  if (brandCode === null) throw new GatewayError('INVALID_BRAND_CODE', { location: 'brandCode', value: p.get('brandCode') })
  const type = p.get('type')
  if (type === null) throw new GatewayError('H111', { location: 'type' })
  if (!isConsentType(type)) throw new GatewayError('H117', { location: 'type', value: type })
  const recipientType = p.get('recipientType') ?? 'BIREYSEL'
  if (!isRecipientType(recipientType)) throw new GatewayError('H116', { location: 'recipientType', value: recipientType })
  return { brandCode, type, recipientType }
}

/** A recipient of `type`, normalised; or the İYS error item that refuses it. */
export function recipientFor (raw: unknown, type: ConsentType): string | ErrorItem {
  if (raw === undefined || raw === null || raw === '') return errorItem('H114', 'recipient')
  const r = normalizeRecipient(raw)
  if (typeof r !== 'string') return errorItem(r.code === 'H160' ? 'H166' : r.code, 'recipient', undefined, r.code === 'H160' ? undefined : r.message)
  const misfit = checkTypeFit(r, type)
  return misfit === null ? r : errorItem('H464', 'recipient', undefined, misfit.message)
}

/** The İYS path's iysCode and brandCode (H190/H191), which the caller's key must act for (H353). */
export function iysPath (req: RequestFacts): { iysCode: string, brandCode: string } {
  const codes = pathCodes(req.params[0] ?? '', req.params[1] ?? '')
  requireBrand(req.principal, codes.brandCode, codes.iysCode, true)
  return codes
}
