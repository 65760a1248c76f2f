/*
 * File descriptors. keeld holds one per client connection besides its own: the raft log's
 * segments and snapshots, LMDB, peer links and peer handshakes in progress (transport.c bounds
 * those), checkpoint files. Past RLIMIT_NOFILE, accept fails with EMFILE and so does whatever raft
 * or a checkpoint opens next: a flood of clients would fail the member, not only themselves.
 * So before serving, the soft limit is raised to what --max-connections needs (as far as the hard
 * limit allows, as Go raises it for etcd), and when even that is too low, --max-connections is
 * lowered to what the limit leaves.
 */
#ifndef KEEL_FDLIMIT_H
#define KEEL_FDLIMIT_H

#include <stddef.h>

/* Descriptors kept for keeld's own files and peers (an idle member holds about 20). */
#define KEEL_FD_RESERVE 256

/*
 * Make room for *max_connections client connections plus KEEL_FD_RESERVE: raise the soft
 * RLIMIT_NOFILE, or lower *max_connections (logged either way). 0, or -1 when the limit leaves
 * no room for a single client (the reason in err).
 */
int keel_fdlimit_fit(size_t *max_connections, char *err, size_t errlen);

#endif
