/* SPDX-License-Identifier: MIT
 * The last error, per thread: every public function that fails returns
 * -errno and leaves a sentence here (hh_last_error).
 */
#include <stdarg.h>
#include <stdio.h>

#include "handoff_host.h"
#include "hh_common.h"

static __thread char last_error[512];

int hh_fail(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

const char *hh_last_error(void) { return last_error; }

uint32_t hh_abi_version(void) { return HH_ABI_VERSION; }
