// Sends datagrams the test made (forged blob transfers, VXLAN frames) from a
// real UDP socket in a namespace and reports every answer:
//
//   ip netns exec NS node dist/test/lib/forge-probe.js < spec.json   (a ForgeSpec)
//
// Cases run one after another from one socket. A case waits until `expect`
// FINAL/ERROR answers came, or `replies` answers of any kind (or waitMs
// passed; default 3000 ms with an expectation, 300 ms without). Prints one JSON line:
// { results: [{ name, sent, replies: [{ type, status, statusName, blobId } | { error }] }] }.
import dgram from 'node:dgram';
import { decodeDatagram, isDatagramError, statusName } from '../../src/transfer';

export interface ForgeCase {
  name: string;
  /** Base64 datagrams, sent in order. */
  datagrams: string[];
  /** Destination; default the spec's. */
  to?: { ip: string; port: number };
  /** FINAL or ERROR answers to wait for. Default 0. */
  expect?: number;
  /** Answers of any kind (ACK, FINAL, ERROR) to wait for. Default 0. */
  replies?: number;
  waitMs?: number;
}

export interface ForgeSpec {
  to: { ip: string; port: number };
  cases: ForgeCase[];
}

export interface ForgeReply { type?: string; status?: number; statusName?: string; blobId?: number; error?: string }
export interface ForgeResult { name: string; sent: number; replies: ForgeReply[] }

async function main(): Promise<void> {
  // On stdin: a flood's datagrams exceed what argv can carry.
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const spec = JSON.parse(Buffer.concat(chunks).toString()) as ForgeSpec;
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, r));
  let current: ForgeReply[] = [];
  let wake = () => {};
  sock.on('message', (msg) => {
    const d = decodeDatagram(msg);
    if (isDatagramError(d)) current.push({ error: d.error });
    else {
      current.push({ type: d.type, blobId: d.blobId, ...('status' in d ? { status: d.status, statusName: statusName(d.status) } : {}) });
    }
    wake();
  });
  const results: ForgeResult[] = [];
  for (const c of spec.cases) {
    current = [];
    const to = c.to ?? spec.to;
    let sent = 0;
    for (const b64 of c.datagrams) {
      await new Promise<void>((r) => sock.send(Buffer.from(b64, 'base64'), to.port, to.ip, (err) => { if (!err) sent++; r(); }));
    }
    const expect = c.expect ?? 0;
    const replies = c.replies ?? 0;
    const answers = () => current.filter((x) => x.type === 'final' || x.type === 'error').length;
    const done = () => (expect > 0 && answers() >= expect) || (replies > 0 && current.length >= replies);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, c.waitMs ?? (expect || replies ? 3000 : 300));
      wake = () => { if (done()) { clearTimeout(timer); resolve(); } };
      wake();
    });
    results.push({ name: c.name, sent, replies: current });
  }
  sock.close();
  process.stdout.write(`${JSON.stringify({ results })}\n`);
}

if (require.main === module) main().catch((err: unknown) => {
  process.stdout.write(`${JSON.stringify({ fatal: (err as Error)?.stack ?? String(err) })}\n`);
  process.exit(1);
});
