import crypto from 'node:crypto';
import { HandoffEngine, Router } from '../classifier';
import { PacketBurst, Shim } from '../offload';
import { BalancerConfig } from './config-schema';
import { ealArgs } from './config';

export interface BalancerOptions {
  /** Cluster key for blobs; required when the configuration has pools. */
  clusterKey?: Buffer;
}

/**
 * A running balancer: the shim, its hosts, and the control loop. With
 * routing configured the handoff engine takes the shim's events; without it,
 * exceptions are drained and counted (the forwarder alone).
 */
export class Balancer {
  readonly shim: Shim;
  readonly config: BalancerConfig;
  engine?: HandoffEngine;
  /** Exception packets drained with no engine to take them (counted, never silent). */
  unhandledExceptions = 0;
  private rotateTimer?: NodeJS.Timeout;
  private draining = false;
  private running?: Promise<void>;
  private readonly burst = new PacketBurst(64);
  private readonly clusterKey?: Buffer;

  constructor(config: BalancerConfig, options: BalancerOptions = {}) {
    this.config = config;
    this.clusterKey = options.clusterKey;
    const a = config.accept;
    this.shim = new Shim({
      eal: ealArgs(config),
      ports: config.ports,
      vips: config.vips,
      workers: config.workers,
      idleSleepUs: config.idleSleepUs,
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
      cookieTickS: a.cookieTickS,
      rcvWscale: a.rcvWscale,
      resetBadAck: a.resetBadAck,
    });
  }

  /** @throws ShimError */
  start(): void {
    const cfg = this.config;
    this.shim.start();
    cfg.hosts.forEach((h, id) => this.shim.setHost(id, h));
    if (cfg.routing.pools.length) {
      if (!this.clusterKey) throw new Error('routing is configured but no cluster key was given');
      const names = cfg.hosts.map((h) => h.name);
      this.engine = new HandoffEngine({
        shim: this.shim,
        router: new Router(cfg.routing, names),
        hosts: cfg.hosts.map((h, id) => ({ name: h.name, id, ip: h.ip, nexthopMac: h.nexthopMac, agentPort: h.agentPort })),
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
    } else {
      this.running = this.drainLoop();
    }
    if (cfg.accept.cookieRotateS > 0) {
      this.rotateTimer = setInterval(() => this.shim.rotateCookieSecret(crypto.randomBytes(16)),
        cfg.accept.cookieRotateS * 1000);
      this.rotateTimer.unref();
    }
  }

  /** Everything `handoff status` shows. */
  status(): Record<string, unknown> {
    const c = this.shim.counters();
    return {
      ports: this.config.ports.map((p, i) => ({ device: p.device, ...this.shim.portInfo(i) })),
      vips: this.config.vips,
      hosts: this.config.hosts.map((h) => ({ name: h.name, ip: h.ip, handoffs: this.engine?.perHost.get(h.name) ?? 0 })),
      mappings: this.shim.mappingCount(),
      activeFlows: this.engine?.activeFlows ?? 0,
      counters: c.total,
      workers: c.workers.length,
      engine: this.engine ? { ...this.engine.stats, latencyUs: this.engine.latency(), transfers: this.engine.sender.stats } : null,
      unhandledExceptions: this.unhandledExceptions,
    };
  }

  async stop(): Promise<void> {
    if (this.rotateTimer) clearInterval(this.rotateTimer);
    this.draining = false;
    if (this.engine) this.engine.stop();
    else this.shim.wakeExceptions();
    await this.running;
    this.shim.stop();
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
