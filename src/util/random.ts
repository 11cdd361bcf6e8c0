// The one seeded PRNG of the tree: the generator's rows, the fake carrier's failure draws, the tests' and the
// benchmarks' inputs all come from it, so a seed names the same stream everywhere.

/** Small, fast, good-enough 32-bit PRNG (Tommy Ettinger's mulberry32). Returns floats in [0, 1). */
export function mulberry32 (seed: number): () => number {
  let s = seed | 0
  return () => {
    s = (s + 0x6d2b79f5) | 0
    let t = Math.imul(s ^ (s >>> 15), 1 | s)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
