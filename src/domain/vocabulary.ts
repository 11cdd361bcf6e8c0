// İYS vocabulary, spelled exactly as the İYS API spells it (components.schemas.Consent).
// Each list is `as const` so that its union type and its runtime set come from one place.

export const CONSENT_TYPES = ['MESAJ', 'ARAMA', 'EPOSTA'] as const
export type ConsentType = (typeof CONSENT_TYPES)[number]

export const RECIPIENT_TYPES = ['BIREYSEL', 'TACIR'] as const
export type RecipientType = (typeof RECIPIENT_TYPES)[number]

export const STATUSES = ['ONAY', 'RET'] as const
export type ConsentStatus = (typeof STATUSES)[number]

export const PROVIDER_SOURCES = [
  'HS_FIZIKSEL_ORTAM', 'HS_ISLAK_IMZA', 'HS_WEB', 'HS_CAGRI_MERKEZI', 'HS_SOSYAL_MEDYA', 'HS_EPOSTA',
  'HS_MESAJ', 'HS_MOBIL', 'HS_EORTAM', 'HS_ETKINLIK', 'HS_2015', 'HS_ATM', 'HS_KARAR'
] as const
export const IYS_SOURCES = [
  'IYS_KISAMESAJ', 'IYS_CM', 'IYS_WEB', 'IYS_WEB_YENI', 'IYS_MOBIL', 'IYS_EPOSTA', 'IYS_AHS_HAT_KAPATMA',
  'IYS_FRAME_EPOSTA', 'IYS_FRAME_SMS'
] as const
/**
 * What a TACIR consent İYS accepted without a source is stored with (İYS records none; `source` is NOT NULL here).
 * Never accepted as input (isSource), never sent to İYS, left out of İYS-shaped answers.
 */
export const NO_SOURCE = 'NO_SOURCE'
// The order of SOURCES is part of the Redis value encoding (a source is stored as its index): append only.
export const SOURCES = [...PROVIDER_SOURCES, ...IYS_SOURCES, NO_SOURCE] as const
export type ConsentSource = (typeof SOURCES)[number]

/** One-letter codes used inside filter keys; the order of these maps is part of the key format. */
export const TYPE_CODE: Readonly<Record<ConsentType, string>> = Object.freeze({ MESAJ: 'M', ARAMA: 'A', EPOSTA: 'E' })
export const RECIPIENT_TYPE_CODE: Readonly<Record<RecipientType, string>> = Object.freeze({ BIREYSEL: 'B', TACIR: 'T' })

const typeSet: ReadonlySet<string> = new Set(CONSENT_TYPES)
const recipientTypeSet: ReadonlySet<string> = new Set(RECIPIENT_TYPES)
const statusSet: ReadonlySet<string> = new Set(STATUSES)
const sourceIndex: ReadonlyMap<string, number> = new Map(SOURCES.map((s, i) => [s, i]))
const inputSourceSet: ReadonlySet<string> = new Set([...PROVIDER_SOURCES, ...IYS_SOURCES])

export const isConsentType = (v: unknown): v is ConsentType => typeof v === 'string' && typeSet.has(v)
export const isRecipientType = (v: unknown): v is RecipientType => typeof v === 'string' && recipientTypeSet.has(v)
export const isStatus = (v: unknown): v is ConsentStatus => typeof v === 'string' && statusSet.has(v)
/** A source a record may arrive with (İYS's vocabulary; not NO_SOURCE). */
export const isSource = (v: unknown): v is ConsentSource => typeof v === 'string' && inputSourceSet.has(v)
export const sourceToIndex = (s: ConsentSource): number => sourceIndex.get(s) as number

/**
 * Brand and service-provider codes are integers in İYS (path parameters are `integer`), though tokens and files
 * sometimes write them zero-padded ("000100"). We keep the canonical decimal text: "000100" and 100 are one brand.
 */
const CODE_RE = /^\d{1,15}$/
export function canonicalCode (v: unknown): string | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v > 0 ? String(v) : null
  if (typeof v !== 'string' || !CODE_RE.test(v)) return null
  const n = Number(v)
  return n > 0 ? String(n) : null
}
