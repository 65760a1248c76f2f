/*
 * keeld's --config-file: a YAML mapping of setting names to values, read into (key, value, line)
 * entries. This module knows YAML, not the settings: config.c checks every key and value, as it
 * checks flags.
 */
#ifndef KEEL_CONFIGFILE_H
#define KEEL_CONFIGFILE_H

#include <stdbool.h>
#include <stddef.h>

struct keel_configfile_entry {
    char *key;
    char *value;   /* a scalar as written; a sequence's scalars joined with ',' */
    bool sequence; /* the value was a YAML sequence */
    unsigned line; /* 1-based, where the key is */
};

struct keel_configfile {
    struct keel_configfile_entry *entries; /* in file order, each key once */
    size_t n;
};

/*
 * Read PATH into f (which this initialises). The file holds one YAML mapping (or nothing) whose
 * values are scalars or sequences of scalars. 0, or -1 with a message in err naming the line
 * and column (libyaml's, 1-based) of what was wrong: an unreadable file, malformed YAML, a
 * nested mapping, an alias, a key given twice. keel_configfile_close releases f in every case.
 */
int keel_configfile_read(struct keel_configfile *f, const char *path, char *err, size_t errlen);

void keel_configfile_close(struct keel_configfile *f);

#endif
