/*
 * fuzz_handshake: the bytes a connecting peer sends before raft gets the stream
 * (server/handshake.h), checked as transport.c checks them, by a member of a three-member
 * cluster configured the way keeld parses its flags.
 *
 * Input: the handshake (the head is checked alone first, as it arrives first; a shorter input
 * stops where the transport would wait for more), then 4 bytes of the IPv4 source address the
 * connection came from (missing bytes: 127.0.2.1, the host of member b).
 *
 * Checked, besides crashes and undefined behaviour: an accepted handshake names a configured
 * member other than this one, came from that member's host, and carries a client address and a
 * zone that are C strings; encoding what it says (of the kind it was: a raft stream or a
 * checkpoint fetch) gives back the same accepted handshake.
 */
#include <arpa/inet.h>
#include <string.h>

#include "config.h"
#include "fuzz.h"
#include "handshake.h"

static struct keel_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char *args[] = FZ_MEMBER_ARGS;
    char err[256];
    if (keel_config_parse(&cfg, (int)(sizeof(args) / sizeof(args[0])) - 1, args, err,
                          sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_handshake: config: %s\n", err);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[256];
    if (size < KEEL_HANDSHAKE_HEAD || keel_handshake_check_head(data, why, sizeof(why)) != 0)
        return 0;
    if (size < KEEL_HANDSHAKE_LEN)
        return 0;
    struct in_addr from;
    inet_pton(AF_INET, "127.0.2.1", &from);
    if (size >= KEEL_HANDSHAKE_LEN + 4)
        memcpy(&from.s_addr, data + KEEL_HANDSHAKE_LEN, 4);
    struct keel_handshake_rule rule = {.cluster_id = cfg.cluster_id,
                                       .self_id = cfg.member_id,
                                       .lookup = keel_handshake_config_peer,
                                       .data = &cfg};
    struct keel_handshake_peer p;
    if (keel_handshake_check(&rule, data, from, &p, why, sizeof(why)) != 0) {
        FZ_CHECK(strlen(why) < sizeof(why));
        return 0;
    }
    const struct keel_member_conf *m = keel_config_member(&cfg, p.id);
    FZ_CHECK(m != NULL && m->id != cfg.member_id && strcmp(m->peer, p.peer) == 0);
    FZ_CHECK(p.cluster_id == cfg.cluster_id);
    FZ_CHECK(memchr(p.client, '\0', 64) != NULL && memchr(p.zone, '\0', 64) != NULL);
    char host[KEEL_ADDR_MAX];
    int port;
    struct in_addr want;
    FZ_CHECK(keel_addr_split(m->peer, host, sizeof(host), &port) == 0);
    FZ_CHECK(inet_pton(AF_INET, host, &want) == 1 && want.s_addr == from.s_addr);

    /* What it said, said again, is accepted again, and says the same. */
    struct keel_handshake h = {.kind = p.kind,
                               .cluster_id = cfg.cluster_id,
                               .id = m->id,
                               .peer = m->peer,
                               .client = p.client,
                               .name = p.name,
                               .zone = p.zone};
    uint8_t again[KEEL_HANDSHAKE_LEN];
    keel_handshake_encode(&h, again);
    struct keel_handshake_peer p2;
    FZ_CHECK(keel_handshake_check_head(again, why, sizeof(why)) == 0);
    FZ_CHECK(keel_handshake_check(&rule, again, from, &p2, why, sizeof(why)) == 0);
    FZ_CHECK(p2.kind == p.kind &&
             (p.kind == KEEL_HANDSHAKE_RAFT || p.kind == KEEL_HANDSHAKE_FETCH));
    FZ_CHECK(p2.id == p.id && strcmp(p.client, p2.client) == 0 && strcmp(p.zone, p2.zone) == 0);
    return 0;
}
