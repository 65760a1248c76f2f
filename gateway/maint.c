/*
 * etcd's Maintenance service (Status, Alarm, Defragment, Hash, HashKV, Snapshot, MoveLeader), as
 * far as keel serves it; the rest answers Unimplemented with a reason, never a hang. The Auth
 * service is auth.c's.
 *
 * - Status is keel's status of the member that answered (the header's member_id), with the
 *   version "3.4.23": kube-apiserver enables progress requests only from 3.4.31 on, and keel's
 *   progress notifications are not proven equal to etcd's yet (etcd-api.md §5.3).
 * - Alarm goes to keel: GET lists the raised alarms (NOSPACE, raised on every member by the
 *   write that passed the quota), ACTIVATE and DEACTIVATE of NOSPACE go through keel's log as
 *   etcd's do. keel has no CORRUPT alarm: deactivating one answers an empty list (none is
 *   raised), activating one Unimplemented.
 * - Defragment defragments the keel member the gateway's request reaches (keel's online
 *   defragmentation: the member keeps serving); etcd defragments the member the client names,
 *   and behind a gateway that is the gateway.
 * - Snapshot streams keel's own snapshot of a member, then its SHA-256 as etcd does
 *   (snapshot.h): etcdctl snapshot save works; the file is keel's, not bbolt.
 * - Hash and HashKV: keel has no consistent hash: Unimplemented.
 */
#include "methods.h"
#include "snapshot.h"
#include "unary.h"

#include "err.h"

/* What etcd 3.4.23 reports; see above. */
#define GW_ETCD_VERSION "3.4.23"

/* ---- Status ---- */

static ProtobufCMessage *status_reply(const struct gw_call *c, const Keel__Response *resp,
                                      int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__StatusResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__status_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    e->version = GW_ETCD_VERSION;
    const Keel__StatusResponse *k = resp->status;
    if (k) {
        e->dbsize = k->dbsize;
        e->dbsizeinuse = k->dbsizeinuse;
        e->leader = k->leader;
        e->raftindex = k->raftindex;
        e->raftterm = k->raftterm;
        e->raftappliedindex = k->raftappliedindex;
        e->errors = k->errors;
        e->n_errors = k->n_errors;
        e->islearner = k->islearner;
    }
    return &e->base;
}

static const struct gw_unary_ops status_ops = {status_reply, NULL};

static void on_status(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__StatusRequest k = KEEL__STATUS_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_STATUS;
    req.status = &k;
    gw_unary_send(c, &req, &status_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- Alarm ---- */

static ProtobufCMessage *alarm_reply(const struct gw_call *c, const Keel__Response *resp,
                                     int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__AlarmResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__alarm_response__init(e);
    if (!(e->header = gw_unary_header(a, resp)))
        return NULL;
    const Keel__AlarmResponse *k = resp->alarm;
    size_t n = k ? k->n_alarms : 0;
    if (n == 0)
        return &e->base;
    e->alarms = keel_arena_alloc(a, n * sizeof(*e->alarms));
    Etcdserverpb__AlarmMember *m = keel_arena_alloc(a, n * sizeof(*m));
    if (!e->alarms || !m)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__alarm_member__init(&m[i]);
        m[i].memberid = k->alarms[i]->memberid;
        m[i].alarm = (Etcdserverpb__AlarmType)k->alarms[i]->alarm; /* etcd's numbering */
        e->alarms[i] = &m[i];
    }
    e->n_alarms = n;
    return &e->base;
}

/* arg: the action asked for. */
static ProtobufCMessage *alarm_fail(const struct gw_call *c, int status, const Keel__Response *resp,
                                    int64_t arg, struct keel_arena *a, enum gw_code *code,
                                    const char **message)
{
    if (status != KEEL_EUNSUPPORTED)
        return NULL;
    if (arg == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE) {
        *code = GW_UNIMPLEMENTED;
        *message = "keel-gateway: keel raises only the NOSPACE alarm (a write past the quota "
                   "raises it); it has no CORRUPT alarm";
        return NULL;
    }
    Keel__Response shell = KEEL__RESPONSE__INIT;
    shell.header = resp ? resp->header : NULL;
    return alarm_reply(c, &shell, arg, a);
}

static const struct gw_unary_ops alarm_ops = {alarm_reply, alarm_fail};

static void on_alarm(struct gw_call *c, ProtobufCMessage *msg)
{
    const Etcdserverpb__AlarmRequest *e = (const Etcdserverpb__AlarmRequest *)msg;
    Keel__AlarmRequest k = KEEL__ALARM_REQUEST__INIT;
    k.action = (Keel__AlarmRequest__AlarmAction)e->action;
    k.memberid = e->memberid;
    k.alarm = (Keel__AlarmMember__AlarmType)e->alarm;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ALARM;
    req.alarm = &k;
    gw_unary_send(c, &req, &alarm_ops, (int64_t)e->action);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- Defragment ---- */

static ProtobufCMessage *defrag_reply(const struct gw_call *c, const Keel__Response *resp,
                                      int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__DefragmentResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__defragment_response__init(e);
    e->header = gw_unary_header(a, resp);
    return e->header ? &e->base : NULL;
}

static const struct gw_unary_ops defrag_ops = {defrag_reply, NULL};

static void on_defrag(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__DefragmentRequest k = KEEL__DEFRAGMENT_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_DEFRAGMENT;
    req.defragment = &k;
    gw_unary_send(c, &req, &defrag_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- MoveLeader ---- */

static ProtobufCMessage *move_reply(const struct gw_call *c, const Keel__Response *resp,
                                    int64_t arg, struct keel_arena *a)
{
    (void)c;
    (void)arg;
    Etcdserverpb__MoveLeaderResponse *e = keel_arena_alloc(a, sizeof(*e));
    if (!e)
        return NULL;
    etcdserverpb__move_leader_response__init(e);
    e->header = gw_unary_header(a, resp);
    return e->header ? &e->base : NULL;
}

static ProtobufCMessage *move_fail(const struct gw_call *c, int status, const Keel__Response *resp,
                                   int64_t arg, struct keel_arena *a, enum gw_code *code,
                                   const char **message)
{
    (void)c;
    (void)resp;
    (void)arg;
    (void)a;
    /* etcd's own answers: a target that is no voter, and a transfer that did not finish. */
    if (status == KEEL_EMEMBERNOTFOUND) {
        *code = GW_FAILED_PRECONDITION;
        *message = "etcdserver: bad leader transferee";
    } else if (status == KEEL_ETIMEOUT) {
        *code = GW_UNAVAILABLE;
        *message = "etcdserver: request timed out, leader transfer took too long";
    }
    return NULL;
}

static const struct gw_unary_ops move_ops = {move_reply, move_fail};

static void on_move_leader(struct gw_call *c, ProtobufCMessage *msg)
{
    Keel__MoveLeaderRequest k = KEEL__MOVE_LEADER_REQUEST__INIT;
    k.targetid = ((const Etcdserverpb__MoveLeaderRequest *)msg)->targetid;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MOVE_LEADER;
    req.move_leader = &k;
    gw_unary_send(c, &req, &move_ops, 0);
    protobuf_c_message_free_unpacked(msg, NULL);
}

/* ---- what keel cannot serve ---- */

static void on_hash(struct gw_call *c, ProtobufCMessage *msg)
{
    gw_unary_fail(c, msg, GW_UNIMPLEMENTED,
                  "keel-gateway: keel has no consistent hash of its store yet (Hash, HashKV)");
}

#define METHOD(grpc, json, req, resp, kind, handler)                                               \
    {                                                                                              \
        grpc, json, &etcdserverpb__##req##__descriptor, &etcdserverpb__##resp##__descriptor, kind, \
            handler, NULL, gw_unary_on_cancel                                                      \
    }
#define MAINT(name, json, type, handler)                                                           \
    METHOD("/etcdserverpb.Maintenance/" name, json, type##_request, type##_response, GW_UNARY,     \
           handler)
static const struct gw_method maint_methods[] = {
    MAINT("Status", "maintenance/status", status, on_status),
    MAINT("Alarm", "maintenance/alarm", alarm, on_alarm),
    MAINT("Defragment", "maintenance/defragment", defragment, on_defrag),
    MAINT("Hash", "maintenance/hash", hash, on_hash),
    METHOD("/etcdserverpb.Maintenance/HashKV", NULL, hash_kvrequest, hash_kvresponse, GW_UNARY,
           on_hash), /* JSON's /hash is Hash's, as in etcd */
    {"/etcdserverpb.Maintenance/Snapshot", "maintenance/snapshot",
     &etcdserverpb__snapshot_request__descriptor, &etcdserverpb__snapshot_response__descriptor,
     GW_SERVER_STREAM, gw_snapshot_on_message, NULL, gw_snapshot_on_cancel},
    MAINT("MoveLeader", "maintenance/transfer-leadership", move_leader, on_move_leader),
};

const struct gw_method_table gw_maint_table = {maint_methods,
                                               sizeof(maint_methods) / sizeof(maint_methods[0])};
