/*
 * The peer handshake's bytes, apart from the sockets that carry them (transport.c does the I/O),
 * so they can be checked and fuzzed without a loop.
 *
 * Fixed size, little-endian: magic, version (the head, read and checked first, so a peer of
 * another version is refused at once instead of after the handshake timeout), then cluster id,
 * raft id, and four NUL-padded 64-byte fields: peer address, client address, name, zone.
 * Version 2 added the cluster id. The rule a handshake must pass is in transport.h.
 *
 * Nothing here allocates or keeps a pointer.
 */
#ifndef KEEL_HANDSHAKE_H
#define KEEL_HANDSHAKE_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define KEEL_HANDSHAKE_HEAD 16
#define KEEL_HANDSHAKE_LEN  (KEEL_HANDSHAKE_HEAD + 8 + 8 + 4 * 64)

/* What a connecting member says about itself. The strings are cut to 63 bytes on the wire. */
struct keel_handshake {
    uint64_t cluster_id;
    uint64_t id;
    const char *peer, *client, *name, *zone;
};

/* The handshake of h, of this version, into out. */
void keel_handshake_encode(const struct keel_handshake *h, uint8_t out[KEEL_HANDSHAKE_LEN]);

/* 0 when the first KEEL_HANDSHAKE_HEAD bytes say a keel peer of this version follows, else -1
 * with why in why. */
int keel_handshake_check_head(const uint8_t *head, char *why, size_t len);

/*
 * The configured member a whole handshake (its head already checked) proves to come from, when
 * it arrived from the IPv4 address from; NULL with why in why when it proves nothing. On success
 * client and zone (64 bytes each) get the NUL-terminated client address and zone it carries.
 */
const struct keel_member_conf *keel_handshake_check(const struct keel_config *cfg,
                                                    const uint8_t hello[KEEL_HANDSHAKE_LEN],
                                                    struct in_addr from, char client[64],
                                                    char zone[64], char *why, size_t len);

#endif
