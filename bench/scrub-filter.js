// The filter step of a scrub, per line, ours against the `bloom-filters` package, over the same lines of the same
// list (run by bench/scrub.js as a child process, so that the timing has a process of its own).
//
//   node bench/scrub-filter.js --file LIST --lines M --present P --present-lines K --brand B [--bloom-file BYTES]
//
// Per line both sides do what a scrub does before any exact lookup: normalise the recipient (the same
// normalizeRecipient, so both get the same work there), check it fits the channel, then ask the filter.
//   ours:     hashKey(brandCode, "MB", normalized) (no string built) + split-block BloomFilter.has
//   baseline: key text brandCode + "MB" + normalized, then bloom-filters BloomFilter.has (its own hashing)
// Both filters are built here from the same keys (the P present keys that occur among the first M lines; present
// keys are numbered in order of first appearance by bench/scrub.js, so they are keys 0..P-1) at the same capacity
// and target false-positive rate (0.001, the gateway's default). With --bloom-file, ours is also timed over the
// gateway's real filter (all the present keys of the list, downloaded from Redis), which is what a scrub reads.
// Prints a readable block on stderr and one JSON line on stdout.

import { openSync, readSync, closeSync, readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import bloomFilters from 'bloom-filters'
import { BloomFilter } from '../dist/src/filter/bloom.js'
import { hashKey, keyHash } from '../dist/src/filter/key.js'
import { checkTypeFit, normalizeRecipient } from '../dist/src/domain/normalize.js'

const { values } = parseArgs({
  options: {
    file: { type: 'string' },
    lines: { type: 'string' },
    present: { type: 'string' },
    'present-lines': { type: 'string' },
    brand: { type: 'string' },
    'bloom-file': { type: 'string' },
    fpr: { type: 'string', default: '0.001' }
  }
})
const M = Number(values.lines)
const P = Number(values.present)
const presentLines = Number(values['present-lines'])
const brand = values.brand
const fpr = Number(values.fpr)
if (!values.file || !(M > 0) || !(P > 0) || !/^\d+$/.test(brand ?? '')) {
  process.stderr.write('usage: node bench/scrub-filter.js --file LIST --lines M --present P --present-lines K --brand B [--bloom-file BYTES]\n')
  process.exit(2)
}

/** The list's key numbering (bench/scrub.js): key i → +905 and 9 digits, a bijection of i mod 10^9. */
// i·387420489 mod 10^9 computed exactly in doubles: i·387420489 = i·387420·1000 + i·489, and every partial stays far
// below 2^53 for any i this list uses.
const canonical = (i) => '+905' + String(((((i * 387420) % 1e6) * 1000 + i * 489 + 123456789) % 1e9)).padStart(9, '0')

// The first M lines, each its own flat string (as a line parser hands them over).
function firstLines (file, m) {
  const fd = openSync(file, 'r')
  const buf = Buffer.alloc(1 << 20)
  const out = []
  let rest = ''
  try {
    while (out.length < m) {
      const n = readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      const parts = (rest + buf.toString('latin1', 0, n)).split('\n')
      rest = parts.pop()
      for (const p of parts) { if (out.length < m) out.push(p); else break }
    }
    if (out.length < m && rest !== '') out.push(rest)
  } finally { closeSync(fd) }
  return out.map(s => JSON.parse(JSON.stringify(s)))
}

const t0 = performance.now()
const lines = firstLines(values.file, M)
const CODE = 'MB'

let t = performance.now()
const ours = BloomFilter.forCapacity(P, fpr)
for (let i = 0; i < P; i++) { hashKey(brand, CODE, canonical(i)); ours.add(keyHash[0], keyHash[1]) }
const oursBuildMs = performance.now() - t
t = performance.now()
const theirs = bloomFilters.BloomFilter.create(P, fpr)
for (let i = 0; i < P; i++) theirs.add(brand + CODE + canonical(i))
const theirsBuildMs = performance.now() - t

let real = null
if (values['bloom-file']) real = BloomFilter.fromBytes(new Uint8Array(readFileSync(values['bloom-file'])))

// The timed loops; each returns [valid lines, filter "maybe" answers] so nothing can be optimised away.
function stepOurs (filter, count) {
  let valid = 0; let hits = 0
  for (let i = 0; i < count; i++) {
    const n = normalizeRecipient(lines[i])
    if (typeof n !== 'string' || checkTypeFit(n, 'MESAJ') !== null) continue
    valid++
    hashKey(brand, CODE, n)
    if (filter.has(keyHash[0], keyHash[1])) hits++
  }
  return [valid, hits]
}
function stepTheirs (count) {
  let valid = 0; let hits = 0
  for (let i = 0; i < count; i++) {
    const n = normalizeRecipient(lines[i])
    if (typeof n !== 'string' || checkTypeFit(n, 'MESAJ') !== null) continue
    valid++
    if (theirs.has(brand + CODE + n)) hits++
  }
  return [valid, hits]
}
function stepNormalize (count) {
  let valid = 0
  for (let i = 0; i < count; i++) {
    const n = normalizeRecipient(lines[i])
    if (typeof n === 'string' && checkTypeFit(n, 'MESAJ') === null) valid++
  }
  return [valid, 0]
}

function time (fn, count, rounds) {
  fn(Math.min(count, 20_000)) // warm-up
  fn(Math.min(count, 20_000))
  const ns = []
  let last = null
  for (let r = 0; r < rounds; r++) {
    const s = process.hrtime.bigint()
    last = fn(count)
    ns.push(Number(process.hrtime.bigint() - s) / count)
  }
  ns.sort((a, b) => a - b)
  return { nsPerLine: ns[ns.length >> 1], min: ns[0], max: ns[ns.length - 1], valid: last[0], hits: last[1], rounds }
}

const count = lines.length
const norm = time(stepNormalize, count, 5)
const o = time(c => stepOurs(ours, c), count, 5)
const r = real === null ? null : time(c => stepOurs(real, c), count, 5)
// The baseline is some 50-100× slower: one timed pass over every line (after the warm-up) keeps it within seconds.
const b = time(stepTheirs, count, 1)

const absentLines = o.valid - presentLines
const fp = (hits) => absentLines > 0 ? (hits - presentLines) / absentLines : NaN
const out = {
  scenario: 'scrub-filter',
  lines: count,
  presentKeys: P,
  presentLines,
  validLines: o.valid,
  fpr,
  ours: o,
  oursRealFilter: r,
  baseline: b,
  normalizeOnly: norm,
  ratio: b.nsPerLine / o.nsPerLine,
  filterOnlyRatio: (b.nsPerLine - norm.nsPerLine) / (o.nsPerLine - norm.nsPerLine),
  oursFalsePositiveRate: fp(o.hits),
  baselineFalsePositiveRate: fp(b.hits),
  realFilterFalsePositiveRate: r === null ? null : fp(r.hits),
  oursBytes: ours.buffer.byteLength,
  baselineBits: theirs.size,
  realFilterBytes: real === null ? null : real.buffer.byteLength,
  oursBuildMs,
  theirsBuildMs,
  seconds: (performance.now() - t0) / 1000
}
process.stderr.write(`scrub filter step over ${count} lines (${P} present keys): ours ${o.nsPerLine.toFixed(1)} ns/line, bloom-filters ${b.nsPerLine.toFixed(1)} ns/line, normalise alone ${norm.nsPerLine.toFixed(1)} ns/line\n`)
process.stdout.write(JSON.stringify(out) + '\n')
