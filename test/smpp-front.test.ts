// The SMPP front end end to end (issue 13): providers' platforms (node-smpp's own client) bind to two gateways over
// real Postgres and Redis; the gateways bind to a fake operator SMSC (src/dev/fake-smsc.ts). Allowed messages reach
// the operator byte for byte with its message id answered, blocked ones get 0x66 and never reach it, parts of one
// concatenated message share one decision, receipts find the bind that sent the message (also after it reconnected
// to the other gateway), an MO "İptal" becomes a RET that blocks the next submit on the other gateway, and broken
// PDUs, throttling, bind limits and the operator going down and back are answered as SMPP says.

import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFakeSmsc, type FakeSmsc } from '../src/dev/fake-smsc.js'
import { formatIysDate } from '../src/domain/time.js'
import { runCli, runSteps, startServeProcess, type ServeProcess } from './helpers/cli.js'
import { bindEsme, type Esme } from './helpers/esme.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { freePort, until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'
import { selfSignedCert } from './helpers/tls.js'

const require = createRequire(import.meta.url)
const smpp = require('smpp')
// Our TLVs (src/smpp/tags.ts), so that node-smpp's client can send them.
smpp.addTLV('iys_brand_code', { id: 0x1420, type: smpp.types.tlv.cstring })
smpp.addTLV('iys_commercial', { id: 0x1421, type: smpp.types.tlv.int8 })

const ONAY = ['+905321110001', '+905321110002', '+905321110003', '+905321110004', '+905321110005']
const RET = '+905321110009'
const NO_RECORD = '+905321110077'
const BRAND = '600001'
const E = { OK: 0, RINVSRCADR: 0x0a, RINVDSTADR: 0x0b, RINVPASWD: 0x0e, RINVSYSID: 0x0f, RALYBND: 0x05, RTHROTTLED: 0x58, RX_T_APPN: 0x64, RX_R_APPN: 0x66, RINVCMDID: 0x03 }

/** A 3-part concatenated message's part `part` (UDH IEI 0x00, 8-bit reference `ref`). */
const part = (ref: number, part: number, text: string): Buffer => Buffer.concat([Buffer.from([0x05, 0x00, 0x03, ref, 3, part]), Buffer.from(text, 'latin1')])
const digits = (e164: string): string => e164.slice(1)

describe('the SMPP front end', () => {
  let services: TestServices
  let smsc: FakeSmsc
  let a: RunningGateway
  let b: RunningGateway
  /** a third gateway in a process of its own (`serve`), for what must hold across processes */
  let c: ServeProcess
  let cSmppPort = 0
  let password = ''
  let throttledPassword = ''
  const open: Esme[] = []

  const esme = async (gw: RunningGateway, systemId = 'esme1', pw = password, mode: 'transceiver' | 'transmitter' | 'receiver' = 'transceiver'): Promise<Esme> => {
    const e = await bindEsme(gw.gw.smppPort!, systemId, pw, mode)
    open.push(e)
    return e
  }
  const submit = (e: Esme, to: string, extra: Record<string, unknown> = {}) =>
    e.submit({ source_addr: 'ACME', source_addr_ton: 5, dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: digits(to), short_message: 'Kampanya', ...extra })

  beforeAll(async () => {
    services = await testServices({ dirPrefix: 'iys-smpp-', redis: true })
    const file = join(services.dir, 'c.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      ONAY.map(p => `700001,${BRAND},${p},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join('') +
      `700001,${BRAND},${RET},BIREYSEL,MESAJ,RET,HS_WEB,2024-01-15 10:00:00\n`)
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    const created = await runCli(['keys', 'create', '--iys-code', '700001', '--brand-codes', BRAND, '--scopes', 'send', '--rate', '0', '--smpp-system-id', 'esme1'], services.env)
    expect(created.code, created.stderr).toBe(0)
    password = JSON.parse(created.stdout).smppPassword
    const slow = await runCli(['keys', 'create', '--iys-code', '700001', '--brand-codes', BRAND, '--scopes', 'send', '--rate', '2', '--smpp-system-id', 'slow1', '--smpp-brand-code', BRAND], services.env)
    throttledPassword = JSON.parse(slow.stdout).smppPassword
    for (const originator of ['ACME', '4545']) {
      const r = await runCli(['originators', 'add', '--iys-code', '700001', '--originator', originator, '--brand-code', BRAND], services.env)
      expect(r.code, r.stderr).toBe(0)
    }
    // A self-signed certificate for SMPP_TLS_PORT.
    const tls = selfSignedCert(services.dir)
    smsc = await startFakeSmsc()
    const env = {
      ...services.env,
      LOG_LEVEL: process.env.GW_LOG ?? 'silent',
      SMPP_TLS_PORT: '0',
      SMPP_TLS_CERT: tls.certFile,
      SMPP_TLS_KEY: tls.keyFile,
      SMPP_WINDOW: '4',
      SMPP_PORT: '0',
      SMPP_MAX_BINDS: '3', UPSTREAM_MESAJ_URL: smsc.url('binds=1'), UPSTREAM_RETRIES: '0', UPSTREAM_TIMEOUT_MS: '1000', UPSTREAM_BREAKER_MIN_CALLS: '1000' }
    a = await startTestGateway(env)
    b = await startTestGateway(env)
    cSmppPort = await freePort()
    c = await startServeProcess({ ...env, SMPP_PORT: String(cSmppPort), SMPP_TLS_PORT: '', SMPP_TLS_CERT: '', SMPP_TLS_KEY: '' }, await freePort())
    await until(() => smsc.stats().bound >= 3, 20_000, 'the three gateways to bind to the operator')
  }, 120_000)

  afterAll(async () => {
    for (const e of open) e.close()
    await a?.close()
    await b?.close()
    await c?.stop()
    await smsc?.close()
    await services?.close()
  })

  it('refuses a wrong password and an unknown system_id, and more binds of one key than SMPP_MAX_BINDS', async () => {
    expect((await bindEsme(a.gw.smppPort!, 'esme1', 'wrongpw1')).bindStatus).toBe(E.RINVPASWD)
    expect((await bindEsme(a.gw.smppPort!, 'nobody', password)).bindStatus).toBe(E.RINVSYSID)
    const binds = [await esme(a), await esme(a), await esme(a)]
    expect(binds.map(e => e.bindStatus)).toEqual([0, 0, 0])
    expect((await esme(a)).bindStatus).toBe(E.RALYBND)
    for (const e of binds) await e.unbind()
  })

  it('forwards an allowed submit_sm byte for byte and answers the operator\'s message id', async () => {
    const e = await esme(a)
    const before = smsc.submits().length
    const r = await submit(e, ONAY[0]!)
    expect(r.command_status).toBe(E.OK)
    const got = smsc.submits().slice(before)
    expect(got).toHaveLength(1)
    expect(r.message_id).toBe(got[0]!.messageId)
    expect(got[0]!.pdu.destination_addr).toBe(digits(ONAY[0]!))
    expect(got[0]!.pdu.short_message.message).toBe('Kampanya')
    await e.unbind()
  })

  it('answers 0x66 for REJECTED and NO_CONSENT and never sends them; invalid destination, unknown originator, our TLVs', async () => {
    const e = await esme(a)
    const before = smsc.submits().length
    expect((await submit(e, RET)).command_status).toBe(E.RX_R_APPN)
    expect((await submit(e, NO_RECORD)).command_status).toBe(E.RX_R_APPN)
    expect((await submit(e, '+1', { dest_addr_ton: 1 })).command_status).toBe(E.RINVDSTADR)
    expect((await submit(e, ONAY[1]!, { source_addr: 'NOBODY' })).command_status).toBe(E.RINVSRCADR)
    expect(smsc.submits().length).toBe(before)
    // The brand from our TLV where the originator is unknown; informational (0x1421 = 0) needs no consent.
    const tagged = await submit(e, ONAY[1]!, { source_addr: 'NOBODY', iys_brand_code: BRAND })
    expect(tagged.command_status).toBe(E.OK)
    const info = await submit(e, RET, { iys_commercial: 0 })
    expect(info.command_status).toBe(E.OK)
    const sent = smsc.submits().slice(before)
    expect(sent.map(s => s.pdu.destination_addr)).toEqual([digits(ONAY[1]!), digits(RET)])
    // Our TLVs are for us: the operator does not see them.
    for (const s of sent) { expect(s.raw.includes(Buffer.from([0x14, 0x20]))).toBe(false); expect(s.raw.includes(Buffer.from([0x14, 0x21, 0x00, 0x01]))).toBe(false) }
    await e.unbind()
  })

  it('answers a submit_multi per destination: the allowed one sent, the others in unsuccess_sme with their status', async () => {
    const e = await esme(a)
    const before = smsc.submits().length
    const r = await e.request('submit_multi', {
      source_addr: 'ACME',
      source_addr_ton: 5,
      dest_address: [{ dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: digits(ONAY[0]!) }, { dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: digits(RET) }, { dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: '1' }],
      short_message: 'Kampanya'
    })
    expect(r.command_status).toBe(E.OK)
    const sent = smsc.submits().slice(before)
    expect(sent.map(s => s.pdu.destination_addr)).toEqual([digits(ONAY[0]!)])
    expect(sent[0]!.pdu.short_message.message).toBe('Kampanya')
    expect(r.message_id).toBe(sent[0]!.messageId)
    expect(r.unsuccess_sme.map((u: any) => [u.destination_addr, u.error_status_code])).toEqual([[digits(RET), E.RX_R_APPN], ['1', E.RINVDSTADR]])
    await e.unbind()
  })

  it('gives every part of a concatenated message the decision of its first part, and logs it once, also across gateways', async () => {
    const e = await esme(a)
    // The platform's second bind went to the other gateway (a load balancer): the later parts arrive there.
    const eb = await esme(b)
    const before = smsc.submits().length
    const first = await submit(e, ONAY[2]!, { esm_class: 0x40, short_message: part(7, 1, 'bir ') })
    expect(first.command_status).toBe(E.OK)
    // The recipient rejects between the parts: the message was decided with its first part, so the rest go too.
    const w = await fetch(a.url + '/sps/700001/brands/600001/consents', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${a.apiKey}` },
      body: JSON.stringify({ recipient: ONAY[2], recipientType: 'BIREYSEL', type: 'MESAJ', source: 'HS_WEB', status: 'RET', consentDate: formatIysDate(Math.floor(Date.now() / 1000) - 1) })
    })
    expect(w.status).toBe(200)
    await until(async () => (await check(a.url, { brandCode: BRAND, type: 'MESAJ', recipients: [ONAY[2]] }))[0]!.reason === 'REJECTED', 10_000, 'the RET to take effect')
    expect((await submit(eb, ONAY[2]!, { esm_class: 0x40, short_message: part(7, 2, 'iki ') })).command_status).toBe(E.OK)
    expect((await submit(e, ONAY[2]!, { esm_class: 0x40, short_message: part(7, 3, 'uc') })).command_status).toBe(E.OK)
    // A new message to the same recipient is decided anew: blocked, every part.
    for (const p of [1, 2, 3]) expect((await submit(p === 2 ? eb : e, ONAY[2]!, { esm_class: 0x40, short_message: part(8, p, 'x') })).command_status).toBe(E.RX_R_APPN)
    expect(smsc.submits().length - before).toBe(3)
    await until(async () => Number((await services.pool.query("SELECT count(*) AS n FROM decisions WHERE source = 'smpp' AND normalized = $1", [ONAY[2]])).rows[0].n) === 2, 15_000, 'the two messages\' decisions in the decision log')
    const { rows } = await services.pool.query("SELECT allowed, reason, upstream_status FROM decisions WHERE source = 'smpp' AND normalized = $1 ORDER BY decided_at", [ONAY[2]])
    expect(rows).toEqual([{ allowed: true, reason: 'CONSENT', upstream_status: 'accepted' }, { allowed: false, reason: 'REJECTED', upstream_status: null }])
    await e.unbind()
    await eb.unbind()
  })

  it('routes a delivery receipt to the bind that sent the message, also after it reconnected to the other gateway', async () => {
    const e = await esme(a)
    const r = await submit(e, ONAY[3]!)
    expect(r.command_status).toBe(E.OK)
    expect(await smsc.deliverReceipt(r.message_id)).toBe(0)
    await until(() => e.delivered.length > 0, 10_000, 'the receipt at the ESME')
    expect(e.delivered[0]!.receipted_message_id).toBe(r.message_id)
    // The platform goes away; the receipt of its next message waits, and comes when it binds to gateway B.
    const r2 = await submit(e, ONAY[4]!)
    await e.unbind()
    expect(await smsc.deliverReceipt(r2.message_id)).toBe(0)
    const again = await esme(b)
    await until(() => again.delivered.some(p => p.receipted_message_id === r2.message_id), 10_000, 'the waiting receipt at the re-bound ESME on gateway B')
    await again.unbind()
  })

  it('records an MO "İptal" to a mapped number as a RET that blocks the next submit on another gateway process, and delivers the MO', async () => {
    const rx = await esme(b, 'esme1', password, 'receiver')
    const tx = await bindEsme(cSmppPort, 'esme1', password, 'transmitter') // the gateway in its own process
    open.push(tx)
    expect((await submit(tx, ONAY[1]!)).command_status).toBe(E.OK)
    expect(await smsc.deliverMo(digits(ONAY[1]!), '4545', 'İptal')).toBe(0)
    await until(async () => (await submit(tx, ONAY[1]!)).command_status === E.RX_R_APPN, 10_000, 'the MO RET to block the next submit_sm')
    await until(() => rx.delivered.some(p => p.destination_addr === '4545'), 10_000, 'the MO at the tenant\'s receiver')
    const { rows } = await services.pool.query("SELECT status, source FROM consents WHERE recipient = $1 AND recipient_type = 'BIREYSEL'", [ONAY[1]])
    expect(rows).toEqual([{ status: 'RET', source: 'HS_MESAJ' }])
    await rx.unbind()
    await tx.unbind()
  })

  it('takes binds over TLS on SMPP_TLS_PORT', async () => {
    const e = await bindEsme(a.gw.smppTlsPort!, 'esme1', password, 'transceiver', true)
    open.push(e)
    expect(e.bindStatus).toBe(0)
    expect((await submit(e, ONAY[0]!)).command_status).toBe(E.OK)
    await e.unbind()
  })

  it('answers ESME_RMSGQFUL beyond SMPP_WINDOW submits in progress on one bind', async () => {
    const e = await esme(a)
    smsc.setDelay(300)
    try {
      const statuses = (await Promise.all(Array.from({ length: 8 }, () => submit(e, ONAY[0]!)))).map(r => r.command_status)
      expect(statuses.filter(s => s === E.OK)).toHaveLength(4)
      expect(statuses.filter(s => s === 0x14)).toHaveLength(4)
    } finally {
      smsc.setDelay(0)
    }
    await e.unbind()
  })

  it('throttles beyond the key\'s rate with ESME_RTHROTTLED', async () => {
    const e = await esme(a, 'slow1', throttledPassword)
    expect(e.bindStatus).toBe(0)
    const answers = await Promise.all(Array.from({ length: 12 }, () => submit(e, ONAY[0]!, { source_addr: '' })))
    const statuses = answers.map(r => r.command_status)
    expect(statuses.filter(s => s === E.RTHROTTLED).length).toBeGreaterThan(0)
    expect(statuses.filter(s => s === E.OK).length).toBeGreaterThan(0)
    await e.unbind()
  })

  it('answers broken PDUs with generic_nack and keeps the session and the process', async () => {
    const e = await esme(a)
    // An unknown command id, then a submit_sm whose last TLV (user_message_reference, 2 octets) has only one.
    const unknown = Buffer.alloc(16); unknown.writeUInt32BE(16, 0); unknown.writeUInt32BE(0x00000099, 4); unknown.writeUInt32BE(9001, 12)
    const body = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* TLV */ 0x02, 0x04, 0x00, 0x02, 0x01])
    const broken = Buffer.concat([Buffer.alloc(16), body]); broken.writeUInt32BE(broken.length, 0); broken.writeUInt32BE(4, 4); broken.writeUInt32BE(9002, 12)
    e.writeRaw(unknown)
    e.writeRaw(broken)
    await until(() => e.received.filter(p => p.command === 'generic_nack').length >= 2, 5000, 'two generic_nacks')
    expect(e.received.find(p => p.command === 'generic_nack' && p.sequence_number === 9001)?.command_status).toBe(E.RINVCMDID)
    expect(e.received.find(p => p.command === 'generic_nack' && p.sequence_number === 9002)).toBeDefined()
    expect((await submit(e, ONAY[0]!)).command_status).toBe(E.OK)
    // A length that breaks the framing closes that session only.
    const bad = await esme(a)
    bad.writeRaw(Buffer.from([0, 0, 0, 4, 0, 0, 0, 4]))
    expect((await submit(e, ONAY[0]!)).command_status).toBe(E.OK)
    await e.unbind()
  })

  it('unbinds a bound platform whose key was revoked, at its next submit_sm', async () => {
    const created = await runCli(['keys', 'create', '--iys-code', '700001', '--brand-codes', BRAND, '--scopes', 'send', '--rate', '0', '--smpp-system-id', 'soon-gone'], services.env)
    const k = JSON.parse(created.stdout)
    await until(async () => { const t = await bindEsme(a.gw.smppPort!, 'soon-gone', k.smppPassword); open.push(t); return t.bindStatus === 0 }, 10_000, 'the new key to bind')
    const e = await bindEsme(a.gw.smppPort!, 'soon-gone', k.smppPassword)
    open.push(e)
    expect((await submit(e, ONAY[0]!)).command_status).toBe(E.OK)
    expect((await runCli(['keys', 'revoke', k.keyId], services.env)).code).toBe(0)
    await until(async () => (await submit(e, ONAY[0]!)).command_status === 0x04, 10_000, 'ESME_RINVBNDSTS for the revoked key')
    await until(() => e.received.some(p => p.command === 'unbind'), 10_000, 'the unbind')
  })

  it('shuts down while a platform is bound: unbinds it and ends (a bound session does not hold the gateway open)', async () => {
    const d = await startTestGateway({ ...services.env, SMPP_PORT: '0', UPSTREAM_MESAJ_URL: smsc.url('binds=1'), SMPP_RESPONSE_TIMEOUT_MS: '2000' })
    const e = await bindEsme(d.gw.smppPort!, 'esme1', password)
    open.push(e)
    expect(e.bindStatus).toBe(0)
    await d.close() // the test's timeout is the bound: before the fix this never returned
    expect(e.received.some(p => p.command === 'unbind')).toBe(true)
  })

  it('answers 0x64 while the operator is down and forwards again once it is back', async () => {
    const e = await esme(a)
    await smsc.stop()
    expect((await submit(e, ONAY[0]!)).command_status).toBe(E.RX_T_APPN)
    await smsc.start()
    await until(async () => (await submit(e, ONAY[0]!)).command_status === E.OK, 30_000, 'the operator to take messages again')
    await e.unbind()
  })
})
