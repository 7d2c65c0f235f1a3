/*
 * test_workload.c -- the batch layouts of the workload grid
 * (runtime_workload_rows, ../shared/WORKLOADS.md) and the layout summary
 * dispatch reads (runtime_summarize_rows).
 *
 * - the segment counts of WORKLOADS.md's table: uniform and skewed for its
 *   row counts, distinct n -> n, identical -> 1;
 * - the sorted layouts for every num_rows 1..4096: rows fully assigned, one
 *   run per slot in slot order, the returned count equal to the runs;
 *   uniform shares differ by at most one with the remainder on the first
 *   adapters, skewed lengths do not grow;
 * - mixed: about 25% of rows on -1, rows shuffled, every slot in
 *   -1..slots-1, the same adapters as skewed otherwise, deterministic in the
 *   seed;
 * - runtime_summarize_rows on hand-made arrays.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_check.h"
#include "runtime_internal.h"

enum { MAX_ROWS = 4096 };

/* Number of maximal runs of one value. */
static int count_runs(const int32_t *rows, int n)
{
    int runs = 0;
    for (int i = 0; i < n; ++i)
        if (i == 0 || rows[i] != rows[i - 1])
            ++runs;
    return runs;
}

static int32_t *rows_of(runtime_workload w, int n, uint64_t seed, int *slots)
{
    int32_t *rows = malloc((size_t)(n + 1) * sizeof *rows);
    assert_non_null(rows);
    for (int i = 0; i <= n; ++i)
        rows[i] = -77; /* poison, and a guard past the end */
    uint64_t rng = seed;
    *slots = runtime_workload_rows(w, n, &rng, rows);
    assert_int_equal(rows[n], -77);
    return rows;
}

static void check_table(runtime_workload w, const int *nrows, const int *want, int count)
{
    int bad = 0;
    for (int i = 0; i < count; ++i) {
        int slots;
        int32_t *rows = rows_of(w, nrows[i], 1, &slots);
        int runs = count_runs(rows, nrows[i]);
        if (slots != want[i] || runs != want[i]) {
            print_error("%s, %d rows: %d slots returned, %d segments; WORKLOADS.md says %d\n",
                        runtime_workload_name(w), nrows[i], slots, runs, want[i]);
            ++bad;
        }
        free(rows);
    }
    assert_int_equal(bad, 0);
}

static void test_table_uniform(void **state)
{
    (void)state;
    const int n[] = {1, 8, 32, 64, 128, 256, 1024, 4096};
    const int want[] = {1, 3, 6, 8, 12, 16, 32, 64};
    check_table(RUNTIME_WL_UNIFORM, n, want, 8);
}

static void test_table_skewed(void **state)
{
    (void)state;
    const int n[] = {1, 8, 32, 64, 128, 256};
    const int want[] = {1, 5, 12, 21, 31, 53};
    check_table(RUNTIME_WL_SKEWED, n, want, 6);
}

static void test_table_distinct_identical(void **state)
{
    (void)state;
    const int n[] = {1, 2, 8, 32, 64, 128, 256, 1024, 4096};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; ++i) {
        int slots;
        int32_t *rows = rows_of(RUNTIME_WL_DISTINCT, n[i], 1, &slots);
        assert_int_equal(slots, n[i]);
        for (int r = 0; r < n[i]; ++r)
            assert_int_equal(rows[r], r);
        free(rows);
        rows = rows_of(RUNTIME_WL_IDENTICAL, n[i], 1, &slots);
        assert_int_equal(slots, 1);
        for (int r = 0; r < n[i]; ++r)
            assert_int_equal(rows[r], 0);
        free(rows);
    }
}

/* The skewed lengths for 8 rows: H = sum_{i<=8} i^-1.5 = 1.927, lengths
 * round(8 / (i^1.5 H)) at least 1 = 4, 1, 1, 1, then the last row. */
static void test_skewed_lengths(void **state)
{
    (void)state;
    int slots;
    int32_t *rows = rows_of(RUNTIME_WL_SKEWED, 8, 1, &slots);
    const int32_t want[] = {0, 0, 0, 0, 1, 2, 3, 4};
    assert_memory_equal(rows, want, sizeof want);
    free(rows);
    /* the most popular adapter gets about 1/zeta(1.5) = 38% of a large batch */
    rows = rows_of(RUNTIME_WL_SKEWED, 4096, 1, &slots);
    int first = 0;
    while (first < 4096 && rows[first] == 0)
        ++first;
    assert_true(first > 4096 * 0.36 && first < 4096 * 0.42);
    free(rows);
}

/* Every sorted layout, every num_rows. */
static void test_sorted_layouts_all_sizes(void **state)
{
    (void)state;
    const runtime_workload ws[] = {RUNTIME_WL_DISTINCT, RUNTIME_WL_UNIFORM, RUNTIME_WL_SKEWED, RUNTIME_WL_IDENTICAL};
    int32_t *rows = malloc((MAX_ROWS + 1) * sizeof *rows);
    int *len = malloc((MAX_ROWS + 1) * sizeof *len);
    assert_non_null(rows);
    assert_non_null(len);
    for (size_t wi = 0; wi < sizeof ws / sizeof ws[0]; ++wi) {
        runtime_workload w = ws[wi];
        for (int n = 1; n <= MAX_ROWS; ++n) {
            for (int i = 0; i <= n; ++i)
                rows[i] = -77;
            uint64_t rng = 5;
            int slots = runtime_workload_rows(w, n, &rng, rows);
            assert_int_equal(rows[n], -77);
            assert_true(slots >= 1 && slots <= n);
            /* slots 0, 1, ... in order, one run each, every row assigned */
            memset(len, 0, (size_t)(slots + 1) * sizeof *len);
            for (int i = 0; i < n; ++i) {
                if (rows[i] < 0 || rows[i] >= slots || (i > 0 && rows[i] != rows[i - 1] && rows[i] != rows[i - 1] + 1))
                    fail_msg("%s, %d rows: row %d has slot %d (previous %d, %d slots)", runtime_workload_name(w), n,
                             i, rows[i], i ? rows[i - 1] : -1, slots);
                len[rows[i]]++;
            }
            assert_int_equal(rows[0], 0);
            assert_int_equal(rows[n - 1], slots - 1);
            assert_int_equal(count_runs(rows, n), slots);
            for (int s = 0; s < slots; ++s)
                assert_true(len[s] >= 1);
            if (w == RUNTIME_WL_UNIFORM) {
                int k = (int)ceil(sqrt((double)n));
                assert_int_equal(slots, k);
                for (int s = 0; s < slots; ++s) /* equal shares, the remainder on the first */
                    assert_int_equal(len[s], n / k + (s < n % k));
            }
            if (w == RUNTIME_WL_SKEWED) /* Zipf: lengths never grow */
                for (int s = 1; s < slots; ++s)
                    if (len[s] > len[s - 1])
                        fail_msg("skewed, %d rows: segment %d has %d rows, more than segment %d (%d)", n, s, len[s],
                                 s - 1, len[s - 1]);
            /* the summary agrees */
            runtime_layout_summary sum;
            runtime_summarize_rows(rows, n, &sum);
            assert_int_equal(sum.rows_with_adapter, n);
            assert_int_equal(sum.groups, slots);
            int longest = 0;
            for (int s = 0; s < slots; ++s)
                if (len[s] > longest)
                    longest = len[s];
            assert_int_equal(sum.longest, longest);
        }
    }
    free(rows);
    free(len);
}

static void test_mixed(void **state)
{
    (void)state;
    const int n[] = {64, 256, 1024, 4096};
    for (size_t i = 0; i < sizeof n / sizeof n[0]; ++i) {
        int slots, skew_slots;
        int32_t *rows = rows_of(RUNTIME_WL_MIXED, n[i], 42, &slots);
        int32_t *skew = rows_of(RUNTIME_WL_SKEWED, n[i], 42, &skew_slots);
        assert_int_equal(slots, skew_slots); /* the adapters of skewed */
        int none = 0, descents = 0, prev = -1;
        int *cnt = calloc((size_t)slots, sizeof *cnt), *skew_cnt = calloc((size_t)slots, sizeof *skew_cnt);
        assert_non_null(cnt);
        assert_non_null(skew_cnt);
        for (int r = 0; r < n[i]; ++r) {
            if (rows[r] < -1 || rows[r] >= slots)
                fail_msg("mixed, %d rows: row %d has slot %d, outside -1..%d", n[i], r, rows[r], slots - 1);
            if (rows[r] == -1) {
                ++none;
                continue;
            }
            cnt[rows[r]]++;
            if (rows[r] < prev)
                ++descents;
            prev = rows[r];
        }
        for (int r = 0; r < n[i]; ++r)
            skew_cnt[skew[r]]++;
        /* 25% on no adapter: binomial, so within 4 standard deviations */
        double frac = (double)none / n[i], tol = 4 * sqrt(0.25 * 0.75 / n[i]);
        print_message("mixed, %d rows: %d slots, %.1f%% rows without adapter (25 +- %.1f%%), %d descents\n", n[i],
                      slots, 100 * frac, 100 * tol, descents);
        assert_true(fabs(frac - 0.25) < tol);
        /* shuffled: not sorted by adapter */
        assert_true(descents > 0);
        assert_true(count_runs(rows, n[i]) > slots);
        /* every row with an adapter keeps one of skewed's (no slot gains rows) */
        for (int s = 0; s < slots; ++s)
            assert_true(cnt[s] <= skew_cnt[s]);
        free(cnt);
        free(skew_cnt);
        /* deterministic in the seed; another seed gives another batch */
        int slots2;
        int32_t *again = rows_of(RUNTIME_WL_MIXED, n[i], 42, &slots2);
        assert_int_equal(slots2, slots);
        assert_memory_equal(again, rows, (size_t)n[i] * sizeof *rows);
        free(again);
        again = rows_of(RUNTIME_WL_MIXED, n[i], 43, &slots2);
        assert_int_equal(slots2, slots);
        assert_memory_not_equal(again, rows, (size_t)n[i] * sizeof *rows);
        free(again);
        free(rows);
        free(skew);
    }
    /* the rng is advanced: two draws from one state differ */
    uint64_t rng = 9;
    int32_t a[512], b[512];
    runtime_workload_rows(RUNTIME_WL_MIXED, 512, &rng, a);
    assert_true(rng != 9);
    runtime_workload_rows(RUNTIME_WL_MIXED, 512, &rng, b);
    assert_memory_not_equal(a, b, sizeof a);
    /* small batches: slots stay in range */
    for (int m = 1; m <= 64; ++m) {
        int slots;
        int32_t *rows = rows_of(RUNTIME_WL_MIXED, m, (uint64_t)m, &slots);
        for (int r = 0; r < m; ++r)
            assert_true(rows[r] >= -1 && rows[r] < slots);
        free(rows);
    }
}

static void test_names(void **state)
{
    (void)state;
    const char *names[] = {"distinct", "uniform", "skewed", "identical", "mixed"};
    for (int w = 0; w < RUNTIME_WL_COUNT; ++w) {
        assert_string_equal(runtime_workload_name((runtime_workload)w), names[w]);
        assert_int_equal(runtime_workload_parse(names[w]), w);
    }
    assert_string_equal(runtime_workload_name(RUNTIME_WL_COUNT), "?");
    assert_string_equal(runtime_workload_name((runtime_workload)-1), "?");
    assert_int_equal(runtime_workload_parse("zipf"), -1);
    assert_int_equal(runtime_workload_parse(""), -1);
    assert_int_equal(runtime_workload_parse(NULL), -1);
    assert_int_equal(runtime_workload_parse("Skewed"), -1);
}

/* ---- runtime_summarize_rows -------------------------------------------------- */

static void expect_summary(const int32_t *rows, int n, int with, int groups, int longest)
{
    runtime_layout_summary s;
    memset(&s, 0x5a, sizeof s);
    runtime_summarize_rows(rows, n, &s);
    if (s.rows_with_adapter != with || s.groups != groups || s.longest != longest || s.distinct != groups) {
        print_error("summary of %d rows: with adapter %d, groups %d, longest %d, distinct %d; want %d, %d, %d, %d\n",
                    n, s.rows_with_adapter, s.groups, s.longest, s.distinct, with, groups, longest, groups);
        fail();
    }
}

static void test_summarize_rows(void **state)
{
    (void)state;
    expect_summary(NULL, 0, 0, 0, 0);
    {
        const int32_t r[] = {2};
        expect_summary(r, 1, 1, 1, 1);
    }
    {
        const int32_t r[] = {-1};
        expect_summary(r, 1, 0, 0, 0);
    }
    {
        const int32_t r[] = {-1, -1, -1};
        expect_summary(r, 3, 0, 0, 0);
    }
    {
        const int32_t r[] = {5, 5, 5, 5};
        expect_summary(r, 4, 4, 1, 4);
    }
    {
        const int32_t r[] = {0, 0, 1, 1, 1, -1, 0};
        expect_summary(r, 7, 6, 3, 3);
    }
    {
        const int32_t r[] = {0, -1, 0}; /* a -1 row splits a run */
        expect_summary(r, 3, 2, 2, 1);
    }
    {
        const int32_t r[] = {-1, 3, 3, -1, -1, 3, 3, 3};
        expect_summary(r, 8, 5, 2, 3);
    }
    {
        const int32_t r[] = {1, 2, 1, 2, 1};
        expect_summary(r, 5, 5, 5, 1);
    }
    {
        const int32_t r[] = {0, 1, 1, 2, 2, 2, 3, 3, 3, 3, -1, -1, -1, -1, -1};
        expect_summary(r, 15, 10, 4, 4);
    }
    {
        const int32_t r[] = {7, 7, 7, 0, 0, 7}; /* a slot that comes back is another group */
        expect_summary(r, 6, 6, 3, 3);
    }
    {
        const int32_t r[] = {-1, 0}; /* slot 0 after -1 */
        expect_summary(r, 2, 1, 1, 1);
    }
    /* the longest run may be the last */
    {
        const int32_t r[] = {4, 1, 1, 1, 1, 1};
        expect_summary(r, 6, 6, 2, 5);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_uniform),
        cmocka_unit_test(test_table_skewed),
        cmocka_unit_test(test_table_distinct_identical),
        cmocka_unit_test(test_skewed_lengths),
        cmocka_unit_test(test_sorted_layouts_all_sizes),
        cmocka_unit_test(test_mixed),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_summarize_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
