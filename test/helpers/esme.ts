// A provider's platform in tests: node-smpp's own client session (not ours, so that our server is tried by an
// independent implementation), bound to a gateway's SMPP port. Collects the deliver_sm PDUs it receives (answering
// each with status 0 unless told otherwise) and turns submit_sm into promises of their responses.

import { createRequire } from 'node:module'
import type { PDU } from 'smpp'

const require = createRequire(import.meta.url)
// eslint-disable-next-line @typescript-eslint/no-var-requires
const smpp = require('smpp') as { connect (o: Record<string, unknown>): any }

export interface Esme {
  /** The bind response's command_status (0: bound). */
  bindStatus: number
  /** deliver_sm PDUs received, in order. */
  delivered: PDU[]
  /** Status to answer the next deliver_sm PDUs with (0 by default). */
  answerDeliverWith: number
  submit (fields: Record<string, unknown>): Promise<PDU>
  /** Any request by its command name (submit_multi, query_sm…), resolved with its response. */
  request (command: string, fields: Record<string, unknown>): Promise<PDU>
  /** Sends raw bytes (a broken PDU). */
  writeRaw (bytes: Buffer): void
  /** Any PDU received (responses included), for generic_nack checks. */
  received: PDU[]
  unbind (): Promise<void>
  close (): void
}

/** `tls`: SMPP over TLS (the gateway's SMPP_TLS_PORT; the tests' certificate is self-signed, so not verified). */
export async function bindEsme (port: number, systemId: string, password: string, mode: 'transceiver' | 'transmitter' | 'receiver' = 'transceiver', tls = false): Promise<Esme> {
  const session = smpp.connect({ host: '127.0.0.1', port, ...(tls ? { tls: true, rejectUnauthorized: false } : {}) })
  session.on('error', () => {})
  await new Promise<void>((resolve, reject) => { session.once(tls ? 'secureConnect' : 'connect', resolve); session.once('error', reject) })
  const esme: Esme = {
    bindStatus: -1,
    delivered: [],
    received: [],
    answerDeliverWith: 0,
    submit: (fields) => esme.request('submit_sm', fields),
    request: (command, fields) => new Promise<PDU>((resolve, reject) => {
      const sent = session[command](fields, (pdu: PDU) => { resolve(pdu) })
      if (sent === false) reject(new Error('the ESME session is not writable'))
    }),
    writeRaw: (bytes) => { session.socket.write(bytes) },
    unbind: () => new Promise<void>(resolve => { session.unbind(() => { session.close(); resolve() }) }),
    close: () => { session.destroy() }
  }
  session.on('pdu', (pdu: PDU) => { esme.received.push(pdu) })
  session.on('deliver_sm', (pdu: PDU) => {
    esme.delivered.push(pdu)
    session.send(pdu.response({ command_status: esme.answerDeliverWith }))
  })
  esme.bindStatus = await new Promise<number>(resolve => {
    session['bind_' + mode]({ system_id: systemId, password }, (pdu: PDU) => { resolve(pdu.command_status) })
  })
  return esme
}
