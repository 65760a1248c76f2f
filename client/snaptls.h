/*
 * TLS for keel_snapshot's blocking download (snapshot.c): proto/snapread.h reads and writes a
 * plain socket, so a thread relays between that socket (one end of a socket pair) and the
 * member's connection through the TLS codec (tls/tls.h). One relay per download.
 */
#ifndef KEEL_CLIENT_SNAPTLS_H
#define KEEL_CLIENT_SNAPTLS_H

#include <stddef.h>

#include "tls.h"

struct kc_snaptls;

/*
 * Start relaying for net (a connected socket to the member reached as host, which its
 * certificate must name), each wait bounded by wait_ms. *local gets the caller's end: read and
 * write it as the member's socket, and close it when done. ctx is the caller's and may be freed
 * once this returns. 0, or KEEL_ENOMEM / KEEL_EIO with msg (len bytes) saying why.
 */
int kc_snaptls_start(struct keel_tls_ctx *ctx, const char *host, int net, int wait_ms,
                     struct kc_snaptls **out, int *local, char *msg, size_t len);

/*
 * After the caller closed its end: wait for the relay to end and free it. why (len bytes) gets
 * what failed on the TLS side ("TLS handshake with HOST failed: REASON"), or "" when nothing
 * did. net is not closed here.
 */
void kc_snaptls_finish(struct kc_snaptls *r, char *why, size_t len);

#endif
