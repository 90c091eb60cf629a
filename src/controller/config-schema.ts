import { Type, type Static } from '@sinclair/typebox';
import { RoutingSchema } from '../classifier/rules-schema';

// One schema both validates config files and types them. docs/configuration.md
// lists every key; keep the two together.

const Ipv4 = Type.String({ format: 'ipv4', description: 'dotted-quad IPv4 address' });
const Mac = Type.String({ pattern: '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$', description: 'MAC address aa:bb:cc:dd:ee:ff' });

export const EalSchema = Type.Object({
  hugepages: Type.Boolean({ default: false, description: 'use hugepages; false runs with --no-huge' }),
  memoryMb: Type.Integer({ minimum: 64, maximum: 1048576, default: 256, description: 'memory EAL reserves (-m)' }),
  lcores: Type.String({ default: '0,1', description: 'EAL -l list: the first is the control (main) lcore, the rest workers' }),
  vdevs: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'virtual devices (--vdev), e.g. net_tap0,iface=handoff0' }),
  pci: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'PCI devices to use (-a); empty with no vdevs scans all bound NICs' }),
  filePrefix: Type.Optional(Type.String({ minLength: 1, description: 'hugepage file prefix so several DPDK processes coexist' })),
  logLevel: Type.String({ default: 'lib.eal:error', description: 'EAL --log-level' }),
  extraArgs: Type.Array(Type.String(), { default: [], description: 'further EAL arguments, verbatim' }),
}, { additionalProperties: false });

export const PortSchema = Type.Object({
  device: Type.String({ minLength: 1, maxLength: 63, description: 'DPDK device name (net_tap0, 0000:01:00.0)' }),
  ip: Ipv4,
  mtu: Type.Integer({ minimum: 576, maximum: 9000, default: 1500, description: 'underlay MTU' }),
  mac: Type.Optional(Mac),
  gateway: Type.Optional(Type.String({ format: 'ipv4', description: 'dotted-quad IPv4 address, the router for hosts outside this port\'s subnet (prefixLength): their next hop, resolved by ARP' })),
  prefixLength: Type.Integer({ minimum: 1, maximum: 32, default: 24, description: 'the subnet of ip on this port: hosts inside it are resolved directly, others through gateway' }),
  promisc: Type.Boolean({ default: false }),
  rxDesc: Type.Integer({ minimum: 32, maximum: 32768, default: 1024 }),
  txDesc: Type.Integer({ minimum: 32, maximum: 32768, default: 1024 }),
}, { additionalProperties: false });

export const VipSchema = Type.Object({
  ip: Ipv4,
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  proto: Type.Union([Type.Literal('tcp'), Type.Literal('udp')], { default: 'tcp' }),
  perRequest: Type.Boolean({
    default: true,
    description: 'route every HTTP/1.x request of a keep-alive connection, handing it back and on between hosts (TLS and other traffic: per connection)',
  }),
}, { additionalProperties: false });

export const HostSchema = Type.Object({
  name: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_.-]+$' }),
  ip: Ipv4,
  port: Type.Integer({ minimum: 0, maximum: 7, default: 0, description: 'balancer port index the host is reached through' }),
  nexthopMac: Type.Optional(Type.String({ pattern: Mac.pattern, description: 'MAC address aa:bb:cc:dd:ee:ff, the outer Ethernet destination (default: resolved by ARP, the host or its port\'s gateway)' })),
  innerMac: Type.Optional(Type.String({ pattern: Mac.pattern, description: 'MAC address aa:bb:cc:dd:ee:ff, the host\'s VXLAN device (default: learned from its agent\'s health answers)' })),
  agentPort: Type.Integer({ minimum: 1, maximum: 65535, default: 4791, description: "the host agent's UDP port for blobs" }),
  drain: Type.Boolean({ default: false, description: 'take no new connections; flows already on the host continue' }),
}, { additionalProperties: false });

export const HealthSchema = Type.Object({
  enabled: Type.Boolean({ default: true, description: 'check host agents with PINGs over the blob port' }),
  intervalMs: Type.Integer({ minimum: 50, maximum: 600000, default: 1000, description: 'time between checks of one host' }),
  timeoutMs: Type.Integer({ minimum: 10, maximum: 60000, default: 500, description: 'an unanswered check fails after this' }),
  fall: Type.Integer({ minimum: 1, maximum: 100, default: 3, description: 'consecutive failed checks that take a host out' }),
  rise: Type.Integer({ minimum: 1, maximum: 100, default: 2, description: 'consecutive good checks that bring it back' }),
}, { additionalProperties: false });

export const LogSchema = Type.Object({
  level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info', description: 'least severe level written (JSON lines on stdout)' }),
}, { additionalProperties: false });

export const ShutdownSchema = Type.Object({
  drainTimeoutMs: Type.Integer({ minimum: 0, maximum: 3600000, default: 30000,
    description: 'on SIGTERM, keep serving until the flows end or this long has passed' }),
}, { additionalProperties: false });

export const ClusterKeySchema = Type.Object({
  file: Type.Optional(Type.String({ minLength: 1, description: 'file holding the key (raw bytes, or hex/base64 text)' })),
  env: Type.String({ default: 'HANDOFF_CLUSTER_KEY', description: 'environment variable holding the key as hex or base64' }),
}, { additionalProperties: false });

export const AcceptSchema = Type.Object({
  capacity: Type.Integer({ minimum: 64, default: 65536, description: 'accepted, unclassified connections held at once' }),
  maxBytes: Type.Integer({ minimum: 1024, maximum: 1073741824, default: 65535, description: 'bytes taken per connection before its window closes' }),
  timeoutMs: Type.Integer({ minimum: 10, default: 10000, description: 'unclassified connections are reset after this' }),
  cookieTickS: Type.Integer({ minimum: 1, maximum: 3600, default: 64, description: 'SYN cookie time step; a cookie is valid for two' }),
  cookieRotateS: Type.Integer({ minimum: 0, default: 3600, description: 'replace the cookie secret this often (0: never)' }),
  rcvWscale: Type.Integer({ minimum: 0, maximum: 14, default: 7 }),
  resetBadAck: Type.Boolean({ default: false, description: 'answer ACKs with a bad cookie with RST instead of dropping them' }),
}, { additionalProperties: false });

export const ClassifySchema = Type.Object({
  byteCap: Type.Integer({ minimum: 64, default: 16384, description: 'bytes after which an undecided connection goes to its default' }),
  timeoutMs: Type.Integer({ minimum: 10, default: 3000, description: 'time after the first byte by which a connection is decided' }),
}, { additionalProperties: false });

export const MappingsSchema = Type.Object({
  closingTimeoutMs: Type.Integer({ minimum: 100, default: 10000, description: 'a mapping in CLOSING (FIN or RST seen) is removed after this' }),
  idleTimeoutMs: Type.Integer({ minimum: 1000, default: 300000, description: 'a mapping with no packet for this long is removed' }),
  flowIdQuarantineMs: Type.Integer({ minimum: 0, default: 60000, description: 'a released flow ID stays unused this long' }),
}, { additionalProperties: false });

export const BlobSchema = Type.Object({
  port: Type.Integer({ minimum: 1, maximum: 65535, default: 4790, description: 'UDP port blob datagrams leave from' }),
  initialRtoMs: Type.Number({ minimum: 0.1, default: 3 }),
  maxRtoMs: Type.Number({ minimum: 1, default: 200 }),
  maxAttempts: Type.Integer({ minimum: 1, maximum: 100, default: 8 }),
  maxInFlightPerHost: Type.Integer({ minimum: 1, default: 64 }),
  fragmentSize: Type.Integer({ minimum: 64, maximum: 8940, default: 1400 }),
}, { additionalProperties: false });

export const RecoverySchema = Type.Object({
  enabled: Type.Boolean({ default: true, description: 'look up the owner of a flow with no mapping here (another balancer\'s, or this one\'s before a restart) from the hosts, instead of dropping its packets' }),
  ratePerWorker: Type.Integer({ minimum: 1, maximum: 10000000, default: 10000, description: 'stray segments per second and worker passed to the lookup (each may cost attempts x hosts LOOKUP datagrams); more are dropped and counted (stray_rate_limited)' }),
  burst: Type.Integer({ minimum: 1, maximum: 10000000, default: 1024, description: 'token bucket depth for ratePerWorker' }),
  maxLookups: Type.Integer({ minimum: 1, maximum: 1048576, default: 4096, description: 'flows looked up at once' }),
  heldPerFlow: Type.Integer({ minimum: 1, maximum: 64, default: 8, description: 'packets held per flow while its owner is looked up' }),
  heldTotal: Type.Integer({ minimum: 1, maximum: 1048576, default: 4096, description: 'packets held, all flows' }),
  timeoutMs: Type.Number({ minimum: 0.5, maximum: 1000, default: 5, description: 'first wait for an answer; each retry waits twice as long' }),
  attempts: Type.Integer({ minimum: 1, maximum: 10, default: 3, description: 'queries before a flow is taken as nobody\'s' }),
  negativeTtlMs: Type.Integer({ minimum: 0, maximum: 600000, default: 2000, description: 'a flow nobody owns is answered without a query this long' }),
  negativeMax: Type.Integer({ minimum: 1, maximum: 16777216, default: 65536, description: 'flows remembered as nobody\'s' }),
  resetUnknown: Type.Boolean({ default: true, description: 'reset the client of a flow nobody owns' }),
}, { additionalProperties: false, default: {} });

export const ClusterSchema = Type.Object({
  balancerId: Type.Integer({ minimum: 0, maximum: 255, default: 0, description: 'this balancer\'s number in the cluster: the top idBits of every flow ID it hands out' }),
  idBits: Type.Integer({ minimum: 0, maximum: 8, default: 0, description: 'VNI bits naming the balancer (2^idBits balancers at most; 0: one balancer owns the whole space)' }),
  clockSkewS: Type.Integer({ minimum: 0, maximum: 300, default: 2, description: 'clock difference between balancers tolerated when the shared SYN cookie secret changes' }),
  recovery: RecoverySchema,
}, { additionalProperties: false });

export const BgpSchema = Type.Object({
  enabled: Type.Boolean({ default: false, description: 'announce the VIPs over BGP with BIRD 2 (withdrawn on drain, SIGTERM, a failing /healthz, and when the balancer dies)' }),
  localAs: Type.Integer({ minimum: 1, maximum: 4294967295, default: 65001, description: 'this balancer\'s AS (the same on every balancer of a cluster)' }),
  routerId: Type.Optional(Type.String({ format: 'ipv4', description: 'BGP router ID; default the data port\'s address' })),
  sourceAddress: Type.Optional(Type.String({ format: 'ipv4', description: 'local address of the sessions (a kernel interface: DPDK owns the data port); default: BIRD picks' })),
  nextHop: Type.Optional(Type.String({ format: 'ipv4', description: 'next hop of the announcements; default ports[0].ip, the data port' })),
  neighbors: Type.Array(Type.Object({
    address: Type.String({ format: 'ipv4', description: 'the router\'s session address' }),
    as: Type.Integer({ minimum: 1, maximum: 4294967295 }),
    port: Type.Integer({ minimum: 1, maximum: 65535, default: 179 }),
  }, { additionalProperties: false }), { default: [], maxItems: 16 }),
  holdTimeS: Type.Integer({ minimum: 3, maximum: 65535, default: 3, description: 'BGP hold time: how long a router keeps the routes of a machine that went silent' }),
  keepaliveS: Type.Integer({ minimum: 1, maximum: 21845, default: 1 }),
  bfd: Type.Object({
    enabled: Type.Boolean({ default: false, description: 'BFD on the sessions: a dead link or machine is noticed in intervalMs x multiplier' }),
    intervalMs: Type.Integer({ minimum: 10, maximum: 10000, default: 100 }),
    multiplier: Type.Integer({ minimum: 1, maximum: 255, default: 3 }),
  }, { additionalProperties: false, default: {} }),
  runDir: Type.String({ minLength: 1, default: '/run/handoff/bgp', description: 'BIRD\'s config, control socket and pid file' }),
  birdPath: Type.String({ minLength: 1, default: '/usr/sbin/bird' }),
  birdcPath: Type.String({ minLength: 1, default: '/usr/sbin/birdc' }),
}, { additionalProperties: false, default: {} });

export const LimitsSchema = Type.Object({
  mbufs: Type.Integer({ minimum: 1023, default: 8191 }),
  mappingCapacity: Type.Integer({ minimum: 64, default: 65536 }),
  holdFlows: Type.Integer({ minimum: 1, default: 1024 }),
  holdPerFlow: Type.Integer({ minimum: 1, maximum: 64, default: 8 }),
  holdTotal: Type.Integer({ minimum: 1, default: 4096 }),
  exceptionRingSize: Type.Integer({ minimum: 64, default: 4096 }),
  txRingSize: Type.Integer({ minimum: 64, default: 4096 }),
}, { additionalProperties: false });

export const BalancerConfigSchema = Type.Object({
  eal: EalSchema,
  workers: Type.Integer({ minimum: 1, maximum: 16, default: 1 }),
  idleSleepUs: Type.Integer({ minimum: 0, maximum: 1000000, default: 100, description: '0 busy-polls' }),
  idleSleepMaxUs: Type.Integer({ minimum: 1, maximum: 1000000, default: 1000, description: 'after 20 ms with nothing to do, idle naps double from idleSleepUs up to this' }),
  ports: Type.Array(PortSchema, { minItems: 1, maxItems: 8 }),
  vips: Type.Array(VipSchema, { maxItems: 64, default: [] }),
  hosts: Type.Array(HostSchema, { maxItems: 4096, default: [] }),
  limits: LimitsSchema,
  routing: RoutingSchema,
  clusterKey: ClusterKeySchema,
  accept: AcceptSchema,
  classify: ClassifySchema,
  blob: BlobSchema,
  mappings: MappingsSchema,
  cluster: ClusterSchema,
  bgp: BgpSchema,
  statsIntervalMs: Type.Integer({ minimum: 0, default: 2000, description: 'how often `handoff lb` prints counters (0: never)' }),
  control: Type.Object({
    socket: Type.String({ minLength: 1, default: '/run/handoff/lb.sock', description: 'UNIX socket for `handoff status` and `handoff reload`' }),
    http: Type.Object({
      address: Ipv4,
      port: Type.Integer({ minimum: 0, maximum: 65535, description: '0 turns the HTTP endpoint off' }),
    }, { additionalProperties: false, default: { address: '127.0.0.1', port: 9464 },
      description: 'HTTP endpoint for /metrics (Prometheus), /healthz and /status' }),
  }, { additionalProperties: false }),
  health: HealthSchema,
  log: LogSchema,
  shutdown: ShutdownSchema,
}, { additionalProperties: false });

export type BalancerConfig = Static<typeof BalancerConfigSchema>;
