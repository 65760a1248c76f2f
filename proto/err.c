#include "err.h"

#include "keel.pb-c.h"

/* The wire band must match keel.proto number for number. */
_Static_assert(KEEL__ERROR_CODE__INVALID_ARGUMENT == -KEEL_EINVAL, "wire code");
_Static_assert(KEEL__ERROR_CODE__NO_SPACE == -KEEL_ENOSPACE, "wire code");
_Static_assert(KEEL__ERROR_CODE__REPLY_TOO_LARGE == -KEEL_EREPLYTOOLARGE, "wire code");
_Static_assert(KEEL__ERROR_CODE__AUTH_OLD_REVISION == -KEEL_EAUTHOLDREV, "wire code");
_Static_assert(KEEL__ERROR_CODE__INTERNAL == -KEEL_EINTERNAL, "wire code");

bool keel_err_is_local(int err)
{
    return err < 0 && (err < KEEL_E_WIRE_LAST || err == KEEL_EINTERNAL);
}

const char *keel_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define KEEL_ERR_MSG_(name, n, msg)                                                                \
    case -(n):                                                                                     \
        return msg;
        KEEL_ERRNO_MAP(KEEL_ERR_MSG_)
#undef KEEL_ERR_MSG_
    }
    return "unknown error";
}

const char *keel_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define KEEL_ERR_NAME_(name, n, msg)                                                               \
    case -(n):                                                                                     \
        return #name;
        KEEL_ERRNO_MAP(KEEL_ERR_NAME_)
#undef KEEL_ERR_NAME_
    }
    return "UNRECOGNIZED";
}

int keel_err_to_wire(int err)
{
    if (err == 0)
        return KEEL__ERROR_CODE__OK;
    if (err < 0 && err > KEEL_E_INTERNAL_BASE && err >= KEEL_E_WIRE_LAST)
        return -err;
    return KEEL__ERROR_CODE__INTERNAL;
}

int keel_err_from_wire(int code)
{
    if (code == 0)
        return 0;
    if (code < 0)
        return KEEL_EINTERNAL;
    if (code <= -KEEL_E_WIRE_LAST)
        return -code;
    return KEEL_EINTERNAL;
}
