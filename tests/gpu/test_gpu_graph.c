/*
 * test_gpu_graph.c -- CUDA-graph capture and replay with changing layouts.
 *
 * A call is captured once with one layout (identical: one adapter, so
 * dispatch picks a many-rows-per-CTA schedule), then the graph is replayed
 * after the engine rewrote the device copies of the layout with other
 * layouts of the same num_rows (distinct, skewed, mixed with -1 rows and
 * shuffled order; for segments also a different segment count through
 * dev_num_segments). Segments are captured a second time with a host layout of
 * one segment per row, so that replays run with fewer segments than the call
 * described (the kernels read the first segments before the run-time count),
 * and, with tensor-core schedules forced, a third time with 12 segments off the
 * 16-row grid (row tiles aligned to segments; replays that need more tiles than
 * the grid has, or more segments than the capture). Every replay must match the
 * CPU reference.
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

#define ROWS 64
#define DIN 4096
#define NSL 2
#define RANK 16
#define SLOTS 64

static dop_context *g_ctx;

#define CU(call) assert_int_equal((call), CUDA_SUCCESS)

static double unit(uint64_t *s)
{
    return (double)(runtime_rng_next(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* capture: 0 identical, 1 one segment per row, 2 twelve segments of 5 rows (the last 9) whose
 * boundaries are off the 16-row grid; force: a schedule forced on every call, or NULL */
static void replay_case(int use_segments, int wide_capture, const char *force)
{
    const runtime_driver *d = g_ctx->drv;
    bool pushed;
    assert_int_equal(runtime_enter(g_ctx, &pushed), DOP_OK);
    static const int dout[NSL] = {4096, 1024};
    const int width = dout[0] + dout[1];
    uint64_t rng = 42 + (uint64_t)use_segments + 2u * (uint64_t)wide_capture;
    search_schedule forced;
    if (force) {
        assert_int_equal(search_schedule_parse(force, &forced), 0);
        runtime_force_schedule(&forced);
    }

    /* adapters: ranks 8..16, one weight buffer */
    kref_adapter kad[SLOTS * NSL];
    dop_lora_adapter dad[SLOTS * NSL];
    size_t total = 0;
    int ranks[SLOTS * NSL];
    for (int e = 0; e < SLOTS * NSL; ++e) {
        ranks[e] = 8 + (int)(runtime_rng_next(&rng) % 9);
        total += (size_t)ranks[e] * (DIN + dout[e % NSL]);
    }
    uint16_t *w = malloc(total * 2), *x = malloc((size_t)ROWS * DIN * 2), *y0 = malloc((size_t)ROWS * width * 2),
             *y = malloc((size_t)ROWS * width * 2);
    double *ref = malloc((size_t)ROWS * width * sizeof *ref);
    assert_non_null(w);
    assert_non_null(x);
    assert_non_null(y0);
    assert_non_null(y);
    assert_non_null(ref);
    CUdeviceptr dw, dx, dy, drows, dind, dsl, dcnt, dws;
    CU(d->fn_cuMemAlloc(&dw, total * 2));
    size_t off = 0;
    for (int e = 0; e < SLOTS * NSL; ++e) {
        int r = ranks[e], s = e % NSL;
        for (size_t i = 0; i < (size_t)r * DIN; ++i)
            w[off + i] = kref_f32_to_half((float)(unit(&rng) / 40.0));
        for (size_t i = 0; i < (size_t)r * dout[s]; ++i)
            w[off + (size_t)r * DIN + i] = kref_f32_to_half((float)(unit(&rng) / 3.0));
        float scale = (float)(0.5 + (double)(e % 5) * 0.25);
        kad[e] = (kref_adapter){w + off, w + off + (size_t)r * DIN, r, scale};
        dad[e] = (dop_lora_adapter){(void *)(uintptr_t)(dw + off * 2), (void *)(uintptr_t)(dw + (off + (size_t)r * DIN) * 2),
                                    r, scale};
        off += (size_t)r * (DIN + dout[s]);
    }
    CU(d->fn_cuMemcpyHtoD(dw, w, total * 2));
    for (size_t i = 0; i < (size_t)ROWS * DIN; ++i)
        x[i] = kref_f32_to_half((float)unit(&rng));
    for (size_t i = 0; i < (size_t)ROWS * width; ++i)
        y0[i] = kref_f32_to_half((float)unit(&rng));
    CU(d->fn_cuMemAlloc(&dx, (size_t)ROWS * DIN * 2));
    CU(d->fn_cuMemAlloc(&dy, (size_t)ROWS * width * 2));
    CU(d->fn_cuMemAlloc(&drows, ROWS * 4));
    CU(d->fn_cuMemAlloc(&dind, (ROWS * 2 + 2) * 4));
    CU(d->fn_cuMemAlloc(&dsl, (ROWS * 2 + 2) * 4));
    CU(d->fn_cuMemAlloc(&dcnt, 4));
    CU(d->fn_cuMemcpyHtoD(dx, x, (size_t)ROWS * DIN * 2));

    dop_adapter_table *table;
    assert_int_equal(dop_adapter_table_create(g_ctx, SLOTS, NSL, dad, &table), DOP_OK);
    dop_lora_shape shape;
    dop_lora_shape_init(&shape);
    shape.num_rows = ROWS;
    shape.d_in = DIN;
    shape.num_slices = NSL;
    shape.d_out[0] = dout[0];
    shape.d_out[1] = dout[1];
    shape.max_rank = RANK;
    size_t ws;
    assert_int_equal(dop_lora_workspace_size(g_ctx, &shape, 0, &ws), DOP_OK);
    CU(d->fn_cuMemAlloc(&dws, ws));

    /* capture with the identical layout */
    int32_t rows[ROWS], indptr[ROWS * 2 + 2], segslot[ROWS * 2 + 1];
    for (int i = 0; i < ROWS; ++i)
        rows[i] = 3;
    int nseg = 1;
    indptr[0] = 0;
    indptr[1] = ROWS;
    segslot[0] = 3;
    if (wide_capture == 2) { /* segments i of rows 5 i .. 5 i + 4, slot i; the last to the end */
        nseg = 12;
        for (int i = 0; i < ROWS; ++i)
            rows[i] = i / 5 < nseg ? i / 5 : nseg - 1;
        for (int i = 0; i < nseg; ++i) {
            segslot[i] = i;
            indptr[i + 1] = i + 1 < nseg ? 5 * (i + 1) : ROWS;
        }
    } else if (wide_capture) { /* one segment per row, slots 0, 1, ... */
        nseg = ROWS;
        for (int i = 0; i < ROWS; ++i) {
            rows[i] = i % SLOTS;
            segslot[i] = i % SLOTS;
            indptr[i + 1] = i + 1;
        }
    }
    dop_layout lay;
    memset(&lay, 0, sizeof lay);
    if (use_segments) {
        lay.kind = DOP_LAYOUT_SEGMENTS;
        lay.num_segments = nseg;
        lay.seg_indptr = indptr;
        lay.seg_slot = segslot;
        lay.dev_seg_indptr = (const int32_t *)(uintptr_t)dind;
        lay.dev_seg_slot = (const int32_t *)(uintptr_t)dsl;
        lay.dev_num_segments = (const int32_t *)(uintptr_t)dcnt;
    } else {
        lay.kind = DOP_LAYOUT_ROWS;
        lay.row_slot = rows;
        lay.dev_row_slot = (const int32_t *)(uintptr_t)drows;
    }
    dop_weights wt;
    memset(&wt, 0, sizeof wt);
    wt.table = table;
    CUstream stream;
    CU(d->fn_cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    /* compile outside the capture (a first call may JIT), then capture */
    CU(d->fn_cuMemcpyHtoD(drows, rows, sizeof rows));
    CU(d->fn_cuMemcpyHtoD(dind, indptr, ((size_t)nseg + 1) * 4));
    CU(d->fn_cuMemcpyHtoD(dsl, segslot, (size_t)nseg * 4));
    CU(d->fn_cuMemcpyHtoD(dcnt, &nseg, 4));
    CU(d->fn_cuCtxSynchronize()); /* pageable copies may return before their DMA lands */
    assert_int_equal(dop_lora_apply(g_ctx, &shape, &lay, &wt, (void *)(uintptr_t)dx, (void *)(uintptr_t)dy,
                                    (void *)(uintptr_t)dws, ws, (dop_stream)stream),
                     DOP_OK);
    CU(d->fn_cuStreamSynchronize(stream));
    search_schedule used;
    runtime_last_schedule(&used);
    char name[128];
    search_schedule_format(&used, name, sizeof name);
    printf("captured with %s layout (%d segments), schedule [%s]\n",
           wide_capture == 2 ? "off-grid" : wide_capture ? "distinct" : "identical", nseg, name);

    CUgraph graph;
    CUgraphExec exec;
    CU(d->fn_cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    dop_status st = dop_lora_apply(g_ctx, &shape, &lay, &wt, (void *)(uintptr_t)dx, (void *)(uintptr_t)dy,
                                   (void *)(uintptr_t)dws, ws, (dop_stream)stream);
    CU(d->fn_cuStreamEndCapture(stream, &graph));
    assert_int_equal(st, DOP_OK);
    CU(d->fn_cuGraphInstantiateWithFlags(&exec, graph, 0));

    /* without device copies, capture must be refused with a clear message */
    dop_layout host_only = lay;
    host_only.dev_row_slot = NULL;
    host_only.dev_seg_indptr = NULL;
    host_only.dev_seg_slot = NULL;
    host_only.dev_num_segments = NULL;
    CUgraph g2;
    CU(d->fn_cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    st = dop_lora_apply(g_ctx, &shape, &host_only, &wt, (void *)(uintptr_t)dx, (void *)(uintptr_t)dy,
                        (void *)(uintptr_t)dws, ws, (dop_stream)stream);
    CU(d->fn_cuStreamEndCapture(stream, &g2));
    assert_int_equal(st, DOP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(dop_context_error(g_ctx), "capturing"));
    d->fn_cuGraphDestroy(g2);

    for (int k = 0; k < 5; ++k) {
        runtime_workload wl = k == 0 ? RUNTIME_WL_IDENTICAL : k == 1 ? RUNTIME_WL_DISTINCT : k == 2 ? RUNTIME_WL_SKEWED : k == 3 ? RUNTIME_WL_MIXED : RUNTIME_WL_UNIFORM;
        int used_slots = runtime_workload_rows(wl, ROWS, &rng, rows);
        assert_true(used_slots <= SLOTS);
        nseg = 0;
        if (use_segments) { /* sorted workloads become segments; mixed (shuffled) gets sorted first */
            int32_t sorted[ROWS];
            memcpy(sorted, rows, sizeof sorted);
            for (int i = 1; i < ROWS; ++i) /* insertion sort: -1 rows first, then by slot */
                for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; --j) {
                    int32_t t = sorted[j];
                    sorted[j] = sorted[j - 1];
                    sorted[j - 1] = t;
                }
            memcpy(rows, sorted, sizeof sorted);
            indptr[0] = 0;
            for (int i = 0; i < ROWS;) {
                int j = i;
                while (j < ROWS && rows[j] == rows[i])
                    ++j;
                if (k == 4) { /* an empty segment too */
                    segslot[nseg] = 5;
                    indptr[++nseg] = i;
                }
                segslot[nseg] = rows[i];
                indptr[++nseg] = j;
                i = j;
            }
            CU(d->fn_cuMemcpyHtoD(dind, indptr, ((size_t)nseg + 1) * 4));
            CU(d->fn_cuMemcpyHtoD(dsl, segslot, (size_t)nseg * 4));
            CU(d->fn_cuMemcpyHtoD(dcnt, &nseg, 4));
        } else {
            CU(d->fn_cuMemcpyHtoD(drows, rows, sizeof rows));
        }
        CU(d->fn_cuMemcpyHtoD(dy, y0, (size_t)ROWS * width * 2));
        CU(d->fn_cuCtxSynchronize()); /* the graph's stream does not wait for these copies */
        CU(d->fn_cuGraphLaunch(exec, stream));
        CU(d->fn_cuStreamSynchronize(stream));
        CU(d->fn_cuMemcpyDtoH(y, dy, (size_t)ROWS * width * 2));
        int ycol[NSL] = {0, dout[0]};
        kref_problem kp = {0, ROWS, DIN, NSL, RANK, dout, ycol, DIN, width, rows, SLOTS, kad};
        kref_apply(&kp, x, y0, ref);
        double num = 0, den = 0;
        long bad = 0;
        for (int r = 0; r < ROWS; ++r)
            for (int c = 0; c < width; ++c) {
                size_t i = (size_t)r * width + c;
                if (rows[r] < 0) {
                    bad += y[i] != y0[i];
                    continue;
                }
                double e = kref_half_to_f32(y[i]) - ref[i];
                num += e * e;
                den += ref[i] * ref[i];
            }
        double err = sqrt(num / den);
        printf("%s%s replay %d (%s, %d segments): normalized error %.2e, %ld untouched entries changed\n",
               use_segments ? "segments" : "rows",
               wide_capture == 2 ? " (off-grid capture)" : wide_capture ? " (wide capture)" : "", k,
               runtime_workload_name(wl), nseg, err, bad);
        assert_true(err < 1e-3);
        assert_int_equal(bad, 0);
    }
    runtime_force_schedule(NULL);
    d->fn_cuGraphExecDestroy(exec);
    d->fn_cuGraphDestroy(graph);
    d->fn_cuStreamDestroy(stream);
    dop_adapter_table_destroy(table);
    CUdeviceptr all[] = {dw, dx, dy, drows, dind, dsl, dcnt, dws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i)
        d->fn_cuMemFree(all[i]);
    runtime_leave(g_ctx, pushed);
    free(w);
    free(x);
    free(y0);
    free(y);
    free(ref);
}

static void test_graph_rows(void **state)
{
    (void)state;
    replay_case(0, 0, NULL);
}

static void test_graph_segments(void **state)
{
    (void)state;
    replay_case(1, 0, NULL);
}

static void test_graph_segments_fewer_at_replay(void **state)
{
    (void)state;
    replay_case(1, 1, NULL);
}

/* Tensor-core schedules captured with segments off the 16-row grid take row tiles aligned to
 * segments, with a grid sized by the capture's 12 segments (ceil(64 / 16) + 11 = 15 row tiles).
 * The replays need from 4 pieces (identical) to 64 (distinct), and the uniform one has 16
 * segments with its empty ones, more than the capture's 12: the kernels must fall back to the
 * plain tiles where the grid is too small, or where there are more segments than threads (32
 * threads of the one-warp schedule against distinct's 64 segments). */
static void test_graph_segments_aligned_tiles(void **state)
{
    (void)state;
    replay_case(1, 2, "split rows=16 warps=1 vec=8 kc=64 splitk=4 cols=256 mma stages=2");
    replay_case(1, 2, "split rows=16 warps=4 vec=8 kc=128 splitk=2 cols=128 mma");
}

static void test_graph_segments_aligned_tiles_cluster(void **state)
{
    (void)state;
    dop_device_info in;
    dop_context_device_info(g_ctx, &in);
    if (in.cc_major < 9) {
        printf("cluster: skipped (sm_%d%d has no thread-block clusters)\n", in.cc_major, in.cc_minor);
        return;
    }
    replay_case(1, 2, "cluster rows=16 warps=4 vec=8 kc=64 splitk=4 cols=256 mma");
}

int main(void)
{
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE; /* the graph must hold the kernel chosen at capture */
    dop_status st = dop_context_create(&opt, &g_ctx);
    if (st == DOP_ERR_UNAVAILABLE) {
        printf("skipped: no usable GPU (%s)\n", dop_context_error(NULL));
        return 77;
    }
    if (st != DOP_OK) {
        printf("dop_context_create: %s\n", dop_context_error(NULL));
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_graph_rows), cmocka_unit_test(test_graph_segments),
                                       cmocka_unit_test(test_graph_segments_fewer_at_replay),
                                       cmocka_unit_test(test_graph_segments_aligned_tiles),
                                       cmocka_unit_test(test_graph_segments_aligned_tiles_cluster)};
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dop_context_destroy(g_ctx);
    return rc;
}
