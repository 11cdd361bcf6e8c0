// The decision log: every decision of /v1/check and /v1/messages, written to Postgres off the request path.
//
// record() only appends a COPY text line to a buffer; a flush every DECISION_FLUSH_MS (or at 10,000 lines) sends the
// buffer as one batch: `INSERT INTO decision_batches` + `COPY decisions FROM STDIN` in one transaction. When that
// fails (Postgres down, slow, restarting) the batch goes to a spool file on local disk, written atomically, and a
// replay loop writes spooled batches when Postgres is back. A batch whose first attempt did commit although we saw
// an error is recognised by its batch id and skipped, so every record lands exactly once. close() (SIGTERM) flushes
// everything first, to Postgres or to the spool.
//
// The table is partitioned by day (UTC); partitions are created ahead and those older than the retention dropped.

import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import type { Logger } from 'pino'
import copyStreams from 'pg-copy-streams'
import { inTransaction } from '../store/pg.js'
import type { Pool } from '../store/pg.js'
import type { CheckQuery, CheckResult } from '../check/checker.js'

export interface DecisionRecord {
  source: 'check' | 'messages'
  iysCode: string | null
  brandCode: string
  type: string
  recipientType: string
  /** what the client sent (stringified) */
  recipient: string
  normalized: string | null
  commercial: boolean
  allowed: boolean
  reason: string
  /** seq of the consent change the decision relied on */
  consentSeq: number | null
  messageId: string | null
  upstreamStatus: string | null
  carrierId: string | null
}

export interface DecisionLogOptions {
  pool: Pool
  spoolDir: string
  log: Logger
  flushMs?: number
  retentionDays?: number
  /** Called with counts for metrics. */
  onWritten?: (rows: number) => void
  onSpooled?: (rows: number) => void
}

const COLUMNS = '(decided_at, source, iys_code, brand_code, type, recipient_type, recipient, normalized, commercial, allowed, reason, consent_seq, message_id, upstream_status, carrier_id)'
const BATCH_LINES = 10_000
const DAY_MS = 86_400_000

/** COPY text format escaping for free text (a client's recipient or messageId may hold anything). */
function esc (s: string): string {
  return /[\\\t\n\r]/.test(s) ? s.replace(/\\/g, '\\\\').replace(/\t/g, '\\t').replace(/\n/g, '\\n').replace(/\r/g, '\\r') : s
}
const opt = (s: string | null): string => (s === null ? '\\N' : esc(s))

const partitionName = (dayStartMs: number): string => 'decisions_' + new Date(dayStartMs).toISOString().slice(0, 10).replace(/-/g, '')

export class DecisionLog {
  private readonly opts: DecisionLogOptions
  private readonly bootId = randomBytes(6).toString('hex')
  private batchNo = 0
  private buf = ''
  private lines = 0
  private lastMs = 0
  private lastIso = ''
  private flushing: Promise<void> | null = null
  private replaying: Promise<void> | null = null
  private timers: NodeJS.Timeout[] = []
  private readonly partitions = new Set<string>()
  /** batches waiting in the spool (for /readyz and metrics) */
  spooled = 0

  constructor (opts: DecisionLogOptions) {
    this.opts = opts
  }

  async start (): Promise<void> {
    await mkdir(this.opts.spoolDir, { recursive: true })
    this.spooled = (await this.spoolFiles()).length
    await this.maintainPartitions().catch((err: Error) => { this.opts.log.warn({ err: err.message }, 'decision log: cannot prepare partitions yet') })
    const every = (ms: number, fn: () => void): void => { const t = setInterval(fn, ms); t.unref(); this.timers.push(t) }
    every(this.opts.flushMs ?? 200, () => { void this.flush() })
    every(1000, () => { void this.replay() })
    every(3_600_000, () => { this.maintainPartitions().catch((err: Error) => { this.opts.log.warn({ err: err.message }, 'decision log: partition maintenance failed') }) })
  }

  record (r: DecisionRecord): void {
    const now = Date.now()
    if (now !== this.lastMs) { this.lastMs = now; this.lastIso = new Date(now).toISOString() }
    this.buf += this.lastIso + '\t' + r.source + '\t' + (r.iysCode ?? '\\N') + '\t' + r.brandCode + '\t' + r.type + '\t' + r.recipientType + '\t' +
      esc(r.recipient) + '\t' + (r.normalized ?? '\\N') + '\t' + r.commercial + '\t' + r.allowed + '\t' + r.reason + '\t' +
      (r.consentSeq ?? '\\N') + '\t' + opt(r.messageId) + '\t' + opt(r.upstreamStatus) + '\t' + opt(r.carrierId) + '\n'
    if (++this.lines >= BATCH_LINES) void this.flush()
  }

  /** Writes what is buffered (to Postgres, or to the spool when Postgres cannot take it). */
  flush (): Promise<void> {
    if (this.flushing !== null) return this.flushing.then(() => (this.lines > 0 ? this.flush() : undefined))
    if (this.lines === 0) return Promise.resolve()
    const text = this.buf
    const rows = this.lines
    this.buf = ''
    this.lines = 0
    const batchId = `${this.bootId}-${++this.batchNo}`
    this.flushing = this.writeBatch(batchId, text, rows)
      .catch(async (err: Error) => {
        this.opts.log.warn({ err: err.message, rows }, 'decision log: Postgres did not take a batch; spooling it to disk')
        await this.spool(batchId, text)
        this.opts.onSpooled?.(rows)
      })
      .finally(() => { this.flushing = null })
    return this.flushing
  }

  /** Stops the timers and flushes everything. */
  async close (): Promise<void> {
    for (const t of this.timers) clearInterval(t)
    await this.flush()
    if (this.replaying !== null) await this.replaying
    await this.replay()
  }

  private async writeBatch (batchId: string, text: string, rows: number): Promise<void> {
    await this.ensurePartitionFor(text)
    const written = await inTransaction(this.opts.pool, async client => {
      const claim = await client.query('INSERT INTO decision_batches (batch_id, rows) VALUES ($1, $2) ON CONFLICT DO NOTHING', [batchId, rows])
      if (claim.rowCount === 0) return false // committed before: this is a replay of a batch we could not confirm
      await pipeline(Readable.from([text]), client.query(copyStreams.from(`COPY decisions ${COLUMNS} FROM STDIN`)))
      return true
    })
    if (written) this.opts.onWritten?.(rows)
  }

  private async spool (batchId: string, text: string): Promise<void> {
    const file = join(this.opts.spoolDir, `${batchId}.tsv`)
    await writeFile(file + '.tmp', text)
    await rename(file + '.tmp', file)
    this.spooled++
  }

  private async spoolFiles (): Promise<string[]> {
    return (await readdir(this.opts.spoolDir)).filter(f => f.endsWith('.tsv')).sort()
  }

  /** Writes spooled batches, oldest first, until one fails. */
  replay (): Promise<void> {
    if (this.replaying !== null || this.spooled === 0) return this.replaying ?? Promise.resolve()
    this.replaying = (async () => {
      for (const f of await this.spoolFiles()) {
        const path = join(this.opts.spoolDir, f)
        const text = await readFile(path, 'utf8')
        try {
          await this.writeBatch(f.slice(0, -4), text, countLines(text))
        } catch {
          return // Postgres still away: try again on the next tick
        }
        await unlink(path)
        this.spooled--
      }
      this.opts.log.info('decision log: spool replayed into Postgres')
    })().finally(() => { this.replaying = null })
    return this.replaying
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

function countLines (text: string): number {
  let n = 0
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++
  return n
}

/** Records one batch of check decisions (a /v1/check request, or the check step of /v1/messages). */
export function logDecisions (log: DecisionLog, source: DecisionRecord['source'], iysCode: string | null, q: CheckQuery, results: CheckResult[],
  messages?: { messageId: string | null, upstreamStatus: string | null, carrierId: string | null }[]): void {
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!
    const m = messages?.[i]
    log.record({
      source,
      iysCode,
      brandCode: q.brandCode,
      type: q.type,
      recipientType: q.recipientType,
      recipient: typeof r.recipient === 'string' ? r.recipient : JSON.stringify(r.recipient) ?? '',
      normalized: r.normalized,
      commercial: q.commercial,
      allowed: r.allowed,
      reason: r.reason,
      consentSeq: r.state?.seq ?? null,
      messageId: m?.messageId ?? null,
      upstreamStatus: m?.upstreamStatus ?? null,
      carrierId: m?.carrierId ?? null
    })
  }
}
