import { MaglevTable } from './maglev';
import type { RequestInfo } from './request-info';
import type { DefaultRoute, PoolConfig, RuleConfig, Routing } from './rules-schema';

// The classifier's decision: which host gets a connection, given what the
// parser saw (RequestInfo) and the hosts' health. Matching semantics are
// documented in rules-schema.ts.
//
// decide() runs once per connection, so it allocates nothing of its own:
// rules are compiled up front, every possible Decision (rule x host, default
// x host, resets, "no healthy host") is built once and returned by reference,
// and a pool's Maglev table is rebuilt only when its healthy set changes.
// Decisions are therefore shared and read-only.

export type Decision =
  | { readonly kind: 'host'; readonly host: string; readonly pool: string; readonly rule: string | null }
  | { readonly kind: 'reset'; readonly reason: string }
  | { readonly kind: 'none'; readonly reason: string };

export type HostDecision = Extract<Decision, { kind: 'host' }>;

/** Whether a host may take new connections now. */
export type HealthFn = (host: string) => boolean;
/** Handoffs to a host that have started and not finished. */
export type PendingFn = (host: string) => number;

export interface RouterOptions {
  /** Maglev table size per pool, a prime (default 65537). */
  maglevSize?: number;
  /** Maglev tables kept per pool, by healthy set, so a flapping host does not
   *  rebuild on every flip (default 4). */
  tablesPerPool?: number;
}

const NO_ROUTE: Decision = Object.freeze({ kind: 'none', reason: 'no rule matched and no default for this VIP:port' });
const NOT_A_HOST: Decision = Object.freeze({ kind: 'none', reason: 'not a host decision: nothing to fail over from' });

export class Router {
  private readonly pools = new Map<string, Pool>();
  private readonly rules: CompiledRule[];
  private readonly rulesByName = new Map<string, CompiledRule>();
  /** vip -> port -> default; nested so the lookup builds no "vip:port" string. */
  private readonly defaults = new Map<string, Map<number, CompiledDefault>>();
  private readonly moveCache = new Map<string, boolean>();
  /** The routing as JSON: what per-request blobs carry to the hosts. */
  readonly routingJson: Buffer;

  /**
   * @param routing from validateRouting (defaults filled, references checked)
   * @param hostNames the configured hosts; a pool naming another is refused
   * @throws Error when the routing does not fit the hosts or refers to a missing pool
   */
  constructor(routing: Routing, hostNames: readonly string[], options: RouterOptions = {}) {
    this.routingJson = Buffer.from(JSON.stringify(routing));
    const known = new Set(hostNames);
    const size = options.maglevSize ?? 65537;
    const keep = Math.max(1, options.tablesPerPool ?? 4);
    for (const p of routing.pools) {
      for (const h of p.hosts) if (!known.has(h.host)) throw new Error(`pool '${p.name}': unknown host '${h.host}'`);
      this.pools.set(p.name, new Pool(p, size, keep));
    }
    const pool = (name: string, who: string): Pool => {
      const p = this.pools.get(name);
      if (!p) throw new Error(`${who}: unknown pool '${name}'`);
      return p;
    };
    this.rules = routing.rules.map((r) => {
      const c = new CompiledRule(r, pool(r.pool, `rule '${r.name}'`));
      this.rulesByName.set(r.name, c);
      return c;
    });
    for (const d of routing.defaults) {
      let byPort = this.defaults.get(d.vip);
      if (!byPort) this.defaults.set(d.vip, (byPort = new Map()));
      byPort.set(d.port, new CompiledDefault(d, d.pool === undefined ? null : pool(d.pool, `default ${d.vip}:${d.port}`)));
    }
  }

  /**
   * Route a parsed connection: the first matching rule's pool, else the
   * VIP:port's default pool, else a reset if that default says so.
   */
  decide(info: RequestInfo, health: HealthFn, pending: PendingFn): Decision {
    for (let i = 0; i < this.rules.length; i++) {
      const r = this.rules[i];
      if (r.matches(info)) return r.pool.pick(r.decisions, info, health, pending, null);
    }
    const d = this.defaults.get(info.vip)?.get(info.vipPort);
    if (!d) return NO_ROUTE;
    if (d.pool) return d.pool.pick(d.pool.defaultDecisions, info, health, pending, null);
    return d.resetNoMatch; // validation guarantees onUndecided is 'reset' without a pool
  }

  /**
   * The pool a request belongs to, without choosing a host (per-request
   * routing on the host: may a connection stay?): the first matching rule's,
   * else the VIP:port default's; null when it has no route or would be reset.
   */
  route(info: RequestInfo): { rule: string | null; pool: string } | null {
    for (let i = 0; i < this.rules.length; i++) {
      const r = this.rules[i];
      if (r.matches(info)) return { rule: r.name, pool: r.pool.name };
    }
    const d = this.defaults.get(info.vip)?.get(info.vipPort);
    return d?.pool ? { rule: null, pool: d.pool.name } : null;
  }

  /**
   * Whether a request to vip:port could belong to a pool `host` is not in
   * (a rule for it, or its default): else per-request routing cannot move
   * its connections and is not worth the host's work.
   */
  mayMove(vip: string, port: number, host: string): boolean {
    const key = `${vip}:${port}:${host}`;
    let v = this.moveCache.get(key);
    if (v === undefined) {
      const pools = this.rules.filter((r) => r.appliesTo(vip, port)).map((r) => r.pool);
      const d = this.defaults.get(vip)?.get(port);
      if (d?.pool) pools.push(d.pool);
      v = pools.some((p) => !p.has(host));
      this.moveCache.set(key, v);
    }
    return v;
  }

  /** Whether `host` is a member of pool `pool`. */
  poolHas(pool: string, host: string): boolean {
    return this.pools.get(pool)?.has(host) ?? false;
  }

  /** Whether rule `rule` pins its connections to their first host (`sticky: true`). */
  isSticky(rule: string | null): boolean {
    return rule !== null && (this.rulesByName.get(rule)?.sticky ?? false);
  }

  /**
   * Route a connection whose first bytes did not decide within the byte cap
   * or the timeout: the default pool, or a reset, as the VIP:port's
   * onUndecided says. Rules are not consulted: there is nothing to match.
   */
  decideUndecided(info: RequestInfo, health: HealthFn, pending: PendingFn): Decision {
    const d = this.defaults.get(info.vip)?.get(info.vipPort);
    if (!d) return NO_ROUTE;
    if (d.onUndecided === 'reset' || !d.pool) return d.resetUndecided;
    return d.pool.pick(d.pool.defaultDecisions, info, health, pending, null);
  }

  /**
   * Fail over: another healthy host of the decision's pool, not in `exclude`
   * and not the decision's own host, chosen the way the pool chooses
   * (Maglev: the next slots after the client's; least-pending: fewest
   * pending). The result keeps the decision's rule. `none` when no host is left.
   */
  nextHost(decision: Decision, info: RequestInfo, exclude: ReadonlySet<string>, health: HealthFn, pending: PendingFn): Decision {
    if (decision.kind !== 'host') return NOT_A_HOST;
    const pool = this.pools.get(decision.pool);
    if (!pool) return NOT_A_HOST;
    let decisions: readonly HostDecision[] | undefined = pool.defaultDecisions;
    if (decision.rule !== null) {
      const rule = this.rulesByName.get(decision.rule);
      decisions = rule?.pool === pool ? rule.decisions : undefined;
    }
    if (!decisions) return NOT_A_HOST;
    return pool.pick(decisions, info, health, pending, { exclude, also: decision.host });
  }
}

interface Exclusion {
  exclude: ReadonlySet<string>;
  also: string;
}

/** A pool's members (sorted by name), their last seen health, and its tables. */
class Pool {
  readonly name: string;
  private readonly choice: PoolConfig['choice'];
  private readonly hosts: string[];
  private readonly weights: number[];
  /** 1 where the member was healthy at the last pick */
  private readonly healthy: Uint8Array;
  private healthyCount = 0;
  private checked = false;
  /** tables by healthy-set signature, most recently used last */
  private readonly tables = new Map<string, { table: MaglevTable; member: Uint16Array }>();
  private current: { table: MaglevTable; member: Uint16Array } | null = null;
  readonly defaultDecisions: readonly HostDecision[];
  private readonly noHealthy: Decision;
  private readonly noOther: Decision;

  constructor(cfg: PoolConfig, private readonly tableSize: number, private readonly keep: number) {
    this.name = cfg.name;
    this.choice = cfg.choice;
    // Sorted so least-pending's last tie-break (name) is "first seen".
    const members = [...cfg.hosts].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
    this.hosts = members.map((m) => m.host);
    this.weights = members.map((m) => m.weight);
    this.healthy = new Uint8Array(members.length);
    this.defaultDecisions = this.decisionsFor(null);
    this.noHealthy = Object.freeze({ kind: 'none', reason: `no healthy host in pool ${cfg.name}` });
    this.noOther = Object.freeze({ kind: 'none', reason: `no other healthy host in pool ${cfg.name}` });
  }

  has(host: string): boolean {
    return this.hosts.includes(host);
  }

  /** One frozen decision per member, for a rule (or null: the default). */
  decisionsFor(rule: string | null): readonly HostDecision[] {
    return this.hosts.map((host) => Object.freeze({ kind: 'host' as const, host, pool: this.name, rule }));
  }

  pick(decisions: readonly HostDecision[], info: RequestInfo, health: HealthFn, pending: PendingFn, ex: Exclusion | null): Decision {
    const changed = this.refresh(health);
    if (this.healthyCount === 0) return this.noHealthy;
    const i = this.choice === 'maglev' ? this.pickMaglev(info, changed, ex) : this.pickLeastPending(pending, ex);
    return i < 0 ? this.noOther : decisions[i];
  }

  /** Ask for every member's health; true when it differs from the last pick. */
  private refresh(health: HealthFn): boolean {
    let changed = !this.checked;
    let count = 0;
    for (let i = 0; i < this.hosts.length; i++) {
      const h = health(this.hosts[i]) ? 1 : 0;
      if (this.healthy[i] !== h) {
        this.healthy[i] = h;
        changed = true;
      }
      count += h;
    }
    this.checked = true;
    this.healthyCount = count;
    return changed;
  }

  private eligible(i: number, ex: Exclusion | null): boolean {
    return this.healthy[i] === 1 && (ex === null || (this.hosts[i] !== ex.also && !ex.exclude.has(this.hosts[i])));
  }

  private pickMaglev(info: RequestInfo, changed: boolean, ex: Exclusion | null): number {
    if (changed || !this.current) this.current = this.tableForHealthySet();
    const { table, member } = this.current;
    const ip = ipv4ToUint32(info.clientIp);
    const slot = table.slotOf(ip >= 0 ? ip : info.clientIp);
    if (ex === null) return member[table.indexAt(slot)];
    // Failover: first make sure a candidate exists, so the walk ends.
    let any = false;
    for (let i = 0; i < this.hosts.length && !any; i++) any = this.eligible(i, ex);
    if (!any) return -1;
    for (let k = 0, s = slot; k < table.size; k++, s = s + 1 === table.size ? 0 : s + 1) {
      const i = member[table.indexAt(s)];
      if (this.eligible(i, ex)) return i;
    }
    return -1;
  }

  /** The table for the current healthy set, from the cache or built (rare: health changed). */
  private tableForHealthySet(): { table: MaglevTable; member: Uint16Array } {
    const signature = Array.from(this.healthy).join('');
    let entry = this.tables.get(signature);
    if (entry) {
      this.tables.delete(signature); // re-insert: most recently used last
    } else {
      const table = new MaglevTable(this.tableSize);
      const backends = [];
      for (let i = 0; i < this.hosts.length; i++) {
        if (this.healthy[i]) backends.push({ name: this.hosts[i], weight: this.weights[i] });
      }
      table.build(backends);
      // The table orders backends by name, as the members are: map anyway
      // rather than rely on two sorts agreeing.
      const index = new Map(this.hosts.map((h, i) => [h, i]));
      const member = Uint16Array.from(table.backends, (name) => index.get(name)!);
      entry = { table, member };
      if (this.tables.size >= this.keep) this.tables.delete(this.tables.keys().next().value!);
    }
    this.tables.set(signature, entry);
    return entry;
  }

  /** Fewest pending; ties to the larger weight (it absorbs more), then the name. */
  private pickLeastPending(pending: PendingFn, ex: Exclusion | null): number {
    let best = -1;
    let bestPending = Infinity;
    for (let i = 0; i < this.hosts.length; i++) {
      if (!this.eligible(i, ex)) continue;
      const p = pending(this.hosts[i]);
      if (p < bestPending || (p === bestPending && this.weights[i] > this.weights[best])) {
        best = i;
        bestPending = p;
      }
    }
    return best;
  }
}

/** A rule with its patterns prepared so matching compares strings in place. */
class CompiledRule {
  readonly name: string;
  readonly pool: Pool;
  readonly decisions: readonly HostDecision[];
  readonly sticky: boolean;
  private readonly vip: string | undefined;
  private readonly port: number | undefined;
  private readonly methods: readonly string[] | undefined;
  private readonly host: NamePattern | undefined;
  private readonly pathPrefix: string | undefined;
  private readonly header: { name: string; value?: string; regex?: RegExp } | undefined;
  private readonly cookie: { name: string; value?: string } | undefined;
  private readonly sni: NamePattern | undefined;
  /** which parser result the content fields need, or null when none are given */
  private readonly needs: 'http' | 'tls' | null;

  constructor(r: RuleConfig, pool: Pool) {
    this.name = r.name;
    this.pool = pool;
    this.sticky = r.sticky;
    this.decisions = pool.decisionsFor(r.name);
    this.vip = r.vip;
    this.port = r.port;
    const m = r.match;
    this.methods = m.method === undefined ? undefined : typeof m.method === 'string' ? [m.method] : m.method;
    this.host = m.host === undefined ? undefined : namePattern(m.host);
    this.pathPrefix = m.pathPrefix;
    this.header = m.header && {
      name: m.header.name.toLowerCase(),
      value: m.header.value,
      // No flags: a 'g' or 'y' regex would keep lastIndex between requests.
      regex: m.header.regex === undefined ? undefined : new RegExp(m.header.regex),
    };
    this.cookie = m.cookie;
    this.sni = m.sni === undefined ? undefined : namePattern(m.sni);
    const http = this.methods || this.host || this.pathPrefix !== undefined || this.header || this.cookie;
    this.needs = http ? 'http' : this.sni ? 'tls' : null;
  }

  /** Whether the rule can match connections to vip:port at all. */
  appliesTo(vip: string, port: number): boolean {
    return (this.vip === undefined || this.vip === vip) && (this.port === undefined || this.port === port);
  }

  matches(info: RequestInfo): boolean {
    if (this.vip !== undefined && info.vip !== this.vip) return false;
    if (this.port !== undefined && info.vipPort !== this.port) return false;
    if (this.needs === null) return true;
    if (info.kind !== this.needs) return false;
    if (this.methods && (info.method === undefined || !this.methods.includes(info.method))) return false;
    if (this.host && !nameMatches(this.host, info.host)) return false;
    if (this.pathPrefix !== undefined && !(info.path !== undefined && info.path.startsWith(this.pathPrefix))) return false;
    if (this.header && !this.headerMatches(info.headers)) return false;
    if (this.cookie) {
      const v = info.cookies?.get(this.cookie.name);
      if (v === undefined || (this.cookie.value !== undefined && v !== this.cookie.value)) return false;
    }
    if (this.sni && !nameMatches(this.sni, info.sni)) return false;
    return true;
  }

  private headerMatches(headers: RequestInfo['headers']): boolean {
    if (!headers) return false;
    const h = this.header!;
    for (let i = 0; i < headers.length; i++) {
      const [name, value] = headers[i];
      if (name !== h.name) continue;
      if (h.value !== undefined ? value === h.value : h.regex ? h.regex.test(value) : true) return true;
    }
    return false;
  }
}

class CompiledDefault {
  readonly onUndecided: DefaultRoute['onUndecided'];
  readonly resetNoMatch: Decision;
  readonly resetUndecided: Decision;

  constructor(d: DefaultRoute, readonly pool: Pool | null) {
    this.onUndecided = d.onUndecided;
    this.resetNoMatch = Object.freeze({ kind: 'reset', reason: `no rule matched on ${d.vip}:${d.port} and no default pool` });
    this.resetUndecided = Object.freeze({ kind: 'reset', reason: `request undecided on ${d.vip}:${d.port}` });
  }
}

/** An exact name, or for '*.example.com' the suffix '.example.com' after one label. */
interface NamePattern {
  exact: string | null;
  suffix: string | null;
}

function namePattern(p: string): NamePattern {
  const lower = p.toLowerCase();
  return lower.startsWith('*.') ? { exact: null, suffix: lower.slice(1) } : { exact: lower, suffix: null };
}

/**
 * Match a lowercase name (the parsers lowercase host and SNI) without slicing:
 * a trailing dot (absolute name) is ignored, and a wildcard takes exactly one
 * non-empty label, as TLS certificates do.
 */
function nameMatches(p: NamePattern, name: string | undefined): boolean {
  if (name === undefined) return false;
  let end = name.length;
  if (end > 0 && name.charCodeAt(end - 1) === 0x2e) end--;
  if (p.exact !== null) return end === p.exact.length && name.startsWith(p.exact);
  const suffix = p.suffix!;
  const label = end - suffix.length;
  return label > 0 && name.endsWith(suffix, end) && name.lastIndexOf('.', label - 1) === -1;
}

/** A dotted-quad IPv4 address as a uint32, or -1; parsed in place, no split(). */
function ipv4ToUint32(s: string): number {
  let out = 0;
  let octet = -1;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e) {
      if (octet < 0 || ++dots > 3) return -1;
      out = out * 256 + octet;
      octet = -1;
    } else if (c >= 0x30 && c <= 0x39) {
      octet = octet < 0 ? c - 0x30 : octet * 10 + (c - 0x30);
      if (octet > 255) return -1;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || octet < 0) return -1;
  return out * 256 + octet;
}
