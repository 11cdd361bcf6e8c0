// The exact consent state of one key, and its compact text encoding. The same encoding is stored in Redis
// (hash field value) and in the embedded map, so both stores share one decoder and one policy path.
//
//   <status O|R><source index, base36 char><consentDate epoch seconds, base36>.<change seq, base36>
//   e.g. "O2l3s0mz4.2n9c"  (about 14 bytes)

import { SOURCES, type ConsentSource, type ConsentStatus } from '../domain/vocabulary.js'

export interface ConsentState {
  status: ConsentStatus
  source: ConsentSource
  /** epoch seconds */
  consentDate: number
  /** change sequence number in Postgres (0 in the embedded store's seed) */
  seq: number
}

export function encodeState (status: ConsentStatus, sourceIndex: number, consentDate: number, seq: number): string {
  return (status === 'RET' ? 'R' : 'O') + sourceIndex.toString(36) + consentDate.toString(36) + '.' + seq.toString(36)
}

export function decodeState (v: string): ConsentState {
  const dot = v.indexOf('.', 2)
  return {
    status: v.charCodeAt(0) === 82 /* R */ ? 'RET' : 'ONAY',
    source: SOURCES[parseInt(v[1]!, 36)] as ConsentSource,
    consentDate: parseInt(v.slice(2, dot), 36),
    seq: parseInt(v.slice(dot + 1), 36)
  }
}
