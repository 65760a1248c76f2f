/*
 * Proposals (see propose.h). The batch is three parallel arrays grown together: the Commands,
 * pointers to them (the CommandBatch wants Command **), and for each Command the Request it
 * borrows its op from (NULL for keeld's own). A flush hands the batch to the consensus seam,
 * which encodes it before returning, so the requests are freed right after.
 *
 * Bytes are counted as a CommandBatch packs them: each Command adds its packed size, a field
 * tag and a length prefix, so batch_bytes is the entry's payload exactly. Without the cap one
 * turn's entry held every write of the turn (thousands of sessions' worth); a raft entry is
 * copied whole to every follower and into the writer's queue.
 */
#include "propose.h"

#include <stdlib.h>
#include <sys/random.h>
#include <time.h>

#include "err.h"
#include "reqkind.h"
#include "u64map.h"

/* A write proposed and not yet answered: whom to answer. */
struct pending {
    uint64_t session;
    uint64_t client_id;
};

/* One entry raft holds: the request ids it carries, to answer them if it fails. */
struct proposal {
    struct keel_propose *p;
    size_t bytes; /* its share of the backlog */
    size_t n;
    uint64_t ids[];
};

struct keel_propose {
    struct keel_propose_options o;
    struct keel_u64map pending; /* request id -> struct pending */
    uint64_t next_request_id;

    /* the entry being built this loop turn */
    Keel__Command *cmds;
    Keel__Command **cmd_ptrs;
    ProtobufCMessage **owners; /* the message each Command borrows from, or NULL */
    size_t n_cmds, cap_cmds;
    size_t batch_bytes; /* the packed CommandBatch of the n_cmds */
    uint64_t backlog;   /* keel_propose_backlog */
    uint64_t failed;    /* keel_propose_failed */
    uv_check_t flush;
    int has_flush;
};

static void answer(struct keel_propose *p, uint64_t request_id, int err, const char *msg)
{
    struct pending *pd = keel_u64map_del(&p->pending, request_id);
    if (pd == NULL)
        return;
    keel_reply_error(p->o.reply, pd->session, pd->client_id, err, msg);
    free(pd);
}

static void proposal_done(void *data, int err)
{
    struct proposal *pr = data;
    /* Handed to the writer (its queue counts it now) or never will be. */
    pr->p->backlog -= pr->bytes;
    if (err != 0) {
        /* The entry may still commit under the next leader: the outcome is unknown. */
        pr->p->failed += pr->n;
        for (size_t i = 0; i < pr->n; i++)
            answer(pr->p, pr->ids[i], KEEL_EUNKNOWN,
                   "leadership lost after the write was proposed: outcome unknown");
    }
    /* On success the answer comes from the fsm once the writer has committed the entry. */
    free(pr);
}

static void release_batch(struct keel_propose *p)
{
    for (size_t i = 0; i < p->n_cmds; i++)
        if (p->owners[i] != NULL)
            protobuf_c_message_free_unpacked(p->owners[i], NULL);
    p->n_cmds = 0;
    p->batch_bytes = 0;
}

void keel_propose_flush(struct keel_propose *p)
{
    if (p->n_cmds == 0)
        return;
    size_t n = p->n_cmds;
    Keel__CommandBatch batch = KEEL__COMMAND_BATCH__INIT;
    for (size_t i = 0; i < n; i++)
        p->cmd_ptrs[i] = &p->cmds[i];
    batch.n_commands = n;
    batch.commands = p->cmd_ptrs;
    struct proposal *pr = malloc(sizeof(*pr) + n * sizeof(uint64_t));
    int err = KEEL_ENOMEM;
    if (pr != NULL) {
        pr->p = p;
        pr->bytes = p->batch_bytes;
        pr->n = n;
        for (size_t i = 0; i < n; i++)
            pr->ids[i] = p->cmds[i].request_id;
        err = p->o.raft->propose(p->o.raft->ctx, &batch, proposal_done, pr);
    }
    if (err != 0) {
        /* Not proposed at all: nothing happened, the client may retry. */
        p->failed += n;
        for (size_t i = 0; i < n; i++)
            answer(p, p->cmds[i].request_id, err, NULL);
        free(pr);
        p->backlog -= p->batch_bytes;
    }
    release_batch(p);
}

/* Bytes c adds to a packed CommandBatch: tag, length prefix, the Command. */
static size_t command_bytes(const Keel__Command *c)
{
    size_t n = keel__command__get_packed_size(c);
    size_t prefix = 1;
    for (size_t v = n; v >= 0x80; v >>= 7)
        prefix++;
    return 1 + prefix + n;
}

/*
 * Count the Command just built in slot n_cmds into the entry. When it would take a non-empty
 * entry past the cap, the entry goes now and the Command opens the next one. Returns the
 * Command's slot, which moves to 0 then.
 */
static Keel__Command *take_command(struct keel_propose *p, Keel__Command *c)
{
    size_t bytes = command_bytes(c);
    size_t cap = p->o.max_entry_bytes ? p->o.max_entry_bytes : KEEL_PROPOSE_ENTRY_BYTES;
    if (p->n_cmds > 0 && p->batch_bytes + bytes > cap) {
        Keel__Command next = *c;
        keel_propose_flush(p);
        c = &p->cmds[0];
        *c = next;
    }
    p->batch_bytes += bytes;
    p->backlog += bytes;
    return c;
}

static void flush_turn(uv_check_t *h)
{
    keel_propose_flush(h->data);
}

static int grow_batch(struct keel_propose *p)
{
    if (p->n_cmds < p->cap_cmds)
        return 0;
    size_t cap = p->cap_cmds ? p->cap_cmds * 2 : 64;
    Keel__Command *c = realloc(p->cmds, cap * sizeof(*c));
    if (c == NULL)
        return KEEL_ENOMEM;
    p->cmds = c;
    Keel__Command **cp = realloc(p->cmd_ptrs, cap * sizeof(*cp));
    if (cp == NULL)
        return KEEL_ENOMEM;
    p->cmd_ptrs = cp;
    ProtobufCMessage **o = realloc(p->owners, cap * sizeof(*o));
    if (o == NULL)
        return KEEL_ENOMEM;
    p->owners = o;
    p->cap_cmds = cap;
    return 0;
}

/*
 * Request ids are (incarnation << 32 | counter), the incarnation drawn at random each time a
 * proposer starts. Results come back by (origin, id), and after a restart raft replays entries
 * proposed by the previous incarnation: their ids must never be ones this incarnation hands
 * out. A clock-derived start could repeat after a quick restart or a clock step; a random
 * 32-bit incarnation meets an earlier one with odds of about 2^-32 per restart.
 */
static uint64_t new_incarnation(void)
{
    uint32_t inc = 0;
    while (inc == 0) {
        if (getrandom(&inc, sizeof(inc), 0) != (ssize_t)sizeof(inc)) {
            /* No entropy source at all: mix the clocks, the best left. */
            struct timespec a, b;
            clock_gettime(CLOCK_REALTIME, &a);
            clock_gettime(CLOCK_MONOTONIC, &b);
            uint64_t x = ((uint64_t)a.tv_sec * 1000000007ULL) ^ (uint64_t)a.tv_nsec ^
                         ((uint64_t)b.tv_nsec << 17) ^ (uint64_t)b.tv_sec;
            x ^= x >> 33;
            x *= 0xff51afd7ed558ccdULL;
            x ^= x >> 33;
            inc = (uint32_t)x;
        }
    }
    return (uint64_t)inc << 32;
}

/* The next Command slot, its id and origin set; NULL when out of memory. */
static Keel__Command *next_command(struct keel_propose *p)
{
    if (grow_batch(p) != 0)
        return NULL;
    Keel__Command *c = &p->cmds[p->n_cmds];
    keel__command__init(c);
    if ((uint32_t)++p->next_request_id == 0)
        p->next_request_id = new_incarnation(); /* 2^32 writes: move to a fresh id space */
    c->request_id = p->next_request_id;
    c->origin = p->o.member_id;
    return c;
}

void keel_propose_request(struct keel_propose *p, uint64_t session, Keel__Request *req)
{
    int err = 0;
    const char *msg = NULL;
    Keel__Command *c = NULL;
    if (!p->o.raft->is_leader(p->o.raft->ctx))
        err = KEEL_ENOTLEADER;
    else if ((c = next_command(p)) == NULL)
        err = KEEL_ENOMEM;
    else if (keel_reqkind_to_command(req, c) != 0)
        err = KEEL_EUNSUPPORTED; /* dispatch sends only writes with a Command */
    else
        err = keel_store_validate(c, &p->o.limits, &msg);
    struct pending *pd = NULL;
    if (err == 0 && (pd = malloc(sizeof(*pd))) == NULL)
        err = KEEL_ENOMEM;
    if (err == 0) {
        pd->session = session;
        pd->client_id = req->id;
        if (keel_u64map_put(&p->pending, c->request_id, pd) != 0) {
            free(pd);
            err = KEEL_ENOMEM;
        }
    }
    if (err != 0) {
        keel_reply_error(p->o.reply, session, req->id, err, msg);
        keel__request__free_unpacked(req, NULL);
        return;
    }
    take_command(p, c);
    p->owners[p->n_cmds++] = &req->base;
}

int keel_propose_command(struct keel_propose *p, const Keel__Command *cmd, ProtobufCMessage *owner,
                         uint64_t *request_id)
{
    Keel__Command *c = next_command(p);
    if (c == NULL) {
        if (owner != NULL)
            protobuf_c_message_free_unpacked(owner, NULL);
        return KEEL_ENOMEM;
    }
    uint64_t id = c->request_id;
    *c = *cmd;
    c->request_id = id;
    c->origin = p->o.member_id;
    if (request_id != NULL)
        *request_id = id;
    c = take_command(p, c);
    p->owners[p->n_cmds++] = owner;
    return 0;
}

uint64_t keel_propose_backlog(const struct keel_propose *p)
{
    return p->backlog;
}

uint64_t keel_propose_failed(const struct keel_propose *p)
{
    return p->failed;
}

void keel_propose_applied(struct keel_propose *p, const struct keel_fsm_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        const struct keel_fsm_result *r = &b->results[i];
        if (r->origin != p->o.member_id || r->r.skipped)
            continue;
        struct pending *pd = keel_u64map_del(&p->pending, r->request_id);
        if (pd == NULL)
            continue;
        if (r->r.err != 0) {
            keel_reply_error(p->o.reply, pd->session, pd->client_id, r->r.err, r->r.msg);
        } else {
            Keel__Response resp = *r->r.response;
            resp.id = pd->client_id;
            keel_reply_send(p->o.reply, pd->session, &resp, r->r.revision, KEEL_RESPOND_ANSWER);
        }
        free(pd);
    }
}

int keel_propose_new(const struct keel_propose_options *o, struct keel_propose **out)
{
    struct keel_propose *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return KEEL_ENOMEM;
    p->o = *o;
    keel_u64map_init(&p->pending);
    /* Ids of this incarnation never meet ids of a previous one replayed from the log. */
    p->next_request_id = new_incarnation();
    if (o->loop != NULL) {
        uv_check_init(o->loop, &p->flush);
        p->flush.data = p;
        uv_check_start(&p->flush, flush_turn);
        p->has_flush = 1;
    }
    *out = p;
    return 0;
}

void keel_propose_stop(struct keel_propose *p)
{
    keel_propose_flush(p);
    if (p->has_flush) {
        uv_check_stop(&p->flush);
        uv_close((uv_handle_t *)&p->flush, NULL);
        p->has_flush = 0;
    }
}

void keel_propose_free(struct keel_propose *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->pending.cap; i++)
        if (p->pending.keys[i] != 0)
            free(p->pending.vals[i]);
    keel_u64map_close(&p->pending);
    release_batch(p);
    free(p->cmds);
    free(p->cmd_ptrs);
    free(p->owners);
    free(p);
}
