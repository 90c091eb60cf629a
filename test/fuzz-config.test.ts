// Property and fuzz tests of the configuration loaders (fast-check): an
// operator's file can hold anything, and the answer must always be a valid
// configuration or a ConfigError naming key paths (exit code 3 in the CLI),
// never a TypeError from deep inside. Inputs: arbitrary values, the shipped
// configs with random edits at random key paths, and YAML text with random
// edits. FC_RUNS scales the runs; FC_SEED/FC_PATH replay a failure.
import t from 'tap';
import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { ConfigError, loadBalancerConfig, parseBalancerConfig } from '../src/controller/config';
import { loadHostConfig, parseHostConfig } from '../src/host/config';
import { holds } from './lib/fuzz';

const root = path.resolve(__dirname, '../..');
const shipped = (f: string) => fs.readFileSync(path.join(root, 'configs', f), 'utf8');
const balancerDocs = ['default.yaml', 'bare-metal.yaml'].map((f) => YAML.parse(shipped(f)) as unknown);
const hostDoc = YAML.parse(shipped('host.yaml')) as unknown;

/** 'ok' for a valid configuration, 'config-error' for a well-formed refusal; anything else throws. */
function outcome(fn: () => unknown): 'ok' | 'config-error' {
  try {
    fn();
    return 'ok';
  } catch (err) {
    if (err instanceof ConfigError && err.code === 'ERR_CONFIG_INVALID' && err.problems.length > 0 &&
      err.problems.every((p) => typeof p.path === 'string' && typeof p.message === 'string' && p.message.length > 0)) {
      return 'config-error';
    }
    throw err;
  }
}

// Values an edit may put somewhere: anything JSON or YAML can express.
const valueArb = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(null, '', 0, -1, 1.5, 65536, 2 ** 32, Number.MAX_SAFE_INTEGER, '198.18.0.2', '02:00:00:00:00:01',
    'net_tap0', [], {}, true, 'host1'),
);

type Edit = { path: number[]; op: 'set' | 'delete' | 'add'; value: unknown; key: string };
const editArb: fc.Arbitrary<Edit> = fc.record({
  path: fc.array(fc.nat(), { minLength: 1, maxLength: 5 }),
  op: fc.constantFrom('set', 'set', 'delete', 'add'),
  value: valueArb,
  key: fc.oneof(fc.constantFrom('name', 'ip', 'port', 'mtu', 'pool', 'hosts', 'rules', 'match', 'weight'), fc.string({ maxLength: 8 })),
});

/** Apply an edit at a path chosen by index among the children at each level (a copy). */
function applyEdit(doc: unknown, e: Edit): unknown {
  const copy = structuredClone(doc);
  let node: unknown = copy;
  for (let depth = 0; ; depth++) {
    if (node === null || typeof node !== 'object') return copy;
    const keys = Object.keys(node as object);
    const last = depth === e.path.length - 1 || keys.length === 0;
    if (last) {
      const obj = node as Record<string, unknown>;
      const k = keys.length ? keys[e.path[depth] % keys.length] : e.key;
      if (e.op === 'delete') {
        if (Array.isArray(obj)) obj.splice(Number(k), 1);
        else delete obj[k];
      } else if (e.op === 'add') {
        if (Array.isArray(obj)) obj.push(e.value);
        else obj[e.key] = e.value;
      } else obj[k] = e.value;
      return copy;
    }
    node = (node as Record<string, unknown>)[keys[e.path[depth] % keys.length]];
  }
}

t.test('balancer config: any document gives a config or a ConfigError', async (t) => {
  holds(t, 'arbitrary values', fc.property(fc.anything({ maxDepth: 3 }), (x) => !!outcome(() => parseBalancerConfig(x))),
    { numRuns: 1000 });
  holds(t, 'shipped configs with random edits', fc.property(fc.constantFrom(...balancerDocs), fc.array(editArb, { minLength: 1, maxLength: 4 }),
    (doc, edits) => {
      const edited = edits.reduce(applyEdit, doc);
      return !!outcome(() => parseBalancerConfig(edited));
    }), { numRuns: 1000 });
});

t.test('balancer config: parsing does not modify its input and is deterministic', async (t) => {
  holds(t, 'same verdict twice, input untouched', fc.property(fc.constantFrom(...balancerDocs), fc.array(editArb, { maxLength: 3 }), (doc, edits) => {
    const edited = edits.reduce(applyEdit, doc);
    const before = JSON.stringify(edited);
    const a = outcome(() => parseBalancerConfig(edited));
    const b = outcome(() => parseBalancerConfig(edited));
    return a === b && JSON.stringify(edited) === before;
  }), { numRuns: 500 });
});

t.test('host config: any document gives a config or a ConfigError', async (t) => {
  holds(t, 'arbitrary values', fc.property(fc.anything({ maxDepth: 3 }), (x) => !!outcome(() => parseHostConfig(x))),
    { numRuns: 1000 });
  holds(t, 'the shipped host config with random edits', fc.property(fc.array(editArb, { minLength: 1, maxLength: 4 }), (edits) =>
    !!outcome(() => parseHostConfig(edits.reduce(applyEdit, hostDoc)))), { numRuns: 1500 });
});

t.test('config files: any text gives a config or a ConfigError', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'handoff-fuzz-config-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'c.yaml');
  // YAML's syntax characters, to break the structure in interesting ways.
  const yamlChar = fc.constantFrom(':', ' ', '\n', '-', '#', '"', "'", '{', '}', '[', ']', '&', '*', '!', '|', '>', '\t', '%', '@', '`', ',', '?');
  const textArb = fc.oneof(
    fc.string({ maxLength: 200 }),
    fc.tuple(fc.constantFrom(shipped('default.yaml'), shipped('bare-metal.yaml')),
      fc.array(fc.record({ at: fc.nat(), cut: fc.nat(8), ins: fc.array(yamlChar, { maxLength: 4 }).map((a) => a.join('')) }), { minLength: 1, maxLength: 4 }))
      .map(([text, edits]) => edits.reduce((s, e) => {
        const at = e.at % (s.length + 1);
        return s.slice(0, at) + e.ins + s.slice(at + e.cut);
      }, text)),
  );
  // Found by this test: an alias to an anchor never set made yaml's toJS()
  // throw a ReferenceError through the loaders (check-config exited 1, not 3).
  for (const text of ['*!', 'ports: *p\n', 'a: &a [*a]\n']) {
    fs.writeFileSync(file, text);
    t.equal(outcome(() => loadBalancerConfig(file)), 'config-error', `balancer: ${JSON.stringify(text)} is a ConfigError`);
    t.equal(outcome(() => loadHostConfig(file)), 'config-error', `host: ${JSON.stringify(text)} is a ConfigError`);
  }
  holds(t, 'balancer and host loaders on edited files', fc.property(textArb, (text) => {
    fs.writeFileSync(file, text);
    return !!outcome(() => loadBalancerConfig(file)) && !!outcome(() => loadHostConfig(file));
  }), { numRuns: 300 });
});
