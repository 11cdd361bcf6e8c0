// Recipients never reach a log line, even inside an error message a driver wrote.

import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { createLogger, redact } from '../src/log.js'

describe('logging', () => {
  it('redacts phone numbers and e-mail addresses in text', () => {
    expect(redact('Key (recipient)=(+905321234567) exists')).toBe('Key (recipient)=([redacted]) exists')
    expect(redact('bad value 0532 123 45 67 and Ali.Veli@example.com.')).toBe('bad value [redacted] and [redacted]')
    expect(redact('filter version 12 has 1000 keys')).toBe('filter version 12 has 1000 keys')
  })

  it('serialises errors without the recipients their messages or stacks quote', () => {
    const lines: string[] = []
    const sink = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
    const log = createLogger('info', 'test', sink)
    const err = Object.assign(new Error('duplicate key value violates unique constraint: (600001, MESAJ, BIREYSEL, +905321234567)'), { code: '23505' })
    log.error({ err }, 'write failed')
    log.warn({ err: 'refused ali@example.com' }, 'push failed')
    const text = lines.join('')
    expect(text).not.toContain('+905321234567')
    expect(text).not.toContain('ali@example.com')
    expect(JSON.parse(lines[0]!).err).toMatchObject({ type: 'Error', code: '23505' })
  })
})
