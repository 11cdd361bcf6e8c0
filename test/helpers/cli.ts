// Runs the real command line (bin/iys-gateway.js over dist/, built by test/helpers/global-setup.ts) as a user would.

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEMO_API_KEY, tenantKey } from './auth.js'
import { registerKey } from './gateway.js'

export const BIN = fileURLToPath(new URL('../../bin/iys-gateway.js', import.meta.url))

export interface CliResult { code: number, stdout: string, stderr: string }

/** Environment for child processes: ours only, so a developer's shell settings cannot leak into a test. */
export function cliEnv (env: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'warn', ...env }
}

export function runCli (args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const t = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`iys-gateway ${args.join(' ')} timed out`)) }, timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => { clearTimeout(t); resolve({ code: code ?? -1, stdout, stderr }) })
  })
}

export interface ServeProcess {
  url: string
  /** as startTestGateway's: a key of the test tenant with DATABASE_URL, else the demo key (registered for postJson and check) */
  apiKey: string
  stop (): Promise<void>
}

/** Starts `iys-gateway serve` as its own process on a free port and waits until /readyz answers 200. */
export async function startServeProcess (env: Record<string, string>, port: number, timeoutMs = 20_000): Promise<ServeProcess> {
  const apiKey = env.DATABASE_URL !== undefined ? (await tenantKey(env.DATABASE_URL)).apiKey : DEMO_API_KEY
  // Without DATABASE_URL the demo key, also on a Redis gateway (AUTH_DEMO_KEY; off there by default), as startTestGateway.
  const demo: Record<string, string> = env.DATABASE_URL === undefined ? { AUTH_DEMO_KEY: 'true' } : {}
  const own = mkdtempSync(join(tmpdir(), 'iys-serve-')) // its scrub jobs and spool, removed with it
  const child = spawn(process.execPath, [BIN, 'serve'], {
    env: cliEnv({ SCRUB_DIR: join(own, 'scrub'), DECISION_SPOOL_DIR: join(own, 'spool'), ...demo, ...env, PORT: String(port), FILTER_POLL_MS: '50' }),
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + timeoutMs
  while (true) {
    if (child.exitCode !== null) throw new Error(`serve exited with ${child.exitCode}: ${stderr}`)
    try { if ((await fetch(url + '/readyz')).status === 200) break } catch { /* not listening yet */ }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`serve did not become ready: ${stderr}`) }
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  registerKey(url, apiKey)
  return {
    url,
    apiKey,
    async stop () {
      if (child.exitCode === null) {
        const exited = new Promise(resolve => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      }
      rmSync(own, { recursive: true, force: true })
    }
  }
}

/** Runs CLI commands in order, as a user would set up a deployment; the first failure throws with its stderr. */
export async function runSteps (steps: string[][], env: Record<string, string>): Promise<void> {
  for (const args of steps) {
    const r = await runCli(args, env)
    if (r.code !== 0) throw new Error(`iys-gateway ${args[0]} failed (${r.code}): ${r.stderr}`)
  }
}

/** migrate → generate → import → load: a synthetic data set served from Redis. */
export function seedGenerated (env: Record<string, string>, file: string, generate: { rows: number, brands: number, seed: number, retShare?: number }): Promise<void> {
  const gen = ['generate', '--rows', String(generate.rows), '--brands', String(generate.brands), '--seed', String(generate.seed), '--out', file]
  if (generate.retShare !== undefined) gen.push('--ret-share', String(generate.retShare))
  return runSteps([['migrate'], gen, ['import', file], ['load']], env)
}
