// The host agent over real UDP on loopback, without root: the kernel
// injection is replaced by a loopback socket pair, so this checks receipt,
// verification, single injection, final statuses and `forward` mode.
import t from 'tap';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { createHost } from '../src/host';
import { BlobSender, driveWithTimers, encodeBlob, Status } from '../src/transfer';
import type { ConnectionBlob, TransferResult } from '../src/transfer';

const KEY = crypto.randomBytes(32);
const request = Buffer.from('GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
const blobFor = (over: Partial<ConnectionBlob> = {}): ConnectionBlob => ({
  v: 1, flowId: 77, clientIp: '198.18.0.1', clientPort: 40000, vip: '198.18.0.100', vipPort: 80,
  iss: 1000, irs: 5000, sndNxt: 1001, rcvNxt: 5001 + request.length, sndWnd: 65535, rcvWnd: 65535, sndWscale: 7,
  rcvWscale: 7, mss: 1410, sackOk: true, tsOk: true, tsVal: 1, tsEcr: 2, data: request,
  decision: { rule: null, pool: 'p', host: 'h' }, created: Date.now(), nonce: crypto.randomBytes(16), ...over,
});

/** A balancer's blob sender on loopback, aimed at an agent's port: send(buf) resolves with the transfer's result. */
async function blobSender(agentPort: number) {
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  const sender = new BlobSender({ send: (d, b) => udp.send(b, d.port, d.ip), initialRtoMs: 20 });
  udp.on('message', (m, r) => sender.onDatagram({ ip: r.address, port: r.port }, m));
  const drive = driveWithTimers(sender);
  const dest = { ip: '127.0.0.1', port: agentPort };
  return {
    send: (buf: Buffer) => new Promise<TransferResult>((r) => sender.send(dest, buf, r)),
    close: () => { drive.stop(); udp.close(); },
  };
}

t.test('forward mode, single injection, refusals', async (t) => {
  const upstream = http.createServer((q, s) => s.end(`upstream saw ${q.url}`));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  // The "client" ends of the stubbed injected connections.
  const clients: net.Socket[] = [];
  const pair = net.createServer((s) => clients.push(s));
  await new Promise<void>((r) => pair.listen(0, '127.0.0.1', r));
  let injected = 0;
  const host = await createHost({
    port: 0, address: '127.0.0.1', clusterKey: KEY, vips: [{ ip: '198.18.0.100', port: 80 }], network: false,
    app: { kind: 'forward', upstream: { host: '127.0.0.1', port: (upstream.address() as net.AddressInfo).port } },
    inject: (blob) => {
      injected++;
      const s = net.connect((pair.address() as net.AddressInfo).port, '127.0.0.1');
      // What TCP_REPAIR puts in the receive queue, the client end "already sent".
      const sendData = () => clients[clients.length - 1].write(blob.data);
      s.once('connect', () => setTimeout(sendData, 5));
      return s;
    },
  });
  const { send, close: closeSender } = await blobSender(host.port);
  t.teardown(() => { closeSender(); host.close(); upstream.close(); pair.close(); });

  const good = encodeBlob(blobFor(), KEY);
  const r1 = await send(good);
  t.ok(r1.ok, 'a valid blob is injected and answered OK');
  while (!clients.length) await new Promise((r) => setTimeout(r, 5));
  const reply = await new Promise<string>((resolve) => {
    let out = '';
    const c = clients[0];
    c.on('data', (d) => { out += d; });
    c.on('end', () => resolve(out));
  });
  t.match(reply, /upstream saw \/x$/, 'forward mode joined the injected socket to the upstream, both ways');
  t.equal(host.forward!.connections, 1);
  t.equal(host.forward!.bytesFromClient, request.length, 'bytes from the client counted');
  t.ok(host.forward!.bytesToClient > 0, 'bytes to the client counted');

  const r2 = await send(good);
  t.match(r2, { ok: false, code: 'ERR_TRANSFER_REFUSED', status: Status.REPLAY }, 'the same blob again is refused as a replay');
  t.equal(injected, 1, 'never injected twice');
  const r3 = await send(encodeBlob(blobFor(), crypto.randomBytes(32)));
  t.match(r3, { ok: false, status: Status.BAD_MAC }, 'a blob under another key');
  const r4 = await send(encodeBlob(blobFor({ vipPort: 8080 }), KEY));
  t.match(r4, { ok: false, status: Status.WRONG_VIP }, 'a VIP this host does not serve');
  const r5 = await send(encodeBlob(blobFor({ created: Date.now() - 60_000 }), KEY));
  t.match(r5, { ok: false, status: Status.STALE }, 'an old blob');
  t.equal(injected, 1, 'none of them injected');
  t.match(host.agent.stats, { injected: 1, refusedReplay: 1, refusedMac: 1, refusedVip: 1, refusedStale: 1 }, 'each refusal counted');
});

t.test('an app per VIP service: each port to its own upstream, the rest to the default', async (t) => {
  const upstreams = ['http', 'tls', 'default'].map((name) => http.createServer((q, s) => s.end(`${name} upstream saw ${q.url}`)));
  await Promise.all(upstreams.map((u) => new Promise<void>((r) => u.listen(0, '127.0.0.1', r))));
  const port = (i: number) => (upstreams[i].address() as net.AddressInfo).port;
  const clients: net.Socket[] = [];
  const pair = net.createServer((s) => clients.push(s));
  await new Promise<void>((r) => pair.listen(0, '127.0.0.1', r));
  const vip = '198.18.0.100';
  const host = await createHost({
    port: 0, address: '127.0.0.1', clusterKey: KEY, network: false,
    vips: [{ ip: vip, port: 80 }, { ip: vip, port: 443 }, { ip: vip, port: 8080 }],
    // The default app pipes through JS (splice: false), the two services splice in the kernel.
    app: { kind: 'forward', upstream: { host: '127.0.0.1', port: port(2) }, splice: false },
    apps: [{ ip: vip, port: 80, app: { kind: 'forward', upstream: { host: '127.0.0.1', port: port(0) } } },
      { ip: vip, port: 443, app: { kind: 'forward', upstream: { host: '127.0.0.1', port: port(1) } } }],
    inject: (blob) => {
      const s = net.connect((pair.address() as net.AddressInfo).port, '127.0.0.1');
      s.once('connect', () => setTimeout(() => clients[clients.length - 1].write(blob.data), 5));
      return s;
    },
  });
  const { send, close: closeSender } = await blobSender(host.port);
  t.teardown(() => { closeSender(); host.close(); for (const u of upstreams) u.close(); pair.close(); });
  const answer = async (vipPort: number, flowId: number) => {
    const n = clients.length;
    const r = await send(encodeBlob(blobFor({ vipPort, flowId, clientPort: 41000 + flowId }), KEY));
    t.ok(r.ok, `the blob for :${vipPort} is injected`);
    while (clients.length === n) await new Promise((res) => setTimeout(res, 5));
    return new Promise<string>((resolve) => {
      let out = '';
      clients[n].on('data', (d) => { out += d; });
      clients[n].on('end', () => resolve(out));
    });
  };
  t.match(await answer(80, 1), /http upstream saw \/x$/, ':80 to its upstream');
  t.match(await answer(443, 2), /tls upstream saw \/x$/, ':443 to its own');
  t.match(await answer(8080, 3), /default upstream saw \/x$/, 'a VIP without an app of its own: the default app');
  t.same([...host.forwards.keys()].sort(), ['*', `${vip}:443`, `${vip}:80`], 'counters per forwarding app');
  t.equal(host.forwards.get(`${vip}:443`)!.connections, 1);
  t.equal(host.forward, host.forwards.get('*'), 'forward: the default app\'s');
  t.same([...host.kernelForwarders.keys()].sort(), [`${vip}:443`, `${vip}:80`], 'the two services forward in the kernel, the default app in JS');
  t.equal(host.forward!.connections, 1, 'the JS pipe counted its connection');
});
