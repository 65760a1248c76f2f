/*
 * A well-behaved client beside a misbehaving one. On a thread of its own, through libkeel, on a
 * connection of its own to one member, it writes its own key and reads it back (or only reads
 * it), round after round, until stopped. A limit test starts one, drives a limit past its bound,
 * waits for rounds completed while the bound is held, and asserts at the end that no round
 * failed: the member stayed up and its other clients saw no error.
 */
#ifndef KEEL_TEST_BYSTANDER_H
#define KEEL_TEST_BYSTANDER_H

#include <stdbool.h>

struct tc_cluster;
struct tb_bystander;

enum tb_mode {
    TB_WRITES, /* put a new value, then a linearizable get must return it */
    TB_READS   /* only the get (for limits that refuse every client's writes, like the quota) */
};

/* Connect to member (1-based) of c and write the first value (waiting, up to 20 s, for a
 * leader), then start the rounds. Aborts the test when it cannot. */
struct tb_bystander *tb_start(const struct tc_cluster *c, int member, enum tb_mode mode);

/* Wait until n more rounds complete: true, or false when one fails or timeout_ms pass first. */
bool tb_progress(struct tb_bystander *b, long n, int timeout_ms);

/* Stop and free b: the rounds completed, or -1 when one failed (its error printed). */
long tb_stop(struct tb_bystander *b);

#endif
