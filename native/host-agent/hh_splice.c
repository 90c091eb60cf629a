/* SPDX-License-Identifier: MIT
 * Forward mode in the kernel (issue 17): an injected connection joined to a
 * new connection to a local server (nginx's HTTP or TLS port), the bytes
 * moved both ways with splice() through a pipe per direction, so no byte is
 * copied through user space, and one thread of this library, asleep in
 * epoll_wait when nothing moves, serves every pair. The agent's JS hands a
 * pair over once (hh_splice_add) and hears of its end once (hh_splice_done).
 *
 * Why splice and not a BPF sockmap: a sockmap redirect to egress goes
 * through the psock's work queue, so a FIN the upstream sends can overtake
 * the bytes before it unless user space also watches the queue; splice keeps
 * each direction strictly ordered, half-closes exactly like the server did,
 * and needs no program per socket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "handoff_host.h"
#include "hh_common.h"

#define HH_SPLICE_MAX_HANDLES 16
#define HH_SPLICE_CHUNK (64 * 1024) /* a pipe's default capacity (256 KB pipes measured slower here) */
#define HH_SPLICE_EVENTS 64

/** One direction: src -> pipe -> dst. */
struct hh_dir {
	int pipe_r, pipe_w;
	uint32_t in_pipe; /* bytes taken from src, not yet given to dst */
	uint8_t src_eof;
	uint8_t dst_shut;
};

struct hh_pair {
	int client, upstream;
	uint32_t flow_id;
	uint8_t used;
	uint8_t connecting;
	struct hh_dir up;   /* client -> upstream */
	struct hh_dir down; /* upstream -> client */
	uint32_t next_free;
};

struct hh_pending {
	int client;
	uint32_t flow_id;
	struct sockaddr_in to;
};

struct hh_splicer {
	pthread_t thread;
	int epfd, wake, notify_r, notify_w;
	uint32_t max_pairs;
	struct hh_pair *pairs;
	uint32_t free_head; /* UINT32_MAX: none */
	atomic_uint active;   /* pairs in the table + queued adds: the bound */
	atomic_bool stop;
	pthread_mutex_t lock; /* adds in, done out */
	struct hh_pending *adds;
	uint32_t n_adds;
	struct hh_pending *batch; /* the thread's copy of adds, taken under the lock */
	uint32_t *done_ids;
	int32_t *done_rc;
	uint32_t n_done;
	uint8_t notified; /* a byte is in the notify pipe and done was not drained since */
	/* written by the thread only, read by anyone (relaxed) */
	_Atomic uint64_t st[8];
};

enum { ST_ADDED, ST_ACTIVE, ST_DONE, ST_REFUSED_FULL, ST_UPSTREAM_FAILED, ST_ERRORS, ST_BYTES_UP, ST_BYTES_DOWN };

static struct hh_splicer *handles[HH_SPLICE_MAX_HANDLES];
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;

static void st_add(struct hh_splicer *s, int i, uint64_t v)
{
	atomic_fetch_add_explicit(&s->st[i], v, memory_order_relaxed);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* A close that sends RST: the client must not take a half answer for a whole one. */
static void reset_fd(int *fd)
{
	if (*fd < 0)
		return;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(*fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close_fd(fd);
}

/* The pair's descriptors, closed (or reset, when @p reset): what finish() and hh_splice_close() share. */
static void close_pair(struct hh_pair *p, int reset)
{
	if (reset) {
		reset_fd(&p->client);
		reset_fd(&p->upstream);
	} else {
		close_fd(&p->client);
		close_fd(&p->upstream);
	}
	close_fd(&p->up.pipe_r);
	close_fd(&p->up.pipe_w);
	close_fd(&p->down.pipe_r);
	close_fd(&p->down.pipe_w);
}

static void finish(struct hh_splicer *s, uint32_t idx, int rc)
{
	struct hh_pair *p = &s->pairs[idx];
	/* Explicitly: the agent's own descriptor of the client may outlive ours. */
	if (p->client >= 0)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, p->client, NULL);
	if (p->upstream >= 0)
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, p->upstream, NULL);
	close_pair(p, rc < 0);
	p->used = 0;
	p->next_free = s->free_head;
	s->free_head = idx;
	st_add(s, ST_DONE, 1);
	atomic_fetch_sub_explicit(&s->st[ST_ACTIVE], 1, memory_order_relaxed);
	/*
	 * Published last, so whoever sees the end sees its counters. The bound
	 * (s->active) is released by hh_splice_done, when the end is taken: an
	 * end waiting in done_ids (max_pairs entries) still holds its place.
	 */
	pthread_mutex_lock(&s->lock);
	s->done_ids[s->n_done] = p->flow_id;
	s->done_rc[s->n_done] = rc;
	s->n_done++;
	int poke = !s->notified;
	s->notified = 1;
	pthread_mutex_unlock(&s->lock);
	if (poke) {
		char b = 1;
		(void)!write(s->notify_w, &b, 1);
	}
}

/*
 * Move what can move in one direction without blocking.
 * @return 0 (waiting for readiness, or finished), or -errno
 */
static int pump(struct hh_splicer *s, struct hh_dir *d, int src, int dst, int stat)
{
	for (;;) {
		if (d->in_pipe) {
			ssize_t n = splice(d->pipe_r, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n < 0)
				return errno == EAGAIN ? 0 : -errno;
			d->in_pipe -= (uint32_t)n;
			st_add(s, stat, (uint64_t)n);
			continue;
		}
		if (d->src_eof) {
			if (!d->dst_shut) {
				d->dst_shut = 1;
				if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN)
					return -errno;
			}
			return 0;
		}
		ssize_t n = splice(src, NULL, d->pipe_w, NULL, HH_SPLICE_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		if (n == 0)
			d->src_eof = 1;
		d->in_pipe = (uint32_t)n;
	}
}

static void service(struct hh_splicer *s, uint32_t idx)
{
	struct hh_pair *p = &s->pairs[idx];
	if (!p->used)
		return;
	if (p->connecting) {
		int err = 0;
		socklen_t l = sizeof(err);
		if (getsockopt(p->upstream, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
			err = errno;
		if (err == EINPROGRESS || err == EALREADY)
			return;
		if (err) {
			st_add(s, ST_UPSTREAM_FAILED, 1);
			return finish(s, idx, -err);
		}
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		if (getpeername(p->upstream, (struct sockaddr *)&peer, &pl) < 0)
			return; /* not connected yet: a later event */
		p->connecting = 0;
	}
	int rc = pump(s, &p->up, p->client, p->upstream, ST_BYTES_UP);
	if (rc == 0)
		rc = pump(s, &p->down, p->upstream, p->client, ST_BYTES_DOWN);
	if (rc < 0) {
		if (rc != -ECONNRESET && rc != -EPIPE)
			st_add(s, ST_ERRORS, 1);
		return finish(s, idx, rc);
	}
	if (p->up.dst_shut && p->down.dst_shut)
		finish(s, idx, 0);
}

static int make_pipe(struct hh_dir *d)
{
	int fds[2];
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	d->pipe_r = fds[0];
	d->pipe_w = fds[1];
	return 0;
}

static void start_pair(struct hh_splicer *s, const struct hh_pending *a)
{
	uint32_t idx = s->free_head; /* never none: hh_splice_add counted the slot */
	struct hh_pair *p = &s->pairs[idx];
	s->free_head = p->next_free;
	memset(p, 0, sizeof(*p));
	p->used = 1;
	p->connecting = 1;
	p->flow_id = a->flow_id;
	p->client = a->client;
	p->upstream = p->up.pipe_r = p->up.pipe_w = p->down.pipe_r = p->down.pipe_w = -1;
	atomic_fetch_add_explicit(&s->st[ST_ACTIVE], 1, memory_order_relaxed);
	int rc;
	if ((rc = make_pipe(&p->up)) < 0 || (rc = make_pipe(&p->down)) < 0) {
		st_add(s, ST_ERRORS, 1);
		return finish(s, idx, rc);
	}
	int one = 1;
	p->upstream = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->upstream < 0) {
		st_add(s, ST_ERRORS, 1);
		return finish(s, idx, -errno);
	}
	setsockopt(p->upstream, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int fl = fcntl(p->client, F_GETFL);
	if (fl < 0 || fcntl(p->client, F_SETFL, fl | O_NONBLOCK) < 0) {
		st_add(s, ST_ERRORS, 1);
		return finish(s, idx, -errno);
	}
	if (connect(p->upstream, (const struct sockaddr *)&a->to, sizeof(a->to)) < 0 && errno != EINPROGRESS) {
		st_add(s, ST_UPSTREAM_FAILED, 1);
		return finish(s, idx, -errno);
	}
	/* Edge-triggered: service() always moves until EAGAIN, so no readiness is lost. */
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = idx };
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, p->client, &ev) < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, p->upstream, &ev) < 0) {
		st_add(s, ST_ERRORS, 1);
		return finish(s, idx, -errno);
	}
	st_add(s, ST_ADDED, 1);
	service(s, idx);
}

static void *run(void *arg)
{
	struct hh_splicer *s = arg;
	struct epoll_event evs[HH_SPLICE_EVENTS];
	struct hh_pending *batch = s->batch;
	while (!atomic_load(&s->stop)) {
		int n = epoll_wait(s->epfd, evs, HH_SPLICE_EVENTS, -1);
		if (n < 0 && errno == EINTR)
			continue;
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == UINT64_MAX) {
				uint64_t v;
				(void)!read(s->wake, &v, sizeof(v));
				pthread_mutex_lock(&s->lock);
				uint32_t k = s->n_adds;
				memcpy(batch, s->adds, k * sizeof(*batch));
				s->n_adds = 0;
				pthread_mutex_unlock(&s->lock);
				for (uint32_t j = 0; j < k; j++)
					start_pair(s, &batch[j]);
				continue;
			}
			service(s, (uint32_t)evs[i].data.u64);
		}
	}
	return NULL;
}

static struct hh_splicer *get(int h)
{
	if (h < 0 || h >= HH_SPLICE_MAX_HANDLES)
		return NULL;
	return handles[h];
}

/* Everything hh_splice_open made (its thread stopped or never started). */
static void splicer_free(struct hh_splicer *s)
{
	close_fd(&s->epfd);
	close_fd(&s->wake);
	close_fd(&s->notify_r);
	close_fd(&s->notify_w);
	pthread_mutex_destroy(&s->lock);
	free(s->pairs);
	free(s->adds);
	free(s->batch);
	free(s->done_ids);
	free(s->done_rc);
	free(s);
}

int hh_splice_open(uint32_t max_pairs)
{
	if (max_pairs == 0 || max_pairs > HH_SPLICE_MAX_PAIRS)
		return hh_fail(-EINVAL, "hh_splice_open: max_pairs %u is not 1..%u", max_pairs, HH_SPLICE_MAX_PAIRS);
	struct hh_splicer *s = calloc(1, sizeof(*s));
	if (!s)
		return hh_fail(-ENOMEM, "hh_splice_open: out of memory");
	s->epfd = s->wake = s->notify_r = s->notify_w = -1;
	pthread_mutex_init(&s->lock, NULL);
	s->max_pairs = max_pairs;
	s->pairs = calloc(max_pairs, sizeof(*s->pairs));
	s->adds = calloc(max_pairs, sizeof(*s->adds));
	s->batch = calloc(max_pairs, sizeof(*s->batch));
	s->done_ids = calloc(max_pairs, sizeof(*s->done_ids));
	s->done_rc = calloc(max_pairs, sizeof(*s->done_rc));
	int rc = 0, fds[2];
	if (!s->pairs || !s->adds || !s->batch || !s->done_ids || !s->done_rc) {
		rc = hh_fail(-ENOMEM, "hh_splice_open: out of memory for %u pairs", max_pairs);
		goto fail;
	}
	for (uint32_t i = 0; i < max_pairs; i++)
		s->pairs[i].next_free = i + 1 < max_pairs ? i + 1 : UINT32_MAX;
	s->free_head = 0;
	if ((s->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 || (s->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
	    pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		rc = hh_fail(-errno, "hh_splice_open: %s", strerror(errno));
		goto fail;
	}
	s->notify_r = fds[0];
	s->notify_w = fds[1];
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wake, &ev) < 0) {
		rc = hh_fail(-errno, "hh_splice_open: epoll_ctl: %s", strerror(errno));
		goto fail;
	}
	pthread_mutex_lock(&handles_lock);
	int h = -1;
	for (int i = 0; i < HH_SPLICE_MAX_HANDLES && h < 0; i++)
		if (!handles[i])
			h = i;
	if (h < 0) {
		pthread_mutex_unlock(&handles_lock);
		rc = hh_fail(-EMFILE, "hh_splice_open: %d forwarders open already", HH_SPLICE_MAX_HANDLES);
		goto fail;
	}
	int e = pthread_create(&s->thread, NULL, run, s);
	if (e) {
		pthread_mutex_unlock(&handles_lock);
		rc = hh_fail(-e, "hh_splice_open: pthread_create: %s", strerror(e));
		goto fail;
	}
	pthread_setname_np(s->thread, "hh-splice");
	handles[h] = s;
	pthread_mutex_unlock(&handles_lock);
	return h;
fail:
	splicer_free(s);
	return rc;
}

int hh_splice_add(int h, int client_fd, uint32_t upstream_ip, uint16_t upstream_port, uint32_t flow_id)
{
	struct hh_splicer *s = get(h);
	if (!s)
		return hh_fail(-EBADF, "hh_splice_add: no forwarder %d", h);
	if (client_fd < 0 || !upstream_port)
		return hh_fail(-EINVAL, "hh_splice_add: descriptor %d, upstream port %u", client_fd, ntohs(upstream_port));
	/* Taken before the dup, so the bound holds with adds racing the thread's ends. */
	if (atomic_fetch_add(&s->active, 1) >= s->max_pairs) {
		atomic_fetch_sub(&s->active, 1);
		st_add(s, ST_REFUSED_FULL, 1);
		return hh_fail(-ENOSPC, "hh_splice_add: %u connections forwarded already (the bound)", s->max_pairs);
	}
	int fd = fcntl(client_fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		atomic_fetch_sub(&s->active, 1);
		return hh_fail(-e, "hh_splice_add: dup of %d: %s", client_fd, strerror(e));
	}
	pthread_mutex_lock(&s->lock);
	struct hh_pending *a = &s->adds[s->n_adds++];
	a->client = fd;
	a->flow_id = flow_id;
	memset(&a->to, 0, sizeof(a->to));
	a->to.sin_family = AF_INET;
	a->to.sin_addr.s_addr = upstream_ip;
	a->to.sin_port = upstream_port;
	pthread_mutex_unlock(&s->lock);
	uint64_t one = 1;
	(void)!write(s->wake, &one, sizeof(one));
	return 0;
}

int hh_splice_notify_fd(int h)
{
	struct hh_splicer *s = get(h);
	if (!s)
		return hh_fail(-EBADF, "hh_splice_notify_fd: no forwarder %d", h);
	int fd = fcntl(s->notify_r, F_DUPFD_CLOEXEC, 0);
	return fd < 0 ? hh_fail(-errno, "hh_splice_notify_fd: %s", strerror(errno)) : fd;
}

int hh_splice_done(int h, uint32_t *flow_ids, int32_t *results, uint32_t n)
{
	struct hh_splicer *s = get(h);
	if (!s)
		return hh_fail(-EBADF, "hh_splice_done: no forwarder %d", h);
	if (!flow_ids || !results)
		return hh_fail(-EINVAL, "hh_splice_done: NULL array");
	pthread_mutex_lock(&s->lock);
	uint32_t k = s->n_done < n ? s->n_done : n;
	memcpy(flow_ids, s->done_ids, k * sizeof(*flow_ids));
	memcpy(results, s->done_rc, k * sizeof(*results));
	memmove(s->done_ids, s->done_ids + k, (s->n_done - k) * sizeof(*flow_ids));
	memmove(s->done_rc, s->done_rc + k, (s->n_done - k) * sizeof(*results));
	s->n_done -= k;
	atomic_fetch_sub(&s->active, k);
	if (!s->n_done && s->notified) {
		/* Drained: the next end writes a byte again. */
		char b[64];
		while (read(s->notify_r, b, sizeof(b)) > 0)
			;
		s->notified = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return (int)k;
}

int hh_splice_stats(int h, struct hh_splice_stats *out)
{
	struct hh_splicer *s = get(h);
	if (!s)
		return hh_fail(-EBADF, "hh_splice_stats: no forwarder %d", h);
	if (!out)
		return hh_fail(-EINVAL, "hh_splice_stats: NULL out");
	out->added = atomic_load_explicit(&s->st[ST_ADDED], memory_order_relaxed);
	out->active = atomic_load_explicit(&s->st[ST_ACTIVE], memory_order_relaxed);
	out->done = atomic_load_explicit(&s->st[ST_DONE], memory_order_relaxed);
	out->refused_full = atomic_load_explicit(&s->st[ST_REFUSED_FULL], memory_order_relaxed);
	out->upstream_failed = atomic_load_explicit(&s->st[ST_UPSTREAM_FAILED], memory_order_relaxed);
	out->errors = atomic_load_explicit(&s->st[ST_ERRORS], memory_order_relaxed);
	out->bytes_to_upstream = atomic_load_explicit(&s->st[ST_BYTES_UP], memory_order_relaxed);
	out->bytes_to_client = atomic_load_explicit(&s->st[ST_BYTES_DOWN], memory_order_relaxed);
	return 0;
}

int hh_splice_close(int h)
{
	pthread_mutex_lock(&handles_lock);
	struct hh_splicer *s = get(h);
	if (!s) {
		pthread_mutex_unlock(&handles_lock);
		return hh_fail(-EBADF, "hh_splice_close: no forwarder %d", h);
	}
	handles[h] = NULL;
	pthread_mutex_unlock(&handles_lock);
	atomic_store(&s->stop, 1);
	uint64_t one = 1;
	(void)!write(s->wake, &one, sizeof(one));
	pthread_join(s->thread, NULL);
	/* What is still open is cut: the agent is going away. */
	for (uint32_t i = 0; i < s->n_adds; i++)
		reset_fd(&s->adds[i].client);
	for (uint32_t i = 0; i < s->max_pairs; i++)
		if (s->pairs[i].used)
			close_pair(&s->pairs[i], 1);
	splicer_free(s);
	return 0;
}
