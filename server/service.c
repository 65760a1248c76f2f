#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "err.h"
#include "log.h"
#include "reqkind.h"
#include "session.h"
#include "u64map.h"

#define PROTOCOL_VERSION 1
#define SNAPSHOT_CHUNK   (1u << 20)

/* A write proposed and not yet answered: whom to answer. */
struct pending {
    uint64_t session_id;
    uint64_t client_id;
};

/* One raft entry in flight: the request ids it carries, for a failed apply. */
struct proposal {
    struct keel_service *svc;
    size_t n;
    uint64_t ids[];
};

/* A linearizable read waiting for its barrier and then for the writer. */
struct read_wait {
    struct read_wait *next;
    uint64_t session_id;
    Keel__Request *req;
    uint64_t target; /* serve once the store has applied this index */
};

struct read_list {
    struct read_wait *head, *tail;
};

struct snap_stream {
    uv_work_t work;
    struct keel_service *svc;
    uint64_t session_id;
    uint64_t client_id;
    int fd;
    off_t size;
    off_t off;
    int err;
    uint8_t *chunk;
};

struct keel_service {
    struct keel_service_options o;
    struct keel_sessions *sessions;
    struct keel_limits limits;

    struct keel_u64map pending; /* request id -> struct pending */
    uint64_t next_request_id;

    /* the entry being built this loop turn */
    Keel__Command *cmds;
    Keel__Command **cmd_ptrs;
    Keel__Request **owners;       /* requests whose bodies the commands point into (or NULL) */
    Keel__Member **owned_members; /* member_attrs commands of our own (or NULL) */
    size_t n_cmds, cap_cmds;
    uv_check_t flush;

    /* linearizable reads */
    struct read_list waiting;    /* arrived while no barrier covers them */
    struct read_list in_barrier; /* covered by the barrier in flight */
    struct read_list ready;      /* barrier done, waiting for the writer */
    int barrier_busy;

    bool is_leader;
    uint64_t leader_id;
    struct keel_arena arena; /* per reply, reset after each */
    int stopped;
};

/* ---- replies ---- */

static void fill_header(struct keel_service *svc, Keel__ResponseHeader *h, int64_t revision)
{
    keel__response_header__init(h);
    h->cluster_id = svc->o.cfg->cluster_id;
    h->member_id = svc->o.cfg->member_id;
    h->raft_term = svc->o.raft->term(svc->o.raft->ctx);
    if (revision < 0) {
        struct keel_store_stat st;
        keel_store_stat(svc->o.store, &st);
        revision = st.revision;
    }
    h->revision = revision;
}

static void reply(struct keel_service *svc, struct keel_session *s, Keel__Response *resp,
                  int64_t revision)
{
    Keel__ResponseHeader h;
    fill_header(svc, &h, revision);
    resp->header = &h;
    keel_session_reply(s, &resp->base);
}

static void reply_error(struct keel_service *svc, struct keel_session *s, uint64_t id, int err,
                        const char *msg)
{
    Keel__Response resp = KEEL__RESPONSE__INIT;
    Keel__Error e = KEEL__ERROR__INIT;
    resp.id = id;
    e.code = keel_err_to_wire(err);
    e.message = (char *)(msg ? msg : keel_strerror(err));
    if (err == KEEL_ENOTLEADER) {
        uint64_t leader = svc->o.raft->leader(svc->o.raft->ctx);
        struct keel_member_info *mi = keel_members_get(svc->o.members, leader);
        e.leader_id = leader;
        e.leader_address = mi ? mi->client : "";
    }
    resp.error = &e;
    reply(svc, s, &resp, -1);
}

static struct keel_session *session_of(struct keel_service *svc, uint64_t id)
{
    return svc->sessions ? keel_sessions_find(svc->sessions, id) : NULL;
}

/* ---- writes ---- */

static void answer_pending(struct keel_service *svc, uint64_t request_id, int err, const char *msg)
{
    struct pending *p = keel_u64map_del(&svc->pending, request_id);
    if (p == NULL)
        return;
    struct keel_session *s = session_of(svc, p->session_id);
    if (s != NULL)
        reply_error(svc, s, p->client_id, err, msg);
    free(p);
}

static void proposal_done(void *data, int err)
{
    struct proposal *pr = data;
    if (err != 0) {
        /* The entry may still commit under the next leader: the outcome is unknown. */
        for (size_t i = 0; i < pr->n; i++)
            answer_pending(pr->svc, pr->ids[i], KEEL_EUNKNOWN,
                           "leadership lost after the write was proposed: outcome unknown");
    }
    /* On success the answer comes from the fsm once the writer has committed the entry. */
    free(pr);
}

static void release_batch(struct keel_service *svc)
{
    for (size_t i = 0; i < svc->n_cmds; i++) {
        if (svc->owners[i] != NULL)
            keel__request__free_unpacked(svc->owners[i], NULL);
        if (svc->owned_members[i] != NULL) {
            free(svc->owned_members[i]->clienturls);
            free(svc->owned_members[i]);
        }
    }
    svc->n_cmds = 0;
}

static void flush_proposals(uv_check_t *h)
{
    struct keel_service *svc = h->data;
    if (svc->n_cmds == 0)
        return;
    size_t n = svc->n_cmds;
    Keel__CommandBatch batch = KEEL__COMMAND_BATCH__INIT;
    for (size_t i = 0; i < n; i++)
        svc->cmd_ptrs[i] = &svc->cmds[i];
    batch.n_commands = n;
    batch.commands = svc->cmd_ptrs;
    struct proposal *pr = malloc(sizeof(*pr) + n * sizeof(uint64_t));
    int err = KEEL_ENOMEM;
    if (pr != NULL) {
        pr->svc = svc;
        pr->n = n;
        for (size_t i = 0; i < n; i++)
            pr->ids[i] = svc->cmds[i].request_id;
        err = svc->o.raft->propose(svc->o.raft->ctx, &batch, proposal_done, pr);
    }
    if (err != 0) {
        /* Not proposed at all: nothing happened, the client may retry. */
        for (size_t i = 0; i < n; i++)
            answer_pending(svc, svc->cmds[i].request_id, err, NULL);
        free(pr);
    }
    release_batch(svc);
}

static int grow_batch(struct keel_service *svc)
{
    if (svc->n_cmds < svc->cap_cmds)
        return 0;
    size_t cap = svc->cap_cmds ? svc->cap_cmds * 2 : 64;
    Keel__Command *c = realloc(svc->cmds, cap * sizeof(*c));
    if (c == NULL)
        return -1;
    svc->cmds = c;
    Keel__Command **p = realloc(svc->cmd_ptrs, cap * sizeof(*p));
    if (p == NULL)
        return -1;
    svc->cmd_ptrs = p;
    Keel__Request **o = realloc(svc->owners, cap * sizeof(*o));
    if (o == NULL)
        return -1;
    svc->owners = o;
    Keel__Member **om = realloc(svc->owned_members, cap * sizeof(*om));
    if (om == NULL)
        return -1;
    svc->owned_members = om;
    svc->cap_cmds = cap;
    return 0;
}

static void propose(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    if (!svc->o.raft->is_leader(svc->o.raft->ctx)) {
        reply_error(svc, s, req->id, KEEL_ENOTLEADER, NULL);
        keel__request__free_unpacked(req, NULL);
        return;
    }
    if (grow_batch(svc) != 0) {
        reply_error(svc, s, req->id, KEEL_ENOMEM, NULL);
        keel__request__free_unpacked(req, NULL);
        return;
    }
    Keel__Command *c = &svc->cmds[svc->n_cmds];
    keel__command__init(c);
    c->request_id = ++svc->next_request_id;
    c->origin = svc->o.cfg->member_id;
    /* dispatch sends only writes with a Command here (proto/reqkind.h). */
    keel_reqkind_to_command(req, c);
    const char *msg = NULL;
    int err = keel_store_validate(c, &svc->limits, &msg);
    struct pending *p = err == 0 ? malloc(sizeof(*p)) : NULL;
    if (err == 0 && p == NULL)
        err = KEEL_ENOMEM;
    if (err == 0) {
        p->session_id = keel_session_id(s);
        p->client_id = req->id;
        if (keel_u64map_put(&svc->pending, c->request_id, p) != 0) {
            free(p);
            err = KEEL_ENOMEM;
        }
    }
    if (err != 0) {
        reply_error(svc, s, req->id, err, msg);
        keel__request__free_unpacked(req, NULL);
        return;
    }
    svc->owned_members[svc->n_cmds] = NULL;
    svc->owners[svc->n_cmds++] = req;
}

/* Leader only: put a member's attributes into the log when the replicated state lacks them,
 * so every member can name every client address (NOT_LEADER answers, member lists, zones). */
static void publish_members(struct keel_service *svc)
{
    if (!svc->o.raft->is_leader(svc->o.raft->ctx))
        return;
    struct keel_members *ms = svc->o.members;
    for (size_t i = 0; i < ms->n; i++) {
        struct keel_member_info *mi = &ms->v[i];
        if (mi->publishing || mi->client[0] == '\0' ||
            (strcmp(mi->client, mi->stored_client) == 0 && strcmp(mi->zone, mi->stored_zone) == 0))
            continue;
        Keel__Member *m = calloc(1, sizeof(*m));
        char **urls = calloc(1, sizeof(char *));
        if (m == NULL || urls == NULL || grow_batch(svc) != 0) {
            free(m);
            free(urls);
            return;
        }
        keel__member__init(m);
        m->id = mi->id;
        m->name = mi->name;
        m->zone = mi->zone;
        urls[0] = mi->client;
        m->clienturls = urls;
        m->n_clienturls = 1;
        m->peerurls = NULL;
        Keel__Command *c = &svc->cmds[svc->n_cmds];
        keel__command__init(c);
        c->request_id = ++svc->next_request_id;
        c->origin = svc->o.cfg->member_id;
        c->op_case = KEEL__COMMAND__OP_MEMBER_ATTRS;
        c->member_attrs = m;
        svc->owners[svc->n_cmds] = NULL;
        svc->owned_members[svc->n_cmds++] = m;
        mi->publishing = 1;
    }
}

void keel_service_member_learned(struct keel_service *svc)
{
    publish_members(svc);
}

/* ---- reads ---- */

static void serve_range(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    Keel__RangeResponse *rr = NULL;
    int64_t rev = 0;
    keel_arena_reset(&svc->arena);
    int err = keel_store_range(svc->o.store, req->range, &svc->arena, &rr, &rev);
    if (err != 0) {
        reply_error(svc, s, req->id, err, NULL);
    } else {
        Keel__Response resp = KEEL__RESPONSE__INIT;
        resp.id = req->id;
        resp.body_case = KEEL__RESPONSE__BODY_RANGE;
        resp.range = rr;
        reply(svc, s, &resp, rev);
    }
    keel_arena_reset(&svc->arena);
}

static void list_push(struct read_list *l, struct read_wait *w)
{
    w->next = NULL;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
}

static void list_append(struct read_list *dst, struct read_list *src)
{
    if (src->head == NULL)
        return;
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL;
}

static void fail_reads(struct keel_service *svc, struct read_list *l, int err)
{
    struct read_wait *w = l->head;
    l->head = l->tail = NULL;
    while (w != NULL) {
        struct read_wait *next = w->next;
        struct keel_session *s = session_of(svc, w->session_id);
        if (s != NULL)
            reply_error(svc, s, w->req->id, err, NULL);
        keel__request__free_unpacked(w->req, NULL);
        free(w);
        w = next;
    }
}

static void serve_ready(struct keel_service *svc)
{
    uint64_t committed = keel_fsm_progress(svc->o.fsm)->committed;
    while (svc->ready.head != NULL && svc->ready.head->target <= committed) {
        struct read_wait *w = svc->ready.head;
        svc->ready.head = w->next;
        if (svc->ready.head == NULL)
            svc->ready.tail = NULL;
        struct keel_session *s = session_of(svc, w->session_id);
        if (s != NULL)
            serve_range(svc, s, w->req);
        keel__request__free_unpacked(w->req, NULL);
        free(w);
    }
}

static void start_barrier(struct keel_service *svc);

static void barrier_done(void *data, int err)
{
    struct keel_service *svc = data;
    svc->barrier_busy = 0;
    if (svc->stopped) {
        fail_reads(svc, &svc->in_barrier, KEEL_EUNAVAILABLE);
        return;
    }
    if (err != 0) {
        fail_reads(svc, &svc->in_barrier, KEEL_ENOTLEADER);
    } else {
        /* Everything before the barrier has reached the fsm: once the writer has committed
         * up to here, these reads see every write acknowledged before they arrived. */
        uint64_t target = keel_fsm_progress(svc->o.fsm)->queued;
        for (struct read_wait *w = svc->in_barrier.head; w != NULL; w = w->next)
            w->target = target;
        list_append(&svc->ready, &svc->in_barrier);
        serve_ready(svc);
    }
    if (svc->waiting.head != NULL)
        start_barrier(svc);
}

static void start_barrier(struct keel_service *svc)
{
    if (svc->barrier_busy || svc->waiting.head == NULL)
        return;
    if (!svc->o.raft->is_leader(svc->o.raft->ctx)) {
        fail_reads(svc, &svc->waiting, KEEL_ENOTLEADER);
        return;
    }
    int err = svc->o.raft->barrier(svc->o.raft->ctx, barrier_done, svc);
    if (err != 0) {
        fail_reads(svc, &svc->waiting,
                   err == KEEL_ENOTLEADER ? KEEL_ENOTLEADER : KEEL_EUNAVAILABLE);
        return;
    }
    svc->barrier_busy = 1;
    list_append(&svc->in_barrier, &svc->waiting);
}

static void linearizable_range(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    if (!svc->o.raft->is_leader(svc->o.raft->ctx)) {
        reply_error(svc, s, req->id, KEEL_ENOTLEADER, NULL);
        keel__request__free_unpacked(req, NULL);
        return;
    }
    struct read_wait *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        reply_error(svc, s, req->id, KEEL_ENOMEM, NULL);
        keel__request__free_unpacked(req, NULL);
        return;
    }
    w->session_id = keel_session_id(s);
    w->req = req;
    list_push(&svc->waiting, w);
    start_barrier(svc);
}

/* ---- cluster information ---- */

static Keel__Member *member_msg(struct keel_arena *a, const struct keel_member_info *mi)
{
    Keel__Member *m = keel_arena_alloc(a, sizeof(*m));
    char **peer = keel_arena_alloc(a, sizeof(char *));
    char **client = keel_arena_alloc(a, sizeof(char *));
    if (m == NULL || peer == NULL || client == NULL)
        return NULL;
    keel__member__init(m);
    m->id = mi->id;
    m->name = (char *)mi->name;
    m->zone = (char *)mi->zone;
    peer[0] = (char *)mi->peer;
    m->n_peerurls = 1;
    m->peerurls = peer;
    if (mi->client[0] != '\0') {
        client[0] = (char *)mi->client;
        m->n_clienturls = 1;
        m->clienturls = client;
    }
    return m;
}

static Keel__Member **members_msg(struct keel_service *svc, size_t *n)
{
    struct keel_members *ms = svc->o.members;
    Keel__Member **v = keel_arena_alloc(&svc->arena, (ms->n + 1) * sizeof(*v));
    *n = 0;
    if (v == NULL)
        return NULL;
    for (size_t i = 0; i < ms->n; i++) {
        v[*n] = member_msg(&svc->arena, &ms->v[i]);
        if (v[*n] != NULL)
            (*n)++;
    }
    return v;
}

void keel_service_hello(struct keel_service *svc, struct keel_session *s, const Keel__Hello *h)
{
    Keel__HelloResponse hr = KEEL__HELLO_RESPONSE__INIT;
    Keel__Error e = KEEL__ERROR__INIT;
    keel_arena_reset(&svc->arena);
    hr.protocol_version = PROTOCOL_VERSION;
    hr.cluster_id = svc->o.cfg->cluster_id;
    hr.member_id = svc->o.cfg->member_id;
    hr.zone = (char *)svc->o.cfg->zone;
    hr.version = KEEL_VERSION;
    hr.leader_id = svc->o.raft->leader(svc->o.raft->ctx);
    struct keel_member_info *li = keel_members_get(svc->o.members, hr.leader_id);
    hr.leader_address = li ? li->client : "";
    hr.members = members_msg(svc, &hr.n_members);
    if (h->protocol_version != PROTOCOL_VERSION) {
        e.code = KEEL__ERROR_CODE__UNSUPPORTED;
        e.message = "unsupported protocol version";
        hr.error = &e;
    }
    keel_session_send(s, &hr.base);
    keel_arena_reset(&svc->arena);
}

static void serve_status(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    struct keel_store_stat st;
    keel_store_stat(svc->o.store, &st);
    Keel__StatusResponse sr = KEEL__STATUS_RESPONSE__INIT;
    sr.version = KEEL_VERSION;
    sr.dbsize = (int64_t)st.db_size;
    sr.dbsizeinuse = (int64_t)st.logical_size;
    sr.leader = svc->o.raft->leader(svc->o.raft->ctx);
    sr.raftindex = svc->o.raft->last_index(svc->o.raft->ctx);
    sr.raftterm = svc->o.raft->term(svc->o.raft->ctx);
    sr.raftappliedindex = st.applied_index;
    sr.zone = (char *)svc->o.cfg->zone;
    sr.name = (char *)svc->o.cfg->name;
    sr.compactrevision = st.compact_revision;
    sr.quotabytes = (int64_t)st.quota_bytes;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_STATUS;
    resp.status = &sr;
    reply(svc, s, &resp, st.revision);
}

static void serve_member_list(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    keel_arena_reset(&svc->arena);
    Keel__MemberListResponse ml = KEEL__MEMBER_LIST_RESPONSE__INIT;
    ml.members = members_msg(svc, &ml.n_members);
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_MEMBER_LIST;
    resp.member_list = &ml;
    reply(svc, s, &resp, -1);
    keel_arena_reset(&svc->arena);
}

static void serve_lease_ttl(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    keel_arena_reset(&svc->arena);
    struct keel_lease_info info;
    ProtobufCBinaryData *keys = NULL;
    size_t n = 0;
    int want_keys = req->lease_time_to_live->keys;
    int err = keel_store_lease_get(svc->o.store, req->lease_time_to_live->id, &svc->arena, &info,
                                   want_keys ? &keys : NULL, want_keys ? &n : NULL);
    Keel__LeaseTimeToLiveResponse lr = KEEL__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    lr.id = req->lease_time_to_live->id;
    if (err == KEEL_ELEASENOTFOUND) {
        lr.ttl = -1;
    } else if (err != 0) {
        reply_error(svc, s, req->id, err, NULL);
        return;
    } else {
        /* Expiry is the leader's business and arrives with the lease work; until then a
         * lease lives until it is revoked. */
        lr.ttl = info.ttl;
        lr.grantedttl = info.ttl;
        lr.keys = keys;
        lr.n_keys = n;
    }
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = req->id;
    resp.body_case = KEEL__RESPONSE__BODY_LEASE_TIME_TO_LIVE;
    resp.lease_time_to_live = &lr;
    reply(svc, s, &resp, -1);
    keel_arena_reset(&svc->arena);
}

/* ---- checkpoint streaming ---- */

static void snap_free(struct snap_stream *st)
{
    if (st->fd >= 0)
        close(st->fd);
    free(st->chunk);
    free(st);
}

static void snap_work(uv_work_t *w)
{
    struct snap_stream *st = w->data;
    st->fd = open(st->svc->o.cfg->data_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (st->fd < 0) {
        char path[600];
        snprintf(path, sizeof(path), "%s/checkpoint-XXXXXX", st->svc->o.cfg->data_dir);
        st->fd = mkstemp(path);
        if (st->fd >= 0)
            unlink(path);
    }
    if (st->fd < 0) {
        st->err = KEEL_EIO;
        return;
    }
    st->err = keel_store_snapshot(st->svc->o.store, st->fd);
    if (st->err == 0) {
        st->size = lseek(st->fd, 0, SEEK_END);
        if (st->size < 0)
            st->err = KEEL_EIO;
    }
}

static void snap_drain(struct keel_session *s, void *data, int closed)
{
    struct snap_stream *st = data;
    if (closed) {
        snap_free(st);
        return;
    }
    size_t n = st->size - st->off > SNAPSHOT_CHUNK ? SNAPSHOT_CHUNK : (size_t)(st->size - st->off);
    ssize_t got = n ? pread(st->fd, st->chunk, n, st->off) : 0;
    if (got < 0 || (size_t)got != n) {
        keel_session_on_drain(s, NULL, NULL);
        reply_error(st->svc, s, st->client_id, KEEL_EIO, "reading the checkpoint failed");
        snap_free(st);
        return;
    }
    st->off += got;
    Keel__SnapshotResponse sr = KEEL__SNAPSHOT_RESPONSE__INIT;
    sr.blob.data = st->chunk;
    sr.blob.len = (size_t)got;
    sr.remaining_bytes = (uint64_t)(st->size - st->off);
    sr.version = KEEL_VERSION;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.id = st->client_id;
    resp.body_case = KEEL__RESPONSE__BODY_SNAPSHOT;
    resp.snapshot = &sr;
    Keel__ResponseHeader h;
    fill_header(st->svc, &h, -1);
    resp.header = &h;
    keel_session_send(s, &resp.base);
    if (sr.remaining_bytes == 0) {
        keel_session_on_drain(s, NULL, NULL);
        keel_session_done(s);
        snap_free(st);
    }
}

static void snap_after(uv_work_t *w, int status)
{
    struct snap_stream *st = w->data;
    struct keel_session *s = session_of(st->svc, st->session_id);
    if (s == NULL) {
        snap_free(st);
        return;
    }
    if (status != 0 || st->err != 0) {
        reply_error(st->svc, s, st->client_id, st->err ? st->err : KEEL_EIO,
                    "writing the checkpoint failed");
        snap_free(st);
        return;
    }
    KLOG_INFO("streaming a %lld-byte checkpoint to session %llu", (long long)st->size,
              (unsigned long long)st->session_id);
    keel_session_on_drain(s, snap_drain, st);
}

static void serve_snapshot(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    struct snap_stream *st = calloc(1, sizeof(*st));
    uint8_t *chunk = malloc(SNAPSHOT_CHUNK);
    if (st == NULL || chunk == NULL) {
        free(st);
        free(chunk);
        reply_error(svc, s, req->id, KEEL_ENOMEM, NULL);
        return;
    }
    st->svc = svc;
    st->session_id = keel_session_id(s);
    st->client_id = req->id;
    st->fd = -1;
    st->chunk = chunk;
    st->work.data = st;
    /* Writing the copy is disk work: off the loop, on libuv's pool. */
    uv_queue_work(svc->o.loop, &st->work, snap_work, snap_after);
}

/* ---- dispatch ---- */

void keel_service_request(struct keel_service *svc, struct keel_session *s, Keel__Request *req)
{
    if (svc->stopped) {
        reply_error(svc, s, req->id, KEEL_EUNAVAILABLE, "member is stopping");
        keel__request__free_unpacked(req, NULL);
        return;
    }
    const struct keel_reqkind *kind = keel_reqkind_of(req->body_case);
    if (kind != NULL && kind->command != KEEL__COMMAND__OP__NOT_SET) {
        propose(svc, s, req);
        return; /* req is owned by the batch */
    }
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_RANGE:
        if (req->range->serializable) {
            serve_range(svc, s, req);
            break;
        }
        linearizable_range(svc, s, req);
        return; /* req is owned by the read queue */
    case KEEL__REQUEST__BODY_STATUS:
        serve_status(svc, s, req);
        break;
    case KEEL__REQUEST__BODY_MEMBER_LIST:
        serve_member_list(svc, s, req);
        break;
    case KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE:
        serve_lease_ttl(svc, s, req);
        break;
    case KEEL__REQUEST__BODY_SNAPSHOT:
        serve_snapshot(svc, s, req);
        break;
    case KEEL__REQUEST__BODY_WATCH_CREATE:
    case KEEL__REQUEST__BODY_WATCH_CANCEL:
    case KEEL__REQUEST__BODY_WATCH_PROGRESS:
        keel_watch_request(svc->o.watch, s, req);
        break;
    case KEEL__REQUEST__BODY__NOT_SET:
        reply_error(svc, s, req->id, KEEL_EINVAL, "request carries no body");
        break;
    default:
        reply_error(svc, s, req->id, KEEL_EUNSUPPORTED, "request type not supported yet");
        break;
    }
    keel__request__free_unpacked(req, NULL);
}

void keel_service_applied(struct keel_service *svc, struct keel_fsm_batch *b)
{
    uint64_t self = svc->o.cfg->member_id;
    int members_changed = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct keel_fsm_result *r = &b->results[i];
        if (r->op == KEEL__COMMAND__OP_MEMBER_ATTRS)
            members_changed = 1;
        if (r->origin != self || r->r.skipped)
            continue;
        struct pending *p = keel_u64map_del(&svc->pending, r->request_id);
        if (p == NULL)
            continue;
        struct keel_session *s = session_of(svc, p->session_id);
        uint64_t client_id = p->client_id;
        free(p);
        if (s == NULL)
            continue;
        if (r->r.err != 0) {
            reply_error(svc, s, client_id, r->r.err, r->r.msg);
        } else {
            r->r.response->id = client_id;
            reply(svc, s, r->r.response, r->r.revision);
        }
    }
    if (members_changed) {
        keel_members_load(svc->o.members, svc->o.store);
        publish_members(svc); /* a member whose address changed meanwhile */
    }
    keel_watch_applied(svc->o.watch, b);
    serve_ready(svc);
}

void keel_service_leader_changed(struct keel_service *svc, bool is_leader, uint64_t leader_id)
{
    bool was = svc->is_leader;
    svc->is_leader = is_leader;
    svc->leader_id = leader_id;
    struct keel_member_info *mi = keel_members_get(svc->o.members, leader_id);
    keel_fsm_set_leader(svc->o.fsm, mi && leader_id != svc->o.cfg->member_id ? mi->client : "");
    if (is_leader && !was) {
        for (size_t i = 0; i < svc->o.members->n; i++)
            svc->o.members->v[i].publishing = 0;
        publish_members(svc);
    }
    if (!is_leader && was) {
        fail_reads(svc, &svc->waiting, KEEL_ENOTLEADER);
        fail_reads(svc, &svc->ready, KEEL_ENOTLEADER);
    }
}

int keel_service_init(struct keel_service **out, const struct keel_service_options *o)
{
    struct keel_service *svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return KEEL_ENOMEM;
    svc->o = *o;
    svc->limits.max_txn_ops = o->cfg->max_txn_ops;
    svc->limits.max_value_bytes = o->cfg->max_request_bytes;
    keel_u64map_init(&svc->pending);
    keel_arena_init(&svc->arena, 0);
    /* Ids of this incarnation never meet ids of a previous one replayed from the log. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    svc->next_request_id = ((uint64_t)ts.tv_sec << 24) ^ (uint64_t)ts.tv_nsec;
    uv_check_init(o->loop, &svc->flush);
    svc->flush.data = svc;
    uv_check_start(&svc->flush, flush_proposals);
    *out = svc;
    return 0;
}

void keel_service_set_sessions(struct keel_service *svc, struct keel_sessions *ss)
{
    svc->sessions = ss;
}

void keel_service_stop(struct keel_service *svc)
{
    svc->stopped = 1;
    flush_proposals(&svc->flush);
    uv_check_stop(&svc->flush);
    uv_close((uv_handle_t *)&svc->flush, NULL);
    fail_reads(svc, &svc->waiting, KEEL_EUNAVAILABLE);
    fail_reads(svc, &svc->ready, KEEL_EUNAVAILABLE);
}

void keel_service_free(struct keel_service *svc)
{
    if (svc == NULL)
        return;
    for (size_t i = 0; i < svc->pending.cap; i++)
        if (svc->pending.keys[i] != 0)
            free(svc->pending.vals[i]);
    keel_u64map_close(&svc->pending);
    release_batch(svc);
    free(svc->cmds);
    free(svc->cmd_ptrs);
    free(svc->owners);
    free(svc->owned_members);
    keel_arena_close(&svc->arena);
    free(svc);
}
