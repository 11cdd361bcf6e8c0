// `iys-gateway load`: a full rebuild of the derived index, Postgres → a new filter version in Redis → flip. The work
// is in src/filter/build.ts, which gateways also run when Redis lost the index (AUTO_REBUILD); this is the command's
// face: progress on the terminal, and it waits for a rebuild another process is running before it starts its own.

import { buildFilter, type LoadOptions as BuildOptions, type LoadResult } from '../src/filter/build.js'
import { Progress } from './progress.js'

export type { LoadResult }

export interface LoadOptions extends Omit<BuildOptions, 'progress' | 'lock' | 'stillNeeded'> {
  /** false: no progress lines (tests). Default: progress on stderr. */
  progress?: boolean
}

export async function loadFilter (opts: LoadOptions): Promise<LoadResult> {
  const { progress, ...rest } = opts
  const r = await buildFilter({ ...rest, lock: 'wait', progress: progress === false ? undefined : v => started(new Progress({ label: `load v${v}` })) })
  return r! // with lock 'wait' and no stillNeeded, a build always runs
}

/** The first phase is named here, so that the line ticks (elapsed time) from the start, before the rows flow. */
function started (p: Progress): Progress {
  p.setPhase('copying consents from Postgres')
  return p
}
