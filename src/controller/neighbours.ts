// Next hops resolved by ARP (issue 17), so a balancer config names hosts by
// address only. The shim's workers answer ARP for the VIPs and the balancer's
// own addresses and pass up, rate-limited, the ARP replies to its addresses
// and gratuitous ARP (HS_EXC_ARP); this table sends the requests through the
// shim's TX ring, learns from what comes back, refreshes what it knows and
// says when a next hop changes. Per neighbour, not per packet: TypeScript.
import { buildArpRequest, parseFrame } from '../net';

export interface NeighbourOptions {
  /** Send an Ethernet frame out of shim port `port`. */
  send(port: number, frame: Buffer): void;
  /** The balancer's address and MAC on each shim port (requests are sent from them). */
  ports: ReadonlyArray<{ ip: string; mac: string }>;
  /**
   * A next hop got a MAC, a new one, or answered again after expiring; `mac`
   * null: it expired (no answer to the refreshes; lookup() still gives the
   * last MAC, for the flows already there).
   */
  onChange(ip: string, port: number, mac: string | null): void;
  /** Ask again this long after the last answer (the answer's lifetime then starts to run out). Default 30000 ms. */
  refreshMs?: number;
  /** Between unanswered requests. Default 1000 ms. */
  retryMs?: number;
  /** Unanswered refreshes before a known MAC expires. Default 3. */
  retries?: number;
}

export interface NeighbourStats {
  requestsSent: number;
  /** Replies and gratuitous ARP that set or confirmed a next hop. */
  learned: number;
  /** A next hop's MAC changed (a host replaced, a gratuitous ARP after a failover). */
  changed: number;
  /** Next hops whose MAC expired: nothing answered the refreshes. */
  expired: number;
  /** ARP frames about addresses this balancer does not resolve, or malformed: ignored. */
  ignored: number;
}

interface Entry {
  ip: string;
  port: number;
  mac: string | null;
  /** The MAC stopped answering: kept for flows already there, not trusted for new ones. */
  stale: boolean;
  /** When the MAC was last heard (0: never). */
  heardAt: number;
  /** Next request due; requests sent since the last answer. */
  nextAt: number;
  unanswered: number;
}

/** The ARP cache of one balancer: one entry per next hop (a host on the link, or a gateway). */
export class NeighbourTable {
  readonly stats: NeighbourStats = { requestsSent: 0, learned: 0, changed: 0, expired: 0, ignored: 0 };
  private readonly entries = new Map<string, Entry>();
  private readonly refreshMs: number;
  private readonly retryMs: number;
  private readonly retries: number;

  constructor(private readonly o: NeighbourOptions) {
    this.refreshMs = o.refreshMs ?? 30_000;
    this.retryMs = o.retryMs ?? 1000;
    this.retries = o.retries ?? 3;
  }

  /** Resolve `ip` on shim port `port` from now on (a request goes out at the next tick). */
  want(ip: string, port: number): void {
    if (!this.entries.has(`${port}/${ip}`)) {
      this.entries.set(`${port}/${ip}`, { ip, port, mac: null, stale: false, heardAt: 0, nextAt: 0, unanswered: 0 });
    }
  }

  /** Stop resolving what `keep` does not name (`port/ip` keys): hosts removed by a reload. */
  retain(keep: ReadonlySet<string>): void {
    for (const k of this.entries.keys()) if (!keep.has(k)) this.entries.delete(k);
  }

  /** The last MAC heard for `ip` on `port` (also once expired), or null if none ever was. */
  lookup(ip: string, port: number): string | null {
    return this.entries.get(`${port}/${ip}`)?.mac ?? null;
  }

  /** Whether `ip` on `port` has a MAC that still answers. */
  fresh(ip: string, port: number): boolean {
    const e = this.entries.get(`${port}/${ip}`);
    return !!e?.mac && !e.stale;
  }

  /** Next hops and what is known of them (status pages). */
  list(now: number): Array<{ ip: string; port: number; mac: string | null; stale: boolean; ageMs: number | null }> {
    return [...this.entries.values()].map((e) => ({ ip: e.ip, port: e.port, mac: e.mac, stale: e.stale,
      ageMs: e.heardAt ? Math.round(now - e.heardAt) : null }));
  }

  /** An HS_EXC_ARP frame from shim port `port`: learn the sender's MAC if it is a next hop of ours. */
  onArp(frame: Buffer, port: number, now: number): void {
    let arp;
    try {
      arp = parseFrame(frame).arp;
    } catch {
      arp = undefined;
    }
    const e = arp && this.entries.get(`${port}/${arp.spa}`);
    // Only what a unicast sender can own: never a broadcast, multicast or zero MAC.
    if (!arp || !e || parseInt(arp.sha.slice(0, 2), 16) & 1 || arp.sha === '00:00:00:00:00:00') {
      this.stats.ignored++;
      return;
    }
    this.stats.learned++;
    const was = e.mac;
    const wasStale = e.stale;
    e.mac = arp.sha;
    e.stale = false;
    e.heardAt = now;
    e.unanswered = 0;
    e.nextAt = now + this.refreshMs;
    if (was !== e.mac || wasStale) {
      if (was && was !== e.mac) this.stats.changed++;
      this.o.onChange(e.ip, e.port, e.mac);
    }
  }

  /** Send what is due: first requests, retries, refreshes; expire what stopped answering. */
  tick(now: number): void {
    for (const e of this.entries.values()) {
      if (now < e.nextAt) continue;
      if (e.mac && !e.stale && e.unanswered >= this.retries) {
        e.stale = true;
        this.stats.expired++;
        this.o.onChange(e.ip, e.port, null);
      }
      const me = this.o.ports[e.port];
      if (!me) continue;
      this.o.send(e.port, buildArpRequest({ srcMac: me.mac, srcIp: me.ip, targetIp: e.ip }));
      this.stats.requestsSent++;
      e.unanswered++;
      e.nextAt = now + this.retryMs;
    }
  }
}
