// A host for the end-to-end tests, run inside a host namespace:
//
//   ip netns exec NS node dist/test/lib/host-proc.js '<json HostProcConfig>'
//
// createHost() with a handler app: connections for a TLS port go to an
// https.Server (its certificate tells the test which host answered), all
// others to the demo app (design.md §2). The cluster key comes from
// HANDOFF_CLUSTER_KEY (hex). Prints one JSON object per line on stdout:
//   {"ev":"ready","port":4791,"mac":"..."}
//   {"ev":"conn","flowId":..,"clientIp":"..","clientPort":..,"vipPort":..,
//    "dataBytes":.., "dataHead":"hex of the first 6 bytes the blob carried"}
//   {"ev":"close","clientPort":..,"vipPort":..,"error":"ECONNRESET"|null}
//   {"ev":"stats","stats":{...HostAgentStats}}   on SIGUSR2 and at exit
// and exits on SIGTERM, removing what createHost set up.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import type net from 'node:net';
import { createDemoServer, createHost } from '../../src/host';

export interface HostProcConfig {
  name: string;
  port?: number;
  vips: Array<{ ip: string; port: number }>;
  balancers?: string[];
  /** VIP ports whose connections are TLS, with the certificate to present. */
  tls?: { ports: number[]; certFile: string; keyFile: string };
  /** createHost's network.filterTunnel. Default true. */
  filterTunnel?: boolean;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '') as HostProcConfig;
  const keyHex = process.env.HANDOFF_CLUSTER_KEY ?? '';
  const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

  const demo = createDemoServer(cfg.name);
  // Client half-close, two work-arounds (both reported): Node's http.Server
  // ends the socket as soon as the client's FIN arrives (httpAllowHalfOpen
  // false), cutting off a response still being streamed, so the shipped demo
  // app truncates /bytes/N after a FIN; and see allowHalfOpen below.
  (demo as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  const tlsPorts = new Set(cfg.tls?.ports ?? []);
  const tlsServer = cfg.tls && https.createServer({
    cert: fs.readFileSync(cfg.tls.certFile), key: fs.readFileSync(cfg.tls.keyFile),
  }, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`served by ${cfg.name} over TLS\n`);
  });
  // A failed TLS handshake must not take the process down; the test sees it as a client error.
  tlsServer?.on('tlsClientError', (err) => out({ ev: 'tls-error', error: err.message }));

  // Work around a product bug: createHost() passes every VIP entry's address
  // to HostNetwork, which adds each to lo, so a VIP served on two ports (80
  // and 443) is added twice and the second `ip addr add` fails ("host
  // network set-up incomplete"). Put such addresses on lo beforehand; then
  // HostNetwork finds them there. Remove once create-host.ts dedupes.
  const seen = new Set<string>();
  for (const v of cfg.vips) {
    if (seen.has(v.ip)) execFileSync('ip', ['addr', 'replace', `${v.ip}/32`, 'dev', 'lo']);
    seen.add(v.ip);
  }

  const host = await createHost({
    port: cfg.port ?? 4791,
    clusterKey: Buffer.from(keyHex, 'hex'),
    vips: cfg.vips,
    balancers: cfg.balancers ?? [],
    network: { filterTunnel: cfg.filterTunnel ?? true },
    app: {
      kind: 'handler',
      onConnection: (socket: net.Socket, flow) => {
        const { clientIp, clientPort, vipPort } = flow.blob;
        const { data } = flow.blob;
        out({ ev: 'conn', flowId: flow.flowId, clientIp, clientPort, vipPort, dataBytes: data.length,
          dataHead: data.subarray(0, 6).toString('hex') });
        let error: string | null = null;
        socket.on('error', (err: NodeJS.ErrnoException) => { error ??= err.code ?? err.message; });
        socket.on('close', () => out({ ev: 'close', clientIp, clientPort, vipPort, error }));
        // repair.ts creates the injected socket with `new net.Socket({ fd })`,
        // so allowHalfOpen is false: on the client's FIN Node ends our side
        // too, and whatever the app writes afterwards is lost. An accepted
        // socket of http.Server would allow half-open; make this one alike.
        socket.allowHalfOpen = true;
        if (tlsServer && tlsPorts.has(vipPort)) tlsServer.emit('connection', socket);
        else demo.emit('connection', socket);
      },
    },
  });
  host.agent.on('error', (err) => out({ ev: 'agent-error', error: err.message }));
  // With the tunnel check's counters, read from the kernel.
  const stats = () => host.agent.refreshStats().then((s) => out({ ev: 'stats', stats: { ...s, perRequest: host.agent.perRequestStats } }),
    (err: Error) => out({ ev: 'stats', stats: { ...host.agent.stats, perRequest: host.agent.perRequestStats }, error: err.message }));
  process.on('SIGUSR2', stats);
  const stop = async () => {
    await stats();
    host.close();
    demo.close();
    tlsServer?.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  out({ ev: 'ready', port: host.port, mac: host.network?.mac ?? '' });
}

if (require.main === module) main().catch((err: unknown) => {
  process.stderr.write(`host-proc: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
