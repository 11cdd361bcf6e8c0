// Reads of the truth in Postgres for the İYS-shaped status endpoints and the evidence ledger. None of this is on
// the check path (that is the bloom + Redis); these answer providers and compliance officers.

import type { ConsentType, RecipientType } from '../domain/vocabulary.js'
import type { Pool } from './pg.js'
import { TR_INTERVAL_SQL as TR } from '../domain/time.js'

// İYS dates are Turkey time, a fixed UTC+3.
const fmt = (col: string): string => `to_char(${col} AT TIME ZONE ${TR}, 'YYYY-MM-DD HH24:MI:SS')`

export interface ConsentRecord {
  recipient: string
  recipientType: RecipientType
  type: ConsentType
  status: string
  source: string
  consentDate: string
  creationDate: string | null
  transactionId: string | null
}

export async function consentStatus (pool: Pool, brandCode: string, type: ConsentType, recipientType: RecipientType, recipient: string): Promise<ConsentRecord | null> {
  const { rows } = await pool.query<ConsentRecord>(
    `SELECT recipient, recipient_type AS "recipientType", type, status, source, ${fmt('consent_date')} AS "consentDate",
            ${fmt('creation_date')} AS "creationDate", transaction_id AS "transactionId"
     FROM consents WHERE brand_code = $1 AND type = $2 AND recipient_type = $3 AND recipient = $4`,
    [brandCode, type, recipientType, recipient])
  return rows[0] ?? null
}

/** The recipients among `recipients` whose current state is ONAY, in the order given. */
export async function approvedAmong (pool: Pool, brandCode: string, type: ConsentType, recipientType: RecipientType, recipients: string[]): Promise<string[]> {
  const { rows } = await pool.query<{ recipient: string }>(
    `SELECT r.recipient FROM unnest($4::text[]) WITH ORDINALITY AS r(recipient, i)
     JOIN consents c ON c.brand_code = $1 AND c.type = $2 AND c.recipient_type = $3 AND c.recipient = r.recipient
     WHERE c.status = 'ONAY' ORDER BY r.i`,
    [brandCode, type, recipientType, recipients])
  return rows.map(r => r.recipient)
}

export interface HistoryEntry {
  seq: number
  status: string
  source: string
  consentDate: string
  creationDate: string | null
  transactionId: string | null
  iysCode: string
  via: string
  actor: string | null
  receivedAt: string
}

const HISTORY_COLUMNS = `seq::float8 AS seq, status, source, ${fmt('consent_date')} AS "consentDate", ${fmt('creation_date')} AS "creationDate",
  transaction_id AS "transactionId", iys_code::text AS "iysCode", via, actor, to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "receivedAt"`

/** Every recorded change of one key, oldest first. */
export async function consentHistory (pool: Pool, brandCode: string, type: ConsentType, recipientType: RecipientType, recipient: string): Promise<HistoryEntry[]> {
  const { rows } = await pool.query<HistoryEntry>(
    `SELECT ${HISTORY_COLUMNS} FROM consent_history
     WHERE brand_code = $1 AND type = $2 AND recipient_type = $3 AND recipient = $4 ORDER BY seq`,
    [brandCode, type, recipientType, recipient])
  return rows
}

/**
 * The state at a moment: the last change we had received by then (received_at ≤ at). That is what the gateway
 * decided with at that moment, which is what a complaint asks. null: no record yet at that moment.
 */
export async function consentStateAt (pool: Pool, brandCode: string, type: ConsentType, recipientType: RecipientType, recipient: string, at: Date): Promise<HistoryEntry | null> {
  const { rows } = await pool.query<HistoryEntry>(
    `SELECT ${HISTORY_COLUMNS} FROM consent_history
     WHERE brand_code = $1 AND type = $2 AND recipient_type = $3 AND recipient = $4 AND received_at <= $5
     ORDER BY seq DESC LIMIT 1`,
    [brandCode, type, recipientType, recipient, at])
  return rows[0] ?? null
}

/**
 * Retention (Regulation art. 13: records are kept at least one year after the consent stops being valid): deletes
 * ledger entries that a later change for the same key replaced more than `days` days ago. The latest entry of a
 * key is never deleted. Returns how many entries went.
 */
export async function pruneHistory (pool: Pool, days: number): Promise<number> {
  const res = await pool.query(
    `DELETE FROM consent_history h
     WHERE EXISTS (SELECT 1 FROM consent_history n
                   WHERE n.brand_code = h.brand_code AND n.type = h.type AND n.recipient_type = h.recipient_type
                     AND n.recipient = h.recipient AND n.seq > h.seq AND n.received_at < now() - make_interval(days => $1))`,
    [days])
  return res.rowCount ?? 0
}
