/*
 * The service: what each request means. Reads are served from the store (serializable ones at
 * once, linearizable ones after a shared barrier); writes become Commands, and every write of
 * one loop turn goes into one raft entry. Results come back from the fsm after the storage
 * writer committed them, and are answered then.
 */
#ifndef KEEL_SERVICE_H
#define KEEL_SERVICE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config.h"
#include "fsm.h"
#include "keel.pb-c.h"
#include "consensus.h"
#include "members.h"
#include "store.h"
#include "watch.h"

struct keel_service;
struct keel_session;
struct keel_sessions;

struct keel_service_options {
    uv_loop_t *loop;
    const struct keel_config *cfg;
    struct keel_store *store;
    const struct keel_consensus *raft;
    struct keel_fsm *fsm;
    struct keel_members *members;
    struct keel_watch_hub *watch;
};

int keel_service_init(struct keel_service **out, const struct keel_service_options *o);

/* The session registry replies are routed through (set once sessions exist). */
void keel_service_set_sessions(struct keel_service *svc, struct keel_sessions *ss);

/* A session's handshake: answer with HelloResponse. */
void keel_service_hello(struct keel_service *svc, struct keel_session *s, const Keel__Hello *h);

/* One request from s; the service takes req (freed with keel__request__free_unpacked). */
void keel_service_request(struct keel_service *svc, struct keel_session *s, Keel__Request *req);

/* From the fsm: a committed batch. */
void keel_service_applied(struct keel_service *svc, struct keel_fsm_batch *b);

/* From the node: leadership changed. */
void keel_service_leader_changed(struct keel_service *svc, bool is_leader, uint64_t leader_id);

/* A peer told us its attributes (client address, zone): the leader publishes new ones. */
void keel_service_member_learned(struct keel_service *svc);

/* Answer everything still waiting (the member is stopping) and stop the flush handle. */
void keel_service_stop(struct keel_service *svc);

void keel_service_free(struct keel_service *svc);

#endif
