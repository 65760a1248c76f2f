/*
 * The interval tree behind watch fan-out (server/itree.h), against a brute-force model.
 *
 * Seeded random runs insert and remove intervals over a small alphabet (so starts, ends and
 * probe keys collide often: equal starts, empty keys, empty and infinite intervals, duplicates)
 * and after every change check two things: every stab returns exactly the intervals that
 * contain the key, each once; and the treap's shape is right (search order by start then
 * address, heap order by priority, each node's max the greatest end below it, the count).
 * Replay a failure with KEEL_SEED=<seed>.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itree.h"
#include "testutil.h"

#define MAX_KEY 3

struct ival {
    struct keel_itree_node node; /* first: the tree hands back node pointers */
    uint8_t start[MAX_KEY];
    uint8_t end[MAX_KEY];
    bool in_tree;
    unsigned hits; /* stab callbacks for the current probe */
};

static int cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (alen > blen) - (alen < blen);
}

static bool contains(const struct keel_itree_node *n, const uint8_t *key, size_t len)
{
    return cmp(n->start, n->start_len, key, len) <= 0 &&
           (n->end == NULL || cmp(key, len, n->end, n->end_len) < 0);
}

/* A random key of 0..MAX_KEY bytes over "abc". */
static size_t random_key(uint64_t *rng, uint8_t *out)
{
    size_t len = tu_rand(rng) % (MAX_KEY + 1);
    for (size_t i = 0; i < len; i++)
        out[i] = (uint8_t)('a' + tu_rand(rng) % 3);
    return len;
}

static void random_interval(uint64_t *rng, struct ival *v)
{
    memset(&v->node, 0, sizeof(v->node));
    v->node.start = v->start;
    v->node.start_len = random_key(rng, v->start);
    if (tu_rand(rng) % 5 == 0) {
        v->node.end = NULL; /* to infinity */
        v->node.end_len = 0;
    } else {
        v->node.end = v->end;
        v->node.end_len = random_key(rng, v->end);
    }
}

static void count_hit(struct keel_itree_node *n, void *data)
{
    (void)data;
    ((struct ival *)n)->hits++;
}

/* Greatest end of a subtree, NULL end being infinite; returns the node holding it. */
static const struct keel_itree_node *check_subtree(const struct keel_itree_node *n, size_t *count)
{
    if (n == NULL)
        return NULL;
    (*count)++;
    const struct keel_itree_node *best = n;
    const struct keel_itree_node *sides[2] = {n->left, n->right};
    for (int i = 0; i < 2; i++) {
        const struct keel_itree_node *c = sides[i];
        if (c == NULL)
            continue;
        assert_true(c->prio <= n->prio); /* heap order */
        int order = cmp(c->start, c->start_len, n->start, n->start_len);
        if (order == 0)
            order = c < n ? -1 : 1;
        assert_true(i == 0 ? order < 0 : order > 0); /* search order */
        const struct keel_itree_node *m = check_subtree(c, count);
        if (best->end != NULL &&
            (m->end == NULL || cmp(m->end, m->end_len, best->end, best->end_len) > 0))
            best = m;
    }
    /* The recorded max may be another node with an equal end. */
    assert_non_null(n->max);
    if (best->end == NULL)
        assert_null(n->max->end);
    else
        assert_int_equal(cmp(n->max->end, n->max->end_len, best->end, best->end_len), 0);
    return best;
}

static void check_shape(const struct keel_itree *t, size_t expect_n)
{
    size_t count = 0;
    check_subtree(t->root, &count);
    assert_int_equal(count, expect_n);
    assert_int_equal(t->n, expect_n);
}

static void probe(const struct keel_itree *t, struct ival *v, size_t nv, const uint8_t *key,
                  size_t len)
{
    for (size_t i = 0; i < nv; i++)
        v[i].hits = 0;
    keel_itree_stab(t, key, len, count_hit, NULL);
    for (size_t i = 0; i < nv; i++) {
        unsigned want = v[i].in_tree && contains(&v[i].node, key, len) ? 1 : 0;
        if (v[i].hits != want)
            fail_msg("interval %zu: %u hits for key '%.*s' (len %zu), expected %u", i, v[i].hits,
                     (int)len, (const char *)key, len, want);
    }
}

/* Every key of 0..MAX_KEY bytes over "abc", plus one past the alphabet. */
static void probe_all(const struct keel_itree *t, struct ival *v, size_t nv)
{
    uint8_t key[MAX_KEY + 1] = {0};
    probe(t, v, nv, key, 0);
    for (size_t len = 1; len <= MAX_KEY; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++)
            total *= 3;
        for (size_t x = 0; x < total; x++) {
            size_t y = x;
            for (size_t i = 0; i < len; i++, y /= 3)
                key[i] = (uint8_t)('a' + y % 3);
            probe(t, v, nv, key, len);
        }
    }
    key[0] = 'z';
    probe(t, v, nv, key, 1);
}

static void stabs_match_brute_force(void **state)
{
    (void)state;
    uint64_t rng = tu_seed("itree");
    for (int round = 0; round < 20; round++) {
        size_t nv = 1 + tu_rand(&rng) % 60;
        struct ival *v = calloc(nv, sizeof(*v));
        assert_non_null(v);
        struct keel_itree t;
        keel_itree_init(&t);
        size_t in = 0;
        for (int step = 0; step < 400; step++) {
            struct ival *x = &v[tu_rand(&rng) % nv];
            if (x->in_tree) {
                keel_itree_remove(&t, &x->node);
                x->in_tree = false;
                in--;
            } else {
                random_interval(&rng, x);
                keel_itree_insert(&t, &x->node);
                x->in_tree = true;
                in++;
            }
            check_shape(&t, in);
            if (step % 8 == 0)
                probe_all(&t, v, nv);
        }
        /* Drain completely: the tree ends empty. */
        for (size_t i = 0; i < nv; i++) {
            if (v[i].in_tree) {
                keel_itree_remove(&t, &v[i].node);
                v[i].in_tree = false;
                check_shape(&t, --in);
            }
        }
        assert_null(t.root);
        probe_all(&t, v, nv);
        free(v);
    }
}

/* Hand-picked cases a random run may miss. */
static void edges(void **state)
{
    (void)state;
    struct ival v[4];
    memset(v, 0, sizeof(v));
    struct keel_itree t;
    keel_itree_init(&t);
    /* [a, b), the single key "b" as [b, b\0), everything from "" on, and the empty [c, c). */
    const char *starts[] = {"a", "b", "", "c"};
    const char *ends[] = {"b", "b\0", NULL, "c"};
    const size_t end_lens[] = {1, 2, 0, 1};
    for (int i = 0; i < 4; i++) {
        memcpy(v[i].start, starts[i], strlen(starts[i]));
        v[i].node.start = v[i].start;
        v[i].node.start_len = strlen(starts[i]);
        if (ends[i] != NULL) {
            memcpy(v[i].end, ends[i], end_lens[i]);
            v[i].node.end = v[i].end;
            v[i].node.end_len = end_lens[i];
        }
        keel_itree_insert(&t, &v[i].node);
        v[i].in_tree = true;
    }
    check_shape(&t, 4);
    probe_all(&t, v, 4);
    probe(&t, v, 4, (const uint8_t *)"b\0", 2);   /* just past the single key */
    probe(&t, v, 4, (const uint8_t *)"a\xff", 2); /* just below "b" */
    for (int i = 0; i < 4; i++)
        v[i].hits = 0;
    keel_itree_stab(&t, (const uint8_t *)"b", 1, count_hit, NULL);
    assert_int_equal(v[0].hits, 0); /* [a, b) excludes b */
    assert_int_equal(v[1].hits, 1);
    assert_int_equal(v[2].hits, 1);
    assert_int_equal(v[3].hits, 0);
    for (int i = 0; i < 4; i++)
        keel_itree_remove(&t, &v[i].node);
    check_shape(&t, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(edges),
        cmocka_unit_test(stabs_match_brute_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
