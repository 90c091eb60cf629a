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
      this.router = this.data.host('router', `${this.routerIp}/24`);
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
        const c = this.front.host('client', `${CLIENT_NET}.2/24`);
        sh('ip', ['route', 'add', 'default', 'via', `${CLIENT_NET}.1`], { ns: c.ns });
        this.client = { ns: c.ns, ip: c.ip };
      }
      this.lbNs = this.balancerIps.map((_, i) => this.data.host(`lb${i + 1}`, ''));
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

  /** Start the host agents, then balancers `which` (default all), and route the VIP over them. */
  async start(which: number[] = this.balancerIps.map((_, i) => i)): Promise<void> {
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
    this.routeVia(which);
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
      log: { level: 'warn' },
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

  log(name: string): string {
    return this.procs.get(name)?.log ?? '';
  }

  private spawn(name: string, ns: string, args: string[]): void {
    const p: Proc = this.procs.get(name) ?? { log: '' };
    this.procs.set(name, p);
    const child = this.data.spawn(ns, process.execPath, [cli, ...args], this.env);
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
