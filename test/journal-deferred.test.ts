// The journal's deferred appends (deferAppends, used by the SMPP front end): the appends of one turn go to disk in
// one write at its end, in their order; `written` resolves only once they are on disk, and rejects, undoing their
// lines and pins, when the disk refuses them. And an SMPP submit is forwarded only after its decision is written.

import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { PDU } from 'smpp'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DecisionLog } from '../src/audit/decision-log.js'
import { DecisionsHook } from '../src/audit/decisions-hook.js'
import { deferAppends, Journal } from '../src/audit/journal.js'
import type { SmppLogin } from '../src/auth/key-store.js'
import type { Checker, CheckQuery, CheckResult } from '../src/check/checker.js'
import type { UpstreamOutcome } from '../src/carriers/upstream.js'
import { createLogger } from '../src/log.js'
import { Metrics } from '../src/metrics.js'
import { DEFAULT_SMPP_STATUS } from '../src/domain/smpp-status.js'
import { MemoryReceiptStore } from '../src/smpp/receipts.js'
import { SubmitHandler } from '../src/smpp/submit.js'

let dir = ''
const journals: Journal[] = []
const syncErrors: Error[] = []
const open = (): Journal => {
  const j = new Journal({ dir, fsyncMs: 1000, fullLines: 1_000_000, onFull: () => {}, onSyncError: err => { syncErrors.push(err) } })
  journals.push(j)
  return j
}
const segmentText = (): string => readdirSync(dir).filter(f => f.endsWith('.jnl')).sort().map(f => readFileSync(join(dir, f), 'utf8')).join('')

beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'iys-jnl-')); syncErrors.length = 0 })
afterEach(async () => {
  for (const j of journals.splice(0)) await j.close()
  rmSync(dir, { recursive: true, force: true })
})

describe('deferred journal appends', () => {
  it('writes the appends of one turn together at its end, in their order, and resolves only once they are on disk', async () => {
    const j = open()
    await j.start()
    const a = deferAppends(() => j.append('a\n', 1, false))
    const b = deferAppends(() => j.append('b\n', 1, true))
    deferAppends(() => j.appendTo(b.value, 'b-outcome\n'))
    expect(segmentText()).toBe('') // nothing written yet: the turn is not over
    let resolved = false
    void a.written.then(() => { resolved = true })
    await Promise.resolve()
    expect(resolved).toBe(false)
    await Promise.all([a.written, b.written])
    expect(segmentText()).toBe('a\nb\nb-outcome\n')
    expect(a.value).toBe(b.value) // one segment
    expect(b.value.lines).toBe(2)
    expect(b.value.pins).toBe(1)
    j.unpin(b.value)
  })

  it('writes what was deferred before a plain append in the same turn first', async () => {
    const j = open()
    await j.start()
    const d = deferAppends(() => j.append('deferred\n', 1, false))
    j.append('plain\n', 1, false)
    expect(segmentText()).toBe('deferred\nplain\n')
    await d.written
    expect(segmentText()).toBe('deferred\nplain\n')
  })

  it('gives a resolved promise when nothing was appended', async () => {
    const d = deferAppends(() => 42)
    expect(d.value).toBe(42)
    await expect(d.written).resolves.toBeUndefined()
  })

  it('rejects every append of a batch the disk refused, undoes its lines and pins, and still closes', async () => {
    const j = open()
    await j.start()
    const first = j.append('ok\n', 1, false) // a plain append: the segment exists, written
    const realFd = first.fd
    const full = openSync('/dev/full', 'w') // every write: ENOSPC
    first.fd = full
    const a = deferAppends(() => j.append('lost-a\n', 1, true))
    const b = deferAppends(() => j.append('lost-b\n', 1, true))
    await expect(a.written).rejects.toThrow(/ENOSPC|space/)
    await expect(b.written).rejects.toThrow(/ENOSPC|space/)
    expect(first.lines).toBe(1)
    expect(first.pins).toBe(0) // nobody will unpin them: the journal did
    expect(syncErrors.length).toBe(1) // one report for the batch
    first.fd = realFd
    closeSync(full)
    await j.close() // waits for the segment to be finished: it would hang on a leaked pin
    expect(segmentText()).toBe('ok\n')
  })

  it('writes a closing segment\'s deferred outcomes before it is synced and closed', async () => {
    const j = open()
    await j.start()
    const seg = j.append('M1\n', 1, true)
    j.rotate() // closing, pinned
    deferAppends(() => j.appendTo(seg, 'O1\n'))
    j.unpin(seg) // the last pin: finish() runs now, before the turn's write
    await j.close()
    expect(segmentText()).toBe('M1\nO1\n')
  })
})

describe('an SMPP submit and the journal', () => {
  it('forwards a submit only once its decision is on disk, and writes the decisions of one turn in one go', async () => {
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres', max: 1 }) // never queried: nothing is shipped
    const log = new DecisionLog({ pool, spoolDir: dir, log: createLogger('silent'), fsyncMs: 1000 })
    const metrics = new Metrics()
    const checker = { check: (q: CheckQuery): CheckResult[] => q.recipients.map(r => ({ recipient: r, normalized: String(r), allowed: true, reason: 'CONSENT' })) } as unknown as Checker
    const seenAtForward: string[] = []
    const submits = new SubmitHandler({
      checker,
      decisions: new DecisionsHook({ metrics, decisionLog: log }),
      upstreams: {
        send: async (m: { recipient: string }): Promise<UpstreamOutcome> => {
          seenAtForward.push(segmentText()) // what the journal holds when the message leaves
          return { forwarded: true, status: 'accepted', carrierId: 'op-' + m.recipient, attempts: 1 }
        }
      } as never,
      receipts: new MemoryReceiptStore({ ttlSeconds: 60, queueMax: 10 }),
      metrics,
      statuses: DEFAULT_SMPP_STATUS,
      originatorBrand: () => null,
      concatTtlMs: 1000,
      sharedParts: null
    })
    const login: SmppLogin = { principal: { keyId: 'k1', iysCode: '700001', brands: 'any', scopes: new Set(['send']), ratePerSecond: 0, demo: false }, defaults: { brandCode: '600001', recipientType: 'BIREYSEL', commercial: null } }
    const numbers = ['905321110001', '905321110002', '905321110003']
    const answers = await Promise.all(numbers.map(n => {
      const bytes = new PDU('submit_sm', { source_addr: 'ACME', dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: n, short_message: 'Kampanya' }).toBuffer()
      return submits.handle({ login, systemId: 'esme1' }, new PDU(bytes), bytes)
    }))
    expect(answers.map(a => a.status)).toEqual([0, 0, 0])
    expect(seenAtForward.length).toBe(3)
    for (const text of seenAtForward) {
      // every decision of the turn is written before the first message leaves
      for (const n of numbers) expect(text).toContain('+' + n)
    }
    await new Promise(resolve => setTimeout(resolve, 10))
    expect(segmentText().split('\n').filter(l => l.startsWith('O')).length).toBe(3) // the outcomes followed
    await log.close().catch(() => {})
    await pool.end()
  })
})
