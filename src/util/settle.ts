// Bounded waits for shutdown paths: closing must not hang on a peer (Postgres, a carrier) that never answers.

/** Waits for `p` at most `ms`; true when it settled (resolved or rejected) in time. */
export async function settlesWithin (p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>(resolve => { timer = setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([p.then(() => true, () => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}
