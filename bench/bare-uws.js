// The baseline for the HTTP scenarios: the least a uWebSockets.js server can do for POST /v1/check — read the body,
// JSON.parse it, answer a constant JSON. Whatever the gateway costs above this is its own work (validation,
// normalisation, bloom, Redis, serialisation). Run by bench/check.js as `PORT=n node bench/bare-uws.js`.

import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import uWS from 'uWebSockets.js'

// Same check as src/http/uws.ts: the package silently falls back to a slow pure-JS server when its native binding
// does not load, and a baseline on that fallback would flatter the gateway.
const require = createRequire(import.meta.url)
let native = false
try {
  const dir = dirname(require.resolve('uWebSockets.js/package.json'))
  native = require(join(dir, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`)) === uWS
} catch {}

const port = Number(process.env.PORT)
const ANSWER = '{"results":[{"recipient":"+905321234567","normalized":"+905321234567","allowed":true,"reason":"CONSENT"}]}'
const BAD = '{"errors":[{"code":"H014","message":"malformed JSON"}]}'
const JSON_TYPE = 'application/json; charset=utf-8'

uWS.App()
  .post('/v1/check', (res) => {
    let aborted = false
    res.onAborted(() => { aborted = true })
    const chunks = []
    res.onData((ab, isLast) => {
      chunks.push(Buffer.from(new Uint8Array(ab))) // the ArrayBuffer is only valid inside this callback: copy
      if (!isLast) return
      let ok = true
      try { JSON.parse((chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)).toString('utf8')) } catch { ok = false }
      if (aborted) return
      res.cork(() => {
        res.writeStatus(ok ? '200 OK' : '400 Bad Request').writeHeader('Content-Type', JSON_TYPE).end(ok ? ANSWER : BAD)
      })
    })
  })
  .get('/readyz', (res) => {
    res.cork(() => { res.writeHeader('Content-Type', JSON_TYPE).end(JSON.stringify({ ready: true, uws: native ? 'native' : 'fallback' })) })
  })
  .listen('127.0.0.1', port, (token) => {
    if (token === false) {
      process.stderr.write(`bare-uws: cannot listen on 127.0.0.1:${port}\n`)
      process.exit(1)
    }
  })

process.once('SIGTERM', () => process.exit(0))
process.once('SIGINT', () => process.exit(0))
