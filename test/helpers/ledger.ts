// Writes to the ledger as the consent store does (seq taken under the consent write lock), for tests that need a
// change committed behind the gateway's back: without the store's NOTIFY unless asked, so only a poll or a listener
// that the test controls can pick it up.

import type pg from 'pg'
import { CHANGES_CHANNEL } from '../../src/store/consent-store.js'
import { CONSENT_WRITE_LOCK } from '../../src/store/migrate.js'

/** Commits a BIREYSEL MESAJ RET of brand 600001 for `recipient`; returns its seq. */
export async function commitRet (pool: pg.Pool, recipient: string, opts: { notify?: boolean } = {}): Promise<number> {
  const client = await pool.connect()
  try {
    await client.query('BEGIN')
    await client.query('SELECT pg_advisory_xact_lock($1)', [CONSENT_WRITE_LOCK])
    const seq = Number((await client.query("SELECT nextval('consent_seq') AS s")).rows[0].s)
    await client.query(`INSERT INTO consent_history (seq, brand_code, type, recipient_type, recipient, iys_code, status, source, consent_date, via)
                        VALUES ($1, 600001, 'MESAJ', 'BIREYSEL', $2, 700001, 'RET', 'HS_WEB', now(), 'api')`, [seq, recipient])
    await client.query("UPDATE consents SET status = 'RET', seq = $1, consent_date = now() WHERE brand_code = 600001 AND type = 'MESAJ' AND recipient_type = 'BIREYSEL' AND recipient = $2", [seq, recipient])
    if (opts.notify === true) await client.query('SELECT pg_notify($1, $2)', [CHANGES_CHANNEL, String(seq)])
    await client.query('COMMIT')
    return seq
  } finally { client.release() }
}
