// The relay with a backlog (issue 15): while the upstream is down the spool fills with messages whose copies wait for
// their back-off, and a pass must look at the copies it starts and at the next one due, never at all of them (a pass
// per completion over every message made a backlog of N cost N² steps). What a pass looks at is counted on the spool's
// own recipient states (a Proxy on each), so a walk over them anywhere, relay or spool, is seen. A real spool on a temp
// dir (its fsyncs skipped: they are not what is measured), a scripted upstream, an injected clock; no timing thresholds.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import type { RelayEnvelope, RelayOutcome } from '../src/carriers/smtp-upstream.js'
import { DueHeap } from '../src/smtp/due-heap.js'
import { MailRelay, type RelayResult } from '../src/smtp/relay.js'
import { MailSpool, readSpoolLog, type RecipientState, type SpoolEntry, type SpoolRecipient } from '../src/smtp/spool.js'
import { mulberry32 } from '../src/util/random.js'
import { until } from './helpers/redis-server.js'

const log = pino({ level: 'silent' })
const T0 = 1_700_000_000_000
const RAW = Buffer.from('From: news@acme.com.tr\r\nSubject: Kampanya\r\n\r\nMerhaba\r\n')
const N = 3000
const CONCURRENCY = 8
const WAIT = 60_000 // a hang guard, not a measurement
const noSync = { file: async (): Promise<void> => {}, dir: async (): Promise<void> => {} }

const dirs: string[] = []
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }) })

/** Counts reads of `state` and `nextAttemptAt` (what tells a pending, due copy) of the recipients it is put on. */
class Visits {
  reads = 0
  readonly seen = new Set<string>()
  watch (entry: SpoolEntry): void {
    const recipients = entry.recipients as RecipientState[]
    for (let i = 0; i < recipients.length; i++) {
      const key = `${entry.id}/${i}`
      recipients[i] = new Proxy(recipients[i]!, {
        get: (target, prop, receiver) => {
          if (prop === 'state' || prop === 'nextAttemptAt') { this.reads++; this.seen.add(key) }
          return Reflect.get(target, prop, receiver) as unknown
        }
      })
    }
  }

  reset (): void { this.reads = 0; this.seen.clear() }
}

function relayOf (spool: MailSpool, clock: { t: number }, answer: (e: RelayEnvelope) => RelayOutcome): { relay: MailRelay, calls: string[], outcomes: [string, RelayResult][] } {
  const calls: string[] = []
  const outcomes: [string, RelayResult][] = []
  const relay = new MailRelay({
    spool,
    relayer: { relay: async e => { calls.push(e.to[0]!); return answer(e) } },
    unsubscribe: () => null,
    onOutcome: (messageId, outcome) => { outcomes.push([messageId, outcome]) },
    log,
    retry: { baseMs: 1000, maxMs: 4000, giveUpAfterMs: 3_600_000 },
    bounceFrom: 'MAILER-DAEMON@mx.gateway.test',
    concurrency: CONCURRENCY,
    now: () => clock.t,
    random: () => 0 // every first retry at T0 + 500
  })
  return { relay, calls, outcomes }
}

const address = (n: number): string => `r${n}@x.test`
const rcpt = (a: string): SpoolRecipient => ({ address: a, brandCode: '600001', iysCode: '700001', commercial: false, messageId: `mid-${a}` })
const tempDir = (): string => { const d = mkdtempSync(join(tmpdir(), 'iys-smtp-backlog-')); dirs.push(d); return d }

describe('the due heap', () => {
  it('gives its items back by time, then in the order they came, as a sorted list of the same items does', () => {
    const random = mulberry32(15)
    const heap = new DueHeap<{ at: number, seq: number }>()
    const plain: { at: number, seq: number }[] = [] // the same items, searched in full at every pop
    let seq = 0
    for (let step = 0; step < 20_000 || heap.size > 0; step++) {
      if (step < 20_000 && random() < 0.6) {
        const item = { at: Math.floor(random() * 50), seq: ++seq } // few distinct times: many ties
        heap.push(item)
        plain.push(item)
      } else {
        let least = -1
        for (let i = 0; i < plain.length; i++) if (least === -1 || plain[i]!.at < plain[least]!.at || (plain[i]!.at === plain[least]!.at && plain[i]!.seq < plain[least]!.seq)) least = i
        const expected = least === -1 ? undefined : plain.splice(least, 1)[0]
        expect(heap.peek()).toBe(expected)
        expect(heap.pop()).toBe(expected)
      }
      expect(heap.size).toBe(plain.length)
    }
    expect(seq).toBeGreaterThan(10_000)
  })
})

describe('the spool\'s due index', () => {
  it('hands out each pending copy once, when due, and follows markFailed, remove() and a restart', async () => {
    const dir = tempDir()
    const clock = { t: T0 }
    const spool = new MailSpool({ dir, maxBytes: 1 << 20, log, now: () => clock.t, sync: noSync })
    await spool.open()
    const a = await spool.accept({ envelopeFrom: '', recipients: [rcpt('a1@x.test'), rcpt('a2@x.test')], raw: RAW })
    const b = await spool.accept({ envelopeFrom: '', recipients: [rcpt('b1@x.test')], raw: RAW })
    const c = await spool.accept({ envelopeFrom: '', recipients: [rcpt('c1@x.test')], raw: RAW })
    expect(spool.nextDueAt).toBe(0)
    const taken = (): string[] => { const t: string[] = []; for (let d = spool.takeDue(clock.t); d !== undefined; d = spool.takeDue(clock.t)) t.push(`${d.entry.id}/${d.index}`); return t }
    expect(taken()).toEqual([`${a}/0`, `${a}/1`, `${b}/0`, `${c}/0`]) // oldest first
    expect(taken()).toEqual([]) // taken: not handed out again
    expect(spool.nextDueAt).toBe(Infinity)

    await spool.markFailed(a, 0, '451 later', T0 + 300)
    await spool.markFailed(b, 0, '451 later', T0 + 100)
    await spool.markDelivered(a, 1, '250 ok')
    spool.requeue(c, 0)
    spool.requeue(c, 0) // once only
    spool.requeue(a, 1) // delivered: not indexed
    expect(spool.nextDueAt).toBe(0)
    expect(taken()).toEqual([`${c}/0`])
    expect(spool.nextDueAt).toBe(T0 + 100)
    clock.t = T0 + 100
    expect(taken()).toEqual([`${b}/0`])
    await spool.markFailed(b, 0, '451 later', T0 + 200)
    await spool.remove(b) // its item in the index is skipped
    clock.t = T0 + 1000
    expect(spool.nextDueAt).toBe(T0 + 300)
    const d = await spool.accept({ envelopeFrom: '', recipients: [rcpt('d1@x.test')], raw: RAW })
    expect(spool.nextDueAt).toBe(0)
    expect(taken()).toEqual([`${a}/0`, `${d}/0`]) // in the order they became due: the retry at T0 + 300 first
    spool.requeue(a, 0)
    spool.requeue(c, 0)
    spool.requeue(d, 0)

    await spool.close()
    const again = new MailSpool({ dir, maxBytes: 1 << 20, log, now: () => clock.t, sync: noSync })
    await again.open()
    expect(again.nextDueAt).toBe(0) // c's and d's copies, never tried: at once
    const takenAgain: string[] = []
    for (let due = again.takeDue(clock.t); due !== undefined; due = again.takeDue(clock.t)) takenAgain.push(`${due.entry.id}/${due.index}`)
    expect(takenAgain).toEqual([`${c}/0`, `${a}/0`, `${d}/0`]) // due at T0, T0 + 300, T0 + 1000
    await again.close()
  })

  it('does not start a copy again while the outcome of its last attempt is being written, and sends it once that is done', async () => {
    const dir = tempDir()
    const clock = { t: T0 }
    let hold: Promise<void> | null = null
    let release = (): void => {}
    const spool = new MailSpool({ dir, maxBytes: 1 << 20, log, now: () => clock.t, sync: { file: async () => { await hold }, dir: async () => {} } })
    await spool.open()
    let n = 0
    const r = relayOf(spool, clock, () => {
      if (++n > 1) return { kind: 'accepted', response: '250 ok' }
      hold = new Promise(resolve => { release = resolve }) // the refusal's write waits
      return { kind: 'temporary', error: '451 later' }
    })
    await spool.accept({ envelopeFrom: '', recipients: [rcpt('a@x.test')], raw: RAW })
    r.relay.start()
    await until(() => spool.nextDueAt === T0 + 500, WAIT, 'the refusal in memory, its write held')
    clock.t = T0 + 500 // due again (a clock that jumps) while its attempt is still in flight
    r.relay.kick()
    await new Promise(resolve => setImmediate(resolve))
    await new Promise(resolve => setImmediate(resolve))
    expect(r.calls).toHaveLength(1)
    expect(r.relay.inFlight).toBe(1)
    expect(spool.nextDueAt).toBe(T0 + 500) // put back, not lost
    hold = null
    release()
    await until(() => spool.size === 0, WAIT, 'the second attempt')
    await r.relay.idle()
    expect(r.calls).toEqual(['a@x.test', 'a@x.test'])
    expect(r.outcomes.map(o => o[1])).toEqual(['retrying', 'delivered'])
    await r.relay.stop()
    await spool.close()
  })
})

describe('the relay with a backlog', () => {
  it('looks at the copies it starts and the next one due, not at every copy backing off, and still delivers each once', async () => {
    const dir = tempDir()
    const clock = { t: T0 }
    const spoolOf = (): MailSpool => new MailSpool({ dir, maxBytes: 1 << 30, log, now: () => clock.t, sync: noSync })

    // The upstream is down: every copy of the backlog is refused once and waits for its back-off.
    const first = spoolOf()
    await first.open()
    for (let n = 0; n < N; n += 500) {
      await Promise.all(Array.from({ length: Math.min(500, N - n) }, (_, k) =>
        first.accept({ envelopeFrom: 'news@acme.com.tr', recipients: [{ address: address(n + k), brandCode: '600001', iysCode: '700001', commercial: false, messageId: `mid-${n + k}` }], raw: RAW })))
    }
    const visits = new Visits()
    for (const e of first.entries()) visits.watch(e)
    const down = relayOf(first, clock, () => ({ kind: 'temporary', error: '421 4.4.2 upstream down' }))
    down.relay.start()
    await until(() => down.outcomes.length === N, WAIT, 'every first attempt refused')
    await down.relay.idle()
    expect(down.outcomes.every(o => o[1] === 'retrying')).toBe(true)
    // Each copy's own outcome reads its state a few times; a walk over the spool per completion reads ~N² / 2.
    expect.soft(visits.reads).toBeLessThanOrEqual(20 * N)
    await down.relay.stop()
    await first.close()

    // A restart: the backlog comes from disk, and the upstream is back. One new message is due, the backlog is not.
    clock.t = T0 + 100
    const second = spoolOf()
    await second.open()
    expect(second.size).toBe(N)
    const up = relayOf(second, clock, () => ({ kind: 'accepted', response: '250 2.0.0 Ok' }))
    await second.accept({ envelopeFrom: 'news@acme.com.tr', recipients: [{ address: 'fresh@x.test', brandCode: '600001', iysCode: '700001', commercial: false, messageId: 'mid-fresh' }], raw: RAW })
    visits.reset()
    for (const e of second.entries()) visits.watch(e)
    up.relay.start()
    await until(() => up.outcomes.length === 1, WAIT, 'the new message delivered')
    await up.relay.idle()
    expect(up.calls).toEqual(['fresh@x.test'])
    expect.soft(visits.seen.size).toBeLessThanOrEqual(CONCURRENCY + 2) // the copy sent and the next one due; not the N others
    expect(second.size).toBe(N)

    // The back-off ends: the relay's own timer (set for the next copy due) drains the backlog, each copy exactly once.
    visits.reset()
    clock.t = T0 + 500
    await until(() => second.size === 0, WAIT, 'the backlog delivered')
    await up.relay.idle()
    expect.soft(visits.reads).toBeLessThanOrEqual(20 * N)
    expect(up.calls).toHaveLength(N + 1)
    expect(new Set(up.calls).size).toBe(N + 1)
    expect(up.outcomes.filter(o => o[1] === 'delivered').map(o => o[0]).sort()).toEqual(['mid-fresh', ...Array.from({ length: N }, (_, n) => `mid-${n}`)].sort())
    await until(async () => (await readSpoolLog(dir)).length === 0, WAIT, 'nothing pending on disk')
    await up.relay.stop()
    await second.close()
  })
})
