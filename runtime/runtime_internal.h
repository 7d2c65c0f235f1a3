/*
 * runtime_internal.h -- what the runtime's files share: the context, error
 * reporting, the kernel table and the host-side view of one call.
 */
#ifndef DOP_RUNTIME_INTERNAL_H
#define DOP_RUNTIME_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
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
    CUfunction shrink, expand, fused, counter, cluster;
    /* persist modules: CTAs of shrink, expand, fused, counter that are resident on
     * the device at once (SMs x occupancy), the size of their persistent grids */
    unsigned resident[4];
} runtime_kernel;

/* A module to prepare. */
typedef struct runtime_module_req {
    kernels_dtype dtype;
    int max_rank;
    search_schedule sched;
} runtime_module_req;

typedef struct runtime_compiler runtime_compiler;
typedef struct runtime_plans runtime_plans;

/* One entry of the plan table: a (shape, layout class, GPU) and its schedule. */
typedef struct runtime_plan {
    uint64_t hash;
    unsigned char *key; /* NULL: free slot */
    size_t key_len;
    search_schedule sched;
    const runtime_kernel *kernel; /* NULL until loaded */
    bool pending;                 /* its kernel is queued for the background compiler */
} runtime_plan;

struct dop_context {
    uint64_t id; /* unique in the process, keys the thread-local error messages */
    uint32_t flags;
    atomic_bool pdl;     /* programmatic dependent launch of a call's first kernel (dop_context_set_programmatic_launch) */
    cache_store *cache;  /* NULL: no persistent cache */
    int cache_readonly;
    runtime_compiler *compiler;
    runtime_plans *plans;
    const runtime_kernel *generic[2]; /* fp16, bf16 */
    const runtime_driver *drv;
    const runtime_nvrtc *nvrtc;
    CUdevice dev;
    CUcontext cuctx;
    dop_device_info info;
    dop_log_fn log;
    void *log_user;
    dop_log_level log_level;

    pthread_mutex_t lock; /* guards kernels, nkernels, stats; never held across a compile */
#define RUNTIME_MAX_INFLIGHT 64
    runtime_module_req inflight[RUNTIME_MAX_INFLIGHT]; /* modules being compiled by some thread */
    int ninflight;
    pthread_cond_t inflight_cond;
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

/* Sends a message to the context's log callback (if any, and if level passes). */
void runtime_log(const dop_context *ctx, dop_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a failure (thread-local, tagged with ctx) and returns status. */
dop_status runtime_fail(const dop_context *ctx, dop_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Failure of a driver call: DEVICE_FAILED or OUT_OF_DEVICE_MEMORY with the CUresult named. */
dop_status runtime_fail_cu(const dop_context *ctx, CUresult r, const char *what);

/* Checks a driver call in a function with `dop_status st`, `ctx` and a `done:` label:
 * on failure st records it (runtime_fail_cu) and control goes to done. */
#define RUNTIME_CK(call)                                                                                           \
    do {                                                                                                           \
        CUresult r_ = (call);                                                                                      \
        if (r_ != CUDA_SUCCESS) {                                                                                  \
            st = runtime_fail_cu(ctx, r_, #call);                                                                  \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)

/* Makes ctx's CUDA context current in this thread; *pushed says whether to pop. */
dop_status runtime_enter(dop_context *ctx, bool *pushed);
void runtime_leave(dop_context *ctx, bool pushed);

/* Finds or compiles + loads the module for (dtype, max_rank, schedule). */
dop_status runtime_kernel_get(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s,
                              const runtime_kernel **out);
/* The module of (dtype, max_rank, schedule) if it is loaded, else NULL; no I/O. */
const runtime_kernel *runtime_kernel_loaded(dop_context *ctx, kernels_dtype dtype, int max_rank,
                                            const search_schedule *s);
/* Same, but without may_compile a module found neither loaded nor in the cache
 * returns DOP_ERR_UNAVAILABLE (no message recorded). */
dop_status runtime_kernel_obtain(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s,
                                 bool may_compile, const runtime_kernel **out);

/* The cubin (correctness) key and the hash of generated source it contains. */
void runtime_cubin_key(cache_key *k, int nvrtc_major, int nvrtc_minor, int cc_major, int cc_minor,
                       uint64_t source_hash);
uint64_t runtime_source_hash(const char *src, size_t len);

/* Background compiler: one worker per context. */
dop_status runtime_compiler_start(dop_context *ctx);
void runtime_compiler_stop(dop_context *ctx);
void runtime_compile_async(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s);
/* Blocks until the queue is empty and the worker idle. */
void runtime_compile_wait(dop_context *ctx);

/* Loads (from the cache) or compiles the modules of a list with up to
 * `threads` threads (NVRTC is thread-safe); those already loaded are skipped. */
dop_status runtime_kernels_prepare(dop_context *ctx, const runtime_module_req *list, int n, int threads);

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

/* What the performance key holds of a call. */
typedef struct runtime_perf_shape {
    dop_dtype dtype;
    kernels_dtype kdtype;
    int32_t num_rows, d_in, num_slices, max_rank;
    int32_t d_out[DOP_MAX_SLICES];
    int32_t weights_kind; /* 0 table, 1 per-call device arrays, 2 per-call uploaded */
} runtime_perf_shape;

/* The layout class: buckets of what moves the best schedule. */
typedef struct runtime_layout_class {
    uint8_t rows_log2, groups_log2, longest_log2, mean_log2, none_quarters, ranks_differ;
} runtime_layout_class;

void runtime_layout_classify(const runtime_layout_summary *sum, int32_t num_rows, int ranks_differ,
                             runtime_layout_class *out);

/* Row tiles of a tensor-core launch (16-row tiles) over a segment layout whose
 * tiles are aligned to segments (the schedule's seg variant, kp.seg_tiles;
 * kernels_lora.cu, dop_seg_locate), or 0 where the plain tiles rows 16 t .. 16 t + 15 do as
 * well: every non-empty segment with a slot in [0, num_slots) starts and ends
 * on the 16-row grid (or at num_rows), or there are more segments than the
 * CTA's threads (the kernel counts pieces one thread per segment). The count is
 * the most pieces any layout of num_segments segments over num_rows rows can
 * need: ceil(num_rows / 16) + num_segments - 1, at most num_rows. */
int32_t runtime_seg_row_tiles(const int32_t *seg_indptr, const int32_t *seg_slot, int32_t num_segments,
                              int32_t num_rows, int32_t num_slots, int32_t threads);

/* The GPU fingerprint that keys schedules. */
typedef struct runtime_gpu {
    int cc_major, cc_minor, sm_count, l2_bytes, smem_optin;
} runtime_gpu;

void runtime_gpu_of(const dop_device_info *d, runtime_gpu *g);
void runtime_gpu_tag(const runtime_gpu *g, char *buf, size_t len);
void runtime_perf_key(cache_key *k, runtime_op op, const runtime_perf_shape *ps, const runtime_gpu *g,
                      const runtime_layout_class *cls);
/* The value of a schedules-database record; origin 1 warm, 2 tuned. */
size_t runtime_plan_value_size(void);
void runtime_plan_value_encode(const search_schedule *s, unsigned origin, float measured_us, void *buf,
                               size_t *len);
int runtime_plan_value_decode(const void *buf, size_t len, search_schedule *s, int max_rank);
/* The origin of an encoded value (1 warm, 2 tuned), 0 if it is not one. */
unsigned runtime_plan_value_origin(const void *buf, size_t len);

/* The tuning-record views of a call (search_record.h, search_space.h): the
 * task (performance key without the GPU), the target and the search problem. */
struct search_task;
struct search_target;
struct search_problem;
void runtime_record_task(runtime_op op, const runtime_perf_shape *ps, const runtime_layout_class *cls,
                         struct search_task *out);
void runtime_record_target(const dop_device_info *d, struct search_target *out);
void runtime_search_problem(const dop_device_info *d, runtime_op op, const runtime_perf_shape *ps,
                            struct search_problem *out);
/* Stores a tuned schedule for (op, shape, class) on ctx's device (origin 2). */
dop_status runtime_store_tuned(dop_context *ctx, runtime_op op, const runtime_perf_shape *ps,
                               const runtime_layout_class *cls, const search_schedule *s, float measured_us);

runtime_plans *runtime_plans_new(void);
void runtime_plans_free(runtime_plans *t);

/* Schedule and kernel of a call (see runtime_dispatch.c). */
dop_status runtime_dispatch(dop_context *ctx, runtime_op op, const runtime_perf_shape *ps,
                            const runtime_layout_class *cls, bool wait, search_schedule *sched,
                            const runtime_kernel **kernel);
/* The heuristic's schedule for a layout class (the same for every layout of it). */
void runtime_pick_for_class(const dop_device_info *dev, runtime_op op, const runtime_perf_shape *ps,
                            const runtime_layout_class *cls, search_schedule *out);
search_schedule runtime_generic_schedule(runtime_op op, int32_t num_rows, int32_t d_in, int32_t num_slices,
                                         int sm_count);

/* The schedule dispatch picks for an op, shape and layout on ctx's device. */
void runtime_pick_schedule(const dop_device_info *dev, runtime_op op, int32_t num_rows, int32_t d_in,
                           int32_t num_slices, int32_t max_rank, const runtime_layout_summary *sum,
                           search_schedule *out);

/* The schedule of the last successful call in this thread (for reports and tests). */
void runtime_last_schedule(search_schedule *out);

/* Test hook: force the schedule of subsequent calls in this thread (NULL: dispatch decides). */
void runtime_force_schedule(const search_schedule *s);

#endif
