import crypto from 'node:crypto';
import { encodePing, PongFlag } from '../transfer';

export interface HealthOptions {
  /** Send a datagram to a host's agent port (through the shim's TX ring). */
  send: (host: string, datagram: Buffer) => void;
  /** Time between checks of one host, ms. Default 1000. */
  intervalMs?: number;
  /** A PING unanswered this long is a failed check, ms. Default 500. */
  timeoutMs?: number;
  /** Consecutive failed checks that take an up host out. Default 3. */
  fall?: number;
  /** Consecutive good checks that bring a down host back. Default 2. */
  rise?: number;
  /** Called when a host goes up or down, or starts or stops draining. */
  onChange?: (host: string, state: Readonly<HostHealth>, reason: string) => void;
  /** Clock, ms (tests). Default performance.now. */
  now?: () => number;
}

/** What the balancer knows of one host. */
export interface HostHealth {
  /** Passing its checks (hosts start up: a dead one is still caught by the blob transfer's failover). */
  up: boolean;
  /** The agent announced it is draining (graceful shutdown). */
  draining: boolean;
  /** The configuration says drain (`hosts[].drain`). */
  drainConfigured: boolean;
  /** The agent's HTTP check of its application failed at the last answer. */
  appDown: boolean;
  consecutiveFailures: number;
  consecutiveSuccesses: number;
  checks: number;
  failures: number;
  /** Round trip of the last answered PING, ms. */
  lastRttMs: number;
}

interface Probe {
  health: HostHealth;
  seq: number;
  sentAt: number;
  outstanding: boolean;
  nextAt: number;
}

/**
 * Active health checks of host agents over the blob port (issue 7): a PING
 * per host every intervalMs, a PONG expected within timeoutMs, `fall`
 * failures take a host out and `rise` successes bring it back. A PONG
 * carries the agent's draining flag and its application check. A host takes
 * new connections only when eligible(); its existing flows never depend on
 * its health (their mappings stay until they close).
 */
export class HealthMonitor {
  private readonly probes = new Map<string, Probe>();
  /** Distinguishes this balancer's PINGs from a previous run's late PONGs. */
  private readonly session = crypto.randomInt(1, 0x7fffffff);
  private intervalMs: number;
  private timeoutMs: number;
  private fall: number;
  private rise: number;
  private readonly now: () => number;

  constructor(hosts: ReadonlyArray<{ name: string; drain?: boolean }>, private readonly o: HealthOptions) {
    this.intervalMs = o.intervalMs ?? 1000;
    this.timeoutMs = o.timeoutMs ?? 500;
    this.fall = o.fall ?? 3;
    this.rise = o.rise ?? 2;
    this.now = o.now ?? (() => performance.now());
    this.setHosts(hosts);
  }

  /** Reload: new timings apply from each host's next check; states are kept. */
  configure(o: Pick<HealthOptions, 'intervalMs' | 'timeoutMs' | 'fall' | 'rise'>): void {
    this.intervalMs = o.intervalMs ?? this.intervalMs;
    this.timeoutMs = o.timeoutMs ?? this.timeoutMs;
    this.fall = o.fall ?? this.fall;
    this.rise = o.rise ?? this.rise;
  }

  /** Reload: hosts kept keep their state; new ones start up; removed ones are forgotten. */
  setHosts(hosts: ReadonlyArray<{ name: string; drain?: boolean }>): void {
    const names = new Set(hosts.map((h) => h.name));
    for (const name of this.probes.keys()) if (!names.has(name)) this.probes.delete(name);
    const now = this.now();
    for (const [i, h] of hosts.entries()) {
      let p = this.probes.get(h.name);
      if (!p) {
        p = {
          health: { up: true, draining: false, drainConfigured: false, appDown: false, consecutiveFailures: 0,
            consecutiveSuccesses: 0, checks: 0, failures: 0, lastRttMs: NaN },
          // Spread the first checks over an interval rather than pinging every host at once.
          seq: 0, sentAt: 0, outstanding: false, nextAt: now + (this.intervalMs * i) / Math.max(1, hosts.length),
        };
        this.probes.set(h.name, p);
      }
      if (p.health.drainConfigured !== !!h.drain) {
        p.health.drainConfigured = !!h.drain;
        this.o.onChange?.(h.name, p.health, h.drain ? 'drain set in the configuration' : 'drain cleared in the configuration');
      }
    }
  }

  /** Whether `host` may take a new connection. Unknown hosts may not. */
  eligible(host: string): boolean {
    const h = this.probes.get(host)?.health;
    return !!h && h.up && !h.draining && !h.drainConfigured;
  }

  state(host: string): Readonly<HostHealth> | undefined {
    return this.probes.get(host)?.health;
  }

  /** Send due PINGs and count unanswered ones as failures. Call often (every ~100 ms). */
  tick(): void {
    const now = this.now();
    for (const [name, p] of this.probes) {
      if (p.outstanding && now - p.sentAt > this.timeoutMs) {
        p.outstanding = false;
        this.failed(name, p, `no answer within ${this.timeoutMs} ms`);
      }
      if (!p.outstanding && now >= p.nextAt) {
        p.seq = (p.seq + 1) >>> 0;
        p.sentAt = now;
        p.outstanding = true;
        p.nextAt = now + this.intervalMs;
        this.o.send(name, encodePing({ session: this.session, blobId: p.seq }));
      }
    }
  }

  /** A PONG from `host`'s address. Ignored unless it answers the outstanding PING. */
  onPong(host: string, d: { session: number; blobId: number; status: number }): boolean {
    const p = this.probes.get(host);
    if (!p || !p.outstanding || d.session !== this.session || d.blobId !== p.seq) return false;
    p.outstanding = false;
    const h = p.health;
    h.lastRttMs = this.now() - p.sentAt;
    const draining = (d.status & PongFlag.DRAINING) !== 0;
    if (draining !== h.draining) {
      h.draining = draining;
      this.o.onChange?.(host, h, draining ? 'the agent is draining' : 'the agent stopped draining');
    }
    h.appDown = (d.status & PongFlag.APP_DOWN) !== 0;
    if (h.appDown) this.failed(host, p, "the agent's application check fails");
    else this.succeeded(host, p);
    return true;
  }

  snapshot(): Record<string, Readonly<HostHealth> & { eligible: boolean }> {
    return Object.fromEntries([...this.probes].map(([n, p]) => [n, { ...p.health, eligible: this.eligible(n) }]));
  }

  private failed(name: string, p: Probe, why: string): void {
    const h = p.health;
    h.checks++;
    h.failures++;
    h.consecutiveSuccesses = 0;
    h.consecutiveFailures++;
    if (h.up && h.consecutiveFailures >= this.fall) {
      h.up = false;
      this.o.onChange?.(name, h, `down after ${h.consecutiveFailures} failed checks (${why})`);
    }
  }

  private succeeded(name: string, p: Probe): void {
    const h = p.health;
    h.checks++;
    h.consecutiveFailures = 0;
    h.consecutiveSuccesses++;
    if (!h.up && h.consecutiveSuccesses >= this.rise) {
      h.up = true;
      this.o.onChange?.(name, h, `up after ${h.consecutiveSuccesses} good checks`);
    }
  }
}
