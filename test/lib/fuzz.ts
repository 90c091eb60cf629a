// fast-check helpers shared by test/fuzz-*.test.ts. Each property states its
// run count for CI; FC_RUNS multiplies it for a longer campaign, and FC_SEED
// with FC_PATH replays the counterexample a failure printed (docs/fuzzing.md).
import fc from 'fast-check';
import type { Test } from 'tap';

export function fcParams<T>(p: fc.Parameters<T> & { numRuns: number }): fc.Parameters<T> {
  const scale = Number(process.env.FC_RUNS ?? 1);
  const out: fc.Parameters<T> = { ...p, numRuns: Math.max(1, Math.round(p.numRuns * (scale > 0 ? scale : 1))) };
  if (process.env.FC_SEED !== undefined) out.seed = Number(process.env.FC_SEED);
  if (process.env.FC_PATH !== undefined) out.path = process.env.FC_PATH;
  return out;
}


/**
 * Run a property as one tap assertion; on failure the diagnostic carries the
 * shrunk counterexample, the seed and the path to replay it.
 */
export function holds<Ts extends [unknown, ...unknown[]]>(
  t: Test, name: string, prop: fc.IProperty<Ts>, params: fc.Parameters<Ts> & { numRuns: number },
): void {
  const d = fc.check(prop, fcParams(params));
  const title = `${name} (${d.numRuns} runs)`;
  if (!d.failed) t.pass(title);
  else t.fail(title, { report: fc.defaultReportMessage(d), replay: `FC_SEED=${d.seed} FC_PATH=${d.counterexamplePath}` });
}
