// One pass at a time, and no kick lost: a kick during a pass schedules another pass right after it (any number of
// kicks during one pass make one more pass, which sees everything they announced), so passes never overlap. The
// Drainer (store/drainer.ts) and the change applier (filter/changes.ts) both run their work this way; each keeps its
// own failure policy (back-off timer, poll) inside its pass.

export class SingleFlight {
  private readonly pass: () => Promise<void>
  private running: Promise<void> | null = null
  private again = false
  private stopped = false

  /** `pass` handles its own failures: it must not reject. */
  constructor (pass: () => Promise<void>) {
    this.pass = pass
  }

  /** Runs a pass now, or right after the one in progress. */
  kick (): void {
    if (this.stopped) return
    if (this.running !== null) { this.again = true; return }
    this.running = this.pass().finally(() => {
      this.running = null
      if (this.again) { this.again = false; this.kick() }
    })
  }

  /** Resolves when no pass is running, including the one a kick during the last pass scheduled (tests, shutdown). */
  async idle (): Promise<void> {
    while (this.running !== null) await this.running
  }

  /** No more passes (shutdown): later kicks are ignored and a pass scheduled after the running one is dropped. */
  stop (): void {
    this.stopped = true
    this.again = false
  }
}
