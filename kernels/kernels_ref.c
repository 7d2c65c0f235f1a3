/*
 * kernels_ref.c -- the CPU reference (see kernels_ref.h).
 */
#include "kernels_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

float kref_half_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f)
        return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf, nan */
    if (exp == 0) {
        float m = ldexpf((float)man, -24); /* subnormal or zero */
        return sign ? -m : m;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t kref_f32_to_half(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t aexp = (u >> 23) & 0xffu;
    if (aexp == 0xff) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | ((u & 0x7fffffu) ? 0x200u : 0));
    float a = fabsf(f);
    if (a >= 65520.0f) /* rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05f) { /* subnormal half: units of 2^-24, rint rounds to even */
        float q = rintf(a * 16777216.0f);
        return (uint16_t)(sign | (uint16_t)q);
    }
    uint32_t exp = aexp - 112u, man = u & 0x7fffffu;
    uint32_t half = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
        ++half; /* may carry into the exponent, which is still right */
    return (uint16_t)(sign | half);
}

float kref_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t kref_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
        return (uint16_t)((u >> 16) | 0x40u); /* quiet nan */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float kref_to_f32(int bf16, uint16_t h)
{
    return bf16 ? kref_bf16_to_f32(h) : kref_half_to_f32(h);
}

uint16_t kref_from_f32(int bf16, float f)
{
    return bf16 ? kref_f32_to_bf16(f) : kref_f32_to_half(f);
}

static const kref_adapter *adapter_of(const kref_problem *p, int row, int slice)
{
    int slot = p->row_slot[row];
    if (slot < 0 || slot >= p->num_slots)
        return NULL;
    const kref_adapter *a = &p->adapters[(size_t)slot * (size_t)p->num_slices + (size_t)slice];
    return a->rank > 0 ? a : NULL;
}

void kref_shrink(const kref_problem *p, const uint16_t *x, double *v, int64_t ldv)
{
    for (int row = 0; row < p->num_rows; ++row) {
        for (int s = 0; s < p->num_slices; ++s) {
            const kref_adapter *a = adapter_of(p, row, s);
            if (!a)
                continue;
            const uint16_t *xr = x + (int64_t)row * p->ldx;
            for (int r = 0; r < a->rank; ++r) {
                const uint16_t *ar = a->A + (int64_t)r * p->d_in;
                double acc = 0;
                for (int k = 0; k < p->d_in; ++k)
                    acc += (double)kref_to_f32(p->bf16, ar[k]) * (double)kref_to_f32(p->bf16, xr[k]);
                v[(int64_t)row * ldv + (int64_t)s * p->max_rank + r] = acc;
            }
        }
    }
}

void kref_expand(const kref_problem *p, const double *v, int64_t ldv, const uint16_t *y_in, double *out)
{
    for (int64_t i = 0; i < (int64_t)p->num_rows * p->ldy; ++i)
        out[i] = kref_to_f32(p->bf16, y_in[i]);
    for (int row = 0; row < p->num_rows; ++row) {
        for (int s = 0; s < p->num_slices; ++s) {
            const kref_adapter *a = adapter_of(p, row, s);
            if (!a)
                continue;
            const double *vr = v + (int64_t)row * ldv + (int64_t)s * p->max_rank;
            double *yr = out + (int64_t)row * p->ldy + p->y_col[s];
            for (int c = 0; c < p->d_out[s]; ++c) {
                const uint16_t *br = a->B + (int64_t)c * a->rank;
                double acc = 0;
                for (int r = 0; r < a->rank; ++r)
                    acc += vr[r] * (double)kref_to_f32(p->bf16, br[r]);
                yr[c] += (double)a->scale * acc;
            }
        }
    }
}

void kref_apply(const kref_problem *p, const uint16_t *x, const uint16_t *y_in, double *out)
{
    int64_t ldv = (int64_t)p->num_slices * p->max_rank;
    double *v = calloc((size_t)p->num_rows * (size_t)ldv, sizeof *v);
    if (!v) {
        /* the reference is test code: make a failed allocation visible as NaN */
        for (int64_t i = 0; i < (int64_t)p->num_rows * p->ldy; ++i)
            out[i] = NAN;
        return;
    }
    kref_shrink(p, x, v, ldv);
    kref_expand(p, v, ldv, y_in, out);
    free(v);
}
