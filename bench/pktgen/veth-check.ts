// The Pktgen scripts checked on virtual devices: a namespace of its own with
// a veth pair, Pktgen (net_af_packet on pg0) against a Handoff balancer
// (bench/pktgen/balancer.ts with lb-veth.yaml, net_af_packet on lb0). Each
// scenario runs Pktgen once with its Lua script; the balancer's counters are
// read at the edges of Pktgen's measured window. Root; Pktgen is not part of
// the project (docs/benchmarks.md says how to build it):
//   PKTGEN=/path/to/pktgen node dist/bench/pktgen/veth-check.js [--seconds=N] [--only=a,b] [--pcaps=DIR] [--hugepages]
// (--hugepages: Pktgen on 2 MiB pages, which must be reserved and mounted; the balancer stays on 4 KiB pages.)
// This checks that the scripts drive the balancer as intended and that its
// counters move; af_packet over veth on a shared VM says nothing about NIC rates.
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sh } from '../../src/controller/netns';
import { Tail, killAll, killChildrenOnExit, live } from '../lib/processes';
import { VETH } from './common';
import type { HelperMessage } from './balancer';
import { writePcaps } from './pcaps';

interface Scenario {
  name: string;
  lua: string;
  mode: 'range' | 'pcap';
  pcap?: 'established' | 'synFlood' | 'mix';
  mappings: 'established' | 'none';
}

const SCENARIOS: Scenario[] = [
  { name: 'established-pcap', lua: 'established.lua', mode: 'pcap', pcap: 'established', mappings: 'established' },
  { name: 'established-range', lua: 'established.lua', mode: 'range', mappings: 'established' },
  { name: 'syn-flood-range', lua: 'syn-flood.lua', mode: 'range', mappings: 'established' },
  { name: 'syn-flood-pcap', lua: 'syn-flood.lua', mode: 'pcap', pcap: 'synFlood', mappings: 'established' },
  { name: 'mix-pcap', lua: 'mix.lua', mode: 'pcap', pcap: 'mix', mappings: 'established' },
];

/** The balancer counters each scenario is about. */
const SHOWN = ['rx_packets', 'encap_packets', 'exception_miss', 'syn_received', 'synack_sent', 'drop_bad_cookie', 'tx_packets'];

interface Options { pktgen: string; seconds: number; only?: string[]; pcaps?: string; memMb: number; hugepages: boolean }

function parseArgs(argv: string[]): Options {
  const o: Options = { pktgen: process.env.PKTGEN ?? '', seconds: 5, memMb: 2048, hugepages: false };
  for (const a of argv) {
    if (a === '--hugepages') { o.hugepages = true; continue; }
    const m = /^--([a-z]+)=(.+)$/.exec(a);
    if (!m) throw new Error(`unknown argument '${a}'`);
    if (m[1] === 'seconds') o.seconds = Number(m[2]);
    else if (m[1] === 'only') o.only = m[2]!.split(',');
    else if (m[1] === 'pcaps') o.pcaps = m[2];
    else if (m[1] === 'pktgen') o.pktgen = m[2]!;
    else if (m[1] === 'mem') o.memMb = Number(m[2]);
    else throw new Error(`unknown option --${m[1]}`);
  }
  if (!Number.isFinite(o.seconds) || o.seconds <= 0) throw new Error('--seconds must be positive');
  for (const n of o.only ?? []) if (!SCENARIOS.some((s) => s.name === n)) throw new Error(`unknown scenario '${n}'`);
  return o;
}

/** The balancer helper, forked into the namespace through `ip netns exec` (the IPC channel survives exec). */
class Helper {
  private readonly child: ChildProcess;
  private readonly tail = new Tail(40);
  private waiters: ((m: HelperMessage) => void)[] = [];
  readonly ready: Promise<Extract<HelperMessage, { type: 'ready' }>>;

  constructor(ns: string, mappings: string) {
    const script = path.join(__dirname, 'balancer.js');
    const config = path.resolve(__dirname, '../../../bench/pktgen/lb-veth.yaml');
    this.child = spawn('ip', ['netns', 'exec', ns, process.execPath, script, `--config=${config}`, `--mappings=${mappings}`, '--interval-ms=0'],
      { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    this.child.stdout!.on('data', (d) => this.tail.push(d));
    this.child.stderr!.on('data', (d) => this.tail.push(d));
    const kill = () => this.child.kill('SIGKILL');
    live.add(kill);
    this.child.on('exit', () => live.delete(kill));
    this.ready = new Promise((resolve, reject) => {
      this.child.on('message', (m: HelperMessage) => {
        if (m.type === 'ready') resolve(m);
        else if (m.type === 'error') reject(new Error(`balancer: ${m.message}\n${this.tail.text()}`));
        else this.waiters.shift()?.(m);
      });
      this.child.on('exit', (code) => reject(new Error(`balancer exited (${code}) before it was ready\n${this.tail.text()}`)));
    });
  }

  snapshot(): Promise<{ atMs: number; total: Record<string, bigint> }> {
    return new Promise((resolve) => {
      this.waiters.push((m) => {
        if (m.type !== 'counters') return;
        resolve({ atMs: m.atMs, total: Object.fromEntries(Object.entries(m.total).map(([k, v]) => [k, BigInt(v)])) });
      });
      this.child.send({ type: 'snapshot' });
    });
  }

  async stop(): Promise<string> {
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      this.child.send({ type: 'stop' });
      await exited;
    }
    return this.tail.text();
  }
}

interface Marks { atMs: number; opackets: number; ipackets: number }

interface Result {
  scenario: string;
  seconds: number;
  pktgenTxPps: number;
  pktgenRxPps: number;
  balancer: Record<string, number>;
}

/** One Pktgen run; the balancer's counters read when Pktgen marks its window. */
async function runPktgen(o: Options, ns: string, s: Scenario, pcapFile: string | undefined, helper: Helper): Promise<Result> {
  const dir = path.resolve(__dirname, '../../../bench/pktgen');
  const args = [
    'netns', 'exec', ns, o.pktgen,
    // Pktgen's main lcore shares CPU 1 with the balancer's worker; its port
    // lcore polls on CPU 0, where the balancer's control thread mostly sleeps.
    // In memory only: Pktgen 23.03 exits without rte_eal_cleanup() and would
    // leave its hugepage files (and the pages) and runtime directory behind.
    '--lcores', '0@1,1@0', ...(o.hugepages ? ['--in-memory'] : ['--no-huge', '--no-shconf']), '-m', String(o.memMb),
    '--no-pci', '--no-telemetry', '--vdev', `net_af_packet0,iface=${VETH.pktgenDev},framecnt=4096`,
    '--', '-N', '-P', '-m', '[1].0', ...(pcapFile ? ['-s', `0:${pcapFile}`] : []), '-f', path.join(dir, s.lua),
  ];
  const child = spawn('ip', args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HANDOFF_MODE: s.mode, HANDOFF_SECONDS: String(o.seconds), HANDOFF_WARMUP: '1', HANDOFF_QUIT: '1' },
  });
  const kill = () => child.kill('SIGKILL');
  live.add(kill);
  const tail = new Tail(30);
  const marks: { start?: Marks; end?: Marks } = {};
  const snaps: { start?: Promise<Awaited<ReturnType<Helper['snapshot']>>>; end?: Promise<Awaited<ReturnType<Helper['snapshot']>>> } = {};
  let line = '';
  const onLine = (l: string) => {
    // Pktgen draws its screen with escape sequences; our lines are plain.
    const m = /handoff-pktgen mark=(start|end) opackets=(\d+) ipackets=(\d+)/.exec(l);
    if (m) {
      const which = m[1] as 'start' | 'end';
      snaps[which] = helper.snapshot();
      marks[which] = { atMs: performance.now(), opackets: Number(m[2]), ipackets: Number(m[3]) };
    }
    const r = /handoff-pktgen scenario=.*/.exec(l);
    if (r) line = r[0];
  };
  const out = new Tail(30, onLine);
  child.stdout!.on('data', (d) => { out.push(d); });
  child.stderr!.on('data', (d) => tail.push(d));
  const timeoutMs = (o.seconds + 120) * 1000;
  const code = await new Promise<number | null>((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (c) => { clearTimeout(t); live.delete(kill); resolve(c); });
  });
  if (!marks.start || !marks.end || !snaps.start || !snaps.end) {
    throw new Error(`${s.name}: pktgen exited (${code}) without measuring\n${out.text()}\n${tail.text()}`);
  }
  const [a, b] = [await snaps.start, await snaps.end];
  const secs = (b.atMs - a.atMs) / 1000;
  const pgSecs = (marks.end.atMs - marks.start.atMs) / 1000;
  const balancer: Record<string, number> = {};
  for (const k of Object.keys(b.total)) {
    const d = Number(b.total[k]! - (a.total[k] ?? 0n));
    if (d !== 0) balancer[k] = d / secs;
  }
  if (line) console.log(`  pktgen: ${line}`);
  return {
    scenario: s.name, seconds: secs, balancer,
    pktgenTxPps: (marks.end.opackets - marks.start.opackets) / pgSecs,
    pktgenRxPps: (marks.end.ipackets - marks.start.ipackets) / pgSecs,
  };
}

const kpps = (v: number | undefined) => ((v ?? 0) / 1000).toFixed(1);

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) { console.error('veth-check: needs root (network namespaces, af_packet)'); return 2; }
  if (!o.pktgen || !fs.existsSync(o.pktgen)) {
    console.error('veth-check: set PKTGEN (or --pktgen=) to a pktgen 23.03 binary built with Lua; docs/benchmarks.md says how');
    return 2;
  }
  killChildrenOnExit('veth-check');
  const ns = `handoff-pktgen-${process.pid}`;
  let tmp: string | undefined;
  const cleanup = () => {
    killAll();
    sh('ip', ['netns', 'del', ns], { allowFail: true });
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  };
  live.add(() => sh('ip', ['netns', 'del', ns], { allowFail: true }));
  try {
    const scenarios = SCENARIOS.filter((s) => !o.only || o.only.includes(s.name));
    let pcapDir = o.pcaps;
    if (!pcapDir && scenarios.some((s) => s.pcap)) {
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-pktgen-'));
      pcapDir = tmp;
      const t0 = Date.now();
      writePcaps({ out: tmp });
      console.log(`veth-check: pcaps written in ${Date.now() - t0} ms (${tmp})`);
    }
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'add', VETH.pktgenDev, 'address', VETH.pktgenMac, 'type', 'veth', 'peer', 'name', VETH.lbDev, 'address', VETH.lbMac]);
    for (const d of [VETH.pktgenDev, VETH.lbDev]) sh('ip', ['-n', ns, 'link', 'set', d, 'up']);
    // Only Pktgen and the balancer speak on these ends, not the kernel.
    sh('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1'], { ns });

    const results: Result[] = [];
    const helper = new Helper(ns, 'established');
    const ready = await helper.ready;
    console.log(`veth-check: balancer ready, ${ready.mappings} ACTIVE mappings inserted in ${ready.insertMs.toFixed(0)} ms, port MAC ${ready.mac}`);
    try {
      for (const s of scenarios) {
        console.log(`veth-check: ${s.name} (${o.seconds} s)`);
        const file = s.pcap ? path.join(pcapDir!, { established: 'established.pcap', synFlood: 'syn-flood.pcap', mix: 'mix.pcap' }[s.pcap]) : undefined;
        const r = await runPktgen(o, ns, s, file, helper);
        results.push(r);
        console.log(`  balancer over ${r.seconds.toFixed(2)} s (kpps): ` + SHOWN.map((k) => `${k}=${kpps(r.balancer[k])}`).join(' '));
        const drops = Object.entries(r.balancer).filter(([k]) => k.startsWith('drop_')).map(([k, v]) => `${k}=${kpps(v)}`);
        console.log(`  balancer drops (kpps): ${drops.join(' ') || 'none'}`);
        console.log(`  pktgen (kpps): tx=${kpps(r.pktgenTxPps)} rx=${kpps(r.pktgenRxPps)}`);
      }
    } finally {
      const text = await helper.stop();
      if (process.env.VETH_CHECK_VERBOSE) console.log(text);
    }
    console.log(`pktgen_veth ${results.map((r) => `${r.scenario}_tx_kpps=${kpps(r.pktgenTxPps)} ${r.scenario}_lb_rx_kpps=${kpps(r.balancer.rx_packets)}`).join(' ')}`);
    return 0;
  } finally {
    cleanup();
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  console.error(`veth-check: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
