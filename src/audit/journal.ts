// The decision journal: append-only segment files on local disk, written before a decision takes effect.
//
// append() writes one request's lines with a single write() to the current segment, so once it returns the lines
// survive a crash of this process (they are in the kernel's page cache). Inside deferAppends() (the SMPP front end,
// and /v1/check until the event loop's next check phase) the appends are written together, in one write(), and the
// caller waits for that write before anything leaves on them. An fsync on a group-commit timer
// (DECISION_FSYNC_MS; 0: before append() returns) makes them survive a machine crash too. rotate() closes the current
// segment (new lines go to a new one) and, once nothing is pinned in it any more, fsyncs and closes it: it is then
// ready to be shipped to Postgres, its name being the batch id. A request that forwards messages pins its segment
// between the decision lines and the carrier outcome lines, so both are always in the same segment.
//
// Files in the directory: `<boot>-<n>.jnl` (segments), `<boot>.live` (this boot's heartbeat: its identity, rewritten
// every few seconds, removed by a clean close). A segment of another boot is shipped only once that boot is done
// writing it (judgeRun): no heartbeat file, or its pid gone (or our own) in our own pid namespace on our own kernel.
// Anything else (another host, another container on this host: a pid proves nothing there) is judged by how long its
// heartbeat has been silent: after STALE_MS its closed segments ship, its newest one (which a live run may still be
// writing) only after WIDE_STALE_MS. Silence is measured on one clock: the heartbeat's mtime against ours on this
// kernel, and for another host the time since we last saw its mtime change (its clock may be off from ours).

import { randomBytes } from 'node:crypto'
import { closeSync, fsync, fsyncSync, ftruncateSync, openSync, writeSync, close as closeFd, open as openFd } from 'node:fs'
import { readdir, readFile, readlink, stat, unlink, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import type { SpoolFigures } from '../store/freshness.js'

export const SEGMENT_EXT = '.jnl'
export const LEGACY_EXT = '.tsv'
const LIVE_EXT = '.live'
const HEARTBEAT_MS = 2_000
/** A heartbeat silent this long: the run is taken for stopped, its closed segments are shipped. */
export const STALE_MS = 30_000
/**
 * The wide margin: a heartbeat silent this long is a dead run even without a proof, and its newest segment (the one
 * a live run writes) is shipped too; also how long a pid in use may be a reused one.
 */
export const WIDE_STALE_MS = 600_000

/** Who wrote a heartbeat: `boot` is the kernel's boot id, `pidNs` the pid namespace (Linux; absent elsewhere). */
export interface RunIdentity { pid: number, host: string, boot?: string, pidNs?: string }

/** dead: every segment may ship; stale: all but its newest; alive: none. */
export type Liveness = 'alive' | 'stale' | 'dead'

/**
 * Whether another run (its heartbeat `beat`, silent for `silentMs`) is done writing its segments. A pid tells only
 * within the same pid namespace of the same kernel; elsewhere (a container on this host with our own pid 1, another
 * host) only the heartbeat's silence does, and the newest segment needs the wide margin: a live run stopped that long
 * (SIGSTOP, a hung disk) loses what it writes after we took it for dead.
 */
export function judgeRun (beat: Partial<RunIdentity>, silentMs: number, self: RunIdentity, pidExists: (pid: number) => boolean): Liveness {
  const samePidSpace = beat.host === self.host && beat.boot === self.boot && beat.pidNs === self.pidNs
  if (samePidSpace && typeof beat.pid === 'number') {
    // Our own pid under another boot id is a previous life of this process; a pid in use may have been reused.
    if (beat.pid === self.pid || !pidExists(beat.pid)) return 'dead'
    return silentMs > WIDE_STALE_MS ? 'dead' : 'alive'
  }
  return silentMs > WIDE_STALE_MS ? 'dead' : silentMs > STALE_MS ? 'stale' : 'alive'
}

/** The file operations whose failure the log must survive (a seam for tests; the real fs by default). */
/**
 * Lists a spool folder for the metrics (store/freshness.ts): segments (and older versions' spool files) not yet in
 * Postgres, and the records Postgres refused (each a `.tsv` in quarantine/ beside a `.json` of why). A file shipped
 * while it is listed is simply not counted.
 */
export async function spoolFigures (dir: string): Promise<SpoolFigures> {
  const f: SpoolFigures = { segments: 0, bytes: 0, oldestMs: null, quarantined: 0 }
  for (const name of await readdir(dir)) {
    if (!name.endsWith(SEGMENT_EXT) && !name.endsWith(LEGACY_EXT)) continue
    const st = await stat(join(dir, name)).catch(() => null)
    if (st === null) continue
    f.segments++
    f.bytes += st.size
    f.oldestMs = Math.min(f.oldestMs ?? Infinity, st.mtimeMs)
  }
  f.quarantined = (await readdir(join(dir, 'quarantine')).catch(() => [])).filter(n => n.endsWith(LEGACY_EXT)).length
  return f
}

export interface JournalFs {
  unlink: (path: string) => Promise<void>
}

export interface Segment {
  readonly id: string
  readonly path: string
  fd: number
  bytes: number
  lines: number
  /** requests between their decision lines and their outcome lines */
  pins: number
  /** rotated away: no new requests write to it */
  closing: boolean
  syncing: Promise<void> | null
  dirty: boolean
}

export interface JournalOptions {
  dir: string
  /** group-commit interval; 0: fsync in every append() */
  fsyncMs: number
  /** a segment reached this many lines: the owner should rotate and ship soon */
  fullLines: number
  onFull: () => void
  onSyncError: (err: Error) => void
  fs?: JournalFs
}

/** The appends of deferAppends() calls this turn to one segment, written together at its end. */
interface Batch {
  text: string
  lines: number
  pins: number
  written: Promise<void>
  resolve: () => void
  reject: (err: Error) => void
}

/**
 * When deferred appends are written: 'tick', once the current callback's promise callbacks have run
 * (process.nextTick: one socket's 'data' event carries a whole window of SMPP PDUs); 'loop', in the event loop's next
 * check phase (setImmediate): uWebSockets.js calls each HTTP request in a callback of its own, after which Node
 * runs the ticks, so only the check phase gathers the requests of one poll (19 per write at 78,000 req/s, measured).
 */
export type DeferUntil = 'tick' | 'loop'

/** Set while a deferAppends() callback runs: the write its appends joined, and when it is due. */
let deferScope: { written: Promise<void> | null, until: DeferUntil } | null = null
/** What deferAppends() gives as `written` when `fn` appended nothing: nothing to wait for. */
export const NOTHING_DEFERRED: Promise<void> = Promise.resolve()

/**
 * Runs `fn` (synchronous) with the journal's appends deferred: what it appends is written together with every other
 * deferred append of this turn of the event loop, in one write() once the turn's promise callbacks have run
 * (process.nextTick). `written` resolves once that write returned (the lines then survive a crash of this process, as
 * after a plain append()), and rejects when the disk refused it: then its lines and pins are undone and nothing may
 * act on them (no outcome may follow). Without an append in `fn`, `written` is resolved.
 */
// Two write()s per SMPP message (its decision, its carrier outcome) were 14 % of the front end's CPU at 12,000
// submit_sm/s (bench smpp profile, 2026-12-08); one write per turn carries a whole window's lines.
export function deferAppends<T> (fn: () => T, until: DeferUntil = 'tick'): { value: T, written: Promise<void> } {
  const outer = deferScope
  const scope: { written: Promise<void> | null, until: DeferUntil } = { written: null, until }
  deferScope = scope
  try {
    const value = fn()
    return { value, written: scope.written ?? NOTHING_DEFERRED }
  } finally {
    deferScope = outer
  }
}

const fsyncP = (fd: number): Promise<void> => new Promise((resolve, reject) => { fsync(fd, err => (err === null ? resolve() : reject(err))) })

export class Journal {
  readonly bootId: string
  private readonly opts: JournalOptions
  private current: Segment | null = null
  private segNo = 0
  /** own segments closed and ready to ship, oldest first */
  private readonly ready: string[] = []
  private dirSyncPending = false
  /** segments opened and not yet closed */
  private unfinished = 0
  private timers: NodeJS.Timeout[] = []
  private self: RunIdentity = { pid: process.pid, host: hostname() }
  private readonly fs: JournalFs
  /** another host's heartbeat: its last mtime and when we first saw it (our clock) */
  private readonly beatSeen = new Map<string, { mtime: number, at: number }>()
  /** deferred appends waiting for the end of this turn, per segment */
  private readonly batches = new Map<Segment, Batch>()
  /** a writeBatches() is due at the end of this tick / in the next check phase */
  private tickFlush = false
  private loopFlush = false

  constructor (opts: JournalOptions) {
    this.opts = opts
    this.fs = opts.fs ?? { unlink }
    // Time first, so that a directory listing is roughly in write order; random, so that it never repeats.
    this.bootId = Date.now().toString(36).padStart(9, '0') + randomBytes(4).toString('hex')
  }

  /** This run's identity, as its heartbeat says it. */
  get identity (): RunIdentity {
    return this.self
  }

  async start (): Promise<void> {
    const [boot, pidNs] = await Promise.all([
      readFile('/proc/sys/kernel/random/boot_id', 'utf8').then(t => t.trim(), () => undefined),
      readlink('/proc/self/ns/pid').catch(() => undefined)
    ])
    this.self = { ...this.self, ...(boot !== undefined ? { boot } : {}), ...(pidNs !== undefined ? { pidNs } : {}) }
    const live = JSON.stringify(this.self)
    await writeFile(this.livePath(), live)
    // Rewritten, not touched: a heartbeat another gateway removed (it took this one for dead) comes back.
    const beat = setInterval(() => { writeFile(this.livePath(), live).catch(() => {}) }, HEARTBEAT_MS)
    beat.unref()
    this.timers.push(beat)
    if (this.opts.fsyncMs > 0) {
      const sync = setInterval(() => { this.syncAll().catch(this.opts.onSyncError) }, this.opts.fsyncMs)
      sync.unref()
      this.timers.push(sync)
    }
  }

  /**
   * Writes `text` (`lines` complete lines) with one write() to the current segment; with `pin`, the segment is kept
   * open for a later appendTo() and must be unpinned. Throws when the disk refuses it: nothing of it remains then.
   */
  append (text: string, lines: number, pin: boolean): Segment {
    const seg = this.current ?? this.openSegment()
    if (deferScope !== null) {
      const b = this.batchOf(seg, deferScope.until)
      b.text += text
      b.lines += lines
      if (pin) b.pins++
      deferScope.written = b.written
    } else {
      this.writeBatch(seg) // what was deferred before this goes first: the file keeps the order of the appends
      this.write(seg, text)
    }
    seg.lines += lines
    if (pin) seg.pins++
    if (seg.lines >= this.opts.fullLines) this.opts.onFull()
    return seg
  }

  /** Writes more lines to a pinned segment (a request's carrier outcomes). */
  appendTo (seg: Segment, text: string): void {
    if (deferScope !== null) {
      const b = this.batchOf(seg, deferScope.until)
      b.text += text
      deferScope.written = b.written
      return
    }
    this.writeBatch(seg)
    this.write(seg, text)
  }

  unpin (seg: Segment): void {
    if (--seg.pins === 0 && seg.closing) this.finish(seg).catch(this.opts.onSyncError)
  }

  private batchOf (seg: Segment, until: DeferUntil): Batch {
    // Written at the earliest time any of its appends asked for: a 'tick' append does not wait for the check phase.
    if (until === 'tick' ? !this.tickFlush : !this.tickFlush && !this.loopFlush) {
      if (until === 'tick') { this.tickFlush = true; process.nextTick(this.writeBatches) } else { this.loopFlush = true; setImmediate(this.writeBatches) }
    }
    let b = this.batches.get(seg)
    if (b === undefined) {
      let resolve!: () => void
      let reject!: (err: Error) => void
      const written = new Promise<void>((res, rej) => { resolve = res; reject = rej })
      written.catch(() => {}) // its waiters hear of a failure; nobody waiting is no unhandled rejection
      b = { text: '', lines: 0, pins: 0, written, resolve, reject }
      this.batches.set(seg, b)
    }
    return b
  }

  private readonly writeBatches = (): void => {
    this.tickFlush = this.loopFlush = false
    for (const seg of [...this.batches.keys()]) this.writeBatch(seg)
  }

  /** Writes a segment's deferred appends, if any; when the disk refuses them they are undone and their waiters told. */
  private writeBatch (seg: Segment): void {
    const b = this.batches.get(seg)
    if (b === undefined) return
    this.batches.delete(seg)
    try {
      this.write(seg, b.text)
    } catch (err) {
      seg.lines -= b.lines
      seg.pins -= b.pins
      b.reject(err as Error)
      if (b.pins > 0 && seg.pins === 0 && seg.closing) this.finish(seg).catch(this.opts.onSyncError) // it held the last pins
      // A deferred carrier outcome has nobody waiting for it: its loss is said here (the decisions' waiters answer it).
      this.opts.onSyncError(new Error(`decision journal: a deferred write failed (${(err as Error).message})`, { cause: err }))
      return
    }
    b.resolve()
  }

  /** New lines go to a new segment from now on; the current one becomes ready once its pins are released. */
  rotate (): void {
    const seg = this.current
    if (seg !== null) this.writeBatch(seg) // before judging it by its lines: they may be undone
    if (seg === null || seg.lines === 0) return
    this.current = null
    seg.closing = true
    if (seg.pins === 0) this.finish(seg).catch(this.opts.onSyncError)
  }

  /**
   * Own closed segments, then those of runs done writing them (judgeRun) and spool files of older versions (`.tsv`):
   * the ones to ship now.
   */
  async shippable (): Promise<string[]> {
    const own = new Set([...this.ready])
    const out = [...this.ready]
    const files = await readdir(this.opts.dir)
    const others = new Map<string, string[]>() // boot → its segments, oldest first
    for (const f of files.sort()) {
      if (f.endsWith(LEGACY_EXT)) { out.push(f); continue } // written whole (renamed into place) by older versions
      if (!f.endsWith(SEGMENT_EXT) || own.has(f)) continue
      const boot = f.slice(0, f.lastIndexOf('-'))
      if (boot === this.bootId) continue // open or closing: not yet
      const list = others.get(boot)
      if (list === undefined) others.set(boot, [f]); else list.push(f)
    }
    for (const [boot, list] of others) {
      const liveness = await this.liveness(boot)
      if (liveness === 'dead') out.push(...list)
      else if (liveness === 'stale') out.push(...list.slice(0, -1)) // its newest may still be written
    }
    return out
  }

  /** Reads a segment; `done()` after it is safely in Postgres (or in quarantine) removes it. */
  read (name: string): Promise<string> {
    return readFile(join(this.opts.dir, name), 'utf8')
  }

  async done (name: string): Promise<void> {
    await this.fs.unlink(join(this.opts.dir, name)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
    const i = this.ready.indexOf(name)
    if (i !== -1) this.ready.splice(i, 1)
  }

  /** Segments waiting (own closed ones; for metrics and /readyz). */
  get waiting (): number {
    return this.ready.length
  }

  /** Rotates, waits until every segment is closed and synced, and stops the timers (after the requests drained). */
  async close (): Promise<void> {
    const seg = this.current
    if (seg !== null) this.writeBatch(seg)
    if (seg !== null && seg.lines === 0) { // opened, but its only write failed
      this.current = null
      closeSync(seg.fd)
      await unlink(seg.path).catch(() => {})
      this.unfinished--
    }
    this.rotate()
    for (const t of this.timers) clearInterval(t)
    while (this.unfinished > 0) await new Promise(resolve => setTimeout(resolve, 5))
  }

  /** Removes the heartbeat: what is left in the directory is shipped by the next start. */
  async release (): Promise<void> {
    await unlink(this.livePath()).catch(() => {})
  }

  private openSegment (): Segment {
    const id = `${this.bootId}-${String(++this.segNo).padStart(8, '0')}${SEGMENT_EXT}`
    const path = join(this.opts.dir, id)
    const fd = openSync(path, 'wx')
    const seg: Segment = { id, path, fd, bytes: 0, lines: 0, pins: 0, closing: false, syncing: null, dirty: false }
    this.current = seg
    this.unfinished++
    if (this.opts.fsyncMs === 0) this.syncDirSync()
    else this.dirSyncPending = true
    return seg
  }

  private write (seg: Segment, text: string): void {
    const length = Buffer.byteLength(text)
    try {
      // The string goes to write() as it is (no Buffer per request); a short write, rare on a local file, resumes
      // from a Buffer at the byte where it stopped.
      let off = writeSync(seg.fd, text, seg.bytes, 'utf8')
      if (off < length) {
        const buf = Buffer.from(text)
        while (off < length) off += writeSync(seg.fd, buf, off, length - off, seg.bytes + off)
      }
      if (this.opts.fsyncMs === 0) fsyncSync(seg.fd)
    } catch (err) {
      // Leave no partial line behind for the next request's lines to be glued to.
      try { ftruncateSync(seg.fd, seg.bytes) } catch { /* the segment is then read up to its last complete line */ }
      throw err
    }
    seg.bytes += length
    seg.dirty = true
  }

  private async finish (seg: Segment): Promise<void> {
    this.writeBatch(seg) // deferred outcomes of its last pinned requests
    try {
      if (seg.syncing !== null) await seg.syncing.catch(() => {})
      await fsyncP(seg.fd)
    } catch (err) {
      this.opts.onSyncError(err as Error)
    }
    await new Promise<void>(resolve => { closeFd(seg.fd, () => resolve()) })
    this.ready.push(seg.id)
    this.unfinished--
  }

  /** The group commit: one fsync per dirty open segment (and the directory, for segments just created). */
  private async syncAll (): Promise<void> {
    const seg = this.current
    if (seg !== null && seg.dirty && seg.syncing === null) {
      seg.dirty = false
      seg.syncing = fsyncP(seg.fd).catch((err: Error) => { seg.dirty = true; this.opts.onSyncError(err) }).finally(() => { seg.syncing = null })
    }
    if (this.dirSyncPending) {
      this.dirSyncPending = false
      openFd(this.opts.dir, 'r', (err, fd) => {
        if (err !== null) return
        fsync(fd, () => { closeFd(fd, () => {}) })
      })
    }
  }

  private syncDirSync (): void {
    const fd = openSync(this.opts.dir, 'r')
    try { fsyncSync(fd) } finally { closeSync(fd) }
  }

  private livePath (): string {
    return join(this.opts.dir, this.bootId + LIVE_EXT)
  }

  private async liveness (boot: string): Promise<Liveness> {
    const path = join(this.opts.dir, boot + LIVE_EXT)
    let beat: Partial<RunIdentity>
    let mtime: number
    try {
      ;[beat, mtime] = await Promise.all([readFile(path, 'utf8').then(t => JSON.parse(t) as Partial<RunIdentity>), stat(path).then(s => s.mtimeMs)])
    } catch (err) {
      // No heartbeat: it closed cleanly (or crashed before its first). Anything else (a heartbeat caught while it is
      // being rewritten) says nothing: ask again next time.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return 'alive'
      this.beatSeen.delete(boot)
      return 'dead'
    }
    const now = Date.now()
    let silentMs: number
    if (beat.host === this.self.host && beat.boot === this.self.boot) {
      silentMs = now - mtime // this kernel's clock stamped it
    } else {
      const seen = this.beatSeen.get(boot)
      if (seen === undefined || seen.mtime !== mtime) this.beatSeen.set(boot, { mtime, at: now })
      silentMs = seen === undefined || seen.mtime !== mtime ? 0 : now - seen.at
    }
    const liveness = judgeRun(beat, silentMs, this.self, pidExists)
    if (liveness === 'dead') { // all of it ships: the heartbeat has nothing left to guard
      this.beatSeen.delete(boot)
      await unlink(path).catch(() => {})
    }
    return liveness
  }
}

function pidExists (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH' // EPERM: it exists, under another user
  }
}
