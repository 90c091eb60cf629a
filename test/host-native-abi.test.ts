// libhandoff_host.so (src/host/native.ts): the koffi declarations match the C
// compiler's layout of every struct in handoff_host.h (otherwise calls
// corrupt memory silently), hh_last_error reports a failure, and hh_inject's
// failures reach InjectError with the same codes and details as before the
// injection moved into C: real failures in a fresh network namespace (the
// same 4-tuple twice, a window scale the kernel refuses, a non-local VIP, a
// privileged port without CAP_NET_BIND_SERVICE, a receive queue that is full).
// The namespace cases need root.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  HOST_ABI_VERSION, InjectStep, hostAbiConstants, hostAbiStructs, hostAbiVersion, hostLastError, injectFailure,
  nativeInject, readHostAbiLayout, type HostConn,
} from '../src/host/native';
import { InjectError, injectConnectionFd } from '../src/host/repair';
import { CLONE_NEWNET, SOL_TCP, TCP_INFO, libc } from '../src/host/libc';
import type { ConnectionBlob } from '../src/transfer/blob';
import { sh } from './lib/netns';
import { checkAbiLayout } from './lib/abi-check';

const layout = readHostAbiLayout();

t.equal(hostAbiVersion(), HOST_ABI_VERSION, 'hh_abi_version() equals the binding');
t.equal(layout.version, HOST_ABI_VERSION, 'hh_abi_layout() carries the same version');

checkAbiLayout(t, 'the library', layout, hostAbiStructs, hostAbiConstants);

const conn = (over: Partial<HostConn> = {}): HostConn => ({
  clientIp: '198.18.9.1', vip: '198.18.9.100', clientPort: 40000, vipPort: 8080,
  iss: 1000, irs: 2000, sndNxt: 1001, rcvNxt: 2001, sndWnd: 65535, rcvWnd: 65535, tsValue: 0,
  mss: 1460, sndWscale: 7, rcvWscale: 7, sackOk: true, tsOk: false, flags: 0, ...over,
});

t.test('hh_last_error and the failure after a call refused before any system call', async (t) => {
  const rc = nativeInject(conn({ rcvNxt: 2005 }), Buffer.from('abc'));
  t.equal(rc, -22, '-EINVAL');
  t.match(hostLastError(), /rcv_nxt 2005 is not irs \+ 1 \+ 3/, `hh_last_error: ${hostLastError()}`);
  t.equal(injectFailure().step, InjectStep.NONE, 'step NONE');
  t.equal(nativeInject(conn({ sndNxt: 1002 }), null), -22, 'snd_nxt != iss + 1: -EINVAL');
  t.match(hostLastError(), /snd_nxt 1002 is not iss \+ 1/);
  t.equal(nativeInject(conn({ flags: 0x80 }), null), -22, 'unknown flags: -EINVAL');
  t.match(hostLastError(), /unknown flags 0x80/);
});

const isRoot = process.getuid?.() === 0;
t.test('real failures in a fresh network namespace', { skip: !isRoot && 'needs root (a network namespace, TCP_REPAIR)' }, async (t) => {
  const ns = `handoff-hna-${process.pid}`;
  const origNs = fs.openSync('/proc/thread-self/ns/net', 'r');
  t.teardown(() => {
    libc().setns(origNs, CLONE_NEWNET);
    fs.closeSync(origNs);
    sh('ip', ['netns', 'del', ns], { allowFail: true });
  });
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['link', 'set', 'lo', 'up'], { ns });
  sh('ip', ['addr', 'add', '198.18.9.100/32', 'dev', 'lo'], { ns });
  // The client's subnet is routed to a veth whose peer end has no address: connect() finds a route.
  sh('ip', ['link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1'], { ns });
  sh('ip', ['addr', 'add', '198.18.9.2/24', 'dev', 'v0'], { ns });
  sh('ip', ['link', 'set', 'v0', 'up'], { ns });
  sh('ip', ['link', 'set', 'v1', 'up'], { ns });
  const nsFd = fs.openSync(`/run/netns/${ns}`, 'r');
  const rc = libc().setns(nsFd, CLONE_NEWNET);
  fs.closeSync(nsFd);
  if (rc !== 0) throw new Error(`setns: errno ${libc().errno()}`);

  const openFds = () => fs.readdirSync('/proc/self/fd').length;
  const blob = sampleBlob();
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

  const fd = injectConnectionFd(blob, { windowProbe: false });
  const info = Buffer.alloc(232);
  t.equal(libc().getsockopt(fd, SOL_TCP, TCP_INFO, info, Buffer.from(Uint32Array.of(232).buffer)), 0, 'TCP_INFO');
  t.equal(info[0], 1, 'injected: ESTABLISHED');

  expectErr(() => injectConnectionFd(blob), {
    code: 'ERR_INJECT_CONNECT', syscall: 'connect', errno: 99, errnoName: 'EADDRNOTAVAIL', message: /already in use/,
  }, 'the same 4-tuple twice');
  t.match(hostLastError(), /inject 198\.18\.9\.1:40000 -> 198\.18\.9\.100:8080: connect in repair mode .*: Cannot assign requested address/,
    `hh_last_error after it: ${hostLastError()}`);
  t.match(injectFailure(), { step: InjectStep.CONNECT, err: 99 }, 'hh_inject_failure: step CONNECT, EADDRNOTAVAIL');

  expectErr(() => injectConnectionFd({ ...blob, clientPort: 40001, sndWscale: 15 }), {
    code: 'ERR_INJECT_SETSOCKOPT', syscall: 'setsockopt', option: 'TCP_REPAIR_OPTIONS', errnoName: 'EFBIG',
    message: /setsockopt TCP_REPAIR_OPTIONS: EFBIG/,
  }, 'a window scale the kernel refuses');
  expectErr(() => injectConnectionFd({ ...blob, clientPort: 40002, vip: '198.18.7.77' }),
    { code: 'ERR_INJECT_CONNECT', syscall: 'connect', errnoName: 'ENETUNREACH' }, 'a VIP that is not local, without IP_TRANSPARENT');

  // More than the receive buffer can ever hold: the queue takes some skbs, then refuses.
  const big = Buffer.alloc(64 << 20, 1);
  expectErr(() => injectConnectionFd({ ...blob, clientPort: 40003, data: big, rcvNxt: (blob.irs + 1 + big.length) >>> 0 }),
    { code: 'ERR_INJECT_QUEUE', syscall: 'send', message: /receive queue took [1-9]\d* of 67108864 bytes/ },
    'a receive queue that is full');

  libc().close(fd);

  // A privileged VIP port without CAP_NET_BIND_SERVICE: bind's EACCES is ERR_INJECT_PERMISSION.
  const noCapsh = !!spawnSync('capsh', ['--help'], { stdio: 'ignore' }).error;
  t.test('bind EACCES: ERR_INJECT_PERMISSION', { skip: noCapsh && 'capsh is not installed' }, async (t) => {
    const repair = path.join(__dirname, '..', 'src', 'host', 'repair.js');
    const script = `
      const { injectConnectionFd } = require(${JSON.stringify(repair)});
      const blob = { ...${JSON.stringify({ ...blob, data: null, nonce: null, vipPort: 80 })}, data: Buffer.alloc(0), nonce: Buffer.alloc(16) };
      let res;
      try { injectConnectionFd(blob); res = { ok: true }; }
      catch (e) { res = { code: e.code, syscall: e.syscall, errnoName: e.errnoName, message: e.message }; }
      console.log(JSON.stringify(res));`;
    const r = spawnSync('ip', ['netns', 'exec', ns, 'capsh', '--drop=cap_net_bind_service', '--', '-c',
      `exec "${process.execPath}" -e '${script.replace(/'/g, "'\\''")}'`], { encoding: 'utf8' });
    const res = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
    t.match(res, { code: 'ERR_INJECT_PERMISSION', syscall: 'bind', errnoName: 'EACCES', message: /bind 198\.18\.9\.100:80: EACCES/ },
      `coded: ${res.message ?? r.stderr}`);
  });
});

function sampleBlob(): ConnectionBlob {
  return {
    v: 1, flowId: 1, clientIp: '198.18.9.1', clientPort: 40000, vip: '198.18.9.100', vipPort: 8080,
    iss: 1000, irs: 2000, sndNxt: 1001, rcvNxt: 2001, sndWnd: 65535, rcvWnd: 65535, sndWscale: 7, rcvWscale: 7,
    mss: 1460, sackOk: true, tsOk: true, tsVal: 1, tsEcr: 1, data: Buffer.alloc(0),
    decision: { rule: null, pool: 'p', host: 'h' }, created: Date.now(), nonce: Buffer.alloc(16),
  };
}
