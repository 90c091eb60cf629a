// A worker in its idle sleep is woken by work the control thread queues for
// it (a packet on its ring port, a command), instead of finishing its nap
// first: what the control thread sends leaves at once on an idle balancer.
import t from 'tap';
import { PacketBurst } from '../src/offload';
import { buildTcp, parseFrame, TCP_ACK, TCP_SYN } from '../src/net';
import { firstRingFrame, startShim, waitFor } from './lib/harness';
import { CLIENT, LB, VIP } from './lib/topology';

// Naps this long would make any answer wait visibly; the assertions are on counters.
const NAP_US = 1_000_000;
const shim = startShim({
  ports: [{ device: 'wake_ring', ip: LB.ip, mac: LB.mac, ring: true }],
  vips: [{ ip: VIP.ip, port: VIP.port }],
  idleSleepUs: NAP_US,
});

if (typeof shim === 'string') {
  t.plan(0, shim);
} else {
  t.teardown(() => shim.stop());
  const inb = new PacketBurst(8);
  const out = new PacketBurst(8);
  const total = () => shim.counters().total;
  const syn = (port: number) => buildTcp({ srcMac: CLIENT.mac, dstMac: LB.mac, srcIp: CLIENT.ip, dstIp: VIP.ip,
    srcPort: port, dstPort: VIP.port, seq: 1000, ack: 0, flags: TCP_SYN, window: 1024 });

  t.test('a packet queued for a sleeping worker wakes it', async (t) => {
    t.ok(await waitFor(() => shim.workerAsleep(0), 5000), 'the idle worker sleeps');
    const b = total();
    inb.clear();
    inb.add(syn(41000));
    t.equal(shim.ringInject(0, inb), 1, 'a SYN queued on its ring port');
    const answer = await firstRingFrame(shim, 0, 5000, out);
    t.ok(answer, 'answered');
    t.equal(parseFrame(answer!).tcp!.flags, TCP_SYN | TCP_ACK, 'with a SYN-ACK');
    t.equal(total().worker_wakeups - b.worker_wakeups, 1n, 'one wake-up: the nap was cut short');
  });

  t.test('a command for a sleeping worker wakes it', async (t) => {
    t.ok(await waitFor(() => shim.workerAsleep(0), 5000), 'asleep again');
    const b = total();
    // A stale command (no such connection): the worker must wake to count it.
    shim.resetConnection(0, 0, 12345);
    t.ok(await waitFor(() => total().drop_stale_command > b.drop_stale_command, 5000, 1), 'the worker ran the command');
    t.equal(total().worker_wakeups - b.worker_wakeups, 1n, 'woken once');
    t.throws(() => shim.workerAsleep(7), { code: 'EINVAL' }, 'a worker that does not exist is refused');
  });
}
