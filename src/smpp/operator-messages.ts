// What an operator sends us on our carrier binds (deliver_sm): delivery receipts go back to the system_id that
// submitted the message, MO messages to the tenant that owns the number they were sent to. An MO whose text is a
// rejection keyword (mo.ts: RET, IPTAL, RET <brand>) is first recorded as a RET (source HS_MESAJ) through the same
// write path as the consent API — ledger, NOTIFY, every gateway's filter within a second — for the brand(s) the
// tenant mapped that number to (the originator table). Throwing makes the carrier answer ESME_RX_T_APPN, so the
// operator sends it again later: that is what happens when Postgres cannot take the RET.
//
// Decisions written down here:
// - `RET <word>`: the word picks the brand among the number's owners by the tenant's originator table (an
//   alphanumeric sender id such as ACME) or by brand code; a word that picks none applies the RET to every brand
//   behind the number (a citizen's rejection is never dropped for a spelling we do not know).
// - The MO says nothing of the recipient type: the RET is written for BIREYSEL and TACIR both, as a citizen's
//   rejection (writeCitizenRejections: also where there is no record yet, so a TACIR recipient is not left reachable).

import type { PDU } from 'smpp'
import type { KeyStore } from '../auth/key-store.js'
import type { ValidConsent } from '../domain/consent.js'
import { isRecipientError } from '../domain/normalize.js'
import type { RecipientType } from '../domain/vocabulary.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { destinationOf } from './address.js'
import { moText, rejectionOf } from './mo.js'
import type { ReceiptStore } from './receipts.js'

/** esm_class bits 2–5: the message type; 0 is a plain (MO) message, anything else a receipt or an acknowledgement. */
const ESM_TYPE_MASK = 0x3c
const RECEIPT_ID = /(?:^|\s)id:(\S+)/i
const RECIPIENT_TYPES: readonly RecipientType[] = ['BIREYSEL', 'TACIR']

export interface OperatorMessagesDeps {
  receipts: Pick<ReceiptStore, 'ownerOf'>
  /** Queues an encoded deliver_sm for a target and hands it to a bound receiver (SmppServer.deliver). */
  deliver: (target: string, pdu: Buffer) => Promise<void>
  keys: Pick<KeyStore, 'originatorOwners' | 'originatorBrand'>
  /** A citizen's rejection through the consent write path (store/consent-store.ts); null without DATABASE_URL. */
  writeRejections: ((consents: readonly ValidConsent[], actor: string) => Promise<number>) | null
  metrics: Metrics
  log: Logger
  now?: () => number
}

export class OperatorMessages {
  private readonly deps: OperatorMessagesDeps

  constructor (deps: OperatorMessagesDeps) { this.deps = deps }

  /** One deliver_sm from an operator; resolves once it is routed (and a rejection recorded). */
  /** `bytes`: the PDU as the operator sent it, handed on unchanged (re-encoding would change its text). */
  async onDeliver (pdu: PDU, bytes: Buffer): Promise<void> {
    if (((pdu.esm_class ?? 0) & ESM_TYPE_MASK) !== 0) await this.receipt(pdu, bytes)
    else await this.mo(pdu, bytes)
  }

  private async receipt (pdu: PDU, bytes: Buffer): Promise<void> {
    const id = receiptIdOf(pdu)
    const owner = id === null ? null : await this.deps.receipts.ownerOf(id)
    if (owner === null) { this.deps.metrics.smppReceipts.inc({ result: id === null ? 'no_message_id' : 'unknown_message' }); return }
    await this.deps.deliver('sys:' + owner, bytes)
    this.deps.metrics.smppReceipts.inc({ result: 'routed' })
  }

  private async mo (pdu: PDU, bytes: Buffer): Promise<void> {
    const to = String(pdu.destination_addr ?? '')
    const owners = this.deps.keys.originatorOwners(to)
    if (owners.length === 0) { this.deps.metrics.smppMo.inc({ result: 'unrouted' }); return }
    const rejection = rejectionOf(moText(pdu))
    if (rejection !== null) await this.reject(pdu, owners, rejection.brand)
    for (const iysCode of new Set(owners.map(o => o.iysCode))) await this.deps.deliver('tenant:' + iysCode, bytes)
    this.deps.metrics.smppMo.inc({ result: 'routed' })
  }

  private async reject (pdu: PDU, owners: readonly { iysCode: string, brandCode: string }[], word: string | null): Promise<void> {
    const recipient = destinationOf(String(pdu.source_addr ?? ''), pdu.source_addr_ton ?? 0, pdu.source_addr_npi ?? 0)
    if (isRecipientError(recipient)) { this.deps.metrics.smppMo.inc({ result: 'rejection_bad_sender' }); return }
    let brands = owners
    if (word !== null) {
      const picked = owners.filter(o => o.brandCode === word || this.deps.keys.originatorBrand(o.iysCode, word) === o.brandCode)
      if (picked.length > 0) brands = picked
    }
    if (this.deps.writeRejections === null) {
      this.deps.metrics.smppMo.inc({ result: 'rejection_not_recorded' })
      this.deps.log.error({ brands: brands.map(b => b.brandCode) }, 'an MO rejection (RET) arrived and this gateway has no DATABASE_URL to record it')
      return
    }
    const consentDate = Math.floor((this.deps.now?.() ?? Date.now()) / 1000)
    const consents: ValidConsent[] = []
    for (const b of brands) {
      for (const recipientType of RECIPIENT_TYPES) consents.push({ iysCode: b.iysCode, brandCode: b.brandCode, recipient, recipientType, type: 'MESAJ', status: 'RET', source: 'HS_MESAJ', consentDate })
    }
    const applied = await this.deps.writeRejections(consents, 'smpp-mo')
    this.deps.metrics.smppMo.inc({ result: applied > 0 ? 'rejection_recorded' : 'rejection_changed_nothing' })
    this.deps.log.info({ brands: brands.map(b => b.brandCode), applied }, 'MO rejection keyword recorded as RET')
  }
}

/** The operator's message id a receipt is about: the receipted_message_id TLV, else the `id:` of its text. */
export function receiptIdOf (pdu: PDU): string | null {
  const tlv = pdu.receipted_message_id
  if (typeof tlv === 'string' && tlv !== '') return tlv
  const sm = pdu.short_message
  const text = typeof sm === 'string' ? sm : typeof sm?.message === 'string' ? sm.message : Buffer.isBuffer(sm) ? sm.toString('latin1') : Buffer.isBuffer(sm?.message) ? sm.message.toString('latin1') : ''
  const m = RECEIPT_ID.exec(text)
  return m === null ? null : m[1]!
}
