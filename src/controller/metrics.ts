import client from 'prom-client';
import type { Balancer } from './balancer';

/** Latency buckets for the handoff histogram, seconds: 50 µs to 1 s. */
const LATENCY_BUCKETS = [50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3, 250e-3, 1];

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * The balancer's Prometheus metrics (issue 7). Everything is read when
 * scraped, from the counters the shim and the engine keep anyway; only the
 * latency histogram is fed as handoffs complete (observeHandoff).
 */
export class BalancerMetrics {
  readonly registry = new client.Registry();
  private readonly latency: client.Histogram;
  /** Read once per scrape and shared by the collectors: flowCounts() walks every flow. */
  private scrape?: Scrape;

  constructor(private readonly lb: Balancer) {
    const r = this.registry;
    client.collectDefaultMetrics({ register: r, prefix: 'handoff_process_' });
    const lbRef = this.lb;
    const snap = () => (this.scrape ??= takeScrape(lbRef));

    // Shim: per-lcore counters and drop reasons. Counter values are set from the shim's own on each scrape.
    new client.Counter({
      name: 'handoff_shim_packets_total', help: 'Shim counters per lcore (rx/tx packets and bytes, encapsulated, held, SYN-ACKs, ...)',
      labelNames: ['lcore', 'counter'], registers: [r],
      collect() {
        this.reset();
        forEachCounter(snap().counters, (lcore, name, v) => { if (!name.startsWith('drop_')) this.inc({ lcore, counter: name }, v); });
      },
    });
    new client.Counter({
      name: 'handoff_shim_drops_total', help: 'Packets the shim dropped, per lcore and reason',
      labelNames: ['lcore', 'reason'], registers: [r],
      collect() {
        this.reset();
        forEachCounter(snap().counters, (lcore, name, v) => { if (name.startsWith('drop_')) this.inc({ lcore, reason: name.slice(5) }, v); });
      },
    });

    // Engine: handoffs and what became of every connection.
    const engineCounter = (name: string, help: string, read: (s: Record<string, number>) => number) =>
      new client.Counter({
        name, help, registers: [r],
        collect() {
          this.reset();
          const e = lbRef.engine;
          if (e) this.inc(read(e.stats as unknown as Record<string, number>));
        },
      });
    engineCounter('handoff_handoffs_started_total', 'Handoffs started (mapping PENDING, connection frozen)', (s) => s.handoffsStarted);
    engineCounter('handoff_handoffs_completed_total', 'Handoffs the host confirmed (mapping ACTIVE)', (s) => s.handoffsCompleted);
    engineCounter('handoff_handoffs_failed_total',
      'Handoffs that failed: no host left (the client was reset), or the freeze answer was lost (freed, the client times out)',
      (s) => s.handoffsFailed);
    engineCounter('handoff_handoffs_uncertain_total', 'Transfers given up after the host held every fragment (activated)', (s) => s.handoffsUncertain);
    engineCounter('handoff_failovers_total', 'Blobs sent on to another host after a refusal or silence', (s) => s.failovers);
    new client.Counter({
      name: 'handoff_engine_events_total', help: 'Every engine counter by name (connections accepted, decided, reset, ...)',
      labelNames: ['event'], registers: [r],
      collect() {
        this.reset();
        const e = lbRef.engine;
        if (e) for (const [k, v] of Object.entries(e.stats)) this.inc({ event: snake(k) }, v);
      },
    });
    new client.Counter({
      name: 'handoff_blob_transfer_total', help: 'Blob transfer counters (fragments, retransmitted, acks, refused, gave_up, ...)',
      labelNames: ['counter'], registers: [r],
      collect() {
        this.reset();
        const e = lbRef.engine;
        if (e) for (const [k, v] of Object.entries(e.sender.stats)) this.inc({ counter: snake(k) }, v);
      },
    });
    new client.Counter({
      name: 'handoff_stray_recovery_total',
      help: 'Flows with no mapping here looked up from the hosts (packets, lookups, recovered, unknown, negative_hits, held_dropped, overflow, bad_answers, ...)',
      labelNames: ['counter'], registers: [r],
      collect() {
        this.reset();
        const st = lbRef.engine?.stray;
        if (st) for (const [k, v] of Object.entries(st.stats)) this.inc({ counter: snake(k) }, v);
      },
    });
    new client.Counter({
      name: 'handoff_blob_retransmissions_total', help: 'Blob fragments sent again (including probes)', registers: [r],
      collect() {
        this.reset();
        if (lbRef.engine) this.inc(lbRef.engine.sender.stats.retransmitted);
      },
    });
    this.latency = new client.Histogram({
      name: 'handoff_latency_seconds', help: 'First data byte at the balancer to the host\'s final ACK (mapping ACTIVE)',
      buckets: LATENCY_BUCKETS, registers: [r],
    });

    // Mappings.
    new client.Gauge({
      name: 'handoff_mappings', help: 'Mappings by state (engine view; closing as of the last sweep)',
      labelNames: ['state'], registers: [r],
      collect() {
        this.reset();
        const f = snap().flows;
        if (!f) return;
        this.set({ state: 'pending' }, f.pending);
        this.set({ state: 'active' }, f.active);
        this.set({ state: 'closing' }, f.closing);
      },
    });
    new client.Gauge({
      name: 'handoff_shim_mappings', help: 'Entries in the shim\'s mapping table', registers: [r],
      collect() { this.set(lbRef.shim.mappingCount()); },
    });

    // Hosts.
    const perHost = (name: string, help: string, read: (h: HostView) => number, type: 'gauge' | 'counter' = 'gauge') => {
      const opts = {
        name, help, labelNames: ['host'], registers: [r],
        collect(this: client.Gauge | client.Counter) {
          this.reset();
          for (const h of snap().hosts) {
            if (this instanceof client.Gauge) this.set({ host: h.name }, read(h));
            else this.inc({ host: h.name }, read(h));
          }
        },
      };
      return type === 'gauge' ? new client.Gauge(opts) : new client.Counter(opts);
    };
    perHost('handoff_host_handoffs_total', 'Connections handed off to the host', (h) => h.handoffs, 'counter');
    perHost('handoff_host_pending', 'Handoffs to the host under way', (h) => h.pending);
    perHost('handoff_host_flows', 'Flows on the host whose mappings are in place', (h) => h.flows);
    perHost('handoff_host_up', '1 while the host passes its health checks', (h) => (h.up ? 1 : 0));
    perHost('handoff_host_draining', '1 while the host takes no new connections (drain configured or announced)', (h) => (h.draining ? 1 : 0));
    perHost('handoff_host_eligible', '1 while the host may take new connections', (h) => (h.eligible ? 1 : 0));
    perHost('handoff_host_health_failures_total', 'Failed health checks', (h) => h.failures, 'counter');
    new client.Gauge({
      name: 'handoff_health_panic', help: '1 while no host passes its health checks and all are tried', registers: [r],
      collect() { this.set(lbRef.panic() ? 1 : 0); },
    });
    new client.Gauge({
      name: 'handoff_balancer_draining', help: '1 once a graceful shutdown has begun', registers: [r],
      collect() { this.set(lbRef.shuttingDown ? 1 : 0); },
    });
    new client.Counter({
      name: 'handoff_reloads_total', help: 'Configuration reloads by result', labelNames: ['result'], registers: [r],
      collect() {
        this.reset();
        this.inc({ result: 'applied' }, lbRef.reloads.applied);
        this.inc({ result: 'refused' }, lbRef.reloads.refused);
      },
    });
  }

  /** Record one completed handoff. */
  observeHandoff(us: number): void {
    this.latency.observe(us / 1e6);
  }

  /** The Prometheus text exposition. */
  async text(): Promise<string> {
    this.scrape = undefined;
    try {
      return await this.registry.metrics();
    } finally {
      this.scrape = undefined;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

interface HostView {
  name: string;
  handoffs: number;
  pending: number;
  flows: number;
  up: boolean;
  draining: boolean;
  eligible: boolean;
  failures: number;
}

interface Scrape {
  counters: ReturnType<Balancer['shim']['counters']>;
  flows?: ReturnType<NonNullable<Balancer['engine']>['flowCounts']>;
  hosts: HostView[];
}

function takeScrape(lb: Balancer): Scrape {
  const flows = lb.engine?.flowCounts();
  return { counters: lb.shim.counters(), flows, hosts: hostViews(lb, flows?.byHostIp) };
}

function hostViews(lb: Balancer, counts: Map<string, { active: number; closing: number }> | undefined): HostView[] {
  return lb.currentHosts().map((h) => {
    const st = lb.health?.state(h.name);
    const c = counts?.get(h.ip);
    return {
      name: h.name, handoffs: lb.engine?.perHost.get(h.name) ?? 0, pending: lb.engine?.pendingFor(h.name) ?? 0,
      flows: c ? c.active + c.closing : 0, up: st ? st.up : true, draining: !!(h.drain || st?.draining),
      eligible: lb.eligible(h.name), failures: st?.failures ?? 0,
    };
  });
}

function forEachCounter(c: Scrape['counters'], fn: (lcore: string, name: string, v: number) => void): void {
  c.workers.forEach((row, i) => { for (const [k, v] of Object.entries(row)) fn(`worker${i}`, k, Number(v)); });
  for (const [k, v] of Object.entries(c.control)) fn('control', k, Number(v));
}
