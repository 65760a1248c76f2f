/*
 * keel error codes.
 *
 * Every keel function that can fail returns 0 or one negative KEEL_E* code. Codes above
 * KEEL_E_INTERNAL_BASE are the wire error codes (keel.proto ErrorCode) negated, so a
 * request-level failure travels to the client unchanged; codes at or below it are local
 * failures (I/O, memory, corruption) that reach the wire as INTERNAL.
 */
#ifndef KEEL_ERR_H
#define KEEL_ERR_H

#include <stdbool.h>

/* X(name, number, message). number is positive; the code is its negation. */
#define KEEL_ERRNO_MAP(X)                                                                          \
    X(INVAL, 1, "invalid argument")                                                                \
    X(NOTLEADER, 2, "not the leader")                                                              \
    X(COMPACTED, 3, "requested revision has been compacted")                                       \
    X(FUTUREREV, 4, "requested revision is a future revision")                                     \
    X(KEYTOOLONG, 5, "key is longer than 511 bytes")                                               \
    X(TOOLARGE, 6, "request is too large")                                                         \
    X(NOSPACE, 7, "database space exceeded")                                                       \
    X(LEASENOTFOUND, 8, "requested lease not found")                                               \
    X(LEASEEXISTS, 9, "lease already exists")                                                      \
    X(KEYNOTFOUND, 10, "key not found")                                                            \
    X(TOOMANYOPS, 11, "too many operations in txn request")                                        \
    X(DUPKEY, 12, "duplicate key given in txn request")                                            \
    X(UNAVAILABLE, 13, "no quorum or member not ready")                                            \
    X(TIMEOUT, 14, "request timed out")                                                            \
    X(UNKNOWN, 15, "leadership lost: the outcome of the write is unknown")                         \
    X(UNAUTHENTICATED, 16, "not authenticated")                                                    \
    X(PERMDENIED, 17, "permission denied")                                                         \
    X(MEMBERNOTFOUND, 18, "member not found")                                                      \
    X(MEMBEREXISTS, 19, "member already exists")                                                   \
    X(TOOMANYREQUESTS, 20, "too many requests")                                                    \
    X(UNSUPPORTED, 21, "unsupported request")                                                      \
    X(INTERNAL, 22, "internal error")                                                              \
    X(FRAMETOOLARGE, 23, "frame exceeds the maximum frame size")                                   \
    X(BADFRAME, 24, "frame does not decode")                                                       \
    X(CANCELED, 25, "canceled")                                                                    \
    X(REPLYTOOLARGE, 26,                                                                           \
      "reply would exceed the 2031616-byte reply limit: use a limit, keys_only or count_only, "    \
      "or a narrower range")                                                                       \
    X(AUTHOLDREV, 27, "etcdserver: revision of auth store is old")                                 \
    X(NOMEM, 100, "out of memory")                                                                 \
    X(IO, 101, "input/output error")                                                               \
    X(CORRUPT, 102, "stored data is corrupt")                                                      \
    X(MAPFULL, 103, "storage map is full")                                                         \
    X(NOTFOUND, 104, "not found")                                                                  \
    X(CLOSED, 105, "closed")                                                                       \
    X(BADVALSIZE, 106, "key or value too large for the storage engine")                            \
    X(STALE, 107, "the copy is older than the state it would replace")                            \
    X(TLS, 108, "TLS handshake or record failed")

enum keel_errno {
    KEEL_OK = 0,
#define KEEL_ERR_ENUM_(name, n, msg) KEEL_E##name = -(n),
    KEEL_ERRNO_MAP(KEEL_ERR_ENUM_)
#undef KEEL_ERR_ENUM_
};

#define KEEL_E_INTERNAL_BASE (-100)
/* The last code of the wire band: codes in (KEEL_E_WIRE_LAST - 1, 0) travel as themselves. */
#define KEEL_E_WIRE_LAST KEEL_EAUTHOLDREV

/*
 * Whether err is this member's own failure (memory, I/O, the storage engine, corruption,
 * INTERNAL, or a code outside the table) rather than an outcome of the request. A request's
 * outcome is the same on every replica; a local failure may not be, so at apply it must abort
 * the member, never become the request's result. False for 0.
 */
bool keel_err_is_local(int err);

/* A static message for a KEEL_E* code (or "unknown error"). Never NULL. */
const char *keel_strerror(int err);

/* The code's name without the prefix, e.g. "COMPACTED". Never NULL. */
const char *keel_err_name(int err);

/* The keel.proto ErrorCode value a KEEL_E* code travels as (OK for 0, INTERNAL for local). */
int keel_err_to_wire(int err);

/* The KEEL_E* code for a keel.proto ErrorCode value. */
int keel_err_from_wire(int code);

#endif
