// The third way to hand a connection to the application (design.md §2,
// issue 17): the host agent passes each injected connection's descriptor
// over a UNIX socket (SCM_RIGHTS) to a server in another language, here
// docs/examples/pass-receiver.py. curl through the balancer is answered by
// it directly; the agent learns from the kernel (sock_diag) when the
// connection is gone and tells the balancer (CLOSED). Needs root and python3.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { Balancer } from '../src/controller/balancer';
import { parseBalancerConfig } from '../src/controller/config';
import { isRoot, waitFor } from './lib/harness';
import { Topology } from './lib/netns';
import { LoggedProc } from './lib/procs';

const run = promisify(execFile);
const VIP = '198.18.0.100';
const LB_IP = '198.18.0.2';
const KEY_HEX = crypto.randomBytes(32).toString('hex');
const cli = path.resolve(__dirname, '../src/controller/cli.js');
const RECEIVER = path.resolve(__dirname, '../../docs/examples/pass-receiver.py');
const noPython = spawnSync('sh', ['-c', 'command -v python3'], { stdio: 'ignore' }).status !== 0;

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, TCP_REPAIR');
} else if (noPython) {
  t.plan(0, 'python3 is not installed');
} else {
  const topo = new Topology('p');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-pass-'));
  t.teardown(() => { topo.destroy(); fs.rmSync(dir, { recursive: true, force: true }); });
  const lbDev = topo.rootPort('lb');
  const client = topo.host('cli', '198.18.0.1/24');
  const host = topo.host('h1', '198.18.0.11/24');
  const sock = path.join(dir, 'app.sock');
  const receiverProc = new LoggedProc(topo.spawn(host.ns, 'python3', [RECEIVER, sock, 'host1']), 'receiver');
  const receiver = () => receiverProc.output();
  const file = path.join(dir, 'host1.yaml');
  fs.writeFileSync(file, [
    'name: host1', 'listen: { port: 4791 }', `balancers: [${LB_IP}]`,
    `vips: [{ ip: ${VIP}, port: 80, app: { kind: unix, path: ${sock} } }]`,
    `control: { socket: ${path.join(dir, 'host1.sock')} }`, '',
  ].join('\n'));
  const agentProc = topo.spawn(host.ns, 'env', [`HANDOFF_CLUSTER_KEY=${KEY_HEX}`, process.execPath, cli, 'host', '--config', file]);
  const agentLog = new LoggedProc(agentProc, 'host1');
  const agent = () => agentLog.output();
  let lb: Balancer | undefined;

  t.test('the receiver and the agent start', async (t) => {
    t.ok(await waitFor(() => /listening on/.test(receiver()), 10000, 50), `receiver up: ${receiver()}`);
    t.ok(await waitFor(() => /VXLAN device vx0/.test(agent()), 10000, 50), `agent up: ${agent().slice(0, 300)}`);
    lb = new Balancer(parseBalancerConfig({
      eal: { vdevs: [`net_af_packet0,iface=${lbDev}`], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_af_packet0', ip: LB_IP }],
      vips: [{ ip: VIP, port: 80 }],
      hosts: [{ name: 'host1', ip: host.ip }],
      health: { intervalMs: 200, timeoutMs: 200 },
      routing: { pools: [{ name: 'p', hosts: [{ host: 'host1' }] }], defaults: [{ vip: VIP, port: 80, pool: 'p' }] },
    }, 'pass'), { clusterKey: Buffer.from(KEY_HEX, 'hex') });
    lb.start();
    t.ok(await waitFor(() => lb!.eligible('host1'), 10000, 50), 'host1 eligible (its MACs learned)');
  });

  t.test('curl is answered by the Python server the agent passed the connection to', async (t) => {
    const out = (await run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '--max-time', '10', `http://${VIP}/hello`])).stdout;
    t.match(out, /^served by python on host1: \/hello \(flow \d+, client 198\.18\.0\.1:\d+\)\n$/,
      'the request the balancer read was in the socket for the receiver');
    t.ok(await waitFor(() => lb!.engine!.stats.handoffsCompleted === 1, 3000, 10), 'one handoff');
    // The agent holds no descriptor: it asks the kernel, and tells the balancer once the socket is gone.
    t.ok(await waitFor(() => lb!.engine!.stats.hostClosed === 1, 10000, 50), 'the host reported the connection closed (CLOSED)');
    const many = await Promise.all([1, 2, 3, 4, 5].map((i) =>
      run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '--max-time', '10', `http://${VIP}/n${i}`]).then((r) => r.stdout)));
    t.same(many.map((o) => /: (\/n\d) /.exec(o)?.[1]), ['/n1', '/n2', '/n3', '/n4', '/n5'], 'five at once, each answered');
    t.ok(await waitFor(() => lb!.engine!.stats.hostClosed === 6, 10000, 50), 'and each reported closed');
  });

  t.test('nobody listening: the client is reset, the agent counts it', async (t) => {
    fs.rmSync(sock, { force: true }); // the receiver still runs, but no longer at that path
    const r = await run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10',
      `http://${VIP}/gone`]).catch((e: { code?: number; stdout?: string }) => e);
    t.not((r as { code?: number }).code ?? 0, 0, 'curl fails');
    t.ok(await waitFor(() => /not passed to/.test(agent()), 5000, 50), 'the agent logged why');
  });

  t.test('shut down', async (t) => {
    await lb?.stop();
    agentProc.kill('SIGTERM');
    await waitFor(() => agentProc.exitCode !== null || agentProc.signalCode !== null, 5000, 50);
    t.pass('stopped');
  });
}
