/*
 * "HOST:PORT", the one form of every address keel takes from a user: members' peer and client
 * addresses, --listen-*, member add/update peer URLs, libkeel's endpoints. Shared by the server
 * and the client so that both accept and refuse the same text with the same words.
 *
 * HOST is an IPv4 literal (a.b.c.d, as inet_pton takes it) or a DNS name in RFC 1123 syntax:
 * dot-separated labels of letters, digits and hyphens, each 1-63 bytes, none beginning or ending
 * with a hyphen, at most 253 bytes in all (and within the caller's buffer), one trailing dot
 * allowed (a fully qualified name), and not all digits and dots (that is a malformed IPv4
 * address, not a name). PORT is 1-65535 in decimal. IPv6 is
 * not supported: a host with a colon or in brackets is refused as such.
 *
 * Syntax only: nothing here resolves a name (the caller does, off its loop) or allocates.
 */
#ifndef KEEL_HOSTPORT_H
#define KEEL_HOSTPORT_H

#include <stddef.h>

enum keel_host_kind {
    KEEL_HOST_IPV4 = 1, /* an IPv4 literal: dial it as it is */
    KEEL_HOST_NAME = 2, /* a DNS name: resolve it at each dial */
};

/*
 * Split the len bytes at addr (no NUL needed) into host (hostlen bytes, NUL-terminated) and port.
 * Returns KEEL_HOST_IPV4 or KEEL_HOST_NAME; or -1 with why (whylen bytes; may be NULL) saying what
 * is wrong, without repeating the address, so the caller can name its flag and value first.
 * host and port are unspecified on failure.
 */
int keel_hostport_split(const char *addr, size_t len, char *host, size_t hostlen, int *port,
                        char *why, size_t whylen);

/* Whether host (NUL-terminated) is a name in the syntax above: 0, or -1 with why. */
int keel_hostname_check(const char *host, char *why, size_t whylen);

#endif
