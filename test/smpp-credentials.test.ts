// SMPP credentials of API keys and the originator → brand table (issue 13), against a real Postgres: what
// `keys create --smpp-system-id`, `keys smpp` and `originators …` write (through the functions the CLI calls, and
// through the CLI itself), and what a gateway's KeyStore answers from memory for a bind (authenticateSmpp) and for a
// submit_sm's or an MO message's originator, including after a reload.

import pg from 'pg'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEMO_API_KEY, DEMO_SMPP_PASSWORD, DEMO_SMPP_SYSTEM_ID, KeyStore, type SmppLogin } from '../src/auth/key-store.js'
import {
  addOriginator, clearSmpp, createKey, KeyError, listKeys, listOriginators, newKey, newSmpp, originatorOf, removeOriginator,
  revokeKey, setSmpp, SMPP_PASSWORD_LENGTH
} from '../src/auth/keys.js'
import { originatorKey } from '../src/auth/originators.js'
import { runCli, type CliResult } from './helpers/cli.js'
import { testServices, type TestServices } from './helpers/services.js'

/** Waits until `fn` gives something `ok` accepts (a KeyStore reloads within its poll interval), for at most `ms`. */
async function eventually<T> (fn: () => T, ok: (v: T) => boolean, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms
  let v = fn()
  while (!ok(v) && Date.now() < deadline) {
    await new Promise(resolve => setTimeout(resolve, 20))
    v = fn()
  }
  return v
}

const isLogin = (v: SmppLogin | string): v is SmppLogin => typeof v !== 'string'

describe('originatorKey', () => {
  it('stores phones in E.164, digit strings as typed, and alphanumeric sender IDs upper-cased', () => {
    expect(originatorKey('+90 532 111 22 33')).toBe('+905321112233')
    expect(originatorKey('05321112233')).toBe('+905321112233')
    expect(originatorKey(' 905321112233 ')).toBe('+905321112233')
    expect(originatorKey('ACME')).toBe('ACME')
    expect(originatorKey('acme')).toBe('ACME')
    expect(originatorKey(' Acme Shop ')).toBe('ACME SHOP')
    expect(originatorKey('4545')).toBe('4545')
    expect(originatorKey('A101')).toBe('A101')
  })

  it('stores e-mail senders (an address or a domain) lower-cased, up to 254 characters', () => {
    expect(originatorKey(' News@Acme.COM.tr ')).toBe('news@acme.com.tr')
    expect(originatorKey('ACME.com.tr')).toBe('acme.com.tr')
    expect(originatorKey('a@' + 'b'.repeat(248) + '.com')).toBe('a@' + 'b'.repeat(248) + '.com')
    expect(originatorKey('a@' + 'b'.repeat(249) + '.com')).toBeNull()
  })

  it('is its own fixed point', () => {
    for (const t of ['+90 532 111 22 33', 'acme', '4545', 'x-y.z', 'News@Acme.com']) expect(originatorKey(originatorKey(t)!)).toBe(originatorKey(t))
  })

  it('refuses empty text, more than 20 characters, control and non-ASCII characters', () => {
    for (const t of ['', '   ', 'A'.repeat(21), 'AC\u0000ME', 'AC\tME', 'ŞEKER', 'ACME\u200b']) expect(originatorKey(t), JSON.stringify(t)).toBeNull()
    expect(originatorKey(' ' + 'A'.repeat(20) + ' ')).toBe('A'.repeat(20))
  })
})

describe('the demo and the empty KeyStore', () => {
  it('the demo store takes the demo SMPP credentials for the demo key, with no defaults but BIREYSEL', () => {
    const store = KeyStore.demo()
    const login = store.authenticateSmpp(DEMO_SMPP_SYSTEM_ID, DEMO_SMPP_PASSWORD)
    expect(isLogin(login)).toBe(true)
    const { principal, defaults } = login as SmppLogin
    expect(principal).toBe(store.authenticate(DEMO_API_KEY))
    expect(principal.demo).toBe(true)
    expect(defaults).toEqual({ brandCode: '600001', commercial: null, recipientType: 'BIREYSEL' })
    expect(store.authenticateSmpp(DEMO_SMPP_SYSTEM_ID, 'demo123')).toBe('ESME_RINVPASWD')
    expect(store.authenticateSmpp('DEMO', DEMO_SMPP_PASSWORD)).toBe('ESME_RINVSYSID')
    expect(store.originatorBrand('700001', 'ACME')).toBeNull()
    expect(store.originatorOwners('ACME')).toEqual([])
  })

  it('none() accepts no bind', () => {
    expect(KeyStore.none().authenticateSmpp(DEMO_SMPP_SYSTEM_ID, DEMO_SMPP_PASSWORD)).toBe('ESME_RINVSYSID')
  })
})

describe('SMPP credentials and originators in Postgres', () => {
  let services: TestServices
  let store: KeyStore
  const log = pino({ level: 'silent' })

  beforeAll(async () => {
    services = await testServices({ migrate: true })
    store = KeyStore.postgres(services.pool, { pollMs: 20, log })
    await store.start()
  })

  afterAll(async () => {
    await store?.stop()
    await services?.close()
  })

  it('creates a key with SMPP credentials: the password is printed once, 8 unambiguous characters, and only a digest is kept', async () => {
    const created = await createKey(services.pool, newKey({ iysCode: '710001', brandCodes: '610001,610002', scopes: 'send', smppSystemId: 'acme_esme', smppBrandCode: '610002', smppCommercial: 'true', smppRecipientType: 'TACIR' }))
    expect(Object.keys(created)).toEqual(['keyId', 'secret', 'apiKey', 'smppSystemId', 'smppPassword'])
    expect(created.smppSystemId).toBe('acme_esme')
    expect(created.smppPassword).toMatch(new RegExp(`^[2-9a-hjkmnp-zA-HJ-NP-Z]{${SMPP_PASSWORD_LENGTH}}$`))
    const { rows } = await services.pool.query('SELECT * FROM api_keys WHERE key_id = $1', [created.keyId])
    expect(JSON.stringify(rows[0])).not.toContain(created.smppPassword!)
    expect(rows[0].smpp_password_sha256).toHaveLength(32)

    const login = await eventually(() => store.authenticateSmpp('acme_esme', created.smppPassword!), isLogin)
    expect(isLogin(login)).toBe(true)
    const { principal, defaults } = login as SmppLogin
    expect(principal).toBe(store.authenticate(created.apiKey))
    expect(principal).toMatchObject({ keyId: created.keyId, iysCode: '710001', demo: false })
    expect(defaults).toEqual({ brandCode: '610002', commercial: true, recipientType: 'TACIR' })

    // A password that differs in one character, another case, or the password of a system id that is not it.
    const wrong = created.smppPassword!.slice(0, -1) + (created.smppPassword!.endsWith('2') ? '3' : '2')
    expect(store.authenticateSmpp('acme_esme', wrong)).toBe('ESME_RINVPASWD')
    expect(store.authenticateSmpp('acme_esme', '')).toBe('ESME_RINVPASWD')
    expect(store.authenticateSmpp('ACME_ESME', created.smppPassword!)).toBe('ESME_RINVSYSID')
    expect(store.authenticateSmpp('nobody', created.smppPassword!)).toBe('ESME_RINVSYSID')
  })

  it('gives a key without defaults null brand and commercial flag, and BIREYSEL; keys list shows them, never the password', async () => {
    const created = await createKey(services.pool, newKey({ iysCode: '710002', scopes: 'admin', smppSystemId: 'bare' }))
    const login = await eventually(() => store.authenticateSmpp('bare', created.smppPassword!), isLogin)
    expect((login as SmppLogin).defaults).toEqual({ brandCode: null, commercial: null, recipientType: 'BIREYSEL' })
    const keys = await listKeys(services.pool, null)
    expect(JSON.stringify(keys)).not.toContain(created.smppPassword!)
    expect(keys.find(k => k.keyId === created.keyId)).toMatchObject({ smppSystemId: 'bare', smppBrandCode: null, smppCommercial: null, smppRecipientType: 'BIREYSEL' })
    const acme = keys.find(k => k.smppSystemId === 'acme_esme')
    expect(acme).toMatchObject({ smppBrandCode: '610002', smppCommercial: true, smppRecipientType: 'TACIR' })
    const plain = await createKey(services.pool, newKey({ iysCode: '710002' }))
    expect(Object.keys(plain)).toEqual(['keyId', 'secret', 'apiKey'])
    expect((await listKeys(services.pool, '710002')).find(k => k.keyId === plain.keyId)).toMatchObject({ smppSystemId: null, smppBrandCode: null, smppCommercial: null, smppRecipientType: null })
  })

  it('refuses a system id another key has, even a revoked one until its credentials are removed', async () => {
    await expect(createKey(services.pool, newKey({ iysCode: '710003', scopes: 'send', smppSystemId: 'acme_esme' }))).rejects.toThrow(/SMPP system id "acme_esme" is already used by key ik_/)
    expect(await listKeys(services.pool, '710003')).toEqual([]) // nothing written
    const old = await createKey(services.pool, newKey({ iysCode: '710003', scopes: 'send', smppSystemId: 'reused' }))
    await revokeKey(services.pool, old.keyId)
    const other = await createKey(services.pool, newKey({ iysCode: '710003', scopes: 'send' }))
    const refused = setSmpp(services.pool, other.keyId, newSmpp({ systemId: 'reused' }))
    await expect(refused).rejects.toThrow(KeyError)
    await expect(refused).rejects.toThrow(`(revoked; \`keys smpp ${old.keyId} --off\` frees it)`)
    expect(await clearSmpp(services.pool, old.keyId)).toBe(true)
    const set = await setSmpp(services.pool, other.keyId, newSmpp({ systemId: 'reused' }))
    expect(isLogin(await eventually(() => store.authenticateSmpp('reused', set.smppPassword), isLogin))).toBe(true)
    expect(store.authenticateSmpp('reused', set.smppPassword)).toMatchObject({ principal: { keyId: other.keyId } })
  })

  it('refuses SMPP credentials for a key without the send scope, and bad system ids and defaults', async () => {
    expect(() => newKey({ iysCode: '710004', scopes: 'check,scrub', smppSystemId: 'nosend' })).toThrow(/needs a key with the send scope/)
    const checkOnly = await createKey(services.pool, newKey({ iysCode: '710004', scopes: 'check' }))
    await expect(setSmpp(services.pool, checkOnly.keyId, newSmpp({ systemId: 'nosend' }))).rejects.toThrow(/has no send scope/)
    await expect(setSmpp(services.pool, 'ik_0123456789abcdef', newSmpp({ systemId: 'ghost' }))).rejects.toThrow(/no key ik_0123456789abcdef/)
    for (const systemId of ['', 'a'.repeat(16), 'has space', 'şifre', 'tab\t']) expect(() => newSmpp({ systemId }), systemId).toThrow(/--smpp-system-id must be/)
    expect(newSmpp({ systemId: 'a'.repeat(15) }).systemId).toBe('a'.repeat(15))
    expect(() => newSmpp({ systemId: 'x', commercial: 'yes' })).toThrow(/--smpp-commercial must be true or false/)
    expect(() => newSmpp({ systemId: 'x', recipientType: 'bireysel' })).toThrow(/--smpp-recipient-type must be BIREYSEL or TACIR/)
    expect(() => newSmpp({ systemId: 'x', brandCode: 'B1' })).toThrow(/--smpp-brand-code/)
    expect(() => newKey({ iysCode: '710004', smppBrandCode: '610001' })).toThrow(/need --smpp-system-id/)
    // the default brand must be one the key may act for
    expect(() => newKey({ iysCode: '710004', brandCodes: '640001', scopes: 'send', smppSystemId: 'x', smppBrandCode: '640002' })).toThrow(/not one of the key's --brand-codes/)
    const restricted = await createKey(services.pool, newKey({ iysCode: '710004', brandCodes: '640001', scopes: 'send' }))
    await expect(setSmpp(services.pool, restricted.keyId, newSmpp({ systemId: 'r1', brandCode: '640002' }))).rejects.toThrow(/not one of key .*'s brands \(640001\)/)
    await expect(createKey(services.pool, newKey({ iysCode: '710004', scopes: 'send', smppSystemId: 'theirs', smppBrandCode: '610001' }))).rejects.toThrow(/brand 610001 belongs to another service provider/)
    // an unrestricted key's default brand is registered to its tenant, like --brand-codes
    const open = await createKey(services.pool, newKey({ iysCode: '710004', scopes: 'send', smppSystemId: 'open', smppBrandCode: '640003' }))
    const login = await eventually(() => store.authenticateSmpp('open', open.smppPassword!), isLogin)
    expect((login as SmppLogin).defaults.brandCode).toBe('640003')
    expect((login as SmppLogin).principal.brands).toEqual(new Set(['640001', '640003']))
  })

  it('replaces a key\'s credentials with a new password, removes them with --off, and forgets a revoked key', async () => {
    const key = await createKey(services.pool, newKey({ iysCode: '710005', scopes: 'send', smppSystemId: 'rotate' }))
    await eventually(() => store.authenticateSmpp('rotate', key.smppPassword!), isLogin)
    const next = await setSmpp(services.pool, key.keyId, newSmpp({ systemId: 'rotated', commercial: 'false' }))
    expect(next.smppPassword).not.toBe(key.smppPassword)
    const login = await eventually(() => store.authenticateSmpp('rotated', next.smppPassword), isLogin)
    expect((login as SmppLogin).defaults).toEqual({ brandCode: null, commercial: false, recipientType: 'BIREYSEL' })
    expect(store.authenticateSmpp('rotate', key.smppPassword!)).toBe('ESME_RINVSYSID')
    expect(store.authenticateSmpp('rotated', key.smppPassword!)).toBe('ESME_RINVPASWD')
    // the same system id again: only the password changes
    const again = await setSmpp(services.pool, key.keyId, newSmpp({ systemId: 'rotated' }))
    expect(await eventually(() => store.authenticateSmpp('rotated', next.smppPassword), v => v === 'ESME_RINVPASWD')).toBe('ESME_RINVPASWD')
    expect(isLogin(store.authenticateSmpp('rotated', again.smppPassword))).toBe(true)
    expect(await clearSmpp(services.pool, key.keyId)).toBe(true)
    expect(await eventually(() => store.authenticateSmpp('rotated', again.smppPassword), v => v === 'ESME_RINVSYSID')).toBe('ESME_RINVSYSID')
    expect(await clearSmpp(services.pool, 'ik_0123456789abcdef')).toBe(false)

    const revoked = await createKey(services.pool, newKey({ iysCode: '710005', scopes: 'send', smppSystemId: 'revoked' }))
    await eventually(() => store.authenticateSmpp('revoked', revoked.smppPassword!), isLogin)
    await revokeKey(services.pool, revoked.keyId)
    expect(await eventually(() => store.authenticateSmpp('revoked', revoked.smppPassword!), v => v === 'ESME_RINVSYSID')).toBe('ESME_RINVSYSID')
    await expect(setSmpp(services.pool, revoked.keyId, newSmpp({ systemId: 'revived' }))).rejects.toThrow(/is revoked/)
  })

  it('maps originators to a tenant\'s brands: add, list, replace, remove, and a brand of another tenant refused', async () => {
    const a = await addOriginator(services.pool, '720001', originatorOf('acme'), '650001')
    expect(a).toMatchObject({ iysCode: '720001', originator: 'ACME', brandCode: '650001' })
    await addOriginator(services.pool, '720001', originatorOf('0532 111 22 33'), '650002')
    await addOriginator(services.pool, '720002', originatorOf('4545'), '650003')
    await addOriginator(services.pool, '720002', originatorOf('Acme'), '650003') // another tenant, same sender ID
    await expect(addOriginator(services.pool, '720002', originatorOf('OTHER'), '650001')).rejects.toThrow(/brand 650001 belongs to another service provider/)
    expect(() => originatorOf('CONTROL\u0007')).toThrow(/--originator must be/)
    expect(() => originatorOf(undefined)).toThrow(KeyError)

    expect((await listOriginators(services.pool, '720001')).map(o => [o.originator, o.brandCode])).toEqual([['+905321112233', '650002'], ['ACME', '650001']])
    expect((await listOriginators(services.pool, null)).map(o => `${o.iysCode}/${o.originator}`)).toEqual(['720001/+905321112233', '720001/ACME', '720002/4545', '720002/ACME'])

    // Wait for a reload that holds the last of the four additions (one that came between them would hold fewer).
    await eventually(() => store.originatorOwners('acme').length, n => n === 2)
    expect(store.originatorBrand('720002', '4545')).toBe('650003')
    expect(store.originatorBrand('720001', 'acme')).toBe('650001')
    expect(store.originatorBrand('720001', 'ACME')).toBe('650001')
    expect(store.originatorBrand('720001', '+905321112233')).toBe('650002')
    expect(store.originatorBrand('720001', '905321112233')).toBe('650002')
    expect(store.originatorBrand('720001', '4545')).toBeNull() // another tenant's
    expect(store.originatorBrand('799999', 'ACME')).toBeNull()
    expect(store.originatorBrand('720001', '')).toBeNull()
    expect([...store.originatorOwners('acme')]).toEqual([{ iysCode: '720001', brandCode: '650001' }, { iysCode: '720002', brandCode: '650003' }])
    expect(store.originatorOwners('05321112233')).toEqual([{ iysCode: '720001', brandCode: '650002' }])
    expect(store.originatorOwners('NOBODY')).toEqual([])

    // adding again replaces the brand; removing takes it away on the next reload
    await addOriginator(services.pool, '720001', 'ACME', '650002')
    expect(await eventually(() => store.originatorBrand('720001', 'ACME'), v => v === '650002')).toBe('650002')
    expect(await removeOriginator(services.pool, '720001', 'ACME')).toBe(true)
    expect(await removeOriginator(services.pool, '720001', 'ACME')).toBe(false)
    expect(await eventually(() => store.originatorBrand('720001', 'ACME'), v => v === null)).toBeNull()
    expect(store.originatorOwners('ACME')).toEqual([{ iysCode: '720002', brandCode: '650003' }])
  })

  it('keeps serving the last copy while Postgres is away', async () => {
    const key = await createKey(services.pool, newKey({ iysCode: '710006', scopes: 'send', smppSystemId: 'steady' }))
    await addOriginator(services.pool, '710006', 'STEADY', '660001')
    await eventually(() => store.originatorBrand('710006', 'STEADY'), v => v !== null)
    // A store over a pool of its own, ended after the first load: every later poll fails, the copy stays.
    const dead = new pg.Pool({ connectionString: services.db.url, max: 1 })
    const lonely = KeyStore.postgres(dead, { pollMs: 20, log })
    await lonely.start()
    expect(isLogin(lonely.authenticateSmpp('steady', key.smppPassword!))).toBe(true)
    await dead.end()
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(lonely.status().problem).not.toBeNull()
    expect(isLogin(lonely.authenticateSmpp('steady', key.smppPassword!))).toBe(true)
    expect(lonely.originatorBrand('710006', 'steady')).toBe('660001')
    await lonely.stop()
  })
})

describe('the command line', () => {
  let services: TestServices
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, services.env)
  const json = (r: CliResult): any[] => {
    expect(r.code, r.stderr).toBe(0)
    return r.stdout.split('\n').filter(l => l !== '').map(l => JSON.parse(l))
  }

  beforeAll(async () => { services = await testServices() }) // not migrated: the commands migrate themselves
  afterAll(async () => { await services?.close() })

  it('keys create --smpp-system-id prints the credentials once; keys smpp replaces and removes them; keys list shows the defaults', async () => {
    const [created] = json(await cli('keys', 'create', '--iys-code', '730001', '--scopes', 'send', '--smpp-system-id', 'cli_esme', '--smpp-brand-code', '670001', '--smpp-commercial', 'true'))
    expect(Object.keys(created)).toEqual(['keyId', 'secret', 'apiKey', 'smppSystemId', 'smppPassword'])
    expect(created.smppSystemId).toBe('cli_esme')
    expect(created.smppPassword).toHaveLength(8)
    const [listed] = json(await cli('keys', 'list', '--iys-code', '730001'))
    expect(listed).toMatchObject({ keyId: created.keyId, smppSystemId: 'cli_esme', smppBrandCode: '670001', smppCommercial: true, smppRecipientType: 'BIREYSEL' })
    expect(JSON.stringify(listed)).not.toContain(created.smppPassword)

    const [replaced] = json(await cli('keys', 'smpp', created.keyId, '--smpp-system-id', 'cli_esme2', '--smpp-recipient-type', 'TACIR'))
    expect(replaced).toEqual({ keyId: created.keyId, smppSystemId: 'cli_esme2', smppPassword: expect.stringMatching(/^.{8}$/), smppBrandCode: null, smppCommercial: null, smppRecipientType: 'TACIR' })
    expect(json(await cli('keys', 'smpp', created.keyId, '--off'))).toEqual([{ keyId: created.keyId, smppSystemId: null }])
    expect(json(await cli('keys', 'list', '--iys-code', '730001'))[0]).toMatchObject({ smppSystemId: null, smppRecipientType: null })

    const clash = await cli('keys', 'create', '--iys-code', '730002', '--scopes', 'send', '--smpp-system-id', 'taken')
    expect(clash.code, clash.stderr).toBe(0)
    const again = await cli('keys', 'create', '--iys-code', '730002', '--scopes', 'send', '--smpp-system-id', 'taken')
    expect({ code: again.code, stdout: again.stdout }).toEqual({ code: 1, stdout: '' })
    expect(again.stderr).toMatch(/^iys-gateway keys: SMPP system id "taken" is already used by key ik_[0-9a-f]{16}: .*\n$/)
  })

  it('originators add, list and remove; another tenant\'s brand is refused (exit 1)', async () => {
    expect(json(await cli('originators', 'add', '--iys-code', '730003', '--originator', 'shop', '--brand-code', '670003'))).toEqual([
      { iysCode: '730003', originator: 'SHOP', brandCode: '670003', createdAt: expect.any(String) }
    ])
    const theirs = await cli('originators', 'add', '--iys-code', '730004', '--originator', 'SHOP', '--brand-code', '670003')
    expect(theirs.code).toBe(1)
    expect(theirs.stderr).toMatch(/^iys-gateway originators: brand 670003 belongs to another service provider.*\n$/)
    expect(json(await cli('originators', 'list')).map(o => o.originator)).toEqual(['SHOP'])
    expect(json(await cli('originators', 'remove', '--iys-code', '730003', '--originator', 'Shop'))).toEqual([{ iysCode: '730003', originator: 'SHOP', removed: true }])
    const gone = await cli('originators', 'remove', '--iys-code', '730003', '--originator', 'SHOP')
    expect(gone.code).toBe(1)
    expect(json(await cli('originators', 'list', '--iys-code', '730003'))).toEqual([])
  })

  it('answers bad usage with exit 2 and the reason on the first line', async () => {
    const cases: [string[], RegExp][] = [
      [['originators'], /originators needs add, list or remove/],
      [['originators', 'add', '--iys-code', '1', '--originator', 'X', '--brand-code', '2', '--colour', 'red'], /unknown option '--colour'/],
      [['originators', 'add', '--iys-code', '1', '--originator', 'A'.repeat(21), '--brand-code', '2'], /--originator must be/],
      [['keys', 'create', '--iys-code', '1', '--scopes', 'check', '--smpp-system-id', 'x'], /needs a key with the send scope/],
      [['keys', 'create', '--iys-code', '1', '--smpp-commercial', 'true'], /need --smpp-system-id/],
      [['keys', 'smpp', 'ik_0123456789abcdef'], /keys smpp needs --smpp-system-id ID, or --off/],
      [['keys', 'smpp', 'ik_0123456789abcdef', '--off', '--smpp-system-id', 'x'], /--off takes no other option/]
    ]
    for (const [args, message] of cases) {
      const r = await cli(...args)
      expect({ args, code: r.code, stdout: r.stdout }, r.stderr).toEqual({ args, code: 2, stdout: '' })
      expect(r.stderr.split('\n')[0]).toMatch(/^iys-gateway: /)
      expect(r.stderr.split('\n')[0]).toMatch(message)
    }
  }, 120_000)
})
