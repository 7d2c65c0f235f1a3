/*
 * kernels_ref.h -- CPU reference of every dop operation, accumulating in
 * double. Slow and simple on purpose: the tests and `dop check` compare the
 * GPU kernels against it.
 */
#ifndef DOP_KERNELS_REF_H
#define DOP_KERNELS_REF_H

#include <stdint.h>

/* IEEE binary16 and bfloat16 conversions, round to nearest even. */
float kref_half_to_f32(uint16_t h);
uint16_t kref_f32_to_half(float f);
float kref_bf16_to_f32(uint16_t h);
uint16_t kref_f32_to_bf16(float f);

typedef struct kref_adapter {
    const uint16_t *A; /* host, [rank, d_in] */
    const uint16_t *B; /* host, [d_out, rank] */
    int rank;          /* 0: no update for this (slot, slice) */
    float scale;
} kref_adapter;

/* A problem with its layout already resolved to one slot (or -1) per row. */
typedef struct kref_problem {
    int bf16; /* 0: fp16, 1: bf16 */
    int num_rows, d_in, num_slices, max_rank;
    const int *d_out; /* [num_slices] */
    const int *y_col; /* [num_slices] */
    int64_t ldx, ldy;
    const int *row_slot;          /* [num_rows] */
    int num_slots;                /* slots outside 0..num_slots-1 count as -1 */
    const kref_adapter *adapters; /* [num_slots * num_slices] */
} kref_problem;

float kref_to_f32(int bf16, uint16_t h);
uint16_t kref_from_f32(int bf16, float f);

/* v[row, s*max_rank + r] = x[row] . A[r] for rows with an adapter, r < rank;
 * other entries of v are not written. */
void kref_shrink(const kref_problem *p, const uint16_t *x, double *v, int64_t ldv);

/* out = y_in + scale * v B^T on the columns of every slice, for rows with an
 * adapter; out is a double copy of y_in elsewhere ([num_rows, ldy]). */
void kref_expand(const kref_problem *p, const double *v, int64_t ldv, const uint16_t *y_in, double *out);

/* out = y_in + scale * (x A^T) B^T, the intermediate in double. */
void kref_apply(const kref_problem *p, const uint16_t *x, const uint16_t *y_in, double *out);

#endif
