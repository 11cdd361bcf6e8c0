// Files the running code needs from the checkout (the sample seed, the Lua scripts, the compiled scrub worker),
// found the same way whether this module runs from src/ (under the test runner) or from dist/src/ (tsc mirrors the
// tree there): through the project root.

const here = import.meta.url
/** The project's root folder, as a URL ending in '/'. */
export const PROJECT_ROOT = new URL(here.endsWith('.ts') ? '../../' : '../../../', here)

/** A path inside the project, relative to its root. */
export const projectUrl = (relative: string): URL => new URL(relative, PROJECT_ROOT)
