/*
 * kernels_lora.cu -- CUDA template of dop's multi-LoRA kernels.
 *
 * Not compiled on its own: kernels_codegen.c prepends the typedefs, the
 * argument block (kernels_params.h) and the schedule's #defines, and NVRTC
 * compiles the result for the device's exact architecture. No toolkit header
 * is included, so JIT works where only the driver and libnvrtc are installed.
 *
 * Schedule parameters (all compile-time):
 *   DOP_BF16      0: fp16 data, 1: bf16 data (fp32 accumulation either way)
 *   DOP_ROWS      rows of the batch one CTA handles (1..32); rows of the tile
 *                 that share an adapter share every weight load
 *   DOP_WARPS     warps per CTA
 *   DOP_VEC       elements per vector load along d_in (1, 2, 4, 8)
 *   DOP_KC        K tile staged in shared memory (multiple of 32 * DOP_VEC)
 *   DOP_COLS      output columns per CTA (expand, fused)
 *   DOP_MAXR      max_rank of the shape (size of the fp32 intermediate)
 *
 * Entry points:
 *   dop_shrink  grid (row tiles, K splits, slices): v (+)= x A^T over the
 *               CTA's K range; fp32 atomics when gridDim.y > 1.
 *   dop_expand  grid (row tiles, column tiles, slices): y += scale v B^T.
 *   dop_fused   grid (row tiles, column tiles, slices): each CTA recomputes
 *               the fp32 intermediate of its rows over all of d_in in shared
 *               memory, then expands its column tile. One launch, no scratch.
 *
 * Correctness never depends on the layout: a CTA reads the adapter of each of
 * its rows from device memory at run time, groups its rows by adapter, and
 * handles any mix (empty segments, -1 rows, ranks differing per adapter).
 * Values that would read out of bounds (slot >= num_slots, rank > max_rank)
 * are skipped or clamped, since a kernel cannot report an error.
 */

#define DOP_THREADS (DOP_WARPS * 32)

typedef unsigned short dop_u16;

static_assert(sizeof(dop_kparams) == DOP_KPARAMS_SIZE, "argument block layout differs from the host's");

/* ---- element conversion without cuda_fp16.h / cuda_bf16.h ---------------- */

__device__ __forceinline__ float dop_to_f32(dop_u16 h)
{
#if DOP_BF16
    return __uint_as_float(((unsigned)h) << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

__device__ __forceinline__ dop_u16 dop_from_f32(float f)
{
    dop_u16 h;
#if DOP_BF16
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
#endif
    return h;
}

/* Loads V consecutive elements; the caller guarantees V*2-byte alignment. */
template <int V> struct dop_vec_t;
template <> struct dop_vec_t<1> { typedef dop_u16 type; };
template <> struct dop_vec_t<2> { typedef unsigned type; };
template <> struct dop_vec_t<4> { typedef uint2 type; };
template <> struct dop_vec_t<8> { typedef uint4 type; };

template <int V>
__device__ __forceinline__ void dop_load(const dop_u16 *src, float (&out)[V])
{
    typedef typename dop_vec_t<V>::type vt;
    union { vt v; dop_u16 h[V]; } u;
    u.v = *reinterpret_cast<const vt *>(src);
#pragma unroll
    for (int i = 0; i < V; ++i)
        out[i] = dop_to_f32(u.h[i]);
}

template <int V>
__device__ __forceinline__ void dop_copy(dop_u16 *dst, const dop_u16 *src)
{
    typedef typename dop_vec_t<V>::type vt;
    *reinterpret_cast<vt *>(dst) = *reinterpret_cast<const vt *>(src);
}

__device__ __forceinline__ bool dop_aligned(const void *p, int bytes)
{
    return (reinterpret_cast<unsigned long long>(p) & (unsigned long long)(bytes - 1)) == 0;
}

__device__ __forceinline__ float dop_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- layout ---------------------------------------------------------------- */

/* Adapter slot of a row (-1: none). */
__device__ __forceinline__ int dop_row_slot(const dop_kparams &p, int row)
{
    if (row >= p.num_rows)
        return -1;
    int slot;
    if (p.row_slot) {
        slot = reinterpret_cast<const int *>(p.row_slot)[row];
    } else {
        const int *indptr = reinterpret_cast<const int *>(p.seg_indptr);
        int nseg = p.num_segments_dev ? *reinterpret_cast<const int *>(p.num_segments_dev) : p.num_segments;
        if (nseg <= 0 || row < indptr[0] || row >= indptr[nseg])
            return -1;
        /* largest i < nseg with indptr[i] <= row (skips empty segments) */
        int lo = 0, hi = nseg;
        while (hi - lo > 1) {
            int mid = (lo + hi) >> 1;
            if (indptr[mid] <= row)
                lo = mid;
            else
                hi = mid;
        }
        slot = p.seg_slot ? reinterpret_cast<const int *>(p.seg_slot)[lo] : lo;
    }
    return (slot >= 0 && slot < p.num_slots) ? slot : -1;
}

struct dop_adapter {
    const dop_u16 *A, *B;
    int rank;
    float scale;
};

__device__ __forceinline__ dop_adapter dop_get_adapter(const dop_kparams &p, int slot, int slice)
{
    int e = slot * p.num_slices + slice;
    dop_adapter a;
    a.A = reinterpret_cast<const dop_u16 *const *>(p.a_ptrs)[e];
    a.B = reinterpret_cast<const dop_u16 *const *>(p.b_ptrs)[e];
    int r = p.ranks ? reinterpret_cast<const int *>(p.ranks)[e] : p.uniform_rank;
    a.rank = r < 0 ? 0 : (r > p.max_rank ? p.max_rank : r);
    a.scale = p.scales ? reinterpret_cast<const float *>(p.scales)[e] : p.uniform_scale;
    if (!a.A || !a.B)
        a.rank = 0;
    return a;
}

/* The rows of one CTA grouped by adapter: group g has slot gslot[g] and rows
 * {j : bit j of gmask[g]}. Built by thread 0; read after a barrier. */
struct dop_tile {
    int slot[DOP_ROWS];
    int gslot[DOP_ROWS];
    unsigned gmask[DOP_ROWS];
    int ngroups;
};

__device__ __forceinline__ void dop_tile_init(const dop_kparams &p, int row0, dop_tile &t)
{
    if (threadIdx.x < DOP_ROWS)
        t.slot[threadIdx.x] = dop_row_slot(p, row0 + threadIdx.x);
    __syncthreads();
    if (threadIdx.x == 0) {
        int ng = 0;
        unsigned done = 0;
        for (int j = 0; j < DOP_ROWS; ++j) {
            int s = t.slot[j];
            if (s < 0 || (done >> j & 1u))
                continue;
            unsigned m = 0;
            for (int k = j; k < DOP_ROWS; ++k)
                if (t.slot[k] == s)
                    m |= 1u << k;
            done |= m;
            t.gslot[ng] = s;
            t.gmask[ng] = m;
            ++ng;
        }
        t.ngroups = ng;
    }
    __syncthreads();
}

/* ---- shrink core --------------------------------------------------------------- */

/* Stages x[row0 .. row0+DOP_ROWS, k0 .. k0+klen) into shared memory (rows
 * without an adapter are skipped: nothing reads them). */
__device__ __forceinline__ void dop_stage_x(const dop_kparams &p, const dop_tile &t, int row0, int k0, int klen,
                            dop_u16 (*sx)[DOP_KC])
{
    const dop_u16 *x = reinterpret_cast<const dop_u16 *>(p.x);
    bool vec = DOP_VEC > 1 && dop_aligned(x, DOP_VEC * 2) && p.ldx % DOP_VEC == 0 && p.d_in % DOP_VEC == 0;
    if (vec) {
        int per_row = klen / DOP_VEC;
        for (int i = threadIdx.x; i < DOP_ROWS * per_row; i += DOP_THREADS) {
            int j = i / per_row, c = (i - j * per_row) * DOP_VEC;
            if (t.slot[j] >= 0)
                dop_copy<DOP_VEC>(&sx[j][c], x + (long long)(row0 + j) * p.ldx + k0 + c);
        }
    } else {
        for (int i = threadIdx.x; i < DOP_ROWS * klen; i += DOP_THREADS) {
            int j = i / klen, c = i - j * klen;
            if (t.slot[j] >= 0)
                sx[j][c] = x[(long long)(row0 + j) * p.ldx + k0 + c];
        }
    }
}

/* acc[j] = sum_{c < klen} A[r, k0 + c] * sx[j][c] for the rows j of mask,
 * partial per lane (the caller reduces across the warp). */
template <int V>
__device__ __forceinline__ void dop_dot_chunk(const dop_u16 *arow, const dop_u16 (*sx)[DOP_KC], int klen,
                                              unsigned mask, float (&acc)[DOP_ROWS])
{
    int lane = threadIdx.x & 31;
#pragma unroll 4
    for (int c = lane * V; c < klen; c += 32 * V) {
        float a[V];
        dop_load<V>(arow + c, a);
#pragma unroll
        for (int j = 0; j < DOP_ROWS; ++j) {
            if (mask >> j & 1u) {
                float xv[V];
                dop_load<V>(&sx[j][c], xv);
#pragma unroll
                for (int e = 0; e < V; ++e)
                    acc[j] = fmaf(a[e], xv[e], acc[j]);
            }
        }
    }
}

/* For every group of the tile and every rank row owned by this warp: the dot
 * product of A[r, k0 .. k0+klen) with the staged rows, reduced across the warp
 * and handed to emit(j, r, value) on lane 0. */
template <typename Emit>
__device__ __forceinline__ void dop_shrink_chunk(const dop_kparams &p, const dop_tile &t, int slice, int k0, int klen,
                                 const dop_u16 (*sx)[DOP_KC], Emit emit)
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int g = 0; g < t.ngroups; ++g) {
        dop_adapter ad = dop_get_adapter(p, t.gslot[g], slice);
        unsigned mask = t.gmask[g];
        bool vec = DOP_VEC > 1 && p.d_in % DOP_VEC == 0 && dop_aligned(ad.A, DOP_VEC * 2);
        for (int r = warp; r < ad.rank; r += DOP_WARPS) {
            float acc[DOP_ROWS];
#pragma unroll
            for (int j = 0; j < DOP_ROWS; ++j)
                acc[j] = 0.f;
            const dop_u16 *arow = ad.A + (long long)r * p.d_in + k0;
            if (vec)
                dop_dot_chunk<DOP_VEC>(arow, sx, klen, mask, acc);
            else
                dop_dot_chunk<1>(arow, sx, klen, mask, acc);
#pragma unroll
            for (int j = 0; j < DOP_ROWS; ++j) {
                if (mask >> j & 1u) {
                    float s = dop_warp_sum(acc[j]);
                    if (lane == 0)
                        emit(j, r, s);
                }
            }
        }
    }
}

/* ---- expand core --------------------------------------------------------------- */

/* y[row0 + j, y_col + col0 + c] += scale * sum_r sv[j][r] * B[col0 + c, r] for
 * every group of the tile; one thread per output column. */
__device__ __forceinline__ void dop_expand_tile(const dop_kparams &p, const dop_tile &t, int slice, int row0, int col0,
                                const float (*sv)[DOP_MAXR])
{
    int dout = p.d_out[slice];
    dop_u16 *y = reinterpret_cast<dop_u16 *>(p.y) + p.y_col[slice];
    for (int g = 0; g < t.ngroups; ++g) {
        dop_adapter ad = dop_get_adapter(p, t.gslot[g], slice);
        unsigned mask = t.gmask[g];
        if (ad.rank == 0)
            continue;
        bool vec = ad.rank % 8 == 0 && dop_aligned(ad.B, 16);
        for (int c = threadIdx.x; c < DOP_COLS && col0 + c < dout; c += DOP_THREADS) {
            int col = col0 + c;
            const dop_u16 *brow = ad.B + (long long)col * ad.rank;
            float acc[DOP_ROWS];
#pragma unroll
            for (int j = 0; j < DOP_ROWS; ++j)
                acc[j] = 0.f;
            if (vec) {
                for (int r = 0; r < ad.rank; r += 8) {
                    float b[8];
                    dop_load<8>(brow + r, b);
#pragma unroll
                    for (int j = 0; j < DOP_ROWS; ++j)
                        if (mask >> j & 1u)
#pragma unroll
                            for (int e = 0; e < 8; ++e)
                                acc[j] = fmaf(b[e], sv[j][r + e], acc[j]);
                }
            } else {
                for (int r = 0; r < ad.rank; ++r) {
                    float b = dop_to_f32(brow[r]);
#pragma unroll
                    for (int j = 0; j < DOP_ROWS; ++j)
                        if (mask >> j & 1u)
                            acc[j] = fmaf(b, sv[j][r], acc[j]);
                }
            }
#pragma unroll
            for (int j = 0; j < DOP_ROWS; ++j) {
                if (mask >> j & 1u) {
                    dop_u16 *yp = y + (long long)(row0 + j) * p.ldy + col;
                    *yp = dop_from_f32(dop_to_f32(*yp) + ad.scale * acc[j]);
                }
            }
        }
    }
}

/* ---- entry points ------------------------------------------------------------- */

extern "C" __global__ void __launch_bounds__(DOP_THREADS) dop_shrink(const dop_kparams p)
{
    __shared__ dop_tile t;
    __shared__ __align__(16) dop_u16 sx[DOP_ROWS][DOP_KC];
    int row0 = blockIdx.x * DOP_ROWS, slice = blockIdx.z;
    int kbeg = blockIdx.y * p.k_per_cta;
    int kend = min(p.d_in, kbeg + p.k_per_cta);
    dop_tile_init(p, row0, t);
    float *v = reinterpret_cast<float *>(p.v) + slice * p.max_rank;
    bool atomic = gridDim.y > 1;
    for (int k0 = kbeg; k0 < kend; k0 += DOP_KC) {
        int klen = min(DOP_KC, kend - k0);
        dop_stage_x(p, t, row0, k0, klen, sx);
        __syncthreads();
        dop_shrink_chunk(p, t, slice, k0, klen, sx, [&](int j, int r, float s) {
            float *dst = v + (long long)(row0 + j) * p.ldv + r;
            if (atomic)
                atomicAdd(dst, s);
            else if (p.accumulate || k0 != kbeg)
                *dst += s;
            else
                *dst = s;
        });
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(DOP_THREADS) dop_expand(const dop_kparams p)
{
    __shared__ dop_tile t;
    __shared__ float sv[DOP_ROWS][DOP_MAXR];
    int row0 = blockIdx.x * DOP_ROWS, slice = blockIdx.z;
    if (blockIdx.y * DOP_COLS >= p.d_out[slice])
        return; /* uniform across the CTA: no barrier is skipped by some threads only */
    dop_tile_init(p, row0, t);
    const float *v = reinterpret_cast<const float *>(p.v) + slice * p.max_rank;
    for (int i = threadIdx.x; i < DOP_ROWS * p.max_rank; i += DOP_THREADS) {
        int j = i / p.max_rank, r = i - j * p.max_rank;
        sv[j][r] = t.slot[j] >= 0 ? v[(long long)(row0 + j) * p.ldv + r] : 0.f;
    }
    __syncthreads();
    /* the grid's y extent may be capped (65535): CTAs stride over column tiles */
    for (int col0 = blockIdx.y * DOP_COLS; col0 < p.d_out[slice]; col0 += gridDim.y * DOP_COLS)
        dop_expand_tile(p, t, slice, row0, col0, sv);
}

extern "C" __global__ void __launch_bounds__(DOP_THREADS) dop_fused(const dop_kparams p)
{
    __shared__ dop_tile t;
    __shared__ __align__(16) dop_u16 sx[DOP_ROWS][DOP_KC];
    __shared__ float sv[DOP_ROWS][DOP_MAXR];
    int row0 = blockIdx.x * DOP_ROWS, slice = blockIdx.z;
    if (blockIdx.y * DOP_COLS >= p.d_out[slice])
        return;
    dop_tile_init(p, row0, t);
    for (int i = threadIdx.x; i < DOP_ROWS * DOP_MAXR; i += DOP_THREADS)
        (&sv[0][0])[i] = 0.f;
    for (int k0 = 0; k0 < p.d_in; k0 += DOP_KC) {
        int klen = min(DOP_KC, p.d_in - k0);
        dop_stage_x(p, t, row0, k0, klen, sx);
        __syncthreads();
        /* rank row r belongs to one warp, so sv[j][r] has a single writer */
        dop_shrink_chunk(p, t, slice, k0, klen, sx, [&](int j, int r, float s) { sv[j][r] += s; });
        __syncthreads();
    }
    for (int col0 = blockIdx.y * DOP_COLS; col0 < p.d_out[slice]; col0 += gridDim.y * DOP_COLS)
        dop_expand_tile(p, t, slice, row0, col0, sv);
}
