// `iys-gateway keys …` and `iys-gateway brands …`: tenants, their brands and API keys in Postgres (auth/keys.ts).
// Each runs the migrations first (idempotent), so `keys create` is how an operator starts on an empty database.
// Output is JSON for scripts: one JSON line per key or brand (`jq` reads it as it is). Secrets are printed once, by
// `keys create`, and never listed.
//
// Exit codes as every command's (cli.ts): a bad flag or value is a UsageError (2); an operation the database refuses
// (a brand of another tenant, an unknown key) fails with one line (1).

import { parseArgs } from 'node:util'
import { addBrand, createKey, KeyError, listBrands, listKeys, newKey, revokeKey } from './auth/keys.js'
import { need, type Config } from './config.js'
import { CodedError } from './domain/errors.js'
import { canonicalCode } from './domain/vocabulary.js'
import { migrate } from './store/migrate.js'
import { createPool, type Pool } from './store/pg.js'

export const KEYS_USAGE = `  keys create --iys-code C [--brand-codes B1,B2] [--scopes s1,s2] [--name TEXT] [--rate PER_SECOND]
                                create an API key (DATABASE_URL); prints {"keyId","secret","apiKey"} once
  keys list [--iys-code C]      the keys, one JSON line each (never the secret)
  keys revoke KEYID             revoke a key on every gateway within AUTH_POLL_MS`
export const BRANDS_USAGE = `  brands add --iys-code C --brand-code B [--name N]
                                register a brand to a tenant (an unrestricted key acts for all of its brands)
  brands list [--iys-code C]    the brands, one JSON line each`

export class UsageError extends CodedError<'USAGE'> {
  constructor (message: string) { super('USAGE', message) }
}

const out = (value: unknown): void => { process.stdout.write(JSON.stringify(value) + '\n') }

export async function keysCommand (config: Config, args: string[]): Promise<number> {
  const [sub, ...rest] = args
  switch (sub) {
    case 'create': {
      const { values } = parseArgs({
        args: rest,
        options: { 'iys-code': { type: 'string' }, 'brand-codes': { type: 'string' }, scopes: { type: 'string' }, name: { type: 'string' }, rate: { type: 'string' } }
      })
      if (values['iys-code'] === undefined) throw new UsageError('keys create needs --iys-code')
      const key = usage(() => newKey({ iysCode: values['iys-code'], brandCodes: values['brand-codes'], scopes: values.scopes, name: values.name, rate: values.rate }))
      return await withPool(config, async pool => { out(await refusable(createKey(pool, key))); return 0 })
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
      throw new UsageError(sub === undefined ? 'keys needs create, list or revoke' : `unknown keys command "${sub}" (create, list, revoke)`)
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

async function withPool (config: Config, fn: (pool: Pool) => Promise<number>): Promise<number> {
  const pool = createPool(need(config.databaseUrl, 'DATABASE_URL', 'keys and brands'), 1)
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

function optionalCode (text: string | undefined): string | null {
  if (text === undefined) return null
  const code = canonicalCode(text)
  if (code === null) throw new UsageError('--iys-code must be an İYS service provider code (digits)')
  return code
}
