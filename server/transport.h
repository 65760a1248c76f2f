/*
 * keel's raft_uv_transport: TCP between members, with every outgoing connection bound to the
 * member's own peer address (raft_uv_tcp binds only its listener, so Linux would pick
 * 127.0.0.1 as the source and the zone simulation could not tell members apart).
 *
 * A connection opens with a fixed-size handshake from the connecting side: magic, version,
 * raft id, and the sender's peer address, client address, name and zone. The accepting side
 * reads exactly that many bytes, then hands the stream to raft. The handshake is also how a
 * member learns its peers' client addresses (see members.h).
 */
#ifndef KEEL_TRANSPORT_H
#define KEEL_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "config.h"

/* Called on the loop for every handshake received. */
typedef void (*keel_transport_peer_cb)(void *data, uint64_t id, const char *client,
                                       const char *zone);

struct keel_transport_self {
    char client[KEEL_ADDR_MAX];
    char name[KEEL_NAME_MAX];
    char zone[KEEL_NAME_MAX];
};

/* Initialise t as a raft_uv_transport on loop; raft calls its methods. 0 or RAFT_NOMEM. */
int keel_transport_init(struct raft_uv_transport *t, uv_loop_t *loop,
                        const struct keel_transport_self *self, keel_transport_peer_cb peer_cb,
                        void *peer_data);

/* Free what init allocated; call after raft has closed the transport. */
void keel_transport_close(struct raft_uv_transport *t);

#endif
