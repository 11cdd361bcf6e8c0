// The differential test while changes stream in and a `load` flips the version (issue 12): a writer commits status
// flips and new keys through the consent write path (writeConsents: lock, seq, ledger, NOTIFY) as fast as it can,
// checks run against a gateway answering from its local replica and one asking Redis (REPLICA=false), and half-way
// `load` builds and flips a new version under them. Every answer must be a state the key really had at some moment
// between PROPAGATION_MS before the request was sent and the moment its answer arrived: a change may be seen from
// the moment its transaction began, and the state before it until PROPAGATION_MS after it committed (the issue's
// bound for a RET to reach every gateway is a second).

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ConsentStatus } from '../src/domain/vocabulary.js'
import { writeConsents } from '../src/store/consent-store.js'
import { mulberry32 } from '../src/util/random.js'
import { runCli, runSteps } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServicesWithRedis } from './helpers/services.js'

const KEYS = 4000
/** The run lasts at least RUN_MS and until MIN_WRITES changes are written and the flip is done (a slow machine writes slower). */
const RUN_MS = 8000
const MIN_WRITES = 200
const DEADLINE_MS = 90_000
const PROPAGATION_MS = 1000
const BATCH = 200

/** One state of a key: its status (null: no record), visible from `from` (ms) at the earliest. */
interface State { status: ConsentStatus | null, from: number }
/** A key's states in order; state i may still be seen until state i+1's commit time plus PROPAGATION_MS. */
interface Timeline { states: State[], committed: number[] }

const phoneOf = (i: number): string => '+90532' + String(1_000_000 + i)

describe('gateway vs the truth while changes stream in and the version flips', () => {
  let services: TestServicesWithRedis
  let replica: RunningGateway
  let redisWay: RunningGateway
  const timelines = new Map<string, Timeline>()

  beforeAll(async () => {
    services = await testServices({ redis: true, dirPrefix: 'iys-diff-live-' })
    const file = join(services.dir, 'c.csv')
    const lines = ['iysCode,brandCode,recipient,recipientType,type,status,source,consentDate']
    // Keys 0 … KEYS-1 stored (a quarter RET); KEYS … 2·KEYS-1 start with no record (the writer adds some).
    for (let i = 0; i < KEYS; i++) {
      const status: ConsentStatus = i % 4 === 0 ? 'RET' : 'ONAY'
      lines.push(`700001,600001,${phoneOf(i)},BIREYSEL,MESAJ,${status},HS_WEB,2024-01-15 10:00:00`)
      timelines.set(phoneOf(i), { states: [{ status, from: 0 }], committed: [0] })
    }
    for (let i = KEYS; i < 2 * KEYS; i++) timelines.set(phoneOf(i), { states: [{ status: null, from: 0 }], committed: [0] })
    writeFileSync(file, lines.join('\n') + '\n')
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    replica = await startTestGateway({ ...services.env, REPLICA: 'true' })
    redisWay = await startTestGateway({ ...services.env, REPLICA: 'false' })
    await until(async () => /^iys_replica_serving 1$/m.test(await (await fetch(replica.url + '/metrics')).text()), 30_000, 'the replica to serve')
  }, 120_000)

  afterAll(async () => {
    await redisWay?.close()
    await replica?.close()
    await services?.close()
  })

  /** The statuses a key may be answered with for a request sent at `sent` and answered at `answered`. */
  const allowedStatuses = (t: Timeline, sent: number, answered: number): Set<ConsentStatus | null> => {
    const out = new Set<ConsentStatus | null>()
    for (let i = 0; i < t.states.length; i++) {
      const visibleFrom = t.states[i]!.from
      const visibleUntil = i + 1 < t.states.length ? t.committed[i + 1]! + PROPAGATION_MS : Infinity
      if (visibleFrom <= answered && visibleUntil >= sent) out.add(t.states[i]!.status)
    }
    return out
  }
  const reasonOf = (s: ConsentStatus | null): string => s === 'ONAY' ? 'CONSENT' : s === 'RET' ? 'REJECTED' : 'NO_CONSENT'

  it('answers every check with a state the key had (replica and Redis), while a writer streams changes and load flips', async () => {
    const rnd = mulberry32(20261207)
    const started = Date.now()
    let written = 0
    let flipped = false
    const running = (): boolean => Date.now() < started + DEADLINE_MS && (Date.now() < started + RUN_MS || written < MIN_WRITES || !flipped)
    let clock = Math.floor(Date.now() / 1000) - 86_400 // consent dates only move forward: İYS's rules accept each change

    // Four writers, each over its own quarter of the keys (a key's changes stay in order).
    const writer = async (part: number): Promise<number> => {
      let writes = 0
      while (running()) {
        const recipient = phoneOf(4 * Math.floor(rnd() * KEYS / 2) + part)
        const t = timelines.get(recipient)!
        const last = t.states[t.states.length - 1]!.status
        const status: ConsentStatus = last === 'ONAY' ? 'RET' : 'ONAY'
        const began = Date.now()
        const [outcome] = await writeConsents(services.pool, [{
          consent: { iysCode: '700001', brandCode: '600001', recipient, recipientType: 'BIREYSEL', type: 'MESAJ', status, source: 'HS_WEB', consentDate: ++clock },
          authority: 'iys',
          via: 'pull'
        }])
        expect(outcome!.status).toBe('applied')
        t.states.push({ status, from: began })
        t.committed.push(Date.now())
        writes++
        written++
      }
      return writes
    }

    const flip = (async () => {
      await new Promise(resolve => setTimeout(resolve, RUN_MS / 3))
      const r = await runCli(['load'], services.env)
      expect(r.code, r.stderr).toBe(0)
      flipped = true
    })()

    const wrong: string[] = []
    let answered = 0
    const checker = async (gw: RunningGateway, name: string): Promise<void> => {
      while (running()) {
        const recipients = Array.from({ length: BATCH }, () => phoneOf(Math.floor(rnd() * 2 * KEYS)))
        const sent = Date.now()
        const res = await check(gw.url, { brandCode: 600001, type: 'MESAJ', recipients })
        const at = Date.now()
        res.forEach((r, i) => {
          answered++
          const ok = allowedStatuses(timelines.get(recipients[i]!)!, sent, at)
          if (![...ok].some(s => reasonOf(s) === r.reason) && wrong.length < 10) {
            wrong.push(`${name}: ${recipients[i]} answered ${r.reason}, possible ${[...ok].map(reasonOf).join('/')} (sent +${sent - started} ms)`)
          }
        })
      }
    }
    const [w0, w1, w2, w3] = await Promise.all([writer(0), writer(1), writer(2), writer(3), flip, checker(replica, 'replica'), checker(replica, 'replica'), checker(redisWay, 'redis')])
    const writes = w0 + w1 + w2 + w3
    expect(wrong).toEqual([])
    expect(writes, `the writers reached ${writes} changes in ${DEADLINE_MS / 1000} s`).toBeGreaterThanOrEqual(MIN_WRITES)
    expect(answered).toBeGreaterThan(10_000)
    // The flip really happened under the checks, and the replica serves the new version.
    await until(async () => /^iys_replica_serving 1$/m.test(await (await fetch(replica.url + '/metrics')).text()), 30_000, 'the replica of the new version to serve')
    expect((await (await fetch(replica.url + '/readyz')).json() as { filterVersion: number }).filterVersion).toBe(2)
    console.log(`live differential: ${writes} changes written, ${answered} answers checked, none wrong`)
  }, DEADLINE_MS + 60_000)
})
