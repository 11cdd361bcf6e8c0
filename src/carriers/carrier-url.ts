// The part of a non-HTTP carrier's URL (smpp://, smtp://) every such carrier reads the same way: the scheme and its
// TLS twin, the host, no path or fragment, percent-decoded credentials, and query parameters that are known and given
// once. Errors name the carrier and never quote the password.

/** What a carrier URL says before its own parameters are read. */
export interface CarrierUrlParts {
  readonly tls: boolean
  readonly host: string
  /** null: the scheme's default */
  readonly port: number | null
  readonly user: string
  readonly password: string
  readonly query: URLSearchParams
}

export interface CarrierUrlSpec {
  /** `SMPP carrier URL`: the start of every error */
  readonly label: string
  /** [plain, TLS] schemes, e.g. ['smpp:', 'smpps:'] */
  readonly schemes: readonly [string, string]
  /** shown when the text is not a URL, e.g. smpp://system_id:password@host:port?… */
  readonly example: string
  /** the user part's name in errors (system_id, user) */
  readonly userName: string
  readonly params: readonly string[]
}

export function carrierUrlError (spec: Pick<CarrierUrlSpec, 'label'>, message: string): TypeError {
  return new TypeError(`${spec.label}: ${message}`)
}

/** Reads the shared parts of `text`, or throws a TypeError naming what is wrong. */
export function readCarrierUrl (text: string, spec: CarrierUrlSpec): CarrierUrlParts {
  const fail = (message: string): TypeError => carrierUrlError(spec, message)
  let u: URL
  try { u = new URL(text) } catch { throw fail(`not a URL (${spec.example})`) }
  const [plain, secure] = spec.schemes
  if (u.protocol !== plain && u.protocol !== secure) throw fail(`must be ${plain} or ${secure}, got ${u.protocol}`)
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname
  if (host === '') throw fail('no host')
  if (u.port === '0') throw fail('the port must be from 1 to 65535')
  if (u.pathname !== '' && u.pathname !== '/') throw fail('no path is allowed after host:port')
  if (u.hash !== '') throw fail('no #fragment is allowed')
  const decode = (part: string, what: string): string => {
    try { return decodeURIComponent(part) } catch { throw fail(`the ${what} is not valid percent-encoding`) }
  }
  const seen = new Set<string>()
  const unknown: string[] = []
  for (const k of u.searchParams.keys()) {
    if (!spec.params.includes(k)) unknown.push(k)
    else if (seen.has(k)) throw fail(`${k} is given twice`)
    seen.add(k)
  }
  if (unknown.length > 0) throw fail(`unknown parameter${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (known: ${spec.params.join(', ')})`)
  return {
    tls: u.protocol === secure,
    host,
    port: u.port === '' ? null : Number(u.port),
    user: decode(u.username, spec.userName),
    password: decode(u.password, 'password'),
    query: u.searchParams
  }
}

/**
 * An integer parameter: null when absent; in [min, max] (or 0 when `zero` allows "off") or a TypeError naming it.
 */
export function intParam (spec: Pick<CarrierUrlSpec, 'label'>, q: URLSearchParams, name: string, min: number, max: number, zero = false): number | null {
  const v = q.get(name)
  if (v === null) return null
  const n = /^\d{1,10}$/.test(v) ? Number(v) : NaN
  if (!(zero && n === 0) && !(n >= min && n <= max)) throw carrierUrlError(spec, `${name} must be an integer from ${zero ? `0 (off) or ${min}` : min} to ${max}, got "${v}"`)
  return n
}
