// The front end's hand-written submit_sm reader (src/smpp/submit-reader.ts) against node-smpp's decode, on real PDUs
// built by node-smpp: every field the front end reads agrees (addresses, esm_class, data_coding, our TLVs, the sar_*
// TLVs, the concatenation data read from the raw octets), and what node-smpp refuses is refused the same way (the
// reader hands it back, node-smpp decodes and refuses it as before).

import { createRequire } from 'node:module'
import { once } from 'node:events'
import { createServer, connect, type Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { readSubmitSm } from '../src/smpp/submit-reader.js'
import { concatOf, messageBody } from '../src/smpp/concat.js'
import { messageTags, TAG_BRAND_CODE, TAG_COMMERCIAL, TAG_RECIPIENT_TYPE } from '../src/smpp/tags.js'
import { SmppSession } from '../src/wire/smpp-session.js'
import { encodeWithTlvs, withLength, type RawTlv } from './helpers/smpp-pdu.js'

interface Pdu { [field: string]: any, toBuffer (): Buffer, isResponse (): boolean, response (f?: Record<string, unknown>): Pdu }
interface Smpp { PDU: { new (command: string, fields?: Record<string, unknown>): Pdu, new (buffer: Buffer): Pdu }, errors: Record<string, number> }
const smpp = createRequire(import.meta.url)('smpp') as Smpp
type Body = Parameters<typeof messageBody>[0]

/** node-smpp's encoding, with raw TLVs ([tag, octets]) appended. */
const build = (fields: Record<string, unknown>, tlvs: RawTlv[] = [], command = 'submit_sm'): Buffer =>
  encodeWithTlvs(command, { sequence_number: 77, ...fields }, tlvs)


/** The encoded short_message / message_payload octets of a PDU, as sent. */
function rawField (bytes: Buffer, decoded: Pdu, field: 'short_message' | 'message_payload'): Buffer | undefined {
  if (field === 'short_message') {
    const again = new smpp.PDU(Buffer.from(bytes))
    return again.short_message === undefined ? undefined : shortMessageOctets(bytes)
  }
  return decoded.message_payload === undefined ? undefined : payloadOctets(bytes)
}

function shortMessageOctets (bytes: Buffer): Buffer {
  let at = 16
  const skip = (): void => { at = bytes.indexOf(0, at) + 1 }
  skip(); at += 2; skip(); at += 2; skip(); at += 3; skip(); skip(); at += 4
  return bytes.subarray(at + 1, at + 1 + bytes[at]!)
}

function payloadOctets (bytes: Buffer): Buffer | undefined {
  const sm = shortMessageOctets(bytes)
  let at = sm.byteOffset - bytes.byteOffset + sm.length
  let found: Buffer | undefined
  while (at + 4 <= bytes.length) {
    const tag = bytes.readUInt16BE(at)
    const len = bytes.readUInt16BE(at + 2)
    if (tag === 0x0424) found = bytes.subarray(at + 4, at + 4 + len)
    at += 4 + len
  }
  return found
}

/** What the front end makes of the concatenation data: the part, none, or the field it answers as malformed. */
function concatAnswer (p: Pdu): unknown {
  const r = concatOf(p)
  return r !== null && 'error' in r ? { malformed: r.field } : r
}

/** Fields node-smpp gives as text or Dates that the reader keeps as sent. */
const RAW_FIELDS = new Set(['short_message', 'message_payload', 'schedule_delivery_time', 'validity_period'])

/** Decodes with both and checks they agree on everything the front end reads. */
function agree (bytes: Buffer): Pdu {
  const ours = readSubmitSm(bytes) as unknown as Pdu | null
  const theirs = new smpp.PDU(Buffer.from(bytes))
  expect(ours).not.toBeNull()
  const o = ours!
  expect(o).toBeInstanceOf(smpp.PDU)
  expect(o.isResponse()).toBe(false)
  expect(o.response().command).toBe('submit_sm_resp')
  const keys = (p: Pdu): string[] => Object.keys(p).sort()
  expect(keys(o)).toEqual(keys(theirs))
  for (const k of keys(theirs)) {
    if (RAW_FIELDS.has(k)) continue
    expect(o[k], k).toEqual(theirs[k])
  }
  expect(o.short_message).toEqual(rawField(bytes, theirs, 'short_message'))
  expect(o.message_payload).toEqual(rawField(bytes, theirs, 'message_payload'))
  for (const t of ['schedule_delivery_time', 'validity_period']) {
    if (theirs[t] === '') expect(o[t]).toBe('')
    else expect(theirs[t]).toBeInstanceOf(Date)
  }
  expect(concatAnswer(o)).toEqual(concatAnswer(theirs))
  expect(messageTags(o)).toEqual(messageTags(theirs))
  expect(messageBody(o as Body) === undefined).toBe(messageBody(theirs as Body) === undefined)
  return o
}

const BASE = { source_addr_ton: 5, source_addr_npi: 0, source_addr: 'ACME', dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: '905321112233' }
const udh8 = (ref: number, total: number, part: number): Buffer => Buffer.from([0x05, 0x00, 0x03, ref, total, part])
const udh16 = (ref: number, total: number, part: number): Buffer => Buffer.from([0x06, 0x08, 0x04, ref >> 8, ref & 0xff, total, part])

describe('the submit_sm reader agrees with node-smpp', () => {
  it('on GSM, Turkish, UCS2 and binary texts', () => {
    expect(agree(build({ ...BASE, short_message: 'Bu hafta tum urunlerde indirim.' })).data_coding).toBe(1)
    agree(build({ ...BASE, data_coding: 0, short_message: 'Kampanya: {indirim} €5 [ret]' }))
    agree(build({ ...BASE, data_coding: 8, short_message: 'Şubat kampanyası: ğüşıöç İĞÜŞ' }))
    agree(build({ ...BASE, data_coding: 8, short_message: Buffer.from([0x00]) }))
    agree(build({ ...BASE, data_coding: 4, short_message: Buffer.from([0, 1, 2, 0xff, 0x80, 0x1b]) }))
    agree(build({ ...BASE, data_coding: 3, short_message: Buffer.from('çağrı', 'latin1') }))
  })

  it('on optional fields left empty, and on every mandatory field set', () => {
    const o = agree(build({ source_addr: '', destination_addr: '', short_message: '' }))
    expect(o.source_addr).toBe('')
    expect(o.short_message).toHaveLength(0)
    agree(build({
      ...BASE, service_type: 'CMT', esm_class: 3, protocol_id: 0x7f, priority_flag: 2, schedule_delivery_time: '261224120000000+',
      validity_period: '000001000000000R', registered_delivery: 1, replace_if_present_flag: 1, data_coding: 0, sm_default_msg_id: 9,
      short_message: 'x'
    }))
    expect(readSubmitSm(build({ ...BASE, short_message: 'hi' }))!.sequence_number).toBe(77)
  })

  it('on UDH concatenation, 8- and 16-bit references, with other IEs around', () => {
    const o = agree(build({ ...BASE, esm_class: 0x40, data_coding: 0, short_message: Buffer.concat([udh8(42, 3, 2), Buffer.from('part two')]) }))
    expect(concatOf(o)).toEqual({ ref: 42, total: 3, part: 2 })
    agree(build({ ...BASE, esm_class: 0x40, data_coding: 8, short_message: Buffer.concat([udh16(0x1234, 2, 1), Buffer.from('ş', 'utf16le').swap16()]) }))
    agree(build({ ...BASE, esm_class: 0x40, short_message: Buffer.from([0x0b, 0x05, 0x04, 0x0b, 0x84, 0x23, 0xf0, 0x00, 0x03, 7, 2, 2, 0x41]) }))
    agree(build({ ...BASE, esm_class: 0x40, short_message: Buffer.from([0x03, 0x25, 0x01, 0x01, 0x41]) })) // national language shift only
    agree(build({ ...BASE, esm_class: 0x40, short_message: Buffer.from([0x05, 0x00, 0x03, 1, 0, 1]) })) // 0 parts: malformed
    agree(build({ ...BASE, esm_class: 0x40, short_message: Buffer.from([0x05, 0x00, 0x04, 1, 2, 1]) })) // IE runs past the UDH
    agree(build({ ...BASE, esm_class: 0x40, short_message: '' })) // UDHI, empty message
  })

  it('on the sar_* TLVs, alone and with a UDH', () => {
    const o = agree(build({ ...BASE, short_message: 'part', sar_msg_ref_num: 513, sar_total_segments: 4, sar_segment_seqnum: 3 }))
    expect(concatOf(o)).toEqual({ ref: 513, total: 4, part: 3 })
    agree(build({ ...BASE, short_message: 'part', sar_msg_ref_num: 1, sar_total_segments: 2 }))
    agree(build({ ...BASE, esm_class: 0x40, short_message: Buffer.concat([udh8(9, 2, 1), Buffer.from('x')]), sar_msg_ref_num: 9, sar_total_segments: 2, sar_segment_seqnum: 1 }))
    agree(build({ ...BASE, esm_class: 0x40, short_message: Buffer.concat([udh8(9, 2, 1), Buffer.from('x')]), sar_msg_ref_num: 8, sar_total_segments: 2, sar_segment_seqnum: 1 }))
  })

  it('on message_payload, with and without a UDH in it', () => {
    const o = agree(build({ ...BASE, short_message: '', message_payload: Buffer.from('a long text '.repeat(40)) }))
    expect(o.message_payload).toHaveLength(480)
    agree(build({ ...BASE, esm_class: 0x40, short_message: '', message_payload: Buffer.concat([udh8(5, 2, 2), Buffer.from('rest')]) }))
    agree(build({ ...BASE, data_coding: 8, short_message: '', message_payload: Buffer.from('ğ'.repeat(300), 'utf16le').swap16() }))
  })

  it('on our vendor TLVs, well formed and malformed', () => {
    const o = agree(build({ ...BASE, short_message: 'hi' }, [[TAG_BRAND_CODE, '600001\0'], [TAG_COMMERCIAL, [0]], [TAG_RECIPIENT_TYPE, 'TACIR']]))
    expect(messageTags(o)).toEqual({ brandCode: '600001', commercial: false, recipientType: 'TACIR' })
    agree(build({ ...BASE, short_message: 'hi' }, [[TAG_BRAND_CODE, 'abc'], [TAG_COMMERCIAL, [7, 7]]]))
    agree(build({ ...BASE, short_message: 'hi' }, [[TAG_BRAND_CODE, []]]))
    agree(build({ ...BASE, short_message: 'hi' }, [[TAG_COMMERCIAL, [1]], [TAG_COMMERCIAL, [0]]])) // repeated: the last counts
  })

  it('on unknown and other known TLVs', () => {
    const o = agree(build({ ...BASE, short_message: 'hi', user_message_reference: 7, source_port: 1000, payload_type: 1 }, [[0x3fff, [1, 2, 3]], [0x1500, []]]))
    expect(o[0x3fff]).toEqual(Buffer.from([1, 2, 3]))
    agree(build({ ...BASE, short_message: 'hi', receipted_message_id: 'abc' }))
  })
})

describe('what node-smpp refuses or decodes its own way is left to it', () => {
  const refusedByBoth = (bytes: Buffer): void => {
    expect(readSubmitSm(bytes)).toBeNull()
    expect(() => new smpp.PDU(Buffer.from(bytes))).toThrow()
  }

  it('hands back other commands', () => {
    expect(readSubmitSm(new smpp.PDU('enquire_link', { sequence_number: 1 }).toBuffer())).toBeNull()
    expect(readSubmitSm(new smpp.PDU('submit_multi', { sequence_number: 1, dest_address: [{ destination_addr: '905321112233' }], short_message: 'x' }).toBuffer())).toBeNull()
    expect(readSubmitSm(new smpp.PDU('deliver_sm', { sequence_number: 1, short_message: 'x' }).toBuffer())).toBeNull()
  })

  it('hands back truncated PDUs (node-smpp decodes what is there)', () => {
    const whole = build({ ...BASE, short_message: 'hello there' }, [[0x1421, [1]]])
    for (let n = 16; n < whole.length; n++) {
      const cut = withLength(Buffer.from(whole.subarray(0, n)))
      const ours = readSubmitSm(cut)
      if (ours !== null) {
        // Cut inside the TLVs: the mandatory fields are whole, and a TLV header cut short is skipped by both.
        expect(n).toBeGreaterThanOrEqual(whole.length - 5)
        const theirs = new smpp.PDU(Buffer.from(cut))
        expect(ours.destination_addr).toBe(theirs.destination_addr)
        expect(ours[0x1421]).toEqual(theirs[0x1421])
      }
    }
    // short_message longer than the PDU
    const long = Buffer.from(build({ ...BASE, short_message: 'hello' }))
    long[long.length - 6] = 200
    expect(readSubmitSm(long)).toBeNull()
  })

  it('hands back a TLV running past the end, and an integer TLV of the wrong length', () => {
    const overlong = build({ ...BASE, short_message: 'hi' }, [[0x3fff, [1, 2, 3]]])
    overlong.writeUInt16BE(50, overlong.length - 5)
    expect(readSubmitSm(overlong)).toBeNull()
    refusedByBoth(build({ ...BASE, short_message: 'hi' }, [[0x020e, []]])) // sar_total_segments, 0 octets, at the end
    expect(readSubmitSm(build({ ...BASE, short_message: 'hi' }, [[0x020c, [1]], [0x3fff, [1]]]))).toBeNull()
  })

  it('hands back what node-smpp throws on: a short relative time, a known TLV it filters', () => {
    // schedule_delivery_time "1R": node-smpp's relative-time decode cannot match it and throws
    const head = Buffer.alloc(16)
    head.writeUInt32BE(4, 4)
    refusedByBoth(withLength(Buffer.concat([head, Buffer.from('\0\x01\x01ACME\0\x01\x01905321112233\0\0\0\x001R\0\0\0\0\0\0\x01A', 'latin1')])))
    expect(readSubmitSm(build({ ...BASE, short_message: 'hi' }, [[0x0381, [0, 0, 0x31]]]))).toBeNull()
  })

  it('hands back a UDH whose length octet runs past its message', () => {
    const bytes = build({ ...BASE, esm_class: 0x40, short_message: Buffer.from([0x05, 0x00, 0x03]) })
    expect(readSubmitSm(bytes)).toBeNull()
    expect(new smpp.PDU(Buffer.from(bytes)).short_message.udh).toBeDefined()
  })

  it('never throws on garbage', () => {
    let seed = 12345
    const rnd = (): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed }
    const base = build({ ...BASE, esm_class: 0x40, short_message: Buffer.concat([udh8(1, 2, 1), Buffer.from('x')]), sar_msg_ref_num: 1 })
    for (let i = 0; i < 5000; i++) {
      const b = Buffer.from(base.subarray(0, 16 + (rnd() % (base.length - 15))))
      for (let k = 16; k < b.length; k++) if (rnd() % 8 === 0) b[k] = rnd() & 0xff
      withLength(b)
      let ours: unknown
      expect(() => { ours = readSubmitSm(b) }).not.toThrow()
      if (ours !== null) {
        // When the reader answers, node-smpp decodes it too, to the same addresses and concatenation.
        const theirs = new smpp.PDU(Buffer.from(b))
        const o = ours as Pdu
        expect(o.destination_addr).toBe(theirs.destination_addr)
        expect(o.esm_class).toBe(theirs.esm_class)
        expect(concatAnswer(o)).toEqual(concatAnswer(theirs))
        expect(messageTags(o)).toEqual(messageTags(theirs))
      }
    }
  })
})

describe('a session with the reader', () => {
  it('answers broken PDUs generic_nack and goes on reading', async () => {
    const seen: Pdu[] = []
    const malformed: string[] = []
    const server = createServer(socket => {
      // eslint-disable-next-line no-new
      new SmppSession(socket, { responseTimeoutMs: 1000, decode: readSubmitSm, onRequest: pdu => { seen.push(pdu as unknown as Pdu) }, onMalformed: r => { malformed.push(r) } })
    })
    server.listen(0)
    await once(server, 'listening')
    const client: Socket = connect((server.address() as { port: number }).port)
    await once(client, 'connect')
    const received: Buffer[] = []
    client.on('data', d => received.push(d))
    const bad = build({ ...BASE, short_message: 'hi' }, [[0x020e, []]])
    bad.writeUInt32BE(5, 12)
    client.write(Buffer.concat([bad, build({ ...BASE, short_message: 'ok' })]))
    const deadline = Date.now() + 5000
    while ((seen.length < 1 || received.length < 1) && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    client.destroy()
    server.close()
    expect(seen).toHaveLength(1)
    expect(seen[0]!.short_message).toEqual(Buffer.from('ok'))
    expect(malformed).toHaveLength(1)
    const nack = new smpp.PDU(Buffer.concat(received).subarray(0, 16))
    expect(nack.command).toBe('generic_nack')
    expect(nack.sequence_number).toBe(5)
    expect(nack.command_status).toBe(smpp.errors.ESME_RINVCMDLEN)
  })
})
