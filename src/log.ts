// Structured logs (pino). Recipients never go into a log line: log counts, codes and versions, not payloads. Errors
// are the one place where data could slip in (a driver's message may quote a value, e.g. Postgres's "Key (...)=(...)"
// detail), so every `err` passes a serializer that keeps the type, code and a redacted message, never the raw object.

import { pino, type Logger } from 'pino'

export type { Logger }

const PHONE = /\+?\d[\d\s().-]{6,}\d/g
const EMAIL = /[^\s@"'<>()]+@[^\s@"'<>()]+/g

/** Replaces anything shaped like a phone number or an e-mail address. */
export function redact (text: string): string {
  return text.replace(EMAIL, '[redacted]').replace(PHONE, '[redacted]')
}

function serializeErr (err: unknown): unknown {
  if (typeof err === 'string') return redact(err)
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code
    return { type: err.name, message: redact(err.message), ...(code !== undefined ? { code } : {}), stack: redact(err.stack ?? '') }
  }
  return redact(String(err))
}

export function createLogger (level: string, name = 'iys-gateway', destination?: NodeJS.WritableStream): Logger {
  const opts = { name, level, base: { pid: process.pid }, serializers: { err: serializeErr } }
  return destination === undefined ? pino(opts) : pino(opts, destination)
}
