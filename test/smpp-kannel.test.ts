// A real SMS platform in front of the gateway: Kannel (Debian's `kannel`: bearerbox and smsbox) binds to the
// gateway's SMPP port as its SMSC, the gateway binds to the fake operator SMSC. A sendsms to a recipient with consent
// reaches the operator and its delivery receipt comes back to Kannel's dlr-url; one without consent is refused 0x66
// and never reaches the operator; an MO "RET" from the operator becomes a RET and reaches Kannel's sms-service.
// .ci/run installs Kannel; without it this test fails (it is not skipped).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createServer, type Server } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFakeSmsc, type FakeSmsc } from '../src/dev/fake-smsc.js'
import { runCli, runSteps } from './helpers/cli.js'
import { check, startTestGateway, type RunningGateway } from './helpers/gateway.js'
import { freePort, until } from './helpers/redis-server.js'
import { testServices, type TestServices } from './helpers/services.js'

const ONAY = '+905321110001'
const RET = '+905321110009'
const MO_FROM = '+905321110002'
const BRAND = '600001'

/** Kannel's binaries: Debian puts them in /usr/sbin, which a user's PATH may lack. */
function kannelBinary (name: string): string {
  for (const p of [`/usr/sbin/${name}`, `/usr/bin/${name}`]) if (spawnSync(p, ['--version']).status !== null) return p
  throw new Error(`${name} (Debian package kannel) is required for this test: apt-get install kannel`)
}

describe('Kannel in front of the gateway', () => {
  let services: TestServices
  let smsc: FakeSmsc
  let gw: RunningGateway
  let hooks: Server
  const calls: URL[] = []
  const boxes: ChildProcess[] = []
  let sendsms = 0

  const send = async (to: string, extra = ''): Promise<string> => {
    const r = await fetch(`http://127.0.0.1:${sendsms}/cgi-bin/sendsms?username=u&password=p&from=ACME&to=${encodeURIComponent(to)}&text=Merhaba${extra}`)
    return await r.text()
  }
  const metric = async (name: string): Promise<number> => {
    const line = (await (await fetch(gw.url + '/metrics')).text()).split('\n').find(l => l.startsWith(name + ' '))
    return Number(line?.split(' ')[1] ?? 0)
  }

  beforeAll(async () => {
    const bearerbox = kannelBinary('bearerbox')
    const smsbox = kannelBinary('smsbox')
    services = await testServices({ dirPrefix: 'iys-kannel-', redis: true })
    const file = join(services.dir, 'c.csv')
    writeFileSync(file, 'iysCode,brandCode,recipient,recipientType,type,status,source,consentDate\n' +
      `700001,${BRAND},${ONAY},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n` +
      `700001,${BRAND},${MO_FROM},BIREYSEL,MESAJ,ONAY,HS_WEB,2024-01-15 10:00:00\n` +
      `700001,${BRAND},${RET},BIREYSEL,MESAJ,RET,HS_WEB,2024-01-15 10:00:00\n`)
    await runSteps([['migrate'], ['import', file], ['load']], services.env)
    const key = await runCli(['keys', 'create', '--iys-code', '700001', '--brand-codes', BRAND, '--scopes', 'send', '--rate', '0', '--smpp-system-id', 'kannel1'], services.env)
    expect(key.code, key.stderr).toBe(0)
    const password = JSON.parse(key.stdout).smppPassword as string
    for (const originator of ['ACME', '4545']) await runCli(['originators', 'add', '--iys-code', '700001', '--originator', originator, '--brand-code', BRAND], services.env)
    smsc = await startFakeSmsc()
    gw = await startTestGateway({ ...services.env, SMPP_PORT: '0', UPSTREAM_MESAJ_URL: smsc.url('binds=1') })

    // Kannel's dlr-url and sms-service call this server.
    hooks = createServer((req, res) => { calls.push(new URL(req.url!, 'http://x')); res.end('') })
    await new Promise<void>(resolve => hooks.listen(0, '127.0.0.1', resolve))
    const hookPort = (hooks.address() as { port: number }).port
    const [admin, box] = [await freePort(), await freePort()]
    sendsms = await freePort()
    const dir = services.dir
    writeFileSync(join(dir, 'kannel.conf'), `
group = core
admin-port = ${admin}
admin-password = adm
smsbox-port = ${box}
log-level = 1
log-file = "${dir}/bearerbox.log"
box-allow-ip = 127.0.0.1

group = smsc
smsc = smpp
smsc-id = iys
host = 127.0.0.1
port = ${gw.gw.smppPort}
transceiver-mode = true
system-type = ""
smsc-username = kannel1
smsc-password = ${password}
source-addr-ton = 5
source-addr-npi = 0
dest-addr-ton = 1
dest-addr-npi = 1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = ${box}
sendsms-port = ${sendsms}
log-file = "${dir}/smsbox.log"
log-level = 1

group = sendsms-user
username = u
password = p

group = sms-service
keyword = default
get-url = "http://127.0.0.1:${hookPort}/mo?from=%p&to=%P&text=%a"
max-messages = 0
`)
    boxes.push(spawn(bearerbox, [join(dir, 'kannel.conf')], { stdio: 'ignore' }))
    await until(async () => await metric('iys_smpp_binds') >= 1, 30_000, 'Kannel to bind to the gateway')
    boxes.push(spawn(smsbox, [join(dir, 'kannel.conf')], { stdio: 'ignore' }))
    await until(async () => { try { await fetch(`http://127.0.0.1:${sendsms}/`); return true } catch { return false } }, 30_000, 'smsbox to listen')
  }, 120_000)

  afterAll(async () => {
    for (const b of boxes) b.kill('SIGKILL')
    hooks?.close()
    await gw?.close()
    await smsc?.close()
    await services?.close()
  })

  it('delivers a message with consent to the operator, and its receipt to Kannel\'s dlr-url', async () => {
    const hookUrl = `http://127.0.0.1:${(hooks.address() as { port: number }).port}/dlr?status=%d&to=%p`
    expect(await send(ONAY, `&dlr-mask=3&dlr-url=${encodeURIComponent(hookUrl)}`)).toMatch(/Accepted/)
    await until(() => smsc.submits().some(s => s.pdu.destination_addr === ONAY.slice(1)), 20_000, 'the message at the operator')
    const sent = smsc.submits().find(s => s.pdu.destination_addr === ONAY.slice(1))!
    expect(sent.pdu.short_message.message).toBe('Merhaba')
    expect(sent.pdu.registered_delivery & 1).toBe(1)
    expect(await smsc.deliverReceipt(sent.messageId!)).toBe(0)
    await until(() => calls.some(u => u.pathname === '/dlr' && u.searchParams.get('status') === '1'), 20_000, 'Kannel to report the delivery (dlr-url, status 1)')
  })

  it('gets 0x66 for a recipient without consent, which never reaches the operator', async () => {
    expect(await send(RET)).toMatch(/Accepted/) // Kannel queues first; the gateway refuses when Kannel submits
    await until(async () => (await (await fetch(gw.url + '/metrics')).text()).includes('iys_smpp_pdus_total{command="submit_sm",status="ESME_RX_R_APPN"} 1'), 20_000, 'the refusal')
    expect(smsc.submits().some(s => s.pdu.destination_addr === RET.slice(1))).toBe(false)
  })

  it('turns an MO "RET" to the tenant\'s short code into a RET, and hands the MO to Kannel', async () => {
    expect(await smsc.deliverMo(MO_FROM.slice(1), '4545', 'RET')).toBe(0)
    await until(async () => (await check(gw.url, { brandCode: BRAND, type: 'MESAJ', recipients: [MO_FROM] }))[0]!.reason === 'REJECTED', 20_000, 'the MO RET to take effect')
    await until(() => calls.some(u => u.pathname === '/mo' && u.searchParams.get('text') === 'RET' && u.searchParams.get('to') === '4545'), 20_000, 'the MO at Kannel\'s sms-service')
  })
})
