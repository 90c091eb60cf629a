// src/transfer: CRC32C, the authenticated connection blob (golden bytes in
// test/fixtures/blob-v1.hex; BLOB_GOLDEN_UPDATE=1 rewrites it), the datagram
// codecs, reassembly, the sender's back-off, and an end-to-end run over a
// lossy, corrupting, duplicating, reordering channel. Time is simulated: every
// test drives the sender with tick(now), none sleeps.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { createHmac } from 'node:crypto';
import { Packr } from 'msgpackr';
import {
  BLOB_FIELDS, BlobError, BlobSender, encodeClosedBatch, MAX_CLOSED_BATCH, ConnectionBlob, Datagram, DatagramError, Endpoint, MAX_FRAGMENTS,
  MAX_TOTAL_LENGTH, Reassembler, ReceiveResult, ReplayWindow, Status, TransferResult, crc32c, decodeBlob,
  decodeDatagram, driveWithTimers, encodeAck, encodeBlob, encodeData, encodeError, encodeFinal,
  fragmentCount, fragmentLength, isDatagramError, statusForBlobError, statusName,
} from '../src/transfer';

// ---------------------------------------------------------------------------
// Helpers

/** mulberry32: small, seeded, good enough for test traffic. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function randomBytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

const KEY = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
const CREATED = 1_700_000_000_000;
const REQUEST = Buffer.from('GET /index.html HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: golden\r\n\r\n');

/** The golden blob; irs is close to 2^32 so rcvNxt wraps. */
function goldenBlob(): ConnectionBlob {
  const irs = 0xffffffe0;
  return {
    v: 1,
    flowId: 0x123456,
    clientIp: '198.51.100.7',
    clientPort: 40123,
    vip: '203.0.113.10',
    vipPort: 80,
    iss: 0x5eed1234,
    irs,
    sndNxt: 0x5eed1235,
    rcvNxt: (irs + 1 + REQUEST.length) >>> 0,
    sndWnd: 64240 << 7,
    rcvWnd: 65535 << 9,
    sndWscale: 7,
    rcvWscale: 9,
    mss: 1410,
    sackOk: true,
    tsOk: true,
    tsVal: 3_000_000_001,
    tsEcr: 123_456_789,
    data: Buffer.from(REQUEST),
    decision: { rule: 'shop-by-host', pool: 'shop', host: 'host1' },
    created: CREATED,
    nonce: Buffer.from('f0e1d2c3b4a5968778695a4b3c2d1e0f', 'hex'),
  };
}

/** Frame a raw body the way blob.ts documents it: [ver][len][body][HMAC over all before]. */
function frameRaw(body: Buffer, key = KEY, version = 1): Buffer {
  const head = Buffer.alloc(5);
  head[0] = version;
  head.writeUInt32BE(body.length, 1);
  const mac = createHmac('sha256', key).update(head).update(body).digest();
  return Buffer.concat([head, body, mac]);
}
const packRaw = (x: unknown): Buffer => new Packr({ useRecords: false }).pack(x);

function blobErrorCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof BlobError) return err.code;
    throw err;
  }
  return 'no error';
}

/** Recompute a datagram's CRC after a test edited it. */
function reseal(buf: Buffer): Buffer {
  const b = Buffer.from(buf);
  b.writeUInt32BE(0, 8);
  b.writeUInt32BE(crc32c(b), 8);
  return b;
}

function mustDecode(buf: Buffer): Datagram {
  const d = decodeDatagram(buf);
  if (isDatagramError(d)) throw new Error(`unexpected ${d.error}: ${d.detail}`);
  return d;
}

const errorOf = (buf: Uint8Array): string => {
  const d = decodeDatagram(buf);
  return isDatagramError(d) ? d.error : 'ok';
};

const IDS = { session: 0xcafe0001, blobId: 42 };

/** Fragments of `blob` as DATA datagrams. */
function fragments(blob: Buffer, fragmentSize = 100, ids = IDS): Buffer[] {
  const count = fragmentCount(blob.length, fragmentSize);
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const off = i * fragmentSize;
    out.push(encodeData({
      ...ids, index: i, count, totalLength: blob.length, fragmentSize,
      payload: blob.subarray(off, off + fragmentLength(i, count, blob.length, fragmentSize)),
    }));
  }
  return out;
}

const LB: Endpoint = { ip: '10.0.0.1', port: 47900 };
const HOST: Endpoint = { ip: '10.0.0.2', port: 4790 };

/** Run a sender alone until it has nothing scheduled; returns the final time. */
function runSender(sender: BlobSender, clock: { now: number }, limit = 10_000): number {
  for (let i = 0; i < limit; i++) {
    const at = sender.nextDeadline();
    if (at === undefined) return clock.now;
    clock.now = Math.max(clock.now, at);
    sender.tick(clock.now);
  }
  throw new Error('sender did not settle');
}

// ---------------------------------------------------------------------------

t.test('crc32c', async (t) => {
  t.equal(crc32c(Buffer.from('123456789')), 0xe3069283, 'check value');
  t.equal(crc32c(Buffer.alloc(0)), 0, 'empty');
  // RFC 3720 appendix B.4 vectors.
  t.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa, '32 zero bytes');
  t.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43, '32 0xff bytes');
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e, '0..31');
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c, '31..0');
  const data = randomBytes(prng(1), 1000);
  for (const cut of [0, 1, 7, 8, 9, 500, 999, 1000]) {
    t.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), crc32c(data), `running crc split at ${cut}`);
  }
  t.equal(crc32c(new Uint8Array(data)), crc32c(data), 'plain Uint8Array');
});

t.test('blob: round trip', async (t) => {
  const blob = goldenBlob();
  const enc = encodeBlob(blob, KEY);
  t.equal(enc[0], 1, 'version byte');
  t.equal(enc.readUInt32BE(1), enc.length - 5 - 32, 'body length');
  const dec = decodeBlob(enc, KEY, { now: CREATED + 10, replay: new ReplayWindow() });
  t.same(dec, blob);
  t.ok(Buffer.isBuffer(dec.data) && Buffer.isBuffer(dec.nonce), 'bytes come back as Buffers');

  const noRule = { ...goldenBlob(), decision: { rule: null, pool: 'default', host: 'h' }, data: Buffer.alloc(0) };
  noRule.rcvNxt = (noRule.irs + 1) >>> 0;
  t.same(decodeBlob(encodeBlob(noRule, KEY), KEY, { now: CREATED, replay: new ReplayWindow() }), noRule,
    'null rule and no data');

  const big = { ...goldenBlob(), data: randomBytes(prng(2), 1_000_000) };
  big.rcvNxt = (big.irs + 1 + big.data.length) >>> 0;
  t.same(decodeBlob(encodeBlob(big, KEY), KEY, { now: CREATED, replay: new ReplayWindow() }).data, big.data, '1 MB of data');
  const huge = { ...goldenBlob(), data: Buffer.alloc(MAX_TOTAL_LENGTH) };
  huge.rcvNxt = (huge.irs + 1 + huge.data.length) >>> 0;
  t.equal(blobErrorCode(() => encodeBlob(huge, KEY)), 'ERR_BLOB_SCHEMA', 'a blob that cannot be transferred is refused');
  t.equal(blobErrorCode(() => encodeBlob(goldenBlob(), Buffer.alloc(15))), 'ERR_BLOB_KEY', 'short key');
  t.equal(blobErrorCode(() => decodeBlob(enc, Buffer.alloc(8), { replay: new ReplayWindow() })), 'ERR_BLOB_KEY');
});

t.test('blob: golden bytes', async (t) => {
  const fixture = path.resolve(__dirname, '../../test/fixtures/blob-v1.hex');
  const enc = encodeBlob(goldenBlob(), KEY);
  const hex = enc.toString('hex');
  if (process.env.BLOB_GOLDEN_UPDATE === '1') {
    fs.writeFileSync(fixture, hex.replace(/(.{64})/g, '$1\n').trimEnd() + '\n');
    t.comment(`wrote ${fixture}`);
  }
  const expected = fs.readFileSync(fixture, 'utf8').replace(/\s+/g, '');
  t.equal(hex, expected, 'encodeBlob(golden blob) matches test/fixtures/blob-v1.hex');
  t.same(decodeBlob(Buffer.from(expected, 'hex'), KEY, { now: CREATED, replay: new ReplayWindow() }), goldenBlob(),
    'the fixture decodes to the golden blob');
  t.same(encodeBlob(goldenBlob(), KEY), enc, 'encoding is deterministic');

  // Key order of the input object does not matter; wire order is fixed.
  const shuffled = Object.fromEntries(Object.entries(goldenBlob()).reverse()) as unknown as ConnectionBlob;
  t.equal(encodeBlob(shuffled, KEY).toString('hex'), expected, 'input key order does not change the bytes');

  // Every field is in the bytes: changing any one changes the encoding.
  const variants: [string, (b: ConnectionBlob) => void][] = [
    ['flowId', (b) => { b.flowId ^= 1; }],
    ['clientIp', (b) => { b.clientIp = '198.51.100.8'; }],
    ['clientPort', (b) => { b.clientPort++; }],
    ['vip', (b) => { b.vip = '203.0.113.11'; }],
    ['vipPort', (b) => { b.vipPort = 443; }],
    ['iss', (b) => { b.iss++; }],
    ['irs', (b) => { b.irs = (b.irs + 1) >>> 0; b.rcvNxt = (b.rcvNxt + 1) >>> 0; }],
    ['sndNxt', (b) => { b.sndNxt++; }],
    ['rcvNxt', (b) => { b.data = Buffer.concat([b.data, Buffer.from('x')]); b.rcvNxt = (b.rcvNxt + 1) >>> 0; }],
    ['sndWnd', (b) => { b.sndWnd++; }],
    ['rcvWnd', (b) => { b.rcvWnd--; }],
    ['sndWscale', (b) => { b.sndWscale = 8; }],
    ['rcvWscale', (b) => { b.rcvWscale = 8; }],
    ['mss', (b) => { b.mss = 1460; }],
    ['sackOk', (b) => { b.sackOk = false; }],
    ['tsOk', (b) => { b.tsOk = false; }],
    ['tsVal', (b) => { b.tsVal++; }],
    ['tsEcr', (b) => { b.tsEcr++; }],
    ['data', (b) => { b.data = Buffer.from(b.data); b.data[0] ^= 0x20; }],
    ['decision.rule', (b) => { b.decision.rule = null; }],
    ['decision.pool', (b) => { b.decision.pool = 'shop2'; }],
    ['decision.host', (b) => { b.decision.host = 'host2'; }],
    ['created', (b) => { b.created++; }],
    ['nonce', (b) => { b.nonce = Buffer.from(b.nonce); b.nonce[15] ^= 1; }],
  ];
  const covered = new Set(variants.map(([f]) => f.split('.')[0]));
  t.same([...BLOB_FIELDS].filter((f) => f !== 'v' && !covered.has(f)), [], 'every field has a variant');
  for (const [field, change] of variants) {
    const b = goldenBlob();
    change(b);
    const other = encodeBlob(b, KEY);
    t.not(other.toString('hex'), expected, `changing ${field} changes the bytes`);
    t.same(decodeBlob(other, KEY, { now: CREATED, replay: new ReplayWindow() }), b, `and ${field} round-trips`);
  }
  t.not(encodeBlob(goldenBlob(), Buffer.alloc(32, 7)).toString('hex'), expected, 'another key changes the MAC');
});

t.test('blob: every BlobError code', async (t) => {
  const enc = encodeBlob(goldenBlob(), KEY);
  const decode = (buf: Buffer, opts: { now?: number; maxAgeMs?: number; replay?: ReplayWindow } = {}) =>
    blobErrorCode(() => decodeBlob(buf, KEY, { now: CREATED, replay: new ReplayWindow(), ...opts }));

  t.test('ERR_BLOB_TRUNCATED', async (t) => {
    let bad = 0;
    for (let n = 0; n < enc.length; n++) if (decode(enc.subarray(0, n)) !== 'ERR_BLOB_TRUNCATED') bad++;
    t.equal(bad, 0, `every prefix of the ${enc.length} bytes is truncated`);
    t.equal(decode(Buffer.concat([enc, Buffer.from([0])])), 'ERR_BLOB_TRUNCATED', 'a byte after the MAC');
    const longer = Buffer.from(enc);
    longer.writeUInt32BE(enc.readUInt32BE(1) + 1, 1);
    t.equal(decode(longer), 'ERR_BLOB_TRUNCATED', 'length field larger than the buffer');
    const huge = Buffer.from(enc);
    huge.writeUInt32BE(0xffffffff, 1);
    t.equal(decode(huge), 'ERR_BLOB_TRUNCATED', 'absurd length field');
  });

  t.test('ERR_BLOB_VERSION', async (t) => {
    for (const v of [0, 2, 255]) {
      const b = Buffer.from(enc);
      b[0] = v;
      t.equal(decode(b), 'ERR_BLOB_VERSION', `frame version ${v}`);
    }
    const plain = { ...goldenBlob(), v: 2 };
    t.equal(decode(frameRaw(packRaw(plain))), 'ERR_BLOB_VERSION', 'authenticated body with v: 2');
  });

  t.test('ERR_BLOB_MAC', async (t) => {
    t.equal(blobErrorCode(() => decodeBlob(enc, Buffer.alloc(32, 1), { now: CREATED, replay: new ReplayWindow() })),
      'ERR_BLOB_MAC', 'wrong key');
    let notMac = 0;
    // Every single-bit flip after the header (body and MAC).
    for (let i = 5; i < enc.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const b = Buffer.from(enc);
        b[i] ^= 1 << bit;
        if (decode(b) !== 'ERR_BLOB_MAC') notMac++;
      }
    }
    t.equal(notMac, 0, 'every bit flip in body or MAC fails the MAC');
    const zeroMac = (b: Buffer) => b.fill(0, b.length - 32);
    t.equal(decode(zeroMac(frameRaw(packRaw(goldenBlob())))), 'ERR_BLOB_MAC', 'zeroed MAC');
  });

  t.test('ERR_BLOB_STALE', async (t) => {
    t.equal(decode(enc, { now: CREATED + 5000 }), 'no error', 'exactly maxAgeMs old is accepted');
    t.equal(decode(enc, { now: CREATED + 5001 }), 'ERR_BLOB_STALE', 'older than maxAgeMs (default 5000)');
    t.equal(decode(enc, { now: CREATED + 101, maxAgeMs: 100 }), 'ERR_BLOB_STALE', 'custom maxAgeMs');
    t.equal(decode(enc, { now: CREATED - 1000 }), 'no error', '1 s in the future is tolerated');
    t.equal(decode(enc, { now: CREATED - 1001 }), 'ERR_BLOB_STALE', 'further in the future');
  });

  t.test('ERR_BLOB_REPLAY', async (t) => {
    const replay = new ReplayWindow();
    t.equal(decode(enc, { replay }), 'no error');
    t.equal(decode(enc, { replay, now: CREATED + 4000 }), 'ERR_BLOB_REPLAY', 'same blob again');
    const other = encodeBlob({ ...goldenBlob(), nonce: Buffer.alloc(16, 9) }, KEY);
    t.equal(decode(other, { replay }), 'no error', 'another nonce is fine');
    // Refused blobs do not consume their nonce.
    const w2 = new ReplayWindow();
    const forged = Buffer.from(enc);
    forged[forged.length - 1] ^= 1;
    t.equal(decode(forged, { replay: w2 }), 'ERR_BLOB_MAC');
    t.equal(decode(enc, { replay: w2, now: CREATED + 6000 }), 'ERR_BLOB_STALE');
    t.equal(w2.size, 0, 'nothing remembered from refused blobs');
    t.equal(decode(enc, { replay: w2 }), 'no error', 'the genuine blob is still accepted');
  });

  t.test('ERR_BLOB_SCHEMA', async (t) => {
    const plain = () => ({ ...goldenBlob(), decision: { ...goldenBlob().decision } }) as Record<string, any>;
    const cases: [string, (o: Record<string, any>) => unknown][] = [];
    for (const f of BLOB_FIELDS) {
      if (f === 'v') continue;
      cases.push([`missing ${f}`, (o) => { delete o[f]; return o; }]);
    }
    const wrongType: Record<string, unknown[]> = {
      flowId: ['1', 1.5, -1, 0x1000000, null, true],
      clientIp: [1, '198.51.100', '::1', '256.1.1.1', '01.2.3.4', '', null],
      clientPort: [0, 65536, '80', 1.5],
      vip: [null, 'vip', '2001:db8::1'],
      vipPort: [0, 70000, -80],
      iss: [-1, 2 ** 32, 1.5, '1', 10n],
      irs: [2 ** 32, null],
      sndNxt: [2 ** 33, 'x'],
      rcvNxt: [-1, 2 ** 32],
      sndWnd: [2 ** 32, -1],
      rcvWnd: [1.25, false],
      sndWscale: [15, -1, '7'],
      rcvWscale: [255, 1.5],
      mss: [0, 47, 65536, '1460'],
      sackOk: [1, 'true', null],
      tsOk: [0, undefined],
      tsVal: [2 ** 32, -5],
      tsEcr: [NaN, Infinity],
      data: ['GET /', [71, 69, 84], null, 5],
      decision: [null, 'shop', [], Buffer.alloc(3)],
      created: [-1, 1.5, '1700000000000', 2 ** 53, new Date(CREATED)],
      nonce: [Buffer.alloc(15), Buffer.alloc(17), 'f0e1d2c3b4a5968778695a4b3c2d1e0f', null],
    };
    for (const [f, values] of Object.entries(wrongType)) {
      for (const v of values) cases.push([`${f} = ${typeof v === 'bigint' ? `${v}n` : JSON.stringify(v)}`, (o) => { o[f] = v; return o; }]);
    }
    cases.push(
      ['unknown field', (o) => ({ ...o, extra: 1 })],
      ['unknown decision field', (o) => { o.decision.weight = 1; return o; }],
      ['decision.rule = ""', (o) => { o.decision.rule = ''; return o; }],
      ['decision.rule = 7', (o) => { o.decision.rule = 7; return o; }],
      ['decision.pool missing', (o) => { delete o.decision.pool; return o; }],
      ['decision.host = null', (o) => { o.decision.host = null; return o; }],
      ['decision.pool too long', (o) => { o.decision.pool = 'p'.repeat(257); return o; }],
      ['rcvNxt inconsistent with irs + data', (o) => { o.rcvNxt = (o.rcvNxt + 1) >>> 0; return o; }],
      ['data shorter than rcvNxt says', (o) => { o.data = o.data.subarray(1); return o; }],
      ['root is an array', () => [1, 2, 3]],
      ['root is a string', () => 'blob'],
      ['root is null', () => null],
    );
    for (const [name, mutate] of cases) {
      const body = mutate(plain());
      let packed: Buffer;
      try {
        packed = packRaw(body);
      } catch {
        continue; // not representable in msgpack (undefined at root etc.)
      }
      t.equal(decode(frameRaw(packed)), 'ERR_BLOB_SCHEMA', `decode: ${name}`);
      if (body !== null && typeof body === 'object' && !Array.isArray(body)) {
        t.equal(blobErrorCode(() => encodeBlob(body as ConnectionBlob, KEY)), 'ERR_BLOB_SCHEMA', `encode: ${name}`);
      }
    }
    t.equal(decode(frameRaw(Buffer.from([0xc1]))), 'ERR_BLOB_SCHEMA', 'body is not msgpack (0xc1)');
    t.equal(decode(frameRaw(Buffer.concat([packRaw(plain()), Buffer.from([0])]))), 'ERR_BLOB_SCHEMA', 'bytes after the msgpack value');
    t.equal(decode(frameRaw(Buffer.alloc(0))), 'ERR_BLOB_SCHEMA', 'empty body');
    t.equal(decode(frameRaw(packRaw({ ...plain(), __proto__x: 1 }))), 'ERR_BLOB_SCHEMA', 'odd extra key');
  });

  t.test('status codes for a host', async (t) => {
    t.equal(statusForBlobError('ERR_BLOB_MAC'), Status.BAD_MAC);
    t.equal(statusForBlobError('ERR_BLOB_STALE'), Status.STALE);
    t.equal(statusForBlobError('ERR_BLOB_REPLAY'), Status.REPLAY);
    t.equal(statusForBlobError('ERR_BLOB_SCHEMA'), Status.SCHEMA);
    t.equal(statusForBlobError('ERR_BLOB_VERSION'), Status.BAD_VERSION);
    t.equal(statusForBlobError('ERR_BLOB_TRUNCATED'), Status.TRUNCATED);
    t.equal(statusName(Status.WRONG_VIP), 'WRONG_VIP');
    t.equal(statusName(999), 'STATUS_999');
  });
});

t.test('ReplayWindow: bounded, never forgets a live nonce', async (t) => {
  const w = new ReplayWindow({ maxAgeMs: 1000, maxEntries: 100 });
  const nonce = (i: number) => {
    const b = Buffer.alloc(16);
    b.writeUInt32BE(i, 12);
    return b;
  };
  let admitted = 0;
  for (let i = 0; i < 1000; i++) if (w.admit(nonce(i), 5000 + i, 5000 + i)) admitted++;
  t.equal(admitted, 1000, 'distinct fresh nonces are admitted');
  t.equal(w.size, 100, 'capped at maxEntries');
  t.equal(w.stats.evicted, 900);
  let replays = 0;
  for (let i = 0; i < 1000; i++) if (!w.admit(nonce(i), 5000 + i, 6000)) replays++;
  t.equal(replays, 1000, 'every earlier nonce is refused, evicted ones through the horizon');
  t.ok(w.stats.horizonRefusals > 0 && w.stats.replays > 0, 'both mechanisms used');
  t.notOk(w.admit(nonce(5000), 5000 + 899, 6000), 'a new nonce older than the horizon is refused (could be a replay)');
  t.ok(w.admit(nonce(5001), 6000, 6000), 'a newer blob is accepted');
  w.expire(6999.5); // the oldest survivors were created at 5999, the newest at 6000
  t.equal(w.size, 1, 'expired entries are dropped once their blobs are stale');
  w.expire(7001);
  t.equal(w.size, 0);

  // A nonce is remembered until its blob is stale: the boundary.
  const w2 = new ReplayWindow({ maxAgeMs: 1000 });
  t.ok(w2.admit(nonce(1), 0, 0));
  t.notOk(w2.admit(nonce(1), 0, 1000), 'still remembered at exactly maxAgeMs');
  w2.expire(1001);
  t.equal(w2.size, 0, 'forgotten once a replay would be stale');

  // Memory stays bounded under a flood.
  const w3 = new ReplayWindow({ maxAgeMs: 5000, maxEntries: 1000 });
  for (let i = 0; i < 200_000; i++) w3.admit(nonce(i), i / 100, i / 100);
  t.ok(w3.size <= 1000, `size ${w3.size} <= 1000 after 200000 nonces`);
  t.throws(() => new ReplayWindow({ maxEntries: 0 }), RangeError);
});

t.test('datagrams: round trips', async (t) => {
  const payload = Buffer.from('x'.repeat(100));
  const data = mustDecode(encodeData({ ...IDS, index: 2, count: 3, totalLength: 250, fragmentSize: 100, payload: payload.subarray(0, 50) }));
  t.match(data, { type: 'data', session: IDS.session, blobId: 42, index: 2, count: 3, totalLength: 250, fragmentSize: 100 });
  t.equal((data as { payload: Buffer }).payload.length, 50);

  const bm = new Uint8Array(2);
  bm[0] = 0b1010_0101;
  bm[1] = 0xff; // bits past count 10 are cleared by the encoder
  const ack = mustDecode(encodeAck({ ...IDS, count: 10, bitmap: bm }));
  t.match(ack, { type: 'ack', count: 10, held: 6 });
  t.same([...(ack as { bitmap: Buffer }).bitmap], [0b1010_0101, 0b11]);
  t.equal(encodeAck({ ...IDS, count: MAX_FRAGMENTS, bitmap: new Uint8Array(128).fill(255) }).length, 24 + 128,
    'largest ACK: 1024 fragments in 128 bytes');

  t.same(mustDecode(encodeFinal({ ...IDS, status: Status.OK })), { type: 'final', ...IDS, status: 0 });
  t.same(mustDecode(encodeFinal({ ...IDS, status: Status.WRONG_VIP })), { type: 'final', ...IDS, status: 4 });
  t.same(mustDecode(encodeError({ ...IDS, status: Status.BUSY })), { type: 'error', ...IDS, status: 64 });
  t.same(mustDecode(encodeFinal({ session: 0xffffffff, blobId: 0xffffffff, status: 0xffff })),
    { type: 'final', session: 0xffffffff, blobId: 0xffffffff, status: 0xffff }, 'extreme ids');

  const one = encodeData({ ...IDS, index: 0, count: 1, totalLength: 1, fragmentSize: 1400, payload: Buffer.from('z') });
  t.equal(one.length, 33, 'DATA header is 32 bytes');
  t.equal(one.readUInt32BE(0), 0x484f4646, 'magic HOFF');

  // Encoders refuse what a decoder would refuse: bugs throw.
  const bad: [string, () => unknown][] = [
    ['count mismatch', () => encodeData({ ...IDS, index: 0, count: 2, totalLength: 100, fragmentSize: 100, payload: Buffer.alloc(100) })],
    ['index out of range', () => encodeData({ ...IDS, index: 1, count: 1, totalLength: 10, fragmentSize: 100, payload: Buffer.alloc(10) })],
    ['payload length', () => encodeData({ ...IDS, index: 0, count: 1, totalLength: 10, fragmentSize: 100, payload: Buffer.alloc(9) })],
    ['fragment size', () => encodeData({ ...IDS, index: 0, count: 1, totalLength: 10, fragmentSize: 10, payload: Buffer.alloc(10) })],
    ['total too large', () => encodeData({ ...IDS, index: 0, count: 1, totalLength: MAX_TOTAL_LENGTH + 1, fragmentSize: 8000, payload: Buffer.alloc(10) })],
    ['ack count 0', () => encodeAck({ ...IDS, count: 0, bitmap: new Uint8Array(1) })],
    ['ack bitmap short', () => encodeAck({ ...IDS, count: 17, bitmap: new Uint8Array(2) })],
    ['status', () => encodeFinal({ ...IDS, status: 65536 })],
    ['session', () => encodeFinal({ session: -1, blobId: 0, status: 0 })],
  ];
  for (const [name, fn] of bad) t.throws(fn, { code: 'ERR_INVALID_ARG_VALUE' }, name);
});

t.test('datagrams: malformed input gives error codes, never throws', async (t) => {
  const blob = randomBytes(prng(3), 250);
  const samples: [string, Buffer][] = [
    ['DATA', fragments(blob)[1]],
    ['last DATA', fragments(blob)[2]],
    ['ACK', encodeAck({ ...IDS, count: 13, bitmap: Uint8Array.from([0x0f, 0x11]) })],
    ['FINAL', encodeFinal({ ...IDS, status: 3 })],
    ['ERROR', encodeError({ ...IDS, status: Status.BUSY })],
  ];
  for (const [name, buf] of samples) {
    t.equal(errorOf(buf), 'ok', `${name} decodes`);
    const wrong: number[] = [];
    for (let n = 0; n < buf.length; n++) if (errorOf(buf.subarray(0, n)) !== 'ERR_DGRAM_TRUNCATED') wrong.push(n);
    t.same(wrong, [], `${name}: every truncation (0..${buf.length - 1} bytes) is ERR_DGRAM_TRUNCATED`);
    t.equal(errorOf(Buffer.concat([buf, Buffer.from([0])])), 'ERR_DGRAM_LENGTH', `${name}: a trailing byte`);

    // Every single-bit flip is refused; outside the fields that decide how
    // to parse (magic, version, type, lengths) it is the CRC that catches it.
    const accepted: number[] = [];
    let crcCaught = 0;
    for (let i = 0; i < buf.length; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const b = Buffer.from(buf);
        b[i] ^= 1 << bit;
        const e = errorOf(b);
        if (e === 'ok') accepted.push(i * 8 + bit);
        if (e === 'ERR_DGRAM_CRC') crcCaught++;
      }
    }
    t.same(accepted, [], `${name}: no single-bit flip is accepted`);
    t.ok(crcCaught >= (buf.length - 12) * 8, `${name}: the CRC catches flips in CRC, ids and body (${crcCaught})`);

    const magic = Buffer.from(buf);
    magic.write('HOFX', 0, 'latin1');
    t.equal(errorOf(magic), 'ERR_DGRAM_MAGIC', `${name}: bad magic`);
    for (const v of [0, 2, 255]) {
      const b = Buffer.from(buf);
      b[4] = v;
      t.equal(errorOf(reseal(b)), 'ERR_DGRAM_VERSION', `${name}: version ${v}`);
    }
    for (const ty of [0, 8, 255]) {
      const b = Buffer.from(buf);
      b[5] = ty;
      t.equal(errorOf(reseal(b)), 'ERR_DGRAM_TYPE', `${name}: type ${ty}`);
    }
    const crc = Buffer.from(buf);
    crc.writeUInt32BE((crc.readUInt32BE(8) ^ 0x80000000) >>> 0, 8);
    t.equal(errorOf(crc), 'ERR_DGRAM_CRC', `${name}: bad CRC`);
    const reserved = Buffer.from(buf);
    reserved.writeUInt16BE(1, 6);
    t.equal(errorOf(reseal(reserved)), 'ERR_DGRAM_BOUNDS', `${name}: reserved bits (with a valid CRC)`);
  }

  // Absurd fields, each with a valid CRC so the range checks are what refuses them.
  const data = fragments(blob)[0]; // 100 of 250 bytes, fragment size 100
  const edit = (f: (b: Buffer) => void, base = data) => {
    const b = Buffer.from(base);
    f(b);
    return errorOf(reseal(b));
  };
  const absurd: [string, (b: Buffer) => void][] = [
    ['count 0', (b) => b.writeUInt16BE(0, 22)],
    ['count 1025', (b) => b.writeUInt16BE(1025, 22)],
    ['count 65535', (b) => b.writeUInt16BE(65535, 22)],
    ['count disagrees with total / fragment size', (b) => b.writeUInt16BE(4, 22)],
    ['index = count', (b) => b.writeUInt16BE(3, 20)],
    ['index 65535', (b) => b.writeUInt16BE(65535, 20)],
    ['total 0', (b) => b.writeUInt32BE(0, 24)],
    ['total 1 MiB + 1', (b) => b.writeUInt32BE(MAX_TOTAL_LENGTH + 1, 24)],
    ['total 4 GiB', (b) => b.writeUInt32BE(0xffffffff, 24)],
    ['total disagrees with count', (b) => b.writeUInt32BE(400, 24)],
    ['fragment size 0', (b) => b.writeUInt16BE(0, 28)],
    ['fragment size 63', (b) => b.writeUInt16BE(63, 28)],
    ['fragment size 65535', (b) => b.writeUInt16BE(65535, 28)],
    ['fragment size disagrees with the payload', (b) => b.writeUInt16BE(99, 28)],
  ];
  for (const [name, f] of absurd) t.equal(edit(f), 'ERR_DGRAM_BOUNDS', `DATA: ${name}`);
  t.equal(edit((b) => b.writeUInt16BE(99, 30)), 'ERR_DGRAM_LENGTH', 'DATA: payload length below the datagram length');
  t.equal(edit((b) => b.writeUInt16BE(65535, 30)), 'ERR_DGRAM_TRUNCATED', 'DATA: payload length 65535');
  // Payload length consistent with the datagram, but not with the fragment's position.
  const short = reseal(Buffer.concat([data.subarray(0, 32), data.subarray(32, 131)]));
  short.writeUInt16BE(99, 30);
  t.equal(errorOf(reseal(short)), 'ERR_DGRAM_BOUNDS', 'DATA: a non-last fragment shorter than the fragment size');

  const ack = encodeAck({ ...IDS, count: 13, bitmap: Uint8Array.from([0x0f, 0x11]) });
  t.equal(edit((b) => b.writeUInt16BE(7, 22), ack), 'ERR_DGRAM_BOUNDS', 'ACK: held disagrees with the bitmap');
  t.equal(edit((b) => { b[25] |= 0x80; b.writeUInt16BE(7, 22); }, ack), 'ERR_DGRAM_BOUNDS', 'ACK: bit past count');
  t.equal(edit((b) => b.writeUInt16BE(12, 20), ack), 'ERR_DGRAM_BOUNDS', 'ACK: count 12, fragment 12 now a padding bit');
  const ack0 = Buffer.from(encodeFinal({ ...IDS, status: 0 }));
  ack0[5] = 2; // an ACK with count 0 and no bitmap
  t.equal(errorOf(reseal(ack0)), 'ERR_DGRAM_BOUNDS', 'ACK: count 0');
  const big = Buffer.alloc(24 + 8192);
  big.set(ack.subarray(0, 24));
  big.writeUInt16BE(65535, 20);
  t.equal(errorOf(reseal(big)), 'ERR_DGRAM_BOUNDS', 'ACK: count 65535');
  t.equal(edit((b) => b.writeUInt16BE(1, 22), encodeFinal({ ...IDS, status: 0 })), 'ERR_DGRAM_BOUNDS', 'FINAL: reserved');

  // Fuzz: random buffers and random mutations of valid ones.
  const rand = prng(4);
  const counts: Record<string, number> = {};
  for (let i = 0; i < 20_000; i++) {
    let b: Buffer;
    if (i % 2) {
      b = randomBytes(rand, (rand() * 64) | 0);
      if (rand() < 0.5 && b.length >= 6) { b.writeUInt32BE(0x484f4646, 0); b[4] = 1; b[5] = 1 + ((rand() * 4) | 0); }
      if (rand() < 0.5 && b.length >= 12) b = reseal(b);
    } else {
      b = Buffer.from(samples[(rand() * samples.length) | 0][1]);
      const flips = 1 + ((rand() * 8) | 0);
      for (let k = 0; k < flips; k++) b[(rand() * b.length) | 0] ^= 1 << ((rand() * 8) | 0);
      if (rand() < 0.3) b = reseal(b);
      if (rand() < 0.2) b = b.subarray(0, (rand() * b.length) | 0);
    }
    let r: Datagram | DatagramError;
    try {
      r = decodeDatagram(b);
    } catch (err) {
      t.fail(`decodeDatagram threw on ${b.toString('hex')}: ${(err as Error).message}`);
      continue;
    }
    const k = isDatagramError(r) ? r.error : `ok ${r.type}`;
    counts[k] = (counts[k] ?? 0) + 1;
  }
  t.ok(Object.keys(counts).length >= 6, `fuzz reached many outcomes: ${JSON.stringify(counts)}`);
  t.equal(errorOf('not a buffer' as unknown as Buffer), 'ERR_DGRAM_TRUNCATED', 'a non-buffer');
});

t.test('reassembly', async (t) => {
  const blob = randomBytes(prng(5), 1234);
  const frags = fragments(blob); // 13 fragments

  t.test('duplicates and reordering: complete exactly once', async (t) => {
    const r = new Reassembler();
    const order = [12, 3, 3, 0, 7, 1, 12, 2, 4, 5, 6, 8, 9, 10, 11];
    const results: ReceiveResult[] = order.map((i) => r.receive(LB, frags[i], 0));
    t.equal(results.filter((x) => x.kind === 'complete').length, 1, 'one complete');
    const done = results[results.length - 1];
    t.equal(done.kind, 'complete', 'the last missing fragment completes it');
    if (done.kind !== 'complete') return;
    t.same(done.blob, blob, 'same bytes');
    t.match(done.ref, { sender: LB, session: IDS.session, blobId: 42 });
    t.match(mustDecode(done.reply), { type: 'ack', count: 13, held: 13 }, 'full ACK');
    t.equal(r.stats.duplicateFragments, 2);
    const ackAfter3 = mustDecode((results[1] as { reply: Buffer }).reply);
    t.match(ackAfter3, { type: 'ack', held: 2 }, 'ACK lists fragments held');
    t.same([...(ackAfter3 as { bitmap: Buffer }).bitmap], [0b1000, 0b1_0000], 'fragments 3 and 12');

    // Duplicates after completion: full ACK until finish(), then the FINAL.
    const dup = r.receive(LB, frags[5], 1);
    t.match(dup, { kind: 'already-complete', status: null });
    t.match(mustDecode((dup as { reply: Buffer }).reply), { type: 'ack', held: 13 });
    const fin = r.finish(done.ref, Status.OK);
    t.same(mustDecode(fin), { type: 'final', ...IDS, status: 0 });
    for (const f of frags) {
      const again = r.receive(LB, f, 2);
      t.match(again, { kind: 'already-complete', status: 0 });
      t.same((again as { reply: Buffer }).reply, fin, 'the same FINAL again');
    }
    t.equal(r.stats.completed, 1);
    t.equal(r.inProgress.bytes, 0, 'no bytes held after completion');
  });

  t.test('corrupted fragments are counted and never used', async (t) => {
    const r = new Reassembler();
    let complete: Buffer | undefined;
    for (const [i, f] of frags.entries()) {
      const bad = Buffer.from(f);
      bad[40 + (i % 50)] ^= 0x04; // payload bit
      t.match(r.receive(LB, bad, 0), { kind: 'dropped', reason: 'ERR_DGRAM_CRC' });
      const res = r.receive(LB, f, 0);
      if (res.kind === 'complete') complete = res.blob;
    }
    t.equal(r.stats.bad.ERR_DGRAM_CRC, 13);
    t.same(complete, blob, 'only good bytes in the blob');
    t.match(r.receive(LB, encodeFinal({ ...IDS, status: 0 }), 0), { kind: 'dropped', reason: 'ERR_NOT_DATA' });
  });

  t.test('fragments must agree with the first one', async (t) => {
    const r = new Reassembler();
    r.receive(LB, frags[0], 0);
    const other = fragments(randomBytes(prng(6), 1300))[1]; // same ids, other total
    t.match(r.receive(LB, other, 0), { kind: 'dropped', reason: 'ERR_INCONSISTENT' });
    const otherSize = fragments(blob.subarray(0, 1234), 200)[1];
    t.match(r.receive(LB, otherSize, 0), { kind: 'dropped', reason: 'ERR_INCONSISTENT' });
    t.equal(r.stats.inconsistent, 2);
    // Same blob id from another sender or session is another blob.
    t.match(r.receive({ ip: '10.0.0.9', port: LB.port }, frags[1], 0), { kind: 'partial' });
    t.match(r.receive(LB, fragments(blob, 100, { session: 7, blobId: 42 })[1], 0), { kind: 'partial' });
    t.equal(r.inProgress.blobs, 3);
  });

  t.test('memory bounds and expiry', async (t) => {
    const r = new Reassembler({ maxBlobs: 3, maxBytes: 5000, maxBlobsPerSender: 2, partialTimeoutMs: 100, completedTtlMs: 1000, maxCompleted: 2 });
    const id = (blobId: number) => ({ session: 1, blobId });
    t.match(r.receive(LB, fragments(blob, 100, id(1))[0], 0), { kind: 'partial' });
    t.match(r.receive(LB, fragments(blob, 100, id(2))[0], 0), { kind: 'partial' });
    const busy = r.receive(LB, fragments(blob, 100, id(3))[0], 0);
    t.match(busy, { kind: 'refused', status: Status.BUSY }, 'per-sender limit');
    t.match(mustDecode((busy as { reply: Buffer }).reply), { type: 'error', blobId: 3, status: Status.BUSY });
    const other: Endpoint = { ip: '10.0.0.5', port: 1 };
    t.match(r.receive(other, fragments(blob, 100, id(3))[0], 0), { kind: 'partial' });
    t.match(r.receive({ ip: '10.0.0.6', port: 1 }, fragments(blob, 100, id(4))[0], 0),
      { kind: 'refused', status: Status.BUSY }, 'maxBlobs');
    t.equal(r.inProgress.bytes, 3 * 1234);
    t.match(r.receive(other, fragments(randomBytes(prng(7), 6000), 1000, id(9))[0], 0),
      { kind: 'refused', status: Status.TOO_LARGE }, 'larger than maxBytes');

    // Progress keeps a partial alive; silence expires it.
    t.match(r.receive(LB, fragments(blob, 100, id(1))[1], 80), { kind: 'partial' });
    r.expire(150);
    t.equal(r.inProgress.blobs, 1, 'the two silent partials expired');
    t.equal(r.stats.expiredPartial, 2);
    t.equal(r.inProgress.bytes, 1234, 'their bytes released');
    const big = fragments(randomBytes(prng(8), 3000), 1000, id(5));
    t.match(r.receive(other, big[0], 150), { kind: 'partial' }, 'room again');
    t.match(r.receive({ ip: '10.0.0.7', port: 1 }, fragments(blob, 100, id(6))[0], 150),
      { kind: 'refused', status: Status.BUSY }, 'maxBytes: 1234 + 3000 + 1234 > 5000');
    t.equal(r.stats.refusedBusy, 3);
    t.equal(r.stats.refusedTooLarge, 1);

    // Completed ids: bounded count and TTL.
    for (const [i, f] of big.entries()) if (i) r.receive(other, f, 160);
    const small = (blobId: number) => fragments(Buffer.from('tiny'), 100, id(blobId))[0];
    r.receive(other, small(10), 170);
    r.receive(other, small(11), 170);
    t.equal(r.stats.completed, 3);
    t.equal(r.stats.evictedCompleted, 1, 'maxCompleted 2');
    t.match(r.receive(other, small(11), 171), { kind: 'already-complete' });
    t.match(r.receive(other, big[0], 171), { kind: 'partial' }, 'an evicted id starts again (the replay window guards injection)');
    r.expire(1171);
    t.equal(r.stats.expiredCompleted, 2, 'completed ids expire after completedTtlMs');
    t.match(r.receive(other, small(11), 1172), { kind: 'complete' });
  });
});

t.test('sender: a silent host is given up after maxAttempts, with the computed back-off', async (t) => {
  for (const [jitter, seed] of [[0, 1], [0.2, 11], [0.2, 12]] as const) {
    const clock = { now: 1000 };
    const sent: Buffer[] = [];
    const sender = new BlobSender({ send: (_d, b) => sent.push(b), now: () => clock.now, jitter, random: prng(seed), session: 1 });
    const results: TransferResult[] = [];
    sender.send(HOST, randomBytes(prng(9), 3000), (r) => results.push(r)); // 3 fragments
    const end = runSender(sender, clock);
    // Expected wait: 8 timers of min(3 * 2^k, 200) ms, each scaled by the jitter
    // factor drawn from the same seeded sequence.
    const rand = prng(seed);
    let wait = 0;
    for (let k = 0; k < 8; k++) wait += Math.min(3 * 2 ** k, 200) * (1 + jitter * (2 * rand() - 1));
    if (jitter === 0) t.equal(wait, 581, 'without jitter: 3+6+12+24+48+96+192+200');
    t.same(results, [{ ok: false, code: 'ERR_TRANSFER_GAVE_UP', rounds: 8, hostHadBlob: false }]);
    t.ok(Math.abs(end - 1000 - wait) < 1e-9, `gave up after ${(end - 1000).toFixed(3)} ms, expected ${wait.toFixed(3)} (jitter ${jitter})`);
    t.equal(sent.length, 8 * 3, '8 rounds of 3 fragments');
    t.match(sender.stats, { sent: 24, fragments: 3, retransmitted: 21, gaveUp: 1, failed: 1, completed: 0 });
    t.equal(sender.nextDeadline(), undefined, 'nothing left scheduled');
  }
});

t.test('sender: the first timer follows the host\'s measured round trips (RFC 6298, Karn)', async (t) => {
  const clock = { now: 0 };
  const sent: Datagram[] = [];
  const sender = new BlobSender({ send: (_d, b) => sent.push(mustDecode(b)), now: () => clock.now, jitter: 0, session: 3 });
  const results: TransferResult[] = [];
  t.equal(sender.rtoFor(HOST), 3, 'an unmeasured host starts at initialRtoMs');
  // A busy host: every FINAL comes 20 ms after the blob.
  const oneTransfer = () => {
    const before = sent.length;
    sender.send(HOST, randomBytes(prng(4), 100), (r) => results.push(r));
    const d = sent[before] as { blobId: number };
    const start = clock.now;
    while (clock.now < start + 20) {
      clock.now += 1;
      sender.tick(clock.now);
    }
    sender.onDatagram(HOST, encodeFinal({ session: 3, blobId: d.blobId, status: Status.OK }));
    sender.tick(clock.now);
    return sent.length - before;
  };
  const first = oneTransfer();
  t.ok(first > 1, `with the 3 ms timer the first transfer was sent ${first} times before its FINAL`);
  const backedOff = sender.rtoFor(HOST);
  t.ok(backedOff >= 12, `retransmitted, it gives no sample (Karn), but the host's timer stays backed off: ${backedOff} ms`);
  let tries = 1;
  while (oneTransfer() > 1 && tries < 4) tries++;
  t.ok(tries <= 3, `so within ${tries} transfers one to the slow host is sent once (each timeout doubles the kept timer)`);
  t.ok(sender.rtoFor(HOST) >= 20, `and its clean 20 ms sample sets the timer: ${sender.rtoFor(HOST)} ms`);
  // A fast answer brings it down again, never below initialRtoMs.
  for (let i = 0; i < 30; i++) {
    sender.send(HOST, randomBytes(prng(5 + i), 100), (r) => results.push(r));
    const d = sent.at(-1) as { blobId: number };
    clock.now += 2;
    sender.onDatagram(HOST, encodeFinal({ session: 3, blobId: d.blobId, status: Status.OK }));
  }
  t.ok(sender.rtoFor(HOST) >= 3 && sender.rtoFor(HOST) < 8, `steady 2 ms answers: timer ${sender.rtoFor(HOST).toFixed(2)} ms (floor initialRtoMs)`);
  // Now the host slows to 20 ms, answering transfers sent once only when the timer allows.
  const small = new BlobSender({ send: (_d, b) => sent.push(mustDecode(b)), now: () => clock.now, jitter: 0, session: 3, initialRtoMs: 30 });
  for (let i = 0; i < 5; i++) {
    small.send(HOST, randomBytes(prng(6 + i), 100), (r) => results.push(r));
    const x = sent.at(-1) as { blobId: number };
    clock.now += 20;
    small.onDatagram(HOST, encodeFinal({ session: 3, blobId: x.blobId, status: Status.OK }));
  }
  t.ok(small.rtoFor(HOST) >= 30, `a steady 20 ms host under a 30 ms floor: ${small.rtoFor(HOST)} ms`);
  const big = new BlobSender({ send: (_d, b) => sent.push(mustDecode(b)), now: () => clock.now, jitter: 0, session: 3, initialRtoMs: 1, maxRtoMs: 200 });
  for (let i = 0; i < 8; i++) {
    big.send(HOST, randomBytes(prng(20 + i), 100), (r) => results.push(r));
    const x = sent.at(-1) as { blobId: number };
    clock.now += 0.5; // answered within the 1 ms timer: sent once, a sample
    big.onDatagram(HOST, encodeFinal({ session: 3, blobId: x.blobId, status: Status.OK }));
  }
  const settled = big.rtoFor(HOST);
  t.ok(settled >= 1 && settled < 3, `steady 0.5 ms answers settle the timer near them: ${settled.toFixed(3)} ms`);
  for (let i = 0; i < 6; i++) {
    big.send(HOST, randomBytes(prng(40 + i), 100), (r) => results.push(r));
    const x = sent.at(-1) as { blobId: number };
    clock.now += settled * 0.9; // slower, still within the timer
    big.onDatagram(HOST, encodeFinal({ session: 3, blobId: x.blobId, status: Status.OK }));
  }
  t.ok(big.rtoFor(HOST) > settled, `slower answers raise it: ${big.rtoFor(HOST).toFixed(3)} ms`);
  t.ok(results.every((r) => r.ok), 'every transfer completed');
});

t.test('sender: retransmits only what the latest ACK lacks, probes for a lost FINAL', async (t) => {
  const clock = { now: 0 };
  const sent: Datagram[] = [];
  const sender = new BlobSender({ send: (_d, b) => sent.push(mustDecode(b)), now: () => clock.now, jitter: 0, session: 5 });
  const results: TransferResult[] = [];
  const id = sender.send(HOST, randomBytes(prng(10), 1400 * 4 + 10), (r) => results.push(r));
  t.equal(sent.length, 5, 'all 5 fragments sent at once');
  const ack = (indices: number[]) => {
    const bm = new Uint8Array(1);
    for (const i of indices) bm[0] |= 1 << i;
    return encodeAck({ session: 5, blobId: id, count: 5, bitmap: bm });
  };
  clock.now = 1;
  sender.onDatagram(HOST, ack([0, 2, 4]));
  t.equal(sender.nextDeadline(), 0 + 3, 'the old entry is still the earliest');
  clock.now = 3;
  sender.tick();
  t.equal(sent.length, 5, 'progress at t=1 moved the timer to t=4');
  clock.now = 4;
  sender.tick();
  t.same(sent.slice(5).map((d) => (d as { index: number }).index), [1, 3], 'only the missing fragments again');
  // Everything acknowledged, no FINAL: a single probe per timer.
  clock.now = 5;
  sender.onDatagram(HOST, ack([0, 1, 2, 3, 4]));
  sent.length = 0;
  clock.now = 8;
  sender.tick();
  t.same(sent.map((d) => (d as { index: number }).index), [4], 'probe with the last fragment');
  t.equal(sender.stats.probes, 1);
  // Answers from elsewhere or for others are counted and ignored.
  sender.onDatagram({ ip: '10.9.9.9', port: 4790 }, encodeFinal({ session: 5, blobId: id, status: 0 }));
  sender.onDatagram(HOST, encodeFinal({ session: 6, blobId: id, status: 0 }));
  sender.onDatagram(HOST, Buffer.from('garbage'));
  sender.onDatagram(HOST, encodeAck({ session: 5, blobId: id, count: 4, bitmap: new Uint8Array(1) }));
  t.match(sender.stats, { misaddressed: 1, unknown: 1, badDatagrams: 2 });
  t.same(results, []);
  const id2 = sender.send(HOST, Buffer.from('lost final'), (r) => results.push(r));
  sender.onDatagram(HOST, encodeAck({ session: 5, blobId: id2, count: 1, bitmap: Uint8Array.of(1) }));
  clock.now = 9.5;
  sender.onDatagram(HOST, encodeFinal({ session: 5, blobId: id, status: 0 }));
  t.same(results, [{ ok: true, rttMs: 9.5, queuedMs: 0, rounds: 3 }]);
  sender.onDatagram(HOST, encodeFinal({ session: 5, blobId: id, status: 0 }));
  t.equal(sender.stats.unknown, 2, 'a duplicate FINAL is a late answer');
  t.equal(results.length, 1, 'one result');
  runSender(sender, clock);
  t.same(results[1], { ok: false, code: 'ERR_TRANSFER_GAVE_UP', rounds: 8, hostHadBlob: true },
    'giving up after a full ACK says the host may have injected it');
  t.equal(results.length, 2, 'no timer left');
});

t.test('sender: refusals, queueing, cancel, size limits', async (t) => {
  const clock = { now: 0 };
  const out: [Endpoint, Datagram][] = [];
  const sender = new BlobSender({
    send: (d, b) => out.push([d, mustDecode(b)]), now: () => clock.now, session: 9, maxInFlightPerHost: 2, maxQueuedPerHost: 1,
  });
  const results = new Map<number, TransferResult>();
  const send = (dest = HOST) => {
    const id: number = sender.send(dest, Buffer.from('blob'), (r) => results.set(id, r));
    return id;
  };
  const a = send();
  const b = send();
  const c = send();
  const d = send();
  t.equal(out.length, 2, 'two in flight, one queued');
  t.equal(results.size, 0, 'the queue-full result is not delivered inside send()');
  sender.tick();
  t.same(results.get(d), { ok: false, code: 'ERR_TRANSFER_QUEUE_FULL' }, 'past the queue');
  const e = send({ ip: '10.0.0.3', port: 4790 });
  t.equal(out.length, 3, 'another host has its own window');

  sender.onDatagram(HOST, encodeFinal({ session: 9, blobId: a, status: Status.WRONG_VIP }));
  t.same(results.get(a), { ok: false, code: 'ERR_TRANSFER_REFUSED', status: Status.WRONG_VIP, statusName: 'WRONG_VIP' });
  t.equal(out.length, 4, 'the queued transfer starts when one ends');
  t.equal((out[3][1] as { blobId: number }).blobId, c);
  sender.onDatagram(HOST, encodeError({ session: 9, blobId: b, status: Status.BUSY }));
  t.same(results.get(b), { ok: false, code: 'ERR_TRANSFER_REFUSED', status: Status.BUSY, statusName: 'BUSY' });
  t.ok(sender.cancel(c));
  t.same(results.get(c), { ok: false, code: 'ERR_TRANSFER_CANCELLED' });
  t.notOk(sender.cancel(c), 'already over');
  sender.close();
  t.same(results.get(e), { ok: false, code: 'ERR_TRANSFER_CANCELLED' });
  t.equal(sender.pending, 0);
  t.match(sender.stats, { refused: 2, queueFull: 1, cancelled: 2, failed: 3, errors: 1, finals: 1 });

  t.throws(() => sender.send(HOST, Buffer.alloc(0), () => {}), { code: 'ERR_TRANSFER_TOO_LARGE' });
  t.throws(() => sender.send(HOST, Buffer.alloc(MAX_TOTAL_LENGTH + 1), () => {}), { code: 'ERR_TRANSFER_TOO_LARGE' });
  const small = new BlobSender({ send: () => {}, fragmentSize: 512 });
  t.throws(() => small.send(HOST, Buffer.alloc(512 * 1024 + 1), () => {}), { code: 'ERR_TRANSFER_TOO_LARGE' }, 'more than 1024 fragments');
  t.throws(() => new BlobSender({ send: () => {}, fragmentSize: 9000 }), { code: 'ERR_TRANSFER_OPTIONS' });
  t.throws(() => new BlobSender({ send: () => {}, jitter: 1 }), { code: 'ERR_TRANSFER_OPTIONS' });
  t.throws(() => new BlobSender({ send: () => {}, initialRtoMs: 300 }), { code: 'ERR_TRANSFER_OPTIONS' });
});

t.test('sender: driveWithTimers runs the same state machine on real timers', async (t) => {
  const r = new Reassembler();
  let sender: BlobSender;
  // The host loses every first copy of a fragment, so completion needs the timers.
  const seen = new Set<string>();
  sender = new BlobSender({
    initialRtoMs: 1, maxRtoMs: 4,
    send: (_dest, buf) => setImmediate(() => {
      const k = buf.toString('hex');
      if (!seen.has(k)) { seen.add(k); return; }
      const res = r.receive(LB, buf, performance.now());
      if (res.kind === 'complete') setImmediate(() => sender.onDatagram(HOST, r.finish(res.ref, Status.OK)));
      else if (res.kind !== 'dropped') setImmediate(() => sender.onDatagram(HOST, res.reply));
    }),
  });
  const driver = driveWithTimers(sender);
  const blob = randomBytes(prng(12), 5000);
  const result = await new Promise<TransferResult>((resolve) => sender.send(HOST, blob, resolve));
  t.match(result, { ok: true });
  t.ok(sender.stats.retransmitted >= 4, 'completed through retransmissions');
  const silent = new BlobSender({ initialRtoMs: 1, maxRtoMs: 2, maxAttempts: 3, send: () => {} });
  const d2 = driveWithTimers(silent);
  t.match(await new Promise<TransferResult>((resolve) => silent.send(HOST, blob, resolve)), { code: 'ERR_TRANSFER_GAVE_UP', rounds: 3 });
  driver.stop();
  d2.stop();
});

// ---------------------------------------------------------------------------
// End to end over a hostile channel.

interface Event {
  at: number;
  seq: number;
  fn: () => void;
}

class EventQueue {
  private h: Event[] = [];
  private seq = 0;
  push(at: number, fn: () => void): void {
    const e = { at, seq: this.seq++, fn };
    const h = this.h;
    let i = h.push(e) - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(e, h[p])) break;
      h[i] = h[p];
      i = p;
    }
    h[i] = e;
  }
  peek(): number | undefined {
    return this.h[0]?.at;
  }
  pop(): Event {
    const h = this.h;
    const top = h[0];
    const last = h.pop() as Event;
    if (h.length) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const c = l + 1 < h.length && this.less(h[l + 1], h[l]) ? l + 1 : l;
        if (!this.less(h[c], last)) break;
        h[i] = h[c];
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
  private less(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }
}

interface ChannelStats {
  offered: number;
  lost: number;
  corrupted: number;
  duplicated: number;
}

/**
 * One direction of a lossy link: each datagram is lost with probability
 * `loss`, otherwise possibly corrupted (1..3 random bits flipped in a copy),
 * possibly duplicated, and delivered after a random delay (which reorders).
 */
function channel(q: EventQueue, clock: { now: number }, rand: () => number,
  cfg: { loss: number; corrupt: number; duplicate: number; minDelay: number; maxDelay: number },
  deliver: (buf: Buffer) => void): { send: (buf: Buffer) => void; stats: ChannelStats } {
  const stats: ChannelStats = { offered: 0, lost: 0, corrupted: 0, duplicated: 0 };
  const once = (buf: Buffer) => {
    if (rand() < cfg.loss) {
      stats.lost++;
      return;
    }
    const copy = Buffer.from(buf); // the sender keeps and resends its own buffers
    if (rand() < cfg.corrupt) {
      stats.corrupted++;
      const flips = 1 + ((rand() * 3) | 0);
      for (let k = 0; k < flips; k++) copy[(rand() * copy.length) | 0] ^= 1 << ((rand() * 8) | 0);
    }
    q.push(clock.now + cfg.minDelay + rand() * (cfg.maxDelay - cfg.minDelay), () => deliver(copy));
  };
  return {
    stats,
    send(buf) {
      stats.offered++;
      once(buf);
      if (rand() < cfg.duplicate) {
        stats.duplicated++;
        once(buf);
      }
    },
  };
}

t.test('end to end: 500 blobs over a lossy, corrupting, duplicating, reordering link', async (t) => {
  const rand = prng(20240601);
  const clock = { now: 0 };
  const q = new EventQueue();
  const link = { loss: 0.3, corrupt: 0.05, duplicate: 0.05, minDelay: 0.05, maxDelay: 1.5 };

  const reassembler = new Reassembler();
  const delivered = new Map<number, Buffer[]>();
  let injections = 0;
  let misrouted = 0;
  // Agent stand-in: answers every datagram, "injects" a completed blob 0.3 ms
  // later and then sends its FINAL.
  const up = channel(q, clock, rand, link, (buf) => {
    const res = reassembler.receive(LB, buf, clock.now);
    if (res.kind === 'dropped') return;
    down.send(res.reply);
    if (res.kind === 'complete') {
      const list = delivered.get(res.ref.blobId) ?? [];
      list.push(Buffer.from(res.blob));
      delivered.set(res.ref.blobId, list);
      q.push(clock.now + 0.3, () => {
        injections++;
        down.send(reassembler.finish(res.ref, Status.OK));
      });
    }
  });
  const down = channel(q, clock, rand, link, (buf) => sender.onDatagram(HOST, buf));
  // 30% loss and 5% corruption each way make a round trip succeed about 44%
  // of the time; the default 8 silent rounds would give up ~1% of blobs (a
  // LAN trade-off), so this run allows 30.
  const sender: BlobSender = new BlobSender({
    send: (dest, buf) => {
      if (dest.ip !== HOST.ip || dest.port !== HOST.port) misrouted++;
      up.send(buf);
    },
    now: () => clock.now, random: prng(7), maxAttempts: 30,
  });

  const N = 500;
  const blobs: Buffer[] = [];
  const results = new Map<number, TransferResult[]>();
  const ids: number[] = [];
  const sizeRand = prng(99);
  for (let i = 0; i < N; i++) {
    // Log-uniform sizes from 100 B to 200 KB, both ends included.
    const size = i === 0 ? 100 : i === N - 1 ? 200 * 1024 : Math.round(100 * Math.pow(2048, sizeRand()));
    const blob = randomBytes(sizeRand, size);
    blobs.push(blob);
    const id: number = sender.send(HOST, blob, (r) => {
      const list = results.get(id) ?? [];
      list.push(r);
      results.set(id, list);
    });
    ids.push(id);
  }

  let steps = 0;
  for (;;) {
    const a = q.peek();
    const b = sender.nextDeadline();
    if (a === undefined && b === undefined) break;
    const next = Math.min(a ?? Infinity, b ?? Infinity);
    clock.now = Math.max(clock.now, next);
    while (q.peek() !== undefined && (q.peek() as number) <= clock.now) q.pop().fn();
    sender.tick(clock.now);
    if (++steps > 5_000_000) throw new Error('simulation did not settle');
  }

  let okCount = 0;
  let intact = 0;
  let exactlyOnce = 0;
  for (const [i, id] of ids.entries()) {
    const r = results.get(id) ?? [];
    if (r.length === 1 && r[0].ok) okCount++;
    const d = delivered.get(id) ?? [];
    if (d.length === 1) exactlyOnce++;
    if (d.length >= 1 && d.every((x) => x.equals(blobs[i]))) intact++;
  }
  t.equal(okCount, N, 'the sender reports ok, once, for every blob');
  t.equal(intact, N, 'every blob arrives with the same bytes');
  t.equal(exactlyOnce, N, 'every blob is completed exactly once');
  t.equal(injections, N, 'and injected once');
  t.equal(delivered.size, N, 'nothing else arrives');
  t.equal(sender.pending, 0);
  t.equal(misrouted, 0, 'every datagram went to the host');
  t.equal(reassembler.inProgress.blobs, 0, 'no partial blob left');
  t.equal(reassembler.inProgress.bytes, 0);

  const s = sender.stats;
  t.ok(s.retransmitted > 0.3 * s.fragments, `retransmissions happened (${s.retransmitted} for ${s.fragments} fragments)`);
  t.ok(reassembler.stats.bad.ERR_DGRAM_CRC > 0, `corrupt DATA caught by the CRC (${reassembler.stats.bad.ERR_DGRAM_CRC})`);
  t.ok(s.badDatagrams > 0, `corrupt answers caught by the sender (${s.badDatagrams})`);
  t.ok(reassembler.stats.duplicateFragments > 0 && reassembler.stats.alreadyComplete > 0, 'duplicates seen and answered');
  t.ok(up.stats.corrupted > 0 && down.stats.corrupted > 0 && up.stats.duplicated > 0 && down.stats.lost > 0, 'both directions were hostile');
  const rtts = [...results.values()].map((r) => (r[0] as { rttMs: number }).rttMs).sort((x, y) => x - y);
  t.comment(`simulated ${clock.now.toFixed(1)} ms; rtt median ${rtts[N >> 1].toFixed(2)} ms, max ${rtts[N - 1].toFixed(2)} ms; ` +
    `sender ${JSON.stringify(s)}; up ${JSON.stringify(up.stats)}; down ${JSON.stringify(down.stats)}; ` +
    `reassembler bad ${JSON.stringify(reassembler.stats.bad)}`);
});

t.test('CLOSED in batches: several flow IDs in one datagram; malformed batches refused', async (t) => {
  const one = decodeDatagram(encodeClosedBatch([7]));
  t.same(one, { type: 'closed', session: 0, blobId: 7, status: 0 }, 'one ID: the plain 24-byte CLOSED');
  const ids = Array.from({ length: MAX_CLOSED_BATCH }, (_, i) => 1000 + i);
  const many = encodeClosedBatch(ids);
  t.equal(many.length, 24 + 4 * (MAX_CLOSED_BATCH - 1));
  const d = decodeDatagram(many);
  t.same(d, { type: 'closed', session: 0, blobId: 1000, status: 0, more: ids.slice(1) }, `${MAX_CLOSED_BATCH} IDs back in order`);
  t.throws(() => encodeClosedBatch([]), 'none');
  t.throws(() => encodeClosedBatch([...ids, 1]), 'over the limit');
  const cut = Buffer.from(many.subarray(0, many.length - 4));
  t.match(decodeDatagram(cut), { error: 'ERR_DGRAM_TRUNCATED' }, 'a batch shorter than it says');
  const odd = Buffer.from(encodeClosedBatch([1, 2]));
  odd.writeUInt16BE(3, 22);
  t.ok('error' in decodeDatagram(odd), 'a length that is no multiple of 4');
});
