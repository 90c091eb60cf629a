import http from 'node:http';
import net from 'node:net';

/**
 * The demo application (design.md §2, issue 5): `GET /` names the host,
 * `GET /bytes/N` returns N bytes where byte i is i % 251, so a client can
 * check a large response.
 */
export interface DemoServer extends http.Server {
  /** Requests answered and body bytes written. */
  served: { requests: number; bytes: number };
}

export function createDemoServer(name: string): DemoServer {
  const pattern = Buffer.alloc(251 * 256);
  for (let i = 0; i < pattern.length; i++) pattern[i] = i % 251;
  const served = { requests: 0, bytes: 0 };
  const server = http.createServer((req, res) => {
    served.requests++;
    const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (m) {
      const n = Number(m[1]);
      if (n > 1 << 30) {
        res.writeHead(400).end('at most 1 GiB\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
      let sent = 0;
      const more = () => {
        while (sent < n) {
          const chunk = pattern.subarray(0, Math.min(pattern.length, n - sent)); // pattern length is a multiple of 251
          sent += chunk.length;
          served.bytes += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', more);
        }
        res.end();
      };
      return more();
    }
    const body = `served by ${name}\n`;
    served.bytes += body.length;
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  }) as DemoServer;
  // A client that half-closes after its request still gets the whole response.
  (server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  server.served = served;
  return server;
}

export interface ForwardStats {
  connections: number;
  bytesFromClient: number;
  bytesToClient: number;
  upstreamErrors: number;
}

/**
 * Forward mode: join each injected socket to a new connection to a local
 * upstream, so any server works unchanged. Counts bytes both ways.
 */
export function createForwarder(upstream: { host: string; port: number }): { handle(s: net.Socket): void; stats: ForwardStats } {
  const stats: ForwardStats = { connections: 0, bytesFromClient: 0, bytesToClient: 0, upstreamErrors: 0 };
  return {
    stats,
    handle(client: net.Socket) {
      stats.connections++;
      // Hold what the client already sent (it is in the injected socket's queue) until upstream is up.
      client.pause();
      const up = net.connect(upstream.port, upstream.host, () => client.resume());
      client.on('data', (d) => { stats.bytesFromClient += d.length; });
      up.on('data', (d) => { stats.bytesToClient += d.length; });
      client.pipe(up);
      up.pipe(client);
      up.on('error', () => { stats.upstreamErrors++; client.destroy(); });
      client.on('error', () => up.destroy());
      client.on('close', () => up.destroy());
    },
  };
}
