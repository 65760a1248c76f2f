/*
 * What keel's libFuzzer targets share: a reader that takes the input apart (any input is valid:
 * past the end it gives zeros, so no input is wasted on a length check), a check that stops the
 * run on a broken invariant, and a scratch store on LMDB under $TMPDIR.
 *
 * A target is one file, fuzz_<name>.c, defining LLVMFuzzerTestOneInput (and, when it needs
 * one-time setup, LLVMFuzzerInitialize). Its opening comment says what the input means and
 * what is checked beyond "no crash, no leak, no undefined behaviour".
 */
#ifndef KEEL_FUZZ_H
#define KEEL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

struct fz {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t fz_u8(struct fz *f)
{
    if (f->n == 0)
        return 0;
    f->n--;
    return *f->p++;
}

static inline uint32_t fz_u32(struct fz *f)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | fz_u8(f);
    return v;
}

/* A broken invariant is a finding like a crash: abort, so libFuzzer saves the input. */
#define FZ_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* m packs to exactly its announced size (what keeld sends must encode). */
static inline void fz_packs(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n + 1);
    FZ_CHECK(buf != NULL);
    FZ_CHECK(protobuf_c_message_pack(m, buf) == n);
    free(buf);
}

/* The member fuzz_handshake plays, as keeld's flags (seeds.c makes handshakes for it). */
#define FZ_MEMBER_ARGS                                                                             \
    {                                                                                              \
        "keeld", "--name", "a", "--data-dir", "/nonexistent", "--listen-client", "127.0.1.1:2379", \
            "--listen-peer", "127.0.1.1:2380", "--initial-cluster",                                \
            "a=127.0.1.1:2380@z1,b=127.0.2.1:2380@z2,c=127.0.3.1:2380@z3", NULL                    \
    }

/* The process's scratch store, opened on first use in a fresh directory under $TMPDIR (no sync
 * per commit), removed at exit. Aborts when it cannot be opened: nothing could be tested. */
struct keel_store *fz_store(void);

/* Throw the scratch store away and start an empty one: keeps a long run's state, and the disk
 * it takes, bounded. */
void fz_store_wipe(void);

#endif
