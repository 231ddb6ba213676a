/* CHECK(c): if `c` is false, name the file, line and condition on stderr and exit 1. */
#ifndef PYMALLOC_CHECK_H
#define PYMALLOC_CHECK_H
#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);  \
            exit(1);                                                               \
        }                                                                          \
    } while (0)

#endif
