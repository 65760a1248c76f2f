/*
 * Checkpoint fetch: the client side of the Snapshot request, with blocking sockets, for the
 * storage writer thread of a member whose state is behind a raft snapshot token.
 */
#ifndef KEEL_FETCH_H
#define KEEL_FETCH_H

#include <stddef.h>
#include <stdint.h>

/*
 * Connect to the member at addr ("a.b.c.d:port") from bind_host (NULL: any), ask for a
 * checkpoint and write it to out_fd as it arrives. The member must answer the handshake and
 * every chunk with cluster_id. Every socket operation is bounded by timeout_ms (the member
 * streams while it copies, so the first chunk never waits for the whole copy).
 * 0, or a KEEL_E* code with a message in err.
 */
int keel_fetch_checkpoint(const char *addr, const char *bind_host, uint64_t cluster_id, int out_fd,
                          int timeout_ms, char *err, size_t errlen);

struct keel_tls_options;

/*
 * keel_fetch_checkpoint with what a cluster may ask of the fetching member:
 *  - tls (a client's options: the CAs, this member's certificate and key) when the client
 *    port speaks TLS: a context is made for this fetch alone, read from the files now (the
 *    writer thread shares no context with the loop, where SIGHUP reloads its own); the
 *    member's certificate must name addr's host. NULL: plaintext. A refusal is KEEL_EIO with
 *    OpenSSL's reason in err;
 *  - token, an auth token on the request (NULL: none): a cluster with auth enabled answers
 *    Snapshot to root only (auth.h: keel_auth_member_token).
 */
int keel_fetch_checkpoint_as(const char *addr, const char *bind_host,
                             const struct keel_tls_options *tls, uint64_t cluster_id,
                             const char *token, int out_fd, int timeout_ms, char *err,
                             size_t errlen);

#endif
