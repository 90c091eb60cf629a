import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

/** JSON-safe: bigints become numbers (counters stay far below 2^53 in practice) . */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? Number(v) : v));
}

/** What a control endpoint answers. Each is optional but `status`. */
export interface ControlHandlers {
  /** GET /status: JSON. */
  status: () => unknown;
  /** GET /metrics: Prometheus text. */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** GET /healthz: 200 "ok" while serving, 503 with the reason while draining or failing. */
  healthz?: () => { ok: boolean; reason: string };
  /** POST /reload (UNIX socket only): re-read the configuration. Rejects with the reason. */
  reload?: () => Promise<{ changes: string[] }>;
}

/** Route one request to the handlers. `local`: on the UNIX socket, where /reload is allowed. */
function route(h: ControlHandlers, local: boolean): http.RequestListener {
  return (req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const fail = (err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`${(err as Error)?.message ?? err}\n`);
    };
    // A handler that throws (the balancer stopping under a late request) answers 500, never crashes the process.
    try {
      dispatch();
    } catch (err) {
      fail(err);
    }
    function dispatch(): void {
      if (req.method === 'GET' && url === '/status') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(toJson(h.status()));
      } else if (req.method === 'GET' && url === '/metrics' && h.metrics) {
        h.metrics().then((m) => res.writeHead(200, { 'content-type': m.contentType }).end(m.body), fail);
      } else if (req.method === 'GET' && url === '/healthz' && h.healthz) {
        const r = h.healthz();
        res.writeHead(r.ok ? 200 : 503, { 'content-type': 'text/plain' }).end(`${r.reason}\n`);
      } else if (req.method === 'POST' && url === '/reload' && h.reload && local) {
        h.reload().then(
          (r) => res.writeHead(200, { 'content-type': 'application/json' }).end(toJson({ ok: true, changes: r.changes })),
          (err: Error) => res.writeHead(422, { 'content-type': 'application/json' }).end(toJson({ ok: false, error: err.message })),
        );
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      }
    }
  };
}

/**
 * A local control endpoint: HTTP over a UNIX socket, so it is reachable from
 * any network namespace on the machine (`handoff status`, `handoff reload`,
 * the demo's table). Its file permissions are its access control.
 */
export class ControlServer {
  private readonly server: http.Server;

  constructor(readonly socketPath: string, handlers: ControlHandlers | (() => unknown)) {
    const h = typeof handlers === 'function' ? { status: handlers } : handlers;
    this.server = http.createServer(route(h, true));
  }

  listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.socketPath), { recursive: true });
    try {
      fs.unlinkSync(this.socketPath); // a stale socket of a dead process
    } catch { /* none */ }
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socketPath, () => {
        fs.chmodSync(this.socketPath, 0o660); // reload is a privileged act: owner and group only
        resolve();
      });
    });
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections(); // keep-alive clients must not reach a stopped balancer
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

/**
 * The HTTP endpoint on a TCP address, for Prometheus and load-balancer
 * health checks: GET /metrics, /healthz and /status; no /reload.
 */
export class HttpEndpoint {
  private readonly server: http.Server;

  constructor(handlers: ControlHandlers) {
    this.server = http.createServer(route(handlers, false));
  }

  /** @returns the bound port (useful with port 0). */
  listen(address: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, address, () => {
        this.server.off('error', reject);
        resolve((this.server.address() as { port: number }).port);
      });
    });
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
  }
}

/** POST /reload on a control socket. @returns the balancer's answer. @throws when nothing listens there. */
export function requestReload(socketPath: string, timeoutMs = 10000): Promise<{ ok: boolean; changes?: string[]; error?: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/reload', method: 'POST', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** GET `path` from a control socket: the demo relays /metrics this way out of the balancer's namespace. */
export function fetchControl(socketPath: string, path: string, timeoutMs = 2000): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${socketPath} within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}
