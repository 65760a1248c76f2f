/* One scrape of a Prometheus text endpoint (see scrape.h). */
#include "scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_BODY (8u << 20)

static int fail(char *err, size_t len, const char *what, const char *url)
{
    snprintf(err, len, "%s (%s)", what, url);
    return -1;
}

static int add(struct scrape *s, const char *name, size_t nlen, double v)
{
    char **names = realloc(s->names, (s->n + 1) * sizeof(*names));
    if (names == NULL)
        return -1;
    s->names = names;
    double *values = realloc(s->values, (s->n + 1) * sizeof(*values));
    if (values == NULL)
        return -1;
    s->values = values;
    char *copy = strndup(name, nlen);
    if (copy == NULL)
        return -1;
    s->names[s->n] = copy;
    s->values[s->n] = v;
    s->n++;
    return 0;
}

int scrape_get(const char *url, struct scrape *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char host[64], path[256] = "/metrics";
    int port = 0;
    if (strncmp(url, "http://", 7) != 0 ||
        sscanf(url + 7, "%63[0-9.]:%d%255s", host, &port, path) < 2 || port <= 0 || port > 65535)
        return fail(err, errlen, "--metrics wants http://a.b.c.d:port[/path]", url);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return fail(err, errlen, "not an IPv4 address", url);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return fail(err, errlen, "socket failed", url);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return fail(err, errlen, "cannot connect", url);
    }
    char req[512];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
                 path, host, port);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return fail(err, errlen, "cannot send the request", url);
    }
    char *buf = malloc(MAX_BODY + 1);
    size_t got = 0;
    ssize_t r;
    while (buf != NULL && got < MAX_BODY && (r = read(fd, buf + got, MAX_BODY - got)) > 0)
        got += (size_t)r;
    close(fd);
    if (buf == NULL)
        return fail(err, errlen, "out of memory", url);
    buf[got] = '\0';
    int status = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || status != 200 || body == NULL) {
        free(buf);
        return fail(err, errlen, "no 200 answer", url);
    }
    int rv = 0;
    for (char *line = body + 4, *next; line != NULL && *line != '\0' && rv == 0; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (line[0] == '#' || line[0] == '\0')
            continue;
        char *sp = strrchr(line, ' ');
        char *end = NULL;
        double v = sp ? strtod(sp + 1, &end) : 0;
        if (sp == NULL || end == sp + 1 || *end != '\0')
            continue; /* not a sample this parser knows: left out */
        rv = add(out, line, (size_t)(sp - line), v);
    }
    free(buf);
    if (rv != 0) {
        scrape_free(out);
        return fail(err, errlen, "out of memory", url);
    }
    return 0;
}

void scrape_free(struct scrape *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->names[i]);
    free(s->names);
    free(s->values);
    memset(s, 0, sizeof(*s));
}

double scrape_value(const struct scrape *s, const char *name, int *found)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->names[i], name) == 0) {
            *found = 1;
            return s->values[i];
        }
    }
    *found = 0;
    return 0;
}
