// Loaded into every Node process of the sanitizer suite (NODE_OPTIONS
// --require, set by san-suite.sh). The ASan runtime must be preloaded into
// Node, which loads the instrumented shim, but not into the other programs the
// tests start: some hang under it (curl deadlocks in setlocale with the
// runtime preloaded). So a child gets LD_PRELOAD only when it is Node itself
// or a wrapper that runs Node (ip netns exec; ip is fine with it).
'use strict';
const cp = require('node:child_process');
const path = require('node:path');
const util = require('node:util');

const runtime = process.env.HANDOFF_SAN_RUNTIME;
const isNode = (file) => file === process.execPath || path.basename(String(file)) === 'node';

// A shell command (an argument of a wrapper) whose shell replaces itself with
// Node: capsh ... -- -c 'exec "/usr/bin/node" -e ...' (the tests that drop a
// capability). That Node may load the instrumented host library, which needs
// the runtime first; the short-lived shell is fine with it.
const execsNode = (arg) => {
  const m = /^\s*exec\s+("([^"]+)"|'([^']+)'|(\S+))/.exec(String(arg));
  return !!m && isNode(m[2] || m[3] || m[4]);
};

// Node itself, or a wrapper that execs it ("ip netns exec NS node ...", "capsh -- -c 'exec node ...'").
const runsNode = (file, args) => isNode(file) || (Array.isArray(args) && (args.some(isNode) || args.some(execsNode)));

function envFor(file, options, args) {
  const env = { ...((options && options.env) || process.env) };
  const others = String(env.LD_PRELOAD || '').split(':').filter((p) => p && p !== runtime);
  if (runsNode(file, args) && !(options && options.shell)) others.unshift(runtime);
  if (others.length) env.LD_PRELOAD = others.join(':');
  else delete env.LD_PRELOAD;
  return { ...options, env };
}

// The arguments of spawn, spawnSync, execFile and execFileSync
// ((file, args?, options?, callback?)) with the environment replaced.
function fileArgs(a) {
  const [file, args, options, ...rest] = a;
  if (args !== undefined && args !== null && !Array.isArray(args)) {
    if (typeof args === 'function') return [file, envFor(file, undefined), args, options, ...rest];
    return [file, envFor(file, args), options, ...rest];
  }
  if (typeof options === 'function') return [file, args, envFor(file, undefined, args), options, ...rest];
  return [file, args, envFor(file, options, args), ...rest];
}

// exec and execSync: (command, options?, callback?), always through a shell.
function commandArgs(a) {
  const [command, options, ...rest] = a;
  if (typeof options === 'function') return [command, envFor('sh', undefined), options, ...rest];
  return [command, envFor('sh', options), ...rest];
}

function wrap(name, fix) {
  const orig = cp[name];
  const wrapped = function (...a) { return orig.apply(this, fix(a)); };
  // promisify(execFile) resolves { stdout, stderr } through this hook: keep it.
  const custom = orig[util.promisify.custom];
  if (custom) wrapped[util.promisify.custom] = function (...a) { return custom.apply(this, fix(a)); };
  cp[name] = wrapped;
}

if (runtime) {
  for (const name of ['spawn', 'spawnSync', 'execFile', 'execFileSync']) wrap(name, fileArgs);
  for (const name of ['exec', 'execSync']) wrap(name, commandArgs);
}
