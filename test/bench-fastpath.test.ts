// bench/fastpath's plain logic: the peer's rule file (it must name exactly
// the flows the pcap and the shim use), perf's CSV output, and the EAL
// arguments for several RX queues. The benchmark itself needs DPDK and a
// quiet machine and is not run here.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { VIP, ealArgs, flowClientIp, flowClientPort } from '../bench/fastpath/common';
import { writeL3fwdRules } from '../bench/fastpath/l3fwd';
import { parsePerfCount } from '../bench/fastpath/perf';

const ipv4 = (x: number) => `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;

t.test("l3fwd's rules are the bench's flows, one per line, all to port 1", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-l3fwd-rules-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const flows = 5000;
  const { v4, v6 } = writeL3fwdRules(dir, flows);
  const lines = fs.readFileSync(v4, 'utf8').split('\n');
  t.equal(lines.pop(), '', 'the file ends with a newline');
  t.equal(lines.length, flows);
  const keys = new Set<string>();
  let bad = 0;
  lines.forEach((l, i) => {
    const m = /^R(\S+) (\S+) (\d+) (\d+) 0x6 1$/.exec(l);
    if (!m || m[1] !== VIP.ip || m[2] !== ipv4(flowClientIp(i)) || Number(m[3]) !== VIP.port || Number(m[4]) !== flowClientPort(i)) bad++;
    keys.add(`${m?.[2]}:${m?.[4]}`);
  });
  t.equal(bad, 0, 'every line is R<VIP> <client of flow i> <VIP port> <client port of flow i> TCP to port 1');
  t.equal(keys.size, flows, 'no two rules have the same key (l3fwd would refuse the duplicate)');
  t.match(fs.readFileSync(v6, 'utf8'), /^R\S+ \S+ \d+ \d+ 0x11 1\n$/, 'the one IPv6 rule l3fwd needs to start');
});

t.test("perf stat's CSV: a count, or undefined when the counter is not supported", async (t) => {
  t.equal(parsePerfCount('123456,,cache-misses,2000000000,100.00,,\n'), 123456);
  t.equal(parsePerfCount('   0.5,msec,task-clock,1,100\n98,,cache-misses:u,5,100.00,,\n'), 98, 'a modifier on the event name');
  t.equal(parsePerfCount('<not supported>,,cache-misses,0,100.00,,\n'), undefined);
  t.equal(parsePerfCount('<not counted>,,cache-misses,0,0.00,,\n'), undefined);
  t.equal(parsePerfCount(''), undefined, 'no output');
});

t.test('EAL arguments: one RX queue per pcap, worker lcores beyond 1 on CPU 0', async (t) => {
  const one = ealArgs('/tmp/a.pcap', 512);
  t.same(one.slice(0, 2), ['--vdev', 'net_pcap0,rx_pcap=/tmp/a.pcap,infinite_rx=1']);
  t.ok(one.includes('--no-telemetry'));
  t.same(one.slice(one.indexOf('-l'), one.indexOf('-l') + 2), ['-l', '0,1']);
  const two = ealArgs(['/tmp/q0.pcap', '/tmp/q1.pcap'], 512, true, { workers: 2 });
  t.equal(two[1], 'net_pcap0,rx_pcap=/tmp/q0.pcap,rx_pcap=/tmp/q1.pcap,infinite_rx=1');
  t.same(two.slice(two.indexOf('--lcores'), two.indexOf('--lcores') + 2), ['--lcores', '0@0,1@1,2@0']);
  t.ok(two.includes('--in-memory'));
  const peer = ealArgs('/tmp/a.pcap', 512, true, { telemetry: true, filePrefix: 'p1', extraVdevs: ['net_null0'], lcores: '1' });
  t.same(peer.slice(2, 4), ['--vdev', 'net_null0']);
  t.same(peer.slice(peer.indexOf('-l'), peer.indexOf('-l') + 2), ['-l', '1']);
  t.same(peer.slice(-2), ['--file-prefix', 'p1']);
  t.notOk(peer.includes('--no-telemetry'));
  t.throws(() => ealArgs('/tmp/a,b.pcap', 512), /must not contain/, 'a path that would break the devargs');
});
