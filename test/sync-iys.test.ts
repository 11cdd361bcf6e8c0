// `iys-gateway sync-iys`: İYS's consent changes (pulled page by page from a fake İYS written from the spec) land in
// Postgres with İYS's transactionId and creationDate; tokens are renewed, rate limits waited out, and a run that
// stops half-way resumes from the stored cursor with every change in the ledger exactly once.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createHash } from 'node:crypto'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { isValidConsent, validateConsent } from '../src/domain/consent.js'
import { formatIysDate, parseIysDate } from '../src/domain/time.js'
import { IysApiError, IysClient, type IysClientOptions } from '../src/iys/client.js'
import { readCursor, runSyncIys, type SyncIysSummary } from '../loaders/sync-iys.js'
import { createLogger } from '../src/log.js'
import { writeConsents } from '../src/store/consent-store.js'
import { BIN, cliEnv, runCli } from './helpers/cli.js'
import { afterToken, startFakeIys, type FakeChange, type FakeIys } from './helpers/fake-iys.js'
import { testServices, type TestServices } from './helpers/services.js'

const IYS_CODE = '700001'
const USER = 'hs@example.com'
const PASSWORD = 'correct horse battery staple'
const log = createLogger('silent')

const txId = (brand: string, i: number): string => createHash('sha256').update(`${brand}:${i}`).digest('hex')
// Changes a day old, one a second; consent dates a year earlier.
const BASE = Math.floor(Date.now() / 1000) - 86_400 - 100_000

/** `n` changes for one brand: distinct mobile numbers, ONAY, every tenth a RET (each a first record here). */
function changes (brand: string, n: number, from = 0): FakeChange[] {
  const out: FakeChange[] = []
  for (let i = from; i < from + n; i++) {
    out.push({
      consentDate: formatIysDate(BASE - 365 * 86_400 + i),
      creationDate: formatIysDate(BASE + i),
      source: i % 10 === 0 ? 'IYS_KISAMESAJ' : 'IYS_MOBIL',
      recipient: `+90532${String(i).padStart(7, '0')}`,
      recipientType: 'BIREYSEL',
      status: i % 10 === 0 ? 'RET' : 'ONAY',
      type: 'MESAJ',
      transactionId: txId(brand, i)
    })
  }
  return out
}

describe('sync-iys', () => {
  let services: TestServices
  let pool: pg.Pool
  let fake: FakeIys
  const clients: IysClient[] = []

  const env = (extra: Record<string, string> = {}): Record<string, string> => ({
    DATABASE_URL: services.db.url, IYS_API_URL: fake.url, IYS_USERNAME: USER, IYS_PASSWORD: PASSWORD, IYS_CODE, ...extra
  })
  const client = (opts: Partial<IysClientOptions> = {}): IysClient => {
    const c = new IysClient({ apiUrl: fake.url, username: USER, password: PASSWORD, minIntervalMs: 10, ...opts })
    clients.push(c)
    return c
  }
  const sync = async (brandCodes: string[], c: IysClient, extra: { limit?: number, maxPages?: number } = {}): Promise<SyncIysSummary> =>
    await runSyncIys({ pool, client: c, iysCode: IYS_CODE, brandCodes, once: true, log, pollMs: 1000, ...extra })
  /** The brand's pulled ledger: rows, distinct transaction ids. */
  const ledger = async (brand: string): Promise<{ n: number, tx: number }> =>
    (await pool.query("SELECT count(*)::int AS n, count(DISTINCT transaction_id)::int AS tx FROM consent_history WHERE brand_code = $1 AND via = 'pull'", [brand])).rows[0]

  beforeAll(async () => {
    services = await testServices()
    pool = services.pool
    const m = await runCli(['migrate'], services.env)
    expect(m.code).toBe(0)
  })

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close()
    await fake?.close()
  })

  afterAll(async () => {
    await services?.close()
  })

  it('pulls a few thousand changes across pages into consents and the ledger, with İYS\'s transactionId and creationDate', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    const list = changes('600001', 3500)
    // Stored earlier by the provider: ONAY on 2025-06-01. İYS lists an older RET for it: stale, skipped.
    const older = '+905559990001'
    const stored = validateConsent({ iysCode: IYS_CODE, brandCode: '600001', recipient: older, type: 'MESAJ', status: 'ONAY', source: 'HS_WEB', consentDate: '2025-06-01 10:00:00' }, Date.now() / 1000)
    if (!isValidConsent(stored)) throw new Error('bad seed')
    expect((await writeConsents(pool, [{ consent: stored, authority: 'provider', via: 'api' }]))[0]!.status).toBe('applied')
    const extra: FakeChange[] = [
      { consentDate: '2025-01-01 09:00:00', creationDate: formatIysDate(BASE + 5000), source: 'IYS_WEB', recipient: older, recipientType: 'BIREYSEL', status: 'RET', type: 'MESAJ', transactionId: txId('x', 1) },
      // A bad phone number: counted by code, never echoed.
      { consentDate: '2025-01-01 09:00:00', creationDate: formatIysDate(BASE + 5001), source: 'IYS_WEB', recipient: '+90532', recipientType: 'BIREYSEL', status: 'RET', type: 'MESAJ', transactionId: txId('x', 2) },
      // A TACIR line closure without consentDate (the spec allows it): recorded with its creationDate.
      { creationDate: formatIysDate(BASE + 5002), source: 'IYS_AHS_HAT_KAPATMA', recipient: '+905559990002', recipientType: 'TACIR', status: 'RET', type: 'ARAMA', transactionId: txId('x', 3) }
    ]
    fake.setChanges('600001', [...list, ...extra])
    fake.setChanges('600002', changes('600002', 10))

    const res = await runCli(['sync-iys', '--once'], env({ IYS_BRAND_CODES: '600001,600002' }))
    expect(res.stderr).not.toContain('iys-gateway sync-iys:')
    expect(res.code).toBe(0)
    const summary = JSON.parse(res.stdout.trim().split('\n').pop()!)
    expect(summary).toMatchObject({ complete: true, pages: 5, pulled: 3513, applied: 3511, stale: 1, invalid: 1, invalidByCode: { H121: 1 }, errors: 0 })
    expect(summary.brands).toMatchObject([
      { brandCode: '600001', pages: 4, pulled: 3503, applied: 3501, stale: 1, invalid: 1, after: afterToken(extra[2]!) },
      { brandCode: '600002', pages: 1, pulled: 10, applied: 10, stale: 0, invalid: 0, after: afterToken(changes('600002', 10)[9]!) }
    ])
    // Recipients never reach the output (the summary, progress, logs).
    expect(res.stdout + res.stderr).not.toMatch(/\+90|@/)

    expect(await ledger('600001')).toEqual({ n: 3501, tx: 3501 })
    expect(await ledger('600002')).toEqual({ n: 10, tx: 10 })
    // Each change with İYS's own transactionId and creationDate.
    const { rows } = await pool.query(`SELECT recipient, status, source, transaction_id, extract(epoch FROM creation_date)::bigint AS cd,
      extract(epoch FROM consent_date)::bigint AS d FROM consent_history WHERE brand_code = 600001 AND via = 'pull' ORDER BY seq`)
    rows.forEach((r, i) => {
      const c = [...list, extra[2]!][i]!
      expect(r).toEqual({ recipient: c.recipient, status: c.status, source: c.source, transaction_id: c.transactionId,
        cd: String((parseIysDate(c.creationDate) as { seconds: number }).seconds), d: String((parseIysDate(c.consentDate ?? c.creationDate) as { seconds: number }).seconds) })
    })
    // A RET with no earlier record is stored: İYS is the authority.
    const ret = await pool.query("SELECT status, transaction_id FROM consents WHERE brand_code = 600001 AND type = 'MESAJ' AND recipient = $1", [list[0]!.recipient])
    expect(ret.rows).toEqual([{ status: 'RET', transaction_id: list[0]!.transactionId }])
    // The older İYS change did not replace the newer stored one.
    const kept = await pool.query("SELECT status, source FROM consents WHERE brand_code = 600001 AND recipient = $1", [older])
    expect(kept.rows).toEqual([{ status: 'ONAY', source: 'HS_WEB' }])
    const tacir = await pool.query("SELECT status, recipient_type FROM consents WHERE brand_code = 600001 AND recipient = '+905559990002'")
    expect(tacir.rows).toEqual([{ status: 'RET', recipient_type: 'TACIR' }])

    // Pages followed each other by `after`; one login; the cursor is where İYS's list ends.
    expect(fake.aftersSeen('600001')).toEqual([null, afterToken(list[999]!), afterToken(list[1999]!), afterToken(list[2999]!), afterToken(extra[2]!)])
    expect(fake.counters.logins).toBe(1)
    expect(await readCursor(pool, IYS_CODE, '600001')).toBe(afterToken(extra[2]!))
  })

  it('refreshes a token shortly before it expires, and the pull completes with no gap and no duplicate', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE, expiresIn: 2, delayMs: 100 })
    fake.setChanges('600003', changes('600003', 3000))
    const c = client()
    const s = await sync(['600003'], c, { limit: 200 })
    expect(s).toMatchObject({ complete: true, pages: 15, pulled: 3000, applied: 3000 })
    expect(fake.counters.logins).toBe(1)
    expect(fake.counters.refreshes).toBeGreaterThanOrEqual(1)
    expect(fake.counters.unauthorized).toBe(0)
    expect(await ledger('600003')).toEqual({ n: 3000, tx: 3000 })
  })

  it('renews a token İYS refuses mid-stream (401 H351) with the refresh token, once, and retries the page', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    fake.setChanges('600004', changes('600004', 2500))
    fake.onChanges = n => { if (n === 2) fake.expireTokens() }
    const c = client()
    const s = await sync(['600004'], c)
    expect(s).toMatchObject({ complete: true, pages: 3, pulled: 2500, applied: 2500 })
    expect(fake.counters).toMatchObject({ logins: 1, refreshes: 1, unauthorized: 1 })
    const list = fake.changes.get('600004')!
    // The refused page 2 was asked for again with the same `after`; every page once, then the 204.
    expect(fake.log.filter(r => r.kind === 'changes').map(r => [r.status, r.after])).toEqual([
      [200, null], [401, afterToken(list[999]!)], [200, afterToken(list[999]!)], [200, afterToken(list[1999]!)], [204, afterToken(list[2499]!)]
    ])
    expect(await ledger('600004')).toEqual({ n: 2500, tx: 2500 })
  })

  it('logs in with the password again when the refresh token is refused too', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    fake.setChanges('600005', changes('600005', 1500))
    fake.onChanges = n => { if (n === 2) fake.expireTokens({ refresh: true }) }
    const s = await sync(['600005'], client())
    expect(s).toMatchObject({ complete: true, pulled: 1500, applied: 1500 })
    expect(fake.counters).toMatchObject({ logins: 2, refreshes: 0, unauthorized: 1 })
    expect(await ledger('600005')).toEqual({ n: 1500, tx: 1500 })
  })

  it('waits out 429 H124 (exponential back-off) and H083 (Retry-After) mid-stream, then completes', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    fake.setChanges('600006', changes('600006', 3500))
    fake.onChanges = n => {
      if (n === 2) fake.changesFaults.push({ status: 429, code: 'H124' })
      if (n === 4) fake.changesFaults.push({ status: 429, code: 'H083', retryAfter: 1 })
    }
    const c = client({ backoffBaseMs: 300 })
    const s = await sync(['600006'], c)
    expect(s).toMatchObject({ complete: true, pages: 4, pulled: 3500, applied: 3500 })
    expect(fake.counters.rateLimited).toBe(2)
    const pulls = fake.log.filter(r => r.kind === 'changes')
    const gapAfter = (code: string): number => {
      const i = pulls.findIndex(r => r.code === code)
      return pulls[i + 1]!.at - pulls[i]!.at
    }
    expect(gapAfter('H124')).toBeGreaterThanOrEqual(150 - 5) // at least half the first step (equal jitter)
    expect(gapAfter('H083')).toBeGreaterThanOrEqual(1000 - 5) // Retry-After: 1
    expect(await ledger('600006')).toEqual({ n: 3500, tx: 3500 })
  })

  it('after H084 on the token endpoint asks for no token until the lock-out is over', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    fake.setChanges('600007', changes('600007', 10))
    fake.tokenFaults.push({ status: 429, code: 'H084' })
    const s = await sync(['600007'], client({ authLockoutMs: 600 }))
    expect(s).toMatchObject({ complete: true, applied: 10 })
    const tokens = fake.log.filter(r => r.kind === 'token')
    expect(tokens.map(r => r.status)).toEqual([429, 200])
    expect(tokens[1]!.at - tokens[0]!.at).toBeGreaterThanOrEqual(600 - 5)
  })

  it('gives up with the İYS code when the rate limit outlasts the retries', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    fake.setChanges('600008', changes('600008', 10))
    fake.failChanges = { status: 429, code: 'H124' }
    const err = await sync(['600008'], client({ backoffBaseMs: 10, maxRetries: 2 })).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(IysApiError)
    expect((err as IysApiError).message).toContain('H124')
    expect(fake.counters.rateLimited).toBe(3)
    expect(await readCursor(pool, IYS_CODE, '600008')).toBeNull()
  })

  it('a run that fails half-way resumes from the stored cursor: every change in the ledger exactly once', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    const list = changes('600010', 3500)
    fake.setChanges('600010', list)
    fake.onChanges = n => { if (n === 3) fake.failChanges = { status: 500, code: 'H015' } }
    const first = await runCli(['sync-iys', '--once', '--brand-code', '600010'], env())
    expect(first.code).toBe(1)
    expect(first.stderr).toMatch(/^iys-gateway sync-iys: .*H015.*$/m)
    expect(await ledger('600010')).toEqual({ n: 2000, tx: 2000 })
    expect(await readCursor(pool, IYS_CODE, '600010')).toBe(afterToken(list[1999]!))

    fake.failChanges = null
    fake.onChanges = null
    const seenBefore = fake.aftersSeen('600010').length
    const second = await runCli(['sync-iys', '--once', '--brand-code', '600010'], env())
    expect(second.code).toBe(0)
    expect(JSON.parse(second.stdout.trim().split('\n').pop()!)).toMatchObject({ complete: true, pulled: 1500, applied: 1500, stale: 0 })
    // The second run started where the first one stored its cursor.
    expect(fake.aftersSeen('600010').slice(seenBefore)).toEqual([afterToken(list[1999]!), afterToken(list[2999]!), afterToken(list[3499]!)])
    expect(await ledger('600010')).toEqual({ n: 3500, tx: 3500 })

    // And a third run finds nothing new.
    const third = await runCli(['sync-iys', '--once', '--brand-code', '600010'], env())
    expect(JSON.parse(third.stdout.trim().split('\n').pop()!)).toMatchObject({ complete: true, pulled: 0, applied: 0 })
    expect(await ledger('600010')).toEqual({ n: 3500, tx: 3500 })
  })

  it('stores the cursor in the same transaction as the page: a page whose write fails moves neither', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    const list = changes('600015', 900)
    fake.setChanges('600015', list)
    // Postgres refuses one row of the second page (a stand-in for any failure half-way through a write).
    await pool.query(`CREATE FUNCTION refuse_one () RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF NEW.brand_code = 600015 AND NEW.recipient = '${list[450]!.recipient}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$`)
    await pool.query('CREATE TRIGGER refuse_one BEFORE INSERT ON consent_history FOR EACH ROW EXECUTE FUNCTION refuse_one()')
    try {
      await expect(sync(['600015'], client(), { limit: 300 })).rejects.toThrow('refused')
      expect(await ledger('600015')).toEqual({ n: 300, tx: 300 })
      expect(await readCursor(pool, IYS_CODE, '600015')).toBe(afterToken(list[299]!))
    } finally {
      await pool.query('DROP TRIGGER refuse_one ON consent_history; DROP FUNCTION refuse_one()')
    }
    const s = await sync(['600015'], client(), { limit: 300 })
    expect(s).toMatchObject({ complete: true, pulled: 600, applied: 600, stale: 0 })
    expect(await ledger('600015')).toEqual({ n: 900, tx: 900 })
  })

  it('a page budget stops a run early; the next run goes on from its cursor', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    const list = changes('600011', 1000)
    fake.setChanges('600011', list)
    const s1 = await sync(['600011'], client(), { limit: 300, maxPages: 2 })
    expect(s1).toMatchObject({ complete: false, pages: 2, pulled: 600 })
    const s2 = await sync(['600011'], client(), { limit: 300 })
    expect(s2).toMatchObject({ complete: true, pages: 2, pulled: 400 })
    expect(fake.aftersSeen('600011')).toEqual([null, afterToken(list[299]!), afterToken(list[599]!), afterToken(list[899]!), afterToken(list[999]!)])
    expect(await ledger('600011')).toEqual({ n: 1000, tx: 1000 })
  })

  it('bad credentials fail with exit code 1 and one clear line, after a single token request', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    fake.setChanges('600012', changes('600012', 10))
    const res = await runCli(['sync-iys', '--once'], env({ IYS_PASSWORD: 'wrong password', IYS_BRAND_CODES: '600012' }))
    expect(res.code).toBe(1)
    expect(res.stderr).toBe('iys-gateway sync-iys: İYS login refused (HTTP 400 invalid_request): Kullanıcı kimlik bilgileri geçersiz.\n')
    expect(fake.counters.tokenRequests).toBe(1)
    expect(fake.counters.changesRequests).toBe(0)
  })

  it('refuses to start without its settings (exit code 2, one line)', async () => {
    fake = await startFakeIys()
    const res = await runCli(['sync-iys', '--once'], { DATABASE_URL: services.db.url, IYS_API_URL: fake.url, IYS_CODE, IYS_BRAND_CODES: '600013' })
    expect(res.code).toBe(2)
    expect(res.stderr).toBe('iys-gateway: configuration error: IYS_USERNAME must be set for sync-iys\n')
    const bad = await runCli(['sync-iys', '--brand-code', 'abc'], env())
    expect(bad.code).toBe(2)
    expect(bad.stderr.split('\n')[0]).toBe('iys-gateway: --brand-code must be an İYS brand code (digits) (see iys-gateway sync-iys --help)')
  })

  it('keeps polling without --once, picks up new changes, and stops cleanly on SIGTERM', async () => {
    fake = await startFakeIys({ username: USER, password: PASSWORD, iysCode: IYS_CODE })
    const list = changes('600014', 50)
    fake.setChanges('600014', list)
    const child = spawn(process.execPath, [BIN, 'sync-iys'], { env: cliEnv(env({ IYS_BRAND_CODES: '600014', IYS_SYNC_INTERVAL_MS: '1000' })), stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    child.stdout.resume()
    const until = async (what: () => Promise<boolean>): Promise<void> => {
      const end = Date.now() + 20_000
      while (!await what()) {
        if (Date.now() > end) throw new Error(`timed out; stderr: ${stderr}`)
        await new Promise(resolve => setTimeout(resolve, 50))
      }
    }
    try {
      await until(async () => (await ledger('600014')).n === 50)
      list.push(...changes('600014', 20, 50))
      await until(async () => (await ledger('600014')).n === 70)
      // The later round asked from the stored cursor, not from the start.
      expect(fake.aftersSeen('600014')).toContain(afterToken(list[49]!))
      expect(fake.aftersSeen('600014').filter(a => a === null)).toHaveLength(1)
      child.kill('SIGTERM')
      const [code] = await once(child, 'exit') as [number | null]
      expect(code).toBe(0)
      expect(await ledger('600014')).toEqual({ n: 70, tx: 70 })
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
    }
  })
})
