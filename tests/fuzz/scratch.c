/* The fuzz targets' scratch store (see fuzz.h). */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static char dir[4096];
static char path[4200];
static struct keel_store *store;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void remove_dir(void)
{
    if (store != NULL)
        keel_store_close(store);
    store = NULL;
    if (dir[0] != '\0')
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    dir[0] = '\0';
}

struct keel_store *fz_store(void)
{
    if (store != NULL)
        return store;
    if (dir[0] == '\0') {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/keel-fuzz-XXXXXX", base && base[0] ? base : "/tmp");
        if (mkdtemp(dir) == NULL) {
            perror("fuzz: mkdtemp");
            abort();
        }
        snprintf(path, sizeof(path), "%s/state", dir);
        atexit(remove_dir);
    }
    /* The quota only sizes the map (LMDB maps at least 1 GiB of address space; the file grows
     * with use, which fz_store_wipe bounds). */
    struct keel_store_options o = {.path = path, .quota_bytes = 64u << 20, .no_sync = 1};
    int rv = keel_store_open(&o, &store);
    if (rv != 0) {
        fprintf(stderr, "fuzz: keel_store_open(%s): %s\n", path, keel_strerror(rv));
        abort();
    }
    return store;
}

void fz_store_wipe(void)
{
    if (store != NULL)
        keel_store_close(store);
    store = NULL;
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
