// After 20 ms with nothing to do, an idle worker's nap doubles from
// idleSleepUs up to idleSleepMaxUs while nothing arrives, so an idle balancer costs a few wake-ups a millisecond
// instead of ten (several balancers, hosts and clients share this machine's
// two cores). ppoll never returns early unless woken, so the naps taken in a
// window are bounded by the window over the longest nap: a bound that holds
// on any machine, however loaded, and that fixed 100 µs naps exceed tenfold.
import t from 'tap';
import { PacketBurst } from '../src/offload';
import { buildTcp, parseFrame, TCP_ACK, TCP_SYN } from '../src/net';
import { firstRingFrame, sleep, startShim } from './lib/harness';
import { CLIENT, LB, VIP } from './lib/topology';

const BASE_US = 100;
const MAX_US = 2000;
const shim = startShim({
  ports: [{ device: 'idle_ring', ip: LB.ip, mac: LB.mac, ring: true }],
  vips: [{ ip: VIP.ip, port: VIP.port }],
  idleSleepUs: BASE_US,
  idleSleepMaxUs: MAX_US,
});

if (typeof shim === 'string') {
  t.plan(0, shim);
} else {
  t.teardown(() => shim.stop());
  const total = () => shim.counters().total;

  t.test('an idle worker naps longer and longer, up to idleSleepMaxUs', async (t) => {
    await sleep(150); // past the 20 ms before the back-off and the doublings
    const b = total();
    const t0 = process.hrtime.bigint();
    await sleep(400);
    const elapsedUs = Number(process.hrtime.bigint() - t0) / 1000;
    const naps = Number(total().idle_sleeps - b.idle_sleeps);
    const bound = Math.ceil(elapsedUs / MAX_US) + 2;
    t.ok(naps > 0, `the worker napped (${naps} naps in ${Math.round(elapsedUs / 1000)} ms)`);
    t.ok(naps <= bound, `at most ${bound} naps of ${MAX_US} µs fit in the window: ${naps} (fixed ${BASE_US} µs naps: ~${Math.round(elapsedUs / BASE_US)})`);
    t.equal(total().worker_wakeups - b.worker_wakeups, 0n, 'nobody woke it');
  });

  t.test('after a long nap, traffic is still answered', async (t) => {
    const inb = new PacketBurst(8);
    inb.add(buildTcp({ srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip,
      srcPort: 41001, dstPort: VIP.port, seq: 1000, ack: 0, flags: TCP_SYN, window: 1024 }));
    t.equal(shim.ringInject(0, inb), 1, 'a SYN queued');
    const answer = await firstRingFrame(shim, 0);
    t.equal(answer && parseFrame(answer).tcp!.flags, TCP_SYN | TCP_ACK, 'answered with a SYN-ACK');
  });
}
