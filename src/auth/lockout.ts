// Locks out a source (a client address) after repeated failed sign-ins: `maxFailures` failures within `windowMs`
// lock it for `lockMs`, during which it is refused before its credentials are even looked at (so a right guess
// during the lock cannot be told from a wrong one). A success clears the source's failures. Used by the İYS push
// receiver (http/push-route.ts), whose basic-auth password is otherwise open to guessing from anywhere.
//
// Per process and in memory: a restart forgets the failures, and k gateways allow k× the failures (a guesser still
// gets at most maxFailures × k tries per lock period, not millions). Memory is bounded: at most `maxSources`
// sources are tracked (the one tracked longest makes room), each with at most maxFailures timestamps.

export interface LockoutOptions {
  /** failures within the window that lock the source */
  maxFailures: number
  windowMs: number
  /** how long a source stays locked */
  lockMs: number
  /** sources tracked at most (default 10,000) */
  maxSources?: number
  /** clock in ms; tests inject one */
  now?: () => number
}

interface Source {
  /** the times of the last maxFailures failures, a ring */
  failures: number[]
  next: number
  lockedUntil: number
}

export class Lockout {
  private readonly max: number
  private readonly windowMs: number
  private readonly lockMs: number
  private readonly maxSources: number
  private readonly now: () => number
  private readonly sources = new Map<string, Source>()

  constructor (opts: LockoutOptions) {
    if (!(opts.maxFailures >= 1) || !(opts.windowMs > 0) || !(opts.lockMs > 0)) throw new RangeError('lockout: maxFailures ≥ 1, windowMs > 0 and lockMs > 0')
    this.max = Math.floor(opts.maxFailures)
    this.windowMs = opts.windowMs
    this.lockMs = opts.lockMs
    this.maxSources = opts.maxSources ?? 10_000
    this.now = opts.now ?? Date.now
  }

  /** Milliseconds `source` stays locked; 0 when it may try. */
  lockedFor (source: string): number {
    const s = this.sources.get(source)
    if (s === undefined || s.lockedUntil === 0) return 0
    const left = s.lockedUntil - this.now()
    if (left > 0) return left
    this.sources.delete(source) // the lock ran out: a fresh start
    return 0
  }

  /**
   * Records a failed attempt from `source` (not locked: callers ask `lockedFor` first). True when this failure locks
   * it (once per lock).
   */
  fail (source: string): boolean {
    const now = this.now()
    let s = this.sources.get(source)
    if (s === undefined) {
      if (this.sources.size >= this.maxSources) this.evict()
      s = { failures: [], next: 0, lockedUntil: 0 }
      this.sources.set(source, s)
    }
    if (s.lockedUntil > now) return false
    s.failures[s.next] = now
    s.next = (s.next + 1) % this.max
    // The ring is full once `max` failures were seen; the slot after the newest holds the oldest of them.
    if (s.failures.length < this.max || now - s.failures[s.next]! > this.windowMs) return false
    s.lockedUntil = now + this.lockMs
    s.failures = []
    s.next = 0
    return true
  }

  /** A successful sign-in from `source`: its failures are forgotten. */
  succeed (source: string): void {
    this.sources.delete(source)
  }

  /** Sources tracked (tests). */
  get size (): number {
    return this.sources.size
  }

  /**
   * Makes room for one source: drops the one tracked longest (O(1); a scan for stale ones would let a flood of new
   * addresses cost a full pass each). Whoever can push a lock out this way commands thousands of addresses, each
   * with its own tries anyway.
   */
  private evict (): void {
    const first = this.sources.keys().next().value
    if (first !== undefined) this.sources.delete(first)
  }
}

/**
 * The source a failure is counted against, from the client address as uWS gives it ("1.2.3.4", or IPv6 as eight
 * full hex groups): IPv4 as it is (also when IPv4-mapped), IPv6 by its /64, the smallest block a single customer
 * is given (one host can use any address in it). No address (a router that does not pass it): "unknown", one source.
 */
export function sourceOf (address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown'
  if (!address.includes(':')) return address
  const g = ipv6Groups(address)
  if (g === null) return address
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`
  }
  return g.slice(0, 4).map(n => n.toString(16)).join(':') + '::/64'
}

/** The eight 16-bit groups of an IPv6 address (with or without '::' and an IPv4 tail), or null. */
function ipv6Groups (text: string): number[] | null {
  let s = text
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s)
  if (dotted !== null) {
    const b = dotted.slice(1).map(Number)
    if (b.some(n => n > 255)) return null
    s = s.slice(0, dotted.index) + ((b[0]! << 8) | b[1]!).toString(16) + ':' + ((b[2]! << 8) | b[3]!).toString(16)
  }
  const halves = s.split('::')
  if (halves.length > 2) return null
  const part = (h: string): string[] => h === '' ? [] : h.split(':')
  const head = part(halves[0]!)
  const tail = halves.length === 2 ? part(halves[1]!) : []
  const fill = 8 - head.length - tail.length
  if (halves.length === 2 ? fill < 1 : fill !== 0) return null
  const all = [...head, ...Array<string>(halves.length === 2 ? fill : 0).fill('0'), ...tail]
  if (!all.every(x => /^[0-9a-fA-F]{1,4}$/.test(x))) return null
  return all.map(x => parseInt(x, 16))
}
