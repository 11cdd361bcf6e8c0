// Reads a consent file into validated records, batch by batch. Three formats, chosen by the file's extension:
// - `.json`: İYS's JSON consent lists, a top-level array of consent objects or İYS's `{"list":[...]}` wrapper
//   (pull answers, push bodies; other top-level keys such as "after" are ignored), streamed (json-lines.ts);
// - `.ndjson` / `.jsonl`: one consent object per line;
// - anything else: CSV with a header row naming İYS fields, in any order, separated by commas, or by semicolons when
//   the header row is (what spreadsheet software writes in a Turkish locale); every row has as many fields as the header.
// Every item goes through the same validation as the API (domain/consent.ts). Invalid items come out beside the
// good ones with their line numbers (for JSON, the line the item starts on) and İYS error codes; they never stop
// the file. Only a file whose structure is broken (a bad CSV header, a JSON document that is not a list) throws
// FileFormatError.
//
// Items may carry İYS's `transactionId` and `creationDate` (İYS's lists do; so may CSV columns of those names):
// both are checked and handed on. Other fields (İYS lists carry e.g. citizenName, retailerAccess) are ignored: only
// the fields named here are ever read out of an item, so nothing else is stored or logged.

import { createReadStream } from 'node:fs'
import { extname } from 'node:path'
import { absent, BAD_TRANSACTION_ID, isTransactionId, isValidConsent, parseCreationDate, validateConsent, type ValidConsent } from '../domain/consent.js'
import { errorItem, type ErrorItem } from '../domain/errors.js'
import { canonicalCode } from '../domain/vocabulary.js'
import { readLineBatches, splitCsvLine } from './csv.js'
import { FileFormatError, readJsonListItems, readNdjsonItems, type JsonItemBatch } from './json-lines.js'

export { FileFormatError }

export const CONSENT_COLUMNS = ['iysCode', 'brandCode', 'recipient', 'recipientType', 'type', 'status', 'source', 'consentDate'] as const
/** Optional columns / fields beside the consent itself. */
export const EXTRA_COLUMNS = ['transactionId', 'creationDate'] as const
const FIELDS = [...CONSENT_COLUMNS, ...EXTRA_COLUMNS] as const

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
  /** ';' when the CSV file is semicolon-separated (detected from its header row); absent otherwise */
  separator?: ';'
}

/** Values for fields an item leaves out: İYS's lists carry neither iysCode nor brandCode (the request names them). */
export interface ConsentDefaults {
  iysCode?: string
  brandCode?: string
}

export type ConsentFileFormat = 'csv' | 'json' | 'ndjson'

export function consentFileFormat (path: string): ConsentFileFormat {
  const ext = extname(path).toLowerCase()
  if (ext === '.json') return 'json'
  if (ext === '.ndjson' || ext === '.jsonl') return 'ndjson'
  return 'csv'
}

const BAD_CREATION_DATE_SHAPE = 'Oluşturma tarihi (creationDate) yyyy-mm-dd hh:mm:ss formatında olmalıdır.'

/**
 * Longest CSV line read (bytes). An İYS row is a few hundred bytes; columns this reader ignores (an export's
 * retailerAccess list of thousands of codes, say) may make it longer, so the limit is far above the scrub's.
 */
export const MAX_CSV_LINE_BYTES = 64 * 1024

export async function * readConsentFile (path: string, nowSeconds: number, defaults?: ConsentDefaults): AsyncGenerator<ConsentBatch> {
  const fill = checkDefaults(defaults)
  const format = consentFileFormat(path)
  const stream = createReadStream(path, { highWaterMark: 1 << 20 })
  try {
    if (format === 'csv') yield * readCsv(path, stream, nowSeconds, fill)
    else yield * readJson(format === 'json' ? readJsonListItems(stream) : readNdjsonItems(stream), stream, nowSeconds, fill)
  } finally {
    stream.destroy()
  }
}

function checkDefaults (defaults: ConsentDefaults | undefined): ConsentDefaults {
  const out: ConsentDefaults = {}
  if (defaults?.iysCode !== undefined) {
    const c = canonicalCode(defaults.iysCode)
    if (c === null) throw new TypeError(`the default iysCode must be a positive integer (İYS code), not ${JSON.stringify(defaults.iysCode)}`)
    out.iysCode = c
  }
  if (defaults?.brandCode !== undefined) {
    const c = canonicalCode(defaults.brandCode)
    if (c === null) throw new TypeError(`the default brandCode must be a positive integer (İYS brand code), not ${JSON.stringify(defaults.brandCode)}`)
    out.brandCode = c
  }
  return out
}

/** Validates one item and files it in the batch as a consent or a reject. `row` may be modified. */
function addRow (batch: ConsentBatch, line: number, row: Record<string, unknown>, nowSeconds: number, defaults: ConsentDefaults): void {
  if (defaults.iysCode !== undefined && absent(row.iysCode)) row.iysCode = defaults.iysCode
  if (defaults.brandCode !== undefined && absent(row.brandCode)) row.brandCode = defaults.brandCode
  const v = validateConsent(row, nowSeconds)
  if (!isValidConsent(v)) { batch.rejects.push({ line, error: v }); return }

  let transactionId: string | null = null
  const tx = row.transactionId
  if (!absent(tx)) {
    // The value is not echoed: it is free text of unknown origin.
    if (!isTransactionId(tx)) {
      batch.rejects.push({ line, error: errorItem('INVALID_FIELD', 'transactionId', undefined, BAD_TRANSACTION_ID) })
      return
    }
    transactionId = tx
  }
  let creationDate: number | null = null
  const cd = row.creationDate
  if (!absent(cd)) {
    const d = typeof cd === 'string' ? parseCreationDate(cd) : { ok: false as const, code: 'H158' as const }
    if (!d.ok) {
      const message = d.code === 'H158' ? BAD_CREATION_DATE_SHAPE : undefined
      batch.rejects.push({ line, error: errorItem(d.code, 'creationDate', typeof cd === 'string' ? cd : undefined, message) })
      return
    }
    creationDate = d.seconds
  }
  batch.consents.push(v)
  batch.lines.push(line)
  batch.transactionIds.push(transactionId)
  batch.creationDates.push(creationDate)
}

const newBatch = (bytesRead: number): ConsentBatch =>
  ({ consents: [], lines: [], rejects: [], transactionIds: [], creationDates: [], bytesRead })

/**
 * The field separator of a CSV file, from its header row: ';' when the header has more semicolons than commas
 * (spreadsheet software writes ';' in locales whose decimal separator is a comma, Turkish among them), else ','.
 */
export function csvSeparator (header: string): ',' | ';' {
  const count = (c: string): number => header.split(c).length - 1
  return count(';') > count(',') ? ';' : ','
}

async function * readCsv (path: string, stream: ReturnType<typeof createReadStream>, nowSeconds: number, defaults: ConsentDefaults): AsyncGenerator<ConsentBatch> {
  let columns: number[] | null = null
  let width = 0 // fields in the header: every row must have as many (RFC 4180)
  let sep: ',' | ';' = ','
  const row: Record<string, string | undefined> = {}
  for await (const { lines, numbers, tooLong } of readLineBatches(stream, { maxLineBytes: MAX_CSV_LINE_BYTES })) {
    const batch = newBatch(stream.bytesRead)
    if (columns === null && lines.length > 0) sep = csvSeparator(lines[0]!)
    if (sep === ';') batch.separator = sep
    // A line over the limit was skipped unread: it is a reject of its own (or, before the header, a broken file).
    if (columns === null && tooLong.length > 0 && (lines.length === 0 || tooLong[0]! < numbers[0]!)) {
      throw new FileFormatError(`line ${tooLong[0]!}: the header row is longer than ${MAX_CSV_LINE_BYTES} bytes`)
    }
    for (const line of tooLong) batch.rejects.push({ line, error: { code: 'INVALID_FIELD', message: `the line is longer than ${MAX_CSV_LINE_BYTES} bytes` } })
    for (let i = 0; i < lines.length; i++) {
      const fields = splitCsvLine(lines[i]!, sep)
      const line = numbers[i]!
      if (columns === null) {
        columns = headerColumns(fields, line, defaults)
        width = fields!.length
        continue
      }
      if (fields === null) {
        batch.rejects.push({ line, error: { code: 'INVALID_FIELD', message: 'malformed CSV line (unbalanced quotes)' } })
        continue
      }
      // A row with fields missing or extra is shifted or cut somewhere: no field of it can be trusted.
      if (fields.length !== width) {
        batch.rejects.push({ line, error: { code: 'INVALID_FIELD', message: `the row has ${fields.length} fields, the header ${width} (field count)` } })
        continue
      }
      for (let c = 0; c < FIELDS.length; c++) {
        const idx = columns[c]!
        row[FIELDS[c]!] = idx === -1 ? undefined : fields[idx]
      }
      addRow(batch, line, row, nowSeconds, defaults)
    }
    yield batch
  }
  if (columns === null) throw new FileFormatError(`${path}: the file is empty; a header row is required`)
}

function headerColumns (fields: string[] | null, line: number, defaults: ConsentDefaults): number[] {
  if (fields === null) throw new FileFormatError(`line ${line}: the header row is not valid CSV`)
  const names = fields.map(f => f.trim().replace(/^\uFEFF/, ''))
  const required = CONSENT_COLUMNS.filter(c => c !== 'recipientType' && defaults[c as keyof ConsentDefaults] === undefined)
  const missing = required.filter(c => !names.includes(c))
  if (missing.length > 0) {
    throw new FileFormatError(`line ${line}: the header row lacks ${missing.join(', ')} (expected ${CONSENT_COLUMNS.join(',')}, optionally ${EXTRA_COLUMNS.join(',')})`)
  }
  return FIELDS.map(c => names.indexOf(c))
}

async function * readJson (items: AsyncIterable<JsonItemBatch>, stream: ReturnType<typeof createReadStream>, nowSeconds: number, defaults: ConsentDefaults): AsyncGenerator<ConsentBatch> {
  for await (const { lines, values, problems } of items) {
    const batch = newBatch(stream.bytesRead)
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!
      const problem = problems[i]
      if (problem !== null) {
        batch.rejects.push({ line, error: errorItem('H014', undefined, undefined, problem!) })
        continue
      }
      const o = values[i]
      if (typeof o !== 'object' || o === null || Array.isArray(o)) {
        batch.rejects.push({ line, error: errorItem('H014', undefined, undefined, 'the item is not a JSON object') })
        continue
      }
      // Only the known fields are copied out of the item.
      const item = o as Record<string, unknown>
      const row: Record<string, unknown> = {
        iysCode: item.iysCode,
        brandCode: item.brandCode,
        recipient: item.recipient,
        recipientType: item.recipientType,
        type: item.type,
        status: item.status,
        source: item.source,
        consentDate: item.consentDate,
        transactionId: item.transactionId,
        creationDate: item.creationDate
      }
      addRow(batch, line, row, nowSeconds, defaults)
    }
    yield batch
  }
}
