/* SPDX-License-Identifier: MIT
 * Hand-over of an injected connection to another process (SCM_RIGHTS over a
 * UNIX socket), and the one question the agent then still asks the kernel
 * about it: is it still there (sock_diag)?
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>

#include "handoff_host.h"
#include "hh_common.h"

#define HH_PASS_MAX_HDR 4096

int hh_pass_fd(const char *path, int fd, const void *hdr, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (!path || strlen(path) >= sizeof(sa.sun_path))
		return hh_fail(-EINVAL, "hh_pass_fd: no path, or longer than %zu bytes", sizeof(sa.sun_path) - 1);
	if ((!hdr && len) || len > HH_PASS_MAX_HDR)
		return hh_fail(-EINVAL, "hh_pass_fd: header of %zu bytes (at most %d)", len, HH_PASS_MAX_HDR);
	memcpy(sa.sun_path, path, strlen(path));
	int u = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u < 0)
		return hh_fail(-errno, "hh_pass_fd: socket: %s", strerror(errno));
	if (connect(u, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(u);
		return hh_fail(-e, "hh_pass_fd: connect %s: %s", path, strerror(e));
	}
	char one = 0;
	struct iovec iov = { .iov_base = len ? (void *)hdr : &one, .iov_len = len ? len : 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	ssize_t n = sendmsg(u, &msg, MSG_NOSIGNAL);
	int e = errno;
	close(u);
	if (n < 0)
		return hh_fail(-e, "hh_pass_fd: sendmsg to %s: %s", path, strerror(e));
	if ((size_t)n != iov.iov_len)
		return hh_fail(-EIO, "hh_pass_fd: sent %zd of %zu bytes to %s", n, iov.iov_len, path);
	return (int)len;
}

int hh_tcp_state(uint32_t client_ip, uint16_t client_port, uint32_t vip, uint16_t vip_port)
{
	int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (s < 0)
		return hh_fail(-errno, "hh_tcp_state: netlink socket: %s", strerror(errno));
	struct {
		struct nlmsghdr nh;
		struct inet_diag_req_v2 r;
	} req;
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nh.nlmsg_flags = NLM_F_REQUEST; /* one exact socket, no dump */
	req.r.sdiag_family = AF_INET;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = ~0u;
	req.r.id.idiag_sport = vip_port; /* the local end is the VIP */
	req.r.id.idiag_dport = client_port;
	req.r.id.idiag_src[0] = vip;
	req.r.id.idiag_dst[0] = client_ip;
	req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (send(s, &req, sizeof(req), 0) < 0) {
		int e = errno;
		close(s);
		return hh_fail(-e, "hh_tcp_state: send: %s", strerror(e));
	}
	union {
		char buf[8192];
		struct nlmsghdr align;
	} rsp;
	ssize_t n = recv(s, rsp.buf, sizeof(rsp.buf), 0);
	int e = errno;
	close(s);
	if (n < 0)
		return hh_fail(-e, "hh_tcp_state: recv: %s", strerror(e));
	for (struct nlmsghdr *h = &rsp.align; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
		if (h->nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *err = NLMSG_DATA(h);
			if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*err)))
				return hh_fail(-EIO, "hh_tcp_state: truncated netlink error");
			if (err->error == -ENOENT)
				return hh_fail(-ENOENT, "hh_tcp_state: no such socket");
			return hh_fail(err->error ? err->error : -EIO, "hh_tcp_state: sock_diag: %s", strerror(-err->error));
		}
		if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
			const struct inet_diag_msg *m = NLMSG_DATA(h);
			return m->idiag_state;
		}
	}
	return hh_fail(-EIO, "hh_tcp_state: no answer in %zd bytes", n);
}
