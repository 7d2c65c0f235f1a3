/*
 * test_check.c -- the check that every GPU test, `dop check`, the benchmarks and
 * `dop tune` trust (runtime_check.c), on the fake driver: its device memory is
 * host memory, so the test plays the kernel and writes y itself.
 *
 * - the reference written as y passes, with every updated entry counted, for
 *   each layout, f16 and bf16, 1 to 300 rows (several chunks of the parallel
 *   reference and comparison), three slices, apply and expand;
 * - one updated entry off by 64 fails (the error is the relative norm over
 *   the updated entries, of the order of one per entry), a NaN fails, and an
 *   entry of a row without an adapter changed by one ulp fails as
 *   untouched_bad;
 * - y left as it was (no kernel ran) fails;
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_cuda.h"
#include "kernels_ref.h"
#include "runtime_check.h"

static dop_context *g_ctx;
static char g_dir[512], g_cache[600];

static int group_setup(void **state)
{
    (void)state;
    fk_reset();
    runtime_driver_install(&g_fake);
    if (fk_tmpdir_make(g_dir, sizeof g_dir) != 0)
        return -1;
    snprintf(g_cache, sizeof g_cache, "%s/check.mdb", g_dir);
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE;
    opt.cache_path = g_cache;
    if (dop_context_create(&opt, &g_ctx) != DOP_OK) {
        print_error("dop_context_create: %s\n", dop_context_error(NULL));
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    dop_context_destroy(g_ctx);
    g_ctx = NULL;
    runtime_driver_install(NULL);
    fk_tmpdir_remove(g_dir);
    const char *bad = fk_unbalanced(0);
    if (bad)
        print_error("fake driver out of balance: %s\n", bad);
    return bad ? -1 : 0;
}

static runtime_case make_case(runtime_op op, runtime_workload wl, dop_dtype dt, int rows)
{
    runtime_case c;
    memset(&c, 0, sizeof c);
    c.dtype = dt;
    c.op = op;
    c.workload = wl;
    c.layout_kind = DOP_LAYOUT_SEGMENTS;
    c.num_rows = rows;
    c.d_in = 96;
    c.num_slices = 3;
    c.d_out[0] = 64;
    c.d_out[1] = 40;
    c.d_out[2] = 24;
    c.max_rank = 16;
    c.hetero_ranks = wl == RUNTIME_WL_MIXED;
    c.device_copies = 1;
    c.seed = 11 + (uint64_t)rows;
    return c;
}

static runtime_case_result verify(runtime_case_data *cd)
{
    runtime_case_result res;
    assert_int_equal(runtime_case_verify(g_ctx, cd, &res), DOP_OK);
    return res;
}

static void test_reference_passes_and_errors_fail(void **state)
{
    (void)state;
    const int rows[] = {1, 17, 300};
    const runtime_op ops[] = {RUNTIME_OP_APPLY, RUNTIME_OP_EXPAND};
    for (int o = 0; o < 2; ++o)
        for (int w = 0; w < RUNTIME_WL_COUNT; ++w)
            for (int b = 0; b < 2; ++b)
                for (int ri = 0; ri < 3; ++ri) {
                    const int bf16 = b;
                    runtime_case c = make_case(ops[o], (runtime_workload)w, bf16 ? DOP_DTYPE_BF16 : DOP_DTYPE_F16,
                                               rows[ri]);
                    runtime_case_data *cd;
                    assert_int_equal(runtime_case_setup(g_ctx, &c, &cd), DOP_OK);

                    /* no kernel ran: y is y0, every updated entry is wrong */
                    runtime_case_result r0 = verify(cd);
                    int any_update = r0.checked > 0;
                    assert_int_equal(r0.ok, !any_update);
                    assert_int_equal(r0.untouched_bad, 0);

                    /* the reference passes, every entry with an adapter counted */
                    assert_int_equal(runtime_case_write_reference(g_ctx, cd), DOP_OK);
                    runtime_case_result r = verify(cd);
                    if (!r.ok)
                        fail_msg("op %d %s %s rows %d: the reference fails: %s", ops[o],
                                 runtime_workload_name((runtime_workload)w), bf16 ? "bf16" : "f16", rows[ri], r.message);
                    assert_true(r.err < r.tol);
                    assert_int_equal(r.checked, r0.checked);
                    if (!any_update) {
                        runtime_case_free(g_ctx, cd);
                        continue;
                    }

                    size_t bytes;
                    uint16_t *y = (uint16_t *)(uintptr_t)runtime_case_output(cd, &bytes);
                    const int64_t n = (int64_t)(bytes / 2);
                    /* one updated entry off by a lot: find one that differs from the next value */
                    uint16_t *keep = malloc(bytes);
                    assert_non_null(keep);
                    memcpy(keep, y, bytes);
                    int64_t at = -1;
                    for (int64_t i = n - 1; i >= 0 && at < 0; --i) { /* from the end: the last chunk of rows */
                        y[i] = kref_from_f32(bf16, kref_to_f32(bf16, keep[i]) + 64.0f);
                        runtime_case_result bad = verify(cd);
                        if (!bad.ok && bad.untouched_bad == 0)
                            at = i; /* an updated entry: a wrong value fails */
                        else if (!bad.ok)
                            assert_int_equal(bad.untouched_bad, 1); /* one a row without adapter must keep */
                        y[i] = keep[i];
                    }
                    assert_true(at >= 0);
                    y[at] = 0x7e00; /* NaN in f16; a NaN in bf16 too (exponent all ones, mantissa set) */
                    if (bf16)
                        y[at] = 0x7fc0;
                    assert_false(verify(cd).ok);
                    y[at] = keep[at];
                    assert_true(verify(cd).ok);
                    /* where entries must keep their value (mixed: rows without adapter), one ulp is caught */
                    if (r.checked < n) {
                        int64_t found = -1;
                        for (int64_t i = n - 1; i >= 0 && found < 0; --i) {
                            y[i] = (uint16_t)(keep[i] ^ 1u);
                            runtime_case_result u = verify(cd);
                            if (u.untouched_bad == 1)
                                found = i;
                            y[i] = keep[i];
                        }
                        assert_true(found >= 0);
                    }
                    free(keep);
                    runtime_case_free(g_ctx, cd);
                }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_passes_and_errors_fail),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
