/*
 * fuzz_ctl_txn: `keelctl txn` reading a transaction from its input, etcdctl style
 * (ctl_txn_read in client/ctl_parse.h: compare lines, a blank line, success op lines, a blank
 * line, failure op lines), through a memory stream as keelctl reads stdin.
 *
 * Input: byte 0's low bit says interactive (prompts written to /dev/null), the rest is what
 * keelctl would read.
 *
 * Checked, besides crashes, leaks and undefined behaviour: a failure writes a reason; a txn read
 * packs as the TxnRequest keelctl sends, every compare has a key and a target, and every op a
 * request.
 */
#include <string.h>

#include "arena.h"
#include "ctl_parse.h"
#include "fuzz.h"
#include "keel.pb-c.h"

static struct keel_arena arena;
static FILE *prompts;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_arena_init(&arena, 0);
    prompts = fopen("/dev/null", "w");
    FZ_CHECK(prompts != NULL);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    bool interactive = fz_u8(&in) & 1;
    if (in.n == 0)
        return 0;
    /* fmemopen reads the buffer in place: a private copy, since the input is read-only. */
    char *copy = malloc(in.n);
    FZ_CHECK(copy != NULL);
    memcpy(copy, in.p, in.n);
    FILE *f = fmemopen(copy, in.n, "r");
    FZ_CHECK(f != NULL);
    Keel__TxnRequest txn = KEEL__TXN_REQUEST__INIT;
    char err[CTL_ERR_MAX] = "";
    int rv = ctl_txn_read(f, interactive, prompts, &arena, &txn, err);
    fclose(f);
    free(copy);
    if (rv != 0) {
        FZ_CHECK(rv == -1 && err[0] != '\0' && strlen(err) < CTL_ERR_MAX);
    } else {
        for (size_t i = 0; i < txn.n_compare; i++)
            FZ_CHECK(txn.compare[i]->target_union_case != KEEL__COMPARE__TARGET_UNION__NOT_SET);
        for (size_t i = 0; i < txn.n_success; i++)
            FZ_CHECK(txn.success[i]->request_case != KEEL__REQUEST_OP__REQUEST__NOT_SET);
        for (size_t i = 0; i < txn.n_failure; i++)
            FZ_CHECK(txn.failure[i]->request_case != KEEL__REQUEST_OP__REQUEST__NOT_SET);
        fz_packs(&txn.base);
    }
    keel_arena_reset(&arena);
    return 0;
}
