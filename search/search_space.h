/*
 * search_space.h -- the legal schedule space of one problem: enumeration,
 * seeded uniform sampling, mutation and crossover (the operators a tuner
 * needs), all deterministic given the seed.
 *
 * A problem is an op on a shape (num_rows, d_in -> max_rank -> d_out[slice]),
 * a dtype and a target GPU. The space holds every schedule that
 * search_schedule_legal accepts for max_rank AND that passes the problem's
 * own rules (search_space_legal lists them), each annotation drawn from its
 * domain:
 *
 *   sketch   split, fused, counter,     fused, counter and cluster: op apply
 *            cluster                    only; cluster: sm_90 or newer (cc_major
 *                                       >= 9: thread-block clusters)
 *   mma      0 1                        1 (tensor cores): d_in % 8 == 0 and 16
 *                                       rows per CTA pass the rows rule; then
 *                                       rows 16 and vec 8 (search_schedule_legal)
 *   rows     1 2 4 8 16 32              <= the next power of two >= num_rows, and
 *                                       the CTA's shared memory (rows x max_rank
 *                                       fp32, twice for cluster, + the row tile)
 *                                       fits smem_per_block
 *   warps    1 2 4 8 16                 32 * warps <= 1024 threads
 *   vec      1 2 4 8                    divides d_in (else the kernel silently
 *                                       falls back to scalar loads)
 *   split_k  1 2 3 4 6 8 12 16 24 32 48 64
 *                                       split, counter and cluster sketches:
 *                                       <= ceil(d_in / gran), gran = 32 * vec
 *                                       (256 with mma), and exactly the number
 *                                       of CTAs the launcher makes of it (it
 *                                       rounds each CTA's K range up to whole
 *                                       gran-element loads, so e.g. 12 over 4096
 *                                       at vec 8 would run as 8: left out);
 *                                       cluster: also <= SEARCH_MAX_CLUSTER (16,
 *                                       the cluster size); fused: 1
 *   kc       mma 0: 32 * vec * {1 2 4 8 16}
 *                                       loads per lane (kc / (32 * vec)) <= the
 *                                       next power of two of the loads one CTA's
 *                                       K range holds (more would only be masked)
 *            mma 1: 16 * {1 2 4 8}      kc / 16 <= the next power of two of
 *                                       (K range of one CTA) / 16, at most 8
 *   stages   1 2 3 4                    2..4 (cp.async ring of x and A tiles)
 *                                       only with mma and not for op expand; the
 *                                       ring (stages x (16 + max_rank rounded up
 *                                       to 8) x (kc + 8) x 2 bytes) fits
 *                                       smem_per_block with the rest of the CTA
 *   cols     32 64 128 256 512 1024     <= the next power of two >= max d_out
 *   persist  0 1                        free for split, fused and counter: their
 *                                       entry points have the persistent loop
 *                                       (1-D grid of the CTAs that fit at once,
 *                                       grid-stride over tiles); cluster: 0
 *
 * Annotations an op's kernels never read are pinned, so no two schedules of
 * the space differ only in what the op ignores: op expand pins vec 1,
 * kc 32 and split_k 1 (with mma: vec 8, kc 16, split_k 1: its tensor-core
 * path reads neither) and stages 1; op shrink pins cols 32 (and split_k 1
 * when it overwrites its output, as the runtime forces); without mma stages
 * is pinned to 1; the cluster sketch (launched as clusters, no persistent
 * loop) pins persist to 0.
 *
 * The search module depends on nothing but search_schedule.h.
 */
#ifndef DOP_SEARCH_SPACE_H
#define DOP_SEARCH_SPACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "search_schedule.h"

/* search_problem.op is a search_op and .dtype a search_dtype (search_schedule.h). */

typedef struct search_problem {
    int op;         /* SEARCH_OP_* */
    int dtype;      /* SEARCH_DTYPE_* (both are 2 bytes: no rule depends on it) */
    int num_rows;   /* >= 1 */
    int d_in;       /* >= 1 */
    int num_slices; /* 1 .. SEARCH_MAX_SLICES */
    int d_out[SEARCH_MAX_SLICES]; /* >= 1 for the first num_slices (ignored by op shrink) */
    int max_rank;   /* 1 .. 128 */
    int cc_major, cc_minor; /* target architecture, sm_80 or newer */
    int sm_count;   /* of the target (not a legality input; for models and tools) */
    int smem_per_block; /* bytes of static shared memory a CTA may use; 0: SEARCH_STATIC_SMEM_LIMIT */
    int shrink_overwrite; /* op shrink without DOP_SHRINK_ACCUMULATE: split_k must be 1 */
} search_problem;

/* Number of annotation fields mutation and crossover work on (sketch, mma,
 * stages and persist included). */
#define SEARCH_SPACE_FIELDS 10

/* Whether the problem itself is well-formed (why says which field is not). */
bool search_problem_valid(const search_problem *p, char *why, size_t why_len);

/* Whether s is in p's space: search_schedule_legal plus the problem's rules. */
bool search_space_legal(const search_problem *p, const search_schedule *s, char *why, size_t why_len);

/* Entries of search_space_count's counts: the total, then one per sketch. */
#define SEARCH_SPACE_COUNTS (SEARCH_SKETCH_CLUSTER + 1)

/*
 * Size of p's space. counts (may be NULL) is indexed by search_sketch and
 * needs SEARCH_SPACE_COUNTS (5) entries: counts[0] gets the total,
 * counts[SEARCH_SKETCH_SPLIT], counts[SEARCH_SKETCH_FUSED],
 * counts[SEARCH_SKETCH_FUSED_COUNTER] and counts[SEARCH_SKETCH_CLUSTER] the
 * per-sketch sizes. Returns the total, or -1 (counts all 0) for an invalid
 * problem.
 */
long search_space_count(const search_problem *p, long *counts);

/*
 * Calls fn for every schedule of the space in a fixed order (sketch split,
 * fused, counter, cluster, then mma, rows, warps, vec, split_k, kc, stages,
 * cols, persist ascending). A nonzero
 * return from fn stops the walk. Returns how many schedules fn was given,
 * or -1 for an invalid problem.
 */
typedef int (*search_space_fn)(const search_schedule *s, void *user);
long search_space_enumerate(const search_problem *p, search_space_fn fn, void *user);

/* The index-th schedule of the enumeration order; 0, or -1 when out of range. */
int search_space_at(const search_problem *p, long index, search_schedule *out);

/* splitmix64: the generator every operator here draws from. */
uint64_t search_rng_next(uint64_t *state);
/* Uniform integer in [0, n) (n >= 1), without modulo bias. */
uint64_t search_rng_below(uint64_t *state, uint64_t n);

/*
 * A schedule drawn uniformly from the space (rejection sampling over the
 * annotation grid, then an exact draw by index if a bounded number of tries
 * all missed: uniform either way). 0, or -1 for an invalid or empty space.
 */
int search_space_sample(const search_problem *p, uint64_t *rng, search_schedule *out);
/* Same, restricted to one sketch (0: any). */
int search_space_sample_sketch(const search_problem *p, int sketch, uint64_t *rng, search_schedule *out);

/*
 * The legal schedule nearest to in (fewest fields changed, then the smallest
 * changes; ties go to the first in enumeration order). Returns 0 when in was
 * already legal (out = in), 1 when fields were changed, -1 for an invalid or
 * empty space.
 */
int search_space_repair(const search_problem *p, const search_schedule *in, search_schedule *out);

/*
 * One move of the schedule: one annotation set to another value of its
 * domain, chosen by first drawing a field (sketch, rows, warps, vec, kc,
 * split_k, cols, mma, stages, persist) uniformly among those with a legal
 * move, then one of its moves. rows, warps, cols, stages and persist change
 * alone. The fields whose domain depends on another follow it when they
 * must: switching the sketch may also change rows, split_k, kc, stages and
 * persist (the cluster sketch's two intermediates take more shared memory,
 * its split_k is at most 16 and its persist 0), changing vec may also change
 * split_k, kc and stages, changing split_k may also change kc and stages,
 * changing kc may also change stages (the ring grows with kc), switching mma
 * may also change rows, vec, split_k, kc and stages (the fewest of them, each
 * to its nearest legal value, only when the old one is not legal any more;
 * e.g. to fused sets split_k 1, to cluster sets persist 0, to mma sets rows
 * 16 and vec 8, from mma sets stages 1).
 * Returns
 *   0   out differs from in by one move;
 *   1   no move is legal: out is another schedule of the space drawn
 *       uniformly, or in itself when the space holds nothing else;
 *   2   in was not in the space: out is search_space_repair(in);
 *  -1   invalid or empty space, or NULL arguments.
 */
int search_space_mutate(const search_problem *p, const search_schedule *in, uint64_t *rng, search_schedule *out);

/*
 * Uniform crossover: each of the ten fields (sketch, rows, warps, vec, kc,
 * split_k, cols, mma, stages, persist) taken from a or b by a coin flip; a child outside the space
 * is repaired to the legal schedule nearest to it that takes the most fields
 * from either parent. Returns how many fields of out match neither parent
 * (0 in the usual case), or -1 for an invalid or empty space or NULL
 * arguments. a and b need not be legal.
 */
int search_space_crossover(const search_problem *p, const search_schedule *a, const search_schedule *b, uint64_t *rng,
                           search_schedule *out);

#endif
