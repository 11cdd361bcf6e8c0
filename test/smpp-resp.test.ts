// The submit_sm_resp the front end encodes by hand (src/smpp/resp.ts) is byte for byte node-smpp's.

import { PDU } from 'smpp'
import { describe, expect, it } from 'vitest'
import { SubmitSmResp } from '../src/smpp/resp.js'

const request = (seq: number): PDU => {
  const p = new PDU('submit_sm', { source_addr: 'ACME', destination_addr: '905321110001', short_message: 'Kampanya' })
  p.sequence_number = seq
  return new PDU(p.toBuffer())
}

describe('submit_sm_resp by hand', () => {
  it('is byte for byte what node-smpp encodes, accepted (with the message id) or refused (no body)', () => {
    const cases: [number, number, string][] = [
      [1, 0, 'op-1'], [0x7fffffff, 0, '9f8a2c4e-1b2d-4c5e-8f90-123456789abc'], [42, 0, ''],
      [7, 0x66, 'ignored'], [8, 0x58, ''], [9, 0x14, 'x'], [10, 0xfe, '']
    ]
    for (const [seq, status, id] of cases) {
      const req = request(seq)
      const theirs = req.response(status === 0 ? { message_id: id } : { command_status: status }).toBuffer()
      const ours = new SubmitSmResp(seq, status, id).toBuffer()
      expect(ours.toString('hex'), `seq ${seq} status ${status}`).toBe(theirs.toString('hex'))
      const decoded = new PDU(ours)
      expect(decoded.command).toBe('submit_sm_resp')
      expect(decoded.sequence_number).toBe(seq)
      expect(decoded.command_status).toBe(status)
      if (status === 0) expect(decoded.message_id).toBe(id)
    }
  })

  it('is a PDU the session can send, with the fields a node-smpp response has', () => {
    const r = new SubmitSmResp(5, 0, 'abc')
    expect(r).toBeInstanceOf(PDU)
    expect(r.command).toBe('submit_sm_resp')
    expect(r.isResponse()).toBe(true)
    expect(r.message_id).toBe('abc')
  })
})
