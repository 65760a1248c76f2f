/* The peer handshake's bytes (see handshake.h; the acceptance rule is transport.h's). */
#include "handshake.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "bytes.h"
#include "hostport.h"

#define HELLO_MAGIC   0x4b45454c50454552ull /* "KEELPEER" */
#define FETCH_MAGIC   0x4b45454c46544348ull /* "KEELFTCH" */
#define HELLO_VERSION 2
#define HELLO_CLUSTER 16
#define HELLO_ID      24
#define HELLO_PEER    32
#define HELLO_CLIENT  96
#define HELLO_NAME    160
#define HELLO_ZONE    224

static void put_str(uint8_t *p, const char *s)
{
    memset(p, 0, 64);
    memcpy(p, s, strnlen(s, 63));
}

/* A field as a C string: the sender may fill all 64 bytes, so the last one is never read. */
static void get_str(char *dst, const uint8_t *p)
{
    memcpy(dst, p, 63);
    dst[63] = '\0';
}

void keel_handshake_encode(const struct keel_handshake *h, uint8_t out[KEEL_HANDSHAKE_LEN])
{
    keel_put_le64(out, h->kind == KEEL_HANDSHAKE_FETCH ? FETCH_MAGIC : HELLO_MAGIC);
    keel_put_le64(out + 8, HELLO_VERSION);
    keel_put_le64(out + HELLO_CLUSTER, h->cluster_id);
    keel_put_le64(out + HELLO_ID, h->id);
    put_str(out + HELLO_PEER, h->peer);
    put_str(out + HELLO_CLIENT, h->client);
    put_str(out + HELLO_NAME, h->name);
    put_str(out + HELLO_ZONE, h->zone);
}

int keel_handshake_check_head(const uint8_t *head, char *why, size_t len)
{
    if (head[0] == 0x16 && head[1] == 0x03) {
        /* A TLS handshake record (type 22, version 3.x): a member with peer TLS on. */
        snprintf(why, len,
                 "the peer speaks TLS: peer TLS is on there and off here "
                 "(--peer-cert-file, --peer-key-file, --peer-trusted-ca-file)");
        return -1;
    }
    uint64_t magic = keel_get_le64(head);
    if (magic != HELLO_MAGIC && magic != FETCH_MAGIC) {
        snprintf(why, len, "not a keel peer handshake");
        return -1;
    }
    uint64_t version = keel_get_le64(head + 8);
    if (version != HELLO_VERSION) {
        snprintf(why, len, "handshake version %llu, this member speaks %d",
                 (unsigned long long)version, HELLO_VERSION);
        return -1;
    }
    return 0;
}

const char *keel_handshake_config_peer(void *cfg, uint64_t id)
{
    const struct keel_member_conf *m = keel_config_member(cfg, id);
    return m ? m->peer : NULL;
}

int keel_handshake_check(const struct keel_handshake_rule *r,
                         const uint8_t hello[KEEL_HANDSHAKE_LEN], struct in_addr from,
                         struct keel_handshake_peer *out, char *why, size_t len)
{
    uint64_t cluster = keel_get_le64(hello + HELLO_CLUSTER);
    if (r->cluster_id != 0 && cluster != r->cluster_id) {
        snprintf(why, len, "from cluster %016llx, this member is in cluster %016llx",
                 (unsigned long long)cluster, (unsigned long long)r->cluster_id);
        return -1;
    }
    if (cluster == 0) {
        snprintf(why, len, "from a member that does not know its cluster yet");
        return -1;
    }
    uint64_t id = keel_get_le64(hello + HELLO_ID);
    get_str(out->name, hello + HELLO_NAME);
    const char *peer = r->lookup(r->data, id);
    if (peer == NULL) {
        snprintf(why, len,
                 "claims member id %016llx (named %s), which is no member of this cluster",
                 (unsigned long long)id, out->name);
        return -1;
    }
    if (id == r->self_id) {
        snprintf(why, len, "claims to be this member (%016llx)", (unsigned long long)id);
        return -1;
    }
    char addr[64], host[KEEL_ADDR_MAX];
    int port;
    struct in_addr want;
    get_str(addr, hello + HELLO_PEER);
    if (strcmp(addr, peer) != 0) {
        snprintf(why, len, "claims member %016llx (%s) with peer address %.63s, which is %s",
                 (unsigned long long)id, out->name, addr, peer);
        return -1;
    }
    /* An IPv4 literal is checked here. A name (a Kubernetes pod's, whose IP changes at each
     * restart) is for the caller to resolve, off its loop, and check from against (by_name):
     * text is never compared with an IP. config.c and the member changes take nothing else, so
     * a peer address that parses as neither cannot be; refuse if it ever is. */
    int kind = keel_addr_split_any(peer, host, sizeof(host), &port, NULL, 0);
    if (kind < 0 || (kind == KEEL_HOST_IPV4 &&
                     (inet_pton(AF_INET, host, &want) != 1 || from.s_addr != want.s_addr))) {
        snprintf(why, len,
                 "claims member %016llx (%s), whose peer address is %s, from another host",
                 (unsigned long long)id, out->name, peer);
        return -1;
    }
    /* What every member will be told to dial: the same form --listen-client must have. */
    get_str(out->client, hello + HELLO_CLIENT);
    if (keel_addr_split(out->client, host, sizeof(host), &port) != 0) {
        snprintf(why, len, "member %016llx gives a client address that is not a.b.c.d:port",
                 (unsigned long long)id);
        return -1;
    }
    get_str(out->zone, hello + HELLO_ZONE);
    snprintf(out->peer, sizeof(out->peer), "%s", peer);
    out->id = id;
    out->cluster_id = cluster;
    out->by_name = kind == KEEL_HOST_NAME;
    out->kind = keel_get_le64(hello) == FETCH_MAGIC ? KEEL_HANDSHAKE_FETCH : KEEL_HANDSHAKE_RAFT;
    return 0;
}
