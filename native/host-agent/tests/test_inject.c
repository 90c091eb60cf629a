/* SPDX-License-Identifier: MIT
 * Unit tests of the injection stage (hh_inject.c): the values its steps pass
 * to the kernel, its argument checks and, as root, real injections in a
 * network namespace of its own (unshare): the received bytes come out of the
 * socket, the same 4-tuple twice and a refused window scale fail with the
 * step, the option and the errno, with no descriptor left open.
 * Prints TAP; exit status 1 when any check fails.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handoff_host.h"
#include "hh_inject.h"

static int n_test, n_fail;

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		n_test++;                                                       \
		if (cond) {                                                     \
			printf("ok %d - ", n_test);                             \
		} else {                                                        \
			n_fail++;                                               \
			printf("not ok %d - ", n_test);                         \
		}                                                               \
		printf(__VA_ARGS__);                                            \
		printf("\n");                                                   \
	} while (0)

static struct hh_conn sample(uint16_t client_port, uint32_t data_len)
{
	struct hh_conn c = { 0 };
	c.client_ip = htonl(INADDR_LOOPBACK);
	c.vip = htonl(INADDR_LOOPBACK);
	c.client_port = htons(client_port);
	c.vip_port = htons(8080);
	c.iss = 0xfffffff0u;
	c.snd_nxt = c.iss + 1;
	c.irs = 0xffffff00u; /* rcv_nxt wraps past 0 with the data */
	c.rcv_nxt = c.irs + 1 + data_len;
	c.snd_wnd = 65535 << 2;
	c.rcv_wnd = 65535;
	c.ts_value = 1000;
	c.mss = 1460;
	c.snd_wscale = 7;
	c.rcv_wscale = 7;
	c.sack_ok = 1;
	c.ts_ok = 1;
	c.flags = HH_INJECT_NO_WINDOW_PROBE | HH_INJECT_REUSEADDR;
	return c;
}

static void test_pure(void)
{
	CHECK(hh_inject_maxseg(48) == 0, "TCP_MAXSEG: an MSS below 88 is not set");
	CHECK(hh_inject_maxseg(88) == 88 && hh_inject_maxseg(1460) == 1460, "TCP_MAXSEG: 88..32767 as is");
	CHECK(hh_inject_maxseg(65535) == 32767, "TCP_MAXSEG: capped at 32767");

	struct hh_conn c = sample(1, 0);
	struct tcp_repair_opt o[HH_REPAIR_OPTS_MAX];
	unsigned n = hh_inject_repair_opts(&c, o);
	CHECK(n == 4 && o[0].opt_code == TCPOPT_MAXSEG && o[0].opt_val == 1460 && o[1].opt_code == TCPOPT_WINDOW &&
		      o[1].opt_val == (7u | 7u << 16) && o[2].opt_code == TCPOPT_SACK_PERMITTED && o[2].opt_val == 0 &&
		      o[3].opt_code == TCPOPT_TIMESTAMP && o[3].opt_val == 0,
	      "repair options: MSS, WINDOW snd | rcv << 16, SACK_PERM 0, TIMESTAMP 0");
	c.sack_ok = c.ts_ok = 0;
	c.snd_wscale = c.rcv_wscale = 0;
	n = hh_inject_repair_opts(&c, o);
	CHECK(n == 2 && o[1].opt_code == TCPOPT_WINDOW && o[1].opt_val == 0,
	      "repair options without SACK/TS/scaling: MSS and WINDOW 0/0 (always sent)");

	c = sample(1, 0x200);
	struct tcp_repair_window w;
	hh_inject_repair_window(&c, &w);
	CHECK(w.snd_wl1 == c.rcv_nxt - 1 && w.snd_wnd == c.snd_wnd && w.max_window == c.snd_wnd &&
		      w.rcv_wnd == c.rcv_wnd && w.rcv_wup == c.rcv_nxt,
	      "repair window: snd_wl1 = rcv_nxt - 1, max_window = snd_wnd, rcv_wup = rcv_nxt (wrapped: %u)", c.rcv_nxt);
}

static void test_refused(void)
{
	struct hh_inject_failure f;
	memset(&f, 0xff, sizeof(f));
	CHECK(hh_inject(NULL, NULL, 0, &f) == -EINVAL && f.step == HH_STEP_NONE && strstr(hh_last_error(), "NULL"),
	      "NULL conn: -EINVAL, step NONE (%s)", hh_last_error());
	struct hh_conn c = sample(1, 3);
	CHECK(hh_inject(&c, NULL, 3, &f) == -EINVAL, "NULL data with a length: -EINVAL (%s)", hh_last_error());
	CHECK(hh_inject(&c, "abcd", 4, NULL) == -EINVAL && strstr(hh_last_error(), "rcv_nxt"),
	      "rcv_nxt != irs + 1 + len: -EINVAL (%s)", hh_last_error());
	c = sample(1, 0);
	c.snd_nxt++;
	CHECK(hh_inject(&c, NULL, 0, &f) == -EINVAL && strstr(hh_last_error(), "snd_nxt"),
	      "snd_nxt != iss + 1: -EINVAL (%s)", hh_last_error());
	c = sample(1, 0);
	c.flags = 0x40;
	CHECK(hh_inject(&c, NULL, 0, &f) == -EINVAL && strstr(hh_last_error(), "flags"),
	      "unknown flags: -EINVAL (%s)", hh_last_error());
}

/* The lowest free descriptor: equal before and after means nothing was left open. */
static int next_fd(void)
{
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	close(fd);
	return fd;
}

static int getint(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);
	getsockopt(fd, level, opt, &v, &len);
	return v;
}

static void test_kernel(void)
{
	if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0) {
		printf("ok %d - real injections # SKIP needs root (unshare CLONE_NEWNET)\n", ++n_test);
		return;
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, "lo");
	ioctl(s, SIOCGIFFLAGS, &ifr);
	ifr.ifr_flags |= IFF_UP;
	CHECK(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "lo up in a new network namespace");
	close(s);

	/* Several skbs of data (one send() takes at most ~68 KiB). */
	const uint32_t len = 300 * 1024;
	uint8_t *data = malloc(len), *back = malloc(len + 1);
	for (uint32_t i = 0; i < len; i++)
		data[i] = (uint8_t)(i * 7 + (i >> 9));
	struct hh_conn c = sample(40000, len);
	struct hh_inject_failure f;
	int free_fd = next_fd();
	int fd = hh_inject(&c, data, len, &f);
	CHECK(fd >= 0, "inject with %u bytes of data: fd %d (%s)", len, fd, fd < 0 ? hh_last_error() : "");
	if (fd >= 0) {
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);
		CHECK(getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state == 1, "ESTABLISHED");
		CHECK(getint(fd, SOL_SOCKET, SO_REUSEADDR) == 1 && getint(fd, SOL_SOCKET, SO_REUSEPORT) == 0,
		      "SO_REUSEADDR on, SO_REUSEPORT off (flags)");
		CHECK(getint(fd, SOL_TCP, TCP_REPAIR) == 0, "left repair mode");
		CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, "close-on-exec");
		uint32_t got = 0;
		for (;;) {
			ssize_t r = recv(fd, back + got, len + 1 - got, MSG_DONTWAIT);
			if (r <= 0)
				break;
			got += (uint32_t)r;
		}
		CHECK(got == len && memcmp(back, data, len) == 0, "the application reads the %u bytes, in order (%u)", len,
		      got);

		int before = next_fd();
		int rc = hh_inject(&c, data, len, &f);
		CHECK(rc == -EADDRNOTAVAIL && f.step == HH_STEP_CONNECT && f.err == EADDRNOTAVAIL,
		      "the same 4-tuple twice: -EADDRNOTAVAIL at connect (%d, step %d)", rc, f.step);
		CHECK(strstr(hh_last_error(), "127.0.0.1:40000 -> 127.0.0.1:8080: connect in repair mode") != NULL,
		      "last error: %s", hh_last_error());
		CHECK(next_fd() == before, "nothing left open");

		struct hh_conn bad = sample(40001, 0);
		bad.snd_wscale = 15;
		rc = hh_inject(&bad, NULL, 0, &f);
		CHECK(rc == -EFBIG && f.step == HH_STEP_SETSOCKOPT && f.level == SOL_TCP &&
			      f.optname == TCP_REPAIR_OPTIONS && f.err == EFBIG && f.optval == 0,
		      "window scale 15: -EFBIG at setsockopt TCP_REPAIR_OPTIONS (%s)", hh_last_error());
		CHECK(next_fd() == before, "nothing left open");
		close(fd);
	}
	CHECK(next_fd() == free_fd, "no descriptor left after all of it");
	free(data);
	free(back);
}

int main(void)
{
	printf("TAP version 13\n");
	test_pure();
	test_refused();
	test_kernel();
	printf("1..%d\n", n_test);
	return n_fail ? 1 : 0;
}
