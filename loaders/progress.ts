// Progress of long-running commands: a live line on a TTY, a plain line every few seconds otherwise (CI logs,
// systemd). Rate is rows per second since the start; ETA comes from bytes read when the total is known.

export interface ProgressOptions {
  label: string
  totalBytes?: number
  /** rows expected, when known up front (load): the ETA then comes from rows instead of bytes */
  totalRows?: number
  stream?: NodeJS.WriteStream
  intervalMs?: number
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
  }

  update (rows: number, bytes = this.bytes, rejects = this.rejects): void {
    this.rows = rows; this.bytes = bytes; this.rejects = rejects
    const now = Date.now()
    if (now - this.last < this.intervalMs) return
    this.last = now
    this.print(false)
  }

  /** The rows expected, once they are known. */
  expect (rows: number): void {
    this.totalRows = rows
  }

  setPhase (phase: string): void {
    this.phase = phase
    this.print(false)
  }

  done (summary?: string): void {
    this.print(true, summary)
  }

  private print (final: boolean, summary?: string): void {
    const secs = (Date.now() - this.started) / 1000
    const rate = secs > 0 ? Math.round(this.rows / secs) : 0
    let line = `${this.label}: ${this.rows.toLocaleString('en')} rows, ${rate.toLocaleString('en')} rows/s`
    if (this.rejects > 0) line += `, ${this.rejects.toLocaleString('en')} rejected`
    const [done, total] = this.totalRows > 0 ? [this.rows, this.totalRows] : [this.bytes, this.totalBytes]
    if (!final && total > 0 && done > 0 && done < total) {
      const eta = secs * (total - done) / done
      line += `, ${Math.round(100 * done / total)}%, ETA ${Math.ceil(eta)}s`
    }
    if (this.phase !== '' && !final) line += ` (${this.phase})`
    if (final) line += `, ${secs.toFixed(1)}s${summary !== undefined ? ' — ' + summary : ''}`
    if (this.tty) this.stream.write('\r\x1b[K' + line + (final ? '\n' : ''))
    else this.stream.write(line + '\n')
  }
}
