import fs from 'node:fs';
import net from 'node:net';
import { ipv4FromString } from '../net/packet';
import { FormatRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import YAML from 'yaml';
import { validateRouting } from '../classifier/rules-schema';
import { BalancerConfig, BalancerConfigSchema } from './config-schema';

FormatRegistry.Set('ipv4', (v) => net.isIPv4(v));

export interface ConfigProblem {
  /** JSON-pointer-like key path, e.g. /ports/0/ip */
  path: string;
  message: string;
}

/** A configuration refused: `problems` name every key and what was expected. */
export class ConfigError extends Error {
  readonly code = 'ERR_CONFIG_INVALID';
  readonly file: string;
  readonly problems: ConfigProblem[];

  constructor(file: string, problems: ConfigProblem[]) {
    super(`${file}: invalid configuration\n` + problems.map((p) => `  ${p.path || '/'}: ${p.message}`).join('\n'));
    this.name = 'ConfigError';
    this.file = file;
    this.problems = problems;
  }
}

/**
 * Validate a parsed document and fill defaults.
 * @throws ConfigError
 */
export function parseBalancerConfig(doc: unknown, file = '<config>'): BalancerConfig {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError(file, [{ path: '/', message: 'expected a mapping of keys' }]);
  }
  // Defaults for nested objects that may be omitted entirely.
  const withObjects = { eal: {}, limits: {}, routing: {}, clusterKey: {}, accept: {}, classify: {}, blob: {}, mappings: {}, cluster: {}, control: {}, health: {}, log: {}, shutdown: {}, ...(doc as object) };
  const value = Value.Default(BalancerConfigSchema, structuredClone(withObjects));
  const problems: ConfigProblem[] = [...Value.Errors(BalancerConfigSchema, value)].map((e) => {
    // A regex or format name means little to an operator; the description says what is meant.
    const described = ('pattern' in e.schema || 'format' in e.schema) && e.schema.description;
    const what = described ? `expected ${e.schema.description}` : e.message;
    const got = e.value !== undefined && typeof e.value !== 'object' ? ` (got ${JSON.stringify(e.value)})` : '';
    return { path: e.path, message: what + got };
  });
  if (problems.length) throw new ConfigError(file, dedupe(problems));
  const cfg = value as BalancerConfig;
  const semantic: ConfigProblem[] = [];
  const names = new Set<string>();
  cfg.hosts.forEach((h, i) => {
    if (names.has(h.name)) semantic.push({ path: `/hosts/${i}/name`, message: `duplicate host name '${h.name}'` });
    names.add(h.name);
    if (h.port >= cfg.ports.length) {
      semantic.push({ path: `/hosts/${i}/port`, message: `port ${h.port} does not exist (${cfg.ports.length} ports)` });
    }
    if (!h.innerMac && !cfg.health.enabled) {
      semantic.push({ path: `/hosts/${i}/innerMac`, message: 'needed with health.enabled false: the MAC is learned from the agent\'s health answers' });
    }
  });
  cfg.ports.forEach((p, i) => {
    if (p.gateway && sameSubnet(p.gateway, p.ip, p.prefixLength) === false) {
      semantic.push({ path: `/ports/${i}/gateway`, message: `${p.gateway} is outside ${p.ip}/${p.prefixLength}: a gateway must be on the link` });
    }
  });
  for (const [key, v] of [['exceptionRingSize', cfg.limits.exceptionRingSize], ['txRingSize', cfg.limits.txRingSize]] as const) {
    if ((v & (v - 1)) !== 0) semantic.push({ path: `/limits/${key}`, message: `must be a power of two (got ${v})` });
  }
  if (cfg.cluster.balancerId >= 1 << cfg.cluster.idBits) {
    semantic.push({ path: '/cluster/balancerId', message: `must be below 2^idBits = ${1 << cfg.cluster.idBits} (got ${cfg.cluster.balancerId}; raise cluster.idBits)` });
  }
  if (cfg.accept.cookieRotateS > 0 && cfg.accept.cookieRotateS < 2 * cfg.accept.cookieTickS + 2 * cfg.cluster.clockSkewS) {
    semantic.push({ path: '/accept/cookieRotateS', message: `must be at least 2 * accept.cookieTickS + 2 * cluster.clockSkewS (${2 * cfg.accept.cookieTickS + 2 * cfg.cluster.clockSkewS}), or 0: a cookie must outlive its secret's turn` });
  }
  if (cfg.bgp.enabled && !cfg.bgp.neighbors.length) semantic.push({ path: '/bgp/neighbors', message: 'bgp is enabled: at least one neighbor' });
  if (cfg.bgp.keepaliveS * 3 > cfg.bgp.holdTimeS) semantic.push({ path: '/bgp/keepaliveS', message: `at most a third of holdTimeS (${cfg.bgp.holdTimeS})` });
  const routing = validateRouting(cfg.routing, cfg.hosts.map((h) => h.name), '/routing');
  if (!routing.ok) semantic.push(...routing.problems);
  else cfg.routing = routing.routing;
  if (semantic.length) throw new ConfigError(file, semantic);
  return cfg;
}

/** Several schema branches may report the same path; keep the first of each. */
function dedupe(problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => (seen.has(p.path) ? false : (seen.add(p.path), true)));
}

/**
 * Read and validate a YAML (or JSON) configuration file.
 * @throws ConfigError
 */
export function loadBalancerConfig(file: string): BalancerConfig {
  return parseBalancerConfig(readConfigDocument(file), file);
}

/**
 * Read a YAML (or JSON) file into plain data, for a schema to validate.
 * Shared by the balancer's and the host agent's loaders.
 * @throws ConfigError (unreadable file, YAML errors, an alias to no anchor)
 */
export function readConfigDocument(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [{ path: '/', message: `cannot read: ${(err as Error).message}` }]);
  }
  const doc = YAML.parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) {
    throw new ConfigError(file, doc.errors.map((e) => ({ path: '/', message: `YAML: ${e.message}` })));
  }
  try {
    return doc.toJS();
  } catch (err) {
    // toJS() throws for an alias to an anchor never set ("*a") or one that expands too far.
    throw new ConfigError(file, [{ path: '/', message: `YAML: ${(err as Error).message}` }]);
  }
}

/** EAL arguments for a configuration. */
export function ealArgs(cfg: BalancerConfig): string[] {
  const e = cfg.eal;
  const args = ['-l', e.lcores, '-m', String(e.memoryMb), '--log-level', e.logLevel];
  if (!e.hugepages) args.push('--no-huge', '--no-shconf');
  else if (e.filePrefix) args.push('--file-prefix', e.filePrefix);
  else args.push('--in-memory');
  for (const v of e.vdevs) args.push('--vdev', v);
  if (e.pci.length) for (const p of e.pci) args.push('-a', p);
  else if (e.vdevs.length) args.push('--no-pci');
  return [...args, ...e.extraArgs];
}

/**
 * The cluster key for blob authentication, from the configured file or
 * environment variable. Never logged.
 * @throws ConfigError naming /clusterKey when it is missing or too short.
 */
export function loadClusterKey(cfg: { clusterKey: { file?: string; env: string } }, file = "<config>"): Buffer {
  const decode = (text: string): Buffer => {
    const t = text.trim();
    if (/^[0-9a-fA-F]+$/.test(t) && t.length % 2 === 0) return Buffer.from(t, 'hex');
    return Buffer.from(t, 'base64');
  };
  let key: Buffer | undefined;
  let where: string;
  if (cfg.clusterKey.file) {
    where = `/clusterKey/file (${cfg.clusterKey.file})`;
    try {
      const raw = fs.readFileSync(cfg.clusterKey.file);
      key = /^[\x20-\x7e\s]*$/.test(raw.toString('latin1')) ? decode(raw.toString('latin1')) : raw;
    } catch (err) {
      throw new ConfigError(file, [{ path: '/clusterKey/file', message: `cannot read: ${(err as Error).message}` }]);
    }
  } else {
    where = `environment variable ${cfg.clusterKey.env}`;
    const v = process.env[cfg.clusterKey.env];
    if (v) key = decode(v);
  }
  if (!key || key.length < 16) {
    throw new ConfigError(file, [{ path: cfg.clusterKey.file ? '/clusterKey/file' : '/clusterKey/env',
      message: `no cluster key of at least 16 bytes in ${where} (hex or base64)` }]);
  }
  return key;
}

/** Whether a and b share their first `prefixLength` bits (dotted-quad IPv4). */
export function sameSubnet(a: string, b: string, prefixLength: number): boolean {
  const div = 2 ** (32 - prefixLength);
  return Math.floor(ipv4FromString(a) / div) === Math.floor(ipv4FromString(b) / div);
}
