// The two MACs the shim needs per host (issue 17), configured or learned:
// the outer next hop (the host itself on the link, or its port's gateway),
// resolved by ARP through NeighbourTable; and the host's VXLAN device MAC
// (inner Ethernet destination), told by its agent in every PONG. A host is
// given to the shim once both are known, and takes new connections only
// while its next hop answers.
import type { HostOptions } from '../offload';
import type { BalancerConfig } from './config-schema';
import { sameSubnet } from './config';
import { NeighbourTable, type NeighbourStats } from './neighbours';

type HostConfig = BalancerConfig['hosts'][number];
type PortConfig = BalancerConfig['ports'][number];

export interface HostMacsOptions {
  ports: readonly PortConfig[];
  /** The balancer's own address and MAC per shim port (the shim knows its MACs once started). */
  portAddrs: ReadonlyArray<{ ip: string; mac: string }>;
  /** Send a frame out of a shim port (the ARP requests). */
  send(port: number, frame: Buffer): void;
  /** Hosts whose MACs changed (learned, changed, expired): give them to the shim again. */
  onChange(hosts: string[]): void;
  refreshMs?: number;
  retryMs?: number;
}

export class HostMacs {
  readonly neighbours: NeighbourTable;
  /** Inner MACs told by agents, by host name. */
  private readonly inner = new Map<string, string>();
  private hosts: readonly HostConfig[] = [];
  /** Each host's next hop, worked out once per configuration: eligible() asks for every decision. */
  private readonly hops = new Map<HostConfig, string>();

  constructor(private readonly o: HostMacsOptions) {
    this.neighbours = new NeighbourTable({
      ports: o.portAddrs, send: o.send, refreshMs: o.refreshMs, retryMs: o.retryMs,
      onChange: (ip, port) => o.onChange(this.hosts.filter((h) => !h.nexthopMac && this.nextHop(h) === ip && h.port === port)
        .map((h) => h.name)),
    });
  }

  get stats(): NeighbourStats {
    return this.neighbours.stats;
  }

  /** The hosts of the configuration in force: their next hops are resolved from now on. */
  setHosts(hosts: readonly HostConfig[]): void {
    this.hosts = hosts;
    this.hops.clear();
    const keep = new Set<string>();
    for (const h of hosts) {
      if (h.nexthopMac) continue;
      this.neighbours.want(this.nextHop(h), h.port);
      keep.add(`${h.port}/${this.nextHop(h)}`);
    }
    this.neighbours.retain(keep);
  }

  /** The address whose MAC is the host's outer Ethernet destination. */
  nextHop(h: HostConfig): string {
    let hop = this.hops.get(h);
    if (hop === undefined) {
      const p = this.o.ports[h.port];
      hop = p?.gateway && !sameSubnet(h.ip, p.ip, p.prefixLength) ? p.gateway : h.ip;
      this.hops.set(h, hop);
    }
    return hop;
  }

  /** A PONG from host `name` said its VXLAN device's MAC. @returns whether that changed anything. */
  learnInner(name: string, mac: string): boolean {
    const h = this.hosts.find((x) => x.name === name);
    if (!h || h.innerMac || this.inner.get(name) === mac) return false;
    this.inner.set(name, mac);
    return true;
  }

  /** What the shim needs for `h`, configured or learned; null while a MAC is unknown. */
  resolve(h: HostConfig): HostOptions | null {
    const nexthopMac = h.nexthopMac ?? this.neighbours.lookup(this.nextHop(h), h.port);
    const innerMac = h.innerMac ?? this.inner.get(h.name);
    return nexthopMac && innerMac ? { ip: h.ip, port: h.port, nexthopMac, innerMac } : null;
  }

  /** The next-hop MAC alone (blob datagrams and health checks need only it). */
  nexthopMac(h: HostConfig): string | undefined {
    return h.nexthopMac ?? this.neighbours.lookup(this.nextHop(h), h.port) ?? undefined;
  }

  /** Whether `h` may take new connections as far as its MACs go: both known, the next hop answering. */
  usable(h: HostConfig): boolean {
    return (!!h.innerMac || this.inner.has(h.name)) && (!!h.nexthopMac || this.neighbours.fresh(this.nextHop(h), h.port));
  }

  /** For status pages: per host, where each MAC comes from. */
  describe(h: HostConfig): { nexthop: string; nexthopMac: string | null; innerMac: string | null; usable: boolean } {
    return { nexthop: this.nextHop(h), nexthopMac: this.nexthopMac(h) ?? null, innerMac: h.innerMac ?? this.inner.get(h.name) ?? null,
      usable: this.usable(h) };
  }
}
