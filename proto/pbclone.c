/* Deep copies of unpacked messages (see pbclone.h). */
#include "pbclone.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static void *sys_alloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void sys_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static ProtobufCAllocator sys = {sys_alloc, sys_free, NULL};

static void *dup(ProtobufCAllocator *a, const void *p, size_t n)
{
    void *q = a->alloc(a->allocator_data, n ? n : 1);
    if (q != NULL && n > 0)
        memcpy(q, p, n);
    return q;
}

size_t keel_pb_value_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    default:
        return 4; /* the 32-bit integers, float, enum */
    }
}

/*
 * Replace the pointer-valued element at p (a field of the copy, still pointing into the source)
 * with its own copy. def: the field's default (left shared, as protobuf-c leaves it). 0, or -1
 * when out of memory (then *p is NULL).
 */
static int own_one(ProtobufCType t, void *p, const void *def, ProtobufCAllocator *a)
{
    switch (t) {
    case PROTOBUF_C_TYPE_STRING: {
        char **s = p;
        if (*s != NULL && *s != def && (*s = dup(a, *s, strlen(*s) + 1)) == NULL)
            return -1;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = p;
        const ProtobufCBinaryData *d = def;
        if (b->data != NULL && (d == NULL || b->data != d->data) &&
            (b->data = dup(a, b->data, b->len)) == NULL)
            return -1;
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        ProtobufCMessage **m = p;
        if (*m != NULL && *m != def && (*m = keel_pb_clone(*m, a)) == NULL)
            return -1;
        return 0;
    }
    default:
        return 0;
    }
}

/* Whether f holds a value in m: the members of a oneof share their memory, and only the one
 * its case names is there. */
static bool set_here(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    return !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
           *(const uint32_t *)((const char *)m + f->quantifier_offset) == f->id;
}

static bool owns_pointers(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_STRING || t == PROTOBUF_C_TYPE_BYTES ||
           t == PROTOBUF_C_TYPE_MESSAGE;
}

int keel_pb_clone_into(ProtobufCMessage *c, const ProtobufCMessage *m, ProtobufCAllocator *alloc)
{
    ProtobufCAllocator *a = alloc != NULL ? alloc : &sys;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    memcpy(c, m, d->sizeof_message);
    char *base = (char *)c;
    /* Until a field has its own copy, the copy must not free what it points to: clear every
     * pointer field first, then fill them one by one, so that a failure part way frees only
     * what was made. */
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            *(size_t *)(base + f->quantifier_offset) = 0;
            *(void **)(base + f->offset) = NULL;
        } else if (owns_pointers(f->type) && set_here(m, f)) {
            if (f->type == PROTOBUF_C_TYPE_BYTES)
                memset(base + f->offset, 0, sizeof(ProtobufCBinaryData));
            else
                *(void **)(base + f->offset) = NULL;
        }
    }
    c->n_unknown_fields = 0;
    c->unknown_fields = NULL;

    const char *src = (const char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(src + f->quantifier_offset);
            const void *arr = *(void *const *)(src + f->offset);
            if (n == 0 || arr == NULL)
                continue;
            size_t es = keel_pb_value_size(f->type);
            void *copy = a->alloc(a->allocator_data, n * es);
            if (copy == NULL)
                return -1;
            *(void **)(base + f->offset) = copy;
            if (!owns_pointers(f->type)) {
                memcpy(copy, arr, n * es);
                *(size_t *)(base + f->quantifier_offset) = n;
                continue;
            }
            /* Counted as they are made: a failure frees the elements before it. */
            for (size_t j = 0; j < n; j++) {
                memcpy((char *)copy + j * es, (const char *)arr + j * es, es);
                if (own_one(f->type, (char *)copy + j * es, NULL, a) != 0)
                    return -1;
                *(size_t *)(base + f->quantifier_offset) = j + 1;
            }
            continue;
        }
        if (!owns_pointers(f->type) || !set_here(m, f))
            continue;
        size_t sz = f->type == PROTOBUF_C_TYPE_BYTES ? sizeof(ProtobufCBinaryData) : sizeof(void *);
        memcpy(base + f->offset, src + f->offset, sz);
        if (own_one(f->type, base + f->offset, f->default_value, a) != 0)
            return -1;
    }
    if (m->n_unknown_fields > 0) {
        c->unknown_fields =
            a->alloc(a->allocator_data, m->n_unknown_fields * sizeof(ProtobufCMessageUnknownField));
        if (c->unknown_fields == NULL)
            return -1;
        for (unsigned i = 0; i < m->n_unknown_fields; i++) {
            ProtobufCMessageUnknownField *u = &c->unknown_fields[i];
            *u = m->unknown_fields[i];
            if ((u->data = dup(a, u->data, u->len)) == NULL)
                return -1;
            c->n_unknown_fields++;
        }
    }
    return 0;
}

ProtobufCMessage *keel_pb_clone(const ProtobufCMessage *m, ProtobufCAllocator *alloc)
{
    ProtobufCAllocator *a = alloc != NULL ? alloc : &sys;
    ProtobufCMessage *c = a->alloc(a->allocator_data, m->descriptor->sizeof_message);
    if (c == NULL)
        return NULL;
    if (keel_pb_clone_into(c, m, a) != 0) {
        protobuf_c_message_free_unpacked(c, a);
        return NULL;
    }
    return c;
}
