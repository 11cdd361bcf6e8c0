// What every carrier (HTTP upstream.ts, SMPP smpp-upstream.ts) checks and builds the same way from its options:
// integer settings in range, and its circuit breaker, whose state changes are logged with the carrier's name only.

import type { Logger } from '../log.js'
import { CircuitBreaker, type BreakerSettings, type BreakerState } from './circuit-breaker.js'

/** `v` when it is an integer in [min, max]; a RangeError naming the carrier and the setting otherwise. */
export function intOption (carrier: string, name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${carrier}: ${name} must be an integer from ${min} to ${max}, got ${v}`)
  return v
}

/** A carrier's breaker: open logged as a warning, other changes as info, each told to `onChange` (the metric). */
export function carrierBreaker (name: string, settings: BreakerSettings, log: Logger | undefined, onChange?: (upstream: string, from: BreakerState, to: BreakerState) => void): CircuitBreaker {
  return new CircuitBreaker({
    ...settings,
    onStateChange: (from, to) => {
      if (log !== undefined) {
        if (to === 'open') log.warn({ upstream: name, from, to }, 'carrier circuit open: failing fast')
        else log.info({ upstream: name, from, to }, 'carrier circuit ' + to)
      }
      onChange?.(name, from, to)
    }
  })
}

/** What a message is told when the breaker refuses it: the carrier, when it will try again, and this message's last error. */
export function circuitOpenText (carrier: string, breaker: CircuitBreaker, lastError: string): string {
  return `carrier ${carrier} is failing; circuit open, next try in ${Math.ceil(breaker.retryInMs())} ms${lastError !== '' ? ` (this message: ${lastError})` : ''}`
}
