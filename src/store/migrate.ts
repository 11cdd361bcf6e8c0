// Schema migrations: an ordered list, applied once each inside one transaction under an advisory lock, so running
// `migrate` twice, or from two processes at once, is safe. Append new migrations; never edit an applied one.

import { inTransaction, type Pool } from './pg.js'

const MIGRATIONS: readonly string[] = [
  // 1: current consent state, the append-only evidence ledger, and the change sequence both share.
  `
  CREATE SEQUENCE consent_seq;

  CREATE TABLE consents (
    brand_code      bigint      NOT NULL,
    type            text        NOT NULL CHECK (type IN ('MESAJ', 'ARAMA', 'EPOSTA')),
    recipient_type  text        NOT NULL CHECK (recipient_type IN ('BIREYSEL', 'TACIR')),
    recipient       text        NOT NULL,
    iys_code        bigint      NOT NULL,
    status          text        NOT NULL CHECK (status IN ('ONAY', 'RET')),
    source          text        NOT NULL,
    consent_date    timestamptz NOT NULL,
    seq             bigint      NOT NULL,
    transaction_id  text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, type, recipient_type, recipient)
  );
  CREATE INDEX consents_seq_idx ON consents (seq);

  -- Every accepted change, never updated or deleted except by the retention job.
  CREATE TABLE consent_history (
    seq             bigint      PRIMARY KEY,
    brand_code      bigint      NOT NULL,
    type            text        NOT NULL,
    recipient_type  text        NOT NULL,
    recipient       text        NOT NULL,
    iys_code        bigint      NOT NULL,
    status          text        NOT NULL,
    source          text        NOT NULL,
    consent_date    timestamptz NOT NULL,
    transaction_id  text,
    via             text        NOT NULL CHECK (via IN ('import', 'api', 'push', 'pull')),
    actor           text,
    received_at     timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX consent_history_key_idx ON consent_history (brand_code, type, recipient_type, recipient, seq);
  `,
  // 2: İYS-shaped writes: creation dates, asynchronous requests, the push inbox, pull cursors.
  `
  ALTER TABLE consent_history ADD COLUMN creation_date timestamptz;
  ALTER TABLE consents ADD COLUMN creation_date timestamptz;

  -- POST .../consents/request: accepted at once, processed in the background, answered by GET .../request/{id}.
  CREATE TABLE consent_requests (
    request_id   text        PRIMARY KEY,
    iys_code     bigint      NOT NULL,
    brand_code   bigint      NOT NULL,
    actor        text,
    items        jsonb       NOT NULL,
    results      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz
  );
  CREATE INDEX consent_requests_pending_idx ON consent_requests (created_at) WHERE done_at IS NULL;

  -- İYS push notifications are stored here before they are answered, then applied: nothing accepted is lost.
  CREATE TABLE iys_push_inbox (
    id           bigserial   PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    payload      jsonb       NOT NULL,
    processed_at timestamptz,
    outcome      jsonb
  );
  CREATE INDEX iys_push_inbox_pending_idx ON iys_push_inbox (id) WHERE processed_at IS NULL;

  -- Where \`sync-iys\` stopped, per (iysCode, brandCode): the İYS \`after\` token.
  CREATE TABLE iys_sync_cursors (
    iys_code     bigint      NOT NULL,
    brand_code   bigint      NOT NULL,
    after_token  text,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (iys_code, brand_code)
  );
  `,
  // 3: the decision log, partitioned by day (partitions are created ahead and dropped by retention, see
  // audit/decision-log.ts). A batch of decisions commits with its id in decision_batches, so a batch replayed from
  // the spool after an outage whose first attempt did commit is recognised and skipped: each record exactly once.
  `
  CREATE TABLE decisions (
    decided_at      timestamptz NOT NULL,
    source          text        NOT NULL,
    iys_code        bigint,
    brand_code      bigint      NOT NULL,
    type            text        NOT NULL,
    recipient_type  text        NOT NULL,
    recipient       text        NOT NULL,
    normalized      text,
    commercial      boolean     NOT NULL,
    allowed         boolean     NOT NULL,
    reason          text        NOT NULL,
    consent_seq     bigint,
    message_id      text,
    upstream_status text,
    carrier_id      text
  ) PARTITION BY RANGE (decided_at);
  CREATE INDEX decisions_recipient_idx ON decisions (brand_code, type, normalized, decided_at);

  CREATE TABLE decision_batches (
    batch_id    text        PRIMARY KEY,
    rows        int         NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now()
  );
  `,
  // 4: nothing reads consents by seq (the change applier follows the ledger): its index only slowed bulk writes.
  `
  DROP INDEX IF EXISTS consents_seq_idx;
  `,
  // 5: poison-proof queues. A push body is kept as the JSON text the receiver was given, not jsonb: jsonb refuses
  // \u0000 (22P05) and text columns refuse a raw NUL, but JSON text carries NUL as a six-character escape, so
  // any JSON İYS sends is stored and answered; the processor refuses such an item on its own. A row or request whose
  // processing keeps throwing is counted in attempts and, after a few, closed as failed with the reason, so it
  // never blocks the rows behind it.
  `
  ALTER TABLE iys_push_inbox ALTER COLUMN payload TYPE text USING payload::text;
  ALTER TABLE iys_push_inbox ADD COLUMN attempts int NOT NULL DEFAULT 0, ADD COLUMN failed_reason text;
  ALTER TABLE consent_requests ADD COLUMN attempts int NOT NULL DEFAULT 0, ADD COLUMN failed_reason text;
  `,
  // 6: tenants (İYS service providers), their brands, and API keys
  `
  CREATE TABLE tenants (
    iys_code    bigint      PRIMARY KEY,
    name        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
  );
  -- A brand belongs to one tenant (İYS brand codes are unique across providers).
  CREATE TABLE brands (
    brand_code  bigint      PRIMARY KEY,
    iys_code    bigint      NOT NULL REFERENCES tenants (iys_code),
    name        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX brands_tenant_idx ON brands (iys_code);

  -- An API key: \`<key_id>.<secret>\`; only a SHA-256 of the secret is kept (the secret is random, 32 bytes, so a
  -- slow hash adds nothing). brand_codes NULL: every brand of the tenant. rate_per_second 0: not limited.
  CREATE TABLE api_keys (
    key_id          text        PRIMARY KEY,
    iys_code        bigint      NOT NULL REFERENCES tenants (iys_code),
    secret_sha256   bytea       NOT NULL,
    brand_codes     bigint[],
    scopes          text[]      NOT NULL,
    name            text        NOT NULL DEFAULT '',
    rate_per_second int         NOT NULL CHECK (rate_per_second >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
  );
  CREATE INDEX api_keys_tenant_idx ON api_keys (iys_code);

  -- Bumped by every change to tenants, brands and keys: gateways poll it and reload their copy when it moves.
  CREATE TABLE auth_state (
    one      boolean PRIMARY KEY DEFAULT true CHECK (one),
    version  bigint  NOT NULL
  );
  INSERT INTO auth_state (version) VALUES (1);

  -- The mirrored changes pull (GET …/consents/changes) reads one brand's ledger in seq order.
  CREATE INDEX consent_history_brand_seq_idx ON consent_history (brand_code, seq);

  -- The secret that signs the access and refresh tokens of POST /oauth2/token (auth/tokens.ts), shared by every
  -- gateway: one row, created by the first gateway that needs it. Deleting it (and restarting) voids every token.
  CREATE TABLE auth_token_secret (
    one         boolean     PRIMARY KEY DEFAULT true CHECK (one),
    secret      bytea       NOT NULL CHECK (length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
  );
  `,
  // 7: the İYS write-through outbox (iys/outbox.ts). One row per accepted provider change (its ledger seq), inserted
  // in the transaction that accepted it; done_at is set once İYS has answered for it (registered or refused). İYS's
  // transactionId is kept beside ours: ours (transaction_id) is what the provider was answered and still identifies
  // the change everywhere; İYS's is in iys_outbox per change and in consents.iys_transaction_id for the current state.
  // A refused change is undone by a compensating ledger change with via 'correction' (never sent to İYS).
  `
  ALTER TABLE consent_history DROP CONSTRAINT IF EXISTS consent_history_via_check;
  ALTER TABLE consent_history ADD CONSTRAINT consent_history_via_check CHECK (via IN ('import', 'api', 'push', 'pull', 'correction'));
  ALTER TABLE consents ADD COLUMN iys_transaction_id text, ADD COLUMN iys_creation_date timestamptz;

  CREATE TABLE iys_outbox (
    seq                 bigint      PRIMARY KEY,
    -- the writes of one call (one single write, or the items of one asynchronous request) go to İYS together
    write_id            text        NOT NULL,
    iys_code            bigint      NOT NULL,
    brand_code          bigint      NOT NULL,
    type                text        NOT NULL,
    recipient_type      text        NOT NULL,
    recipient           text        NOT NULL,
    status              text        NOT NULL,
    source              text        NOT NULL,
    consent_date        timestamptz NOT NULL,
    transaction_id      text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    next_at             timestamptz NOT NULL DEFAULT now(),
    attempts            int         NOT NULL DEFAULT 0,
    last_error          text,
    batch_id            text,
    -- İYS refused the batch it was in as a whole, or failed it for a passing reason: send it on its own
    solo                boolean     NOT NULL DEFAULT false,
    outcome             text        CHECK (outcome IN ('registered', 'refused')),
    iys_transaction_id  text,
    iys_creation_date   timestamptz,
    error_code          text,
    error_message       text,
    correction          text        CHECK (correction IN ('restored', 'withdrawn', 'kept', 'superseded')),
    correction_seq      bigint,
    done_at             timestamptz
  );
  CREATE INDEX iys_outbox_pending_idx ON iys_outbox (seq) WHERE done_at IS NULL;
  CREATE INDEX iys_outbox_key_idx ON iys_outbox (brand_code, type, recipient_type, recipient, seq);
  CREATE INDEX iys_outbox_tx_idx ON iys_outbox (transaction_id);

  -- A batch sent through İYS's asynchronous request. Its id is a fingerprint of its seqs, stored before it is posted:
  -- after a crash the same rows are posted again as the same batch, never regrouped.
  CREATE TABLE iys_outbox_batches (
    batch_id      text        PRIMARY KEY,
    iys_code      bigint      NOT NULL,
    brand_code    bigint      NOT NULL,
    seqs          bigint[]    NOT NULL,
    request_id    text,
    posts         int         NOT NULL DEFAULT 0,
    polls         int         NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    submitted_at  timestamptz,
    next_poll_at  timestamptz,
    done_at       timestamptz
  );
  CREATE INDEX iys_outbox_batches_open_idx ON iys_outbox_batches (created_at) WHERE done_at IS NULL;
  `,
  // 8: the mirrored İYS API's v2 rule (store/mirrored-writes.ts): a consent re-sent identically while the change it
  // made is its key's current state gets that change's transactionId again. One row per key: the fingerprint of the
  // mirrored write that last set the key (seq), and where it came from, for v2's answer (originalRequestInformation).
  // A row whose seq is no longer the key's is dead (a push, pull or import changed the key) and answers nothing.
  `
  CREATE TABLE consent_fingerprints (
    brand_code      bigint      NOT NULL,
    type            text        NOT NULL,
    recipient_type  text        NOT NULL,
    recipient       text        NOT NULL,
    fingerprint     bytea       NOT NULL,
    seq             bigint      NOT NULL,
    request_id      text,
    sub_request_id  text,
    v2_single       boolean     NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (brand_code, type, recipient_type, recipient)
  );
  -- Requests of POST /v2/.../consents/request answer re-sent consents with where they were first written.
  ALTER TABLE consent_requests ADD COLUMN v2 boolean NOT NULL DEFAULT false;
  `,
  // 9: what \`sync-iys\` last did per brand, so that the gateways can export its freshness (store/freshness.ts): İYS
  // lists only the last days of changes, so a pull that silently stopped loses rejections for good.
  `
  ALTER TABLE iys_sync_cursors
    ADD COLUMN created_at      timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN attempted_at    timestamptz,
    ADD COLUMN succeeded_at    timestamptz,
    ADD COLUMN failed_at       timestamptz,
    ADD COLUMN error_code      text;
  `,
  // 10: scrub jobs' decisions go to the decision log too (audit/scrub-decisions.ts), with source 'scrub' and the job
  // they were taken in: the complaint evidence finds them by the same recipient index as checks and messages. No
  // index on job_id: nothing reads decisions by job on a hot path, and every index slows the bulk COPY of millions
  // of rows a job writes. Nullable without a default, so adding it rewrites no partition.
  // The recipient index becomes a hash index on the normalised recipient: the btree on (brand_code, type, normalized,
  // decided_at) compared two text columns under the database collation for every row inserted, and made COPY of
  // decision rows about 8 times slower than without an index (1M scrub rows: 15.4 s against 1.8 s unindexed and 4.5 s
  // with this hash index, PostgreSQL 15, 2026-12-07). Evidence asks for one recipient (equality), and filters its few
  // rows by brand, type and time. On a large decision log this migration takes a while: the decision log spools
  // meanwhile.
  `
  ALTER TABLE decisions ADD COLUMN job_id text;
  DROP INDEX IF EXISTS decisions_recipient_idx;
  CREATE INDEX decisions_recipient_idx ON decisions USING hash (normalized);
  `,
  // 11: SMPP credentials of API keys and the originator → brand table (auth/keys.ts, auth/originators.ts). An ESME
  // binds with system_id (1–15 visible ASCII characters, unique across tenants, as the SMPP server knows only it) and
  // an 8-character password, of which only SHA-256(key_id ':' password) is kept (salted by the key, so that equal
  // passwords do not show). The per-bind defaults apply to a submit_sm whose TLVs do not say; recipient type NULL is
  // BIREYSEL. (brand_code, iys_code) is made a key of brands so that a key's default brand and an originator's brand
  // must be brands of the same tenant, in the schema too (a brand never changes tenant: auth/keys.ts).
  // Originators are stored in their key form (auth/originators.ts); an MO lookup goes by originator across tenants.
  `
  ALTER TABLE brands ADD CONSTRAINT brands_brand_tenant_key UNIQUE (brand_code, iys_code);

  ALTER TABLE api_keys
    ADD COLUMN smpp_system_id        text    UNIQUE CHECK (smpp_system_id ~ '^[!-~]{1,15}$'),
    ADD COLUMN smpp_password_sha256  bytea,
    ADD COLUMN smpp_brand_code       bigint,
    ADD COLUMN smpp_commercial       boolean,
    ADD COLUMN smpp_recipient_type   text    CHECK (smpp_recipient_type IN ('BIREYSEL', 'TACIR')),
    ADD CONSTRAINT api_keys_smpp_password_check CHECK ((smpp_system_id IS NULL) = (smpp_password_sha256 IS NULL)),
    ADD CONSTRAINT api_keys_smpp_brand_fkey FOREIGN KEY (smpp_brand_code, iys_code) REFERENCES brands (brand_code, iys_code);

  CREATE TABLE originators (
    iys_code    bigint      NOT NULL REFERENCES tenants (iys_code),
    originator  text        NOT NULL,
    brand_code  bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (iys_code, originator),
    FOREIGN KEY (brand_code, iys_code) REFERENCES brands (brand_code, iys_code)
  );
  CREATE INDEX originators_originator_idx ON originators (originator);
  `,
  // 12: scrub jobs shared by every gateway (scrub/shared.ts), so that any gateway behind a load balancer answers for
  // any job. The gateway that runs a job writes its record (the JSON GET /v1/scrub/{jobId} answers, kept as written:
  // json, not jsonb, so every gateway answers the same text) and, once it is done, its result in 1 MiB pieces; the
  // others read them. Each gateway's heartbeat (scrub_gateways) tells the others whether it is still there: the
  // unfinished jobs of one silent past the lease are failed. iys_code is the owner's tenant as the record holds it
  // (text; NULL for jobs from before owners, which nobody is served); the listing reads by it. The result pieces are
  // stored uncompressed (STORAGE EXTERNAL): they are written right after a job, beside the next scrubs and checks on
  // the same machines, where pglz would spend CPU on every MiB of a copy kept only until the retention (not measured:
  // a choice of disk over CPU, undone by SET STORAGE EXTENDED if disk matters more).
  `
  CREATE TABLE scrub_gateways (
    gateway_id    text        PRIMARY KEY,
    host          text        NOT NULL,
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    streak_since  timestamptz NOT NULL DEFAULT now()
  );

  CREATE TABLE scrub_jobs (
    job_id         text        PRIMARY KEY,
    gateway_id     text        NOT NULL,
    iys_code       text,
    state          text        NOT NULL CHECK (state IN ('uploading', 'queued', 'running', 'done', 'failed')),
    record         json        NOT NULL,
    result_chunks  int         NOT NULL DEFAULT 0,
    result_stored  boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX scrub_jobs_tenant_idx ON scrub_jobs (iys_code);
  CREATE INDEX scrub_jobs_gateway_idx ON scrub_jobs (gateway_id);
  CREATE INDEX scrub_jobs_expires_idx ON scrub_jobs (expires_at);

  CREATE TABLE scrub_result_chunks (
    job_id  text   NOT NULL REFERENCES scrub_jobs (job_id) ON DELETE CASCADE,
    n       int    NOT NULL,
    bytes   bytea  NOT NULL,
    PRIMARY KEY (job_id, n)
  );
  ALTER TABLE scrub_result_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
  `
]

/**
 * Every transaction that assigns change sequence numbers takes this lock first, so seq order is commit order.
 * The change applier (filter/changes.ts) relies on it: once it has seen seq N, no smaller seq can commit later.
 */
export const CONSENT_WRITE_LOCK = 0x1f5a7e02

const LOCK_ID = 0x1f5a7e01 // advisory lock: one migrator at a time

export async function migrate (pool: Pool): Promise<{ applied: number, version: number }> {
  return inTransaction(pool, async client => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ID])
    await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())')
    const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations')
    const from = rows[0]?.v ?? 0
    for (let v = from + 1; v <= MIGRATIONS.length; v++) {
      await client.query(MIGRATIONS[v - 1]!)
      await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [v])
    }
    return { applied: MIGRATIONS.length - from, version: MIGRATIONS.length }
  })
}
