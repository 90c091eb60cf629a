// One backend host of the end-to-end benchmark, run inside a host namespace:
//
//   ip netns exec NS node dist/bench/e2e-vs-haproxy/host.js '<json HostChildConfig>'
//
// One demo app (src/host/apps.ts, `GET /bytes/N`) serves both ways in, so all
// three columns measure the same server in the same process:
// - connections handed off by Handoff: createHost() injects them with
//   TCP_REPAIR and they are emitted into the app, as `handoff host` does;
// - plain TCP on `plainPort`: HAProxy's backend connections and the direct
//   client.
// The cluster key comes from HANDOFF_CLUSTER_KEY (hex). Prints one JSON line
// {"ev":"ready","mac":".."} (mac: the VXLAN device's, the balancer's inner
// destination), then {"ev":"stats",...} on SIGUSR2 and at exit; exits on SIGTERM.
import type net from 'node:net';
import { createDemoServer, createHost } from '../../src/host';

export interface HostChildConfig {
  name: string;
  vip: { ip: string; port: number };
  balancers: string[];
  /** Plain TCP port of the same app (HAProxy's backend, the direct client). */
  plainPort: number;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '') as HostChildConfig;
  const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const app = createDemoServer(cfg.name);
  // Keep-alive runs (wrk) keep connections open for the whole cell; Node's
  // 5 s default would close idle ones between warm-up and measurement.
  app.keepAliveTimeout = 60_000;
  const host = await createHost({
    port: 4791,
    clusterKey: Buffer.from(process.env.HANDOFF_CLUSTER_KEY ?? '', 'hex'),
    vips: [cfg.vip],
    balancers: cfg.balancers,
    app: { kind: 'handler', onConnection: (s: net.Socket) => app.emit('connection', s) },
  });
  host.agent.on('error', (err) => out({ ev: 'agent-error', error: err.message }));
  await new Promise<void>((resolve, reject) => {
    app.once('error', reject);
    app.listen(cfg.plainPort, '0.0.0.0', () => resolve());
  });
  const stats = () => out({ ev: 'stats', agent: host.agent.stats, served: app.served });
  process.on('SIGUSR2', stats);
  const stop = () => {
    stats();
    host.close();
    app.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  out({ ev: 'ready', mac: host.network?.mac ?? '' });
}

if (require.main === module) main().catch((err: unknown) => {
  process.stderr.write(`e2e host: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
