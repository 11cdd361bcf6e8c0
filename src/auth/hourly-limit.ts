// Requests per source and hour (POST /oauth2/token: İYS allows a few token requests per address and hour).

/**
 * At most `limit` requests per source in an hour: a fixed window that opens with a source's first request. Memory
 * is bounded: at most MAX_SOURCES sources (the one tracked longest makes room, as in auth/lockout.ts).
 */
export class HourlyLimit {
  private static readonly WINDOW_MS = 3_600_000
  private static readonly MAX_SOURCES = 10_000
  private readonly windows = new Map<string, { start: number, count: number }>()

  constructor (private readonly limit: number, private readonly now: () => number = Date.now) {}

  /** 0 to go on (the request is counted), else the seconds until the source's window closes. */
  take (source: string): number {
    const now = this.now()
    let w = this.windows.get(source)
    if (w === undefined || now - w.start >= HourlyLimit.WINDOW_MS) {
      if (w !== undefined) this.windows.delete(source)
      else if (this.windows.size >= HourlyLimit.MAX_SOURCES) this.windows.delete(this.windows.keys().next().value!)
      w = { start: now, count: 0 }
      this.windows.set(source, w)
    }
    if (w.count >= this.limit) return Math.max(1, Math.ceil((w.start + HourlyLimit.WINDOW_MS - now) / 1000))
    w.count++
    return 0
  }
}
