/* The process's first request above 512 bytes, made by 32 threads at once. Run with
 * PYMALLOC_LAZY_GLIBC=1 (the library then leaves glibc alone at start-up and at fork): these
 * are glibc's first allocation calls of all, and glibc sets its allocator up on its first call
 * without a lock. Each round forks a fresh child (the parent never makes a large request, so
 * each child starts with glibc's allocator untouched), in which 32 threads wait on a barrier
 * and then allocate 1000-byte blocks. A child that crashes fails the program. Output goes
 * through write(2): stdio's buffer would be a large request. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { THREADS = 32, ROUNDS = 150 };

static pthread_barrier_t bar;

static void *worker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 200; i++) {
        char *volatile p = malloc(1000 + (i & 7) * 64);
        if (p == NULL) _exit(3);
        memset(p, i, 1000);
        free(p);
    }
    return NULL;
}

static int child(void) {
    pthread_t t[THREADS];
    if (pthread_barrier_init(&bar, NULL, THREADS) != 0) return 4;
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, NULL) != 0) return 5;
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    return 0;
}

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

int main(void) {
    for (int r = 0; r < ROUNDS; r++) {
        pid_t pid = fork();
        if (pid < 0) { say("fork failed\n"); return 1; }
        if (pid == 0) _exit(child());
        int st;
        if (waitpid(pid, &st, 0) != pid) { say("waitpid failed\n"); return 1; }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            say(WIFSIGNALED(st) ? "a child was killed by a signal\n" : "a child failed\n");
            return 1;
        }
    }
    say("ok\n");
    return 0;
}
