// node-smpp's GSM 03.38 coder, made to look its tables up once (imported for its effect by the front end, server.ts).
//
// gsmCoder.getCoder() builds a coder's tables on first use, but asks whether they are built with
// Object.keys(table).length on every call, i.e. lists the 128 keys of a table for every text it decodes: 6 % of the
// front end's CPU at 16,000 submit_sm/s (bench smpp profile, 2026-12-08). The coder an encoding gets never changes
// once built, so it is kept here after the first call; the package's own code builds it as before.

import smpp from 'smpp'

interface GsmCoder { getCoder: (encoding?: number) => object, __iysOnce?: true }

const gsm = (smpp as unknown as { gsmCoder: GsmCoder }).gsmCoder
if (gsm.__iysOnce !== true) {
  const build = gsm.getCoder
  // getCoder's own choice: 1, 2, 3 are the Turkish, Spanish and Portuguese shift tables, anything else the default.
  const built: (object | undefined)[] = [undefined, undefined, undefined, undefined]
  gsm.getCoder = function (this: GsmCoder, encoding?: number): object {
    const i = encoding === 1 || encoding === 2 || encoding === 3 ? encoding : 0
    return built[i] ?? (built[i] = build.call(this, encoding))
  }
  gsm.__iysOnce = true
}
