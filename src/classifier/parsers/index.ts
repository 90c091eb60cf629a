// Classification parsers: the first bytes of a connection in, a routing-ready
// description (or a coded reason to refuse) out. See each module's header.
export {
  parseHttpHead, looksLikeHttp,
  HTTP_DEFAULT_MAX_BYTES, HTTP_DEFAULT_MAX_HEADERS, HTTP_MAX_METHOD_LENGTH,
} from './http';
export type {
  HttpParseOptions, HttpParseResult, HttpRequestHead, HttpVersion, HttpErrorCode,
  HttpIncomplete, HttpComplete, HttpError,
} from './http';
export { parseClientHello, looksLikeTls, isGrease, TLS_DEFAULT_MAX_BYTES } from './tls';
export type {
  TlsParseOptions, TlsParseResult, ClientHelloInfo, TlsErrorCode, TlsIncomplete, TlsComplete, TlsError,
} from './tls';
