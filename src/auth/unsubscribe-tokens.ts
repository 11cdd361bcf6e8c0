// The tokens of the SMTP relay's one-click unsubscribe links (RFC 8058; http/unsubscribe-route.ts): "recipient R may
// withdraw their EPOSTA consent to brand B of tenant I", issued at a second. Nobody can make one without the secret,
// so nobody can unsubscribe someone else.
//
// Format (version 1), one URL path segment of base64url without padding:
//
//   token = base64url( 0x01 | siv[16] | AES-256-CTR(encKey, iv = siv, plain) )
//   plain = issuedAt (uint32 BE, epoch seconds) | "<iysCode>|<brandCode>|<recipient>" (UTF-8)
//   siv   = first 16 bytes of HMAC-SHA256(macKey, 0x01 | plain)
//   encKey, macKey = HKDF-SHA256(secret, info "iys-gateway unsubscribe v1"), 32 bytes each
//
// The address is encrypted, not just signed: a token in a URL reaches proxy and CDN logs, link scanners and browser
// histories, which should not learn who reads which brand's mail (nor the brand). The construction is SIV (RFC 5297's,
// with HMAC-SHA256 as the PRF): the MAC of the plaintext is the IV, so there is no nonce that could repeat however many
// tokens a secret signs (AES-GCM with random 96-bit nonces is only safe for about 2^32 of them, and a relay signs one
// per message and recipient), and the MAC is checked in constant time before anything of the plaintext is used. It
// is deterministic: the same claim in the same second gives the same token, which tells nothing. What still shows is
// the token's length, so roughly the address's.
//
// Tokens do not expire: RFC 8058 expects the link to work whenever the mail is read, months later too. The claim
// carries issuedAt for a caller that wants a limit. Rotation: SMTP_UNSUBSCRIBE_SECRETS lists secrets, the first signs
// and all verify; dropping a secret from the list retires every token it signed.

import { createCipheriv, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import { normalizeEmail } from '../domain/normalize.js'
import { canonicalCode } from '../domain/vocabulary.js'

export interface UnsubscribeClaim {
  iysCode: string
  brandCode: string
  /** the e-mail address, normalised (lower case) */
  recipient: string
  /** epoch seconds */
  issuedAt: number
}

/** The shortest secret SMTP_UNSUBSCRIBE_SECRETS takes (characters). */
export const MIN_SECRET_LENGTH = 32

const VERSION = 0x01
const SIV_BYTES = 16
/** version, siv, issuedAt and the shortest "1|1|a@b.cd" */
const MIN_TOKEN_BYTES = 1 + SIV_BYTES + 4 + 10
/** Longer than any token signed here (an address is at most 265 characters): refused before any decoding. */
const MAX_TOKEN_LENGTH = 512
const BASE64URL = /^[A-Za-z0-9_-]+$/
const MAX_ISSUED_AT = 0xffffffff

interface Keys { enc: Buffer, mac: Buffer }

/**
 * Keys derived per secret, remembered: verifying tries every secret of the list, and HKDF per request per secret
 * would cost more than the AES and HMAC themselves. Secrets are configuration (a handful); the bound only keeps a
 * caller that passes ever new ones from growing it.
 */
const derived = new Map<string, Keys>()
function keysOf (secret: string): Keys {
  let k = derived.get(secret)
  if (k === undefined) {
    const okm = Buffer.from(hkdfSync('sha256', secret, '', 'iys-gateway unsubscribe v1', 64))
    k = { enc: okm.subarray(0, 32), mac: okm.subarray(32) }
    if (derived.size >= 16) derived.clear()
    derived.set(secret, k)
  }
  return k
}

const sivOf = (mac: Buffer, plain: Buffer): Buffer =>
  createHmac('sha256', mac).update(Buffer.of(VERSION)).update(plain).digest().subarray(0, SIV_BYTES)

// CTR is its own inverse: the same call encrypts and decrypts.
const ctr = (enc: Buffer, iv: Buffer, data: Buffer): Buffer => {
  const c = createCipheriv('aes-256-ctr', enc, iv)
  return Buffer.concat([c.update(data), c.final()])
}

/**
 * A token for `t`, signed with `secret` (the first of SMTP_UNSUBSCRIBE_SECRETS). The codes must be İYS codes and the
 * recipient an e-mail address (it is normalised: trimmed, lower case); anything else is a programming error and throws.
 */
export function signUnsubscribe (secret: string, t: { iysCode: string, brandCode: string, recipient: string, issuedAt?: number }): string {
  if (secret.length < MIN_SECRET_LENGTH) throw new Error(`an unsubscribe secret needs at least ${MIN_SECRET_LENGTH} characters`)
  const iysCode = canonicalCode(t.iysCode)
  const brandCode = canonicalCode(t.brandCode)
  const recipient = normalizeEmail(t.recipient)
  // The address is not echoed: errors end up in logs.
  if (iysCode === null || brandCode === null) throw new Error('an unsubscribe token needs an iysCode and a brandCode (İYS codes)')
  if (typeof recipient !== 'string') throw new Error('an unsubscribe token needs an e-mail address as its recipient')
  const issuedAt = t.issuedAt ?? Math.floor(Date.now() / 1000)
  if (!Number.isInteger(issuedAt) || issuedAt < 0 || issuedAt > MAX_ISSUED_AT) throw new Error('issuedAt must be epoch seconds')
  const text = Buffer.from(`${iysCode}|${brandCode}|${recipient}`, 'utf8')
  const plain = Buffer.allocUnsafe(4 + text.length)
  plain.writeUInt32BE(issuedAt, 0)
  text.copy(plain, 4)
  const k = keysOf(secret)
  const siv = sivOf(k.mac, plain)
  return Buffer.concat([Buffer.of(VERSION), siv, ctr(k.enc, siv, plain)]).toString('base64url')
}

/**
 * The claim of `token` when one of `secrets` signed it, else null (malformed, altered, or signed with a secret not in
 * the list). Only the canonical spelling of a token verifies: base64url that would decode to the same bytes
 * (other trailing bits, stray characters) does not.
 */
export function verifyUnsubscribe (secrets: readonly string[], token: string): UnsubscribeClaim | null {
  if (token.length > MAX_TOKEN_LENGTH || !BASE64URL.test(token)) return null
  const bytes = Buffer.from(token, 'base64url')
  if (bytes.length < MIN_TOKEN_BYTES || bytes[0] !== VERSION || bytes.toString('base64url') !== token) return null
  const siv = bytes.subarray(1, 1 + SIV_BYTES)
  const sealed = bytes.subarray(1 + SIV_BYTES)
  for (const secret of secrets) {
    const k = keysOf(secret)
    const plain = ctr(k.enc, siv, sealed)
    if (timingSafeEqual(sivOf(k.mac, plain), siv)) return claimOf(plain)
  }
  return null
}

/** The claim in a plaintext whose MAC checked; null if it does not parse (only a token signed by other code). */
function claimOf (plain: Buffer): UnsubscribeClaim | null {
  const text = plain.subarray(4).toString('utf8')
  // The codes are digits; the address may hold '|' itself, so it is everything after the second one.
  const a = text.indexOf('|')
  const b = a < 0 ? -1 : text.indexOf('|', a + 1)
  if (b < 0) return null
  const iysCode = text.slice(0, a)
  const brandCode = text.slice(a + 1, b)
  const recipient = text.slice(b + 1)
  if (canonicalCode(iysCode) !== iysCode || canonicalCode(brandCode) !== brandCode || normalizeEmail(recipient) !== recipient) return null
  return { iysCode, brandCode, recipient, issuedAt: plain.readUInt32BE(0) }
}

/**
 * SMTP_UNSUBSCRIBE_SECRETS: comma-separated secrets of at least MIN_SECRET_LENGTH characters each (spaces around
 * them ignored); the first signs, all verify. Empty text: none. A problem throws an Error that names the secret by
 * its position, never by its value.
 */
export function parseUnsubscribeSecrets (text: string): string[] {
  if (text.trim() === '') return []
  const secrets = text.split(',').map(s => s.trim())
  secrets.forEach((s, i) => {
    const which = secrets.length === 1 ? 'the secret' : `secret ${i + 1} of ${secrets.length}`
    if (s === '') throw new Error(`${which} is empty (a stray comma?)`)
    if (s.length < MIN_SECRET_LENGTH) throw new Error(`${which} has ${s.length} characters; each needs at least ${MIN_SECRET_LENGTH} (e.g. openssl rand -hex 32)`)
  })
  return secrets
}
