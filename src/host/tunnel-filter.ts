// The host's check on the tunnel (design.md §1, C11: the flow ID identifies
// the flow at the host, and unknown ones are rejected where the host's data
// plane can check). A `vxlan external` device decapsulates any VNI from
// anyone and hands the inner packet to the kernel, which would answer a
// forged segment with a RST on the balancer's behalf, or take it into a live
// connection with that 4-tuple. This attaches a tc BPF classifier to the
// device's ingress (native/host-agent/bpf/tunnel.bpf.c, loaded by
// libhandoff_host.so) that lets a decapsulated packet in only if (VNI,
// client address, VIP, client port, VIP port) is in its hash map of flows
// this agent injected, and (optionally) only VXLAN from the balancers'
// addresses:
//
//   no tunnel metadata                           -> refused_malformed, drop
//   balancers given, outer source not one        -> refused_sender, drop
//   inner frame not IPv4/TCP, a fragment, short  -> refused_malformed, drop
//   VNI . 4-tuple not in the flow map            -> refused_flow, drop
//   else                                         -> tunnelled, accept
//
// The VNI and outer source come from the skb's tunnel metadata
// (bpf_skb_get_tunnel_key), the counters from a per-CPU array.
//
// Flows are added synchronously with one bpf() map update (a few us,
// independent of the map's size) before the socket is injected, so the
// balancer's first tunnelled packet always finds its flow; removals wait
// `lingerMs` after the socket closes, so the flow's last packets (FIN, final
// ACKs) still reach the kernel, and are swept once a second, in one batched
// map delete.
import { isIPv4 } from 'node:net';
import {
  HostNativeError, hostLastError, tunnelAllow, tunnelClose, tunnelCounters, tunnelOpen, tunnelRevoke, tunnelRevokeBatch,
  tunnelSetBalancers,
} from './native';

export interface TunnelFilterOptions {
  /** VXLAN device whose decapsulated packets are checked. Default vx0. */
  device?: string;
  /** VXLAN UDP port. Default 4789. (Checked; the classifier sits on the device, which knows its port.) */
  dstport?: number;
  /** Balancer addresses allowed to send VXLAN here; empty allows any (the flow check still applies). */
  balancers?: readonly string[];
  /**
   * Name of the check, for messages. Default handoff_<device>. (It was the
   * nftables table's name; the BPF filter sits at a fixed handle on the
   * device instead.)
   */
  table?: string;
  /** How long a closed flow stays allowed, ms. Default 10000 (beyond the balancer's closing timeout). */
  lingerMs?: number;
}

/** The parts of a flow the filter keys on (a ConnectionBlob has them). */
export interface TunnelFlow {
  flowId: number;
  clientIp: string;
  clientPort: number;
  vip: string;
  vipPort: number;
}

export interface TunnelFilterCounters {
  /** Decapsulated packets of live flows let in. */
  tunnelled: number;
  /** VXLAN packets whose VNI and inner 4-tuple are no live flow of this host. */
  refusedFlow: number;
  /** VXLAN packets from an address that is not a balancer. */
  refusedSender: number;
  /** Packets on the device without tunnel metadata, or whose inner frame is not IPv4/TCP (a fragment, truncated). */
  refusedMalformed: number;
  /** Flows allowed now (including closed ones lingering). */
  flows: number;
}

/** The filter could not be installed or updated; `fix` says what to do. */
export class TunnelFilterError extends Error {
  readonly code = 'ERR_TUNNEL_FILTER';
  constructor(message: string, readonly fix?: string) {
    super(fix ? `${message}\n  to fix: ${fix}` : message);
    this.name = 'TunnelFilterError';
  }
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const TABLE = /^[A-Za-z0-9_]{1,64}$/;

/** errno values the library returns as -errno. */
const EPERM = 1;
const ENOENT = 2;
const ENODEV = 19;

/**
 * The tunnel check of one host (one per network namespace and VXLAN device).
 * install() attaches the classifier (replacing one a crashed agent left),
 * allow() before injecting a flow, revoke() when its socket closes, close()
 * detaches it.
 */
export class TunnelFilter {
  readonly table: string;
  readonly device: string;
  private readonly dstport: number;
  private readonly balancers: readonly string[];
  private readonly lingerMs: number;
  /** The library's handle, while installed. */
  private handle = -1;
  /** The flow by key, for every flow allowed. */
  private readonly present = new Map<string, TunnelFlow>();
  /** Keys to remove, with the time they may go. */
  private readonly doomed = new Map<string, number>();
  private timer?: NodeJS.Timeout;

  constructor(o: TunnelFilterOptions = {}) {
    this.device = o.device ?? 'vx0';
    this.dstport = o.dstport ?? 4789;
    this.balancers = o.balancers ?? [];
    this.lingerMs = o.lingerMs ?? 10_000;
    this.table = o.table ?? `handoff_${this.device.replace(/[^A-Za-z0-9_]/g, '_')}`;
    if (!IFNAME.test(this.device)) throw new TunnelFilterError(`device: '${this.device}' is not an interface name`);
    if (!TABLE.test(this.table)) throw new TunnelFilterError(`table: '${this.table}' must be 1..64 of [A-Za-z0-9_]`);
    if (!Number.isInteger(this.dstport) || this.dstport < 1 || this.dstport > 65535) {
      throw new TunnelFilterError(`dstport must be 1..65535, got ${this.dstport}`);
    }
    for (const b of this.balancers) if (!isIPv4(b)) throw new TunnelFilterError(`balancers: '${b}' is not an IPv4 address`);
    if (!Number.isFinite(this.lingerMs) || this.lingerMs < 0) throw new TunnelFilterError(`lingerMs must be >= 0, got ${this.lingerMs}`);
  }

  /** @throws TunnelFilterError (no libhandoff_host.so or tunnel.bpf.o, no CAP_BPF / CAP_NET_ADMIN, no such device, the kernel refused) */
  install(): this {
    if (this.handle >= 0) return this;
    let h: number;
    try {
      h = tunnelOpen(this.device);
    } catch (err) {
      if (err instanceof HostNativeError) {
        throw new TunnelFilterError(`the tunnel check needs libhandoff_host.so: ${err.message}`, 'or set network.filterTunnel: false');
      }
      throw err;
    }
    if (h < 0) {
      const fix = -h === EPERM ? 'run as root (CAP_BPF and CAP_NET_ADMIN), or set network.filterTunnel: false'
        : -h === ENOENT ? "build it with 'npm run setup' (or make -C native/host-agent), or set HANDOFF_HOST_BPF_PATH"
          : -h === ENODEV ? `create the VXLAN device ${this.device} first (network.create)` : undefined;
      throw new TunnelFilterError(`installing the tunnel check ${this.table} on ${this.device}: ${hostLastError()}`, fix);
    }
    const rc = tunnelSetBalancers(h, this.balancers);
    if (rc < 0) {
      const msg = hostLastError();
      tunnelClose(h);
      throw new TunnelFilterError(`installing the tunnel check ${this.table}: ${msg}`);
    }
    this.handle = h;
    this.timer = setInterval(() => this.sweep(Date.now()), 1000);
    this.timer.unref();
    return this;
  }

  /** Let the flow's tunnelled packets in. Synchronous: done when it returns. @throws TunnelFilterError */
  allow(f: TunnelFlow): void {
    if (this.handle < 0) throw new TunnelFilterError('the tunnel filter is not installed');
    const key = this.key(f);
    this.doomed.delete(key);
    if (this.present.has(key)) return;
    if (!Number.isInteger(f.flowId) || f.flowId < 0 || f.flowId > 0xffffff) throw new TunnelFilterError(`flowId ${f.flowId} is not a 24-bit VNI`);
    if (!isIPv4(f.clientIp) || !isIPv4(f.vip)) throw new TunnelFilterError(`flow ${f.flowId}: addresses must be IPv4`);
    for (const p of [f.clientPort, f.vipPort]) {
      if (!Number.isInteger(p) || p < 0 || p > 65535) throw new TunnelFilterError(`flow ${f.flowId}: port ${p} is not 0..65535`);
    }
    if (tunnelAllow(this.handle, f) < 0) throw new TunnelFilterError(hostLastError());
    this.present.set(key, { flowId: f.flowId, clientIp: f.clientIp, clientPort: f.clientPort, vip: f.vip, vipPort: f.vipPort });
  }

  /** The flow's socket closed: refuse its packets once lingerMs has passed. */
  revoke(f: TunnelFlow, now = Date.now()): void {
    const key = this.key(f);
    if (this.present.has(key)) this.doomed.set(key, now + this.lingerMs);
  }

  /** Remove every flow due by `now`, in one batched map delete (absent ones are no error). */
  sweep(now: number): void {
    if (this.handle < 0 || !this.doomed.size) return;
    const due: string[] = [];
    for (const [key, at] of this.doomed) if (at <= now) due.push(key);
    if (!due.length) return;
    const flows = due.map((k) => this.present.get(k)!);
    if (tunnelRevokeBatch(this.handle, flows) < 0) {
      // The batch stopped at a failing key: the rest one by one (each absent one is no error).
      for (const f of flows) tunnelRevoke(this.handle, f);
    }
    for (const k of due) {
      this.doomed.delete(k);
      this.present.delete(k);
    }
  }

  /**
   * The counters, summed over the CPUs: four map reads, synchronous (a few
   * us at any flow count); a Promise for the callers written for the
   * nftables version, which read them in a child process.
   */
  counters(): Promise<TunnelFilterCounters> {
    if (this.handle < 0) return Promise.reject(new TunnelFilterError('reading counters: the tunnel filter is not installed'));
    const c = tunnelCounters(this.handle);
    if (typeof c === 'number') return Promise.reject(new TunnelFilterError(`reading counters: ${hostLastError()}`));
    return Promise.resolve({
      tunnelled: c.tunnelled, refusedFlow: c.refused_flow, refusedSender: c.refused_sender,
      refusedMalformed: c.refused_malformed, flows: this.present.size,
    });
  }

  /** Flows allowed now (lingering ones included). */
  get size(): number {
    return this.present.size;
  }

  /** Detach the classifier and free its maps. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.handle < 0) return;
    tunnelClose(this.handle);
    this.handle = -1;
    this.present.clear();
    this.doomed.clear();
  }

  private key(f: TunnelFlow): string {
    return `${f.flowId}/${f.clientIp}/${f.clientPort}/${f.vip}/${f.vipPort}`;
  }
}
