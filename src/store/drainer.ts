// Runs a "process one unit of queued work" function until it reports nothing left, one pass at a time. A kick
// during a pass schedules another pass right after it, so no kick is lost and passes never overlap.

import type { Logger } from 'pino'

export class Drainer {
  private readonly processOne: () => Promise<boolean>
  private readonly log: Logger
  private readonly what: string
  private running: Promise<void> | null = null
  private again = false

  constructor (what: string, processOne: () => Promise<boolean>, log: Logger) {
    this.what = what
    this.processOne = processOne
    this.log = log
  }

  kick (): void {
    if (this.running !== null) { this.again = true; return }
    this.running = (async () => { while (await this.processOne()) { /* next */ } })()
      .catch((err: Error) => { this.log.warn({ err: err.message }, `${this.what}: pass failed; retried on the next kick`) })
      .finally(() => {
        this.running = null
        if (this.again) { this.again = false; this.kick() }
      })
  }

  /** Resolves when no pass is running (tests, shutdown). */
  async idle (): Promise<void> {
    while (this.running !== null) await this.running
  }
}
