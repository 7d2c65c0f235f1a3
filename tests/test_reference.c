/*
 * test_reference.c -- the CPU reference (kernels/kernels_ref.c): the fp16 and
 * bf16 conversions on exact values (rounding ties, subnormals, overflow, NaN)
 * and exhaustively over every 16-bit pattern, and shrink / expand / apply on
 * a small hand-computed problem (ranks differing per adapter, a rank-0 slice,
 * a row without adapter, a slot out of range, slices at y_col offsets with
 * gaps, padded ldx / ldv / ldy), plus apply == shrink then expand on a random
 * problem.
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

#include "kernels_ref.h"

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Bit-exact float comparison (distinguishes -0 from +0). */
static void assert_f32_bits(float got, float want)
{
    if (f32_bits(got) != f32_bits(want)) {
        print_error("got %.9g (0x%08x), want %.9g (0x%08x)\n", (double)got, f32_bits(got), (double)want,
                    f32_bits(want));
        fail();
    }
}

static void assert_h16(uint16_t got, uint16_t want, float from)
{
    if (got != want) {
        print_error("%.9g (0x%08x) converted to 0x%04x, want 0x%04x\n", (double)from, f32_bits(from), got, want);
        fail();
    }
}

/* ---- fp16 ----------------------------------------------------------------- */

static void test_half_to_f32_exact(void **state)
{
    (void)state;
    assert_f32_bits(kref_half_to_f32(0x0000), 0.0f);
    assert_f32_bits(kref_half_to_f32(0x8000), -0.0f);
    assert_f32_bits(kref_half_to_f32(0x3c00), 1.0f);
    assert_f32_bits(kref_half_to_f32(0xc100), -2.5f);
    assert_f32_bits(kref_half_to_f32(0x7bff), 65504.0f);
    assert_f32_bits(kref_half_to_f32(0xfbff), -65504.0f);
    assert_f32_bits(kref_half_to_f32(0x0001), ldexpf(1.0f, -24));        /* smallest subnormal */
    assert_f32_bits(kref_half_to_f32(0x8001), -ldexpf(1.0f, -24));
    assert_f32_bits(kref_half_to_f32(0x03ff), ldexpf(1023.0f, -24));     /* largest subnormal */
    assert_f32_bits(kref_half_to_f32(0x0400), ldexpf(1.0f, -14));        /* smallest normal */
    assert_f32_bits(kref_half_to_f32(0x3555), 0.333251953125f);         /* 0.25 * (1 + 341/1024) */
    assert_f32_bits(kref_half_to_f32(0x7c00), INFINITY);
    assert_f32_bits(kref_half_to_f32(0xfc00), -INFINITY);
    assert_true(isnan(kref_half_to_f32(0x7e00)));
    assert_true(isnan(kref_half_to_f32(0x7c01))); /* signalling pattern is still NaN */
    assert_true(isnan(kref_half_to_f32(0xfe00)));
}

static void test_f32_to_half_exact(void **state)
{
    (void)state;
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},
        {-0.0f, 0x8000},
        {1.0f, 0x3c00},
        {-2.5f, 0xc100},
        {65504.0f, 0x7bff},
        {-65504.0f, 0xfbff},
        {0x1p-24f, 0x0001},          /* smallest subnormal */
        {-0x1p-24f, 0x8001},
        {0x1p-14f, 0x0400},          /* smallest normal */
        {0x3ffp-24f, 0x03ff},        /* largest subnormal */
        /* subnormal ties round to even */
        {0x1p-25f, 0x0000},          /* 0.5 ulp: tie between 0 and 1 -> 0 */
        {0x3p-25f, 0x0002},          /* 1.5 ulp: tie between 1 and 2 -> 2 */
        {0x5p-25f, 0x0002},          /* 2.5 ulp: tie between 2 and 3 -> 2 */
        {0x1.000002p-25f, 0x0001},   /* just above the tie -> 1 */
        {0x1p-26f, 0x0000},          /* below half an ulp -> 0 */
        {0x7ffp-25f, 0x0400},        /* 1023.5 ulp: tie, rounds to 1024 = smallest normal */
        /* normal ties round to even */
        {1.0f + 0x1p-11f, 0x3c00},   /* tie between 0x3c00 and 0x3c01 -> even 0x3c00 */
        {1.0f + 0x3p-11f, 0x3c02},   /* tie between 0x3c01 and 0x3c02 -> even 0x3c02 */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01}, /* above the tie */
        {1.0f + 0x1p-11f - 0x1p-20f, 0x3c00}, /* below the tie */
        {2.0f - 0x1p-11f, 0x4000},   /* tie with odd 0x3bff: carries into the exponent */
        {-(1.0f + 0x3p-11f), 0xbc02},
        /* overflow */
        {65519.0f, 0x7bff},          /* below the tie at 65520 */
        {65520.0f, 0x7c00},          /* tie with odd 0x7bff rounds up, to infinity */
        {-65520.0f, 0xfc00},
        {70000.0f, 0x7c00},
        {1e30f, 0x7c00},
        {-1e30f, 0xfc00},
        {INFINITY, 0x7c00},
        {-INFINITY, 0xfc00},
        /* underflow */
        {1e-10f, 0x0000},
        {-1e-10f, 0x8000},
        {0x1p-149f, 0x0000},         /* fp32 subnormal */
        {0.1f, 0x2e66},
        {3.140625f, 0x4248},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        assert_h16(kref_f32_to_half(cases[i].f), cases[i].h, cases[i].f);
}

static void test_f32_to_half_nan(void **state)
{
    (void)state;
    const uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0x7f802000u, 0x7fffffffu, 0xffc00000u, 0xff800001u};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; ++i) {
        float f = bits_f32(nans[i]);
        uint16_t h = kref_f32_to_half(f);
        /* exponent all ones, mantissa non-zero: NaN, never infinity */
        if ((h & 0x7c00u) != 0x7c00u || (h & 0x3ffu) == 0) {
            print_error("NaN 0x%08x converted to 0x%04x, which is not a NaN\n", nans[i], h);
            fail();
        }
        assert_int_equal(h & 0x8000u, (nans[i] >> 16) & 0x8000u); /* sign kept */
        assert_true(isnan(kref_half_to_f32(h)));
    }
}

/* Every half value survives half -> f32 -> half; NaNs stay NaN. */
static void test_half_roundtrip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; ++h) {
        float f = kref_half_to_f32((uint16_t)h);
        uint16_t back = kref_f32_to_half(f);
        int nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
        if (nan) {
            assert_true(isnan(f));
            assert_true((back & 0x7c00u) == 0x7c00u && (back & 0x3ffu));
        } else if (back != h) {
            print_error("half 0x%04x -> %.9g -> 0x%04x\n", h, (double)f, back);
            fail();
        }
    }
}

/* Between two adjacent finite halves: below the midpoint -> lower, above ->
 * upper, at it -> the even one. Checked for every positive finite pair. */
static void test_half_midpoints_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x7bffu; ++h) {
        double lo = kref_half_to_f32((uint16_t)h), hi = kref_half_to_f32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact in fp32 */
        assert_true((double)mid == (lo + hi) / 2);
        uint16_t even = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
        assert_h16(kref_f32_to_half(mid), even, mid);
        assert_h16(kref_f32_to_half(nextafterf(mid, 0.0f)), (uint16_t)h, nextafterf(mid, 0.0f));
        assert_h16(kref_f32_to_half(nextafterf(mid, INFINITY)), (uint16_t)(h + 1), nextafterf(mid, INFINITY));
        assert_h16(kref_f32_to_half(-mid), (uint16_t)(even | 0x8000u), -mid);
    }
}

/* ---- bf16 ----------------------------------------------------------------- */

static void test_bf16_exact(void **state)
{
    (void)state;
    assert_f32_bits(kref_bf16_to_f32(0x3f80), 1.0f);
    assert_f32_bits(kref_bf16_to_f32(0xc020), -2.5f);
    assert_f32_bits(kref_bf16_to_f32(0x8000), -0.0f);
    assert_f32_bits(kref_bf16_to_f32(0x0001), 0x1p-133f); /* smallest bf16 subnormal */
    assert_f32_bits(kref_bf16_to_f32(0x7f7f), 0x1.fep127f);
    assert_f32_bits(kref_bf16_to_f32(0x7f80), INFINITY);
    assert_true(isnan(kref_bf16_to_f32(0x7fc0)));
    assert_true(isnan(kref_bf16_to_f32(0x7f81)));

    static const struct {
        uint32_t f;
        uint16_t h;
    } cases[] = {
        {0x3f800000u, 0x3f80}, /* 1.0 */
        {0xc0200000u, 0xc020}, /* -2.5 */
        {0x00000000u, 0x0000},
        {0x80000000u, 0x8000},
        {0x477fe000u, 0x4780}, /* 65504 -> 65536 (bf16 has 8 bits of mantissa) */
        /* ties round to even */
        {0x3f808000u, 0x3f80}, /* 1 + 2^-8: tie between 0x3f80 and 0x3f81 -> 0x3f80 */
        {0x3f818000u, 0x3f82}, /* 1 + 3*2^-8: tie between 0x3f81 and 0x3f82 -> 0x3f82 */
        {0x3f808001u, 0x3f81}, /* above the tie */
        {0x3f807fffu, 0x3f80}, /* below the tie */
        {0xbf818000u, 0xbf82},
        {0x3fff8000u, 0x4000}, /* tie with odd 0x3fff: carries into the exponent */
        /* subnormals */
        {0x00008000u, 0x0000}, /* tie between 0 and 0x0001 -> 0 */
        {0x00018000u, 0x0002}, /* tie between 0x0001 and 0x0002 -> 0x0002 */
        {0x00010000u, 0x0001},
        /* overflow */
        {0x7f7f0000u, 0x7f7f}, /* largest bf16 */
        {0x7f7f7fffu, 0x7f7f},
        {0x7f7f8000u, 0x7f80}, /* tie with odd 0x7f7f -> infinity */
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX -> infinity */
        {0xff7fffffu, 0xff80},
        {0x7f800000u, 0x7f80}, /* infinity stays */
        {0xff800000u, 0xff80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
        assert_h16(kref_f32_to_bf16(bits_f32(cases[i].f)), cases[i].h, bits_f32(cases[i].f));

    /* NaN stays NaN (a plain rounding add would turn 0x7f800001 into infinity
     * and 0x7fffffff into 0x8000 = -0) */
    const uint32_t nans[] = {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0x7fffffffu, 0xff800001u, 0xffffffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; ++i) {
        uint16_t h = kref_f32_to_bf16(bits_f32(nans[i]));
        if ((h & 0x7f80u) != 0x7f80u || (h & 0x7fu) == 0) {
            print_error("NaN 0x%08x converted to bf16 0x%04x, which is not a NaN\n", nans[i], h);
            fail();
        }
        assert_int_equal(h & 0x8000u, (nans[i] >> 16) & 0x8000u);
        assert_true(isnan(kref_bf16_to_f32(h)));
    }
}

static void test_bf16_roundtrip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x10000u; ++h) {
        float f = kref_bf16_to_f32((uint16_t)h);
        uint16_t back = kref_f32_to_bf16(f);
        int nan = (h & 0x7f80u) == 0x7f80u && (h & 0x7fu);
        if (nan) {
            assert_true(isnan(f));
            assert_true(isnan(kref_bf16_to_f32(back)));
        } else if (back != h) {
            print_error("bf16 0x%04x -> %.9g -> 0x%04x\n", h, (double)f, back);
            fail();
        }
    }
}

static void test_dtype_dispatch(void **state)
{
    (void)state;
    assert_f32_bits(kref_to_f32(0, 0x3c00), 1.0f);
    assert_f32_bits(kref_to_f32(1, 0x3f80), 1.0f);
    assert_int_equal(kref_from_f32(0, -2.5f), 0xc100);
    assert_int_equal(kref_from_f32(1, -2.5f), 0xc020);
    assert_int_equal(kref_from_f32(0, 65520.0f), 0x7c00);
    assert_int_equal(kref_from_f32(1, 65520.0f), 0x4780);
}

/* ---- shrink / expand / apply on a hand-computed problem ---------------------

 * d_in 3 (ldx 4, the padding column holds 100), max_rank 2, 2 slots,
 * 2 slices: slice 0 has d_out 2 at y_col 0, slice 1 has d_out 1 at y_col 3;
 * y has ldy 5, so columns 2 and 4 belong to no slice.
 * Rows: slot 0, slot -1, slot 1, slot 2 (out of range: counts as -1).
 *
 *   slot 0 slice 0: rank 2, A = [[1, 2, 3], [0.5, -1, 0]], B = [[1, 0], [2, -1]], scale 0.5
 *   slot 0 slice 1: rank 0 (no update)
 *   slot 1 slice 0: rank 1, A = [[-1, 0.25, 2]],          B = [[3], [-2]],        scale 2
 *   slot 1 slice 1: rank 2, A = [[1, 1, 1], [2, 0, 1]],   B = [[1, -0.5]],        scale 1
 *
 *   x row 0 = [1, -2, 0.5], row 2 = [2, 4, -1]
 *
 * shrink: row 0 slice 0: [1 - 4 + 1.5, 0.5 + 2 + 0]     = [-1.5, 2.5]
 *         row 2 slice 0: [-2 + 1 - 2]                   = [-3]
 *         row 2 slice 1: [2 + 4 - 1, 4 + 0 - 1]         = [5, 3]
 * expand: row 0 slice 0: 0.5 * [-1.5, -3 - 2.5]         = [-0.75, -2.75]
 *         row 2 slice 0: 2 * [3 * -3, -2 * -3]          = [-18, 12]
 *         row 2 slice 1: 1 * [5 - 1.5]                  = [3.5]
 * Every value is exact in fp16, bf16 and double.
 */

enum { H_ROWS = 4, H_DIN = 3, H_LDX = 4, H_R = 2, H_S = 2, H_LDV = 5, H_LDY = 5, H_SLOTS = 2 };

typedef struct hand_problem {
    uint16_t x[H_ROWS * H_LDX];
    uint16_t y[H_ROWS * H_LDY];
    uint16_t a00[2 * 3], b00[2 * 2], a10[1 * 3], b10[2 * 1], a11[2 * 3], b11[1 * 2];
    kref_adapter ad[H_SLOTS * H_S];
    int d_out[H_S], y_col[H_S], row_slot[H_ROWS];
    kref_problem p;
} hand_problem;

static void fill(int bf16, uint16_t *dst, const float *src, int n)
{
    for (int i = 0; i < n; ++i) {
        dst[i] = kref_from_f32(bf16, src[i]);
        assert_true(kref_to_f32(bf16, dst[i]) == src[i]); /* the test data is exact */
    }
}

static double y_init(int row, int col)
{
    return (row * H_LDY + col) * 0.5 - 3.0;
}

static void hand_setup(hand_problem *h, int bf16)
{
    memset(h, 0, sizeof *h);
    const float x[H_ROWS * H_LDX] = {1, -2, 0.5f, 100, 7, 7, 7, 100, 2, 4, -1, 100, -3, 5, 1.5f, 100};
    fill(bf16, h->x, x, H_ROWS * H_LDX);
    for (int r = 0; r < H_ROWS; ++r)
        for (int c = 0; c < H_LDY; ++c) {
            float v = (float)y_init(r, c);
            fill(bf16, &h->y[r * H_LDY + c], &v, 1);
        }
    const float a00[] = {1, 2, 3, 0.5f, -1, 0}, b00[] = {1, 0, 2, -1};
    const float a10[] = {-1, 0.25f, 2}, b10[] = {3, -2};
    const float a11[] = {1, 1, 1, 2, 0, 1}, b11[] = {1, -0.5f};
    fill(bf16, h->a00, a00, 6);
    fill(bf16, h->b00, b00, 4);
    fill(bf16, h->a10, a10, 3);
    fill(bf16, h->b10, b10, 2);
    fill(bf16, h->a11, a11, 6);
    fill(bf16, h->b11, b11, 2);
    h->ad[0] = (kref_adapter){h->a00, h->b00, 2, 0.5f};
    h->ad[1] = (kref_adapter){NULL, NULL, 0, 3.0f};
    h->ad[2] = (kref_adapter){h->a10, h->b10, 1, 2.0f};
    h->ad[3] = (kref_adapter){h->a11, h->b11, 2, 1.0f};
    h->d_out[0] = 2;
    h->d_out[1] = 1;
    h->y_col[0] = 0;
    h->y_col[1] = 3;
    h->row_slot[0] = 0;
    h->row_slot[1] = -1;
    h->row_slot[2] = 1;
    h->row_slot[3] = 2; /* == num_slots: no adapter */
    h->p = (kref_problem){bf16, H_ROWS, H_DIN, H_S, H_R, h->d_out, h->y_col, H_LDX, H_LDY, h->row_slot, H_SLOTS, h->ad};
}

#define SENTINEL 12345.25

static void check_hand_shrink(int bf16)
{
    hand_problem h;
    hand_setup(&h, bf16);
    double v[H_ROWS * H_LDV];
    for (int i = 0; i < H_ROWS * H_LDV; ++i)
        v[i] = SENTINEL;
    kref_shrink(&h.p, h.x, v, H_LDV);
    double want[H_ROWS * H_LDV];
    for (int i = 0; i < H_ROWS * H_LDV; ++i)
        want[i] = SENTINEL;
    want[0 * H_LDV + 0] = -1.5; /* row 0, slice 0 */
    want[0 * H_LDV + 1] = 2.5;
    want[2 * H_LDV + 0] = -3;   /* row 2, slice 0, rank 1: entry 1 untouched */
    want[2 * H_LDV + 2] = 5;    /* row 2, slice 1 */
    want[2 * H_LDV + 3] = 3;
    for (int i = 0; i < H_ROWS * H_LDV; ++i) {
        if (memcmp(&v[i], &want[i], sizeof v[i]) != 0) {
            print_error("bf16=%d: v[%d][%d] = %.17g, want %.17g\n", bf16, i / H_LDV, i % H_LDV, v[i], want[i]);
            fail();
        }
    }
}

static void test_shrink_hand(void **state)
{
    (void)state;
    check_hand_shrink(0);
    check_hand_shrink(1);
}

static void hand_expected_y(double *want)
{
    for (int r = 0; r < H_ROWS; ++r)
        for (int c = 0; c < H_LDY; ++c)
            want[r * H_LDY + c] = y_init(r, c);
    want[0 * H_LDY + 0] += -0.75;
    want[0 * H_LDY + 1] += -2.75;
    want[2 * H_LDY + 0] += -18;
    want[2 * H_LDY + 1] += 12;
    want[2 * H_LDY + 3] += 3.5;
}

static void assert_doubles_identical(const double *got, const double *want, int n, int ld, const char *what)
{
    for (int i = 0; i < n; ++i) {
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0) {
            print_error("%s: [%d][%d] = %.17g, want %.17g\n", what, i / ld, i % ld, got[i], want[i]);
            fail();
        }
    }
}

static void check_hand_expand(int bf16)
{
    hand_problem h;
    hand_setup(&h, bf16);
    /* v as shrink leaves it, with garbage where no rank reaches: expand must
     * read only r < rank of each adapter */
    double v[H_ROWS * H_LDV];
    for (int i = 0; i < H_ROWS * H_LDV; ++i)
        v[i] = 1e6 + i;
    v[0 * H_LDV + 0] = -1.5;
    v[0 * H_LDV + 1] = 2.5;
    v[2 * H_LDV + 0] = -3;
    v[2 * H_LDV + 2] = 5;
    v[2 * H_LDV + 3] = 3;
    double out[H_ROWS * H_LDY], want[H_ROWS * H_LDY];
    for (int i = 0; i < H_ROWS * H_LDY; ++i)
        out[i] = NAN;
    kref_expand(&h.p, v, H_LDV, h.y, out);
    hand_expected_y(want);
    assert_doubles_identical(out, want, H_ROWS * H_LDY, H_LDY, bf16 ? "expand bf16" : "expand fp16");
}

static void test_expand_hand(void **state)
{
    (void)state;
    check_hand_expand(0);
    check_hand_expand(1);
}

static void check_hand_apply(int bf16)
{
    hand_problem h;
    hand_setup(&h, bf16);
    double out[H_ROWS * H_LDY], want[H_ROWS * H_LDY];
    for (int i = 0; i < H_ROWS * H_LDY; ++i)
        out[i] = NAN;
    kref_apply(&h.p, h.x, h.y, out);
    hand_expected_y(want);
    assert_doubles_identical(out, want, H_ROWS * H_LDY, H_LDY, bf16 ? "apply bf16" : "apply fp16");
    /* untouched rows and slices are the input, bit for bit */
    for (int c = 0; c < H_LDY; ++c) {
        assert_true(out[1 * H_LDY + c] == (double)kref_to_f32(bf16, h.y[1 * H_LDY + c]));
        assert_true(out[3 * H_LDY + c] == (double)kref_to_f32(bf16, h.y[3 * H_LDY + c]));
    }
    assert_true(out[0 * H_LDY + 3] == y_init(0, 3)); /* rank-0 slice of slot 0 */
    for (int r = 0; r < H_ROWS; ++r) {                /* columns of no slice */
        assert_true(out[r * H_LDY + 2] == y_init(r, 2));
        assert_true(out[r * H_LDY + 4] == y_init(r, 4));
    }
}

static void test_apply_hand(void **state)
{
    (void)state;
    check_hand_apply(0);
    check_hand_apply(1);
}

/* The scale multiplies the update: tripling it triples the update, zero
 * removes it. */
static void test_scale_applied(void **state)
{
    (void)state;
    hand_problem h;
    hand_setup(&h, 0);
    double base[H_ROWS * H_LDY], scaled[H_ROWS * H_LDY];
    kref_apply(&h.p, h.x, h.y, base);
    h.ad[0].scale = 1.5f;  /* was 0.5: the update of row 0 slice 0 triples */
    h.ad[2].scale = 0.0f;  /* row 2 slice 0: no change */
    kref_apply(&h.p, h.x, h.y, scaled);
    assert_true(scaled[0] == y_init(0, 0) + 3 * -0.75);
    assert_true(scaled[1] == y_init(0, 1) + 3 * -2.75);
    assert_true(scaled[2 * H_LDY + 0] == y_init(2, 0));
    assert_true(scaled[2 * H_LDY + 1] == y_init(2, 1));
    assert_true(scaled[2 * H_LDY + 3] == base[2 * H_LDY + 3]);
}

/* ---- apply == shrink then expand on random data ------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_val(uint64_t *s)
{
    return (float)((double)(rng_next(s) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void check_random_apply(int bf16, uint64_t seed)
{
    enum { ROWS = 9, DIN = 37, LDX = 40, S = 3, R = 8, SLOTS = 4 };
    uint64_t rng = seed;
    int d_out[S] = {5, 3, 7}, y_col[S] = {1, 8, 13};
    const int ldy = 21;
    int row_slot[ROWS] = {0, 0, -1, 3, 1, 1, 4, 2, 0}; /* 4: out of range */
    static uint16_t A[SLOTS * S][R * DIN], B[SLOTS * S][7 * R];
    kref_adapter ad[SLOTS * S];
    for (int e = 0; e < SLOTS * S; ++e) {
        int rank = (int)(rng_next(&rng) % (R + 1)); /* 0 .. R */
        for (int i = 0; i < R * DIN; ++i)
            A[e][i] = kref_from_f32(bf16, rng_val(&rng));
        for (int i = 0; i < 7 * R; ++i)
            B[e][i] = kref_from_f32(bf16, rng_val(&rng));
        ad[e] = (kref_adapter){A[e], B[e], rank, 0.25f + (float)e};
    }
    ad[1].rank = 0; /* at least one empty (slot, slice) */
    ad[4].rank = R;
    uint16_t x[ROWS * LDX], y[ROWS * 21];
    for (int i = 0; i < ROWS * LDX; ++i)
        x[i] = kref_from_f32(bf16, rng_val(&rng));
    for (int i = 0; i < ROWS * ldy; ++i)
        y[i] = kref_from_f32(bf16, rng_val(&rng));
    kref_problem p = {bf16, ROWS, DIN, S, R, d_out, y_col, LDX, ldy, row_slot, SLOTS, ad};

    double out_apply[ROWS * 21], out_split[ROWS * 21];
    kref_apply(&p, x, y, out_apply);
    double *v = calloc((size_t)ROWS * S * R, sizeof *v);
    assert_non_null(v);
    kref_shrink(&p, x, v, S * R);
    kref_expand(&p, v, S * R, y, out_split);
    free(v);
    assert_doubles_identical(out_apply, out_split, ROWS * ldy, ldy, "apply vs shrink+expand");

    /* the update is non-trivial, and confined to the slices of rows with an adapter */
    int changed = 0;
    for (int r = 0; r < ROWS; ++r) {
        int slot = row_slot[r];
        for (int c = 0; c < ldy; ++c) {
            int s_of = -1;
            for (int s = 0; s < S; ++s)
                if (c >= y_col[s] && c < y_col[s] + d_out[s])
                    s_of = s;
            int upd = slot >= 0 && slot < SLOTS && s_of >= 0 && ad[slot * S + s_of].rank > 0;
            double in = kref_to_f32(bf16, y[r * ldy + c]);
            if (!upd)
                assert_true(memcmp(&out_apply[r * ldy + c], &in, sizeof in) == 0);
            else if (out_apply[r * ldy + c] != in)
                ++changed;
        }
    }
    assert_true(changed > 0);
}

static void test_apply_equals_shrink_expand(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 8; ++seed) {
        check_random_apply(0, seed);
        check_random_apply(1, seed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_to_f32_exact),
        cmocka_unit_test(test_f32_to_half_exact),
        cmocka_unit_test(test_f32_to_half_nan),
        cmocka_unit_test(test_half_roundtrip_all),
        cmocka_unit_test(test_half_midpoints_all),
        cmocka_unit_test(test_bf16_exact),
        cmocka_unit_test(test_bf16_roundtrip_all),
        cmocka_unit_test(test_dtype_dispatch),
        cmocka_unit_test(test_shrink_hand),
        cmocka_unit_test(test_expand_hand),
        cmocka_unit_test(test_apply_hand),
        cmocka_unit_test(test_scale_applied),
        cmocka_unit_test(test_apply_equals_shrink_expand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
