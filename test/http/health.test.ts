/**
 * Liveness and readiness (src/http/health.ts) over fastify's inject, with a real sidecar LevelDB
 * and embedded queue in a temp directory: ready (200) once the node has started and has the
 * peers it needs; 503 naming each failing check when the node has not started, lacks peers, the
 * queue is closed, the store is closed, or a check does not answer within its bound. Then the
 * whole composition (src/http/sidecar.ts startSidecar on a temp data directory, one institution,
 * 127.0.0.1): ready, metrics behind the EHR token, the node's gauges.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { staticTokenAuthoriser } from '../../src/http/auth.ts';
import {
  failureReason,
  HealthFailure,
  healthOf,
  NodeState,
  type Readiness,
  sidecarChecks,
} from '../../src/http/health.ts';
import { buildHttpServer } from '../../src/http/server.ts';
import { type RunningSidecar, startSidecar } from '../../src/http/sidecar.ts';
import { EmbeddedQueue } from '../../src/queue/embedded.ts';
import { SidecarStore } from '../../src/sidecar/store.ts';
import { TOKEN } from './harness.ts';

describe('readiness of store, node and queue', () => {
  let dir: string;
  let store: SidecarStore;
  let queue: EmbeddedQueue;
  let app: FastifyInstance;
  const state = new NodeState();
  let peers = 0;
  let minPeers = 0;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spchain-health-'));
    store = await SidecarStore.open(join(dir, 'sidecar'), { syncWrites: false });
    queue = await EmbeddedQueue.open(store.db, { syncWrites: false });
    const health = healthOf(
      sidecarChecks({
        db: store.db,
        node: {
          state,
          peers: () => peers,
          get minPeers() {
            return minPeers;
          },
        },
        queue,
      }),
    );
    app = buildHttpServer(staticTokenAuthoriser(TOKEN), () => undefined, {
      logLevel: 'silent',
      health,
    });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await queue?.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  async function ready(): Promise<{ status: number; body: Readiness }> {
    const res = await app.inject({ method: 'GET', url: '/health/ready' });
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    return { status: res.statusCode, body: JSON.parse(res.body) as Readiness };
  }

  it('is live without a token', async () => {
    const res = await app.inject({ method: 'GET', url: '/health/live' });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ status: 'live' });
  });

  it('is not ready before the node has started, and names the node check', async () => {
    const r = await ready();
    expect(r.status).toBe(503);
    expect(r.body.status).toBe('not ready');
    expect(r.body.checks).toEqual({
      storage: { state: 'up' },
      node: { state: 'down', reason: 'starting' },
      queue: { state: 'up' },
    });
  });

  it('is ready once the node has started (a one-institution network needs no peers)', async () => {
    state.onNodeEvent({
      event: 'started',
      index: 0,
      peerId: 'p',
      height: 0,
      hash: '00',
      keyblockHeight: 0,
      patients: 0,
      genesis: '00',
    });
    const r = await ready();
    expect(r.status).toBe(200);
    expect(r.body).toEqual({
      status: 'ready',
      checks: { storage: { state: 'up' }, node: { state: 'up' }, queue: { state: 'up' } },
    });
  });

  it('is not ready without the peers the node needs', async () => {
    minPeers = 1;
    const r = await ready();
    expect(r.status).toBe(503);
    expect(r.body.checks.node).toEqual({ state: 'down', reason: '0 peers connected, 1 needed' });
    peers = 1;
    expect((await ready()).status).toBe(200);
  });

  it('is not ready when the queue is down, then when the store is closed', async () => {
    await queue.close();
    const q = await ready();
    expect(q.status).toBe(503);
    expect(q.body.checks.queue!.state).toBe('down');
    expect(q.body.checks.queue!.reason).toMatch(/^[A-Z_]+$/);
    expect(q.body.checks.storage).toEqual({ state: 'up' });

    await store.close();
    const s = await ready();
    expect(s.status).toBe(503);
    expect(s.body.checks.storage!.state).toBe('down');
    expect(s.body.checks.storage!.reason).toMatch(/^LEVEL_/);
    // Nothing but the check names, states and reasons.
    expect(Object.keys(s.body).sort()).toEqual(['checks', 'status']);
  });

  it('is not ready after the node stops or fails', () => {
    const n = new NodeState();
    n.onNodeEvent({ event: 'fatal', code: 'STORE', message: 'x' });
    n.onNodeEvent({ event: 'stopped', height: 3 });
    expect(n.started).toBe(false);
    expect(n.reason).toBe('failed (STORE)');
  });
});

describe('check bounds and reasons', () => {
  it('reports a check that does not answer within its bound as a timeout', async () => {
    const health = healthOf(
      { slow: () => new Promise<void>(() => undefined), quick: async () => undefined },
      { timeoutMs: 20 },
    );
    expect(await health.readiness()).toEqual({
      status: 'not ready',
      checks: { slow: { state: 'down', reason: 'timeout' }, quick: { state: 'up' } },
    });
  });

  it('reports errors by code only, never by message', () => {
    expect(failureReason(new HealthFailure('starting'))).toBe('starting');
    expect(failureReason(Object.assign(new Error('/secret/path'), { code: 'ECONNREFUSED' }))).toBe(
      'ECONNREFUSED',
    );
    expect(failureReason(new Error('redis://user:pw@host failed'))).toBe('error');
    expect(() => healthOf({}, { timeoutMs: 0 })).toThrow(/timeoutMs/);
  });
});

describe('the composed sidecar', () => {
  let dir: string;
  let sidecar: RunningSidecar;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'spchain-health-sidecar-'));
    sidecar = await startSidecar({
      dataDir: join(dir, 'data'),
      host: '127.0.0.1',
      port: 0,
      logLevel: 'silent',
      env: {},
    });
  }, 120_000);
  afterAll(async () => {
    await sidecar?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('is ready, and serves its metrics behind the EHR token', async () => {
    const live = await fetch(`${sidecar.url}/health/live`);
    expect(live.status).toBe(200);
    const r = await fetch(`${sidecar.url}/health/ready`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({
      status: 'ready',
      checks: { storage: { state: 'up' }, node: { state: 'up' }, queue: { state: 'up' } },
    });

    expect((await fetch(`${sidecar.url}/metrics`)).status).toBe(401);
    const token = (await readFile(sidecar.tokenFile!, 'utf8')).trim();
    const m = await fetch(`${sidecar.url}/metrics`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(m.status).toBe(200);
    expect(m.headers.get('content-type')).toBe(sidecar.metrics.registry.contentType);
    const text = await m.text();
    expect(text).toMatch(/^spchain_peers_connected 0$/m);
    expect(text).toMatch(/^spchain_chain_height \d+$/m);
    expect(text).toMatch(/^spchain_queue_depth 0$/m);
    expect(text).toMatch(
      /^spchain_http_request_duration_seconds_count\{route="\/health\/ready",method="GET",status="2xx"\} 1$/m,
    );
  });
});
