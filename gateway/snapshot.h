/*
 * etcd's Maintenance/Snapshot (a server stream) behind keel-gateway: keel's own snapshot of a
 * member (a consistent copy of its LMDB store, keel_snapshot in keel.h) streamed to the client as
 * SnapshotResponse blobs, then the SHA-256 of it all as the last blob, as etcd appends one to its
 * bbolt copy. `etcdctl snapshot save` through the gateway therefore writes keel's copy followed by
 * that digest; `keelctl snapshot status|restore` read such a file (etcdctl's own status and
 * restore need bbolt and cannot).
 *
 * The download runs on a thread of its own (keel_snapshot blocks); pieces reach the loop through
 * a bounded queue (snapshot.c says how memory stays bounded).
 */
#ifndef KEEL_GW_SNAPSHOT_H
#define KEEL_GW_SNAPSHOT_H

#include "call.h"

/* The method's on_message: starts the download (the call ends when it does). */
void gw_snapshot_on_message(struct gw_call *c, ProtobufCMessage *msg);

/* The method's on_cancel: stops the download; the call ends once its thread has returned. */
void gw_snapshot_on_cancel(struct gw_call *c);

#endif
