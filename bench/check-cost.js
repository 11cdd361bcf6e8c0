// Where a /v1/check spends its CPU without HTTP (issue 12's lean request path): JSON.parse of the body,
// parseCheckRequest, the Checker answering from a local replica of N phone keys, and serializeResults, each timed
// alone and all four together, over the same bodies.
//
//   npm run build && node bench/check-cost.js [--keys 1000000] [--recipients 1000] [--present 50] [--rounds 3]
//
// Standalone (not in bench/run.js): the HTTP figures are in check-single and check-batch; this one tells which part
// of the gateway's own work a change moved. Keys are random over the table (as real traffic is), so a lookup pays the
// cache misses of a table larger than the CPU's cache. Prints ms per request for each step.

import { Checker } from '../dist/src/check/checker.js'
import { ReplicaTable } from '../dist/src/filter/replica.js'
import { keyCode, keyText } from '../dist/src/filter/key.js'
import { encodeState } from '../dist/src/filter/state.js'
import { parseCheckRequest, serializeResults } from '../dist/src/http/check-request.js'
import { mulberry32 } from '../dist/src/util/random.js'
import { arg } from './args.js'

const keys = Number(arg('keys', '1000000'))
const perRequest = Number(arg('recipients', '1000'))
const present = Number(arg('present', '50')) / 100
const rounds = Number(arg('rounds', '3'))
const BODIES = 32
const phone = (i) => '+90532' + String(1_000_000 + i)

const table = ReplicaTable.create({ capacity: keys + 1024, emailBytes: 1 << 20 })
const code = keyCode('MESAJ', 'BIREYSEL')
const pairs = []
for (let i = 0; i < keys; i++) {
  pairs.push(keyText('600001', code, phone(i)), encodeState(i % 3 === 0 ? 'RET' : 'ONAY', 0, 1_705_300_000 + i, i + 1))
  if (pairs.length === 20_000) { table.upsertEncodedMany(pairs); pairs.length = 0 }
}
table.upsertEncodedMany(pairs)

const view = { version: 1, exact: () => table }
const checker = new Checker(() => view, { tacirAllowedWithoutRecord: true, storeFailureMode: 'closed' })
const rnd = mulberry32(12)
const bodies = []
for (let b = 0; b < BODIES; b++) {
  const recipients = []
  for (let j = 0; j < perRequest; j++) {
    const i = rnd() < present ? Math.floor(rnd() * keys) : keys + Math.floor(rnd() * keys) // absent: past the table's keys
    recipients.push(j % 10 === 0 ? '0' + phone(i).slice(3) : phone(i)) // a tenth typed the national way
  }
  bodies.push(Buffer.from(JSON.stringify(perRequest === 1 ? { brandCode: 600001, type: 'MESAJ', recipient: recipients[0] } : { brandCode: 600001, type: 'MESAJ', recipients })))
}
const parsed = bodies.map(b => JSON.parse(b.toString('utf8')))
const queries = parsed.map(parseCheckRequest)
const results = queries.map(q => checker.check(q))
if (results.some(r => r instanceof Promise)) throw new Error('the replica did not answer every key')

const iterations = Math.max(200, Math.round(2_000_000 / perRequest))
function time (label, f) {
  for (let k = 0; k < iterations / 10; k++) f(k)
  const t0 = process.hrtime.bigint()
  for (let k = 0; k < iterations; k++) f(k)
  const ms = Number(process.hrtime.bigint() - t0) / 1e6 / iterations
  console.log(`${label.padEnd(26)} ${ms.toFixed(4)} ms per request (${(ms * 1e6 / perRequest).toFixed(0)} ns per recipient)`)
}

console.log(`${keys.toLocaleString('en')} keys in the replica, ${perRequest} recipients per request, ${Math.round(present * 100)} % present`)
for (let r = 0; r < rounds; r++) {
  time('JSON.parse of the body', k => JSON.parse(bodies[k % BODIES].toString('utf8')))
  time('parseCheckRequest', k => parseCheckRequest(parsed[k % BODIES]))
  time('checker.check (replica)', k => checker.check(queries[k % BODIES]))
  time('serializeResults', k => serializeResults(results[k % BODIES]))
  time('all four', k => serializeResults(checker.check(parseCheckRequest(JSON.parse(bodies[k % BODIES].toString('utf8'))))))
  console.log('')
}
