/* An op's memory (a pool by size class) and the lists it moves along. */
#include <stdlib.h>
#include <string.h>

#include "op.h"
#include "pieces.h"

void kc_list_push(struct kc_list *l, struct kc_op *op)
{
    op->next = NULL;
    op->prev = l->tail;
    if (l->tail)
        l->tail->next = op;
    else
        l->head = op;
    l->tail = op;
    l->n++;
}

void kc_list_remove(struct kc_list *l, struct kc_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        l->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        l->tail = op->prev;
    op->prev = op->next = NULL;
    l->n--;
}

void kc_pool_init(struct kc_pool *p)
{
    memset(p, 0, sizeof(*p));
}

void kc_pool_close(struct kc_pool *p)
{
    for (int i = 0; i < KC_NCLASS; i++) {
        while (p->free[i]) {
            struct kc_op *op = p->free[i];
            p->free[i] = op->next;
            free(op);
        }
        p->n[i] = 0;
    }
}

struct kc_op *kc_op_init(struct kc_pool *p, size_t frame_len)
{
    uint8_t cls = KC_NCLASS;
    size_t cap = frame_len;
    for (uint8_t i = 0; i < KC_NCLASS; i++) {
        if (frame_len <= ((size_t)256 << i)) {
            cls = i;
            cap = (size_t)256 << i;
            break;
        }
    }
    struct kc_op *op;
    if (cls < KC_NCLASS && p->free[cls]) {
        op = p->free[cls];
        p->free[cls] = op->next;
        p->n[cls]--;
    } else {
        op = malloc(sizeof(*op) + cap);
        if (op == NULL)
            return NULL;
    }
    memset(op, 0, sizeof(*op));
    op->cls = cls;
    op->heap_idx = SIZE_MAX;
    op->peer = -1;
    op->avoid_peer = -1;
    return op;
}

void kc_op_close(struct kc_pool *p, struct kc_op *op)
{
    free(op->msg);
    op->msg = NULL;
    kc_pieces_free(op->pieces);
    op->pieces = NULL;
    if (op->cls < KC_NCLASS && p->n[op->cls] < KC_POOL_KEEP) {
        op->next = p->free[op->cls];
        p->free[op->cls] = op;
        p->n[op->cls]++;
        return;
    }
    free(op);
}
