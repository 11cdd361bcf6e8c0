// `iys-gateway sync-iys`: pull consent changes from İYS (GET …/consents/changes) into Postgres, brand by brand.
//
// Each page is validated item by item (domain/consent.ts) and written with İYS as the authority (a change not newer
// than what we hold is 'stale', anything else is applied, a first RET included); the page's `after` token is stored
// as the brand's cursor in the same transaction. So the cursor and the changes it covers commit together: a crash
// or a failed request neither skips a change nor pulls one twice, and a restart resumes from the stored cursor.
//
// İYS lists a brand's changes of the last 7 days, oldest first, except the last hour. Run it continuously (the
// default: a round every IYS_SYNC_INTERVAL_MS) or from a scheduler with --once, at least daily.

import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../src/log.js'
import { ConfigError, need, type Config } from '../src/config.js'
import { isValidConsent, validateConsent } from '../src/domain/consent.js'
import { errorCode } from '../src/domain/errors.js'
import { parseIysDate } from '../src/domain/time.js'
import { writeConsentsTx, type ConsentWrite } from '../src/store/consent-store.js'
import { createPool, inTransaction, type Pool, type PoolClient } from '../src/store/pg.js'
import { IysApiError, IysClient, type IysApi, type IysChange } from '../src/iys/client.js'
import { Progress } from './progress.js'

/** İYS's largest page. */
export const PAGE_LIMIT = 1000

// A change comes from İYS's clock, which may run a little ahead of ours: allow that much before calling a
// consentDate "in the future" (H162) and dropping the change.
const CLOCK_SKEW_S = 300

export interface SyncIysOptions {
  pool: Pool
  client: IysApi
  iysCode: string
  brandCodes: readonly string[]
  /** Stop once İYS has answered 204 (nothing new) for every brand; otherwise poll every `pollMs` until `signal`. */
  once: boolean
  log: Logger
  pollMs: number
  signal?: AbortSignal
  /** Page size asked of İYS (≤ 1000). */
  limit?: number
  /** Stop after this many pages in all (tests). */
  maxPages?: number
  progress?: Progress | null
}

export interface BrandSummary {
  brandCode: string
  pages: number
  pulled: number
  applied: number
  stale: number
  invalid: number
  /** The stored cursor after this run. */
  after: string | null
}

export interface SyncIysSummary {
  /** True when every brand reached İYS's 204 in the last round (always false if stopped by a signal first). */
  complete: boolean
  pages: number
  pulled: number
  applied: number
  stale: number
  invalid: number
  /** Invalid items by İYS code, e.g. {"H121": 2}; recipients are never reported. */
  invalidByCode: Record<string, number>
  /** Rounds that failed with a transient error (continuous mode only; --once fails instead). */
  errors: number
  brands: BrandSummary[]
}

export async function readCursor (pool: Pool, iysCode: string, brandCode: string): Promise<string | null> {
  const { rows } = await pool.query<{ after_token: string | null }>(
    'SELECT after_token FROM iys_sync_cursors WHERE iys_code = $1 AND brand_code = $2', [iysCode, brandCode])
  return rows[0]?.after_token ?? null
}

async function storeCursor (tx: PoolClient, iysCode: string, brandCode: string, after: string): Promise<void> {
  await tx.query(
    `INSERT INTO iys_sync_cursors (iys_code, brand_code, after_token, updated_at) VALUES ($1, $2, $3, now())
     ON CONFLICT (iys_code, brand_code) DO UPDATE SET after_token = EXCLUDED.after_token, updated_at = now()`,
    [iysCode, brandCode, after])
}

/**
 * What this run did for a brand, in its cursor row (migration 9), so that every gateway exports sync-iys's freshness
 * (store/freshness.ts) however it runs, continuously or from a scheduler with --once. Best effort: a Postgres that
 * cannot take this cannot take the changes either, and that failure is reported on its own.
 */
async function recordSync (pool: Pool, iysCode: string, brandCode: string, outcome: 'attempted' | 'succeeded' | 'failed', errorCode = ''): Promise<void> {
  const failed = outcome === 'failed'
  const columns = failed ? 'failed_at, error_code' : `${outcome}_at`
  const update = failed ? 'failed_at = EXCLUDED.failed_at, error_code = EXCLUDED.error_code' : `${outcome}_at = EXCLUDED.${outcome}_at`
  await pool.query(
    `INSERT INTO iys_sync_cursors (iys_code, brand_code, ${columns}) VALUES ($1, $2, now()${failed ? ', $3' : ''})
     ON CONFLICT (iys_code, brand_code) DO UPDATE SET ${update}`,
    failed ? [iysCode, brandCode, errorCode] : [iysCode, brandCode]
  ).catch(() => {})
}

type Checked = { write: ConsentWrite } | { code: string }

/** One İYS change → a write with İYS's transactionId and creationDate, or the code of the first thing wrong with it. */
export function toWrite (item: IysChange, iysCode: string, brandCode: string, nowSeconds: number): Checked {
  if (typeof item !== 'object' || item === null) return { code: 'INVALID_FIELD' }
  if (typeof item.transactionId !== 'string' || item.transactionId === '') return { code: 'MISSING_FIELD' }
  if (typeof item.creationDate !== 'string') return { code: 'MISSING_FIELD' }
  const created = parseIysDate(item.creationDate)
  if (!created.ok) return { code: created.code }
  // İYS may list a TACIR record without consentDate (first recorded without one, e.g. IYS_AHS_HAT_KAPATMA): the
  // moment İYS recorded it is then the best date we have, and dropping it could drop a RET.
  const consentDate = (item.consentDate === undefined || item.consentDate === null || item.consentDate === '') && item.recipientType === 'TACIR'
    ? item.creationDate
    : item.consentDate
  const v = validateConsent({ ...item, consentDate, iysCode, brandCode }, nowSeconds + CLOCK_SKEW_S)
  if (!isValidConsent(v)) return { code: v.code }
  return { write: { consent: v, authority: 'iys', via: 'pull', transactionId: item.transactionId, creationDate: created.seconds } }
}

export async function runSyncIys (opts: SyncIysOptions): Promise<SyncIysSummary> {
  const { pool, client, iysCode, log, signal } = opts
  const limit = Math.min(opts.limit ?? PAGE_LIMIT, PAGE_LIMIT)
  const progress = opts.progress ?? null
  const summary: SyncIysSummary = { complete: false, pages: 0, pulled: 0, applied: 0, stale: 0, invalid: 0, invalidByCode: {}, errors: 0, brands: [] }
  const brands = new Map<string, BrandSummary>()
  for (const brandCode of new Set(opts.brandCodes)) {
    const b: BrandSummary = { brandCode, pages: 0, pulled: 0, applied: 0, stale: 0, invalid: 0, after: null }
    brands.set(brandCode, b)
    summary.brands.push(b)
  }
  const stopped = (): boolean => signal?.aborted === true || (opts.maxPages !== undefined && summary.pages >= opts.maxPages)

  /** Pulls one brand until İYS says there is nothing more; false if stopped before that. */
  async function pullBrand (b: BrandSummary): Promise<boolean> {
    let after = await readCursor(pool, iysCode, b.brandCode)
    b.after = after
    for (;;) {
      if (stopped()) return false
      const page = await client.changes(iysCode, b.brandCode, after, limit, signal)
      if (page === null) return true
      summary.pages++; b.pages++
      const writes: ConsentWrite[] = []
      const now = Math.floor(Date.now() / 1000)
      let invalidByCode: Record<string, number> | null = null
      for (const item of page.list) {
        const c = toWrite(item, iysCode, b.brandCode, now)
        if ('write' in c) { writes.push(c.write); continue }
        b.invalid++; summary.invalid++
        summary.invalidByCode[c.code] = (summary.invalidByCode[c.code] ?? 0) + 1
        invalidByCode ??= {}
        invalidByCode[c.code] = (invalidByCode[c.code] ?? 0) + 1
      }
      // By code only, once a page: the items themselves carry recipients.
      if (invalidByCode !== null) log.warn({ brandCode: b.brandCode, invalidByCode }, 'İYS changes skipped: invalid')
      // The changes and the cursor past them commit together, or neither does.
      const moved = page.after !== after
      const outcomes = await inTransaction(pool, async tx => {
        const o = await writeConsentsTx(tx, writes)
        if (moved) await storeCursor(tx, iysCode, b.brandCode, page.after)
        return o
      })
      for (const o of outcomes) {
        if (o.status === 'applied') { b.applied++; summary.applied++ } else { b.stale++; summary.stale++ }
      }
      b.pulled += page.list.length; summary.pulled += page.list.length
      if (moved) { after = page.after; b.after = after }
      progress?.update(summary.pulled, 0, summary.invalid)
      // An empty page or one that does not move the cursor would be asked for again forever: treat it as the end.
      if (page.list.length === 0 || !moved) return true
    }
  }

  for (;;) {
    let complete = true
    for (const b of brands.values()) {
      try {
        await recordSync(pool, iysCode, b.brandCode, 'attempted')
        if (!await pullBrand(b)) { complete = false; break }
        await recordSync(pool, iysCode, b.brandCode, 'succeeded')
        log.debug({ brandCode: b.brandCode, pulled: b.pulled, applied: b.applied }, 'İYS changes pulled')
      } catch (err) {
        if (signal?.aborted !== true) await recordSync(pool, iysCode, b.brandCode, 'failed', err instanceof IysApiError ? err.iysCode : failureCode(err))
        if (signal?.aborted === true) { complete = false; break }
        // --once fails as a whole; a long-running sync logs a passing failure and tries again next round.
        if (opts.once || !(err instanceof IysApiError ? err.transient : isTransientDbOrNet(err))) throw err
        summary.errors++
        complete = false
        log.warn({ brandCode: b.brandCode, code: err instanceof IysApiError ? err.iysCode : (err as { code?: string }).code, err }, 'İYS pull failed; retrying next round')
      }
    }
    summary.complete = complete
    if (opts.once || stopped()) break
    try {
      await sleep(opts.pollMs, undefined, { signal })
    } catch {
      break // aborted: stop cleanly
    }
  }
  summary.complete &&= signal?.aborted !== true
  return summary
}

/** What a failed round is recorded as: İYS's code, a socket's or Postgres's code (ECONNREFUSED, 57P01), else the error's. */
function failureCode (err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code !== '' ? code : errorCode(err)
}

/** Connection-level failures (Postgres restarting, network) pass; programming errors and refusals do not. */
function isTransientDbOrNet (err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && (/^(ECONN|ETIMEDOUT|EPIPE|ENOTFOUND|EAI_AGAIN|UND_ERR)/.test(code) || /^(08|57P)/.test(code))
}

/**
 * The command: `sync-iys [--once] [--brand-code B]`. Needs DATABASE_URL, IYS_USERNAME, IYS_PASSWORD, IYS_CODE and a
 * brand (IYS_BRAND_CODES or --brand-code). Prints a JSON summary at the end of --once. Exit code: 0 done (or stopped
 * by SIGTERM/SIGINT when running continuously), 1 failure or a --once run interrupted before the end.
 */
export async function syncIysCommand (config: Config, log: Logger, args: { once: boolean, brandCode: string | null }): Promise<number> {
  const databaseUrl = need(config.databaseUrl, 'DATABASE_URL', 'sync-iys')
  const username = need(config.iys.username, 'IYS_USERNAME', 'sync-iys')
  const password = need(config.iys.password, 'IYS_PASSWORD', 'sync-iys')
  const iysCode = need(config.iys.iysCode, 'IYS_CODE', 'sync-iys')
  const brandCodes = args.brandCode !== null ? [args.brandCode] : config.iys.brandCodes
  if (brandCodes.length === 0) throw new ConfigError('IYS_BRAND_CODES (or --brand-code) must be set for sync-iys')

  const pool = createPool(databaseUrl, 2)
  const client = new IysClient({ apiUrl: config.iys.apiUrl, username, password, log })
  const abort = new AbortController()
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'sync-iys stopping')
    abort.abort()
  }
  process.once('SIGTERM', onSignal)
  process.once('SIGINT', onSignal)
  const progress = new Progress({ label: 'sync-iys' })
  try {
    const summary = await runSyncIys({ pool, client, iysCode, brandCodes, once: args.once, log, pollMs: config.iys.pollMs, signal: abort.signal, progress })
    progress.done(`${summary.applied} applied, ${summary.stale} stale, ${summary.invalid} invalid`)
    if (args.once) {
      process.stdout.write(JSON.stringify(summary) + '\n')
      if (!summary.complete) {
        process.stderr.write('iys-gateway sync-iys: interrupted; the next run resumes from the stored cursor\n')
        return 1
      }
    }
    return 0
  } finally {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
    await client.close()
    await pool.end()
  }
}
