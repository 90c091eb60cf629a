// Many long downloads at once, checked byte by byte (run in a client namespace):
//
//   ip netns exec NS node dist/test/lib/download-client.js '{"host":"198.18.0.100","count":16,"bytes":8000000,"rate":1000000}'
//
// Each connection GETs /bytes/<bytes> (byte i is i % 251, the hosts' demo
// app) over plain kernel TCP, reading at most `rate` bytes per second (so
// the download lasts while the test changes the balancers under it), and
// checks every byte as it arrives. The longest gap between two reads is the
// stall the connection saw. On SIGUSR2 (or after all end) one JSON line:
//   {"results":[{"ok":true,"bytes":N,"maxGapMs":X,"localPort":P}, {"ok":false,"error":"...","bytes":N}, ...]}
import net from 'node:net';

interface Spec { host: string; port?: number; count: number; bytes: number; rate: number; timeoutMs?: number }
interface Result { ok: boolean; bytes: number; maxGapMs: number; localPort?: number; error?: string; badAt?: number }

const spec = JSON.parse(process.argv[2]) as Spec;
const results: Result[] = [];
let open = spec.count;

function one(i: number): void {
  const r: Result = { ok: false, bytes: 0, maxGapMs: 0 };
  results[i] = r;
  const s = net.connect({ host: spec.host, port: spec.port ?? 80 });
  let head = Buffer.alloc(0);
  let inBody = false;
  let last = 0;
  let budgetAt = 0;
  const start = Date.now();
  let done = false;
  const end = (err?: string) => {
    if (done) return;
    done = true;
    r.ok = !err && r.bytes === spec.bytes;
    if (err) r.error = err;
    else if (r.bytes !== spec.bytes) r.error = `short: ${r.bytes} of ${spec.bytes}`;
    s.destroy();
    if (--open === 0) report();
  };
  s.setTimeout(spec.timeoutMs ?? 30000, () => end('no data for 30 s'));
  s.on('connect', () => {
    r.localPort = s.localPort;
    s.write(`GET /bytes/${spec.bytes} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n`);
    last = Date.now();
  });
  s.on('data', (d: Buffer) => {
    const now = Date.now();
    if (last && now - last > r.maxGapMs) r.maxGapMs = now - last;
    last = now;
    let body = d;
    if (!inBody) {
      head = Buffer.concat([head, d]);
      const k = head.indexOf('\r\n\r\n');
      if (k < 0) return;
      if (!/^HTTP\/1\.1 200/.test(head.toString('latin1', 0, 12))) return end(`status: ${head.toString('latin1', 0, 40)}`);
      inBody = true;
      body = head.subarray(k + 4);
    }
    for (let j = 0; j < body.length; j++) {
      if (body[j] !== (r.bytes + j) % 251) {
        r.badAt = r.bytes + j;
        return end(`byte ${r.bytes + j} is ${body[j]}, expected ${(r.bytes + j) % 251}`);
      }
    }
    r.bytes += body.length;
    if (r.bytes >= spec.bytes) return end();
    // Pace: pause until the bytes read so far are due at `rate`.
    budgetAt = start + (r.bytes / spec.rate) * 1000;
    if (budgetAt > now + 5) {
      s.pause();
      setTimeout(() => { last = Date.now(); s.resume(); }, budgetAt - now);
    }
  });
  s.on('error', (e) => end(e.message));
  s.on('close', () => end(r.bytes === spec.bytes ? undefined : `closed after ${r.bytes} bytes`));
}

function report(): void {
  process.stdout.write(`${JSON.stringify({ results })}\n`, () => process.exit(0));
}

process.on('SIGUSR2', report);
for (let i = 0; i < spec.count; i++) one(i);
