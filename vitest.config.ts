import { defineConfig } from 'vitest/config'

// Two cores: two test files at a time. Integration tests start real servers and talk to the machine's Postgres
// and Redis, each in its own database and key prefix (test/helpers/services.ts). The global set-up builds dist/ once.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
