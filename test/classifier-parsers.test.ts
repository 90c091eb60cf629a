// Classification parsers against real client bytes (test/fixtures/requests,
// see its README) replayed as a TCP stream split at every byte boundary, plus
// hand-built malformed input for every error code.
import t, { type Test } from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import {
  parseHttpHead, parseClientHello, looksLikeHttp, looksLikeTls, isGrease,
  type HttpParseResult, type TlsParseResult, type HttpParseOptions, type TlsParseOptions,
} from '../src/classifier/parsers';

const FIXTURES = path.resolve(__dirname, '../../test/fixtures/requests');
const fixture = (name: string): Buffer => fs.readFileSync(path.join(FIXTURES, name));

type Result = HttpParseResult | TlsParseResult;

/**
 * Replay `buf` as a stream cut into pieces at `cuts`, calling `parse` on the
 * concatenation received so far after each piece (fresh copies, as a socket
 * would deliver). Returns a description of the first deviation from: 'incomplete'
 * while fewer than `completeAt` bytes have arrived, then exactly `full`.
 */
function replay(parse: (b: Buffer) => Result, buf: Buffer, cuts: number[], completeAt: number, full: Result): string | undefined {
  const ends = [...cuts, buf.length];
  let start = 0;
  let got = Buffer.alloc(0);
  for (const end of ends) {
    got = Buffer.concat([got, Buffer.from(buf.subarray(start, end))]);
    start = end;
    const r = parse(got);
    const want = got.length < completeAt ? { status: 'incomplete' } : full;
    if (!isDeepStrictEqual(r, want)) {
      return `cuts [${cuts}] after ${got.length} bytes: got ${JSON.stringify(r)}, want ${want.status}`;
    }
  }
  return undefined;
}

/** Every 2-way split, plus a few 3-way ones around the interesting offsets. */
function streamCheck(t: Test, parse: (b: Buffer) => Result, buf: Buffer, completeAt: number, full: Result): void {
  const failures: string[] = [];
  let runs = 0;
  for (let i = 1; i < buf.length; i++) {
    runs++;
    const f = replay(parse, buf, [i], completeAt, full);
    if (f) failures.push(f);
  }
  const n = buf.length;
  const points = [1, 2, 5, Math.floor(n / 3), Math.floor(n / 2), Math.floor((2 * n) / 3), completeAt - 1, completeAt, n - 1];
  for (const a of points) {
    for (const b of points) {
      if (a > 0 && a < b && b < n) {
        runs++;
        const f = replay(parse, buf, [a, b], completeAt, full);
        if (f) failures.push(f);
      }
    }
  }
  t.same(failures.slice(0, 3), [], `${runs} split replays agree (${failures.length} failures)`);
}

// ---------------------------------------------------------------- HTTP

interface HttpExpect {
  file: string;
  method: string;
  path: string;
  target: string;
  version: '1.0' | '1.1';
  host?: string;
  cookies: Record<string, string>;
  headerCount: number;
  bodyBytes: number;
}

const HTTP_FIXTURES: HttpExpect[] = [
  { file: 'http-curl-get.bin', method: 'GET', path: '/path', target: '/path?x=1', version: '1.1', host: '127.0.0.1', cookies: { a: '1', b: '2' }, headerCount: 4, bodyBytes: 0 },
  { file: 'http-curl-post.bin', method: 'POST', path: '/submit', target: '/submit', version: '1.1', host: '127.0.0.1', cookies: {}, headerCount: 5, bodyBytes: 14 },
  { file: 'http-curl-http10.bin', method: 'GET', path: '/old/page.html', target: '/old/page.html', version: '1.0', host: '127.0.0.1', cookies: {}, headerCount: 3, bodyBytes: 0 },
  {
    file: 'http-curl-many-headers.bin', method: 'GET', path: '/api/v1/items', target: '/api/v1/items?page=2&sort=desc', version: '1.1',
    host: 'shop.example.test', cookies: { session: 'abc123', theme: 'dark', lang: 'en' }, headerCount: 32, bodyBytes: 0,
  },
  {
    file: 'http-curl-proxy-absolute.bin', method: 'GET', path: '/abs/path', target: 'http://Absolute.Example.TEST/abs/path?q=1', version: '1.1',
    host: 'absolute.example.test', cookies: {}, headerCount: 4, bodyBytes: 0,
  },
  {
    file: 'http-node-put.bin', method: 'PUT', path: '/v2/objects/42', target: '/v2/objects/42?version=7', version: '1.1',
    host: 'objects.example.test', cookies: { sid: 'xyz', region: 'eu-west' }, headerCount: 5, bodyBytes: 18,
  },
];

t.test('HTTP fixtures from real clients', async (t) => {
  for (const ex of HTTP_FIXTURES) {
    t.test(ex.file, async (t) => {
      const buf = fixture(ex.file);
      t.ok(looksLikeHttp(buf), 'looksLikeHttp');
      t.notOk(looksLikeTls(buf), 'not looksLikeTls');
      const full = parseHttpHead(buf);
      if (full.status !== 'complete') return t.fail(`not complete: ${JSON.stringify(full)}`);
      const { head, headLength } = full;
      t.equal(headLength, buf.length - ex.bodyBytes, 'headLength stops at the blank line');
      t.equal(buf.toString('latin1', headLength - 4, headLength), '\r\n\r\n');
      t.equal(head.method, ex.method);
      t.equal(head.target, ex.target);
      t.equal(head.path, ex.path);
      t.equal(head.version, ex.version);
      t.equal(head.host, ex.host);
      t.same(Object.fromEntries(head.cookies), ex.cookies, 'cookies');
      t.equal(head.headers.length, ex.headerCount, 'header count');
      t.ok(head.headers.every(([n]) => n === n.toLowerCase()), 'header names lowercase');
      streamCheck(t, (b) => parseHttpHead(b), buf, headLength, full);
    });
  }
});

t.test('HTTP fixture details', async (t) => {
  const many = parseHttpHead(fixture('http-curl-many-headers.bin'));
  if (many.status !== 'complete') return t.fail('many-headers');
  const h = new Map(many.head.headers.map(([n, v]) => [n, v] as const));
  t.equal(h.get('x-custom-24'), 'value-24');
  t.equal(h.get('authorization'), 'Bearer t0k3n');
  t.equal(many.head.headers.filter(([n]) => n === 'cookie').length, 2, 'both Cookie headers kept');
  t.equal(many.head.cookies.get('session'), 'abc123', 'first cookie occurrence wins');
  // The cap on header lines applies to the same fixture.
  t.match(parseHttpHead(fixture('http-curl-many-headers.bin'), { maxHeaders: 31 }), { status: 'error', code: 'ERR_HTTP_TOO_MANY_HEADERS' });
  t.equal(parseHttpHead(fixture('http-curl-many-headers.bin'), { maxHeaders: 32 }).status, 'complete');
});

const req = (s: string): Buffer => Buffer.from(s, 'latin1');
const httpCode = (s: string | Buffer, opts?: HttpParseOptions): string | undefined => {
  const r = parseHttpHead(typeof s === 'string' ? req(s) : s, opts);
  return r.status === 'error' ? r.code : r.status;
};
const httpHead = (s: string, opts?: HttpParseOptions) => {
  const r = parseHttpHead(req(s), opts);
  if (r.status !== 'complete') throw new Error(`not complete: ${JSON.stringify(r)}`);
  return r.head;
};

t.test('HTTP request line errors', async (t) => {
  const bad: Array<[string, string]> = [
    [' GET / HTTP/1.1\r\n\r\n', 'leading space'],
    ['\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n', 'empty line before the request line'],
    ['GET  / HTTP/1.1\r\n\r\n', 'two spaces'],
    ['GET /a b HTTP/1.1\r\n\r\n', 'space in target'],
    ['GET /a\x01 HTTP/1.1\r\n\r\n', 'control byte in target'],
    ['GET /caf\xe9 HTTP/1.1\r\n\r\n', 'non-ASCII in target'],
    ['GET /#frag HTTP/1.1\r\n\r\n', 'fragment in target'],
    ['GET / HTTP/1.1 \r\n\r\n', 'trailing space'],
    ['GET / http/1.1\r\n\r\n', 'lowercase version'],
    ['GET / HTTP/1.10\r\n\r\n', 'long version'],
    ['GET / HTTP/1.1\n\n', 'bare LF'],
    ['GET / HTTP/1.1\r\r\n\r\n', 'bare CR'],
    ['GE(T / HTTP/1.1\r\n\r\n', 'non-token method'],
    ['GET\t/ HTTP/1.1\r\n\r\n', 'tab separator'],
    [`${'A'.repeat(33)} / HTTP/1.1\r\n\r\n`, 'method over 32 bytes'],
    ['GET * HTTP/1.1\r\n\r\n', "'*' without OPTIONS"],
    ['CONNECT example.test HTTP/1.1\r\n\r\n', 'CONNECT without port'],
    ['CONNECT /x HTTP/1.1\r\n\r\n', 'CONNECT with a path'],
    ['GET ftp://example.test/ HTTP/1.1\r\n\r\n', 'non-http absolute URI'],
    ['GET http://user@example.test/ HTTP/1.1\r\n\r\n', 'userinfo in absolute URI'],
    ['GET http:/// HTTP/1.1\r\n\r\n', 'empty authority'],
    ['GET example.test/ HTTP/1.1\r\n\r\n', 'relative target'],
  ];
  for (const [s, why] of bad) t.equal(httpCode(s), 'ERR_HTTP_BAD_REQUEST_LINE', why);
  t.equal(httpCode(`${'A'.repeat(32)} / HTTP/1.1\r\n\r\n`), 'complete', 'a 32-byte method is fine');
  t.equal(httpCode('get / HTTP/1.1\r\n\r\n'), 'complete', 'methods are case-sensitive tokens, not a list');
});

t.test('HTTP fails as soon as the first bytes rule it out', async (t) => {
  t.equal(httpCode(Buffer.from([0x16, 0x03, 0x01])), 'ERR_HTTP_BAD_REQUEST_LINE', 'a TLS record');
  t.equal(httpCode('{"json":'), 'ERR_HTTP_BAD_REQUEST_LINE');
  t.equal(httpCode(' '), 'ERR_HTTP_BAD_REQUEST_LINE');
  t.equal(httpCode('A'.repeat(33)), 'ERR_HTTP_BAD_REQUEST_LINE', 'a method that is already too long');
  t.equal(httpCode('GET / HTTP/1.1\n'), 'ERR_HTTP_BAD_REQUEST_LINE', 'bare LF before the head ends');
  t.equal(httpCode('GET / HTTP/1.1\r\nHost: a\n'), 'ERR_HTTP_BAD_HEADER', 'bare LF in a header before the head ends');
  t.equal(httpCode('GET / HTTP/1.1\r\nHost : a\r\n'), 'ERR_HTTP_BAD_HEADER', 'bad header before the head ends');
  t.equal(httpCode('GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n'), 'ERR_HTTP_DUPLICATE_HOST');
  t.equal(httpCode('PRI * HTTP/2.0\r\n'), 'ERR_HTTP2_PREFACE', 'the h2 preface line alone');
  t.equal(httpCode('GET / HTTP/1.1\r\nA: b\r\nC: d\r\n', { maxHeaders: 1 }), 'ERR_HTTP_TOO_MANY_HEADERS');
  for (const s of ['G', 'GET', 'GET ', 'GET /index', 'GET / HTTP/1.1', 'GET / HTTP/1.1\r', 'GET / HTTP/1.1\r\nHost: a\r\n\r']) {
    t.equal(httpCode(s), 'incomplete', JSON.stringify(s));
  }
  t.equal(httpCode(''), 'incomplete', 'nothing yet');
});

t.test('HTTP header errors', async (t) => {
  const line = (h: string) => `GET / HTTP/1.1\r\n${h}\r\n\r\n`;
  const bad: Array<[string, string]> = [
    ['Host : a', 'whitespace before the colon'],
    ['Host\t: a', 'tab before the colon'],
    ['Bad Name: a', 'space in the name'],
    [': a', 'empty name'],
    ['NoColon', 'no colon'],
    ['X-A: 1\r\n folded', 'obs-fold'],
    ['X-A: 1\r\n\tfolded', 'obs-fold with tab'],
    ['X-A: a\x00b', 'NUL in value'],
    ['X-A: a\rb', 'bare CR in value'],
    ['X-A: a\x7fb', 'DEL in value'],
    ['X-A: 1\nX-B: 2', 'bare LF between headers'],
    ['X(A): 1', 'non-token name'],
    ['Host: exa mple.test', 'space in Host'],
    ['Host: user@example.test', 'userinfo in Host'],
    ['Host: example.test:99999', 'port out of range'],
    ['Host: example.test:8o', 'non-digit port'],
    ['Host: [::1', 'unclosed IP literal'],
    ['Host: [::1]x', 'junk after IP literal'],
    ['Host: example.test/path', 'path in Host'],
  ];
  for (const [h, why] of bad) t.equal(httpCode(line(h)), 'ERR_HTTP_BAD_HEADER', why);
});

t.test('HTTP too many headers', async (t) => {
  const head = (n: number) => `GET / HTTP/1.1\r\n${Array.from({ length: n }, (_, i) => `X-H${i}: ${i}\r\n`).join('')}\r\n`;
  t.equal(httpCode(head(100)), 'complete', '100 by default');
  t.equal(httpCode(head(101)), 'ERR_HTTP_TOO_MANY_HEADERS', '101 by default');
  t.equal(httpCode(head(3), { maxHeaders: 3 }), 'complete');
  t.equal(httpCode(head(4), { maxHeaders: 3 }), 'ERR_HTTP_TOO_MANY_HEADERS');
  t.equal(httpCode(head(0), { maxHeaders: 0 }), 'complete', 'a bare request line with maxHeaders 0');
});

t.test('HTTP versions and the h2 preface', async (t) => {
  t.equal(httpCode('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), 'ERR_HTTP2_PREFACE');
  for (const v of ['HTTP/2.0', 'HTTP/1.2', 'HTTP/0.9', 'HTTP/3.0', 'HTTP/9.9']) {
    t.equal(httpCode(`GET / ${v}\r\n\r\n`), 'ERR_HTTP_VERSION', v);
  }
  t.equal(httpCode('PRI / HTTP/2.0\r\n\r\n'), 'ERR_HTTP_VERSION', 'PRI without * is just HTTP/2.0');
  t.equal(httpCode('GET /\r\n\r\n'), 'ERR_HTTP_VERSION', 'HTTP/0.9 simple request');
  t.equal(httpHead('GET / HTTP/1.0\r\n\r\n').version, '1.0');
});

t.test('HTTP duplicate Host', async (t) => {
  t.equal(httpCode('GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n'), 'ERR_HTTP_DUPLICATE_HOST', 'conflicting');
  t.equal(httpCode('GET / HTTP/1.1\r\nHost: a.test\r\nX: y\r\nHOST: a.test\r\n\r\n'), 'ERR_HTTP_DUPLICATE_HOST', 'even equal copies (RFC 9112 §3.2)');
  t.equal(httpCode('GET http://a.test/ HTTP/1.1\r\nhost: a.test\r\nHost: a.test:80\r\n\r\n'), 'ERR_HTTP_DUPLICATE_HOST', 'with absolute-form too');
});

t.test('HTTP host, path and cookies', async (t) => {
  t.equal(httpHead('GET / HTTP/1.1\r\nHost: WWW.Example.TEST:8443\r\n\r\n').host, 'www.example.test', 'lowercase, port stripped');
  t.equal(httpHead('GET / HTTP/1.1\r\nHost: www.example.test.\r\n\r\n').host, 'www.example.test', 'trailing dot stripped');
  t.equal(httpHead('GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n').host, '[::1]', 'IPv6 literal keeps its brackets');
  t.equal(httpHead('GET / HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n').host, '10.0.0.1');
  t.equal(httpHead('GET / HTTP/1.1\r\nHost: a.test:\r\n\r\n').host, 'a.test', 'empty port');
  t.equal(httpHead('GET / HTTP/1.1\r\nHost:\r\n\r\n').host, undefined, 'empty Host');
  t.equal(httpHead('GET / HTTP/1.0\r\n\r\n').host, undefined, 'no Host');
  t.equal(httpHead('GET / HTTP/1.1\r\n\r\n').host, undefined, 'no Host in 1.1 is left to the backend');
  const abs = httpHead('GET HTTPS://Abs.Test:444?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n');
  t.equal(abs.host, 'abs.test', 'absolute-form authority wins over Host (RFC 9112 §3.2.2)');
  t.equal(abs.path, '/', 'empty absolute path is /');
  const opt = httpHead('OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n');
  t.equal(opt.path, '*');
  const conn = httpHead('CONNECT Tunnel.Test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\n\r\n');
  t.same([conn.host, conn.path], ['tunnel.test', '']);
  const q = httpHead('GET /a/b%20c?x=1?y HTTP/1.1\r\n\r\n');
  t.same([q.path, q.target], ['/a/b%20c', '/a/b%20c?x=1?y'], 'path is raw, query cut at the first ?');
  const v = httpHead('GET / HTTP/1.1\r\nX-A:\t  spaced value \t\r\nX-B:\r\nX-C: caf\xe9\r\n\r\n');
  t.same(v.headers, [['x-a', 'spaced value'], ['x-b', ''], ['x-c', 'caf\xe9']], 'OWS trimmed, obs-text kept as latin1');
  const c = httpHead('GET / HTTP/1.1\r\nCookie: a=1;b=2; c; =x; d=; e="q v"\r\nCookie: a=9; f=6\r\n\r\n');
  t.same(Object.fromEntries(c.cookies), { a: '1', b: '2', d: '', e: '"q v"', f: '6' }, 'cookie parsing');
});

t.test('HTTP head length and trailing bytes', async (t) => {
  const s = 'GET / HTTP/1.1\r\nHost: a.test\r\n\r\n';
  const r = parseHttpHead(req(`${s}GET /second HTTP/1.1\r\n\r\n`));
  t.match(r, { status: 'complete', headLength: s.length, head: { path: '/' } }, 'pipelined request ignored');
  const junk = parseHttpHead(req(`${s}\x00\x01\x02 junk \n`));
  t.match(junk, { status: 'complete', headLength: s.length }, 'body bytes are not looked at');
});

t.test('HTTP cap', async (t) => {
  const base = 'GET / HTTP/1.1\r\nX-Pad: ';
  const exact = (total: number) => `${base}${'p'.repeat(total - base.length - 4)}\r\n\r\n`;
  const head = req(exact(200));
  t.equal(head.length, 200);
  t.match(parseHttpHead(head, { maxBytes: 200 }), { status: 'complete', headLength: 200 }, 'a head of exactly maxBytes fits');
  t.match(parseHttpHead(head, { maxBytes: 199 }), { status: 'error', code: 'ERR_HTTP_TOO_LARGE' }, 'one byte over');
  t.equal(parseHttpHead(head.subarray(0, 150), { maxBytes: 199 }).status, 'incomplete', 'below the cap: wait');
  t.match(parseHttpHead(head.subarray(0, 199), { maxBytes: 199 }), { status: 'error', code: 'ERR_HTTP_TOO_LARGE' }, 'at the cap without a blank line');
  // A blank line beyond the cap is not looked for, nor are bytes there judged.
  const beyond = Buffer.concat([head.subarray(0, 196), req('\n\n\x00\r\n\r\n')]);
  t.match(parseHttpHead(beyond, { maxBytes: 196 }), { status: 'error', code: 'ERR_HTTP_TOO_LARGE' });
  const big = req(exact(16384));
  t.equal(parseHttpHead(big).status, 'complete', '16384 by default');
  t.match(parseHttpHead(req(exact(16385))), { status: 'error', code: 'ERR_HTTP_TOO_LARGE' });
  // Every prefix of an oversized head: incomplete, then too large once the cap is reached.
  streamCheck(t, (b) => parseHttpHead(b, { maxBytes: 100 }), head, 100, {
    status: 'error', code: 'ERR_HTTP_TOO_LARGE', message: 'no complete request head within 100 bytes',
  });
});

t.test('looksLikeHttp', async (t) => {
  for (const s of ['G', 'GET', 'GET ', 'POST /', 'OPTIONS', 'M-SEARCH *', 'A'.repeat(32), `${'A'.repeat(32)} `]) {
    t.ok(looksLikeHttp(req(s)), JSON.stringify(s));
  }
  for (const s of ['', ' ', ' GET', 'GET/', '\x16\x03\x01', 'A'.repeat(33), '\r\n', '{']) {
    t.notOk(looksLikeHttp(req(s)), JSON.stringify(s));
  }
  // Whatever looksLikeHttp rejects, parseHttpHead rejects too.
  for (const s of [' ', 'GET/', 'A'.repeat(33), '\x16\x03']) t.equal(httpCode(s), 'ERR_HTTP_BAD_REQUEST_LINE', JSON.stringify(s));
});

// ---------------------------------------------------------------- TLS

interface TlsExpect {
  file: string;
  sni?: string;
  alpn: string[];
  versions: number[];
  records: number;
}

const TLS_FIXTURES: TlsExpect[] = [
  { file: 'tls-openssl-s_client.bin', sni: 'example.test', alpn: [], versions: [0x0304, 0x0303, 0x0302, 0x0301], records: 1 },
  { file: 'tls-openssl-alpn-tls12.bin', sni: 'www.example.test', alpn: ['h2', 'http/1.1'], versions: [0x0303], records: 1 },
  { file: 'tls-curl.bin', sni: 'curl.example.test', alpn: ['h2', 'http/1.1'], versions: [0x0304, 0x0303, 0x0302, 0x0301], records: 1 },
  { file: 'tls-node.bin', sni: 'node.example.test', alpn: ['h2', 'http/1.1'], versions: [0x0304, 0x0303], records: 1 },
  { file: 'tls-synthetic-mlkem-2records.bin', sni: 'example.test', alpn: [], versions: [0x0304, 0x0303, 0x0302, 0x0301], records: 2 },
];

/** The handshake bytes of a record stream (every record is handshake in these fixtures). */
function handshakeBytes(stream: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let p = 0; p < stream.length;) {
    const len = stream.readUInt16BE(p + 3);
    parts.push(stream.subarray(p + 5, p + 5 + len));
    p += 5 + len;
  }
  return Buffer.concat(parts);
}

/** Frame a handshake message as records whose fragment sizes cycle through `sizes`. */
function records(msg: Buffer, sizes: number[] = [16384], type = 22, version = 0x0301): Buffer {
  const out: Buffer[] = [];
  for (let o = 0, k = 0; o < msg.length; k++) {
    const frag = msg.subarray(o, o + sizes[k % sizes.length]);
    const h = Buffer.alloc(5);
    h[0] = type;
    h.writeUInt16BE(version, 1);
    h.writeUInt16BE(frag.length, 3);
    out.push(h, frag);
    o += frag.length;
  }
  return Buffer.concat(out);
}

t.test('ClientHello fixtures from real clients', async (t) => {
  for (const ex of TLS_FIXTURES) {
    t.test(ex.file, async (t) => {
      const buf = fixture(ex.file);
      t.ok(looksLikeTls(buf), 'looksLikeTls');
      t.notOk(looksLikeHttp(buf), 'not looksLikeHttp');
      const full = parseClientHello(buf);
      if (full.status !== 'complete') return t.fail(`not complete: ${JSON.stringify(full)}`);
      const { hello } = full;
      t.equal(hello.sni, ex.sni, 'SNI (lowercase)');
      t.same(hello.alpn, ex.alpn, 'ALPN');
      t.same(hello.versions, ex.versions, 'versions');
      t.equal(hello.recordBytes, buf.length, 'recordBytes covers the whole capture');
      t.equal(handshakeBytes(buf).length, buf.length - 5 * ex.records, `${ex.records} record(s)`);
      t.ok(hello.cipherSuites.length > 10 && hello.cipherSuites.includes(0x00ff), 'cipher suites (with the SCSV)');
      t.equal(hello.grease, false, 'OpenSSL sends no GREASE');
      streamCheck(t, (b) => parseClientHello(b), buf, buf.length, full);

      // The same message framed differently: the result differs only in recordBytes.
      const msg = handshakeBytes(buf);
      for (const sizes of [[1], [2], [3], [4, 1000], [7], [100], [512], [16384]]) {
        const framed = records(msg, sizes);
        const r = parseClientHello(framed);
        t.same(r, { status: 'complete', hello: { ...hello, recordBytes: framed.length } }, `reframed as ${sizes}-byte records`);
      }
      // A few framings also replayed as a stream (the handshake header split across records, etc.).
      for (const sizes of [[2], [5, 300]]) {
        const framed = records(msg, sizes);
        const want = { status: 'complete' as const, hello: { ...hello, recordBytes: framed.length } };
        streamCheck(t, (b) => parseClientHello(b), framed, framed.length, want);
      }
    });
  }
});

t.test('ClientHello followed by other records', async (t) => {
  const buf = fixture('tls-node.bin');
  // early data / change_cipher_spec after the hello are not the parser's business
  const after = Buffer.concat([buf, Buffer.from([20, 3, 3, 0, 1, 1, 23, 3, 3, 0, 2, 9, 9])]);
  t.match(parseClientHello(after), { status: 'complete', hello: { recordBytes: buf.length, sni: 'node.example.test' } });
});

// ---- building ClientHellos by hand

const u8 = (...v: number[]) => Buffer.from(v);
const u16 = (v: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
const vec16 = (b: Buffer) => Buffer.concat([u16(b.length), b]);
const vec8 = (b: Buffer) => Buffer.concat([u8(b.length), b]);
const ext = (type: number, data: Buffer): [number, Buffer] => [type, data];
const sniExt = (...names: Array<string | [number, Buffer]>) => ext(0, vec16(Buffer.concat(names.map((n) =>
  typeof n === 'string' ? Buffer.concat([u8(0), vec16(Buffer.from(n, 'latin1'))]) : Buffer.concat([u8(n[0]), vec16(n[1])])))));
const alpnExt = (...p: string[]) => ext(16, vec16(Buffer.concat(p.map((s) => vec8(Buffer.from(s, 'latin1'))))));
const versionsExt = (...v: number[]) => ext(43, vec8(Buffer.concat(v.map(u16))));
const groupsExt = (...g: number[]) => ext(10, vec16(Buffer.concat(g.map(u16))));
const keyShareExt = (...s: Array<[number, number]>) => ext(51, vec16(Buffer.concat(s.map(([g, n]) => Buffer.concat([u16(g), vec16(Buffer.alloc(n, 7))])))));

interface HelloSpec {
  handshakeType?: number;
  legacyVersion?: number;
  sessionId?: Buffer;
  ciphers?: number[];
  compression?: number[];
  /** null: no extensions block at all */
  extensions?: Array<[number, Buffer]> | null;
  /** appended to the body after the extensions */
  trailing?: Buffer;
  rawCiphers?: Buffer;
  rawExtensions?: Buffer;
}

function hello(spec: HelloSpec = {}): Buffer {
  const exts = spec.extensions === undefined
    ? [sniExt('a.example.test'), alpnExt('h2'), versionsExt(0x0304, 0x0303), groupsExt(0x001d), keyShareExt([0x001d, 32])]
    : spec.extensions;
  const parts = [
    u16(spec.legacyVersion ?? 0x0303),
    Buffer.alloc(32, 0xab),
    vec8(spec.sessionId ?? Buffer.alloc(32, 1)),
    spec.rawCiphers ?? vec16(Buffer.concat((spec.ciphers ?? [0x1301, 0x1302]).map(u16))),
    vec8(Buffer.from(spec.compression ?? [0])),
  ];
  if (spec.rawExtensions) parts.push(spec.rawExtensions);
  else if (exts) parts.push(vec16(Buffer.concat(exts.map(([type, d]) => Buffer.concat([u16(type), vec16(d)])))));
  if (spec.trailing) parts.push(spec.trailing);
  const body = Buffer.concat(parts);
  const h = Buffer.alloc(4);
  h[0] = spec.handshakeType ?? 1;
  h.writeUIntBE(body.length, 1, 3);
  return Buffer.concat([h, body]);
}

const tlsResult = (b: Buffer, opts?: TlsParseOptions) => parseClientHello(b, opts);
const tlsCode = (b: Buffer, opts?: TlsParseOptions): string => {
  const r = parseClientHello(b, opts);
  return r.status === 'error' ? r.code : r.status;
};
const sniOf = (...names: Array<string | [number, Buffer]>) => tlsResult(records(hello({ extensions: [sniExt(...names)] })));

t.test('built ClientHello baseline', async (t) => {
  const stream = records(hello());
  t.same(tlsResult(stream), {
    status: 'complete',
    hello: { sni: 'a.example.test', alpn: ['h2'], versions: [0x0304, 0x0303], cipherSuites: [0x1301, 0x1302], grease: false, recordBytes: stream.length },
  });
  const bare = records(hello({ extensions: null, legacyVersion: 0x0301, sessionId: Buffer.alloc(0) }));
  t.same(tlsResult(bare), {
    status: 'complete',
    hello: { alpn: [], versions: [0x0301], cipherSuites: [0x1301, 0x1302], grease: false, recordBytes: bare.length },
  }, 'no extensions (TLS 1.0 style): versions from legacy_version');
  t.equal(tlsCode(records(hello(), [16384], 22, 0x0303)), 'complete', 'record version 0x0303');
});

t.test('GREASE toleration (RFC 8701)', async (t) => {
  const values = Array.from({ length: 16 }, (_, i) => ((i << 4) | 0x0a) * 0x0101);
  t.same(values.slice(0, 3), [0x0a0a, 0x1a1a, 0x2a2a]);
  t.ok(values.every(isGrease), 'all 16 GREASE values');
  for (const v of [0x0a1a, 0x0b0b, 0x0a0b, 0x1a0a, 0xfafb, 0x0000, 0x0303, 0x001d]) t.notOk(isGrease(v), v.toString(16));

  // A Chrome-like hello: GREASE first in ciphers, groups, key shares and versions, and two GREASE extensions.
  const chromeLike = records(hello({
    ciphers: [0x3a3a, 0x1301, 0x1302, 0x1303],
    extensions: [
      ext(0x2a2a, Buffer.alloc(0)),
      sniExt('grease.example.test'),
      groupsExt(0x4a4a, 0x11ec, 0x001d),
      keyShareExt([0x4a4a, 1], [0x11ec, 1216], [0x001d, 32]),
      versionsExt(0x6a6a, 0x0304, 0x0303),
      alpnExt('h2', 'http/1.1'),
      ext(0xdada, u8(0)),
    ],
  }), [1200]);
  t.same(tlsResult(chromeLike), {
    status: 'complete',
    hello: {
      sni: 'grease.example.test', alpn: ['h2', 'http/1.1'], versions: [0x0304, 0x0303],
      cipherSuites: [0x1301, 0x1302, 0x1303], grease: true, recordBytes: chromeLike.length,
    },
  }, 'GREASE everywhere: flagged, and filtered from ciphers and versions');
  t.equal(handshakeBytes(chromeLike).length > 1216 && chromeLike.length > 1200 + 10, true, 'spans two records');

  // Each place alone sets the flag.
  const alone: Array<[string, HelloSpec]> = [
    ['cipher', { ciphers: [0x1301, 0xfafa] }],
    ['extension', { extensions: [ext(0x0a0a, Buffer.alloc(0))] }],
    ['group', { extensions: [groupsExt(0x001d, 0x9a9a)] }],
    ['key share', { extensions: [keyShareExt([0xbaba, 1])] }],
    ['version', { extensions: [versionsExt(0x0304, 0xcaca)] }],
  ];
  for (const [where, spec] of alone) {
    t.match(tlsResult(records(hello(spec))), { status: 'complete', hello: { grease: true } }, where);
  }
  t.match(tlsResult(records(hello({ extensions: [versionsExt(0xcaca, 0x0304)] }))), { hello: { versions: [0x0304] } });
  t.match(tlsResult(records(hello({ extensions: [ext(0x1a1a, u8(0)), ext(0x2a2a, u8(0))] }))), { status: 'complete' },
    'two different GREASE extensions are not duplicates');
});

t.test('SNI', async (t) => {
  t.match(sniOf('WWW.Example.TEST'), { hello: { sni: 'www.example.test' } }, 'case-folded');
  t.match(sniOf('Example.Test.'), { hello: { sni: 'example.test' } }, 'one trailing dot stripped');
  t.match(sniOf('_acme.example.test'), { hello: { sni: '_acme.example.test' } }, 'underscore allowed');
  t.match(sniOf('x'), { hello: { sni: 'x' } }, 'single label');
  t.match(sniOf('a1-b.c2'), { hello: { sni: 'a1-b.c2' } });
  t.match(sniOf([1, Buffer.from('opaque')]), { status: 'complete', hello: { sni: undefined } }, 'unknown name type skipped');
  t.match(sniOf([1, Buffer.from('opaque')], 'b.test'), { hello: { sni: 'b.test' } }, 'host_name after an unknown type');
  const label63 = 'a'.repeat(63);
  const name253 = [label63, label63, label63, 'a'.repeat(61)].join('.');
  t.equal(name253.length, 253);
  t.match(sniOf(name253), { hello: { sni: name253 } }, '253 bytes');
  t.match(tlsResult(records(hello({ extensions: [] }))), { status: 'complete', hello: { sni: undefined } }, 'no SNI extension');

  const bad: Array<[Array<string | [number, Buffer]>, string]> = [
    [['127.0.0.1'], 'IPv4 literal'],
    [['a.b.123'], 'all-numeric last label'],
    [['::1'], 'IPv6 literal'],
    [['-a.test'], 'label starts with -'],
    [['a-.test'], 'label ends with -'],
    [['a..test'], 'empty label'],
    [['.test'], 'leading dot'],
    [['.'], 'root'],
    [['a.test..'], 'two trailing dots'],
    [[`${'a'.repeat(64)}.test`], '64-byte label'],
    [[`${name253}b`], '254 bytes'],
    [['*.example.test'], 'wildcard'],
    [['a b.test'], 'space'],
    [['a\x00.test'], 'NUL'],
    [['caf\xe9.test'], 'non-ASCII'],
    [['a.test', 'b.test'], 'two host_names'],
    [[''], 'empty host_name'],
  ];
  for (const [names, why] of bad) t.match(sniOf(...names), { status: 'error', code: 'ERR_TLS_BAD_SNI' }, why);
  const raw = (d: Buffer) => tlsCode(records(hello({ extensions: [ext(0, d)] })));
  t.equal(raw(Buffer.alloc(0)), 'ERR_TLS_BAD_SNI', 'empty extension');
  t.equal(raw(u16(0)), 'ERR_TLS_BAD_SNI', 'empty list');
  t.equal(raw(Buffer.concat([u16(10), u8(0), vec16(Buffer.from('a.test'))])), 'ERR_TLS_BAD_SNI', 'list length too long');
  t.equal(raw(Buffer.concat([u16(2), u8(0, 0)])), 'ERR_TLS_BAD_SNI', 'truncated entry');
  t.equal(raw(Buffer.concat([u16(9), u8(0), u16(9), Buffer.from('a.test')])), 'ERR_TLS_BAD_SNI', 'entry overruns');
});

t.test('TLS record errors', async (t) => {
  const msg = hello();
  t.equal(tlsCode(records(msg, [16384], 23)), 'ERR_TLS_NOT_HANDSHAKE', 'application data');
  t.equal(tlsCode(records(msg, [16384], 21)), 'ERR_TLS_NOT_HANDSHAKE', 'alert');
  t.equal(tlsCode(u8(0x15)), 'ERR_TLS_NOT_HANDSHAKE', 'one byte is enough');
  t.equal(tlsCode(u8(0x80, 0x2e, 0x01)), 'ERR_TLS_NOT_HANDSHAKE', 'SSLv2 hello');
  t.equal(tlsCode(Buffer.from('GET / HTTP/1.1\r\n')), 'ERR_TLS_NOT_HANDSHAKE', 'HTTP');
  t.equal(tlsCode(records(msg, [16384], 22, 0x0205)), 'ERR_TLS_BAD_RECORD', 'record version 2.5');
  t.equal(tlsCode(records(msg, [16384], 22, 0x0305)), 'ERR_TLS_BAD_RECORD', 'record version 3.5');
  t.equal(tlsCode(u8(0x16, 0x02)), 'ERR_TLS_BAD_RECORD', 'bad version in a partial header');
  t.equal(tlsCode(u8(0x16, 0x03, 0x07)), 'ERR_TLS_BAD_RECORD', 'bad minor in a partial header');
  t.equal(tlsCode(u8(0x16, 0x03, 0x01, 0x00, 0x00)), 'ERR_TLS_BAD_RECORD', 'zero-length record');
  t.equal(tlsCode(u8(0x16, 0x03, 0x01, 0x40, 0x01, 0x01)), 'ERR_TLS_BAD_RECORD', 'record over 2^14');
  // A non-handshake record in the middle of the hello.
  const two = records(msg, [100]);
  const interleaved = Buffer.concat([two.subarray(0, 105), u8(21, 3, 3, 0, 2, 2, 40), two.subarray(105)]);
  t.equal(tlsCode(interleaved), 'ERR_TLS_BAD_RECORD', 'alert between hello records');
  t.equal(tlsCode(interleaved.subarray(0, 106)), 'ERR_TLS_BAD_RECORD', 'detected from its first byte');
  // The record that completes the hello carries more handshake bytes.
  const extra = records(Buffer.concat([msg, u8(20, 0, 0, 0)]));
  t.equal(tlsCode(extra), 'ERR_TLS_BAD_RECORD', 'bytes after the hello in its record');
  t.equal(tlsCode(extra.subarray(0, 9)), 'ERR_TLS_BAD_RECORD', 'known from the headers alone');
  t.equal(tlsCode(u8(0x16)), 'incomplete');
  t.equal(tlsCode(u8(0x16, 0x03, 0x01, 0x00)), 'incomplete');
  t.equal(tlsCode(Buffer.alloc(0)), 'incomplete');
});

t.test('ClientHello body errors', async (t) => {
  const bad = (spec: HelloSpec) => tlsCode(records(hello(spec)));
  t.equal(tlsCode(records(hello({ handshakeType: 2 }))), 'ERR_TLS_BAD_HELLO', 'ServerHello');
  t.equal(tlsCode(records(hello({ handshakeType: 2 })).subarray(0, 6)), 'ERR_TLS_BAD_HELLO', 'known from the first handshake byte');
  t.equal(bad({ legacyVersion: 0x0200 }), 'ERR_TLS_BAD_HELLO', 'legacy_version 2.0');
  t.equal(bad({ sessionId: Buffer.alloc(33) }), 'ERR_TLS_BAD_HELLO', 'session id of 33');
  t.equal(bad({ rawCiphers: Buffer.concat([u16(3), u8(0x13, 0x01, 0x13)]) }), 'ERR_TLS_BAD_HELLO', 'odd cipher_suites length');
  t.equal(bad({ rawCiphers: u16(0) }), 'ERR_TLS_BAD_HELLO', 'no cipher suites');
  t.equal(bad({ rawCiphers: u16(0x4000) }), 'ERR_TLS_BAD_HELLO', 'cipher_suites overrun');
  t.equal(bad({ compression: [] }), 'ERR_TLS_BAD_HELLO', 'no compression methods');
  t.equal(bad({ rawExtensions: u8(0) }), 'ERR_TLS_BAD_HELLO', 'one byte of extensions length');
  t.equal(bad({ rawExtensions: Buffer.concat([u16(5), u16(0), u16(0)]) }), 'ERR_TLS_BAD_HELLO', 'extensions length too long');
  t.equal(bad({ rawExtensions: Buffer.concat([u16(3), u16(0), u8(0)]) }), 'ERR_TLS_BAD_HELLO', 'truncated extension header');
  t.equal(bad({ rawExtensions: Buffer.concat([u16(4), u16(99), u16(1)]) }), 'ERR_TLS_BAD_HELLO', 'extension overruns');
  t.equal(bad({ trailing: u8(0) }), 'ERR_TLS_BAD_HELLO', 'bytes after the extensions');
  t.equal(bad({ extensions: [alpnExt('h2'), alpnExt('h2')] }), 'ERR_TLS_BAD_HELLO', 'duplicate extension');
  t.equal(bad({ extensions: [ext(41, u8(0, 0)), alpnExt('h2')] }), 'ERR_TLS_BAD_HELLO', 'pre_shared_key not last');
  t.equal(bad({ extensions: [alpnExt('h2'), ext(41, u8(0, 0))] }), 'complete', 'pre_shared_key last');
  t.equal(bad({ extensions: [alpnExt('h2', '')] }), 'ERR_TLS_BAD_HELLO', 'empty ALPN name');
  t.equal(bad({ extensions: [ext(16, u16(0))] }), 'ERR_TLS_BAD_HELLO', 'empty ALPN list');
  t.equal(bad({ extensions: [ext(16, Buffer.concat([u16(3), u8(5), Buffer.from('h2')]))] }), 'ERR_TLS_BAD_HELLO', 'ALPN name overruns');
  t.equal(bad({ extensions: [ext(43, u8(3, 3, 4, 3))] }), 'ERR_TLS_BAD_HELLO', 'odd supported_versions');
  t.equal(bad({ extensions: [ext(43, u8(0))] }), 'ERR_TLS_BAD_HELLO', 'empty supported_versions');
  t.equal(bad({ extensions: [ext(10, Buffer.concat([u16(4), u16(0x1d)]))] }), 'ERR_TLS_BAD_HELLO', 'supported_groups length');
  t.equal(bad({ extensions: [ext(51, Buffer.concat([u16(4), u16(0x1d), u16(0)]))] }), 'ERR_TLS_BAD_HELLO', 'empty key_exchange');
  t.equal(bad({ extensions: [ext(51, Buffer.concat([u16(6), u16(0x1d), u16(40), u16(0)]))] }), 'ERR_TLS_BAD_HELLO', 'key share overruns');
  t.equal(bad({ extensions: [ext(51, u16(0))] }), 'complete', 'empty client_shares (asks for a HelloRetryRequest)');
  t.equal(bad({ sessionId: Buffer.alloc(0) }), 'complete', 'empty session id');
  t.equal(bad({ extensions: [ext(0xffff, Buffer.alloc(300, 1))] }), 'complete', 'unknown extensions are skipped');
  const tiny = Buffer.concat([u8(1, 0, 0, 3), u8(3, 3, 0)]);
  t.equal(tlsCode(records(tiny)), 'ERR_TLS_BAD_HELLO', 'too short for a random');
});

t.test('TLS cap', async (t) => {
  const big = fixture('tls-synthetic-mlkem-2records.bin'); // 1545 bytes, handshake message 1535
  t.equal(tlsCode(big, { maxBytes: 1545 }), 'complete', 'exactly maxBytes');
  t.equal(tlsCode(big, { maxBytes: 1544 }), 'ERR_TLS_TOO_LARGE', 'one byte over');
  t.equal(tlsCode(big.subarray(0, 1500), { maxBytes: 1544 }), 'incomplete', 'below the cap: wait');
  t.equal(tlsCode(big.subarray(0, 9), { maxBytes: 1000 }), 'ERR_TLS_TOO_LARGE', 'a declared length over the cap fails at once');
  t.equal(tlsCode(u8(0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff)), 'ERR_TLS_TOO_LARGE', 'a 16 MiB hello against the default 64 KiB');
  // Bytes past the cap are never judged: garbage there changes nothing.
  const corrupted = Buffer.concat([big.subarray(0, 1544), Buffer.alloc(100, 0xee)]);
  t.equal(tlsCode(corrupted, { maxBytes: 1544 }), 'ERR_TLS_TOO_LARGE');
  // A hello over 2^14 bytes must span records; the default cap takes it.
  const huge = hello({ extensions: [sniExt('huge.test'), ext(21, Buffer.alloc(40000))] });
  const hugeStream = records(huge);
  t.equal(hugeStream.length, huge.length + 5 * 3, 'three records');
  t.match(tlsResult(hugeStream), { status: 'complete', hello: { sni: 'huge.test', recordBytes: hugeStream.length } });
  t.equal(tlsCode(hugeStream, { maxBytes: 40000 }), 'ERR_TLS_TOO_LARGE');
  // The declared length is known after 9 bytes (record header + handshake header): too large from there on.
  streamCheck(t, (b) => parseClientHello(b, { maxBytes: 300 }), big.subarray(0, 400), 9, {
    status: 'error', code: 'ERR_TLS_TOO_LARGE', message: 'ClientHello of 1535 bytes exceeds the 300-byte cap',
  });
});

t.test('looksLikeTls', async (t) => {
  for (const b of [[0x16], [0x16, 0x03], [0x16, 0x03, 0x00], [0x16, 0x03, 0x01], [0x16, 0x03, 0x04, 0x00]]) t.ok(looksLikeTls(u8(...b)), JSON.stringify(b));
  for (const b of [[], [0x17], [0x16, 0x02], [0x16, 0x03, 0x05], [0x47, 0x45, 0x54]]) t.notOk(looksLikeTls(u8(...b)), JSON.stringify(b));
});

// ---------------------------------------------------------------- both

t.test('mutated fixtures: no throw, and a prefix never contradicts a longer input', async (t) => {
  // Deterministic LCG so a failure reproduces.
  let seed = 0x5eed;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
    return seed % n;
  };
  const files = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.bin')).sort();
  const parsers: Array<[string, (b: Buffer) => Result]> = [
    ['http', (b) => parseHttpHead(b, { maxBytes: 600 })],
    ['tls', (b) => parseClientHello(b, { maxBytes: 1200 })],
  ];
  const problems: string[] = [];
  let inputs = 0;
  for (let it = 0; it < 300; it++) {
    const name = files[rnd(files.length)];
    const buf = Buffer.from(fixture(name));
    // Mutate past the first bytes most of the time, so the deeper parsers get exercised.
    for (let k = rnd(3) + 1; k > 0; k--) {
      const i = rnd(3) === 0 ? rnd(buf.length) : 9 + rnd(buf.length - 9);
      buf[i] = [rnd(256), buf[i] ^ (1 << rnd(8)), 0x0d, 0x0a, 0x20, 0x3a, 0x00, 0x0a0a & 0xff][rnd(8)];
    }
    for (const [kind, parse] of parsers) {
      inputs++;
      let first: Result | undefined;
      for (let n = 0; n <= buf.length; n++) {
        let r: Result;
        try {
          r = parse(buf.subarray(0, n));
        } catch (e) {
          problems.push(`${kind} ${name} #${it} threw at ${n}: ${String(e)}`);
          break;
        }
        if (first === undefined) {
          if (r.status !== 'incomplete') first = r;
        } else if (!isDeepStrictEqual(r, first)) {
          problems.push(`${kind} ${name} #${it} at ${n}: ${JSON.stringify(first)} then ${JSON.stringify(r)}`);
          break;
        }
      }
    }
  }
  t.same(problems.slice(0, 3), [], `${inputs} mutated inputs, every prefix (${problems.length} problems)`);
});
