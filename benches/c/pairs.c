/* N malloc+free pairs of SIZE bytes through the C API: for counting the instructions of a pair
 * under each LD_PRELOAD allocator (benches/preload-fastpath.sh).  Usage: pairs SIZE N */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    size_t size = strtoul(argv[1], NULL, 10);
    long n = strtol(argv[2], NULL, 10);
    void *warm = malloc(size); /* the first allocation sets the heap up */
    for (long i = 0; i < n; i++) {
        void *volatile p = malloc(size);
        free(p);
    }
    free(warm);
    return 0;
}
