/*
 * keelctl: keel's command-line client, following etcdctl's commands, flags and output formats
 * (simple, json, table) so that an etcd user's habits and scripts carry over.
 *
 * Key-value commands use the synchronous API; `endpoint health` checks every endpoint at once
 * with one asynchronous client per endpoint on a single loop, as etcdctl does with goroutines, and
 * `watch` and `lease keep-alive` run an asynchronous client on the main thread's loop, with
 * SIGINT/SIGTERM as handles of that loop, so output and shutdown need no locking.
 *
 * Exit status: 0 success, 1 failure ("Error: <message>" on stderr), 2 bad usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "ctl_parse.h"
#include "hostport.h"
#include "keel/keel.h"
#include "snapfile.h"
#include "store.h"

#define EXIT_USAGE 2

enum out_fmt { OUT_SIMPLE, OUT_JSON, OUT_TABLE };

struct ctl {
    /* global flags */
    const char *endpoints;
    const char *zone;
    const char *source;
    const char *timeout;
    const char *command_timeout;
    const char *dial_timeout;
    const char *write_out;
    const char *user;     /* --user NAME[:PASSWORD] */
    const char *password; /* --password */
    bool help;
    const char *cacert, *cert, *key; /* TLS (etcdctl's names) */
    bool insecure_skip_tls_verify;

    enum out_fmt fmt;
    uint64_t timeout_ms;
    uint64_t dial_timeout_ms;
    struct keel_arena arena;
    struct keel *k;
    const char *usage; /* of the running command */
    char *token;       /* the --user's token, for the asynchronous clients and snapshots */
};

static struct ctl g_ctl;

static const char *const usage_text =
    "Usage: keelctl [global flags] COMMAND [flags] [args]\n"
    "\n"
    "Commands:\n"
    "  put [--lease ID] [--prev-kv] [--ignore-value] [--ignore-lease] KEY [VALUE]\n"
    "  get [--prefix|--from-key] [--rev N] [--limit N] [--keys-only|--count-only]\n"
    "      [--print-value-only] [--consistency l|s] [--order ASCEND|DESCEND]\n"
    "      [--sort-by KEY|VERSION|CREATE|MODIFY|VALUE] KEY [RANGE_END]\n"
    "  del [--prefix|--from-key] [--prev-kv] KEY [RANGE_END]\n"
    "  watch [--prefix] [--rev N] [--prev-kv] [--progress-notify] KEY [RANGE_END]\n"
    "      (until SIGINT/SIGTERM; --count N: exit after N events)\n"
    "  txn [-i|--interactive] [--compare C]... [--then OP]... [--else OP]...\n"
    "      (without them: read from stdin)\n"
    "  compaction [--physical] REV   (--physical: accepted; keel always compacts physically)\n"
    "  member list [--consistency l|s]\n"
    "  member add NAME --peer-urls URL [--learner] [--zone Z] [--force]\n"
    "      (prints the flags the new member starts with; a member added without --learner\n"
    "      votes once it has caught up)\n"
    "  member update ID --peer-urls URL   (the member restarts with --listen-peer there)\n"
    "  member remove ID [--force] | member promote ID [--force]   (hex member ids;\n"
    "      --force: past the check that losing one zone never loses the quorum)\n"
    "  endpoint status | endpoint health\n"
    "  lease grant TTL | lease revoke ID | lease timetolive ID [--keys] | lease list\n"
    "  lease keep-alive [--once] ID\n"
    "  alarm list | alarm disarm\n"
    "  defrag [--cluster]          (each endpoint's member, or every member)\n"
    "  move-leader ID              (hex member id; the endpoints must include the leader)\n"
    "  snapshot save FILE          (one endpoint: a consistent copy of its store)\n"
    "  snapshot status FILE\n"
    "  snapshot restore FILE --name N --initial-cluster LIST [--data-dir D]\n"
    "      [--skip-hash-check]        (a new member's data dir; LIST as keeld's)\n"
    "  user add NAME[:PASSWORD] [--new-user-password P] [--interactive=false]\n"
    "  user delete|get NAME | user list | user passwd NAME[:PASSWORD] [--new-user-password P]\n"
    "  user grant-role|revoke-role NAME ROLE\n"
    "      (keelctl never prompts: the password comes from NAME:PASSWORD or the flag)\n"
    "  role add|delete|get NAME | role list\n"
    "  role grant-permission [--prefix|--from-key] ROLE read|write|readwrite KEY [END]\n"
    "  role revoke-permission [--prefix|--from-key] ROLE KEY [END]\n"
    "  auth enable | auth disable | auth status\n"
    "  version\n"
    "\n"
    "Global flags:\n"
    "  --endpoints a:p,b:p   client addresses (default $KEEL_ENDPOINTS, else 127.0.0.1:2379)\n"
    "  --zone Z              prefer members of zone Z for serializable reads (default $KEEL_ZONE)\n"
    "  --source-address IP   bind connections to this local IPv4 address\n"
    "  --timeout D           per-command timeout, e.g. 5s (default), 500ms, 2 (seconds)\n"
    "  --dial-timeout D      connect timeout (default 2s)\n"
    "  --command-timeout D   the same as --timeout (etcdctl's name for it)\n"
    "  -w, --write-out F     simple (default), json or table\n"
    "  --user NAME[:PW]      authenticate as this user (auth enabled)\n"
    "  --password PW         its password, when not given after the colon\n"
    "  --cacert FILE         TLS: the CA (PEM) members' certificates must chain to; TLS is on\n"
    "                        with any of these four, or an https:// endpoint\n"
    "  --cert FILE           TLS: this client's certificate (PEM), for members that\n"
    "                        require one (its CN names the client)\n"
    "  --key FILE            TLS: its private key (PEM)\n"
    "  --insecure-skip-tls-verify\n"
    "                        TLS without checking the member's certificate (tests only)\n"
    "  -h, --help            this text; after a command: that command's usage\n"
    "  --version             keelctl's version (alone)\n";

/* ---------------------------------------------------------------------------------------------
 * Exits
 */

static void ctl_cleanup(void)
{
    if (g_ctl.k) {
        keel_close(g_ctl.k);
        g_ctl.k = NULL;
    }
    free(g_ctl.token);
    g_ctl.token = NULL;
    keel_arena_close(&g_ctl.arena);
}

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    fputs("Error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (code == EXIT_USAGE && g_ctl.usage)
        fprintf(stderr, "Usage: keelctl %s\n", g_ctl.usage);
    ctl_cleanup();
    exit(code);
}

static void die_keel(int rv)
{
    const char *msg = keel_errmsg();
    die(1, "%s", msg && msg[0] ? msg : keel_strerror(rv));
}

/* ---------------------------------------------------------------------------------------------
 * Flags and connection
 */

static size_t global_flags(struct ctl *c, struct ctl_flag *t)
{
    struct ctl_flag f[] = {
        {"endpoints", 0, CTL_STR, &c->endpoints, false},
        {"zone", 0, CTL_STR, &c->zone, false},
        {"source-address", 0, CTL_STR, &c->source, false},
        {"timeout", 0, CTL_STR, &c->timeout, false},
        {"command-timeout", 0, CTL_STR, &c->command_timeout, false},
        {"dial-timeout", 0, CTL_STR, &c->dial_timeout, false},
        {"write-out", 'w', CTL_STR, &c->write_out, false},
        {"user", 0, CTL_STR, &c->user, false},
        {"password", 0, CTL_STR, &c->password, false},
        {"help", 'h', CTL_BOOL, &c->help, false},
        {"cacert", 0, CTL_STR, &c->cacert, false},
        {"cert", 0, CTL_STR, &c->cert, false},
        {"key", 0, CTL_STR, &c->key, false},
        {"insecure-skip-tls-verify", 0, CTL_BOOL, &c->insecure_skip_tls_verify, false},
    };
    memcpy(t, f, sizeof(f));
    return sizeof(f) / sizeof(f[0]);
}

/* Parse a command's arguments: its own flags plus the global ones, which may follow it. */
static void parse_args(struct ctl *c, const struct ctl_flag *cmd_flags, int argc, char **argv,
                       struct ctl_args *pos)
{
    struct ctl_flag table[40];
    size_t n = 0;
    if (cmd_flags)
        for (; cmd_flags[n].name; n++)
            table[n] = cmd_flags[n];
    size_t cmd_n = n;
    n += global_flags(c, table + n);
    table[n].name = NULL;

    size_t *lens = keel_arena_alloc(&c->arena, (size_t)(argc + 1) * sizeof(*lens));
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    struct ctl_args in = {argc, argv, lens};
    char err[CTL_ERR_MAX];
    if (ctl_flags_parse(table, &in, &c->arena, pos, err) != 0)
        die(EXIT_USAGE, "%s", err);
    /* Copy back whether each command flag was seen (the table is a copy). */
    if (cmd_flags)
        for (size_t i = 0; i < cmd_n; i++)
            ((struct ctl_flag *)cmd_flags)[i].seen = table[i].seen;
    if (c->help) {
        printf("Usage: keelctl %s\n", c->usage);
        ctl_cleanup();
        exit(0);
    }
}

static void apply_globals(struct ctl *c)
{
    const char *w = c->write_out ? c->write_out : "simple";
    if (strcmp(w, "simple") == 0)
        c->fmt = OUT_SIMPLE;
    else if (strcmp(w, "json") == 0)
        c->fmt = OUT_JSON;
    else if (strcmp(w, "table") == 0)
        c->fmt = OUT_TABLE;
    else
        die(EXIT_USAGE, "unsupported output format \"%s\" (use simple, json or table)", w);
    const char *t = c->timeout ? c->timeout : c->command_timeout ? c->command_timeout : "5s";
    if (ctl_parse_duration_ms(t, &c->timeout_ms) != 0 || c->timeout_ms == 0 ||
        c->timeout_ms > UINT32_MAX)
        die(EXIT_USAGE, "invalid --timeout \"%s\"", t);
    const char *d = c->dial_timeout ? c->dial_timeout : "2s";
    if (ctl_parse_duration_ms(d, &c->dial_timeout_ms) != 0 || c->dial_timeout_ms == 0 ||
        c->dial_timeout_ms > UINT32_MAX)
        die(EXIT_USAGE, "invalid --dial-timeout \"%s\"", d);
    if (c->endpoints == NULL || c->endpoints[0] == '\0') {
        const char *env = getenv("KEEL_ENDPOINTS");
        c->endpoints = env && env[0] ? env : KEEL_DEFAULT_ENDPOINT;
    }
    if (c->zone == NULL)
        c->zone = getenv("KEEL_ZONE");
}

static void fill_options(const struct ctl *c, struct keel_options *o, const char *endpoints)
{
    memset(o, 0, sizeof(*o));
    o->endpoints = endpoints;
    o->zone = c->zone;
    o->source_address = c->source;
    o->client_name = "keelctl";
    o->dial_timeout_ms = (uint32_t)c->dial_timeout_ms;
    o->request_timeout_ms = (uint32_t)c->timeout_ms;
    o->ca_file = c->cacert;
    o->cert_file = c->cert;
    o->key_file = c->key;
    o->insecure_skip_verify = c->insecure_skip_tls_verify;
    o->token = c->token;
}

/* --user NAME[:PASSWORD] and --password: the user and password, in the arena. */
static void user_password(struct ctl *c, const char **user, const char **password)
{
    *user = NULL;
    *password = c->password ? c->password : "";
    if (c->user == NULL || c->user[0] == '\0')
        return;
    const char *colon = strchr(c->user, ':');
    if (colon == NULL || c->password != NULL) {
        *user = c->user;
        return;
    }
    size_t n = (size_t)(colon - c->user);
    char *u = keel_arena_alloc(&c->arena, n + 1);
    memcpy(u, c->user, n);
    u[n] = '\0';
    *user = u;
    *password = colon + 1;
}

/* The outcome of opening a client on c's endpoints: a usage error for addresses that do not
 * parse, else any failure ends keelctl. */
static void check_open(struct ctl *c, int rv)
{
    char why[320];
    if (rv == KEEL_EINVAL && keel_endpoints_check(c->endpoints, why, sizeof(why)) != 0)
        die(EXIT_USAGE, "invalid --endpoints \"%s\": %s", c->endpoints, why);
    if (rv == KEEL_EINVAL && keel_errmsg()[0] != '\0') /* a TLS file (--cacert, --cert, --key) */
        die(EXIT_USAGE, "%s", keel_errmsg());
    if (rv == KEEL_EINVAL)
        die(EXIT_USAGE,
            "invalid --endpoints \"%s\" or --source-address (want host:port, host an IPv4 "
            "address or a host name; --source-address an IPv4 address)",
            c->endpoints);
    if (rv != 0)
        die(1, "%s", keel_strerror(rv));
}

static struct keel *client(struct ctl *c)
{
    if (c->k)
        return c->k;
    struct keel_options o;
    fill_options(c, &o, c->endpoints);
    user_password(c, &o.user, &o.password);
    int rv = keel_open(&c->k, &o);
    if (rv != 0 && o.user != NULL && rv != KEEL_EINVAL)
        die_keel(rv); /* the authentication's own message */
    check_open(c, rv);
    return c->k;
}

/* With --user: the token for clients that are not c->k (watch, keep-alive, health, snapshot),
 * from authenticating once through c->k. */
static void need_token(struct ctl *c)
{
    if (c->user == NULL || c->token != NULL)
        return;
    c->token = keel_token(client(c));
}

static const Keel__Response *run(struct ctl *c, Keel__Request *req)
{
    const Keel__Response *resp;
    int rv = keel_do_flat(client(c), req, NULL, &resp);
    if (rv != 0)
        die_keel(rv);
    return resp;
}

static void no_table(const struct ctl *c)
{
    if (c->fmt == OUT_TABLE)
        die(EXIT_USAGE, "table is not supported as output format for this command");
}

/* ---------------------------------------------------------------------------------------------
 * Output helpers
 */

static void put_bytes(const ProtobufCBinaryData *b)
{
    if (b->len)
        fwrite(b->data, 1, b->len, stdout);
    fputc('\n', stdout);
}

static void print_kv(const Keel__KeyValue *kv, bool value_only)
{
    if (!value_only)
        put_bytes(&kv->key);
    put_bytes(&kv->value);
}

static json_object *j_b64(const ProtobufCBinaryData *b)
{
    char *s = malloc(4 * ((b->len + 2) / 3) + 1);
    if (s == NULL)
        die(1, "out of memory");
    ctl_base64(b->data, b->len, s);
    json_object *o = json_object_new_string(s);
    free(s);
    return o;
}

/* Go's encoding/json with omitempty, as etcdctl prints: zero fields are left out. */
static void j_i64(json_object *o, const char *k, int64_t v)
{
    if (v)
        json_object_object_add(o, k, json_object_new_int64(v));
}

static void j_u64(json_object *o, const char *k, uint64_t v)
{
    if (v)
        json_object_object_add(o, k, json_object_new_uint64(v));
}

static void j_bool(json_object *o, const char *k, bool v)
{
    if (v)
        json_object_object_add(o, k, json_object_new_boolean(1));
}

static void j_str(json_object *o, const char *k, const char *v)
{
    if (v && v[0])
        json_object_object_add(o, k, json_object_new_string(v));
}

static json_object *j_header(const Keel__ResponseHeader *h)
{
    json_object *o = json_object_new_object();
    if (h) {
        j_u64(o, "cluster_id", h->cluster_id);
        j_u64(o, "member_id", h->member_id);
        j_i64(o, "revision", h->revision);
        j_u64(o, "raft_term", h->raft_term);
    }
    return o;
}

static json_object *j_member(const Keel__Member *m)
{
    json_object *jm = json_object_new_object();
    j_u64(jm, "ID", m->id);
    j_str(jm, "name", m->name);
    json_object *p = json_object_new_array();
    for (size_t u = 0; u < m->n_peerurls; u++)
        json_object_array_add(p, json_object_new_string(m->peerurls[u]));
    json_object_object_add(jm, "peerURLs", p);
    json_object *cl = json_object_new_array();
    for (size_t u = 0; u < m->n_clienturls; u++)
        json_object_array_add(cl, json_object_new_string(m->clienturls[u]));
    json_object_object_add(jm, "clientURLs", cl);
    j_bool(jm, "isLearner", m->islearner);
    j_str(jm, "zone", m->zone);
    return jm;
}

static json_object *j_kv(const Keel__KeyValue *kv)
{
    json_object *o = json_object_new_object();
    if (kv->key.len)
        json_object_object_add(o, "key", j_b64(&kv->key));
    j_i64(o, "create_revision", kv->create_revision);
    j_i64(o, "mod_revision", kv->mod_revision);
    j_i64(o, "version", kv->version);
    if (kv->value.len)
        json_object_object_add(o, "value", j_b64(&kv->value));
    j_i64(o, "lease", kv->lease);
    return o;
}

static json_object *j_kvs(Keel__KeyValue **kvs, size_t n)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(a, j_kv(kvs[i]));
    return a;
}

static void j_print(json_object *o)
{
    puts(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

static json_object *j_range(const Keel__RangeResponse *r, const Keel__ResponseHeader *h)
{
    json_object *o = json_object_new_object();
    if (h)
        json_object_object_add(o, "header", j_header(h));
    if (r->n_kvs)
        json_object_object_add(o, "kvs", j_kvs(r->kvs, r->n_kvs));
    j_bool(o, "more", r->more);
    j_i64(o, "count", r->count);
    return o;
}

static json_object *j_put(const Keel__PutResponse *r, const Keel__ResponseHeader *h)
{
    json_object *o = json_object_new_object();
    if (h)
        json_object_object_add(o, "header", j_header(h));
    if (r->prev_kv)
        json_object_object_add(o, "prev_kv", j_kv(r->prev_kv));
    return o;
}

static json_object *j_del(const Keel__DeleteRangeResponse *r, const Keel__ResponseHeader *h)
{
    json_object *o = json_object_new_object();
    if (h)
        json_object_object_add(o, "header", j_header(h));
    j_i64(o, "deleted", r->deleted);
    if (r->n_prev_kvs)
        json_object_object_add(o, "prev_kvs", j_kvs(r->prev_kvs, r->n_prev_kvs));
    return o;
}

static json_object *j_txn(const Keel__TxnResponse *r, const Keel__ResponseHeader *h)
{
    json_object *o = json_object_new_object();
    if (h)
        json_object_object_add(o, "header", j_header(h));
    j_bool(o, "succeeded", r->succeeded);
    if (r->n_responses) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < r->n_responses; i++) {
            const Keel__ResponseOp *op = r->responses[i];
            json_object *inner = json_object_new_object();
            switch (op->response_case) {
            case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
                json_object_object_add(inner, "response_range", j_range(op->response_range, NULL));
                break;
            case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
                json_object_object_add(inner, "response_put", j_put(op->response_put, NULL));
                break;
            case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
                json_object_object_add(inner, "response_delete_range",
                                       j_del(op->response_delete_range, NULL));
                break;
            case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
                json_object_object_add(inner, "response_txn", j_txn(op->response_txn, NULL));
                break;
            default:
                break;
            }
            /* etcd's JSON wraps the oneof in "Response", the Go field holding it. */
            json_object *w = json_object_new_object();
            json_object_object_add(w, "Response", inner);
            json_object_array_add(a, w);
        }
        json_object_object_add(o, "responses", a);
    }
    return o;
}

static void print_range(const Keel__RangeResponse *r, bool value_only, bool count_only)
{
    if (count_only) {
        printf("%" PRId64 "\n", r->count);
        return;
    }
    for (size_t i = 0; i < r->n_kvs; i++)
        print_kv(r->kvs[i], value_only);
}

static void print_put(const Keel__PutResponse *r)
{
    puts("OK");
    if (r && r->prev_kv)
        print_kv(r->prev_kv, false);
}

static void print_del(const Keel__DeleteRangeResponse *r)
{
    printf("%" PRId64 "\n", r->deleted);
    for (size_t i = 0; i < r->n_prev_kvs; i++)
        print_kv(r->prev_kvs[i], false);
}

static void print_txn(const Keel__TxnResponse *r)
{
    puts(r->succeeded ? "SUCCESS" : "FAILURE");
    for (size_t i = 0; i < r->n_responses; i++) {
        const Keel__ResponseOp *op = r->responses[i];
        putchar('\n');
        switch (op->response_case) {
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
            print_range(op->response_range, false, false);
            break;
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_PUT:
            print_put(op->response_put);
            break;
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
            print_del(op->response_delete_range);
            break;
        case KEEL__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
            print_txn(op->response_txn);
            break;
        default:
            puts("unexpected response");
            break;
        }
    }
}

static void print_rule(const size_t *w, size_t ncol)
{
    for (size_t j = 0; j < ncol; j++) {
        putchar('+');
        for (size_t k = 0; k < w[j] + 2; k++)
            putchar('-');
    }
    puts("+");
}

/* tablewriter's look, as etcdctl -w table: upper-case centred headers, right-aligned cells. */
static void print_table(const char *const *hdr, size_t ncol, char ***rows, size_t nrows)
{
    size_t w[16] = {0};
    for (size_t j = 0; j < ncol; j++) {
        w[j] = strlen(hdr[j]);
        for (size_t i = 0; i < nrows; i++) {
            size_t l = strlen(rows[i][j]);
            if (l > w[j])
                w[j] = l;
        }
    }
    print_rule(w, ncol);
    for (size_t j = 0; j < ncol; j++) {
        size_t l = strlen(hdr[j]), gap = w[j] - l, left = gap / 2;
        printf("| %*s", (int)left, "");
        for (const char *s = hdr[j]; *s; s++)
            putchar(*s >= 'a' && *s <= 'z' ? *s - 'a' + 'A' : *s);
        printf("%*s ", (int)(gap - left), "");
    }
    puts("|");
    print_rule(w, ncol);
    for (size_t i = 0; i < nrows; i++) {
        for (size_t j = 0; j < ncol; j++)
            printf("| %*s ", (int)w[j], rows[i][j]);
        puts("|");
    }
    print_rule(w, ncol);
}

static char *fmt_cell(struct ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static char *fmt_cell(struct ctl *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    char *s = keel_arena_memdup(&c->arena, buf, strlen(buf) + 1);
    if (s == NULL)
        die(1, "out of memory");
    return s;
}

static char *join(struct ctl *c, char **items, size_t n, const char *sep)
{
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(items[i]) + strlen(sep);
    char *s = keel_arena_alloc(&c->arena, len);
    if (s == NULL)
        die(1, "out of memory");
    s[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(s, sep);
        strcat(s, items[i]);
    }
    return s;
}

static void print_rows_simple(char ***rows, size_t nrows, size_t ncol)
{
    for (size_t i = 0; i < nrows; i++) {
        for (size_t j = 0; j < ncol; j++)
            printf("%s%s", j ? ", " : "", rows[i][j]);
        putchar('\n');
    }
}

static char ***alloc_rows(struct ctl *c, size_t nrows, size_t ncol)
{
    char ***rows = keel_arena_alloc(&c->arena, (nrows ? nrows : 1) * sizeof(*rows));
    for (size_t i = 0; rows && i < nrows; i++)
        rows[i] = keel_arena_alloc(&c->arena, ncol * sizeof(**rows));
    if (rows == NULL || (nrows && rows[nrows - 1] == NULL))
        die(1, "out of memory");
    return rows;
}

/* ---------------------------------------------------------------------------------------------
 * Key-value commands
 */

static void read_stdin_value(struct ctl *c, struct ctl_args *pos)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        die(1, "out of memory");
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL) {
                free(buf);
                die(1, "out of memory");
            }
            buf = nb;
        }
    }
    if (n == 0) {
        free(buf);
        return;
    }
    char **argv = keel_arena_alloc(&c->arena, 2 * sizeof(*argv));
    size_t *lens = keel_arena_alloc(&c->arena, 2 * sizeof(*lens));
    char *v = keel_arena_memdup(&c->arena, buf, n + 1);
    free(buf);
    if (argv == NULL || lens == NULL || v == NULL)
        die(1, "out of memory");
    v[n] = '\0';
    argv[0] = pos->argv[0];
    lens[0] = pos->lens[0];
    argv[1] = v;
    lens[1] = n;
    pos->argv = argv;
    pos->lens = lens;
    pos->argc = 2;
}

static int cmd_put(struct ctl *c, int argc, char **argv)
{
    c->usage = "put [options] <key> <value>  (value from stdin when omitted)";
    struct ctl_put_flags f = {0};
    struct ctl_flag t[16];
    ctl_put_flag_table(&f, t);
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (pos.argc == 1 && !f.ignore_value)
        read_stdin_value(c, &pos);
    Keel__PutRequest *put;
    char err[CTL_ERR_MAX];
    if (ctl_build_put(&f, &pos, &c->arena, &put, err) != 0)
        die(EXIT_USAGE, "%s", err);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_PUT;
    req.put = put;
    const Keel__Response *resp = run(c, &req);
    if (resp->body_case != KEEL__RESPONSE__BODY_PUT)
        die(1, "unexpected reply to put");
    if (c->fmt == OUT_JSON)
        j_print(j_put(resp->put, resp->header));
    else
        print_put(resp->put);
    keel_flat_free(resp);
    return 0;
}

static int cmd_get(struct ctl *c, int argc, char **argv)
{
    c->usage = "get [options] <key> [range_end]";
    struct ctl_get_flags f = {0};
    struct ctl_flag t[16];
    ctl_get_flag_table(&f, t);
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (f.print_value_only && c->fmt != OUT_SIMPLE)
        die(EXIT_USAGE, "print-value-only is only for `--write-out=simple`");
    Keel__RangeRequest *range;
    char err[CTL_ERR_MAX];
    if (ctl_build_get(&f, &pos, &c->arena, &range, err) != 0)
        die(EXIT_USAGE, "%s", err);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = range;
    const Keel__Response *resp = run(c, &req);
    if (resp->body_case != KEEL__RESPONSE__BODY_RANGE)
        die(1, "unexpected reply to get");
    if (c->fmt == OUT_JSON)
        j_print(j_range(resp->range, resp->header));
    else
        print_range(resp->range, f.print_value_only, f.count_only);
    keel_flat_free(resp);
    return 0;
}

static int cmd_del(struct ctl *c, int argc, char **argv)
{
    c->usage = "del [options] <key> [range_end]";
    struct ctl_del_flags f = {0};
    struct ctl_flag t[16];
    ctl_del_flag_table(&f, t);
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    Keel__DeleteRangeRequest *del;
    char err[CTL_ERR_MAX];
    if (ctl_build_del(&f, &pos, &c->arena, &del, err) != 0)
        die(EXIT_USAGE, "%s", err);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_DELETE_RANGE;
    req.delete_range = del;
    const Keel__Response *resp = run(c, &req);
    if (resp->body_case != KEEL__RESPONSE__BODY_DELETE_RANGE)
        die(1, "unexpected reply to del");
    if (c->fmt == OUT_JSON)
        j_print(j_del(resp->delete_range, resp->header));
    else
        print_del(resp->delete_range);
    keel_flat_free(resp);
    return 0;
}

/* An asynchronous client on loop for the commands that stream (watch, lease keep-alive). With
 * --user it starts with the token c->k got (a wrong password is told before anything streams)
 * and keeps the credentials, to authenticate again when that token expires. */
static struct keel_aclient *open_aclient(struct ctl *c, uv_loop_t *loop)
{
    struct keel_options o;
    need_token(c);
    fill_options(c, &o, c->endpoints);
    user_password(c, &o.user, &o.password);
    struct keel_aclient *ac = NULL;
    check_open(c, keel_aclient_init(&ac, loop, &o));
    return ac;
}

/* ---------------------------------------------------------------------------------------------
 * watch
 */

struct watch_ctx {
    struct ctl *c;
    struct keel_aclient *ac;
    uv_signal_t sigint, sigterm;
    int64_t count, seen;
    bool stopping;
    int status;
    int64_t compact_rev;
    char err[512];
};

static void print_event(const Keel__Event *e)
{
    puts(e->type == KEEL__EVENT__EVENT_TYPE__DELETE ? "DELETE" : "PUT");
    if (e->prev_kv)
        print_kv(e->prev_kv, false);
    if (e->kv)
        print_kv(e->kv, false);
}

static json_object *j_event(const Keel__Event *e)
{
    json_object *o = json_object_new_object();
    j_i64(o, "type", e->type);
    if (e->kv)
        json_object_object_add(o, "kv", j_kv(e->kv));
    if (e->prev_kv)
        json_object_object_add(o, "prev_kv", j_kv(e->prev_kv));
    return o;
}

/* etcdctl prints clientv3.WatchResponse, whose fields have no JSON tags: capitalised names, and
 * no omitempty at that level. */
static void print_watch_json(const Keel__ResponseHeader *h, const Keel__Event *const *events,
                             size_t n, int64_t compact_rev, bool canceled)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "Header", j_header(h));
    json_object *a = NULL;
    if (n) {
        a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
            json_object_array_add(a, j_event(events[i]));
    }
    json_object_object_add(o, "Events", a);
    json_object_object_add(o, "CompactRevision", json_object_new_int64(compact_rev));
    json_object_object_add(o, "Canceled", json_object_new_boolean(canceled));
    json_object_object_add(o, "Created", json_object_new_boolean(0));
    j_print(o);
}

static void watch_stop(struct watch_ctx *x)
{
    if (x->stopping)
        return;
    x->stopping = true;
    uv_close((uv_handle_t *)&x->sigint, NULL);
    uv_close((uv_handle_t *)&x->sigterm, NULL);
    keel_aclient_close(x->ac, NULL, NULL);
}

static void on_watch_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    watch_stop(h->data);
}

static void on_watch(struct keel_watch *w, int status, const Keel__Event *const *events,
                     size_t n_events, int64_t revision, void *data)
{
    struct watch_ctx *x = data;
    if (status != 0) {
        /* After our own stop this is the KEEL_ECANCELED it causes. */
        if (!x->stopping) {
            x->status = status;
            snprintf(x->err, sizeof(x->err), "%s", keel_watch_error(w));
            x->compact_rev = keel_watch_compact_revision(w);
            watch_stop(x);
        }
        return;
    }
    if (x->stopping)
        return;
    bool json = x->c->fmt == OUT_JSON;
    if (n_events == 0) {
        /* Only progress notifications come without events here (no created notice asked). */
        printf("progress notify: %" PRId64 "\n", revision);
        if (json)
            print_watch_json(keel_watch_header(w), NULL, 0, 0, false);
        fflush(stdout);
        return;
    }
    size_t n = n_events;
    if (x->count > 0 && (int64_t)n > x->count - x->seen)
        n = (size_t)(x->count - x->seen);
    if (json) {
        print_watch_json(keel_watch_header(w), events, n, 0, false);
    } else {
        for (size_t i = 0; i < n; i++)
            print_event(events[i]);
    }
    fflush(stdout);
    x->seen += (int64_t)n;
    if (x->count > 0 && x->seen >= x->count)
        watch_stop(x);
}

static int cmd_watch(struct ctl *c, int argc, char **argv)
{
    c->usage = "watch [options] <key or prefix> [range_end]  (options: --prefix, --rev N, "
               "--prev-kv, --progress-notify, --count N)";
    struct ctl_watch_flags f = {0};
    struct ctl_flag t[16];
    ctl_watch_flag_table(&f, t);
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    Keel__WatchCreateRequest *wc;
    char err[CTL_ERR_MAX];
    if (ctl_build_watch(&f, &pos, &c->arena, &wc, err) != 0)
        die(EXIT_USAGE, "%s", err);

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        die(1, "cannot create an event loop");
    struct watch_ctx x;
    memset(&x, 0, sizeof(x));
    x.c = c;
    x.count = f.count;
    x.ac = open_aclient(c, &loop);
    uv_signal_init(&loop, &x.sigint);
    uv_signal_init(&loop, &x.sigterm);
    x.sigint.data = x.sigterm.data = &x;
    uv_signal_start(&x.sigint, on_watch_signal, SIGINT);
    uv_signal_start(&x.sigterm, on_watch_signal, SIGTERM);
    struct keel_watch_opts wo = {0};
    wo.range_end = wc->range_end.data;
    wo.range_end_len = wc->range_end.len;
    wo.start_revision = wc->start_revision;
    wo.prev_kv = wc->prev_kv;
    wo.progress_notify = wc->progress_notify;
    struct keel_watch *w;
    int rv = keel_aclient_watch(x.ac, wc->key.data, wc->key.len, &wo, on_watch, &x, &w);
    if (rv != 0) {
        x.status = rv;
        snprintf(x.err, sizeof(x.err), "%s", keel_strerror(rv));
        watch_stop(&x);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    fflush(stdout);
    if (x.status == KEEL_ECOMPACTED || x.status == KEEL_ECANCELED) {
        if (c->fmt == OUT_JSON)
            print_watch_json(NULL, NULL, 0, x.compact_rev, true);
        fflush(stdout);
        fprintf(stderr, "watch was canceled (%s)\n", x.err);
        die(1, "watch is canceled by the server");
    }
    if (x.status != 0)
        die(1, "%s", x.err);
    return 0;
}

static int cmd_txn(struct ctl *c, int argc, char **argv)
{
    c->usage = "txn [-i|--interactive] [--compare C]... [--then OP]... [--else OP]...";
    bool interactive = false;
    struct ctl_strlist cmp = {0}, then = {0}, els = {0};
    struct ctl_flag t[] = {
        {"interactive", 'i', CTL_BOOL, &interactive, false},
        {"compare", 0, CTL_STRLIST, &cmp, false},
        {"then", 0, CTL_STRLIST, &then, false},
        {"else", 0, CTL_STRLIST, &els, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (pos.argc != 0)
        die(EXIT_USAGE, "txn command does not accept argument");
    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    char err[CTL_ERR_MAX];
    if (cmp.n || then.n || els.n) {
        for (size_t i = 0; i < cmp.n; i++) {
            Keel__Compare *x;
            if (ctl_parse_compare(cmp.items[i], &c->arena, &x, err) != 0 ||
                ctl_txn_add_compare(&c->arena, &txn, x) != 0)
                die(EXIT_USAGE, "%s", err);
        }
        for (int s = 1; s >= 0; s--) {
            const struct ctl_strlist *l = s ? &then : &els;
            for (size_t i = 0; i < l->n; i++) {
                Keel__RequestOp *op;
                if (ctl_parse_op(l->items[i], &c->arena, &op, err) != 0 ||
                    ctl_txn_add_op(&c->arena, &txn, s, op) != 0)
                    die(EXIT_USAGE, "%s", err);
            }
        }
    } else if (ctl_txn_read(stdin, interactive, stdout, &c->arena, &txn, err) != 0) {
        die(EXIT_USAGE, "%s", err);
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_TXN;
    req.txn = &txn;
    const Keel__Response *resp = run(c, &req);
    if (resp->body_case != KEEL__RESPONSE__BODY_TXN)
        die(1, "unexpected reply to txn");
    if (c->fmt == OUT_JSON)
        j_print(j_txn(resp->txn, resp->header));
    else
        print_txn(resp->txn);
    keel_flat_free(resp);
    return 0;
}

static int cmd_compaction(struct ctl *c, int argc, char **argv)
{
    c->usage = "compaction <revision>";
    bool physical = false;
    struct ctl_flag t[] = {
        {"physical", 0, CTL_BOOL, &physical, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "compaction command needs 1 argument");
    char *end;
    long long rev = strtoll(pos.argv[0], &end, 10);
    if (*end != '\0' || end == pos.argv[0] || rev <= 0)
        die(EXIT_USAGE, "bad revision \"%s\"", pos.argv[0]);
    Keel__CompactionRequest comp = KEEL__COMPACTION_REQUEST__INIT;
    comp.revision = rev;
    comp.physical = true; /* keel always compacts physically */
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_COMPACTION;
    req.compaction = &comp;
    const Keel__Response *resp = run(c, &req);
    if (c->fmt == OUT_JSON) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "header", j_header(resp->header));
        j_print(o);
    } else {
        printf("compacted revision %lld\n", rev);
    }
    keel_flat_free(resp);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Alarms (etcdctl's alarm list / alarm disarm: NOSPACE, raised when a write passes the quota)
 */

static const Keel__Response *alarm_call(struct ctl *c, Keel__AlarmRequest__AlarmAction action,
                                        const Keel__AlarmMember *m)
{
    Keel__AlarmRequest ar = KEEL__ALARM_REQUEST__INIT;
    ar.action = action;
    if (m != NULL) {
        ar.memberid = m->memberid;
        ar.alarm = m->alarm;
    }
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_ALARM;
    req.alarm = &ar;
    return run(c, &req);
}

static const char *alarm_name(Keel__AlarmMember__AlarmType t)
{
    switch (t) {
    case KEEL__ALARM_MEMBER__ALARM_TYPE__NOSPACE:
        return "NOSPACE";
    case KEEL__ALARM_MEMBER__ALARM_TYPE__CORRUPT:
        return "CORRUPT";
    default:
        return "NONE";
    }
}

static void print_alarms(const Keel__AlarmMember *const *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("memberID:%" PRIu64 " alarm:%s\n", a[i]->memberid, alarm_name(a[i]->alarm));
}

static json_object *j_alarms(const Keel__ResponseHeader *h, const Keel__AlarmMember *const *a,
                             size_t n)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "header", j_header(h));
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *m = json_object_new_object();
        j_u64(m, "memberID", a[i]->memberid);
        json_object_object_add(m, "alarm", json_object_new_int(a[i]->alarm));
        json_object_array_add(arr, m);
    }
    if (n > 0)
        json_object_object_add(o, "alarms", arr);
    else
        json_object_put(arr);
    return o;
}

static int cmd_alarm(struct ctl *c, const char *sub, int argc, char **argv)
{
    bool disarm = !strcmp(sub, "disarm");
    if (!disarm && strcmp(sub, "list") != 0) {
        fprintf(stderr, "Error: unknown command \"alarm %s\"\n%s", sub, usage_text);
        return EXIT_USAGE;
    }
    c->usage = disarm ? "alarm disarm" : "alarm list";
    struct ctl_args pos;
    parse_args(c, NULL, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (pos.argc != 0)
        die(EXIT_USAGE, "alarm %s takes no arguments", sub);
    const Keel__Response *list = alarm_call(c, KEEL__ALARM_REQUEST__ALARM_ACTION__GET, NULL);
    const Keel__AlarmResponse *l = list->alarm;
    size_t n = l ? l->n_alarms : 0;
    if (!disarm) {
        if (c->fmt == OUT_JSON)
            j_print(j_alarms(list->header, (const Keel__AlarmMember *const *)(l ? l->alarms : NULL),
                             n));
        else
            print_alarms((const Keel__AlarmMember *const *)(l ? l->alarms : NULL), n);
        keel_flat_free(list);
        return 0;
    }
    /* As clientv3's AlarmDisarm with no member named: every alarm listed, one by one. */
    json_object *all = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        const Keel__Response *r =
            alarm_call(c, KEEL__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE, l->alarms[i]);
        const Keel__AlarmResponse *d = r->alarm;
        size_t dn = d ? d->n_alarms : 0;
        if (c->fmt == OUT_JSON)
            json_object_array_add(
                all,
                j_alarms(r->header, (const Keel__AlarmMember *const *)(d ? d->alarms : NULL), dn));
        else
            print_alarms((const Keel__AlarmMember *const *)(d ? d->alarms : NULL), dn);
        keel_flat_free(r);
    }
    if (c->fmt == OUT_JSON)
        j_print(json_object_array_length(all) == 1
                    ? json_object_get(json_object_array_get_idx(all, 0))
                    : json_object_get(all));
    json_object_put(all);
    keel_flat_free(list);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Defragmentation (each member shrinks its own store file while it keeps serving)
 */

static char **split_endpoints(struct ctl *c, size_t *n);

static int cmd_defrag(struct ctl *c, int argc, char **argv)
{
    c->usage = "defrag [--cluster]";
    bool cluster = false;
    struct ctl_flag t[] = {
        {"cluster", 0, CTL_BOOL, &cluster, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    bool timeout_given = c->timeout != NULL || c->command_timeout != NULL;
    apply_globals(c);
    no_table(c);
    if (pos.argc != 0)
        die(EXIT_USAGE, "defrag does not accept arguments");
    /* A copy of a big store takes a while: without --timeout, wait up to 10 minutes. */
    uint32_t timeout = timeout_given ? (uint32_t)c->timeout_ms : 600000;
    size_t n = 0;
    char **eps;
    const Keel__Response *ml = NULL;
    if (cluster) {
        Keel__MemberListRequest mr = KEEL__MEMBER_LIST_REQUEST__INIT;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_MEMBER_LIST;
        req.member_list = &mr;
        ml = run(c, &req);
        size_t cap = 0;
        for (size_t i = 0; i < ml->member_list->n_members; i++)
            cap += ml->member_list->members[i]->n_clienturls ? 1 : 0;
        eps = keel_arena_alloc(&c->arena, (cap ? cap : 1) * sizeof(*eps));
        for (size_t i = 0; eps && i < ml->member_list->n_members; i++)
            if (ml->member_list->members[i]->n_clienturls)
                eps[n++] = ml->member_list->members[i]->clienturls[0];
    } else {
        eps = split_endpoints(c, &n);
    }
    struct keel *k = client(c);
    bool failed = false;
    json_object *arr = c->fmt == OUT_JSON ? json_object_new_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        Keel__DefragmentRequest dq = KEEL__DEFRAGMENT_REQUEST__INIT;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_DEFRAGMENT;
        req.defragment = &dq;
        const char *ep = strncmp(eps[i], "http://", 7) == 0 ? eps[i] + 7 : eps[i];
        struct keel_call_opts opts = {.endpoint = ep, .timeout_ms = timeout};
        const Keel__Response *resp = NULL;
        int rv = keel_do_flat(k, &req, &opts, &resp);
        if (rv != 0) {
            const char *msg = keel_errmsg();
            fprintf(stderr, "Failed to defragment etcd member[%s] (%s)\n", eps[i],
                    msg && msg[0] ? msg : keel_strerror(rv));
            failed = true;
            continue;
        }
        const Keel__DefragmentResponse *d = resp->defragment;
        if (arr != NULL) {
            json_object *o = json_object_new_object();
            j_str(o, "endpoint", eps[i]);
            j_i64(o, "dbSizeBefore", d ? d->db_size_before : 0);
            j_i64(o, "dbSizeAfter", d ? d->db_size_after : 0);
            json_object_array_add(arr, o);
        } else {
            printf("Finished defragmenting etcd member[%s]\n", eps[i]);
        }
        keel_flat_free(resp);
    }
    if (arr != NULL)
        j_print(arr);
    if (ml != NULL)
        keel_flat_free(ml);
    return failed ? 1 : 0;
}

/* As etcdctl: find the leader among the endpoints (its status says so), ask it to hand
 * leadership to ID, and say so once the member answers (it answers when ID leads). */
static int cmd_move_leader(struct ctl *c, int argc, char **argv)
{
    c->usage = "move-leader ID";
    struct ctl_args pos;
    parse_args(c, NULL, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "move-leader takes one argument, the target member's ID in hex");
    char *end = NULL;
    errno = 0;
    unsigned long long target = strtoull(pos.argv[0], &end, 16);
    if (errno != 0 || end == pos.argv[0] || *end != '\0' || target == 0)
        die(EXIT_USAGE, "bad leader ID arg (%s), expecting ID in Hex", pos.argv[0]);
    size_t n;
    char **eps = split_endpoints(c, &n);
    struct keel *k = client(c);
    const char *leader_ep = NULL;
    uint64_t leader = 0;
    for (size_t i = 0; i < n && leader_ep == NULL; i++) {
        Keel__StatusRequest st = KEEL__STATUS_REQUEST__INIT;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_STATUS;
        req.status = &st;
        struct keel_call_opts opts = {.endpoint = eps[i]};
        const Keel__Response *resp;
        int rv = keel_do_flat(k, &req, &opts, &resp);
        if (rv != 0)
            die(1, "%s: %s", eps[i], keel_errmsg());
        if (resp->body_case == KEEL__RESPONSE__BODY_STATUS && resp->header != NULL &&
            resp->status->leader != 0 && resp->header->member_id == resp->status->leader) {
            leader_ep = eps[i];
            leader = resp->status->leader;
        }
        keel_flat_free(resp);
    }
    if (leader_ep == NULL)
        die(EXIT_USAGE, "no leader endpoint given at [%s]", c->endpoints);
    Keel__MoveLeaderRequest ml = KEEL__MOVE_LEADER_REQUEST__INIT;
    ml.targetid = target;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MOVE_LEADER;
    req.move_leader = &ml;
    struct keel_call_opts opts = {.endpoint = leader_ep};
    const Keel__Response *resp;
    if (keel_do_flat(k, &req, &opts, &resp) != 0)
        die(1, "%s", keel_errmsg());
    keel_flat_free(resp);
    printf("Leadership transferred from %" PRIx64 " to %llx\n", leader, target);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Snapshots (snapfile.h: the file; the member streams a compacted copy of its store)
 */

static int save_piece(void *data, const void *bytes, size_t n)
{
    char err[SNAPFILE_ERR_MAX];
    if (snapfile_write(data, bytes, n, err) != 0) {
        fprintf(stderr, "Error: %s\n", err);
        return KEEL_EIO;
    }
    return 0;
}

static int cmd_snapshot_save(struct ctl *c, int argc, char **argv)
{
    c->usage = "snapshot save <filename>";
    struct ctl_args pos;
    parse_args(c, NULL, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "snapshot save expects one argument");
    if (strchr(c->endpoints, ',') != NULL)
        die(EXIT_USAGE, "snapshot must be requested to one selected node, not multiple [%s]",
            c->endpoints);
    const char *path = pos.argv[0];
    struct snapfile_writer *w;
    char err[SNAPFILE_ERR_MAX];
    if (snapfile_create(path, &w, err) != 0)
        die(1, "%s", err);
    struct keel_options o;
    need_token(c);
    fill_options(c, &o, c->endpoints);
    struct keel_snapshot_info info;
    int rv = keel_snapshot(&o, c->endpoints, save_piece, w, &info);
    if (rv != 0) {
        snapfile_abort(w);
        die_keel(rv);
    }
    uint8_t sha[32];
    if (snapfile_finish(w, sha, err) != 0)
        die(1, "%s", err);
    if (c->fmt == OUT_JSON) {
        json_object *o2 = json_object_new_object();
        j_str(o2, "path", path);
        j_u64(o2, "cluster_id", info.cluster_id);
        j_u64(o2, "member_id", info.member_id);
        j_i64(o2, "revision", info.revision);
        j_u64(o2, "size", info.bytes);
        j_print(o2);
    } else {
        printf("Snapshot saved at %s\n", path);
    }
    return 0;
}

/* Bytes as go-humanize's Bytes writes them (SI units), which etcdctl prints. */
static void human_bytes(uint64_t n, char *out, size_t len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    if (n < 10) {
        snprintf(out, len, "%llu B", (unsigned long long)n);
        return;
    }
    int e = (int)floor(log((double)n) / log(1000.0));
    if (e > 6)
        e = 6;
    double v = floor((double)n / pow(1000.0, e) * 10 + 0.5) / 10;
    snprintf(out, len, v < 10 ? "%.1f %s" : "%.0f %s", v, units[e]);
}

static int cmd_snapshot_status(struct ctl *c, int argc, char **argv)
{
    c->usage = "snapshot status <filename>";
    struct ctl_args pos;
    parse_args(c, NULL, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "snapshot status requires exactly one argument");
    const char *path = pos.argv[0];
    struct snapfile_info fi;
    char err[SNAPFILE_ERR_MAX];
    if (snapfile_check(path, false, &fi, err) != 0)
        die(1, "%s", err);
    struct keel_store_info si;
    int rv = keel_store_inspect(path, &si);
    if (rv != 0)
        die(1, "%s: the copy in it does not open as a keel store (%s)", path, keel_strerror(rv));
    uint32_t hash = (uint32_t)fi.sha256[0] << 24 | (uint32_t)fi.sha256[1] << 16 |
                    (uint32_t)fi.sha256[2] << 8 | fi.sha256[3];
    char sha_hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(sha_hex + 2 * i, 3, "%02x", fi.sha256[i]);
    char size[32];
    human_bytes(fi.file_size, size, sizeof(size));
    if (c->fmt == OUT_JSON) {
        json_object *o = json_object_new_object();
        j_u64(o, "hash", hash);
        j_i64(o, "revision", si.revision);
        j_u64(o, "totalKey", si.keys);
        j_u64(o, "totalSize", fi.file_size);
        j_str(o, "sha256", sha_hex);
        j_i64(o, "compactRevision", si.compact_revision);
        j_u64(o, "revisions", si.revisions);
        j_u64(o, "leases", si.leases);
        j_print(o);
    } else if (c->fmt == OUT_TABLE) {
        static const char *const hdr[] = {"HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"};
        char ***rows = alloc_rows(c, 1, 4);
        rows[0][0] = fmt_cell(c, "%x", hash);
        rows[0][1] = fmt_cell(c, "%" PRId64, si.revision);
        rows[0][2] = fmt_cell(c, "%" PRIu64, si.keys);
        rows[0][3] = fmt_cell(c, "%s", size);
        print_table(hdr, 4, rows, 1);
    } else {
        printf("%x, %" PRId64 ", %" PRIu64 ", %s\n", hash, si.revision, si.keys, size);
    }
    return 0;
}

/* Whether NAME=... is one of the comma-separated members of list. */
static bool names_member(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == '=')
            return true;
    return false;
}

static int cmd_snapshot_restore(struct ctl *c, int argc, char **argv)
{
    c->usage = "snapshot restore <filename> --name N --initial-cluster LIST [--data-dir D] "
               "[--skip-hash-check]";
    const char *name = NULL, *initial = NULL, *data_dir = NULL;
    bool skip_hash = false;
    struct ctl_flag t[] = {
        {"name", 0, CTL_STR, &name, false},
        {"initial-cluster", 0, CTL_STR, &initial, false},
        {"data-dir", 0, CTL_STR, &data_dir, false},
        {"skip-hash-check", 0, CTL_BOOL, &skip_hash, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "snapshot restore requires exactly one argument");
    if (name == NULL || name[0] == '\0')
        die(EXIT_USAGE, "--name is required: the member this data dir is for");
    if (initial == NULL || initial[0] == '\0')
        die(EXIT_USAGE, "--initial-cluster is required (NAME=HOST:PORT[@ZONE],... as keeld's)");
    if (!names_member(initial, name))
        die(EXIT_USAGE, "--name %s is not a member of --initial-cluster %s", name, initial);
    const char *path = pos.argv[0];
    char *dir = data_dir ? strdup(data_dir) : NULL;
    if (dir == NULL && asprintf(&dir, "%s.keel", name) < 0)
        die(1, "out of memory");
    char *state = NULL, *file = NULL;
    if (asprintf(&state, "%s/state", dir) < 0 || asprintf(&file, "%s/data.mdb", state) < 0)
        die(1, "out of memory");
    struct stat st;
    if (stat(dir, &st) == 0)
        die(1, "data-dir \"%s\" exists: restore only into a new one", dir);

    struct snapfile_info fi;
    char err[SNAPFILE_ERR_MAX];
    if (snapfile_check(path, skip_hash, &fi, err) != 0)
        die(1, "%s", err);
    struct keel_store_info si;
    int rv = keel_store_inspect(path, &si);
    if (rv != 0)
        die(1, "%s: the copy in it does not open as a keel store (%s)", path, keel_strerror(rv));
    if (mkdir(dir, 0700) != 0 || mkdir(state, 0700) != 0)
        die(1, "cannot create %s: %s", state, strerror(errno));
    /* The map must hold the file and room to grow until keeld opens it with its own size. */
    uint64_t map = ((fi.copy_len >> 30) + 2) << 30;
    if (snapfile_extract(path, fi.copy_len, file, err) != 0 ||
        (rv = keel_store_rebase(state, map)) != 0) {
        if (rv != 0)
            snprintf(err, sizeof(err), "making %s a new member's store: %s", state,
                     keel_strerror(rv));
        unlink(file);
        rmdir(state);
        rmdir(dir);
        die(1, "%s", err);
    }
    if (c->fmt == OUT_JSON) {
        json_object *o = json_object_new_object();
        j_str(o, "data_dir", dir);
        j_str(o, "name", name);
        j_i64(o, "revision", si.revision);
        j_u64(o, "totalKey", si.keys);
        j_u64(o, "leases", si.leases);
        j_print(o);
    } else {
        printf("restored snapshot %s (revision %" PRId64 ", %" PRIu64 " keys, %" PRIu64
               " leases) into %s for member %s; start it with keeld --name %s --data-dir %s "
               "--initial-cluster %s\n",
               path, si.revision, si.keys, si.leases, dir, name, name, dir, initial);
    }
    free(file);
    free(state);
    free(dir);
    return 0;
}

static int cmd_snapshot(struct ctl *c, const char *sub, int argc, char **argv)
{
    if (!strcmp(sub, "save"))
        return cmd_snapshot_save(c, argc, argv);
    if (!strcmp(sub, "status"))
        return cmd_snapshot_status(c, argc, argv);
    if (!strcmp(sub, "restore"))
        return cmd_snapshot_restore(c, argc, argv);
    fprintf(stderr, "Error: unknown command \"snapshot %s\"\n%s", sub, usage_text);
    return EXIT_USAGE;
}

/* ---------------------------------------------------------------------------------------------
 * Cluster commands
 */

/* Members as member list shows them (-w json: with the header; extra, when not NULL, is added
 * to the JSON object first, as member add's "member"). */
static void print_members(struct ctl *c, const Keel__ResponseHeader *h, Keel__Member **v, size_t n,
                          json_object *extra, const char *extra_key)
{
    if (c->fmt == OUT_JSON) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "header", j_header(h));
        if (extra != NULL)
            json_object_object_add(o, extra_key, extra);
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < n; i++)
            json_object_array_add(a, j_member(v[i]));
        json_object_object_add(o, "members", a);
        j_print(o);
        return;
    }
    static const char *const hdr[] = {"ID",           "Status",     "Name", "Peer Addrs",
                                      "Client Addrs", "Is Learner", "Zone"};
    char ***rows = alloc_rows(c, n, 7);
    for (size_t i = 0; i < n; i++) {
        const Keel__Member *m = v[i];
        rows[i][0] = fmt_cell(c, "%" PRIx64, m->id);
        /* A member is started once it has spoken to the cluster (its client address) */
        rows[i][1] = m->n_clienturls > 0 ? "started" : "unstarted";
        rows[i][2] = m->name;
        rows[i][3] = join(c, m->peerurls, m->n_peerurls, ",");
        rows[i][4] = join(c, m->clienturls, m->n_clienturls, ",");
        rows[i][5] = m->islearner ? "true" : "false";
        rows[i][6] = m->zone;
    }
    if (c->fmt == OUT_TABLE)
        print_table(hdr, 7, rows, n);
    else
        print_rows_simple(rows, n, 7);
}

static int cmd_member_list(struct ctl *c, int argc, char **argv)
{
    c->usage = "member list [--consistency l|s]";
    const char *cons = NULL;
    struct ctl_flag t[] = {
        {"consistency", 0, CTL_STR, &cons, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 0)
        die(EXIT_USAGE, "member list does not accept arguments");
    Keel__MemberListRequest ml = KEEL__MEMBER_LIST_REQUEST__INIT;
    if (cons && strcmp(cons, "l") == 0)
        ml.linearizable = true;
    else if (cons && strcmp(cons, "s") != 0)
        die(EXIT_USAGE, "unknown consistency flag \"%s\"", cons);
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_LIST;
    req.member_list = &ml;
    const Keel__Response *resp = run(c, &req);
    if (resp->body_case != KEEL__RESPONSE__BODY_MEMBER_LIST)
        die(1, "unexpected reply to member list");
    print_members(c, resp->header, resp->member_list->members, resp->member_list->n_members, NULL,
                  NULL);
    keel_flat_free(resp);
    return 0;
}

/* A member ID argument, in hex as etcdctl takes it. */
static uint64_t member_id_arg(const char *s, const char *what)
{
    char *end = NULL;
    errno = 0;
    unsigned long long id = strtoull(s, &end, 16);
    if (errno != 0 || end == s || *end != '\0' || id == 0)
        die(EXIT_USAGE, "bad %s ID arg (%s), expecting ID in Hex", what, s);
    return id;
}

static int cmd_member_add(struct ctl *c, int argc, char **argv)
{
    c->usage = "member add NAME --peer-urls URL [--learner] [--zone Z] [--force]";
    const char *peer = NULL, *zone = NULL;
    bool learner = false, force = false;
    struct ctl_flag t[] = {
        {"peer-urls", 0, CTL_STR, &peer, false},   {"zone", 0, CTL_STR, &zone, false},
        {"learner", 0, CTL_BOOL, &learner, false}, {"force", 0, CTL_BOOL, &force, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "member name not provided");
    if (peer == NULL || peer[0] == '\0')
        die(EXIT_USAGE, "member peer urls not provided");
    if (strchr(peer, ',') != NULL)
        die(EXIT_USAGE, "keel takes one peer URL per member (%s)", peer);
    Keel__MemberAddRequest ma = KEEL__MEMBER_ADD_REQUEST__INIT;
    char *urls[1] = {(char *)peer};
    ma.name = pos.argv[0];
    ma.peerurls = urls;
    ma.n_peerurls = 1;
    ma.zone = (char *)(zone ? zone : "");
    ma.islearner = learner;
    ma.force = force;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_ADD;
    req.member_add = &ma;
    const Keel__Response *resp = run(c, &req);
    if (resp->body_case != KEEL__RESPONSE__BODY_MEMBER_ADD || resp->member_add->member == NULL)
        die(1, "unexpected reply to member add");
    const Keel__MemberAddResponse *r = resp->member_add;
    if (c->fmt == OUT_JSON || c->fmt == OUT_TABLE) {
        print_members(c, resp->header, r->members, r->n_members,
                      c->fmt == OUT_JSON ? j_member(r->member) : NULL, "member");
        keel_flat_free(resp);
        return 0;
    }
    printf("Member %16" PRIx64 " added to cluster %16" PRIx64 "%s\n\n", r->member->id,
           resp->header ? resp->header->cluster_id : 0,
           learner ? " as a learner" : " (a learner until it has caught up, then a voter)");
    /* The settings the new member starts with, as etcdctl prints its ETCD_* variables: keeld
     * reads each KEEL_<FLAG> from its environment (server/config.c). */
    printf("KEEL_NAME=\"%s\"\n", r->member->name);
    printf("KEEL_INITIAL_CLUSTER=\"");
    bool first = true;
    for (size_t i = 0; i < r->n_members; i++) {
        /* the new member as the reply names it (with its zone) */
        const Keel__Member *m = r->members[i]->id == r->member->id ? r->member : r->members[i];
        const char *p = m->n_peerurls ? m->peerurls[0] : "";
        if (m->id != r->member->id && (m->name == NULL || m->name[0] == '\0'))
            continue; /* another member not started yet: it cannot be named */
        printf("%s%s=%s%s%s", first ? "" : ",", m->name, p, m->zone && m->zone[0] ? "@" : "",
               m->zone ? m->zone : "");
        first = false;
    }
    printf("\"\nKEEL_INITIAL_CLUSTER_STATE=\"existing\"\n");
    /* --listen-peer is an IPv4 literal: a member added by name listens on 0.0.0.0 (or its IP). */
    const char *url = r->member->n_peerurls ? r->member->peerurls[0] : "";
    const char *hp = strncmp(url, "http://", 7) == 0 ? url + 7 : url;
    char host[64], listen[80];
    int port;
    if (keel_hostport_split(hp, strcspn(hp, "/"), host, sizeof(host), &port, NULL, 0) ==
        KEEL_HOST_NAME)
        snprintf(listen, sizeof(listen), "0.0.0.0:%d", port);
    else
        snprintf(listen, sizeof(listen), "%s", url);
    printf("KEEL_LISTEN_PEER=\"%s\"\n\n", listen);
    printf("With these exported (or as keys of its --config-file), start it with:\n"
           "keeld --listen-client HOST:PORT --data-dir DIR\n");
    keel_flat_free(resp);
    return 0;
}

static int cmd_member_update(struct ctl *c, int argc, char **argv)
{
    c->usage = "member update ID --peer-urls URL";
    const char *peer = NULL;
    struct ctl_flag t[] = {
        {"peer-urls", 0, CTL_STR, &peer, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "member ID is not provided");
    uint64_t id = member_id_arg(pos.argv[0], "member");
    if (peer == NULL || peer[0] == '\0')
        die(EXIT_USAGE, "member peer urls not provided");
    Keel__MemberUpdateRequest mu = KEEL__MEMBER_UPDATE_REQUEST__INIT;
    char *urls[1] = {(char *)peer};
    mu.id = id;
    mu.peerurls = urls;
    mu.n_peerurls = 1;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_MEMBER_UPDATE;
    req.member_update = &mu;
    const Keel__Response *resp = run(c, &req);
    if (resp->body_case != KEEL__RESPONSE__BODY_MEMBER_UPDATE)
        die(1, "unexpected reply to member update");
    if (c->fmt == OUT_JSON || c->fmt == OUT_TABLE)
        print_members(c, resp->header, resp->member_update->members, resp->member_update->n_members,
                      NULL, NULL);
    else
        printf("Member %16" PRIx64 " updated in cluster %16" PRIx64 "\n", id,
               resp->header ? resp->header->cluster_id : 0);
    keel_flat_free(resp);
    return 0;
}

static int cmd_member_remove(struct ctl *c, int argc, char **argv, bool promote)
{
    c->usage = promote ? "member promote ID [--force]" : "member remove ID [--force]";
    bool force = false;
    struct ctl_flag t[] = {
        {"force", 0, CTL_BOOL, &force, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 1)
        die(EXIT_USAGE, "member ID is not provided");
    uint64_t id = member_id_arg(pos.argv[0], "member");
    Keel__MemberRemoveRequest mr = KEEL__MEMBER_REMOVE_REQUEST__INIT;
    Keel__MemberPromoteRequest mp = KEEL__MEMBER_PROMOTE_REQUEST__INIT;
    Keel__Request req = KEEL__REQUEST__INIT;
    if (promote) {
        mp.id = id;
        mp.force = force;
        req.body_case = KEEL__REQUEST__BODY_MEMBER_PROMOTE;
        req.member_promote = &mp;
    } else {
        mr.id = id;
        mr.force = force;
        req.body_case = KEEL__REQUEST__BODY_MEMBER_REMOVE;
        req.member_remove = &mr;
    }
    const Keel__Response *resp = run(c, &req);
    Keel__Member **v = NULL;
    size_t n = 0;
    if (promote && resp->body_case == KEEL__RESPONSE__BODY_MEMBER_PROMOTE) {
        v = resp->member_promote->members;
        n = resp->member_promote->n_members;
    } else if (!promote && resp->body_case == KEEL__RESPONSE__BODY_MEMBER_REMOVE) {
        v = resp->member_remove->members;
        n = resp->member_remove->n_members;
    } else {
        die(1, "unexpected reply to member %s", promote ? "promote" : "remove");
    }
    if (c->fmt == OUT_JSON || c->fmt == OUT_TABLE)
        print_members(c, resp->header, v, n, NULL, NULL);
    else
        printf("Member %16" PRIx64 " %s cluster %16" PRIx64 "\n", id,
               promote ? "promoted in" : "removed from",
               resp->header ? resp->header->cluster_id : 0);
    keel_flat_free(resp);
    return 0;
}

/* The --endpoints list, split. */
static char **split_endpoints(struct ctl *c, size_t *n)
{
    size_t cap = 1;
    for (const char *s = c->endpoints; *s; s++)
        cap += *s == ',';
    char **eps = keel_arena_alloc(&c->arena, cap * sizeof(*eps));
    if (eps == NULL)
        die(1, "out of memory");
    *n = 0;
    for (const char *s = c->endpoints; *s;) {
        const char *e = strchr(s, ',');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len)
            eps[(*n)++] = fmt_cell(c, "%.*s", (int)len, s);
        s += len + (e != NULL);
    }
    return eps;
}

static int cmd_endpoint_status(struct ctl *c, int argc, char **argv)
{
    c->usage = "endpoint status";
    struct ctl_args pos;
    parse_args(c, NULL, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 0)
        die(EXIT_USAGE, "endpoint status does not accept arguments");
    size_t n;
    char **eps = split_endpoints(c, &n);
    struct keel *k = client(c);
    const Keel__Response **resps = keel_arena_alloc(&c->arena, (n ? n : 1) * sizeof(*resps));
    const char **ok_eps = keel_arena_alloc(&c->arena, (n ? n : 1) * sizeof(*ok_eps));
    if (resps == NULL || ok_eps == NULL)
        die(1, "out of memory");
    size_t nok = 0;
    bool failed = false;
    for (size_t i = 0; i < n; i++) {
        Keel__StatusRequest st = KEEL__STATUS_REQUEST__INIT;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_STATUS;
        req.status = &st;
        struct keel_call_opts opts = {.endpoint = eps[i]};
        const Keel__Response *resp;
        int rv = keel_do_flat(k, &req, &opts, &resp);
        if (rv == 0 && resp->body_case != KEEL__RESPONSE__BODY_STATUS) {
            keel_flat_free(resp);
            rv = KEEL_EINTERNAL;
        }
        if (rv != 0) {
            fprintf(stderr, "Failed to get the status of endpoint %s (%s)\n", eps[i],
                    rv == KEEL_EINVAL ? "invalid endpoint" : keel_errmsg());
            failed = true;
            continue;
        }
        ok_eps[nok] = eps[i];
        resps[nok++] = resp;
    }
    if (c->fmt == OUT_JSON) {
        json_object *a = json_object_new_array();
        for (size_t i = 0; i < nok; i++) {
            const Keel__StatusResponse *s = resps[i]->status;
            json_object *st = json_object_new_object();
            json_object_object_add(st, "header", j_header(resps[i]->header));
            j_str(st, "version", s->version);
            j_i64(st, "dbSize", s->dbsize);
            j_u64(st, "leader", s->leader);
            j_u64(st, "raftIndex", s->raftindex);
            j_u64(st, "raftTerm", s->raftterm);
            j_u64(st, "raftAppliedIndex", s->raftappliedindex);
            if (s->n_errors) {
                json_object *e = json_object_new_array();
                for (size_t j = 0; j < s->n_errors; j++)
                    json_object_array_add(e, json_object_new_string(s->errors[j]));
                json_object_object_add(st, "errors", e);
            }
            j_i64(st, "dbSizeInUse", s->dbsizeinuse);
            j_bool(st, "isLearner", s->islearner);
            j_str(st, "zone", s->zone);
            j_str(st, "name", s->name);
            j_i64(st, "compactRevision", s->compactrevision);
            j_i64(st, "quotaBytes", s->quotabytes);
            json_object *o = json_object_new_object();
            json_object_object_add(o, "Endpoint", json_object_new_string(ok_eps[i]));
            json_object_object_add(o, "Status", st);
            json_object_array_add(a, o);
        }
        j_print(a);
    } else {
        static const char *const hdr[] = {"endpoint",  "ID",         "version",
                                          "db size",   "is leader",  "is learner",
                                          "raft term", "raft index", "raft applied index",
                                          "errors",    "zone"};
        char ***rows = alloc_rows(c, nok, 11);
        for (size_t i = 0; i < nok; i++) {
            const Keel__StatusResponse *s = resps[i]->status;
            uint64_t id = resps[i]->header ? resps[i]->header->member_id : 0;
            char size[32];
            ctl_format_bytes(s->dbsize > 0 ? (uint64_t)s->dbsize : 0, size, sizeof(size));
            rows[i][0] = (char *)ok_eps[i];
            rows[i][1] = fmt_cell(c, "%" PRIx64, id);
            rows[i][2] = s->version;
            rows[i][3] = fmt_cell(c, "%s", size);
            rows[i][4] = s->leader != 0 && s->leader == id ? "true" : "false";
            rows[i][5] = s->islearner ? "true" : "false";
            rows[i][6] = fmt_cell(c, "%" PRIu64, s->raftterm);
            rows[i][7] = fmt_cell(c, "%" PRIu64, s->raftindex);
            rows[i][8] = fmt_cell(c, "%" PRIu64, s->raftappliedindex);
            rows[i][9] = join(c, s->errors, s->n_errors, ", ");
            rows[i][10] = s->zone;
        }
        if (c->fmt == OUT_TABLE)
            print_table(hdr, 11, rows, nok);
        else
            print_rows_simple(rows, nok, 11);
    }
    for (size_t i = 0; i < nok; i++)
        keel_flat_free(resps[i]);
    if (failed) {
        fflush(stdout);
        ctl_cleanup();
        exit(1);
    }
    return 0;
}

struct health {
    const char *ep;
    struct keel_aclient *ac;
    uint64_t start;
    uint64_t took_ns;
    int status;
    bool done;
    char err[512];
};

static void on_health(int status, const Keel__Response *resp, void *data)
{
    struct health *h = data;
    h->took_ns = uv_hrtime() - h->start;
    /* As etcdctl: a permission error still proves the proposal went through consensus. */
    h->status = status == KEEL_EPERMDENIED ? 0 : status;
    h->done = true;
    if (h->status)
        snprintf(h->err, sizeof(h->err), "%s", resp->error->message);
    keel_aclient_close(h->ac, NULL, NULL);
}

static int cmd_endpoint_health(struct ctl *c, int argc, char **argv)
{
    c->usage = "endpoint health";
    struct ctl_args pos;
    parse_args(c, NULL, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 0)
        die(EXIT_USAGE, "endpoint health does not accept arguments");
    size_t n;
    char **eps = split_endpoints(c, &n);
    struct health *hs = keel_arena_alloc(&c->arena, (n ? n : 1) * sizeof(*hs));
    if (hs == NULL)
        die(1, "out of memory");
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        die(1, "cannot create an event loop");
    /* One client per endpoint, all on one loop: each check runs concurrently and is bound to
     * its endpoint for discovery (the read itself follows the leader, which is the point). */
    for (size_t i = 0; i < n; i++) {
        struct health *h = &hs[i];
        memset(h, 0, sizeof(*h));
        h->ep = eps[i];
        struct keel_options o;
        need_token(c);
        fill_options(c, &o, eps[i]);
        o.max_retries = 3;
        int rv = keel_aclient_init(&h->ac, &loop, &o);
        if (rv != 0) {
            h->done = true;
            h->status = rv;
            snprintf(h->err, sizeof(h->err), "%s",
                     rv == KEEL_EINVAL ? "invalid endpoint" : keel_strerror(rv));
            continue;
        }
        Keel__RangeRequest range = KEEL__RANGE_REQUEST__INIT;
        range.key.data = (uint8_t *)"health";
        range.key.len = 6;
        Keel__Request req = KEEL__REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_RANGE;
        req.range = &range;
        h->start = uv_hrtime();
        rv = keel_aclient_request(h->ac, &req, 0, on_health, h);
        if (rv != 0) {
            h->done = true;
            h->status = rv;
            snprintf(h->err, sizeof(h->err), "%s", keel_strerror(rv));
            keel_aclient_close(h->ac, NULL, NULL);
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);

    bool unhealthy = false;
    char ***rows = alloc_rows(c, n, 4);
    json_object *a = c->fmt == OUT_JSON ? json_object_new_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        struct health *h = &hs[i];
        char took[64];
        ctl_format_duration(h->took_ns, took, sizeof(took));
        unhealthy |= h->status != 0;
        if (c->fmt == OUT_SIMPLE) {
            if (h->status == 0)
                printf("%s is healthy: successfully committed proposal: took = %s\n", h->ep, took);
            else
                fprintf(stderr, "%s is unhealthy: failed to commit proposal: %s\n", h->ep, h->err);
        } else if (a) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "endpoint", json_object_new_string(h->ep));
            json_object_object_add(o, "health", json_object_new_boolean(h->status == 0));
            json_object_object_add(o, "took", json_object_new_string(took));
            j_str(o, "error", h->status ? h->err : NULL);
            json_object_array_add(a, o);
        } else {
            rows[i][0] = (char *)h->ep;
            rows[i][1] = h->status == 0 ? "true" : "false";
            rows[i][2] = fmt_cell(c, "%s", took);
            rows[i][3] = h->status ? fmt_cell(c, "%s", h->err) : "";
        }
    }
    if (a)
        j_print(a);
    else if (c->fmt == OUT_TABLE) {
        static const char *const hdr[] = {"endpoint", "health", "took", "error"};
        print_table(hdr, 4, rows, n);
    }
    if (unhealthy)
        die(1, "unhealthy cluster");
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Leases
 */

static int64_t parse_lease_id(const char *s)
{
    const char *p = s;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        p += 2;
    char *end;
    unsigned long long v = strtoull(p, &end, 16);
    if (*p == '\0' || *end != '\0')
        die(EXIT_USAGE, "bad lease ID arg (%s), expecting ID in Hex", s);
    return (int64_t)v;
}

static const Keel__Response *lease_call(struct ctl *c, Keel__Request *req,
                                        Keel__Response__BodyCase want)
{
    const Keel__Response *resp = run(c, req);
    if (resp->body_case != want)
        die(1, "unexpected reply");
    return resp;
}

static void lease_json(const Keel__Response *resp, int64_t id, int64_t ttl)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "header", j_header(resp->header));
    j_i64(o, "ID", id);
    j_i64(o, "TTL", ttl);
    j_print(o);
}

/* lease keep-alive without --once: a keep-alive set of one lease on an asynchronous client on
 * this thread's loop (as watch does), until the lease is lost or a signal comes. */
struct ka_ctx {
    struct ctl *c;
    struct keel_aclient *ac;
    struct keel_keepalive *ka;
    uv_signal_t sigint, sigterm;
    bool stopping;
    int reason; /* why the lease was lost, 0 while it lives */
};

static void ka_stop(struct ka_ctx *x)
{
    if (x->stopping)
        return;
    x->stopping = true;
    uv_close((uv_handle_t *)&x->sigint, NULL);
    uv_close((uv_handle_t *)&x->sigterm, NULL);
    keel_keepalive_close(x->ka);
    keel_aclient_close(x->ac, NULL, NULL);
}

static void on_ka_signal(uv_signal_t *h, int signum)
{
    (void)signum;
    ka_stop(h->data);
}

static void on_ka_renewed(struct keel_keepalive *ka, int64_t id, int64_t ttl,
                          const Keel__Response *resp, void *data)
{
    (void)ka;
    struct ka_ctx *x = data;
    if (x->c->fmt == OUT_JSON)
        lease_json(resp, id, ttl);
    else
        printf("lease %016" PRIx64 " keepalived with TTL(%" PRId64 ")\n", (uint64_t)id, ttl);
    fflush(stdout);
}

/* etcdctl's words when the lease is gone; overdue (no answer for a TTL) is only a warning: the
 * set keeps renewing it, and a new leader may well still have it. */
static void on_ka_lost(struct keel_keepalive *ka, int64_t id, int reason, void *data)
{
    (void)ka;
    struct ka_ctx *x = data;
    if (reason == KEEL_ETIMEOUT) {
        fprintf(stderr,
                "keelctl: no keep-alive of lease %016" PRIx64
                " answered for its whole TTL: it may have expired; still trying\n",
                (uint64_t)id);
        return;
    }
    if (x->c->fmt != OUT_JSON)
        printf("lease %016" PRIx64 " expired or revoked.\n", (uint64_t)id);
    fflush(stdout);
    x->reason = reason;
    ka_stop(x);
}

static void lease_keep_alive_loop(struct ctl *c, int64_t id)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        die(1, "cannot create an event loop");
    struct ka_ctx x;
    memset(&x, 0, sizeof(x));
    x.c = c;
    x.ac = open_aclient(c, &loop);
    int rv;
    struct keel_keepalive_opts ko = {0};
    ko.lost = on_ka_lost;
    ko.renewed = on_ka_renewed;
    ko.data = &x;
    if ((rv = keel_aclient_keepalive(x.ac, &ko, &x.ka)) != 0 ||
        (rv = keel_keepalive_add(x.ka, id)) != 0)
        die(1, "%s", keel_strerror(rv));
    uv_signal_init(&loop, &x.sigint);
    uv_signal_init(&loop, &x.sigterm);
    x.sigint.data = x.sigterm.data = &x;
    uv_signal_start(&x.sigint, on_ka_signal, SIGINT);
    uv_signal_start(&x.sigterm, on_ka_signal, SIGTERM);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    fflush(stdout);
    if (x.reason != 0 && x.reason != KEEL_ELEASENOTFOUND)
        die(1, "lease %016" PRIx64 ": %s", (uint64_t)id, keel_strerror(x.reason));
}

static int cmd_lease(struct ctl *c, const char *sub, int argc, char **argv)
{
    bool keys = false, once = false;
    struct ctl_flag t[] = {
        {"keys", 0, CTL_BOOL, &keys, false},
        {"once", 0, CTL_BOOL, &once, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    c->usage = "lease grant <ttl> | revoke <id> | timetolive <id> [--keys] | list | "
               "keep-alive [--once] <id>";
    struct ctl_args pos;
    parse_args(c, t, argc, argv, &pos);
    apply_globals(c);
    no_table(c);
    Keel__Request req = KEEL__REQUEST__INIT;
    if (strcmp(sub, "grant") == 0) {
        if (pos.argc != 1)
            die(EXIT_USAGE, "lease grant command needs TTL argument");
        char *end;
        long long ttl = strtoll(pos.argv[0], &end, 10);
        if (*end || end == pos.argv[0] || ttl <= 0)
            die(EXIT_USAGE, "bad TTL (%s)", pos.argv[0]);
        Keel__LeaseGrantRequest g = KEEL__LEASE_GRANT_REQUEST__INIT;
        g.ttl = ttl;
        req.body_case = KEEL__REQUEST__BODY_LEASE_GRANT;
        req.lease_grant = &g;
        const Keel__Response *resp = lease_call(c, &req, KEEL__RESPONSE__BODY_LEASE_GRANT);
        if (resp->lease_grant->error && resp->lease_grant->error[0])
            die(1, "%s", resp->lease_grant->error);
        if (c->fmt == OUT_JSON)
            lease_json(resp, resp->lease_grant->id, resp->lease_grant->ttl);
        else
            printf("lease %016" PRIx64 " granted with TTL(%" PRId64 "s)\n",
                   (uint64_t)resp->lease_grant->id, resp->lease_grant->ttl);
        keel_flat_free(resp);
    } else if (strcmp(sub, "revoke") == 0) {
        if (pos.argc != 1)
            die(EXIT_USAGE, "lease revoke command needs 1 argument");
        Keel__LeaseRevokeRequest r = KEEL__LEASE_REVOKE_REQUEST__INIT;
        r.id = parse_lease_id(pos.argv[0]);
        req.body_case = KEEL__REQUEST__BODY_LEASE_REVOKE;
        req.lease_revoke = &r;
        const Keel__Response *resp = run(c, &req);
        if (c->fmt == OUT_JSON)
            lease_json(resp, 0, 0);
        else
            printf("lease %016" PRIx64 " revoked\n", (uint64_t)r.id);
        keel_flat_free(resp);
    } else if (strcmp(sub, "timetolive") == 0) {
        if (pos.argc != 1)
            die(EXIT_USAGE, "lease timetolive command needs lease ID as argument");
        Keel__LeaseTimeToLiveRequest r = KEEL__LEASE_TIME_TO_LIVE_REQUEST__INIT;
        r.id = parse_lease_id(pos.argv[0]);
        r.keys = keys;
        req.body_case = KEEL__REQUEST__BODY_LEASE_TIME_TO_LIVE;
        req.lease_time_to_live = &r;
        const Keel__Response *resp = lease_call(c, &req, KEEL__RESPONSE__BODY_LEASE_TIME_TO_LIVE);
        const Keel__LeaseTimeToLiveResponse *l = resp->lease_time_to_live;
        if (c->fmt == OUT_JSON) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "header", j_header(resp->header));
            j_i64(o, "ID", l->id);
            j_i64(o, "TTL", l->ttl);
            j_i64(o, "grantedTTL", l->grantedttl);
            if (l->n_keys) {
                json_object *ka = json_object_new_array();
                for (size_t i = 0; i < l->n_keys; i++)
                    json_object_array_add(ka, j_b64(&l->keys[i]));
                json_object_object_add(o, "keys", ka);
            }
            j_print(o);
        } else if (l->grantedttl == 0 && l->ttl == -1) {
            printf("lease %016" PRIx64 " already expired\n", (uint64_t)r.id);
        } else {
            printf("lease %016" PRIx64 " granted with TTL(%" PRId64 "s), remaining(%" PRId64 "s)",
                   (uint64_t)l->id, l->grantedttl, l->ttl);
            if (keys) {
                fputs(", attached keys([", stdout);
                for (size_t i = 0; i < l->n_keys; i++) {
                    if (i)
                        putchar(' ');
                    fwrite(l->keys[i].data, 1, l->keys[i].len, stdout);
                }
                fputs("])", stdout);
            }
            putchar('\n');
        }
        keel_flat_free(resp);
    } else if (strcmp(sub, "list") == 0) {
        Keel__LeaseLeasesRequest r = KEEL__LEASE_LEASES_REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_LEASE_LEASES;
        req.lease_leases = &r;
        const Keel__Response *resp = lease_call(c, &req, KEEL__RESPONSE__BODY_LEASE_LEASES);
        const Keel__LeaseLeasesResponse *l = resp->lease_leases;
        if (c->fmt == OUT_JSON) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "header", j_header(resp->header));
            json_object *la = json_object_new_array();
            for (size_t i = 0; i < l->n_leases; i++) {
                json_object *x = json_object_new_object();
                j_i64(x, "ID", l->leases[i]->id);
                json_object_array_add(la, x);
            }
            json_object_object_add(o, "leases", la);
            j_print(o);
        } else {
            printf("found %zu leases\n", l->n_leases);
            for (size_t i = 0; i < l->n_leases; i++)
                printf("%016" PRIx64 "\n", (uint64_t)l->leases[i]->id);
        }
        keel_flat_free(resp);
    } else if (strcmp(sub, "keep-alive") == 0) {
        if (pos.argc != 1)
            die(EXIT_USAGE, "lease keep-alive command needs lease ID as argument");
        Keel__LeaseKeepAliveRequest r = KEEL__LEASE_KEEP_ALIVE_REQUEST__INIT;
        r.id = parse_lease_id(pos.argv[0]);
        if (!once) {
            lease_keep_alive_loop(c, r.id);
            return 0;
        }
        req.body_case = KEEL__REQUEST__BODY_LEASE_KEEP_ALIVE;
        req.lease_keep_alive = &r;
        const Keel__Response *resp = lease_call(c, &req, KEEL__RESPONSE__BODY_LEASE_KEEP_ALIVE);
        int64_t ttl = resp->lease_keep_alive->ttl;
        if (c->fmt == OUT_JSON)
            lease_json(resp, resp->lease_keep_alive->id, ttl);
        else if (ttl <= 0)
            printf("lease %016" PRIx64 " expired or revoked.\n", (uint64_t)r.id);
        else
            printf("lease %016" PRIx64 " keepalived with TTL(%" PRId64 ")\n",
                   (uint64_t)resp->lease_keep_alive->id, ttl);
        fflush(stdout);
        keel_flat_free(resp);
    } else {
        die(EXIT_USAGE, "unknown lease command \"%s\"", sub);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Users, roles, auth (etcdctl's user / role / auth commands and their output)
 */

/* One request of an auth command: its reply, or the command ends with the member's message. */
static const Keel__Response *auth_call(struct ctl *c, Keel__Request *req)
{
    return run(c, req);
}

/* NAME[:PASSWORD] or NAME with --new-user-password; --interactive=false reads it from stdin
 * (etcdctl's way); keelctl never prompts. *name and *pw in the arena. */
static void name_password(struct ctl *c, const char *arg, const char *flag_pw, bool interactive,
                          const char **name, const char **pw)
{
    const char *colon = strchr(arg, ':');
    if (colon != NULL && flag_pw == NULL) {
        size_t n = (size_t)(colon - arg);
        char *u = keel_arena_alloc(&c->arena, n + 1);
        memcpy(u, arg, n);
        u[n] = '\0';
        *name = u;
        *pw = colon + 1;
        return;
    }
    *name = arg;
    if (flag_pw != NULL) {
        *pw = flag_pw;
        return;
    }
    if (interactive)
        die(EXIT_USAGE,
            "give the password as %s:PASSWORD or with --new-user-password (keelctl "
            "does not prompt; --interactive=false reads it from stdin)",
            arg);
    char line[1100];
    if (fgets(line, sizeof(line), stdin) == NULL)
        die(EXIT_USAGE, "no password on stdin");
    line[strcspn(line, "\r\n")] = '\0';
    char *p = keel_arena_alloc(&c->arena, strlen(line) + 1);
    strcpy(p, line);
    memset(line, 0, sizeof(line));
    *pw = p;
}

static int cmd_user(struct ctl *c, const char *sub, int argc, char **argv)
{
    const char *newpw = NULL;
    bool interactive = true;
    struct ctl_flag flags[] = {
        {"new-user-password", 0, CTL_STR, &newpw, false},
        {"interactive", 0, CTL_BOOL, &interactive, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    c->usage = "user add|delete|get|list|passwd|grant-role|revoke-role ...";
    struct ctl_args pos;
    parse_args(c, flags, argc, argv, &pos);
    apply_globals(c);
    Keel__Request req = KEEL__REQUEST__INIT;
    const Keel__Response *resp;
    size_t want = !strcmp(sub, "list")                                        ? 0
                  : !strcmp(sub, "grant-role") || !strcmp(sub, "revoke-role") ? 2
                                                                              : 1;
    if ((size_t)pos.argc != want)
        die(EXIT_USAGE, "user %s takes %zu argument%s", sub, want, want == 1 ? "" : "s");
    if (!strcmp(sub, "add") || !strcmp(sub, "passwd")) {
        const char *name, *pw;
        name_password(c, pos.argv[0], newpw, interactive, &name, &pw);
        Keel__UserAddRequest add = KEEL__USER_ADD_REQUEST__INIT;
        Keel__UserChangePasswordRequest chg = KEEL__USER_CHANGE_PASSWORD_REQUEST__INIT;
        if (!strcmp(sub, "add")) {
            add.name = (char *)name;
            add.password = (char *)pw;
            req.body_case = KEEL__REQUEST__BODY_USER_ADD;
            req.user_add = &add;
        } else {
            chg.name = (char *)name;
            chg.password = (char *)pw;
            req.body_case = KEEL__REQUEST__BODY_USER_CHANGE_PASSWORD;
            req.user_change_password = &chg;
        }
        resp = auth_call(c, &req);
        if (!strcmp(sub, "add"))
            printf("User %s created\n", name);
        else
            printf("Password updated\n");
    } else if (!strcmp(sub, "delete")) {
        Keel__UserDeleteRequest del = KEEL__USER_DELETE_REQUEST__INIT;
        del.name = pos.argv[0];
        req.body_case = KEEL__REQUEST__BODY_USER_DELETE;
        req.user_delete = &del;
        resp = auth_call(c, &req);
        printf("User %s deleted\n", del.name);
    } else if (!strcmp(sub, "get")) {
        Keel__UserGetRequest get = KEEL__USER_GET_REQUEST__INIT;
        get.name = pos.argv[0];
        req.body_case = KEEL__REQUEST__BODY_USER_GET;
        req.user_get = &get;
        resp = auth_call(c, &req);
        printf("User: %s\nRoles:", get.name);
        for (size_t i = 0; resp->user_get && i < resp->user_get->n_roles; i++)
            printf(" %s", resp->user_get->roles[i]);
        printf("\n");
    } else if (!strcmp(sub, "list")) {
        Keel__UserListRequest list = KEEL__USER_LIST_REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_USER_LIST;
        req.user_list = &list;
        resp = auth_call(c, &req);
        for (size_t i = 0; resp->user_list && i < resp->user_list->n_users; i++)
            printf("%s\n", resp->user_list->users[i]);
    } else if (!strcmp(sub, "grant-role")) {
        Keel__UserGrantRoleRequest g = KEEL__USER_GRANT_ROLE_REQUEST__INIT;
        g.user = pos.argv[0];
        g.role = pos.argv[1];
        req.body_case = KEEL__REQUEST__BODY_USER_GRANT_ROLE;
        req.user_grant_role = &g;
        resp = auth_call(c, &req);
        printf("Role %s is granted to user %s\n", g.role, g.user);
    } else if (!strcmp(sub, "revoke-role")) {
        Keel__UserRevokeRoleRequest r = KEEL__USER_REVOKE_ROLE_REQUEST__INIT;
        r.name = pos.argv[0];
        r.role = pos.argv[1];
        req.body_case = KEEL__REQUEST__BODY_USER_REVOKE_ROLE;
        req.user_revoke_role = &r;
        resp = auth_call(c, &req);
        printf("Role %s is revoked from user %s\n", r.role, r.name);
    } else {
        fprintf(stderr, "Error: unknown command \"user %s\"\n%s", sub, usage_text);
        return EXIT_USAGE;
    }
    keel_flat_free(resp);
    return 0;
}

/* KEY [END] with --prefix / --from-key, as get's range: into key and end (arena). */
static void perm_range(struct ctl *c, struct ctl_args *pos, size_t at, bool prefix, bool from_key,
                       ProtobufCBinaryData *key, ProtobufCBinaryData *end)
{
    key->data = (uint8_t *)pos->argv[at];
    key->len = strlen(pos->argv[at]);
    end->data = NULL;
    end->len = 0;
    if (prefix && from_key)
        die(EXIT_USAGE, "--prefix and --from-key cannot be set together");
    if ((prefix || from_key) && (size_t)pos->argc > at + 1)
        die(EXIT_USAGE, "an end key cannot be given with --prefix or --from-key");
    if ((prefix || from_key) && key->len == 0) {
        /* Every key, as clientv3 spells it: "\0" from "\0". */
        key->data = (uint8_t *)"";
        key->len = 1;
        end->data = (uint8_t *)"";
        end->len = 1;
    } else if (prefix) {
        uint8_t *e = keel_arena_alloc(&c->arena, key->len + 1);
        end->len = keel_prefix_end(key->data, key->len, e);
        end->data = e;
    } else if (from_key) {
        end->data = (uint8_t *)"";
        end->len = 1; /* "\0" */
    } else if ((size_t)pos->argc > at + 1) {
        end->data = (uint8_t *)pos->argv[at + 1];
        end->len = strlen(pos->argv[at + 1]);
    }
}

static void print_perm_key(const ProtobufCBinaryData *b)
{
    if (b->len == 1 && b->data[0] == 0)
        return; /* "\0": the first key there is, shown empty as etcdctl does */
    fwrite(b->data, 1, b->len, stdout);
}

/* etcdctl's role get: the key alone, [key, end), or [key, <open ended>. */
static void print_perms(const Keel__RoleGetResponse *r, bool write)
{
    for (size_t i = 0; r != NULL && i < r->n_perm; i++) {
        const Keel__Permission *p = r->perm[i];
        bool ok =
            p->permtype == KEEL__PERMISSION__TYPE__READWRITE ||
            p->permtype == (write ? KEEL__PERMISSION__TYPE__WRITE : KEEL__PERMISSION__TYPE__READ);
        if (!ok)
            continue;
        printf("\t");
        if (p->range_end.len == 0) {
            print_perm_key(&p->key);
        } else if (p->range_end.len == 1 && p->range_end.data[0] == 0) {
            printf("[");
            print_perm_key(&p->key);
            printf(", <open ended>");
        } else {
            printf("[");
            print_perm_key(&p->key);
            printf(", ");
            print_perm_key(&p->range_end);
            printf(")");
            uint8_t e[KEEL_MAX_KEY_BYTES + 1];
            size_t el =
                p->key.len <= KEEL_MAX_KEY_BYTES ? keel_prefix_end(p->key.data, p->key.len, e) : 0;
            if (el == p->range_end.len && memcmp(e, p->range_end.data, el) == 0) {
                printf(" (prefix ");
                print_perm_key(&p->key);
                printf(")");
            }
        }
        printf("\n");
    }
}

static int cmd_role(struct ctl *c, const char *sub, int argc, char **argv)
{
    bool prefix = false, from_key = false;
    struct ctl_flag flags[] = {
        {"prefix", 0, CTL_BOOL, &prefix, false},
        {"from-key", 0, CTL_BOOL, &from_key, false},
        {NULL, 0, CTL_BOOL, NULL, false},
    };
    c->usage = "role add|delete|get|list|grant-permission|revoke-permission ...";
    struct ctl_args pos;
    parse_args(c, flags, argc, argv, &pos);
    apply_globals(c);
    Keel__Request req = KEEL__REQUEST__INIT;
    const Keel__Response *resp;
    if (!strcmp(sub, "list")) {
        if (pos.argc != 0)
            die(EXIT_USAGE, "role list takes no arguments");
        Keel__RoleListRequest list = KEEL__ROLE_LIST_REQUEST__INIT;
        req.body_case = KEEL__REQUEST__BODY_ROLE_LIST;
        req.role_list = &list;
        resp = auth_call(c, &req);
        for (size_t i = 0; resp->role_list && i < resp->role_list->n_roles; i++)
            printf("%s\n", resp->role_list->roles[i]);
    } else if (!strcmp(sub, "grant-permission")) {
        if (pos.argc < 3 || pos.argc > 4)
            die(EXIT_USAGE, "role grant-permission takes ROLE read|write|readwrite KEY [END]");
        Keel__Permission perm = KEEL__PERMISSION__INIT;
        const char *t = pos.argv[1];
        if (!strcasecmp(t, "read"))
            perm.permtype = KEEL__PERMISSION__TYPE__READ;
        else if (!strcasecmp(t, "write"))
            perm.permtype = KEEL__PERMISSION__TYPE__WRITE;
        else if (!strcasecmp(t, "readwrite"))
            perm.permtype = KEEL__PERMISSION__TYPE__READWRITE;
        else
            die(EXIT_USAGE, "permission type must be read, write or readwrite, not \"%s\"", t);
        perm_range(c, &pos, 2, prefix, from_key, &perm.key, &perm.range_end);
        Keel__RoleGrantPermissionRequest g = KEEL__ROLE_GRANT_PERMISSION_REQUEST__INIT;
        g.name = pos.argv[0];
        g.perm = &perm;
        req.body_case = KEEL__REQUEST__BODY_ROLE_GRANT_PERMISSION;
        req.role_grant_permission = &g;
        resp = auth_call(c, &req);
        printf("Role %s updated\n", g.name);
    } else if (!strcmp(sub, "revoke-permission")) {
        if (pos.argc < 2 || pos.argc > 3)
            die(EXIT_USAGE, "role revoke-permission takes ROLE KEY [END]");
        Keel__RoleRevokePermissionRequest r = KEEL__ROLE_REVOKE_PERMISSION_REQUEST__INIT;
        r.role = pos.argv[0];
        perm_range(c, &pos, 1, prefix, from_key, &r.key, &r.range_end);
        req.body_case = KEEL__REQUEST__BODY_ROLE_REVOKE_PERMISSION;
        req.role_revoke_permission = &r;
        resp = auth_call(c, &req);
        if (r.range_end.len == 0)
            printf("Permission of key %s is revoked from role %s\n", pos.argv[1], r.role);
        else
            printf("Permission of range [%s, %.*s) is revoked from role %s\n", pos.argv[1],
                   (int)r.range_end.len, (const char *)r.range_end.data, r.role);
    } else if (!strcmp(sub, "add") || !strcmp(sub, "delete") || !strcmp(sub, "get")) {
        if (pos.argc != 1)
            die(EXIT_USAGE, "role %s takes one argument", sub);
        Keel__RoleAddRequest add = KEEL__ROLE_ADD_REQUEST__INIT;
        Keel__RoleDeleteRequest del = KEEL__ROLE_DELETE_REQUEST__INIT;
        Keel__RoleGetRequest get = KEEL__ROLE_GET_REQUEST__INIT;
        if (!strcmp(sub, "add")) {
            add.name = pos.argv[0];
            req.body_case = KEEL__REQUEST__BODY_ROLE_ADD;
            req.role_add = &add;
        } else if (!strcmp(sub, "delete")) {
            del.role = pos.argv[0];
            req.body_case = KEEL__REQUEST__BODY_ROLE_DELETE;
            req.role_delete = &del;
        } else {
            get.role = pos.argv[0];
            req.body_case = KEEL__REQUEST__BODY_ROLE_GET;
            req.role_get = &get;
        }
        resp = auth_call(c, &req);
        if (!strcmp(sub, "add")) {
            printf("Role %s created\n", pos.argv[0]);
        } else if (!strcmp(sub, "delete")) {
            printf("Role %s deleted\n", pos.argv[0]);
        } else {
            printf("Role %s\nKV Read:\n", pos.argv[0]);
            print_perms(resp->role_get, false);
            printf("KV Write:\n");
            print_perms(resp->role_get, true);
        }
    } else {
        fprintf(stderr, "Error: unknown command \"role %s\"\n%s", sub, usage_text);
        return EXIT_USAGE;
    }
    keel_flat_free(resp);
    return 0;
}

static int cmd_auth(struct ctl *c, const char *sub, int argc, char **argv)
{
    c->usage = "auth enable|disable|status";
    struct ctl_args pos;
    parse_args(c, NULL, argc, argv, &pos);
    apply_globals(c);
    if (pos.argc != 0)
        die(EXIT_USAGE, "auth %s takes no arguments", sub);
    Keel__Request req = KEEL__REQUEST__INIT;
    Keel__AuthEnableRequest en = KEEL__AUTH_ENABLE_REQUEST__INIT;
    Keel__AuthDisableRequest dis = KEEL__AUTH_DISABLE_REQUEST__INIT;
    Keel__AuthStatusRequest st = KEEL__AUTH_STATUS_REQUEST__INIT;
    if (!strcmp(sub, "enable")) {
        req.body_case = KEEL__REQUEST__BODY_AUTH_ENABLE;
        req.auth_enable = &en;
    } else if (!strcmp(sub, "disable")) {
        req.body_case = KEEL__REQUEST__BODY_AUTH_DISABLE;
        req.auth_disable = &dis;
    } else if (!strcmp(sub, "status")) {
        req.body_case = KEEL__REQUEST__BODY_AUTH_STATUS;
        req.auth_status = &st;
    } else {
        fprintf(stderr, "Error: unknown command \"auth %s\"\n%s", sub, usage_text);
        return EXIT_USAGE;
    }
    const Keel__Response *resp = auth_call(c, &req);
    if (!strcmp(sub, "enable"))
        printf("Authentication Enabled\n");
    else if (!strcmp(sub, "disable"))
        printf("Authentication Disabled\n");
    else if (resp->auth_status != NULL)
        printf("Authentication Status: %s\nAuthRevision: %llu\n",
               resp->auth_status->enabled ? "true" : "false",
               (unsigned long long)resp->auth_status->authrevision);
    keel_flat_free(resp);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * main
 */

/* How many arguments a global flag before the command spans: 1 (a switch, or its value given
 * inline: "--zone=z1", "-wjson"), 2 (its value follows), 0 (no global flag). global_flags is the
 * one list of them. */
static int global_span(struct ctl *c, const char *arg)
{
    struct ctl_flag t[24];
    size_t n = global_flags(c, t);
    for (size_t i = 0; i < n && arg[0] == '-'; i++) {
        bool inline_value;
        if (arg[1] == '-') {
            size_t len = strcspn(arg + 2, "=");
            if (strlen(t[i].name) != len || strncmp(arg + 2, t[i].name, len) != 0)
                continue;
            inline_value = arg[2 + len] == '=';
        } else if (t[i].shorthand != 0 && arg[1] == t[i].shorthand) {
            inline_value = arg[2] != '\0';
        } else {
            continue;
        }
        return t[i].type == CTL_BOOL || inline_value ? 1 : 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct ctl *c = &g_ctl;
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("keelctl version: %s\nAPI version: %d\n", KEEL_VERSION, KEEL_PROTOCOL_VERSION);
        return 0;
    }
    keel_arena_init(&c->arena, 0);

    /* Global flags may precede the command: skip them (with their values) to find it; they are
     * parsed for real together with the command's own flags. */
    int ci = 1;
    while (ci < argc) {
        const char *a = argv[ci];
        int span = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if ((span = global_span(c, a)) > 0) {
            ci += span;
        } else if (a[0] == '-') {
            fprintf(stderr, "Error: unknown flag: %s\n%s", a, usage_text);
            return EXIT_USAGE;
        } else {
            break;
        }
    }
    if (ci >= argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[ci];
    /* Everything but the command word(s) is parsed as arguments and flags. */
    char **rest = keel_arena_alloc(&c->arena, (size_t)argc * sizeof(*rest));
    int nrest = 0;
    for (int i = 1; i < ci; i++)
        rest[nrest++] = argv[i];
    bool two_words = !strcmp(cmd, "member") || !strcmp(cmd, "endpoint") || !strcmp(cmd, "lease") ||
                     !strcmp(cmd, "snapshot") || !strcmp(cmd, "alarm") || !strcmp(cmd, "user") ||
                     !strcmp(cmd, "role") || !strcmp(cmd, "auth");
    const char *sub = NULL;
    if (two_words) {
        if (ci + 1 >= argc || argv[ci + 1][0] == '-') {
            fprintf(stderr, "Error: \"%s\" needs a subcommand\n%s", cmd, usage_text);
            return EXIT_USAGE;
        }
        sub = argv[ci + 1];
    }
    for (int i = ci + 1 + (two_words ? 1 : 0); i < argc; i++)
        rest[nrest++] = argv[i];

    int rv;
    if (!strcmp(cmd, "put"))
        rv = cmd_put(c, nrest, rest);
    else if (!strcmp(cmd, "get"))
        rv = cmd_get(c, nrest, rest);
    else if (!strcmp(cmd, "del") || !strcmp(cmd, "delete"))
        rv = cmd_del(c, nrest, rest);
    else if (!strcmp(cmd, "txn"))
        rv = cmd_txn(c, nrest, rest);
    else if (!strcmp(cmd, "watch"))
        rv = cmd_watch(c, nrest, rest);
    else if (!strcmp(cmd, "compaction") || !strcmp(cmd, "compact"))
        rv = cmd_compaction(c, nrest, rest);
    else if (!strcmp(cmd, "member") && !strcmp(sub, "list"))
        rv = cmd_member_list(c, nrest, rest);
    else if (!strcmp(cmd, "member") && !strcmp(sub, "add"))
        rv = cmd_member_add(c, nrest, rest);
    else if (!strcmp(cmd, "member") && !strcmp(sub, "remove"))
        rv = cmd_member_remove(c, nrest, rest, false);
    else if (!strcmp(cmd, "member") && !strcmp(sub, "promote"))
        rv = cmd_member_remove(c, nrest, rest, true);
    else if (!strcmp(cmd, "member") && !strcmp(sub, "update"))
        rv = cmd_member_update(c, nrest, rest);
    else if (!strcmp(cmd, "endpoint") && !strcmp(sub, "status"))
        rv = cmd_endpoint_status(c, nrest, rest);
    else if (!strcmp(cmd, "endpoint") && !strcmp(sub, "health"))
        rv = cmd_endpoint_health(c, nrest, rest);
    else if (!strcmp(cmd, "lease"))
        rv = cmd_lease(c, sub, nrest, rest);
    else if (!strcmp(cmd, "alarm"))
        rv = cmd_alarm(c, sub, nrest, rest);
    else if (!strcmp(cmd, "defrag"))
        rv = cmd_defrag(c, nrest, rest);
    else if (!strcmp(cmd, "move-leader"))
        rv = cmd_move_leader(c, nrest, rest);
    else if (!strcmp(cmd, "snapshot"))
        rv = cmd_snapshot(c, sub, nrest, rest);
    else if (!strcmp(cmd, "user"))
        rv = cmd_user(c, sub, nrest, rest);
    else if (!strcmp(cmd, "role"))
        rv = cmd_role(c, sub, nrest, rest);
    else if (!strcmp(cmd, "auth"))
        rv = cmd_auth(c, sub, nrest, rest);
    else if (!strcmp(cmd, "version")) {
        printf("keelctl version: %s\nAPI version: %d\n", KEEL_VERSION, KEEL_PROTOCOL_VERSION);
        rv = 0;
    } else if (!strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        rv = 0;
    } else {
        fprintf(stderr, "Error: unknown command \"%s%s%s\"\n%s", cmd, sub ? " " : "",
                sub ? sub : "", usage_text);
        rv = EXIT_USAGE;
    }
    fflush(stdout);
    ctl_cleanup();
    return rv;
}
