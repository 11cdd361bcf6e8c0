// Reads of the truth in Postgres for the mirrored İYS read endpoints (http/iys-read-routes.ts): a brand's changes
// from the evidence ledger by seq (İYS's "changes" pull), one recipient's history newest first, and the tenant's
// brands with their consent counts. None of this is on the check path.

import { createHash } from 'node:crypto'
import { TR_INTERVAL_SQL as TR } from '../domain/time.js'
import type { ConsentType, RecipientType } from '../domain/vocabulary.js'
import type { Pool } from './pg.js'

// İYS dates are Turkey time, a fixed UTC+3.
const fmt = (col: string): string => `to_char(${col} AT TIME ZONE ${TR}, 'YYYY-MM-DD HH24:MI:SS')`
// Rows written before creation dates were recorded have none: the moment we received them stands in.
const CREATED = 'coalesce(creation_date, received_at)'

/** One consent change as İYS lists it (changes and history), in İYS's field order. */
export interface LedgerChange {
  consentDate: string
  creationDate: string
  source: string
  recipient: string
  recipientType: RecipientType
  status: string
  type: ConsentType
  transactionId: string
}

// ---------------------------------------------------------------------------------------------------------------
// The `after` cursor. İYS's is `<creationDate epoch seconds>_<transactionId>` of the last change listed. Ours has
// that shape too, `<epoch>_<64 hex>`, with the hex carrying the ledger seq (16 hex digits) and 48 hex digits of a
// digest of (brand, seq, epoch). The digest is not a secret: it only tells our cursors from İYS's own (a client that
// switched its base URL may send the cursor İYS gave it) and from a cursor of another brand. A forged cursor can
// only pick a seq of a brand the key may read anyway.

const SEQ_HEX = 16
const AFTER_RE = /^(\d{1,12})_(\S{1,256})$/

const digest = (brandCode: string, seq: bigint, epoch: number): string =>
  createHash('sha256').update(`${brandCode}:${seq}:${epoch}`).digest('hex').slice(0, 64 - SEQ_HEX)

export function encodeAfter (brandCode: string, seq: bigint, epoch: number): string {
  return `${epoch}_${seq.toString(16).padStart(SEQ_HEX, '0')}${digest(brandCode, seq, epoch)}`
}

/**
 * What an `after` value means: one of ours (continue after that seq), a foreign one (İYS's own, or one of ours for
 * another brand: continue from its moment, `sinceEpoch`), or nothing usable (null).
 */
export function decodeAfter (brandCode: string, after: string): { seq: bigint } | { sinceEpoch: number } | null {
  const m = AFTER_RE.exec(after)
  if (m === null) return null
  const epoch = Number(m[1])
  const tail = m[2]!
  if (tail.length === 64 && /^[0-9a-f]+$/.test(tail)) {
    const seq = BigInt('0x' + tail.slice(0, SEQ_HEX))
    if (tail.slice(SEQ_HEX) === digest(brandCode, seq, epoch)) return { seq }
  }
  return { sinceEpoch: epoch }
}

// ---------------------------------------------------------------------------------------------------------------
// Changes

/** İYS's `source` filter of the changes pull: the provider's own changes (HS_*) or the recipients' (IYS_*). */
export type ChangeOrigin = 'HS' | 'IYS'

/** İYS lists changes of the last 7 days when no `after` is given. */
export const CHANGES_WINDOW_S = 7 * 86_400

/**
 * The lowest seq received at or after `since` (a bound: that seq need not exist); max seq + 1 when none was, 0 when
 * the ledger is empty. A binary search over the primary key in one round trip (a handful of index probes), since
 * received_at has no index and follows seq (seq order is commit order, received_at the transaction's start: close
 * enough for a window of days). A scan for min(seq) WHERE received_at >= … would read the whole ledger.
 */
export async function firstSeqSince (pool: Pool, since: Date): Promise<bigint> {
  const { rows } = await pool.query<{ lo: string | null }>(
    `WITH RECURSIVE b(lo, hi) AS (
       SELECT min(seq), max(seq) + 1 FROM consent_history
       UNION ALL
       SELECT CASE WHEN p.r >= $1 THEN b.lo ELSE p.s + 1 END, CASE WHEN p.r >= $1 THEN (b.lo + b.hi) / 2 ELSE b.hi END
       FROM b CROSS JOIN LATERAL (
         SELECT seq AS s, received_at AS r FROM consent_history WHERE seq >= (b.lo + b.hi) / 2 ORDER BY seq LIMIT 1) p
       WHERE b.lo < b.hi
     )
     SELECT max(lo)::text AS lo FROM b`, [since])
  return BigInt(rows[0]?.lo ?? '0')
}

export interface ChangesPage {
  list: LedgerChange[]
  /** the cursor after the last change listed; null when the page is empty */
  after: string | null
}

/** Up to `limit` changes of `brandCode` with seq > `afterSeq` whose source is of `origin`, in seq order. */
export async function changesAfter (pool: Pool, brandCode: string, afterSeq: bigint, origin: ChangeOrigin, limit: number): Promise<ChangesPage> {
  // (the seq goes out as text under another name: ORDER BY seq must sort the bigint, not an output column's text)
  const { rows } = await pool.query<LedgerChange & { seqText: string, epoch: number }>(
    `SELECT seq::text AS "seqText", extract(epoch FROM ${CREATED})::float8 AS epoch,
            ${fmt('consent_date')} AS "consentDate", ${fmt(CREATED)} AS "creationDate", source, recipient,
            recipient_type AS "recipientType", status, type, transaction_id AS "transactionId"
     FROM consent_history
     WHERE brand_code = $1 AND seq > $2 AND starts_with(source, $3)
     ORDER BY seq LIMIT $4`,
    [brandCode, afterSeq.toString(), origin + '_', limit])
  if (rows.length === 0) return { list: [], after: null }
  const last = rows[rows.length - 1]!
  const after = encodeAfter(brandCode, BigInt(last.seqText), Math.floor(last.epoch))
  return { list: rows.map(({ seqText: _s, epoch: _e, ...change }) => change), after }
}

// ---------------------------------------------------------------------------------------------------------------
// History

export interface HistoryPage {
  list: LedgerChange[]
  totalCount: number
}

/** One recipient's changes, newest consentDate first (the later change first for equal dates), `limit` from `offset`. */
export async function historyOf (pool: Pool, brandCode: string, type: ConsentType, recipientType: RecipientType, recipient: string, limit: number, offset: number): Promise<HistoryPage> {
  const key = [brandCode, type, recipientType, recipient]
  const where = 'WHERE brand_code = $1 AND type = $2 AND recipient_type = $3 AND recipient = $4'
  const [page, count] = await Promise.all([
    pool.query<LedgerChange>(
      `SELECT ${fmt('consent_date')} AS "consentDate", source, recipient, recipient_type AS "recipientType", status, type,
              ${fmt(CREATED)} AS "creationDate", transaction_id AS "transactionId"
       FROM consent_history ${where} ORDER BY consent_date DESC, seq DESC LIMIT $5 OFFSET $6`,
      [...key, limit, offset]),
    pool.query<{ n: number }>(`SELECT count(*)::float8 AS n FROM consent_history ${where}`, key)
  ])
  return { list: page.rows, totalCount: count.rows[0]?.n ?? 0 }
}

// ---------------------------------------------------------------------------------------------------------------
// Brands

export interface BrandRow {
  brandCode: number
  name: string
  approval: number
  rejection: number
  total: number
}

/**
 * The tenant's brands (only `brandCodes` when given), by code, with the counts of their current consents. The
 * counts read each brand's consents through the primary key: seconds for a brand of tens of millions.
 */
export async function tenantBrands (pool: Pool, iysCode: string, brandCodes: readonly string[] | null): Promise<BrandRow[]> {
  const { rows } = await pool.query<BrandRow>(
    `SELECT b.brand_code::float8 AS "brandCode", b.name, s.approval, s.rejection, s.total
     FROM brands b CROSS JOIN LATERAL (
       SELECT count(*) FILTER (WHERE c.status = 'ONAY')::float8 AS approval, count(*) FILTER (WHERE c.status = 'RET')::float8 AS rejection,
              count(*)::float8 AS total
       FROM consents c WHERE c.brand_code = b.brand_code) s
     WHERE b.iys_code = $1 AND ($2::bigint[] IS NULL OR b.brand_code = ANY($2::bigint[]))
     ORDER BY b.brand_code`,
    [iysCode, brandCodes])
  return rows
}
