// Query-string parameters shared by the GET/streaming endpoints (ledger, evidence, scrub): brandCode, type and
// recipientType, with the same error codes as the JSON bodies.

import { GatewayError } from '../domain/errors.js'
import { canonicalCode, isConsentType, isRecipientType, type ConsentType, type RecipientType } from '../domain/vocabulary.js'

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
