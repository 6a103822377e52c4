/* The monotonic clock, sleeping and random ids, for the groups (private to CCollectives). */
#ifndef TC_CLOCK_H
#define TC_CLOCK_H

#include <stdint.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static inline long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void sleep_ns(long ns) {
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&t, NULL);
}

/* A fresh non-zero 64-bit id (a group formation's name). */
static inline uint64_t tc_random_id(void) {
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        id = ((uint64_t)t.tv_nsec << 32) ^ (uint64_t)t.tv_sec ^ ((uint64_t)getpid() << 16);
    }
    return id ? id : 1;
}

#endif
