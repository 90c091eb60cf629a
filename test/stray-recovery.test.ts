// StrayRecovery on plain buffers (no shim, no network): the lookup's
// decisions from the answers it gets, in the orders a busy cluster delivers
// them. The case that made the sanitizer CI stage reset five live downloads:
// a slow owner, and the other host's NOT_HERE answers to earlier attempts
// arriving during the last one, were taken for "every host said no".
import t from 'tap';
import crypto from 'node:crypto';
import { StrayRecovery, type StrayHooks } from '../src/classifier';
import { buildTcp, ipv4FromString, TCP_ACK } from '../src/net';
import { decodeOwnerQuery, encodeOwnerQuery, OwnerStatus, type OwnerQuery } from '../src/transfer';

const KEY = crypto.randomBytes(32);
const HOSTS = [{ ip: '198.18.0.11', agentPort: 4791 }, { ip: '198.18.0.12', agentPort: 4791 }];
const frame = buildTcp({ srcMac: '02:00:00:00:00:01', dstMac: '02:00:00:00:00:02', srcIp: '198.18.1.1', dstIp: '198.18.0.100',
  srcPort: 40000, dstPort: 80, seq: 1000, ack: 2000, flags: TCP_ACK, window: 512 });

function rig(opts: { timeoutMs?: number; attempts?: number; silenceMaxMs?: number } = {}) {
  const sent: Array<{ ip: string; q: OwnerQuery }> = [];
  const adopted: number[] = [];
  const reinjected: Buffer[] = [];
  const resets: Buffer[] = [];
  const hooks: StrayHooks = {
    hosts: () => HOSTS,
    send: (ip, _port, d) => {
      const q = decodeOwnerQuery(d, KEY);
      if ('error' in q) throw new Error(q.error);
      sent.push({ ip, q });
    },
    adopt: (_k, _ip, flowId) => (adopted.push(flowId), true),
    reinject: (f) => void reinjected.push(f),
    reset: (f) => void resets.push(f),
  };
  const s = new StrayRecovery({ clusterKey: KEY, ...opts }, hooks);
  /** Host `ip`'s answer to query `q`. */
  const answer = (ip: string, q: OwnerQuery, status: number, flowId = 0, now = 0) =>
    s.onAnswer(ip, 4791, encodeOwnerQuery({ ...q, type: 'owner', status, flowId }, KEY), now);
  return { s, sent, adopted, reinjected, resets, answer };
}

t.test('the owner answers: mapping adopted under its flow ID, held segments sent on', async (t) => {
  const r = rig();
  r.s.onPacket(frame, 0, 0);
  r.s.onPacket(frame, 0, 1);
  t.equal(r.sent.length, 2, 'one lookup, every host asked');
  t.equal(r.sent[0].q.clientIp, ipv4FromString('198.18.1.1'), 'for the segment\'s flow');
  r.answer(HOSTS[0].ip, r.sent[0].q, OwnerStatus.NOT_HERE);
  r.answer(HOSTS[1].ip, r.sent[1].q, OwnerStatus.MINE, 77);
  t.same(r.adopted, [77], 'adopted under the owner\'s flow ID');
  t.equal(r.reinjected.length, 2, 'both held segments sent on');
  t.equal(r.resets.length, 0, 'no reset');
  t.equal(r.s.stats.recovered, 1);
  t.equal(r.s.inProgress, 0);
});

t.test('every host says no on the last attempt: nobody\'s, reset, remembered', async (t) => {
  const r = rig({ timeoutMs: 5, attempts: 3 });
  r.s.onPacket(frame, 0, 0);
  let now = 0;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const qs = r.sent.slice(-2);
    t.not(qs[0].q.queryId, attempt > 1 ? r.sent[r.sent.length - 3].q.queryId : -1, `attempt ${attempt} has its own query ID`);
    for (const { ip, q } of qs) r.answer(ip, q, OwnerStatus.NOT_HERE, 0, now);
    if (attempt < 3) {
      t.equal(r.resets.length, 0, `no reset before the last attempt (${attempt})`);
      now += 50;
      r.s.tick(now);
    }
  }
  t.equal(r.resets.length, 1, 'reset once every host said no on the last attempt');
  t.equal(r.s.stats.unknown, 1);
  r.s.onPacket(frame, 0, now + 1);
  t.equal(r.s.stats.negativeHits, 1, 'the next segment meets the negative cache');
  t.equal(r.resets.length, 2, 'and is reset without a query');
});

t.test('a slow owner: the other host\'s answers to earlier attempts never add up to "nobody\'s"', async (t) => {
  const r = rig({ timeoutMs: 5, attempts: 3 });
  r.s.onPacket(frame, 0, 0);
  const byAttempt: Array<typeof r.sent> = [r.sent.slice(0, 2)];
  r.s.tick(6);
  byAttempt.push(r.sent.slice(2, 4));
  r.s.tick(20);
  byAttempt.push(r.sent.slice(4, 6));
  t.equal(r.sent.length, 6, 'three attempts sent');
  // Host 0 (not the owner) answers all three attempts now, late; host 1 (the owner) is still busy.
  for (const a of byAttempt) r.answer(HOSTS[0].ip, a[0].q, OwnerStatus.NOT_HERE, 0, 21);
  // The same host's answer twice (a retransmitted query's echo) counts once.
  r.answer(HOSTS[0].ip, byAttempt[2][0].q, OwnerStatus.NOT_HERE, 0, 21);
  t.equal(r.resets.length, 0, 'no reset: the owner has not answered');
  t.equal(r.s.stats.staleAnswers, 2, 'the answers to earlier attempts counted as stale');
  t.equal(r.s.inProgress, 1, 'still looking');
  // The owner's answer to the first attempt arrives: it still counts.
  r.answer(HOSTS[1].ip, byAttempt[0][1].q, OwnerStatus.MINE, 9, 30);
  t.same(r.adopted, [9], 'recovered from the owner\'s late answer');
  t.equal(r.resets.length, 0, 'and never reset');
  t.equal(r.s.stats.unknown, 0);
});

t.test('a host that never answers: asked again until silenceMaxMs, then dropped without a reset', async (t) => {
  const r = rig({ timeoutMs: 5, attempts: 3, silenceMaxMs: 1000 });
  r.s.onPacket(frame, 0, 0);
  let now = 0;
  while (r.s.inProgress && now < 5000) {
    for (const { ip, q } of r.sent.splice(0)) if (ip === HOSTS[0].ip) r.answer(ip, q, OwnerStatus.NOT_HERE, 0, now);
    now = Math.max(now + 1, r.s.nextDeadline());
    r.s.tick(now);
  }
  t.equal(r.s.inProgress, 0, 'the lookup ends');
  t.ok(now > 1000 && now < 1500, `after silenceMaxMs (${now} ms)`);
  t.equal(r.s.stats.unanswered, 1, 'counted as unanswered');
  t.equal(r.resets.length, 0, 'no reset on silence');
  t.equal(r.s.stats.heldDropped, 1, 'the held segment dropped, counted');
});

t.test('answers that fail their check or belong to no lookup are counted, never acted on', async (t) => {
  const r = rig();
  r.s.onPacket(frame, 0, 0);
  const q = r.sent[0].q;
  const forged = encodeOwnerQuery({ ...q, type: 'owner', status: OwnerStatus.MINE, flowId: 5 }, crypto.randomBytes(32));
  r.s.onAnswer(HOSTS[0].ip, 4791, forged, 1);
  r.answer(HOSTS[0].ip, { ...q, queryId: q.queryId + 1000 }, OwnerStatus.MINE, 5, 1);
  r.answer(HOSTS[0].ip, { ...q, clientPort: q.clientPort + 1 }, OwnerStatus.MINE, 5, 1);
  t.equal(r.s.stats.badAnswers, 1, 'a wrong MAC is a bad answer');
  t.equal(r.s.stats.lateAnswers, 2, 'an unknown query ID or another flow: late');
  t.same(r.adopted, [], 'nothing adopted');
  t.equal(r.s.inProgress, 1, 'the lookup goes on');
});
