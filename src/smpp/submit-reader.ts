// A provider's submit_sm read by hand, for the front end's sessions (the session's `decode` hook, server.ts).
//
// Hand-written: node-smpp's decode (GSM/UCS2 text we never read) was 7.4 of 37.5 µs of front-end CPU per submit_sm (bench smpp profile).
//
// The result is a PDU (node-smpp's prototype: isResponse(), response()) with the same fields as node-smpp's decode,
// except:
//   short_message, message_payload          the raw octets (concat.ts reads a UDH from raw octets or a decoded body)
//   schedule_delivery_time, validity_period the strings as sent (node-smpp makes Dates of them; nobody reads them)
// Anything this reader is not sure it reads as node-smpp would returns null, and the session decodes the PDU with
// node-smpp as before, which also refuses what node-smpp refuses (generic_nack): any command but submit_sm, mandatory
// fields cut short, a TLV running past the PDU, a known TLV node-smpp filters or collects (callback_num, …), an
// integer TLV of the wrong length, a relative time shorter than node-smpp can parse, a UDH whose length octet runs past
// its message (node-smpp and concat.ts's raw reading differ there).

import smpp, { PDU } from 'smpp'
import { UDHI } from './concat.js'

const SUBMIT_SM = 0x00000004
const HEADER = 16

interface TlvDef { id: number, tag: string, type: { read: (b: Buffer, at: number, len: number) => unknown, size: (v?: unknown) => number }, multiple?: boolean, filter?: unknown }

// node-smpp's TLV table by id (not in its typed surface); read once.
const TLVS_BY_ID = (smpp as unknown as { tlvsById: Record<number, TlvDef> }).tlvsById
const TLV_MAP: Readonly<Record<string, string>> = (smpp.commands.submit_sm as { tlvMap?: Record<string, string> }).tlvMap ?? {}
const { int8, int16, int32 } = smpp.types.tlv as Record<'int8' | 'int16' | 'int32', unknown>
const INT_SIZE = new Map<unknown, number>([[int8, 1], [int16, 2], [int32, 4]])

/** The decoded submit_sm, or null when node-smpp should decode it (see above). Never throws. */
export function readSubmitSm (bytes: Buffer): PDU | null {
  try {
    return read(bytes)
  } catch {
    return null
  }
}

function read (b: Buffer): PDU | null {
  const length = b.length
  if (length < HEADER || b.readUInt32BE(4) !== SUBMIT_SM || b.readUInt32BE(0) !== length) return null
  let at = HEADER
  // A C string up to its NUL (none within the PDU: null, node-smpp's decode reads on to the end).
  const cstring = (): string | null => {
    const nul = b.indexOf(0, at)
    if (nul < 0) return null
    const s = nul === at ? '' : b.toString('ascii', at, nul)
    at = nul + 1
    return s
  }
  const pdu = Object.create(PDU.prototype) as PDU
  pdu.command_length = length
  pdu.command_id = SUBMIT_SM
  pdu.command_status = b.readUInt32BE(8)
  pdu.sequence_number = b.readUInt32BE(12)
  pdu.command = 'submit_sm'
  const serviceType = cstring()
  if (serviceType === null || at + 2 > length) return null
  pdu.service_type = serviceType
  pdu.source_addr_ton = b[at++]
  pdu.source_addr_npi = b[at++]
  const source = cstring()
  if (source === null || at + 2 > length) return null
  pdu.source_addr = source
  pdu.dest_addr_ton = b[at++]
  pdu.dest_addr_npi = b[at++]
  const destination = cstring()
  if (destination === null || at + 3 > length) return null
  pdu.destination_addr = destination
  const esmClass = b[at++]!
  pdu.esm_class = esmClass
  pdu.protocol_id = b[at++]
  pdu.priority_flag = b[at++]
  const schedule = cstring()
  if (schedule === null || !timeOk(schedule)) return null
  pdu.schedule_delivery_time = schedule
  const validity = cstring()
  if (validity === null || !timeOk(validity) || at + 5 > length) return null
  pdu.validity_period = validity
  pdu.registered_delivery = b[at++]
  pdu.replace_if_present_flag = b[at++]
  pdu.data_coding = b[at++]
  pdu.sm_default_msg_id = b[at++]
  const smEnd = at + 1 + b[at]!
  if (smEnd > length) return null
  const shortMessage = b.subarray(at + 1, smEnd)
  pdu.short_message = shortMessage
  at = smEnd
  while (at + 4 <= length) {
    const id = b.readUInt16BE(at)
    const len = b.readUInt16BE(at + 2)
    const end = at + 4 + len
    if (end > length) return null
    const def = TLVS_BY_ID[id]
    if (def === undefined) {
      pdu[id] = b.subarray(at + 4, end)
    } else {
      if (def.filter !== undefined && def.tag !== 'message_payload') return null
      if (def.multiple === true) return null
      const size = INT_SIZE.get(def.type)
      if (size !== undefined && size !== len) return null
      pdu[TLV_MAP[def.tag] ?? def.tag] = def.tag === 'message_payload' ? b.subarray(at + 4, end) : def.type.read(b, at + 4, len)
    }
    at = end
  }
  if ((esmClass & UDHI) !== 0) {
    // The body concat.ts will read the UDH from: short_message, or message_payload when short_message is empty.
    const body: unknown = shortMessage.length > 0 ? shortMessage : pdu.message_payload
    if (body instanceof Uint8Array && body.length > 0 && 1 + body[0]! > body.length) return null
  }
  return pdu
}

/** False for a relative time (…R) too short for node-smpp's decode, which throws on it (the PDU is refused). */
const timeOk = (t: string): boolean => t.length >= 12 || t.charCodeAt(t.length - 1) !== 0x52 /* R */
