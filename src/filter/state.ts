// The exact consent state of one key, and its compact text encoding. This module owns the encoding: the same text is
// stored in Redis (hash field value) and in the embedded map, so both stores share one decoder and one policy path,
// and every writer (embedded seed, `load`'s COPY, the change applier, its Lua script) takes its pieces from here.
//
//   <status O|R><source index, base36 char><consentDate epoch seconds, base36>.<change seq, base36>
//   e.g. "O2l3s0mz4.2n9c"  (about 14 bytes)
//
// The seq is the base-36 text after the one SEQ_SEPARATOR: apply-states.lua reads it there (SEQ_LUA_PATTERN) to keep
// the newest state, so the separator and that pattern change together or not at all.

import { SOURCES, type ConsentSource, type ConsentStatus } from '../domain/vocabulary.js'
import { codeCaseSql } from './key.js'

export interface ConsentState {
  status: ConsentStatus
  source: ConsentSource
  /** epoch seconds */
  consentDate: number
  /** change sequence number in Postgres (0 in the embedded store's seed) */
  seq: number
}

/** The one-letter status code that starts an encoded state. */
export const STATUS_CODE: Readonly<Record<ConsentStatus, string>> = Object.freeze({ ONAY: 'O', RET: 'R' })
/**
 * Between the consentDate and the seq; appears nowhere else in an encoded state (base 36 is [0-9a-z]). A punctuation
 * character, so that '%' before it in a Lua pattern means the character itself.
 */
export const SEQ_SEPARATOR = '.'
/** The Lua pattern that captures the base-36 seq of an encoded state (apply-states.lua): SEQ_SEPARATOR, then to the end. */
export const SEQ_LUA_PATTERN = '%' + SEQ_SEPARATOR + '(%w+)$'

const RET_CHAR = STATUS_CODE.RET.charCodeAt(0)

export function encodeState (status: ConsentStatus, sourceIndex: number, consentDate: number, seq: number): string {
  return encodeStateFrom(STATUS_CODE[status], sourceIndex, consentDate, seq)
}

/** encodeState with the status already as its code (the `s` column of stateColumnsSql). */
export function encodeStateFrom (statusCode: string, sourceIndex: number, consentDate: number, seq: number): string {
  return statusCode + sourceIndex.toString(36) + consentDate.toString(36) + SEQ_SEPARATOR + seq.toString(36)
}

export function decodeState (v: string): ConsentState {
  const dot = v.indexOf(SEQ_SEPARATOR, 2)
  return {
    status: v.charCodeAt(0) === RET_CHAR ? 'RET' : 'ONAY',
    source: SOURCES[parseInt(v[1]!, 36)] as ConsentSource,
    consentDate: parseInt(v.slice(2, dot), 36),
    seq: parseInt(v.slice(dot + 1), 36)
  }
}

const SOURCE_ARRAY_SQL = `ARRAY[${SOURCES.map(s => `'${s}'`).join(',')}]`

/**
 * The pieces of the encoded state of a `consents` or `consent_history` row (columns qualified by `alias` if given),
 * computed by Postgres from the same tables as encodeState, as four columns:
 *   s (status code; a status other than RET reads as ONAY, as it always has: `consents` has a CHECK, and only our
 *   own writes fill the ledger), src (index in SOURCES, NULL for a source we do not know), d (consentDate epoch
 *   seconds), seq.
 * encodeStateFrom(s, src, d, seq) joins them; build.ts composes the same bytes straight into its RESP buffer.
 */
export function stateColumnsSql (alias = ''): string {
  const a = alias === '' ? '' : alias + '.'
  return `${codeCaseSql(a + 'status', STATUS_CODE, 'ONAY')} AS s, ` +
    `array_position(${SOURCE_ARRAY_SQL}, ${a}source) - 1 AS src, ` +
    `extract(epoch FROM ${a}consent_date)::bigint AS d, ${a}seq AS seq`
}
