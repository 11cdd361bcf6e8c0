// The Lua scripts of the Redis index, kept as .lua files in ./lua (each with a KEYS/ARGV header), read once when this
// module loads and called one way: EVALSHA through ioredis' defineCommand (ioredis sends the source again by itself
// when Redis answers NOSCRIPT, e.g. after a restart).
//
// Where the files are read from: always src/filter/lua, from src/ (vitest) and from dist/ alike, as the scrub pool
// finds its worker (scrub/pool.ts). tsc emits only .ts, and a copy step in `build` would be skipped by every plain
// `tsc -p tsconfig.json` (the test set-up's and the helpers' own build): dist/ would then run without its scripts.
// One copy of each file, next to the code that calls it, cannot go stale; the Dockerfile ships src/filter/lua.

import { readFileSync } from 'node:fs'
import { BUCKET_SENTINEL } from './layout.js'
import { SEQ_LUA_PATTERN } from './state.js'
import { projectUrl } from '../util/paths.js'
import { isCluster, type RedisClient } from '../store/redis.js'

// Read from the source tree, from src/ and dist/ alike (tsc copies no .lua files).
const LUA_DIR = projectUrl('src/filter/lua/')

/**
 * Constants a script takes from the module that owns them, written as '{{NAME}}' in the .lua file and filled in at
 * load: one definition of the sentinel field and of where an encoded state keeps its seq, in TypeScript.
 */
const CONSTANTS: Readonly<Record<string, string>> = Object.freeze({ BUCKET_SENTINEL, SEQ_LUA_PATTERN })

function load (file: string): string {
  const source = readFileSync(new URL(file, LUA_DIR), 'utf8')
  return source.replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    const v = CONSTANTS[name]
    if (v === undefined || /['\\\n]/.test(v)) throw new Error(`src/filter/lua/${file}: no Lua-safe constant ${name}`)
    return v
  })
}

/** name → file and fixed number of KEYS (undefined: the caller passes the count first, as lookup's varies). */
const SCRIPTS = {
  iysLookup: { lua: load('lookup.lua'), numberOfKeys: undefined },
  iysApplyStates: { lua: load('apply-states.lua'), numberOfKeys: undefined },
  iysApplyCommit: { lua: load('apply-commit.lua'), numberOfKeys: undefined },
  iysClaim: { lua: load('claim.lua'), numberOfKeys: 3 },
  iysFlip: { lua: load('flip.lua'), numberOfKeys: 5 },
  iysUnbuild: { lua: load('unbuild.lua'), numberOfKeys: 1 }
} as const

/** The scripts as commands; arguments are those of each file's header (KEYS, then ARGV). */
export interface FilterScripts {
  iysLookup (numKeys: number, ...keysAndArgs: string[]): Promise<(string | null)[] | 0 | null>
  iysApplyStates (numKeys: number, ...keysAndArgs: (string | number)[]): Promise<number>
  iysApplyCommit (numKeys: number, ...keysAndArgs: (string | number)[]): Promise<number>
  iysClaim (building: string, current: string, applied: string, claim: string, snapshotSeq: string): Promise<string | null>
  iysFlip (current: string, meta: string, building: string, applied: string, generation: string,
    version: string, snapshotSeq: string, generationId: string, claim: string): Promise<string | null>
  iysUnbuild (building: string, claim: string): Promise<number>
}

export type ScriptedRedis = RedisClient & FilterScripts

/** `redis` with the scripts defined on it (once per client; calling again is free). */
export function withScripts (redis: RedisClient): ScriptedRedis {
  const r = redis as unknown as Record<string, unknown>
  for (const [name, def] of Object.entries(SCRIPTS)) {
    if (typeof r[name] === 'function') continue
    redis.defineCommand(name, def.numberOfKeys === undefined ? { lua: def.lua } : { lua: def.lua, numberOfKeys: def.numberOfKeys })
    // A script whose count of keys comes first is never auto-pipelined in a cluster: ioredis groups a tick's commands
    // by the slot of their first argument, the count here, and the batch then fails ("same slots allocation group").
    // (A new array: ioredis shares its default one between clients.)
    if (isCluster(redis) && def.numberOfKeys === undefined) redis.options.autoPipeliningIgnoredCommands = [...redis.options.autoPipeliningIgnoredCommands ?? [], name]
  }
  return redis as ScriptedRedis
}
