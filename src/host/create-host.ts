import net from 'node:net';
import { HostAgent, type HostAgentOptions, type InjectedFlow } from './agent';
import { createDemoServer, createForwarder, type ForwardStats } from './apps';
import { KernelForwarder } from './kernel-forward';
import { HostNetwork } from './netsetup';
import { TunnelFilter } from './tunnel-filter';

/** What serves a VIP's connections on a host. */
export type HostApp = { kind: 'demo'; name: string }
  /**
   * To a local server. `splice` (default true when the upstream is an IPv4
   * address): the bytes move in the kernel (KernelForwarder) and such a VIP
   * is never routed per request; false: piped through JS.
   */
  | { kind: 'forward'; upstream: { host: string; port: number }; splice?: boolean }
  | { kind: 'unix'; path: string }
  | { kind: 'handler'; onConnection: (socket: net.Socket, flow: InjectedFlow) => void };

export interface CreateHostOptions extends HostAgentOptions {
  /** 'demo' (built-in HTTP app), 'forward' (to a local upstream), or a handler of your own: for every VIP without its own. */
  app: HostApp;
  /** Apps of their own for some VIP services (HTTP to one local port, TLS to another...). Default: none. */
  apps?: ReadonlyArray<{ ip: string; port: number; app: HostApp }>;
  /** Set up (and on close remove) the VXLAN device, VIPs on lo and sysctls. Default true. */
  network?: false | {
    device?: string; create?: boolean; cleanup?: boolean;
    /**
     * Refuse tunnelled packets that are no live flow of this host, and VXLAN
     * from addresses not in `balancers` (when given): see tunnel-filter.ts.
     * Default true.
     */
    filterTunnel?: boolean;
  };
}

export interface RunningHost {
  agent: HostAgent;
  network?: HostNetwork;
  /** The tunnel check, when the network is set up with filterTunnel. */
  tunnel?: TunnelFilter;
  /** The default app's forwarding counters, when it forwards. */
  forward?: ForwardStats;
  /** Every forwarding app's counters, by `vip:port` ('*' for the default app). */
  forwards: Map<string, ForwardStats>;
  /** The forwarding apps that splice in the kernel, by `vip:port` ('*' for the default app). */
  kernelForwarders: Map<string, KernelForwarder>;
  /** Demo app: requests answered and bytes served. */
  served?: { requests: number; bytes: number };
  port: number;
  close(): void;
}

/**
 * A host agent with its application attached: every injected connection is
 * handed over as a net.Socket, so an http.Server, https.Server or tls.Server
 * takes it with `server.emit('connection', socket)`.
 */
export async function createHost(o: CreateHostOptions): Promise<RunningHost> {
  let network: HostNetwork | undefined;
  if (o.network !== false) {
    network = new HostNetwork({ device: o.network?.device, create: o.network?.create, vips: [...new Set(o.vips.map((v) => v.ip))] }).apply();
  }
  let tunnel: TunnelFilter | undefined;
  const netOpts = o.network || undefined;
  if (network && netOpts?.filterTunnel !== false) {
    try {
      tunnel = new TunnelFilter({ device: network.device, balancers: o.balancers }).install();
    } catch (err) {
      if (netOpts?.cleanup !== false) network.undo();
      throw err;
    }
  }
  // A passed descriptor must be the kernel socket itself: those VIPs are never routed per request here.
  // So must a connection the kernel forwards.
  const inKernel = (a: HostApp) => a.kind === 'unix' || (a.kind === 'forward' && a.splice !== false && net.isIPv4(a.upstream.host));
  const socketOnly = new Set((o.apps ?? []).filter((a) => inKernel(a.app)).map((a) => `${a.ip}:${a.port}`));
  if (inKernel(o.app)) for (const v of o.vips) if (!o.apps?.some((a) => a.ip === v.ip && a.port === v.port)) socketOnly.add(`${v.ip}:${v.port}`);
  const agent = new HostAgent({ ...o, tunnel, innerMac: o.innerMac ?? (network?.mac || undefined), socketOnly });
  let served: { requests: number; bytes: number } | undefined;
  const closers: Array<() => void> = [];
  const forwards = new Map<string, ForwardStats>();
  const kernelForwarders = new Map<string, KernelForwarder>();
  const handlerFor = (app: HostApp, key: string): ((s: net.Socket, flow: InjectedFlow) => void) => {
    if (app.kind === 'demo') {
      const server = createDemoServer(app.name);
      if (!served) served = server.served;
      closers.push(() => server.close());
      return (s) => server.emit('connection', s);
    }
    if (app.kind === 'forward' && inKernel(app)) {
      const f = new KernelForwarder({ upstream: app.upstream });
      forwards.set(key, f.stats);
      kernelForwarders.set(key, f);
      closers.push(() => f.close());
      return (_s, flow) => void agent.forwardInKernel(flow, f);
    }
    if (app.kind === 'forward') {
      const f = createForwarder(app.upstream);
      forwards.set(key, f.stats);
      return (s) => f.handle(s);
    }
    if (app.kind === 'unix') {
      const path = app.path;
      return (_s, flow) => void agent.passOn(flow, path);
    }
    return app.onConnection;
  };
  const fallback = handlerFor(o.app, '*');
  const byVip = new Map((o.apps ?? []).map((a) => [`${a.ip}:${a.port}`, handlerFor(a.app, `${a.ip}:${a.port}`)]));
  agent.on('connection', byVip.size
    ? (s: net.Socket, flow: InjectedFlow) => (byVip.get(`${flow.blob.vip}:${flow.blob.vipPort}`) ?? fallback)(s, flow)
    : fallback);
  const forward = forwards.get('*');
  const closeApp = () => { for (const c of closers) c(); };
  const port = await agent.listen();
  return {
    agent, network, tunnel, forward, forwards, kernelForwarders, served, port,
    close() {
      agent.close();
      closeApp();
      tunnel?.close();
      if (network && (o.network === undefined || (o.network !== false && o.network.cleanup !== false))) network.undo();
    },
  };
}
