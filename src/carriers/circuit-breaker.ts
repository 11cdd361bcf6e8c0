// A circuit breaker for one carrier upstream: pure logic, no timers, no I/O, an injectable clock.
//
//   closed ──(failure ratio ≥ failureRatio over the last windowMs, with ≥ minCalls calls)──▶ open
//   open ──(cooldownMs elapsed; the next acquire() is the probe)──▶ half_open
//   half_open ──(the probe succeeded)──▶ closed       half_open ──(the probe failed)──▶ open (a new cool-down)
//
// Why a failure ratio over a time window rather than N consecutive failures: a carrier that answers 503 to 30 % of
// requests is working, and retries deal with it; but at thousands of attempts a second, runs of N failures in a row
// happen all the time at 30 % (0.3^5 ≈ 1 in 400 attempts), so a consecutive-count breaker would cut a working
// carrier off for whole cool-downs. A ratio over the recent window stays closed at 30 % and opens at once when the
// carrier is really down (every call fails); `minCalls` keeps two unlucky calls at low traffic from opening it.
// The window is a ring of `buckets` time buckets (counters only, no per-call records), so recording is O(1) and
// deciding is O(buckets); calls older than the window fall out by themselves.
//
// Calls get a ticket from acquire() and hand it back to record(). The ticket is the breaker's generation, which
// changes on every state change, so a slow call that started before the breaker opened cannot close it (or count
// twice) when it finally ends: only results of the current generation count. In half_open exactly one ticket (the
// probe) is handed out; if its result never comes back (a caller that forgot to record), another probe is allowed
// after a further cool-down, so the breaker cannot stay stuck.

export const BREAKER_STATES = ['closed', 'open', 'half_open'] as const
export type BreakerState = (typeof BREAKER_STATES)[number]

/** acquire()'s answer when the call must not be made: fail fast without touching the network. */
export const DENIED = -1

/** The breaker's settings; config.upstream.breaker (UPSTREAM_BREAKER_*) is the one place with their defaults. */
export interface BreakerSettings {
  /** Open when failures / calls over the window reach this ratio (0 < r ≤ 1). */
  failureRatio: number
  /** ...and the window holds at least this many calls. */
  minCalls: number
  /** Length of the sliding window (ms). */
  windowMs: number
  /** How long the breaker stays open before letting one probe through (ms). */
  cooldownMs: number
  /** Number of buckets the window is divided into; the window slides one bucket at a time. Default 10 (not a setting). */
  buckets?: number
  /** Monotonic clock in ms. Default performance.now. */
  now?: () => number
}

export interface CircuitBreakerOptions extends BreakerSettings {
  /** Called on every state change (logs and metrics). */
  onStateChange?: (from: BreakerState, to: BreakerState) => void
}

// The window's resolution, an implementation detail rather than an operator's setting: 10 buckets move the window
// in tenths, and deciding stays a 10-step loop.
const BUCKETS = 10

function check (name: string, v: number, ok: boolean): number {
  if (!ok) throw new RangeError(`circuit breaker: ${name} out of range: ${v}`)
  return v
}

export class CircuitBreaker {
  readonly failureRatio: number
  readonly minCalls: number
  readonly cooldownMs: number
  readonly #bucketMs: number
  readonly #now: () => number
  readonly #onStateChange: ((from: BreakerState, to: BreakerState) => void) | undefined
  // The ring: slot i counts the calls of bucket number #epochs[i] (floor(time / bucketMs)).
  readonly #epochs: Float64Array
  readonly #calls: Uint32Array
  readonly #fails: Uint32Array
  #state: BreakerState = 'closed'
  #generation = 0
  /** When the breaker opened (open) or when the probe went out (half_open). */
  #since = 0

  constructor (o: CircuitBreakerOptions) {
    this.failureRatio = check('failureRatio', o.failureRatio, o.failureRatio > 0 && o.failureRatio <= 1)
    this.minCalls = check('minCalls', o.minCalls, Number.isInteger(o.minCalls) && o.minCalls >= 1)
    this.cooldownMs = check('cooldownMs', o.cooldownMs, o.cooldownMs >= 0)
    const b = o.buckets ?? BUCKETS
    const buckets = check('buckets', b, Number.isInteger(b) && b >= 1 && b <= 1000)
    check('windowMs', o.windowMs, o.windowMs >= buckets)
    this.#bucketMs = o.windowMs / buckets
    this.#now = o.now ?? (() => performance.now())
    this.#onStateChange = o.onStateChange
    this.#epochs = new Float64Array(buckets).fill(-Infinity)
    this.#calls = new Uint32Array(buckets)
    this.#fails = new Uint32Array(buckets)
  }

  get state (): BreakerState { return this.#state }

  /** While open: ms until the next probe may go out (0 when it may go now); otherwise 0. */
  retryInMs (): number {
    if (this.#state === 'closed') return 0
    return Math.max(0, this.#since + this.cooldownMs - this.#now())
  }

  /**
   * Whether acquire() would refuse a call now: open within its cool-down, or half open with the probe out. Changes
   * nothing, so a metric can read it on scrape: once the cool-down is over with no traffic, the breaker no longer
   * refuses anything (the next message is the probe), and says so.
   */
  refusing (): boolean {
    return this.#state !== 'closed' && this.#now() - this.#since < this.cooldownMs
  }

  /** Asks to make one call. Returns a ticket (≥ 0) for record(), or DENIED: fail fast, do not call. */
  acquire (): number {
    if (this.#state === 'closed') return this.#generation
    // open: after the cool-down this call is the probe. half_open: the probe is out; another only if it was lost.
    if (this.#now() - this.#since < this.cooldownMs) return DENIED
    this.#transition('half_open')
    return this.#generation
  }

  /**
   * The outcome of a call made with `ticket`. `ok` means the carrier is healthy (it answered, even with a
   * rejection); a network error, a timeout, a 5xx or a 429 is not ok.
   */
  record (ticket: number, ok: boolean): void {
    if (ticket !== this.#generation) return // from an earlier generation: the breaker has moved on
    if (this.#state === 'half_open') {
      this.#transition(ok ? 'closed' : 'open')
      return
    }
    if (this.#state !== 'closed') return
    const now = this.#now()
    const epoch = Math.floor(now / this.#bucketMs)
    const n = this.#epochs.length
    const slot = ((epoch % n) + n) % n
    if (this.#epochs[slot] !== epoch) {
      this.#epochs[slot] = epoch
      this.#calls[slot] = 0
      this.#fails[slot] = 0
    }
    this.#calls[slot]!++
    if (ok) return
    this.#fails[slot]!++
    let calls = 0
    let fails = 0
    for (let i = 0; i < n; i++) {
      if (this.#epochs[i]! > epoch - n) { calls += this.#calls[i]!; fails += this.#fails[i]! }
    }
    if (calls >= this.minCalls && fails >= calls * this.failureRatio) this.#transition('open')
  }

  #transition (to: BreakerState): void {
    const from = this.#state
    this.#state = to
    this.#generation++
    this.#since = this.#now()
    if (to === 'closed') {
      // A fresh start: the failures that opened the breaker are history once a probe got through.
      this.#epochs.fill(-Infinity)
      this.#calls.fill(0)
      this.#fails.fill(0)
    }
    if (from !== to) this.#onStateChange?.(from, to)
  }
}
