/*
 * bench_kernels -- times dop_lora_apply on the workload grid (WORKLOADS.md).
 *
 * Method: one call (everything it enqueues: scratch zeroing included) is
 * captured in a CUDA graph; after 20 warm-up replays, each of --replays
 * replays is bracketed by events; the median is reported. "warm" replays one
 * data set; "cold" rotates over enough copies of x, weights and y that the
 * working set exceeds 2.5x the L2, so weights come from HBM. Floors are
 * measured on the device: HBM floor = bytes that must move (x, y read and
 * written, each adapter in use once) / device-to-device copy bandwidth;
 * launch floor = one empty kernel replayed in a graph.
 *
 *   bench_kernels [--layouts distinct,uniform,...] [--rows 1,8,...] [--ranks 16,64]
 *                 [--dtype f16|bf16] [--din N] [--dout N] [--replays N] [--verify]
 *                 [--no-cold] [--json FILE] [--schedule "split rows=.. warps=.. ..."]
 *                 [--sweep]
 *
 * --sweep times every schedule of a fixed candidate set on every case (warm
 * only), then reports the per-case best (oracle over the set), the best single
 * static schedule (best geomean over the cases) and dispatch's pick against both.
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime_check.h"

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s)
            ++s;
    }
    return n;
}

#define CKB(call)                                                                                                  \
    do {                                                                                                           \
        CUresult r_ = (call);                                                                                      \
        if (r_ != CUDA_SUCCESS) {                                                                                  \
            char d_[256];                                                                                          \
            runtime_cu_describe(drv, r_, d_, sizeof d_);                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, d_);                                     \
            exit(1);                                                                                               \
        }                                                                                                          \
    } while (0)

static const runtime_driver *drv;

/* Median over `samples` samples of the mean time (us) of `burst` back-to-back
 * replays of graphs[i % n] on stream, after 20 warm-up replays. */
static double time_graphs(CUgraphExec *graphs, int n, CUstream stream, int samples, int burst)
{
    CUevent ev[2];
    CKB(drv->fn_cuEventCreate(&ev[0], CU_EVENT_DEFAULT));
    CKB(drv->fn_cuEventCreate(&ev[1], CU_EVENT_DEFAULT));
    for (int i = 0; i < 20; ++i)
        CKB(drv->fn_cuGraphLaunch(graphs[i % n], stream));
    float *t = malloc((size_t)samples * sizeof *t);
    int k = 0;
    for (int i = 0; i < samples; ++i) {
        CKB(drv->fn_cuEventRecord(ev[0], stream));
        for (int b = 0; b < burst; ++b)
            CKB(drv->fn_cuGraphLaunch(graphs[k++ % n], stream));
        CKB(drv->fn_cuEventRecord(ev[1], stream));
        CKB(drv->fn_cuEventSynchronize(ev[1]));
        CKB(drv->fn_cuEventElapsedTime(&t[i], ev[0], ev[1]));
        t[i] /= (float)burst;
    }
    qsort(t, (size_t)samples, sizeof *t, cmp_float);
    double med = 1e3 * t[samples / 2];
    free(t);
    drv->fn_cuEventDestroy(ev[0]);
    drv->fn_cuEventDestroy(ev[1]);
    return med;
}

static double copy_bandwidth(CUstream stream)
{
    size_t bytes = (size_t)1 << 30;
    CUdeviceptr a, b;
    CKB(drv->fn_cuMemAlloc(&a, bytes));
    CKB(drv->fn_cuMemAlloc(&b, bytes));
    CKB(drv->fn_cuMemsetD8(a, 1, bytes));
    CUevent e0, e1;
    CKB(drv->fn_cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CKB(drv->fn_cuEventCreate(&e1, CU_EVENT_DEFAULT));
    float best = 1e30f;
    for (int i = 0; i < 10; ++i) {
        float ms;
        CKB(drv->fn_cuEventRecord(e0, stream));
        CKB(drv->fn_cuMemcpyDtoDAsync(b, a, bytes, stream));
        CKB(drv->fn_cuEventRecord(e1, stream));
        CKB(drv->fn_cuEventSynchronize(e1));
        CKB(drv->fn_cuEventElapsedTime(&ms, e0, e1));
        if (i > 1 && ms < best)
            best = ms;
    }
    drv->fn_cuMemFree(a);
    drv->fn_cuMemFree(b);
    drv->fn_cuEventDestroy(e0);
    drv->fn_cuEventDestroy(e1);
    return 2.0 * (double)bytes / (best * 1e-3); /* bytes read + written per second */
}

static double launch_floor(dop_context *ctx, CUstream stream)
{
    char why[1024];
    runtime_cubin cub;
    const char *src = "extern \"C\" __global__ void dop_nop(int *p) { if (p) *p = 1; }\n";
    const char *entries[] = {"dop_nop"};
    if (runtime_jit_compile(ctx->nvrtc, src, ctx->info.cc_major, ctx->info.cc_minor, entries, 1, &cub, why,
                            sizeof why)) {
        fprintf(stderr, "launch floor: %s\n", why);
        exit(1);
    }
    CUmodule mod;
    CUfunction f;
    CKB(drv->fn_cuModuleLoadData(&mod, cub.data));
    runtime_cubin_free(&cub);
    CKB(drv->fn_cuModuleGetFunction(&f, mod, "dop_nop"));
    int *nullp = NULL;
    void *args[] = {&nullp};
    CUgraph g;
    CUgraphExec ge;
    CKB(drv->fn_cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    CKB(drv->fn_cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, stream, args, NULL));
    CKB(drv->fn_cuStreamEndCapture(stream, &g));
    CKB(drv->fn_cuGraphInstantiateWithFlags(&ge, g, 0));
    double t = time_graphs(&ge, 1, stream, 50, 20);
    drv->fn_cuGraphExecDestroy(ge);
    drv->fn_cuGraphDestroy(g);
    drv->fn_cuModuleUnload(mod);
    return t;
}

static CUgraphExec capture(dop_context *ctx, runtime_case_data *cd)
{
    CUstream s = (CUstream)runtime_case_stream(cd);
    CUgraph g;
    CUgraphExec ge;
    CKB(drv->fn_cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    dop_status st = runtime_case_launch(ctx, cd);
    CKB(drv->fn_cuStreamEndCapture(s, &g));
    if (st != DOP_OK) {
        fprintf(stderr, "capture: %s: %s\n", dop_status_string(st), dop_context_error(ctx));
        exit(1);
    }
    CKB(drv->fn_cuGraphInstantiateWithFlags(&ge, g, 0));
    drv->fn_cuGraphDestroy(g);
    return ge;
}

/* One case of the grid: apply, one slice, segments with device copies. */
static runtime_case grid_case(dop_dtype dtype, int layout, int rows, int din, int dout, int rank, uint64_t seed)
{
    runtime_case c;
    memset(&c, 0, sizeof c);
    c.dtype = dtype;
    c.op = RUNTIME_OP_APPLY;
    c.workload = (runtime_workload)layout;
    c.layout_kind = DOP_LAYOUT_SEGMENTS;
    c.num_rows = rows;
    c.d_in = din;
    c.num_slices = 1;
    c.d_out[0] = dout;
    c.max_rank = rank;
    c.hetero_ranks = c.workload == RUNTIME_WL_MIXED;
    c.device_copies = 1;
    c.seed = seed;
    return c;
}

/* ---- sweep ------------------------------------------------------------------------ */

static int sweep_candidates(search_schedule *out, int max)
{
    static const uint8_t rows[] = {1, 2, 4, 8, 16};
    static const uint8_t warps[] = {4, 8, 16};
    static const uint16_t kcs[] = {1024, 2048, 4096};
    static const uint16_t cols[] = {128, 256};
    static const uint8_t splits[] = {1, 4, 16, 32};
    int n = 0;
    /* tensor-core schedules: 16-row tiles */
    static const uint8_t mwarps[] = {4, 8, 16};
    static const uint16_t mkcs[] = {32, 64, 128};
    for (int sk = 0; sk < 2; ++sk)
        for (size_t b = 0; b < sizeof mwarps; ++b)
            for (size_t c = 0; c < sizeof mkcs / sizeof mkcs[0]; ++c)
                for (size_t d = 0; d < sizeof cols / sizeof cols[0]; ++d)
                    for (size_t e = 0; e < (sk ? 1 : sizeof splits); ++e) {
                        if (n == max)
                            return n;
                        out[n++] = search_schedule_make(sk ? SEARCH_SKETCH_FUSED : SEARCH_SKETCH_SPLIT, 16,
                                                        mwarps[b], 8, mkcs[c], sk ? 1 : splits[e], cols[d], 1, 1, 0);
                    }
    for (int sk = 0; sk < 2; ++sk)
        for (size_t a = 0; a < sizeof rows; ++a)
            for (size_t b = 0; b < sizeof warps; ++b)
                for (size_t c = 0; c < sizeof kcs / sizeof kcs[0]; ++c)
                    for (size_t d = 0; d < sizeof cols / sizeof cols[0]; ++d)
                        for (size_t e = 0; e < (sk ? 1 : sizeof splits); ++e) {
                            if (n == max)
                                return n;
                            out[n++] = search_schedule_make(sk ? SEARCH_SKETCH_FUSED : SEARCH_SKETCH_SPLIT, rows[a],
                                                            warps[b], 8, kcs[c], sk ? 1 : splits[e], cols[d], 0, 1,
                                                            0);
                        }
    return n;
}

static int run_sweep(dop_context *ctx, CUstream stream, const int *layouts, int nlayouts, const int *rows, int nrows,
                     const int *ranks, int nranks, dop_dtype dtype, int din, int dout, FILE *jf)
{
    (void)stream;
    enum { MAXC = 640, MAXCASE = 256 };
    static search_schedule cand[MAXC];
    int nc = sweep_candidates(cand, MAXC);
    kernels_dtype kd = dtype == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16;
    for (int ri = 0; ri < nranks; ++ri) {
        runtime_module_req *req = calloc((size_t)nc, sizeof *req);
        for (int i = 0; i < nc; ++i)
            req[i] = (runtime_module_req){kd, ranks[ri], cand[i]};
        dop_status st = runtime_kernels_prepare(ctx, req, nc, 16);
        free(req);
        if (st != DOP_OK) {
            fprintf(stderr, "prepare: %s\n", dop_context_error(ctx));
            return 1;
        }
    }
    int ncase = nranks * nlayouts * nrows;
    if (ncase > MAXCASE)
        ncase = MAXCASE;
    double *t = calloc((size_t)ncase * nc, sizeof *t), *disp = calloc((size_t)ncase, sizeof *disp);
    char (*names)[64] = calloc((size_t)ncase, sizeof *names);
    int k = 0;
    printf("# sweep: %d candidate schedules per case\n", nc);
    printf("%-9s %5s %4s %9s %9s  %-54s %s\n", "layout", "rows", "rank", "disp_us", "best_us", "best schedule",
           "dispatched");
    for (int ri = 0; ri < nranks; ++ri)
        for (int li = 0; li < nlayouts; ++li)
            for (int ni = 0; ni < nrows && k < ncase; ++ni, ++k) {
                runtime_case c = grid_case(dtype, layouts[li], rows[ni], din, dout, ranks[ri], 1000 + (uint64_t)k);
                runtime_case_data *cd;
                if (runtime_case_setup(ctx, &c, &cd) != DOP_OK) {
                    fprintf(stderr, "setup: %s\n", dop_context_error(ctx));
                    return 1;
                }
                CUstream cs = (CUstream)runtime_case_stream(cd);
                /* dispatched */
                if (runtime_case_launch(ctx, cd) != DOP_OK) {
                    fprintf(stderr, "launch: %s\n", dop_context_error(ctx));
                    return 1;
                }
                search_schedule used;
                runtime_last_schedule(&used);
                search_schedule_format(&used, names[k], sizeof names[k]);
                CUgraphExec g = capture(ctx, cd);
                disp[k] = time_graphs(&g, 1, cs, 15, 10);
                drv->fn_cuGraphExecDestroy(g);
                int best = 0;
                for (int i = 0; i < nc; ++i) {
                    runtime_case_force(cd, &cand[i]);
                    g = capture(ctx, cd);
                    t[(size_t)k * nc + i] = time_graphs(&g, 1, cs, 15, 10);
                    drv->fn_cuGraphExecDestroy(g);
                    runtime_case_force(cd, NULL);
                    if (t[(size_t)k * nc + i] < t[(size_t)k * nc + best])
                        best = i;
                }
                /* the winner must be right */
                runtime_case_force(cd, &cand[best]);
                runtime_case_result res;
                runtime_case_reset(ctx, cd);
                runtime_case_launch(ctx, cd);
                runtime_case_verify(ctx, cd, &res);
                runtime_case_force(cd, NULL);
                char bname[128];
                search_schedule_format(&cand[best], bname, sizeof bname);
                printf("%-9s %5d %4d %9.2f %9.2f  %-54s %s%s\n", runtime_workload_name(c.workload), c.num_rows,
                       c.max_rank, disp[k], t[(size_t)k * nc + best], bname, names[k], res.ok ? "" : " BEST-WRONG");
                fflush(stdout);
                if (jf) {
                    for (int i = 0; i < nc; ++i) {
                        char nm[128];
                        search_schedule_format(&cand[i], nm, sizeof nm);
                        fprintf(jf, "{\"layout\":\"%s\",\"rows\":%d,\"rank\":%d,\"schedule\":\"%s\",\"us\":%.3f}\n",
                                runtime_workload_name(c.workload), c.num_rows, c.max_rank, nm, t[(size_t)k * nc + i]);
                    }
                }
                runtime_case_free(ctx, cd);
            }
    /* best static schedule: best geomean over all cases */
    int bs = 0;
    double bsg = INFINITY;
    for (int i = 0; i < nc; ++i) {
        double lg = 0;
        for (int j = 0; j < k; ++j)
            lg += log(t[(size_t)j * nc + i]);
        if (lg < bsg)
            bsg = lg, bs = i;
    }
    double lo = 0, ld = 0, ls = bsg;
    for (int j = 0; j < k; ++j) {
        double b = INFINITY;
        for (int i = 0; i < nc; ++i)
            if (t[(size_t)j * nc + i] < b)
                b = t[(size_t)j * nc + i];
        lo += log(b);
        ld += log(disp[j]);
    }
    char sname[128];
    search_schedule_format(&cand[bs], sname, sizeof sname);
    printf("# best static schedule: [%s], geomean %.2f us\n", sname, exp(ls / k));
    printf("# oracle (per-case best of the set): geomean %.2f us; dispatched: geomean %.2f us\n", exp(lo / k),
           exp(ld / k));
    printf("# oracle over static %.2fx; dispatched over static %.2fx; dispatched / oracle %.2f\n", exp((ls - lo) / k),
           exp((ls - ld) / k), exp((ld - lo) / k));
    free(t);
    free(disp);
    free(names);
    return 0;
}

int main(int argc, char **argv)
{
    int layouts[RUNTIME_WL_COUNT] = {0, 1, 2, 3}, nlayouts = 4;
    int rows[16] = {1, 8, 32, 64, 128, 256}, nrows = 6;
    int ranks[8] = {16, 64}, nranks = 2;
    int replays = 200, verify = 0, cold = 1, din = 4096, dout = 4096;
    dop_dtype dtype = DOP_DTYPE_F16;
    const char *json = NULL, *force_text = NULL;
    int sweep = 0;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--layouts") && v) {
            nlayouts = 0;
            char buf[256];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *t = strtok(buf, ","); t && nlayouts < RUNTIME_WL_COUNT; t = strtok(NULL, ",")) {
                int w = runtime_workload_parse(t);
                if (w < 0) {
                    fprintf(stderr, "unknown layout '%s'\n", t);
                    return 2;
                }
                layouts[nlayouts++] = w;
            }
            ++i;
        } else if (!strcmp(a, "--rows") && v) {
            nrows = parse_list(v, rows, 16), ++i;
        } else if (!strcmp(a, "--ranks") && v) {
            nranks = parse_list(v, ranks, 8), ++i;
        } else if (!strcmp(a, "--replays") && v) {
            replays = atoi(v), ++i;
        } else if (!strcmp(a, "--din") && v) {
            din = atoi(v), ++i;
        } else if (!strcmp(a, "--dout") && v) {
            dout = atoi(v), ++i;
        } else if (!strcmp(a, "--dtype") && v) {
            dtype = !strcmp(v, "bf16") ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, ++i;
        } else if (!strcmp(a, "--json") && v) {
            json = v, ++i;
        } else if (!strcmp(a, "--verify")) {
            verify = 1;
        } else if (!strcmp(a, "--schedule") && v) {
            force_text = v, ++i;
        } else if (!strcmp(a, "--sweep")) {
            sweep = 1;
        } else if (!strcmp(a, "--no-cold")) {
            cold = 0;
        } else {
            fprintf(stderr, "usage: see the comment at the top of bench/bench_kernels.c\n");
            return 2;
        }
    }
    if (replays < 100)
        replays = 100;
    dop_context *ctx;
    if (dop_context_create(NULL, &ctx) != DOP_OK) {
        fprintf(stderr, "bench_kernels: %s\n", dop_context_error(NULL));
        return 1;
    }
    drv = ctx->drv;
    bool pushed;
    runtime_enter(ctx, &pushed);
    CUstream stream;
    CKB(drv->fn_cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    double bw = copy_bandwidth(stream);
    double lf = launch_floor(ctx, stream);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    printf("# dop %s, %s, driver %d, %s; copy bandwidth %.2f TB/s, launch floor %.2f us (graph)\n",
           dop_version_string(), ctx->info.name, ctx->info.driver_version, date, bw / 1e12, lf);
    printf("%-9s %5s %4s %4s %9s %9s %9s %9s %6s %s\n", "layout", "rows", "segs", "rank", "warm_us", "cold_us",
           "hbm_us", "floor_us", "eff", "schedule");
    FILE *jf = json ? fopen(json, "w") : NULL;
    search_schedule forced;
    if (force_text && search_schedule_parse(force_text, &forced)) {
        fprintf(stderr, "bad --schedule '%s'\n", force_text);
        return 2;
    }
    if (sweep)
        return run_sweep(ctx, stream, layouts, nlayouts, rows, nrows, ranks, nranks, dtype, din, dout, jf);
    double sum_log_eff = 0;
    int ncase = 0, nfail = 0;
    for (int ri = 0; ri < nranks; ++ri)
        for (int li = 0; li < nlayouts; ++li)
            for (int ni = 0; ni < nrows; ++ni) {
                runtime_case c = grid_case(dtype, layouts[li], rows[ni], din, dout, ranks[ri], 1000 + (uint64_t)ncase);
                c.force = force_text ? &forced : NULL;
                runtime_case_data *cd;
                if (runtime_case_setup(ctx, &c, &cd) != DOP_OK) {
                    fprintf(stderr, "setup: %s\n", dop_context_error(ctx));
                    return 1;
                }
                /* first call compiles; then a checked call if asked */
                if (runtime_case_launch(ctx, cd) != DOP_OK) {
                    fprintf(stderr, "launch: %s\n", dop_context_error(ctx));
                    return 1;
                }
                CKB(drv->fn_cuStreamSynchronize((CUstream)runtime_case_stream(cd)));
                const char *vres = "";
                if (verify) {
                    runtime_case_result res;
                    runtime_case_reset(ctx, cd);
                    runtime_case_launch(ctx, cd);
                    if (runtime_case_verify(ctx, cd, &res) != DOP_OK || !res.ok) {
                        vres = " VERIFY-FAILED";
                        fprintf(stderr, "verify failed: %s\n", res.message);
                        nfail++;
                    } else {
                        vres = " verified";
                    }
                }
                search_schedule used;
                runtime_last_schedule(&used);
                char sname[128];
                search_schedule_format(&used, sname, sizeof sname);
                CUgraphExec g = capture(ctx, cd);
                double warm = time_graphs(&g, 1, (CUstream)runtime_case_stream(cd), replays / 10, 10);
                double bytes = runtime_case_hbm_bytes(cd);
                double coldt = NAN;
                if (cold) {
                    int sets = (int)ceil(2.5 * ctx->info.l2_bytes / bytes);
                    if (sets < 2)
                        sets = 2;
                    if (sets > 48)
                        sets = 48;
                    runtime_case_data **cds = calloc((size_t)sets, sizeof *cds);
                    CUgraphExec *gs = calloc((size_t)sets, sizeof *gs);
                    cds[0] = cd;
                    gs[0] = g;
                    for (int k = 1; k < sets; ++k) {
                        runtime_case ck = c;
                        ck.seed = c.seed + 7919u * (unsigned)k;
                        if (ck.workload == RUNTIME_WL_MIXED)
                            ck.seed = c.seed; /* same layout, fresh buffers: seeds only move data */
                        if (runtime_case_setup(ctx, &ck, &cds[k]) != DOP_OK) {
                            sets = k;
                            break;
                        }
                        gs[k] = capture(ctx, cds[k]);
                    }
                    /* all sets share one stream for timing: replay them on the first one's */
                    coldt = time_graphs(gs, sets, (CUstream)runtime_case_stream(cd), replays / 10, 10);
                    for (int k = 1; k < sets; ++k) {
                        drv->fn_cuGraphExecDestroy(gs[k]);
                        runtime_case_free(ctx, cds[k]);
                    }
                    free(cds);
                    free(gs);
                }
                double hbm = bytes / bw * 1e6;
                double floor_us = hbm > lf ? hbm : lf;
                double eff = floor_us / warm;
                sum_log_eff += log(eff);
                int segs = 0;
                {
                    int32_t *tmp = malloc((size_t)c.num_rows * 4);
                    uint64_t rng = c.seed * 0x2545f4914f6cdd1dull + 1;
                    runtime_workload_rows(c.workload, c.num_rows, &rng, tmp);
                    runtime_layout_summary sum;
                    runtime_summarize_rows(tmp, c.num_rows, &sum);
                    segs = sum.groups;
                    free(tmp);
                }
                printf("%-9s %5d %4d %4d %9.2f %9.2f %9.2f %9.2f %6.2f [%s]%s\n", runtime_workload_name(c.workload),
                       c.num_rows, segs, c.max_rank, warm, coldt, hbm, floor_us, eff, sname, vres);
                fflush(stdout);
                if (jf)
                    fprintf(jf,
                            "{\"gpu\":\"%s\",\"driver\":%d,\"dop\":\"%s\",\"date\":\"%s\",\"dtype\":\"%s\","
                            "\"layout\":\"%s\",\"rows\":%d,\"segments\":%d,\"rank\":%d,\"d_in\":%d,\"d_out\":%d,"
                            "\"warm_us\":%.3f,\"cold_us\":%.3f,\"hbm_floor_us\":%.3f,\"launch_floor_us\":%.3f,"
                            "\"schedule\":\"%s\"}\n",
                            ctx->info.name, ctx->info.driver_version, dop_version_string(), date,
                            dtype == DOP_DTYPE_BF16 ? "bf16" : "f16", runtime_workload_name(c.workload), c.num_rows,
                            segs, c.max_rank, din, dout, warm, coldt, hbm, lf, sname);
                drv->fn_cuGraphExecDestroy(g);
                runtime_case_free(ctx, cd);
                ncase++;
            }
    printf("# %d cases, geomean efficiency (floor / warm time) %.3f%s\n", ncase, exp(sum_log_eff / ncase),
           verify ? (nfail ? ", VERIFY FAILURES" : ", all verified") : "");
    if (jf)
        fclose(jf);
    runtime_leave(ctx, pushed);
    dop_context_destroy(ctx);
    return nfail ? 1 : 0;
}
