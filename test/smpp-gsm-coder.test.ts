// node-smpp's GSM coder as the front end runs it (src/smpp/gsm-coder.ts): tables looked up once, texts decoded and
// encoded as before, the national shift tables included.

import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import '../src/smpp/gsm-coder.js'

const require = createRequire(import.meta.url)
const smpp = require('smpp')
const gsm = smpp.gsmCoder

describe('the GSM coder with its tables looked up once', () => {
  it('does not list a table\'s keys again once it is built', () => {
    for (const e of [0, 1, 2, 3]) gsm.getCoder(e) // built
    let listed = 0
    const coder = gsm.getCoder(0)
    const table = coder.charListEnc
    coder.charListEnc = new Proxy(table, { ownKeys: t => { listed++; return Reflect.ownKeys(t) } })
    try {
      for (let i = 0; i < 100; i++) gsm.decode(Buffer.from([0x48, 0x69]), 0)
      expect(listed).toBe(0)
    } finally {
      coder.charListEnc = table
    }
  })

  it('gives each encoding the coder node-smpp would: default, Turkish, Spanish, Portuguese', () => {
    expect(gsm.getCoder(0)).toBe(gsm.GSM)
    expect(gsm.getCoder(undefined)).toBe(gsm.GSM)
    expect(gsm.getCoder(0x24)).toBe(gsm.GSM)
    expect(gsm.getCoder(1)).toBe(gsm.GSM_TR)
    expect(gsm.getCoder(2)).toBe(gsm.GSM_ES)
    expect(gsm.getCoder(3)).toBe(gsm.GSM_PT)
  })

  it('decodes and encodes texts as before, escapes and shift tables included', () => {
    // '@' 0x00, '£' 0x01, '{' ESC 0x28, '€' ESC 0x65
    expect(gsm.decode(Buffer.from([0x00, 0x01, 0x1b, 0x28, 0x1b, 0x65, 0x41]), 0)).toBe('@£{€A')
    expect(gsm.encode('@£{€A', 0)).toEqual(Buffer.from([0x00, 0x01, 0x1b, 0x28, 0x1b, 0x65, 0x41]))
    // Turkish locking shift: 0x0b is 'Ğ', 0x0c 'ğ' (3GPP TS 23.038, A.3.1)
    expect(gsm.decode(Buffer.from([0x0b, 0x0c]), 1)).toBe(gsm.GSM_TR.chars[0x0b] + gsm.GSM_TR.chars[0x0c])
    expect(gsm.GSM_TR.chars[0x0b]).toBe('Ğ')
    const tr = 'Çok güzel şeyler, İptal için RET'
    expect(gsm.decode(gsm.encode(tr, 1), 1)).toBe(tr)
    // a whole submit_sm through node-smpp's PDU codec
    const pdu = new smpp.PDU('submit_sm', { destination_addr: '905321110001', short_message: 'Kampanya {50%} €' })
    expect(new smpp.PDU(pdu.toBuffer()).short_message.message).toBe('Kampanya {50%} €')
  })
})
