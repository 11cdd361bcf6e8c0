// A binary min-heap of items by due time, then by `seq` (equal times leave in the order they came): the spool's index
// of pending copies (spool.ts), so that finding the copies due costs O(log N) each rather than a walk over all N.

export interface Due {
  /** epoch milliseconds */
  at: number
  /** increasing with every push */
  seq: number
}

const before = (a: Due, b: Due): boolean => a.at < b.at || (a.at === b.at && a.seq < b.seq)

export class DueHeap<T extends Due> {
  private readonly items: T[] = []

  get size (): number { return this.items.length }

  peek (): T | undefined { return this.items[0] }

  push (item: T): void {
    const a = this.items
    let i = a.length
    a.push(item)
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(item, a[parent]!)) break
      a[i] = a[parent]!
      i = parent
    }
    a[i] = item
  }

  pop (): T | undefined {
    const a = this.items
    const top = a[0]
    const last = a.pop()
    if (a.length === 0 || last === undefined) return top
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= a.length) break
      const c = l + 1 < a.length && before(a[l + 1]!, a[l]!) ? l + 1 : l
      if (!before(a[c]!, last)) break
      a[i] = a[c]!
      i = c
    }
    a[i] = last
    return top
  }
}
