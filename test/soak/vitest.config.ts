import { defineConfig } from 'vitest/config'

// `npm run soak`: mixed faults for SOAK_MINUTES (default 10) against one gateway; not part of `npm test`
// (its file name does not end in .test.ts). Shorter Postgres cuts and fuzz bursts than the suite, more of them.
export default defineConfig({
  test: {
    include: ['test/soak/*.soak.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 3_600_000,
    hookTimeout: 300_000,
    env: {
      FAULTS_PG_CUT_MS: process.env.FAULTS_PG_CUT_MS ?? '10000',
      FAULTS_FUZZ: process.env.FAULTS_FUZZ ?? '2000'
    }
  }
})
