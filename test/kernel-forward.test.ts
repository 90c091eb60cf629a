// Forward mode in the kernel (src/host/kernel-forward.ts, native/host-agent/hh_splice.c):
// real TCP connections in a network namespace of this test's own. The
// accepted socket stands for an injected one (what the agent hands over is
// a connected TCP descriptor with the request already in its receive queue).
// Checks: a 4 MB answer arrives whole and in order after the request that was
// queued before the hand-over; half-closes pass each way in order; nothing
// listening upstream resets the client and is counted; the bound refuses and
// counts; every end reaches the agent's callback exactly once.
// Needs root (a network namespace).
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import { KernelForwarder } from '../src/host/kernel-forward';
import type { InjectedFlow } from '../src/host/agent';
import { CLONE_NEWNET, libc } from '../src/host/libc';
import { sh } from './lib/netns';

const isRoot = process.getuid?.() === 0;

t.test('KernelForwarder refuses an upstream that is no IPv4 address', async (t) => {
  t.throws(() => new KernelForwarder({ upstream: { host: 'localhost', port: 80 } }), { code: 'ERR_FORWARD_UPSTREAM' });
});

t.test('splice forwarding between real sockets', { skip: !isRoot && 'needs root (a network namespace)' }, async (t) => {
  const ns = `handoff-kfw-${process.pid}`;
  const origNs = fs.openSync('/proc/thread-self/ns/net', 'r');
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['link', 'set', 'lo', 'up'], { ns });
  const nsFd = fs.openSync(`/run/netns/${ns}`, 'r');
  const rc = libc().setns(nsFd, CLONE_NEWNET);
  fs.closeSync(nsFd);
  const closers: Array<() => void> = [];
  t.teardown(() => {
    for (const c of closers.reverse()) c();
    libc().setns(origNs, CLONE_NEWNET);
    fs.closeSync(origNs);
    sh('ip', ['netns', 'del', ns], { allowFail: true });
  });
  if (rc !== 0) throw new Error(`setns: errno ${libc().errno()}`);

  const body = crypto.randomBytes(4 << 20);
  const digest = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
  // The upstream: reads the request up to its end (the client's FIN), answers with its length and the body.
  const upstream = net.createServer({ allowHalfOpen: true }, (s) => {
    const got: Buffer[] = [];
    s.on('data', (d) => got.push(d));
    s.on('end', () => {
      const req = Buffer.concat(got);
      s.write(`${req.length} ${digest(req)}\n`);
      s.end(body);
    });
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  closers.push(() => upstream.close());
  const upPort = (upstream.address() as net.AddressInfo).port;

  const ended: number[] = [];
  const fwd = new KernelForwarder({ upstream: { host: '127.0.0.1', port: upPort }, maxConnections: 2 });
  closers.push(() => fwd.close());
  let nextId = 1;
  const results: Array<{ rc: number; detail?: string }> = [];
  // The front: each accepted socket, not read by Node (pauseOnConnect), goes to the forwarder.
  let forwarder = fwd;
  const front = net.createServer({ pauseOnConnect: true }, (s) => {
    const flow = { flowId: nextId++, socket: s } as unknown as InjectedFlow;
    const r = forwarder.forward(flow, (f) => ended.push(f.flowId));
    results.push(r);
    if (r.rc < 0) s.resetAndDestroy();
  });
  front.listen(0, '127.0.0.1');
  await once(front, 'listening');
  closers.push(() => front.close());
  const frontPort = (front.address() as net.AddressInfo).port;

  const exchange = (req: Buffer) => new Promise<{ data: Buffer; err?: string }>((resolve) => {
    const c = net.connect({ port: frontPort, host: '127.0.0.1', allowHalfOpen: true });
    const got: Buffer[] = [];
    c.on('data', (d) => got.push(d));
    c.on('error', (e) => resolve({ data: Buffer.concat(got), err: (e as NodeJS.ErrnoException).code }));
    c.on('end', () => { c.end(); resolve({ data: Buffer.concat(got) }); });
    // Written at once: the request is in the accepted socket's queue before the hand-over.
    c.end(req);
  });

  const waitEnded = async (n: number) => {
    while (ended.length < n) await new Promise((r) => setTimeout(r, 10));
  };

  await t.test('a request queued before the hand-over, a 4 MB answer after the client half-closed', async (t) => {
    const req = crypto.randomBytes(100_000);
    const r = await exchange(req);
    t.notOk(r.err, 'no error');
    const nl = r.data.indexOf(10);
    t.equal(r.data.subarray(0, nl).toString(), `${req.length} ${digest(req)}`, 'the upstream got the whole request, in order, then its end');
    t.equal(digest(r.data.subarray(nl + 1)), digest(body), 'the client got the whole body, in order, then the end');
    await waitEnded(1);
    t.same(ended, [1], 'the end reached the callback once');
    const s = fwd.native();
    t.equal(s.bytesToUpstream, req.length, 'bytes to upstream counted');
    t.equal(s.bytesToClient, r.data.length, 'bytes to client counted');
    t.match(s, { added: 1, done: 1, active: 0, upstreamFailed: 0, errors: 0, refusedFull: 0 }, 'counters');
    t.equal(fwd.size, 0, 'no flow left');
  });

  await t.test('several at once, each whole', async (t) => {
    const reqs = [0, 1].map((i) => Buffer.alloc(10 + i, i));
    const rs = await Promise.all(reqs.map(exchange));
    rs.forEach((r, i) => {
      t.notOk(r.err, `connection ${i}: no error`);
      t.equal(digest(r.data.subarray(r.data.indexOf(10) + 1)), digest(body), `connection ${i}: whole body`);
    });
    await waitEnded(3);
    t.equal(fwd.native().done, 3, 'three pairs done');
  });

  await t.test('beyond the bound: refused, counted, the client reset', async (t) => {
    // Two connections held open (their clients never end), a third is refused.
    const holders = [0, 1].map(() => net.connect({ port: frontPort, host: '127.0.0.1' }));
    for (const h of holders) { h.on("error", () => {}); h.resume(); }
    while (fwd.native().active < 2) await new Promise((r) => setTimeout(r, 10));
    const r = await exchange(Buffer.from('x'));
    // EPIPE when the reset came before the client's write (one process: either runs first).
    t.match(r.err, /^(ECONNRESET|EPIPE)$/, `the third client is reset (${r.err})`);
    t.equal(results.at(-1)?.rc, -28, 'hh_splice_add: -ENOSPC');
    t.match(results.at(-1)?.detail, /2 connections forwarded already/, `detail: ${results.at(-1)?.detail}`);
    t.equal(fwd.native().refusedFull, 1, 'refused_full counted');
    for (const h of holders) h.end();
    await waitEnded(5);
    t.equal(fwd.native().active, 0, 'the held pairs ended when their clients did');
  });

  await t.test('nothing listening upstream: the client is reset, counted', async (t) => {
    // Port 1 in this namespace: nobody listens, and no ephemeral source port can be it (no self-connect).
    const f2 = new KernelForwarder({ upstream: { host: '127.0.0.1', port: 1 } });
    closers.push(() => f2.close());
    forwarder = f2;
    const before = ended.length;
    const r = await exchange(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    // EPIPE when the reset came before the client's write.
    t.match(r.err, /^(ECONNRESET|EPIPE)$/, `reset (${r.err})`);
    t.equal(r.data.length, 0, 'nothing answered');
    while (ended.length === before) await new Promise((res) => setTimeout(res, 10));
    t.equal(f2.native().upstreamFailed, 1, 'upstream_failed counted');
    t.equal(f2.stats.upstreamErrors, 1, 'ForwardStats.upstreamErrors');
    t.equal(f2.resets.get('ECONNREFUSED'), 1, 'the outcome is ECONNREFUSED');
    forwarder = fwd;
  });
});
