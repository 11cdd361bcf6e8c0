// Structured logs (pino). Recipients never go into a log line: log counts, codes and versions, not payloads. Errors
// are the one place where data could slip in (a driver's message may quote a value, e.g. Postgres's "Key (...)=(...)"
// detail), so every `err` passes a serializer that keeps the type, code and a redacted message, never the raw object.
//
// On a terminal, lines are short and human-readable (`12:00:01 WARN  message key=value`) instead of JSON, and they
// are written above the live progress line of a command (loaders/progress.ts) rather than into it. Anywhere else
// (files, pipes, docker logs) they stay one JSON object per line.

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

/**
 * The live line a command keeps at the bottom of a terminal (its progress), or '' when there is none. A log line
 * for that terminal erases it, is written, and draws it again below itself, so the two never share a line.
 */
export const liveLine = { text: '' }

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' }
const OMIT = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg'])

/** One pino JSON line as a terminal line: time, level, message, then the other fields as key=value. */
export function humanLine (json: string): string {
  let o: Record<string, unknown>
  try { o = JSON.parse(json) } catch { return json.trimEnd() }
  const t = new Date(typeof o.time === 'number' ? o.time : Date.now())
  let line = `${t.toTimeString().slice(0, 8)} ${LEVELS[o.level as number] ?? String(o.level)} ${String(o.msg ?? '')}`
  for (const [k, v] of Object.entries(o)) {
    if (OMIT.has(k)) continue
    if (k === 'err' && typeof v === 'object' && v !== null) {
      const e = v as { message?: string, code?: string }
      line += ` err="${e.message ?? ''}"${e.code !== undefined ? ` code=${e.code}` : ''}`
    } else {
      line += ` ${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`
    }
  }
  return line
}

function terminalDestination (tty: NodeJS.WriteStream): { write: (s: string) => void } {
  return {
    write (s: string) {
      const live = liveLine.text
      tty.write((live !== '' ? '\r\x1b[K' : '') + humanLine(s) + '\n' + live)
    }
  }
}

/**
 * A pino logger. `destination` defaults to stdout; a terminal (a stream with isTTY) gets human-readable lines.
 * Commands other than `serve` log to stderr, so that their stdout holds only the JSON scripts read.
 */
export function createLogger (level: string, name = 'iys-gateway', destination?: NodeJS.WritableStream): Logger {
  const opts = { name, level, base: { pid: process.pid }, serializers: { err: serializeErr } }
  if (destination === undefined) return pino(opts)
  if ((destination as NodeJS.WriteStream).isTTY === true) return pino(opts, terminalDestination(destination as NodeJS.WriteStream))
  return pino(opts, destination)
}
