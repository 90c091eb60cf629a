// The bench's world: design.md §6's topology (src/controller/netns.ts, with
// per-run names so other runs and the demo are untouched), two backend hosts
// (host.ts), a client namespace for wrk, and the two balancers it swaps in and
// run side by side: `handoff lb` in namespace lb (as the demo starts it) and
// HAProxy (Debian's /usr/sbin/haproxy) in namespace hap, each with its VIP.
import type { ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { parseBalancerConfig } from '../../src/controller/config';
import { fetchStatus } from '../../src/controller/control';
import { sh, Topology, type NsHost } from '../../src/controller/netns';
import { haproxyConfig } from './haproxy';
import type { HostChildConfig } from './host';
import { Tail } from '../lib/processes';

export class BenchSetupError extends Error {
  readonly code = 'ERR_BENCH_SETUP';
  override name = 'BenchSetupError';
}

export const VIP = '198.18.0.100';
export const LB_IP = '198.18.0.2';
/** HAProxy's own address and VIP, in its own namespace (hap). */
const HAPROXY_CIDR = '198.18.0.3/24';
export const HAPROXY_VIP = '198.18.0.101';
const CLIENT_CIDR = '198.18.0.1/24';
const HOSTS = [{ name: 'host1', cidr: '198.18.0.11/24' }, { name: 'host2', cidr: '198.18.0.12/24' }];
/**
 * Every column sends its requests to one server, host2: direct to its
 * address, through either balancer by configs/demo.yaml's rule host2-name
 * (Host: host2.demo -> pool two). With the default pool (both hosts) the
 * balancers would get two servers and direct one, and direct would not be
 * the ceiling. checkRoute() makes sure the demo config still says so.
 */
export const ROUTE = { hostHeader: 'host2.demo', hostIndex: 1, hostName: 'host2' };

/** The app's plain TCP port on every host (HAProxy's backends, the direct client). */
export const PLAIN_PORT = 8080;

const ROOT = path.resolve(__dirname, '../../..');
const CLI = path.join(ROOT, 'dist/src/controller/cli.js');
const HOST_JS = path.join(__dirname, 'host.js');
export const DEMO_CONFIG = path.join(ROOT, 'configs/demo.yaml');

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms: number, log: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new BenchSetupError(`${what} did not come up within ${ms / 1000} s:\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface Running {
  name: string;
  pid: number;
  child: ChildProcess;
  tail: Tail;
}

export class BenchWorld {
  readonly topo: Topology;
  readonly client: NsHost;
  readonly lb: NsHost;
  readonly hap: NsHost;
  readonly hosts: NsHost[];
  /**
   * The balancers' veths as seen from the bridge (root namespace): every byte
   * to or from a balancer crosses its own, counted the same way for both.
   */
  readonly wire: { handoff: string; haproxy: string };
  readonly hostProcs: Running[] = [];
  private readonly key = crypto.randomBytes(32).toString('hex');
  private innerMacs: string[] = [];

  /**
   * @param nodeArgs given to the balancer's and hosts' node (e.g. --cpu-prof,
   *   written when they stop)
   */
  constructor(readonly dir: string, private readonly nodeArgs: string[] = []) {
    this.topo = new Topology('b');
    this.lb = this.topo.host('lb', '');
    this.hap = this.topo.host('hap', HAPROXY_CIDR);
    sh('ip', ['addr', 'add', `${HAPROXY_VIP}/32`, 'dev', this.hap.dev], { ns: this.hap.ns });
    this.wire = { handoff: `${this.topo.prefix}lb`, haproxy: `${this.topo.prefix}hap` };
    this.client = this.topo.host('cli', CLIENT_CIDR);
    this.hosts = HOSTS.map((h) => this.topo.host(h.name, h.cidr));
    // Connection: close opens thousands of connections a second: reuse
    // TIME_WAIT ports and use the whole range, so the client never runs out.
    sh('sysctl', ['-qw', 'net.ipv4.tcp_tw_reuse=1'], { ns: this.client.ns });
    sh('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=1024 65535'], { ns: this.client.ns });
  }

  private spawn(name: string, ns: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Running {
    const child = this.topo.spawn(ns, cmd, args, env);
    const tail = new Tail(80);
    child.stdout?.on('data', (d: Buffer) => tail.push(d));
    child.stderr?.on('data', (d: Buffer) => tail.push(d));
    // `ip netns exec` execs the command, so this pid is the process itself (for /proc/PID/stat).
    if (!child.pid) throw new BenchSetupError(`${name}: could not start ${cmd}`);
    return { name, pid: child.pid, child, tail };
  }

  async startHosts(): Promise<void> {
    for (const [i, h] of HOSTS.entries()) {
      const cfg: HostChildConfig = { name: h.name, vip: { ip: VIP, port: 80 }, balancers: [LB_IP], plainPort: PLAIN_PORT };
      const r = this.spawn(h.name, this.hosts[i].ns, process.execPath, [...this.nodeArgs, HOST_JS, JSON.stringify(cfg)],
        { ...process.env, HANDOFF_CLUSTER_KEY: this.key });
      let mac = '';
      r.child.stdout?.on('data', (d: Buffer) => {
        const m = /"ev":"ready","mac":"([0-9a-f:]*)"/.exec(d.toString());
        if (m) mac = m[1];
      });
      await waitFor(h.name, () => mac !== '' || r.child.exitCode !== null, 15000, () => r.tail.text());
      if (!mac) throw new BenchSetupError(`${h.name} exited:\n${r.tail.text()}`);
      this.innerMacs.push(mac);
      this.hostProcs.push(r);
    }
  }

  /** host name -> the app's plain address (for HAProxy and the direct column). */
  plainServers(): Map<string, { ip: string; port: number }> {
    return new Map(HOSTS.map((h, i) => [h.name, { ip: this.hosts[i].ip, port: PLAIN_PORT }]));
  }

  /** configs/demo.yaml with what exists only now: interface, MACs, control socket, stats off. */
  handoffConfig(): { file: string; socket: string; routing: ReturnType<typeof parseBalancerConfig>['routing'] } {
    const doc = YAML.parse(fs.readFileSync(DEMO_CONFIG, 'utf8'));
    doc.eal.vdevs = [`net_af_packet0,iface=${this.lb.dev}`];
    doc.ports = [{ device: 'net_af_packet0', ip: LB_IP }];
    doc.hosts.forEach((h: { nexthopMac: string; innerMac: string }, i: number) => {
      h.nexthopMac = this.hosts[i].mac;
      h.innerMac = this.innerMacs[i] ?? h.innerMac; // the template's placeholder before the hosts are up
    });
    const socket = path.join(this.dir, 'lb.sock');
    doc.control = { socket };
    doc.statsIntervalMs = 0;
    const file = path.join(this.dir, 'lb.yaml');
    fs.writeFileSync(file, `# Generated by bench/e2e-vs-haproxy from configs/demo.yaml\n${YAML.stringify(doc)}`);
    const cfg = parseBalancerConfig(doc, file);
    return { file, socket, routing: cfg.routing };
  }

  /** @throws BenchSetupError unless the demo's rules send ROUTE.hostHeader to a pool of ROUTE.hostName alone. */
  checkRoute(): void {
    const { routing } = this.handoffConfig();
    const rule = routing.rules.find((r) => r.match.host?.toLowerCase() === ROUTE.hostHeader);
    const pool = routing.pools.find((p) => p.name === rule?.pool);
    if (!rule || pool?.hosts.length !== 1 || pool.hosts[0].host !== ROUTE.hostName) {
      throw new BenchSetupError(`${DEMO_CONFIG} no longer routes Host: ${ROUTE.hostHeader} to ${ROUTE.hostName} alone; update ROUTE in bench/e2e-vs-haproxy/setup.ts`);
    }
  }

  /** `handoff lb` in the lb namespace, as `handoff demo` starts it; resolves once its control socket answers. */
  async startHandoff(): Promise<Running & { socket: string; lcores: string }> {
    const { file, socket } = this.handoffConfig();
    const r = this.spawn('handoff lb', this.lb.ns, process.execPath, [...this.nodeArgs, CLI, 'lb', '--config', file],
      { ...process.env, HANDOFF_CLUSTER_KEY: this.key });
    await waitFor('handoff lb', async () => {
      if (r.child.exitCode !== null) throw new BenchSetupError(`handoff lb exited ${r.child.exitCode}:\n${r.tail.text()}`);
      try {
        await fetchStatus(socket, 500);
        return true;
      } catch {
        return false;
      }
    }, 30000, () => r.tail.text());
    const lcores = String(YAML.parse(fs.readFileSync(file, 'utf8')).eal.lcores ?? '0,1');
    return { ...r, socket, lcores };
  }

  /**
   * HAProxy in its own namespace, answering on HAPROXY_VIP with the demo's
   * routing translated (the rules and defaults written for VIP), `threads`
   * threads pinned to `cpus`. A namespace of its own, so both balancers run
   * at once and the columns can alternate round by round.
   */
  async startHaproxy(threads: number, cpus: number[]): Promise<Running & { config: string }> {
    const { routing } = this.handoffConfig();
    const text = haproxyConfig(routing, { vip: VIP, bind: { ip: HAPROXY_VIP, port: 80 }, servers: this.plainServers(), threads, cpus });
    const file = path.join(this.dir, 'haproxy.cfg');
    fs.writeFileSync(file, text);
    sh('haproxy', ['-c', '-q', '-f', file]);
    // -db: foreground, one process (its threads), no master: its pid is the whole balancer.
    const r = this.spawn('haproxy', this.hap.ns, 'taskset', ['-c', cpus.slice(0, threads).join(','), '/usr/sbin/haproxy', '-db', '-f', file]);
    await waitFor('haproxy', () => {
      if (r.child.exitCode !== null) throw new BenchSetupError(`haproxy exited ${r.child.exitCode}:\n${r.tail.text()}`);
      return sh('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '1', '-H', `Host: ${ROUTE.hostHeader}`, `http://${HAPROXY_VIP}/`],
        { ns: this.client.ns, allowFail: true }) === '200';
    }, 15000, () => r.tail.text());
    return { ...r, config: text };
  }

  /** Stop a balancer and wait for it to exit (SIGKILL after 10 s). */
  async stop(r: Running): Promise<void> {
    if (r.child.exitCode === null && r.child.signalCode === null) {
      const exited = new Promise<void>((resolve) => r.child.once('exit', () => resolve()));
      r.child.kill('SIGTERM');
      const timer = setTimeout(() => r.child.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(timer);
    }
  }

  /** Host agents' counters (handoffs injected, refusals), asked with SIGUSR2. */
  async hostStats(): Promise<Array<Record<string, unknown>>> {
    const out: Array<Record<string, unknown>> = [];
    for (const h of this.hostProcs) {
      const got = new Promise<Record<string, unknown>>((resolve) => {
        const on = (d: Buffer) => {
          const line = d.toString().split('\n').find((l) => l.includes('"ev":"stats"'));
          if (line) {
            h.child.stdout?.off('data', on);
            resolve(JSON.parse(line) as Record<string, unknown>);
          }
        };
        h.child.stdout?.on('data', on);
        setTimeout(() => { h.child.stdout?.off('data', on); resolve({}); }, 3000);
      });
      h.child.kill('SIGUSR2');
      out.push(await got);
    }
    return out;
  }

  async destroy(): Promise<void> {
    await this.topo.shutdown();
  }
}
