/*
 * keelctl's snapshot file: the member's copy of its store (a compacted LMDB file, byte for byte
 * as keel_snapshot delivers it), then a trailer of SNAPFILE_TRAILER bytes:
 *
 *   "KEELSNP1" | copy length, u64 little-endian | SHA-256 of the copy (32 bytes)
 *
 * The copy comes first so that LMDB opens the file as it is (the trailer lies past its last
 * page); the trailer comes last so that a file cut short loses it and is told apart from a whole
 * one. A save writes FILE.part and renames it to FILE only once complete and synced.
 */
#ifndef KEEL_SNAPFILE_H
#define KEEL_SNAPFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SNAPFILE_TRAILER 48
#define SNAPFILE_ERR_MAX 512

struct snapfile_writer;

/* Start writing path (through path.part, created or truncated). 0 or -1 with a message. */
int snapfile_create(const char *path, struct snapfile_writer **out, char err[SNAPFILE_ERR_MAX]);

/* Append the next piece of the copy. 0 or -1 with a message. */
int snapfile_write(struct snapfile_writer *w, const void *p, size_t n, char err[SNAPFILE_ERR_MAX]);

/* Write the trailer, sync, rename path.part to path, sync the directory, free w (also on
 * failure, removing path.part). sha256 (may be NULL) gets the copy's digest. 0 or -1. */
int snapfile_finish(struct snapfile_writer *w, uint8_t sha256[32], char err[SNAPFILE_ERR_MAX]);

/* Remove path.part and free w. */
void snapfile_abort(struct snapfile_writer *w);

/* What a file holds, checked. */
struct snapfile_info {
    uint64_t file_size;
    uint64_t copy_len;  /* bytes of the copy: the file without its trailer */
    uint8_t sha256[32]; /* of the copy, as the trailer records it and as computed */
    bool has_trailer;   /* false only with allow_raw, for a bare copy */
};

/*
 * Check path: a trailer, a copy of the length it gives, and the digest it gives. allow_raw
 * accepts a file without a trailer as a bare copy (a data.mdb taken from a data dir, etcdctl's
 * --skip-hash-check): nothing is verified then. 0, or -1 with a message naming what is wrong
 * (missing, truncated, altered).
 */
int snapfile_check(const char *path, bool allow_raw, struct snapfile_info *info,
                   char err[SNAPFILE_ERR_MAX]);

/* Copy the first len bytes of path (the copy) to a new file at out_path, synced. 0 or -1. */
int snapfile_extract(const char *path, uint64_t len, const char *out_path,
                     char err[SNAPFILE_ERR_MAX]);

#endif
