// A provider's submit_sm goes on to the operator byte for byte (its coding, UDH and TLVs exactly as written), less
// our own TLVs (tags.ts): they are meant for us, and an SMSC may refuse optional parameters it does not know.

/** The offset of the first TLV of an encoded submit_sm (the end of its mandatory fields), or -1 if it is cut short. */
export function submitSmTlvOffset (pdu: Buffer): number {
  let at = 16
  const cstring = (): boolean => { const nul = pdu.indexOf(0, at); if (nul < 0) return false; at = nul + 1; return true }
  if (!cstring()) return -1 // service_type
  at += 2 // source_addr_ton, source_addr_npi
  if (!cstring()) return -1 // source_addr
  at += 2 // dest_addr_ton, dest_addr_npi
  if (!cstring()) return -1 // destination_addr
  at += 3 // esm_class, protocol_id, priority_flag
  if (!cstring() || !cstring()) return -1 // schedule_delivery_time, validity_period
  at += 4 // registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id
  if (at >= pdu.length) return -1
  at += 1 + pdu[at]! // sm_length, short_message
  return at <= pdu.length ? at : -1
}

/** The encoded submit_sm without the TLVs whose tags are in `drop` (a copy; the length field rewritten). */
export function withoutTlvs (pdu: Buffer, drop: ReadonlySet<number>): Buffer {
  const start = submitSmTlvOffset(pdu)
  if (start < 0) return Buffer.from(pdu)
  const parts: Buffer[] = [pdu.subarray(0, start)]
  let at = start
  while (at + 4 <= pdu.length) {
    const tag = pdu.readUInt16BE(at)
    const end = Math.min(pdu.length, at + 4 + pdu.readUInt16BE(at + 2))
    if (!drop.has(tag)) parts.push(pdu.subarray(at, end))
    at = end
  }
  const out = Buffer.concat(parts)
  out.writeUInt32BE(out.length, 0)
  return out
}

/** One destination of a submit_multi, as node-smpp decodes it (dest_flag 1: an SME address; 2: a list name). */
export interface MultiDestination { dest_addr_ton?: number, dest_addr_npi?: number, destination_addr?: string, dl_name?: string }

/**
 * The submit_sm a submit_multi makes for one SME destination: the same bytes — originator, esm_class, coding,
 * short_message, TLVs — around that one destination, so that each is decided and forwarded as a submit_sm is.
 * null when the submit_multi is cut short.
 */
export function submitSmForDestination (multi: Buffer, ton: number, npi: number, addr: string): Buffer | null {
  let at = 16
  const cstring = (): boolean => { const nul = multi.indexOf(0, at); if (nul < 0) return false; at = nul + 1; return true }
  if (!cstring()) return null // service_type
  at += 2
  if (!cstring()) return null // source_addr
  const head = multi.subarray(16, at)
  if (at >= multi.length) return null
  let dests = multi[at++]!
  while (dests-- > 0) {
    const flag = multi[at++]
    if (flag === 1) at += 2
    else if (flag !== 2) return null
    if (!cstring()) return null
  }
  if (at > multi.length) return null
  const dest = Buffer.concat([Buffer.from([ton & 0xff, npi & 0xff]), Buffer.from(addr, 'latin1'), Buffer.from([0])])
  const out = Buffer.concat([multi.subarray(0, 16), head, dest, multi.subarray(at)])
  out.writeUInt32BE(out.length, 0)
  out.writeUInt32BE(0x00000004, 4) // submit_sm
  return out
}
