// HTTP/1.x message framing for per-request routing (issue 15): where each
// request on a connection ends and the next begins, and when the responses
// to the requests passed so far are complete. Streaming: bytes arrive in any
// pieces. Bodies are framed by Content-Length or chunked encoding (RFC 9112
// §6); nothing is parsed beyond what framing needs.

const CRLF2 = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);
/** Longest chunk-size line or trailer line accepted. */
const MAX_LINE = 4096;
/** Longest response head accepted. */
export const MAX_HEAD_BYTES = 65536;

export type BodyFraming = { kind: 'none' } | { kind: 'length'; n: number } | { kind: 'chunked' } | { kind: 'close' };

/**
 * A message body's framing from its head's headers (names lowercase).
 * @returns null when the head is malformed for framing (two lengths that
 *          differ, a negative or non-numeric length, an unknown coding)
 */
export function bodyFraming(headers: ReadonlyArray<readonly [string, string]>, isRequest: boolean): BodyFraming | null {
  let te: string | undefined;
  let len: string | undefined;
  for (const [k, v] of headers) {
    if (k === 'transfer-encoding') te = te === undefined ? v : `${te},${v}`;
    else if (k === 'content-length') {
      if (len !== undefined && len !== v.trim()) return null;
      len = v.trim();
    }
  }
  if (te !== undefined) {
    const codings = te.split(',').map((c) => c.trim().toLowerCase()).filter(Boolean);
    if (codings.at(-1) === 'chunked') return { kind: 'chunked' };
    // A request whose last coding is not chunked cannot be framed (RFC 9112 §6.3); a response reads to close.
    return isRequest ? null : { kind: 'close' };
  }
  if (len !== undefined) {
    if (!/^[0-9]{1,15}$/.test(len)) return null;
    const n = Number(len);
    return n === 0 ? { kind: 'none' } : { kind: 'length', n };
  }
  return isRequest ? { kind: 'none' } : { kind: 'close' };
}

/** Consumes one message body, in pieces. */
export class BodyReader {
  done = false;
  /** The framing is broken (a bad chunk size): the connection cannot be framed any further. */
  failed = false;
  private remaining = 0;
  private readonly chunked: boolean;
  private state: 'data' | 'size' | 'data-crlf' | 'trailer' | 'close' = 'data';
  private line = '';

  constructor(framing: BodyFraming) {
    this.chunked = framing.kind === 'chunked';
    switch (framing.kind) {
      case 'none': this.done = true; break;
      case 'length': this.remaining = framing.n; break;
      case 'chunked': this.state = 'size'; break;
      case 'close': this.state = 'close'; break;
    }
  }

  /** Take body bytes from buf[off..]. @returns how many belong to this body (all of them until done). */
  consume(buf: Buffer, off: number): number {
    let i = off;
    while (i < buf.length && !this.done && !this.failed) {
      if (this.state === 'close') return buf.length - off;
      if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - i);
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) {
          if (this.chunked) this.state = 'data-crlf';
          else this.done = true;
        }
        continue;
      }
      // A line: chunk size, the CRLF after a chunk's data, or a trailer.
      const nl = buf.indexOf(10, i);
      const end = nl < 0 ? buf.length : nl + 1;
      this.line += buf.toString('latin1', i, end);
      i = end;
      if (this.line.length > MAX_LINE) { this.failed = true; break; }
      if (nl < 0) break;
      const text = this.line.replace(/\r?\n$/, '');
      this.line = '';
      if (this.state === 'data-crlf') {
        if (text !== '') this.failed = true;
        else this.state = 'size';
      } else if (this.state === 'size') {
        const m = /^([0-9A-Fa-f]{1,12})[ \t]*(;.*)?$/.exec(text);
        if (!m) { this.failed = true; break; }
        const n = parseInt(m[1], 16);
        if (n === 0) this.state = 'trailer';
        else { this.remaining = n; this.state = 'data'; }
      } else if (text === '') {
        this.done = true;
      }
    }
    return i - off;
  }
}

/** The end of a message head (index after CRLFCRLF) in buf, or -1. */
export function headEnd(buf: Buffer, from = 0): number {
  const i = buf.indexOf(CRLF2, from);
  return i < 0 ? -1 : i + 4;
}

/**
 * Counts the responses an application writes, in order, to the requests
 * passed to it (their methods, for HEAD). A 1xx other than 101 is interim.
 * `unframed` once a response cannot be framed (read-to-close, a 101 switch,
 * a broken head): from then on nothing on the connection is per request.
 */
export class ResponseCounter {
  completed = 0;
  unframed = false;
  private readonly methods: string[] = [];
  private head: Buffer = EMPTY;
  private body: BodyReader | undefined;

  /** A request was passed to the application. */
  expect(method: string): void {
    this.methods.push(method);
  }

  /** Responses still owed. */
  get outstanding(): number {
    return this.methods.length;
  }

  /** Bytes the application wrote. */
  feed(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && !this.unframed) {
      if (this.body) {
        off += this.body.consume(chunk, off);
        if (this.body.failed) return void (this.unframed = true);
        if (this.body.done) {
          this.body = undefined;
          this.completed++;
          this.methods.shift();
        }
        continue;
      }
      // In a head: it may arrive in any pieces, so search what is held so far.
      const before = this.head.length;
      this.head = before ? Buffer.concat([this.head, chunk.subarray(off)]) : chunk.subarray(off);
      const e = headEnd(this.head, Math.max(0, before - 3));
      if (e < 0) {
        if (this.head.length > MAX_HEAD_BYTES) this.unframed = true;
        this.head = Buffer.from(this.head); // not a view of the caller's chunk
        return;
      }
      off += e - before;
      const text = this.head.toString('latin1', 0, e);
      this.head = EMPTY;
      this.onHead(text);
    }
  }

  private onHead(text: string): void {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.[01] ([0-9]{3})/.exec(lines[0]);
    if (!m) return void (this.unframed = true);
    const status = Number(m[1]);
    if (status === 101) return void (this.unframed = true);
    if (status >= 100 && status < 200) return; // interim: the final response follows
    const headers: Array<[string, string]> = [];
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      if (c > 0) headers.push([l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim()]);
    }
    const method = this.methods[0];
    const framing: BodyFraming | null = method === 'HEAD' || status === 204 || status === 304
      ? { kind: 'none' } : bodyFraming(headers, false);
    if (!framing || framing.kind === 'close') return void (this.unframed = true);
    this.body = new BodyReader(framing);
    if (this.body.done) {
      this.body = undefined;
      this.completed++;
      this.methods.shift();
    }
  }
}
