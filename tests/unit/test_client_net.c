/*
 * libkeel and keelctl against fake keel members.
 *
 * A fake member is a small libuv server on 127.0.0.1 (ephemeral port) speaking the real protocol
 * (frames, Hello, Request/Response) with a toy key-value store, and scripted misbehaviour: answer
 * NOT_LEADER with a redirect, UNAVAILABLE a few times, OUTCOME_UNKNOWN, never answer, drop the
 * connection on a given request, answer a batch in reverse order, refuse the handshake. The
 * asynchronous tests run client and fakes on one loop, so every step is deterministic; the
 * synchronous and keelctl tests run the fakes on a thread of their own.
 *
 * Every loop is bounded in time and iterations; traffic stays on 127.0.0.0/8.
 *
 * Usage: test_client_net [async|sync|keelctl] (no argument: all groups).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arena.h"
#include "frame.h"
#include "keel/keel.h"

#define MAX_KV        256
#define MAX_MEMBERS   4
#define LOOP_BOUND_MS 10000

/* ---------------------------------------------------------------------------------------------
 * Fake member
 */

struct fake_kv {
    char key[64];
    size_t klen;
    char value[256];
    size_t vlen;
    int64_t create, mod, version, lease;
};

struct fake_member_info {
    uint64_t id;
    char name[32];
    char client[64];
    char zone[16];
};

struct fake {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening;
    char addr[64];
    uint64_t member_id;
    char zone[16];
    /* handshake */
    char leader_addr[64];
    uint64_t leader_id;
    bool refuse_hello;
    struct fake_member_info members[MAX_MEMBERS];
    int nmembers;
    /* behaviour */
    bool not_leader;   /* answer writes and linearizable reads with NOT_LEADER */
    char redirect[64]; /* ... naming this leader address ("" for none) */
    int unavailable_n; /* answer the next n requests with UNAVAILABLE */
    int unknown_n;     /* answer the next n writes with OUTCOME_UNKNOWN */
    bool silent;       /* never answer requests */
    int drop_on;       /* Request body case that makes us drop the connection, once */
    bool reverse;      /* answer each read's batch in reverse order */
    int64_t compacted; /* ranges at a revision below this fail with COMPACTED */
    /* state */
    struct fake_kv kv[MAX_KV];
    int nkv;
    int64_t rev;
    /* counters */
    int conns, hellos, requests, puts, ranges, serializable_ranges, reads;
    uint64_t max_batch;
    /* sessions, to close them all */
    struct fake_session *sessions;
};

struct fake_session {
    struct fake *f;
    struct fake_session *next;
    uv_tcp_t tcp;
    struct keel_frame_decoder dec;
    bool hello_done;
    bool closing;
};

static void fs_closed(uv_handle_t *h)
{
    struct fake_session *s = h->data;
    struct fake *f = s->f;
    for (struct fake_session **pp = &f->sessions; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    keel_frame_decoder_close(&s->dec);
    free(s);
}

static void fs_close(struct fake_session *s)
{
    if (s->closing)
        return;
    s->closing = true;
    uv_close((uv_handle_t *)&s->tcp, fs_closed);
}

static void fs_write_done(uv_write_t *w, int status)
{
    (void)status;
    free(w->data);
    free(w);
}

static void fs_send(struct fake_session *s, uint8_t *buf, size_t len)
{
    if (s->closing || len == 0) {
        free(buf);
        return;
    }
    uv_write_t *w = malloc(sizeof(*w));
    assert_non_null(w);
    w->data = buf;
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
    if (uv_write(w, (uv_stream_t *)&s->tcp, &b, 1, fs_write_done) != 0) {
        free(buf);
        free(w);
    }
}

static uint8_t *frame_of(const ProtobufCMessage *m, size_t *len)
{
    *len = keel_frame_size(m);
    uint8_t *b = malloc(*len);
    assert_non_null(b);
    keel_frame_pack(m, b);
    return b;
}

static int kv_cmp(const struct fake_kv *kv, const uint8_t *k, size_t n)
{
    size_t m = kv->klen < n ? kv->klen : n;
    int c = memcmp(kv->key, k, m);
    if (c)
        return c;
    return kv->klen < n ? -1 : kv->klen > n;
}

static bool kv_in_range(const struct fake_kv *kv, ProtobufCBinaryData key, ProtobufCBinaryData end)
{
    if (end.len == 0)
        return kv_cmp(kv, key.data, key.len) == 0;
    if (kv_cmp(kv, key.data, key.len) < 0)
        return false;
    if (end.len == 1 && end.data[0] == 0)
        return true;
    return kv_cmp(kv, end.data, end.len) < 0;
}

static Keel__KeyValue *kv_msg(struct keel_arena *a, const struct fake_kv *kv, bool keys_only)
{
    Keel__KeyValue *m = keel_arena_alloc(a, sizeof(*m));
    keel__key_value__init(m);
    m->key.data = keel_arena_memdup(a, kv->key, kv->klen);
    m->key.len = kv->klen;
    if (!keys_only) {
        m->value.data = keel_arena_memdup(a, kv->value, kv->vlen);
        m->value.len = kv->vlen;
    }
    m->create_revision = kv->create;
    m->mod_revision = kv->mod;
    m->version = kv->version;
    m->lease = kv->lease;
    return m;
}

static Keel__RangeResponse *fake_range(struct fake *f, struct keel_arena *a,
                                       const Keel__RangeRequest *r)
{
    Keel__RangeResponse *out = keel_arena_alloc(a, sizeof(*out));
    keel__range_response__init(out);
    out->kvs = keel_arena_alloc(a, (size_t)(f->nkv + 1) * sizeof(*out->kvs));
    for (int i = 0; i < f->nkv; i++) {
        if (!kv_in_range(&f->kv[i], r->key, r->range_end))
            continue;
        out->count++;
        if (r->count_only)
            continue;
        if (r->limit > 0 && (int64_t)out->n_kvs >= r->limit) {
            out->more = true;
            continue;
        }
        out->kvs[out->n_kvs++] = kv_msg(a, &f->kv[i], r->keys_only);
    }
    return out;
}

static Keel__PutResponse *fake_put(struct fake *f, struct keel_arena *a, const Keel__PutRequest *p,
                                   int64_t rev)
{
    Keel__PutResponse *out = keel_arena_alloc(a, sizeof(*out));
    keel__put_response__init(out);
    int i = 0;
    while (i < f->nkv && kv_cmp(&f->kv[i], p->key.data, p->key.len) < 0)
        i++;
    bool exists = i < f->nkv && kv_cmp(&f->kv[i], p->key.data, p->key.len) == 0;
    if (exists && p->prev_kv)
        out->prev_kv = kv_msg(a, &f->kv[i], false);
    if (!exists) {
        assert_true(f->nkv < MAX_KV);
        memmove(&f->kv[i + 1], &f->kv[i], (size_t)(f->nkv - i) * sizeof(f->kv[0]));
        f->nkv++;
        memset(&f->kv[i], 0, sizeof(f->kv[i]));
        assert_true(p->key.len <= sizeof(f->kv[i].key));
        memcpy(f->kv[i].key, p->key.data, p->key.len);
        f->kv[i].klen = p->key.len;
        f->kv[i].create = rev;
    }
    struct fake_kv *kv = &f->kv[i];
    if (!p->ignore_value) {
        assert_true(p->value.len <= sizeof(kv->value));
        memcpy(kv->value, p->value.data, p->value.len);
        kv->vlen = p->value.len;
    }
    if (!p->ignore_lease)
        kv->lease = p->lease;
    kv->mod = rev;
    kv->version++;
    return out;
}

static Keel__DeleteRangeResponse *fake_del(struct fake *f, struct keel_arena *a,
                                           const Keel__DeleteRangeRequest *d)
{
    Keel__DeleteRangeResponse *out = keel_arena_alloc(a, sizeof(*out));
    keel__delete_range_response__init(out);
    out->prev_kvs = keel_arena_alloc(a, (size_t)(f->nkv + 1) * sizeof(*out->prev_kvs));
    for (int i = 0; i < f->nkv;) {
        if (!kv_in_range(&f->kv[i], d->key, d->range_end)) {
            i++;
            continue;
        }
        if (d->prev_kv)
            out->prev_kvs[out->n_prev_kvs++] = kv_msg(a, &f->kv[i], false);
        memmove(&f->kv[i], &f->kv[i + 1], (size_t)(f->nkv - i - 1) * sizeof(f->kv[0]));
        f->nkv--;
        out->deleted++;
    }
    return out;
}

static bool fake_compare(struct fake *f, const Keel__Compare *c)
{
    const struct fake_kv *kv = NULL;
    for (int i = 0; i < f->nkv; i++)
        if (kv_cmp(&f->kv[i], c->key.data, c->key.len) == 0)
            kv = &f->kv[i];
    int cmp;
    if (c->target == KEEL__COMPARE__COMPARE_TARGET__VALUE) {
        if (kv == NULL)
            return false;
        size_t m = kv->vlen < c->value.len ? kv->vlen : c->value.len;
        cmp = memcmp(kv->value, c->value.data, m);
        if (cmp == 0)
            cmp = kv->vlen < c->value.len ? -1 : kv->vlen > c->value.len;
    } else {
        int64_t have = 0, want = 0;
        switch (c->target) {
        case KEEL__COMPARE__COMPARE_TARGET__VERSION:
            have = kv ? kv->version : 0, want = c->version;
            break;
        case KEEL__COMPARE__COMPARE_TARGET__CREATE:
            have = kv ? kv->create : 0, want = c->create_revision;
            break;
        case KEEL__COMPARE__COMPARE_TARGET__MOD:
            have = kv ? kv->mod : 0, want = c->mod_revision;
            break;
        default:
            have = kv ? kv->lease : 0, want = c->lease;
            break;
        }
        cmp = have < want ? -1 : have > want;
    }
    switch (c->result) {
    case KEEL__COMPARE__COMPARE_RESULT__EQUAL:
        return cmp == 0;
    case KEEL__COMPARE__COMPARE_RESULT__NOT_EQUAL:
        return cmp != 0;
    case KEEL__COMPARE__COMPARE_RESULT__LESS:
        return cmp < 0;
    default:
        return cmp > 0;
    }
}

static void set_error(struct keel_arena *a, Keel__Response *resp, Keel__ErrorCode code,
                      const char *msg, const char *leader)
{
    Keel__Error *e = keel_arena_alloc(a, sizeof(*e));
    keel__error__init(e);
    e->code = code;
    e->message = keel_arena_memdup(a, msg, strlen(msg) + 1);
    if (leader)
        e->leader_address = keel_arena_memdup(a, leader, strlen(leader) + 1);
    resp->error = e;
}

static bool is_write(const Keel__Request *r)
{
    switch (r->body_case) {
    case KEEL__REQUEST__BODY_PUT:
    case KEEL__REQUEST__BODY_DELETE_RANGE:
    case KEEL__REQUEST__BODY_TXN:
    case KEEL__REQUEST__BODY_COMPACTION:
    case KEEL__REQUEST__BODY_LEASE_GRANT:
    case KEEL__REQUEST__BODY_LEASE_REVOKE:
        return true;
    default:
        return false;
    }
}

/* Fill resp for req; false: drop the connection instead. */
static bool fake_answer(struct fake *f, struct keel_arena *a, const Keel__Request *req,
                        Keel__Response *resp)
{
    f->requests++;
    if (req->body_case == KEEL__REQUEST__BODY_PUT)
        f->puts++;
    if (req->body_case == KEEL__REQUEST__BODY_RANGE) {
        f->ranges++;
        if (req->range->serializable)
            f->serializable_ranges++;
    }
    if (f->drop_on && (int)req->body_case == f->drop_on) {
        f->drop_on = 0;
        return false;
    }
    resp->id = req->id;
    Keel__ResponseHeader *h = keel_arena_alloc(a, sizeof(*h));
    keel__response_header__init(h);
    h->cluster_id = 0xc1;
    h->member_id = f->member_id;
    h->raft_term = 2;
    resp->header = h;
    bool leader_only =
        is_write(req) || (req->body_case == KEEL__REQUEST__BODY_RANGE && !req->range->serializable);
    if (f->not_leader && leader_only) {
        set_error(a, resp, KEEL__ERROR_CODE__NOT_LEADER, "not the leader", f->redirect);
        return true;
    }
    if (f->unavailable_n > 0) {
        f->unavailable_n--;
        set_error(a, resp, KEEL__ERROR_CODE__UNAVAILABLE, "no leader yet", NULL);
        return true;
    }
    if (f->unknown_n > 0 && is_write(req)) {
        f->unknown_n--;
        set_error(a, resp, KEEL__ERROR_CODE__OUTCOME_UNKNOWN, "leadership lost during the write",
                  NULL);
        return true;
    }
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_PUT:
        resp->body_case = KEEL__RESPONSE__BODY_PUT;
        resp->put = fake_put(f, a, req->put, ++f->rev);
        break;
    case KEEL__REQUEST__BODY_RANGE:
        if (req->range->revision > 0 && req->range->revision < f->compacted) {
            set_error(a, resp, KEEL__ERROR_CODE__COMPACTED, "required revision has been compacted",
                      NULL);
            break;
        }
        resp->body_case = KEEL__RESPONSE__BODY_RANGE;
        resp->range = fake_range(f, a, req->range);
        break;
    case KEEL__REQUEST__BODY_DELETE_RANGE:
        resp->body_case = KEEL__RESPONSE__BODY_DELETE_RANGE;
        resp->delete_range = fake_del(f, a, req->delete_range);
        if (resp->delete_range->deleted)
            f->rev++;
        break;
    case KEEL__REQUEST__BODY_TXN: {
        const Keel__TxnRequest *t = req->txn;
        bool ok = true;
        for (size_t i = 0; i < t->n_compare; i++)
            ok = ok && fake_compare(f, t->compare[i]);
        Keel__RequestOp **ops = ok ? t->success : t->failure;
        size_t nops = ok ? t->n_success : t->n_failure;
        Keel__TxnResponse *tr = keel_arena_alloc(a, sizeof(*tr));
        keel__txn_response__init(tr);
        tr->succeeded = ok;
        tr->responses = keel_arena_alloc(a, (nops + 1) * sizeof(*tr->responses));
        int64_t rev = f->rev + 1;
        bool wrote = false;
        for (size_t i = 0; i < nops; i++) {
            Keel__ResponseOp *ro = keel_arena_alloc(a, sizeof(*ro));
            keel__response_op__init(ro);
            switch (ops[i]->request_case) {
            case KEEL__REQUEST_OP__REQUEST_REQUEST_PUT:
                ro->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
                ro->response_put = fake_put(f, a, ops[i]->request_put, rev);
                wrote = true;
                break;
            case KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE:
                ro->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
                ro->response_range = fake_range(f, a, ops[i]->request_range);
                break;
            case KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
                ro->response_case = KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
                ro->response_delete_range = fake_del(f, a, ops[i]->request_delete_range);
                wrote = true;
                break;
            default:
                break;
            }
            tr->responses[tr->n_responses++] = ro;
        }
        if (wrote)
            f->rev = rev;
        resp->body_case = KEEL__RESPONSE__BODY_TXN;
        resp->txn = tr;
        break;
    }
    case KEEL__REQUEST__BODY_COMPACTION: {
        Keel__CompactionResponse *c = keel_arena_alloc(a, sizeof(*c));
        keel__compaction_response__init(c);
        f->compacted = req->compaction->revision;
        resp->body_case = KEEL__RESPONSE__BODY_COMPACTION;
        resp->compaction = c;
        break;
    }
    case KEEL__REQUEST__BODY_STATUS: {
        Keel__StatusResponse *s = keel_arena_alloc(a, sizeof(*s));
        keel__status_response__init(s);
        s->version = "0.1.0-fake";
        s->dbsize = 24576;
        s->leader = f->leader_id;
        s->raftindex = 42;
        s->raftterm = 2;
        s->raftappliedindex = 41;
        s->zone = f->zone;
        resp->body_case = KEEL__RESPONSE__BODY_STATUS;
        resp->status = s;
        break;
    }
    case KEEL__REQUEST__BODY_MEMBER_LIST: {
        Keel__MemberListResponse *ml = keel_arena_alloc(a, sizeof(*ml));
        keel__member_list_response__init(ml);
        ml->members = keel_arena_alloc(a, MAX_MEMBERS * sizeof(*ml->members));
        for (int i = 0; i < f->nmembers; i++) {
            Keel__Member *m = keel_arena_alloc(a, sizeof(*m));
            keel__member__init(m);
            m->id = f->members[i].id;
            m->name = f->members[i].name;
            m->n_clienturls = 1;
            m->clienturls = keel_arena_alloc(a, sizeof(char *));
            m->clienturls[0] = f->members[i].client;
            m->n_peerurls = 1;
            m->peerurls = keel_arena_alloc(a, sizeof(char *));
            m->peerurls[0] = "127.0.0.1:2380";
            m->zone = f->members[i].zone;
            ml->members[ml->n_members++] = m;
        }
        resp->body_case = KEEL__RESPONSE__BODY_MEMBER_LIST;
        resp->member_list = ml;
        break;
    }
    default:
        set_error(a, resp, KEEL__ERROR_CODE__UNSUPPORTED, "the fake does not do that", NULL);
        break;
    }
    return true;
}

static void fake_hello(struct fake_session *s, const uint8_t *p, size_t n)
{
    struct fake *f = s->f;
    Keel__Hello *hello = keel__hello__unpack(NULL, n, p);
    assert_non_null(hello);
    assert_int_equal(hello->protocol_version, 1);
    keel__hello__free_unpacked(hello, NULL);
    f->hellos++;
    Keel__HelloResponse hr = KEEL__HELLO_RESPONSE__INIT;
    Keel__Error err = KEEL__ERROR__INIT;
    hr.protocol_version = 1;
    hr.cluster_id = 0xc1;
    hr.member_id = f->member_id;
    hr.zone = f->zone;
    hr.version = "0.1.0-fake";
    hr.leader_id = f->leader_id;
    hr.leader_address = f->leader_addr;
    Keel__Member ms[MAX_MEMBERS], *mp[MAX_MEMBERS];
    char *urls[MAX_MEMBERS];
    for (int i = 0; i < f->nmembers; i++) {
        keel__member__init(&ms[i]);
        ms[i].id = f->members[i].id;
        ms[i].name = f->members[i].name;
        urls[i] = f->members[i].client;
        ms[i].n_clienturls = 1;
        ms[i].clienturls = &urls[i];
        ms[i].zone = f->members[i].zone;
        mp[i] = &ms[i];
    }
    hr.n_members = (size_t)f->nmembers;
    hr.members = mp;
    if (f->refuse_hello) {
        err.code = KEEL__ERROR_CODE__UNAUTHENTICATED;
        err.message = "bad token";
        hr.error = &err;
    }
    size_t len;
    uint8_t *b = frame_of(&hr.base, &len);
    fs_send(s, b, len);
    s->hello_done = true;
}

static void fs_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct fake_session *s = h->data;
    uint8_t *p;
    size_t len;
    assert_int_equal(keel_frame_decoder_space(&s->dec, 65536, &p, &len), 0);
    buf->base = (char *)p;
    buf->len = len;
}

static void fs_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct fake_session *s = st->data;
    struct fake *f = s->f;
    if (s->closing)
        return;
    if (nread < 0) {
        fs_close(s);
        return;
    }
    keel_frame_decoder_commit(&s->dec, (size_t)nread);
    f->reads++;
    struct keel_arena arena;
    keel_arena_init(&arena, 0);
    /* Answers of one read go out together (reversed on request): one write. */
    uint8_t *frames[4096];
    size_t lens[4096];
    size_t nframes = 0;
    const uint8_t *p;
    size_t n;
    bool drop = false;
    while (!drop && keel_frame_decoder_next(&s->dec, &p, &n) == 1) {
        if (!s->hello_done) {
            fake_hello(s, p, n);
            continue;
        }
        Keel__Request *req = keel__request__unpack(keel_arena_pb(&arena), n, p);
        assert_non_null(req);
        Keel__Response resp = KEEL__RESPONSE__INIT;
        if (!fake_answer(f, &arena, req, &resp)) {
            drop = true;
            break;
        }
        if (f->silent)
            continue;
        assert_true(nframes < 4096);
        frames[nframes] = frame_of(&resp.base, &lens[nframes]);
        nframes++;
    }
    if (nframes > f->max_batch)
        f->max_batch = nframes;
    size_t total = 0;
    for (size_t i = 0; i < nframes; i++)
        total += lens[i];
    uint8_t *all = malloc(total ? total : 1);
    assert_non_null(all);
    size_t off = 0;
    for (size_t i = 0; i < nframes; i++) {
        size_t j = f->reverse ? nframes - 1 - i : i;
        memcpy(all + off, frames[j], lens[j]);
        off += lens[j];
        free(frames[j]);
    }
    fs_send(s, all, total);
    keel_arena_close(&arena);
    if (drop)
        fs_close(s);
}

static void fake_on_conn(uv_stream_t *server, int status)
{
    struct fake *f = server->data;
    if (status < 0)
        return;
    struct fake_session *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->f = f;
    keel_frame_decoder_init(&s->dec, 0);
    uv_tcp_init(f->loop, &s->tcp);
    s->tcp.data = s;
    if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
        s->closing = true;
        uv_close((uv_handle_t *)&s->tcp, fs_closed);
        s->next = f->sessions;
        f->sessions = s;
        return;
    }
    s->next = f->sessions;
    f->sessions = s;
    f->conns++;
    uv_read_start((uv_stream_t *)&s->tcp, fs_alloc, fs_read);
}

static void fake_start(struct fake *f, uv_loop_t *loop, uint64_t id, const char *zone)
{
    memset(f, 0, sizeof(*f));
    f->loop = loop;
    f->member_id = id;
    snprintf(f->zone, sizeof(f->zone), "%s", zone ? zone : "");
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    assert_int_equal(uv_tcp_init(loop, &f->listener), 0);
    f->listener.data = f;
    assert_int_equal(uv_tcp_bind(&f->listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 128, fake_on_conn), 0);
    struct sockaddr_in bound;
    int len = sizeof(bound);
    uv_tcp_getsockname(&f->listener, (struct sockaddr *)&bound, &len);
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", ntohs(bound.sin_port));
    f->listening = true;
}

/* Close the listener and every session: the member is gone. */
static void fake_stop(struct fake *f)
{
    if (f->listening) {
        f->listening = false;
        uv_close((uv_handle_t *)&f->listener, NULL);
    }
    for (struct fake_session *s = f->sessions; s; s = s->next)
        fs_close(s);
}

static void fake_add_member(struct fake *f, const struct fake *m)
{
    struct fake_member_info *i = &f->members[f->nmembers++];
    i->id = m->member_id;
    snprintf(i->name, sizeof(i->name), "m%" PRIu64, m->member_id);
    snprintf(i->client, sizeof(i->client), "%s", m->addr);
    snprintf(i->zone, sizeof(i->zone), "%s", m->zone);
}

static void fake_set_leader(struct fake *f, const struct fake *leader)
{
    f->leader_id = leader ? leader->member_id : 0;
    snprintf(f->leader_addr, sizeof(f->leader_addr), "%s", leader ? leader->addr : "");
}

/* A port nothing listens on: bind one, read it, close it. */
static void dead_addr(char *out, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    snprintf(out, len, "127.0.0.1:%d", ntohs(sa.sin_port));
    close(fd);
}

/* ---------------------------------------------------------------------------------------------
 * Async harness
 */

struct result {
    int status;
    bool called;
    int calls;
    Keel__Response__BodyCase body;
    uint64_t member; /* header.member_id */
    char msg[256];
    char key[64]; /* first kv key of a range */
    int64_t count;
};

static void on_result(int status, const Keel__Response *resp, void *data)
{
    struct result *r = data;
    assert_non_null(resp);
    r->calls++;
    r->called = true;
    r->status = status;
    r->body = resp->body_case;
    r->member = resp->header ? resp->header->member_id : 0;
    if (status != 0) {
        assert_non_null(resp->error);
        snprintf(r->msg, sizeof(r->msg), "%s", resp->error->message);
    }
    if (resp->body_case == KEEL__RESPONSE__BODY_RANGE) {
        r->count = resp->range->count;
        if (resp->range->n_kvs)
            snprintf(r->key, sizeof(r->key), "%.*s", (int)resp->range->kvs[0]->key.len,
                     (const char *)resp->range->kvs[0]->key.data);
    }
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *done or the bound passes. */
static bool run_until(uv_loop_t *loop, const bool *done, uint64_t bound_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_cb, 5, 5);
    uint64_t end = uv_hrtime() + bound_ms * 1000000ull;
    for (int i = 0; i < 1000000 && !*done && uv_hrtime() < end; i++)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return *done;
}

struct env {
    uv_loop_t loop;
    struct fake f[3];
    int nf;
    struct keel_aclient *ac;
    bool closed;
};

static void on_closed(void *data)
{
    *(bool *)data = true;
}

static struct env *env_new(int nfakes)
{
    struct env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    e->nf = nfakes;
    for (int i = 0; i < nfakes; i++)
        fake_start(&e->f[i], &e->loop, 0x100 + (uint64_t)i, NULL);
    return e;
}

static void env_client(struct env *e, const char *endpoints, const char *zone, uint32_t timeout)
{
    struct keel_options o = {0};
    o.endpoints = endpoints;
    o.zone = zone;
    o.request_timeout_ms = timeout ? timeout : 3000;
    o.dial_timeout_ms = 1000;
    assert_int_equal(keel_aclient_init(&e->ac, &e->loop, &o), 0);
}

static void env_free(struct env *e)
{
    if (e->ac) {
        keel_aclient_close(e->ac, on_closed, &e->closed);
        assert_true(run_until(&e->loop, &e->closed, LOOP_BOUND_MS));
    }
    for (int i = 0; i < e->nf; i++)
        fake_stop(&e->f[i]);
    for (int i = 0; i < 1000 && uv_loop_alive(&e->loop); i++)
        uv_run(&e->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    free(e);
}

static void put_req(Keel__Request *req, Keel__PutRequest *put, const char *k, const char *v)
{
    keel__request__init(req);
    keel__put_request__init(put);
    put->key.data = (uint8_t *)k;
    put->key.len = strlen(k);
    put->value.data = (uint8_t *)v;
    put->value.len = strlen(v);
    req->body_case = KEEL__REQUEST__BODY_PUT;
    req->put = put;
}

static void range_req(Keel__Request *req, Keel__RangeRequest *r, const char *k, bool serializable)
{
    keel__request__init(req);
    keel__range_request__init(r);
    r->key.data = (uint8_t *)k;
    r->key.len = strlen(k);
    r->serializable = serializable;
    req->body_case = KEEL__REQUEST__BODY_RANGE;
    req->range = r;
}

static void do_put(struct env *e, const char *k, const char *v, struct result *res)
{
    Keel__Request req;
    Keel__PutRequest put;
    put_req(&req, &put, k, v);
    memset(res, 0, sizeof(*res));
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, res), 0);
    assert_true(run_until(&e->loop, &res->called, LOOP_BOUND_MS));
}

static void do_range(struct env *e, const char *k, bool serializable, struct result *res)
{
    Keel__Request req;
    Keel__RangeRequest r;
    range_req(&req, &r, k, serializable);
    memset(res, 0, sizeof(*res));
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, res), 0);
    assert_true(run_until(&e->loop, &res->called, LOOP_BOUND_MS));
}

/* ---------------------------------------------------------------------------------------------
 * Async tests
 */

static void test_roundtrip(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    e->f[0].leader_id = e->f[0].member_id;
    env_client(e, e->f[0].addr, NULL, 0);
    struct result r;
    do_put(e, "k1", "v1", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.body, KEEL__RESPONSE__BODY_PUT);
    assert_int_equal(r.member, 0x100);
    do_range(e, "k1", false, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.key, "k1");
    assert_int_equal(r.count, 1);
    struct keel_aclient_stats st;
    keel_aclient_stats(e->ac, &st);
    assert_int_equal(st.dials, 1);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.completed, 2);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(e->f[0].hellos, 1);
    env_free(e);
}

/* Many requests in flight on one connection, answered in reverse order within each batch: every
 * reply must reach its own callback, and frames must go out batched. */
#define PIPE_N 3000
struct pipe_ctx {
    char keys[PIPE_N][16];
    struct result res[PIPE_N];
};

static void test_pipeline_out_of_order(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    env_client(e, f->addr, NULL, 0);
    struct pipe_ctx *ctx = calloc(1, sizeof(*ctx));
    assert_non_null(ctx);
    /* Keys first, so each range below has a distinct answer. */
    for (int i = 0; i < 50; i++) {
        snprintf(ctx->keys[i], sizeof(ctx->keys[i]), "key%04d", i);
        struct result r;
        do_put(e, ctx->keys[i], "v", &r);
        assert_int_equal(r.status, 0);
    }
    f->reverse = true;
    int completed_before = 0;
    for (int i = 0; i < PIPE_N; i++) {
        Keel__Request req;
        Keel__RangeRequest rr;
        snprintf(ctx->keys[i], sizeof(ctx->keys[i]), "key%04d", i % 50);
        range_req(&req, &rr, ctx->keys[i], false);
        assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &ctx->res[i]), 0);
    }
    struct keel_aclient_stats st;
    keel_aclient_stats(e->ac, &st);
    completed_before = (int)st.completed;
    /* Wait for all. */
    uint64_t end = uv_hrtime() + LOOP_BOUND_MS * 1000000ull;
    for (;;) {
        keel_aclient_stats(e->ac, &st);
        if ((int)st.completed - completed_before >= PIPE_N || uv_hrtime() > end)
            break;
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    for (int i = 0; i < PIPE_N; i++) {
        assert_int_equal(ctx->res[i].calls, 1);
        assert_int_equal(ctx->res[i].status, 0);
        assert_string_equal(ctx->res[i].key, ctx->keys[i]);
    }
    keel_aclient_stats(e->ac, &st);
    /* Batching: far fewer writes than frames. */
    assert_true(st.writes * 10 < st.frames_out);
    assert_true(f->max_batch > 100);
    assert_int_equal(st.in_flight, 0);
    free(ctx);
    env_free(e);
}

/* The member we dial names the leader in its HelloResponse: writes go straight there. */
static void test_hello_names_leader(void **state)
{
    (void)state;
    struct env *e = env_new(2);
    struct fake *fol = &e->f[0], *lead = &e->f[1];
    fake_set_leader(fol, lead);
    fake_set_leader(lead, lead);
    fake_add_member(fol, fol);
    fake_add_member(fol, lead);
    fol->not_leader = true;
    snprintf(fol->redirect, sizeof(fol->redirect), "%s", lead->addr);
    env_client(e, fol->addr, NULL, 0);
    struct result r;
    do_put(e, "a", "1", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.member, lead->member_id);
    assert_int_equal(fol->requests, 0);
    assert_int_equal(lead->puts, 1);
    env_free(e);
}

/* A follower that does not advertise the leader answers NOT_LEADER with its address. */
static void test_not_leader_redirect(void **state)
{
    (void)state;
    struct env *e = env_new(2);
    struct fake *fol = &e->f[0], *lead = &e->f[1];
    fol->not_leader = true;
    snprintf(fol->redirect, sizeof(fol->redirect), "%s", lead->addr);
    fake_set_leader(lead, lead);
    env_client(e, fol->addr, NULL, 0);
    struct result r;
    do_put(e, "a", "1", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.member, lead->member_id);
    assert_int_equal(fol->puts, 1);
    assert_int_equal(lead->puts, 1);
    struct keel_aclient_stats st;
    keel_aclient_stats(e->ac, &st);
    assert_int_equal(st.redirects, 1);
    /* The leader is remembered: the next write goes straight there. */
    do_put(e, "b", "2", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(fol->puts, 1);
    assert_int_equal(lead->puts, 2);
    /* A serializable read may stay on the follower. */
    do_range(e, "a", true, &r);
    assert_int_equal(r.status, 0);
    env_free(e);
}

/* NOT_LEADER with no leader known anywhere: retried (bounded), then the answer is delivered. */
static void test_not_leader_exhausts_retries(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *fol = &e->f[0];
    fol->not_leader = true;
    struct keel_options o = {.endpoints = fol->addr, .max_retries = 3, .request_timeout_ms = 5000};
    assert_int_equal(keel_aclient_init(&e->ac, &e->loop, &o), 0);
    struct result r;
    do_put(e, "a", "1", &r);
    assert_int_equal(r.status, KEEL_ENOTLEADER);
    assert_string_equal(r.msg, "not the leader");
    assert_int_equal(fol->puts, 4); /* first try + 3 retries, all refused without effect */
    env_free(e);
}

/* A member cut off from the rest keeps answering "no leader" (NOT_LEADER without an address, or
 * UNAVAILABLE): retries must look elsewhere rather than spend themselves on it. */
static void test_cut_off_member_avoided(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        struct env *e = env_new(2);
        struct fake *cut = &e->f[0], *lead = &e->f[1];
        if (variant == 0)
            cut->not_leader = true; /* and no redirect */
        else
            cut->unavailable_n = 1000000;
        fake_set_leader(lead, lead);
        char eps[160];
        snprintf(eps, sizeof(eps), "%s,%s", cut->addr, lead->addr);
        env_client(e, eps, NULL, 0);
        struct result r;
        do_put(e, "a", "1", &r);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.member, lead->member_id);
        assert_int_equal(cut->puts, 1);
        /* Serializable reads too. */
        do_range(e, "a", true, &r);
        assert_int_equal(r.status, 0);
        env_free(e);
    }
}

static void test_unavailable_retried(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    f->unavailable_n = 2;
    env_client(e, f->addr, NULL, 0);
    struct result r;
    do_put(e, "a", "1", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(f->puts, 3);
    struct keel_aclient_stats st;
    keel_aclient_stats(e->ac, &st);
    assert_int_equal(st.retries, 2);
    env_free(e);
}

static void test_outcome_unknown_not_retried(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    f->unknown_n = 1;
    env_client(e, f->addr, NULL, 0);
    struct result r;
    do_put(e, "a", "1", &r);
    assert_int_equal(r.status, KEEL_EUNKNOWN);
    assert_string_equal(r.msg, "leadership lost during the write");
    assert_int_equal(f->puts, 1);
    env_free(e);
}

/* The connection drops after a write was sent: outcome unknown, never resent. */
static void test_drop_after_write_is_unknown(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    f->drop_on = KEEL__REQUEST__BODY_PUT;
    env_client(e, f->addr, NULL, 0);
    struct result r;
    do_put(e, "a", "1", &r);
    assert_int_equal(r.status, KEEL_EUNKNOWN);
    assert_non_null(strstr(r.msg, "outcome is unknown"));
    assert_int_equal(f->puts, 1);
    /* The client recovers: a new connection serves the next request. */
    do_put(e, "b", "2", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(f->conns, 2);
    env_free(e);
}

/* The connection drops after a read was sent: reads are idempotent, so it is retried. */
static void test_drop_after_read_is_retried(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    f->drop_on = KEEL__REQUEST__BODY_RANGE;
    env_client(e, f->addr, NULL, 0);
    struct result r;
    do_range(e, "a", false, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(f->ranges, 2);
    assert_int_equal(f->conns, 2);
    env_free(e);
}

static void test_timeout(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    f->silent = true;
    env_client(e, f->addr, NULL, 200);
    uint64_t t0 = uv_hrtime();
    struct result r, r2;
    do_put(e, "a", "1", &r);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(r.status, KEEL_ETIMEOUT);
    assert_non_null(strstr(r.msg, "outcome is unknown"));
    assert_true(ms >= 190 && ms < 2000);
    /* A per-request timeout overrides the default. */
    Keel__Request req;
    Keel__RangeRequest rr;
    range_req(&req, &rr, "a", false);
    memset(&r2, 0, sizeof(r2));
    t0 = uv_hrtime();
    assert_int_equal(keel_aclient_request(e->ac, &req, 50, on_result, &r2), 0);
    assert_true(run_until(&e->loop, &r2.called, LOOP_BOUND_MS));
    ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(r2.status, KEEL_ETIMEOUT);
    assert_true(ms >= 45 && ms < 1000);
    env_free(e);
}

static void test_dead_endpoint_skipped(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    char dead[64], eps[160];
    dead_addr(dead, sizeof(dead));
    snprintf(eps, sizeof(eps), "%s,%s", dead, f->addr);
    env_client(e, eps, NULL, 0);
    struct result r;
    do_range(e, "a", false, &r);
    assert_int_equal(r.status, 0);
    struct keel_aclient_stats st;
    keel_aclient_stats(e->ac, &st);
    assert_int_equal(st.dial_failures, 1);
    env_free(e);
}

static void test_all_dead_fails_fast(void **state)
{
    (void)state;
    struct env *e = env_new(0);
    char d1[64], d2[64], eps[160];
    dead_addr(d1, sizeof(d1));
    dead_addr(d2, sizeof(d2));
    snprintf(eps, sizeof(eps), "%s,%s", d1, d2);
    env_client(e, eps, NULL, 5000);
    uint64_t t0 = uv_hrtime();
    struct result r;
    do_put(e, "a", "1", &r);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(r.status, KEEL_EUNAVAILABLE);
    assert_non_null(strstr(r.msg, "connection refused"));
    assert_true(ms < 3000);
    env_free(e);
}

static void test_handshake_refused(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    e->f[0].refuse_hello = true;
    env_client(e, e->f[0].addr, NULL, 5000);
    struct result r;
    do_range(e, "a", false, &r);
    assert_int_equal(r.status, KEEL_EUNAVAILABLE);
    assert_non_null(strstr(r.msg, "bad token"));
    assert_int_equal(e->f[0].requests, 0);
    env_free(e);
}

/* Serializable reads prefer the client's zone; writes and linearizable reads go to the leader. */
static void test_zone_routing(void **state)
{
    (void)state;
    struct env *e = env_new(3);
    struct fake *lead = &e->f[0], *fa = &e->f[1], *fb = &e->f[2];
    snprintf(lead->zone, sizeof(lead->zone), "a");
    snprintf(fa->zone, sizeof(fa->zone), "a");
    snprintf(fb->zone, sizeof(fb->zone), "b");
    for (int i = 0; i < 3; i++) {
        fake_set_leader(&e->f[i], lead);
        for (int j = 0; j < 3; j++)
            fake_add_member(&e->f[i], &e->f[j]);
    }
    fa->not_leader = fb->not_leader = true;
    env_client(e, lead->addr, "b", 0);
    struct result r;
    do_range(e, "x", true, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.member, fb->member_id);
    do_range(e, "x", false, &r);
    assert_int_equal(r.member, lead->member_id);
    do_put(e, "x", "1", &r);
    assert_int_equal(r.member, lead->member_id);
    do_range(e, "x", true, &r);
    assert_int_equal(r.member, fb->member_id);
    assert_int_equal(fb->serializable_ranges, 2);
    assert_int_equal(fa->requests, 0);
    assert_int_equal(fa->conns, 0);
    /* When the zone's member is gone, any member serves. */
    fake_stop(fb);
    do_range(e, "x", true, &r);
    assert_int_equal(r.status, 0);
    assert_true(r.member == lead->member_id || r.member == fa->member_id);
    env_free(e);
}

/* The leader goes away: a write submitted afterwards finds the new leader through a member that
 * knows it; a read in flight when it went is retried there. */
static void test_leader_failover(void **state)
{
    (void)state;
    struct env *e = env_new(3);
    struct fake *old = &e->f[0], *fol = &e->f[1], *nl = &e->f[2];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            fake_add_member(&e->f[i], &e->f[j]);
    fake_set_leader(old, old);
    fake_set_leader(fol, nl);
    fake_set_leader(nl, nl);
    fol->not_leader = true;
    snprintf(fol->redirect, sizeof(fol->redirect), "%s", nl->addr);
    char eps[200];
    snprintf(eps, sizeof(eps), "%s,%s", old->addr, fol->addr);
    env_client(e, eps, NULL, 5000);
    struct result r;
    do_put(e, "a", "1", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.member, old->member_id);

    /* A read the old leader will never answer, then the old leader dies. */
    old->silent = true;
    Keel__Request req;
    Keel__RangeRequest rr;
    range_req(&req, &rr, "a", false);
    struct result rd = {0};
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &rd), 0);
    for (int i = 0; i < 20 && old->ranges == 0; i++)
        uv_run(&e->loop, UV_RUN_NOWAIT);
    assert_int_equal(old->ranges, 1);
    fake_stop(old);
    assert_true(run_until(&e->loop, &rd.called, LOOP_BOUND_MS));
    assert_int_equal(rd.status, 0);
    assert_int_equal(rd.member, nl->member_id);

    do_put(e, "b", "2", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.member, nl->member_id);
    env_free(e);
}

static void test_close_cancels(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    struct fake *f = &e->f[0];
    f->leader_id = f->member_id;
    f->silent = true;
    env_client(e, f->addr, NULL, 0);
    struct result r[10];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 10; i++) {
        Keel__Request req;
        Keel__PutRequest put;
        put_req(&req, &put, "k", "v");
        assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &r[i]), 0);
    }
    for (int i = 0; i < 50 && f->puts < 10; i++)
        uv_run(&e->loop, UV_RUN_NOWAIT);
    keel_aclient_close(e->ac, on_closed, &e->closed);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, KEEL_ECANCELED);
    }
    /* After close began, nothing is accepted. */
    Keel__Request req;
    Keel__PutRequest put;
    put_req(&req, &put, "k", "v");
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &r[0]), KEEL_ECLOSED);
    assert_true(run_until(&e->loop, &e->closed, LOOP_BOUND_MS));
    e->ac = NULL;
    env_free(e);
}

/* Closing from inside a response callback is allowed. */
static void on_result_close(int status, const Keel__Response *resp, void *data)
{
    struct env *e = data;
    (void)status;
    (void)resp;
    keel_aclient_close(e->ac, on_closed, &e->closed);
}

static void test_close_from_callback(void **state)
{
    (void)state;
    struct env *e = env_new(1);
    e->f[0].leader_id = e->f[0].member_id;
    env_client(e, e->f[0].addr, NULL, 0);
    Keel__Request req;
    Keel__PutRequest put;
    put_req(&req, &put, "k", "v");
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result_close, e), 0);
    struct result other = {0};
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &other), 0);
    assert_true(run_until(&e->loop, &e->closed, LOOP_BOUND_MS));
    assert_int_equal(other.calls, 1);
    e->ac = NULL;
    env_free(e);
}

static void test_submit_errors(void **state)
{
    (void)state;
    struct env *e = env_new(0);
    env_client(e, "127.0.0.1:1", NULL, 0);
    struct result r = {0};
    Keel__Request req = KEEL__REQUEST__INIT;
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &r), KEEL_EINVAL);
    Keel__WatchCreateRequest wc = KEEL__WATCH_CREATE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &wc;
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &r), KEEL_EUNSUPPORTED);
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = NULL;
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &r), KEEL_EINVAL);
    /* Over the frame limit. */
    static uint8_t big[KEEL_FRAME_DEFAULT_MAX + 16];
    Keel__PutRequest put;
    put_req(&req, &put, "k", "");
    put.value.data = big;
    put.value.len = sizeof(big);
    assert_int_equal(keel_aclient_request(e->ac, &req, 0, on_result, &r), KEEL_ETOOLARGE);
    struct keel_call_opts co = {.endpoint = "not-an-address"};
    put.value.len = 1;
    assert_int_equal(keel_aclient_request_ex(e->ac, &req, &co, on_result, &r), KEEL_EINVAL);
    assert_false(r.called);
    /* Bad options. */
    struct keel_aclient *ac2;
    struct keel_options o = {.endpoints = "127.0.0.1"};
    assert_int_equal(keel_aclient_init(&ac2, &e->loop, &o), KEEL_EINVAL);
    o.endpoints = "127.0.0.1:2379,,http://127.0.0.1:2380/";
    o.source_address = "nope";
    assert_int_equal(keel_aclient_init(&ac2, &e->loop, &o), KEEL_EINVAL);
    o.source_address = "127.0.0.1";
    assert_int_equal(keel_aclient_init(&ac2, &e->loop, &o), 0);
    bool closed = false;
    keel_aclient_close(ac2, on_closed, &closed);
    assert_true(run_until(&e->loop, &closed, LOOP_BOUND_MS));
    env_free(e);
}

/* Requests pinned to an endpoint go there and nowhere else. */
static void test_pinned_status(void **state)
{
    (void)state;
    struct env *e = env_new(2);
    char eps[160];
    snprintf(eps, sizeof(eps), "%s,%s", e->f[0].addr, e->f[1].addr);
    env_client(e, eps, NULL, 0);
    for (int i = 1; i >= 0; i--) {
        Keel__StatusRequest st = KEEL__STATUS_REQUEST__INIT;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_STATUS;
        req.status = &st;
        struct keel_call_opts co = {.endpoint = e->f[i].addr};
        struct result r = {0};
        assert_int_equal(keel_aclient_request_ex(e->ac, &req, &co, on_result, &r), 0);
        assert_true(run_until(&e->loop, &r.called, LOOP_BOUND_MS));
        assert_int_equal(r.status, 0);
        assert_int_equal(r.member, e->f[i].member_id);
    }
    /* A pinned request to a dead member fails at once, with the dial error. */
    char dead[64];
    dead_addr(dead, sizeof(dead));
    Keel__StatusRequest st = KEEL__STATUS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &st;
    struct keel_call_opts co = {.endpoint = dead};
    struct result r = {0};
    assert_int_equal(keel_aclient_request_ex(e->ac, &req, &co, on_result, &r), 0);
    assert_true(run_until(&e->loop, &r.called, LOOP_BOUND_MS));
    assert_int_equal(r.status, KEEL_EUNAVAILABLE);
    assert_non_null(strstr(r.msg, "connection refused"));
    env_free(e);
}

static void test_idempotency_rules(void **state)
{
    (void)state;
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__RangeRequest r = KEEL__RANGE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &r;
    assert_true(keel_request_is_idempotent(&req));
    Keel__PutRequest p = KEEL__PUT_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &p;
    assert_false(keel_request_is_idempotent(&req));
    Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
    Keel__RequestOp op = KEEL__REQUEST_OP__INIT, *ops[1] = {&op};
    op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op.request_range = &r;
    t.success = ops;
    t.n_success = 1;
    req.body_case = KEEL__REQUEST__BODY_TXN;
    req.txn = &t;
    assert_true(keel_request_is_idempotent(&req));
    op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &p;
    assert_false(keel_request_is_idempotent(&req));
    Keel__LeaseTimeToLiveRequest ttl = KEEL__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE;
    req.lease_time_to_live = &ttl;
    assert_true(keel_request_is_idempotent(&req));
    Keel__CompactionRequest c = KEEL__COMPACTION_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_COMPACTION;
    req.compaction = &c;
    assert_false(keel_request_is_idempotent(&req));

    uint8_t out[8];
    assert_int_equal(keel_prefix_end("abc", 3, out), 3);
    assert_memory_equal(out, "abd", 3);
    assert_int_equal(keel_prefix_end("a\xff\xff", 3, out), 1);
    assert_int_equal(out[0], 'b');
    assert_int_equal(keel_prefix_end("\xff", 1, out), 1);
    assert_int_equal(out[0], 0);
    assert_int_equal(keel_prefix_end("", 0, out), 1);
    assert_int_equal(out[0], 0);
}

/* ---------------------------------------------------------------------------------------------
 * Fakes on a thread, for the synchronous API and keelctl
 */

struct bg {
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t stop;
    struct fake f[3];
    int nf;
};

static void bg_stop_cb(uv_async_t *a)
{
    struct bg *b = a->data;
    for (int i = 0; i < b->nf; i++)
        fake_stop(&b->f[i]);
    uv_close((uv_handle_t *)a, NULL);
}

static void bg_thread(void *arg)
{
    struct bg *b = arg;
    uv_run(&b->loop, UV_RUN_DEFAULT);
}

static struct bg *bg_new(int n)
{
    struct bg *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    assert_int_equal(uv_loop_init(&b->loop), 0);
    b->nf = n;
    for (int i = 0; i < n; i++)
        fake_start(&b->f[i], &b->loop, 0x200 + (uint64_t)i, i == 0 ? "a" : "b");
    uv_async_init(&b->loop, &b->stop, bg_stop_cb);
    b->stop.data = b;
    return b;
}

static void bg_go(struct bg *b)
{
    assert_int_equal(uv_thread_create(&b->thread, bg_thread, b), 0);
}

static void bg_free(struct bg *b)
{
    uv_async_send(&b->stop);
    uv_thread_join(&b->thread);
    for (int i = 0; i < 1000 && uv_loop_alive(&b->loop); i++)
        uv_run(&b->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&b->loop), 0);
    free(b);
}

static void test_sync_kv(void **state)
{
    (void)state;
    struct bg *b = bg_new(1);
    b->f[0].leader_id = b->f[0].member_id;
    b->f[0].compacted = 3;
    bg_go(b);
    struct keel *k;
    struct keel_options o = {.endpoints = b->f[0].addr, .request_timeout_ms = 3000};
    assert_int_equal(keel_open(&k, &o), 0);
    Keel__PutResponse *pr;
    assert_int_equal(keel_put(k, "foo", 3, "bar", 3, NULL, NULL), 0);
    struct keel_put_opts po = {.prev_kv = true};
    assert_int_equal(keel_put(k, "foo", 3, "baz", 3, &po, &pr), 0);
    assert_non_null(pr->prev_kv);
    assert_memory_equal(pr->prev_kv->value.data, "bar", 3);
    keel_free(pr);
    assert_int_equal(keel_put(k, "fop", 3, "x", 1, NULL, NULL), 0);
    Keel__RangeResponse *rr;
    assert_int_equal(keel_get(k, "foo", 3, NULL, &rr), 0);
    assert_int_equal(rr->n_kvs, 1);
    assert_memory_equal(rr->kvs[0]->value.data, "baz", 3);
    keel_free(rr);
    uint8_t end[8];
    struct keel_get_opts go = {.range_end = end, .serializable = true};
    go.range_end_len = keel_prefix_end("fo", 2, end);
    assert_int_equal(keel_get(k, "fo", 2, &go, &rr), 0);
    assert_int_equal(rr->count, 2);
    keel_free(rr);
    /* A server error: code and message. */
    struct keel_get_opts old = {.revision = 1};
    assert_int_equal(keel_get(k, "foo", 3, &old, &rr), KEEL_ECOMPACTED);
    assert_null(rr);
    assert_string_equal(keel_errmsg(), "required revision has been compacted");
    Keel__DeleteRangeResponse *dr;
    struct keel_delete_opts dopts = {.range_end = "\0", .range_end_len = 1};
    assert_int_equal(keel_delete(k, "a", 1, &dopts, &dr), 0);
    assert_int_equal(dr->deleted, 2);
    keel_free(dr);
    Keel__StatusResponse *sr;
    assert_int_equal(keel_status(k, b->f[0].addr, &sr), 0);
    assert_string_equal(sr->version, "0.1.0-fake");
    keel_free(sr);
    Keel__MemberListResponse *ml;
    assert_int_equal(keel_member_list(k, &ml), 0);
    keel_free(ml);
    assert_int_equal(keel_compact(k, 2), 0);
    Keel__Response *resp;
    Keel__Request req;
    Keel__PutRequest put;
    put_req(&req, &put, "h", "1");
    assert_int_equal(keel_do(k, &req, &resp), 0);
    assert_non_null(resp->header);
    assert_int_equal(resp->header->member_id, b->f[0].member_id);
    keel_free(resp);
    keel_close(k);
    bg_free(b);
}

struct sync_worker {
    struct keel *k;
    int id;
    int ok;
};

static void sync_worker_main(void *arg)
{
    struct sync_worker *w = arg;
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof(key), "w%d-%d", w->id, i % 50);
        if (keel_put(w->k, key, strlen(key), "v", 1, NULL, NULL) == 0)
            w->ok++;
    }
}

static void test_sync_threads(void **state)
{
    (void)state;
    struct bg *b = bg_new(1);
    b->f[0].leader_id = b->f[0].member_id;
    bg_go(b);
    struct keel *k;
    struct keel_options o = {.endpoints = b->f[0].addr};
    assert_int_equal(keel_open(&k, &o), 0);
    struct sync_worker w[4];
    uv_thread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct sync_worker){k, i, 0};
        assert_int_equal(uv_thread_create(&t[i], sync_worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        uv_thread_join(&t[i]);
        assert_int_equal(w[i].ok, 200);
    }
    keel_close(k);
    bg_free(b);
    /* The server counters are read after its thread stopped. */
}

static void test_sync_unreachable(void **state)
{
    (void)state;
    char dead[64];
    dead_addr(dead, sizeof(dead));
    struct keel *k;
    struct keel_options o = {.endpoints = dead};
    assert_int_equal(keel_open(&k, &o), 0);
    assert_int_equal(keel_put(k, "a", 1, "b", 1, NULL, NULL), KEEL_EUNAVAILABLE);
    assert_non_null(strstr(keel_errmsg(), "connection refused"));
    keel_close(k);
    assert_int_equal(keel_open(&k, &(struct keel_options){.endpoints = "bogus"}), KEEL_EINVAL);
}

/* ---------------------------------------------------------------------------------------------
 * keelctl end to end
 */

#ifndef KEELCTL_PATH
#define KEELCTL_PATH "keelctl"
#endif

/* Run keelctl with args (and stdin text); capture stdout and stderr. Returns the exit status. */
static int ctl(const char *in, char *out, size_t outlen, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = KEELCTL_PATH;
    va_list ap;
    va_start(ap, errlen);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char tin[] = "/tmp/keelctl-in-XXXXXX", tout[] = "/tmp/keelctl-out-XXXXXX",
         terr[] = "/tmp/keelctl-err-XXXXXX";
    int fin = mkstemp(tin), fout = mkstemp(tout), ferr = mkstemp(terr);
    assert_true(fin >= 0 && fout >= 0 && ferr >= 0);
    if (in)
        assert_int_equal(write(fin, in, strlen(in)), (ssize_t)strlen(in));
    lseek(fin, 0, SEEK_SET);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fin, 0);
        dup2(fout, 1);
        dup2(ferr, 2);
        unsetenv("KEEL_ENDPOINTS");
        execv(KEELCTL_PATH, argv);
        _exit(127);
    }
    int st;
    /* Bounded: keelctl's own timeouts are a few seconds at most here. */
    for (int i = 0; i < 3000; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            break;
        usleep(10000);
        if (i == 2999) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
    }
    ssize_t n = pread(fout, out, outlen - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    n = pread(ferr, err, errlen - 1, 0);
    err[n > 0 ? n : 0] = '\0';
    close(fin);
    close(fout);
    close(ferr);
    unlink(tin);
    unlink(tout);
    unlink(terr);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* strstr with a readable failure. */
#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        if (strstr((hay), (needle)) == NULL) {                                                     \
            print_error("\"%s\"\nlacks\n\"%s\"\n", (hay), (needle));                               \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

static void test_keelctl(void **state)
{
    (void)state;
    struct bg *b = bg_new(2);
    struct fake *l = &b->f[0], *f = &b->f[1];
    for (int i = 0; i < 2; i++) {
        fake_set_leader(&b->f[i], l);
        fake_add_member(&b->f[i], l);
        fake_add_member(&b->f[i], f);
    }
    f->not_leader = true;
    snprintf(f->redirect, sizeof(f->redirect), "%s", l->addr);
    bg_go(b);
    char eps[200], out[8192], err[4096];
    snprintf(eps, sizeof(eps), "%s,%s", f->addr, l->addr);
#define CTL(in, ...)                                                                               \
    ctl(in, out, sizeof(out), err, sizeof(err), "--endpoints", eps, __VA_ARGS__, NULL)

    assert_int_equal(CTL(NULL, "put", "foo", "bar"), 0);
    assert_string_equal(out, "OK\n");
    assert_int_equal(CTL(NULL, "put", "fop", "baz", "--prev-kv"), 0);
    assert_string_equal(out, "OK\n");
    assert_int_equal(CTL(NULL, "put", "foo", "bar2", "--prev-kv"), 0);
    assert_string_equal(out, "OK\nfoo\nbar\n");
    assert_int_equal(CTL("from stdin", "put", "in"), 0);
    assert_int_equal(CTL(NULL, "get", "in", "--print-value-only"), 0);
    assert_string_equal(out, "from stdin\n");
    assert_int_equal(CTL(NULL, "get", "fo", "--prefix"), 0);
    assert_string_equal(out, "foo\nbar2\nfop\nbaz\n");
    assert_int_equal(CTL(NULL, "get", "fo", "--prefix", "--keys-only"), 0);
    assert_string_equal(out, "foo\n\nfop\n\n");
    assert_int_equal(CTL(NULL, "get", "fo", "--prefix", "--count-only"), 0);
    assert_string_equal(out, "2\n");
    assert_int_equal(CTL(NULL, "get", "foo", "fop"), 0);
    assert_string_equal(out, "foo\nbar2\n");
    /* Serializable: whichever member answers first (here the follower, with no data of its own
     * in the fake). */
    assert_int_equal(CTL(NULL, "-w", "json", "get", "foo", "--consistency", "s"), 0);
    assert_contains(out, "\"member_id\":513");
    assert_int_equal(CTL(NULL, "-w", "json", "get", "foo"), 0);
    assert_contains(out, "\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":1,"
                         "\"mod_revision\":3,\"version\":2,\"value\":\"YmFyMg==\"}]");
    assert_contains(out, "\"count\":1");
    assert_contains(out, "\"header\":{\"cluster_id\":193,");

    /* txn from stdin, etcdctl's format. */
    const char *txn = "value(\"foo\") = \"bar2\"\n"
                      "\n"
                      "put foo \"new value\"\n"
                      "get fop\n"
                      "\n"
                      "put foo never\n"
                      "\n";
    assert_int_equal(CTL(txn, "txn"), 0);
    assert_string_equal(out, "SUCCESS\n\nOK\n\nfop\nbaz\n");
    assert_int_equal(CTL(NULL, "txn", "--compare", "version(\"foo\") = \"9\"", "--then", "del foo",
                         "--else", "get foo"),
                     0);
    assert_string_equal(out, "FAILURE\n\nfoo\nnew value\n");

    assert_int_equal(CTL(NULL, "del", "fo", "--prefix", "--prev-kv"), 0);
    assert_string_equal(out, "2\nfoo\nnew value\nfop\nbaz\n");
    assert_int_equal(CTL(NULL, "compaction", "3"), 0);
    assert_string_equal(out, "compacted revision 3\n");
    /* A server error: its message, exit status 1. */
    assert_int_equal(CTL(NULL, "get", "in", "--rev", "2"), 1);
    assert_string_equal(err, "Error: required revision has been compacted\n");

    char line[256];
    assert_int_equal(CTL(NULL, "member", "list"), 0);
    snprintf(line, sizeof(line), "200, started, m512, 127.0.0.1:2380, %s, false, a\n", l->addr);
    assert_contains(out, line);
    assert_int_equal(CTL(NULL, "member", "list", "-w", "table"), 0);
    /* tablewriter's centring puts the odd space on the right. */
    assert_contains(out, "+-----+---------+------+----------------+");
    assert_contains(out, "| ID  | STATUS  | NAME |   PEER ADDRS   |");
    assert_contains(out, "| 200 | started | m512 | 127.0.0.1:2380 |");
    assert_int_equal(CTL(NULL, "member", "list", "-w", "json"), 0);
    assert_contains(out, "\"members\":[{\"ID\":512,\"name\":\"m512\"");

    assert_int_equal(CTL(NULL, "endpoint", "status"), 0);
    snprintf(line, sizeof(line), "%s, 200, 0.1.0-fake, 25 kB, true, false, 2, 42, 41, , a\n",
             l->addr);
    assert_contains(out, line);
    assert_int_equal(CTL(NULL, "endpoint", "status", "-w", "table"), 0);
    assert_contains(out, "|    ENDPOINT     | ID  |  VERSION   | DB SIZE | IS LEADER |");
    assert_contains(out, "| RAFT APPLIED INDEX |");
    assert_int_equal(CTL(NULL, "endpoint", "health"), 0);
    snprintf(line, sizeof(line),
             "%s is healthy: successfully committed proposal: took = ", l->addr);
    assert_contains(out, line);

    /* Usage errors: exit 2 with a message. */
    assert_int_equal(CTL(NULL, "get"), 2);
    assert_contains(err, "Error: get command needs one argument");
    assert_int_equal(CTL(NULL, "get", "a", "--bogus"), 2);
    assert_contains(err, "unknown flag: --bogus");
    assert_int_equal(CTL(NULL, "frobnicate"), 2);
    assert_int_equal(CTL(NULL, "put", "a", "b", "-w", "xml"), 2);
    assert_int_equal(CTL("bad compare\n\n\n", "txn"), 2);
    assert_contains(err, "malformed comparison");

    /* An unreachable endpoint. */
    char dead[64];
    dead_addr(dead, sizeof(dead));
    assert_int_equal(ctl(NULL, out, sizeof(out), err, sizeof(err), "--endpoints", dead, "endpoint",
                         "health", NULL),
                     1);
    assert_contains(err, "is unhealthy: failed to commit proposal");
    assert_contains(err, "Error: unhealthy cluster");
    assert_int_equal(
        ctl(NULL, out, sizeof(out), err, sizeof(err), "--endpoints", dead, "put", "a", "b", NULL),
        1);
    assert_contains(err, "connection refused");
#undef CTL
    bg_free(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest async_tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_pipeline_out_of_order),
        cmocka_unit_test(test_hello_names_leader),
        cmocka_unit_test(test_not_leader_redirect),
        cmocka_unit_test(test_not_leader_exhausts_retries),
        cmocka_unit_test(test_cut_off_member_avoided),
        cmocka_unit_test(test_unavailable_retried),
        cmocka_unit_test(test_outcome_unknown_not_retried),
        cmocka_unit_test(test_drop_after_write_is_unknown),
        cmocka_unit_test(test_drop_after_read_is_retried),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_dead_endpoint_skipped),
        cmocka_unit_test(test_all_dead_fails_fast),
        cmocka_unit_test(test_handshake_refused),
        cmocka_unit_test(test_zone_routing),
        cmocka_unit_test(test_leader_failover),
        cmocka_unit_test(test_close_cancels),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_submit_errors),
        cmocka_unit_test(test_pinned_status),
        cmocka_unit_test(test_idempotency_rules),
    };
    const struct CMUnitTest sync_tests[] = {
        cmocka_unit_test(test_sync_kv),
        cmocka_unit_test(test_sync_threads),
        cmocka_unit_test(test_sync_unreachable),
    };
    const struct CMUnitTest ctl_tests[] = {
        cmocka_unit_test(test_keelctl),
    };
    signal(SIGPIPE, SIG_IGN);
    const char *g = argc > 1 ? argv[1] : NULL;
    int fails = 0;
    if (!g || !strcmp(g, "async"))
        fails += cmocka_run_group_tests_name("client_async", async_tests, NULL, NULL);
    if (!g || !strcmp(g, "sync"))
        fails += cmocka_run_group_tests_name("client_sync", sync_tests, NULL, NULL);
    if (!g || !strcmp(g, "keelctl"))
        fails += cmocka_run_group_tests_name("client_keelctl", ctl_tests, NULL, NULL);
    return fails ? 1 : 0;
}
