// The operations files (Dockerfile, docker-compose.yml, prometheus/, grafana/) cannot be run here (no Docker engine
// in CI), so they are held to the code by reading them: every environment variable the compose file
// gives the gateway is one src/config.ts accepts (and the whole environment loads), every service a command or the
// README names exists, every metric and label value the alerts and the dashboard use is one src/metrics.ts exports,
// and the image's entry point is the real CLI. The real promtool checks the PromQL and the alerts' unit tests
// (prometheus/alerts.test.yml), and the exported metrics, in test/ops-metrics.test.ts.
//
// The YAML files are read with the `yaml` package under its failsafe schema: every scalar is a string (`8080`,
// `true`, `no` and `~` stay as written), which is how compose and Prometheus values are compared below.

import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { KNOWN_VARIABLES, loadConfig } from '../src/config.js'
import { CONSENT_TYPES } from '../src/domain/vocabulary.js'
import { Metrics, READY_REASONS, ROUTES } from '../src/metrics.js'
import { REASONS } from '../src/policy/decide.js'
import { OUTCOME_STATUSES } from '../src/carriers/upstream.js'

const ROOT = new URL('../', import.meta.url)
const read = (path: string): string => readFileSync(new URL(path, ROOT), 'utf8')
const exists = (path: string): boolean => existsSync(new URL(path.replace(/^\.\//, ''), ROOT))

// ---- reading YAML --------------------------------------------------------------------------------------------

/** A parsed document: failsafe YAML has only strings, lists and mappings (null for an empty document). */
type Yaml = string | null | Yaml[] | { [key: string]: Yaml }
type YamlMap = { [key: string]: Yaml }

const parseYaml = (text: string): Yaml => parse(text, { schema: 'failsafe' }) as Yaml

const asMap = (v: Yaml | undefined, what: string): YamlMap => {
  if (v === null || v === undefined || typeof v === 'string' || Array.isArray(v)) throw new Error(`${what} is not a mapping`)
  return v
}
const asList = (v: Yaml | undefined, what: string): Yaml[] => {
  if (!Array.isArray(v)) throw new Error(`${what} is not a list`)
  return v
}
const asString = (v: Yaml | undefined, what: string): string => {
  if (typeof v !== 'string') throw new Error(`${what} is not a string`)
  return v
}

/** Compose's interpolation with an empty shell environment: ${X:-default} and ${X-default} give the default. */
function interpolate (text: string): string {
  return text.replace(/\$\$|\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}/g, (all, _name: string | undefined, def: string | undefined) => {
    if (all === '$$') return '$'
    if (def === undefined) throw new Error(`${all} has no default: docker compose up would need it set`)
    return def
  })
}

describe('reading YAML with the failsafe schema', () => {
  it('reads the block style the ops files use, every scalar as a string', () => {
    const doc = parseYaml([
      '# comment',
      'a: 1 # trailing comment',
      'b:',
      '  c: "x # not a comment"',
      '  d: [ "CMD", "node", "-e", "x, y" ]',
      '  e:',
      '    - one',
      '    - k: v',
      '      l: w',
      '  f: >-',
      '    folded',
      '    text',
      "g: 'it''s'",
      'h: { k: v, m: "n" }',
      'i:',
      '- at the same indent'
    ].join('\n'))
    expect(doc).toEqual({
      a: '1',
      b: { c: 'x # not a comment', d: ['CMD', 'node', '-e', 'x, y'], e: ['one', { k: 'v', l: 'w' }], f: 'folded text' },
      g: "it's",
      h: { k: 'v', m: 'n' },
      i: ['at the same indent']
    })
  })

  it('refuses what it cannot read instead of guessing', () => {
    expect(() => parseYaml('a: 1\n   b: 2\n')).toThrow()
    expect(() => parseYaml('a: 1\na: 2\n')).toThrow(/keys must be unique/) // yaml's words for a duplicate key
  })
})

// ---- the files -----------------------------------------------------------------------------------------------

const CLI = read('src/cli.ts')
const CLI_COMMANDS = new Set([...CLI.matchAll(/case '([a-z][a-z-]*)'/g)].map(m => m[1]!).filter(c => c !== 'help'))

const compose = asMap(parseYaml(read('docker-compose.yml')), 'docker-compose.yml')
const services = asMap(compose.services, 'services')
const serviceNames = Object.keys(services)
const service = (name: string): YamlMap => asMap(services[name], `service ${name}`)
const builtFromDockerfile = serviceNames.filter(n => service(n).build !== undefined)

function environment (name: string): Record<string, string> {
  const env = service(name).environment
  if (env === undefined) return {}
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map(e => { const s = asString(e, 'environment entry'); const k = s.indexOf('='); return [s.slice(0, k), interpolate(s.slice(k + 1))] }))
  }
  return Object.fromEntries(Object.entries(asMap(env, `${name}.environment`)).map(([k, v]) => [k, interpolate(v === null ? '' : asString(v, k))]))
}
const command = (name: string): string[] => {
  const c = service(name).command
  return c === undefined ? [] : Array.isArray(c) ? c.map(x => asString(x, 'command')) : asString(c, 'command').split(/\s+/)
}
const mounts = (name: string): Array<{ source: string, target: string }> =>
  (service(name).volumes === undefined ? [] : asList(service(name).volumes, `${name}.volumes`)).map(v => {
    const [source, target] = asString(v, 'volume').split(':')
    return { source: source!, target: target! }
  })

/** Services named by `docker compose <subcommand> ...` lines in a text (the README, the compose file's notes). */
function servicesMentioned (text: string): Array<{ line: string, service: string, command?: string }> {
  const out: Array<{ line: string, service: string, command?: string }> = []
  for (const m of text.matchAll(/docker compose ((?:run|exec|logs|up|restart|stop|start|ps|cp|rm|pull|build)\b[^\n`|;#]*)/g)) {
    const [sub, ...args] = m[1]!.trim().split(/\s+/)
    const positional = args.filter(a => !a.startsWith('-') && !/^[A-Z_]+=/.test(a))
    if (sub === 'cp') {
      for (const a of positional) { const s = /^([a-z0-9._-]+):\//.exec(a); if (s !== null) out.push({ line: m[0], service: s[1]! }) }
    } else if (sub === 'run' || sub === 'exec') {
      const [svc, cmd] = positional
      if (svc !== undefined && !svc.startsWith('<')) out.push({ line: m[0], service: svc, ...(cmd !== undefined && !cmd.startsWith('<') ? { command: cmd } : {}) })
    } else {
      for (const a of positional) if (/^[a-z0-9._-]+$/.test(a)) out.push({ line: m[0], service: a })
    }
  }
  return out
}

// prom-client default metrics are collected on scrape: a fresh registry lists them all.
const metrics = new Metrics()
const registered = await metrics.registry.getMetricsAsJSON()
const METRIC_TYPES = new Map(registered.map(m => [m.name, String(m.type)]))
const METRIC_NAMES = new Set<string>()
for (const m of registered) {
  METRIC_NAMES.add(m.name)
  if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) METRIC_NAMES.add(m.name + s)
  if (String(m.type) === 'summary') for (const s of ['_sum', '_count']) METRIC_NAMES.add(m.name + s)
}
const labelNamesOf = (name: string): string[] => {
  const base = name.replace(/_(bucket|sum|count)$/, '')
  const metric = metrics.registry.getSingleMetric(METRIC_TYPES.has(name) ? name : base)
  const names = (metric as unknown as { labelNames?: string[] } | undefined)?.labelNames ?? []
  return name.endsWith('_bucket') ? [...names, 'le'] : names
}
/** Label values that are a closed set in the code; a typo there would silently match nothing. */
const LABEL_VALUES: Record<string, readonly string[]> = {
  route: ROUTES,
  reason: REASONS,
  type: CONSENT_TYPES,
  upstream: CONSENT_TYPES
}

const OPS_TEXT_FILES = [
  'prometheus/prometheus.yml',
  'prometheus/alerts.yml',
  'prometheus/alerts.test.yml',
  ...readdirSync(new URL('grafana/dashboards/', ROOT)).filter(f => f.endsWith('.json')).map(f => `grafana/dashboards/${f}`)
]

// ---- Dockerfile ----------------------------------------------------------------------------------------------

describe('Dockerfile', () => {
  const instructions = read('Dockerfile').replace(/\\\n/g, ' ').split('\n')
    .map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
    .map(l => { const m = /^(\w+)\s+(.*)$/.exec(l)!; return { op: m[1]!.toUpperCase(), args: m[2]! } })
  const stages: Array<typeof instructions> = []
  for (const ins of instructions) {
    if (ins.op === 'FROM') stages.push([])
    stages[stages.length - 1]!.push(ins)
  }
  const runtime = stages[stages.length - 1]!
  const last = (op: string): string | undefined => runtime.filter(i => i.op === op).at(-1)?.args
  const dockerignore = read('.dockerignore').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
  const ignored = (path: string): boolean => dockerignore.some(p => path === p || path.startsWith(p + '/'))

  it('builds in one stage and runs from a second, both on node:20-bookworm-slim', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2)
    for (const s of stages) expect(s[0]!.args).toMatch(/^node:20-bookworm-slim\b/)
    expect(stages[0]!.some(i => i.op === 'RUN' && /npm run build/.test(i.args))).toBe(true)
  })

  it('runs bin/iys-gateway.js serve, which exists and loads the compiled dist/ copied from the build stage', () => {
    expect(JSON.parse(last('ENTRYPOINT')!)).toEqual(['node', 'bin/iys-gateway.js'])
    expect(JSON.parse(last('CMD')!)).toEqual(['serve'])
    expect(exists('bin/iys-gateway.js')).toBe(true)
    expect(read('bin/iys-gateway.js')).toContain('../dist/src/cli.js')
    expect(runtime.some(i => i.op === 'COPY' && /--from=\S+\s+\S*\/dist\s+\.?\/?dist/.test(i.args))).toBe(true)
    expect(CLI_COMMANDS.has('serve')).toBe(true)
  })

  it('copies every folder tsconfig.json compiles into the build stage', () => {
    const tsconfig = JSON.parse(read('tsconfig.json')) as { include: string[] }
    const folders = tsconfig.include.map(glob => glob.split('/')[0]!)
    expect(folders).toEqual(expect.arrayContaining(['src', 'loaders']))
    const copied = stages[0]!.filter(i => i.op === 'COPY').map(i => i.args.replace(/--\S+/g, '').trim().split(/\s+/)[0]!.replace(/^\.\//, '').replace(/\/$/, ''))
    for (const folder of folders) expect(copied, folder).toContain(folder)
  })

  it('installs production dependencies only, without the tsc `prepare` script (typescript is a devDependency)', () => {
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string>, devDependencies: Record<string, string>, dependencies: Record<string, string> }
    const install = runtime.find(i => i.op === 'RUN' && /npm ci/.test(i.args))!.args
    expect(install).toMatch(/--omit=dev/)
    if (/\btsc\b/.test(pkg.scripts.prepare ?? '')) {
      expect(pkg.devDependencies.typescript).toBeDefined()
      expect(install).toMatch(/--ignore-scripts/)
    }
  })

  it('runs as a non-root user, listens on all interfaces and checks /healthz without curl', () => {
    const user = last('USER')
    expect(user).toBeDefined()
    expect(user).not.toMatch(/^(root|0)(:|$)/)
    expect(runtime.filter(i => i.op === 'ENV').map(i => i.args).join(' ')).toMatch(/\bHOST=0\.0\.0\.0\b/)
    const health = last('HEALTHCHECK')!
    expect(health).toContain('/healthz')
    expect(health).toMatch(/"node"/)
    expect(health).not.toMatch(/curl|wget/)
  })

  it('copies only files that exist and that .dockerignore lets into the build context', () => {
    for (const s of stages) {
      for (const ins of s.filter(i => i.op === 'COPY' && !i.args.includes('--from='))) {
        const parts = ins.args.replace(/--\S+/g, '').trim().split(/\s+/)
        for (const src of parts.slice(0, -1)) {
          expect(exists(src), `COPY ${src}`).toBe(true)
          expect(ignored(src.replace(/^\.\//, '').replace(/\/$/, '')), `COPY ${src} is excluded by .dockerignore`).toBe(false)
        }
      }
    }
    for (const heavy of ['node_modules', 'dist', '.git', 'bench']) expect(ignored(heavy), heavy).toBe(true)
  })
})

// ---- docker-compose.yml ----------------------------------------------------------------------------------------

describe('docker-compose.yml', () => {
  it('brings up Postgres 15, Redis 7, migrate, load, the gateway, the fake carrier, Prometheus and Grafana', () => {
    expect(serviceNames).toEqual(expect.arrayContaining(['postgres', 'redis', 'migrate', 'load', 'gateway', 'fake-carrier', 'prometheus', 'grafana']))
    expect(asString(service('postgres').image, 'postgres.image')).toMatch(/^postgres:15\b/)
    expect(asString(service('redis').image, 'redis.image')).toMatch(/^redis:7\b/)
    expect(command('redis')).toEqual(expect.arrayContaining(['--appendonly', 'no', '--save']))
  })

  it('gives the gateway image only environment variables src/config.ts knows, and a configuration that loads', () => {
    const standard = new Set(['NODE_ENV', 'NODE_OPTIONS', 'TZ', 'UV_THREADPOOL_SIZE'])
    const known = new Set<string>(KNOWN_VARIABLES)
    for (const name of builtFromDockerfile) {
      const env = environment(name)
      for (const key of Object.keys(env)) expect(known.has(key) || standard.has(key), `${name}: ${key} is not in KNOWN_VARIABLES`).toBe(true)
      expect(() => loadConfig(env), name).not.toThrow()
    }
  })

  it('wires the gateway to the stack: Postgres, Redis, no carrier unless the environment names one, İYS push, volumes for scrub jobs and the spool', () => {
    const env = environment('gateway')
    const config = loadConfig(env)
    expect(command('gateway')).toEqual(['serve'])
    expect(config.host).toBe('0.0.0.0')
    expect(new URL(config.databaseUrl!).hostname).toBe('postgres')
    expect(new URL(config.redisUrl!).hostname).toBe('redis')
    expect(env.REDIS_PREFIX).toBeDefined()
    for (const type of CONSENT_TYPES) expect(config.upstreams[type], type).toBeNull() // the demo's carrier: below
    expect(config.iysPushUser).not.toBeNull()
    expect(config.iysPushPassword).not.toBeNull()
    const targets = mounts('gateway').map(m => m.target)
    for (const dir of [config.scrub.dir, config.decisions.spoolDir]) {
      expect(targets.some(t => dir === t || dir.startsWith(t + '/')), `${dir} is on a volume`).toBe(true)
    }
    const ports = asList(service('gateway').ports, 'gateway.ports').map(p => asString(p, 'port'))
    expect(ports.some(p => p.endsWith(':' + String(config.port)))).toBe(true)
  })

  it('starts the gateway after healthy Postgres and Redis and a completed migration', () => {
    const deps = asMap(service('gateway').depends_on, 'gateway.depends_on')
    expect(asMap(deps.postgres, 'postgres').condition).toBe('service_healthy')
    expect(asMap(deps.redis, 'redis').condition).toBe('service_healthy')
    expect(asMap(deps.migrate, 'migrate').condition).toBe('service_completed_successfully')
    expect(command('migrate')).toEqual(['migrate'])
    expect(command('load')).toEqual(['load'])
  })

  it('has a health check wherever a dependency waits for one, and overrides the image\'s /healthz check where there is no /healthz', () => {
    const dockerfileHealth = /^\s*HEALTHCHECK\s+(?!NONE)/m.test(read('Dockerfile'))
    const healthChecked = (name: string): boolean => {
      const h = service(name).healthcheck
      if (h === undefined) return builtFromDockerfile.includes(name) && dockerfileHealth
      const m = asMap(h, `${name}.healthcheck`)
      return m.disable !== 'true' && m.test !== undefined
    }
    for (const name of serviceNames) {
      const deps = service(name).depends_on
      if (deps === undefined) continue
      const list = Array.isArray(deps) ? deps.map(d => [asString(d, 'dependency'), 'service_started'] as const)
        : Object.entries(asMap(deps, 'depends_on')).map(([d, v]) => [d, asString(asMap(v, d).condition, 'condition')] as const)
      for (const [dep, condition] of list) {
        expect(serviceNames, `${name} depends on ${dep}`).toContain(dep)
        if (condition === 'service_healthy') expect(healthChecked(dep), `${name} waits for ${dep} to be healthy`).toBe(true)
        if (condition === 'service_completed_successfully') expect(asString(service(dep).restart, `${dep}.restart`)).toBe('no')
      }
    }
    for (const name of builtFromDockerfile) {
      if (command(name)[0] === 'serve') continue
      expect(service(name).healthcheck, `${name} runs ${command(name)[0]}, not the HTTP server`).toBeDefined()
    }
  })

  it('runs only commands the CLI has, and the services its notes name exist', () => {
    for (const name of builtFromDockerfile) expect(CLI_COMMANDS, name).toContain(command(name)[0])
    const notes = read('docker-compose.yml').split('\n').filter(l => l.trimStart().startsWith('#')).join('\n')
    const mentioned = servicesMentioned(notes)
    expect(mentioned.length).toBeGreaterThan(3)
    for (const m of mentioned) {
      expect(serviceNames, m.line).toContain(m.service)
      if (m.command !== undefined && builtFromDockerfile.includes(m.service)) expect(CLI_COMMANDS, m.line).toContain(m.command)
    }
  })

  it('mounts files that exist and declares its named volumes', () => {
    const declared = Object.keys(asMap(compose.volumes, 'volumes'))
    for (const name of serviceNames) {
      for (const { source } of mounts(name)) {
        if (source.startsWith('.') || source.startsWith('/')) expect(exists(source), `${name}: ${source}`).toBe(true)
        else expect(declared, `${name}: volume ${source}`).toContain(source)
      }
    }
  })

  it('points Prometheus at prometheus/ and Grafana at grafana/', () => {
    const prom = mounts('prometheus').find(m => m.source === './prometheus')!
    expect(prom).toBeDefined()
    expect(command('prometheus')).toContain(`--config.file=${prom.target}/prometheus.yml`)
    const provisioning = mounts('grafana').find(m => m.source === './grafana/provisioning')!
    expect(provisioning.target).toBe('/etc/grafana/provisioning')
    const dashboards = mounts('grafana').find(m => m.source === './grafana/dashboards')!
    const provider = asMap(parseYaml(read('grafana/provisioning/dashboards/iys-gateway.yml')), 'dashboard provider')
    const options = asMap(asMap(asList(provider.providers, 'providers')[0], 'provider').options, 'options')
    expect(options.path).toBe(dashboards.target)
    const home = environment('grafana').GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH
    if (home !== undefined) expect(exists(home.replace(dashboards.target, 'grafana/dashboards'))).toBe(true)
  })
})

describe('README', () => {
  it('names only services that docker-compose.yml has', () => {
    for (const m of servicesMentioned(read('README.md'))) {
      expect(serviceNames, m.line).toContain(m.service)
      if (m.command !== undefined && builtFromDockerfile.includes(m.service)) expect(CLI_COMMANDS, m.line).toContain(m.command)
    }
  })

  it('lists every metric the gateway exports and every alert, with what to do, in its Operations section', () => {
    const readme = read('README.md')
    const ops = readme.slice(readme.indexOf('### Operations'), readme.indexOf('### Docker and monitoring'))
    for (const m of registered) {
      if (/^iys_(process|nodejs)_/.test(m.name)) continue // Node's own, listed as a family
      expect(ops, m.name).toContain('`' + m.name + '`')
    }
    const groups = asList(asMap(parseYaml(read('prometheus/alerts.yml')), 'alerts.yml').groups, 'groups')
    for (const r of groups.flatMap(g => asList(asMap(g, 'group').rules, 'rules').map(x => asMap(x, 'rule')))) {
      const name = asString(r.alert, 'alert')
      const row = ops.split('\n').find(l => l.startsWith(`| \`${name}\` |`))
      expect(row, name).toBeDefined()
      expect(row, name).toContain(`| ${asString(asMap(r.labels, 'labels').severity, 'severity')} |`)
    }
  })
})

// ---- Prometheus ----------------------------------------------------------------------------------------------

describe('prometheus/', () => {
  const config = asMap(parseYaml(read('prometheus/prometheus.yml')), 'prometheus.yml')
  const groups = asList(asMap(parseYaml(read('prometheus/alerts.yml')), 'alerts.yml').groups, 'groups')
  const rules = groups.flatMap(g => asList(asMap(g, 'group').rules, 'rules').map(r => asMap(r, 'rule')))

  it('scrapes the gateway service on its port and loads alerts.yml', () => {
    expect(asList(config.rule_files, 'rule_files')).toContain('alerts.yml')
    const job = asList(config.scrape_configs, 'scrape_configs').map(j => asMap(j, 'job')).find(j => j.job_name === 'iys-gateway')!
    expect(job).toBeDefined()
    const targets = asList(job.static_configs, 'static_configs').flatMap(s => asList(asMap(s, 'static_config').targets, 'targets'))
    expect(targets).toContain(`gateway:${loadConfig(environment('gateway')).port}`)
  })

  it('has the alerts an SRE needs, each with for:, a severity and summary/description annotations', () => {
    const names = rules.map(r => asString(r.alert, 'alert'))
    expect(new Set(names).size).toBe(names.length)
    for (const r of rules) {
      const name = asString(r.alert, 'alert')
      expect(name).toMatch(/^Iys[A-Z][A-Za-z0-9]+$/)
      expect(asString(r.for, `${name}.for`)).toMatch(/^\d+[smh]$/)
      expect(['critical', 'warning'], name).toContain(asMap(r.labels, `${name}.labels`).severity)
      const annotations = asMap(r.annotations, `${name}.annotations`)
      expect(asString(annotations.summary, `${name} summary`).length).toBeGreaterThan(10)
      expect(asString(annotations.description, `${name} description`).length).toBeGreaterThan(20)
    }
    const exprs = rules.map(r => asString(r.expr, 'expr').replace(/\s+/g, ' '))
    for (const needle of [
      'up{job="iys-gateway"} == 0',
      'iys_ready == 0',
      'iys_http_request_duration_seconds_bucket{route="check_batch"}',
      'iys_postgres_unreachable == 1',
      'iys_applier_lag_seconds',
      'iys_sync_failing_brands',
      'iys_sync_success_age_seconds',
      'iys_decision_log_spool_oldest_seconds',
      'iys_scrub_queue_oldest_seconds',
      'rate(iys_store_errors_total',
      'iys_http_request_duration_seconds_bucket{route="check"}',
      'status=~"5.."',
      'rate(iys_decision_log_spooled_total',
      'iys_upstream_breaker_open == 1',
      'iys_uws_native == 0',
      'iys_nodejs_eventloop_lag_p99_seconds'
    ]) expect(exprs.some(e => e.includes(needle)), needle).toBe(true)
  })

  it('has a promtool unit test for every alert', () => {
    const tests = read('prometheus/alerts.test.yml')
    expect(tests).toMatch(/rule_files:\s*\n\s*- alerts\.yml/)
    for (const r of rules) expect(tests, asString(r.alert, 'alert')).toContain(`alertname: ${asString(r.alert, 'alert')}`)
  })
})

// ---- Grafana -------------------------------------------------------------------------------------------------

describe('grafana/', () => {
  interface Panel { id: number, type: string, title: string, gridPos: { x: number, y: number, w: number, h: number }, datasource?: { uid: string }, targets?: Array<{ expr: string, refId: string }> }
  const dashboard = JSON.parse(read('grafana/dashboards/iys-gateway.json')) as { uid: string, title: string, panels: Panel[], templating: { list: Array<{ name: string, type: string }> } }

  it('provisions the Prometheus of docker-compose.yml as the data source', () => {
    const ds = asMap(asList(asMap(parseYaml(read('grafana/provisioning/datasources/prometheus.yml')), 'datasources').datasources, 'datasources')[0], 'datasource')
    expect(ds.type).toBe('prometheus')
    const url = new URL(asString(ds.url, 'url'))
    expect(url.href).toBe('http://prometheus:9090/')
    expect(serviceNames).toContain(url.hostname)
  })

  it('is one dashboard "iys-gateway" with unique panel ids, on the datasource variable, laid out without overlaps', () => {
    expect(dashboard.uid).toBe('iys-gateway')
    expect(dashboard.title).toBe('iys-gateway')
    expect(dashboard.templating.list.some(v => v.name === 'datasource' && v.type === 'datasource')).toBe(true)
    const ids = dashboard.panels.map(p => p.id)
    expect(new Set(ids).size).toBe(ids.length)
    const cells = new Set<string>()
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24)
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`).toBe(false)
          cells.add(`${x},${y}`)
        }
      }
      if (p.type === 'row') continue
      expect(p.datasource?.uid, p.title).toBe('${datasource}')
      expect(p.targets?.length, p.title).toBeGreaterThan(0)
      for (const t of p.targets!) expect(t.expr.trim(), `${p.title} ${t.refId}`).not.toBe('')
    }
  })

  it('shows traffic, latency, decisions, bloom, store errors, filter, decision log, carriers, event loop, memory, and the pipeline\'s freshness', () => {
    const text = dashboard.panels.flatMap(p => p.targets ?? []).map(t => t.expr).join('\n')
    for (const name of [
      'iys_http_requests_total', 'iys_http_request_duration_seconds_bucket', 'iys_decisions_total', 'iys_bloom_maybe_total',
      'iys_bloom_absent_total', 'iys_store_errors_total', 'iys_filter_version', 'iys_filter_keys', 'iys_decision_log_written_total',
      'iys_decision_log_spooled_total', 'iys_upstream_messages_total', 'iys_upstream_breaker_open', 'iys_nodejs_eventloop_lag_p99_seconds',
      'iys_process_resident_memory_bytes', 'iys_nodejs_heap_size_used_bytes',
      // freshness and readiness (issue 11)
      'iys_ready', 'iys_postgres_unreachable', 'iys_applier_lag_seconds', 'iys_ledger_seq', 'iys_applied_seq',
      'iys_sync_success_age_seconds', 'iys_sync_attempt_age_seconds', 'iys_sync_failing_brands', 'iys_push_backlog_oldest_seconds',
      'iys_consent_requests_backlog_oldest_seconds', 'iys_outbox_oldest_seconds', 'iys_decision_log_spool_segments',
      'iys_decision_log_spool_oldest_seconds', 'iys_decision_log_spool_bytes', 'iys_scrub_jobs', 'iys_scrub_lines_total'
    ]) expect(text, name).toContain(name)
  })
})

// ---- metric names and labels -----------------------------------------------------------------------------------

describe('metrics named in prometheus/ and grafana/', () => {
  it.each(OPS_TEXT_FILES)('%s names only metrics src/metrics.ts exports', (file) => {
    const text = read(file)
    const used = new Set([...text.matchAll(/\biys_[a-z0-9_]*[a-z0-9]\b/g)].map(m => m[0]))
    if (!file.endsWith('prometheus.yml')) expect(used.size, file).toBeGreaterThan(0)
    for (const name of used) expect(METRIC_NAMES.has(name), `${file}: ${name} is not exported`).toBe(true)
  })

  it.each(OPS_TEXT_FILES)('%s selects only labels (and closed-set label values) those metrics have', (file) => {
    // JSON escapes the quotes inside expressions; read them back.
    const text = read(file).replace(/\\"/g, '"')
    for (const m of text.matchAll(/\b(iys_[a-z0-9_]*[a-z0-9])\{([^}]*)\}/g)) {
      const name = m[1]!
      const labels = [...labelNamesOf(name), 'job', 'instance']
      for (const matcher of m[2]!.matchAll(/([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
        const [, label, op, value] = matcher as unknown as [string, string, string, string]
        expect(labels, `${file}: ${m[0]}`).toContain(label)
        const closed = name.startsWith('iys_upstream_messages') && label === 'status'
          ? OUTCOME_STATUSES
          : name === 'iys_ready' && label === 'reason' ? READY_REASONS : LABEL_VALUES[label]
        if (closed === undefined || value.includes('$')) continue
        const values = op === '=' || op === '!=' ? [value] : value.split('|')
        for (const v of values) expect(closed, `${file}: ${m[0]}`).toContain(v)
      }
    }
  })
})

// ---- a compose file that is safe to copy -----------------------------------------------------------------------

describe('docker-compose.yml sends nothing to a fake unless asked to, and keeps its parts apart', () => {
  const profiles = (name: string): string[] => (service(name).profiles === undefined ? [] : asList(service(name).profiles, `${name}.profiles`)).map(p => asString(p, 'profile'))
  const inDemo = (name: string): boolean => profiles(name).includes('demo')
  /** KEY=VALUE lines of an env file (comments and blank lines skipped). */
  const envFile = (path: string): Record<string, string> => Object.fromEntries(read(path).split('\n').map(l => l.trim())
    .filter(l => l !== '' && !l.startsWith('#')).map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  /** Compose's interpolation with `shell` as the environment. */
  const interpolateWith = (text: string, shell: Record<string, string>): string =>
    text.replace(/\$\$|\$\{([A-Z0-9_]+)(?:(:?)-([^}]*))?\}/g, (all, name: string | undefined, colon: string | undefined, def: string | undefined) => {
      if (all === '$$') return '$'
      const v = shell[name!]
      if (def === undefined) { if (v === undefined) throw new Error(`${all} is not set`); return v }
      return (colon === ':' ? v !== undefined && v !== '' : v !== undefined) ? v! : def
    })
  const rawEnvironment = (name: string): Record<string, string> => Object.fromEntries(Object.entries(asMap(service(name).environment ?? {}, `${name}.environment`))
    .map(([k, v]) => [k, v === null ? '' : asString(v, k)]))
  const carrierPort = (): string => command('fake-carrier')[command('fake-carrier').indexOf('--port') + 1]!

  it('runs the fake carrier only in the demo profile', () => {
    expect(profiles('fake-carrier')).toEqual(['demo'])
    expect(command('fake-carrier')[0]).toBe('fake-carrier')
    expect(command('fake-carrier')).toEqual(expect.arrayContaining(['--host', '0.0.0.0']))
    for (const name of builtFromDockerfile) if (command(name)[0] === 'fake-carrier') expect(profiles(name), name).toEqual(['demo'])
    // `docker compose up` without the profile must not need it: nothing outside the profile depends on it.
    for (const name of serviceNames.filter(n => !inDemo(n))) {
      const deps = service(name).depends_on
      const named = deps === undefined ? [] : Array.isArray(deps) ? deps.map(d => asString(d, 'dependency')) : Object.keys(asMap(deps, 'depends_on'))
      for (const dep of named) expect(inDemo(dep), `${name} depends on ${dep} of the demo profile`).toBe(false)
    }
  })

  it('points no service outside the demo profile at the fake carrier: the carriers come from the environment', () => {
    for (const name of serviceNames.filter(n => !inDemo(n))) {
      for (const [key, value] of Object.entries(environment(name))) expect(value, `${name}: ${key}`).not.toMatch(/fake-carrier/)
      for (const [key, raw] of Object.entries(rawEnvironment(name))) {
        if (/^UPSTREAM_[A-Z]+_URL$/.test(key)) expect(raw, `${name}: ${key}`).toBe(`\${${key}:-}`)
      }
    }
    const gateway = rawEnvironment('gateway')
    for (const type of CONSENT_TYPES) expect(Object.keys(gateway)).toContain(`UPSTREAM_${type}_URL`)
    // A carrier set in the shell (or .env) is the one the gateway gets.
    const shell = { UPSTREAM_MESAJ_URL: 'https://sms.carrier.example', UPSTREAM_EPOSTA_URL: 'https://mail.carrier.example' }
    const config = loadConfig(Object.fromEntries(Object.entries(gateway).map(([k, v]) => [k, interpolateWith(v, shell)])))
    expect(config.upstreams).toEqual({ MESAJ: 'https://sms.carrier.example', EPOSTA: 'https://mail.carrier.example', ARAMA: null })
  })

  it('wires the demo\'s fake carrier as every channel\'s carrier through .env.demo, which also turns the profile on', () => {
    const demo = envFile('.env.demo')
    expect(demo.COMPOSE_PROFILES?.split(',')).toContain('demo')
    const env = Object.fromEntries(Object.entries(rawEnvironment('gateway')).map(([k, v]) => [k, interpolateWith(v, demo)]))
    const config = loadConfig(env)
    for (const type of CONSENT_TYPES) {
      const u = new URL(config.upstreams[type]!)
      expect(u.hostname, type).toBe('fake-carrier')
      expect(u.port, type).toBe(carrierPort())
    }
    const notes = read('docker-compose.yml').split('\n').filter(l => l.trimStart().startsWith('#')).join('\n')
    expect(notes).toContain('docker compose --profile demo --env-file .env.demo up')
  })

  it('runs Prometheus without --web.enable-lifecycle', () => {
    for (const name of serviceNames) {
      const words = [...command(name), ...(service(name).entrypoint === undefined ? [] : [JSON.stringify(service(name).entrypoint)])]
      expect(words.join(' '), name).not.toMatch(/enable-lifecycle/)
    }
    expect(command('prometheus')).toContain(`--config.file=${mounts('prometheus').find(m => m.source === './prometheus')!.target}/prometheus.yml`)
  })

  it('names each of the four images built from the Dockerfile apart', () => {
    expect([...builtFromDockerfile].sort()).toEqual(['fake-carrier', 'gateway', 'load', 'migrate'])
    const images = builtFromDockerfile.map(n => asString(service(n).image, `${n}.image`))
    expect(new Set(images).size).toBe(images.length)
    const others = serviceNames.filter(n => !builtFromDockerfile.includes(n)).map(n => asString(service(n).image, `${n}.image`))
    for (const image of images) expect(others).not.toContain(image)
    for (const n of builtFromDockerfile) expect(asString(service(n).image, n), n).toMatch(new RegExp(n === 'gateway' ? '^iys-gateway:' : `^iys-gateway-${n}:`))
  })
})
