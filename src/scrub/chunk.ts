// One chunk of a scrub job: lines in, result rows out. The same function runs in a piscina worker (Redis mode) and
// inline (embedded mode), and it decides through the same Checker as POST /v1/check, so a scrub and a check can
// never disagree. Each decision is returned once, as numbers (reason index, allowed); the row text carries only what
// the job runner cannot rebuild from them, its prefix `recipient,normalized,`, so that it can write a line as
// decided or as a DUPLICATE without re-serialising it.

import { Checker, type CheckerOptions, type CheckQuery } from '../check/checker.js'
import { errorCode } from '../domain/errors.js'
import type { FilterView } from '../filter/view.js'
import { hashText, keyHash } from '../filter/key.js'
import { csvField, splitCsvLine } from '../formats/csv.js'
import { REASON_INDEX } from '../policy/decide.js'

export type InputFormat = 'csv' | 'ndjson'

export interface ChunkInput {
  lines: string[]
  format: InputFormat
  /** csv: index of the recipient column */
  column: number
}

export interface ChunkOutput {
  /** `recipient,normalized,` per line */
  prefixes: string[]
  /** reason index (REASONS) per line */
  reasons: Uint8Array
  /** 1 where the line is allowed */
  allowed: Uint8Array
  /** 1 where the line has a normalised recipient (and so takes part in duplicate detection) */
  valid: Uint8Array
  /** 64-bit hash of the normalised recipient, for duplicate detection */
  h1: Uint32Array
  h2: Uint32Array
  /** name of the error when the exact store failed for this chunk (its lines then say STORE_UNAVAILABLE) */
  storeError: string | null
}

/** The recipient a line carries; undefined when the line itself is malformed. */
export function recipientOf (line: string, format: InputFormat, column: number): unknown {
  if (format === 'csv') {
    const f = splitCsvLine(line)
    return f === null ? undefined : f[column]
  }
  let v: unknown
  try { v = JSON.parse(line) } catch { return undefined }
  if (typeof v === 'string') return v
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) return (v as Record<string, unknown>).recipient
  return undefined
}

export async function checkChunk (getView: () => FilterView | null, policy: CheckerOptions, query: Omit<CheckQuery, 'recipients'>, input: ChunkInput): Promise<ChunkOutput> {
  const n = input.lines.length
  const recipients = new Array<unknown>(n)
  for (let i = 0; i < n; i++) recipients[i] = recipientOf(input.lines[i]!, input.format, input.column)
  let storeError: string | null = null
  const checker = new Checker(getView, policy, { storeError: (err) => { storeError = errorCode(err) } })
  const results = await checker.check({ ...query, recipients })
  const out: ChunkOutput = {
    prefixes: new Array<string>(n),
    reasons: new Uint8Array(n),
    allowed: new Uint8Array(n),
    valid: new Uint8Array(n),
    h1: new Uint32Array(n),
    h2: new Uint32Array(n),
    storeError
  }
  for (let i = 0; i < n; i++) {
    const r = results[i]!
    const raw = recipients[i]
    // A malformed line is shown as it was, so that the user can find it; a recipient as given.
    const shown = typeof raw === 'string' ? raw : raw === undefined ? input.lines[i]! : JSON.stringify(raw)
    out.prefixes[i] = csvField(shown) + ',' + (r.normalized ?? '') + ','
    out.reasons[i] = REASON_INDEX[r.reason]
    out.allowed[i] = r.allowed ? 1 : 0
    // Only a recipient that could be sent to takes part in duplicate detection: a repeated invalid one
    // (an e-mail for MESAJ, say) stays INVALID_RECIPIENT on every line.
    if (r.normalized !== null && r.reason !== 'INVALID_RECIPIENT') {
      out.valid[i] = 1
      hashText(r.normalized)
      out.h1[i] = keyHash[0]!
      out.h2[i] = keyHash[1]!
    }
  }
  out.storeError = storeError
  return out
}
