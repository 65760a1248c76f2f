/*
 * fuzz_gw_json: keel-gateway's JSON decoder and encoder (gateway/pbjson.h), as etcd's JSON
 * gateway clients reach them: any body for any method's request type.
 *
 * Input: byte 0 picks the method (gw_method_at, modulo gw_method_count); the rest is the body.
 *
 * Checked, besides crashes, leaks and undefined behaviour: a body that decodes yields a message
 * that packs and unpacks with protobuf-c, and whose JSON decodes again to a message writing the
 * same JSON (write o decode is idempotent: what the gateway prints, it reads back unchanged).
 */
#include <string.h>

#include "fuzz.h"
#include "methods.h"
#include "pbjson.h"

static char *json_of(const ProtobufCMessage *m, size_t *len)
{
    struct gw_jbuf b = {0};
    FZ_CHECK(gw_pbjson_write(&b, m) == 0 && !b.failed);
    *len = b.len;
    return b.p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz in = {data, size};
    const struct gw_method *m = gw_method_at(fz_u8(&in) % gw_method_count());
    char err[256];
    ProtobufCMessage *msg =
        gw_pbjson_decode_text(m->req, (const char *)in.p, in.n, err, sizeof(err));
    if (!msg) {
        FZ_CHECK(err[0] != '\0'); /* a refusal always says why */
        return 0;
    }
    size_t plen = protobuf_c_message_get_packed_size(msg);
    uint8_t *packed = malloc(plen ? plen : 1);
    FZ_CHECK(packed != NULL);
    FZ_CHECK(protobuf_c_message_pack(msg, packed) == plen);
    ProtobufCMessage *again = protobuf_c_message_unpack(m->req, NULL, plen, packed);
    FZ_CHECK(again != NULL);
    protobuf_c_message_free_unpacked(again, NULL);
    free(packed);

    size_t len1, len2;
    char *j1 = json_of(msg, &len1);
    ProtobufCMessage *back = gw_pbjson_decode_text(m->req, j1 ? j1 : "", len1, err, sizeof(err));
    FZ_CHECK(back != NULL);
    char *j2 = json_of(back, &len2);
    FZ_CHECK(len1 == len2 && (len1 == 0 || memcmp(j1, j2, len1) == 0));
    free(j1);
    free(j2);
    protobuf_c_message_free_unpacked(back, NULL);
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
