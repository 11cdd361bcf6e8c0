// A self-signed certificate for localhost (and 127.0.0.1) for the tests that speak TLS: openssl, which every machine
// of ours has; without it these tests fail naming it rather than skip.

import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

export interface TestCert { keyFile: string, certFile: string, key: Buffer, cert: Buffer }

/** Writes key.pem and cert.pem into `dir`. */
export function selfSignedCert (dir: string): TestCert {
  const keyFile = join(dir, 'key.pem')
  const certFile = join(dir, 'cert.pem')
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' })
  } catch (err) {
    throw new Error(`openssl is required for the TLS tests (a self-signed certificate): ${(err as Error).message}`)
  }
  return { keyFile, certFile, key: readFileSync(keyFile), cert: readFileSync(certFile) }
}
