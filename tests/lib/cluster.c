#include "cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel/keel.h"
#include "testutil.h"

#ifndef KEEL_KEELD_PATH
#error "KEEL_KEELD_PATH must name the keeld binary"
#endif

long long tc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * A port free on host now, below the kernel's ephemeral range: a member restarted after a kill
 * must get its port back, and a port from the ephemeral range may meanwhile be taken as the
 * source port of some connection from the same address (another test's member, say).
 */
int tc_free_port(const char *host)
{
    static unsigned rng;
    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f != NULL) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2)
            lo = 32768, hi = 60999;
        fclose(f);
    }
    /* Below the range when there is room, else above it. */
    int first = lo > 12000 ? 10000 : hi + 1, last = lo > 12000 ? lo - 1 : 65535;
    if (rng == 0)
        rng = (unsigned)getpid() * 2654435761u ^ (unsigned)tc_now_ms();
    for (int tries = 0; tries < 10000; tries++) {
        rng = rng * 1103515245u + 12345u;
        int port = first + (int)((rng >> 8) % (unsigned)(last - first + 1));
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, host, &a.sin_addr);
        if (fd < 0) {
            perror("free_port");
            abort();
        }
        int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return port;
    }
    fprintf(stderr, "free_port: no free port on %s in %d..%d\n", host, first, last);
    abort();
}

/*
 * Clusters not closed yet. A failed assertion longjmps out of its test, past tc_cluster_close,
 * and the tc_cluster on its stack is gone: this list keeps what closing needs (the directory,
 * the member count, the PIDs started), and at exit closes what is left, printing the tail of
 * every member's log first.
 */
struct tc_open {
    struct tc_open *next;
    char *root;
    int n;
    pid_t pid[TC_MAX + 1];
};

static struct tc_open *open_clusters;
static pid_t open_owner; /* the process that started them: a forked child exiting leaves them */

#define TAIL_BYTES 6000 /* of each member's log, printed for a cluster left open */

static void print_tail(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    char buf[TAIL_BYTES + 1];
    off_t end = lseek(fd, 0, SEEK_END);
    off_t from = end > TAIL_BYTES ? end - TAIL_BYTES : 0;
    ssize_t got = pread(fd, buf, TAIL_BYTES, from);
    close(fd);
    if (got <= 0)
        return;
    buf[got] = '\0';
    const char *start = buf;
    if (from > 0 && strchr(buf, '\n') != NULL)
        start = strchr(buf, '\n') + 1; /* from a whole line */
    fprintf(stderr, "---- %s%s\n%s", path, from > 0 ? " (its end)" : "", start);
    if (got > 0 && buf[got - 1] != '\n')
        fputc('\n', stderr);
}

static void close_left_open(void)
{
    if (getpid() != open_owner)
        return;
    while (open_clusters != NULL) {
        struct tc_open *o = open_clusters;
        open_clusters = o->next;
        fprintf(stderr, "cluster %s was left open (its test failed); its members' logs:\n",
                o->root);
        for (int i = 1; i <= o->n; i++) {
            /* Only a child of ours that still runs: a reaped PID may belong to anyone now. */
            if (o->pid[i] > 0 && waitpid(o->pid[i], NULL, WNOHANG) == 0) {
                kill(o->pid[i], SIGKILL);
                waitpid(o->pid[i], NULL, 0);
            }
            char path[600];
            snprintf(path, sizeof(path), "%s/m%d.log", o->root, i);
            print_tail(path);
        }
        if (getenv("KEEL_KEEP_TEST_DATA") == NULL)
            tu_rmdir(o->root);
        else
            fprintf(stderr, "test data kept in %s\n", o->root);
        free(o->root);
        free(o);
    }
}

void tc_cluster_init(struct tc_cluster *c, int n, const char *tag)
{
    tc_cluster_init_at(c, n, tag, 1);
}

void tc_cluster_init_at(struct tc_cluster *c, int n, const char *tag, int block)
{
    memset(c, 0, sizeof(*c));
    if (n < 1 || n > TC_MAX || block < 1 || block + n - 1 > 254)
        abort();
    c->n = n;
    c->root = tu_mkdtemp(tag);
    static int registered;
    if (!registered && atexit(close_left_open) == 0)
        registered = 1;
    open_owner = getpid();
    c->open = calloc(1, sizeof(*c->open));
    if (c->open == NULL)
        abort();
    c->open->root = c->root; /* one string: freed by whichever closes the cluster */
    c->open->n = n;
    c->open->next = open_clusters;
    open_clusters = c->open;
    c->heartbeat_ms = 50;
    c->election_ms = 500;
    size_t off = 0;
    for (int i = 1; i <= n; i++) {
        struct tc_member *m = &c->m[i];
        char host[24];
        snprintf(host, sizeof(host), "127.0.%d.1", block + i - 1);
        char name[16];
        snprintf(name, sizeof(name), "m%d", i);
        snprintf(m->name, sizeof(m->name), "%s", name);
        snprintf(m->zone, sizeof(m->zone), "z%d", block + i - 1);
        /* Two draws may give the same free port (neither is bound yet): keeld then refuses
         * to start ("--listen-client and --listen-peer are the same address"). */
        int client_port = tc_free_port(host), peer_port;
        while ((peer_port = tc_free_port(host)) == client_port)
            ;
        snprintf(m->client, sizeof(m->client), "%s:%d", host, client_port);
        snprintf(m->peer, sizeof(m->peer), "%s:%d", host, peer_port);
        snprintf(m->dir, sizeof(m->dir), "%s/%s", c->root, name);
        snprintf(m->log, sizeof(m->log), "%s/%s.log", c->root, name);
        off += (size_t)snprintf(c->initial + off, sizeof(c->initial) - off, "%s%s=%s@%s",
                                i > 1 ? "," : "", m->name, m->peer, m->zone);
    }
}

void tc_cluster_init_named(struct tc_cluster *c, int n, const char *tag, const char *ip,
                           const char *name)
{
    tc_cluster_init_at(c, n, tag, 1);
    size_t off = 0;
    for (int i = 1; i <= n; i++) {
        struct tc_member *m = &c->m[i];
        /* Ports free on ip, distinct from every member's so far (all share one address). */
        int client_port, peer_port;
        bool clash;
        do {
            client_port = tc_free_port(ip);
            while ((peer_port = tc_free_port(ip)) == client_port)
                ;
            clash = false;
            for (int j = 1; j < i; j++) {
                const char *cp = strrchr(c->m[j].client, ':'), *pp = strrchr(c->m[j].peer, ':');
                int used[2] = {atoi(cp + 1), atoi(pp + 1)};
                for (int k = 0; k < 2; k++)
                    clash = clash || used[k] == client_port || used[k] == peer_port;
            }
        } while (clash);
        snprintf(m->client, sizeof(m->client), "%s:%d", ip, client_port);
        snprintf(m->peer, sizeof(m->peer), "%s:%d", ip, peer_port);
        off += (size_t)snprintf(c->initial + off, sizeof(c->initial) - off, "%s%s=%s:%d@%s",
                                i > 1 ? "," : "", m->name, name, peer_port, m->zone);
    }
}

int tc_start(struct tc_cluster *c, int i)
{
    struct tc_member *m = &c->m[i];
    if (m->pid != 0)
        return -1;
    char hb[16], et[16], th[16], tr[16];
    snprintf(hb, sizeof(hb), "%u", c->heartbeat_ms);
    snprintf(et, sizeof(et), "%u", c->election_ms);
    snprintf(th, sizeof(th), "%u", c->snapshot_threshold);
    snprintf(tr, sizeof(tr), "%u", c->snapshot_trailing);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* A test that dies (an assertion, ASan) must not leave members running. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (c->nofile != 0) {
            struct rlimit rl = {c->nofile, c->nofile};
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(126);
        }
        int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        char *argv[40];
        int a = 0;
        argv[a++] = KEEL_KEELD_PATH;
        argv[a++] = "--name";
        argv[a++] = m->name;
        argv[a++] = "--data-dir";
        argv[a++] = m->dir;
        argv[a++] = "--listen-client";
        argv[a++] = m->client;
        argv[a++] = "--listen-peer";
        argv[a++] = m->peer;
        argv[a++] = "--initial-cluster";
        argv[a++] = c->initial;
        argv[a++] = "--heartbeat-ms";
        argv[a++] = hb;
        argv[a++] = "--election-ms";
        argv[a++] = et;
        if (c->snapshot_threshold) {
            argv[a++] = "--snapshot-threshold";
            argv[a++] = th;
        }
        if (c->snapshot_trailing) {
            argv[a++] = "--snapshot-trailing";
            argv[a++] = tr;
        }
        char extra[400];
        snprintf(extra, sizeof(extra), "%s %s", c->extra, m->extra);
        char *save = NULL;
        for (char *tok = strtok_r(extra, " ", &save); tok && a < 38;
             tok = strtok_r(NULL, " ", &save))
            argv[a++] = tok;
        argv[a] = NULL;
        execv(argv[0], argv);
        _exit(127);
    }
    m->pid = pid;
    c->open->pid[i] = pid;
    return 0;
}

void tc_start_all(struct tc_cluster *c)
{
    for (int i = 1; i <= c->n; i++)
        if (c->m[i].pid == 0 && tc_start(c, i) != 0)
            abort();
}

int tc_stop(struct tc_cluster *c, int i, int sig)
{
    struct tc_member *m = &c->m[i];
    if (m->pid == 0)
        return 0;
    kill(m->pid, sig);
    long long deadline = tc_now_ms() + 15000;
    int status = 0;
    while (tc_now_ms() < deadline) {
        pid_t r = waitpid(m->pid, &status, WNOHANG);
        if (r == m->pid) {
            m->pid = 0;
            return status;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

void tc_endpoints(const struct tc_cluster *c, int i, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int j = 1; j <= c->n; j++) {
        if (i > 0 && j != i)
            continue;
        off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? "," : "", c->m[j].client);
        if (off >= len)
            break;
    }
}

void tc_cluster_close(struct tc_cluster *c)
{
    for (int i = 1; i <= c->n; i++) {
        if (c->m[i].pid != 0 && tc_stop(c, i, SIGKILL) == -1)
            fprintf(stderr, "member %d (pid %d) did not exit\n", i, (int)c->m[i].pid);
    }
    if (getenv("KEEL_KEEP_TEST_DATA") == NULL)
        tu_rmdir(c->root);
    else
        fprintf(stderr, "test data kept in %s\n", c->root);
    free(c->root);
    c->root = NULL;
    for (struct tc_open **p = &open_clusters; *p != NULL; p = &(*p)->next)
        if (*p == c->open) {
            *p = c->open->next;
            break;
        }
    free(c->open);
    c->open = NULL;
}

int tc_find_leader(struct tc_cluster *c, struct keel *k, unsigned skip, int timeout_ms)
{
    long long deadline = tc_now_ms() + timeout_ms;
    while (tc_now_ms() < deadline) {
        for (int i = 1; i <= c->n; i++) {
            if (c->m[i].pid == 0 || (skip & (1u << i)))
                continue;
            Keel__StatusResponse *st = NULL;
            if (keel_status(k, c->m[i].client, &st) != 0)
                continue;
            uint64_t leader = st->leader;
            keel_free(st);
            if (leader == 0)
                continue;
            /* Which member is `leader`? Ask for the member list. */
            Keel__MemberListResponse *ml = NULL;
            if (keel_member_list(k, &ml) != 0)
                continue;
            int found = 0;
            for (size_t j = 0; j < ml->n_members; j++)
                if (ml->members[j]->id == leader)
                    for (int x = 1; x <= c->n; x++)
                        if (strcmp(ml->members[j]->name, c->m[x].name) == 0)
                            found = x;
            keel_free(ml);
            if (found && c->m[found].pid != 0 && !(skip & (1u << found)))
                return found;
        }
        tu_sleep_ms(20);
    }
    return 0;
}

long tc_status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        abort();
    }
    long kb = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            kb = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    if (kb < 0) {
        fprintf(stderr, "%s: no %s\n", path, field);
        abort();
    }
    return kb;
}

void tc_reset_peak(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pid);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs("5", f) < 0 || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

int tc_log_contains(const struct tc_cluster *c, int i, const char *needle)
{
    FILE *f = fopen(c->m[i].log, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

int tc_member_free_port(const struct tc_cluster *c, int i)
{
    char host[24];
    snprintf(host, sizeof(host), "127.0.%d.1", i);
    for (int tries = 0; tries < 100; tries++) {
        int port = tc_free_port(host);
        char addr[32];
        snprintf(addr, sizeof(addr), "%s:%d", host, port);
        if (port > 0 && strcmp(addr, c->m[i].client) != 0 && strcmp(addr, c->m[i].peer) != 0)
            return port;
    }
    fprintf(stderr, "tc_member_free_port: no free port on %s\n", host);
    abort();
}

int tc_log_count(const struct tc_cluster *c, int i, const char *needle)
{
    FILE *f = fopen(c->m[i].log, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

int tc_keelctl(const struct tc_cluster *c, const char *path, char *out, size_t outlen, ...)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)path;
    va_list ap;
    va_start(ap, outlen);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char file[600];
    snprintf(file, sizeof(file), "%s/keelctl.out", c->root);
    pid_t pid = fork();
    if (pid < 0) {
        perror("tc_keelctl: fork");
        abort();
    }
    if (pid == 0) {
        if (freopen(file, "w", stdout) == NULL || dup2(fileno(stdout), 2) < 0)
            _exit(126);
        unsetenv("KEEL_ENDPOINTS");
        execv(path, argv);
        _exit(127);
    }
    int st = 0;
    for (int i = 0; i < 3000 && waitpid(pid, &st, WNOHANG) != pid; i++) {
        usleep(10000);
        if (i == 2999) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
    }
    FILE *f = fopen(file, "r");
    size_t n = f != NULL && outlen > 0 ? fread(out, 1, outlen - 1, f) : 0;
    if (outlen > 0)
        out[n] = '\0';
    if (f != NULL)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int tc_http(const char *addr, const char *method, const char *path, const char *body, char **out)
{
    if (out != NULL)
        *out = NULL;
    char host[32];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL)
        return -1;
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %zu\r\n"
                     "Content-Type: application/json\r\n\r\n%s",
                     method, path, addr, body ? strlen(body) : 0, body ? body : "");
    if (n < 0 || (size_t)n >= sizeof(req) || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t cap = 4 << 20, got = 0;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        close(fd);
        return -1;
    }
    ssize_t r;
    while (got < cap && (r = read(fd, buf + got, cap - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    int status = -1;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        status = -1;
    if (out != NULL) {
        const char *b = strstr(buf, "\r\n\r\n");
        *out = strdup(b ? b + 4 : "");
    }
    free(buf);
    return status;
}
