/* SPDX-License-Identifier: MIT
 * DPDK telemetry commands under /handoff/ (dpdk-telemetry.py, the
 * dpdk_telemetry.v2 socket in EAL's runtime directory).
 *
 * Callbacks run on telemetry client threads, not on an lcore, and may run
 * before, during and after the shim's life (DPDK has no way to unregister a
 * command and keeps the socket until the process exits). They read only
 * values the shim keeps word-sized and single-writer, with relaxed atomic
 * loads, and never touch the hash tables.
 */
#ifndef HS_TELEMETRY_H
#define HS_TELEMETRY_H

#include <stdint.h>
#include "handoff_shim.h"

/**
 * Register the /handoff/ commands (once per process) and let them read the
 * running shim. Called by hs_init once the workers run.
 * @return 0, or -EINVAL / -ENOMEM from rte_telemetry_register_cmd (the
 *   reason is in hs_last_error(); the shim runs on without telemetry).
 */
int hs_telemetry_attach(void);

/**
 * Stop the commands reading shim state; waits for a callback in progress.
 * Called by hs_stop before anything is freed. Commands then answer
 * {"running": 0} (/handoff/info) or null.
 */
void hs_telemetry_detach(void);

/**
 * Store a host's configuration where the telemetry thread reads it, under
 * the lock its readers take (a struct copy is not atomic).
 */
void hs_telemetry_host_conf_set(uint32_t id, const struct hs_host_conf *h);

#endif
