// Duplicate detection for scrub jobs of tens of millions of lines: an open-addressing hash table of the 64-bit hash
// of each normalised recipient and the line of its first occurrence, in typed arrays (12 bytes a slot, no object per
// entry). Two different recipients with the same 64-bit hash (about 1 in 10^6 for 10M lines) would make the later
// one reported as a duplicate, i.e. not sent: the error can only fail safe.

export class FirstSeen {
  private h1: Uint32Array
  private h2: Uint32Array
  private line: Float64Array // 0 = empty; lines are 1-based
  private mask: number
  private size = 0

  constructor (expected: number) {
    let cap = 1024
    while (cap < expected * 1.5) cap *= 2
    this.h1 = new Uint32Array(cap)
    this.h2 = new Uint32Array(cap)
    this.line = new Float64Array(cap)
    this.mask = cap - 1
  }

  /** Returns the first line this hash was seen on, or 0 after recording `line` as its first occurrence. */
  firstLine (a: number, b: number, line: number): number {
    if (this.size * 4 >= this.line.length * 3) this.grow()
    let i = (a ^ Math.imul(b, 0x9e3779b1)) & this.mask
    while (true) {
      const l = this.line[i]!
      if (l === 0) {
        this.h1[i] = a; this.h2[i] = b; this.line[i] = line
        this.size++
        return 0
      }
      if (this.h1[i] === a && this.h2[i] === b) return l
      i = (i + 1) & this.mask
    }
  }

  private grow (): void {
    const { h1, h2, line } = this
    const cap = line.length * 2
    this.h1 = new Uint32Array(cap); this.h2 = new Uint32Array(cap); this.line = new Float64Array(cap)
    this.mask = cap - 1
    this.size = 0
    for (let i = 0; i < line.length; i++) if (line[i] !== 0) this.firstLine(h1[i]!, h2[i]!, line[i]!)
  }
}
