// The README's evidence-ledger example, `GET /v1/consents/state?…&at=2026-03-01T10:00:00+03:00`, as a user copies
// it into curl: a `+` in a query string arrives as a space, so the gateway reads a space before a two-digit offset
// as the `+` it was, and the URL-encoded form (`%2B03:00`) means the same moment. (Named cli-*: the command-line
// user's copy-paste is what it guards.)

import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { testServices, type TestServices } from './helpers/services.js'

const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8')

describe('the at= timestamp of /v1/consents/state', () => {
  let ws: TestServices
  let gw: RunningGateway
  beforeAll(async () => {
    ws = await testServices({ migrate: true, dirPrefix: 'iys-at-' })
    gw = await startTestGateway(ws.env)
  })
  afterAll(async () => {
    await gw?.close()
    await ws?.close()
  })

  const state = async (at: string): Promise<{ status: number, json: any }> => {
    const r = await fetch(`${gw.url}/v1/consents/state?brandCode=600001&type=MESAJ&recipient=%2B905321234567&at=${at}`, { headers: gw.auth })
    return { status: r.status, json: await r.json() }
  }

  it('reads the README example as written (its + unencoded) and URL-encoded, as the same moment', async () => {
    const example = /consents\/state\?[^`\s]*&at=([^`\s&]+)/.exec(README)?.[1]
    expect(example).toBeDefined()
    expect(example).not.toContain('+') // the README writes the offset's + as %2B, as a URL must
    expect((await state(example!)).json).toMatchObject({ at: '2026-03-01T07:00:00.000Z', state: null })
    for (const at of ['2026-03-01T10:00:00+03:00', '2026-03-01T10:00:00%2B03:00', '2026-03-01T10:00:00+0300', '2026-03-01T10:00+03:00']) {
      const r = await state(at)
      expect({ at, status: r.status, instant: r.json.at }).toEqual({ at, status: 200, instant: '2026-03-01T07:00:00.000Z' })
    }
    // A minus needs no encoding; a Z neither.
    expect((await state('2026-03-01T10:00:00-03:00')).json.at).toBe('2026-03-01T13:00:00.000Z')
    expect((await state('2026-03-01T10:00:00Z')).json.at).toBe('2026-03-01T10:00:00.000Z')
  })

  it('still refuses what is not a date-time, a stray space or sign included', async () => {
    for (const at of ['yesterday', '2026-03-01T10:00:00+3', '2026-03-01T10:00:00++03:00']) {
      const r = await state(at)
      expect({ at, status: r.status, code: r.json.errors?.[0]?.code }).toEqual({ at, status: 422, code: 'INVALID_FIELD' })
    }
  })
})
