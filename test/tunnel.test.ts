// Real kernels on both sides of the shim (design.md §6): the shim runs on
// net_af_packet over a veth on a bridge; curl runs in a client namespace; a
// host namespace has a VXLAN external device and the VIP on lo. With an
// ACTIVE mapping for curl's flow, the client's packets reach the host through
// the tunnel (VNI = flow ID) and the host answers the client directly: the
// response never crosses the balancer. Needs root (namespaces, AF_PACKET).
import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { FlowState } from '../src/offload';
import { isRoot, startShim, waitFor, TEST_EAL } from './lib/harness';
import { Topology, sh } from './lib/netns';

const run = promisify(execFile);
const VIP = '198.18.0.100';
const LB_IP = '198.18.0.2';

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces and AF_PACKET');
} else {
  const topo = new Topology('t');
  t.teardown(() => topo.destroy());
  const lbDev = topo.rootPort('lb');
  const client = topo.host('cli', '198.18.0.1/24');
  const host1 = topo.host('h1', '198.18.0.11/24');
  const { innerMac } = topo.vxlanHost(host1, VIP);
  const body = 'served by host1 '.repeat(4096); // 64 KiB: many segments back, none through the balancer
  const server = topo.spawn(host1.ns, process.execPath, ['-e',
    `require('http').createServer((q, s) => s.end(${JSON.stringify(body)})).listen(80, '0.0.0.0', () => console.log('up'))`]);
  const shim = startShim({
    eal: [...TEST_EAL, '--vdev', `net_af_packet0,iface=${lbDev}`],
    ports: [{ device: 'net_af_packet0', ip: LB_IP }],
    vips: [{ ip: VIP, port: 80 }],
  });
  if (typeof shim === 'string') {
    t.plan(0, shim);
  } else {
    t.teardown(() => shim.stop());
    const lbMac = shim.portInfo(0).mac;

    t.test('the client resolves the VIP and the balancer address to the balancer (ARP)', async (t) => {
      await run('ip', ['netns', 'exec', client.ns, 'ping', '-c', '1', '-W', '1', LB_IP]).catch(() => undefined);
      sh('ip', ['neigh', 'flush', 'dev', 'eth0'], { ns: client.ns });
      // Any TCP attempt makes the kernel ARP for the VIP.
      await run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '--max-time', '0.5', `http://${VIP}:81/`]).catch(() => undefined);
      const neigh = () => JSON.parse(sh('ip', ['-j', 'neigh', 'show', VIP], { ns: client.ns })) as { lladdr?: string }[];
      t.ok(await waitFor(() => neigh()[0]?.lladdr, 3000, 50), 'the VIP was resolved');
      t.equal(neigh()[0]?.lladdr, lbMac, "to the balancer's MAC");
      t.ok(shim.counters().total.arp_replies >= 1n, 'arp_replies counted');
    });

    t.test('curl through the tunnel; the host answers directly', async (t) => {
      t.ok(await waitFor(() => server.stdout?.read()?.toString().includes('up'), 5000, 20), 'server up in host1');
      shim.setHost(1, { ip: host1.ip, nexthopMac: host1.mac, innerMac });
      const clientPort = 45123;
      shim.insertMapping({ clientIp: client.ip, clientPort, vip: VIP, vipPort: 80, hostId: 1, flowId: 0x4242, state: FlowState.ACTIVE });
      const before = shim.counters().total;
      const r = await run('ip', ['netns', 'exec', client.ns, 'curl', '-s', '--max-time', '5', '--local-port', String(clientPort),
        `http://${VIP}/`], { maxBuffer: 1 << 20 });
      t.equal(r.stdout.length, body.length, 'the whole response arrived');
      t.ok(r.stdout === body, 'byte for byte');
      // The client's kernel may still send its last ACKs after curl exits, and a
      // frame is counted as encapsulated before it is transmitted: wait until the
      // counters are quiet (unchanged for 100 ms) and agree, then read that snapshot.
      const key = { clientIp: client.ip, clientPort, vip: VIP, vipPort: 80 };
      let prev = '';
      await waitFor(() => {
        const c = shim.counters().total;
        const now = `${c.encap_packets}/${c.tx_packets}/${shim.lookupMapping(key)?.packets}`;
        const quiet = now === prev && c.tx_packets - before.tx_packets === c.encap_packets - before.encap_packets;
        prev = now;
        return quiet;
      }, 3000, 100);
      const after = shim.counters().total;
      const encap = after.encap_packets - before.encap_packets;
      t.ok(encap >= 3n, `the client's packets were tunnelled (${encap})`);
      const m = shim.lookupMapping({ clientIp: client.ip, clientPort, vip: VIP, vipPort: 80 });
      t.equal(m?.packets, encap, 'all on this flow');
      t.ok(m!.bytes < 4096n, `client-to-server bytes only (${m!.bytes}) crossed the balancer, not the ${body.length}-byte response`);
      t.equal(m?.state, FlowState.CLOSING, "the client's FIN moved the mapping to CLOSING");
      t.equal(after.tx_packets - before.tx_packets, encap, 'the balancer transmitted only the tunnelled packets');
    });
  }
}
