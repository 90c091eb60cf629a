// HTTP/1 request-head parser for classification: given the bytes a client has
// sent so far (the stream from offset 0, possibly several TCP segments
// concatenated), say whether the head is complete and, if so, what routing
// needs (method, target, host, headers, cookies).
//
// It is stateless: the caller passes the whole accumulated prefix each time.
// The work per call is bounded by maxBytes, and the common case (a whole head
// in one segment) is one indexOf for CRLFCRLF plus one pass over the lines.
//
// The balancer hands the connection itself to the backend, which re-parses the
// very same bytes; every leniency here is a place where the two could disagree
// about the request (request smuggling, routing bypass). So the parser is
// strict and rejects rather than guesses:
// - Lines end in CRLF only. A bare LF (RFC 9112 §2.2 lets a recipient accept
//   it) or a bare CR is an error, since backends differ on both.
// - No empty lines before the request line (this is a connection's first
//   request, so there is no previous body that could leave a stray CRLF).
// - Method: an RFC 9110 token of at most 32 bytes; one SP between the three
//   parts; the target is visible ASCII without '#'; the version is exactly
//   HTTP/1.0 or HTTP/1.1 (no HTTP/0.9, no HTTP/1.2 "treated as 1.1").
// - Header names are tokens followed directly by ':' (whitespace before the
//   colon is rejected, RFC 9112 §5.1); obs-fold continuation lines are
//   rejected (§5.2); values may hold HTAB, SP, VCHAR and obs-text only.
// - More than one Host header is rejected even when the copies are equal
//   (RFC 9112 §3.2 requires a 400 for any repetition), and a Host that is not
//   a valid uri-host[:port] too. A missing Host is NOT an error here: `host`
//   is just absent and the router falls back to the VIP default (the backend
//   answers 400 to an HTTP/1.1 request without one).
// - In absolute-form ("GET http://a/ HTTP/1.1") the target's authority wins
//   over the Host header, as RFC 9112 §3.2.2 tells the backend to do.
// Body framing (Content-Length / Transfer-Encoding) is deliberately not
// checked: only the backend reads bodies, so there is no second parser of
// them to disagree with.

export { looksLikeTls } from './tls';

export interface HttpParseOptions {
  /** Never look further than this many bytes; default 16384. */
  maxBytes?: number;
  /** Header lines allowed after the request line; default 100. */
  maxHeaders?: number;
}

export type HttpVersion = '1.0' | '1.1';

export interface HttpRequestHead {
  method: string;
  /** The request target exactly as sent. */
  target: string;
  /** The target's path, without the query; raw, not percent-decoded or normalised.
   * '*' for OPTIONS *, '' for CONNECT's authority-form. */
  path: string;
  version: HttpVersion;
  /** All header lines in order, names lowercase, values with surrounding whitespace trimmed. */
  headers: Array<[string, string]>;
  /** Lowercase, without port or a trailing dot; from the absolute-form target
   * if there is one, else from the Host header; absent if neither gave one. */
  host?: string;
  /** From every Cookie header; the first occurrence of a name wins. */
  cookies: Map<string, string>;
}

export type HttpErrorCode =
  | 'ERR_HTTP_TOO_LARGE'
  | 'ERR_HTTP_BAD_REQUEST_LINE'
  | 'ERR_HTTP_BAD_HEADER'
  | 'ERR_HTTP_TOO_MANY_HEADERS'
  | 'ERR_HTTP_VERSION'
  | 'ERR_HTTP2_PREFACE'
  | 'ERR_HTTP_DUPLICATE_HOST';

export interface HttpIncomplete { readonly status: 'incomplete' }
export interface HttpComplete { status: 'complete'; head: HttpRequestHead; headLength: number }
export interface HttpError { status: 'error'; code: HttpErrorCode; message: string }
export type HttpParseResult = HttpIncomplete | HttpComplete | HttpError;

export const HTTP_DEFAULT_MAX_BYTES = 16384;
export const HTTP_DEFAULT_MAX_HEADERS = 100;
/** Longer than any registered method; a bound that lets garbage fail fast. */
export const HTTP_MAX_METHOD_LENGTH = 32;

// One shared object: 'incomplete' is the most frequent answer while bytes trickle in.
const INCOMPLETE: HttpIncomplete = Object.freeze({ status: 'incomplete' as const });

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

// Character classes as one lookup table, so the hot loops do a single load per byte.
const C_TCHAR = 1; // RFC 9110 token characters
const C_TARGET = 2; // request-target: VCHAR except '#'
const C_VALUE = 4; // field-value: VCHAR, SP, HTAB, obs-text
const CLASS = new Uint8Array(256);
for (let c = 0x21; c <= 0x7e; c++) CLASS[c] |= C_TARGET | C_VALUE;
CLASS[0x23] &= ~C_TARGET; // '#': a fragment is never sent (RFC 9112 §3.2)
CLASS[SP] |= C_VALUE;
CLASS[HTAB] |= C_VALUE;
for (let c = 0x80; c <= 0xff; c++) CLASS[c] |= C_VALUE;
for (const ch of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
  CLASS[ch.charCodeAt(0)] |= C_TCHAR;
}

function fail(code: HttpErrorCode, message: string): HttpError {
  return { status: 'error', code, message };
}

/**
 * True if `buf` could be the start of an HTTP/1 request: a method token
 * (at most 32 bytes) followed by a space, or a prefix of that. False for an
 * empty buffer (nothing to judge yet) and for anything parseHttpHead would
 * reject at its first bytes, so the two agree.
 */
export function looksLikeHttp(buf: Buffer): boolean {
  const n = Math.min(buf.length, HTTP_MAX_METHOD_LENGTH + 1);
  if (n === 0) return false;
  for (let i = 0; i < n; i++) {
    const c = buf[i];
    if (c === SP) return i > 0;
    if (!(CLASS[c] & C_TCHAR)) return false;
  }
  return buf.length <= HTTP_MAX_METHOD_LENGTH; // a token so far, no room left for a longer one
}

/**
 * Parse the request head at the start of `buf`. Returns 'incomplete' while
 * more bytes could complete a valid head, 'complete' with the head and its
 * length (through the blank line; bytes after it are body or pipelined data and
 * are ignored), or a coded error as soon as the bytes so far cannot become a
 * valid head. Never throws on input and never reads past opts.maxBytes.
 */
export function parseHttpHead(buf: Buffer, opts?: HttpParseOptions): HttpParseResult {
  const maxBytes = opts?.maxBytes ?? HTTP_DEFAULT_MAX_BYTES;
  const maxHeaders = opts?.maxHeaders ?? HTTP_DEFAULT_MAX_HEADERS;
  // A view, not a copy: every search below stays inside the cap.
  const win = buf.length > maxBytes ? buf.subarray(0, maxBytes) : buf;
  const blank = win.indexOf(CRLFCRLF);
  const complete = blank >= 0;
  // Parse whole lines up to the blank line, or, while incomplete, every line
  // received so far: an error in them is final, so report it now rather than
  // wait for more bytes that cannot help. Errors are judged in stream order
  // (a line's content before its terminator, the method before the rest), so
  // the error reported for a prefix is the one reported for any longer input.
  const linesEnd = complete ? blank + 2 : win.length;
  // Bytes are validated on the Buffer; strings come from one latin1 decode of
  // the lines (latin1 maps byte offsets 1:1 to string offsets), because a
  // Buffer.toString per field costs more than all the rest of the parse.
  // While the request line is still arriving there is nothing to decode.
  const text = complete || win.indexOf(LF) >= 0 ? win.toString('latin1', 0, linesEnd) : '';

  let req: RequestLine | undefined;
  const headers: Array<[string, string]> = [];
  let hostHeader: string | undefined;
  let sawHost = false;
  let pos = 0;
  while (pos < linesEnd) {
    const lf = text.indexOf('\n', pos);
    if (lf < 0) break; // a partial last line (incomplete mode only)
    const crlf = lf > pos && win[lf - 1] === CR;
    const end = crlf ? lf - 1 : lf;
    if (req === undefined) {
      const r = parseRequestLine(win, text, end, lf);
      if ('status' in r) return r;
      if (!crlf) return fail('ERR_HTTP_BAD_REQUEST_LINE', 'request line ends in a bare LF');
      req = r;
    } else {
      if (headers.length === maxHeaders) {
        return fail('ERR_HTTP_TOO_MANY_HEADERS', `more than ${maxHeaders} header lines`);
      }
      const h = parseHeaderLine(win, text, pos, end, headers.length + 1);
      if ('status' in h) return h;
      if (!crlf) return fail('ERR_HTTP_BAD_HEADER', `header line ${headers.length + 1} ends in a bare LF`);
      if (h[0] === 'host') {
        if (sawHost) return fail('ERR_HTTP_DUPLICATE_HOST', 'more than one Host header');
        sawHost = true;
        const host = normaliseAuthority(h[1], false);
        if (host === null) return fail('ERR_HTTP_BAD_HEADER', 'Host is not a valid host[:port]');
        hostHeader = host;
      }
      headers.push(h);
    }
    pos = lf + 1;
  }

  if (!complete) {
    if (req === undefined) {
      const m = scanMethod(win, win.length);
      if (typeof m === 'object') return m;
    }
    // Every byte up to the cap has been seen and no blank line: the head, if it
    // is one, is larger than we are willing to buffer.
    return buf.length >= maxBytes
      ? fail('ERR_HTTP_TOO_LARGE', `no complete request head within ${maxBytes} bytes`)
      : INCOMPLETE;
  }
  if (req === undefined) {
    // Unreachable: a blank line at 0 is an empty request line, rejected above. Kept for the type checker.
    return fail('ERR_HTTP_BAD_REQUEST_LINE', 'no request line');
  }

  const cookies = new Map<string, string>();
  for (const [name, value] of headers) if (name === 'cookie') addCookies(cookies, value);
  const host = req.authority ?? hostHeader;
  const head: HttpRequestHead = {
    method: req.method,
    target: req.target,
    path: req.path,
    version: req.version,
    headers,
    cookies,
  };
  if (host) head.host = host; // '' (an empty Host) means none
  return { status: 'complete', head, headLength: blank + 4 };
}

interface RequestLine {
  method: string;
  target: string;
  path: string;
  version: HttpVersion;
  /** Host from an absolute-form or authority-form target. */
  authority?: string;
}

/**
 * The method at the start of buf[0, avail): the offset of the SP after it,
 * undefined if more bytes are needed, or an error. Used both while the request
 * line is arriving (to fail fast on bytes that cannot start one) and on the
 * whole line (avail then includes its terminator, so "GET\r\n" fails on the
 * CR exactly as the prefix "GET\r" did).
 */
function scanMethod(buf: Buffer, avail: number): number | undefined | HttpError {
  const n = Math.min(avail, HTTP_MAX_METHOD_LENGTH + 1);
  for (let i = 0; i < n; i++) {
    const c = buf[i];
    if (c === SP) return i === 0 ? fail('ERR_HTTP_BAD_REQUEST_LINE', 'request line starts with a space') : i;
    if (!(CLASS[c] & C_TCHAR)) {
      return fail('ERR_HTTP_BAD_REQUEST_LINE', `byte 0x${c.toString(16).padStart(2, '0')} in the method`);
    }
  }
  return avail > HTTP_MAX_METHOD_LENGTH
    ? fail('ERR_HTTP_BAD_REQUEST_LINE', `method longer than ${HTTP_MAX_METHOD_LENGTH} bytes`)
    : undefined;
}

/**
 * method SP request-target SP HTTP-version: the line is buf[0, end), its
 * terminator ends at lf (the request line always starts the stream).
 */
function parseRequestLine(buf: Buffer, text: string, end: number, lf: number): RequestLine | HttpError {
  const sp = scanMethod(buf, lf + 1);
  if (typeof sp === 'object') return sp;
  // Not reachable (the line's LF is a non-token byte), kept for the type checker.
  if (sp === undefined) return fail('ERR_HTTP_BAD_REQUEST_LINE', 'no method');
  const method = text.slice(0, sp);
  let i = sp + 1;
  const tStart = i;
  while (i < end && CLASS[buf[i]] & C_TARGET) i++;
  if (i === tStart) return fail('ERR_HTTP_BAD_REQUEST_LINE', 'empty or invalid request target');
  const target = text.slice(tStart, i);
  if (i === end) return fail('ERR_HTTP_VERSION', 'no HTTP version (HTTP/0.9 is not supported)');
  if (buf[i] !== SP) return fail('ERR_HTTP_BAD_REQUEST_LINE', 'invalid byte in the request target');
  i++;
  // HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3).
  if (
    end - i !== 8 || buf[i] !== 0x48 || buf[i + 1] !== 0x54 || buf[i + 2] !== 0x54 || buf[i + 3] !== 0x50 ||
    buf[i + 4] !== 0x2f || !isDigit(buf[i + 5]) || buf[i + 6] !== 0x2e || !isDigit(buf[i + 7])
  ) {
    return fail('ERR_HTTP_BAD_REQUEST_LINE', 'malformed HTTP version');
  }
  const major = buf[i + 5] - 0x30;
  const minor = buf[i + 7] - 0x30;
  if (major !== 1 || minor > 1) {
    // The HTTP/2 connection preface starts "PRI * HTTP/2.0\r\n\r\n": a prior-knowledge
    // h2 client, worth telling apart from an unsupported version.
    if (major === 2 && minor === 0 && method === 'PRI' && target === '*') {
      return fail('ERR_HTTP2_PREFACE', 'HTTP/2 connection preface (prior knowledge h2c)');
    }
    return fail('ERR_HTTP_VERSION', `unsupported version HTTP/${major}.${minor}`);
  }
  const version: HttpVersion = minor === 1 ? '1.1' : '1.0';
  return classifyTarget(method, target, version);
}

/** The four target forms of RFC 9112 §3.2, each allowed only where it belongs. */
function classifyTarget(method: string, target: string, version: HttpVersion): RequestLine | HttpError {
  if (method === 'CONNECT') {
    // authority-form: host ":" port, port required.
    const colon = target.lastIndexOf(':');
    const authority = normaliseAuthority(target, true);
    if (colon < 0 || colon === target.length - 1 || authority === null || authority === '') {
      return fail('ERR_HTTP_BAD_REQUEST_LINE', 'CONNECT needs a host:port target');
    }
    return { method, target, path: '', version, authority };
  }
  const c0 = target.charCodeAt(0);
  if (c0 === 0x2f /* '/' */) {
    const q = target.indexOf('?');
    return { method, target, path: q < 0 ? target : target.slice(0, q), version };
  }
  if (target === '*') {
    if (method !== 'OPTIONS') return fail('ERR_HTTP_BAD_REQUEST_LINE', "'*' target is only for OPTIONS");
    return { method, target, path: '*', version };
  }
  // absolute-form: only http(s), and no userinfo: "http://good@evil/" reads
  // differently to different parsers and has no legitimate use in a request.
  const m = /^(https?):\/\/([^/?]*)(.*)$/i.exec(target);
  if (!m) return fail('ERR_HTTP_BAD_REQUEST_LINE', 'target is not origin-form or an http(s) absolute URI');
  const authority = normaliseAuthority(m[2], false);
  if (authority === null || authority === '') {
    return fail('ERR_HTTP_BAD_REQUEST_LINE', 'absolute URI with an empty or invalid authority');
  }
  const rest = m[3];
  const q = rest.indexOf('?');
  const p = q < 0 ? rest : rest.slice(0, q);
  return { method, target, path: p === '' ? '/' : p, version, authority };
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

// uri-host [":" port] (RFC 3986): an IP-literal in brackets, or a reg-name /
// IPv4address (unreserved, pct-encoded, sub-delims). No userinfo.
const REG_NAME = /^[A-Za-z0-9\-._~!$&'()*+,;=%]*$/;
const IP_LITERAL = /^\[[0-9A-Fa-f:.]+\]$/;

/**
 * The lowercase host of an authority, without port or trailing dot; '' for an
 * empty one; null if invalid. `portRequired` for CONNECT's authority-form.
 */
function normaliseAuthority(a: string, portRequired: boolean): string | null {
  let host = a;
  let port: string | undefined;
  if (a.charCodeAt(0) === 0x5b /* '[' */) {
    const close = a.indexOf(']');
    if (close < 0) return null;
    host = a.slice(0, close + 1);
    if (!IP_LITERAL.test(host)) return null;
    if (close + 1 < a.length) {
      if (a.charCodeAt(close + 1) !== 0x3a) return null;
      port = a.slice(close + 2);
    }
  } else {
    const colon = a.indexOf(':');
    if (colon >= 0) {
      host = a.slice(0, colon);
      port = a.slice(colon + 1);
    }
    if (!REG_NAME.test(host)) return null;
    // A single trailing dot names the same host; strip it so 'a.test.' cannot
    // route differently from 'a.test'.
    if (host.length > 1 && host.charCodeAt(host.length - 1) === 0x2e) host = host.slice(0, -1);
  }
  if (port !== undefined) {
    // RFC 3986 allows an empty port ("host:"); anything else must be 0..65535.
    if (port.length > 5 || !/^[0-9]*$/.test(port) || (port !== '' && Number(port) > 65535)) return null;
  } else if (portRequired) {
    return null;
  }
  return host.toLowerCase();
}

/** field-name ":" OWS field-value OWS, on buf[start, end). */
function parseHeaderLine(buf: Buffer, text: string, start: number, end: number, lineNo: number): [string, string] | HttpError {
  const c0 = buf[start];
  if (c0 === SP || c0 === HTAB) {
    return fail('ERR_HTTP_BAD_HEADER', `header line ${lineNo} is an obs-fold continuation`);
  }
  let i = start;
  while (i < end && CLASS[buf[i]] & C_TCHAR) i++;
  if (i === start) return fail('ERR_HTTP_BAD_HEADER', `header line ${lineNo} has no field name`);
  if (i === end || buf[i] !== COLON) {
    const c = buf[i];
    const what = i === end ? 'no colon' : c === SP || c === HTAB ? 'whitespace before the colon' : 'an invalid byte in the name';
    return fail('ERR_HTTP_BAD_HEADER', `header line ${lineNo} has ${what}`);
  }
  const name = text.slice(start, i).toLowerCase();
  let vs = i + 1;
  let ve = end;
  while (vs < ve && (buf[vs] === SP || buf[vs] === HTAB)) vs++;
  while (ve > vs && (buf[ve - 1] === SP || buf[ve - 1] === HTAB)) ve--;
  for (let j = vs; j < ve; j++) {
    if (!(CLASS[buf[j]] & C_VALUE)) {
      return fail('ERR_HTTP_BAD_HEADER', `header line ${lineNo} has a control byte in its value`);
    }
  }
  return [name, text.slice(vs, ve)];
}

/**
 * cookie-string = cookie-pair *( ";" SP cookie-pair ), parsed leniently (the
 * backend, not the router, owns cookie semantics): pairs without '=' or a name
 * are skipped, names and values are trimmed of SP/HTAB, quotes are kept.
 * Index arithmetic instead of split/trim: this runs on every request with cookies.
 */
function addCookies(into: Map<string, string>, value: string): void {
  const n = value.length;
  for (let p = 0; p < n;) {
    let semi = value.indexOf(';', p);
    if (semi < 0) semi = n;
    const eq = value.indexOf('=', p);
    if (eq >= 0 && eq < semi) {
      const [ns, ne] = trimRange(value, p, eq);
      if (ne > ns) {
        const name = value.slice(ns, ne);
        if (!into.has(name)) {
          const [vs, ve] = trimRange(value, eq + 1, semi);
          into.set(name, value.slice(vs, ve));
        }
      }
    }
    p = semi + 1;
  }
}

function trimRange(s: string, start: number, end: number): [number, number] {
  while (start < end && (s.charCodeAt(start) === SP || s.charCodeAt(start) === HTAB)) start++;
  while (end > start && (s.charCodeAt(end - 1) === SP || s.charCodeAt(end - 1) === HTAB)) end--;
  return [start, end];
}
