/*
 * The interval tree (see itree.h): a treap, recursive insert and remove by rotation and merge,
 * and a stab that prunes every subtree whose greatest end is at or before the key and stops at
 * the first start after it. tests/unit/test_itree.c checks it against a brute-force model.
 */
#include "itree.h"

#include <string.h>

static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* Order of ends, with NULL (infinite) greatest. */
static int cmp_end(const struct keel_itree_node *a, const struct keel_itree_node *b)
{
    if (a->end == NULL || b->end == NULL)
        return (a->end == NULL) - (b->end == NULL);
    return cmp_bytes(a->end, a->end_len, b->end, b->end_len);
}

static int cmp_node(const struct keel_itree_node *a, const struct keel_itree_node *b)
{
    int c = cmp_bytes(a->start, a->start_len, b->start, b->start_len);
    if (c != 0)
        return c;
    return a < b ? -1 : a > b;
}

static void update(struct keel_itree_node *n)
{
    const struct keel_itree_node *m = n;
    if (n->left && cmp_end(n->left->max, m) > 0)
        m = n->left->max;
    if (n->right && cmp_end(n->right->max, m) > 0)
        m = n->right->max;
    n->max = m;
}

static struct keel_itree_node *rotate_right(struct keel_itree_node *n)
{
    struct keel_itree_node *l = n->left;
    n->left = l->right;
    l->right = n;
    update(n);
    update(l);
    return l;
}

static struct keel_itree_node *rotate_left(struct keel_itree_node *n)
{
    struct keel_itree_node *r = n->right;
    n->right = r->left;
    r->left = n;
    update(n);
    update(r);
    return r;
}

static struct keel_itree_node *insert(struct keel_itree_node *root, struct keel_itree_node *n)
{
    if (root == NULL) {
        update(n);
        return n;
    }
    if (cmp_node(n, root) < 0) {
        root->left = insert(root->left, n);
        if (root->left->prio > root->prio)
            return rotate_right(root);
    } else {
        root->right = insert(root->right, n);
        if (root->right->prio > root->prio)
            return rotate_left(root);
    }
    update(root);
    return root;
}

static struct keel_itree_node *merge(struct keel_itree_node *a, struct keel_itree_node *b)
{
    if (a == NULL)
        return b;
    if (b == NULL)
        return a;
    if (a->prio > b->prio) {
        a->right = merge(a->right, b);
        update(a);
        return a;
    }
    b->left = merge(a, b->left);
    update(b);
    return b;
}

static struct keel_itree_node *remove_node(struct keel_itree_node *root, struct keel_itree_node *n)
{
    if (root == NULL)
        return NULL;
    if (root == n)
        return merge(root->left, root->right);
    if (cmp_node(n, root) < 0)
        root->left = remove_node(root->left, n);
    else
        root->right = remove_node(root->right, n);
    update(root);
    return root;
}

void keel_itree_init(struct keel_itree *t)
{
    t->root = NULL;
    t->n = 0;
}

void keel_itree_insert(struct keel_itree *t, struct keel_itree_node *n)
{
    /* The priority comes from the node's address: no random source needed, and addresses of
     * heap objects are spread enough for the expected depth to stay logarithmic. */
    uintptr_t x = (uintptr_t)n;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    n->prio = (uint32_t)x;
    n->left = n->right = NULL;
    t->root = insert(t->root, n);
    t->n++;
}

void keel_itree_remove(struct keel_itree *t, struct keel_itree_node *n)
{
    t->root = remove_node(t->root, n);
    n->left = n->right = NULL;
    t->n--;
}

static void stab(struct keel_itree_node *n, const uint8_t *key, size_t len,
                 void (*fn)(struct keel_itree_node *n, void *data), void *data)
{
    while (n != NULL) {
        /* Nothing below ends after key: no match here. */
        const struct keel_itree_node *m = n->max;
        if (m->end != NULL && cmp_bytes(m->end, m->end_len, key, len) <= 0)
            return;
        stab(n->left, key, len, fn, data);
        if (cmp_bytes(n->start, n->start_len, key, len) > 0)
            return; /* this node and everything to its right start after key */
        if (n->end == NULL || cmp_bytes(key, len, n->end, n->end_len) < 0)
            fn(n, data);
        n = n->right;
    }
}

void keel_itree_stab(const struct keel_itree *t, const uint8_t *key, size_t len,
                     void (*fn)(struct keel_itree_node *n, void *data), void *data)
{
    stab(t->root, key, len, fn, data);
}
