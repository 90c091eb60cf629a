// The forwarding side of bench:forward, run in the bench's namespace:
//
//   ip netns exec NS node dist/bench/forward/front.js '{"mode":"splice","port":9001,"upstream":9000}'
//
// Accepts on 127.0.0.1:port without reading (pauseOnConnect), as the agent
// has an injected socket with the request in its queue, and hands each
// connection to the host agent's forwarder of `mode`: 'splice' (KernelForwarder,
// the bytes in the kernel) or 'js' (createForwarder, piped through Node).
// Prints {"ev":"ready"} once listening, {"ev":"stats",...} on SIGUSR2.
import net from 'node:net';
import { createForwarder } from '../../src/host/apps';
import { KernelForwarder } from '../../src/host/kernel-forward';
import type { InjectedFlow } from '../../src/host/agent';

interface FrontConfig { mode: 'splice' | 'js'; port: number; upstream: number }

function main(): void {
  const cfg = JSON.parse(process.argv[2] ?? '') as FrontConfig;
  const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const upstream = { host: '127.0.0.1', port: cfg.upstream };
  let refused = 0;
  let handle: (s: net.Socket) => void;
  let stats: () => object;
  if (cfg.mode === 'splice') {
    const f = new KernelForwarder({ upstream });
    let id = 0;
    handle = (s) => {
      const flow = { flowId: ++id >>> 0, socket: s } as unknown as InjectedFlow;
      if (f.forward(flow, () => {}).rc < 0) { refused++; s.resetAndDestroy(); }
    };
    stats = () => ({ ...f.native(), resets: Object.fromEntries(f.resets) });
  } else {
    const f = createForwarder(upstream);
    handle = (s) => f.handle(s);
    stats = () => f.stats;
  }
  const server = net.createServer({ pauseOnConnect: true }, handle);
  server.listen(cfg.port, '127.0.0.1', () => out({ ev: 'ready' }));
  process.on('SIGUSR2', () => out({ ev: 'stats', refused, ...stats() }));
  process.once('SIGTERM', () => process.exit(0));
}

main();
