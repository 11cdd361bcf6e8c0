// Progress of long-running commands: every phase ticks, even one spent in a single long statement (elapsed time),
// import's rule phase counts its slices with % and ETA, and on a terminal a log line never lands inside the progress
// line (it is written above it, human-readable); off a terminal, logs stay JSON and progress plain lines.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { importConsents } from '../loaders/import.js'
import { duration, Progress } from '../loaders/progress.js'
import { createLogger, liveLine } from '../src/log.js'
import { testServices, type TestServices } from './helpers/services.js'

/** A stream that keeps what is written to it; `tty` makes it look like a terminal. */
function sink (tty: boolean): { stream: NodeJS.WriteStream, text: () => string } {
  let text = ''
  const w = new Writable({ write (chunk, _enc, cb) { text += chunk.toString(); cb() } })
  Object.assign(w, { isTTY: tty })
  return { stream: w as unknown as NodeJS.WriteStream, text: () => text }
}
const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

describe('progress', () => {
  it('ticks while a phase runs with nothing reporting, and stops at done()', async () => {
    const out = sink(false)
    const p = new Progress({ label: 'job', stream: out.stream, intervalMs: 40 })
    p.update(10)
    p.setPhase('indexing')
    await sleep(300)
    const during = out.text().split('\n').filter(l => l.includes('(indexing, '))
    expect(during.length).toBeGreaterThanOrEqual(3)
    for (const l of during) expect(l).toMatch(/^job: 10 rows, [\d,]+ rows\/s, \d+s elapsed \(indexing, \d+s\)$/)
    p.done('finished')
    const after = out.text()
    await sleep(150)
    expect(out.text()).toBe(after)
    expect(after.trimEnd().split('\n').pop()).toMatch(/^job: 10 rows, [\d,]+ rows\/s, \d+\.\ds — finished$/)
  })

  it('shows a sized phase as done/total with % and an ETA from the phase clock', async () => {
    const out = sink(false)
    const p = new Progress({ label: 'import', stream: out.stream, intervalMs: 0 })
    p.update(200_000)
    p.setPhase('applying İYS rules', 40, 'slices')
    await sleep(20)
    p.advance(10)
    p.done()
    const lines = out.text().split('\n')
    expect(lines).toContain('import: 200,000 rows, ' + lines[0]!.split(', ')[1] + ', 0s elapsed (applying İYS rules: 0/40 slices, 0%)')
    expect(lines.find(l => l.includes('10/40'))).toMatch(/\(applying İYS rules: 10\/40 slices, 25%, ETA \d+s\)$/)
    expect([duration(5), duration(187), duration(3725)]).toEqual(['5s', '3m07s', '1h02m'])
  })

  it('on a terminal, writes a log line above the live progress line and draws the progress line again', () => {
    const term = sink(true)
    const p = new Progress({ label: 'import', stream: term.stream, intervalMs: 0 })
    const log = createLogger('info', 'iys-gateway', term.stream)
    p.update(1234)
    log.warn({ slice: 3, err: new Error('call +905321234567 failed') }, 'slow slice')
    p.update(2000)
    p.done('ok')
    expect(liveLine.text).toBe('')
    const text = term.text()
    // Each physical line (between newlines), with the carriage-return redraws resolved to what stays visible.
    const visible = text.split('\n').map(l => l.split('\r').pop()!.replace(/^\x1b\[K/, ''))
    const logLine = visible.find(l => l.includes('slow slice'))!
    expect(logLine).toMatch(/^\d\d:\d\d:\d\d WARN  slow slice slice=3 err="call \[redacted\] failed"$/)
    expect(visible.filter(l => l.includes('rows/s') && l.includes('slow slice'))).toEqual([])
    // The progress line came back after the log line.
    expect(text.slice(text.indexOf('slow slice'))).toMatch(/slow slice[^\n]*\nimport: 1,234 rows/)
    expect(visible.pop()).toBe('')
    expect(visible.pop()).toMatch(/^import: 2,000 rows, .* — ok$/)
  })

  it('off a terminal, logs stay one JSON object per line', () => {
    const file = sink(false)
    createLogger('info', 'iys-gateway', file.stream).warn({ slice: 3 }, 'slow slice')
    expect(JSON.parse(file.text())).toMatchObject({ level: 40, msg: 'slow slice', slice: 3 })
  })
})

describe('import progress', () => {
  let ws: TestServices
  beforeAll(async () => { ws = await testServices({ migrate: true, poolSize: 1, dirPrefix: 'iys-prog-' }) })
  afterAll(async () => { await ws?.close() })

  it('names every phase and counts the rule phase slice by slice', async () => {
    const file = join(ws.dir, 'p.csv')
    const rows = Array.from({ length: 5 }, (_, i) => `700001,600001,0532300000${i},MESAJ,ONAY,HS_WEB,2024-01-01 10:00:00`)
    writeFileSync(file, 'iysCode,brandCode,recipient,type,status,source,consentDate\n' + rows.join('\n') + '\n')
    const out = sink(false)
    const r = await importConsents(ws.pool, { file, sliceKeys: 1, progress: new Progress({ label: 'import', stream: out.stream, intervalMs: 0 }) })
    expect(r.applied).toBe(5)
    const lines = out.text().trimEnd().split('\n')
    for (const phase of ['reading', 'sorting keys into slices', 'indexing', 'counting and writing rejects']) {
      expect(lines.some(l => l.endsWith(`(${phase}, 0s)`)), phase).toBe(true)
    }
    // (intervalMs 0: the phase's heartbeat may repeat a line)
    const slices = new Set(lines.map(l => /applying İYS rules: (\d)\/5 slices/.exec(l)?.[1]).filter(s => s !== undefined))
    expect([...slices]).toEqual(['0', '1', '2', '3', '4', '5'])
    expect(lines.pop()).toMatch(/^import: 5 rows, .* — 5 applied, 0 superseded, 0 rejected$/)
  })
})
