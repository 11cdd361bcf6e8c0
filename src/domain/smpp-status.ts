// SMPP command_status values for the outcomes that do not forward a message, and SMPP_STATUS_MAP: what config.ts
// reads at start-up (so in domain/, which imports nothing of ours but errors). The defaults follow what ESMEs
// (Kannel, Jasmin, commercial platforms) do with each status: 0x66 ESME_RX_R_APPN is final ("receiver rejected, do
// not retry"), 0x64 ESME_RX_T_APPN and 0x58 ESME_RTHROTTLED are retried later. smpp/status.ts maps decisions and
// carrier outcomes onto these names.

import smpp from 'smpp'
import { CodedError } from './errors.js'

/** The command_status values the defaults use (SMPP 3.4 §5.1.3), named as node-smpp's defs.errors names them. */
export const SMPP_ERRORS = Object.freeze({
  ESME_ROK: 0x00,
  ESME_RSYSERR: 0x08,
  ESME_RINVSRCADR: 0x0a,
  ESME_RINVDSTADR: 0x0b,
  ESME_RMSGQFUL: 0x14,
  ESME_RINVESMCLASS: 0x43,
  ESME_RSUBMITFAIL: 0x45,
  ESME_RTHROTTLED: 0x58,
  ESME_RX_T_APPN: 0x64,
  ESME_RX_R_APPN: 0x66,
  ESME_RINVTLVVAL: 0xc4
} as const)

/**
 * Every outcome with a status. The first four are the policy's blocking reasons (policy/decide.ts REASONS);
 * CARRIER_* and NO_UPSTREAM are the upstream's outcomes when the message was not forwarded (carriers/upstream.ts).
 */
export const SMPP_OUTCOMES = [
  'REJECTED', 'NO_CONSENT', 'INVALID_RECIPIENT', 'STORE_UNAVAILABLE',
  'NO_BRAND', 'BAD_TLV', 'BAD_UDH',
  'CARRIER_REJECTED', 'CARRIER_FAILED', 'CARRIER_TIMEOUT', 'CARRIER_CIRCUIT_OPEN', 'NO_UPSTREAM', 'CARRIER_UNKNOWN',
  'THROTTLED', 'WINDOW_FULL'
] as const
export type SmppOutcome = (typeof SMPP_OUTCOMES)[number]
export type SmppStatusMap = Readonly<Record<SmppOutcome, number>>

const E = SMPP_ERRORS
export const DEFAULT_SMPP_STATUS: SmppStatusMap = Object.freeze({
  REJECTED: E.ESME_RX_R_APPN, // the recipient rejected this brand (RET): final
  NO_CONSENT: E.ESME_RX_R_APPN, // no consent on record (BIREYSEL, or TACIR by policy): final until one is given
  INVALID_RECIPIENT: E.ESME_RINVDSTADR, // destination_addr is not a phone number we can check
  STORE_UNAVAILABLE: E.ESME_RX_T_APPN, // consent could not be looked up (fail-closed): retry later
  NO_BRAND: E.ESME_RINVSRCADR, // no brand from the TLV, the originator table or the bind
  BAD_TLV: E.ESME_RINVTLVVAL, // one of our TLVs (tags.ts) or the sar_* TLVs is malformed
  BAD_UDH: E.ESME_RINVESMCLASS, // esm_class announces a UDH that is malformed (concat.ts)
  CARRIER_REJECTED: E.ESME_RSUBMITFAIL, // the operator refused it: final
  CARRIER_FAILED: E.ESME_RX_T_APPN, // every attempt failed: retry later
  CARRIER_TIMEOUT: E.ESME_RX_T_APPN,
  CARRIER_CIRCUIT_OPEN: E.ESME_RX_T_APPN,
  NO_UPSTREAM: E.ESME_RX_T_APPN,
  CARRIER_UNKNOWN: E.ESME_RSYSERR, // the operator may have it: a system error, so that the ESME does not blindly resend
  THROTTLED: E.ESME_RTHROTTLED, // the key's rate
  WINDOW_FULL: E.ESME_RMSGQFUL // the bind's window of outstanding requests
})

const isOutcome = (v: string): v is SmppOutcome => (SMPP_OUTCOMES as readonly string[]).includes(v)
const HEX = /^0x[0-9a-f]{1,8}$/i
const DEC = /^\d{1,10}$/

/**
 * Reads SMPP_STATUS_MAP (`REJECTED=0x66,NO_CONSENT=0x45,STORE_UNAVAILABLE=100`: outcome names, values in hex or
 * decimal) over the defaults, frozen. Refuses, naming the item, an unknown outcome (listing the known ones), a name
 * given twice, and a value that is not a number from 1 to 0xFFFFFFFF: 0 is ESME_ROK, which would tell the sender
 * that a message we did not forward was accepted. Empty text: the defaults.
 */
export function parseSmppStatusMap (text: string, base: SmppStatusMap = DEFAULT_SMPP_STATUS): SmppStatusMap {
  const out: Record<SmppOutcome, number> = { ...base }
  const given = new Set<string>()
  for (const raw of text.split(',')) {
    const item = raw.trim()
    if (item === '') continue
    const eq = item.indexOf('=')
    if (eq < 0) throw bad(item, 'is not NAME=STATUS')
    const name = item.slice(0, eq).trim().toUpperCase()
    const value = item.slice(eq + 1).trim()
    if (!isOutcome(name)) throw bad(item, `names no outcome (known: ${SMPP_OUTCOMES.join(', ')})`)
    if (given.has(name)) throw bad(item, `gives ${name} a second time`)
    given.add(name)
    const n = HEX.test(value) ? Number.parseInt(value.slice(2), 16) : DEC.test(value) ? Number(value) : NaN
    if (!(n >= 1 && n <= 0xffffffff)) throw bad(item, 'needs a command_status from 1 to 0xFFFFFFFF, in hex (0x66) or decimal (102); 0 is ESME_ROK')
    out[name] = n
  }
  return Object.freeze(out)
}

// No setting name in the text: config.ts prefixes it, as it does for every setting.
const bad = (item: string, why: string): CodedError => new CodedError('CONFIG_INVALID', `"${item}" ${why}`)

const NAMES = new Map<number, string>()
for (const [name, code] of Object.entries(smpp.errors)) if (!NAMES.has(code)) NAMES.set(code, name)
/** A command_status's ESME_ name (node-smpp's table), or its hex for a number SMPP 3.4 does not name: a bounded label. */
export const statusName = (status: number): string => NAMES.get(status) ?? '0x' + (status >>> 0).toString(16).padStart(8, '0')
