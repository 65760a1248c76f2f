/*
 * keeld's configuration: command-line flags, KEEL_<FLAG> environment variables and a YAML
 * --config-file whose keys are the flags' names (a flag beats the environment, the environment
 * beats the file), checked for consistency before anything starts.
 */
#ifndef KEEL_CONFIG_H
#define KEEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEEL_NAME_MAX 64
#define KEEL_ADDR_MAX 64

struct keel_member_conf {
    uint64_t id; /* stable: derived from the name */
    char name[KEEL_NAME_MAX];
    char peer[KEEL_ADDR_MAX]; /* "HOST:PORT", HOST an IPv4 literal or a DNS name, as given */
    char zone[KEEL_NAME_MAX];
};

struct keel_config {
    char name[KEEL_NAME_MAX];
    char data_dir[512];
    char listen_client[KEEL_ADDR_MAX];
    char listen_peer[KEEL_ADDR_MAX];
    char zone[KEEL_NAME_MAX];
    struct keel_member_conf *members; /* from --initial-cluster, in the order given */
    size_t n_members;
    /* The cluster this member is in: derived from --initial-cluster for a new cluster, 0 until
     * learned for a member that joins one (--initial-cluster-state existing); then as kept in
     * the data dir (main.c). The one field that changes after parsing. */
    uint64_t cluster_id;
    bool join; /* --initial-cluster-state existing */
    uint64_t member_id;
    unsigned heartbeat_ms;
    unsigned election_ms;
    unsigned snapshot_threshold;      /* at most this many entries between raft snapshots ... */
    unsigned snapshot_trailing;       /* ... and kept behind one (node.c: the counts raft reads) */
    uint64_t snapshot_bytes;          /* a snapshot once the entries since the last weigh this */
    uint64_t snapshot_trailing_bytes; /* entries kept behind a snapshot weigh at most this */
    size_t raft_segment_bytes;        /* raft_uv's segment size: the log is trimmed in segments */
    uint64_t quota_bytes;
    uint64_t disk_reserve_bytes; /* free space below which NOSPACE is raised (0: off) ... */
    bool disk_reserve_set;       /* ... as given; else the default, at most 1/16 of the disk */
    unsigned disk_check_ms;
    size_t max_request_bytes;
    size_t max_txn_ops;
    size_t max_inflight;       /* requests in flight per connection before reading pauses */
    size_t max_inflight_total; /* requests in flight on all connections together */
    size_t max_connections;
    size_t max_output_bytes;          /* output queued for all clients together (session.c) */
    uint64_t max_apply_backlog_bytes; /* writes taken and not yet applied before reading pauses */
    size_t max_watches;               /* watchers per connection */
    unsigned watch_progress_ms;
    unsigned lease_checkpoint_ms;   /* a lease unrenewed this long gets a checkpoint (lessor.h) */
    unsigned auth_token_ttl_s;      /* tokens from Authenticate live this long (auth.h) */
    unsigned backend_batch_ms;      /* the store commits at least this often (fsm.h) ... */
    size_t backend_batch_bytes;     /* ... or once its overlay holds this much */
    int compact_mode;               /* enum keel_compact_mode (compactor.h) */
    uint64_t compact_retention_ms;  /* periodic auto-compaction: history kept */
    int64_t compact_retention_revs; /* revision auto-compaction: revisions kept */
    uint64_t compact_check_ms;      /* revision auto-compaction: how often it looks */
    int log_level;
    bool log_json;                      /* --log-format json */
    char preferred_zone[KEEL_NAME_MAX]; /* leadership moves into this zone ("": anywhere) */
    char listen_metrics[KEEL_ADDR_MAX]; /* /metrics and /health ("": not served), no scheme */
    bool metrics_tls;      /* --listen-metrics https://...: served with the client port's TLS */
    char env_unknown[256]; /* KEEL_* variables that are no setting, space-separated (cut) */
    char origins[1024];    /* which settings came from the file, the environment, flags (cut) */
    /* --warn-apply-duration: a slower batch apply is logged (0: never; fsm.h) */
    unsigned warn_apply_us;
    /* Peer TLS (transport.h): the three PEM files, all set or all "" (no peer TLS). */
    char peer_cert_file[512];
    char peer_key_file[512];
    char peer_ca_file[512];

    /* TLS on the client port (--cert-file; "" : plaintext): this member's certificate and key,
     * the CAs client certificates must chain to, and whether one is required. */
    char cert_file[512];
    char key_file[512];
    char trusted_ca_file[512];
    bool client_cert_auth;
};

/*
 * Parse the settings into c (which this initialises): --config-file PATH (or KEEL_CONFIG_FILE)
 * first, then the KEEL_* environment, then argv, each value checked as a flag's is. 0 on
 * success; 1 when --help or --version was printed; -1 with a message naming what was wrong and
 * where (the flag, the variable, or the file's line and key) in err. keel_config_close releases
 * c in every case.
 */
int keel_config_parse(struct keel_config *c, int argc, char **argv, char *err, size_t errlen);

/* Log, once logging is set up, where the settings came from (c->origins) and a warning for
 * c->env_unknown. */
void keel_config_warn(const struct keel_config *c);

void keel_config_close(struct keel_config *c);

/* The member entry with this id, or NULL. */
const struct keel_member_conf *keel_config_member(const struct keel_config *c, uint64_t id);

/*
 * The cluster id kept in DATA_DIR/cluster-id: when the file exists its id replaces c's; when it
 * does not and c has one (a new cluster), it is written. 0, or -1 with a message in err (an
 * unreadable or malformed file).
 */
int keel_cluster_id_settle(struct keel_config *c, char *err, size_t errlen);

/* Write id to DATA_DIR/cluster-id, durably (write, fsync, rename). 0 or -1 with errno. */
int keel_cluster_id_save(const char *data_dir, uint64_t id);

/* Split "a.b.c.d:port" into host and port; 0 or -1 when it is not an IPv4 literal and port. */
int keel_addr_split(const char *addr, char *host, size_t hostlen, int *port);

/* Split "HOST:PORT", HOST an IPv4 literal or a DNS name (proto/hostport.h), into host and port:
 * KEEL_HOST_IPV4 or KEEL_HOST_NAME, or -1 with why in why (NULL: no message). A name is to be
 * resolved at each use (peers move: a restarted pod has a new IP), never once for all. */
int keel_addr_split_any(const char *addr, char *host, size_t hostlen, int *port, char *why,
                        size_t whylen);

/* mkdir -p; 0 or -1 with errno. */
int keel_mkdir_p(const char *path);

/* 64-bit FNV-1a, never 0: member and cluster ids. */
uint64_t keel_hash64(const void *data, size_t n);

#endif
