import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

export interface HostNetOptions {
  /** VXLAN device taking the balancer's tunnel. Default vx0. */
  device?: string;
  /** VXLAN UDP port. Default 4789. */
  dstport?: number;
  /** VIPs to put on lo. */
  vips: readonly string[];
  /** Create what is missing (else only check). Default true. */
  create?: boolean;
}

/** A host set-up problem, with the command that fixes it. */
export class HostNetError extends Error {
  readonly code = 'ERR_HOST_NET';
  constructor(message: string, readonly fix: string[]) {
    super(`${message}\n  to fix, run as root:\n${fix.map((f) => `    ${f}`).join('\n')}`);
    this.name = 'HostNetError';
  }
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function sysctlPath(key: string): string {
  return `/proc/sys/${key.replace(/\./g, '/')}`;
}

function readSysctl(key: string): string | undefined {
  try {
    return fs.readFileSync(sysctlPath(key), 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * What a host needs to take tunnelled flows and answer clients directly
 * (design.md §4): a VXLAN device in external mode, the VIPs on lo, reverse
 * path filtering relaxed (the client's packets arrive on the VXLAN device,
 * its route is elsewhere), and no ARP answers for the VIPs (the balancer
 * answers them). Records what it changed so `undo()` restores it.
 */
export class HostNetwork {
  private readonly undoSteps: Array<() => void> = [];
  readonly device: string;
  /** The VXLAN device's MAC: the balancer's inner Ethernet destination. */
  mac = '';

  constructor(private readonly o: HostNetOptions) {
    this.device = o.device ?? 'vx0';
  }

  /** @throws HostNetError saying exactly what is missing and how to fix it. */
  apply(): this {
    const create = this.o.create ?? true;
    const port = this.o.dstport ?? 4789;
    const fix: string[] = [];
    const links = JSON.parse(ip(['-j', '-d', 'link', 'show'])) as Array<{
      ifname: string; address?: string; linkinfo?: { info_kind?: string; info_data?: { external?: boolean; port?: number } };
    }>;
    const dev = links.find((l) => l.ifname === this.device);
    if (!dev) {
      const cmd = ['link', 'add', this.device, 'type', 'vxlan', 'external', 'dstport', String(port)];
      if (create) {
        this.run(cmd, `ip ${cmd.join(' ')}`, fix);
        this.undoSteps.push(() => ip(['link', 'del', this.device]));
      } else fix.push(`ip ${cmd.join(' ')}`);
    } else if (dev.linkinfo?.info_kind !== 'vxlan' || !dev.linkinfo.info_data?.external) {
      throw new HostNetError(`${this.device} exists but is not a VXLAN device in external mode`,
        [`ip link del ${this.device}`, `ip link add ${this.device} type vxlan external dstport ${port}`]);
    }
    if (create && !fix.length) this.run(['link', 'set', this.device, 'up'], `ip link set ${this.device} up`, fix);
    const addrs = JSON.parse(ip(['-j', 'addr', 'show', 'dev', 'lo'])) as Array<{ addr_info: Array<{ local: string }> }>;
    const onLo = new Set(addrs.flatMap((a) => a.addr_info.map((i) => i.local)));
    for (const vip of this.o.vips) {
      if (onLo.has(vip)) continue;
      const cmd = ['addr', 'add', `${vip}/32`, 'dev', 'lo'];
      if (create) {
        this.run(cmd, `ip ${cmd.join(' ')}`, fix);
        this.undoSteps.push(() => ip(['addr', 'del', `${vip}/32`, 'dev', 'lo']));
      } else fix.push(`ip ${cmd.join(' ')}`);
    }
    const wanted: Array<[string, string, (v: string) => boolean]> = [
      ['net.ipv4.conf.all.rp_filter', '0', (v) => v === '0' || v === '2'],
      [`net.ipv4.conf.${this.device}.rp_filter`, '0', (v) => v === '0' || v === '2'],
      ['net.ipv4.conf.all.arp_ignore', '1', (v) => Number(v) >= 1],
      ['net.ipv4.conf.all.arp_announce', '2', (v) => v === '2'],
    ];
    for (const [key, value, ok] of wanted) {
      const cur = readSysctl(key);
      if (cur === undefined && !create) continue; // the device is not there yet: reported above
      if (cur !== undefined && ok(cur)) continue;
      if (!create) {
        fix.push(`sysctl -w ${key}=${value}`);
        continue;
      }
      try {
        fs.writeFileSync(sysctlPath(key), value);
        if (cur !== undefined) this.undoSteps.push(() => fs.writeFileSync(sysctlPath(key), cur));
      } catch (err) {
        fix.push(`sysctl -w ${key}=${value}`);
      }
    }
    if (fix.length) {
      throw new HostNetError(`host network set-up incomplete${process.getuid?.() === 0 ? '' : ' (not root: CAP_NET_ADMIN needed)'}`, fix);
    }
    this.mac = (JSON.parse(ip(['-j', 'link', 'show', this.device]))[0]?.address as string) ?? '';
    return this;
  }

  /** Remove what apply() created, newest first. */
  undo(): void {
    while (this.undoSteps.length) {
      try {
        this.undoSteps.pop()!();
      } catch {
        /* already gone */
      }
    }
  }

  private run(args: string[], shown: string, fix: string[]): void {
    try {
      ip(args);
    } catch {
      fix.push(shown);
    }
  }
}
