/*
 * Checkpoint fetch: the fetching side, with blocking sockets, for the storage writer thread of a
 * member whose state is behind a raft snapshot token.
 *
 * A member fetches from the leader's PEER port, as a member: it opens with the peer handshake
 * (handshake.h, of the fetch kind), which the leader checks as it checks a raft link (transport.h:
 * a current member's id, from that member's host, of this cluster; with peer TLS a certificate of
 * the peer CA naming that member's address), and then speaks the client protocol's snapshot
 * stream (proto/snapread.h: Hello, a Snapshot request, the chunks). Membership is the credential:
 * no auth token is sent, so a member added while auth is on (whose store holds no auth state
 * yet) catches up like any other. The client port's Snapshot (keelctl snapshot save) is not this
 * path and stays root's with auth on.
 */
#ifndef KEEL_FETCH_H
#define KEEL_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "handshake.h"

struct keel_tls_options;

/*
 * Connect to the member at peer ("host:port": an IPv4 literal, or a DNS name resolved here to its
 * first IPv4 address) from bind_host (an IPv4 literal; NULL or "0.0.0.0": any), say as (its kind
 * is made KEEL_HANDSHAKE_FETCH here; its cluster_id is the one the member must answer with, and
 * every chunk carry), ask for a checkpoint and write it to out_fd as it arrives. Every socket
 * operation is bounded by timeout_ms (the member streams while it copies, so the first chunk
 * never waits for the whole copy).
 *
 * tls: peer TLS (a client's options: the peer CA, this member's peer certificate and key), with
 * a context made for this fetch alone, read from the files now (the writer thread shares no
 * context with the loop, where SIGHUP reloads its own); the member's certificate must name
 * peer's host, as a raft link's must. NULL: plaintext. A refusal is KEEL_EIO with OpenSSL's
 * reason in err.
 *
 * 0, or a KEEL_E* code with a message in err. A member that refused the handshake closes the
 * connection unanswered (it logs why): err then says the connection ended early.
 */
int keel_fetch_checkpoint(const char *peer, const char *bind_host,
                          const struct keel_tls_options *tls, const struct keel_handshake *as,
                          int out_fd, int timeout_ms, char *err, size_t errlen);

#endif
