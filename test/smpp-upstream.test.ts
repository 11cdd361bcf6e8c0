// The SMPP carrier against a real (fake) operator SMSC on a free port: what reaches the operator, byte for byte, and
// outcomes that never claim more than we know. Every wait is on a condition, never a fixed sleep.

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { PDU } from 'smpp'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { BreakerSettings } from '../src/carriers/circuit-breaker.js'
import type { OutboundMessage } from '../src/carriers/contract.js'
import { encodeText, parseSmppUrl, SmppUpstream, statusText, type SmppUpstreamInit } from '../src/carriers/smpp-upstream.js'
import { Upstreams } from '../src/carriers/upstream.js'
import { startFakeSmsc, type FakeSmsc, type FakeSmscOptions } from '../src/dev/fake-smsc.js'
import { mesaj } from './helpers/carrier.js'
import { selfSignedCert } from './helpers/tls.js'
import { until } from './helpers/redis-server.js'

const BREAKER: BreakerSettings = { failureRatio: 0.5, minCalls: 1_000_000, windowMs: 10_000, cooldownMs: 1000 }
const SETTINGS = { timeoutMs: 2000, retries: 2, backoffMs: 5, backoffMaxMs: 40, breaker: BREAKER }

const open: Array<{ close: () => Promise<void> }> = []

afterEach(async () => {
  // Carriers first (they unbind), then the SMSCs.
  for (const o of open.splice(0).reverse()) await o.close()
})

async function smsc (opts: FakeSmscOptions = {}): Promise<FakeSmsc> {
  const s = await startFakeSmsc(opts)
  open.unshift(s)
  return s
}

function carrier (url: string, more: Partial<SmppUpstreamInit> = {}): SmppUpstream {
  const c = new SmppUpstream({ ...SETTINGS, url, name: 'MESAJ', ...more })
  open.push({ close: () => c.destroy() })
  return c
}


async function bound (c: SmppUpstream, n = 1): Promise<SmppUpstream> {
  await until(() => c.bound() === n, 15_000, `${n} bound session(s)`)
  return c
}

function logLines (): { log: pino.Logger, lines: string[] } {
  const lines: string[] = []
  const log = pino({ level: 'debug' }, new Writable({ write (chunk, _e, cb) { lines.push(String(chunk)); cb() } }))
  return { log, lines }
}

const text = (msg: OutboundMessage): string => (msg.payload as { text: string }).text
const digits = (msg: OutboundMessage): string => msg.recipient.slice(1)

describe('SMPP carrier: what reaches the operator', () => {
  it('sends a message and reports the operator\'s message_id as the carrier id', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    const o = await c.send(mesaj())
    const [rec] = s.submits()
    expect(o).toEqual({ forwarded: true, status: 'accepted', carrierId: rec!.messageId, attempts: 1 })
    expect(rec!.messageId).toMatch(/^[0-9a-f]{10}$/)
    expect(c.inFlight()).toBe(0)
  })

  it('passes a provider\'s submit_sm on byte for byte, under a sequence number of its own', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    const provider = new PDU('submit_sm', {
      sequence_number: 4242,
      source_addr_ton: 5,
      source_addr: 'ACME',
      dest_addr_ton: 2,
      dest_addr_npi: 1,
      destination_addr: '05321234567',
      registered_delivery: 1,
      data_coding: 8,
      short_message: encodeText('Merhaba dünya, şimdi İndirim!').bytes,
      user_message_reference: 7
    }).toBuffer()
    const msg = mesaj()
    const o = await c.send({ ...msg, payload: { sender: 'IGNORED', text: '', smppPdu: provider } } as OutboundMessage)
    expect(o).toMatchObject({ forwarded: true, status: 'accepted' })
    const [rec] = s.submits()
    expect(rec!.raw.length).toBe(provider.length)
    expect(rec!.raw.subarray(0, 12).equals(provider.subarray(0, 12))).toBe(true)
    expect(rec!.raw.subarray(16).equals(provider.subarray(16))).toBe(true)
    expect(rec!.raw.readUInt32BE(12)).not.toBe(4242)
    expect(rec!.pdu.destination_addr).toBe('05321234567') // the provider's own, not rebuilt from the recipient
  })

  it('refuses a provider PDU that is not one whole submit_sm, without sending anything', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    const notSubmit = new PDU('enquire_link', {}).toBuffer()
    const o = await c.send({ ...mesaj(), payload: { sender: 'X', text: '', smppPdu: notSubmit } } as OutboundMessage)
    expect(o).toMatchObject({ forwarded: false, status: 'failed', attempts: 0, maybeDelivered: false })
    expect(s.stats().submits).toBe(0)
  })

  it('builds a submit_sm from sender and text: GSM 03.38 for Latin text, alphanumeric sender, receipt requested', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    const msg = mesaj({ text: 'Hello @ world {x} €5 _ok_' })
    expect(await c.send(msg)).toMatchObject({ forwarded: true })
    const { pdu } = s.submits()[0]!
    expect(pdu).toMatchObject({
      source_addr_ton: 5, source_addr_npi: 0, source_addr: 'ACME',
      dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: digits(msg),
      esm_class: 0, registered_delivery: 1, data_coding: 0
    })
    expect(pdu.short_message.message).toBe(text(msg))
  })

  it('sends Turkish text as UCS2, and a numeric sender as an international number', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    const msg = { ...mesaj(), payload: { sender: '+908501234567', text: 'Şükrü, Iğdır\'da İndirim: çok güzel ığ' } } as OutboundMessage
    expect(await c.send(msg)).toMatchObject({ forwarded: true })
    const { pdu } = s.submits()[0]!
    expect(pdu).toMatchObject({ source_addr_ton: 1, source_addr_npi: 1, source_addr: '908501234567', data_coding: 8 })
    expect(pdu.short_message.message).toBe(text(msg))
  })

  it('sends a long text as concatenated parts with one UDH reference, and reports every part\'s id', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    const msg = mesaj({ text: 'A'.repeat(150) + '{' + 'B'.repeat(60) }) // 212 septets: '{' is an escape pair
    const o = await c.send(msg)
    const recs = s.submits()
    expect(recs).toHaveLength(2)
    expect(o).toEqual({ forwarded: true, status: 'accepted', carrierId: recs[0]!.messageId, carrierIds: recs.map(r => r.messageId), attempts: 2 })
    const udhs = recs.map(r => r.pdu.short_message.udh[0] as Buffer)
    expect(udhs[0]!.subarray(0, 2)).toEqual(Buffer.from([0x00, 0x03]))
    expect(udhs[0]![2]).toBe(udhs[1]![2]) // one reference
    expect(udhs.map(u => [u[3], u[4]])).toEqual([[2, 1], [2, 2]])
    for (const r of recs) expect(r.pdu.esm_class & 0x40).toBe(0x40)
    expect(recs.map(r => r.pdu.short_message.message as string).join('')).toBe(text(msg))
  })

  it('cuts UCS2 parts at 67 units without splitting a surrogate pair', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    const msg = mesaj({ text: 'şş' + '😀'.repeat(50) }) // the 67th unit is the first half of an emoji
    expect(await c.send(msg)).toMatchObject({ forwarded: true, attempts: 2 })
    const parts = s.submits().map(r => r.pdu.short_message.message as string)
    expect(parts.map(p => p.length)).toEqual([66, 36])
    expect(parts.join('')).toBe(text(msg))
    expect(parts.join('')).not.toContain('\ufffd')
  })

  it('sends a long text as one message_payload with long=payload', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url('long=payload')))
    const msg = mesaj({ text: 'Uzun mesaj ş '.repeat(30) })
    expect(await c.send(msg)).toMatchObject({ forwarded: true, attempts: 1 })
    const { pdu } = s.submits()[0]!
    expect(pdu.short_message.message.length).toBe(0)
    expect(pdu.message_payload.message).toBe(text(msg))
    expect(pdu.data_coding).toBe(8)
  })

  it('refuses a sender or recipient SMPP cannot carry, without sending anything', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    expect(await c.send({ ...mesaj(), payload: { sender: 'ŞİRKET', text: 'x' } } as OutboundMessage)).toMatchObject({ status: 'failed', attempts: 0, maybeDelivered: false })
    expect(await c.send({ ...mesaj(), payload: { sender: 'A-VERY-LONG-SENDER', text: 'x' } } as OutboundMessage)).toMatchObject({ status: 'failed', attempts: 0 })
    expect(await c.send(mesaj({ recipient: 'user@example.com' }))).toMatchObject({ status: 'failed', attempts: 0 })
    expect(s.stats().submits).toBe(0)
  })
})

describe('SMPP carrier: the operator\'s answers', () => {
  it('ESME_RTHROTTLED then ESME_RMSGQFUL: pauses, retries the same message, and the operator takes it once', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    s.answerNext(1, 0x58)
    s.answerNext(1, 0x14)
    const o = await c.send(mesaj())
    const recs = s.submits()
    expect(recs.map(r => r.status)).toEqual([0x58, 0x14, 0])
    expect(o).toEqual({ forwarded: true, status: 'accepted', carrierId: recs[2]!.messageId, attempts: 3 })
    expect(s.stats().accepted).toBe(1)
  })

  it('throttled beyond the retries: failed, not delivered, naming the status', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url(), { retries: 1 }))
    s.answerNext(2, 0x58)
    const o = await c.send(mesaj())
    expect(o).toMatchObject({ forwarded: false, status: 'failed', attempts: 2, maybeDelivered: false, smppStatus: 0x58 })
    expect((o as { error: string }).error).toContain('ESME_RTHROTTLED (0x58)')
    expect(s.stats().accepted).toBe(0)
  })

  it('retries a temporary fault (ESME_RSYSERR, ESME_RX_T_APPN)', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    s.answerNext(1, 0x08)
    s.answerNext(1, 0x64)
    expect(await c.send(mesaj())).toMatchObject({ forwarded: true, attempts: 3 })
    expect(s.submits().map(r => r.status)).toEqual([0x08, 0x64, 0])
  })

  it('a permanent error is final: rejected, naming the status, sent once', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url()))
    s.answerNext(1, 0x0b)
    const o = await c.send(mesaj())
    expect(o).toEqual({ forwarded: false, status: 'rejected', error: 'the operator refused it: ESME_RINVDSTADR (0x0b)', attempts: 1, maybeDelivered: false, smppStatus: 0x0b })
    expect(s.stats().submits).toBe(1)
    expect(c.breaker.state).toBe('closed')
  })

  it('no answer: timeout, maybe delivered, and never sent again', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url(), { timeoutMs: 300, retries: 3 }))
    s.setSilent(true)
    const o = await c.send(mesaj())
    expect(o).toEqual({ forwarded: false, status: 'timeout', error: 'no submit_sm_resp within 300 ms', attempts: 1, maybeDelivered: true })
    s.setSilent(false)
    expect(await c.send(mesaj())).toMatchObject({ forwarded: true })
    // The second message's answer came after the first message's outcome: had it been resent, it would be here.
    expect(s.stats().submits).toBe(2)
  })

  it('the session dropping after the submit went out: unknown, maybe delivered', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url('reconnect_ms=20')))
    s.setSilent(true)
    const pending = c.send(mesaj())
    await until(() => s.stats().submits === 1, 15_000, 'the submit at the SMSC')
    await s.stop()
    expect(await pending).toEqual({ forwarded: false, status: 'unknown', error: 'the SMPP session closed before the operator answered', attempts: 1, maybeDelivered: true })
    expect(s.stats().submits).toBe(1)
  })

  it('operator down: failed and never sent, then the breaker opens; operator back: binds again and sends', async () => {
    const s = await smsc()
    const changes: string[] = []
    const c = await bound(carrier(s.url('binds=2&reconnect_ms=20&reconnect_max_ms=50'), {
      timeoutMs: 200, retries: 0, breaker: { ...BREAKER, minCalls: 2, cooldownMs: 300 }, onBreakerChange: (n, f, t) => changes.push(`${n}:${f}>${t}`)
    }), 2)
    await s.stop()
    await until(() => c.bound() === 0, 15_000, 'the binds to drop')
    for (let i = 0; i < 2; i++) {
      const o = await c.send(mesaj())
      expect(o).toMatchObject({ forwarded: false, status: 'failed', attempts: 1, maybeDelivered: false })
      expect((o as { error: string }).error).toBe('no SMPP bind could take it within 200 ms (0 of 2 bound)')
    }
    expect(c.breaker.state).toBe('open')
    expect(await c.send(mesaj())).toMatchObject({ forwarded: false, status: 'circuit_open', attempts: 0, maybeDelivered: false })
    await s.start()
    await bound(c, 2)
    await until(() => !c.breaker.refusing(), 15_000, 'the cool-down')
    expect(await c.send(mesaj())).toMatchObject({ forwarded: true, status: 'accepted' })
    expect(c.breaker.state).toBe('closed')
    expect(changes).toEqual(['MESAJ:closed>open', 'MESAJ:open>half_open', 'MESAJ:half_open>closed'])
    expect(s.stats().submits).toBe(1)
  })

  it('a bind refused for a wrong password is retried with doubling back-off and logged by status, never with the password', async () => {
    const s = await smsc({ password: 'secret' })
    const { log, lines } = logLines()
    const c = carrier(s.url('reconnect_ms=20&reconnect_max_ms=1000', undefined, 'wr0ng-pw'), { log, random: () => 1 })
    await until(() => s.stats().bindsRefused >= 4, 15_000, 'four refused binds')
    expect(c.bound()).toBe(0)
    expect(s.binds().slice(0, 4).map(b => [b.type, b.systemId, b.status])).toEqual(Array(4).fill(['transceiver', 'smsc-test', 0x0e]))
    const refusals = lines.map(l => JSON.parse(l) as Record<string, unknown>).filter(l => l.msg === 'the operator refused the SMPP bind')
    expect(refusals.slice(0, 3).map(l => [l.status, l.retryInMs, l.systemId])).toEqual([
      ['ESME_RINVPASWD (0x0e)', 20, 'smsc-test'], ['ESME_RINVPASWD (0x0e)', 40, 'smsc-test'], ['ESME_RINVPASWD (0x0e)', 80, 'smsc-test']
    ])
    expect(lines.join('\n')).not.toContain('wr0ng-pw')
  })

  it('binds with URL-encoded credentials', async () => {
    const s = await smsc({ systemId: 'acme@tr', password: 'p:w@%d/' })
    const c = await bound(carrier(s.url()))
    expect(await c.send(mesaj())).toMatchObject({ forwarded: true })
  })

  it('the window bounds the submits in flight: at most window × binds unanswered at once', async () => {
    const s = await smsc({ delayMs: 100 })
    const c = await bound(carrier(s.url('binds=2&window=3'), { timeoutMs: 10_000 }), 2)
    let most = 0
    const outcomes = Promise.all(Array.from({ length: 30 }, () => c.send(mesaj())).map(p => p.then(o => { most = Math.max(most, c.inFlight()); return o })))
    await until(() => { most = Math.max(most, c.inFlight()); return s.stats().accepted === 30 }, 15_000, 'all answers')
    for (const o of await outcomes) expect(o).toMatchObject({ forwarded: true, attempts: 1 })
    expect(s.stats().maxUnanswered).toBe(6)
    expect(most).toBeLessThanOrEqual(6)
    expect(new Set(s.submits().map(r => r.session)).size).toBe(2)
  })

  it('keeps to the operator\'s rate across the pool', async () => {
    const s = await smsc()
    const c = await bound(carrier(s.url('binds=2&rate=50'), { timeoutMs: 10_000 }), 2)
    await Promise.all(Array.from({ length: 6 }, () => c.send(mesaj())))
    const at = s.submits().map(r => r.at)
    // 50/s is one every 20 ms: six submits span at least five intervals (less a little clock granularity).
    expect(at[5]! - at[0]!).toBeGreaterThanOrEqual(95)
  })

  it('close() waits for the answers in flight, then unbinds', async () => {
    const s = await smsc({ delayMs: 100 })
    const c = await bound(carrier(s.url('binds=2')), 2)
    const pending = c.send(mesaj())
    await until(() => s.stats().submits === 1, 15_000, 'the submit at the SMSC')
    await c.close()
    expect(await pending).toMatchObject({ forwarded: true })
    await until(() => s.stats().bound === 0, 15_000, 'the unbinds')
    expect(await c.send(mesaj())).toMatchObject({ forwarded: false, status: 'failed', attempts: 0, maybeDelivered: false })
  })
})

describe('SMPP carrier: receipts and MO messages', () => {
  it('delivers receipts and MO messages to onDeliver and answers 0; a failing onDeliver gets ESME_RX_T_APPN', async () => {
    const s = await smsc()
    const got: PDU[] = []
    let fail: 'no' | 'throw' | 'reject' = 'no'
    const c = await bound(carrier(s.url(), {
      onDeliver: (pdu) => {
        if (fail === 'throw') throw new Error('store down')
        if (fail === 'reject') return Promise.reject(new Error('store down'))
        got.push(pdu)
        return Promise.resolve()
      }
    }))
    const msg = mesaj()
    const o = await c.send(msg)
    if (!o.forwarded) throw new Error('not forwarded')
    expect(await s.deliverReceipt(o.carrierId)).toBe(0)
    const dlr = got[0]!
    expect(dlr).toMatchObject({ command: 'deliver_sm', esm_class: 0x04, receipted_message_id: o.carrierId, message_state: 2, source_addr: digits(msg), destination_addr: 'ACME' })
    expect(dlr.short_message.message).toMatch(new RegExp(`^id:${o.carrierId} sub:001 dlvrd:001 submit date:\\d{10} done date:\\d{10} stat:DELIVRD err:000 text:$`))
    expect(await s.deliverReceipt(o.carrierId, 'UNDELIV')).toBe(0)
    expect(got[1]).toMatchObject({ message_state: 5 })
    expect(await s.deliverMo('+905321112233', '3338', 'RET ACME')).toBe(0)
    expect(got[2]).toMatchObject({ esm_class: 0, source_addr: '905321112233', source_addr_ton: 1, destination_addr: '3338' })
    expect(got[2]!.short_message.message).toBe('RET ACME')
    expect(await s.deliverMo('+905321112233', '3338', 'İPTAL')).toBe(0)
    expect(got[3]!.short_message.message).toBe('İPTAL')
    fail = 'throw'
    expect(await s.deliverMo('+905321112233', '3338', 'RET')).toBe(0x64)
    fail = 'reject'
    expect(await s.deliverReceipt(o.carrierId)).toBe(0x64)
    expect(got).toHaveLength(4)
  })

  it('answers deliver_sm with 0 when nobody listens', async () => {
    const s = await smsc()
    await bound(carrier(s.url()))
    expect(await s.deliverMo('+905321112233', '3338', 'hello')).toBe(0)
  })
})

describe('SMPP carrier URL', () => {
  it('has defaults for every parameter', () => {
    expect(parseSmppUrl('smpp://id:pw@smsc.example')).toEqual({
      tls: false, host: 'smsc.example', port: 2775, systemId: 'id', password: 'pw', systemType: '', binds: 1, window: 10, rate: 0,
      enquireMs: 30_000, reconnectMs: 1000, reconnectMaxMs: 60_000, rejectUnauthorized: true, long: 'udh'
    })
    expect(parseSmppUrl('smpps://id:pw@[::1]?reject_unauthorized=false&binds=4&window=64&rate=500&system_type=VMA&enquire_ms=0')).toMatchObject({
      tls: true, host: '::1', port: 3550, binds: 4, window: 64, rate: 500, systemType: 'VMA', enquireMs: 0, rejectUnauthorized: false
    })
  })

  it('decodes the credentials', () => {
    expect(parseSmppUrl('smpp://acme%40tr:p%3Aw%40rd%25@h:1')).toMatchObject({ systemId: 'acme@tr', password: 'p:w@rd%' })
  })

  it.each([
    ['smpp://id:topsecret@h:1?windw=5&x=1', /unknown parameters windw, x \(known: binds, window, rate/],
    ['smpp://id:topsecret@h:1?window=0', /window must be an integer from 1 to 1000, got "0"/],
    ['smpp://id:topsecret@h:1?binds=65', /binds must be an integer from 1 to 64/],
    ['smpp://id:topsecret@h:1?rate=-1', /rate must be an integer from 0 \(off\) or 1 to 100000/],
    ['smpp://id:topsecret@h:1?rate=1.5', /rate must be an integer/],
    ['smpp://id:topsecret@h:1?enquire_ms=50', /enquire_ms must be an integer from 0 \(off\) or 100/],
    ['smpp://id:topsecret@h:1?reconnect_ms=500&reconnect_max_ms=100', /reconnect_max_ms must be an integer from 500/],
    ['smpp://id:topsecret@h:1?window=5&window=6', /window is given twice/],
    ['smpp://id:topsecret@h:1?reject_unauthorized=false', /reject_unauthorized is for smpps: only/],
    ['smpp://id:topsecret@h:1?long=sar', /long must be udh or payload/],
    ['smpp://id:topsecret@h:1/path', /no path/],
    ['smpp://id:topsecret@h:0', /port must be from 1 to 65535/],
    ['smpp://:topsecret@h:1', /system_id/],
    ['smpp://waytoolongsystemid:topsecret@h:1', /system_id/],
    ['http://id:topsecret@h:1', /must be smpp: or smpps:/]
  ])('refuses %s', (url, message) => {
    let err: Error | undefined
    try { parseSmppUrl(url) } catch (e) { err = e as Error }
    expect(err?.message).toMatch(message)
    expect(err?.message).not.toContain('topsecret')
  })
})

describe('Upstreams with an SMPP carrier', () => {
  it('builds an SmppUpstream for smpp:// on MESAJ and hands it onDeliver', async () => {
    const s = await smsc()
    const got: PDU[] = []
    const ups = new Upstreams({ MESAJ: s.url(), EPOSTA: null, ARAMA: null }, { ...SETTINGS, connections: 1, onDeliver: pdu => { got.push(pdu) } })
    open.push({ close: () => ups.close() })
    const c = ups.get('MESAJ')
    expect(c).toBeInstanceOf(SmppUpstream)
    await bound(c as SmppUpstream)
    const o = await ups.send(mesaj())
    expect(o).toMatchObject({ forwarded: true })
    expect(await s.deliverReceipt((o as { carrierId: string }).carrierId)).toBe(0)
    expect(got).toHaveLength(1)
    expect(ups.states()).toEqual({ MESAJ: 'closed' })
    await ups.close()
    await until(() => s.stats().bound === 0, 15_000, 'the unbind')
  })

  it('refuses SMPP for another channel, and a bad SMPP URL, naming the setting', () => {
    expect(() => new Upstreams({ MESAJ: null, EPOSTA: 'smpp://a:b@127.0.0.1:1', ARAMA: null }, { ...SETTINGS, connections: 1 })).toThrow('UPSTREAM_EPOSTA_URL: only MESAJ can go to an SMPP carrier')
    expect(() => new Upstreams({ MESAJ: 'smpp://a:b@127.0.0.1:1?binds=0', EPOSTA: null, ARAMA: null }, { ...SETTINGS, connections: 1 })).toThrow(/^UPSTREAM_MESAJ_URL: SMPP carrier URL: binds must be/)
  })

  it('names statuses as operators do', () => {
    expect(statusText(0x0b)).toBe('ESME_RINVDSTADR (0x0b)')
    expect(statusText(0x58)).toBe('ESME_RTHROTTLED (0x58)')
    expect(statusText(0x4321)).toBe('status 0x4321')
  })
})

describe('SMPP carrier over TLS', () => {
  let dir = ''
  let key: Buffer = Buffer.alloc(0)
  let cert: Buffer = Buffer.alloc(0)
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'smpps-'))
    ;({ key, cert } = selfSignedCert(dir))
  })
  afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

  it('binds over smpps:// to an SMSC whose CA it trusts, and refuses one it does not unless told to', async () => {
    const s = await smsc({ tls: { key, cert } })
    expect(s.url()).toMatch(/^smpps:/)
    const trusted = await bound(carrier(s.url(), { tls: { ca: cert } }))
    expect(await trusted.send(mesaj())).toMatchObject({ forwarded: true })
    const { log, lines } = logLines()
    const untrusted = carrier(s.url('reconnect_ms=20'), { log })
    await until(() => lines.some(l => l.includes('SMPP connection failed')), 15_000, 'a failed TLS connection')
    expect(untrusted.bound()).toBe(0)
    const insecure = await bound(carrier(s.url('reject_unauthorized=false')))
    expect(await insecure.send(mesaj())).toMatchObject({ forwarded: true })
  })
})

describe('the fake SMSC by hand', () => {
  it('runs from dist/ under Node\'s own ESM loader, takes binds and submits, prints its counters, and stops on SIGTERM', async () => {
    // dist/ is built by the tests' global set-up. Node's loader, unlike vitest's, finds only some names in CommonJS
    // modules such as smpp: this is the check that the built carrier and fake load at all.
    const script = fileURLToPath(new URL('../dist/src/dev/fake-smsc.js', import.meta.url))
    const child = spawn(process.execPath, [script, '--port', '0', '--system-id', 'byhand', '--password', 'pw-by-hand'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d })
    const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
    try {
      await until(() => /listening on smpp:\/\/byhand:…@127\.0\.0\.1:\d+/.test(out) || child.exitCode !== null, 15_000, 'the listening line')
      const port = Number(/127\.0\.0\.1:(\d+)/.exec(out)?.[1])
      const c = await bound(carrier(`smpp://byhand:pw-by-hand@127.0.0.1:${port}`))
      expect(await c.send(mesaj())).toMatchObject({ forwarded: true })
      await until(() => /bound=1 .*submits=1 accepted=1/.test(out), 15_000, 'a counters line')
      expect(out).not.toContain('pw-by-hand')
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
  })
})
