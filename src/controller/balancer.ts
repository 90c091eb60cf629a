import crypto from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { HandoffEngine, Router } from '../classifier';
import type { EngineHost } from '../classifier';
import { PacketBurst, Shim } from '../offload';
import { decodeDatagram } from '../transfer';
import { BalancerConfig } from './config-schema';
import { ConfigError, ealArgs } from './config';
import { cookieSecretsAt } from './cluster';
import { flowIdPartition } from '../classifier';
import type { ConfigProblem } from './config';
import { HealthMonitor } from './health';
import { HostMacs } from './host-macs';
import type { Logger } from './log';

export interface BalancerOptions {
  /** Cluster key for blobs; required when the configuration has pools. */
  clusterKey?: Buffer;
  /** Structured log; default: none. */
  log?: Logger;
  /** Each completed handoff's latency in microseconds (metrics). */
  onHandoffLatency?: (us: number) => void;
}

/** What a reload changed, in words for the log. */
export interface ReloadResult {
  changes: string[];
}

/** Keys a running balancer cannot change: a reload touching them is refused (restart instead). */
/** Host ids the shim's table holds (HS_MAX_HOSTS). */
const MAX_HOST_IDS = 4096;

const RESTART_KEYS = ['eal', 'workers', 'idleSleepUs', 'idleSleepMaxUs', 'ports', 'vips', 'limits', 'clusterKey', 'accept', 'classify', 'blob',
  'mappings', 'cluster', 'bgp', 'statsIntervalMs', 'control', 'log'] as const;

/** Deep equality, whatever the order of keys in the file. */
const same = (a: unknown, b: unknown) => isDeepStrictEqual(a, b);

/**
 * A running balancer: the shim, its hosts, and the control loop. With
 * routing configured the handoff engine takes the shim's events; without it,
 * exceptions are drained and counted (the forwarder alone).
 */
export class Balancer {
  readonly shim: Shim;
  engine?: HandoffEngine;
  /** Exception packets drained with no engine to take them (counted, never silent). */
  unhandledExceptions = 0;
  private rotateTimer?: NodeJS.Timeout;
  private draining = false;
  private running?: Promise<void>;
  private readonly burst = new PacketBurst(64);
  private readonly clusterKey?: Buffer;
  private readonly log?: Logger;
  private readonly onHandoffLatency?: (us: number) => void;
  /** The configuration in force (the constructor's, then each reload's). */
  private current: BalancerConfig;
  /** Shim host id by host name: stable across reloads, so flows keep their host. */
  private readonly hostIds = new Map<string, number>();
  /** What each shim host id was last given: an id is never pointed at another address while flows may use it. */
  private readonly shimHosts = new Map<number, BalancerConfig['hosts'][number]>();
  /** Hosts of the configuration in force, by name. */
  private hostsByName = new Map<string, BalancerConfig['hosts'][number]>();
  health?: HealthMonitor;
  /** Hosts' MACs, configured or learned (ARP, PONGs). */
  macs?: HostMacs;
  private macTimer?: NodeJS.Timeout;
  private readonly arpBurst = new PacketBurst(16);
  private healthTimer?: NodeJS.Timeout;
  /** Bumped on every health change and reload: panic() recomputes only then. */
  private healthVersion = 0;
  private panicAt = -1;
  private panicking = false;
  /** Set once a graceful shutdown has begun. */
  shuttingDown = false;
  readonly reloads = { applied: 0, refused: 0 };

  constructor(config: BalancerConfig, options: BalancerOptions = {}) {
    this.current = config;
    this.clusterKey = options.clusterKey;
    this.log = options.log;
    this.onHandoffLatency = options.onHandoffLatency;
    const a = config.accept;
    this.shim = new Shim({
      eal: ealArgs(config),
      ports: config.ports,
      vips: config.vips,
      workers: config.workers,
      idleSleepUs: config.idleSleepUs,
      idleSleepMaxUs: config.idleSleepMaxUs,
      mbufs: config.limits.mbufs,
      mappingCapacity: config.limits.mappingCapacity,
      holdFlows: config.limits.holdFlows,
      holdPerFlow: config.limits.holdPerFlow,
      holdTotal: config.limits.holdTotal,
      exceptionRingSize: config.limits.exceptionRingSize,
      txRingSize: config.limits.txRingSize,
      acceptCapacity: a.capacity,
      acceptMaxBytes: a.maxBytes,
      acceptTimeoutMs: a.timeoutMs,
      // The engine learns of a connection from its first bytes (one event
      // fewer per handoff); one that sends none comes when it must be decided.
      announceAfterMs: config.routing.pools.length ? config.classify.timeoutMs : 0,
      cookieTickS: a.cookieTickS,
      rcvWscale: a.rcvWscale,
      resetBadAck: a.resetBadAck,
      // Stray recovery needs the engine (routing) to ask the hosts.
      strayRate: config.cluster.recovery.enabled && config.routing.pools.length ? config.cluster.recovery.ratePerWorker : 0,
      strayBurst: config.cluster.recovery.burst,
    });
  }

  /** @throws ShimError */
  start(): void {
    const cfg = this.config;
    this.shim.start();
    this.macs = new HostMacs({
      ports: cfg.ports,
      portAddrs: cfg.ports.map((p, i) => ({ ip: p.ip, mac: this.shim.portInfo(i).mac })),
      send: (port, frame) => {
        this.arpBurst.clear();
        this.arpBurst.add(frame, port);
        this.shim.txBurst(this.arpBurst);
      },
      onChange: (names) => { for (const n of names) this.applyMacs(n); },
    });
    this.macs.setHosts(cfg.hosts);
    cfg.hosts.forEach((h, id) => {
      this.hostIds.set(h.name, id);
      this.shimHosts.set(id, h);
      // A host whose MACs are not known yet is given to the shim once they are.
      const r = this.macs!.resolve(h);
      if (r) this.shim.setHost(id, r);
    });
    this.macTimer = setInterval(() => this.macs?.neighbours.tick(performance.now()), 100);
    this.macTimer.unref();
    this.macs.neighbours.tick(performance.now());
    this.hostsByName = new Map(cfg.hosts.map((h) => [h.name, h]));
    if (cfg.routing.pools.length) {
      if (!this.clusterKey) throw new Error('routing is configured but no cluster key was given');
      const names = cfg.hosts.map((h) => h.name);
      if (cfg.health.enabled) {
        this.health = new HealthMonitor(cfg.hosts, {
          send: (host, d) => this.engine?.sendToHost(host, d),
          intervalMs: cfg.health.intervalMs, timeoutMs: cfg.health.timeoutMs, fall: cfg.health.fall, rise: cfg.health.rise,
          onChange: (host, st, reason) => (this.healthVersion++, this.log?.warn({ event: 'host-health', host, up: st.up, draining: st.draining || st.drainConfigured,
            eligible: this.eligible(host) }, `host ${host}: ${reason}`)),
        });
      }
      this.engine = new HandoffEngine({
        shim: this.shim,
        router: new Router(cfg.routing, names),
        hosts: this.engineHosts(cfg),
        health: (name) => this.eligible(name),
        onHostDatagram: (fromIp, fromPort, d) => this.onHostDatagram(fromIp, fromPort, d),
        onArp: (frame, port) => this.macs?.neighbours.onArp(frame, port, performance.now()),
        onHandoffLatency: this.onHandoffLatency,
        perRequestVips: cfg.vips.filter((v) => v.proto === 'tcp' && v.perRequest),
        flowIds: { ...flowIdPartition(cfg.cluster.balancerId, cfg.cluster.idBits), randomStart: true },
        stray: cfg.cluster.recovery.enabled ? (({ enabled: _e, ratePerWorker: _r, burst: _b, ...r }) => r)(cfg.cluster.recovery) : undefined,
        clusterKey: this.clusterKey,
        blobPort: cfg.blob.port,
        byteCap: cfg.classify.byteCap,
        classifyTimeoutMs: cfg.classify.timeoutMs,
        closingTimeoutMs: cfg.mappings.closingTimeoutMs,
        idleTimeoutMs: cfg.mappings.idleTimeoutMs,
        flowIdQuarantineMs: cfg.mappings.flowIdQuarantineMs,
        sender: { initialRtoMs: cfg.blob.initialRtoMs, maxRtoMs: cfg.blob.maxRtoMs, maxAttempts: cfg.blob.maxAttempts,
          maxInFlightPerHost: cfg.blob.maxInFlightPerHost, fragmentSize: cfg.blob.fragmentSize },
      });
      this.running = this.engine.run();
      if (this.health) {
        const tick = Math.max(10, Math.min(100, cfg.health.timeoutMs / 4, cfg.health.intervalMs / 4));
        this.healthTimer = setInterval(() => this.health?.tick(), tick);
        this.healthTimer.unref();
      }
    } else {
      this.running = this.drainLoop();
    }
    if (this.clusterKey) {
      // Every balancer with this key makes and checks the same cookies (issue 16).
      const apply = () => {
        const s = cookieSecretsAt(this.clusterKey!, Date.now(), cfg.accept.cookieRotateS, cfg.cluster.clockSkewS);
        this.shim.setCookieSecrets(s.gen, s.alt);
        if (Number.isFinite(s.nextChangeMs)) {
          this.rotateTimer = setTimeout(apply, Math.min(2 ** 31 - 1, Math.max(10, s.nextChangeMs - Date.now() + 5)));
          this.rotateTimer.unref();
        }
      };
      apply();
    } else if (cfg.accept.cookieRotateS > 0) {
      this.rotateTimer = setInterval(() => this.shim.rotateCookieSecret(crypto.randomBytes(16)),
        cfg.accept.cookieRotateS * 1000);
      this.rotateTimer.unref();
    }
  }

  /** Whether `host` may take new connections: configured, not drained, passing its checks. */
  eligible(host: string): boolean {
    const h = this.hostsByName.get(host);
    if (!h || h.drain) return false;
    if (this.macs && !this.macs.usable(h)) return false; // a MAC unknown, or the next hop stopped answering
    if (!this.health || this.health.eligible(host)) return true;
    // Panic mode: when the checks find no usable host at all (a lossy or cut
    // check path, say), try them all; the blob transfer's failover still
    // skips the dead ones. Better than refusing every client.
    return this.panic() && !this.health.state(host)?.draining;
  }

  /** True while no configured, undrained host passes its checks. */
  panic(): boolean {
    const v = this.healthVersion;
    if (v !== this.panicAt) {
      this.panicAt = v;
      this.panicking = !!this.health && !this.current.hosts.some((h) => !h.drain && this.health!.eligible(h.name));
      if (this.panicking) this.log?.error({ event: 'panic' }, 'no host passes its health checks: trying all of them');
    }
    return this.panicking;
  }

  /** The hosts of the configuration in force. */
  currentHosts(): BalancerConfig['hosts'] {
    return this.current.hosts;
  }

  /** The configuration in force. */
  get config(): BalancerConfig {
    return this.current;
  }

  /**
   * Apply a new configuration without dropping an established flow: rules,
   * pools, hosts (added, changed, removed, drained) and health-check
   * settings. Hosts keep their shim ids; a removed host's flows keep being
   * tunnelled to it until they end. Anything else differing is refused.
   * @throws ConfigError (key paths needing a restart); the old configuration stays.
   */
  reload(next: BalancerConfig, file = '<config>'): ReloadResult {
    const old = this.current;
    const problems: ConfigProblem[] = RESTART_KEYS.filter((k) => !same(old[k], next[k]))
      .map((k) => ({ path: `/${k}`, message: 'changed, but only a restart applies it (reload applies routing, hosts and health)' }));
    if (!!old.routing.pools.length !== !!next.routing.pools.length) {
      problems.push({ path: '/routing/pools', message: 'turning routing on or off needs a restart' });
    }
    if (next.health.enabled !== old.health.enabled) problems.push({ path: '/health/enabled', message: 'needs a restart' });
    if (problems.length) {
      this.reloads.refused++;
      throw new ConfigError(file, problems);
    }
    const changes = describeChanges(old, next);
    // Plan first, then apply: the shim host table before anything names a host.
    // An id keeps its address for good (a removed host's flows may still use
    // it): a host whose address differs from its id's gets a fresh id.
    let nextId = Math.max(-1, ...this.shimHosts.keys()) + 1;
    const plan: Array<{ name: string; id: number; conf: BalancerConfig['hosts'][number] }> = [];
    for (const h of next.hosts) {
      let id = this.hostIds.get(h.name);
      const given = id === undefined ? undefined : this.shimHosts.get(id);
      if (id === undefined || !given || given.ip !== h.ip || given.port !== h.port) id = nextId++;
      else if (same(given, h)) continue;
      plan.push({ name: h.name, id, conf: h });
    }
    if (nextId > MAX_HOST_IDS) {
      this.reloads.refused++;
      throw new ConfigError(file, [{ path: '/hosts', message: `the shim's host table is full (${MAX_HOST_IDS} ids, never reused while flows may hold them): restart to renumber` }]);
    }
    const done: typeof plan = [];
    try {
      this.macs?.setHosts(next.hosts);
      for (const p of plan) {
        const r = this.macs?.resolve(p.conf);
        if (r) this.shim.setHost(p.id, r);
        done.push(p);
      }
    } catch (err) {
      // Undo what this reload changed in the shim, so the old configuration really stays.
      for (const p of done) {
        const prev = this.shimHosts.get(p.id);
        const r = prev && this.macs?.resolve(prev);
        if (r) try { this.shim.setHost(p.id, r); } catch { /* as good as we can */ }
      }
      this.reloads.refused++;
      throw new ConfigError(file, [{ path: '/hosts', message: `the shim refused a host: ${(err as Error).message}` }]);
    }
    for (const p of plan) {
      this.hostIds.set(p.name, p.id);
      this.shimHosts.set(p.id, p.conf);
    }
    this.hostsByName = new Map(next.hosts.map((h) => [h.name, h]));
    this.healthVersion++;
    if (this.engine) {
      this.engine.setHosts(this.engineHosts(next));
      this.engine.setRouter(new Router(next.routing, next.hosts.map((h) => h.name)));
    }
    this.health?.configure(next.health);
    this.health?.setHosts(next.hosts);
    this.current = next;
    this.reloads.applied++;
    return { changes };
  }

  /** Everything `handoff status` shows. */
  status(): Record<string, unknown> {
    const c = this.shim.counters();
    return {
      ports: this.config.ports.map((p, i) => ({ device: p.device, ...this.shim.portInfo(i) })),
      vips: this.config.vips,
      hosts: this.config.hosts.map((h) => ({
        name: h.name, ip: h.ip, handoffs: this.engine?.perHost.get(h.name) ?? 0, eligible: this.eligible(h.name),
        macs: this.macs?.describe(h) ?? null,
        drain: h.drain, health: this.health?.state(h.name) ?? null,
      })),
      shuttingDown: this.shuttingDown,
      healthPanic: this.panic(),
      reloads: this.reloads,
      mappings: this.shim.mappingCount(),
      activeFlows: this.engine?.activeFlows ?? 0,
      counters: c.total,
      workers: c.workers.length,
      engine: this.engine ? { ...this.engine.stats, latencyUs: this.engine.latency(), transfers: this.engine.sender.stats } : null,
      stray: this.engine?.stray ? { ...this.engine.stray.stats, inProgress: this.engine.stray.inProgress,
        remembered: this.engine.stray.remembered, latencyUs: this.engine.stray.latency(),
        recentlyRecovered: this.engine.stray.recentlyRecovered() } : null,
      unhandledExceptions: this.unhandledExceptions,
      neighbours: this.macs ? { ...this.macs.stats, entries: this.macs.neighbours.list(performance.now()) } : null,
    };
  }

  /**
   * Graceful shutdown: keep serving (handoffs under way complete, tunnelled
   * flows keep flowing) until no handoff is under way and every flow's
   * mapping is gone, or `timeoutMs` has passed; then stop. Upstream, /healthz
   * answers 503 from the start so the VIP's traffic can be moved elsewhere.
   * @returns whether everything drained before the timeout.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    this.shuttingDown = true;
    const end = Date.now() + timeoutMs;
    // Accepted connections that sent nothing yet are the shim's alone until their first bytes.
    const idle = () => !this.engine || (this.engine.inProgress === 0 && this.engine.activeFlows === 0 && this.shim.acceptCount() === 0);
    while (!idle() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    return idle();
  }

  async stop(): Promise<void> {
    if (this.healthTimer) clearInterval(this.healthTimer);
    if (this.macTimer) clearInterval(this.macTimer);
    if (this.rotateTimer) clearTimeout(this.rotateTimer);
    this.draining = false;
    if (this.engine) this.engine.stop();
    else this.shim.wakeExceptions();
    await this.running;
    this.shim.stop();
  }

  private engineHosts(cfg: BalancerConfig): EngineHost[] {
    return cfg.hosts.map((h) => ({ name: h.name, id: this.hostIds.get(h.name)!, ip: h.ip, nexthopMac: this.macs?.nexthopMac(h),
      agentPort: h.agentPort }));
  }

  /** A host's MACs were learned or changed: the shim, the engine's datagrams and eligibility follow. */
  private applyMacs(name: string): void {
    const h = this.hostsByName.get(name);
    const id = this.hostIds.get(name);
    if (!h || id === undefined || !this.macs) return;
    const r = this.macs.resolve(h);
    if (r) {
      try {
        this.shim.setHost(id, r);
      } catch (err) {
        this.log?.error({ event: 'host-mac', host: name, err: (err as Error).message }, `host ${name}: the shim refused its MACs`);
        return;
      }
    }
    this.engine?.setHosts(this.engineHosts(this.current));
    this.healthVersion++;
    this.log?.info({ event: 'host-mac', host: name, ...this.macs.describe(h) }, `host ${name}: MACs ${r ? 'known' : 'not all known yet'}`);
  }

  private onHostDatagram(fromIp: string, fromPort: number, datagram: Buffer): void {
    const d = decodeDatagram(datagram);
    if ('error' in d || d.type !== 'pong' || !this.health) return;
    // Address and port: two agents may share an address on different ports.
    for (const h of this.current.hosts) {
      if (h.ip !== fromIp || h.agentPort !== fromPort) continue;
      // Learned only from a PONG that answers our PING (not a forged one).
      if (this.health.onPong(h.name, d) && d.innerMac && this.macs?.learnInner(h.name, d.innerMac)) this.applyMacs(h.name);
    }
  }

  /** No engine: take exceptions as they come (parked on the shim's eventfd when idle) and count them. */
  private async drainLoop(): Promise<void> {
    this.draining = true;
    while (this.draining) {
      let n: number;
      do {
        n = this.shim.exceptionBurst(this.burst);
        this.unhandledExceptions += n;
      } while (n === this.burst.capacity);
      await this.shim.waitExceptions(100);
    }
  }
}

/** A line per change, for the reload log. */
export function describeChanges(a: BalancerConfig, b: BalancerConfig): string[] {
  const out: string[] = [];
  const diff = <T extends { name: string }>(kind: string, xs: readonly T[], ys: readonly T[]) => {
    for (const y of ys) {
      const x = xs.find((v) => v.name === y.name);
      if (!x) out.push(`${kind} ${y.name} added`);
      else if (!same(x, y)) out.push(`${kind} ${y.name} changed`);
    }
    for (const x of xs) if (!ys.some((y) => y.name === x.name)) out.push(`${kind} ${x.name} removed`);
  };
  diff('host', a.hosts, b.hosts);
  for (const h of b.hosts) {
    const before = a.hosts.find((x) => x.name === h.name);
    if (before && before.drain !== h.drain) out.push(`host ${h.name} ${h.drain ? 'draining' : 'no longer draining'}`);
  }
  diff('pool', a.routing.pools, b.routing.pools);
  diff('rule', a.routing.rules, b.routing.rules);
  if (!same(a.routing.rules.map((r) => r.name), b.routing.rules.map((r) => r.name))) {
    if (!out.some((l) => l.startsWith('rule '))) out.push('rules reordered');
  }
  if (!same(a.routing.defaults, b.routing.defaults)) out.push('VIP defaults changed');
  if (!same(a.health, b.health)) out.push('health-check settings changed');
  return out;
}
