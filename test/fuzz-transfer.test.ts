// Property and fuzz tests of the blob transfer's decoders (fast-check): the
// datagram decoder, the reassembler and the blob codec take bytes from the
// network, so whatever arrives they must answer with a coded refusal, never
// an exception, and what they accept must be exactly what was sent.
//
// The shim has no C fragment parser (the balancer sees ACK/FINAL datagrams
// only as exception traffic and decodes them here), so this is where the
// "blob fragment parser" is fuzzed. FC_RUNS scales the number of runs and
// FC_SEED replays a reported failure (docs/fuzzing.md).
import t from 'tap';
import fc from 'fast-check';
import assert from 'node:assert';
import { createHmac, randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import {
  BLOB_FIELDS, BlobError, ConnectionBlob, DATA_HEADER_BYTES, DatagramType, MAX_FRAGMENTS, MAX_FRAGMENT_PAYLOAD,
  MIN_FRAGMENT_SIZE, ReplayWindow, Reassembler, bitmapBytes, crc32c, decodeBlob, decodeDatagram, encodeAck,
  encodeBlob, encodeClosed, encodeData, encodeError, encodeFinal, fragmentCount, fragmentLength, isDatagramError,
  popcount,
} from '../src/transfer';
import { holds } from './lib/fuzz';

const DGRAM_ERRORS = ['ERR_DGRAM_TRUNCATED', 'ERR_DGRAM_LENGTH', 'ERR_DGRAM_MAGIC', 'ERR_DGRAM_VERSION',
  'ERR_DGRAM_TYPE', 'ERR_DGRAM_CRC', 'ERR_DGRAM_BOUNDS'];
const BLOB_ERRORS = ['ERR_BLOB_TRUNCATED', 'ERR_BLOB_VERSION', 'ERR_BLOB_MAC', 'ERR_BLOB_STALE', 'ERR_BLOB_REPLAY',
  'ERR_BLOB_SCHEMA'];

const u32 = fc.integer({ min: 0, max: 0xffffffff });

/** A datagram's CRC recomputed, so mutated fields get past the CRC to the range checks. */
function reseal(b: Buffer): Buffer {
  if (b.length >= 12) {
    b.writeUInt32BE(0, 8);
    b.writeUInt32BE(crc32c(b), 8);
  }
  return b;
}

/** A valid DATA datagram: a blob of `total` bytes cut in `size`-byte fragments, fragment `index`. */
const dataArb = fc.record({
  session: u32, blobId: u32,
  fragmentSize: fc.integer({ min: MIN_FRAGMENT_SIZE, max: MAX_FRAGMENT_PAYLOAD }),
  count: fc.integer({ min: 1, max: 8 }),
  last: fc.integer({ min: 1, max: 1 << 16 }),
  index: fc.nat(),
}).map((r) => {
  const lastLen = Math.min(r.last, r.fragmentSize);
  const totalLength = (r.count - 1) * r.fragmentSize + lastLen;
  const index = r.index % r.count;
  const payload = randomBytes(fragmentLength(index, r.count, totalLength, r.fragmentSize));
  return { session: r.session, blobId: r.blobId, index, count: r.count, totalLength, fragmentSize: r.fragmentSize, payload };
});

const ackArb = fc.record({
  session: u32, blobId: u32, count: fc.integer({ min: 1, max: MAX_FRAGMENTS }),
  bitmap: fc.uint8Array({ minLength: 128, maxLength: 128 }),
});

/** Any well-formed datagram, encoded. */
const datagramArb = fc.oneof(
  dataArb.map((d) => encodeData(d)),
  ackArb.map((d) => encodeAck(d)),
  fc.record({ session: u32, blobId: u32, status: fc.integer({ min: 0, max: 0xffff }) }).chain((d) =>
    fc.constantFrom(encodeFinal(d), encodeError(d), encodeClosed(d.blobId))),
);

/** Raw bytes: arbitrary, or a datagram header with random fields resealed with a valid CRC. */
const hostileArb = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
  fc.record({
    type: fc.integer({ min: 0, max: 7 }),
    fields: fc.uint8Array({ minLength: 12, maxLength: 12 }),
    reserved: fc.constantFrom(0, 0, 0, 1, 0x8000),
    body: fc.uint8Array({ maxLength: 300 }),
  }).map(({ type, fields, reserved, body }) => {
    const b = Buffer.alloc(20 + fields.length + body.length);
    b.writeUInt32BE(0x484f4646, 0);
    b[4] = 1;
    b[5] = type;
    b.writeUInt16BE(reserved, 6);
    b.set(fields, 20);
    b.set(body, 32);
    // Half of them announce exactly the length they have, to reach the field checks.
    if (type === DatagramType.DATA && body.length & 1) b.writeUInt16BE(body.length, 30);
    return reseal(b);
  }),
);

t.test('decodeDatagram: any bytes give a datagram or a coded refusal, never an exception', async (t) => {
  holds(t, 'any bytes: a valid datagram or a coded refusal', fc.property(hostileArb, (b) => {
    const r = decodeDatagram(b);
    if (isDatagramError(r)) return DGRAM_ERRORS.includes(r.error) && typeof r.detail === 'string';
    // Accepted: every field is in range and consistent, so re-encoding gives the same bytes.
    switch (r.type) {
      case 'data':
        return r.count >= 1 && r.count <= MAX_FRAGMENTS && r.index < r.count &&
          fragmentCount(r.totalLength, r.fragmentSize) === r.count &&
          r.payload.length === fragmentLength(r.index, r.count, r.totalLength, r.fragmentSize) &&
          encodeData(r).equals(b);
      case 'ack':
        return r.bitmap.length === bitmapBytes(r.count) && popcount(r.bitmap) === r.held && encodeAck(r).equals(b);
      case 'final': return encodeFinal(r).equals(b);
      case 'error': return encodeError(r).equals(b);
      case 'closed': return r.session === 0 ? encodeClosed(r.blobId).equals(b) : true;
    }
  }), { numRuns: 4000 });
});

t.test('decodeDatagram: every encoded datagram decodes to what was encoded', async (t) => {
  holds(t, 'DATA round trip', fc.property(dataArb, (d) => {
    const r = decodeDatagram(encodeData(d));
    return !isDatagramError(r) && r.type === 'data' && r.index === d.index && r.count === d.count &&
      r.totalLength === d.totalLength && r.fragmentSize === d.fragmentSize && r.payload.equals(d.payload) &&
      r.session === d.session && r.blobId === d.blobId;
  }), { numRuns: 300 });
  holds(t, 'ACK round trip', fc.property(ackArb, (d) => {
    const r = decodeDatagram(encodeAck(d));
    if (isDatagramError(r) || r.type !== 'ack') return false;
    for (let i = 0; i < d.count; i++) if (((r.bitmap[i >> 3] >> (i & 7)) & 1) !== ((d.bitmap[i >> 3] >> (i & 7)) & 1)) return false;
    return r.count === d.count;
  }), { numRuns: 300 });
});

t.test('decodeDatagram: a datagram with one bit flipped or cut short is refused', async (t) => {
  // CRC32C detects every single-bit error; a flip in the magic/version/type or
  // a length field is caught before the CRC, with its own code.
  holds(t, 'one bit flipped or cut short: refused', fc.property(datagramArb, fc.nat(), fc.nat(), (b, bit, cut) => {
    const flipped = Buffer.from(b);
    const at = bit % (b.length * 8);
    flipped[at >> 3] ^= 1 << (at & 7);
    const short = b.subarray(0, cut % b.length);
    return isDatagramError(decodeDatagram(flipped)) && isDatagramError(decodeDatagram(short));
  }), { numRuns: 2000 });
});

t.test('Reassembler: blobs from shuffled, duplicated, corrupted and foreign datagrams', async (t) => {
  const sender = { ip: '198.18.0.2', port: 4790 };
  const blobArb = fc.record({
    blobId: u32,
    fragmentSize: fc.integer({ min: MIN_FRAGMENT_SIZE, max: 300 }),
    total: fc.integer({ min: 1, max: 2000 }),
  });
  // What happens to each datagram on the way: delivered, twice, corrupted, or lost then resent.
  const fate = fc.constantFrom('once', 'once', 'twice', 'corrupt', 'late');
  holds(t, 'every blob completes once, intact', fc.property(
    fc.uniqueArray(blobArb, { minLength: 1, maxLength: 4, selector: (b) => b.blobId }), fc.array(fate, { minLength: 200, maxLength: 200 }),
    fc.array(hostileArb, { maxLength: 20 }), fc.infiniteStream(fc.nat()),
    (blobs, fates, noise, order) => {
      const session = 7;
      const sent = blobs.map((b) => ({ ...b, bytes: randomBytes(b.total) }));
      const wire: Buffer[] = [];
      const late: Buffer[] = [];
      let k = 0;
      for (const b of sent) {
        const count = fragmentCount(b.total, b.fragmentSize);
        for (let i = 0; i < count; i++) {
          const payload = b.bytes.subarray(i * b.fragmentSize, i * b.fragmentSize + fragmentLength(i, count, b.total, b.fragmentSize));
          const d = encodeData({ session, blobId: b.blobId, index: i, count, totalLength: b.total, fragmentSize: b.fragmentSize, payload });
          const f = fates[k++ % fates.length];
          if (f === 'twice') wire.push(d, d);
          else if (f === 'late') late.push(d);
          else if (f === 'corrupt') {
            const c = Buffer.from(d);
            c[DATA_HEADER_BYTES + (k % payload.length)] ^= 0x40;
            wire.push(c, d); // the corrupted copy, then a good retransmission
          } else wire.push(d);
        }
      }
      wire.push(...noise);
      // Shuffle (Fisher-Yates on the generated stream), then the retransmissions.
      const it = order[Symbol.iterator]();
      for (let i = wire.length - 1; i > 0; i--) {
        const j = (it.next().value as number) % (i + 1);
        [wire[i], wire[j]] = [wire[j], wire[i]];
      }
      wire.push(...late);

      const r = new Reassembler({ maxBytes: 1 << 20 });
      const done = new Map<number, Buffer>();
      for (const d of wire) {
        const res = r.receive(sender, d, 1000);
        if (res.kind === 'complete') {
          if (res.ref.session !== session || done.has(res.ref.blobId)) return false; // once only
          done.set(res.ref.blobId, Buffer.from(res.blob));
        }
        if (r.inProgress.bytes > 1 << 20) return false;
      }
      // Every blob arrives whole and identical; nothing else completes.
      // (Noise could forge a valid DATA for session 7 only by a CRC-checked
      // coincidence the generator cannot produce: its sessions are random.)
      return r.stats.datagrams === wire.length && done.size === sent.length &&
        sent.every((b) => done.get(b.blobId)?.equals(b.bytes));
    }), { numRuns: 200 });
});

// ---------------------------------------------------------------------------
// The blob codec.

const key = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const NOW = 1_700_000_000_000;
const ipArb = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => a.join('.'));
const nameArb = fc.string({ minLength: 1, maxLength: 40 });

const blobArb: fc.Arbitrary<ConnectionBlob> = fc.record({
  flowId: fc.integer({ min: 0, max: 0xffffff }), clientIp: ipArb, clientPort: fc.integer({ min: 1, max: 0xffff }),
  vip: ipArb, vipPort: fc.integer({ min: 1, max: 0xffff }), iss: u32, irs: u32, sndNxt: u32, sndWnd: u32, rcvWnd: u32,
  sndWscale: fc.integer({ min: 0, max: 14 }), rcvWscale: fc.integer({ min: 0, max: 14 }),
  mss: fc.integer({ min: 48, max: 0xffff }), sackOk: fc.boolean(), tsOk: fc.boolean(), tsVal: u32, tsEcr: u32,
  data: fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
  decision: fc.record({ rule: fc.option(nameArb, { nil: null }), pool: nameArb, host: nameArb }, { noNullPrototype: true }),
  age: fc.integer({ min: -1000, max: 5000 }),
  nonce: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((a) => Buffer.from(a)),
}, { noNullPrototype: true }).map(({ age, ...b }) => ({
  v: 1 as const, ...b, rcvNxt: (b.irs + 1 + b.data.length) >>> 0, created: NOW - age,
}));

/** Frame a body with a valid MAC, as encodeBlob does, without its validation. */
function frame(body: Buffer, version = 1): Buffer {
  const head = Buffer.alloc(5);
  head[0] = version;
  head.writeUInt32BE(body.length, 1);
  const mac = createHmac('sha256', key).update(head).update(body).digest();
  return Buffer.concat([head, body, mac]);
}
const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false });

function decodeOutcome(buf: Buffer): string {
  try {
    decodeBlob(buf, key, { now: NOW, replay: new ReplayWindow() });
    return 'ok';
  } catch (err) {
    if (err instanceof BlobError && BLOB_ERRORS.includes(err.code)) return err.code;
    throw err; // anything else is a bug: fast-check reports the input
  }
}

t.test('decodeBlob: encode then decode gives the same blob', async (t) => {
  holds(t, 'round trip', fc.property(blobArb, (b) => {
    const got = decodeBlob(encodeBlob(b, key), key, { now: NOW, replay: new ReplayWindow() });
    assert.deepStrictEqual(got, b);
  }), { numRuns: 200 });
});

t.test('decodeBlob: arbitrary bytes, flipped bits and cuts are refused with a code', async (t) => {
  holds(t, 'arbitrary bytes refused', fc.property(fc.uint8Array({ maxLength: 400 }), (a) => decodeOutcome(Buffer.from(a)) !== 'ok'),
    { numRuns: 2000 });
  holds(t, 'flipped bits and cuts refused', fc.property(blobArb, fc.nat(), fc.nat(), (b, bit, cut) => {
    const enc = encodeBlob(b, key);
    const flipped = Buffer.from(enc);
    const at = bit % (enc.length * 8);
    flipped[at >> 3] ^= 1 << (at & 7);
    return ['ERR_BLOB_MAC', 'ERR_BLOB_VERSION', 'ERR_BLOB_TRUNCATED'].includes(decodeOutcome(flipped)) &&
      decodeOutcome(enc.subarray(0, cut % enc.length)) !== 'ok';
  }), { numRuns: 500 });
});

t.test('decodeBlob: authenticated but malformed bodies reach msgpack and the schema, and are refused with a code', async (t) => {
  // These bodies carry a valid MAC (the fuzzer holds the key): they stand for
  // a buggy or hostile balancer, the only source that gets past the MAC.
  holds(t, 'random authenticated bytes refused', fc.property(fc.uint8Array({ maxLength: 300 }), (a) => decodeOutcome(frame(Buffer.from(a))) !== 'ok'),
    { numRuns: 2000 });
  holds(t, 'authenticated msgpack values of any shape refused', fc.property(fc.anything({ withBigInt: false, withMap: true, withSet: true, withTypedArray: true }), (x) => {
    let body: Buffer;
    try {
      body = packr.pack(x);
    } catch {
      return true; // not packable: nothing to send
    }
    return decodeOutcome(frame(body)) !== 'ok';
  }), { numRuns: 1000 });
  // One field of a valid blob replaced, removed, or a field added: accepted
  // only when the result is still a valid blob (validateBlob agrees).
  const fieldArb = fc.constantFrom(...BLOB_FIELDS, 'decision.rule', 'decision.pool', 'decision.host', 'extra');
  holds(t, 'one field replaced, removed or added: valid or ERR_BLOB_SCHEMA', fc.property(blobArb, fieldArb, fc.oneof(fc.anything(), fc.constant(undefined)), (b, field, value) => {
    const o: Record<string, unknown> = { ...b, decision: { ...b.decision } };
    const [outer, inner] = field.split('.');
    const target = (inner ? o[outer] : o) as Record<string, unknown>;
    const k = inner ?? outer;
    if (value === undefined) delete target[k];
    else target[k] = value;
    let body: Buffer;
    try {
      body = packr.pack(o);
    } catch {
      return true;
    }
    const out = decodeOutcome(frame(body));
    return out === 'ok' || out === 'ERR_BLOB_SCHEMA' || out === 'ERR_BLOB_VERSION' || out === 'ERR_BLOB_STALE';
  }), { numRuns: 2000 });
});
