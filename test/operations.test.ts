// Operations (issue 7) on the design.md §6 topology, with the real CLI:
// `handoff lb` (shim on net_af_packet over a root-namespace veth) and two
// `handoff host` agents in namespaces, curl and wrk in a client namespace.
// Metrics scraped during load, health checks taking a stopped host out and
// back, hitless reload under wrk, a broken reload refused, draining a host,
// and a graceful shutdown. Needs root.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import YAML from 'yaml';
import { fetchControl, fetchStatus } from '../src/controller/control';
import { isRoot, sleep, waitFor } from './lib/harness';
import { Topology } from './lib/netns';
import { LoggedProc, runIn, waitForAsync, writeStdin } from './lib/procs';

const VIP = '198.18.0.100';
const LB_IP = '198.18.0.2';
const KEY_HEX = crypto.randomBytes(32).toString('hex');
const CLI = path.resolve(__dirname, '../src/controller/cli.js');
const KEEPALIVE = path.resolve(__dirname, 'lib/keepalive-client.js');
const REUSE = path.resolve(__dirname, 'lib/reuse-port-client.js');
const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Prometheus text to a map of `name{labels}` to value. */
function parseMetrics(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, DPDK, TCP_REPAIR');
} else {
  const topo = new Topology('op');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-ops-'));
  const procs: LoggedProc[] = [];
  t.teardown(async () => {
    for (const p of procs) if (p.running) p.child.kill('SIGKILL');
    topo.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const lbDev = topo.rootPort('lb');
  const client = topo.host('cli', '198.18.0.1/24');
  const nsHosts = [topo.host('h1', '198.18.0.11/24'), topo.host('h2', '198.18.0.12/24')];
  const env = { ...process.env, HANDOFF_CLUSTER_KEY: KEY_HEX, HANDOFF_LOG_LEVEL: 'info' };
  const metricsPort = 20000 + (process.pid % 20000);
  const lbSock = path.join(dir, 'lb.sock');
  const lbFile = path.join(dir, 'lb.yaml');
  const hosts: LoggedProc[] = [];
  let lb: LoggedProc;
  let baseCfg: Record<string, any>;

  const curl = async (p: string, extra: string[] = []) => {
    const r = await runIn(client.ns, 'curl', ['-s', '--max-time', '10', '-o', '-', '-w', '\n%{http_code}', ...extra, `http://${VIP}${p}`]);
    const text = r.stdout.toString();
    const cut = text.lastIndexOf('\n');
    return { code: r.code, status: Number(text.slice(cut + 1)), body: text.slice(0, cut) };
  };
  const metrics = async () => {
    const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    return parseMetrics(await r.text());
  };
  /**
   * Wait until the balancer has no handoff under way (each one completed,
   * uncertain or failed), so its counters hold every handoff made so far: a
   * client can have its response before the balancer takes in the host's FINAL.
   */
  const noHandoffPending = () => waitForAsync(async () => {
    const m = await metrics();
    return ['host1', 'host2'].every((h) => m.get(`handoff_host_pending{host="${h}"}`) === 0);
  }, 10_000, 50);
  const status = () => fetchStatus<Record<string, any>>(lbSock);
  const writeLb = (cfg: object | string) => fs.writeFileSync(lbFile, typeof cfg === 'string' ? cfg : YAML.stringify(cfg));
  const cli = (args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => { out += d; });
    c.stderr.on('data', (d) => { out += d; });
    c.on('close', (code) => resolve({ code, out }));
  });

  t.test('host agents start and log JSON', async (t) => {
    for (const [i, h] of nsHosts.entries()) {
      const name = `host${i + 1}`;
      const file = path.join(dir, `${name}.yaml`);
      fs.writeFileSync(file, YAML.stringify({
        name, listen: { port: 4791 }, vips: [{ ip: VIP, port: 80 }], balancers: [LB_IP], app: { kind: 'demo' },
        control: { socket: path.join(dir, `${name}.sock`) }, shutdown: { drainTimeoutMs: 8000 },
      }));
      const p = new LoggedProc(topo.spawn(h.ns, process.execPath, [CLI, 'host', '--config', file], env), name);
      procs.push(p);
      hosts.push(p);
      const started = await p.waitLine((l) => l.event === 'started', 15000);
      t.match(started.mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/, `${name} logs its VXLAN MAC as JSON`);
      t.equal(started.level, 'info', 'with a level');
      t.equal(started.service, 'handoff-host', 'and its service');
    }
  });

  t.test('balancer starts with metrics on its HTTP endpoint', async (t) => {
    baseCfg = {
      eal: { vdevs: [`net_af_packet0,iface=${lbDev}`], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_af_packet0', ip: LB_IP }],
      vips: [{ ip: VIP, port: 80 }],
      hosts: nsHosts.map((h, i) => ({ name: `host${i + 1}`, ip: h.ip, nexthopMac: h.mac,
        innerMac: hosts[i].find((l) => l.event === 'started')!.mac })),
      routing: {
        pools: [{ name: 'all', hosts: [{ host: 'host1' }, { host: 'host2' }] }, { name: 'two', hosts: [{ host: 'host2' }] }],
        rules: [{ name: 'to-two', match: { pathPrefix: '/host2' }, pool: 'two' }],
        defaults: [{ vip: VIP, port: 80, pool: 'all' }],
      },
      clusterKey: { env: 'HANDOFF_CLUSTER_KEY' },
      health: { intervalMs: 200, timeoutMs: 200, fall: 3, rise: 2 },
      mappings: { closingTimeoutMs: 1000 },
      statsIntervalMs: 0,
      control: { socket: lbSock, http: { address: '127.0.0.1', port: metricsPort } },
      shutdown: { drainTimeoutMs: 10000 },
    };
    writeLb(baseCfg);
    lb = new LoggedProc(spawn(process.execPath, [CLI, 'lb', '--config', lbFile], { env, stdio: ['ignore', 'pipe', 'pipe'] }), 'lb');
    procs.push(lb);
    const started = await lb.waitLine((l) => l.event === 'started', 30000);
    t.equal(started.metrics, `http://127.0.0.1:${metricsPort}/metrics`, 'the start line names the metrics URL');
    const h = await fetch(`http://127.0.0.1:${metricsPort}/healthz`);
    t.equal(h.status, 200, '/healthz answers 200 while serving');
    await waitForAsync(async () => (await status()).hosts.every((x: any) => x.health?.checks > 0), 5000, 50);
    const st = await status();
    t.ok(st.hosts.every((x: any) => x.health.up && x.eligible), 'both hosts answer their health checks');
  });

  t.test('metrics scraped during load show the handoffs', { skip: !has('wrk') && 'wrk is not installed' }, async (t) => {
    const before = await metrics();
    const wrk = runIn(client.ns, 'wrk', ['-t1', '-c8', '-d4s', '--timeout', '5s', '-H', 'Connection: close', `http://${VIP}/`], { timeoutMs: 30000 });
    await sleep(2000);
    const during = await metrics();
    const r = await wrk;
    t.ok(await noHandoffPending(), 'the last handoffs ended');
    const after = await metrics();
    const out = r.stdout.toString();
    t.equal(r.code, 0, 'wrk ran');
    const done = (m: Map<string, number>) => m.get('handoff_handoffs_completed_total') ?? 0;
    t.ok(done(during) > done(before), `mid-run scrape: handoffs completed rose from ${done(before)} to ${done(during)}`);
    t.ok(done(after) > done(during), `and kept rising (${done(after)})`);
    const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
    t.ok(done(after) - done(before) >= requests, `every wrk request (Connection: close) was a handoff: ${done(after) - done(before)} >= ${requests}`);
    const perHost = ['host1', 'host2'].map((h) => after.get(`handoff_host_handoffs_total{host="${h}"}`) ?? 0);
    t.equal(perHost[0] + perHost[1], done(after), `per-host handoffs add up (${perHost.join(' + ')})`);
    t.ok((after.get('handoff_latency_seconds_count') ?? 0) >= done(after) - done(before), 'the latency histogram counts them');
    t.ok((after.get('handoff_shim_packets_total{lcore="worker0",counter="encap_packets"}') ?? 0) > 0, 'shim per-lcore counters are exported');
    t.ok([...after.keys()].some((k) => k.startsWith('handoff_shim_drops_total{')), 'drop reasons are exported');
    t.ok(after.has('handoff_blob_retransmissions_total'), 'blob retransmissions are exported');
    t.ok(after.has('handoff_mappings{state="active"}') && after.has('handoff_mappings{state="pending"}'), 'mappings by state');
    t.equal(after.get('handoff_host_up{host="host2"}'), 1, 'host health is exported');
    t.notMatch(out, /Socket errors|Non-2xx/, 'wrk saw no errors');
    t.comment(`wrk: ${requests} requests; handoff p50 from the histogram buckets: see handoff_latency_seconds`);
  });

  t.test('a client reusing its port at once starts a new handoff (not tunnelled to the old host)', async (t) => {
    // Below the ephemeral range (32768-60999): no earlier wrk connection can have left a mapping on it.
    const port = String(20000 + (process.pid % 10000));
    const before = (await status()).counters.reopened_by_syn ?? 0;
    const r = await runIn(client.ns, process.execPath, [REUSE, VIP, '80', port]);
    const out = JSON.parse(r.stdout.toString() || '{}');
    t.notOk(out.error, `no error (${out.error ?? 'none'})`);
    t.equal(out.bodies?.length, 2, `two connections from port ${port}, each ended by a client RST`);
    t.match(out.bodies?.[1], /served by host[12]\n/, 'the second, whose SYN met the first one\'s CLOSING mapping, is served');
    t.equal((await status()).counters.reopened_by_syn, before + 1, 'that SYN marked the old mapping REOPENED');
  });

  let good: Record<string, any>;
  t.test('a reload during wrk load loses no request', { skip: !has('wrk') && 'wrk is not installed' }, async (t) => {
    t.notOk(lb.find((l) => l.event === 'reload'), 'no reload yet');
    const v2 = structuredClone(baseCfg);
    v2.routing.rules.push({ name: 'moved', match: { pathPrefix: '/moved' }, pool: 'two' });
    v2.routing.pools[0].hosts = [{ host: 'host1', weight: 3 }, { host: 'host2', weight: 1 }];
    // Connection: close: every request is a new handoff, decided by whichever rules are in force.
    const wrk = runIn(client.ns, 'wrk', ['-t1', '-c8', '-d6s', '--timeout', '5s', '-H', 'Connection: close', `http://${VIP}/`], { timeoutMs: 30000 });
    await sleep(1500);
    writeLb(v2);
    lb.child.kill('SIGHUP');
    const applied = await lb.waitLine((l) => l.event === 'reload' && l.result === 'applied', 5000);
    t.same(applied.changes.sort(), ['pool all changed', 'rule moved added'], `SIGHUP: the log says what changed (${applied.msg})`);
    await sleep(1500);
    const v3 = structuredClone(v2);
    v3.health.intervalMs = 250;
    writeLb(v3);
    const r = await cli(['reload', '--socket', lbSock]);
    t.equal(r.code, 0, '`handoff reload` exits 0');
    t.match(r.out, /reloaded: health-check settings changed/, `and prints the change: ${r.out.trim()}`);
    const w = await wrk;
    const out = w.stdout.toString();
    t.comment(out.trim());
    const st = await status();
    t.comment(JSON.stringify(st.engine));
    t.comment(JSON.stringify(Object.fromEntries(Object.entries(st.counters).filter(([, v]) => v))));
    for (const h of nsHosts) t.comment((await runIn(h.ns, 'nstat', ['-az', 'TcpOutRsts', 'TcpExtTCPAbortOnData', 'TcpAttemptFails'])).stdout.toString());
    const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
    t.ok(requests > 0, `wrk ran ${requests} requests, each a handoff, across two reloads`);
    t.notMatch(out, /Socket errors/, 'no connect, read, write or timeout errors');
    t.notMatch(out, /Non-2xx/, 'no non-2xx responses');
    t.equal((await curl('/moved/')).body, 'served by host2\n', 'the new rule is in force: /moved/ goes to host2');
    good = v3;
  });

  t.test('a broken reload is refused and the old rules stay', async (t) => {
    if (!good) { t.fail('not run: it builds on the reload test, which did not finish'); return; }
    writeLb('routing: [this is not yaml\n');
    let r = await cli(['reload', '--socket', lbSock]);
    t.equal(r.code, 3, 'bad YAML: `handoff reload` exits 3');
    t.match(r.out, /YAML/, 'and says why');
    const bad = structuredClone(good);
    bad.routing.rules.push({ name: 'broken', match: { pathPrefix: '/x' }, pool: 'no-such-pool' });
    writeLb(bad);
    lb.child.kill('SIGHUP');
    const refused = await lb.waitLine((l) => l.event === 'reload' && l.result === 'refused' && JSON.stringify(l.problems).includes('/routing/rules/2'), 5000);
    t.equal(refused.level, 'error', `SIGHUP with a rule naming no pool: refused, logged at error with the key path (${refused.problems[0].path}: ${refused.problems[0].message})`);
    const restart = structuredClone(good);
    restart.vips.push({ ip: '198.18.0.101', port: 80 });
    writeLb(restart);
    r = await cli(['reload', '--socket', lbSock]);
    t.equal(r.code, 3, 'a change only a restart applies (vips) is refused');
    t.match(r.out, /\/vips: changed, but only a restart applies it/, 'naming the key');
    t.equal((await curl('/moved/')).body, 'served by host2\n', 'the old rules stay in force');
    const m = await metrics();
    t.ok((m.get('handoff_reloads_total{result="refused"}') ?? 0) >= 3, 'refusals are counted');
    t.equal(m.get('handoff_reloads_total{result="applied"}'), 2, 'applied reloads are counted');
    writeLb(good);
  });

  /** A keep-alive client in the client namespace: send(path) resolves with the answer. */
  const keepAlive = () => {
    const ka = spawn('ip', ['netns', 'exec', client.ns, process.execPath, KEEPALIVE, VIP, '80'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const answers: any[] = [];
    let buf = '';
    ka.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        answers.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
    });
    return {
      async send(p: string): Promise<any> {
        const n = answers.length;
        writeStdin(ka, `${p}\n`, false);
        await waitFor(() => answers.length > n, 5000, 10);
        return answers[n];
      },
      close: () => new Promise<void>((resolve) => { ka.on('close', () => resolve()); writeStdin(ka, ''); }),
    };
  };

  t.test('a drained host keeps its flows and takes no new connection', async (t) => {
    if (!good) { t.fail('not run: it builds on the reload test, which did not finish'); return; }
    const ka = keepAlive();
    try {
      const one = await ka.send('/host2/one');
      t.equal(one?.body, 'served by host2\n', 'a keep-alive connection is on host2');
      const drained = structuredClone(good);
      drained.hosts[1].drain = true;
      writeLb(drained);
      const r = await cli(['reload', '--socket', lbSock]);
      t.match(r.out, /host host2 draining/, `reload: ${r.out.trim()}`);
      // The keep-alive connection's handoff to host2 (and earlier ones) counted before the baseline.
      t.ok(await noHandoffPending(), 'no handoff under way');
      const m0 = await metrics();
      t.equal(m0.get('handoff_host_draining{host="host2"}'), 1, 'handoff_host_draining{host="host2"} is 1');
      const toHost2 = m0.get('handoff_host_handoffs_total{host="host2"}');
      for (let i = 0; i < 8; i++) t.equal((await curl('/')).body, 'served by host1\n', `new connection ${i + 1}: host1`);
      const noHost = await curl('/host2/');
      t.not(noHost.status, 200, `a new connection whose only pool is host2's is refused (curl exit ${noHost.code})`);
      const two = await ka.send('/host2/two');
      t.equal(two?.body, 'served by host2\n', 'the connection already on host2 carries on');
      t.equal(two?.sockets, 1, 'on the same TCP connection');
      t.equal((await metrics()).get('handoff_host_handoffs_total{host="host2"}'), toHost2, 'no new handoff to host2');
    } finally {
      await ka.close();
      writeLb(good);
      await cli(['reload', '--socket', lbSock]);
    }
  });

  t.test('a stopped host is taken out, new requests still succeed, and it comes back', async (t) => {
    const h2 = hosts[1];
    h2.child.kill('SIGSTOP');
    try {
      const results: number[] = [];
      // New connections while the checks notice: a blob to host2 fails over to host1.
      const end = Date.now() + 2500;
      while (Date.now() < end) results.push((await curl('/')).status);
      t.ok(results.every((s) => s === 200), `all ${results.length} requests while host2 was being taken out got 200`);
      const st = await waitForAsync(async () => (await status()).hosts[1].health.up === false, 5000, 50);
      t.ok(st, 'host2 is down after its failed checks');
      const m0 = await metrics();
      t.equal(m0.get('handoff_host_up{host="host2"}'), 0, 'handoff_host_up{host="host2"} is 0');
      t.equal(m0.get('handoff_host_eligible{host="host2"}'), 0, 'and it is not eligible');
      const shown = await cli(['status', '--socket', lbSock]);
      t.match(shown.out, /host host2 .* DOWN \(takes no new connections\)/, '`handoff status` shows it down');
      t.match(shown.out, /host host1 .* up\n/, 'and host1 up');
      const failovers0 = m0.get('handoff_failovers_total') ?? 0;
      const toHost2 = m0.get('handoff_host_handoffs_total{host="host2"}') ?? 0;
      for (let i = 0; i < 10; i++) {
        const r = await curl('/');
        t.equal(r.body, 'served by host1\n', `request ${i + 1} after removal: served by host1`);
      }
      const m1 = await metrics();
      t.equal(m1.get('handoff_host_handoffs_total{host="host2"}'), toHost2, 'no new handoff went to host2');
      t.equal(m1.get('handoff_failovers_total'), failovers0, 'and none needed a failover');
    } finally {
      h2.child.kill('SIGCONT');
    }
    const back = await waitForAsync(async () => (await status()).hosts[1].eligible === true, 5000, 50);
    t.ok(back, 'host2 rejoins after its checks pass again');
  });

  t.test('SIGTERM to a host agent: it announces draining, its connections finish, then it exits', async (t) => {
    const ka = keepAlive();
    t.equal((await ka.send('/host2/a'))?.body, 'served by host2\n', 'a keep-alive connection is on host2');
    hosts[1].child.kill('SIGTERM');
    await hosts[1].waitLine((l) => l.event === 'draining', 5000);
    const seen = await waitForAsync(async () => (await status()).hosts[1].health?.draining === true, 5000, 50);
    t.ok(seen, 'the balancer learns it from the PONG: host2 draining');
    t.equal((await status()).hosts[1].eligible, false, 'and sends it no new connection');
    for (let i = 0; i < 5; i++) t.equal((await curl('/')).body, 'served by host1\n', `new connection ${i + 1}: host1`);
    const r = await ka.send('/host2/b');
    t.equal(r?.body, 'served by host2\n', 'the open connection on host2 is still served');
    await ka.close();
    const code = await Promise.race([hosts[1].exit, sleep(8000).then(() => 'timeout')]);
    t.equal(code, 0, 'host2 exits 0 once its connection closed');
    t.ok(hosts[1].find((l) => l.event === 'drained' && l.flowsLeft === 0), 'logging that no connection was left');
  });

  t.test('SIGTERM to the balancer drains: /healthz 503, flows finish, exit 0', async (t) => {
    const ka = keepAlive();
    t.equal((await ka.send('/a'))?.body, 'served by host1\n', 'a keep-alive connection through the balancer');
    lb.child.kill('SIGTERM');
    await lb.waitLine((l) => l.event === 'draining', 5000);
    const h = await fetch(`http://127.0.0.1:${metricsPort}/healthz`);
    t.equal(h.status, 503, '/healthz answers 503 while draining');
    t.match(await h.text(), /draining/, 'saying why');
    t.equal((await metrics()).get('handoff_balancer_draining'), 1, 'handoff_balancer_draining is 1');
    t.equal((await ka.send('/b'))?.body, 'served by host1\n', 'the open flow is still tunnelled');
    t.ok(lb.running, 'the balancer waits for it');
    await ka.close();
    const code = await Promise.race([lb.exit, sleep(9000).then(() => 'timeout')]);
    t.equal(code, 0, 'it exits 0 once the flow is gone (closing timeout 1 s)');
    const drained = lb.find((l) => l.event === 'drained');
    t.equal(drained?.complete, true, 'logging a complete drain');
    t.notMatch(lb.output(), new RegExp(KEY_HEX), 'the cluster key never appears in the logs');
    t.notMatch(lb.output(), /GET \/host2/, 'nor client payloads');
  });
}
