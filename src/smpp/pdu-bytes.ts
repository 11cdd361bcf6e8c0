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
