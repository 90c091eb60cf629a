// A TCP client for the end-to-end tests, run inside the client namespace:
//
//   ip netns exec NS node dist/test/lib/tcp-client.js MODE IP PORT
//
// Speaks just enough HTTP/1.1 (Content-Length and chunked bodies) to exercise how a
// handed-off connection ends. Prints one JSON line with the outcome; exits 0
// unless the arguments are wrong (the test judges the outcome).
//
// Where a mode says "gate", it prints {"gate":true,"localPort":N} and waits
// for a line on stdin before going on, so the test can look at the balancer
// first (wait for the mapping to be ACTIVE, or not).
//
// Modes:
//   half-close-after-handoff  GET / (the handoff happens), gate, then GET
//                             /bytes/1048576 and at once shutdown(SHUT_WR);
//                             read that whole response, then EOF.
//   half-close-immediate      GET / and at once shutdown(SHUT_WR) on a new
//                             connection: the FIN may reach the balancer
//                             before its decision.
//   reset                     GET /, read the response, gate, then send RST
//                             (SO_LINGER 0 close) while the host keeps the
//                             connection alive.
//   server-close              GET / with Connection: close; expect the
//                             response, then EOF from the server; gate;
//                             then our FIN.
import net from 'node:net';

interface Response {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Reads a byte stream from a socket; responses are parsed from it one at a time. */
class Reader {
  private buf = Buffer.alloc(0);
  ended = false;
  error: string | null = null;
  private wake?: () => void;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake?.(); });
    socket.on('end', () => { this.ended = true; this.wake?.(); });
    socket.on('error', (err: NodeJS.ErrnoException) => { this.error ??= err.code ?? err.message; this.wake?.(); });
    socket.on('close', () => { this.ended = true; this.wake?.(); });
  }

  get buffered(): number {
    return this.buf.length;
  }

  private async until(pred: () => boolean): Promise<boolean> {
    while (!pred()) {
      if (this.ended || this.error) return pred();
      await new Promise<void>((r) => { this.wake = r; });
    }
    return true;
  }

  /** The next response, or null if the stream ended or failed first. */
  async response(): Promise<Response | null> {
    let end = -1;
    if (!(await this.until(() => (end = this.buf.indexOf('\r\n\r\n')) >= 0))) return null;
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    this.buf = this.buf.subarray(end + 4);
    if (!/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const len = Number(headers['content-length'] ?? 0);
      if (!(await this.until(() => this.buf.length >= len))) return null;
      const body = this.buf.subarray(0, len);
      this.buf = this.buf.subarray(len);
      return { status, headers, body };
    }
    // Chunked: size line, data, CRLF; a zero size and a blank line end it (no trailers from the demo app).
    const parts: Buffer[] = [];
    for (;;) {
      let eol = -1;
      if (!(await this.until(() => (eol = this.buf.indexOf('\r\n')) >= 0))) return null;
      const size = parseInt(this.buf.subarray(0, eol).toString('latin1'), 16);
      if (!(size >= 0)) return null;
      const need = eol + 2 + size + 2;
      if (!(await this.until(() => this.buf.length >= need))) return null;
      parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
      this.buf = this.buf.subarray(need);
      if (size === 0) break;
    }
    const body = Buffer.concat(parts);
    return { status, headers, body };
  }

  /** Wait for EOF (or an error). */
  async eof(): Promise<void> {
    await this.until(() => this.ended || this.error !== null);
  }
}

function patternOk(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== i % 251) return false;
  return true;
}

/** Say where we are and wait for the test's go-ahead (a line on stdin). */
async function gate(localPort: number | undefined): Promise<void> {
  process.stdout.write(`${JSON.stringify({ gate: true, localPort })}\n`);
  await new Promise<void>((resolve) => {
    process.stdin.once('data', () => resolve());
    process.stdin.once('end', () => resolve());
  });
  process.stdin.destroy();
}

const req = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: suite.example\r\n${extra}\r\n`;

async function main(): Promise<void> {
  const [mode, ip, portText] = process.argv.slice(2);
  const port = Number(portText);
  if (!mode || !ip || !(port > 0)) {
    process.stderr.write('usage: tcp-client MODE IP PORT\n');
    process.exit(2);
  }
  const socket = net.connect({ host: ip, port, allowHalfOpen: true });
  const r = new Reader(socket);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  const localPort = socket.localPort;
  const result: Record<string, unknown> = { mode, localPort };
  const summary = (res: Response | null) => res && { status: res.status, length: res.body.length,
    text: res.body.length < 200 ? res.body.toString() : undefined, connection: res.headers.connection ?? null };

  switch (mode) {
    case 'half-close-after-handoff': {
      socket.write(req('/'));
      result.first = summary(await r.response());
      await gate(localPort);
      socket.write(req('/bytes/1048576'));
      socket.end(); // FIN right behind the request, through the tunnel
      const second = await r.response();
      result.second = summary(second);
      result.patternOk = second ? patternOk(second.body) : false;
      await r.eof();
      result.eof = r.ended;
      break;
    }
    case 'half-close-immediate': {
      socket.write(req('/'));
      socket.end();
      result.first = summary(await r.response());
      await r.eof();
      result.eof = r.ended;
      break;
    }
    case 'reset': {
      socket.write(req('/'));
      result.first = summary(await r.response());
      await gate(localPort);
      socket.resetAndDestroy();
      await new Promise((res) => socket.once('close', res));
      break;
    }
    case 'server-close': {
      socket.write(req('/', 'Connection: close\r\n'));
      result.first = summary(await r.response());
      await r.eof();
      result.eof = r.ended;
      result.trailing = r.buffered;
      await gate(localPort);
      socket.end();
      if (!socket.destroyed) await new Promise((res) => socket.once('close', res));
      break;
    }
    default:
      process.stderr.write(`unknown mode ${mode}\n`);
      process.exit(2);
  }
  result.error = r.error;
  process.stdout.write(`${JSON.stringify(result)}\n`);
  socket.destroy();
  process.exit(0);
}

if (require.main === module) main().catch((err: unknown) => {
  process.stdout.write(`${JSON.stringify({ fatal: (err as NodeJS.ErrnoException)?.code ?? String(err) })}\n`);
});
