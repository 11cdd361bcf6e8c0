// The embedded default: the same bloom filter, key format, state encoding and check path as production, over an
// in-process map instead of Redis. It is what `npm start` serves on a bare machine, seeded from a consent file.

import { sourceToIndex } from '../domain/vocabulary.js'
import { readConsentFile } from '../formats/consent-file.js'
import { BloomFilter } from './bloom.js'
import { hashText, keyCode, keyHash, keyText } from './key.js'
import { GROWTH_HEADROOM } from './layout.js'
import { encodeState } from './state.js'
import { MemoryView } from './view.js'

export interface EmbeddedSeed {
  view: MemoryView
  rows: number
  rejects: number
}

export async function buildEmbeddedView (seedFile: string, fpr: number, nowSeconds = Date.now() / 1000): Promise<EmbeddedSeed> {
  // Latest consentDate wins per key, on a tie the later line: the state `import` (İYS rules) ends in, except that
  // of two rows equal in date and status `import` keeps the first row's source (the second is a duplicate, H174).
  const latest = new Map<string, { date: number, value: string }>()
  let rows = 0
  let rejects = 0
  let seq = 0
  for await (const batch of readConsentFile(seedFile, nowSeconds)) {
    rejects += batch.rejects.length
    for (const c of batch.consents) {
      rows++
      const key = keyText(c.brandCode, keyCode(c.type, c.recipientType), c.recipient)
      const prev = latest.get(key)
      if (prev !== undefined && prev.date > c.consentDate) continue
      latest.set(key, { date: c.consentDate, value: encodeState(c.status, sourceToIndex(c.source), c.consentDate, ++seq) })
    }
  }
  const bloom = BloomFilter.forCapacity(Math.max(1000, latest.size * GROWTH_HEADROOM), fpr)
  const states = new Map<string, string>()
  for (const [key, { value }] of latest) {
    hashText(key)
    bloom.add(keyHash[0]!, keyHash[1]!)
    states.set(key, value)
  }
  return { view: new MemoryView(1, bloom, states), rows, rejects }
}
