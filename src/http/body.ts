// Reads a request body under a size limit. uWS hands out chunks that are only valid inside the callback, so they
// are copied; with a Content-Length the whole body is copied once into one buffer of the right size.

import type { HttpRequest } from 'uWebSockets.js'
import { GatewayError } from '../domain/errors.js'
import type { Exchange } from './respond.js'
import { BYTES } from './uws.js'

/**
 * How deeply a JSON body may nest arrays and objects. Every payload the gateway takes is at most 3 levels deep
 * ({"list":[{...}]}); the bound exists because JSON.stringify, Postgres jsonb and any recursive walk over a parsed
 * value fail (a RangeError, or worse, a stack overflow) on structures thousands of levels deep, and the gateway
 * echoes and logs parts of what it was sent.
 */
export const MAX_JSON_DEPTH = 32

/** Content-Length is 1*DIGIT (RFC 9110 §8.6): no sign, no spaces inside, no hex, no exponent. */
export const PLAIN_LENGTH = /^\d+$/

export function readBody (ex: Exchange, req: HttpRequest, limit: number, done: (err: GatewayError | null, body: Buffer | null) => void): void {
  const lengthHeader = req.getHeader(BYTES.contentLength)
  // The router has already refused a Content-Length that is not one plain integer (and uWS drops most such
  // requests before they reach JS); this keeps a bad value from ever reaching Buffer.allocUnsafe.
  const declared = PLAIN_LENGTH.test(lengthHeader) ? Number(lengthHeader) : -1
  if (declared > limit) {
    done(new GatewayError('BODY_TOO_LARGE', { message: `Request body of ${declared} bytes is over the limit of ${limit} bytes.` }), null)
    return
  }
  let buf: Buffer | null = declared > 0 ? Buffer.allocUnsafe(declared) : null
  let chunks: Buffer[] | null = declared > 0 ? null : []
  let size = 0
  let finished = false
  // A throw inside a uWS callback ends the process: whatever goes wrong here is handed to `done` as an error.
  ex.res.onData((ab, isLast) => {
    if (finished) return
    try {
      const chunk = new Uint8Array(ab)
      if (size + chunk.byteLength > limit || (buf !== null && size + chunk.byteLength > buf.length)) {
        finished = true
        done(new GatewayError('BODY_TOO_LARGE', { message: `Request body is over the limit of ${limit} bytes.` }), null)
        return
      }
      if (buf !== null) buf.set(chunk, size)
      else chunks!.push(Buffer.from(chunk)) // Buffer.from copies an ArrayBufferView's bytes
      size += chunk.byteLength
      if (!isLast) return
      finished = true
      const body = buf !== null ? buf.subarray(0, size) : Buffer.concat(chunks!, size)
      buf = null; chunks = null
      done(null, body)
    } catch (err) {
      if (ex.done) return // `done` itself failed after answering: nothing left to answer
      finished = true
      done(new GatewayError('H015', { cause: err }), null)
    }
  })
}

/**
 * True when `buf` (JSON text) nests arrays/objects deeper than `max`. Bodies with at most `max` opening brackets
 * in all (every check and single-consent body) are cleared by two native byte searches; only the others are
 * scanned, once, without allocating. The scan follows JSON's string syntax, so brackets inside strings do not
 * count; for text that is not JSON its answer does not matter, JSON.parse refuses that text next.
 */
export function jsonNestingExceeds (buf: Buffer, max: number = MAX_JSON_DEPTH): boolean {
  if (countUpTo(buf, 0x5b /* [ */, max) + countUpTo(buf, 0x7b /* { */, max) <= max) return false
  let depth = 0
  let inString = false
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i]!
    if (inString) {
      if (c === 0x5c /* \ */) i++ // the escaped character cannot end the string
      else if (c === 0x22 /* " */) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true
    } else if (c === 0x5d || c === 0x7d) depth--
  }
  return false
}

/** How often `byte` occurs in `buf`, counting no further than `max + 1`. */
function countUpTo (buf: Buffer, byte: number, max: number): number {
  let n = 0
  for (let i = buf.indexOf(byte); i !== -1 && n <= max; i = buf.indexOf(byte, i + 1)) n++
  return n
}
