// The SMPP front end's pure message logic (src/smpp/address, tags, concat, mo, status) over real PDUs: each is built
// with node-smpp, encoded, and decoded back the way the gateway decodes what a provider or an operator sends.
// UDH and TLV cases node-smpp cannot build are appended or written octet by octet.

import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import { destinationOf } from '../src/smpp/address.js'
import { TAG_BRAND_CODE, TAG_COMMERCIAL, TAG_RECIPIENT_TYPE, isTagError, messageTags } from '../src/smpp/tags.js'
import { ConcatDecisions, concatOf, isConcatError, type ConcatRef } from '../src/smpp/concat.js'
import { decodeText, foldText, moText, rejectionOf } from '../src/smpp/mo.js'
import { DEFAULT_SMPP_STATUS, SMPP_ERRORS, SMPP_OUTCOMES, parseSmppStatusMap } from '../src/domain/smpp-status.js'
import { statusOfOutcome, statusOfReason } from '../src/smpp/status.js'
import { BAD_PHONE, MISSING_RECIPIENT, PHONE_TOO_LONG } from '../src/domain/normalize.js'
import { ALLOWED_BY_REASON, REASONS } from '../src/policy/decide.js'
import { OUTCOME_STATUSES } from '../src/carriers/upstream.js'
import { encodeWithTlvs, type RawTlv } from './helpers/smpp-pdu.js'

// node-smpp has no published types: the little of it these tests use.
interface Pdu { [field: string]: any, toBuffer (): Buffer }
interface Smpp { PDU: { new (command: string, fields?: Record<string, unknown>): Pdu, new (buffer: Buffer): Pdu }, errors: Record<string, number> }
const smpp = createRequire(import.meta.url)('smpp') as Smpp

/** Encodes a PDU with node-smpp, appends raw TLVs ([tag, value octets]) and decodes it as the gateway does. */
function roundTrip (command: string, fields: Record<string, unknown>, tlvs: RawTlv[] = []): Pdu {
  return new smpp.PDU(encodeWithTlvs(command, fields, tlvs))
}

const submit = (fields: Record<string, unknown>, tlvs?: RawTlv[]): Pdu =>
  roundTrip('submit_sm', { source_addr: 'ACME', destination_addr: '905321112233', ...fields }, tlvs)
/** A submit_sm whose short_message is these octets, UDH included (esm_class UDHI set unless told otherwise). */
const withUdh = (octets: number[], esm = 0x40, fields: Record<string, unknown> = {}): Pdu =>
  submit({ esm_class: esm, data_coding: 4, short_message: Buffer.from(octets), ...fields })

const TEXT = [0x48, 0x69] // "Hi"

// ---- address.ts ------------------------------------------------------------------------------------------

describe('destinationOf', () => {
  it('reads TON 1 (international) digits, with or without a +, as E.164', () => {
    expect(destinationOf('905321112233', 1, 1)).toBe('+905321112233')
    expect(destinationOf('+905321112233', 1, 1)).toBe('+905321112233')
    expect(destinationOf('441632960961', 1, 1)).toBe('+441632960961')
    expect(destinationOf('9005321112233', 1, 1)).toBe('+905321112233') // the trunk 0 kept after 90, as everywhere
  })

  it('refuses TON 1 digits that are not an international number, and separators', () => {
    expect(destinationOf('05321112233', 1, 1)).toBe(BAD_PHONE)
    expect(destinationOf('90 532 111 22 33', 1, 1)).toBe(BAD_PHONE)
    expect(destinationOf('+', 1, 1)).toBe(BAD_PHONE)
    expect(destinationOf('90532111223344556', 1, 1)).toBe(PHONE_TOO_LONG)
  })

  it('reads TON 2 (national) as a Turkish number, with or without the trunk 0', () => {
    expect(destinationOf('5321112233', 2, 1)).toBe('+905321112233')
    expect(destinationOf('05321112233', 2, 1)).toBe('+905321112233')
    expect(destinationOf('2124441122', 2, 8)).toBe('+902124441122')
  })

  it('refuses TON 2 digits that the operator would not read as a Turkish national number', () => {
    for (const a of ['905321112233', '+905321112233', '1234567890', '532111223', '0 532 111 22 33']) {
      expect(destinationOf(a, 2, 1)).toBe(BAD_PHONE)
    }
  })

  it('reads TON 0 (unknown) like every other path (normalizePhone)', () => {
    for (const a of ['05321112233', '5321112233', '+905321112233', '905321112233', '0090 532 111 22 33']) {
      expect(destinationOf(a, 0, 0)).toBe('+905321112233')
    }
    expect(destinationOf('ACME', 0, 0)).toBe(BAD_PHONE)
  })

  it('refuses alphanumeric, network-specific, subscriber and abbreviated numbers', () => {
    expect(destinationOf('ACME', 5, 0)).toBe(BAD_PHONE)
    expect(destinationOf('905321112233', 5, 0)).toBe(BAD_PHONE)
    for (const ton of [3, 4, 6, 7]) expect(destinationOf('905321112233', ton, 1)).toBe(BAD_PHONE)
  })

  it('refuses an empty destination as missing, whatever its TON', () => {
    for (const ton of [0, 1, 2, 5]) expect(destinationOf('', ton, 1)).toBe(MISSING_RECIPIENT)
  })

  it('refuses numbering plans that do not address a phone', () => {
    for (const npi of [0, 1, 8]) expect(destinationOf('905321112233', 1, npi)).toBe('+905321112233')
    for (const npi of [3, 4, 6, 9, 14, 18]) expect(destinationOf('905321112233', 1, npi)).toBe(BAD_PHONE)
  })

  it('reads a decoded submit_sm and an MO sender the same way', () => {
    const p = submit({ dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: '905321112233' })
    expect(destinationOf(p.destination_addr, p.dest_addr_ton, p.dest_addr_npi)).toBe('+905321112233')
    const mo = roundTrip('deliver_sm', { source_addr_ton: 2, source_addr_npi: 1, source_addr: '5321112233', destination_addr: '3338', short_message: 'RET' })
    expect(destinationOf(mo.source_addr, mo.source_addr_ton, mo.source_addr_npi)).toBe('+905321112233')
  })
})

// ---- tags.ts ---------------------------------------------------------------------------------------------

describe('messageTags', () => {
  it('finds nothing in a PDU without our tags, and allocates nothing for it', () => {
    const a = messageTags(submit({ short_message: 'x' }))
    expect(a).toEqual({})
    expect(messageTags(submit({ short_message: 'y' }))).toBe(a)
  })

  it('reads all three tags', () => {
    const t = messageTags(submit({ short_message: 'x' }, [[TAG_BRAND_CODE, '100'], [TAG_COMMERCIAL, [1]], [TAG_RECIPIENT_TYPE, [1]]]))
    expect(t).toEqual({ brandCode: '100', commercial: true, recipientType: 'TACIR' })
  })

  it('sets only the fields whose tags are present', () => {
    const t = messageTags(submit({}, [[TAG_COMMERCIAL, [0]]]))
    expect(t).toEqual({ commercial: false })
    expect('brandCode' in t).toBe(false)
  })

  it('makes brand codes canonical and allows one trailing NUL', () => {
    expect(messageTags(submit({}, [[TAG_BRAND_CODE, '000100\0']]))).toEqual({ brandCode: '100' })
    expect(messageTags(submit({}, [[TAG_BRAND_CODE, '123456789012345']]))).toEqual({ brandCode: '123456789012345' })
  })

  it.each([
    ['letters', 'AB1'], ['empty', ''], ['zero', '000'], ['16 digits', '1234567890123456'], ['a space', ' 100'],
    ['two NULs', '100\0\0'], ['a NUL inside', '1\x000'], ['a non-ASCII octet', '10\xb0']
  ])('refuses a brand code with %s, naming the tag', (_, v) => {
    const t = messageTags(submit({}, [[TAG_BRAND_CODE, v]]))
    expect(isTagError(t)).toBe(true)
    expect((t as { error: string }).error).toMatch(/^TLV 0x1420 \(brand code\) must be/)
  })

  it('reads the commercial flag as one octet or as an ASCII digit', () => {
    expect(messageTags(submit({}, [[TAG_COMMERCIAL, [0]]]))).toEqual({ commercial: false })
    expect(messageTags(submit({}, [[TAG_COMMERCIAL, [1]]]))).toEqual({ commercial: true })
    expect(messageTags(submit({}, [[TAG_COMMERCIAL, '1']]))).toEqual({ commercial: true })
    expect(messageTags(submit({}, [[TAG_COMMERCIAL, '0\0']]))).toEqual({ commercial: false })
  })

  it.each([[[2]], [[0, 1]], [[]], ['yes'], [[0x31, 0x31]]])('refuses the commercial flag %j, naming the tag', (v) => {
    const t = messageTags(submit({}, [[TAG_COMMERCIAL, v as number[] | string]]))
    expect((t as { error: string }).error).toMatch(/^TLV 0x1421 \(commercial flag\) must be one octet/)
  })

  it('reads the recipient type as one octet or as the word, any case', () => {
    expect(messageTags(submit({}, [[TAG_RECIPIENT_TYPE, [0]]]))).toEqual({ recipientType: 'BIREYSEL' })
    expect(messageTags(submit({}, [[TAG_RECIPIENT_TYPE, [1]]]))).toEqual({ recipientType: 'TACIR' })
    expect(messageTags(submit({}, [[TAG_RECIPIENT_TYPE, 'TACIR']]))).toEqual({ recipientType: 'TACIR' })
    expect(messageTags(submit({}, [[TAG_RECIPIENT_TYPE, 'bireysel\0']]))).toEqual({ recipientType: 'BIREYSEL' })
    expect(messageTags(submit({}, [[TAG_RECIPIENT_TYPE, '1']]))).toEqual({ recipientType: 'TACIR' })
  })

  it.each([[[2]], ['TÜCCAR'], ['BIREY'], [[]]])('refuses the recipient type %j, naming the tag', (v) => {
    const t = messageTags(submit({}, [[TAG_RECIPIENT_TYPE, v as number[] | string]]))
    expect((t as { error: string }).error).toMatch(/^TLV 0x1422 \(recipient type\) must be/)
  })

  it('refuses the message when one tag is malformed, even if the others are fine', () => {
    const t = messageTags(submit({}, [[TAG_BRAND_CODE, '100'], [TAG_COMMERCIAL, [7]]]))
    expect(isTagError(t)).toBe(true)
  })

  it('shows the offending octets in hex, at most 16 of them', () => {
    const t = messageTags(submit({}, [[TAG_BRAND_CODE, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ']])) as { error: string }
    expect(t.error).toContain('26 octets: 41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50 …')
  })

  it('ignores other vendor-range tags', () => {
    expect(messageTags(submit({}, [[0x1400, 'whatever'], [0x1423, [9]]]))).toEqual({})
  })

  it('reads the tags under their registered names (smpp.addTLV), whatever type they were registered with', () => {
    expect(messageTags({ iys_brand_code: '0100', iys_commercial: 1, iys_recipient_type: Buffer.from([0]) }))
      .toEqual({ brandCode: '100', commercial: true, recipientType: 'BIREYSEL' })
    expect(isTagError(messageTags({ iys_commercial: 5 }))).toBe(true)
    expect(isTagError(messageTags({ iys_brand_code: 100 }))).toBe(true)
  })
})

// ---- concat.ts: which message a part belongs to ----------------------------------------------------------

describe('concatOf', () => {
  it('reads an 8-bit reference UDH built by node-smpp', () => {
    const p = submit({ short_message: { udh: Buffer.from([5, 0x00, 3, 42, 3, 2]), message: 'part two' } })
    expect(p.esm_class & 0x40).toBe(0x40)
    expect(concatOf(p)).toEqual({ ref: 42, total: 3, part: 2 })
  })

  it('reads a 16-bit reference UDH', () => {
    expect(concatOf(withUdh([6, 0x08, 4, 0x01, 0x2c, 3, 1, ...TEXT]))).toEqual({ ref: 300, total: 3, part: 1 })
  })

  it('walks over other information elements before and after the concatenation IE', () => {
    // IE 0x05 (16-bit application ports) first; IE 0x24 (national language single shift) last.
    const udh = [14, 0x05, 4, 0x0b, 0x84, 0x23, 0xf0, 0x00, 3, 7, 2, 2, 0x24, 1, 1]
    expect(concatOf(withUdh([...udh, ...TEXT]))).toEqual({ ref: 7, total: 2, part: 2 })
  })

  it('takes the last of two concatenation IEs, as TS 23.040 says', () => {
    expect(concatOf(withUdh([11, 0x00, 3, 1, 2, 1, 0x08, 4, 0, 9, 4, 3, ...TEXT]))).toEqual({ ref: 9, total: 4, part: 3 })
  })

  it('reads the UDH from message_payload when short_message is empty', () => {
    const p = submit({ esm_class: 0x40, data_coding: 4, short_message: Buffer.alloc(0), message_payload: Buffer.from([5, 0, 3, 1, 2, 1, ...TEXT]) })
    expect(concatOf(p)).toEqual({ ref: 1, total: 2, part: 1 })
  })

  it('reads the sar_* TLVs', () => {
    const p = submit({ short_message: 'part', sar_msg_ref_num: 300, sar_total_segments: 3, sar_segment_seqnum: 2 })
    expect(concatOf(p)).toEqual({ ref: 300, total: 3, part: 2 })
  })

  it('answers null for a message that is not concatenated or is one part of one', () => {
    expect(concatOf(submit({ short_message: 'hello' }))).toBeNull()
    expect(concatOf(withUdh([5, 0, 3, 9, 1, 1, ...TEXT]))).toBeNull()
    expect(concatOf(submit({ short_message: 'x', sar_msg_ref_num: 1, sar_total_segments: 1, sar_segment_seqnum: 1 }))).toBeNull()
    expect(concatOf(withUdh([4, 0x05, 2, 0x0b, 0x84, ...TEXT]))).toBeNull() // a UDH without a concatenation IE
    expect(concatOf(withUdh([0, ...TEXT]))).toBeNull() // an empty UDH
  })

  it('does not read a UDH when esm_class does not announce one', () => {
    expect(concatOf(withUdh([5, 0, 3, 42, 3, 2, ...TEXT], 0x00))).toBeNull()
  })

  it('accepts a UDH and sar_* TLVs that agree, and refuses them when they disagree', () => {
    const udh = [5, 0, 3, 42, 3, 2, ...TEXT]
    expect(concatOf(withUdh(udh, 0x40, { sar_msg_ref_num: 42, sar_total_segments: 3, sar_segment_seqnum: 2 }))).toEqual({ ref: 42, total: 3, part: 2 })
    const r = concatOf(withUdh(udh, 0x40, { sar_msg_ref_num: 42, sar_total_segments: 3, sar_segment_seqnum: 3 }))
    expect(isConcatError(r)).toBe(true)
    expect(r).toMatchObject({ field: 'sar', error: expect.stringContaining('disagree') })
  })

  it.each([
    ['an IE that runs past the end of the UDH', [4, 0x00, 3, 1, 2, ...TEXT], /runs past the end of the UDH/],
    ['a UDH length of 1', [1, 0x00, ...TEXT], /runs past the end of the UDH/],
    ['an 8-bit concatenation IE of the wrong length', [4, 0x00, 2, 1, 2, ...TEXT], /IE 0x00 .* must have 3 octets of data, has 2/],
    ['a 16-bit concatenation IE of the wrong length', [5, 0x08, 3, 0, 1, 2, ...TEXT], /IE 0x08 .* must have 4 octets of data, has 3/],
    ['part 0', [5, 0, 3, 7, 3, 0, ...TEXT], /part 0 of 3 is out of range/],
    ['a part past the total', [5, 0, 3, 7, 2, 3, ...TEXT], /part 3 of 2 is out of range/],
    ['a total of 0', [5, 0, 3, 7, 0, 0, ...TEXT], /number of parts must be 1 to 255, is 0/],
    ['a bad IE after a good concatenation IE', [7, 0, 3, 7, 2, 1, 0x24, 3, ...TEXT], /runs past the end of the UDH/]
  ])('refuses a UDH with %s', (_, octets, message) => {
    const r = concatOf(withUdh(octets))
    expect(isConcatError(r)).toBe(true)
    expect(r).toMatchObject({ field: 'udh' })
    expect((r as { error: string }).error).toMatch(/^malformed UDH: /)
    expect((r as { error: string }).error).toMatch(message)
  })

  it('refuses esm_class UDHI on an empty message', () => {
    expect(concatOf(submit({ esm_class: 0x40, short_message: Buffer.alloc(0) }))).toMatchObject({ field: 'udh', error: expect.stringContaining('empty') })
  })

  it.each([
    ['without sar_total_segments', { sar_msg_ref_num: 5, sar_segment_seqnum: 1 }, /must come together \(missing sar_total_segments\)/],
    ['with only sar_segment_seqnum', { sar_segment_seqnum: 1 }, /missing sar_msg_ref_num, sar_total_segments/],
    ['with a total of 0', { sar_msg_ref_num: 5, sar_total_segments: 0, sar_segment_seqnum: 0 }, /number of parts must be 1 to 255/],
    ['with part 0', { sar_msg_ref_num: 5, sar_total_segments: 2, sar_segment_seqnum: 0 }, /part 0 of 2/],
    ['with a part past the total', { sar_msg_ref_num: 5, sar_total_segments: 2, sar_segment_seqnum: 4 }, /part 4 of 2/]
  ])('refuses sar_* TLVs %s', (_, sar, message) => {
    const r = concatOf(submit({ short_message: 'x', ...sar }))
    expect(r).toMatchObject({ field: 'sar' })
    expect((r as { error: string }).error).toMatch(message)
  })

  describe('over raw octets (a body node-smpp did not decode)', () => {
    const raw = (octets: number[]): ReturnType<typeof concatOf> => concatOf({ esm_class: 0x40, short_message: Uint8Array.from(octets) })

    it('reads the concatenation IE among others', () => {
      expect(raw([11, 0x05, 4, 0x0b, 0x84, 0x23, 0xf0, 0x00, 3, 7, 2, 2, ...TEXT])).toEqual({ ref: 7, total: 2, part: 2 })
      expect(raw([6, 0x08, 4, 0xff, 0xff, 2, 2])).toEqual({ ref: 0xffff, total: 2, part: 2 })
    })

    it('refuses a UDH length past the end of the message, which the decoded form cannot show', () => {
      expect(raw([9, 0x00, 3, 1, 2, 1])).toMatchObject({ field: 'udh', error: expect.stringContaining('UDH length (9) runs past the end of the message (6 octets)') })
    })

    it('refuses an IE that runs past the UDH, and a lone IEI', () => {
      expect(raw([4, 0x00, 3, 1, 2, ...TEXT])).toMatchObject({ field: 'udh', error: expect.stringContaining('at octet 1 runs past') })
      expect(raw([6, 0x00, 3, 1, 2, 1, 0x24, ...TEXT])).toMatchObject({ field: 'udh', error: expect.stringContaining('at octet 6 runs past') })
    })

    it('reads message_payload when short_message is empty', () => {
      expect(concatOf({ esm_class: 0x40, short_message: new Uint8Array(0), message_payload: Uint8Array.from([5, 0, 3, 3, 3, 3]) })).toEqual({ ref: 3, total: 3, part: 3 })
    })
  })
})

// ---- concat.ts: one decision per message -----------------------------------------------------------------

describe('ConcatDecisions', () => {
  const ref = (r: number, total = 3, part = 1): ConcatRef => ({ ref: r, total, part })
  const clock = (): { now: () => number, t: number } => {
    const c = { t: 1000, now: () => c.t }
    return c
  }

  it('gives every part of a message the decision its first part got', () => {
    const d = new ConcatDecisions<string>()
    const parts = [1, 2, 3].map(n => submit({ short_message: { udh: Buffer.from([5, 0, 3, 42, 3, n]), message: `p${n}` } }))
    const answers = parts.map(p => {
      const c = concatOf(p) as ConcatRef
      const key = ConcatDecisions.keyOf('key-1', p.source_addr, '+905321112233', c)
      const known = d.get(key)
      if (known !== undefined) return known
      d.set(key, `decided at part ${c.part}`)
      return `decided at part ${c.part}`
    })
    expect(answers).toEqual(['decided at part 1', 'decided at part 1', 'decided at part 1'])
    expect(d.size).toBe(1)
  })

  it('keys a message by sender, originator, destination, reference and number of parts', () => {
    const base = ConcatDecisions.keyOf('k', 'ACME', '+905321112233', ref(7))
    expect(ConcatDecisions.keyOf('k', 'ACME', '+905321112233', ref(7, 3, 2))).toBe(base) // the part is not in the key
    const others = [
      ConcatDecisions.keyOf('k2', 'ACME', '+905321112233', ref(7)),
      ConcatDecisions.keyOf('k', 'ACME2', '+905321112233', ref(7)),
      ConcatDecisions.keyOf('k', 'ACME', '+905321112234', ref(7)),
      ConcatDecisions.keyOf('k', 'ACME', '+905321112233', ref(8)),
      ConcatDecisions.keyOf('k', 'ACME', '+905321112233', ref(7, 4))
    ]
    expect(new Set([base, ...others]).size).toBe(6)
  })

  it('shares a pending decision: parts that arrive while it is taken wait for the same one', async () => {
    const d = new ConcatDecisions<Promise<string>>()
    let taken = 0
    const decide = (key: string): Promise<string> => {
      const known = d.get(key)
      if (known !== undefined) return known
      const p = new Promise<string>(resolve => setTimeout(() => resolve(`decision ${++taken}`), 5))
      d.set(key, p)
      return p
    }
    const key = ConcatDecisions.keyOf('k', 'ACME', '+905321112233', ref(1))
    expect(await Promise.all([decide(key), decide(key), decide(key)])).toEqual(['decision 1', 'decision 1', 'decision 1'])
    expect(taken).toBe(1)
  })

  it('tells a resent part from a new one', () => {
    const d = new ConcatDecisions<boolean>()
    d.set('m', false)
    expect(d.seePart('m', 1)).toBe(true)
    expect(d.seePart('m', 2)).toBe(true)
    expect(d.seePart('m', 1)).toBe(false)
    expect(d.get('m')).toBe(false) // a resend still gets the decision
    expect(d.seePart('m', 255)).toBe(true)
    expect(d.seePart('m', 255)).toBe(false)
    expect(d.seePart('m', 33)).toBe(true)
    expect(d.seePart('unknown', 1)).toBe(true)
    expect(d.seePart('unknown', 1)).toBe(true) // nothing recorded without a decision
  })

  it('forgets a decision after the TTL, counted from its first part', () => {
    const c = clock()
    const d = new ConcatDecisions<string>({ ttlMs: 1000, now: c.now })
    d.set('m', 'blocked')
    c.t += 600
    d.set('m', 'blocked again') // replaces the value, keeps the age
    expect(d.get('m')).toBe('blocked again')
    c.t += 399
    expect(d.get('m')).toBe('blocked again')
    c.t += 1
    expect(d.get('m')).toBeUndefined()
    expect(d.size).toBe(0)
  })

  it('sweeps expired messages when a new one is set', () => {
    const c = clock()
    const d = new ConcatDecisions<number>({ ttlMs: 100, now: c.now })
    for (let i = 0; i < 50; i++) d.set(`old ${i}`, i)
    c.t += 50
    d.set('newer', 1)
    c.t += 60
    d.set('newest', 2)
    expect(d.size).toBe(2)
    expect(d.get('newer')).toBe(1)
  })

  it('drops the oldest messages beyond maxEntries, so made-up references cannot grow memory', () => {
    const d = new ConcatDecisions<number>({ maxEntries: 1000 })
    for (let i = 0; i < 20_000; i++) d.set(ConcatDecisions.keyOf('flood', 'X', '+905321112233', ref(i & 0xffff, 255)), i)
    expect(d.size).toBe(1000)
    expect(d.get(ConcatDecisions.keyOf('flood', 'X', '+905321112233', ref(0, 255)))).toBeUndefined()
    expect(d.get(ConcatDecisions.keyOf('flood', 'X', '+905321112233', ref(19_999 & 0xffff, 255)))).toBe(19_999)
  })

  it('forgets a message on delete, so that its next part decides again', () => {
    const d = new ConcatDecisions<string>()
    d.set('m', 'store unavailable')
    expect(d.delete('m')).toBe(true)
    expect(d.get('m')).toBeUndefined()
  })

  it('refuses options that would make it unbounded or useless', () => {
    expect(() => new ConcatDecisions({ ttlMs: 0 })).toThrow(RangeError)
    expect(() => new ConcatDecisions({ maxEntries: 0 })).toThrow(RangeError)
    expect(() => new ConcatDecisions({ maxEntries: Infinity })).toThrow(RangeError)
  })
})

// ---- mo.ts -----------------------------------------------------------------------------------------------

describe('rejectionOf', () => {
  it.each([
    ['RET', null], ['ret', null], ['Ret', null], ['IPTAL', null], ['iptal', null], ['İPTAL', null], ['İptal', null],
    ['ıptal', null], ['IPTAL', null], ['I\u0307PTAL', null], ['  RET  ', null],
    ['RET ACME', 'ACME'], ['iptal acme', 'ACME'], ['RET  Acme ', 'ACME'], ['\tret\nacme\n', 'ACME'],
    ['RET Şok', 'SOK'], ['iptal Çiçek', 'CICEK'], ['İPTAL ĞÜŞİÖÇ', 'GUSIOC'], ['ret âîû', 'AIU'], ['RET A101', 'A101'],
    ['RET d&r', 'D&R'], ['RET n11.com', 'N11.COM'], ['RET\u00a0ACME', 'ACME']
  ])('reads %j as a rejection (brand %j)', (text, brand) => {
    expect(rejectionOf(text)).toEqual({ brand })
  })

  it.each([
    '', '   ', 'RE', 'RETURN', 'RETX', 'XRET', 'RET.', 'RET!', 'R E T', 'IPTALL', 'STOP', 'HAYIR',
    'IPTAL ET LUTFEN BEN', 'RET ACME MARKET', 'RET -ACME', 'RET ACME!', 'RET АСМЕ' /* Cyrillic */, 'RET\u200bACME'
  ])('does not read %j as a rejection', (text) => {
    expect(rejectionOf(text)).toBeNull()
  })

  it('reads "İPTAL ET" as a rejection naming the brand word ET: resolving the word is the caller\'s', () => {
    expect(rejectionOf('İptal et')).toEqual({ brand: 'ET' })
  })

  it('folds Turkish letters and diacritics to ASCII upper case', () => {
    expect(foldText('İıIiÇçĞğÖöŞşÜüÂâÎîÛû')).toBe('IIIICCGGOOSSUUAAIIUU')
  })
})

describe('moText', () => {
  const mo = (fields: Record<string, unknown>): Pdu => roundTrip('deliver_sm', { source_addr: '905321112233', destination_addr: '3338', ...fields })

  it('reads GSM default (0), IA5 (1), Latin-1 (3) and UCS2 (8) as node-smpp decoded them', () => {
    expect(moText(mo({ data_coding: 0, short_message: 'RET ACME' }))).toBe('RET ACME')
    expect(moText(mo({ data_coding: 1, short_message: 'RET ACME' }))).toBe('RET ACME')
    expect(moText(mo({ data_coding: 3, short_message: 'Ret çök' }))).toBe('Ret çök')
    expect(moText(mo({ data_coding: 8, short_message: 'İPTAL ışık' }))).toBe('İPTAL ışık')
  })

  it('reads message_payload when short_message is empty', () => {
    expect(moText(mo({ data_coding: 8, short_message: Buffer.alloc(0), message_payload: 'İptal ACME' }))).toBe('İptal ACME')
  })

  it('reads the text after a UDH', () => {
    expect(moText(mo({ data_coding: 8, short_message: { udh: Buffer.from([5, 0, 3, 1, 2, 1]), message: 'İPTAL' } }))).toBe('İPTAL')
  })

  it('reads GSM text in the Turkish national language shift table (UDH IE 0x24)', () => {
    // İ is escape + 0x49 in the Turkish single shift table.
    const p = mo({ data_coding: 0, esm_class: 0x40, short_message: Buffer.from([3, 0x24, 1, 1, 0x1b, 0x49, 0x50, 0x54, 0x41, 0x4c]) })
    expect(moText(p)).toBe('İPTAL')
    expect(rejectionOf(moText(p))).toEqual({ brand: null })
  })

  it('answers empty text for a coding that is not text', () => {
    expect(moText(mo({ data_coding: 4, short_message: Buffer.from('RET') }))).toBe('')
    expect(moText(mo({ data_coding: 0xf6, short_message: Buffer.from('RET') }))).toBe('')
    expect(moText({})).toBe('')
  })

  it('finds a rejection in a UCS2 MO end to end', () => {
    expect(rejectionOf(moText(mo({ data_coding: 8, short_message: 'İPTAL Acme' })))).toEqual({ brand: 'ACME' })
  })

  describe('over raw octets (a body node-smpp did not decode)', () => {
    it('decodes GSM default septets, escapes included', () => {
      expect(moText({ data_coding: 0, short_message: Uint8Array.from([0x52, 0x45, 0x54, 0x20, 0x1b, 0x65, 0x00]) })).toBe('RET €@')
      expect(decodeText(Uint8Array.from([0x1b, 0x41]), 0)).toBe('A') // an escape the extension table lacks
      expect(decodeText(Uint8Array.from([0x41, 0x1b]), 0xf1)).toBe('A') // a lone escape at the end
      expect(decodeText(Uint8Array.from([0x41, 0x80]), 0)).toBe('') // not septets
    })

    it('decodes IA5, Latin-1 and UCS2 big-endian', () => {
      expect(decodeText(Buffer.from('RET ACME', 'latin1'), 1)).toBe('RET ACME')
      expect(decodeText(Buffer.from('Ret çök', 'latin1'), 3)).toBe('Ret çök')
      expect(decodeText(Buffer.from('0130005000540041004c', 'hex'), 8)).toBe('İPTAL')
      expect(decodeText(Buffer.from('RET'), 2)).toBe('')
    })

    it('skips the UDH when esm_class announces one, and reads nothing from a UDH that runs past the end', () => {
      expect(moText({ data_coding: 8, esm_class: 0x40, short_message: Buffer.from('050003010201005200450054', 'hex') })).toBe('RET')
      expect(moText({ data_coding: 0, esm_class: 0x40, short_message: Uint8Array.from([9, 0, 3, 1, 2, 1]) })).toBe('')
    })
  })
})

// ---- status.ts -------------------------------------------------------------------------------------------

describe('SMPP status mapping', () => {
  it('uses the command_status numbers node-smpp knows under the same names', () => {
    for (const [name, value] of Object.entries(SMPP_ERRORS)) expect(smpp.errors[name], name).toBe(value)
  })

  it('answers blocked messages as issue 13 says by default', () => {
    expect(DEFAULT_SMPP_STATUS).toMatchObject({
      REJECTED: 0x66,
      NO_CONSENT: 0x66,
      INVALID_RECIPIENT: 0x0b,
      STORE_UNAVAILABLE: 0x64,
      NO_BRAND: 0x0a,
      CARRIER_REJECTED: 0x45,
      CARRIER_FAILED: 0x64,
      CARRIER_TIMEOUT: 0x64,
      CARRIER_CIRCUIT_OPEN: 0x64,
      NO_UPSTREAM: 0x64,
      CARRIER_UNKNOWN: 0x08,
      THROTTLED: 0x58,
      WINDOW_FULL: 0x14
    })
    expect(Object.keys(DEFAULT_SMPP_STATUS).sort()).toEqual([...SMPP_OUTCOMES].sort())
    expect(Object.isFrozen(DEFAULT_SMPP_STATUS)).toBe(true)
  })

  it('has an outcome for every reason the policy blocks with, and answers ESME_ROK for the others', () => {
    for (const reason of REASONS) {
      if (ALLOWED_BY_REASON[reason]) expect(statusOfReason(DEFAULT_SMPP_STATUS, reason), reason).toBe(0)
      else {
        expect(SMPP_OUTCOMES as readonly string[], reason).toContain(reason)
        expect(statusOfReason(DEFAULT_SMPP_STATUS, reason), reason).not.toBe(0)
      }
    }
  })

  it('maps every upstream outcome that did not forward', () => {
    const got = Object.fromEntries(OUTCOME_STATUSES.filter(s => s !== 'accepted').map(s => [s, statusOfOutcome(DEFAULT_SMPP_STATUS, s as Exclude<typeof s, 'accepted'>)]))
    expect(got).toEqual({ rejected: 0x45, failed: 0x64, timeout: 0x64, unknown: 0x08, circuit_open: 0x64, no_upstream: 0x64 })
  })

  it('reads SMPP_STATUS_MAP over the defaults, in hex or decimal', () => {
    const m = parseSmppStatusMap('REJECTED=0x66,NO_CONSENT=0x45,STORE_UNAVAILABLE=0x64')
    expect(m).toEqual({ ...DEFAULT_SMPP_STATUS, NO_CONSENT: 0x45 })
    expect(parseSmppStatusMap(' no_consent = 69 , CARRIER_UNKNOWN=0X64, ').NO_CONSENT).toBe(69)
    expect(parseSmppStatusMap('THROTTLED=4294967295').THROTTLED).toBe(0xffffffff)
    expect(statusOfReason(m, 'NO_CONSENT')).toBe(0x45)
    expect(statusOfOutcome(parseSmppStatusMap('CARRIER_REJECTED=0x66'), 'rejected')).toBe(0x66)
    expect(Object.isFrozen(m)).toBe(true)
    expect(DEFAULT_SMPP_STATUS.NO_CONSENT).toBe(0x66)
  })

  it('answers the defaults for an empty setting', () => {
    expect(parseSmppStatusMap('')).toEqual(DEFAULT_SMPP_STATUS)
  })

  it.each([
    ['REJECTD=0x66', /"REJECTD=0x66" names no outcome \(known: REJECTED, NO_CONSENT, INVALID_RECIPIENT, STORE_UNAVAILABLE, NO_BRAND, .*WINDOW_FULL\)/],
    ['REJECTED', /"REJECTED" is not NAME=STATUS/],
    ['=0x66', /"=0x66" names no outcome/],
    ['REJECTED=0', /"REJECTED=0" needs a command_status from 1 to 0xFFFFFFFF.*0 is ESME_ROK/],
    ['REJECTED=0x0', /needs a command_status/],
    ['REJECTED=0x100000000', /needs a command_status/],
    ['REJECTED=4294967296', /needs a command_status/],
    ['REJECTED=-1', /needs a command_status/],
    ['REJECTED=1.5', /needs a command_status/],
    ['REJECTED=ESME_RX_R_APPN', /needs a command_status/],
    ['REJECTED=', /needs a command_status/],
    ['REJECTED=0x66,NO_CONSENT=0x45,REJECTED=0x45', /"REJECTED=0x45" gives REJECTED a second time/]
  ])('refuses %j, naming the bad item', (text, message) => {
    let err: unknown
    try { parseSmppStatusMap(text) } catch (e) { err = e }
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).message).toMatch(message)
    expect((err as { code?: string }).code).toBe('CONFIG_INVALID')
  })
})
