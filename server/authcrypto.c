/* Password hashes and tokens (see authcrypto.h). */
#include "authcrypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "err.h"

#define SALT_BYTES 16
#define HASH_BYTES 32
#define MAC_BYTES  32
#define PREFIX     "pbkdf2-sha256$"
#define MIN_ITER   1000
#define MAX_ITER   1000000 /* ~0.7 s of the pool per check: a client's hash costs no more */
#define TOKEN_HEAD 17      /* version, expiry, revision */

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decode exactly n bytes from the first 2n characters of in. */
static bool hex_decode(const char *in, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_digit(in[2 * i]), lo = hi < 0 ? -1 : hex_digit(in[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static void pbkdf2(const char *password, const uint8_t *salt, unsigned iter,
                   uint8_t out[HASH_BYTES])
{
    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, SALT_BYTES, (int)iter, EVP_sha256(),
                      HASH_BYTES, out);
}

int keel_auth_hash(const char *password, char out[KEEL_AUTH_HASH_MAX])
{
    uint8_t salt[SALT_BYTES], hash[HASH_BYTES];
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return KEEL_EIO;
    pbkdf2(password, salt, KEEL_AUTH_PBKDF2_ITERATIONS, hash);
    char salt_hex[2 * SALT_BYTES + 1], hash_hex[2 * HASH_BYTES + 1];
    hex_encode(salt, SALT_BYTES, salt_hex);
    hex_encode(hash, HASH_BYTES, hash_hex);
    snprintf(out, KEEL_AUTH_HASH_MAX, PREFIX "%u$%s$%s", (unsigned)KEEL_AUTH_PBKDF2_ITERATIONS,
             salt_hex, hash_hex);
    OPENSSL_cleanse(hash, sizeof(hash));
    return 0;
}

/* Split a hash string: 0 or -1. */
static int hash_parse(const char *h, unsigned *iter, uint8_t salt[SALT_BYTES],
                      uint8_t hash[HASH_BYTES])
{
    if (h == NULL || strncmp(h, PREFIX, strlen(PREFIX)) != 0)
        return -1;
    const char *p = h + strlen(PREFIX);
    char *end;
    unsigned long it = strtoul(p, &end, 10);
    /* At most 7 digits and no leading zero: the string's length stays what the store bounds. */
    if (end == p || end - p > 7 || *p == '0' || *end != '$' || it < MIN_ITER || it > MAX_ITER)
        return -1;
    p = end + 1;
    if (strlen(p) != 2 * SALT_BYTES + 1 + 2 * HASH_BYTES || p[2 * SALT_BYTES] != '$' ||
        !hex_decode(p, SALT_BYTES, salt) || !hex_decode(p + 2 * SALT_BYTES + 1, HASH_BYTES, hash))
        return -1;
    *iter = (unsigned)it;
    return 0;
}

bool keel_auth_hash_valid(const char *hashed)
{
    unsigned iter;
    uint8_t salt[SALT_BYTES], hash[HASH_BYTES];
    return hash_parse(hashed, &iter, salt, hash) == 0;
}

bool keel_auth_hash_check(const char *password, const char *hashed)
{
    unsigned iter;
    uint8_t salt[SALT_BYTES], want[HASH_BYTES], got[HASH_BYTES];
    bool real = hash_parse(hashed, &iter, salt, want) == 0;
    if (!real) {
        /* No such user: the same work against nothing, so the answer takes as long. */
        memset(salt, 0x5a, sizeof(salt));
        memset(want, 0, sizeof(want));
        iter = KEEL_AUTH_PBKDF2_ITERATIONS;
    }
    pbkdf2(password, salt, iter, got);
    bool same = CRYPTO_memcmp(got, want, HASH_BYTES) == 0;
    OPENSSL_cleanse(got, sizeof(got));
    return real && same;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void mac(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t n,
                uint8_t out[MAC_BYTES])
{
    unsigned len = MAC_BYTES;
    HMAC(EVP_sha256(), key, (int)key_len, msg, n, out, &len);
}

int keel_auth_token_make(const uint8_t *key, size_t key_len, const char *user, uint64_t rev,
                         uint64_t exp_ms, char out[KEEL_AUTH_TOKEN_MAX])
{
    size_t ulen = strlen(user);
    if (ulen == 0 || ulen > KEEL_AUTH_NAME_MAX)
        return KEEL_EINVAL;
    uint8_t raw[TOKEN_HEAD + KEEL_AUTH_NAME_MAX + MAC_BYTES];
    raw[0] = 1;
    put_be64(raw + 1, exp_ms);
    put_be64(raw + 9, rev);
    memcpy(raw + TOKEN_HEAD, user, ulen);
    mac(key, key_len, raw, TOKEN_HEAD + ulen, raw + TOKEN_HEAD + ulen);
    hex_encode(raw, TOKEN_HEAD + ulen + MAC_BYTES, out);
    return 0;
}

int keel_auth_token_parse(const uint8_t *key, size_t key_len, const char *token,
                          char user[KEEL_AUTH_NAME_MAX + 1], uint64_t *rev, uint64_t *exp_ms)
{
    uint8_t raw[TOKEN_HEAD + KEEL_AUTH_NAME_MAX + MAC_BYTES], want[MAC_BYTES];
    size_t len = token != NULL ? strlen(token) : 0;
    if (len % 2 != 0 || len / 2 <= TOKEN_HEAD + MAC_BYTES || len / 2 > sizeof(raw) || key_len == 0)
        return KEEL_EUNAUTHENTICATED;
    size_t n = len / 2, ulen = n - TOKEN_HEAD - MAC_BYTES;
    if (!hex_decode(token, n, raw) || raw[0] != 1)
        return KEEL_EUNAUTHENTICATED;
    mac(key, key_len, raw, n - MAC_BYTES, want);
    if (CRYPTO_memcmp(want, raw + n - MAC_BYTES, MAC_BYTES) != 0 ||
        memchr(raw + TOKEN_HEAD, '\0', ulen) != NULL)
        return KEEL_EUNAUTHENTICATED;
    *exp_ms = get_be64(raw + 1);
    *rev = get_be64(raw + 9);
    memcpy(user, raw + TOKEN_HEAD, ulen);
    user[ulen] = '\0';
    return 0;
}
