/*
 * runtime_measure.c -- the measurement harness (runtime_measure.h).
 *
 * Why graphs: one call of dop is one to three kernels plus a memset; launched
 * eagerly, the host's launch cost (several microseconds) would hide the
 * kernels' own time. A graph replays the exact work of a call with about a
 * microsecond of overhead, as an engine that captures its decode step sees it.
 * Why bursts: one event pair around a single replay of a few-microsecond graph
 * mostly measures the events; ten replays between them and the median over
 * samples keep the noise near 1%.
 */
#define _GNU_SOURCE
#include "runtime_measure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "search_record.h"

struct runtime_bench {
    runtime_bench_options o;
    int sets;
    runtime_case c;
    runtime_case_data **cd; /* [sets] */
};

void runtime_bench_options_init(runtime_bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_sets = 48;
    o->warmup = 20;
    o->samples = 15;
    o->burst = 10;
}

#define CK(call) RUNTIME_CK(call)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void runtime_bench_free(dop_context *ctx, runtime_bench *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->sets; ++i)
        runtime_case_free(ctx, b->cd[i]);
    free(b->cd);
    free(b);
}

dop_status runtime_bench_create(dop_context *ctx, const runtime_case *c, const runtime_bench_options *o,
                                runtime_bench **out)
{
    if (!ctx || !c || !out)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "runtime_bench_create: NULL argument");
    *out = NULL;
    runtime_bench *b = calloc(1, sizeof *b);
    if (!b)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "bench: out of host memory");
    if (o)
        b->o = *o;
    else
        runtime_bench_options_init(&b->o);
    if (b->o.max_sets < 1)
        b->o.max_sets = 1;
    if (b->o.samples < 1)
        b->o.samples = 1;
    if (b->o.burst < 1)
        b->o.burst = 1;
    b->c = *c;
    b->c.force = NULL;
    dop_status st;
    runtime_case_data *first;
    if ((st = runtime_case_setup(ctx, &b->c, &first)) != DOP_OK) {
        free(b);
        return st;
    }
    int want = 1;
    if (b->o.cold) {
        double bytes = runtime_case_hbm_bytes(first);
        want = (int)ceil(2.5 * (double)ctx->info.l2_bytes / (bytes > 1 ? bytes : 1));
        if (want < 2)
            want = 2;
        if (want > b->o.max_sets)
            want = b->o.max_sets;
    }
    b->cd = calloc((size_t)want, sizeof *b->cd);
    if (!b->cd) {
        runtime_case_free(ctx, first);
        free(b);
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "bench: out of host memory");
    }
    b->cd[0] = first;
    b->sets = 1;
    for (int k = 1; k < want; ++k) {
        runtime_case ck = b->c;
        /* fresh data in fresh buffers; the mixed layout depends on the seed, so it keeps its seed */
        if (ck.workload != RUNTIME_WL_MIXED)
            ck.seed = b->c.seed + 7919u * (unsigned)k;
        if ((st = runtime_case_setup(ctx, &ck, &b->cd[k])) != DOP_OK) {
            runtime_bench_free(ctx, b);
            return st;
        }
        b->sets++;
    }
    *out = b;
    return DOP_OK;
}

runtime_case_data *runtime_bench_case(runtime_bench *b)
{
    return b ? b->cd[0] : NULL;
}

int runtime_bench_sets(const runtime_bench *b)
{
    return b ? b->sets : 0;
}

/* Median over samples of the mean time (us) of `burst` replays of graphs[i % n]. */
static dop_status time_graphs(dop_context *ctx, CUgraphExec *graphs, int n, CUstream stream, int warmup, int samples,
                              int burst, double *us)
{
    const runtime_driver *d = ctx->drv;
    dop_status st = DOP_OK;
    CUevent ev[2] = {NULL, NULL};
    float *t = malloc((size_t)samples * sizeof *t);
    if (!t)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "bench: out of host memory");
    CK(d->fn_cuEventCreate(&ev[0], CU_EVENT_DEFAULT));
    CK(d->fn_cuEventCreate(&ev[1], CU_EVENT_DEFAULT));
    int k = 0;
    for (int i = 0; i < warmup; ++i)
        CK(d->fn_cuGraphLaunch(graphs[k++ % n], stream));
    for (int i = 0; i < samples; ++i) {
        CK(d->fn_cuEventRecord(ev[0], stream));
        for (int b = 0; b < burst; ++b)
            CK(d->fn_cuGraphLaunch(graphs[k++ % n], stream));
        CK(d->fn_cuEventRecord(ev[1], stream));
        CK(d->fn_cuEventSynchronize(ev[1]));
        CK(d->fn_cuEventElapsedTime(&t[i], ev[0], ev[1]));
        t[i] /= (float)burst;
    }
    qsort(t, (size_t)samples, sizeof *t, cmp_float);
    *us = 1e3 * (double)t[samples / 2];
done:
    for (int i = 0; i < 2; ++i)
        if (ev[i])
            d->fn_cuEventDestroy(ev[i]);
    free(t);
    return st;
}

/* Captures one call of cd in a graph. A refused call is the schedule's fault (*call_st). */
static dop_status capture(dop_context *ctx, runtime_case_data *cd, CUgraphExec *out, dop_status *call_st)
{
    const runtime_driver *d = ctx->drv;
    dop_status st = DOP_OK;
    CUstream s = (CUstream)runtime_case_stream(cd);
    CUgraph g = NULL;
    *out = NULL;
    CK(d->fn_cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    *call_st = runtime_case_launch(ctx, cd);
    CK(d->fn_cuStreamEndCapture(s, &g));
    if (*call_st == DOP_OK)
        CK(d->fn_cuGraphInstantiateWithFlags(out, g, 0));
done:
    if (g)
        d->fn_cuGraphDestroy(g);
    return st;
}

static int error_of_status(dop_status s)
{
    switch (s) {
    case DOP_ERR_COMPILE_FAILED:
        return SEARCH_ERR_COMPILE;
    case DOP_ERR_DEVICE_FAILED:
        return SEARCH_ERR_LAUNCH;
    default:
        return SEARCH_ERR_UNKNOWN;
    }
}

dop_status runtime_bench_measure(dop_context *ctx, runtime_bench *b, const search_schedule *s, int verify,
                                 runtime_measurement *m)
{
    if (!ctx || !b || !m)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "runtime_bench_measure: NULL argument");
    memset(m, 0, sizeof *m);
    m->max_error = -1;
    const runtime_driver *d = ctx->drv;
    dop_status st = DOP_OK, call = DOP_OK;
    bool pushed;
    CUgraphExec *g = calloc((size_t)b->sets, sizeof *g);
    if (!g)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "bench: out of host memory");
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK) {
        free(g);
        return st;
    }
    for (int i = 0; i < b->sets; ++i)
        runtime_case_force(b->cd[i], s);

    /* the module first, so that neither the check nor a capture compiles */
    if (s) {
        const runtime_kernel *k;
        double t0 = now_s();
        bool was_loaded = runtime_kernel_loaded(ctx, b->c.dtype == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16,
                                                b->c.max_rank, s) != NULL;
        call = runtime_kernel_get(ctx, b->c.dtype == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16, b->c.max_rank, s,
                                  &k);
        if (!was_loaded)
            m->compile_s = now_s() - t0;
        if (call != DOP_OK) {
            m->error_no = SEARCH_ERR_COMPILE;
            snprintf(m->message, sizeof m->message, "%s", dop_context_error(ctx));
            goto out;
        }
        CUfunction fs[4] = {k->shrink, k->expand, k->fused, k->counter};
        for (int e = 0; e < 4; ++e) {
            int v = 0;
            if (fs[e] && d->fn_cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_NUM_REGS, fs[e]) == CUDA_SUCCESS)
                m->registers[e] = v;
        }
    }

    runtime_case_data *cd = b->cd[0];
    if (!s) { /* dispatch's own kernel, not the generic one that serves while it compiles */
        call = runtime_case_launch(ctx, cd);
        if (call != DOP_OK) {
            m->error_no = error_of_status(call);
            snprintf(m->message, sizeof m->message, "%s", dop_context_error(ctx));
            goto out;
        }
        runtime_compile_wait(ctx);
    }
    if (verify) {
        runtime_case_result res;
        if ((st = runtime_case_reset(ctx, cd)) != DOP_OK)
            goto out;
        call = runtime_case_launch(ctx, cd);
        if (call != DOP_OK) {
            m->error_no = error_of_status(call);
            snprintf(m->message, sizeof m->message, "%s", dop_context_error(ctx));
            goto out;
        }
        runtime_last_schedule(&m->used);
        CUresult r = d->fn_cuStreamSynchronize((CUstream)runtime_case_stream(cd));
        if (r != CUDA_SUCCESS) { /* a fault: the context is lost, nothing more can run */
            m->error_no = SEARCH_ERR_DEVICE;
            st = runtime_fail_cu(ctx, r, "the checked call");
            snprintf(m->message, sizeof m->message, "%s", dop_context_error(ctx));
            goto out;
        }
        if ((st = runtime_case_verify(ctx, cd, &res)) != DOP_OK)
            goto out;
        m->max_error = isfinite(res.err) ? res.err : INFINITY;
        if (!res.ok) {
            m->error_no = SEARCH_ERR_WRONG_RESULT;
            snprintf(m->message, sizeof m->message, "%s", res.message);
            goto out;
        }
    }
    runtime_last_schedule(&m->used);
    for (int i = 0; i < b->sets; ++i) {
        if ((st = capture(ctx, b->cd[i], &g[i], &call)) != DOP_OK)
            goto out;
        if (call != DOP_OK) {
            m->error_no = error_of_status(call);
            snprintf(m->message, sizeof m->message, "%s", dop_context_error(ctx));
            goto out;
        }
        if (i == 0)
            runtime_last_schedule(&m->used);
    }
    {
        /* long calls need fewer replays for the same precision: about 2 ms of warm-up and
         * samples of at least ~100 us, never more replays than the options ask for */
        double est = 0.0;
        st = time_graphs(ctx, g, b->sets, (CUstream)runtime_case_stream(cd), 2, 3, 1, &est);
        if (st == DOP_OK) {
            int burst = b->o.burst, warmup = b->o.warmup;
            if (est > 0) {
                int bb = (int)(100.0 / est) + 1, ww = (int)(2000.0 / est) + 1;
                burst = bb < burst ? bb : burst;
                warmup = ww < warmup ? ww : warmup;
            }
            st = time_graphs(ctx, g, b->sets, (CUstream)runtime_case_stream(cd), warmup, b->o.samples, burst,
                             &m->us);
        }
    }
    if (st != DOP_OK) {
        m->error_no = SEARCH_ERR_DEVICE;
        snprintf(m->message, sizeof m->message, "%s", dop_context_error(ctx));
    }
out:
    for (int i = 0; i < b->sets; ++i) {
        if (g[i])
            d->fn_cuGraphExecDestroy(g[i]);
        runtime_case_force(b->cd[i], NULL);
    }
    free(g);
    runtime_leave(ctx, pushed);
    if (m->error_no != SEARCH_ERR_OK)
        m->us = 0;
    return st;
}

dop_status runtime_copy_bandwidth(dop_context *ctx, double *bytes_per_s)
{
    const runtime_driver *d = ctx->drv;
    const size_t bytes = (size_t)1 << 30;
    CUdeviceptr a = 0, b = 0;
    CUevent e0 = NULL, e1 = NULL;
    CUstream stream = NULL;
    dop_status st = DOP_OK;
    bool pushed;
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK)
        return st;
    CK(d->fn_cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    CK(d->fn_cuMemAlloc(&a, bytes));
    CK(d->fn_cuMemAlloc(&b, bytes));
    CK(d->fn_cuMemsetD8(a, 1, bytes));
    CK(d->fn_cuCtxSynchronize());
    CK(d->fn_cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CK(d->fn_cuEventCreate(&e1, CU_EVENT_DEFAULT));
    float best = 1e30f;
    for (int i = 0; i < 10; ++i) {
        float ms;
        CK(d->fn_cuEventRecord(e0, stream));
        CK(d->fn_cuMemcpyDtoDAsync(b, a, bytes, stream));
        CK(d->fn_cuEventRecord(e1, stream));
        CK(d->fn_cuEventSynchronize(e1));
        CK(d->fn_cuEventElapsedTime(&ms, e0, e1));
        if (i > 1 && ms < best)
            best = ms;
    }
    *bytes_per_s = 2.0 * (double)bytes / ((double)best * 1e-3);
done:
    if (a)
        d->fn_cuMemFree(a);
    if (b)
        d->fn_cuMemFree(b);
    if (e0)
        d->fn_cuEventDestroy(e0);
    if (e1)
        d->fn_cuEventDestroy(e1);
    if (stream)
        d->fn_cuStreamDestroy(stream);
    runtime_leave(ctx, pushed);
    return st;
}

dop_status runtime_launch_floor(dop_context *ctx, double *us)
{
    const runtime_driver *d = ctx->drv;
    char why[1024];
    runtime_cubin cub;
    const char *src = "extern \"C\" __global__ void dop_nop(int *p) { if (p) *p = 1; }\n";
    const char *entries[] = {"dop_nop"};
    if (runtime_jit_compile(ctx->nvrtc, src, ctx->info.cc_major, ctx->info.cc_minor, entries, 1, &cub, why,
                            sizeof why))
        return runtime_fail(ctx, DOP_ERR_COMPILE_FAILED, "launch floor: %s", why);
    dop_status st = DOP_OK;
    bool pushed;
    CUmodule mod = NULL;
    CUstream stream = NULL;
    CUgraph g = NULL;
    CUgraphExec ge = NULL;
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK) {
        runtime_cubin_free(&cub);
        return st;
    }
    CK(d->fn_cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    CK(d->fn_cuModuleLoadData(&mod, cub.data));
    CUfunction f;
    CK(d->fn_cuModuleGetFunction(&f, mod, "dop_nop"));
    int *nullp = NULL;
    void *args[] = {&nullp};
    CK(d->fn_cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    CK(d->fn_cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, stream, args, NULL));
    CK(d->fn_cuStreamEndCapture(stream, &g));
    CK(d->fn_cuGraphInstantiateWithFlags(&ge, g, 0));
    st = time_graphs(ctx, &ge, 1, stream, 20, 50, 20, us);
done:
    runtime_cubin_free(&cub);
    if (ge)
        d->fn_cuGraphExecDestroy(ge);
    if (g)
        d->fn_cuGraphDestroy(g);
    if (mod)
        d->fn_cuModuleUnload(mod);
    if (stream)
        d->fn_cuStreamDestroy(stream);
    runtime_leave(ctx, pushed);
    return st;
}
