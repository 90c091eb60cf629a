import koffi, { type TypeObject } from 'koffi';

/** Must equal HS_ABI_VERSION in native/dpdk-shim/handoff_shim.h. */
export const ABI_VERSION = 7;
export const MAX_PORTS = 8;
export const MAX_VIPS = 64;
export const MAX_WORKERS = 16;
export const MAX_HOSTS = 4096;
export const PKT_MAX = 2048;
export const DEVICE_NAME_LEN = 64;

/** Mapping states (enum hs_flow_state). REOPENED: set by workers when a new SYN reuses a CLOSING flow's 4-tuple. */
export const FlowState = { PENDING: 1, ACTIVE: 2, CLOSING: 3, REOPENED: 4 } as const;
export type FlowState = (typeof FlowState)[keyof typeof FlowState];
export const ExceptionReason = { MISS: 1, LOCAL: 2, CONN: 3, STRAY: 4, ARP: 5 } as const;
/** Connection event bits (enum hs_conn_event_type). */
export const ConnEventType = { ACCEPTED: 1, DATA: 2, FIN: 4, RESET: 8, TIMEOUT: 16, FROZEN: 32, SILENT: 64 } as const;

// Declarations mirror handoff_shim.h; test/offload-abi.test.ts checks every
// size and offset against the shim's own hs_abi_layout().
export const PortConf = koffi.struct('hs_port_conf', {
  device: koffi.array('char', DEVICE_NAME_LEN, 'String'),
  ip: 'uint32_t',
  mtu: 'uint16_t',
  ring: 'uint8_t',
  promisc: 'uint8_t',
  rx_desc: 'uint16_t',
  tx_desc: 'uint16_t',
  mac: koffi.array('uint8_t', 6, 'Array'),
  reserved: 'uint16_t',
});

export const VipConf = koffi.struct('hs_vip_conf', {
  ip: 'uint32_t',
  port: 'uint16_t',
  proto: 'uint8_t',
  reserved: 'uint8_t',
});

export const Config = koffi.struct('hs_config', {
  n_ports: 'uint32_t',
  n_vips: 'uint32_t',
  n_workers: 'uint32_t',
  mbufs: 'uint32_t',
  mapping_capacity: 'uint32_t',
  hold_flows: 'uint32_t',
  hold_per_flow: 'uint32_t',
  hold_total: 'uint32_t',
  exc_ring_size: 'uint32_t',
  tx_ring_size: 'uint32_t',
  idle_sleep_us: 'uint32_t',
  idle_spins: 'uint32_t',
  accept_capacity: 'uint32_t',
  accept_max_bytes: 'uint32_t',
  accept_timeout_ms: 'uint32_t',
  cookie_tick_s: 'uint32_t',
  rcv_wscale: 'uint8_t',
  reset_bad_ack: 'uint8_t',
  reserved: koffi.array('uint8_t', 2, 'Array'),
  cookie_secret: koffi.array('uint8_t', 16, 'Array'),
  stray_rate: 'uint32_t',
  stray_burst: 'uint32_t',
  idle_sleep_max_us: 'uint32_t',
  announce_after_ms: 'uint32_t',
  ports: koffi.array(PortConf, MAX_PORTS),
  vips: koffi.array(VipConf, MAX_VIPS),
});

export const HostConf = koffi.struct('hs_host_conf', {
  ip: 'uint32_t',
  port: 'uint16_t',
  nexthop_mac: koffi.array('uint8_t', 6, 'Array'),
  inner_mac: koffi.array('uint8_t', 6, 'Array'),
  reserved: 'uint16_t',
});

export const Mapping = koffi.struct('hs_mapping', {
  client_ip: 'uint32_t',
  vip: 'uint32_t',
  client_port: 'uint16_t',
  vip_port: 'uint16_t',
  proto: 'uint8_t',
  state: 'uint8_t',
  host_id: 'uint16_t',
  flow_id: 'uint32_t',
  reserved: 'uint32_t',
  packets: 'uint64_t',
  bytes: 'uint64_t',
});

export const PktMeta = koffi.struct('hs_pkt_meta', {
  offset: 'uint32_t',
  len: 'uint16_t',
  port: 'uint16_t',
  reason: 'uint16_t',
  worker: 'uint16_t',
  reserved: 'uint32_t',
});

export const ConnEvent = koffi.struct('hs_conn_event', {
  type: 'uint32_t',
  worker: 'uint16_t',
  port: 'uint16_t',
  conn_id: 'uint32_t',
  conn_gen: 'uint32_t',
  client_ip: 'uint32_t',
  vip: 'uint32_t',
  client_port: 'uint16_t',
  vip_port: 'uint16_t',
  iss: 'uint32_t',
  irs: 'uint32_t',
  snd_nxt: 'uint32_t',
  rcv_nxt: 'uint32_t',
  snd_wnd: 'uint32_t',
  rcv_wnd: 'uint32_t',
  ts_val: 'uint32_t',
  ts_ecr: 'uint32_t',
  data_seq: 'uint32_t',
  payload_off: 'uint16_t',
  payload_len: 'uint16_t',
  mss: 'uint16_t',
  snd_wscale: 'uint8_t',
  rcv_wscale: 'uint8_t',
  sack_ok: 'uint8_t',
  ts_ok: 'uint8_t',
  vlan_tci: 'uint16_t',
  peer_mac: koffi.array('uint8_t', 6, 'Array'),
});

export const Fault = koffi.struct('hs_fault', {
  drop_pm: 'uint16_t',
  corrupt_pm: 'uint16_t',
  duplicate_pm: 'uint16_t',
  reorder_pm: 'uint16_t',
  seed: 'uint32_t',
});

export const PortInfoStruct = koffi.struct('hs_port_info', {
  port_id: 'uint16_t',
  mac: koffi.array('uint8_t', 6, 'Array'),
  ip: 'uint32_t',
  mtu: 'uint16_t',
  reserved: 'uint16_t',
});

/** Every struct that crosses the FFI boundary, by its C name. */
export const abiStructs: Record<string, TypeObject> = {
  hs_port_conf: PortConf,
  hs_vip_conf: VipConf,
  hs_config: Config,
  hs_host_conf: HostConf,
  hs_mapping: Mapping,
  hs_pkt_meta: PktMeta,
  hs_conn_event: ConnEvent,
  hs_fault: Fault,
  hs_port_info: PortInfoStruct,
};

export const abiConstants: Record<string, number> = {
  HS_MAX_PORTS: MAX_PORTS,
  HS_MAX_VIPS: MAX_VIPS,
  HS_MAX_WORKERS: MAX_WORKERS,
  HS_MAX_HOSTS: MAX_HOSTS,
  HS_PKT_MAX: PKT_MAX,
  HS_DEVICE_NAME_LEN: DEVICE_NAME_LEN,
};
