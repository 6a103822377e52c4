/* Shared-memory tensor-parallel groups: see tessel_shm.h. */
#define _GNU_SOURCE
#include "tessel_shm.h"
#include "tc_clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define tc_cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define tc_cpu_relax() __asm__ __volatile__("yield")
#else
#define tc_cpu_relax() ((void)0)
#endif

#define TC_MAGIC 0x74657373656c4731ULL /* "tesselG1" */
#define TC_VERSION 1u
#define TC_LINE 64
/* How long a sleeping waiter sleeps before it looks at its peer's pid again. */
#define TC_POLL_NS 20000000L

typedef struct {
    _Atomic uint32_t arrived;  /* futex word: the last collective this rank arrived at */
    _Atomic uint32_t sleepers; /* peers asleep on `arrived` */
    _Atomic int32_t pid;       /* 0 until the rank has joined */
    char pad[TC_LINE - 12];
} tc_rank_line;

typedef struct {
    uint64_t magic;
    uint32_t version;
    uint32_t world;
    uint64_t slot_bytes;
    uint64_t fingerprint;
    uint64_t group_id;            /* drawn by the creator: names this formation of the group */
    _Atomic uint32_t initialised; /* set last by the creator */
    char pad[TC_LINE - 44];
    tc_rank_line ranks[];
} tc_header;

struct tc_group {
    tc_header *header;
    size_t mapped_bytes;
    size_t slot_bytes;
    size_t header_bytes;
    int rank;
    int world;
};

/* Alive: it exists and is not a zombie (an exited process its parent has not reaped yet). */
static int process_alive(int32_t pid) {
    if (pid <= 0) return 0;
    if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return 0;
#if defined(__linux__)
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *file = fopen(path, "r");
    if (!file) return 1;
    size_t length = fread(line, 1, sizeof line - 1, file);
    fclose(file);
    line[length] = 0;
    /* "pid (command) state …": the command may hold spaces and parentheses; the state follows the last ')'. */
    char *end = strrchr(line, ')');
    if (end && end[1] == ' ' && (end[2] == 'Z' || end[2] == 'X')) return 0;
#endif
    return 1;
}

static size_t header_bytes_for(int world) {
    size_t bytes = sizeof(tc_header) + (size_t)world * sizeof(tc_rank_line);
    return (bytes + 4095) & ~(size_t)4095;
}

static size_t round_slot(size_t bytes) { return (bytes + TC_LINE - 1) & ~(size_t)(TC_LINE - 1); }

static void futex_wait_shared(_Atomic uint32_t *word, uint32_t expected, long timeout_ns) {
#if defined(__linux__)
    struct timespec t = {timeout_ns / 1000000000L, timeout_ns % 1000000000L};
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, &t, NULL, 0);
#else
    (void)word;
    (void)expected;
    sleep_ns(timeout_ns < 1000000L ? timeout_ns : 1000000L);
#endif
}

static void futex_wake_shared(_Atomic uint32_t *word) {
#if defined(__linux__)
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Counters wrap: `value` has reached `target` when it is at most 2^31 behind it. */
static int reached(uint32_t value, uint32_t target) { return (int32_t)(value - target) >= 0; }

static tc_status fail(char *message, size_t size, tc_status status, const char *format, const char *name, int number) {
    if (message && size) snprintf(message, size, format, name, number);
    return status;
}

void *tc_group_slot(const tc_group *group, int rank, int set) {
    return (char *)group->header + group->header_bytes + ((size_t)set * (size_t)group->world + (size_t)rank) * group->slot_bytes;
}

uint64_t tc_group_id(const tc_group *group) { return group->header->group_id; }

void tc_group_close(tc_group *group) {
    if (!group) return;
    munmap(group->header, group->mapped_bytes);
    free(group);
}

/* Maps the segment behind `fd`, of `bytes` bytes. */
static tc_header *map_segment(int fd, size_t bytes) {
    void *address = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return address == MAP_FAILED ? NULL : (tc_header *)address;
}

tc_status tc_group_join(const char *name, int rank, int world, size_t slot_bytes, uint64_t fingerprint,
                        long timeout_ns, tc_group **out, int *failed_rank, char *message, size_t message_size) {
    *out = NULL;
    *failed_rank = -1;
    if (world < 1 || rank < 0 || rank >= world)
        return fail(message, message_size, TC_MISMATCH, "%s: rank %d is outside the group", name, rank);
    const long deadline = now_ns() + timeout_ns;
    const size_t header_bytes = header_bytes_for(world), slot = round_slot(slot_bytes > 0 ? slot_bytes : 1);
    const size_t bytes = header_bytes + 2 * (size_t)world * slot;
    tc_header *header = NULL;

    if (rank == 0) {
        shm_unlink(name); /* a segment a crashed group left behind */
        int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0) return fail(message, message_size, TC_SYSTEM, "%s: cannot create the shared-memory segment (errno %d)", name, errno);
        if (ftruncate(fd, (off_t)bytes) != 0) {
            int error = errno;
            close(fd);
            shm_unlink(name);
            return fail(message, message_size, TC_SYSTEM, "%s: cannot size the shared-memory segment (errno %d)", name, error);
        }
        header = map_segment(fd, bytes);
        close(fd);
        if (!header) {
            shm_unlink(name);
            return fail(message, message_size, TC_SYSTEM, "%s: cannot map the shared-memory segment (errno %d)", name, errno);
        }
        header->magic = TC_MAGIC;
        header->version = TC_VERSION;
        header->world = (uint32_t)world;
        header->slot_bytes = slot;
        header->fingerprint = fingerprint;
        header->group_id = tc_random_id();
        atomic_store(&header->ranks[0].pid, (int32_t)getpid());
        atomic_store(&header->initialised, 1u);
    } else {
        for (;;) {
            if (now_ns() > deadline) {
                *failed_rank = 0;
                return fail(message, message_size, TC_TIMEOUT, "%s: rank 0 did not create the group's segment in time (this is rank %d)", name, rank);
            }
            int fd = shm_open(name, O_RDWR, 0600);
            if (fd < 0) {
                sleep_ns(5000000L);
                continue;
            }
            struct stat status;
            if (fstat(fd, &status) != 0 || (size_t)status.st_size < bytes) {
                /* Being sized by rank 0, or of another geometry: its header says which. */
                if ((size_t)status.st_size >= sizeof(tc_header)) {
                    tc_header *peek = map_segment(fd, sizeof(tc_header));
                    int ready = peek && atomic_load(&peek->initialised) == 1u;
                    int other = ready && (peek->world != (uint32_t)world || peek->slot_bytes != slot);
                    int32_t creator = ready ? atomic_load(&peek->ranks[0].pid) : 0;
                    if (peek) munmap(peek, sizeof(tc_header));
                    if (other && process_alive(creator)) {
                        close(fd);
                        return fail(message, message_size, TC_MISMATCH, "%s: the group's segment was made for another world size or model shape (this is rank %d)", name, rank);
                    }
                }
                close(fd);
                sleep_ns(5000000L);
                continue;
            }
            header = map_segment(fd, bytes);
            close(fd);
            if (!header) return fail(message, message_size, TC_SYSTEM, "%s: cannot map the shared-memory segment (errno %d)", name, errno);
            while (atomic_load(&header->initialised) != 1u && now_ns() < deadline) sleep_ns(1000000L);
            int32_t creator = atomic_load(&header->ranks[0].pid);
            if (atomic_load(&header->initialised) != 1u || !process_alive(creator)) {
                /* Left by a group whose rank 0 is gone: wait for the new rank 0 to replace it. */
                munmap(header, bytes);
                header = NULL;
                sleep_ns(5000000L);
                continue;
            }
            break;
        }
        if (header->magic != TC_MAGIC || header->version != TC_VERSION || header->world != (uint32_t)world ||
            header->slot_bytes != slot) {
            munmap(header, bytes);
            return fail(message, message_size, TC_MISMATCH, "%s: the group's segment was made for another world size or model shape (this is rank %d)", name, rank);
        }
        if (header->fingerprint != fingerprint) {
            munmap(header, bytes);
            return fail(message, message_size, TC_MISMATCH, "%s: rank 0 loaded a different model or shard geometry (this is rank %d)", name, rank);
        }
        int32_t expected = 0;
        int32_t mine = (int32_t)getpid();
        tc_rank_line *line = &header->ranks[rank];
        if (!atomic_compare_exchange_strong(&line->pid, &expected, mine)) {
            if (process_alive(expected)) {
                munmap(header, bytes);
                *failed_rank = rank;
                return fail(message, message_size, TC_MISMATCH, "%s: rank %d has already joined this group (another process)", name, rank);
            }
            atomic_store(&line->pid, mine);
        }
    }

    /* Everyone waits until the whole group is there. */
    for (int peer = 0; peer < world; peer++) {
        while (atomic_load(&header->ranks[peer].pid) == 0) {
            if (now_ns() > deadline || (peer != 0 && !process_alive(atomic_load(&header->ranks[0].pid)))) {
                munmap(header, bytes);
                if (rank == 0) shm_unlink(name);
                *failed_rank = peer;
                return fail(message, message_size, TC_TIMEOUT, "%s: rank %d did not join the group in time", name, peer);
            }
            sleep_ns(1000000L);
        }
    }
    if (rank == 0) shm_unlink(name);

    tc_group *group = calloc(1, sizeof(tc_group));
    if (!group) {
        munmap(header, bytes);
        return fail(message, message_size, TC_SYSTEM, "%s: out of memory (rank %d)", name, rank);
    }
    group->header = header;
    group->mapped_bytes = bytes;
    group->slot_bytes = slot;
    group->header_bytes = header_bytes;
    group->rank = rank;
    group->world = world;
    *out = group;
    return TC_OK;
}

tc_status tc_group_arrive_and_wait(tc_group *group, uint32_t sequence, long spin_ns, long timeout_ns,
                                   int *failed_rank) {
    tc_header *header = group->header;
    tc_rank_line *mine = &header->ranks[group->rank];
    atomic_store(&mine->arrived, sequence);
    if (atomic_load(&mine->sleepers) > 0) futex_wake_shared(&mine->arrived);

    const long start = now_ns();
    for (int peer = 0; peer < group->world; peer++) {
        if (peer == group->rank) continue;
        tc_rank_line *line = &header->ranks[peer];
        if (reached(atomic_load_explicit(&line->arrived, memory_order_acquire), sequence)) continue;
        /* Spin: the peer is usually microseconds behind. */
        int done = 0;
        while (now_ns() - start < spin_ns) {
            for (int i = 0; i < 64; i++) {
                if (reached(atomic_load_explicit(&line->arrived, memory_order_acquire), sequence)) {
                    done = 1;
                    break;
                }
                tc_cpu_relax();
            }
            if (done) break;
        }
        /* Sleep: announce it, re-check, then wait on the word (a wake-up is never lost: the
         * arriving rank stores its counter before it reads the sleepers). */
        while (!done) {
            atomic_fetch_add(&line->sleepers, 1u);
            uint32_t observed = atomic_load(&line->arrived);
            if (!reached(observed, sequence)) futex_wait_shared(&line->arrived, observed, TC_POLL_NS);
            atomic_fetch_sub(&line->sleepers, 1u);
            if (reached(atomic_load(&line->arrived), sequence)) break;
            if (!process_alive(atomic_load(&line->pid))) {
                *failed_rank = peer;
                return TC_PEER_DEAD;
            }
            if (now_ns() - start > timeout_ns) {
                *failed_rank = peer;
                return TC_TIMEOUT;
            }
        }
    }
    return TC_OK;
}

int tc_group_peers_alive(const tc_group *group, int *failed_rank) {
    for (int peer = 0; peer < group->world; peer++) {
        if (peer == group->rank) continue;
        if (!process_alive(atomic_load(&group->header->ranks[peer].pid))) {
            *failed_rank = peer;
            return 0;
        }
    }
    return 1;
}

void tc_group_sum_floats(const tc_group *group, int set, size_t offset, size_t count, float *out) {
    const float *first = (const float *)tc_group_slot(group, 0, set) + offset;
    for (size_t i = 0; i < count; i++) out[i] = first[i];
    for (int rank = 1; rank < group->world; rank++) {
        const float *part = (const float *)tc_group_slot(group, rank, set) + offset;
        for (size_t i = 0; i < count; i++) out[i] += part[i];
    }
}
