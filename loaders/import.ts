// `iys-gateway import FILE`: bulk-loads consents into Postgres.
//
// Rows are validated and normalised in Node and streamed with COPY into a temporary staging table (invalid rows
// too, carrying their error). The keys are then cut into slices (SLICE_KEYS keys each, in key order) and each slice
// is judged and applied in a transaction of its own, under the consent write lock: every seq-assigning transaction
// holds it (seq order is commit order, see filter/changes.ts), but only for one slice, so live writes (API, İYS
// push) wait at most one slice, never the whole import. All rows of a key are in the same slice, and a slice is
// judged against the state stored when it runs (including live writes committed meanwhile). In a slice, one
// set-based pass judges every row per key in consentDate order (ties: file order), whatever the order of the rows in
// the file, with the rules of domain/rules.ts for the chosen authority:
//   'iys' (default): the file holds İYS's records (an export, a migration): a RET is a fact even without an ONAY
//         before it. A row older than the stored record is H178 ("superseded"); a row equal in date and status
//         to the record before it is a duplicate (H174). Everything else applies.
//   'provider': İYS's checks for a provider's own writes, as our API applies them: H178 older than stored,
//         H175 a RET before the key has any record, H174 the same status as the record before it.
// Every accepted row becomes a change with its own seq in the evidence ledger; the last one per key is the current
// state. The reject file lists every refused row in line order with its code. The good rows still count.
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

// Each valid row's slice: keys in key order, SLICE_KEYS ($1) keys per slice, so that a slice reads its rows through an
// index on `slice`. Computed in one sorted pass that writes the table anew: an UPDATE labelling the rows in place
// rewrote every row and took as long as the COPY (7.5 s of a 1M-row import). Refused rows, whose key columns are
// null, sort last and get no slice.
const SLICES = [
  `CREATE TEMP TABLE import_sliced AS
   SELECT id, line, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_epoch, transaction_id,
          creation_epoch, code, location, message,
          CASE WHEN code IS NULL THEN ((dense_rank() OVER (ORDER BY brand_code, type, recipient_type, recipient)) - 1) / $1 END::integer AS slice
   FROM import_staging`,
  'DROP TABLE import_staging',
  'ALTER TABLE import_sliced RENAME TO import_staging'
]
// Built after the COPY (cheaper than maintaining them during it) and before the first slice: every query a slice
// runs under the write lock reaches import_staging through one of these, never by scanning it (a scan per slice
// made an import quadratic and held the lock for seconds per slice). test/import-lock.test.ts checks the plans.
const SLICE_INDEXES = [
  'CREATE INDEX ON import_staging (slice)',
  'CREATE UNIQUE INDEX ON import_staging (id)',
  'ANALYZE import_staging'
]

/** Keys per slice: each slice is one transaction holding the write lock for a fraction of a second. */
export const SLICE_KEYS = 5000

// Rules per key in (consentDate, file order) order; see the header. `prev` is the status of the row before (the stored
// one for the first row): while a key has a record, the state before a row is always the previous row's status
// (an accepted row set it, a refused H174 row equalled it). $1 is the authority, $2 the slice.
const JUDGE = `
CREATE TEMP TABLE import_judged ON COMMIT DROP AS
WITH s AS (
  SELECT st.*, c.status AS stored_status, extract(epoch FROM c.consent_date)::bigint AS stored_epoch
  FROM import_staging st
  LEFT JOIN consents c USING (brand_code, type, recipient_type, recipient)
  WHERE st.slice = $2 AND st.code IS NULL
), w AS (
  SELECT s.*,
         coalesce(lag(status) OVER k, stored_status) AS prev,
         coalesce(lag(consent_epoch) OVER k, stored_epoch) AS prev_epoch,
         stored_status IS NOT NULL OR coalesce(bool_or(status = 'ONAY') OVER (k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS has_prev
  FROM s
  WHERE stored_epoch IS NULL OR consent_epoch >= stored_epoch
  WINDOW k AS (PARTITION BY brand_code, type, recipient_type, recipient ORDER BY consent_epoch, id)
)
SELECT w.*,
       CASE WHEN $1 = 'iys' THEN CASE WHEN status = prev AND consent_epoch = prev_epoch THEN 'H174' END
            ELSE CASE WHEN NOT has_prev AND status = 'RET' THEN 'H175' WHEN has_prev AND status = prev THEN 'H174' END
       END AS verdict
FROM w`

// The slice's refused rows; H178 (older than the stored record) before APPLY changes the stored records. $1: slice.
// (`st.slice = $1` as well as the id: import_judged has no statistics, and without it the planner may scan all rows.)
const MARK_REJECTS = 'UPDATE import_staging st SET code = j.verdict FROM import_judged j WHERE st.slice = $1 AND st.id = j.id AND j.verdict IS NOT NULL'
const MARK_SUPERSEDED = `
UPDATE import_staging st SET code = 'H178'
FROM consents c
WHERE st.slice = $1 AND st.code IS NULL
  AND c.brand_code = st.brand_code AND c.type = st.type AND c.recipient_type = st.recipient_type AND c.recipient = st.recipient
  AND st.consent_epoch < extract(epoch FROM c.consent_date)::bigint`

// Accepted rows get consecutive seqs from a block reserved under the write lock, in per-key order.
const APPLY = `
WITH acc AS (
  SELECT j.*, $1::bigint - 1 + row_number() OVER (ORDER BY brand_code, type, recipient_type, recipient, consent_epoch, id) AS seq
  FROM import_judged j WHERE verdict IS NULL
), ledger AS (
  INSERT INTO consent_history (${LEDGER_COLUMNS})
  SELECT seq, brand_code, type, recipient_type, recipient, iys_code, status, source, to_timestamp(consent_epoch),
         coalesce(transaction_id, md5(random()::text || seq::text) || md5(seq::text || clock_timestamp()::text)),
         'import', $2, to_timestamp(coalesce(creation_epoch, extract(epoch FROM now())::bigint))
  FROM acc
  ORDER BY seq -- key order: the ledger's and the state's indexes then grow at their right edge, not at random
  RETURNING ${CONSENT_COLUMNS}
), upsert AS (
  ${upsertConsentsSql(`SELECT DISTINCT ON (brand_code, type, recipient_type, recipient) ${CONSENT_COLUMNS}
  FROM ledger ORDER BY brand_code, type, recipient_type, recipient, seq DESC`)}
  RETURNING 1
)
SELECT (SELECT count(*) FROM ledger)::bigint AS applied`

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
  // One session for the whole import: the staging table lives across the slices' transactions (temporary tables
  // are per session). The session is closed at the end, which drops them.
  const client = await pool.connect()
  let staged: Staged
  try {
    staged = await stageImport(client, opts, progress)
    // The longest phase: one transaction per slice, each a tick of the progress line (slices done, %, ETA).
    progress?.setPhase('applying İYS rules', staged.slices, 'slices')
    for (let slice = 0; slice < staged.slices; slice++) {
      const r = await applySlice(client, slice, opts)
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
  /** ';' when the CSV file is semicolon-separated */
  separator?: ';'
}

/**
 * Reads the file into this session's import_staging (COPY), labels every valid row with its slice and builds the
 * indexes the slices use. Takes no lock: nothing here touches shared tables.
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
  await client.query(SLICES[0]!, [opts.sliceKeys ?? SLICE_KEYS])
  for (const q of SLICES.slice(1)) await client.query(q)
  progress?.setPhase('indexing')
  for (const q of SLICE_INDEXES) await client.query(q)
  const slices = Number((await client.query<{ n: string }>('SELECT coalesce(max(slice) + 1, 0) AS n FROM import_staging')).rows[0]!.n)
  return separator === undefined ? { rows, invalid, slices } : { rows, invalid, slices, separator }
}

/** The statements a slice runs under the write lock, in order (see applySlice); exported for the plan test. */
export const SLICE_SQL = { judge: JUDGE, markRejects: MARK_REJECTS, markSuperseded: MARK_SUPERSEDED, apply: APPLY } as const

/** Judges and applies one slice in its own transaction, holding the write lock from the first read of stored state. */
async function applySlice (client: PoolClient, slice: number, opts: ImportOptions): Promise<{ applied: number, lastSeq: number }> {
  await client.query('BEGIN')
  try {
    await client.query('SET LOCAL work_mem = \'256MB\'')
    // Reach consents by its primary key, one probe per row of the slice. The planner otherwise hash-joins a scan of
    // the whole table (its statistics lag behind an import that is filling it) in every slice: quadratic, and the
    // write lock held the longer (1M rows: 14,000 rows/s with the scans, 32,000 without).
    await client.query('SET LOCAL enable_hashjoin = off')
    await client.query('SET LOCAL enable_mergejoin = off')
    // This transaction reads the stored state and assigns seqs: hold the write lock so that seq order is commit order.
    await client.query('SELECT pg_advisory_xact_lock($1)', [CONSENT_WRITE_LOCK])
    await client.query(JUDGE, [opts.rules ?? 'iys', slice])
    await client.query(MARK_REJECTS, [slice])
    await client.query(MARK_SUPERSEDED, [slice])
    const count = await client.query<{ n: string }>('SELECT count(*) AS n FROM import_judged WHERE verdict IS NULL')
    const accepted = Number(count.rows[0]!.n)
    let applied = 0
    let lastSeq = 0
    if (accepted > 0) {
      const base = Number((await client.query<{ v: string }>('SELECT nextval(\'consent_seq\') AS v')).rows[0]!.v)
      await client.query('SELECT setval(\'consent_seq\', $1)', [base + accepted - 1])
      const res = await client.query<{ applied: string }>(APPLY, [base, opts.actor ?? null])
      applied = Number(res.rows[0]!.applied)
      lastSeq = base + accepted - 1
      await client.query(`SELECT pg_notify('${CHANGES_CHANNEL}', $1)`, [String(lastSeq)])
    }
    await client.query('COMMIT')
    return { applied, lastSeq }
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
