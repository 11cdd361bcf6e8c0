// The SMTP spool and its relay worker with a scripted upstream (a Relayer whose answers each test writes; the real
// SMTP path, nodemailer to the gateway to smtp-server, is tested elsewhere). The clock is injected and every wait is
// on a condition: no test depends on how fast this machine is.

import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { CodedError } from '../src/domain/errors.js'
import type { RelayEnvelope, RelayOutcome } from '../src/carriers/smtp-upstream.js'
import { buildDsn, headerBlockEnd, MailRelay, withUnsubscribeHeaders, type RelayResult } from '../src/smtp/relay.js'
import { MailSpool, parseSegment, readSpoolLog, SpoolFullError, type SpoolRecipient, type SpoolState } from '../src/smtp/spool.js'
import { mulberry32 } from '../src/util/random.js'
import { until } from './helpers/redis-server.js'

const log = pino({ level: 'silent' })
const SENDER = 'news@acme.com.tr'
const T0 = 1_700_000_000_000
const HEADERS = 'From: Acme <news@acme.com.tr>\r\nTo: undisclosed-recipients:;\r\nSubject: Kampanya\r\nX-Folded: one\r\n  List-Unsubscribe: not a field, a continuation\r\nMessage-ID: <m1@acme.com.tr>\r\n'
const BODY = 'Merhaba,\r\n..a line that was dot-stuffed\r\nList-Unsubscribe: <https://in-the-body.example/>\r\n'
const RAW = Buffer.from(HEADERS + '\r\n' + BODY)
const LINKS_OF = (recipient: string): { url: string, mailto: string } => ({ url: `https://gw.example/v1/unsubscribe/tok-${recipient}`, mailto: 'unsubscribe@gw.example' })
const ADDED = (recipient: string): string => `List-Unsubscribe: <https://gw.example/v1/unsubscribe/tok-${recipient}>,\r\n <mailto:unsubscribe@gw.example>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n`

const rcpt = (address: string, commercial: boolean): SpoolRecipient => ({ address, brandCode: '600001', iysCode: '700001', commercial, messageId: `mid-${address}` })

interface Call { envelope: RelayEnvelope, raw: Buffer, at: number }

/** A Relayer whose answer to each copy is the test's `answer`. */
class ScriptedRelayer {
  readonly calls: Call[] = []
  active = 0
  maxActive = 0
  constructor (private readonly clock: { t: number }, public answer: (e: RelayEnvelope, raw: Buffer) => RelayOutcome | Promise<RelayOutcome> = () => ({ kind: 'accepted', response: '250 2.0.0 Ok: queued' })) {}
  async relay (envelope: RelayEnvelope, raw: Buffer): Promise<RelayOutcome> {
    this.calls.push({ envelope: { from: envelope.from, to: [...envelope.to] }, raw, at: this.clock.t })
    this.active++
    this.maxActive = Math.max(this.maxActive, this.active)
    try { return await this.answer(envelope, raw) } finally { this.active-- }
  }

  to (address: string): Call[] { return this.calls.filter(c => c.envelope.to[0] === address) }
}

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }) })
const tempDir = (): string => { const d = mkdtempSync(join(tmpdir(), 'iys-smtp-spool-')); dirs.push(d); return d }

interface Rig {
  dir: string
  clock: { t: number }
  spool: MailSpool
  relay: MailRelay
  relayer: ScriptedRelayer
  outcomes: [string, RelayResult, string][]
}

async function rig (opts: { dir?: string, clock?: { t: number }, maxBytes?: number, concurrency?: number, giveUpAfterMs?: number, answer?: ScriptedRelayer['answer'], start?: boolean } = {}): Promise<Rig> {
  const dir = opts.dir ?? tempDir()
  const clock = opts.clock ?? { t: T0 }
  const now = (): number => clock.t
  const spool = new MailSpool({ dir, maxBytes: opts.maxBytes ?? 1 << 20, log, now })
  await spool.open()
  const relayer = new ScriptedRelayer(clock, opts.answer)
  const outcomes: Rig['outcomes'] = []
  const relay = new MailRelay({
    spool,
    relayer,
    unsubscribe: r => LINKS_OF(r.recipient),
    onOutcome: (messageId, outcome, detail) => { outcomes.push([messageId, outcome, detail]) },
    log,
    retry: { baseMs: 1000, maxMs: 4000, giveUpAfterMs: opts.giveUpAfterMs ?? 3_600_000 },
    bounceFrom: 'MAILER-DAEMON@mx.gateway.test',
    concurrency: opts.concurrency ?? 8,
    now,
    random: () => 0 // every delay is the lower end of its range: base · 2^(n-1) / 2
  })
  if (opts.start !== false) relay.start()
  return { dir, clock, spool, relay, relayer, outcomes }
}

const WAIT = 20_000 // a hang guard, not a measurement
const files = (dir: string): string[] => readdirSync(dir).sort()
const stateOnDisk = async (dir: string, id: string): Promise<SpoolState> => (await readSpoolLog(dir)).find(s => s.id === id)!
/** The ids the spool's log lists as pending. */
const pendingOnDisk = async (dir: string): Promise<string[]> => (await readSpoolLog(dir)).map(s => s.id).sort()
/** The spool's files other than its log's segments. */
const nonLog = (dir: string): string[] => files(dir).filter(f => !/^\d{12}\.log$/.test(f))

/** A DSN's top-level headers and its MIME parts (each its headers and content). */
function parseDsn (raw: Buffer): { headers: string, parts: { headers: string, content: string }[] } {
  const text = raw.toString('latin1')
  const split = text.indexOf('\r\n\r\n')
  const headers = text.slice(0, split + 2)
  const boundary = /boundary="([^"]+)"/.exec(headers)![1]!
  const body = text.slice(split + 4)
  expect(body.trimEnd().endsWith(`--${boundary}--`)).toBe(true)
  const parts = body.split(`--${boundary}`).slice(1, -1).map(p => {
    const inner = p.replace(/^\r\n/, '')
    const i = inner.indexOf('\r\n\r\n')
    return { headers: inner.slice(0, i + 2), content: inner.slice(i + 4).replace(/\r\n$/, '') }
  })
  return { headers, parts }
}

describe('the relay', () => {
  it('sends one copy per recipient, adding the unsubscribe headers for commercial recipients only', async () => {
    const r = await rig()
    await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true), rcpt('b@x.test', false), rcpt('c@x.test', true)], raw: RAW })
    r.relay.kick()
    await until(() => r.spool.size === 0, WAIT, 'every copy delivered')
    expect(r.relayer.calls).toHaveLength(3)
    for (const c of r.relayer.calls) expect(c.envelope.from).toBe(SENDER)
    expect(r.relayer.calls.map(c => c.envelope.to).sort()).toEqual([['a@x.test'], ['b@x.test'], ['c@x.test']])
    expect(r.relayer.to('a@x.test')[0]!.raw.toString('latin1')).toBe(ADDED('a@x.test') + RAW.toString('latin1'))
    expect(r.relayer.to('c@x.test')[0]!.raw.toString('latin1')).toBe(ADDED('c@x.test') + RAW.toString('latin1'))
    expect(r.relayer.to('b@x.test')[0]!.raw.equals(RAW)).toBe(true) // informational: the message as it came
    expect(r.outcomes.map(o => [o[0], o[1]]).sort()).toEqual([['mid-a@x.test', 'delivered'], ['mid-b@x.test', 'delivered'], ['mid-c@x.test', 'delivered']])
    expect(r.outcomes[0]![2]).toBe('250 2.0.0 Ok: queued')
    await until(async () => (await pendingOnDisk(r.dir)).length === 0, WAIT, 'nothing pending on disk') // done: nothing left to send after a restart
    expect(r.spool.usedBytes).toBe(0)
  })

  it('does not add a second List-Unsubscribe to a message that has one (any case, folded)', async () => {
    const r = await rig()
    const own = Buffer.from('Subject: hi\r\nlist-unsubscribe:\r\n <https://sender.example/u/1>\r\nFrom: news@acme.com.tr\r\n\r\nbody\r\n')
    await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: own })
    r.relay.kick()
    await until(() => r.spool.size === 0, WAIT, 'the copy delivered')
    expect(r.relayer.calls[0]!.raw.equals(own)).toBe(true)
  })

  it('retries a temporary refusal after the back-off and delivers it then', async () => {
    let n = 0
    const r = await rig({ answer: () => ++n === 1 ? { kind: 'temporary', error: '4.3.0 try later', code: 451 } : { kind: 'accepted', response: '250 ok' } })
    const id = await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: RAW })
    r.relay.kick()
    await until(() => r.outcomes.length === 1, WAIT, 'the first attempt')
    expect(r.outcomes[0]).toEqual(['mid-a@x.test', 'retrying', '451 4.3.0 try later'])
    const expected = { state: 'pending', attempts: 1, nextAttemptAt: T0 + 500, lastAttemptAt: T0, lastError: '451 4.3.0 try later' }
    expect(r.spool.get(id)!.recipients[0]).toMatchObject(expected)
    expect((await stateOnDisk(r.dir, id)).recipients[0]).toMatchObject(expected) // on disk before the outcome was reported

    expect([...r.spool.due(T0 + 499)]).toEqual([])
    expect([...r.spool.due(T0 + 500)].map(e => e.id)).toEqual([id])
    r.relay.kick() // not due yet: nothing is sent
    await r.relay.idle()
    expect(r.relayer.calls).toHaveLength(1)

    r.clock.t = T0 + 500
    r.relay.kick()
    await until(() => r.spool.size === 0, WAIT, 'the second attempt')
    expect(r.relayer.calls).toHaveLength(2)
    expect(r.relayer.calls[1]!.raw.toString('latin1')).toBe(ADDED('a@x.test') + RAW.toString('latin1'))
    expect(r.outcomes.map(o => o[1])).toEqual(['retrying', 'delivered'])
  })

  it('takes a relayer that throws for a temporary refusal', async () => {
    let n = 0
    const r = await rig({ answer: () => { if (++n === 1) throw new Error('socket hang up'); return { kind: 'accepted', response: '250 ok' } } })
    await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', false)], raw: RAW })
    r.relay.kick()
    await until(() => r.outcomes.length === 1, WAIT, 'the first attempt')
    expect(r.outcomes[0]).toEqual(['mid-a@x.test', 'retrying', 'local: socket hang up'])
    r.clock.t = T0 + 500
    r.relay.kick()
    await until(() => r.spool.size === 0, WAIT, 'the second attempt')
    expect(r.relayer.calls).toHaveLength(2)
  })

  it('bounces a permanent refusal with an RFC 3464 DSN to the sender, sent from the empty sender', async () => {
    const r = await rig({ answer: e => e.from === '' ? { kind: 'accepted', response: '250 ok' } : { kind: 'permanent', error: '5.1.1 <a@x.test>: Recipient address rejected: User unknown', code: 550 } })
    const id = await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: RAW })
    r.relay.kick()
    await until(() => r.spool.size === 0, WAIT, 'the bounce delivered')
    expect(r.relayer.calls.map(c => c.envelope)).toEqual([{ from: SENDER, to: ['a@x.test'] }, { from: '', to: [SENDER] }])
    expect(r.outcomes).toEqual([['mid-a@x.test', 'bounced', '550 5.1.1 <a@x.test>: Recipient address rejected: User unknown']])

    const dsn = parseDsn(r.relayer.calls[1]!.raw)
    expect(dsn.headers).toMatch(/^From: Mail Delivery System <MAILER-DAEMON@mx\.gateway\.test>\r\n/m)
    expect(dsn.headers).toMatch(/^To: <news@acme\.com\.tr>\r\n/m)
    expect(dsn.headers).toMatch(/^Auto-Submitted: auto-replied\r\n/m)
    expect(dsn.headers).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status; boundary="[^"]+"\r\n/m)
    expect(dsn.headers).not.toMatch(/List-Unsubscribe/i) // a bounce is not commercial mail
    expect(dsn.parts.map(p => /^Content-Type: ([^;\r\n]+)/m.exec(p.headers)![1])).toEqual(['text/plain', 'message/delivery-status', 'text/rfc822-headers'])
    expect(dsn.parts[0]!.content).toContain('a@x.test')
    const [perMessage, perRecipient] = dsn.parts[1]!.content.split('\r\n\r\n')
    expect(perMessage).toBe(`Reporting-MTA: dns; mx.gateway.test\r\nArrival-Date: ${new Date(T0).toUTCString().replace('GMT', '+0000')}`)
    expect(perRecipient!.split('\r\n').slice(0, 4)).toEqual([
      'Final-Recipient: rfc822; a@x.test',
      'Action: failed',
      'Status: 5.1.1',
      'Diagnostic-Code: smtp; 550 5.1.1 <a@x.test>: Recipient address rejected: User unknown'
    ])
    expect(dsn.parts[2]!.content).toBe(HEADERS) // the original's header block, not its body
    expect(r.spool.get(id)).toBeUndefined()
    await until(async () => (await pendingOnDisk(r.dir)).length === 0, WAIT, 'nothing pending on disk')
  })

  it('sends no DSN for a message whose envelope sender was empty (a bounce itself)', async () => {
    const r = await rig({ answer: () => ({ kind: 'permanent', error: '550 5.7.1 refused' }) })
    await r.spool.accept({ envelopeFrom: '', recipients: [rcpt('a@x.test', false)], raw: RAW })
    r.relay.kick()
    await until(() => r.spool.size === 0, WAIT, 'the copy bounced')
    expect(r.relayer.calls).toHaveLength(1)
    expect(r.outcomes).toEqual([['mid-a@x.test', 'bounced', '550 5.7.1 refused']])
  })

  it('gives up when temporary refusals last until the deadline, the last try at the deadline, and bounces 5.4.7', async () => {
    const r = await rig({ giveUpAfterMs: 10_000, answer: e => e.from === '' ? { kind: 'accepted', response: '250 ok' } : { kind: 'temporary', error: '421 4.4.2 connection dropped' } })
    const id = await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: RAW })
    r.relay.kick()
    await r.relay.idle()
    for (let e = r.spool.get(id); e !== undefined; e = r.spool.get(id)) {
      r.clock.t = e.recipients[0]!.nextAttemptAt
      r.relay.kick()
      await r.relay.idle()
    }
    await until(() => r.spool.size === 0, WAIT, 'the bounce delivered')
    const attempts = r.relayer.to('a@x.test').map(c => c.at - T0)
    // random() = 0: 500, 1000, 2000, then maxMs/2 = 2000 each, the last one cut to the deadline.
    expect(attempts).toEqual([0, 500, 1500, 3500, 5500, 7500, 9500, 10_000])
    expect(r.outcomes.map(o => o[1])).toEqual([...Array(7).fill('retrying'), 'bounced'])
    const dsn = parseDsn(r.relayer.to(SENDER)[0]!.raw)
    expect(dsn.parts[1]!.content).toContain('\r\nStatus: 5.4.7\r\nDiagnostic-Code: smtp; 421 4.4.2 connection dropped\r\n')
  })

  it('sends at most `concurrency` copies at once, and stop() waits for those in flight', async () => {
    const held: ((o: RelayOutcome) => void)[] = []
    const r = await rig({ concurrency: 3, answer: () => new Promise(resolve => { held.push(resolve) }) })
    const id = await r.spool.accept({ envelopeFrom: SENDER, recipients: Array.from({ length: 10 }, (_, i) => rcpt(`r${i}@x.test`, false)), raw: RAW })
    r.relay.kick()
    await until(() => held.length === 3, WAIT, 'three copies in flight')
    r.relay.kick()
    await new Promise(resolve => setImmediate(resolve))
    expect(r.relay.inFlight).toBe(3)
    let stopped = false
    const stopping = r.relay.stop().then(() => { stopped = true })
    await new Promise(resolve => setImmediate(resolve))
    expect(stopped).toBe(false)
    for (const release of held.splice(0)) release({ kind: 'accepted', response: '250 ok' })
    await stopping
    expect(r.relayer.calls).toHaveLength(3) // none started after stop()
    expect(r.relayer.maxActive).toBe(3)
    expect((await stateOnDisk(r.dir, id)).recipients.filter(x => x.state === 'delivered')).toHaveLength(3)
  })
})

describe('a restart', () => {
  it('resumes pending recipients and does not send delivered ones again', async () => {
    const first = await rig({ answer: e => e.to[0] === 'b@x.test' ? { kind: 'temporary', error: '451 4.3.0 later' } : { kind: 'accepted', response: '250 ok' } })
    const id = await first.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true), rcpt('b@x.test', true)], raw: RAW })
    first.relay.kick()
    await until(() => first.outcomes.length === 2, WAIT, 'both first attempts')
    await first.relay.stop()
    await first.spool.close()
    expect(await pendingOnDisk(first.dir)).toEqual([id])
    expect((await stateOnDisk(first.dir, id)).recipients.map(x => [x.address, x.state, x.attempts])).toEqual([['a@x.test', 'delivered', 1], ['b@x.test', 'pending', 1]])

    const clock = { t: T0 + 60_000 }
    const second = await rig({ dir: first.dir, clock })
    expect(second.spool.size).toBe(1)
    expect(second.spool.usedBytes).toBe(RAW.length)
    await until(() => second.spool.size === 0, WAIT, 'the pending copy after the restart')
    expect(second.relayer.calls.map(c => c.envelope.to)).toEqual([['b@x.test']])
    expect(second.relayer.calls[0]!.raw.toString('latin1')).toBe(ADDED('b@x.test') + RAW.toString('latin1'))
    await until(async () => (await pendingOnDisk(first.dir)).length === 0, WAIT, 'nothing pending on disk')
    await until(() => files(first.dir).length === 1, WAIT, 'the first run\'s segment deleted') // the second run's own remains
  })

  it('sends again a copy that was in flight when the process died', async () => {
    const first = await rig({ answer: () => new Promise<RelayOutcome>(() => {}) }) // the upstream never answers: then the process dies
    const id = await first.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', false)], raw: RAW })
    first.relay.kick()
    await until(() => first.relayer.calls.length === 1, WAIT, 'the copy in flight')
    expect((await stateOnDisk(first.dir, id)).recipients[0]).toMatchObject({ state: 'pending', attempts: 0 })

    const second = await rig({ dir: first.dir })
    await until(() => second.spool.size === 0, WAIT, 'the copy sent again')
    expect(second.relayer.calls.map(c => c.envelope.to)).toEqual([['a@x.test']])
    expect(second.outcomes).toEqual([['mid-a@x.test', 'delivered', '250 2.0.0 Ok: queued']])
  })

  it('removes at open a message whose accept() never finished, and half-written states', async () => {
    const dir = tempDir()
    const before = await rig({ dir, start: false })
    const kept = await before.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: RAW })
    // A crash during accept(): the message written, its state not yet renamed into place.
    writeFileSync(join(dir, 'lz0abc123deadbeef0001.eml'), RAW.subarray(0, 40))
    writeFileSync(join(dir, 'lz0abc123deadbeef0001.json.tmp'), '{"v":1,"id":"lz0ab')
    // A state rewrite cut short beside a complete state.
    writeFileSync(join(dir, `${kept}.json.tmp`), '{')

    const after = new MailSpool({ dir, maxBytes: 1 << 20, log, now: () => T0 })
    const recovered = await after.open()
    expect(recovered.entries.map(e => e.id)).toEqual([kept])
    expect(recovered.discarded).toBe(1)
    expect(nonLog(dir)).toEqual([])
    expect(await pendingOnDisk(dir)).toEqual([kept])
    expect(after.usedBytes).toBe(RAW.length)
  })

  it('an accept() whose message stream fails leaves nothing behind and is never listed', async () => {
    const r = await rig({ start: false })
    async function * broken (): AsyncGenerator<Buffer> {
      yield RAW.subarray(0, 50)
      throw new Error('connection reset during DATA')
    }
    await expect(r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: broken() })).rejects.toThrow('connection reset')
    expect(await pendingOnDisk(r.dir)).toEqual([])
    expect(r.spool.size).toBe(0)
    expect(r.spool.usedBytes).toBe(0)
  })
})

describe('durability: group commit and the log', () => {
  it('concurrent accepts and changes share one write and one fdatasync, and each resolves only once its record is synced', async () => {
    const dir = tempDir()
    const durable = new Set<string>() // ids whose 'A' was in the file when a sync that has finished began
    const held: (() => void)[] = []
    let fileSyncs = 0
    let dirSyncs = 0
    const spool = new MailSpool({
      dir,
      maxBytes: 1 << 20,
      log,
      sync: {
        file: async (fh, path) => {
          fileSyncs++
          const written = parseSegment(readFileSync(path))!.records.flatMap(r => r.kind === 'A' ? [r.state.id] : [])
          await fh.datasync()
          await new Promise<void>(resolve => { held.push(resolve) })
          for (const id of written) durable.add(id)
        },
        dir: async d => { dirSyncs++; const fh = await open(d, 'r'); try { await fh.sync() } finally { await fh.close() } }
      }
    })
    await spool.open()
    const N = 20
    const resolved: string[] = []
    const early: string[] = [] // resolved before a sync that covers its record finished
    const accepts = Array.from({ length: N }, async (_, i) => {
      const id = await spool.accept({ envelopeFrom: SENDER, recipients: [rcpt(`r${i}@x.test`, false)], raw: RAW })
      if (!durable.has(id)) early.push(id)
      resolved.push(id)
    })
    const release = async (): Promise<void> => {
      await until(() => held.length > 0, WAIT, 'a sync')
      expect(resolved).toEqual([]) // nothing resolves while a sync is held
      held.shift()!()
    }
    await release() // the new segment's magic
    await release() // the batch: all N records
    await Promise.all(accepts)
    expect(early).toEqual([])
    expect(fileSyncs).toBe(2)
    expect(dirSyncs).toBe(1) // the segment's name, once

    const changes = resolved.map(id => spool.markFailed(id, 0, '451 later', T0 + 1000))
    await until(() => held.length > 0, WAIT, 'the changes\' sync')
    held.shift()!()
    await Promise.all(changes)
    expect(fileSyncs).toBe(3)
    expect((await readSpoolLog(dir)).map(s => s.recipients[0]!.attempts)).toEqual(Array(N).fill(1))
  })

  /** A spool folder with one segment: `kept`'s record whole, then `torn` (the bytes of a record or records after it). */
  async function crashed (torn: (segment: Buffer, keptEnd: number) => Buffer): Promise<{ dir: string, kept: string }> {
    const src = tempDir()
    const before = new MailSpool({ dir: src, maxBytes: 1 << 20, log, now: () => T0 })
    await before.open()
    const kept = await before.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true), rcpt('b@x.test', true)], raw: RAW })
    const keptEnd = statSync(join(src, '000000000001.log')).size
    await before.accept({ envelopeFrom: SENDER, recipients: [rcpt('c@x.test', true)], raw: RAW })
    await before.markFailed(kept, 0, '451 later', T0 + 1000)
    await before.close()
    const dir = tempDir()
    writeFileSync(join(dir, '000000000001.log'), torn(readFileSync(join(src, '000000000001.log')), keptEnd))
    return { dir, kept }
  }

  it('a record cut short or torn inside (an accept or change that never resolved) is ignored, and nothing is written after it', async () => {
    const { dir: full } = await crashed(s => s)
    const whole = readFileSync(join(full, '000000000001.log'))
    const keptEnd = (await crashed((s, end) => s.subarray(0, end))).dir
    const secondEnd = parseSegment(readFileSync(join(keptEnd, '000000000001.log')))!.end
    for (const cut of [secondEnd + 1, secondEnd + 8, secondEnd + 20, secondEnd + 20 + RAW.length]) {
      const { dir, kept } = await crashed(s => s.subarray(0, cut))
      const spool = new MailSpool({ dir, maxBytes: 1 << 20, log, now: () => T0 })
      const recovered = await spool.open()
      expect(recovered.entries.map(e => e.id)).toEqual([kept]) // the second accept never resolved: not listed
      expect(recovered.entries[0]!.recipients.map(r => r.state)).toEqual(['pending', 'pending'])
      expect(recovered.discarded).toBe(1)
      expect((await spool.read(kept)).equals(RAW)).toBe(true)
      expect(await spool.markDelivered(kept, 1, '250 ok')).toBe(false) // goes to a new segment, not after the torn bytes
      expect(files(dir)).toEqual(['000000000001.log', '000000000002.log'])
      expect(readFileSync(join(dir, '000000000001.log')).length).toBe(cut)
      expect((await stateOnDisk(dir, kept)).recipients.map(r => r.state)).toEqual(['pending', 'delivered'])
    }
    // The right length, but a block of the second message never reached the disk: its crc tells.
    const { dir, kept } = await crashed(s => { const t = Buffer.from(s); t.fill(0, secondEnd + 40, secondEnd + 60); return t })
    expect(whole.length).toBeGreaterThan(secondEnd + 60)
    const recovered = await new MailSpool({ dir, maxBytes: 1 << 20, log, now: () => T0 }).open()
    expect(recovered.entries.map(e => e.id)).toEqual([kept])
    expect(recovered.discarded).toBe(1)
  })

  it('a change cut short is not applied; the changes before it are', async () => {
    const { dir, kept } = await crashed(s => s.subarray(0, s.length - 3)) // the last record: the change to recipient 0
    const { dir: whole, kept: keptWhole } = await crashed(s => s)
    const cut = await new MailSpool({ dir, maxBytes: 1 << 20, log, now: () => T0 }).open()
    expect(cut.entries.find(e => e.id === kept)!.recipients.map(r => [r.state, r.attempts])).toEqual([['pending', 0], ['pending', 0]])
    const full = await new MailSpool({ dir: whole, maxBytes: 1 << 20, log, now: () => T0 }).open()
    expect(full.entries.find(e => e.id === keptWhole)!.recipients.map(r => [r.state, r.attempts, r.nextAttemptAt])).toEqual([['pending', 1, T0 + 1000], ['pending', 0, 0]])
    expect(full.entries).toHaveLength(2)
  })

  it('keeps the log bounded: rotates segments, deletes done ones, and writes a long-pending message again at the end', async () => {
    const dir = tempDir()
    const opts = { dir, maxBytes: 1 << 20, log, now: () => T0, segmentBytes: 4096, maxSegments: 3 }
    const spool = new MailSpool(opts)
    await spool.open()
    const slow = await spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('slow@x.test', true), rcpt('b@x.test', true)], raw: RAW })
    await spool.markFailed(slow, 0, '451 later', T0 + 3_600_000)
    let most = 0
    for (let i = 0; i < 60; i++) {
      const id = await spool.accept({ envelopeFrom: SENDER, recipients: [rcpt(`r${i}@x.test`, false)], raw: RAW })
      expect(await spool.markDelivered(id, 0, '250 ok')).toBe(true)
      most = Math.max(most, files(dir).length)
    }
    await spool.close()
    expect(most).toBeLessThanOrEqual(5) // maxSegments, the current one, one being moved out
    expect(files(dir)[0]).not.toBe('000000000001.log') // the first segment went, though its message is still pending
    expect((await readSpoolLog(dir)).map(s => s.id)).toEqual([slow])

    const again = new MailSpool(opts)
    const [entry] = (await again.open()).entries
    expect(entry!.id).toBe(slow)
    expect(entry!.recipients.map(r => [r.state, r.attempts])).toEqual([['pending', 1], ['pending', 0]])
    expect((await again.read(slow)).equals(RAW)).toBe(true)
    expect(await again.markDelivered(slow, 0, '250 ok')).toBe(false)
    expect(await again.markDelivered(slow, 1, '250 ok')).toBe(true)
    await until(() => files(dir).length === 1, WAIT, 'every segment but the current one deleted')
  })

  it('a message whose fdatasync failed is refused, and not brought back at the next start', async () => {
    const dir = tempDir()
    let failNext = false
    const spool = new MailSpool({
      dir,
      maxBytes: 1 << 20,
      log,
      sync: {
        file: async fh => { await fh.datasync(); if (failNext) { failNext = false; throw new Error('EIO on fdatasync') } },
        dir: async () => {}
      }
    })
    await spool.open()
    const kept = await spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: RAW })
    failNext = true // the batch's bytes are all written; only its sync fails
    await expect(spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('b@x.test', true)], raw: RAW })).rejects.toThrow('EIO')
    const after = await new MailSpool({ dir, maxBytes: 1 << 20, log }).open()
    expect(after.entries.map(e => e.id)).toEqual([kept])
  })

  it('an operator\'s remove() is durable: the message is not listed after a restart', async () => {
    const r = await rig({ start: false })
    const id = await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', true)], raw: RAW })
    await r.spool.remove(id)
    expect(r.spool.usedBytes).toBe(0)
    expect((await new MailSpool({ dir: r.dir, maxBytes: 1 << 20, log }).open()).entries).toEqual([])
  })

  it('reads a spool of the previous format (<id>.eml and <id>.json), keeps its changes in it, and removes it when done', async () => {
    const dir = tempDir()
    const oldId = (Date.now() - 60_000).toString(36).padStart(9, '0') + '00deadbeef42' // the id of a minute ago
    const old: SpoolState = {
      v: 1,
      id: oldId,
      envelopeFrom: SENDER,
      acceptedAt: T0 - 1000,
      bytes: RAW.length,
      recipients: [
        { ...rcpt('a@x.test', true), state: 'delivered', attempts: 1, nextAttemptAt: 0, lastAttemptAt: T0 - 900, lastResponse: '250 ok' },
        { ...rcpt('b@x.test', true), state: 'pending', attempts: 0, nextAttemptAt: 0 },
        { ...rcpt('c@x.test', false), state: 'pending', attempts: 0, nextAttemptAt: 0 }
      ]
    }
    writeFileSync(join(dir, `${oldId}.eml`), RAW)
    writeFileSync(join(dir, `${oldId}.json`), JSON.stringify(old))
    const first = await rig({ dir, answer: e => e.to[0] === 'c@x.test' ? { kind: 'temporary', error: '451 4.3.0 later' } : { kind: 'accepted', response: '250 ok' } })
    expect(first.spool.size).toBe(1)
    expect(first.spool.usedBytes).toBe(RAW.length)
    const newId = await first.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('d@x.test', false)], raw: RAW })
    first.relay.kick()
    await until(() => first.outcomes.length === 3, WAIT, 'b and c of the old message, d of the new')
    await first.relay.stop()
    await first.spool.close()
    expect(first.relayer.calls.map(c => c.envelope.to[0]).sort()).toEqual(['b@x.test', 'c@x.test', 'd@x.test'])
    expect(first.relayer.to('b@x.test')[0]!.raw.toString('latin1')).toBe(ADDED('b@x.test') + RAW.toString('latin1'))
    expect(nonLog(dir)).toEqual([`${oldId}.eml`, `${oldId}.json`]) // the old one stays in its format
    expect(await pendingOnDisk(dir)).toEqual([]) // the new one is done
    const onDisk = JSON.parse(readFileSync(join(dir, `${oldId}.json`), 'utf8')) as SpoolState
    expect(onDisk.recipients.map(r => r.state)).toEqual(['delivered', 'delivered', 'pending'])
    expect(newId > oldId).toBe(true)

    const second = await rig({ dir, clock: { t: T0 + 60_000 } })
    expect(second.spool.size).toBe(1)
    await until(() => second.spool.size === 0, WAIT, 'c after the restart')
    expect(second.relayer.calls.map(c => c.envelope.to)).toEqual([['c@x.test']])
    expect(second.relayer.calls[0]!.raw.equals(RAW)).toBe(true)
    await until(() => nonLog(dir).length === 0, WAIT, 'its files removed')
  })
})

describe('the spool limit', () => {
  it('refuses a message that would pass maxBytes with SpoolFullError, and takes it again once there is room', async () => {
    const r = await rig({ maxBytes: 1000, start: false })
    const msg = Buffer.alloc(600, 'x')
    const id = await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('a@x.test', false)], raw: msg })
    const refused = await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('b@x.test', false)], raw: msg }).catch((err: unknown) => err)
    expect(refused).toBeInstanceOf(SpoolFullError)
    expect(refused).toBeInstanceOf(CodedError)
    expect((refused as SpoolFullError).code).toBe('STORAGE_FULL')
    async function * chunks (): AsyncGenerator<Buffer> { for (let i = 0; i < 3; i++) yield Buffer.alloc(200, 'y') }
    await expect(r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('c@x.test', false)], raw: chunks() })).rejects.toBeInstanceOf(SpoolFullError)
    expect(await pendingOnDisk(r.dir)).toEqual([id]) // the streamed one never reached the log
    expect(r.spool.usedBytes).toBe(600)

    r.relay.start()
    await until(() => r.spool.size === 0, WAIT, 'the first message delivered')
    expect(r.spool.usedBytes).toBe(0)
    await r.spool.accept({ envelopeFrom: SENDER, recipients: [rcpt('b@x.test', false)], raw: msg })
  })
})

describe('withUnsubscribeHeaders', () => {
  it('puts both fields at the top and keeps every byte of the message after them, body included', () => {
    const rand = mulberry32(15)
    for (let n = 0; n < 200; n++) {
      const body = Buffer.from(Array.from({ length: Math.floor(rand() * 2000) }, () => Math.floor(rand() * 256))) // not UTF-8, CR and LF anywhere
      const raw = Buffer.concat([Buffer.from(HEADERS + '\r\n'), body])
      const out = withUnsubscribeHeaders(raw, 'https://gw.example/u/t')
      const added = 'List-Unsubscribe: <https://gw.example/u/t>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n'
      expect(out.subarray(0, added.length).toString('latin1')).toBe(added)
      expect(out.subarray(added.length).equals(raw)).toBe(true)
      expect(out.subarray(out.length - body.length).equals(body)).toBe(true)
    }
  })

  it('keeps the message\'s line endings: LF-only stays LF-only', () => {
    const raw = Buffer.from('Subject: x\nFrom: a@b\n\nbody\r\nmixed\n')
    expect(withUnsubscribeHeaders(raw, 'https://gw.example/u/t').toString('latin1'))
      .toBe('List-Unsubscribe: <https://gw.example/u/t>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n' + raw.toString('latin1'))
  })

  it('reads only the header block, unfolded: a field in the body or in a continuation line does not count', () => {
    const raw = Buffer.from('Subject: x\r\nX-Note: see\r\n\tList-Unsubscribe: <https://continuation>\r\n\r\nList-Unsubscribe: <https://in-body>\r\n')
    expect(withUnsubscribeHeaders(raw, 'https://gw.example/u/t').length).toBeGreaterThan(raw.length)
  })

  it('leaves a message with a List-Unsubscribe field alone, whatever its case and spacing', () => {
    for (const field of ['List-Unsubscribe: <https://s/u>', 'LIST-UNSUBSCRIBE :<https://s/u>', 'list-unsubscribe:\r\n <mailto:u@s>']) {
      const raw = Buffer.from(`Subject: x\r\n${field}\r\n\r\nbody`)
      expect(withUnsubscribeHeaders(raw, 'https://gw.example/u/t')).toBe(raw)
    }
  })

  it('does not double a List-Unsubscribe-Post the message has without List-Unsubscribe', () => {
    const raw = Buffer.from('List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nSubject: x\r\n\r\nbody')
    expect(withUnsubscribeHeaders(raw, 'https://gw.example/u/t', 'u@gw.example').toString('latin1'))
      .toBe('List-Unsubscribe: <https://gw.example/u/t>, <mailto:u@gw.example>\r\n' + raw.toString('latin1'))
  })

  it('handles a message of headers only, and one without headers', () => {
    const headersOnly = Buffer.from('Subject: x\r\nFrom: a@b\r\n')
    expect(headerBlockEnd(headersOnly)).toBe(headersOnly.length)
    expect(headerBlockEnd(Buffer.from('\r\nbody'))).toBe(0)
    expect(withUnsubscribeHeaders(Buffer.from('\r\nList-Unsubscribe: <x>'), 'https://g/u').toString('latin1'))
      .toBe('List-Unsubscribe: <https://g/u>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nList-Unsubscribe: <x>')
  })

  it('refuses a link that would break out of the header (CR, LF, angle brackets, spaces)', () => {
    for (const bad of ['https://g/u\r\nBcc: x@y', 'https://g/u>', 'https://g/ u', '']) {
      expect(() => withUnsubscribeHeaders(RAW, bad)).toThrow(TypeError)
    }
    expect(() => withUnsubscribeHeaders(RAW, 'https://g/u', 'a@b\r\nBcc: c@d')).toThrow(TypeError)
  })
})

describe('buildDsn', () => {
  it('keeps values on one line and ends the original headers with CRLF before the closing boundary', () => {
    const dsn = buildDsn({
      reportingMta: 'mx.gateway.test',
      from: 'MAILER-DAEMON@mx.gateway.test',
      to: SENDER,
      recipient: 'a@x.test',
      status: '5.0.0',
      diagnostic: '550 refused\r\nBcc: injected@x.test',
      reason: 'Refused.',
      originalHeaders: Buffer.from('Subject: x\nFrom: a@b'),
      arrivalDate: new Date(T0),
      date: new Date(T0 + 1000),
      messageId: 'dsn1@mx.gateway.test',
      boundary: 'BOUNDARY'
    })
    const parsed = parseDsn(dsn)
    expect(parsed.parts[1]!.content).toContain('\r\nDiagnostic-Code: smtp; 550 refused Bcc: injected@x.test\r\n')
    expect(parsed.parts[2]!.content).toBe('Subject: x\r\nFrom: a@b\r\n')
    expect(dsn.toString('latin1').endsWith('\r\n--BOUNDARY--\r\n')).toBe(true)
  })
})
