/* Threads under LD_PRELOAD: blocks handed between threads and freed there, threads that exit
 * while others still hold (and later free) their blocks, more threads at once than the
 * allocator has heaps (63), and a storm of short-lived threads. Every block's contents are
 * checked when it is freed. Prints "ok" and exits 0, or names the failed check and exits 1. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

struct block {
    size_t size;
    uint64_t tag;
    unsigned char data[];
};

static struct block *make(uint64_t tag, size_t size) {
    struct block *b = malloc(sizeof *b + size);
    CHECK(b != NULL);
    b->size = size;
    b->tag = tag;
    for (size_t i = 0; i < size; i++) b->data[i] = (unsigned char)(tag * 7 + i);
    return b;
}
static void check_free(struct block *b) {
    for (size_t i = 0; i < b->size; i++) CHECK(b->data[i] == (unsigned char)(b->tag * 7 + i));
    free(b);
}

/* A shared exchange: slots that threads swap blocks in and out of. */
enum { EXCHANGE = 4096 };
static struct block *exchange[EXCHANGE];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rng(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *worker(void *arg) {
    uint64_t seed = (uintptr_t)arg * 2654435761u + 1;
    for (int step = 0; step < 20000; step++) {
        uint64_t r = rng(&seed);
        size_t size = r % 100 < 90 ? r % 200 : r % 3000;
        struct block *mine = make(r, size);
        size_t slot = (r >> 20) % EXCHANGE;
        pthread_mutex_lock(&lock);
        struct block *theirs = exchange[slot];
        exchange[slot] = mine; /* this thread may exit before someone frees it */
        pthread_mutex_unlock(&lock);
        if (theirs) check_free(theirs);
        if (step % 3 == 0) check_free(make(r + 1, r % 64)); /* a local pair */
    }
    return NULL;
}

static void *short_lived(void *arg) {
    (void)arg;
    void *p[10];
    for (int i = 0; i < 10; i++) p[i] = malloc(16 * (i + 1));
    for (int i = 0; i < 10; i++) free(p[i]);
    return strdup("left behind for the parent to free");
}

int main(void) {
    /* Rounds of 8 workers: each round's threads adopt what the previous round left. */
    for (int round = 0; round < 4; round++) {
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
            CHECK(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(round * 8 + i)) == 0);
        for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    }
    /* 100 threads alive at once: more than there are heaps. */
    pthread_t many[100];
    for (int i = 0; i < 100; i++)
        CHECK(pthread_create(&many[i], NULL, worker, (void *)(uintptr_t)(1000 + i)) == 0);
    for (int i = 0; i < 100; i++) pthread_join(many[i], NULL);
    /* A storm of short-lived threads, one after another, each leaving a block behind. */
    for (int i = 0; i < 2000; i++) {
        pthread_t t;
        void *left;
        CHECK(pthread_create(&t, NULL, short_lived, NULL) == 0);
        pthread_join(t, &left);
        CHECK(strcmp(left, "left behind for the parent to free") == 0);
        free(left);
    }
    for (size_t i = 0; i < EXCHANGE; i++)
        if (exchange[i]) check_free(exchange[i]);
    puts("ok");
    return 0;
}
