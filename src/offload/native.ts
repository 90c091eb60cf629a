import fs from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';
import { ABI_VERSION, Config, Fault, HostConf, Mapping, PortInfoStruct } from './abi';
import { ShimError } from './errors';

/** The shim's C functions as koffi binds them. */
export interface NativeShim {
  hs_abi_version(): number;
  hs_abi_layout(buf: Buffer | null, len: number): number;
  hs_last_error(): string;
  hs_init(argc: number, argv: string[], cfg: object): number;
  hs_stop(): number;
  hs_running(): number;
  hs_port_info(port: number, out: object): number;
  hs_host_set(id: number, host: object): number;
  hs_mapping_insert(m: Buffer): number;
  hs_mapping_insert_bulk(m: Buffer, n: number): number;
  hs_mapping_set_state(key: Buffer, state: number): number;
  hs_mapping_delete(key: Buffer): number;
  hs_mapping_lookup(key: Buffer, out: Buffer): number;
  hs_mapping_count(): number;
  hs_exc_burst(buf: Buffer, bufLen: number, meta: Buffer, events: Buffer | null, max: number): number;
  hs_exc_wait: ((timeoutMs: number) => number) & { async: (timeoutMs: number, cb: (err: unknown, rc: number) => void) => void };
  hs_exc_wake(): number;
  hs_exc_notify_fd(): number;
  hs_exc_arm(): number;
  hs_conn_handoff(worker: number, connId: number, gen: number): number;
  hs_conn_freeze(worker: number, connId: number, gen: number): number;
  hs_conn_resume(worker: number, connId: number, gen: number): number;
  hs_conn_reset(worker: number, connId: number, gen: number): number;
  hs_cookie_rotate(secret: Buffer): number;
  hs_cookie_set(gen: Buffer, alt: Buffer): number;
  hs_reinject_burst(buf: Buffer, bufLen: number, meta: Buffer, n: number): number;
  hs_mapping_set_host(key: Buffer, hostId: number): number;
  hs_clock_override(ms: number): number;
  hs_fault_set(f: object): number;
  hs_tx_burst(buf: Buffer, bufLen: number, meta: Buffer, n: number): number;
  hs_ring_port_inject(port: number, buf: Buffer, bufLen: number, meta: Buffer, n: number): number;
  hs_ring_port_drain(port: number, buf: Buffer, bufLen: number, meta: Buffer, max: number): number;
  hs_counter_count(): number;
  hs_counter_name(i: number): string | null;
  hs_stats_read(out: BigUint64Array, n: number): number;
  hs_worker_count(): number;
  hs_accept_count(): number;
  hs_worker_asleep(worker: number): number;
}

const PROTOTYPES = [
  'uint32_t hs_abi_version()',
  'int hs_abi_layout(void *buf, size_t len)',
  'const char *hs_last_error()',
  'int hs_init(int argc, const char **argv, const hs_config *cfg)',
  'int hs_stop()',
  'int hs_running()',
  'int hs_port_info(uint32_t port, _Out_ hs_port_info *out)',
  'int hs_host_set(uint32_t id, const hs_host_conf *host)',
  // struct hs_mapping as raw bytes (src/offload/shim.ts writes them by the koffi layout): no object per call.
  'int hs_mapping_insert(const void *m)',
  'int hs_mapping_insert_bulk(const void *m, uint32_t n)',
  'int hs_mapping_set_state(const void *key, uint32_t state)',
  'int hs_mapping_delete(const void *key)',
  'int hs_mapping_lookup(const void *key, void *out)',
  'int hs_mapping_count()',
  // Burst buffers are passed as raw pointers to their memory: no copies.
  'int hs_exc_burst(void *buf, uint32_t buf_len, void *meta, void *events, uint32_t max)',
  'int hs_exc_wait(uint32_t timeout_ms)',
  'int hs_exc_wake()',
  'int hs_exc_notify_fd()',
  'int hs_exc_arm()',
  'int hs_conn_handoff(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)',
  'int hs_conn_freeze(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)',
  'int hs_conn_resume(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)',
  'int hs_conn_reset(uint32_t worker, uint32_t conn_id, uint32_t conn_gen)',
  'int hs_cookie_rotate(const void *secret)',
  'int hs_cookie_set(const void *gen, const void *alt)',
  'int hs_reinject_burst(const void *buf, uint32_t buf_len, const void *meta, uint32_t n)',
  'int hs_mapping_set_host(const void *key, uint32_t host_id)',
  'int hs_clock_override(uint64_t ms)',
  'int hs_fault_set(const hs_fault *f)',
  'int hs_tx_burst(const void *buf, uint32_t buf_len, const void *meta, uint32_t n)',
  'int hs_ring_port_inject(uint32_t port, const void *buf, uint32_t buf_len, const void *meta, uint32_t n)',
  'int hs_ring_port_drain(uint32_t port, void *buf, uint32_t buf_len, void *meta, uint32_t max)',
  'uint32_t hs_counter_count()',
  'const char *hs_counter_name(uint32_t i)',
  'int hs_stats_read(void *out, uint32_t n)',
  'int hs_worker_count()',
  'int hs_accept_count()',
  'int hs_worker_asleep(uint32_t worker)',
];

// Referenced so the struct types are registered before the prototypes that name them.
void [Config, Fault, HostConf, Mapping, PortInfoStruct];

let loaded: NativeShim | undefined;

/** Where the shared library is looked for: HANDOFF_SHIM_PATH, then the build tree. */
export function shimLibraryPath(): string {
  if (process.env.HANDOFF_SHIM_PATH) return process.env.HANDOFF_SHIM_PATH;
  // dist/src/offload -> package root, or src/offload when run from source.
  for (const up of ['../../..', '../..']) {
    const candidate = path.resolve(__dirname, up, 'native/dpdk-shim/build/libhandoff_shim.so');
    if (fs.existsSync(candidate)) return candidate;
  }
  return path.resolve(__dirname, '../../../native/dpdk-shim/build/libhandoff_shim.so');
}

/**
 * Load the shim once per process and check its ABI version.
 * @throws ShimError ERR_SHIM_NOT_FOUND, ERR_SHIM_ABI_MISMATCH
 */
export function loadNative(): NativeShim {
  if (loaded) return loaded;
  const file = shimLibraryPath();
  if (!fs.existsSync(file)) {
    throw new ShimError('load', 'ERR_SHIM_NOT_FOUND',
      `${file} does not exist; build it with 'npm run setup' (or make -C native/dpdk-shim)`);
  }
  const lib = koffi.load(file);
  const api: Record<string, unknown> = {};
  for (const proto of PROTOTYPES) {
    const fn = lib.func(proto);
    api[fn.info.name] = fn;
  }
  const native = api as unknown as NativeShim;
  const version = native.hs_abi_version();
  if (version !== ABI_VERSION) {
    throw new ShimError('load', 'ERR_SHIM_ABI_MISMATCH',
      `${file} has ABI version ${version}, this binding expects ${ABI_VERSION}; rebuild the shim`);
  }
  loaded = native;
  return native;
}

/** The shim's ABI description (sizes and offsets) as the C compiler laid it out. */
export interface AbiLayout {
  version: number;
  constants: Record<string, number>;
  structs: Record<string, { size: number; fields: Record<string, number> }>;
}

export function readAbiLayout(native: NativeShim = loadNative()): AbiLayout {
  const need = native.hs_abi_layout(null, 0);
  const buf = Buffer.alloc(need + 1);
  native.hs_abi_layout(buf, buf.length);
  return JSON.parse(buf.toString('utf8', 0, need)) as AbiLayout;
}
