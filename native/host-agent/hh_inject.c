/* SPDX-License-Identifier: MIT
 * Connection injection with TCP_REPAIR in one call (hh_inject). The
 * sequence and every step's reason are in src/host/repair.ts, which is the
 * spec; the step numbers below are its numbers.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "handoff_host.h"
#include "hh_common.h"
#include "hh_inject.h"

#define HH_INJECT_FLAGS_ALL \
	(HH_INJECT_TRANSPARENT | HH_INJECT_NO_WINDOW_PROBE | HH_INJECT_REUSEADDR | HH_INJECT_REUSEPORT)

uint32_t hh_inject_maxseg(uint16_t mss)
{
	if (mss < HH_TCP_MIN_MSS)
		return 0;
	return mss > HH_TCP_MAX_MAXSEG ? HH_TCP_MAX_MAXSEG : mss;
}

unsigned hh_inject_repair_opts(const struct hh_conn *c, struct tcp_repair_opt out[HH_REPAIR_OPTS_MAX])
{
	unsigned n = 0;
	out[n].opt_code = TCPOPT_MAXSEG;
	out[n++].opt_val = c->mss;
	/* Always, also 0/0: tcp_connect_init() chose its own rcv_wscale. */
	out[n].opt_code = TCPOPT_WINDOW;
	out[n++].opt_val = (uint32_t)c->snd_wscale | (uint32_t)c->rcv_wscale << 16;
	if (c->sack_ok) {
		out[n].opt_code = TCPOPT_SACK_PERMITTED;
		out[n++].opt_val = 0;
	}
	if (c->ts_ok) {
		out[n].opt_code = TCPOPT_TIMESTAMP;
		out[n++].opt_val = 0; /* the kernel refuses any other value */
	}
	return n;
}

void hh_inject_repair_window(const struct hh_conn *c, struct tcp_repair_window *out)
{
	out->snd_wl1 = c->rcv_nxt - 1;
	out->snd_wnd = c->snd_wnd;
	out->max_window = c->snd_wnd;
	out->rcv_wnd = c->rcv_wnd;
	out->rcv_wup = c->rcv_nxt;
}

static const char *option_name(int level, int optname)
{
	if (level == SOL_TCP) {
		switch (optname) {
		case TCP_MAXSEG: return "TCP_MAXSEG";
		case TCP_REPAIR: return "TCP_REPAIR";
		case TCP_REPAIR_QUEUE: return "TCP_REPAIR_QUEUE";
		case TCP_QUEUE_SEQ: return "TCP_QUEUE_SEQ";
		case TCP_REPAIR_OPTIONS: return "TCP_REPAIR_OPTIONS";
		case TCP_TIMESTAMP: return "TCP_TIMESTAMP";
		case TCP_REPAIR_WINDOW: return "TCP_REPAIR_WINDOW";
		}
	} else if (level == SOL_IP) {
		if (optname == IP_FREEBIND)
			return "IP_FREEBIND";
		if (optname == IP_TRANSPARENT)
			return "IP_TRANSPARENT";
	} else if (level == SOL_SOCKET) {
		if (optname == SO_REUSEADDR)
			return "SO_REUSEADDR";
		if (optname == SO_REUSEPORT)
			return "SO_REUSEPORT";
	}
	return "option";
}

/* One injection's state while it runs: the socket and where to report. */
struct job {
	const struct hh_conn *c;
	struct hh_inject_failure *fail;
	int fd;
};

/* Close the socket (keeping errno), fill in the failure, leave the sentence. */
static int job_fail(struct job *j, enum hh_inject_step step, int err, int level, int optname, int optval,
		    uint32_t queued, const char *what)
{
	char client[INET_ADDRSTRLEN] = "?", vip[INET_ADDRSTRLEN] = "?";
	if (j->fd >= 0)
		close(j->fd);
	j->fd = -1;
	if (j->fail) {
		j->fail->step = step;
		j->fail->err = err;
		j->fail->level = level;
		j->fail->optname = optname;
		j->fail->optval = optval;
		j->fail->queued = queued;
	}
	inet_ntop(AF_INET, &j->c->client_ip, client, sizeof(client));
	inet_ntop(AF_INET, &j->c->vip, vip, sizeof(vip));
	return hh_fail(err ? -err : -EIO, "inject %s:%u -> %s:%u: %s%s%s", client, ntohs(j->c->client_port), vip,
		       ntohs(j->c->vip_port), what, err ? ": " : "", err ? strerror(err) : "");
}

static inline int set_opt(struct job *j, int level, int optname, const void *val, socklen_t len, int optval)
{
	if (likely(setsockopt(j->fd, level, optname, val, len) == 0))
		return 0;
	char what[48];
	snprintf(what, sizeof(what), "setsockopt %s", option_name(level, optname));
	return job_fail(j, HH_STEP_SETSOCKOPT, errno, level, optname, optval, 0, what);
}

static inline int set_int(struct job *j, int level, int optname, int val)
{
	return set_opt(j, level, optname, &val, sizeof(val), val);
}

int hh_inject(const struct hh_conn *c, const void *data, size_t len, struct hh_inject_failure *fail)
{
	if (fail)
		memset(fail, 0, sizeof(*fail));
	if (unlikely(!c))
		return hh_fail(-EINVAL, "hh_inject: conn is NULL");
	if (unlikely(!data && len))
		return hh_fail(-EINVAL, "hh_inject: data is NULL with length %zu", len);
	if (unlikely(c->flags & ~HH_INJECT_FLAGS_ALL))
		return hh_fail(-EINVAL, "hh_inject: unknown flags 0x%x", c->flags);
	/* Would not fail in the kernel: bytes missing or duplicated on one side. */
	if (unlikely(c->rcv_nxt != (uint32_t)(c->irs + 1 + (uint32_t)len)))
		return hh_fail(-EINVAL, "hh_inject: rcv_nxt %u is not irs + 1 + %zu", c->rcv_nxt, len);
	if (unlikely(c->snd_nxt != (uint32_t)(c->iss + 1)))
		return hh_fail(-EINVAL, "hh_inject: snd_nxt %u is not iss + 1", c->snd_nxt);

	struct job j = { .c = c, .fail = fail, .fd = -1 };
	int rc;

	/* 1. */
	j.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (unlikely(j.fd < 0))
		return job_fail(&j, HH_STEP_SOCKET, errno, 0, 0, 0, 0, "socket");
	/* 2. */
	if ((rc = set_int(&j, SOL_TCP, TCP_REPAIR, TCP_REPAIR_ON)))
		return rc;
	/* 3. */
	if ((rc = set_int(&j, SOL_IP, c->flags & HH_INJECT_TRANSPARENT ? IP_TRANSPARENT : IP_FREEBIND, 1)))
		return rc;
	/* 4. */
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = c->vip_port, .sin_addr.s_addr = c->vip };
	if (unlikely(bind(j.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0))
		return job_fail(&j, HH_STEP_BIND, errno, 0, 0, 0, 0, "bind");
	/* 5. */
	if ((rc = set_int(&j, SOL_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)) ||
	    (rc = set_int(&j, SOL_TCP, TCP_QUEUE_SEQ, (int)c->snd_nxt)) ||
	    (rc = set_int(&j, SOL_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)) ||
	    (rc = set_int(&j, SOL_TCP, TCP_QUEUE_SEQ, (int)(c->irs + 1))))
		return rc;
	uint32_t maxseg = hh_inject_maxseg(c->mss);
	if (maxseg && (rc = set_int(&j, SOL_TCP, TCP_MAXSEG, (int)maxseg)))
		return rc;
	/* 6. */
	sa.sin_port = c->client_port;
	sa.sin_addr.s_addr = c->client_ip;
	if (unlikely(connect(j.fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)) {
		int err = errno;
		return job_fail(&j, HH_STEP_CONNECT, err, 0, 0, 0, 0,
				err == EADDRNOTAVAIL ? "connect in repair mode (this 4-tuple is already in use here)"
						     : "connect in repair mode");
	}
	/* 7. */
	struct tcp_repair_opt opts[HH_REPAIR_OPTS_MAX];
	unsigned nopts = hh_inject_repair_opts(c, opts);
	if ((rc = set_opt(&j, SOL_TCP, TCP_REPAIR_OPTIONS, opts, (socklen_t)(nopts * sizeof(opts[0])), 0)))
		return rc;
	/* 8. */
	if (c->ts_ok && (rc = set_int(&j, SOL_TCP, TCP_TIMESTAMP, (int)c->ts_value)))
		return rc;
	/* 9. TCP_REPAIR_QUEUE is still RECV; at most one skb per send(). */
	for (size_t off = 0; off < len;) {
		ssize_t n = send(j.fd, (const char *)data + off, len - off, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (unlikely(n <= 0)) {
			char what[80];
			snprintf(what, sizeof(what), "receive queue took %zu of %zu bytes", off, len);
			return job_fail(&j, HH_STEP_QUEUE, n < 0 ? errno : 0, 0, 0, 0, (uint32_t)off, what);
		}
		off += (size_t)n;
	}
	/* 10. */
	struct tcp_repair_window win;
	hh_inject_repair_window(c, &win);
	if ((rc = set_opt(&j, SOL_TCP, TCP_REPAIR_WINDOW, &win, sizeof(win), 0)))
		return rc;
	/* 11. */
	if ((rc = set_int(&j, SOL_TCP, TCP_REPAIR,
			  c->flags & HH_INJECT_NO_WINDOW_PROBE ? TCP_REPAIR_OFF_NO_WP : TCP_REPAIR_OFF)))
		return rc;
	/* 12. */
	if ((c->flags & HH_INJECT_REUSEADDR) && (rc = set_int(&j, SOL_SOCKET, SO_REUSEADDR, 1)))
		return rc;
	if ((c->flags & HH_INJECT_REUSEPORT) && (rc = set_int(&j, SOL_SOCKET, SO_REUSEPORT, 1)))
		return rc;
	return j.fd;
}
