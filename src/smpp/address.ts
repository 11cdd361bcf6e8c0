// SMPP addresses (destination_addr, or an MO's source_addr) to the one E.164 form every other path uses
// (domain/normalize.ts), read the way the operator will read them: the type of number (TON) says how the digits are
// meant, so the decision is about the number the message is delivered to, not a guess at what the sender meant.
//
//   TON 1 international  digits with the country code, a leading + tolerated: 905321112233, +905321112233
//   TON 2 national       a Turkish national number, with or without the trunk 0: 5321112233, 05321112233
//   TON 0 unknown        whatever normalizePhone accepts: 05…, 5…, 90…, +90…, 0090…, other countries with +
//   anything else        (alphanumeric 5, network specific 3, subscriber 4, abbreviated 6...) → BAD_PHONE
//   empty                → MISSING_RECIPIENT, whatever the TON
//
// TON 1 and 2 take plain digits only: a number the operator reads as international or national cannot carry
// separators or a different prefix, and reading `05…` as international would decide for a number nobody is sent to.
// NPI must be unknown (0), ISDN/E.164 (1) or national (8): the others (data, telex, land mobile/IMSI, internet,
// WAP...) do not address a phone, so no consent can be looked up for them.

import { BAD_PHONE, MISSING_RECIPIENT, normalizePhone, type RecipientError } from '../domain/normalize.js'

/** SMPP 3.4 §5.2.5 type of number. */
export const TON = Object.freeze({
  UNKNOWN: 0, INTERNATIONAL: 1, NATIONAL: 2, NETWORK_SPECIFIC: 3, SUBSCRIBER: 4, ALPHANUMERIC: 5, ABBREVIATED: 6
} as const)

/** SMPP 3.4 §5.2.6 numbering plan indicators we read as a phone number's. */
export const NPI = Object.freeze({ UNKNOWN: 0, ISDN: 1, NATIONAL: 8 } as const)

// The common case (TON 1, a Turkish number) answered without normalizePhone's trims, slices and replaces.
const TR_INTERNATIONAL = /^90[2-58]\d{9}$/
const INTERNATIONAL = /^\+?\d{1,20}$/
// A Turkish national significant number (10 digits: 5xx mobile, 2xx–4xx geographic, 8xx), the trunk 0 optional.
const TR_NATIONAL = /^0?([2-58]\d{9})$/

/** The destination as E.164 (`+905321112233`), or the İYS recipient error (H114, H121, H160) that refuses it. */
export function destinationOf (addr: string, ton: number, npi: number): string | RecipientError {
  if (addr.length === 0) return MISSING_RECIPIENT
  if (npi !== NPI.UNKNOWN && npi !== NPI.ISDN && npi !== NPI.NATIONAL) return BAD_PHONE
  switch (ton) {
    case TON.INTERNATIONAL:
      if (TR_INTERNATIONAL.test(addr)) return '+' + addr
      if (!INTERNATIONAL.test(addr)) return BAD_PHONE
      return normalizePhone(addr.charCodeAt(0) === 43 /* + */ ? addr : '+' + addr)
    case TON.NATIONAL: {
      const m = TR_NATIONAL.exec(addr)
      return m === null ? BAD_PHONE : '+90' + m[1]!
    }
    case TON.UNKNOWN:
      return normalizePhone(addr)
    default:
      return BAD_PHONE
  }
}
