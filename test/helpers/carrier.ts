// Messages for upstream tests, and the checks that an upstream's reports match what a carrier really has.

import { expect } from 'vitest'
import type { FakeCarrierStats } from '../../src/dev/fake-carrier.js'
import type { OutboundMessage } from '../../src/carriers/contract.js'
import type { UpstreamOutcome } from '../../src/carriers/upstream.js'

let n = 0

/** A MESAJ message with a fresh messageId (unique across the test file) and a valid phone recipient. */
export function mesaj (more: Partial<Omit<OutboundMessage, 'type' | 'payload'>> & { text?: string } = {}): OutboundMessage {
  n++
  const { text, ...rest } = more
  return {
    messageId: `m-${process.pid}-${n}`,
    type: 'MESAJ',
    recipient: `+90532${String(1_000_000 + n).slice(-7)}`,
    iysCode: '700001',
    brandCode: '600001',
    payload: { sender: 'ACME', text: text ?? `message ${n}` },
    ...rest
  }
}

export function eposta (): OutboundMessage {
  n++
  return { messageId: `e-${process.pid}-${n}`, type: 'EPOSTA', recipient: `user${n}@example.com`, iysCode: '700001', brandCode: '600001', payload: { from: 'news@acme.example', subject: 'Hello', body: 'Body' } }
}

export function arama (): OutboundMessage {
  n++
  return { messageId: `a-${process.pid}-${n}`, type: 'ARAMA', recipient: `+90532${String(2_000_000 + n).slice(-7)}`, iysCode: '700001', brandCode: '600001', payload: { callerId: '+902120000000' } }
}

/**
 * The upstream never lied: every message reported forwarded is at the carrier under the reported id; every message
 * the carrier has was reported forwarded or "maybe delivered"; the carrier has no message twice.
 */
export function expectHonest (sent: readonly OutboundMessage[], outcomes: readonly UpstreamOutcome[], carrier: FakeCarrierStats): void {
  const atCarrier = new Map(carrier.accepted.map(a => [a.messageId, a]))
  expect(atCarrier.size).toBe(carrier.accepted.length)
  expect(carrier.sent).toBe(carrier.accepted.length)
  sent.forEach((msg, i) => {
    const o = outcomes[i]!
    const there = atCarrier.get(msg.messageId)
    if (o.forwarded) {
      expect(there, `${msg.messageId} reported forwarded`).toBeDefined()
      expect(there!.carrierId).toBe(o.carrierId)
      expect(there!.to).toBe(msg.recipient)
    } else if (there !== undefined) {
      expect(o.maybeDelivered, `${msg.messageId} is at the carrier but reported ${o.status} without maybeDelivered`).toBe(true)
    }
  })
}
