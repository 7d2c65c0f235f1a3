/*
 * runtime_lora.c -- the three operations: validate, summarise the layout,
 * pick a schedule, fill the argument block, upload what the caller did not
 * give on the device, launch.
 *
 * Workspace (one allocation sized by dop_lora_workspace_size, reused by
 * every call of the shape):
 *   [ v scratch: num_rows x num_slices*max_rank fp32 (apply: split and counter sketches) ]
 *   [ completion counters: row tiles x num_slices u32 (counter sketch) ]
 *   [ layout metadata: up to 4*num_rows+4 int32 ]
 *   [ per-call weight arrays: u64 A | u64 B | i32 rank | f32 scale, max_call_slots*num_slices ]
 * The two metadata parts are contiguous and uploaded with one copy.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_internal.h"

#define WS_ALIGN 256u
#define MAX_DIM (1 << 24)

static size_t align_up(size_t v)
{
    return (v + WS_ALIGN - 1) / WS_ALIGN * WS_ALIGN;
}

typedef struct ws_layout {
    size_t v_off, v_size, cnt_off, cnt_size, meta_off, meta_size, w_off, w_size, total;
} ws_layout;

static ws_layout ws_plan(int32_t num_rows, int32_t num_slices, int32_t max_rank, int32_t max_call_slots)
{
    ws_layout w;
    w.v_off = 0;
    w.v_size = (size_t)num_rows * (size_t)num_slices * (size_t)max_rank * 4;
    w.cnt_off = w.v_size; /* right after v: one memset clears both */
    w.cnt_size = (size_t)num_rows * (size_t)num_slices * 4;
    w.meta_off = align_up(w.cnt_off + w.cnt_size);
    w.meta_size = ((size_t)num_rows * 4 + 4) * 4;
    w.w_off = w.meta_off + w.meta_size; /* 8-byte aligned: meta_size is a multiple of 16 */
    w.w_size = runtime_packed_adapters_size(max_call_slots * num_slices);
    w.total = align_up(w.w_off + w.w_size);
    return w;
}

/* The resolved shape of a call. */
typedef struct call_shape {
    kernels_dtype dtype;
    int32_t num_rows, d_in, num_slices, max_rank, max_dout;
    int32_t d_out[DOP_MAX_SLICES], y_col[DOP_MAX_SLICES];
    int64_t ldx, ldy;
} call_shape;

static dop_status check_shape(const dop_context *ctx, const char *fn, const dop_lora_shape *s, call_shape *c)
{
    if (!s)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape is NULL", fn);
    if (s->dtype != DOP_DTYPE_F16 && s->dtype != DOP_DTYPE_BF16)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->dtype %d is not DOP_DTYPE_F16 or DOP_DTYPE_BF16",
                            fn, (int)s->dtype);
    if (s->num_rows <= 0 || s->num_rows > MAX_DIM)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->num_rows %d not in 1..%d", fn, s->num_rows,
                            MAX_DIM);
    if (s->d_in <= 0 || s->d_in > MAX_DIM)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->d_in %d not in 1..%d", fn, s->d_in, MAX_DIM);
    if (s->num_slices <= 0 || s->num_slices > DOP_MAX_SLICES)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->num_slices %d not in 1..%d", fn, s->num_slices,
                            DOP_MAX_SLICES);
    if (s->max_rank <= 0)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->max_rank %d is not positive", fn, s->max_rank);
    if (s->max_rank > DOP_MAX_RANK)
        return runtime_fail(ctx, DOP_ERR_UNSUPPORTED, "%s: shape->max_rank %d is above DOP_MAX_RANK (%d)", fn,
                            s->max_rank, DOP_MAX_RANK);
    c->dtype = s->dtype == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16;
    c->num_rows = s->num_rows;
    c->d_in = s->d_in;
    c->num_slices = s->num_slices;
    c->max_rank = s->max_rank;
    c->max_dout = 0;
    int64_t end = 0;
    for (int i = 0; i < s->num_slices; ++i) {
        if (s->d_out[i] <= 0 || s->d_out[i] > MAX_DIM)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->d_out[%d] %d not in 1..%d", fn, i,
                                s->d_out[i], MAX_DIM);
        if (s->y_col[i] < -1)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->y_col[%d] %d is negative (-1 = packed)",
                                fn, i, s->y_col[i]);
        int64_t col = s->y_col[i] == -1 ? end : s->y_col[i];
        c->d_out[i] = s->d_out[i];
        c->y_col[i] = (int32_t)col;
        if (col > INT32_MAX - s->d_out[i])
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: slice %d ends past column 2^31", fn, i);
        end = col + s->d_out[i];
        if (s->d_out[i] > c->max_dout)
            c->max_dout = s->d_out[i];
    }
    /* slices must not overlap: two slices adding into one column would race */
    for (int i = 0; i < s->num_slices; ++i)
        for (int j = i + 1; j < s->num_slices; ++j)
            if (c->y_col[i] < c->y_col[j] + c->d_out[j] && c->y_col[j] < c->y_col[i] + c->d_out[i])
                return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: slices %d and %d overlap in y's columns", fn,
                                    i, j);
    int64_t width = 0;
    for (int i = 0; i < s->num_slices; ++i)
        if (c->y_col[i] + (int64_t)c->d_out[i] > width)
            width = c->y_col[i] + (int64_t)c->d_out[i];
    c->ldx = s->ldx ? s->ldx : s->d_in;
    c->ldy = s->ldy ? s->ldy : width;
    if (c->ldx < s->d_in)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->ldx %lld is smaller than d_in %d", fn,
                            (long long)c->ldx, s->d_in);
    if (c->ldy < width)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: shape->ldy %lld is smaller than the slices' width %lld",
                            fn, (long long)c->ldy, (long long)width);
    return DOP_OK;
}

void dop_lora_shape_init(dop_lora_shape *s)
{
    if (!s)
        return;
    memset(s, 0, sizeof *s);
    s->dtype = DOP_DTYPE_F16;
    s->num_slices = 1;
    s->max_rank = 16;
    for (int i = 0; i < DOP_MAX_SLICES; ++i)
        s->y_col[i] = -1;
}

dop_status dop_lora_workspace_size(dop_context *ctx, const dop_lora_shape *shape, int32_t max_call_slots,
                                   size_t *bytes)
{
    static const char fn[] = "dop_lora_workspace_size";
    if (!ctx || !bytes)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !ctx ? "ctx" : "bytes");
    call_shape c;
    dop_status st = check_shape(ctx, fn, shape, &c);
    if (st)
        return st;
    if (max_call_slots < 0 || max_call_slots > (1 << 24))
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: max_call_slots %d not in 0..%d", fn, max_call_slots,
                            1 << 24);
    *bytes = ws_plan(c.num_rows, c.num_slices, c.max_rank, max_call_slots).total;
    return DOP_OK;
}

/* ---- weights ------------------------------------------------------------------- */

typedef struct call_weights {
    int32_t num_slots;
    const dop_lora_adapter *host; /* [num_slots * num_slices] */
    uint64_t a_ptrs, b_ptrs, ranks, scales; /* device, 0 where uploaded / uniform */
    int32_t uniform_rank;
    float uniform_scale;
    bool upload;
} call_weights;

static dop_status check_weights(const dop_context *ctx, const char *fn, const dop_weights *w, const call_shape *c,
                                call_weights *out)
{
    memset(out, 0, sizeof *out);
    if (!w)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: weights is NULL", fn);
    if (w->table) {
        const dop_adapter_table *t = w->table;
        if (w->adapters || w->dev_A || w->dev_B || w->dev_rank || w->dev_scale)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                "%s: weights has both a table and per-call arrays; give one", fn);
        if (t->ctx != ctx)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: weights->table belongs to another context", fn);
        if (t->num_slices != c->num_slices)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: the table has %d slices, the shape %d", fn,
                                t->num_slices, c->num_slices);
        int64_t n = (int64_t)t->num_slots * t->num_slices;
        out->num_slots = t->num_slots;
        out->host = t->host;
        out->a_ptrs = t->dev;
        out->b_ptrs = t->dev + (uint64_t)n * 8;
        out->ranks = t->dev + (uint64_t)n * 16;
        out->scales = t->dev + (uint64_t)n * 20;
        return DOP_OK;
    }
    if (!w->adapters)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: weights has neither a table nor host adapters", fn);
    if (w->num_slots <= 0 || w->num_slots > (1 << 24))
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: weights->num_slots %d not in 1..%d", fn, w->num_slots,
                            1 << 24);
    int32_t n = w->num_slots * c->num_slices;
    dop_status st = runtime_check_adapters(ctx, fn, w->adapters, n, c->num_slices);
    if (st)
        return st;
    out->num_slots = w->num_slots;
    out->host = w->adapters;
    if (!w->dev_A && !w->dev_B) {
        if (w->dev_rank || w->dev_scale)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                "%s: weights->dev_rank/dev_scale given without dev_A and dev_B", fn);
        out->upload = true;
        return DOP_OK;
    }
    if (!w->dev_A || !w->dev_B)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: weights->%s is NULL while %s is given", fn,
                            w->dev_A ? "dev_B" : "dev_A", w->dev_A ? "dev_A" : "dev_B");
    if (((uintptr_t)w->dev_A | (uintptr_t)w->dev_B) & 7u)
        return runtime_fail(ctx, DOP_ERR_MISALIGNED, "%s: weights->dev_A/dev_B must be 8-byte aligned", fn);
    if (((uintptr_t)w->dev_rank | (uintptr_t)w->dev_scale) & 3u)
        return runtime_fail(ctx, DOP_ERR_MISALIGNED, "%s: weights->dev_rank/dev_scale must be 4-byte aligned", fn);
    out->a_ptrs = (uint64_t)(uintptr_t)w->dev_A;
    out->b_ptrs = (uint64_t)(uintptr_t)w->dev_B;
    out->ranks = (uint64_t)(uintptr_t)w->dev_rank;
    out->scales = (uint64_t)(uintptr_t)w->dev_scale;
    /* without device ranks/scales the host values must agree: they become kernel constants */
    out->uniform_rank = w->adapters[0].rank;
    out->uniform_scale = w->adapters[0].scale;
    for (int32_t i = 1; i < n; ++i) {
        if (!w->dev_rank && w->adapters[i].rank != out->uniform_rank)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                "%s: ranks differ between adapters (entry %d has %d, entry 0 %d): give weights->dev_rank",
                                fn, i, w->adapters[i].rank, out->uniform_rank);
        if (!w->dev_scale && w->adapters[i].scale != out->uniform_scale)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                "%s: scales differ between adapters (entry %d): give weights->dev_scale", fn, i);
    }
    return DOP_OK;
}

/* ---- layout ---------------------------------------------------------------------- */

void runtime_summarize_rows(const int32_t *row_slot, int32_t num_rows, runtime_layout_summary *sum)
{
    int32_t prev = -1, run = 0;
    memset(sum, 0, sizeof *sum);
    for (int32_t i = 0; i < num_rows; ++i) {
        int32_t s = row_slot[i];
        if (s != prev)
            run = 0;
        if (s >= 0) {
            sum->rows_with_adapter++;
            if (run == 0)
                sum->groups++;
            if (++run > sum->longest)
                sum->longest = run;
        }
        prev = s;
    }
    sum->distinct = sum->groups;
}

typedef struct call_layout {
    runtime_layout_summary sum;
    int32_t rank_min, rank_max; /* over the (slot, slice) entries in use */
    uint64_t row_slot, seg_indptr, seg_slot, num_segments_dev; /* device, 0 where uploaded */
    int32_t num_segments;
    bool upload;
} call_layout;

static dop_status check_slot(const dop_context *ctx, const char *fn, const call_shape *c, const call_weights *w,
                             call_layout *l, int32_t slot, const char *where, int32_t index)
{
    if (slot < -1 || slot >= w->num_slots)
        return runtime_fail(ctx, DOP_ERR_INVALID_LAYOUT, "%s: %s %d uses adapter slot %d, outside -1..%d", fn, where,
                            index, slot, w->num_slots - 1);
    if (slot < 0)
        return DOP_OK;
    for (int s = 0; s < c->num_slices; ++s) {
        int32_t r = w->host[(int64_t)slot * c->num_slices + s].rank;
        if (r < l->rank_min)
            l->rank_min = r;
        if (r > l->rank_max)
            l->rank_max = r;
        if (r > c->max_rank)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                "%s: %s %d uses slot %d whose slice %d has rank %d, above shape->max_rank %d", fn,
                                where, index, slot, s, r, c->max_rank);
    }
    return DOP_OK;
}

static dop_status check_layout(const dop_context *ctx, const char *fn, const dop_layout *l, const call_shape *c,
                               const call_weights *w, call_layout *out)
{
    memset(out, 0, sizeof *out);
    out->rank_min = INT32_MAX;
    out->rank_max = 0;
    if (!l)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: layout is NULL", fn);
    runtime_layout_summary *sum = &out->sum;
    int32_t prev = -1, run = 0, prev_end = -1;
    if (l->kind == DOP_LAYOUT_ROWS) {
        if (!l->row_slot)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: layout->row_slot (host) is NULL", fn);
        if (l->seg_indptr || l->dev_seg_indptr)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: a DOP_LAYOUT_ROWS layout has segment arrays", fn);
        if ((uintptr_t)l->dev_row_slot & 3u)
            return runtime_fail(ctx, DOP_ERR_MISALIGNED, "%s: layout->dev_row_slot is not 4-byte aligned", fn);
        for (int32_t i = 0; i < c->num_rows; ++i) {
            int32_t s = l->row_slot[i];
            if (s != prev) {
                dop_status st = check_slot(ctx, fn, c, w, out, s, "row", i);
                if (st)
                    return st;
            }
            prev = s;
        }
        runtime_summarize_rows(l->row_slot, c->num_rows, sum);
        out->row_slot = (uint64_t)(uintptr_t)l->dev_row_slot;
        out->upload = !l->dev_row_slot;
    } else if (l->kind == DOP_LAYOUT_SEGMENTS) {
        if (!l->seg_indptr)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: layout->seg_indptr (host) is NULL", fn);
        if (l->row_slot || l->dev_row_slot)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: a DOP_LAYOUT_SEGMENTS layout has row arrays", fn);
        if (l->num_segments < 0)
            return runtime_fail(ctx, DOP_ERR_INVALID_LAYOUT, "%s: layout->num_segments %d is negative", fn,
                                l->num_segments);
        if (l->seg_indptr[0] < 0 || l->seg_indptr[0] > c->num_rows)
            return runtime_fail(ctx, DOP_ERR_INVALID_LAYOUT, "%s: seg_indptr[0] = %d outside 0..num_rows (%d)", fn,
                                l->seg_indptr[0], c->num_rows);
        for (int32_t i = 0; i < l->num_segments; ++i) {
            int32_t a = l->seg_indptr[i], b = l->seg_indptr[i + 1];
            if (b < a)
                return runtime_fail(ctx, DOP_ERR_INVALID_LAYOUT,
                                    "%s: segments are not monotonic: seg_indptr[%d] = %d < seg_indptr[%d] = %d", fn,
                                    i + 1, b, i, a);
            if (b > c->num_rows)
                return runtime_fail(ctx, DOP_ERR_INVALID_LAYOUT, "%s: segment %d ends at row %d, past num_rows %d", fn,
                                    i, b, c->num_rows);
            int32_t s = l->seg_slot ? l->seg_slot[i] : i;
            dop_status st = check_slot(ctx, fn, c, w, out, s, "segment", i);
            if (st)
                return st;
            if (s >= 0 && b > a) {
                sum->rows_with_adapter += b - a;
                /* adjacent segments of one slot behave as one group in the kernels */
                if (s == prev && a == prev_end) {
                    run += b - a;
                } else {
                    sum->groups++;
                    run = b - a;
                }
                if (run > sum->longest)
                    sum->longest = run;
                prev = s;
                prev_end = b;
            }
        }
        if (l->dev_seg_indptr) {
            if (l->seg_slot && !l->dev_seg_slot)
                return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                    "%s: layout->dev_seg_slot is NULL while seg_slot is given", fn);
            if (!l->seg_slot && l->dev_seg_slot)
                return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                    "%s: layout->dev_seg_slot is given but seg_slot is NULL", fn);
            if (((uintptr_t)l->dev_seg_indptr | (uintptr_t)l->dev_seg_slot | (uintptr_t)l->dev_num_segments) & 3u)
                return runtime_fail(ctx, DOP_ERR_MISALIGNED, "%s: layout device arrays must be 4-byte aligned", fn);
            out->seg_indptr = (uint64_t)(uintptr_t)l->dev_seg_indptr;
            out->seg_slot = (uint64_t)(uintptr_t)l->dev_seg_slot;
            out->num_segments_dev = (uint64_t)(uintptr_t)l->dev_num_segments;
        } else {
            if (l->dev_seg_slot || l->dev_num_segments)
                return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                    "%s: layout device arrays given without layout->dev_seg_indptr", fn);
            if ((int64_t)l->num_segments * 2 + 1 > (int64_t)c->num_rows * 4 + 4)
                return runtime_fail(ctx, DOP_ERR_INVALID_LAYOUT,
                                    "%s: %d segments for %d rows: without device copies a layout may have at most "
                                    "2 * num_rows + 1 segments (give dev_seg_indptr for more)",
                                    fn, l->num_segments, c->num_rows);
            out->upload = true;
        }
        out->num_segments = l->num_segments;
    } else {
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: layout->kind %d is not DOP_LAYOUT_SEGMENTS or _ROWS",
                            fn, (int)l->kind);
    }
    sum->distinct = sum->groups; /* an upper bound; exact counting would cost a set per call */
    return DOP_OK;
}

/* ---- dispatch ------------------------------------------------------------------ */

static _Thread_local bool t_forced;
static _Thread_local search_schedule t_forced_sched;
static _Thread_local search_schedule t_last_sched;

void runtime_last_schedule(search_schedule *out)
{
    *out = t_last_sched;
}

void runtime_force_schedule(const search_schedule *s)
{
    t_forced = s != NULL;
    if (s)
        t_forced_sched = *s;
}

/* ---- the call ------------------------------------------------------------------- */

int32_t runtime_seg_row_tiles(const int32_t *seg_indptr, const int32_t *seg_slot, int32_t num_segments,
                              int32_t num_rows, int32_t num_slots, int32_t threads)
{
    enum { TILE = 16 }; /* the tensor-core schedules' rows */
    if (!seg_indptr || num_segments <= 0 || num_segments > threads || num_rows <= 0)
        return 0;
    bool off_grid = false;
    for (int32_t i = 0; i < num_segments && !off_grid; ++i) {
        int32_t a = seg_indptr[i], b = seg_indptr[i + 1];
        int32_t slot = seg_slot ? seg_slot[i] : i;
        if (b <= a || slot < 0 || slot >= num_slots)
            continue; /* no rows, or rows without an update: they form no group */
        off_grid = a % TILE != 0 || (b % TILE != 0 && b != num_rows);
    }
    if (!off_grid)
        return 0;
    int64_t most = ((int64_t)num_rows + TILE - 1) / TILE + num_segments - 1;
    return (int32_t)(most < num_rows ? most : num_rows);
}

/* The module of sched's variant with row tiles aligned to segments (seg = 1) in
 * *out if it is loaded. If not: with wait (a forced schedule, or a context that
 * waits for compiles) it is loaded or compiled now; otherwise it is queued for
 * the background compiler and *out is NULL, so this call runs sched's own
 * module with plain tiles (correct for every layout) until it is ready. */
static dop_status seg_variant(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *sched,
                              bool wait, const runtime_kernel **out)
{
    search_schedule v = *sched;
    v.seg = 1;
    *out = runtime_kernel_loaded(ctx, dtype, max_rank, &v);
    if (*out)
        return DOP_OK;
    if (wait)
        return runtime_kernel_get(ctx, dtype, max_rank, &v, out);
    runtime_compile_async(ctx, dtype, max_rank, &v);
    return DOP_OK;
}

typedef struct call_args {
    runtime_op op;
    const char *fn;
    const dop_lora_shape *shape;
    const dop_layout *layout;
    const dop_weights *weights;
    const void *x;
    void *y;
    const float *v;
    int64_t ldv;
    uint32_t flags;
    void *workspace;
    size_t workspace_size;
    dop_stream stream;
} call_args;

/* Sets *attr to programmatic stream serialization (programmatic dependent
 * launch, sm_90+): the kernel may start while the kernel before it on the stream
 * finishes; every entry point waits for that kernel (dop_grid_wait) before it
 * touches y or the intermediate. */
static void pdl_attribute(CUlaunchAttribute *attr)
{
    memset(attr, 0, sizeof *attr);
    attr->id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr->value.programmaticStreamSerializationAllowed = 1;
}

/* One launch of f over gx x gy x gz CTAs with the kernel's argument block kp:
 * cuLaunchKernel without attributes, else cuLaunchKernelEx with them. */
static dop_status launch_with(dop_context *ctx, CUfunction f, unsigned gx, unsigned gy, unsigned gz,
                              unsigned threads, dop_kparams *kp, CUlaunchAttribute *attrs, unsigned nattrs,
                              dop_stream stream, const char *what)
{
    void *args[] = {kp};
    CUresult r;
    if (!nattrs) {
        r = ctx->drv->fn_cuLaunchKernel(f, gx, gy, gz, threads, 1, 1, 0, (CUstream)stream, args, NULL);
    } else {
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = gx;
        cfg.gridDimY = gy;
        cfg.gridDimZ = gz;
        cfg.blockDimX = threads;
        cfg.blockDimY = 1;
        cfg.blockDimZ = 1;
        cfg.hStream = (CUstream)stream;
        cfg.attrs = attrs;
        cfg.numAttrs = nattrs;
        r = ctx->drv->fn_cuLaunchKernelEx(&cfg, f, args, NULL);
    }
    return r == CUDA_SUCCESS ? DOP_OK : runtime_fail_cu(ctx, r, what);
}

/* One launch of f; with pdl, a programmatic dependent launch (see pdl_attribute). */
static dop_status launch(dop_context *ctx, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned threads,
                         dop_kparams *kp, bool pdl, dop_stream stream, const char *what)
{
    CUlaunchAttribute attr;
    pdl_attribute(&attr);
    return launch_with(ctx, f, gx, gy, gz, threads, kp, &attr, pdl ? 1 : 0, stream, what);
}

enum { ENTRY_SHRINK, ENTRY_EXPAND, ENTRY_FUSED, ENTRY_COUNTER };

/* The cluster sketch's one launch: clusters of `split` CTAs along x (the K splits
 * of one row tile), row tiles x split CTAs along x, slices along y; with pdl a
 * programmatic dependent launch too. */
static dop_status launch_cluster(dop_context *ctx, const runtime_kernel *k, unsigned row_tiles, unsigned split,
                                 unsigned slices, unsigned threads, dop_kparams *kp, bool pdl, dop_stream stream)
{
    if (!k->cluster)
        return runtime_fail(ctx, DOP_ERR_INTERNAL, "cuLaunchKernelEx (cluster): the module has no cluster entry point");
    if ((unsigned long long)row_tiles * split > 0x7fffffffull)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "cuLaunchKernelEx (cluster): %u row tiles x %u K splits "
                            "exceed the grid", row_tiles, split);
    CUlaunchAttribute attr[2];
    memset(&attr[0], 0, sizeof attr[0]);
    attr[0].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    attr[0].value.clusterDim.x = split;
    attr[0].value.clusterDim.y = 1;
    attr[0].value.clusterDim.z = 1;
    pdl_attribute(&attr[1]);
    return launch_with(ctx, k->cluster, row_tiles * split, slices, 1, threads, kp, attr, pdl ? 2 : 1, stream,
                       "cuLaunchKernelEx (cluster)");
}

/* Launches entry point `entry` of k over gx x gy x gz tiles: that grid for a
 * one-tile-per-CTA module; for a persist module a 1-D grid of the CTAs that fit
 * on the device at once (never more than the tiles), each striding over the
 * tiles (the kernel takes the tile counts from kp, not from the grid). */
static dop_status launch_tiles(dop_context *ctx, const runtime_kernel *k, int entry, unsigned long long gx,
                               unsigned long long gy, unsigned long long gz, unsigned threads, dop_kparams *kp,
                               bool pdl, dop_stream stream, const char *what)
{
    CUfunction fs[4] = {k->shrink, k->expand, k->fused, k->counter};
    if (!fs[entry]) /* a module holds its own sketch's entry points only */
        return runtime_fail(ctx, DOP_ERR_INTERNAL, "%s: the module has no entry point %d for this sketch", what,
                            entry);
    if (k->sched.persist) {
        unsigned long long tiles = gx * gy * gz, n = k->resident[entry] ? k->resident[entry] : 1u;
        return launch(ctx, fs[entry], (unsigned)(tiles < n ? tiles : n), 1, 1, threads, kp, pdl, stream, what);
    }
    if (gy > 65535)
        gy = 65535; /* column tiles: CTAs stride over the rest */
    return launch(ctx, fs[entry], (unsigned)gx, (unsigned)gy, (unsigned)gz, threads, kp, pdl, stream, what);
}

static dop_status run_call(dop_context *ctx, const call_args *a)
{
    const char *fn = a->fn;
    if (!ctx)
        return runtime_fail(NULL, DOP_ERR_INVALID_ARGUMENT, "%s: ctx is NULL", fn);
    call_shape c;
    dop_status st = check_shape(ctx, fn, a->shape, &c);
    if (st)
        return st;
    if (a->op != RUNTIME_OP_EXPAND && !a->x)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: x is NULL", fn);
    if (a->op != RUNTIME_OP_SHRINK && !a->y)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: y is NULL", fn);
    if (a->op != RUNTIME_OP_APPLY && !a->v)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: v is NULL", fn);
    if (((uintptr_t)a->x | (uintptr_t)a->y) & 1u)
        return runtime_fail(ctx, DOP_ERR_MISALIGNED, "%s: %s is not aligned to its 2-byte element", fn,
                            ((uintptr_t)a->x & 1u) ? "x" : "y");
    if ((uintptr_t)a->v & 3u)
        return runtime_fail(ctx, DOP_ERR_MISALIGNED, "%s: v is not 4-byte aligned", fn);
    if (a->op != RUNTIME_OP_APPLY && a->ldv < (int64_t)c.num_slices * c.max_rank)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: ldv %lld is smaller than num_slices * max_rank = %d",
                            fn, (long long)a->ldv, c.num_slices * c.max_rank);
    if (a->flags & ~DOP_SHRINK_ACCUMULATE)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: unknown flags 0x%x", fn, a->flags);
    if (!a->workspace)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: workspace is NULL", fn);
    if ((uintptr_t)a->workspace % WS_ALIGN)
        return runtime_fail(ctx, DOP_ERR_MISALIGNED, "%s: workspace is not %u-byte aligned", fn, WS_ALIGN);

    call_weights w;
    if ((st = check_weights(ctx, fn, a->weights, &c, &w)) != DOP_OK)
        return st;
    call_layout l;
    if ((st = check_layout(ctx, fn, a->layout, &c, &w, &l)) != DOP_OK)
        return st;
    ws_layout ws = ws_plan(c.num_rows, c.num_slices, c.max_rank, w.upload ? w.num_slots : 0);
    if (a->workspace_size < ws.total)
        return runtime_fail(ctx, DOP_ERR_WORKSPACE_TOO_SMALL,
                            "%s: workspace_size %zu is below the %zu bytes this call needs (dop_lora_workspace_size)",
                            fn, a->workspace_size, ws.total);

    bool pushed;
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK)
        return st;
    if (l.upload || w.upload) { /* before any compile: a refused call does no work */
        CUstreamCaptureStatus cs = CU_STREAM_CAPTURE_STATUS_NONE;
        if (ctx->drv->fn_cuStreamIsCapturing((CUstream)a->stream, &cs) == CUDA_SUCCESS &&
            cs != CU_STREAM_CAPTURE_STATUS_NONE) {
            st = runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                              "%s: the stream is capturing a graph, so the %s must be given as device copies", fn,
                              l.upload ? "layout" : "weights");
            goto out;
        }
    }
    search_schedule sched;
    const runtime_kernel *k;
    if (t_forced) {
        char why[256];
        sched = t_forced_sched;
        if (a->op != RUNTIME_OP_APPLY)
            sched.sketch = SEARCH_SKETCH_SPLIT; /* before the module: shrink / expand are the split sketch's */
        if (!search_schedule_legal(&sched, c.max_rank, why, sizeof why)) {
            st = runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: forced schedule is illegal: %s", fn, why);
            goto out;
        }
        if ((st = runtime_kernel_get(ctx, c.dtype, c.max_rank, &sched, &k)) != DOP_OK)
            goto out;
    } else {
        runtime_perf_shape ps;
        memset(&ps, 0, sizeof ps);
        ps.dtype = a->shape->dtype;
        ps.kdtype = c.dtype;
        ps.num_rows = c.num_rows;
        ps.d_in = c.d_in;
        ps.num_slices = c.num_slices;
        ps.max_rank = c.max_rank;
        for (int i = 0; i < c.num_slices; ++i)
            ps.d_out[i] = c.d_out[i];
        ps.weights_kind = a->weights->table ? 0 : w.upload ? 2 : 1;
        runtime_layout_class cls;
        runtime_layout_classify(&l.sum, c.num_rows, l.rank_max > 0 && l.rank_min != l.rank_max, &cls);
        if ((st = runtime_dispatch(ctx, a->op, &ps, &cls, (ctx->flags & DOP_CONTEXT_WAIT_FOR_COMPILE) != 0, &sched,
                                   &k)) != DOP_OK)
            goto out;
    }
    if (a->op != RUNTIME_OP_APPLY)
        sched.sketch = SEARCH_SKETCH_SPLIT; /* shrink / expand alone are the two halves of that sketch */
    if (a->op == RUNTIME_OP_SHRINK && !(a->flags & DOP_SHRINK_ACCUMULATE))
        sched.split_k = 1; /* overwriting needs one CTA per output element */

    CUdeviceptr wsp = (CUdeviceptr)(uintptr_t)a->workspace;
    dop_kparams kp;
    memset(&kp, 0, sizeof kp);
    kp.x = (uint64_t)(uintptr_t)a->x;
    kp.y = (uint64_t)(uintptr_t)a->y;
    kp.v = a->op == RUNTIME_OP_APPLY ? wsp + ws.v_off : (uint64_t)(uintptr_t)a->v;
    kp.ldx = c.ldx;
    kp.ldy = c.ldy;
    kp.ldv = a->op == RUNTIME_OP_APPLY ? (int64_t)c.num_slices * c.max_rank : a->ldv;
    kp.num_rows = c.num_rows;
    kp.d_in = c.d_in;
    kp.num_slices = c.num_slices;
    kp.max_rank = c.max_rank;
    kp.num_slots = w.num_slots;
    kp.num_segments = l.num_segments;
    kp.accumulate = (a->flags & DOP_SHRINK_ACCUMULATE) ? 1 : 0;
    for (int i = 0; i < c.num_slices; ++i) {
        kp.d_out[i] = c.d_out[i];
        kp.y_col[i] = c.y_col[i];
    }
    kp.row_slot = l.row_slot;
    kp.seg_indptr = l.seg_indptr;
    kp.seg_slot = l.seg_slot;
    kp.num_segments_dev = l.num_segments_dev;
    kp.a_ptrs = w.a_ptrs;
    kp.b_ptrs = w.b_ptrs;
    kp.ranks = w.ranks;
    kp.scales = w.scales;
    kp.uniform_rank = w.uniform_rank;
    kp.uniform_scale = w.uniform_scale;

    if (l.upload || w.upload) {
        size_t bytes = ws.w_off + ws.w_size - ws.meta_off;
        unsigned char *img = calloc(1, bytes);
        if (!img) {
            st = runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
            goto out;
        }
        CUdeviceptr meta = wsp + ws.meta_off;
        if (l.upload && a->layout->kind == DOP_LAYOUT_ROWS) {
            memcpy(img, a->layout->row_slot, (size_t)c.num_rows * 4);
            kp.row_slot = meta;
        } else if (l.upload) {
            size_t n = (size_t)l.num_segments;
            memcpy(img, a->layout->seg_indptr, (n + 1) * 4);
            kp.seg_indptr = meta;
            if (a->layout->seg_slot) {
                memcpy(img + (n + 1) * 4, a->layout->seg_slot, n * 4);
                kp.seg_slot = meta + (n + 1) * 4;
            }
        }
        if (w.upload) {
            int32_t n = w.num_slots * c.num_slices;
            runtime_pack_adapters(w.host, n, img + (ws.w_off - ws.meta_off));
            CUdeviceptr base = wsp + ws.w_off;
            kp.a_ptrs = base;
            kp.b_ptrs = base + (uint64_t)n * 8;
            kp.ranks = base + (uint64_t)n * 16;
            kp.scales = base + (uint64_t)n * 20;
        }
        CUresult r = ctx->drv->fn_cuMemcpyHtoDAsync(meta, img, bytes, (CUstream)a->stream);
        free(img);
        if (r != CUDA_SUCCESS) {
            st = runtime_fail_cu(ctx, r, "cuMemcpyHtoDAsync (layout and weights)");
            goto out;
        }
    }

    unsigned threads = 32u * sched.warps;
    unsigned row_tiles = (unsigned)((c.num_rows + sched.rows - 1) / sched.rows);
    if (sched.mma && a->layout->kind == DOP_LAYOUT_SEGMENTS) {
        int32_t seg = runtime_seg_row_tiles(a->layout->seg_indptr, a->layout->seg_slot, l.num_segments, c.num_rows,
                                            w.num_slots, (int32_t)threads);
        const runtime_kernel *ks = NULL;
        if (seg > 0 && (st = seg_variant(ctx, c.dtype, c.max_rank, &sched,
                                         t_forced || (ctx->flags & DOP_CONTEXT_WAIT_FOR_COMPILE), &ks)) != DOP_OK)
            goto out;
        if (ks) {
            k = ks;
            row_tiles = (unsigned)seg;
            kp.seg_tiles = 1;
        }
    }
    kp.row_tiles = (int32_t)row_tiles;
    unsigned col_tiles = (unsigned)((c.max_dout + sched.cols - 1) / sched.cols); /* launch_tiles caps it */
    int kpc = (int)search_k_per_cta(c.d_in, sched.mma, sched.vec, sched.split_k); /* whole vector loads per CTA */
    kp.k_per_cta = kpc;
    int split = (c.d_in + kpc - 1) / kpc;

    /* Programmatic dependent launch (sm_90+): the second kernel of a split apply
     * always (it waits for the shrink before it reads v); a call's first kernel
     * when the context asks for it and nothing of the call (an upload, a memset) is
     * enqueued before it. */
    const bool pdl_ok = ctx->info.cc_major >= 9;
    const bool pdl_first = pdl_ok && atomic_load_explicit(&ctx->pdl, memory_order_relaxed) && !l.upload && !w.upload;
    if (a->op == RUNTIME_OP_APPLY && sched.sketch == SEARCH_SKETCH_CLUSTER) {
        st = launch_cluster(ctx, k, row_tiles, (unsigned)split, (unsigned)c.num_slices, threads, &kp, pdl_first,
                            a->stream);
    } else if (a->op == RUNTIME_OP_APPLY && sched.sketch == SEARCH_SKETCH_FUSED_COUNTER) {
        kp.counters = wsp + ws.cnt_off;
        CUresult r = ctx->drv->fn_cuMemsetD32Async(wsp + ws.v_off, 0, (ws.v_size + ws.cnt_size) / 4,
                                                   (CUstream)a->stream);
        if (r != CUDA_SUCCESS) {
            st = runtime_fail_cu(ctx, r, "cuMemsetD32Async (intermediate and counters)");
            goto out;
        }
        st = launch_tiles(ctx, k, ENTRY_COUNTER, row_tiles, (unsigned)split, (unsigned)c.num_slices, threads, &kp,
                          false, a->stream, "cuLaunchKernel (fused, counters)");
    } else if (a->op == RUNTIME_OP_APPLY && sched.sketch == SEARCH_SKETCH_FUSED) {
        st = launch_tiles(ctx, k, ENTRY_FUSED, row_tiles, col_tiles, (unsigned)c.num_slices, threads, &kp,
                          pdl_first, a->stream, "cuLaunchKernel (fused)");
    } else if (a->op == RUNTIME_OP_APPLY) {
        if (split > 1) {
            CUresult r = ctx->drv->fn_cuMemsetD32Async(wsp + ws.v_off, 0, ws.v_size / 4, (CUstream)a->stream);
            if (r != CUDA_SUCCESS) {
                st = runtime_fail_cu(ctx, r, "cuMemsetD32Async (intermediate)");
                goto out;
            }
        }
        kp.accumulate = 0;
        st = launch_tiles(ctx, k, ENTRY_SHRINK, row_tiles, (unsigned)split, (unsigned)c.num_slices, threads, &kp,
                          pdl_first && split == 1, a->stream, "cuLaunchKernel (shrink)");
        if (st == DOP_OK)
            st = launch_tiles(ctx, k, ENTRY_EXPAND, row_tiles, col_tiles, (unsigned)c.num_slices, threads, &kp,
                              pdl_ok, a->stream, "cuLaunchKernel (expand)");
    } else if (a->op == RUNTIME_OP_SHRINK) {
        st = launch_tiles(ctx, k, ENTRY_SHRINK, row_tiles, (unsigned)split, (unsigned)c.num_slices, threads, &kp,
                          pdl_first, a->stream, "cuLaunchKernel (shrink)");
    } else {
        st = launch_tiles(ctx, k, ENTRY_EXPAND, row_tiles, col_tiles, (unsigned)c.num_slices, threads, &kp,
                          pdl_first, a->stream, "cuLaunchKernel (expand)");
    }
    if (st == DOP_OK) {
        t_last_sched = sched;
        t_last_sched.split_k = (uint8_t)(sched.sketch == SEARCH_SKETCH_FUSED ? 1 : split);
        pthread_mutex_lock(&ctx->lock);
        ctx->stats.calls++;
        pthread_mutex_unlock(&ctx->lock);
    }
out:
    runtime_leave(ctx, pushed);
    return st;
}

dop_status dop_lora_apply(dop_context *ctx, const dop_lora_shape *shape, const dop_layout *layout,
                          const dop_weights *weights, const void *x, void *y, void *workspace, size_t workspace_size,
                          dop_stream stream)
{
    call_args a = {RUNTIME_OP_APPLY, "dop_lora_apply", shape, layout, weights, x, y, NULL, 0, 0,
                   workspace, workspace_size, stream};
    return run_call(ctx, &a);
}

dop_status dop_lora_shrink(dop_context *ctx, const dop_lora_shape *shape, const dop_layout *layout,
                           const dop_weights *weights, const void *x, float *v, int64_t ldv, uint32_t flags,
                           void *workspace, size_t workspace_size, dop_stream stream)
{
    call_args a = {RUNTIME_OP_SHRINK, "dop_lora_shrink", shape, layout, weights, x, NULL, v, ldv, flags,
                   workspace, workspace_size, stream};
    return run_call(ctx, &a);
}

dop_status dop_lora_expand(dop_context *ctx, const dop_lora_shape *shape, const dop_layout *layout,
                           const dop_weights *weights, const float *v, int64_t ldv, void *y, void *workspace,
                           size_t workspace_size, dop_stream stream)
{
    call_args a = {RUNTIME_OP_EXPAND, "dop_lora_expand", shape, layout, weights, NULL, y, v, ldv, 0,
                   workspace, workspace_size, stream};
    return run_call(ctx, &a);
}
