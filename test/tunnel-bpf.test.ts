// The host's tunnel check as a tc BPF classifier (src/host/tunnel-filter.ts,
// native/host-agent/bpf/tunnel.bpf.c). Two parts, both need root (loading
// BPF):
//
//  1. The classifier's decisions on crafted inner frames, with
//     BPF_PROG_TEST_RUN (hh_tunnel_test_run: the test program takes the
//     tunnel metadata from its arguments, which test_run cannot put on an
//     skb): unknown and known flows, the sender allowlist, no metadata,
//     IPv6 outer, non-IPv4/TCP, fragments, truncation, IP options; the
//     counters; revoke; a full map refusing with -ENOSPC.
//  2. Real VXLAN on a namespace topology: a host namespace with a `vxlan
//     external` vx0 and a TunnelFilter attached by a child process in it;
//     VXLAN datagrams sent by UDP sockets from a "balancer" and a "client"
//     namespace. An admitted segment reaches the host's TCP stack (which
//     answers it with a RST: no socket has that 4-tuple), a refused one does
//     not; the counters move accordingly; a filter left by a killed agent is
//     replaced, not doubled; after close() the filter is gone.
import t from 'tap';
import readline from 'node:readline';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { buildEthernet, buildTcp, buildUdp, TCP_ACK } from '../src/net';
import {
  hostLastError, TcAct, tunnelAllow, tunnelClose, tunnelCounters, tunnelFlows, tunnelOpen, TunnelOpenFlag,
  tunnelRevoke, tunnelRevokeBatch, tunnelSetBalancers, tunnelTestRun, TunnelTestFlag,
} from '../src/host/native';
import type { TunnelFilterCounters, TunnelFlow } from '../src/host';
import { isRoot } from './lib/harness';
import { tcpCounters } from './lib/hardening';
import { runIn, waitForAsync } from './lib/procs';
import { Topology, sh } from './lib/netns';

const VIP = '198.18.0.100';
const CLIENT = '198.18.0.1';
const LB = '198.18.0.2';
const PROC = path.resolve(__dirname, 'lib/tunnel-filter-proc.js');
const HH_TUNNEL_MAX_FLOWS = 262144;

const segment = (o: { dstMac?: string; clientPort?: number; ipOptions?: Buffer; moreFragments?: boolean; fragOffset?: number } = {}) =>
  buildTcp({
    srcMac: '02:00:00:00:00:aa', dstMac: o.dstMac ?? '02:00:00:00:00:bb', srcIp: CLIENT, dstIp: VIP,
    srcPort: o.clientPort ?? 41000, dstPort: 80, seq: 1000, ack: 2000, flags: TCP_ACK, window: 502,
    payload: Buffer.from('GET /x HTTP/1.1\r\n\r\n'), ipOptions: o.ipOptions, moreFragments: o.moreFragments, fragOffset: o.fragOffset,
  });
const flowOf = (vni: number, clientPort = 41000): TunnelFlow => ({ flowId: vni, clientIp: CLIENT, clientPort, vip: VIP, vipPort: 80 });

if (!isRoot) {
  t.plan(0, 'needs root: loading BPF programs, network namespaces');
} else {
  t.test('the classifier on crafted frames (BPF_PROG_TEST_RUN)', (t) => {
    const h = tunnelOpen(null, TunnelOpenFlag.NO_ATTACH | TunnelOpenFlag.TEST_PROG);
    t.ok(h >= 0, `loaded (${h < 0 ? hostLastError() : `handle ${h}`})`);
    if (h < 0) return t.end();
    t.teardown(() => tunnelClose(h));
    const counters = () => tunnelCounters(h) as Exclude<ReturnType<typeof tunnelCounters>, number>;
    const run = (frame: Buffer, o: { flags?: number; vni?: number; remoteIp?: string } = {}) => tunnelTestRun(h, frame, { vni: 0x4242, ...o });
    const c0 = counters();
    t.same(c0, { tunnelled: 0, refused_flow: 0, refused_sender: 0, refused_malformed: 0 }, 'counters start at zero');

    t.equal(run(segment()), TcAct.SHOT, 'an unknown flow is dropped');
    t.equal(tunnelAllow(h, flowOf(0x4242)), 1, 'allow: added');
    t.equal(tunnelAllow(h, flowOf(0x4242)), 0, 'allow again: present already');
    t.equal(tunnelFlows(h), 1, 'one flow');
    t.equal(run(segment()), TcAct.OK, 'the allowed flow passes');
    t.equal(run(segment({ ipOptions: Buffer.from([1, 1, 1, 1, 1, 1, 1, 1]) })), TcAct.OK, 'with IP options too (variable IHL)');
    t.equal(run(segment(), { vni: 0x4243 }), TcAct.SHOT, 'the same 4-tuple under another VNI is refused');
    t.equal(run(segment({ clientPort: 41001 })), TcAct.SHOT, 'the VNI with another 4-tuple is refused');
    t.same(counters(), { tunnelled: 2, refused_flow: 3, refused_sender: 0, refused_malformed: 0 }, 'counted: 2 tunnelled, 3 refused_flow');

    // Malformed: no metadata, not IPv4/TCP, fragments, truncated.
    const ok = segment();
    const udp = buildUdp({ srcMac: '02:00:00:00:00:aa', dstMac: '02:00:00:00:00:bb', srcIp: CLIENT, dstIp: VIP, srcPort: 41000, dstPort: 80,
      payload: Buffer.alloc(20) });
    const ipv6 = Buffer.from(ok);
    ipv6.writeUInt16BE(0x86dd, 12);
    const vlan = buildEthernet({ srcMac: '02:00:00:00:00:aa', dstMac: '02:00:00:00:00:bb', vlan: 5, etherType: 0x0800, payload: ok.subarray(14) });
    const doff4 = Buffer.from(ok);
    doff4[14 + 20 + 12] = 0x40;
    const malformed: Array<[string, Buffer, number?]> = [
      ['no tunnel metadata', ok, 0],
      ['UDP', udp],
      ['EtherType IPv6', ipv6],
      ['a VLAN tag', vlan],
      ['a first fragment (MF)', segment({ moreFragments: true })],
      ['a later fragment', segment({ fragOffset: 10 })],
      ['TCP data offset 4', doff4],
      ['truncated in the TCP header', ok.subarray(0, 14 + 20 + 19)],
      ['truncated in the IPv4 header of an ARP frame', Buffer.concat([ok.subarray(0, 12), Buffer.from([8, 6]), ok.subarray(14, 14 + 19)])],
      ['Ethernet only (ARP)', Buffer.concat([ok.subarray(0, 12), Buffer.from([8, 6])])],
      // (test_run itself refuses an IPv4 frame shorter than an IP header:
      // the real VXLAN test below sends those.)
    ];
    for (const [what, frame, flags] of malformed) t.equal(run(frame, { flags }), TcAct.SHOT, `${what}: dropped`);
    t.equal(counters().refused_malformed, malformed.length, `all ${malformed.length} counted as refused_malformed`);

    // The sender allowlist.
    t.equal(tunnelSetBalancers(h, [LB, '198.18.0.3']), 0, 'allowlist: two balancers');
    t.equal(run(ok, { remoteIp: LB }), TcAct.OK, 'from a balancer: passes');
    t.equal(run(ok, { remoteIp: '198.18.0.3' }), TcAct.OK, 'from the other: passes');
    t.equal(run(ok, { remoteIp: CLIENT }), TcAct.SHOT, 'from another address: dropped');
    t.equal(run(ok, { flags: TunnelTestFlag.HAS_KEY | TunnelTestFlag.IPV6 }), TcAct.SHOT, 'over IPv6: dropped');
    t.equal(run(udp, { remoteIp: CLIENT }), TcAct.SHOT, 'from another address, malformed: dropped');
    t.equal(tunnelSetBalancers(h, ['198.18.0.3']), 0, 'allowlist: one');
    t.equal(run(ok, { remoteIp: LB }), TcAct.SHOT, 'the removed balancer is refused');
    t.equal(tunnelSetBalancers(h, []), 0, 'allowlist off');
    t.equal(run(ok, { remoteIp: CLIENT }), TcAct.OK, 'any sender again');
    t.equal(run(ok, { flags: TunnelTestFlag.HAS_KEY | TunnelTestFlag.IPV6 }), TcAct.OK, 'IPv6 outer too');
    const c1 = counters();
    t.equal(c1.refused_sender, 4, 'refused_sender +4 (the sender check runs before the parser)');
    t.equal(c1.tunnelled, 2 + 4, 'tunnelled +4');

    t.equal(tunnelRevoke(h, flowOf(0x4242)), 1, 'revoke: removed');
    t.equal(tunnelRevoke(h, flowOf(0x4242)), 0, 'revoke of an absent flow: not an error');
    t.equal(run(ok), TcAct.SHOT, 'the revoked flow is refused');
    t.equal(tunnelFlows(h), 0, 'no flows');
    for (const p of [1, 2, 3]) tunnelAllow(h, flowOf(0x50, p));
    t.equal(tunnelRevokeBatch(h, [flowOf(0x50, 1), flowOf(0x51, 1), flowOf(0x50, 2), flowOf(0x50, 3), flowOf(0x50, 1)]), 3,
      'revoke in a batch: the 3 present removed, the absent and the repeated one skipped');
    t.equal(tunnelFlows(h), 0, 'no flows');
    t.equal(run(segment({ clientPort: 2 }), { vni: 0x50 }), TcAct.SHOT, 'a flow revoked in the batch is refused');
    t.equal(tunnelRevokeBatch(h, []), 0, 'an empty batch');
    t.equal(tunnelAllow(h, { ...flowOf(0x4242), flowId: 0x1000000 }), -22, 'a VNI above 24 bits: -EINVAL');
    t.equal(tunnelTestRun(h, ok.subarray(0, 13)), -22, 'test_run of a frame under 14 bytes: -EINVAL');
    t.end();
  });

  t.test('a full flow map refuses with -ENOSPC', (t) => {
    const h = tunnelOpen(null, TunnelOpenFlag.NO_ATTACH);
    t.ok(h >= 0, 'loaded');
    if (h < 0) return t.end();
    t.teardown(() => tunnelClose(h));
    const f = { flowId: 0, clientIp: CLIENT, clientPort: 0, vip: VIP, vipPort: 80 };
    let added = 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < HH_TUNNEL_MAX_FLOWS; i++) {
      f.flowId = i >> 8;
      f.clientPort = 1024 + (i & 0xff);
      if (tunnelAllow(h, f) === 1) added++;
    }
    const us = Number(process.hrtime.bigint() - t0) / 1000 / HH_TUNNEL_MAX_FLOWS;
    t.equal(added, HH_TUNNEL_MAX_FLOWS, `${added} flows allowed (${us.toFixed(2)} us each)`);
    f.flowId = 0xfffff;
    t.equal(tunnelAllow(h, f), -28, 'one more: -ENOSPC');
    t.match(hostLastError(), /full/, `with a sentence: ${hostLastError()}`);
    t.equal(tunnelFlows(h), HH_TUNNEL_MAX_FLOWS, 'the count stays at the capacity');
    t.equal(tunnelClose(h), 0, 'closed');
    t.equal(tunnelFlows(h), -9, 'a closed handle: -EBADF');
    t.end();
  });

  t.test('real VXLAN into a namespace with the filter attached', async (t) => {
    const topo = new Topology('tb');
    t.teardown(() => topo.shutdown());
    const lb = topo.host('lb', `${LB}/24`);
    const client = topo.host('cli', `${CLIENT}/24`);
    const h1 = topo.host('h1', '198.18.0.11/24');
    const { innerMac } = topo.vxlanHost(h1, VIP);

    /** A TunnelFilter in h1, driven over stdin. */
    const startAgent = () => {
      const child: ChildProcess = spawn('ip', ['netns', 'exec', h1.ns, process.execPath, PROC, JSON.stringify({ balancers: [LB], lingerMs: 0 })],
        { stdio: ['pipe', 'pipe', 'inherit'] });
      const waiting = new Map<number, (r: { ok: boolean; result?: unknown; error?: string }) => void>();
      let ready: (v: { ev: string; error?: string }) => void;
      const readyP = new Promise<{ ev: string; error?: string }>((r) => { ready = r; });
      readline.createInterface({ input: child.stdout! }).on('line', (l) => {
        const m = JSON.parse(l) as { id?: number; ev?: string };
        if (m.ev) ready(m as { ev: string });
        else waiting.get(m.id!)?.(m as { ok: boolean });
      });
      let id = 0;
      const call = <T>(op: string, arg: object = {}) => new Promise<T>((resolve, reject) => {
        const n = ++id;
        waiting.set(n, (r) => (r.ok ? resolve(r.result as T) : reject(new Error(r.error))));
        child.stdin!.write(`${JSON.stringify({ id: n, op, ...arg })}\n`);
      });
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      return { child, ready: readyP, call, exited };
    };

    /** VXLAN datagrams from a namespace's UDP socket to h1:4789. */
    const send = async (ns: string, vni: number, frames: Buffer[]) => {
      const datagrams = frames.map((f) => {
        const h = Buffer.alloc(8);
        h[0] = 0x08;
        h.writeUIntBE(vni, 4, 3);
        return Buffer.concat([h, f]).toString('base64');
      });
      const script = `const s = require('dgram').createSocket('udp4'); const d = ${JSON.stringify(datagrams)};
        let n = 0; for (const x of d) s.send(Buffer.from(x, 'base64'), 4789, ${JSON.stringify(h1.ip)}, () => { if (++n === d.length) s.close(); });`;
      const r = await runIn(ns, process.execPath, ['-e', script], { timeoutMs: 10_000 });
      if (r.code !== 0) throw new Error(`sender in ${ns}: ${r.stderr}`);
    };

    const agent = startAgent();
    const ev = await agent.ready;
    t.equal(ev.ev, 'ready', `the agent installed the filter ${ev.error ?? ''}`);
    if (ev.ev !== 'ready') return;
    const filters = sh('tc', ['filter', 'show', 'dev', 'vx0', 'ingress'], { ns: h1.ns });
    t.match(filters, /bpf .*name hh_tunnel_check/, 'the BPF filter is on vx0 ingress');
    t.match(filters, /direct-action/, 'in direct-action mode');

    const counters = () => agent.call<TunnelFilterCounters>('counters');
    /** Send, then wait for the counters to move by `want` and the stack to take in (or not) the segments. */
    const step = async (what: string, ns: string, vni: number, frames: Buffer[], want: Partial<TunnelFilterCounters>, rsts: number) => {
      const c0 = await counters();
      const k0 = await tcpCounters(h1.ns);
      await send(ns, vni, frames);
      const keys = Object.keys(want) as Array<keyof TunnelFilterCounters>;
      let c1 = c0;
      await waitForAsync(async () => {
        c1 = await counters();
        return keys.every((k) => c1[k] - c0[k] >= want[k]!);
      }, 5000, 20);
      // A RST is sent synchronously with the segment's processing; give the refused case a moment anyway.
      let k1 = await tcpCounters(h1.ns);
      if (rsts) await waitForAsync(async () => (k1 = await tcpCounters(h1.ns)).TcpOutRsts - k0.TcpOutRsts >= rsts, 3000, 20);
      else await new Promise((r) => setTimeout(r, 100));
      k1 = await tcpCounters(h1.ns);
      const moved = Object.fromEntries((['tunnelled', 'refusedFlow', 'refusedSender', 'refusedMalformed'] as const)
        .map((k) => [k, c1[k] - c0[k]]));
      const expect = { tunnelled: 0, refusedFlow: 0, refusedSender: 0, refusedMalformed: 0, ...want };
      t.same(moved, expect, `${what}: counters moved ${JSON.stringify(moved)}`);
      t.equal(k1.TcpOutRsts - k0.TcpOutRsts, rsts, rsts ? `${what}: reached the host's TCP stack (answered with a RST)` : `${what}: never reached TCP`);
    };

    const seg = (clientPort = 41000) => segment({ dstMac: innerMac, clientPort });
    await step('unknown flow from the balancer', lb.ns, 0x111, [seg()], { refusedFlow: 1 }, 0);
    t.equal(await agent.call('allow', { flow: flowOf(0x111) }), 1, 'flow 0x111 allowed');
    await step('the live flow from the balancer', lb.ns, 0x111, [seg(), seg()], { tunnelled: 2 }, 2);
    await step('the live VNI with another 4-tuple', lb.ns, 0x111, [seg(41001)], { refusedFlow: 1 }, 0);
    await step('the live flow sent from a client (not a balancer)', client.ns, 0x111, [seg()], { refusedSender: 1 }, 0);
    const arp = buildEthernet({ srcMac: '02:00:00:00:00:aa', dstMac: innerMac, etherType: 0x0806, payload: Buffer.alloc(28) });
    await step('not IPv4/TCP inside, or a truncated TCP header', lb.ns, 0x111, [arp, seg().subarray(0, 14 + 20 + 19)], { refusedMalformed: 2 }, 0);
    {
      // Shorter than an IPv4 header: the VXLAN driver itself drops these
      // (its ECN decapsulation reads the inner IP header), or the classifier does.
      const drops = () => {
        const l = JSON.parse(sh('ip', ['-s', '-j', 'link', 'show', 'vx0'], { ns: h1.ns }))[0] as { stats64: { rx: { dropped: number; errors: number } } };
        return l.stats64.rx.dropped + l.stats64.rx.errors;
      };
      const c0 = await counters();
      const d0 = drops();
      const k0 = await tcpCounters(h1.ns);
      await send(lb.ns, 0x111, [seg().subarray(0, 14 + 19), seg().subarray(0, 14)]);
      await waitForAsync(async () => (await counters()).refusedMalformed - c0.refusedMalformed + drops() - d0 >= 2, 5000, 20);
      const c1 = await counters();
      t.equal(c1.refusedMalformed - c0.refusedMalformed + drops() - d0, 2,
        `truncated IPv4 headers: dropped (${c1.refusedMalformed - c0.refusedMalformed} by the classifier, ${drops() - d0} by the device)`);
      t.equal(c1.tunnelled, c0.tunnelled, 'none let in');
      t.equal((await tcpCounters(h1.ns)).TcpOutRsts - k0.TcpOutRsts, 0, 'none reached TCP');
    }
    t.equal(await agent.call('revoke', { flow: flowOf(0x111) }), 1, 'revoked (lingerMs 0)');
    t.equal(await agent.call('sweep', { now: Date.now() + 1 }), 0, 'swept');
    await step('the revoked flow', lb.ns, 0x111, [seg()], { refusedFlow: 1 }, 0);

    // An agent killed without closing leaves its filter; the next one replaces it.
    t.equal(await agent.call('allow', { flow: flowOf(0x222) }), 1, 'flow 0x222 allowed by the first agent');
    agent.child.kill('SIGKILL');
    await agent.exited;
    t.match(sh('tc', ['filter', 'show', 'dev', 'vx0', 'ingress'], { ns: h1.ns }), /hh_tunnel_check/, 'the killed agent\'s filter is still there');
    const agent2 = startAgent();
    t.equal((await agent2.ready).ev, 'ready', 'a second agent installs');
    const shown = sh('tc', ['filter', 'show', 'dev', 'vx0', 'ingress'], { ns: h1.ns });
    t.equal(shown.match(/name hh_tunnel_check/g)?.length, 1, 'one filter: the old one was replaced, not doubled');
    const c = await agent2.call<TunnelFilterCounters>('counters');
    t.same(c, { tunnelled: 0, refusedFlow: 0, refusedSender: 0, refusedMalformed: 0, flows: 0 }, 'with fresh maps and counters');
    const k0 = await tcpCounters(h1.ns);
    await send(lb.ns, 0x222, [seg()]);
    await waitForAsync(async () => (await agent2.call<TunnelFilterCounters>('counters')).refusedFlow >= 1, 3000, 20);
    t.equal((await agent2.call<TunnelFilterCounters>('counters')).refusedFlow, 1, 'the old agent\'s flow is refused by the new filter');
    t.equal((await tcpCounters(h1.ns)).TcpOutRsts - k0.TcpOutRsts, 0, 'and did not reach TCP');

    await agent2.call('close');
    t.notMatch(sh('tc', ['filter', 'show', 'dev', 'vx0', 'ingress'], { ns: h1.ns }), /hh_tunnel_check/, 'after close() the filter is gone');
    // Positive control: without the filter the same forged segment reaches the stack.
    const k2 = await tcpCounters(h1.ns);
    await send(client.ns, 0x333, [seg()]);
    const got = await waitForAsync(async () => (await tcpCounters(h1.ns)).TcpOutRsts > k2.TcpOutRsts, 3000, 20);
    t.ok(got, 'without it, a forged segment from anyone reaches the host\'s TCP stack');
    agent2.child.stdin!.end();
    await agent2.exited;
  });
}
