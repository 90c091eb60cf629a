/* SPDX-License-Identifier: MIT
 * Internal helpers shared by the shim's stages.
 */
#ifndef HS_COMMON_H
#define HS_COMMON_H

#include <stdint.h>
#include <rte_branch_prediction.h>

/** Record the reason for a failure; returns @p err (a -errno) for chaining. */
int hs_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** Write one byte to the wake-up pipe (a parked control thread wakes). */
void hs_exc_signal(void);

#endif
