// The SMTP carrier against a real (fake) relay on a free port: what reaches the relay, byte for byte, how its answers
// are read, and outcomes that never claim more than we know. Every wait is on a condition, never a fixed sleep.

import { execFileSync, spawn } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { BreakerSettings } from '../src/carriers/circuit-breaker.js'
import type { OutboundMessage } from '../src/carriers/contract.js'
import { messageIdHeader, parseSmtpUrl, queueIdOf, SmtpUpstream, type SmtpUpstreamInit } from '../src/carriers/smtp-upstream.js'
import { Upstreams } from '../src/carriers/upstream.js'
import { startFakeSmtp, type FakeSmtp, type FakeSmtpOptions } from '../src/dev/fake-smtp.js'
import { eposta, mesaj } from './helpers/carrier.js'
import { selfSignedCert } from './helpers/tls.js'
import { until } from './helpers/redis-server.js'

const BREAKER: BreakerSettings = { failureRatio: 0.5, minCalls: 1_000_000, windowMs: 10_000, cooldownMs: 1000 }
const SETTINGS = { timeoutMs: 5000, retries: 2, backoffMs: 5, backoffMaxMs: 40, breaker: BREAKER }

const open: Array<{ close: () => Promise<void> }> = []

afterEach(async () => {
  // Carriers first, then the relays.
  for (const o of open.splice(0).reverse()) await o.close()
})

async function relayServer (opts: FakeSmtpOptions = {}): Promise<FakeSmtp> {
  const s = await startFakeSmtp(opts)
  open.unshift(s)
  return s
}

function carrier (url: string, more: Partial<SmtpUpstreamInit> = {}): SmtpUpstream {
  const c = new SmtpUpstream({ ...SETTINGS, url, name: 'EPOSTA', ...more })
  open.push({ close: () => c.destroy() })
  return c
}


/** A message as a client wrote it: CRLF lines, a line that starts with a dot, UTF-8 Turkish in the body. */
function rawMessage (to: string, tag = 'x'): Buffer {
  return Buffer.from([
    'From: Haber <news@acme.example>',
    `To: ${to}`,
    `Subject: relay ${tag}`,
    `Message-ID: <${tag}@acme.example>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Merhaba, kampanyamız başladı: ığüşöç İĞÜŞÖÇ.',
    '.a line that starts with a dot',
    '..and one with two',
    ''
  ].join('\r\n'), 'utf8')
}

/**
 * A TCP proxy in front of the relay that cuts one connection where a dying relay or network would: `before` drops the
 * client's connection when its `mail`-th MAIL FROM arrives, without passing it on (a pooled connection the relay had
 * closed while idle); `after-data` passes that message on whole and drops the connection when the relay's answer to
 * it comes, without passing the answer on (the relay has the message; the client never hears so).
 */
interface CuttingProxy { readonly port: number, connections: () => number, close: () => Promise<void> }

async function cuttingProxy (target: number, cut: { connection: number, mail: number, at: 'before' | 'after-data' }): Promise<CuttingProxy> {
  let n = 0
  const sockets = new Set<Socket>()
  const server = createServer(client => {
    const id = ++n
    const relay = connect(target, '127.0.0.1')
    for (const x of [client, relay]) { sockets.add(x); x.on('error', () => {}); x.on('close', () => sockets.delete(x)) }
    let sent = ''
    let withhold = false
    const drop = (): void => { client.destroy(); relay.destroy() }
    client.on('data', (chunk: Buffer) => {
      sent += chunk.toString('latin1')
      const mails = sent.match(/MAIL FROM:/g)?.length ?? 0
      if (id === cut.connection && mails === cut.mail) {
        if (cut.at === 'before') { drop(); return }
        if (/\r\n\.\r\n$/.test(sent)) withhold = true
      }
      relay.write(chunk)
    })
    relay.on('data', (chunk: Buffer) => { if (withhold) drop(); else client.write(chunk) })
    client.on('end', () => relay.end())
    relay.on('end', () => client.end())
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const p: CuttingProxy = {
    port,
    connections: () => n,
    close: async () => {
      for (const x of sockets) x.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
  open.unshift(p)
  return p
}

const payload = (m: OutboundMessage): { from: string, subject: string, body: string } => m.payload as { from: string, subject: string, body: string }

describe('SMTP carrier: send() for /v1/messages', () => {
  it('sends a plain-text mail with From, Subject, body and a Message-ID made from messageId, and reports the relay\'s queue id', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    const msg = eposta()
    const out = await c.send(msg)
    expect(s.messages()).toHaveLength(1)
    const got = s.messages()[0]!
    expect(out).toEqual({ forwarded: true, status: 'accepted', carrierId: got.queueId, attempts: 1 })
    expect(got.envelope.from).toBe('news@acme.example')
    expect(got.envelope.to).toEqual([msg.recipient])
    const text = got.raw.toString('utf8')
    expect(text).toMatch(/^From: news@acme\.example\r$/m)
    expect(text).toMatch(/^Subject: Hello\r$/m)
    expect(text).toMatch(new RegExp(`^Message-ID: <${msg.messageId}@acme\\.example>\\r$`, 'm'))
    expect(text).toContain('\r\n\r\nBody')
    expect(text).not.toMatch(/^X-Mailer:/im)
    // The same messageId again: the same Message-ID, so a resend is recognisable.
    expect(await c.send(msg)).toMatchObject({ forwarded: true })
    expect(s.messages()[1]!.raw.toString('utf8')).toMatch(new RegExp(`^Message-ID: <${msg.messageId}@acme\\.example>\\r$`, 'm'))
  })

  it('keeps a subject with a line break in its header, and Turkish text intact', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    const base = eposta()
    const msg = { ...base, payload: { from: 'Acme <news@acme.example>', subject: 'Kampanya\r\nBcc: evil@example.com', body: 'Şimdi İndirim: ığüşöç' } } as OutboundMessage
    expect(await c.send(msg)).toMatchObject({ forwarded: true })
    const got = s.messages()[0]!
    expect(got.envelope.to).toEqual([msg.recipient])
    expect(got.raw.toString('utf8')).not.toMatch(/^Bcc:/im)
  })

  it('refuses other channels and bad messageIds without touching the network', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    expect(await c.send(mesaj())).toMatchObject({ forwarded: false, status: 'failed', attempts: 0, error: expect.stringContaining('EPOSTA only') })
    expect(await c.send({ ...eposta(), messageId: 'has space' })).toMatchObject({ forwarded: false, status: 'failed', attempts: 0 })
    expect(await c.send({ ...eposta(), payload: { from: 'Acme', subject: 's', body: 'b' } } as OutboundMessage)).toMatchObject({ forwarded: false, status: 'failed', attempts: 0, error: expect.stringContaining('from') })
    expect(s.stats().connections).toBe(0)
  })

  it('a 550 is rejected at once; a 451 is retried and then taken', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    s.rejectNext(1, 550, '5.1.1 No such user', 'RCPT')
    expect(await c.send(eposta())).toMatchObject({ forwarded: false, status: 'rejected', attempts: 1, maybeDelivered: false, error: expect.stringContaining('550 5.1.1 No such user') })
    s.rejectNext(1, 451, '4.3.0 Try later', 'DATA')
    const out = await c.send(eposta())
    expect(out).toMatchObject({ forwarded: true, attempts: 2 })
    expect(s.messages()).toHaveLength(1)
    s.rejectNext(3, 450, '4.2.1 Busy', 'MAIL')
    expect(await c.send(eposta())).toMatchObject({ forwarded: false, status: 'failed', attempts: 3, maybeDelivered: false, error: expect.stringContaining('450 4.2.1 Busy to MAIL FROM') })
  })

  it('no answer after the message went out: timeout, maybe delivered, never sent twice', async () => {
    const s = await relayServer()
    const c = carrier(s.url('timeout_ms=300'))
    expect(c.timeoutMs).toBe(300)
    s.delay(5000)
    const out = await c.send(eposta())
    expect(out).toMatchObject({ forwarded: false, status: 'timeout', attempts: 1, maybeDelivered: true })
    expect(s.messages()).toHaveLength(1) // the relay has it: the outcome was right not to claim otherwise
  })
})

describe('SMTP carrier: relay() for the SMTP front end', () => {
  it('passes the raw message through unchanged, with its envelope, and asks for 8BITMIME and SIZE', async () => {
    const s = await relayServer({ size: 1_000_000 })
    const c = carrier(s.url('ehlo=gw1.acme.example'))
    const raw = rawMessage('ayse@example.com.tr')
    const out = await c.relay({ from: 'news@acme.example', to: ['ayse@example.com.tr'] }, raw)
    expect(out).toEqual({ kind: 'accepted', response: `250 OK: queued as ${s.messages()[0]!.queueId}` })
    const got = s.messages()[0]!
    expect(got.envelope.from).toBe('news@acme.example')
    expect(got.envelope.to).toEqual(['ayse@example.com.tr'])
    expect(got.raw.equals(raw)).toBe(true)
    expect(got.mailParams).toMatchObject({ BODY: '8BITMIME', SIZE: String(raw.length) })
    expect(got.clientName).toBe('gw1.acme.example')
  })

  it('carries the null sender of a bounce, and a message without a final line break gets one', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    const raw = Buffer.from('From: MAILER-DAEMON@acme.example\r\nSubject: bounce\r\n\r\nno final line break')
    expect(await c.relay({ from: '', to: ['news@acme.example'] }, raw)).toMatchObject({ kind: 'accepted' })
    const got = s.messages()[0]!
    expect(got.envelope.from).toBe('')
    expect(got.raw.equals(Buffer.concat([raw, Buffer.from('\r\n')]))).toBe(true)
  })

  it('takes exactly one recipient per call, and refuses addresses SMTP cannot carry', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    await expect(c.relay({ from: 'a@acme.example', to: ['x@example.com', 'y@example.com'] }, rawMessage('x'))).rejects.toThrow(TypeError)
    await expect(c.relay({ from: 'a@acme.example', to: [] }, rawMessage('x'))).rejects.toThrow(/exactly one/)
    expect(await c.relay({ from: 'a@acme.example', to: ['x@example.com>\r\nRCPT TO:<y@example.com'] }, rawMessage('x'))).toMatchObject({ kind: 'permanent', code: 553 })
    // Read as header text, this would be two recipients.
    expect(await c.relay({ from: 'a@acme.example', to: ['x@example.com,y@example.com'] }, rawMessage('x'))).toMatchObject({ kind: 'permanent', code: 553 })
    expect(await c.relay({ from: 'a b@acme.example', to: ['x@example.com'] }, rawMessage('x'))).toMatchObject({ kind: 'permanent', code: 553 })
    expect(s.stats().connections).toBe(0)
  })

  it('reads 5xx as permanent and 4xx as temporary, at MAIL, RCPT and DATA', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    const env = { from: 'news@acme.example', to: ['ayse@example.com.tr'] }
    s.rejectNext(1, 550, '5.1.1 No such user', 'RCPT')
    expect(await c.relay(env, rawMessage('x'))).toEqual({ kind: 'permanent', code: 550, rejected: ['ayse@example.com.tr'], error: expect.stringContaining('550 5.1.1 No such user to RCPT TO') })
    s.rejectNext(1, 553, '5.7.1 Sender refused', 'MAIL')
    const mail = await c.relay(env, rawMessage('x'))
    expect(mail).toMatchObject({ kind: 'permanent', code: 553 })
    expect(mail).not.toHaveProperty('rejected')
    s.rejectNext(1, 554, '5.7.1 Spam', 'DATA')
    expect(await c.relay(env, rawMessage('x'))).toMatchObject({ kind: 'permanent', code: 554, error: expect.stringContaining('to DATA') })
    s.rejectNext(1, 451, '4.3.0 Try later', 'RCPT')
    expect(await c.relay(env, rawMessage('x'))).toEqual({ kind: 'temporary', code: 451, error: expect.stringContaining('451 4.3.0 Try later') })
    s.rejectNext(1, 452, '4.3.1 Out of space', 'DATA')
    expect(await c.relay(env, rawMessage('x'))).toEqual({ kind: 'temporary', code: 452, error: expect.stringContaining('452 4.3.1') })
    expect(s.messages()).toHaveLength(0)
    expect(await c.relay(env, rawMessage('x'))).toMatchObject({ kind: 'accepted' })
  })

  it('a message over the relay\'s SIZE is permanent (552) without being sent', async () => {
    const s = await relayServer({ size: 1000 })
    const c = carrier(s.url())
    const big = Buffer.concat([rawMessage('x'), Buffer.alloc(2000, 'a'), Buffer.from('\r\n')])
    expect(await c.relay({ from: 'news@acme.example', to: ['x@example.com'] }, big)).toMatchObject({ kind: 'permanent', code: 552 })
    expect(s.messages()).toHaveLength(0)
  })

  it('no answer after the message went out: temporary, maybe delivered, and the error says so', async () => {
    const s = await relayServer({ delayMs: 5000 })
    const c = carrier(s.url('timeout_ms=300'))
    const out = await c.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))
    expect(out).toMatchObject({ kind: 'temporary', maybeDelivered: true, error: expect.stringMatching(/may have it.*twice/) })
    expect(s.messages()).toHaveLength(1)
  })

  it('relay down: temporary, not delivered; the breaker opens and answers "circuit open"; relay back: accepted', async () => {
    const s = await relayServer()
    const changes: string[] = []
    const c = carrier(s.url(), { breaker: { ...BREAKER, minCalls: 3, cooldownMs: 200 }, onBreakerChange: (n, f, t) => changes.push(`${n}:${f}>${t}`) })
    const env = { from: 'news@acme.example', to: ['x@example.com'] }
    expect(await c.relay(env, rawMessage('x@example.com', 'before'))).toMatchObject({ kind: 'accepted' })
    await s.stop()
    for (let i = 0; i < 3; i++) {
      const out = await c.relay(env, rawMessage('x@example.com', 'down'))
      expect(out.kind).toBe('temporary')
      expect(out).not.toHaveProperty('maybeDelivered')
    }
    expect(c.breaker.state).toBe('open')
    expect(await c.relay(env, rawMessage('x@example.com', 'down'))).toEqual({ kind: 'temporary', error: expect.stringMatching(/^circuit open: carrier EPOSTA is failing/) })
    expect(await c.send(eposta())).toMatchObject({ forwarded: false, status: 'circuit_open', attempts: 0, maybeDelivered: false })
    await s.start()
    await until(() => !c.breaker.refusing(), 15_000, 'the cool-down')
    expect(await c.relay(env, rawMessage('x@example.com', 'after'))).toMatchObject({ kind: 'accepted' })
    expect(c.breaker.state).toBe('closed')
    expect(changes).toEqual(['EPOSTA:closed>open', 'EPOSTA:open>half_open', 'EPOSTA:half_open>closed'])
    expect(s.messages().map(m => /^Subject: (.*)\r$/m.exec(m.raw.toString())?.[1])).toEqual(['relay before', 'relay after'])
  })

  it('5xx answers are healthy for the breaker, 4xx answers are not', async () => {
    const s = await relayServer()
    const c = carrier(s.url(), { breaker: { ...BREAKER, minCalls: 4, failureRatio: 0.75 } })
    const env = { from: 'news@acme.example', to: ['x@example.com'] }
    s.rejectNext(6, 550, '5.1.1 No such user')
    for (let i = 0; i < 6; i++) expect((await c.relay(env, rawMessage('x'))).kind).toBe('permanent')
    expect(c.breaker.state).toBe('closed')
    s.rejectNext(30, 451, '4.3.0 Try later')
    for (let i = 0; i < 30 && c.breaker.state === 'closed'; i++) expect((await c.relay(env, rawMessage('x'))).kind).toBe('temporary')
    expect(c.breaker.state).toBe('open')
  })
})

describe('SMTP carrier: the pool of connections', () => {
  const env = { from: 'news@acme.example', to: ['x@example.com'] }

  it('sends messages in turn over one connection, and never opens more than `pool` at once', async () => {
    const s = await relayServer()
    const c = carrier(s.url('pool=3'))
    for (let i = 0; i < 5; i++) expect(await c.relay(env, rawMessage('x', `seq${i}`))).toMatchObject({ kind: 'accepted' })
    expect(s.messages().map(m => m.connection)).toEqual([1, 1, 1, 1, 1])
    const outs = await Promise.all(Array.from({ length: 30 }, (_, i) => c.relay(env, rawMessage('x', `par${i}`))))
    expect(outs.every(o => o.kind === 'accepted')).toBe(true)
    expect(s.messages()).toHaveLength(35)
    expect(s.stats().connections).toBeLessThanOrEqual(3)
    expect(c.inFlight()).toBe(0)
  })

  it('a pooled connection the relay closed while idle: the message goes out on a fresh one, once', async () => {
    const s = await relayServer()
    const px = await cuttingProxy(s.port, { connection: 1, mail: 2, at: 'before' })
    const c = carrier(`smtp://127.0.0.1:${px.port}?pool=1`)
    expect(await c.relay(env, rawMessage('x', 'first'))).toMatchObject({ kind: 'accepted' })
    expect(await c.relay(env, rawMessage('x', 'second'))).toMatchObject({ kind: 'accepted' })
    expect(px.connections()).toBe(2)
    expect(s.messages().map(m => [/^Subject: (.*)\r$/m.exec(m.raw.toString())?.[1], m.connection])).toEqual([['relay first', 1], ['relay second', 2]])
  })

  it('a 421 to MAIL on a pooled connection puts the message on a fresh one once; a second 421 is temporary', async () => {
    const s = await relayServer()
    const c = carrier(s.url('pool=1'))
    expect(await c.relay(env, rawMessage('x', 'first'))).toMatchObject({ kind: 'accepted' })
    s.rejectNext(1, 421, '4.4.2 Closing connection', 'MAIL')
    expect(await c.relay(env, rawMessage('x', 'second'))).toMatchObject({ kind: 'accepted' })
    expect(s.messages().map(m => m.connection)).toEqual([1, 2])
    s.rejectNext(2, 421, '4.4.2 Closing connection', 'MAIL')
    expect(await c.relay(env, rawMessage('x', 'third'))).toEqual({ kind: 'temporary', code: 421, error: expect.stringContaining('421 4.4.2 Closing connection to MAIL FROM') })
    expect(s.stats()).toMatchObject({ connections: 3, refused: 3 })
    expect(s.messages()).toHaveLength(2)
  })

  it('a 421 on a fresh connection is temporary and not tried again', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    s.rejectNext(1, 421, '4.4.2 Closing connection', 'MAIL')
    expect(await c.relay(env, rawMessage('x'))).toMatchObject({ kind: 'temporary', code: 421 })
    expect(s.stats()).toMatchObject({ connections: 1, refused: 1 })
  })

  it('a connection lost after the message went out: maybe delivered, and never put on another connection', async () => {
    const s = await relayServer()
    const px = await cuttingProxy(s.port, { connection: 1, mail: 2, at: 'after-data' })
    const c = carrier(`smtp://127.0.0.1:${px.port}?pool=1`)
    expect(await c.relay(env, rawMessage('x', 'first'))).toMatchObject({ kind: 'accepted' })
    const out = await c.relay(env, rawMessage('x', 'second'))
    expect(out).toMatchObject({ kind: 'temporary', maybeDelivered: true, error: expect.stringMatching(/may have it.*twice/) })
    expect(px.connections()).toBe(1)
    expect(s.messages()).toHaveLength(2)
    expect(await c.relay(env, rawMessage('x', 'third'))).toMatchObject({ kind: 'accepted' })
    expect(s.messages()).toHaveLength(3)
  })

  it('keeps the connection after the relay refuses a message (RSET), and the next message goes over it', async () => {
    const s = await relayServer()
    // One connection: with more, a message may find this one still waiting for its RSET and take another.
    const c = carrier(s.url('pool=1'))
    for (const [code, at] of [[550, 'RCPT'], [553, 'MAIL'], [554, 'DATA'], [451, 'RCPT'], [452, 'DATA']] as const) {
      s.rejectNext(1, code, 'No', at)
      expect((await c.relay(env, rawMessage('x'))).kind).toBe(code >= 500 ? 'permanent' : 'temporary')
    }
    expect(await c.relay(env, rawMessage('x'))).toMatchObject({ kind: 'accepted' })
    expect(s.stats().connections).toBe(1)
  })

  it('turns bare LF and bare CR into CRLF, dot-stuffs lines that start with a dot, and ends the message with CRLF', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    const raw = Buffer.from('From: news@acme.example\nSubject: bare\n\nline one\n.a dot line\nbare\rcr\r\n..two dots\nlast')
    expect(await c.relay(env, raw)).toMatchObject({ kind: 'accepted' })
    expect(s.messages()[0]!.raw.toString('latin1')).toBe('From: news@acme.example\r\nSubject: bare\r\n\r\nline one\r\n.a dot line\r\nbare\r\ncr\r\n..two dots\r\nlast\r\n')
  })

  it('sends a message larger than a socket buffer whole, and the next one after it', async () => {
    const s = await relayServer()
    const c = carrier(s.url())
    const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n'
    const big = Buffer.concat([rawMessage('x', 'big'), Buffer.from(line.repeat(24_000))])
    expect(big.length).toBeGreaterThan(1_000_000)
    expect(await c.relay(env, big)).toMatchObject({ kind: 'accepted' })
    expect(s.messages()[0]!.raw.equals(big)).toBe(true)
    expect(await c.relay(env, rawMessage('x', 'small'))).toMatchObject({ kind: 'accepted' })
    expect(s.messages().map(m => m.connection)).toEqual([1, 1])
  })

  it('destroy(): the message in flight is maybe delivered, the one waiting for a connection is not', async () => {
    const s = await relayServer({ delayMs: 5000 })
    const c = carrier(s.url('pool=1'))
    const inFlight = c.relay(env, rawMessage('x', 'in-flight'))
    const waiting = c.relay(env, rawMessage('x', 'waiting'))
    await until(() => s.messages().length === 1, 15_000, 'the first message at the relay')
    await c.destroy()
    expect(await inFlight).toMatchObject({ kind: 'temporary', maybeDelivered: true })
    const w = await waiting
    expect(w.kind).toBe('temporary')
    expect(w).not.toHaveProperty('maybeDelivered')
    expect(c.inFlight()).toBe(0)
  })
})

describe('SMTP carrier: AUTH and TLS', () => {
  it('logs in with URL-decoded credentials; a wrong password is temporary and never appears in the error', async () => {
    const s = await relayServer({ auth: { user: 'relay@acme.example', pass: 'p@ss:w/rd%' } })
    expect(s.url()).toContain('relay%40acme.example:p%40ss%3Aw%2Frd%25@')
    const good = carrier(s.url('starttls=never'))
    expect(await good.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))).toMatchObject({ kind: 'accepted' })
    expect(s.messages()[0]!.user).toBe('relay@acme.example')
    const bad = carrier(s.url('starttls=never', 'relay@acme.example', 'wrong-password'))
    const out = await bad.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))
    expect(out).toMatchObject({ kind: 'temporary', code: 535 })
    expect(JSON.stringify(out)).not.toContain('wrong-password')
    expect(s.stats().loginsRefused).toBe(1)
    // Without credentials the relay answers 530 to MAIL: our configuration, not the message's fault.
    const none = carrier(s.url('', '', ''))
    expect(await none.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))).toMatchObject({ kind: 'temporary', code: 530 })
  })

  it('with credentials STARTTLS is required by default: a relay without it gets no password, and the mail waits', async () => {
    const s = await relayServer({ auth: { user: 'u', pass: 'secret-pw' } })
    const c = carrier(s.url())
    const out = await c.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))
    expect(out).toMatchObject({ kind: 'temporary', error: expect.stringContaining('to STARTTLS') })
    expect(s.stats().logins + s.stats().loginsRefused).toBe(0)
  })

  describe('over TLS', () => {
    let dir = ''
    let key: Buffer = Buffer.alloc(0)
    let cert: Buffer = Buffer.alloc(0)
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'smtps-'))
      ;({ key, cert } = selfSignedCert(dir))
    })
    afterAll(() => { rmSync(dir, { recursive: true, force: true }) })

    it('logs in after STARTTLS to a relay whose CA it trusts, and refuses one it does not unless told to', async () => {
      const s = await relayServer({ auth: { user: 'u', pass: 'secret-pw' }, tls: { key, cert } })
      const env = { from: 'news@acme.example', to: ['x@example.com'] }
      expect(await carrier(s.url(), { tls: { ca: cert } }).relay(env, rawMessage('x'))).toMatchObject({ kind: 'accepted' })
      expect(s.messages()[0]).toMatchObject({ user: 'u', secure: true })
      expect((await carrier(s.url()).relay(env, rawMessage('x'))).kind).toBe('temporary')
      expect(await carrier(s.url('reject_unauthorized=false')).relay(env, rawMessage('x'))).toMatchObject({ kind: 'accepted' })
      expect(s.messages()).toHaveLength(2)
    })

    it('speaks TLS from the first byte over smtps://', async () => {
      const s = await relayServer({ auth: { user: 'u', pass: 'secret-pw' }, tls: { key, cert }, implicitTls: true })
      expect(s.url()).toMatch(/^smtps:/)
      const c = carrier(s.url(), { tls: { ca: cert } })
      expect(await c.send(eposta())).toMatchObject({ forwarded: true })
      expect(s.messages()[0]).toMatchObject({ user: 'u', secure: true })
    })
  })
})

describe('SMTP carrier: DKIM', () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
  const dkim = { domainName: 'acme.example', keySelector: 'gw1', privateKey }

  it('signs relayed mail: a DKIM-Signature header first, then the client\'s message unchanged', async () => {
    const s = await relayServer()
    const c = carrier(s.url(), { dkim })
    const raw = rawMessage('x@example.com')
    expect(await c.relay({ from: 'news@acme.example', to: ['x@example.com'] }, raw)).toMatchObject({ kind: 'accepted' })
    const got = s.messages()[0]!.raw
    const text = got.toString('utf8')
    expect(text).toMatch(/^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=acme\.example;\s+q=dns\/txt; s=gw1;/)
    expect(text).toMatch(/\bbh=[A-Za-z0-9+/=]+;/)
    expect(text).toMatch(/\bb=[A-Za-z0-9+/=\s]{40,}/)
    const at = got.indexOf('\r\nFrom: ')
    expect(got.subarray(at + 2).equals(raw)).toBe(true)
  })

  it('signs sent mail too, and a timeout after a signed message went out is still maybe delivered', async () => {
    const s = await relayServer()
    const c = carrier(s.url('timeout_ms=300'), { dkim })
    expect(await c.send(eposta())).toMatchObject({ forwarded: true })
    expect(s.messages()[0]!.raw.toString()).toMatch(/^DKIM-Signature: /)
    s.delay(5000)
    expect(await c.send(eposta())).toMatchObject({ status: 'timeout', maybeDelivered: true })
    // And one that never left (relay down) is not.
    await s.stop()
    expect(await c.send(eposta())).toMatchObject({ status: 'failed', maybeDelivered: false })
  })

  it('refuses a key it cannot sign with at construction', () => {
    expect(() => carrier('smtp://127.0.0.1:2525', { dkim: { ...dkim, privateKey: 'not a key' } })).toThrow(/dkim: privateKey is not a PEM private key/)
    const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1', privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
    expect(() => carrier('smtp://127.0.0.1:2525', { dkim: { ...dkim, privateKey: ec.privateKey } })).toThrow(/RSA/)
    expect(() => carrier('smtp://127.0.0.1:2525', { dkim: { ...dkim, keySelector: 'a b' } })).toThrow(/keySelector/)
  })
})

describe('SMTP carrier: closing', () => {
  it('close() waits for the message in flight to get its answer', async () => {
    const s = await relayServer({ delayMs: 200 })
    const c = carrier(s.url())
    const pending = c.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))
    await until(() => s.messages().length === 1, 15_000, 'the message at the relay')
    await c.close()
    expect(await pending).toMatchObject({ kind: 'accepted' })
    expect(await c.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))).toMatchObject({ kind: 'temporary', error: expect.stringContaining('closed') })
    expect(await c.send(eposta())).toMatchObject({ forwarded: false, status: 'failed', attempts: 0 })
  })
})

describe('the SMTP carrier URL', () => {
  it('has defaults: port 25 (smtps 465), a pool of 5, STARTTLS required with credentials and opportunistic without', () => {
    expect(parseSmtpUrl('smtp://relay.example')).toEqual({ tls: false, host: 'relay.example', port: 25, user: null, password: null, pool: 5, starttls: 'opportunistic', rejectUnauthorized: true, timeoutMs: null, ehlo: null })
    expect(parseSmtpUrl('smtps://u:p@relay.example')).toMatchObject({ tls: true, port: 465, starttls: 'never', user: 'u', password: 'p' })
    expect(parseSmtpUrl('smtp://u%40acme.example:p%3A%2F%25@relay.example:587?pool=10&starttls=required&timeout_ms=30000&ehlo=gw.acme.example'))
      .toMatchObject({ port: 587, user: 'u@acme.example', password: 'p:/%', pool: 10, starttls: 'required', timeoutMs: 30_000, ehlo: 'gw.acme.example' })
    expect(parseSmtpUrl('smtp://u:p@relay.example').starttls).toBe('required')
    expect(parseSmtpUrl('smtp://[::1]:2525').host).toBe('::1')
  })

  it('refuses what it does not know, naming it, and never quotes the password', () => {
    const bad: Array<[string, RegExp]> = [
      ['smtp://u:hunter22@relay.example?pool=5&poool=6&dkim=1', /unknown parameters poool, dkim \(known: pool, starttls, reject_unauthorized, timeout_ms, ehlo\)/],
      ['smtp://u:hunter22@relay.example?pool=0', /pool must be an integer from 1 to 100, got "0"/],
      ['smtp://u:hunter22@relay.example?pool=5&pool=6', /pool is given twice/],
      ['smtp://u:hunter22@relay.example?starttls=maybe', /starttls must be required, opportunistic, never/],
      ['smtps://u:hunter22@relay.example?starttls=required', /starttls is for smtp: only/],
      ['smtp://relay.example?starttls=never&reject_unauthorized=false', /reject_unauthorized needs TLS/],
      ['smtp://u:hunter22@relay.example?reject_unauthorized=no', /reject_unauthorized must be true or false/],
      ['smtp://u:hunter22@relay.example?timeout_ms=5', /timeout_ms must be an integer from 10 to 600000/],
      ['smtp://u:hunter22@relay.example?ehlo=bad%20name', /ehlo must be a host name/],
      ['smtp://u@relay.example', /a user without a password/],
      ['smtp://:hunter22@relay.example', /a password without a user/],
      ['smtp://u:hunter22@relay.example/path', /no path/],
      ['smtp://u:hunter22@relay.example:0', /port/],
      ['http://u:hunter22@relay.example', /must be smtp: or smtps:/],
      ['smtp://u:hunter%zz@relay.example', /password is not valid percent-encoding/],
      ['not a url hunter22', /not a URL/]
    ]
    for (const [url, re] of bad) {
      let err: Error | null = null
      try { parseSmtpUrl(url) } catch (e) { err = e as Error }
      expect(err, url).toBeInstanceOf(TypeError)
      expect(err!.message, url).toMatch(re)
      expect(err!.message, url).toMatch(/^SMTP carrier URL: /)
      expect(err!.message, url).not.toContain('hunter')
    }
  })

  it('reads the queue id from the common relays\' 250, and builds Message-IDs that differ when messageIds do', () => {
    expect(queueIdOf('250 2.0.0 Ok: queued as 4F2xY3kLmNz')).toBe('4F2xY3kLmNz')
    expect(queueIdOf('250 OK id=1qA2b3-000Abc-Xy')).toBe('1qA2b3-000Abc-Xy')
    expect(queueIdOf('250 2.0.0 3B9Jx2Zq012345 Message accepted for delivery')).toBe('3B9Jx2Zq012345')
    expect(queueIdOf('250 2.0.0 OK  1700000000 a1b2c3si1234567qka.123 - gsmtp')).toBe('a1b2c3si1234567qka.123')
    expect(queueIdOf('250 Ok')).toBeNull()
    expect(messageIdHeader('m-1.a_b', 'Acme <News@ACME.example>')).toBe('<m-1.a_b@acme.example>')
    const odd = messageIdHeader('a@b<c>', 'news@acme.example')
    expect(odd).toMatch(/^<=[A-Za-z0-9_-]+@acme\.example>$/)
    expect(odd).not.toBe(messageIdHeader('a@b<d>', 'news@acme.example'))
    expect(messageIdHeader('x', 'no address')).toBe('<x@iys-gateway.invalid>')
  })
})

describe('Upstreams with an SMTP relay', () => {
  it('builds the SMTP carrier for EPOSTA only, and hands it out for the front end\'s relay', async () => {
    const s = await relayServer()
    const u = new Upstreams({ MESAJ: null, EPOSTA: s.url(), ARAMA: null }, { ...SETTINGS, connections: 4 })
    open.push({ close: () => u.destroy() })
    const smtp = u.smtp()
    expect(smtp).toBeInstanceOf(SmtpUpstream)
    expect(u.get('EPOSTA')).toBe(smtp)
    expect(smtp!.name).toBe('EPOSTA')
    expect(await u.send(eposta())).toMatchObject({ forwarded: true })
    expect(await smtp!.relay({ from: 'news@acme.example', to: ['x@example.com'] }, rawMessage('x'))).toMatchObject({ kind: 'accepted' })
    expect(s.messages()).toHaveLength(2)
    expect(u.states()).toEqual({ EPOSTA: 'closed' })
    await u.close()
  })

  it('refuses an SMTP URL for another channel and a bad SMTP URL, naming the variable', () => {
    expect(() => new Upstreams({ MESAJ: 'smtp://relay.example', EPOSTA: null, ARAMA: null }, { ...SETTINGS, connections: 4 })).toThrow(/^UPSTREAM_MESAJ_URL: only EPOSTA can go to an SMTP relay/)
    expect(() => new Upstreams({ MESAJ: null, EPOSTA: null, ARAMA: 'smtps://relay.example' }, { ...SETTINGS, connections: 4 })).toThrow(/^UPSTREAM_ARAMA_URL: only EPOSTA/)
    expect(() => new Upstreams({ MESAJ: null, EPOSTA: 'smtp://u:hunter22@relay.example?poool=1', ARAMA: null }, { ...SETTINGS, connections: 4 })).toThrow(/^UPSTREAM_EPOSTA_URL: SMTP carrier URL: unknown parameter poool/)
  })

  it('has no SMTP carrier when EPOSTA goes over HTTP or nowhere', async () => {
    const u = new Upstreams({ MESAJ: null, EPOSTA: 'http://127.0.0.1:1/', ARAMA: null }, { ...SETTINGS, connections: 4 })
    expect(u.smtp()).toBeNull()
    await u.destroy()
    const none = new Upstreams({ MESAJ: null, EPOSTA: null, ARAMA: null }, { ...SETTINGS, connections: 4 })
    expect(none.smtp()).toBeNull()
  })
})

describe('the fake SMTP relay by hand', () => {
  it('runs from dist/ under Node\'s own ESM loader, takes mail, prints its counters, and stops on SIGTERM', async () => {
    // dist/ is built by the tests' global set-up; this is also the check that the built carrier loads in plain Node.
    const carrierJs = fileURLToPath(new URL('../dist/src/carriers/smtp-upstream.js', import.meta.url))
    execFileSync(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(carrierJs)})`], { stdio: 'pipe' })
    const script = fileURLToPath(new URL('../dist/src/dev/fake-smtp.js', import.meta.url))
    const child = spawn(process.execPath, [script, '--port', '0', '--user', 'byhand', '--password', 'pw-by-hand'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d })
    const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
    try {
      await until(() => /listening on smtp:\/\/byhand:…@127\.0\.0\.1:\d+/.test(out) || child.exitCode !== null, 15_000, 'the listening line')
      const port = Number(/127\.0\.0\.1:(\d+)/.exec(out)?.[1])
      const c = carrier(`smtp://byhand:pw-by-hand@127.0.0.1:${port}?starttls=never`)
      expect(await c.send(eposta())).toMatchObject({ forwarded: true })
      await until(() => /logins=1 .*accepted=1/.test(out), 15_000, 'a counters line')
      expect(out).not.toContain('pw-by-hand')
    } finally {
      child.kill('SIGTERM')
    }
    expect(await exited).toBe(0)
  })
})

// Keeps the helper honest: the payload the tests above assume.
it('eposta() carries from, subject and body', () => {
  expect(payload(eposta())).toEqual({ from: 'news@acme.example', subject: 'Hello', body: 'Body' })
})
