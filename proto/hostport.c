/* HOST:PORT syntax (see hostport.h). */
#include "hostport.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define NAME_MAX_BYTES  253 /* RFC 1035's limit on a name's text form */
#define LABEL_MAX_BYTES 63

static int refuse(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(char *why, size_t whylen, const char *fmt, ...)
{
    if (why != NULL && whylen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

int keel_hostname_check(const char *host, char *why, size_t whylen)
{
    size_t n = strlen(host);
    if (n > 1 && host[n - 1] == '.')
        n--; /* a fully qualified name ("keel-0.keel.svc.cluster.local."): no search domains */
    if (n == 0)
        return refuse(why, whylen, "the host is empty");
    if (n > NAME_MAX_BYTES)
        return refuse(why, whylen, "the host name is longer than %d bytes", NAME_MAX_BYTES);
    if (strspn(host, "0123456789.") >= n)
        return refuse(why, whylen, "'%s' is neither an IPv4 address (a.b.c.d) nor a host name",
                      host);
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char ch = i < n ? host[i] : '\0';
        if (ch == '.' || ch == '\0') {
            if (label == 0)
                return refuse(why, whylen, "host name '%s' has an empty label", host);
            if (host[i - 1] == '-')
                return refuse(why, whylen, "a label of host name '%s' ends with '-'", host);
            label = 0;
            continue;
        }
        if (ch == '-' && label == 0)
            return refuse(why, whylen, "a label of host name '%s' begins with '-'", host);
        if (ch != '-' && !is_alnum(ch))
            return refuse(why, whylen,
                          "host name '%s' has the character '%c' (letters, digits, '-' and '.' "
                          "only)",
                          host, ch);
        if (++label > LABEL_MAX_BYTES)
            return refuse(why, whylen, "a label of host name '%s' is longer than %d bytes", host,
                          LABEL_MAX_BYTES);
    }
    return 0;
}

int keel_hostport_split(const char *addr, size_t len, char *host, size_t hostlen, int *port,
                        char *why, size_t whylen)
{
    if (len == 0)
        return refuse(why, whylen, "the address is empty");
    if (memchr(addr, '[', len) != NULL)
        return refuse(why, whylen,
                      "IPv6 addresses are not supported (want HOST:PORT, HOST an "
                      "IPv4 address or a host name)");
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++) {
        if (addr[i] != ':')
            continue;
        if (colon != NULL)
            return refuse(why, whylen,
                          "IPv6 addresses are not supported (want HOST:PORT, HOST "
                          "an IPv4 address or a host name)");
        colon = addr + i;
    }
    if (colon == NULL)
        return refuse(why, whylen, "no port (want HOST:PORT)");
    size_t hlen = (size_t)(colon - addr), plen = len - hlen - 1;
    if (hlen == 0)
        return refuse(why, whylen, "no host before the port (want HOST:PORT)");
    if (hlen >= hostlen)
        return refuse(why, whylen, "the host is longer than %zu bytes", hostlen - 1);
    unsigned long p = 0;
    for (size_t i = 0; i < plen; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9' || p > 65535)
            return refuse(why, whylen, "the port is not a number in 1-65535");
        p = p * 10 + (unsigned long)(colon[1 + i] - '0');
    }
    if (plen == 0 || p == 0 || p > 65535)
        return refuse(why, whylen, "the port is not a number in 1-65535");
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    if (memchr(host, '\0', hlen) != NULL)
        return refuse(why, whylen, "the host has a NUL byte");
    *port = (int)p;
    struct in_addr in;
    if (inet_pton(AF_INET, host, &in) == 1)
        return KEEL_HOST_IPV4;
    return keel_hostname_check(host, why, whylen) == 0 ? KEEL_HOST_NAME : -1;
}
