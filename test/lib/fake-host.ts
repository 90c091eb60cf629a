// A stand-in for host agents on a ring port (the real agent is src/host):
// reassembles blob datagrams, verifies each blob, answers ACKs and FINALs
// through the ring, and hands back everything else the balancer transmitted.
import { PacketBurst, Shim } from '../../src/offload';
import { buildUdp, ipv4ToString } from '../../src/net';
import { BlobError, decodeBlob, ReplayWindow, Reassembler, Status, statusForBlobError } from '../../src/transfer';
import type { ConnectionBlob } from '../../src/transfer';

export interface FakeHostSpec { name: string; ip: string; mac: string; agentPort: number }

export class FakeHosts {
  /** Blobs each host accepted ("injected"), in order. */
  readonly injected = new Map<string, ConnectionBlob[]>();
  /** Frames that were not blob traffic (SYN-ACKs, ACKs, resets, tunnelled packets). */
  readonly wire: Buffer[] = [];
  /** Hosts that stay silent (to test failover). */
  readonly silent = new Set<string>();
  refusedBlobs = 0;
  private readonly reasm = new Map<string, Reassembler>();
  private readonly replay = new Map<string, ReplayWindow>();
  private readonly out = new PacketBurst(256);
  private readonly back = new PacketBurst(256);

  constructor(private readonly shim: Shim, private readonly hosts: FakeHostSpec[], private readonly key: Buffer,
    private readonly lb: { ip: string; mac: string }, private readonly port = 0) {
    for (const h of hosts) {
      this.injected.set(h.name, []);
      this.reasm.set(h.ip, new Reassembler());
      this.replay.set(h.ip, new ReplayWindow({ maxAgeMs: 10_000 }));
    }
  }

  /** Take what the balancer sent; answer blob traffic. @returns frames processed. */
  pump(): number {
    const n = this.shim.ringDrain(this.port, this.out);
    this.back.clear();
    for (let i = 0; i < n; i++) {
      const f = this.out.frame(i);
      const h = this.blobDestination(f);
      if (!h) {
        this.wire.push(Buffer.from(f));
        continue;
      }
      if (this.silent.has(h.name)) continue;
      const ihl = (f[14] & 15) * 4;
      const udp = 14 + ihl;
      const from = { ip: ipv4ToString(f.readUInt32BE(26)), port: f.readUInt16BE(udp) };
      const r = this.reasm.get(h.ip)!.receive(from, f.subarray(udp + 8, udp + f.readUInt16BE(udp + 4)), Date.now());
      if (r.kind === 'dropped') continue;
      let reply = r.reply;
      if (r.kind === 'complete') {
        this.answer(h, from.port, r.reply);
        let status: number = Status.OK;
        try {
          const blob = decodeBlob(r.blob, this.key, { replay: this.replay.get(h.ip)! });
          this.injected.get(h.name)!.push(blob);
        } catch (err) {
          this.refusedBlobs++;
          status = err instanceof BlobError ? statusForBlobError(err.code) : Status.INTERNAL;
        }
        reply = this.reasm.get(h.ip)!.finish(r.ref, status);
      }
      this.answer(h, from.port, reply);
    }
    if (this.back.count) this.shim.ringInject(this.port, this.back);
    return n;
  }

  private blobDestination(f: Buffer): FakeHostSpec | undefined {
    if (f.length < 42 || f.readUInt16BE(12) !== 0x0800 || f[23] !== 17) return undefined;
    const dst = ipv4ToString(f.readUInt32BE(30));
    const dport = f.readUInt16BE(14 + (f[14] & 15) * 4 + 2);
    return this.hosts.find((h) => h.ip === dst && h.agentPort === dport);
  }

  private answer(h: FakeHostSpec, toPort: number, payload: Buffer): void {
    if (this.back.count === this.back.capacity) {
      this.shim.ringInject(this.port, this.back);
      this.back.clear();
    }
    this.back.add(buildUdp({ srcMac: h.mac, dstMac: this.lb.mac, srcIp: h.ip, dstIp: this.lb.ip,
      srcPort: h.agentPort, dstPort: toPort, payload }));
  }
}
