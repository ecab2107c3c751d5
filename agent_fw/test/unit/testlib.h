/*
 * testlib.h - the few assertion macros our C unit tests share.
 *
 * Each test file is one executable registered with ctest. A failed check
 * prints file:line and the values, marks the test failed and carries on, so
 * one run shows every broken expectation; main() returns TL_RESULT().
 */
#ifndef TESTLIB_H
#define TESTLIB_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int tl_failures;
static int tl_checks;

#define TL_CHECK(cond)                                                              \
    do {                                                                            \
        tl_checks++;                                                                \
        if (!(cond)) {                                                              \
            tl_failures++;                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

#define TL_EQ_INT(a, b)                                                               \
    do {                                                                              \
        long long tl_a_ = (long long)(a), tl_b_ = (long long)(b);                     \
        tl_checks++;                                                                  \
        if (tl_a_ != tl_b_) {                                                         \
            tl_failures++;                                                            \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, tl_a_, tl_b_);                                            \
        }                                                                             \
    } while (0)

#define TL_EQ_STR(a, b)                                                                  \
    do {                                                                                 \
        const char *tl_a_ = (a), *tl_b_ = (b);                                           \
        tl_checks++;                                                                     \
        if (!tl_a_ || !tl_b_ || strcmp(tl_a_, tl_b_) != 0) {                             \
            tl_failures++;                                                               \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, \
                    #a, #b, tl_a_ ? tl_a_ : "(null)", tl_b_ ? tl_b_ : "(null)");          \
        }                                                                                \
    } while (0)

#define TL_EQ_MEM(a, b, n)                                                               \
    do {                                                                                 \
        tl_checks++;                                                                     \
        if (memcmp((a), (b), (n)) != 0) {                                                \
            tl_failures++;                                                               \
            fprintf(stderr, "%s:%d: %zu bytes of %s and %s differ\n", __FILE__, __LINE__, \
                    (size_t)(n), #a, #b);                                                \
        }                                                                                \
    } while (0)

/* Run one test function and name it in the output. */
#define TL_RUN(fn)                                                 \
    do {                                                           \
        int tl_before_ = tl_failures;                              \
        fn();                                                      \
        printf("%s %s\n", tl_failures == tl_before_ ? "ok  " : "FAIL", #fn); \
    } while (0)

#define TL_RESULT()                                                              \
    (printf("%d checks, %d failed\n", tl_checks, tl_failures), tl_failures ? 1 : 0)

#endif /* TESTLIB_H */
