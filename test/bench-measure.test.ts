// bench/e2e-vs-haproxy/measure.ts: per-thread CPU from /proc/PID/task/TID/stat,
// what the cost benchmark reports per connection. A busy loop on this
// process's main thread must show up on that thread (and not on others).
import t from 'tap';
import { cpuSeconds, taskSeconds, threadDelta, threadSeconds, threadSecondsOf } from '../bench/e2e-vs-haproxy/measure';

t.test('a busy loop shows up as CPU of the main thread', async (t) => {
  const main0 = taskSeconds(process.pid);
  const all0 = cpuSeconds(process.pid);
  const byName0 = threadSeconds(process.pid);
  const end = process.hrtime.bigint() + 300_000_000n;
  let x = 0;
  while (process.hrtime.bigint() < end) x += Math.sqrt(x + 1);
  t.ok(x > 0);
  const main = taskSeconds(process.pid) - main0;
  const all = cpuSeconds(process.pid) - all0;
  // 300 ms of wall clock on the thread; on a loaded machine it may get less CPU, never more than the process.
  t.ok(main >= 0.1, `main thread used ${main.toFixed(2)} s of CPU in a 300 ms busy loop`);
  t.ok(all + 0.02 >= main, `the process (${all.toFixed(2)} s) used at least what its main thread did`);
  const d = threadDelta(byName0, threadSeconds(process.pid));
  const top = Object.entries(d)[0];
  t.ok(top && top[1] >= 0.1, `the busiest thread name over the loop is the loop's (${JSON.stringify(d)})`);
  t.equal(taskSeconds(process.pid, 0x7ffffff0), 0, 'a thread that does not exist reads 0');
  t.ok(threadSecondsOf([process.pid, process.pid]).size >= 1, 'several processes merge by thread name');
});
