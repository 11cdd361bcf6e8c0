// Starts a gateway in this process on a free port (port 0), configured as `serve` would be from the environment.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { startGateway, type Gateway } from '../../src/server.js'
import { bearer, DEMO_API_KEY, tenantKey } from './auth.js'

export interface RunningGateway {
  gw: Gateway
  url: string
  /** a key with every scope for the test tenant (tenantKey), or the demo key without DATABASE_URL */
  apiKey: string
  /** `{ authorization: 'Bearer <apiKey>' }` */
  auth: { authorization: string }
  close (): Promise<void>
}

/** The key of each gateway a test started, by origin: what postJson and check authenticate with. */
const KEYS = new Map<string, string>()

/** `{ authorization }` for a request to `url`: the key of the test gateway there, else the demo key. */
export function authFor (url: string): { authorization: string } {
  return bearer(KEYS.get(new URL(url).origin) ?? DEMO_API_KEY)
}

/** Makes `authFor` answer `apiKey` for `url`'s origin (for gateways a test starts as a separate process). */
export function registerKey (url: string, apiKey: string): void {
  KEYS.set(new URL(url).origin, apiKey)
}

export async function startTestGateway (env: Record<string, string>): Promise<RunningGateway> {
  // Scrub jobs and the decision spool in a folder of this gateway's own unless the test names one (and then keeps it).
  const own = mkdtempSync(join(tmpdir(), 'iys-gw-'))
  // Without DATABASE_URL the tests use the demo key, also on a Redis gateway (AUTH_DEMO_KEY; off there by default).
  const demo = env.DATABASE_URL === undefined ? { AUTH_DEMO_KEY: 'true' } : {}
  const config = loadConfig({ PORT: '0', LOG_LEVEL: 'silent', FILTER_POLL_MS: '50', SCRUB_DIR: join(own, 'scrub'), DECISION_SPOOL_DIR: join(own, 'spool'), ...demo, ...env })
  const apiKey = config.databaseUrl !== null ? (await tenantKey(config.databaseUrl)).apiKey : DEMO_API_KEY
  const gw = await startGateway(config, createLogger(config.logLevel))
  registerKey(`http://127.0.0.1:${gw.port}`, apiKey)
  return {
    gw,
    url: `http://127.0.0.1:${gw.port}`,
    apiKey,
    auth: bearer(apiKey),
    async close () {
      await gw.close()
      rmSync(own, { recursive: true, force: true })
    }
  }
}

export interface CheckResultJson {
  recipient: unknown
  normalized: string | null
  allowed: boolean
  reason: string
  consent?: { status: string, source: string, consentDate: string }
  error?: { code: string, message: string }
}

export async function postJson (url: string, body: unknown): Promise<{ status: number, json: any }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...authFor(url) }, body: typeof body === 'string' ? body : JSON.stringify(body) })
  const text = await res.text()
  return { status: res.status, json: text === '' ? null : JSON.parse(text) }
}

export async function check (base: string, body: Record<string, unknown>): Promise<CheckResultJson[]> {
  const { status, json } = await postJson(base + '/v1/check', body)
  if (status !== 200) throw new Error(`check answered ${status}: ${JSON.stringify(json)}`)
  return json.results
}
