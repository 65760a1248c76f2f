/*
 * Reading a member's snapshot stream over a blocking socket: the one reader both keeld's
 * checkpoint fetch (server/fetch.c) and libkeel's snapshot download (client/snapshot.c) use.
 *
 * The stream, as keeld serves it (server/snapstream.c): the client's Hello, the member's
 * HelloResponse, then a SnapshotRequest, answered by Responses with the request's id, each a
 * SnapshotResponse carrying the next piece of a compacted copy of the member's store; the last
 * has remaining_bytes = 0. The request goes only once the hello callback accepted the member
 * (its cluster id), so a member of the wrong cluster never starts copying.
 *
 * Blocking by design: both callers are one-shot downloads on a thread of their own (the fsm's
 * writer thread, a CLI); every receive is bounded by the socket's receive timeout.
 */
#ifndef KEEL_SNAPREAD_H
#define KEEL_SNAPREAD_H

#include <stddef.h>
#include <stdint.h>

#include "keel.pb-c.h"

/*
 * Connect to addr ("HOST:PORT", hostport.h: an IPv4 literal, or a name resolved now, blocking,
 * its IPv4 addresses tried in turn), from bind_host (an IPv4 literal) when not NULL, with every
 * send, receive and each connect bounded by timeout_ms. A descriptor, or -1 with errno set
 * (EINVAL: addr or bind_host does not parse; ENXIO: the name does not resolve).
 */
int keel_snapread_dial(const char *addr, const char *bind_host, int timeout_ms);

/* The member's handshake answer: 0 to go on, or a KEEL_E* code with a message in err. */
typedef int (*keel_snapread_hello_cb)(void *data, const Keel__HelloResponse *hr, char *err,
                                      size_t errlen);
/* One piece of the stream, in order (resp->snapshot->blob; resp->header as the member sent it):
 * 0 to go on, or a KEEL_E* code with a message in err. */
typedef int (*keel_snapread_chunk_cb)(void *data, const Keel__Response *resp, char *err,
                                      size_t errlen);

/*
 * Run the stream on the connected socket fd (not closed here): Hello as client_name, then the
 * request, then every piece to on_chunk until the last. 0 once the last piece was taken, else a
 * KEEL_E* code with what went wrong in err (the member's own error, a connection that ended
 * early, a frame that does not decode, or a callback's refusal).
 */
int keel_snapread_run(int fd, const char *client_name, keel_snapread_hello_cb on_hello,
                      keel_snapread_chunk_cb on_chunk, void *data, char *err, size_t errlen);

/* The same with an auth token on the request (NULL or "": none), for a cluster with auth on. */
int keel_snapread_run_token(int fd, const char *client_name, const char *token,
                            keel_snapread_hello_cb on_hello, keel_snapread_chunk_cb on_chunk,
                            void *data, char *err, size_t errlen);

#endif
