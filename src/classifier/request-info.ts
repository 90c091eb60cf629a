// What the HTTP/TLS parsers learned from a connection's first bytes: the one
// shape the parsers produce and the router consumes. Shared by both sides, so
// change it only together with them.

export interface RequestInfo {
  vip: string; vipPort: number; clientIp: string; clientPort: number;
  kind: 'http' | 'tls' | 'unknown';
  method?: string; path?: string; host?: string;           // http (host lowercase, no port)
  headers?: ReadonlyArray<readonly [string, string]>;     // http, names lowercase
  cookies?: ReadonlyMap<string, string>;                   // http
  /** http: the client said no request follows on this connection (`Connection: close`, or HTTP/1.0 without keep-alive). */
  lastRequest?: boolean;
  sni?: string; alpn?: readonly string[];                 // tls (sni lowercase)
}
