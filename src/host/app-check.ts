import http from 'node:http';

export interface AppCheckOptions {
  /** URL of the application's health endpoint, e.g. http://127.0.0.1:8080/healthz. */
  url: string;
  /** Time between checks, ms. Default 2000. */
  intervalMs?: number;
  /** A check without an answer this long fails, ms. Default 1000. */
  timeoutMs?: number;
  /** Status that counts as healthy. Default: any 2xx. */
  expectStatus?: number;
  /** Called with each result (the agent announces it in its PONGs). */
  onResult: (ok: boolean, detail: string) => void;
}

/**
 * The optional HTTP check of the host's own application, run by the agent
 * next to it: the balancer learns the result from the agent's heartbeat, so
 * the check needs no route from the balancer to the application.
 */
export class AppCheck {
  private timer?: NodeJS.Timeout;
  private inFlight = false;
  /** The last result, and why. */
  ok = true;
  detail = 'not checked yet';

  constructor(private readonly o: AppCheckOptions) {
    const u = new URL(o.url);
    if (u.protocol !== 'http:') throw Object.assign(new Error(`health.http.url must be an http:// URL, got ${o.url}`), { code: 'ERR_APP_CHECK_URL' });
  }

  start(): this {
    this.check();
    this.timer = setInterval(() => this.check(), this.o.intervalMs ?? 2000);
    this.timer.unref();
    return this;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  private check(): void {
    if (this.inFlight) return;
    this.inFlight = true;
    const done = (ok: boolean, detail: string) => {
      if (!this.inFlight) return;
      this.inFlight = false;
      this.ok = ok;
      this.detail = detail;
      this.o.onResult(ok, detail);
    };
    const req = http.get(this.o.url, { timeout: this.o.timeoutMs ?? 1000, agent: false }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      const ok = this.o.expectStatus ? code === this.o.expectStatus : code >= 200 && code < 300;
      done(ok, `HTTP ${code}`);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${this.o.timeoutMs ?? 1000} ms`)));
    req.on('error', (err) => done(false, err.message));
  }
}
