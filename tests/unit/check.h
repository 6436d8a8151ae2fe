/* A minimal test harness: CHECK macros record failures with what was expected and what came;
 * check_main() prints "N passed, N failed" and sets the exit code. */
#ifndef NOOK_TEST_CHECK_H
#define NOOK_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;
static char check_case[256]; /* set by CHECK_CASE; printed with each failure */

#define CHECK_WHERE() fprintf(stderr, "%s:%d: %s%sFAILED: ", __FILE__, __LINE__, check_case, check_case[0] ? ": " : "")

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (cond) {                                                                            \
            check_passed++;                                                                    \
        } else {                                                                               \
            check_failed++;                                                                    \
            CHECK_WHERE();                                                                      \
            fprintf(stderr, "%s\n", #cond);                 \
        }                                                                                      \
    } while (0)

#define CHECK_INT(got, want)                                                                   \
    do {                                                                                       \
        long long g_ = (long long)(got), w_ = (long long)(want);                               \
        if (g_ == w_) {                                                                        \
            check_passed++;                                                                    \
        } else {                                                                               \
            check_failed++;                                                                    \
            CHECK_WHERE();                                                                     \
            fprintf(stderr, "%s: expected %lld, got %lld\n", #got, w_, g_);                                                             \
        }                                                                                      \
    } while (0)

/* Compares a (ptr,len) view with a C string. */
#define CHECK_STRN(ptr, len, want)                                                             \
    do {                                                                                       \
        const char *p_ = (ptr), *w_ = (want);                                                  \
        size_t l_ = (len);                                                                     \
        if (p_ && l_ == strlen(w_) && memcmp(p_, w_, l_) == 0) {                               \
            check_passed++;                                                                    \
        } else {                                                                               \
            check_failed++;                                                                    \
            CHECK_WHERE();                                                                     \
            fprintf(stderr, "%s: expected \"%s\", got \"%.*s\"%s\n", #ptr, w_, p_ ? (int)l_ : 0, p_ ? p_ : "", p_ ? "" : " (NULL)"); \
        }                                                                                      \
    } while (0)

/* Labels the following failures (e.g. a table row) so a failure says which case broke. */
#define CHECK_CASE(...)                                                                        \
    do {                                                                                       \
        snprintf(check_case, sizeof check_case, __VA_ARGS__);                                  \
    } while (0)
static inline int check_main(const char *suite)
{
    printf("%s: %d passed, %d failed\n", suite, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
