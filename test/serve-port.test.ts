// A second gateway on a port in use is refused ("address in use"): uWebSockets.js listens with SO_REUSEPORT, so it
// would otherwise start and share the port with the first (an old and a new version splitting the traffic), unless
// REUSE_PORT asks for that on purpose.

import { afterAll, describe, expect, it } from 'vitest'
import { freePort } from './helpers/redis-server.js'
import { startTestGateway, type RunningGateway } from './helpers/gateway.js'

describe('a port in use', () => {
  const running: RunningGateway[] = []
  afterAll(async () => { for (const g of running) await g.close() })

  it('refuses a second gateway on it, and allows one with REUSE_PORT=true', async () => {
    const port = String(await freePort())
    running.push(await startTestGateway({ PORT: port }))
    await expect(startTestGateway({ PORT: port })).rejects.toThrow(/address in use/)
    running.push(await startTestGateway({ PORT: port, REUSE_PORT: 'true' }))
    expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200)
  })
})
