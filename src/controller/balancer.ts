import { PacketBurst, Shim } from '../offload';
import { BalancerConfig } from './config-schema';
import { ealArgs } from './config';

export interface BalancerOptions {
  /** Poll the exception ring this often when it was empty. Default 1 ms. */
  exceptionPollMs?: number;
}

/**
 * A running balancer: the shim, its hosts, and the control loop that takes
 * packets the workers pass up.
 */
export class Balancer {
  readonly shim: Shim;
  readonly config: BalancerConfig;
  /** Exception packets taken from the shim that no handler claimed yet (counted, never silent). */
  unhandledExceptions = 0;
  private timer?: NodeJS.Timeout;
  private readonly burst = new PacketBurst(64);
  private readonly pollMs: number;

  constructor(config: BalancerConfig, options: BalancerOptions = {}) {
    this.config = config;
    this.pollMs = options.exceptionPollMs ?? 1;
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
    });
  }

  /** @throws ShimError */
  start(): void {
    this.shim.start();
    this.config.hosts.forEach((h, id) => this.shim.setHost(id, h));
    this.schedule();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.shim.stop();
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.drain(), this.pollMs);
    this.timer.unref();
  }

  private drain(): void {
    // Until the classifier takes them (connection handoff), exceptions are counted here.
    let n: number;
    do {
      n = this.shim.exceptionBurst(this.burst);
      this.unhandledExceptions += n;
    } while (n === this.burst.capacity);
    this.schedule();
  }
}
