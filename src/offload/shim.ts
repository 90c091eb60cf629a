import koffi from 'koffi';
import { ipv4FromString, ipv4ToString, macFromString, macToString } from '../net/packet';
import {
  FlowState, MAX_HOSTS, MAX_PORTS, MAX_VIPS, MAX_WORKERS, Mapping, DEVICE_NAME_LEN,
} from './abi';
import { ShimError } from './errors';
import { NativeShim, loadNative } from './native';
import { PacketBurst } from './packet-burst';

export interface PortOptions {
  /** DPDK device name ("net_tap0", "0000:01:00.0"), or the name of a ring port. */
  device: string;
  /** The balancer's own address on this port. */
  ip: string;
  /** Underlay MTU. Default 1500. */
  mtu?: number;
  /** Create an in-process ring port (tests and benchmarks). Default false. */
  ring?: boolean;
  /** Promiscuous mode. Default false. */
  promisc?: boolean;
  /** Override the port's MAC address. Default: the device's (ring ports: 02:00:00:00:00:<index+1>). */
  mac?: string;
  /** Descriptors per queue. Default 1024. */
  rxDesc?: number;
  txDesc?: number;
}

export interface VipOptions {
  ip: string;
  port: number;
  /** Default 'tcp'. */
  proto?: 'tcp' | 'udp';
}

export interface ShimOptions {
  /** EAL arguments after the program name, e.g. ['--no-huge', '-m', '256', '--no-shconf', '-l', '0,1']. */
  eal: string[];
  ports: PortOptions[];
  vips?: VipOptions[];
  /** Worker lcores. Default 1. */
  workers?: number;
  /** Mbufs in the pool. Default 8191. */
  mbufs?: number;
  /** Mappings the table holds. Default 65536. */
  mappingCapacity?: number;
  /** PENDING flows that may hold packets at once. Default 1024. */
  holdFlows?: number;
  /** Packets held per PENDING flow. Default 8, at most 64. */
  holdPerFlow?: number;
  /** Packets held in all. Default 4096. */
  holdTotal?: number;
  /** Exception ring size, a power of two. Default 4096. */
  exceptionRingSize?: number;
  /** Control TX ring size per port, a power of two. Default 4096. */
  txRingSize?: number;
  /** Sleep this long when idle; 0 busy-polls (benchmarks). Default 100. */
  idleSleepUs?: number;
  /** Empty polls before sleeping. Default 64. */
  idleSpins?: number;
  /** After 20 ms with nothing to do, each idle nap doubles from idleSleepUs up to this. Default 1000. */
  idleSleepMaxUs?: number;
  /**
   * 0: an ACCEPTED event per completed handshake. Else a connection is first
   * reported with its first event (bytes, FIN, reset, timeout; the ACCEPTED
   * flag rides on it), or with SILENT after this many ms without one. Default 0.
   */
  announceAfterMs?: number;
  /** Accepted, unclassified connections held at once. Default 65536. */
  acceptCapacity?: number;
  /** Bytes taken per connection before its window closes. Default 65535. */
  acceptMaxBytes?: number;
  /** Unclassified connections are reset after this. Default 10000. */
  acceptTimeoutMs?: number;
  /** SYN cookie time step in seconds (a cookie is valid for two). Default 64. */
  cookieTickS?: number;
  /** Our window scale when the client offers one. Default 7. */
  rcvWscale?: number;
  /** Answer an ACK with a bad cookie with RST instead of dropping it. Default false. */
  resetBadAck?: boolean;
  /** 16-byte SYN cookie secret. Default: random. */
  cookieSecret?: Buffer;
  /**
   * Stray segments (non-SYN TCP of a flow with no mapping and no connection
   * here) passed up per second and worker as ExceptionReason.STRAY, for
   * recovery from the hosts. Default 0: dropped and counted, as without a cluster.
   */
  strayRate?: number;
  /** Token bucket depth for strayRate. Default strayRate / 10 + 1. */
  strayBurst?: number;
}

export interface HostOptions {
  /** The host's underlay address (VTEP). */
  ip: string;
  /** Shim port index the host is reached through. Default 0. */
  port?: number;
  /** Outer Ethernet destination: the host's or the gateway's MAC. */
  nexthopMac: string;
  /** The host's VXLAN device MAC (inner Ethernet destination). */
  innerMac: string;
}

export interface FlowKey {
  /** Dotted quad, or the address as a host-order uint32 (no parsing: the fast path). */
  clientIp: string | number;
  clientPort: number;
  vip: string | number;
  vipPort: number;
  /** Default 'tcp'. */
  proto?: 'tcp' | 'udp';
}

export interface MappingRecord extends FlowKey {
  hostId: number;
  flowId: number;
  state: FlowState;
}

export interface MappingInfo extends MappingRecord {
  packets: bigint;
  bytes: bigint;
}

export interface PortInfo {
  portId: number;
  mac: string;
  ip: string;
  mtu: number;
}

/** Counters of one worker row (or the control thread's), by name. */
export type CounterRow = Record<string, bigint>;

export interface Counters {
  workers: CounterRow[];
  control: CounterRow;
  /** Every counter summed over all rows. */
  total: CounterRow;
}

const PROTO = { tcp: 6, udp: 17 } as const;
const MAPPING_SIZE = koffi.sizeof(Mapping);
const MOFF = Object.fromEntries(
  ['client_ip', 'vip', 'client_port', 'vip_port', 'proto', 'state', 'host_id', 'flow_id', 'packets', 'bytes']
    .map((k) => [k, koffi.offsetof(Mapping, k)]),
) as Record<string, number>;

function invalid(op: string, message: string): ShimError {
  return new ShimError(op, 'ERR_SHIM_INVALID_ARGUMENT', message);
}

function checkInt(op: string, name: string, v: number | undefined, min: number, max: number): number {
  if (v === undefined) return 0;
  if (!Number.isInteger(v) || v < min || v > max) throw invalid(op, `${name} must be an integer ${min}..${max}, got ${v}`);
  return v;
}

function addr(op: string, name: string, s: string | number): number {
  if (typeof s === 'number') {
    if (Number.isInteger(s) && s >= 0 && s <= 0xffffffff) return s;
    throw invalid(op, `${name}: ${s} is not an IPv4 address as a uint32`);
  }
  try {
    return ipv4FromString(s);
  } catch {
    throw invalid(op, `${name}: '${s}' is not an IPv4 address`);
  }
}

function mac(op: string, name: string, s: string): number[] {
  try {
    return [...macFromString(s)];
  } catch {
    throw invalid(op, `${name}: '${s}' is not a MAC address`);
  }
}

function keyStruct(op: string, k: FlowKey): Record<string, number | bigint> {
  return {
    client_ip: addr(op, 'clientIp', k.clientIp),
    vip: addr(op, 'vip', k.vip),
    client_port: checkInt(op, 'clientPort', k.clientPort, 0, 65535),
    vip_port: checkInt(op, 'vipPort', k.vipPort, 1, 65535),
    proto: PROTO[k.proto ?? 'tcp'] ?? (() => { throw invalid(op, `proto must be tcp or udp, got ${k.proto}`); })(),
    state: 0, host_id: 0, flow_id: 0, reserved: 0, packets: 0n, bytes: 0n,
  };
}

/**
 * One struct hs_mapping in raw bytes, reused by every single-mapping call
 * (the control thread is the only caller): the fields are validated and
 * written by the koffi layout, so a call marshals no object and no BigInt.
 */
class MappingBuffer {
  readonly buf = Buffer.alloc(MAPPING_SIZE);
  readonly out = Buffer.alloc(MAPPING_SIZE);
  private readonly dv = new DataView(this.buf.buffer, this.buf.byteOffset, MAPPING_SIZE);
  private readonly odv = new DataView(this.out.buffer, this.out.byteOffset, MAPPING_SIZE);

  key(op: string, k: FlowKey): Buffer {
    const dv = this.dv;
    this.buf.fill(0);
    dv.setUint32(MOFF.client_ip, addr(op, 'clientIp', k.clientIp), true);
    dv.setUint32(MOFF.vip, addr(op, 'vip', k.vip), true);
    dv.setUint16(MOFF.client_port, checkInt(op, 'clientPort', k.clientPort, 0, 65535), true);
    dv.setUint16(MOFF.vip_port, checkInt(op, 'vipPort', k.vipPort, 1, 65535), true);
    const proto = k.proto === undefined || k.proto === 'tcp' ? 6 : PROTO[k.proto];
    if (proto === undefined) throw invalid(op, `proto must be tcp or udp, got ${k.proto}`);
    dv.setUint8(MOFF.proto, proto);
    return this.buf;
  }

  mapping(op: string, m: MappingRecord): Buffer {
    this.key(op, m);
    this.dv.setUint16(MOFF.host_id, checkInt(op, 'hostId', m.hostId, 0, MAX_HOSTS - 1), true);
    this.dv.setUint32(MOFF.flow_id, checkInt(op, 'flowId', m.flowId, 0, 0xffffff), true);
    this.dv.setUint8(MOFF.state, m.state);
    return this.buf;
  }

  /** The lookup's answer (in `out`). */
  outField(f: 'state' | 'host_id' | 'flow_id'): number {
    if (f === 'state') return this.odv.getUint8(MOFF.state);
    if (f === 'host_id') return this.odv.getUint16(MOFF.host_id, true);
    return this.odv.getUint32(MOFF.flow_id, true);
  }

  outCounter(f: 'packets' | 'bytes'): bigint {
    return this.odv.getBigUint64(MOFF[f], true);
  }
}

/**
 * The DPDK forwarder, loaded in this process. One per process: EAL can be
 * initialised once.
 */
export class Shim {
  readonly options: Readonly<ShimOptions>;
  private readonly native: NativeShim;
  private names: string[] = [];
  private statsBuf?: BigUint64Array;
  private readonly mb = new MappingBuffer();
  private started = false;

  constructor(options: ShimOptions) {
    this.options = options;
    this.native = loadNative();
  }

  private check(op: string, rc: number): number {
    if (rc < 0) throw ShimError.fromReturn(op, rc, this.native.hs_last_error());
    return rc;
  }

  private requireRunning(op: string): void {
    if (!this.started) throw new ShimError(op, 'ERR_SHIM_NOT_RUNNING', 'the shim is not running; call start() first');
  }

  /** Build the C configuration, validating every option. */
  static configStruct(o: ShimOptions): Record<string, unknown> {
    const op = 'start';
    if (!Array.isArray(o.eal)) throw invalid(op, 'eal must be an array of strings');
    if (!Array.isArray(o.ports) || o.ports.length < 1 || o.ports.length > MAX_PORTS) {
      throw invalid(op, `ports must list 1..${MAX_PORTS} ports`);
    }
    const vips = o.vips ?? [];
    if (vips.length > MAX_VIPS) throw invalid(op, `at most ${MAX_VIPS} VIPs, got ${vips.length}`);
    const ports = o.ports.map((p, i) => {
      if (typeof p.device !== 'string' || !p.device || Buffer.byteLength(p.device) >= DEVICE_NAME_LEN) {
        throw invalid(op, `ports[${i}].device must be a name of 1..${DEVICE_NAME_LEN - 1} bytes`);
      }
      return {
        device: p.device,
        ip: addr(op, `ports[${i}].ip`, p.ip),
        mtu: checkInt(op, `ports[${i}].mtu`, p.mtu, 576, 9000),
        ring: p.ring ? 1 : 0,
        promisc: p.promisc ? 1 : 0,
        rx_desc: checkInt(op, `ports[${i}].rxDesc`, p.rxDesc, 32, 32768),
        tx_desc: checkInt(op, `ports[${i}].txDesc`, p.txDesc, 32, 32768),
        mac: p.mac === undefined ? [0, 0, 0, 0, 0, 0] : mac(op, `ports[${i}].mac`, p.mac),
        reserved: 0,
      };
    });
    const vipStructs = vips.map((v, i) => ({
      ip: addr(op, `vips[${i}].ip`, v.ip),
      port: checkInt(op, `vips[${i}].port`, v.port, 1, 65535),
      proto: PROTO[v.proto ?? 'tcp'] ?? (() => { throw invalid(op, `vips[${i}].proto must be tcp or udp`); })(),
      reserved: 0,
    }));
    const emptyPort = { device: '', ip: 0, mtu: 0, ring: 0, promisc: 0, rx_desc: 0, tx_desc: 0, mac: [0, 0, 0, 0, 0, 0], reserved: 0 };
    const emptyVip = { ip: 0, port: 0, proto: 0, reserved: 0 };
    return {
      n_ports: ports.length,
      n_vips: vipStructs.length,
      n_workers: checkInt(op, 'workers', o.workers ?? 1, 1, MAX_WORKERS),
      mbufs: checkInt(op, 'mbufs', o.mbufs, 1023, 1 << 24),
      mapping_capacity: checkInt(op, 'mappingCapacity', o.mappingCapacity, 64, (1 << 26) - 4096),
      hold_flows: checkInt(op, 'holdFlows', o.holdFlows, 1, 1 << 20),
      hold_per_flow: checkInt(op, 'holdPerFlow', o.holdPerFlow, 1, 64),
      hold_total: checkInt(op, 'holdTotal', o.holdTotal, 1, 1 << 22),
      exc_ring_size: checkInt(op, 'exceptionRingSize', o.exceptionRingSize, 64, 1 << 20),
      tx_ring_size: checkInt(op, 'txRingSize', o.txRingSize, 64, 1 << 20),
      idle_sleep_us: checkInt(op, 'idleSleepUs', o.idleSleepUs ?? 100, 0, 1_000_000),
      idle_spins: checkInt(op, 'idleSpins', o.idleSpins, 1, 1 << 30),
      accept_capacity: checkInt(op, 'acceptCapacity', o.acceptCapacity, 64, 1 << 24),
      accept_max_bytes: checkInt(op, 'acceptMaxBytes', o.acceptMaxBytes, 1024, 1 << 30),
      accept_timeout_ms: checkInt(op, 'acceptTimeoutMs', o.acceptTimeoutMs, 10, 3_600_000),
      cookie_tick_s: checkInt(op, 'cookieTickS', o.cookieTickS, 1, 3600),
      rcv_wscale: checkInt(op, 'rcvWscale', o.rcvWscale, 0, 14),
      reset_bad_ack: o.resetBadAck ? 1 : 0,
      reserved: [0, 0],
      cookie_secret: (() => {
        if (o.cookieSecret === undefined) return Array(16).fill(0);
        if (!Buffer.isBuffer(o.cookieSecret) || o.cookieSecret.length !== 16) throw invalid(op, 'cookieSecret must be a 16-byte Buffer');
        return [...o.cookieSecret];
      })(),
      stray_rate: checkInt(op, 'strayRate', o.strayRate, 0, 10_000_000),
      stray_burst: checkInt(op, 'strayBurst', o.strayBurst, 0, 10_000_000),
      idle_sleep_max_us: checkInt(op, 'idleSleepMaxUs', o.idleSleepMaxUs, 0, 1_000_000),
      announce_after_ms: checkInt(op, 'announceAfterMs', o.announceAfterMs, 0, 3_600_000),
      ports: [...ports, ...Array(MAX_PORTS - ports.length).fill(emptyPort)],
      vips: [...vipStructs, ...Array(MAX_VIPS - vipStructs.length).fill(emptyVip)],
    };
  }

  /**
   * Initialise EAL and the ports, and launch the workers.
   * @throws ShimError with the shim's errno code (EINVAL, ENODEV, ENOMEM, EIO, EALREADY, ...)
   */
  start(): void {
    const cfg = Shim.configStruct(this.options);
    const argv = ['handoff', ...this.options.eal];
    this.check('start', this.native.hs_init(argv.length, argv, cfg));
    this.started = true;
    const n = this.native.hs_counter_count();
    this.names = Array.from({ length: n }, (_, i) => this.native.hs_counter_name(i) ?? `counter_${i}`);
  }

  /** Stop the workers and release everything. EAL cannot be started again in this process. */
  stop(): void {
    if (!this.started) return;
    this.started = false;
    this.check('stop', this.native.hs_stop());
  }

  get running(): boolean {
    return this.started;
  }

  get counterNames(): readonly string[] {
    return this.names;
  }

  portInfo(port: number): PortInfo {
    this.requireRunning('portInfo');
    const out: Record<string, any> = {};
    this.check('portInfo', this.native.hs_port_info(port, out));
    return { portId: out.port_id, mac: macToString(Buffer.from(out.mac)), ip: ipv4ToString(out.ip), mtu: out.mtu };
  }

  /** Define or replace host `id` (0..4095). Safe while traffic flows. */
  setHost(id: number, h: HostOptions): void {
    const op = 'setHost';
    this.requireRunning(op);
    checkInt(op, 'id', id, 0, MAX_HOSTS - 1);
    const conf = {
      ip: addr(op, 'ip', h.ip),
      port: checkInt(op, 'port', h.port ?? 0, 0, MAX_PORTS - 1),
      nexthop_mac: mac(op, 'nexthopMac', h.nexthopMac),
      inner_mac: mac(op, 'innerMac', h.innerMac),
      reserved: 0,
    };
    this.check(op, this.native.hs_host_set(id, conf));
  }

  private mappingStruct(op: string, m: MappingRecord): Record<string, number | bigint> {
    const s = keyStruct(op, m);
    s.host_id = checkInt(op, 'hostId', m.hostId, 0, MAX_HOSTS - 1);
    s.flow_id = checkInt(op, 'flowId', m.flowId, 0, 0xffffff);
    s.state = m.state;
    return s;
  }

  /** @throws ShimError EEXIST, ENOSPC, EINVAL */
  insertMapping(m: MappingRecord): void {
    this.requireRunning('insertMapping');
    this.check('insertMapping', this.native.hs_mapping_insert(this.mb.mapping('insertMapping', m)));
  }

  /**
   * Insert many mappings in one call, encoded straight into one buffer.
   * @returns how many were inserted (stops at the first failure, which is thrown if none was).
   */
  insertMappings(records: readonly MappingRecord[]): number {
    const op = 'insertMappings';
    this.requireRunning(op);
    const buf = Buffer.alloc(records.length * MAPPING_SIZE);
    records.forEach((r, i) => {
      const s = this.mappingStruct(op, r);
      const o = i * MAPPING_SIZE;
      buf.writeUInt32LE(s.client_ip as number, o + MOFF.client_ip);
      buf.writeUInt32LE(s.vip as number, o + MOFF.vip);
      buf.writeUInt16LE(s.client_port as number, o + MOFF.client_port);
      buf.writeUInt16LE(s.vip_port as number, o + MOFF.vip_port);
      buf.writeUInt8(s.proto as number, o + MOFF.proto);
      buf.writeUInt8(s.state as number, o + MOFF.state);
      buf.writeUInt16LE(s.host_id as number, o + MOFF.host_id);
      buf.writeUInt32LE(s.flow_id as number, o + MOFF.flow_id);
    });
    return this.check(op, this.native.hs_mapping_insert_bulk(buf, records.length));
  }

  /**
   * Insert `n` mappings already encoded in `buf` as consecutive struct
   * hs_mapping records (koffi.sizeof(Mapping) bytes each, host byte order,
   * laid out as koffi.offsetof(Mapping, ...) says). Bulk loads of millions of
   * flows: no object per record. The shim validates every record.
   * @returns how many were inserted (stops at the first failure, which is thrown if none was).
   */
  insertMappingsRaw(buf: Buffer, n: number): number {
    const op = 'insertMappingsRaw';
    this.requireRunning(op);
    checkInt(op, 'n', n, 0, 0x7fffffff);
    if (buf.length < n * MAPPING_SIZE) {
      throw invalid(op, `${n} mappings need ${n * MAPPING_SIZE} bytes, the buffer has ${buf.length}`);
    }
    return this.check(op, this.native.hs_mapping_insert_bulk(buf, n));
  }

  /** PENDING to ACTIVE releases the flow's held packets in order. @throws ShimError ENOENT, EAGAIN */
  setState(key: FlowKey, state: FlowState): void {
    this.requireRunning('setState');
    if (!Object.values(FlowState).includes(state)) throw invalid('setState', `unknown state ${state}`);
    this.check('setState', this.native.hs_mapping_set_state(this.mb.key('setState', key), state));
  }

  /** @throws ShimError ENOENT */
  deleteMapping(key: FlowKey): void {
    this.requireRunning('deleteMapping');
    this.check('deleteMapping', this.native.hs_mapping_delete(this.mb.key('deleteMapping', key)));
  }

  /** The mapping for `key`, or undefined. */
  lookupMapping(key: FlowKey): MappingInfo | undefined {
    this.requireRunning('lookupMapping');
    const rc = this.native.hs_mapping_lookup(this.mb.key('lookupMapping', key), this.mb.out);
    if (rc === -2) return undefined; // ENOENT
    this.check('lookupMapping', rc);
    const mb = this.mb;
    return {
      clientIp: key.clientIp, clientPort: key.clientPort, vip: key.vip, vipPort: key.vipPort,
      proto: key.proto ?? 'tcp', hostId: mb.outField('host_id'), flowId: mb.outField('flow_id'), state: mb.outField('state') as FlowState,
      packets: mb.outCounter('packets'), bytes: mb.outCounter('bytes'),
    };
  }

  mappingCount(): number {
    this.requireRunning('mappingCount');
    return this.check('mappingCount', this.native.hs_mapping_count());
  }

  /** Accepted connections awaiting classification, all workers (a snapshot). At most acceptCapacity per worker. */
  acceptCount(): number {
    this.requireRunning('acceptCount');
    return this.check('acceptCount', this.native.hs_accept_count());
  }

  /** Whether worker `worker` is in its idle sleep now (a snapshot; queued work wakes it). */
  workerAsleep(worker: number): boolean {
    this.requireRunning('workerAsleep');
    return this.check('workerAsleep', this.native.hs_worker_asleep(worker)) === 1;
  }

  /** Fill `burst` with waiting exception packets and their connection events. @returns how many. */
  exceptionBurst(burst: PacketBurst): number {
    this.requireRunning('exceptionBurst');
    burst.count = this.check('exceptionBurst',
      this.native.hs_exc_burst(burst.data, burst.data.length, burst.meta, burst.events, burst.capacity));
    return burst.count;
  }

  /**
   * Resolve when exceptions are waiting (true) or after `timeoutMs` (false),
   * without spinning: a thread-pool thread sleeps on the shim's eventfd.
   */
  waitExceptions(timeoutMs: number): Promise<boolean> {
    this.requireRunning('waitExceptions');
    return new Promise((resolve, reject) => {
      this.native.hs_exc_wait.async(timeoutMs, (err, rc) => {
        if (err) return reject(err);
        if (rc < 0) return reject(ShimError.fromReturn('waitExceptions', rc, this.native.hs_last_error()));
        resolve(rc === 1);
      });
    });
  }

  /**
   * A descriptor (a pipe's read end, owned by the caller) that becomes
   * readable when armExceptions() was called and exceptions arrived since:
   * watch it in the event loop instead of blocking a thread-pool thread.
   * @throws ShimError ENOTCONN, or the dup's errno
   */
  exceptionNotifyFd(): number {
    this.requireRunning('exceptionNotifyFd');
    return this.check('exceptionNotifyFd', this.native.hs_exc_notify_fd());
  }

  /**
   * Announce that the control thread goes idle: the next exception writes a
   * byte to the exceptionNotifyFd() pipe. @returns false when exceptions are
   * already waiting (nothing armed: take them first), true when armed.
   */
  armExceptions(): boolean {
    this.requireRunning('armExceptions');
    return this.check('armExceptions', this.native.hs_exc_arm()) === 0;
  }

  /** Wake a pending waitExceptions() at once (shutdown). */
  wakeExceptions(): void {
    if (this.started) this.native.hs_exc_wake();
  }

  /**
   * Hand an accepted connection to its (already inserted, PENDING) mapping,
   * with no answer: the DATA or FIN event that froze it is its exact state,
   * and the segments its worker held since join the mapping's hold.
   * @throws ShimError EAGAIN
   */
  handoffConnection(worker: number, connId: number, gen: number): void {
    this.requireRunning('handoffConnection');
    this.check('handoffConnection', this.native.hs_conn_handoff(worker, connId, gen));
  }

  /** As handoffConnection for a connection no event froze; its worker answers with a FROZEN event. @throws ShimError EAGAIN */
  freezeConnection(worker: number, connId: number, gen: number): void {
    this.requireRunning('freezeConnection');
    this.check('freezeConnection', this.native.hs_conn_freeze(worker, connId, gen));
  }

  /** The bytes so far do not decide: unfreeze; the next new byte freezes it again with a new event. @throws ShimError EAGAIN */
  resumeConnection(worker: number, connId: number, gen: number): void {
    this.requireRunning('resumeConnection');
    this.check('resumeConnection', this.native.hs_conn_resume(worker, connId, gen));
  }

  /** Reset an accepted connection (RST to the client). @throws ShimError EAGAIN */
  resetConnection(worker: number, connId: number, gen: number): void {
    this.requireRunning('resetConnection');
    this.check('resetConnection', this.native.hs_conn_reset(worker, connId, gen));
  }

  /** Replace the SYN cookie secret (the previous one stays valid for checks). */
  /** Set the SYN cookie secrets: `gen` makes cookies, a cookie checks against `gen` or `alt`. */
  setCookieSecrets(gen: Buffer, alt: Buffer): void {
    this.requireRunning('setCookieSecrets');
    if (!Buffer.isBuffer(gen) || gen.length !== 16 || !Buffer.isBuffer(alt) || alt.length !== 16) {
      throw invalid('setCookieSecrets', 'secrets must be 16 bytes each');
    }
    this.check('setCookieSecrets', this.native.hs_cookie_set(gen, alt));
  }

  rotateCookieSecret(secret: Buffer): void {
    this.requireRunning('rotateCookieSecret');
    if (!Buffer.isBuffer(secret) || secret.length !== 16) throw invalid('rotateCookieSecret', 'secret must be 16 bytes');
    this.check('rotateCookieSecret', this.native.hs_cookie_rotate(secret));
  }

  /** Point a (PENDING) mapping at another host: failover. @throws ShimError ENOENT, EINVAL */
  setMappingHost(key: FlowKey, hostId: number): void {
    this.requireRunning('setMappingHost');
    checkInt('setMappingHost', 'hostId', hostId, 0, MAX_HOSTS - 1);
    this.check('setMappingHost', this.native.hs_mapping_set_host(this.mb.key('setMappingHost', key), hostId));
  }

  /**
   * Fault injection on the blob path (frames the control thread sends, and
   * frames to the balancer's own address), in parts per thousand. Tests only.
   */
  setFaults(f: { dropPm?: number; corruptPm?: number; duplicatePm?: number; reorderPm?: number; seed?: number }): void {
    const op = 'setFaults';
    this.requireRunning(op);
    this.check(op, this.native.hs_fault_set({
      drop_pm: checkInt(op, 'dropPm', f.dropPm, 0, 1000), corrupt_pm: checkInt(op, 'corruptPm', f.corruptPm, 0, 1000),
      duplicate_pm: checkInt(op, 'duplicatePm', f.duplicatePm, 0, 1000), reorder_pm: checkInt(op, 'reorderPm', f.reorderPm, 0, 1000),
      seed: checkInt(op, 'seed', f.seed, 0, 0xffffffff),
    }));
  }

  /** Tests only: fix the shim's timestamp clock (ms); 0 restores the real clock. */
  setClockForTests(ms: number): void {
    this.native.hs_clock_override(ms);
  }

  /** Queue the burst's frames for transmission. @returns frames queued (the rest are counted drops). */
  txBurst(burst: PacketBurst): number {
    this.requireRunning('txBurst');
    return this.check('txBurst', this.native.hs_tx_burst(burst.data, burst.data.length, burst.meta, burst.count));
  }

  /**
   * Run the burst's frames through the data path again (worker 0 looks up
   * their mappings): packets held while their flow's owner was found.
   * @returns frames queued.
   */
  reinjectBurst(burst: PacketBurst): number {
    this.requireRunning('reinjectBurst');
    return this.check('reinjectBurst', this.native.hs_reinject_burst(burst.data, burst.data.length, burst.meta, burst.count));
  }

  /** Feed the burst to ring port `port`'s receive side. */
  ringInject(port: number, burst: PacketBurst): number {
    this.requireRunning('ringInject');
    return this.check('ringInject',
      this.native.hs_ring_port_inject(port, burst.data, burst.data.length, burst.meta, burst.count));
  }

  /** Fill `burst` with what ring port `port` transmitted. */
  ringDrain(port: number, burst: PacketBurst): number {
    this.requireRunning('ringDrain');
    burst.count = this.check('ringDrain',
      this.native.hs_ring_port_drain(port, burst.data, burst.data.length, burst.meta, burst.capacity));
    return burst.count;
  }

  /** A snapshot of every counter, per worker, for the control thread, and summed. */
  counters(): Counters {
    this.requireRunning('counters');
    const n = this.names.length;
    const rowsMax = MAX_WORKERS + 1;
    this.statsBuf ??= new BigUint64Array(n * rowsMax);
    const rows = this.check('counters', this.native.hs_stats_read(this.statsBuf, this.statsBuf.length));
    const row = (r: number): CounterRow =>
      Object.fromEntries(this.names.map((name, c) => [name, this.statsBuf![r * n + c]]));
    const all = Array.from({ length: rows }, (_, r) => row(r));
    const total: CounterRow = Object.fromEntries(this.names.map((name) => [name, 0n]));
    for (const r of all) for (const name of this.names) total[name] += r[name];
    return { workers: all.slice(0, rows - 1), control: all[rows - 1], total };
  }
}
