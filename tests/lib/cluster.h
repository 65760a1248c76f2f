/*
 * Real keeld processes for cluster tests: member i (1-based) listens on 127.0.i.1, in zone
 * "z<i>", with ports picked free at set-up, data under a scratch directory. Only processes this
 * harness started are ever signalled, by PID; tc_cluster_close kills what is left and removes
 * the directories.
 */
#ifndef KEEL_TEST_CLUSTER_H
#define KEEL_TEST_CLUSTER_H

#include <stddef.h>
#include <sys/types.h>

#define TC_MAX 7

struct tc_member {
    char name[16];
    char client[32];
    char peer[32];
    char zone[16];
    char dir[512];
    char log[512];
    char extra[128]; /* more flags for this member only (after the cluster's extra) */
    pid_t pid;       /* 0 when not running */
};

struct tc_open;

struct tc_cluster {
    int n;
    struct tc_open *open; /* this cluster's entry in the harness's list of open clusters */
    struct tc_member m[TC_MAX + 1]; /* 1-based */
    char *root;
    char initial[1024];
    unsigned heartbeat_ms, election_ms;
    unsigned snapshot_threshold, snapshot_trailing; /* 0: keeld's defaults */
    char extra[256];                                /* more flags for every member */
    unsigned nofile; /* RLIMIT_NOFILE, soft and hard, for the members; 0: the test's own */
};

/* Lay out n members (not started). Aborts on failure. */
void tc_cluster_init(struct tc_cluster *c, int n, const char *tag);

/* The same with member i in the zone block block + i - 1 (127.0.<block + i - 1>.1, zone
 * "z<block + i - 1>"): for tests that cut zones off with scripts/zones.sh, on blocks no other
 * test uses. */
void tc_cluster_init_at(struct tc_cluster *c, int n, const char *tag, int block);

/* The same with members addressed by a DNS name (for tests of name resolution): every member
 * listens on the IPv4 address ip (what name resolves to: "127.0.0.1" for "localhost"), on
 * ports of its own, in zone "z<i>", and --initial-cluster lists it as name:<its peer port>.
 * tc_member.client and .peer stay the IPv4 listen addresses. */
void tc_cluster_init_named(struct tc_cluster *c, int n, const char *tag, const char *ip,
                           const char *name);

/* Start member i; 0 or -1. */
int tc_start(struct tc_cluster *c, int i);
void tc_start_all(struct tc_cluster *c);

/* Send sig to member i and, for SIGKILL/SIGTERM, wait (bounded) for it to exit. Returns the
 * exit status as from waitpid, or -1 when it did not exit in time. */
int tc_stop(struct tc_cluster *c, int i, int sig);

/* "a,b,c": the client addresses of every member (or of member i only when i > 0). */
void tc_endpoints(const struct tc_cluster *c, int i, char *buf, size_t len);

/* Kill what is still running, remove the data. A cluster a failed test left open (cmocka jumps
 * past its close) is closed at exit instead: its members killed, and the end of each member's
 * log printed, so that a failure on a machine nobody can log into still says what the members
 * saw. */
void tc_cluster_close(struct tc_cluster *c);

struct keel;
/* The running member (1-based) that is leader, as the members' status says, skipping members
 * whose bit (1 << i) is set in skip; 0 when none within timeout_ms. k: any client of c. */
int tc_find_leader(struct tc_cluster *c, struct keel *k, unsigned skip, int timeout_ms);

/* A field of /proc/PID/status in kB ("VmRSS", "VmHWM"); aborts when it cannot be read. */
long tc_status_kb(pid_t pid, const char *field);

/* Start a new peak: VmHWM of pid becomes its current RSS. */
void tc_reset_peak(pid_t pid);

/* Whether member i's log has a line containing needle. */
int tc_log_contains(const struct tc_cluster *c, int i, const char *needle);

/* A TCP port on host that nothing listens on now (picked at random; 0 when none was found). */
int tc_free_port(const char *host);

/* A free port on member i's host (127.0.i.1) that is neither its client nor its peer port: for
 * a listener the member is given besides them (metrics) or a new address. Aborts when none. */
int tc_member_free_port(const struct tc_cluster *c, int i);

/* Lines of member i's log that contain needle. */
int tc_log_count(const struct tc_cluster *c, int i, const char *needle);

/*
 * Run the keelctl binary at path with the NULL-terminated arguments that follow (at most 30),
 * KEEL_ENDPOINTS unset; what it printed, stdout and stderr, into out (NUL-terminated, cut to
 * outlen). Its exit status, or 128 when it was killed (after 30 s) or did not exit normally.
 * Output goes through a file under c->root.
 */
int tc_keelctl(const struct tc_cluster *c, const char *path, char *out, size_t outlen, ...);

/*
 * One HTTP/1.1 request to addr ("a.b.c.d:port"), body NULL or a JSON text, Connection: close,
 * each wait bounded by 10 s. The status (-1 when nothing parsable came back); the response
 * body (malloc'd, NUL-terminated, at most 4 MiB) in *out when out is not NULL.
 */
int tc_http(const char *addr, const char *method, const char *path, const char *body, char **out);

/* Milliseconds of monotonic time. */
long long tc_now_ms(void);

#endif
