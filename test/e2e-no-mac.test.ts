// A balancer configured by addresses alone (issue 17): no MAC anywhere in its
// config. host1 is on the balancer's link; host2 sits in another subnet
// behind a router namespace (the port's gateway). The shim ARPs for host1
// and for the gateway, the agents tell their VXLAN MACs in their health
// answers, and curl is served by both, host2's answers going out through the
// router (direct server return). Needs root.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Balancer } from '../src/controller/balancer';
import { parseBalancerConfig } from '../src/controller/config';
import { isRoot, waitFor } from './lib/harness';
import { Topology, sh } from './lib/netns';

const run = promisify(execFile);
const VIP = '198.18.0.100';
const LB_IP = '198.18.0.2';
const ROUTER_NEAR = '198.18.0.254';
const ROUTER_FAR = '198.19.1.1';
const KEY_HEX = crypto.randomBytes(32).toString('hex');
const cli = path.resolve(__dirname, '../src/controller/cli.js');

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, TCP_REPAIR');
} else {
  const near = new Topology('m');
  const far = new Topology('n');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-nomac-'));
  t.teardown(() => { far.destroy(); near.destroy(); fs.rmSync(dir, { recursive: true, force: true }); });
  const lbDev = near.rootPort('lb');
  const client = near.host('cli', '198.18.0.1/24');
  const host1 = near.host('h1', '198.18.0.11/24');
  // The router: one leg on each bridge, forwarding, no reverse-path check
  // (host2's answers come from the VIP, an address of the near side).
  const router = near.host('rt', `${ROUTER_NEAR}/24`);
  const routerFar = far.attach(router.ns, 'rt', 'eth1', `${ROUTER_FAR}/24`);
  sh('sysctl', ['-qw', 'net.ipv4.ip_forward=1'], { ns: router.ns });
  for (const k of ['all', 'default', 'eth0', 'eth1']) sh('sysctl', ['-qw', `net.ipv4.conf.${k}.rp_filter=0`], { ns: router.ns });
  const host2 = far.host('h2', '198.19.1.12/24');
  sh('ip', ['route', 'add', 'default', 'via', ROUTER_FAR], { ns: host2.ns });
  const hosts = [host1, host2];

  const agents = hosts.map((h, i) => {
    const file = path.join(dir, `host${i + 1}.yaml`);
    fs.writeFileSync(file, [
      `name: host${i + 1}`, 'listen: { port: 4791 }', `vips: [{ ip: ${VIP}, port: 80 }]`, `balancers: [${LB_IP}]`,
      'app: { kind: demo }', `control: { socket: ${path.join(dir, `host${i + 1}.sock`)} }`, '',
    ].join('\n'));
    const child = (i ? far : near).spawn(h.ns, 'env', [`HANDOFF_CLUSTER_KEY=${KEY_HEX}`, process.execPath, cli, 'host', '--config', file]);
    let out = '';
    child.stdout?.on('data', (d) => { out += d; });
    child.stderr?.on('data', (d) => { out += d; });
    return { child, out: () => out };
  });
  const vxMac = (i: number) => JSON.parse(sh('ip', ['-j', 'link', 'show', 'vx0'], { ns: hosts[i].ns }))[0].address as string;
  let lb: Balancer | undefined;
  type HostStatus = { name: string; eligible: boolean; macs: { nexthop: string; nexthopMac: string | null; innerMac: string | null } };
  const status = () => lb!.status() as { hosts: HostStatus[]; neighbours: { requestsSent: number; learned: number } };

  t.test('host agents start', async (t) => {
    for (const [i, a] of agents.entries()) {
      t.ok(await waitFor(() => /VXLAN device vx0 ([0-9a-f:]{17})/.test(a.out()), 10000, 50), `host${i + 1} agent up: ${a.out().slice(0, 300)}`);
    }
  });

  t.test('a balancer config without a single MAC address', async (t) => {
    const raw = {
      eal: { vdevs: [`net_af_packet0,iface=${lbDev}`], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_af_packet0', ip: LB_IP, prefixLength: 24, gateway: ROUTER_NEAR }],
      vips: [{ ip: VIP, port: 80 }],
      hosts: hosts.map((h, i) => ({ name: `host${i + 1}`, ip: h.ip })),
      health: { intervalMs: 200, timeoutMs: 200 },
      routing: {
        pools: [{ name: 'one', hosts: [{ host: 'host1' }] }, { name: 'two', hosts: [{ host: 'host2' }] }],
        rules: [{ name: 'path-two', match: { pathPrefix: '/two' }, pool: 'two' }],
        defaults: [{ vip: VIP, port: 80, pool: 'one' }],
      },
    };
    t.notMatch(JSON.stringify(raw), /([0-9a-f]{2}:){5}[0-9a-f]{2}/i, 'no MAC in it');
    lb = new Balancer(parseBalancerConfig(raw, 'no-mac'), { clusterKey: Buffer.from(KEY_HEX, 'hex') });
    lb.start();
    t.ok(await waitFor(() => status().hosts.every((h) => h.eligible), 15000, 50),
      `both hosts become eligible: ${JSON.stringify(status().hosts.map((h) => h.macs))}`);
    const [s1, s2] = status().hosts;
    t.same(s1.macs, { nexthop: host1.ip, nexthopMac: host1.mac, innerMac: vxMac(0), usable: true },
      'host1: its own MAC by ARP, its VXLAN MAC from its agent');
    t.same(s2.macs, { nexthop: ROUTER_NEAR, nexthopMac: router.mac, innerMac: vxMac(1), usable: true },
      'host2, in another subnet: the gateway\'s MAC by ARP');
    t.ok(status().neighbours.learned >= 2, 'learned from ARP replies');
    t.ok(lb.shim.counters().total.exception_arp >= 2n, 'which the shim passed up (exception_arp)');
  });

  const curl = async (args: string[]) => (await run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '--max-time', '10', ...args],
    { encoding: 'buffer' })).stdout.toString();

  t.test('curl is served by both hosts, host2 through the router', async (t) => {
    t.equal(await curl([`http://${VIP}/a`]), 'served by host1\n', 'host1, on the link');
    const fwd0 = Number(JSON.parse(sh('ip', ['-j', '-s', 'link', 'show', 'eth1'], { ns: router.ns }))[0].stats64.tx.packets);
    t.equal(await curl([`http://${VIP}/two/b`]), 'served by host2\n', 'host2, behind the router');
    const fwd1 = Number(JSON.parse(sh('ip', ['-j', '-s', 'link', 'show', 'eth1'], { ns: router.ns }))[0].stats64.tx.packets);
    t.ok(fwd1 - fwd0 >= 3, `the router forwarded the tunnel to host2 (${fwd1 - fwd0} packets out of its far leg)`);
    t.ok(await waitFor(() => lb!.engine!.stats.handoffsCompleted >= 2, 3000, 10), 'two handoffs completed');
    t.equal(lb!.engine!.stats.handoffsFailed, 0, 'none failed');
    void routerFar;
  });

  t.test('shut down', async (t) => {
    await lb?.stop();
    for (const a of agents) a.child.kill('SIGTERM');
    await waitFor(() => agents.every((a) => a.child.exitCode !== null || a.child.signalCode !== null), 5000, 50);
    t.pass('stopped');
  });
}
