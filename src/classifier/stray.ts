import crypto from 'node:crypto';
import type { FlowKey } from '../offload';
import { ipv4ToString } from '../net/packet';
import { decodeOwnerQuery, encodeOwnerQuery, OwnerStatus } from '../transfer';

/** Options of StrayRecovery; every bound has a default. */
const RECENT_RECOVERED = 32;

export interface StrayOptions {
  /** Cluster key: queries and answers are authenticated with it. */
  clusterKey: Buffer;
  /** Flows looked up at once; a stray of one more flow is dropped and counted. Default 4096. */
  maxLookups?: number;
  /** Packets held per flow while its owner is looked up. Default 8. */
  heldPerFlow?: number;
  /** Packets held, all flows. Default 4096. */
  heldTotal?: number;
  /** First attempt's wait for the owner's answer, ms; each retry waits twice as long. Default 5. */
  timeoutMs?: number;
  /**
   * Queries per flow before it is taken as nobody's. More than one, because a
   * flow another balancer is handing off right now is on no host yet. Default 3
   * (5 + 10 + 20 ms).
   */
  attempts?: number;
  /** A flow nobody owns is remembered this long: its further packets are answered without a query. Default 2000. */
  negativeTtlMs?: number;
  /** Flows remembered as nobody's, at most (the oldest is forgotten first). Default 65536. */
  negativeMax?: number;
  /** Reset the client of a flow nobody owns (as its kernel would for an unknown connection). Default true. */
  resetUnknown?: boolean;
  /**
   * A flow is nobody's only when every host said so. While some host stays
   * silent (busy, or its answers lost), keep asking, each wait doubling up to
   * 200 ms, for this long; then drop what is held, without a reset. Default 3000.
   */
  silenceMaxMs?: number;
}

/** What the recovery needs from the engine. */
export interface StrayHooks {
  /** The host agents to ask. */
  hosts(): Iterable<{ ip: string; agentPort: number }>;
  send(ip: string, port: number, datagram: Buffer): void;
  /** Install the flow's mapping, ACTIVE, to `hostIp` under `flowId`. @returns false if it could not. */
  adopt(key: FlowKey, hostIp: string, flowId: number, frame: Buffer, port: number): boolean;
  /** Send a held frame through the data path again (its mapping now in place). */
  reinject(frame: Buffer, port: number): void;
  /** Reset the client that sent `frame`. */
  reset(frame: Buffer, port: number): void;
}

export interface StrayStats {
  /** Stray segments taken from the shim. */
  packets: number;
  /** Flows looked up. */
  lookups: number;
  /** Flows whose owner answered: mapping installed, held packets sent on. */
  recovered: number;
  /** Flows every host said it does not have, on every attempt: reset (resetUnknown) and remembered. */
  unknown: number;
  /** Flows some host never answered for within silenceMaxMs: held packets dropped, no reset (silence proves nothing). */
  unanswered: number;
  /** Stray segments of a flow remembered as nobody's. */
  negativeHits: number;
  /** Packets not held: the flow's or the total hold was full. */
  heldDropped: number;
  /** Stray segments dropped because maxLookups flows were being looked up. */
  overflow: number;
  /** Answers that failed their check (length, CRC, MAC, fields, wrong session). */
  badAnswers: number;
  /** Authentic answers for a lookup already finished: mostly the other hosts' NOT_HERE after the owner answered. */
  lateAnswers: number;
  /**
   * NOT_HERE answers to an earlier attempt of a lookup still under way: not
   * counted towards "every host said no" (the owner's answer may still be coming).
   */
  staleAnswers: number;
  /** Owner answers whose mapping could not be installed. */
  adoptFailed: number;
  /** Frames that were not TCP/IPv4 (never from the shim; counted all the same). */
  malformed: number;
}

interface Lookup {
  /** Query IDs of the attempts so far, the current one last; all stay in byId until the lookup ends. */
  ids: number[];
  name: string;
  key: { clientIp: number; clientPort: number; vip: number; vipPort: number };
  frames: Buffer[];
  ports: number[];
  firstAt: number;
  attempt: number;
  due: number;
  asked: number;
  /** Agents (address:port) that answered NOT_HERE to the current attempt. */
  notHere: Set<string>;
}

const LATENCY_SAMPLES = 4096;

/**
 * Any balancer can carry any flow (issue 16): a segment of a flow with no
 * mapping here (ECMP moved it, or this balancer restarted) is held while
 * the host agents are asked who has the connection; the owner's answer
 * installs the mapping under the flow ID the host knows, and the held
 * segments go on in order. Nobody's after a few attempts: the client is
 * reset, as its kernel would be told for an unknown connection, and the
 * flow is remembered for a while so a flood of stray ACKs costs no queries.
 * Memory is bounded by maxLookups, heldTotal and negativeMax; the shim
 * rate-limits what reaches here.
 */
export class StrayRecovery {
  /** Client addresses (host-order) of the last RECENT_RECOVERED flows recovered, oldest overwritten. */
  private readonly recent: number[] = [];
  private recentCount = 0;

  /** Client addresses of the flows recovered last (at most RECENT_RECOVERED), oldest first: status pages, tests. */
  recentlyRecovered(): string[] {
    const n = Math.min(this.recentCount, RECENT_RECOVERED);
    const out: string[] = [];
    for (let i = this.recentCount - n; i < this.recentCount; i++) {
      out.push(ipv4ToString(this.recent[i % RECENT_RECOVERED]));
    }
    return out;
  }

  readonly stats: StrayStats = {
    packets: 0, lookups: 0, recovered: 0, unknown: 0, unanswered: 0, negativeHits: 0, heldDropped: 0, overflow: 0, badAnswers: 0,
    lateAnswers: 0, staleAnswers: 0, adoptFailed: 0, malformed: 0,
  };
  private readonly byName = new Map<string, Lookup>();
  private readonly byId = new Map<number, Lookup>();
  private readonly negative = new Map<string, number>();
  private held = 0;
  private nextId = 1;
  private earliest = Infinity;
  private readonly session = crypto.randomBytes(4).readUInt32BE(0);
  private readonly latencies = new Float64Array(LATENCY_SAMPLES);
  private latencyCount = 0;
  private readonly o: Required<StrayOptions>;

  constructor(opts: StrayOptions, private readonly hooks: StrayHooks) {
    this.o = {
      maxLookups: 4096, heldPerFlow: 8, heldTotal: 4096, timeoutMs: 5, attempts: 3, negativeTtlMs: 2000, negativeMax: 65536,
      resetUnknown: true, silenceMaxMs: 3000, ...opts,
    };
  }

  /** Lookups under way. */
  get inProgress(): number {
    return this.byName.size;
  }

  /** Flows remembered as nobody's. */
  get remembered(): number {
    return this.negative.size;
  }

  /** Recovery latency (first stray segment to mapping installed), microseconds. */
  latency(): { count: number; p50: number; p99: number } {
    const n = Math.min(this.latencyCount, LATENCY_SAMPLES);
    if (!n) return { count: 0, p50: NaN, p99: NaN };
    const s = Float64Array.from(this.latencies.subarray(0, n)).sort();
    return { count: this.latencyCount, p50: s[Math.floor(n * 0.5)], p99: s[Math.min(n - 1, Math.floor(n * 0.99))] };
  }

  /** When tick() next has work, as performance.now() time (Infinity: none). */
  nextDeadline(): number {
    return this.earliest;
  }

  /** A stray segment from the shim (`frame` is a view: copied if kept). */
  onPacket(frame: Buffer, port: number, now: number): void {
    this.stats.packets++;
    const key = parseKey(frame);
    if (!key) return void this.stats.malformed++;
    const name = `${key.clientIp}:${key.clientPort}:${key.vip}:${key.vipPort}`;
    const l = this.byName.get(name);
    if (l) return this.hold(l, frame, port);
    const until = this.negative.get(name);
    if (until !== undefined) {
      if (until > now) {
        this.stats.negativeHits++;
        if (this.o.resetUnknown) this.hooks.reset(frame, port);
        return;
      }
      this.negative.delete(name);
    }
    if (this.byName.size >= this.o.maxLookups) return void this.stats.overflow++;
    const n: Lookup = { ids: [], name, key, frames: [], ports: [], firstAt: now, attempt: 0, due: 0, asked: 0,
      notHere: new Set() };
    this.byName.set(name, n);
    this.stats.lookups++;
    this.hold(n, frame, port);
    this.ask(n, now);
  }

  /** An OWNER datagram from the host agent at `fromIp`:`fromPort`. */
  onAnswer(fromIp: string, fromPort: number, payload: Buffer, now: number): void {
    const a = decodeOwnerQuery(payload, this.o.clusterKey);
    if ('error' in a || a.type !== 'owner' || a.session !== this.session) return void this.stats.badAnswers++;
    const l = this.byId.get(a.queryId);
    if (!l || l.key.clientIp !== a.clientIp || l.key.clientPort !== a.clientPort || l.key.vip !== a.vip
      || l.key.vipPort !== a.vipPort) {
      return void this.stats.lateAnswers++;
    }
    if (a.status === OwnerStatus.NOT_HERE) {
      // Only the current attempt's answers, once per agent: a slow owner's MINE
      // may still come while the others' answers to earlier attempts arrive.
      if (a.queryId !== l.ids[l.ids.length - 1]) return void this.stats.staleAnswers++;
      l.notHere.add(`${fromIp}:${fromPort}`);
      // Everyone said no on the last attempt: nobody's, without waiting out the timeout.
      if (l.notHere.size >= l.asked && l.attempt >= this.o.attempts) this.giveUp(l, now);
      return;
    }
    this.finish(l);
    if (!this.hooks.adopt(l.key, fromIp, a.flowId, l.frames[0], l.ports[0])) {
      this.stats.adoptFailed++;
      this.stats.heldDropped += l.frames.length;
      return;
    }
    for (let i = 0; i < l.frames.length; i++) this.hooks.reinject(l.frames[i], l.ports[i]);
    this.stats.recovered++;
    this.recent[this.recentCount++ % RECENT_RECOVERED] = l.key.clientIp;
    this.latencies[this.latencyCount++ % LATENCY_SAMPLES] = (now - l.firstAt) * 1000;
  }

  /** Retry or give up lookups whose wait is over. */
  tick(now: number): void {
    if (now < this.earliest) return;
    let earliest = Infinity;
    for (const l of this.byName.values()) {
      if (l.due <= now) {
        if (l.attempt >= this.o.attempts) {
          if (l.notHere.size >= l.asked) {
            this.giveUp(l, now);
            continue;
          }
          // Someone stayed silent: a busy host may own it. Never reset on silence.
          if (now - l.firstAt > this.o.silenceMaxMs) {
            this.finish(l);
            this.stats.unanswered++;
            this.stats.heldDropped += l.frames.length;
            continue;
          }
        }
        this.ask(l, now);
      }
      if (l.due < earliest) earliest = l.due;
    }
    this.earliest = earliest;
  }

  private hold(l: Lookup, frame: Buffer, port: number): void {
    if (l.frames.length >= this.o.heldPerFlow || this.held >= this.o.heldTotal) return void this.stats.heldDropped++;
    l.frames.push(Buffer.from(frame));
    l.ports.push(port);
    this.held++;
  }

  private ask(l: Lookup, now: number): void {
    // A fresh query ID per attempt tells its answers from the earlier attempts'.
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    l.ids.push(id);
    this.byId.set(id, l);
    const q = encodeOwnerQuery({ type: 'lookup', session: this.session, queryId: id, ...l.key, flowId: 0, status: 0 },
      this.o.clusterKey);
    l.asked = 0;
    l.notHere.clear();
    for (const h of this.hooks.hosts()) {
      this.hooks.send(h.ip, h.agentPort, q);
      l.asked++;
    }
    l.due = now + Math.min(this.o.timeoutMs * 2 ** l.attempt, Math.max(200, this.o.timeoutMs));
    l.attempt++;
    if (l.due < this.earliest) this.earliest = l.due;
  }

  private finish(l: Lookup): void {
    this.byName.delete(l.name);
    for (const id of l.ids) this.byId.delete(id);
    this.held -= l.frames.length;
  }

  private giveUp(l: Lookup, now: number): void {
    this.finish(l);
    this.stats.unknown++;
    if (this.negative.size >= this.o.negativeMax) this.negative.delete(this.negative.keys().next().value!);
    this.negative.set(l.name, now + this.o.negativeTtlMs);
    if (this.o.resetUnknown && l.frames.length) this.hooks.reset(l.frames[l.frames.length - 1], l.ports[l.ports.length - 1]);
  }
}

/** The flow of a client's TCP/IPv4 segment (VLAN tag allowed), or undefined. */
export function parseKey(f: Buffer): { clientIp: number; clientPort: number; vip: number; vipPort: number } | undefined {
  let l2 = 14;
  if (f.length >= 18 && f.readUInt16BE(12) === 0x8100) l2 = 18;
  if (f.length < l2 + 20 || f.readUInt16BE(l2 - 2) !== 0x0800 || f[l2] >> 4 !== 4 || f[l2 + 9] !== 6) return undefined;
  const t = l2 + (f[l2] & 15) * 4;
  if (f.length < t + 20) return undefined;
  return { clientIp: f.readUInt32BE(l2 + 12), vip: f.readUInt32BE(l2 + 16), clientPort: f.readUInt16BE(t), vipPort: f.readUInt16BE(t + 2) };
}
