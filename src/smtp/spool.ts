// The SMTP spool: mail the front end accepted, on local disk until every recipient's copy is delivered or bounced.
// accept() resolves only once the message and its state are on disk (file fdatasync, then folder fsync), and the front
// end answers 250 only then: a message we acknowledged survives a crash of the process or the machine.
//
// Format (v2, written since 2026-12): one file per message, `<id>.msg` (id time-ordered: a listing is roughly in
// arrival order), a sequence of records, each `u32 length, u32 crc32 of the payload` (little-endian) then the payload:
//   magic "IYSSPL2\n" (8 bytes), then
//   record 1   the message as received after DATA (dot-unstuffed, line endings as sent)
//   record 2   its envelope and per-recipient state (SpoolState, JSON)
//   record 3…  a state change: JSON {"u":[[index, RecipientState], …]}, appended in place (write, fdatasync)
// accept() writes records 1 and 2 in one writev into a new file ('wx'), fdatasyncs it and then fsyncs the folder; the
// folder fsync is shared by every accept (and remove) that reaches it while one runs (group commit: one per window,
// not one per message). A file's own fdatasync cannot be shared, but they run in parallel and the file system
// commits them together. So a message costs open, writev, fdatasync, close and a share of a folder fsync (v1: two
// files, two fsyncs, a rename and a folder fsync each), a change costs open, write, fdatasync, close (v1: a
// rewrite, rename and folder fsync), and a done message one unlink and a share of a folder fsync.
// At open(): a file whose records 1 and 2 do not check (length, crc) is an accept cut short (never acknowledged:
// removed); a torn last change is a change never acknowledged (ignored, and cut off the file); a message whose
// recipients are all final is done but not yet removed (removed). open() reads every file whole (the crc of the
// message is what tells a torn accept from a complete one). The last recipient to become final removes the message:
// no file is the durable record that nothing is left to do.
//
// v1 spools (`<id>.eml` the message, `<id>.json` its state replaced whole via `<id>.json.tmp` + rename) are still
// read and served in their own format until they are done; new messages are always v2. So a downgrade is not
// possible once v2 files exist (the old code would not see them).
//
// One process per folder: two gateways on one spool would send every copy twice.

import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, stat, truncate, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import { CodedError } from '../domain/errors.js'
import type { Logger } from '../log.js'

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

/** A message's state: record 2 of `<id>.msg` (and, in a v1 spool, the content of `<id>.json`). */
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

/** The file operations that make data durable; tests replace them to count or hold them. */
export interface SpoolSync {
  /** fdatasync of a file just written (`path`) */
  file: (fh: FileHandle, path: string) => Promise<void>
  /** fsync of the folder (new names, removals) */
  dir: (dir: string) => Promise<void>
}

export interface MailSpoolOptions {
  dir: string
  /** bytes of messages the spool may hold (SMTP_SPOOL_MAX_BYTES); beyond it accept() throws SpoolFullError */
  maxBytes: number
  log: Logger
  now?: () => number
  sync?: Partial<SpoolSync>
}

/** What open() found. */
export interface SpoolRecovery {
  /** messages with recipients still to deliver, oldest first */
  entries: readonly SpoolEntry[]
  /** files of messages never acknowledged (an accept cut short) or already done, removed */
  discarded: number
}

/** The spool holds SMTP_SPOOL_MAX_BYTES already: the front end answers 452 4.3.1 (the client tries again later). */
export class SpoolFullError extends CodedError<'STORAGE_FULL'> {
  constructor (bytes: number, maxBytes: number) {
    super('STORAGE_FULL', `SMTP spool full: a message of ${bytes} bytes does not fit under SMTP_SPOOL_MAX_BYTES (${maxBytes})`)
  }
}

const ID = /^[0-9a-z]{9}[0-9a-f]{12}$/
const MSG = '.msg'
const EML = '.eml'
const JSON_EXT = '.json'
const TMP = '.tmp'
const MAGIC = Buffer.from('IYSSPL2\n')
/** Offset of the message's bytes in `<id>.msg`: the magic and record 1's header. */
const BODY_AT = MAGIC.length + 8
/** Bytes of just-accepted messages kept in memory for the relay (remember()). */
const RECENT_BYTES = 64 * 1024 * 1024

/** Time first (a listing sorts in arrival order), then random so that ids never repeat across restarts. */
const newId = (): string => Date.now().toString(36).padStart(9, '0') + randomBytes(6).toString('hex')

const isFinal = (r: RecipientState): boolean => r.state !== 'pending'

/** A record's header: length and crc32 of `payload` (which may be given in parts). */
function recordHeader (length: number, crc: number): Buffer {
  const h = Buffer.allocUnsafe(8)
  h.writeUInt32LE(length, 0)
  h.writeUInt32LE(crc >>> 0, 4)
  return h
}

const record = (payload: Buffer): Buffer => Buffer.concat([recordHeader(payload.length, crc32(payload)), payload])

/**
 * The records of a `<id>.msg` file: the message, its state with the changes applied, and where the valid records end
 * (`end` < the file's length: a torn change at the end). Null when record 1 or 2 does not check: an accept cut short.
 */
export function parseMessageFile (file: Buffer): { raw: Buffer, state: SpoolState, end: number } | null {
  if (file.length < BODY_AT || !file.subarray(0, MAGIC.length).equals(MAGIC)) return null
  let at = MAGIC.length
  const next = (): Buffer | null => {
    if (at + 8 > file.length) return null
    const length = file.readUInt32LE(at)
    const crc = file.readUInt32LE(at + 4)
    if (at + 8 + length > file.length) return null
    const payload = file.subarray(at + 8, at + 8 + length)
    if (crc32(payload) !== crc) return null
    at += 8 + length
    return payload
  }
  const raw = next()
  const text = raw === null ? null : next()
  if (raw === null || text === null) return null
  let state: SpoolState
  try {
    state = JSON.parse(text.toString('utf8')) as SpoolState
  } catch { return null }
  if (state.v !== 1 || !Array.isArray(state.recipients) || state.bytes !== raw.length) return null
  for (let end = at, u = next(); u !== null; end = at, u = next()) {
    let change: { u: [number, RecipientState][] }
    try { change = JSON.parse(u.toString('utf8')) as typeof change } catch { at = end; break } // cannot be: it checked
    for (const [i, r] of change.u) if (state.recipients[i] !== undefined) state.recipients[i] = r
  }
  return { raw, state, end: at }
}

/** In memory: the state plus what serialises its writes. */
interface Slot {
  state: SpoolState
  /** v2: `<id>.msg`, changes appended at `end`; v1: `<id>.eml` and `<id>.json` (a spool from before) */
  v1: boolean
  end: number
  /** recipients changed since the last write (v2) */
  dirty: Set<number>
  /** bumped on every change; `saved` is the version last on disk */
  version: number
  saved: number
  writing: Promise<void> | null
  removed: boolean
}

export class MailSpool {
  readonly dir: string
  private readonly maxBytes: number
  private readonly log: Logger
  private readonly now: () => number
  private readonly sync: SpoolSync
  private readonly slots = new Map<string, Slot>()
  /** bytes of messages, including those being written (reserved as they arrive) */
  private used = 0
  private dirSyncRunning: Promise<void> | null = null
  private dirSyncNext: Promise<void> | null = null
  /** just-accepted messages' bytes, for the relay (remember()) */
  private readonly recent = new Map<string, Buffer>()
  private recentBytes = 0

  constructor (opts: MailSpoolOptions) {
    this.dir = opts.dir
    this.maxBytes = opts.maxBytes
    this.log = opts.log
    this.now = opts.now ?? Date.now
    this.sync = { file: opts.sync?.file ?? (fh => fh.datasync()), dir: opts.sync?.dir ?? fsyncDir }
  }

  /** Bytes of messages held (and being written): what maxBytes bounds. */
  get usedBytes (): number { return this.used }

  /** Messages with recipients not yet final. */
  get size (): number { return this.slots.size }

  /** Loads what a previous run left (see the file header) and cleans what was never acknowledged. */
  async open (): Promise<SpoolRecovery> {
    await mkdir(this.dir, { recursive: true })
    const names = (await readdir(this.dir)).sort()
    const msgs: string[] = []
    const emls = new Set<string>()
    const jsons: string[] = []
    let discarded = 0
    for (const name of names) {
      if (name.endsWith(TMP)) { await this.unlinkQuiet(name); continue }
      const dot = name.indexOf('.')
      const id = name.slice(0, dot)
      if (!ID.test(id)) continue
      const ext = name.slice(dot)
      if (ext === MSG) msgs.push(id)
      else if (ext === EML) emls.add(id)
      else if (ext === JSON_EXT) jsons.push(id)
    }
    const found: Slot[] = []
    for (const id of msgs) {
      const file = await readFile(join(this.dir, id + MSG))
      const parsed = parseMessageFile(file)
      if (parsed === null || parsed.state.id !== id) {
        // Written whole and synced before accept() resolved: what does not check was never acknowledged.
        this.log.warn({ spoolId: id, bytes: file.length }, 'SMTP spool: removed a message whose accept() did not finish')
        await this.unlinkQuiet(id + MSG)
        discarded++
        continue
      }
      const { state, end } = parsed
      if (state.recipients.every(isFinal)) {
        await this.unlinkQuiet(id + MSG)
        discarded++
        continue
      }
      // A change cut short at the end: never acknowledged. Cut it off so that the next change follows a valid one.
      if (end < file.length) await truncate(join(this.dir, id + MSG), end)
      this.used += state.bytes
      found.push(newSlot(state, false, end))
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
      found.push(newSlot(state, true, 0))
    }
    for (const id of emls) { await this.unlinkQuiet(id + EML); discarded++ } // accept() never resolved for these
    found.sort((a, b) => a.state.id < b.state.id ? -1 : a.state.id > b.state.id ? 1 : 0)
    for (const slot of found) this.slots.set(slot.state.id, slot)
    if (discarded > 0) this.log.info({ discarded }, 'SMTP spool: removed messages never acknowledged or already done')
    return { entries: found.map(s => s.state), discarded }
  }

  /**
   * Writes the message and its state, syncs the file and the folder, and only then resolves with the message's id.
   * Throws SpoolFullError when it would take the spool over maxBytes (nothing is left behind then), or the disk's
   * error. `ignoreLimit` is for our own bounces: small, and refusing one would lose it.
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
    const stateOf = (bytes: number): SpoolState => ({
      v: 1,
      id,
      envelopeFrom: entry.envelopeFrom,
      acceptedAt: this.now(),
      bytes,
      ...(entry.bounceOf !== undefined ? { bounceOf: entry.bounceOf } : {}),
      recipients: entry.recipients.map(r => ({
        address: r.address, brandCode: r.brandCode, iysCode: r.iysCode, commercial: r.commercial, messageId: r.messageId,
        state: 'pending', attempts: 0, nextAttemptAt: 0
      }))
    })
    let fh: FileHandle | null = null
    let made = false
    try {
      let state: SpoolState
      let end: number
      if (Buffer.isBuffer(entry.raw)) {
        reserve(entry.raw.length) // refused before a file is made
        state = stateOf(entry.raw.length)
        const stateRecord = record(Buffer.from(JSON.stringify(state)))
        const head = Buffer.concat([MAGIC, recordHeader(entry.raw.length, crc32(entry.raw))])
        fh = await open(join(this.dir, id + MSG), 'wx')
        made = true
        end = await writeAll(fh, [head, entry.raw, stateRecord], 0)
      } else {
        fh = await open(join(this.dir, id + MSG), 'wx')
        made = true
        let at = BODY_AT
        let crc = 0
        for await (const chunk of entry.raw) {
          reserve(chunk.length)
          crc = crc32(chunk, crc)
          at = await writeAll(fh, [chunk], at)
        }
        state = stateOf(reserved)
        await writeAll(fh, [MAGIC, recordHeader(reserved, crc)], 0)
        end = await writeAll(fh, [record(Buffer.from(JSON.stringify(state)))], at)
      }
      await this.sync.file(fh, join(this.dir, id + MSG))
      const written = fh
      fh = null
      // The folder's sync is asked for at once (the close need not come first): every accept whose data is synced
      // by the time the running folder sync ends shares the next one.
      await Promise.all([written.close(), this.syncDir()])
      this.slots.set(id, newSlot(state, false, end))
      if (Buffer.isBuffer(entry.raw)) this.remember(id, entry.raw)
      return id
    } catch (err) {
      if (fh !== null) await fh.close().catch(() => {})
      this.used -= reserved
      // Never acknowledged: none of it may stay. (Were it to stay after a crash, it is either torn, and open() removes
      // it, or whole, and it is sent though the client saw no 250: what SMTP does when a reply is lost.)
      if (made) await this.unlinkQuiet(id + MSG)
      throw err
    }
  }

  /** Messages with a recipient pending and due at `now`, oldest first (live views: they change as copies go). */
  * due (now: number): Generator<SpoolEntry> {
    for (const slot of this.slots.values()) {
      if (!slot.removed && slot.state.recipients.some(r => r.state === 'pending' && r.nextAttemptAt <= now)) yield slot.state
    }
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
    return readAt(join(this.dir, id + MSG), BODY_AT, slot.state.bytes)
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
    slot.removed = true
    this.slots.delete(id)
    this.forget(id)
    while (slot.writing !== null) await slot.writing.catch(() => {}) // its rename must not bring the state back
    if (slot.v1) {
      // State first, made durable, then the message: a crash in between leaves an .eml alone, which open() removes.
      // A state that cannot be removed keeps its message too (the next start sends what it still lists as pending).
      await unlink(join(this.dir, id + JSON_EXT)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
      await this.syncDir()
      await this.unlinkQuiet(id + EML)
    } else {
      // Durable before the change that made the message done is reported: else a restart would send it again.
      await unlink(join(this.dir, id + MSG)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
      await this.syncDir()
    }
    this.used -= slot.state.bytes
  }

  /** Waits for state writes under way (shutdown, after the relay stopped). */
  async close (): Promise<void> {
    for (const slot of [...this.slots.values()]) while (slot.writing !== null) await slot.writing.catch(() => {})
  }

  private async change (id: string, index: number, f: (r: RecipientState) => void): Promise<boolean> {
    const slot = this.slots.get(id)
    const r = slot?.state.recipients[index]
    if (slot === undefined || r === undefined) throw new RangeError(`SMTP spool: no recipient ${index} in message ${id}`)
    if (r.state !== 'pending') throw new Error(`SMTP spool: recipient ${index} of message ${id} is ${r.state} already`)
    f(r)
    slot.version++
    slot.dirty.add(index)
    if (slot.state.recipients.every(isFinal)) { await this.remove(id); return true }
    await this.save(slot)
    return false
  }

  /**
   * Writes the slot's state until the version on disk is at least the one asked for. Changes made while a write is
   * under way are written by the next one, together: a message whose recipients finish at once costs one write per
   * round, not one per recipient.
   */
  private async save (slot: Slot): Promise<void> {
    const wanted = slot.version
    while (slot.saved < wanted && !slot.removed) {
      if (slot.writing !== null) { await slot.writing.catch(() => {}); continue }
      const version = slot.version
      let write: Promise<void>
      if (slot.v1) {
        write = this.writeState(slot.state.id, JSON.stringify(slot.state))
      } else {
        const changed = [...slot.dirty]
        slot.dirty.clear()
        const text = JSON.stringify({ u: changed.map(i => [i, slot.state.recipients[i]]) })
        write = this.append(slot, record(Buffer.from(text))).catch((err: unknown) => {
          for (const i of changed) slot.dirty.add(i) // the next write carries them
          throw err
        })
      }
      slot.writing = write.then(() => { slot.saved = Math.max(slot.saved, version) }).finally(() => { slot.writing = null })
      await slot.writing // a failed write rejects here; the next change writes everything again
    }
  }

  /** A change record at the end of `<id>.msg`, synced. (A failed write leaves `end` where it was: it is overwritten.) */
  private async append (slot: Slot, rec: Buffer): Promise<void> {
    const fh = await open(join(this.dir, slot.state.id + MSG), 'r+')
    try {
      const end = await writeAll(fh, [rec], slot.end)
      await this.sync.file(fh, join(this.dir, slot.state.id + MSG))
      slot.end = end
    } finally {
      await fh.close()
    }
  }

  /** v1: `<id>.json.tmp`, fsync, rename over `<id>.json`, folder fsync. */
  private async writeState (id: string, text: string): Promise<void> {
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

  /**
   * Keeps a just-accepted message's bytes for the relay's first copies, so that it need not read them back from
   * disk (open, fstat, read, close per message in the smtp benchmark's profile); at most RECENT_BYTES, oldest first.
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
   * fsync of the folder (new names, removals), shared (group commit): callers that arrive while one runs share the
   * next, which starts when it ends (a sync already running may have missed their change).
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

function newSlot (state: SpoolState, v1: boolean, end: number): Slot {
  return { state, v1, end, dirty: new Set(), version: 0, saved: 0, writing: null, removed: false }
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
