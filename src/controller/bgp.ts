import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { BalancerConfig } from './config-schema';
import type { Logger } from './log';

// The balancer's VIPs announced over BGP by BIRD 2 (issue 16). DPDK owns the
// data port, so BIRD runs on a kernel interface of its own and announces
// each VIP /32 with the data port's address as next hop; the top-of-rack
// router spreads the VIP over every balancer that announces it (ECMP).
//
// Why BIRD: one small daemon, one config file, Debian's bird2 package, and a
// control socket (birdc) to withdraw and re-announce without touching the
// sessions; FRR would bring zebra and a dozen daemons for one static route.
//
// Withdrawal: on drain and SIGTERM (disable the VIPs' static protocol: an
// UPDATE withdraws at once), when /healthz fails (same), and when the
// balancer dies: BIRD is started through `setpriv --pdeathsig TERM`, so the
// kernel sends it SIGTERM the moment the balancer process is gone (even on
// SIGKILL), and BIRD's shutdown closes its sessions with a Cease: the router
// drops the routes at once. Hold timers (and BFD when enabled) cover a dead
// machine, where nothing is left to say goodbye.

export type BgpConfig = BalancerConfig['bgp'];

export interface BgpSpeakerOptions {
  config: BgpConfig;
  /** Where the config, control socket and pid file go. */
  runDir: string;
  /** VIP addresses to announce. */
  vips: readonly string[];
  /** The data port's address: next hop of every announcement, and the router ID unless configured. */
  dataAddress: string;
  log?: Logger;
}

/** BIRD's configuration for a balancer (exported for tests and docs). */
export function birdConfig(o: Omit<BgpSpeakerOptions, 'runDir' | 'log'>): string {
  const c = o.config;
  const vips = [...new Set(o.vips)];
  const lines = [
    '# Written by handoff lb from its bgp section; regenerated at every start.',
    `router id ${c.routerId ?? o.dataAddress};`,
    'protocol device { scan time 10; }',
    '# The VIPs, announced while this protocol is enabled (birdc enable/disable vips).',
    'protocol static vips {',
    '  ipv4;',
    ...vips.map((v) => `  route ${v}/32 unreachable;`),
    '}',
  ];
  if (c.bfd.enabled) {
    lines.push(`protocol bfd { interface "*" { min rx interval ${c.bfd.intervalMs} ms; min tx interval ${c.bfd.intervalMs} ms; multiplier ${c.bfd.multiplier}; }; }`);
  }
  c.neighbors.forEach((n, i) => {
    lines.push(
      `protocol bgp peer${i + 1} {`,
      `  local${c.sourceAddress ? ` ${c.sourceAddress}` : ''} as ${c.localAs};`,
      `  neighbor ${n.address}${n.port !== 179 ? ` port ${n.port}` : ''} as ${n.as};`,
      `  hold time ${c.holdTimeS}; keepalive time ${c.keepaliveS}; connect delay time 1; connect retry time 1;`,
      ...(c.bfd.enabled ? ['  bfd on;'] : []),
      '  ipv4 {',
      '    import none;',
      '    export where proto = "vips";',
      `    next hop address ${c.nextHop ?? o.dataAddress};`,
      '  };',
      '}',
    );
  });
  return lines.join('\n') + '\n';
}

/** BIRD, supervised by the balancer. */
export class BgpSpeaker {
  private child?: ChildProcess;
  private announced?: boolean;
  private busy: Promise<unknown> = Promise.resolve();
  readonly socket: string;
  private readonly confFile: string;
  private log = '';

  constructor(private readonly o: BgpSpeakerOptions) {
    this.socket = path.join(o.runDir, 'bird.ctl');
    this.confFile = path.join(o.runDir, 'bird.conf');
  }

  /**
   * Write the config and start BIRD with the VIPs withdrawn (announce() turns them on).
   * @throws when BIRD refuses the config or does not start within 5 s.
   */
  async start(): Promise<void> {
    fs.mkdirSync(this.o.runDir, { recursive: true });
    fs.writeFileSync(this.confFile, birdConfig(this.o).replace('protocol static vips {', 'protocol static vips {\n  disabled;'));
    fs.rmSync(this.socket, { force: true });
    const c = this.o.config;
    // setpriv's parent-death signal: BIRD is told to leave (and close its sessions) when the balancer dies, however it dies.
    this.child = spawn('setpriv', ['--pdeathsig', 'TERM', '--', c.birdPath, '-f', '-c', this.confFile, '-s', this.socket,
      '-P', path.join(this.o.runDir, 'bird.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer) => { this.log = (this.log + d.toString()).slice(-4000); };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.child.on('exit', (code, sig) => {
      if (this.child) this.o.log?.error({ event: 'bgp', code, signal: sig }, `BIRD exited (${code ?? sig}): ${this.log.trim().slice(-500)}`);
      this.child = undefined;
    });
    const end = Date.now() + 5000;
    while (!fs.existsSync(this.socket)) {
      if (!this.child || Date.now() > end) throw new Error(`BIRD did not start: ${this.log.trim().slice(-1000) || 'no output'}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    this.announced = false;
    this.o.log?.info({ event: 'bgp', neighbors: c.neighbors.map((n) => n.address) }, 'BGP speaker (BIRD) started, VIPs withdrawn');
  }

  /** Announce (true) or withdraw (false) the VIPs; a no-op when already so. */
  set(announce: boolean, why: string): Promise<void> {
    this.busy = this.busy.then(async () => {
      if (!this.child || this.announced === announce) return;
      await this.birdc(announce ? 'enable' : 'disable', 'vips');
      this.announced = announce;
      this.o.log?.info({ event: 'bgp', announced: announce, why }, `BGP: VIPs ${announce ? 'announced' : 'withdrawn'} (${why})`);
    }).catch((err) => this.o.log?.error({ event: 'bgp', err: (err as Error).message }, `birdc failed: ${(err as Error).message}`));
    return this.busy as Promise<void>;
  }

  get isAnnouncing(): boolean {
    return !!this.announced;
  }

  /** Sessions by name and state (`show protocols`). */
  async sessions(): Promise<Array<{ name: string; state: string; info: string }>> {
    const out = await this.birdc('show', 'protocols');
    return out.split('\n').map((l) => l.trim().split(/\s+/)).filter((f) => f[1] === 'BGP')
      .map((f) => ({ name: f[0], state: f[3], info: f.slice(5).join(' ') }));
  }

  /** Withdraw, then stop BIRD (its shutdown closes the sessions with a Cease). */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c) return;
    await this.set(false, 'stopping');
    this.child = undefined;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(t);
  }

  private birdc(...args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(this.o.config.birdcPath, ['-s', this.socket, ...args], { timeout: 5000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`birdc ${args.join(' ')}: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      });
    });
  }
}
