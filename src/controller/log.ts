import pino, { type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  /** Least severe level written. Default 'info', or HANDOFF_LOG_LEVEL when set. */
  level?: string;
  /** `service` field of every line, e.g. 'handoff-lb'. */
  service: string;
  /** Where lines go. Default stdout (fd 1), written synchronously so nothing is lost at exit. */
  destination?: pino.DestinationStream;
}

/**
 * Keys whose values never reach a log line: the cluster key in any form, and
 * client payloads (a request head may carry credentials). Matched at the top
 * level and one object down; callers log counts and lengths, not bytes.
 */
export const REDACTED_KEYS = ['clusterKey', 'key', 'secret', 'data', 'payload', 'body', 'headers', 'blob'];

const redactPaths = REDACTED_KEYS.flatMap((k) => [k, `*.${k}`]);

/** Structured JSON logs (pino): one object per line with level, time, service and msg. */
export function createLogger(o: LoggerOptions): Logger {
  return pino({
    level: o.level ?? process.env.HANDOFF_LOG_LEVEL ?? 'info',
    base: { service: o.service, pid: process.pid },
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  }, o.destination ?? pino.destination({ dest: 1, sync: true }));
}
