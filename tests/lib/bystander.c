#include "bystander.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "keel/keel.h"
#include "testutil.h"

/* Generous: a round waits behind whatever the limit under test holds back (paused reading,
 * a full gate), which on a busy machine with sanitizers can take seconds. */
#define ROUND_TIMEOUT_MS 20000

struct tb_bystander {
    struct keel *k;
    enum tb_mode mode;
    char key[48];
    char value[32]; /* the last value written */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;
    long rounds;
    char error[512]; /* the first failure; "" while none */
};

static int put_value(struct tb_bystander *b, long round)
{
    snprintf(b->value, sizeof(b->value), "round-%ld", round);
    return keel_put(b->k, b->key, strlen(b->key), b->value, strlen(b->value), NULL, NULL);
}

/* One round: 0, or -1 with err set. */
static int round_once(struct tb_bystander *b, long round, char *err, size_t errlen)
{
    if (b->mode == TB_WRITES && put_value(b, round) != 0) {
        snprintf(err, errlen, "put in round %ld: %s", round, keel_errmsg());
        return -1;
    }
    Keel__RangeResponse *rr = NULL;
    if (keel_get(b->k, b->key, strlen(b->key), NULL, &rr) != 0) {
        snprintf(err, errlen, "get in round %ld: %s", round, keel_errmsg());
        return -1;
    }
    int rv = 0;
    if (rr->n_kvs != 1 || rr->kvs[0]->value.len != strlen(b->value) ||
        memcmp(rr->kvs[0]->value.data, b->value, strlen(b->value)) != 0) {
        snprintf(err, errlen, "get in round %ld: not the value written (%s)", round, b->value);
        rv = -1;
    }
    keel_free(rr);
    return rv;
}

static void *run(void *arg)
{
    struct tb_bystander *b = arg;
    for (long round = 1;; round++) {
        pthread_mutex_lock(&b->mu);
        bool stop = b->stop;
        pthread_mutex_unlock(&b->mu);
        if (stop)
            break;
        char err[sizeof(b->error)];
        int rv = round_once(b, round, err, sizeof(err));
        pthread_mutex_lock(&b->mu);
        if (rv == 0)
            b->rounds++;
        else
            memcpy(b->error, err, sizeof(err));
        pthread_cond_broadcast(&b->cond);
        pthread_mutex_unlock(&b->mu);
        if (rv != 0)
            break;
    }
    return NULL;
}

struct tb_bystander *tb_start(const struct tc_cluster *c, int member, enum tb_mode mode)
{
    struct tb_bystander *b = calloc(1, sizeof(*b));
    if (b == NULL)
        abort();
    b->mode = mode;
    static int serial;
    snprintf(b->key, sizeof(b->key), "bystander/%d", ++serial);
    char eps[64];
    tc_endpoints(c, member, eps, sizeof(eps));
    struct keel_options o = {
        .endpoints = eps, .request_timeout_ms = ROUND_TIMEOUT_MS, .dial_timeout_ms = 2000};
    if (keel_open(&b->k, &o) != 0) {
        fprintf(stderr, "bystander: keel_open: %s\n", keel_errmsg());
        abort();
    }
    long long deadline = tc_now_ms() + 20000;
    while (put_value(b, 0) != 0) {
        if (tc_now_ms() > deadline) {
            fprintf(stderr, "bystander: no first write within 20 s: %s\n", keel_errmsg());
            abort();
        }
        tu_sleep_ms(50);
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cond, NULL);
    if (pthread_create(&b->thread, NULL, run, b) != 0)
        abort();
    return b;
}

bool tb_progress(struct tb_bystander *b, long n, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&b->mu);
    long target = b->rounds + n;
    int rv = 0;
    while (b->rounds < target && b->error[0] == '\0' && rv == 0)
        rv = pthread_cond_timedwait(&b->cond, &b->mu, &until);
    bool ok = b->rounds >= target && b->error[0] == '\0';
    pthread_mutex_unlock(&b->mu);
    return ok;
}

long tb_stop(struct tb_bystander *b)
{
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    long rounds = b->rounds;
    if (b->error[0] != '\0') {
        fprintf(stderr, "bystander %s failed after %ld rounds: %s\n", b->key, rounds, b->error);
        rounds = -1;
    }
    keel_close(b->k);
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->mu);
    free(b);
    return rounds;
}
