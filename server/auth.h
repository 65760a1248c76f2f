/*
 * Auth at intake: who sent a request, and whether they may. etcd's model (users, roles, key-range
 * permissions, the root user and role) on the state the log replicates (storage/auth.c).
 *
 * Every request dispatch takes passes here first (keel_auth_intake):
 *   - Authenticate: the password is checked on libuv's thread pool (PBKDF2 costs ~5-7 ms, which
 *     the loop must not spend) and answered with a token signed under the cluster's key.
 *   - UserAdd / UserChangePassword: the password is hashed on the thread pool, then cleared
 *     from the request; only the hash goes on into the log.
 *   - User/role get and list, auth status: answered here from the cached tables.
 *   - Everything else, while auth is enabled: the token is verified (signature, expiry, the user
 *     still there with the same password) and the request's permission checked (etcd's rules:
 *     ranges and watches READ on their range, puts and deletes WRITE on theirs, a txn every
 *     compare and op at every level, lease revoke WRITE on every key of the lease, lease grant
 *     and keep-alive any user, admin operations and auth changes root only). Refused:
 *     UNAUTHENTICATED "etcdserver: invalid auth token" / PERMISSION_DENIED "etcdserver:
 *     permission denied".
 *   - Writes (auth enabled or not) leave stamped with the auth revision checked against
 *     (Request.auth, copied into the Command): applying refuses them if it moved on.
 * While auth is disabled nothing is asked of a request.
 *
 * Client-certificate authentication: when a request has no token and peer_cn names this
 * connection's verified certificate CN, that user is taken as authenticated (etcd's rule).
 * It comes from keel_sessions_peer_cn (session.h): the CN the client port's TLS verified.
 *
 * State: the auth tables of the store, cached and reloaded when the store's auth revision moves
 * (bounded by store.h's KEEL_AUTH_MAX_*). At most KEEL_AUTH_MAX_JOBS hashing jobs in flight,
 * beyond them TOO_MANY_REQUESTS; KEEL_AUTH_POOL_JOBS of them on the thread pool at a time. Tokens
 * whose signature verified are remembered (64 of them) so a client's requests cost no HMAC.
 */
#ifndef KEEL_AUTH_H
#define KEEL_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "consensus.h"
#include "keel.pb-c.h"
#include "reply.h"
#include "store.h"

#define KEEL_AUTH_DEFAULT_TOKEN_TTL 300 /* seconds: etcd's simple-token default */
#define KEEL_AUTH_MAX_JOBS          64
/* Of them, on libuv's pool at a time (each 5-7 ms of PBKDF2; the pool has 8 threads, shared with
 * raft's disk writes): the others wait in a queue. */
#define KEEL_AUTH_POOL_JOBS 2

struct keel_auth;

struct keel_auth_options {
    uv_loop_t *loop; /* the thread pool's jobs come back here */
    struct keel_store *store;
    const struct keel_reply *reply;
    uint32_t token_ttl_s; /* 0: KEEL_AUTH_DEFAULT_TOKEN_TTL */
    /* The verified client-certificate CN of a session, NULL when none (may be NULL). */
    const char *(*peer_cn)(void *ctx, uint64_t session);
    void *peer_ctx;
};

/* Where a request goes once intake let it through: the rest of dispatch. Takes req. */
typedef void (*keel_auth_next)(void *ctx, uint64_t session, Keel__Request *req);

/* 0 or KEEL_ENOMEM. What o points to must outlive it. */
int keel_auth_new(const struct keel_auth_options *o, struct keel_auth **out);

/*
 * Check req from session. Takes req: it is answered here (refused, or served), handed to a
 * hashing job that calls next later, or passed to next at once (stamped when a write). next is
 * called on the loop, never after keel_auth_stop for a job still out (that one is answered
 * UNAVAILABLE).
 */
void keel_auth_intake(struct keel_auth *a, uint64_t session, Keel__Request *req,
                      keel_auth_next next, void *ctx);

/*
 * Check req again (a linearizable range after its read barrier: the state now has everything
 * committed before it came). 0, or KEEL_EUNAUTHENTICATED / KEEL_EPERMDENIED with *msg.
 */
int keel_auth_check(struct keel_auth *a, uint64_t session, const Keel__Request *req,
                    const char **msg);

/* Jobs still out are answered UNAVAILABLE when they come back. */
void keel_auth_stop(struct keel_auth *a);

/* After the loop has ended (no job left). NULL is fine. */
void keel_auth_free(struct keel_auth *a);

#endif
