/*
 * test_gpu_kernels.c -- every kernel against the CPU reference on a GPU.
 *
 * Fresh random data per case (runtime_check_case): the layouts of
 * WORKLOADS.md (distinct, uniform, skewed, identical, mixed), fp16 and bf16,
 * ranks 8..128 (heterogeneous in mixed), d_in/d_out in {4096, 11008, 1024,
 * 3424, 100}, equal and unequal slices, both layout forms, device copies or
 * uploads, tables or per-call weights, empty segments, and a sample of forced
 * schedules of every sketch (tensor cores, cp.async stages and persistent
 * grids included). Exits 77 (skipped) without a usable device.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "runtime_check.h"

static dop_context *g_ctx;
static int g_total, g_failed;
static double g_worst[2];

static void run(const runtime_case *c, const char *group, int *fails)
{
    runtime_case_result res;
    dop_status st = runtime_check_case(g_ctx, c, &res);
    int ok = st == DOP_OK && res.ok;
    int bf = c->dtype == DOP_DTYPE_BF16;
    g_total++;
    if (ok && res.err > g_worst[bf])
        g_worst[bf] = res.err;
    if (!ok) {
        g_failed++;
        (*fails)++;
    }
    static const char *const ops[] = {"apply", "shrink", "expand"};
    char dims[96] = "";
    for (int s = 0; s < c->num_slices; ++s) {
        size_t l = strlen(dims);
        snprintf(dims + l, sizeof dims - l, "%s%d", s ? "," : "", c->d_out[s]);
    }
    printf("%-8s %-4s %-9s %-4s rows=%-5d din=%-5d dout=%-22s r=%-3d%s %-6s %-48s err=%.2e %s%s%s\n", group,
           bf ? "bf16" : "f16", runtime_workload_name(c->workload),
           c->workload == RUNTIME_WL_MIXED || c->layout_kind == DOP_LAYOUT_ROWS ? "rows" : "segs", c->num_rows,
           c->d_in, dims, c->max_rank, c->hetero_ranks ? "h" : " ", ops[c->op], res.schedule, res.err,
           ok ? "ok" : "FAIL ", ok ? "" : res.message, "");
    fflush(stdout);
}

static runtime_case base_case(dop_dtype dt, runtime_workload wl, int rows, int d_in, int d_out, int rank)
{
    runtime_case c;
    memset(&c, 0, sizeof c);
    c.dtype = dt;
    c.op = RUNTIME_OP_APPLY;
    c.workload = wl;
    c.layout_kind = DOP_LAYOUT_SEGMENTS;
    c.num_rows = rows;
    c.d_in = d_in;
    c.num_slices = 1;
    c.d_out[0] = d_out;
    c.max_rank = rank;
    c.hetero_ranks = wl == RUNTIME_WL_MIXED;
    c.seed = 1;
    return c;
}

/* Every layout x decode row count x dtype, Llama q/k/v shape. */
static void test_layouts(void **state)
{
    (void)state;
    static const int rows[] = {1, 8, 32, 64, 128, 256};
    int fails = 0, i = 0;
    for (int dt = 0; dt < 2; ++dt)
        for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl)
            for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r, ++i) {
                runtime_case c = base_case(dt ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, (runtime_workload)wl, rows[r], 4096,
                                           4096, i % 3 == 0 ? 64 : 16);
                c.layout_kind = i % 2 ? DOP_LAYOUT_ROWS : DOP_LAYOUT_SEGMENTS;
                c.device_copies = (i / 2) % 2;
                c.empty_segments = i % 5 == 0;
                c.seed = 100 + (uint64_t)i;
                run(&c, "layout", &fails);
            }
    /* prefill chunks */
    runtime_case c = base_case(DOP_DTYPE_F16, RUNTIME_WL_UNIFORM, 1024, 4096, 4096, 16);
    run(&c, "prefill", &fails);
    c = base_case(DOP_DTYPE_BF16, RUNTIME_WL_UNIFORM, 4096, 4096, 4096, 16);
    c.device_copies = 1;
    run(&c, "prefill", &fails);
    c = base_case(DOP_DTYPE_F16, RUNTIME_WL_MIXED, 1024, 4096, 4096, 32);
    run(&c, "prefill", &fails);
    assert_int_equal(fails, 0);
}

/* Ranks and odd sizes: every rank, every d_in/d_out of the issue. */
static void test_ranks_and_sizes(void **state)
{
    (void)state;
    static const int ranks[] = {8, 16, 32, 64, 128};
    static const int dims[][2] = {{4096, 11008}, {11008, 4096}, {1024, 1024}, {3424, 3424},
                                  {100, 100},    {100, 4096},   {3424, 100}};
    int fails = 0, i = 0;
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; ++d)
        for (size_t r = 0; r < sizeof ranks / sizeof ranks[0]; ++r, ++i) {
            runtime_workload wl = (runtime_workload)(i % RUNTIME_WL_COUNT);
            runtime_case c = base_case(i % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, wl, wl == RUNTIME_WL_DISTINCT ? 16 : 48,
                                       dims[d][0], dims[d][1], ranks[r]);
            c.layout_kind = i % 3 ? DOP_LAYOUT_SEGMENTS : DOP_LAYOUT_ROWS;
            c.hetero_ranks = i % 2 || wl == RUNTIME_WL_MIXED;
            c.seed = 200 + (uint64_t)i;
            run(&c, "size", &fails);
        }
    assert_int_equal(fails, 0);
}

/* Slices sharing x: equal (q/k/v), unequal (GQA), gate/up, four odd widths. */
static void test_slices(void **state)
{
    (void)state;
    static const int sl[][5] = {{3, 4096, 4096, 4096, 0},
                                {3, 4096, 1024, 1024, 0},
                                {2, 11008, 11008, 0, 0},
                                {4, 100, 3424, 1024, 4096}};
    int fails = 0, i = 0;
    for (size_t k = 0; k < sizeof sl / sizeof sl[0]; ++k)
        for (int wl = 0; wl < RUNTIME_WL_COUNT; wl += 2, ++i) {
            runtime_case c = base_case(i % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, (runtime_workload)wl, 32, 4096, 0,
                                       i % 2 ? 16 : 64);
            c.num_slices = sl[k][0];
            for (int s = 0; s < c.num_slices; ++s)
                c.d_out[s] = sl[k][1 + s];
            c.hetero_ranks = 1;
            c.device_copies = i % 2;
            c.seed = 300 + (uint64_t)i;
            run(&c, "slices", &fails);
        }
    assert_int_equal(fails, 0);
}

/* The separate halves, and per-call weights (Punica-style pointer arrays). */
static void test_shrink_expand_and_weights(void **state)
{
    (void)state;
    int fails = 0, i = 0;
    for (int op = RUNTIME_OP_SHRINK; op <= RUNTIME_OP_EXPAND; ++op)
        for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl, ++i) {
            runtime_case c = base_case(i % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, (runtime_workload)wl, 64, 4096, 4096,
                                       i % 2 ? 32 : 16);
            c.op = (runtime_op)op;
            c.num_slices = 2;
            c.d_out[1] = 1024;
            c.device_copies = i % 2;
            c.seed = 400 + (uint64_t)i;
            run(&c, "halves", &fails);
        }
    for (int k = 0; k < 6; ++k, ++i) {
        runtime_case c = base_case(k % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16,
                                   k < 2 ? RUNTIME_WL_DISTINCT : k < 4 ? RUNTIME_WL_SKEWED : RUNTIME_WL_MIXED, 32, 4096,
                                   4096, 16);
        c.per_call_weights = 1;
        c.device_copies = k % 2;
        c.empty_segments = 1;
        c.seed = 500 + (uint64_t)k;
        run(&c, "percall", &fails);
    }
    assert_int_equal(fails, 0);
}

/* A sample of forced schedules of every sketch on layouts that stress grouping. */
static void test_forced_schedules(void **state)
{
    (void)state;
    static const uint8_t rows[] = {1, 2, 4, 8, 16, 32};
    static const uint8_t warps[] = {1, 2, 4, 8, 16};
    static const uint8_t vecs[] = {1, 2, 4, 8};
    static const uint16_t kcs[] = {256, 512, 1024};
    static const uint16_t cols[] = {32, 64, 128, 256, 1000};
    static const uint8_t splits[] = {1, 2, 3, 8, 64};
    int fails = 0, n = 0;
    uint64_t rng = 7;
    while (n < 60) {
        search_schedule s;
        memset(&s, 0, sizeof s);
        s.version = SEARCH_SCHEDULE_VERSION;
        s.stages = 1;
        s.sketch = n % 3 == 0 ? SEARCH_SKETCH_SPLIT : n % 3 == 1 ? SEARCH_SKETCH_FUSED : SEARCH_SKETCH_FUSED_COUNTER;
        s.rows = rows[runtime_rng_next(&rng) % 6];
        s.warps = warps[runtime_rng_next(&rng) % 5];
        s.vec = vecs[runtime_rng_next(&rng) % 4];
        s.kc = kcs[runtime_rng_next(&rng) % 3];
        s.cols = cols[runtime_rng_next(&rng) % 5];
        s.split_k = s.sketch == SEARCH_SKETCH_FUSED ? 1 : splits[runtime_rng_next(&rng) % 5];
        s.persist = n % 4 == 1; /* a persistent grid for every sketch (n % 3 picks it) */
        int rank = n % 3 == 0 ? 128 : n % 3 == 1 ? 16 : 40;
        if (!search_schedule_legal(&s, rank, NULL, 0))
            continue;
        static const int dims[][2] = {{4096, 4096}, {3424, 1024}, {100, 3424}, {11008, 100}};
        runtime_case c = base_case(n % 4 < 2 ? DOP_DTYPE_F16 : DOP_DTYPE_BF16,
                                   (runtime_workload)((n / 2) % RUNTIME_WL_COUNT), 37 + (n % 5) * 20, dims[n % 4][0],
                                   dims[n % 4][1], rank);
        c.hetero_ranks = 1;
        c.num_slices = n % 3 ? 1 : 2;
        c.d_out[1] = 700;
        c.layout_kind = n % 2 ? DOP_LAYOUT_ROWS : DOP_LAYOUT_SEGMENTS;
        c.device_copies = (n / 3) % 2;
        c.empty_segments = 1;
        c.force = &s;
        c.seed = 600 + (uint64_t)n;
        if (n % 7 == 3)
            c.op = RUNTIME_OP_SHRINK;
        if (n % 7 == 5)
            c.op = RUNTIME_OP_EXPAND;
        run(&c, "forced", &fails);
        ++n;
    }
    assert_int_equal(fails, 0);
}

/* Cases that once failed, each run several times (a race shows as a moving error). */
static void test_regressions(void **state)
{
    (void)state;
    static const char *const scheds[] = {
        "split rows=2 warps=8 vec=8 kc=1024 splitk=4 cols=256",
        "split rows=1 warps=4 vec=8 kc=1024 splitk=3 cols=256",
        "split rows=4 warps=8 vec=8 kc=1024 splitk=4 cols=256",
    };
    int fails = 0;
    for (int rep = 0; rep < 3; ++rep)
        for (int wl = 1; wl <= 3; ++wl)
            for (size_t k = 0; k < sizeof scheds / sizeof scheds[0]; ++k) {
                search_schedule s;
                assert_int_equal(search_schedule_parse(scheds[k], &s), 0);
                runtime_case c = base_case(DOP_DTYPE_F16, (runtime_workload)wl, 128, 4096, 4096, 16);
                c.device_copies = 1;
                c.force = rep == 2 ? NULL : &s;
                c.seed = 1000 + (uint64_t)(wl * 10 + (int)k);
                run(&c, "regress", &fails);
            }
    assert_int_equal(fails, 0);
}

/* Tensor-core schedules of both sketches on layouts, sizes, ranks and slices. */
static void test_mma_schedules(void **state)
{
    (void)state;
    static const char *const scheds[] = {
        "split rows=16 warps=8 vec=8 kc=64 splitk=4 cols=256 mma",
        "split rows=16 warps=4 vec=8 kc=128 splitk=1 cols=128 mma",
        "split rows=16 warps=16 vec=8 kc=16 splitk=16 cols=1000 mma",
        "fused rows=16 warps=8 vec=8 kc=64 splitk=1 cols=256 mma",
        "fused rows=16 warps=4 vec=8 kc=32 splitk=1 cols=64 mma",
        "counter rows=16 warps=8 vec=8 kc=64 splitk=8 cols=256 mma",
        "counter rows=1 warps=8 vec=8 kc=1024 splitk=16 cols=512",
        "counter rows=4 warps=4 vec=8 kc=512 splitk=1 cols=128",
    };
    static const int dims[][2] = {{4096, 4096}, {3424, 100}, {100, 1024}, {11008, 4096}, {1024, 3424}};
    static const int ranks[] = {8, 16, 40, 64, 128};
    int fails = 0, i = 0;
    for (size_t k = 0; k < sizeof scheds / sizeof scheds[0]; ++k)
        for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl, ++i) {
            search_schedule sch;
            assert_int_equal(search_schedule_parse(scheds[k], &sch), 0);
            runtime_case c = base_case(i % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, (runtime_workload)wl,
                                       wl == RUNTIME_WL_DISTINCT ? 24 : 24 + 40 * (i % 4), dims[i % 5][0],
                                       dims[i % 5][1], ranks[i % 5]);
            c.hetero_ranks = 1;
            c.num_slices = i % 3 == 0 ? 3 : 1;
            c.d_out[1] = 1024;
            c.d_out[2] = 100;
            c.layout_kind = i % 2 ? DOP_LAYOUT_ROWS : DOP_LAYOUT_SEGMENTS;
            c.device_copies = (i / 2) % 2;
            c.empty_segments = 1;
            if (sch.sketch == SEARCH_SKETCH_SPLIT)
                c.op = (runtime_op)(i % 3);
            c.force = &sch;
            c.seed = 800 + (uint64_t)i;
            run(&c, "mma", &fails);
        }
    assert_int_equal(fails, 0);
}

/*
 * The cp.async pipeline (stages 2..4, tensor cores) and the persistent grid
 * (persist=1) for every sketch, forced: ranks that are not multiples of 8 or
 * 16 (zero-filled A rows), d_in 100 (not a multiple of 8: the unstaged path)
 * and 3424 / 11008 (K tails inside a chunk), row counts that end inside a
 * 16-row tile, and 333 or 1500 rows so that a persistent grid has more tiles
 * than CTAs (the counter sketch's CTAs then count in several tiles, some of
 * one row tile). The shrink and expand ops run the split sketch's halves.
 * kc 48 (6 copy segments a row, which 64 threads do not divide) takes the
 * copies that find their row and segment by division; the others, the copy
 * plans (dop_copies).
 */
static void test_staged_persistent_schedules(void **state)
{
    (void)state;
    static const char *const scheds[] = {
        "split rows=16 warps=8 vec=8 kc=64 splitk=4 cols=256 mma stages=2",
        "split rows=16 warps=4 vec=8 kc=32 splitk=3 cols=128 mma stages=3 persist=1",
        "split rows=16 warps=16 vec=8 kc=16 splitk=16 cols=1000 mma stages=4",
        "split rows=16 warps=1 vec=8 kc=128 splitk=1 cols=64 mma stages=2 persist=1",
        "fused rows=16 warps=8 vec=8 kc=64 splitk=1 cols=256 mma stages=3",
        "fused rows=16 warps=4 vec=8 kc=128 splitk=1 cols=64 mma stages=2 persist=1",
        "fused rows=16 warps=2 vec=8 kc=16 splitk=1 cols=128 mma stages=4 persist=1",
        "counter rows=16 warps=8 vec=8 kc=64 splitk=8 cols=256 mma stages=4 persist=1",
        "counter rows=16 warps=2 vec=8 kc=32 splitk=2 cols=128 mma stages=2",
        "counter rows=16 warps=16 vec=8 kc=128 splitk=1 cols=512 mma stages=3 persist=1",
        "split rows=1 warps=8 vec=8 kc=1024 splitk=8 cols=256 persist=1",
        "split rows=4 warps=4 vec=4 kc=512 splitk=1 cols=128 persist=1",
        "fused rows=1 warps=16 vec=8 kc=2048 splitk=1 cols=256 persist=1",
        "fused rows=2 warps=8 vec=2 kc=256 splitk=1 cols=64 persist=1",
        "counter rows=1 warps=8 vec=8 kc=1024 splitk=16 cols=512 persist=1",
        "counter rows=4 warps=4 vec=8 kc=512 splitk=3 cols=128 persist=1",
        "split rows=16 warps=8 vec=8 kc=128 splitk=2 cols=256 mma persist=1",
        "split rows=16 warps=2 vec=8 kc=48 splitk=2 cols=128 mma stages=3",
    };
    static const int dims[][2] = {{4096, 4096}, {3424, 100}, {100, 1024}, {11008, 4096}, {1024, 3424}};
    static const int ranks[] = {16, 40, 8, 64, 128};
    static const int nrows[] = {24, 77, 333, 1500};
    int fails = 0, i = 0;
    for (size_t k = 0; k < sizeof scheds / sizeof scheds[0]; ++k)
        for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl, ++i) {
            search_schedule sch;
            assert_int_equal(search_schedule_parse(scheds[k], &sch), 0);
            int rank = ranks[i % 5];
            if (!search_schedule_legal(&sch, rank, NULL, 0))
                rank = 16; /* the stages' ring does not fit next to a large rank */
            assert_true(search_schedule_legal(&sch, rank, NULL, 0));
            runtime_case c = base_case(i % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, (runtime_workload)wl,
                                       nrows[(i / 2) % 4], dims[i % 5][0], dims[i % 5][1], rank);
            c.hetero_ranks = 1;
            c.num_slices = i % 3 == 0 ? 3 : 1;
            c.d_out[1] = 1024;
            c.d_out[2] = 100;
            c.layout_kind = i % 2 ? DOP_LAYOUT_ROWS : DOP_LAYOUT_SEGMENTS;
            c.device_copies = (i / 2) % 2;
            c.empty_segments = 1;
            if (sch.sketch == SEARCH_SKETCH_SPLIT)
                c.op = (runtime_op)(i % 3);
            c.force = &sch;
            c.seed = 900 + (uint64_t)i;
            run(&c, "staged", &fails);
        }
    assert_int_equal(fails, 0);
}

/*
 * The cluster sketch (sm_90+): clusters of 1..16 CTAs (16 is the non-portable
 * size), CUDA-core and tensor-core shrinks, staged, on every layout, with
 * 1 to 1500 rows, d_in that does not divide evenly among the CTAs (100, 3424,
 * 11008), ranks that are not multiples of 8, three unequal slices, empty
 * segments, -1 rows and per-adapter ranks. Skipped before sm_90.
 */
static void test_cluster_schedules(void **state)
{
    (void)state;
    dop_device_info in;
    dop_context_device_info(g_ctx, &in);
    if (in.cc_major < 9) {
        printf("cluster: skipped (sm_%d%d has no thread-block clusters)\n", in.cc_major, in.cc_minor);
        return;
    }
    static const char *const scheds[] = {
        "cluster rows=1 warps=8 vec=8 kc=512 splitk=8 cols=256",
        "cluster rows=1 warps=16 vec=8 kc=1024 splitk=16 cols=512",
        "cluster rows=2 warps=4 vec=4 kc=256 splitk=3 cols=128",
        "cluster rows=4 warps=8 vec=8 kc=256 splitk=1 cols=1024",
        "cluster rows=8 warps=2 vec=2 kc=128 splitk=6 cols=64",
        "cluster rows=32 warps=8 vec=8 kc=512 splitk=4 cols=256",
        "cluster rows=16 warps=8 vec=8 kc=64 splitk=4 cols=256 mma",
        "cluster rows=16 warps=4 vec=8 kc=32 splitk=12 cols=128 mma stages=3",
        "cluster rows=16 warps=16 vec=8 kc=128 splitk=2 cols=512 mma stages=2",
    };
    static const int dims[][2] = {{4096, 4096}, {3424, 100}, {100, 1024}, {11008, 4096}, {1024, 3424}};
    static const int ranks[] = {16, 40, 8, 64, 128};
    static const int nrows[] = {1, 8, 24, 77, 333, 1500};
    int fails = 0, i = 0;
    for (size_t k = 0; k < sizeof scheds / sizeof scheds[0]; ++k)
        for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl, ++i) {
            search_schedule sch;
            assert_int_equal(search_schedule_parse(scheds[k], &sch), 0);
            int rank = ranks[i % 5];
            if (!search_schedule_legal(&sch, rank, NULL, 0))
                rank = 16; /* two intermediates or the stages' ring do not fit next to a large rank */
            assert_true(search_schedule_legal(&sch, rank, NULL, 0));
            runtime_case c = base_case(i % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, (runtime_workload)wl,
                                       nrows[i % 6], dims[i % 5][0], dims[i % 5][1], rank);
            c.hetero_ranks = 1;
            c.num_slices = i % 3 == 0 ? 3 : 1;
            c.d_out[1] = 1024;
            c.d_out[2] = 100;
            c.layout_kind = i % 2 ? DOP_LAYOUT_ROWS : DOP_LAYOUT_SEGMENTS;
            c.device_copies = (i / 2) % 2;
            c.empty_segments = 1;
            c.force = &sch;
            c.seed = 1000 + (uint64_t)i;
            run(&c, "cluster", &fails);
        }
    assert_int_equal(fails, 0);
}

/* An asynchronous context: the first call of every class is served by the
 * generic kernel while the chosen one compiles; it must be right everywhere. */
static void test_generic_kernel(void **state)
{
    (void)state;
    dop_context_options o;
    dop_context_options_init(&o);
    o.flags = DOP_CONTEXT_NO_CACHE;
    dop_context *saved = g_ctx, *actx;
    assert_int_equal(dop_context_create(&o, &actx), DOP_OK);
    g_ctx = actx;
    int fails = 0, i = 0;
    static const int dims[][2] = {{4096, 4096}, {3424, 100}, {100, 1024}, {11008, 4096}};
    for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl)
        for (int d = 0; d < 4; ++d, ++i) {
            runtime_case c = base_case(i % 2 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16, (runtime_workload)wl, 8 + 13 * d,
                                       dims[d][0], dims[d][1], d % 2 ? 24 : 64);
            c.hetero_ranks = 1;
            c.num_slices = d == 0 ? 3 : 1;
            c.d_out[1] = 1024;
            c.d_out[2] = 1024;
            c.layout_kind = i % 2 ? DOP_LAYOUT_ROWS : DOP_LAYOUT_SEGMENTS;
            c.op = (runtime_op)(i % 3);
            c.seed = 700 + (uint64_t)i;
            run(&c, "generic", &fails);
        }
    dop_context_stats st;
    dop_context_get_stats(actx, &st);
    printf("generic kernel served %llu of %llu calls\n", (unsigned long long)st.generic_calls,
           (unsigned long long)st.calls);
    assert_true(st.generic_calls > 0);
    runtime_compile_wait(actx);
    dop_context_destroy(actx);
    g_ctx = saved;
    assert_int_equal(fails, 0);
}

int main(void)
{
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE; /* test the kernels dispatch chooses */
    dop_status st = dop_context_create(&opt, &g_ctx);
    if (st == DOP_ERR_UNAVAILABLE) {
        printf("skipped: no usable GPU (%s)\n", dop_context_error(NULL));
        return 77;
    }
    if (st != DOP_OK) {
        printf("dop_context_create: %s: %s\n", dop_status_string(st), dop_context_error(NULL));
        return 1;
    }
    dop_device_info in;
    dop_context_device_info(g_ctx, &in);
    printf("device: %s (sm_%d%d, %d SMs), driver %d, NVRTC %d.%d\n", in.name, in.cc_major, in.cc_minor, in.sm_count,
           in.driver_version, in.nvrtc_major, in.nvrtc_minor);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mma_schedules),
        cmocka_unit_test(test_staged_persistent_schedules),
        cmocka_unit_test(test_cluster_schedules),
        cmocka_unit_test(test_regressions),
        cmocka_unit_test(test_generic_kernel),
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_ranks_and_sizes),
        cmocka_unit_test(test_slices),
        cmocka_unit_test(test_shrink_expand_and_weights),
        cmocka_unit_test(test_forced_schedules),
    };
    /* DOP_TEST_FILTER runs the tests whose names match (a cmocka glob), so the groups
     * can run as parallel processes sharing one cache */
    const char *filter = getenv("DOP_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    dop_context_stats stats;
    dop_context_get_stats(g_ctx, &stats);
    printf("GPU kernel cases: %d run, %d failed; worst normalized error f16 %.2e, bf16 %.2e; %llu modules compiled "
           "in %.1f s\n",
           g_total, g_failed, g_worst[0], g_worst[1], (unsigned long long)stats.kernels_compiled,
           stats.compile_seconds);
    dop_context_destroy(g_ctx);
    return rc;
}
