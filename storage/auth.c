/*
 * The auth tables: applying auth changes, reading them back.
 *
 * One small table, "auth": "u" + name -> packed AuthUser, "r" + name -> packed AuthRole, "k" ->
 * the token-signing key; the flag and the auth revision live in meta. Every change is checked
 * against the state before it writes anything, with etcd's answers, and bumps the auth revision
 * by one unless it changes nothing (a role granted already, auth enabled or disabled when it is:
 * etcd's no-ops); nothing here takes a KV revision or makes an event. Apply never hashes: a user's
 * hashed_password arrives computed in the Command (server/auth.c hashed it at intake).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ROOT "root"

static const char *const E_USER_EXISTS = "etcdserver: user name already exists";
static const char *const E_USER_NOT_FOUND = "etcdserver: user name not found";
static const char *const E_ROLE_EXISTS = "etcdserver: role name already exists";
static const char *const E_ROLE_NOT_FOUND = "etcdserver: role name not found";
static const char *const E_ROLE_NOT_GRANTED = "etcdserver: role is not granted to the user";
static const char *const E_PERM_NOT_GRANTED = "etcdserver: permission is not granted to the role";
static const char *const E_AUTH_MGMT = "etcdserver: invalid auth management";

bool ks_auth_is_change(const Keel__Command *cmd)
{
    switch (cmd->op_case) {
    case KEEL__COMMAND__OP_AUTH_ENABLE:
    case KEEL__COMMAND__OP_AUTH_DISABLE:
    case KEEL__COMMAND__OP_USER_ADD:
    case KEEL__COMMAND__OP_USER_DELETE:
    case KEEL__COMMAND__OP_USER_CHANGE_PASSWORD:
    case KEEL__COMMAND__OP_USER_GRANT_ROLE:
    case KEEL__COMMAND__OP_USER_REVOKE_ROLE:
    case KEEL__COMMAND__OP_ROLE_ADD:
    case KEEL__COMMAND__OP_ROLE_DELETE:
    case KEEL__COMMAND__OP_ROLE_GRANT_PERMISSION:
    case KEEL__COMMAND__OP_ROLE_REVOKE_PERMISSION:
        return true;
    default:
        return false;
    }
}

/* ---- records ---- */

/* The table key of a user ('u') or role ('r'): kind byte then the name. */
static MDB_val rec_key(uint8_t *buf, char kind, const char *name)
{
    size_t n = strlen(name);
    buf[0] = (uint8_t)kind;
    memcpy(buf + 1, name, n);
    return (MDB_val){n + 1, buf};
}

/* The record of kind/name unpacked into the arena; *out NULL when there is none. */
static int rec_get(struct wctx *c, char kind, const char *name,
                   const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    uint8_t buf[1 + KEEL_AUTH_MAX_NAME];
    *out = NULL;
    if (strlen(name) > KEEL_AUTH_MAX_NAME)
        return 0;
    MDB_val k = rec_key(buf, kind, name), v;
    int rc = mdb_get(c->t->txn, c->t->s->dbi_auth, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc != 0)
        return ks_mdb_err(rc);
    *out = protobuf_c_message_unpack(desc, keel_arena_pb(c->a), v.mv_size, v.mv_data);
    return *out != NULL ? 0 : KEEL_ECORRUPT;
}

static int table_put(struct wctx *c, const MDB_val *key, const ProtobufCMessage *msg)
{
    MDB_val k = *key, v = {protobuf_c_message_get_packed_size(msg), NULL};
    int rc = mdb_put(c->t->txn, c->t->s->dbi_auth, &k, &v, MDB_RESERVE);
    if (rc != 0)
        return ks_mdb_err(rc);
    protobuf_c_message_pack(msg, v.mv_data);
    if (c->t->note != NULL)
        return ks_overlay_note_op(c->t->note, OV_AUTH, OV_PUT, &k, &v);
    return 0;
}

static int rec_put(struct wctx *c, char kind, const char *name, const ProtobufCMessage *msg)
{
    uint8_t buf[1 + KEEL_AUTH_MAX_NAME];
    MDB_val k = rec_key(buf, kind, name);
    return table_put(c, &k, msg);
}

static int rec_del(struct wctx *c, char kind, const char *name)
{
    uint8_t buf[1 + KEEL_AUTH_MAX_NAME];
    MDB_val k = rec_key(buf, kind, name);
    int rc = mdb_del(c->t->txn, c->t->s->dbi_auth, &k, NULL);
    if (rc != 0)
        return ks_mdb_err(rc);
    if (c->t->note != NULL)
        return ks_overlay_note_op(c->t->note, OV_AUTH, OV_DEL, &k, NULL);
    return 0;
}

/* Records of one kind: counted, and with each() called on every one unpacked (each may be
 * NULL). Tables are bounded (store.h), so a walk is cheap next to the change it guards. */
static int rec_walk(struct wctx *c, char kind, const ProtobufCMessageDescriptor *desc,
                    int (*each)(struct wctx *c, ProtobufCMessage *m, void *arg), void *arg,
                    size_t *count)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(c->t->txn, c->t->s->dbi_auth, &cur);
    if (rc != 0)
        return ks_mdb_err(rc);
    uint8_t first = (uint8_t)kind;
    MDB_val k = {1, &first}, v;
    size_t n = 0;
    int err = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && err == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 1 || ((const uint8_t *)k.mv_data)[0] != (uint8_t)kind)
            break;
        n++;
        if (each == NULL)
            continue;
        ProtobufCMessage *m =
            protobuf_c_message_unpack(desc, keel_arena_pb(c->a), v.mv_size, v.mv_data);
        err = m != NULL ? each(c, m, arg) : KEEL_ECORRUPT;
    }
    mdb_cursor_close(cur);
    if (err == 0 && rc != 0 && rc != MDB_NOTFOUND)
        err = ks_mdb_err(rc);
    if (count != NULL)
        *count = n;
    return err;
}

static Keel__AuthUser *user_get(struct wctx *c, const char *name, int *err)
{
    ProtobufCMessage *m;
    *err = rec_get(c, 'u', name, &keel__auth_user__descriptor, &m);
    return (Keel__AuthUser *)m;
}

static Keel__AuthRole *role_get(struct wctx *c, const char *name, int *err)
{
    ProtobufCMessage *m;
    *err = rec_get(c, 'r', name, &keel__auth_role__descriptor, &m);
    return (Keel__AuthRole *)m;
}

static int fail(const char **msg, const char *m)
{
    *msg = m;
    return KEEL_EINVAL;
}

static bool has_role(const Keel__AuthUser *u, const char *role)
{
    for (size_t i = 0; i < u->n_roles; i++)
        if (strcmp(u->roles[i], role) == 0)
            return true;
    return false;
}

/* ---- the changes ---- */

static int user_add(struct wctx *c, const Keel__UserAddRequest *r, const char **msg)
{
    int err;
    if (user_get(c, r->name, &err) != NULL || err != 0)
        return err != 0 ? err : fail(msg, E_USER_EXISTS);
    size_t n;
    if ((err = rec_walk(c, 'u', NULL, NULL, NULL, &n)) != 0)
        return err;
    if (n >= KEEL_AUTH_MAX_USERS)
        return fail(msg, "etcdserver: too many users (at most 4096)");
    Keel__AuthUser u = KEEL__AUTH_USER__INIT;
    u.name = r->name;
    u.hashed_password = r->hashed_password;
    u.revision = c->m->auth_revision + 1;
    return rec_put(c, 'u', r->name, &u.base);
}

static int user_delete(struct wctx *c, const char *name, const char **msg)
{
    int err;
    if (c->m->auth_enabled && strcmp(name, ROOT) == 0)
        return fail(msg, E_AUTH_MGMT);
    if (user_get(c, name, &err) == NULL)
        return err != 0 ? err : fail(msg, E_USER_NOT_FOUND);
    return rec_del(c, 'u', name);
}

static int user_passwd(struct wctx *c, const Keel__UserChangePasswordRequest *r, const char **msg)
{
    int err;
    Keel__AuthUser *u = user_get(c, r->name, &err);
    if (u == NULL)
        return err != 0 ? err : fail(msg, E_USER_NOT_FOUND);
    u->hashed_password = r->hashed_password;
    u->revision = c->m->auth_revision + 1; /* its earlier tokens are no longer valid */
    return rec_put(c, 'u', r->name, &u->base);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A change that changes nothing (etcd: a role granted already, auth enabled when it is): answered
 * as done, without a new auth revision, so that requests checked at the current one stand. */
#define UNCHANGED 1

static int user_grant(struct wctx *c, const Keel__UserGrantRoleRequest *r, const char **msg)
{
    int err;
    Keel__AuthUser *u = user_get(c, r->user, &err);
    if (u == NULL)
        return err != 0 ? err : fail(msg, E_USER_NOT_FOUND);
    /* root is built in: it needs no role record. */
    if (strcmp(r->role, ROOT) != 0 && role_get(c, r->role, &err) == NULL)
        return err != 0 ? err : fail(msg, E_ROLE_NOT_FOUND);
    if (has_role(u, r->role))
        return UNCHANGED;
    if (u->n_roles >= KEEL_AUTH_MAX_ROLES_PER_USER)
        return fail(msg, "etcdserver: too many roles granted to the user (at most 64)");
    char **roles = keel_arena_alloc(c->a, (u->n_roles + 1) * sizeof(*roles));
    if (roles == NULL)
        return KEEL_ENOMEM;
    if (u->n_roles > 0)
        memcpy(roles, u->roles, u->n_roles * sizeof(*roles));
    roles[u->n_roles] = r->role;
    u->roles = roles;
    u->n_roles++;
    qsort(u->roles, u->n_roles, sizeof(*u->roles), cmp_str);
    return rec_put(c, 'u', u->name, &u->base);
}

/* Take role off u; false when u did not have it. */
static bool drop_role(Keel__AuthUser *u, const char *role)
{
    for (size_t i = 0; i < u->n_roles; i++) {
        if (strcmp(u->roles[i], role) == 0) {
            memmove(&u->roles[i], &u->roles[i + 1], (u->n_roles - i - 1) * sizeof(*u->roles));
            u->n_roles--;
            return true;
        }
    }
    return false;
}

static int user_revoke(struct wctx *c, const Keel__UserRevokeRoleRequest *r, const char **msg)
{
    int err;
    if (c->m->auth_enabled && strcmp(r->name, ROOT) == 0 && strcmp(r->role, ROOT) == 0)
        return fail(msg, E_AUTH_MGMT);
    Keel__AuthUser *u = user_get(c, r->name, &err);
    if (u == NULL)
        return err != 0 ? err : fail(msg, E_USER_NOT_FOUND);
    if (!drop_role(u, r->role))
        return fail(msg, E_ROLE_NOT_GRANTED);
    return rec_put(c, 'u', u->name, &u->base);
}

static int role_add(struct wctx *c, const char *name, const char **msg)
{
    int err;
    if (role_get(c, name, &err) != NULL || err != 0)
        return err != 0 ? err : fail(msg, E_ROLE_EXISTS);
    size_t n;
    if ((err = rec_walk(c, 'r', NULL, NULL, NULL, &n)) != 0)
        return err;
    if (n >= KEEL_AUTH_MAX_ROLES)
        return fail(msg, "etcdserver: too many roles (at most 256)");
    Keel__AuthRole r = KEEL__AUTH_ROLE__INIT;
    r.name = (char *)name;
    return rec_put(c, 'r', name, &r.base);
}

struct strip {
    const char *role;
    struct pvec users; /* those that held it, to write once the walk is over */
};

static int strip_role(struct wctx *c, ProtobufCMessage *m, void *arg)
{
    struct strip *st = arg;
    return drop_role((Keel__AuthUser *)m, st->role) ? ks_pvec_push(c->a, &st->users, m) : 0;
}

static int role_delete(struct wctx *c, const char *name, const char **msg)
{
    int err;
    if (c->m->auth_enabled && strcmp(name, ROOT) == 0)
        return fail(msg, E_AUTH_MGMT);
    if (role_get(c, name, &err) == NULL)
        return err != 0 ? err : fail(msg, E_ROLE_NOT_FOUND);
    if ((err = rec_del(c, 'r', name)) != 0)
        return err;
    /* As etcd: the users holding it lose it. */
    struct strip st = {.role = name};
    err = rec_walk(c, 'u', &keel__auth_user__descriptor, strip_role, &st, NULL);
    for (size_t i = 0; err == 0 && i < st.users.n; i++) {
        Keel__AuthUser *u = st.users.v[i];
        err = rec_put(c, 'u', u->name, &u->base);
    }
    return err;
}

static bool same_bytes(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static int cmp_perm(const void *a, const void *b)
{
    const Keel__Permission *x = *(Keel__Permission *const *)a, *y = *(Keel__Permission *const *)b;
    MDB_val xk = {x->key.len, x->key.data}, yk = {y->key.len, y->key.data};
    int c = ks_val_cmp(&xk, &yk);
    if (c != 0)
        return c;
    MDB_val xe = {x->range_end.len, x->range_end.data}, ye = {y->range_end.len, y->range_end.data};
    return ks_val_cmp(&xe, &ye);
}

static int role_grant(struct wctx *c, const Keel__RoleGrantPermissionRequest *r, const char **msg)
{
    int err;
    Keel__AuthRole *role = role_get(c, r->name, &err);
    if (role == NULL)
        return err != 0 ? err : fail(msg, E_ROLE_NOT_FOUND);
    /* The same range again changes its type, as etcd does. */
    for (size_t i = 0; i < role->n_perms; i++) {
        Keel__Permission *p = role->perms[i];
        if (same_bytes(&p->key, &r->perm->key) && same_bytes(&p->range_end, &r->perm->range_end)) {
            p->permtype = r->perm->permtype;
            return rec_put(c, 'r', role->name, &role->base);
        }
    }
    if (role->n_perms >= KEEL_AUTH_MAX_PERMS_PER_ROLE)
        return fail(msg, "etcdserver: too many permissions in the role (at most 256)");
    Keel__Permission **perms = keel_arena_alloc(c->a, (role->n_perms + 1) * sizeof(*perms));
    if (perms == NULL)
        return KEEL_ENOMEM;
    if (role->n_perms > 0)
        memcpy(perms, role->perms, role->n_perms * sizeof(*perms));
    perms[role->n_perms] = r->perm;
    role->perms = perms;
    role->n_perms++;
    qsort(role->perms, role->n_perms, sizeof(*role->perms), cmp_perm);
    return rec_put(c, 'r', role->name, &role->base);
}

static int role_revoke(struct wctx *c, const Keel__RoleRevokePermissionRequest *r, const char **msg)
{
    int err;
    Keel__AuthRole *role = role_get(c, r->role, &err);
    if (role == NULL)
        return err != 0 ? err : fail(msg, E_ROLE_NOT_FOUND);
    for (size_t i = 0; i < role->n_perms; i++) {
        Keel__Permission *p = role->perms[i];
        if (same_bytes(&p->key, &r->key) && same_bytes(&p->range_end, &r->range_end)) {
            memmove(&role->perms[i], &role->perms[i + 1],
                    (role->n_perms - i - 1) * sizeof(*role->perms));
            role->n_perms--;
            return rec_put(c, 'r', role->name, &role->base);
        }
    }
    return fail(msg, E_PERM_NOT_GRANTED);
}

static int auth_enable(struct wctx *c, const Keel__AuthEnableRequest *r, const char **msg)
{
    if (c->m->auth_enabled)
        return UNCHANGED;
    int err;
    Keel__AuthUser *root = user_get(c, ROOT, &err);
    if (root == NULL)
        return err != 0 ? err : fail(msg, "etcdserver: root user does not exist");
    if (!has_role(root, ROOT))
        return fail(msg, "etcdserver: root user does not have root role");
    uint8_t kk = 'k';
    MDB_val k = {1, &kk}, v;
    int rc = mdb_get(c->t->txn, c->t->s->dbi_auth, &k, &v);
    if (rc == MDB_NOTFOUND) {
        /* The first enable's key is kept for good: tokens outlive a disable and enable. */
        if (r->signing_key.len != KEEL_AUTH_KEY_BYTES)
            return fail(msg, "auth enable carries no token-signing key");
        v = (MDB_val){r->signing_key.len, r->signing_key.data};
        if ((rc = mdb_put(c->t->txn, c->t->s->dbi_auth, &k, &v, 0)) != 0)
            return ks_mdb_err(rc);
        if (c->t->note != NULL && (err = ks_overlay_note_op(c->t->note, OV_AUTH, OV_PUT, &k, &v)))
            return err;
    } else if (rc != 0) {
        return ks_mdb_err(rc);
    }
    c->m->auth_enabled = 1;
    return 0;
}

int ks_auth_apply(struct wctx *c, const Keel__Command *cmd, Keel__Response *resp, const char **msg)
{
    int err;
    switch (cmd->op_case) {
    case KEEL__COMMAND__OP_AUTH_ENABLE:
        err = auth_enable(c, cmd->auth_enable, msg);
        break;
    case KEEL__COMMAND__OP_AUTH_DISABLE:
        err = c->m->auth_enabled ? 0 : UNCHANGED;
        c->m->auth_enabled = 0;
        break;
    case KEEL__COMMAND__OP_USER_ADD:
        err = user_add(c, cmd->user_add, msg);
        break;
    case KEEL__COMMAND__OP_USER_DELETE:
        err = user_delete(c, cmd->user_delete->name, msg);
        break;
    case KEEL__COMMAND__OP_USER_CHANGE_PASSWORD:
        err = user_passwd(c, cmd->user_change_password, msg);
        break;
    case KEEL__COMMAND__OP_USER_GRANT_ROLE:
        err = user_grant(c, cmd->user_grant_role, msg);
        break;
    case KEEL__COMMAND__OP_USER_REVOKE_ROLE:
        err = user_revoke(c, cmd->user_revoke_role, msg);
        break;
    case KEEL__COMMAND__OP_ROLE_ADD:
        err = role_add(c, cmd->role_add->name, msg);
        break;
    case KEEL__COMMAND__OP_ROLE_DELETE:
        err = role_delete(c, cmd->role_delete->role, msg);
        break;
    case KEEL__COMMAND__OP_ROLE_GRANT_PERMISSION:
        err = role_grant(c, cmd->role_grant_permission, msg);
        break;
    case KEEL__COMMAND__OP_ROLE_REVOKE_PERMISSION:
        err = role_revoke(c, cmd->role_revoke_permission, msg);
        break;
    default:
        return KEEL_EUNSUPPORTED;
    }
    if (err < 0)
        return err;
    if (err != UNCHANGED)
        c->m->auth_revision++;
    resp->body_case = KEEL__RESPONSE__BODY_AUTH_EMPTY;
    resp->auth_empty = keel_arena_alloc(c->a, sizeof(*resp->auth_empty));
    if (resp->auth_empty == NULL)
        return KEEL_ENOMEM;
    keel__auth_empty_response__init(resp->auth_empty);
    return 0;
}

/* ---- reads ---- */

struct raw {
    MDB_val k, v;
};

static int copy_pair(const MDB_val *k, const MDB_val *v, void *slot, struct keel_arena *a)
{
    struct raw *r = slot;
    r->k.mv_size = k->mv_size;
    r->v.mv_size = v->mv_size;
    r->k.mv_data = keel_arena_memdup(a, k->mv_data, k->mv_size);
    r->v.mv_data = keel_arena_memdup(a, v->mv_data, v->mv_size);
    return r->k.mv_data && r->v.mv_data ? 0 : KEEL_ENOMEM;
}

int keel_store_auth_read(struct keel_store *s, struct keel_arena *arena,
                         struct keel_store_auth *out)
{
    memset(out, 0, sizeof(*out));
    struct raw *recs;
    size_t n;
    struct meta m;
    int err = ks_scan_table(s, s->dbi_auth, OV_AUTH, arena, sizeof(*recs), copy_pair,
                            (void **)&recs, &n, &m);
    if (err != 0)
        return err;
    out->enabled = m.auth_enabled != 0;
    out->revision = m.auth_revision;
    out->users = keel_arena_alloc(arena, (n + 1) * sizeof(*out->users));
    out->roles = keel_arena_alloc(arena, (n + 1) * sizeof(*out->roles));
    if (out->users == NULL || out->roles == NULL)
        return KEEL_ENOMEM;
    /* Records come in key order: users and roles each in name order. */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *k = recs[i].k.mv_data;
        if (recs[i].k.mv_size < 1)
            return KEEL_ECORRUPT;
        if (k[0] == 'k' && recs[i].k.mv_size == 1) {
            out->key.data = recs[i].v.mv_data;
            out->key.len = recs[i].v.mv_size;
        } else if (k[0] == 'u') {
            Keel__AuthUser *u =
                keel__auth_user__unpack(keel_arena_pb(arena), recs[i].v.mv_size, recs[i].v.mv_data);
            if (u == NULL)
                return KEEL_ECORRUPT;
            out->users[out->n_users++] = u;
        } else if (k[0] == 'r') {
            Keel__AuthRole *r =
                keel__auth_role__unpack(keel_arena_pb(arena), recs[i].v.mv_size, recs[i].v.mv_data);
            if (r == NULL)
                return KEEL_ECORRUPT;
            out->roles[out->n_roles++] = r;
        }
    }
    return 0;
}

void keel_store_auth_revision(struct keel_store *s, uint64_t *revision, bool *enabled)
{
    pthread_mutex_lock(&s->stat_lock);
    *revision = s->visible.auth_revision;
    *enabled = s->visible.auth_enabled != 0;
    pthread_mutex_unlock(&s->stat_lock);
}
