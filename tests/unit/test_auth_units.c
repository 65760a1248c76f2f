/*
 * The pure parts of auth (server/authperm.h, server/authcrypto.h): permission-range matching with
 * etcd's range conventions, the token codec (a flipped byte anywhere is refused), and password
 * hashes (right, wrong, malformed); and the store's side: auth changes applied, a write stamped
 * with an older auth revision refused (AUTH_OLD_REVISION) while auth is enabled, a password never
 * let into the log.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"
#include "authcrypto.h"
#include "authperm.h"
#include "err.h"
#include "store.h"
#include "testutil.h"

static ProtobufCBinaryData B(const char *s)
{
    return (ProtobufCBinaryData){strlen(s), (uint8_t *)s};
}

static const ProtobufCBinaryData NONE = {0, NULL};
static const ProtobufCBinaryData FROM = {1, (uint8_t *)""}; /* "\0": every key >= key */

static Keel__Permission perm(Keel__Permission__Type t, const char *key, ProtobufCBinaryData end)
{
    Keel__Permission p = KEEL__PERMISSION__INIT;
    p.permtype = t;
    p.key = B(key);
    p.range_end = end;
    return p;
}

/* Whether the set built from ps (of type want) allows [key, end). */
static bool allows(Keel__Permission *ps, size_t n, Keel__Permission__Type want, const char *key,
                   ProtobufCBinaryData end)
{
    Keel__Permission *ptrs[16];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &ps[i];
    struct keel_arena a;
    keel_arena_init(&a, 0);
    struct keel_permset s;
    assert_int_equal(keel_permset_build(ptrs, n, want, &a, &s), 0);
    ProtobufCBinaryData k = B(key);
    bool ok = keel_permset_allows(&s, &k, &end);
    keel_arena_close(&a);
    return ok;
}

#define R KEEL__PERMISSION__TYPE__READ
#define W KEEL__PERMISSION__TYPE__WRITE

static void single_key(void **state)
{
    (void)state;
    Keel__Permission p[] = {perm(R, "k", NONE)};
    assert_true(allows(p, 1, R, "k", NONE));
    assert_false(allows(p, 1, R, "k0", NONE));
    assert_false(allows(p, 1, R, "j", NONE));
    assert_false(allows(p, 1, W, "k", NONE));       /* READ grants no WRITE */
    assert_false(allows(p, 1, R, "k", B("l")));     /* a range past the key */
    assert_false(allows(p, 1, R, "k", B("k\x01"))); /* [k, k\x01) holds k\0 too */
    Keel__Permission q[] = {perm(R, "k", NONE)};
    /* k\0 is not k. */
    ProtobufCBinaryData kz = {2, (uint8_t *)"k\0"};
    struct keel_arena a;
    keel_arena_init(&a, 0);
    Keel__Permission *pq = &q[0];
    struct keel_permset s;
    assert_int_equal(keel_permset_build(&pq, 1, R, &a, &s), 0);
    assert_false(keel_permset_allows(&s, &kz, &NONE));
    keel_arena_close(&a);
}

static void ranges_and_prefixes(void **state)
{
    (void)state;
    /* [a, c) */
    Keel__Permission p[] = {perm(KEEL__PERMISSION__TYPE__READWRITE, "a", B("c"))};
    assert_true(allows(p, 1, R, "a", NONE));
    assert_true(allows(p, 1, W, "bzzz", NONE));
    assert_false(allows(p, 1, R, "c", NONE));
    assert_true(allows(p, 1, R, "a", B("c")));
    assert_true(allows(p, 1, R, "b", B("bz")));
    assert_false(allows(p, 1, R, "b", B("d")));
    assert_false(allows(p, 1, R, "a", FROM)); /* every key >= a: more than [a, c) */
    /* The prefix a/ is [a/, a0). */
    Keel__Permission q[] = {perm(R, "a/", B("a0"))};
    assert_true(allows(q, 1, R, "a/x", NONE));
    assert_true(allows(q, 1, R, "a/", B("a0")));
    assert_true(allows(q, 1, R, "a/b/", B("a/b0")));
    assert_false(allows(q, 1, R, "a", NONE));
    assert_false(allows(q, 1, R, "a0", NONE));
    assert_false(allows(q, 1, R, "a/", FROM));
    /* Two adjacent ranges cover a range across both; a gap does not. */
    Keel__Permission adj[] = {perm(R, "a", B("b")), perm(R, "b", B("c"))};
    assert_true(allows(adj, 2, R, "a", B("c")));
    Keel__Permission gap[] = {perm(R, "a", B("b")), perm(R, "b1", B("c"))};
    assert_false(allows(gap, 2, R, "a", B("c")));
    assert_true(allows(gap, 2, R, "b1", B("bz")));
    assert_false(allows(gap, 2, R, "b0", NONE));
    /* Overlapping and nested ones merge. */
    Keel__Permission ov[] = {perm(R, "a", B("m")), perm(R, "c", B("d")), perm(R, "k", B("z"))};
    assert_true(allows(ov, 3, R, "b", B("y")));
    assert_false(allows(ov, 3, R, "b", B("zz")));
}

static void from_key(void **state)
{
    (void)state;
    Keel__Permission p[] = {perm(W, "m", FROM)};
    assert_true(allows(p, 1, W, "m", NONE));
    assert_true(allows(p, 1, W, "zzzz", NONE));
    assert_true(allows(p, 1, W, "m", FROM));
    assert_true(allows(p, 1, W, "x", B("y")));
    assert_false(allows(p, 1, W, "l", NONE));
    assert_false(allows(p, 1, W, "l", FROM));
    assert_false(allows(p, 1, R, "m", NONE));
    /* Every key: "\0" from "\0" (etcdctl's --from-key ""). */
    Keel__Permission all[] = {perm(R, "\x01", FROM)};
    all[0].key = (ProtobufCBinaryData){1, (uint8_t *)""};
    assert_true(allows(all, 1, R, "anything", NONE));
    assert_true(allows(all, 1, R, "a", FROM));
}

static void empty(void **state)
{
    (void)state;
    /* No permission: nothing. */
    assert_false(allows(NULL, 0, R, "a", NONE));
    assert_false(allows(NULL, 0, R, "a", FROM));
    /* A permission whose end is not after its key grants nothing. */
    Keel__Permission p[] = {perm(R, "b", B("a")), perm(R, "c", B("c"))};
    assert_false(allows(p, 2, R, "b", NONE));
    assert_false(allows(p, 2, R, "c", NONE));
    /* An empty request range is checked as its key. */
    Keel__Permission q[] = {perm(R, "k", NONE)};
    assert_true(allows(q, 1, R, "k", B("a")));
    assert_false(allows(q, 1, R, "l", B("a")));
}

static const uint8_t KEY[32] = "0123456789abcdef0123456789abcdef";

static void token_round_trip(void **state)
{
    (void)state;
    char tok[KEEL_AUTH_TOKEN_MAX], user[KEEL_AUTH_NAME_MAX + 1];
    uint64_t rev, exp;
    assert_int_equal(keel_auth_token_make(KEY, 32, "alice", 42, 1234567890123ull, tok), 0);
    assert_int_equal(keel_auth_token_parse(KEY, 32, tok, user, &rev, &exp), 0);
    assert_string_equal(user, "alice");
    assert_int_equal(rev, 42);
    assert_int_equal(exp, 1234567890123ull);
    /* Another key: refused. */
    uint8_t other[32];
    memcpy(other, KEY, 32);
    other[31] ^= 1;
    assert_int_equal(keel_auth_token_parse(other, 32, tok, user, &rev, &exp),
                     KEEL_EUNAUTHENTICATED);
    /* A name too long or empty is not made. */
    char longname[KEEL_AUTH_NAME_MAX + 2];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(keel_auth_token_make(KEY, 32, longname, 1, 1, tok), KEEL_EINVAL);
    assert_int_equal(keel_auth_token_make(KEY, 32, "", 1, 1, tok), KEEL_EINVAL);
    /* The longest name round-trips. */
    longname[KEEL_AUTH_NAME_MAX] = '\0';
    assert_int_equal(keel_auth_token_make(KEY, 32, longname, 7, 9, tok), 0);
    assert_true(strlen(tok) < KEEL_AUTH_TOKEN_MAX);
    assert_int_equal(keel_auth_token_parse(KEY, 32, tok, user, &rev, &exp), 0);
    assert_string_equal(user, longname);
}

static void token_tampered(void **state)
{
    (void)state;
    char tok[KEEL_AUTH_TOKEN_MAX], user[KEEL_AUTH_NAME_MAX + 1];
    uint64_t rev, exp;
    assert_int_equal(keel_auth_token_make(KEY, 32, "bob", 5, 99999, tok), 0);
    size_t n = strlen(tok);
    /* Every hex digit changed, one at a time: each refused (expiry, revision, name, MAC). */
    for (size_t i = 0; i < n; i++) {
        char t[KEEL_AUTH_TOKEN_MAX];
        memcpy(t, tok, n + 1);
        t[i] = t[i] == '0' ? '1' : '0';
        assert_int_equal(keel_auth_token_parse(KEY, 32, t, user, &rev, &exp),
                         KEEL_EUNAUTHENTICATED);
    }
    /* Cut, extended, not hex, empty, NULL. */
    char t[KEEL_AUTH_TOKEN_MAX + 8];
    memcpy(t, tok, n + 1);
    t[n - 2] = '\0';
    assert_int_equal(keel_auth_token_parse(KEY, 32, t, user, &rev, &exp), KEEL_EUNAUTHENTICATED);
    memcpy(t, tok, n);
    memcpy(t + n, "00", 3);
    assert_int_equal(keel_auth_token_parse(KEY, 32, t, user, &rev, &exp), KEEL_EUNAUTHENTICATED);
    memcpy(t, tok, n + 1);
    t[3] = 'g';
    assert_int_equal(keel_auth_token_parse(KEY, 32, t, user, &rev, &exp), KEEL_EUNAUTHENTICATED);
    assert_int_equal(keel_auth_token_parse(KEY, 32, "", user, &rev, &exp), KEEL_EUNAUTHENTICATED);
    assert_int_equal(keel_auth_token_parse(KEY, 32, NULL, user, &rev, &exp), KEEL_EUNAUTHENTICATED);
    /* No key (auth never enabled): nothing verifies. */
    assert_int_equal(keel_auth_token_parse(KEY, 0, tok, user, &rev, &exp), KEEL_EUNAUTHENTICATED);
}

static void password_hash(void **state)
{
    (void)state;
    char h[KEEL_AUTH_HASH_MAX], h2[KEEL_AUTH_HASH_MAX];
    assert_int_equal(keel_auth_hash("s3cret", h), 0);
    assert_non_null(strstr(h, "pbkdf2-sha256$10000$"));
    assert_null(strstr(h, "s3cret"));
    assert_true(keel_auth_hash_valid(h));
    assert_true(keel_auth_hash_check("s3cret", h));
    assert_false(keel_auth_hash_check("s3creT", h));
    assert_false(keel_auth_hash_check("", h));
    /* A fresh salt each time: the same password hashes differently. */
    assert_int_equal(keel_auth_hash("s3cret", h2), 0);
    assert_string_not_equal(h, h2);
    assert_true(keel_auth_hash_check("s3cret", h2));
    /* Malformed or missing (no such user): false, after the same work. */
    assert_false(keel_auth_hash_check("s3cret", NULL));
    assert_false(keel_auth_hash_check("s3cret", "plain"));
    assert_false(keel_auth_hash_valid("pbkdf2-sha256$5$00$00"));
    assert_false(
        keel_auth_hash_valid("pbkdf2-sha256$99999999999$" /* too many iterations */
                             "00000000000000000000000000000000$"
                             "0000000000000000000000000000000000000000000000000000000000000000"));
    h[strlen(h) - 1] = 'x';
    assert_false(keel_auth_hash_valid(h));
    assert_false(keel_auth_hash_check("s3cret", h));
}

/* Apply cmd (an auth op or a write) at index; the result's error. */
static int apply(struct keel_store *s, uint64_t index, Keel__Command *cmd, struct keel_arena *a)
{
    struct keel_apply_result res;
    tu_apply(s, index, cmd, a, &res);
    return res.err;
}

static void store_side(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("auth-store");
    struct keel_store *s = tu_store_open(dir, 0);
    struct keel_arena a;
    keel_arena_init(&a, 0);
    char h[KEEL_AUTH_HASH_MAX];
    assert_int_equal(keel_auth_hash("pw", h), 0);
    uint64_t idx = 1;

    Keel__UserAddRequest ua = KEEL__USER_ADD_REQUEST__INIT;
    ua.name = "root";
    ua.password = "pw";
    ua.hashed_password = h;
    Keel__Command c = KEEL__COMMAND__INIT;
    c.op_case = KEEL__COMMAND__OP_USER_ADD;
    c.user_add = &ua;
    const char *msg = NULL;
    /* A password in a command is refused: only the hash may enter the log. */
    assert_int_equal(keel_store_validate(&c, NULL, &msg), KEEL_EINVAL);
    assert_int_equal(apply(s, idx++, &c, &a), KEEL_EINVAL);
    ua.password = "";
    assert_int_equal(apply(s, idx++, &c, &a), 0);
    Keel__UserGrantRoleRequest gr = KEEL__USER_GRANT_ROLE_REQUEST__INIT;
    gr.user = "root";
    gr.role = "root";
    c.op_case = KEEL__COMMAND__OP_USER_GRANT_ROLE;
    c.user_grant_role = &gr;
    assert_int_equal(apply(s, idx++, &c, &a), 0);
    Keel__AuthEnableRequest en = KEEL__AUTH_ENABLE_REQUEST__INIT;
    uint8_t key[KEEL_AUTH_KEY_BYTES] = {7};
    en.signing_key = (ProtobufCBinaryData){sizeof(key), key};
    c.op_case = KEEL__COMMAND__OP_AUTH_ENABLE;
    c.auth_enable = &en;
    assert_int_equal(apply(s, idx++, &c, &a), 0);
    uint64_t rev;
    bool enabled;
    keel_store_auth_revision(s, &rev, &enabled);
    assert_true(enabled);
    assert_int_equal(rev, 3);
    struct keel_store_auth st;
    assert_int_equal(keel_store_auth_read(s, &a, &st), 0);
    assert_int_equal(st.n_users, 1);
    assert_string_equal(st.users[0]->hashed_password, h);
    assert_int_equal(st.users[0]->n_roles, 1);
    assert_int_equal(st.key.len, sizeof(key));
    /* What changes nothing (etcd's no-ops) is answered as done and keeps the revision: a role
     * granted again, auth enabled again. */
    c.op_case = KEEL__COMMAND__OP_USER_GRANT_ROLE;
    c.user_grant_role = &gr;
    assert_int_equal(apply(s, idx++, &c, &a), 0);
    c.op_case = KEEL__COMMAND__OP_AUTH_ENABLE;
    c.auth_enable = &en;
    assert_int_equal(apply(s, idx++, &c, &a), 0);
    keel_store_auth_revision(s, &rev, &enabled);
    assert_true(enabled);
    assert_int_equal(rev, 3);

    /* A write checked against auth revision 2 comes after 3: refused, nothing done. */
    Keel__Command *put = tu_cmd_put(&a, "k", "v");
    Keel__AuthInfo ai = KEEL__AUTH_INFO__INIT;
    ai.user = "root";
    ai.revision = 2;
    put->auth = &ai;
    assert_int_equal(apply(s, idx++, put, &a), KEEL_EAUTHOLDREV);
    struct keel_store_stat ss;
    keel_store_stat(s, &ss);
    assert_int_equal(ss.revision, 0);
    ai.revision = 3;
    assert_int_equal(apply(s, idx++, put, &a), 0);
    /* keeld's own commands carry no stamp: never refused. */
    put->auth = NULL;
    assert_int_equal(apply(s, idx++, put, &a), 0);
    /* Root stays root while auth is on. */
    Keel__UserDeleteRequest ud = KEEL__USER_DELETE_REQUEST__INIT;
    ud.name = "root";
    c.op_case = KEEL__COMMAND__OP_USER_DELETE;
    c.user_delete = &ud;
    assert_int_equal(apply(s, idx++, &c, &a), KEEL_EINVAL);
    /* Disabled: stamps no longer matter. */
    Keel__AuthDisableRequest dis = KEEL__AUTH_DISABLE_REQUEST__INIT;
    c.op_case = KEEL__COMMAND__OP_AUTH_DISABLE;
    c.auth_disable = &dis;
    assert_int_equal(apply(s, idx++, &c, &a), 0);
    assert_int_equal(apply(s, idx++, &c, &a), 0); /* disabled again: no change */
    ai.revision = 0;
    put->auth = &ai;
    assert_int_equal(apply(s, idx++, put, &a), 0);
    /* Reopened: the same state. */
    keel_store_close(s);
    s = tu_store_open(dir, 0);
    keel_store_auth_revision(s, &rev, &enabled);
    assert_false(enabled);
    assert_int_equal(rev, 4);
    keel_store_close(s);
    keel_arena_close(&a);
    tu_rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_key),       cmocka_unit_test(ranges_and_prefixes),
        cmocka_unit_test(from_key),         cmocka_unit_test(empty),
        cmocka_unit_test(token_round_trip), cmocka_unit_test(token_tampered),
        cmocka_unit_test(password_hash),    cmocka_unit_test(store_side),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
