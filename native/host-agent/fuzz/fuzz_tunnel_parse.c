/* SPDX-License-Identifier: MIT
 * libFuzzer target: the tunnel check's inner packet parser hh_parse_inner
 * (hh_tunnel_prog.h), the same source the tc classifier runs with direct
 * packet access (bpf/tunnel.bpf.c). Input: the inner Ethernet frame.
 *
 * Properties beyond "no crash, no read outside the frame (exact-size heap
 * copy under ASan), no UB":
 *  - the verdict equals an independent reference parser's (offsets against
 *    the length instead of pointers against an end);
 *  - an accepted frame's key is the frame's inner source / destination
 *    address and ports, byte for byte, and the VNI is left alone;
 *  - a refusal writes nothing into the key.
 *
 *   make -C native/host-agent fuzz
 *   native/host-agent/build-fuzz/fuzz_tunnel_parse -max_total_time=20
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hh_tunnel_prog.h"

#define CHECK(cond, ...)                                                                      \
	do {                                                                                  \
		if (!(cond)) {                                                                \
			fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                         \
			fprintf(stderr, "\n");                                                \
			abort();                                                              \
		}                                                                             \
	} while (0)

static int reference(const uint8_t *f, size_t n)
{
	if (n < 14 + 20)
		return HH_PARSE_SHORT;
	if ((f[12] << 8 | f[13]) != 0x0800)
		return HH_PARSE_BAD;
	size_t version = f[14] >> 4, ihl = (size_t)(f[14] & 15) * 4;
	if (version != 4 || ihl < 20 || f[14 + 9] != 6)
		return HH_PARSE_BAD;
	if ((f[14 + 6] << 8 | f[14 + 7]) & 0x3fff)
		return HH_PARSE_BAD;
	if (14 + ihl + 20 > n)
		return HH_PARSE_SHORT;
	if ((f[14 + ihl + 12] >> 4) < 5)
		return HH_PARSE_BAD;
	return HH_PARSE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *f = malloc(size ? size : 1);
	if (!f)
		abort();
	memcpy(f, data, size);

	struct hh_flow_key k, blank;
	memset(&k, 0xa5, sizeof(k));
	memcpy(&blank, &k, sizeof(k));
	int r = hh_parse_inner(f, f + size, &k);
	int want = reference(f, size);
	CHECK(r == want, "parser %d, reference %d, %zu bytes", r, want, size);
	CHECK(k.vni == blank.vni, "vni touched");
	if (r == HH_PARSE_OK) {
		size_t th = 14 + (size_t)(f[14] & 15) * 4;
		CHECK(!memcmp(&k.client_ip, f + 14 + 12, 4), "client address");
		CHECK(!memcmp(&k.vip, f + 14 + 16, 4), "VIP");
		CHECK(!memcmp(&k.client_port, f + th, 2), "client port");
		CHECK(!memcmp(&k.vip_port, f + th + 2, 2), "VIP port");
	} else {
		CHECK(!memcmp(&k, &blank, sizeof(k)), "a refusal wrote into the key");
	}
	free(f);
	return 0;
}
