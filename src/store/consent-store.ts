// Consent writes that are not bulk imports: the İYS-shaped API, İYS push and İYS pull. One transaction per batch:
// take the write lock (seq order = commit order), read the stored state of the batch's keys, judge every write in
// order (domain/rules.ts), append each applied change to the evidence ledger with its seq, upsert the current
// state, and NOTIFY the change applier. A write that fails validation or a rule changes nothing.
// With İYS write-through on (iys/outbox.ts), each applied provider API write is also queued in iys_outbox in the same
// transaction: what was accepted is registered with İYS, and nothing is sent that was not accepted.

import { randomBytes } from 'node:crypto'
import { errorItem, type ErrorItem } from '../domain/errors.js'
import type { ValidConsent } from '../domain/consent.js'
import { judge, type Authority, type StoredState } from '../domain/rules.js'
import { CONSENT_WRITE_LOCK } from './migrate.js'
import { inTransaction, type Pool, type PoolClient } from './pg.js'

export type WriteVia = 'api' | 'push' | 'pull'

export interface ConsentWrite {
  consent: ValidConsent
  authority: Authority
  via: WriteVia
  actor?: string | null
  /** İYS's transactionId for pushed/pulled changes; generated for our own API writes */
  transactionId?: string | null
  /** İYS's creationDate (epoch seconds) for pushed/pulled changes; now for our own API writes */
  creationDate?: number | null
}

export type WriteOutcome =
  | { status: 'applied', seq: number, transactionId: string, creationDate: number }
  | { status: 'stale' }
  | { status: 'rejected', error: ErrorItem }

export const CHANGES_CHANNEL = 'iys_changes'

const keyOf = (c: ValidConsent): string => `${c.brandCode}|${c.type}|${c.recipientType}|${c.recipient}`

// The evidence ledger's columns, in the order a write's rows give them (here and in `import`).
export const LEDGER_COLUMNS = 'seq, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, transaction_id, via, actor, creation_date'

// The current state: a key and what its last applied change set. Every state column is overwritten on conflict, so a
// column added here is carried by every writer.
const KEY_COLUMNS = ['brand_code', 'type', 'recipient_type', 'recipient']
const STATE_COLUMNS = ['iys_code', 'status', 'source', 'consent_date', 'seq', 'transaction_id', 'creation_date']
/** The current state's columns, in the order upsertConsentsSql's rows give them. */
export const CONSENT_COLUMNS = [...KEY_COLUMNS, ...STATE_COLUMNS].join(', ')
// İYS's transactionId of the current state (write-through, iys/outbox.ts) belongs to the change that set it: a new
// change clears it until the outbox registers that one.
const UPSERT_SET = STATE_COLUMNS.map(col => `${col} = EXCLUDED.${col}`).join(', ') + ', iys_transaction_id = NULL, iys_creation_date = NULL, updated_at = now()'

/**
 * The one statement that sets the current state, for these writes and `import`'s. `rows` is a SELECT giving
 * CONSENT_COLUMNS in order, one row per key: the key's last applied change (highest seq).
 */
export function upsertConsentsSql (rows: string): string {
  return `INSERT INTO consents AS c (${CONSENT_COLUMNS})
${rows}
ON CONFLICT (${KEY_COLUMNS.join(', ')}) DO UPDATE SET ${UPSERT_SET}`
}

// A batch of applied writes as rows (writeConsentsTx's parameters $1..$13).
const APPLIED_ROWS = `unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[],
                            $9::bigint[], $10::text[], $11::text[], $12::text[], $13::bigint[])
                     AS x(seq, b, t, r, rc, iys, s, src, d, tx, via, actor, cd)`
const INSERT_LEDGER = `INSERT INTO consent_history (${LEDGER_COLUMNS})
       SELECT seq, b, t, r, rc, iys, s, src, to_timestamp(d), tx, via, actor, to_timestamp(cd) FROM ${APPLIED_ROWS}`
// The current state is the last applied change per key (highest seq).
const UPSERT_STATE = upsertConsentsSql(`SELECT DISTINCT ON (b, t, r, rc) b, t, r, rc, iys, s, src, to_timestamp(d), seq, tx, to_timestamp(cd)
       FROM ${APPLIED_ROWS} ORDER BY b, t, r, rc, seq DESC`)

/** A new İYS-style transaction id: 64 hex characters. */
export const newTransactionId = (): string => randomBytes(32).toString('hex')

// ---- İYS write-through: which provider writes are queued for İYS (iys/outbox.ts turns this on while it runs) ----

/** iysCode → how many running outboxes register its writes (a count, so that two in one process do not clash). */
const outboxCodes = new Map<string, number>()

/**
 * From now on, applied provider API writes (via 'api') of this iysCode are queued in iys_outbox in their own
 * transaction. Returns the function that stops it. Other tenants' writes are not queued: İYS credentials are per iysCode.
 */
export function queueForIys (iysCode: string): () => void {
  outboxCodes.set(iysCode, (outboxCodes.get(iysCode) ?? 0) + 1)
  let done = false
  return () => {
    if (done) return
    done = true
    const n = (outboxCodes.get(iysCode) ?? 1) - 1
    if (n <= 0) outboxCodes.delete(iysCode)
    else outboxCodes.set(iysCode, n)
  }
}

const INSERT_OUTBOX = `INSERT INTO iys_outbox (seq, write_id, iys_code, brand_code, type, recipient_type, recipient, status, source, consent_date, transaction_id)
       SELECT seq, $1, iys, b, t, r, rc, s, src, to_timestamp(d), tx
       FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[])
         AS x(seq, iys, b, t, r, rc, s, src, d, tx)`

/** Writes a batch in its own transaction. */
export async function writeConsents (pool: Pool, writes: readonly ConsentWrite[]): Promise<WriteOutcome[]> {
  if (writes.length === 0) return []
  return inTransaction(pool, client => writeConsentsTx(client, writes))
}

/**
 * Writes a batch inside the caller's transaction (so that claiming an async request or a push-inbox row, or moving
 * a pull cursor, commits together with the changes it caused). Takes the write lock; the caller commits.
 */
export async function writeConsentsTx (client: PoolClient, writes: readonly ConsentWrite[]): Promise<WriteOutcome[]> {
  if (writes.length === 0) return []
  await client.query('SELECT pg_advisory_xact_lock($1)', [CONSENT_WRITE_LOCK])
  const cols = { b: [] as string[], t: [] as string[], r: [] as string[], rc: [] as string[] }
  for (const w of writes) { cols.b.push(w.consent.brandCode); cols.t.push(w.consent.type); cols.r.push(w.consent.recipientType); cols.rc.push(w.consent.recipient) }
  const stored = await client.query<{ k: string, status: 'ONAY' | 'RET', d: string }>(
    `SELECT c.brand_code || '|' || c.type || '|' || c.recipient_type || '|' || c.recipient AS k, c.status,
            extract(epoch FROM c.consent_date)::bigint AS d
     FROM consents c
     JOIN unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS w(b, t, r, rc)
       ON c.brand_code = w.b AND c.type = w.t AND c.recipient_type = w.r AND c.recipient = w.rc`,
    [cols.b, cols.t, cols.r, cols.rc])
  const state = new Map<string, StoredState>()
  for (const row of stored.rows) state.set(row.k, { status: row.status, consentDate: Number(row.d) })

  const outcomes: WriteOutcome[] = []
  const applied: { w: ConsentWrite, i: number }[] = []
  for (const w of writes) {
    const c = w.consent
    const k = keyOf(c)
    const verdict = judge(state.get(k) ?? null, c.status, c.consentDate, w.authority)
    if (verdict === 'stale') { outcomes.push({ status: 'stale' }); continue }
    if (verdict !== 'apply') {
      const cur = state.get(k)
      const message = verdict === 'H174' && cur !== undefined ? `İzin durumu (status) güncellemesi için farklı bir durum girilmelidir. İzin durumu: ${cur.status}` : undefined
      outcomes.push({ status: 'rejected', error: errorItem(verdict, undefined, undefined, message) })
      continue
    }
    state.set(k, { status: c.status, consentDate: c.consentDate })
    applied.push({ w, i: outcomes.length })
    outcomes.push({ status: 'stale' }) // replaced below once the seq is known
  }

  if (applied.length > 0) {
    const seqs = await client.query<{ seq: string }>('SELECT nextval(\'consent_seq\') AS seq FROM generate_series(1, $1)', [applied.length])
    const now = Math.floor(Date.now() / 1000)
    const h = { seq: [] as string[], b: [] as string[], t: [] as string[], r: [] as string[], rc: [] as string[], iys: [] as string[], s: [] as string[], src: [] as string[], d: [] as number[], tx: [] as string[], via: [] as string[], actor: [] as (string | null)[], cd: [] as number[] }
    applied.forEach(({ w, i }, j) => {
      const c = w.consent
      const seq = seqs.rows[j]!.seq
      const transactionId = w.transactionId ?? newTransactionId()
      const creationDate = w.creationDate ?? now
      h.seq.push(seq); h.b.push(c.brandCode); h.t.push(c.type); h.r.push(c.recipientType); h.rc.push(c.recipient)
      h.iys.push(c.iysCode); h.s.push(c.status); h.src.push(c.source); h.d.push(c.consentDate); h.tx.push(transactionId)
      h.via.push(w.via); h.actor.push(w.actor ?? null); h.cd.push(creationDate)
      outcomes[i] = { status: 'applied', seq: Number(seq), transactionId, creationDate }
    })
    const args = [h.seq, h.b, h.t, h.r, h.rc, h.iys, h.s, h.src, h.d, h.tx, h.via, h.actor, h.cd]
    await client.query(INSERT_LEDGER, args)
    await client.query(UPSERT_STATE, args)
    if (outboxCodes.size > 0) await queueApplied(client, applied.map(a => a.w), h)
    await client.query(`SELECT pg_notify('${CHANGES_CHANNEL}', $1)`, [h.seq[h.seq.length - 1]])
  }
  return outcomes
}

/**
 * A citizen's own rejection (an SMPP MO "RET", a one-click unsubscribe): a RET for each consent, from every
 * recipient type, written as the provider's write (so that İYS write-through registers it). İYS's rules refuse a
 * provider's first record when it is a RET (H175), but this RET is the citizen's act, and without it a TACIR
 * recipient with no record stays reachable (opt-out): those are written again as facts (authority 'iys'), in force
 * here and not sent to İYS, which would refuse them. `RET` already in force (H174) changes nothing. One transaction
 * each. Returns how many changes were applied.
 */
export async function writeCitizenRejections (pool: Pool, consents: readonly ValidConsent[], actor: string): Promise<number> {
  const writes = consents.map((consent): ConsentWrite => ({ consent, authority: 'provider', via: 'api', actor }))
  const first = await writeConsents(pool, writes)
  const unrecorded = writes.filter((_, i) => { const o = first[i]!; return o.status === 'rejected' && o.error.code === 'H175' })
  const facts = await writeConsents(pool, unrecorded.map(w => ({ ...w, authority: 'iys' })))
  return [...first, ...facts].filter(o => o.status === 'applied').length
}

/** Queues the applied provider API writes of write-through tenants for İYS (one outbox row per ledger seq). */
async function queueApplied (client: PoolClient, writes: readonly ConsentWrite[], h: { seq: string[], iys: string[], b: string[], t: string[], r: string[], rc: string[], s: string[], src: string[], d: number[], tx: string[] }): Promise<void> {
  const q = { seq: [] as string[], iys: [] as string[], b: [] as string[], t: [] as string[], r: [] as string[], rc: [] as string[], s: [] as string[], src: [] as string[], d: [] as number[], tx: [] as string[] }
  writes.forEach((w, j) => {
    if (w.via !== 'api' || w.authority !== 'provider' || !outboxCodes.has(h.iys[j]!)) return
    q.seq.push(h.seq[j]!); q.iys.push(h.iys[j]!); q.b.push(h.b[j]!); q.t.push(h.t[j]!); q.r.push(h.r[j]!); q.rc.push(h.rc[j]!)
    q.s.push(h.s[j]!); q.src.push(h.src[j]!); q.d.push(h.d[j]!); q.tx.push(h.tx[j]!)
  })
  if (q.seq.length === 0) return
  await client.query(INSERT_OUTBOX, [randomBytes(8).toString('hex'), q.seq, q.iys, q.b, q.t, q.r, q.rc, q.s, q.src, q.d, q.tx])
}

/** A compensating change (iys/outbox.ts, after İYS refused a change we had accepted): the state to put back. */
export interface CorrectionWrite {
  brandCode: string
  type: string
  recipientType: string
  recipient: string
  iysCode: string
  status: 'ONAY' | 'RET'
  source: string
  /** epoch seconds */
  consentDate: number
  transactionId: string | null
  /** epoch seconds; null: now */
  creationDate: number | null
  /** why, for the ledger: e.g. "iys-refused:H178" */
  actor: string
}

/**
 * Writes a compensating change in the caller's transaction, through the same statements as every change (write
 * lock, seq, ledger with via 'correction', current state, NOTIFY), so the change applier carries it to Redis and every
 * gateway. No rule is applied: the caller has decided under the write lock that it must be. Returns its seq.
 */
export async function writeCorrectionTx (client: PoolClient, c: CorrectionWrite): Promise<number> {
  await client.query('SELECT pg_advisory_xact_lock($1)', [CONSENT_WRITE_LOCK])
  const { rows } = await client.query<{ seq: string }>('SELECT nextval(\'consent_seq\') AS seq')
  const seq = rows[0]!.seq
  const args = [[seq], [c.brandCode], [c.type], [c.recipientType], [c.recipient], [c.iysCode], [c.status], [c.source], [c.consentDate],
    [c.transactionId], ['correction'], [c.actor], [c.creationDate ?? Math.floor(Date.now() / 1000)]]
  await client.query(INSERT_LEDGER, args)
  await client.query(UPSERT_STATE, args)
  await client.query(`SELECT pg_notify('${CHANGES_CHANNEL}', $1)`, [seq])
  return Number(seq)
}

