/* TCP tensor-parallel groups: see tessel_net.h. */
#define _GNU_SOURCE
#include "tessel_net.h"
#include "tc_clock.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#define TN_MAGIC 0x74657373656c4e31ULL /* "tesselN1" */
#define TN_VERSION 1u
/* How long a wait retries non-blocking I/O before it sleeps in poll(2). */
#define TN_SPIN_NS 20000L
/* Most peers one exchange talks to at once (the rest of the group is poll's problem). */
#define TN_MAX_WORLD 256

typedef struct {
    uint64_t magic;
    uint32_t version, rank, world, flags;
    uint64_t fingerprint;
} tn_hello;

typedef struct {
    uint64_t magic;
    uint32_t verdict, rank;
    uint64_t group_id; /* rank 0's, passed on by every rank */
} tn_answer;

enum { TN_ACCEPTED = 0, TN_OTHER_WORLD = 1, TN_OTHER_FINGERPRINT = 2, TN_DUPLICATE_RANK = 3, TN_BAD_RANK = 4, TN_OTHER_SEALING = 5 };
/* tn_hello.flags: the rank seals its payloads (it was given a key). */
#define TN_SEALED 1u

/* Precedes every payload: the collective it belongs to and its length. */
typedef struct {
    uint32_t sequence, bytes;
} tn_frame;

#define TN_TAG crypto_aead_chacha20poly1305_ietf_ABYTES

/* The sealing of one direction of one connection: its key and its next message's number. */
typedef struct {
    uint8_t key[crypto_aead_chacha20poly1305_ietf_KEYBYTES];
    uint64_t counter;
} tn_seal;

struct tc_net {
    int rank, world;
    int fds[TN_MAX_WORLD]; /* -1 for this rank */
    float *scratch;        /* world × max_bytes: a receive area per rank */
    size_t max_bytes;
    uint32_t sequence;
    uint64_t group_id;
    /* With a key: per peer, the sealing of what this rank sends and of what it receives, and
     * areas of max_bytes + TN_TAG for the sealed payloads going out and coming in. */
    int sealed;
    tn_seal *outgoing, *incoming;
    uint8_t *sealed_out, *sealed_in;
};

uint64_t tc_net_group_id(const tc_net *net) { return net->group_id; }

static tc_status failf(char *message, size_t size, tc_status status, const char *format, ...) {
    if (message && size) {
        va_list arguments;
        va_start(arguments, format);
        vsnprintf(message, size, format, arguments);
        va_end(arguments);
    }
    return status;
}

static int poll_ms(long deadline) {
    long left = deadline - now_ns();
    if (left <= 0) return 0;
    long ms = (left + 999999L) / 1000000L;
    return ms > 1000 ? 1000 : (int)ms;
}

static void tune(int fd) {
    int one = 1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

/* Moves all `bytes` of `buffer` over the non-blocking `fd` (sending or receiving) by
 * `deadline`: 0 done, 1 deadline, 2 connection closed or failed. */
static int move_all(int fd, void *buffer, size_t bytes, int sending, long deadline) {
    size_t done = 0;
    while (done < bytes) {
        ssize_t moved = sending ? send(fd, (char *)buffer + done, bytes - done, MSG_NOSIGNAL)
                                : recv(fd, (char *)buffer + done, bytes - done, 0);
        if (moved > 0) {
            done += (size_t)moved;
            continue;
        }
        if (moved == 0 && !sending) return 2;
        if (moved < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 2;
        if (now_ns() >= deadline) return 1;
        struct pollfd p = {fd, sending ? POLLOUT : POLLIN, 0};
        poll(&p, 1, poll_ms(deadline));
    }
    return 0;
}

static int resolve(const char *host, int port, int passive, struct addrinfo **out) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    return getaddrinfo(host, service, &hints, out);
}

static int listen_on(const char *host, int port, int backlog, int *error) {
    struct addrinfo *addresses = NULL;
    int status = resolve(host, port, 1, &addresses);
    if (status != 0) {
        *error = -status;
        return -1;
    }
    int fd = -1;
    *error = 0;
    for (struct addrinfo *a = addresses; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
            *error = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(addresses);
    if (fd >= 0) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* One connection attempt to `host:port`, waiting at most until `deadline`; -1 if it fails. */
static int connect_once(const char *host, int port, long deadline) {
    struct addrinfo *addresses = NULL;
    if (resolve(host, port, 0, &addresses) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = addresses; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        tune(fd);
        if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            int ok = 0;
            if (errno == EINPROGRESS) {
                struct pollfd p = {fd, POLLOUT, 0};
                if (poll(&p, 1, poll_ms(deadline)) == 1) {
                    int error = 0;
                    socklen_t length = sizeof error;
                    ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 && error == 0;
                }
            }
            if (!ok) {
                close(fd);
                fd = -1;
            }
        }
    }
    freeaddrinfo(addresses);
    return fd;
}

static const char *verdict_text(uint32_t verdict) {
    switch (verdict) {
    case TN_OTHER_WORLD: return "belongs to a group of another size";
    case TN_OTHER_FINGERPRINT: return "serves another model or shard geometry";
    case TN_DUPLICATE_RANK: return "is claimed by two processes";
    case TN_OTHER_SEALING: return "differs from this rank in encrypting payloads (keys given to some ranks only)";
    default: return "is not a rank of this group";
    }
}

/* The key of the direction `from` → `to` in formation `group_id`: BLAKE2b keyed by the group key. */
static void direction_key(const uint8_t *group_key, uint64_t group_id, int from, int to, uint8_t *out) {
    uint8_t message[16];
    memcpy(message, &group_id, 8);
    uint32_t ranks[2] = {(uint32_t)from, (uint32_t)to};
    memcpy(message + 8, ranks, 8);
    crypto_generichash(out, crypto_aead_chacha20poly1305_ietf_KEYBYTES, message, sizeof message, group_key, 32);
}

static uint8_t *sealed_area(uint8_t *areas, const tc_net *net, int peer) {
    return areas + (size_t)peer * (net->max_bytes + TN_TAG);
}

/* Seals `bytes` of `data` for `peer` into its outgoing area, the frame as associated data. */
static void seal(tc_net *net, int peer, const tn_frame *frame, const char *data, size_t bytes) {
    tn_seal *s = &net->outgoing[peer];
    uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = {0};
    memcpy(nonce, &s->counter, 8);
    s->counter++;
    crypto_aead_chacha20poly1305_ietf_encrypt(sealed_area(net->sealed_out, net, peer), NULL, (const uint8_t *)data, bytes,
                                              (const uint8_t *)frame, sizeof *frame, NULL, nonce, s->key);
}

/* Opens `peer`'s sealed payload of `bytes` (plain) into `data`; 0 when it is authentic. */
static int open_sealed(tc_net *net, int peer, const tn_frame *frame, char *data, size_t bytes) {
    tn_seal *s = &net->incoming[peer];
    uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = {0};
    memcpy(nonce, &s->counter, 8);
    s->counter++;
    return crypto_aead_chacha20poly1305_ietf_decrypt((uint8_t *)data, NULL, NULL, sealed_area(net->sealed_in, net, peer),
                                                     bytes + TN_TAG, (const uint8_t *)frame, sizeof *frame, nonce, s->key);
}

void tc_net_close(tc_net *net) {
    if (!net) return;
    for (int r = 0; r < net->world; r++)
        if (net->fds[r] >= 0) close(net->fds[r]);
    free(net->scratch);
    if (net->outgoing) sodium_memzero(net->outgoing, (size_t)net->world * sizeof(tn_seal));
    if (net->incoming) sodium_memzero(net->incoming, (size_t)net->world * sizeof(tn_seal));
    free(net->outgoing);
    free(net->incoming);
    free(net->sealed_out);
    free(net->sealed_in);
    free(net);
}

static tc_status prove_key(tc_net *net, long deadline, int *failed_rank);

tc_status tc_net_join(const char *const *hosts, const int *ports, int rank, int world, uint64_t fingerprint,
                      size_t max_bytes, const uint8_t *key, long timeout_ns, tc_net **out, int *failed_rank,
                      char *message, size_t message_size) {
    *out = NULL;
    *failed_rank = -1;
    if (world < 2 || world > TN_MAX_WORLD || rank < 0 || rank >= world)
        return failf(message, message_size, TC_MISMATCH, "rank %d of %d is outside a TCP group (2 to %d ranks)", rank, world, TN_MAX_WORLD);
    const long deadline = now_ns() + timeout_ns;
    tc_net *net = calloc(1, sizeof *net);
    if (!net) return failf(message, message_size, TC_SYSTEM, "out of memory");
    net->rank = rank;
    net->world = world;
    net->max_bytes = (max_bytes + 63) / 64 * 64;
    if (rank == 0) net->group_id = tc_random_id();
    for (int r = 0; r < TN_MAX_WORLD; r++) net->fds[r] = -1;
    if (posix_memalign((void **)&net->scratch, 64, (size_t)world * net->max_bytes) != 0) {
        free(net);
        return failf(message, message_size, TC_SYSTEM, "cannot allocate %zu bytes of receive buffers", (size_t)world * net->max_bytes);
    }
    if (key) {
        size_t area = (size_t)world * (net->max_bytes + TN_TAG);
        net->sealed = 1;
        net->outgoing = calloc((size_t)world, sizeof(tn_seal));
        net->incoming = calloc((size_t)world, sizeof(tn_seal));
        net->sealed_out = malloc(area);
        net->sealed_in = malloc(area);
        if (sodium_init() < 0 || !net->outgoing || !net->incoming || !net->sealed_out || !net->sealed_in) {
            tc_net_close(net);
            return failf(message, message_size, TC_SYSTEM, "cannot set up encryption (%zu bytes of buffers)", 2 * area);
        }
    }
    tc_status status = TC_OK;
    int error = 0;
    /* Listening first: a higher rank's connection waits in the backlog until this rank has met
     * the ranks below it (rank 0 meets nobody first, so the mesh always completes). */
    int listener = rank < world - 1 ? listen_on(hosts[rank], ports[rank], world, &error) : -1;
    if (rank < world - 1 && listener < 0) {
        status = failf(message, message_size, TC_SYSTEM, "rank %d cannot listen on %s:%d (%s)", rank, hosts[rank], ports[rank],
                       error < 0 ? gai_strerror(-error) : strerror(error));
        goto failed;
    }
    tn_hello hello = {TN_MAGIC, TN_VERSION, (uint32_t)rank, (uint32_t)world, key ? TN_SEALED : 0, fingerprint};
    for (int peer = 0; peer < rank; peer++) {
        for (;;) {
            if (now_ns() >= deadline) {
                *failed_rank = peer;
                status = failf(message, message_size, TC_TIMEOUT, "rank %d did not answer at %s:%d in time (this is rank %d)",
                               peer, hosts[peer], ports[peer], rank);
                goto failed;
            }
            int fd = connect_once(hosts[peer], ports[peer], deadline);
            if (fd < 0) {
                sleep_ns(50000000L);
                continue;
            }
            tn_answer answer;
            if (move_all(fd, &hello, sizeof hello, 1, deadline) != 0 || move_all(fd, &answer, sizeof answer, 0, deadline) != 0 ||
                answer.magic != TN_MAGIC) {
                close(fd); /* not (yet) a rank of ours: try again */
                sleep_ns(50000000L);
                continue;
            }
            if (answer.verdict != TN_ACCEPTED) {
                close(fd);
                *failed_rank = peer;
                status = failf(message, message_size, TC_MISMATCH, "rank %d at %s:%d refused rank %d: rank %d %s", peer, hosts[peer],
                               ports[peer], rank, rank, verdict_text(answer.verdict));
                goto failed;
            }
            if (peer == 0) net->group_id = answer.group_id;
            net->fds[peer] = fd;
            break;
        }
    }
    for (int waiting = world - 1 - rank; waiting > 0;) {
        struct pollfd p = {listener, POLLIN, 0};
        if (now_ns() >= deadline) {
            for (int peer = rank + 1; peer < world; peer++)
                if (net->fds[peer] < 0) *failed_rank = peer;
            status = failf(message, message_size, TC_TIMEOUT, "rank %d did not join in time (this is rank %d, at %s:%d)",
                           *failed_rank, rank, hosts[rank], ports[rank]);
            goto failed;
        }
        if (poll(&p, 1, poll_ms(deadline)) != 1) continue;
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        tune(fd);
        tn_hello theirs;
        long hello_deadline = now_ns() + 5000000000L;
        if (move_all(fd, &theirs, sizeof theirs, 0, hello_deadline < deadline ? hello_deadline : deadline) != 0 ||
            theirs.magic != TN_MAGIC || theirs.version != TN_VERSION) {
            close(fd); /* a stranger */
            continue;
        }
        int peer = (int)theirs.rank;
        uint32_t verdict = TN_ACCEPTED;
        if (theirs.world != (uint32_t)world) verdict = TN_OTHER_WORLD;
        else if (peer <= rank || peer >= world) verdict = TN_BAD_RANK;
        else if (net->fds[peer] >= 0) verdict = TN_DUPLICATE_RANK;
        else if (theirs.fingerprint != fingerprint) verdict = TN_OTHER_FINGERPRINT;
        else if (((theirs.flags & TN_SEALED) != 0) != (key != NULL)) verdict = TN_OTHER_SEALING;
        tn_answer answer = {TN_MAGIC, verdict, (uint32_t)rank, net->group_id};
        int sent = move_all(fd, &answer, sizeof answer, 1, deadline) == 0;
        if (verdict != TN_ACCEPTED) {
            close(fd);
            *failed_rank = peer;
            if (verdict == TN_OTHER_WORLD)
                status = failf(message, message_size, TC_MISMATCH, "rank %d belongs to a group of %u ranks, this rank %d to one of %d",
                               peer, theirs.world, rank, world);
            else
                status = failf(message, message_size, TC_MISMATCH, "rank %d %s (this is rank %d)", peer, verdict_text(verdict), rank);
            goto failed;
        }
        if (!sent) {
            close(fd);
            continue;
        }
        net->fds[peer] = fd;
        waiting--;
    }
    if (listener >= 0) close(listener);
    net->sequence = 0;
    if (key) {
        for (int peer = 0; peer < world; peer++) {
            if (peer == rank) continue;
            direction_key(key, net->group_id, rank, peer, net->outgoing[peer].key);
            direction_key(key, net->group_id, peer, rank, net->incoming[peer].key);
        }
        status = prove_key(net, deadline, failed_rank);
        if (status != TC_OK) {
            status = status == TC_FORGED
                ? failf(message, message_size, TC_FORGED, "rank %d does not hold this group's key (this is rank %d)", *failed_rank, rank)
                : failf(message, message_size, status, "rank %d left while the ranks proved their key (this is rank %d)", *failed_rank, rank);
            tc_net_close(net);
            return status;
        }
    }
    *out = net;
    return TC_OK;

failed:
    if (listener >= 0) close(listener);
    tc_net_close(net);
    return status;
}

/* One side of an exchange: a framed payload to send to or receive from one peer. */
typedef struct tn_transfer {
    int peer;
    tn_frame frame;
    char *data;
    size_t bytes;
    size_t done; /* of sizeof(tn_frame) + bytes */
} tn_transfer;

/* 1: finished, 0: would block, -1: the peer is gone, -2: it sent something else. */
static int advance(const tc_net *net, tn_transfer *t, int sending, uint32_t sequence) {
    const size_t total = sizeof(tn_frame) + t->bytes;
    while (t->done < total) {
        struct iovec parts[2];
        int count = 0;
        if (t->done < sizeof(tn_frame)) {
            parts[count++] = (struct iovec){(char *)&t->frame + t->done, sizeof(tn_frame) - t->done};
            if (t->bytes) parts[count++] = (struct iovec){t->data, t->bytes};
        } else {
            size_t offset = t->done - sizeof(tn_frame);
            parts[count++] = (struct iovec){t->data + offset, t->bytes - offset};
        }
        struct msghdr header = {0};
        header.msg_iov = parts;
        header.msg_iovlen = (size_t)count;
        int fd = net->fds[t->peer];
        ssize_t moved = sending ? sendmsg(fd, &header, MSG_NOSIGNAL | MSG_DONTWAIT) : recvmsg(fd, &header, MSG_DONTWAIT);
        if (moved == 0 && !sending) return -1;
        if (moved < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
            return -1;
        }
        size_t before = t->done;
        t->done += (size_t)moved;
        if (!sending && before < sizeof(tn_frame) && t->done >= sizeof(tn_frame) &&
            (t->frame.sequence != sequence || t->frame.bytes != (uint32_t)t->bytes))
            return -2;
    }
    return 1;
}

/* Runs `sends` and `receives` together until all are done; fails with the peer that is gone,
 * or that moved nothing for `timeout_ns`. */
static tc_status exchange(tc_net *net, tn_transfer *sends, int send_count, tn_transfer *receives, int receive_count,
                          uint32_t sequence, long timeout_ns, int *failed_rank) {
    /* Sealed: the payloads go out of and come into the sealed areas, TN_TAG bytes longer. */
    char *targets[TN_MAX_WORLD];
    for (int i = 0; i < send_count; i++) {
        tn_transfer *t = &sends[i];
        if (net->sealed) {
            t->frame = (tn_frame){sequence, (uint32_t)(t->bytes + TN_TAG)};
            seal(net, t->peer, &t->frame, t->data, t->bytes);
            t->data = (char *)sealed_area(net->sealed_out, net, t->peer);
            t->bytes += TN_TAG;
        }
        t->frame = (tn_frame){sequence, (uint32_t)t->bytes};
    }
    if (net->sealed) {
        for (int i = 0; i < receive_count; i++) {
            targets[i] = receives[i].data;
            receives[i].data = (char *)sealed_area(net->sealed_in, net, receives[i].peer);
            receives[i].bytes += TN_TAG;
        }
    }
    long progress = now_ns(), spin_until = progress + TN_SPIN_NS;
    struct pollfd waits[2 * TN_MAX_WORLD];
    int owners[2 * TN_MAX_WORLD];
    for (;;) {
        int moved = 0, waiting = 0;
        for (int side = 0; side < 2; side++) {
            tn_transfer *list = side == 0 ? sends : receives;
            int count = side == 0 ? send_count : receive_count;
            for (int i = 0; i < count; i++) {
                tn_transfer *t = &list[i];
                if (t->done == sizeof(tn_frame) + t->bytes) continue;
                size_t before = t->done;
                int state = advance(net, t, side == 0, sequence);
                if (state == -1) {
                    *failed_rank = t->peer;
                    return TC_PEER_DEAD;
                }
                if (state == -2) {
                    *failed_rank = t->peer;
                    return TC_MISMATCH;
                }
                if (t->done != before) moved = 1;
                if (state == 0) {
                    waits[waiting] = (struct pollfd){net->fds[t->peer], side == 0 ? POLLOUT : POLLIN, 0};
                    owners[waiting++] = t->peer;
                }
            }
        }
        if (waiting == 0) {
            for (int i = 0; net->sealed && i < receive_count; i++) {
                tn_transfer *t = &receives[i];
                if (open_sealed(net, t->peer, &t->frame, targets[i], t->bytes - TN_TAG) != 0) {
                    *failed_rank = t->peer;
                    return TC_FORGED;
                }
            }
            return TC_OK;
        }
        long now = now_ns();
        if (moved) progress = now;
        if (now - progress >= timeout_ns) {
            *failed_rank = owners[0];
            return TC_TIMEOUT;
        }
        if (now < spin_until) continue;
        poll(waits, (nfds_t)waiting, poll_ms(progress + timeout_ns));
    }
}

/* Every rank sends every other a sealed token (the formation's id) and opens theirs: a peer
 * without the key fails it with TC_FORGED. Sequence 0, before any collective. */
static tc_status prove_key(tc_net *net, long deadline, int *failed_rank) {
    tn_transfer sends[TN_MAX_WORLD], receives[TN_MAX_WORLD];
    uint64_t tokens[TN_MAX_WORLD];
    int n = 0;
    for (int peer = 0; peer < net->world; peer++) {
        if (peer == net->rank) continue;
        sends[n] = (tn_transfer){peer, {0, 0}, (char *)&net->group_id, sizeof net->group_id, 0};
        receives[n] = (tn_transfer){peer, {0, 0}, (char *)&tokens[peer], sizeof tokens[peer], 0};
        n++;
    }
    long left = deadline - now_ns();
    tc_status status = exchange(net, sends, n, receives, n, 0, left > 1000000000L ? left : 1000000000L, failed_rank);
    if (status != TC_OK) return status;
    for (int peer = 0; peer < net->world; peer++) {
        if (peer != net->rank && tokens[peer] != net->group_id) {
            *failed_rank = peer;
            return TC_FORGED;
        }
    }
    return TC_OK;
}

static float *area(const tc_net *net, int rank) {
    return (float *)((char *)net->scratch + (size_t)rank * net->max_bytes);
}

static tc_status allreduce_direct(tc_net *net, float *values, size_t count, uint32_t sequence, long timeout_ns, int *failed_rank) {
    tn_transfer sends[TN_MAX_WORLD], receives[TN_MAX_WORLD];
    int n = 0;
    for (int peer = 0; peer < net->world; peer++) {
        if (peer == net->rank) continue;
        sends[n] = (tn_transfer){peer, {0, 0}, (char *)values, count * sizeof(float), 0};
        receives[n] = (tn_transfer){peer, {0, 0}, (char *)area(net, peer), count * sizeof(float), 0};
        n++;
    }
    tc_status status = exchange(net, sends, n, receives, n, sequence, timeout_ns, failed_rank);
    if (status != TC_OK) return status;
    /* In rank order, so every rank gets the same bits: ((v0 + v1) + v2) + … */
    float *sum = net->rank == 0 ? values : area(net, 0);
    for (int peer = 1; peer < net->world; peer++) {
        const float *add = peer == net->rank ? values : area(net, peer);
        for (size_t i = 0; i < count; i++) sum[i] += add[i];
    }
    if (sum != values) memcpy(values, sum, count * sizeof(float));
    return TC_OK;
}

static tc_status allreduce_ring(tc_net *net, float *values, size_t count, uint32_t sequence, long timeout_ns, int *failed_rank) {
    const int world = net->world, rank = net->rank, next = (rank + 1) % world, previous = (rank + world - 1) % world;
#define CHUNK_START(c) ((size_t)(c) * count / (size_t)world)
#define CHUNK_COUNT(c) (CHUNK_START((c) + 1) - CHUNK_START(c))
    float *incoming = area(net, previous);
    for (int step = 0; step < world - 1; step++) {
        int out = (rank - step + world) % world, in = (rank - step - 1 + 2 * world) % world;
        tn_transfer send = {next, {0, 0}, (char *)(values + CHUNK_START(out)), CHUNK_COUNT(out) * sizeof(float), 0};
        tn_transfer receive = {previous, {0, 0}, (char *)incoming, CHUNK_COUNT(in) * sizeof(float), 0};
        tc_status status = exchange(net, &send, 1, &receive, 1, sequence, timeout_ns, failed_rank);
        if (status != TC_OK) return status;
        float *target = values + CHUNK_START(in);
        for (size_t i = 0, n = CHUNK_COUNT(in); i < n; i++) target[i] += incoming[i];
    }
    for (int step = 0; step < world - 1; step++) {
        int out = (rank + 1 - step + world) % world, in = (rank - step + world) % world;
        tn_transfer send = {next, {0, 0}, (char *)(values + CHUNK_START(out)), CHUNK_COUNT(out) * sizeof(float), 0};
        tn_transfer receive = {previous, {0, 0}, (char *)(values + CHUNK_START(in)), CHUNK_COUNT(in) * sizeof(float), 0};
        tc_status status = exchange(net, &send, 1, &receive, 1, sequence, timeout_ns, failed_rank);
        if (status != TC_OK) return status;
    }
#undef CHUNK_START
#undef CHUNK_COUNT
    return TC_OK;
}

tc_status tc_net_allreduce_sum(tc_net *net, float *values, size_t count, size_t direct_bytes, long timeout_ns,
                               int *failed_rank) {
    *failed_rank = -1;
    if (count == 0) return TC_OK;
    if (count * sizeof(float) > net->max_bytes) return TC_MISMATCH;
    uint32_t sequence = ++net->sequence;
    if (net->world == 2 || count * sizeof(float) <= direct_bytes || count < (size_t)net->world)
        return allreduce_direct(net, values, count, sequence, timeout_ns, failed_rank);
    return allreduce_ring(net, values, count, sequence, timeout_ns, failed_rank);
}

tc_status tc_net_gather_columns(tc_net *net, const float *part, size_t rows, const size_t *columns, float *whole,
                                long timeout_ns, int *failed_rank) {
    *failed_rank = -1;
    uint32_t sequence = ++net->sequence;
    if (net->rank != 0) {
        tn_transfer send = {0, {0, 0}, (char *)part, rows * columns[net->rank] * sizeof(float), 0};
        return exchange(net, &send, 1, NULL, 0, sequence, timeout_ns, failed_rank);
    }
    tn_transfer receives[TN_MAX_WORLD];
    for (int peer = 1; peer < net->world; peer++) {
        if (rows * columns[peer] * sizeof(float) > net->max_bytes) return TC_MISMATCH;
        receives[peer - 1] = (tn_transfer){peer, {0, 0}, (char *)area(net, peer), rows * columns[peer] * sizeof(float), 0};
    }
    tc_status status = exchange(net, NULL, 0, receives, net->world - 1, sequence, timeout_ns, failed_rank);
    if (status != TC_OK) return status;
    size_t width = 0;
    for (int r = 0; r < net->world; r++) width += columns[r];
    size_t offset = 0;
    for (int r = 0; r < net->world; r++) {
        const float *source = r == 0 ? part : area(net, r);
        for (size_t row = 0; row < rows; row++)
            memcpy(whole + row * width + offset, source + row * columns[r], columns[r] * sizeof(float));
        offset += columns[r];
    }
    return TC_OK;
}

int tc_net_peers_alive(const tc_net *net, int *failed_rank) {
    /* POLLRDHUP: the peer closed its end, even with its last payload still unread here (a peer
     * that died inside a collective this rank never joined). */
    for (int peer = 0; peer < net->world; peer++) {
        int fd = net->fds[peer];
        if (fd < 0) continue;
        struct pollfd p = {fd, POLLRDHUP, 0};
        if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            *failed_rank = peer;
            return 0;
        }
    }
    return 1;
}
