// Types for the part of node-smpp (`smpp` 0.5.1, no published types) the gateway uses: its PDU codec and its
// tables. Sessions are our own (smpp-session.ts): the package's session stops reading after one malformed PDU.
declare module 'smpp' {
  /** A decoded PDU: header fields, the command's mandatory fields and its TLVs as properties. */
  export class PDU {
    constructor (command: string, fields?: Record<string, unknown>)
    /** Decodes one whole PDU (throws on a malformed body). */
    constructor (buffer: Buffer)
    command: string
    command_id: number
    command_status: number
    command_length: number
    sequence_number: number
    [field: string]: any
    isResponse (): boolean
    /** The response PDU to this request (generic_nack for an unknown command). */
    response (fields?: Record<string, unknown>): PDU
    toBuffer (): Buffer
    static maxLength: number
  }
  export const commands: Record<string, { id: number, params?: Record<string, unknown> }>
  export const commandsById: Record<number, { command: string }>
  export const errors: Record<string, number>
  export const consts: Record<string, any>
  export const encodings: Record<string, any>
  export function addTLV (tag: string, options: { id: number, type: unknown, multiple?: boolean }): void
  export const types: { tlv: Record<string, unknown>, [k: string]: any }
  /**
   * The module object. Node's ESM loader finds only some of this CommonJS module's exports by name (PDU, not the
   * tables it copies in a loop): import the default and read `errors`, `commands`… from it.
   */
  const smpp: { PDU: typeof PDU, commands: typeof commands, commandsById: typeof commandsById, errors: typeof errors, consts: typeof consts, encodings: typeof encodings, types: typeof types, addTLV: typeof addTLV }
  export default smpp
}
