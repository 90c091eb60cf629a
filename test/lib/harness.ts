import { PacketBurst, Shim, ShimOptions } from '../../src/offload';

/**
 * EAL arguments for tests: no hugepages, no shared config (so several DPDK
 * processes coexist), no PCI scan, main lcore 0 and one worker on lcore 1.
 */
export const TEST_EAL = [
  '--no-huge', '-m', '256', '--no-shconf', '--no-pci', '-l', '0,1',
  '--log-level', 'lib.eal:error', '--no-telemetry',
];

export const isRoot = process.getuid?.() === 0;

/** Start a shim, or say why the test cannot run here (returned as the skip reason). */
export function startShim(options: Omit<ShimOptions, 'eal'> & { eal?: string[] }): Shim | string {
  const shim = new Shim({ eal: TEST_EAL, ...options });
  try {
    shim.start();
  } catch (err) {
    return `the shim could not start here: ${(err as Error).message}`;
  }
  return shim;
}

/** Poll until `fn` returns a truthy value or `ms` elapse; returns the last value. */
export async function waitFor<T>(fn: () => T, ms = 2000, stepMs = 2): Promise<T> {
  const end = Date.now() + ms;
  let v = fn();
  while (!v && Date.now() < end) {
    await new Promise((r) => setTimeout(r, stepMs));
    v = fn();
  }
  return v;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The first frame a ring port sends within `ms` (a copy), or undefined. */
export async function firstRingFrame(shim: Shim, port: number, ms = 5000, out = new PacketBurst(8)): Promise<Buffer | undefined> {
  return waitFor(() => {
    shim.ringDrain(port, out);
    return out.count ? Buffer.from(out.frame(0)) : undefined;
  }, ms, 1);
}

/** Put `frames` into ring port `port` (through `burst`, cleared first). @returns how many the shim took. */
export function ringInjectFrames(shim: Shim, port: number, burst: PacketBurst, frames: Buffer[]): number {
  burst.clear();
  for (const f of frames) burst.add(f);
  return shim.ringInject(port, burst);
}

/**
 * Drain ring port `port` until `n` frames came out (at most 2 s), then 20 ms
 * more so a frame too many shows (with n = 0 only that grace): copies of all.
 */
export async function ringCollect(shim: Shim, port: number, out: PacketBurst, n: number): Promise<Buffer[]> {
  const got: Buffer[] = [];
  const take = () => {
    shim.ringDrain(port, out);
    for (let i = 0; i < out.count; i++) got.push(Buffer.from(out.frame(i)));
    return got.length >= n && n > 0;
  };
  await waitFor(take, 2000);
  await sleep(20);
  take();
  return got;
}
