// Shared by the benchmark driver (run.ts) and the shim child (shim-child.ts):
// the flow set, the addresses and the EAL arguments must be identical on both
// sides, so they are defined once here.

/** RFC 2544 benchmarking range, as in test/lib/topology.ts. */
export const LB = { ip: '198.18.0.1', mac: '02:00:00:00:00:01' };
export const VIP = { ip: '198.18.0.100', port: 80 };
export const HOST = { id: 1, ip: '198.18.0.11', nexthopMac: '02:00:00:00:01:11', innerMac: '02:00:00:00:0b:11' };
export const CLIENT_MAC = '02:00:00:00:00:aa';
export const PCAP_DEVICE = 'net_pcap0';

/** The flow index space is mapped bijectively onto 10.0.0.0/8, so at most 2^24 flows. */
export const MAX_FLOWS = 1 << 24;

/**
 * Client address (host byte order) of flow i: one distinct address per flow,
 * scattered over 10.0.0.0/8. Multiplying by an odd constant is a bijection
 * modulo 2^24, so flows never collide.
 */
export function flowClientIp(i: number): number {
  return (0x0a000000 | (Math.imul(i, 0x9e3779b1) & 0xffffff)) >>> 0;
}

/** Client port of flow i: an ephemeral-looking port, decorrelated from the address. */
export function flowClientPort(i: number): number {
  return 1024 + ((Math.imul(i ^ 0x5bd1e995, 0x85ebca6b) >>> 0) % 64512);
}

/** VNI of flow i: 24 bits, never 0. */
export function flowId(i: number): number {
  return (i % 0xffffff) + 1;
}

/** Small deterministic PRNG (mulberry32): the same pcap every run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * EAL arguments for both the shim and dpdk-testpmd: the same pcap vdev (no
 * tx_pcap, so the PMD frees what is transmitted), no hugepages, no shared
 * config, lcore 0 = main thread, lcore 1 = the single forwarding core.
 */
export function ealArgs(pcapPath: string, memMb: number): string[] {
  if (/[,=\s]/.test(pcapPath)) throw new Error(`pcap path '${pcapPath}' must not contain ',', '=' or spaces (vdev devargs syntax)`);
  return [
    '--vdev', `${PCAP_DEVICE},rx_pcap=${pcapPath},infinite_rx=1`,
    '--no-huge', '-m', String(memMb), '--no-shconf', '--no-pci', '-l', '0,1', '--no-telemetry',
  ];
}

/** Parameters the driver hands the shim child (JSON in argv[2]). */
export interface ChildConfig {
  pcap: string;
  flows: number;
  seconds: number;
  warmupSeconds: number;
  memMb: number;
  mbufs: number;
}

/** Messages the shim child sends back over the IPC channel. */
export type ChildMessage =
  | { type: 'loaded'; inserted: number; count: number; insertMs: number; rssBeforeStartMb: number; rssAfterStartMb: number; rssAfterInsertMb: number }
  | { type: 'result'; elapsedS: number; delta: Record<string, number>; workers: number }
  | { type: 'error'; message: string };
