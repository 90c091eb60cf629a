// Per-request routing on plain buffers: HTTP/1.x framing (src/host/http-framing.ts)
// fed in every split, the router's host-side questions (route, poolHas,
// mayMove, sticky), and the routing the blob carries.
import t from 'tap';
import fc from 'fast-check';
import { BodyReader, bodyFraming, headEnd, ResponseCounter } from '../src/host/http-framing';
import { Router } from '../src/classifier/router';
import { decodeBlob, encodeBlob, ReplayWindow } from '../src/transfer';
import { validateRouting } from '../src/classifier/rules-schema';
import type { RequestInfo } from '../src/classifier/request-info';
import { classifyBytes } from '../src/classifier/classify';

/** Feed `buf` to a fresh counter in pieces of `size` bytes. */
const countIn = (methods: string[], buf: Buffer, size: number) => {
  const c = new ResponseCounter();
  for (const m of methods) c.expect(m);
  for (let i = 0; i < buf.length; i += size) c.feed(buf.subarray(i, i + size));
  return c;
};

t.test('a request that is its connection\'s last: nothing after it can move', async (t) => {
  const base: RequestInfo = { kind: 'unknown', clientIp: '198.18.0.2', clientPort: 40000, vip: '198.18.0.100', vipPort: 80 };
  const last = (head: string) => {
    const r = classifyBytes(Buffer.from(`${head}\r\n\r\n`), base);
    return r.status === 'decided' ? r.info.lastRequest : `not decided: ${r.status}`;
  };
  t.equal(last('GET / HTTP/1.1\r\nHost: a'), false, 'HTTP/1.1 keeps the connection by default');
  t.equal(last('GET / HTTP/1.1\r\nHost: a\r\nConnection: close'), true, 'Connection: close');
  t.equal(last('GET / HTTP/1.1\r\nHost: a\r\nconnection: Upgrade, CLOSE'), true, 'close among other options, any case');
  t.equal(last('GET / HTTP/1.1\r\nHost: a\r\nConnection: closed'), false, 'a token that only starts with close');
  t.equal(last('GET / HTTP/1.0\r\nHost: a'), true, 'HTTP/1.0 closes by default');
  t.equal(last('GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive'), false, 'HTTP/1.0 with keep-alive');
  t.equal(last('GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close'), true, 'close wins over keep-alive');
});

t.test('body framing from headers', async (t) => {
  t.same(bodyFraming([['content-length', '12']], true), { kind: 'length', n: 12 });
  t.same(bodyFraming([['content-length', '0']], true), { kind: 'none' });
  t.same(bodyFraming([], true), { kind: 'none' }, 'a request without either has no body');
  t.same(bodyFraming([], false), { kind: 'close' }, 'a response without either reads to close');
  t.same(bodyFraming([['transfer-encoding', 'gzip, chunked']], true), { kind: 'chunked' });
  t.equal(bodyFraming([['transfer-encoding', 'gzip']], true), null, 'a request not ending in chunked cannot be framed');
  t.equal(bodyFraming([['content-length', '1'], ['content-length', '2']], true), null, 'two lengths that differ');
  t.equal(bodyFraming([['content-length', '-1']], true), null, 'a negative length');
  t.equal(headEnd(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\nrest')), 27);
  t.equal(headEnd(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n')), -1);
});

t.test('chunked bodies, in every split', async (t) => {
  const body = Buffer.from('4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n');
  const after = Buffer.from('NEXT');
  const all = Buffer.concat([body, after]);
  for (let size = 1; size <= all.length; size++) {
    const r = new BodyReader({ kind: 'chunked' });
    let taken = 0;
    for (let i = 0; i < all.length && !r.done; i += size) taken += r.consume(all.subarray(i, i + size), 0);
    if (!r.done || taken !== body.length) {
      t.fail(`split ${size}: done ${r.done}, took ${taken} of ${body.length}`);
      return;
    }
  }
  t.pass('the body ends exactly before the next message, whatever the split');
  const bad = new BodyReader({ kind: 'chunked' });
  bad.consume(Buffer.from('zz\r\n'), 0);
  t.ok(bad.failed, 'a bad chunk size fails the framing');
  const len = new BodyReader({ kind: 'length', n: 5 });
  t.equal(len.consume(Buffer.from('abcdefg'), 0), 5, 'a length body takes its bytes only');
  t.ok(len.done);
});

t.test('responses counted as the application writes them', async (t) => {
  const chunked = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhi /a\n\r\n0\r\n\r\n';
  const sized = 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc';
  const interim = 'HTTP/1.1 100 Continue\r\n\r\n';
  const head = 'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n';
  const noContent = 'HTTP/1.1 204 No Content\r\n\r\n';
  const all = Buffer.from(chunked + interim + sized + head + noContent);
  for (let size = 1; size <= all.length; size++) {
    const c = countIn(['GET', 'POST', 'HEAD', 'DELETE'], all, size);
    if (c.completed !== 4 || c.outstanding !== 0 || c.unframed) {
      t.fail(`split ${size}: completed ${c.completed}, outstanding ${c.outstanding}, unframed ${c.unframed}`);
      return;
    }
  }
  t.pass('chunked, 100 Continue then a sized one, HEAD (no body despite its length), 204: four, in every split');
  const partial = countIn(['GET'], Buffer.from(sized.slice(0, -1)), 7);
  t.same([partial.completed, partial.outstanding], [0, 1], 'one byte short: still owed');
  t.ok(countIn(['GET'], Buffer.from('HTTP/1.1 200 OK\r\n\r\nbody'), 4).unframed, 'a read-to-close response is unframed');
  t.ok(countIn(['GET'], Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'), 9).unframed,
    'a protocol switch is unframed');
  t.ok(countIn(['GET'], Buffer.from('garbage\r\n\r\n'), 3).unframed, 'a broken head is unframed');
});

t.test('the router answers the host: route, pool membership, whether a connection may move, sticky', async (t) => {
  const v = validateRouting({
    pools: [
      { name: 'all', hosts: [{ host: 'host1' }, { host: 'host2' }] },
      { name: 'one', hosts: [{ host: 'host1' }] },
      { name: 'two', hosts: [{ host: 'host2' }] },
    ],
    rules: [
      { name: 'p1', match: { pathPrefix: '/host1' }, pool: 'one' },
      { name: 'p2', match: { pathPrefix: '/host2' }, pool: 'two', sticky: true },
      { name: 'tls', port: 443, match: { sni: 'a.example' }, pool: 'two' },
    ],
    defaults: [{ vip: '198.18.0.100', port: 80, pool: 'all' }, { vip: '198.18.0.100', port: 8080, pool: 'all' }],
  }, ['host1', 'host2']);
  if (!v.ok) throw new Error(JSON.stringify(v.problems));
  const r = new Router(v.routing, ['host1', 'host2']);
  const req = (path: string, port = 80): RequestInfo => ({ kind: 'http', vip: '198.18.0.100', vipPort: port, clientIp: '198.18.0.1',
    clientPort: 1, method: 'GET', path, host: 'x', headers: [], cookies: new Map() });
  t.same(r.route(req('/host2/x')), { rule: 'p2', pool: 'two' });
  t.same(r.route(req('/')), { rule: null, pool: 'all' }, 'the default pool');
  t.equal(r.route(req('/', 9999)), null, 'no route');
  t.ok(r.poolHas('all', 'host1'));
  t.notOk(r.poolHas('two', 'host1'));
  t.ok(r.mayMove('198.18.0.100', 80, 'host1'), 'port 80 has rules to pools without host1');
  t.ok(r.isSticky('p2'));
  t.notOk(r.isSticky('p1'));
  t.notOk(r.isSticky(null));
  const single = validateRouting({ pools: [{ name: 'all', hosts: [{ host: 'h' }] }], rules: [],
    defaults: [{ vip: '198.18.0.100', port: 80, pool: 'all' }] }, ['h']);
  if (!single.ok) throw new Error('single');
  t.notOk(new Router(single.routing, ['h']).mayMove('198.18.0.100', 80, 'h'), 'one pool with this host: nothing to move to');
  t.same(JSON.parse(r.routingJson.toString()).rules.map((x: { name: string }) => x.name), ['p1', 'p2', 'tls'],
    'the routing travels as JSON');
});

t.test('a blob carries the routing, authenticated; without it a blob encodes exactly as before', async (t) => {
  const key = Buffer.alloc(32, 7);
  const base = {
    v: 1 as const, flowId: 7, clientIp: '198.18.0.1', clientPort: 40000, vip: '198.18.0.100', vipPort: 80,
    iss: 1, irs: 100, sndNxt: 2, rcvNxt: 105, sndWnd: 65535, rcvWnd: 65535, sndWscale: 7, rcvWscale: 7, mss: 1460,
    sackOk: true, tsOk: true, tsVal: 5, tsEcr: 6, data: Buffer.from('GET '), decision: { rule: null, pool: 'p', host: 'h' },
    created: Date.now(), nonce: Buffer.alloc(16, 1),
  };
  const routing = Buffer.from('{"pools":[],"rules":[],"defaults":[]}');
  const plain = encodeBlob(base, key);
  t.same(encodeBlob({ ...base, routing: undefined }, key), plain, 'an absent routing changes no byte');
  const withRouting = encodeBlob({ ...base, routing }, key);
  const back = decodeBlob(withRouting, key, { replay: new ReplayWindow() });
  t.same(back.routing, routing, 'the routing decodes as sent');
  t.equal(decodeBlob(plain, key, { replay: new ReplayWindow() }).routing, undefined, 'and is absent when not sent');
  const forged = Buffer.from(withRouting);
  forged[forged.length - 40] ^= 1;
  t.throws(() => decodeBlob(forged, key, { replay: new ReplayWindow() }), { code: 'ERR_BLOB_MAC' }, 'the MAC covers it');
  t.throws(() => encodeBlob({ ...base, routing: Buffer.alloc(65537) }, key), { code: 'ERR_BLOB_SCHEMA' }, 'at most 64 KiB');
});

t.test('property: any bytes, any split: the counters never throw and do not depend on the split', async (t) => {
  const piece = fc.oneof(
    fc.constantFrom('HTTP/1.1 200 OK\r\n', 'Content-Length: 3\r\n', 'Transfer-Encoding: chunked\r\n', '\r\n', 'abc',
      '3\r\nabc\r\n', '0\r\n\r\n', 'HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 204 No Content\r\n\r\n', 'zz\r\n'),
    fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b).toString('latin1')));
  fc.assert(fc.property(fc.array(piece, { maxLength: 30 }), fc.integer({ min: 1, max: 17 }), (parts, size) => {
    const buf = Buffer.from(parts.join(''), 'latin1');
    const whole = countIn(['GET', 'GET', 'GET', 'GET'], buf, buf.length || 1);
    const split = countIn(['GET', 'GET', 'GET', 'GET'], buf, size);
    return whole.completed === split.completed && whole.unframed === split.unframed;
  }), { numRuns: 2000 });
  t.pass('2000 random response streams: the same count whole and split');
});
