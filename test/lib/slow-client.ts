// Misbehaving TCP clients for the hardening tests, run in a client namespace:
//
//   ip netns exec NS node dist/test/lib/slow-client.js < spec.json
//
// { mode: 'endless', ip, port }: a request head that never ends (one header
//   growing forever, 1 KiB per write, at most 4 MiB); reports how it ended.
// { mode: 'half', ip, port, from: [addresses], perAddress, head }: opens
//   perAddress connections from each local address, sends `head` (half a
//   request) and nothing more; reports how and when each ended.
// Prints one JSON line.
import net from 'node:net';

interface EndlessSpec { mode: 'endless'; ip: string; port: number; waitMs?: number }
interface HalfSpec { mode: 'half'; ip: string; port: number; from: string[]; perAddress: number; head: string; waitMs?: number }

function endless(s: EndlessSpec): Promise<object> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const sock = net.connect({ host: s.ip, port: s.port });
    let written = 0;
    let response = '';
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (outcome: string, error: string | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ outcome, error, written, status: /^HTTP\/1\.[01] (\d{3})/.exec(response)?.[1] ?? null, ms: Date.now() - t0 });
    };
    const chunk = Buffer.alloc(1024, 'a');
    const pump = () => {
      while (!done && written < 4 << 20) {
        written += chunk.length;
        if (!sock.write(chunk)) return; // the window closed: wait for 'drain' (may never come)
      }
    };
    sock.on('connect', () => {
      sock.write('GET / HTTP/1.1\r\nHost: endless.example\r\nX-Endless: ');
      pump();
    });
    sock.on('drain', pump);
    sock.on('data', (d) => { response += d.toString('latin1'); });
    sock.on('error', (err: NodeJS.ErrnoException) => finish(err.code === 'ECONNRESET' || err.code === 'EPIPE' ? 'reset' : 'error', err.code ?? err.message));
    sock.on('end', () => finish(response ? 'response' : 'eof', null));
    timer = setTimeout(() => finish(response ? 'response' : 'timeout', null), s.waitMs ?? 30_000);
  });
}

async function half(s: HalfSpec): Promise<object> {
  const ends: Array<{ outcome: string; ms: number }> = [];
  const all: Promise<void>[] = [];
  for (const from of s.from) {
    for (let i = 0; i < s.perAddress; i++) {
      all.push(new Promise<void>((resolve) => {
        // From before connect(): the balancer's accept timer starts when the
        // handshake's last ACK reaches it, which is always later. Taken in the
        // 'connect' callback instead, t0 lagged by however long the event loop
        // was busy with the other connections (239 ms under ASan in CI), and a
        // reset on time looked early.
        const t0 = Date.now();
        let done = false;
        const sock = net.connect({ host: s.ip, port: s.port, localAddress: from });
        const timer = setTimeout(() => end('timeout'), s.waitMs ?? 30_000);
        const end = (outcome: string) => {
          if (done) return;
          done = true;
          clearTimeout(timer);
          ends.push({ outcome, ms: Date.now() - t0 });
          sock.destroy();
          resolve();
        };
        sock.on('connect', () => { sock.write(s.head); });
        sock.on('error', (err: NodeJS.ErrnoException) => end(err.code ?? 'error'));
        sock.on('end', () => end('eof'));
        sock.on('data', () => end('data'));
      }));
    }
  }
  await Promise.all(all);
  const by: Record<string, number> = {};
  for (const e of ends) by[e.outcome] = (by[e.outcome] ?? 0) + 1;
  const ms = ends.filter((e) => e.outcome === 'ECONNRESET').map((e) => e.ms).sort((a, b) => a - b);
  return { n: ends.length, by, resetMs: { min: ms[0] ?? null, p50: ms[Math.floor(ms.length / 2)] ?? null, max: ms.at(-1) ?? null } };
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const spec = JSON.parse(Buffer.concat(chunks).toString()) as EndlessSpec | HalfSpec;
  const r = spec.mode === 'endless' ? await endless(spec) : await half(spec);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

if (require.main === module) main().catch((err: unknown) => {
  process.stdout.write(`${JSON.stringify({ fatal: (err as Error)?.stack ?? String(err) })}\n`);
  process.exit(1);
});
