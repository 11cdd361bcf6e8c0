// uWebSockets.js comes from an unofficial npm build (see README). When its native binding does not load, the
// package silently falls back to a slow pure-JS server. We detect that by loading the binding ourselves and
// comparing: the result is reported loudly at start-up, in /readyz and as the iys_uws_native metric.

import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import uWS from 'uWebSockets.js'

const require = createRequire(import.meta.url)

function detectNative (): boolean {
  try {
    const dir = dirname(require.resolve('uWebSockets.js/package.json'))
    const binary = join(dir, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`)
    return require(binary) === (uWS as unknown)
  } catch {
    return false
  }
}

export const uwsNative = detectNative()
export { uWS }

/**
 * What the request path hands uWS on every request, encoded once: uWS turns a JS string argument into UTF-8 on each
 * call (Utf8Length and WriteUtf8 were 1.5 % of a single check's samples in perf) and takes bytes as they are. The
 * pure-JS fallback reads these as text (toString), so both take them.
 */
export const BYTES = {
  contentLength: Buffer.from('content-length'),
  contentType: Buffer.from('content-type'),
  authorization: Buffer.from('authorization'),
  ContentType: Buffer.from('Content-Type')
} as const
