import { constants } from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) errnoNames.set(value, name);

/** Error codes raised by the offload layer besides errno names from the shim. */
export type OffloadErrorCode =
  | 'ERR_SHIM_NOT_FOUND'
  | 'ERR_SHIM_ABI_MISMATCH'
  | 'ERR_SHIM_NOT_RUNNING'
  | 'ERR_SHIM_INVALID_ARGUMENT';

/**
 * A failure reported by the shim (`code` is the errno name such as 'EINVAL',
 * `errno` the positive number) or by the binding itself (`code` ERR_SHIM_*).
 */
export class ShimError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly op: string;

  constructor(op: string, code: string, message: string, errno = 0) {
    super(`${op}: ${message}`);
    this.name = 'ShimError';
    this.op = op;
    this.code = code;
    this.errno = errno;
  }

  /** Build from a shim return value (-errno) and its last-error string. */
  static fromReturn(op: string, rc: number, lastError: string): ShimError {
    const errno = -rc;
    const code = errnoNames.get(errno) ?? `E${errno}`;
    return new ShimError(op, code, lastError || code, errno);
  }
}
