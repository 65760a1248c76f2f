/*
 * Fakes for keeld's seams, so a server module can be tested alone:
 *
 *  - tf_node implements the consensus seam (server/consensus.h). It holds every proposal and
 *    barrier until the test completes it with tf_node_complete, the way raft would call back
 *    later; proposals are kept packed, so the test can read the entry raft would have got.
 *  - tf_responder implements the responder seam (server/responder.h) and records every message
 *    sent, packed, with its session and kind. Sessions listed in `closed` are gone; the others
 *    report `backlog` bytes unread. A drain hook is kept for the test to fire.
 *  - tf_env is what every module test stands on: a scratch store, a member table, both fakes
 *    and a reply context over them.
 *
 * Everything aborts on allocation failure: these are tests.
 */
#ifndef KEEL_FAKES_H
#define KEEL_FAKES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consensus.h"
#include "keel.pb-c.h"
#include "members.h"
#include "reply.h"
#include "responder.h"
#include "store.h"

#define TF_MAX_CALLS 64

struct tf_call {
    bool barrier;    /* else a proposal */
    bool completed;  /* called back already */
    uint8_t *packed; /* a proposal's CommandBatch, packed */
    size_t len;
    keel_consensus_cb cb;
    void *data;
};

struct tf_node {
    struct keel_consensus seam;
    bool leader;
    uint64_t leader_id; /* what leader() says */
    uint64_t term;
    uint64_t last_index;
    int refuse; /* non-zero: propose and barrier return it and hold nothing */
    struct tf_call calls[TF_MAX_CALLS];
    size_t n_calls;
};

/* A follower in term 1 that knows no leader, holding nothing. */
void tf_node_init(struct tf_node *n);
/* Free the packed proposals (call after every held call was completed, or not: no callbacks). */
void tf_node_close(struct tf_node *n);
/* Become the leader (leader_id = id) or a follower of leader_id. */
void tf_node_set_leader(struct tf_node *n, bool leader, uint64_t leader_id);
/* Call back held call i with err (as raft would, later). Aborts if already completed. */
void tf_node_complete(struct tf_node *n, size_t i, int err);
/* Held call i's CommandBatch, unpacked; free with keel__command_batch__free_unpacked. */
Keel__CommandBatch *tf_node_batch(const struct tf_node *n, size_t i);
/* How many held calls are barriers, and how many are proposals. */
size_t tf_node_count(const struct tf_node *n, bool barriers);

struct tf_msg {
    uint64_t session;
    enum keel_respond_kind kind;
    uint8_t *packed;
    size_t len;
};

struct tf_responder {
    struct keel_responder seam;
    struct tf_msg *msgs;
    size_t n, cap;
    uint64_t closed[16]; /* sessions that are gone */
    size_t n_closed;
    size_t backlog; /* what backlog() reports for a live session */
    size_t done;    /* done() calls */
    keel_drain_cb drain_cb;
    void *drain_data;
    uint64_t drain_session;
};

void tf_responder_init(struct tf_responder *r);
void tf_responder_close(struct tf_responder *r);
/* Forget the recorded messages. */
void tf_responder_clear(struct tf_responder *r);
/* Mark session as gone. */
void tf_responder_close_session(struct tf_responder *r, uint64_t session);
/* Message i as a Response; free with keel__response__free_unpacked. Aborts if it is not one. */
Keel__Response *tf_response(const struct tf_responder *r, size_t i);
/* The index of the last answer (KEEL_RESPOND_ANSWER) to request id of session; aborts when
 * there is none. */
size_t tf_answer_index(const struct tf_responder *r, uint64_t session, uint64_t id);
/* The wire error code of that answer, 0 when it carries no error. */
int tf_answer_code(const struct tf_responder *r, uint64_t session, uint64_t id);

#define TF_CLUSTER 0xc1 /* the cluster id in every header */
#define TF_SELF    1    /* this member's id */

struct tf_env {
    char *dir;                   /* scratch directory holding the store */
    struct keel_store *store;    /* opened without per-commit sync */
    struct keel_members members; /* empty: point v/n at the test's own table */
    struct tf_node node;         /* a follower knowing no leader */
    struct tf_responder out;
    struct keel_reply reply; /* over out, node, members and store; cluster TF_CLUSTER, TF_SELF */
};

/* Set e up in a fresh directory named after tag; aborts on failure. */
void tf_env_init(struct tf_env *e, const char *tag);
/* Close the store and remove the directory, free the fakes' memory. */
void tf_env_close(struct tf_env *e);

#endif
