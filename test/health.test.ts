// Health checks (issue 7) on plain objects: PING/PONG datagrams, the
// HealthMonitor's fall/rise/draining logic on a fake clock, the agent's
// answers over a real UDP socket, and the application HTTP check against a
// real HTTP server.
import t from 'tap';
import dgram from 'node:dgram';
import http from 'node:http';
import crypto from 'node:crypto';
import { HealthMonitor } from '../src/controller/health';
import { decodeDatagram, encodePing, encodePong, PongFlag } from '../src/transfer';
import { AppCheck, HostAgent } from '../src/host';
import { waitFor } from './lib/harness';

t.test('PING and PONG round trip; a corrupted one is refused', async (t) => {
  const ping = decodeDatagram(encodePing({ session: 7, blobId: 42 }));
  t.same(ping, { type: 'ping', session: 7, blobId: 42, status: 0 });
  const pong = decodeDatagram(encodePong({ session: 7, blobId: 42, status: PongFlag.DRAINING | PongFlag.APP_DOWN }));
  t.same(pong, { type: 'pong', session: 7, blobId: 42, status: 3 });
  const bad = encodePong({ session: 7, blobId: 42, status: 0 });
  bad[17] ^= 1;
  t.equal((decodeDatagram(bad) as { error: string }).error, 'ERR_DGRAM_CRC', 'a flipped bit fails the CRC');
});

t.test('HealthMonitor: fall, rise, draining, configured drain, stale answers', async (t) => {
  let now = 0;
  const sent: Array<{ host: string; d: ReturnType<typeof decodeDatagram> }> = [];
  const changes: string[] = [];
  const m = new HealthMonitor([{ name: 'a' }, { name: 'b' }], {
    send: (host, d) => sent.push({ host, d: decodeDatagram(d) }), intervalMs: 100, timeoutMs: 50, fall: 3, rise: 2,
    now: () => now, onChange: (h, _s, why) => changes.push(`${h}: ${why}`),
  });
  const answer = (host: string, status = 0) => {
    const last = [...sent].reverse().find((s) => s.host === host)!.d as { session: number; blobId: number };
    return m.onPong(host, { session: last.session, blobId: last.blobId, status });
  };
  t.ok(m.eligible('a') && m.eligible('b'), 'hosts start eligible');
  t.notOk(m.eligible('nope'), 'an unknown host is not');
  const step = (ms: number) => { now += ms; m.tick(); };
  step(0);
  step(50);
  t.same(sent.map((s) => s.host), ['a', 'b'], 'first checks are spread over the interval');
  t.ok(answer('a'), 'a matching PONG counts');
  t.notOk(answer('a'), 'the same PONG twice does not');
  t.notOk(m.onPong('b', { session: 1, blobId: 1, status: 0 }), 'a PONG of another session is ignored');
  // b never answers: three timeouts take it out.
  for (let i = 0; i < 12; i++) {
    step(25);
    const last = sent.at(-1)!;
    if (last.host === 'a') answer('a');
  }
  t.equal(m.state('b')!.up, false, 'b is down after 3 unanswered checks');
  t.notOk(m.eligible('b'), 'and not eligible');
  t.ok(m.eligible('a'), 'a stays up');
  t.match(changes.join('\n'), /b: down after 3 failed checks \(no answer within 50 ms\)/);
  // b answers again: two good checks bring it back.
  for (let i = 0; i < 16 && !m.state('b')!.up; i++) {
    step(25);
    for (const h of ['a', 'b']) if (sent.some((s) => s.host === h)) answer(h);
  }
  t.ok(m.eligible('b'), 'b is back after answering');
  t.match(changes.join('\n'), /b: up after 2 good checks/);
  // Draining announced by the agent, then the application check failing.
  step(100);
  answer('a', PongFlag.DRAINING);
  t.ok(m.state('a')!.up && m.state('a')!.draining, 'a draining: still up');
  t.notOk(m.eligible('a'), 'but takes no new connections');
  step(100);
  answer('a', 0);
  t.ok(m.eligible('a'), 'draining cleared by the next PONG');
  for (let i = 0; i < 3; i++) {
    step(100);
    answer('a', PongFlag.APP_DOWN);
  }
  t.notOk(m.state('a')!.up, 'three PONGs with APP_DOWN take a host out');
  m.setHosts([{ name: 'a' }, { name: 'b', drain: true }, { name: 'c' }]);
  t.notOk(m.eligible('b'), 'drain: true in the configuration');
  t.ok(m.eligible('c'), 'a host added by reload starts eligible');
  m.setHosts([{ name: 'c' }]);
  t.notOk(m.state('a'), 'a removed host is forgotten');
});

t.test('the agent answers PINGs with its draining and application flags', async (t) => {
  const agent = new HostAgent({ clusterKey: crypto.randomBytes(32), vips: [{ ip: '198.18.0.100', port: 80 }], port: 0, address: '127.0.0.1' });
  const port = await agent.listen();
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  const ask = (seq: number) => new Promise<ReturnType<typeof decodeDatagram>>((resolve) => {
    sock.once('message', (msg) => resolve(decodeDatagram(msg)));
    sock.send(encodePing({ session: 9, blobId: seq }), port, '127.0.0.1');
  });
  t.same(await ask(1), { type: 'pong', session: 9, blobId: 1, status: 0 }, 'healthy: status 0');
  agent.draining = true;
  agent.appHealthy = false;
  t.same(await ask(2), { type: 'pong', session: 9, blobId: 2, status: PongFlag.DRAINING | PongFlag.APP_DOWN }, 'draining and app down');
  t.equal(agent.stats.pings, 2, 'pings are counted');
  t.equal(agent.stats.injected, 0, 'nothing injected');
  sock.close();
  agent.close();
});

t.test('AppCheck: a real HTTP endpoint, up, failing, unreachable', async (t) => {
  let code = 200;
  const server = http.createServer((_req, res) => res.writeHead(code).end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/healthz`;
  const results: Array<[boolean, string]> = [];
  const check = new AppCheck({ url, intervalMs: 30, timeoutMs: 500, onResult: (ok, d) => results.push([ok, d]) }).start();
  // Wait for the results themselves (a loaded machine may take longer than a few intervals), not a fixed time.
  await waitFor(() => results.length > 0, 5000, 5);
  t.same(results[0], [true, 'HTTP 200'], '200 passes');
  code = 503;
  const n = results.length;
  await waitFor(() => results.slice(n).some(([ok]) => !ok), 5000, 5);
  t.same(results.at(-1), [false, 'HTTP 503'], '503 fails');
  check.stop();
  await new Promise<void>((r) => server.close(() => r()));
  const m = results.length;
  const dead = new AppCheck({ url, intervalMs: 1000, timeoutMs: 200, onResult: (ok, d) => results.push([ok, d]) }).start();
  await waitFor(() => results.length > m, 5000, 5);
  dead.stop();
  t.equal(results.at(-1)![0], false, `a closed port fails (${results.at(-1)![1]})`);
  t.throws(() => new AppCheck({ url: 'https://x/', onResult: () => {} }), { code: 'ERR_APP_CHECK_URL' }, 'only http:// URLs');
});
