/* The C allocation API under LD_PRELOAD: every entry point, its edge cases and errno, and
 * which blocks the pools serve. Exits 0 and prints "ok" if every check holds; otherwise prints
 * the first failed check and exits 1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static int (*owns)(const void *);
/* Sizes no allocator can serve, hidden from the compiler's own checks. */
static volatile size_t huge = SIZE_MAX - 4096, half = SIZE_MAX / 2;

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed * 31 + i);
}
static int intact(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed * 31 + i)) return 0;
    return 1;
}

int main(void) {
    owns = (int (*)(const void *))dlsym(RTLD_DEFAULT, "pymalloc_owns");
    CHECK(owns != NULL); /* not preloaded */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    /* malloc of every size up to 2 KiB: alignment, usable size, who serves it, contents. */
    static void *blocks[2049];
    for (size_t n = 0; n <= 2048; n++) {
        unsigned char *p = malloc(n);
        CHECK(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(malloc_usable_size(p) >= n);
        CHECK(owns(p) == (n <= 512));
        fill(p, n, (unsigned)n);
        blocks[n] = p;
    }
    for (size_t n = 0; n <= 2048; n++) CHECK(intact(blocks[n], n, (unsigned)n));
    for (size_t n = 0; n <= 2048; n++)
        for (size_t m = n + 1; m <= 2048 && m < n + 4; m++) CHECK(blocks[n] != blocks[m]);
    for (size_t n = 0; n <= 2048; n++) free(blocks[n]);
    free(NULL);

    /* malloc(0) gives distinct live pointers. */
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2);
    free(z1);
    free(z2);

    /* calloc clears a reused block, all of its usable size (as glibc's does: a program may
     * use what malloc_usable_size reports); overflow fails with ENOMEM. */
    for (size_t n = 1; n <= 1024; n += 7) {
        unsigned char *d = malloc(n);
        memset(d, 0xAB, malloc_usable_size(d));
        free(d);
        unsigned char *c = calloc(1, n);
        CHECK(c != NULL);
        for (size_t i = 0; i < malloc_usable_size(c); i++) CHECK(c[i] == 0);
        free(c);
    }
    errno = 0;
    CHECK(calloc(half, 3) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(huge) == NULL && errno == ENOMEM);

    /* realloc keeps the contents across every move: within a class, between classes, out of
     * the pools into glibc and back. */
    size_t sizes[] = {1, 8, 16, 17, 100, 384, 400, 512, 513, 1000, 5000, 300, 48, 3, 700000, 20};
    unsigned char *r = NULL;
    size_t have = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *q = realloc(r, n);
        CHECK(q != NULL);
        CHECK(intact(q, have < n ? have : n, 7));
        fill(q, n, 7);
        CHECK(malloc_usable_size(q) >= n);
        r = q;
        have = n;
    }
    /* A small shrink stays in place. */
    unsigned char *s = malloc(512);
    uintptr_t before = (uintptr_t)s;
    s = realloc(s, 500);
    CHECK((uintptr_t)s == before);
    /* realloc(p, 0) frees and returns NULL (glibc), for ours and for glibc's. */
    CHECK(realloc(s, 0) == NULL);
    CHECK(realloc(malloc(4000), 0) == NULL);
    /* A failed realloc leaves the block alone. */
    errno = 0;
    CHECK(realloc(r, huge) == NULL && errno == ENOMEM);
    CHECK(intact(r, have, 7));
    free(r);
    /* reallocarray */
    errno = 0;
    CHECK(reallocarray(NULL, half, 3) == NULL && errno == ENOMEM);
    int *arr = reallocarray(NULL, 10, sizeof(int));
    CHECK(arr && owns(arr));
    free(arr);

    /* The aligned family. */
    for (size_t a = sizeof(void *); a <= 65536; a *= 2) {
        for (size_t n = 1; n <= 3000; n = n * 3 + 1) {
            void *p = (void *)1;
            CHECK(posix_memalign(&p, a, n) == 0);
            CHECK(((uintptr_t)p & (a - 1)) == 0);
            memset(p, 1, n);
            free(p);
            p = aligned_alloc(a, n);
            CHECK(p && ((uintptr_t)p & (a - 1)) == 0);
            free(p);
            p = memalign(a, n);
            CHECK(p && ((uintptr_t)p & (a - 1)) == 0);
            free(p);
        }
    }
    void *keep = (void *)0x1234;
    CHECK(posix_memalign(&keep, 24, 10) == EINVAL && keep == (void *)0x1234);
    CHECK(posix_memalign(&keep, 4, 10) == EINVAL && keep == (void *)0x1234);
    errno = 0;
    CHECK(posix_memalign(&keep, 64, huge) == ENOMEM && keep == (void *)0x1234);
    errno = 0;
    CHECK(aligned_alloc(24, 10) == NULL && errno == EINVAL);
    void *m = memalign(24, 10); /* rounded up to 32 */
    CHECK(m && ((uintptr_t)m & 31) == 0);
    free(m);
    void *v = valloc(10);
    CHECK(v && ((uintptr_t)v & (page - 1)) == 0);
    free(v);
    void *pv = pvalloc(10);
    CHECK(pv && ((uintptr_t)pv & (page - 1)) == 0 && malloc_usable_size(pv) >= page);
    free(pv);
    CHECK(malloc_usable_size(NULL) == 0);

    /* strdup and friends (glibc calling malloc internally) land in the pools and free there. */
    char *d = strdup("pymalloc");
    CHECK(d && owns(d) && strcmp(d, "pymalloc") == 0);
    free(d);

    /* A million small blocks, then all freed: the report is there and says so. */
    enum { N = 1000000 };
    void **many = malloc(N * sizeof(void *));
    for (size_t i = 0; i < N; i++) {
        many[i] = malloc(16 + (i % 20) * 8);
        CHECK(many[i] != NULL);
        *(size_t *)many[i] = i;
    }
    for (size_t i = 0; i < N; i++) {
        CHECK(*(size_t *)many[i] == i);
        free(many[i]);
    }
    /* After the free, the allocator keeps one wholly free arena (CPython's rule); malloc_trim
     * gives it back too (and glibc's free memory): none of the freed blocks is in an arena of
     * ours any more. (Nothing else small is live here.) */
    size_t owned = 0;
    for (size_t i = 0; i < N; i++) owned += owns(many[i]) != 0;
    CHECK(owned > 0);
    CHECK(malloc_trim(0) == 1);
    for (size_t i = 0; i < N; i++) CHECK(!owns(many[i]));
    free(many);
    int (*print_stats)(int) = (int (*)(int))dlsym(RTLD_DEFAULT, "pymalloc_print_stats");
    CHECK(print_stats != NULL);
    CHECK(print_stats(1) == 0);
    puts("ok");
    return 0;
}
