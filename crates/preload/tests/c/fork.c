/* fork under LD_PRELOAD from a process whose other threads allocate and free without pause:
 * each child allocates, frees, and exits at once; none may hang (an alarm turns a hang into a
 * failure). Prints "ok" and exits 0, or names the failed check and exits 1. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

static volatile int stop;

static void *churn(void *arg) {
    uint64_t s = (uintptr_t)arg + 1;
    void *keep[64] = {0};
    while (!stop) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        size_t i = s % 64;
        free(keep[i]);
        keep[i] = malloc(s % 700);
        CHECK(keep[i] != NULL);
    }
    for (int i = 0; i < 64; i++) free(keep[i]);
    return NULL;
}

int main(void) {
    alarm(120);
    pthread_t t[3];
    for (int i = 0; i < 3; i++) CHECK(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)i) == 0);
    for (int round = 0; round < 300; round++) {
        void *before = malloc(100);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            alarm(20);
            /* The child: free what the parent made before the fork, allocate in threads. */
            free(before);
            void *p[1000];
            for (int i = 0; i < 1000; i++) p[i] = malloc((size_t)(i % 600) + 1);
            for (int i = 0; i < 1000; i++) free(p[i]);
            pthread_t c;
            CHECK(pthread_create(&c, NULL, churn, (void *)1) == 0);
            usleep(100);
            stop = 1;
            pthread_join(c, NULL);
            _exit(0);
        }
        int status;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        free(before);
    }
    stop = 1;
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    puts("ok");
    return 0;
}
