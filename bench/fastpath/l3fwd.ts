// The matched peer: DPDK's l3fwd example in exact-match mode (-E), which does
// what the shim's worker does per packet minus the encapsulation: parse the
// IPv4/TCP headers, look the 5-tuple up in a 1M-entry rte_hash (its own CRC
// hash, 8 lookups at a time), rewrite the Ethernet header and send. Built at
// bench time from the sources Debian ships in dpdk-doc, with one change: it
// asks every port for RX checksum offload, which virtual devices do not
// offer (ethdev then refuses to configure them), so the build drops that
// request. l3fwd checks nothing with it in EM mode; the lookup is untouched.
//
// Ports: net_pcap0 replays the same pcap as the shim's run (same PMD, same
// per-packet copy); every rule sends to port 1, a null device that frees what
// it is given, so a rule hit is port 1's opackets and a miss (l3fwd sends it
// back out of the input port) is port 0's. l3fwd prints no rates: the driver
// reads the ports' counters over EAL telemetry (ethdev-stats.py).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { BenchError, VIP, childOf, ealArgs, flowClientIp, flowClientPort } from './common';
import { taskSeconds } from '../e2e-vs-haproxy/measure';
import { countCacheMisses } from './perf';
import { describeExit, live, spawnBounded, Tail } from '../lib/processes';

const ROOT = path.resolve(__dirname, '../../..');
const EXAMPLES = '/usr/share/dpdk/examples';
const BUILD_DIR = path.join(ROOT, 'bench/results/tmp/peers');
const STATS_SCRIPT = path.join(ROOT, 'bench/fastpath/ethdev-stats.py');

/**
 * The l3fwd binary: `explicit` when given, else built once from dpdk-doc's
 * sources into bench/results/tmp/peers (kept for later runs).
 * @throws BenchError when the sources are not installed or the build fails.
 */
export function ensureL3fwd(explicit?: string): string {
  if (explicit) {
    if (!fs.existsSync(explicit)) throw new BenchError(`l3fwd binary ${explicit} not found`);
    return explicit;
  }
  const bin = path.join(BUILD_DIR, 'l3fwd/build/l3fwd');
  if (fs.existsSync(bin)) return bin;
  if (!fs.existsSync(path.join(EXAMPLES, 'l3fwd/l3fwd_em.c'))) {
    throw new BenchError(`DPDK's example sources are not in ${EXAMPLES} (Debian: apt-get install dpdk-doc; npm run setup does)`);
  }
  fs.mkdirSync(BUILD_DIR, { recursive: true });
  // l3fwd includes ../common: both folders, side by side.
  for (const d of ['l3fwd', 'common']) {
    fs.rmSync(path.join(BUILD_DIR, d), { recursive: true, force: true });
    fs.cpSync(path.join(EXAMPLES, d), path.join(BUILD_DIR, d), { recursive: true });
  }
  const main = path.join(BUILD_DIR, 'l3fwd/main.c');
  const src = fs.readFileSync(main, 'utf8');
  const offload = '.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,';
  if (src.split(offload).length !== 2) throw new BenchError(`${main}: expected one '${offload}' to remove (another DPDK version?)`);
  fs.writeFileSync(main, src.replace(offload, '.offloads = 0, /* handoff bench: vdevs have no checksum offload */'));
  try {
    execFileSync('make', ['-s', '-j2', '-C', path.join(BUILD_DIR, 'l3fwd')], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new BenchError(`building l3fwd from ${EXAMPLES}/l3fwd failed: ${e.stderr?.toString().slice(-2000) || e.message}`);
  }
  if (!fs.existsSync(bin)) throw new BenchError(`make left no ${bin}`);
  return bin;
}

/** l3fwd's rule files for `flows` flows: IPv4 rules to port 1, and the one IPv6 rule it insists on. */
export function writeL3fwdRules(dir: string, flows: number): { v4: string; v6: string } {
  const v4 = path.join(dir, `l3fwd-rules-v4-${flows}.cfg`);
  const v6 = path.join(dir, 'l3fwd-rules-v6.cfg');
  const ip = (x: number) => `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
  const fd = fs.openSync(v4, 'w');
  try {
    let buf = '';
    for (let i = 0; i < flows; i++) {
      // R<dst addr> <src addr> <dst port> <src port> <proto> <out port>
      buf += `R${VIP.ip} ${ip(flowClientIp(i))} ${VIP.port} ${flowClientPort(i)} 0x6 1\n`;
      if (buf.length > 1 << 20) { fs.writeSync(fd, buf); buf = ''; }
    }
    fs.writeSync(fd, buf);
  } finally {
    fs.closeSync(fd);
  }
  // Unused by the IPv4 pcap; l3fwd -E refuses to start without an IPv6 file.
  fs.writeFileSync(v6, 'R2001:db8::1 2001:db8::2 9 9 0x11 1\n');
  return { v4, v6 };
}

export interface L3fwdResult {
  pps: number;
  /** Share of received packets that hit a rule (port 1's transmissions). */
  hitRatio: number;
  cpuShare?: number;
  cacheMisses?: number;
  loadMs: number;
}

export interface L3fwdRun {
  bin: string;
  pcap: string;
  rules: { v4: string; v6: string };
  memMb: number;
  hugepages: boolean;
  seconds: number;
  /** Packets in the pcap: the pool must hold them all (the PMD keeps the file in mbufs). */
  packets: number;
}

/** One measurement: start l3fwd, wait for its main loop, read the counters over `seconds`, stop it. */
export async function runL3fwd(r: L3fwdRun): Promise<L3fwdResult> {
  // l3fwd sizes its pool from the RX ring: 2 ports x this size must exceed
  // the pcap plus what is in flight.
  const rxq = Math.ceil((r.packets + 8192) / 2);
  if (rxq > 65535) throw new BenchError(`l3fwd's pool follows its RX ring size (at most 65535): use --packets <= ${2 * 65535 - 8192}`);
  const prefix = `handoff-l3fwd-${process.pid}`;
  const sock = `/var/run/dpdk/${prefix}/dpdk_telemetry.v2`;
  const args = [
    // Only lcore 1: l3fwd's main lcore forwards too and opens a TX queue per
    // lcore, and the pcap port has one. EAL's own threads go to CPU 0.
    ...ealArgs(r.pcap, r.memMb, r.hugepages, { telemetry: true, filePrefix: prefix, extraVdevs: ['net_null0'], lcores: '1' }), '--',
    '-p', '0x3', '-E', '--parse-ptype', '--config=(0,0,1)', `--rx-queue-size=${rxq}`,
    `--rule_ipv4=${r.rules.v4}`, `--rule_ipv6=${r.rules.v6}`,
  ];
  let ready: (() => void) | undefined;
  const started = new Promise<void>((res) => { ready = res; });
  const tail = new Tail(40, (line) => { if (/entering main loop on lcore/.test(line)) ready?.(); });
  const limit = r.seconds + 300;
  const t0 = Date.now();
  // It prints one "EM: Adding route" line per rule: the tail keeps the last.
  const { child, kill, exited } = spawnBounded([r.bin, ...args], limit, tail);
  const fail = (msg: string) => new BenchError(`${msg}\n  l3fwd output (last lines):\n${tail.text()}`);
  try {
    const early = await Promise.race([started.then(() => undefined), exited]);
    if (early) throw fail(`l3fwd ${describeExit(early)} before its main loop`);
    const loadMs = Date.now() - t0;
    await new Promise((res) => setTimeout(res, 1000)); // warm-up, as for the shim
    // The forwarding thread is l3fwd's main thread.
    const pid = childOf(child.pid!);
    const tids = pid ? [pid] : [];
    const cpu0 = pid ? taskSeconds(pid) : undefined;
    const misses = countCacheMisses(tids, r.seconds);
    const s0 = process.hrtime.bigint();
    let out: string;
    try {
      out = execFileSync('python3', [STATS_SCRIPT, sock, String(r.seconds), '0', '1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      throw fail(`reading l3fwd's counters failed: ${(err as { stderr?: string }).stderr?.trim() || (err as Error).message}`);
    }
    const wall = Number(process.hrtime.bigint() - s0) / 1e9;
    const cpu1 = pid ? taskSeconds(pid) : undefined;
    const st = JSON.parse(out) as { seconds: number; ports: Record<string, Record<string, number>> };
    const rx = st.ports['0']?.ipackets ?? 0;
    const hits = st.ports['1']?.opackets ?? 0;
    if (rx === 0) throw fail('l3fwd received no packets');
    const hitRatio = hits / rx;
    if (hitRatio < 0.99) {
      throw fail(`only ${(hitRatio * 100).toFixed(2)}% of ${rx} packets hit an l3fwd rule (port 0 sent ${st.ports['0']?.opackets ?? 0} back)`);
    }
    return {
      pps: rx / st.seconds, hitRatio, loadMs, cacheMisses: await misses,
      cpuShare: cpu0 !== undefined && cpu1 !== undefined ? (cpu1 - cpu0) / wall : undefined,
    };
  } finally {
    try { process.kill(-child.pid!, 'SIGINT'); } catch { /* gone already */ }
    const done = await Promise.race([exited.then(() => true), new Promise((res) => setTimeout(() => res(false), 20_000))]);
    if (!done) kill();
    live.delete(kill);
  }
}
