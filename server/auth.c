/*
 * Auth at intake (see auth.h): the cached tables, the checks, the thread-pool jobs.
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "authcrypto.h"
#include "authperm.h"
#include "err.h"
#include "reqkind.h"

#define ROOT          "root"
#define MAX_PASSWORD  1024 /* bytes: PBKDF2's cost hardly depends on it, memory does */
#define MAX_TXN_DEPTH 64   /* validation allows 8: deeper ones are refused here first */

static const char *const E_INVALID_TOKEN = "etcdserver: invalid auth token";
static const char *const E_NO_USER = "etcdserver: user name is empty";
static const char *const E_DENIED = "etcdserver: permission denied";
static const char *const E_FAILED =
    "etcdserver: authentication failed, invalid user ID or password";

/* A user of the cache, its permission sets made on first use. */
struct cuser {
    Keel__AuthUser *u;
    bool root;
    bool built;
    struct keel_permset read, write;
};

/* The auth tables as of one auth revision, all in one arena. */
struct cache {
    struct keel_arena arena;
    bool loaded;
    bool enabled;
    uint64_t revision;
    ProtobufCBinaryData key;
    struct cuser *users; /* in name order */
    size_t n_users;
    Keel__AuthRole **roles; /* in name order */
    size_t n_roles;
};

/* Tokens whose signature was checked, so that a client's every request costs a compare, not an
 * HMAC (about 2 us, twice for a linearizable read). Direct-mapped by the token's last bytes (its
 * MAC's: random), TOKEN_SLOTS x ~0.5 KiB whatever clients send; emptied whenever the auth tables
 * are read again, so the key a token was checked with is the one in use. Only a token whose
 * signature verified enters; its expiry is still compared on every use. */
#define TOKEN_SLOTS 64
struct token_slot {
    size_t len; /* 0: empty */
    char token[KEEL_AUTH_TOKEN_MAX];
    char name[KEEL_AUTH_NAME_MAX + 1];
    uint64_t rev, exp;
};

struct keel_auth {
    struct keel_auth_options o;
    struct cache c;
    struct token_slot tokens[TOKEN_SLOTS];
    struct keel_arena tmp;  /* per check: a lease's keys, answers */
    size_t jobs;            /* queued and running: at most KEEL_AUTH_MAX_JOBS */
    size_t running;         /* on the pool: at most KEEL_AUTH_POOL_JOBS */
    struct job *queue_head; /* the others, in arrival order */
    struct job *queue_tail;
    bool stopped;
};

enum job_kind { JOB_AUTHENTICATE, JOB_HASH };

/* A password on the thread pool. The worker touches only the job and its request. */
struct job {
    uv_work_t w;
    struct job *queue_next;
    struct keel_auth *a;
    enum job_kind kind;
    uint64_t session;
    Keel__Request *req;
    keel_auth_next next;
    void *ctx;
    char *stored;        /* JOB_AUTHENTICATE: the user's hash at intake (NULL: no such user) */
    uint64_t user_rev;   /* ... and its revision */
    uint64_t intake_rev; /* the auth revision the intake check ran against */
    bool ok;             /* JOB_AUTHENTICATE: the password matched */
    int err;             /* JOB_HASH: 0 or why hashing failed */
    char hash[KEEL_AUTH_HASH_MAX];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- the cache ---- */

static int refresh(struct keel_auth *a)
{
    uint64_t rev;
    bool enabled;
    keel_store_auth_revision(a->o.store, &rev, &enabled);
    if (a->c.loaded && rev == a->c.revision && enabled == a->c.enabled)
        return 0;
    struct cache n = {0};
    keel_arena_init(&n.arena, 0);
    struct keel_store_auth st;
    int err = keel_store_auth_read(a->o.store, &n.arena, &st);
    if (err == 0 &&
        (n.users = keel_arena_alloc(&n.arena, (st.n_users + 1) * sizeof(*n.users))) == NULL)
        err = KEEL_ENOMEM;
    if (err != 0) {
        keel_arena_close(&n.arena);
        return err;
    }
    n.loaded = true;
    n.enabled = st.enabled;
    n.revision = st.revision;
    n.key = st.key;
    n.roles = st.roles;
    n.n_roles = st.n_roles;
    n.n_users = st.n_users;
    for (size_t i = 0; i < st.n_users; i++)
        n.users[i] = (struct cuser){.u = st.users[i]};
    keel_arena_close(&a->c.arena);
    a->c = n;
    for (size_t i = 0; i < TOKEN_SLOTS; i++)
        a->tokens[i].len = 0;
    return 0;
}

static struct cuser *find_user(struct keel_auth *a, const char *name)
{
    size_t lo = 0, hi = a->c.n_users;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(a->c.users[mid].u->name, name);
        if (c == 0)
            return &a->c.users[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static Keel__AuthRole *find_role(struct keel_auth *a, const char *name)
{
    size_t lo = 0, hi = a->c.n_roles;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(a->c.roles[mid]->name, name);
        if (c == 0)
            return a->c.roles[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bool has_role(const Keel__AuthUser *u, const char *role)
{
    for (size_t i = 0; i < u->n_roles; i++)
        if (strcmp(u->roles[i], role) == 0)
            return true;
    return false;
}

/* The user's permission sets, from every role it holds. 0 or KEEL_ENOMEM. */
static int build_user(struct keel_auth *a, struct cuser *cu)
{
    if (cu->built)
        return 0;
    cu->root = has_role(cu->u, ROOT);
    size_t n = 0;
    for (size_t i = 0; i < cu->u->n_roles; i++) {
        const Keel__AuthRole *r = find_role(a, cu->u->roles[i]);
        n += r != NULL ? r->n_perms : 0;
    }
    Keel__Permission **all = keel_arena_alloc(&a->c.arena, (n ? n : 1) * sizeof(*all));
    if (all == NULL)
        return KEEL_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < cu->u->n_roles; i++) {
        const Keel__AuthRole *r = find_role(a, cu->u->roles[i]);
        for (size_t j = 0; r != NULL && j < r->n_perms; j++)
            all[k++] = r->perms[j];
    }
    int err = keel_permset_build(all, k, KEEL__PERMISSION__TYPE__READ, &a->c.arena, &cu->read);
    if (err == 0)
        err = keel_permset_build(all, k, KEEL__PERMISSION__TYPE__WRITE, &a->c.arena, &cu->write);
    cu->built = err == 0;
    return err;
}

/* ---- who sent it ---- */

/* The user req speaks for: by its token, else by its connection's certificate. */
static int who(struct keel_auth *a, uint64_t session, const Keel__Request *req, struct cuser **out,
               const char **msg)
{
    *msg = E_INVALID_TOKEN;
    if (req->token == NULL || req->token[0] == '\0') {
        const char *cn = a->o.peer_cn != NULL ? a->o.peer_cn(a->o.peer_ctx, session) : NULL;
        if (cn == NULL) {
            *msg = E_NO_USER;
            return KEEL_EUNAUTHENTICATED;
        }
        *out = find_user(a, cn);
        return *out != NULL ? 0 : KEEL_EUNAUTHENTICATED;
    }
    size_t len = strlen(req->token);
    if (len >= KEEL_AUTH_TOKEN_MAX)
        return KEEL_EUNAUTHENTICATED;
    unsigned h = 0;
    for (size_t i = len > 8 ? len - 8 : 0; i < len; i++)
        h = h * 31 + (unsigned char)req->token[i];
    struct token_slot *t = &a->tokens[h % TOKEN_SLOTS];
    if (t->len != len || memcmp(t->token, req->token, len) != 0) {
        t->len = 0;
        if (keel_auth_token_parse(a->c.key.data, a->c.key.len, req->token, t->name, &t->rev,
                                  &t->exp) != 0)
            return KEEL_EUNAUTHENTICATED;
        memcpy(t->token, req->token, len);
        t->len = len;
    }
    if (t->exp <= now_ms())
        return KEEL_EUNAUTHENTICATED;
    /* A user deleted, or whose password changed, since the token was issued: not valid. */
    struct cuser *cu = find_user(a, t->name);
    if (cu == NULL || cu->u->revision > t->rev)
        return KEEL_EUNAUTHENTICATED;
    *out = cu;
    return 0;
}

/* ---- what they may do ---- */

static int need(const struct cuser *cu, bool write, const ProtobufCBinaryData *key,
                const ProtobufCBinaryData *end)
{
    if (cu->root)
        return 0;
    return keel_permset_allows(write ? &cu->write : &cu->read, key, end) ? 0 : KEEL_EPERMDENIED;
}

static int check_txn(const struct cuser *cu, const Keel__TxnRequest *t, int depth);

static int check_ops(const struct cuser *cu, Keel__RequestOp *const *ops, size_t n, int depth)
{
    static const ProtobufCBinaryData none = {0, NULL};
    int err = 0;
    for (size_t i = 0; err == 0 && i < n; i++) {
        const Keel__RequestOp *op = ops[i];
        switch (op->request_case) {
        case KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE:
            err = need(cu, false, &op->request_range->key, &op->request_range->range_end);
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_PUT:
            err = need(cu, true, &op->request_put->key, &none);
            if (err == 0 && op->request_put->prev_kv)
                err = need(cu, false, &op->request_put->key, &none);
            break;
        case KEEL__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE: {
            const Keel__DeleteRangeRequest *d = op->request_delete_range;
            err = need(cu, true, &d->key, &d->range_end);
            if (err == 0 && d->prev_kv)
                err = need(cu, false, &d->key, &d->range_end);
            break;
        }
        case KEEL__REQUEST_OP__REQUEST_REQUEST_TXN:
            err = check_txn(cu, op->request_txn, depth + 1);
            break;
        default:
            break; /* validation refuses an empty op */
        }
    }
    return err;
}

/* Every compare READ on its range, every op at every level (etcd's checkTxnAuth). */
static int check_txn(const struct cuser *cu, const Keel__TxnRequest *t, int depth)
{
    if (t == NULL)
        return 0;
    if (depth > MAX_TXN_DEPTH)
        return KEEL_EPERMDENIED;
    for (size_t i = 0; i < t->n_compare; i++) {
        int err = need(cu, false, &t->compare[i]->key, &t->compare[i]->range_end);
        if (err != 0)
            return err;
    }
    int err = check_ops(cu, t->success, t->n_success, depth);
    return err != 0 ? err : check_ops(cu, t->failure, t->n_failure, depth);
}

/* A lease revoke deletes its keys: WRITE on every one. */
static int check_revoke(struct keel_auth *a, const struct cuser *cu, int64_t id)
{
    if (cu->root)
        return 0;
    static const ProtobufCBinaryData none = {0, NULL};
    struct keel_lease_info info;
    ProtobufCBinaryData *keys = NULL;
    size_t n = 0;
    keel_arena_reset(&a->tmp);
    int err = keel_store_lease_get(a->o.store, id, &a->tmp, &info, &keys, &n);
    if (err == KEEL_ELEASENOTFOUND)
        return 0; /* applying it says so */
    for (size_t i = 0; err == 0 && i < n; i++)
        err = need(cu, true, &keys[i], &none);
    keel_arena_reset(&a->tmp);
    return err;
}

/* Requests asked of nobody: etcd answers them without a user too. */
static bool open_to_all(Keel__Request__BodyCase body)
{
    return body == KEEL__REQUEST__BODY_AUTHENTICATE || body == KEEL__REQUEST__BODY_STATUS ||
           body == KEEL__REQUEST__BODY_MEMBER_LIST;
}

/* Whether cu may send req (auth enabled). */
static int permitted(struct keel_auth *a, const struct cuser *cu, const Keel__Request *req)
{
    static const ProtobufCBinaryData none = {0, NULL};
    int err;
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_RANGE:
        return need(cu, false, &req->range->key, &req->range->range_end);
    case KEEL__REQUEST__BODY_PUT:
        err = need(cu, true, &req->put->key, &none);
        if (err == 0 && req->put->prev_kv)
            err = need(cu, false, &req->put->key, &none);
        return err;
    case KEEL__REQUEST__BODY_DELETE_RANGE:
        err = need(cu, true, &req->delete_range->key, &req->delete_range->range_end);
        if (err == 0 && req->delete_range->prev_kv)
            err = need(cu, false, &req->delete_range->key, &req->delete_range->range_end);
        return err;
    case KEEL__REQUEST__BODY_TXN:
        return check_txn(cu, req->txn, 0);
    case KEEL__REQUEST__BODY_WATCH_CREATE:
        return need(cu, false, &req->watch_create->key, &req->watch_create->range_end);
    case KEEL__REQUEST__BODY_LEASE_REVOKE:
        return check_revoke(a, cu, req->lease_revoke->id);
    case KEEL__REQUEST__BODY_WATCH_CANCEL:
    case KEEL__REQUEST__BODY_WATCH_PROGRESS:
    case KEEL__REQUEST__BODY_LEASE_GRANT:
    case KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE:
    case KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE:
    case KEEL__REQUEST__BODY_LEASE_LEASES:
    case KEEL__REQUEST__BODY_AUTH_STATUS:
        return 0; /* any user */
    case KEEL__REQUEST__BODY_USER_GET:
        /* A user may look at itself (etcd's UserGet) ... */
        if (cu->root || strcmp(req->user_get->name, cu->u->name) == 0)
            return 0;
        return KEEL_EPERMDENIED;
    case KEEL__REQUEST__BODY_ROLE_GET:
        /* ... and at the roles it holds. */
        if (cu->root || has_role(cu->u, req->role_get->role))
            return 0;
        return KEEL_EPERMDENIED;
    default:
        /* Compaction, members, snapshot, defragment, alarms, move-leader, every auth change:
         * root only. */
        return cu->root ? 0 : KEEL_EPERMDENIED;
    }
}

int keel_auth_check(struct keel_auth *a, uint64_t session, const Keel__Request *req,
                    const char **msg)
{
    *msg = NULL;
    int err = refresh(a);
    if (err != 0)
        return err;
    if (!a->c.enabled || open_to_all(req->body_case))
        return 0;
    struct cuser *cu = NULL;
    if ((err = who(a, session, req, &cu, msg)) != 0)
        return err;
    if ((err = build_user(a, cu)) != 0)
        return err;
    /* A request without its body is refused as such further on. */
    if (req->body_case != KEEL__REQUEST__BODY__NOT_SET && req->range != NULL &&
        (err = permitted(a, cu, req)) != 0) {
        *msg = err == KEEL_EPERMDENIED ? E_DENIED : NULL;
        return err;
    }
    return 0;
}

/* ---- answers ---- */

static void refuse(struct keel_auth *a, uint64_t session, Keel__Request *req, int err,
                   const char *msg)
{
    keel_reply_error(a->o.reply, session, req->id, err, msg);
    keel__request__free_unpacked(req, NULL);
}

static void answer(struct keel_auth *a, uint64_t session, Keel__Request *req, Keel__Response *resp)
{
    resp->id = req->id;
    keel_reply_send(a->o.reply, session, resp, -1, KEEL_RESPOND_ANSWER);
    keel__request__free_unpacked(req, NULL);
}

static void serve_read(struct keel_auth *a, uint64_t session, Keel__Request *req)
{
    Keel__Response resp = KEEL__RESPONSE__INIT;
    keel_arena_reset(&a->tmp);
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_USER_LIST: {
        Keel__UserListResponse *r = keel_arena_alloc(&a->tmp, sizeof(*r));
        char **names = keel_arena_alloc(&a->tmp, (a->c.n_users + 1) * sizeof(*names));
        if (r == NULL || names == NULL)
            return refuse(a, session, req, KEEL_ENOMEM, NULL);
        keel__user_list_response__init(r);
        for (size_t i = 0; i < a->c.n_users; i++)
            names[i] = a->c.users[i].u->name;
        r->users = names;
        r->n_users = a->c.n_users;
        resp.body_case = KEEL__RESPONSE__BODY_USER_LIST;
        resp.user_list = r;
        break;
    }
    case KEEL__REQUEST__BODY_ROLE_LIST: {
        Keel__RoleListResponse *r = keel_arena_alloc(&a->tmp, sizeof(*r));
        char **names = keel_arena_alloc(&a->tmp, (a->c.n_roles + 1) * sizeof(*names));
        if (r == NULL || names == NULL)
            return refuse(a, session, req, KEEL_ENOMEM, NULL);
        keel__role_list_response__init(r);
        for (size_t i = 0; i < a->c.n_roles; i++)
            names[i] = a->c.roles[i]->name;
        r->roles = names;
        r->n_roles = a->c.n_roles;
        resp.body_case = KEEL__RESPONSE__BODY_ROLE_LIST;
        resp.role_list = r;
        break;
    }
    case KEEL__REQUEST__BODY_USER_GET: {
        struct cuser *cu = find_user(a, req->user_get->name);
        if (cu == NULL)
            return refuse(a, session, req, KEEL_EINVAL, "etcdserver: user name not found");
        Keel__UserGetResponse *r = keel_arena_alloc(&a->tmp, sizeof(*r));
        if (r == NULL)
            return refuse(a, session, req, KEEL_ENOMEM, NULL);
        keel__user_get_response__init(r);
        r->roles = cu->u->roles;
        r->n_roles = cu->u->n_roles;
        resp.body_case = KEEL__RESPONSE__BODY_USER_GET;
        resp.user_get = r;
        break;
    }
    case KEEL__REQUEST__BODY_ROLE_GET: {
        Keel__AuthRole *role = find_role(a, req->role_get->role);
        if (role == NULL && strcmp(req->role_get->role, ROOT) != 0)
            return refuse(a, session, req, KEEL_EINVAL, "etcdserver: role name not found");
        Keel__RoleGetResponse *r = keel_arena_alloc(&a->tmp, sizeof(*r));
        if (r == NULL)
            return refuse(a, session, req, KEEL_ENOMEM, NULL);
        keel__role_get_response__init(r);
        if (role != NULL) {
            r->perm = role->perms;
            r->n_perm = role->n_perms;
        }
        resp.body_case = KEEL__RESPONSE__BODY_ROLE_GET;
        resp.role_get = r;
        break;
    }
    default: { /* AUTH_STATUS */
        Keel__AuthStatusResponse *r = keel_arena_alloc(&a->tmp, sizeof(*r));
        if (r == NULL)
            return refuse(a, session, req, KEEL_ENOMEM, NULL);
        keel__auth_status_response__init(r);
        r->enabled = a->c.enabled;
        r->authrevision = a->c.revision;
        resp.body_case = KEEL__RESPONSE__BODY_AUTH_STATUS;
        resp.auth_status = r;
        break;
    }
    }
    answer(a, session, req, &resp);
    keel_arena_reset(&a->tmp);
}

/* ---- stamping and passing on ---- */

/* Replace whatever the client put in req->auth: a write gets the auth revision its intake check
 * ran against, which apply compares with the store's (AUTH_OLD_REVISION). The user is not
 * carried: apply reads only the revision, and every entry would hold the name for nothing.
 * 0 or KEEL_ENOMEM. */
static int stamp(Keel__Request *req, uint64_t revision)
{
    if (req->auth != NULL) {
        keel__auth_info__free_unpacked(req->auth, NULL);
        req->auth = NULL;
    }
    if (!keel_reqkind_is_write(req))
        return 0;
    Keel__AuthInfo *ai = malloc(sizeof(*ai));
    if (ai == NULL)
        return KEEL_ENOMEM;
    keel__auth_info__init(ai);
    ai->revision = revision;
    req->auth = ai;
    return 0;
}

/* Hand req on, stamped with the auth revision it was checked against. */
static void pass(struct keel_auth *a, uint64_t session, Keel__Request *req, uint64_t revision,
                 keel_auth_next next, void *ctx)
{
    int err = stamp(req, revision);
    if (err != 0)
        return refuse(a, session, req, err, NULL);
    next(ctx, session, req);
}

/* Wipe a password in place: it leaves no copy in freed memory. */
static void wipe(char *s)
{
    if (s != NULL && s[0] != '\0') {
        OPENSSL_cleanse(s, strlen(s));
        s[0] = '\0';
    }
}

/* ---- the thread pool ---- */

static void job_work(uv_work_t *w)
{
    struct job *j = w->data;
    if (j->kind == JOB_AUTHENTICATE)
        j->ok = keel_auth_hash_check(j->req->authenticate->password, j->stored);
    else if (j->req->body_case == KEEL__REQUEST__BODY_USER_ADD)
        j->err = keel_auth_hash(j->req->user_add->password, j->hash);
    else
        j->err = keel_auth_hash(j->req->user_change_password->password, j->hash);
}

static void authenticated(struct keel_auth *a, struct job *j)
{
    Keel__Request *req = j->req;
    int err = refresh(a);
    if (err != 0)
        return refuse(a, j->session, req, err, NULL);
    struct cuser *cu = find_user(a, req->authenticate->name);
    /* The password checked is still the user's (no change or delete while it was checked). */
    if (!j->ok || cu == NULL || cu->u->revision != j->user_rev)
        return refuse(a, j->session, req, KEEL_EUNAUTHENTICATED, E_FAILED);
    if (!a->c.enabled)
        return refuse(a, j->session, req, KEEL_EINVAL, "etcdserver: authentication is not enabled");
    char token[KEEL_AUTH_TOKEN_MAX];
    uint32_t ttl = a->o.token_ttl_s ? a->o.token_ttl_s : KEEL_AUTH_DEFAULT_TOKEN_TTL;
    if (keel_auth_token_make(a->c.key.data, a->c.key.len, cu->u->name, a->c.revision,
                             now_ms() + (uint64_t)ttl * 1000, token) != 0)
        return refuse(a, j->session, req, KEEL_EINVAL, E_FAILED);
    Keel__AuthenticateResponse ar = KEEL__AUTHENTICATE_RESPONSE__INIT;
    ar.token = token;
    Keel__Response resp = KEEL__RESPONSE__INIT;
    resp.body_case = KEEL__RESPONSE__BODY_AUTHENTICATE;
    resp.authenticate = &ar;
    answer(a, j->session, req, &resp);
}

static void hashed(struct keel_auth *a, struct job *j)
{
    Keel__Request *req = j->req;
    if (j->err != 0)
        return refuse(a, j->session, req, j->err, "the password could not be hashed");
    char **dst = req->body_case == KEEL__REQUEST__BODY_USER_ADD
                     ? &req->user_add->hashed_password
                     : &req->user_change_password->hashed_password;
    char *h = strdup(j->hash);
    if (h == NULL)
        return refuse(a, j->session, req, KEEL_ENOMEM, NULL);
    if (*dst != NULL && *dst != protobuf_c_empty_string)
        free(*dst);
    *dst = h;
    /* Stamped with the revision the intake check ran against, not today's: if auth changed while
     * the password was hashed (root's role revoked from the sender, auth enabled), apply refuses
     * it (AUTH_OLD_REVISION) and the client sends it again, to be checked anew. */
    pass(a, j->session, req, j->intake_rev, j->next, j->ctx);
}

/* j is over (status 0: its work ran): answer it and free it. */
static void job_finish(struct keel_auth *a, struct job *j, int status)
{
    a->jobs--;
    /* Checked or hashed: the password is of no more use. */
    if (j->kind == JOB_AUTHENTICATE)
        wipe(j->req->authenticate->password);
    else if (j->req->body_case == KEEL__REQUEST__BODY_USER_ADD)
        wipe(j->req->user_add->password);
    else
        wipe(j->req->user_change_password->password);
    if (a->stopped || status != 0) {
        refuse(a, j->session, j->req, KEEL_EUNAVAILABLE, "member is stopping");
    } else if (j->kind == JOB_AUTHENTICATE) {
        authenticated(a, j);
    } else {
        hashed(a, j);
    }
    OPENSSL_cleanse(j->hash, sizeof(j->hash));
    free(j->stored);
    free(j);
}

static void job_done(uv_work_t *w, int status);

/* Put queued jobs on the pool while it has room for them (or end them: stopping). */
static void job_pump(struct keel_auth *a)
{
    while (a->queue_head != NULL && (a->stopped || a->running < KEEL_AUTH_POOL_JOBS)) {
        struct job *j = a->queue_head;
        a->queue_head = j->queue_next;
        if (a->queue_head == NULL)
            a->queue_tail = NULL;
        if (a->stopped || uv_queue_work(a->o.loop, &j->w, job_work, job_done) != 0)
            job_finish(a, j, UV_ECANCELED);
        else
            a->running++;
    }
}

static void job_done(uv_work_t *w, int status)
{
    struct job *j = w->data;
    struct keel_auth *a = j->a;
    a->running--;
    job_finish(a, j, status);
    job_pump(a);
}

/* Start a job on req; refused at once when too many are out. */
static void start_job(struct keel_auth *a, enum job_kind kind, uint64_t session, Keel__Request *req,
                      keel_auth_next next, void *ctx, const char *stored, uint64_t user_rev)
{
    if (a->jobs >= KEEL_AUTH_MAX_JOBS)
        return refuse(a, session, req, KEEL_ETOOMANYREQUESTS,
                      "too many password checks in flight on this member: try again");
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL || (stored != NULL && (j->stored = strdup(stored)) == NULL)) {
        free(j);
        return refuse(a, session, req, KEEL_ENOMEM, NULL);
    }
    j->a = a;
    j->kind = kind;
    j->session = session;
    j->req = req;
    j->next = next;
    j->ctx = ctx;
    j->user_rev = user_rev;
    j->intake_rev = a->c.revision;
    j->w.data = j;
    /* Queued here, not on the pool: the pool's threads also write raft's log (raft_uv), and a
     * burst of password checks (anyone may send Authenticate) must not hold them all. */
    if (a->queue_tail != NULL)
        a->queue_tail->queue_next = j;
    else
        a->queue_head = j;
    a->queue_tail = j;
    a->jobs++;
    job_pump(a);
}

/* The password of a user add or change: hashed on the pool, or a client's hash taken as is. */
static void take_password(struct keel_auth *a, uint64_t session, Keel__Request *req,
                          keel_auth_next next, void *ctx)
{
    char *pw, *hashed;
    if (req->body_case == KEEL__REQUEST__BODY_USER_ADD) {
        pw = req->user_add->password;
        hashed = req->user_add->hashed_password;
    } else {
        pw = req->user_change_password->password;
        hashed = req->user_change_password->hashed_password;
    }
    if (pw != NULL && strlen(pw) > MAX_PASSWORD) {
        wipe(pw);
        return refuse(a, session, req, KEEL_EINVAL, "password is longer than 1024 bytes");
    }
    if (pw != NULL && pw[0] != '\0')
        return start_job(a, JOB_HASH, session, req, next, ctx, NULL, 0);
    if (hashed == NULL || hashed[0] == '\0')
        return refuse(a, session, req, KEEL_EINVAL, "etcdserver: password is empty");
    if (!keel_auth_hash_valid(hashed))
        return refuse(a, session, req, KEEL_EINVAL,
                      "hashed_password is not a pbkdf2-sha256$ITERATIONS$SALT$HASH string");
    pass(a, session, req, a->c.revision, next, ctx);
}

/* ---- intake ---- */

void keel_auth_intake(struct keel_auth *a, uint64_t session, Keel__Request *req,
                      keel_auth_next next, void *ctx)
{
    const char *msg = NULL;
    int err = refresh(a);
    if (err != 0)
        return refuse(a, session, req, err, "auth state could not be read");
    if (req->body_case == KEEL__REQUEST__BODY_AUTHENTICATE && req->authenticate != NULL) {
        Keel__AuthenticateRequest *ar = req->authenticate;
        if (!a->c.enabled) {
            wipe(ar->password);
            return refuse(a, session, req, KEEL_EINVAL,
                          "etcdserver: authentication is not enabled");
        }
        if (strlen(ar->password) > MAX_PASSWORD) {
            wipe(ar->password);
            return refuse(a, session, req, KEEL_EUNAUTHENTICATED, E_FAILED);
        }
        struct cuser *cu = find_user(a, ar->name);
        return start_job(a, JOB_AUTHENTICATE, session, req, next, ctx,
                         cu ? cu->u->hashed_password : NULL, cu ? cu->u->revision : 0);
    }
    struct cuser *cu = NULL;
    if (a->c.enabled && !open_to_all(req->body_case)) {
        if ((err = who(a, session, req, &cu, &msg)) == 0 && (err = build_user(a, cu)) == 0 &&
            req->body_case != KEEL__REQUEST__BODY__NOT_SET && req->range != NULL &&
            (err = permitted(a, cu, req)) != 0)
            msg = err == KEEL_EPERMDENIED ? E_DENIED : NULL;
        if (err != 0) {
            if (req->body_case == KEEL__REQUEST__BODY_USER_ADD && req->user_add != NULL)
                wipe(req->user_add->password);
            if (req->body_case == KEEL__REQUEST__BODY_USER_CHANGE_PASSWORD &&
                req->user_change_password != NULL)
                wipe(req->user_change_password->password);
            return refuse(a, session, req, err, msg);
        }
    }
    if (req->range == NULL) /* no body: dispatch says so */
        return pass(a, session, req, a->c.revision, next, ctx);
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_USER_ADD:
    case KEEL__REQUEST__BODY_USER_CHANGE_PASSWORD:
        return take_password(a, session, req, next, ctx);
    case KEEL__REQUEST__BODY_USER_GET:
    case KEEL__REQUEST__BODY_USER_LIST:
    case KEEL__REQUEST__BODY_ROLE_GET:
    case KEEL__REQUEST__BODY_ROLE_LIST:
    case KEEL__REQUEST__BODY_AUTH_STATUS:
        return serve_read(a, session, req);
    case KEEL__REQUEST__BODY_AUTH_ENABLE: {
        /* The signing key the first enable keeps: drawn here, carried by the log. */
        Keel__AuthEnableRequest *e = req->auth_enable;
        free(e->signing_key.data);
        e->signing_key.data = malloc(KEEL_AUTH_KEY_BYTES);
        e->signing_key.len = 0;
        if (e->signing_key.data == NULL)
            return refuse(a, session, req, KEEL_ENOMEM, NULL);
        if (RAND_bytes(e->signing_key.data, KEEL_AUTH_KEY_BYTES) != 1)
            return refuse(a, session, req, KEEL_EIO, "no random bytes for the signing key");
        e->signing_key.len = KEEL_AUTH_KEY_BYTES;
        return pass(a, session, req, a->c.revision, next, ctx);
    }
    default:
        return pass(a, session, req, a->c.revision, next, ctx);
    }
}

int keel_auth_new(const struct keel_auth_options *o, struct keel_auth **out)
{
    struct keel_auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return KEEL_ENOMEM;
    a->o = *o;
    keel_arena_init(&a->c.arena, 0);
    keel_arena_init(&a->tmp, 0);
    *out = a;
    return 0;
}

void keel_auth_stop(struct keel_auth *a)
{
    if (a == NULL)
        return;
    a->stopped = true;
    job_pump(a); /* the queued ones end now; those on the pool when they come back */
}

void keel_auth_free(struct keel_auth *a)
{
    if (a == NULL)
        return;
    keel_arena_close(&a->c.arena);
    keel_arena_close(&a->tmp);
    free(a);
}
