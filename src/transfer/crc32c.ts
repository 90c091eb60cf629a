// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI,
// SCTP and ext4; check value crc32c('123456789') = 0xE3069283.
//
// Implemented here rather than taken from npm: the maintained packages are
// either native (a build step on every host) or pull in a dependency tree for
// thirty lines of code. Slicing-by-8 processes eight bytes per step, which
// keeps a 1400-byte fragment well under a microsecond on current CPUs; the
// per-fragment checksum is computed twice per datagram (sender and receiver),
// so this is on the handoff's critical path.

const POLY = 0x82f63b78;

/** T[k][b]: CRC of byte b followed by k zero bytes (slicing-by-8 tables). */
const T: Int32Array[] = (() => {
  const tables = Array.from({ length: 8 }, () => new Int32Array(256));
  for (let b = 0; b < 256; b++) {
    let c = b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    tables[0][b] = c;
  }
  for (let b = 0; b < 256; b++) {
    for (let k = 1; k < 8; k++) {
      const prev = tables[k - 1][b];
      tables[k][b] = (prev >>> 8) ^ tables[0][prev & 0xff];
    }
  }
  return tables;
})();

const [T0, T1, T2, T3, T4, T5, T6, T7] = T;

/**
 * CRC32C of `data`, as an unsigned 32-bit number. Pass the previous result as
 * `crc` to continue a running checksum over several pieces:
 * crc32c(b, crc32c(a)) === crc32c(Buffer.concat([a, b])).
 */
export function crc32c(data: Uint8Array, crc = 0): number {
  let c = ~crc;
  let i = 0;
  const n = data.length;
  const end8 = n - (n % 8);
  while (i < end8) {
    const lo = c ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    c =
      T7[lo & 0xff] ^
      T6[(lo >>> 8) & 0xff] ^
      T5[(lo >>> 16) & 0xff] ^
      T4[lo >>> 24] ^
      T3[data[i + 4]] ^
      T2[data[i + 5]] ^
      T1[data[i + 6]] ^
      T0[data[i + 7]];
    i += 8;
  }
  while (i < n) c = (c >>> 8) ^ T0[(c ^ data[i++]) & 0xff];
  return ~c >>> 0;
}
