/* The monotonic clock and sleeping, for the groups' waits (private to CCollectives). */
#ifndef TC_CLOCK_H
#define TC_CLOCK_H

#include <time.h>

static inline long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void sleep_ns(long ns) {
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&t, NULL);
}

#endif
