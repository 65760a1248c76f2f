/*
 * Peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file): the contexts both ends
 * of a peer link use, and the link itself, a pump between raft's stream and the TCP socket.
 *
 * Why a pump: raft_uv calls uv_write and uv_read_start on the stream a transport hands it
 * (research/raft.md section 3), so TLS cannot sit inside that stream. raft gets one end of a
 * socketpair (uv_pipe_open, as dqlite's transport hands pipes to raft); this module reads the
 * other end and the TCP socket on keel's loop and moves the bytes through tls.h's codec, never
 * blocking. The keel handshake travels inside TLS as well: the transport writes and reads it
 * with keel_peerlink_write / keel_peerlink_read before the hand-off.
 *
 * Verification, both ends: the dialling member checks that the accepting member's certificate
 * chains to the CA and names the host it dialled (an IPv4 literal or a DNS name, as raft's
 * configuration has it); the accepting member requires a client certificate chaining to the CA
 * (the transport then applies its handshake rule: transport.h).
 *
 * Memory bound per link (a peer that stops reading): each direction stops reading its source
 * once LINK_BOUND (256 KiB) is queued towards the other side, so a link holds at most
 * 2 x (LINK_BOUND + one 64 KiB read + TLS record overhead) of ours, about 700 KiB, plus the
 * kernel's socket buffers. Before the hand-off, reading stops once the keel handshake is in:
 * what follows waits in the codec (at most one 64 KiB read of it). Beyond that, raft queues its
 * own writes on its stream as it does on a plain TCP socket. Each link costs two descriptors
 * more than a plain one (the socketpair).
 *
 * Everything runs on one loop; nothing here blocks.
 */
#ifndef KEEL_PEERTLS_H
#define KEEL_PEERTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"

struct keel_peertls;
struct keel_peerlink;

/*
 * The contexts for cfg's three peer files (read and checked now). *out is NULL when cfg has no
 * peer TLS. 0, or -1 with a message naming the file and the reason in err. keel_peertls_free
 * releases it.
 */
int keel_peertls_new(const struct keel_config *cfg, struct keel_peertls **out, char *err,
                     size_t errlen);

/* Read the three files again (SIGHUP): new links use them, links made keep theirs. Both
 * contexts change or neither: 0, or -1 with why in err (the old ones stay). */
int keel_peertls_reload(struct keel_peertls *pt, char *err, size_t errlen);

/* Close every link handed off to raft (as keel_peerlink_close), for shutdown; links not yet
 * handed off are their owners' to close. */
void keel_peertls_close_links(struct keel_peertls *pt);

/* Links not yet freed. */
size_t keel_peertls_links(const struct keel_peertls *pt);

/* Free pt; every link must be gone (keel_peertls_links 0). NULL is fine. */
void keel_peertls_free(struct keel_peertls *pt);

/* What a link tells its owner. Called on the loop; data is the owner's. */
struct keel_peerlink_events {
    void *data;
    /* The TLS handshake completed: the peer is verified. */
    void (*ready)(void *data);
    /* Before the hand-off: plaintext may be waiting for keel_peerlink_read. */
    void (*readable)(void *data);
    /* Before the hand-off: the link failed (why: OpenSSL's reason, or what the peer did). The
     * owner closes it (keel_peerlink_close). Reading has stopped. */
    void (*failed)(void *data, const char *why);
    /* The link is closed and freed: last call. */
    void (*closed)(void *data);
};

/*
 * Start TLS on tcp, a connected (or accepted) TCP handle allocated with raft_malloc, which the
 * link takes over (it closes it and raft_free's it). dial: this end dialled peer_name (the host
 * of the address dialled, which the peer's certificate must name); otherwise it accepted.
 * label names the link in log lines after the hand-off ("to member m1 (...)"). 0 or a KEEL_E*
 * code (tcp is then still the caller's).
 */
int keel_peerlink_start(struct keel_peertls *pt, uv_tcp_t *tcp, bool dial, const char *peer_name,
                        const char *label, const struct keel_peerlink_events *ev,
                        struct keel_peerlink **out);

/* Before the hand-off: plaintext to send (the keel handshake); held until the TLS handshake
 * completes. 0 or a KEEL_E* code. */
int keel_peerlink_write(struct keel_peerlink *l, const void *data, size_t len);

/* Before the hand-off: take up to cap bytes of plaintext received; *n how many (0: none yet).
 * The rest stays for raft. 0 or a KEEL_E* code. */
int keel_peerlink_read(struct keel_peerlink *l, void *buf, size_t cap, size_t *n);

/* Before the hand-off: stop reading the socket until then (the handshake is in; what follows is
 * raft's and must not pile up while the transport checks it). */
void keel_peerlink_hold(struct keel_peerlink *l);

/*
 * Give raft its stream: one end of a new socketpair, a uv_pipe_t allocated with raft_malloc and
 * opened on loop (raft closes and frees it). From now on the link pumps on its own, closes
 * itself when either side ends, and reports only ev->closed. 0 or a KEEL_E* code (the link is
 * then unchanged: the owner closes it).
 */
int keel_peerlink_handoff(struct keel_peerlink *l, const struct keel_peerlink_events *ev,
                          uv_stream_t **stream);

/*
 * The same with the other end as a plain descriptor, for an owner that is not raft (a member's
 * checkpoint fetch, transport.h): *fd is the caller's to close; the link closes itself once it
 * is. 0 or a KEEL_E* code (the link is then unchanged: the owner closes it).
 */
int keel_peerlink_handoff_fd(struct keel_peerlink *l, const struct keel_peerlink_events *ev,
                             int *fd);

/* Close the link (idempotent): its handles close, then ev->closed. */
void keel_peerlink_close(struct keel_peerlink *l);

/* Whether the link's verified peer certificate names host (keel_tls_conn_peer_names): the
 * accepting member's check that a dialling member's certificate is that member's. */
bool keel_peerlink_names(const struct keel_peerlink *l, const char *host);

#endif
