/*
 * etcd 3.4's JSON gateway (grpc-gateway v1) over HTTP/1.1, on the gateway's one port.
 *
 * Routes: POST /v3/<path> (and /v3beta/, /v3alpha/ as aliases; /v3/kv/lease/{revoke,timetolive,
 * leases} as etcd's extra bindings of /v3/lease/...) runs the method gw_method_by_json_path finds
 * with the body decoded by pbjson; GET /version and GET /health are answered here. What answers
 * what, as etcd 3.4's grpc-gateway does:
 *   - unknown /v3/ path: 404 "Not Found"; a known path with another HTTP method: 405;
 *     a path etcd serves that no handler table has (yet): 501 and a JSON Unimplemented error;
 *   - unary: 200 and the response's JSON, or the HTTP status of the gRPC code with
 *     {"error":m,"message":m,"code":n};
 *   - streams (watch, lease/keepalive): the body is concatenated JSON objects, each handed to the
 *     handler as soon as it is complete, the end of the body is the half-close; the answer is 200,
 *     chunked, one `{"result":<msg>}\n` per chunk (python3-etcd3gw json.loads every chunk), and an
 *     error as {"error":{"grpc_code":n,"http_code":n,"message":m,"http_status":"..."}}. A stream
 *     stays open until its handler finishes (watch: until the client disconnects).
 *
 * One request at a time per connection: pipelined requests wait, unparsed, until the response
 * before them is complete (HTTP/1.1 answers in order), then parsing resumes from a uv_idle turn,
 * never from inside a handler's gw_call_finish. A malformed request gets 400 and the connection
 * closes.
 *
 * Memory per connection, bounded: the state (~9 KiB with the URL, MAX_URL), a unary body or
 * one streamed object (at most body_limit() = 2 x max_request_bytes + 64 KiB: base64 makes JSON
 * bigger than the message; a body past it is 413), input read while a response is pending
 * (reading the socket pauses past IN_PAUSE, so about IN_PAUSE + one read), and output: a unary
 * call holds one message's JSON until it finishes; what is handed to gw_conn_write counts in
 * write_pending, past OUT_PAUSE input waits for on_drain (the next pipelined request, or the
 * next object of a streamed body), and a streaming handler bounds what it sends unasked (watch
 * events) through gw_call_pending. Default bounds: 3.1 MiB of body,
 * 64 KiB + 64 KiB of input, 1 MiB of output before pausing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <http_parser.h>
#include <keel/keel.h>

#include "conn.h"
#include "gwmetrics.h"
#include "log.h"
#include "pbjson.h"

#define MAX_URL     8192
#define MAX_HEADERS (80 * 1024) /* http-parser's own header bound (HTTP_MAX_HEADER_SIZE) */
/* Pipelined input past this, held while a response is pending, pauses reading the socket. */
#define IN_PAUSE (64 * 1024)
/* Output not yet taken by the client past this: the next pipelined request waits (on_drain). */
#define OUT_PAUSE (1024 * 1024)

#define ETCD_VERSION_BODY "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}"

enum route {
    R_NONE,
    R_CALL,     /* a method with a handler */
    R_VERSION,  /* GET /version */
    R_HEALTH,   /* GET /health */
    R_NOTFOUND, /* answered once the body is read */
    R_V3_NOTFOUND,
    R_NOTALLOWED,
    R_UNIMPL,
};

struct h1_call;

struct h1_conn {
    struct gw_conn *conn;
    http_parser parser;
    uv_idle_t resume; /* parses buffered input after a response completes */
    bool resume_armed;

    /* The request being parsed. */
    char url[MAX_URL + 1];
    size_t url_len;
    bool url_too_long;
    enum route route;
    const struct gw_method *method;
    bool is_stream;
    struct gw_jbuf body; /* unary body */
    bool body_too_large;
    json_tokener *tok;      /* streams: the object being read */
    size_t obj_bytes;       /* bytes of it fed to tok */
    struct gw_jscan scan;   /* its containers, counted before json-c builds them */
    bool stream_input_done; /* a bad object ended the stream's input early */
    size_t n_objects;

    /* The response. */
    struct h1_call *call;  /* the call being served, NULL when none */
    struct health *health; /* the /health check in flight, NULL when none */
    bool responding;       /* a request was read whole and its response is not complete */
    bool keep_alive;       /* of the request being answered */
    bool in_execute;       /* inside http_parser_execute: never re-enter it */
    bool close_when_done;  /* on_shutdown, or the request asked Connection: close */
    bool dead;             /* nothing more is written: closing, or a write failed */
    bool closed;           /* gw_conn_close called */
    bool eof;              /* the client closed its side: close once nothing is left to do */
    bool expect_continue;  /* the request has "Expect: 100-continue" */
    char hname[16];        /* the header being read, lowercased, when short enough */
    size_t hname_len;
    bool in_value;  /* the last header callback was a value's */
    char host[128]; /* the Host header (truncated), the calls' authority */
    /* The Authorization header: the raw token, as etcd's JSON gateway takes it (longer than
     * GW_TOKEN_MAX: GW_TOKEN_INVALID). */
    char token[GW_TOKEN_MAX + 1];
    bool token_long;

    /* Input read while a response is pending (pipelined requests). */
    char *in;
    size_t in_len, in_cap;
    bool read_paused; /* gw_conn_read_pause(true) in force */
};

struct h1_call {
    struct gw_call call; /* first: handlers see &call */
    struct h1_conn *h;   /* NULL once the request or connection is gone */
    bool finished;       /* the handler called finish */
    bool stream;
    bool headers_sent;   /* streams: the chunked 200 is out */
    bool have_msg;       /* unary: `resp` holds the answer */
    struct gw_jbuf resp; /* unary: the JSON of the response message */
    bool half_closed;    /* on_half_close delivered */
    char authority[128]; /* the request's Host: call.authority points here */
    char *token;         /* its Authorization header (malloc'd), call.token points here */
};

/* etcd 3.4 sends /health as text/plain (http.ResponseWriter's sniffing). */
#define HEALTH_CTYPE "text/plain; charset=utf-8"

struct health {
    struct h1_conn *h; /* NULL once the connection is gone */
};

static size_t body_limit(const struct h1_conn *h)
{
    return 2 * h->conn->ctx->max_request_bytes + 64 * 1024;
}

/* ------------------------------------------------------------------------------------------ */
/* Responses */

static const char *status_text(int st)
{
    switch (st) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Request Entity Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Internal Server Error";
    }
}

/* grpc-gateway v1's HTTPStatusFromCode. */
static int http_status(enum gw_code code)
{
    switch (code) {
    case GW_OK:
        return 200;
    case GW_CANCELLED:
        return 408;
    case GW_INVALID_ARGUMENT:
    case GW_OUT_OF_RANGE:
        return 400;
    case GW_DEADLINE_EXCEEDED:
        return 504;
    case GW_NOT_FOUND:
        return 404;
    case GW_ALREADY_EXISTS:
    case GW_ABORTED:
        return 409;
    case GW_PERMISSION_DENIED:
        return 403;
    case GW_UNAUTHENTICATED:
        return 401;
    case GW_RESOURCE_EXHAUSTED:
        return 429;
    case GW_FAILED_PRECONDITION:
        return 412;
    case GW_UNIMPLEMENTED:
        return 501;
    case GW_UNAVAILABLE:
        return 503;
    default:
        return 500; /* Unknown, Internal, DataLoss */
    }
}

static void write_bytes(struct h1_conn *h, const void *p, size_t n)
{
    if (!h->dead && n > 0 && gw_conn_write(h->conn, p, n) != 0)
        h->dead = true; /* listen.c is closing the connection */
}

/* The status line and headers; body_len < 0: chunked. */
static void write_head(struct h1_conn *h, int st, const char *ctype, long body_len)
{
    char date[64], head[512];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    char len[48];
    if (body_len >= 0)
        snprintf(len, sizeof(len), "Content-Length: %ld\r\n", body_len);
    else
        snprintf(len, sizeof(len), "Transfer-Encoding: chunked\r\n");
    int n =
        snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nDate: %s\r\n%s%s\r\n",
                 st, status_text(st), ctype, date, len,
                 h->keep_alive && !h->close_when_done ? "" : "Connection: close\r\n");
    write_bytes(h, head, (size_t)n);
}

static void write_simple(struct h1_conn *h, int st, const char *ctype, const char *body, size_t len)
{
    write_head(h, st, ctype, (long)len);
    write_bytes(h, body, len);
}

/* Go's http.Error: text/plain, the text and a newline. */
static void write_text_error(struct h1_conn *h, int st, const char *text)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "%s\n", text);
    write_simple(h, st, "text/plain; charset=utf-8", body, (size_t)n);
}

/* grpc-gateway's unary error: {"error":m,"message":m,"code":n} with the code's HTTP status. */
static void write_json_error(struct h1_conn *h, enum gw_code code, const char *msg)
{
    struct gw_jbuf b = {0};
    msg = msg ? msg : "";
    gw_jbuf_puts(&b, "{");
    if (*msg) {
        gw_jbuf_puts(&b, "\"error\":");
        gw_jbuf_put_jstring(&b, msg, strlen(msg));
        gw_jbuf_puts(&b, ",\"message\":");
        gw_jbuf_put_jstring(&b, msg, strlen(msg));
        gw_jbuf_puts(&b, ",");
    }
    char num[32];
    snprintf(num, sizeof(num), "\"code\":%d}", (int)code);
    gw_jbuf_puts(&b, num);
    if (!b.failed)
        write_simple(h, http_status(code), "application/json", b.p, b.len);
    else
        h->dead = true;
    gw_jbuf_free(&b);
}

/* A body whose JSON alone passes body_limit(): 413, with etcd's message in grpc-gateway's error
 * body (a message that decodes above max_request_bytes is etcd's own 400 instead). */
static void write_too_large(struct h1_conn *h)
{
    static const char body[] = "{\"error\":\"etcdserver: request is too large\",\"message\":"
                               "\"etcdserver: request is too large\",\"code\":8}";
    write_simple(h, 413, "application/json", body, sizeof(body) - 1);
}

static void write_chunk(struct h1_conn *h, const char *p, size_t n)
{
    char size[24];
    int k = snprintf(size, sizeof(size), "%zx\r\n", n);
    /* One gw_conn_write per chunk keeps a chunk in one piece on the wire as far as we can. */
    struct gw_jbuf b = {0};
    gw_jbuf_put(&b, size, (size_t)k);
    gw_jbuf_put(&b, p, n);
    gw_jbuf_put(&b, "\r\n", 2);
    if (b.failed)
        h->dead = true;
    else
        write_bytes(h, b.p, b.len);
    gw_jbuf_free(&b);
}

/* ------------------------------------------------------------------------------------------ */
/* Request completion and resumption */

static void feed(struct h1_conn *h, const char *buf, size_t n);

static void close_conn(struct h1_conn *h)
{
    if (!h->closed) {
        h->closed = true;
        gw_conn_close(h->conn);
    }
    h->dead = true;
}

static void on_resume(uv_idle_t *idle)
{
    struct h1_conn *h = idle->data;
    uv_idle_stop(idle);
    h->resume_armed = false;
    if (h->dead || h->responding || h->conn->write_pending > OUT_PAUSE)
        return;
    if (h->in_len > 0) {
        /* feed may append to h->in again (what stays unparsed): take the buffer out first. */
        char *in = h->in;
        size_t n = h->in_len;
        h->in = NULL;
        h->in_len = h->in_cap = 0;
        feed(h, in, n);
        free(in);
    }
    if (h->dead)
        return;
    if (h->eof && !h->responding && h->in_len == 0) {
        close_conn(h);
        return;
    }
    if (h->read_paused && h->in_len < IN_PAUSE) {
        h->read_paused = false;
        gw_conn_read_pause(h->conn, false);
    }
}

/* Parse what waits (and read again) from the loop, not from inside a handler's call. */
static void arm_resume(struct h1_conn *h)
{
    if (!h->resume_armed && !h->dead && (h->in_len > 0 || h->read_paused)) {
        h->resume_armed = true;
        uv_idle_start(&h->resume, on_resume);
    }
}

/* The response to the current request is complete: close, or go on with pipelined input. */
static void response_done(struct h1_conn *h)
{
    h->responding = false;
    h->call = NULL;
    if (!h->keep_alive || h->close_when_done || (h->eof && h->in_len == 0 && !h->in_execute)) {
        close_conn(h);
        return;
    }
    if (h->dead)
        return;
    http_parser_pause(&h->parser, 0);
    arm_resume(h);
}

/* ------------------------------------------------------------------------------------------ */
/* gw_call for the JSON transport */

static void call_free(struct h1_call *c)
{
    gw_metrics_end(&c->call, GW_CANCELLED); /* nothing when it finished already */
    gw_jbuf_free(&c->resp);
    free(c->token);
    free(c);
}

static int call_send(struct gw_call *gc, const ProtobufCMessage *msg)
{
    struct h1_call *c = (struct h1_call *)gc;
    struct h1_conn *h = c->h;
    if (!h || c->finished || h->dead)
        return -1;
    if (!c->stream) {
        /* Unary: keep the last message; it goes out with finish's status. */
        c->resp.len = 0;
        c->have_msg = gw_pbjson_write(&c->resp, msg) == 0;
        return c->have_msg ? 0 : -1;
    }
    struct gw_jbuf b = {0};
    gw_jbuf_puts(&b, "{\"result\":");
    gw_pbjson_write(&b, msg);
    gw_jbuf_puts(&b, "}\n");
    if (b.failed) {
        gw_jbuf_free(&b);
        return -1;
    }
    if (!c->headers_sent) {
        write_head(h, 200, "application/json", -1);
        c->headers_sent = true;
    }
    write_chunk(h, b.p, b.len);
    gw_jbuf_free(&b);
    return h->dead ? -1 : 0;
}

static void call_finish(struct gw_call *gc, enum gw_code code, const char *message)
{
    struct h1_call *c = (struct h1_call *)gc;
    struct h1_conn *h = c->h;
    c->finished = true;
    gw_metrics_end(gc, code);
    if (!h) { /* the connection went first: the call waited only for this */
        call_free(c);
        return;
    }
    c->h = NULL;
    if (!c->stream) {
        if (code == GW_OK && c->have_msg)
            write_simple(h, 200, "application/json", c->resp.p, c->resp.len);
        else if (code == GW_OK)
            write_simple(h, 200, "application/json", "{}", 2);
        else
            write_json_error(h, code, message);
    } else {
        if (code != GW_OK) {
            int st = http_status(code);
            const char *m = message ? message : "";
            struct gw_jbuf b = {0};
            char num[96];
            snprintf(num, sizeof(num), "{\"error\":{\"grpc_code\":%d,\"http_code\":%d,", (int)code,
                     st);
            gw_jbuf_puts(&b, num);
            if (*m) {
                gw_jbuf_puts(&b, "\"message\":");
                gw_jbuf_put_jstring(&b, m, strlen(m));
                gw_jbuf_puts(&b, ",");
            }
            gw_jbuf_puts(&b, "\"http_status\":");
            gw_jbuf_put_jstring(&b, status_text(st), strlen(status_text(st)));
            gw_jbuf_puts(&b, "}}");
            if (!c->headers_sent) {
                write_head(h, st, "application/json", -1);
                c->headers_sent = true;
            }
            if (!b.failed)
                write_chunk(h, b.p, b.len);
            gw_jbuf_free(&b);
        } else if (!c->headers_sent) {
            write_head(h, 200, "application/json", -1);
        }
        write_bytes(h, "0\r\n\r\n", 5);
    }
    bool body_read = h->responding;
    call_free(c);
    h->call = NULL;
    if (body_read) {
        response_done(h);
    } else {
        /* A stream that ended before its request body did: the rest of the body cannot be
         * told from the next request without reading it, and nobody wants it. */
        h->keep_alive = false;
        close_conn(h);
    }
}

static size_t call_pending(const struct gw_call *gc)
{
    const struct h1_call *c = (const struct h1_call *)gc;
    return c->h ? c->h->conn->write_pending : 0;
}

static const struct gw_call_ops h1_ops = {call_send, call_finish, call_pending};

static struct h1_call *call_new(struct h1_conn *h)
{
    struct h1_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->h = h;
    c->stream = h->is_stream;
    c->call.ops = &h1_ops;
    c->call.method = h->method;
    c->call.ctx = h->conn->ctx;
    c->call.json = true;
    snprintf(c->authority, sizeof(c->authority), "%s", h->host);
    c->call.authority = c->authority;
    if (h->token[0] != '\0' || h->token_long) {
        if (!(c->token = strdup(h->token_long ? GW_TOKEN_INVALID : h->token))) {
            free(c);
            return NULL;
        }
    }
    c->call.token = c->token ? c->token : "";
    gw_metrics_begin(&c->call);
    h->call = c;
    return c;
}

/* The client or the gateway is going away: the handler hears on_cancel once and finishes. */
static void cancel_call(struct h1_conn *h)
{
    struct h1_call *c = h->call;
    if (!c)
        return;
    h->call = NULL;
    c->h = NULL;
    const struct gw_method *m = c->call.method;
    if (m->on_cancel)
        m->on_cancel(&c->call); /* may finish, and so free c, at once */
}

/* ------------------------------------------------------------------------------------------ */
/* /health: a linearizable read through keel */

static void on_health(int status, const Keel__Response *resp, void *data)
{
    (void)resp;
    struct health *hc = data;
    struct h1_conn *h = hc->h;
    free(hc);
    if (!h)
        return;
    h->health = NULL;
    /* With auth enabled the gateway's own read carries no token: a member refusing it has
     * answered all the same (etcd 3.5's /health counts permission denied as healthy too). */
    if (status == KEEL_EUNAUTHENTICATED || status == KEEL_EPERMDENIED)
        status = 0;
    if (status == 0)
        write_simple(h, 200, HEALTH_CTYPE, "{\"health\":\"true\"}", 17);
    else
        write_simple(h, 503, HEALTH_CTYPE, "{\"health\":\"false\"}", 18);
    response_done(h);
}

static void start_health(struct h1_conn *h)
{
    struct health *hc = calloc(1, sizeof(*hc));
    Keel__RangeRequest rr = KEEL__RANGE_REQUEST__INIT;
    rr.key.data = (uint8_t *)"health";
    rr.key.len = 6;
    Keel__Request req = KEEL__REQUEST__INIT;
    req.body_case = KEEL__REQUEST__BODY_RANGE;
    req.range = &rr;
    if (!hc || keel_aclient_request(h->conn->ctx->ac, &req, 0, on_health, hc) != 0) {
        free(hc);
        write_simple(h, 503, HEALTH_CTYPE, "{\"health\":\"false\"}", 18);
        response_done(h);
        return;
    }
    hc->h = h;
    h->health = hc;
}

/* ------------------------------------------------------------------------------------------ */
/* Routing */

/* Paths etcd 3.4 serves under /v3/ (rpc.proto's google.api.http bindings): a method of these
 * that no handler table holds answers 501, any other path 404. */
static const char *const etcd_paths[] = {
    "kv/range",
    "kv/put",
    "kv/deleterange",
    "kv/txn",
    "kv/compaction",
    "watch",
    "lease/grant",
    "lease/revoke",
    "lease/keepalive",
    "lease/timetolive",
    "lease/leases",
    "cluster/member/add",
    "cluster/member/remove",
    "cluster/member/update",
    "cluster/member/list",
    "cluster/member/promote",
    "maintenance/alarm",
    "maintenance/status",
    "maintenance/defragment",
    "maintenance/hash",
    "maintenance/snapshot",
    "maintenance/transfer-leadership",
    "auth/enable",
    "auth/disable",
    "auth/authenticate",
    "auth/user/add",
    "auth/user/get",
    "auth/user/list",
    "auth/user/delete",
    "auth/user/changepw",
    "auth/user/grant",
    "auth/user/revoke",
    "auth/role/add",
    "auth/role/get",
    "auth/role/list",
    "auth/role/delete",
    "auth/role/grant",
    "auth/role/revoke",
};

static bool has_prefix(const char *s, size_t n, const char *p, size_t *plen)
{
    *plen = strlen(p);
    return n >= *plen && memcmp(s, p, *plen) == 0;
}

static void route_request(struct h1_conn *h)
{
    size_t n = strcspn(h->url, "?#");
    const char *path = h->url;
    bool post = h->parser.method == HTTP_POST, get = h->parser.method == HTTP_GET;
    size_t pl;
    h->route = R_NOTFOUND;
    if (n == 8 && memcmp(path, "/version", 8) == 0) {
        h->route = get ? R_VERSION : R_NOTALLOWED;
        return;
    }
    if (n == 7 && memcmp(path, "/health", 7) == 0) {
        h->route = get ? R_HEALTH : R_NOTALLOWED;
        return;
    }
    if (!has_prefix(path, n, "/v3/", &pl) && !has_prefix(path, n, "/v3beta/", &pl) &&
        !has_prefix(path, n, "/v3alpha/", &pl))
        return;
    const char *p = path + pl;
    size_t len = n - pl;
    /* etcd's additional bindings of three Lease RPCs. */
    static const char *const kv_lease[] = {"kv/lease/revoke", "kv/lease/timetolive",
                                           "kv/lease/leases"};
    for (size_t i = 0; i < 3; i++)
        if (len == strlen(kv_lease[i]) && memcmp(p, kv_lease[i], len) == 0) {
            p += 3;
            len -= 3;
            break;
        }
    h->route = R_V3_NOTFOUND;
    bool known = false;
    for (size_t i = 0; i < sizeof(etcd_paths) / sizeof(etcd_paths[0]); i++)
        if (strlen(etcd_paths[i]) == len && memcmp(etcd_paths[i], p, len) == 0)
            known = true;
    h->method = gw_method_by_json_path(p, len);
    if (!known && !h->method)
        return;
    if (!post) {
        h->route = R_NOTALLOWED;
        return;
    }
    if (!h->method) {
        h->route = R_UNIMPL;
        return;
    }
    h->route = R_CALL;
    h->is_stream = h->method->kind != GW_UNARY;
}

/* ------------------------------------------------------------------------------------------ */
/* Request bodies */

/* Unary: the whole body is read; decode it and run the handler. */
static void run_unary(struct h1_conn *h)
{
    char err[256];
    ProtobufCMessage *msg = gw_pbjson_decode_text(h->method->req, h->body.p ? h->body.p : "",
                                                  h->body.len, err, sizeof(err));
    gw_jbuf_free(&h->body);
    if (!msg) {
        write_json_error(h, GW_INVALID_ARGUMENT, err);
        response_done(h);
        return;
    }
    if (protobuf_c_message_get_packed_size(msg) > h->conn->ctx->max_request_bytes) {
        protobuf_c_message_free_unpacked(msg, NULL);
        write_json_error(h, GW_INVALID_ARGUMENT, "etcdserver: request is too large");
        response_done(h);
        return;
    }
    struct h1_call *c = call_new(h);
    if (!c) {
        protobuf_c_message_free_unpacked(msg, NULL);
        write_json_error(h, GW_RESOURCE_EXHAUSTED, "out of memory");
        response_done(h);
        return;
    }
    h->method->on_message(&c->call, msg);
}

/* Streams: one complete JSON object of the body. The first one that does not decode is an error
 * answer (grpc-gateway's), a later one ends the input as EOF would. */
static void stream_object(struct h1_conn *h, json_object *o)
{
    char err[256];
    ProtobufCMessage *msg = NULL;
    if (json_object_get_type(o) != json_type_object)
        snprintf(err, sizeof(err), "expected a JSON object");
    else
        msg = gw_pbjson_decode(h->method->req, o, err, sizeof(err));
    bool too_large = false;
    if (msg && protobuf_c_message_get_packed_size(msg) > h->conn->ctx->max_request_bytes) {
        protobuf_c_message_free_unpacked(msg, NULL);
        msg = NULL;
        too_large = true;
        snprintf(err, sizeof(err), "etcdserver: request is too large");
    }
    if (!msg) {
        h->stream_input_done = true;
        if (!h->call) {
            /* etcd answers a first object that does not decode with Unknown (500): its
             * decoder's error is no gRPC status. A later one ends the input, as EOF. */
            h->keep_alive = false; /* the rest of the body is unread */
            write_json_error(h, too_large ? GW_INVALID_ARGUMENT : GW_UNKNOWN, err);
            close_conn(h);
        }
        return;
    }
    if (!h->call && !call_new(h)) {
        protobuf_c_message_free_unpacked(msg, NULL);
        h->stream_input_done = true;
        h->keep_alive = false;
        write_json_error(h, GW_RESOURCE_EXHAUSTED, "out of memory");
        close_conn(h);
        return;
    }
    h->n_objects++;
    h->method->on_message(&h->call->call, msg);
}

static void stream_bytes(struct h1_conn *h, const char *p, size_t n)
{
    size_t limit = body_limit(h);
    while (n > 0 && !h->stream_input_done && !h->dead) {
        if (h->obj_bytes == 0) { /* between objects: skip whitespace */
            while (n > 0 && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
                p++, n--;
            if (n == 0)
                return;
        }
        if (!h->tok && !(h->tok = json_tokener_new_ex(64))) {
            h->stream_input_done = true;
            return;
        }
        size_t take = n;
        if (h->obj_bytes + take > limit)
            take = limit - h->obj_bytes + 1;
        /* Only this object's bytes go to json-c, and only once they are known to hold few
         * enough containers (pbjson.h says why). */
        take = gw_jscan_feed(&h->scan, p, take);
        if (gw_jscan_over(&h->scan)) {
            char err[96];
            snprintf(err, sizeof(err), "more than %d JSON objects and arrays in one request",
                     GW_PBJSON_MAX_CONTAINERS);
            h->stream_input_done = true;
            if (!h->call) {
                h->keep_alive = false;
                write_json_error(h, GW_INVALID_ARGUMENT, err);
                close_conn(h);
            }
            return;
        }
        json_object *o =
            json_tokener_parse_ex(h->tok, p, (int)(take > INT32_MAX ? INT32_MAX : take));
        enum json_tokener_error je = json_tokener_get_error(h->tok);
        if (!o && je == json_tokener_continue) {
            h->obj_bytes += take;
            p += take, n -= take;
            if (h->obj_bytes > limit) {
                h->stream_input_done = true;
                if (!h->call) {
                    h->keep_alive = false;
                    write_too_large(h);
                    close_conn(h);
                }
            }
            continue;
        }
        if (je != json_tokener_success) {
            char err[128];
            snprintf(err, sizeof(err), "%s", json_tokener_error_desc(je));
            h->stream_input_done = true;
            if (!h->call) {
                h->keep_alive = false;
                write_json_error(h, GW_UNKNOWN, err);
                close_conn(h);
            }
            return;
        }
        size_t used = json_tokener_get_parse_end(h->tok);
        json_tokener_reset(h->tok);
        h->obj_bytes = 0;
        h->scan = (struct gw_jscan){0};
        p += used, n -= used;
        stream_object(h, o);
        json_object_put(o);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* http-parser callbacks */

static int on_message_begin(http_parser *p)
{
    struct h1_conn *h = p->data;
    h->url_len = 0;
    h->url[0] = '\0';
    h->url_too_long = false;
    h->route = R_NONE;
    h->method = NULL;
    h->is_stream = false;
    gw_jbuf_free(&h->body);
    h->body_too_large = false;
    h->obj_bytes = 0;
    h->scan = (struct gw_jscan){0};
    h->stream_input_done = false;
    h->n_objects = 0;
    h->expect_continue = false;
    h->hname_len = 0;
    h->hname[0] = '\0';
    h->in_value = false;
    h->host[0] = '\0';
    h->token[0] = '\0';
    h->token_long = false;
    if (h->tok)
        json_tokener_reset(h->tok);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct h1_conn *h = p->data;
    if (h->url_len + n > MAX_URL) {
        h->url_too_long = true;
        return 0;
    }
    memcpy(h->url + h->url_len, at, n);
    h->url_len += n;
    h->url[h->url_len] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct h1_conn *h = p->data;
    if (h->in_value) { /* a new header begins */
        h->in_value = false;
        h->hname_len = 0;
        h->hname[0] = '\0';
    }
    if (h->hname_len == SIZE_MAX || h->hname_len + n >= sizeof(h->hname)) {
        h->hname_len = SIZE_MAX; /* too long to be one we read */
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        h->hname[h->hname_len++] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
    h->hname[h->hname_len] = '\0';
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct h1_conn *h = p->data;
    if (h->hname_len != SIZE_MAX && strcmp(h->hname, "expect") == 0 && n >= 12 &&
        strncasecmp(at, "100-continue", 12) == 0)
        h->expect_continue = true;
    h->in_value = true; /* the value may come in pieces: the name stays until the next field */
    if (h->hname_len != SIZE_MAX && strcmp(h->hname, "host") == 0) {
        size_t have = strlen(h->host), room = sizeof(h->host) - 1 - have;
        memcpy(h->host + have, at, n < room ? n : room);
        h->host[have + (n < room ? n : room)] = '\0';
    }
    if (h->hname_len != SIZE_MAX && strcmp(h->hname, "authorization") == 0) {
        size_t have = strlen(h->token);
        if (have + n > GW_TOKEN_MAX) {
            h->token_long = true;
        } else {
            memcpy(h->token + have, at, n);
            h->token[have + n] = '\0';
        }
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct h1_conn *h = p->data;
    h->keep_alive = http_should_keep_alive(p) != 0;
    if (h->url_too_long) {
        h->keep_alive = false;
        write_text_error(h, 414, "Request URI Too Long");
        close_conn(h);
        return -1; /* stop: feed sees the connection closing */
    }
    route_request(h);
    if (h->route == R_CALL && !h->is_stream && (p->flags & F_CONTENTLENGTH) &&
        p->content_length > body_limit(h)) {
        h->keep_alive = false; /* the body is not read */
        write_too_large(h);
        close_conn(h);
        return -1;
    }
    /* curl waits a second for this before sending a body over 1 KiB. */
    if (h->expect_continue && h->route == R_CALL)
        write_bytes(h, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct h1_conn *h = p->data;
    if (h->route != R_CALL) /* answered without reading it */
        return 0;
    if (h->is_stream) {
        stream_bytes(h, at, n);
        return h->dead ? -1 : 0;
    }
    if (h->body_too_large)
        return 0;
    if (h->body.len + n > body_limit(h)) {
        h->body_too_large = true;
        gw_jbuf_free(&h->body);
        return 0;
    }
    gw_jbuf_put(&h->body, at, n);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct h1_conn *h = p->data;
    if (h->dead)
        return -1;
    /* Nothing after this request is parsed until its response is complete. */
    http_parser_pause(p, 1);
    h->responding = true;
    switch (h->route) {
    case R_VERSION:
        write_simple(h, 200, "application/json", ETCD_VERSION_BODY, strlen(ETCD_VERSION_BODY));
        response_done(h);
        break;
    case R_HEALTH:
        start_health(h);
        break;
    case R_NOTFOUND:
        write_text_error(h, 404, "404 page not found");
        response_done(h);
        break;
    case R_V3_NOTFOUND:
        write_text_error(h, 404, "Not Found");
        response_done(h);
        break;
    case R_NOTALLOWED:
        write_text_error(h, 405, "Method Not Allowed");
        response_done(h);
        break;
    case R_UNIMPL:
        write_json_error(h, GW_UNIMPLEMENTED, "unknown method: keel-gateway does not serve it yet");
        response_done(h);
        break;
    case R_CALL:
        if (!h->is_stream) {
            if (h->body_too_large) {
                write_too_large(h);
                response_done(h);
            } else {
                run_unary(h);
            }
            break;
        }
        if (h->obj_bytes > 0 && !h->stream_input_done) {
            /* The body ended inside an object: as a decode error of that object. */
            h->stream_input_done = true;
            if (!h->call) {
                write_json_error(h, GW_UNKNOWN, "unexpected EOF");
                response_done(h);
                break;
            }
        }
        if (h->dead)
            break;
        if (!h->call && h->n_objects == 0) {
            /* An empty body: the stream with no request at all, then EOF. */
            if (!call_new(h)) {
                write_json_error(h, GW_RESOURCE_EXHAUSTED, "out of memory");
                response_done(h);
                break;
            }
        }
        if (h->call) {
            struct h1_call *c = h->call;
            c->half_closed = true;
            if (h->method->on_half_close)
                h->method->on_half_close(&c->call);
        }
        break;
    default:
        break;
    }
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ------------------------------------------------------------------------------------------ */
/* Connection */

static void keep_input(struct h1_conn *h, const char *buf, size_t n)
{
    if (n == 0)
        return;
    if (h->in_len + n > IN_PAUSE + MAX_HEADERS + body_limit(h)) { /* paused: cannot happen */
        KLOG_WARN("http1 %s: too much pipelined input while a response is pending; closing",
                  h->conn->peer);
        h->keep_alive = false;
        h->close_when_done = true;
        if (!h->responding)
            close_conn(h);
        return;
    }
    if (h->in_len + n > h->in_cap) {
        size_t cap = h->in_cap ? h->in_cap : 4096;
        while (cap < h->in_len + n)
            cap *= 2;
        char *p = realloc(h->in, cap);
        if (!p) {
            close_conn(h);
            return;
        }
        h->in = p;
        h->in_cap = cap;
    }
    memcpy(h->in + h->in_len, buf, n);
    h->in_len += n;
    if (h->in_len > IN_PAUSE && !h->read_paused) {
        h->read_paused = true;
        gw_conn_read_pause(h->conn, true);
    }
}

static void feed(struct h1_conn *h, const char *buf, size_t n)
{
    if (h->dead)
        return;
    /* Output past OUT_PAUSE holds input back during a streaming call too: each streamed request
     * (a keep-alive, a watch create) makes output, and a client that sends without reading must
     * not grow it without bound. on_drain resumes. */
    if (h->responding || h->in_len > 0 || h->in_execute || h->conn->write_pending > OUT_PAUSE) {
        keep_input(h, buf, n);
        return;
    }
    h->in_execute = true;
    size_t used = http_parser_execute(&h->parser, &settings, buf, n);
    h->in_execute = false;
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    if (h->dead)
        return;
    if (e == HPE_PAUSED) {
        keep_input(h, buf + used, n - used);
        return;
    }
    if (e != HPE_OK) {
        KLOG_DEBUG("http1 %s: bad request: %s", h->conn->peer, http_errno_description(e));
        h->keep_alive = false;
        if (h->call) { /* inside a streamed body */
            cancel_call(h);
        } else if (!h->responding) {
            if (e == HPE_HEADER_OVERFLOW)
                write_text_error(h, 431, "431 Request Header Fields Too Large");
            else
                write_simple(h, 400, "text/plain; charset=utf-8", "400 Bad Request", 15);
        }
        close_conn(h);
    }
}

static void h1_on_read(struct gw_conn *conn, const char *buf, size_t n)
{
    feed(conn->proto, buf, n);
}

static void h1_on_eof(struct gw_conn *conn, int status)
{
    struct h1_conn *h = conn->proto;
    (void)status;
    /* Go's server cancels a request whose client closed its side; a watch ends this way. */
    h->eof = true;
    if (h->call) {
        h->keep_alive = false;
        cancel_call(h);
        close_conn(h);
    } else if (!h->responding && h->in_len == 0) {
        close_conn(h);
    }
    /* else: requests read before the EOF are still answered; then response_done closes. */
}

static void h1_on_shutdown(struct gw_conn *conn)
{
    struct h1_conn *h = conn->proto;
    h->close_when_done = true;
    if (h->call && h->call->stream) {
        cancel_call(h);
        close_conn(h);
    } else if (!h->responding) {
        close_conn(h);
    }
}

static void free_h1(uv_handle_t *handle)
{
    free(handle->data);
}

static void h1_destroy(struct gw_conn *conn)
{
    struct h1_conn *h = conn->proto;
    h->dead = true;
    if (h->call)
        cancel_call(h);
    if (h->health)
        h->health->h = NULL;
    if (h->tok)
        json_tokener_free(h->tok);
    gw_jbuf_free(&h->body);
    free(h->in);
    conn->proto = NULL;
    uv_close((uv_handle_t *)&h->resume, free_h1);
}

static void h1_on_drain(struct gw_conn *conn)
{
    struct h1_conn *h = conn->proto;
    if (!h->responding && conn->write_pending <= OUT_PAUSE)
        arm_resume(h);
}

static const struct gw_conn_vtab h1_vtab = {h1_on_read, h1_on_eof, h1_on_shutdown, h1_destroy,
                                            h1_on_drain};

int gw_http1_attach(struct gw_conn *c, const char *first, size_t n)
{
    struct h1_conn *h = calloc(1, sizeof(*h));
    if (!h)
        return -1;
    h->conn = c;
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    uv_idle_init(c->ctx->loop, &h->resume);
    h->resume.data = h;
    c->vt = &h1_vtab;
    c->proto = h;
    feed(h, first, n);
    return 0;
}
