// Structured logs (pino). Recipients never go into a log line: log counts, codes and versions, not payloads.
import { pino, type Logger } from 'pino'

export type { Logger }

export function createLogger (level: string, name = 'iys-gateway'): Logger {
  return pino({ name, level, base: { pid: process.pid } })
}
