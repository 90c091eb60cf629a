import koffi from 'koffi';
import { FlowState, Mapping } from './abi';

/** What each record of a bulk insert holds; the per-flow parts are functions of the index (no object per flow). */
export interface MappingRecordSpec {
  /** VIP, host-order uint32. */
  vip: number;
  vipPort: number;
  hostId: number;
  /** Default ACTIVE. */
  state?: number;
  /** Default TCP (6). */
  proto?: number;
  clientIp: (i: number) => number;
  clientPort: (i: number) => number;
  flowId: (i: number) => number;
}

/**
 * `n` struct hs_mapping records in one zeroed buffer, for
 * Shim.insertMappingBulk: the layout comes from the koffi declaration the ABI
 * test checks against the shim.
 */
export function encodeMappingRecords(n: number, spec: MappingRecordSpec): Buffer {
  const size = koffi.sizeof(Mapping);
  const off = (f: string) => koffi.offsetof(Mapping, f);
  const [oIp, oVip, oCport, oVport, oProto, oState, oHost, oFlow] =
    ['client_ip', 'vip', 'client_port', 'vip_port', 'proto', 'state', 'host_id', 'flow_id'].map(off);
  const state = spec.state ?? FlowState.ACTIVE;
  const proto = spec.proto ?? 6;
  const buf = Buffer.alloc(n * size); // zeroed: reserved, packets and bytes stay 0
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  for (let i = 0, o = 0; i < n; i++, o += size) {
    dv.setUint32(o + oIp, spec.clientIp(i), true);
    dv.setUint32(o + oVip, spec.vip, true);
    dv.setUint16(o + oCport, spec.clientPort(i), true);
    dv.setUint16(o + oVport, spec.vipPort, true);
    dv.setUint8(o + oProto, proto);
    dv.setUint8(o + oState, state);
    dv.setUint16(o + oHost, spec.hostId, true);
    dv.setUint32(o + oFlow, spec.flowId(i), true);
  }
  return buf;
}
