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
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* ---- host work on all cores: data sets, the reference, the comparison ---------------------
 * A prefill case is tens of millions of random values, a reference of about a billion
 * multiply-adds and as many outputs to compare per checked call; one core took seconds per
 * case. Work is cut into fixed chunks (the same for any number of threads), so results and
 * sums are the same on every machine. */

#define PAR_MAX_THREADS 16
#define RNG_STEP 0x9e3779b97f4a7c15ull /* runtime_rng_next adds it to the state each draw */

typedef void (*par_fn)(void *arg, int64_t begin, int64_t end);

typedef struct par_job {
    par_fn fn;
    void *arg;
    int64_t n, chunk;
    atomic_llong next;
} par_job;

static void *par_worker(void *p)
{
    par_job *j = p;
    for (;;) {
        int64_t b = (int64_t)atomic_fetch_add(&j->next, (long long)j->chunk);
        if (b >= j->n)
            return NULL;
        j->fn(j->arg, b, b + j->chunk < j->n ? b + j->chunk : j->n);
    }
}

/* fn(arg, begin, end) over [0, n) in chunks of `chunk`, on up to PAR_MAX_THREADS threads
 * (the caller's among them; where no thread can be started, the caller does it all). */
static void par_for(int64_t n, int64_t chunk, par_fn fn, void *arg)
{
    if (n <= 0)
        return;
    par_job j = {fn, arg, n, chunk < 1 ? 1 : chunk, 0};
    atomic_init(&j.next, 0);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t chunks = (n + j.chunk - 1) / j.chunk;
    int extra = (int)((cpus < PAR_MAX_THREADS ? cpus : PAR_MAX_THREADS) - 1);
    if (extra > chunks - 1)
        extra = (int)(chunks - 1);
    pthread_t t[PAR_MAX_THREADS];
    int started = 0;
    while (started < extra && pthread_create(&t[started], NULL, par_worker, &j) == 0)
        started++;
    par_worker(&j);
    for (int i = 0; i < started; ++i)
        pthread_join(t[i], NULL);
}

/* dst[i] = ((u_i * m1) * m2) / div for the next n draws u_i = rng_unit of *rng, in order; *rng ends
 * where n sequential draws leave it (draw i depends on i only: splitmix64 is a counter). */
typedef struct fill_job {
    uint16_t *dst;
    uint64_t s0;
    double m1, m2, div;
    int bf16;
} fill_job;

static void fill_part(void *arg, int64_t b, int64_t e)
{
    const fill_job *f = arg;
    for (int64_t i = b; i < e; ++i) {
        uint64_t s = f->s0 + (uint64_t)i * RNG_STEP;
        f->dst[i] = kref_from_f32(f->bf16, (float)(rng_unit(&s) * f->m1 * f->m2 / f->div));
    }
}

static void fill_unit(uint16_t *dst, int64_t n, uint64_t *rng, int bf16)
{
    fill_job f = {dst, *rng, 1.0, 1.0, 1.0, bf16};
    par_for(n, 1 << 16, fill_part, &f);
    *rng += (uint64_t)n * RNG_STEP;
}

/* The adapters' weights: A = u / sqrt(d_in) * 1.7, B = u * 1.7 / sqrt(rank), A then B for each
 * (slot, slice) entry, draw j of the weights filling wts[j]. */
typedef struct weights_job {
    uint16_t *wts;
    const int64_t *offs; /* [entries + 1] start of each entry's A in wts */
    const int32_t *ranks;
    const int *d_out;
    int num_slices, d_in;
    uint64_t s0;
    double sa;
    int bf16;
} weights_job;

static void weights_part(void *arg, int64_t b, int64_t e)
{
    const weights_job *w = arg;
    for (int64_t k = b; k < e; ++k) {
        int r = w->ranks[k];
        int64_t na = (int64_t)r * w->d_in, nb = (int64_t)w->d_out[k % w->num_slices] * r;
        fill_job a = {w->wts, w->s0, w->sa, 1.7, 1.0, w->bf16};
        fill_part(&a, w->offs[k], w->offs[k] + na);
        fill_job bj = {w->wts, w->s0, 1.7, 1.0, sqrt((double)r), w->bf16};
        fill_part(&bj, w->offs[k] + na, w->offs[k] + na + nb);
    }
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
    fill_unit(cd->x, (int64_t)n * c->d_in, &rng, bf16);
    fill_unit(cd->y0, (int64_t)n * dout_total, &rng, bf16);
    /* every adapter's A then B, one draw per element in the order they lie in wts */
    {
        int64_t *offs = malloc(((size_t)nent + 1) * sizeof *offs), per = 1;
        if (!offs)
            goto oom;
        offs[0] = 0;
        for (int64_t e = 0; e < nent; ++e) {
            int64_t sz = (int64_t)ranks[e] * (c->d_in + c->d_out[e % S]);
            offs[e + 1] = offs[e] + sz;
            per = sz > per ? sz : per;
        }
        weights_job wj = {cd->wts, offs, ranks, c->d_out, S, c->d_in, rng, 1.0 / sqrt((double)c->d_in), bf16};
        par_for(nent, (1 << 16) / per + 1, weights_part, &wj);
        free(offs);
        rng += (uint64_t)total_w * RNG_STEP;
    }

    CUdeviceptr dw;
    CK(dalloc(d, &cd->da, &dw, (size_t)total_w * 2));
    int64_t off = 0;
    for (int64_t e = 0; e < nent; ++e) {
        int s = (int)(e % S), r = ranks[e];
        uint16_t *A = cd->wts + off, *B = A + (int64_t)r * c->d_in;
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

/* The reference of y (apply, or expand from the fp32 v) for rows [b, e). */
#define ROWS_PER_CHUNK 16

typedef struct ref_job {
    const kref_problem *kp;
    const runtime_case_data *cd;
    const double *vref; /* expand: v as the kernel read it; NULL for apply */
    double *out;
} ref_job;

static void ref_part(void *arg, int64_t b, int64_t e)
{
    const ref_job *j = arg;
    kref_problem kp = *j->kp;
    kp.num_rows = (int)(e - b);
    kp.row_slot = j->cd->row_slot + b;
    const uint16_t *y0 = j->cd->y0 + b * kp.ldy;
    if (j->vref)
        kref_expand(&kp, j->vref + b * j->cd->ldv, j->cd->ldv, y0, j->out + b * kp.ldy);
    else
        kref_apply(&kp, j->cd->x + b * kp.ldx, y0, j->out + b * kp.ldy);
}

/* y against the reference for rows [b, e): squared error and norm of the updated entries,
 * entries that had to stay as they were and did not; one partial per chunk of rows. */
typedef struct compare_part_sums {
    double num, den;
    long long checked, bad;
} compare_part_sums;

typedef struct compare_job {
    const runtime_case_data *cd;
    const int *ycol;
    compare_part_sums *part;
} compare_job;

static void compare_part(void *arg, int64_t b, int64_t e)
{
    const compare_job *j = arg;
    const runtime_case_data *cd = j->cd;
    const runtime_case *c = &cd->c;
    const int S = c->num_slices, bf16 = cd->bf16;
    compare_part_sums sum = {0, 0, 0, 0};
    for (int64_t row = b; row < e; ++row) {
        int slot = cd->row_slot[row];
        for (int s = 0; s < S; ++s) {
            int upd = slot >= 0 && cd->kad[(int64_t)slot * S + s].rank > 0;
            for (int col = j->ycol[s]; col < j->ycol[s] + c->d_out[s]; ++col) {
                int64_t i = row * cd->dout_total + col;
                if (!upd) {
                    if (cd->y[i] != cd->y0[i])
                        sum.bad++;
                    continue;
                }
                double got = kref_to_f32(bf16, cd->y[i]);
                double d = isnan(got) ? INFINITY : got - cd->ref[i];
                sum.num += d * d;
                sum.den += cd->ref[i] * cd->ref[i];
                sum.checked++;
            }
        }
    }
    j->part[b / ROWS_PER_CHUNK] = sum;
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
            if (c->op != RUNTIME_OP_APPLY) {
                vref = malloc((size_t)n * ldv * sizeof *vref);
                if (!vref)
                    goto oom;
                for (int64_t i = 0; i < (int64_t)n * ldv; ++i)
                    vref[i] = cd->vf[i];
            }
            ref_job rj = {&kp, cd, vref, ref};
            par_for(n, ROWS_PER_CHUNK, ref_part, &rj);
            cd->ref = ref;
            ref = NULL;
        }
        int64_t chunks = (n + ROWS_PER_CHUNK - 1) / ROWS_PER_CHUNK;
        compare_job cj = {cd, ycol, calloc((size_t)chunks, sizeof *cj.part)};
        if (!cj.part)
            goto oom;
        par_for(n, ROWS_PER_CHUNK, compare_part, &cj);
        for (int64_t k = 0; k < chunks; ++k) { /* in order: the same sums for any number of threads */
            num += cj.part[k].num;
            den += cj.part[k].den;
            res->checked += cj.part[k].checked;
            res->untouched_bad += cj.part[k].bad;
        }
        free(cj.part);
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

dop_status runtime_case_write_reference(dop_context *ctx, runtime_case_data *cd)
{
    const runtime_case *c = &cd->c;
    if (c->op == RUNTIME_OP_SHRINK)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "runtime_case_write_reference: apply and expand only");
    runtime_case_result res;
    dop_status st = runtime_case_verify(ctx, cd, &res); /* computes cd->ref once */
    if (st != DOP_OK)
        return st;
    const int64_t n = (int64_t)c->num_rows * cd->dout_total;
    uint16_t *y = malloc((size_t)n * 2);
    if (!y)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "check: out of host memory");
    for (int64_t i = 0; i < n; ++i) /* rows and slices without an update keep y0 bit for bit */
        y[i] = kref_to_f32(cd->bf16, cd->y0[i]) == (float)cd->ref[i] ? cd->y0[i]
                                                                     : kref_from_f32(cd->bf16, (float)cd->ref[i]);
    bool pushed;
    if ((st = runtime_enter(ctx, &pushed)) == DOP_OK) {
        CUresult r = ctx->drv->fn_cuMemcpyHtoD(cd->dy, y, (size_t)n * 2);
        if (r != CUDA_SUCCESS)
            st = runtime_fail_cu(ctx, r, "writing the reference");
        runtime_leave(ctx, pushed);
    }
    free(y);
    return st;
}

CUdeviceptr runtime_case_output(const runtime_case_data *cd, size_t *bytes)
{
    *bytes = (size_t)cd->c.num_rows * (size_t)cd->dout_total * 2;
    return cd->dy;
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
