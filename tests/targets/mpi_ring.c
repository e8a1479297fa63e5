// An MPI program (run under mpirun with any number of ranks): a ring exchange (MPI_Sendrecv of small and large messages) and an MPI_Allreduce every iteration, so every transport between the ranks carries data at any moment.
//
// usage: mpi_ring ITERATIONS [DELAY_US]: every rank keeps a block of
// deterministic 64-bit words; each iteration it sends its block to the right
// neighbour and receives the left one's (every 8th iteration the block is
// 256 KiB, else 1 KiB, so both the eager and the rendezvous paths are used),
// mixes what it received into its own, and all ranks sum their checksums
// with MPI_Allreduce. Rank 0 prints one line per iteration (the iteration
// and the global sum), then "ring done" with a final sum. Every rank checks
// that the block it received is what its left neighbour must have sent and
// aborts otherwise. DELAY_US (default 20000) is slept between iterations.
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SMALL_WORDS 128
#define LARGE_WORDS 32768

static uint64_t mix(uint64_t x) {
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ull;
    x ^= x >> 29;
    return x;
}

// The block rank `rank` sends at iteration `it`, as a function of its state.
static void fill(uint64_t *block, int words, uint64_t state, int rank, int it) {
    for (int i = 0; i < words; i++)
        block[i] = mix(state + (uint64_t)i * 7919 + (uint64_t)rank * 104729 + (uint64_t)it);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 2) {
        if (rank == 0)
            fprintf(stderr, "usage: mpi_ring ITERATIONS [DELAY_US]\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int iterations = atoi(argv[1]);
    useconds_t delay = argc > 2 ? (useconds_t)atoi(argv[2]) : 20000;

    uint64_t *out = malloc(LARGE_WORDS * sizeof(uint64_t));
    uint64_t *in = malloc(LARGE_WORDS * sizeof(uint64_t));
    uint64_t *expected = malloc(LARGE_WORDS * sizeof(uint64_t));
    if (!out || !in || !expected)
        MPI_Abort(MPI_COMM_WORLD, 3);

    int right = (rank + 1) % size, left = (rank + size - 1) % size;
    // Every rank's state is known to all: it evolves only through the global sum.
    uint64_t global = 0x5eed;
    uint64_t state = mix(global + (uint64_t)rank);
    for (int it = 0; it < iterations; it++) {
        int words = it % 8 == 7 ? LARGE_WORDS : SMALL_WORDS;
        fill(out, words, state, rank, it);
        MPI_Sendrecv(out, words, MPI_UINT64_T, right, it, in, words, MPI_UINT64_T, left, it,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        fill(expected, words, mix(global + (uint64_t)left), left, it);
        uint64_t local = 0;
        for (int i = 0; i < words; i++) {
            if (in[i] != expected[i]) {
                fprintf(stderr, "rank %d: iteration %d: word %d from rank %d is %llx, not %llx\n",
                        rank, it, i, left, (unsigned long long)in[i],
                        (unsigned long long)expected[i]);
                MPI_Abort(MPI_COMM_WORLD, 4);
            }
            local += mix(in[i] ^ state);
        }
        uint64_t sum = 0;
        MPI_Allreduce(&local, &sum, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
        global = mix(global ^ sum);
        state = mix(global + (uint64_t)rank);
        if (rank == 0) {
            printf("iteration %d: %016llx\n", it, (unsigned long long)sum);
            fflush(stdout);
        }
        usleep(delay);
    }
    if (rank == 0) {
        printf("ring done: %016llx\n", (unsigned long long)global);
        fflush(stdout);
    }
    free(out);
    free(in);
    free(expected);
    MPI_Finalize();
    return 0;
}
