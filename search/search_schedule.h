/*
 * search_schedule.h -- a kernel schedule: one sketch (the structure of the
 * kernels) plus annotations (the numbers that fill it), as a small
 * fixed-size, versioned value that can be copied, hashed and stored.
 */
#ifndef DOP_SEARCH_SCHEDULE_H
#define DOP_SEARCH_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEARCH_SCHEDULE_VERSION 2

#define SEARCH_MAX_SLICES 8 /* DOP_MAX_SLICES */

/* The operations and dtypes, with the runtime's numbers (runtime_op, dop_dtype). */
typedef enum search_op { SEARCH_OP_APPLY = 0, SEARCH_OP_SHRINK = 1, SEARCH_OP_EXPAND = 2 } search_op;
typedef enum search_dtype { SEARCH_DTYPE_F16 = 1, SEARCH_DTYPE_BF16 = 2 } search_dtype;

typedef enum search_sketch {
    /* shrink (split-K over CTAs, fp32 atomics into scratch) then expand: two launches */
    SEARCH_SKETCH_SPLIT = 1,
    /* one launch; every CTA recomputes the intermediate of its rows */
    SEARCH_SKETCH_FUSED = 2,
    /* one launch after a memset: split-K partials of the intermediate are added
     * in global memory, and the last CTA of each row tile (a completion counter)
     * expands it (BOLT's back-to-back GEMM fusion, without a grid-wide barrier) */
    SEARCH_SKETCH_FUSED_COUNTER = 3,
    /* one launch of thread-block clusters (sm_90+): the split_k CTAs of a cluster
     * each shrink one K range of a row tile, add up the partials through
     * distributed shared memory, then each expands every split_k-th column tile;
     * no scratch, no memset, no atomics in global memory */
    SEARCH_SKETCH_CLUSTER = 4
} search_sketch;

/* Largest cluster (split_k of the cluster sketch): 16 CTAs, the non-portable
 * cluster size Hopper allows; the portable limit is 8. */
#define SEARCH_MAX_CLUSTER 16

typedef struct search_schedule {
    uint8_t version;   /* SEARCH_SCHEDULE_VERSION */
    uint8_t sketch;    /* search_sketch */
    uint8_t rows;      /* batch rows per CTA: 1, 2, 4, 8, 16, 32 */
    uint8_t warps;     /* warps per CTA: 1, 2, 4, 8, 16 */
    uint8_t vec;       /* elements per vector load along d_in: 1, 2, 4, 8 */
    uint8_t split_k;   /* CTAs sharing one row tile's d_in (split, counter; cluster: the
                        * cluster size, <= SEARCH_MAX_CLUSTER; 1 for fused) */
    uint16_t kc;       /* K elements a warp covers per loop step: 32 lanes x vec x 1..16 loads in flight */
    uint16_t cols;     /* output columns per CTA */
    uint8_t mma;       /* 0: CUDA-core FMAs; 1: tensor cores (mma.sync m16n8k16), 16-row tiles */
    uint8_t stages;    /* cp.async stages of the tensor-core shrink's x and A tiles in shared
                        * memory: 1 (no staging: fragments from global memory), 2, 3, 4 (mma only) */
    uint8_t persist;   /* 0: one tile per CTA; 1: persistent grid (as many CTAs as fit at once,
                        * each looping over tiles with a grid stride) */
    uint8_t seg;       /* 0: row tiles of DOP_ROWS rows from row 0; 1: row tiles aligned to
                        * segments (mma only). Not tuned and never stored (0 in plans and
                        * records): the runtime compiles this variant of a tensor-core
                        * schedule's module for calls whose segment layout has a boundary
                        * inside a 16-row tile (runtime_seg_row_tiles) */
} search_schedule;

/* Largest stage count of the cp.async pipeline. */
#define SEARCH_MAX_STAGES 4

/* Adapter slots whose entries a CTA reads into shared memory together with the
 * layout (kernels_lora.cu: DOP_TABLE); larger tables cost one more round trip.
 * The cp.async-staged and the persistent schedules have no such table. */
#define SEARCH_TILE_TABLE 64

/* Static shared memory one CTA may use (no opt-in needed on sm_80+). */
#define SEARCH_STATIC_SMEM_LIMIT (48 * 1024)

/* Writes a formatted sentence to why when why is not NULL and why_len > 0: how
 * the search and costmodel functions say why they refused something. */
void search_say(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A schedule of the current version with the given fields (legality not checked). */
search_schedule search_schedule_make(unsigned sketch, unsigned rows, unsigned warps, unsigned vec, unsigned kc,
                                     unsigned split_k, unsigned cols, unsigned mma, unsigned stages, unsigned persist);

/* Shared memory the kernels of s need for a shape of max_rank (static: the row
 * tile, the fp32 intermediate (twice for the cluster sketch: this CTA's
 * partial and the cluster's sum) and, with stages > 1, the ring of x and A tiles). */
size_t search_schedule_smem(const search_schedule *s, int max_rank);

/*
 * Whether s is legal for max_rank; the architecture is not an input (the
 * cluster sketch needs sm_90+: search_space and the runtime check that). When it is not and why != NULL, a sentence
 * saying which rule it breaks is written to why (why_len bytes).
 */
bool search_schedule_legal(const search_schedule *s, int max_rank, char *why, size_t why_len);

/* K elements one CTA covers when d_in is split over split_k CTAs, as the
 * launcher computes it: the share ceil(d_in / split_k) rounded up to whole
 * warp-wide loads (32 x vec elements; 256 with mma), so vector loads stay
 * aligned inside every CTA's range. The launcher then makes ceil(d_in / that)
 * CTAs, which can be fewer than split_k. The one definition the runtime, the
 * space, the records and the cost model share. */
long search_k_per_cta(long d_in, unsigned mma, unsigned vec, unsigned split_k);

/* The granularity of a CTA's K range in search_k_per_cta: one warp-wide load,
 * 32 x vec elements (256 with mma). */
long search_k_gran(unsigned mma, unsigned vec);

/* The schedule with only the fields that change the generated source kept
 * (split_k normalised: it is a launch parameter; the sketch, stages and
 * persist are compile-time and kept): equal keys share one compiled module. */
search_schedule search_schedule_module_key(const search_schedule *s);

/* "split rows=8 warps=4 vec=8 kc=512 splitk=4 cols=256", then " mma", " stages=N",
 * " persist=1" and " seg" when they are not 0, 1, 0 and 0; returns snprintf's result. */
int search_schedule_format(const search_schedule *s, char *buf, size_t len);

/* Inverse of search_schedule_format (legality is not checked); text without
 * stages / persist (version 1) reads as stages=1 persist=0. 0 on success, -1 on bad text. */
int search_schedule_parse(const char *text, search_schedule *out);

#endif
