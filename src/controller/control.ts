import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

/** JSON-safe: bigints become numbers (counters stay far below 2^53 in practice) . */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? Number(v) : v));
}

/**
 * A local control endpoint: HTTP over a UNIX socket, so it is reachable from
 * any network namespace on the machine (`handoff status`, the demo's table).
 * GET /status answers `status()` as JSON.
 */
export class ControlServer {
  private readonly server: http.Server;

  constructor(readonly socketPath: string, status: () => unknown) {
    this.server = http.createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/status') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(toJson(status()));
      } else {
        res.writeHead(404).end('not found\n');
      }
    });
  }

  listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true });
    try {
      fs.unlinkSync(this.socketPath); // a stale socket of a dead process
    } catch { /* none */ }
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socketPath, () => resolve());
    });
  }

  close(): void {
    this.server.close();
    try {
      fs.unlinkSync(this.socketPath);
    } catch { /* gone */ }
  }
}

/** GET /status from a control socket. @throws when nothing listens there. */
export function fetchStatus<T = Record<string, unknown>>(socketPath: string, timeoutMs = 2000): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: '/status', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as T);
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}
