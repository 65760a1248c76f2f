#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <sys/stat.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compactor.h"
#include "configfile.h"
#include "fsm.h"
#include "hostport.h"
#include "log.h"

static const char usage[] =
    "usage: keeld --name NAME --data-dir DIR --listen-client HOST:PORT --listen-peer HOST:PORT\n"
    "             --initial-cluster NAME=HOST:PORT[@ZONE],... [options]\n"
    "   or: keeld --config-file FILE [options]\n"
    "\n"
    "Every setting below can also be given as an environment variable KEEL_<NAME> (the flag\n"
    "upper-cased, '-' as '_': --data-dir is KEEL_DATA_DIR; an empty one counts as unset) or as\n"
    "a key of the YAML --config-file (the flag without '--': data-dir: /var/lib/keel). A flag\n"
    "beats the environment, which beats the file.\n"
    "\n"
    "  --config-file FILE          read settings from FILE, a YAML mapping of flag names to\n"
    "                              values (initial-cluster may be a list); also\n"
    "                              KEEL_CONFIG_FILE. Unknown keys are refused\n"
    "  --name NAME                 this member's name, one of --initial-cluster\n"
    "  --data-dir DIR              raft log under DIR/raft, key-value state under DIR/state\n"
    "  --listen-client HOST:PORT   client address (IPv4 literal)\n"
    "  --listen-peer HOST:PORT     peer address (IPv4 literal); must equal this member's\n"
    "                              --initial-cluster entry, or have its port when that is a name\n"
    "  --initial-cluster LIST      every member as NAME=HOST:PORT[@ZONE], the same on every "
    "member;\n"
    "                              HOST an IPv4 address or a DNS name (resolved at each connect)\n"
    "  --listen-metrics URL        serve /metrics (Prometheus), /health, /readyz and /livez\n"
    "                              there (default: not served). HOST:PORT or\n"
    "                              http://HOST:PORT: plain HTTP; https://HOST:PORT: TLS with\n"
    "                              the client port's --cert-file, --key-file,\n"
    "                              --trusted-ca-file and --client-cert-auth (reloaded on\n"
    "                              SIGHUP with them)\n"
    "  --initial-cluster-state S   new (default): these members start a new cluster;\n"
    "                              existing: join a running cluster that `keelctl member add`\n"
    "                              named this member in (list every member, this one too)\n"
    "  --zone ZONE                 this member's zone (default: its --initial-cluster zone)\n"
    "  --preferred-leader-zone Z   a leader outside zone Z hands leadership to a caught-up\n"
    "                              member of Z (give every member the same Z)\n"
    "  --heartbeat-ms N            raft heartbeat interval (default 100)\n"
    "  --election-ms N             raft election timeout (default 1000)\n"
    "  --snapshot-bytes N          take a raft snapshot once the log entries since the last one\n"
    "                              weigh N bytes (default 32 MiB); each snapshot stalls appends\n"
    "                              for tens of ms, so keep it in the tens of MiB\n"
    "  --snapshot-trailing-bytes N keep at most about N bytes of entries behind a snapshot for\n"
    "                              followers that lag (default 16 MiB; at least 16 entries, so\n"
    "                              a follower a moment behind is not sent a checkpoint);\n"
    "                              raft keeps the whole log in memory and reloads it at start,\n"
    "                              so the two bound its memory and the restart\n"
    "  --snapshot-threshold N      and at most N entries between snapshots (default 65536)\n"
    "  --snapshot-trailing N       and at most N entries behind one (default 65536)\n"
    "  --raft-segment-bytes N      raft log segment size (default 8 MiB; a multiple of 64 KiB);\n"
    "                              the log is trimmed in whole segments, and a member keeps up\n"
    "                              to three open ones allocated\n"
    "  --quota-bytes N             logical size quota of the store (default 2 GiB)\n"
    "  --disk-reserve-bytes N      free space kept on the data dir's filesystem: below it this\n"
    "                              member raises the NOSPACE alarm (writes that add data stop\n"
    "                              everywhere) instead of failing when the disk is full\n"
    "                              (default 256 MiB, at most 1/16 of the filesystem; 0: off)\n"
    "  --disk-check-ms N           how often the free space is looked at (default 1000)\n"
    "  --max-request-bytes N       largest request accepted (default 1.5 MiB)\n"
    "  --max-txn-ops N             compares, and operations per branch, at each level of a txn\n"
    "                              (default 128); all the levels of a txn together: 8 x N\n"
    "  --max-inflight N            requests in flight per connection (default 1024)\n"
    "  --max-inflight-total N      requests in flight on all connections (default 8192)\n"
    "  --max-connections N         client connections (default 4096); lowered at start to what\n"
    "                              the descriptor limit leaves past 256 for keeld itself\n"
    "  --max-output-bytes N        replies queued for all clients together; past half of it\n"
    "                              clients with replies unread are not read, past it the\n"
    "                              client with the most unread is cut off (default 512 MiB)\n"
    "  --max-apply-backlog-bytes N writes taken and not yet applied before clients are no\n"
    "                              longer read (default 64 MiB; read again at half)\n"
    "  --max-watches N             watches per connection (default 100000)\n"
    "  --watch-progress-ms N       progress notification interval (default 600000)\n"
    "  --auth-token-ttl N          seconds a token from Authenticate stays valid (default 300,\n"
    "                              etcd's simple-token TTL)\n"
    "  --lease-checkpoint-interval-ms N\n"
    "                              how long a lease may go unrenewed before the leader writes\n"
    "                              its remaining TTL to the log (default 5000)\n"
    "  --auto-compaction-mode M    periodic (default) or revision, as etcd's\n"
    "  --auto-compaction-retention R\n"
    "                              periodic: keep this much history, a duration (1h, 30m,\n"
    "                              10s) or a number of hours; revision: keep this many\n"
    "                              revisions; 0 (default): no auto-compaction. The leader\n"
    "                              compacts through the log, every member at once\n"
    "  --auto-compaction-interval-ms N\n"
    "                              revision mode: how often to look (default 300000, etcd's\n"
    "                              5 minutes); periodic looks every retention/10 (at most 6 min)\n"
    "  --backend-batch-interval-ms N\n"
    "                              commit the store (one LMDB sync) at least this often while\n"
    "                              writes arrive (default 500; etcd's backend batch interval is\n"
    "                              100, but no reply waits for this commit);\n"
    "                              a write is answered once in the raft log and applied, before\n"
    "                              that commit\n"
    "  --backend-batch-bytes N     ... or once the applied, uncommitted state held in memory\n"
    "                              reaches N bytes (default 64 MiB)\n"
    "  --warn-apply-duration D     log a batch of entries whose apply takes longer: 100ms,\n"
    "                              1s, 500us, or milliseconds (default 100ms; 0: never)\n"
    "  --peer-cert-file FILE       peer TLS: this member's certificate (PEM), shown to the "
    "members\n"
    "                              it dials and to those that dial it; it must name the host of\n"
    "                              its --initial-cluster entry (IP or DNS subjectAltName)\n"
    "  --peer-key-file FILE        peer TLS: that certificate's private key (PEM)\n"
    "  --peer-trusted-ca-file FILE peer TLS: the CA every member's certificate chains to. Give\n"
    "                              all three peer flags or none; with them every byte between\n"
    "                              members is encrypted and both ends verify each other.\n"
    "                              SIGHUP reads the three files again\n"
    "  --cert-file FILE            TLS on the client port: this member's certificate (PEM,\n"
    "                              then any intermediates); clients must then use TLS\n"
    "                              (an https:// endpoint, or keelctl given a CA). TLS 1.2+,\n"
    "                              forward-secret AEAD ciphers only. Certificates and keys are\n"
    "                              read again on SIGHUP (new connections get them; a failed\n"
    "                              reload keeps the old ones and logs why)\n"
    "  --key-file FILE             the certificate's private key (PEM)\n"
    "  --trusted-ca-file FILE      CAs (PEM) that client certificates must chain to; also\n"
    "                              what a follower verifies the leader's client port with when\n"
    "                              it asks for the NOSPACE alarm\n"
    "  --client-cert-auth          require a client certificate chaining to\n"
    "                              --trusted-ca-file (its CN names the client); also on an\n"
    "                              https:// --listen-metrics\n"
    "  --log-level debug|info|warn|error (default info)\n"
    "  --log-format text|json      one line per event; json: "
    "{\"ts\",\"level\",\"member\",\"zone\",\n"
    "                              \"msg\"} (default text)\n"
    "  --help                      this text\n"
    "  --version                   keeld's version\n";

int keel_mkdir_p(const char *path)
{
    char buf[600];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

uint64_t keel_hash64(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h ? h : 1;
}

int keel_addr_split(const char *addr, char *host, size_t hostlen, int *port)
{
    return keel_addr_split_any(addr, host, hostlen, port, NULL, 0) == KEEL_HOST_IPV4 ? 0 : -1;
}

int keel_addr_split_any(const char *addr, char *host, size_t hostlen, int *port, char *why,
                        size_t whylen)
{
    return keel_hostport_split(addr, strlen(addr), host, hostlen, port, why, whylen);
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int copy_arg(char *dst, size_t cap, const char *src, const char *flag, char *err,
                    size_t errlen)
{
    if (strlen(src) >= cap)
        return fail(err, errlen, "%s is too long (at most %zu bytes)", flag, cap - 1);
    if (src[0] == '\0')
        return fail(err, errlen, "%s is empty", flag);
    strcpy(dst, src);
    return 0;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char *flag,
                     char *err, size_t errlen)
{
    char *end;
    if (s[0] == '-' || s[0] == '\0')
        return fail(err, errlen, "%s: '%s' is not a positive number", flag, s);
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0')
        return fail(err, errlen, "%s: '%s' is not a number", flag, s);
    if (v < min || v > max)
        return fail(err, errlen, "%s: %llu is out of range [%llu, %llu]", flag, v,
                    (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

/* addr as HOST:PORT (proto/hostport.h); a host name only where names is set: peers are dialled
 * by name (resolved at each connect, off the loop), but a listen address is bound as given, and
 * binding to a name's addresses would bind to whatever it resolved to at start. */
static int check_addr(const char *addr, const char *what, bool names, char *err, size_t errlen)
{
    char host[KEEL_ADDR_MAX], why[160];
    int port;
    int kind = keel_addr_split_any(addr, host, sizeof(host), &port, why, sizeof(why));
    if (kind < 0)
        return fail(err, errlen, "%s '%s' is not %s: %s", what, addr,
                    names ? "HOST:PORT (HOST an IPv4 address or a host name)"
                          : "an IPv4 address with a port (a.b.c.d:port)",
                    why);
    if (kind == KEEL_HOST_NAME && !names)
        return fail(err, errlen,
                    "%s '%s': a listen address must be an IPv4 address with a port "
                    "(a.b.c.d:port; 0.0.0.0 listens on every interface), not a host name",
                    what, addr);
    return 0;
}

/* This member's --initial-cluster address is where the others dial it: the same as --listen-peer,
 * or, when it is a host name (a Kubernetes pod's, whose IP changes at each restart), a name for
 * it with the port --listen-peer listens on (0.0.0.0, or the pod's IP). */
static int check_listen_peer(const struct keel_config *c, const struct keel_member_conf *self,
                             char *err, size_t errlen)
{
    char host[KEEL_ADDR_MAX];
    int port, listen_port;
    if (strcmp(self->peer, c->listen_peer) == 0)
        return 0;
    if (keel_addr_split_any(self->peer, host, sizeof(host), &port, NULL, 0) != KEEL_HOST_NAME)
        return fail(err, errlen,
                    "--listen-peer %s differs from this member's --initial-cluster address %s",
                    c->listen_peer, self->peer);
    if (keel_addr_split(c->listen_peer, host, sizeof(host), &listen_port) != 0 ||
        listen_port != port)
        return fail(err, errlen,
                    "--listen-peer %s differs in its port from this member's --initial-cluster "
                    "address %s (a host name there must name this member's --listen-peer)",
                    c->listen_peer, self->peer);
    return 0;
}

static int parse_cluster(struct keel_config *c, const char *list, char *err, size_t errlen)
{
    char *copy = strdup(list);
    if (copy == NULL)
        return fail(err, errlen, "out of memory");
    int rv = 0;
    size_t cap = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item != NULL && rv == 0;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (eq == NULL || eq == item) {
            rv = fail(err, errlen, "--initial-cluster entry '%s' is not NAME=HOST:PORT[@ZONE]",
                      item);
            break;
        }
        *eq = '\0';
        char *addr = eq + 1;
        char *at = strchr(addr, '@');
        if (at != NULL)
            *at = '\0';
        if (c->n_members == cap) {
            cap = cap ? cap * 2 : 8;
            struct keel_member_conf *nm = realloc(c->members, cap * sizeof(*nm));
            if (nm == NULL) {
                rv = fail(err, errlen, "out of memory");
                break;
            }
            c->members = nm;
        }
        struct keel_member_conf *m = &c->members[c->n_members];
        memset(m, 0, sizeof(*m));
        if ((rv = copy_arg(m->name, sizeof(m->name), item, "member name", err, errlen)) != 0 ||
            (rv = copy_arg(m->peer, sizeof(m->peer), addr, "--initial-cluster address", err,
                           errlen)) != 0 ||
            (rv = check_addr(m->peer, "--initial-cluster address", true, err, errlen)) != 0)
            break;
        if (at != NULL &&
            (rv = copy_arg(m->zone, sizeof(m->zone), at + 1, "member zone", err, errlen)) != 0)
            break;
        m->id = keel_hash64(m->name, strlen(m->name));
        for (size_t i = 0; i < c->n_members; i++) {
            if (strcmp(c->members[i].name, m->name) == 0)
                rv = fail(err, errlen, "--initial-cluster names member '%s' twice", m->name);
            else if (strcmp(c->members[i].peer, m->peer) == 0)
                rv =
                    fail(err, errlen, "--initial-cluster gives address %s to two members", m->peer);
        }
        c->n_members++;
    }
    free(copy);
    if (rv == 0 && c->n_members == 0)
        rv = fail(err, errlen, "--initial-cluster lists no member");
    return rv;
}

enum {
    O_NAME = 256,
    O_DATA,
    O_LCLIENT,
    O_LPEER,
    O_CLUSTER,
    O_ZONE,
    O_HB,
    O_ET,
    O_SNAP,
    O_TRAIL,
    O_QUOTA,
    O_MAXREQ,
    O_MAXOPS,
    O_INFLIGHT,
    O_LOG,
    O_HELP,
    O_VERSION,
    O_MAXWATCH,
    O_PROGRESS,
    O_LEASE_CP,
    O_INFLIGHT_TOTAL,
    O_MAXCONN,
    O_MAXOUT,
    O_APPLY_BACKLOG,
    O_BATCH_MS,
    O_BATCH_BYTES,
    O_SNAP_BYTES,
    O_TRAIL_BYTES,
    O_SEGMENT,
    O_AC_MODE,
    O_PREFER,
    O_CLUSTER_STATE,
    O_METRICS,
    O_LOG_FORMAT,
    O_AC_RETENTION,
    O_AC_INTERVAL,
    O_DISK_RESERVE,
    O_DISK_CHECK,
    O_CONFIG_FILE,
    O_WARN_APPLY,
    O_PEER_CERT,
    O_PEER_KEY,
    O_PEER_CA,
    O_AUTH_TTL,
    O_CERT_FILE,
    O_KEY_FILE,
    O_TRUSTED_CA,
    O_CLIENT_CERT_AUTH
};

/* Every setting keeld has, by its flag name: the keys of --config-file and, upper-cased with
 * "_" for "-" after KEEL_, its environment variables. */
static const struct option opts[] = {
    {"name", required_argument, NULL, O_NAME},
    {"data-dir", required_argument, NULL, O_DATA},
    {"listen-client", required_argument, NULL, O_LCLIENT},
    {"listen-peer", required_argument, NULL, O_LPEER},
    {"initial-cluster", required_argument, NULL, O_CLUSTER},
    {"zone", required_argument, NULL, O_ZONE},
    {"heartbeat-ms", required_argument, NULL, O_HB},
    {"election-ms", required_argument, NULL, O_ET},
    {"snapshot-threshold", required_argument, NULL, O_SNAP},
    {"snapshot-trailing", required_argument, NULL, O_TRAIL},
    {"snapshot-bytes", required_argument, NULL, O_SNAP_BYTES},
    {"snapshot-trailing-bytes", required_argument, NULL, O_TRAIL_BYTES},
    {"raft-segment-bytes", required_argument, NULL, O_SEGMENT},
    {"quota-bytes", required_argument, NULL, O_QUOTA},
    {"disk-reserve-bytes", required_argument, NULL, O_DISK_RESERVE},
    {"disk-check-ms", required_argument, NULL, O_DISK_CHECK},
    {"max-request-bytes", required_argument, NULL, O_MAXREQ},
    {"max-txn-ops", required_argument, NULL, O_MAXOPS},
    {"auth-token-ttl", required_argument, NULL, O_AUTH_TTL},
    {"max-inflight", required_argument, NULL, O_INFLIGHT},
    {"max-inflight-total", required_argument, NULL, O_INFLIGHT_TOTAL},
    {"max-connections", required_argument, NULL, O_MAXCONN},
    {"max-output-bytes", required_argument, NULL, O_MAXOUT},
    {"max-apply-backlog-bytes", required_argument, NULL, O_APPLY_BACKLOG},
    {"log-level", required_argument, NULL, O_LOG},
    {"max-watches", required_argument, NULL, O_MAXWATCH},
    {"watch-progress-ms", required_argument, NULL, O_PROGRESS},
    {"lease-checkpoint-interval-ms", required_argument, NULL, O_LEASE_CP},
    {"backend-batch-interval-ms", required_argument, NULL, O_BATCH_MS},
    {"backend-batch-bytes", required_argument, NULL, O_BATCH_BYTES},
    {"auto-compaction-mode", required_argument, NULL, O_AC_MODE},
    {"preferred-leader-zone", required_argument, NULL, O_PREFER},
    {"initial-cluster-state", required_argument, NULL, O_CLUSTER_STATE},
    {"listen-metrics", required_argument, NULL, O_METRICS},
    {"log-format", required_argument, NULL, O_LOG_FORMAT},
    {"auto-compaction-retention", required_argument, NULL, O_AC_RETENTION},
    {"auto-compaction-interval-ms", required_argument, NULL, O_AC_INTERVAL},
    {"config-file", required_argument, NULL, O_CONFIG_FILE},
    {"warn-apply-duration", required_argument, NULL, O_WARN_APPLY},
    {"peer-cert-file", required_argument, NULL, O_PEER_CERT},
    {"peer-key-file", required_argument, NULL, O_PEER_KEY},
    {"peer-trusted-ca-file", required_argument, NULL, O_PEER_CA},
    {"cert-file", required_argument, NULL, O_CERT_FILE},
    {"key-file", required_argument, NULL, O_KEY_FILE},
    {"trusted-ca-file", required_argument, NULL, O_TRUSTED_CA},
    {"client-cert-auth", no_argument, NULL, O_CLIENT_CERT_AUTH},
    {"help", no_argument, NULL, O_HELP},
    {"version", no_argument, NULL, O_VERSION},
    {NULL, 0, NULL, 0},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]) - 1)

/* KEEL_* variables of keel's other programs, which share keeld's prefix: keelctl and keel-bench
 * (ENDPOINTS; KEEL_ZONE is keeld's --zone as well), the sample unit (EXTRA_FLAGS), scripts/
 * (cluster.sh, zones.sh) and the tests. Known, so not warned about. */
static const char *const other_programs_vars[] = {
    "KEEL_ENDPOINTS",         "KEEL_EXTRA_FLAGS", "KEEL_CLUSTER_DIR", "KEEL_CLUSTER_CLIENT_PORT",
    "KEEL_CLUSTER_PEER_PORT", "KEEL_NETSIM",      "KEEL_SEED",        "KEEL_KEEP_TEST_DATA",
};

/* Where a setting's value came from, for messages. */
struct origin {
    enum { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_FLAG } kind;
    unsigned line; /* FROM_FILE */
};

/* What parsing carries from one source to the next. */
struct parse {
    const char *cluster;   /* --initial-cluster and ... */
    const char *retention; /* ... --auto-compaction-retention, checked once all are in */
    const char *file;      /* --config-file's path, or NULL */
    struct origin from[N_OPTS];
};

/* An option's index in opts by its name (the first n bytes of key), help and version aside;
 * N_OPTS when there is none. */
static size_t option_by_name(const char *key, size_t n)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].val != O_HELP && opts[i].val != O_VERSION &&
            strncmp(opts[i].name, key, n) == 0 && opts[i].name[n] == '\0')
            return i;
    return N_OPTS;
}

/* "data-dir" -> "KEEL_DATA_DIR", as etcd's ETCD_DATA_DIR. */
static void env_name(const char *flag, char *out, size_t len)
{
    size_t o = (size_t)snprintf(out, len, "KEEL_");
    for (; *flag != '\0' && o + 1 < len; flag++)
        out[o++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    out[o] = '\0';
}

static size_t option_by_env(const char *var, size_t n)
{
    char name[64];
    for (size_t i = 0; i < N_OPTS; i++) {
        env_name(opts[i].name, name, sizeof(name));
        if (opts[i].val != O_HELP && opts[i].val != O_VERSION && strncmp(name, var, n) == 0 &&
            name[n] == '\0')
            return i;
    }
    return N_OPTS;
}

/* Where option i's value came from, as messages start: "KEEL_DATA_DIR", "config file F: line
 * 3", or "" for a flag (the message names the flag itself). */
static void origin_name(const struct parse *p, size_t i, char *out, size_t len)
{
    out[0] = '\0';
    if (p->from[i].kind == FROM_ENV)
        env_name(opts[i].name, out, len);
    else if (p->from[i].kind == FROM_FILE)
        snprintf(out, len, "config file %s: line %u", p->file, p->from[i].line);
}

/* One setting's value, checked: the one place that knows what each setting means. what names
 * the setting in messages as its source does ("--heartbeat-ms", "KEEL_HEARTBEAT_MS", "config
 * file F: line 3: heartbeat-ms"). A boolean setting (no_argument) gets "true" or "false". */
static int set_opt(struct keel_config *c, struct parse *p, int opt, const char *val,
                   const char *what, char *err, size_t errlen)
{
    uint64_t v = 0;
    int rv = 0;
    switch (opt) {
    case O_NAME:
        rv = copy_arg(c->name, sizeof(c->name), val, what, err, errlen);
        break;
    case O_DATA:
        rv = copy_arg(c->data_dir, sizeof(c->data_dir), val, what, err, errlen);
        break;
    case O_LCLIENT:
        rv = copy_arg(c->listen_client, sizeof(c->listen_client), val, what, err, errlen);
        break;
    case O_LPEER:
        rv = copy_arg(c->listen_peer, sizeof(c->listen_peer), val, what, err, errlen);
        break;
    case O_CLUSTER:
        p->cluster = val;
        break;
    case O_ZONE:
        rv = copy_arg(c->zone, sizeof(c->zone), val, what, err, errlen);
        break;
    case O_HB:
        rv = parse_u64(val, 1, 60000, &v, what, err, errlen);
        c->heartbeat_ms = (unsigned)v;
        break;
    case O_ET:
        rv = parse_u64(val, 2, 600000, &v, what, err, errlen);
        c->election_ms = (unsigned)v;
        break;
    case O_SNAP:
        rv = parse_u64(val, 4, 1u << 30, &v, what, err, errlen);
        c->snapshot_threshold = (unsigned)v;
        break;
    case O_TRAIL:
        rv = parse_u64(val, 4, 1u << 30, &v, what, err, errlen);
        c->snapshot_trailing = (unsigned)v;
        break;
    case O_SNAP_BYTES:
        rv = parse_u64(val, 1u << 20, 1ull << 40, &c->snapshot_bytes, what, err, errlen);
        break;
    case O_TRAIL_BYTES:
        rv = parse_u64(val, 1u << 20, 1ull << 40, &c->snapshot_trailing_bytes, what, err, errlen);
        break;
    case O_SEGMENT:
        /* raft_uv writes segments in direct-I/O blocks: a multiple of 64 KiB is a multiple of
         * any block size its probe can find. */
        rv = parse_u64(val, 1u << 20, 1u << 30, &v, what, err, errlen);
        if (rv == 0 && v % (64u << 10) != 0)
            rv = fail(err, errlen, "%s: %llu is not a multiple of 65536", what,
                      (unsigned long long)v);
        c->raft_segment_bytes = (size_t)v;
        break;
    case O_QUOTA:
        rv = parse_u64(val, 1 << 20, 1ull << 44, &c->quota_bytes, what, err, errlen);
        break;
    case O_DISK_RESERVE:
        rv = parse_u64(val, 0, 1ull << 44, &c->disk_reserve_bytes, what, err, errlen);
        c->disk_reserve_set = true;
        break;
    case O_DISK_CHECK:
        rv = parse_u64(val, 10, 3600000, &v, what, err, errlen);
        c->disk_check_ms = (unsigned)v;
        break;
    case O_MAXREQ:
        rv = parse_u64(val, 1024, 64u << 20, &v, what, err, errlen);
        c->max_request_bytes = v;
        break;
    case O_MAXOPS:
        rv = parse_u64(val, 1, 100000, &v, what, err, errlen);
        c->max_txn_ops = v;
        break;
    case O_INFLIGHT:
        rv = parse_u64(val, 1, 1 << 20, &v, what, err, errlen);
        c->max_inflight = v;
        break;
    case O_INFLIGHT_TOTAL:
        rv = parse_u64(val, 1, 1 << 24, &v, what, err, errlen);
        c->max_inflight_total = v;
        break;
    case O_MAXCONN:
        rv = parse_u64(val, 1, 1 << 20, &v, what, err, errlen);
        c->max_connections = v;
        break;
    case O_MAXOUT:
        /* At least four of the largest reply, so one reply never meets the bound alone. */
        rv = parse_u64(val, 8u << 20, 1ull << 40, &v, what, err, errlen);
        c->max_output_bytes = v;
        break;
    case O_APPLY_BACKLOG:
        rv = parse_u64(val, 1 << 20, 1ull << 40, &c->max_apply_backlog_bytes, what, err, errlen);
        break;
    case O_MAXWATCH:
        rv = parse_u64(val, 1, 10000000, &v, what, err, errlen);
        c->max_watches = v;
        break;
    case O_PROGRESS:
        rv = parse_u64(val, 10, 86400000, &v, what, err, errlen);
        c->watch_progress_ms = (unsigned)v;
        break;
    case O_BATCH_MS:
        rv = parse_u64(val, 1, 10000, &v, what, err, errlen);
        c->backend_batch_ms = (unsigned)v;
        break;
    case O_BATCH_BYTES:
        rv = parse_u64(val, 1u << 20, 1ull << 32, &v, what, err, errlen);
        c->backend_batch_bytes = (size_t)v;
        break;
    case O_LEASE_CP:
        rv = parse_u64(val, 10, 3600000, &v, what, err, errlen);
        c->lease_checkpoint_ms = (unsigned)v;
        break;
    case O_AUTH_TTL:
        rv = parse_u64(val, 1, 86400 * 365, &v, what, err, errlen);
        c->auth_token_ttl_s = (unsigned)v;
        break;
    case O_AC_MODE:
        if (strcmp(val, "periodic") == 0)
            c->compact_mode = KEEL_COMPACT_PERIODIC;
        else if (strcmp(val, "revision") == 0)
            c->compact_mode = KEEL_COMPACT_REVISION;
        else
            rv = fail(err, errlen, "%s '%s' is not periodic or revision", what, val);
        break;
    case O_AC_RETENTION:
        p->retention = val;
        break;
    case O_LOG_FORMAT:
        if (strcmp(val, "json") == 0 || strcmp(val, "text") == 0)
            c->log_json = strcmp(val, "json") == 0;
        else
            rv = fail(err, errlen, "%s '%s' is not json or text", what, val);
        break;
    case O_METRICS:
        rv = copy_arg(c->listen_metrics, sizeof(c->listen_metrics), val, what, err, errlen);
        break;
    case O_PEER_CERT:
        rv = copy_arg(c->peer_cert_file, sizeof(c->peer_cert_file), val, what, err, errlen);
        break;
    case O_PEER_KEY:
        rv = copy_arg(c->peer_key_file, sizeof(c->peer_key_file), val, what, err, errlen);
        break;
    case O_PEER_CA:
        rv = copy_arg(c->peer_ca_file, sizeof(c->peer_ca_file), val, what, err, errlen);
        break;
    case O_WARN_APPLY: {
        /* etcd's form (a Go duration of one unit): 100ms, 1s, 500us; a bare number is
         * milliseconds; 0 turns the line off */
        char num[32];
        size_t digits = strspn(val, "0123456789");
        const char *unit = val + digits;
        uint64_t us = strcmp(unit, "s") == 0                       ? 1000000
                      : strcmp(unit, "ms") == 0 || unit[0] == '\0' ? 1000
                      : strcmp(unit, "us") == 0                    ? 1
                                                                   : 0;
        if (digits == 0 || digits >= sizeof(num) || us == 0) {
            rv = fail(err, errlen, "%s '%s' is not N, Nus, Nms or Ns", what, val);
            break;
        }
        memcpy(num, val, digits);
        num[digits] = '\0';
        uint64_t w;
        rv = parse_u64(num, 0, 3600000000ull / us, &w, what, err, errlen);
        c->warn_apply_us = (unsigned)(w * us);
        break;
    }
    case O_CLUSTER_STATE:
        if (strcmp(val, "new") == 0 || strcmp(val, "existing") == 0)
            c->join = strcmp(val, "existing") == 0;
        else
            rv = fail(err, errlen, "%s '%s' is not new or existing", what, val);
        break;
    case O_PREFER:
        rv = copy_arg(c->preferred_zone, sizeof(c->preferred_zone), val, what, err, errlen);
        break;
    case O_AC_INTERVAL:
        rv = parse_u64(val, 10, 86400000, &c->compact_check_ms, what, err, errlen);
        break;
    case O_LOG:
        c->log_level = keel_log_parse_level(val);
        if (c->log_level < 0)
            rv = fail(err, errlen, "%s '%s' is not debug, info, warn or error", what, val);
        break;
    case O_CONFIG_FILE: /* read before any other setting (keel_config_parse) */
        break;
    case O_CERT_FILE:
        rv = copy_arg(c->cert_file, sizeof(c->cert_file), val, what, err, errlen);
        break;
    case O_KEY_FILE:
        rv = copy_arg(c->key_file, sizeof(c->key_file), val, what, err, errlen);
        break;
    case O_TRUSTED_CA:
        rv = copy_arg(c->trusted_ca_file, sizeof(c->trusted_ca_file), val, what, err, errlen);
        break;
    case O_CLIENT_CERT_AUTH:
        c->client_cert_auth = strcmp(val, "true") == 0;
        break;
    }
    return rv;
}

/* Option i's value from a source: every source goes through set_opt, the last one applied
 * wins (file, then environment, then flags). */
static int apply(struct keel_config *c, struct parse *p, size_t i, struct origin from,
                 const char *val, char *err, size_t errlen)
{
    char what[600];
    p->from[i] = from;
    origin_name(p, i, what, sizeof(what));
    if (from.kind == FROM_FLAG)
        snprintf(what, sizeof(what), "--%s", opts[i].name);
    else if (from.kind == FROM_FILE)
        snprintf(what + strlen(what), sizeof(what) - strlen(what), ": %s", opts[i].name);
    if (opts[i].has_arg == no_argument) {
        if (from.kind == FROM_FLAG)
            val = "true";
        else if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0)
            return fail(err, errlen, "%s: '%s' is not true or false", what, val);
    }
    return set_opt(c, p, opts[i].val, val, what, err, errlen);
}

/* argv's settings, in order, as (option index, value) into idx and val (argc long each); --help
 * and --version are answered here (1). */
static int read_argv(int argc, char **argv, size_t *idx, const char **val, size_t *n, char *err,
                     size_t errlen)
{
    int opt, li = 0;
    *n = 0;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, &li)) != -1) {
        if (opt == O_HELP) {
            fputs(usage, stdout);
            return 1;
        }
        if (opt == O_VERSION) {
            printf("keeld %s\n", KEEL_VERSION);
            return 1;
        }
        if (opt == '?' && optopt != 0)
            return fail(err, errlen, "option '%s' needs a value", argv[optind - 1]);
        if (opt == '?')
            return fail(err, errlen, "unknown option '%s'", argv[optind - 1]);
        idx[*n] = (size_t)li;
        val[(*n)++] = optarg;
    }
    if (optind < argc)
        return fail(err, errlen, "unexpected argument '%s'", argv[optind]);
    return 0;
}

static int apply_file(struct keel_config *c, struct parse *p, const struct keel_configfile *f,
                      char *err, size_t errlen)
{
    for (size_t k = 0; k < f->n; k++) {
        const struct keel_configfile_entry *e = &f->entries[k];
        size_t i = option_by_name(e->key, strlen(e->key));
        if (i == N_OPTS)
            return fail(err, errlen, "config file %s: line %u: unknown key '%s'", p->file, e->line,
                        e->key);
        if (opts[i].val == O_CONFIG_FILE)
            return fail(err, errlen, "config file %s: line %u: a config file cannot name another",
                        p->file, e->line);
        if (e->sequence && opts[i].val != O_CLUSTER)
            return fail(err, errlen, "config file %s: line %u: %s takes one value, not a list",
                        p->file, e->line, e->key);
        int rv = apply(c, p, i, (struct origin){FROM_FILE, e->line}, e->value, err, errlen);
        if (rv != 0)
            return rv;
    }
    return 0;
}

/* Every KEEL_<FLAG> variable; an empty one is as if unset (a systemd EnvironmentFile's
 * "KEEL_ZONE="). Unknown KEEL_* variables are noted in c->env_unknown, not refused: keel's
 * client tools share the prefix. */
static int apply_env(struct keel_config *c, struct parse *p, char *err, size_t errlen)
{
    size_t unknown = 0;
    for (char **e = environ; *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, "KEEL_", 5) != 0 || eq == NULL)
            continue;
        size_t n = (size_t)(eq - *e), i = option_by_env(*e, n);
        bool other = false;
        for (size_t k = 0; k < sizeof(other_programs_vars) / sizeof(other_programs_vars[0]); k++)
            other = other || (strncmp(*e, other_programs_vars[k], n) == 0 &&
                              other_programs_vars[k][n] == '\0');
        if (i == N_OPTS && !other && unknown < sizeof(c->env_unknown))
            unknown += (size_t)snprintf(c->env_unknown + unknown, sizeof(c->env_unknown) - unknown,
                                        "%s%.*s", unknown ? " " : "", (int)n, *e);
        if (i == N_OPTS || opts[i].val == O_CONFIG_FILE || eq[1] == '\0')
            continue;
        int rv = apply(c, p, i, (struct origin){FROM_ENV, 0}, eq + 1, err, errlen);
        if (rv != 0)
            return rv;
    }
    return 0;
}

/* A message of the final checks names the setting it is about first ("--listen-peer 127...";
 * "member ..." is an --initial-cluster entry): when that setting came from the environment or
 * the file, the message says so in front. */
static void blame(const struct parse *p, char *err, size_t errlen)
{
    size_t i = N_OPTS;
    if (strncmp(err, "member ", 7) == 0)
        i = option_by_name("initial-cluster", strlen("initial-cluster"));
    else if (strncmp(err, "--", 2) == 0)
        i = option_by_name(err + 2, strcspn(err + 2, " :'"));
    char where[600];
    if (i == N_OPTS || (origin_name(p, i, where, sizeof(where)), where[0] == '\0'))
        return;
    char *msg = strdup(err);
    if (msg != NULL)
        snprintf(err, errlen, "%s: %s", where, msg);
    free(msg);
}

static int settle(struct keel_config *c, const char *cluster, const char *retention, char *err,
                  size_t errlen);

/* "config file F: name data-dir ...; environment: election-ms; flags: heartbeat-ms" into
 * c->origins, for the log at start. */
static void note_origins(struct keel_config *c, const struct parse *p)
{
    static const char *const names[] = {NULL, "config file", "environment", "flags"};
    size_t off = 0, cap = sizeof(c->origins);
    for (int kind = FROM_FILE; kind <= FROM_FLAG; kind++) {
        bool any = false;
        for (size_t i = 0; i < N_OPTS && off < cap; i++) {
            if ((int)p->from[i].kind != kind || opts[i].val == O_CONFIG_FILE)
                continue;
            if (!any)
                off += (size_t)snprintf(c->origins + off, cap - off, "%s%s%s%s:", off ? "; " : "",
                                        names[kind], kind == FROM_FILE ? " " : "",
                                        kind == FROM_FILE ? p->file : "");
            if (off < cap)
                off += (size_t)snprintf(c->origins + off, cap - off, " %s", opts[i].name);
            any = true;
        }
    }
}

int keel_config_parse(struct keel_config *c, int argc, char **argv, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->heartbeat_ms = 100;
    c->election_ms = 1000;
    c->snapshot_threshold = 65536;
    c->snapshot_trailing = 65536;
    /* raft_start reloads the log at ~100-150 MB/s here: 48 MiB at most keeps a restart under a
     * second (64 + 64 took 1.0-1.2 s of a 1.4-2.0 s whole-cluster restart). */
    c->snapshot_bytes = 32u << 20;
    c->snapshot_trailing_bytes = 16u << 20;
    c->raft_segment_bytes = 8u << 20;
    c->quota_bytes = 2ull << 30;
    c->disk_reserve_bytes = 256u << 20;
    c->disk_reserve_set = false;
    c->disk_check_ms = 1000;
    c->max_request_bytes = 1536 * 1024;
    c->max_txn_ops = 128;
    c->auth_token_ttl_s = 300;
    c->max_inflight = 1024;
    c->max_inflight_total = 8192;
    c->max_connections = 4096;
    c->max_output_bytes = 512u << 20;
    c->max_apply_backlog_bytes = 64u << 20;
    c->max_watches = 100000;
    c->watch_progress_ms = 600000;
    c->backend_batch_ms = KEEL_FSM_COMMIT_MS;
    c->warn_apply_us = 100000; /* etcd's --warn-apply-duration */
    c->backend_batch_bytes = 64u << 20;
    c->lease_checkpoint_ms = 5000;
    c->compact_mode = KEEL_COMPACT_PERIODIC;
    c->compact_check_ms = 300000;
    c->log_level = KEEL_LOG_INFO;

    struct parse p = {0};
    struct keel_configfile file = {0};
    size_t n = 0, *idx = calloc((size_t)argc + 1, sizeof(*idx));
    const char **val = calloc((size_t)argc + 1, sizeof(*val));
    int rv = idx && val ? 0 : fail(err, errlen, "out of memory");
    if (rv == 0)
        rv = read_argv(argc, argv, idx, val, &n, err, errlen);
    for (size_t k = 0; rv == 0 && k < n; k++)
        if (opts[idx[k]].val == O_CONFIG_FILE)
            p.file = val[k];
    if (rv == 0 && p.file == NULL && getenv("KEEL_CONFIG_FILE") && getenv("KEEL_CONFIG_FILE")[0])
        p.file = getenv("KEEL_CONFIG_FILE");
    /* The sources from the weakest: the file, the environment, then the flags. */
    if (rv == 0 && p.file != NULL && (rv = keel_configfile_read(&file, p.file, err, errlen)) == 0)
        rv = apply_file(c, &p, &file, err, errlen);
    if (rv == 0)
        rv = apply_env(c, &p, err, errlen);
    for (size_t k = 0; rv == 0 && k < n; k++)
        rv = apply(c, &p, idx[k], (struct origin){FROM_FLAG, 0}, val[k], err, errlen);
    if (rv == 0 && (rv = settle(c, p.cluster, p.retention, err, errlen)) != 0)
        blame(&p, err, errlen);
    if (rv == 0)
        note_origins(c, &p);
    keel_configfile_close(&file);
    free(idx);
    free(val);
    return rv;
}

/* The checks that need every setting in: what is required, and what must agree. */
static int settle(struct keel_config *c, const char *cluster, const char *retention, char *err,
                  size_t errlen)
{
    int rv = 0;
    if (retention != NULL &&
        keel_compactor_parse_retention(c->compact_mode, retention, &c->compact_retention_ms,
                                       &c->compact_retention_revs, err, errlen) != 0)
        return -1;
    if (c->name[0] == '\0')
        return fail(err, errlen, "--name is required");
    if (c->data_dir[0] == '\0')
        return fail(err, errlen, "--data-dir is required");
    if (c->listen_client[0] == '\0')
        return fail(err, errlen, "--listen-client is required");
    if (c->listen_peer[0] == '\0')
        return fail(err, errlen, "--listen-peer is required");
    if (cluster == NULL)
        return fail(err, errlen, "--initial-cluster is required");
    if ((rv = check_addr(c->listen_client, "--listen-client", false, err, errlen)) != 0 ||
        (rv = check_addr(c->listen_peer, "--listen-peer", false, err, errlen)) != 0 ||
        (rv = parse_cluster(c, cluster, err, errlen)) != 0)
        return rv;
    if (c->heartbeat_ms >= c->election_ms)
        return fail(err, errlen, "--heartbeat-ms (%u) must be below --election-ms (%u)",
                    c->heartbeat_ms, c->election_ms);
    if (strcmp(c->listen_client, c->listen_peer) == 0)
        return fail(err, errlen, "--listen-client and --listen-peer are the same address");
    /* etcd's --listen-metrics-urls: the scheme says whether it is TLS. */
    const char *scheme_end = strstr(c->listen_metrics, "://");
    if (scheme_end != NULL) {
        size_t sl = (size_t)(scheme_end - c->listen_metrics);
        if ((sl != 4 || strncmp(c->listen_metrics, "http", 4) != 0) &&
            (sl != 5 || strncmp(c->listen_metrics, "https", 5) != 0))
            return fail(err, errlen, "--listen-metrics '%s': the scheme must be http or https",
                        c->listen_metrics);
        c->metrics_tls = sl == 5;
        memmove(c->listen_metrics, scheme_end + 3, strlen(scheme_end + 3) + 1);
    }
    if (c->listen_metrics[0] != '\0' &&
        ((rv = check_addr(c->listen_metrics, "--listen-metrics", false, err, errlen)) != 0 ||
         strcmp(c->listen_metrics, c->listen_client) == 0 ||
         strcmp(c->listen_metrics, c->listen_peer) == 0))
        return rv != 0 ? rv
                       : fail(err, errlen, "--listen-metrics %s is the client or peer address",
                              c->listen_metrics);
    /* Half a peer TLS setup would leave one end unverified: etcd asks for the three as well. */
    int peer_tls = (c->peer_cert_file[0] != '\0') + (c->peer_key_file[0] != '\0') +
                   (c->peer_ca_file[0] != '\0');
    if (peer_tls != 0 && peer_tls != 3)
        return fail(err, errlen,
                    "--peer-cert-file, --peer-key-file and --peer-trusted-ca-file go together: "
                    "give all three (peer TLS) or none");

    if ((c->cert_file[0] != '\0') != (c->key_file[0] != '\0'))
        return fail(err, errlen, "--cert-file and --key-file go together: give both or neither");
    if (c->cert_file[0] == '\0' && (c->trusted_ca_file[0] != '\0' || c->client_cert_auth))
        return fail(err, errlen,
                    "--%s needs TLS on the client port: give --cert-file and "
                    "--key-file too",
                    c->client_cert_auth ? "client-cert-auth" : "trusted-ca-file");
    if (c->client_cert_auth && c->trusted_ca_file[0] == '\0')
        return fail(err, errlen,
                    "--client-cert-auth needs --trusted-ca-file: the CAs a client "
                    "certificate must chain to");
    if (c->metrics_tls && c->cert_file[0] == '\0')
        return fail(err, errlen,
                    "--listen-metrics https://%s needs --cert-file and --key-file: it is "
                    "served with the client port's certificate",
                    c->listen_metrics);
    const struct keel_member_conf *self = NULL;
    for (size_t i = 0; i < c->n_members; i++)
        if (strcmp(c->members[i].name, c->name) == 0)
            self = &c->members[i];
    if (self == NULL)
        return fail(err, errlen, "--name '%s' is not in --initial-cluster", c->name);
    if ((rv = check_listen_peer(c, self, err, errlen)) != 0)
        return rv;
    if (c->zone[0] == '\0')
        strcpy(c->zone, self->zone);
    else if (self->zone[0] != '\0' && strcmp(self->zone, c->zone) != 0)
        return fail(err, errlen, "--zone %s differs from this member's --initial-cluster zone %s",
                    c->zone, self->zone);
    if (c->preferred_zone[0] != '\0') {
        bool any = strcmp(c->zone, c->preferred_zone) == 0;
        for (size_t i = 0; i < c->n_members; i++)
            any = any || strcmp(c->members[i].zone, c->preferred_zone) == 0;
        if (!any)
            return fail(err, errlen,
                        "--preferred-leader-zone %s: no member of --initial-cluster is in it",
                        c->preferred_zone);
    }
    c->member_id = self->id;
    /* A new cluster's id; a member joining one learns it from the first member that speaks to
     * it, and every member keeps it in its data dir from its first start (main.c). */
    c->cluster_id = c->join ? 0 : keel_hash64(cluster, strlen(cluster));
    return 0;
}

void keel_config_warn(const struct keel_config *c)
{
    KLOG_INFO("settings from %s (the rest are defaults)", c->origins[0] ? c->origins : "nowhere");
    if (c->env_unknown[0] != '\0')
        KLOG_WARN("ignoring environment variables that are no keeld setting: %s (a setting is "
                  "KEEL_ and its flag's name, as KEEL_DATA_DIR; see keeld --help)",
                  c->env_unknown);
}

void keel_config_close(struct keel_config *c)
{
    free(c->members);
    c->members = NULL;
    c->n_members = 0;
}

const struct keel_member_conf *keel_config_member(const struct keel_config *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_members; i++)
        if (c->members[i].id == id)
            return &c->members[i];
    return NULL;
}

/* ---- the cluster id kept in the data dir ---- */

static void cluster_id_path(const char *data_dir, char *out, size_t len)
{
    snprintf(out, len, "%s/cluster-id", data_dir);
}

int keel_cluster_id_save(const char *data_dir, uint64_t id)
{
    char path[600], tmp[610];
    cluster_id_path(data_dir, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    int ok = fprintf(f, "%016llx\n", (unsigned long long)id) > 0;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int keel_cluster_id_settle(struct keel_config *c, char *err, size_t errlen)
{
    char path[600], line[64];
    cluster_id_path(c->data_dir, path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno != ENOENT)
            return fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
        /* First start (or a data dir from before the file): a new cluster's id is the one
         * derived from --initial-cluster; a joining member has none until a peer brings it. */
        if (c->cluster_id != 0 && keel_cluster_id_save(c->data_dir, c->cluster_id) != 0)
            return fail(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return 0;
    }
    char *end = NULL;
    unsigned long long id = 0;
    if (fgets(line, sizeof(line), f) != NULL) {
        errno = 0;
        id = strtoull(line, &end, 16);
    }
    fclose(f);
    if (end == NULL || end == line || (*end != '\n' && *end != '\0') || errno != 0 || id == 0)
        return fail(err, errlen, "%s does not hold a cluster id (16 hex digits)", path);
    /* Once a member has started, its cluster is what it joined, whatever --initial-cluster says
     * now (it may list members added since). */
    c->cluster_id = id;
    return 0;
}
