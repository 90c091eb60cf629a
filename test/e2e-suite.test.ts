// The end-to-end suite (design.md §6), on the topology of e2e-handoff.test.ts:
// a client namespace, the balancer (shim on net_af_packet + handoff engine)
// in this process, and host namespaces each running test/lib/host-proc.js
// (createHost() with the demo app on port 80 and an https.Server on 443).
// Covers TLS routed by SNI, load with wrk, large responses, keep-alive,
// the ways a connection ends, loss on the blob path, hostile blobs sent
// straight to an agent, and that responses never cross the balancer.
// Needs root; clients (openssl, curl, wrk, nft) missing here skip their part.
//
// Never block the event loop once the balancer runs: its engine lives in this
// process, so every client runs asynchronously (runIn), never with execFileSync.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Balancer } from '../src/controller/balancer';
import { parseBalancerConfig } from '../src/controller/config';
import { FlowState } from '../src/offload';
import { Status } from '../src/transfer';
import { isRoot, waitFor } from './lib/harness';
import { Topology, sh, type NsHost } from './lib/netns';
import type { HostProcConfig } from './lib/host-proc';
import type { ProbeCase, ProbeSpec } from './lib/blob-probe';
import { HostProc } from './lib/hardening';
import { runIn, waitForAsync, writeStdin, type LogLine } from './lib/procs';

const VIP = '198.18.0.100';
const LB_IP = '198.18.0.2';
const KEY_HEX = crypto.randomBytes(32).toString('hex');
const HOST_PROC = path.resolve(__dirname, 'lib/host-proc.js');
const TCP_CLIENT = path.resolve(__dirname, 'lib/tcp-client.js');
const BLOB_PROBE = path.resolve(__dirname, 'lib/blob-probe.js');

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

type Ev = LogLine;

const body1MbOk = (b: Buffer) => {
  if (b.length !== 1048576) return false;
  for (let i = 0; i < b.length; i++) if (b[i] !== i % 251) return false;
  return true;
};

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, TCP_REPAIR, nftables');
} else {
  const topo = new Topology('s');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-e2e-suite-'));
  let lb: Balancer | undefined;
  let lbStopped = false;
  t.teardown(async () => {
    if (lb && !lbStopped) await lb.stop().catch(() => {});
    topo.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const lbDev = topo.rootPort('lb');
  const client = topo.host('cli', '198.18.0.1/24');
  const h1 = topo.host('h1', '198.18.0.11/24');
  const h2 = topo.host('h2', '198.18.0.12/24');
  // A third host the balancer does not know: target of the hostile blobs, with an empty allowlist.
  const h3 = topo.host('h3', '198.18.0.13/24');

  // One self-signed certificate per host, so the handshake tells which host answered.
  const haveOpenssl = has('openssl');
  const certs = (haveOpenssl ? ['one.example', 'two.example'] : []).map((cn) => {
    const cert = path.join(dir, `${cn}.crt`);
    const key = path.join(dir, `${cn}.key`);
    sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-days', '1',
      '-addext', `subjectAltName=DNS:${cn}`, '-keyout', key, '-out', cert]);
    return { cn, cert, key };
  });

  const startHost = (h: NsHost, cfg: HostProcConfig) => new HostProc(
    topo.spawn(h.ns, 'env', [`HANDOFF_CLUSTER_KEY=${KEY_HEX}`, process.execPath, HOST_PROC, JSON.stringify(cfg)]), cfg.name);
  const vips = [{ ip: VIP, port: 80 }, { ip: VIP, port: 443 }];
  const tls = (i: number) => certs[i] && { ports: [443], certFile: certs[i].cert, keyFile: certs[i].key };
  const host1 = startHost(h1, { name: 'host1', vips, balancers: [LB_IP], tls: tls(0) });
  const host2 = startHost(h2, { name: 'host2', vips, balancers: [LB_IP], tls: tls(1) });
  const host3 = startHost(h3, { name: 'host3', vips: [{ ip: VIP, port: 80 }], balancers: [] });
  const hostProcs = [host1, host2, host3];

  const curl = async (args: string[]) => {
    const r = await runIn(client.ns, 'curl', ['-s', '--max-time', '10', ...args]);
    return { ...r, body: r.stdout };
  };
  /**
   * Run tcp-client.js MODE in the client namespace. At its gate (the
   * connection handed off, the ending not yet done) `atGate` runs first;
   * by default it waits for the mapping to be ACTIVE, so the ending's
   * FIN or RST meets an ACTIVE mapping.
   */
  const tcpClient = (mode: string, atGate?: (localPort: number) => Promise<void>) => new Promise<Ev>((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', client.ns, process.execPath, TCP_CLIENT, mode, VIP, '80'],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const m = /\{"gate":true,"localPort":(\d+)\}\n/.exec(out);
      if (!m) return;
      out = out.replace(m[0], '');
      const port = Number(m[1]);
      const ready = atGate ?? (async () => { await waitFor(() => mappingState(port) === FlowState.ACTIVE, 5000, 5); });
      ready(port).then(() => writeStdin(child, 'go\n'), reject);
    });
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1) || '{}') as Ev);
      } catch {
        reject(new Error(`tcp-client ${mode}: ${out} ${err}`));
      }
    });
  });
  const engine = () => lb!.engine!;
  /**
   * No handoff under way on the balancer and no hand-back on the hosts: an
   * earlier test's client can close while its host still hands a connection
   * back (wrk stops with requests in flight), and that hand-back would be
   * counted by the next test.
   */
  const quiet = () => waitForAsync(async () =>
    (await Promise.all([host1, host2].map((h) => h.stats()))).every((s) => s.perRequest?.handbacksUnderWay === 0)
    && engine().inProgress === 0, 20_000, 20); // hosts first: a settled hand-back starts a handoff here

  const closeEvent = (h: HostProc, port: number) => waitFor(() => h.find((e) => e.ev === 'close' && e.clientPort === port), 5000, 10);
  const mappingState = (clientPort: number, vipPort = 80) =>
    lb!.shim.lookupMapping({ clientIp: client.ip, clientPort, vip: VIP, vipPort })?.state;

  t.test('host processes start (createHost with a handler app)', async (t) => {
    for (const h of hostProcs) {
      t.ok(await waitFor(() => h.find((e) => e.ev === 'ready'), 15000, 50), `${h.name} ready: ${h.text.slice(0, 400)}`);
    }
  });

  t.test('balancer with SNI and path rules starts', async (t) => {
    const innerMac = (h: HostProc) => (h.find((e) => e.ev === 'ready')?.mac as string) || '00:00:00:00:00:00';
    const cfg = parseBalancerConfig({
      eal: { vdevs: [`net_af_packet0,iface=${lbDev}`], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_af_packet0', ip: LB_IP }],
      vips,
      hosts: [
        { name: 'host1', ip: h1.ip, nexthopMac: h1.mac, innerMac: innerMac(host1) },
        { name: 'host2', ip: h2.ip, nexthopMac: h2.mac, innerMac: innerMac(host2) },
      ],
      routing: {
        pools: [{ name: 'one', hosts: [{ host: 'host1' }] }, { name: 'two', hosts: [{ host: 'host2' }] }],
        rules: [
          { name: 'sni-one', port: 443, match: { sni: 'one.example' }, pool: 'one' },
          { name: 'sni-two', port: 443, match: { sni: 'two.example' }, pool: 'two' },
          { name: 'path-two', port: 80, match: { pathPrefix: '/two' }, pool: 'two' },
          { name: 'sticky-two', port: 80, match: { pathPrefix: '/stick' }, pool: 'two', sticky: true },
        ],
        defaults: [{ vip: VIP, port: 80, pool: 'one' }, { vip: VIP, port: 443, pool: 'one' }],
      },
    }, 'e2e-suite');
    lb = new Balancer(cfg, { clusterKey: Buffer.from(KEY_HEX, 'hex') });
    lb.start();
    t.ok(lb.engine, 'the handoff engine runs');
  });

  t.test('TLS: the ClientHello travels in the blob, SNI picks the host', { skip: !haveOpenssl && 'openssl is not installed' },
    async (t) => {
      for (const [i, c] of certs.entries()) {
        const r = await runIn(client.ns, 'openssl', ['s_client', '-connect', `${VIP}:443`, '-servername', c.cn,
          '-CAfile', c.cert, '-verify_hostname', c.cn, '-verify_return_error'], { timeoutMs: 15000 });
        const out = r.stdout.toString();
        t.equal(r.code, 0, `s_client -servername ${c.cn} exits 0 (${r.stderr.trim().split('\n').slice(-2).join(' | ')})`);
        t.match(out, new RegExp(`subject=\\s*CN\\s*=\\s*${c.cn.replace('.', '\\.')}`), `the certificate is host${i + 1}'s (CN=${c.cn})`);
        t.match(out, /Verify return code: 0 \(ok\)/, 'it verifies against that host\'s certificate and name');
        const conn = [host1, host2][i].find((e) => e.ev === 'conn' && e.vipPort === 443);
        t.ok(conn, `host${i + 1} took a connection on port 443`);
        // 16 03 0x: a TLS handshake record; 01 at offset 5: ClientHello.
        t.match(conn?.dataHead, /^1603[0-9a-f]{2}[0-9a-f]{4}01$/, `its blob carried the ClientHello (${conn?.dataBytes} bytes)`);
      }
      if (has('curl')) {
        const r = await curl(['--cacert', certs[1].cert, '--resolve', `two.example:443:${VIP}`, 'https://two.example/']);
        t.equal(r.body.toString(), 'served by host2 over TLS\n', 'HTTPS request by SNI two.example is served by host2');
      }
    });

  const noCurl = !has('curl') && 'curl is not installed';

  t.test('wrk: 10 s, 64 connections, no errors', { skip: !has('wrk') && 'wrk is not installed (apt-get install -y wrk)' },
    async (t) => {
      const s0 = { ...engine().stats };
      const r = await runIn(client.ns, 'wrk', ['-t2', '-c64', '-d10s', '--timeout', '5s', `http://${VIP}/`], { timeoutMs: 60000 });
      const out = r.stdout.toString();
      t.equal(r.code, 0, `wrk exits 0 ${r.stderr}`);
      const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
      const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1];
      t.comment(`wrk: ${total} requests, ${rps} requests/s (64 connections, 10 s, 2 threads)`);
      t.ok(total > 0, 'requests were served');
      t.notMatch(out, /Socket errors/, 'no socket errors (connect, read, write, timeout)');
      t.notMatch(out, /Non-2xx/, 'no non-2xx responses');
      const s1 = engine().stats;
      t.ok(s1.handoffsCompleted - s0.handoffsCompleted >= 64, `every connection was handed off (${s1.handoffsCompleted - s0.handoffsCompleted})`);
      t.equal(s1.handoffsFailed - s0.handoffsFailed, 0, 'no handoff failed');
      t.comment(out.trim());
    });

  // The app ends a Connection: close response as soon as its bytes are in
  // the kernel, which may still hold megabytes to send: the agent keeps the
  // flow (tunnel check, owner lookups) until the client closes too. (What an
  // early close breaks shows in scaleout.test: after a rehash the hosts
  // disowned such downloads.)
  t.test('an 8 MB Connection: close response read slowly arrives whole', { skip: noCurl }, async (t) => {
    const s0 = { ...engine().stats };
    const r = await curl(['--limit-rate', '4M', '-H', 'Connection: close', `http://${VIP}/bytes/8388608`]);
    t.equal(r.code, 0, 'curl exits 0');
    let ok = r.body.length === 8388608;
    for (let i = 0; ok && i < r.body.length; i++) if (r.body[i] !== i % 251) ok = false;
    t.ok(ok, `8388608 bytes, byte i is i % 251 (got ${r.body.length})`);
    t.equal(engine().stats.perRequestLast - s0.perRequestLast, 1, 'handed off without routing: the app had the socket itself');
  });

  t.test('1 MB responses arrive intact and go direct: the balancer carries a fraction', { skip: noCurl }, async (t) => {
    const before = lb!.shim.counters().total;
    const n = 3;
    for (let i = 0; i < n; i++) {
      const r = await curl([`http://${VIP}/bytes/1048576`]);
      t.equal(r.code, 0, 'curl exits 0');
      t.ok(body1MbOk(r.body), `response ${i + 1}: 1048576 bytes, byte i is i % 251 (got ${r.body.length})`);
    }
    const after = lb!.shim.counters().total;
    const served = BigInt(n * 1048576);
    const tx = after.tx_bytes - before.tx_bytes;
    const rx = after.rx_bytes - before.rx_bytes;
    t.comment(`responses ${served} bytes; balancer tx ${tx} bytes, rx ${rx} bytes, ${after.encap_packets - before.encap_packets} packets tunnelled`);
    // Relaying the responses would cost more than their size. Tunnelling the
    // client's ACKs costs at most one 116-byte frame (66 + 50 of VXLAN) per
    // 1398-byte segment, about 8%, and delayed ACKs halve that.
    t.ok(tx * 8n < served, `the balancer transmitted ${tx} bytes, under 1/8 of the ${served} response bytes`);
    t.ok(rx * 8n < served, `the balancer received ${rx} bytes, under 1/8: the responses never reached it`);
    t.ok(after.encap_packets > before.encap_packets, 'the client\'s packets (requests, ACKs) went through the tunnel');
  });

  // The balancer decides once per connection, on its first request: the
  // connection then lives on that host, and later requests on it (keep-alive)
  // go straight there through the tunnel, whatever they ask for. Here /two/*
  // would route to host2 on a new connection, but on this one host1 serves it.
  // Per-request routing (issue 15): a request for a pool the connection's
  // host is not in is handed back (frozen on the host, classified again on
  // the balancer) and on to a host of its pool; the client sees one connection.
  t.test('per request: each request of a keep-alive connection goes to its pool', { skip: noCurl }, async (t) => {
    // The earlier tests' last handoffs may not be counted yet (a client can
    // have its whole response before the balancer takes in the host's FINAL):
    // let them end before counting this test's.
    t.ok(await quiet(), 'no earlier handoff or hand-back under way');
    const s0 = { ...engine().stats };
    const r = await runIn(client.ns, 'curl', ['-sv', '--max-time', '10', '-w', 'connects=%{num_connects}\n',
      `http://${VIP}/a`, `http://${VIP}/two/b`, `http://${VIP}/c`, `http://${VIP}/two/d`]);
    t.equal(r.code, 0, 'curl exits 0');
    t.equal(r.stdout.toString(), ['host1', 'host2', 'host1', 'host2'].map((h, i) => `served by ${h}\nconnects=${i ? 0 : 1}\n`).join(''),
      'one connection; /a and /c served by host1, /two/* by host2');
    t.match(r.stderr, /Re-using existing connection/, 'curl reused the connection');
    await waitFor(() => engine().stats.handoffsCompleted - s0.handoffsCompleted >= 4, 3000, 10); // the final ACK may trail the response
    t.equal(engine().stats.handbacks - s0.handbacks, 3, 'three hand-backs');
    t.equal(engine().stats.handoffsCompleted - s0.handoffsCompleted, 4, 'four handoffs: the first and one per hand-back');
    t.equal(engine().stats.handbacksRefused - s0.handbacksRefused, 0, 'none refused');
  });

  t.test('per request: a request with Connection: close is handed off without routing (nothing can follow it)', { skip: noCurl }, async (t) => {
    t.ok(await quiet(), 'no earlier handoff or hand-back under way');
    const s0 = { ...engine().stats };
    const r = await runIn(client.ns, 'curl', ['-s', '--max-time', '10', '-H', 'Connection: close', `http://${VIP}/two/a`]);
    t.equal(r.stdout.toString(), 'served by host2\n', 'served by its pool');
    const k = await runIn(client.ns, 'curl', ['-s', '--max-time', '10', `http://${VIP}/two/b`]);
    t.equal(k.stdout.toString(), 'served by host2\n', 'and a keep-alive one too');
    await waitFor(() => engine().stats.handoffsCompleted - s0.handoffsCompleted >= 2, 3000, 10);
    t.equal(engine().stats.perRequestLast - s0.perRequestLast, 1, 'only the Connection: close handoff went without routing');
  });

  t.test('per request: a sticky rule keeps its connection on its first host', { skip: noCurl }, async (t) => {
    t.ok(await quiet(), 'no earlier handoff or hand-back under way');
    const s0 = { ...engine().stats };
    const r = await runIn(client.ns, 'curl', ['-s', '--max-time', '10', '-w', 'connects=%{num_connects}\n',
      `http://${VIP}/stick/a`, `http://${VIP}/b`, `http://${VIP}/two/c`]);
    t.equal(r.stdout.toString(), 'served by host2\nconnects=1\n'.concat('served by host2\nconnects=0\n'.repeat(2)),
      'all three on host2, where the sticky rule sent the first');
    await waitFor(() => engine().stats.handoffsCompleted - s0.handoffsCompleted >= 1, 3000, 10);
    t.equal(engine().stats.handbacks - s0.handbacks, 0, 'no hand-back');
  });

  t.test('per request: pipelined requests, each answered by its pool, in order', async (t) => {
    const script = `const s=require('net').connect(80,${JSON.stringify(VIP)},()=>s.write(` +
      `'GET /a HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /two/b HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' +` +
      `'GET /c HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /two/d HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'));` +
      `let b='';s.on('data',d=>b+=d);s.on('end',()=>console.log(JSON.stringify(b.match(/served by host\\d/g))));` +
      `s.on('error',e=>console.log(JSON.stringify(e.code)))`;
    const r = await runIn(client.ns, process.execPath, ['-e', script], { timeoutMs: 15000 });
    t.same(JSON.parse(r.stdout.toString() || 'null'), ['served by host1', 'served by host2', 'served by host1', 'served by host2'],
      'four pipelined requests in one write: four answers, from the right hosts, in order');
  });

  t.test('per request: a 1 MB response, then a request for another pool', { skip: noCurl }, async (t) => {
    const big = path.join(dir, 'big.bin');
    const small = path.join(dir, 'small.txt');
    const r = await runIn(client.ns, 'curl', ['-s', '--max-time', '20', '-w', '%{num_connects} ',
      `http://${VIP}/bytes/1048576`, '-o', big, `http://${VIP}/two/x`, '-o', small]);
    t.equal(r.stdout.toString(), '1 0 ', 'one connection');
    t.ok(body1MbOk(fs.readFileSync(big)), 'the 1 MB response from host1 is intact');
    t.equal(fs.readFileSync(small, 'utf8'), 'served by host2\n', 'then /two/x from host2');
  });

  t.test('per request: a client half-closes right behind a request for another pool: served there, or reset', async (t) => {
    // The FIN may reach host1 before its hand-back freezes the socket (then a
    // blob cannot carry it: reset, counted by the agent) or after (the tunnel
    // check drops it, the client sends it again, host2 gets it). Either way
    // no request is answered by a host outside its pool.
    const script = `const s=require('net').connect({port:80,host:${JSON.stringify(VIP)},allowHalfOpen:true},()=>s.write(` +
      `'GET /a HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'));let b='';let sent=false;` +
      `s.on('data',d=>{b+=d;if(!sent&&/served by host\\d\\n/.test(b)){sent=true;s.end('GET /two/b HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')}});` +
      `const done=(how)=>console.log(JSON.stringify({how,got:b.match(/served by host\\d/g)}));` +
      `s.on('end',()=>done('end'));s.on('error',e=>done(e.code))`;
    const r = await runIn(client.ns, process.execPath, ['-e', script], { timeoutMs: 15000 });
    const o = JSON.parse(r.stdout.toString() || '{}') as { how?: string; got?: string[] };
    if (o.how === 'end') t.same(o.got, ['served by host1', 'served by host2'], 'both answered, each by its pool, then a clean end');
    else t.same(o, { how: 'ECONNRESET', got: ['served by host1'] }, 'the first answered, then reset: never served by host1');
  });

  t.test('per request: wrk with a Lua script alternating pools, every answer from the right host',
    { skip: !has('wrk') && 'wrk is not installed (apt-get install -y wrk)' }, async (t) => {
      // Each connection alternates / (host1) and /two/x (host2). One
      // connection per thread, so a thread's answers arrive in its requests'
      // order and must alternate between the hosts; done() reads each
      // thread's globals (wrk keeps one Lua state per thread).
      const lua = path.join(dir, 'alternate.lua');
      fs.writeFileSync(lua, `
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) sent = 0; answered = 0; wrong = 0; last = ""; first = "" end
function request()
  sent = sent + 1
  if sent % 2 == 0 then return wrk.format("GET", "/two/x") end
  return wrk.format("GET", "/")
end
-- wrk may build a request it never sends, so the parity of the first answer
-- is unknown; what must hold is that the answers alternate between the hosts.
function response(status, headers, body)
  answered = answered + 1
  local ok = (body == "served by host1\\n" or body == "served by host2\\n") and body ~= last
  if not ok then
    wrong = wrong + 1
    if first == "" then first = string.format("#%d %d %q after %q", answered, status, body, last) end
  end
  last = body
end
function done(summary, latency, requests)
  for _, th in ipairs(threads) do
    io.write(string.format("LUA checked=%d wrong=%d first=%s\\n", th:get("answered"), th:get("wrong"), th:get("first")))
  end
end
`);
      const s0 = { ...engine().stats };
      const r = await runIn(client.ns, 'wrk', ['-t2', '-c2', '-d3s', '--timeout', '5s', '-s', lua, `http://${VIP}/`], { timeoutMs: 60000 });
      const out = r.stdout.toString();
      t.equal(r.code, 0, `wrk exits 0 ${r.stderr}`);
      t.notMatch(out, /Socket errors|Non-2xx/, 'no errors');
      const counts = [...out.matchAll(/LUA checked=(\d+) wrong=(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
      t.equal(counts.length, 2, 'both threads reported');
      const checked = counts.reduce((a, c) => a + c[0], 0);
      t.ok(checked > 10, `answers checked: ${checked}`);
      t.equal(counts.reduce((a, c) => a + c[1], 0), 0, `none from the wrong host ${out.match(/first=.*/g)?.join(' ')}`);
      t.ok(engine().stats.handbacks - s0.handbacks > 10, `hand-backs: ${engine().stats.handbacks - s0.handbacks}`);
    });

  // Deterministic loss (every 10th datagram of each kind and direction,
  // nftables numgen inc): random loss made this test fail now and then by
  // design (all of a transfer's rounds lost), and a test that can fail
  // without a fault is a flaky test. With every 10th dropped no transfer
  // loses more than one round in ten, so every hand-back must succeed.
  t.test('per request: 10% loss on the hand-back path (both ways), 30 hand-backs, all served right',
    { skip: noCurl || (!has('nft') && 'nft is not installed') }, async (t) => {
      const lossy = [h1, h2];
      t.teardown(() => { for (const h of lossy) sh('nft', ['delete', 'table', 'inet', 'handoff-hb'], { ns: h.ns, allowFail: true }); });
      for (const h of lossy) {
        const nft = (...a: string[]) => sh('nft', a, { ns: h.ns });
        nft('add', 'table', 'inet', 'handoff-hb');
        nft('add', 'chain', 'inet', 'handoff-hb', 'in', '{', 'type', 'filter', 'hook', 'input', 'priority', '0', ';', '}');
        nft('add', 'chain', 'inet', 'handoff-hb', 'out', '{', 'type', 'filter', 'hook', 'output', 'priority', '0', ';', '}');
        // Hand-back traffic only: the host's DATA fragments out, the balancer's ACKs and FINALs in (type byte at offset 5).
        nft('add', 'rule', 'inet', 'handoff-hb', 'out', 'udp', 'sport', '4791', '@th,104,8', '1', 'numgen', 'inc', 'mod', '10', '0', 'counter', 'drop');
        nft('add', 'rule', 'inet', 'handoff-hb', 'in', 'udp', 'dport', '4791', '@th,104,8', '{', '2', ',', '3', '}', 'numgen', 'inc', 'mod', '10', '0', 'counter', 'drop');
      }
      t.ok(await quiet(), 'no earlier handoff or hand-back under way');
      const s0 = { ...engine().stats };
      const want = ['host1', 'host2', 'host1', 'host2'].map((h) => `served by ${h}\n`).join('');
      let right = 0;
      const wrong: string[] = [];
      for (let i = 0; i < 10; i++) {
        const r = await runIn(client.ns, 'curl', ['-s', '--max-time', '10', `http://${VIP}/a`, `http://${VIP}/two/b`,
          `http://${VIP}/c`, `http://${VIP}/two/d`]);
        if (r.code === 0 && r.stdout.toString() === want) right++;
        else wrong.push(`${i}: exit ${r.code} ${JSON.stringify(r.stdout.toString())}`);
      }
      t.equal(right, 10, `every request of the 10 connections from its pool ${wrong.join('; ')}`);
      t.equal(engine().stats.handbacks - s0.handbacks, 30, 'thirty hand-backs');
      const dropped = lossy.map((h) => sh('nft', ['list', 'table', 'inet', 'handoff-hb'], { ns: h.ns }))
        .join('\n').match(/packets (\d+)/g)?.reduce((a, m) => a + Number(m.split(' ')[1]), 0) ?? 0;
      t.comment(`hand-back datagrams dropped by the loss rules: ${dropped}`);
      t.ok(dropped > 0, 'the loss rules dropped some (the transfer retransmitted them)');
    });

  t.test('connection endings', async (t) => {
    t.test('client half-closes after the handoff: the whole response still arrives', async (t) => {
      const r = await tcpClient('half-close-after-handoff');
      t.equal(r.first?.text, 'served by host1\n', 'first response (the handoff) from host1');
      t.equal(r.second?.length, 1048576, 'second response complete after our FIN');
      t.equal(r.patternOk, true, 'and intact');
      t.equal(r.eof, true, 'then EOF from the host');
      t.equal(r.error, null, 'no error');
      const c = await closeEvent(host1, r.localPort);
      t.ok(c, 'the host socket closed');
      t.equal(c?.error, null, 'cleanly');
      t.equal(mappingState(r.localPort), FlowState.CLOSING, 'the mapping saw the FIN: CLOSING');
    });

    // design-mapping.md: a FIN the balancer receives before its decision resets
    // the connection (v1 blobs carry no FIN). A FIN right behind the request
    // usually arrives before the decision; if it arrives after the mapping
    // was inserted it is held and tunnelled, and the request is served.
    t.test('client half-closes right behind its first request: served, or reset and counted', async (t) => {
      const s0 = { ...engine().stats };
      const r = await tcpClient('half-close-immediate');
      const s1 = engine().stats;
      const counted = (s1.finBeforeHandoff - s0.finBeforeHandoff) + (s1.handoffsFailed - s0.handoffsFailed);
      if (r.first) {
        t.equal(r.first.text, 'served by host1\n', 'served: the FIN followed the handoff');
        t.equal(r.error, null, 'no error');
      } else {
        t.equal(r.error, 'ECONNRESET', 'reset by the balancer');
        t.equal(counted, 1, 'and counted (finBeforeHandoff or handoffsFailed)');
      }
      t.comment(`outcome: ${r.first ? 'served' : `reset (finBeforeHandoff +${s1.finBeforeHandoff - s0.finBeforeHandoff}, handoffsFailed +${s1.handoffsFailed - s0.handoffsFailed}, bytesMismatch +${s1.bytesMismatch - s0.bytesMismatch})`}`);
    });

    t.test('client resets after the handoff: the host socket sees ECONNRESET, the mapping goes CLOSING', async (t) => {
      const r = await tcpClient('reset');
      t.equal(r.first?.text, 'served by host1\n', 'response from host1 before the reset');
      const c = await closeEvent(host1, r.localPort);
      t.ok(c, 'the host socket closed');
      t.equal(c?.error, 'ECONNRESET', 'with ECONNRESET');
      t.ok(await waitFor(() => mappingState(r.localPort) === FlowState.CLOSING, 2000, 10), 'the mapping is CLOSING');
    });

    t.test('server closes first (Connection: close): the client sees a clean EOF', async (t) => {
      const r = await tcpClient('server-close');
      t.equal(r.first?.text, 'served by host1\n', 'response from host1');
      t.equal(r.first?.connection, 'close', 'the app says Connection: close');
      t.equal(r.eof, true, 'EOF after the response');
      t.equal(r.trailing, 0, 'nothing after the response');
      t.equal(r.error, null, 'no error, no reset');
      const c = await closeEvent(host1, r.localPort);
      t.equal(c?.error, null, 'the host socket closed cleanly');
      t.ok(await waitFor(() => mappingState(r.localPort) === FlowState.CLOSING, 2000, 10),
        'the mapping is CLOSING');
    });

    // The host answers the client as soon as it has injected the connection,
    // before the balancer hears its FINAL; until then the mapping is PENDING
    // and the client's packets are held. Here host1's FINALs are dropped (type
    // byte 3 at offset 5 of the datagram), so the transfer ends "uncertain"
    // after ~600 ms of probes and the flow stays with host1; the client resets
    // within that time. Shim bug (reported): hold_release() tunnels a held FIN
    // or RST without the ACTIVE -> CLOSING step that mapped() does, so the
    // mapping stays ACTIVE.
    t.test('client resets while its mapping is still PENDING (host FINAL lost)', { skip: !has('nft') && 'nft is not installed' },
      async (t) => {
        t.teardown(() => sh('nft', ['delete', 'table', 'inet', 'handoff-final'], { ns: h1.ns, allowFail: true }));
        const nft = (...a: string[]) => sh('nft', a, { ns: h1.ns });
        nft('add', 'table', 'inet', 'handoff-final');
        nft('add', 'chain', 'inet', 'handoff-final', 'out', '{', 'type', 'filter', 'hook', 'output', 'priority', '0', ';', '}');
        nft('add', 'rule', 'inet', 'handoff-final', 'out', 'udp', 'sport', '4791', '@th,104,8', '3', 'counter', 'drop');
        const s0 = { ...engine().stats };
        let atGate: number | undefined;
        const r = await tcpClient('reset', async (port) => { atGate = mappingState(port); });
        t.equal(r.first?.text, 'served by host1\n', 'host1 answered the client directly');
        t.equal(atGate, FlowState.PENDING, 'while the balancer still held the mapping PENDING when the client reset');
        t.ok(await waitFor(() => engine().stats.handoffsUncertain > s0.handoffsUncertain, 5000, 10),
          'the transfer ended uncertain (host had the blob, no FINAL): activated towards host1');
        const c = await closeEvent(host1, r.localPort);
        t.equal(c?.error, 'ECONNRESET', 'the held RST reached the host on activation');
        t.equal(mappingState(r.localPort), FlowState.CLOSING, 'the mapping is CLOSING (the held RST counted on release)');
      });
  });

  // 20% loss each way on the blob path, in the hosts' own firewalls:
  // every 5th blob datagram in and out (nftables numgen inc), not random. A
  // transfer gives up only after 8 silent rounds in a row; random loss made
  // that happen now and then (a CI run under ASan saw one "failed" handoff
  // whose client had its answer), so this test could fail with nothing
  // wrong. With every 5th dropped, one transfer at a time, at most 2 of 8
  // consecutive rounds lose their datagram and 2 their answer: a transfer
  // can never give up, and any failure here is a real one.
  t.test('20% loss on the blob path: 50 requests, none fails', { skip: noCurl || (!has('nft') && 'nft is not installed') },
    async (t) => {
      const lossy = [h1, h2];
      t.teardown(() => { for (const h of lossy) sh('nft', ['delete', 'table', 'inet', 'handoff'], { ns: h.ns, allowFail: true }); });
      for (const h of lossy) {
        const nft = (...a: string[]) => sh('nft', a, { ns: h.ns });
        nft('add', 'table', 'inet', 'handoff');
        nft('add', 'chain', 'inet', 'handoff', 'in', '{', 'type', 'filter', 'hook', 'input', 'priority', '0', ';', '}');
        nft('add', 'chain', 'inet', 'handoff', 'out', '{', 'type', 'filter', 'hook', 'output', 'priority', '0', ';', '}');
        // Health checks share the port but are not what this test is about:
        // losing three PONGs in a row (about 5% per check at this loss) takes
        // host2, the only host of /two's pool, out, and its requests are then
        // reset by policy (a CI run saw that: 4 of 50). The loss applies to
        // blob traffic only (type byte at offset 5: PING 6, PONG 7 pass);
        // test/health-panic.test.ts covers checks over a lossy path.
        nft('add', 'rule', 'inet', 'handoff', 'in', 'udp', 'dport', '4791', '@th,104,8', '6', 'accept');
        nft('add', 'rule', 'inet', 'handoff', 'out', 'udp', 'sport', '4791', '@th,104,8', '7', 'accept');
        nft('add', 'rule', 'inet', 'handoff', 'in', 'udp', 'dport', '4791', 'numgen', 'inc', 'mod', '5', '0', 'counter', 'drop');
        nft('add', 'rule', 'inet', 'handoff', 'out', 'udp', 'sport', '4791', 'numgen', 'inc', 'mod', '5', '0', 'counter', 'drop');
      }
      const s0 = { ...engine().stats };
      const x0 = { ...engine().sender.stats };
      let failed = 0;
      for (let i = 0; i < 50; i++) {
        const two = i % 2 === 1;
        const r = await curl([`http://${VIP}/${two ? 'two/x' : ''}`]);
        const want = `served by host${two ? 2 : 1}\n`;
        if (r.code !== 0 || r.body.toString() !== want) {
          failed++;
          t.comment(`request ${i}: curl exit ${r.code}, body ${JSON.stringify(r.body.toString().slice(0, 80))}`);
        }
      }
      t.equal(failed, 0, 'no request failed');
      // A client can have its whole response before the balancer hears the
      // host's FINAL (lost: the host injects, answers the client directly,
      // and the balancer's probe fetches the FINAL later), so wait for the
      // last transfers to end.
      const done = () => (engine().stats.handoffsCompleted - s0.handoffsCompleted) + (engine().stats.handoffsUncertain - s0.handoffsUncertain);
      await waitFor(() => done() >= 50, 5000, 10);
      const s1 = engine().stats;
      const x1 = engine().sender.stats;
      t.equal(done(), 50, '50 handoffs');
      t.equal(s1.handoffsFailed - s0.handoffsFailed, 0, 'none failed');
      t.equal(s1.resets - s0.resets, 0, 'no connection reset before its handoff (both hosts stayed up)');
      let dropped = 0;
      for (const h of lossy) {
        const j = JSON.parse(sh('nft', ['-j', 'list', 'table', 'inet', 'handoff'], { ns: h.ns })) as { nftables: Ev[] };
        for (const o of j.nftables) {
          for (const e of (o.rule?.expr ?? []) as Ev[]) if (e.counter) dropped += e.counter.packets as number;
        }
      }
      t.comment(`nft dropped ${dropped} blob datagrams; sender retransmitted ${x1.retransmitted - x0.retransmitted} fragments, `
        + `${x1.probes - x0.probes} probes; uncertain handoffs ${s1.handoffsUncertain - s0.handoffsUncertain}`);
      t.ok(dropped > 0, 'the loss was in effect');
    });

  // Hostile transfers straight to host3's agent from the client namespace
  // (the balancer's address belongs to DPDK, so nothing can send from it;
  // host3's agent has an empty allowlist, so the MAC alone guards it).
  const probe = async (cases: ProbeCase[]) => {
    const spec: ProbeSpec = { agent: { ip: h3.ip, port: 4791 }, cases };
    const r = await runIn(client.ns, process.execPath, [BLOB_PROBE, JSON.stringify(spec)], { env: { HANDOFF_CLUSTER_KEY: KEY_HEX } });
    const out = JSON.parse(r.stdout.toString().trim() || '{}') as { results?: Array<{ name: string; replies: Ev[] }>; fatal?: string };
    const answer = (name: string) => out.results?.find((x) => x.name === name)?.replies.find((x) => x.type !== 'ack');
    return { out, answer };
  };
  const req = 'GET / HTTP/1.1\r\nHost: probe.example\r\n\r\n';

  t.test('forged, truncated, wrong-VIP and replayed blobs are refused, nothing injected', async (t) => {
    const base = { clientIp: client.ip, vip: VIP, data: req };
    const { out, answer } = await probe([
      { name: 'forged', blob: { ...base, clientPort: 40001, vipPort: 80 }, wrongKey: true },
      { name: 'truncated', blob: { ...base, clientPort: 40002, vipPort: 80 }, truncate: 9 },
      { name: 'wrong-vip', blob: { ...base, clientPort: 40003, vipPort: 8080 } },
      { name: 'replay', blob: { sameBytesAs: 'wrong-vip' } },
      { name: 'duplicate', blob: { sameBytesAs: 'wrong-vip' }, sameIdAs: 'wrong-vip' },
    ]);
    t.notOk(out.fatal, `the probe ran ${out.fatal ?? ''}`);
    const expect: Array<[string, number, string]> = [
      ['forged', Status.BAD_MAC, 'a blob under another key: FINAL BAD_MAC'],
      ['truncated', Status.TRUNCATED, 'a blob missing its last bytes: FINAL TRUNCATED'],
      ['wrong-vip', Status.WRONG_VIP, 'a genuine blob for a VIP the host does not serve: FINAL WRONG_VIP'],
      ['replay', Status.REPLAY, 'the same blob bytes in a new transfer: FINAL REPLAY'],
      ['duplicate', Status.WRONG_VIP, 'a retransmission of a finished transfer: its FINAL again'],
    ];
    for (const [name, status, what] of expect) {
      t.same(answer(name), { type: 'final', status, statusName: Object.keys(Status).find((k) => Status[k as keyof typeof Status] === status) },
        what);
    }
    const s = await host3.stats();
    t.match(s, { injected: 0, blobs: 4, duplicates: 1, refusedMac: 1, refusedVip: 1, refusedReplay: 1 }, 'agent counters');
    t.equal(s.refusedSchema + s.refusedStale, 1, 'the truncated blob counted among malformed ones');
    t.notOk(host3.find((e) => e.ev === 'conn'), 'the app got no connection');
    const est = sh('ss', ['-Htn', 'state', 'established'], { ns: h3.ns });
    t.equal(est.trim(), '', `no established TCP connection in host3 (${est.trim()})`);
  });

  // The positive control for the test above: the probe's blobs are right, so
  // the refusals were for the reasons tested. A genuine blob is injected once;
  // its replay is refused and a retransmission gets the same FINAL.
  t.test('a genuine blob is injected exactly once; its replay is refused', async (t) => {
    const blob = { clientIp: client.ip, clientPort: 40010, vip: VIP, vipPort: 80, data: req };
    const before = await host3.stats();
    const { out, answer } = await probe([
      { name: 'genuine', blob },
      { name: 'replay', blob: { sameBytesAs: 'genuine' } },
      { name: 'duplicate', blob: { sameBytesAs: 'genuine' }, sameIdAs: 'genuine' },
    ]);
    t.notOk(out.fatal, `the probe ran ${out.fatal ?? ''}`);
    t.equal(answer('genuine')?.status, Status.OK, 'FINAL OK: injected');
    t.equal(answer('replay')?.status, Status.REPLAY, 'the same bytes again: FINAL REPLAY');
    t.equal(answer('duplicate')?.status, Status.OK, 'a retransmission of the transfer: FINAL OK again, from memory');
    const s = await host3.stats();
    t.equal(s.injected - before.injected, 1, 'one injection');
    t.equal(s.refusedReplay - before.refusedReplay, 1, 'one replay refused');
    t.equal(s.duplicates - before.duplicates, 1, 'one duplicate answered');
    t.ok(host3.find((e) => e.ev === 'conn' && e.clientPort === 40010), 'the app got that connection');
  });

  t.test('shut down', async (t) => {
    const stats = await Promise.all(hostProcs.map((h) => h.stats().catch((err: Error) => err.message)));
    t.comment(`balancer: ${JSON.stringify(engine().stats)}`);
    for (const [i, s] of stats.entries()) t.comment(`${hostProcs[i].name}: ${JSON.stringify(s)}`);
    await lb?.stop();
    lbStopped = true;
    for (const h of hostProcs) h.child.kill('SIGTERM');
    t.ok(await waitFor(() => hostProcs.every((h) => h.exited), 5000, 20), 'host processes exited');
    t.equal(host1.find((e) => e.ev === 'agent-error'), undefined, 'host1 reported no agent error');
    t.equal(host2.find((e) => e.ev === 'agent-error'), undefined, 'host2 reported no agent error');
  });
}
