/* A tensor-parallel group of processes on several hosts, meeting over TCP.
 *
 * Every rank listens on its own endpoint and holds one connection to every other rank (a full
 * mesh: rank r connects to the ranks below it and accepts the ranks above it). Joining checks
 * each peer's rank, world size and fingerprint with a hello and an answer, so a rank of another
 * model or geometry is refused with its rank named.
 *
 * Every transfer is framed by its collective's sequence number and its byte count, checked on
 * arrival. Waiting is poll(2) on the sockets: a peer whose process is gone closes its
 * connection and fails the collective at once with its rank; a live peer that sends nothing for
 * `timeout_ns` fails it as stalled. Payloads are little-endian floats: hosts of one group share
 * the byte order (the hello's magic checks it).
 *
 * With a key (32 secret bytes every rank holds), payloads are encrypted and authenticated
 * (ChaCha20-Poly1305, libsodium): each direction of each connection has its own key, derived
 * from the group key, the formation's id and the two ranks, and numbers its messages, so a
 * payload can be neither read, forged nor replayed. The join ends with an exchange of sealed
 * tokens: a rank without the key is refused by rank. */
#ifndef TESSEL_NET_H
#define TESSEL_NET_H

#include <stddef.h>
#include <stdint.h>

#include "tessel_shm.h" /* tc_status */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_net tc_net;

/* Joins the group of `world` ranks whose endpoints are `hosts[r]:ports[r]` (IPv4 or IPv6
 * literals or names), as `rank`, listening on its own entry. Connecting retries until
 * `timeout_ns` after the call (peers may start in any order). `max_bytes` is the largest
 * payload of any later collective; `key` is 32 bytes to encrypt with, or NULL. On failure returns non-zero, sets `*failed_rank` to the rank
 * at fault (or -1) and writes a message into `message`. */
tc_status tc_net_join(const char *const *hosts, const int *ports, int rank, int world, uint64_t fingerprint,
                      size_t max_bytes, const uint8_t *key, long timeout_ns, tc_net **out, int *failed_rank,
                      char *message, size_t message_size);

void tc_net_close(tc_net *net);

/* Rank 0's id for this formation of the group, handed to every rank at the join (as
 * tc_group_id). */
uint64_t tc_net_group_id(const tc_net *net);

/* values[i] = Σ over ranks of values[i] for i in 0 ..< count, the same bits on every rank: up
 * to `direct_bytes` (and always with two ranks) every rank sends its whole buffer to every
 * other and sums them in rank order; above, a ring (reduce-scatter, then all-gather). */
tc_status tc_net_allreduce_sum(tc_net *net, float *values, size_t count, size_t direct_bytes, long timeout_ns,
                               int *failed_rank);

/* Each rank gives `rows` rows of `columns[rank]` floats (`part`, packed); rank 0 receives them
 * into `whole`, rows of Σ columns floats, rank r's columns after those of ranks 0 ..< r. */
tc_status tc_net_gather_columns(tc_net *net, const float *part, size_t rows, const size_t *columns, float *whole,
                                long timeout_ns, int *failed_rank);

/* Whether every peer's connection is still open (a closed one: `*failed_rank` names it). */
int tc_net_peers_alive(const tc_net *net, int *failed_rank);

#ifdef __cplusplus
}
#endif
#endif
