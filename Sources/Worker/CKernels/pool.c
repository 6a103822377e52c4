/* The worker's compute pool: a fixed set of threads that run every operation of a step.
 *
 * A job is published by bumping `generation`; helpers notice it by spinning (cheap when jobs
 * follow each other within microseconds, as the operations of a step do) and, once they have
 * spun for `spin_ns` with nothing to do, sleep on a futex so an idle worker leaves its cores
 * to the router. The caller runs share 0 of every job itself and waits the same way for the
 * helpers to finish. Both waits use the Dekker pattern (announce you sleep, then re-check) with
 * sequentially consistent atomics, so a wake-up is never lost. */
#define _GNU_SOURCE
#include "tessel_kernels.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define tk_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define tk_cpu_relax() __asm__ __volatile__("yield")
#else
#define tk_cpu_relax() ((void)0)
#endif

struct tk_pool {
    int threads;
    long spin_ns;
    pthread_t *handles;
    tk_pool_thread_start on_start;
    void *start_context;

    _Atomic uint32_t generation; /* futex word: bumped once per job */
    _Atomic int sleeping_helpers;
    _Atomic uint32_t remaining;  /* futex word: helpers still inside the current job */
    _Atomic int caller_sleeping;
    _Atomic int stopping;

    tk_pool_job job;
    void *context;
};

typedef struct {
    tk_pool *pool;
    int index;
} helper_start;

static void futex_wait(_Atomic uint32_t *word, uint32_t expected) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
#else
    (void)word;
    (void)expected;
    sched_yield();
#endif
}

static void futex_wake_all(_Atomic uint32_t *word) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Spins until `*word != value` or the spin budget is spent; true if it changed. */
static int spin_until_changed(_Atomic uint32_t *word, uint32_t value, long spin_ns) {
    long start = 0;
    for (unsigned i = 0;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != value) return 1;
        tk_cpu_relax();
        if ((i & 63) == 63) {
            long t = now_ns();
            if (start == 0) start = t;
            else if (t - start >= spin_ns) return 0;
        }
    }
}

static void *helper_main(void *argument) {
    helper_start start = *(helper_start *)argument;
    free(argument);
    tk_pool *pool = start.pool;
    if (pool->on_start) pool->on_start(pool->start_context, start.index);
    uint32_t seen = 0;
    for (;;) {
        if (!spin_until_changed(&pool->generation, seen, pool->spin_ns)) {
            atomic_fetch_add(&pool->sleeping_helpers, 1);
            while (atomic_load(&pool->generation) == seen) futex_wait(&pool->generation, seen);
            atomic_fetch_sub(&pool->sleeping_helpers, 1);
        }
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (atomic_load_explicit(&pool->stopping, memory_order_acquire)) return NULL;
        pool->job(pool->context, start.index, pool->threads);
        if (atomic_fetch_sub(&pool->remaining, 1) == 1 && atomic_load(&pool->caller_sleeping))
            futex_wake_all(&pool->remaining);
    }
}

tk_pool *tk_pool_create(int threads, int spin_microseconds, tk_pool_thread_start on_start, void *start_context) {
    if (threads < 1) return NULL;
    tk_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = threads;
    pool->spin_ns = (long)(spin_microseconds < 0 ? 0 : spin_microseconds) * 1000L;
    pool->on_start = on_start;
    pool->start_context = start_context;
    pool->handles = calloc((size_t)threads, sizeof(pthread_t));
    if (!pool->handles) {
        free(pool);
        return NULL;
    }
    for (int t = 1; t < threads; t++) {
        helper_start *start = malloc(sizeof *start);
        if (start) {
            start->pool = pool;
            start->index = t;
        }
        if (!start || pthread_create(&pool->handles[t], NULL, helper_main, start) != 0) {
            free(start);
            pool->threads = t; /* stop the helpers already running */
            tk_pool_destroy(pool);
            return NULL;
        }
    }
    return pool;
}

void tk_pool_run(tk_pool *pool, tk_pool_job job, void *context) {
    if (pool->threads == 1) {
        job(context, 0, 1);
        return;
    }
    pool->job = job;
    pool->context = context;
    atomic_store(&pool->remaining, (uint32_t)(pool->threads - 1));
    atomic_fetch_add(&pool->generation, 1);
    if (atomic_load(&pool->sleeping_helpers) > 0) futex_wake_all(&pool->generation);
    job(context, 0, pool->threads);
    uint32_t left;
    long start = 0;
    for (unsigned i = 0; (left = atomic_load_explicit(&pool->remaining, memory_order_acquire)) != 0; i++) {
        tk_cpu_relax();
        if ((i & 63) == 63) {
            long t = now_ns();
            if (start == 0) start = t;
            else if (t - start >= pool->spin_ns) break;
        }
    }
    if (left == 0) return;
    atomic_store(&pool->caller_sleeping, 1);
    while ((left = atomic_load(&pool->remaining)) != 0) futex_wait(&pool->remaining, left);
    atomic_store(&pool->caller_sleeping, 0);
}

int tk_pool_thread_count(const tk_pool *pool) { return pool->threads; }

void tk_pool_destroy(tk_pool *pool) {
    if (!pool) return;
    atomic_store(&pool->stopping, 1);
    atomic_fetch_add(&pool->generation, 1);
    futex_wake_all(&pool->generation);
    for (int t = 1; t < pool->threads; t++) pthread_join(pool->handles[t], NULL);
    free(pool->handles);
    free(pool);
}

int tk_current_cpu(void) {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
}
