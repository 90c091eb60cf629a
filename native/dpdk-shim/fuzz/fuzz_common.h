/* SPDX-License-Identifier: MIT
 * Shared helpers of the libFuzzer targets (fuzz_*.c): a property that fails
 * aborts with its text, which libFuzzer reports as a crash and saves the input.
 */
#ifndef HS_FUZZ_COMMON_H
#define HS_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond, ...)                                                          \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                  \
			fprintf(stderr, "\n");                                         \
			abort();                                                       \
		}                                                                      \
	} while (0)

/* Reads fixed-size fields off the front of the input; zeros once it runs out,
 * so every input, however short, is a valid test case. */
struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline uint32_t fuzz_u(struct fuzz_in *in, unsigned bytes)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < bytes; i++) {
		v <<= 8;
		if (in->n) {
			v |= *in->p++;
			in->n--;
		}
	}
	return v;
}

/* An exact-size heap copy: a read or write one byte past the end is caught by
 * ASan (libFuzzer's own buffer may have slack after it). */
static inline uint8_t *fuzz_dup(const uint8_t *p, size_t n)
{
	uint8_t *d = malloc(n ? n : 1);
	if (!d)
		abort();
	if (n)
		memcpy(d, p, n);
	return d;
}

/* Ones-complement sum of @p n bytes, independent of DPDK's (a checker must
 * not share code with what it checks). */
static inline uint32_t fuzz_sum16(const uint8_t *p, size_t n, uint32_t sum)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

static inline uint16_t fuzz_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

#endif
