/* SPDX-License-Identifier: MIT
 * SipHash-2-4 (Aumasson, Bernstein): the keyed hash behind SYN cookies, as in
 * Linux. Pure.
 */
#ifndef HS_SIPHASH_H
#define HS_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hs_siphash(const uint64_t key[2], const void *data, size_t len);

#endif
