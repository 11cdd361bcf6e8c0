// The İYS push receiver: İYS posts consent changes here with basic auth; the body is stored before it is answered
// (store/push-inbox.ts), then applied.

import { timingSafeEqual } from 'node:crypto'
import { ERRORS, errorItem, GatewayError } from '../domain/errors.js'
import type { PushProcessor } from '../store/push-inbox.js'
import { json, type Router } from './router.js'

export interface PushRouteDeps {
  push: PushProcessor
  credentials: { user: string, password: string } | null
}

export function pushRoute (router: Router, deps: PushRouteDeps): void {
  // İYS push receiver
  router.post('/iys/push', 'push', async (body, req) => {
    if (deps.credentials === null) throw new GatewayError('NOT_CONFIGURED')
    if (!basicAuthMatches(req.headers.authorization ?? '', deps.credentials)) throw new GatewayError('UNAUTHORIZED')
    const list = (body as { list?: unknown } | null)?.list
    if (typeof body !== 'object' || body === null || !Array.isArray(list)) {
      throw new GatewayError('INVALID_PUSH', { items: [errorItem('INVALID_FIELD', 'list', undefined, ERRORS.INVALID_PUSH.message)] })
    }
    const id = await deps.push.store(body) // on the receiver's own pool; starts processing
    return json(200, { received: list.length, id })
  }, { headers: ['authorization'], auth: 'public' }) // İYS's own basic auth, not an API key
}

function basicAuthMatches (header: string, creds: { user: string, password: string }): boolean {
  if (!header.startsWith('Basic ')) return false
  const given = Buffer.from(header.slice(6), 'base64')
  const expected = Buffer.from(`${creds.user}:${creds.password}`)
  return given.length === expected.length && timingSafeEqual(given, expected)
}
