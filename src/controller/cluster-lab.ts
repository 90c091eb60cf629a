import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import YAML from 'yaml';
import { fetchStatus } from './control';
import { NsHost, sh, Topology } from './netns';

// A cluster on one machine (issue 16): clients behind a router namespace
// that spreads the VIP over several balancers (kernel ECMP, L4 hash), the
// balancers and the hosts on one data segment. Used by `handoff demo
// --balancers N`, test/scaleout.test.ts and bench/scaleout.
//
//   client(s) 198.18.2.0/24 -- router -- 198.18.1.0/24: balancers .11.., hosts .21..
//
// The router's route to the VIP is set by the lab (routeVia) or, with
// `bgp`, learned from the balancers' own BGP speakers.

export const LAB_VIP = '198.18.0.100';
const DATA_NET = '198.18.1';
const CLIENT_NET = '198.18.2';
const cli = path.resolve(__dirname, 'cli.js');

export interface LabOptions {
  /** Balancers to create (1..8). Started with start(); default all. */
  balancers: number;
  /** Backend hosts. Default 2. */
  hosts?: number;
  /** Names: fixed (`handoff-router`, ...: the demo) or per test run. */
  fixedNames?: boolean;
  /** Short tag in per-run names. Default 'so'. */
  tag?: string;
  /** The client side is this (root) namespace instead of a namespace of its own (the demo). */
  clientInRoot?: boolean;
  /** Cluster key, hex. */
  keyHex: string;
  /** Merged into every balancer's configuration (top-level keys replace). */
  balancerConfig?: Record<string, unknown>;
  /** Merged into every balancer's `cluster` section. */
  cluster?: Record<string, unknown>;
  /**
   * BGP: the router runs BIRD (a dynamic neighbor range, ECMP into the
   * kernel), each balancer announces the VIP from its own BIRD over a kernel
   * interface of its namespace (mgmt0, 198.18.1.31..). Default false: the lab
   * sets the router's route itself (routeVia).
   */
  bgp?: boolean;
}

interface Proc { child?: ChildProcess; log: string }

export class ClusterLab {
  readonly vip = LAB_VIP;
  readonly routerIp = `${DATA_NET}.1`;
  readonly balancerIps: string[];
  readonly hostIps: string[];
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-lab-'));
  readonly client: { ns?: string; ip: string };
  readonly router: NsHost;
  readonly lbNs: NsHost[];
  readonly hosts: NsHost[];
  private readonly data: Topology;
  private readonly front: Topology;
  private readonly procs = new Map<string, Proc>();
  private readonly innerMacs: string[] = [];
  private readonly env: NodeJS.ProcessEnv;
  private stopping = false;

  constructor(private readonly o: LabOptions) {
    const tag = o.tag ?? 'so';
    this.env = { ...process.env, HANDOFF_CLUSTER_KEY: o.keyHex };
    this.balancerIps = Array.from({ length: o.balancers }, (_, i) => `${DATA_NET}.${11 + i}`);
    this.hostIps = Array.from({ length: o.hosts ?? 2 }, (_, i) => `${DATA_NET}.${21 + i}`);
    this.data = new Topology(o.fixedNames ? 'handoff' : tag, { fixedNames: o.fixedNames });
    this.front = new Topology(o.fixedNames ? 'handoffc' : `${tag}c`, { fixedNames: o.fixedNames });
    try {
      this.router = this.data.host('rt', `${this.routerIp}/24`);
      this.front.attach(this.router.ns, 'rtc', 'eth1', `${CLIENT_NET}.1/24`);
      const r = (k: string, v: string) => sh('sysctl', ['-qw', `${k}=${v}`], { ns: this.router.ns });
      r('net.ipv4.ip_forward', '1');
      r('net.ipv4.fib_multipath_hash_policy', '1'); // L4: a flow's packets take one balancer
      for (const k of ['all', 'default', 'eth0', 'eth1']) r(`net.ipv4.conf.${k}.rp_filter`, '0');
      if (o.clientInRoot) {
        this.front.bridgeAddress(`${CLIENT_NET}.2/24`);
        sh('ip', ['route', 'replace', `${LAB_VIP}/32`, 'via', `${CLIENT_NET}.1`]);
        this.client = { ip: `${CLIENT_NET}.2` };
      } else {
        const c = this.front.host('cl', `${CLIENT_NET}.2/24`);
        sh('ip', ['route', 'add', 'default', 'via', `${CLIENT_NET}.1`], { ns: c.ns });
        this.client = { ns: c.ns, ip: c.ip };
      }
      this.lbNs = this.balancerIps.map((_, i) => this.data.host(`lb${i + 1}`, ''));
      // The BGP session's kernel interface (DPDK owns eth0).
      if (o.bgp) this.lbNs.forEach((l, i) => this.data.attach(l.ns, `m${i + 1}`, 'mgmt0', `${this.mgmtIp(i)}/24`));
      this.hosts = this.hostIps.map((ip, i) => {
        const h = this.data.host(`host${i + 1}`, `${ip}/24`);
        this.data.vxlanHost(h, LAB_VIP);
        sh('ip', ['route', 'add', 'default', 'via', this.routerIp], { ns: h.ns });
        return h;
      });
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  /** The kernel address of balancer `i`'s BGP session. */
  mgmtIp(i: number): string {
    return `${DATA_NET}.${31 + i}`;
  }

  /** Start the host agents, then balancers `which` (default all), and route the VIP over them. */
  async start(which: number[] = this.balancerIps.map((_, i) => i)): Promise<void> {
    if (this.o.bgp) await this.startRouterBird();
    for (const [i, h] of this.hosts.entries()) {
      const name = `host${i + 1}`;
      const file = path.join(this.dir, `${name}.yaml`);
      fs.writeFileSync(file, YAML.stringify({
        name, listen: { port: 4791 }, shutdown: { drainTimeoutMs: 1000 }, vips: [{ ip: LAB_VIP, port: 80 }],
        balancers: this.balancerIps, app: { kind: 'demo' }, control: { socket: path.join(this.dir, `${name}.sock`) },
      }));
      this.spawn(name, h.ns, ['host', '--config', file]);
      await this.waitLog(name, /VXLAN device vx0 ([0-9a-f:]{17})/, 15000);
      this.innerMacs[i] = /VXLAN device vx0 ([0-9a-f:]{17})/.exec(this.procs.get(name)!.log)![1];
    }
    for (const i of which) await this.startBalancer(i);
    if (this.o.bgp) await this.waitNexthops(which.length, 15000);
    else this.routeVia(which);
  }

  private async startRouterBird(): Promise<void> {
    const conf = path.join(this.dir, 'router-bird.conf');
    fs.writeFileSync(conf, [
      `router id ${this.routerIp};`,
      'protocol device { scan time 10; }',
      '# ECMP: the routes of every balancer that announces the VIP, merged into one multipath route.',
      'protocol kernel { ipv4 { import none; export all; }; merge paths on; }',
      'protocol bgp balancers {',
      `  local ${this.routerIp} as 65000;`,
      `  neighbor range ${DATA_NET}.0/24 as 65001;`,
      '  hold time 3; keepalive time 1;',
      '  ipv4 { import all; export none; };',
      '}',
    ].join('\n') + '\n');
    this.spawn('router-bird', this.router.ns, ['-f', '-c', conf, '-s', this.routerBirdSocket, '-P', path.join(this.dir, 'router-bird.pid')],
      'bird');
    const end = Date.now() + 5000;
    while (!fs.existsSync(this.routerBirdSocket)) {
      if (Date.now() > end) throw new Error(`BIRD did not start in the router: ${this.log('router-bird')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  get routerBirdSocket(): string {
    return path.join(this.dir, 'router-bird.ctl');
  }

  /** The router's next hops for the VIP now (kernel table). */
  nexthops(): string[] {
    const j = JSON.parse(sh('ip', ['-j', 'route', 'show', `${LAB_VIP}/32`], { ns: this.router.ns }) || '[]') as
      Array<{ gateway?: string; nexthops?: Array<{ gateway: string }> }>;
    if (!j.length) return [];
    return (j[0].nexthops?.map((n) => n.gateway) ?? [j[0].gateway!]).sort();
  }

  /** Wait until the router has `n` next hops for the VIP. @returns milliseconds waited. */
  async waitNexthops(n: number, ms: number): Promise<number> {
    const t0 = Date.now();
    while (this.nexthops().length !== n) {
      if (Date.now() - t0 > ms) throw new Error(`the router has next hops [${this.nexthops()}] for the VIP, not ${n}\n${this.log('router-bird')}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return Date.now() - t0;
  }

  /** Rehash: a new multipath hash seed (kernel 6.11+), or, without one, the next hops reordered (static routes only). */
  rehash(seed: number): void {
    if (fs.existsSync('/proc/sys/net/ipv4/fib_multipath_hash_seed')) {
      sh('sysctl', ['-qw', `net.ipv4.fib_multipath_hash_seed=${seed}`], { ns: this.router.ns });
    } else if (!this.o.bgp) {
      const hops = this.nexthops();
      const idx = hops.map((h) => this.balancerIps.indexOf(h)).reverse();
      this.routeVia(idx);
    }
  }

  private balancerConfig(i: number): Record<string, unknown> {
    return {
      eal: { hugepages: false, memoryMb: 256, lcores: '0,1', vdevs: ['net_af_packet0,iface=eth0'], extraArgs: ['--no-telemetry'] },
      idleSleepUs: 100,
      ports: [{ device: 'net_af_packet0', ip: this.balancerIps[i] }],
      vips: [{ ip: LAB_VIP, port: 80 }],
      hosts: this.hosts.map((h, j) => ({ name: `host${j + 1}`, ip: this.hostIps[j], nexthopMac: h.mac, innerMac: this.innerMacs[j] })),
      routing: {
        pools: [
          { name: 'all', hosts: this.hosts.map((_, j) => ({ host: `host${j + 1}` })), choice: 'least-pending' },
          ...this.hosts.map((_, j) => ({ name: `h${j + 1}`, hosts: [{ host: `host${j + 1}` }] })),
        ],
        rules: this.hosts.map((_, j) => ({ name: `host${j + 1}-path`, match: { pathPrefix: `/host${j + 1}` }, pool: `h${j + 1}` })),
        defaults: [{ vip: LAB_VIP, port: 80, pool: 'all' }],
      },
      clusterKey: { env: 'HANDOFF_CLUSTER_KEY' },
      cluster: { balancerId: i, idBits: 3, ...this.o.cluster },
      statsIntervalMs: 0,
      control: { socket: this.socket(i), http: { address: '127.0.0.1', port: 0 } },
      shutdown: { drainTimeoutMs: 1000 },
      log: { level: this.o.bgp ? 'info' : 'warn' },
      ...(this.o.bgp ? { bgp: { enabled: true, localAs: 65001, sourceAddress: this.mgmtIp(i),
        neighbors: [{ address: this.routerIp, as: 65000 }], runDir: path.join(this.dir, `bird-lb${i + 1}`) } } : {}),
      ...this.o.balancerConfig,
    };
  }

  /** Control socket of balancer `i`. */
  socket(i: number): string {
    return path.join(this.dir, `lb${i + 1}.sock`);
  }

  hostSocket(j: number): string {
    return path.join(this.dir, `host${j + 1}.sock`);
  }

  async startBalancer(i: number): Promise<void> {
    const file = path.join(this.dir, `lb${i + 1}.yaml`);
    fs.writeFileSync(file, YAML.stringify(this.balancerConfig(i)));
    fs.rmSync(this.socket(i), { force: true });
    this.spawn(`lb${i + 1}`, this.lbNs[i].ns, ['lb', '--config', file]);
    const end = Date.now() + 30000;
    for (;;) {
      try {
        await fetchStatus(this.socket(i), 500);
        return;
      } catch {
        const p = this.procs.get(`lb${i + 1}`)!;
        if (p.child?.exitCode !== null || Date.now() > end) {
          throw new Error(`balancer lb${i + 1} did not come up:\n${p.log.slice(-2000)}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Signal balancer `i` and wait for it to exit. */
  async stopBalancer(i: number, signal: NodeJS.Signals): Promise<void> {
    const c = this.procs.get(`lb${i + 1}`)?.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await gone;
  }

  /** The router's ECMP route to the VIP: over balancers `which` (by index), nothing when empty. */
  routeVia(which: number[]): void {
    const ns = this.router.ns;
    if (!which.length) {
      sh('ip', ['route', 'del', `${LAB_VIP}/32`], { ns, allowFail: true });
      return;
    }
    const hops = which.flatMap((i) => ['nexthop', 'via', this.balancerIps[i], 'dev', 'eth0']);
    sh('ip', ['route', 'replace', `${LAB_VIP}/32`, ...hops], { ns });
  }

  /** The balancer's /status. */
  status<T = Record<string, any>>(i: number): Promise<T> {
    return fetchStatus<T>(this.socket(i), 2000);
  }

  /** The process id of `name` (lb1, host1, ...): `ip netns exec` execs it, so it is the program's own. */
  pid(name: string): number | undefined {
    const c = this.procs.get(name)?.child;
    return c && c.exitCode === null && c.signalCode === null ? c.pid : undefined;
  }

  log(name: string): string {
    return this.procs.get(name)?.log ?? '';
  }

  private spawn(name: string, ns: string, args: string[], cmd?: string): void {
    const p: Proc = this.procs.get(name) ?? { log: '' };
    this.procs.set(name, p);
    const child = cmd ? this.data.spawn(ns, cmd, args, this.env) : this.data.spawn(ns, process.execPath, [cli, ...args], this.env);
    p.child = child;
    const keep = (d: Buffer) => { p.log = (p.log + d.toString()).slice(-40000); };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
  }

  private async waitLog(name: string, re: RegExp, ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (!re.test(this.log(name))) {
      const c = this.procs.get(name)?.child;
      if (Date.now() > end || (c && c.exitCode !== null)) throw new Error(`${name} did not come up:\n${this.log(name).slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.data.shutdown();
    this.destroy();
  }

  destroy(): void {
    this.data.destroy();
    this.front.destroy();
    if (this.o.clientInRoot) sh('ip', ['route', 'del', `${LAB_VIP}/32`], { allowFail: true });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
