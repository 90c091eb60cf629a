/* SPDX-License-Identifier: MIT
 * Internal helpers shared by the host library's stages.
 */
#ifndef HH_COMMON_H
#define HH_COMMON_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/** Record the reason for a failure (thread-local); returns @p err (a -errno) for chaining. */
int hh_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
