/*
 * keel's raft_uv_transport: TCP between members, with every outgoing connection bound to the
 * member's own peer address (raft_uv_tcp binds only its listener, so Linux would pick
 * 127.0.0.1 as the source and the zone simulation could not tell members apart).
 *
 * A connection opens with a fixed-size handshake from the connecting side: magic, version,
 * cluster id, raft id, and the sender's peer address, client address, name and zone. The
 * accepting side reads exactly that many bytes, then hands the stream to raft. The handshake
 * is also how a member learns its peers' client addresses (see members.h).
 *
 * Checkpoint fetches come the same way (handshake.h: a fetch's own magic): a member whose state
 * is behind a raft snapshot dials the leader's peer port (fetch.h), and a handshake that passes
 * the rule below, TLS and certificate name included, hands the connection to the fetch hook
 * instead of raft (main.c: the checkpoint streamer, through a session that may ask for nothing
 * else). Membership and peer TLS are the fetch's credentials: no auth token is asked for, so a
 * member added while auth is on catches up like any other. Nothing a non-member sends reaches
 * the hook, and the hook bounds how many fetches it serves at once.
 *
 * With peer TLS (--peer-cert-file and the rest; peertls.h) the connection is TLS from its first
 * byte, the keel handshake inside it: the dialling member hands raft its stream only once the
 * accepting member's certificate chains to the CA and names the host dialled, and the accepting
 * member reads the keel handshake only from a member that showed a certificate of the CA. A
 * refused TLS handshake is logged on both sides with OpenSSL's reason (the dialler's failure
 * reaches the acceptor as an alert), and so is a plaintext member meeting a TLS one; raft retries
 * as after any failed connect. The rule below applies on top.
 *
 * Without peer TLS, the only proof of who connects is where the connection comes from. A
 * handshake is accepted only when it names this member's cluster (a member of another cluster
 * must never vote here or feed this log), the id it claims is a member other than this one (of
 * the raft configuration, which member add and remove change; of --initial-cluster only before
 * there is one), the peer address it gives is that member's, and the connection's source IP is
 * that address's host: the IPv4 literal itself, or for a DNS name one of the addresses it
 * resolves to now (looked up off the loop, at most MAX_RESOLVING_IN at once). A removed member is
 * refused from then on. Anything else is closed and logged, and neither raft nor the peer
 * callback ever hears of it: raft would otherwise take votes and appends from the impostor, and
 * its attributes would be published to every member. Members that share a host cannot be told
 * apart this way; each needs its own address.
 *
 * Members may be addressed by DNS name (a Kubernetes StatefulSet's keel-0.keel-peer...:2380):
 * the name is kept as given in raft's configuration and resolved with uv_getaddrinfo (libuv's
 * thread pool, never on the loop) at every connect attempt, so a member that comes back at
 * another IP is reached there. A name that does not resolve fails that attempt like a refused
 * connect (raft retries after its delay) and is logged, naming the member, once and then at most
 * every 30 s. This member announces itself with its --initial-cluster entry (the name), while it
 * listens on --listen-peer (an IPv4 literal: 0.0.0.0 or the pod's IP).
 */
#ifndef KEEL_TRANSPORT_H
#define KEEL_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

#include "config.h"
#include "handshake.h"

/* Who may connect, and what to do with one who did. */
struct keel_transport_hooks {
    void *data;
    /* A member's peer address, NULL for no member: the members of the raft configuration
     * (which changes with member add and remove), or --initial-cluster's before there is one. */
    keel_handshake_lookup lookup;
    /* Called on the loop for every handshake accepted (never for a refused one). While this
     * member knows no cluster (cfg->cluster_id 0: it joins one), a handshake of any cluster
     * from a member lookup knows is accepted: the callee makes that cluster this member's. */
    void (*peer)(void *data, const struct keel_handshake_peer *p);
    /* Called on the loop for a checkpoint fetch handshake accepted (never for a refused one, nor
     * while this member knows no cluster), instead of peer: fd is the connection's plaintext, a
     * blocking-or-not stream socket the callee owns and must close (with peer TLS, one end of
     * the link's socketpair: the link pumps until either end closes), positioned after the
     * handshake. p->kind is KEEL_HANDSHAKE_FETCH. NULL: fetches are refused. */
    void (*fetch)(void *data, const struct keel_handshake_peer *p, int fd);
};

/* Initialise t as a raft_uv_transport on loop; raft calls its methods. cfg says who this member
 * is (its cluster_id is read at every handshake); it and hooks->data must outlive t. 0,
 * RAFT_NOMEM, or RAFT_INVALID after logging why cfg's peer TLS files cannot be used. */
int keel_transport_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct keel_config *cfg,
                        const struct keel_transport_hooks *hooks);

/*
 * Cut this member off from its peers for good, for shutdown: every peer connection is shut down
 * at the socket (raft sees the peer hang up and closes the stream itself, so handles raft owns
 * stay raft's to close), and no new one is made or accepted. A leader cut off this way steps
 * down within two election timeouts, which is what node.c uses it for (see keel_node_stop).
 */
void keel_transport_isolate(struct raft_uv_transport *t);

/*
 * Read the peer TLS files again (main.c's SIGHUP): links made from now on use them, links up
 * keep theirs. Logs the outcome; on a failure (a missing file, a key that does not match) the
 * certificates in use stay. 0, or -1 after a failure; 0 when peer TLS is off.
 */
int keel_transport_reload_tls(struct raft_uv_transport *t);

/* Free what init allocated; call after raft has closed the transport. */
void keel_transport_close(struct raft_uv_transport *t);

#endif
