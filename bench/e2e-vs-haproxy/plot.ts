// The results as an SVG (vega-lite compiled to vega, rendered headless in
// Node; no browser, no canvas): requests/s relative to direct per case, and
// bytes and CPU the balancer spent per request on log scales.
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import { fmtBytes, type Results } from './report';

const COLORS = { direct: '#9e9e9e', handoff: '#1f77b4', haproxy: '#d62728' };

export async function renderSvg(r: Results): Promise<string> {
  const direct = new Map(r.cells.filter((c) => c.mode === 'direct').map((c) => [c.case, c.rps]));
  // Short names keep the axis readable.
  const short = (label: string) => label.replace(' keep-alive', '').replace(' Connection: close', ', close');
  const order = [...new Set(r.cells.map((c) => short(c.label)))];
  const rows = r.cells.map((c) => ({
    case: short(c.label),
    balancer: c.mode,
    rps: Math.round(c.rps),
    vsDirect: direct.has(c.case) ? c.rps / direct.get(c.case)! : null,
    vsDirectText: direct.has(c.case) ? `${(c.rps / direct.get(c.case)!).toFixed(2)}x` : '',
    bytesPerReq: c.lbBytesPerRequest,
    bytesText: c.lbBytesPerRequest === null ? '' : fmtBytes(c.lbBytesPerRequest),
    cpuUsPerReq: c.lbCpuUsPerRequest,
    cpuText: c.lbCpuUsPerRequest === null ? '' : `${Math.round(c.lbCpuUsPerRequest)} us`,
  }));
  const modes = [...new Set(r.cells.map((c) => c.mode))];
  const color = { field: 'balancer', type: 'nominal' as const, title: null,
    scale: { domain: modes, range: modes.map((m) => COLORS[m]) } };
  const enc = (field: string, title: string, log: boolean) => ({
    x: { field: 'case', type: 'nominal' as const, sort: order, title: null, axis: { labelAngle: 0 } },
    xOffset: { field: 'balancer', sort: modes },
    color,
    // No stacking: grouped bars, and a stack's zero start would break a log scale.
    y: { field, type: 'quantitative' as const, title, stack: null, ...(log ? { scale: { type: 'log' as const }, axis: { format: '~s', grid: false } } : {}) },
  });
  const panel = (title: string, field: string, text: string, yTitle: string, log: boolean, extra: object[] = []) => ({
    title,
    width: 330,
    height: 260,
    // Direct has no balancer: no bar in the bytes and CPU panels.
    transform: [{ filter: `isValid(datum.${field}) && datum.${field} > 0` }],
    layer: [
      { mark: { type: 'bar' as const }, encoding: { ...enc(field, yTitle, log),
        tooltip: [{ field: 'balancer' }, { field: 'rps', title: 'req/s' }, { field: text, title: yTitle }] } },
      { mark: { type: 'text' as const, dy: -5, fontSize: 8 }, encoding: { ...enc(field, yTitle, log), text: { field: text } } },
      ...extra,
    ],
  });
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'Handoff vs HAProxy vs direct: wrk to the same server',
      subtitle: `${r.started.slice(0, 16).replace('T', ' ')} UTC, ${r.machine.cpus} CPUs shared by client, servers and balancer ` +
        `(load ${r.machine.loadavgStart[0]}); each balancer on CPUs 0-1`,
    },
    data: { values: rows },
    config: { font: 'sans-serif', view: { stroke: null }, legend: { orient: 'top' }, title: { anchor: 'start' } },
    hconcat: [
      panel('Requests/s relative to direct (higher is better)', 'vsDirect', 'vsDirectText', 'x direct', false,
        [{ mark: { type: 'rule' as const, strokeDash: [4, 3], color: '#555' }, encoding: { y: { datum: 1 } } }]),
      panel('Bytes through the balancer per request (log)', 'bytesPerReq', 'bytesText', 'bytes / request', true),
      panel('Balancer CPU per request (log)', 'cpuUsPerReq', 'cpuText', 'CPU microseconds / request', true),
    ],
  } as unknown as TopLevelSpec;
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return `${svg}\n`;
}
