/* A tensor-parallel group of processes on one host, meeting in one shared-memory segment.
 *
 * The segment holds a header (one cache line per rank: its pid, its arrival counter, the count
 * of peers sleeping on that counter) and two sets of one slot per rank. A collective is: each
 * rank writes its part into its slot of the current set, arrives (bumps its counter), waits for
 * every other rank's counter, then reads the others' slots. Consecutive collectives alternate
 * sets, so a rank never overwrites a slot a slower peer is still reading: it reaches collective
 * n + 2 only after every peer arrived at n + 1, which each did after finishing n.
 *
 * Waiting spins briefly, then sleeps on the counter's futex (shared between processes), waking
 * every few milliseconds to see whether the peer is still alive: a dead peer or a deadline fails
 * the wait with that peer's rank. No locks anywhere. */
#ifndef TESSEL_SHM_H
#define TESSEL_SHM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_group tc_group;

typedef enum {
    TC_OK = 0,
    /* A peer did not arrive before the deadline (it is alive but stalled). */
    TC_TIMEOUT = 1,
    /* A peer's process is gone. */
    TC_PEER_DEAD = 2,
    /* A system call failed; `errno` is in the message. */
    TC_SYSTEM = 3,
    /* The segment's geometry or fingerprint differs from this rank's. */
    TC_MISMATCH = 4,
    /* A TCP peer's encrypted payload failed authentication: it does not hold the group's key. */
    TC_FORGED = 5,
} tc_status;

/* Joins (rank 0: creates) the group named `name` (a POSIX shared-memory name, "/…"). Rank 0
 * removes any segment of that name left behind and creates a fresh one; the others open it
 * once it exists (retrying, and ignoring segments whose creator is dead). Every rank then waits
 * until all `world` ranks have joined, after which rank 0 removes the name (the mapping lives on
 * until the last rank closes it). On failure returns non-zero, sets `*failed_rank` to the rank
 * that did not come (or -1) and writes a message into `message`. */
tc_status tc_group_join(const char *name, int rank, int world, size_t slot_bytes, uint64_t fingerprint,
                        long timeout_ns, tc_group **out, int *failed_rank, char *message, size_t message_size);

void tc_group_close(tc_group *group);

/* The id rank 0 drew when it created the group: equal on every rank of this formation of it,
 * different in the next (after a restart), so a router can tell a fresh group from a broken one. */
uint64_t tc_group_id(const tc_group *group);

/* Slot `rank` of set `set` (0 or 1): `slot_bytes` bytes, 64-byte aligned. */
void *tc_group_slot(const tc_group *group, int rank, int set);

/* Arrives at collective number `sequence` (1, 2, …) and waits until every other rank has too:
 * spinning for up to `spin_ns`, then sleeping. Fails with the first peer that is dead or has
 * not arrived `timeout_ns` after the call. */
tc_status tc_group_arrive_and_wait(tc_group *group, uint32_t sequence, long spin_ns, long timeout_ns,
                                   int *failed_rank);

/* Whether every other rank's process is still alive; if not, `*failed_rank` is the first gone. */
int tc_group_peers_alive(const tc_group *group, int *failed_rank);

/* out[i] = slot(0)[offset + i] + slot(1)[offset + i] + … (in rank order, so every rank that
 * sums the same range gets the same bits) for i in 0 ..< count, over floats of set `set`. */
void tc_group_sum_floats(const tc_group *group, int set, size_t offset, size_t count, float *out);

#ifdef __cplusplus
}
#endif
#endif
