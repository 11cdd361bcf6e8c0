// The README's curl examples are a contract with new users: each request there must give exactly the answer
// printed under it when run against `npm start` (the embedded store over data/sample-consents.csv).

import { readFileSync } from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { postJson, startTestGateway, type RunningGateway } from './helpers/gateway.js'

const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
// A ```sh block holding one curl to /v1/check with a -d '...' body, followed by a ```json block with the answer.
const EXAMPLE = /```sh\ncurl -s localhost:8080(\/\S+) -H 'content-type: application\/json' -d '([^']*)'\n```\n```json\n(.*)\n```/g
const examples = [...README.matchAll(EXAMPLE)].map(m => ({ path: m[1]!, body: m[2]!, answer: m[3]! }))

describe('README examples', () => {
  let gateway: RunningGateway
  beforeAll(async () => { gateway = await startTestGateway({}) })
  afterAll(async () => { await gateway?.close() })

  it('has curl examples to check', () => {
    expect(examples.length).toBeGreaterThanOrEqual(5)
  })

  it.each(examples.map(e => [e.body, e] as const))('answers %s as the README shows', async (_, e) => {
    const { json } = await postJson(gateway.url + e.path, e.body)
    expect(json).toEqual(JSON.parse(e.answer))
  })
})
