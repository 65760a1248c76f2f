/*
 * keeld's pure pieces: the raft entry format (odd lengths never reach raft), flag parsing, the
 * id map, and fitting --max-connections to the descriptor limit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include <arpa/inet.h>

#include "config.h"
#include "entry.h"
#include "err.h"
#include "fdlimit.h"
#include "handshake.h"
#include "log.h"
#include "u64map.h"

static void entries_are_padded_to_8(void **state)
{
    (void)state;
    /* Every payload size from 0 to 300 bytes: the entry is always a multiple of 8. */
    for (size_t vlen = 0; vlen < 300; vlen++) {
        char *value = malloc(vlen + 1);
        memset(value, 'v', vlen);
        Keel__PutRequest put = KEEL__PUT_REQUEST__INIT;
        put.key.data = (uint8_t *)"k";
        put.key.len = 1;
        put.value.data = (uint8_t *)value;
        put.value.len = vlen;
        Keel__Command cmd = KEEL__COMMAND__INIT;
        cmd.op_case = KEEL__COMMAND__OP_PUT;
        cmd.put = &put;
        Keel__Command *cmds[] = {&cmd};
        Keel__CommandBatch batch = KEEL__COMMAND_BATCH__INIT;
        batch.commands = cmds;
        batch.n_commands = 1;
        struct raft_buffer buf;
        assert_int_equal(keel_entry_encode(&batch, &buf), 0);
        assert_int_equal(buf.len % 8, 0);
        assert_int_equal(keel_entry_check(&buf), 0);
        const uint8_t *payload;
        size_t len;
        assert_int_equal(keel_entry_decode(&buf, &payload, &len), 0);
        Keel__CommandBatch *back = keel__command_batch__unpack(NULL, len, payload);
        assert_non_null(back);
        assert_int_equal(back->commands[0]->put->value.len, vlen);
        keel__command_batch__free_unpacked(back, NULL);
        raft_free(buf.base);
        free(value);
    }
}

static void odd_lengths_are_refused(void **state)
{
    (void)state;
    uint8_t raw[64] = {0x4b, 0x45, 0x45, 0x4c, 4, 0, 0, 0};
    for (size_t len = 0; len < sizeof(raw); len++) {
        struct raft_buffer buf = {raw, len};
        int want = (len >= 16 && len % 8 == 0) ? 0 : KEEL_EINVAL;
        /* len 8 holds a header announcing 4 payload bytes that are not there */
        assert_int_equal(keel_entry_check(&buf), want);
    }
    /* a payload length beyond the buffer */
    uint8_t bad[16] = {0x4b, 0x45, 0x45, 0x4c, 200, 0, 0, 0};
    struct raft_buffer b = {bad, sizeof(bad)};
    assert_int_equal(keel_entry_check(&b), KEEL_EINVAL);
}

static int parse(const char *line, struct keel_config *c, char *err, size_t errlen)
{
    char *copy = strdup(line);
    char *argv[32];
    int argc = 0;
    argv[argc++] = "keeld";
    for (char *tok = strtok(copy, " "); tok && argc < 31; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    int rv = keel_config_parse(c, argc, argv, err, errlen);
    free(copy);
    return rv;
}

#define GOOD                                                                                       \
    "--name a --data-dir /tmp/x --listen-client 127.0.1.1:2379 --listen-peer 127.0.1.1:2380 "      \
    "--initial-cluster a=127.0.1.1:2380@z1,b=127.0.2.1:2380@z2,c=127.0.3.1:2380@z3"

static void config_accepts_good_flags(void **state)
{
    (void)state;
    struct keel_config c;
    char err[256] = "";
    assert_int_equal(parse(GOOD " --heartbeat-ms 50 --election-ms 500", &c, err, sizeof(err)), 0);
    assert_int_equal(c.n_members, 3);
    assert_string_equal(c.zone, "z1");
    assert_int_equal(c.heartbeat_ms, 50);
    assert_int_equal(c.member_id, c.members[0].id);
    assert_true(c.members[0].id != c.members[1].id);
    /* the raft log's bounds: bytes first, the entry counts as upper bounds */
    assert_int_equal(c.snapshot_bytes, 32u << 20);
    assert_int_equal(c.snapshot_trailing_bytes, 16u << 20);
    assert_int_equal(c.snapshot_threshold, 65536);
    assert_int_equal(c.raft_segment_bytes, 8u << 20);
    uint64_t cluster = c.cluster_id;
    keel_config_close(&c);
    assert_int_equal(parse(GOOD " --snapshot-bytes 67108864 --snapshot-trailing-bytes 1048576 "
                                "--raft-segment-bytes 1114112",
                           &c, err, sizeof(err)),
                     0);
    assert_int_equal(c.snapshot_bytes, 64u << 20);
    assert_int_equal(c.snapshot_trailing_bytes, 1u << 20);
    assert_int_equal(c.raft_segment_bytes, 17u << 16);
    keel_config_close(&c);
    /* the same list on another member gives the same cluster id */
    assert_int_equal(parse("--name b --data-dir /tmp/y --listen-client 127.0.2.1:2379 "
                           "--listen-peer 127.0.2.1:2380 --initial-cluster "
                           "a=127.0.1.1:2380@z1,b=127.0.2.1:2380@z2,c=127.0.3.1:2380@z3",
                           &c, err, sizeof(err)),
                     0);
    assert_int_equal(c.cluster_id, cluster);
    keel_config_close(&c);
    /* peer TLS: off unless the three files are given (transport.c reads them) */
    assert_int_equal(parse(GOOD, &c, err, sizeof(err)), 0);
    assert_string_equal(c.peer_cert_file, "");
    keel_config_close(&c);
    assert_int_equal(parse(GOOD " --peer-cert-file /c.pem --peer-key-file /k.pem "
                                "--peer-trusted-ca-file /ca.pem",
                           &c, err, sizeof(err)),
                     0);
    assert_string_equal(c.peer_cert_file, "/c.pem");
    assert_string_equal(c.peer_key_file, "/k.pem");
    assert_string_equal(c.peer_ca_file, "/ca.pem");
    keel_config_close(&c);
}

static void config_rejects_bad_flags(void **state)
{
    (void)state;
    struct {
        const char *line;
        const char *needle; /* the message must name what was wrong */
    } cases[] = {
        {GOOD " --bogus 1", "unknown option"},
        {GOOD " --heartbeat-ms", "needs a value"},
        {GOOD " --heartbeat-ms 2000", "must be below"},
        {GOOD " --election-ms abc", "not a number"},
        {GOOD " --quota-bytes -5", "--quota-bytes"},
        {GOOD " --zone z9", "--zone"},
        {GOOD " --listen-metrics 127.0.1.1:2379", "--listen-metrics 127.0.1.1:2379 is the client"},
        {GOOD " --listen-metrics metrics:9000", "--listen-metrics"},
        {GOOD " --initial-cluster-state old", "--initial-cluster-state 'old'"},
        {GOOD " --snapshot-bytes 1000", "--snapshot-bytes: 1000 is out of range"},
        {GOOD " --snapshot-trailing-bytes 1MiB",
         "--snapshot-trailing-bytes: '1MiB' is not a number"},
        {GOOD " --raft-segment-bytes 1048577", "--raft-segment-bytes: 1048577 is not a multiple"},
        {GOOD " --raft-segment-bytes 4294967296",
         "--raft-segment-bytes: 4294967296 is out of range"},
        {"--name a --data-dir /tmp/x --listen-client 127.0.1.1:2379 --listen-peer 127.0.1.1:2380",
         "--initial-cluster is required"},
        {"--name q --data-dir /tmp/x --listen-client 127.0.1.1:2379 --listen-peer 127.0.1.1:2380 "
         "--initial-cluster a=127.0.1.1:2380",
         "not in --initial-cluster"},
        {"--name a --data-dir /tmp/x --listen-client 127.0.1.1:2379 --listen-peer 127.0.1.1:2381 "
         "--initial-cluster a=127.0.1.1:2380",
         "differs"},
        {"--name a --data-dir /tmp/x --listen-client localhost:2379 --listen-peer 127.0.1.1:2380 "
         "--initial-cluster a=127.0.1.1:2380",
         "--listen-client"},
        {"--name a --data-dir /tmp/x --listen-client 127.0.1.1:2379 --listen-peer 127.0.1.1:2380 "
         "--initial-cluster a=127.0.1.1:2380,a=127.0.2.1:2380",
         "twice"},
        {"--name a --data-dir /tmp/x --listen-client 127.0.1.1:2379 --listen-peer 127.0.1.1:2380 "
         "--initial-cluster a=127.0.1.1:99999",
         "port"},
        {GOOD " extra", "unexpected argument"},
        /* peer TLS: the three files together or none */
        {GOOD " --peer-cert-file /tmp/c.pem --peer-key-file /tmp/k.pem",
         "--peer-cert-file, --peer-key-file and --peer-trusted-ca-file go together"},
        {GOOD " --peer-trusted-ca-file /tmp/ca.pem",
         "--peer-cert-file, --peer-key-file and --peer-trusted-ca-file go together"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct keel_config c;
        char err[256] = "";
        int rv = parse(cases[i].line, &c, err, sizeof(err));
        keel_config_close(&c);
        if (rv != -1 || strstr(err, cases[i].needle) == NULL)
            fail_msg("case %zu: rv %d, message '%s', expected it to mention '%s'", i, rv, err,
                     cases[i].needle);
    }
}

/* The peer handshake's bytes, as member a of GOOD checks them (the rule is transport.h's). */
static void handshake_names_a_configured_peer(void **state)
{
    (void)state;
    struct keel_config c;
    char err[256] = "", why[256];
    assert_int_equal(parse(GOOD, &c, err, sizeof(err)), 0);
    const struct keel_member_conf *b = &c.members[1];
    struct keel_handshake h = {.cluster_id = c.cluster_id,
                               .id = b->id,
                               .peer = b->peer,
                               .client = "127.0.2.1:2379",
                               .name = b->name,
                               .zone = b->zone};
    struct keel_handshake_rule rule = {.cluster_id = c.cluster_id,
                                       .self_id = c.member_id,
                                       .lookup = keel_handshake_config_peer,
                                       .data = &c};
    struct keel_handshake_peer p;
    uint8_t buf[KEEL_HANDSHAKE_LEN];
    keel_handshake_encode(&h, buf);
    struct in_addr from, elsewhere;
    inet_pton(AF_INET, "127.0.2.1", &from);
    inet_pton(AF_INET, "127.0.3.1", &elsewhere);
    assert_int_equal(keel_handshake_check_head(buf, why, sizeof(why)), 0);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), 0);
    assert_true(p.id == b->id && p.cluster_id == c.cluster_id && p.kind == KEEL_HANDSHAKE_RAFT);
    /* A checkpoint fetch opens with its own magic, of the same size and version, and passes the
     * same rule; it says which it is. */
    h.kind = KEEL_HANDSHAKE_FETCH;
    keel_handshake_encode(&h, buf);
    assert_int_equal(keel_handshake_check_head(buf, why, sizeof(why)), 0);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), 0);
    assert_true(p.kind == KEEL_HANDSHAKE_FETCH && p.id == b->id);
    assert_int_equal(keel_handshake_check(&rule, buf, elsewhere, &p, why, sizeof(why)), -1);
    h.kind = KEEL_HANDSHAKE_RAFT;
    keel_handshake_encode(&h, buf);
    assert_string_equal(p.peer, b->peer);
    assert_string_equal(p.name, b->name);
    assert_string_equal(p.client, "127.0.2.1:2379");
    assert_string_equal(p.zone, "z2");
    /* From another member's host, of another cluster, as this member itself: refused. */
    assert_int_equal(keel_handshake_check(&rule, buf, elsewhere, &p, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "another host"));
    h.cluster_id ^= 1;
    keel_handshake_encode(&h, buf);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "from cluster"));
    /* A member that knows no cluster yet (it joins one) takes any, and says which. */
    rule.cluster_id = 0;
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), 0);
    assert_true(p.cluster_id == (c.cluster_id ^ 1));
    rule.cluster_id = c.cluster_id;
    h.cluster_id ^= 1;
    h.id = c.member_id;
    h.peer = c.members[0].peer;
    keel_handshake_encode(&h, buf);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), -1);
    /* An id the lookup does not know (a removed member, say) is refused, naming it. */
    h.id = 12345;
    keel_handshake_encode(&h, buf);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "no member of this cluster"));
    /* Another version is refused by its head alone; a field without a NUL is cut, not overrun. */
    keel_handshake_encode(&h, buf);
    buf[8] = 1;
    assert_int_equal(keel_handshake_check_head(buf, why, sizeof(why)), -1);
    h.id = b->id;
    h.peer = b->peer;
    keel_handshake_encode(&h, buf);
    memset(buf + KEEL_HANDSHAKE_LEN - 64, 'z', 64);
    assert_int_equal(keel_handshake_check(&rule, buf, from, &p, why, sizeof(why)), 0);
    assert_int_equal(strlen(p.zone), 63);
    keel_config_close(&c);
}

/* --log-format json: one JSON object per line, the message escaped (quotes, backslashes, control
 * characters), and cut lines still close the object. Text lines keep their shape. */
static void log_lines_text_and_json(void **state)
{
    (void)state;
    char out[512];
    struct timespec ts = {.tv_sec = 1796647421, .tv_nsec = 242000000};
    keel_log_setup(KEEL_LOG_INFO, "m1");
    keel_log_format(false, "z1");
    keel_log_line(out, sizeof(out), KEEL_LOG_WARN, &ts, "plain");
    assert_non_null(strstr(out, " WARN  m1 plain"));
    keel_log_format(true, "z1");
    keel_log_line(out, sizeof(out), KEEL_LOG_ERROR, &ts, "say \"hi\"\\ \n\x01");
    assert_string_equal(out, "{\"ts\":\"2026-12-07T12:43:41.242Z\",\"level\":\"error\","
                             "\"member\":\"m1\",\"zone\":\"z1\",\"msg\":\"say \\\"hi\\\"\\\\ "
                             "\\u000a\\u0001\"}");
    char small[64];
    size_t n = keel_log_line(small, sizeof(small), KEEL_LOG_INFO, &ts,
                             "a long message, longer "
                             "than the line has room "
                             "for");
    assert_int_equal(n, strlen(small));
    assert_true(n == sizeof(small) - 1 && small[n - 1] == '}' && small[n - 2] == '"');
    keel_log_format(false, "");
    keel_log_setup(KEEL_LOG_INFO, "keeld");
}

static void u64map_put_get_del(void **state)
{
    (void)state;
    struct keel_u64map m;
    keel_u64map_init(&m);
    static int vals[5000];
    for (uint64_t k = 1; k <= 5000; k++)
        assert_int_equal(keel_u64map_put(&m, k * 7919, &vals[k - 1]), 0);
    assert_int_equal(m.n, 5000);
    for (uint64_t k = 1; k <= 5000; k += 2)
        assert_ptr_equal(keel_u64map_del(&m, k * 7919), &vals[k - 1]);
    for (uint64_t k = 1; k <= 5000; k++)
        assert_ptr_equal(keel_u64map_get(&m, k * 7919), k % 2 ? NULL : &vals[k - 1]);
    assert_null(keel_u64map_del(&m, 12345));
    assert_int_equal(m.n, 2500);
    keel_u64map_close(&m);
}

/* The soft limit rises to what the connections need while the hard limit allows; past the hard
 * limit the connections are lowered to what it leaves; a limit that leaves none is refused.
 * Last in this binary: a lowered hard limit cannot be raised again. */
static void fdlimit_fits_connections(void **state)
{
    (void)state;
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    char err[256];
    size_t max;
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= 500 + KEEL_FD_RESERVE) {
        struct rlimit low = {400, rl.rlim_max};
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
        max = 500;
        assert_int_equal(keel_fdlimit_fit(&max, err, sizeof(err)), 0);
        assert_int_equal(max, 500);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
        assert_int_equal(rl.rlim_cur, 500 + KEEL_FD_RESERVE);
    }
    struct rlimit hard = {300, 300};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &hard), 0);
    max = 4096;
    assert_int_equal(keel_fdlimit_fit(&max, err, sizeof(err)), 0);
    assert_int_equal(max, 300 - KEEL_FD_RESERVE);
    max = 10;
    assert_int_equal(keel_fdlimit_fit(&max, err, sizeof(err)), 0);
    assert_int_equal(max, 10);
    struct rlimit none = {KEEL_FD_RESERVE, KEEL_FD_RESERVE};
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &none), 0);
    assert_int_equal(keel_fdlimit_fit(&max, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "RLIMIT_NOFILE 256"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(entries_are_padded_to_8),
                                       cmocka_unit_test(odd_lengths_are_refused),
                                       cmocka_unit_test(config_accepts_good_flags),
                                       cmocka_unit_test(config_rejects_bad_flags),
                                       cmocka_unit_test(handshake_names_a_configured_peer),
                                       cmocka_unit_test(log_lines_text_and_json),
                                       cmocka_unit_test(u64map_put_get_del),
                                       cmocka_unit_test(fdlimit_fits_connections)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
