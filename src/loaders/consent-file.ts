// Reads a consent file (CSV with a header row naming İYS fields, in any order) into validated records, batch by
// batch. Invalid rows come out beside the good ones with their line numbers and İYS error codes; they never stop
// the file.

import { createReadStream } from 'node:fs'
import { validateConsent, isValidConsent, type ValidConsent } from '../domain/consent.js'
import type { ErrorItem } from '../domain/errors.js'
import { readLineBatches, splitCsvLine } from './csv.js'

export const CONSENT_COLUMNS = ['iysCode', 'brandCode', 'recipient', 'recipientType', 'type', 'status', 'source', 'consentDate'] as const
const REQUIRED = CONSENT_COLUMNS.filter(c => c !== 'recipientType')

export interface Reject {
  line: number
  error: ErrorItem
}

export interface ConsentBatch {
  consents: ValidConsent[]
  /** line number of each consent */
  lines: number[]
  rejects: Reject[]
  /** İYS's transactionId per consent where the file carries one (İYS exports do), else null */
  transactionIds: (string | null)[]
  /** İYS's creationDate per consent (epoch seconds) where the file carries one, else null */
  creationDates: (number | null)[]
  /** bytes of the file read so far (for progress) */
  bytesRead: number
}

export class FileFormatError extends Error {
  override name = 'FileFormatError'
}

export async function * readConsentFile (path: string, nowSeconds: number): AsyncGenerator<ConsentBatch> {
  const stream = createReadStream(path, { highWaterMark: 1 << 20 })
  let columns: number[] | null = null
  const row: Record<string, string | undefined> = {}
  for await (const { lines, numbers } of readLineBatches(stream)) {
    const batch: ConsentBatch = { consents: [], lines: [], rejects: [], transactionIds: [], creationDates: [], bytesRead: stream.bytesRead }
    for (let i = 0; i < lines.length; i++) {
      const fields = splitCsvLine(lines[i]!)
      const line = numbers[i]!
      if (columns === null) {
        columns = headerColumns(fields, line)
        continue
      }
      if (fields === null) {
        batch.rejects.push({ line, error: { code: 'INVALID_FIELD', message: 'malformed CSV line (unbalanced quotes)' } })
        continue
      }
      for (let c = 0; c < CONSENT_COLUMNS.length; c++) {
        const idx = columns[c]!
        row[CONSENT_COLUMNS[c]!] = idx === -1 ? undefined : fields[idx]
      }
      const v = validateConsent(row, nowSeconds)
      if (isValidConsent(v)) { batch.consents.push(v); batch.lines.push(line); batch.transactionIds.push(null); batch.creationDates.push(null) } else batch.rejects.push({ line, error: v })
    }
    yield batch
  }
  if (columns === null) throw new FileFormatError(`${path}: the file is empty; a header row is required`)
}

function headerColumns (fields: string[] | null, line: number): number[] {
  if (fields === null) throw new FileFormatError(`line ${line}: the header row is not valid CSV`)
  const names = fields.map(f => f.trim().replace(/^\uFEFF/, ''))
  const missing = REQUIRED.filter(c => !names.includes(c))
  if (missing.length > 0) {
    throw new FileFormatError(`line ${line}: the header row lacks ${missing.join(', ')} (expected ${CONSENT_COLUMNS.join(',')})`)
  }
  return CONSENT_COLUMNS.map(c => names.indexOf(c))
}
