// Sends hand-made blob transfers straight to a host agent and reports what it
// answers (design.md §4): run in a namespace that can reach the agent,
//
//   HANDOFF_CLUSTER_KEY=hex ip netns exec NS node dist/test/lib/blob-probe.js '<json ProbeSpec>'
//
// Each case is one transfer (DATA fragments from one UDP socket, so one
// sender address) with its own or a reused blob id. Prints one JSON line:
// { results: [{ name, blobId, replies: [{ type, status, statusName }] }] }.
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import {
  DEFAULT_FRAGMENT_SIZE, decodeDatagram, encodeBlob, encodeData, fragmentCount, fragmentLength,
  isDatagramError, statusName,
} from '../../src/transfer';
import type { ConnectionBlob } from '../../src/transfer';

export interface ProbeBlob {
  clientIp: string;
  clientPort: number;
  vip: string;
  vipPort: number;
  /** Bytes the client "sent" (the request head). */
  data?: string;
}

export interface ProbeCase {
  name: string;
  /** Which blob bytes to send: a fresh blob, or the bytes of an earlier case. */
  blob: ProbeBlob | { sameBytesAs: string };
  /** Encode with a random key instead of the cluster key. */
  wrongKey?: boolean;
  /** Drop this many bytes from the end of the encoded blob. */
  truncate?: number;
  /** Reuse an earlier case's blob id (a retransmission of that transfer); default a new id. */
  sameIdAs?: string;
}

export interface ProbeSpec {
  agent: { ip: string; port: number };
  cases: ProbeCase[];
  /** How long to wait for a FINAL or ERROR per case, ms. Default 3000. */
  waitMs?: number;
}

export function makeBlob(b: ProbeBlob): ConnectionBlob {
  const data = Buffer.from(b.data ?? '');
  const irs = crypto.randomInt(0, 2 ** 32);
  const iss = crypto.randomInt(0, 2 ** 32);
  return {
    v: 1, flowId: crypto.randomInt(1, 1 << 24), clientIp: b.clientIp, clientPort: b.clientPort, vip: b.vip,
    vipPort: b.vipPort, iss, irs, sndNxt: (iss + 1) >>> 0, rcvNxt: (irs + 1 + data.length) >>> 0,
    sndWnd: 64240, rcvWnd: 64240, sndWscale: 7, rcvWscale: 7, mss: 1400, sackOk: false, tsOk: false,
    tsVal: 0, tsEcr: 0, data, decision: { rule: null, pool: 'probe', host: 'probe' }, created: Date.now(),
    nonce: crypto.randomBytes(16),
  };
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as ProbeSpec;
  const key = Buffer.from(process.env.HANDOFF_CLUSTER_KEY ?? '', 'hex');
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, r));
  const session = crypto.randomInt(0, 2 ** 32);
  let nextId = 1;
  const bytesOf = new Map<string, Buffer>();
  const idOf = new Map<string, number>();
  const replies = new Map<number, Array<{ type: string; status?: number; statusName?: string }>>();
  const waiters = new Map<number, () => void>();
  sock.on('message', (msg) => {
    const d = decodeDatagram(msg);
    if (isDatagramError(d) || d.session !== session) return;
    const list = replies.get(d.blobId) ?? [];
    replies.set(d.blobId, list);
    if (d.type === 'final' || d.type === 'error') {
      list.push({ type: d.type, status: d.status, statusName: statusName(d.status) });
      waiters.get(d.blobId)?.();
    } else list.push({ type: d.type });
  });

  const results = [];
  for (const c of spec.cases) {
    let bytes: Buffer;
    if ('sameBytesAs' in c.blob) bytes = bytesOf.get(c.blob.sameBytesAs)!;
    else {
      bytes = encodeBlob(makeBlob(c.blob), c.wrongKey ? crypto.randomBytes(32) : key);
      if (c.truncate) bytes = bytes.subarray(0, bytes.length - c.truncate);
    }
    bytesOf.set(c.name, bytes);
    const blobId = c.sameIdAs ? idOf.get(c.sameIdAs)! : nextId++;
    idOf.set(c.name, blobId);
    const before = replies.get(blobId)?.length ?? 0;
    const fs = DEFAULT_FRAGMENT_SIZE;
    const count = fragmentCount(bytes.length, fs);
    const send = () => {
      for (let i = 0; i < count; i++) {
        const payload = bytes.subarray(i * fs, i * fs + fragmentLength(i, count, bytes.length, fs));
        sock.send(encodeData({ session, blobId, index: i, count, totalLength: bytes.length, fragmentSize: fs, payload }),
          spec.agent.port, spec.agent.ip);
      }
    };
    const answered = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), spec.waitMs ?? 3000);
      waiters.set(blobId, () => { clearTimeout(timer); resolve(true); });
    });
    send();
    await answered;
    waiters.delete(blobId);
    results.push({ name: c.name, blobId, replies: (replies.get(blobId) ?? []).slice(before) });
  }
  sock.close();
  process.stdout.write(`${JSON.stringify({ results })}\n`);
}

if (require.main === module) main().catch((err: unknown) => {
  process.stdout.write(`${JSON.stringify({ fatal: (err as Error)?.stack ?? String(err) })}\n`);
  process.exit(1);
});
