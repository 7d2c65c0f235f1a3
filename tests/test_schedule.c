/*
 * test_schedule.c -- the schedule space (search/search_schedule.c) and the
 * dispatch heuristic (runtime_pick_schedule in runtime/runtime_lora.c).
 *
 * - search_schedule_legal accepts typical schedules and the corners of the
 *   space, and rejects every illegal field on its own, with a reason that
 *   names the rule;
 * - search_schedule_smem follows its formula, and the 48 KiB limit is exact;
 * - search_schedule_module_key normalises split_k only;
 * - search_schedule_format's text;
 * - runtime_pick_schedule returns a legal schedule whose vector width divides
 *   d_in for every op, num_rows 1..4096, d_in of the model shapes (and odd
 *   ones), max_rank 1..128 and every workload layout.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_check.h"
#include "runtime_internal.h"
#include "search_schedule.h"

static search_schedule make(unsigned sketch, unsigned rows, unsigned warps, unsigned vec, unsigned kc,
                            unsigned split_k, unsigned cols)
{
    return search_schedule_make(sketch, rows, warps, vec, kc, split_k, cols, 0, 1, 0);
}

static search_schedule typical_split(void)
{
    return make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 256, 4, 128);
}

static void expect_legal(const search_schedule *s, int max_rank)
{
    char why[256] = "";
    if (!search_schedule_legal(s, max_rank, why, sizeof why)) {
        char txt[128];
        search_schedule_format(s, txt, sizeof txt);
        print_error("%s (max_rank %d) rejected: %s\n", txt, max_rank, why);
        fail();
    }
}

/* s is written as want, and want reads back as s. */
static void expect_text(const search_schedule *s, const char *want)
{
    char buf[160];
    search_schedule back;
    search_schedule_format(s, buf, sizeof buf);
    assert_string_equal(buf, want);
    assert_int_equal(search_schedule_parse(buf, &back), 0);
    assert_memory_equal(&back, s, sizeof *s);
}

/* Rejected, with a reason that contains `word`. */
static void expect_illegal(const search_schedule *s, int max_rank, const char *word)
{
    char why[256];
    memset(why, 0, sizeof why);
    char txt[128];
    search_schedule_format(s, txt, sizeof txt);
    if (search_schedule_legal(s, max_rank, why, sizeof why)) {
        print_error("%s (max_rank %d) accepted; it breaks the rule on %s\n", txt, max_rank, word);
        fail();
    }
    if (why[0] == '\0') {
        print_error("%s (max_rank %d) rejected without a reason\n", txt, max_rank);
        fail();
    }
    if (!strstr(why, word)) {
        print_error("%s (max_rank %d): reason \"%s\" does not mention \"%s\"\n", txt, max_rank, why, word);
        fail();
    }
    /* without a buffer: same answer, nothing written */
    assert_false(search_schedule_legal(s, max_rank, NULL, 0));
    assert_false(search_schedule_legal(s, max_rank, NULL, 100));
}

static void test_legal_typical(void **state)
{
    (void)state;
    search_schedule s = typical_split();
    expect_legal(&s, 16);
    expect_legal(&s, 1);
    expect_legal(&s, 128);
    s = make(SEARCH_SKETCH_FUSED, 1, 8, 8, 512, 1, 256); /* what dispatch picks for decode */
    expect_legal(&s, 16);
    expect_legal(&s, 128);
    s = make(SEARCH_SKETCH_FUSED, 4, 8, 8, 512, 1, 256);
    expect_legal(&s, 128);
    s = make(SEARCH_SKETCH_SPLIT, 16, 4, 8, 256, 1, 128);
    expect_legal(&s, 128);
    /* corners */
    s = make(SEARCH_SKETCH_SPLIT, 1, 1, 1, 32, 1, 1); /* smallest of everything */
    expect_legal(&s, 1);
    s = make(SEARCH_SKETCH_SPLIT, 32, 16, 8, 256, 64, 4096); /* largest rows, warps, split, cols */
    expect_legal(&s, 128);
    s = make(SEARCH_SKETCH_SPLIT, 1, 4, 8, 4096, 2, 64); /* largest K step: 16 loads of 8 per lane */
    expect_legal(&s, 128);
    s = make(SEARCH_SKETCH_SPLIT, 1, 4, 1, 512, 2, 64); /* ... and of single elements */
    expect_legal(&s, 128);
    s = make(SEARCH_SKETCH_SPLIT, 2, 2, 2, 64, 3, 100); /* split_k and cols need not be powers of 2 */
    expect_legal(&s, 7);
    s = make(SEARCH_SKETCH_FUSED, 32, 8, 4, 128, 1, 32);
    expect_legal(&s, 64);
    for (unsigned rows = 1; rows <= 32; rows *= 2)
        for (unsigned warps = 1; warps <= 16; warps *= 2)
            for (unsigned vec = 1; vec <= 8; vec *= 2) {
                s = make(SEARCH_SKETCH_SPLIT, rows, warps, vec, 32 * vec, 1, 64);
                expect_legal(&s, 16);
                s.sketch = SEARCH_SKETCH_FUSED;
                expect_legal(&s, 16);
            }
}

static void test_illegal_fields(void **state)
{
    (void)state;
    search_schedule s;

    s = typical_split();
    s.version = 0;
    expect_illegal(&s, 16, "version");
    s.version = SEARCH_SCHEDULE_VERSION + 1;
    expect_illegal(&s, 16, "version");

    s = typical_split();
    s.sketch = 0;
    expect_illegal(&s, 16, "sketch");
    s.sketch = 5;
    expect_illegal(&s, 16, "sketch");
    s.sketch = SEARCH_SKETCH_CLUSTER; /* clusters of split_k CTAs, at most SEARCH_MAX_CLUSTER */
    expect_legal(&s, 16);
    s.split_k = SEARCH_MAX_CLUSTER;
    expect_legal(&s, 16);
    s.split_k = SEARCH_MAX_CLUSTER + 1;
    expect_illegal(&s, 16, "cluster size");
    s.split_k = 4;
    s.persist = 1;
    expect_illegal(&s, 16, "persistent");
    s.persist = 0;
    s.rows = 32; /* two fp32 intermediates: 32 x 128 x 4 x 2 = 32 KiB, with the row tile under 48 KiB */
    expect_legal(&s, 128);
    s.rows = 8;
    {
        search_schedule sp = s;
        sp.sketch = SEARCH_SKETCH_SPLIT;
        assert_int_equal(search_schedule_smem(&s, 16) - search_schedule_smem(&sp, 16), 8 * 16 * 4);
    }
    s.sketch = SEARCH_SKETCH_FUSED_COUNTER; /* split-K partials combined in one launch */
    expect_legal(&s, 16);

    const unsigned bad_rows[] = {0, 3, 6, 12, 24, 33, 64, 128, 255};
    for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; ++i) {
        s = typical_split();
        s.rows = (uint8_t)bad_rows[i];
        expect_illegal(&s, 16, "rows");
    }

    const unsigned bad_warps[] = {0, 3, 5, 12, 32, 64};
    for (size_t i = 0; i < sizeof bad_warps / sizeof bad_warps[0]; ++i) {
        s = typical_split();
        s.warps = (uint8_t)bad_warps[i];
        expect_illegal(&s, 16, "warps");
    }

    const unsigned bad_vec[] = {0, 3, 6, 16, 32};
    for (size_t i = 0; i < sizeof bad_vec / sizeof bad_vec[0]; ++i) {
        s = typical_split();
        s.vec = (uint8_t)bad_vec[i];
        s.kc = 512; /* a multiple of 32 * vec for every vec of the list that is a power of two */
        expect_illegal(&s, 16, "vector");
    }

    /* kc: zero, not a multiple of 32 * vec, above 4096 */
    const struct {
        unsigned vec, kc;
    } bad_kc[] = {{1, 0}, {8, 0}, {1, 16}, {1, 48}, {2, 32}, {2, 96}, {4, 64}, {4, 192}, {8, 128},
                  {8, 384}, {8, 300}, {1, 544}, {2, 1088}, {4, 2176}, {1, 4128}, {8, 4352}, {1, 65504}};
    for (size_t i = 0; i < sizeof bad_kc / sizeof bad_kc[0]; ++i) {
        s = typical_split();
        s.rows = 1;
        s.vec = (uint8_t)bad_kc[i].vec;
        s.kc = (uint16_t)bad_kc[i].kc;
        expect_illegal(&s, 16, "K step");
    }

    s = typical_split();
    s.cols = 0;
    expect_illegal(&s, 16, "columns");
    s.cols = 4097;
    expect_illegal(&s, 16, "columns");

    s = typical_split();
    s.split_k = 0;
    expect_illegal(&s, 16, "split-K");
    s.split_k = 65;
    expect_illegal(&s, 16, "split-K");
    s.split_k = 255;
    expect_illegal(&s, 16, "split-K");

    s = make(SEARCH_SKETCH_FUSED, 1, 8, 8, 512, 2, 256);
    expect_illegal(&s, 16, "fused");
    s.split_k = 64;
    expect_illegal(&s, 16, "fused");
    s.sketch = SEARCH_SKETCH_SPLIT; /* the same split_k is fine for the split sketch */
    expect_legal(&s, 16);

    s = typical_split();
    s.seg = 1; /* row tiles aligned to segments: tensor-core schedules only */
    expect_illegal(&s, 16, "mma");
    s.seg = 0x80;
    expect_illegal(&s, 16, "seg is 128");

    /* tensor cores: 16-row tiles, K steps of 16, column tiles of 8, vec 8 */
    s = make(SEARCH_SKETCH_SPLIT, 16, 8, 8, 64, 4, 256);
    s.mma = 1;
    expect_legal(&s, 16);
    expect_legal(&s, 128);
    s.sketch = SEARCH_SKETCH_FUSED;
    s.split_k = 1;
    expect_legal(&s, 64);
    s.seg = 1; /* the segment-aligned variant of a tensor-core schedule */
    expect_legal(&s, 64);
    s.seg = 0;
    s.mma = 2;
    expect_illegal(&s, 16, "mma");
    s.mma = 1;
    s.rows = 8;
    expect_illegal(&s, 16, "16 rows");
    s.rows = 16;
    s.kc = 136;
    expect_illegal(&s, 16, "K step");
    s.kc = 24;
    expect_illegal(&s, 16, "K step");
    s.kc = 64;
    s.cols = 100;
    expect_illegal(&s, 16, "tiles of 8");
    s.cols = 256;
    s.vec = 4;
    expect_illegal(&s, 16, "vec");

    /* stages: 1..4, more than 1 only with tensor cores; the ring counts against 48 KiB */
    s = typical_split();
    s.stages = 0;
    expect_illegal(&s, 16, "stages");
    s.stages = 2;
    expect_illegal(&s, 16, "mma");
    s = make(SEARCH_SKETCH_SPLIT, 16, 8, 8, 64, 4, 256);
    s.mma = 1;
    for (unsigned st = 1; st <= 4; ++st) {
        s.stages = (uint8_t)st;
        expect_legal(&s, 16);
    }
    s.stages = 5;
    expect_illegal(&s, 16, "stages");
    s.stages = 2;
    s.kc = 128;
    expect_legal(&s, 64);              /* 2 x (16 + 64) x 136 x 2 = 43520 bytes of ring */
    expect_illegal(&s, 128, "shared"); /* 2 x (16 + 128) x 136 x 2 = 78336 */
    s.stages = 3;
    expect_illegal(&s, 64, "shared");

    /* persist: 0 or 1, any sketch, with or without mma */
    s = typical_split();
    s.persist = 1;
    expect_legal(&s, 16);
    s.sketch = SEARCH_SKETCH_FUSED_COUNTER;
    expect_legal(&s, 16);
    s.persist = 2;
    expect_illegal(&s, 16, "persist");

    s = typical_split();
    expect_illegal(&s, 0, "max_rank");
    expect_illegal(&s, 129, "max_rank");
    expect_illegal(&s, -1, "max_rank");
    expect_illegal(&s, 1 << 20, "max_rank");

    /* shared memory: the largest tile of the space fits (17.5 KiB), see test_smem */

    /* NULL schedule */
    char why[128] = "";
    assert_false(search_schedule_legal(NULL, 16, why, sizeof why));
    assert_true(why[0] != '\0');
}

/* The reason is truncated to the buffer and always terminated. */
static void test_reason_truncated(void **state)
{
    (void)state;
    search_schedule s = typical_split();
    s.rows = 3;
    char why[8];
    memset(why, 'X', sizeof why);
    assert_false(search_schedule_legal(&s, 16, why, sizeof why));
    assert_int_equal(strlen(why), sizeof why - 1);
    memset(why, 'X', sizeof why);
    assert_false(search_schedule_legal(&s, 16, why, 1));
    assert_int_equal(why[0], '\0');
    assert_int_equal(why[1], 'X');
}

static void test_smem(void **state)
{
    (void)state;
    /* row grouping (36 bytes a row + 8) + the adapter table (SEARCH_TILE_TABLE entries
     * of 24 bytes + 8) + fp32 intermediate; no staging of x */
    const size_t table = SEARCH_TILE_TABLE * 24 + 8;
    search_schedule s = make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 256, 1, 128);
    assert_int_equal(search_schedule_smem(&s, 16), 8 * 36 + 8 + table + 8 * 16 * 4);
    s = make(SEARCH_SKETCH_FUSED, 1, 1, 1, 32, 1, 1);
    assert_int_equal(search_schedule_smem(&s, 1), 36 + 8 + table + 4);
    /* the largest tile of the space: 32 rows at rank 128 */
    s = make(SEARCH_SKETCH_SPLIT, 32, 16, 8, 4096, 1, 4096);
    assert_int_equal(search_schedule_smem(&s, 128), 32 * 36 + 8 + table + 32 * 128 * 4);
    expect_legal(&s, 128);
    /* the cp.async ring: stages x (16 rows of x + ranks rounded up to 8 of A) x (kc + 8) x 2 bytes + 16,
     * and no adapter table */
    s = make(SEARCH_SKETCH_SPLIT, 16, 8, 8, 64, 4, 128);
    s.mma = 1;
    size_t plain = 16 * 36 + 8 + 16 * 40 * 4;
    assert_int_equal(search_schedule_smem(&s, 40), plain + table); /* stages 1: fragments from global memory */
    s.stages = 3;
    assert_int_equal(search_schedule_smem(&s, 40), plain + 3 * (16 + 40) * 72 * 2 + 16);
    assert_int_equal(search_schedule_smem(&s, 33), 16 * 36 + 8 + 16 * 33 * 4 + 3 * (16 + 40) * 72 * 2 + 16);
    s.persist = 1; /* no shared memory of its own */
    assert_int_equal(search_schedule_smem(&s, 40), plain + 3 * (16 + 40) * 72 * 2 + 16);
    s.stages = 1; /* persistent: no adapter table either */
    assert_int_equal(search_schedule_smem(&s, 40), plain);
    /* every legal schedule is within the limit */
    for (unsigned rows = 1; rows <= 32; rows *= 2)
        for (unsigned vec = 1; vec <= 8; vec *= 2)
            for (unsigned kc = 32 * vec; kc <= 512 * vec; kc += 32 * vec)
                for (int r = 1; r <= 128; r += 9) {
                    s = make(SEARCH_SKETCH_SPLIT, rows, 4, vec, kc, 1, 128);
                    assert_true(search_schedule_legal(&s, r, NULL, 0));
                    assert_true(search_schedule_smem(&s, r) <= SEARCH_STATIC_SMEM_LIMIT);
                }
}

static void test_module_key(void **state)
{
    (void)state;
    search_schedule split = make(SEARCH_SKETCH_SPLIT, 4, 8, 8, 512, 7, 256);
    search_schedule fused = make(SEARCH_SKETCH_FUSED, 4, 8, 8, 512, 1, 256);
    search_schedule ks = search_schedule_module_key(&split), kf = search_schedule_module_key(&fused);
    /* the sketch decides which entry points a module holds: no sharing across sketches */
    assert_memory_not_equal(&ks, &kf, sizeof ks);
    assert_int_equal(kf.sketch, SEARCH_SKETCH_FUSED);
    assert_int_equal(ks.sketch, SEARCH_SKETCH_SPLIT);
    assert_int_equal(ks.split_k, 1);
    assert_int_equal(ks.version, SEARCH_SCHEDULE_VERSION);
    assert_int_equal(ks.rows, 4);
    assert_int_equal(ks.warps, 8);
    assert_int_equal(ks.vec, 8);
    assert_int_equal(ks.kc, 512);
    assert_int_equal(ks.cols, 256);
    assert_int_equal(ks.seg, 0);
    assert_int_equal(ks.stages, 1);
    assert_int_equal(ks.persist, 0);
    expect_legal(&ks, 16);
    /* idempotent */
    search_schedule kk = search_schedule_module_key(&ks);
    assert_memory_equal(&kk, &ks, sizeof ks);
    /* the input is not modified */
    assert_int_equal(split.split_k, 7);
    assert_int_equal(fused.sketch, SEARCH_SKETCH_FUSED);
    /* every field that shapes the source keeps keys apart */
    search_schedule v[7];
    for (int i = 0; i < 7; ++i)
        v[i] = split;
    v[0].rows = 8;
    v[1].warps = 4;
    v[2].vec = 4;
    v[3].kc = 256;
    v[4].cols = 128;
    v[5].persist = 1; /* the persistent loop is compiled in (DOP_PERSIST) */
    v[6] = make(SEARCH_SKETCH_SPLIT, 16, 8, 8, 64, 1, 256);
    v[6].mma = 1;
    search_schedule m1 = search_schedule_module_key(&v[6]);
    v[6].stages = 3; /* the ring is compiled in (DOP_STAGES) */
    search_schedule m3 = search_schedule_module_key(&v[6]);
    assert_memory_not_equal(&m1, &m3, sizeof m1);
    assert_int_equal(m3.stages, 3);
    for (int i = 0; i < 7; ++i) {
        search_schedule k = search_schedule_module_key(&v[i]);
        assert_memory_not_equal(&k, &ks, sizeof ks);
    }
}

static void test_format(void **state)
{
    (void)state;
    char buf[128];
    search_schedule s = make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 512, 4, 256);
    int n = search_schedule_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "split rows=8 warps=4 vec=8 kc=512 splitk=4 cols=256");
    assert_int_equal(n, (int)strlen(buf));
    s = make(SEARCH_SKETCH_FUSED, 1, 16, 1, 4096, 1, 4096);
    search_schedule_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "fused rows=1 warps=16 vec=1 kc=4096 splitk=1 cols=4096");
    s.sketch = 9;
    search_schedule_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "? rows=1 warps=16 vec=1 kc=4096 splitk=1 cols=4096");
    /* truncation: snprintf semantics */
    s = make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 512, 4, 256);
    char small[6];
    n = search_schedule_format(&s, small, sizeof small);
    assert_int_equal(n, (int)strlen("split rows=8 warps=4 vec=8 kc=512 splitk=4 cols=256"));
    assert_string_equal(small, "split");
    assert_int_equal(search_schedule_format(&s, NULL, 0), n);

    /* stages and persist: written when not 1 and 0; parsed with or without them (version-1 text) */
    s = make(SEARCH_SKETCH_FUSED_COUNTER, 16, 8, 8, 64, 8, 256);
    s.mma = 1;
    s.stages = 3;
    s.persist = 1;
    expect_text(&s, "counter rows=16 warps=8 vec=8 kc=64 splitk=8 cols=256 mma stages=3 persist=1");
    search_schedule back;
    s.persist = 0;
    expect_text(&s, "counter rows=16 warps=8 vec=8 kc=64 splitk=8 cols=256 mma stages=3");
    s = make(SEARCH_SKETCH_SPLIT, 2, 8, 8, 1024, 4, 256);
    s.persist = 1;
    expect_text(&s, "split rows=2 warps=8 vec=8 kc=1024 splitk=4 cols=256 persist=1");
    s = make(SEARCH_SKETCH_CLUSTER, 16, 8, 8, 64, 4, 256);
    s.mma = 1;
    s.stages = 2;
    s.seg = 1;
    expect_text(&s, "cluster rows=16 warps=8 vec=8 kc=64 splitk=4 cols=256 mma stages=2 seg");
    s = make(SEARCH_SKETCH_CLUSTER, 1, 8, 8, 512, 16, 256);
    expect_text(&s, "cluster rows=1 warps=8 vec=8 kc=512 splitk=16 cols=256");
    /* old text: stages 1, persist 0, version 2 */
    assert_int_equal(search_schedule_parse("split rows=16 warps=8 vec=8 kc=64 splitk=4 cols=256 mma", &back), 0);
    assert_int_equal(back.version, SEARCH_SCHEDULE_VERSION);
    assert_int_equal(back.stages, 1);
    assert_int_equal(back.persist, 0);
    assert_int_equal(back.mma, 1);
    assert_true(search_schedule_legal(&back, 16, NULL, 0));
    /* explicit defaults read too; wrong order, garbage and unknown words do not */
    assert_int_equal(search_schedule_parse("split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 stages=1 persist=0",
                                           &back), 0);
    assert_int_equal(back.stages, 1);
    static const char *const bad[] = {
        "split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 persist=1 stages=2",
        "split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 stages=2 mma",
        "split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 stages=",
        "split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 stages=x",
        "split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 stages=999",
        "split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 persist=1 x",
        "split rows=1 warps=8 vec=8 kc=256 splitk=1 cols=256 mmax",
        "split rows=16 warps=8 vec=8 kc=64 splitk=1 cols=256 seg mma",
        "split rows=16 warps=8 vec=8 kc=64 splitk=1 cols=256 mma segx",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i)
        if (search_schedule_parse(bad[i], &back) != -1)
            fail_msg("parsed \"%s\"", bad[i]);
}

/* ---- runtime_pick_schedule ---------------------------------------------------- */

enum { MAX_ROWS = 4096, NUM_LAYOUTS = RUNTIME_WL_COUNT + 2 };

/* Summaries of every workload layout, plus "no row has an adapter" and
 * "alternating adapters" (groups of one row), for every num_rows. */
static runtime_layout_summary *make_summaries(void)
{
    runtime_layout_summary *sums = calloc((size_t)(MAX_ROWS + 1) * NUM_LAYOUTS, sizeof *sums);
    int32_t *rows = malloc(MAX_ROWS * sizeof *rows);
    assert_non_null(sums);
    assert_non_null(rows);
    for (int n = 1; n <= MAX_ROWS; ++n) {
        uint64_t rng = (uint64_t)n * 7919u;
        for (int w = 0; w < RUNTIME_WL_COUNT; ++w) {
            runtime_workload_rows((runtime_workload)w, n, &rng, rows);
            runtime_summarize_rows(rows, n, &sums[(size_t)n * NUM_LAYOUTS + (size_t)w]);
        }
        for (int i = 0; i < n; ++i)
            rows[i] = -1;
        runtime_summarize_rows(rows, n, &sums[(size_t)n * NUM_LAYOUTS + RUNTIME_WL_COUNT]);
        for (int i = 0; i < n; ++i)
            rows[i] = i % 2;
        runtime_summarize_rows(rows, n, &sums[(size_t)n * NUM_LAYOUTS + RUNTIME_WL_COUNT + 1]);
    }
    free(rows);
    return sums;
}

static long long g_checked;

static void check_pick(const dop_device_info *dev, runtime_op op, int num_rows, int d_in, int num_slices,
                       int max_rank, const runtime_layout_summary *sum)
{
    search_schedule s;
    memset(&s, 0xa5, sizeof s);
    runtime_pick_schedule(dev, op, num_rows, d_in, num_slices, max_rank, sum, &s);
    char why[256];
    bool ok = search_schedule_legal(&s, max_rank, why, sizeof why);
    bool vec_ok = s.vec != 0 && d_in % s.vec == 0;
    bool sketch_ok = op == RUNTIME_OP_APPLY || s.sketch == SEARCH_SKETCH_SPLIT;
    bool split_ok = op != RUNTIME_OP_EXPAND || s.split_k == 1;
    /* no K split without work: each of split_k CTAs gets at least one warp-wide load of K */
    bool k_ok = (int)s.split_k <= (d_in + 32 * s.vec - 1) / (32 * s.vec);
    if (!ok || !vec_ok || !sketch_ok || !split_ok || !k_ok) {
        char txt[128];
        search_schedule_format(&s, txt, sizeof txt);
        print_error("op %d num_rows %d d_in %d slices %d max_rank %d (rows with adapter %d, groups %d, longest %d): "
                    "picked %s: %s%s%s%s%s\n",
                    (int)op, num_rows, d_in, num_slices, max_rank, sum->rows_with_adapter, sum->groups, sum->longest,
                    txt, ok ? "" : why, vec_ok ? "" : " vec does not divide d_in;",
                    sketch_ok ? "" : " fused sketch for a single half;", split_ok ? "" : " split-K for expand;",
                    k_ok ? "" : " more K splits than K tiles;");
        fail();
    }
    ++g_checked;
}

static void test_pick_sweep(void **state)
{
    (void)state;
    runtime_layout_summary *sums = make_summaries();
    const int d_ins[] = {100, 1024, 3424, 4096, 11008, 14336};
    dop_device_info h100;
    memset(&h100, 0, sizeof h100);
    h100.sm_count = 132;
    h100.cc_major = 9;
    g_checked = 0;
    /* every num_rows, layout, d_in and max_rank */
    for (int op = RUNTIME_OP_APPLY; op <= RUNTIME_OP_EXPAND; ++op)
        for (int n = 1; n <= MAX_ROWS; ++n)
            for (int l = 0; l < NUM_LAYOUTS; ++l)
                for (size_t d = 0; d < sizeof d_ins / sizeof d_ins[0]; ++d)
                    for (int r = 1; r <= 128; ++r)
                        check_pick(&h100, (runtime_op)op, n, d_ins[d], 1, r, &sums[(size_t)n * NUM_LAYOUTS + l]);
    print_message("checked %lld picks\n", g_checked);
    free(sums);
}

/* Other devices (NULL: the default), slice counts, and d_in with every
 * remainder modulo 8. */
static void test_pick_other(void **state)
{
    (void)state;
    runtime_layout_summary *sums = make_summaries();
    dop_device_info devs[3];
    memset(devs, 0, sizeof devs);
    devs[0].sm_count = 1;
    devs[1].sm_count = 108;
    devs[2].sm_count = 1000;
    const dop_device_info *dev_list[] = {NULL, &devs[0], &devs[1], &devs[2]};
    const int d_ins[] = {1, 2, 3, 4, 5, 6, 7, 8, 31, 33, 255, 257, 1000, 1023, 1026, 4100, 65535, 1 << 20};
    const int nrows[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 33, 100, 256, 1000, 4096};
    const int ranks[] = {1, 2, 8, 16, 33, 64, 100, 127, 128};
    g_checked = 0;
    for (size_t dv = 0; dv < sizeof dev_list / sizeof dev_list[0]; ++dv)
        for (int op = RUNTIME_OP_APPLY; op <= RUNTIME_OP_EXPAND; ++op)
            for (size_t ni = 0; ni < sizeof nrows / sizeof nrows[0]; ++ni)
                for (int l = 0; l < NUM_LAYOUTS; ++l)
                    for (size_t d = 0; d < sizeof d_ins / sizeof d_ins[0]; ++d)
                        for (int slices = 1; slices <= 8; slices *= 2)
                            for (size_t ri = 0; ri < sizeof ranks / sizeof ranks[0]; ++ri)
                                check_pick(dev_list[dv], (runtime_op)op, nrows[ni], d_ins[d], slices, ranks[ri],
                                           &sums[(size_t)nrows[ni] * NUM_LAYOUTS + l]);
    print_message("checked %lld picks\n", g_checked);
    free(sums);
}

/* What the heuristic is documented to do: the fused sketch for tiny apply
 * batches, rows per CTA covering the batch, the widest vector d_in allows. */
static void test_pick_shape(void **state)
{
    (void)state;
    runtime_layout_summary sum = {1, 1, 1, 1};
    search_schedule s;
    for (int n = 1; n <= 8; ++n) { /* decode batches up to 8 at rank <= 16: one fused launch */
        sum.rows_with_adapter = sum.longest = n;
        runtime_pick_schedule(NULL, RUNTIME_OP_APPLY, n, 4096, 1, 16, &sum, &s);
        assert_int_equal(s.sketch, SEARCH_SKETCH_FUSED);
        assert_int_equal(s.split_k, 1);
        assert_int_equal(s.vec, 8);
    }
    sum.rows_with_adapter = sum.longest = 9;
    runtime_pick_schedule(NULL, RUNTIME_OP_APPLY, 9, 4096, 1, 16, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_SPLIT);
    sum.rows_with_adapter = sum.longest = 4;
    runtime_pick_schedule(NULL, RUNTIME_OP_APPLY, 4, 4096, 1, 64, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_SPLIT); /* rank 64: A too large to re-read per column tile */
    sum.rows_with_adapter = sum.longest = 5;
    runtime_pick_schedule(NULL, RUNTIME_OP_SHRINK, 1, 4096, 1, 16, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_SPLIT);
    runtime_pick_schedule(NULL, RUNTIME_OP_EXPAND, 1, 4096, 1, 16, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_SPLIT);
    assert_int_equal(s.split_k, 1);
    /* sm_90+: decode batches of apply take one launch of clusters; shrink, expand and
     * larger batches do not, nor does an sm_80 device */
    dop_device_info hopper, ampere;
    memset(&hopper, 0, sizeof hopper);
    hopper.sm_count = 132;
    hopper.cc_major = 9;
    ampere = hopper;
    ampere.cc_major = 8;
    sum.rows_with_adapter = sum.longest = 1;
    runtime_pick_schedule(&hopper, RUNTIME_OP_APPLY, 1, 4096, 1, 16, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_CLUSTER);
    assert_int_equal(s.split_k, 16); /* 16 CTAs of 256 elements: one 8-wide load per lane */
    assert_int_equal(s.kc, 256);
    runtime_pick_schedule(&hopper, RUNTIME_OP_APPLY, 16, 11008, 3, 64, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_CLUSTER);
    assert_int_equal(s.split_k, 15); /* 15 CTAs of 768 elements ... */
    assert_int_equal(s.kc, 1024);    /* ... all 3 loads of a lane in flight */
    runtime_pick_schedule(&hopper, RUNTIME_OP_APPLY, 17, 4096, 1, 16, &sum, &s);
    assert_int_not_equal(s.sketch, SEARCH_SKETCH_CLUSTER);
    runtime_pick_schedule(&hopper, RUNTIME_OP_SHRINK, 1, 4096, 1, 16, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_SPLIT);
    runtime_pick_schedule(&ampere, RUNTIME_OP_APPLY, 1, 4096, 1, 16, &sum, &s);
    assert_int_equal(s.sketch, SEARCH_SKETCH_FUSED);
    const struct {
        int d_in, vec;
    } v[] = {{4096, 8}, {3424, 8}, {100, 4}, {4098, 2}, {4097, 1}, {14336, 8}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; ++i) {
        runtime_pick_schedule(NULL, RUNTIME_OP_SHRINK, 64, v[i].d_in, 1, 16, &sum, &s);
        assert_int_equal(s.vec, v[i].vec);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legal_typical),
        cmocka_unit_test(test_illegal_fields),
        cmocka_unit_test(test_reason_truncated),
        cmocka_unit_test(test_smem),
        cmocka_unit_test(test_module_key),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_pick_shape),
        cmocka_unit_test(test_pick_sweep),
        cmocka_unit_test(test_pick_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
