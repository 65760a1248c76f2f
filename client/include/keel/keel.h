/*
 * libkeel: the keel client library.
 *
 * Two layers share one implementation:
 *
 * - The asynchronous core (keel_aclient_*) runs on a libuv loop the caller owns. It keeps at most
 *   one connection per member, multiplexes any number of requests over each (matched by id,
 *   answered in any order), writes every frame queued during one loop turn with one uv_write, and
 *   decodes replies into a per-connection arena, so a request costs no malloc in steady state.
 *   Every function of this layer must be called on the loop's thread.
 *
 * - The synchronous API (keel_open, keel_put, keel_get, ...) runs an asynchronous client on a
 *   private loop thread and blocks the calling thread until the answer arrives.
 *
 * Routing. The client learns the members, their zones and the leader from each connection's
 * HelloResponse. Writes (put, delete, txn, compaction, lease grant/revoke/keep-alive, member
 * changes) and linearizable reads go to the leader, connecting lazily once its client address is
 * known; serializable reads, status, member list and watches go to a member of options.zone when
 * one is known, else to any member. A NOT_LEADER answer is followed to the leader it names (or,
 * when it names none, retried after a backoff through another member); a lost connection is
 * replaced by one to another member, round-robin over the endpoints and the members learned, with a
 * bounded per-member backoff.
 *
 * Retries. A request is sent again (at most options.max_retries times, never past its deadline)
 * only when that is safe: it was never written to a socket, or the server answered NOT_LEADER or
 * UNAVAILABLE (the server did nothing), or it is idempotent (range, read-only txn, status, member
 * list, lease time-to-live/leases/keep-alive) and its connection dropped. A write whose
 * connection dropped after it was written fails with KEEL_EUNKNOWN: it may or may not have been
 * applied, and only the caller can decide what to do. KEEL_EUNKNOWN also comes from the server
 * (OUTCOME_UNKNOWN, leadership lost after the write was proposed) and is never retried.
 *
 * Errors. Every function returns 0 or a negative KEEL_E* code from err.h. Codes of the wire band
 * (KEEL_ENOTLEADER .. KEEL_ECANCELED) mean what the server means by them; local ones: KEEL_ETIMEOUT
 * (the request's deadline passed), KEEL_EUNAVAILABLE (no member could be reached, or every retry
 * was answered UNAVAILABLE), KEEL_EUNKNOWN (see above), KEEL_ECANCELED (the client was closed),
 * KEEL_ECLOSED (called after close began), KEEL_ENOMEM, KEEL_EINVAL, KEEL_EUNSUPPORTED (a request
 * type keel_aclient_request does not carry: snapshot streams, and watch requests, which have their
 * own API below). Every failure also has a message:
 * the server's own, or one composed locally ("dial 127.0.0.1:2379: connection refused").
 *
 * Ownership. Callers own everything they pass in; the library copies what it keeps. Messages the
 * synchronous API returns through out-parameters belong to the caller and are freed with
 * keel_free().
 */
#ifndef KEEL_KEEL_H
#define KEEL_KEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "err.h"
#include "keel.pb-c.h"

#define KEEL_DEFAULT_ENDPOINT           "127.0.0.1:2379"
#define KEEL_DEFAULT_DIAL_TIMEOUT_MS    2000
#define KEEL_DEFAULT_REQUEST_TIMEOUT_MS 5000
#define KEEL_DEFAULT_MAX_RETRIES        30
#define KEEL_PROTOCOL_VERSION           1

/* Client options. A zeroed struct selects every default. Strings are copied by *_init/open. */
struct keel_options {
    /* Comma-separated "host:port" client addresses, host an IPv4 literal or a DNS name (resolved
     * off the loop at each dial, IPv4 only; keel_endpoints_check says what is wrong with one);
     * an "http://" prefix is ignored, an "https://" one asks for TLS (below). NULL or "":
     * KEEL_DEFAULT_ENDPOINT. */
    const char *endpoints;
    /* Serializable reads prefer members of this zone. NULL or "": no preference. */
    const char *zone;
    /* Bind every outgoing connection to this IPv4 address (port chosen by the kernel), so that a
     * zone-bound client's traffic carries its zone's source address. NULL: the kernel's choice. */
    const char *source_address;
    const char *client_name; /* sent in Hello; NULL: "libkeel" */
    /* An auth token (from Authenticate): sent in Hello and on every request. NULL: none. */
    const char *token;
    /*
     * Authenticate as this user (etcd clientv3's Username and Password): keel_open does it
     * before returning (keel_auth); keel_aclient_init starts it at once, and requests and watch
     * creations wait for the token. Whenever a member refuses a request for its token ("invalid
     * auth token": it expired, keeld --auth-token-ttl, or the user's password changed), the
     * client authenticates again and sends that request once more with the new token; refusals
     * that come together share one Authenticate. Requests and watches given a token of their
     * own are left alone. The client keeps a copy of the password, wiped when it is freed.
     * NULL or "": no auth (token, if any, is used as it is).
     */
    const char *user;
    const char *password;
    uint32_t dial_timeout_ms; /* TCP connect plus handshake; 0: KEEL_DEFAULT_DIAL_TIMEOUT_MS */
    uint32_t
        request_timeout_ms; /* default per-request deadline; 0: KEEL_DEFAULT_REQUEST_TIMEOUT_MS */
    int max_retries;        /* 0: KEEL_DEFAULT_MAX_RETRIES; negative: never retry */
    uint32_t max_frame;     /* largest frame accepted from a server; 0: KEEL_FRAME_DEFAULT_MAX */
    /*
     * TLS, for members whose client port runs with --cert-file (etcdctl's --cacert, --cert,
     * --key, --insecure-skip-tls-verify). A client speaks TLS on every connection when an
     * endpoint is written "https://HOST:PORT" or any of these four is set, else plaintext on
     * every one: members it learns of are reached the same way. TLS 1.2 or newer (tls/tls.h).
     * The member's certificate must chain to ca_file and name the host the client dialled (the
     * endpoint's name or IPv4 address, or the client address the cluster advertises). Files are
     * PEM, read by *_init/open: one that does not load is KEEL_EINVAL with keel_errmsg() naming
     * it. A handshake that fails is a failed dial: the request's message names the endpoint and
     * OpenSSL's reason ("TLS handshake with 127.0.0.1:2379 failed: certificate verify failed:
     * unable to get local issuer certificate").
     */
    const char *ca_file;       /* CAs a member's certificate must chain to; NULL: the system's */
    const char *cert_file;     /* this client's certificate, for --client-cert-auth members ... */
    const char *key_file;      /* ... and its key: both or neither */
    bool insecure_skip_verify; /* accept any certificate and name: for tests only */
};

/* ---------------------------------------------------------------------------------------------
 * Asynchronous core
 */

struct keel_aclient;

/*
 * Called exactly once per accepted request, on the loop thread, never from within the
 * keel_aclient_request call that submitted it.
 *
 * status is 0 or a KEEL_E* code. resp is never NULL and is valid only during the call (it lives
 * in a buffer reused for the next reply): on success it is the server's Response with its body;
 * on failure resp->error is set and resp->error->message explains (the server's message, or a
 * local one, in which case resp->header is NULL and resp->error->code is the wire form of status,
 * INTERNAL for local-only codes: test `status`, not the code). Server answers that carry an error
 * (e.g. COMPACTED) arrive with their header.
 *
 * The callback may submit new requests and may call keel_aclient_close.
 */
typedef void (*keel_response_cb)(int status, const Keel__Response *resp, void *data);

/* Called once when keel_aclient_close has released everything. */
typedef void (*keel_close_cb)(void *data);

/* Per-request options for keel_aclient_request_ex. A zeroed struct selects every default. A
 * request's own token (Keel__Request.token, when not empty) is sent instead of the client's. */
struct keel_call_opts {
    uint32_t timeout_ms; /* 0: options.request_timeout_ms */
    /* Send to this member ("host:port") instead of routing: no redirect, no failover, no retry.
     * NOT_LEADER comes back as an error. For per-endpoint status. NULL: route. */
    const char *endpoint;
};

/* Counters, for tests and the benchmark. All monotonic. */
struct keel_aclient_stats {
    uint64_t requests;        /* accepted by keel_aclient_request */
    uint64_t completed;       /* callbacks delivered */
    uint64_t retries;         /* sends after the first, for any reason */
    uint64_t redirects;       /* NOT_LEADER answers followed */
    uint64_t dials;           /* connections attempted */
    uint64_t dial_failures;   /* connections that failed before their handshake completed */
    uint64_t conn_lost;       /* established connections that dropped */
    uint64_t writes;          /* uv_write calls (each carries one or more frames) */
    uint64_t frames_out;      /* request frames written */
    uint32_t in_flight;       /* requests accepted and not yet completed */
    uint32_t connections;     /* connections open or opening */
    uint64_t watch_creates;   /* WatchCreate frames sent (first creations and resumes) */
    uint64_t watch_resumes;   /* ... of which resumes, after a lost connection or a refusal */
    uint64_t watch_dups;      /* events dropped as already delivered (resume overlap) */
    uint32_t watches;         /* watches not yet ended */
    uint64_t authentications; /* Authenticate requests sent with options.user's credentials */
};

/*
 * Create a client on loop. Nothing is connected until the first request. opts may be NULL (all
 * defaults). 0, KEEL_EINVAL (an endpoint or source address that does not parse, or a TLS file that
 * does not load: keel_errmsg() says which, on the calling thread), KEEL_ENOMEM.
 * Release with keel_aclient_close, then keep running the loop until the close callback.
 */
int keel_aclient_init(struct keel_aclient **out, uv_loop_t *loop, const struct keel_options *opts);

/*
 * Check endpoints (as keel_options.endpoints) the way keel_aclient_init and keel_open parse them,
 * for a message to show: 0, or KEEL_EINVAL with msg (len bytes) naming the endpoint and what is
 * wrong with it. Syntax only: nothing is resolved or dialled.
 */
int keel_endpoints_check(const char *endpoints, char *msg, size_t len);

/*
 * Submit req. The library assigns req's id (the caller's value is ignored and req is not
 * modified); req is packed before this returns, so the caller may free it at once. timeout_ms 0
 * uses the client's default. Returns 0 when accepted (cb will be called exactly once), or, with
 * cb never called: KEEL_EINVAL (no body), KEEL_EUNSUPPORTED (watch or snapshot), KEEL_ETOOLARGE
 * (the frame exceeds the frame limit), KEEL_ECLOSED (close has begun), KEEL_ENOMEM.
 */
int keel_aclient_request(struct keel_aclient *ac, const Keel__Request *req, uint32_t timeout_ms,
                         keel_response_cb cb, void *data);

/* keel_aclient_request with per-request options (opts may be NULL). Also KEEL_EINVAL for an
 * endpoint that does not parse. */
int keel_aclient_request_ex(struct keel_aclient *ac, const Keel__Request *req,
                            const struct keel_call_opts *opts, keel_response_cb cb, void *data);

/* Use token (NULL or "": none) on every request from now on, the watches' included. Loop thread
 * only. 0 or KEEL_ENOMEM (the old token stays). */
int keel_aclient_set_token(struct keel_aclient *ac, const char *token);

/*
 * Authenticate as user with password, and keep both (the password wiped when the client is
 * freed or they are replaced) to authenticate again when a token is refused, as with
 * keel_options.user. cb (NULL: none) gets the Authenticate's answer once the token it brought is
 * the client's (status 0), or its failure: KEEL_EUNAUTHENTICATED ("authentication failed,
 * invalid user ID or password"), KEEL_EINVAL (auth not enabled), ... Loop thread only. 0, or
 * KEEL_EINVAL (no user or password) / KEEL_ECLOSED / KEEL_ENOMEM and cb is not called.
 */
int keel_aclient_auth(struct keel_aclient *ac, const char *user, const char *password,
                      keel_response_cb cb, void *data);

/*
 * Begin closing: every request not yet answered completes with KEEL_ECANCELED and every watch
 * ends with a final KEEL_ECANCELED call (possibly from within this call), connections are closed,
 * and once every handle is released cb(data) is called (from the loop) and ac is freed. cb may be
 * NULL. Calling it twice is a bug.
 */
void keel_aclient_close(struct keel_aclient *ac, keel_close_cb cb, void *data);

/* Copy the client's counters into *out. */
void keel_aclient_stats(const struct keel_aclient *ac, struct keel_aclient_stats *out);

/* ---------------------------------------------------------------------------------------------
 * Watches
 *
 * A watch delivers, in revision order, every change to a key or range from its start revision on:
 * each revision exactly once, with no gap, for as long as it runs. It is served by one member at
 * a time (one of options.zone when known, else any member: watches do not need the leader). When
 * that connection drops or the member refuses it, the library re-creates it on another member
 * from the first revision not yet delivered, after a bounded backoff, as often as needed while
 * the client is open; events already delivered that come again are dropped. The only ends are
 * KEEL_ECOMPACTED (the revision it had to resume from, or its start revision, was compacted away),
 * KEEL_ECANCELED (keel_watch_cancel, or the client closed) and an error the member gave the first
 * creation that no other member would answer differently (KEEL_EINVAL, KEEL_EKEYTOOLONG,
 * KEEL_ETOOMANYREQUESTS, ...); a first creation that no member acknowledges within the request
 * timeout ends with KEEL_ETIMEOUT, or KEEL_EUNAVAILABLE once every member failed to connect twice.
 */

struct keel_watch;

/* A zeroed struct (or NULL) watches one key from the next revision on. */
struct keel_watch_opts {
    /* As keel_get_opts.range_end: NULL/0 for the key alone, "\0" (length 1) for every key >= key,
     * else [key, range_end); keel_prefix_end gives a prefix's end. */
    const void *range_end;
    size_t range_end_len;
    /* First revision to deliver (history from there on, then live changes); 0: the revision after
     * the member's current one when the watch is created. Negative: KEEL_EINVAL. */
    int64_t start_revision;
    bool prev_kv;         /* events carry the key's previous state */
    bool noput, nodelete; /* leave out PUT, DELETE events */
    /* Ask the member for periodic progress notifications: callbacks with no events whose
     * revision says every event up to it has been delivered. */
    bool progress_notify;
    /* Call back once (status 0, no events) when the watch is first acknowledged, before any
     * event, with revision = the member's revision then: every write that completes after this
     * callback is seen (etcd's WithCreatedNotify). keel_watch_open always waits for it. */
    bool created_notify;
    /* The auth token this watch's requests carry (create, every re-creation, progress, cancel)
     * instead of the client's (keel_aclient_set_token): a client serving many users, as
     * keel-gateway does, watches for each with its own. Copied. NULL or "": the client's. */
    const char *token;
};

/*
 * Called on the loop thread (for the synchronous API, the client's own loop thread) with each
 * batch of events, never from within the call that created or canceled the watch.
 *
 * status 0: events[0..n_events) in revision order (a revision's events always arrive together),
 * or no events for a created notice or a progress notification. revision is the serving member's
 * revision when it sent the batch (the response header's), never lower than in an earlier call.
 * The events and their memory are valid only during the call; keel_watch_header gives the
 * response's header.
 *
 * status != 0: called exactly once, last, with no events: the watch has ended (see above;
 * keel_watch_error says why, keel_watch_compact_revision gives the compacted revision). For a
 * watch of the asynchronous API the handle is freed when this call returns.
 *
 * The callback may cancel any watch (its own included: it then gets its final KEEL_ECANCELED
 * call later), create watches, submit requests and call keel_aclient_close.
 */
typedef void (*keel_watch_cb)(struct keel_watch *w, int status, const Keel__Event *const *events,
                              size_t n_events, int64_t revision, void *data);

/*
 * Start watching key (klen bytes; may be empty only with a range_end). opts may be NULL. The
 * library copies key and range end. On 0, *out is the handle and cb will be called until, and
 * including, its final call; otherwise (KEEL_EINVAL, KEEL_ETOOLARGE, KEEL_ECLOSED, KEEL_ENOMEM)
 * cb is never called. Loop thread only.
 */
int keel_aclient_watch(struct keel_aclient *ac, const void *key, size_t klen,
                       const struct keel_watch_opts *opts, keel_watch_cb cb, void *data,
                       struct keel_watch **out);

/*
 * Stop a watch: no event is delivered after this returns; the callback is called once more, later,
 * with KEEL_ECANCELED (or with the end already pending, e.g. KEEL_ECOMPACTED) and the member is
 * told to drop it. 0; a watch already ended is left alone. Loop thread only; w must not have had
 * its final callback yet (then it is freed), except for handles of the synchronous API.
 */
int keel_watch_cancel(struct keel_watch *w);

/*
 * Ask the serving member for a progress notification: a callback with no events and its current
 * revision (sent once the watch is acknowledged, if it is being re-created). 0, KEEL_ECANCELED
 * (the watch has ended), KEEL_ENOMEM. Loop thread only.
 *
 * Note: keeld answers for the whole connection; while this watch is still replaying history the
 * revision may be ahead of the events delivered so far.
 */
int keel_watch_progress(struct keel_watch *w);

/* The compacted revision that ended the watch with KEEL_ECOMPACTED (0 otherwise). */
int64_t keel_watch_compact_revision(const struct keel_watch *w);

/* Why the watch ended (the member's message or a local one); "" while it runs. */
const char *keel_watch_error(const struct keel_watch *w);

/* During a callback with status 0: the header of the response being delivered (member, term,
 * revision); NULL otherwise. */
const Keel__ResponseHeader *keel_watch_header(const struct keel_watch *w);

/* The first revision not delivered yet: where the watch would resume (0 before its creation). */
int64_t keel_watch_next_revision(const struct keel_watch *w);

/* ---------------------------------------------------------------------------------------------
 * Keep-alives
 *
 * A keep-alive set keeps leases alive in the background, as etcd's clientv3 KeepAlive does. Each
 * lease is renewed with LeaseKeepAlive over the client's connection to the leader: the first
 * keep-alive goes out as soon as the lease is added, the next one a third of its TTL (as the last
 * answer gave it) after each answer, and after a failure again within opts.retry_ms; never two of
 * the same lease at once. Keep-alives route and fail over like every request (the leader only,
 * NOT_LEADER followed, retried on another member when a connection drops: they are idempotent),
 * so a set outlives a leader failover on its own. One timer serves the whole set, and its memory
 * is one record per lease in it.
 *
 * A lease leaves the set when it is removed, or when it is lost: the leader answered TTL 0 (it
 * expired or was revoked: KEEL_ELEASENOTFOUND). When no keep-alive succeeded for its whole TTL,
 * counted from when the last successful one was sent, the lost callback says KEEL_ETIMEOUT: it
 * may have expired (an owner that must not act on an expired lease stops here). That lease stays
 * in the set and is still renewed: a new leader counts a lease kept alive lately from its
 * promotion, with an election timeout more, so after a failover slower than the TTL (possible
 * near the minimum TTL, 1.5 election timeouts) it usually still lives; if it does not, the
 * leader's TTL 0 follows as KEEL_ELEASENOTFOUND. KEEL_ETIMEOUT is told once until the next
 * renewal. Until its first answer a lease is given opts.first_timeout_ms instead of a TTL.
 */

struct keel_keepalive;

/*
 * A lease of the set was lost (KEEL_ELEASENOTFOUND: out of the set already) or is overdue
 * (KEEL_ETIMEOUT: still in the set, see above): lost at most once per lease added, overdue at
 * most once per renewal. On the loop thread, never from within a call of this API. It may add and
 * remove leases, close the set, and call anything else of the core (keel_aclient_close only after
 * closing the set).
 */
typedef void (*keel_lease_lost_cb)(struct keel_keepalive *ka, int64_t id, int reason, void *data);

/*
 * A keep-alive of lease id was answered: ttl is the lease's TTL in seconds (> 0), resp the whole
 * Response (header and body), valid only during the call. Same rules as keel_lease_lost_cb.
 */
typedef void (*keel_lease_renewed_cb)(struct keel_keepalive *ka, int64_t id, int64_t ttl,
                                      const Keel__Response *resp, void *data);

/* A zeroed struct (or NULL) selects every default. */
struct keel_keepalive_opts {
    keel_lease_lost_cb lost;       /* NULL: losses are only counted */
    keel_lease_renewed_cb renewed; /* NULL: none */
    void *data;                    /* for both callbacks */
    uint32_t retry_ms;             /* after a failed keep-alive; 0: 500 */
    /* How long a lease added may go without an answer before it is KEEL_ETIMEOUT (its TTL is not
     * known yet). 0: the client's request timeout. */
    uint32_t first_timeout_ms;
};

/* Counters of one set, for tests and the benchmark. */
struct keel_keepalive_stats {
    uint64_t sent;     /* keep-alives submitted */
    uint64_t answered; /* answered with a TTL (> 0): renewals */
    uint64_t failures; /* failed (timeout, unavailable, ...): retried sooner */
    uint64_t lost;     /* leases lost: TTL 0 from the leader */
    uint64_t overdue;  /* KEEL_ETIMEOUT reports: not renewed for a TTL, still tried */
    uint32_t leases;   /* in the set now */
    uint32_t in_flight;
};

/*
 * A new, empty keep-alive set on ac; opts may be NULL. 0, KEEL_EINVAL, KEEL_ECLOSED (ac is
 * closing), KEEL_ENOMEM. Loop thread only. The set must be closed (keel_keepalive_close) before
 * keel_aclient_close is called: its timer is a handle on ac's loop.
 */
int keel_aclient_keepalive(struct keel_aclient *ac, const struct keel_keepalive_opts *opts,
                           struct keel_keepalive **out);

/*
 * Keep lease id alive: its first keep-alive goes out at once (from the next loop turn). A lease
 * already in the set is left as it is. 0, KEEL_EINVAL (id <= 0), KEEL_ENOMEM. Loop thread only.
 */
int keel_keepalive_add(struct keel_keepalive *ka, int64_t id);

/*
 * Stop renewing lease id (the lease itself lives on until its TTL runs out); a keep-alive of it
 * still in flight is ignored when it completes. 0, or KEEL_ELEASENOTFOUND when it is not in the
 * set. Loop thread only.
 */
int keel_keepalive_remove(struct keel_keepalive *ka, int64_t id);

/* Copy the set's counters into *out. Loop thread only. */
void keel_keepalive_stats(const struct keel_keepalive *ka, struct keel_keepalive_stats *out);

/*
 * Stop renewing every lease and release the set: no callback runs after this returns, and ka must
 * not be used again. Its memory goes once the keep-alives in flight have completed (their answers
 * are ignored) and its timer is closed, a loop turn or a few later. May be called from the set's
 * own callbacks. Loop thread only.
 */
void keel_keepalive_close(struct keel_keepalive *ka);

/* ---------------------------------------------------------------------------------------------
 * Synchronous API
 *
 * One handle may be used from any number of threads at once: each call blocks only its own thread
 * and the calls share the handle's connections. The only exception is keel_close, which must not
 * race with other calls on the same handle. Error messages are per thread (see keel_errmsg).
 */

struct keel;

/*
 * Start a client with its own loop thread. Connects lazily: an unreachable cluster shows up on
 * the first call, not here. 0, KEEL_EINVAL, KEEL_ENOMEM, KEEL_EIO (the thread could not start).
 * Release with keel_close.
 */
int keel_open(struct keel **out, const struct keel_options *opts);

/* Cancel whatever is still pending, stop the loop thread and free k. k may be NULL. */
void keel_close(struct keel *k);

/*
 * The message of the last failed keel_* call made by the calling thread (thread-local, like
 * errno): the server's message for a server error, else a local explanation. Never NULL; valid
 * until this thread's next failing call. Successful calls leave it unchanged.
 */
const char *keel_errmsg(void);

/* Free a message returned by the synchronous API (any Keel__* type). NULL is allowed. */
void keel_free(void *msg);

struct keel_put_opts {
    int64_t lease;     /* attach this lease; 0: none */
    bool prev_kv;      /* return the previous key-value in the response */
    bool ignore_value; /* keep the current value (the key must exist) */
    bool ignore_lease; /* keep the current lease (the key must exist) */
};

/*
 * Put key = val. opts may be NULL. On success, if out is not NULL, *out receives the response
 * (free with keel_free). Use keel_do to get the response header (revision).
 */
int keel_put(struct keel *k, const void *key, size_t klen, const void *val, size_t vlen,
             const struct keel_put_opts *opts, Keel__PutResponse **out);

struct keel_get_opts {
    /* [key, range_end): NULL/0 for the single key; "\0" (length 1) for every key >= key; see
     * keel_prefix_end for a prefix. */
    const void *range_end;
    size_t range_end_len;
    int64_t limit;    /* 0: no limit */
    int64_t revision; /* <= 0: current */
    bool serializable;
    bool keys_only;
    bool count_only;
    Keel__RangeRequest__SortOrder sort_order;   /* 0: NONE */
    Keel__RangeRequest__SortTarget sort_target; /* 0: KEY */
};

/* Range read. opts may be NULL (linearizable single-key get). *out as for keel_put, but not
 * optional: out must not be NULL. */
int keel_get(struct keel *k, const void *key, size_t klen, const struct keel_get_opts *opts,
             Keel__RangeResponse **out);

struct keel_delete_opts {
    const void *range_end; /* as in keel_get_opts */
    size_t range_end_len;
    bool prev_kv;
};

/* Delete key or [key, range_end). opts and out may be NULL. */
int keel_delete(struct keel *k, const void *key, size_t klen, const struct keel_delete_opts *opts,
                Keel__DeleteRangeResponse **out);

/* Run a transaction (the caller builds txn; it is not modified). out may be NULL. */
int keel_txn(struct keel *k, const Keel__TxnRequest *txn, Keel__TxnResponse **out);

/* Compact history below rev (physical: returns once applied). */
int keel_compact(struct keel *k, int64_t rev);

/* Status of the member at endpoint ("host:port"), or of whichever member answers when endpoint
 * is NULL. out must not be NULL. */
int keel_status(struct keel *k, const char *endpoint, Keel__StatusResponse **out);

/* The cluster's members. out must not be NULL. */
int keel_member_list(struct keel *k, Keel__MemberListResponse **out);

/* Grant a lease of ttl seconds (id 0: the cluster picks one). out may be NULL. */
int keel_lease_grant(struct keel *k, int64_t ttl, int64_t id, Keel__LeaseGrantResponse **out);

/* Revoke a lease, deleting its keys. */
int keel_lease_revoke(struct keel *k, int64_t id);

/* Remaining time of a lease (and its keys when keys is true). out must not be NULL. */
int keel_lease_time_to_live(struct keel *k, int64_t id, bool keys,
                            Keel__LeaseTimeToLiveResponse **out);

/* Every lease of the cluster (the leader's answer). out must not be NULL. */
int keel_lease_leases(struct keel *k, Keel__LeaseLeasesResponse **out);

/*
 * One keep-alive of lease id; *ttl (may be NULL) receives its TTL in seconds. KEEL_ELEASENOTFOUND
 * when the leader answered TTL 0 (expired, revoked or never granted).
 */
int keel_lease_keep_alive_once(struct keel *k, int64_t id, int64_t *ttl);

/*
 * A keep-alive set (see "Keep-alives" above) on the handle's loop thread. Its callbacks run on
 * that thread, one at a time with every other callback of the handle; from them, the four calls
 * below may be used on the handle's sets (they then act at once), the rest of the synchronous API
 * may not. opts may be NULL. 0, KEEL_EINVAL, KEEL_ECLOSED, KEEL_ENOMEM. keel_close stops every
 * set still running; the handles are not valid after keel_close.
 */
int keel_lease_keepalive_start(struct keel *k, const struct keel_keepalive_opts *opts,
                               struct keel_keepalive **out);

/* keel_keepalive_add from any thread. */
int keel_lease_keepalive_add(struct keel *k, struct keel_keepalive *ka, int64_t id);

/* keel_keepalive_remove from any thread. */
int keel_lease_keepalive_remove(struct keel *k, struct keel_keepalive *ka, int64_t id);

/* keel_keepalive_stats from any thread. 0 or KEEL_EINVAL. */
int keel_lease_keepalive_stats(struct keel *k, struct keel_keepalive *ka,
                               struct keel_keepalive_stats *out);

/* Stop and release a set: when this returns, its callbacks are never called again (when called
 * from one of them: once that callback returns). 0 or KEEL_EINVAL. */
int keel_lease_keepalive_stop(struct keel *k, struct keel_keepalive *ka);

/* Any request; the whole Response (header and body) on success. out may be NULL. */
int keel_do(struct keel *k, const Keel__Request *req, Keel__Response **out);

/*
 * Authenticate as user with password: every request of k carries the token from then on, and a
 * request refused for an expired or invalid token is sent once more after authenticating again
 * with the same credentials (kept in k, wiped at keel_close). 0, or KEEL_EUNAUTHENTICATED
 * ("authentication failed, invalid user ID or password"), KEEL_EINVAL ("authentication is not
 * enabled"), ... with keel_errmsg.
 */
int keel_auth(struct keel *k, const char *user, const char *password);

/* The token k sends (malloc'd copy for the caller to free; NULL when none): for an asynchronous
 * client of the same user (keel_options.token). */
char *keel_token(struct keel *k);

/* keel_do with per-request options (opts may be NULL). */
int keel_do_ex(struct keel *k, const Keel__Request *req, const struct keel_call_opts *opts,
               Keel__Response **out);

/*
 * keel_do_ex with the Response built in a few large blocks instead of one allocation per field:
 * for big replies (a range of 250k keys took 0.1 s of the loop thread to copy field by field,
 * and as long again for the caller to free). *out (never NULL on success) is read-only to the
 * caller: nothing in it may be detached, replaced or freed on its own, and it is released only
 * with keel_flat_free, never keel_free.
 */
int keel_do_flat(struct keel *k, const Keel__Request *req, const struct keel_call_opts *opts,
                 const Keel__Response **out);

/* Release a Response from keel_do_flat. NULL is allowed. */
void keel_flat_free(const Keel__Response *resp);

/*
 * Watch key (see "Watches" above) with callbacks on the client's loop thread. Returns once the
 * watch is acknowledged by a member, so that every write completing afterwards is delivered (a
 * created notice reaches cb only with opts->created_notify); or fails, cb never called, with
 * KEEL_EINVAL, KEEL_ETIMEOUT / KEEL_EUNAVAILABLE (no member acknowledged it within the request
 * timeout), a member's refusal (KEEL_ETOOMANYREQUESTS, ...), KEEL_ECLOSED, KEEL_ENOMEM.
 *
 * Callbacks run on the loop thread, one at a time, and must not call the synchronous API of the
 * same handle (it would wait for that very thread: such calls fail with KEEL_EINVAL); they may
 * call keel_watch_cancel on any watch of this handle. They should return quickly: while one runs,
 * no other reply of this handle is processed.
 *
 * Every handle returned must be released with keel_watch_close, also after the watch ended on
 * its own (the handle stays valid until then), except when keel_close came first.
 */
int keel_watch_open(struct keel *k, const void *key, size_t klen,
                    const struct keel_watch_opts *opts, keel_watch_cb cb, void *data,
                    struct keel_watch **out);

/*
 * Cancel w if it still runs, wait until its callback has returned for the last time (with
 * KEEL_ECANCELED, or the end it had already reached) and free it. When this returns the callback
 * is never called again. 0, or KEEL_EINVAL (NULL arguments, or called from a callback). Not after
 * keel_close, which ends and frees every watch of the handle (final callbacks KEEL_ECANCELED).
 */
int keel_watch_close(struct keel *k, struct keel_watch *w);

/* keel_watch_progress from any thread. */
int keel_watch_request_progress(struct keel *k, struct keel_watch *w);

/* ---------------------------------------------------------------------------------------------
 * Snapshots
 */

/* Called with each piece of a snapshot, in order: 0 to go on, else a KEEL_E* code that ends the
 * download with that code (set the reason with the message keel_snapshot returns). */
typedef int (*keel_snapshot_sink)(void *data, const void *bytes, size_t n);

/* What the member said about the snapshot it sent. */
struct keel_snapshot_info {
    uint64_t cluster_id; /* from its handshake */
    uint64_t member_id;  /* ... */
    int64_t revision;    /* the header of its first piece: the revision the copy holds at least */
    uint64_t bytes;      /* the copy's size: every byte given to the sink */
};

/*
 * Download a consistent snapshot of one member's store (a compacted copy of its LMDB file, as
 * keeld's checkpoints are) from endpoint ("host:port"), on a connection of its own, blocking the
 * calling thread; sink gets every byte, in order. From opts only source_address, client_name,
 * dial_timeout_ms (the connect), request_timeout_ms (the longest wait for the next piece) and
 * the TLS options are used; opts may be NULL. info (may be NULL) is filled on success.
 *
 * 0 once the member sent the last piece, else a KEEL_E* code with keel_errmsg() set: KEEL_EINVAL
 * (endpoint does not parse), KEEL_EIO (no connection, or it ended early), KEEL_ETIMEOUT, the
 * member's own refusal (KEEL_ETOOMANYREQUESTS: it serves one snapshot at a time), a sink's code.
 * TLS as for a client (endpoint "https://", or opts' TLS files): a refusal is KEEL_EIO with the
 * reason ("TLS handshake with 127.0.0.1 failed: ..."); a TLS file that does not load, KEEL_EINVAL.
 */
int keel_snapshot(const struct keel_options *opts, const char *endpoint, keel_snapshot_sink sink,
                  void *data, struct keel_snapshot_info *info);

/* ---------------------------------------------------------------------------------------------
 * Helpers
 */

/*
 * The range end selecting every key that starts with key (etcd's prefix end): key with its last
 * byte below 0xff incremented and what follows dropped. Writes it to out (klen bytes, or 1) and
 * returns its length. A key that is empty or all 0xff bytes gives "\0": every key.
 */
size_t keel_prefix_end(const void *key, size_t klen, uint8_t *out);

/* Whether a request may be sent twice without changing the outcome (used by the retry policy). */
bool keel_request_is_idempotent(const Keel__Request *req);

#endif
