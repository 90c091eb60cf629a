// The shim side of the fast-path benchmark, in its own process because EAL
// can be initialised only once per process. Forked by run.ts with a
// ChildConfig as JSON in argv[2]; reports over the IPC channel (ChildMessage)
// and leaves the arithmetic to the driver.
import koffi from 'koffi';
import { encodeMappingRecords, Mapping, Shim } from '../../src/offload';
import { ipv4FromString } from '../../src/net/packet';
import { dpdkHeapUse } from './dpdk-heap';
import { runAsChild, sendToParent } from '../lib/processes';
import {
  ChildConfig, ChildMessage, HOST, LB, PCAP_DEVICE, VIP, ealArgs, flowClientIp, flowClientPort, flowId,
} from './common';
import { threadSeconds } from '../e2e-vs-haproxy/measure';
import { countCacheMisses, threadIds } from './perf';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const send = (msg: ChildMessage): Promise<void> => sendToParent(msg);

/** Every flow as struct hs_mapping records in one buffer: no object per flow. */
function encodeMappings(flows: number): Buffer {
  return encodeMappingRecords(flows, {
    vip: ipv4FromString(VIP.ip), vipPort: VIP.port, hostId: HOST.id, clientIp: flowClientIp, clientPort: flowClientPort, flowId,
  });
}

async function main(cfg: ChildConfig): Promise<void> {
  const shim = new Shim({
    eal: ealArgs(cfg.pcaps, cfg.memMb, cfg.hugepages, { workers: cfg.workers }),
    // The pcap PMD cannot change its MAC: the frames are addressed to its own (LB.mac).
    ports: [{ device: PCAP_DEVICE, ip: LB.ip }],
    vips: [{ ip: VIP.ip, port: VIP.port }],
    workers: cfg.workers,
    idleSleepUs: 0, // pure busy-poll, like testpmd
    mbufs: cfg.mbufs,
    mappingCapacity: cfg.flows,
  });
  shim.start();
  try {
    // Everything, the mapping table included, is allocated by start().
    const heap = dpdkHeapUse('hs_mbufs');
    const mac = shim.portInfo(0).mac;
    if (mac !== LB.mac) throw new Error(`${PCAP_DEVICE} has MAC ${mac}, the pcap's frames are addressed to ${LB.mac} (common.ts)`);
    shim.setHost(HOST.id, { ip: HOST.ip, port: 0, nexthopMac: HOST.nexthopMac, innerMac: HOST.innerMac });

    const records = encodeMappings(cfg.flows);
    const t0 = process.hrtime.bigint();
    const inserted = shim.insertMappingsRaw(records, cfg.flows);
    const insertMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (inserted < cfg.flows) {
      // Partial: insert the rest to make the shim throw its reason.
      shim.insertMappingsRaw(records.subarray(inserted * koffi.sizeof(Mapping)), cfg.flows - inserted);
      throw new Error(`only ${inserted} of ${cfg.flows} mappings were inserted`);
    }
    await send({
      type: 'loaded', inserted, count: shim.mappingCount(), insertMs,
      heapBytes: heap?.allocBytes, poolBytes: heap?.poolBytes,
    });

    // While the table was filling, packets of flows not yet inserted went to
    // the exception ring: settle, then measure deltas only.
    await sleep(cfg.warmupSeconds * 1000);
    /** CPU seconds of the worker lcores' threads (rte-worker-N), undefined unless all are found. */
    const workerCpu = () => {
      const workers = [...threadSeconds(process.pid)].filter(([name]) => name.startsWith('rte-worker-'));
      return workers.length === cfg.workers ? workers.reduce((sum, [, s]) => sum + s, 0) : undefined;
    };
    const cpu0 = workerCpu();
    const misses = countCacheMisses(threadIds(process.pid, 'rte-worker-'), cfg.seconds);
    const c0 = shim.counters().total;
    const s0 = process.hrtime.bigint();
    await sleep(cfg.seconds * 1000);
    const c1 = shim.counters().total;
    const elapsedS = Number(process.hrtime.bigint() - s0) / 1e9;
    const cpu1 = workerCpu();
    const delta = Object.fromEntries(Object.keys(c1).map((k) => [k, Number(c1[k] - c0[k])]));
    // Per worker: 1.0 when every worker had a core of its own all the time.
    const cpuShare = cpu0 !== undefined && cpu1 !== undefined ? (cpu1 - cpu0) / elapsedS / cfg.workers : undefined;
    await send({ type: 'result', elapsedS, delta, cpuShare, cacheMisses: await misses });
  } finally {
    shim.stop();
  }
}

runAsChild<ChildConfig>(main);
