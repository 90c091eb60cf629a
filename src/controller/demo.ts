import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { fetchControl, fetchStatus, HttpEndpoint } from './control';
import { NsHost, sh, Topology } from './netns';
import { ClusterLab } from './cluster-lab';

// The embedded default behind `npm start` (design.md §2): the test topology
// with one balancer and two hosts, reachable from this (the root) namespace.
const VIP = '198.18.0.100';
const CLIENT_CIDR = '198.18.0.1/24';
const LB_IP = '198.18.0.2';
const HOSTS = [{ name: 'host1', cidr: '198.18.0.11/24' }, { name: 'host2', cidr: '198.18.0.12/24' }];
const cli = path.resolve(__dirname, 'cli.js');
const template = path.resolve(__dirname, '../../../configs/demo.yaml');

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Leftovers of a demo that was killed: removed before building anew. */
function removeStale(): void {
  for (const ns of sh('ip', ['netns', 'list'], { allowFail: true }).split('\n').map((l) => l.split(' ')[0])) {
    if (!/^handoff-(lb\d*|host1|host2|rt|cl)$/.test(ns)) continue;
    // Processes of a demo killed without its teardown keep the namespace (and its veth) alive.
    for (const pid of sh('ip', ['netns', 'pids', ns], { allowFail: true }).split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
    sh('ip', ['netns', 'del', ns], { allowFail: true });
  }
  // The root ends of the veth pairs (Topology names them handoff<name>) and the bridge.
  for (const link of ['handofflb', 'handoffhost1', 'handoffhost2', 'handoff-br', 'handoffc-br', 'handoffrt', 'handoffcrtc',
    ...[1, 2, 3, 4, 5, 6, 7, 8].flatMap((i) => [`handofflb${i}`, `handoffm${i}`])]) sh('ip', ['link', 'del', link], { allowFail: true });
  sh('ip', ['route', 'del', '198.18.0.100/32', 'via', '198.18.2.1'], { allowFail: true });
}

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms: number, log: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what} did not come up within ${ms / 1000} s:\n${log().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function yaml(lines: Array<string | false>): string {
  return lines.filter((l) => l !== false).join('\n') + '\n';
}

export async function runDemo(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    say('Usage: handoff demo  (see handoff help demo)');
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('handoff demo: needs root (it creates network namespaces and runs DPDK); run: sudo npm start\n');
    return 1;
  }
  const bi = argv.indexOf('--balancers');
  const balancers = bi >= 0 ? Number(argv[bi + 1]) : 1;
  if (!Number.isInteger(balancers) || balancers < 1 || balancers > 8) {
    process.stderr.write('handoff demo: --balancers takes 1..8\n');
    return 2;
  }
  removeStale();
  if (balancers > 1) return runClusterDemo(balancers);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-demo-'));
  const key = crypto.randomBytes(32).toString('hex');
  const env = { ...process.env, HANDOFF_CLUSTER_KEY: key };
  const topo = new Topology('handoff', { fixedNames: true });
  const logs = new Map<string, string>();
  let stopping = false;
  let metricsHttp: HttpEndpoint | undefined;
  // One teardown, awaited by whoever else would end the process: the live
  // table returns once `stopping` is set, and `handoff` exits when runDemo
  // returns, which once left the namespaces behind (CI: the teardown was
  // still waiting for the balancer's drain).
  let tearing: Promise<void> | undefined;
  const teardown = (code: number) => (tearing ??= (async () => {
    stopping = true;
    say('\nhandoff demo: stopping');
    metricsHttp?.close();
    await topo.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
    say('handoff demo: namespaces, bridge and processes removed');
    process.exit(code);
  })());
  process.once('SIGINT', () => void teardown(0));
  process.once('SIGTERM', () => void teardown(0));

  try {
    topo.bridgeAddress(CLIENT_CIDR);
    const lbNs = topo.host('lb', '');
    const hosts: NsHost[] = HOSTS.map((h) => topo.host(h.name, h.cidr));
    const start = (name: string, ns: string, args: string[]) => {
      const child = topo.spawn(ns, process.execPath, [cli, ...args], env);
      logs.set(name, '');
      const keep = (d: Buffer) => logs.set(name, (logs.get(name)! + d.toString()).slice(-20000));
      child.stdout?.on('data', keep);
      child.stderr?.on('data', keep);
      child.on('exit', (c, sig) => {
        if (!stopping) {
          process.stderr.write(`handoff demo: ${name} exited (${c ?? sig}):\n${logs.get(name)!.slice(-2000)}\n`);
          void teardown(1);
        }
      });
    };

    for (const [i, h] of HOSTS.entries()) {
      const file = path.join(dir, `${h.name}.yaml`);
      fs.writeFileSync(file, yaml([
        `name: ${h.name}`, 'listen: { port: 4791 }', 'shutdown: { drainTimeoutMs: 1000 }', `vips: [{ ip: ${VIP}, port: 80 }]`, `balancers: [${LB_IP}]`,
        'app: { kind: demo }', `control: { socket: ${path.join(dir, `${h.name}.sock`)} }`,
      ]));
      start(h.name, hosts[i].ns, ['host', '--config', file]);
      // Up before the balancer, so its first health checks find the agents (and learn their VXLAN MACs).
      await waitFor(h.name, () => /VXLAN device vx0 ([0-9a-f:]{17})/.test(logs.get(h.name)!), 15000, () => logs.get(h.name)!);
    }

    const lbSock = path.join(dir, 'lb.sock');
    const lbFile = path.join(dir, 'lb.yaml');
    // configs/demo.yaml, with what only exists now: the control socket. No MAC: the balancer learns them.
    const lbCfg = YAML.parse(fs.readFileSync(template, 'utf8'));
    lbCfg.control = { socket: lbSock };
    fs.writeFileSync(lbFile, '# Generated by handoff demo from configs/demo.yaml\n' + YAML.stringify(lbCfg));
    start('balancer', lbNs.ns, ['lb', '--config', lbFile]);
    // Ready when every host can take connections: its MACs resolved (ARP) and learned (first health answer).
    await waitFor('the balancer and its hosts', async () => {
      try {
        const st = await fetchStatus(lbSock, 500) as { hosts?: Array<{ eligible?: boolean }> };
        return !!st.hosts?.length && st.hosts.every((h) => h.eligible);
      } catch {
        return false;
      }
    }, 30000, () => logs.get('balancer')!);

    // The balancer lives in handoff-lb; its metrics are relayed here so a browser or Prometheus on this machine reaches them.
    const relay = (path: string) => async () => {
      const r = await fetchControl(lbSock, path);
      return { contentType: r.contentType, body: r.body };
    };
    metricsHttp = new HttpEndpoint({
      status: () => ({ see: `handoff status --socket ${lbSock}` }),
      metrics: relay('/metrics'),
      healthz: () => ({ ok: true, reason: 'ok' }),
    });
    let metricsPort = 0;
    for (const p of [9464, 0]) {
      try {
        metricsPort = await metricsHttp.listen('127.0.0.1', p);
        break;
      } catch { /* 9464 taken: any free port */ }
    }
    say('');
    say(`handoff demo: metrics at http://127.0.0.1:${metricsPort}/metrics`);
    say('handoff demo: ready. A balancer (namespace handoff-lb) and two hosts (handoff-host1, handoff-host2).');
    say(`  http://${VIP}/`);
    say('Try, from this shell:');
    say(`  curl http://${VIP}/                        # a host of the default pool answers`);
    say(`  curl http://${VIP}/host2/ ; curl -H 'Host: host2.demo' http://${VIP}/   # routed to host2`);
    say(`  curl -s http://${VIP}/bytes/10000000 | wc -c   # 10 MB straight from the host, not through the balancer`);
    say('Ctrl-C stops everything.');
    say('');
    await liveTable(lbSock, HOSTS.map((h) => path.join(dir, `${h.name}.sock`)), () => stopping);
  } catch (err) {
    process.stderr.write(`handoff demo: ${(err as Error).message}\n`);
    await teardown(1);
  }
  await tearing; // it exits the process
  return 0;
}

/** Print the table every second until stopped (redrawn in place on a terminal). */
async function liveTable(lbSock: string, hostSocks: string[], stopped: () => boolean): Promise<void> {
  const tty = process.stdout.isTTY;
  let lines = 0;
  let last = '';
  while (!stopped()) {
    try {
      const lb = await fetchStatus<Record<string, any>>(lbSock);
      const hs = await Promise.all(hostSocks.map((s) => fetchStatus<Record<string, any>>(s).catch(() => undefined)));
      const c = lb.counters ?? {};
      const e = lb.engine ?? {};
      const served = hs.reduce((s, h) => s + (h?.served?.bytes ?? 0), 0);
      const out = [
        `connections accepted ${c.accepted ?? 0}   handoffs ${e.handoffsCompleted ?? 0}   failed ${e.handoffsFailed ?? 0}   ` +
          `mappings ${lb.mappings}   handoff p50 ${Math.round(e.latencyUs?.p50 || 0)} us`,
        ...hs.map((h, i) => `  ${(h?.name ?? `host${i + 1}`).padEnd(6)} handoffs ${String(lb.hosts?.[i]?.handoffs ?? 0).padStart(6)}` +
          `   requests ${String(h?.served?.requests ?? 0).padStart(6)}   bytes served ${String(h?.served?.bytes ?? 0).padStart(12)}`),
        `  bytes through the balancer ${c.tx_bytes ?? 0} (client packets tunnelled, SYN-ACKs, ACKs, blobs)   bytes served by hosts ${served}`,
      ];
      const text = out.join('\n');
      if (tty) {
        if (lines) process.stdout.write(`\x1b[${lines}A\x1b[J`);
        process.stdout.write(text + '\n');
        lines = out.length;
      } else if (text !== last) {
        process.stdout.write(`[${new Date().toISOString()}]\n${text}\n`);
      }
      last = text;
    } catch {
      /* a process is restarting or stopping: the next round tells */
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/**
 * `handoff demo --balancers N` (issue 16): N balancers behind a router
 * namespace (BIRD and BGP when bird2 is installed, else static ECMP), two
 * hosts; curl the VIP from this shell. The table shows each balancer's flows.
 */
async function runClusterDemo(n: number): Promise<number> {
  const bgp = sh('sh', ['-c', 'command -v bird || true']).trim() !== '';
  const lab = new ClusterLab({ balancers: n, fixedNames: true, clientInRoot: true, bgp, keyHex: crypto.randomBytes(32).toString('hex') });
  let stopping = false;
  let tearing: Promise<void> | undefined;
  const teardown = (code: number) => (tearing ??= (async () => {
    stopping = true;
    say('\nhandoff demo: stopping');
    await lab.shutdown();
    say('handoff demo: namespaces, bridges and processes removed');
    process.exit(code);
  })());
  process.once('SIGINT', () => void teardown(0));
  process.once('SIGTERM', () => void teardown(0));
  try {
    await lab.start();
  } catch (err) {
    process.stderr.write(`handoff demo: ${(err as Error).message}\n`);
    await teardown(1);
    return 1;
  }
  say('');
  say(`handoff demo: ready. ${n} balancers (handoff-lb1..${n}) behind a router (handoff-rt, ${bgp ? 'BGP with BIRD' : 'static ECMP'}), two hosts.`);
  say(`  curl http://${lab.vip}/            # from this shell, through the router`);
  say(`  ip netns exec handoff-rt ip route show ${lab.vip}   # one next hop per balancer`);
  say('  kill -9 a balancer (ip netns pids handoff-lb2): its flows move to the others and keep going.');
  say('Ctrl-C stops everything.');
  say('');
  const tty = process.stdout.isTTY;
  let lines = 0;
  while (!stopping) {
    const rows: string[] = [`router next hops: ${lab.nexthops().join(', ') || 'none'}`];
    for (let i = 0; i < n; i++) {
      try {
        const s = await lab.status(i);
        const e = s.engine ?? {};
        rows.push(`  lb${i + 1} ${lab.balancerIps[i].padEnd(12)} mappings ${String(s.mappings).padStart(5)}   handoffs ${String(e.handoffsCompleted ?? 0).padStart(6)}`
          + `   adopted ${String(e.adopted ?? 0).padStart(5)}   recovered ${String(s.stray?.recovered ?? 0).padStart(5)}${s.bgp ? `   bgp ${s.bgp.announced ? 'announced' : 'withdrawn'}` : ''}`);
      } catch {
        rows.push(`  lb${i + 1} ${lab.balancerIps[i].padEnd(12)} down`);
      }
    }
    if (tty && lines) process.stdout.write(`\x1b[${lines}A\x1b[J`);
    process.stdout.write(rows.join('\n') + '\n');
    lines = rows.length;
    await new Promise((r) => setTimeout(r, tty ? 1000 : 5000));
  }
  await tearing; // it exits the process
  return 0;
}
