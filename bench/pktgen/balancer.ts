// The balancer side of a Pktgen run: a forwarder-only Handoff balancer (the
// real Balancer class: EAL, ports, VIPs and hosts from a YAML config) with
// the established flows' ACTIVE mappings preinstalled through the shim's bulk
// insert, as bench/fastpath does; then the counters that matter, per second.
//
//   node dist/bench/pktgen/balancer.js --config=bench/pktgen/lb-bare-metal.yaml [--mappings=none] [--seconds=N]
//
// A real balancer learns mappings from handoffs, one per accepted connection;
// a million of them through handoffs would measure the handoff path (see
// bench:handoff), not forwarding. Forked with an IPC channel (veth-check.ts),
// it also answers {type:'snapshot'} and {type:'stop'}.
import path from 'node:path';
import { Balancer } from '../../src/controller/balancer';
import { loadBalancerConfig } from '../../src/controller/config';
import type { BalancerConfig } from '../../src/controller/config-schema';
import { encodeMappingRecords } from '../../src/offload';
import type { CounterRow } from '../../src/offload';
import { ipv4FromString } from '../../src/net/packet';
import { ESTABLISHED, FlowRange, flowClientIp, flowClientPort, flowCount, flowId } from './common';

export interface HelperOptions {
  /** Handoff balancer config. Default bench/pktgen/lb-veth.yaml. */
  config: string;
  /** Preinstall the established flows' mappings ('established') or none. Default 'established'. */
  mappings: 'established' | 'none';
  flows: FlowRange;
  /** Stop after this long; 0 runs until SIGINT/SIGTERM. Default 0. */
  seconds: number;
  /** Counter lines this often; 0 prints none. Default 1000. */
  intervalMs: number;
}

export type HelperMessage =
  | { type: 'ready'; mappings: number; insertMs: number; mac: string }
  | { type: 'counters'; atMs: number; total: Record<string, string> }
  | { type: 'error'; message: string };

export class HelperOptionError extends Error {
  readonly code = 'ERR_PKTGEN_HELPER_OPTION';
}

/** The counters a line shows, in order; drops are summed apart. */
const SHOWN = ['rx_packets', 'encap_packets', 'tx_packets', 'syn_received', 'synack_sent', 'drop_bad_cookie', 'exception_miss'] as const;

/** Every flow of the range as struct hs_mapping records in one buffer: no object per flow. */
export function encodeMappings(cfg: BalancerConfig, flows: FlowRange, hostId: number): { buf: Buffer; n: number } {
  const n = flowCount(flows);
  const vip = cfg.vips[0];
  if (!vip) throw new HelperOptionError('the config has no VIP to map flows to');
  if (n > cfg.limits.mappingCapacity) {
    throw new HelperOptionError(`${n} flows do not fit limits.mappingCapacity ${cfg.limits.mappingCapacity}`);
  }
  const buf = encodeMappingRecords(n, {
    vip: ipv4FromString(vip.ip), vipPort: vip.port, hostId,
    clientIp: (k) => flowClientIp(flows, k), clientPort: (k) => flowClientPort(flows, k), flowId,
  });
  return { buf, n };
}

const drops = (c: CounterRow) => Object.entries(c).reduce((s, [k, v]) => (k.startsWith('drop_') ? s + v : s), 0n);

/** One line of per-second rates between two counter snapshots. */
export function rateLine(a: CounterRow, b: CounterRow, seconds: number): string {
  const r = (x: bigint) => (Number(x) / seconds / 1e6).toFixed(3);
  const parts = SHOWN.map((k) => `${k}=${r((b[k] ?? 0n) - (a[k] ?? 0n))}`);
  return `${parts.join(' ')} drops=${r(drops(b) - drops(a))} (Mpps)`;
}

export async function runHelper(o: HelperOptions, send: (m: HelperMessage) => void = () => undefined): Promise<void> {
  const cfg = loadBalancerConfig(o.config);
  if (cfg.routing.pools.length) throw new HelperOptionError(`${o.config}: use a forwarder-only config (no routing): mappings are preinstalled`);
  const balancer = new Balancer(cfg);
  balancer.start();
  let stopping = false;
  let stop = () => undefined as void;
  const stopped = new Promise<void>((resolve) => {
    stop = () => { if (!stopping) { stopping = true; resolve(); } };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    process.on('message', (m: { type?: string }) => {
      if (m?.type === 'snapshot') {
        const t = balancer.shim.counters().total;
        send({ type: 'counters', atMs: performance.now(), total: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, String(v)])) });
      } else if (m?.type === 'stop') stop();
    });
    process.on('disconnect', stop);
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    let mappings = 0;
    const t0 = performance.now();
    if (o.mappings === 'established') {
      const { buf, n } = encodeMappings(cfg, o.flows, 0);
      mappings = balancer.shim.insertMappingsRaw(buf, n);
      if (mappings < n) throw new Error(`only ${mappings} of ${n} mappings were inserted`);
    }
    const insertMs = performance.now() - t0;
    const mac = balancer.shim.portInfo(0).mac;
    console.log(`balancer: port 0 ${mac} ${cfg.ports[0]!.ip}, VIP ${cfg.vips.map((v) => `${v.ip}:${v.port}`).join(' ')}, ` +
      `${mappings} ACTIVE mappings to host '${cfg.hosts[0]?.name}' in ${insertMs.toFixed(0)} ms`);
    send({ type: 'ready', mappings, insertMs, mac });
    if (o.seconds > 0) setTimeout(stop, o.seconds * 1000).unref();
    if (o.intervalMs > 0) {
      let prev = balancer.shim.counters().total;
      let prevT = performance.now();
      timer = setInterval(() => {
        const cur = balancer.shim.counters().total;
        const now = performance.now();
        console.log(rateLine(prev, cur, (now - prevT) / 1000));
        prev = cur;
        prevT = now;
      }, o.intervalMs);
    }
    const first = balancer.shim.counters().total;
    const tStart = performance.now();
    await stopped;
    const last = balancer.shim.counters().total;
    console.log(`balancer: over ${((performance.now() - tStart) / 1000).toFixed(1)} s: ${rateLine(first, last, (performance.now() - tStart) / 1000)}`);
    const nonzero = Object.entries(last).filter(([k, v]) => v !== first[k]).map(([k, v]) => `${k}=${v - (first[k] ?? 0n)}`);
    console.log(`balancer: counter deltas: ${nonzero.join(' ')}; exceptions drained: ${balancer.unhandledExceptions}`);
  } finally {
    if (timer) clearInterval(timer);
    await balancer.stop();
  }
}

export function parseHelperArgs(argv: string[]): HelperOptions {
  const o: HelperOptions = {
    config: path.resolve(__dirname, '../../../bench/pktgen/lb-veth.yaml'),
    mappings: 'established', flows: { ...ESTABLISHED }, seconds: 0, intervalMs: 1000,
  };
  const num = (k: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new HelperOptionError(`--${k} must be an integer >= ${min}, got '${v}'`);
    return n;
  };
  for (const a of argv) {
    const m = /^--([a-z-]+)=(.*)$/.exec(a);
    if (!m) throw new HelperOptionError(`unknown argument '${a}' (use --name=value)`);
    const [, k, v] = m;
    if (k === 'config') o.config = v;
    else if (k === 'mappings') {
      if (v !== 'established' && v !== 'none') throw new HelperOptionError(`--mappings is 'established' or 'none', got '${v}'`);
      o.mappings = v;
    } else if (k === 'seconds') o.seconds = num(k, v, 0);
    else if (k === 'interval-ms') o.intervalMs = num(k, v, 0);
    else if (k === 'clients') o.flows.clients = num(k, v, 1);
    else if (k === 'ports') o.flows.ports = num(k, v, 1);
    else if (k === 'port-base') o.flows.portBase = num(k, v, 1);
    else if (k === 'client-base') o.flows.clientBase = v;
    else throw new HelperOptionError(`unknown option --${k}`);
  }
  return o;
}

if (require.main === module) {
  const send = (m: HelperMessage) => { if (process.send) process.send(m); };
  let opts: HelperOptions;
  try {
    opts = parseHelperArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`balancer: ${(err as Error).message}`);
    process.exit(2);
  }
  runHelper(opts, send).then(
    () => process.exit(0),
    (err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      console.error(`balancer: ${message}`);
      send({ type: 'error', message });
      process.exit(1);
    },
  );
}
