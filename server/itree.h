/*
 * An interval tree of key ranges [start, end) (end may be infinite), for finding every watcher
 * whose range contains a key in O(log n + matches). A treap ordered by (start, node address),
 * each node keeping the greatest end of its subtree. Nodes are embedded in their owners.
 */
#ifndef KEEL_ITREE_H
#define KEEL_ITREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct keel_itree_node {
    struct keel_itree_node *left, *right;
    const uint8_t *start;
    size_t start_len;
    const uint8_t *end; /* NULL: infinite */
    size_t end_len;
    uint32_t prio;
    const struct keel_itree_node *max; /* the node with the greatest end in this subtree */
};

struct keel_itree {
    struct keel_itree_node *root;
    size_t n;
};

void keel_itree_init(struct keel_itree *t);
/* n's start/end must stay valid while it is in the tree. */
void keel_itree_insert(struct keel_itree *t, struct keel_itree_node *n);
void keel_itree_remove(struct keel_itree *t, struct keel_itree_node *n);
/* Call fn for every node whose interval contains key. fn must not change the tree. */
void keel_itree_stab(const struct keel_itree *t, const uint8_t *key, size_t len,
                     void (*fn)(struct keel_itree_node *n, void *data), void *data);

#endif
