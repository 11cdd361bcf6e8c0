// `iys-gateway import FILE`: bulk-loads consents into Postgres.
//
// Rows are validated and normalised in Node and streamed with COPY into a temporary staging table (invalid rows
// too, carrying their error). One sorted pass, outside any lock, then judges every row per key in consentDate order
// (ties: file order), whatever the order of the rows in the file, against a snapshot of the stored state, and cuts
// the keys into slices (SLICE_KEYS keys each, in key order), with the rules of domain/rules.ts for the chosen authority:
//   'iys' (default): the file holds İYS's records (an export, a migration): a RET is a fact even without an ONAY
//         before it. A row older than the stored record is H178 ("superseded"); a row equal in date and status
//         to the record before it is a duplicate (H174). Everything else applies.
//   'provider': İYS's checks for a provider's own writes, as our API applies them: H178 older than stored,
//         H175 a RET before the key has any record, H174 the same status as the record before it.
// Each slice is then applied in a transaction of its own, under the consent write lock: every seq-assigning
// transaction holds it (seq order is commit order, see filter/changes.ts), but only for one slice, so live writes
// (API, İYS push) wait at most one slice, never the whole import. All rows of a key are in the same slice. A slice
// first reads the ledger for changes other writers committed since the snapshot (their seqs are higher than any in
// it); the rows of keys they changed are judged again against the state stored then, so a slice always applies the
// rules against the state stored when it runs. Every accepted row becomes a change with its own seq in the evidence
// ledger; the last one per key is the current state. The reject file lists every refused row in line order with its
// code. The good rows still count.
// An import that stops half-way (Postgres gone, the process killed) keeps the slices it committed; running it again
// converges: rows already applied come back as duplicates (H174) or superseded (H178) and the rest apply.

import { createWriteStream, statSync } from 'node:fs'
import { once } from 'node:events'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import copyStreams from 'pg-copy-streams'
import { ERRORS, type ErrorCode } from '../src/domain/errors.js'
import type { Authority } from '../src/domain/rules.js'
import { CONSENT_WRITE_LOCK } from '../src/store/migrate.js'
import { CHANGES_CHANNEL, CONSENT_COLUMNS, LEDGER_COLUMNS, upsertConsentsSql } from '../src/store/consent-store.js'
import type { Pool, PoolClient } from '../src/store/pg.js'
import { readConsentFile, type ConsentDefaults } from '../src/formats/consent-file.js'
import { esc } from '../src/formats/copy-text.js'
import { Progress } from './progress.js'

export interface ImportOptions {
  file: string
  rejectFile?: string
  actor?: string
  /** false: no progress lines (tests); a Progress to report to; default: progress on stderr */
  progress?: boolean | Progress
  /** Which rules judge the rows: see the header. Default 'iys'. */
  rules?: Authority
  /** iysCode/brandCode for items that do not carry them (İYS lists are per brand). */
  defaults?: ConsentDefaults
  /** keys per slice (one transaction each); default SLICE_KEYS */
  sliceKeys?: number
}

export interface ImportResult {
  /** rows read (header excluded) */
  rows: number
  /** rows that passed field validation */
  valid: number
  /** rows refused, by field validation or by a rule */
  rejected: number
  /** changes applied (each is a ledger entry with its own seq) */
  applied: number
  /** rows older than the record already stored (H178): they lost to a newer record */
  superseded: number
  /** refused rows per error code */
  rejectsByCode: Record<string, number>
  rejectFile: string | null
  /** highest seq assigned (0 when nothing was applied) */
  lastSeq: number
  /** ';' when the CSV file was read as semicolon-separated (detected from its header row); absent otherwise */
  separator?: ';'
}

// COPY text format: no consent field can contain tab, newline, carriage return or backslash after validation (codes
// are digits, enums are fixed, recipients are E.164 or ASCII e-mail); transaction ids (opaque İYS text) and a
// reject's message are escaped below. `id` numbers the rows in file order: unique, unlike `line` (the items of a
// one-line JSON list all start on line 1), so rows are told apart and ties ordered by it.
const STAGING = `CREATE TEMP TABLE import_staging (
  id bigint, line bigint, brand_code bigint, type text, recipient_type text, recipient text,
  iys_code bigint, status text, source text, consent_epoch bigint, transaction_id text, creation_epoch bigint,
  code text, location text, message text
)`
const COPY_STAGING = 'COPY import_staging (id, line, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_epoch, transaction_id, creation_epoch, code, location, message) FROM STDIN'

// The order of keys wherever the import sorts them (judging, slices, seqs), that of the state's and the ledger's
// indexes: a slice's rows then go into a few neighbouring index pages (1M ledger rows by COPY: 9.4 s in this order,
// 11.5 s with the recipient first, whose sort took 1.0 s instead of 3.4). Text compared bytewise: equality, hence
// which rows share a key, is the same as under the database's collation, and the sort is cheaper (4.0 s with it).
const KEY_ORDER = 'brand_code, type COLLATE "C", recipient_type COLLATE "C", recipient COLLATE "C"'

// The rules per key in (consentDate, file order) order, over `rows` (import_staging or a slice's changed keys), against
// the stored state joined from consents; see the header. Rows older than the stored record are H178; they sort first
// in their key (consentDate order), so a row whose previous row is one of them follows the stored record, as the first
// row does. `prev` is the status before a row: while a key has a record it is always the previous row's (an accepted
// row set it, a refused H174 row equalled it). $1 is the authority. Gives every column of `rows`, `verdict` and the
// key's rank in key order (computed here, where the rows are sorted by key already: over the result it sorted them again).
const judged = (rows: string): string => `
WITH s AS (
  SELECT st.*, c.status AS stored_status, extract(epoch FROM c.consent_date)::bigint AS stored_epoch
  FROM ${rows} st
  LEFT JOIN consents c USING (brand_code, type, recipient_type, recipient)
), w AS (
  SELECT s.*,
         CASE WHEN lag(consent_epoch) OVER k IS NULL OR lag(consent_epoch) OVER k < stored_epoch THEN stored_status ELSE lag(status) OVER k END AS prev,
         CASE WHEN lag(consent_epoch) OVER k IS NULL OR lag(consent_epoch) OVER k < stored_epoch THEN stored_epoch ELSE lag(consent_epoch) OVER k END AS prev_epoch,
         stored_status IS NOT NULL OR coalesce(bool_or(status = 'ONAY') OVER (k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS has_prev,
         dense_rank() OVER (ORDER BY ${KEY_ORDER}) AS key_rank
  FROM s
  WINDOW k AS (PARTITION BY ${KEY_ORDER} ORDER BY consent_epoch, id)
)
SELECT w.*,
       CASE WHEN consent_epoch < stored_epoch THEN 'H178'
            WHEN $1 = 'iys' THEN CASE WHEN status = prev AND consent_epoch = prev_epoch THEN 'H174' END
            ELSE CASE WHEN NOT has_prev AND status = 'RET' THEN 'H175' WHEN has_prev AND status = prev THEN 'H174' END
       END AS verdict
FROM w`

// Our transactionId for an accepted row that has none from İYS: 64 hex characters.
const NEW_TRANSACTION_ID = 'md5(random()::text || id::text) || md5(id::text || clock_timestamp()::text)'

// Every row judged once, outside the write lock, against a snapshot of consents (see importConsents), in one sorted
// pass that also gives each valid row its slice (1M rows, Postgres CPU: 6.7 s, against 4.6 s for the sort into
// slices and 7.2 s for judging slice by slice under the lock): keys in key order, $2 keys per slice, so that a slice
// reads its rows through an index on `slice`. Written as a new table, in key order: labelling the rows in place
// rewrote every row and took as long as the COPY. Refused rows, whose key columns are null, sort last and get no
// slice. A row's `code` is its refusal: field validation's, else the rules'. `fresh`: its key had no record in the
// snapshot. An accepted row without an İYS transactionId gets ours here, outside the lock (1.5 µs a row).
const JUDGE_ALL = [
  `CREATE TEMP TABLE import_judged AS
   SELECT id, line, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_epoch,
          coalesce(transaction_id, CASE WHEN code IS NULL AND verdict IS NULL THEN ${NEW_TRANSACTION_ID} END) AS transaction_id,
          creation_epoch, coalesce(code, verdict) AS code, location, message, stored_status IS NULL AS fresh,
          CASE WHEN code IS NULL THEN (key_rank - 1) / $2 END::integer AS slice
   FROM (${judged('import_staging')}) j`,
  'DROP TABLE import_staging',
  'ALTER TABLE import_judged RENAME TO import_staging'
]
// The judging pass sorts the rows once, by key in KEY_ORDER: it reads the stored state by a hash join, as a merge
// join sorted them a second time, under the database's collation (6.0 s of an 18 s pass at 1M rows).
const JUDGE_SETTINGS = ['SET LOCAL enable_mergejoin = off']
// Built after the judging pass (cheaper than maintaining it during the COPY) and before the first slice: every query a
// slice runs under the write lock reaches import_staging through it, never by scanning it (a scan per slice made an
// import quadratic and held the lock for seconds per slice). test/import-lock.test.ts checks the plans.
const SLICE_INDEXES = [
  'CREATE INDEX ON import_staging (slice)',
  'ANALYZE import_staging'
]
// Keys that a writer other than this import changed since the state the rows were judged against: every change it
// committed since has a higher seq than the last one seen (seq order is commit order), read by the ledger's primary key.
const CHANGED_KEYS = 'CREATE TEMP TABLE import_changed (brand_code bigint, type text, recipient_type text, recipient text)'
const SEE_CHANGES = `
WITH h AS (
  SELECT brand_code, type, recipient_type, recipient, seq FROM consent_history WHERE seq > $1
), ins AS (
  INSERT INTO import_changed SELECT DISTINCT brand_code, type, recipient_type, recipient FROM h RETURNING 1
)
SELECT (SELECT max(seq) FROM h) AS seen, (SELECT count(*) FROM ins) AS changed`

/** Keys per slice: each slice is one transaction holding the write lock for a fraction of a second. */
export const SLICE_KEYS = 5000

// Only once another writer changed a key of the import: the slice's rows of changed keys judged again, against the
// stored state under the lock. $1: the authority, $2: the slice.
const REJUDGE = `
UPDATE import_staging st SET code = j.verdict
FROM (${judged(`(SELECT * FROM import_staging WHERE slice = $2
  AND (brand_code, type, recipient_type, recipient) IN (SELECT brand_code, type, recipient_type, recipient FROM import_changed))`)}) j
WHERE st.slice = $2 AND st.id = j.id`

// A slice's plans, under the write lock. Reach consents by its primary key, one probe per row judged again: the
// planner otherwise hash-joins a scan of the whole table (its statistics lag behind an import that is filling it) in
// every slice: quadratic, and the write lock held the longer (1M rows: 14,000 rows/s with the scans, 32,000 without).
// No scans at all: a ledger without statistics yet (a first import) made the planner scan it for the few changes
// since the snapshot. No JIT: the penalty a disabled plan carries in its cost made every statement over a slice's
// 5,000 rows look worth compiling (480 ms of compiling for a 560 ms statement).
const SLICE_SETTINGS = [
  'SET LOCAL work_mem = \'256MB\'',
  'SET LOCAL enable_hashjoin = off',
  'SET LOCAL enable_mergejoin = off',
  'SET LOCAL enable_seqscan = off',
  'SET LOCAL jit = off'
]

// A slice's accepted rows as the ledger takes them, with their seqs from the block that starts at `first`, in
// per-key order; `fresh` stays true only for a key nobody has written since the snapshot. Read through the slice
// index, in the order the judging pass wrote them. The numbers are ours and `actor` a quoted literal: COPY takes no
// parameters. A row judged again may lack a transactionId (it was refused the first time).
const sliceRows = (slice: number, first: number, actor: string): string => `
SELECT ${first - 1} + row_number() OVER (ORDER BY ${KEY_ORDER}, consent_epoch, id) AS seq,
       brand_code, type, recipient_type, recipient, iys_code, status, source, to_timestamp(consent_epoch) AS consent_date,
       coalesce(transaction_id, ${NEW_TRANSACTION_ID}) AS transaction_id, 'import'::text AS via, ${actor}::text AS actor,
       to_timestamp(coalesce(creation_epoch, extract(epoch FROM now())::bigint)) AS creation_date,
       fresh AND (brand_code, type, recipient_type, recipient) NOT IN (SELECT brand_code, type, recipient_type, recipient FROM import_changed) AS fresh
FROM import_staging WHERE slice = ${slice} AND code IS NULL`
const ledgerRows = (slice: number, first: number, actor: string): string =>
  `SELECT ${LEDGER_COLUMNS} FROM (${sliceRows(slice, first, actor)}) r ORDER BY seq`
// The current state: each key's last accepted row, for the keys without a record (`fresh`) or the others.
const stateRows = (fresh: boolean) => (slice: number, first: number, actor: string): string =>
  `SELECT DISTINCT ON (${KEY_ORDER}) ${CONSENT_COLUMNS} FROM (${sliceRows(slice, first, actor)}) r
   WHERE ${fresh ? '' : 'NOT '}fresh ORDER BY ${KEY_ORDER}, seq DESC`

// The ledger rows and the new keys' state go in by binary COPY, out of import_staging and back in through this
// session: COPY inserts rows in batches, which INSERT … SELECT does not (1M new keys, Postgres CPU: 11.2 s for the
// copies out and in, against 13.7 s for INSERT … SELECT into the ledger with the state upsert). Keys stored before (a
// re-import, or written meanwhile) get their state by the one upsert every writer uses.
const LEDGER_IN = `COPY consent_history (${LEDGER_COLUMNS}) FROM STDIN (FORMAT binary)`
const STATE_IN = `COPY consents (${CONSENT_COLUMNS}) FROM STDIN (FORMAT binary)`
// How many seqs to reserve, and whether any key had a record in the snapshot (no upsert to run otherwise).
const COUNT_ACCEPTED = 'SELECT count(*) AS n, count(*) FILTER (WHERE NOT fresh) AS stored FROM import_staging WHERE slice = $1 AND code IS NULL'

/** One COPY text escape back to its character; line breaks become spaces (a reject file line is one row). */
const unescapeCopy = (_: string, c: string): string => c === 't' ? '\t' : c === 'n' || c === 'r' ? ' ' : c

export async function importConsents (pool: Pool, opts: ImportOptions): Promise<ImportResult> {
  const totalBytes = statSync(opts.file).size
  const progress = opts.progress === false ? null : opts.progress instanceof Progress ? opts.progress : new Progress({ label: 'import', totalBytes })
  const rejectPath = opts.rejectFile ?? opts.file + '.rejects.csv'
  let applied = 0
  let lastSeq = 0
  const rejectsByCode: Record<string, number> = {}
  let rejected = 0
  // One session for the whole import: the staging tables live across the slices' transactions (temporary tables
  // are per session). The session is closed at the end, which drops them.
  const client = await pool.connect()
  let staged: Staged
  try {
    staged = await stageImport(client, opts, progress)
    await client.query(CHANGED_KEYS)
    const seen = { seq: staged.judgedAt, changed: 0 }
    // The longest phase: one transaction per slice, each a tick of the progress line (slices done, %, ETA).
    progress?.setPhase('applying İYS rules', staged.slices, 'slices')
    for (let slice = 0; slice < staged.slices; slice++) {
      const r = await applySlice(client, slice, opts, seen)
      applied += r.applied
      if (r.lastSeq > 0) lastSeq = r.lastSeq
      progress?.advance(slice + 1)
    }
    progress?.setPhase('counting and writing rejects')
    const byCode = await client.query<{ code: string, n: string }>('SELECT code, count(*) AS n FROM import_staging WHERE code IS NOT NULL GROUP BY code')
    for (const r of byCode.rows) { rejectsByCode[r.code] = Number(r.n); rejected += Number(r.n) }
    if (rejected > 0) await writeRejectFile(client, rejectPath)
  } finally {
    client.release(true)
  }
  const { rows, invalid } = staged
  const superseded = rejectsByCode.H178 ?? 0
  const result: ImportResult = { rows, valid: rows - invalid, rejected, applied, superseded, rejectsByCode, rejectFile: rejected > 0 ? rejectPath : null, lastSeq }
  if (staged.separator !== undefined) result.separator = staged.separator
  const how = staged.separator === ';' ? ' (read as ;-separated CSV)' : ''
  progress?.done(`${applied} applied, ${superseded} superseded, ${rejected} rejected${rejected > 0 ? ` (see ${rejectPath})` : ''}${how}`)
  return result
}

export interface Staged {
  /** rows read (header excluded) and of those refused by field validation */
  rows: number
  invalid: number
  /** slices to apply, numbered from 0 */
  slices: number
  /** the highest seq of the stored state the rows were judged against: later changes are the ones to judge again */
  judgedAt: number
  /** ';' when the CSV file is semicolon-separated */
  separator?: ';'
}

/**
 * Reads the file into this session's import_staging (COPY), judges every row against a snapshot of the stored state,
 * labels every valid row with its slice and builds the index the slices use. Takes no lock: it writes no shared table.
 */
export async function stageImport (client: PoolClient, opts: ImportOptions, progress: Progress | null = null): Promise<Staged> {
  let rows = 0
  let invalid = 0
  let id = 0
  let separator: ';' | undefined
  const nowSeconds = Math.floor(Date.now() / 1000)
  async function * tsv (): AsyncGenerator<string> {
    for await (const batch of readConsentFile(opts.file, nowSeconds, opts.defaults)) {
      separator = batch.separator
      rows += batch.consents.length + batch.rejects.length
      invalid += batch.rejects.length
      let out = ''
      const cs = batch.consents
      for (let i = 0; i < cs.length; i++) {
        const c = cs[i]!
        const t = batch.transactionIds[i]
        const tx = t == null ? '\\N' : esc(t)
        const cd = batch.creationDates[i] ?? '\\N'
        out += `${++id}\t${batch.lines[i]}\t${c.brandCode}\t${c.type}\t${c.recipientType}\t${c.recipient}\t${c.iysCode}\t${c.status}\t${c.source}\t${c.consentDate}\t${tx}\t${cd}\t\\N\t\\N\t\\N\n`
      }
      for (const r of batch.rejects) {
        out += `${++id}\t${r.line}\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t${r.error.code}\t${esc(r.error.location?.join('.') ?? '')}\t${esc(r.error.message)}\n`
      }
      progress?.update(rows, batch.bytesRead, invalid)
      if (out.length > 0) yield out
    }
  }
  await client.query(STAGING)
  progress?.setPhase('reading')
  await pipeline(Readable.from(tsv()), client.query(copyStreams.from(COPY_STAGING)))
  // Single statements of a few seconds at millions of rows: the progress line shows each phase's elapsed time.
  progress?.setPhase('sorting keys into slices')
  // One snapshot for the stored state the rows are judged against and the highest seq in it: every change committed
  // after it has a higher seq (seq order is commit order), which is how the slices find the keys to judge again.
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ')
  let judgedAt: number
  try {
    for (const q of JUDGE_SETTINGS) await client.query(q)
    judgedAt = Number((await client.query<{ seq: string }>('SELECT coalesce(max(seq), 0) AS seq FROM consent_history')).rows[0]!.seq)
    await client.query(JUDGE_ALL[0]!, [opts.rules ?? 'iys', opts.sliceKeys ?? SLICE_KEYS])
    await client.query('COMMIT')
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
  for (const q of JUDGE_ALL.slice(1)) await client.query(q)
  progress?.setPhase('indexing')
  for (const q of SLICE_INDEXES) await client.query(q)
  const slices = Number((await client.query<{ n: string }>('SELECT coalesce(max(slice) + 1, 0) AS n FROM import_staging')).rows[0]!.n)
  const staged: Staged = { rows, invalid, slices, judgedAt }
  if (separator !== undefined) staged.separator = separator
  return staged
}

/** The statements a slice runs under the write lock, in order (see applySlice); exported for the plan test. */
export const SLICE_SQL = {
  settings: SLICE_SETTINGS, changedKeys: CHANGED_KEYS, seeChanges: SEE_CHANGES, rejudge: REJUDGE, countAccepted: COUNT_ACCEPTED,
  ledgerRows, newStateRows: stateRows(true), storedStateRows: stateRows(false)
} as const

// One round trip for the start of every slice: the transaction, its plan settings and the write lock (the slice
// reads the stored state and assigns seqs: seq order must be commit order).
const BEGIN_SLICE = ['BEGIN', ...SLICE_SETTINGS, `SELECT pg_advisory_xact_lock(${CONSENT_WRITE_LOCK})`].join('; ')

/** Rows of a query copied into a table through this session: a slice's rows, a few hundred kilobytes, held whole. */
async function copyBack (client: PoolClient, rows: string, into: string): Promise<void> {
  const chunks: Buffer[] = []
  for await (const chunk of client.query(copyStreams.to(`COPY (${rows}) TO STDOUT (FORMAT binary)`)) as AsyncIterable<Buffer>) chunks.push(chunk)
  await pipeline(Readable.from(chunks), client.query(copyStreams.from(into)))
}

/**
 * Applies one slice in its own transaction under the write lock: its rows of keys another writer changed since they
 * were judged (`seen`: the highest seq seen so far, and how many changed keys were found) are judged again first.
 */
async function applySlice (client: PoolClient, slice: number, opts: ImportOptions, seen: { seq: number, changed: number }): Promise<{ applied: number, lastSeq: number }> {
  await client.query(BEGIN_SLICE)
  try {
    const news = (await client.query<{ seen: string | null, changed: string }>(SEE_CHANGES, [seen.seq])).rows[0]!
    const seenSeq = news.seen === null ? seen.seq : Number(news.seen)
    const changed = seen.changed + Number(news.changed)
    if (changed > 0) await client.query(REJUDGE, [opts.rules ?? 'iys', slice])
    const count = (await client.query<{ n: string, stored: string }>(COUNT_ACCEPTED, [slice])).rows[0]!
    const accepted = Number(count.n)
    let lastSeq = 0
    if (accepted > 0) {
      lastSeq = Number((await client.query<{ v: string }>('SELECT setval(\'consent_seq\', nextval(\'consent_seq\') + $1 - 1) AS v', [accepted])).rows[0]!.v)
      const first = lastSeq - accepted + 1
      const actor = opts.actor == null ? 'NULL' : client.escapeLiteral(opts.actor)
      await copyBack(client, ledgerRows(slice, first, actor), LEDGER_IN)
      await copyBack(client, stateRows(true)(slice, first, actor), STATE_IN)
      if (Number(count.stored) > 0 || changed > 0) await client.query(upsertConsentsSql(stateRows(false)(slice, first, actor)))
      await client.query(`SELECT pg_notify('${CHANGES_CHANNEL}', '${lastSeq}'); COMMIT`)
    } else {
      await client.query('COMMIT')
    }
    seen.seq = Math.max(seenSeq, lastSeq)
    seen.changed = changed
    return { applied: accepted, lastSeq }
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
}

/** Every refused row, in line order: `line,code,location,message`. Recipients are never written to it. */
async function writeRejectFile (client: PoolClient, path: string): Promise<void> {
  const out = createWriteStream(path)
  out.write('line,code,location,message\n')
  const copy = client.query(copyStreams.to(`COPY (SELECT line, code, coalesce(location, ''), message FROM import_staging WHERE code IS NOT NULL ORDER BY line, id) TO STDOUT`))
  let rest = ''
  for await (const chunk of copy as AsyncIterable<Buffer>) {
    const lines = (rest + chunk.toString('utf8')).split('\n')
    rest = lines.pop()!
    let text = ''
    for (const l of lines) {
      const [line, code, location, message] = l.split('\t') as [string, string, string, string]
      const msg = message === '\\N' ? ERRORS[code as ErrorCode]?.message ?? code : message.replace(/\\(.)/g, unescapeCopy)
      text += `${line},${code},${location},"${msg.replace(/"/g, '""')}"\n`
    }
    if (!out.write(text)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'close')
}

/** `--max-rejects`: at most `count` refused rows, or at most `percent` % of the rows read. */
export type RejectLimit = { count: number } | { percent: number }

/** `100` or `0.5%`; null when the text is neither. */
export function parseRejectLimit (text: string): RejectLimit | null {
  const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(text.trim())
  if (m === null) return null
  const v = Number(m[1])
  if (m[2] === '%') return v <= 100 ? { percent: v } : null
  return Number.isInteger(v) ? { count: v } : null
}

/**
 * Why an import that ran to its end still failed (exit 1), or null. The good rows are applied either way: the
 * limit is judged on the whole file, once it is read, and the exit code is what tells a script.
 * - more rows refused than --max-rejects allows;
 * - nothing applied while rows were refused, except when, under İYS rules, every refused row is one already stored
 *   (H174 duplicate) or older than what is stored (H178): re-running an imported file changes nothing and is no failure.
 */
export function importFailure (r: ImportResult, rules: Authority, limit: RejectLimit | null): string | null {
  const codes = Object.entries(r.rejectsByCode).sort((a, b) => b[1] - a[1]).map(([code, n]) => `${code}: ${n}`).join(', ')
  const see = r.rejectFile !== null ? `; see ${r.rejectFile}` : ''
  if (limit !== null) {
    const allowed = 'count' in limit ? limit.count : r.rows * limit.percent / 100
    const text = 'count' in limit ? String(limit.count) : `${limit.percent}% (${Math.floor(allowed)} of ${r.rows} rows)`
    if (r.rejected > allowed) return `${r.rejected} rows refused (${codes}), more than --max-rejects ${text}; ${r.applied} good row${r.applied === 1 ? ' was' : 's were'} applied${see}`
  }
  if (r.applied > 0 || r.rejected === 0) return null
  const alreadyStored = Object.keys(r.rejectsByCode).every(c => c === 'H174' || c === 'H178')
  if (rules === 'iys' && alreadyStored) return null
  return `nothing applied: ${r.rejected === 1 ? 'the one row was' : `all ${r.rejected} rows were`} refused (${codes})${see}`
}
