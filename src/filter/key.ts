// A consent key is (brandCode, type, recipientType, recipient). Its canonical text is
//   brandCode + typeCode + recipientTypeCode + recipient        e.g. "654321MB+905321234567"
// (brand codes are digits and the two codes are letters, so the text is unambiguous). That text is the Redis
// hash field, the embedded map key, and what the 64-bit hash is computed over. This module owns it: the checker and
// the embedded seed build it with keyText/keyCode, and Postgres (load's COPY, the change applier) with keyTextSql,
// all from the code tables TYPE_CODE and RECIPIENT_TYPE_CODE.
//
// Hand-written on purpose: the check path hashes every recipient, and the hash must be computed over the parts
// without first concatenating them (no string allocation when the bloom filter answers "absent"). A two-lane
// Murmur3-style mix over UTF-16 code units does that in a few ns; library hashers want a Buffer per call.

import { RECIPIENT_TYPE_CODE, TYPE_CODE, type ConsentType, type RecipientType } from '../domain/vocabulary.js'
import { BLOOM_SEGMENTS, segmentOf } from './bloom.js'

/** [h1, h2] written by the last hashKey/hashText/hashBytes call. Read both before hashing again. */
export const keyHash = new Uint32Array(2)

/**
 * Hashes the key text without building it: hashKey(brandCode, keyCode(type, recipientType), recipient).
 * Two Murmur3-style lanes over UTF-16 code units. State stays in locals (module-level state measured ~1.8× slower),
 * so the key's parts are walked by one loop that switches strings instead of one helper call per part.
 */
export function hashKey (p0: string, p1: string, p2: string): void {
  let a = 0x3c6ef372
  let b = 0x1f83d9ab
  let s = p0
  for (let part = 0; part < 3; part++, s = part === 1 ? p1 : p2) {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      a = mixA(a, c)
      b = mixB(b, c)
    }
  }
  finish(a, b, p0.length + p1.length + p2.length)
}

/**
 * The same hash over ASCII bytes buf[start, end): equal to hashText of the same text (all key texts are ASCII:
 * digits, letters, E.164 and validated e-mail). Lets `load` hash keys straight out of Postgres's COPY stream.
 */
export function hashBytes (buf: Uint8Array, start: number, end: number): void {
  let a = 0x3c6ef372
  let b = 0x1f83d9ab
  for (let i = start; i < end; i++) {
    const c = buf[i]!
    a = mixA(a, c)
    b = mixB(b, c)
  }
  finish(a, b, end - start)
}

// Small pure functions: V8 inlines them, and they keep the state in the caller's locals.
function mixA (a: number, c: number): number {
  let k = Math.imul(c, 0xcc9e2d51)
  k = (k << 15) | (k >>> 17)
  a ^= Math.imul(k, 0x1b873593)
  a = (a << 13) | (a >>> 19)
  return (Math.imul(a, 5) + 0xe6546b64) | 0
}

function mixB (b: number, c: number): number {
  let j = Math.imul(c ^ 0x5bd1, 0x85ebca6b)
  j = (j << 17) | (j >>> 15)
  b ^= Math.imul(j, 0xc2b2ae35)
  b = (b << 11) | (b >>> 21)
  return (Math.imul(b, 9) + 0x52dce729) | 0
}

function finish (a: number, b: number, len: number): void {
  a = fmix(a ^ len)
  b = fmix(b ^ len)
  // Cross the lanes so that neither output depends on one lane alone.
  keyHash[0] = (a + b) >>> 0
  keyHash[1] = (b ^ Math.imul(a, 0x27d4eb2f)) >>> 0
}

function fmix (h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/** Hashes an already built key text; equal to hashKey over its parts. */
export function hashText (text: string): void {
  hashKey(text, '', '')
}

const CODES: Readonly<Record<string, string>> = (() => {
  const m: Record<string, string> = {}
  for (const [t, tc] of Object.entries(TYPE_CODE)) for (const [r, rc] of Object.entries(RECIPIENT_TYPE_CODE)) m[t + '/' + r] = tc + rc
  return Object.freeze(m)
})()

/** The two-letter code for (type, recipientType), e.g. MESAJ/BIREYSEL → "MB". Built once, never per call. */
export function keyCode (type: ConsentType, recipientType: RecipientType): string {
  return CODES[type + '/' + recipientType] as string
}

export function keyText (brandCode: string, code: string, recipient: string): string {
  return brandCode + code + recipient
}

/**
 * `CASE column WHEN 'k' THEN 'v' … ELSE 'v(fallback)' END` over a code table (the CHECK constraints of `consents`
 * leave the ELSE unused there; the ledger has none, and the fallbacks are the codes these CASEs always had).
 */
export function codeCaseSql (column: string, table: Readonly<Record<string, string>>, fallback: string): string {
  let sql = `CASE ${column}`
  for (const [k, v] of Object.entries(table)) if (k !== fallback) sql += ` WHEN '${k}' THEN '${v}'`
  return `${sql} ELSE '${table[fallback]!}' END`
}

/** The key text of a `consents` or `consent_history` row in SQL (columns qualified by `alias` if given), as keyText. */
export function keyTextSql (alias = ''): string {
  const a = alias === '' ? '' : alias + '.'
  return `${a}brand_code::text || ${codeCaseSql(a + 'type', TYPE_CODE, 'EPOSTA')} || ` +
    `${codeCaseSql(a + 'recipient_type', RECIPIENT_TYPE_CODE, 'TACIR')} || ${a}recipient`
}

/**
 * The Redis bucket of a key from its two hash words (keyHash after hashing it). Its group (bucket mod
 * BLOOM_SEGMENTS, layout.ts) is the key's bloom segment (bloom.ts segmentOf), so that a change's state and bits are in
 * one hash slot of a Redis Cluster; within the group, h2 xor h1 rotated by 16 bits picks the bucket. `buckets` is a
 * multiple of BLOOM_SEGMENTS for every version `load` builds. Plain numbers in and out: nothing is allocated.
 */
export function bucketOf (h1: number, h2: number, buckets: number): number {
  const perGroup = Math.max(1, Math.floor(buckets / BLOOM_SEGMENTS))
  return segmentOf(h1) + BLOOM_SEGMENTS * (((h2 ^ ((h1 << 16) | (h1 >>> 16))) >>> 0) % perGroup)
}
