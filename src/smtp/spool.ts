// The SMTP spool: mail the front end accepted, on local disk until every recipient's copy is delivered or bounced.
// accept() resolves only once the message and its state are fsynced (file and folder), and the front end answers
// 250 only then: a message we acknowledged survives a crash of the process or the machine.
//
// Files in SMTP_SPOOL_DIR, per message `<id>` (time-ordered, so a listing is roughly in arrival order):
//   <id>.eml        the message as received after DATA (dot-unstuffed, line endings as sent), written once
//   <id>.json       its envelope and per-recipient state (SpoolState); its presence is what makes the message
//                   accepted: written after <id>.eml, replaced whole (<id>.json.tmp, fsync, rename, folder fsync)
//   <id>.json.tmp   a state being written; never read
// At open(): a .tmp is a write that did not finish (removed); an .eml without its .json is a message whose accept()
// never resolved, so never acknowledged (removed); a .json whose recipients are all final is a message done but not
// yet removed (removed). The last recipient to become final removes the message: no files is the durable record
// that nothing is left to do, so the last state is never written only to be deleted.
//
// One process per folder: two gateways on one spool would send every copy twice.

import { randomBytes } from 'node:crypto'
import { mkdir, open, readdir, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
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

/** The content of `<id>.json`. */
export interface SpoolState {
  v: 1
  id: string
  /** '' for a bounce (a DSN we send): it must never bounce back */
  envelopeFrom: string
  acceptedAt: number
  /** size of `<id>.eml` */
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

export interface MailSpoolOptions {
  dir: string
  /** bytes of messages the spool may hold (SMTP_SPOOL_MAX_BYTES); beyond it accept() throws SpoolFullError */
  maxBytes: number
  log: Logger
  now?: () => number
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
const EML = '.eml'
const JSON_EXT = '.json'
const TMP = '.tmp'
/** Bytes of just-accepted messages kept in memory for the relay (remember()). */
const RECENT_BYTES = 64 * 1024 * 1024

/** Time first (a listing sorts in arrival order), then random so that ids never repeat across restarts. */
const newId = (): string => Date.now().toString(36).padStart(9, '0') + randomBytes(6).toString('hex')

const isFinal = (r: RecipientState): boolean => r.state !== 'pending'

/** In memory: the state plus what serialises its writes. */
interface Slot {
  state: SpoolState
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
  private readonly slots = new Map<string, Slot>()
  /** bytes of .eml files, including those being written (reserved as they arrive) */
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
    let discarded = 0
    for (const name of names) {
      if (name.endsWith(TMP)) { await this.unlinkQuiet(name); continue }
      const dot = name.indexOf('.')
      const id = name.slice(0, dot)
      if (!ID.test(id)) continue
      const ext = name.slice(dot)
      if (ext === EML) emls.add(id)
      else if (ext === JSON_EXT) jsons.push(id)
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
      this.slots.set(id, { state, version: 0, saved: 0, writing: null, removed: false })
    }
    for (const id of emls) { await this.unlinkQuiet(id + EML); discarded++ } // accept() never resolved for these
    if (discarded > 0) this.log.info({ discarded }, 'SMTP spool: removed messages never acknowledged or already done')
    return { entries: [...this.slots.values()].map(s => s.state), discarded }
  }

  /**
   * Writes the message and its state, fsyncs both and the folder, and only then resolves with the message's id.
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
    let fh: FileHandle | null = null
    try {
      if (Buffer.isBuffer(entry.raw)) reserve(entry.raw.length) // refused before a file is made
      fh = await open(join(this.dir, id + EML), 'wx')
      if (Buffer.isBuffer(entry.raw)) {
        await fh.writeFile(entry.raw)
      } else {
        for await (const chunk of entry.raw) {
          reserve(chunk.length)
          await fh.writeFile(chunk)
        }
      }
      const message = fh
      const state: SpoolState = {
        v: 1,
        id,
        envelopeFrom: entry.envelopeFrom,
        acceptedAt: this.now(),
        bytes: reserved,
        ...(entry.bounceOf !== undefined ? { bounceOf: entry.bounceOf } : {}),
        recipients: entry.recipients.map(r => ({
          address: r.address, brandCode: r.brandCode, iysCode: r.iysCode, commercial: r.commercial, messageId: r.messageId,
          state: 'pending', attempts: 0, nextAttemptAt: 0
        }))
      }
      // The message's fsync and the state's write and fsync run together (the 250 waits on a chain of file
      // operations: at 8 connections the smtp benchmark's gateway was latency-bound, its main thread 60 % idle);
      // the state is renamed into place only once both are on disk, then the folder fsync makes both names durable.
      const stateText = JSON.stringify(state)
      const syncMessage = async (): Promise<void> => {
        try { await message.sync() } finally { fh = null; await message.close() }
      }
      await Promise.all([syncMessage(), this.writeStateTmp(id, stateText)])
      await this.placeState(id)
      this.slots.set(id, { state, version: 0, saved: 0, writing: null, removed: false })
      if (Buffer.isBuffer(entry.raw)) this.remember(id, entry.raw)
      return id
    } catch (err) {
      if (fh !== null) await fh.close().catch(() => {})
      this.used -= reserved
      // Never acknowledged: none of it may stay (a state renamed into place before a failed folder sync included).
      await this.unlinkQuiet(id + JSON_EXT)
      await this.unlinkQuiet(id + JSON_EXT + TMP)
      await this.unlinkQuiet(id + EML)
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
    return raw !== undefined ? Promise.resolve(raw) : readFile(join(this.dir, id + EML))
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
    // State first, made durable, then the message: a crash in between leaves an .eml alone, which open() removes.
    // A state that cannot be removed keeps its message too (the next start sends what it still lists as pending).
    await unlink(join(this.dir, id + JSON_EXT)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
    await this.syncDir()
    await this.unlinkQuiet(id + EML)
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
      const text = JSON.stringify(slot.state)
      slot.writing = this.writeState(slot.state.id, text).then(() => { slot.saved = Math.max(slot.saved, version) }).finally(() => { slot.writing = null })
      await slot.writing // a failed write rejects here; the next change writes everything again
    }
  }

  /** `<id>.json.tmp`, fsync, rename over `<id>.json`, folder fsync. */
  private async writeState (id: string, text: string): Promise<void> {
    await this.writeStateTmp(id, text)
    await this.placeState(id)
  }

  private async writeStateTmp (id: string, text: string): Promise<void> {
    const fh = await open(join(this.dir, id + JSON_EXT + TMP), 'w')
    try {
      await fh.writeFile(text)
      await fh.sync()
    } finally {
      await fh.close()
    }
  }

  private async placeState (id: string): Promise<void> {
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
   * fsync of the folder (new names, renames, removals), shared: callers that arrive while one runs share the next,
   * which starts when it ends (a sync already running may have missed their change).
   */
  private syncDir (): Promise<void> {
    if (this.dirSyncNext !== null) return this.dirSyncNext
    if (this.dirSyncRunning === null) {
      this.dirSyncRunning = fsyncDir(this.dir).finally(() => { this.dirSyncRunning = null })
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

async function fsyncDir (dir: string): Promise<void> {
  const fh = await open(dir, 'r')
  try { await fh.sync() } finally { await fh.close() }
}

async function sizeOf (path: string): Promise<number> {
  try { return (await stat(path)).size } catch { return 0 }
}
