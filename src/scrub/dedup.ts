// Duplicate detection for scrub jobs of tens of millions of lines: an open-addressing hash table of the 64-bit hash
// of each normalised recipient and the line of its first occurrence, in typed arrays (12 bytes a slot, no object per
// entry; sized to the expected lines at a load of 3/4, so about 16 bytes a line: 160 MB for 10M lines). Two different recipients with the same 64-bit hash (about 1 in 10^6 for 10M lines) would make the later
// one reported as a duplicate, i.e. not sent: the error can only fail safe.

export class FirstSeen {
  private h1: Uint32Array
  private h2: Uint32Array
  private line: Uint32Array // 0 = empty; lines are 1-based
  private cap: number
  private size = 0

  constructor (expected: number) {
    this.cap = Math.max(1024, Math.ceil(expected * 4 / 3))
    this.h1 = new Uint32Array(this.cap)
    this.h2 = new Uint32Array(this.cap)
    this.line = new Uint32Array(this.cap)
  }

  /** Returns the first line this hash was seen on, or 0 after recording `line` as its first occurrence. */
  firstLine (a: number, b: number, line: number): number {
    if (this.size * 4 >= this.cap * 3) this.grow()
    // multiply-shift to [0, cap): any capacity, no modulo
    let i = Math.floor(((a ^ Math.imul(b, 0x9e3779b1)) >>> 0) * this.cap / 4294967296)
    while (true) {
      const l = this.line[i]!
      if (l === 0) {
        this.h1[i] = a; this.h2[i] = b; this.line[i] = line
        this.size++
        return 0
      }
      if (this.h1[i] === a && this.h2[i] === b) return l
      if (++i === this.cap) i = 0
    }
  }

  private grow (): void {
    const { h1, h2, line } = this
    this.cap *= 2
    this.h1 = new Uint32Array(this.cap); this.h2 = new Uint32Array(this.cap); this.line = new Uint32Array(this.cap)
    this.size = 0
    for (let i = 0; i < line.length; i++) if (line[i] !== 0) this.firstLine(h1[i]!, h2[i]!, line[i]!)
  }
}
