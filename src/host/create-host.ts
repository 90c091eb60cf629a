import type net from 'node:net';
import { HostAgent, type HostAgentOptions, type InjectedFlow } from './agent';
import { createDemoServer, createForwarder, type ForwardStats } from './apps';
import { HostNetwork } from './netsetup';
import { TunnelFilter } from './tunnel-filter';

export interface CreateHostOptions extends HostAgentOptions {
  /** 'demo' (built-in HTTP app), 'forward' (to a local upstream), or a handler of your own. */
  app: { kind: 'demo'; name: string } | { kind: 'forward'; upstream: { host: string; port: number } }
    | { kind: 'handler'; onConnection: (socket: net.Socket, flow: InjectedFlow) => void };
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
  forward?: ForwardStats;
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
  const agent = new HostAgent({ ...o, tunnel, innerMac: o.innerMac ?? (network?.mac || undefined) });
  let forward: ForwardStats | undefined;
  let served: { requests: number; bytes: number } | undefined;
  let closeApp = () => {};
  if (o.app.kind === 'demo') {
    const server = createDemoServer(o.app.name);
    served = server.served;
    agent.on('connection', (s) => server.emit('connection', s));
    closeApp = () => server.close();
  } else if (o.app.kind === 'forward') {
    const f = createForwarder(o.app.upstream);
    forward = f.stats;
    agent.on('connection', (s) => f.handle(s));
  } else {
    agent.on('connection', o.app.onConnection);
  }
  const port = await agent.listen();
  return {
    agent, network, tunnel, forward, served, port,
    close() {
      agent.close();
      closeApp();
      tunnel?.close();
      if (network && (o.network === undefined || (o.network !== false && o.network.cleanup !== false))) network.undo();
    },
  };
}
