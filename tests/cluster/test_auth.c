/*
 * Users, roles and permissions (issue 16, etcd's model) through real keeld processes and libkeel.
 *
 *   rbac     a user with READ on a/ and READWRITE on b/ reads and writes only there: elsewhere,
 *            and inside a txn (a compare, an op of a nested txn), and a watch, get
 *            PERMISSION_DENIED; admin operations are refused to it; a lease revoke needs WRITE on
 *            every key of the lease; a wrong password, no token, a tampered token and an expired
 *            one (a member with --auth-token-ttl 2) get UNAUTHENTICATED; a permission revoked is
 *            enforced on every member, followers too, once each has applied it; auth disable by
 *            root opens everything again.
 *   persist  a follower far behind catches up through a checkpoint from the leader with auth on
 *            (its fetch carries a root token signed with the cluster key); users, roles and
 *            tokens survive a restart of every member; passwords (also a changed one) appear
 *            nowhere: not in any member's data.mdb or raft log, nor a snapshot saved
 *            through keel_snapshot, nor any member's log.
 *   reauth   members issue tokens for 2 seconds: an asynchronous libkeel client given a user and
 *            password keeps 8 requests in flight for over 3 TTLs with no error, authenticating
 *            again once per expiry (not once per refused request); a watch it creates with an
 *            expired token is acknowledged and delivers; a synchronous client keeps working
 *            past the TTL and keel_token follows the new token; keel-bench --user runs past the
 *            TTL with no error.
 */
#include <ftw.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <uv.h>

#include "cluster.h"
#include "keel/keel.h"
#include "testutil.h"

#define ROOT_PW  "root-Pw-7c1f9e"
#define ALICE_PW "alice-Pw-3b8d2a"
#define NEW_PW   "alice-New-5e0c44"

/* A client of member (0: all), authenticated as user when not NULL, or sending token. */
static int open_as(const struct tc_cluster *c, int member, const char *user, const char *pw,
                   const char *token, struct keel **out)
{
    char eps[512];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps,
                             .request_timeout_ms = 5000,
                             .dial_timeout_ms = 1000,
                             .user = user,
                             .password = pw,
                             .token = token};
    *out = NULL;
    return keel_open(out, &o);
}

static struct keel *must_open(const struct tc_cluster *c, int member, const char *user,
                              const char *pw)
{
    struct keel *k;
    int rv = open_as(c, member, user, pw, NULL, &k);
    if (rv != 0)
        fail_msg("open as %s: %s (%s)", user ? user : "-", keel_strerror(rv), keel_errmsg());
    return k;
}

static void ok(int rv, const char *what)
{
    if (rv != 0)
        fail_msg("%s: %s (%s)", what, keel_strerror(rv), keel_errmsg());
}

/* rv is err, with msg in keel_errmsg. */
static void refused(int rv, int err, const char *msg, const char *what)
{
    if (rv != err || strstr(keel_errmsg(), msg) == NULL)
        fail_msg("%s: want %s (%s), got %s (%s)", what, keel_strerror(err), msg, keel_strerror(rv),
                 keel_errmsg());
}

#define DENIED(rv, what) refused((rv), KEEL_EPERMDENIED, "etcdserver: permission denied", (what))

static int put(struct keel *k, const char *key)
{
    return keel_put(k, key, strlen(key), "v", 1, NULL, NULL);
}

static int get_at(struct keel *k, const char *key, const char *end, bool serializable)
{
    struct keel_get_opts o = {.range_end = end,
                              .range_end_len = end ? (end[0] ? strlen(end) : 1) : 0,
                              .serializable = serializable};
    Keel__RangeResponse *r = NULL;
    int rv = keel_get(k, key, strlen(key), &o, &r);
    keel_free(r);
    return rv;
}

static int get(struct keel *k, const char *key, const char *end)
{
    return get_at(k, key, end, false);
}

/* One auth request (a body of Request) through keel_do_ex; *out when wanted. */
static int call(struct keel *k, Keel__Request *req, const char *endpoint, Keel__Response **out)
{
    struct keel_call_opts o = {.endpoint = endpoint};
    Keel__Response *resp = NULL;
    int rv = keel_do_ex(k, req, &o, &resp);
    if (out != NULL)
        *out = resp;
    else
        keel_free(resp);
    return rv;
}

static int user_add(struct keel *k, const char *name, const char *pw)
{
    Keel__UserAddRequest u = KEEL__USER_ADD_REQUEST__INIT;
    u.name = (char *)name;
    u.password = (char *)pw;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_USER_ADD;
    req.user_add = &u;
    return call(k, &req, NULL, NULL);
}

static int grant_role(struct keel *k, const char *user, const char *role)
{
    Keel__UserGrantRoleRequest g = KEEL__USER_GRANT_ROLE_REQUEST__INIT;
    g.user = (char *)user;
    g.role = (char *)role;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_USER_GRANT_ROLE;
    req.user_grant_role = &g;
    return call(k, &req, NULL, NULL);
}

static int role_add(struct keel *k, const char *name)
{
    Keel__RoleAddRequest r = KEEL__ROLE_ADD_REQUEST__INIT;
    r.name = (char *)name;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ROLE_ADD;
    req.role_add = &r;
    return call(k, &req, NULL, NULL);
}

/* key .. end as given (end "": the key alone; "\0" is spelt "FROM"). */
static ProtobufCBinaryData bytes_of(const char *s)
{
    if (strcmp(s, "FROM") == 0)
        return (ProtobufCBinaryData){1, (uint8_t *)""};
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

static int grant_perm(struct keel *k, const char *role, Keel__Permission__Type t, const char *key,
                      const char *end)
{
    Keel__Permission p = KEEL__PERMISSION__INIT;
    p.permtype = t;
    p.key = bytes_of(key);
    p.range_end = bytes_of(end);
    Keel__RoleGrantPermissionRequest g = KEEL__ROLE_GRANT_PERMISSION_REQUEST__INIT;
    g.name = (char *)role;
    g.perm = &p;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ROLE_GRANT_PERMISSION;
    req.role_grant_permission = &g;
    return call(k, &req, NULL, NULL);
}

static int revoke_perm(struct keel *k, const char *role, const char *key, const char *end)
{
    Keel__RoleRevokePermissionRequest r = KEEL__ROLE_REVOKE_PERMISSION_REQUEST__INIT;
    r.role = (char *)role;
    r.key = bytes_of(key);
    r.range_end = bytes_of(end);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ROLE_REVOKE_PERMISSION;
    req.role_revoke_permission = &r;
    return call(k, &req, NULL, NULL);
}

static int auth_switch(struct keel *k, bool on)
{
    Keel__AuthEnableRequest en = KEEL__AUTH_ENABLE_REQUEST__INIT;
    Keel__AuthDisableRequest dis = KEEL__AUTH_DISABLE_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    if (on) {
        req.body_case = KEEL__REQUEST__BODY_AUTH_ENABLE;
        req.auth_enable = &en;
    } else {
        req.body_case = KEEL__REQUEST__BODY_AUTH_DISABLE;
        req.auth_disable = &dis;
    }
    return call(k, &req, NULL, NULL);
}

/* The auth revision member endpoint has applied (AuthStatus, answered by that member). */
static uint64_t auth_revision_at(struct keel *k, const char *endpoint)
{
    Keel__AuthStatusRequest s = KEEL__AUTH_STATUS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_AUTH_STATUS;
    req.auth_status = &s;
    Keel__Response *resp = NULL;
    ok(call(k, &req, endpoint, &resp), "auth status");
    uint64_t rev = resp->auth_status->authrevision;
    keel_free(resp);
    return rev;
}

/* Wait (bounded) until member i has applied auth revision rev. */
static void await_auth_revision(const struct tc_cluster *c, struct keel *k, int i, uint64_t rev)
{
    long long end = tc_now_ms() + 15000;
    while (auth_revision_at(k, c->m[i].client) < rev) {
        if (tc_now_ms() > end)
            fail_msg("member %d did not reach auth revision %llu", i, (unsigned long long)rev);
        usleep(50 * 1000);
    }
}

/* The state every test starts from: root (role root), role r (READ a/, READWRITE b/), alice (r),
 * some keys, auth enabled. Returns root's client. */
static struct keel *set_up(struct tc_cluster *c)
{
    struct keel *k = must_open(c, 0, NULL, NULL);
    assert_true(tc_find_leader(c, k, 0, 15000) > 0);
    ok(put(k, "a/1"), "put a/1");
    ok(put(k, "b/1"), "put b/1");
    ok(put(k, "c/1"), "put c/1");
    /* auth enable wants root with role root: refused until both are there. */
    refused(auth_switch(k, true), KEEL_EINVAL, "etcdserver: root user does not exist", "enable");
    ok(user_add(k, "root", ROOT_PW), "user add root");
    refused(auth_switch(k, true), KEEL_EINVAL, "etcdserver: root user does not have root role",
            "enable");
    ok(grant_role(k, "root", "root"), "grant root");
    ok(role_add(k, "r"), "role add r");
    ok(grant_perm(k, "r", KEEL__PERMISSION__TYPE__READ, "a/", "a0"), "grant read a/");
    ok(grant_perm(k, "r", KEEL__PERMISSION__TYPE__READWRITE, "b/", "b0"), "grant readwrite b/");
    ok(user_add(k, "alice", ALICE_PW), "user add alice");
    ok(grant_role(k, "alice", "r"), "grant r to alice");
    refused(user_add(k, "alice", "x"), KEEL_EINVAL, "etcdserver: user name already exists",
            "user add twice");
    ok(auth_switch(k, true), "auth enable");
    /* root's own client: authenticated from here on. */
    keel_close(k);
    return must_open(c, 0, "root", ROOT_PW);
}

static void on_event(struct keel_watch *w, int status, const Keel__Event *const *events, size_t n,
                     int64_t revision, void *data)
{
    (void)revision;
    (void)w;
    (void)status;
    (void)events;
    (void)n;
    (void)data;
}

static int watch(struct keel *k, const char *key, const char *end)
{
    struct keel_watch_opts o = {.range_end = end, .range_end_len = end ? strlen(end) : 0};
    struct keel_watch *w = NULL;
    int rv = keel_watch_open(k, key, strlen(key), &o, on_event, NULL, &w);
    if (rv == 0)
        keel_watch_close(k, w);
    return rv;
}

/* A txn with compares on cmp_key and success ops put_key (NULL: none) and, nested one level
 * down, nested_put (NULL: none). */
static int txn(struct keel *k, const char *cmp_key, const char *put_key, const char *nested_put)
{
    Keel__Compare cmp = KEEL__COMPARE__INIT;
    cmp.key = bytes_of(cmp_key);
    cmp.target = KEEL__COMPARE__COMPARE_TARGET__VERSION;
    cmp.result = KEEL__COMPARE__COMPARE_RESULT__GREATER;
    cmp.target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
    Keel__Compare *cmps[] = {&cmp};
    Keel__PutRequest p = KEEL__PUT_REQUEST__INIT, np = KEEL__PUT_REQUEST__INIT;
    Keel__RequestOp op = KEEL__REQUEST_OP__INIT, nop = KEEL__REQUEST_OP__INIT,
                    txop = KEEL__REQUEST_OP__INIT;
    Keel__TxnRequest inner = KEEL__TXN_REQUEST__INIT, t = KEEL__TXN_REQUEST__INIT;
    Keel__RequestOp *ops[2], *inner_ops[1];
    size_t n = 0;
    if (put_key != NULL) {
        p.key = bytes_of(put_key);
        op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
        op.request_put = &p;
        ops[n++] = &op;
    }
    if (nested_put != NULL) {
        np.key = bytes_of(nested_put);
        nop.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
        nop.request_put = &np;
        inner_ops[0] = &nop;
        inner.failure = inner_ops; /* never run: the check is on what could run */
        inner.n_failure = 1;
        txop.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
        txop.request_txn = &inner;
        ops[n++] = &txop;
    }
    t.compare = cmps;
    t.n_compare = 1;
    t.success = ops;
    t.n_success = n;
    return keel_txn(k, &t, NULL);
}

static int discard(void *data, const void *bytes, size_t n)
{
    (void)data;
    (void)bytes;
    (void)n;
    return 0;
}

static void admin_refused(struct keel *alice, const struct tc_cluster *c)
{
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__CompactionRequest cr = KEEL__COMPACTION_REQUEST__INIT;
    cr.revision = 1;
    req.body_case = KEEL__REQUEST__BODY_COMPACTION;
    req.compaction = &cr;
    DENIED(call(alice, &req, NULL, NULL), "compaction");
    Keel__DefragmentRequest dr = KEEL__DEFRAGMENT_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_DEFRAGMENT;
    req.defragment = &dr;
    DENIED(call(alice, &req, c->m[1].client, NULL), "defragment");
    Keel__AlarmRequest ar = KEEL__ALARM_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ALARM;
    req.alarm = &ar;
    DENIED(call(alice, &req, NULL, NULL), "alarm list");
    Keel__MoveLeaderRequest ml = KEEL__MOVE_LEADER_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MOVE_LEADER;
    req.move_leader = &ml;
    DENIED(call(alice, &req, NULL, NULL), "move leader");
    Keel__MemberRemoveRequest mr = KEEL__MEMBER_REMOVE_REQUEST__INIT;
    mr.id = 1;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_REMOVE;
    req.member_remove = &mr;
    DENIED(call(alice, &req, NULL, NULL), "member remove");
    Keel__UserListRequest ul = KEEL__USER_LIST_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_USER_LIST;
    req.user_list = &ul;
    DENIED(call(alice, &req, NULL, NULL), "user list");
    DENIED(role_add(alice, "mine"), "role add");
    DENIED(grant_perm(alice, "r", KEEL__PERMISSION__TYPE__READWRITE, "c/", "c0"), "grant itself");
    DENIED(auth_switch(alice, false), "auth disable");
    /* A snapshot is the whole store: root only. */
    char *tok = keel_token(alice);
    assert_non_null(tok);
    struct keel_options so = {.token = tok, .request_timeout_ms = 5000};
    DENIED(keel_snapshot(&so, c->m[1].client, discard, NULL, NULL), "snapshot");
    free(tok);
    /* Open to every user, as in etcd: the member list and status. */
    Keel__MemberListResponse *m = NULL;
    ok(keel_member_list(alice, &m), "member list");
    keel_free(m);
}

static void rbac(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "auth-rbac");
    /* Member 3 issues tokens for 2 seconds only. */
    snprintf(c.m[3].extra, sizeof(c.m[3].extra), "--auth-token-ttl 2");
    tc_start_all(&c);
    struct keel *root = set_up(&c);
    struct keel *alice = must_open(&c, 0, "alice", ALICE_PW);

    /* Inside its ranges. */
    ok(get(alice, "a/1", NULL), "get a/1");
    ok(get(alice, "a/", "a0"), "get prefix a/");
    ok(get(alice, "b/1", NULL), "get b/1 (READWRITE reads)");
    ok(put(alice, "b/2"), "put b/2");
    ok(keel_delete(alice, "b/2", 3, NULL, NULL), "del b/2");
    ok(txn(alice, "a/1", "b/3", "b/4"), "txn inside");
    /* Outside. */
    DENIED(put(alice, "a/1"), "put a/1 (READ only)");
    DENIED(get(alice, "c/1", NULL), "get c/1");
    DENIED(get(alice, "a/", "b0"), "get [a/, b0): a gap between");
    DENIED(get(alice, "a/", ""), "get from a/");
    DENIED(keel_delete(alice, "c/1", 3, NULL, NULL), "del c/1");
    struct keel_put_opts pkv = {.prev_kv = true};
    ok(keel_put(alice, "b/5", 3, "v", 1, &pkv, NULL), "put b/5 with prev_kv");
    DENIED(txn(alice, "c/1", "b/3", NULL), "txn comparing c/1");
    DENIED(txn(alice, "a/1", "a/2", NULL), "txn putting a/2");
    DENIED(txn(alice, "a/1", "b/3", "c/2"), "txn with c/2 in a nested txn");
    ok(watch(alice, "a/", "a0"), "watch a/");
    DENIED(watch(alice, "c/", "c0"), "watch c/");
    DENIED(watch(alice, "a/", "b0"), "watch [a/, b0)");
    admin_refused(alice, &c);

    /* A lease revoke deletes its keys: WRITE on each. */
    Keel__LeaseGrantResponse *g = NULL;
    ok(keel_lease_grant(alice, 60, 0, &g), "alice grants a lease");
    int64_t lease = g->id;
    keel_free(g);
    struct keel_put_opts lo = {.lease = lease};
    ok(keel_put(alice, "b/leased", 8, "v", 1, &lo, NULL), "alice attaches b/leased");
    ok(keel_put(root, "c/leased", 8, "v", 1, &lo, NULL), "root attaches c/leased");
    DENIED(keel_lease_revoke(alice, lease), "revoke a lease holding c/leased");
    ok(keel_delete(root, "c/leased", 8, NULL, NULL), "root deletes c/leased");
    ok(keel_lease_revoke(alice, lease), "revoke a lease of b/ keys only");

    /* Who is asking. */
    struct keel *k = NULL;
    refused(open_as(&c, 0, "alice", "wrong", NULL, &k), KEEL_EUNAUTHENTICATED,
            "etcdserver: authentication failed, invalid user ID or password", "wrong password");
    refused(open_as(&c, 0, "mallory", "x", NULL, &k), KEEL_EUNAUTHENTICATED,
            "etcdserver: authentication failed, invalid user ID or password", "no such user");
    struct keel *anon = must_open(&c, 0, NULL, NULL);
    refused(get(anon, "a/1", NULL), KEEL_EUNAUTHENTICATED, "etcdserver: user name is empty",
            "no token");
    char *tok = keel_token(alice);
    tok[strlen(tok) - 1] = tok[strlen(tok) - 1] == '0' ? '1' : '0';
    struct keel *forged = NULL;
    ok(open_as(&c, 0, NULL, NULL, tok, &forged), "open with a forged token");
    refused(get(forged, "a/1", NULL), KEEL_EUNAUTHENTICATED, "etcdserver: invalid auth token",
            "tampered token");
    keel_close(forged);
    free(tok);

    /* A token from member 3 (TTL 2 s; asked of it alone): valid on every member, until it
     * expires. */
    Keel__AuthenticateRequest ar = KEEL__AUTHENTICATE_REQUEST__INIT;
    ar.name = "alice";
    ar.password = ALICE_PW;
    Keel__Request areq = KEEL__REQUEST__INIT;
    areq.body_case = KEEL__REQUEST__BODY_AUTHENTICATE;
    areq.authenticate = &ar;
    Keel__Response *aresp = NULL;
    ok(call(anon, &areq, c.m[3].client, &aresp), "authenticate on member 3");
    tok = strdup(aresp->authenticate->token);
    keel_free(aresp);
    struct keel *bearer = NULL;
    ok(open_as(&c, 0, NULL, NULL, tok, &bearer), "open with the token");
    ok(get(bearer, "a/1", NULL), "the token works on the leader");
    sleep(3);
    refused(get(bearer, "a/1", NULL), KEEL_EUNAUTHENTICATED, "etcdserver: invalid auth token",
            "expired token");
    keel_close(bearer);
    free(tok);

    /* Revoked: refused on the next request, on every member once it has applied the change. */
    ok(revoke_perm(root, "r", "a/", "a0"), "revoke read a/");
    DENIED(get(alice, "a/1", NULL), "get a/1 after the revoke (leader)");
    uint64_t rev = auth_revision_at(root, NULL);
    for (int i = 1; i <= 3; i++) {
        await_auth_revision(&c, root, i, rev);
        struct keel *one = must_open(&c, i, "alice", ALICE_PW);
        DENIED(get_at(one, "a/1", NULL, true), "serializable get a/1 on a member after revoke");
        DENIED(watch(one, "a/", "a0"), "watch a/ on a member after revoke");
        ok(get_at(one, "b/1", NULL, true), "b/ still readable there");
        keel_close(one);
    }

    /* Disabled by root: open again, to anyone. */
    ok(auth_switch(root, false), "auth disable");
    ok(put(anon, "c/open"), "put without a user after disable");
    ok(get(anon, "c/1", NULL), "get without a user after disable");
    keel_close(anon);
    keel_close(alice);
    keel_close(root);
    tc_cluster_close(&c);
}

/* ---- persist ---- */

static const char *const secrets[] = {ROOT_PW, ALICE_PW, NEW_PW};
static int secret_hits;

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    size_t cap = 1 << 20, len = 0, nl = strlen(needle);
    char *buf = malloc(cap);
    assert_non_null(buf);
    bool found = false;
    for (;;) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (memmem(buf, len, needle, nl) != NULL) {
            found = true;
            break;
        }
        if (got == 0)
            break;
        /* Keep the tail that could start a match. */
        size_t keep = len < nl ? len : nl - 1;
        memmove(buf, buf + len - keep, keep);
        len = keep;
    }
    free(buf);
    fclose(f);
    return found;
}

static int scan_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag != FTW_F)
        return 0;
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        if (file_has(path, secrets[i])) {
            print_error("password %s found in %s\n", secrets[i], path);
            secret_hits++;
        }
    }
    return 0;
}

static int save_snapshot(void *data, const void *bytes, size_t n)
{
    return fwrite(bytes, 1, n, data) == n ? 0 : KEEL_EIO;
}

static void persist(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "auth-persist");
    c.snapshot_threshold = 64;
    c.snapshot_trailing = 32;
    tc_start_all(&c);
    struct keel *root = set_up(&c);

    /* A follower down while far more than a snapshot's worth of entries pass: it comes back
     * through the leader's checkpoint, which Snapshot serves to root only. */
    int leader = tc_find_leader(&c, root, 0, 15000);
    assert_true(leader > 0);
    int victim = leader == 3 ? 2 : 3;
    assert_int_equal(tc_stop(&c, victim, SIGTERM), 0);
    for (int i = 0; i < 300; i++) {
        char key[32];
        snprintf(key, sizeof(key), "c/%04d", i);
        ok(put(root, key), "put while a member is down");
    }
    ok(put(root, "c/last"), "put c/last");
    assert_int_equal(tc_start(&c, victim), 0);
    long long until = tc_now_ms() + 30000;
    struct keel *there = NULL;
    for (;;) {
        if (there == NULL && open_as(&c, victim, "root", ROOT_PW, NULL, &there) != 0)
            there = NULL;
        if (there != NULL && get_at(there, "c/last", NULL, true) == 0 &&
            tc_log_contains(&c, victim, "checkpoint restored"))
            break;
        if (tc_now_ms() > until)
            fail_msg("member %d did not catch up through a checkpoint", victim);
        usleep(100 * 1000);
    }
    keel_close(there);
    struct keel *alice = must_open(&c, 0, "alice", ALICE_PW);
    ok(put(alice, "b/before"), "put before the restart");
    char *tok = keel_token(alice);
    keel_close(alice);

    /* A changed password: the old one no longer authenticates. */
    ok(user_add(root, "bob", ALICE_PW), "user add bob");
    Keel__UserChangePasswordRequest cp = KEEL__USER_CHANGE_PASSWORD_REQUEST__INIT;
    cp.name = "bob";
    cp.password = NEW_PW;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_USER_CHANGE_PASSWORD;
    req.user_change_password = &cp;
    ok(call(root, &req, NULL, NULL), "passwd bob");
    struct keel *k = NULL;
    refused(open_as(&c, 0, "bob", ALICE_PW, NULL, &k), KEEL_EUNAUTHENTICATED,
            "authentication failed", "bob's old password");
    struct keel *bob = must_open(&c, 0, "bob", NEW_PW);
    keel_close(bob);

    /* Every member restarted: users, roles and tokens (within their TTL) still there. */
    keel_close(root);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(tc_stop(&c, i, SIGTERM), 0);
        assert_int_equal(tc_start(&c, i), 0);
    }
    struct keel *bearer = NULL;
    ok(open_as(&c, 0, NULL, NULL, tok, &bearer), "open with the token");
    assert_true(tc_find_leader(&c, bearer, 0, 15000) > 0);
    long long end = tc_now_ms() + 15000;
    int rv;
    while ((rv = get(bearer, "b/before", NULL)) != 0 && tc_now_ms() < end)
        usleep(100 * 1000);
    ok(rv, "the token from before the restart");
    DENIED(get(bearer, "c/1", NULL), "still only its ranges");
    keel_close(bearer);
    free(tok);
    root = must_open(&c, 0, "root", ROOT_PW);
    alice = must_open(&c, 0, "alice", ALICE_PW);
    ok(put(alice, "b/after"), "alice after the restart");
    DENIED(put(alice, "c/after"), "alice's ranges after the restart");
    keel_close(alice);

    /* Nowhere in clear: a snapshot, the stores, the raft logs, the members' logs. */
    char snap[600];
    snprintf(snap, sizeof(snap), "%s/snapshot.db", c.root);
    FILE *f = fopen(snap, "wb");
    assert_non_null(f);
    tok = keel_token(root);
    struct keel_options so = {.token = tok, .request_timeout_ms = 10000};
    struct keel_snapshot_info info;
    ok(keel_snapshot(&so, c.m[1].client, save_snapshot, f, &info), "snapshot as root");
    fclose(f);
    free(tok);
    assert_true(info.bytes > 0);
    secret_hits = 0;
    scan_one(snap, NULL, FTW_F, NULL);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(nftw(c.m[i].dir, scan_one, 16, FTW_PHYS), 0);
        scan_one(c.m[i].log, NULL, FTW_F, NULL);
    }
    assert_int_equal(secret_hits, 0);
    /* The scan can find: the user names are there. */
    assert_true(file_has(snap, "alice"));
    keel_close(root);
    tc_cluster_close(&c);
}

/* ---- reauth ---- */

#ifndef KEEL_BENCH_PATH
#error "KEEL_BENCH_PATH must name the keel-bench binary"
#endif

#define REAUTH_TTL_S    2
#define REAUTH_INFLIGHT 8

struct load {
    struct keel_aclient *ac;
    long long until; /* tc_now_ms: no new request after this */
    unsigned sent, answered, failed, in_flight;
    char first_error[256];
    int watch_events, watch_status;
    bool watch_created;
};

static void send_one(struct load *l);

static void answered(int status, const Keel__Response *resp, void *data)
{
    struct load *l = data;
    l->in_flight--;
    l->answered++;
    if (status != 0 && l->failed++ == 0)
        snprintf(l->first_error, sizeof(l->first_error), "%s",
                 resp->error && resp->error->message ? resp->error->message : "?");
    if (tc_now_ms() < l->until)
        send_one(l);
}

/* A put to b/ (alice's READWRITE) or a linearizable get of a/1 (her READ), in turn. */
static void send_one(struct load *l)
{
    char key[32];
    snprintf(key, sizeof(key), "b/load-%u", l->sent % 50);
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
    if (l->sent % 2 == 0) {
        put.key = bytes_of(key);
        put.value = bytes_of("v");
        req.body_case = KEEL__REQUEST__BODY_PUT;
        req.put = &put;
    } else {
        range.key = bytes_of("a/1");
        req.body_case = KEEL__REQUEST__BODY_RANGE;
        req.range = &range;
    }
    int rv = keel_aclient_request(l->ac, &req, 0, answered, l);
    if (rv != 0)
        fail_msg("keel_aclient_request: %s", keel_strerror(rv));
    l->sent++;
    l->in_flight++;
}

static void on_load_event(struct keel_watch *w, int status, const Keel__Event *const *events,
                          size_t n, int64_t revision, void *data)
{
    (void)w;
    (void)events;
    (void)revision;
    struct load *l = data;
    if (status != 0) {
        l->watch_status = status;
        return;
    }
    if (n == 0)
        l->watch_created = true;
    l->watch_events += (int)n;
}

static void close_done(void *data)
{
    *(bool *)data = true;
}

/* Run loop until done() or ms pass. */
static void run_until(uv_loop_t *loop, bool (*done)(struct load *), struct load *l, int ms)
{
    long long end = tc_now_ms() + ms;
    while (!done(l) && tc_now_ms() < end)
        uv_run(loop, UV_RUN_ONCE);
}

static bool load_over(struct load *l)
{
    return tc_now_ms() >= l->until && l->in_flight == 0;
}

static bool watch_delivered(struct load *l)
{
    return l->watch_events > 0 || l->watch_status != 0;
}

static bool watch_acknowledged(struct load *l)
{
    return l->watch_created || l->watch_status != 0;
}

static void reauth(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "auth-reauth");
    snprintf(c.extra, sizeof(c.extra), "--auth-token-ttl %d", REAUTH_TTL_S);
    tc_start_all(&c);
    struct keel *root = set_up(&c);

    /* The asynchronous client: credentials, no token. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    char eps[512];
    tc_endpoints(&c, 0, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = 10000, .user = "alice", .password = ALICE_PW};
    struct load l = {0};
    ok(keel_aclient_init(&l.ac, &loop, &o), "keel_aclient_init as alice");
    long long t0 = tc_now_ms();
    l.until = t0 + (REAUTH_TTL_S * 3 + 1) * 1000;
    for (int i = 0; i < REAUTH_INFLIGHT; i++)
        send_one(&l);
    run_until(&loop, load_over, &l, (REAUTH_TTL_S * 3 + 1) * 1000 + 30000);
    assert_true(load_over(&l));
    double secs = (double)(tc_now_ms() - t0) / 1000.0;
    struct keel_aclient_stats st;
    keel_aclient_stats(l.ac, &st);
    print_message("async: %u requests in %.1f s, %u failed (%s), %llu authentications\n",
                  l.answered, secs, l.failed, l.first_error,
                  (unsigned long long)st.authentications);
    if (l.failed != 0)
        fail_msg("%u of %u requests failed past the token's TTL: %s", l.failed, l.answered,
                 l.first_error);
    assert_true(l.answered > 100);
    /* The first, then one per expiry at least: the run outlived three TTLs. */
    assert_true(st.authentications >= 3);
    /* One per expiry, not one per refused request (8 in flight): a token lives 2 s. */
    assert_true(st.authentications <= (uint64_t)(secs / REAUTH_TTL_S) + 3);

    /* A watch created once the token has expired: refused for it, created again with a new one. */
    sleep(REAUTH_TTL_S + 1);
    uint64_t auths_before = st.authentications;
    struct keel_watch_opts wo = {.range_end = "b0", .range_end_len = 2, .created_notify = true};
    struct keel_watch *w = NULL;
    ok(keel_aclient_watch(l.ac, "b/", 2, &wo, on_load_event, &l, &w), "watch b/");
    run_until(&loop, watch_acknowledged, &l, 20000);
    assert_int_equal(l.watch_status, 0);
    assert_true(l.watch_created);
    ok(put(root, "b/watched"), "put b/watched");
    run_until(&loop, watch_delivered, &l, 20000);
    assert_int_equal(l.watch_status, 0);
    assert_true(l.watch_events >= 1);
    keel_aclient_stats(l.ac, &st);
    assert_true(st.authentications > auths_before);
    bool closed = false;
    keel_aclient_close(l.ac, close_done, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* The synchronous client: past the TTL, and keel_token follows. */
    struct keel *alice = must_open(&c, 0, "alice", ALICE_PW);
    char *tok1 = keel_token(alice);
    assert_non_null(tok1);
    sleep(REAUTH_TTL_S + 1);
    ok(get(alice, "a/1", NULL), "sync get past the TTL");
    ok(put(alice, "b/sync"), "sync put past the TTL");
    char *tok2 = keel_token(alice);
    assert_non_null(tok2);
    assert_string_not_equal(tok1, tok2);
    free(tok1);
    free(tok2);
    keel_close(alice);

    /* keel-bench --user past three TTLs: no error. */
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "%s --endpoints %s --user root:%s --duration %d --clients 8 --conns 2 put "
             ">%s/bench.out 2>&1",
             KEEL_BENCH_PATH, eps, ROOT_PW, REAUTH_TTL_S * 3 + 1, c.root);
    int rc = system(cmd);
    char path[700], out[8192] = "";
    snprintf(path, sizeof(path), "%s/bench.out", c.root);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        size_t n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        fclose(f);
    }
    if (rc != 0 || strstr(out, "error code") != NULL || strstr(out, "Requests/sec") == NULL)
        fail_msg("keel-bench --user past the TTL (exit %d):\n%s", rc, out);
    keel_close(root);
    tc_cluster_close(&c);
}

/* ---- a burst of password checks ---- */

#define BURST 100 /* Authenticates at once, on one connection: more than KEEL_AUTH_MAX_JOBS (64)   \
                   */

struct burst {
    unsigned answered, tokens, wrong, busy, other;
    char other_msg[256];
    char token[512];
};

static void burst_answered(int status, const Keel__Response *resp, void *data)
{
    struct burst *b = data;
    b->answered++;
    const char *msg = resp->error && resp->error->message ? resp->error->message : "";
    if (status == 0 && resp->authenticate != NULL && resp->authenticate->token != NULL &&
        resp->authenticate->token[0] != '\0') {
        if (b->tokens++ == 0)
            snprintf(b->token, sizeof(b->token), "%s", resp->authenticate->token);
    } else if (status == KEEL_EUNAUTHENTICATED &&
               strcmp(msg, "etcdserver: authentication failed, invalid user ID or password") == 0) {
        b->wrong++;
    } else if (status == KEEL_ETOOMANYREQUESTS) {
        b->busy++;
    } else if (b->other++ == 0) {
        snprintf(b->other_msg, sizeof(b->other_msg), "%s: %s", keel_strerror(status), msg);
    }
}

static bool burst_over(struct load *l)
{
    return ((struct burst *)(void *)l)->answered == BURST;
}

/* Every password check of a burst is answered, each for its own password: those past the
 * member's bound (64 in flight) with TOO_MANY_REQUESTS, the others checked in turn (only a few
 * at a time on libuv's pool, which raft's disk writes share); writes go on meanwhile. */
static void burst(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 3, "auth-burst");
    tc_start_all(&c);
    struct keel *root = set_up(&c);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char eps[512];
    tc_endpoints(&c, 0, eps, sizeof(eps));
    struct keel_options o = {.endpoints = eps, .request_timeout_ms = 30000};
    struct keel_aclient *ac = NULL;
    ok(keel_aclient_init(&ac, &loop, &o), "keel_aclient_init");
    struct burst b = {0};
    for (int i = 0; i < BURST; i++) {
        Keel__AuthenticateRequest ar = KEEL__AUTHENTICATE_REQUEST__INIT;
        ar.name = "alice";
        ar.password = i % 2 == 0 ? ALICE_PW : "not-her-password";
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_AUTHENTICATE;
        req.authenticate = &ar;
        ok(keel_aclient_request(ac, &req, 0, burst_answered, &b), "submit Authenticate");
    }
    /* While they are checked: writes are answered. */
    for (int i = 0; i < 20; i++)
        ok(put(root, "b/during-burst"), "put during the burst");
    run_until(&loop, burst_over, (struct load *)(void *)&b, 60000);
    print_message("burst: %u answered: %u tokens, %u wrong passwords, %u too many, %u other\n",
                  b.answered, b.tokens, b.wrong, b.busy, b.other);
    assert_int_equal(b.answered, BURST);
    if (b.other != 0)
        fail_msg("%u answers were neither a token, a wrong password nor too many: %s", b.other,
                 b.other_msg);
    /* More were checked than run on the pool at once, each getting its own answer. */
    assert_true(b.tokens >= 8 && b.wrong >= 8);
    assert_true(b.tokens <= BURST / 2 && b.wrong <= BURST / 2);
    /* A token of the burst works: alice reads a/1 with it. */
    ok(keel_aclient_set_token(ac, b.token), "keel_aclient_set_token");
    struct load l = {0};
    Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
    range.key = bytes_of("a/1");
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &range;
    ok(keel_aclient_request(ac, &req, 0, answered, &l), "get a/1 with a token of the burst");
    l.in_flight = 1;
    run_until(&loop, load_over, &l, 30000);
    assert_int_equal(l.answered, 1);
    if (l.failed != 0)
        fail_msg("get a/1 with a token of the burst: %s", l.first_error);
    bool closed = false;
    keel_aclient_close(ac, close_done, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    keel_close(root);
    tc_cluster_close(&c);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest rbac_t[] = {cmocka_unit_test(rbac)};
    const struct CMUnitTest persist_t[] = {cmocka_unit_test(persist)};
    const struct CMUnitTest reauth_t[] = {cmocka_unit_test(reauth)};
    const struct CMUnitTest burst_t[] = {cmocka_unit_test(burst)};
    const struct tu_group groups[] = {
        {"rbac", rbac_t, 1},
        {"persist", persist_t, 1},
        {"reauth", reauth_t, 1},
        {"burst", burst_t, 1},
    };
    return tu_run_groups("test_auth", argc, argv, groups, sizeof(groups) / sizeof(groups[0]));
}
