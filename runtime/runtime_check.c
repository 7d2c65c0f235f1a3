/*
 * runtime_check.c -- one kernel run checked against the CPU reference.
 *
 * Data is fresh and random for every case (never zeros): x, A, B, y in
 * [-1, 1], scaled so that the LoRA update is of the same order as y. What
 * must be untouched is checked bit for bit: rows without an adapter, slices
 * an adapter has no weights for, and for shrink every entry of v that is not
 * an output (v is poisoned with NaN first, so a missed write shows too).
 */
#define _GNU_SOURCE
#include "runtime_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_ref.h"

uint64_t runtime_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) /* [-1, 1) */
{
    return (double)(runtime_rng_next(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static const char *const wl_names[RUNTIME_WL_COUNT] = {"distinct", "uniform", "skewed", "identical", "mixed"};

uint64_t runtime_case_rng(uint64_t seed)
{
    return seed * 0x2545f4914f6cdd1dull + 1;
}

const char *runtime_workload_name(runtime_workload w)
{
    return (unsigned)w < RUNTIME_WL_COUNT ? wl_names[w] : "?";
}

int runtime_workload_parse(const char *name)
{
    for (int i = 0; i < RUNTIME_WL_COUNT; ++i)
        if (name && strcmp(name, wl_names[i]) == 0)
            return i;
    return -1;
}

int runtime_workload_rows(runtime_workload w, int n, uint64_t *rng, int32_t *row_slot)
{
    int slots = 0;
    switch (w) {
    case RUNTIME_WL_DISTINCT:
        for (int i = 0; i < n; ++i)
            row_slot[i] = i;
        slots = n;
        break;
    case RUNTIME_WL_UNIFORM: {
        int k = (int)ceil(sqrt((double)n));
        int base = n / k, extra = n % k, row = 0;
        for (int a = 0; a < k; ++a)
            for (int j = 0; j < base + (a < extra); ++j)
                row_slot[row++] = a;
        slots = k;
        break;
    }
    case RUNTIME_WL_SKEWED:
    case RUNTIME_WL_MIXED: {
        /* segment i gets about n / (i^1.5 H) rows, at least 1, until rows run out;
         * H normalises over the segments that can exist (at most n) */
        double h = 0;
        for (int i = 1; i <= n; ++i)
            h += pow((double)i, -1.5);
        int row = 0;
        for (int i = 1; row < n; ++i) {
            int len = (int)llround((double)n / (pow((double)i, 1.5) * h));
            if (len < 1)
                len = 1;
            if (len > n - row)
                len = n - row;
            for (int j = 0; j < len; ++j)
                row_slot[row++] = slots;
            ++slots;
        }
        if (w == RUNTIME_WL_MIXED) {
            for (int i = 0; i < n; ++i) /* 25% of rows on no adapter */
                if (runtime_rng_next(rng) % 4 == 0)
                    row_slot[i] = -1;
            for (int i = n - 1; i > 0; --i) { /* rows not sorted by adapter */
                int j = (int)(runtime_rng_next(rng) % (uint64_t)(i + 1));
                int32_t t = row_slot[i];
                row_slot[i] = row_slot[j];
                row_slot[j] = t;
            }
        }
        break;
    }
    case RUNTIME_WL_IDENTICAL:
    default:
        for (int i = 0; i < n; ++i)
            row_slot[i] = 0;
        slots = 1;
        break;
    }
    return slots;
}

/* ---- device helpers -------------------------------------------------------------- */

typedef struct dev_allocs {
    CUdeviceptr p[16];
    int n;
} dev_allocs;

static CUresult dalloc(const runtime_driver *d, dev_allocs *a, CUdeviceptr *out, size_t bytes)
{
    CUresult r = d->fn_cuMemAlloc(out, bytes ? bytes : 4);
    if (r == CUDA_SUCCESS)
        a->p[a->n++] = *out;
    return r;
}

static CUresult dupload(const runtime_driver *d, dev_allocs *a, CUdeviceptr *out, const void *src, size_t bytes)
{
    CUresult r = dalloc(d, a, out, bytes);
    if (r == CUDA_SUCCESS && bytes)
        r = d->fn_cuMemcpyHtoD(*out, src, bytes);
    return r;
}

#define CK(call) RUNTIME_CK(call)

struct runtime_case_data {
    runtime_case c;
    dev_allocs da;
    int bf16, slots, nseg, dout_total;
    dop_layout_kind kind;
    int32_t *row_slot, *indptr, *segslot;
    uint16_t *x, *y0, *y, *wts;
    kref_adapter *kad;
    dop_lora_adapter *dad;
    int32_t *ranks;
    float *scales, *vf;
    dop_adapter_table *table;
    CUstream stream;
    CUdeviceptr dx, dy, dws, dv;
    CUdeviceptr dy0; /* device copy of y0: resets are device-to-device */
    size_t ws_bytes;
    int64_t ldv;
    double hbm_bytes;
    dop_lora_shape shape;
    dop_layout lay;
    dop_weights w;
    double *ref; /* the reference output, computed by the first verify (the inputs never change) */
};

double runtime_case_hbm_bytes(const runtime_case_data *d)
{
    return d->hbm_bytes;
}

void runtime_case_force(runtime_case_data *d, const search_schedule *s)
{
    d->c.force = s;
}

dop_stream runtime_case_stream(const runtime_case_data *d)
{
    return (dop_stream)d->stream;
}

void runtime_case_free(dop_context *ctx, runtime_case_data *cd)
{
    if (!cd)
        return;
    const runtime_driver *d = ctx->drv;
    bool pushed;
    if (runtime_enter(ctx, &pushed) == DOP_OK) {
        if (cd->stream)
            d->fn_cuStreamDestroy(cd->stream);
        for (int i = 0; i < cd->da.n; ++i)
            d->fn_cuMemFree(cd->da.p[i]);
        runtime_leave(ctx, pushed);
    }
    dop_adapter_table_destroy(cd->table);
    free(cd->row_slot);
    free(cd->indptr);
    free(cd->segslot);
    free(cd->x);
    free(cd->y0);
    free(cd->y);
    free(cd->wts);
    free(cd->kad);
    free(cd->dad);
    free(cd->ranks);
    free(cd->scales);
    free(cd->vf);
    free(cd->ref);
    free(cd);
}

dop_status runtime_case_setup(dop_context *ctx, const runtime_case *c, runtime_case_data **out)
{
    *out = NULL;
    const runtime_driver *d = ctx->drv;
    runtime_case_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "check: out of host memory");
    cd->c = *c;
    const int bf16 = cd->bf16 = c->dtype == DOP_DTYPE_BF16;
    const int n = c->num_rows, S = c->num_slices, R = c->max_rank;
    uint64_t rng = runtime_case_rng(c->seed);
    dop_status st = DOP_OK;
    bool pushed = false;
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK) {
        free(cd);
        return st;
    }

    /* layout */
    cd->row_slot = malloc((size_t)n * sizeof *cd->row_slot);
    cd->indptr = malloc(((size_t)n * 2 + 2) * sizeof *cd->indptr);
    cd->segslot = malloc(((size_t)n * 2 + 1) * sizeof *cd->segslot);
    if (!cd->row_slot || !cd->indptr || !cd->segslot)
        goto oom;
    int32_t *row_slot = cd->row_slot, *indptr = cd->indptr, *segslot = cd->segslot;
    int slots = cd->slots = runtime_workload_rows(c->workload, n, &rng, row_slot);
    dop_layout_kind kind = cd->kind = c->workload == RUNTIME_WL_MIXED ? DOP_LAYOUT_ROWS : c->layout_kind;
    int nseg = 0;
    if (kind == DOP_LAYOUT_SEGMENTS) {
        indptr[0] = 0;
        for (int i = 0; i < n;) {
            int j = i;
            while (j < n && row_slot[j] == row_slot[i])
                ++j;
            if (c->empty_segments && runtime_rng_next(&rng) % 3 == 0) { /* an empty segment before this one */
                segslot[nseg] = (int32_t)(runtime_rng_next(&rng) % (uint64_t)slots);
                indptr[++nseg] = i;
            }
            segslot[nseg] = row_slot[i];
            indptr[++nseg] = j;
            i = j;
        }
    }
    cd->nseg = nseg;

    /* adapters: ranks, scales, weights */
    int64_t nent = (int64_t)slots * S;
    cd->kad = calloc((size_t)nent, sizeof *cd->kad);
    cd->dad = calloc((size_t)nent, sizeof *cd->dad);
    cd->ranks = calloc((size_t)nent, sizeof *cd->ranks);
    cd->scales = calloc((size_t)nent, sizeof *cd->scales);
    if (!cd->kad || !cd->dad || !cd->ranks || !cd->scales)
        goto oom;
    int32_t *ranks = cd->ranks;
    float *scales = cd->scales;
    int dout_total = 0;
    for (int s = 0; s < S; ++s)
        dout_total += c->d_out[s];
    cd->dout_total = dout_total;
    bool uniform = c->per_call_weights && c->device_copies; /* Punica style: one rank and scale */
    for (int64_t e = 0; e < nent; ++e) {
        int r = R;
        if (c->hetero_ranks && !(uniform && e > 0)) {
            int steps = R >= 8 ? R / 8 : R;
            int k = (int)(runtime_rng_next(&rng) % (uint64_t)steps);
            r = R >= 8 ? 8 * (1 + k) : 1 + k;
        }
        ranks[e] = uniform && e > 0 ? ranks[0] : r;
        scales[e] = uniform && e > 0 ? scales[0] : (float)(0.5 + 0.75 * (rng_unit(&rng) + 1.0));
    }
    int64_t total_w = 0;
    for (int64_t e = 0; e < nent; ++e)
        total_w += (int64_t)ranks[e] * (c->d_in + c->d_out[e % S]);
    cd->wts = malloc((size_t)total_w * 2);
    cd->x = malloc((size_t)n * c->d_in * 2);
    cd->y0 = malloc((size_t)n * dout_total * 2);
    cd->y = malloc((size_t)n * dout_total * 2);
    if (!cd->wts || !cd->x || !cd->y0 || !cd->y)
        goto oom;
    double sa = 1.0 / sqrt((double)c->d_in);
    for (int64_t i = 0; i < (int64_t)n * c->d_in; ++i)
        cd->x[i] = kref_from_f32(bf16, (float)rng_unit(&rng));
    for (int64_t i = 0; i < (int64_t)n * dout_total; ++i)
        cd->y0[i] = kref_from_f32(bf16, (float)rng_unit(&rng));

    CUdeviceptr dw;
    CK(dalloc(d, &cd->da, &dw, (size_t)total_w * 2));
    int64_t off = 0;
    for (int64_t e = 0; e < nent; ++e) {
        int s = (int)(e % S), r = ranks[e];
        uint16_t *A = cd->wts + off, *B = A + (int64_t)r * c->d_in;
        for (int64_t i = 0; i < (int64_t)r * c->d_in; ++i)
            A[i] = kref_from_f32(bf16, (float)(rng_unit(&rng) * sa * 1.7));
        for (int64_t i = 0; i < (int64_t)c->d_out[s] * r; ++i)
            B[i] = kref_from_f32(bf16, (float)(rng_unit(&rng) * 1.7 / sqrt((double)r)));
        cd->kad[e] = (kref_adapter){A, B, r, scales[e]};
        cd->dad[e] = (dop_lora_adapter){(const void *)(uintptr_t)(dw + (CUdeviceptr)off * 2),
                                        (const void *)(uintptr_t)(dw + (CUdeviceptr)(off + (int64_t)r * c->d_in) * 2),
                                        r, scales[e]};
        off += (int64_t)r * (c->d_in + c->d_out[s]);
    }
    /* bytes that must move: x, y read and written, every adapter in use once */
    {
        char *used = calloc((size_t)slots, 1);
        if (!used)
            goto oom;
        double bytes = (double)n * c->d_in * 2 + 2.0 * n * dout_total * 2;
        for (int i = 0; i < n; ++i)
            if (row_slot[i] >= 0 && !used[row_slot[i]]) {
                used[row_slot[i]] = 1;
                for (int s = 0; s < S; ++s)
                    bytes += 2.0 * ranks[(int64_t)row_slot[i] * S + s] * (c->d_in + c->d_out[s]);
            }
        free(used);
        cd->hbm_bytes = bytes;
    }
    CK(d->fn_cuMemcpyHtoD(dw, cd->wts, (size_t)total_w * 2));
    CK(dupload(d, &cd->da, &cd->dx, cd->x, (size_t)n * c->d_in * 2));
    CK(dupload(d, &cd->da, &cd->dy, cd->y0, (size_t)n * dout_total * 2));
    CK(dupload(d, &cd->da, &cd->dy0, cd->y0, (size_t)n * dout_total * 2));
    CK(d->fn_cuStreamCreate(&cd->stream, CU_STREAM_NON_BLOCKING));

    dop_lora_shape *shape = &cd->shape;
    dop_lora_shape_init(shape);
    shape->dtype = c->dtype;
    shape->num_rows = n;
    shape->d_in = c->d_in;
    shape->num_slices = S;
    shape->max_rank = R;
    for (int s = 0; s < S; ++s)
        shape->d_out[s] = c->d_out[s];

    dop_layout *lay = &cd->lay;
    lay->kind = kind;
    if (kind == DOP_LAYOUT_ROWS) {
        lay->row_slot = row_slot;
        if (c->device_copies) {
            CUdeviceptr p;
            CK(dupload(d, &cd->da, &p, row_slot, (size_t)n * 4));
            lay->dev_row_slot = (const int32_t *)(uintptr_t)p;
        }
    } else {
        lay->num_segments = nseg;
        lay->seg_indptr = indptr;
        lay->seg_slot = segslot;
        if (c->device_copies) {
            CUdeviceptr p, q, cnt;
            CK(dupload(d, &cd->da, &p, indptr, ((size_t)nseg + 1) * 4));
            CK(dupload(d, &cd->da, &q, segslot, (size_t)nseg * 4 + 4));
            CK(dupload(d, &cd->da, &cnt, &nseg, 4));
            lay->dev_seg_indptr = (const int32_t *)(uintptr_t)p;
            lay->dev_seg_slot = (const int32_t *)(uintptr_t)q;
            lay->dev_num_segments = (const int32_t *)(uintptr_t)cnt;
        }
    }

    dop_weights *w = &cd->w;
    int max_call_slots = 0;
    if (c->per_call_weights) {
        w->num_slots = slots;
        w->adapters = cd->dad;
        if (c->device_copies) {
            uint64_t *pa = malloc((size_t)nent * 16);
            if (!pa)
                goto oom;
            for (int64_t e = 0; e < nent; ++e) {
                pa[e] = (uint64_t)(uintptr_t)cd->dad[e].A;
                pa[nent + e] = (uint64_t)(uintptr_t)cd->dad[e].B;
            }
            CUdeviceptr q;
            CUresult r = dupload(d, &cd->da, &q, pa, (size_t)nent * 16);
            free(pa);
            CK(r);
            w->dev_A = (const void *const *)(uintptr_t)q;
            w->dev_B = (const void *const *)(uintptr_t)(q + (CUdeviceptr)nent * 8);
        } else {
            max_call_slots = slots;
        }
    } else {
        if ((st = dop_adapter_table_create(ctx, slots, S, cd->dad, &cd->table)) != DOP_OK)
            goto done;
        w->table = cd->table;
    }

    if ((st = dop_lora_workspace_size(ctx, shape, max_call_slots, &cd->ws_bytes)) != DOP_OK)
        goto done;
    CK(dalloc(d, &cd->da, &cd->dws, cd->ws_bytes));
    CK(d->fn_cuMemsetD8(cd->dws, 0xff, cd->ws_bytes)); /* garbage in the scratch must not matter */

    cd->ldv = (int64_t)S * R;
    if (c->op != RUNTIME_OP_APPLY) {
        cd->vf = malloc((size_t)n * cd->ldv * sizeof *cd->vf);
        if (!cd->vf)
            goto oom;
        if (c->op == RUNTIME_OP_SHRINK) {
            memset(cd->vf, 0xff, (size_t)n * cd->ldv * sizeof *cd->vf); /* NaN poison */
        } else {
            for (int64_t i = 0; i < (int64_t)n * cd->ldv; ++i)
                cd->vf[i] = (float)rng_unit(&rng);
        }
        CK(dupload(d, &cd->da, &cd->dv, cd->vf, (size_t)n * cd->ldv * sizeof *cd->vf));
    }
    /* copies from pageable memory may return before their DMA lands, and the case's
     * stream does not wait for the legacy stream they ran on */
    CK(d->fn_cuCtxSynchronize());
    goto done;
oom:
    st = runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "check: out of host memory");
done:
    runtime_leave(ctx, pushed);
    if (st != DOP_OK)
        runtime_case_free(ctx, cd);
    else
        *out = cd;
    return st;
}

dop_status runtime_case_launch(dop_context *ctx, runtime_case_data *cd)
{
    const runtime_case *c = &cd->c;
    void *x = (void *)(uintptr_t)cd->dx, *y = (void *)(uintptr_t)cd->dy, *ws = (void *)(uintptr_t)cd->dws;
    float *v = (float *)(uintptr_t)cd->dv;
    dop_status st;
    if (c->force)
        runtime_force_schedule(c->force);
    if (c->op == RUNTIME_OP_APPLY)
        st = dop_lora_apply(ctx, &cd->shape, &cd->lay, &cd->w, x, y, ws, cd->ws_bytes, (dop_stream)cd->stream);
    else if (c->op == RUNTIME_OP_SHRINK)
        st = dop_lora_shrink(ctx, &cd->shape, &cd->lay, &cd->w, x, v, cd->ldv, 0, ws, cd->ws_bytes,
                             (dop_stream)cd->stream);
    else
        st = dop_lora_expand(ctx, &cd->shape, &cd->lay, &cd->w, v, cd->ldv, y, ws, cd->ws_bytes,
                             (dop_stream)cd->stream);
    runtime_force_schedule(NULL);
    return st;
}

dop_status runtime_case_reset(dop_context *ctx, runtime_case_data *cd)
{
    const runtime_driver *d = ctx->drv;
    dop_status st = DOP_OK;
    bool pushed;
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK)
        return st;
    /* the copy below is ordered on the legacy stream only: earlier calls on the case's
     * non-blocking stream must be done before y is rewritten under them */
    CK(d->fn_cuStreamSynchronize(cd->stream));
    CK(d->fn_cuMemcpyDtoD(cd->dy, cd->dy0, (size_t)cd->c.num_rows * cd->dout_total * 2));
    if (cd->dv)
        CK(d->fn_cuMemcpyHtoD(cd->dv, cd->vf, (size_t)cd->c.num_rows * cd->ldv * sizeof *cd->vf));
    CK(d->fn_cuCtxSynchronize()); /* see runtime_case_setup */
done:
    runtime_leave(ctx, pushed);
    return st;
}

dop_status runtime_case_verify(dop_context *ctx, runtime_case_data *cd, runtime_case_result *res)
{
    const runtime_driver *d = ctx->drv;
    const runtime_case *c = &cd->c;
    const int n = c->num_rows, S = c->num_slices, bf16 = cd->bf16, dout_total = cd->dout_total;
    const int64_t ldv = cd->ldv;
    dop_status st = DOP_OK;
    bool pushed;
    float *vout = NULL;
    double *ref = NULL, *vref = NULL;
    memset(res, 0, sizeof *res);
    res->tol = bf16 ? 8e-3 : 1e-3;
    res->slots = cd->slots;
    search_schedule used;
    runtime_last_schedule(&used);
    search_schedule_format(&used, res->schedule, sizeof res->schedule);
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK)
        return st;
    CK(d->fn_cuStreamSynchronize(cd->stream));

    kref_problem kp = {bf16, n, c->d_in, S, c->max_rank, c->d_out, NULL, (int64_t)c->d_in, (int64_t)dout_total,
                       cd->row_slot, cd->slots, cd->kad};
    int ycol[DOP_MAX_SLICES], acc = 0;
    for (int s = 0; s < S; ++s) {
        ycol[s] = acc;
        acc += c->d_out[s];
    }
    kp.y_col = ycol;
    double num = 0, den = 0;
    if (c->op == RUNTIME_OP_SHRINK) {
        vout = malloc((size_t)n * ldv * sizeof *vout);
        if (!vout)
            goto oom;
        CK(d->fn_cuMemcpyDtoH(vout, cd->dv, (size_t)n * ldv * sizeof *vout));
        if (!cd->ref) {
            if (!(cd->ref = malloc((size_t)n * ldv * sizeof *cd->ref)))
                goto oom;
            for (int64_t i = 0; i < (int64_t)n * ldv; ++i)
                cd->ref[i] = NAN;
            kref_shrink(&kp, cd->x, cd->ref, ldv);
        }
        const double *vr = cd->ref;
        for (int64_t i = 0; i < (int64_t)n * ldv; ++i) {
            if (isnan(vr[i])) {
                uint32_t bits;
                memcpy(&bits, &vout[i], 4);
                if (bits != 0xffffffffu)
                    res->untouched_bad++;
            } else {
                double e = isnan(vout[i]) ? INFINITY : (double)vout[i] - vr[i];
                num += e * e;
                den += vr[i] * vr[i];
                res->checked++;
            }
        }
    } else {
        CK(d->fn_cuMemcpyDtoH(cd->y, cd->dy, (size_t)n * dout_total * 2));
        if (!cd->ref) {
            if (!(ref = malloc((size_t)n * dout_total * sizeof *ref)))
                goto oom;
            if (c->op == RUNTIME_OP_APPLY) {
                kref_apply(&kp, cd->x, cd->y0, ref);
            } else {
                vref = malloc((size_t)n * ldv * sizeof *vref);
                if (!vref)
                    goto oom;
                for (int64_t i = 0; i < (int64_t)n * ldv; ++i)
                    vref[i] = cd->vf[i];
                kref_expand(&kp, vref, ldv, cd->y0, ref);
            }
            cd->ref = ref;
            ref = NULL;
        }
        const double *yr = cd->ref;
        for (int row = 0; row < n; ++row) {
            int slot = cd->row_slot[row];
            for (int s = 0; s < S; ++s) {
                int upd = slot >= 0 && cd->kad[(int64_t)slot * S + s].rank > 0;
                for (int col = ycol[s]; col < ycol[s] + c->d_out[s]; ++col) {
                    int64_t i = (int64_t)row * dout_total + col;
                    if (!upd) {
                        if (cd->y[i] != cd->y0[i])
                            res->untouched_bad++;
                        continue;
                    }
                    double got = kref_to_f32(bf16, cd->y[i]);
                    double e = isnan(got) ? INFINITY : got - yr[i];
                    num += e * e;
                    den += yr[i] * yr[i];
                    res->checked++;
                }
            }
        }
    }
    res->err = den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0);
    res->ok = res->err <= res->tol && res->untouched_bad == 0 && !isnan(res->err);
    if (!res->ok)
        snprintf(res->message, sizeof res->message, "error %.3g (tolerance %.1g), %lld entries changed that must not be",
                 res->err, res->tol, res->untouched_bad);
    goto done;
oom:
    st = runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "check: out of host memory");
done:
    runtime_leave(ctx, pushed);
    free(vout);
    free(vref);
    free(ref);
    return st;
}

void runtime_case_class(const runtime_case_data *cd, runtime_perf_shape *ps, runtime_layout_class *cls)
{
    const runtime_case *c = &cd->c;
    memset(ps, 0, sizeof *ps);
    ps->dtype = c->dtype;
    ps->kdtype = cd->bf16 ? KERNELS_BF16 : KERNELS_F16;
    ps->num_rows = c->num_rows;
    ps->d_in = c->d_in;
    ps->num_slices = c->num_slices;
    ps->max_rank = c->max_rank;
    for (int s = 0; s < c->num_slices; ++s)
        ps->d_out[s] = c->d_out[s];
    ps->weights_kind = c->per_call_weights ? (c->device_copies ? 1 : 2) : 0;
    runtime_layout_summary sum;
    runtime_summarize_rows(cd->row_slot, c->num_rows, &sum);
    /* as dop_lora_apply: the ranks of every (slot, slice) in use, zeros included */
    int rmin = INT32_MAX, rmax = 0;
    for (int i = 0; i < c->num_rows; ++i) {
        if (cd->row_slot[i] < 0)
            continue;
        for (int s = 0; s < c->num_slices; ++s) {
            int r = cd->kad[(int64_t)cd->row_slot[i] * c->num_slices + s].rank;
            rmin = r < rmin ? r : rmin;
            rmax = r > rmax ? r : rmax;
        }
    }
    runtime_layout_classify(&sum, c->num_rows, rmax > 0 && rmin != rmax, cls);
}

dop_status runtime_check_case(dop_context *ctx, const runtime_case *c, runtime_case_result *res)
{
    runtime_case_data *cd;
    memset(res, 0, sizeof *res);
    dop_status st = runtime_case_setup(ctx, c, &cd);
    if (st == DOP_OK) {
        st = runtime_case_launch(ctx, cd);
        if (st == DOP_OK)
            st = runtime_case_verify(ctx, cd, res);
        runtime_case_free(ctx, cd);
    }
    if (st != DOP_OK)
        snprintf(res->message, sizeof res->message, "%s: %s", dop_status_string(st), dop_context_error(ctx));
    return st;
}
