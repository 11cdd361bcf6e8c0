// Recipients never reach a log line, even inside an error message a driver wrote.

import { Writable } from 'node:stream'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import { GatewayError } from '../src/domain/errors.js'
import { IysApiError } from '../src/iys/client.js'
import { createLogger, redact } from '../src/log.js'
import { Drainer } from '../src/store/drainer.js'

function capture (): { log: ReturnType<typeof createLogger>, lines: string[] } {
  const lines: string[] = []
  const sink = new Writable({ write (chunk, _enc, cb) { lines.push(chunk.toString()); cb() } })
  return { log: createLogger('info', 'test', sink), lines }
}

/** A Postgres unique violation as pg reports it: the row value is in `detail`, never in the message. */
function uniqueViolation (): pg.DatabaseError {
  const err = new pg.DatabaseError('duplicate key value violates unique constraint "consents_pkey"', 0, 'error')
  Object.assign(err, {
    code: '23505',
    detail: 'Key (recipient, type)=(+905321234567, MESAJ) already exists.',
    where: 'SQL statement "INSERT INTO consents VALUES (\'ali@example.com\')"',
    hint: 'recipient 905321234567',
    table: 'consents',
    constraint: 'consents_pkey'
  })
  return err
}

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

  it('drops the fields of a Postgres error that quote a row value and keeps its SQLSTATE', () => {
    const { log, lines } = capture()
    log.error({ err: uniqueViolation() }, 'write failed')
    const text = lines.join('')
    expect(text).not.toContain('905321234567')
    expect(text).not.toContain('ali@example.com')
    expect(JSON.parse(lines[0]!).err).toMatchObject({ code: '23505', message: 'duplicate key value violates unique constraint "consents_pkey"' })
  })

  it('keeps what an error wraps out of the line: its cause chain and the items a gateway error carries', () => {
    const { log, lines } = capture()
    const wrapped = new GatewayError('H015', { cause: uniqueViolation(), value: '+905321234567' })
    log.error({ err: wrapped }, 'unexpected error')
    const network = new IysApiError('NETWORK', 0, 'İYS unreachable: socket hang up', { cause: new Error('refused for ali@example.com', { cause: uniqueViolation() }) })
    log.warn({ err: network }, 'İYS pull failed; retrying next round')
    const text = lines.join('')
    expect(text).not.toContain('905321234567')
    expect(text).not.toContain('ali@example.com')
    expect(JSON.parse(lines[0]!).err).toMatchObject({ type: 'GatewayError', code: 'H015' })
    expect(JSON.parse(lines[1]!).err).toMatchObject({ type: 'IysApiError', message: 'İYS unreachable: socket hang up' })
  })

  it('a queue drainer logs a failing pass as the error object, through the serializer', async () => {
    const { log, lines } = capture()
    const drainer = new Drainer('push inbox', async () => { throw uniqueViolation() }, log)
    drainer.kick()
    await drainer.stop()
    const text = lines.join('')
    expect(text).not.toContain('905321234567')
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: 'push inbox: pass failed; retrying', err: { code: '23505', message: 'duplicate key value violates unique constraint "consents_pkey"' } })
  })
})
