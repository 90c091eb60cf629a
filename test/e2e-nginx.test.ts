// Any server behind the host agent, per VIP service (issue 17): nginx from
// Debian in the host's namespace, plain HTTP on 127.0.0.1:8080 and TLS on
// 127.0.0.1:8443; the agent forwards the VIP's :80 to the one and :443 to
// the other (vips[].app), and curl reaches both through the balancer, with
// the TLS ClientHello classified there and handed over unread by nginx
// until then; both in the kernel (splice), checked in the agent's status. Needs root, nginx and openssl.
import t from 'tap';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { Balancer } from '../src/controller/balancer';
import { parseBalancerConfig } from '../src/controller/config';
import { fetchStatus } from '../src/controller/control';
import { isRoot, waitFor } from './lib/harness';
import { Topology, sh } from './lib/netns';
import { LoggedProc } from './lib/procs';

const run = promisify(execFile);
const VIP = '198.18.0.100';
const LB_IP = '198.18.0.2';
const KEY_HEX = crypto.randomBytes(32).toString('hex');
const cli = path.resolve(__dirname, '../src/controller/cli.js');
const missing = ['nginx', 'openssl', 'curl'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`], { stdio: 'ignore' }).status !== 0);

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces, AF_PACKET, TCP_REPAIR');
} else if (missing.length) {
  t.plan(0, `not installed: ${missing.join(', ')} (scripts/setup.sh installs them)`);
} else {
  const topo = new Topology('x');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-nginx-'));
  t.teardown(() => { topo.destroy(); fs.rmSync(dir, { recursive: true, force: true }); });
  const lbDev = topo.rootPort('lb');
  const client = topo.host('cli', '198.18.0.1/24');
  const host = topo.host('h1', '198.18.0.11/24');
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=web.example',
    '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')]);
  fs.mkdirSync(path.join(dir, 'tmp'));
  fs.writeFileSync(path.join(dir, 'nginx.conf'), `
worker_processes 1;
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp; proxy_temp_path ${dir}/tmp; fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp; scgi_temp_path ${dir}/tmp;
  server { listen 127.0.0.1:8080; location / { return 200 "nginx on host1 over http: $request_uri\\n"; } }
  server {
    listen 127.0.0.1:8443 ssl; server_name web.example;
    ssl_certificate ${dir}/cert.pem; ssl_certificate_key ${dir}/key.pem;
    location / { return 200 "nginx on host1 over https ($ssl_server_name): $request_uri\\n"; }
  }
}
`);
  const nginx = topo.spawn(host.ns, 'nginx', ['-c', path.join(dir, 'nginx.conf'), '-p', dir, '-g', 'daemon off;']);
  const nginxLog = new LoggedProc(nginx, 'nginx');
  const nginxOut = () => nginxLog.output();
  const file = path.join(dir, 'host1.yaml');
  fs.writeFileSync(file, [
    'name: host1', 'listen: { port: 4791 }', `balancers: [${LB_IP}]`, 'vips:',
    `  - { ip: ${VIP}, port: 80, app: { kind: forward, upstream: { host: 127.0.0.1, port: 8080 } } }`,
    `  - { ip: ${VIP}, port: 443, app: { kind: forward, upstream: { host: 127.0.0.1, port: 8443 } } }`,
    `control: { socket: ${path.join(dir, 'host1.sock')} }`, '',
  ].join('\n'));
  const agentProc = topo.spawn(host.ns, 'env', [`HANDOFF_CLUSTER_KEY=${KEY_HEX}`, process.execPath, cli, 'host', '--config', file]);
  const agentLog = new LoggedProc(agentProc, 'host1');
  const agent = () => agentLog.output();
  let lb: Balancer | undefined;

  t.test('nginx, the agent and the balancer start', async (t) => {
    t.ok(await waitFor(() => {
      try {
        sh('bash', ['-c', 'exec 3<>/dev/tcp/127.0.0.1/8080'], { ns: host.ns });
        return true;
      } catch {
        return false;
      }
    }, 10000, 100), `nginx listens: ${nginxOut()}`);
    t.ok(await waitFor(() => /VXLAN device vx0/.test(agent()), 10000, 50), `agent up: ${agent().slice(0, 300)}`);
    lb = new Balancer(parseBalancerConfig({
      eal: { vdevs: [`net_af_packet0,iface=${lbDev}`], memoryMb: 256, extraArgs: ['--no-telemetry'] },
      ports: [{ device: 'net_af_packet0', ip: LB_IP }],
      vips: [{ ip: VIP, port: 80 }, { ip: VIP, port: 443 }],
      hosts: [{ name: 'host1', ip: host.ip }],
      health: { intervalMs: 200, timeoutMs: 200 },
      routing: { pools: [{ name: 'web', hosts: [{ host: 'host1' }] }],
        defaults: [{ vip: VIP, port: 80, pool: 'web' }, { vip: VIP, port: 443, pool: 'web' }] },
    }, 'nginx'), { clusterKey: Buffer.from(KEY_HEX, 'hex') });
    lb.start();
    t.ok(await waitFor(() => lb!.eligible('host1'), 10000, 50), 'host1 eligible');
  });

  const curl = async (args: string[]) =>
    (await run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '--max-time', '10', ...args])).stdout;

  t.test('the VIP\'s :80 reaches nginx\'s HTTP port, :443 its TLS port', async (t) => {
    t.equal(await curl([`http://${VIP}/plain`]), 'nginx on host1 over http: /plain\n', 'HTTP to 8080');
    t.equal(await curl(['-k', '--resolve', `web.example:443:${VIP}`, 'https://web.example/secure']),
      'nginx on host1 over https (web.example): /secure\n', 'TLS to 8443, the SNI intact');
    t.ok(await waitFor(() => lb!.engine!.stats.handoffsCompleted === 2, 3000, 10), 'two handoffs');
    t.equal(lb!.engine!.stats.handoffsFailed, 0);
    // Both went through the kernel (splice), not through the agent's JS.
    // (A UNIX socket's path reaches across network namespaces.)
    const st = await fetchStatus<{ forwards: Record<string, { inKernel: boolean; connections: number; bytesToClient: number; upstreamErrors: number }> }>(
      path.join(dir, 'host1.sock'));
    for (const port of [80, 443]) {
      const f = st.forwards[`${VIP}:${port}`];
      t.match(f, { inKernel: true, connections: 1, upstreamErrors: 0 }, `:${port} forwarded in the kernel: ${JSON.stringify(f)}`);
      t.ok(f?.bytesToClient > 0, `:${port}: nginx's answer spliced to the client (${f?.bytesToClient} bytes)`);
    }
  });

  t.test('shut down', async (t) => {
    await lb?.stop();
    agentProc.kill('SIGTERM');
    nginx.kill('SIGQUIT');
    await waitFor(() => [agentProc, nginx].every((c) => c.exitCode !== null || c.signalCode !== null), 5000, 50);
    t.pass('stopped');
  });
}
