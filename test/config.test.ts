// Configuration: defaults filled, every bad key refused with its path, the
// shipped configs valid, and the CLI's exit codes.
import t from 'tap';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadHostConfig } from '../src/host/config';
import { ConfigError, ealArgs, loadBalancerConfig, loadClusterKey, parseBalancerConfig } from '../src/controller/config';

const root = path.resolve(__dirname, '../..');
const cli = path.join(root, 'dist/src/controller/cli.js');
const minimal = { ports: [{ device: 'net_tap0', ip: '198.18.0.2' }] };

t.test('defaults are filled', async (t) => {
  const c = parseBalancerConfig(structuredClone(minimal));
  t.equal(c.workers, 1);
  t.equal(c.idleSleepUs, 100);
  t.equal(c.ports[0].mtu, 1500);
  t.equal(c.limits.mappingCapacity, 65536);
  t.equal(c.eal.hugepages, false);
  t.same(ealArgs(c), ['-l', '0,1', '-m', '256', '--log-level', 'lib.eal:error', '--no-huge', '--no-shconf']);
});

t.test('EAL arguments for hugepages, vdevs and PCI', async (t) => {
  const c = parseBalancerConfig({ ...structuredClone(minimal), eal: { hugepages: true, filePrefix: 'lb1', vdevs: ['net_tap0'], pci: ['0000:01:00.0'] } });
  t.same(ealArgs(c), ['-l', '0,1', '-m', '256', '--log-level', 'lib.eal:error', '--file-prefix', 'lb1', '--vdev', 'net_tap0', '-a', '0000:01:00.0']);
  const v = parseBalancerConfig({ ...structuredClone(minimal), eal: { vdevs: ['net_null0'] } });
  t.ok(ealArgs(v).includes('--no-pci'), 'vdevs only: no PCI scan');
});

const bad: [string, unknown, string, RegExp][] = [
  ['not a mapping', [1, 2], '/', /mapping/],
  ['no ports', {}, '/ports', /ports|required/i],
  ['bad address', { ports: [{ device: 'x', ip: '1.2.3' }] }, '/ports/0/ip', /expected dotted-quad IPv4 address/],
  ['port out of range', { ...minimal, vips: [{ ip: '1.1.1.1', port: 70000 }] }, '/vips/0/port', /65535/],
  ['unknown key', { ...minimal, colour: 'red' }, '/colour', /.+/],
  ['bad MAC', { ...minimal, hosts: [{ name: 'a', ip: '1.1.1.2', nexthopMac: 'zz', innerMac: '02:00:00:00:00:01' }] }, '/hosts/0/nexthopMac', /expected MAC address/],
  ['host on a missing port', { ...minimal, hosts: [{ name: 'a', ip: '1.1.1.2', port: 3, nexthopMac: '02:00:00:00:00:01', innerMac: '02:00:00:00:00:01' }] }, '/hosts/0/port', /does not exist/],
  ['ring not a power of two', { ...minimal, limits: { exceptionRingSize: 1000 } }, '/limits/exceptionRingSize', /power of two/],
  ['wrong type', { ...minimal, workers: 'two' }, '/workers', /integer/],
  ['rule names an unknown pool', { ...minimal, routing: { pools: [], rules: [{ name: 'r', match: {}, pool: 'nope' }] } },
    '/routing/rules/0/pool', /nope/],
  ['pool names an unknown host', { ...minimal, routing: { pools: [{ name: 'p', hosts: [{ host: 'ghost' }] }] } },
    '/routing/pools/0/hosts/0/host', /ghost/],
  ['blob attempts out of range', { ...minimal, blob: { maxAttempts: 0 } }, '/blob/maxAttempts', /1/],
];
for (const [name, doc, keyPath, msg] of bad) {
  t.test(`refused: ${name}`, async (t) => {
    const err = (() => { try { parseBalancerConfig(doc, 'x.yaml'); } catch (e) { return e; } })();
    t.ok(err instanceof ConfigError, 'ConfigError');
    t.equal((err as ConfigError).code, 'ERR_CONFIG_INVALID');
    const p = (err as ConfigError).problems.find((p) => p.path === keyPath);
    t.ok(p, `names ${keyPath} (got ${(err as ConfigError).problems.map((p) => p.path).join(', ')})`);
    t.match(p?.message, msg);
  });
}

t.test('shipped configs are valid', async (t) => {
  for (const f of fs.readdirSync(path.join(root, 'configs')).filter((f) => f.endsWith('.yaml') && f !== 'host.yaml')) {
    t.doesNotThrow(() => loadBalancerConfig(path.join(root, 'configs', f)), f);
  }
});

t.test('CLI: check-config exit codes and messages', async (t) => {
  const ok = spawnSync(process.execPath, [cli, 'check-config', path.join(root, 'configs/default.yaml')], { encoding: 'utf8' });
  t.equal(ok.status, 0, 'valid config exits 0');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-cfg-'));
  const badFile = path.join(dir, 'bad.yaml');
  fs.writeFileSync(badFile, 'ports:\n  - device: net_tap0\n    ip: 300.1.1.1\n');
  const r = spawnSync(process.execPath, [cli, 'check-config', badFile], { encoding: 'utf8' });
  t.equal(r.status, 3, 'invalid config exits 3');
  t.match(r.stderr, /\/ports\/0\/ip/, 'stderr names the key path');
  fs.writeFileSync(badFile, 'ports: [unclosed\n');
  t.equal(spawnSync(process.execPath, [cli, 'check-config', badFile]).status, 3, 'YAML syntax error exits 3');
  t.equal(spawnSync(process.execPath, [cli, 'frobnicate']).status, 2, 'unknown command exits 2');
  t.equal(spawnSync(process.execPath, [cli, 'lb']).status, 2, 'lb without --config exits 2');
  const help = spawnSync(process.execPath, [cli, 'lb', '--help'], { encoding: 'utf8' });
  t.equal(help.status, 0);
  t.match(help.stdout, /--config FILE/);
  fs.rmSync(dir, { recursive: true });
});

t.test('cluster key from the environment or a file, never shorter than 16 bytes', async (t) => {
  const c = parseBalancerConfig({ ...structuredClone(minimal), clusterKey: { env: 'HANDOFF_TEST_KEY' } });
  delete process.env.HANDOFF_TEST_KEY;
  t.throws(() => loadClusterKey(c), { code: 'ERR_CONFIG_INVALID', message: /\/clusterKey\/env/ }, 'missing: names the key');
  process.env.HANDOFF_TEST_KEY = 'abcd';
  t.throws(() => loadClusterKey(c), { message: /at least 16 bytes/ }, 'too short');
  process.env.HANDOFF_TEST_KEY = '00112233445566778899aabbccddeeff00112233';
  t.equal(loadClusterKey(c).length, 20, 'hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-key-'));
  const f = path.join(dir, 'key');
  fs.writeFileSync(f, Buffer.alloc(32, 0xfe));
  const cf = parseBalancerConfig({ ...structuredClone(minimal), clusterKey: { file: f } });
  t.ok(loadClusterKey(cf).equals(Buffer.alloc(32, 0xfe)), 'raw bytes from a file');
  t.throws(() => loadClusterKey(parseBalancerConfig({ ...structuredClone(minimal), clusterKey: { file: f + 'x' } })),
    { message: /\/clusterKey\/file/ });
  fs.rmSync(dir, { recursive: true });
});

t.test('host config example is valid; a bad one names the key', async (t) => {
  const h = loadHostConfig(path.join(root, 'configs/host.yaml'));
  t.equal(h.app.kind, 'forward');
  t.equal(h.listen.port, 4791);
  t.same(h.vips[1].app, { kind: 'forward', upstream: { host: '127.0.0.1', port: 8443 } }, 'an app per VIP service');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-hcfg-'));
  fs.writeFileSync(path.join(dir, 'h.yaml'), 'vips: [{ ip: 1.2.3, port: 80 }]\n');
  t.throws(() => loadHostConfig(path.join(dir, 'h.yaml')), { code: 'ERR_CONFIG_INVALID', message: /\/vips\/0\/ip/ });
  fs.writeFileSync(path.join(dir, 'h.yaml'), 'vips: [{ ip: 1.2.3.4, port: 443, app: { kind: forward, upstream: { host: x } } }]\n');
  t.throws(() => loadHostConfig(path.join(dir, 'h.yaml')), { code: 'ERR_CONFIG_INVALID', message: /\/vips\/0\/app/ }, 'a bad per-VIP app names its key');
  fs.writeFileSync(path.join(dir, 'h.yaml'), 'vips: [{ ip: 1.2.3.4, port: 80, app: { kind: forward, splice: false, upstream: { host: 127.0.0.1, port: 8080 } } }]\n');
  t.equal((loadHostConfig(path.join(dir, 'h.yaml')).vips[0].app as { splice?: boolean }).splice, false, 'splice: false (a JS pipe) is a key of forward');
  fs.writeFileSync(path.join(dir, 'h.yaml'), 'vips: [{ ip: 1.2.3.4, port: 80, app: { kind: forward, splice: sometimes, upstream: { host: 127.0.0.1, port: 8080 } } }]\n');
  t.throws(() => loadHostConfig(path.join(dir, 'h.yaml')), { code: 'ERR_CONFIG_INVALID', message: /\/vips\/0\/app/ }, 'splice must be a boolean');
  fs.rmSync(dir, { recursive: true });
});
