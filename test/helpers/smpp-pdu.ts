// SMPP PDUs for tests: node-smpp's encoding of a PDU with raw TLVs ([tag, value octets]) appended, the length fixed.

import { createRequire } from 'node:module'

const smpp = createRequire(import.meta.url)('smpp') as { PDU: new (command: string, fields: Record<string, unknown>) => { toBuffer (): Buffer } }

export type RawTlv = [number, number[] | string]

/** `command` with `fields` as node-smpp encodes it, then `tlvs` as given (a string is latin1 octets). */
export function encodeWithTlvs (command: string, fields: Record<string, unknown>, tlvs: readonly RawTlv[] = []): Buffer {
  const parts = tlvs.map(([tag, v]) => {
    const value = typeof v === 'string' ? Buffer.from(v, 'latin1') : Buffer.from(v)
    const head = Buffer.alloc(4)
    head.writeUInt16BE(tag, 0)
    head.writeUInt16BE(value.length, 2)
    return Buffer.concat([head, value])
  })
  return withLength(Buffer.concat([new smpp.PDU(command, fields).toBuffer(), ...parts]))
}

/** `b` with its command_length set to its size. */
export const withLength = (b: Buffer): Buffer => { b.writeUInt32BE(b.length, 0); return b }
