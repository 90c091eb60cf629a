// Summarise a V8 CPU profile (.cpuprofile, from `node --cpu-prof` or from the
// benchmark's --profile): self time by function, and by area of the code base.
//
//   node dist/bench/handoff/profile.js FILE.cpuprofile [--top=N]
import fs from 'node:fs';
import path from 'node:path';

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; hitCount?: number; children?: number[] }
export interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples?: number[]; timeDeltas?: number[] }

export interface ProfileRow { name: string; where: string; area: string; selfMs: number; share: number }
export interface ProfileSummary {
  totalMs: number;
  idleShare: number;
  top: ProfileRow[];
  areas: { area: string; share: number }[];
  /** Functions of the project (src/) by total time: themselves and what they call. */
  inclusive: { name: string; where: string; share: number }[];
}

/** Where a function lives, coarsely: engine, transfer, shim binding, the bench's driver, Node, V8. */
function areaOf(cf: CallFrame): string {
  const u = cf.url;
  const n = cf.functionName;
  if (n === '(garbage collector)') return 'GC';
  if (n === '(idle)') return 'idle';
  if (n === '(program)') return 'native/other (program)';
  if (/\/src\/classifier\/(engine|flow-ids)/.test(u)) return 'engine (src/classifier/engine.ts)';
  if (/\/src\/classifier\//.test(u)) return 'classify + route (src/classifier/*)';
  if (/\/src\/transfer\/blob/.test(u)) return 'blob encode (src/transfer/blob.ts)';
  if (/\/src\/transfer\//.test(u)) return 'blob transfer (src/transfer/*)';
  if (/\/src\/offload\//.test(u)) return 'shim binding (src/offload/*)';
  if (/\/src\/net\//.test(u)) return 'packet build/parse (src/net/*)';
  if (/\/bench\/handoff\//.test(u)) return 'bench driver + stand-in hosts';
  if (/node_modules\/koffi/.test(u)) return 'koffi (FFI)';
  if (/node_modules\/msgpackr/.test(u)) return 'msgpackr';
  if (u.startsWith('node:') || /^internal\//.test(u)) return 'Node internals';
  if (!u) return 'native (V8 builtins, FFI, crypto)';
  return 'other';
}

export function summarise(p: CpuProfile, top = 25): ProfileSummary {
  // Sample counts per node: from samples[] when present, else hitCount.
  const hits = new Map<number, number>();
  if (p.samples?.length) for (const id of p.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  else for (const n of p.nodes) hits.set(n.id, n.hitCount ?? 0);
  const total = [...hits.values()].reduce((a, b) => a + b, 0) || 1;
  const totalMs = (p.endTime - p.startTime) / 1000;
  const byFn = new Map<string, ProfileRow>();
  const byArea = new Map<string, number>();
  const parent = new Map<number, ProfileNode>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const special = new Set(['(garbage collector)', '(idle)', '(program)', '(root)']);
  let idle = 0;
  for (const n of p.nodes) {
    const h = hits.get(n.id) ?? 0;
    if (!h) continue;
    const cf = n.callFrame;
    let area = areaOf(cf);
    let name = cf.functionName || '(anonymous)';
    let where = cf.url ? `${path.basename(cf.url.replace(/^file:\/\//, ''))}:${cf.lineNumber + 1}` : '';
    // Native frames (V8 builtins, crypto, and koffi calls, which V8 names after
    // an arbitrary koffi function): name them after their JS caller instead.
    if (!cf.url && !special.has(cf.functionName)) {
      const up = parent.get(n.id);
      if (up?.callFrame.url) {
        name = `[native] in ${up.callFrame.functionName || '(anonymous)'}`;
        where = `${path.basename(up.callFrame.url.replace(/^file:\/\//, ''))}:${up.callFrame.lineNumber + 1}`;
        area = areaOf(up.callFrame) + ' [native]';
      }
    }
    if (area === 'idle') idle += h;
    byArea.set(area, (byArea.get(area) ?? 0) + h);
    const key = `${name}|${where}`;
    const row = byFn.get(key) ?? { name, where, area, selfMs: 0, share: 0 };
    row.share += h / total;
    byFn.set(key, row);
  }
  const rows = [...byFn.values()].sort((a, b) => b.share - a.share).slice(0, top);
  for (const r of rows) r.selfMs = r.share * totalMs;

  // Total (inclusive) time of project functions: a node's hits plus its subtree's,
  // each function counted once per stack (recursion).
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const incl = new Map<string, { name: string; where: string; hits: number }>();
  const walk = (id: number, onStack: Set<string>): number => {
    const n = byId.get(id)!;
    const cf = n.callFrame;
    const own = /\/src\//.test(cf.url);
    const key = own ? `${cf.functionName}|${cf.url}:${cf.lineNumber}` : '';
    const fresh = own && !onStack.has(key);
    if (fresh) onStack.add(key);
    let h = hits.get(id) ?? 0;
    for (const c of n.children ?? []) h += walk(c, onStack);
    if (fresh) {
      onStack.delete(key);
      const e = incl.get(key) ?? { name: cf.functionName || '(anonymous)',
        where: `${path.basename(cf.url.replace(/^file:\/\//, ''))}:${cf.lineNumber + 1}`, hits: 0 };
      e.hits += h;
      incl.set(key, e);
    }
    return h;
  };
  const root = p.nodes.find((n) => n.callFrame.functionName === '(root)') ?? p.nodes[0];
  walk(root.id, new Set());
  const inclusive = [...incl.values()].sort((a, b) => b.hits - a.hits).slice(0, top)
    .map((e) => ({ name: e.name, where: e.where, share: e.hits / total }));
  return {
    totalMs, idleShare: idle / total, top: rows, inclusive,
    areas: [...byArea.entries()].map(([area, h]) => ({ area, share: h / total })).sort((a, b) => b.share - a.share),
  };
}

export function formatSummary(s: ProfileSummary): string {
  const pct = (x: number) => `${(x * 100).toFixed(1).padStart(5)}%`;
  const lines = [`profile: ${(s.totalMs / 1000).toFixed(2)} s of samples, idle ${pct(s.idleShare).trim()}`, '',
    'self time by area:'];
  for (const a of s.areas) lines.push(`  ${pct(a.share)}  ${a.area}`);
  lines.push('', `top ${s.top.length} functions by self time:`);
  for (const r of s.top) lines.push(`  ${pct(r.share)}  ${r.name.padEnd(40)} ${r.where.padEnd(22)} ${r.area}`);
  lines.push('', `top ${s.inclusive.length} project functions by total time (self + callees):`);
  for (const r of s.inclusive) lines.push(`  ${pct(r.share)}  ${r.name.padEnd(40)} ${r.where}`);
  return lines.join('\n');
}

if (require.main === module) {
  const file = process.argv[2];
  const topArg = process.argv.find((a) => a.startsWith('--top='));
  if (!file) {
    process.stderr.write('usage: node dist/bench/handoff/profile.js FILE.cpuprofile [--top=N]\n');
    process.exit(2);
  }
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile;
  console.log(formatSummary(summarise(p, topArg ? Number(topArg.slice(6)) : 25)));
}
