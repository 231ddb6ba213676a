/* A bad free handed to the allocator: argv[1] is "interior" (a pointer into the middle of a
 * block) or "double" (a block freed twice). A debug build of the shared object reports it with
 * the address and aborts; reaching the end prints "not reported". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The compiler sees these bad frees too; they are on purpose. */
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#pragma GCC diagnostic ignored "-Wuse-after-free"

int main(int argc, char **argv) {
    char *volatile p = malloc(64);
    char *volatile q = malloc(64);
    if (argc > 1 && strcmp(argv[1], "interior") == 0) free(p + 16);
    if (argc > 1 && strcmp(argv[1], "double") == 0) {
        free(q);
        free(q);
        free(p); /* the pool is now empty: the second free of p is seen for certain */
        free(p);
    }
    puts("not reported");
    return 0;
}
