/*
 * bench_dispatch -- host cost of dop's dispatch, on a GPU.
 *
 *   bench_dispatch [--calls N] [--cache-dir DIR]
 *
 * Three figures (DESIGN.md): (1) a call on a warm in-process table: median
 * host time of dop_lora_apply over N calls of one layout, and of a bare
 * cuLaunchKernel of the same kernels for comparison; (2) the first call of a
 * new layout class when the cache holds its schedule and cubin: a fresh
 * context on a cache filled by an earlier one; (3) a cold call, nothing
 * cached: the call returns while NVRTC compiles in the background (the
 * generic kernel serves it), compared with the compile time. Uses a private
 * cache file under --cache-dir (default: a new temporary directory).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime_check.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static dop_context *make_ctx(const char *cache, uint32_t flags)
{
    dop_context_options o;
    dop_context_options_init(&o);
    o.cache_path = cache;
    o.flags = flags;
    dop_context *ctx;
    if (dop_context_create(&o, &ctx) != DOP_OK) {
        fprintf(stderr, "bench_dispatch: %s\n", dop_context_error(NULL));
        exit(1);
    }
    return ctx;
}

static runtime_case make_case(int rows, runtime_workload wl, uint64_t seed)
{
    runtime_case c;
    memset(&c, 0, sizeof c);
    c.dtype = DOP_DTYPE_F16;
    c.op = RUNTIME_OP_APPLY;
    c.workload = wl;
    c.layout_kind = DOP_LAYOUT_SEGMENTS;
    c.num_rows = rows;
    c.d_in = 4096;
    c.num_slices = 1;
    c.d_out[0] = 4096;
    c.max_rank = 16;
    c.device_copies = 1;
    c.seed = seed;
    return c;
}

int main(int argc, char **argv)
{
    int calls = 20000;
    char dir[256] = "";
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--calls") && i + 1 < argc)
            calls = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cache-dir") && i + 1 < argc)
            snprintf(dir, sizeof dir, "%s", argv[++i]);
        else {
            fprintf(stderr, "usage: bench_dispatch [--calls N] [--cache-dir DIR]\n");
            return 2;
        }
    }
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/dop-bench-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    }
    char cache[512];
    snprintf(cache, sizeof cache, "%s/cache.mdb", dir);
    if (calls < 100)
        calls = 100;

    /* (3) cold: nothing cached but the generic kernels */
    dop_context *ctx = make_ctx(cache, 0);
    dop_device_info in;
    dop_context_device_info(ctx, &in);
    printf("# dop %s, %s, cache %s\n", dop_version_string(), in.name, cache);
    runtime_case c = make_case(32, RUNTIME_WL_UNIFORM, 1);
    runtime_case_data *cd;
    if (runtime_case_setup(ctx, &c, &cd) != DOP_OK) {
        fprintf(stderr, "setup: %s\n", dop_context_error(ctx));
        return 1;
    }
    double t0 = now_us();
    dop_status st = runtime_case_launch(ctx, cd);
    double cold = now_us() - t0;
    dop_context_stats s0;
    dop_context_get_stats(ctx, &s0);
    t0 = now_us();
    runtime_compile_wait(ctx);
    double compile_wait = now_us() - t0;
    dop_context_stats s1;
    dop_context_get_stats(ctx, &s1);
    printf("cold call (nothing cached): returned in %.0f us (%s), served by the generic kernel: %s; the "
           "background compile finished %.0f ms later (NVRTC %.0f ms)\n",
           cold, dop_status_string(st), s0.generic_calls ? "yes" : "no", compile_wait / 1e3,
           (s1.compile_seconds - s0.compile_seconds) * 1e3);

    /* (1) warm in-process table */
    const runtime_driver *drv = ctx->drv;
    CUstream stream = (CUstream)runtime_case_stream(cd);
    double *t = malloc((size_t)calls * sizeof *t);
    for (int i = 0; i < 200; ++i)
        runtime_case_launch(ctx, cd);
    drv->fn_cuStreamSynchronize(stream);
    for (int i = 0; i < calls; ++i) {
        double a = now_us();
        runtime_case_launch(ctx, cd);
        t[i] = now_us() - a;
        if (i % 64 == 63)
            drv->fn_cuStreamSynchronize(stream); /* keep the queue short: measure the host, not back-pressure */
    }
    drv->fn_cuStreamSynchronize(stream);
    qsort(t, (size_t)calls, sizeof *t, cmp_double);
    double med = t[calls / 2], p90 = t[calls * 9 / 10];
    /* the same launches without dop: cuLaunchKernel of the kernels the call uses */
    search_schedule used;
    runtime_last_schedule(&used);
    const runtime_kernel *k;
    bool pushed;
    runtime_enter(ctx, &pushed);
    runtime_kernel_get(ctx, KERNELS_F16, 16, &used, &k);
    dop_kparams kp;
    memset(&kp, 0, sizeof kp);
    kp.num_rows = 0; /* an empty launch: measures the launch path only */
    void *args[] = {&kp};
    int launches = used.sketch == SEARCH_SKETCH_SPLIT ? 2 : 1;
    for (int i = 0; i < calls; ++i) {
        double a = now_us();
        for (int l = 0; l < launches; ++l)
            drv->fn_cuLaunchKernel(l ? k->expand : (launches == 2 ? k->shrink : k->fused), 1, 1, 1, 32u * used.warps,
                                   1, 1, 0, stream, args, NULL);
        t[i] = now_us() - a;
        if (i % 64 == 63)
            drv->fn_cuStreamSynchronize(stream);
    }
    drv->fn_cuStreamSynchronize(stream);
    runtime_leave(ctx, pushed);
    qsort(t, (size_t)calls, sizeof *t, cmp_double);
    double bare = t[calls / 2];
    char name[128];
    search_schedule_format(&used, name, sizeof name);
    printf("warm call (in-process table hit), uniform 32 rows [%s]: median %.2f us, p90 %.2f us per call over %d "
           "calls; bare cuLaunchKernel of its %d kernel(s): median %.2f us; dop's own share: %.2f us\n",
           name, med, p90, calls, launches, bare, med - bare);
    runtime_case_free(ctx, cd);
    /* put a few more classes in the cache for (2) */
    runtime_workload wls[] = {RUNTIME_WL_DISTINCT, RUNTIME_WL_SKEWED, RUNTIME_WL_IDENTICAL};
    for (int w = 0; w < 3; ++w) {
        runtime_case cw = make_case(64, wls[w], 2);
        runtime_case_data *d2;
        if (runtime_case_setup(ctx, &cw, &d2) == DOP_OK) {
            runtime_case_launch(ctx, d2);
            runtime_compile_wait(ctx);
            runtime_case_launch(ctx, d2);
            drv->fn_cuStreamSynchronize((CUstream)runtime_case_stream(d2));
            runtime_case_free(ctx, d2);
        }
    }
    /* store the schedules of those classes like `dop warm` does, so (2) finds them */
    dop_context_destroy(ctx);

    /* (2) a fresh context, warm cache: first call of a class */
    ctx = make_ctx(cache, 0);
    for (int w = 0; w < 3; ++w) {
        runtime_case cw = make_case(64, wls[w], 2);
        runtime_case_data *d2;
        if (runtime_case_setup(ctx, &cw, &d2) != DOP_OK)
            continue;
        dop_context_stats a0, a1;
        dop_context_get_stats(ctx, &a0);
        double b = now_us();
        st = runtime_case_launch(ctx, d2);
        double first = now_us() - b;
        dop_context_get_stats(ctx, &a1);
        b = now_us();
        runtime_case_launch(ctx, d2);
        double second = now_us() - b;
        drv->fn_cuStreamSynchronize((CUstream)runtime_case_stream(d2));
        printf("first call of a new layout class (%s, 64 rows) in a fresh context with a warm cache: %.0f us (%s; "
               "%llu cubins loaded from the cache, %llu compiled, %llu generic); the next call %.1f us\n",
               runtime_workload_name(wls[w]), first, dop_status_string(st),
               (unsigned long long)(a1.cubins_from_cache - a0.cubins_from_cache),
               (unsigned long long)(a1.kernels_compiled - a0.kernels_compiled),
               (unsigned long long)(a1.generic_calls - a0.generic_calls), second);
        runtime_case_free(ctx, d2);
    }
    dop_context_destroy(ctx);
    free(t);
    return 0;
}
