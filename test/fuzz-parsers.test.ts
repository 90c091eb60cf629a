// Property and fuzz tests of the classification parsers (fast-check): the
// HTTP/1 request-head parser and the TLS ClientHello parser read the first
// bytes of any client, so for any bytes they must return a coded result
// (never throw), agree with themselves on every prefix (the engine calls them
// again as segments arrive), never look past maxBytes, and read valid input
// back exactly. Seeds: the real captured requests in test/fixtures/requests.
// FC_RUNS scales the runs; FC_SEED/FC_PATH replay a failure (docs/fuzzing.md).
import t from 'tap';
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  HttpParseResult, TlsParseResult, looksLikeHttp, looksLikeTls, parseClientHello, parseHttpHead,
} from '../src/classifier/parsers';
import { holds } from './lib/fuzz';

const HTTP_ERRORS = ['ERR_HTTP_TOO_LARGE', 'ERR_HTTP_BAD_REQUEST_LINE', 'ERR_HTTP_BAD_HEADER',
  'ERR_HTTP_TOO_MANY_HEADERS', 'ERR_HTTP_VERSION', 'ERR_HTTP2_PREFACE', 'ERR_HTTP_DUPLICATE_HOST'];
const TLS_ERRORS = ['ERR_TLS_NOT_HANDSHAKE', 'ERR_TLS_BAD_RECORD', 'ERR_TLS_BAD_HELLO', 'ERR_TLS_TOO_LARGE',
  'ERR_TLS_BAD_SNI'];

const fixtures = path.resolve(__dirname, '../../test/fixtures/requests');
const load = (prefix: string) => fs.readdirSync(fixtures).filter((f) => f.startsWith(prefix) && f.endsWith('.bin'))
  .map((f) => fs.readFileSync(path.join(fixtures, f)));
const httpSeeds = load('http-');
const tlsSeeds = load('tls-');

/** A seed with a few edits: byte flips, insertions, deletions, truncation. */
function mutated(seeds: Buffer[], alphabet: fc.Arbitrary<number>): fc.Arbitrary<Buffer> {
  const edit = fc.record({ at: fc.nat(), op: fc.constantFrom('flip', 'set', 'insert', 'delete', 'cut'), byte: alphabet });
  return fc.tuple(fc.constantFrom(...seeds), fc.array(edit, { maxLength: 4 })).map(([seed, edits]) => {
    let b = Buffer.from(seed);
    for (const e of edits) {
      if (b.length === 0) break;
      const at = e.at % b.length;
      if (e.op === 'flip') b[at] ^= 1 << (e.byte & 7);
      else if (e.op === 'set') b[at] = e.byte;
      else if (e.op === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from([e.byte]), b.subarray(at)]);
      else if (e.op === 'delete') b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
      else b = b.subarray(0, at);
    }
    return b;
  });
}

// Bytes that matter to HTTP: CR, LF, SP, HTAB, ':', '/', digits, letters, NUL, DEL, obs-text.
const httpByte = fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x20, 0x09, 0x3a, 0x2f, 0x2e, 0x3f, 0x23, 0x5b, 0x5d, 0x00, 0x7f, 0x80, 0xff),
  fc.integer({ min: 0x21, max: 0x7e }));
const httpInput = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  fc.array(httpByte, { maxLength: 300 }).map((a) => Buffer.from(a)),
  mutated(httpSeeds, httpByte),
);
const tlsInput = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  mutated(tlsSeeds, fc.integer({ min: 0, max: 255 })),
);

function httpOk(r: HttpParseResult, len: number): boolean {
  if (r.status === 'incomplete') return true;
  if (r.status === 'error') return HTTP_ERRORS.includes(r.code) && typeof r.message === 'string';
  return r.status === 'complete' && r.headLength >= 18 && r.headLength <= len;
}

function tlsOk(r: TlsParseResult, len: number): boolean {
  if (r.status === 'incomplete') return true;
  if (r.status === 'error') return TLS_ERRORS.includes(r.code) && typeof r.message === 'string';
  return r.status === 'complete' && r.hello.recordBytes <= len && Array.isArray(r.hello.alpn);
}

/** The verdict on a prefix, as the engine would see it before the rest arrives. */
const outcome = (r: HttpParseResult | TlsParseResult): string => (r.status === 'error' ? r.code : r.status);

t.test('HTTP: any bytes give a coded result', async (t) => {
  holds(t, 'no exception, known codes, headLength within the input', fc.property(httpInput, (b) => httpOk(parseHttpHead(b), b.length)),
    { numRuns: 3000 });
  holds(t, 'a complete head parses the same when cut right after it', fc.property(httpInput, (b) => {
    const r = parseHttpHead(b);
    if (r.status !== 'complete') return true;
    const again = parseHttpHead(b.subarray(0, r.headLength));
    return isDeepStrictEqual(again, r);
  }), { numRuns: 3000 });
});

t.test('HTTP: every prefix agrees with the whole input', async (t) => {
  // An error on a prefix is final (the same error for the whole input); a
  // complete head has only incomplete prefixes before its blank line.
  holds(t, 'prefix verdicts', fc.property(httpInput, (b) => {
    const whole = parseHttpHead(b);
    const end = whole.status === 'complete' ? whole.headLength : b.length;
    for (let k = 0; k < end; k++) {
      const p = parseHttpHead(b.subarray(0, k));
      if (p.status === 'complete') return false;
      if (p.status === 'error' && outcome(p) !== outcome(whole)) return false;
      if (whole.status === 'complete' && p.status !== 'incomplete') return false;
    }
    return true;
  }), { numRuns: 600 });
});

t.test('HTTP: nothing past maxBytes is read', async (t) => {
  holds(t, 'inputs equal up to maxBytes get equal verdicts', fc.property(httpInput, fc.integer({ min: 1, max: 200 }),
    fc.uint8Array({ maxLength: 50 }), (b, max, tail) => {
      if (b.length < max) return true;
      const other = Buffer.concat([b.subarray(0, max), tail]);
      return isDeepStrictEqual(parseHttpHead(b, { maxBytes: max }), parseHttpHead(other, { maxBytes: max }));
    }), { numRuns: 2000 });
});

t.test('HTTP: looksLikeHttp never contradicts the parser', async (t) => {
  holds(t, 'looksLikeHttp false on bytes the parser could accept', fc.property(httpInput, (b) =>
    b.length === 0 || looksLikeHttp(b) || parseHttpHead(b).status === 'error'), { numRuns: 3000 });
});

t.test('HTTP: valid request heads are read back exactly', async (t) => {
  const tchar = fc.constantFrom(...'!#$%&\'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ');
  const token = (max: number) => fc.array(tchar, { minLength: 1, maxLength: max }).map((a) => a.join(''));
  const vchar = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
  const pathArb = fc.array(vchar.filter((c) => c !== '#'), { maxLength: 40 }).map((a) => '/' + a.join(''));
  const valueArb = fc.array(fc.oneof(vchar, fc.constant(' ')), { maxLength: 40 }).map((a) => a.join('').trim());
  const hostArb = fc.array(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.'), { minLength: 1, maxLength: 30 })
    .map((a) => a.join('')).filter((h) => h !== '.' && !h.endsWith('..'));
  const headArb = fc.record({
    method: token(20),
    target: pathArb,
    minor: fc.constantFrom(0, 1),
    host: fc.option(fc.tuple(hostArb, fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined })), { nil: undefined }),
    headers: fc.array(fc.tuple(token(20).filter((n) => n.toLowerCase() !== 'host'), valueArb), { maxLength: 12 }),
    pad: fc.constantFrom('', ' ', '\t', '  '),
    body: fc.uint8Array({ maxLength: 30 }),
  });
  holds(t, 'method, target, version, headers and host', fc.property(headArb, (h) => {
    const lines = [`${h.method} ${h.target} HTTP/1.${h.minor}`];
    const hostLine = h.host && `${h.host[0]}${h.host[1] === undefined ? '' : ':' + h.host[1]}`;
    if (hostLine) lines.push(`Host:${h.pad}${hostLine}${h.pad}`);
    for (const [n, v] of h.headers) lines.push(`${n}:${h.pad}${v}${h.pad}`);
    const head = Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
    const r = parseHttpHead(Buffer.concat([head, h.body]));
    if (r.status !== 'complete') return false;
    const want = [...(hostLine ? [['host', hostLine]] : []), ...h.headers.map(([n, v]) => [n.toLowerCase(), v])];
    const host = h.host?.[0].toLowerCase().replace(/(.)\.$/, '$1');
    return r.headLength === head.length && r.head.method === h.method && r.head.target === h.target &&
      r.head.version === `1.${h.minor}` && r.head.path === h.target.split('?')[0] &&
      isDeepStrictEqual(r.head.headers, want) && r.head.host === host;
  }), { numRuns: 2000 });
});

t.test('TLS: any bytes give a coded result', async (t) => {
  holds(t, 'no exception, known codes, recordBytes within the input', fc.property(tlsInput, (b) => tlsOk(parseClientHello(b), b.length)),
    { numRuns: 3000 });
  holds(t, 'looksLikeTls false on bytes the parser could accept', fc.property(tlsInput, (b) =>
    b.length === 0 || looksLikeTls(b) || parseClientHello(b).status === 'error'), { numRuns: 3000 });
});

t.test('TLS: every prefix agrees with the whole input', async (t) => {
  holds(t, 'prefix verdicts', fc.property(tlsInput, (b) => {
    const whole = parseClientHello(b);
    const end = whole.status === 'complete' ? whole.hello.recordBytes : b.length;
    for (let k = 0; k < end; k++) {
      const p = parseClientHello(b.subarray(0, k));
      if (p.status === 'complete') return false;
      if (p.status === 'error' && outcome(p) !== outcome(whole)) return false;
      if (whole.status === 'complete' && p.status !== 'incomplete') return false;
    }
    return true;
  }), { numRuns: 300 });
  holds(t, 'inputs equal up to maxBytes get equal verdicts', fc.property(tlsInput, fc.integer({ min: 1, max: 600 }),
    fc.uint8Array({ maxLength: 50 }), (b, max, tail) => {
      if (b.length < max) return true;
      const other = Buffer.concat([b.subarray(0, max), tail]);
      return isDeepStrictEqual(parseClientHello(b, { maxBytes: max }), parseClientHello(other, { maxBytes: max }));
    }), { numRuns: 2000 });
});

/** The ClientHello handshake message of a captured stream (gathered across its records). */
function helloMessage(stream: Buffer): Buffer {
  const parts: Buffer[] = [];
  let have = 0;
  let need = Infinity;
  for (let pos = 0; have < need; ) {
    const len = stream.readUInt16BE(pos + 3);
    parts.push(stream.subarray(pos + 5, pos + 5 + len));
    have += len;
    pos += 5 + len;
    if (need === Infinity && have >= 4) need = 4 + Buffer.concat(parts).readUIntBE(1, 3);
  }
  return Buffer.concat(parts).subarray(0, need);
}

t.test('TLS: a ClientHello split over any records reads the same', async (t) => {
  const hellos = tlsSeeds.map((s) => ({ msg: helloMessage(s), want: parseClientHello(s) }));
  t.ok(hellos.every((h) => h.want.status === 'complete'), 'every captured ClientHello parses');
  holds(t, 'SNI, ALPN, versions, suites and GREASE do not depend on the record boundaries', fc.property(
    fc.constantFrom(...hellos), fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 40 }),
    fc.constantFrom(0x01, 0x03), fc.uint8Array({ maxLength: 20 }),
    ({ msg, want }, sizes, minor, after) => {
      const records: Buffer[] = [];
      for (let pos = 0, i = 0; pos < msg.length; i++) {
        const len = Math.min(sizes[i % sizes.length], msg.length - pos);
        records.push(Buffer.from([0x16, 0x03, minor, len >> 8, len & 0xff]), msg.subarray(pos, pos + len));
        pos += len;
      }
      const stream = Buffer.concat(records);
      const r = parseClientHello(Buffer.concat([stream, after]));
      if (r.status !== 'complete' || want.status !== 'complete') return false;
      return r.hello.recordBytes === stream.length &&
        isDeepStrictEqual({ ...r.hello, recordBytes: 0 }, { ...want.hello, recordBytes: 0 });
    }), { numRuns: 1000 });
});
