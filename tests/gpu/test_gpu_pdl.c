/*
 * test_gpu_pdl.c -- programmatic dependent launch (DOP_CONTEXT_PROGRAMMATIC_LAUNCH).
 *
 * A producer kernel, enqueued just before the call, lets its dependents launch
 * at once (griddepcontrol.launch_dependents), spins for about 50 us and only
 * then writes y. A dop kernel launched programmatically starts during the spin:
 * it must wait for the producer before it reads or writes y, else it adds to
 * stale values or the producer overwrites its result, and rows without an
 * adapter must come out as the producer wrote them. Every sketch (cluster,
 * fused, split with and without its memset, counter), called eagerly and
 * captured in a CUDA graph with the producer, against the CPU reference.
 * Before sm_90 the flag is ignored and the test checks plain ordering. Exits 77
 * without a usable device.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "kernels_ref.h"
#include "runtime_check.h"
#include "runtime_jit.h"

#define ROWS 48
#define DIN 4096
#define NSL 2
#define RANK 16
#define SLOTS 16
#define SPIN_CYCLES 100000LL

static dop_context *g_ctx;

#define CU(call) assert_int_equal((call), CUDA_SUCCESS)

static const char PRODUCER_SRC[] =
    "extern \"C\" __global__ void producer(unsigned short *y, const unsigned short *src, unsigned long long n,\n"
    "                                      long long spin) {\n"
    "#if __CUDA_ARCH__ >= 900\n"
    "    asm volatile(\"griddepcontrol.launch_dependents;\");\n"
    "#endif\n"
    "    long long t0 = clock64();\n"
    "    while (clock64() - t0 < spin) { }\n"
    "    for (unsigned long long i = threadIdx.x; i < n; i += blockDim.x) y[i] = src[i];\n"
    "}\n";

static double unit(uint64_t *s)
{
    return (double)(runtime_rng_next(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

typedef struct pdl_fixture {
    const runtime_driver *d;
    CUmodule mod;
    CUfunction producer;
    CUstream stream;
    CUdeviceptr dw, dx, dy, dsrc, drows, dws;
    size_t ws, ny;
    uint16_t *x, *y0, *stale, *y;
    double *ref;
    int32_t rows[ROWS];
    dop_adapter_table *table;
    dop_lora_shape shape;
    dop_layout lay;
    dop_weights wt;
} pdl_fixture;

static const int DOUT[NSL] = {4096, 1024};

static void fixture_init(pdl_fixture *f)
{
    memset(f, 0, sizeof *f);
    const runtime_driver *d = f->d = g_ctx->drv;
    dop_device_info info;
    assert_int_equal(dop_context_device_info(g_ctx, &info), DOP_OK);
    runtime_cubin cub;
    char why[1024];
    const char *names[] = {"producer"};
    assert_int_equal(runtime_jit_compile(g_ctx->nvrtc, PRODUCER_SRC, info.cc_major, info.cc_minor, names, 1, &cub,
                                         why, sizeof why),
                     0);
    CU(d->fn_cuModuleLoadData(&f->mod, cub.data));
    runtime_cubin_free(&cub);
    CU(d->fn_cuModuleGetFunction(&f->producer, f->mod, "producer"));
    CU(d->fn_cuStreamCreate(&f->stream, CU_STREAM_NON_BLOCKING));

    const int width = DOUT[0] + DOUT[1];
    uint64_t rng = 99;
    kref_adapter *kad = malloc(SLOTS * NSL * sizeof *kad);
    dop_lora_adapter dad[SLOTS * NSL];
    size_t per = 0;
    for (int s = 0; s < NSL; ++s)
        per += (size_t)RANK * (DIN + DOUT[s]);
    uint16_t *w = malloc(SLOTS * per * 2);
    f->ny = (size_t)ROWS * width;
    f->x = malloc((size_t)ROWS * DIN * 2);
    f->y0 = malloc(f->ny * 2);
    f->stale = malloc(f->ny * 2);
    f->y = malloc(f->ny * 2);
    f->ref = malloc(f->ny * sizeof *f->ref);
    assert_true(kad && w && f->x && f->y0 && f->stale && f->y && f->ref);
    CU(d->fn_cuMemAlloc(&f->dw, SLOTS * per * 2));
    size_t off = 0;
    for (int e = 0; e < SLOTS * NSL; ++e) {
        int s = e % NSL;
        for (size_t i = 0; i < (size_t)RANK * DIN; ++i)
            w[off + i] = kref_f32_to_half((float)(unit(&rng) / 40.0));
        for (size_t i = 0; i < (size_t)RANK * DOUT[s]; ++i)
            w[off + (size_t)RANK * DIN + i] = kref_f32_to_half((float)(unit(&rng) / 3.0));
        kad[e] = (kref_adapter){w + off, w + off + (size_t)RANK * DIN, RANK, 0.5f};
        dad[e] = (dop_lora_adapter){(void *)(uintptr_t)(f->dw + off * 2),
                                    (void *)(uintptr_t)(f->dw + (off + (size_t)RANK * DIN) * 2), RANK, 0.5f};
        off += (size_t)RANK * (DIN + DOUT[s]);
    }
    CU(d->fn_cuMemcpyHtoD(f->dw, w, SLOTS * per * 2));
    for (size_t i = 0; i < (size_t)ROWS * DIN; ++i)
        f->x[i] = kref_f32_to_half((float)unit(&rng));
    for (size_t i = 0; i < f->ny; ++i) {
        f->y0[i] = kref_f32_to_half((float)unit(&rng));
        f->stale[i] = kref_f32_to_half((float)(4.0 + unit(&rng))); /* far from y0: a stale read shows */
    }
    /* mixed: shuffled rows, a quarter without an adapter */
    int used = runtime_workload_rows(RUNTIME_WL_MIXED, ROWS, &rng, f->rows);
    assert_true(used <= SLOTS);
    CU(d->fn_cuMemAlloc(&f->dx, (size_t)ROWS * DIN * 2));
    CU(d->fn_cuMemAlloc(&f->dy, f->ny * 2));
    CU(d->fn_cuMemAlloc(&f->dsrc, f->ny * 2));
    CU(d->fn_cuMemAlloc(&f->drows, sizeof f->rows));
    CU(d->fn_cuMemcpyHtoD(f->dx, f->x, (size_t)ROWS * DIN * 2));
    CU(d->fn_cuMemcpyHtoD(f->dsrc, f->y0, f->ny * 2));
    CU(d->fn_cuMemcpyHtoD(f->drows, f->rows, sizeof f->rows));
    CU(d->fn_cuCtxSynchronize());

    int ycol[NSL] = {0, DOUT[0]};
    kref_problem kp = {0, ROWS, DIN, NSL, RANK, DOUT, ycol, DIN, width, f->rows, SLOTS, kad};
    kref_apply(&kp, f->x, f->y0, f->ref);
    free(kad);
    free(w);

    assert_int_equal(dop_adapter_table_create(g_ctx, SLOTS, NSL, dad, &f->table), DOP_OK);
    dop_lora_shape_init(&f->shape);
    f->shape.num_rows = ROWS;
    f->shape.d_in = DIN;
    f->shape.num_slices = NSL;
    f->shape.d_out[0] = DOUT[0];
    f->shape.d_out[1] = DOUT[1];
    f->shape.max_rank = RANK;
    assert_int_equal(dop_lora_workspace_size(g_ctx, &f->shape, 0, &f->ws), DOP_OK);
    CU(d->fn_cuMemAlloc(&f->dws, f->ws));
    f->lay.kind = DOP_LAYOUT_ROWS;
    f->lay.row_slot = f->rows;
    f->lay.dev_row_slot = (const int32_t *)(uintptr_t)f->drows;
    f->wt.table = f->table;
}

static void fixture_free(pdl_fixture *f)
{
    const runtime_driver *d = f->d;
    dop_adapter_table_destroy(f->table);
    CUdeviceptr all[] = {f->dw, f->dx, f->dy, f->dsrc, f->drows, f->dws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        d->fn_cuMemFree(all[i]);
    d->fn_cuStreamDestroy(f->stream);
    d->fn_cuModuleUnload(f->mod);
    free(f->x);
    free(f->y0);
    free(f->stale);
    free(f->y);
    free(f->ref);
}

/* The producer (y = y0 after the spin), then the call, on f->stream. */
static dop_status enqueue(pdl_fixture *f)
{
    unsigned long long n = f->ny;
    long long spin = SPIN_CYCLES;
    void *args[] = {&f->dy, &f->dsrc, &n, &spin};
    CU(f->d->fn_cuLaunchKernel(f->producer, 1, 1, 1, 256, 1, 1, 0, f->stream, args, NULL));
    return dop_lora_apply(g_ctx, &f->shape, &f->lay, &f->wt, (void *)(uintptr_t)f->dx, (void *)(uintptr_t)f->dy,
                          (void *)(uintptr_t)f->dws, f->ws, (dop_stream)f->stream);
}

/* y from the device against the reference; rows without an adapter exactly y0. */
static void check_y(pdl_fixture *f, const char *sched, const char *how)
{
    const int width = DOUT[0] + DOUT[1];
    CU(f->d->fn_cuStreamSynchronize(f->stream));
    CU(f->d->fn_cuMemcpyDtoH(f->y, f->dy, f->ny * 2));
    double num = 0, den = 0;
    long bad = 0;
    for (int r = 0; r < ROWS; ++r)
        for (int c = 0; c < width; ++c) {
            size_t i = (size_t)r * width + c;
            if (f->rows[r] < 0) {
                bad += f->y[i] != f->y0[i];
                continue;
            }
            double e = kref_half_to_f32(f->y[i]) - f->ref[i];
            num += e * e;
            den += f->ref[i] * f->ref[i];
        }
    double err = sqrt(num / den);
    printf("%-58s %-6s normalized error %.2e, %ld entries of rows without adapter differ from y0\n", sched, how, err,
           bad);
    fflush(stdout);
    assert_true(err < 1e-3);
    assert_int_equal(bad, 0);
}

static void reset_y(pdl_fixture *f)
{
    CU(f->d->fn_cuMemcpyHtoD(f->dy, f->stale, f->ny * 2));
    CU(f->d->fn_cuCtxSynchronize());
}

static void test_pdl_every_sketch(void **state)
{
    (void)state;
    dop_device_info info;
    assert_int_equal(dop_context_device_info(g_ctx, &info), DOP_OK);
    static const char *const scheds[] = {
        "cluster rows=1 warps=8 vec=4 kc=128 splitk=8 cols=512",
        "cluster rows=16 warps=8 vec=8 kc=64 splitk=4 cols=256 mma",
        "fused rows=2 warps=8 vec=8 kc=256 splitk=1 cols=256",
        "split rows=1 warps=8 vec=8 kc=1024 splitk=1 cols=256",
        "split rows=2 warps=8 vec=8 kc=512 splitk=4 cols=512",
        "counter rows=4 warps=8 vec=8 kc=256 splitk=4 cols=256",
    };
    pdl_fixture f;
    bool pushed;
    assert_int_equal(runtime_enter(g_ctx, &pushed), DOP_OK);
    fixture_init(&f);
    for (size_t k = 0; k < sizeof scheds / sizeof scheds[0]; ++k) {
        search_schedule s;
        assert_int_equal(search_schedule_parse(scheds[k], &s), 0);
        if (s.sketch == SEARCH_SKETCH_CLUSTER && info.cc_major < 9)
            continue;
        assert_true(search_schedule_legal(&s, RANK, NULL, 0));
        runtime_force_schedule(&s);
        /* the first call compiles (and waits for) the kernel: not timed against the producer */
        reset_y(&f);
        assert_int_equal(enqueue(&f), DOP_OK);
        CU(f.d->fn_cuStreamSynchronize(f.stream));
        for (int rep = 0; rep < 3; ++rep) {
            reset_y(&f);
            assert_int_equal(enqueue(&f), DOP_OK);
            check_y(&f, scheds[k], "eager");
        }
        CUgraph graph;
        CUgraphExec exec;
        CU(f.d->fn_cuStreamBeginCapture(f.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
        dop_status st = enqueue(&f);
        CU(f.d->fn_cuStreamEndCapture(f.stream, &graph));
        assert_int_equal(st, DOP_OK);
        CU(f.d->fn_cuGraphInstantiateWithFlags(&exec, graph, 0));
        for (int rep = 0; rep < 3; ++rep) {
            reset_y(&f);
            CU(f.d->fn_cuGraphLaunch(exec, f.stream));
            check_y(&f, scheds[k], "graph");
        }
        f.d->fn_cuGraphExecDestroy(exec);
        f.d->fn_cuGraphDestroy(graph);
        runtime_force_schedule(NULL);
    }
    fixture_free(&f);
    runtime_leave(g_ctx, pushed);
}

int main(void)
{
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE | DOP_CONTEXT_PROGRAMMATIC_LAUNCH;
    dop_status st = dop_context_create(&opt, &g_ctx);
    if (st == DOP_ERR_UNAVAILABLE) {
        printf("skipped: no usable GPU (%s)\n", dop_context_error(NULL));
        return 77;
    }
    if (st != DOP_OK) {
        printf("dop_context_create: %s\n", dop_context_error(NULL));
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_pdl_every_sketch)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dop_context_destroy(g_ctx);
    return rc;
}
