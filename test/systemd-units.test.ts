// The systemd units in deploy/systemd: their commands name real CLI
// subcommands and flags (asked of the built CLI itself), the DPDK scripts'
// flags exist, the stop timeout outlasts the balancer's default drain, every
// variable they use is documented in the env example, and systemd-analyze
// verify (when installed) finds nothing wrong but absent binaries.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { parseBalancerConfig } from '../src/controller/config';

const ROOT = path.resolve(__dirname, '../..');
const DIR = path.join(ROOT, 'deploy/systemd');
const CLI = path.join(ROOT, 'dist/src/controller/cli.js');
const UNITS = ['handoff-lb.service', 'handoff-host.service', 'handoff-hugepages.service', 'handoff-devbind@.service'];
const INSTALLED_CLI = '/opt/handoff/dist/src/controller/cli.js';

type Unit = Record<string, Record<string, string[]>>;

/** systemd's unit syntax, enough for these files: sections, repeated keys, comments, no continuations. */
function parseUnit(text: string): Unit {
  const unit: Unit = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) { section = s[1]; unit[section] ??= {}; continue; }
    const eq = line.indexOf('=');
    if (eq < 0 || !section) throw new Error(`not a key=value line: ${line}`);
    const key = line.slice(0, eq).trim();
    (unit[section][key] ??= []).push(line.slice(eq + 1).trim());
  }
  return unit;
}

const units = Object.fromEntries(UNITS.map((u) => [u, parseUnit(fs.readFileSync(path.join(DIR, u), 'utf8'))]));
const lb = units['handoff-lb.service'];
const host = units['handoff-host.service'];
const commands = (u: Unit) => Object.entries(u.Service)
  .filter(([k]) => k.startsWith('Exec')).flatMap(([, v]) => v).map((v) => v.replace(/^[-@:+!]+/, ''));
const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' });

t.test('every unit parses and has its sections', async (t) => {
  for (const [name, u] of Object.entries(units)) {
    t.ok(u.Unit?.Description, `${name}: [Unit] Description`);
    t.ok(u.Service, `${name}: [Service]`);
    t.ok(u.Install?.WantedBy, `${name}: [Install] WantedBy`);
  }
});

t.test('the CLI commands in the units exist, with the flags used', { skip: !fs.existsSync(CLI) && 'dist not built' }, async (t) => {
  const invocations = [...commands(lb), ...commands(host)].filter((c) => c.includes(INSTALLED_CLI));
  t.ok(invocations.length >= 4, 'lb: check, start, reload check; host: start');
  const helps: Record<string, ReturnType<typeof run>> = {};
  for (const line of invocations) {
    t.match(line, /^\/usr\/bin\/node /, `${line}: run by node`);
    const args = line.slice(line.indexOf(INSTALLED_CLI) + INSTALLED_CLI.length).trim().split(/\s+/);
    const [sub, ...rest] = args;
    const help = helps[sub] ??= run(process.execPath, [CLI, sub, '--help']);
    t.equal(help.status, 0, `handoff ${sub} exists (its --help exits 0)`);
    for (const flag of rest.filter((a) => a.startsWith('--'))) {
      t.match(help.stdout, new RegExp(`${flag}(?![\\w-])`), `handoff ${sub} documents ${flag}`);
    }
  }
  t.same(lb.Service.ExecStart[0].split(/\s+/).slice(2), ['lb', '--config', '${HANDOFF_LB_CONFIG}']);
  t.same(host.Service.ExecStart[0].split(/\s+/).slice(2), ['host', '--config', '${HANDOFF_HOST_CONFIG}']);
  t.equal(run(process.execPath, [CLI, 'no-such-command']).status, 2, 'an unknown subcommand would fail (so the check above can)');
});

t.test("the balancer's start check passes on the production example and fails on a bad file", { skip: !fs.existsSync(CLI) && 'dist not built' }, async (t) => {
  const pre = lb.Service.ExecStartPre[0].split(/\s+/);
  t.same(pre.slice(2), ['check-config', '${HANDOFF_LB_CONFIG}']);
  t.equal(run(process.execPath, [CLI, 'check-config', path.join(ROOT, 'configs/bare-metal.yaml')]).status, 0, 'configs/bare-metal.yaml');
  const bad = path.join(os.tmpdir(), `handoff-units-${process.pid}.yaml`);
  fs.writeFileSync(bad, 'workers: zero\n');
  t.teardown(() => fs.rmSync(bad, { force: true }));
  const r = run(process.execPath, [CLI, 'check-config', bad]);
  t.equal(r.status, 3, 'exit 3: RestartPreventExitStatus keeps systemd from restarting into it');
  t.ok(lb.Service.RestartPreventExitStatus[0].split(/\s+/).includes('3'));
});

t.test('stop and reload semantics', async (t) => {
  for (const u of [lb, host]) {
    t.same(u.Service.KillSignal, ['SIGTERM']);
    t.same(u.Service.KillMode, ['mixed'], 'SIGTERM to the main process only, SIGKILL to all at the timeout');
    t.same(u.Service.Restart, ['on-failure']);
    t.same(u.Service.LimitNOFILE?.length, 1);
  }
  t.same(lb.Service.ExecReload.at(-1), '/bin/kill -HUP $MAINPID', 'reload is SIGHUP, after the file checks');
  t.notOk(host.Service.ExecReload, 'the host agent has no reload');
  const drainMs = parseBalancerConfig({ ports: [{ device: 'net_tap0', ip: '198.18.0.2' }] }).shutdown.drainTimeoutMs;
  const stopS = Number(lb.Service.TimeoutStopSec[0]);
  t.ok(stopS * 1000 > drainMs + 5000, `TimeoutStopSec ${stopS} s outlasts the default drain (${drainMs} ms) and the shim's stop`);
  t.same(lb.Service.LimitMEMLOCK, ['infinity'], 'DMA and hugepages are pinned');
  const caps = lb.Service.CapabilityBoundingSet[0].split(/\s+/).sort();
  t.same(caps, ['CAP_IPC_LOCK', 'CAP_NET_ADMIN', 'CAP_NET_RAW']);
  t.ok(host.Service.CapabilityBoundingSet[0].split(/\s+/).includes('CAP_NET_ADMIN'), 'TCP_REPAIR needs CAP_NET_ADMIN');
  t.ok(host.Service.CapabilityBoundingSet[0].split(/\s+/).includes('CAP_BPF'), 'the BPF tunnel check needs CAP_BPF');
  t.same(lb.Service.UnsetEnvironment, ['RUNTIME_DIRECTORY'], 'telemetry stays under /var/run/dpdk/<prefix>');
});

t.test('every variable the units use is in the env example', async (t) => {
  const example = fs.readFileSync(path.join(DIR, 'handoff.env.example'), 'utf8');
  const documented = new Set([...example.matchAll(/^#?([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]));
  for (const [name, u] of Object.entries(units)) {
    const text = commands(u).join('\n').replace(/\$\$/g, '$'); // the shell's variables come from the env file too
    const used = new Set([...text.matchAll(/\$\{?([A-Z_][A-Z0-9_]*)\}?/g)].map((m) => m[1]).filter((v) => v !== 'MAINPID'));
    for (const v of used) t.ok(documented.has(v), `${name}: ${v} is documented in handoff.env.example`);
  }
});

t.test("the DPDK scripts' flags exist", async (t) => {
  const scripts: Record<string, string> = {
    '/usr/bin/dpdk-hugepages.py': commands(units['handoff-hugepages.service']).join(' '),
    '/usr/bin/dpdk-devbind.py': commands(units['handoff-devbind@.service']).join(' '),
  };
  for (const [script, text] of Object.entries(scripts)) {
    if (!fs.existsSync(script)) { t.comment(`skipped: ${script} is not installed (Debian package dpdk)`); continue; }
    const help = run(script, ['--help']);
    t.equal(help.status, 0, `${script} --help`);
    const flags = [...text.matchAll(new RegExp(`${script.replace(/[.]/g, '\\.')}((?:\\s+(?:--[a-z-]+|\\S+))*)`, 'g'))]
      .flatMap((m) => [...m[1].matchAll(/--[a-z-]+/g)].map((f) => f[0]));
    t.ok(flags.length >= 2, `${path.basename(script)}: flags found in the units`);
    for (const f of new Set(flags)) t.match(help.stdout, new RegExp(`${f}(?![\\w-])`), `${path.basename(script)} has ${f}`);
  }
});

const analyze = spawnSync('sh', ['-c', 'command -v systemd-analyze']).status === 0;
t.test('systemd-analyze verify', { skip: !analyze && 'systemd-analyze is not installed' }, async (t) => {
  // verify loads every unit named in a dependency; a copy of the directory
  // holds them all. The template is checked as an instance (verify cannot
  // load one with ':' in its name, so not a PCI address).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-units-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const u of UNITS) fs.copyFileSync(path.join(DIR, u), path.join(dir, u));
  fs.copyFileSync(path.join(DIR, 'handoff-devbind@.service'), path.join(dir, 'handoff-devbind@0000-01-00.0.service'));
  const files = [...UNITS.filter((u) => !u.includes('@')), 'handoff-devbind@0000-01-00.0.service'].map((u) => path.join(dir, u));
  const r = spawnSync('systemd-analyze', ['verify', ...files], { encoding: 'utf8', env: { ...process.env, SYSTEMD_LOG_COLOR: '0' } });
  // Binaries of the target machine (node, modprobe) may be elsewhere or absent here.
  const problems = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() && !/is not executable: No such file or directory/.test(l));
  t.same(problems, [], 'no warnings or errors');
});
