// Small helpers over uWS responses: status lines and headers are built once; every write is corked (one syscall).

import type { HttpResponse } from 'uWebSockets.js'
import type { GatewayError } from '../domain/errors.js'

const STATUS_TEXT: Record<number, string> = {
  200: '200 OK', 202: '202 Accepted', 400: '400 Bad Request', 401: '401 Unauthorized', 404: '404 Not Found',
  405: '405 Method Not Allowed', 409: '409 Conflict', 413: '413 Payload Too Large', 415: '415 Unsupported Media Type',
  422: '422 Unprocessable Entity', 500: '500 Internal Server Error', 503: '503 Service Unavailable'
}

export const statusLine = (status: number): string => STATUS_TEXT[status] ?? `${status} Status`

export const JSON_TYPE = 'application/json; charset=utf-8'

/** A response the client may have hung up on: track abort once, check before writing. */
export interface Exchange {
  res: HttpResponse
  aborted: boolean
  startedAt: number
  /** answered (or abandoned): counted out of the router's in-flight requests */
  done: boolean
}

export function send (ex: Exchange, status: number, body: string, contentType = JSON_TYPE, close = false): void {
  if (ex.aborted) return
  ex.res.cork(() => {
    ex.res.writeStatus(statusLine(status)).writeHeader('Content-Type', contentType)
    if (close) ex.res.writeHeader('Connection', 'close')
    ex.res.end(body)
  })
}

export function sendError (ex: Exchange, err: GatewayError, close = false): void {
  send(ex, err.status, JSON.stringify(err.toBody()), JSON_TYPE, close)
}
