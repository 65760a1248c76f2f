/*
 * The request-kind table (proto/reqkind.h): every Request body has a row, every write the
 * server serves maps onto the Command field of the same message type, and the per-request
 * refinements (serializable ranges, read-only txns, alarm GET, member lists) hold.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "err.h"
#include "reqkind.h"

/* Every field of Request's body oneof has a row, named after the field. */
static void every_body_has_a_row(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &keel__request__descriptor;
    size_t bodies = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
            continue;
        bodies++;
        const struct keel_reqkind *k = keel_reqkind_of((Keel__Request__BodyCase)f->id);
        assert_non_null(k);
        char upper[64];
        size_t n = strlen(f->name);
        assert_true(n < sizeof(upper));
        for (size_t j = 0; j <= n; j++)
            upper[j] =
                (char)(f->name[j] >= 'a' && f->name[j] <= 'z' ? f->name[j] - 32 : f->name[j]);
        assert_string_equal(k->name, upper);
    }
    assert_true(bodies >= 30);
    assert_null(keel_reqkind_of(KEEL__REQUEST__BODY__NOT_SET));
    assert_null(keel_reqkind_of((Keel__Request__BodyCase)9));
    assert_null(keel_reqkind_of((Keel__Request__BodyCase)1000));
    assert_null(keel_reqkind_of((Keel__Request__BodyCase)-1));
}

/* The writes keeld serves today, exactly: each becomes the Command field of the same type. */
static void served_writes_become_commands(void **state)
{
    (void)state;
    const Keel__Request__BodyCase served[] = {
        KEEL__REQUEST__BODY_PUT,
        KEEL__REQUEST__BODY_DELETE_RANGE,
        KEEL__REQUEST__BODY_TXN,
        KEEL__REQUEST__BODY_COMPACTION,
        KEEL__REQUEST__BODY_LEASE_GRANT,
        KEEL__REQUEST__BODY_LEASE_REVOKE,
        KEEL__REQUEST__BODY_ALARM,
        /* auth changes */
        KEEL__REQUEST__BODY_USER_ADD,
        KEEL__REQUEST__BODY_USER_DELETE,
        KEEL__REQUEST__BODY_USER_GRANT_ROLE,
        KEEL__REQUEST__BODY_USER_REVOKE_ROLE,
        KEEL__REQUEST__BODY_ROLE_ADD,
        KEEL__REQUEST__BODY_ROLE_DELETE,
        KEEL__REQUEST__BODY_ROLE_GRANT_PERMISSION,
        KEEL__REQUEST__BODY_ROLE_REVOKE_PERMISSION,
        KEEL__REQUEST__BODY_USER_CHANGE_PASSWORD,
        KEEL__REQUEST__BODY_AUTH_ENABLE,
        KEEL__REQUEST__BODY_AUTH_DISABLE,
    };
    size_t with_command = 0;
    for (int body = 0; body < 100; body++) {
        const struct keel_reqkind *k = keel_reqkind_of((Keel__Request__BodyCase)body);
        if (k == NULL || k->command == KEEL__COMMAND__OP__NOT_SET)
            continue;
        with_command++;
        assert_true(k->flags & KEEL_REQKIND_WRITE);
        int found = 0;
        for (size_t i = 0; i < sizeof(served) / sizeof(served[0]); i++)
            found |= served[i] == (Keel__Request__BodyCase)body;
        assert_true(found);
    }
    assert_int_equal(with_command, sizeof(served) / sizeof(served[0]));

    /* Moving each body into a Command keeps the pointer and sets the op. */
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
    Keel__DeleteRangeRequest del = KEEL__DELETE_RANGE_REQUEST__INIT;
    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    Keel__CompactionRequest cmp = KEEL__COMPACTION_REQUEST__INIT;
    Keel__LeaseGrantRequest grant = KEEL__LEASE_GRANT_REQUEST__INIT;
    Keel__LeaseRevokeRequest revoke = KEEL__LEASE_REVOKE_REQUEST__INIT;
    Keel__AlarmRequest alarm = KEEL__ALARM_REQUEST__INIT;
    Keel__Command c = KEEL__COMMAND__INIT;
    c.request_id = 77;

    /* Request and Command name each write's field alike. */
#define MOVES(BODY, field, body)                                                                   \
    do {                                                                                           \
        req.body_case = KEEL__REQUEST__BODY_##BODY;                                                \
        req.field = &(body);                                                                       \
        assert_int_equal(keel_reqkind_to_command(&req, &c), 0);                                    \
        assert_int_equal(c.op_case, KEEL__COMMAND__OP_##BODY);                                     \
        assert_ptr_equal(c.field, &(body));                                                        \
        assert_int_equal(c.request_id, 77);                                                        \
    } while (0)
    MOVES(PUT, put, put);
    MOVES(DELETE_RANGE, delete_range, del);
    MOVES(TXN, txn, txn);
    MOVES(COMPACTION, compaction, cmp);
    MOVES(LEASE_GRANT, lease_grant, grant);
    MOVES(LEASE_REVOKE, lease_revoke, revoke);
    alarm.action = KEEL__ALARM_REQUEST__ALARM_ACTION__ACTIVATE; /* GET is a read, served at once */
    MOVES(ALARM, alarm, alarm);
#undef MOVES

    /* Reads, unserved writes and missing bodies are refused and leave cmd alone. */
    Keel__Command untouched = KEEL__COMMAND__INIT;
    Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &range;
    assert_int_equal(keel_reqkind_to_command(&req, &untouched), KEEL_EINVAL);
    Keel__MemberAddRequest madd = KEEL__MEMBER_ADD_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_ADD;
    req.member_add = &madd;
    assert_int_equal(keel_reqkind_to_command(&req, &untouched), KEEL_EINVAL);
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = NULL;
    assert_int_equal(keel_reqkind_to_command(&req, &untouched), KEEL_EINVAL);
    assert_int_equal(untouched.op_case, KEEL__COMMAND__OP__NOT_SET);
}

/* The same rules libkeel's retry logic followed before the table existed. */
static void idempotency_rules(void **state)
{
    (void)state;
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__RangeRequest r = KEEL__RANGE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &r;
    assert_true(keel_reqkind_is_idempotent(&req));
    assert_false(keel_reqkind_is_write(&req));

    Keel__PutRequest p = KEEL__PUT_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &p;
    assert_false(keel_reqkind_is_idempotent(&req));
    assert_true(keel_reqkind_is_write(&req));

    Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
    Keel__RequestOp op = KEEL__REQUEST_OP__INIT, *ops[1] = {&op};
    op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    op.request_range = &r;
    t.success = ops;
    t.n_success = 1;
    req.body_case = KEEL__REQUEST__BODY_TXN;
    req.txn = &t;
    assert_true(keel_reqkind_is_idempotent(&req));
    assert_true(keel_reqkind_is_write(&req)); /* still proposed: compares read at one revision */
    op.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
    op.request_put = &p;
    assert_false(keel_reqkind_is_idempotent(&req));
    /* A write on the failure branch only counts as well. */
    t.success = NULL;
    t.n_success = 0;
    t.failure = ops;
    t.n_failure = 1;
    assert_false(keel_reqkind_is_idempotent(&req));
    req.txn = NULL;
    assert_false(keel_reqkind_is_idempotent(&req));

    Keel__LeaseTimeToLiveRequest ttl = KEEL__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE;
    req.lease_time_to_live = &ttl;
    assert_true(keel_reqkind_is_idempotent(&req));

    Keel__CompactionRequest c = KEEL__COMPACTION_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_COMPACTION;
    req.compaction = &c;
    assert_false(keel_reqkind_is_idempotent(&req));

    Keel__AlarmRequest a = KEEL__ALARM_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ALARM;
    req.alarm = &a;
    a.action = KEEL__ALARM_REQUEST__ALARM_ACTION__GET;
    assert_true(keel_reqkind_is_idempotent(&req));
    assert_false(keel_reqkind_is_write(&req));
    /* The leader has applied every write it answered: the alarm a refused put raised. */
    assert_true(keel_reqkind_is_leader_only(&req));
    Keel__Command none = KEEL__COMMAND__INIT;
    assert_int_equal(keel_reqkind_to_command(&req, &none), KEEL_EINVAL);
    a.action = KEEL__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
    assert_false(keel_reqkind_is_idempotent(&req));
    assert_true(keel_reqkind_is_write(&req));
    assert_true(keel_reqkind_is_leader_only(&req));

    req.body_case = KEEL__REQUEST__BODY__NOT_SET;
    assert_false(keel_reqkind_is_idempotent(&req));
    assert_false(keel_reqkind_is_write(&req));
    assert_false(keel_reqkind_is_leader_only(&req));
}

/* Who can answer: the routes libkeel used before the table existed. */
static void leader_only_rules(void **state)
{
    (void)state;
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__RangeRequest r = KEEL__RANGE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &r;
    assert_true(keel_reqkind_is_leader_only(&req));
    r.serializable = 1;
    assert_false(keel_reqkind_is_leader_only(&req));

    Keel__MemberListRequest ml = KEEL__MEMBER_LIST_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_LIST;
    req.member_list = &ml;
    assert_false(keel_reqkind_is_leader_only(&req));
    ml.linearizable = 1;
    assert_true(keel_reqkind_is_leader_only(&req));

    Keel__StatusRequest st = KEEL__STATUS_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &st;
    assert_false(keel_reqkind_is_leader_only(&req));

    Keel__PutRequest p = KEEL__PUT_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = &p;
    assert_true(keel_reqkind_is_leader_only(&req));

    /* Streams are the connection's business: no route. */
    Keel__WatchCreateRequest wc = KEEL__WATCH_CREATE_REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &wc;
    assert_false(keel_reqkind_is_leader_only(&req));
    assert_true(keel_reqkind_of(req.body_case)->flags & KEEL_REQKIND_STREAM);
    assert_true(keel_reqkind_of(KEEL__REQUEST__BODY_SNAPSHOT)->flags & KEEL_REQKIND_STREAM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_body_has_a_row),
        cmocka_unit_test(served_writes_become_commands),
        cmocka_unit_test(idempotency_rules),
        cmocka_unit_test(leader_only_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
