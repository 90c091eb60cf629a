import crypto from 'node:crypto';

/**
 * SYN cookie secrets every balancer of a cluster agrees on (issue 16): the
 * secret of epoch e (e = floor(unix seconds / rotateS)) is
 * HMAC-SHA256(cluster key, "handoff syn-cookie v1" || e)[0..16], so a
 * handshake whose SYN reached one balancer and whose ACK reaches another
 * (ECMP rehashed between the two) still completes, and the secret still
 * rotates. Around a boundary the clocks of two balancers may disagree by up
 * to `skewS`: for the first skewS seconds of an epoch a balancer keeps
 * making cookies with the old secret while it already accepts the new one,
 * and for the rest it makes them with the new one and accepts the old.
 */
export function cookieSecretsAt(key: Buffer, unixMs: number, rotateS: number, skewS: number):
  { gen: Buffer; alt: Buffer; nextChangeMs: number } {
  if (rotateS <= 0) {
    const s = epochSecret(key, 0);
    return { gen: s, alt: s, nextChangeMs: Infinity };
  }
  const periodMs = rotateS * 1000;
  const skewMs = Math.min(skewS * 1000, periodMs / 2);
  const e = Math.floor(unixMs / periodMs);
  const phase = unixMs - e * periodMs;
  if (phase < skewMs) return { gen: epochSecret(key, e - 1), alt: epochSecret(key, e), nextChangeMs: e * periodMs + skewMs };
  return { gen: epochSecret(key, e), alt: epochSecret(key, e - 1), nextChangeMs: (e + 1) * periodMs };
}

function epochSecret(key: Buffer, epoch: number): Buffer {
  const e = Buffer.alloc(8);
  e.writeBigInt64BE(BigInt(epoch));
  return crypto.createHmac('sha256', key).update('handoff syn-cookie v1').update(e).digest().subarray(0, 16);
}
