/*
 * TLS for a blocking reader of a member's port: proto/snapread.h reads and writes a plain socket
 * (libkeel's keel_snapshot on the client port, keeld's checkpoint fetch on the leader's peer port
 * with peer TLS), so a thread relays between that socket (one end of a socket pair) and the
 * member's connection through the TLS codec (tls.h).
 * One relay per download; no event loop needed.
 */
#ifndef KEEL_TLS_RELAY_H
#define KEEL_TLS_RELAY_H

#include <stddef.h>

#include "tls.h"

struct keel_tls_relay;

/*
 * Start relaying for net (a connected socket to the member reached as host, which its
 * certificate must name), each wait bounded by wait_ms. *local gets the caller's end: read and
 * write it as the member's socket, and close it when done. ctx is the caller's and may be freed
 * once this returns. 0, or KEEL_ENOMEM / KEEL_EIO with msg (len bytes) saying why.
 */
int keel_tls_relay_start(struct keel_tls_ctx *ctx, const char *host, int net, int wait_ms,
                         struct keel_tls_relay **out, int *local, char *msg, size_t len);

/*
 * After the caller closed its end: wait for the relay to end and free it. why (len bytes) gets
 * what failed on the TLS side ("TLS handshake with HOST failed: REASON"), or "" when nothing
 * did. net is not closed here.
 */
void keel_tls_relay_finish(struct keel_tls_relay *r, char *why, size_t len);

#endif
