// The OpenAPI 3.1 document of the gateway's own HTTP API (/v1/*, the probes, /metrics and this document), served
// as GET /openapi.json so that users can generate clients. It is built from the code's own lists (error codes with
// their statuses and messages, reasons, scopes, channels, carrier outcomes), so a code cannot be misspelt here, and
// test/openapi.test.ts keeps it true: it drives real gateways through every operation and validates each answer's
// status and body against this document, and checks that every route the router registers is documented (and
// that each operation's scopes are the router's). The İYS-shaped routes are İYS's own API, documented by İYS's
// specification (reference/iys-openapi-3.2.0.json); they are named in the description, not repeated.

import { readFileSync } from 'node:fs'
import { SCOPES, type Scope } from '../auth/principal.js'
import { OUTCOME_STATUSES } from '../carriers/upstream.js'
import { ERRORS, type ErrorCode } from '../domain/errors.js'
import { CONSENT_TYPES, RECIPIENT_TYPES, STATUSES } from '../domain/vocabulary.js'
import { READY_REASONS } from '../metrics.js'
import { REASONS } from '../policy/decide.js'
import { projectUrl } from '../util/paths.js'
import { MAX_RECIPIENTS } from './check-request.js'
import { MAX_MESSAGES } from './messages-route.js'

type Json = null | boolean | number | string | readonly Json[] | { readonly [key: string]: Json }
type JsonObject = { [key: string]: Json }

const VERSION = (JSON.parse(readFileSync(projectUrl('package.json'), 'utf8')) as { version: string }).version

const ref = (name: string): JsonObject => ({ $ref: `#/components/schemas/${name}` })
const nullable = (schema: JsonObject): JsonObject => ({ oneOf: [schema, { type: 'null' }] })

// ---- errors ------------------------------------------------------------------------------------------------

/** Every route: ambiguous framing, an unexpected fault, and a gateway that is shutting down. */
const ALWAYS: readonly ErrorCode[] = ['BAD_CONTENT_LENGTH', 'H015', 'SERVICE_UNAVAILABLE']
/** Every route that needs a key (the router checks it before anything of the request is read). */
const AUTH: readonly ErrorCode[] = ['UNAUTHORIZED', 'FORBIDDEN', 'RATE_LIMITED']
/** Every POST route with a JSON body. */
const JSON_BODY: readonly ErrorCode[] = ['H014', 'H1042', 'JSON_TOO_DEEP', 'BODY_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE']
/** brandCode, type and recipientType in a query or a body. */
const KEY_FIELDS: readonly ErrorCode[] = ['INVALID_BRAND_CODE', 'H111', 'H117', 'H116']
/** A recipient in a query: missing, not an address, too long, or not of the channel's kind. */
const RECIPIENT: readonly ErrorCode[] = ['H114', 'H120', 'H121', 'H166', 'H464']
/** The routes that read Postgres: it does not answer (the checks go on without it). */
const DATABASE: readonly ErrorCode[] = ['NOT_CONFIGURED', 'DATABASE_UNAVAILABLE']
/** Codes answered with a Retry-After header. */
const RETRY_AFTER: readonly ErrorCode[] = ['RATE_LIMITED', 'DATABASE_UNAVAILABLE']

const STATUS_TITLE: Readonly<Record<number, string>> = {
  400: 'Bad request', 401: 'No valid API key', 403: 'Not allowed for this key', 404: 'Not found', 405: 'Method not allowed',
  409: 'Conflict', 413: 'Body too large', 415: 'Unsupported media type', 422: 'Invalid field', 429: 'Too many requests',
  500: 'Unexpected fault', 503: 'Unavailable', 507: 'Storage full'
}

/** What a code means on our routes, where ERRORS' message (İYS's Turkish one for İYS codes) is not enough. */
const MEANING: Partial<Record<ErrorCode, string>> = {
  H014: 'the body is not JSON',
  H1042: 'the body is empty',
  H015: 'an unexpected fault in the handler (logged); this request only',
  H111: 'type is missing',
  H117: 'type is not MESAJ, ARAMA or EPOSTA',
  H116: 'recipientType is not BIREYSEL or TACIR',
  H114: 'recipient is missing',
  H120: 'recipient is not a valid e-mail address',
  H121: 'recipient is not a valid phone number',
  H166: 'recipient (a phone number) is longer than 15 characters',
  H464: 'recipient is not of the channel\'s kind (MESAJ and ARAMA need a phone number, EPOSTA an e-mail address)',
  SERVICE_UNAVAILABLE: 'the gateway is shutting down (retry on another instance), or it cannot record the decisions of this request (decision journal unwritable; nothing was forwarded)',
  NOT_CONFIGURED: 'the gateway runs without DATABASE_URL: the ledger needs Postgres',
  DATABASE_UNAVAILABLE: 'Postgres is not answering (checks and sends go on without it): retry after Retry-After seconds',
  UNAUTHORIZED: 'no API key, or one that is unknown, revoked or expired',
  FORBIDDEN: 'the key lacks the route\'s scope, or may not act for the brand (or iysCode, scrub job) the request names',
  RATE_LIMITED: 'the key\'s rate is spent: retry after Retry-After seconds'
}

const describeCode = (code: ErrorCode): string => `\`${code}\`: ${MEANING[code] ?? ERRORS[code].message}`

/** The error answers of an operation, one per status, each with the codes it can carry (schema, list and examples). */
function errorResponses (codes: readonly ErrorCode[], extra: Readonly<Record<number, string>> = {}): Record<string, JsonObject> {
  const byStatus = new Map<number, ErrorCode[]>()
  for (const code of new Set(codes)) {
    const status = ERRORS[code].status
    byStatus.set(status, [...(byStatus.get(status) ?? []), code])
  }
  const out: Record<string, JsonObject> = {}
  for (const [status, list] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const headers: JsonObject = list.some(c => RETRY_AFTER.includes(c)) ? { 'Retry-After': { $ref: '#/components/headers/RetryAfter' } } : {}
    out[String(status)] = {
      description: `${STATUS_TITLE[status] ?? 'Error'}${extra[status] !== undefined ? ' — ' + extra[status] : ''}. Codes: ${list.map(describeCode).join('; ')}.`,
      ...(Object.keys(headers).length > 0 ? { headers } : {}),
      content: {
        'application/json': {
          schema: errorBody(list),
          examples: Object.fromEntries(list.map(code => [code, { summary: MEANING[code] ?? ERRORS[code].message, value: { errors: [{ code, message: ERRORS[code].message }] } }]))
        }
      }
    }
  }
  return out
}

/** İYS's error body with `code` limited to `codes`. */
const errorBody = (codes: readonly ErrorCode[]): JsonObject => ({
  type: 'object',
  required: ['errors'],
  additionalProperties: false,
  properties: { errors: { type: 'array', minItems: 1, items: { $ref: '#/components/schemas/ErrorItem', type: 'object', properties: { code: { enum: [...codes] } } } } }
})

// ---- parameters and schemas ----------------------------------------------------------------------------------

/** İYS's integer codes (iysCode, brandCode): a positive integer, or its decimal digits (leading zeros allowed). */
const CODE: JsonObject = {
  oneOf: [
    { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
    { type: 'string', pattern: '^(?=[0-9]{1,15}$)0*[1-9][0-9]*$' }
  ]
}

const queryParam = (name: string, schema: JsonObject, description: string, required = false, example?: string): JsonObject => ({
  name, in: 'query', required, description, schema, ...(example !== undefined ? { example } : {})
})

const KEY_PARAMS: Json[] = [
  queryParam('brandCode', { type: 'string', pattern: '^(?=[0-9]{1,15}$)0*[1-9][0-9]*$' }, 'İYS brand code (decimal digits).', true, '600001'),
  queryParam('type', { type: 'string', enum: [...CONSENT_TYPES] }, 'Channel.', true, 'MESAJ'),
  queryParam('recipientType', { type: 'string', enum: [...RECIPIENT_TYPES], default: 'BIREYSEL' }, 'Recipient type.')
]
const RECIPIENT_PARAM = queryParam('recipient', { type: 'string', minLength: 1 }, 'Phone number (any common Turkish shape; stored as E.164) or e-mail address. In a query string `+` must be sent as `%2B` (a bare `+` is a space).', true, '+905321234567')
const JOB_ID_PARAM: JsonObject = { name: 'jobId', in: 'path', required: true, description: 'The scrub job.', schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' }, example: 'march-list' }
const isoParam = (name: string, description: string): JsonObject =>
  queryParam(name, { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}' }, `${description} ISO 8601 date or date-time (\`2026-03-01\`, \`2026-03-01T10:00:00%2B03:00\`; send \`+\` as \`%2B\`).`, false, '2026-03-01T10:00:00Z')

const IYS_DATE: JsonObject = { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2}$', description: 'İYS\'s date format, Turkey time (UTC+3): YYYY-MM-DD HH:mm:ss', examples: ['2024-01-15 10:00:00'] }
const INSTANT: JsonObject = { type: 'string', format: 'date-time' }
const KEY_ECHO: JsonObject = {
  brandCode: { type: 'string', description: 'canonical (no leading zeros)' },
  type: { type: 'string', enum: [...CONSENT_TYPES] },
  recipientType: { type: 'string', enum: [...RECIPIENT_TYPES] },
  recipient: { type: 'string', description: 'normalised: E.164 phone or lower-case e-mail' }
}
const KEY_ECHO_REQUIRED = ['brandCode', 'type', 'recipientType', 'recipient']

const schemas: Record<string, JsonObject> = {
  ErrorItem: {
    type: 'object',
    required: ['code', 'message'],
    additionalProperties: false,
    properties: {
      code: { type: 'string', enum: Object.keys(ERRORS) as string[], description: 'Stable code: İYS\'s (Hxxx) or the gateway\'s (a word). Match on it, never on the message.' },
      message: { type: 'string' },
      location: { type: 'array', items: { type: ['string', 'integer'] }, description: 'İYS\'s path to the field: names, and list positions as numbers.' },
      value: { description: 'The value that was refused, as sent.' }
    }
  },
  ErrorBody: errorBody(Object.keys(ERRORS) as ErrorCode[]),
  Code: { ...CODE, description: 'İYS integer code: a positive integer, or its decimal digits (leading zeros allowed).' },
  ConsentType: { type: 'string', enum: [...CONSENT_TYPES], description: 'Channel: MESAJ (SMS), ARAMA (voice call), EPOSTA (e-mail).' },
  RecipientType: { type: 'string', enum: [...RECIPIENT_TYPES], default: 'BIREYSEL', description: 'BIREYSEL (individual: opt-in) or TACIR (merchant: opt-out).' },
  Reason: {
    type: 'string',
    enum: [...REASONS],
    description: 'Why a recipient is allowed or not. CONSENT (allowed): the latest record is ONAY. REJECTED: the latest record is RET. ' +
      'NO_CONSENT: no record and BIREYSEL (or TACIR with TACIR_ALLOW_WITHOUT_RECORD=false). TACIR_NO_RECORD (allowed): no record and TACIR. ' +
      'INFORMATIONAL (allowed): commercial:false, no consent needed. INVALID_RECIPIENT: cannot be normalised or does not fit the channel (see error); never sent to. ' +
      'STORE_UNAVAILABLE: the filter could not answer; blocked unless STORE_FAILURE_MODE=open.'
  },
  RecipientError: {
    type: 'object',
    required: ['code', 'message'],
    additionalProperties: false,
    description: 'Why a recipient is INVALID_RECIPIENT.',
    properties: { code: { type: 'string', enum: ['H114', 'H120', 'H121', 'H160', 'H464'] }, message: { type: 'string' } }
  },
  Consent: {
    type: 'object',
    required: ['status', 'source', 'consentDate'],
    additionalProperties: false,
    description: 'The consent record the decision relied on.',
    properties: {
      status: { type: 'string', enum: [...STATUSES] },
      source: { type: 'string', description: 'İYS source (HS_* from the provider, IYS_* from İYS), or NO_SOURCE for a TACIR record stored without one.', examples: ['HS_WEB', 'IYS_KISAMESAJ'] },
      consentDate: IYS_DATE
    }
  },
  CheckRequest: {
    type: 'object',
    required: ['brandCode', 'type'],
    additionalProperties: false,
    oneOf: [{ required: ['recipient'] }, { required: ['recipients'] }],
    description: `One recipient (recipient) or a batch (recipients, 1 to ${MAX_RECIPIENTS}), never both.`,
    properties: {
      brandCode: ref('Code'),
      type: ref('ConsentType'),
      recipientType: ref('RecipientType'),
      commercial: { type: 'boolean', default: true, description: 'false: an informational message (order, delivery, debt, legal notice): allowed without consent, and logged as such.' },
      recipient: { description: 'Phone number (any common Turkish shape) or e-mail address. Anything else, a non-string included, is an INVALID_RECIPIENT result, not a request error.' },
      recipients: { type: 'array', minItems: 1, maxItems: MAX_RECIPIENTS, items: { description: 'as recipient' } }
    }
  },
  CheckResult: {
    type: 'object',
    required: ['recipient', 'normalized', 'allowed', 'reason'],
    additionalProperties: false,
    properties: {
      recipient: { description: 'As sent.' },
      normalized: nullable({ type: 'string', description: 'E.164 phone or lower-case e-mail' }),
      allowed: { type: 'boolean' },
      reason: ref('Reason'),
      consent: ref('Consent'),
      error: ref('RecipientError')
    }
  },
  CheckResponse: {
    type: 'object',
    required: ['results'],
    additionalProperties: false,
    properties: { results: { type: 'array', items: ref('CheckResult'), description: 'One per recipient, in request order.' } }
  },
  Message: {
    type: 'object',
    required: ['recipient'],
    description: 'One message. Payload fields per channel (non-empty strings): MESAJ sender, text; EPOSTA from, subject, body; ARAMA callerId.',
    properties: {
      messageId: { type: 'string', pattern: '^[\\x21-\\x7e]{1,128}$', description: 'Idempotency key towards the carrier (unique in the request); generated when absent. Re-send a message whose fate was unknown with the same messageId.' },
      recipient: { description: 'Phone number or e-mail address, as for /v1/check.' },
      sender: { type: 'string', minLength: 1 },
      text: { type: 'string', minLength: 1 },
      from: { type: 'string', minLength: 1 },
      subject: { type: 'string', minLength: 1 },
      body: { type: 'string', minLength: 1 },
      callerId: { type: 'string', minLength: 1 }
    }
  },
  MessagesRequest: {
    type: 'object',
    required: ['iysCode', 'brandCode', 'type', 'commercial', 'messages'],
    properties: {
      iysCode: ref('Code'),
      brandCode: ref('Code'),
      type: ref('ConsentType'),
      recipientType: ref('RecipientType'),
      commercial: { type: 'boolean', description: 'Required: whether consent is needed is never assumed when sending.' },
      messages: { type: 'array', minItems: 1, maxItems: MAX_MESSAGES, items: ref('Message') }
    }
  },
  CarrierOutcome: {
    oneOf: [
      {
        type: 'object',
        required: ['status', 'id', 'attempts'],
        additionalProperties: false,
        properties: { status: { const: 'accepted' }, id: { type: 'string', description: 'the carrier\'s reference' }, attempts: { type: 'integer', minimum: 1 } }
      },
      {
        type: 'object',
        required: ['status', 'error', 'attempts', 'maybeDelivered'],
        additionalProperties: false,
        properties: {
          status: { type: 'string', enum: OUTCOME_STATUSES.filter(s => s !== 'accepted') },
          error: { type: 'string' },
          attempts: { type: 'integer', minimum: 0 },
          maybeDelivered: { type: 'boolean', description: 'true: the carrier may have it; re-send with the same messageId.' }
        }
      }
    ],
    description: 'What the carrier did with an allowed message. rejected: refused (4xx); failed: every attempt failed; timeout; unknown: an answer that does not say; circuit_open: the carrier is failing, not called; no_upstream: no carrier configured for the channel.'
  },
  MessageResult: {
    type: 'object',
    required: ['messageId', 'recipient', 'normalized', 'allowed', 'reason', 'forwarded'],
    additionalProperties: false,
    properties: {
      messageId: { type: 'string' },
      recipient: { description: 'As sent.' },
      normalized: nullable({ type: 'string' }),
      allowed: { type: 'boolean' },
      reason: ref('Reason'),
      error: ref('RecipientError'),
      forwarded: { type: 'boolean', description: 'true only when the carrier accepted the message.' },
      carrier: ref('CarrierOutcome')
    }
  },
  MessagesResponse: {
    type: 'object',
    required: ['results'],
    additionalProperties: false,
    properties: { results: { type: 'array', items: ref('MessageResult'), description: 'One per message, in request order. Blocked messages are never forwarded and have no carrier.' } }
  },
  ScrubAccepted: { type: 'object', required: ['jobId'], additionalProperties: false, properties: { jobId: { type: 'string' } } },
  ScrubTotals: {
    type: 'object',
    required: ['read', 'checked', 'allowed', 'blocked', 'invalid', 'duplicates', 'tooLong', 'blockedByReason'],
    properties: {
      read: { type: 'integer', minimum: 0, description: 'lines read (blank lines and a header excluded)' },
      checked: { type: 'integer', minimum: 0 },
      allowed: { type: 'integer', minimum: 0 },
      blocked: { type: 'integer', minimum: 0 },
      invalid: { type: 'integer', minimum: 0 },
      duplicates: { type: 'integer', minimum: 0 },
      tooLong: { type: 'integer', minimum: 0, description: 'lines longer than SCRUB_MAX_LINE_BYTES (also counted in invalid)' },
      blockedByReason: { type: 'object', additionalProperties: { type: 'integer', minimum: 0 } }
    }
  },
  ScrubJob: {
    type: 'object',
    required: ['jobId', 'state', 'params', 'format', 'createdAt', 'bytes', 'totals'],
    properties: {
      jobId: { type: 'string' },
      owner: { type: 'object', required: ['iysCode', 'keyId'], properties: { iysCode: { type: 'string' }, keyId: { type: 'string' } } },
      state: { type: 'string', enum: ['uploading', 'queued', 'running', 'done', 'failed'] },
      reason: { type: 'string', description: 'why the job failed' },
      params: {
        type: 'object',
        required: ['brandCode', 'type', 'recipientType', 'commercial'],
        properties: { brandCode: { type: 'string' }, type: ref('ConsentType'), recipientType: ref('RecipientType'), commercial: { type: 'boolean' } }
      },
      format: { type: 'string', enum: ['csv', 'ndjson'] },
      createdAt: INSTANT,
      uploadedAt: INSTANT,
      startedAt: INSTANT,
      finishedAt: INSTANT,
      expiresAt: { ...INSTANT, description: 'when the job and its result are deleted (SCRUB_RETENTION_HOURS)' },
      bytes: { type: 'integer', minimum: 0, description: 'size of the upload' },
      totals: ref('ScrubTotals'),
      rate: { type: 'number', minimum: 0, description: 'lines per second so far' },
      etaSeconds: { type: 'number', minimum: 0 },
      resultBytes: { type: 'integer', minimum: 0 },
      decisionLog: {
        type: 'object',
        required: ['state'],
        description: 'with DATABASE_URL, a done job\'s decisions in the decision log: pending until they are in Postgres (written from the result file after the job; the job is kept past its retention until then), then written with the rows (DUPLICATE lines have none)',
        properties: { state: { type: 'string', enum: ['pending', 'written'] }, rows: { type: 'integer', minimum: 0 } }
      }
    }
  },
  ScrubList: { type: 'object', required: ['jobs'], additionalProperties: false, properties: { jobs: { type: 'array', items: ref('ScrubJob'), description: 'the caller\'s tenant\'s jobs for brands the key may act for, newest first' } } },
  LedgerEntry: {
    type: 'object',
    required: ['seq', 'status', 'source', 'consentDate', 'creationDate', 'transactionId', 'iysCode', 'via', 'actor', 'receivedAt'],
    additionalProperties: false,
    properties: {
      seq: { type: 'integer', minimum: 1, description: 'the change\'s sequence number (commit order)' },
      status: { type: 'string', enum: [...STATUSES] },
      source: { type: 'string', examples: ['HS_WEB'] },
      consentDate: IYS_DATE,
      creationDate: nullable(IYS_DATE),
      transactionId: nullable({ type: 'string' }),
      iysCode: { type: 'string' },
      via: { type: 'string', description: 'how the change arrived: import, api, push, pull, or correction (İYS refused a write we had accepted)', examples: ['api'] },
      actor: nullable({ type: 'string' }),
      receivedAt: INSTANT
    }
  },
  History: {
    type: 'object',
    required: [...KEY_ECHO_REQUIRED, 'history'],
    additionalProperties: false,
    properties: { ...KEY_ECHO, history: { type: 'array', items: ref('LedgerEntry'), description: 'every change of the key, oldest first' } }
  },
  StateAt: {
    type: 'object',
    required: [...KEY_ECHO_REQUIRED, 'at', 'state'],
    additionalProperties: false,
    properties: { ...KEY_ECHO, at: INSTANT, state: nullable(ref('LedgerEntry')) }
  },
  EvidenceDecision: {
    type: 'object',
    required: ['decidedAt', 'source', 'recipientType', 'commercial', 'allowed', 'reason', 'consent'],
    properties: {
      decidedAt: INSTANT,
      source: { type: 'string', description: 'what decided: check, messages, smpp (a submit_sm from an SMPP bind), smtp (an RCPT TO of the SMTP relay), or scrub (a bulk scrub job: jobId)', examples: ['check', 'messages', 'smpp', 'smtp', 'scrub'] },
      recipientType: ref('RecipientType'),
      commercial: { type: 'boolean' },
      allowed: { type: 'boolean' },
      reason: { type: 'string', examples: ['CONSENT', 'REJECTED'] },
      messageId: nullable({ type: 'string' }),
      upstreamStatus: nullable({ type: 'string', description: 'the carrier outcome of a message' }),
      carrierId: nullable({ type: 'string' }),
      jobId: nullable({ type: 'string', description: 'the scrub job that took the decision (source scrub)' }),
      consent: nullable({
        type: 'object',
        required: ['seq', 'status', 'source', 'consentDate'],
        description: 'the ledger entry the decision relied on',
        properties: {
          seq: { type: 'integer' }, status: { type: 'string', enum: [...STATUSES] }, source: { type: 'string' }, consentDate: IYS_DATE,
          transactionId: nullable({ type: 'string' }), via: { type: 'string' }, receivedAt: INSTANT
        }
      })
    }
  },
  Evidence: {
    type: 'object',
    required: [...KEY_ECHO_REQUIRED, 'from', 'to', 'decisions'],
    additionalProperties: false,
    properties: { ...KEY_ECHO, from: INSTANT, to: INSTANT, decisions: { type: 'array', items: ref('EvidenceDecision') } }
  },
  Health: { type: 'object', required: ['status'], additionalProperties: false, properties: { status: { const: 'ok' } } },
  Readiness: {
    type: 'object',
    required: ['ready', 'reason'],
    description: 'ready, the one reason it is not (reason, as in the iys_ready metric) and in words (problem); the other fields report the parts (they may grow).',
    properties: {
      ready: { type: 'boolean' },
      reason: { type: 'string', enum: [...READY_REASONS] },
      mode: { type: 'string', enum: ['redis', 'embedded'] },
      filterVersion: { type: 'integer', minimum: 0 },
      problem: { type: 'string' },
      uws: { type: 'string', enum: ['native', 'fallback'] },
      warnings: { type: 'array', items: { type: 'string' } }
    }
  }
}

// ---- operations ----------------------------------------------------------------------------------------------

/** Who may call: any one of `scopes` (a key with admin may do everything its tenant may). */
const security = (scopes: readonly Scope[]): Json[] => [...scopes, 'admin' as const].map(s => ({ apiKey: [s] }))
const PUBLIC: Json[] = []

const json = (schema: JsonObject, examples?: Record<string, Json>): JsonObject => ({
  'application/json': { schema, ...(examples !== undefined ? { examples: Object.fromEntries(Object.entries(examples).map(([k, v]) => [k, { value: v }])) } : {}) }
})

const EXAMPLE_RESULTS: Json = {
  results: [
    { recipient: '0532 123 45 67', normalized: '+905321234567', allowed: true, reason: 'CONSENT', consent: { status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-15 10:00:00' } },
    { recipient: '+905327654321', normalized: '+905327654321', allowed: false, reason: 'REJECTED', consent: { status: 'RET', source: 'IYS_KISAMESAJ', consentDate: '2024-02-01 10:00:00' } },
    { recipient: '+905320000000', normalized: '+905320000000', allowed: false, reason: 'NO_CONSENT' },
    { recipient: '12', normalized: null, allowed: false, reason: 'INVALID_RECIPIENT', error: { code: 'H121', message: ERRORS.H121.message } }
  ]
}
const LEDGER_ENTRY = { seq: 42, status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-15 10:00:00', creationDate: '2024-01-15 10:00:03', transactionId: 'f3b3c0de-0000-4000-8000-000000000042', iysCode: '700001', via: 'api', actor: 'ik_3f9c2a1b7d0e4c55', receivedAt: '2024-01-15T07:00:03.120Z' }
const ECHO = { brandCode: '600001', type: 'MESAJ', recipientType: 'BIREYSEL', recipient: '+905321234567' }

/** The token of a one-click unsubscribe link (auth/unsubscribe-tokens.ts): base64url, opaque. */
const UNSUBSCRIBE_TOKEN: JsonObject = {
  name: 'token', in: 'path', required: true,
  description: 'The signed token of the link (the recipient\'s address in it is encrypted).',
  schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,512}$' },
  example: 'AVeif8Jgjae6TGXqIyl95PlYGD9diP8XoUSxFo2QMBldso6fao7ZDd9xtDxS4k1XFD1C'
}
const UNSUBSCRIBE_ERRORS: Readonly<Record<number, string>> = {
  404: 'the token is unknown, altered, or signed with a secret no longer in SMTP_UNSUBSCRIBE_SECRETS',
  503: 'NOT_CONFIGURED here: the gateway has no SMTP_UNSUBSCRIBE_SECRETS'
}
const ONE_CLICK_FORM: JsonObject = {
  type: 'object',
  required: ['List-Unsubscribe'],
  properties: { 'List-Unsubscribe': { type: 'string', const: 'One-Click' } }
}

const paths: Record<string, JsonObject> = {
  '/v1/check': {
    post: {
      operationId: 'check',
      tags: ['check'],
      summary: 'Decide whether recipients may be sent a message',
      description: 'Answers from the gateway\'s filter (no Postgres on this path). Per-recipient problems are INVALID_RECIPIENT results, not request errors. Every decision is journalled before the answer is sent.',
      security: security(['check']),
      requestBody: {
        required: true,
        content: json(ref('CheckRequest'), {
          single: { brandCode: 600001, type: 'MESAJ', recipient: '+905321234567' },
          batch: { brandCode: '600001', type: 'EPOSTA', recipientType: 'TACIR', commercial: true, recipients: ['info@example.com', 'sales@example.com'] }
        })
      },
      responses: {
        200: { description: 'One result per recipient, in request order.', content: json(ref('CheckResponse'), { results: EXAMPLE_RESULTS }) },
        ...errorResponses([...ALWAYS, ...AUTH, ...JSON_BODY, ...KEY_FIELDS, 'MISSING_FIELD', 'INVALID_FIELD', 'H114', 'TOO_MANY_RECIPIENTS'])
      }
    }
  },
  '/v1/messages': {
    post: {
      operationId: 'sendMessages',
      tags: ['messages'],
      summary: 'Check each message\'s recipient and forward the allowed ones to the channel\'s carrier',
      description: 'Blocked messages are never forwarded. Each decision is journalled before anything is forwarded, and its carrier outcome after.',
      security: security(['send']),
      requestBody: {
        required: true,
        content: json(ref('MessagesRequest'), {
          sms: { iysCode: 700001, brandCode: 600001, type: 'MESAJ', commercial: true, messages: [{ messageId: 'campaign-7-0001', recipient: '+905321234567', sender: 'ACME', text: 'Spring sale' }] }
        })
      },
      responses: {
        200: {
          description: 'One result per message, in request order.',
          content: json(ref('MessagesResponse'), {
            sent: {
              results: [
                { messageId: 'campaign-7-0001', recipient: '+905321234567', normalized: '+905321234567', allowed: true, reason: 'CONSENT', forwarded: true, carrier: { status: 'accepted', id: 'c-81723', attempts: 1 } },
                { messageId: 'campaign-7-0002', recipient: '+905327654321', normalized: '+905327654321', allowed: false, reason: 'REJECTED', forwarded: false }
              ]
            }
          })
        },
        ...errorResponses([...ALWAYS, ...AUTH, ...JSON_BODY, ...KEY_FIELDS, 'MISSING_FIELD', 'INVALID_FIELD', 'TOO_MANY_MESSAGES'])
      }
    }
  },
  '/v1/scrub': {
    post: {
      operationId: 'createScrubJob',
      tags: ['scrub'],
      summary: 'Upload a list to scrub',
      description: 'The body is streamed to disk as it arrives (up to SCRUB_MAX_BYTES); the answer comes when the upload is complete. A refusal closes the connection; one that comes midway leaves a failed job saying why.',
      security: security(['scrub']),
      parameters: [
        ...KEY_PARAMS,
        queryParam('commercial', { type: 'string', enum: ['true', 'false'], default: 'true' }, 'false: informational (no consent needed).'),
        queryParam('jobId', { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' }, 'Name the job (to find it again if the upload breaks off); a name taken by any job is 409 JOB_EXISTS. Default: a UUID.')
      ],
      requestBody: {
        required: true,
        description: 'One recipient per line (or a header row with a recipient column; other columns are ignored), or NDJSON: each line a JSON string or an object with recipient.',
        content: {
          'text/csv': { schema: { type: 'string' }, example: 'recipient\n+905321234567\n05327654321\n' },
          'application/x-ndjson': { schema: { type: 'string' }, example: '"+905321234567"\n{"recipient":"info@example.com"}\n' }
        }
      },
      responses: {
        202: { description: 'The upload is complete and the job queued.', content: json(ref('ScrubAccepted'), { accepted: { jobId: 'march-list' } }) },
        ...errorResponses([...ALWAYS, ...AUTH, ...KEY_FIELDS, 'INVALID_FIELD', 'UNSUPPORTED_MEDIA_TYPE', 'BODY_TOO_LARGE', 'JOB_EXISTS', 'TOO_MANY_UPLOADS', 'STORAGE_FULL'],
          { 413: 'over SCRUB_MAX_BYTES', 429: 'RATE_LIMITED, or TOO_MANY_UPLOADS (SCRUB_MAX_UPLOADS_PER_CLIENT)' })
      }
    },
    get: {
      operationId: 'listScrubJobs',
      tags: ['scrub'],
      summary: 'List the scrub jobs the key may see',
      security: security(['scrub']),
      responses: {
        200: { description: 'The jobs.', content: json(ref('ScrubList')) },
        ...errorResponses([...ALWAYS, ...AUTH])
      }
    }
  },
  '/v1/scrub/{jobId}': {
    get: {
      operationId: 'getScrubJob',
      tags: ['scrub'],
      summary: 'A scrub job\'s state and progress',
      security: security(['scrub']),
      parameters: [JOB_ID_PARAM],
      responses: {
        200: {
          description: 'The job.',
          content: json(ref('ScrubJob'), {
            done: {
              jobId: 'march-list', owner: { iysCode: '700001', keyId: 'ik_3f9c2a1b7d0e4c55' }, state: 'done', params: { brandCode: '600001', type: 'MESAJ', recipientType: 'BIREYSEL', commercial: true },
              format: 'csv', createdAt: '2026-03-01T07:00:00.000Z', uploadedAt: '2026-03-01T07:00:02.000Z', startedAt: '2026-03-01T07:00:02.010Z', finishedAt: '2026-03-01T07:00:04.500Z', expiresAt: '2026-03-02T07:00:04.500Z',
              bytes: 15000000, totals: { read: 1000000, checked: 1000000, allowed: 612000, blocked: 386000, invalid: 2000, duplicates: 0, tooLong: 0, blockedByReason: { REJECTED: 12000, NO_CONSENT: 374000 } }, rate: 400000, resultBytes: 52000000
            }
          })
        },
        ...errorResponses([...ALWAYS, ...AUTH, 'MALFORMED_PATH', 'NOT_FOUND'], { 403: 'also: the job is another tenant\'s or a brand\'s the key may not act for', 404: 'no such job (it may have passed its retention)' })
      }
    }
  },
  '/v1/scrub/{jobId}/result': {
    get: {
      operationId: 'getScrubResult',
      tags: ['scrub'],
      summary: 'A finished job\'s result, streamed as CSV in input order',
      description: 'Columns recipient,normalized,allowed,reason,line,duplicateOf; the first four are the contract. A recipient seen before is reported once more as DUPLICATE with duplicateOf = the line of its first occurrence.',
      security: security(['scrub']),
      parameters: [JOB_ID_PARAM, queryParam('only', { type: 'string', enum: ['allowed', 'blocked'] }, 'Keep only the allowed or the blocked lines.')],
      responses: {
        200: {
          description: 'The result.',
          content: { 'text/csv': { schema: { type: 'string' }, example: 'recipient,normalized,allowed,reason,line,duplicateOf\n+905321234567,+905321234567,true,CONSENT,2,\n05327654321,+905327654321,false,REJECTED,3,\n' } }
        },
        ...errorResponses([...ALWAYS, ...AUTH, 'NOT_FOUND', 'INVALID_FIELD', 'RESULT_NOT_READY'], { 409: 'the job is not done (a half-written result is never served)' })
      }
    }
  },
  '/v1/consents/history': {
    get: {
      operationId: 'consentHistory',
      tags: ['ledger'],
      summary: 'Every recorded change of one consent key, oldest first (needs DATABASE_URL)',
      security: security(['consents:read']),
      parameters: [...KEY_PARAMS, RECIPIENT_PARAM],
      responses: {
        200: { description: 'The history.', content: json(ref('History'), { history: { ...ECHO, history: [LEDGER_ENTRY] } }) },
        ...errorResponses([...ALWAYS, ...AUTH, ...KEY_FIELDS, ...RECIPIENT, ...DATABASE])
      }
    }
  },
  '/v1/consents/state': {
    get: {
      operationId: 'consentStateAt',
      tags: ['ledger'],
      summary: 'The state the gateway held for a key at a moment (needs DATABASE_URL)',
      description: 'The last change received by then; state is null when there was none.',
      security: security(['consents:read']),
      parameters: [...KEY_PARAMS, RECIPIENT_PARAM, isoParam('at', 'The moment (default: now).')],
      responses: {
        200: { description: 'The state.', content: json(ref('StateAt'), { state: { ...ECHO, at: '2026-03-01T07:00:00.000Z', state: LEDGER_ENTRY }, none: { ...ECHO, at: '2026-03-01T07:00:00.000Z', state: null } }) },
        ...errorResponses([...ALWAYS, ...AUTH, ...KEY_FIELDS, ...RECIPIENT, 'INVALID_FIELD', ...DATABASE])
      }
    }
  },
  '/v1/evidence': {
    get: {
      operationId: 'evidence',
      tags: ['ledger'],
      summary: 'Every decision for a recipient in a window, with the consent each relied on (needs DATABASE_URL)',
      description: 'With Accept: text/html, a printable one-page report (A4) to attach to an answer to a complaint.',
      security: security(['evidence']),
      parameters: [
        ...KEY_PARAMS.slice(0, 2),
        queryParam('recipientType', { type: 'string', enum: [...RECIPIENT_TYPES] }, 'Only decisions for this recipient type (default: both).'),
        RECIPIENT_PARAM,
        isoParam('from', 'Start of the window (default: the beginning).'),
        isoParam('to', 'End of the window, exclusive (default: now).')
      ],
      responses: {
        200: {
          description: 'The decisions, oldest first.',
          content: {
            ...json(ref('Evidence'), {
              evidence: {
                ...ECHO, from: '2026-03-01T00:00:00.000Z', to: '2026-03-02T00:00:00.000Z',
                decisions: [{ decidedAt: '2026-03-01T07:00:01.002Z', source: 'messages', recipientType: 'BIREYSEL', commercial: true, allowed: true, reason: 'CONSENT', messageId: 'campaign-7-0001', upstreamStatus: 'accepted', carrierId: 'c-81723', consent: { seq: 42, status: 'ONAY', source: 'HS_WEB', consentDate: '2024-01-15 10:00:00', transactionId: 'f3b3c0de-0000-4000-8000-000000000042', via: 'api', receivedAt: '2024-01-15T07:00:03.120Z' } }]
              }
            }),
            'text/html': { schema: { type: 'string' } }
          }
        },
        ...errorResponses([...ALWAYS, ...AUTH, ...KEY_FIELDS, ...RECIPIENT, 'INVALID_FIELD', ...DATABASE])
      }
    }
  },
  '/v1/unsubscribe/{token}': {
    get: {
      operationId: 'unsubscribePage',
      tags: ['unsubscribe'],
      summary: 'The page behind a one-click unsubscribe link: a button that POSTs the unsubscribe (changes nothing itself)',
      description: 'The target of the `List-Unsubscribe` header the SMTP relay adds to commercial mail (RFC 8058). A GET never unsubscribes (link scanners follow links): it answers a small page, in Turkish and English, whose form POSTs `List-Unsubscribe=One-Click` to the same URL.',
      security: PUBLIC,
      parameters: [UNSUBSCRIBE_TOKEN],
      responses: {
        200: { description: 'The page.', content: { 'text/html': { schema: { type: 'string' } } } },
        ...errorResponses([...ALWAYS, 'MALFORMED_PATH', 'NOT_FOUND', 'NOT_CONFIGURED'], UNSUBSCRIBE_ERRORS)
      }
    },
    post: {
      operationId: 'unsubscribe',
      tags: ['unsubscribe'],
      summary: 'One-click unsubscribe (RFC 8058): record a RET for the token\'s recipient and brand on EPOSTA',
      description: 'No key, no cookies: the signed token names the recipient, the brand and the tenant. Records a `RET` (source `HS_EPOSTA`, now) for BIREYSEL and TACIR through the consent API\'s write path, so every gateway refuses the address within a second, and İYS write-through registers it. A write İYS\'s rules refuse (no record, or RET already) changes nothing and is answered 200 all the same: a repeat is 200.',
      security: PUBLIC,
      parameters: [UNSUBSCRIBE_TOKEN],
      requestBody: {
        required: true,
        description: '`List-Unsubscribe=One-Click`: as a form (urlencoded or multipart), or that text alone with any Content-Type.',
        content: {
          'application/x-www-form-urlencoded': { schema: ONE_CLICK_FORM, example: { 'List-Unsubscribe': 'One-Click' } },
          'multipart/form-data': { schema: ONE_CLICK_FORM },
          'text/plain': { schema: { type: 'string', const: 'List-Unsubscribe=One-Click' } }
        }
      },
      responses: {
        200: { description: 'Unsubscribed (or it was already): a short page saying so.', content: { 'text/html': { schema: { type: 'string' } } } },
        ...errorResponses([...ALWAYS, 'BODY_TOO_LARGE', 'NOT_FOUND', 'INVALID_FIELD', ...DATABASE], { ...UNSUBSCRIBE_ERRORS, 422: 'the body is not List-Unsubscribe=One-Click', 503: 'NOT_CONFIGURED here: the gateway has no SMTP_UNSUBSCRIBE_SECRETS, or no DATABASE_URL to record the RET in; DATABASE_UNAVAILABLE: mail providers retry after Retry-After seconds' })
      }
    }
  },
  '/healthz': {
    get: {
      operationId: 'health',
      tags: ['operations'],
      summary: 'Alive',
      security: PUBLIC,
      responses: { 200: { description: 'The process is alive.', content: json(ref('Health'), { ok: { status: 'ok' } }) }, ...errorResponses(ALWAYS) }
    }
  },
  '/readyz': {
    get: {
      operationId: 'ready',
      tags: ['operations'],
      summary: 'Ready to serve: the filter is current and the stores answer',
      security: PUBLIC,
      responses: {
        200: { description: 'Ready.', content: json(ref('Readiness'), { ready: { ready: true, reason: 'ok', mode: 'redis', filterVersion: 7, uws: 'native', warnings: [] } }) },
        ...errorResponses(['BAD_CONTENT_LENGTH', 'H015']),
        503: {
          description: 'Not ready, with the reason (problem); or SERVICE_UNAVAILABLE (an error body) while shutting down.',
          content: json({ anyOf: [ref('Readiness'), errorBody(['SERVICE_UNAVAILABLE'])] }, { notReady: { ready: false, reason: 'no_filter_version', mode: 'redis', filterVersion: 0, problem: 'no filter version in Redis yet (run iys-gateway load)' } })
        }
      }
    }
  },
  '/metrics': {
    get: {
      operationId: 'metrics',
      tags: ['operations'],
      summary: 'Prometheus metrics (names prefixed iys_; labels never hold a recipient, brand or free text)',
      security: PUBLIC,
      responses: {
        200: { description: 'Prometheus text exposition format.', content: { 'text/plain': { schema: { type: 'string' }, example: '# TYPE iys_decisions_total counter\niys_decisions_total{reason="CONSENT",type="MESAJ"} 12\n' } } },
        ...errorResponses(ALWAYS)
      }
    }
  },
  '/openapi.json': {
    get: {
      operationId: 'openapi',
      tags: ['operations'],
      summary: 'This document',
      security: PUBLIC,
      responses: { 200: { description: 'The OpenAPI 3.1 document of the gateway\'s own API.', content: json({ type: 'object', required: ['openapi', 'info', 'paths'], properties: { openapi: { type: 'string', pattern: '^3\\.1\\.' }, info: { type: 'object' }, paths: { type: 'object' } } }) }, ...errorResponses(ALWAYS) }
    }
  }
}

const DESCRIPTION = `The gateway's own HTTP API: consent checks, sending through carriers, bulk scrubbing, the evidence ledger, and the operations endpoints.

**Authentication.** Every operation but /healthz, /readyz, /metrics, /openapi.json and the one-click unsubscribe links (/v1/unsubscribe/{token}, whose signed token is the authority) needs \`Authorization: Bearer <apiKey>\` (or an access token from \`POST /oauth2/token\`). A key belongs to one tenant (an İYS service provider, iysCode), may be limited to some of its brands, has scopes (${SCOPES.map(s => '`' + s + '`').join(', ')}; \`admin\` implies every other) and a rate. Each operation's security lists the scopes that let a key call it: any one of them. No or a bad key is 401 UNAUTHORIZED; a key without the scope, or naming a brand, iysCode or scrub job that is not its own, 403 FORBIDDEN; over its rate 429 RATE_LIMITED with Retry-After. The router checks all of this before it reads a body.

**API keys are not managed over HTTP**: they are created, listed and revoked on the command line with DATABASE_URL set (\`iys-gateway keys create --iys-code 700001 --brand-codes 600001 --scopes check,send\`, \`keys list\`, \`keys revoke KEY_ID\`, \`brands add\`); only a SHA-256 of each secret is stored.

**The İYS-shaped routes** (\`/sps/{iysCode}/brands/...\`, \`/v2/sps/...\`, \`POST /oauth2/token\`, \`POST /iys/push\`) are İYS's own API, with İYS's paths, bodies, answers and error codes, so that an İYS integration works against the gateway by changing its base URL: they are documented by İYS's specification, reference/iys-openapi-3.2.0.json in the gateway's repository (İYS API 3.2.0), not here.

**Errors** have İYS's body: \`{"errors":[{"code","message","location"?,"value"?}]}\`. Each answer below lists the codes it can carry; match on the code, never on the message. Any path not listed here (and not İYS-shaped) is 404 NOT_FOUND, and a listed path with another method 405 METHOD_NOT_ALLOWED (components.responses NotFound and MethodNotAllowed). A body nesting deeper than 32 levels is 400 JSON_TOO_DEEP; two Content-Length headers, or an empty one, 400 BAD_CONTENT_LENGTH (the connection is closed).

**Query strings**: a \`+\` (in a phone number or a time zone offset) must be sent as \`%2B\`; a bare \`+\` means a space.`

/** The document; built once at module load (app.ts serialises it once at start-up). */
export const OPENAPI_DOCUMENT = {
  openapi: '3.1.0',
  info: {
    title: 'iys-gateway',
    version: VERSION,
    summary: 'Consent-filtering gateway for Turkey\'s İleti Yönetim Sistemi (İYS)',
    description: DESCRIPTION
  },
  servers: [{ url: '/', description: 'the gateway serving this document' }],
  tags: [
    { name: 'check', description: 'Consent decisions' },
    { name: 'messages', description: 'Sending through the channels\' carriers' },
    { name: 'scrub', description: 'Bulk scrubbing of lists' },
    { name: 'ledger', description: 'Consent history and decision evidence (needs DATABASE_URL; 503 NOT_CONFIGURED without it)' },
    { name: 'unsubscribe', description: 'One-click unsubscribe links of the SMTP relay (RFC 8058; no key: the signed token is the authority)' },
    { name: 'operations', description: 'Probes, metrics and this document (no key)' }
  ],
  paths,
  components: {
    schemas,
    securitySchemes: {
      apiKey: {
        type: 'http',
        scheme: 'bearer',
        bearerFormat: 'API key <keyId>.<secret>, or an access token from POST /oauth2/token',
        description: 'An API key (created with `iys-gateway keys create`) or an İYS-style access token. The scopes listed in an operation\'s security are the key\'s scopes that let it call the operation (any one of them).'
      }
    },
    headers: {
      RetryAfter: { description: 'Seconds to wait before retrying.', schema: { type: 'integer', minimum: 0 } }
    },
    responses: {
      NotFound: errorResponses(['NOT_FOUND'])['404']!,
      MethodNotAllowed: errorResponses(['METHOD_NOT_ALLOWED'])['405']!
    }
  }
} as const satisfies JsonObject
