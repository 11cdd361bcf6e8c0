// One autocannon load-generator process (bench/lib.js starts several and sums them when wrk is not installed).
// argv[2]: JSON {url, connections, seconds, bodiesFile, headers}. Prints one JSON line with the totals.
//
// The bodies become autocannon's `requests` array: each connection cycles through pre-built requests, which is
// much cheaper per request than a setupRequest callback rebuilding the request every time.

import { readFileSync } from 'node:fs'
import autocannon from 'autocannon'

const { url, connections, seconds, bodiesFile, headers } = JSON.parse(process.argv[2])
const bodies = JSON.parse(readFileSync(bodiesFile, 'utf8'))
const u = new URL(url)
if (u.hostname !== '127.0.0.1') throw new Error('load is only ever sent to 127.0.0.1')

// Each worker starts at a different place in the set, so that workers do not send identical sequences.
const offset = (process.pid * 7919) % bodies.length
const rotated = bodies.slice(offset).concat(bodies.slice(0, offset))

const result = await autocannon({
  url: u.origin,
  connections,
  duration: seconds,
  timeout: 10,
  requests: rotated.map(body => ({ method: 'POST', path: u.pathname, headers: { 'content-type': 'application/json', ...headers }, body }))
})

process.stdout.write(JSON.stringify({
  requests: result.requests.total,
  seconds: result.duration,
  p50Ms: result.latency.p50,
  p99Ms: result.latency.p99,
  maxMs: result.latency.max,
  non2xx: result.non2xx,
  bytes: result.throughput.total,
  errors: result.errors + result.timeouts
}) + '\n')
