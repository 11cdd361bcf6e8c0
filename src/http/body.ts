// Reads a request body under a size limit. uWS hands out chunks that are only valid inside the callback, so they
// are copied; with a Content-Length the whole body is copied once into one buffer of the right size.

import type { HttpRequest } from 'uWebSockets.js'
import { GatewayError } from '../domain/errors.js'
import type { Exchange } from './respond.js'

export function readBody (ex: Exchange, req: HttpRequest, limit: number, done: (err: GatewayError | null, body: Buffer | null) => void): void {
  const lengthHeader = req.getHeader('content-length')
  const declared = lengthHeader === '' ? -1 : Number(lengthHeader)
  if (declared > limit) {
    done(new GatewayError('BODY_TOO_LARGE', { message: `Request body of ${declared} bytes is over the limit of ${limit} bytes.` }), null)
    return
  }
  let buf: Buffer | null = declared > 0 ? Buffer.allocUnsafe(declared) : null
  let chunks: Buffer[] | null = declared > 0 ? null : []
  let size = 0
  let finished = false
  ex.res.onData((ab, isLast) => {
    if (finished) return
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
  })
}
