// Bloom filter lookup micro-benchmark: our split-block filter (src/filter/bloom.ts, hashing included) against the
// `bloom-filters` package's classic BloomFilter at the same capacity and target false-positive rate.
//
//   npx tsc -p tsconfig.json && node bench/bloom.js [--n 1000000] [--fpr 0.001]
//
// Both sides look up the very same pre-built key strings ("600017MB+905321234567"), half present and half absent,
// in the same shuffled order. Ours hashes each string (hashText) and probes; theirs hashes inside `has`. The
// baseline is much slower, so it is timed over fewer lookups (a prefix of the same array). Prints a readable block,
// then one JSON line for bench/run.js as the last line of output.

import { BloomFilter } from '../dist/src/filter/bloom.js'
import { hashText, keyHash } from '../dist/src/filter/key.js'
import bloomFilters from 'bloom-filters'
import { mulberry32 } from '../dist/src/util/random.js'
import { arg } from './args.js'

const Baseline = bloomFilters.BloomFilter

const n = Number(arg('n', '1000000'))
const fpr = Number(arg('fpr', '0.001'))
if (!Number.isSafeInteger(n) || n < 1000 || n > 20_000_000) {
  console.error(`bench/bloom: --n must be an integer in 1000…20000000, got ${arg('n')}`)
  process.exit(2)
}
if (!(fpr > 0 && fpr < 0.5)) {
  console.error(`bench/bloom: --fpr must be in (0, 0.5), got ${arg('fpr')}`)
  process.exit(2)
}

const OURS_OPS = Math.min(2 * n, 2_000_000)
const THEIRS_OPS = Math.min(2 * n, 200_000)
const ROUNDS_OURS = 9
const ROUNDS_THEIRS = 5

// Key i → a distinct key text. 387420489 (3^18) is coprime with 10^9, so i ↦ i·3^18 mod 10^9 is a bijection and the
// 9-digit subscriber parts are distinct yet scattered; products stay below 2^53 for n ≤ 20M.
const CODES = ['MB', 'AB', 'MT', 'AT']
function keyOf (i) {
  const sub = (i * 387420489 + 123456789) % 1e9
  return String(600001 + (i % 50)) + CODES[(i >>> 3) & 3] + '+905' + String(1e9 + sub).slice(1)
}

const t0 = process.hrtime.bigint()
const present = Array.from({ length: n }, (_, i) => keyOf(i))
const absent = Array.from({ length: n }, (_, i) => keyOf(n + i))

// Lookups: half present, half absent, in random order. Each is a fresh flat copy allocated in lookup order, like a
// recipient just parsed from a request body; without this, the keys are rope (cons) strings scattered over a large
// heap and both sides would be measured mostly on cache misses and string flattening, not on the filter.
const rnd = mulberry32(20240501)
const picks = new Array(OURS_OPS)
for (let i = 0; i < OURS_OPS; i++) picks[i] = i & 1 ? absent[(rnd() * n) | 0] : present[(rnd() * n) | 0]
for (let i = OURS_OPS - 1; i > 0; i--) {
  const j = (rnd() * (i + 1)) | 0
  const t = picks[i]; picks[i] = picks[j]; picks[j] = t
}
const lookups = picks.map((k) => JSON.parse(JSON.stringify(k)))
picks.length = 0

// Build both filters.
let t = process.hrtime.bigint()
const ours = BloomFilter.forCapacity(n, fpr)
for (let i = 0; i < n; i++) {
  hashText(present[i])
  ours.add(keyHash[0], keyHash[1])
}
const oursBuildMs = Number(process.hrtime.bigint() - t) / 1e6

t = process.hrtime.bigint()
const theirs = Baseline.create(n, fpr)
for (let i = 0; i < n; i++) theirs.add(present[i])
const theirsBuildMs = Number(process.hrtime.bigint() - t) / 1e6

// The timed loops. Each returns the number of "maybe" answers so the work cannot be optimised away.
function lookupOurs (keys, count) {
  let hits = 0
  for (let i = 0; i < count; i++) {
    hashText(keys[i])
    if (ours.has(keyHash[0], keyHash[1])) hits++
  }
  return hits
}
function lookupTheirs (keys, count) {
  let hits = 0
  for (let i = 0; i < count; i++) if (theirs.has(keys[i])) hits++
  return hits
}

function time (fn, count, rounds) {
  fn(lookups, count) // warm-up (lets the JIT settle)
  fn(lookups, count)
  const ns = []
  let sink = 0
  for (let r = 0; r < rounds; r++) {
    const s = process.hrtime.bigint()
    sink += fn(lookups, count)
    ns.push(Number(process.hrtime.bigint() - s) / count)
  }
  ns.sort((a, b) => a - b)
  return { median: ns[ns.length >> 1], min: ns[0], max: ns[ns.length - 1], sink }
}

const o = time(lookupOurs, OURS_OPS, ROUNDS_OURS)
const b = time(lookupTheirs, THEIRS_OPS, ROUNDS_THEIRS)

// Correctness figures: false negatives (must be 0) and false-positive rate on keys never inserted.
let oursFn = 0
for (let i = 0; i < n; i++) {
  hashText(present[i])
  if (!ours.has(keyHash[0], keyHash[1])) oursFn++
}
let oursFp = 0
for (let i = 0; i < n; i++) {
  hashText(absent[i])
  if (ours.has(keyHash[0], keyHash[1])) oursFp++
}
const theirsProbe = Math.min(n, 200_000)
let theirsFn = 0
let theirsFp = 0
for (let i = 0; i < theirsProbe; i++) {
  if (!theirs.has(present[i])) theirsFn++
  if (theirs.has(absent[i])) theirsFp++
}

const oursFpr = oursFp / n
const theirsFpr = theirsFp / theirsProbe
const oursBytes = ours.bytes().byteLength
const theirsBytes = Math.ceil(theirs.size / 8)
const ratio = b.median / o.median
const totalS = Number(process.hrtime.bigint() - t0) / 1e9

const f = (x, d = 1) => x.toFixed(d)
const mib = (x) => (x / 1048576).toFixed(2) + ' MiB'
console.log(`bloom lookup benchmark — n=${n.toLocaleString('en')} keys, target fpr=${fpr}, node ${process.version}`)
console.log(`  lookups: ${OURS_OPS.toLocaleString('en')} (ours) / ${THEIRS_OPS.toLocaleString('en')} (bloom-filters), half present, half absent; median of ${ROUNDS_OURS}/${ROUNDS_THEIRS} rounds`)
console.log(`  ours (split-block, hashText+has) : ${f(o.median)} ns/op  [min ${f(o.min)}, max ${f(o.max)}]  ${f(1e3 / o.median, 2)} M ops/s`)
console.log(`  bloom-filters BloomFilter.has   : ${f(b.median)} ns/op  [min ${f(b.min)}, max ${f(b.max)}]  ${f(1e3 / b.median, 3)} M ops/s`)
console.log(`  ratio                           : ${f(ratio)}× faster`)
console.log(`  measured fpr                    : ours ${oursFpr.toFixed(5)} (${oursFp}/${n}), bloom-filters ${theirsFpr.toFixed(5)} (${theirsFp}/${theirsProbe})`)
console.log(`  false negatives                 : ours ${oursFn}, bloom-filters ${theirsFn}`)
console.log(`  size                            : ours ${mib(oursBytes)} (${ours.blocks} blocks), bloom-filters ${mib(theirsBytes)} (${theirs.size} bits, ${theirs._nbHashes} hashes)`)
console.log(`  build                           : ours ${f(oursBuildMs, 0)} ms, bloom-filters ${f(theirsBuildMs, 0)} ms; total run ${f(totalS, 1)} s`)
console.log(JSON.stringify({
  scenario: 'bloom-lookup',
  unit: 'ns/op',
  value: +o.median.toFixed(2),
  baseline: +b.median.toFixed(2),
  ratio: +ratio.toFixed(2),
  n,
  fpr,
  ours_ns_per_op: +o.median.toFixed(2),
  baseline_ns_per_op: +b.median.toFixed(2),
  ours_fpr: +oursFpr.toFixed(6),
  baseline_fpr: +theirsFpr.toFixed(6),
  ours_false_negatives: oursFn,
  baseline_false_negatives: theirsFn,
  ours_bytes: oursBytes,
  baseline_bytes: theirsBytes,
  ours_build_ms: Math.round(oursBuildMs),
  baseline_build_ms: Math.round(theirsBuildMs),
  ops_ours: OURS_OPS,
  ops_baseline: THEIRS_OPS
}))
