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

#define CK(call)                                                                                                   \
    do {                                                                                                           \
        CUresult r_ = (call);                                                                                      \
        if (r_ != CUDA_SUCCESS) {                                                                                  \
            st = runtime_fail_cu(ctx, r_, #call);                                                                  \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)

dop_status runtime_check_case(dop_context *ctx, const runtime_case *c, runtime_case_result *res)
{
    memset(res, 0, sizeof *res);
    const runtime_driver *d = ctx->drv;
    const int bf16 = c->dtype == DOP_DTYPE_BF16;
    const int n = c->num_rows, S = c->num_slices, R = c->max_rank;
    uint64_t rng = c->seed * 0x2545f4914f6cdd1dull + 1;
    dop_status st = DOP_OK;
    dev_allocs da = {{0}, 0};
    bool pushed = false;
    int32_t *row_slot = NULL, *indptr = NULL, *segslot = NULL;
    uint16_t *x = NULL, *y0 = NULL, *y = NULL, *wts = NULL;
    kref_adapter *kad = NULL;
    dop_lora_adapter *dad = NULL;
    int32_t *ranks = NULL;
    float *scales = NULL, *vf = NULL, *vout = NULL;
    double *ref = NULL, *vref = NULL;
    dop_adapter_table *table = NULL;
    CUstream stream = NULL;

    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK)
        return st;
    res->tol = bf16 ? 8e-3 : 1e-3;

    /* layout */
    row_slot = malloc((size_t)n * sizeof *row_slot);
    indptr = malloc(((size_t)n * 2 + 2) * sizeof *indptr);
    segslot = malloc(((size_t)n * 2 + 1) * sizeof *segslot);
    if (!row_slot || !indptr || !segslot)
        goto oom;
    int slots = runtime_workload_rows(c->workload, n, &rng, row_slot);
    res->slots = slots;
    dop_layout_kind kind = c->workload == RUNTIME_WL_MIXED ? DOP_LAYOUT_ROWS : c->layout_kind;
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

    /* adapters: ranks, scales, weights */
    int64_t nent = (int64_t)slots * S;
    kad = calloc((size_t)nent, sizeof *kad);
    dad = calloc((size_t)nent, sizeof *dad);
    ranks = calloc((size_t)nent, sizeof *ranks);
    scales = calloc((size_t)nent, sizeof *scales);
    if (!kad || !dad || !ranks || !scales)
        goto oom;
    int64_t total_w = 0;
    int dout_total = 0;
    for (int s = 0; s < S; ++s)
        dout_total += c->d_out[s];
    for (int64_t e = 0; e < nent; ++e) {
        int r = R;
        if (c->hetero_ranks) {
            int lo = R >= 8 ? 8 : 1;
            int steps = R >= 8 ? R / 8 : R;
            r = R >= 8 ? 8 * (1 + (int)(runtime_rng_next(&rng) % (uint64_t)steps)) : 1 + (int)(runtime_rng_next(&rng) % (uint64_t)steps);
            if (r < lo)
                r = lo;
            if (r > R)
                r = R;
        }
        ranks[e] = r;
        scales[e] = (float)(0.5 + 1.5 * (rng_unit(&rng) * 0.5 + 0.5));
        total_w += (int64_t)r * (c->d_in + c->d_out[e % S]);
    }
    if (c->per_call_weights && c->device_copies) { /* uniform rank and scale: Punica style */
        for (int64_t e = 0; e < nent; ++e) {
            ranks[e] = ranks[0];
            scales[e] = scales[0];
        }
        total_w = 0;
        for (int64_t e = 0; e < nent; ++e)
            total_w += (int64_t)ranks[e] * (c->d_in + c->d_out[e % S]);
    }
    wts = malloc((size_t)total_w * 2);
    x = malloc((size_t)n * c->d_in * 2);
    y0 = malloc((size_t)n * dout_total * 2);
    y = malloc((size_t)n * dout_total * 2);
    ref = malloc((size_t)n * dout_total * sizeof *ref);
    if (!wts || !x || !y0 || !y || !ref)
        goto oom;
    double sa = 1.0 / sqrt((double)c->d_in);
    for (int64_t i = 0; i < (int64_t)n * c->d_in; ++i)
        x[i] = kref_from_f32(bf16, (float)rng_unit(&rng));
    for (int64_t i = 0; i < (int64_t)n * dout_total; ++i)
        y0[i] = kref_from_f32(bf16, (float)rng_unit(&rng));

    CUdeviceptr dw, dx, dy, dws, dv = 0;
    CK(dalloc(d, &da, &dw, (size_t)total_w * 2));
    int64_t off = 0;
    for (int64_t e = 0; e < nent; ++e) {
        int s = (int)(e % S), r = ranks[e];
        uint16_t *A = wts + off, *B = A + (int64_t)r * c->d_in;
        for (int64_t i = 0; i < (int64_t)r * c->d_in; ++i)
            A[i] = kref_from_f32(bf16, (float)(rng_unit(&rng) * sa * 1.7));
        for (int64_t i = 0; i < (int64_t)c->d_out[s] * r; ++i)
            B[i] = kref_from_f32(bf16, (float)(rng_unit(&rng) * 1.7 / sqrt((double)r)));
        kad[e] = (kref_adapter){A, B, r, scales[e]};
        dad[e] = (dop_lora_adapter){(const void *)(uintptr_t)(dw + (CUdeviceptr)off * 2),
                                    (const void *)(uintptr_t)(dw + (CUdeviceptr)(off + (int64_t)r * c->d_in) * 2), r,
                                    scales[e]};
        off += (int64_t)r * (c->d_in + c->d_out[s]);
    }
    CK(d->fn_cuMemcpyHtoD(dw, wts, (size_t)total_w * 2));
    CK(dupload(d, &da, &dx, x, (size_t)n * c->d_in * 2));
    CK(dupload(d, &da, &dy, y0, (size_t)n * dout_total * 2));
    CK(d->fn_cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));

    dop_lora_shape shape;
    dop_lora_shape_init(&shape);
    shape.dtype = c->dtype;
    shape.num_rows = n;
    shape.d_in = c->d_in;
    shape.num_slices = S;
    shape.max_rank = R;
    for (int s = 0; s < S; ++s)
        shape.d_out[s] = c->d_out[s];

    dop_layout lay;
    memset(&lay, 0, sizeof lay);
    lay.kind = kind;
    if (kind == DOP_LAYOUT_ROWS) {
        lay.row_slot = row_slot;
        if (c->device_copies) {
            CUdeviceptr p;
            CK(dupload(d, &da, &p, row_slot, (size_t)n * 4));
            lay.dev_row_slot = (const int32_t *)(uintptr_t)p;
        }
    } else {
        lay.num_segments = nseg;
        lay.seg_indptr = indptr;
        lay.seg_slot = segslot;
        if (c->device_copies) {
            CUdeviceptr p, q, cnt;
            CK(dupload(d, &da, &p, indptr, ((size_t)nseg + 1) * 4));
            CK(dupload(d, &da, &q, segslot, (size_t)nseg * 4 + 4));
            CK(dupload(d, &da, &cnt, &nseg, 4));
            lay.dev_seg_indptr = (const int32_t *)(uintptr_t)p;
            lay.dev_seg_slot = (const int32_t *)(uintptr_t)q;
            lay.dev_num_segments = (const int32_t *)(uintptr_t)cnt;
        }
    }

    dop_weights w;
    memset(&w, 0, sizeof w);
    int max_call_slots = 0;
    if (c->per_call_weights) {
        w.num_slots = slots;
        w.adapters = dad;
        if (c->device_copies) {
            uint64_t *pa = malloc((size_t)nent * 8), *pb = malloc((size_t)nent * 8);
            if (!pa || !pb) {
                free(pa);
                free(pb);
                goto oom;
            }
            for (int64_t e = 0; e < nent; ++e) {
                pa[e] = (uint64_t)(uintptr_t)dad[e].A;
                pb[e] = (uint64_t)(uintptr_t)dad[e].B;
            }
            CUdeviceptr qa, qb;
            CUresult r1 = dupload(d, &da, &qa, pa, (size_t)nent * 8);
            CUresult r2 = r1 == CUDA_SUCCESS ? dupload(d, &da, &qb, pb, (size_t)nent * 8) : r1;
            free(pa);
            free(pb);
            CK(r2);
            w.dev_A = (const void *const *)(uintptr_t)qa;
            w.dev_B = (const void *const *)(uintptr_t)qb;
        } else {
            max_call_slots = slots;
        }
    } else {
        if ((st = dop_adapter_table_create(ctx, slots, S, dad, &table)) != DOP_OK)
            goto done;
        w.table = table;
    }

    size_t ws_bytes;
    if ((st = dop_lora_workspace_size(ctx, &shape, max_call_slots, &ws_bytes)) != DOP_OK)
        goto done;
    CK(dalloc(d, &da, &dws, ws_bytes));
    CK(d->fn_cuMemsetD8(dws, 0xff, ws_bytes)); /* garbage in the scratch must not matter */

    kref_problem kp = {bf16, n, c->d_in, S, R, c->d_out, NULL, (int64_t)c->d_in, (int64_t)dout_total, row_slot,
                       slots, kad};
    int ycol[DOP_MAX_SLICES], acc = 0;
    for (int s = 0; s < S; ++s) {
        ycol[s] = acc;
        acc += c->d_out[s];
    }
    kp.y_col = ycol;
    int64_t ldv = (int64_t)S * R;

    if (c->force)
        runtime_force_schedule(c->force);
    if (c->op == RUNTIME_OP_APPLY) {
        st = dop_lora_apply(ctx, &shape, &lay, &w, (void *)(uintptr_t)dx, (void *)(uintptr_t)dy,
                            (void *)(uintptr_t)dws, ws_bytes, (dop_stream)stream);
    } else {
        vf = malloc((size_t)n * ldv * sizeof *vf);
        vout = malloc((size_t)n * ldv * sizeof *vout);
        vref = malloc((size_t)n * ldv * sizeof *vref);
        if (!vf || !vout || !vref) {
            runtime_force_schedule(NULL);
            goto oom;
        }
        if (c->op == RUNTIME_OP_SHRINK) {
            memset(vf, 0xff, (size_t)n * ldv * sizeof *vf); /* NaN poison */
        } else {
            for (int64_t i = 0; i < (int64_t)n * ldv; ++i)
                vf[i] = (float)rng_unit(&rng);
        }
        CUresult r = dupload(d, &da, &dv, vf, (size_t)n * ldv * sizeof *vf);
        if (r != CUDA_SUCCESS) {
            runtime_force_schedule(NULL);
            CK(r);
        }
        if (c->op == RUNTIME_OP_SHRINK)
            st = dop_lora_shrink(ctx, &shape, &lay, &w, (void *)(uintptr_t)dx, (float *)(uintptr_t)dv, ldv, 0,
                                 (void *)(uintptr_t)dws, ws_bytes, (dop_stream)stream);
        else
            st = dop_lora_expand(ctx, &shape, &lay, &w, (float *)(uintptr_t)dv, ldv, (void *)(uintptr_t)dy,
                                 (void *)(uintptr_t)dws, ws_bytes, (dop_stream)stream);
    }
    runtime_force_schedule(NULL);
    if (st != DOP_OK)
        goto done;
    CK(d->fn_cuStreamSynchronize(stream));
    search_schedule used;
    runtime_last_schedule(&used);
    search_schedule_format(&used, res->schedule, sizeof res->schedule);

    double num = 0, den = 0;
    if (c->op == RUNTIME_OP_SHRINK) {
        CK(d->fn_cuMemcpyDtoH(vout, dv, (size_t)n * ldv * sizeof *vout));
        for (int64_t i = 0; i < (int64_t)n * ldv; ++i)
            vref[i] = NAN;
        kref_shrink(&kp, x, vref, ldv);
        for (int64_t i = 0; i < (int64_t)n * ldv; ++i) {
            if (isnan(vref[i])) {
                uint32_t bits;
                memcpy(&bits, &vout[i], 4);
                if (bits != 0xffffffffu)
                    res->untouched_bad++;
            } else {
                double e = (double)vout[i] - vref[i];
                if (isnan(vout[i]))
                    e = INFINITY;
                num += e * e;
                den += vref[i] * vref[i];
                res->checked++;
            }
        }
    } else {
        CK(d->fn_cuMemcpyDtoH(y, dy, (size_t)n * dout_total * 2));
        if (c->op == RUNTIME_OP_APPLY) {
            kref_apply(&kp, x, y0, ref);
        } else {
            for (int64_t i = 0; i < (int64_t)n * ldv; ++i)
                vref[i] = vf[i];
            kref_expand(&kp, vref, ldv, y0, ref);
        }
        for (int row = 0; row < n; ++row) {
            int slot = row_slot[row];
            for (int s = 0; s < S; ++s) {
                int upd = slot >= 0 && kad[(int64_t)slot * S + s].rank > 0;
                for (int col = ycol[s]; col < ycol[s] + c->d_out[s]; ++col) {
                    int64_t i = (int64_t)row * dout_total + col;
                    if (!upd) {
                        if (y[i] != y0[i])
                            res->untouched_bad++;
                        continue;
                    }
                    double got = kref_to_f32(bf16, y[i]);
                    double e = got - ref[i];
                    if (isnan(got))
                        e = INFINITY;
                    num += e * e;
                    den += ref[i] * ref[i];
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
    if (st != DOP_OK)
        snprintf(res->message, sizeof res->message, "%s: %s", dop_status_string(st), dop_context_error(ctx));
    if (stream)
        d->fn_cuStreamDestroy(stream);
    dop_adapter_table_destroy(table);
    for (int i = 0; i < da.n; ++i)
        d->fn_cuMemFree(da.p[i]);
    runtime_leave(ctx, pushed);
    free(row_slot);
    free(indptr);
    free(segslot);
    free(x);
    free(y0);
    free(y);
    free(wts);
    free(kad);
    free(dad);
    free(ranks);
    free(scales);
    free(vf);
    free(vout);
    free(vref);
    free(ref);
    return st;
}
