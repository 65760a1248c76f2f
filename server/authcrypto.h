/*
 * Password hashes and tokens: the cryptography of auth (server/auth.h), pure functions over
 * OpenSSL's libcrypto, no state, safe from any thread.
 *
 * A password is kept only as "pbkdf2-sha256$ITERATIONS$SALT$HASH": PBKDF2-HMAC-SHA256 with a
 * random 16-byte salt (hex) and a 32-byte hash (hex). KEEL_AUTH_PBKDF2_ITERATIONS costs about
 * 5-7 ms on the 2-core build machine (OpenSSL 3): slow enough to make guessing expensive, cheap
 * enough for the thread pool that runs it (never the loop, never the storage writer).
 *
 * A token is hex of: version byte 1 | expiry (Unix ms, big-endian u64) | auth revision at issue
 * (big-endian u64) | user name | HMAC-SHA256 of all that under the cluster's signing key. Any
 * member holding the key verifies it without a round trip; expiry is wall-clock time, so
 * members' clocks must agree to well within the TTL (as with etcd's JWT tokens).
 */
#ifndef KEEL_AUTHCRYPTO_H
#define KEEL_AUTHCRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEEL_AUTH_PBKDF2_ITERATIONS 10000
/* Bytes of a hash string, NUL included: "pbkdf2-sha256$" + up to 8 digits + "$" + 32 + "$" +
 * 64 + NUL. */
#define KEEL_AUTH_HASH_MAX 128
#define KEEL_AUTH_NAME_MAX 128 /* = KEEL_AUTH_MAX_NAME (store.h) */
/* Bytes of a token string, NUL included. */
#define KEEL_AUTH_TOKEN_MAX (2 * (17 + KEEL_AUTH_NAME_MAX + 32) + 1)

/* Hash password with a fresh random salt into out (KEEL_AUTH_HASH_MAX bytes). 0, or KEEL_EIO
 * when no random bytes could be had. */
int keel_auth_hash(const char *password, char out[KEEL_AUTH_HASH_MAX]);

/* Whether hashed is a hash string this module can check (format and iteration bounds). */
bool keel_auth_hash_valid(const char *hashed);

/* Whether password matches hashed, in constant time for a given hash. hashed NULL or malformed
 * (a user that does not exist): a dummy hash of the same cost is computed and false returned, so
 * that a failure takes as long as a success. */
bool keel_auth_hash_check(const char *password, const char *hashed);

/* A token for user (at most KEEL_AUTH_NAME_MAX bytes) valid until exp_ms, issued at auth
 * revision rev, signed with key. 0 or KEEL_EINVAL (name too long). */
int keel_auth_token_make(const uint8_t *key, size_t key_len, const char *user, uint64_t rev,
                         uint64_t exp_ms, char out[KEEL_AUTH_TOKEN_MAX]);

/* Check token's signature under key and decode it: user (NUL-terminated), rev, exp_ms. The
 * expiry is the caller's to compare. 0, or KEEL_EUNAUTHENTICATED for anything malformed or
 * signed otherwise. */
int keel_auth_token_parse(const uint8_t *key, size_t key_len, const char *token,
                          char user[KEEL_AUTH_NAME_MAX + 1], uint64_t *rev, uint64_t *exp_ms);

#endif
