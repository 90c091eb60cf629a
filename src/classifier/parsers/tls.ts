// TLS ClientHello parser for classification: given the bytes a client has sent
// so far (the TCP stream from offset 0), reassemble the first handshake
// message across TLS records and extract what routing needs (SNI, ALPN) plus
// a few facts for policy and fingerprinting (versions, cipher suites, GREASE).
//
// Like the HTTP parser it is stateless (pass the whole accumulated prefix each
// call), bounded by maxBytes, and returns coded results instead of throwing.
// The common case, a ClientHello in one record, is parsed from a view of the
// caller's buffer without copying. A large hello (post-quantum key shares:
// an X25519MLKEM768 share alone is 1216 bytes) may be split over several
// records and always over several TCP segments, so both are handled.
//
// Strictness, and why:
// - Only handshake records (type 22) until the message is whole: RFC 8446 §5.1
//   forbids interleaving other record types with a handshake message.
// - Record lengths 1..2^14 (zero-length handshake fragments are forbidden),
//   record version 0x0300..0x0304 (clients use 0x0301 or 0x0303 here).
// - The record that ends the ClientHello must end with it: a client sends
//   nothing else in the handshake before the ServerHello, so trailing bytes
//   mean a broken or hostile client.
// - Every length inside the hello must match exactly; no extension may appear
//   twice (RFC 8446 §4.2), and pre_shared_key must be last (§4.2.11).
// - GREASE values (RFC 8701) are tolerated anywhere a client may put them
//   (cipher suites, extensions, groups, key shares, versions, ALPN is opaque
//   anyway), reported by the `grease` flag, and left out of `cipherSuites`
//   and `versions` so consumers see only real values.
// - SNI must be a DNS host name (RFC 6066 §3): letters, digits, '-', and '_'
//   (seen in the wild, accepted by the router's patterns), labels 1..63
//   bytes without a leading or trailing '-', 253 bytes at most, not an IP
//   literal. It is returned lowercase; one trailing dot is stripped rather
//   than rejected so 'a.test.' cannot route differently from 'a.test'.

export interface TlsParseOptions {
  /** Never look further than this many bytes of the stream; default 65536. */
  maxBytes?: number;
}

export interface ClientHelloInfo {
  /** server_name host_name, lowercase; absent if the client sent none. */
  sni?: string;
  /** ALPN protocol names in the client's order; [] if no ALPN extension. */
  alpn: string[];
  /** supported_versions without GREASE; [legacy_version] if the extension is absent (TLS <= 1.2 client). */
  versions: number[];
  /** Cipher suites in the client's order, without GREASE. */
  cipherSuites: number[];
  /** Whether any GREASE value appeared (cipher suite, extension, group, key share, version). */
  grease: boolean;
  /** Bytes of the stream, record headers included, up to the end of the record holding the ClientHello's last byte. */
  recordBytes: number;
}

export type TlsErrorCode =
  | 'ERR_TLS_NOT_HANDSHAKE'
  | 'ERR_TLS_BAD_RECORD'
  | 'ERR_TLS_BAD_HELLO'
  | 'ERR_TLS_TOO_LARGE'
  | 'ERR_TLS_BAD_SNI';

export interface TlsIncomplete { readonly status: 'incomplete' }
export interface TlsComplete { status: 'complete'; hello: ClientHelloInfo }
export interface TlsError { status: 'error'; code: TlsErrorCode; message: string }
export type TlsParseResult = TlsIncomplete | TlsComplete | TlsError;

export const TLS_DEFAULT_MAX_BYTES = 65536;

const INCOMPLETE: TlsIncomplete = Object.freeze({ status: 'incomplete' as const });

const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
const MAX_FRAGMENT = 1 << 14;
const CONTENT_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;

const EXT_SERVER_NAME = 0;
const EXT_SUPPORTED_GROUPS = 10;
const EXT_ALPN = 16;
const EXT_PRE_SHARED_KEY = 41;
const EXT_SUPPORTED_VERSIONS = 43;
const EXT_KEY_SHARE = 51;

/** Big-endian u16 without Buffer.readUInt16BE's argument checks (callers bound-check); inlined by V8. */
function u16(b: Buffer, p: number): number {
  return (b[p] << 8) | b[p + 1];
}

function fail(code: TlsErrorCode, message: string): TlsError {
  return { status: 'error', code, message };
}

/** RFC 8701 GREASE: 0x0A0A, 0x1A1A, ..., 0xFAFA (both bytes equal, low nibble 0xA). */
export function isGrease(v: number): boolean {
  return (v & 0x0f0f) === 0x0a0a && v >> 8 === (v & 0xff);
}

/**
 * True if `buf` could be the start of a TLS handshake record: 0x16, 0x03,
 * 0x00..0x04, or a prefix of that. False for an empty buffer.
 */
export function looksLikeTls(buf: Buffer): boolean {
  if (buf.length === 0 || buf[0] !== CONTENT_HANDSHAKE) return false;
  if (buf.length > 1 && buf[1] !== 0x03) return false;
  return buf.length < 3 || buf[2] <= 0x04;
}

/**
 * Parse the ClientHello at the start of the TLS stream `buf`. 'incomplete'
 * while more bytes could complete it, 'complete' once the whole message is
 * there (bytes after its record, such as early data, are ignored), or a coded
 * error as soon as the bytes so far cannot become a valid ClientHello.
 */
export function parseClientHello(buf: Buffer, opts?: TlsParseOptions): TlsParseResult {
  const maxBytes = opts?.maxBytes ?? TLS_DEFAULT_MAX_BYTES;
  const limit = Math.min(buf.length, maxBytes);
  const incomplete = (): TlsParseResult =>
    buf.length >= maxBytes ? fail('ERR_TLS_TOO_LARGE', `no complete ClientHello within ${maxBytes} bytes`) : INCOMPLETE;

  const frags: Buffer[] = []; // views of the handshake bytes received so far, one per record
  let have = 0; // handshake bytes received
  let declared = 0; // handshake bytes the record headers seen so far promise
  let msgLen = -1; // whole handshake message, header included, once known
  let pos = 0;
  for (;;) {
    // The same checks whether the header is whole or still arriving, so a
    // prefix and the full stream report the same error.
    const err = checkRecordHeader(buf, pos, Math.min(pos + RECORD_HEADER, limit));
    if (err) return err;
    if (pos + RECORD_HEADER > limit) return incomplete();
    const len = u16(buf, pos + 3);
    if (len === 0 || len > MAX_FRAGMENT) return fail('ERR_TLS_BAD_RECORD', `record length ${len}`);
    const fragStart = pos + RECORD_HEADER;
    const fragEnd = fragStart + len;
    declared += len;
    const avail = Math.min(fragEnd, limit);
    if (avail > fragStart) {
      frags.push(buf.subarray(fragStart, avail));
      have += avail - fragStart;
    }
    if (msgLen < 0 && have > 0) {
      // The handshake header itself may be split across records; look at what there is.
      const hdr = frags.length === 1 ? frags[0] : Buffer.concat(frags, Math.min(have, HANDSHAKE_HEADER));
      if (hdr[0] !== HANDSHAKE_CLIENT_HELLO) {
        return fail('ERR_TLS_BAD_HELLO', `first handshake message has type ${hdr[0]}, not ClientHello`);
      }
      if (hdr.length >= HANDSHAKE_HEADER) {
        msgLen = HANDSHAKE_HEADER + hdr.readUIntBE(1, 3);
        // Fail at once rather than buffer up to the cap for a hello that cannot fit.
        if (msgLen + RECORD_HEADER > maxBytes) {
          return fail('ERR_TLS_TOO_LARGE', `ClientHello of ${msgLen} bytes exceeds the ${maxBytes}-byte cap`);
        }
      }
    }
    if (msgLen >= 0 && declared > msgLen) {
      return fail('ERR_TLS_BAD_RECORD', 'record holding the end of the ClientHello carries more data');
    }
    if (msgLen >= 0 && have >= msgLen) {
      const msg = frags.length === 1 ? frags[0] : Buffer.concat(frags, msgLen);
      const r = parseHelloBody(msg.subarray(HANDSHAKE_HEADER, msgLen));
      if ('status' in r) return r;
      r.recordBytes = fragEnd;
      return { status: 'complete', hello: r };
    }
    if (avail < fragEnd) return incomplete();
    pos = fragEnd;
  }
}

/** Content type and version of the record header at pos, as far as buf[pos, end) has it. */
function checkRecordHeader(buf: Buffer, pos: number, end: number): TlsError | undefined {
  if (pos < end && buf[pos] !== CONTENT_HANDSHAKE) {
    return pos === 0
      ? fail('ERR_TLS_NOT_HANDSHAKE', `first record has content type ${buf[pos]}, not handshake (22)`)
      : fail('ERR_TLS_BAD_RECORD', `record of type ${buf[pos]} inside the ClientHello`);
  }
  if ((pos + 1 < end && buf[pos + 1] !== 0x03) || (pos + 2 < end && buf[pos + 2] > 0x04)) {
    return fail('ERR_TLS_BAD_RECORD', 'record version is not 3.0 to 3.4');
  }
  return undefined;
}

function badHello(message: string): TlsError {
  return fail('ERR_TLS_BAD_HELLO', message);
}

/** The ClientHello body (RFC 8446 §4.1.2, compatible with TLS 1.0-1.2). */
function parseHelloBody(b: Buffer): ClientHelloInfo | TlsError {
  const n = b.length;
  // legacy_version(2) random(32) session_id<0..32> cipher_suites<2..2^16-2> compression<1..2^8-1>
  if (n < 2 + 32 + 1) return badHello('ClientHello too short');
  const legacyVersion = u16(b, 0);
  if (legacyVersion >> 8 !== 3) return badHello(`legacy_version 0x${legacyVersion.toString(16)}`);
  let p = 34;
  const sidLen = b[p++];
  if (sidLen > 32 || p + sidLen > n) return badHello('bad session_id length');
  p += sidLen;

  if (p + 2 > n) return badHello('truncated cipher_suites');
  const csLen = u16(b, p);
  p += 2;
  if (csLen < 2 || csLen & 1 || p + csLen > n) return badHello('bad cipher_suites length');
  let grease = false;
  const cipherSuites: number[] = [];
  for (const e = p + csLen; p < e; p += 2) {
    const cs = u16(b, p);
    if (isGrease(cs)) grease = true;
    else cipherSuites.push(cs);
  }

  if (p + 1 > n) return badHello('truncated compression_methods');
  const cmLen = b[p++];
  if (cmLen < 1 || p + cmLen > n) return badHello('bad compression_methods length');
  p += cmLen;

  const hello: ClientHelloInfo = { alpn: [], versions: [], cipherSuites, grease, recordBytes: 0 };
  let sawVersions = false;
  if (p < n) {
    // Extensions are optional before TLS 1.3, but if present they fill the rest exactly.
    if (p + 2 > n) return badHello('truncated extensions length');
    const extTotal = u16(b, p);
    p += 2;
    if (p + extTotal !== n) return badHello('extensions length does not match the message');
    const seen = new Set<number>();
    let afterPsk = false;
    while (p < n) {
      if (p + 4 > n) return badHello('truncated extension header');
      const type = u16(b, p);
      const len = u16(b, p + 2);
      const s = p + 4;
      const e = s + len;
      if (e > n) return badHello(`extension ${type} overruns the message`);
      if (afterPsk) return badHello('pre_shared_key is not the last extension');
      if (seen.has(type)) return badHello(`duplicate extension ${type}`);
      seen.add(type);
      let err: TlsError | undefined;
      switch (type) {
        case EXT_SERVER_NAME: {
          const r = parseServerName(b, s, e);
          if (typeof r === 'object') err = r;
          else if (r !== undefined) hello.sni = r;
          break;
        }
        case EXT_ALPN:
          err = parseAlpn(b, s, e, hello.alpn);
          break;
        case EXT_SUPPORTED_VERSIONS:
          sawVersions = true;
          err = parseU16List(b, s, e, 1, hello, hello.versions, 'supported_versions');
          break;
        case EXT_SUPPORTED_GROUPS:
          err = parseU16List(b, s, e, 2, hello, undefined, 'supported_groups');
          break;
        case EXT_KEY_SHARE:
          err = checkKeyShare(b, s, e, hello);
          break;
        case EXT_PRE_SHARED_KEY:
          afterPsk = true;
          break;
        default:
          break;
      }
      if (err) return err;
      p = e;
    }
    for (const t of seen) if (isGrease(t)) hello.grease = true;
  }
  if (!sawVersions) hello.versions.push(legacyVersion);
  return hello;
}

/**
 * A u16 list with a `prefix`-byte length that must fill [s, e). GREASE values
 * set hello.grease and are skipped; the others are pushed to `out` if given.
 */
function parseU16List(
  b: Buffer, s: number, e: number, prefix: 1 | 2, hello: ClientHelloInfo, out: number[] | undefined, what: string,
): TlsError | undefined {
  if (e - s < prefix) return badHello(`truncated ${what}`);
  const len = prefix === 1 ? b[s] : u16(b, s);
  const p0 = s + prefix;
  if (len < 2 || len & 1 || p0 + len !== e) return badHello(`bad ${what} length`);
  for (let p = p0; p < e; p += 2) {
    const v = u16(b, p);
    if (isGrease(v)) hello.grease = true;
    else if (out) out.push(v);
  }
  return undefined;
}

/** key_share: client_shares<0..2^16-1> of { group(2), key_exchange<1..2^16-1> }. */
function checkKeyShare(b: Buffer, s: number, e: number, hello: ClientHelloInfo): TlsError | undefined {
  if (e - s < 2 || s + 2 + u16(b, s) !== e) return badHello('bad key_share length');
  for (let p = s + 2; p < e;) {
    if (p + 4 > e) return badHello('truncated key_share entry');
    const group = u16(b, p);
    const kl = u16(b, p + 2);
    if (kl === 0 || p + 4 + kl > e) return badHello('bad key_share entry length');
    if (isGrease(group)) hello.grease = true;
    p += 4 + kl;
  }
  return undefined;
}

/** ALPN (RFC 7301): ProtocolNameList<2..2^16-1> of ProtocolName<1..2^8-1>. */
function parseAlpn(b: Buffer, s: number, e: number, out: string[]): TlsError | undefined {
  if (e - s < 2 || s + 2 + u16(b, s) !== e || e - s === 2) return badHello('bad ALPN length');
  for (let p = s + 2; p < e;) {
    const l = b[p++];
    if (l === 0 || p + l > e) return badHello('bad ALPN protocol name length');
    // latin1 is lossless for these opaque bytes; registered IDs are ASCII.
    out.push(b.toString('latin1', p, p + l));
    p += l;
  }
  return undefined;
}

/**
 * server_name (RFC 6066 §3): ServerNameList<1..2^16-1> of { name_type(1), opaque<1..2^16-1> }.
 * Returns the validated lowercase host_name, undefined if the list has none, or an error.
 */
function parseServerName(b: Buffer, s: number, e: number): string | undefined | TlsError {
  if (e - s < 2 || s + 2 + u16(b, s) !== e || e - s === 2) {
    return fail('ERR_TLS_BAD_SNI', 'bad server_name list length');
  }
  let host: string | undefined;
  for (let p = s + 2; p < e;) {
    if (p + 3 > e) return fail('ERR_TLS_BAD_SNI', 'truncated server_name entry');
    const type = b[p];
    const l = u16(b, p + 1);
    p += 3;
    if (l === 0 || p + l > e) return fail('ERR_TLS_BAD_SNI', 'bad server_name entry length');
    if (type === 0) {
      // "MUST NOT contain more than one name of the same name_type"
      if (host !== undefined) return fail('ERR_TLS_BAD_SNI', 'more than one host_name');
      const h = dnsName(b, p, p + l);
      if (h === null) return fail('ERR_TLS_BAD_SNI', 'host_name is not a valid DNS host name');
      host = h;
    }
    p += l;
  }
  return host;
}

/** Validate b[s, e) as a DNS host name (see the header comment); lowercase it, or null. */
function dnsName(b: Buffer, s: number, e: number): string | null {
  if (e - s > 1 && b[e - 1] === 0x2e) e--; // one trailing dot: the same name, fully qualified
  if (e - s > 253) return null;
  let labelStart = s;
  let allDigits = true; // of the current label; an all-numeric last label means an IPv4 literal
  for (let i = s; i <= e; i++) {
    const c = i < e ? b[i] : 0x2e;
    if (c === 0x2e) {
      const ll = i - labelStart;
      if (ll === 0 || ll > 63 || b[labelStart] === 0x2d || b[i - 1] === 0x2d) return null;
      if (i === e && allDigits) return null;
      labelStart = i + 1;
      allDigits = true;
      continue;
    }
    const digit = c >= 0x30 && c <= 0x39;
    if (!digit) allDigits = false;
    if (!(digit || (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || c === 0x2d || c === 0x5f)) return null;
  }
  return b.toString('latin1', s, e).toLowerCase();
}
