// Progress of long-running commands, on stderr: a live line on a TTY (log lines are written above it, see
// src/log.ts liveLine), a plain line every few seconds otherwise (CI logs, systemd). Rate is rows per second from
// the start to the last rows that came in; ETA comes from bytes read when the total is known, or from rows when
// they are known up front.
//
// A phase (setPhase) may have a size of its own (import's slices): its line then shows done/total, % and an ETA
// from the phase's own clock. While a phase runs, the line is drawn again every second on a TTY (every intervalMs
// otherwise) even when nothing reports, so that a phase spent in one long statement still shows its elapsed time
// instead of looking frozen.

import { liveLine } from '../src/log.js'

export interface ProgressOptions {
  label: string
  totalBytes?: number
  /** rows expected, when known up front (load): the ETA then comes from rows instead of bytes */
  totalRows?: number
  stream?: NodeJS.WriteStream
  intervalMs?: number
}

const n = (x: number): string => x.toLocaleString('en')
/** 42s, 3m07s, 1h02m */
export function duration (secs: number): string {
  const s = Math.round(secs)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`
}

export class Progress {
  private readonly label: string
  private readonly totalBytes: number
  private totalRows: number
  private readonly stream: NodeJS.WriteStream
  private readonly tty: boolean
  private readonly intervalMs: number
  private readonly started = Date.now()
  private last = 0
  /** when rows last moved: the rate is rows per second up to then, so it holds still while a later phase runs */
  private rowsAt = Date.now()
  private timer: NodeJS.Timeout | null = null
  private phaseStarted = 0
  private phaseTotal = 0
  private phaseUnit = ''
  private phaseDone = 0
  rows = 0
  rejects = 0
  bytes = 0
  phase = ''

  constructor (opts: ProgressOptions) {
    this.label = opts.label
    this.totalBytes = opts.totalBytes ?? 0
    this.totalRows = opts.totalRows ?? 0
    this.stream = opts.stream ?? process.stderr
    this.tty = this.stream.isTTY === true
    this.intervalMs = opts.intervalMs ?? (this.tty ? 200 : 5000)
    // A plain line only once intervalMs has passed: a command shorter than that prints its final line alone.
    if (!this.tty) this.last = this.started
  }

  update (rows: number, bytes = this.bytes, rejects = this.rejects): void {
    this.rows = rows; this.bytes = bytes; this.rejects = rejects
    this.rowsAt = Date.now()
    this.maybePrint()
  }

  /** The rows expected, once they are known. */
  expect (rows: number): void {
    this.totalRows = rows
  }

  /** A new phase; `total` (in `unit`s, e.g. slices) when its size is known, then reported with advance(). */
  setPhase (phase: string, total = 0, unit = ''): void {
    this.phase = phase
    this.phaseStarted = Date.now()
    this.phaseTotal = total
    this.phaseUnit = unit
    this.phaseDone = 0
    if (this.timer === null) {
      this.timer = setInterval(() => { if (Date.now() - this.last >= this.intervalMs) this.print(false) }, this.tty ? 1000 : this.intervalMs)
      this.timer.unref() // never what keeps a command alive
    }
    if (this.tty) this.print(false)
    else this.maybePrint()
  }

  /** Units of the current phase done so far. */
  advance (done: number): void {
    this.phaseDone = done
    this.maybePrint()
  }

  done (summary?: string): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    this.print(true, summary)
  }

  private maybePrint (): void {
    if (Date.now() - this.last >= this.intervalMs) this.print(false)
  }

  private line (final: boolean, summary?: string): string {
    const now = Date.now()
    const secs = (now - this.started) / 1000
    const rowSecs = (this.rowsAt - this.started) / 1000
    const rate = rowSecs > 0 ? Math.round(this.rows / rowSecs) : 0
    let line = `${this.label}: ${n(this.rows)} rows, ${n(rate)} rows/s`
    if (this.rejects > 0 && !final) line += `, ${n(this.rejects)} rejected` // the final summary has the true count
    if (final) return line + `, ${secs.toFixed(1)}s${summary !== undefined ? ' — ' + summary : ''}`
    line += `, ${duration(secs)} elapsed`
    if (this.phaseTotal > 0) {
      // The phase's own progress and ETA, from the phase's clock.
      const done = this.phaseDone
      const total = this.phaseTotal
      line += ` (${this.phase}: ${n(done)}/${n(total)} ${this.phaseUnit}, ${Math.floor(100 * done / total)}%`
      const phaseSecs = (now - this.phaseStarted) / 1000
      if (done > 0 && done < total) line += `, ETA ${duration(phaseSecs * (total - done) / done)}`
      return line + ')'
    }
    const [done, total] = this.totalRows > 0 ? [this.rows, this.totalRows] : [this.bytes, this.totalBytes]
    if (total > 0 && done > 0 && done < total) line += `, ${Math.round(100 * done / total)}%, ETA ${duration(secs * (total - done) / done)}`
    if (this.phase !== '') line += ` (${this.phase}, ${duration((now - this.phaseStarted) / 1000)})`
    return line
  }

  private print (final: boolean, summary?: string): void {
    this.last = Date.now()
    const line = this.line(final, summary)
    if (!this.tty) { this.stream.write(line + '\n'); return }
    // On a terminal the line is redrawn in place; log lines (src/log.ts) are written above it.
    liveLine.text = final ? '' : line
    this.stream.write('\r\x1b[K' + line + (final ? '\n' : ''))
  }
}
