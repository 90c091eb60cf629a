// The topology of design.md §6: network namespaces on one bridge, created and
// removed by whoever builds it (the tests, the demo). Namespace names start
// with `handoff-`; interface names with a short prefix (15-byte limit).
import { execFileSync, spawn, ChildProcess } from 'node:child_process';

export function sh(cmd: string, args: string[], opts: { ns?: string; allowFail?: boolean } = {}): string {
  const full = opts.ns ? ['netns', 'exec', opts.ns, cmd, ...args] : args;
  try {
    return execFileSync(opts.ns ? 'ip' : cmd, full, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    if (opts.allowFail) return '';
    const e = err as { stderr?: string; message: string };
    throw new Error(`${opts.ns ? `[${opts.ns}] ` : ''}${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

export interface NsHost {
  ns: string;
  /** the namespace's veth (inside it) */
  dev: string;
  ip: string;
  mac: string;
}

/** A bridge in the root namespace with namespaces hanging off it by veth pairs. */
export class Topology {
  readonly prefix: string;
  readonly bridge: string;
  private readonly namespaces: string[] = [];
  private readonly links: string[] = [];
  private readonly children: ChildProcess[] = [];

  /** Namespace name for `name`: handoff-<prefix>-<name>, or handoff-<name> with the fixed names of the demo. */
  private readonly nsName: (name: string) => string;

  constructor(tag: string, opts: { fixedNames?: boolean } = {}) {
    if (opts.fixedNames) {
      this.prefix = tag;
      this.bridge = `${tag}-br`;
      sh('ip', ['link', 'add', this.bridge, 'type', 'bridge']);
    } else {
      // The bridge is created first and deleted last, so it marks its prefix
      // as taken. A process killed before its teardown (a test timing out)
      // leaves its bridge behind; a later process whose pid has the same last
      // four digits takes the next free number instead of failing on it.
      const base = process.pid % 10000;
      let prefix = '';
      for (let k = 0; !prefix; k++) {
        const p = `hot${tag}${(base + k) % 10000}`;
        try {
          sh('ip', ['link', 'add', `${p}br`, 'type', 'bridge']);
          prefix = p;
        } catch (err) {
          if (k >= 100 || !/File exists/.test((err as Error).message)) throw err;
        }
      }
      this.prefix = prefix;
      this.bridge = `${prefix}br`;
    }
    this.nsName = opts.fixedNames ? (n) => `handoff-${n}` : (n) => `handoff-${this.prefix}-${n}`;
    this.links.push(this.bridge);
    sh('ip', ['link', 'set', this.bridge, 'up']);
  }

  /** A veth whose one end stays in the root namespace (for a DPDK af_packet port). */
  rootPort(name: string): string {
    const dev = `${this.prefix}${name}`;
    sh('ip', ['link', 'add', dev, 'type', 'veth', 'peer', 'name', `${dev}b`]);
    this.links.push(dev);
    sh('ip', ['link', 'set', `${dev}b`, 'master', this.bridge, 'up']);
    sh('ip', ['link', 'set', dev, 'up']);
    // The kernel must not answer for, or send from, this end: the shim owns it.
    sh('sysctl', ['-qw', `net.ipv6.conf.${dev}.disable_ipv6=1`], { allowFail: true });
    return dev;
  }

  /** Give the bridge itself an address, so this namespace reaches the others. */
  bridgeAddress(cidr: string): void {
    sh('ip', ['addr', 'add', cidr, 'dev', this.bridge]);
    // Checksums complete on the wire: the balancer forwards this namespace's packets to another kernel.
    sh('ethtool', ['-K', this.bridge, 'tx', 'off'], { allowFail: true });
  }

  /** A namespace with one address on the bridge's subnet (no address: `cidr` empty). */
  host(name: string, cidr: string): NsHost {
    const ns = this.nsName(name);
    sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    const outer = `${this.prefix}${name}`;
    sh('ip', ['link', 'add', outer, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    this.links.push(outer);
    sh('ip', ['link', 'set', outer, 'master', this.bridge, 'up']);
    sh('ip', ['link', 'set', 'lo', 'up'], { ns });
    if (cidr) sh('ip', ['addr', 'add', cidr, 'dev', 'eth0'], { ns });
    else sh('sysctl', ['-qw', 'net.ipv6.conf.eth0.disable_ipv6=1'], { ns, allowFail: true });
    sh('ip', ['link', 'set', 'eth0', 'up'], { ns });
    // Checksums must be complete on the wire: the balancer forwards the
    // client's packets as they are, to another kernel.
    sh('ethtool', ['-K', 'eth0', 'tx', 'off'], { ns, allowFail: true });
    const mac = JSON.parse(sh('ip', ['-j', 'link', 'show', 'eth0'], { ns }))[0].address as string;
    return { ns, dev: 'eth0', ip: cidr ? cidr.split('/')[0] : '', mac };
  }

  /**
   * Hang a namespace made by another Topology (a router's second leg) off
   * this bridge too: a veth named `dev` inside it, `name` names the root end.
   */
  attach(ns: string, name: string, dev: string, cidr: string): NsHost {
    const outer = `${this.prefix}${name}`;
    sh('ip', ['link', 'add', outer, 'type', 'veth', 'peer', 'name', dev, 'netns', ns]);
    this.links.push(outer);
    sh('ip', ['link', 'set', outer, 'master', this.bridge, 'up']);
    sh('ip', ['addr', 'add', cidr, 'dev', dev], { ns });
    sh('ip', ['link', 'set', dev, 'up'], { ns });
    sh('ethtool', ['-K', dev, 'tx', 'off'], { ns, allowFail: true });
    const mac = JSON.parse(sh('ip', ['-j', 'link', 'show', dev], { ns }))[0].address as string;
    return { ns, dev, ip: cidr.split('/')[0], mac };
  }

  /** Make a namespace a backend host: VXLAN external device, VIP on lo, relaxed rp_filter. */
  vxlanHost(h: NsHost, vip: string): { innerMac: string } {
    sh('ip', ['link', 'add', 'vx0', 'type', 'vxlan', 'external', 'dstport', '4789'], { ns: h.ns });
    sh('ip', ['link', 'set', 'vx0', 'up'], { ns: h.ns });
    sh('ip', ['addr', 'add', `${vip}/32`, 'dev', 'lo'], { ns: h.ns });
    for (const k of ['all', 'default', 'vx0', 'eth0']) sh('sysctl', ['-qw', `net.ipv4.conf.${k}.rp_filter=0`], { ns: h.ns });
    // The VIP is local to every host: they must not answer ARP for it (the balancer does).
    sh('sysctl', ['-qw', 'net.ipv4.conf.all.arp_ignore=1'], { ns: h.ns });
    sh('sysctl', ['-qw', 'net.ipv4.conf.all.arp_announce=2'], { ns: h.ns });
    const innerMac = JSON.parse(sh('ip', ['-j', 'link', 'show', 'vx0'], { ns: h.ns }))[0].address as string;
    return { innerMac };
  }

  /** Start a long-running process in a namespace; killed at teardown. */
  spawn(ns: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    this.children.push(child);
    return child;
  }

  /** Ask the children to stop, then remove everything. */
  async shutdown(graceMs = 3000): Promise<void> {
    for (const c of this.children) if (c.exitCode === null) c.kill('SIGTERM');
    const end = Date.now() + graceMs;
    while (this.children.some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
    }
    this.destroy();
  }

  destroy(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of this.namespaces) sh('ip', ['netns', 'del', ns], { allowFail: true });
    for (const l of this.links) sh('ip', ['link', 'del', l], { allowFail: true });
  }
}
