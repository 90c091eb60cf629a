// TCP_REPAIR injection (src/host/repair.ts, design.md §5, claim step C6) with
// real kernels on both ends, without the balancer. Two network namespaces
// joined by a veth: A holds the client (a Node process, kernel TCP), B the
// "host" (this test process, which moves its main thread into B with setns).
//
// The balancer's part is played by B's own kernel: a real listener on VIP:port
// accepts the client's connection and receives its request; the test then
// reads the accepted socket's state in repair mode (sequence numbers, options,
// windows, TS clock, the received bytes), closes it in repair mode (no FIN, no
// RST leaves), builds a ConnectionBlob from that state, sends it through
// encodeBlob/decodeBlob, and re-creates the connection with injectConnection.
// The client must see one seamless connection: the application reads the
// request it sent before the handoff, a 4 MB upload after it and a 10 MB
// response arrive intact and fast (timestamps, window scaling, MSS right: no
// PAWS drops, no retransmission timeout, full-sized segments), and both sides
// close cleanly; also without timestamps/SACK/window scaling, with a 300 KB
// request, for 200 handoffs in a row (timed: "inject median X us"), and with
// every error path coded and leak-free. Needs root (namespaces, CAP_NET_ADMIN).
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { spawn, spawnSync, ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import {
  injectConnection, injectConnectionFd, InjectError, timestampValue,
} from '../src/host/repair';
import {
  CLONE_NEWNET, MSG_DONTWAIT, MSG_PEEK, SOL_SOCKET, SOL_TCP, TCP_INFO, TCP_MAXSEG, TCP_QUEUE_SEQ, TCP_RECV_QUEUE,
  TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_REPAIR_WINDOW, TCP_SEND_QUEUE, TCP_TIMESTAMP, intOpt, libc,
} from '../src/host/libc';
import { ConnectionBlob, ReplayWindow, decodeBlob, encodeBlob } from '../src/transfer/blob';
import { sh } from './lib/netns';
import { writeStdin } from './lib/procs';

const isRoot = process.getuid?.() === 0;
const A_IP = '198.18.5.1';
const B_IP = '198.18.5.2';
const VIP = '198.18.5.100';
const PORT = 8080;
const KEY = Buffer.alloc(32, 7);
const SO_RCVBUF = 8;

// ---------------------------------------------------------------------------
// Kernel helpers (test side): read a live socket's state the way a balancer
// would hand it over.

function getsockopt(fd: number, level: number, opt: number, len: number): Buffer {
  const buf = Buffer.alloc(len);
  const lenBuf = Buffer.from(Uint32Array.of(len).buffer);
  if (libc().getsockopt(fd, level, opt, buf, lenBuf) !== 0) throw new Error(`getsockopt ${opt}: errno ${libc().errno()}`);
  return buf.subarray(0, lenBuf.readUInt32LE(0));
}
const getInt = (fd: number, level: number, opt: number) => getsockopt(fd, level, opt, 4).readUInt32LE(0);
function setInt(fd: number, level: number, opt: number, v: number): void {
  if (libc().setsockopt(fd, level, opt, intOpt(v), 4) !== 0) throw new Error(`setsockopt ${opt}: errno ${libc().errno()}`);
}

interface TcpInfo {
  state: number; options: number; sndWscale: number; rcvWscale: number; sndMss: number; rcvMss: number;
  totalRetrans: number; sndWnd: number; bytesAcked: number; bytesReceived: number; segsIn: number;
  /** Retransmitted segments the client reported as duplicates (DSACK): spurious retransmissions. */
  dsackDups: number;
}
const TCPI_OPT_TIMESTAMPS = 1;
const TCPI_OPT_SACK = 2;
const TCPI_OPT_WSCALE = 4;
function tcpInfo(fd: number): TcpInfo {
  const b = getsockopt(fd, SOL_TCP, TCP_INFO, 232);
  return {
    state: b[0], options: b[5], sndWscale: b[6] & 15, rcvWscale: b[6] >> 4,
    sndMss: b.readUInt32LE(16), rcvMss: b.readUInt32LE(20), totalRetrans: b.readUInt32LE(100),
    bytesAcked: Number(b.readBigUInt64LE(120)), bytesReceived: Number(b.readBigUInt64LE(128)),
    segsIn: b.readUInt32LE(140), dsackDups: b.readUInt32LE(216), sndWnd: b.readUInt32LE(228),
  };
}

const fdOf = (s: net.Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;
const openFds = () => fs.readdirSync('/proc/self/fd').length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Captured { blob: ConnectionBlob; info: TcpInfo }

/**
 * Wait until `expect` bytes sit in the accepted socket's receive queue, read
 * its state in repair mode, and close it there (silently). The balancer's role.
 */
async function captureAndClose(sock: net.Socket, expect: number, flowId: number): Promise<Captured> {
  const fd = fdOf(sock);
  const peek = Buffer.alloc(expect + 1);
  for (let i = 0; ; i++) {
    const n = libc().recv(fd, peek, peek.length, MSG_PEEK | MSG_DONTWAIT);
    if (n === expect) break;
    if (i > 2000) throw new Error(`request not received: ${n} of ${expect} bytes`);
    await sleep(1);
  }
  const info = tcpInfo(fd);
  setInt(fd, SOL_TCP, TCP_REPAIR, 1);
  setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE);
  const rcvNxt = getInt(fd, SOL_TCP, TCP_QUEUE_SEQ);
  const data = Buffer.alloc(expect);
  if (libc().recv(fd, data, expect, MSG_PEEK | MSG_DONTWAIT) !== expect) throw new Error('repair-mode peek failed');
  setInt(fd, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE);
  const sndNxt = getInt(fd, SOL_TCP, TCP_QUEUE_SEQ);
  const mss = getInt(fd, SOL_TCP, TCP_MAXSEG); // repair mode: mss_clamp, the client's MSS
  const w = getsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, 20);
  const tsVal = getInt(fd, SOL_TCP, TCP_TIMESTAMP);
  const created = Date.now();
  const blob: ConnectionBlob = {
    v: 1, flowId, clientIp: sock.remoteAddress!, clientPort: sock.remotePort!, vip: sock.localAddress!, vipPort: sock.localPort!,
    iss: (sndNxt - 1) >>> 0, irs: (rcvNxt - 1 - expect) >>> 0, sndNxt, rcvNxt,
    sndWnd: w.readUInt32LE(4), rcvWnd: w.readUInt32LE(12),
    sndWscale: info.options & TCPI_OPT_WSCALE ? info.sndWscale : 0,
    rcvWscale: info.options & TCPI_OPT_WSCALE ? info.rcvWscale : 0,
    mss, sackOk: !!(info.options & TCPI_OPT_SACK), tsOk: !!(info.options & TCPI_OPT_TIMESTAMPS),
    tsVal, tsEcr: 0, data, decision: { rule: null, pool: 'p', host: 'h' }, created, nonce: randomBytes(16),
  };
  sock.destroy(); // close(2) in repair mode: tcp_disconnect without a RST
  return { blob, info };
}

/** read(n) resolves with the socket's next n bytes. */
function reader(socket: net.Socket): (n: number) => Promise<Buffer> {
  const chunks: Buffer[] = [];
  let have = 0;
  let want: { n: number; resolve: (b: Buffer) => void } | null = null;
  const check = () => {
    if (!want || have < want.n) return;
    const { n, resolve } = want;
    want = null;
    const all = Buffer.concat(chunks);
    chunks.length = 0;
    if (all.length > n) chunks.push(all.subarray(n));
    have = all.length - n;
    resolve(all.subarray(0, n));
  };
  socket.on('data', (d: Buffer) => {
    chunks.push(d);
    have += d.length;
    check();
  });
  return (n) => new Promise((resolve) => {
    want = { n, resolve };
    check();
  });
}

/** Close an injected socket without telling the client (repair mode, then close). */
function abortSilently(fd: number): void {
  setInt(fd, SOL_TCP, TCP_REPAIR, 1);
  libc().close(fd);
}

function netstat(ns: string): Record<string, number> {
  const lines = sh('ip', ['netns', 'exec', ns, 'cat', '/proc/net/netstat']).trim().split('\n');
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const keys = lines[i].replace(':', '').split(/\s+/);
    const vals = lines[i + 1].split(/\s+/);
    for (let k = 1; k < keys.length; k++) out[`${keys[0]}${keys[k]}`] = Number(vals[k]);
  }
  for (const k of ['TcpExtPAWSEstab', 'TcpExtPAWSOldAck', 'TcpExtTSEcrRejected', 'TcpExtBeyondWindow']) {
    if (!(k in out)) out[k] = 0; // counters this kernel does not have
  }
  return out;
}

/** Counters that changed between two netstat() readings. */
function moved(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b)) if (b[k] !== a[k]) out[k] = b[k] - (a[k] ?? 0);
  return out;
}

// ---------------------------------------------------------------------------
// The client: a Node process in namespace A, driven by JSON lines.

/** Deterministic bytes (xorshift32) for uploads; also runs inside the client process. */
function pattern(size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = 0x9e3779b9;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

function clientMain(patternFn: typeof pattern): void {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const netm = require('node:net') as typeof net;
  const crypto = require('node:crypto') as typeof import('node:crypto');
  const rl = require('node:readline').createInterface({ input: process.stdin });
  const out = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');
  const conns = new Map<number, net.Socket>();
  rl.on('line', (line: string) => {
    const m = JSON.parse(line);
    if (m.cmd === 'connect') {
      const s = netm.connect({ host: m.host, port: m.port });
      conns.set(m.id, s);
      let head: Buffer | null = Buffer.alloc(0);
      let need = -1;
      let got = 0;
      const hash = crypto.createHash('sha256');
      let t0 = 0;
      s.on('connect', () => {
        out({ ev: 'connected', id: m.id, localPort: s.localPort });
        s.write(Buffer.from(m.request, 'base64'));
      });
      s.on('data', (d: Buffer) => {
        if (!t0) t0 = performance.now();
        if (head) {
          head = Buffer.concat([head, d]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          const h = head.subarray(0, end).toString('latin1');
          need = Number(/content-length: *(\d+)/i.exec(h)?.[1] ?? -1);
          d = head.subarray(end + 4);
          head = null;
          out({ ev: 'head', id: m.id, head: h });
        }
        got += d.length;
        hash.update(d);
        if (got === need) {
          out({ ev: 'response', id: m.id, bytes: got, sha256: hash.digest('hex'), ms: performance.now() - t0 });
          if (m.endAfterResponse) s.end();
        }
      });
      s.on('end', () => out({ ev: 'end', id: m.id }));
      s.on('error', (e: NodeJS.ErrnoException) => out({ ev: 'error', id: m.id, code: e.code }));
      s.on('close', (hadError: boolean) => out({ ev: 'close', id: m.id, hadError }));
    } else if (m.cmd === 'write') {
      conns.get(m.id)?.write(patternFn(m.size));
    } else if (m.cmd === 'end') {
      conns.get(m.id)?.end();
    } else if (m.cmd === 'destroy') {
      conns.get(m.id)?.destroy();
    }
  });
}

class Client {
  readonly proc: ChildProcess;
  private readonly waiters: { match: (e: ClientEvent) => boolean; resolve: (e: ClientEvent) => void }[] = [];
  readonly events: ClientEvent[] = [];
  constructor(ns: string) {
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', `(${clientMain.toString()})(${pattern.toString()})`],
      { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      const e = JSON.parse(line) as ClientEvent;
      this.events.push(e);
      for (let i = 0; i < this.waiters.length; i++) {
        if (this.waiters[i].match(e)) {
          this.waiters[i].resolve(e);
          this.waiters.splice(i--, 1);
        }
      }
    });
  }
  send(m: object): void {
    writeStdin(this.proc, JSON.stringify(m) + '\n', false);
  }
  wait(ev: string, id: number, ms = 10000): Promise<ClientEvent | undefined> {
    const seen = this.events.find((e) => e.ev === ev && e.id === id);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), ms);
      this.waiters.push({ match: (e) => e.ev === ev && e.id === id, resolve: (e) => { clearTimeout(timer); resolve(e); } });
    });
  }
  kill(): void {
    this.proc.kill('SIGKILL');
  }
}
interface ClientEvent { ev: string; id: number; [k: string]: unknown }

// ---------------------------------------------------------------------------

if (!isRoot) {
  t.plan(0, 'needs root: network namespaces and CAP_NET_ADMIN for TCP_REPAIR');
} else {
  const tag = `handoff-hr-${process.pid}`;
  const nsA = `${tag}-a`;
  const nsB = `${tag}-b`;
  const origNs = fs.openSync('/proc/thread-self/ns/net', 'r');
  t.teardown(() => {
    libc().setns(origNs, CLONE_NEWNET);
    fs.closeSync(origNs);
    sh('ip', ['netns', 'del', nsA], { allowFail: true });
    sh('ip', ['netns', 'del', nsB], { allowFail: true });
  });
  sh('ip', ['netns', 'add', nsA]);
  sh('ip', ['netns', 'add', nsB]);
  sh('ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nsB], { ns: nsA });
  for (const [ns, cidr] of [[nsA, `${A_IP}/24`], [nsB, `${B_IP}/24`]]) {
    sh('ip', ['link', 'set', 'lo', 'up'], { ns });
    sh('ip', ['addr', 'add', cidr, 'dev', 'eth0'], { ns });
    sh('ip', ['link', 'set', 'eth0', 'up'], { ns });
  }
  sh('ip', ['addr', 'add', `${VIP}/32`, 'dev', 'lo'], { ns: nsB }); // the VIP on lo, as on a real host

  // This process's main thread (where every socket below is created) moves into B.
  const nsFd = fs.openSync(`/run/netns/${nsB}`, 'r');
  const rc = libc().setns(nsFd, CLONE_NEWNET);
  fs.closeSync(nsFd);
  if (rc !== 0) throw new Error(`setns: errno ${libc().errno()}`);

  const client = new Client(nsA);
  t.teardown(() => client.kill());
  const listener = net.createServer({ pauseOnConnect: true });
  // Accepted sockets by the client's port: connections are accepted in any order.
  const accepted = new Map<number, net.Socket>();
  const acceptWaiters = new Map<number, (s: net.Socket) => void>();
  listener.on('connection', (s) => {
    const w = acceptWaiters.get(s.remotePort!);
    acceptWaiters.delete(s.remotePort!);
    if (w) w(s);
    else accepted.set(s.remotePort!, s);
  });
  const acceptedFrom = (port: number) => new Promise<net.Socket>((resolve) => {
    const s = accepted.get(port);
    accepted.delete(port);
    if (s) resolve(s);
    else acceptWaiters.set(port, resolve);
  });
  t.teardown(() => listener.close());
  // A second listener whose connections can hold a large request unread (big SO_RCVBUF).
  const BIG_PORT = PORT + 1;
  const bigListener = net.createServer({ pauseOnConnect: true });
  bigListener.on('connection', (s) => listener.emit('connection', s));
  t.teardown(() => bigListener.close());

  let nextId = 1;
  /** The client connects and sends `request`; B's listener accepts; the state is captured and the socket closed. */
  async function handoffSource(request: Buffer, endAfterResponse = true, port = PORT): Promise<Captured & { id: number }> {
    const id = nextId++;
    client.send({ cmd: 'connect', id, host: VIP, port, request: request.toString('base64'), endAfterResponse });
    const connected = await client.wait('connected', id);
    if (!connected) throw new Error(`client connection ${id} did not connect`);
    const sock = await acceptedFrom(connected.localPort as number);
    const cap = await captureAndClose(sock, request.length, id);
    return { ...cap, id };
  }

  t.before(async () => {
    await new Promise<void>((resolve) => listener.listen(PORT, VIP, resolve));
    await new Promise<void>((resolve) => bigListener.listen(BIG_PORT, VIP, resolve));
    setInt((bigListener as unknown as { _handle: { fd: number } })._handle.fd, SOL_SOCKET, SO_RCVBUF, 8 << 20);
  });

  const BODY = randomBytes(10 * 1024 * 1024);
  const BODY_SHA = createHash('sha256').update(BODY).digest('hex');
  const UP = 4 * 1024 * 1024;
  const UP_SHA = createHash('sha256').update(pattern(UP)).digest('hex');

  /** The client's view of its connection (ss in namespace A): the largest segment it received. */
  const clientRcvMss = (port: number) =>
    Number(/rcvmss:(\d+)/.exec(sh('ss', ['-tinH', 'state', 'established', '(', 'sport', '=', `:${port}`, ')'], { ns: nsA }))?.[1]);

  const COUNTERS = ['TcpExtPAWSEstab', 'TcpExtPAWSOldAck', 'TcpExtTSEcrRejected', 'TcpExtBeyondWindow'];
  const counters = (ns: string) => { const n = netstat(ns); return COUNTERS.map((k) => n[k]); };

  t.test('a real connection moves seamlessly: request in the receive queue, 4 MB up, 10 MB down, clean close', async (t) => {
    // A request head that spans three segments; its 4 MB body comes after the handoff.
    const request = Buffer.from(`POST /big HTTP/1.1\r\nHost: vip\r\nContent-Length: ${UP}\r\nX-Pad: ${'p'.repeat(3000)}\r\n\r\n`);
    const countersA = counters(nsA);
    const countersB = counters(nsB);
    const netB0 = netstat(nsB);
    const { blob: source, info: before, id } = await handoffSource(request, false);
    t.ok(source.tsOk && source.sackOk && source.sndWscale > 0 && source.rcvWscale > 0, 'the source connection uses timestamps, SACK and window scaling');
    // Through the wire format, as a host receives it.
    const blob = decodeBlob(encodeBlob(source, KEY), KEY, { replay: new ReplayWindow() });

    const t0 = process.hrtime.bigint();
    const { fd, socket } = injectConnection(blob);
    const us = Number(process.hrtime.bigint() - t0) / 1000;
    t.comment(`first injection in this process (includes binding libc) ${us.toFixed(1)} us`);
    const read = reader(socket); // before any await: the socket is already flowing

    const info = tcpInfo(fd);
    t.equal(info.state, 1, 'ESTABLISHED');
    const OPTS = TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK | TCPI_OPT_WSCALE;
    t.equal(info.options & OPTS, before.options & OPTS, 'same options as the source connection');
    t.same([info.sndWscale, info.rcvWscale], [before.sndWscale, before.rcvWscale], 'same window scales');
    t.equal(info.sndMss, before.sndMss, `same send MSS (${info.sndMss}) as the source connection`);
    const ts = getInt(fd, SOL_TCP, TCP_TIMESTAMP);
    const elapsed = Date.now() - blob.created;
    t.ok(((ts - blob.tsVal) | 0) >= 0 && ((ts - blob.tsVal) | 0) <= elapsed + 2,
      `the TS clock continues the source's (${blob.tsVal} + ${(ts - blob.tsVal) | 0} ms)`);
    t.equal(ts & 1, 0, 'millisecond timestamps (low bit clear)');
    t.equal(socket.remoteAddress, A_IP, 'net.Socket sees the client as its peer');
    t.equal(socket.localAddress, VIP);
    t.equal(socket.remotePort, blob.clientPort);

    await sleep(20);
    t.ok(tcpInfo(fd).segsIn >= 1, 'the client answered the window probe (its TSval becomes the socket\'s ts_recent)');

    // The application: reads the request it never received itself, then the upload, answers.
    t.same(await read(request.length), request, 'the first bytes the application reads are the request received before the handoff');
    const tUp = performance.now();
    client.send({ cmd: 'write', id, size: UP });
    const up = await read(UP);
    const upMs = performance.now() - tUp;
    t.equal(createHash('sha256').update(up).digest('hex'), UP_SHA, '4 MB upload after the handoff intact (host window scaled right)');
    t.comment(`4 MB up in ${upMs.toFixed(1)} ms`);
    t.ok(upMs < 5000, 'upload: no stall');
    const serverClosed = new Promise<boolean>((resolve) => socket.on('close', resolve));
    socket.on('end', () => socket.end());
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\n\r\n`);
    socket.write(BODY);

    const resp = await client.wait('response', id, 20000);
    t.ok(resp, 'the client got the whole response');
    t.equal(resp?.bytes, BODY.length, '10 MB');
    t.equal(resp?.sha256, BODY_SHA, 'intact (sha256)');
    const mbps = (BODY.length * 8) / 1e6 / ((resp?.ms as number) / 1000);
    t.comment(`10 MB down in ${(resp?.ms as number)?.toFixed(1)} ms (${mbps.toFixed(0)} Mbit/s)`);
    t.ok((resp?.ms as number) < 5000, 'download: no stall');
    t.equal(clientRcvMss(blob.clientPort), before.sndMss, 'the client received full-sized segments');
    // veth reorders packets now and then (plain connections show TCPSACKReorder
    // too); the host may then retransmit spuriously, which the client reports
    // with DSACK. What must not happen: a retransmission timeout, or a segment
    // that was really lost.
    const after = tcpInfo(fd);
    const movedB = moved(netB0, netstat(nsB));
    if (after.totalRetrans) t.comment(`spurious retransmissions after reordering: ${after.totalRetrans} (DSACKed ${after.dsackDups})`);
    t.equal(movedB.TcpExtTCPTimeouts ?? 0, 0, 'no retransmission timeout at the host');
    t.ok(after.dsackDups >= after.totalRetrans, 'every retransmission (if any) was a spurious one the client had already received');

    client.send({ cmd: 'end', id });
    const closed = await client.wait('close', id);
    t.equal(closed?.hadError, false, 'the client closed cleanly');
    t.notOk(client.events.find((e) => e.ev === 'error' && e.id === id), 'no socket error at the client (no RST)');
    t.ok(client.events.find((e) => e.ev === 'end' && e.id === id), "the client saw the host's FIN");
    t.equal(await serverClosed, false, 'the injected socket closed cleanly');
    t.same(counters(nsA), countersA, `client: no PAWS, TSecr or out-of-window drops (${COUNTERS.join(', ')})`);
    t.same(counters(nsB), countersB, 'host: none either');
  });

  t.test('without timestamps, SACK and window scaling on the client', async (t) => {
    const sysctls = ['net.ipv4.tcp_timestamps', 'net.ipv4.tcp_sack', 'net.ipv4.tcp_window_scaling'];
    const saved = sysctls.map((k) => sh('sysctl', ['-n', k], { ns: nsA }).trim());
    for (const k of sysctls) sh('sysctl', ['-qw', `${k}=0`], { ns: nsA });
    t.teardown(() => sysctls.forEach((k, i) => sh('sysctl', ['-qw', `${k}=${saved[i]}`], { ns: nsA })));
    const request = Buffer.from(`POST /big HTTP/1.1\r\nHost: vip\r\nContent-Length: ${UP}\r\n\r\n`);
    const netB0 = netstat(nsB);
    const { blob, info: before, id } = await handoffSource(request, false);
    t.same([blob.tsOk, blob.sackOk, blob.sndWscale, blob.rcvWscale], [false, false, 0, 0], 'none negotiated');
    const { fd, socket } = injectConnection(blob);
    const info = tcpInfo(fd);
    t.equal(info.options & (TCPI_OPT_TIMESTAMPS | TCPI_OPT_SACK), 0, 'no timestamps, no SACK');
    t.same([info.sndWscale, info.rcvWscale], [0, 0], 'window scales 0 (reported as wscale_ok with 0/0)');
    let upload = '';
    let upMs = 0;
    const server = http.createServer((req, res) => {
      const h = createHash('sha256');
      const t0 = performance.now();
      req.on('data', (d) => h.update(d));
      req.on('end', () => {
        upMs = performance.now() - t0;
        upload = h.digest('hex');
        res.end(BODY);
      });
    });
    server.emit('connection', socket);
    client.send({ cmd: 'write', id, size: UP });
    const resp = await client.wait('response', id, 30000);
    t.equal(upload, UP_SHA, '4 MB upload intact through an http.Server');
    t.comment(`4 MB up in ${upMs.toFixed(1)} ms without window scaling`);
    t.equal(resp?.sha256, BODY_SHA, '10 MB download intact');
    t.comment(`10 MB down in ${(resp?.ms as number)?.toFixed(1)} ms without window scaling`);
    t.ok((resp?.ms as number) < 10000 && upMs < 10000, 'no stall either way (no stray window shift)');
    // The host computes mss_cache with its own sysctl's timestamp space (tcp_header_len
    // from connect), 12 bytes less; tcp_current_mss() corrects it per segment.
    t.equal(clientRcvMss(blob.clientPort), before.sndMss, `the client received full-sized segments (${before.sndMss})`);
    const after = tcpInfo(fd);
    if (after.totalRetrans) t.comment(`retransmissions after veth reordering: ${after.totalRetrans}`);
    t.equal(moved(netB0, netstat(nsB)).TcpExtTCPTimeouts ?? 0, 0, 'no retransmission timeout at the host');
    client.send({ cmd: 'end', id });
    const closed = await client.wait('close', id);
    t.equal(closed?.hadError, false, 'clean close');
    server.close();
  });

  t.test('a 300 KB request received before the handoff (several receive-queue writes)', async (t) => {
    const pad = pattern(300 * 1024).toString('base64').slice(0, 300 * 1024);
    const request = Buffer.from(`GET /large HTTP/1.1\r\nHost: vip\r\nX-Pad: ${pad}\r\n\r\n`);
    const { blob, id } = await handoffSource(request, true, BIG_PORT);
    t.equal(blob.data.length, request.length, `${request.length} bytes captured`);
    const { socket } = injectConnection(blob);
    const read = reader(socket);
    t.ok((await read(request.length)).equals(request), 'the application reads all of them, in order');
    socket.on('end', () => socket.end());
    socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    t.equal((await client.wait('response', id))?.bytes, 2, 'and answers');
    t.equal((await client.wait('close', id))?.hadError, false, 'clean close');
  });

  t.test('200 handoffs: each injected connection answers; injection time', async (t) => {
    const N = 200;
    const server = http.createServer((req, res) => res.end(`ok ${req.url}`));
    const times: number[] = [];
    const ids: number[] = [];
    const request = (i: number) => Buffer.from(`GET /${i} HTTP/1.1\r\nHost: vip\r\n\r\n`);
    const ready: Promise<Captured & { id: number }>[] = [];
    for (let i = 0; i < N; i++) ready.push(handoffSource(request(nextId)));
    for (const p of ready) {
      const { blob, id } = await p;
      ids.push(id);
      const t0 = process.hrtime.bigint();
      const fd = injectConnectionFd(blob);
      times.push(Number(process.hrtime.bigint() - t0) / 1000);
      server.emit('connection', new net.Socket({ fd, readable: true, writable: true }));
    }
    let ok = 0;
    for (const id of ids) {
      const head = await client.wait('head', id);
      const resp = await client.wait('response', id);
      if (head && resp && resp.bytes === `ok /${id}`.length) ok++;
    }
    t.equal(ok, N, `all ${N} injected connections answered their own request`);
    for (const id of ids) await client.wait('close', id);
    times.sort((a, b) => a - b);
    const median = times[N >> 1];
    t.comment(`inject median ${median.toFixed(1)} us (p10 ${times[N / 10].toFixed(1)}, p90 ${times[(N * 9) / 10].toFixed(1)}, max ${times[N - 1].toFixed(1)}; ${N} injections, each a fresh 4-tuple)`);
    t.ok(median < 1000, 'median under 1 ms');
    server.close();
  });

  t.test('the timestamp offset matters: a clock that went back is dropped by the client (PAWS)', async (t) => {
    const request = Buffer.from('GET / HTTP/1.1\r\n\r\n');
    const { blob, id } = await handoffSource(request);
    const pawsBefore = netstat(nsA).TcpExtPAWSEstab;
    const { fd, socket } = injectConnection({ ...blob, tsVal: (blob.tsVal - 1_000_000) >>> 0 });
    socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
    const resp = await client.wait('response', id, 1000);
    t.notOk(resp, 'the client never accepted the response');
    t.ok(netstat(nsA).TcpExtPAWSEstab > pawsBefore, 'its PAWS check dropped the segments');
    client.send({ cmd: 'destroy', id });
    socket.removeAllListeners();
    socket.on('error', () => undefined);
    abortSilently(fd);
    socket.destroy();
  });

  t.test('errors are coded and leave no descriptor open', async (t) => {
    const { blob, id } = await handoffSource(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    const fds = openFds();
    const live = injectConnection(blob);

    const expectErr = (fn: () => unknown, match: object, what: string) => {
      const before = openFds();
      try {
        fn();
        t.fail(`${what}: no error`);
      } catch (err) {
        t.type(err, InjectError, `${what}: InjectError`);
        t.match(err, match, `${what}: ${(err as Error).message}`);
      }
      t.equal(openFds(), before, `${what}: no descriptor left open`);
    };
    expectErr(() => injectConnectionFd(blob), { code: 'ERR_INJECT_CONNECT', syscall: 'connect', errnoName: 'EADDRNOTAVAIL' },
      'the same 4-tuple twice');
    expectErr(() => injectConnectionFd({ ...blob, clientPort: blob.clientPort ^ 1, sndWscale: 15 }),
      { code: 'ERR_INJECT_SETSOCKOPT', option: 'TCP_REPAIR_OPTIONS', errnoName: 'EFBIG', message: /TCP_REPAIR_OPTIONS.*EFBIG/ },
      'a window scale the kernel refuses');
    expectErr(() => injectConnectionFd({ ...blob, clientPort: blob.clientPort ^ 1, vip: '198.18.5.77' }),
      { code: 'ERR_INJECT_CONNECT', syscall: 'connect' }, 'a VIP that is not local, without IP_TRANSPARENT');
    expectErr(() => injectConnectionFd({ ...blob, rcvNxt: (blob.rcvNxt + 1) >>> 0 }), { code: 'ERR_INJECT_BLOB', message: /rcvNxt/ },
      'rcvNxt inconsistent with the data');
    expectErr(() => injectConnectionFd({ ...blob, sndNxt: (blob.sndNxt + 5) >>> 0 }), { code: 'ERR_INJECT_BLOB', message: /sndNxt/ },
      'bytes sent by the balancer');
    expectErr(() => injectConnectionFd(blob, { vips: new Set(['198.18.5.200']) }), { code: 'ERR_INJECT_VIP' },
      'a VIP this host does not serve');

    // With IP_TRANSPARENT a non-local VIP works (route lookup accepts any source).
    const other = injectConnectionFd({ ...blob, clientPort: blob.clientPort ^ 1, vip: '198.18.5.77' }, { transparent: true, windowProbe: false });
    t.equal(tcpInfo(other).state, 1, 'IP_TRANSPARENT: a non-local VIP can be injected');
    abortSilently(other);

    client.send({ cmd: 'destroy', id });
    live.socket.destroy();
    await sleep(20);
    t.equal(openFds(), fds, 'no descriptor left after all of it');
  });

  t.test('a listener can be restarted on VIP:port while injected connections live (SO_REUSEADDR)', async (t) => {
    const { blob, id } = await handoffSource(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
    const live = injectConnection(blob);
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    const err = await new Promise<Error | null>((resolve) => {
      listener.once('error', resolve);
      listener.listen(PORT, VIP, () => resolve(null));
    });
    t.equal(err, null, 'listen on VIP:port again succeeded');
    client.send({ cmd: 'destroy', id });
    live.socket.destroy();
  });

  const noCapsh = !!spawnSync('capsh', ['--help'], { stdio: 'ignore' }).error && 'capsh is not installed';
  t.test('without CAP_NET_ADMIN: ERR_INJECT_PERMISSION, nothing left open', { skip: noCapsh }, (t) => {
    const repair = path.join(__dirname, '..', 'src', 'host', 'repair.js');
    const script = `
      const fs = require('fs');
      const { injectConnectionFd } = require(${JSON.stringify(repair)});
      const blob = { ...${JSON.stringify({ ...sampleBlob(), data: null, nonce: null })}, data: Buffer.alloc(0), nonce: Buffer.alloc(16) };
      const before = fs.readdirSync('/proc/self/fd').length;
      let res;
      try { injectConnectionFd(blob); res = { ok: true }; }
      catch (e) { res = { code: e.code, option: e.option, errnoName: e.errnoName, message: e.message }; }
      res.leaked = fs.readdirSync('/proc/self/fd').length - before;
      console.log(JSON.stringify(res));`;
    const r = spawnSync('capsh', ['--drop=cap_net_admin', '--', '-c', `exec "${process.execPath}" -e '${script.replace(/'/g, "'\\''")}'`],
      { encoding: 'utf8' });
    const res = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
    t.match(res, { code: 'ERR_INJECT_PERMISSION', option: 'TCP_REPAIR', errnoName: 'EPERM', message: /CAP_NET_ADMIN/ },
      `coded: ${res.message}`);
    t.equal(res.leaked, 0, 'no descriptor left open');
    t.end();
  });

  t.test('timestampValue: even, rounded up, never behind the balancer', async (t) => {
    t.equal(timestampValue({ tsVal: 1000, created: 5000 }, 5000), 1000);
    t.equal(timestampValue({ tsVal: 1001, created: 5000 }, 5000), 1002, 'odd rounds up (the low bit selects µs mode)');
    t.equal(timestampValue({ tsVal: 1000, created: 5000 }, 5123), 1124);
    t.equal(timestampValue({ tsVal: 1000, created: 5000 }, 4000), 1000, 'a host clock behind the balancer does not move TSval back');
    t.equal(timestampValue({ tsVal: 0xffffffff, created: 0 }, 0), 0, 'wraps');
  });
}

function sampleBlob(): ConnectionBlob {
  return {
    v: 1, flowId: 1, clientIp: '198.18.5.1', clientPort: 40000, vip: '127.0.0.1', vipPort: 8080,
    iss: 1000, irs: 2000, sndNxt: 1001, rcvNxt: 2001, sndWnd: 65535, rcvWnd: 65535, sndWscale: 7, rcvWscale: 7,
    mss: 1460, sackOk: true, tsOk: true, tsVal: 1, tsEcr: 1, data: Buffer.alloc(0),
    decision: { rule: null, pool: 'p', host: 'h' }, created: Date.now(), nonce: Buffer.alloc(16),
  };
}
