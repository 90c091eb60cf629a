#!/usr/bin/env node
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ShimError } from '../offload';
import { BgpSpeaker } from './bgp';
import { Balancer } from './balancer';
import { ConfigError, loadBalancerConfig, loadClusterKey } from './config';
import { formatCounters } from './format';
import { AppCheck, createHost, loadHostConfig } from '../host';
import { ControlServer, fetchStatus, HttpEndpoint, requestReload } from './control';
import { createLogger } from './log';
import { BalancerMetrics } from './metrics';

/** Exit codes scripts can rely on. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, CONFIG: 3 } as const;

const HELP: Record<string, string> = {
  main: `handoff: L7 load balancer with TCP connection handoff

Usage: handoff <command> [options]

Commands:
  lb --config FILE        run a balancer
  host --config FILE      run a host agent (receives and injects connections)
  status [--socket PATH]  show a running balancer's state
  reload [--socket PATH]  make a running balancer re-read its configuration (as SIGHUP does)
  demo                    the demo topology: a balancer and two hosts (npm start); --balancers 3: a cluster
  check-config FILE       validate a balancer configuration and exit
  help [COMMAND]          show help

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 invalid configuration.`,
  lb: `Usage: handoff lb --config FILE [--duration SECONDS]

Runs the balancer described by FILE (YAML). Logs JSON lines on stdout (pino),
its counters every statsIntervalMs. Serves /metrics, /healthz and /status on
control.http (default 127.0.0.1:9464) and /status, /reload on control.socket.
SIGHUP (or handoff reload) re-reads FILE and applies rules, pools, hosts and
health settings without dropping a flow; a bad file is refused and the old
configuration stays. SIGTERM drains (up to shutdown.drainTimeoutMs), a second
SIGTERM or Ctrl-C stops at once. Needs root (DPDK).`,
  reload: `Usage: handoff reload [--socket PATH]

Asks a running balancer to re-read its configuration file, as SIGHUP does,
and prints what changed. Exits 3 when the new configuration is refused (the
balancer keeps the old one), 1 when no balancer answers.`,
  host: `Usage: handoff host --config FILE [--duration SECONDS]

Runs a host agent: receives connection blobs on its UDP port, injects each
connection with TCP_REPAIR and hands it to the configured app (the built-in
demo HTTP app, or forward to a local upstream). Sets up the VXLAN device, the
VIPs on lo and the sysctls it needs, and removes what it created on exit.
Needs root (CAP_NET_ADMIN).`,
  status: `Usage: handoff status [--socket PATH] [--json]

Shows a running balancer's hosts, handoffs and counters, asked over its
control socket (default /run/handoff/lb.sock; the config's control.socket).`,
  demo: `Usage: handoff demo [--balancers N]

Builds the test topology (namespaces handoff-lb, handoff-host1, handoff-host2
on the bridge handoff-br), starts a balancer and two host agents, prints the
VIP's URL and a live table. curl the VIP from this shell. Ctrl-C (or SIGTERM)
tears it all down. Needs root.

--balancers N (2..8): N balancers behind a router namespace (handoff-rt)
that spreads the VIP over them with ECMP, learned over BGP from each
balancer's BIRD when bird2 is installed; the table shows each balancer's
flows. Kill one and watch its flows carry on through the others.`,
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
  const file = values.config;
  const cfg = loadBalancerConfig(file);
  if (process.getuid?.() !== 0) {
    fail(EXIT.FAILURE, 'the balancer needs root (DPDK memory and devices); run it with sudo');
  }
  const log = createLogger({ service: 'handoff-lb', level: cfg.log.level });
  const clusterKey = cfg.routing.pools.length ? loadClusterKey(cfg, file) : undefined;
  let metrics: BalancerMetrics | undefined;
  const lb = new Balancer(cfg, { clusterKey, log, onHandoffLatency: (us) => metrics?.observeHandoff(us) });
  metrics = new BalancerMetrics(lb);
  lb.start();

  const reload = async () => {
    try {
      let next;
      try {
        next = loadBalancerConfig(file);
      } catch (err) {
        lb.reloads.refused++; // lb.reload counts its own refusals
        throw err;
      }
      const r = lb.reload(next, file);
      log.info({ event: 'reload', result: 'applied', changes: r.changes }, r.changes.length
        ? `reload applied: ${r.changes.join('; ')}` : 'reload applied: nothing changed');
      return r;
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [{ path: '/', message: (err as Error).message }];
      log.error({ event: 'reload', result: 'refused', problems }, `reload refused, the old configuration stays: ${(err as Error).message}`);
      throw err;
    }
  };
  let bgp: BgpSpeaker | undefined;
  let bgpTimer: NodeJS.Timeout | undefined;
  const handlers = {
    status: () => ({ ...lb.status(), bgp: bgp ? { announced: bgp.isAnnouncing } : null }),
    metrics: async () => ({ contentType: metrics!.contentType, body: await metrics!.text() }),
    healthz: () => (lb.shuttingDown ? { ok: false, reason: 'draining: shutting down' } : { ok: true, reason: 'ok' }),
    reload,
  };
  const control = new ControlServer(cfg.control.socket, handlers);
  await control.listen();
  let http: HttpEndpoint | undefined;
  let metricsUrl = '';
  if (cfg.control.http.port) {
    http = new HttpEndpoint(handlers);
    const port = await http.listen(cfg.control.http.address, cfg.control.http.port);
    metricsUrl = `http://${cfg.control.http.address}:${port}/metrics`;
  }
  // BGP (issue 16): announced while /healthz passes, withdrawn before the drain and when the process dies.
  if (cfg.bgp.enabled) {
    bgp = new BgpSpeaker({ config: cfg.bgp, runDir: cfg.bgp.runDir, vips: cfg.vips.map((v) => v.ip), dataAddress: cfg.ports[0].ip, log });
    try {
      await bgp.start();
    } catch (err) {
      log.error({ event: 'bgp', err: (err as Error).message }, `BGP: ${(err as Error).message}`);
      control.close();
      await lb.stop();
      return EXIT.FAILURE;
    }
    const follow = () => {
      const h = handlers.healthz();
      void bgp!.set(h.ok, h.reason);
    };
    follow();
    bgpTimer = setInterval(follow, 250);
  }
  const ports = cfg.ports.map((p, i) => ({ port: i, device: p.device, ...lb.shim.portInfo(i) }));
  log.info({ event: 'started', workers: cfg.workers, ports, vips: cfg.vips, hosts: cfg.hosts.map((h) => h.name),
    controlSocket: cfg.control.socket, metrics: metricsUrl || null },
  `balancer running (${cfg.workers} worker${cfg.workers > 1 ? 's' : ''})${metricsUrl ? `, metrics at ${metricsUrl}` : ''}`);
  const tap = cfg.eal.vdevs.map((v) => /^net_tap\d*,.*iface=([^,]+)/.exec(v)?.[1]).find(Boolean);
  if (tap) {
    const vip = cfg.vips[0];
    log.info({ event: 'hint', tap }, `kernel side of the TAP device: ${tap}. To send it a connection, in another shell: ` +
      `ip link set ${tap} up && ip addr add 198.18.0.1/24 dev ${tap}` + (vip ? ` && curl -m 3 http://${vip.ip}:${vip.port}/` : '') +
      (hasRouting(cfg) ? '' : ' (no routing in this configuration: the handshake and request are taken and counted, no host answers)'));
  }
  const print = () => {
    const c = lb.shim.counters();
    const nz = Object.fromEntries(Object.entries(c.total).filter(([, v]) => v !== 0n).map(([k, v]) => [k, Number(v)]));
    log.info({ event: 'stats', mappings: lb.shim.mappingCount(), counters: nz,
      engine: lb.engine ? { ...lb.engine.stats, handoffP50Us: Math.round(lb.engine.latency().p50 || 0) } : undefined,
      exceptionsUnhandled: lb.engine ? undefined : lb.unhandledExceptions }, 'stats');
  };
  const ticker = setInterval(print, cfg.statsIntervalMs || 2 ** 30);
  const onHup = () => void reload().catch(() => { /* logged */ });
  process.on('SIGHUP', onHup);
  const how = await new Promise<'now' | 'drain'>((resolve) => {
    process.once('SIGINT', () => resolve('now'));
    process.once('SIGTERM', () => resolve('drain'));
    if (duration) setTimeout(() => resolve('now'), duration * 1000);
  });
  process.off('SIGHUP', onHup);
  lb.shuttingDown = true;
  if (bgpTimer) clearInterval(bgpTimer);
  // Withdraw first: the router moves new connections and the flows' packets to the other balancers, which adopt them.
  await bgp?.set(false, how === 'drain' ? 'draining' : 'stopping');
  // A SIGHUP from here on must not kill the process (its default action) mid-drain.
  process.on('SIGHUP', () => log.warn({ event: 'reload', result: 'ignored' }, 'reload ignored: shutting down'));
  if (how === 'drain' && lb.config.shutdown.drainTimeoutMs > 0) {
    const t = lb.config.shutdown.drainTimeoutMs;
    log.info({ event: 'draining', timeoutMs: t, inProgress: lb.engine?.inProgress ?? 0, flows: lb.engine?.activeFlows ?? 0 },
      `draining: serving until the flows end, at most ${t} ms (SIGTERM or Ctrl-C again: stop now)`);
    const cut = new Promise<boolean>((resolve) => {
      process.once('SIGINT', () => resolve(false));
      process.once('SIGTERM', () => resolve(false));
    });
    const drained = await Promise.race([lb.drain(t), cut]);
    log.info({ event: 'drained', complete: drained, flowsLeft: lb.engine?.activeFlows ?? 0 },
      drained ? 'drained: no flow left' : 'drain cut short: stopping with flows left');
  }
  clearInterval(ticker);
  if (cfg.statsIntervalMs) print();
  control.close();
  http?.close();
  await bgp?.stop();
  await lb.stop();
  log.info({ event: 'stopped' }, 'stopped');
  return EXIT.OK;
}

async function runReload(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: {
    socket: { type: 'string', short: 's', default: '/run/handoff/lb.sock' }, help: { type: 'boolean', short: 'h' },
  } });
  if (values.help) return (console.log(HELP.reload), EXIT.OK);
  let r: { ok: boolean; changes?: string[]; error?: string };
  try {
    r = await requestReload(values.socket!);
  } catch (err) {
    fail(EXIT.FAILURE, `no balancer answers on ${values.socket}: ${(err as Error).message}`);
  }
  if (!r.ok) fail(EXIT.CONFIG, `reload refused, the balancer keeps its configuration:\n${r.error}`);
  console.log(r.changes?.length ? `reloaded: ${r.changes.join('; ')}` : 'reloaded: nothing changed');
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
    maxAgeMs: cfg.maxBlobAgeMs, network: cfg.network, perRequest: cfg.perRequest,
    app: cfg.app.kind === 'demo' ? { kind: 'demo', name: cfg.name } : cfg.app,
    apps: cfg.vips.flatMap((v) => (v.app ? [{ ip: v.ip, port: v.port, app: v.app.kind === 'demo' ? { kind: 'demo' as const, name: cfg.name } : v.app }] : [])),
  });
  const log = createLogger({ service: 'handoff-host', level: cfg.log.level });
  host.agent.on('error', (err) => log.error({ event: 'agent-error', err: err.message }, err.message));
  let check: AppCheck | undefined;
  if (cfg.health.http) {
    check = new AppCheck({ ...cfg.health.http, onResult: (ok, detail) => {
      if (ok !== host.agent.appHealthy) {
        log.warn({ event: 'app-check', ok, detail, url: withoutCredentials(cfg.health.http!.url) }, `application check ${ok ? 'passes' : 'fails'}: ${detail}`);
      }
      host.agent.appHealthy = ok;
    } }).start();
  }
  const control = new ControlServer(cfg.control.socket, () => ({
    name: cfg.name, stats: host.agent.stats, flows: host.agent.flows.size, injectUs: host.agent.injectTime(),
    served: host.served, forward: host.forward, draining: host.agent.draining,
    // Each forwarding app's counters, and how it forwards (in the kernel, or piped through JS).
    forwards: Object.fromEntries([...host.forwards].map(([k, v]) => [k, { ...v, inKernel: host.kernelForwarders.has(k) }])),
    appCheck: check ? { ok: check.ok, detail: check.detail } : null,
  }));
  await control.listen();
  log.info({ event: 'started', name: cfg.name, port: host.port, device: host.network?.device ?? null, mac: host.network?.mac ?? null,
    vips: cfg.vips, app: cfg.app.kind },
  `host agent '${cfg.name}' on udp ${cfg.listen.address}:${host.port}, VXLAN device ${host.network?.device ?? '-'} ${host.network?.mac ?? ''}; ` +
    `serving ${cfg.vips.map((v) => `${v.ip}:${v.port}`).join(', ')} with the ${cfg.app.kind} app`);
  // The host agent has no reload: say so rather than die of SIGHUP's default action.
  process.on('SIGHUP', () => log.warn({ event: 'reload', result: 'ignored' }, 'the host agent has no reload: restart it to apply a new configuration'));
  const how = await new Promise<'now' | 'drain'>((resolve) => {
    process.once('SIGINT', () => resolve('now'));
    process.once('SIGTERM', () => resolve('drain'));
    if (values.duration) setTimeout(() => resolve('now'), Number(values.duration) * 1000);
  });
  if (how === 'drain' && cfg.shutdown.drainTimeoutMs > 0 && host.agent.flows.size > 0) {
    // Balancers learn it from the next PONG and send no new connections; the ones here finish.
    host.agent.draining = true;
    const t = cfg.shutdown.drainTimeoutMs;
    log.info({ event: 'draining', flows: host.agent.flows.size, timeoutMs: t }, `draining: ${host.agent.flows.size} connection(s) open, waiting at most ${t} ms`);
    const end = Date.now() + t;
    let cut = false;
    const stopNow = () => { cut = true; };
    process.once('SIGINT', stopNow);
    process.once('SIGTERM', stopNow);
    while (!cut && host.agent.flows.size > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    log.info({ event: 'drained', flowsLeft: host.agent.flows.size }, host.agent.flows.size ? 'drain cut short' : 'drained: no connection left');
  }
  check?.stop();
  log.info({ event: 'stopped', stats: host.agent.stats, injectUs: host.agent.injectTime(), forward: host.forward }, 'stopped');
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
  if (st.shuttingDown) console.log('  draining: shutting down');
  for (const h of st.hosts ?? []) {
    const state = !h.health ? (h.drain ? 'draining (configured)' : 'no checks')
      : `${h.health.up ? 'up' : 'DOWN'}${h.drain || h.health.draining ? ', draining' : ''}${h.health.appDown ? ', app check failing' : ''}`;
    console.log(`  host ${h.name.padEnd(12)} ${h.ip.padEnd(15)} handoffs ${String(h.handoffs).padStart(8)}  ${state}` +
      `${h.eligible ? '' : ' (takes no new connections)'}`);
  }
  if (st.engine) {
    const e = st.engine;
    console.log(`  handoffs started ${e.handoffsStarted} completed ${e.handoffsCompleted} failed ${e.handoffsFailed} ` +
      `failovers ${e.failovers} resets ${e.resets}; latency p50 ${Math.round(e.latencyUs.p50 ?? 0)} us p99 ${Math.round(e.latencyUs.p99 ?? 0)} us`);
  }
  const nz = Object.entries(st.counters ?? {}).filter(([, v]) => v !== 0);
  for (const [k, v] of nz) console.log(`  ${k.padEnd(28)} ${v}`);
  return EXIT.OK;
}

/** A URL fit for a log line: no user or password. */
function withoutCredentials(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
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
    case 'reload': return runReload(rest);
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
