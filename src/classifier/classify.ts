import { looksLikeHttp, looksLikeTls, parseClientHello, parseHttpHead } from './parsers';
import type { RequestInfo } from './request-info';

export type ClassifyResult =
  | { status: 'incomplete' }
  | { status: 'decided'; info: RequestInfo }
  | { status: 'undecidable'; reason: string; info: RequestInfo };

export interface ClassifyOptions {
  /** Give up deciding after this many bytes. Default 16384. */
  byteCap?: number;
}

/**
 * Decide what a connection's first bytes are: an HTTP/1.x request head, a TLS
 * ClientHello, or neither. `base` carries the addresses.
 */
export function classifyBytes(buf: Buffer, base: RequestInfo, opts: ClassifyOptions = {}): ClassifyResult {
  const cap = opts.byteCap ?? 16384;
  if (buf.length === 0) return { status: 'incomplete' };
  if (looksLikeTls(buf)) {
    const r = parseClientHello(buf, { maxBytes: Math.max(cap, 16384) });
    if (r.status === 'incomplete') return { status: 'incomplete' };
    if (r.status === 'error') return { status: 'undecidable', reason: r.code, info: { ...base, kind: 'tls' } };
    return { status: 'decided', info: { ...base, kind: 'tls', sni: r.hello.sni, alpn: r.hello.alpn } };
  }
  if (looksLikeHttp(buf)) {
    const r = parseHttpHead(buf, { maxBytes: cap });
    if (r.status === 'incomplete') return { status: 'incomplete' };
    if (r.status === 'error') return { status: 'undecidable', reason: r.code, info: { ...base, kind: 'http' } };
    const h = r.head;
    return { status: 'decided', info: { ...base, kind: 'http', method: h.method, path: h.path, host: h.host,
      headers: h.headers, cookies: h.cookies, lastRequest: isLastRequest(h.version, h.headers) } };
  }
  return { status: 'undecidable', reason: 'neither HTTP/1.x nor TLS', info: { ...base, kind: 'unknown' } };
}

/**
 * Whether a request is its connection's last (RFC 9112 §9.3, §9.6): a
 * `close` connection option, or HTTP/1.0 without `keep-alive`. A server
 * closes after answering it, so no later request can need another host.
 */
export function isLastRequest(version: '1.0' | '1.1', headers: ReadonlyArray<readonly [string, string]>): boolean {
  let keepAlive = false;
  for (const [name, value] of headers) {
    if (name !== 'connection') continue;
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase();
      if (t === 'close') return true;
      if (t === 'keep-alive') keepAlive = true;
    }
  }
  return version === '1.0' && !keepAlive;
}
