// The SMTP spool: mail the front end accepted, on local disk until every recipient's copy is delivered or bounced.
// accept() resolves only once the message and its state are on disk (fdatasync), and the front end answers 250 only
// then: a message we acknowledged survives a crash of the process or the machine.
//
// Format (v2, since 2026-12): a log. SMTP_SPOOL_DIR holds segment files `<n>.log` (n: 12 digits, increasing), each
// the magic "IYSLOG2\n" then records `u32 length, u32 crc32 of the payload` (little-endian) and the payload, whose
// first byte is its kind:
//   'A'  a message accepted: u32 length of its state, the state (SpoolState, JSON), then the message's bytes as
//        received after DATA (dot-unstuffed, line endings as sent)
//   'C'  recipients' states changed: JSON {"id", "u": [[index, RecipientState], …]}; a message whose recipients are
//        all final is done
//   'D'  a message removed (remove()): JSON {"id"}
// All writes go through one queue: a batch of records is one writev at the end of the current segment and one
// fdatasync, and every accept() or change in it resolves after that fdatasync (group commit: one write and one sync
// for all that arrived while the last one ran). A message is no longer a file made, synced and named (v1: two files,
// two fsyncs, a rename and a folder fsync each; on ext4 the file's creation alone cost more main-thread and kernel
// time than the rest), it is bytes appended.
// A segment is made (magic, fdatasync, folder fsync) before records go into it: at open() every run starts a new
// one, and the current one is replaced past SEGMENT_BYTES or after a failed write. Segments are deleted oldest first,
// each unlink made durable before the next (a done message's 'C' or 'D' may sit in a later segment than its 'A': a
// later segment may go only once the earlier ones are gone for good). When more than MAX_SEGMENTS are kept because
// the oldest still holds a few pending messages (under a quarter of it: some retried for hours), they are written again
// at the end (a new 'A' with the same id and the current state, which replaces the old one) and it is deleted.
// At open(): segments are read in order, records applied in order; a record that does not check (length, crc) ends
// its segment: a write cut short, never acknowledged (an accept or change that did not resolve). Nothing is ever
// written after it: the new run writes to a new segment. Segments with no pending message are deleted (in order).
// The spool's disk use is its messages (SMTP_SPOOL_MAX_BYTES bounds those) plus records already superseded:
// about MAX_SEGMENTS · SEGMENT_BYTES, more while the oldest segments are still over a quarter pending.
//
// v1 spools (`<id>.eml` the message, `<id>.json` its state replaced whole via `<id>.json.tmp` + rename) are still
// read and served in their own format until they are done; new messages always go to the log. So a downgrade is not
// possible once a log exists (the old code would not see it).
//
// Pending copies are also indexed for the relay: copies never tried in a queue in the order they came (due at once),
// the others in a heap by nextAttemptAt (due-heap.ts). takeDue() and nextDueAt cost O(log N), not a walk over every
// message (with a backlog of N backing off, a walk per completion was N² steps). Due copies go in the order they
// became due (a new one at its acceptedAt): new mail does not starve retries that are due, nor the other way round.
//
// One process per folder: two gateways on one spool would send every copy twice.

import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { CodedError } from '../domain/errors.js'
import type { Logger } from '../log.js'
import { DueHeap } from './due-heap.js'

/** One accepted recipient of a message, as the front end decided it at RCPT TO. */
export interface SpoolRecipient {
  address: string
  brandCode: string
  iysCode: string
  commercial: boolean
  /** the decision's message id (decision log); one per recipient */
  messageId: string
}

export type DeliveryState = 'pending' | 'delivered' | 'bounced'

/** A recipient with its delivery state. Times are epoch milliseconds. */
export interface RecipientState extends SpoolRecipient {
  state: DeliveryState
  /** copies handed to the upstream so far (a crash mid-send does not count one) */
  attempts: number
  /** not before this time (0: at once) */
  nextAttemptAt: number
  lastAttemptAt?: number
  /** the upstream's last refusal, or its acceptance for a delivered one */
  lastError?: string
  lastResponse?: string
}

/** A message's state: in its accept record in the log, as its changes leave it (in a v1 spool, the content of `<id>.json`). */
export interface SpoolState {
  v: 1
  id: string
  /** '' for a bounce (a DSN we send): it must never bounce back */
  envelopeFrom: string
  acceptedAt: number
  /** size of the message */
  bytes: number
  /** the spool id of the message this one reports on, when it is a DSN we generated */
  bounceOf?: string
  recipients: RecipientState[]
}

/** A message in the spool, as the relay sees it (change it only through markDelivered/markFailed). */
export type SpoolEntry = Readonly<Omit<SpoolState, 'recipients'>> & { readonly recipients: readonly Readonly<RecipientState>[] }

export interface AcceptEntry {
  envelopeFrom: string
  recipients: readonly SpoolRecipient[]
  raw: Buffer | AsyncIterable<Buffer>
  bounceOf?: string
}

/** A pending copy the relay takes to send: recipient `index` of `entry`. */
export interface DueCopy {
  entry: SpoolEntry
  index: number
}

/** The file operations that make data durable; tests replace them to count or hold them. */
export interface SpoolSync {
  /** fdatasync of a segment just written (`path`) */
  file: (fh: FileHandle, path: string) => Promise<void>
  /** fsync of the folder (a segment made or deleted; v1 renames and removals) */
  dir: (dir: string) => Promise<void>
}

export interface MailSpoolOptions {
  dir: string
  /** bytes of messages the spool may hold (SMTP_SPOOL_MAX_BYTES); beyond it accept() throws SpoolFullError */
  maxBytes: number
  log: Logger
  now?: () => number
  sync?: Partial<SpoolSync>
  /** a segment is replaced once it holds this many bytes (tests: small) */
  segmentBytes?: number
  /** segments kept before the oldest one's pending messages are written again at the end */
  maxSegments?: number
}

/** What open() found. */
export interface SpoolRecovery {
  /** messages with recipients still to deliver, oldest first */
  entries: readonly SpoolEntry[]
  /** writes never acknowledged (a log record cut short; a v1 message whose accept() did not finish), or v1 messages
   * already done, removed or ignored */
  discarded: number
}

/** The spool holds SMTP_SPOOL_MAX_BYTES already: the front end answers 452 4.3.1 (the client tries again later). */
export class SpoolFullError extends CodedError<'STORAGE_FULL'> {
  constructor (bytes: number, maxBytes: number) {
    super('STORAGE_FULL', `SMTP spool full: a message of ${bytes} bytes does not fit under SMTP_SPOOL_MAX_BYTES (${maxBytes})`)
  }
}

const ID = /^[0-9a-z]{9}[0-9a-f]{12}$/
const SEGMENT = /^(\d{12})\.log$/
const EML = '.eml'
const JSON_EXT = '.json'
const TMP = '.tmp'
const MAGIC = Buffer.from('IYSLOG2\n')
const ACCEPT = 0x41 // 'A'
const CHANGE = 0x43 // 'C'
const DROP = 0x44 // 'D'
const SEGMENT_BYTES = 16 * 1024 * 1024
const MAX_SEGMENTS = 4
/** Bytes of just-accepted messages kept in memory for the relay (remember()). */
const RECENT_BYTES = 64 * 1024 * 1024

/** Random bytes for ids, drawn 4,096 ids at a time (randomBytes(6) per message was 1.4 % of the benchmark's main thread). */
let idRandom = Buffer.alloc(0)
let idRandomAt = 0

/** Time first (messages sort in arrival order), then random so that ids never repeat across restarts. */
function newId (): string {
  if (idRandomAt + 6 > idRandom.length) { idRandom = randomBytes(6 * 4096); idRandomAt = 0 }
  idRandomAt += 6
  return Date.now().toString(36).padStart(9, '0') + idRandom.toString('hex', idRandomAt - 6, idRandomAt)
}

const isFinal = (r: RecipientState): boolean => r.state !== 'pending'

/** An item of the due index that still stands for its copy (see QueuedCopy). */
const isCurrent = (item: QueuedCopy): boolean => !item.slot.removed && item.slot.queued[item.index] === item.seq

const segmentName = (n: number): string => String(n).padStart(12, '0') + '.log'

/** A record: header (length, crc32 of the payload), then the payload's parts. */
function record (parts: Buffer[]): Buffer[] {
  let length = 0
  let crc = 0
  for (const p of parts) { length += p.length; crc = crc32(p, crc) }
  const h = Buffer.allocUnsafe(8)
  h.writeUInt32LE(length, 0)
  h.writeUInt32LE(crc >>> 0, 4)
  return [h, ...parts]
}

/** An 'A' record's parts; the message's bytes are at `MESSAGE_AT(stateLength)` from the record's start. */
function acceptRecord (state: SpoolState, raw: Buffer): { parts: Buffer[], messageAt: number } {
  const text = Buffer.from(JSON.stringify(state))
  const head = Buffer.allocUnsafe(5)
  head[0] = ACCEPT
  head.writeUInt32LE(text.length, 1)
  return { parts: record([head, text, raw]), messageAt: 8 + 5 + text.length }
}

const jsonRecord = (kind: number, value: unknown): Buffer[] => record([Buffer.from([kind]), Buffer.from(JSON.stringify(value))])

/** A record read from a segment. */
export type LogRecord =
  | { kind: 'A', state: SpoolState, messageAt: number }
  | { kind: 'C', id: string, u: [number, RecipientState][] }
  | { kind: 'D', id: string }

/**
 * The records of a segment, in order, and where the valid ones end (< the file's length: a write cut short). Null
 * when the file is not a segment (no magic: made but never synced, so it holds nothing acknowledged).
 */
export function parseSegment (file: Buffer): { records: LogRecord[], end: number } | null {
  if (file.length < MAGIC.length || !file.subarray(0, MAGIC.length).equals(MAGIC)) return null
  const records: LogRecord[] = []
  let at = MAGIC.length
  while (at + 8 <= file.length) {
    const length = file.readUInt32LE(at)
    const crc = file.readUInt32LE(at + 4)
    if (length < 1 || at + 8 + length > file.length) break
    const payload = file.subarray(at + 8, at + 8 + length)
    if (crc32(payload) !== crc) break
    try {
      if (payload[0] === ACCEPT) {
        const stateLength = payload.readUInt32LE(1)
        const state = JSON.parse(payload.subarray(5, 5 + stateLength).toString('utf8')) as SpoolState
        if (state.v !== 1 || typeof state.id !== 'string' || !Array.isArray(state.recipients) || state.bytes !== length - 5 - stateLength) break
        records.push({ kind: 'A', state, messageAt: at + 8 + 5 + stateLength })
      } else if (payload[0] === CHANGE) {
        const c = JSON.parse(payload.subarray(1).toString('utf8')) as { id: string, u: [number, RecipientState][] }
        records.push({ kind: 'C', id: c.id, u: c.u })
      } else if (payload[0] === DROP) {
        records.push({ kind: 'D', id: (JSON.parse(payload.subarray(1).toString('utf8')) as { id: string }).id })
      } else break
    } catch { break } // a record that checks but does not parse: not ours
    at += 8 + length
  }
  return { records, end: at }
}

/** Applies a segment's records, in order, to the messages pending so far. */
function replay (found: Map<string, Slot>, n: number, records: readonly LogRecord[]): void {
  for (const r of records) {
    if (r.kind === 'A') {
      found.delete(r.state.id) // a message written again (see the header) moves to the end
      found.set(r.state.id, newSlot(r.state, false, n, r.messageAt))
    } else if (r.kind === 'C') {
      const slot = found.get(r.id)
      if (slot === undefined) continue
      for (const [i, state] of r.u) if (slot.state.recipients[i] !== undefined) slot.state.recipients[i] = state
      if (slot.state.recipients.every(isFinal)) found.delete(r.id)
    } else {
      found.delete(r.id)
    }
  }
}

/** What the log in `dir` lists as pending, read only (tests, inspection): what open() would load, v1 files aside. */
export async function readSpoolLog (dir: string): Promise<SpoolState[]> {
  const found = new Map<string, Slot>()
  const segs = (await readdir(dir)).map(name => SEGMENT.exec(name)).filter(m => m !== null).map(m => Number(m[1])).sort((a, b) => a - b)
  for (const n of segs) {
    const parsed = parseSegment(await readFile(join(dir, segmentName(n))))
    if (parsed !== null) replay(found, n, parsed.records)
  }
  return [...found.values()].map(s => s.state)
}

/** In memory: a message's state and where its bytes are. */
interface Slot {
  state: SpoolState
  /** v1: `<id>.eml` and `<id>.json` (a spool from before); else in segment `seg` at `at` */
  v1: boolean
  seg: number
  at: number
  /** recipients whose change is not on disk (its write failed): the next change record carries them */
  unsaved: Set<number>
  /** v1: bumped on every change; `saved` is the version last on disk */
  version: number
  saved: number
  writing: Promise<void> | null
  removed: boolean
  /** by recipient: the seq of its item in the due index, 0 when it has none (taken, final) */
  queued: number[]
}

/**
 * An item of the due index. Superseded (left where it is, skipped when it comes up) once its slot is removed or its
 * recipient's `queued` is another seq: cheaper than finding it in the heap.
 */
interface QueuedCopy {
  /** nextAttemptAt; for a copy never tried (due at once), acceptedAt: its place among the due ones */
  at: number
  seq: number
  slot: Slot
  index: number
}

interface Segment {
  n: number
  path: string
  /** messages whose current 'A' is here and that are not done */
  live: number
}

/** Records waiting for the next write; `done` once they are synced (or failed). */
interface Pending {
  parts: Buffer[]
  /** told where the record starts before it is written */
  placed?: (seg: number, at: number) => void
  resolve: () => void
  reject: (err: unknown) => void
}

export class MailSpool {
  readonly dir: string
  private readonly maxBytes: number
  private readonly log: Logger
  private readonly now: () => number
  private readonly sync: SpoolSync
  private readonly segmentBytes: number
  private readonly maxSegments: number
  private readonly slots = new Map<string, Slot>()
  /** oldest first */
  private readonly segments = new Map<number, Segment>()
  private lastSegment = 0
  private current: { n: number, path: string, fh: FileHandle, end: number, broken: boolean } | null = null
  private queue: Pending[] = []
  private flushing = false
  private collecting: Promise<void> | null = null
  /** bytes of messages, including those being written (reserved as they arrive) */
  private used = 0
  private dirSyncRunning: Promise<void> | null = null
  private dirSyncNext: Promise<void> | null = null
  /** just-accepted messages' bytes, for the relay (remember()) */
  private readonly recent = new Map<string, Buffer>()
  private recentBytes = 0
  /** pending copies not taken (see the header): those never tried, then the others by nextAttemptAt */
  private fresh: QueuedCopy[] = []
  private freshHead = 0
  private readonly retries = new DueHeap<QueuedCopy>()
  private dueSeq = 0

  constructor (opts: MailSpoolOptions) {
    this.dir = opts.dir
    this.maxBytes = opts.maxBytes
    this.log = opts.log
    this.now = opts.now ?? Date.now
    this.sync = { file: opts.sync?.file ?? (fh => fh.datasync()), dir: opts.sync?.dir ?? fsyncDir }
    this.segmentBytes = opts.segmentBytes ?? SEGMENT_BYTES
    this.maxSegments = opts.maxSegments ?? MAX_SEGMENTS
  }

  /** Bytes of messages held (and being written): what maxBytes bounds. */
  get usedBytes (): number { return this.used }

  /** Messages with recipients not yet final. */
  get size (): number { return this.slots.size }

  /** Loads what a previous run left (see the file header) and cleans what was never acknowledged. */
  async open (): Promise<SpoolRecovery> {
    await mkdir(this.dir, { recursive: true })
    const names = (await readdir(this.dir)).sort()
    const emls = new Set<string>()
    const jsons: string[] = []
    const segs: number[] = []
    let discarded = 0
    for (const name of names) {
      if (name.endsWith(TMP)) { await this.unlinkQuiet(name); continue }
      const seg = SEGMENT.exec(name)
      if (seg !== null) { segs.push(Number(seg[1])); continue }
      const dot = name.indexOf('.')
      const id = name.slice(0, dot)
      if (!ID.test(id)) continue
      const ext = name.slice(dot)
      if (ext === EML) emls.add(id)
      else if (ext === JSON_EXT) jsons.push(id)
    }
    segs.sort((a, b) => a - b)
    const found = new Map<string, Slot>()
    for (const n of segs) {
      const path = join(this.dir, segmentName(n))
      const file = await readFile(path)
      this.lastSegment = Math.max(this.lastSegment, n)
      this.segments.set(n, { n, path, live: 0 })
      const parsed = parseSegment(file)
      if (parsed === null) continue // made but never synced: nothing in it was acknowledged
      if (parsed.end < file.length) {
        discarded++
        this.log.warn({ segment: segmentName(n), at: parsed.end, bytes: file.length - parsed.end }, 'SMTP spool: a write cut short (never acknowledged) ends a segment')
      }
      replay(found, n, parsed.records)
    }
    for (const slot of found.values()) {
      this.segments.get(slot.seg)!.live++
      this.used += slot.state.bytes
    }
    for (const id of jsons) {
      let state: SpoolState
      try {
        state = JSON.parse(await readFile(join(this.dir, id + JSON_EXT), 'utf8')) as SpoolState
        if (state.v !== 1 || state.id !== id || !Array.isArray(state.recipients)) throw new Error('not a spool state (v1)')
      } catch (err) {
        // Written whole and fsynced before it was renamed into place: this is damage, not a crash. Leave the files
        // for a person to look at; they are counted against the limit since they hold disk.
        this.log.error({ err, spoolId: id }, 'SMTP spool: unreadable state file left in place')
        emls.delete(id)
        this.used += await sizeOf(join(this.dir, id + EML))
        continue
      }
      const hasEml = emls.delete(id)
      if (state.recipients.every(isFinal)) {
        await this.unlinkQuiet(id + JSON_EXT)
        if (hasEml) await this.unlinkQuiet(id + EML)
        discarded++
        continue
      }
      if (!hasEml) {
        // remove() syncs the folder between the two unlinks, so this takes damage from outside us.
        this.log.error({ spoolId: id, recipients: state.recipients.filter(r => !isFinal(r)).length }, 'SMTP spool: message file missing; its pending copies cannot be sent')
        await this.unlinkQuiet(id + JSON_EXT)
        discarded++
        continue
      }
      this.used += state.bytes
      found.set(id, newSlot(state, true, 0, 0))
    }
    for (const id of emls) { await this.unlinkQuiet(id + EML); discarded++ } // accept() never resolved for these
    const slots = [...found.values()].sort((a, b) => a.state.id < b.state.id ? -1 : a.state.id > b.state.id ? 1 : 0)
    for (const slot of slots) {
      this.slots.set(slot.state.id, slot)
      for (let i = 0; i < slot.state.recipients.length; i++) if (!isFinal(slot.state.recipients[i]!)) this.enqueue(slot, i)
    }
    await this.collect() // segments with nothing pending, oldest first (this run writes to a new one)
    if (discarded > 0) this.log.info({ discarded }, 'SMTP spool: removed or ignored writes never acknowledged, and messages already done')
    return { entries: slots.map(s => s.state), discarded }
  }

  /**
   * Appends the message and its state to the log and resolves with the message's id once they are synced. Throws
   * SpoolFullError when it would take the spool over maxBytes, or the disk's error (nothing of it is listed then).
   * `ignoreLimit` is for our own bounces: small, and refusing one would lose it.
   */
  async accept (entry: AcceptEntry, opts: { ignoreLimit?: boolean } = {}): Promise<string> {
    if (entry.recipients.length === 0) throw new TypeError('a spooled message needs at least one recipient')
    const id = newId()
    const limit = opts.ignoreLimit === true ? Infinity : this.maxBytes
    let reserved = 0
    const reserve = (n: number): void => {
      if (this.used + n > limit) throw new SpoolFullError(reserved + n, this.maxBytes)
      this.used += n
      reserved += n
    }
    try {
      let raw: Buffer
      if (Buffer.isBuffer(entry.raw)) {
        reserve(entry.raw.length)
        raw = entry.raw
      } else {
        const chunks: Buffer[] = []
        for await (const chunk of entry.raw) { reserve(chunk.length); chunks.push(chunk) }
        raw = Buffer.concat(chunks, reserved)
      }
      const state: SpoolState = {
        v: 1,
        id,
        envelopeFrom: entry.envelopeFrom,
        acceptedAt: this.now(),
        bytes: raw.length,
        ...(entry.bounceOf !== undefined ? { bounceOf: entry.bounceOf } : {}),
        recipients: entry.recipients.map(r => ({
          address: r.address, brandCode: r.brandCode, iysCode: r.iysCode, commercial: r.commercial, messageId: r.messageId,
          state: 'pending', attempts: 0, nextAttemptAt: 0
        }))
      }
      const { parts, messageAt } = acceptRecord(state, raw)
      const slot = newSlot(state, false, 0, 0)
      // Counted in its segment from the moment it is placed there (no collect() can take the segment meanwhile).
      try {
        await this.append(parts, (seg, at) => { slot.seg = seg; slot.at = at + messageAt; this.segments.get(seg)!.live++ })
      } catch (err) {
        const seg = this.segments.get(slot.seg)
        if (seg !== undefined && slot.seg !== 0) seg.live--
        throw err
      }
      this.slots.set(id, slot)
      for (let i = 0; i < state.recipients.length; i++) this.enqueue(slot, i)
      this.remember(id, raw)
      return id
    } catch (err) {
      this.used -= reserved
      throw err
    }
  }

  /**
   * Messages with a recipient pending and due at `now`, oldest first (live views: they change as copies go). A walk
   * over every message: for inspection and tests; the relay takes copies with takeDue().
   */
  * due (now: number): Generator<SpoolEntry> {
    for (const slot of this.slots.values()) {
      if (!slot.removed && slot.state.recipients.some(r => r.state === 'pending' && r.nextAttemptAt <= now)) yield slot.state
    }
  }

  /**
   * Takes the copy that became due first of those due at `now` (nextAttemptAt ≤ now; see the header): it leaves the
   * index until markFailed gives it a new time, or requeue() puts it back (taken but not sent). O(log N).
   */
  takeDue (now: number): DueCopy | undefined {
    const fresh = this.freshTop()
    let retry = this.retryTop()
    if (retry !== undefined && retry.at > now) retry = undefined
    let top: QueuedCopy
    if (fresh !== undefined && (retry === undefined || fresh.at <= retry.at)) {
      top = fresh
      this.freshHead++
    } else if (retry !== undefined) {
      top = retry
      this.retries.pop()
    } else return undefined
    top.slot.queued[top.index] = 0
    return { entry: top.slot.state, index: top.index }
  }

  /** When the soonest pending copy not taken is due: 0 for one never tried, Infinity for none. */
  get nextDueAt (): number {
    return this.freshTop() !== undefined ? 0 : this.retryTop()?.at ?? Infinity
  }

  /** Puts a copy taken with takeDue() back in the index, at its nextAttemptAt (no-op when done, removed or there). */
  requeue (id: string, index: number): void {
    const slot = this.slots.get(id)
    const r = slot?.state.recipients[index]
    if (slot !== undefined && r !== undefined && !isFinal(r) && slot.queued[index] === 0) this.enqueue(slot, index)
  }

  get (id: string): SpoolEntry | undefined {
    return this.slots.get(id)?.state
  }

  /** Every message held, oldest first (live views). */
  * entries (): Generator<SpoolEntry> {
    for (const slot of this.slots.values()) if (!slot.removed) yield slot.state
  }

  /** The message's bytes as received. */
  read (id: string): Promise<Buffer> {
    const raw = this.recent.get(id)
    if (raw !== undefined) return Promise.resolve(raw)
    const slot = this.slots.get(id)
    if (slot === undefined || slot.v1) return readFile(join(this.dir, id + EML))
    return readAt(join(this.dir, segmentName(slot.seg)), slot.at, slot.state.bytes)
  }

  /**
   * Recipient `index` of message `id` was accepted by the upstream. Resolves once that is on disk; `true` when it
   * was the message's last pending recipient (the message is then removed).
   */
  markDelivered (id: string, index: number, response: string): Promise<boolean> {
    return this.change(id, index, r => {
      r.state = 'delivered'
      r.attempts++
      r.lastAttemptAt = this.now()
      r.lastResponse = response
    })
  }

  /**
   * Recipient `index` of message `id` was refused: again at `retryAt`, or for good (bounced) when it is null.
   * Resolves as markDelivered does.
   */
  markFailed (id: string, index: number, error: string, retryAt: number | null): Promise<boolean> {
    return this.change(id, index, r => {
      r.attempts++
      r.lastAttemptAt = this.now()
      r.lastError = error
      if (retryAt === null) r.state = 'bounced'
      else r.nextAttemptAt = retryAt
    })
  }

  /** Deletes a message and its state (done, or given up on by an operator). Does nothing for an unknown id. */
  async remove (id: string): Promise<void> {
    const slot = this.slots.get(id)
    if (slot === undefined || slot.removed) return
    this.drop(slot)
    if (slot.v1) {
      while (slot.writing !== null) await slot.writing.catch(() => {}) // its rename must not bring the state back
      await this.removeV1(slot)
      return
    }
    try {
      await this.append(jsonRecord(DROP, { id }))
    } catch (err) {
      this.used -= slot.state.bytes // its segment stays: the next start lists it again
      throw err
    }
    this.release(slot)
  }

  /** Waits for writes under way (shutdown, after the relay stopped), then closes the current segment. */
  async close (): Promise<void> {
    for (const slot of [...this.slots.values()]) while (slot.writing !== null) await slot.writing.catch(() => {})
    while (this.flushing) await new Promise(resolve => setImmediate(resolve))
    while (this.collecting !== null) await this.collecting
    const current = this.current
    this.current = null
    if (current !== null) await current.fh.close()
  }

  private async change (id: string, index: number, f: (r: RecipientState) => void): Promise<boolean> {
    const slot = this.slots.get(id)
    const r = slot?.state.recipients[index]
    if (slot === undefined || r === undefined) throw new RangeError(`SMTP spool: no recipient ${index} in message ${id}`)
    if (r.state !== 'pending') throw new Error(`SMTP spool: recipient ${index} of message ${id} is ${r.state} already`)
    f(r)
    // Indexed at once, as it is in memory: a write that fails leaves it pending there, and retried at its time.
    if (isFinal(r)) slot.queued[index] = 0
    else this.enqueue(slot, index)
    const done = slot.state.recipients.every(isFinal)
    if (slot.v1) {
      slot.version++
      if (done) { await this.remove(id); return true }
      await this.saveV1(slot)
      return false
    }
    if (done) this.drop(slot) // listed no more at once; its segment may go once this is on disk
    slot.unsaved.add(index)
    const changed = [...slot.unsaved]
    slot.unsaved.clear()
    try {
      await this.append(jsonRecord(CHANGE, { id, u: changed.map(i => [i, slot.state.recipients[i]]) }))
    } catch (err) {
      for (const i of changed) slot.unsaved.add(i) // the next change of this message writes them too
      if (done) this.used -= slot.state.bytes // and its segment stays: the next start sends it again
      throw err
    }
    if (done) this.release(slot)
    return done
  }

  /** Indexes recipient `index` of `slot` (see the header), superseding any item it had. */
  private enqueue (slot: Slot, index: number): void {
    const at = slot.state.recipients[index]!.nextAttemptAt
    const item: QueuedCopy = { at: at === 0 ? slot.state.acceptedAt : at, seq: ++this.dueSeq, slot, index }
    slot.queued[index] = item.seq
    if (at === 0) this.fresh.push(item)
    else this.retries.push(item)
  }

  /** The first copy never tried, superseded items dropped on the way. */
  private freshTop (): QueuedCopy | undefined {
    while (this.freshHead < this.fresh.length && !isCurrent(this.fresh[this.freshHead]!)) this.freshHead++
    if (this.freshHead >= 1024 && this.freshHead * 2 >= this.fresh.length) { // the taken half goes: amortised O(1) a copy
      this.fresh = this.fresh.slice(this.freshHead)
      this.freshHead = 0
    }
    return this.fresh[this.freshHead]
  }

  /** The retry due soonest, superseded items dropped on the way. */
  private retryTop (): QueuedCopy | undefined {
    for (let top = this.retries.peek(); top !== undefined; top = this.retries.peek()) {
      if (isCurrent(top)) return top
      this.retries.pop()
    }
    return undefined
  }

  /** A message leaves the lists (done or removed); its record that says so is still to be written. */
  private drop (slot: Slot): void {
    slot.removed = true
    this.slots.delete(slot.state.id)
    this.forget(slot.state.id)
  }

  /** The record that says a message is done is on disk: its segment may go. */
  private release (slot: Slot): void {
    this.used -= slot.state.bytes
    const seg = this.segments.get(slot.seg)
    if (seg !== undefined && --seg.live === 0) void this.collect()
  }

  /**
   * Queues records for the next write; resolves once they are synced. One writer: a batch is every record queued
   * while the previous batch was written and synced.
   */
  private append (parts: Buffer[], placed?: (seg: number, at: number) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ parts, ...(placed !== undefined ? { placed } : {}), resolve, reject })
      if (!this.flushing) {
        this.flushing = true
        void this.flush()
      }
    })
  }

  private async flush (): Promise<void> {
    try {
      await new Promise<void>(resolve => { queueMicrotask(resolve) }) // what the same tick queues goes in the same batch
      while (this.queue.length > 0) {
        let batch: Pending[] = []
        try {
          if (this.current === null || this.current.broken || this.current.end >= this.segmentBytes) await this.newSegment()
          batch = this.queue // what came while the segment was made goes too
          this.queue = []
          const seg = this.current!
          const parts: Buffer[] = []
          let at = seg.end
          for (const p of batch) {
            p.placed?.(seg.n, at)
            for (const b of p.parts) { parts.push(b); at += b.length }
          }
          try {
            await writeAll(seg.fh, parts, seg.end)
            await this.sync.file(seg.fh, seg.path)
          } catch (err) {
            // Never acknowledged: cut it off, or a write that landed whole before its fdatasync failed would be read back
            // at the next start as a message we refused (and the client sends again). Best effort, as the journal does.
            await seg.fh.truncate(seg.end).catch(() => {})
            seg.broken = true // what follows goes to a new segment; this one ends where its last good write did
            throw err
          }
          seg.end = at
          for (const p of batch) p.resolve()
        } catch (err) {
          if (batch.length === 0) { batch = this.queue; this.queue = [] } // no segment to write to
          for (const p of batch) p.reject(err)
        }
      }
    } finally {
      this.flushing = false
    }
  }

  /** A new segment, its magic synced and its name durable, before any record goes in it. */
  private async newSegment (): Promise<void> {
    const n = this.lastSegment + 1
    const path = join(this.dir, segmentName(n))
    const fh = await open(path, 'wx')
    try {
      this.lastSegment = n
      await writeAll(fh, [MAGIC], 0)
      await this.sync.file(fh, path)
      await this.syncDir()
    } catch (err) {
      await fh.close().catch(() => {})
      throw err
    }
    const old = this.current
    this.current = { n, path, fh, end: MAGIC.length, broken: false }
    this.segments.set(n, { n, path, live: 0 })
    if (old !== null) {
      await old.fh.close().catch((err: unknown) => { this.log.warn({ err }, 'SMTP spool: closing a segment failed') })
      void this.collect()
    }
  }

  /**
   * Deletes segments with nothing pending, oldest first, each unlink durable before the next; when more than
   * maxSegments are kept, writes the oldest one's pending messages again at the end so that it can go.
   */
  private collect (): Promise<void> {
    if (this.collecting !== null) return this.collecting
    const run = (async (): Promise<void> => {
      try {
        for (;;) {
          const oldest = this.segments.values().next().value
          if (oldest === undefined || oldest.n === this.current?.n) return
          if (oldest.live > 0) {
            if (this.segments.size <= this.maxSegments || this.current === null) return
            let pending = 0
            for (const slot of this.slots.values()) if (!slot.v1 && slot.seg === oldest.n) pending += slot.state.bytes
            // Mostly pending still (the upstream down for a while): copying it forward would only churn the log.
            if (pending * 4 > this.segmentBytes) return
            await this.moveForward(oldest)
            if (oldest.live > 0) return
          }
          await unlink(oldest.path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
          await this.syncDir()
          this.segments.delete(oldest.n)
        }
      } catch (err) {
        this.log.warn({ err }, 'SMTP spool: could not delete an old segment (tried again later)')
      }
    })()
    // (It may have finished already: nothing to delete.)
    this.collecting = run.finally(() => { if (this.collecting === done) this.collecting = null })
    const done = this.collecting
    return done
  }

  /** A new 'A' at the end, with the current state, for each pending message of `seg`. */
  private async moveForward (seg: Segment): Promise<void> {
    const moving = [...this.slots.values()].filter(s => !s.v1 && s.seg === seg.n)
    await Promise.all(moving.map(async slot => {
      const raw = await this.read(slot.state.id)
      if (slot.removed) return
      const { parts, messageAt } = acceptRecord(slot.state, raw)
      let to = { seg: 0, at: 0 }
      await this.append(parts, (n, at) => { to = { seg: n, at: at + messageAt } })
      if (slot.removed) return // done meanwhile: its record followed the copy
      seg.live--
      slot.seg = to.seg
      slot.at = to.at
      this.segments.get(to.seg)!.live++
    }))
  }

  /**
   * v1: writes the slot's state until the version on disk is at least the one asked for. Changes made while a write
   * is under way are written by the next one, together.
   */
  private async saveV1 (slot: Slot): Promise<void> {
    const wanted = slot.version
    while (slot.saved < wanted && !slot.removed) {
      if (slot.writing !== null) { await slot.writing.catch(() => {}); continue }
      const version = slot.version
      slot.writing = this.writeStateV1(slot.state.id, JSON.stringify(slot.state)).then(() => { slot.saved = Math.max(slot.saved, version) }).finally(() => { slot.writing = null })
      await slot.writing // a failed write rejects here; the next change writes everything again
    }
  }

  /** v1: `<id>.json.tmp`, fsync, rename over `<id>.json`, folder fsync. */
  private async writeStateV1 (id: string, text: string): Promise<void> {
    const fh = await open(join(this.dir, id + JSON_EXT + TMP), 'w')
    try {
      await fh.writeFile(text)
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(join(this.dir, id + JSON_EXT + TMP), join(this.dir, id + JSON_EXT))
    await this.syncDir()
  }

  /** v1: state first, made durable, then the message (a crash in between leaves an .eml alone, which open() removes). */
  private async removeV1 (slot: Slot): Promise<void> {
    const id = slot.state.id
    // A state that cannot be removed keeps its message too (the next start sends what it still lists as pending).
    await unlink(join(this.dir, id + JSON_EXT)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
    await this.syncDir()
    await this.unlinkQuiet(id + EML)
    this.used -= slot.state.bytes
  }

  /**
   * Keeps a just-accepted message's bytes for the relay's first copies, so that it need not read them back from
   * disk; at most RECENT_BYTES, oldest first.
   */
  private remember (id: string, raw: Buffer): void {
    this.recent.set(id, raw)
    this.recentBytes += raw.length
    for (const [old, bytes] of this.recent) {
      if (this.recentBytes <= RECENT_BYTES) break
      this.recent.delete(old)
      this.recentBytes -= bytes.length
    }
  }

  private forget (id: string): void {
    const raw = this.recent.get(id)
    if (raw !== undefined) { this.recent.delete(id); this.recentBytes -= raw.length }
  }

  /**
   * fsync of the folder, shared: callers that arrive while one runs share the next, which starts when it ends (a
   * sync already running may have missed their change).
   */
  private syncDir (): Promise<void> {
    if (this.dirSyncNext !== null) return this.dirSyncNext
    if (this.dirSyncRunning === null) {
      this.dirSyncRunning = this.sync.dir(this.dir).finally(() => { this.dirSyncRunning = null })
      return this.dirSyncRunning
    }
    this.dirSyncNext = this.dirSyncRunning.catch(() => {}).then(() => {
      this.dirSyncNext = null
      return this.syncDir()
    })
    return this.dirSyncNext
  }

  private async unlinkQuiet (name: string): Promise<void> {
    await unlink(join(this.dir, name)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') this.log.warn({ err, file: name }, 'SMTP spool: could not remove a file')
    })
  }
}

function newSlot (state: SpoolState, v1: boolean, seg: number, at: number): Slot {
  return { state, v1, seg, at, unsaved: new Set(), version: 0, saved: 0, writing: null, removed: false, queued: new Array<number>(state.recipients.length).fill(0) }
}

/** Writes `parts` at `position`, all of them (writev may write less); the position after them. */
async function writeAll (fh: FileHandle, parts: Buffer[], position: number): Promise<number> {
  let at = position
  let rest = parts.filter(p => p.length > 0)
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, at)
    at += bytesWritten
    let n = bytesWritten
    while (rest.length > 0 && n >= rest[0]!.length) { n -= rest[0]!.length; rest = rest.slice(1) }
    if (n > 0) rest = [rest[0]!.subarray(n), ...rest.slice(1)]
  }
  return at
}

async function readAt (path: string, position: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r')
  try {
    const buf = Buffer.allocUnsafe(length)
    let got = 0
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, position + got)
      if (bytesRead === 0) throw new Error(`SMTP spool: ${path} ends before its message`)
      got += bytesRead
    }
    return buf
  } finally {
    await fh.close()
  }
}

async function fsyncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try { await fh.sync() } finally { await fh.close() }
}

async function sizeOf (path: string): Promise<number> {
  try { return (await stat(path)).size } catch { return 0 }
}
