/*
 * kernels_params.h -- the argument block every generated kernel receives by
 * value. This file is compiled twice: by the C compiler (runtime/) and, pasted
 * into the generated source, by NVRTC. It therefore uses only the typedefs
 * dop_u64 / dop_i64 / dop_i32, which each side defines before including it,
 * and no headers of its own. Field order keeps every member naturally aligned
 * so both compilers agree on the layout (checked by a static assert on the C
 * side and by sizeof in the template).
 */
#ifndef DOP_KERNELS_PARAMS_H
#define DOP_KERNELS_PARAMS_H

#define DOP_KP_MAX_SLICES 8

typedef struct dop_kparams {
    /* device pointers */
    dop_u64 x;                /* [num_rows, ldx] activations */
    dop_u64 y;                /* [num_rows, ldy] outputs (expand, fused) */
    dop_u64 v;                /* [num_rows, ldv] fp32 intermediate */
    dop_u64 a_ptrs;           /* u64[num_slots * num_slices] */
    dop_u64 b_ptrs;           /* u64[num_slots * num_slices] */
    dop_u64 ranks;            /* i32[num_slots * num_slices], or 0: uniform_rank */
    dop_u64 scales;           /* f32[num_slots * num_slices], or 0: uniform_scale */
    dop_u64 row_slot;         /* i32[num_rows]: row layout, or 0 */
    dop_u64 seg_indptr;       /* i32[num_segments + 1]: segment layout */
    dop_u64 seg_slot;         /* i32[num_segments], or 0: slot = segment index */
    dop_u64 num_segments_dev; /* i32 read at run time, or 0: num_segments */
    dop_u64 counters;         /* u32[row tiles * num_slices], zero at launch (fused_counter) */
    dop_i64 ldx, ldy, ldv;
    dop_i32 num_rows, d_in, num_slices, max_rank;
    dop_i32 num_segments, num_slots, uniform_rank, accumulate;
    dop_i32 k_per_cta;        /* shrink: K range of one CTA (multiple of the K tile) */
    float uniform_scale;
    dop_i32 row_tiles;        /* row tiles the grid covers (the persistent loop's count) */
    dop_i32 seg_tiles;        /* 1: row tiles aligned to segments (tensor-core kernels; kernels_lora.cu) */
    dop_i32 d_out[DOP_KP_MAX_SLICES];
    dop_i32 y_col[DOP_KP_MAX_SLICES];
} dop_kparams;

#define DOP_KPARAMS_SIZE 232

#endif
