// Concatenated (multipart) SMS: which message a part belongs to, and one decision per message so that every part
// gets the same answer, taken once. A part must never go out when its message was blocked, and a consent change
// arriving between part 1 and part 2 must not split a message.
//
// A part says so in one of two ways:
// - a User Data Header (esm_class UDHI bit 0x40; 3GPP TS 23.040 §9.2.3.24) at the start of short_message, or of
//   message_payload when short_message is empty, with IE 0x00 (8-bit reference) or 0x08 (16-bit reference);
// - the sar_msg_ref_num / sar_total_segments / sar_segment_seqnum TLVs (SMPP 3.4 §5.3.2.22–24).
// Other IEs (ports, national language shift tables...) may come before or after and are walked over.
//
// A malformed UDH or sar_* set is returned as a ConcatError, not thrown: it is a property of the message the front
// end answers with a status (BAD_UDH, BAD_TLV in domain/smpp-status.ts), not a failure of ours. TS 23.040 would have a handset
// ignore such a header and show the part on its own; we refuse the part instead, since a part decided on its own
// could go out while its siblings are blocked. Two concatenation IEs in one UDH: the last counts (TS 23.040).

/** esm_class bit: the message begins with a User Data Header. */
export const UDHI = 0x40
/** UDH information elements: concatenated message, 8-bit and 16-bit reference. */
export const IEI_CONCAT_8 = 0x00
export const IEI_CONCAT_16 = 0x08

/** One part of a concatenated message: the sender's reference, the number of parts and this part's (1-based). */
export interface ConcatRef { readonly ref: number, readonly total: number, readonly part: number }

/** A part whose concatenation data is malformed; `field` says where: the UDH, or the sar_* TLVs. */
export interface ConcatError { readonly error: string, readonly field: 'udh' | 'sar' }

/**
 * short_message or message_payload: the raw octets, or what node-smpp's decode makes of them (`udh`: the UDH's
 * information elements, each [IEI, length, data...], without the UDH length octet; `message`: the rest, as text).
 */
export type MessageBody = Uint8Array | { readonly udh?: readonly Uint8Array[], readonly message: string | Uint8Array }

/** The fields of a submit_sm, deliver_sm or data_sm this module reads, as node-smpp names them (a decoded PDU). */
export interface ConcatFields {
  /** The PDU's other fields: a decoded PDU is passed as it is. */
  readonly [field: string]: unknown
  readonly esm_class?: number
  readonly short_message?: MessageBody
  readonly message_payload?: MessageBody
  readonly sar_msg_ref_num?: number
  readonly sar_total_segments?: number
  readonly sar_segment_seqnum?: number
}

export const isConcatError = (v: ConcatRef | ConcatError | null): v is ConcatError => v !== null && 'error' in v

/** The field that carries the message: short_message, or message_payload when short_message is empty (§5.3.2.32). */
export function messageBody (pdu: Pick<ConcatFields, 'short_message' | 'message_payload'>): MessageBody | undefined {
  const sm = pdu.short_message
  if (sm !== undefined && !isEmpty(sm)) return sm
  return pdu.message_payload ?? sm
}

const isEmpty = (b: MessageBody): boolean => b instanceof Uint8Array ? b.length === 0 : b.udh === undefined && b.message.length === 0

/**
 * The part's place in its message; null for a message that is not concatenated (no concatenation data, or 1 part
 * of 1). When both the UDH and the sar_* TLVs say, they must agree.
 */
export function concatOf (pdu: ConcatFields): ConcatRef | ConcatError | null {
  let fromUdh: ConcatRef | null = null
  if (((pdu.esm_class ?? 0) & UDHI) !== 0) {
    const r = udhConcat(messageBody(pdu))
    if (r !== null && 'error' in r) return r
    fromUdh = r
  }
  if (pdu.sar_msg_ref_num === undefined && pdu.sar_total_segments === undefined && pdu.sar_segment_seqnum === undefined) {
    return fromUdh === null || fromUdh.total === 1 ? null : fromUdh
  }
  const fromSar = sarConcat(pdu)
  if ('error' in fromSar) return fromSar
  if (fromUdh !== null && (fromUdh.ref !== fromSar.ref || fromUdh.total !== fromSar.total || fromUdh.part !== fromSar.part)) {
    return { error: `the sar_* TLVs (ref ${fromSar.ref}, part ${fromSar.part} of ${fromSar.total}) disagree with the UDH (ref ${fromUdh.ref}, part ${fromUdh.part} of ${fromUdh.total})`, field: 'sar' }
  }
  return fromSar.total === 1 ? null : fromSar
}

function sarConcat (pdu: ConcatFields): ConcatRef | ConcatError {
  const ref = pdu.sar_msg_ref_num
  const total = pdu.sar_total_segments
  const part = pdu.sar_segment_seqnum
  if (typeof ref !== 'number' || typeof total !== 'number' || typeof part !== 'number') {
    const missing = [ref === undefined ? 'sar_msg_ref_num' : '', total === undefined ? 'sar_total_segments' : '', part === undefined ? 'sar_segment_seqnum' : ''].filter(Boolean)
    return { error: `sar_msg_ref_num, sar_total_segments and sar_segment_seqnum must come together (missing ${missing.join(', ')})`, field: 'sar' }
  }
  return checked(ref, total, part, 'sar')
}

function udhConcat (body: MessageBody | undefined): ConcatRef | ConcatError | null {
  if (body === undefined || isEmpty(body)) return udhError('esm_class says the message begins with a UDH, but the message is empty')
  let found: ConcatRef | null = null
  if (body instanceof Uint8Array) {
    const end = 1 + body[0]!
    if (end > body.length) return udhError(`the UDH length (${body[0]}) runs past the end of the message (${body.length} octets)`)
    for (let i = 1; i < end;) {
      if (i + 2 > end || i + 2 + body[i + 1]! > end) return udhError(`the information element at octet ${i} runs past the end of the UDH`)
      const r = ieConcat(body, body[i]!, i + 2, body[i + 1]!)
      if (r !== null) {
        if ('error' in r) return r
        found = r
      }
      i += 2 + body[i + 1]!
    }
    return found
  }
  // Decoded by node-smpp: it cut the IEs at their stated lengths, so an IE shorter than it says ran past the UDH.
  const ies = body.udh
  if (ies === undefined) return udhError('esm_class says the message begins with a UDH, but the message has none')
  for (let k = 0; k < ies.length; k++) {
    const ie = ies[k]!
    if (ie.length < 2 || ie.length !== 2 + ie[1]!) return udhError(`information element ${k + 1} runs past the end of the UDH`)
    const r = ieConcat(ie, ie[0]!, 2, ie[1]!)
    if (r !== null) {
      if ('error' in r) return r
      found = r
    }
  }
  return found
}

/** The concatenation data of one IE (data at `at`, `len` octets); null for any other IE. */
function ieConcat (b: Uint8Array, iei: number, at: number, len: number): ConcatRef | ConcatError | null {
  if (iei === IEI_CONCAT_8) {
    if (len !== 3) return udhError(`IE 0x00 (concatenation, 8-bit reference) must have 3 octets of data, has ${len}`)
    return checked(b[at]!, b[at + 1]!, b[at + 2]!, 'udh')
  }
  if (iei === IEI_CONCAT_16) {
    if (len !== 4) return udhError(`IE 0x08 (concatenation, 16-bit reference) must have 4 octets of data, has ${len}`)
    return checked((b[at]! << 8) | b[at + 1]!, b[at + 2]!, b[at + 3]!, 'udh')
  }
  return null
}

function checked (ref: number, total: number, part: number, field: ConcatError['field']): ConcatRef | ConcatError {
  const where = field === 'udh' ? 'malformed UDH' : 'malformed sar_* TLVs'
  if (!Number.isInteger(ref) || ref < 0 || ref > 0xffff) return { error: `${where}: reference ${ref} is not a 16-bit number`, field }
  if (!Number.isInteger(total) || total < 1 || total > 255) return { error: `${where}: the number of parts must be 1 to 255, is ${total}`, field }
  if (!Number.isInteger(part) || part < 1 || part > total) return { error: `${where}: part ${part} of ${total} is out of range`, field }
  return { ref, total, part }
}

const udhError = (what: string): ConcatError => ({ error: `malformed UDH: ${what}`, field: 'udh' })

// ---- One decision per message ------------------------------------------------------------------------------

export interface ConcatDecisionsOptions {
  /** How long a message's decision is kept, from its first part; default 10 minutes. */
  readonly ttlMs?: number
  /** At most this many messages are remembered, the oldest dropped first; default 100,000 (some tens of MB at most). */
  readonly maxEntries?: number
  /** Milliseconds from a monotonic clock; default performance.now. */
  readonly now?: () => number
}

interface Entry<T> {
  value: T
  readonly expires: number
  /** Part numbers seen (bit per part, 1–255), allocated on the first seePart. */
  seen: Uint32Array | null
}

/**
 * Remembers one decision per concatenated message so that every part gets the one the first part got. `T` is the
 * caller's: store the pending promise of a decision, not only its result, so that parts arriving while it is taken
 * wait for it instead of taking their own.
 *
 * Entries expire `ttlMs` after they are set and the map holds at most `maxEntries`: a flood of made-up references
 * cannot grow memory. A part that arrives after its message's entry expired or was dropped is decided afresh.
 * A Map keeps insertion order, which with one TTL is expiry order too: sweeping stops at the first live entry.
 */
export class ConcatDecisions<T> {
  readonly #entries = new Map<string, Entry<T>>()
  readonly #ttlMs: number
  readonly #max: number
  readonly #now: () => number

  constructor (opts: ConcatDecisionsOptions = {}) {
    this.#ttlMs = opts.ttlMs ?? 600_000
    this.#max = opts.maxEntries ?? 100_000
    if (!(this.#ttlMs > 0)) throw new RangeError(`ttlMs must be positive, is ${this.#ttlMs}`)
    if (!Number.isSafeInteger(this.#max) || this.#max < 1) throw new RangeError(`maxEntries must be a positive integer, is ${this.#max}`)
    this.#now = opts.now ?? performance.now.bind(performance)
  }

  /**
   * The key of a part's message: who sent it (the API key or session id), from which originator, to which
   * (normalised) destination, with which reference and number of parts. NUL separates: SMPP addresses are C strings.
   */
  static keyOf (senderId: string, source: string, destination: string, c: ConcatRef): string {
    return `${senderId}\0${source}\0${destination}\0${c.ref}\0${c.total}`
  }

  /** Messages remembered now (expired ones included until they are swept). */
  get size (): number { return this.#entries.size }

  /** The decision taken for the message, if it is remembered. */
  get (key: string): T | undefined {
    return this.#live(key)?.value
  }

  /** Records the message's decision; for a message already remembered, replaces it and keeps its age and parts. */
  set (key: string, value: T): void {
    const e = this.#live(key)
    if (e !== undefined) {
      e.value = value
      return
    }
    const now = this.#now()
    this.#sweep(now)
    while (this.#entries.size >= this.#max) this.#entries.delete(this.#entries.keys().next().value!)
    this.#entries.set(key, { value, expires: now + this.#ttlMs, seen: null })
  }

  /**
   * Records that `part` of the message arrived. False when it had arrived before (a resend, which still gets the
   * message's decision); true the first time, and when the message is not remembered (nothing is recorded then).
   */
  seePart (key: string, part: number): boolean {
    const e = this.#live(key)
    if (e === undefined || part < 0 || part > 255) return true
    const seen = e.seen ??= new Uint32Array(8)
    const word = part >>> 5
    const bit = 1 << (part & 31)
    if ((seen[word]! & bit) !== 0) return false
    seen[word] = seen[word]! | bit
    return true
  }

  /** Forgets the message (a decision that failed and should be taken again by the next part). */
  delete (key: string): boolean {
    return this.#entries.delete(key)
  }

  #live (key: string): Entry<T> | undefined {
    const e = this.#entries.get(key)
    if (e === undefined) return undefined
    if (e.expires > this.#now()) return e
    this.#entries.delete(key)
    return undefined
  }

  #sweep (now: number): void {
    for (const [key, e] of this.#entries) {
      if (e.expires > now) return
      this.#entries.delete(key)
    }
  }
}
