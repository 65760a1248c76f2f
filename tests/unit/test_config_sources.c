/*
 * keeld's three sources of settings (server/config.c, configfile.c): a YAML --config-file, the
 * KEEL_* environment and the flags. A flag beats the environment, which beats the file, for
 * settings of every kind; each source's values are checked as flags are and a refusal names the
 * source and key; malformed YAML is refused with its line; unknown KEEL_* variables are noted,
 * not refused; the variables `keelctl member add` prints start a joining member.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "testutil.h"

static char *dir; /* this run's scratch directory */

/* No KEEL_* variable of the caller's shell may leak into a case. */
static void clear_keel_env(void)
{
    for (bool again = true; again;) {
        again = false;
        for (char **e = environ; *e != NULL; e++) {
            if (strncmp(*e, "KEEL_", 5) != 0)
                continue;
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
            unsetenv(name);
            again = true; /* environ changed under us: start over */
            break;
        }
    }
}

static int setup(void **state)
{
    (void)state;
    dir = tu_mkdtemp("keel-configtest");
    clear_keel_env();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_keel_env();
    tu_rmdir(dir);
    free(dir);
    return 0;
}

/* Write text to DIR/name; the path, static until the next call. */
static const char *write_file(const char *name, const char *text)
{
    static char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* keel_config_parse on the space-separated flags of line (after "keeld"). */
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

#define CLUSTER "a=127.0.1.1:2380@z1,b=127.0.2.1:2380@z2,c=127.0.3.1:2380@z3"

/* Member a's required settings, as a file. */
#define FILE_BASE                                                                                  \
    "# member a\n"                                                                                 \
    "name: a\n"                                                                                    \
    "data-dir: /tmp/x\n"                                                                           \
    "listen-client: 127.0.1.1:2379\n"                                                              \
    "listen-peer: '127.0.1.1:2380'\n"                                                              \
    "initial-cluster:\n"                                                                           \
    "  - a=127.0.1.1:2380@z1\n"                                                                    \
    "  - b=127.0.2.1:2380@z2\n"                                                                    \
    "  - c=127.0.3.1:2380@z3\n"

static void file_alone_is_the_flags(void **state)
{
    (void)state;
    struct keel_config c, f;
    char err[512] = "", line[700];
    assert_int_equal(parse("--name a --data-dir /tmp/x --listen-client 127.0.1.1:2379 "
                           "--listen-peer 127.0.1.1:2380 --initial-cluster " CLUSTER,
                           &f, err, sizeof(err)),
                     0);
    const char *path = write_file("a.yaml", FILE_BASE "heartbeat-ms: 50\n");
    char origins[700];
    snprintf(origins, sizeof(origins),
             "config file %s: name data-dir listen-client listen-peer initial-cluster "
             "heartbeat-ms",
             path);
    snprintf(line, sizeof(line), "--config-file %s", path);
    assert_int_equal(parse(line, &c, err, sizeof(err)), 0);
    assert_string_equal(c.origins, origins);
    assert_string_equal(c.name, "a");
    assert_string_equal(c.data_dir, "/tmp/x");
    assert_string_equal(c.listen_peer, "127.0.1.1:2380");
    assert_string_equal(c.zone, "z1");
    assert_int_equal(c.n_members, 3);
    assert_int_equal(c.heartbeat_ms, 50);
    /* the list is the flag's text: the same cluster id */
    assert_int_equal(c.cluster_id, f.cluster_id);
    assert_string_equal(c.env_unknown, "");
    keel_config_close(&c);
    keel_config_close(&f);

    /* KEEL_CONFIG_FILE names it as well; an empty file is no settings at all */
    setenv("KEEL_CONFIG_FILE", write_file("b.yaml", FILE_BASE), 1);
    assert_int_equal(parse("", &c, err, sizeof(err)), 0);
    assert_int_equal(c.heartbeat_ms, 100);
    keel_config_close(&c);
    setenv("KEEL_CONFIG_FILE", write_file("empty.yaml", "# nothing\n"), 1);
    assert_int_equal(parse("", &c, err, sizeof(err)), -1);
    assert_string_equal(err, "--name is required");
    keel_config_close(&c);
}

static void flag_beats_env_beats_file(void **state)
{
    (void)state;
    struct keel_config c;
    char err[512] = "", line[700];
    const char *path = write_file("p.yaml", FILE_BASE "heartbeat-ms: 50\n"
                                                      "election-ms: 600\n"
                                                      "max-watches: 7\n"
                                                      "quota-bytes: 2097152\n"
                                                      "log-format: json\n"
                                                      "listen-metrics: 127.0.1.1:9001\n"
                                                      "auto-compaction-mode: revision\n"
                                                      "auto-compaction-retention: \"100\"\n"
                                                      "initial-cluster-state: new\n");
    /* the file alone */
    snprintf(line, sizeof(line), "--config-file %s", path);
    assert_int_equal(parse(line, &c, err, sizeof(err)), 0);
    assert_int_equal(c.heartbeat_ms, 50);
    assert_int_equal(c.election_ms, 600);
    assert_true(c.log_json);
    assert_string_equal(c.listen_metrics, "127.0.1.1:9001");
    assert_int_equal(c.compact_retention_revs, 100);
    keel_config_close(&c);

    /* the environment over the file: numbers, a choice, a string, the cluster list */
    setenv("KEEL_HEARTBEAT_MS", "60", 1);
    setenv("KEEL_QUOTA_BYTES", "4194304", 1);
    setenv("KEEL_LOG_FORMAT", "text", 1);
    setenv("KEEL_LISTEN_METRICS", "127.0.1.1:9002", 1);
    setenv("KEEL_DATA_DIR", "/tmp/y", 1);
    setenv("KEEL_AUTO_COMPACTION_RETENTION", "200", 1);
    setenv("KEEL_INITIAL_CLUSTER", "a=127.0.1.1:2380@z1,b=127.0.2.1:2380@z2", 1);
    setenv("KEEL_MAX_WATCHES", "", 1); /* empty: as if unset */
    assert_int_equal(parse(line, &c, err, sizeof(err)), 0);
    assert_int_equal(c.heartbeat_ms, 60);
    assert_int_equal(c.election_ms, 600); /* the file's, nothing above it */
    assert_int_equal(c.max_watches, 7);
    assert_int_equal(c.quota_bytes, 4194304);
    assert_false(c.log_json);
    assert_string_equal(c.listen_metrics, "127.0.1.1:9002");
    assert_string_equal(c.data_dir, "/tmp/y");
    assert_int_equal(c.compact_mode, 2); /* revision, from the file */
    assert_int_equal(c.compact_retention_revs, 200);
    assert_int_equal(c.n_members, 2);
    keel_config_close(&c);

    /* the flags over both */
    snprintf(line, sizeof(line),
             "--config-file %s --heartbeat-ms 70 --log-format json --listen-metrics "
             "127.0.1.1:9003 --data-dir /tmp/z --auto-compaction-retention 300 "
             "--initial-cluster " CLUSTER,
             path);
    assert_int_equal(parse(line, &c, err, sizeof(err)), 0);
    assert_int_equal(c.heartbeat_ms, 70);
    assert_int_equal(c.quota_bytes, 4194304);
    assert_true(c.log_json);
    assert_string_equal(c.listen_metrics, "127.0.1.1:9003");
    assert_string_equal(c.data_dir, "/tmp/z");
    assert_int_equal(c.compact_retention_revs, 300);
    assert_int_equal(c.n_members, 3);
    /* each setting under the source its value came from */
    assert_non_null(strstr(c.origins, "; environment: quota-bytes; flags: data-dir initial-cluster "
                                      "heartbeat-ms listen-metrics log-format "
                                      "auto-compaction-retention"));
    keel_config_close(&c);
}

/* Each case: the file's extra lines, one variable (or none), extra flags, and what the message
 * must say. */
static void each_source_is_checked(void **state)
{
    (void)state;
    struct {
        const char *file_extra;
        const char *env, *env_value;
        const char *flags;
        const char *needle;
    } cases[] = {
        {"heartbeat-intervall: 100\n", NULL, NULL, "",
         "line 10: unknown key 'heartbeat-intervall'"},
        {"heartbeat-ms: abc\n", NULL, NULL, "", "line 10: heartbeat-ms: 'abc' is not a number"},
        {"", "KEEL_HEARTBEAT_MS", "abc", "", "KEEL_HEARTBEAT_MS: 'abc' is not a number"},
        {"", NULL, NULL, " --heartbeat-ms abc", "--heartbeat-ms: 'abc' is not a number"},
        {"log-format: xml\n", NULL, NULL, "", "line 10: log-format 'xml' is not json or text"},
        {"", "KEEL_LOG_FORMAT", "xml", "", "KEEL_LOG_FORMAT 'xml' is not json or text"},
        {"quota-bytes: 5\n", NULL, NULL, "", "line 10: quota-bytes: 5 is out of range"},
        {"", "KEEL_ELECTION_MS", "-1", "", "KEEL_ELECTION_MS: '-1' is not a positive number"},
        {"zone: \n", NULL, NULL, "", "line 10: zone is empty"},
        /* checks made once every setting is in name where the value came from */
        {"", "KEEL_LISTEN_CLIENT", "nowhere", "",
         "KEEL_LISTEN_CLIENT: --listen-client 'nowhere' is not"},
        {"listen-metrics: 127.0.1.1:2379\n", NULL, NULL, "",
         "line 10: --listen-metrics 127.0.1.1:2379 is the client"},
        {"", "KEEL_INITIAL_CLUSTER", "a=127.0.1.1:2380,a=127.0.2.1:2380", "",
         "KEEL_INITIAL_CLUSTER: --initial-cluster names member 'a' twice"},
        {"", "KEEL_NAME", "q", "", "KEEL_NAME: --name 'q' is not in --initial-cluster"},
        /* the shape of the file */
        {"data-dir: /tmp/w\n", NULL, NULL, "", "line 10 column 1: 'data-dir' is given twice"},
        {"zone: [a, b]\n", NULL, NULL, "", "line 10: zone takes one value, not a list"},
        {"zone: {a: b}\n", NULL, NULL, "", "line 10 column 7: 'zone' must be a value"},
        {"config-file: /etc/keel.yaml\n", NULL, NULL, "", "line 10: a config file cannot name"},
        {"help: true\n", NULL, NULL, "", "line 10: unknown key 'help'"},
        /* malformed YAML: libyaml's line and column */
        {"zone: z1\n  quota-bytes: 1\n", NULL, NULL, "",
         "line 11 column 14: mapping values are not allowed"},
        {"zone: [z1\n", NULL, NULL, "", "line 11 column 1: did not find expected ','"},
        {"zone: &z z1\npreferred-leader-zone: *z\n", NULL, NULL, "",
         "line 11 column 24: aliases (*z) are not supported"},
        /* --config-file naming no file */
        {"", NULL, NULL, " --config-file /nonexistent/keel.yaml",
         "config file /nonexistent/keel.yaml: No such file or directory"},
        {"", "KEEL_CONFIG_FILE", "/nonexistent/env.yaml", " --config-file /nonexistent/flag.yaml",
         "config file /nonexistent/flag.yaml: No such file"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[1024], line[700], err[512] = "";
        snprintf(text, sizeof(text), "%s%s", FILE_BASE, cases[i].file_extra);
        const char *path = write_file("case.yaml", text);
        snprintf(line, sizeof(line), "--config-file %s%s", path, cases[i].flags);
        if (cases[i].env != NULL)
            setenv(cases[i].env, cases[i].env_value, 1);
        struct keel_config c;
        int rv = parse(line, &c, err, sizeof(err));
        keel_config_close(&c);
        if (cases[i].env != NULL)
            unsetenv(cases[i].env);
        if (rv != -1 || strstr(err, cases[i].needle) == NULL)
            fail_msg("case %zu: rv %d, message '%s', expected it to mention '%s'", i, rv, err,
                     cases[i].needle);
        /* a file's messages say which file */
        if (cases[i].env == NULL && cases[i].flags[0] == '\0' && strstr(err, path) == NULL)
            fail_msg("case %zu: '%s' does not name %s", i, err, path);
    }
}

static void unknown_variables_are_noted(void **state)
{
    (void)state;
    struct keel_config c;
    char err[512] = "", line[700];
    snprintf(line, sizeof(line), "--config-file %s", write_file("u.yaml", FILE_BASE));
    setenv("KEEL_HEARTBEAT_INTERVAL", "100", 1);
    setenv("KEEL_ENDPOINTS", "127.0.1.1:2379", 1);      /* keelctl's */
    setenv("KEEL_EXTRA_FLAGS", "--log-level debug", 1); /* the sample unit's */
    setenv("KEEL_HELP", "true", 1);
    setenv("KEEL_CLUSTER_DIR", "/tmp/c", 1); /* scripts/cluster.sh's */
    assert_int_equal(parse(line, &c, err, sizeof(err)), 0);
    assert_non_null(strstr(c.env_unknown, "KEEL_HEARTBEAT_INTERVAL"));
    assert_non_null(strstr(c.env_unknown, "KEEL_HELP"));
    assert_null(strstr(c.env_unknown, "KEEL_ENDPOINTS"));
    assert_null(strstr(c.env_unknown, "KEEL_EXTRA_FLAGS"));
    assert_null(strstr(c.env_unknown, "KEEL_CLUSTER_DIR"));
    assert_int_equal(c.heartbeat_ms, 100);
    keel_config_close(&c);
    clear_keel_env();
}

/* What `keelctl member add d --peer-urls 127.0.4.1:2380` prints (client/keelctl.c), with the
 * two settings it leaves to the operator, starts member d joining the cluster. */
static void member_add_variables_start_a_joining_member(void **state)
{
    (void)state;
    struct keel_config c;
    char err[512] = "";
    setenv("KEEL_NAME", "d", 1);
    setenv("KEEL_INITIAL_CLUSTER", CLUSTER ",d=127.0.4.1:2380", 1);
    setenv("KEEL_INITIAL_CLUSTER_STATE", "existing", 1);
    setenv("KEEL_LISTEN_PEER", "127.0.4.1:2380", 1);
    assert_int_equal(
        parse("--listen-client 127.0.4.1:2379 --data-dir /tmp/d", &c, err, sizeof(err)), 0);
    assert_true(c.join);
    assert_int_equal(c.cluster_id, 0); /* learned from the cluster */
    assert_int_equal(c.n_members, 4);
    assert_string_equal(c.env_unknown, "");
    keel_config_close(&c);
    clear_keel_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(file_alone_is_the_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(flag_beats_env_beats_file, setup, teardown),
        cmocka_unit_test_setup_teardown(each_source_is_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_variables_are_noted, setup, teardown),
        cmocka_unit_test_setup_teardown(member_add_variables_start_a_joining_member, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
