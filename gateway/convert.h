/*
 * keel -> etcd message conversions shared by every handler, and keel's failures as etcd's errors.
 *
 * The built messages are shells allocated in an arena whose byte fields (keys, values) point
 * into the keel message they came from: they live as long as both the arena and that message.
 * That is enough because a transport encodes a message inside gw_call_send.
 */
#ifndef KEEL_GW_CONVERT_H
#define KEEL_GW_CONVERT_H

#include "arena.h"
#include "call.h"
#include "keel.pb-c.h"

/* etcd's header from keel's (NULL h: an all-zero header; etcd clients dereference it, so a
 * response always carries one). NULL only when the arena is out of memory. */
Etcdserverpb__ResponseHeader *gw_header(struct keel_arena *a, const Keel__ResponseHeader *h);

/* etcd's KeyValue / Event from keel's (NULL in, NULL out). */
Etcdserverpb__KeyValue *gw_kv(struct keel_arena *a, const Keel__KeyValue *kv);
Etcdserverpb__Event *gw_event(struct keel_arena *a, const Keel__Event *e);

/* An array of n converted KeyValues (NULL when n is 0 or out of memory). */
Etcdserverpb__KeyValue **gw_kvs(struct keel_arena *a, Keel__KeyValue *const *kvs, size_t n);

/*
 * keel's failure (a KEEL_E* status, and the response libkeel delivered with it, may be NULL) as
 * the gRPC code and message an etcd client acts on: etcd's exact strings ("etcdserver: mvcc:
 * required revision has been compacted" ...), because clients match them (kube-apiserver relists
 * on that one); no leader, timeouts and lost leadership as Unavailable, the code clientv3 retries.
 * *message is static or points into resp (valid while resp is).
 */
enum gw_code gw_error(int status, const Keel__Response *resp, const char **message);

#endif
