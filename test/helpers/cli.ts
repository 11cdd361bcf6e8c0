// Runs the real command line (bin/iys-gateway.js over dist/, built by `pretest`) as a user would.

import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

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
