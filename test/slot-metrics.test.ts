// The per-request metrics (src/slot-metrics.ts) print what prom-client's own Counter and Histogram print for the
// same observations: the same series, the same values, in the exposition format Prometheus scrapes.

import client from 'prom-client'
import { describe, expect, it } from 'vitest'
import { mulberry32 } from '../src/util/random.js'
import { Metrics } from '../src/metrics.js'
import { SlotCounter, SlotHistogram } from '../src/slot-metrics.js'

/** The sample lines of a metric's text, label sets sorted, so two exporters' orders of labels and series do not matter. */
function samples (text: string): string[] {
  return text.split('\n').filter(l => l !== '' && !l.startsWith('#')).map(line => {
    const m = /^(\w+)(?:\{(.*)\})? (.+)$/.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const labels = m[2] === undefined ? '' : m[2].split(/,(?=\w+=")/).sort().join(',')
    return `${m[1]}{${labels}} ${Number(m[3])}`
  }).sort()
}

describe('slot metrics', () => {
  it('a histogram prints what prom-client prints for the same observations', async () => {
    const buckets = [0.0001, 0.001, 0.01, 0.1, 1]
    const ours = new client.Registry()
    const theirs = new client.Registry()
    const h = new SlotHistogram({ name: 'x_seconds', help: 'h', label: 'route', series: ['a', 'b', 'c'], buckets }, ours)
    const p = new client.Histogram({ name: 'x_seconds', help: 'h', labelNames: ['route'], buckets, registers: [theirs] })
    const random = mulberry32(7)
    const values = [0, 0.0001, 0.001, 1, 1.5, 100] // on the bounds and past the last
    for (let i = 0; i < 2000; i++) values.push(random() ** 4 * 2)
    for (let i = 0; i < values.length; i++) {
      const slot = i % 2 === 0 ? 0 : 2 // 'b' is never observed: no series, as with prom-client
      h.observe(slot, values[i]!)
      p.labels(['a', 'b', 'c'][slot]!).observe(values[i]!)
    }
    const got = samples(await ours.metrics())
    expect(got).toEqual(samples(await theirs.metrics()))
    expect(got.some(l => l.includes('route="b"'))).toBe(false)
    expect(got).toContain(`x_seconds_count{route="a"} ${Math.ceil(values.length / 2)}`)
  })

  it('a counter prints its counted slots with their labels, as prom-client does', async () => {
    const ours = new client.Registry()
    const theirs = new client.Registry()
    const names = ['p', 'q', 'r']
    const c = new SlotCounter({ name: 'y_total', help: 'c', labelNames: ['name', 'n'], size: 6, labelsOf: s => ({ name: names[s >> 1]!, n: String(s & 1) }) }, ours)
    const p = new client.Counter({ name: 'y_total', help: 'c', labelNames: ['name', 'n'], registers: [theirs] })
    for (const [slot, by] of [[0, 1], [5, 3], [0, 2], [3, 1]] as const) {
      c.inc(slot, by)
      p.labels(names[slot >> 1]!, String(slot & 1)).inc(by)
    }
    expect(samples(await ours.metrics())).toEqual(samples(await theirs.metrics()))
  })

  it('the gateway counts requests by route and status and times them by route', async () => {
    const m = new Metrics()
    m.request('check', 200, 0.0003)
    m.request('check', 200, 0.02)
    m.request('check_batch', 429, 0.5)
    m.request('other', 599, 0.00001)
    m.decisions('MESAJ', [{ reason: 'CONSENT' }, { reason: 'REJECTED' }, { reason: 'CONSENT' }])
    m.decisionCounts('EPOSTA', [0, 4, 0, 0, 0, 0, 0]) // by REASONS' order: 4 REJECTED
    const text = samples(await m.registry.metrics())
    expect(text).toContain('iys_http_requests_total{route="check",status="200"} 2')
    expect(text).toContain('iys_http_requests_total{route="check_batch",status="429"} 1')
    expect(text).toContain('iys_http_requests_total{route="other",status="599"} 1')
    expect(text).toContain('iys_http_request_duration_seconds_bucket{le="0.0005",route="check"} 1')
    expect(text).toContain('iys_http_request_duration_seconds_bucket{le="0.025",route="check"} 2')
    expect(text).toContain('iys_http_request_duration_seconds_count{route="check_batch"} 1')
    expect(text).toContain('iys_decisions_total{reason="CONSENT",type="MESAJ"} 2')
    expect(text).toContain('iys_decisions_total{reason="REJECTED",type="MESAJ"} 1')
    expect(text).toContain('iys_decisions_total{reason="REJECTED",type="EPOSTA"} 4')
    expect(text.filter(l => l.startsWith('iys_decisions_total')).length).toBe(3)
    // only the routes timed have series
    expect(text.filter(l => l.startsWith('iys_http_request_duration_seconds_count')).map(l => l.slice(l.indexOf('{'))))
      .toEqual(['{route="check"} 2', '{route="check_batch"} 1', '{route="other"} 1'])
  })
})
