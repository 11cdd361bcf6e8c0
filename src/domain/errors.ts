// Every error the gateway can answer with, in one list. İYS codes (Hxxx) keep İYS's HTTP status and Turkish
// message so that payloads written for İYS get the same answers here; gateway-only codes are plain words.
// test/errors.test.ts checks every İYS code here against the specification's error table. Errors that never reach
// a client as such have their codes in INTERNAL_ERRORS; every error class derives from CodedError.

export const ERRORS = {
  // İYS codes
  H014: { status: 400, message: 'Gönderilen istek JSON formatına uygun olmalıdır.' },
  H015: { status: 500, message: 'Beklenmedik bir hata oluştu.' },
  H1042: { status: 400, message: 'POST isteği için gövde boş olamaz.' },
  H085: { status: 400, message: 'İzin ekleme isteği geçerli olmalıdır.' },
  H091: { status: 422, message: 'İzin ekleme sayısı en fazla 1000 olmalıdır.' },
  H092: { status: 400, message: 'Çoklu izin ekleme isteği geçerli olmalıdır.' },
  H097: { status: 400, message: 'İzin sorgulama isteği geçerli olmalıdır.' },
  H110: { status: 422, message: 'Durum (status) bulunamadı.' },
  H111: { status: 422, message: 'İzin tipi (type) bulunamadı.' },
  H112: { status: 422, message: 'İzin tarihi (consentDate) bulunamadı.' },
  H113: { status: 422, message: 'İzin kaynağı (source) bulunamadı.' },
  H114: { status: 422, message: 'Alıcı (recipient) bulunamadı.' },
  H115: { status: 422, message: 'Durum (status) için uygun değerler: ONAY, RET' },
  H116: { status: 422, message: 'Alıcı tipi (recipientType) için uygun değerler: BIREYSEL, TACIR' },
  H117: { status: 422, message: 'İzin tipi (type) için uygun değerler: ARAMA, MESAJ, EPOSTA' },
  H118: { status: 422, message: 'Alan değeri kabul edilemedi. İstek gövdesinde bulunabilecek değerler: recipientType, retailerAccess, recipient, retailerCode, source, type, consentDate, status olmalıdır.' },
  H119: { status: 422, message: 'İzin kaynağı (source) için uygun değerler: HS_FIZIKSEL_ORTAM, HS_ISLAK_IMZA, HS_WEB, HS_CAGRI_MERKEZI, HS_SOSYAL_MEDYA, HS_EPOSTA, HS_MESAJ, HS_MOBIL, HS_EORTAM, HS_ETKINLIK, HS_2015, HS_ATM, HS_KARAR' },
  H120: { status: 422, message: 'Alıcı (recipient) kabul edilemedi. Geçerli bir eposta adresi giriniz.' },
  H121: { status: 422, message: 'Alıcı (recipient) için E164 uluslararası([+][country code][area code][local phone number]) formatına uygun bir telefon numarası girilmelidir. (örn. +905992000000)' },
  H122: { status: 422, message: 'Alıcı (recipient) için E164 uluslararası ([+][country code][area code][local phone number]) formatına uygun bir telefon numarası (örn. +905992000000) ya da geçerli bir e-posta adresi girilmelidir.' },
  H155: { status: 422, message: 'İzin kaynağı “1 Mayıs 2015 öncesi” olan izinler için, izin tarihi sadece 2015-05-01 00:00:00 olabilir.' },
  H156: { status: 422, message: 'İzinler için 1 Mayıs 2015’den önceki tarihler kabul edilmemektedir.' },
  H157: { status: 422, message: 'Geçerli bir tarih girilmelidir.' },
  H158: { status: 422, message: 'İzin tarihi yyyy-mm-dd hh:mm:ss formatında olmalıdır.' },
  H160: { status: 422, message: 'Alıcı için telefon numaraları 15 karakterden uzun olmamalıdır.' },
  H164: { status: 422, message: 'Alıcı listesi (recipients) kabul edilemedi. Liste boş olmamalıdır.' },
  H166: { status: 422, message: 'Alıcı (recipient) kabul edilemedi. Telefon numaraları 15 karakterden uzun olamaz.' },
  H168: { status: 422, message: 'Alıcı listesi (recipients) bulunamadı.' },
  H170: { status: 422, message: 'Alıcı tipi (recipientType) bulunamadı.' },
  H162: { status: 422, message: 'Mevcut tarih ve saatten ileri bir tarih ve saat girilmemelidir.' },
  H174: { status: 400, message: 'İzin durumu (status) güncellemesi için farklı bir durum girilmelidir.' },
  H175: { status: 400, message: 'İlk defa kaydedilen bir iznin durum (status) bilgisi RET olmamalıdır.' },
  H178: { status: 400, message: 'Sistemdeki iznin tarihinden önceki tarihli izinlerle güncelleme yapılamaz.' },
  H193: { status: 422, message: 'Bayi İYS numarası ve alıcı değeri liste içinde tekrarlanamaz.' },
  H194: { status: 422, message: 'İzin listede daha önce tanımlandı. Liste içinde izinler alıcı tipi (recipientType), tip (type) ve alıcı (recipient) değerleri için tekrarlanamaz.' },
  H198: { status: 422, message: 'requestId 36 karakterden daha uzun olamaz.' },
  H199: { status: 422, message: 'requestId sadece harflerden meydana gelemez.' },
  H351: { status: 401, message: 'Eksik veya geçersiz jeton!' },
  H353: { status: 403, message: 'Alan, kullanıcı izinleriyle eşleştirilemiyor' },
  H124: { status: 429, message: 'Saniyede kabul edilen istek limitine ulaşıldı. Lütfen daha sonra tekrar deneyiniz.' },
  H084: { status: 429, message: 'Saatte kabul edilen kimlik doğrulama istek limitine ulaşıldı. Lütfen daha sonra tekrar deneyiniz.' },
  H400: { status: 422, message: 'requestId sadece sayılardan meydana gelemez.' },
  H408: { status: 422, message: 'HS_KARAR kaynağından iletilen izinler için durum bilgisi RET olmalıdır.' },
  H478: { status: 422, message: 'Alıcı listesi (recipients) liste olmalıdır.' },
  H464: { status: 422, message: 'İzin tipi (type) MESAJ için, alıcı (recipient) telefon formatında olmalıdır.' },
  // The mirrored routes' own validation (src/domain/iys-validation.ts)
  H126: { status: 422, message: 'İzin erişimi olan bayilerin (retailer) liste uzunluğu en fazla 100 olmalıdır.' },
  H163: { status: 422, message: 'Bayiler kabul edilemedi. Lütfen boş liste eklemeyiniz.' },
  H180: { status: 403, message: 'İstek gövdesinde yer alan bayi İYS numarasıyla (retailerCode) herhangi bir bayi bulunamadı.' },
  H190: { status: 422, message: 'iysCode integer bir değer olmalıdır.' },
  H191: { status: 422, message: 'brandCode integer bir değer olmalıdır.' },
  H267: { status: 400, message: 'iysCode değeri boş olmamalıdır.' },
  H462: { status: 400, message: 'TACIR izinleri güncellenirken izin tarihi (consentDate) verilmelidir' },
  H463: { status: 400, message: 'TACIR izinleri güncellenirken izin kaynağı (source) verilmelidir.' },
  H467: { status: 422, message: 'Üç iş günü öncesinde alınan izinler kaydedilemez.' },
  // The mirrored read routes (http/iys-read-routes.ts): history's limit/offset, changes' limit and source. H506 and
  // H507 are not in the error table; the changes operation's own 422 examples give them.
  H182: { status: 422, message: 'offset değeri geçerli olmalıdır.' },
  H183: { status: 422, message: 'limit değeri geçerli olmalıdır.' },
  H186: { status: 422, message: 'Sayfalama (pagination) değeri en fazla 100 olabilir.' },
  H187: { status: 422, message: 'limit değerleri sıfır olmamalıdır.' },
  H506: { status: 422, message: 'İzin kaynağı (source) bulunamadı.' },
  H507: { status: 422, message: 'limit alanı için karakter üst sınırı 1000 olmalıdır.' },
  // Gateway codes
  BODY_TOO_LARGE: { status: 413, message: 'Request body is larger than the configured limit.' },
  MALFORMED_PATH: { status: 400, message: 'The request path is not valid percent-encoded UTF-8.' },
  JSON_TOO_DEEP: { status: 400, message: 'The JSON body nests arrays and objects too deeply.' },
  BAD_CONTENT_LENGTH: { status: 400, message: 'Content-Length must be sent once, as a plain non-negative integer.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Content-Type must be application/json.' },
  NOT_FOUND: { status: 404, message: 'No such route.' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this route.' },
  MISSING_FIELD: { status: 422, message: 'A required field is missing.' },
  INVALID_FIELD: { status: 422, message: 'A field has the wrong type or value.' },
  INVALID_BRAND_CODE: { status: 422, message: 'brandCode must be a positive integer (İYS brand code).' },
  TOO_MANY_RECIPIENTS: { status: 422, message: 'At most 1000 recipients may be checked in one request.' },
  TOO_MANY_MESSAGES: { status: 422, message: 'At most 1000 messages may be sent in one request.' },
  SERVICE_UNAVAILABLE: { status: 503, message: 'The consent store is not available.' },
  DATABASE_UNAVAILABLE: { status: 503, message: 'Postgres (DATABASE_URL) is not answering: this route needs it. Consent checks go on; retry this later.' },
  RESULT_NOT_READY: { status: 409, message: 'The scrub job has no result yet.' },
  JOB_EXISTS: { status: 409, message: 'A scrub job with this jobId exists already.' },
  TOO_MANY_UPLOADS: { status: 429, message: 'Too many scrub uploads from this client at once.' },
  STORAGE_FULL: { status: 507, message: 'The scrub jobs on this gateway hold all the disk space they may use.' },
  UNAUTHORIZED: { status: 401, message: 'Missing or wrong credentials.' },
  FORBIDDEN: { status: 403, message: 'This API key may not do this.' },
  RATE_LIMITED: { status: 429, message: 'Too many requests for this API key; retry after the time in Retry-After.' },
  // Answer-level codes: they set the status of an answer whose items carry codes of their own, and never appear in
  // a body themselves (İYS answers a list with invalid consents 422 whatever the items say; the push receiver has
  // always answered a body that is not {"list":[...]} 400).
  INVALID_ITEMS: { status: 422, message: 'Items of the list are not valid; each error gives its index.' },
  INVALID_PUSH: { status: 400, message: 'The body must be İYS\'s push payload: {"list":[...]}.' },
  NOT_CONFIGURED: { status: 503, message: 'This endpoint needs DATABASE_URL (and, for İYS push, IYS_PUSH_USER/IYS_PUSH_PASSWORD).' }
} as const satisfies Record<string, { status: number, message: string }>

export type ErrorCode = keyof typeof ERRORS

/**
 * Codes of the errors that stay inside the gateway: a store lookup that failed becomes STORE_UNAVAILABLE per item,
 * a filter version that went away makes a scrub chunk run again, a bad setting stops the CLI.
 */
export const INTERNAL_ERRORS = ['STORE_TIMEOUT', 'VERSION_GONE', 'CONFIG_INVALID', 'USAGE', 'FILE_FORMAT', 'UPSTREAM_TIMEOUT', 'IYS_API', 'OAUTH_REQUEST', 'SMPP_SESSION_CLOSED', 'SMPP_RESPONSE_TIMEOUT'] as const

export type InternalErrorCode = (typeof INTERNAL_ERRORS)[number]

export interface ErrorItem {
  code: ErrorCode
  message: string
  /** İYS's path to the field: names, and list indexes as numbers (`["recipients", 3]`) */
  location?: (string | number)[]
  value?: unknown
}

/**
 * The base of every error class the gateway defines. Callers match on `code`, never on the class name or the
 * message; the code is also what crosses a worker boundary, where only plain data survives (see errorCode).
 */
export class CodedError<C extends ErrorCode | InternalErrorCode = ErrorCode | InternalErrorCode> extends Error {
  readonly code: C

  constructor (code: C, message: string, opts?: ErrorOptions) {
    super(message, opts)
    this.name = new.target.name
    this.code = code
  }
}

/** The stable code of anything thrown: a CodedError's code; otherwise its name ('Error' when it has none). */
export function errorCode (err: unknown): string {
  if (err instanceof CodedError) return err.code
  const name = (err as { name?: unknown } | null)?.name
  return typeof name === 'string' ? name : 'Error'
}

/** The one error type the gateway answers with; `toBody()` gives İYS's `{"errors":[...]}` shape. */
export class GatewayError extends CodedError<ErrorCode> {
  readonly status: number
  readonly items: ErrorItem[]
  /** seconds for a Retry-After header (429, 503) */
  readonly retryAfterS: number | undefined

  constructor (code: ErrorCode, opts: { message?: string, location?: string, value?: unknown, cause?: unknown, items?: ErrorItem[], retryAfterS?: number } = {}) {
    const message = opts.message ?? ERRORS[code].message
    super(code, message, { cause: opts.cause })
    this.status = ERRORS[code].status
    this.items = opts.items ?? [errorItem(code, opts.location, opts.value, message)]
    this.retryAfterS = opts.retryAfterS
  }

  toBody (): { errors: ErrorItem[] } {
    return { errors: this.items }
  }
}

export function errorItem (code: ErrorCode, location?: string, value?: unknown, message: string = ERRORS[code].message): ErrorItem {
  const item: ErrorItem = { code, message }
  if (location !== undefined) item.location = [location]
  if (value !== undefined) item.value = value
  return item
}
