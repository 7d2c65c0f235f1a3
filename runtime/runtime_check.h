/*
 * runtime_check.h -- end-to-end checks of the kernels on a device against the
 * CPU reference, and the batch layouts of the workload grid (WORKLOADS.md).
 * Used by `dop check`, the GPU tests and the benchmarks.
 */
#ifndef DOP_RUNTIME_CHECK_H
#define DOP_RUNTIME_CHECK_H

#include <stdint.h>

#include "runtime_internal.h"

typedef enum runtime_workload {
    RUNTIME_WL_DISTINCT = 0,  /* every row its own adapter */
    RUNTIME_WL_UNIFORM = 1,   /* ceil(sqrt(rows)) adapters, equal shares */
    RUNTIME_WL_SKEWED = 2,    /* Zipf 1.5 popularity */
    RUNTIME_WL_IDENTICAL = 3, /* one adapter */
    RUNTIME_WL_MIXED = 4,     /* skewed, 25% rows without adapter, rows shuffled, ranks 8..max */
    RUNTIME_WL_COUNT = 5
} runtime_workload;

const char *runtime_workload_name(runtime_workload w);
/* -1 if unknown */
int runtime_workload_parse(const char *name);

/* The generator state a case with this seed starts from: runtime_case_setup
 * draws its layout first (runtime_workload_rows), so a tool that needs only
 * the layout of a case draws it from here and gets the same rows. */
uint64_t runtime_case_rng(uint64_t seed);

/*
 * Fills row_slot[num_rows] for a workload; returns the number of slots used
 * (slots are 0 .. n-1). rng is advanced. Segment lengths for the sorted
 * layouts follow WORKLOADS.md exactly.
 */
int runtime_workload_rows(runtime_workload w, int num_rows, uint64_t *rng, int32_t *row_slot);

typedef struct runtime_case {
    dop_dtype dtype;
    runtime_op op;
    runtime_workload workload;
    dop_layout_kind layout_kind; /* SEGMENTS needs a sorted workload; MIXED always uses ROWS */
    int num_rows, d_in, num_slices, max_rank;
    int d_out[DOP_MAX_SLICES];
    int hetero_ranks;            /* adapters get ranks spread over 8..max_rank (or 1..) */
    int device_copies;           /* give device copies of layout and weights */
    int per_call_weights;        /* pass weights per call instead of a table */
    int empty_segments;          /* insert empty segments (SEGMENTS layouts) */
    uint64_t seed;
    const search_schedule *force;/* optional: use this schedule */
} runtime_case;

typedef struct runtime_case_result {
    double err;          /* ||out - ref|| / ||ref|| over the updated entries */
    double tol;          /* tolerance for the dtype */
    long long checked;   /* entries compared with the reference */
    long long untouched_bad; /* entries that should be untouched (or written) and were not */
    int slots;
    char schedule[128];
    char message[512];   /* why it failed, when it did */
    int ok;
} runtime_case_result;

/* A case's host and device data, made once and launched any number of times. */
typedef struct runtime_case_data runtime_case_data;

dop_status runtime_case_setup(dop_context *ctx, const runtime_case *c, runtime_case_data **out);
/* One call of the case's operation on its stream (asynchronous). */
dop_status runtime_case_launch(dop_context *ctx, runtime_case_data *cd);
/* Restores y (and v) to their initial values (synchronous). */
dop_status runtime_case_reset(dop_context *ctx, runtime_case_data *cd);
/* Waits for the stream, compares with the CPU reference (after exactly one launch since setup/reset). */
dop_status runtime_case_verify(dop_context *ctx, runtime_case_data *cd, runtime_case_result *res);
void runtime_case_free(dop_context *ctx, runtime_case_data *cd);
/* For tests of the check itself: writes the reference, rounded to the dtype, as the output a
 * correct call leaves (apply and expand), and gives the device address and size of y. */
dop_status runtime_case_write_reference(dop_context *ctx, runtime_case_data *cd);
CUdeviceptr runtime_case_output(const runtime_case_data *cd, size_t *bytes);
/* Bytes the operation must move through device memory (x, y read + written, adapters in use). */
double runtime_case_hbm_bytes(const runtime_case_data *cd);
dop_stream runtime_case_stream(const runtime_case_data *cd);
/* Forces the schedule of later launches of the case (NULL: dispatch decides). */
void runtime_case_force(runtime_case_data *cd, const search_schedule *s);

/* What dispatch sees of the case's call: its performance shape and layout class. */
void runtime_case_class(const runtime_case_data *cd, runtime_perf_shape *ps, runtime_layout_class *cls);

/* Runs one case on ctx and checks it. Returns DOP_OK if it ran (see ok). */
dop_status runtime_check_case(dop_context *ctx, const runtime_case *c, runtime_case_result *res);

/* splitmix64 */
uint64_t runtime_rng_next(uint64_t *state);

#endif
