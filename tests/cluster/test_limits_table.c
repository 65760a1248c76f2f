/*
 * The rows of README's table of limits, through a real keeld: `test_limits_table <group>`, one
 * group per row. Each drives its limit past the bound (libkeel where it can, a raw socket where a
 * client must misbehave), asserts what the client gets there, and asserts that the member stays
 * up and that a bystander (tests/lib/bystander.h: another client of the same member, putting
 * and reading back its own key on a connection of its own) sees no error meanwhile and after.
 *
 *   key_size:    a 512-byte key in a put, a get, a delete and a watch: KEY_TOO_LONG.
 *   value_size:  a value of --max-request-bytes + 1: REQUEST_TOO_LARGE; a frame past the frame
 *                limit: FRAME_TOO_LARGE, and that connection is closed.
 *   txn_ops:     129 operations, 129 compares, 9 nested levels, 1152 operations in all:
 *                each refused.
 *   reply_size:  a range in key order past 2031616 bytes comes in pieces; sorted ranges and
 *                txns whose reply would pass it: REPLY_TOO_LARGE.
 *   connections: --max-connections 16, a flood of 300 more: each refused in the handshake.
 *   descriptors: RLIMIT_NOFILE 300: --max-connections falls to 44, and a flood of silent peer
 *                connections cannot take the descriptors the clients need.
 *   watches:     --max-watches 1000 on one connection: the 1001st is refused, others unaffected.
 *   leases:      --quota-bytes 1 MiB nearly full: grants until NO_SPACE; reads go on.
 *   half_frame:  20 clients each send half a 1 MB frame and stall: they hold what they sent,
 *                no more, and the member serves everyone else.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bystander.h"
#include "cluster.h"
#include "err.h"
#include "frame.h"
#include "rawconn.h"
#include "store.h"
#include "testutil.h"
#include "keel/keel.h"

#define MAX_REQUEST (1536 * 1024) /* keeld's default --max-request-bytes */

static struct keel *client(const struct tc_cluster *c)
{
    char eps[64];
    tc_endpoints(c, 1, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = 20000, .dial_timeout_ms = 2000};
    struct keel *k = NULL;
    assert_int_equal(keel_open(&k, &o), 0);
    return k;
}

/* The bystander got through 3 more rounds and none failed; the member is the same process and
 * a new connection is served. Then the cluster is closed. */
static void still_serving(struct tc_cluster *c, struct tb_bystander *b)
{
    assert_true(tb_progress(b, 3, 20000));
    long rounds = tb_stop(b);
    print_message("bystander: %ld rounds, none failed\n", rounds);
    assert_true(rounds > 0);
    int status;
    assert_int_equal(waitpid(c->m[1].pid, &status, WNOHANG), 0);
    int fd = raw_open(c->m[1].client, 0);
    assert_int_equal(raw_put(fd, 1, "after", (const uint8_t *)"ok", 2), 0);
    close(fd);
    tc_cluster_close(c);
}

static bool contains(const char *s, const char *needle)
{
    if (strstr(s, needle) == NULL) {
        print_message("\"%s\" does not contain \"%s\"\n", s, needle);
        return false;
    }
    return true;
}

/* ---- key size ---- */

static void on_event(struct keel_watch *w, int status, const Keel__Event *const *events, size_t n,
                     int64_t revision, void *data)
{
    (void)w, (void)status, (void)events, (void)n, (void)revision, (void)data;
}

static void key_size(void **state)
{
    (void)state;
    struct tc_cluster c;
    close(raw_one_member(&c, "limits-key", ""));
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    struct keel *k = client(&c);
    char key[KEEL_MAX_KEY_BYTES + 1];
    memset(key, 'k', sizeof(key));
    assert_int_equal(keel_put(k, key, KEEL_MAX_KEY_BYTES, "v", 1, NULL, NULL), 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(keel_put(k, key, sizeof(key), "v", 1, NULL, NULL), KEEL_EKEYTOOLONG);
        assert_true(contains(keel_errmsg(), "key is longer than 511 bytes"));
        Keel__RangeResponse *rr = NULL;
        assert_int_equal(keel_get(k, key, sizeof(key), NULL, &rr), KEEL_EKEYTOOLONG);
        assert_int_equal(keel_delete(k, key, sizeof(key), NULL, NULL), KEEL_EKEYTOOLONG);
        struct keel_watch *w = NULL;
        assert_int_equal(keel_watch_open(k, key, sizeof(key), NULL, on_event, NULL, &w),
                         KEEL_EKEYTOOLONG);
    }
    keel_close(k);
    still_serving(&c, b);
}

/* ---- value and frame size ---- */

static void value_size(void **state)
{
    (void)state;
    struct tc_cluster c;
    close(raw_one_member(&c, "limits-value", ""));
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    struct keel *k = client(&c);
    size_t big = MAX_REQUEST + 128 * 1024; /* past the frame limit: the request plus 64 KiB */
    uint8_t *val = malloc(big);
    assert_non_null(val);
    memset(val, 'v', big);
    assert_int_equal(keel_put(k, "v", 1, val, MAX_REQUEST, NULL, NULL), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(keel_put(k, "v", 1, val, MAX_REQUEST + 1, NULL, NULL), KEEL_ETOOLARGE);
        assert_true(contains(keel_errmsg(), "value of 1572865 bytes is over the limit of 1572864"));
    }
    /* A frame past the limit is refused as soon as its length is read, and the connection is
     * closed: the rest of it is not read. libkeel sees its connection close under a put it has
     * sent, and cannot tell which of the requests in flight was refused. */
    int rc = keel_put(k, "v", 1, val, big, NULL, NULL);
    print_message("libkeel, a put of %zu bytes: %s: %s\n", big, keel_err_name(rc), keel_errmsg());
    assert_int_equal(rc, KEEL_EUNKNOWN);
    int fd = raw_open(c.m[1].client, 0);
    uint8_t *frame = NULL;
    size_t len = 0, cap = 0;
    raw_append_put(&frame, &len, &cap, 1, "v", val, big);
    raw_send(fd, frame, 4);
    Keel__Response *r = raw_response(fd);
    assert_non_null(r->error);
    assert_int_equal(r->error->code, KEEL__ERROR_CODE__FRAME_TOO_LARGE);
    assert_true(contains(r->error->message, "frame exceeds the maximum request size"));
    keel__response__free_unpacked(r, NULL);
    assert_true(raw_closed(fd, RAW_WAIT_MS));
    close(fd);
    free(frame);
    free(val);
    keel_close(k);
    still_serving(&c, b);
}

/* ---- operations per txn ---- */

#define OPS_MAX 128 /* keeld's default --max-txn-ops */

/* A txn of n_cmp compares and n_ops puts of distinct keys (prefix "tag/i"), all in arrays of
 * pool, which holds at least max(n_cmp, n_ops) of each. */
struct txn_pool {
    Keel__TxnRequest t;
    Keel__Compare cmp[OPS_MAX + 1], *cmpp[OPS_MAX + 1];
    Keel__PutRequest put[OPS_MAX + 1];
    Keel__RequestOp op[OPS_MAX + 1], *opp[OPS_MAX + 1];
    char keys[OPS_MAX + 1][32];
};

static Keel__TxnRequest *txn_of(struct txn_pool *p, const char *tag, size_t n_cmp, size_t n_ops)
{
    keel__txn_request__init(&p->t);
    for (size_t i = 0; i < n_cmp || i < n_ops; i++) {
        snprintf(p->keys[i], sizeof(p->keys[i]), "%.8s/%zu", tag, i);
        keel__compare__init(&p->cmp[i]);
        p->cmp[i].key.data = (uint8_t *)p->keys[i];
        p->cmp[i].key.len = strlen(p->keys[i]);
        p->cmp[i].target = KEEL__COMPARE__COMPARE_TARGET__VERSION;
        p->cmp[i].target_union_case = KEEL__COMPARE__TARGET_UNION_VERSION;
        p->cmpp[i] = &p->cmp[i];
        keel__put_request__init(&p->put[i]);
        p->put[i].key = p->cmp[i].key;
        keel__request_op__init(&p->op[i]);
        p->op[i].request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_PUT;
        p->op[i].request_put = &p->put[i];
        p->opp[i] = &p->op[i];
    }
    p->t.n_compare = n_cmp;
    p->t.compare = p->cmpp;
    p->t.n_success = n_ops;
    p->t.success = p->opp;
    return &p->t;
}

static void txn_ops(void **state)
{
    (void)state;
    struct tc_cluster c;
    close(raw_one_member(&c, "limits-txn", ""));
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    struct keel *k = client(&c);
    static struct txn_pool p, nest[10];
    if (keel_txn(k, txn_of(&p, "t", OPS_MAX, OPS_MAX), NULL) != 0)
        fail_msg("a txn at the limits: %s", keel_errmsg());
    for (int i = 0; i < 10; i++) {
        assert_int_equal(keel_txn(k, txn_of(&p, "t", 0, OPS_MAX + 1), NULL), KEEL_ETOOMANYOPS);
        assert_true(contains(keel_errmsg(), "too many operations in txn request"));
        assert_int_equal(keel_txn(k, txn_of(&p, "t", OPS_MAX + 1, 1), NULL), KEEL_ETOOMANYOPS);
        assert_true(contains(keel_errmsg(), "too many compares in txn request"));
    }
    /* Nine levels below the top one: each txn's one operation is the next txn. */
    for (int d = 9; d >= 0; d--) {
        char tag[8];
        snprintf(tag, sizeof(tag), "n%d", d);
        txn_of(&nest[d], tag, 0, 1);
        if (d < 9) {
            nest[d].op[0].request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
            nest[d].op[0].request_txn = &nest[d + 1].t;
        }
    }
    assert_int_equal(keel_txn(k, &nest[0].t, NULL), KEEL_EINVAL);
    assert_true(contains(keel_errmsg(), "txn requests nested too deep"));
    /* Every level within its own limit, but 128 nested txns of 8 puts: 128 + 128 x 8 = 1152
     * operations in all, over 8 x --max-txn-ops. */
    txn_of(&p, "top", 0, OPS_MAX);
    txn_of(&nest[1], "in", 0, 8);
    for (int i = 0; i < OPS_MAX; i++) {
        p.op[i].request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_TXN;
        p.op[i].request_txn = &nest[1].t;
    }
    assert_int_equal(keel_txn(k, &p.t, NULL), KEEL_ETOOMANYOPS);
    assert_true(contains(keel_errmsg(), "txn has 1152 operations and compares across its nested "
                                        "txns, more than the limit of 1024"));
    keel_close(k);
    still_serving(&c, b);
}

/* ---- range reply size ---- */

static void reply_size(void **state)
{
    (void)state;
    struct tc_cluster c;
    close(raw_one_member(&c, "limits-reply", ""));
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    struct keel *k = client(&c);
    size_t n = 1100 * 1024; /* two of them pass KEEL_MAX_REPLY_BYTES, one does not */
    uint8_t *val = malloc(n);
    assert_non_null(val);
    memset(val, 'r', n);
    assert_int_equal(keel_put(k, "r/a", 3, val, n, NULL, NULL), 0);
    assert_int_equal(keel_put(k, "r/b", 3, val, n, NULL, NULL), 0);
    free(val);
    const char *msg = "reply would exceed the 2031616-byte reply limit";
    for (int i = 0; i < 5; i++) {
        /* In key order, more than a frame is sent in pieces: both values come back. */
        Keel__RangeResponse *rr = NULL;
        struct keel_get_opts all = {.range_end = "r0", .range_end_len = 2};
        assert_int_equal(keel_get(k, "r/", 2, &all, &rr), 0);
        assert_int_equal(rr->n_kvs, 2);
        assert_int_equal(rr->kvs[1]->value.len, n);
        assert_false(rr->more);
        keel_free(rr);
        all.serializable = true;
        assert_int_equal(keel_get(k, "r/", 2, &all, &rr), 0);
        assert_int_equal(rr->n_kvs, 2);
        keel_free(rr);
        all.limit = 1;
        assert_int_equal(keel_get(k, "r/", 2, &all, &rr), 0);
        assert_int_equal(rr->n_kvs, 1);
        assert_true(rr->more);
        keel_free(rr);
        /* Sorted another way, it is built whole: refused, with what to ask instead. */
        all.limit = 0;
        all.sort_target = KEEL__RANGE_REQUEST__SORT_TARGET__MOD;
        all.sort_order = KEEL__RANGE_REQUEST__SORT_ORDER__DESCEND;
        assert_int_equal(keel_get(k, "r/", 2, &all, &rr), KEEL_EREPLYTOOLARGE);
        assert_true(contains(keel_errmsg(), msg));
        all.keys_only = true;
        assert_int_equal(keel_get(k, "r/", 2, &all, &rr), 0);
        assert_int_equal(rr->n_kvs, 2);
        keel_free(rr);
    }
    /* Two ranges of one value each in a txn: priced before it is applied, refused whole. */
    Keel__RangeRequest ra = KEEL__RANGE_REQUEST__INIT, rb = KEEL__RANGE_REQUEST__INIT;
    ra.key.data = (uint8_t *)"r/a";
    rb.key.data = (uint8_t *)"r/b";
    ra.key.len = rb.key.len = 3;
    Keel__RequestOp oa = KEEL__REQUEST_OP__INIT, ob = KEEL__REQUEST_OP__INIT;
    oa.request_case = ob.request_case = KEEL__REQUEST_OP__REQUEST_REQUEST_RANGE;
    oa.request_range = &ra;
    ob.request_range = &rb;
    Keel__RequestOp *ops[] = {&oa, &ob};
    Keel__TxnRequest t = KEEL__TXN_REQUEST__INIT;
    t.n_success = 2;
    t.success = ops;
    assert_int_equal(keel_txn(k, &t, NULL), KEEL_EREPLYTOOLARGE);
    assert_true(contains(keel_errmsg(), msg));
    keel_close(k);
    still_serving(&c, b);
}

/* ---- connections ---- */

#define MAX_CONN 16
#define FLOOD    300

/* A connection the member refuses in the handshake: the refusal names the limit, then EOF. */
static void expect_refused(int fd, const char *limit_text)
{
    Keel__HelloResponse *h = raw_hello_response(fd);
    assert_non_null(h);
    assert_non_null(h->error);
    assert_int_equal(h->error->code, KEEL__ERROR_CODE__TOO_MANY_REQUESTS);
    assert_true(contains(h->error->message, limit_text));
    keel__hello_response__free_unpacked(h, NULL);
    assert_true(raw_closed(fd, RAW_WAIT_MS));
}

static void connections(void **state)
{
    (void)state;
    struct tc_cluster c;
    int ready = raw_one_member(&c, "limits-conn", "--max-connections 16");
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    /* ready and the bystander hold two; fill the rest. */
    int held[MAX_CONN];
    for (int i = 0; i < MAX_CONN - 2; i++)
        held[i] = raw_open(c.m[1].client, 0);
    /* The flood: every connection is made (the kernel completes them) and says Hello first. */
    static int flood[FLOOD];
    for (int i = 0; i < FLOOD; i++) {
        flood[i] = raw_dial(c.m[1].client, 0);
        raw_hello_send(flood[i]);
    }
    for (int i = 0; i < FLOOD; i++) {
        expect_refused(flood[i], "serves at most 16 (--max-connections)");
        close(flood[i]);
    }
    assert_true(tb_progress(b, 3, 20000));
    /* libkeel says why (with one endpoint, none is left to try: UNAVAILABLE). */
    char eps[64];
    tc_endpoints(&c, 1, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = 2000, .dial_timeout_ms = 1000, .max_retries = -1};
    struct keel *k = NULL;
    int rc = keel_open(&k, &o);
    if (rc == 0)
        rc = keel_put(k, "x", 1, "y", 1, NULL, NULL);
    print_message("libkeel past --max-connections: %s: %s\n", keel_err_name(rc), keel_errmsg());
    assert_int_equal(rc, KEEL_EUNAVAILABLE);
    assert_true(contains(keel_errmsg(), "too many client connections: this member serves at "
                                        "most 16 (--max-connections)"));
    keel_close(k);
    /* The held connections still work; once one closes, a new one is taken. */
    for (int i = 0; i < MAX_CONN - 2; i++)
        assert_int_equal(raw_put(held[i], 1, "held", (const uint8_t *)"1", 1), 0);
    close(held[0]);
    long long deadline = tc_now_ms() + RAW_WAIT_MS;
    for (;;) {
        int fd = raw_dial(c.m[1].client, 0);
        raw_hello_send(fd);
        Keel__HelloResponse *h = raw_hello_response(fd);
        bool ok = h != NULL && h->error == NULL;
        if (h != NULL)
            keel__hello_response__free_unpacked(h, NULL);
        if (ok) {
            held[0] = fd;
            break;
        }
        close(fd);
        assert_true(tc_now_ms() < deadline);
        tu_sleep_ms(20);
    }
    assert_true(tc_log_contains(&c, 1, "client connection refused"));
    for (int i = 0; i < MAX_CONN - 2; i++)
        close(held[i]);
    close(ready);
    still_serving(&c, b);
}

/* ---- descriptors ---- */

#define FD_LIMIT   300
#define FIT        (FD_LIMIT - 256) /* KEEL_FD_RESERVE */
#define PEER_FLOOD 250

static void descriptors(void **state)
{
    (void)state;
    struct tc_cluster c;
    tc_cluster_init(&c, 1, "limits-fd");
    c.nofile = FD_LIMIT;
    int ready = raw_start(&c);
    assert_true(tc_log_contains(&c, 1, "--max-connections lowered from 4096 to 44"));
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    /* Silent connections on the peer port: each would hold a descriptor for the 5 s a handshake
     * may take. Without a bound they would leave fewer than FIT for the clients. */
    static int peers[PEER_FLOOD];
    for (int i = 0; i < PEER_FLOOD; i++)
        peers[i] = raw_dial(c.m[1].peer, 0);
    /* Every client slot still opens (a connection that met EMFILE would be closed unanswered),
     * and the one past them is refused with the limit keeld fitted. */
    int held[FIT];
    for (int i = 0; i < FIT - 2; i++)
        held[i] = raw_open(c.m[1].client, 0);
    int over = raw_dial(c.m[1].client, 0);
    raw_hello_send(over);
    expect_refused(over, "serves at most 44 (--max-connections)");
    close(over);
    assert_true(tb_progress(b, 3, 20000));
    assert_true(tc_log_contains(&c, 1, "handshakes in progress already"));
    for (int i = 0; i < PEER_FLOOD; i++)
        close(peers[i]);
    for (int i = 0; i < FIT - 2; i++)
        close(held[i]);
    close(ready);
    still_serving(&c, b);
}

/* ---- watchers per connection ---- */

#define MAX_WATCHES 1000

/* Send n WatchCreates for prefix "w/" with ids from first, in one write. */
static void send_creates(int fd, uint64_t first, int n)
{
    Keel__WatchCreateRequest wc = KEEL__WATCH_CREATE_REQUEST__INIT;
    wc.key.data = (uint8_t *)"w/";
    wc.key.len = 2;
    wc.range_end.data = (uint8_t *)"w0";
    wc.range_end.len = 2;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CREATE;
    req.watch_create = &wc;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; i < n; i++) {
        req.id = first + (uint64_t)i;
        raw_append(&buf, &len, &cap, &req);
    }
    raw_send(fd, buf, len);
    free(buf);
}

/* The answer to a WatchCreate: the watch id, or the negated wire error code. */
static int64_t created(int fd, char *msg, size_t msglen)
{
    Keel__Response *r = raw_response(fd);
    int64_t rv;
    if (r->error != NULL) {
        rv = -(int64_t)r->error->code;
        snprintf(msg, msglen, "%s", r->error->message);
    } else {
        assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_WATCH);
        assert_true(r->watch->created);
        rv = r->watch->watch_id;
    }
    keel__response__free_unpacked(r, NULL);
    return rv;
}

static void watches(void **state)
{
    (void)state;
    struct tc_cluster c;
    int ready = raw_one_member(&c, "limits-watch", "--max-watches 1000");
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    int fd = raw_open(c.m[1].client, 0);
    send_creates(fd, 1, MAX_WATCHES + 10);
    char msg[256];
    int ok = 0, refused = 0;
    for (int i = 0; i < MAX_WATCHES + 10; i++) {
        int64_t id = created(fd, msg, sizeof(msg));
        if (id > 0) {
            ok++;
        } else {
            assert_int_equal(id, -KEEL__ERROR_CODE__TOO_MANY_REQUESTS);
            assert_true(contains(msg, "too many watches on this connection (limit 1000)"));
            refused++;
        }
    }
    assert_int_equal(ok, MAX_WATCHES);
    assert_int_equal(refused, 10);
    /* The limit is the connection's: another connection creates its own. */
    int other = raw_open(c.m[1].client, 0);
    send_creates(other, 1, 1);
    assert_true(created(other, msg, sizeof(msg)) > 0);
    /* One canceled makes room for one. */
    Keel__WatchCancelRequest wcan = KEEL__WATCH_CANCEL_REQUEST__INIT;
    wcan.watch_id = 500;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.id = 5000;
    req.body_case = KEEL__REQUEST__BODY_WATCH_CANCEL;
    req.watch_cancel = &wcan;
    Keel__Response *r = raw_call(fd, &req);
    assert_int_equal(r->id, 5000);
    assert_null(r->error);
    assert_true(r->watch->canceled);
    keel__response__free_unpacked(r, NULL);
    send_creates(fd, 6000, 2);
    assert_true(created(fd, msg, sizeof(msg)) > 0);
    assert_int_equal(created(fd, msg, sizeof(msg)), -KEEL__ERROR_CODE__TOO_MANY_REQUESTS);
    /* The watches work: a write under w/ reaches all 1000 on fd. */
    assert_int_equal(raw_put(ready, 7000, "w/x", (const uint8_t *)"1", 1), 0);
    int events = 0;
    for (int i = 0; i < MAX_WATCHES; i++) {
        r = raw_response(fd);
        assert_int_equal(r->body_case, KEEL__RESPONSE__BODY_WATCH);
        events += (int)r->watch->n_events;
        keel__response__free_unpacked(r, NULL);
    }
    assert_int_equal(events, MAX_WATCHES);
    close(other);
    close(fd);
    close(ready);
    still_serving(&c, b);
}

/* ---- leases ---- */

#define QUOTA  (1024 * 1024)
#define FILLER (QUOTA - 8 * 1024)
#define GRANTS 2000

/* The NOSPACE alarm's member (0: none raised), and the operator's disarm of it. */
static uint64_t nospace_alarm(struct keel *k, bool disarm)
{
    Keel__AlarmRequest ar = KEEL__ALARM_REQUEST__INIT;
    ar.action = disarm ? KEEL__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE
                       : KEEL__ALARM_REQUEST__ALARM_ACTION__GET;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ALARM;
    req.alarm = &ar;
    Keel__Response *r = NULL;
    assert_int_equal(keel_do(k, &req, &r), 0);
    uint64_t member = r->alarm && r->alarm->n_alarms > 0 ? r->alarm->alarms[0]->memberid : 0;
    keel_free(r);
    return member;
}

static void leases(void **state)
{
    (void)state;
    struct tc_cluster c;
    int fd = raw_one_member(&c, "limits-lease", "--quota-bytes 1048576");
    struct keel *k = client(&c);
    /* The quota is cluster state: the first leader writes it into the log. */
    long long deadline = tc_now_ms() + 20000;
    for (int64_t quota = 0; quota != QUOTA;) {
        Keel__StatusResponse *st = NULL;
        if (keel_status(k, c.m[1].client, &st) == 0) {
            quota = st->quotabytes;
            keel_free(st);
        }
        assert_true(tc_now_ms() < deadline);
        if (quota != QUOTA)
            tu_sleep_ms(20);
    }
    struct tb_bystander *b = tb_start(&c, 1, TB_READS);
    uint8_t *val = malloc(FILLER);
    assert_non_null(val);
    memset(val, 'f', FILLER);
    assert_int_equal(raw_put(fd, 1, "filler", val, FILLER), 0);
    free(val);
    /* Grants in one write until the quota refuses them. */
    Keel__LeaseGrantRequest g = KEEL__LEASE_GRANT_REQUEST__INIT;
    g.ttl = 600;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
    req.lease_grant = &g;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; i < GRANTS; i++) {
        req.id = 100 + (uint64_t)i;
        raw_append(&buf, &len, &cap, &req);
    }
    raw_send(fd, buf, len);
    free(buf);
    int granted = 0, nospace = 0;
    int64_t some_lease = 0;
    for (int i = 0; i < GRANTS; i++) {
        Keel__Response *r = raw_response(fd);
        if (r->error == NULL) {
            granted++;
            some_lease = r->lease_grant->id;
        } else {
            assert_int_equal(r->error->code, KEEL__ERROR_CODE__NO_SPACE);
            assert_true(contains(r->error->message, "database space exceeded"));
            nospace++;
        }
        keel__response__free_unpacked(r, NULL);
    }
    print_message("%d leases granted, %d refused: NO_SPACE\n", granted, nospace);
    assert_true(granted > 0);
    assert_true(nospace > 0);
    assert_true(tb_progress(b, 3, 20000));
    /* The quota is the cluster's: libkeel's writes are refused too, with the same code. */
    assert_int_equal(keel_lease_grant(k, 600, 0, NULL), KEEL_ENOSPACE);
    assert_int_equal(keel_put(k, "more", 4, "x", 1, NULL, NULL), KEEL_ENOSPACE);
    /* The first refusal raised the NOSPACE alarm: a revoke makes room for one more lease, but
     * grants wait for the operator's disarm; then one fits, and the next raises it again. */
    assert_true(nospace_alarm(k, false) != 0);
    assert_int_equal(keel_lease_revoke(k, some_lease), 0);
    assert_int_equal(keel_lease_grant(k, 600, 0, NULL), KEEL_ENOSPACE);
    assert_true(nospace_alarm(k, true) != 0);
    assert_int_equal(nospace_alarm(k, false), 0);
    assert_int_equal(keel_lease_grant(k, 600, 0, NULL), 0);
    assert_int_equal(keel_lease_grant(k, 600, 0, NULL), KEEL_ENOSPACE);
    assert_true(nospace_alarm(k, false) != 0);
    /* Deleting the filler adds to history; compacting it away makes room for writes. */
    Keel__DeleteRangeRequest del = KEEL__DELETE_RANGE_REQUEST__INIT;
    del.key.data = (uint8_t *)"filler";
    del.key.len = 6;
    Keel__Request req_del = KEEL__REQUEST__INIT;
    req_del.body_case = KEEL__REQUEST__BODY_DELETE_RANGE;
    req_del.delete_range = &del;
    Keel__Response *r = NULL;
    assert_int_equal(keel_do(k, &req_del, &r), 0);
    assert_int_equal(r->delete_range->deleted, 1);
    int64_t rev = r->header->revision;
    keel_free(r);
    assert_int_equal(keel_put(k, "more", 4, "x", 1, NULL, NULL), KEEL_ENOSPACE);
    assert_int_equal(keel_compact(k, rev), 0);
    assert_int_equal(keel_put(k, "more", 4, "x", 1, NULL, NULL), KEEL_ENOSPACE); /* alarm */
    assert_true(nospace_alarm(k, true) != 0);
    assert_int_equal(keel_put(k, "more", 4, "x", 1, NULL, NULL), 0);
    keel_close(k);
    close(fd);
    still_serving(&c, b);
}

/* ---- half a frame, then a stall ---- */

#define STALLED     20
#define STALL_VALUE 1000000
/* What the member may gain while STALLED clients each hold half a STALL_VALUE frame: the
 * decoder of each holds what was sent in a buffer of the next power of two (1 MiB), twice for
 * the realloc's old copy in ASan's quarantine, plus slack. */
#define STALL_RSS_BOUND_KB (STALLED * 2 * 1024 + 32 * 1024)

static void half_frame(void **state)
{
    (void)state;
    /* ASan's quarantine counts as RSS: bound it, so RSS shows what keeld holds. */
    char *asan = tu_asan_options_add("quarantine_size_mb=8");
    struct tc_cluster c;
    close(raw_one_member(&c, "limits-half", ""));
    tu_asan_options_restore(asan);
    struct tb_bystander *b = tb_start(&c, 1, TB_WRITES);
    uint8_t *val = malloc(STALL_VALUE);
    assert_non_null(val);
    memset(val, 'h', STALL_VALUE);
    uint8_t *frame = NULL;
    size_t len = 0, cap = 0;
    raw_append_put(&frame, &len, &cap, 1, "stalled", val, STALL_VALUE);
    free(val);
    pid_t pid = c.m[1].pid;
    long before = tc_status_kb(pid, "VmRSS");
    tc_reset_peak(pid);
    int fds[STALLED];
    for (int i = 0; i < STALLED; i++) {
        fds[i] = raw_open(c.m[1].client, 0);
        raw_send(fds[i], frame, len / 2);
    }
    /* While they stall, everyone else is served, and the stalled connections stay open: keeld
     * has no read timeout (nor has etcd). */
    assert_true(tb_progress(b, 5, 20000));
    for (int i = 0; i < STALLED; i++)
        assert_false(raw_closed(fds[i], 10));
    long peak = tc_status_kb(pid, "VmHWM");
    print_message("RSS %ld kB before, peak %ld kB (+%ld kB; bound %d kB)\n", before, peak,
                  peak - before, STALL_RSS_BOUND_KB);
    assert_true(peak - before <= STALL_RSS_BOUND_KB);
    /* One finishes its frame and is answered; the others leave mid-frame and are told so. */
    raw_send(fds[0], frame + len / 2, len - len / 2);
    Keel__Response *r = raw_response(fds[0]);
    assert_int_equal(r->id, 1);
    assert_null(r->error);
    keel__response__free_unpacked(r, NULL);
    for (int i = 1; i < STALLED; i++) {
        shutdown(fds[i], SHUT_WR);
        r = raw_response(fds[i]);
        assert_non_null(r->error);
        assert_int_equal(r->error->code, KEEL__ERROR_CODE__BAD_FRAME);
        assert_true(contains(r->error->message, "connection ended inside a frame"));
        keel__response__free_unpacked(r, NULL);
        assert_true(raw_closed(fds[i], RAW_WAIT_MS));
    }
    for (int i = 0; i < STALLED; i++)
        close(fds[i]);
    free(frame);
    still_serving(&c, b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest key_size_t[] = {cmocka_unit_test(key_size)};
    const struct CMUnitTest value_size_t[] = {cmocka_unit_test(value_size)};
    const struct CMUnitTest txn_ops_t[] = {cmocka_unit_test(txn_ops)};
    const struct CMUnitTest reply_size_t[] = {cmocka_unit_test(reply_size)};
    const struct CMUnitTest connections_t[] = {cmocka_unit_test(connections)};
    const struct CMUnitTest descriptors_t[] = {cmocka_unit_test(descriptors)};
    const struct CMUnitTest watches_t[] = {cmocka_unit_test(watches)};
    const struct CMUnitTest leases_t[] = {cmocka_unit_test(leases)};
    const struct CMUnitTest half_frame_t[] = {cmocka_unit_test(half_frame)};
    const struct tu_group groups[] = {
        {"key_size", key_size_t, 1},       {"value_size", value_size_t, 1},
        {"txn_ops", txn_ops_t, 1},         {"reply_size", reply_size_t, 1},
        {"connections", connections_t, 1}, {"descriptors", descriptors_t, 1},
        {"watches", watches_t, 1},         {"leases", leases_t, 1},
        {"half_frame", half_frame_t, 1}};
    return tu_run_groups("test_limits_table", argc, argv, groups,
                         sizeof(groups) / sizeof(groups[0]));
}
