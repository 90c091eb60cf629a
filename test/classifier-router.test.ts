// The classifier's routing: the routing schema and its cross-checks (key
// paths), each rule matcher and rule order, defaults and resets, health
// filtering, least-pending, Maglev stability and weights, and failover.
import t from 'tap';
import YAML from 'yaml';
import { MaglevTable } from '../src/classifier/maglev';
import type { RequestInfo } from '../src/classifier/request-info';
import { Decision, Router } from '../src/classifier/router';
import { Routing, validateRouting } from '../src/classifier/rules-schema';

const HOSTS = ['api1', 'api2', 'api3', 'web1', 'web2', 'tls1', 'tls2', 'def1', 'def2', 'lp1', 'lp2', 'lp3', 'spare'];
const VIP = '192.0.2.10';

const ROUTING_YAML = `
pools:
  - name: api
    hosts: [{ host: api1 }, { host: api2 }, { host: api3 }]
  - name: web
    hosts: [{ host: web1 }, { host: web2 }]
  - name: tls
    hosts: [{ host: tls1 }, { host: tls2 }]
  - name: default
    hosts: [{ host: def1 }, { host: def2 }]
  - name: lp
    choice: least-pending
    hosts: [{ host: lp1, weight: 1 }, { host: lp2, weight: 5 }, { host: lp3, weight: 5 }]
rules:
  - { name: writes, match: { method: [POST, PUT], pathPrefix: /api/ }, pool: lp }
  - { name: api, match: { pathPrefix: /api/ }, pool: api }
  - { name: wild, match: { host: '*.example.com' }, pool: web }
  - { name: exact, match: { host: example.com }, pool: api }
  - { name: canary-header, match: { header: { name: X-Canary, value: 'yes' } }, pool: lp }
  - { name: ua-regex, match: { header: { name: user-agent, regex: '^curl/' } }, pool: lp }
  - { name: has-debug, match: { header: { name: x-debug } }, pool: web }
  - { name: session, match: { cookie: { name: sid, value: beta } }, pool: lp }
  - { name: any-cookie, match: { cookie: { name: pref } }, pool: web }
  - { name: sni-exact, match: { sni: secure.example.org }, pool: tls }
  - { name: sni-wild, match: { sni: '*.tls.test' }, pool: lp }
  - { name: other-vip, vip: 192.0.2.20, port: 8443, match: {}, pool: web }
defaults:
  - { vip: ${VIP}, port: 80, pool: default }
  - { vip: ${VIP}, port: 443, pool: default, onUndecided: reset }
  - { vip: 192.0.2.30, port: 80, onUndecided: reset }
`;

function routing(): Routing {
  const r = validateRouting(YAML.parse(ROUTING_YAML), HOSTS);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.routing;
}

const http = (over: Partial<RequestInfo> = {}): RequestInfo => ({
  vip: VIP, vipPort: 80, clientIp: '198.51.100.7', clientPort: 40000, kind: 'http',
  method: 'GET', path: '/', host: 'www.other.test', headers: [], cookies: new Map(), ...over,
});
const tls = (sni: string, over: Partial<RequestInfo> = {}): RequestInfo => ({
  vip: VIP, vipPort: 443, clientIp: '198.51.100.7', clientPort: 40000, kind: 'tls', sni, alpn: ['h2'], ...over,
});
const allUp = () => true;
const noPending = () => 0;
const clientIp = (k: number) => `10.${(k >>> 16) & 255}.${(k >>> 8) & 255}.${k & 255}`;

/** "pool/rule/host", or the kind and reason. */
function show(d: Decision): string {
  return d.kind === 'host' ? `${d.pool}/${d.rule}/${d.host}` : `${d.kind}: ${d.reason}`;
}
function ruleOf(router: Router, info: RequestInfo): string | null | undefined {
  const d = router.decide(info, allUp, noPending);
  return d.kind === 'host' ? d.rule : undefined;
}

t.test('validateRouting fills defaults', async (t) => {
  const r = routing();
  t.equal(r.pools[0].choice, 'maglev');
  t.equal(r.pools[0].hosts[0].weight, 1);
  t.equal(r.defaults[0].onUndecided, 'default-pool');
  const empty = validateRouting({}, []);
  t.same(empty, { ok: true, routing: { pools: [], rules: [], defaults: [] } });
  const doc = { pools: [{ name: 'p', hosts: [{ host: 'a' }] }] };
  validateRouting(doc, ['a']);
  t.same(doc, { pools: [{ name: 'p', hosts: [{ host: 'a' }] }] }, 'input not modified');
});

t.test('validation errors carry key paths', async (t) => {
  const base = () => YAML.parse(ROUTING_YAML);
  const cases: [string, (d: any) => void, string, RegExp][] = [
    ['rule names an unknown pool', (d) => { d.rules[2].pool = 'nope'; }, '/rules/2/pool', /unknown pool 'nope'/],
    ['default names an unknown pool', (d) => { d.defaults[1].pool = 'nope'; }, '/defaults/1/pool', /unknown pool/],
    ['default without pool and not reset', (d) => { delete d.defaults[0].pool; }, '/defaults/0/pool', /required unless onUndecided is 'reset'/],
    ['duplicate default VIP:port', (d) => { d.defaults.push({ vip: VIP, port: 80, pool: 'api' }); }, '/defaults/3', /second default for 192\.0\.2\.10:80/],
    ['pool names an unknown host', (d) => { d.pools[0].hosts[1].host = 'ghost'; }, '/pools/0/hosts/1/host', /unknown host 'ghost'/],
    ['host twice in a pool', (d) => { d.pools[1].hosts[1].host = 'web1'; }, '/pools/1/hosts/1/host', /listed twice/],
    ['duplicate pool name', (d) => { d.pools[3].name = 'api'; }, '/pools/3/name', /duplicate pool name 'api'/],
    ['duplicate rule name', (d) => { d.rules[4].name = 'api'; }, '/rules/4/name', /duplicate rule name 'api'/],
    ['invalid regex', (d) => { d.rules[5].match.header.regex = '(unclosed'; }, '/rules/5/match/header/regex', /invalid regular expression/],
    ['value and regex', (d) => { d.rules[5].match.header.value = 'x'; }, '/rules/5/match/header', /not both/],
    ['sni mixed with http', (d) => { d.rules[9].match.host = 'a.test'; }, '/rules/9/match', /can never both match/],
    ['bad VIP', (d) => { d.rules[11].vip = '192.0.2'; }, '/rules/11/vip', /expected dotted-quad IPv4 address \(got "192\.0\.2"\)/],
    ['weight out of range', (d) => { d.pools[4].hosts[0].weight = 101; }, '/pools/4/hosts/0/weight', /100/],
    ['weight not an integer', (d) => { d.pools[4].hosts[0].weight = 1.5; }, '/pools/4/hosts/0/weight', /integer/],
    ['unknown choice', (d) => { d.pools[0].choice = 'random'; }, '/pools/0/choice', /'maglev' \(client-address affinity\) or 'least-pending'/],
    ['unknown onUndecided', (d) => { d.defaults[0].onUndecided = 'drop'; }, '/defaults/0/onUndecided', /'default-pool' or 'reset'/],
    ['empty pool', (d) => { d.pools[0].hosts = []; }, '/pools/0/hosts', /.+/],
    ['bad host pattern', (d) => { d.rules[2].match.host = 'a.*.example.com'; }, '/rules/2/match/host', /exactly one more label/],
    ['bad method', (d) => { d.rules[0].match.method = ['GET', 'BAD METHOD']; }, '/rules/0/match/method', /HTTP method/],
    ['unknown match field', (d) => { d.rules[1].match.query = 'x'; }, '/rules/1/match/query', /.+/],
    ['port out of range', (d) => { d.rules[11].port = 0; }, '/rules/11/port', /1/],
  ];
  for (const [name, mutate, path, msg] of cases) {
    const doc = base();
    mutate(doc);
    const r = validateRouting(doc, HOSTS);
    if (r.ok) {
      t.fail(`${name}: accepted`);
      continue;
    }
    const p = r.problems.find((p) => p.path === path);
    t.ok(p, `${name}: names ${path} (got ${r.problems.map((p) => `${p.path} ${p.message}`).join('; ')})`);
    t.match(p?.message, msg, name);
  }
  t.same(validateRouting([1], HOSTS), { ok: false, problems: [{ path: '/', message: 'expected a mapping with pools, rules, defaults' }] });
  const nested = validateRouting({ rules: [{ name: 'r', match: {}, pool: 'x' }] }, [], '/routing');
  t.same(nested, { ok: false, problems: [{ path: '/routing/rules/0/pool', message: "unknown pool 'x'" }] }, 'basePath prefixes paths');
});

t.test('rules: order and each matcher', async (t) => {
  const router = new Router(routing(), HOSTS, { maglevSize: 251 });
  // Order: a POST to /api/ matches both 'writes' and 'api'; the first wins.
  t.equal(ruleOf(router, http({ method: 'POST', path: '/api/x' })), 'writes');
  t.equal(ruleOf(router, http({ method: 'PUT', path: '/api/x' })), 'writes', 'method list');
  t.equal(ruleOf(router, http({ method: 'GET', path: '/api/x' })), 'api', 'method not in list falls through');
  t.equal(ruleOf(router, http({ method: 'post', path: '/api/x' })), 'api', 'methods are case-sensitive');
  t.equal(ruleOf(router, http({ path: '/apiary' })), null, 'pathPrefix /api/ does not match /apiary');
  t.equal(ruleOf(router, http({ path: undefined })), null, 'no path');

  // Host: exact, and '*.' taking exactly one label.
  t.equal(ruleOf(router, http({ host: 'a.example.com' })), 'wild');
  t.equal(ruleOf(router, http({ host: 'a.example.com.' })), 'wild', 'trailing dot ignored');
  t.equal(ruleOf(router, http({ host: 'example.com' })), 'exact', "'*.example.com' does not match example.com");
  t.equal(ruleOf(router, http({ host: 'example.com.' })), 'exact');
  t.equal(ruleOf(router, http({ host: 'a.b.example.com' })), null, "'*.example.com' does not match a.b.example.com");
  t.equal(ruleOf(router, http({ host: '.example.com' })), null, 'empty label');
  t.equal(ruleOf(router, http({ host: 'aexample.com' })), null);
  t.equal(ruleOf(router, http({ host: 'example.com.evil.test' })), null);
  t.equal(ruleOf(router, http({ host: undefined })), null, 'no host');

  // Header: exact (name case-insensitive in config), regex, presence, repeated headers.
  t.equal(ruleOf(router, http({ headers: [['x-canary', 'yes']] })), 'canary-header');
  t.equal(ruleOf(router, http({ headers: [['x-canary', 'YES']] })), null, 'value is exact');
  t.equal(ruleOf(router, http({ headers: [['x-canary', 'no'], ['x-canary', 'yes']] })), 'canary-header', 'any occurrence');
  t.equal(ruleOf(router, http({ headers: [['user-agent', 'curl/8.5.0']] })), 'ua-regex');
  t.equal(ruleOf(router, http({ headers: [['user-agent', 'Mozilla/5.0 curl/8']] })), null, 'regex anchored by its ^');
  t.equal(ruleOf(router, http({ headers: [['x-debug', '']] })), 'has-debug', 'presence');
  t.equal(ruleOf(router, http({ headers: undefined })), null);

  // Cookie: exact value, presence.
  t.equal(ruleOf(router, http({ cookies: new Map([['sid', 'beta']]) })), 'session');
  t.equal(ruleOf(router, http({ cookies: new Map([['sid', 'stable']]) })), null);
  t.equal(ruleOf(router, http({ cookies: new Map([['pref', '']]) })), 'any-cookie');
  t.equal(ruleOf(router, http({ cookies: undefined })), null);

  // SNI: exact and one-label wildcard; never matches HTTP, and HTTP rules never match TLS.
  t.equal(ruleOf(router, tls('secure.example.org')), 'sni-exact');
  t.equal(ruleOf(router, tls('x.tls.test')), 'sni-wild');
  t.equal(ruleOf(router, tls('tls.test')), null);
  t.equal(ruleOf(router, tls('a.x.tls.test')), null);
  t.equal(ruleOf(router, tls('a.example.com')), null, 'host rule does not match TLS');
  t.equal(ruleOf(router, http({ host: 'secure.example.org', sni: 'secure.example.org' } as Partial<RequestInfo>)), null, 'sni rule does not match HTTP');
  t.equal(ruleOf(router, tls('', { sni: undefined })), null, 'ClientHello without SNI');

  // VIP and port restrict a rule; an empty match then takes everything, even unparsed.
  t.equal(ruleOf(router, http({ vip: '192.0.2.20', vipPort: 8443 })), 'other-vip');
  t.equal(ruleOf(router, { vip: '192.0.2.20', vipPort: 8443, clientIp: '198.51.100.7', clientPort: 1, kind: 'unknown' }), 'other-vip');
  t.equal(show(router.decide(http({ vip: '192.0.2.20', vipPort: 80 }), allUp, noPending)), 'none: no rule matched and no default for this VIP:port');
});

t.test('defaults and undecided connections', async (t) => {
  const router = new Router(routing(), HOSTS, { maglevSize: 251 });
  t.match(show(router.decide(http(), allUp, noPending)), /^default\/null\/def[12]$/, 'no rule: the VIP:port default pool');
  t.match(show(router.decide(tls('nothing.test'), allUp, noPending)), /^default\/null\/def[12]$/);
  t.equal(show(router.decide(http({ vip: '192.0.2.30' }), allUp, noPending)), 'reset: no rule matched on 192.0.2.30:80 and no default pool');

  const undecided = (vip: string, vipPort: number) => show(router.decideUndecided(
    { vip, vipPort, clientIp: '198.51.100.7', clientPort: 1, kind: 'unknown' }, allUp, noPending));
  t.match(undecided(VIP, 80), /^default\/null\/def[12]$/, "onUndecided 'default-pool'");
  t.equal(undecided(VIP, 443), 'reset: request undecided on 192.0.2.10:443', "onUndecided 'reset' even with a default pool");
  t.equal(undecided('192.0.2.30', 80), 'reset: request undecided on 192.0.2.30:80');
  t.match(undecided('192.0.2.99', 80), /^none: /, 'unknown VIP:port');
});

t.test('health: only healthy hosts; none when the pool is down', async (t) => {
  const router = new Router(routing(), HOSTS, { maglevSize: 251 });
  const down = new Set(['api1', 'api2']);
  const health = (h: string) => !down.has(h);
  for (let k = 0; k < 200; k++) {
    const d = router.decide(http({ path: '/api/v1', clientIp: clientIp(k) }), health, noPending);
    if (d.kind !== 'host' || d.host !== 'api3') return t.fail(`client ${k}: ${show(d)}`);
  }
  down.add('api3');
  t.equal(show(router.decide(http({ path: '/api/v1' }), health, noPending)), 'none: no healthy host in pool api');
  down.clear();
  const seen = new Set<string>();
  for (let k = 0; k < 200; k++) {
    const d = router.decide(http({ path: '/api/v1', clientIp: clientIp(k) }), health, noPending);
    if (d.kind === 'host') seen.add(d.host);
  }
  t.same([...seen].sort(), ['api1', 'api2', 'api3'], 'back up: all used again');
});

t.test('least-pending: fewest pending, ties by weight then name', async (t) => {
  const router = new Router(routing(), HOSTS);
  const pending = new Map([['lp1', 3], ['lp2', 1], ['lp3', 2]]);
  const post = http({ method: 'POST', path: '/api/x' });
  const pick = (health: (h: string) => boolean = allUp) => show(router.decide(post, health, (h) => pending.get(h) ?? 0));
  t.equal(pick(), 'lp/writes/lp2', 'fewest pending');
  pending.set('lp2', 5);
  t.equal(pick(), 'lp/writes/lp3');
  pending.set('lp1', 0).set('lp2', 0).set('lp3', 0);
  t.equal(pick(), 'lp/writes/lp2', 'tie: weight 5 beats weight 1, then name lp2 < lp3');
  t.equal(pick((h) => h !== 'lp2'), 'lp/writes/lp3', 'unhealthy skipped');
  t.equal(pick((h) => h === 'lp1'), 'lp/writes/lp1');
});

t.test('Maglev in the router: affinity, stability when a host leaves and returns, no rebuild per request', async (t) => {
  const many = Array.from({ length: 10 }, (_, i) => `m${i}`);
  const r = validateRouting({
    pools: [{ name: 'big', hosts: many.map((host) => ({ host })) }],
    defaults: [{ vip: VIP, port: 80, pool: 'big' }],
  }, many);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  const router = new Router(r.routing, many, { maglevSize: 4099 });
  const down = new Set<string>();
  const health = (h: string) => !down.has(h);
  const N = 20000;
  const route = () => Array.from({ length: N }, (_, k) => {
    const d = router.decide(http({ clientIp: clientIp(k) }), health, noPending);
    return d.kind === 'host' ? d.host : show(d);
  });

  const builds = { n: 0 };
  const build = MaglevTable.prototype.build;
  MaglevTable.prototype.build = function (this: MaglevTable, ...a) { builds.n++; return build.apply(this, a); };
  t.teardown(() => { MaglevTable.prototype.build = build; });

  const before = route();
  t.equal(builds.n, 1, 'one build for 20000 decisions');
  t.same(route(), before, 'same client, same host');
  const d1 = router.decide(http({ clientIp: '10.0.0.1', clientPort: 1 }), health, noPending);
  t.equal(router.decide(http({ clientIp: '10.0.0.1', clientPort: 2 }), health, noPending), d1, 'keyed by client address only; decisions are shared objects');

  down.add('m3');
  const during = route();
  let moved = 0;
  let others = 0;
  for (let k = 0; k < N; k++) {
    if (before[k] === 'm3') {
      if (during[k] === 'm3') return t.fail('routed to a down host');
      continue;
    }
    others++;
    if (during[k] !== before[k]) moved++;
  }
  t.ok(moved / others < 0.03, `only m3's clients move: ${(100 * moved / others).toFixed(2)}% of the others moved (M=4099)`);
  t.equal(builds.n, 2, 'rebuilt once for the new healthy set');

  down.delete('m3');
  t.same(route(), before, 'm3 back: every client back where it was');
  t.equal(builds.n, 2, 'the earlier table came from the cache');
});

t.test('MaglevTable: disruption, weights, determinism, keys', async (t) => {
  const ten = Array.from({ length: 10 }, (_, i) => ({ name: `backend-${i}`, weight: 1 }));
  const full = new MaglevTable(65537);
  full.build(ten);
  const keys = Array.from({ length: 100000 }, (_, k) => (Math.imul(k, 2654435761) >>> 0));
  const before = keys.map((k) => full.lookup(k));
  for (const gone of [0, 4, 9]) {
    const less = new MaglevTable(65537);
    less.build(ten.filter((_, i) => i !== gone));
    let moved = 0;
    let others = 0;
    keys.forEach((k, i) => {
      if (before[i] === `backend-${gone}`) return;
      others++;
      if (less.lookup(k) !== before[i]) moved++;
    });
    t.ok(moved / others < 0.02, `backend-${gone} removed: ${(100 * moved / others).toFixed(3)}% of other keys moved (< 2%)`);
    t.notOk(keys.some((k) => less.lookup(k) === `backend-${gone}`));
  }

  const weighted = new MaglevTable(65537);
  weighted.build([{ name: 'w1', weight: 1 }, { name: 'w2', weight: 2 }, { name: 'w3', weight: 3 }, { name: 'w4', weight: 4 }]);
  const counts = new Map<string, number>();
  for (const k of keys) counts.set(weighted.lookup(k), (counts.get(weighted.lookup(k)) ?? 0) + 1);
  for (const [name, w] of [['w1', 1], ['w2', 2], ['w3', 3], ['w4', 4]] as const) {
    const share = counts.get(name)! / keys.length;
    t.ok(Math.abs(share - w / 10) < 0.01, `${name}: ${(100 * share).toFixed(2)}% of 100k keys, expected ${w * 10}% +- 1`);
    t.ok(Math.abs(weighted.counts().get(name)! / 65537 - w / 10) < 0.001, `${name}: table slots within 0.1% of weight share`);
  }

  const a = new MaglevTable(251);
  const b = new MaglevTable(251);
  a.build(ten);
  b.build([...ten].reverse());
  t.same(keys.slice(0, 2000).map((k) => a.lookup(k)), keys.slice(0, 2000).map((k) => b.lookup(k)), 'depends on the set, not its order');

  const addr = Buffer.from([198, 51, 100, 7]);
  t.equal(a.lookup(addr), a.lookup(addr.readUInt32BE(0)), 'a 4-byte address hashes like its uint32');
  t.type(a.lookup('2001:db8::1'), 'string');

  t.throws(() => new MaglevTable(250), RangeError, 'not prime');
  t.throws(() => new MaglevTable(4), RangeError);
  t.throws(() => a.build([{ name: 'x', weight: 1 }, { name: 'x', weight: 2 }]), /duplicate/);
  t.throws(() => a.build([{ name: 'x', weight: 0 }]), /weight/);
  a.build([]);
  t.throws(() => a.lookup(1), /no backends/);
  const small = new MaglevTable(5);
  small.build([{ name: 'only', weight: 3 }]);
  t.equal(small.lookup(123), 'only');
});

t.test('nextHost: failover within the pool', async (t) => {
  const router = new Router(routing(), HOSTS, { maglevSize: 251 });
  for (const [info, size] of [[http({ path: '/api/x', clientIp: '203.0.113.9' }), 3], [http({ method: 'POST', path: '/api/x' }), 3]] as const) {
    const first = router.decide(info, allUp, noPending);
    if (first.kind !== 'host') return t.fail(show(first));
    const tried = new Set([first.host]);
    let d: Decision = first;
    for (let i = 1; i < size; i++) {
      d = router.nextHost(d, info, tried, allUp, noPending);
      if (d.kind !== 'host') return t.fail(`step ${i}: ${show(d)}`);
      t.notOk(tried.has(d.host), `${d.pool}: step ${i} gives a new host ${d.host}`);
      t.equal(d.rule, first.rule, 'keeps the rule');
      t.equal(d.pool, first.pool, 'same pool');
      tried.add(d.host);
    }
    t.equal(show(router.nextHost(d, info, tried, allUp, noPending)), `none: no other healthy host in pool ${first.pool}`);
  }

  const info = http({ path: '/api/x' });
  const first = router.decide(info, allUp, noPending);
  if (first.kind !== 'host') return t.fail(show(first));
  const next = router.nextHost(first, info, new Set(), allUp, noPending);
  t.ok(next.kind === 'host' && next.host !== first.host, "the decision's own host is excluded too");
  const onlyOther = ['api1', 'api2', 'api3'].find((h) => h !== first.host && next.kind === 'host' && h !== next.host)!;
  t.equal(show(router.nextHost(first, info, new Set(), (h) => h === onlyOther || h === first.host, noPending)), `api/api/${onlyOther}`, 'unhealthy skipped');
  t.equal(show(router.nextHost(first, info, new Set(), () => false, noPending)), 'none: no healthy host in pool api');

  const lp = router.decide(http({ method: 'POST', path: '/api/x' }), allUp, noPending);
  t.equal(show(lp), 'lp/writes/lp2');
  t.equal(show(router.nextHost(lp, info, new Set(), allUp, (h) => (h === 'lp1' ? 0 : 9))), 'lp/writes/lp1', 'least-pending among the rest');

  const dflt = router.decide(http(), allUp, noPending);
  const alt = router.nextHost(dflt, http(), new Set(), allUp, noPending);
  t.ok(alt.kind === 'host' && alt.rule === null && alt.pool === 'default' && dflt.kind === 'host' && alt.host !== dflt.host, 'default-pool decisions fail over too');
  t.match(show(router.nextHost({ kind: 'reset', reason: 'x' }, info, new Set(), allUp, noPending)), /^none: /);
});

t.test('Router refuses routing that does not fit its hosts', async (t) => {
  t.throws(() => new Router(routing(), HOSTS.filter((h) => h !== 'api2')), /pool 'api': unknown host 'api2'/);
});
