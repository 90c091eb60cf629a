// The whole handoff with real kernels and real clients (design.md §6): curl
// in a client namespace; the balancer (shim on net_af_packet + the handoff
// engine) in this process; two host namespaces, each running `handoff host`
// (agent + demo app). Needs root.
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
const KEY_HEX = crypto.randomBytes(32).toString('hex');
const cli = path.resolve(__dirname, '../src/controller/cli.js');

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, TCP_REPAIR');
} else {
  const topo = new Topology('e');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-e2e-'));
  t.teardown(() => { topo.destroy(); fs.rmSync(dir, { recursive: true, force: true }); });
  const lbDev = topo.rootPort('lb');
  const client = topo.host('cli', '198.18.0.1/24');
  const hosts = [topo.host('h1', '198.18.0.11/24'), topo.host('h2', '198.18.0.12/24')];

  const agents = hosts.map((h, i) => {
    const file = path.join(dir, `host${i + 1}.yaml`);
    fs.writeFileSync(file, [
      `name: host${i + 1}`, 'listen: { port: 4791 }', `vips: [{ ip: ${VIP}, port: 80 }]`, `balancers: [${LB_IP}]`,
      'app: { kind: demo }',
      // Its own status socket: /run is shared across namespaces, and two agents on the default path race (EADDRINUSE in CI).
      `control: { socket: ${path.join(dir, `host${i + 1}.sock`)} }`, '',
    ].join('\n'));
    const child = topo.spawn(h.ns, 'env', [`HANDOFF_CLUSTER_KEY=${KEY_HEX}`, process.execPath, cli, 'host', '--config', file]);
    let out = '';
    child.stdout?.on('data', (d) => { out += d; });
    child.stderr?.on('data', (d) => { out += d; });
    return { child, out: () => out };
  });

  t.test('host agents start and set up their network', async (t) => {
    for (const [i, a] of agents.entries()) {
      t.ok(await waitFor(() => /VXLAN device vx0 ([0-9a-f:]{17})/.test(a.out()), 10000, 50), `host${i + 1} agent up: ${a.out().slice(0, 300)}`);
      const sysctl = sh('sysctl', ['-n', 'net.ipv4.conf.all.arp_ignore'], { ns: hosts[i].ns }).trim();
      t.equal(sysctl, '1', 'arp_ignore set: the host does not answer ARP for the VIP');
      t.match(sh('ip', ['-br', 'addr', 'show', 'dev', 'lo'], { ns: hosts[i].ns }), VIP, 'VIP on lo');
    }
  });

  const innerMac = (i: number) => /VXLAN device vx0 ([0-9a-f:]{17})/.exec(agents[i].out())?.[1] ?? '00:00:00:00:00:00';
  let lb: Balancer | undefined;

  t.test('balancer with routing starts', async (t) => {
    const cfg = parseBalancerConfig({
      eal: { vdevs: [`net_af_packet0,iface=${lbDev}`], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_af_packet0', ip: LB_IP }],
      vips: [{ ip: VIP, port: 80 }],
      hosts: hosts.map((h, i) => ({ name: `host${i + 1}`, ip: h.ip, nexthopMac: h.mac, innerMac: innerMac(i) })),
      routing: {
        pools: [{ name: 'one', hosts: [{ host: 'host1' }] }, { name: 'two', hosts: [{ host: 'host2' }] }],
        rules: [{ name: 'path-two', match: { pathPrefix: '/two' }, pool: 'two' },
          { name: 'host-one', match: { host: 'one.example' }, pool: 'one' }],
        defaults: [{ vip: VIP, port: 80, pool: 'one' }],
      },
    }, 'e2e');
    lb = new Balancer(cfg, { clusterKey: Buffer.from(KEY_HEX, 'hex') });
    lb.start();
    t.ok(lb.engine, 'the handoff engine runs');
  });

  const curl = async (args: string[]) => (await run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '--max-time', '10', ...args],
    { maxBuffer: 64 << 20, encoding: 'buffer' })).stdout as Buffer;

  t.test('curl by Host and path reaches the chosen host', async (t) => {
    t.equal((await curl(['-H', 'Host: one.example', `http://${VIP}/`])).toString(), 'served by host1\n');
    t.equal((await curl([`http://${VIP}/two/x`])).toString(), 'served by host2\n');
    // The host answers as soon as it has the socket; its final ACK may reach the balancer a moment later.
    t.ok(await waitFor(() => lb!.engine!.stats.handoffsCompleted === 2, 3000, 10), 'two handoffs completed');
  });

  t.test('a 10 MB response arrives intact and never crosses the balancer', async (t) => {
    const before = lb!.shim.counters().total;
    const body = await curl([`http://${VIP}/bytes/10485760`]);
    t.equal(body.length, 10485760, 'all bytes');
    let ok = true;
    for (let i = 0; i < body.length; i++) if (body[i] !== i % 251) { ok = false; break; }
    t.ok(ok, 'every byte is i % 251');
    const after = lb!.shim.counters().total;
    const through = after.tx_bytes - before.tx_bytes;
    t.ok(through < 1_000_000n, `the balancer transmitted ${through} bytes (client ACKs tunnelled), not the 10 MB response`);
    t.ok(after.encap_packets - before.encap_packets > 50n, 'the client\'s ACKs went through the tunnel');
  });

  t.test('the request bytes reach the app exactly, also split over segments', async (t) => {
    const long = 'x'.repeat(3000); // a request head over several segments (MSS 1410)
    t.equal((await curl(['-H', `X-Long: ${long}`, `http://${VIP}/two/long`])).toString(), 'served by host2\n');
  });

  t.test('hosts report closed connections; their mappings go', async (t) => {
    t.ok(await waitFor(() => lb!.engine!.stats.hostClosed >= 4, 5000, 50), `CLOSED notices: ${lb!.engine!.stats.hostClosed}`);
    const gone = await waitFor(() => lb!.shim.mappingCount() === 0, 8000, 100);
    t.ok(gone, 'every mapping removed, well before the idle timeout');
    if (!gone) t.comment(JSON.stringify({ mappings: lb!.shim.mappingCount(), active: lb!.engine!.activeFlows, stats: lb!.engine!.stats }));
    t.equal(lb!.engine!.activeFlows, 0);
  });

  t.test('shut down', async (t) => {
    await lb?.stop();
    for (const a of agents) a.child.kill('SIGTERM');
    await waitFor(() => agents.every((a) => a.child.exitCode !== null || a.child.signalCode !== null), 5000, 50);
    const stats = agents.map((a) => /\{"stats".*\}/.exec(a.out())?.[0]);
    t.comment(`agent stats: ${stats.join(' | ')}`);
    t.pass('stopped');
  });
}
