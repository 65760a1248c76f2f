/*
 * etcd's Auth service: Authenticate, AuthEnable/Disable, users and roles, each one keel request
 * (keel has etcd's auth model: server/auth.c), answered with etcd's messages and codes.
 *
 * - Tokens are keel's: Authenticate returns the token keel issued, and every later call carries
 *   it ("token" metadata, or JSON's Authorization header: call.h's token) to keel unchanged.
 *   keel checks it and every permission; the gateway holds no auth state of its own.
 * - keel refuses with etcd's own strings ("etcdserver: user name not found", ...); gw_error
 *   gives each etcd's gRPC code, as clientv3 matches them by message.
 * - UserAdd with --no-password (etcd 3.4's UserAddOptions): keel users always have a password,
 *   so it is refused with a reason rather than creating a user nobody can authenticate as.
 * - AuthStatus is etcd 3.5's; keel answers it, so it is served too.
 */
#include <string.h>

#include "authcrypto.h"
#include "methods.h"
#include "unary.h"

_Static_assert(GW_TOKEN_MAX >= KEEL_AUTH_TOKEN_MAX, "call.h's token bound holds keel's tokens");

/* Send keel request body kmsg (oneof case CASE, member field) for c, and free etcd's msg. */
#define SEND(c, msg, ops, CASE, field, kmsg)                                                       \
    do {                                                                                           \
        Keel__Request req_ = KEEL__REQUEST__INIT;                                                  \
        req_.body_case = KEEL__REQUEST__BODY_##CASE;                                               \
        req_.field = (kmsg);                                                                       \
        gw_unary_send((c), &req_, (ops), 0);                                                       \
        protobuf_c_message_free_unpacked((msg), NULL);                                             \
    } while (0)

/* ---- replies ---- */

/* {header = 1}: the answer of every change. */
static ProtobufCMessage *empty_reply(const struct gw_call *c, const Keel__Response *resp,
                                     int64_t arg, struct keel_arena *a)
{
    (void)c, (void)arg;
    Etcdserverpb__AuthEmptyResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__auth_empty_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    return &e->base;
}

static ProtobufCMessage *authenticate_reply(const struct gw_call *c, const Keel__Response *resp,
                                            int64_t arg, struct keel_arena *a)
{
    (void)c, (void)arg;
    Etcdserverpb__AuthenticateResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__authenticate_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    if (resp->authenticate && resp->authenticate->token)
        e->token = resp->authenticate->token;
    return &e->base;
}

static ProtobufCMessage *status_reply(const struct gw_call *c, const Keel__Response *resp,
                                      int64_t arg, struct keel_arena *a)
{
    (void)c, (void)arg;
    Etcdserverpb__AuthStatusResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__auth_status_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    if (resp->auth_status) {
        e->enabled = resp->auth_status->enabled;
        e->authrevision = resp->auth_status->authrevision;
    }
    return &e->base;
}

static ProtobufCMessage *user_get_reply(const struct gw_call *c, const Keel__Response *resp,
                                        int64_t arg, struct keel_arena *a)
{
    (void)c, (void)arg;
    Etcdserverpb__AuthUserGetResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__auth_user_get_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    if (resp->user_get) {
        e->roles = resp->user_get->roles;
        e->n_roles = resp->user_get->n_roles;
    }
    return &e->base;
}

static ProtobufCMessage *user_list_reply(const struct gw_call *c, const Keel__Response *resp,
                                         int64_t arg, struct keel_arena *a)
{
    (void)c, (void)arg;
    Etcdserverpb__AuthUserListResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__auth_user_list_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    if (resp->user_list) {
        e->users = resp->user_list->users;
        e->n_users = resp->user_list->n_users;
    }
    return &e->base;
}

static ProtobufCMessage *role_list_reply(const struct gw_call *c, const Keel__Response *resp,
                                         int64_t arg, struct keel_arena *a)
{
    (void)c, (void)arg;
    Etcdserverpb__AuthRoleListResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__auth_role_list_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    if (resp->role_list) {
        e->roles = resp->role_list->roles;
        e->n_roles = resp->role_list->n_roles;
    }
    return &e->base;
}

static ProtobufCMessage *role_get_reply(const struct gw_call *c, const Keel__Response *resp,
                                        int64_t arg, struct keel_arena *a)
{
    (void)c, (void)arg;
    Etcdserverpb__AuthRoleGetResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__auth_role_get_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    size_t n = resp->role_get ? resp->role_get->n_perm : 0;
    if (n == 0)
        return &e->base;
    Etcdserverpb__Permission *p = keel_arena_alloc(a, n * sizeof(*p));
    Etcdserverpb__Permission **pp = keel_arena_alloc(a, n * sizeof(*pp));
    if (!p || !pp)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const Keel__Permission *k = resp->role_get->perm[i];
        etcdserverpb__permission__init(&p[i]);
        /* Both enums are etcd's: READ 0, WRITE 1, READWRITE 2. */
        p[i].permtype = (Etcdserverpb__Permission__Type)k->permtype;
        p[i].key = k->key;
        p[i].range_end = k->range_end;
        pp[i] = &p[i];
    }
    e->perm = pp;
    e->n_perm = n;
    return &e->base;
}

static const struct gw_unary_ops empty_ops = {empty_reply, NULL};
static const struct gw_unary_ops authenticate_ops = {authenticate_reply, NULL};
static const struct gw_unary_ops status_ops = {status_reply, NULL};
static const struct gw_unary_ops user_get_ops = {user_get_reply, NULL};
static const struct gw_unary_ops user_list_ops = {user_list_reply, NULL};
static const struct gw_unary_ops role_get_ops = {role_get_reply, NULL};
static const struct gw_unary_ops role_list_ops = {role_list_reply, NULL};

/* ---- handlers: etcd's request as keel's ---- */

static void on_authenticate(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AuthenticateRequest *e = (const void *)msg;
    Keel__AuthenticateRequest k = KEEL__AUTHENTICATE_REQUEST__INIT;
    k.name = e->name;
    k.password = e->password;
    SEND(c, msg, &authenticate_ops, AUTHENTICATE, authenticate, &k);
}

static void on_enable(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__AuthEnableRequest k = KEEL__AUTH_ENABLE_REQUEST__INIT;
    SEND(c, msg, &empty_ops, AUTH_ENABLE, auth_enable, &k);
}

static void on_disable(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__AuthDisableRequest k = KEEL__AUTH_DISABLE_REQUEST__INIT;
    SEND(c, msg, &empty_ops, AUTH_DISABLE, auth_disable, &k);
}

static void on_status(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__AuthStatusRequest k = KEEL__AUTH_STATUS_REQUEST__INIT;
    SEND(c, msg, &status_ops, AUTH_STATUS, auth_status, &k);
}

static void on_user_add(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AuthUserAddRequest *e = (const void *)msg;
    if (e->options && e->options->no_password) {
        gw_unary_fail(c, msg, GW_INVALID_ARGUMENT,
                      "keel-gateway: keel users always have a password (no --no-password)");
        return;
    }
    Keel__UserAddRequest k = KEEL__USER_ADD_REQUEST__INIT;
    k.name = e->name;
    k.password = e->password;
    SEND(c, msg, &empty_ops, USER_ADD, user_add, &k);
}

static void on_user_get(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__UserGetRequest k = KEEL__USER_GET_REQUEST__INIT;
    k.name = ((const Etcdserverpb__AuthUserGetRequest *)msg)->name;
    SEND(c, msg, &user_get_ops, USER_GET, user_get, &k);
}

static void on_user_list(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__UserListRequest k = KEEL__USER_LIST_REQUEST__INIT;
    SEND(c, msg, &user_list_ops, USER_LIST, user_list, &k);
}

static void on_user_delete(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__UserDeleteRequest k = KEEL__USER_DELETE_REQUEST__INIT;
    k.name = ((const Etcdserverpb__AuthUserDeleteRequest *)msg)->name;
    SEND(c, msg, &empty_ops, USER_DELETE, user_delete, &k);
}

static void on_user_passwd(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AuthUserChangePasswordRequest *e = (const void *)msg;
    Keel__UserChangePasswordRequest k = KEEL__USER_CHANGE_PASSWORD_REQUEST__INIT;
    k.name = e->name;
    k.password = e->password;
    SEND(c, msg, &empty_ops, USER_CHANGE_PASSWORD, user_change_password, &k);
}

static void on_user_grant(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AuthUserGrantRoleRequest *e = (const void *)msg;
    Keel__UserGrantRoleRequest k = KEEL__USER_GRANT_ROLE_REQUEST__INIT;
    k.user = e->user;
    k.role = e->role;
    SEND(c, msg, &empty_ops, USER_GRANT_ROLE, user_grant_role, &k);
}

static void on_user_revoke(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AuthUserRevokeRoleRequest *e = (const void *)msg;
    Keel__UserRevokeRoleRequest k = KEEL__USER_REVOKE_ROLE_REQUEST__INIT;
    k.name = e->name;
    k.role = e->role;
    SEND(c, msg, &empty_ops, USER_REVOKE_ROLE, user_revoke_role, &k);
}

static void on_role_add(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__RoleAddRequest k = KEEL__ROLE_ADD_REQUEST__INIT;
    k.name = ((const Etcdserverpb__AuthRoleAddRequest *)msg)->name;
    SEND(c, msg, &empty_ops, ROLE_ADD, role_add, &k);
}

static void on_role_get(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__RoleGetRequest k = KEEL__ROLE_GET_REQUEST__INIT;
    k.role = ((const Etcdserverpb__AuthRoleGetRequest *)msg)->role;
    SEND(c, msg, &role_get_ops, ROLE_GET, role_get, &k);
}

static void on_role_list(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__RoleListRequest k = KEEL__ROLE_LIST_REQUEST__INIT;
    SEND(c, msg, &role_list_ops, ROLE_LIST, role_list, &k);
}

static void on_role_delete(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__RoleDeleteRequest k = KEEL__ROLE_DELETE_REQUEST__INIT;
    k.role = ((const Etcdserverpb__AuthRoleDeleteRequest *)msg)->role;
    SEND(c, msg, &empty_ops, ROLE_DELETE, role_delete, &k);
}

static void on_role_grant(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AuthRoleGrantPermissionRequest *e = (const void *)msg;
    if (!e->perm) {
        /* etcd's API layer: ErrGRPCPermissionNotGiven. */
        gw_unary_fail(c, msg, GW_INVALID_ARGUMENT, "etcdserver: permission not given");
        return;
    }
    Keel__Permission p = KEEL__PERMISSION__INIT;
    p.permtype = (Keel__Permission__Type)e->perm->permtype;
    p.key = e->perm->key;
    p.range_end = e->perm->range_end;
    Keel__RoleGrantPermissionRequest k = KEEL__ROLE_GRANT_PERMISSION_REQUEST__INIT;
    k.name = e->name;
    k.perm = &p;
    SEND(c, msg, &empty_ops, ROLE_GRANT_PERMISSION, role_grant_permission, &k);
}

static void on_role_revoke(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AuthRoleRevokePermissionRequest *e = (const void *)msg;
    Keel__RoleRevokePermissionRequest k = KEEL__ROLE_REVOKE_PERMISSION_REQUEST__INIT;
    k.role = e->role;
    k.key = e->key;
    k.range_end = e->range_end;
    SEND(c, msg, &empty_ops, ROLE_REVOKE_PERMISSION, role_revoke_permission, &k);
}

#define AUTH(name, json, req, resp, handler)                                                       \
    {                                                                                              \
        "/etcdserverpb.Auth/" name, json, &etcdserverpb__##req##__descriptor,                      \
            &etcdserverpb__##resp##__descriptor, GW_UNARY, handler, NULL, gw_unary_on_cancel       \
    }

static const struct gw_method auth_methods[] = {
    AUTH("Authenticate", "auth/authenticate", authenticate_request, authenticate_response,
         on_authenticate),
    AUTH("AuthEnable", "auth/enable", auth_enable_request, auth_empty_response, on_enable),
    AUTH("AuthDisable", "auth/disable", auth_disable_request, auth_empty_response, on_disable),
    AUTH("AuthStatus", "auth/status", auth_status_request, auth_status_response, on_status),
    AUTH("UserAdd", "auth/user/add", auth_user_add_request, auth_empty_response, on_user_add),
    AUTH("UserGet", "auth/user/get", auth_user_get_request, auth_user_get_response, on_user_get),
    AUTH("UserList", "auth/user/list", auth_user_list_request, auth_user_list_response,
         on_user_list),
    AUTH("UserDelete", "auth/user/delete", auth_user_delete_request, auth_empty_response,
         on_user_delete),
    AUTH("UserChangePassword", "auth/user/changepw", auth_user_change_password_request,
         auth_empty_response, on_user_passwd),
    AUTH("UserGrantRole", "auth/user/grant", auth_user_grant_role_request, auth_empty_response,
         on_user_grant),
    AUTH("UserRevokeRole", "auth/user/revoke", auth_user_revoke_role_request, auth_empty_response,
         on_user_revoke),
    AUTH("RoleAdd", "auth/role/add", auth_role_add_request, auth_empty_response, on_role_add),
    AUTH("RoleGet", "auth/role/get", auth_role_get_request, auth_role_get_response, on_role_get),
    AUTH("RoleList", "auth/role/list", auth_role_list_request, auth_role_list_response,
         on_role_list),
    AUTH("RoleDelete", "auth/role/delete", auth_role_delete_request, auth_empty_response,
         on_role_delete),
    AUTH("RoleGrantPermission", "auth/role/grant", auth_role_grant_permission_request,
         auth_empty_response, on_role_grant),
    AUTH("RoleRevokePermission", "auth/role/revoke", auth_role_revoke_permission_request,
         auth_empty_response, on_role_revoke),
};

const struct gw_method_table gw_auth_table = {auth_methods,
                                              sizeof(auth_methods) / sizeof(auth_methods[0])};
