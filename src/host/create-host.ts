import type net from 'node:net';
import { HostAgent, type HostAgentOptions, type InjectedFlow } from './agent';
import { createDemoServer, createForwarder, type ForwardStats } from './apps';
import { HostNetwork } from './netsetup';

export interface CreateHostOptions extends HostAgentOptions {
  /** 'demo' (built-in HTTP app), 'forward' (to a local upstream), or a handler of your own. */
  app: { kind: 'demo'; name: string } | { kind: 'forward'; upstream: { host: string; port: number } }
    | { kind: 'handler'; onConnection: (socket: net.Socket, flow: InjectedFlow) => void };
  /** Set up (and on close remove) the VXLAN device, VIPs on lo and sysctls. Default true. */
  network?: false | { device?: string; create?: boolean; cleanup?: boolean };
}

export interface RunningHost {
  agent: HostAgent;
  network?: HostNetwork;
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
  const agent = new HostAgent(o);
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
    agent, network, forward, served, port,
    close() {
      agent.close();
      closeApp();
      if (network && (o.network === undefined || (o.network !== false && o.network.cleanup !== false))) network.undo();
    },
  };
}
