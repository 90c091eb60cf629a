import { Counters } from '../offload';

/** The counters that are not zero, one "name value" per line, drops last. */
export function formatCounters(c: Counters, extra: Record<string, number | bigint> = {}): string {
  const rows = Object.entries(c.total).filter(([, v]) => v !== 0n);
  rows.sort(([a], [b]) => Number(a.startsWith('drop_')) - Number(b.startsWith('drop_')));
  const all: [string, bigint | number][] = [...rows, ...Object.entries(extra).filter(([, v]) => v !== 0 && v !== 0n)];
  const width = Math.max(8, ...all.map(([k]) => k.length));
  return all.length ? all.map(([k, v]) => `  ${k.padEnd(width)} ${v}`).join('\n') : '  (all counters zero)';
}
