import net from 'node:net';
import { FormatRegistry, Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ConfigError, readConfigDocument, type ConfigProblem } from '../controller/config';
import { ClusterKeySchema } from '../controller/config-schema';

if (!FormatRegistry.Has('ipv4')) FormatRegistry.Set('ipv4', (v) => net.isIPv4(v));
const Ipv4 = Type.String({ format: 'ipv4', description: 'dotted-quad IPv4 address' });

/** What serves a VIP: the demo HTTP app, or forwarding to a local server (nginx's HTTP port, its TLS port...). */
const AppSchema = Type.Union([
  Type.Object({ kind: Type.Literal('demo') }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('forward'), upstream: Type.Object({ host: Type.String(), port: Type.Integer({ minimum: 1, maximum: 65535 }) },
    { additionalProperties: false }),
  splice: Type.Optional(Type.Boolean({ description: 'move the bytes in the kernel (splice); default true for an IPv4 upstream address. Such a VIP is never routed per request' })) },
  { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('unix'), path: Type.String({ minLength: 1, maxLength: 107,
    description: 'a UNIX stream socket: each connection\'s descriptor is passed to the server listening there (SCM_RIGHTS)' }) },
  { additionalProperties: false }),
]);

export const HostConfigSchema = Type.Object({
  name: Type.String({ minLength: 1, default: 'host', description: 'shown by the demo app' }),
  listen: Type.Object({
    address: Type.String({ default: '0.0.0.0' }),
    port: Type.Integer({ minimum: 1, maximum: 65535, default: 4791 }),
  }, { additionalProperties: false, default: {} }),
  clusterKey: ClusterKeySchema,
  vips: Type.Array(Type.Object({ ip: Ipv4, port: Type.Integer({ minimum: 1, maximum: 65535 }),
    app: Type.Optional(AppSchema) }, { additionalProperties: false }), { minItems: 1 }),
  balancers: Type.Array(Ipv4, { default: [], description: 'balancer addresses allowed to send blobs; empty: any' }),
  maxBlobAgeMs: Type.Integer({ minimum: 100, default: 5000 }),
  perRequest: Type.Boolean({ default: true, description: 'route each HTTP request where the balancer asks for it (hand-back)' }),
  control: Type.Object({
    socket: Type.String({ minLength: 1, default: '/run/handoff/host.sock', description: 'UNIX socket for status' }),
  }, { additionalProperties: false, default: {} }),
  network: Type.Object({
    device: Type.String({ default: 'vx0' }),
    create: Type.Boolean({ default: true, description: 'create what is missing (else only check)' }),
    cleanup: Type.Boolean({ default: true, description: 'remove on exit what was created' }),
    filterTunnel: Type.Boolean({ default: true, description: 'nftables: admit tunnelled packets of live flows only, VXLAN from balancers only' }),
  }, { additionalProperties: false, default: {} }),
  health: Type.Object({
    http: Type.Optional(Type.Object({
      url: Type.String({ pattern: '^http://', description: "the application's health URL, checked by the agent (http://...)" }),
      intervalMs: Type.Integer({ minimum: 100, default: 2000 }),
      timeoutMs: Type.Integer({ minimum: 10, default: 1000 }),
      expectStatus: Type.Optional(Type.Integer({ minimum: 100, maximum: 599, description: 'default: any 2xx' })),
    }, { additionalProperties: false })),
  }, { additionalProperties: false, default: {}, description: "the balancer's PINGs learn the result" }),
  log: Type.Object({
    level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info' }),
  }, { additionalProperties: false, default: {} }),
  shutdown: Type.Object({
    drainTimeoutMs: Type.Integer({ minimum: 0, maximum: 3600000, default: 30000,
      description: 'on SIGTERM, announce draining and serve until the injected connections close, at most this long' }),
  }, { additionalProperties: false, default: {} }),
  app: Type.Union(AppSchema.anyOf, { default: { kind: 'demo' }, description: 'what serves every VIP without an app of its own' }),
}, { additionalProperties: false });

export type HostConfig = Static<typeof HostConfigSchema>;

/** @throws ConfigError with key paths */
export function parseHostConfig(doc: unknown, file = '<config>'): HostConfig {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError(file, [{ path: '/', message: 'expected a mapping of keys' }]);
  }
  const value = Value.Default(HostConfigSchema, structuredClone({ clusterKey: {}, ...(doc as object) }));
  const problems: ConfigProblem[] = [...Value.Errors(HostConfigSchema, value)].map((e) => ({
    path: e.path, message: e.value !== undefined && typeof e.value !== 'object' ? `${e.message} (got ${JSON.stringify(e.value)})` : e.message,
  }));
  if (problems.length) throw new ConfigError(file, problems);
  return value as HostConfig;
}

export function loadHostConfig(file: string): HostConfig {
  return parseHostConfig(readConfigDocument(file), file);
}
