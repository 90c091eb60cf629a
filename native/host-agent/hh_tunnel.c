/* SPDX-License-Identifier: MIT
 * The tunnel check: libbpf loading and attaching of bpf/tunnel.bpf.o, and
 * its maps (hh_tunnel.h; API in handoff_host.h, "tunnel check").
 *
 * Instances live in a small table (HH_TUNNEL_MAX_HANDLES) addressed by an
 * int handle. Opening and closing take a lock; the per-flow calls do not, so
 * a handle must not be used by one thread while another closes it (the
 * agent makes every call from its event loop thread).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "handoff_host.h"
#include "hh_common.h"
#include "hh_tunnel.h"
#include "hh_tunnel_prog.h"

struct tunnel {
	struct bpf_object *obj;
	int test_fd;   /**< hh_tunnel_test, or -1 */
	int flows_fd;
	int balancers_fd;
	int config_fd;
	int counters_fd;
	int ifindex;   /**< 0 when not attached */
	int hook_created;
	char device[IF_NAMESIZE];
	long flows;
	int ncpus;
	__u64 *percpu; /**< ncpus values, for reading one counter */
};

static struct tunnel *table[HH_TUNNEL_MAX_HANDLES];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

/* libbpf's last warning (the verifier log's tail, netlink's extended ack),
 * for the failure sentence; libbpf's own stderr output is suppressed. */
static __thread char libbpf_said[400];

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char msg[4096];
	if (level == LIBBPF_DEBUG)
		return 0;
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n <= 0)
		return 0;
	size_t len = strlen(msg);
	while (len && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
		msg[--len] = 0;
	const char *tail = len >= sizeof(libbpf_said) ? msg + len - (sizeof(libbpf_said) - 1) : msg;
	snprintf(libbpf_said, sizeof(libbpf_said), "%s", tail);
	for (char *c = libbpf_said; *c; c++)
		if (*c == '\n' || *c == '\t')
			*c = ' ';
	return 0;
}

static pthread_once_t print_once = PTHREAD_ONCE_INIT;
static void set_print(void) { libbpf_set_print(libbpf_print); }

/** " (libbpf: ...)" or "" */
static const char *said(char *buf, size_t len)
{
	if (!libbpf_said[0])
		return "";
	snprintf(buf, len, " (libbpf: %s)", libbpf_said);
	return buf;
}

static int get(int h, struct tunnel **t)
{
	if (h < 0 || h >= HH_TUNNEL_MAX_HANDLES || !table[h])
		return hh_fail(-EBADF, "tunnel check handle %d is not open", h);
	*t = table[h];
	return 0;
}

static void hook_of(const struct tunnel *t, struct bpf_tc_hook *hook)
{
	memset(hook, 0, sizeof(*hook));
	hook->sz = sizeof(*hook);
	hook->ifindex = t->ifindex;
	hook->attach_point = BPF_TC_INGRESS;
}

static void detach(struct tunnel *t)
{
	if (!t->ifindex)
		return;
	struct bpf_tc_hook hook;
	hook_of(t, &hook);
	DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = HH_TUNNEL_TC_HANDLE, .priority = HH_TUNNEL_TC_PRIORITY);
	bpf_tc_detach(&hook, &opts); /* gone already (device deleted, someone flushed it): fine */
	if (t->hook_created) {
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS; /* both: deletes the clsact qdisc */
		bpf_tc_hook_destroy(&hook);
	}
	t->ifindex = 0;
}

static void destroy(struct tunnel *t)
{
	if (!t)
		return;
	detach(t);
	bpf_object__close(t->obj);
	free(t->percpu);
	free(t);
}

static int map_fd(struct tunnel *t, const char *name, const char *path, int *fd)
{
	*fd = bpf_object__find_map_fd_by_name(t->obj, name);
	if (*fd < 0)
		return hh_fail(-ENOENT, "%s has no map %s: not the tunnel check's object", path, name);
	return 0;
}

int hh_tunnel_open(const char *bpf_path, const char *device, uint32_t flags)
{
	char why[sizeof(libbpf_said) + 16];
	int err, h;

	if (!bpf_path)
		return hh_fail(-EINVAL, "hh_tunnel_open: no BPF object path");
	if (flags & ~(uint32_t)(HH_TUNNEL_NO_ATTACH | HH_TUNNEL_TEST_PROG))
		return hh_fail(-EINVAL, "hh_tunnel_open: unknown flags 0x%x", flags);
	if (!(flags & HH_TUNNEL_NO_ATTACH) && (!device || !*device || strlen(device) >= IF_NAMESIZE))
		return hh_fail(-EINVAL, "hh_tunnel_open: '%s' is not an interface name", device ? device : "(null)");

	pthread_once(&print_once, set_print);
	libbpf_said[0] = 0;

	struct tunnel *t = calloc(1, sizeof(*t));
	if (!t)
		return hh_fail(-ENOMEM, "hh_tunnel_open: out of memory");
	t->test_fd = -1;
	t->ncpus = libbpf_num_possible_cpus();
	if (t->ncpus <= 0) {
		err = t->ncpus < 0 ? t->ncpus : -EINVAL;
		free(t);
		return hh_fail(err, "counting the possible CPUs: %s", strerror(-err));
	}
	t->percpu = calloc((size_t)t->ncpus, sizeof(__u64));
	if (!t->percpu) {
		free(t);
		return hh_fail(-ENOMEM, "hh_tunnel_open: out of memory");
	}

	t->obj = bpf_object__open_file(bpf_path, NULL);
	if (!t->obj) {
		err = -errno;
		destroy(t);
		return hh_fail(err, "opening the tunnel check's BPF object %s: %s%s (build it with make -C native/host-agent)",
			       bpf_path, strerror(-err), said(why, sizeof(why)));
	}
	struct bpf_program *prog = bpf_object__find_program_by_name(t->obj, HH_TUNNEL_PROG);
	struct bpf_program *test = bpf_object__find_program_by_name(t->obj, HH_TUNNEL_TEST_PROG_NAME);
	if (!prog || !test) {
		destroy(t);
		return hh_fail(-ENOENT, "%s lacks the program %s or %s: not the tunnel check's object", bpf_path,
			       HH_TUNNEL_PROG, HH_TUNNEL_TEST_PROG_NAME);
	}
	bpf_program__set_autoload(test, (flags & HH_TUNNEL_TEST_PROG) != 0);
	err = bpf_object__load(t->obj);
	if (err) {
		destroy(t);
		return hh_fail(err, "loading the tunnel check %s into the kernel: %s%s%s", bpf_path, strerror(-err),
			       err == -EPERM ? " (needs CAP_BPF and CAP_NET_ADMIN: run as root)" : "", said(why, sizeof(why)));
	}
	if ((err = map_fd(t, "hh_flows", bpf_path, &t->flows_fd)) || (err = map_fd(t, "hh_balancers", bpf_path, &t->balancers_fd)) ||
	    (err = map_fd(t, "hh_config", bpf_path, &t->config_fd)) || (err = map_fd(t, "hh_counters", bpf_path, &t->counters_fd))) {
		destroy(t);
		return err;
	}
	if (flags & HH_TUNNEL_TEST_PROG)
		t->test_fd = bpf_program__fd(test);

	if (!(flags & HH_TUNNEL_NO_ATTACH)) {
		snprintf(t->device, sizeof(t->device), "%s", device);
		int ifindex = (int)if_nametoindex(device);
		if (!ifindex) {
			err = errno == ENXIO || errno == 0 ? -ENODEV : -errno;
			destroy(t);
			return hh_fail(err, "the tunnel check's device %s does not exist in this network namespace (%s)",
				       device, strerror(-err));
		}
		t->ifindex = ifindex;
		struct bpf_tc_hook hook;
		hook_of(t, &hook);
		libbpf_said[0] = 0;
		err = bpf_tc_hook_create(&hook);
		if (err == 0)
			t->hook_created = 1;
		else if (err != -EEXIST) {
			t->ifindex = 0;
			destroy(t);
			return hh_fail(err, "creating the clsact qdisc on %s: %s%s%s", device, strerror(-err),
				       err == -EPERM ? " (needs CAP_NET_ADMIN: run as root)" : "", said(why, sizeof(why)));
		}
		libbpf_said[0] = 0;
		/* REPLACE: a filter a crashed agent left at our handle and priority is swapped for this one. */
		DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = bpf_program__fd(prog), .flags = BPF_TC_F_REPLACE,
				    .handle = HH_TUNNEL_TC_HANDLE, .priority = HH_TUNNEL_TC_PRIORITY);
		err = bpf_tc_attach(&hook, &opts);
		if (err) {
			destroy(t);
			return hh_fail(err, "attaching the tunnel check to %s ingress: %s%s", device, strerror(-err),
				       said(why, sizeof(why)));
		}
	}

	pthread_mutex_lock(&table_lock);
	for (h = 0; h < HH_TUNNEL_MAX_HANDLES && table[h]; h++)
		;
	if (h < HH_TUNNEL_MAX_HANDLES)
		table[h] = t;
	pthread_mutex_unlock(&table_lock);
	if (h == HH_TUNNEL_MAX_HANDLES) {
		destroy(t);
		return hh_fail(-EMFILE, "%d tunnel checks are open already", HH_TUNNEL_MAX_HANDLES);
	}
	return h;
}

int hh_tunnel_set_balancers(int h, const uint32_t *addrs, size_t n)
{
	struct tunnel *t = NULL;
	int err = get(h, &t);
	if (err)
		return err;
	if (n > HH_TUNNEL_MAX_BALANCERS)
		return hh_fail(-ENOSPC, "%zu balancer addresses, the tunnel check holds %d", n, HH_TUNNEL_MAX_BALANCERS);
	if (n && !addrs)
		return hh_fail(-EINVAL, "hh_tunnel_set_balancers: NULL addresses");
	__u32 one = 1, slot = HH_CFG_CHECK_SENDER, on = n > 0;

	/* New ones in before the check goes on, old ones out after: no moment refuses a listed balancer. */
	for (size_t i = 0; i < n; i++) {
		__u32 key = ntohl(addrs[i]);
		if ((err = bpf_map_update_elem(t->balancers_fd, &key, &one, BPF_ANY)))
			return hh_fail(err, "adding balancer %u to the tunnel check: %s", addrs[i], strerror(-err));
	}
	if ((err = bpf_map_update_elem(t->config_fd, &slot, &on, BPF_ANY)))
		return hh_fail(err, "switching the tunnel check's sender check: %s", strerror(-err));
	__u32 key, next, stale[HH_TUNNEL_MAX_BALANCERS];
	size_t nstale = 0;
	for (int r = bpf_map_get_next_key(t->balancers_fd, NULL, &next); r == 0 && nstale < HH_TUNNEL_MAX_BALANCERS;
	     r = bpf_map_get_next_key(t->balancers_fd, &key, &next)) {
		key = next;
		size_t i = 0;
		while (i < n && ntohl(addrs[i]) != key)
			i++;
		if (i == n)
			stale[nstale++] = key;
	}
	for (size_t i = 0; i < nstale; i++)
		bpf_map_delete_elem(t->balancers_fd, &stale[i]);
	return 0;
}

static int flow_key(struct hh_flow_key *k, uint32_t vni, uint32_t client_ip, uint32_t vip, uint16_t client_port,
		    uint16_t vip_port)
{
	if (vni > 0xffffff)
		return hh_fail(-EINVAL, "flow ID %u is not a 24-bit VNI", vni);
	memset(k, 0, sizeof(*k));
	k->vni = vni;
	k->client_ip = client_ip;
	k->vip = vip;
	k->client_port = client_port;
	k->vip_port = vip_port;
	return 0;
}

int hh_tunnel_allow(int h, uint32_t vni, uint32_t client_ip, uint32_t vip, uint16_t client_port, uint16_t vip_port)
{
	struct tunnel *t = NULL;
	struct hh_flow_key k;
	int err = get(h, &t);
	if (err || (err = flow_key(&k, vni, client_ip, vip, client_port, vip_port)))
		return err;
	__u32 one = 1;
	err = bpf_map_update_elem(t->flows_fd, &k, &one, BPF_NOEXIST);
	if (err == 0) {
		t->flows++;
		return 1;
	}
	if (err == -EEXIST)
		return 0;
	if (err == -E2BIG)
		return hh_fail(-ENOSPC, "the tunnel check is full: %d flows allowed already (flow %u refused)",
			       HH_TUNNEL_MAX_FLOWS, vni);
	return hh_fail(err, "allowing flow %u in the tunnel check: %s", vni, strerror(-err));
}

int hh_tunnel_revoke(int h, uint32_t vni, uint32_t client_ip, uint32_t vip, uint16_t client_port, uint16_t vip_port)
{
	struct tunnel *t = NULL;
	struct hh_flow_key k;
	int err = get(h, &t);
	if (err || (err = flow_key(&k, vni, client_ip, vip, client_port, vip_port)))
		return err;
	err = bpf_map_delete_elem(t->flows_fd, &k);
	if (err == 0) {
		t->flows--;
		return 1;
	}
	if (err == -ENOENT)
		return 0;
	return hh_fail(err, "revoking flow %u in the tunnel check: %s", vni, strerror(-err));
}

int hh_tunnel_revoke_batch(int h, const struct hh_flow_key *keys, size_t n)
{
	struct tunnel *t = NULL;
	int err = get(h, &t);
	if (err)
		return err;
	if (n && !keys)
		return hh_fail(-EINVAL, "hh_tunnel_revoke_batch: NULL keys");
	if (n > HH_TUNNEL_MAX_FLOWS)
		return hh_fail(-EINVAL, "hh_tunnel_revoke_batch: %zu keys, the map holds %d", n, HH_TUNNEL_MAX_FLOWS);
	for (size_t i = 0; i < n; i++)
		if (keys[i].vni > 0xffffff)
			return hh_fail(-EINVAL, "hh_tunnel_revoke_batch: key %zu: flow ID %u is not a 24-bit VNI", i, keys[i].vni);
	DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, opts);
	int removed = 0;
	size_t done = 0;
	while (done < n) {
		/* The kernel stops at the first absent key (-ENOENT), having deleted
		 * `count` before it: skip that one and go on. */
		__u32 count = (__u32)(n - done);
		err = bpf_map_delete_batch(t->flows_fd, keys + done, &count, &opts);
		removed += (int)count;
		done += count;
		if (err == 0)
			continue;
		if (err == -ENOENT) {
			done++;
			continue;
		}
		if (err == -EINVAL || err == -ENOTSUP || err == -EOPNOTSUPP || err == -524 /* ENOTSUPP */) {
			/* No batch operations here: one by one. */
			for (; done < n; done++) {
				err = bpf_map_delete_elem(t->flows_fd, &keys[done]);
				if (err == 0)
					removed++;
				else if (err != -ENOENT)
					break;
			}
			if (done == n)
				break;
		}
		t->flows -= removed;
		return hh_fail(err, "revoking flows in the tunnel check (%d removed before): %s", removed, strerror(-err));
	}
	t->flows -= removed;
	return removed;
}

int hh_tunnel_flows(int h)
{
	struct tunnel *t = NULL;
	int err = get(h, &t);
	return err ? err : (int)t->flows;
}

int hh_tunnel_counters(int h, uint64_t *out, size_t count)
{
	struct tunnel *t = NULL;
	int err = get(h, &t);
	if (err)
		return err;
	if (count && !out)
		return hh_fail(-EINVAL, "hh_tunnel_counters: NULL output");
	for (__u32 i = 0; i < HH_TC_COUNT && i < count; i++) {
		if ((err = bpf_map_lookup_elem(t->counters_fd, &i, t->percpu)))
			return hh_fail(err, "reading the tunnel check's counter %u: %s", i, strerror(-err));
		uint64_t sum = 0;
		for (int c = 0; c < t->ncpus; c++)
			sum += t->percpu[c];
		out[i] = sum;
	}
	return HH_TC_COUNT;
}

int hh_tunnel_test_run(int h, const void *frame, size_t len, uint32_t flags, uint32_t vni, uint32_t remote_ip)
{
	struct tunnel *t = NULL;
	int err = get(h, &t);
	if (err)
		return err;
	if (t->test_fd < 0)
		return hh_fail(-ENOTSUP, "tunnel check handle %d was opened without HH_TUNNEL_TEST_PROG", h);
	if (!frame || len < 14 || len > 65535)
		return hh_fail(-EINVAL, "hh_tunnel_test_run: a frame is 14..65535 bytes, got %zu", len);
	struct __sk_buff ctx;
	memset(&ctx, 0, sizeof(ctx));
	ctx.cb[0] = flags;
	ctx.cb[1] = vni;
	ctx.cb[2] = ntohl(remote_ip);
	DECLARE_LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = (__u32)len, .ctx_in = &ctx,
			    .ctx_size_in = sizeof(ctx), .repeat = 1);
	if ((err = bpf_prog_test_run_opts(t->test_fd, &opts)))
		return hh_fail(err, "BPF_PROG_TEST_RUN of the tunnel check: %s", strerror(-err));
	return (int)opts.retval;
}

int hh_tunnel_close(int h)
{
	struct tunnel *t = NULL;
	pthread_mutex_lock(&table_lock);
	int err = get(h, &t);
	if (!err)
		table[h] = NULL;
	pthread_mutex_unlock(&table_lock);
	if (err)
		return err;
	destroy(t);
	return 0;
}
