// What Pktgen sends and what the balancer expects, defined once: the pcap
// generator, the balancer-side helper, the virtual-device check and the test
// of the committed .pkt/.yaml files all read these values.
import { ipv4FromString, ipv4ToString } from '../../src/net/packet';

/** The VIP of every scenario (RFC 2544 benchmarking range, as in the tests). */
export const VIP = { ip: '198.18.0.100', port: 80 };

/**
 * The virtual-device check: a veth pair in a namespace of its own, Pktgen on
 * one end and the balancer on the other, both through net_af_packet (which
 * takes the interface's MAC). The balancer's one host is Pktgen itself, so the
 * VXLAN packets come back to Pktgen and are counted there.
 */
export const VETH = {
  pktgenDev: 'pg0',
  pktgenMac: '02:00:00:00:00:aa',
  lbDev: 'lb0',
  lbMac: '02:00:00:00:00:01',
  lbIp: '198.18.0.2',
};

/**
 * A set of client flows in the shape Pktgen's range mode walks: the source
 * address and the source port each step by one per packet and wrap
 * independently, so packet k comes from (clientBase + k mod clients,
 * portBase + k mod ports). With `clients` and `ports` coprime, k = 0 ..
 * clients*ports-1 visits every pair exactly once (Chinese remainder theorem):
 * the flows are the whole product, not the lcm of the two periods.
 */
export interface FlowRange {
  clientBase: string;
  clients: number;
  portBase: number;
  ports: number;
}

/** The established flows: 15625 x 64 = 1,000,000 (15625 = 5^6 is coprime with 64). */
export const ESTABLISHED: FlowRange = { clientBase: '10.0.0.0', clients: 15625, portBase: 1024, ports: 64 };

/** SYN-flood and mix sources: 100.64.0.0/10 (shared address space), never one of the established flows. */
export const FLOOD_SOURCES = { base: '100.64.0.0', count: 1 << 22 };

export class FlowRangeError extends Error {
  readonly code = 'ERR_PKTGEN_FLOW_RANGE';
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/** Check a flow range and return its flow count. @throws FlowRangeError */
export function flowCount(r: FlowRange): number {
  const bad = (m: string) => new FlowRangeError(`flow range: ${m}`);
  let base: number;
  try {
    base = ipv4FromString(r.clientBase);
  } catch {
    throw bad(`clientBase '${r.clientBase}' is not an IPv4 address`);
  }
  if (!Number.isInteger(r.clients) || r.clients < 1 || base + r.clients - 1 > 0xffffffff) throw bad(`clients must be 1.. and stay in IPv4, got ${r.clients}`);
  if (!Number.isInteger(r.portBase) || r.portBase < 1) throw bad(`portBase must be 1..65535, got ${r.portBase}`);
  if (!Number.isInteger(r.ports) || r.ports < 1 || r.portBase + r.ports - 1 > 65535) throw bad(`ports must keep portBase+ports-1 <= 65535, got ${r.ports}`);
  if (gcd(r.clients, r.ports) !== 1) {
    throw bad(`clients (${r.clients}) and ports (${r.ports}) must be coprime, or range mode repeats after lcm = ` +
      `${(r.clients / gcd(r.clients, r.ports)) * r.ports} flows`);
  }
  return r.clients * r.ports;
}

/** Client address (host order) of the k-th packet of the range walk. */
export function flowClientIp(r: FlowRange, k: number): number {
  return (ipv4FromString(r.clientBase) + (k % r.clients)) >>> 0;
}

/** Client port of the k-th packet of the range walk. */
export function flowClientPort(r: FlowRange, k: number): number {
  return r.portBase + (k % r.ports);
}

/** The last address and port of the range, as Pktgen's `range ... max` wants them. */
export function rangeMax(r: FlowRange): { ip: string; port: number } {
  return { ip: ipv4ToString((ipv4FromString(r.clientBase) + r.clients - 1) >>> 0), port: r.portBase + r.ports - 1 };
}

/** VNI of flow k: 24 bits, never 0. */
export function flowId(k: number): number {
  return (k % 0xffffff) + 1;
}

/**
 * Pktgen 23.03 builds range-mode packets once, one per mbuf of its "Range TX"
 * pool ((1024 + 2048) * 8 = 24576 mbufs per TX queue, pktgen-constants.h), and
 * then resends those mbufs: range mode reaches at most this many distinct
 * flows per TX queue, whatever the range. A million flows need pcap mode.
 */
export const PKTGEN_RANGE_MBUFS = 24576;
