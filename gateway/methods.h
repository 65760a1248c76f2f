/*
 * Each handler module's methods, and the lookup over all of them (methods.c).
 *
 * A module lists the methods it serves in one table; an etcd method in no table is answered
 * Unimplemented by the transport ("unknown method"). A method keel cannot serve yet stays in its
 * module's table and answers Unimplemented with a message saying why, never a hang.
 */
#ifndef KEEL_GW_METHODS_H
#define KEEL_GW_METHODS_H

#include "call.h"

struct gw_method_table {
    const struct gw_method *methods;
    size_t n;
};

extern const struct gw_method_table gw_kv_table; /* kv.c: KV/{Range,Put,DeleteRange,Txn,Compact} */
extern const struct gw_method_table gw_lease_table;     /* lease.c: Lease's unary RPCs */
extern const struct gw_method_table gw_cluster_table;   /* cluster.c: Cluster/Member* */
extern const struct gw_method_table gw_maint_table;     /* maint.c: Maintenance RPCs */
extern const struct gw_method_table gw_auth_table;      /* auth.c: Auth RPCs */
extern const struct gw_method_table gw_watch_table;     /* watch.c: Watch/Watch */
extern const struct gw_method_table gw_keepalive_table; /* keepalive.c: Lease/LeaseKeepAlive */

/* The i-th method of all tables, in table order, or NULL past the last (fuzzing and tests walk
 * every method with it). */
const struct gw_method *gw_method_at(size_t i);

/* How many methods gw_method_at walks. */
size_t gw_method_count(void);

#endif
