// The e2e bench's results: their shape (written as JSON), the markdown table
// and the last line.

export interface Cell {
  mode: 'direct' | 'handoff' | 'haproxy';
  case: string;
  label: string;
  responseBytes: number;
  connectionClose: boolean;
  /** All rounds' requests over their time. */
  rps: number;
  roundsRps: number[];
  requests: number;
  seconds: number;
  /** Medians of the rounds' percentiles (wrk's); max over all. */
  latencyUs: { p50: number; p90: number; p99: number; max: number };
  /** wrk's errors (connect, read, write, non-2xx status, timeout), summed and by kind. */
  errors: number;
  errorsBy: Record<string, number>;
  /** Bytes wrk read (headers and bodies). */
  clientBytes: number;
  /** rx+tx bytes on the balancer's veth during the measured window; null: no balancer. */
  lbBytes: number | null;
  lbBytesPerRequest: number | null;
  lbCpuSeconds: number | null;
  lbCpuUsPerRequest: number | null;
  /** The balancer's CPU seconds by thread name. */
  lbThreads: Record<string, number>;
  /** Handoff: its control thread (the Node main thread), seconds and per request. */
  lbCtlCpuSeconds: number | null;
  lbCtlCpuUsPerRequest: number | null;
  /** The hosts' processes (agent and apps), per request, and by thread name (seconds). */
  hostsCpuUsPerRequest: number;
  hostThreads: Record<string, number>;
  wrkCpuUsPerRequest: number;
  /** CPU the other balancer used meanwhile, idle. */
  otherLbCpuSeconds: number;
  hostsCpuSeconds: number;
  wrkCpuSeconds: number;
  /** Share of all CPUs busy during the window (everything on the machine). */
  machineBusy: number;
  loadavg1: number;
  /** Handoff only: handoffs completed and failed during the window. */
  handoffs?: { completed: number; failed: number };
  /** Handoff only: its shim counters and engine stats over the window (non-zero changes), drops included. */
  lbCounters?: Record<string, number>;
}

export interface Results {
  bench: 'e2e-vs-haproxy';
  started: string;
  finished: string;
  machine: { cpus: number; model: string; kernel: string; loadavgStart: number[]; loadavgEnd: number[] };
  options: Record<string, unknown>;
  client: string;
  pinning: string;
  haproxyVersion: string;
  /** Per balancer: its CPU while the other balancer was measured, over that time (cores). */
  idleLbCpuShare: Record<string, number>;
  cells: Cell[];
}

export function findCell(r: Results, mode: Cell['mode'], id: string): Cell | undefined {
  return r.cells.find((c) => c.mode === mode && c.case === id);
}

const fmtInt = (n: number) => Math.round(n).toLocaleString('en-US');
const fmtMs = (us: number) => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
export function fmtBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${Math.round(n)} B`;
}

/** The four figures of the last line, where the cells exist. */
export function ratios(r: Results): Record<string, number> {
  const out: Record<string, number> = {};
  const h1m = findCell(r, 'handoff', '1m');
  const x1m = findCell(r, 'haproxy', '1m');
  const d1m = findCell(r, 'direct', '1m');
  const hc = findCell(r, 'handoff', '1k-close');
  const dc = findCell(r, 'direct', '1k-close');
  if (h1m && x1m) out.e2e_rps_ratio_1mb = h1m.rps / x1m.rps;
  // Bytes per request: the balancers serve different request counts in the same time.
  if (h1m?.lbBytesPerRequest != null && x1m?.lbBytesPerRequest) out.e2e_lb_bytes_ratio_1mb = h1m.lbBytesPerRequest / x1m.lbBytesPerRequest;
  if (h1m && d1m) out.e2e_rps_vs_direct_1mb = h1m.rps / d1m.rps;
  if (hc && dc) out.e2e_close_vs_direct_1kb = hc.rps / dc.rps;
  const xc = findCell(r, 'haproxy', '1k-close');
  if (hc && xc) out.close_vs_haproxy_1kb = hc.rps / xc.rps;
  if (hc?.lbCtlCpuUsPerRequest != null) out.lb_ctl_cpu_us_per_conn = hc.lbCtlCpuUsPerRequest;
  if (hc && dc) out.host_extra_cpu_us_per_conn = hc.hostsCpuUsPerRequest - dc.hostsCpuUsPerRequest;
  if (xc?.lbCpuUsPerRequest != null) out.haproxy_cpu_us_per_conn = xc.lbCpuUsPerRequest;
  const h1 = findCell(r, 'handoff', '1k-close-c1');
  if (h1?.lbCtlCpuUsPerRequest != null) out.lb_ctl_cpu_us_per_conn_c1 = h1.lbCtlCpuUsPerRequest;
  return out;
}

export function summaryLine(r: Results): string {
  const q = ratios(r);
  // CPU figures in µs need no three decimals; ratios do.
  return Object.entries(q).map(([k, v]) => `${k}=${k.includes('_us_') ? v.toFixed(1) : v < 0.01 ? v.toPrecision(3) : v.toFixed(3)}`).join(' ');
}

/** The markdown report; `brief` leaves out the explanation columns (for the terminal). */
export function renderMarkdown(r: Results, o: { brief?: boolean } = {}): string {
  const cases = [...new Set(r.cells.map((c) => c.case))];
  const head = ['case', 'balancer', 'req/s', 'x direct', 'rounds req/s', 'p50 ms', 'p99 ms', 'bytes via balancer / req', 'balancer CPU s',
    'CPU us / req', 'control thread us / req', 'hosts CPU us / req'];
  if (!o.brief) head.push('hosts CPU s', 'wrk CPU us / req', 'machine busy', 'errors');
  const rows: string[][] = [];
  for (const id of cases) {
    const direct = findCell(r, 'direct', id);
    for (const c of r.cells.filter((x) => x.case === id)) {
      const row = [
        c.label, c.mode, fmtInt(c.rps), direct ? `${(c.rps / direct.rps).toFixed(2)}` : '-', c.roundsRps.join(' '), fmtMs(c.latencyUs.p50), fmtMs(c.latencyUs.p99),
        c.lbBytesPerRequest === null ? '-' : fmtBytes(c.lbBytesPerRequest),
        c.lbCpuSeconds === null ? '-' : c.lbCpuSeconds.toFixed(2), c.lbCpuUsPerRequest === null ? '-' : fmtInt(c.lbCpuUsPerRequest),
        c.lbCtlCpuUsPerRequest == null ? '-' : fmtInt(c.lbCtlCpuUsPerRequest), fmtInt(c.hostsCpuUsPerRequest ?? NaN),
      ];
      if (!o.brief) {
        row.push(c.hostsCpuSeconds.toFixed(2), Number.isFinite(c.wrkCpuUsPerRequest) ? fmtInt(c.wrkCpuUsPerRequest) : '-',
          `${Math.round(c.machineBusy * 100)}%`, String(c.errors));
      }
      rows.push(row);
    }
  }
  const table = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`, ...rows.map((x) => `| ${x.join(' | ')} |`)];
  if (o.brief) return table.join('\n');
  const q = ratios(r);
  const fmt = (k: string) => (q[k] === undefined ? 'n/a' : q[k].toFixed(3));
  const threads = r.cells.filter((c) => Object.keys(c.lbThreads).length)
    .map((c) => `- ${c.mode}, ${c.label}: ${Object.entries(c.lbThreads).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(', ')}` +
      (c.handoffs ? `; handoffs ${fmtInt(c.handoffs.completed)} completed, ${c.handoffs.failed} failed` : ''));
  const hostThreads = r.cells.filter((c) => c.hostThreads && Object.keys(c.hostThreads).length)
    .map((c) => `- ${c.mode}, ${c.label}: ${Object.entries(c.hostThreads).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(', ')}` +
      ` (${fmtInt(c.requests)} requests)`);
  return [
    '# End to end: Handoff vs HAProxy vs direct',
    '',
    `Measured ${r.started} on ${r.machine.cpus} CPUs (${r.machine.model}), kernel ${r.machine.kernel}; ` +
      `load average ${r.machine.loadavgStart.join(' ')} at the start, ${r.machine.loadavgEnd.join(' ')} at the end ` +
      '(the machine is shared: other work skews absolute numbers).',
    `Client: ${r.client}. Topology: design.md §6 (namespaces on one bridge; veths with TX checksum offload off, as the demo runs).`,
    `Pinning: ${r.pinning}`,
    r.haproxyVersion ? `HAProxy: ${r.haproxyVersion}, config generated from configs/demo.yaml's routing (keep-alive, http-reuse always).` : '',
    'Bytes via balancer: rx+tx on the balancer\'s veth during the window, per request. CPU: /proc/PID/stat utime+stime, all threads. ' +
      'Latency: wrk\'s percentiles, median over the rounds.',
    `Idle cost while the other balancer was measured: ${Object.entries(r.idleLbCpuShare).map(([k, v]) => `${k} ${(v * 100).toFixed(1)}% of a core`).join(', ') || 'n/a'}.`,
    '',
    ...table,
    '',
    `Handoff over HAProxy at 1 MB: requests/s ${fmt('e2e_rps_ratio_1mb')}, bytes via the balancer per request ${fmt('e2e_lb_bytes_ratio_1mb')}. ` +
      `Handoff over direct: 1 MB ${fmt('e2e_rps_vs_direct_1mb')}, 1 KB Connection: close ${fmt('e2e_close_vs_direct_1kb')}.`,
    '',
    'Balancer CPU by thread (/proc/PID/task/TID/stat over the measured windows; Handoff\'s control thread is its main thread, `node`, the DPDK worker `lcore-worker-N`):',
    ...threads,
    '',
    'Hosts\' CPU by thread (both host processes: agent and apps):',
    ...hostThreads,
    '',
    `\`${summaryLine(r)}\``,
    '',
  ].filter((l, i, a) => !(l === '' && a[i - 1] === '')).join('\n');
}
