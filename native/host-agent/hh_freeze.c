/* SPDX-License-Identifier: MIT
 * Hand-back (issue 15): freeze a live connection with TCP_REPAIR so its
 * exact state and unread bytes can travel back to the balancer, then close
 * it without a packet to the client (or reset it, when the hand-back failed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>

#include "handoff_host.h"
#include "hh_common.h"

#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif

static int opt_int(int fd, int name, int val)
{
	return setsockopt(fd, SOL_TCP, name, &val, sizeof(val));
}

/* Leave repair mode after a failure, keeping the first errno. */
static int unfreeze_fail(int fd, int err, const char *what)
{
	(void)opt_int(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
	return hh_fail(-err, "hh_freeze: %s: %s", what, strerror(err));
}

int hh_freeze(int fd, void *buf, size_t len, struct hh_frozen *out)
{
	int outq = 0, inq = 0;
	uint32_t v;
	socklen_t sl;

	if (unlikely(!out))
		return hh_fail(-EINVAL, "hh_freeze: out is NULL");
	if (unlikely(!buf && len))
		return hh_fail(-EINVAL, "hh_freeze: buf is NULL with length %zu", len);
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	/* A FIN already taken cannot travel in a blob (v1): the new host would never hear it. */
	struct tcp_info ti;
	sl = sizeof(ti);
	if (getsockopt(fd, SOL_TCP, TCP_INFO, &ti, &sl) < 0)
		return hh_fail(-errno, "hh_freeze: TCP_INFO: %s", strerror(errno));
	if (ti.tcpi_state != TCP_ESTABLISHED)
		return hh_fail(-EPIPE, "hh_freeze: the connection is not established (state %u): the client closed its side",
			       ti.tcpi_state);
	/* Unacknowledged bytes would be lost: only a drained socket has an exact state. */
	if (ioctl(fd, SIOCOUTQ, &outq) < 0)
		return hh_fail(-errno, "hh_freeze: SIOCOUTQ: %s", strerror(errno));
	if (outq)
		return hh_fail(-EBUSY, "hh_freeze: %d bytes sent and not yet acknowledged", outq);
	if (opt_int(fd, TCP_REPAIR, 1) < 0)
		return hh_fail(-errno, "hh_freeze: TCP_REPAIR on: %s", strerror(errno));
	if (opt_int(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE) < 0)
		return unfreeze_fail(fd, errno, "TCP_REPAIR_QUEUE send");
	sl = sizeof(v);
	if (getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, &v, &sl) < 0)
		return unfreeze_fail(fd, errno, "TCP_QUEUE_SEQ send");
	out->snd_nxt = v;
	if (opt_int(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE) < 0)
		return unfreeze_fail(fd, errno, "TCP_REPAIR_QUEUE recv");
	sl = sizeof(v);
	if (getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, &v, &sl) < 0)
		return unfreeze_fail(fd, errno, "TCP_QUEUE_SEQ recv");
	out->rcv_nxt = v;
	if (ioctl(fd, SIOCINQ, &inq) < 0)
		return unfreeze_fail(fd, errno, "SIOCINQ");
	if ((size_t)inq > len)
		return unfreeze_fail(fd, ENOSPC, "unread bytes exceed the buffer");
	if (inq > 0) {
		/* In repair mode the receive queue can only be peeked: it stays as it is. */
		ssize_t n = recv(fd, buf, (size_t)inq, MSG_PEEK | MSG_DONTWAIT);
		if (n < 0)
			return unfreeze_fail(fd, errno, "peek of the receive queue");
		if (n != inq)
			return unfreeze_fail(fd, EIO, "short peek of the receive queue");
	}
	out->unread = (uint32_t)inq;
	struct tcp_repair_window w;
	sl = sizeof(w);
	if (getsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, &sl) < 0)
		return unfreeze_fail(fd, errno, "TCP_REPAIR_WINDOW");
	out->snd_wnd = w.snd_wnd;
	out->rcv_wnd = w.rcv_wnd;
	sl = sizeof(v);
	if (getsockopt(fd, SOL_TCP, TCP_TIMESTAMP, &v, &sl) < 0)
		return unfreeze_fail(fd, errno, "TCP_TIMESTAMP");
	out->ts_value = v;
	int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0)
		return unfreeze_fail(fd, errno, "dup");
	out->fd = dupfd;
	return 0;
}

int hh_frozen_close(int fd, int reset)
{
	if (fd < 0)
		return hh_fail(-EBADF, "hh_frozen_close: bad descriptor %d", fd);
	if (reset) {
		/* Out of repair mode (no window probe), then an abortive close: RST. */
		struct linger l = { .l_onoff = 1, .l_linger = 0 };
		(void)opt_int(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	}
	/* Still in repair mode, close sends nothing (tcp_disconnect's repair branch). */
	if (close(fd) < 0)
		return hh_fail(-errno, "hh_frozen_close: close: %s", strerror(errno));
	return 0;
}
