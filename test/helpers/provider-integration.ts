// A service provider's İYS integration as one would write it from the İYS specification alone
// (reference/iys-openapi-3.2.0.json), knowing nothing of the gateway: log in with OAuth2 (password grant, then
// refresh), send the token as a bearer, write single and batch consents, poll a request's results, query status,
// history and changes. test/drop-in.test.ts runs it against the fake İYS and against the gateway, with nothing
// changed but `baseUrl`.

export interface ProviderOptions {
  baseUrl: string
  username: string
  password: string
  iysCode: string
  brandCode: string
}

export interface Answer { status: number, body: any }

export class ProviderIntegration {
  private readonly o: ProviderOptions
  private accessToken = ''
  private refreshToken = ''

  constructor (o: ProviderOptions) {
    this.o = o
  }

  /** POST /oauth2/token, form-encoded as OAuth2 clients usually send it. */
  async login (): Promise<Answer> {
    const a = await this.token(new URLSearchParams({ grant_type: 'password', username: this.o.username, password: this.o.password }))
    return a
  }

  /** POST /oauth2/token with the refresh token, as JSON (İYS takes both). */
  async refresh (): Promise<Answer> {
    const res = await fetch(this.o.baseUrl + '/oauth2/token', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ grant_type: 'refresh_token', refresh_token: this.refreshToken }) })
    return await this.keep(res)
  }

  addConsent (consent: Record<string, unknown>): Promise<Answer> {
    return this.call('POST', `${this.sp()}/consents`, consent)
  }

  addConsentRequest (consents: Record<string, unknown>[]): Promise<Answer> {
    return this.call('POST', `${this.sp()}/consents/request`, consents)
  }

  requestResults (requestId: string): Promise<Answer> {
    return this.call('GET', `${this.sp()}/consents/request/${requestId}`)
  }

  status (recipient: string, type: string, recipientType = 'BIREYSEL'): Promise<Answer> {
    return this.call('POST', `${this.sp()}/consents/status`, { recipient, type, recipientType })
  }

  history (recipient: string, type: string, recipientType = 'BIREYSEL'): Promise<Answer> {
    return this.call('POST', `${this.sp()}/consents/history`, { recipient, type, recipientType })
  }

  /** İYS lists the recipients' own changes (`source=IYS`, its default) or the provider's (`HS`). */
  changes (after: string | null, source: 'IYS' | 'HS' = 'IYS', limit = 1000): Promise<Answer> {
    const q = new URLSearchParams({ limit: String(limit), source })
    if (after !== null) q.set('after', after)
    return this.call('GET', `${this.sp()}/consents/changes?${q.toString()}`)
  }

  brands (): Promise<Answer> {
    return this.call('GET', `/sps/${this.o.iysCode}/brands`)
  }

  private sp (): string {
    return `/sps/${this.o.iysCode}/brands/${this.o.brandCode}`
  }

  private async token (form: URLSearchParams): Promise<Answer> {
    const res = await fetch(this.o.baseUrl + '/oauth2/token', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() })
    return await this.keep(res)
  }

  private async keep (res: Response): Promise<Answer> {
    const a = await answer(res)
    if (a.status === 200) {
      this.accessToken = a.body.access_token
      this.refreshToken = a.body.refresh_token
    }
    return a
  }

  private async call (method: 'GET' | 'POST', path: string, body?: unknown): Promise<Answer> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.accessToken}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(this.o.baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    return await answer(res)
  }
}

async function answer (res: Response): Promise<Answer> {
  const text = await res.text()
  let body: unknown = text
  try { body = text === '' ? null : JSON.parse(text) } catch { /* not JSON: kept as text */ }
  return { status: res.status, body }
}
