/*
 * Raw keel connections for cluster tests that must do what libkeel never would: frames written
 * by hand, many requests in one write, half a frame, replies left unread. Every wait is bounded
 * (RAW_WAIT_MS) and fails the test (cmocka) when it runs out; only the test's main thread may
 * call these.
 */
#ifndef KEEL_TEST_RAWCONN_H
#define KEEL_TEST_RAWCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel.pb-c.h"

#define RAW_WAIT_MS 10000

struct tc_cluster;

/* Connect to addr ("a.b.c.d:port"), retrying while the member starts (up to RAW_WAIT_MS), with
 * a receive buffer of rcvbuf bytes when rcvbuf > 0. No handshake. */
int raw_dial(const char *addr, int rcvbuf);

/* raw_dial, then the handshake: Hello sent, its HelloResponse read and free of error. */
int raw_open(const char *addr, int rcvbuf);

/* Send Hello; read the HelloResponse (NULL when the member closed the connection instead). */
void raw_hello_send(int fd);
Keel__HelloResponse *raw_hello_response(int fd);

/* Write all of p; fails the test when the member closed the connection. */
void raw_send(int fd, const void *p, size_t n);

/* The next frame's payload (malloc'd), NULL when the member closed the connection (EOF or
 * reset); fails the test when nothing comes within RAW_WAIT_MS. */
uint8_t *raw_read(int fd, size_t *len);

/* The next Response (free with keel__response__free_unpacked); fails at EOF. */
Keel__Response *raw_response(int fd);

/* Whether the member closes fd within timeout_ms; frames it sends meanwhile are discarded. */
bool raw_closed(int fd, int timeout_ms);

/* Append a framed request to buf (realloc'd as needed). */
void raw_append(uint8_t **buf, size_t *len, size_t *cap, const Keel__Request *req);

/* Send req alone and read the next response (the caller frees it with
 * keel__response__free_unpacked). Aborts the test as raw_send and raw_response do. */
Keel__Response *raw_call(int fd, const Keel__Request *req);
void raw_append_put(uint8_t **buf, size_t *len, size_t *cap, uint64_t id, const char *key,
                    const uint8_t *val, size_t val_len);

/* One put round trip on fd; its wire error code (0: none). */
int raw_put(int fd, uint64_t id, const char *key, const uint8_t *val, size_t val_len);

/* The member's last raft index, from a Status round trip on fd (nothing else outstanding). */
uint64_t raw_raft_index(int fd, uint64_t id);

/* Start the members of c (laid out, not started) and wait, up to 20 s, until member 1 takes
 * writes: a put has gone through on the connection to it returned. */
int raw_start(struct tc_cluster *c);

/* A one-member cluster with flags, started with raw_start. */
int raw_one_member(struct tc_cluster *c, const char *tag, const char *flags);

#endif
