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

struct itree_node {
    struct itree_node *left, *right;
    const uint8_t *start;
    size_t start_len;
    const uint8_t *end; /* NULL: infinite */
    size_t end_len;
    uint32_t prio;
    const struct itree_node *max; /* the node with the greatest end in this subtree */
};

struct itree {
    struct itree_node *root;
    size_t n;
};

void itree_init(struct itree *t);
/* n's start/end must stay valid while it is in the tree. */
void itree_insert(struct itree *t, struct itree_node *n);
void itree_remove(struct itree *t, struct itree_node *n);
/* Call fn for every node whose interval contains key. fn must not change the tree. */
void itree_stab(const struct itree *t, const uint8_t *key, size_t len,
                void (*fn)(struct itree_node *n, void *data), void *data);

#endif
