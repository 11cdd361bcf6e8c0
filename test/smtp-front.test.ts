// The SMTP front end end to end (issue 15): a real SMTP client (nodemailer) relays through two gateways over real
// Postgres and Redis to a real SMTP server behind them (src/dev/fake-smtp.ts on smtp-server). Allowed recipients
// are delivered with RFC 8058 List-Unsubscribe headers, blocked ones are refused at RCPT and never delivered, AUTH is
// required, the upstream going down and coming back loses nothing, and the one-click unsubscribe POST makes the next
// RCPT for that address fail on the other gateway.

import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import nodemailer from 'nodemailer'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFakeSmtp, type FakeSmtp } from '../src/dev/fake-smtp.js'
import { runCli, runSteps } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'
import { selfSignedCert } from './helpers/tls.js'

const BRAND = '600001'
const OK = ['ok1@example.com', 'ok2@example.com', 'ok3@example.com', 'ok4@example.com']
const RET = 'ret@example.com'
const NONE = 'none@example.com'
const SECRET = 'an-unsubscribe-secret-of-32-chars-or-more-for-tests'

describe('the SMTP front end', () => {
  let services: TestServices
  let upstream: FakeSmtp
  let a: RunningGateway
  let b: RunningGateway
  let user = ''
  let pass = ''

  const transport = (gw: RunningGateway, auth: { user: string, pass: string } | null = { user, pass }) => nodemailer.createTransport({
    host: '127.0.0.1', port: gw.gw.smtpPort!, secure: false, ignoreTLS: true, ...(auth !== null ? { auth } : {})
  })
  const mail = (to: string | string[], from = 'news@acme.com.tr') => ({ from, to, subject: 'Kampanya', text: 'Merhaba, yeni ürünler.' })
  const delivered = (to: string) => upstream.messages().filter(m => m.envelope.to.includes(to))

  beforeAll(async () => {
    services = await testServices({ dirPrefix: 'iys-smtp-', redis: true })
    const file = join(services.dir, 'c.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      OK.map(e => `700001,${BRAND},${e},BIREYSEL,EPOSTA,ONAY,HS_WEB,2024-01-15 10:00:00\n`).join('') +
      `700001,${BRAND},${RET},BIREYSEL,EPOSTA,RET,HS_WEB,2024-01-15 10:00:00\n`)
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    const key = await runCli(['keys', 'create', '--iys-code', '700001', '--scopes', 'send', '--rate', '0', '--brand-codes', `${BRAND},600002`], services.env)
    expect(key.code, key.stderr).toBe(0)
    const apiKey = JSON.parse(key.stdout).apiKey as string
    ;[user, pass] = apiKey.split('.') as [string, string]
    const o = await runCli(['originators', 'add', '--iys-code', '700001', '--originator', 'acme.com.tr', '--brand-code', BRAND], services.env)
    expect(o.code, o.stderr).toBe(0)
    upstream = await startFakeSmtp()
    const env = {
      ...services.env,
      SMTP_PORT: '0',
      SMTP_UNSUBSCRIBE_SECRETS: SECRET,
      SMTP_RETRY_BASE_MS: '200',
      UPSTREAM_EPOSTA_URL: upstream.url(),
      UPSTREAM_TIMEOUT_MS: '2000',
      UPSTREAM_BREAKER_MIN_CALLS: '1000'
    }
    a = await startTestGateway({ ...env, SMTP_SPOOL_DIR: join(services.dir, 'spool-a') })
    b = await startTestGateway({ ...env, SMTP_SPOOL_DIR: join(services.dir, 'spool-b') })
  }, 120_000)

  afterAll(async () => {
    await a?.close()
    await b?.close()
    await upstream?.close()
    await services?.close()
  })

  it('requires AUTH with a key that may send', async () => {
    await expect(transport(a, null).sendMail(mail(OK[0]!))).rejects.toThrow(/530|auth/i)
    await expect(transport(a, { user, pass: 'wrong' }).sendMail(mail(OK[0]!))).rejects.toThrow(/535/)
    expect(upstream.messages()).toHaveLength(0)
  })

  it('delivers to a recipient with consent, with the one-click unsubscribe headers, the body untouched', async () => {
    const info = await transport(a).sendMail(mail(OK[0]!))
    expect(info.accepted).toEqual([OK[0]])
    await until(() => delivered(OK[0]!).length === 1, 15_000, 'the copy at the upstream')
    const text = delivered(OK[0]!)[0]!.raw.toString('utf8')
    expect(text).toMatch(/^List-Unsubscribe: <http:\/\/127\.0\.0\.1:\d+\/v1\/unsubscribe\/[A-Za-z0-9_.-]+>/m)
    expect(text).toMatch(/^List-Unsubscribe-Post: List-Unsubscribe=One-Click\r?$/m)
    expect(text).toContain('Merhaba, yeni =C3=BCr=C3=BCnler.') // as the client encoded it (quoted-printable), untouched
  })

  it('refuses REJECTED and NO_CONSENT at RCPT and never delivers them; a mixed list delivers only the allowed', async () => {
    await expect(transport(a).sendMail(mail(RET))).rejects.toThrow(/550/)
    await expect(transport(a).sendMail(mail(NONE))).rejects.toThrow(/550/)
    const info = await transport(a).sendMail(mail([OK[1]!, RET, NONE]))
    expect(info.accepted).toEqual([OK[1]])
    expect([...info.rejected].sort()).toEqual([NONE, RET])
    await until(() => delivered(OK[1]!).length === 1, 15_000, 'the allowed copy')
    expect(delivered(RET)).toHaveLength(0)
    expect(delivered(NONE)).toHaveLength(0)
    await until(async () => Number((await services.pool.query("SELECT count(*) AS n FROM decisions WHERE source = 'smtp' AND normalized = $1", [RET])).rows[0].n) === 2, 15_000, 'the decisions in the decision log')
  })

  it('relays informational mail (a +iys-bilgi sender tag) to a recipient without consent, without unsubscribe headers, the tag removed', async () => {
    await transport(a).sendMail(mail(RET, 'news+iys-bilgi@acme.com.tr'))
    await until(() => delivered(RET).length === 1, 15_000, 'the informational copy')
    const m = delivered(RET)[0]!
    expect(m.envelope.from).toBe('news@acme.com.tr')
    expect(m.raw.toString('utf8')).not.toMatch(/^List-Unsubscribe:/m)
  })

  it('keeps what it accepted while the upstream is down and delivers it when it is back', async () => {
    await upstream.stop()
    const info = await transport(a).sendMail(mail(OK[2]!))
    expect(info.accepted).toEqual([OK[2]])
    await new Promise(resolve => setTimeout(resolve, 500))
    await upstream.start()
    await until(() => delivered(OK[2]!).length === 1, 20_000, 'the spooled copy once the upstream is back')
  })

  it('bounces a copy the upstream refuses for good: a DSN to the envelope sender, from the null sender', async () => {
    upstream.rejectNext(1, 550, '5.1.1 No such user here', 'RCPT')
    const info = await transport(a).sendMail(mail(OK[0]!, 'news@acme.com.tr'))
    expect(info.accepted).toEqual([OK[0]])
    await until(() => upstream.messages().some(m => m.envelope.from === '' && m.envelope.to.includes('news@acme.com.tr')), 15_000, 'the DSN')
    const dsn = upstream.messages().find(m => m.envelope.from === '')!.raw.toString('utf8')
    expect(dsn).toMatch(/multipart\/report; report-type=delivery-status/)
    expect(dsn).toMatch(/^Final-Recipient: rfc822; ok1@example\.com\r?$/m)
    expect(dsn).toMatch(/^Status: 5\.1\.1\r?$/m)
  })

  it('turns the one-click unsubscribe POST into a RET that makes the next RCPT fail on the other gateway', async () => {
    await transport(a).sendMail(mail(OK[3]!))
    await until(() => delivered(OK[3]!).length === 1, 15_000, 'the copy')
    const link = /^List-Unsubscribe: <([^>]+)>/m.exec(delivered(OK[3]!)[0]!.raw.toString('utf8'))![1]!
    expect(link).not.toContain(OK[3]) // the address is not in the link
    const r = await fetch(link, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'List-Unsubscribe=One-Click' })
    expect(r.status).toBe(200)
    await until(async () => (await check(b.url, { brandCode: BRAND, type: 'EPOSTA', recipients: [OK[3]] }))[0]!.reason === 'REJECTED', 5000, 'the RET on gateway B')
    await expect(transport(b).sendMail(mail(OK[3]!))).rejects.toThrow(/550/)
    expect(delivered(OK[3]!)).toHaveLength(1)
    const { rows } = await services.pool.query("SELECT status, source FROM consents WHERE recipient = $1 AND recipient_type = 'BIREYSEL'", [OK[3]])
    expect(rows).toEqual([{ status: 'RET', source: 'HS_EPOSTA' }])
  })
})

describe('the SMTP front end over TLS', () => {
  let services: TestServices
  let upstream: FakeSmtp
  let gw: RunningGateway
  let auth = { user: '', pass: '' }

  beforeAll(async () => {
    services = await testServices({ dirPrefix: 'iys-smtp-tls-', redis: true })
    const file = join(services.dir, 'c.csv')
    writeFileSync(file, `iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n700001,${BRAND},${OK[0]},BIREYSEL,EPOSTA,ONAY,HS_WEB,2024-01-15 10:00:00\n`)
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    const key = await runCli(['keys', 'create', '--iys-code', '700001', '--scopes', 'send', '--rate', '0', '--brand-codes', BRAND], services.env)
    const [user, pass] = (JSON.parse(key.stdout).apiKey as string).split('.') as [string, string]
    auth = { user, pass }
    const tls = selfSignedCert(services.dir)
    upstream = await startFakeSmtp()
    gw = await startTestGateway({
      ...services.env,
      SMTP_PORT: '0',
      SMTP_TLS_PORT: '0',
      SMTP_TLS_CERT: tls.certFile,
      SMTP_TLS_KEY: tls.keyFile,
      SMTP_UNSUBSCRIBE_SECRETS: SECRET,
      SMTP_SPOOL_DIR: join(services.dir, 'spool'),
      UPSTREAM_EPOSTA_URL: upstream.url()
    })
  }, 120_000)

  afterAll(async () => {
    await gw?.close()
    await upstream?.close()
    await services?.close()
  })

  const tls = { rejectUnauthorized: false } // the test's certificate is self-signed

  it('refuses AUTH in the clear once it has a certificate, and takes it after STARTTLS', async () => {
    const clear = nodemailer.createTransport({ host: '127.0.0.1', port: gw.gw.smtpPort!, secure: false, ignoreTLS: true, auth })
    await expect(clear.sendMail({ from: 'a@acme.com.tr', to: OK[0], subject: 's', text: 't' })).rejects.toThrow(/538|encrypt|STARTTLS|TLS/i)
    const starttls = nodemailer.createTransport({ host: '127.0.0.1', port: gw.gw.smtpPort!, secure: false, requireTLS: true, tls, auth })
    expect((await starttls.sendMail({ from: 'a@acme.com.tr', to: OK[0], subject: 's', text: 'starttls' })).accepted).toEqual([OK[0]])
  })

  it('speaks TLS from the first byte on SMTP_TLS_PORT', async () => {
    const implicit = nodemailer.createTransport({ host: '127.0.0.1', port: gw.gw.smtpTlsPort!, secure: true, tls, auth })
    expect((await implicit.sendMail({ from: 'a@acme.com.tr', to: OK[0], subject: 's', text: 'implicit' })).accepted).toEqual([OK[0]])
    await until(() => upstream.messages().length === 2, 15_000, 'both copies at the upstream')
  })
})
