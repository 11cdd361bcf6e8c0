// Provider writes through the mirrored İYS API (/sps/… and /v2/sps/…): İYS's rules that need the stored record
// beyond domain/rules.ts, around the one consent write path (consent-store.ts writeConsentsTx), in the caller's
// transaction and under the same write lock:
// - H462/H463: a TACIR consent may leave out consentDate and source when it is the key's first record, not when it
//   updates one;
// - v2: a consent re-sent identically (same fingerprint, see domain/iys-validation.ts) while the change it made is still the
//   key's current state is answered with that change's transactionId and creationDate, and writes nothing.
// Every applied write leaves its fingerprint (table consent_fingerprints, one row per key), whatever API version
// wrote it: a v2 re-send of a consent written through v1 is a re-send too (İYS: "daha önce İYS'ye kaydedilmiş bir izin").

import type { ValidConsent } from '../domain/consent.js'
import { errorItem, type ErrorItem } from '../domain/errors.js'
import { writeConsentsTx, type WriteOutcome } from './consent-store.js'
import type { Omitted } from '../domain/iys-validation.js'
import { CONSENT_WRITE_LOCK } from './migrate.js'
import type { PoolClient } from './pg.js'


/** Where a write came from, for v2's answer to a re-send ("originalRequestInformation", "isAddConsentV2Service"). */
export interface Origin {
  /** the asynchronous request and its item; null for a single write */
  requestId: string | null
  subRequestId: string | null
  /** written through POST /v2/…/consents */
  v2Single: boolean
}

export interface MirroredWrite {
  consent: ValidConsent
  omitted: Omitted
  /** hex sha-256 of the consent as sent (domain/iys-validation.ts); null: none known (requests stored before migration 8) */
  fingerprint: string | null
  /** v2: answer an identical re-send with the change it made instead of judging it again (H174) */
  v2: boolean
  origin: Origin
  actor?: string | null
}

export type MirroredOutcome =
  | { status: 'applied', seq: number, transactionId: string, creationDate: number }
  | { status: 'repeated', seq: number, transactionId: string, creationDate: number, original: Origin }
  | { status: 'rejected', errors: ErrorItem[] }

interface Stored { seq: string, tx: string | null, cd: string | null, fp: string | null, request_id: string | null, sub_request_id: string | null, v2_single: boolean | null }

const KEYS = 'unnest($1::int[], $2::bigint[], $3::text[], $4::text[], $5::text[]) AS w(i, b, t, r, rc)'
const ON_KEY = (a: string): string => `${a}.brand_code = w.b AND ${a}.type = w.t AND ${a}.recipient_type = w.r AND ${a}.recipient = w.rc`

// The stored state of the batch's keys, with the fingerprint of the change that set it (when a mirrored write did).
const READ_STATE = `SELECT w.i, c.seq, c.transaction_id AS tx, extract(epoch FROM c.creation_date)::bigint AS cd,
       encode(f.fingerprint, 'hex') AS fp, f.request_id, f.sub_request_id, f.v2_single
  FROM ${KEYS}
  JOIN consents c ON ${ON_KEY('c')}
  LEFT JOIN consent_fingerprints f ON ${ON_KEY('f')} AND f.seq = c.seq`

const UPSERT_FINGERPRINTS = `INSERT INTO consent_fingerprints AS f (brand_code, type, recipient_type, recipient, fingerprint, seq, request_id, sub_request_id, v2_single)
  SELECT b, t, r, rc, decode(fp, 'hex'), seq, req, sub, v2
  FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bool[])
    AS x(b, t, r, rc, fp, seq, req, sub, v2)
  ON CONFLICT (brand_code, type, recipient_type, recipient) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, seq = EXCLUDED.seq,
    request_id = EXCLUDED.request_id, sub_request_id = EXCLUDED.sub_request_id, v2_single = EXCLUDED.v2_single, created_at = now()`

/**
 * Writes a batch of mirrored-API writes inside the caller's transaction; outcomes in the order of `writes`. The keys
 * of a batch are distinct (İYS's H194 refuses a list that repeats one), so each write is judged against the state
 * before the batch.
 */
export async function writeMirroredTx (client: PoolClient, writes: readonly MirroredWrite[]): Promise<MirroredOutcome[]> {
  if (writes.length === 0) return []
  // The write lock first (writeConsentsTx takes it again: advisory locks stack), so the state read here stays true.
  await client.query('SELECT pg_advisory_xact_lock($1)', [CONSENT_WRITE_LOCK])
  const cols = { i: [] as number[], b: [] as string[], t: [] as string[], r: [] as string[], rc: [] as string[] }
  writes.forEach((w, i) => { cols.i.push(i); cols.b.push(w.consent.brandCode); cols.t.push(w.consent.type); cols.r.push(w.consent.recipientType); cols.rc.push(w.consent.recipient) })
  const { rows } = await client.query<Stored & { i: number }>(READ_STATE, [cols.i, cols.b, cols.t, cols.r, cols.rc])
  const stored = new Map<number, Stored>(rows.map(row => [row.i, row]))

  const outcomes: (MirroredOutcome | null)[] = writes.map(() => null)
  const pending: number[] = []
  writes.forEach((w, i) => {
    const s = stored.get(i)
    if (s === undefined) { pending.push(i); return }
    if (w.v2 && w.fingerprint !== null && s.fp === w.fingerprint && s.tx !== null) {
      outcomes[i] = {
        status: 'repeated',
        seq: Number(s.seq),
        transactionId: s.tx,
        creationDate: Number(s.cd ?? Math.floor(Date.now() / 1000)),
        original: { requestId: s.request_id, subRequestId: s.sub_request_id, v2Single: s.v2_single === true }
      }
      return
    }
    // İYS: "TACIR tipli izinlerin güncellemesinde consentDate/source alanı istek içerisinde yer almalıdır."
    const errors: ErrorItem[] = []
    if (w.omitted.consentDate) errors.push(errorItem('H462'))
    if (w.omitted.source) errors.push(errorItem('H463'))
    if (errors.length > 0) { outcomes[i] = { status: 'rejected', errors }; return }
    pending.push(i)
  })

  const written: WriteOutcome[] = await writeConsentsTx(client, pending.map(i => {
    const w = writes[i]!
    return { consent: w.consent, authority: 'provider' as const, via: 'api' as const, actor: w.actor ?? null }
  }))
  const fp = { b: [] as string[], t: [] as string[], r: [] as string[], rc: [] as string[], fp: [] as string[], seq: [] as number[], req: [] as (string | null)[], sub: [] as (string | null)[], v2: [] as boolean[] }
  written.forEach((o, j) => {
    const i = pending[j]!
    const w = writes[i]!
    if (o.status === 'applied') {
      outcomes[i] = o
      if (w.fingerprint === null) return
      const c = w.consent
      fp.b.push(c.brandCode); fp.t.push(c.type); fp.r.push(c.recipientType); fp.rc.push(c.recipient); fp.fp.push(w.fingerprint)
      fp.seq.push(o.seq); fp.req.push(w.origin.requestId); fp.sub.push(w.origin.subRequestId); fp.v2.push(w.origin.v2Single)
    } else if (o.status === 'rejected') {
      outcomes[i] = { status: 'rejected', errors: [o.error] }
    } else {
      throw new Error('a provider write cannot be stale')
    }
  })
  if (fp.seq.length > 0) await client.query(UPSERT_FINGERPRINTS, [fp.b, fp.t, fp.r, fp.rc, fp.fp, fp.seq, fp.req, fp.sub, fp.v2])
  return outcomes as MirroredOutcome[]
}
