// The host's check on the tunnel (design.md §1, C11: the flow ID identifies
// the flow at the host, and unknown ones are rejected where the host's data
// plane can check). A `vxlan external` device decapsulates any VNI from
// anyone and hands the inner packet to the kernel, which would answer a
// forged segment with a RST on the balancer's behalf, or take it into a live
// connection with that 4-tuple. This installs one nftables table that lets a
// decapsulated packet in only if (VNI, client address, VIP, client port, VIP
// port) is a flow this agent injected, and (optionally) only VXLAN from the
// balancers' addresses:
//
//   input, priority mangle:
//     udp dport 4789 ip saddr != { balancers }   -> counter refused_sender, drop
//     udp dport 4789                             -> meta mark = VXLAN bytes 4..7, reserved byte 0
//     iifname vx0, mark . 4-tuple in @flows      -> counter tunnelled, accept
//     iifname vx0                                -> counter refused_flow, drop
//
// The outer packet's mark survives decapsulation (same namespace), which is
// how the VNI reaches the inner packet's check: nft 1.0.6 cannot key a set on
// raw payload fields. The packet mark of VXLAN packets is therefore ours.
//
// Elements are added synchronously through libnftables (in-process netlink,
// about 80 us, independent of the set's size) before the socket is injected,
// so the balancer's first tunnelled packet always finds its flow; removals are
// batched and wait `lingerMs` after the socket closes, so the flow's last
// packets (FIN, final ACKs) still reach the kernel.
import { execFile } from 'node:child_process';
import { isIPv4 } from 'node:net';
import os from 'node:os';
import koffi from 'koffi';

export interface TunnelFilterOptions {
  /** VXLAN device whose decapsulated packets are checked. Default vx0. */
  device?: string;
  /** VXLAN UDP port. Default 4789. */
  dstport?: number;
  /** Balancer addresses allowed to send VXLAN here; empty allows any (the flow check still applies). */
  balancers?: readonly string[];
  /** nftables table name (family inet). Default handoff_<device>. */
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

interface Nft {
  run(cmd: string): void;
  free(): void;
}

/** libnftables, bound on first use: one context, commands run synchronously. */
function openNft(): Nft {
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load('libnftables.so.1');
  } catch (err) {
    throw new TunnelFilterError(`libnftables is not available: ${(err as Error).message}`,
      'apt-get install -y nftables (or set network.filterTunnel: false)');
  }
  const ctxNew = lib.func('void *nft_ctx_new(uint32_t flags)');
  const ctxFree = lib.func('void nft_ctx_free(void *ctx)');
  const bufferOutput = lib.func('int nft_ctx_buffer_output(void *ctx)');
  const bufferError = lib.func('int nft_ctx_buffer_error(void *ctx)');
  const errorBuffer = lib.func('const char *nft_ctx_get_error_buffer(void *ctx)');
  const runCmd = lib.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
  let ctx: unknown = ctxNew(0);
  if (!ctx) throw new TunnelFilterError('nft_ctx_new failed');
  bufferOutput(ctx);
  bufferError(ctx);
  return {
    run(cmd: string): void {
      if (!ctx) throw new TunnelFilterError('the tunnel filter is closed');
      const rc = runCmd(ctx, cmd) as number;
      // The error buffer is reset by each read, so read it every time.
      const err = (errorBuffer(ctx) as string | null) ?? '';
      if (rc !== 0) throw new TunnelFilterError(`nft: ${err.trim() || `failed (${rc})`}`);
    },
    free(): void {
      if (ctx) ctxFree(ctx);
      ctx = undefined;
    },
  };
}

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const TABLE = /^[A-Za-z0-9_]{1,64}$/;

/**
 * The tunnel check of one host (one per network namespace and VXLAN device).
 * install() creates the table (replacing one a crashed agent left), allow()
 * before injecting a flow, revoke() when its socket closes, close() removes
 * the table.
 */
export class TunnelFilter {
  readonly table: string;
  readonly device: string;
  private readonly dstport: number;
  private readonly balancers: readonly string[];
  private readonly lingerMs: number;
  private nft?: Nft;
  /** Element text by key, for every flow allowed. */
  private readonly present = new Map<string, string>();
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

  /** @throws TunnelFilterError (no libnftables, no CAP_NET_ADMIN, nft refused the table) */
  install(): this {
    this.nft ??= openNft();
    const t = `inet ${this.table}`;
    try {
      this.nft.run(`delete table ${t}`);
    } catch { /* none left over */ }
    const port = this.dstport;
    const only = this.balancers.length
      ? `udp dport ${port} ip saddr != { ${this.balancers.join(', ')} } counter name "refused_sender" drop`
      : '';
    try {
      this.nft.run(`table ${t} {
        set flows { type mark . ipv4_addr . ipv4_addr . inet_service . inet_service; }
        counter tunnelled { }
        counter refused_flow { }
        counter refused_sender { }
        chain input {
          type filter hook input priority mangle; policy accept;
          ${only}
          udp dport ${port} meta mark set @th,96,32 & 0xffffff00
          iifname "${this.device}" meta mark . ip saddr . ip daddr . tcp sport . tcp dport @flows counter name "tunnelled" accept
          iifname "${this.device}" counter name "refused_flow" drop
        }
      }`);
    } catch (err) {
      const e = err as TunnelFilterError;
      throw new TunnelFilterError(`installing nftables table ${t}: ${e.message}`,
        process.getuid?.() === 0 ? undefined : 'run as root (CAP_NET_ADMIN), or set network.filterTunnel: false');
    }
    this.timer = setInterval(() => this.sweep(Date.now()), 1000);
    this.timer.unref();
    return this;
  }

  /** Let the flow's tunnelled packets in. Synchronous: done when it returns. @throws TunnelFilterError */
  allow(f: TunnelFlow): void {
    if (!this.nft) throw new TunnelFilterError('the tunnel filter is not installed');
    const key = this.key(f);
    this.doomed.delete(key);
    if (this.present.has(key)) return;
    const el = this.element(f);
    this.nft.run(`add element inet ${this.table} flows { ${el} }`);
    this.present.set(key, el);
  }

  /** The flow's socket closed: refuse its packets once lingerMs has passed. */
  revoke(f: TunnelFlow, now = Date.now()): void {
    const key = this.key(f);
    if (this.present.has(key)) this.doomed.set(key, now + this.lingerMs);
  }

  /** Remove every element due by `now`, in one command. */
  sweep(now: number): void {
    if (!this.nft || !this.doomed.size) return;
    const due: string[] = [];
    for (const [key, at] of this.doomed) if (at <= now) due.push(key);
    if (!due.length) return;
    const els = due.map((k) => this.present.get(k)!);
    try {
      this.nft.run(`delete element inet ${this.table} flows { ${els.join(', ')} }`);
    } catch {
      // One missing element fails the batch: remove them one by one.
      for (const el of els) {
        try { this.nft.run(`delete element inet ${this.table} flows { ${el} }`); } catch { /* gone already */ }
      }
    }
    for (const k of due) {
      this.doomed.delete(k);
      this.present.delete(k);
    }
  }

  /**
   * The counters, read with the nft command in a child process: listing
   * makes libnftables fetch the whole set (about 100 ms at 20,000 flows),
   * which must not stall the agent's event loop.
   */
  counters(): Promise<TunnelFilterCounters> {
    return new Promise((resolve, reject) => {
      execFile('nft', ['-j', 'list', 'counters', 'table', 'inet', this.table], { maxBuffer: 1 << 20 }, (err, out) => {
        if (err) return reject(new TunnelFilterError(`reading counters: ${err.message}`));
        const c: TunnelFilterCounters = { tunnelled: 0, refusedFlow: 0, refusedSender: 0, flows: this.present.size };
        try {
          for (const o of (JSON.parse(out) as { nftables: Array<{ counter?: { name: string; packets: number } }> }).nftables) {
            if (o.counter?.name === 'tunnelled') c.tunnelled = o.counter.packets;
            else if (o.counter?.name === 'refused_flow') c.refusedFlow = o.counter.packets;
            else if (o.counter?.name === 'refused_sender') c.refusedSender = o.counter.packets;
          }
        } catch (e) {
          return reject(new TunnelFilterError(`reading counters: ${(e as Error).message}`));
        }
        resolve(c);
      });
    });
  }

  /** Flows allowed now (lingering ones included). */
  get size(): number {
    return this.present.size;
  }

  /** Remove the table. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.nft) return;
    try { this.nft.run(`delete table inet ${this.table}`); } catch { /* already gone */ }
    this.nft.free();
    this.nft = undefined;
    this.present.clear();
    this.doomed.clear();
  }

  private key(f: TunnelFlow): string {
    return `${f.flowId}/${f.clientIp}/${f.clientPort}/${f.vip}/${f.vipPort}`;
  }

  /**
   * The set element. The rule copies VXLAN header bytes 4..7 (VNI, reserved
   * byte zeroed) into the mark as they are, and the mark is a host-order
   * integer: so the VNI appears byte-swapped on a little-endian host.
   */
  private element(f: TunnelFlow): string {
    if (!Number.isInteger(f.flowId) || f.flowId < 0 || f.flowId > 0xffffff) throw new TunnelFilterError(`flowId ${f.flowId} is not a 24-bit VNI`);
    if (!isIPv4(f.clientIp) || !isIPv4(f.vip)) throw new TunnelFilterError(`flow ${f.flowId}: addresses must be IPv4`);
    const b = Buffer.alloc(4);
    b.writeUInt32BE((f.flowId << 8) >>> 0);
    const mark = os.endianness() === 'LE' ? b.readUInt32LE(0) : b.readUInt32BE(0);
    return `${mark} . ${f.clientIp} . ${f.vip} . ${f.clientPort} . ${f.vipPort}`;
  }
}
