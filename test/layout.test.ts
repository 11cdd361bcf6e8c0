// The folders show the architecture only while no import reaches past them: src/ (the server and its layers) never
// imports loaders/ (the offline programs) except from the CLI's command table, src/cli.ts, and no folder depends on
// itself through others. Read from the sources; type-only imports count too (a type names a dependency all the same).
// The build mirrors the tree (src/ → dist/src/, loaders/ → dist/loaders/): the last part runs the paths dist/ computes.

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const ROOT = new URL('../', import.meta.url)
const TREES = ['src', 'loaders']
const COMMAND_TABLE = 'src/cli.ts'

interface Import { from: string, to: string }

/** Project-relative paths ('src/http/app.ts') of the TypeScript files under `tree`. */
function sourceFiles (tree: string): string[] {
  return readdirSync(new URL(`${tree}/`, ROOT), { recursive: true, encoding: 'utf8' })
    .filter(f => f.endsWith('.ts'))
    .map(f => posix.join(tree, f.split('\\').join('/')))
}

// from '…' (import, import type, export … from), a bare import '…' and import('…'); comment lines are skipped.
const SPECIFIER = /(?:\bfrom\s*|^\s*import\s+|\bimport\s*\(\s*)['"]([^'"\n]+)['"]/gm

/** The relative imports of one file, resolved to the project-relative .ts file they name. */
function importsOf (file: string): Import[] {
  const text = readFileSync(new URL(file, ROOT), 'utf8').replace(/^\s*(?:\/\/|\/?\*).*$/gm, '') // comment lines
  const out: Import[] = []
  for (const m of text.matchAll(SPECIFIER)) {
    const spec = m[1]!
    if (!spec.startsWith('.')) continue // packages and node: built-ins
    out.push({ from: file, to: posix.normalize(posix.join(posix.dirname(file), spec)).replace(/\.js$/, '.ts') })
  }
  return out
}

/**
 * The folder a file belongs to, as a node of the dependency graph: its directory, except that the files directly in
 * src/ (config.ts, server.ts, …) are each a node of their own, src/ being the root of the layers and not a layer.
 */
function folderOf (file: string): string {
  const dir = posix.dirname(file)
  return dir === 'src' ? file : dir
}

/** One circle in a directed graph as [a, b, …, a], or null when there is none. */
function findCircle (graph: ReadonlyMap<string, ReadonlySet<string>>): string[] | null {
  const done = new Set<string>()
  const path: string[] = []
  const onPath = new Set<string>()
  const visit = (node: string): string[] | null => {
    if (onPath.has(node)) return [...path.slice(path.indexOf(node)), node]
    if (done.has(node)) return null
    path.push(node)
    onPath.add(node)
    for (const next of [...(graph.get(node) ?? [])].sort()) {
      const circle = visit(next)
      if (circle !== null) return circle
    }
    path.pop()
    onPath.delete(node)
    done.add(node)
    return null
  }
  for (const node of [...graph.keys()].sort()) {
    const circle = visit(node)
    if (circle !== null) return circle
  }
  return null
}

const FILES = TREES.flatMap(sourceFiles)
const IMPORTS = FILES.flatMap(importsOf)

describe('the import scan', () => {
  it('sees the imports of every file and resolves each to a file that exists', () => {
    expect(FILES).toContain(COMMAND_TABLE)
    expect(IMPORTS.length).toBeGreaterThan(FILES.length)
    expect(IMPORTS.filter(i => !existsSync(new URL(i.to, ROOT))).map(i => `${i.from} → ${i.to}`)).toEqual([])
    expect(IMPORTS.filter(i => i.from === COMMAND_TABLE && i.to.startsWith('loaders/')).length).toBeGreaterThan(0)
  })

  it('finds a circle when there is one, and none in a graph without', () => {
    const graph = (edges: string[]): Map<string, Set<string>> => {
      const g = new Map<string, Set<string>>()
      for (const e of edges) { const [a, b] = e.split('>') as [string, string]; g.set(a, (g.get(a) ?? new Set<string>()).add(b)) }
      return g
    }
    expect(findCircle(graph(['a>b', 'b>c', 'c>d', 'd>b']))).toEqual(['b', 'c', 'd', 'b'])
    expect(findCircle(graph(['a>b', 'a>c', 'b>d', 'c>d']))).toBeNull()
  })
})

describe('the folders', () => {
  it('keep src/ from importing loaders/, except the CLI\'s command table', () => {
    const upward = IMPORTS.filter(i => i.from.startsWith('src/') && i.from !== COMMAND_TABLE && i.to.startsWith('loaders/'))
    expect(upward.map(i => `${i.from} → ${i.to}`)).toEqual([])
  })

  it('have no import circle between them', () => {
    const graph = new Map<string, Set<string>>()
    for (const { from, to } of IMPORTS) {
      const [a, b] = [folderOf(from), folderOf(to)]
      if (a !== b) graph.set(a, (graph.get(a) ?? new Set<string>()).add(b))
    }
    expect(graph.size).toBeGreaterThan(10)
    expect(findCircle(graph)?.join(' → ') ?? null).toBeNull()
  })
})

describe('the build (dist/ mirrors the source tree)', () => {
  it('starts the CLI through the path bin/iys-gateway.js imports', () => {
    const spec = /from '([^']+)'/.exec(readFileSync(new URL('bin/iys-gateway.js', ROOT), 'utf8'))![1]!
    expect(spec).toBe('../dist/src/cli.js')
    expect(existsSync(new URL(spec, new URL('bin/', ROOT)))).toBe(true)
  })

  it('finds the default seed and the Lua scripts from dist/ as from src/', async () => {
    const built = (path: string): string => new URL(`dist/${path}`, ROOT).href
    const config = await import(built('src/config.js')) as typeof import('../src/config.js')
    expect(config.loadConfig({}).embeddedSeedFile).toBe(fileURLToPath(new URL('data/sample-consents.csv', ROOT)))
    // scripts.js reads every .lua file as it loads: a wrong directory fails the import.
    await expect(import(built('src/filter/scripts.js'))).resolves.toHaveProperty('withScripts')
    expect(existsSync(new URL('dist/src/scrub/worker.js', ROOT))).toBe(true)
  })
})
