// A TunnelFilter driven over stdin, for test/tunnel-bpf.test.ts: run in the
// host namespace (the classifier attaches to that namespace's vx0),
//
//   ip netns exec NS node dist/test/lib/tunnel-filter-proc.js '<json TunnelFilterOptions>'
//
// installs the filter, prints {"ev":"ready"} (or {"ev":"error","error":..}),
// then answers each stdin line {"id":N,"op":"allow"|"revoke"|"sweep"|"counters"|"close",...}
// with {"id":N,"ok":true,"result":..} or {"id":N,"ok":false,"error":..}.
import readline from 'node:readline';
import { TunnelFilter, type TunnelFilterOptions, type TunnelFlow } from '../../src/host';

interface Req { id: number; op: string; flow?: TunnelFlow; now?: number }

const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
let filter: TunnelFilter;
try {
  filter = new TunnelFilter(JSON.parse(process.argv[2] ?? '{}') as TunnelFilterOptions).install();
  out({ ev: 'ready' });
} catch (err) {
  out({ ev: 'error', error: (err as Error).message });
  process.exit(1);
}

const rl = readline.createInterface({ input: process.stdin });
// stdin closed (the test ended): remove the filter and go.
rl.on('close', () => { filter.close(); process.exit(0); });
rl.on('line', (line) => {
  const q = JSON.parse(line) as Req;
  void (async () => {
    switch (q.op) {
      case 'allow': filter.allow(q.flow!); return filter.size;
      case 'revoke': filter.revoke(q.flow!, q.now); return filter.size;
      case 'sweep': filter.sweep(q.now ?? Date.now()); return filter.size;
      case 'counters': return filter.counters();
      case 'close': filter.close(); return null;
      default: throw new Error(`unknown op ${q.op}`);
    }
  })().then((result) => out({ id: q.id, ok: true, result }), (err: Error) => out({ id: q.id, ok: false, error: err.message }));
});
