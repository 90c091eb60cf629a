// Lazy announcement (announceAfterMs, shim ABI 7) through a real worker on a
// ring port: a completed handshake is not an event of its own; the
// connection's first event carries ACCEPTED (bytes, FIN or reset), and one
// that sends nothing is announced with SILENT once announceAfterMs have
// passed. The shim's timestamp clock is fixed, so nothing here depends on
// how fast the machine is.
import t from 'tap';
import { ConnEventType as EV, ExceptionReason, PacketBurst } from '../src/offload';
import { buildTcp, parseFrame, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../src/net';
import { startShim, waitFor, sleep } from './lib/harness';
import { CLIENT, HOST1, LB, VIP } from './lib/topology';

const ANNOUNCE_MS = 3000;
const shim = startShim({
  ports: [{ device: 'ann_ring', ip: LB.ip, mac: LB.mac, ring: true }],
  vips: [{ ip: VIP.ip, port: VIP.port }],
  acceptTimeoutMs: 60_000, announceAfterMs: ANNOUNCE_MS, mbufs: 8191,
});

const pkt = (port: number, seq: number, ack: number, flags: number, payload = '') =>
  buildTcp({ srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip, srcPort: port, dstPort: VIP.port,
    seq: seq >>> 0, ack: ack >>> 0, flags, window: 502, payload: Buffer.from(payload), options: Buffer.from('020405b4', 'hex') });

if (typeof shim === 'string') {
  t.plan(0, shim);
} else {
  t.teardown(() => shim.stop());
  shim.setHost(1, HOST1);
  // A fixed clock, at the start of a cookie tick (64 s), so that moving it by seconds keeps cookies valid.
  let clock = 64_000 * 1000;
  shim.setClockForTests(clock);
  const inb = new PacketBurst(64);
  const out = new PacketBurst(64);
  const exc = new PacketBurst(64);
  const total = () => shim.counters().total;
  const inject = (...frames: Buffer[]) => {
    inb.clear();
    for (const f of frames) inb.add(f);
    shim.ringInject(0, inb);
  };
  const wire = async (n: number) => {
    const got: Buffer[] = [];
    await waitFor(() => {
      shim.ringDrain(0, out);
      for (let i = 0; i < out.count; i++) got.push(Buffer.from(out.frame(i)));
      return got.length >= n;
    });
    return got;
  };
  const events = async (n: number) => {
    const got: { type: number; connId: number; payload: string }[] = [];
    await waitFor(() => {
      shim.exceptionBurst(exc);
      for (let i = 0; i < exc.count; i++) {
        if (exc.reason(i) === ExceptionReason.CONN) {
          got.push({ type: exc.ev32(i, 'type'), connId: exc.ev32(i, 'conn_id'), payload: exc.payload(i).toString() });
        }
      }
      return got.length >= n;
    }, 3000);
    return got;
  };
  /** SYN, SYN-ACK, then the handshake's pure ACK. */
  const handshake = async (port: number, isn: number) => {
    shim.ringDrain(0, out); // what earlier segments were answered with (ACKs)
    inject(pkt(port, isn, 0, TCP_SYN));
    const synAck = (await wire(1)).find((f) => parseFrame(f).tcp!.flags === (TCP_SYN | TCP_ACK))!;
    const cookie = parseFrame(synAck).tcp!.seq;
    const h = { seq: isn + 1, ack: (cookie + 1) >>> 0 };
    const accepted = total().accepted;
    inject(pkt(port, h.seq, h.ack, TCP_ACK));
    // Accepted (its age counted from now) before the caller moves the clock.
    if (!await waitFor(() => total().accepted > accepted)) throw new Error(`handshake on port ${port} not accepted`);
    return h;
  };
  /** Let the worker run a few passes (its announcement check runs once per ms at most). */
  const settle = () => sleep(30);

  t.test('the handshake alone is no event; the first bytes carry ACCEPTED', async (t) => {
    const b = total();
    const h = await handshake(41000, 5000);
    await settle();
    t.same(await events(0), [], 'no event for the completed handshake');
    inject(pkt(41000, h.seq, h.ack, TCP_ACK | TCP_PSH, 'GET / HTTP/1.1\r\n'));
    const [e] = await events(1);
    t.equal(e.type, EV.ACCEPTED | EV.DATA, 'one event: ACCEPTED and DATA');
    t.equal(e.payload, 'GET / HTTP/1.1\r\n');
    inject(pkt(41000, h.seq + 16, h.ack, TCP_RST));
    const [r] = await events(1);
    t.equal(r.type, EV.RESET, 'later events do not repeat ACCEPTED');
    t.equal(total().conn_events - b.conn_events, 2n, 'two events for the connection, not three');
  });

  t.test('a FIN or a reset before any byte announces the connection', async (t) => {
    const f = await handshake(41100, 6000);
    inject(pkt(41100, f.seq, f.ack, TCP_ACK | TCP_FIN));
    const [fin] = await events(1);
    t.equal(fin.type, EV.ACCEPTED | EV.FIN, 'ACCEPTED with the FIN');
    const r = await handshake(41101, 7000);
    inject(pkt(41101, r.seq, r.ack, TCP_RST));
    const [rst] = await events(1);
    t.equal(rst.type, EV.ACCEPTED | EV.RESET, 'ACCEPTED with the reset: the engine counts it and forgets it');
  });

  t.test('a connection that sends nothing is announced SILENT after announceAfterMs, in accept order', async (t) => {
    const b = total();
    await handshake(41200, 8000);
    clock += 1000;
    shim.setClockForTests(clock);
    await handshake(41201, 9000);
    clock += ANNOUNCE_MS - 1000 - 1;
    shim.setClockForTests(clock);
    await settle();
    t.same(await events(0), [], 'nothing before announceAfterMs');
    clock += 1;
    shim.setClockForTests(clock);
    const [first] = await events(1);
    t.equal(first.type, EV.ACCEPTED | EV.SILENT, 'the older one: ACCEPTED and SILENT');
    await settle();
    t.same(await events(0), [], 'the younger one is not due yet');
    clock += 1000;
    shim.setClockForTests(clock);
    const [second] = await events(1);
    t.equal(second.type, EV.ACCEPTED | EV.SILENT, 'then the younger one');
    t.not(second.connId, first.connId);
    t.equal(total().accept_announced_silent - b.accept_announced_silent, 2n, 'counted: accept_announced_silent');
    t.equal(total().accept_announced_eager - b.accept_announced_eager, 0n, 'none announced at once (the queue had room)');
    t.equal(shim.acceptCount(), 3, 'both still accepted, beside the one frozen by its FIN');
  });
}
