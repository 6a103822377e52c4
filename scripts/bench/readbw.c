/* Read bandwidth for scripts/bench/serving.sh: every thread first-touches and then sums its own
 * slice of a buffer; a barrier starts and ends every pass; the median and best passes are printed. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { uint64_t *data; size_t count; uint64_t sum; double *begin, *end; } Slice;
static pthread_barrier_t start_line, finish_line;
static int passes;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static uint64_t sum(const uint64_t *restrict p, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n; i += 4) { a += p[i]; b += p[i + 1]; c += p[i + 2]; d += p[i + 3]; }
    return a + b + c + d;
}

/* Every reader stamps its own start and end (the main thread only waits in pthread_join, so it
   never competes for a core); a pass lasts from the earliest start to the latest end. */
static void *reader(void *argument) {
    Slice *slice = argument;
    for (size_t i = 0; i < slice->count; i++) slice->data[i] = i * 2654435761u;
    for (int pass = 0; pass <= passes; pass++) {   /* pass 0 is the warm-up */
        pthread_barrier_wait(&start_line);
        slice->begin[pass] = now();
        slice->sum += sum(slice->data, slice->count);
        slice->end[pass] = now();
        pthread_barrier_wait(&finish_line);
    }
    return NULL;
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: readbw LABEL BYTES THREADS PASSES\n"); return 2; }
    size_t bytes = strtoull(argv[2], NULL, 10);
    int threads = atoi(argv[3]);
    passes = atoi(argv[4]);
    size_t per = (bytes / 8 / threads) & ~(size_t)63;
    Slice *slices = calloc(threads, sizeof(Slice));
    pthread_t *ids = calloc(threads, sizeof(pthread_t));
    double *gbps = calloc(passes, sizeof(double));
    pthread_barrier_init(&start_line, NULL, threads);
    pthread_barrier_init(&finish_line, NULL, threads);
    for (int t = 0; t < threads; t++) {
        if (posix_memalign((void **)&slices[t].data, 4096, per * 8)) { fprintf(stderr, "readbw: out of memory\n"); return 1; }
        slices[t].count = per;
        slices[t].begin = calloc(passes + 1, sizeof(double));
        slices[t].end = calloc(passes + 1, sizeof(double));
        pthread_create(&ids[t], NULL, reader, &slices[t]);
    }
    uint64_t check = 0;
    for (int t = 0; t < threads; t++) { pthread_join(ids[t], NULL); check += slices[t].sum; }
    for (int pass = 1; pass <= passes; pass++) {
        double begin = slices[0].begin[pass], end = slices[0].end[pass];
        for (int t = 1; t < threads; t++) {
            if (slices[t].begin[pass] < begin) begin = slices[t].begin[pass];
            if (slices[t].end[pass] > end) end = slices[t].end[pass];
        }
        gbps[pass - 1] = (double)per * 8 * threads / (end - begin) / 1e9;
    }
    qsort(gbps, passes, sizeof(double), by_value);
    printf("{\"label\": \"%s\", \"bytes\": %zu, \"threads\": %d, \"passes\": %d, \"best_gbps\": %.3f, \"median_gbps\": %.3f, \"check\": %llu}\n",
           argv[1], per * 8 * threads, threads, passes, gbps[passes - 1], gbps[passes / 2], (unsigned long long)(check & 0xff));
    return 0;
}
