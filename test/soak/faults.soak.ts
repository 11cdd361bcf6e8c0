// The long run of the fault suite (`npm run soak`): for SOAK_MINUTES (default 10), one fault after another drawn
// from every scenario of test/faults.test.ts with a seeded generator (SOAK_SEED), traffic checked against the truth
// throughout. Passes when no scenario had a violation; the figures go to test-results/soak.json.

import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mulberry32 } from '../../src/util/random.js'
import { killAllChildren } from '../helpers/fault-rig.js'
import { burstViolations, KNOBS, scenarios, setupWorld, table, violations, type World } from '../helpers/fault-scenarios.js'

const MINUTES = Number(process.env.SOAK_MINUTES ?? 10)
const SEED = Number(process.env.SOAK_SEED ?? 20261201)

describe('soak: mixed faults while traffic runs', () => {
  let world: World

  beforeAll(async () => { world = await setupWorld(SEED % 1000) })

  afterAll(async () => {
    try {
      if (world !== undefined) {
        console.log(`\nsoak figures (${MINUTES} min, seed ${SEED})\n` + table(world.figures))
        const dir = fileURLToPath(new URL('../../test-results/', import.meta.url))
        mkdirSync(dir, { recursive: true })
        writeFileSync(dir + 'soak.json', JSON.stringify({ at: new Date().toISOString(), minutes: MINUTES, seed: SEED, knobs: KNOBS, scenarios: world.figures.map(f => ({ ...f, violations: violations(f) })), bursts: world.bursts }, null, 2) + '\n')
      }
    } finally {
      await world?.close()
      killAllChildren()
    }
  })

  it(`survives ${MINUTES} minutes of mixed faults with no wrong answer and no lost decision`, async () => {
    const rnd = mulberry32(SEED)
    const all = Object.entries(scenarios)
    const failures: string[] = []
    const end = Date.now() + MINUTES * 60_000
    while (Date.now() < end) {
      const [name, run] = all[Math.floor(rnd() * all.length)]!
      const f = await run(world)
      const v = violations(f)
      if (Object.keys(v).length > 0) failures.push(`${f.name}: ${JSON.stringify(v)} ${f.notes.join(' | ')}`)
      if (name === 'poison') {
        for (const [b, figs] of Object.entries(world.bursts)) {
          const bv = burstViolations(figs)
          if (Object.keys(bv).length > 0) failures.push(`${b}: ${JSON.stringify(bv)} ${figs.samples.slice(0, 3).join(' | ')}`)
        }
      }
    }
    expect(failures).toEqual([])
  })
})
