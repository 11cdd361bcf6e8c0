// The README's curl examples are a contract with new users: each request there must give exactly the answer
// printed under it when run against `npm start` (the embedded store over data/sample-consents.csv).

import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DEMO_API_KEY } from './helpers/auth.js'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'

const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
// A ```sh block holding one curl to /v1/check with a -d '...' body, followed by a ```json block with the answer.
const EXAMPLE = /```sh\ncurl -s localhost:8080(\/\S+) -H "authorization: Bearer \$KEY" -H 'content-type: application\/json' -d '([^']*)'\n```\n```json\n(.*)\n```/g
// The key the examples use ($KEY), as the README defines it: it must be the demo key `npm start` accepts.
const KEY = /```sh\nKEY=(\S+)\n```/.exec(README)?.[1]
const examples = [...README.matchAll(EXAMPLE)].map(m => ({ path: m[1]!, body: m[2]!, answer: m[3]! }))

describe('README examples', () => {
  let gateway: RunningGateway
  beforeAll(async () => { gateway = await startTestGateway({}) })
  afterAll(async () => { await gateway?.close() })

  it('has curl examples to check', () => {
    expect(examples.length).toBeGreaterThanOrEqual(5)
  })

  it('gives the curl examples the demo key of `npm start`', () => {
    expect(KEY).toBe(DEMO_API_KEY)
  })

  it.each(examples.map(e => [e.body, e] as const))('answers %s as the README shows', async (_, e) => {
    const { json } = await postJson(gateway.url + e.path, e.body)
    expect(json).toEqual(JSON.parse(e.answer))
  })
})
