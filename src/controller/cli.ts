#!/usr/bin/env node
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ShimError } from '../offload';
import { Balancer } from './balancer';
import { ConfigError, loadBalancerConfig, loadClusterKey } from './config';
import { formatCounters } from './format';
import { createHost, loadHostConfig } from '../host';
import { ControlServer, fetchStatus } from './control';

/** Exit codes scripts can rely on. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, CONFIG: 3 } as const;

const HELP: Record<string, string> = {
  main: `handoff: L7 load balancer with TCP connection handoff

Usage: handoff <command> [options]

Commands:
  lb --config FILE        run a balancer
  host --config FILE      run a host agent (receives and injects connections)
  status [--socket PATH]  show a running balancer's state
  demo                    the demo topology: a balancer and two hosts (npm start)
  check-config FILE       validate a balancer configuration and exit
  help [COMMAND]          show help

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid configuration.`,
  lb: `Usage: handoff lb --config FILE [--duration SECONDS]

Runs the balancer described by FILE (YAML) and prints its counters every
statsIntervalMs. Stops on Ctrl-C or SIGTERM, or after --duration seconds.
Needs root (DPDK).`,
  host: `Usage: handoff host --config FILE [--duration SECONDS]

Runs a host agent: receives connection blobs on its UDP port, injects each
connection with TCP_REPAIR and hands it to the configured app (the built-in
demo HTTP app, or forward to a local upstream). Sets up the VXLAN device, the
VIPs on lo and the sysctls it needs, and removes what it created on exit.
Needs root (CAP_NET_ADMIN).`,
  status: `Usage: handoff status [--socket PATH] [--json]

Shows a running balancer's hosts, handoffs and counters, asked over its
control socket (default /run/handoff/lb.sock; the config's control.socket).`,
  demo: `Usage: handoff demo

Builds the test topology (namespaces handoff-lb, handoff-host1, handoff-host2
on the bridge handoff-br), starts a balancer and two host agents, prints the
VIP's URL and a live table. curl the VIP from this shell. Ctrl-C (or SIGTERM)
tears it all down. Needs root.`,
  'check-config': `Usage: handoff check-config FILE

Validates FILE. On an error, prints each key path and what was expected, and
exits 3.`,
};

function fail(code: number, message: string): never {
  process.stderr.write(`handoff: ${message}\n`);
  process.exit(code);
}

async function runLb(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: {
    config: { type: 'string', short: 'c' }, duration: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) return (console.log(HELP.lb), EXIT.OK);
  if (!values.config) fail(EXIT.USAGE, 'lb needs --config FILE (see handoff lb --help)');
  const duration = values.duration === undefined ? undefined : Number(values.duration);
  if (duration !== undefined && !(duration > 0)) fail(EXIT.USAGE, `--duration must be a positive number, got ${values.duration}`);
  const cfg = loadBalancerConfig(values.config);
  if (process.getuid?.() !== 0) {
    fail(EXIT.FAILURE, 'the balancer needs root (DPDK memory and devices); run it with sudo');
  }
  const clusterKey = cfg.routing.pools.length ? loadClusterKey(cfg, values.config) : undefined;
  const lb = new Balancer(cfg, { clusterKey });
  lb.start();
  const control = new ControlServer(cfg.control.socket, () => lb.status());
  await control.listen();
  const ports = cfg.ports.map((p, i) => {
    const info = lb.shim.portInfo(i);
    return `port ${i}: ${p.device} ${info.ip} ${info.mac} mtu ${info.mtu}`;
  });
  console.log(`handoff: balancer running (${cfg.workers} worker${cfg.workers > 1 ? 's' : ''})`);
  for (const line of ports) console.log(`  ${line}`);
  for (const v of cfg.vips) console.log(`  VIP ${v.ip}:${v.port}/${v.proto}`);
  const tap = cfg.eal.vdevs.map((v) => /^net_tap\d*,.*iface=([^,]+)/.exec(v)?.[1]).find(Boolean);
  if (tap) {
    const vip = cfg.vips[0];
    console.log(`  kernel side of the TAP device: ${tap}. To send it a connection, in another shell:`);
    console.log(`    ip link set ${tap} up && ip addr add 198.18.0.1/24 dev ${tap}` +
      (vip ? ` && curl -m 3 http://${vip.ip}:${vip.port}/` : ''));
    if (!hasRouting(cfg)) {
      console.log('  (no routing in this configuration: the handshake and request are taken and counted, no host answers)');
    }
  }
  const print = () => {
    const c = lb.shim.counters();
    console.log(`\n[${new Date().toISOString()}] mappings ${lb.shim.mappingCount()}`);
    const extra: Record<string, number> = lb.engine
      ? { ...lb.engine.stats, handoff_p50_us: Math.round(lb.engine.latency().p50 || 0) }
      : { exceptions_unhandled: lb.unhandledExceptions };
    console.log(formatCounters(c, extra));
  };
  console.log(`  status: handoff status --socket ${cfg.control.socket}`);
  const ticker = setInterval(print, cfg.statsIntervalMs || 2 ** 30);
  await new Promise<void>((resolve) => {
    const done = () => resolve();
    process.once('SIGINT', done);
    process.once('SIGTERM', done);
    if (duration) setTimeout(done, duration * 1000);
  });
  clearInterval(ticker);
  if (cfg.statsIntervalMs) print();
  control.close();
  await lb.stop();
  console.log('handoff: stopped');
  return EXIT.OK;
}

async function runHost(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: {
    config: { type: 'string', short: 'c' }, duration: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) return (console.log(HELP.host), EXIT.OK);
  if (!values.config) fail(EXIT.USAGE, 'host needs --config FILE (see handoff host --help)');
  const cfg = loadHostConfig(values.config);
  const clusterKey = loadClusterKey(cfg, values.config);
  const host = await createHost({
    port: cfg.listen.port, address: cfg.listen.address, clusterKey, vips: cfg.vips, balancers: cfg.balancers,
    maxAgeMs: cfg.maxBlobAgeMs, network: cfg.network,
    app: cfg.app.kind === 'demo' ? { kind: 'demo', name: cfg.name } : cfg.app,
  });
  host.agent.on('error', (err) => console.error(`handoff host: ${err.message}`));
  const control = new ControlServer(cfg.control.socket, () => ({
    name: cfg.name, stats: host.agent.stats, flows: host.agent.flows.size, injectUs: host.agent.injectTime(),
    served: host.served, forward: host.forward,
  }));
  await control.listen();
  console.log(`handoff: host agent '${cfg.name}' on udp ${cfg.listen.address}:${host.port}, VXLAN device ${host.network?.device ?? '-'} ${host.network?.mac ?? ''}`);
  console.log(`  serving ${cfg.vips.map((v) => `${v.ip}:${v.port}`).join(', ')} with the ${cfg.app.kind} app`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
    if (values.duration) setTimeout(resolve, Number(values.duration) * 1000);
  });
  console.log(JSON.stringify({ stats: host.agent.stats, injectUs: host.agent.injectTime(), forward: host.forward }));
  control.close();
  host.close();
  return EXIT.OK;
}

async function runStatus(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: {
    socket: { type: 'string', short: 's', default: '/run/handoff/lb.sock' }, json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) return (console.log(HELP.status), EXIT.OK);
  let st: Record<string, any>;
  try {
    st = await fetchStatus(values.socket!);
  } catch (err) {
    fail(EXIT.FAILURE, `no balancer answers on ${values.socket}: ${(err as Error).message}`);
  }
  if (values.json) return (console.log(JSON.stringify(st, null, 2)), EXIT.OK);
  console.log(`mappings ${st.mappings}, workers ${st.workers}`);
  for (const h of st.hosts ?? []) console.log(`  host ${h.name.padEnd(12)} ${h.ip.padEnd(15)} handoffs ${h.handoffs}`);
  if (st.engine) {
    const e = st.engine;
    console.log(`  handoffs started ${e.handoffsStarted} completed ${e.handoffsCompleted} failed ${e.handoffsFailed} ` +
      `failovers ${e.failovers} resets ${e.resets}; latency p50 ${Math.round(e.latencyUs.p50 ?? 0)} us p99 ${Math.round(e.latencyUs.p99 ?? 0)} us`);
  }
  const nz = Object.entries(st.counters ?? {}).filter(([, v]) => v !== 0);
  for (const [k, v] of nz) console.log(`  ${k.padEnd(28)} ${v}`);
  return EXIT.OK;
}

function hasRouting(cfg: { routing: { pools: unknown[] } }): boolean {
  return cfg.routing.pools.length > 0;
}

function runCheckConfig(argv: string[]): number {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { help: { type: 'boolean', short: 'h' } } });
  if (values.help) return (console.log(HELP['check-config']), EXIT.OK);
  if (positionals.length !== 1) fail(EXIT.USAGE, 'check-config needs exactly one FILE');
  const cfg = loadBalancerConfig(positionals[0]);
  console.log(`${positionals[0]}: valid (${cfg.ports.length} port(s), ${cfg.vips.length} VIP(s), ${cfg.hosts.length} host(s))`);
  return EXIT.OK;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'lb': return runLb(rest);
    case 'host': return runHost(rest);
    case 'status': return runStatus(rest);
    case 'demo': return (await import('./demo')).runDemo(rest);
    case 'check-config': return runCheckConfig(rest);
    case undefined: case 'help': case '--help': case '-h':
      console.log(HELP[rest[0] ?? 'main'] ?? HELP.main);
      return cmd === undefined ? EXIT.USAGE : EXIT.OK;
    default:
      fail(EXIT.USAGE, `unknown command '${cmd}' (see handoff --help)`);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code), (err: unknown) => {
    if (err instanceof ConfigError) fail(EXIT.CONFIG, err.message);
    if (err instanceof ShimError) fail(EXIT.FAILURE, `${err.message} [${err.code}]`);
    fail(EXIT.FAILURE, (err as Error)?.stack ?? String(err));
  });
}

export const defaultConfigPath = path.resolve(__dirname, '../../../configs/default.yaml');
