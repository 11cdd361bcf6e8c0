// The decision journal: append-only segment files on local disk, written before a decision takes effect.
//
// append() writes one request's lines with a single write() to the current segment, so once it returns the lines
// survive a crash of this process (they are in the kernel's page cache). An fsync on a group-commit timer
// (DECISION_FSYNC_MS; 0: before append() returns) makes them survive a machine crash too. rotate() closes the current
// segment (new lines go to a new one) and, once nothing is pinned in it any more, fsyncs and closes it: it is then
// ready to be shipped to Postgres, its name being the batch id. A request that forwards messages pins its segment
// between the decision lines and the carrier outcome lines, so both are always in the same segment.
//
// Files in the directory: `<boot>-<n>.jnl` (segments), `<boot>.live` (this boot's heartbeat: pid and host, touched
// every few seconds, removed by a clean close). A segment of another boot is shippable once that boot is dead: no
// heartbeat file; on this host, its pid gone (or our own); on another host sharing the folder, a heartbeat older
// than STALE_MS.

import { randomBytes } from 'node:crypto'
import { closeSync, fsync, fsyncSync, ftruncateSync, openSync, writeSync, close as closeFd, open as openFd } from 'node:fs'
import { readdir, readFile, stat, unlink, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'

export const SEGMENT_EXT = '.jnl'
export const LEGACY_EXT = '.tsv'
const LIVE_EXT = '.live'
const HEARTBEAT_MS = 2_000
const STALE_MS = 30_000
const REUSED_PID_STALE_MS = 600_000

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
  private readonly host = hostname()

  constructor (opts: JournalOptions) {
    this.opts = opts
    // Time first, so that a directory listing is roughly in write order; random, so that it never repeats.
    this.bootId = Date.now().toString(36).padStart(9, '0') + randomBytes(4).toString('hex')
  }

  async start (): Promise<void> {
    const live = JSON.stringify({ pid: process.pid, host: this.host })
    await writeFile(this.livePath(), live)
    // Rewritten, not touched: a heartbeat another gateway removed (it took this one for dead) comes back.
    const beat = setInterval(() => { writeFile(this.livePath(), live).catch(() => {}) }, HEARTBEAT_MS)
    beat.unref()
    this.timers.push(beat)
    if (this.opts.fsyncMs > 0) {
      const sync = setInterval(() => { void this.syncAll() }, this.opts.fsyncMs)
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
    this.write(seg, text)
    seg.lines += lines
    if (pin) seg.pins++
    if (seg.lines >= this.opts.fullLines) this.opts.onFull()
    return seg
  }

  /** Writes more lines to a pinned segment (a request's carrier outcomes). */
  appendTo (seg: Segment, text: string): void {
    this.write(seg, text)
  }

  unpin (seg: Segment): void {
    if (--seg.pins === 0 && seg.closing) void this.finish(seg)
  }

  /** New lines go to a new segment from now on; the current one becomes ready once its pins are released. */
  rotate (): void {
    const seg = this.current
    if (seg === null || seg.lines === 0) return
    this.current = null
    seg.closing = true
    if (seg.pins === 0) void this.finish(seg)
  }

  /** Own closed segments, then those of dead boots and spool files of older versions (`.tsv`): the ones to ship now. */
  async shippable (): Promise<string[]> {
    const own = new Set([...this.ready])
    const out = [...this.ready]
    const files = await readdir(this.opts.dir)
    const alive = new Map<string, boolean>()
    for (const f of files.sort()) {
      if (f.endsWith(LEGACY_EXT)) { out.push(f); continue } // written whole (renamed into place) by older versions
      if (!f.endsWith(SEGMENT_EXT) || own.has(f)) continue
      const boot = f.slice(0, f.lastIndexOf('-'))
      if (boot === this.bootId) continue // open or closing: not yet
      let dead = alive.get(boot)
      if (dead === undefined) { dead = await this.isDead(boot); alive.set(boot, dead) }
      if (dead) out.push(f)
    }
    return out
  }

  /** Reads a segment; `done()` after it is safely in Postgres (or in quarantine) removes it. */
  read (name: string): Promise<string> {
    return readFile(join(this.opts.dir, name), 'utf8')
  }

  async done (name: string): Promise<void> {
    await unlink(join(this.opts.dir, name)).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
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
    const buf = Buffer.from(text)
    try {
      let off = 0
      while (off < buf.length) off += writeSync(seg.fd, buf, off, buf.length - off, seg.bytes + off)
      if (this.opts.fsyncMs === 0) fsyncSync(seg.fd)
    } catch (err) {
      // Leave no partial line behind for the next request's lines to be glued to.
      try { ftruncateSync(seg.fd, seg.bytes) } catch { /* the segment is then read up to its last complete line */ }
      throw err
    }
    seg.bytes += buf.length
    seg.dirty = true
  }

  private async finish (seg: Segment): Promise<void> {
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

  private async isDead (boot: string): Promise<boolean> {
    const path = join(this.opts.dir, boot + LIVE_EXT)
    let info: { pid?: number, host?: string }
    let mtime: number
    try {
      ;[info, mtime] = await Promise.all([readFile(path, 'utf8').then(t => JSON.parse(t) as { pid?: number, host?: string }), stat(path).then(s => s.mtimeMs)])
    } catch (err) {
      // No heartbeat: it closed cleanly (or crashed before its first). Anything else (a heartbeat caught while it is
      // being rewritten) says nothing: ask again next time.
      return (err as NodeJS.ErrnoException).code === 'ENOENT'
    }
    const age = Date.now() - mtime
    let dead: boolean
    if (info.host === this.host && typeof info.pid === 'number') {
      // Same host: the pid tells. Our own pid under another boot id is a previous life of this process (a container
      // restarted); a pid that exists may have been reused, so only a heartbeat silent for very long counts then.
      dead = info.pid === process.pid || !pidExists(info.pid) || age > REUSED_PID_STALE_MS
    } else {
      dead = age > STALE_MS
    }
    if (dead) await unlink(path).catch(() => {})
    return dead
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
