/*
 * The request-kind table. Indexed by body case (keel.proto field numbers, 10..76): a sparse
 * array is the simplest lookup and costs a few hundred bytes.
 *
 * keel_reqkind_to_command moves the body pointer from the Request's oneof into the Command's
 * through protobuf-c's field descriptors, so adding a write is one table row, and a row that
 * pairs a body with a Command of another message type is refused instead of mis-typed.
 */
#include "reqkind.h"

#include <stddef.h>
#include <string.h>

#include "err.h"

#define W  KEEL_REQKIND_WRITE
#define I  KEEL_REQKIND_IDEMPOTENT
#define L  KEEL_REQKIND_LEADER
#define S  KEEL_REQKIND_STREAM
#define NO KEEL__COMMAND__OP__NOT_SET

#define ROW(body, flags, cmd) [KEEL__REQUEST__BODY_##body] = {#body, (flags), (cmd)}

static const struct keel_reqkind kinds[] = {
    ROW(RANGE, I | L, NO),
    ROW(PUT, W | L, KEEL__COMMAND__OP_PUT),
    ROW(DELETE_RANGE, W | L, KEEL__COMMAND__OP_DELETE_RANGE),
    ROW(TXN, W | L, KEEL__COMMAND__OP_TXN),
    ROW(COMPACTION, W | L, KEEL__COMMAND__OP_COMPACTION),

    /* Any member serves a watch from its own applied state. */
    ROW(WATCH_CREATE, S, NO),
    ROW(WATCH_CANCEL, S, NO),
    ROW(WATCH_PROGRESS, S, NO),

    ROW(LEASE_GRANT, W | L, KEEL__COMMAND__OP_LEASE_GRANT),
    ROW(LEASE_REVOKE, W | L, KEEL__COMMAND__OP_LEASE_REVOKE),
    /* A keep-alive refreshes the leader's timer; the log sees only checkpoints of it. */
    ROW(LEASE_KEEP_ALIVE, I | L, NO),
    ROW(LEASE_TIME_TO_LIVE, I | L, NO),
    ROW(LEASE_LEASES, I | L, NO),

    ROW(MEMBER_LIST, I | L, NO),
    ROW(MEMBER_ADD, W | L, NO),
    ROW(MEMBER_REMOVE, W | L, NO),
    ROW(MEMBER_PROMOTE, W | L, NO),
    ROW(MEMBER_UPDATE, W | L, NO),

    ROW(STATUS, I, NO),
    ROW(MOVE_LEADER, L, NO),
    ROW(SNAPSHOT, S, NO),
    ROW(ALARM, W | L, KEEL__COMMAND__OP_ALARM), /* GET: see the refinements */
    /* A member defragments its own store; not idempotent: a retry runs a second pass. */
    ROW(DEFRAGMENT, 0, NO),

    /* Any member could check a password; the leader has applied every user change it answered. */
    ROW(AUTHENTICATE, I | L, NO),
    ROW(USER_ADD, W | L, KEEL__COMMAND__OP_USER_ADD),
    ROW(USER_DELETE, W | L, KEEL__COMMAND__OP_USER_DELETE),
    ROW(USER_GRANT_ROLE, W | L, KEEL__COMMAND__OP_USER_GRANT_ROLE),
    ROW(USER_REVOKE_ROLE, W | L, KEEL__COMMAND__OP_USER_REVOKE_ROLE),
    ROW(USER_GET, I | L, NO),
    ROW(USER_LIST, I | L, NO),
    ROW(ROLE_ADD, W | L, KEEL__COMMAND__OP_ROLE_ADD),
    ROW(ROLE_DELETE, W | L, KEEL__COMMAND__OP_ROLE_DELETE),
    ROW(ROLE_GRANT_PERMISSION, W | L, KEEL__COMMAND__OP_ROLE_GRANT_PERMISSION),
    ROW(ROLE_REVOKE_PERMISSION, W | L, KEEL__COMMAND__OP_ROLE_REVOKE_PERMISSION),
    ROW(ROLE_GET, I | L, NO),
    ROW(ROLE_LIST, I | L, NO),
    ROW(USER_CHANGE_PASSWORD, W | L, KEEL__COMMAND__OP_USER_CHANGE_PASSWORD),
    ROW(AUTH_ENABLE, W | L, KEEL__COMMAND__OP_AUTH_ENABLE),
    ROW(AUTH_DISABLE, W | L, KEEL__COMMAND__OP_AUTH_DISABLE),
    ROW(AUTH_STATUS, I | L, NO),
};

#undef ROW
#undef NO
#undef S
#undef L
#undef I
#undef W

const struct keel_reqkind *keel_reqkind_of(Keel__Request__BodyCase body)
{
    if (body <= 0 || (size_t)body >= sizeof(kinds) / sizeof(kinds[0]))
        return NULL;
    const struct keel_reqkind *k = &kinds[body];
    return k->name != NULL ? k : NULL;
}

static bool alarm_get(const Keel__Request *req)
{
    return req->body_case == KEEL__REQUEST__BODY_ALARM && req->alarm != NULL &&
           req->alarm->action == KEEL__ALARM_REQUEST__ALARM_ACTION__GET;
}

static bool ops_are_ranges(Keel__RequestOp *const *ops, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ops[i]->request_case != KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE)
            return false;
    return true;
}

bool keel_reqkind_is_write(const Keel__Request *req)
{
    const struct keel_reqkind *k = keel_reqkind_of(req->body_case);
    return k != NULL && (k->flags & KEEL_REQKIND_WRITE) && !alarm_get(req);
}

bool keel_reqkind_is_idempotent(const Keel__Request *req)
{
    const struct keel_reqkind *k = keel_reqkind_of(req->body_case);
    if (k == NULL)
        return false;
    if (alarm_get(req))
        return true;
    if (req->body_case == KEEL__REQUEST__BODY_TXN) {
        /* A txn of ranges only changes nothing. */
        const Keel__TxnRequest *t = req->txn;
        return t != NULL && ops_are_ranges(t->success, t->n_success) &&
               ops_are_ranges(t->failure, t->n_failure);
    }
    return (k->flags & KEEL_REQKIND_IDEMPOTENT) != 0;
}

bool keel_reqkind_is_leader_only(const Keel__Request *req)
{
    const struct keel_reqkind *k = keel_reqkind_of(req->body_case);
    if (k == NULL || !(k->flags & KEEL_REQKIND_LEADER))
        return false;
    switch (req->body_case) {
    case KEEL__REQUEST__BODY_RANGE:
        return req->range == NULL || !req->range->serializable;
    case KEEL__REQUEST__BODY_MEMBER_LIST:
        return req->member_list == NULL || req->member_list->linearizable;
    case KEEL__REQUEST__BODY_ALARM:
        /* GET too: the leader has applied every write it answered, so a client that just had
         * a put refused for space sees the alarm that put raised (etcd lists through raft). */
        return true;
    default:
        return true;
    }
}

int keel_reqkind_to_command(const Keel__Request *req, Keel__Command *cmd)
{
    const struct keel_reqkind *k = keel_reqkind_of(req->body_case);
    if (k == NULL || k->command == KEEL__COMMAND__OP__NOT_SET || alarm_get(req))
        return KEEL_EINVAL; /* alarm GET is a read: nothing enters the log */
    const ProtobufCFieldDescriptor *from =
        protobuf_c_message_descriptor_get_field(&keel__request__descriptor, req->body_case);
    const ProtobufCFieldDescriptor *to =
        protobuf_c_message_descriptor_get_field(&keel__command__descriptor, k->command);
    if (from == NULL || to == NULL || from->type != PROTOBUF_C_TYPE_MESSAGE ||
        to->type != PROTOBUF_C_TYPE_MESSAGE || from->descriptor != to->descriptor)
        return KEEL_EINVAL;
    /* Both oneofs hold message pointers at the offsets protobuf-c recorded. */
    void *body;
    memcpy(&body, (const char *)req + from->offset, sizeof(body));
    if (body == NULL)
        return KEEL_EINVAL;
    memcpy((char *)cmd + to->offset, &body, sizeof(body));
    cmd->op_case = k->command;
    cmd->auth = req->auth; /* what the intake check saw (server/auth.h); NULL: none */
    return 0;
}
