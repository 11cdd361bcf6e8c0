// `iys-gateway keys …` and `brands …` through the real command line against a real Postgres: the shape the issue
// fixes (one JSON line with keyId, secret and apiKey; lists without secrets; revoke), the exit codes (2 for bad
// usage, 1 for a refused operation), and that what the CLI creates or revokes is what a running gateway enforces.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runCli, type CliResult } from './helpers/cli.js'
import { bearer } from './helpers/auth.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServices } from './helpers/services.js'

/** The JSON lines of a command that must have succeeded. */
const lines = (r: CliResult): any[] => {
  expect(r.code, r.stderr).toBe(0)
  return r.stdout.split('\n').filter(l => l !== '').map(l => JSON.parse(l))
}

const check = async (gw: RunningGateway, apiKey: string, brandCode: number): Promise<number> => {
  const res = await fetch(gw.url + '/v1/check', { method: 'POST', headers: { 'content-type': 'application/json', ...bearer(apiKey) }, body: JSON.stringify({ brandCode, type: 'MESAJ', recipient: '+905321234567' }) })
  await res.arrayBuffer()
  return res.status
}

/** Polls until `fn` answers `want` (a gateway sees key changes within AUTH_POLL_MS), for at most `ms`. */
async function eventually (fn: () => Promise<number>, want: number, ms = 1000): Promise<number> {
  const deadline = Date.now() + ms
  let got = await fn()
  while (got !== want && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 20))
    got = await fn()
  }
  return got
}

describe('iys-gateway keys and brands', () => {
  let services: TestServices
  let env: Record<string, string>
  let gw: RunningGateway | undefined
  let created: { keyId: string, secret: string, apiKey: string }

  const cli = (...args: string[]): Promise<CliResult> => runCli(args, env)

  beforeAll(async () => {
    services = await testServices() // not migrated: the commands migrate themselves
    env = services.env
  })

  afterAll(async () => {
    await gw?.close()
    await services?.close()
  })

  it('keys create prints one JSON line with keyId, secret and apiKey, on a database not yet migrated', async () => {
    const r = await cli('keys', 'create', '--iys-code', '0700001', '--brand-codes', '600001, 600002', '--scopes', 'check,consents:read', '--name', 'ops team', '--rate', '50')
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.endsWith('\n') && r.stdout.split('\n').length === 2).toBe(true)
    created = JSON.parse(r.stdout)
    expect(Object.keys(created)).toEqual(['keyId', 'secret', 'apiKey'])
    expect(created.keyId).toMatch(/^ik_[0-9a-f]{16}$/)
    expect(created.apiKey).toBe(`${created.keyId}.${created.secret}`)
    expect(created.secret.length).toBeGreaterThanOrEqual(43)
  })

  it('keys list prints every key as a JSON line, never its secret; --iys-code filters', async () => {
    const other = await cli('keys', 'create', '--iys-code', '700002')
    expect(other.code, other.stderr).toBe(0)
    const all = await cli('keys', 'list')
    expect(all.code, all.stderr).toBe(0)
    expect(all.stdout).not.toContain(created.secret)
    expect(all.stdout).not.toContain(JSON.parse(other.stdout).secret)
    const keys = lines(all)
    expect(keys).toHaveLength(2)
    expect(keys[0]).toMatchObject({ keyId: created.keyId, iysCode: '700001', brandCodes: ['600001', '600002'], scopes: ['check', 'consents:read'], name: 'ops team', ratePerSecond: 50, revokedAt: null })
    expect(Number.isNaN(Date.parse(keys[0].createdAt))).toBe(false)
    // defaults: every brand (null), every scope but admin, 1000 per second
    expect(keys[1]).toMatchObject({ iysCode: '700002', brandCodes: null, name: '', ratePerSecond: 1000 })
    expect(keys[1].scopes).not.toContain('admin')
    const one = lines(await cli('keys', 'list', '--iys-code', '700002'))
    expect(one.map(k => k.keyId)).toEqual([JSON.parse(other.stdout).keyId])
    expect(lines(await cli('keys', 'list', '--iys-code', '799999'))).toEqual([])
  })

  it('a created key works on a running gateway for its brands and scopes; a revoked one stops within a second', async () => {
    gw = await startTestGateway({ ...env, AUTH_POLL_MS: '50' })
    expect(await eventually(() => check(gw!, created.apiKey, 600001), 200)).toBe(200)
    expect(await check(gw, created.apiKey, 600003)).toBe(403) // not one of the key's brands
    const r = await cli('keys', 'revoke', created.keyId)
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual({ keyId: created.keyId, revoked: true })
    const revokedAt = Date.now()
    expect(await eventually(() => check(gw!, created.apiKey, 600001), 401)).toBe(401)
    expect(Date.now() - revokedAt).toBeLessThan(1000)
    const listed = lines(await cli('keys', 'list', '--iys-code', '700001')).find(k => k.keyId === created.keyId)
    expect(listed.revokedAt).not.toBeNull()
    expect((await cli('keys', 'revoke', created.keyId)).code).toBe(0) // twice is fine
  })

  it('keys revoke of an unknown key fails with one line (exit 1)', async () => {
    const r = await cli('keys', 'revoke', 'ik_0123456789abcdef')
    expect(r.code).toBe(1)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/^iys-gateway keys: no key ik_0123456789abcdef .*\n$/)
  })

  it('brands add registers a brand to a tenant; an unrestricted key acts for it, and brands list shows it', async () => {
    const k = await cli('keys', 'create', '--iys-code', '700003', '--scopes', 'check')
    expect(k.code, k.stderr).toBe(0)
    const { apiKey } = JSON.parse(k.stdout)
    const add = await cli('brands', 'add', '--iys-code', '700003', '--brand-code', '620001', '--name', 'Alt Marka')
    expect(add.code, add.stderr).toBe(0)
    expect(JSON.parse(add.stdout)).toEqual({ iysCode: '700003', brandCode: '620001', name: 'Alt Marka' })
    expect(await eventually(() => check(gw!, apiKey, 620001), 200)).toBe(200)
    expect(await check(gw!, apiKey, 600001)).toBe(403) // another tenant's brand
    expect(lines(await cli('brands', 'list', '--iys-code', '700003'))).toEqual([{ iysCode: '700003', brandCode: '620001', name: 'Alt Marka' }])
    const all = lines(await cli('brands', 'list'))
    expect(all.map(b => `${b.iysCode}/${b.brandCode}`)).toEqual(expect.arrayContaining(['700001/600001', '700001/600002', '700003/620001']))
  })

  it('refuses a brand of another tenant with one line (exit 1), and writes nothing', async () => {
    const before = (await cli('keys', 'list')).stdout
    const brand = await cli('brands', 'add', '--iys-code', '700002', '--brand-code', '620001')
    expect(brand.code).toBe(1)
    expect(brand.stderr).toMatch(/^iys-gateway brands: brand 620001 belongs to another service provider.*\n$/)
    const key = await cli('keys', 'create', '--iys-code', '700002', '--brand-codes', '620001')
    expect(key.code).toBe(1)
    expect(key.stdout).toBe('')
    expect(key.stderr.split('\n')).toHaveLength(2)
    expect((await cli('keys', 'list')).stdout).toBe(before)
  })

  it('answers bad usage with exit 2 and the reason on the first line', async () => {
    const cases: [string[], RegExp][] = [
      [['keys'], /keys needs create, list or revoke/],
      [['keys', 'frob'], /unknown keys command "frob"/],
      [['keys', 'create'], /keys create needs --iys-code/],
      [['keys', 'create', '--iys-code'], /--iys-code/],
      [['keys', 'create', '--iys-code', '700001', '--colour', 'red'], /unknown option '--colour'/],
      [['keys', 'create', '--iys-code', 'abc'], /--iys-code must be an İYS service provider code/],
      [['keys', 'create', '--iys-code', '700001', '--scopes', 'check,root'], /unknown scope "root"/],
      [['keys', 'create', '--iys-code', '700001', '--rate', 'fast'], /--rate must be a whole number/],
      [['keys', 'create', '--iys-code', '700001', 'extra'], /extra/],
      [['keys', 'list', '--iys-code', '7x'], /--iys-code must be/],
      [['keys', 'revoke'], /keys revoke takes exactly one KEYID/],
      [['brands'], /brands needs add or list/],
      [['brands', 'add', '--iys-code', '700001'], /brands add needs --brand-code/]
    ]
    for (const [args, message] of cases) {
      const r = await cli(...args)
      expect({ args, code: r.code, stdout: r.stdout }, r.stderr).toEqual({ args, code: 2, stdout: '' })
      expect(r.stderr.split('\n')[0]).toMatch(/^iys-gateway: /)
      expect(r.stderr.split('\n')[0]).toMatch(message)
    }
  }, 180_000) // a dozen processes on a busy machine

  it('needs DATABASE_URL (exit 2, one line)', async () => {
    for (const args of [['keys', 'list'], ['brands', 'list']]) {
      const r = await runCli(args, {})
      expect(r.code).toBe(2)
      expect(r.stderr).toBe('iys-gateway: configuration error: DATABASE_URL must be set for keys and brands\n')
    }
  })
})
