// vitest's global set-up: compile src/ and loaders/ to dist/ once, before any test file starts. Tests that run the real command
// line (bin/iys-gateway.js) load dist/, so without this a run after an edit would test yesterday's build.
//
// This is the one build of a test run: `pretest` only type-checks (tsconfig.test.json, no output), so `npm test`
// (what CI runs) compiles once, and `npx vitest run test/<file>` compiles too. Type errors are pretest's to fail
// on: tsc still writes every file then (exit status 2), so dist/ is current and the run goes on with a warning.
// Only a build that wrote nothing (any other status) stops the run.

import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const TSC = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url))
const EMITTED_WITH_ERRORS = 2 // TypeScript's ExitStatus.DiagnosticsPresent_OutputsGenerated

export default function setup (): void {
  const r = spawnSync(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8' })
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error?.message ?? ''}`
  if (r.status === EMITTED_WITH_ERRORS) console.warn(`tsc -p tsconfig.json reported type errors (dist/ was written):\n${output}`)
  else if (r.status !== 0) throw new Error(`tsc -p tsconfig.json did not build dist/:\n${output}`)
}
