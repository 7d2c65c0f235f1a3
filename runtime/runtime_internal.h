/*
 * runtime_internal.h -- what the runtime's files share: the context, error
 * reporting, the kernel table and the host-side view of one call.
 */
#ifndef DOP_RUNTIME_INTERNAL_H
#define DOP_RUNTIME_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dop.h"
#include "kernels_codegen.h"
#include "runtime_driver.h"
#include "runtime_jit.h"
#include "search_schedule.h"

/* The kernels' argument block, with the C spellings of its field types. */
typedef uint64_t dop_u64;
typedef int64_t dop_i64;
typedef int32_t dop_i32;
#include "kernels_params.h"
_Static_assert(sizeof(dop_kparams) == DOP_KPARAMS_SIZE, "kernels_params.h: DOP_KPARAMS_SIZE is stale");

/* A loaded module: the kernels of one (dtype, max_rank, schedule). */
typedef struct runtime_kernel {
    kernels_dtype dtype;
    int max_rank;
    search_schedule sched;
    CUmodule module;
    CUfunction shrink, expand, fused;
} runtime_kernel;

struct dop_context {
    uint64_t id; /* unique in the process, keys the thread-local error messages */
    const runtime_driver *drv;
    const runtime_nvrtc *nvrtc;
    CUdevice dev;
    CUcontext cuctx;
    dop_device_info info;
    dop_log_fn log;
    void *log_user;
    dop_log_level log_level;

    pthread_mutex_t lock; /* guards kernels, nkernels, stats; never held across a compile */
    runtime_kernel **kernels;
    int nkernels, kernels_cap;
    dop_context_stats stats;
};

struct dop_adapter_table {
    dop_context *ctx;
    int32_t num_slots, num_slices;
    dop_lora_adapter *host; /* mirror of the entries, for validation and dispatch */
    CUdeviceptr dev;        /* u64 A[n] | u64 B[n] | i32 rank[n] | f32 scale[n] */
};

/* Records a failure (thread-local, tagged with ctx) and returns status. */
dop_status runtime_fail(const dop_context *ctx, dop_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Failure of a driver call: DEVICE_FAILED or OUT_OF_DEVICE_MEMORY with the CUresult named. */
dop_status runtime_fail_cu(const dop_context *ctx, CUresult r, const char *what);

/* Makes ctx's CUDA context current in this thread; *pushed says whether to pop. */
dop_status runtime_enter(dop_context *ctx, bool *pushed);
void runtime_leave(dop_context *ctx, bool pushed);

/* Finds or compiles + loads the module for (dtype, max_rank, schedule). */
dop_status runtime_kernel_get(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s,
                              const runtime_kernel **out);

/* Compiles and loads the modules of n schedules with up to `threads` threads
 * (NVRTC is thread-safe); those already loaded are skipped. */
dop_status runtime_kernels_prepare(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *list,
                                   int n, int threads);

/* Writes an adapter table's SoA device image (u64 A, u64 B, i32 rank, f32 scale) into buf. */
void runtime_pack_adapters(const dop_lora_adapter *e, int32_t n, void *buf);
size_t runtime_packed_adapters_size(int32_t n);


/* Validates n adapter entries (rank range, NULL/rank agreement, alignment, NaN scale). */
dop_status runtime_check_adapters(const dop_context *ctx, const char *fn, const dop_lora_adapter *e, int32_t n,
                                  int32_t num_slices);

/* What dispatch sees of a layout. */
typedef struct runtime_layout_summary {
    int32_t rows_with_adapter;
    int32_t groups;      /* maximal runs of consecutive rows with one adapter */
    int32_t longest;     /* longest such run */
    int32_t distinct;    /* distinct slots in use (upper bound for huge tables) */
} runtime_layout_summary;

/* Summary of a one-slot-per-row layout. */
void runtime_summarize_rows(const int32_t *row_slot, int32_t num_rows, runtime_layout_summary *sum);

typedef enum runtime_op { RUNTIME_OP_APPLY = 0, RUNTIME_OP_SHRINK = 1, RUNTIME_OP_EXPAND = 2 } runtime_op;

/* The schedule dispatch picks for an op, shape and layout on ctx's device. */
void runtime_pick_schedule(const dop_device_info *dev, runtime_op op, int32_t num_rows, int32_t d_in,
                           int32_t num_slices, int32_t max_rank, const runtime_layout_summary *sum,
                           search_schedule *out);

/* The schedule of the last successful call in this thread (for reports and tests). */
void runtime_last_schedule(search_schedule *out);

/* Test hook: force the schedule of subsequent calls in this thread (NULL: dispatch decides). */
void runtime_force_schedule(const search_schedule *s);

#endif
