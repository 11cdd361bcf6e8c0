// Local exact replica (src/filter/replica.ts): memory per consent, build time and lookups per second at N phone keys.
//
//   npm run build && node bench/replica-memory.js [--keys 10000000] [--headroom 0.1] [--load 0.8] [--lookups 1000000]
//                                                 [--build many|one]
//
// Standalone for now (not in bench/run.js). Builds a table for keys × (1 + headroom) with N distinct phone keys
// (50 brands, MESAJ/ARAMA × BIREYSEL/TACIR, "+905" and 9 scattered digits) through upsertEncodedMany (or, with
// --build one, upsertEncoded per key), from chunks of 1000 [key text, encoded state] pairs as Redis's HSCAN gives
// them, generated while building so that no key array sits in the heap when memory is measured. Memory is process.memoryUsage() after a full GC before and after
// the build: arrayBuffers (the SharedArrayBuffers exactly) and RSS (what the machine pays, including any heap the
// build left behind). Lookups: fresh flat recipient strings (as parsed from a request), hits and misses timed apart.
// Prints a readable block, then one JSON line.

import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { ReplicaTable, newReplicaState } from '../dist/src/filter/replica.js'
import { encodeState } from '../dist/src/filter/state.js'
import { keyCode } from '../dist/src/filter/key.js'
import { mulberry32 } from '../dist/src/util/random.js'
import { arg } from './args.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc')

const keys = Number(arg('keys', '10000000'))
const headroom = Number(arg('headroom', '0.1'))
const maxLoad = Number(arg('load', '0.8'))
const lookups = Number(arg('lookups', '1000000'))
const buildMode = arg('build', 'many')
if (!Number.isSafeInteger(keys) || keys < 1000 || keys > 100_000_000) {
  console.error(`bench/replica-memory: --keys must be an integer in 1000…100000000, got ${arg('keys')}`)
  process.exit(2)
}
if (buildMode !== 'many' && buildMode !== 'one') {
  console.error('bench/replica-memory: --build is many (upsertEncodedMany, the default) or one (upsertEncoded per key)')
  process.exit(2)
}
if (!(headroom >= 0 && headroom <= 2) || !(maxLoad > 0 && maxLoad <= 0.95) || !(lookups >= 1000)) {
  console.error('bench/replica-memory: --headroom in [0, 2], --load in (0, 0.95], --lookups ≥ 1000')
  process.exit(2)
}

const BRANDS = Array.from({ length: 50 }, (_, i) => String(600001 + i))
const TYPES = [['MESAJ', 'BIREYSEL'], ['ARAMA', 'BIREYSEL'], ['MESAJ', 'TACIR'], ['ARAMA', 'TACIR']]
// i ↦ i·3^18 mod 10^9 is a bijection (3^18 is coprime with 10^9): distinct, scattered 9-digit subscriber parts.
// Made with String.fromCharCode, so each is a flat string like one parsed from a request or a Redis reply ('+905' +
// digits would be a rope that every first read flattens: allocation and cache misses that no caller pays).
function phoneOf (i) {
  let sub = (i * 387420489 + 123456789) % 1e9
  const d = [0, 0, 0, 0, 0, 0, 0, 0, 0]
  for (let k = 8; k >= 0; k--) { d[k] = 48 + sub % 10; sub = Math.floor(sub / 10) }
  return String.fromCharCode(43, 57, 48, 53, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
}
const brandOf = (i) => BRANDS[i % 50]
const typeOf = (i) => TYPES[(i >>> 3) & 3]
// Every state field from i, so the table holds realistic spreads (seq above 2^32 for some).
function stateOf (i, st) {
  st.status = i % 7 === 0 ? 'RET' : 'ONAY'
  st.sourceIndex = i % 23
  st.consentDate = 1_430_438_400 + (i % 300_000_000)
  st.seq = i * 40_000 + 1
  return st
}

const mb = (b) => (b / 1048576).toFixed(1)
const mem = () => { gc(); gc(); return process.memoryUsage() }
const secs = (t0) => Number(process.hrtime.bigint() - t0) / 1e9

// The build takes what Redis's HSCAN gives: chunks of [key text, encoded state, …] pairs, 1000 keys a chunk.
function chunkOf (from, to, st, out) {
  out.length = 0
  for (let i = from; i < to; i++) {
    const [type, rt] = typeOf(i)
    stateOf(i, st)
    out.push(brandOf(i) + keyCode(type, rt) + phoneOf(i), encodeState(st.status, st.sourceIndex, st.consentDate, st.seq))
  }
  return out
}
const CHUNK = 1000
const st = newReplicaState()
const pairs = []

// Generation alone (the strings the build loop makes), to say how much of the build is the table's.
const genN = Math.min(keys, 2_000_000)
let sink = 0
let t0 = process.hrtime.bigint()
for (let i = 0; i < genN; i += CHUNK) sink += chunkOf(i, Math.min(genN, i + CHUNK), st, pairs).length
const genPerKey = secs(t0) / genN

const before = mem()
t0 = process.hrtime.bigint()
const table = ReplicaTable.create({ capacity: Math.ceil(keys * (1 + headroom)), emailBytes: 0, maxLoad })
for (let i = 0; i < keys; i += CHUNK) {
  chunkOf(i, Math.min(keys, i + CHUNK), st, pairs)
  if (buildMode === 'many') table.upsertEncodedMany(pairs)
  else for (let j = 0; j < pairs.length; j += 2) table.upsertEncoded(pairs[j], pairs[j + 1])
}
pairs.length = 0
const buildS = secs(t0)
const after = mem()
if (table.keys !== keys) throw new Error(`table holds ${table.keys} keys, expected ${keys}`)
table.shared() // as the gateway will before posting it to workers: from here on, writes take the seqlock path

// The text path (Redis HSCAN pairs: key text, encoded state): newer states for existing keys, plus building the
// strings, over a slice of the keys.
const encN = Math.min(keys, 1_000_000)
const encKeys = new Array(encN)
const encStates = new Array(encN)
for (let j = 0; j < encN; j++) {
  const i = (j * 7919) % keys
  const [type, rt] = typeOf(i)
  encKeys[j] = brandOf(i) + keyCode(type, rt) + phoneOf(i)
  stateOf(i, st)
  encStates[j] = encodeState(st.status, st.sourceIndex, st.consentDate, st.seq + 1)
}
t0 = process.hrtime.bigint()
let applied = 0
for (let j = 0; j < encN; j++) if (table.upsertEncoded(encKeys[j], encStates[j])) applied++
const encS = secs(t0)
if (applied !== new Set(encKeys).size) throw new Error(`upsertEncoded applied ${applied}`)
encKeys.length = 0
encStates.length = 0

// Lookups: recipients as fresh flat strings in lookup order; half the runs hits, half misses.
const rnd = mulberry32(20240612)
const M = Math.min(lookups, 1_000_000)
function queries (hit) {
  const q = new Array(M)
  for (let j = 0; j < M; j++) {
    const i = hit ? (rnd() * keys) | 0 : keys + ((rnd() * keys) | 0)
    q[j] = i
  }
  return { idx: q, rec: q.map(i => phoneOf(i)) }
}
const hits = queries(true)
const misses = queries(false)

// mode 'one': lookup per key into one scratch state; 'fresh': a new state object per lookup.
function timeLookups ({ idx, rec }, expectHit, mode) {
  const out = newReplicaState()
  let found = 0
  const t = process.hrtime.bigint()
  for (let j = 0; j < M; j++) {
    const i = idx[j]
    const [type, rt] = typeOf(i)
    if (mode === 'fresh') {
      const o = newReplicaState() // what a lookup returning a new object per hit would cost
      if (table.lookup(brandOf(i), type, rt, rec[j], o)) { found++; sink += o.seq }
    } else if (table.lookup(brandOf(i), type, rt, rec[j], out)) { found++; sink += out.seq }
  }
  const s = secs(t)
  if (found !== (expectHit ? M : 0)) throw new Error(`${expectHit ? 'hits' : 'misses'}: found ${found} of ${M}`)
  return M / s
}
const ROUNDS = 3
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const rates = { hit: [], miss: [], hitFresh: [] }
for (let r = 0; r < ROUNDS; r++) {
  rates.hit.push(timeLookups(hits, true, 'one'))
  rates.miss.push(timeLookups(misses, false, 'one'))
  rates.hitFresh.push(timeLookups(hits, true, 'fresh'))
}

// Check a sample exactly (states as written, then +1 seq where the text path applied).
const chk = newReplicaState()
for (let j = 0; j < 1000; j++) {
  const i = (rnd() * keys) | 0
  const [type, rt] = typeOf(i)
  if (!table.lookup(brandOf(i), type, rt, phoneOf(i), chk)) throw new Error('lost a key')
  stateOf(i, st)
  if (chk.status !== st.status || chk.sourceIndex !== st.sourceIndex || chk.consentDate !== st.consentDate || (chk.seq !== st.seq && chk.seq !== st.seq + 1)) {
    throw new Error(`wrong state for key ${i}`)
  }
}

const result = {
  keys,
  capacity: table.capacity,
  slots: table.slotCount,
  loadFactor: +(keys / table.slotCount).toFixed(3),
  tableBytes: table.bytes,
  bytesPerKeyArrayBuffers: +((after.arrayBuffers - before.arrayBuffers) / keys).toFixed(2),
  bytesPerKeyExternal: +((after.external - before.external) / keys).toFixed(2),
  bytesPerKeyRss: +((after.rss - before.rss) / keys).toFixed(2),
  heapUsedDeltaMB: +mb(after.heapUsed - before.heapUsed),
  buildS: +buildS.toFixed(2),
  buildGenerationS: +(genPerKey * keys).toFixed(2),
  buildKeysPerS: Math.round(keys / buildS),
  buildMode,
  upsertEncodedPerS: Math.round(encN / encS),
  lookupHitPerS: Math.round(median(rates.hit)),
  lookupMissPerS: Math.round(median(rates.miss)),
  lookupHitFreshObjectPerS: Math.round(median(rates.hitFresh))
}
console.log(`replica: ${keys} phone keys, capacity ${result.capacity} (headroom ${headroom}), ${result.slots} slots, load ${result.loadFactor}`)
console.log(`  memory: table ${mb(result.tableBytes)} MiB; per consent ${result.bytesPerKeyArrayBuffers} B (arrayBuffers), ${result.bytesPerKeyExternal} B (external), ${result.bytesPerKeyRss} B (RSS); heap Δ ${result.heapUsedDeltaMB} MiB`)
console.log(`  build (${buildMode === 'many' ? 'upsertEncodedMany' : 'upsertEncoded per key'}, 1000-key HSCAN-like chunks): ${result.buildS} s (${result.buildKeysPerS} keys/s; of it ≈ ${result.buildGenerationS} s making the key and state strings)`)
console.log(`  upsertEncoded (text path, newer states): ${result.upsertEncodedPerS}/s`)
console.log(`  lookups: hit ${result.lookupHitPerS}/s, miss ${result.lookupMissPerS}/s, hit with a new object each ${result.lookupHitFreshObjectPerS}/s (median of ${ROUNDS} × ${M})`)
console.log(JSON.stringify(result))
if (sink === -1) console.log('')
