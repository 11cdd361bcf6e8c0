// Deferred journal appends until the event loop's check phase (deferAppends(…, 'loop'), /v1/check): uWebSockets.js
// calls each request in a callback of its own, after which Node runs the ticks, so appends of one poll come from
// different ticks; they must still go to disk in one write, before anything waits on them acts.

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { deferAppends, Journal, NOTHING_DEFERRED } from '../src/audit/journal.js'

let dir = ''
let journal: Journal | null = null
const segmentText = (): string => readdirSync(dir).filter(f => f.endsWith('.jnl')).sort().map(f => readFileSync(join(dir, f), 'utf8')).join('')
const nextTick = async (): Promise<void> => { await new Promise(resolve => process.nextTick(resolve)) }
const checkPhase = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'iys-jnl-loop-'))
  journal = new Journal({ dir, fsyncMs: 1000, fullLines: 1_000_000, onFull: () => {}, onSyncError: () => {} })
  await journal.start()
})
afterEach(async () => {
  await journal?.close()
  rmSync(dir, { recursive: true, force: true })
})

describe("journal appends deferred to the loop's check phase", () => {
  it('gathers appends of different ticks into one write at the check phase, in their order', async () => {
    const j = journal!
    const a = deferAppends(() => j.append('a\n', 1, false), 'loop')
    await nextTick() // another request's callback
    const b = deferAppends(() => j.append('b\n', 1, false), 'loop')
    await nextTick()
    expect(segmentText()).toBe('') // the ticks ran, the lines wait for the check phase
    expect(b.written).toBe(a.written) // one batch: one write
    let done = false
    void a.written.then(() => { done = true })
    await checkPhase()
    await a.written
    expect(done).toBe(true)
    expect(segmentText()).toBe('a\nb\n')
    // A later turn starts a new batch.
    const c = deferAppends(() => j.append('c\n', 1, false), 'loop')
    expect(c.written).not.toBe(a.written)
    await c.written
    expect(segmentText()).toBe('a\nb\nc\n')
  })

  it('writes them at the end of the tick when a tick-deferred append joins (SMPP in the same turn)', async () => {
    const j = journal!
    const http = deferAppends(() => j.append('check\n', 1, false), 'loop')
    const smpp = deferAppends(() => j.append('submit\n', 1, false), 'tick')
    expect(smpp.written).toBe(http.written)
    await nextTick()
    expect(segmentText()).toBe('check\nsubmit\n') // before the check phase
  })

  it('has nothing to wait for when nothing was appended', () => {
    expect(deferAppends(() => 1, 'loop').written).toBe(NOTHING_DEFERRED)
  })
})
