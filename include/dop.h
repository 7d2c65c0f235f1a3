/*
 * dop.h -- the public C API of dop, a runtime for multi-LoRA serving kernels.
 *
 * OVERVIEW
 *
 * An inference engine calls dop once per LoRA-augmented linear layer. For a
 * batch of token rows x (each row belongs to at most one adapter "slot", or to
 * none), dop computes
 *
 *     y[row, cols_s] += scale_a * (x[row, :] @ A_a^T) @ B_a^T      (fused apply)
 *
 * for every slice s (fused q/k/v or gate/up projections sharing x), with the
 * rank-sized intermediate kept in fp32. The separate halves are available too:
 *
 *     shrink:  v[row, s*max_rank + 0:rank] (+)= x[row, :] @ A_a^T
 *     expand:  y[row, cols_s] += scale_a * v[row, s*max_rank + 0:rank] @ B_a^T
 *
 * A_a is [rank_a, d_in] and B_a is [d_out_s, rank_a], both row-major (PEFT's
 * layout), fp16 or bf16 like x and y. Ranks may differ per adapter (no padding
 * of the weights); rows whose adapter is -1 are left untouched.
 *
 * At call time dop inspects the host-side copy of the batch layout, reduces it
 * to a layout class, and looks the (shape, layout class, GPU) up: in the
 * context's table, then in the persistent cache (an LMDB file, shared between
 * processes and machines; `dop warm` fills it offline), else it picks a
 * schedule itself. The schedule's kernel comes from the context, else from
 * the cache's compiled cubins, else NVRTC compiles it for the device's exact
 * architecture -- in a background thread while a generic kernel, ready since
 * context creation, serves the call (DOP_CONTEXT_WAIT_FOR_COMPILE waits
 * instead). Kernels run on the caller's stream.
 *
 * THREADING
 *
 * A dop_context may be used from several threads at once. Kernel compilation
 * happens outside of any lock and once per kernel: a thread that needs a kernel
 * another thread (or, through the cache, another process) is compiling waits
 * for it, or in the default asynchronous mode runs the generic kernel. Error
 * messages are kept per context and per thread (dop_context_error()).
 *
 * OWNERSHIP
 *
 * dop never takes ownership of caller memory. Device pointers (x, y, v,
 * weights, device copies of layouts, workspace) must stay valid until the work
 * enqueued on the stream has finished. Host arrays passed to a call are read
 * before the call returns and may be reused afterwards.
 *
 * The CUDA driver is loaded at run time (dlopen of libcuda.so.1); libdop has
 * no link-time dependency on it. dop uses the device's primary context, so
 * device pointers and streams of engines built on the CUDA runtime API work
 * unchanged (a cudaStream_t is a CUstream).
 *
 * USAGE
 *
 *     dop_context_options opt;
 *     dop_context_options_init(&opt);
 *     dop_context *ctx;
 *     if (dop_context_create(&opt, &ctx) != DOP_OK)
 *         fprintf(stderr, "dop: %s\n", dop_context_error(NULL));
 *
 *     dop_lora_shape shape;
 *     dop_lora_shape_init(&shape);
 *     shape.dtype = DOP_DTYPE_F16;
 *     shape.num_rows = 32; shape.d_in = 4096;
 *     shape.num_slices = 1; shape.d_out[0] = 4096; shape.max_rank = 16;
 *
 *     dop_lora_adapter ad[NSLOTS];            // A, B device pointers, rank, scale
 *     dop_adapter_table *tab;
 *     dop_adapter_table_create(ctx, NSLOTS, 1, ad, &tab);
 *
 *     size_t ws_bytes;
 *     dop_lora_workspace_size(ctx, &shape, 0, &ws_bytes);   // allocate once
 *
 *     dop_layout lay = { .kind = DOP_LAYOUT_ROWS, .row_slot = host_ids,
 *                        .dev_row_slot = dev_ids };
 *     dop_weights w = { .table = tab };
 *     dop_lora_apply(ctx, &shape, &lay, &w, x, y, ws, ws_bytes, stream);
 *
 * CAVEATS
 *
 * - Host copies of the layout are required on every call: dispatch inspects
 *   them and validates them. When device copies are also given, the kernel reads
 *   those; they must hold a valid layout for the same num_rows when the kernel
 *   runs. This is what makes CUDA-graph replay with changing layouts work: a
 *   graph captured with one layout may be replayed after the engine rewrote the
 *   device arrays (dev_num_segments lets the segment count change too). The
 *   kernels read the first num_segments segments (the host count of the call)
 *   together with the run-time count, so dev_seg_indptr must have at least
 *   num_segments + 1 readable entries, and dev_seg_slot num_segments, even when
 *   the run-time count is smaller; entries past the run-time count are ignored.
 *   Tensor-core kernels may size their grid from the captured layout (row tiles
 *   aligned to its segments, docs/kernels.md); a replay whose layout needs more
 *   tiles than that grid has runs with plain 16-row tiles, correct but possibly
 *   slower, so capture with a layout like the ones you replay.
 * - Without device copies, dop uploads the host arrays into the workspace with
 *   an asynchronous copy from pageable memory. That is not allowed during
 *   stream capture: give device copies when capturing (DOP_ERR_INVALID_ARGUMENT
 *   otherwise).
 * - Context creation loads the generic kernels (fp16 and bf16) from the cache,
 *   or compiles them (a few seconds on a cold machine).
 * - A kernel compiled in the background replaces the generic one from the next
 *   call on. For CUDA-graph capture, make the call once before capturing (with
 *   DOP_CONTEXT_WAIT_FOR_COMPILE, or after the background compile finished),
 *   so the graph holds the kernel chosen for the layout; either kernel is
 *   correct for every layout.
 * - Invalid values found in device copies at run time (slot out of range,
 *   rank above max_rank) cannot be reported by a kernel: such rows are skipped
 *   and ranks are clamped, so no memory outside the described buffers is read.
 */
#ifndef DOP_H
#define DOP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(DOP_STATIC_DEFINE)
#define DOP_API
#elif defined(_WIN32)
#define DOP_API __declspec(dllexport)
#else
#define DOP_API __attribute__((visibility("default")))
#endif

#define DOP_VERSION_MAJOR 0
#define DOP_VERSION_MINOR 1
#define DOP_VERSION_PATCH 0

/** Largest number of slices (projections sharing x) in one call. */
#define DOP_MAX_SLICES 8
/** Largest LoRA rank supported. */
#define DOP_MAX_RANK 128

/** A CUDA stream; the same type as CUstream and cudaStream_t. NULL is the legacy default stream. */
typedef struct CUstream_st *dop_stream;

/**
 * Status codes. Values are never renumbered; new ones are appended.
 * dop_context_error() returns the human-readable detail of the last failure.
 */
typedef enum dop_status {
    DOP_OK = 0,
    DOP_ERR_INVALID_ARGUMENT = 1,     /**< NULL pointer, bad size or option */
    DOP_ERR_UNAVAILABLE = 2,          /**< no CUDA driver, no device, or no NVRTC */
    DOP_ERR_UNSUPPORTED = 3,          /**< valid request dop cannot serve (dtype, rank, arch) */
    DOP_ERR_OUT_OF_HOST_MEMORY = 4,
    DOP_ERR_OUT_OF_DEVICE_MEMORY = 5,
    DOP_ERR_COMPILE_FAILED = 6,       /**< NVRTC rejected a generated kernel */
    DOP_ERR_DEVICE_FAILED = 7,        /**< a CUDA driver call failed */
    DOP_ERR_CACHE_CORRUPT = 8,
    DOP_ERR_INVALID_LAYOUT = 9,       /**< segments or row ids describe an impossible batch */
    DOP_ERR_MISALIGNED = 10,          /**< a pointer or leading dimension breaks alignment rules */
    DOP_ERR_WORKSPACE_TOO_SMALL = 11, /**< see dop_lora_workspace_size() */
    DOP_ERR_INTERNAL = 12
} dop_status;

/** Element types of x, y and the adapter weights. Accumulation is always fp32. */
typedef enum dop_dtype {
    DOP_DTYPE_F16 = 1,
    DOP_DTYPE_BF16 = 2
} dop_dtype;

typedef enum dop_log_level {
    DOP_LOG_ERROR = 0,
    DOP_LOG_WARN = 1,
    DOP_LOG_INFO = 2,
    DOP_LOG_DEBUG = 3
} dop_log_level;

/** Log callback; may be called from any thread that calls into dop. */
typedef void (*dop_log_fn)(void *user, dop_log_level level, const char *message);

typedef struct dop_context dop_context;
typedef struct dop_adapter_table dop_adapter_table;

/** Version of the library that is linked, as MAJOR*10000 + MINOR*100 + PATCH. */
DOP_API unsigned dop_version(void);
/** "MAJOR.MINOR.PATCH". Static storage. */
DOP_API const char *dop_version_string(void);
/** Short name of a status ("DOP_ERR_INVALID_ARGUMENT"). Static storage; never NULL. */
DOP_API const char *dop_status_string(dop_status status);

/* ------------------------------------------------------------------------ */
/* Context                                                                  */
/* ------------------------------------------------------------------------ */

/** Flags of dop_context_options. */
#define DOP_CONTEXT_WAIT_FOR_COMPILE 1u /**< a call whose kernel is not compiled yet waits for NVRTC */
#define DOP_CONTEXT_NO_CACHE 2u         /**< do not open the persistent cache */
#define DOP_CONTEXT_CACHE_READONLY 4u   /**< open the cache read-only (a shipped cache) */
/**
 * On sm_90 and newer, launch each call's first kernel with programmatic
 * dependent launch, so that it starts while the kernel before it on the stream
 * (typically the base GEMM that writes y) finishes: it resolves the layout and
 * computes x @ A^T meanwhile, and waits for that kernel to complete before it
 * reads or writes y. The caller's promise: the kernel immediately before the
 * call on the stream writes nothing the call reads except y (x, the layout
 * arrays and the adapter weights are complete before that kernel started).
 * Ignored before sm_90, and for a call that enqueues a copy or a memset before
 * its first kernel (an upload of a host layout or table; the zeroing of the
 * intermediate under split-K or the counter sketch). Without the flag, calls are
 * ordered on the stream as usual. dop_context_set_programmatic_launch() switches
 * it after creation.
 */
#define DOP_CONTEXT_PROGRAMMATIC_LAUNCH 8u

typedef struct dop_context_options {
    uint32_t struct_size;   /**< set by dop_context_options_init(); do not change */
    int device;             /**< CUDA device ordinal (default 0) */
    dop_log_fn log;         /**< optional; without it dop never prints */
    void *log_user;
    dop_log_level log_level;/**< messages above this level are dropped (default WARN) */
    uint32_t flags;         /**< DOP_CONTEXT_* (default 0) */
    const char *cache_path; /**< cache file; NULL: $DOP_CACHE_DIR/cache.mdb, else
                                 $XDG_CACHE_HOME/dop/cache.mdb, else ~/.cache/dop/cache.mdb */
} dop_context_options;

/** Fills *opt with defaults. Call before setting fields. */
DOP_API void dop_context_options_init(dop_context_options *opt);

/**
 * Creates a context on the primary context of opt->device (opt may be NULL for
 * defaults). Loads the CUDA driver and NVRTC at run time.
 * Returns DOP_OK; DOP_ERR_INVALID_ARGUMENT (out NULL, bad options);
 * DOP_ERR_UNAVAILABLE (no driver, no such device, no NVRTC);
 * DOP_ERR_UNSUPPORTED (device older than sm_80); DOP_ERR_DEVICE_FAILED;
 * DOP_ERR_OUT_OF_DEVICE_MEMORY (retaining the primary context ran out of
 * memory); DOP_ERR_OUT_OF_HOST_MEMORY. On failure *out is NULL and the message is
 * available from dop_context_error(NULL) in the calling thread.
 */
DOP_API dop_status dop_context_create(const dop_context_options *opt, dop_context **out);

/** Destroys a context. Accepts NULL. The caller must have finished all work using it. */
DOP_API void dop_context_destroy(dop_context *ctx);

/**
 * Turns programmatic dependent launch (DOP_CONTEXT_PROGRAMMATIC_LAUNCH, with
 * the same promise) on or off for the calls on ctx that start after this
 * returns, from any thread; context creation sets it from opt->flags. For an
 * engine whose LoRA calls follow different kinds of kernels: set it before
 * each call. In particular, turn it off for a call enqueued on a second stream
 * right after it waits for an event recorded behind the kernel that wrote x:
 * in a captured CUDA graph that cross-stream dependency becomes a programmatic
 * edge too, and the call would read x early. Returns DOP_OK, or
 * DOP_ERR_INVALID_ARGUMENT when ctx is NULL.
 */
DOP_API dop_status dop_context_set_programmatic_launch(dop_context *ctx, int enable);

/**
 * Message of the last failed call on ctx in the calling thread, or "" if none.
 * With ctx NULL: the last failure in this thread of a call that had no
 * context (or failed to make one). Each thread keeps the messages of the 8
 * contexts that failed most recently in it. The string is valid until the next
 * failing call on the same context in the same thread.
 */
DOP_API const char *dop_context_error(const dop_context *ctx);

typedef struct dop_device_info {
    char name[128];
    int ordinal;
    int cc_major, cc_minor;       /**< compute capability */
    int sm_count;
    int l2_bytes;
    int smem_per_block_optin;     /**< bytes of shared memory a block may opt in to */
    int driver_version;           /**< e.g. 13000 */
    int nvrtc_major, nvrtc_minor;
} dop_device_info;

/** Describes the device of ctx. Returns DOP_OK or DOP_ERR_INVALID_ARGUMENT. */
DOP_API dop_status dop_context_device_info(dop_context *ctx, dop_device_info *out);

typedef struct dop_context_stats {
    uint64_t calls;               /**< successful apply/shrink/expand calls */
    uint64_t kernels_compiled;    /**< NVRTC compilations done by this context */
    uint64_t kernels_loaded;      /**< modules loaded into the device (compiled or from the cache) */
    uint64_t cubins_from_cache;   /**< modules loaded from cubins found in the persistent cache */
    uint64_t schedules_from_cache;/**< layout classes whose schedule came from the persistent cache */
    uint64_t generic_calls;       /**< calls served by the generic kernel while theirs compiled */
    uint64_t plans;               /**< (shape, layout class) entries in the in-process table */
    double compile_seconds;       /**< wall time spent in NVRTC */
    int cache_open;               /**< 1 if the persistent cache is in use */
    char cache_path[512];         /**< its file, or the reason it is not in use */
} dop_context_stats;

DOP_API dop_status dop_context_get_stats(dop_context *ctx, dop_context_stats *out);

/* ------------------------------------------------------------------------ */
/* Problem shape                                                            */
/* ------------------------------------------------------------------------ */

/**
 * The shape of a call: everything a compiled kernel is specialised for except
 * the batch layout. x is [num_rows, ldx], y is [num_rows, ldy], both row-major.
 * Slice s writes columns y_col[s] .. y_col[s] + d_out[s] - 1 of y.
 */
typedef struct dop_lora_shape {
    dop_dtype dtype;
    int32_t num_rows;                 /**< rows of x and y (> 0) */
    int32_t d_in;                     /**< columns of x used, and of every A (> 0) */
    int32_t num_slices;               /**< 1 .. DOP_MAX_SLICES */
    int32_t d_out[DOP_MAX_SLICES];    /**< output width of each slice (> 0) */
    int32_t y_col[DOP_MAX_SLICES];    /**< first column of each slice in y; -1: packed after the previous slice */
    int32_t max_rank;                 /**< 1 .. DOP_MAX_RANK; every adapter's rank must be <= this */
    int64_t ldx;                      /**< elements between rows of x; 0: d_in */
    int64_t ldy;                      /**< elements between rows of y; 0: end of the last slice */
} dop_lora_shape;

/** Fills *shape with defaults: one slice, y_col all -1, ldx = ldy = 0, fp16, max_rank 16. */
DOP_API void dop_lora_shape_init(dop_lora_shape *shape);

/* ------------------------------------------------------------------------ */
/* Batch layout                                                             */
/* ------------------------------------------------------------------------ */

typedef enum dop_layout_kind {
    /** Punica style: segment i covers rows seg_indptr[i] .. seg_indptr[i+1]-1. */
    DOP_LAYOUT_SEGMENTS = 1,
    /** One adapter slot (or -1) per row, rows in any order. */
    DOP_LAYOUT_ROWS = 2
} dop_layout_kind;

/**
 * Which rows use which adapter slot. Host arrays are required (dispatch reads
 * them); device copies are optional (see CAVEATS at the top of this file).
 *
 * Segments: seg_indptr has num_segments + 1 non-decreasing entries within
 * [0, num_rows] (empty segments are allowed; rows outside every segment are
 * left untouched). seg_slot gives each segment's slot or -1; NULL means
 * segment i uses slot i (per-segment weight arrays, as Punica passes them).
 */
typedef struct dop_layout {
    dop_layout_kind kind;
    int32_t num_segments;
    const int32_t *seg_indptr;        /**< host, [num_segments + 1] */
    const int32_t *seg_slot;          /**< host, [num_segments], or NULL for slot = segment index */
    const int32_t *row_slot;          /**< host, [num_rows], for DOP_LAYOUT_ROWS */
    /* Optional device copies, read by the kernel when given. */
    const int32_t *dev_seg_indptr;    /**< [capacity + 1], capacity >= num_segments */
    const int32_t *dev_seg_slot;      /**< [capacity]; required with dev_seg_indptr when seg_slot != NULL */
    const int32_t *dev_num_segments;  /**< optional: one int32 read at run time instead of num_segments */
    const int32_t *dev_row_slot;      /**< [num_rows] */
} dop_layout;

/* ------------------------------------------------------------------------ */
/* Adapter weights                                                          */
/* ------------------------------------------------------------------------ */

/** One adapter's weights for one slice. */
typedef struct dop_lora_adapter {
    const void *A;        /**< device, [rank, d_in] row-major; NULL with rank 0 marks an empty slot */
    const void *B;        /**< device, [d_out_s, rank] row-major */
    int32_t rank;         /**< 1 .. max_rank of the calls that use it; 0: empty */
    float scale;          /**< alpha / rank, or any factor */
} dop_lora_adapter;

/**
 * Creates a table of num_slots adapters x num_slices slices, entry
 * [slot * num_slices + slice], and uploads it to the device once (a
 * synchronous copy). Engines register their adapters here and pass the table
 * to every call. Returns DOP_OK, DOP_ERR_INVALID_ARGUMENT, DOP_ERR_MISALIGNED
 * (a weight pointer not aligned to its element size),
 * DOP_ERR_OUT_OF_DEVICE_MEMORY, DOP_ERR_OUT_OF_HOST_MEMORY, DOP_ERR_DEVICE_FAILED.
 */
DOP_API dop_status dop_adapter_table_create(dop_context *ctx, int32_t num_slots, int32_t num_slices,
                                            const dop_lora_adapter *entries, dop_adapter_table **out);

/**
 * Replaces the entries of slots first_slot .. first_slot + count - 1 (count *
 * num_slices entries) and uploads them asynchronously on stream. Work already
 * enqueued on other streams that uses the table must be finished by the caller.
 */
DOP_API dop_status dop_adapter_table_update(dop_adapter_table *table, int32_t first_slot, int32_t count,
                                            const dop_lora_adapter *entries, dop_stream stream);

/** Destroys a table (frees its device memory, synchronously). Accepts NULL. */
DOP_API void dop_adapter_table_destroy(dop_adapter_table *table);

/**
 * The weights of one call: either a registered table, or per-call arrays of
 * num_slots * num_slices entries (host, and optionally device copies in the
 * Punica style of separate pointer arrays; with them, ranks and scales may be
 * NULL to use the host entries' values, which must then be uniform).
 */
typedef struct dop_weights {
    const dop_adapter_table *table;
    int32_t num_slots;
    const dop_lora_adapter *adapters; /**< host, [num_slots * num_slices] */
    const void *const *dev_A;         /**< device array of A pointers, optional */
    const void *const *dev_B;         /**< device array of B pointers, with dev_A */
    const int32_t *dev_rank;          /**< device ranks, optional */
    const float *dev_scale;           /**< device scales, optional */
} dop_weights;

/* ------------------------------------------------------------------------ */
/* Operations                                                               */
/* ------------------------------------------------------------------------ */

/**
 * Bytes of device workspace the calls need for this shape. max_call_slots is
 * the largest num_slots of per-call weights that will be passed without
 * device copies (0 when a table or device copies are used). The result is an
 * upper bound for every layout (without device copies, layouts of at most
 * 2 * num_rows + 1 segments), so one allocation serves every call.
 */
DOP_API dop_status dop_lora_workspace_size(dop_context *ctx, const dop_lora_shape *shape,
                                           int32_t max_call_slots, size_t *bytes);

/**
 * Fused LoRA apply: y[row, slice cols] += scale * (x[row] @ A^T) @ B^T for every
 * row with an adapter. Asynchronous on stream; may be captured in a CUDA graph
 * (with device copies of layout and weights). workspace must be 256-byte
 * aligned and at least dop_lora_workspace_size() bytes.
 * Returns DOP_OK, DOP_ERR_INVALID_ARGUMENT, DOP_ERR_INVALID_LAYOUT,
 * DOP_ERR_MISALIGNED, DOP_ERR_UNSUPPORTED, DOP_ERR_WORKSPACE_TOO_SMALL,
 * DOP_ERR_COMPILE_FAILED, DOP_ERR_DEVICE_FAILED, DOP_ERR_OUT_OF_HOST_MEMORY.
 */
DOP_API dop_status dop_lora_apply(dop_context *ctx, const dop_lora_shape *shape, const dop_layout *layout,
                                  const dop_weights *weights, const void *x, void *y, void *workspace,
                                  size_t workspace_size, dop_stream stream);

/** Flag of dop_lora_shrink: add to v instead of overwriting it. */
#define DOP_SHRINK_ACCUMULATE 1u

/**
 * Shrink: v[row, s*max_rank + r] = x[row] . A[r] (fp32) for every row with an
 * adapter, every slice s and r < rank; with DOP_SHRINK_ACCUMULATE, adds. v is
 * [num_rows, ldv] fp32 with ldv >= num_slices * max_rank. Columns r >= rank of
 * a row and rows without an adapter are left untouched. Same statuses as
 * dop_lora_apply().
 */
DOP_API dop_status dop_lora_shrink(dop_context *ctx, const dop_lora_shape *shape, const dop_layout *layout,
                                   const dop_weights *weights, const void *x, float *v, int64_t ldv,
                                   uint32_t flags, void *workspace, size_t workspace_size, dop_stream stream);

/**
 * Expand: y[row, y_col[s] + c] += scale * sum_r v[row, s*max_rank + r] * B[c, r]
 * for every row with an adapter. v as in dop_lora_shrink(). Same statuses as
 * dop_lora_apply().
 */
DOP_API dop_status dop_lora_expand(dop_context *ctx, const dop_lora_shape *shape, const dop_layout *layout,
                                   const dop_weights *weights, const float *v, int64_t ldv, void *y,
                                   void *workspace, size_t workspace_size, dop_stream stream);

#ifdef __cplusplus
}
#endif

#endif /* DOP_H */
