/* Producer/consumer through a C malloc: one thread allocates small blocks and hands them to
 * another through a ring; the other frees them (every free is a remote free). Prints the time
 * and the peak RSS.
 *
 *   cc -O2 -pthread benches/c/prodcons.c -o target/prodcons
 *   LD_PRELOAD=target/release/libpymalloc_preload.so target/prodcons 8 100000 3
 *
 * argv: blocks in millions, ring slots, size mode: 0 = 64 bytes; 1 = 16..496 bytes in turn;
 * 2 = 16..512 scattered; 3 = one class at a time, the next every 2^18 blocks (a producer that
 * moves on to other classes and never again runs the emptied pools of the last one dry). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static long total;
static size_t ring_n;
static int mode;
static _Atomic(void *) *ring;

static size_t size_of(long i) {
    switch (mode) {
    case 0: return 64;
    case 1: return 16 + (size_t)(i % 31) * 16;
    case 2: return 16 + (size_t)(i * 7919 % 497);
    default: return 16 + (size_t)((i >> 18) % 32) * 16;
    }
}

static void *producer(void *arg) {
    (void)arg;
    size_t w = 0;
    for (long i = 0; i < total; i++) {
        size_t n = size_of(i);
        char *p = malloc(n);
        if (p == NULL) abort();
        p[0] = 1;
        p[n - 1] = 2;
        while (atomic_load_explicit(&ring[w], memory_order_acquire)) {}
        atomic_store_explicit(&ring[w], p, memory_order_release);
        if (++w == ring_n) w = 0;
    }
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    size_t r = 0;
    for (long i = 0; i < total; i++) {
        void *p;
        while (!(p = atomic_load_explicit(&ring[r], memory_order_acquire))) {}
        atomic_store_explicit(&ring[r], NULL, memory_order_release);
        free(p);
        if (++r == ring_n) r = 0;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MILLIONS RING_SLOTS MODE\n", argv[0]);
        return 2;
    }
    total = (long)(atof(argv[1]) * 1e6);
    ring_n = (size_t)atol(argv[2]);
    mode = atoi(argv[3]);
    ring = calloc(ring_n, sizeof *ring);
    if (ring == NULL || ring_n == 0) return 2;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t p, c;
    pthread_create(&c, NULL, consumer, NULL);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%.3f s, maxrss %ld KiB\n",
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, ru.ru_maxrss);
    return 0;
}
