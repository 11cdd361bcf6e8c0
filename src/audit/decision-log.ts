// The decision log: every decision of /v1/check and /v1/messages, durable on local disk before it takes effect and
// then shipped to Postgres exactly once.
//
// Each request's decisions are one write() to the decision journal (journal.ts, line format in copy-text.ts): a
// /v1/check answer is sent after it, a message is forwarded to its carrier after it. Every DECISION_FLUSH_MS (or
// at 10,000 lines) the journal rotates and each closed segment is shipped as one batch: `INSERT INTO
// decision_batches` (its name is the batch id) + `COPY decisions FROM STDIN` in one transaction, then deleted. A
// segment Postgres cannot take now (down, slow, restarting) stays on disk and is retried: that is the spool. A batch
// whose first attempt did commit although we saw an error is recognised by its id and skipped, so every record lands
// exactly once. A batch Postgres refuses for a value in a row (a data exception, SQLSTATE class 22) is split in halves
// until the refused lines are alone; those go to `quarantine/` beside their reason and the rest lands, so one bad
// line never holds back another. A refusal that is about the table rather than a row (class 23 — a new constraint, a
// missing partition, which is first recreated and retried — or class 42) would refuse every line alike: the segment
// is kept and retried with back-off (counted as spooled), and the segments behind it are still tried. Nothing this
// log starts in the background can reject: a failure (Postgres, a segment file that cannot be removed) is logged and
// retried. At start-up the segments a crashed run left are shipped like any other.
//
// The table is partitioned by day (UTC); partitions are created ahead and those older than the retention dropped.

import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import type { Logger } from 'pino'
import copyStreams from 'pg-copy-streams'
import { inTransaction } from '../store/pg.js'
import type { Pool } from '../store/pg.js'
import type { CheckQuery, CheckResult } from '../check/checker.js'
import { GatewayError } from '../domain/errors.js'
import { esc, opt } from '../formats/copy-text.js'
import { COLUMNS, segmentToCopy } from './copy-text.js'
import { Journal, type JournalFs, type Segment } from './journal.js'
import { settlesWithin } from '../util/settle.js'

export interface DecisionLogOptions {
  pool: Pool
  spoolDir: string
  log: Logger
  flushMs?: number
  /** group-commit fsync interval of the journal; 0: fsync before every answer. Default 50. */
  fsyncMs?: number
  retentionDays?: number
  /** Called with counts for metrics. */
  onWritten?: (rows: number) => void
  onSpooled?: (rows: number) => void
  onQuarantined?: (rows: number) => void
  /** for tests: the journal's file operations (default: the real fs) */
  journalFs?: JournalFs
}

/** The front ends whose decisions are journalled (the `source` column). */
export type DecisionSource = 'check' | 'messages' | 'smpp' | 'smtp'

/** What a carrier answered for one message (null: not forwarded, it was blocked). */
export interface MessageOutcome { upstreamStatus: string, carrierId: string | null }

/** The journal position of one /v1/messages request between its decisions and its carrier outcomes. */
export interface MessageTicket { segment: Segment | null, key: string }

const BATCH_LINES = 10_000
const DAY_MS = 86_400_000
const RETRY_MS = 1000
/** the longest back-off of a segment Postgres refuses as a whole */
const REFUSED_MAX_MS = 60_000
const CLOSE_WAIT_MS = 15_000
const QUARANTINE = 'quarantine'

const partitionName = (dayStartMs: number): string => 'decisions_' + new Date(dayStartMs).toISOString().slice(0, 10).replace(/-/g, '')

const sqlstate = (err: unknown): string | null => {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : null
}

/** A value in a row that Postgres cannot take (class 22): retrying that row cannot help, the others can land. */
const isDataError = (err: unknown): boolean => sqlstate(err)?.startsWith('22') === true

/**
 * Postgres refused the batch for what the table is now (class 23: a constraint, a missing partition; class 42: a
 * table or column gone, a permission): every line would be refused alike, so it is no line's fault. Kept, retried.
 */
const isRefusal = (err: unknown): boolean => /^(23|42)/.test(sqlstate(err) ?? '')

/** 23514 check_violation is also what a row gets for which no partition exists. */
const CHECK_VIOLATION = '23514'

/** A client's recipient as text (it may be any JSON value; a value JSON cannot print is recorded as such). */
function recipientText (v: unknown): string {
  if (typeof v === 'string') return v
  try { return JSON.stringify(v) ?? '' } catch { return '[unprintable]' }
}

/** The answer when the journal refuses a decision's lines (now, or in a deferred write: journal.ts deferAppends). */
export const journalUnavailable = (err: unknown): GatewayError =>
  new GatewayError('SERVICE_UNAVAILABLE', { message: 'The decision journal cannot be written on local disk; nothing was decided.', cause: err })

export class DecisionLog {
  private readonly opts: DecisionLogOptions
  private readonly journal: Journal
  private reqNo = 0
  private lastMs = 0
  private lastIso = ''
  private shipping: Promise<void> | null = null
  private shipAgain = false
  private retryAt = 0
  /** segments already counted as spooled (their first shipping failed) */
  private readonly spooledNames = new Set<string>()
  /** segments refused as a whole: when to try again, and the current back-off */
  private readonly refused = new Map<string, { until: number, delayMs: number }>()
  /** the SQLSTATE of the refusals being reported (one log line per streak, not per segment) */
  private refusing: string | null = null
  /** segments in Postgres whose file could not be removed yet (retried; logged once each) */
  private readonly landed = new Set<string>()
  private timers: NodeJS.Timeout[] = []
  private readonly partitions = new Set<string>()

  constructor (opts: DecisionLogOptions) {
    this.opts = opts
    this.journal = new Journal({
      dir: opts.spoolDir,
      fsyncMs: opts.fsyncMs ?? 50,
      fullLines: BATCH_LINES,
      onFull: () => { void this.flush() }, // flush() never rejects
      onSyncError: err => { opts.log.error({ err }, 'decision journal: local disk refused a write or an fsync (see err)') },
      ...(opts.journalFs !== undefined ? { fs: opts.journalFs } : {})
    })
  }

  /** Segments waiting to be shipped (for /readyz and metrics). */
  get spooled (): number {
    return this.spooledNames.size
  }

  async start (): Promise<void> {
    await mkdir(join(this.opts.spoolDir, QUARANTINE), { recursive: true })
    await this.journal.start()
    await this.maintainPartitions().catch((err: Error) => { this.opts.log.warn({ err }, 'decision log: cannot prepare partitions yet') })
    const every = (ms: number, fn: () => void): void => { const t = setInterval(fn, ms); t.unref(); this.timers.push(t) }
    every(this.opts.flushMs ?? 200, () => { void this.flush() }) // flush() never rejects
    every(3_600_000, () => { this.maintainPartitions().catch((err: Error) => { this.opts.log.warn({ err }, 'decision log: partition maintenance failed') }) })
    void this.ship(true) // what a previous run left behind (ship() never rejects)
  }

  private stamp (): string {
    const now = Date.now()
    if (now !== this.lastMs) { this.lastMs = now; this.lastIso = new Date(now).toISOString() }
    return this.lastIso
  }

  private head (source: string, iysCode: string | null, q: Omit<CheckQuery, 'recipients'>): string {
    return this.stamp() + '\t' + source + '\t' + (iysCode ?? '\\N') + '\t' + q.brandCode + '\t' + q.type + '\t' + q.recipientType + '\t'
  }

  private static middle (q: Omit<CheckQuery, 'recipients'>, r: CheckResult): string {
    return esc(recipientText(r.recipient)) + '\t' + (r.normalized ?? '\\N') + '\t' + q.commercial + '\t' + r.allowed + '\t' + r.reason + '\t' + (r.state?.seq ?? '\\N')
  }

  /**
   * Journals one request's check decisions with one write(): call it before the answer is sent. Throws a 503
   * GatewayError when the local disk refuses it (then no answer may leave).
   */
  recordChecks (source: DecisionSource, iysCode: string | null, q: CheckQuery, results: readonly CheckResult[]): void {
    if (results.length === 0) return
    const head = this.head(source, iysCode, q)
    let text = ''
    for (let i = 0; i < results.length; i++) text += head + DecisionLog.middle(q, results[i]!) + '\t\\N\t\\N\t\\N\n'
    try {
      this.journal.append(text, results.length, false)
    } catch (err) {
      throw journalUnavailable(err)
    }
  }

  /**
   * Journals a send's decisions (/v1/messages, an SMPP submit) with one write(), BEFORE anything is forwarded: blocked messages as
   * finished records, allowed ones as records awaiting their carrier outcome (recordOutcomes()). Throws a 503
   * GatewayError when the local disk refuses it: nothing may be forwarded then.
   */
  recordMessages (source: DecisionSource, iysCode: string, q: CheckQuery, results: readonly CheckResult[], messageIds: readonly string[]): MessageTicket {
    const key = String(++this.reqNo)
    const head = this.head(source, iysCode, q)
    let text = ''
    let pending = 0
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!
      const line = head + DecisionLog.middle(q, r) + '\t' + esc(messageIds[i]!)
      if (r.allowed) { text += 'M' + key + '.' + i + '\t' + line + '\n'; pending++ } else text += line + '\t\\N\t\\N\n'
    }
    try {
      const segment = this.journal.append(text, results.length, pending > 0)
      return { segment: pending > 0 ? segment : null, key }
    } catch (err) {
      throw journalUnavailable(err)
    }
  }

  /** Journals the carrier outcomes of a recordMessages() request (null: not forwarded) with one write. */
  recordOutcomes (ticket: MessageTicket, outcomes: readonly (MessageOutcome | null)[]): void {
    const seg = ticket.segment
    if (seg === null) return
    let text = ''
    for (let i = 0; i < outcomes.length; i++) {
      const o = outcomes[i]
      if (o != null) text += 'O' + ticket.key + '.' + i + '\t' + esc(o.upstreamStatus) + '\t' + opt(o.carrierId) + '\n'
    }
    try {
      this.journal.appendTo(seg, text)
    } catch (err) {
      // The decisions are journalled; without their outcomes they are recorded as 'interrupted' (maybe delivered).
      this.opts.log.error({ err }, 'decision journal: cannot write carrier outcomes')
    } finally {
      this.journal.unpin(seg)
    }
  }

  /** Rotates the journal and ships every closed segment (to Postgres, or it stays on disk when Postgres cannot take it). */
  flush (): Promise<void> {
    this.journal.rotate()
    return this.ship(false)
  }

  /** Stops the timers, closes the journal and ships everything (what Postgres cannot take stays for the next start). */
  async close (): Promise<void> {
    for (const t of this.timers) clearInterval(t)
    if (!await settlesWithin(this.journal.close(), CLOSE_WAIT_MS)) this.opts.log.warn('decision journal: a message request still awaits its carrier at shutdown; the next start ships its segment')
    await this.ship(true)
    await this.journal.release()
  }

  /**
   * Ships shippable segments, oldest first, until Postgres fails; after a failure waits (retryAt) unless forced.
   * Never rejects: it runs from timers with nobody to catch it, and an unhandled rejection would end the process.
   */
  private ship (force: boolean): Promise<void> {
    if (this.shipping !== null) { this.shipAgain = true; return this.shipping.then(() => (force ? this.ship(true) : undefined)) }
    if (!force && Date.now() < this.retryAt) return Promise.resolve()
    this.shipping = (async () => {
      do {
        this.shipAgain = false
        if (!await this.shipOnce()) return
      } while (this.shipAgain)
    })().catch((err: Error) => {
      this.retryAt = Date.now() + RETRY_MS
      this.opts.log.error({ err }, 'decision log: shipping failed; it is retried')
    }).finally(() => { this.shipping = null })
    return this.shipping
  }

  /** False when the rest must wait for the next attempt (Postgres failed or refused, a file could not be removed). */
  private async shipOnce (): Promise<boolean> {
    let names: string[]
    try {
      names = await this.journal.shippable()
    } catch (err) {
      this.opts.log.error({ err }, 'decision journal: cannot list the spool folder')
      return false
    }
    let ok = true
    let lastRefused: string | null = null // the SQLSTATE of the segment just refused in this round
    for (const name of names) {
      if (this.landed.has(name)) { ok = await this.remove(name) && ok; continue } // in Postgres already
      const back = this.refused.get(name)
      if (back !== undefined && Date.now() < back.until) continue
      let raw: string
      try {
        raw = await this.journal.read(name)
      } catch (err) {
        // Gone: another gateway on this folder shipped it (done() forgets it, the file being gone already).
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') { ok = await this.remove(name) && ok; continue }
        this.opts.log.error({ err }, 'decision journal: cannot read a segment')
        return false
      }
      const { text, rows } = segmentToCopy(raw)
      try {
        if (rows > 0) await this.writeChunk(name.slice(0, name.lastIndexOf('.')), text, rows)
      } catch (err) {
        this.spool(name, rows, err as Error)
        if (!isRefusal(err)) { this.retryAt = Date.now() + RETRY_MS; return false } // Postgres away: all of it waits
        const code = sqlstate(err)!
        const delayMs = Math.min(REFUSED_MAX_MS, back === undefined ? RETRY_MS : back.delayMs * 2)
        this.refused.set(name, { until: Date.now() + delayMs, delayMs })
        // Two in a row refused alike: the table refuses everything, the rest would only fail the same way.
        if (lastRefused === code) { this.retryAt = Date.now() + delayMs; return false }
        lastRefused = code
        continue
      }
      lastRefused = null
      this.refused.delete(name)
      if (this.refusing !== null) { this.refusing = null; this.opts.log.info('decision log: Postgres takes the segments it refused again') }
      ok = await this.remove(name) && ok
    }
    return ok
  }

  /** A segment Postgres did not take stays in the spool: counted once, logged once per kind of failure. */
  private spool (name: string, rows: number, err: Error): void {
    const code = sqlstate(err)
    if (isRefusal(err)) {
      if (this.refusing !== code) {
        this.refusing = code
        this.opts.log.error({ err, sqlstate: code, rows }, 'decision log: Postgres refuses the decision table\'s batches as a whole; they stay in the spool and are retried with back-off')
      }
    } else if (!this.spooledNames.has(name)) {
      this.opts.log.warn({ err, rows }, 'decision log: Postgres did not take a batch; it stays in the spool and is retried')
    }
    if (!this.spooledNames.has(name)) {
      this.spooledNames.add(name)
      this.opts.onSpooled?.(rows)
    }
  }

  /** Removes a segment that is in Postgres; false when its file cannot be removed now (kept, retried, logged once). */
  private async remove (name: string): Promise<boolean> {
    try {
      await this.journal.done(name)
    } catch (err) {
      if (!this.landed.has(name)) {
        this.landed.add(name)
        this.opts.log.error({ err, segment: name }, 'decision journal: a segment in Postgres cannot be removed from the spool folder; retried')
      }
      this.retryAt = Date.now() + RETRY_MS
      return false
    }
    this.landed.delete(name)
    this.refused.delete(name)
    if (this.spooledNames.delete(name) && this.spooledNames.size === 0) this.opts.log.info('decision log: spool replayed into Postgres')
    return true
  }

  /** Writes a batch; one refused for a value in a row is split until the refused lines are alone in quarantine. */
  private async writeChunk (batchId: string, text: string, rows: number): Promise<void> {
    try {
      await this.writeBatch(batchId, text, rows)
    } catch (err) {
      if (!isDataError(err)) throw err
      if (rows === 1) { await this.quarantine(batchId, text, err as Error & { code: string }); return }
      const half = Math.ceil(rows / 2)
      let cut = -1
      for (let i = 0; i < half; i++) cut = text.indexOf('\n', cut + 1)
      await this.writeChunk(batchId + '.0', text.slice(0, cut + 1), half)
      await this.writeChunk(batchId + '.1', text.slice(cut + 1), rows - half)
    }
  }

  private async quarantine (batchId: string, text: string, err: Error & { code: string }): Promise<void> {
    const dir = join(this.opts.spoolDir, QUARANTINE)
    await writeFile(join(dir, batchId + '.tsv'), text)
    // The message may quote the line (a recipient): it stays in this file, never in the log.
    await writeFile(join(dir, batchId + '.json'), JSON.stringify({ batchId, rows: 1, sqlstate: err.code, message: err.message, quarantinedAt: new Date().toISOString() }) + '\n')
    this.opts.onQuarantined?.(1)
    this.opts.log.error({ batchId, sqlstate: err.code }, 'decision log: Postgres refused a decision record; it is kept in the quarantine folder')
  }

  private async writeBatch (batchId: string, text: string, rows: number): Promise<void> {
    await this.ensurePartitionFor(text)
    const copy = (): Promise<boolean> => inTransaction(this.opts.pool, async client => {
      const claim = await client.query('INSERT INTO decision_batches (batch_id, rows) VALUES ($1, $2) ON CONFLICT DO NOTHING', [batchId, rows])
      if (claim.rowCount === 0) return false // committed before: this is a replay of a batch we could not confirm
      await pipeline(Readable.from([text]), client.query(copyStreams.from(`COPY decisions ${COLUMNS} FROM STDIN`)))
      return true
    })
    let written: boolean
    try {
      written = await copy()
    } catch (err) {
      if (sqlstate(err) !== CHECK_VIOLATION) throw err
      // Maybe no partition for a row: one we created was dropped since (by hand, by another gateway's retention).
      // Forget what we know, create them again, and try once more; a constraint refusing the rows fails again.
      this.partitions.clear()
      await this.ensurePartitionFor(text)
      written = await copy()
    }
    if (written) this.opts.onWritten?.(rows)
  }

  /** Creates the partition of the day of `ms` if it is missing (scrub jobs' decisions: audit/scrub-decisions.ts). */
  async partitionFor (ms: number): Promise<void> {
    await this.createPartition(Math.floor(ms / DAY_MS) * DAY_MS)
  }

  /** Creates partitions from yesterday to two days ahead, and drops those past the retention. */
  async maintainPartitions (): Promise<void> {
    const today = Math.floor(Date.now() / DAY_MS) * DAY_MS
    for (let d = -1; d <= 2; d++) await this.createPartition(today + d * DAY_MS)
    const keep = this.opts.retentionDays ?? 400
    const { rows } = await this.opts.pool.query<{ name: string }>(
      "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'decisions'")
    const oldest = partitionName(today - keep * DAY_MS)
    for (const { name } of rows) {
      if (/^decisions_\d{8}$/.test(name) && name < oldest) {
        await this.opts.pool.query(`DROP TABLE IF EXISTS ${name}`)
        this.partitions.delete(name)
        this.opts.log.info({ partition: name }, 'decision log retention: dropped a partition')
      }
    }
  }

  private async createPartition (dayStart: number): Promise<void> {
    const name = partitionName(dayStart)
    if (this.partitions.has(name)) return
    const from = new Date(dayStart).toISOString()
    const to = new Date(dayStart + DAY_MS).toISOString()
    try {
      await this.opts.pool.query(`CREATE TABLE IF NOT EXISTS ${name} PARTITION OF decisions FOR VALUES FROM ('${from}') TO ('${to}')`)
    } catch (err) {
      // Another gateway created it at the same moment.
      if (!/already exists/.test((err as Error).message)) throw err
    }
    this.partitions.add(name)
  }

  /** A batch spans at most a few days (a long outage): make sure each day it holds has its partition. */
  private async ensurePartitionFor (text: string): Promise<void> {
    const first = Date.parse(text.slice(0, 24))
    const lastLine = text.lastIndexOf('\n', text.length - 2) + 1
    const last = Date.parse(text.slice(lastLine, lastLine + 24))
    for (let d = Math.floor(first / DAY_MS) * DAY_MS; d <= last; d += DAY_MS) await this.createPartition(d)
  }
}
