/* SPDX-License-Identifier: MIT
 * libhandoff_host: the host agent's per-connection work in native code
 * (design.md §5): TCP_REPAIR injection of a handed-off connection in one
 * call, and the tunnel check as a tc BPF classifier with a hash map of live
 * flows. Loaded by the agent with koffi (src/host/native.ts).
 *
 * Every function returns >= 0 on success or -errno, and leaves a sentence in
 * hh_last_error() (thread-local) on failure. Nothing here exits or aborts.
 */
#ifndef HANDOFF_HOST_H
#define HANDOFF_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "hh_tunnel_key.h"

/** Bumped on any change to a struct below or to a function's signature. */
#define HH_ABI_VERSION 4

/** Inject flags (hh_conn.flags). */
enum hh_inject_flag {
	HH_INJECT_TRANSPARENT = 1 << 0,     /**< IP_TRANSPARENT instead of IP_FREEBIND */
	HH_INJECT_NO_WINDOW_PROBE = 1 << 1, /**< leave repair with TCP_REPAIR_OFF_NO_WP */
	HH_INJECT_REUSEADDR = 1 << 2,       /**< SO_REUSEADDR on the finished socket */
	HH_INJECT_REUSEPORT = 1 << 3,       /**< SO_REUSEPORT on the finished socket */
};

/**
 * The state of a connection to inject: the blob's fields, already checked
 * by the caller (VIP served, rcv_nxt = irs + 1 + data length,
 * snd_nxt = iss + 1). Addresses and ports in network order; everything else
 * host order.
 */
struct hh_conn {
	uint32_t client_ip;
	uint32_t vip;
	uint16_t client_port;
	uint16_t vip_port;
	uint32_t iss;
	uint32_t irs;
	uint32_t snd_nxt;
	uint32_t rcv_nxt;
	uint32_t snd_wnd;
	uint32_t rcv_wnd;
	uint32_t ts_value; /**< TCP_TIMESTAMP value to set (even; see src/host/repair.ts), if ts_ok */
	uint16_t mss;
	uint8_t snd_wscale;
	uint8_t rcv_wscale;
	uint8_t sack_ok;
	uint8_t ts_ok;
	uint8_t flags; /**< enum hh_inject_flag */
	uint8_t reserved;
};

/** Which step of the injection failed (hh_inject_failure.step). */
enum hh_inject_step {
	HH_STEP_NONE = 0,
	HH_STEP_SOCKET,
	HH_STEP_SETSOCKOPT,
	HH_STEP_BIND,
	HH_STEP_CONNECT,
	HH_STEP_QUEUE,
};

uint32_t hh_abi_version(void);
/** Sizes and offsets of the structs above as JSON (like hs_abi_layout). @return bytes written, -ENOSPC if @p len is short. */
int hh_abi_layout(char *buf, size_t len);
const char *hh_last_error(void);

/* injection */

/** Why hh_inject failed: the step, the socket option and the errno (for the caller's error codes). */
struct hh_inject_failure {
	int32_t step;    /**< enum hh_inject_step; HH_STEP_NONE: refused before any system call (-EINVAL) */
	int32_t err;     /**< the system call's errno; 0 if it returned without one (send() queued nothing) */
	int32_t level;   /**< HH_STEP_SETSOCKOPT: the option's level (SOL_TCP, SOL_IP, SOL_SOCKET) */
	int32_t optname; /**< HH_STEP_SETSOCKOPT: the option (TCP_REPAIR, TCP_REPAIR_WINDOW, ...) */
	int32_t optval;  /**< HH_STEP_SETSOCKOPT: the int value being set (TCP_REPAIR: 1 on, 0 / -1 off); 0 for struct options */
	uint32_t queued; /**< HH_STEP_QUEUE: bytes already in the receive queue */
};

/**
 * Re-create a handed-off connection in this host's kernel with TCP_REPAIR:
 * socket, repair on, IP_FREEBIND / IP_TRANSPARENT, bind(vip), queue
 * sequence numbers, TCP_MAXSEG, connect(client), TCP_REPAIR_OPTIONS,
 * TCP_TIMESTAMP, @p data into the receive queue, TCP_REPAIR_WINDOW, repair
 * off, SO_REUSEADDR / SO_REUSEPORT (the 12 steps of src/host/repair.ts).
 * Synchronous; nothing is sent except the window probe of leaving repair
 * mode (unless HH_INJECT_NO_WINDOW_PROBE).
 *
 * @param conn  the connection's state (already checked by the caller)
 * @param data  bytes the balancer received and acknowledged: the first bytes
 *              the application reads (NULL if @p len is 0)
 * @param len   their length; conn->rcv_nxt must be conn->irs + 1 + len
 * @param fail  if not NULL, filled in on failure (step, option, errno)
 * @return the connected descriptor (SOCK_CLOEXEC, blocking; the caller owns
 *         it), or -errno with nothing left open:
 *         -EINVAL (step NONE) a NULL @p conn, NULL @p data with @p len,
 *         unknown flags, rcv_nxt != irs + 1 + len or snd_nxt != iss + 1;
 *         step SOCKET: socket()'s errno (-EMFILE, -ENFILE, -ENOBUFS, ...);
 *         step SETSOCKOPT: -EPERM on TCP_REPAIR / IP_TRANSPARENT without
 *         CAP_NET_ADMIN, -EFBIG for a window scale above 14, -EINVAL, ...;
 *         step BIND: -EACCES (a privileged port without CAP_NET_BIND_SERVICE),
 *         -EADDRNOTAVAIL, -EINVAL;
 *         step CONNECT: -EADDRNOTAVAIL when the 4-tuple already exists here,
 *         -ENETUNREACH (no route, or a non-local VIP without IP_TRANSPARENT);
 *         step QUEUE: send()'s errno (-ENOMEM, ...), or -EIO with
 *         fail->err 0 if it queued nothing.
 */
int hh_inject(const struct hh_conn *conn, const void *data, size_t len, struct hh_inject_failure *fail);

/* hand-back (issue 15) */

/** A frozen connection's state (hh_freeze), host order. */
struct hh_frozen {
	uint32_t snd_nxt;  /**< next byte to send; all before it acknowledged */
	uint32_t rcv_nxt;  /**< next byte expected from the client */
	uint32_t snd_wnd;  /**< the client's window, bytes */
	uint32_t rcv_wnd;  /**< the window this host last advertised, bytes */
	uint32_t ts_value; /**< the socket's TCP_TIMESTAMP clock now */
	uint32_t unread;   /**< bytes received and not read, copied into the buffer */
	int32_t fd;        /**< a duplicate of the socket, left in repair mode */
	uint32_t reserved;
};

/**
 * Freeze a live connection for hand-back: TCP_REPAIR on, its sequence
 * numbers, windows and timestamp clock read, the bytes received but not read
 * peeked into @p buf, and a duplicate descriptor returned in out->fd, still
 * in repair mode (close the original as usual; the socket lives on in the
 * duplicate). Send nothing meanwhile; filter the flow's incoming packets
 * first (the kernel still processes them in repair mode).
 *
 * @return 0, or -errno with the socket out of repair mode again:
 *         -EINVAL NULL @p out, NULL @p buf with @p len;
 *         -EBUSY bytes sent and not yet acknowledged (SIOCOUTQ): retry later;
 *         -EPIPE the client's FIN was already received (not ESTABLISHED);
 *         -ENOSPC more unread bytes than @p len;
 *         -EPERM TCP_REPAIR without CAP_NET_ADMIN; another system call's -errno.
 */
int hh_freeze(int fd, void *buf, size_t len, struct hh_frozen *out);

/**
 * Close a descriptor from hh_freeze: silently (@p reset 0: the connection
 * moved elsewhere, the client hears nothing) or with a RST (@p reset 1: the
 * hand-back failed and the connection cannot continue).
 * @return 0, -EBADF, or close()'s -errno.
 */
int hh_frozen_close(int fd, int reset);

/* hand-over to another process (SCM_RIGHTS; design.md §2, issue 17) */

/**
 * Pass connection @p fd to the server listening on the UNIX stream socket
 * @p path: connect (non-blocking), one sendmsg() carrying @p hdr and the
 * descriptor (SCM_RIGHTS), close. The receiver owns a duplicate from then
 * on; the caller closes its own as soon as it likes, the connection lives on.
 * @return bytes of @p hdr sent (all of them), or -errno: -EINVAL NULL
 *         @p path or a path too long for sun_path, NULL @p hdr with @p len
 *         or @p len over 4096; connect()'s -ENOENT / -ECONNREFUSED (nobody
 *         listens) / -EAGAIN (its backlog is full); sendmsg()'s -errno;
 *         -EIO when it sent less than @p hdr.
 */
int hh_pass_fd(const char *path, int fd, const void *hdr, size_t len);

/**
 * The kernel's TCP state of the local socket vip:vip_port <-> client:client_port
 * (network order), asked with one NETLINK_SOCK_DIAG request: what the agent
 * knows of a connection it passed on and no longer holds.
 * @return the state (1 TCP_ESTABLISHED ... 11 TCP_CLOSING, as in
 *         linux/tcp_states.h; 6 TCP_TIME_WAIT), -ENOENT when there is no such
 *         socket, or -errno of the netlink socket, send or receive.
 */
int hh_tcp_state(uint32_t client_ip, uint16_t client_port, uint32_t vip, uint16_t vip_port);

/* forward mode in the kernel (splice; issue 17) */

/** The most connections one forwarder carries at once (hh_splice_open). */
#define HH_SPLICE_MAX_PAIRS 65536

/** A forwarder's counters (hh_splice_stats); one writer, its thread. */
struct hh_splice_stats {
	uint64_t added;             /**< pairs started (upstream connect issued) */
	uint64_t active;            /**< pairs open now */
	uint64_t done;              /**< pairs ended, for any reason */
	uint64_t refused_full;      /**< hh_splice_add refused: max_pairs open */
	uint64_t upstream_failed;   /**< the upstream connect failed: client reset */
	uint64_t errors;            /**< other failures (pipe, socket, splice): both reset */
	uint64_t bytes_to_upstream; /**< client bytes spliced to the upstream */
	uint64_t bytes_to_client;   /**< upstream bytes spliced to the client */
};

/**
 * Start a forwarder: one thread (named hh-splice) that sleeps in
 * epoll_wait while nothing moves, and joins each connection given to
 * hh_splice_add to a new connection to its upstream, moving bytes both ways
 * with splice() through a pipe per direction (no copy through user space).
 * A FIN is passed on once everything before it was, in each direction
 * separately; the pair ends when both directions did, or at the first
 * error (then both sockets are reset).
 *
 * @param max_pairs the bound on connections open at once (memory and
 *                  descriptors: 6 per connection), 1..HH_SPLICE_MAX_PAIRS
 * @return a handle >= 0, or -errno: -EINVAL @p max_pairs out of range;
 *         -ENOMEM; -EMFILE 16 forwarders open already, or no descriptor
 *         left; pthread_create's -EAGAIN.
 */
int hh_splice_open(uint32_t max_pairs);

/**
 * Forward connection @p client_fd (a duplicate is taken: close yours when
 * you like, at once) to @p upstream_ip:@p upstream_port (network order).
 * Bytes already in its receive queue (the request the balancer read) go
 * first. Asynchronous: the outcome comes from hh_splice_done.
 * @return 0, or -errno: -EBADF no such forwarder; -EINVAL a negative
 *         descriptor or port 0; -ENOSPC max_pairs connections open, or
 *         ended with their ends not yet taken by hh_splice_done (counted
 *         refused_full; the caller resets the client); the dup's -EMFILE.
 */
int hh_splice_add(int h, int client_fd, uint32_t upstream_ip, uint16_t upstream_port, uint32_t flow_id);

/**
 * A descriptor (a pipe's read end, non-blocking, the caller owns it) that
 * becomes readable when pairs ended and hh_splice_done has not taken them:
 * watch it in the event loop. Its bytes are drained by hh_splice_done.
 * @return the descriptor, or -errno: -EBADF no such forwarder; the dup's.
 */
int hh_splice_notify_fd(int h);

/**
 * Take up to @p n ended pairs, oldest first: their flow IDs, and each one's
 * outcome (0: both directions ended with FIN; -errno: reset, for example
 * -ECONNREFUSED when nothing listened upstream, -ECONNRESET).
 * @return how many were taken (0 when none), or -EBADF, -EINVAL (NULL array).
 */
int hh_splice_done(int h, uint32_t *flow_ids, int32_t *results, uint32_t n);

/** Read the forwarder's counters. @return 0, -EBADF, -EINVAL (NULL @p out). */
int hh_splice_stats(int h, struct hh_splice_stats *out);

/**
 * Stop the forwarder: its thread joined, every connection still open reset,
 * everything freed. @return 0, or -EBADF.
 */
int hh_splice_close(int h);

/* tunnel check */

/** hh_tunnel_open flags. */
enum hh_tunnel_open_flag {
	HH_TUNNEL_NO_ATTACH = 1 << 0, /**< load the maps and programs only (@p device unused): for tests */
	HH_TUNNEL_TEST_PROG = 1 << 1, /**< also load hh_tunnel_test, for hh_tunnel_test_run */
};

/**
 * Load the tunnel check (bpf/tunnel.bpf.o: a tc classifier and its maps,
 * empty) and attach it to @p device's tc ingress, creating the clsact qdisc
 * if there is none. A filter left at the same handle and priority by an
 * agent that did not close is replaced. Every packet the device
 * decapsulates is then refused unless hh_tunnel_allow() listed its flow.
 *
 * @param bpf_path path of tunnel.bpf.o
 * @param device   the `vxlan external` device, in the caller's network namespace
 * @param flags    enum hh_tunnel_open_flag
 * @return a handle >= 0 for the other hh_tunnel_* calls, or -errno:
 *         -EINVAL unknown flags, no path, a bad interface name;
 *         -ENOENT (or the open's errno) no such object, or not the tunnel check's;
 *         -EPERM loading or attaching without CAP_BPF / CAP_NET_ADMIN;
 *         -ENODEV no such device; another -errno from the kernel
 *         (the verifier's refusal, netlink's) with libbpf's message in the sentence;
 *         -EMFILE HH_TUNNEL_MAX_HANDLES are open; -ENOMEM.
 */
int hh_tunnel_open(const char *bpf_path, const char *device, uint32_t flags);

/**
 * Only VXLAN from these outer source addresses (IPv4, network order) gets
 * past the sender check; none (@p n 0) turns the sender check off.
 * Replaces the previous list.
 * @return 0, or -errno: -EBADF bad handle; -ENOSPC more than
 *         HH_TUNNEL_MAX_BALANCERS; -EINVAL NULL @p addrs with @p n; a map
 *         update's -errno (-ENOMEM).
 */
int hh_tunnel_set_balancers(int h, const uint32_t *addrs, size_t n);

/**
 * Let the flow's tunnelled packets in: one map update. Addresses and
 * ports in network order, @p vni (the flow ID) in host order.
 * @return 1 added, 0 it was allowed already, or -errno: -EBADF bad handle;
 *         -EINVAL a VNI above 24 bits; -ENOSPC HH_TUNNEL_MAX_FLOWS flows
 *         are allowed already; -ENOMEM.
 */
int hh_tunnel_allow(int h, uint32_t vni, uint32_t client_ip, uint32_t vip, uint16_t client_port, uint16_t vip_port);

/**
 * Refuse the flow's packets from now on: one map delete. Arguments as
 * hh_tunnel_allow.
 * @return 1 removed, 0 it was not allowed (not an error), or -errno:
 *         -EBADF bad handle; -EINVAL a VNI above 24 bits.
 */
int hh_tunnel_revoke(int h, uint32_t vni, uint32_t client_ip, uint32_t vip, uint16_t client_port, uint16_t vip_port);

/**
 * hh_tunnel_revoke for many flows at once, in one BPF_MAP_DELETE_BATCH
 * (plus one more per absent key). Keys as struct hh_flow_key (addresses and
 * ports in network order, the VNI in host order).
 * @return the number removed (absent ones are skipped, not an error), or
 *         -errno: -EBADF bad handle; -EINVAL NULL @p keys with @p n, a VNI
 *         above 24 bits, more than HH_TUNNEL_MAX_FLOWS keys; the kernel's
 *         -errno (the flows before the failing one are removed).
 */
int hh_tunnel_revoke_batch(int h, const struct hh_flow_key *keys, size_t n);

/** Flows allowed now (counted by this library, not read from the map). @return >= 0, or -EBADF. */
int hh_tunnel_flows(int h);

/**
 * The refusal counters (enum hh_tunnel_counter), summed over the CPUs,
 * into @p out[0 .. min(@p count, HH_TC_COUNT)).
 * @return HH_TC_COUNT, or -errno: -EBADF bad handle; -EINVAL NULL @p out
 *         with @p count; a map lookup's -errno.
 */
int hh_tunnel_counters(int h, uint64_t *out, size_t count);

/**
 * Run the check on one crafted frame with BPF_PROG_TEST_RUN (tests): the
 * test program takes the tunnel metadata from the arguments instead of the
 * skb, and counts as the attached one does.
 * @param frame     an Ethernet frame (the inner, decapsulated packet), 14..65535 bytes
 * @param flags     enum hh_tunnel_test_flag (hh_tunnel_prog.h): HAS_KEY 1, IPV6 2
 * @param vni       the tunnel ID
 * @param remote_ip the outer source, network order
 * @return the verdict (TC_ACT_OK 0, TC_ACT_SHOT 2), or -errno: -EBADF bad
 *         handle; -ENOTSUP opened without HH_TUNNEL_TEST_PROG; -EINVAL a
 *         NULL or wrongly sized frame; BPF_PROG_TEST_RUN's -errno.
 */
int hh_tunnel_test_run(int h, const void *frame, size_t len, uint32_t flags, uint32_t vni, uint32_t remote_ip);

/**
 * Detach the classifier (and remove the clsact qdisc if hh_tunnel_open
 * created it), unload it and free the handle. A device deleted meanwhile is
 * not an error.
 * @return 0, or -EBADF bad handle.
 */
int hh_tunnel_close(int h);

#endif
