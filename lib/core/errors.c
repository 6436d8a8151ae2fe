/* One table gives every error code its name and description. */
#include "nook.h"

#define NOOK_ERRORS(X)                                                                       \
    X(NOOK_OK, "success")                                                                    \
    X(NOOK_AGAIN, "queued; wait until writable before writing more")                         \
    X(NOOK_ENOMEM, "out of memory")                                                          \
    X(NOOK_EINVAL, "invalid argument")                                                       \
    X(NOOK_ESTATE, "call not valid in the current state")                                    \
    X(NOOK_EEXIST, "conflicts with something already registered")                            \
    X(NOOK_EADDR, "address could not be parsed or resolved")                                 \
    X(NOOK_EADDRINUSE, "address already in use")                                             \
    X(NOOK_ESYS, "system call failed")                                                       \
    X(NOOK_EFULL, "output buffer full")                                                      \
    X(NOOK_ECLOSED, "the client went away")                                                  \
    X(NOOK_ELIMIT, "limit reached")                                                          \
    X(NOOK_ENOTFOUND, "not found")                                                           \
    X(NOOK_ETHREAD, "not allowed from this thread")

const char *nook_strerror(int err)
{
    switch (err) {
#define X(code, text)                                                                        \
    case code:                                                                               \
        return text;
        NOOK_ERRORS(X)
#undef X
    }
    return "unknown error";
}

const char *nook_err_name(int err)
{
    switch (err) {
#define X(code, text)                                                                        \
    case code:                                                                               \
        return #code;
        NOOK_ERRORS(X)
#undef X
    }
    return "NOOK_UNKNOWN";
}

const char *nook_version(void) { return NOOK_VERSION_STRING; }
