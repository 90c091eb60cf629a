import net from 'node:net';
import { FormatRegistry, Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

// The routing part of the balancer configuration: pools of hosts, ordered
// rules that pick a pool from what the parser saw, and a default per VIP:port.
// One schema validates and types it; validateRouting adds the checks a schema
// cannot express (names that must refer to something, regexes that compile).
//
// Matching semantics (the router implements them; keep the two in step):
// - rules are tried in order and the first whose every given field matches
//   wins; a rule with `vip`/`port` only matches connections to them;
// - `host` and `sni` are exact, case-insensitive, a trailing dot ignored; a
//   leading '*.' matches exactly ONE more label, as in TLS certificates
//   (RFC 6125): '*.example.com' matches 'a.example.com' but neither
//   'example.com' nor 'a.b.example.com';
// - `method` is case-sensitive (RFC 9110), one method or a list of them;
// - `pathPrefix` is a plain string prefix of the request target (so '/api'
//   also matches '/apix'; write '/api/' to mean the directory);
// - `header` without value/regex tests presence; `value` is exact; `regex` is
//   a JavaScript regular expression, unanchored, no flags; any occurrence of
//   a repeated header may match. Header names are case-insensitive;
// - `cookie` without value tests presence, else an exact value;
// - HTTP fields (method, host, pathPrefix, header, cookie) never match a TLS
//   connection and `sni` never matches HTTP, so a rule mixing them is refused;
//   a rule with no match fields at all matches any connection (even one the
//   parser could not recognise).

// Both config loaders register the same check; whichever module loads first wins.
if (!FormatRegistry.Has('ipv4')) FormatRegistry.Set('ipv4', (v) => net.isIPv4(v));

const Ipv4 = Type.String({ format: 'ipv4', description: 'dotted-quad IPv4 address' });
const Port = Type.Integer({ minimum: 1, maximum: 65535 });
const Name = Type.String({
  minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9_.-]+$',
  description: 'a name of letters, digits, _ . -',
});
const DnsPattern = Type.String({
  maxLength: 253,
  pattern: '^(\\*\\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*$',
  description: "a host name, or '*.' and a domain to match exactly one more label",
});
const Token = Type.String({ minLength: 1, pattern: "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", description: 'an HTTP token' });

export const PoolSchema = Type.Object({
  name: Name,
  hosts: Type.Array(Type.Object({
    host: Name,
    weight: Type.Integer({ minimum: 1, maximum: 100, default: 1 }),
  }, { additionalProperties: false }), { minItems: 1 }),
  choice: Type.Union([Type.Literal('maglev'), Type.Literal('least-pending')], {
    default: 'maglev',
    description: "'maglev' (client-address affinity) or 'least-pending'",
  }),
}, { additionalProperties: false });

export const RuleMatchSchema = Type.Object({
  method: Type.Optional(Type.Union([Token, Type.Array(Token, { minItems: 1 })], {
    description: 'an HTTP method or a list of them',
  })),
  host: Type.Optional(DnsPattern),
  pathPrefix: Type.Optional(Type.String({ minLength: 1 })),
  header: Type.Optional(Type.Object({
    name: Token,
    value: Type.Optional(Type.String()),
    regex: Type.Optional(Type.String({ minLength: 1 })),
  }, { additionalProperties: false })),
  cookie: Type.Optional(Type.Object({
    name: Type.String({ minLength: 1 }),
    value: Type.Optional(Type.String()),
  }, { additionalProperties: false })),
  sni: Type.Optional(DnsPattern),
}, { additionalProperties: false });

export const RuleSchema = Type.Object({
  name: Name,
  vip: Type.Optional(Ipv4),
  port: Type.Optional(Port),
  match: RuleMatchSchema,
  pool: Name,
  sticky: Type.Boolean({
    default: false,
    description: 'keep a connection on its first host for every later request (per-request routing off for this rule)',
  }),
}, { additionalProperties: false });

export const DefaultRouteSchema = Type.Object({
  vip: Ipv4,
  port: Port,
  pool: Type.Optional(Name),
  onUndecided: Type.Union([Type.Literal('default-pool'), Type.Literal('reset')], {
    default: 'default-pool',
    description: "'default-pool' or 'reset'",
  }),
}, { additionalProperties: false });

export const RoutingSchema = Type.Object({
  pools: Type.Array(PoolSchema, { default: [] }),
  rules: Type.Array(RuleSchema, { default: [] }),
  defaults: Type.Array(DefaultRouteSchema, { default: [] }),
}, { additionalProperties: false });

export type PoolConfig = Static<typeof PoolSchema>;
export type RuleMatch = Static<typeof RuleMatchSchema>;
export type RuleConfig = Static<typeof RuleSchema>;
export type DefaultRoute = Static<typeof DefaultRouteSchema>;
export type Routing = Static<typeof RoutingSchema>;

export interface RoutingProblem {
  /** JSON-pointer-like key path, e.g. /rules/2/pool */
  path: string;
  message: string;
}

export type RoutingResult =
  | { ok: true; routing: Routing }
  | { ok: false; problems: RoutingProblem[] };

/**
 * Validate a routing document (pools, rules, defaults), fill its defaults,
 * and check its cross-references against the configured host names.
 * The document is not modified. `basePath` prefixes every problem's path
 * when the routing is embedded in a larger document (e.g. '/routing').
 */
export function validateRouting(doc: unknown, hostNames: readonly string[], basePath = ''): RoutingResult {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    return { ok: false, problems: [{ path: basePath || '/', message: 'expected a mapping with pools, rules, defaults' }] };
  }
  const value = Value.Default(RoutingSchema, structuredClone(doc));
  const schemaProblems = dedupe([...Value.Errors(RoutingSchema, value)].map((e) => {
    // A regex or format name means little to an operator; the description says what is meant.
    const described = ('pattern' in e.schema || 'format' in e.schema || 'anyOf' in e.schema) && e.schema.description;
    const what = described ? `expected ${e.schema.description}` : e.message;
    const got = e.value !== undefined && typeof e.value !== 'object' ? ` (got ${JSON.stringify(e.value)})` : '';
    return { path: basePath + e.path, message: what + got };
  }));
  if (schemaProblems.length) return { ok: false, problems: schemaProblems };

  const routing = value as Routing;
  const problems = crossCheck(routing, new Set(hostNames));
  for (const p of problems) p.path = basePath + p.path;
  return problems.length ? { ok: false, problems } : { ok: true, routing };
}

/** What the schema cannot say: references, uniqueness, regexes, impossible rules. */
function crossCheck(r: Routing, hosts: ReadonlySet<string>): RoutingProblem[] {
  const problems: RoutingProblem[] = [];
  const add = (path: string, message: string) => problems.push({ path, message });

  const pools = new Set<string>();
  r.pools.forEach((p, i) => {
    if (pools.has(p.name)) add(`/pools/${i}/name`, `duplicate pool name '${p.name}'`);
    pools.add(p.name);
    const members = new Set<string>();
    p.hosts.forEach((h, j) => {
      if (!hosts.has(h.host)) add(`/pools/${i}/hosts/${j}/host`, `unknown host '${h.host}' (not in hosts)`);
      else if (members.has(h.host)) add(`/pools/${i}/hosts/${j}/host`, `host '${h.host}' listed twice in pool '${p.name}'`);
      members.add(h.host);
    });
  });
  const poolRef = (path: string, name: string) => {
    if (!pools.has(name)) add(path, `unknown pool '${name}'`);
  };

  const rules = new Set<string>();
  r.rules.forEach((rule, i) => {
    if (rules.has(rule.name)) add(`/rules/${i}/name`, `duplicate rule name '${rule.name}'`);
    rules.add(rule.name);
    poolRef(`/rules/${i}/pool`, rule.pool);
    const m = rule.match;
    if (m.header?.value !== undefined && m.header.regex !== undefined) {
      add(`/rules/${i}/match/header`, 'give value or regex, not both');
    }
    if (m.header?.regex !== undefined) {
      try {
        new RegExp(m.header.regex);
      } catch (err) {
        add(`/rules/${i}/match/header/regex`, `invalid regular expression: ${(err as Error).message}`);
      }
    }
    const http = ['method', 'host', 'pathPrefix', 'header', 'cookie'].filter((k) => m[k as keyof RuleMatch] !== undefined);
    if (m.sni !== undefined && http.length) {
      add(`/rules/${i}/match`, `sni (TLS) and ${http.join(', ')} (HTTP) can never both match`);
    }
  });

  const vipPorts = new Set<string>();
  r.defaults.forEach((d, i) => {
    const key = `${d.vip}:${d.port}`;
    if (vipPorts.has(key)) add(`/defaults/${i}`, `second default for ${key}`);
    vipPorts.add(key);
    if (d.pool !== undefined) poolRef(`/defaults/${i}/pool`, d.pool);
    else if (d.onUndecided !== 'reset') add(`/defaults/${i}/pool`, "required unless onUndecided is 'reset'");
  });
  return problems;
}

/** Several schema branches may report the same path; keep the first of each. */
function dedupe(problems: RoutingProblem[]): RoutingProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => (seen.has(p.path) ? false : (seen.add(p.path), true)));
}
