// The post-decision hook: what follows every batch of decisions, whichever front end made it (/v1/check,
// /v1/messages, SMPP). In one place so that no front end can skip a part of it:
//   1. the decision metrics,
//   2. the scrub-yield stamp: live traffic was just served, so running scrubs take small chunks and pause
//      (ScrubQueue's pauseMs is this hook's scrubPauseMs),
//   3. the decision journal, written BEFORE the answer leaves or the message is forwarded (it throws a 503
//      GatewayError when the local disk refuses it: then nothing may leave).
// It allocates nothing per call: the send-side extras are the front end's own parsed request.
// Scrub jobs are a front end too, in bulk: each chunk's decisions are counted here (afterScrubChunk), and a done job's
// are written to the decision log from its result file (audit/scrub-decisions.ts); a scrub stamps nothing (it is
// not live traffic).

import type { CheckQuery, CheckResult } from '../check/checker.js'
import type { ConsentType } from '../domain/vocabulary.js'
import type { Metrics } from '../metrics.js'
import type { DecisionLog, DecisionSource, MessageOutcome, MessageTicket } from './decision-log.js'

/** What a sending front end adds: the provider and one message id per result. */
export interface SendExtras {
  readonly iysCode: string
  readonly messageIds: readonly string[]
}

/** How long after live traffic a scrub keeps yielding, and how long it pauses between chunks meanwhile. */
const YIELD_WINDOW_MS = 250
const YIELD_PAUSE_MS = 8

export interface DecisionsHookDeps {
  metrics: Metrics
  /** null: decisions are not journalled (no DATABASE_URL, or DECISIONS_ENABLED=false) */
  decisionLog: Pick<DecisionLog, 'recordChecks' | 'recordMessages' | 'recordOutcomes'> | null
  /** the clock of the yield stamp (milliseconds, monotonic); for tests */
  now?: () => number
}

export class DecisionsHook {
  private readonly metrics: Metrics
  private readonly decisionLog: DecisionsHookDeps['decisionLog']
  private readonly now: () => number
  /** when live traffic was last decided (`now()`); 0: never */
  lastDecisionAt = 0

  constructor (deps: DecisionsHookDeps) {
    this.metrics = deps.metrics
    this.decisionLog = deps.decisionLog
    this.now = deps.now ?? (() => performance.now())
  }

  /**
   * After a batch of decisions, before anything leaves: counts, stamps, journals. With `extras` (a send) the
   * allowed decisions are journalled as awaiting their carrier outcome, and the ticket for afterOutcomes() is
   * returned; null when nothing awaits one (a check, or no journal).
   */
  afterDecisions (source: DecisionSource, query: CheckQuery, results: readonly CheckResult[], extras?: SendExtras): MessageTicket | null {
    this.metrics.decisions(query.type, results)
    this.lastDecisionAt = this.now()
    if (this.decisionLog === null) return null
    if (extras === undefined) {
      this.decisionLog.recordChecks(source, null, query, results)
      return null
    }
    return this.decisionLog.recordMessages(source, extras.iysCode, query, results, extras.messageIds)
  }

  /**
   * After checks decided elsewhere (a serving thread, when nothing is journalled: http/serve-threads.ts), counted there
   * by reason index (REASONS): the metrics and the yield stamp, as afterDecisions gives them.
   */
  afterCountedChecks (type: ConsentType, counts: ArrayLike<number>): void {
    this.metrics.decisionCounts(type, counts)
    this.lastDecisionAt = this.now()
  }

  /** After forwarding: journals the carrier outcomes (null: not forwarded) beside the ticket's decisions. */
  afterOutcomes (ticket: MessageTicket, outcomes: readonly (MessageOutcome | null)[]): void {
    this.decisionLog?.recordOutcomes(ticket, outcomes)
  }

  /**
   * After a scrub chunk is written: its decisions counted by reason index (REASONS; its DUPLICATE lines are no
   * decisions and are not in `counts`). One inc() per reason present, never per line.
   */
  afterScrubChunk (type: ConsentType, counts: ArrayLike<number>): void {
    this.metrics.decisionCounts(type, counts)
  }

  /** The pause a running scrub takes between chunks right now: live traffic first (EngineDeps.pauseMs). */
  readonly scrubPauseMs = (): number => (this.lastDecisionAt !== 0 && this.now() - this.lastDecisionAt < YIELD_WINDOW_MS ? YIELD_PAUSE_MS : 0)
}
