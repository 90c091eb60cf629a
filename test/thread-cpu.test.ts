// bench/lib/thread-cpu.ts on this process's own /proc/self/task: a busy
// loop on the main thread shows up there, in the right units, and the stat
// line's name is parsed even with spaces and parentheses in it.
import t from 'tap';
import { CLK_TCK, diffSnapshots, groupThreads, isDpdkWorker, parseStat, snapshot, ticksToUs } from '../bench/lib/thread-cpu';

t.test('parseStat: name with spaces and parentheses; utime+stime; processor', async (t) => {
  // Fields 1-39 of a real line, with the name replaced.
  const line = '4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1234 0 0 0 ' +
    '170 30 0 0 20 0 11 0 1000 100000 5000 18446744073709551615 1 1 0 0 0 0 0 16781312 134235650 0 0 0 17 1 0 0 0 0 0\n';
  const s = parseStat(line);
  t.equal(s.comm, 'a) b (c');
  t.equal(s.ticks, 200);
  t.equal(s.processor, 1);
  t.throws(() => parseStat('garbage'));
});

t.test('a busy main thread of ~200 ms CPU shows as >= 100 ms on the main thread', async (t) => {
  t.ok(CLK_TCK >= 100, `CLK_TCK ${CLK_TCK}`);
  // The name the kernel keeps (comm) is what the snapshot must report.
  const title = process.title;
  process.title = 'tcpu (busy) 1';
  t.teardown(() => { process.title = title; });
  const a = snapshot([process.pid]);
  // Spin until the process has used 200 ms of CPU (not wall time: a loaded machine only makes it take longer).
  const c0 = process.cpuUsage();
  let x = 0;
  for (;;) {
    for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
    const c = process.cpuUsage(c0);
    if (c.user + c.system >= 200_000) break;
  }
  const used = process.cpuUsage(c0);
  const b = snapshot([process.pid]);
  t.ok(Number.isInteger(x));
  const d = diffSnapshots(a, b).get(process.pid);
  if (!d) throw new Error('no delta for this process');
  const main = d.threads.find((x) => x.main);
  if (!main) throw new Error('no main thread');
  t.equal(main.tid, process.pid);
  t.equal(main.comm, 'tcpu (busy) 1');
  t.ok(main.us >= 100_000, `main thread ${main.us} us >= 100000`);
  // Not more than the process measured itself (plus a tick either side): units are right.
  t.ok(main.us <= used.user + used.system + 2 * ticksToUs(1), `main thread ${main.us} us <= cpuUsage ${used.user + used.system} us + 2 ticks`);
  t.ok(d.us >= main.us, 'process total covers the main thread');
  const groups = groupThreads(d, (x) => (x.main ? 'main' : 'other'));
  t.equal(groups.main.us, main.us);
  t.equal(groups.main.threads, 1);
  t.notOk(diffSnapshots(a, snapshot([2 ** 22 + 1])).size, 'a process that is not there is left out');
});

t.test('isDpdkWorker', async (t) => {
  t.ok(isDpdkWorker('rte-worker-1'));
  t.ok(isDpdkWorker('lcore-worker-12'));
  t.notOk(isDpdkWorker('node'));
  t.notOk(isDpdkWorker('eal-intr-thread'));
  t.notOk(isDpdkWorker('rte_mp_handle'));
});
