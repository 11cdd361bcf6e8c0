// `iys-gateway keys …`, `brands …` and `originators …`: tenants, their brands, API keys (with their SMPP credentials)
// and originators in Postgres (auth/keys.ts). Each runs the migrations first (idempotent), so `keys create` is how
// an operator starts on an empty database. Output is JSON for scripts: one JSON line per key, brand or originator
// (`jq` reads it as it is). Secrets and SMPP passwords are printed once, by `keys create` and `keys smpp`, and never
// listed.
//
// Exit codes as every command's (cli.ts): a bad flag or value is a UsageError (2); an operation the database refuses
// (a brand of another tenant, an unknown key) fails with one line (1).

import { parseArgs } from 'node:util'
import {
  addBrand, addOriginator, clearSmpp, createKey, KeyError, listBrands, listKeys, listOriginators, newKey, newSmpp, originatorOf,
  removeOriginator, revokeKey, setSmpp
} from './auth/keys.js'
import { need, type Config } from './config.js'
import { CodedError } from './domain/errors.js'
import { canonicalCode } from './domain/vocabulary.js'
import { migrate } from './store/migrate.js'
import { createPool, type Pool } from './store/pg.js'

export const KEYS_USAGE = `  keys create --iys-code C [--brand-codes B1,B2] [--scopes s1,s2] [--name TEXT] [--rate PER_SECOND] [SMPP]
                                create an API key (DATABASE_URL); prints {"keyId","secret","apiKey"} once
                                (with SMPP, also "smppSystemId","smppPassword"; the key needs the send scope)
  keys smpp KEYID SMPP          set or replace a key's SMPP credentials (a new password, printed once)
  keys smpp KEYID --off         remove them
  keys list [--iys-code C]      the keys, one JSON line each (never the secret or SMPP password)
  keys revoke KEYID             revoke a key on every gateway within AUTH_POLL_MS
    SMPP: --smpp-system-id ID [--smpp-brand-code B] [--smpp-commercial true|false] [--smpp-recipient-type BIREYSEL|TACIR]
          an ESME's system_id (1-15 visible ASCII characters, unique) and its defaults for a submit_sm that does not say`
export const BRANDS_USAGE = `  brands add --iys-code C --brand-code B [--name N]
                                register a brand to a tenant (an unrestricted key acts for all of its brands)
  brands list [--iys-code C]    the brands, one JSON line each`
export const ORIGINATORS_USAGE = `  originators add --iys-code C --originator TEXT --brand-code B
                                map a tenant's sender ID, short code or number to one of its brands (SMPP submit_sm
                                without a brand TLV; MO "RET" to it); adding it again replaces the brand
  originators list [--iys-code C]
                                the originators (in their stored form: E.164, or upper-case), one JSON line each
  originators remove --iys-code C --originator TEXT`

export class UsageError extends CodedError<'USAGE'> {
  constructor (message: string) { super('USAGE', message) }
}

const out = (value: unknown): void => { process.stdout.write(JSON.stringify(value) + '\n') }

/** The SMPP flags of `keys create` and `keys smpp`. */
const SMPP_OPTIONS = {
  'smpp-system-id': { type: 'string' }, 'smpp-brand-code': { type: 'string' }, 'smpp-commercial': { type: 'string' }, 'smpp-recipient-type': { type: 'string' }
} as const

export async function keysCommand (config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'create': {
      const { values } = parseArgs({
        args: rest,
        options: { 'iys-code': { type: 'string' }, 'brand-codes': { type: 'string' }, scopes: { type: 'string' }, name: { type: 'string' }, rate: { type: 'string' }, ...SMPP_OPTIONS }
      })
      if (values['iys-code'] === undefined) throw new UsageError('keys create needs --iys-code')
      const key = usage(() => newKey({
        iysCode: values['iys-code'], brandCodes: values['brand-codes'], scopes: values.scopes, name: values.name, rate: values.rate,
        smppSystemId: values['smpp-system-id'], smppBrandCode: values['smpp-brand-code'], smppCommercial: values['smpp-commercial'], smppRecipientType: values['smpp-recipient-type']
      }))
      return await withPool(config, async pool => { out(await refusable(createKey(pool, key))); return 0 })
    }
    case 'smpp': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { off: { type: 'boolean', default: false }, ...SMPP_OPTIONS } })
      if (positionals.length !== 1) throw new UsageError('keys smpp takes exactly one KEYID')
      const keyId = positionals[0]!
      if (values.off) {
        if (Object.keys(values).some(k => k !== 'off')) throw new UsageError('keys smpp --off takes no other option')
        return await withPool(config, async pool => {
          if (!await clearSmpp(pool, keyId)) throw new Error(`no key ${keyId} (nothing changed; \`keys list\` shows the keys)`)
          out({ keyId, smppSystemId: null })
          return 0
        })
      }
      if (values['smpp-system-id'] === undefined) throw new UsageError('keys smpp needs --smpp-system-id ID, or --off')
      const smpp = usage(() => newSmpp({ systemId: values['smpp-system-id'], brandCode: values['smpp-brand-code'], commercial: values['smpp-commercial'], recipientType: values['smpp-recipient-type'] }))
      return await withPool(config, async pool => {
        const credentials = await refusable(setSmpp(pool, keyId, smpp))
        out({ keyId, ...credentials, smppBrandCode: smpp.brandCode, smppCommercial: smpp.commercial, smppRecipientType: smpp.recipientType ?? 'BIREYSEL' })
        return 0
      })
    }
    case 'list': {
      const iysCode = optionalCode(parseArgs({ args: rest, options: { 'iys-code': { type: 'string' } } }).values['iys-code'])
      return await withPool(config, async pool => { for (const k of await listKeys(pool, iysCode)) out(k); return 0 })
    }
    case 'revoke': {
      const { positionals } = parseArgs({ args: rest, allowPositionals: true, options: {} })
      if (positionals.length !== 1) throw new UsageError('keys revoke takes exactly one KEYID')
      const keyId = positionals[0]!
      return await withPool(config, async pool => {
        if (!await revokeKey(pool, keyId)) throw new Error(`no key ${keyId} (nothing revoked; \`keys list\` shows the keys)`)
        out({ keyId, revoked: true })
        return 0
      })
    }
    default:
      throw new UsageError(sub === undefined ? 'keys needs create, list or revoke (or smpp: SMPP credentials)' : `unknown keys command "${sub}" (create, list, smpp, revoke)`)
  }
}

export async function brandsCommand (config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'add': {
      const { values } = parseArgs({ args: rest, options: { 'iys-code': { type: 'string' }, 'brand-code': { type: 'string' }, name: { type: 'string' } } })
      const iysCode = canonicalCode(values['iys-code'])
      if (iysCode === null) throw new UsageError('brands add needs --iys-code, an İYS service provider code (digits)')
      const brandCode = canonicalCode(values['brand-code'])
      if (brandCode === null) throw new UsageError('brands add needs --brand-code, an İYS brand code (digits)')
      return await withPool(config, async pool => {
        await refusable(addBrand(pool, iysCode, brandCode, values.name ?? null))
        out((await listBrands(pool, iysCode)).find(b => b.brandCode === brandCode))
        return 0
      })
    }
    case 'list': {
      const iysCode = optionalCode(parseArgs({ args: rest, options: { 'iys-code': { type: 'string' } } }).values['iys-code'])
      return await withPool(config, async pool => { for (const b of await listBrands(pool, iysCode)) out(b); return 0 })
    }
    default:
      throw new UsageError(sub === undefined ? 'brands needs add or list' : `unknown brands command "${sub}" (add, list)`)
  }
}

export async function originatorsCommand (config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'add': {
      const { values } = parseArgs({ args: rest, options: { 'iys-code': { type: 'string' }, originator: { type: 'string' }, 'brand-code': { type: 'string' } } })
      const iysCode = requiredCode(values['iys-code'], 'originators add needs --iys-code, an İYS service provider code (digits)')
      const originator = usage(() => originatorOf(values.originator))
      const brandCode = requiredCode(values['brand-code'], 'originators add needs --brand-code, an İYS brand code (digits)')
      return await withPool(config, async pool => { out(await refusable(addOriginator(pool, iysCode, originator, brandCode))); return 0 }, 'originators')
    }
    case 'list': {
      const iysCode = optionalCode(parseArgs({ args: rest, options: { 'iys-code': { type: 'string' } } }).values['iys-code'])
      return await withPool(config, async pool => { for (const o of await listOriginators(pool, iysCode)) out(o); return 0 }, 'originators')
    }
    case 'remove': {
      const { values } = parseArgs({ args: rest, options: { 'iys-code': { type: 'string' }, originator: { type: 'string' } } })
      const iysCode = requiredCode(values['iys-code'], 'originators remove needs --iys-code, an İYS service provider code (digits)')
      const originator = usage(() => originatorOf(values.originator))
      return await withPool(config, async pool => {
        if (!await removeOriginator(pool, iysCode, originator)) throw new Error(`tenant ${iysCode} has no originator ${originator} (nothing removed; \`originators list\` shows them)`)
        out({ iysCode, originator, removed: true })
        return 0
      }, 'originators')
    }
    default:
      throw new UsageError(sub === undefined ? 'originators needs add, list or remove' : `unknown originators command "${sub}" (add, list, remove)`)
  }
}

async function withPool (config: Config, fn: (pool: Pool) => Promise<number>, what = 'keys and brands'): Promise<number> {
  const pool = createPool(need(config.databaseUrl, 'DATABASE_URL', what), 1)
  try {
    await migrate(pool)
    return await fn(pool)
  } finally {
    await pool.end()
  }
}

/** A flag's value refused by auth/keys.ts (bad code, unknown scope, bad rate) is a usage error. */
function usage<T> (fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (err instanceof KeyError) throw new UsageError(err.message)
    throw err
  }
}

/** What the database refuses (a brand of another tenant) is a failure, not a usage error: exit 1 with its line. */
async function refusable<T> (p: Promise<T>): Promise<T> {
  try {
    return await p
  } catch (err) {
    if (err instanceof KeyError) throw new Error(err.message)
    throw err
  }
}

function requiredCode (text: string | undefined, message: string): string {
  const code = canonicalCode(text)
  if (code === null) throw new UsageError(message)
  return code
}

function optionalCode (text: string | undefined): string | null {
  if (text === undefined) return null
  const code = canonicalCode(text)
  if (code === null) throw new UsageError('--iys-code must be an İYS service provider code (digits)')
  return code
}
