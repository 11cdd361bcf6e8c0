// `iys-gateway import FILE`: bulk-loads consents into Postgres. Rows are validated and normalised in Node, streamed
// into a temporary staging table with COPY, then merged in one statement: per key the latest consentDate wins
// (on a tie the later line), a stored record that is newer is kept, and every applied change gets a seq and an
// evidence-ledger row. Invalid rows go to a reject file with their line numbers; the good rows still count.

import { createWriteStream, statSync } from 'node:fs'
import { once } from 'node:events'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import copyStreams from 'pg-copy-streams'
import type { Pool } from '../store/pg.js'
import { readConsentFile, type Reject } from './consent-file.js'
import { Progress } from './progress.js'

export interface ImportOptions {
  file: string
  rejectFile?: string
  actor?: string
  progress?: boolean
}

export interface ImportResult {
  /** rows read (header excluded) */
  rows: number
  /** valid rows staged */
  valid: number
  rejected: number
  /** changes applied to the current state (and written to the ledger) */
  applied: number
  /** valid rows that lost to a newer record for the same key, in the file or already stored */
  superseded: number
  rejectFile: string | null
}

// COPY text format escapes: none of our fields can contain tab, newline or backslash after validation (codes are
// digits, enums are fixed, recipients are E.164 or ASCII e-mail without those characters).
const STAGING = `CREATE TEMP TABLE import_staging (
  line bigint, brand_code bigint, type text, recipient_type text, recipient text,
  iys_code bigint, status text, source text, consent_epoch bigint
) ON COMMIT DROP`

const MERGE = `
WITH latest AS (
  SELECT DISTINCT ON (brand_code, type, recipient_type, recipient) *
  FROM import_staging
  ORDER BY brand_code, type, recipient_type, recipient, consent_epoch DESC, line DESC
), applied AS (
  INSERT INTO consents AS c (brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, seq)
  SELECT brand_code, type, recipient_type, recipient, iys_code, status, source, to_timestamp(consent_epoch), nextval('consent_seq')
  FROM latest
  ON CONFLICT (brand_code, type, recipient_type, recipient) DO UPDATE
    SET iys_code = EXCLUDED.iys_code, status = EXCLUDED.status, source = EXCLUDED.source,
        consent_date = EXCLUDED.consent_date, seq = EXCLUDED.seq, transaction_id = NULL, updated_at = now()
    WHERE c.consent_date < EXCLUDED.consent_date
  RETURNING c.*
), ledger AS (
  INSERT INTO consent_history (seq, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, via, actor)
  SELECT seq, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, 'import', $1 FROM applied
  RETURNING 1
)
SELECT count(*)::bigint AS applied FROM ledger`

export async function importConsents (pool: Pool, opts: ImportOptions): Promise<ImportResult> {
  const totalBytes = statSync(opts.file).size
  const progress = opts.progress === false ? null : new Progress({ label: 'import', totalBytes })
  const rejectPath = opts.rejectFile ?? opts.file + '.rejects.csv'
  let rejectOut: ReturnType<typeof createWriteStream> | null = null
  let rows = 0
  let valid = 0
  let rejected = 0

  const writeRejects = async (rejects: Reject[]): Promise<void> => {
    if (rejectOut === null) {
      rejectOut = createWriteStream(rejectPath)
      rejectOut.write('line,code,location,message\n')
    }
    let text = ''
    for (const r of rejects) {
      text += `${r.line},${r.error.code},${r.error.location?.join('.') ?? ''},"${r.error.message.replace(/"/g, '""')}"\n`
    }
    if (!rejectOut.write(text)) await once(rejectOut, 'drain')
  }

  const nowSeconds = Math.floor(Date.now() / 1000)
  async function * tsv (): AsyncGenerator<string> {
    for await (const batch of readConsentFile(opts.file, nowSeconds)) {
      rows += batch.consents.length + batch.rejects.length
      rejected += batch.rejects.length
      valid += batch.consents.length
      if (batch.rejects.length > 0) await writeRejects(batch.rejects)
      let out = ''
      const cs = batch.consents
      for (let i = 0; i < cs.length; i++) {
        const c = cs[i]!
        out += `${batch.lines[i]}\t${c.brandCode}\t${c.type}\t${c.recipientType}\t${c.recipient}\t${c.iysCode}\t${c.status}\t${c.source}\t${c.consentDate}\n`
      }
      progress?.update(rows, batch.bytesRead, rejected)
      if (out.length > 0) yield out
    }
  }

  const client = await pool.connect()
  let applied = 0
  try {
    await client.query('BEGIN')
    await client.query(STAGING)
    await pipeline(Readable.from(tsv()), client.query(copyStreams.from('COPY import_staging FROM STDIN')))
    progress?.setPhase('merging into consents')
    const res = await client.query<{ applied: string }>(MERGE, [opts.actor ?? null])
    applied = Number(res.rows[0]!.applied)
    await client.query('COMMIT')
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  } finally {
    client.release()
    if (rejectOut !== null) {
      const out: ReturnType<typeof createWriteStream> = rejectOut
      out.end()
      await once(out, 'close')
    }
  }
  const result: ImportResult = { rows, valid, rejected, applied, superseded: valid - applied, rejectFile: rejected > 0 ? rejectPath : null }
  progress?.done(`${applied} applied, ${result.superseded} superseded, ${rejected} rejected${rejected > 0 ? ` (see ${rejectPath})` : ''}`)
  return result
}
