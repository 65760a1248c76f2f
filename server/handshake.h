/*
 * The peer handshake's bytes, apart from the sockets that carry them (transport.c does the I/O),
 * so they can be checked and fuzzed without a loop.
 *
 * Fixed size, little-endian: magic, version (the head, read and checked first, so a peer of
 * another version is refused at once instead of after the handshake timeout), then cluster id,
 * raft id, and four NUL-padded 64-byte fields: peer address, client address, name, zone.
 * Version 2 added the cluster id. The rule a handshake must pass is in transport.h.
 *
 * The magic says what the connection is for: "KEELPEER", a raft stream; "KEELFTCH", a member's
 * checkpoint fetch (fetch.h), which the accepting member serves from its checkpoint streamer
 * instead of handing it to raft. Both pass the same rule; a member that knows only the first
 * refuses the second by its head ("not a keel peer handshake"), so raft links between members
 * of both kinds are unchanged.
 *
 * Nothing here allocates or keeps a pointer.
 */
#ifndef KEEL_HANDSHAKE_H
#define KEEL_HANDSHAKE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define KEEL_HANDSHAKE_HEAD 16
#define KEEL_HANDSHAKE_LEN  (KEEL_HANDSHAKE_HEAD + 8 + 8 + 4 * 64)

/* What a connection is for (the magic it opens with). */
enum keel_handshake_kind {
    KEEL_HANDSHAKE_RAFT = 0, /* a raft stream */
    KEEL_HANDSHAKE_FETCH,    /* a checkpoint fetch: Hello and a Snapshot request follow */
};

/* What a connecting member says about itself. The strings are cut to 63 bytes on the wire. */
struct keel_handshake {
    enum keel_handshake_kind kind;
    uint64_t cluster_id;
    uint64_t id;
    const char *peer, *client, *name, *zone;
};

/* The handshake of h, of this version, into out. */
void keel_handshake_encode(const struct keel_handshake *h, uint8_t out[KEEL_HANDSHAKE_LEN]);

/* 0 when the first KEEL_HANDSHAKE_HEAD bytes say a keel peer of this version follows (of either
 * kind), else -1 with why in why. */
int keel_handshake_check_head(const uint8_t *head, char *why, size_t len);

/* The peer address member id has (and must connect from), or NULL when id is no member. */
typedef const char *(*keel_handshake_lookup)(void *data, uint64_t id);

/* What a handshake is checked against. */
struct keel_handshake_rule {
    uint64_t cluster_id; /* 0: not known yet (a joining member): any cluster is taken */
    uint64_t self_id;
    keel_handshake_lookup lookup;
    void *data;
};

/* A lookup over --initial-cluster: data is the struct keel_config. */
const char *keel_handshake_config_peer(void *cfg, uint64_t id);

/* Who a handshake proved to be, and what it says. Strings NUL-terminated. */
struct keel_handshake_peer {
    enum keel_handshake_kind kind;
    uint64_t id;
    uint64_t cluster_id;
    char peer[64]; /* as lookup gave it */
    char client[64];
    char zone[64];
    char name[64]; /* as the peer says (never checked) */
    /* peer's host is a DNS name: the source address is not checked yet, and the handshake
     * stands only once one of the name's addresses (resolved now) is the connection's source */
    bool by_name;
};

/*
 * Check a whole handshake (its head already checked) that arrived from the IPv4 address from:
 * it must name r's cluster (any but 0 when r knows none), an id lookup knows other than
 * r->self_id, that member's peer address, come from that address's host, and give a client
 * address of the form a.b.c.d:port. 0 with out filled, or -1 with why in why. When the peer
 * address's host is a name, "come from that address's host" is left to the caller (out->by_name),
 * which must resolve it and refuse the handshake unless from is among its addresses.
 */
int keel_handshake_check(const struct keel_handshake_rule *r,
                         const uint8_t hello[KEEL_HANDSHAKE_LEN], struct in_addr from,
                         struct keel_handshake_peer *out, char *why, size_t len);

#endif
