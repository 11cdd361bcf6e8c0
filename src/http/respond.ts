// Small helpers over uWS responses: status lines and headers are built once; every write is corked (one syscall).

import type { HttpResponse } from 'uWebSockets.js'
import type { GatewayError } from '../domain/errors.js'
import { BYTES } from './uws.js'

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK', 202: '202 Accepted', 204: '204 No Content', 400: '400 Bad Request', 401: '401 Unauthorized', 403: '403 Forbidden', 404: '404 Not Found',
  405: '405 Method Not Allowed', 409: '409 Conflict', 413: '413 Payload Too Large', 415: '415 Unsupported Media Type',
  422: '422 Unprocessable Entity', 429: '429 Too Many Requests', 500: '500 Internal Server Error',
  503: '503 Service Unavailable', 507: '507 Insufficient Storage'
}

export const statusLine = (status: number): string => STATUS_TEXT[status] ?? `${status} Status`

export const JSON_TYPE = 'application/json; charset=utf-8'
const JSON_TYPE_BYTES = Buffer.from(JSON_TYPE)
/** The status lines as bytes (see BYTES in uws.ts), by code. */
const STATUS_BYTES: Uint8Array[] = []
for (const [code, text] of Object.entries(STATUS_TEXT)) STATUS_BYTES[Number(code)] = Buffer.from(text)

/** A response the client may have hung up on: track abort once, check before writing. */
export interface Exchange {
  res: HttpResponse
  aborted: boolean
  startedAt: number
  /** answered (or abandoned): counted out of the router's in-flight requests */
  done: boolean
}

export function send (ex: Exchange, status: number, body: string | Uint8Array, contentType = JSON_TYPE, close = false, retryAfterS?: number): void {
  // A response is invalid once ended or aborted, and touching it then throws inside uWS: answer at most once.
  if (ex.aborted || ex.done) return
  ex.res.cork(() => {
    ex.res.writeStatus(STATUS_BYTES[status] ?? statusLine(status)).writeHeader(BYTES.ContentType, contentType === JSON_TYPE ? JSON_TYPE_BYTES : contentType)
    if (retryAfterS !== undefined) ex.res.writeHeader('Retry-After', String(retryAfterS))
    // end(…, true) writes `Connection: close` itself and closes once the answer is out; the header alone does not.
    // A 204 carries no body and, unlike end(''), no Content-Length (RFC 9110 §8.6).
    if (status === 204) ex.res.endWithoutBody(undefined, close)
    else ex.res.end(body, close)
  })
}

export function sendError (ex: Exchange, err: GatewayError, close = false): void {
  let body: string
  try {
    body = JSON.stringify(err.toBody())
  } catch {
    // A value that does not serialise (the router bounds JSON depth, so this is a handler's bug): drop the values.
    body = JSON.stringify({ errors: err.items.map(({ code, message, location }) => ({ code, message, location })) })
  }
  send(ex, err.status, body, JSON_TYPE, close, err.retryAfterS)
}
