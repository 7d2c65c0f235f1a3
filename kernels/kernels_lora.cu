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
 *   DOP_KC        K elements one warp covers per step of its loop: every lane
 *                 issues DOP_KC / (32 * DOP_VEC) loads of A before using any
 *   DOP_COLS      output columns per CTA (expand, fused)
 *   DOP_MAXR      max_rank of the shape (size of the fp32 intermediate)
 *   DOP_MMA       0: FMAs on CUDA cores; 1: tensor cores (mma.sync m16n8k16,
 *                 fp32 accumulators) for both halves, on tiles of 16 rows;
 *                 DOP_KC is then the K step of a warp (16 per mma)
 *   DOP_STAGES    1: the mma shrink loads its fragments from global memory;
 *                 2..4: it stages x (16 rows) and A (the ranks) in chunks of
 *                 DOP_KC elements through a ring of that many shared-memory
 *                 buffers with cp.async (sm_80+), and feeds the mmas with
 *                 ldmatrix (mma only)
 *   DOP_PERSIST   0: one tile per CTA (grids as below); 1: every entry point
 *                 takes a 1-D grid of any size (the runtime launches as many
 *                 CTAs as fit on the device at once) and each CTA loops over
 *                 the tiles of the 3-D grid below with a grid stride
 *
 * Entry points:
 *   dop_shrink  grid (row tiles, K splits, slices): v (+)= x A^T over the
 *               CTA's K range; fp32 atomics when gridDim.y > 1.
 *   dop_expand  grid (row tiles, column tiles, slices): y += scale v B^T.
 *   dop_fused   grid (row tiles, column tiles, slices): each CTA recomputes
 *               the fp32 intermediate of its rows over all of d_in in shared
 *               memory, then expands its column tile. One launch, no scratch.
 *   dop_cluster grid (K splits x row tiles, slices) in clusters of the K splits
 *               (sm_90+; DOP_SKETCH 4): the CTAs of a cluster shrink one row
 *               tile's K ranges into their shared memory, sum the partials
 *               through distributed shared memory after a cluster barrier, and
 *               each expands every (cluster size)-th column tile. One launch, no
 *               scratch, no memset, no global atomics.
 *   dop_fused_counter  grid (row tiles, K splits, slices), after a memset of
 *               the scratch and counters: each CTA adds its K part of the
 *               intermediate into global memory and counts itself in; the last
 *               CTA of a row tile reads the whole intermediate and expands all
 *               columns. One launch of kernels, and no CTA waits for another.
 *
 * Latency, not bandwidth, limits these kernels at decode sizes, so each CTA
 * is a short chain of independent memory rounds: (1) the layout of its rows
 * (a parallel scan over segments, no binary search in global memory) and,
 * for tables of up to DOP_TABLE adapter slots, every slot's entry in the same
 * round (else (2) the entries of the tile's rows), (3) all of A and x for its
 * K range with many loads in flight, (4) the reduction in shared memory and
 * one write. Warps
 * split the K range among themselves when the rank is smaller than the warp
 * count, so every warp has work at every rank.
 *
 * Correctness never depends on the layout: a CTA reads the adapter of each of
 * its rows from device memory at run time, groups its rows by adapter, and
 * handles any mix (empty segments, -1 rows, ranks differing per adapter).
 * Values that would read out of bounds (slot >= num_slots, rank > max_rank)
 * are skipped or clamped, since a kernel cannot report an error.
 */

#define DOP_THREADS (DOP_WARPS * 32)
#define DOP_MAX_CLUSTER 16 /* SEARCH_MAX_CLUSTER */

#ifndef DOP_STAGES
#define DOP_STAGES 1
#endif
#ifndef DOP_PERSIST
#define DOP_PERSIST 0
#endif
static_assert(DOP_STAGES >= 1 && DOP_STAGES <= 4 && (DOP_STAGES == 1 || DOP_MMA), "stages 2..4 need mma");

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

/* Loads V consecutive elements of memory no kernel writes while this one runs
 * (read-only path); the caller guarantees V*2-byte alignment. */
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
    u.v = __ldg(reinterpret_cast<const vt *>(src));
#pragma unroll
    for (int i = 0; i < V; ++i)
        out[i] = dop_to_f32(u.h[i]);
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

/* i mod n for 0 <= i < 2n, without a division (with % in its chunk order the
 * staged shrink came out of ptxas with 80 registers and spills) */
__device__ __forceinline__ int dop_wrap(int i, int n)
{
    return i >= n ? i - n : i;
}

/* The shared-window address of a __shared__ object (for cp.async, ldmatrix, mapa). */
__device__ __forceinline__ unsigned dop_smem_addr(const void *p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

/* Programmatic dependent launch (sm_90+): waits until the grid this one depends
 * on programmatically (the kernel before it on the stream, when this one was
 * launched with the programmatic-serialization attribute) has completed and its
 * writes are visible; returns at once when there is none. Every entry point calls
 * it before its first access to y or to the intermediate v (reads or writes), so
 * a launch with the attribute may overlap the previous kernel up to that point:
 * the layout, the adapter table, A and x are read before it. */
__device__ __forceinline__ void dop_grid_wait()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Lets the kernel after this one on the stream, when it was launched with the
 * programmatic-serialization attribute, start once every CTA of this grid has
 * called this (instead of once they have all exited), so its launch and its
 * work before its own wait overlap this kernel. Safe anywhere: a dependent's
 * griddepcontrol.wait still waits for this whole grid to complete and flush.
 * Only the split sketch's shrink calls it, after its K range, so that its
 * expand (always launched programmatically) is resident when the shrink ends.
 * Where it goes matters (H200, split, 32 and 64 rows, ranks 16 and 64, 4096
 * and 11008 -> 4096, against no call): after the K range, calls 1 - 4%
 * shorter; at the shrink's start, within 5% either way at rank 16 but 4 - 17%
 * longer at rank 64, where the expand's waiting CTAs sit on the SMs during the
 * longer shrink. A persistent shrink does not call it: after its first tile,
 * calls of 64 rows at rank 64 took 13% and 20% longer. */
__device__ __forceinline__ void dop_grid_launch_dependents()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* ---- layout ---------------------------------------------------------------- */

__device__ __forceinline__ int dop_valid_slot(const dop_kparams &p, int slot)
{
    return (slot >= 0 && slot < p.num_slots) ? slot : -1;
}

/* Adapter slot of one row by binary search (large segment counts only). */
__device__ __forceinline__ int dop_row_slot_search(const dop_kparams &p, int row, int nseg)
{
    const int *indptr = reinterpret_cast<const int *>(p.seg_indptr);
    if (row >= p.num_rows || nseg <= 0 || row < indptr[0] || row >= indptr[nseg])
        return -1;
    int lo = 0, hi = nseg; /* largest i < nseg with indptr[i] <= row (skips empty segments) */
    while (hi - lo > 1) {
        int mid = (lo + hi) >> 1;
        if (indptr[mid] <= row)
            lo = mid;
        else
            hi = mid;
    }
    return dop_valid_slot(p, p.seg_slot ? reinterpret_cast<const int *>(p.seg_slot)[lo] : lo);
}

/* Segment i of the segment layout: the tile rows [a, b) it covers (rows row0 ..
 * rend - 1; empty when it covers none) and its slot (-1 when out of range). The
 * three loads are independent: one memory round trip. */
__device__ __forceinline__ int dop_segment(const dop_kparams &p, int i, int row0, int rend, int &a, int &b)
{
    const int *indptr = reinterpret_cast<const int *>(p.seg_indptr);
    a = max(indptr[i], row0);
    b = min(indptr[i + 1], rend);
    return dop_valid_slot(p, p.seg_slot ? reinterpret_cast<const int *>(p.seg_slot)[i] : i);
}

/* Adapter tables of up to DOP_TABLE slots are read with the layout, into shared
 * memory (search_schedule_smem counts it); not in the cp.async-staged schedules,
 * whose ring already fills most of the shared memory, nor in persistent ones
 * (H200, split, 64 rows at rank 64: 3 - 4% longer with it). */
#if DOP_STAGES > 1 || DOP_PERSIST
#define DOP_TABLE 0
#else
#define DOP_TABLE 64 /* SEARCH_TILE_TABLE */
#endif

/* The rows of one CTA grouped by adapter: group g has slot gslot[g], rows
 * {j : bit j of gmask[g]} and that adapter's weights for the CTA's slice.
 * Built by dop_tile_init; read after its closing barrier. */
struct dop_tile {
    int slot[DOP_ROWS];
    int rank_of[DOP_ROWS]; /* rank of each row's adapter (0: no update) */
    const dop_u16 *rA[DOP_ROWS];
    const dop_u16 *rB[DOP_ROWS];
    float rscale[DOP_ROWS];
    int gfirst[DOP_ROWS]; /* a row of the group, to find its adapter */
    unsigned gmask[DOP_ROWS];
    int ngroups;
#if DOP_TABLE
    /* the entries of every slot for the CTA's slice, when num_slots <= DOP_TABLE */
    const dop_u16 *tA[DOP_TABLE];
    const dop_u16 *tB[DOP_TABLE];
    int trank[DOP_TABLE];
    float tscale[DOP_TABLE];
#endif
};

/* The entry of adapter slot s (>= 0) for one slice as the device arrays hold it;
 * dop_clamp_rank gives the rank the kernels use. */
struct dop_entry {
    const dop_u16 *A, *B;
    int rank;
    float scale;
};

__device__ __forceinline__ dop_entry dop_load_entry(const dop_kparams &p, int s, int slice)
{
    int e = s * p.num_slices + slice;
    dop_entry r;
    r.A = reinterpret_cast<const dop_u16 *const *>(p.a_ptrs)[e];
    r.B = reinterpret_cast<const dop_u16 *const *>(p.b_ptrs)[e];
    r.rank = p.ranks ? reinterpret_cast<const int *>(p.ranks)[e] : p.uniform_rank;
    r.scale = p.scales ? reinterpret_cast<const float *>(p.scales)[e] : p.uniform_scale;
    return r;
}

__device__ __forceinline__ int dop_clamp_rank(const dop_kparams &p, const dop_entry &en)
{
    int rank = en.rank < 0 ? 0 : (en.rank > p.max_rank ? p.max_rank : en.rank);
    return en.A && en.B ? rank : 0;
}

/* Fills t (the slot, adapter and group of every row of the tile: rows row0 ..
 * rend - 1, at most DOP_ROWS; the tile's other rows get no update) in one memory
 * round trip where it can: every load that does not depend on another is
 * issued before any result is used -- the layout of the tile's rows (row
 * layout: one load per row; segments: up to DOP_THREADS of them, one thread
 * per segment) and, for tables of up to DOP_TABLE slots, every slot's entry,
 * one thread per slot. Then each segment writes the rows it covers, and warp 0
 * (one lane per row) picks each row's entry (from shared memory, or with one
 * more round trip for larger tables) and groups the rows. Three barriers with
 * segments, two with the row layout. */
__device__ __forceinline__ void dop_tile_init(const dop_kparams &p, int row0, int rend, int slice, dop_tile &t)
{
    const int tid = threadIdx.x;
    const bool table = DOP_TABLE > 0 && p.num_slots <= DOP_TABLE;
    int myslot = -1, sa = 0, sb = 0, ss = -1;
    /* -- the independent loads, into registers -- */
    int nseg = 0;
    bool early = false; /* this thread's segment was read with the count, not after it */
    if (!p.row_slot) {
        /* with a count read at run time, the segments below the call's own
         * count are read with it, not one round trip later (the arrays hold at
         * least that many: dop.h, CAVEATS); a thread whose segment lies past the
         * run-time count drops it */
        early = tid < p.num_segments && p.num_segments <= 4 * DOP_THREADS;
        if (early)
            ss = dop_segment(p, tid, row0, rend, sa, sb);
        nseg = p.num_segments_dev ? *reinterpret_cast<const int *>(p.num_segments_dev) : p.num_segments;
    }
#if DOP_TABLE
    constexpr int TPT = (DOP_TABLE + DOP_THREADS - 1) / DOP_THREADS; /* table slots per thread */
    dop_entry ent[TPT];
    if (table) {
#pragma unroll
        for (int u = 0; u < TPT; ++u) {
            int s = tid + u * DOP_THREADS;
            if (s < p.num_slots)
                ent[u] = dop_load_entry(p, s, slice);
        }
    }
#endif
    if (p.row_slot) {
        if (tid < DOP_ROWS && row0 + tid < p.num_rows)
            myslot = dop_valid_slot(p, reinterpret_cast<const int *>(p.row_slot)[row0 + tid]);
    } else if (nseg > 4 * DOP_THREADS) { /* the segment writes below are skipped */
        if (tid < DOP_ROWS)
            myslot = dop_row_slot_search(p, row0 + tid, nseg);
    } else if (tid >= nseg) {
        ss = -1;
        sa = sb = 0;
    } else if (!early) {
        ss = dop_segment(p, tid, row0, rend, sa, sb);
    }
    /* -- then the shared-memory writes -- */
    if (tid < DOP_ROWS)
        t.slot[tid] = myslot; /* segments: -1 until a segment covers the row */
#if DOP_TABLE
    if (table) {
#pragma unroll
        for (int u = 0; u < TPT; ++u) {
            int s = tid + u * DOP_THREADS;
            if (s < p.num_slots) {
                t.tA[s] = ent[u].A;
                t.tB[s] = ent[u].B;
                t.trank[s] = dop_clamp_rank(p, ent[u]);
                t.tscale[s] = ent[u].scale;
            }
        }
    }
#endif
    if (!p.row_slot && nseg <= 4 * DOP_THREADS) {
        __syncthreads(); /* every row is -1 before segments write theirs */
        for (int r = sa; r < sb; ++r)
            t.slot[r - row0] = ss;
        /* more segments than threads: the rest, one round trip per DOP_THREADS segments */
        for (int i = tid + DOP_THREADS; i < nseg; i += DOP_THREADS) {
            int a, b, s = dop_segment(p, i, row0, rend, a, b);
            for (int r = a; r < b; ++r)
                t.slot[r - row0] = s;
        }
    }
    __syncthreads();
    if (tid < 32) {
        /* warp 0, one lane per row (DOP_ROWS <= 32): the row's entry; then a row
         * with an update joins the rows of its slot, the first row of each slot
         * leads the group, and groups are numbered in row order */
        int j = tid, s = j < DOP_ROWS ? t.slot[j] : -1, rank = 0;
        const dop_u16 *A = 0, *B = 0;
        float scale = 0.f;
        if (s >= 0) {
#if DOP_TABLE
            if (table) {
                A = t.tA[s];
                B = t.tB[s];
                rank = t.trank[s];
                scale = t.tscale[s];
            } else
#endif
            {
                dop_entry en = dop_load_entry(p, s, slice);
                A = en.A;
                B = en.B;
                rank = dop_clamp_rank(p, en);
                scale = en.scale;
            }
        }
        if (j < DOP_ROWS) {
            t.rank_of[j] = rank;
            t.rA[j] = A;
            t.rB[j] = B;
            t.rscale[j] = scale;
        }
        bool has = rank > 0;
        unsigned same, before = (1u << j) - 1u;
        int key = has ? s : -2 - j; /* rows without an update match only themselves */
        asm volatile("match.any.sync.b32 %0, %1, 0xffffffff;" : "=r"(same) : "r"(key));
        bool lead = has && (same & before) == 0u;
        unsigned leaders = __ballot_sync(0xffffffffu, lead);
        if (lead) {
            int gi = __popc(leaders & before);
            t.gfirst[gi] = j;
            t.gmask[gi] = same;
        }
        if (j == 0)
            t.ngroups = __popc(leaders);
    }
    __syncthreads();
}

/* The rows of row tile rt: [row0, rend). Plain tiles are rows rt * DOP_ROWS ..
 * rt * DOP_ROWS + DOP_ROWS - 1, which the caller sets before the call.
 *
 * In the modules of a schedule's seg variant (DOP_SEGT: tensor-core schedules
 * only; the runtime launches one, with p.seg_tiles, when a segment boundary of
 * the call's host layout falls inside a 16-row tile, runtime_seg_row_tiles)
 * the tiles are aligned to segments instead: every
 * segment with rows and a valid slot is cut into ceil(rows / DOP_ROWS) pieces,
 * counted in segment order, and row tile rt is piece rt. So each tile holds
 * one adapter, where a plain tile across a boundary runs its whole 16-row MMA
 * tile once per adapter in it and drops the other adapters' rows. One thread
 * per segment reads its bounds and slot (those below the call's host count
 * with the run-time count, as dop_tile_init does), a block-wide scan counts the
 * pieces, and the thread whose segment holds piece rt publishes its rows. A
 * tile past the last piece gets no rows (0, 0). The host sizes the grid for the
 * most pieces its layout's segment count allows; where the run-time layout
 * needs more tiles than the grid has, or has more segments than the CTA has
 * threads, every CTA sees the same and all keep the plain tiles, which the grid
 * always covers. One more round trip than plain tiles: dop_tile_init reads the
 * segments again. Uniform across the CTA; ends with a barrier when it acts.
 *
 * A variant module rather than a run-time branch in every module: with the
 * branch compiled into the plain modules, ptxas allocated their registers
 * differently (a rank-64 expand from 128 to 144 registers, a 256-thread shrink
 * from 112 to 80 with spills) and identical 4,096-row calls, which never take
 * the branch, ran 10 - 15% longer on the H200; two instantiations of every
 * body in one module kept the registers but took 1.7 times as long to compile. */
static_assert(!DOP_SEGT || DOP_MMA, "row tiles aligned to segments are for tensor-core schedules only");

__device__ __forceinline__ void dop_seg_locate(const dop_kparams &p, int rt, int &row0, int &rend)
{
#if DOP_SEGT
    if (!p.seg_tiles || p.row_slot)
        return; /* the variant launched with the plain tiles' grid (a forced seg schedule), or a row layout */
    __shared__ int wsum[DOP_WARPS];
    __shared__ int pick[2];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int a = 0, b = 0, s = -1; /* the thread's segment: its rows in [0, num_rows), its valid slot or -1 */
    if (tid < p.num_segments)
        s = dop_segment(p, tid, 0, p.num_rows, a, b);
    int nseg = p.num_segments_dev ? *reinterpret_cast<const int *>(p.num_segments_dev) : p.num_segments;
    if (nseg > DOP_THREADS)
        return;
    if (tid >= p.num_segments && tid < nseg) /* a run-time count above the host's */
        s = dop_segment(p, tid, 0, p.num_rows, a, b);
    int n = tid < nseg && s >= 0 && b > a ? (b - a + DOP_ROWS - 1) / DOP_ROWS : 0;
    int inc = n; /* inclusive scan: within the warp, then over the warps' sums */
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
        int o = __shfl_up_sync(0xffffffffu, inc, d);
        if (lane >= d)
            inc += o;
    }
    if (lane == 31)
        wsum[warp] = inc;
    if (tid == 0)
        pick[0] = pick[1] = 0;
    __syncthreads();
    int first = inc - n, total = 0;
#pragma unroll
    for (int w = 0; w < DOP_WARPS; ++w) {
        first += w < warp ? wsum[w] : 0;
        total += wsum[w];
    }
    if (total > p.row_tiles)
        return; /* more pieces than the grid has row tiles: plain tiles */
    if (rt >= first && rt < first + n) {
        int r0 = a + (rt - first) * DOP_ROWS;
        pick[0] = r0;
        pick[1] = min(b, r0 + DOP_ROWS);
    }
    __syncthreads();
    row0 = pick[0];
    rend = pick[1];
#else
    (void)p, (void)rt, (void)row0, (void)rend;
#endif
}

#if DOP_MMA
/* ---- tensor cores (mma.sync.m16n8k16, fp32 accumulate) ----------------------------
 * Fragments (PTX ISA, "mma.m16n8k16" for .f16/.bf16), with g = lane / 4 and
 * t = lane % 4: A (16 x 16, row-major) a0 = (g, 2t..2t+1), a1 = (g+8, 2t..),
 * a2 = (g, 2t+8..), a3 = (g+8, 2t+8..); B (16 x 8, column-major) b0 = (k 2t..2t+1,
 * n g), b1 = (k 2t+8.., n g); C (16 x 8) c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..).
 * Each register holds two consecutive 16-bit elements, the first in the low half. */
static_assert(DOP_ROWS == 16, "mma schedules take 16-row tiles");

__device__ __forceinline__ void dop_mma(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
#if DOP_BF16
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

/* Elements k and k+1 of a row as one register; zero past kend or for a NULL row.
 * aligned: the row and k are 4-byte aligned, so one 32-bit load does. */
__device__ __forceinline__ unsigned dop_ld2(const dop_u16 *row, int k, int kend, bool aligned)
{
    if (!row)
        return 0u;
    if (aligned && k + 1 < kend)
        return __ldg(reinterpret_cast<const unsigned *>(row + k));
    unsigned lo = k < kend ? (unsigned)__ldg(row + k) : 0u;
    unsigned hi = k + 1 < kend ? (unsigned)__ldg(row + k + 1) : 0u;
    return lo | (hi << 16);
}

__device__ __forceinline__ unsigned dop_pack2(dop_u16 lo, dop_u16 hi)
{
    return (unsigned)lo | ((unsigned)hi << 16);
}

/* sv[j][r] += the C fragment c of the n tile whose first rank is r0, for the
 * rows j of the group (mask) and ranks below rank */
__device__ __forceinline__ void dop_shrink_emit(float (*sv)[DOP_MAXR], const float (&c)[4], int r0, unsigned mask,
                                                int rank)
{
    int lane = threadIdx.x & 31, g = lane >> 2, r = r0 + 2 * (lane & 3);
    if (mask >> g & 1u) {
        if (r < rank)
            atomicAdd(&sv[g][r], c[0]);
        if (r + 1 < rank)
            atomicAdd(&sv[g][r + 1], c[1]);
    }
    if (mask >> (g + 8) & 1u) {
        if (r < rank)
            atomicAdd(&sv[g + 8][r], c[2]);
        if (r + 1 < rank)
            atomicAdd(&sv[g + 8][r + 1], c[3]);
    }
}

#if DOP_STAGES > 1
/* ---- cp.async staging of x and A (sm_80+) -------------------------------------------
 * A chunk of DOP_KC elements of K: x [16 rows][DOP_KC] and A [ranks rounded up to
 * 8][DOP_KC], each row padded by 8 elements (16 bytes) so that the 8 row
 * addresses of one ldmatrix phase fall in different banks. */
#define DOP_SR ((DOP_MAXR + 7) / 8 * 8) /* A rows of a stage */
#define DOP_SP (DOP_KC + 8)             /* elements per staged row */
struct dop_stage {
    dop_u16 x[16][DOP_SP];
    dop_u16 a[DOP_SR][DOP_SP];
};
#define DOP_STAGE_A (16 * DOP_SP * 2) /* byte offset of a stage's A rows */
static_assert(sizeof(dop_stage) == (16 + DOP_SR) * DOP_SP * 2, "no padding: A rows start right after x's 16 rows");

/* 16 bytes global -> shared, bypassing L1; valid == false reads nothing and
 * writes zeros (src-size 0), so the tail and absent rows cost no load. */
__device__ __forceinline__ void dop_cp16(unsigned dst, const void *src, bool valid)
{
    asm volatile("{ .reg .u64 g; cvta.to.global.u64 g, %1; cp.async.cg.shared.global [%0], [g], 16, %2; }"
                 :
                 : "r"(dst), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void dop_cp_commit()
{
    asm volatile("cp.async.commit_group;" ::: "memory");
}

/* Waits until at most N of this thread's committed groups are still in flight. */
template <int N> __device__ __forceinline__ void dop_cp_wait()
{
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* ldmatrix at a shared-memory address (dop_smem_addr) */
__device__ __forceinline__ void dop_ldm_x4(unsigned (&r)[4], unsigned addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

__device__ __forceinline__ void dop_ldm_x2(unsigned (&r)[2], unsigned addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(addr)
                 : "memory");
}

/* A thread's copies into a stage, fixed for a row group. A stage is the rows
 * x[0..15] then A[0..arows - 1], DOP_KC / 8 16-byte segments each. When the
 * thread count is a multiple of that, every segment of a thread has the same K
 * offset (koff) and its rows step by DOP_THREADS / (DOP_KC / 8), so a chunk's
 * copies are pointer increments (dop_stage_load); else each copy finds its row
 * and segment by division (kept for kc 48, 80, 96, 112 with few threads). */
struct dop_copies {
    const dop_u16 *x, *a; /* the thread's first x and A row, at K = koff */
    long long xstep, astep;
    unsigned sx, sa; /* their byte offsets in a stage */
    int rx, na;      /* their rows (x: < 16 or none; A: from 0) */
    int koff;
};

#define DOP_SEGS (DOP_KC / 8)
#define DOP_CP_FIXED (DOP_THREADS % DOP_SEGS == 0)

__device__ __forceinline__ dop_copies dop_copies_make(const dop_kparams &p, const dop_u16 *xb, const dop_u16 *A,
                                                      int row0)
{
    dop_copies c;
#if DOP_CP_FIXED
    constexpr int RSTEP = DOP_THREADS / DOP_SEGS;
    int r = threadIdx.x / DOP_SEGS; /* the thread's first stage row */
    c.koff = threadIdx.x % DOP_SEGS * 8;
    c.rx = r;
    c.na = r < 16 ? r + (16 - r + RSTEP - 1) / RSTEP * RSTEP - 16 : r - 16;
    c.x = xb + (long long)(row0 + c.rx) * p.ldx + c.koff; /* read only for rows of the group */
    c.a = A + (long long)c.na * p.d_in + c.koff;
    c.xstep = (long long)RSTEP * p.ldx;
    c.astep = (long long)RSTEP * p.d_in;
    c.sx = (unsigned)(c.rx * DOP_SP + c.koff) * 2u;
    c.sa = DOP_STAGE_A + (unsigned)(c.na * DOP_SP + c.koff) * 2u;
#else
    (void)p, (void)xb, (void)A, (void)row0;
    c = dop_copies{};
#endif
    return c;
}

/* Issues the copies of the chunk at K = kb into the stage at shared address sb:
 * the rows of the group (mask) of x and the rank rows of A; everything else of
 * the stage (rows outside the group, ranks up to the n tile, K past k1) is
 * zero-filled, so no address outside x, A or [k0, k1) is read. k1 and every
 * K offset are multiples of 8, so a 16-byte segment is wholly in or out. */
__device__ __forceinline__ void dop_stage_load(const dop_kparams &p, const dop_copies &c, unsigned sb,
                                               const dop_u16 *xb, const dop_u16 *A, int row0, unsigned mask, int rank,
                                               int arows, int kb, int k1)
{
#if DOP_CP_FIXED
    (void)p, (void)row0;
    constexpr int RSTEP = DOP_THREADS / DOP_SEGS;
    constexpr unsigned RB = RSTEP * DOP_SP * 2; /* bytes between a thread's stage rows */
    bool kin = kb + c.koff < k1;
    const dop_u16 *src = c.x + kb;
    unsigned dst = sb + c.sx;
    if constexpr (16 % RSTEP == 0 && DOP_SR % RSTEP == 0) {
        if (arows == DOP_SR) {
            /* every thread has 16 / RSTEP x rows and DOP_SR / RSTEP A rows (na == rx):
             * unrolled, at fixed shared offsets */
#pragma unroll
            for (int i = 0; i < 16 / RSTEP; ++i, src += c.xstep) {
                bool ok = kin && (mask >> (c.rx + i * RSTEP) & 1u);
                dop_cp16(dst + i * RB, ok ? src : xb, ok);
            }
            src = c.a + kb;
            dst = sb + c.sa;
#pragma unroll
            for (int i = 0; i < DOP_SR / RSTEP; ++i, src += c.astep) {
                bool ok = kin && c.na + i * RSTEP < rank;
                dop_cp16(dst + i * RB, ok ? src : A, ok);
            }
            return;
        }
    }
    for (int r = c.rx; r < 16; r += RSTEP, src += c.xstep, dst += RB) {
        bool ok = kin && (mask >> r & 1u); /* rows of the group are < num_rows */
        dop_cp16(dst, ok ? src : xb, ok);
    }
    src = c.a + kb;
    dst = sb + c.sa;
    for (int n = c.na; n < arows; n += RSTEP, src += c.astep, dst += RB) {
        bool ok = kin && n < rank;
        dop_cp16(dst, ok ? src : A, ok);
    }
#else
    (void)c;
    int total = (16 + arows) * DOP_SEGS;
    for (int i = threadIdx.x; i < total; i += DOP_THREADS) {
        int r = i / DOP_SEGS, sg = i - r * DOP_SEGS, k = kb + sg * 8;
        unsigned dst = sb + (unsigned)(r * DOP_SP + sg * 8) * 2u; /* x then A: rows of DOP_SP elements */
        if (r < 16) {
            bool ok = k < k1 && (mask >> r & 1u);
            dop_cp16(dst, ok ? xb + (long long)(row0 + r) * p.ldx + k : xb, ok);
        } else {
            int n = r - 16;
            bool ok = k < k1 && n < rank;
            dop_cp16(dst, ok ? A + (long long)n * p.d_in + k : A, ok);
        }
    }
#endif
}

/* One row group's sv[j][r] += sum over [k0, k1) of x[row0 + j][k] * A[r][k]
 * through the cp.async ring. Chunks of DOP_KC go round DOP_STAGES buffers:
 * the first DOP_STAGES - 1 are issued ahead; at chunk c every thread waits
 * for its copies of chunk c (wait_group DOP_STAGES - 2: one group is
 * committed per chunk, empty ones too, so the count is exact), then a barrier
 * makes all threads' copies visible and guarantees every warp is done with
 * chunk c - 1, whose buffer the copies of chunk c + DOP_STAGES - 1 then
 * reuse. Warps take (n tile, part of the chunk's k16 steps) items, fixed for
 * the group, and keep their accumulators across chunks. Every thread of the
 * CTA must call this (barriers). */
__device__ __forceinline__ void dop_shrink_group_staged(const dop_kparams &p, const dop_tile &t, int gi, int row0,
                                                        int k0, int k1, float (*sv)[DOP_MAXR],
                                                        dop_stage (&st)[DOP_STAGES])
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const dop_u16 *xb = reinterpret_cast<const dop_u16 *>(p.x);
    int j0 = t.gfirst[gi], rank = t.rank_of[j0];
    unsigned mask = t.gmask[gi];
    const dop_u16 *A = t.rA[j0];
    constexpr int U = DOP_KC / 16;                             /* k16 steps of a chunk */
    constexpr int MAXI = (DOP_SR / 8 + DOP_WARPS - 1) / DOP_WARPS; /* items of one warp at most */
    int ntiles = (rank + 7) / 8;
    int parts = DOP_WARPS / ntiles;
    parts = parts < 1 ? 1 : (parts > U ? U : parts);
    int nitems = ntiles * parts;
    int nchunks = (k1 - k0 + DOP_KC - 1) / DOP_KC;
    /* every other row tile takes its chunks from half way round the K range, so
     * concurrent row tiles do not all read the same K columns (and A rows) at once:
     * H200, 24 prefill cases, identical layout up to 5% shorter than in K order, four
     * uniform cases 3 - 6% longer (docs/kernels.md) */
    int rot = (row0 >> 4 & 1) * (nchunks >> 1);
    dop_copies cp = dop_copies_make(p, xb, A, row0);
    unsigned ring = dop_smem_addr(&st[0]);
    constexpr unsigned SB = sizeof(dop_stage);
    float c[MAXI][4];
#pragma unroll
    for (int i = 0; i < MAXI; ++i)
        c[i][0] = c[i][1] = c[i][2] = c[i][3] = 0.f;
#pragma unroll
    for (int s = 0; s < DOP_STAGES - 1; ++s) {
        if (s < nchunks)
            dop_stage_load(p, cp, ring + s * SB, xb, A, row0, mask, rank, ntiles * 8,
                           k0 + dop_wrap(s + rot, nchunks) * DOP_KC, k1);
        dop_cp_commit();
    }
    /* each item's n tile and k16 steps, fixed for the group (no division per chunk),
     * and this lane's ldmatrix rows: x matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15)
     * give a0..a3; A: n rows x (k 0-7 | 8-15) give b0, b1 */
    int nt_of[MAXI], s0_of[MAXI], s1_of[MAXI];
#pragma unroll
    for (int i = 0; i < MAXI; ++i) {
        int item = warp + i * DOP_WARPS;
        nt_of[i] = item % ntiles;
        s0_of[i] = item / ntiles * U / parts;
        s1_of[i] = (item / ntiles + 1) * U / parts;
    }
    unsigned xoff = (unsigned)(((lane & 7) + ((lane >> 3) & 1) * 8) * DOP_SP + (lane >> 4) * 8) * 2u;
    unsigned aoff = DOP_STAGE_A + (unsigned)((lane & 7) * DOP_SP + ((lane >> 3) & 1) * 8) * 2u;
    /* fast path: the group's n tiles are all of the stage's (the rank rounds up
     * to DOP_SR), so the split of the work is known at compile time -- FNPW n
     * tiles of one K part per warp, FSTEPS k16 steps each -- and a batch of FB
     * steps issues all its ldmatrix before its mmas (the x fragment of a step
     * serves every n tile of the warp; one n tile alternates two accumulators) */
    constexpr int FNT = DOP_SR / 8;
    constexpr int FPARTS = DOP_WARPS / FNT < 1 ? 1 : (DOP_WARPS / FNT > U ? U : DOP_WARPS / FNT);
    constexpr int FNPW = FNT >= DOP_WARPS ? FNT / DOP_WARPS : 1;
    constexpr int FSTEPS = U / FPARTS;
    constexpr int FACC = FNPW == 1 ? 2 : 1;
    constexpr int FB0 = 32 / (4 + 2 * FNPW); /* steps per batch: up to 32 fragment registers */
    constexpr int FB = FB0 >= FSTEPS ? FSTEPS : (FB0 >= 4 ? 4 : (FB0 >= 2 ? 2 : 1));
    constexpr bool FOK = (FNT >= DOP_WARPS ? FNT % DOP_WARPS == 0 : true) && U % FPARTS == 0 && FSTEPS % FB == 0;
    bool fast = FOK && ntiles == FNT; /* uniform across the CTA */
    bool factive = warp < FNT * FPARTS || FNT >= DOP_WARPS;
    int fnt0 = FNT >= DOP_WARPS ? warp : warp % FNT, fs0 = FNT >= DOP_WARPS ? 0 : warp / FNT * FSTEPS;
    unsigned fxo = xoff + (unsigned)fs0 * 32u, fao = aoff + (unsigned)(fnt0 * 8 * DOP_SP + fs0 * 16) * 2u;
    float fc[FNPW][FACC][4];
#pragma unroll
    for (int j = 0; j < FNPW; ++j)
#pragma unroll
        for (int a = 0; a < FACC; ++a)
            fc[j][a][0] = fc[j][a][1] = fc[j][a][2] = fc[j][a][3] = 0.f;
    for (int ch = 0; ch < nchunks; ++ch) {
        dop_cp_wait<DOP_STAGES - 2>(); /* chunk ch has landed (this thread's copies) */
        __syncthreads();               /* everyone's copies; everyone is past chunk ch - 1 */
        int nx = ch + DOP_STAGES - 1;
        if (nx < nchunks)
            dop_stage_load(p, cp, ring + nx % DOP_STAGES * SB, xb, A, row0, mask, rank, ntiles * 8,
                           k0 + dop_wrap(nx + rot, nchunks) * DOP_KC, k1);
        dop_cp_commit();
        unsigned sb = ring + ch % DOP_STAGES * SB;
        /* K past k1 in the last chunk was zero-filled, so its steps add nothing */
        if (fast) {
            if (factive) {
#pragma unroll
                for (int b0 = 0; b0 < FSTEPS; b0 += FB) {
                    unsigned fa[FB][4], fb[FB][FNPW][2];
#pragma unroll
                    for (int s = 0; s < FB; ++s) {
                        dop_ldm_x4(fa[s], sb + fxo + (b0 + s) * 32);
#pragma unroll
                        for (int j = 0; j < FNPW; ++j)
                            dop_ldm_x2(fb[s][j], sb + fao + (unsigned)(j * DOP_WARPS * 8 * DOP_SP * 2 + (b0 + s) * 32));
                    }
#pragma unroll
                    for (int s = 0; s < FB; ++s)
#pragma unroll
                        for (int j = 0; j < FNPW; ++j)
                            dop_mma(fc[j][(b0 + s) % FACC], fa[s], fb[s][j]);
                }
            }
            continue;
        }
#pragma unroll
        for (int i = 0; i < MAXI; ++i) {
            if (warp + i * DOP_WARPS >= nitems)
                break; /* uniform across the warp */
            unsigned bx = sb + xoff, ba = sb + aoff + (unsigned)nt_of[i] * 8u * DOP_SP * 2u;
#pragma unroll
            for (int s = 0; s < U; ++s) {
                if (s < s0_of[i] || s >= s1_of[i])
                    continue;
                unsigned fa[4], fb[2];
                dop_ldm_x4(fa, bx + s * 32);
                dop_ldm_x2(fb, ba + s * 32);
                dop_mma(c[i], fa, fb);
            }
        }
    }
    dop_cp_wait<0>(); /* only empty groups can be left */
    __syncthreads();  /* the ring is free for the next group */
    if (fast) {
        if (factive) {
#pragma unroll
            for (int j = 0; j < FNPW; ++j) {
                float r4[4];
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    r4[e] = FACC == 2 ? fc[j][0][e] + fc[j][FACC - 1][e] : fc[j][0][e];
                dop_shrink_emit(sv, r4, (fnt0 + j * DOP_WARPS) * 8, mask, rank);
            }
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < MAXI; ++i) {
        int item = warp + i * DOP_WARPS;
        if (item >= nitems)
            break;
        dop_shrink_emit(sv, c[i], (item % ntiles) * 8, mask, rank);
    }
}
#endif /* DOP_STAGES > 1 */

/* sv[j][r] += sum over [k0, k1) of x[row0 + j][k] * A[r][k], by tensor cores.
 * With DOP_STAGES > 1 a group whose x, A, ldx, d_in and k0 allow 16-byte
 * copies goes through the cp.async ring (dop_shrink_group_staged); otherwise,
 * and with DOP_STAGES 1, fragments come from global memory as follows.
 * Warps take (n tile of 8 ranks, K part) items; the 16 rows of the tile are the
 * M dimension, so a group of fewer rows wastes the other rows' MACs (results of
 * rows outside the group are dropped). */
__device__ __forceinline__ void dop_shrink_range(const dop_kparams &p, const dop_tile &t, int row0, int k0, int k1,
                                                 float (*sv)[DOP_MAXR])
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    const dop_u16 *xb = reinterpret_cast<const dop_u16 *>(p.x);
    const dop_u16 *xr0 = row0 + g < p.num_rows ? xb + (long long)(row0 + g) * p.ldx : 0;
    const dop_u16 *xr1 = row0 + g + 8 < p.num_rows ? xb + (long long)(row0 + g + 8) * p.ldx : 0;
    bool xal = dop_aligned(xb, 4) && p.ldx % 2 == 0;
#if DOP_STAGES > 1
    __shared__ alignas(16) dop_stage st[DOP_STAGES];
    bool xal16 = dop_aligned(xb, 16) && p.ldx % 8 == 0 && p.d_in % 8 == 0 && k0 % 8 == 0;
#endif
    for (int gi = 0; gi < t.ngroups; ++gi) {
        int j0 = t.gfirst[gi], rank = t.rank_of[j0];
        unsigned mask = t.gmask[gi];
        const dop_u16 *A = t.rA[j0];
#if DOP_STAGES > 1
        if (xal16 && dop_aligned(A, 16)) { /* uniform across the CTA */
            dop_shrink_group_staged(p, t, gi, row0, k0, k1, sv, st);
            continue;
        }
#endif
        bool al = xal && dop_aligned(A, 4) && p.d_in % 2 == 0;
        int ntiles = (rank + 7) / 8;
        int parts = DOP_WARPS / ntiles > 1 ? DOP_WARPS / ntiles : 1;
        int span = (k1 - k0 + parts - 1) / parts;
        span = (span + 15) / 16 * 16;
        for (int item = warp; item < ntiles * parts; item += DOP_WARPS) {
            int nt = item % ntiles, part = item / ntiles;
            int a = k0 + part * span, b = min(k1, a + span);
            if (a >= b)
                continue;
            int n = nt * 8 + g;
            const dop_u16 *arow = n < rank ? A + (long long)n * p.d_in : 0;
            float c[4] = {0.f, 0.f, 0.f, 0.f};
            constexpr int U = DOP_KC / 16;
            for (int kk = a; kk < b; kk += 16 * U) {
                unsigned fa[U][4], fb[U][2];
#pragma unroll
                for (int u = 0; u < U; ++u) {
                    int k = kk + u * 16 + 2 * tq;
                    fa[u][0] = dop_ld2(xr0, k, b, al);
                    fa[u][1] = dop_ld2(xr1, k, b, al);
                    fa[u][2] = dop_ld2(xr0, k + 8, b, al);
                    fa[u][3] = dop_ld2(xr1, k + 8, b, al);
                    fb[u][0] = dop_ld2(arow, k, b, al);
                    fb[u][1] = dop_ld2(arow, k + 8, b, al);
                }
#pragma unroll
                for (int u = 0; u < U; ++u)
                    if (kk + u * 16 < b)
                        dop_mma(c, fa[u], fb[u]);
            }
            dop_shrink_emit(sv, c, nt * 8, mask, rank);
        }
    }
}

/* v (fp32) as two 16-bit parts, hi + lo, so the expand keeps about 16 bits of
 * the intermediate (the tensor cores take 16-bit inputs): two mmas per k step. */
__device__ __forceinline__ void dop_split2(float v0, float v1, unsigned &hi, unsigned &lo)
{
    dop_u16 h0 = dop_from_f32(v0), h1 = dop_from_f32(v1);
    hi = dop_pack2(h0, h1);
    lo = dop_pack2(dop_from_f32(v0 - dop_to_f32(h0)), dop_from_f32(v1 - dop_to_f32(h1)));
}

/* y[row0 + j, col0 + n] += scale * sum_r sv[j][r] * B[col0 + n][r], by tensor cores.
 * Per group, each warp builds the A fragments of the intermediate (two 16-bit
 * parts per step of 16 ranks) once and keeps them in registers; it then takes
 * batches of DOP_EXP_NB adjacent n tiles (8 output columns each) and issues
 * every load of a batch -- the B fragments and the y pairs of the group's
 * rows -- before the batch's mmas, so a batch costs one memory round trip.
 * With 4 n tiles (rank <= 64), y 16-byte aligned and outside the cluster
 * kernel (DOP_EXP_WIDE), a batch's 32 columns are read and written as one
 * 16-byte access per lane and row: the quad's lanes swap their results
 * (dop_quad_transpose) so each holds 8 adjacent columns, and a warp's access
 * covers 64 contiguous bytes of each of its 8 rows (else 32-bit pairs, 16
 * bytes per row and n tile: four times the requests, each half a sector). y
 * is read with plain loads (not the read-only path): this kernel writes it. */
#define DOP_EXP_KS ((DOP_MAXR + 15) / 16)  /* k steps of 16 ranks */
#define DOP_EXP_NB (DOP_MAXR <= 64 ? 4 : 2) /* n tiles per batch (registers: NB * KS * 2 for B) */
/* 16-byte y accesses: not in the cluster kernel, whose expand shares its register
 * budget with the shrink and the exchange (94 -> 122 registers at rank 16 with
 * 2 stages, and a measured case 28% slower: docs/kernels.md) */
#define DOP_EXP_WIDE (DOP_EXP_NB == 4 && DOP_SKETCH != 4)
/* B fragments of whole batches without checks: up to rank 32 (at rank 64 the
 * hoisted loads took the expand from 128 to 154 registers and 7 of 8 measured
 * cases got slower, by up to 14%) */
#define DOP_EXP_DIRECT (DOP_EXP_WIDE && DOP_EXP_KS <= 2)

/* Elements c and c + 1 of a y row as one register (low half first); zero past cend.
 * aligned: the row and c are 4-byte aligned, so one 32-bit load does. */
__device__ __forceinline__ unsigned dop_ldy2(const dop_u16 *row, int c, int cend, bool aligned)
{
    if (aligned && c + 1 < cend)
        return *reinterpret_cast<const unsigned *>(row + c);
    unsigned lo = c < cend ? (unsigned)row[c] : 0u;
    unsigned hi = c + 1 < cend ? (unsigned)row[c + 1] : 0u;
    return lo | (hi << 16);
}

/* The four lanes of a quad (tq = lane % 4) hold the C fragments of 4 adjacent
 * n tiles: c[n][2h], c[n][2h + 1] are columns 8n + 2tq, 8n + 2tq + 1 of row h
 * (g or g + 8). Afterwards lane tq holds n tile tq: c[j][2h], c[j][2h + 1] are
 * its columns 2j, 2j + 1, i.e. columns 8tq .. 8tq + 7 of the batch, contiguous.
 * A 4 x 4 transpose of pairs across the quad in two butterfly rounds (lane bit
 * m swaps the pairs whose tile index differs from the lane's in bit m). Every
 * lane of the warp must call it. */
__device__ __forceinline__ void dop_quad_transpose(float (&c)[4][4], int tq)
{
#pragma unroll
    for (int m = 1; m <= 2; m <<= 1) {
        bool up = tq & m;
#pragma unroll
        for (int n = 0; n < 4; ++n) {
            if (n & m)
                continue;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float send = up ? c[n][e] : c[n | m][e];
                float got = __shfl_xor_sync(0xffffffffu, send, m);
                if (up)
                    c[n][e] = got;
                else
                    c[n | m][e] = got;
            }
        }
    }
}

/* c = the n tile's product: both 16-bit parts of the intermediate times its B fragments */
__device__ __forceinline__ void dop_expand_mma(float (&c)[4], const unsigned (&hi)[DOP_EXP_KS][4],
                                               const unsigned (&lo)[DOP_EXP_KS][4],
                                               const unsigned (&fb)[DOP_EXP_KS][2], int rank)
{
    c[0] = c[1] = c[2] = c[3] = 0.f;
#pragma unroll
    for (int s = 0; s < DOP_EXP_KS; ++s)
        if (s * 16 < rank) {
            dop_mma(c, hi[s], fb[s]);
            dop_mma(c, lo[s], fb[s]);
        }
}

__device__ __forceinline__ void dop_expand_tile(const dop_kparams &p, const dop_tile &t, int slice, int row0,
                                                int col0, const float (*sv)[DOP_MAXR])
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
    int dout = p.d_out[slice];
    int cend = col0 + min(DOP_COLS, dout - col0); /* columns past it belong to another CTA or none */
    int ntiles = (cend - col0 + 7) / 8;
    int nbatch = (ntiles + DOP_EXP_NB - 1) / DOP_EXP_NB;
    dop_u16 *y = reinterpret_cast<dop_u16 *>(p.y) + p.y_col[slice];
    bool yal = dop_aligned(y, 4) && p.ldy % 2 == 0;
#if DOP_EXP_WIDE
    bool y16 = dop_aligned(y, 16) && p.ldy % 8 == 0 && col0 % 8 == 0; /* whole batches as 16-byte accesses */
#endif
    for (int gi = 0; gi < t.ngroups; ++gi) {
        int j0 = t.gfirst[gi], rank = t.rank_of[j0];
        unsigned mask = t.gmask[gi];
        const dop_u16 *B = t.rB[j0];
        float scale = t.rscale[j0];
        bool al = dop_aligned(B, 4) && rank % 2 == 0;
#if DOP_EXP_DIRECT
        bool bfull = al && rank % 16 == 0; /* B fragments as plain 32-bit loads */
#endif
        bool in0 = mask >> g & 1u, in1 = mask >> (g + 8) & 1u; /* this lane's two rows */
        dop_u16 *yr0 = in0 ? y + (long long)(row0 + g) * p.ldy : y, *yr1 = in1 ? y + (long long)(row0 + g + 8) * p.ldy : y;
        unsigned hi[DOP_EXP_KS][4], lo[DOP_EXP_KS][4];
#pragma unroll
        for (int s = 0; s < DOP_EXP_KS; ++s) {
            int k = s * 16 + 2 * tq;
            float v00 = k < rank ? sv[g][k] : 0.f, v01 = k + 1 < rank ? sv[g][k + 1] : 0.f;
            float v10 = k < rank ? sv[g + 8][k] : 0.f, v11 = k + 1 < rank ? sv[g + 8][k + 1] : 0.f;
            float v02 = k + 8 < rank ? sv[g][k + 8] : 0.f, v03 = k + 9 < rank ? sv[g][k + 9] : 0.f;
            float v12 = k + 8 < rank ? sv[g + 8][k + 8] : 0.f, v13 = k + 9 < rank ? sv[g + 8][k + 9] : 0.f;
            dop_split2(v00, v01, hi[s][0], lo[s][0]);
            dop_split2(v10, v11, hi[s][1], lo[s][1]);
            dop_split2(v02, v03, hi[s][2], lo[s][2]);
            dop_split2(v12, v13, hi[s][3], lo[s][3]);
        }
        for (int b = warp; b < nbatch; b += DOP_WARPS) {
            int cb = col0 + b * DOP_EXP_NB * 8; /* first column of the batch */
            /* wide: the batch's 32 columns are in the tile and 16-byte aligned, so
             * each lane reads and writes its rows' 8 columns 8 * tq .. 8 * tq + 7
             * as one 16-byte access (uniform across the warp) */
#if DOP_EXP_WIDE
            bool wide = y16 && cb + 32 <= cend;
#else
            bool wide = false;
#endif
            unsigned fb[DOP_EXP_NB][DOP_EXP_KS][2], yv[DOP_EXP_NB][2];
#if DOP_EXP_DIRECT
            if (wide && bfull) {
                /* every B row of the batch exists and every k step is whole: 32-bit
                 * loads at fixed offsets, no checks */
                const unsigned *bb = reinterpret_cast<const unsigned *>(B + (long long)(cb + g) * rank + 2 * tq);
#pragma unroll
                for (int n = 0; n < DOP_EXP_NB; ++n)
#pragma unroll
                    for (int s = 0; s < DOP_EXP_KS; ++s) {
                        fb[n][s][0] = s * 16 < rank ? __ldg(bb + n * 4 * rank + s * 8) : 0u;
                        fb[n][s][1] = s * 16 < rank ? __ldg(bb + n * 4 * rank + s * 8 + 4) : 0u;
                    }
            } else
#endif
#pragma unroll
            for (int n = 0; n < DOP_EXP_NB; ++n) {
                int nb = cb + n * 8; /* first column of the n tile */
                const dop_u16 *brow = nb + g < cend ? B + (long long)(nb + g) * rank : 0;
#pragma unroll
                for (int s = 0; s < DOP_EXP_KS; ++s) {
                    int k = s * 16 + 2 * tq;
                    fb[n][s][0] = s * 16 < rank ? dop_ld2(brow, k, rank, al) : 0u;
                    fb[n][s][1] = s * 16 < rank ? dop_ld2(brow, k + 8, rank, al) : 0u;
                }
                if (!wide) {
                    int cc = nb + 2 * tq;
                    yv[n][0] = in0 ? dop_ldy2(yr0, cc, cend, yal) : 0u;
                    yv[n][1] = in1 ? dop_ldy2(yr1, cc, cend, yal) : 0u;
                }
            }
            float c[DOP_EXP_NB][4];
#if DOP_EXP_WIDE
            uint4 yw[2];
            if (wide) {
                yw[0] = in0 ? *reinterpret_cast<const uint4 *>(yr0 + cb + 8 * tq) : make_uint4(0u, 0u, 0u, 0u);
                yw[1] = in1 ? *reinterpret_cast<const uint4 *>(yr1 + cb + 8 * tq) : make_uint4(0u, 0u, 0u, 0u);
            }
            /* every n tile's mmas before any result is used (measured faster here than
             * one n tile after the other, which the cluster kernel keeps) */
#pragma unroll
            for (int n = 0; n < DOP_EXP_NB; ++n)
                dop_expand_mma(c[n], hi, lo, fb[n], rank);
            if (wide) {
                dop_quad_transpose(c, tq);
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    if (!(h ? in1 : in0))
                        continue;
                    unsigned w[4] = {yw[h].x, yw[h].y, yw[h].z, yw[h].w};
#pragma unroll
                    for (int j = 0; j < 4; ++j)
                        w[j] = dop_pack2(dop_from_f32(dop_to_f32((dop_u16)(w[j] & 0xffffu)) + scale * c[j][2 * h]),
                                         dop_from_f32(dop_to_f32((dop_u16)(w[j] >> 16)) + scale * c[j][2 * h + 1]));
                    *reinterpret_cast<uint4 *>((h ? yr1 : yr0) + cb + 8 * tq) = make_uint4(w[0], w[1], w[2], w[3]);
                }
                continue;
            }
#endif
#pragma unroll
            for (int n = 0; n < DOP_EXP_NB; ++n) {
#if !DOP_EXP_WIDE
                dop_expand_mma(c[n], hi, lo, fb[n], rank);
#endif
                int cc = cb + n * 8 + 2 * tq;
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    if (!(h ? in1 : in0))
                        continue;
                    dop_u16 *yr = h ? yr1 : yr0;
                    dop_u16 e0 = dop_from_f32(dop_to_f32((dop_u16)(yv[n][h] & 0xffffu)) + scale * c[n][2 * h]);
                    dop_u16 e1 = dop_from_f32(dop_to_f32((dop_u16)(yv[n][h] >> 16)) + scale * c[n][2 * h + 1]);
                    if (yal && cc + 1 < cend) {
                        *reinterpret_cast<unsigned *>(yr + cc) = dop_pack2(e0, e1);
                    } else {
                        if (cc < cend)
                            yr[cc] = e0;
                        if (cc + 1 < cend)
                            yr[cc + 1] = e1;
                    }
                }
            }
        }
    }
}
#else /* CUDA cores */
/* ---- shrink core --------------------------------------------------------------- */

/* acc[j] += sum over this lane's share of [k0, k1) of A[k] * x_j[k] for the rows
 * j of mask. Every lane first issues DOP_UNROLL loads of A, then the x loads
 * (read-only path; rows of one tile share them through L1), then the FMAs. */
template <int V>
__device__ __forceinline__ void dop_dot(const dop_u16 *__restrict__ arow, const dop_u16 *__restrict__ x0, long long ldx,
                                        int k0, int k1, unsigned mask, float (&acc)[DOP_ROWS])
{
    typedef typename dop_vec_t<V>::type vt;
    constexpr int U0 = DOP_KC / (32 * V), U = U0 < 1 ? 1 : (U0 > 16 ? 16 : U0);
    int lane = threadIdx.x & 31;
    for (int c = k0 + lane * V; c < k1; c += 32 * V * U) {
        vt a[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            int cc = c + u * 32 * V;
            if (cc < k1)
                a[u] = __ldg(reinterpret_cast<const vt *>(arow + cc));
        }
#pragma unroll
        for (int j = 0; j < DOP_ROWS; ++j) {
            if (!(mask >> j & 1u))
                continue;
            const dop_u16 *xr = x0 + j * ldx;
#pragma unroll
            for (int u = 0; u < U; ++u) {
                int cc = c + u * 32 * V;
                if (cc < k1) {
                    union { vt v; dop_u16 h[V]; } ua, ux;
                    ua.v = a[u];
                    ux.v = __ldg(reinterpret_cast<const vt *>(xr + cc));
#pragma unroll
                    for (int e = 0; e < V; ++e)
                        acc[j] = fmaf(dop_to_f32(ua.h[e]), dop_to_f32(ux.h[e]), acc[j]);
                }
            }
        }
    }
}

/* sv[j][r] += A[r, k0 .. k1) . x[row0 + j, k0 .. k1) for every row j of the tile
 * with an adapter and r < its rank. Rank indices go round the warps; with at
 * least twice as many warps as ranks the K range is split into parts, one
 * (rank index, part) item per warp, and the partial sums meet in shared memory
 * (atomic adds). Only that case divides (by the rank): four integer divisions
 * were about 100 of the 520 instructions a warp ran in a 1-row cluster call
 * (Nsight Compute). H200, 120 decode cases: 3.5% shorter warm than the same
 * build with the divisions; but the split sketch's 1-row, 4-warp shrink got
 * slower at 128 rows (calls 10 - 22% longer), which ptxas's allocation of this
 * loop (64 registers and a small spill) probably explains; not solved. */
__device__ __forceinline__ void dop_shrink_range(const dop_kparams &p, const dop_tile &t, int row0, int k0, int k1,
                                                 float (*sv)[DOP_MAXR])
{
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const dop_u16 *x0 = reinterpret_cast<const dop_u16 *>(p.x) + (long long)row0 * p.ldx;
    bool xvec = DOP_VEC > 1 && dop_aligned(x0, DOP_VEC * 2) && p.ldx % DOP_VEC == 0 && p.d_in % DOP_VEC == 0;
    for (int g = 0; g < t.ngroups; ++g) {
        int j0 = t.gfirst[g], rank = t.rank_of[j0];
        unsigned mask = t.gmask[g];
        const dop_u16 *A = t.rA[j0];
        bool vec = xvec && dop_aligned(A, DOP_VEC * 2);
        int r = warp, a = k0, b = k1; /* one part: rank indices warp, warp + DOP_WARPS, ... */
        if (2 * rank <= DOP_WARPS) {
            int parts = DOP_WARPS / rank, part = warp / rank;
            int span = (k1 - k0 + parts - 1) / parts;
            span = (span + 32 * DOP_VEC - 1) / (32 * DOP_VEC) * (32 * DOP_VEC); /* keeps vector alignment */
            r = part < parts ? warp - part * rank : rank; /* warps past rank * parts have no item */
            a = k0 + part * span;
            b = min(k1, a + span);
        }
        for (; r < rank; r += DOP_WARPS) { /* with parts, at most one pass: DOP_WARPS >= 2 * rank */
            if (a >= b)
                continue;
            float acc[DOP_ROWS];
#pragma unroll
            for (int j = 0; j < DOP_ROWS; ++j)
                acc[j] = 0.f;
            const dop_u16 *arow = A + (long long)r * p.d_in;
            if (vec)
                dop_dot<DOP_VEC>(arow, x0, p.ldx, a, b, mask, acc);
            else
                dop_dot<1>(arow, x0, p.ldx, a, b, mask, acc);
#pragma unroll
            for (int j = 0; j < DOP_ROWS; ++j) {
                if (mask >> j & 1u) {
                    float s = dop_warp_sum(acc[j]);
                    if (lane == 0)
                        atomicAdd(&sv[j][r], s);
                }
            }
        }
    }
}

/* ---- expand core --------------------------------------------------------------- */

/* Columns a thread keeps in flight: up to two of its columns of a tile (DOP_COLS
 * / DOP_THREADS, rounded up) at up to 4 rows. Their y and B loads are issued
 * before any of their sums, so a thread with two columns waits for memory once,
 * not twice. Not in the split sketch's expand, a kernel of many CTAs whose
 * occupancy hides the latency: with four columns in flight ptxas took its
 * 1-row expand from 39 to 102 registers, and 128 distinct rows at rank 16
 * (4096 -> 4096) took 9% longer on the H200 than with one. */
#define DOP_ECOLS_REG (DOP_SKETCH != 1 && DOP_ROWS <= 4 ? 2 : 1)
#define DOP_ECOLS_ALL ((DOP_COLS + DOP_THREADS - 1) / DOP_THREADS)
#define DOP_ECOLS (DOP_ECOLS_ALL < DOP_ECOLS_REG ? DOP_ECOLS_ALL : DOP_ECOLS_REG)

/* y[row0 + j, y_col + col0 + c] += scale * sum_r sv[j][r] * B[col0 + c, r] for
 * every group of the tile; each thread takes columns c = threadIdx.x +
 * u * DOP_THREADS, DOP_ECOLS of them at a time. */
__device__ __forceinline__ void dop_expand_tile(const dop_kparams &p, const dop_tile &t, int slice, int row0,
                                                int col0, const float (*sv)[DOP_MAXR])
{
    constexpr int NC = DOP_ECOLS;
    int dout = p.d_out[slice];
    dop_u16 *y = reinterpret_cast<dop_u16 *>(p.y) + p.y_col[slice];
    for (int g = 0; g < t.ngroups; ++g) {
        int j0 = t.gfirst[g], rank = t.rank_of[j0];
        unsigned mask = t.gmask[g];
        const dop_u16 *B = t.rB[j0];
        float scale = t.rscale[j0];
        bool vec = rank % 8 == 0 && dop_aligned(B, 16);
        for (int c0 = threadIdx.x; c0 < DOP_COLS && col0 + c0 < dout; c0 += NC * DOP_THREADS) {
            bool ok[NC];
            const dop_u16 *brow[NC];
            float yv[NC][DOP_ROWS], acc[NC][DOP_ROWS];
#pragma unroll
            for (int u = 0; u < NC; ++u) {
                int c = c0 + u * DOP_THREADS;
                ok[u] = c < DOP_COLS && col0 + c < dout;
                brow[u] = B + (long long)(col0 + c) * rank;
#pragma unroll
                for (int j = 0; j < DOP_ROWS; ++j) {
                    acc[u][j] = 0.f;
                    if (ok[u] && (mask >> j & 1u))
                        yv[u][j] = dop_to_f32(y[(long long)(row0 + j) * p.ldy + col0 + c]);
                }
            }
            if (vec) {
#pragma unroll 2
                for (int r = 0; r < rank; r += 8) {
                    float b[NC][8];
#pragma unroll
                    for (int u = 0; u < NC; ++u)
                        if (ok[u])
                            dop_load<8>(brow[u] + r, b[u]);
#pragma unroll
                    for (int u = 0; u < NC; ++u)
                        if (ok[u])
#pragma unroll
                            for (int j = 0; j < DOP_ROWS; ++j)
                                if (mask >> j & 1u)
#pragma unroll
                                    for (int e = 0; e < 8; ++e)
                                        acc[u][j] = fmaf(b[u][e], sv[j][r + e], acc[u][j]);
                }
            } else {
#pragma unroll 4
                for (int r = 0; r < rank; ++r) {
                    float b[NC];
#pragma unroll
                    for (int u = 0; u < NC; ++u)
                        b[u] = ok[u] ? dop_to_f32(brow[u][r]) : 0.f;
#pragma unroll
                    for (int u = 0; u < NC; ++u)
#pragma unroll
                        for (int j = 0; j < DOP_ROWS; ++j)
                            if (mask >> j & 1u)
                                acc[u][j] = fmaf(b[u], sv[j][r], acc[u][j]);
                }
            }
#pragma unroll
            for (int u = 0; u < NC; ++u)
                if (ok[u])
#pragma unroll
                    for (int j = 0; j < DOP_ROWS; ++j)
                        if (mask >> j & 1u)
                            y[(long long)(row0 + j) * p.ldy + col0 + c0 + u * DOP_THREADS] =
                                dop_from_f32(yv[u][j] + scale * acc[u][j]);
        }
    }
}

#endif /* DOP_MMA */

__device__ __forceinline__ void dop_zero_sv(float (*sv)[DOP_MAXR])
{
    for (int i = threadIdx.x; i < DOP_ROWS * DOP_MAXR; i += DOP_THREADS)
        (&sv[0][0])[i] = 0.f;
}

/* ---- entry points ------------------------------------------------------------- */

/* Each entry point is a tile body over (row tile, y, slice), y being the K split
 * (shrink, counter) or the column tile (expand, fused). Without DOP_PERSIST the
 * body runs once for (blockIdx.x, blockIdx.y, blockIdx.z); with it, a 1-D grid
 * of any size strides over all tiles, row tiles fastest, with a barrier between
 * tiles so the shared buffers of one are not overwritten while still in use.
 * The tile counts come from the argument block, not from gridDim, so either
 * grid gives the same tiles. Early returns of a body are uniform across the CTA. */

__device__ __forceinline__ int dop_row_tiles(const dop_kparams &p)
{
    return p.row_tiles; /* the host's count: with p.seg_tiles more than num_rows / DOP_ROWS */
}

__device__ __forceinline__ int dop_k_splits(const dop_kparams &p)
{
    return p.k_per_cta > 0 ? (p.d_in + p.k_per_cta - 1) / p.k_per_cta : 1;
}

__device__ __forceinline__ int dop_col_tiles(const dop_kparams &p)
{
    int d = 1;
    for (int i = 0; i < p.num_slices; ++i)
        d = max(d, p.d_out[i]);
    return (d + DOP_COLS - 1) / DOP_COLS;
}

#if DOP_PERSIST
#define DOP_FOR_TILES(NY, BODY)                                                                                   \
    do {                                                                                                          \
        long long nx_ = dop_row_tiles(p), ny_ = (NY), total_ = nx_ * ny_ * p.num_slices;                          \
        for (long long t_ = blockIdx.x; t_ < total_; t_ += gridDim.x) {                                           \
            int tx = (int)(t_ % nx_), ty = (int)(t_ / nx_ % ny_), tz = (int)(t_ / (nx_ * ny_));                  \
            __syncthreads(); /* the previous tile's readers of t and sv are done */                               \
            BODY(p, tx, ty, tz, (int)ny_); /* a column stride of all tiles: one column tile each */          \
        }                                                                                                         \
    } while (0)
#else
#define DOP_FOR_TILES(NY, BODY) BODY(p, (int)blockIdx.x, (int)blockIdx.y, (int)blockIdx.z, (int)gridDim.y)
#endif

/* shrink tile: v (+)= x A^T over K split ks of row tile rt */
__device__ __forceinline__ void dop_shrink_tile(const dop_kparams &p, int rt, int ks, int slice, int)
{
    __shared__ dop_tile t;
    __shared__ float sv[DOP_ROWS][DOP_MAXR];
    int row0 = rt * DOP_ROWS, rend = min(row0 + DOP_ROWS, p.num_rows);
    int kbeg = ks * p.k_per_cta;
    int kend = min(p.d_in, kbeg + p.k_per_cta);
    dop_zero_sv(sv);
    dop_seg_locate(p, rt, row0, rend);
    dop_tile_init(p, row0, rend, slice, t);
    dop_shrink_range(p, t, row0, kbeg, kend, sv);
    __syncthreads();
#if !DOP_PERSIST
    dop_grid_launch_dependents(); /* the expand may launch now and wait for the rest of this grid */
#endif
    dop_grid_wait(); /* before v is written (a kernel before this one may still read it) */
    float *v = reinterpret_cast<float *>(p.v) + slice * p.max_rank;
    bool atomic = dop_k_splits(p) > 1;
    for (int i = threadIdx.x; i < DOP_ROWS * p.max_rank; i += DOP_THREADS) {
        int j = i / p.max_rank, r = i - j * p.max_rank;
        if (r >= t.rank_of[j])
            continue;
        float *dst = v + (long long)(row0 + j) * p.ldv + r;
        if (atomic)
            atomicAdd(dst, sv[j][r]);
        else if (p.accumulate)
            *dst += sv[j][r];
        else
            *dst = sv[j][r];
    }
}

#define DOP_VPRE ((DOP_ROWS * DOP_MAXR + DOP_THREADS - 1) / DOP_THREADS) /* intermediate values per thread */

/* expand tile: y += scale v B^T for column tile ct and every ct_step-th after
 * it (the one-tile grid's y extent may be capped at 65535: ct_step = gridDim.y;
 * persistent: ct_step = the number of column tiles, so exactly one) */
__device__ __forceinline__ void dop_expand_tile_at(const dop_kparams &p, int rt, int ct, int slice, int ct_step)
{
    __shared__ dop_tile t;
    __shared__ float sv[DOP_ROWS][DOP_MAXR];
    int row0 = rt * DOP_ROWS, rend = min(row0 + DOP_ROWS, p.num_rows);
    if (ct * DOP_COLS >= p.d_out[slice])
        return; /* uniform across the CTA: no barrier is skipped by some threads only */
    dop_seg_locate(p, rt, row0, rend);
    dop_grid_wait(); /* the shrink that wrote v (launched just before, possibly programmatically) has finished */
    const float *v = reinterpret_cast<const float *>(p.v) + slice * p.max_rank;
#if DOP_VPRE <= 8
    /* the tile's intermediate is read before the layout, in the same round trip:
     * every row and rank, since the ranks are not known yet; the expand reads
     * sv[j][r] only for rows j of a group and r below its rank */
    float pre[DOP_VPRE];
#pragma unroll
    for (int u = 0; u < DOP_VPRE; ++u) {
        int i = threadIdx.x + u * DOP_THREADS, j = i / DOP_MAXR, r = i - j * DOP_MAXR;
        pre[u] = i < DOP_ROWS * DOP_MAXR && r < p.max_rank && row0 + j < p.num_rows
                     ? v[(long long)(row0 + j) * p.ldv + r]
                     : 0.f;
    }
    dop_tile_init(p, row0, rend, slice, t);
#pragma unroll
    for (int u = 0; u < DOP_VPRE; ++u) {
        int i = threadIdx.x + u * DOP_THREADS;
        if (i < DOP_ROWS * DOP_MAXR)
            (&sv[0][0])[i] = pre[u];
    }
#else
    dop_tile_init(p, row0, rend, slice, t);
    for (int i = threadIdx.x; i < DOP_ROWS * p.max_rank; i += DOP_THREADS) {
        int j = i / p.max_rank, r = i - j * p.max_rank;
        sv[j][r] = r < t.rank_of[j] ? v[(long long)(row0 + j) * p.ldv + r] : 0.f;
    }
#endif
    __syncthreads();
    for (int col0 = ct * DOP_COLS; col0 < p.d_out[slice]; col0 += ct_step * DOP_COLS)
        dop_expand_tile(p, t, slice, row0, col0, sv);
}

/* fused tile: the intermediate of row tile rt over all of d_in, then column tile ct (and every ct_step-th) */
__device__ __forceinline__ void dop_fused_tile(const dop_kparams &p, int rt, int ct, int slice, int ct_step)
{
    __shared__ dop_tile t;
    __shared__ float sv[DOP_ROWS][DOP_MAXR];
    int row0 = rt * DOP_ROWS, rend = min(row0 + DOP_ROWS, p.num_rows);
    if (ct * DOP_COLS >= p.d_out[slice])
        return;
    dop_zero_sv(sv);
    dop_seg_locate(p, rt, row0, rend);
    dop_tile_init(p, row0, rend, slice, t);
    dop_shrink_range(p, t, row0, 0, p.d_in, sv);
    __syncthreads();
    dop_grid_wait(); /* before y */
    for (int col0 = ct * DOP_COLS; col0 < p.d_out[slice]; col0 += ct_step * DOP_COLS)
        dop_expand_tile(p, t, slice, row0, col0, sv);
}

/* counter tile: K split ks of row tile rt adds its part into v and counts itself
 * in on (rt, slice)'s counter; the tile that counts in last expands all columns.
 * The count is per tile, not per CTA, so a persistent CTA that handles several
 * tiles (even several of one row tile) counts once for each; no tile waits for
 * another, so any grid size and any order of tiles completes. */
__device__ __forceinline__ void dop_counter_tile(const dop_kparams &p, int rt, int ks, int slice, int)
{
    __shared__ dop_tile t;
    __shared__ float sv[DOP_ROWS][DOP_MAXR];
    __shared__ int last;
    int row0 = rt * DOP_ROWS, rend = min(row0 + DOP_ROWS, p.num_rows);
    int kbeg = ks * p.k_per_cta;
    int kend = min(p.d_in, kbeg + p.k_per_cta);
    dop_zero_sv(sv);
    dop_seg_locate(p, rt, row0, rend);
    dop_tile_init(p, row0, rend, slice, t);
    if (t.ngroups == 0)
        return; /* uniform: nothing to add and nothing to expand for this tile */
    dop_shrink_range(p, t, row0, kbeg, kend, sv);
    __syncthreads();
    dop_grid_wait(); /* before v and y */
    float *v = reinterpret_cast<float *>(p.v) + slice * p.max_rank;
    for (int i = threadIdx.x; i < DOP_ROWS * p.max_rank; i += DOP_THREADS) {
        int j = i / p.max_rank, r = i - j * p.max_rank;
        if (r < t.rank_of[j])
            atomicAdd(v + (long long)(row0 + j) * p.ldv + r, sv[j][r]);
    }
    __threadfence(); /* this tile's partials are visible device-wide before it counts itself in */
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned *cnt = reinterpret_cast<unsigned *>(p.counters) + (long long)rt * p.num_slices + slice;
        last = atomicAdd(cnt, 1u) == (unsigned)dop_k_splits(p) - 1u;
    }
    __syncthreads();
    if (!last)
        return;
    __threadfence(); /* the other tiles' partials, counted before us, are complete */
    for (int i = threadIdx.x; i < DOP_ROWS * p.max_rank; i += DOP_THREADS) {
        int j = i / p.max_rank, r = i - j * p.max_rank;
        sv[j][r] = r < t.rank_of[j] ? __ldcg(v + (long long)(row0 + j) * p.ldv + r) : 0.f; /* from L2, not L1 */
    }
    __syncthreads();
    for (int col0 = 0; col0 < p.d_out[slice]; col0 += DOP_COLS)
        dop_expand_tile(p, t, slice, row0, col0, sv);
}

/* A module holds the entry points of its sketch only (DOP_SKETCH: 1 split, 2 fused,
 * 3 counter, 4 cluster; kernels_entries() lists them): compiling all four takes about three times
 * as long. */
#if DOP_SKETCH == 1
extern "C" __global__ void __launch_bounds__(DOP_THREADS) dop_shrink(const dop_kparams p)
{
    DOP_FOR_TILES(dop_k_splits(p), dop_shrink_tile);
}

/* The tensor-core expand up to rank 16 asks for 24 resident warps per SM (at most
 * 80 registers a thread): left alone, ptxas took 95 at rank 16, 5 CTAs of 128
 * threads per SM, and the H200 measured 4096-row rank-16 calls 3 - 5% shorter
 * with 6. (An explicit minimum of 1 block is not the same as none: ptxas then
 * took 142 registers instead of 128 for a rank-64 expand of 256 threads.) */
#if DOP_MMA && DOP_MAXR <= 16 && DOP_THREADS <= 256
#define DOP_EXP_BOUNDS __launch_bounds__(DOP_THREADS, 768 / DOP_THREADS)
#else
#define DOP_EXP_BOUNDS __launch_bounds__(DOP_THREADS)
#endif
extern "C" __global__ void DOP_EXP_BOUNDS dop_expand(const dop_kparams p)
{
    DOP_FOR_TILES(dop_col_tiles(p), dop_expand_tile_at);
}
#elif DOP_SKETCH == 2
extern "C" __global__ void __launch_bounds__(DOP_THREADS) dop_fused(const dop_kparams p)
{
    DOP_FOR_TILES(dop_col_tiles(p), dop_fused_tile);
}
#elif DOP_SKETCH == 3
extern "C" __global__ void __launch_bounds__(DOP_THREADS) dop_fused_counter(const dop_kparams p)
{
    DOP_FOR_TILES(dop_k_splits(p), dop_counter_tile);
}
#elif DOP_SKETCH == 4
/* ---- cluster sketch (sm_90+) -------------------------------------------------------
 * Launched with cluster dimensions (K splits, 1, 1) over a grid (K splits x row
 * tiles, slices); the persistent loop does not apply (persist is 0). */
static_assert(!DOP_PERSIST, "the cluster sketch has no persistent grid");

__device__ __forceinline__ unsigned dop_cluster_rank()
{
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

/* The cluster's index in the grid: its row tile (the grid's x is K splits x row tiles). */
__device__ __forceinline__ unsigned dop_cluster_id()
{
    unsigned r;
    asm volatile("mov.u32 %0, %%clusterid.x;" : "=r"(r));
    return r;
}

__device__ __forceinline__ unsigned dop_cluster_size()
{
    unsigned r;
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
    return r;
}

/* Every thread of every CTA of the cluster: arrive (release: this thread's
 * shared-memory writes become visible to the cluster) / wait (acquire). */
__device__ __forceinline__ void dop_cluster_arrive()
{
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}

/* Arrive without ordering anything: for a phase that publishes no writes, only
 * that this thread is done with its loads from peers (their values are in use
 * by then, so the loads are complete). Saves the release fence. */
__device__ __forceinline__ void dop_cluster_arrive_relaxed()
{
    asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}

__device__ __forceinline__ void dop_cluster_wait()
{
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

/* The float at the same shared-memory offset as p in CTA `rank` of the cluster. */
__device__ __forceinline__ float dop_ld_peer(const float *p, unsigned rank)
{
    unsigned a, v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"(dop_smem_addr(p)), "r"(rank));
    asm volatile("ld.shared::cluster.b32 %0, [%1];" : "=r"(v) : "r"(a) : "memory");
    return __uint_as_float(v);
}

/* Asks for [p, p + bytes) to be brought into L2 with bulk prefetches
 * (cp.async.bulk.prefetch, sm_90: one instruction per up to 1 MiB, nothing
 * waits on it), the range widened to 16-byte bounds as the instruction needs
 * (no page is touched that the range does not already touch). */
__device__ __forceinline__ void dop_bulk_prefetch_l2(const void *p, long long bytes)
{
    unsigned long long g;
    asm("cvta.to.global.u64 %0, %1;" : "=l"(g) : "l"(p));
    unsigned long long a = g & ~15ull, e = (g + (unsigned long long)bytes + 15ull) & ~15ull;
    while (a < e) {
        unsigned n = (unsigned)(e - a < (1ull << 20) ? e - a : (1ull << 20));
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(n) : "memory");
        a += n;
    }
}

/* Asks for the B rows this CTA's expand will read to be brought into L2, for
 * every group (col0, col0 + step, ...: one contiguous run of rank elements per
 * column, so one range per tile). One lane of the last warp per group issues
 * them, after the cluster barrier's arrive: a bulk prefetch keeps its warp for
 * about 1,300 cycles (H200, clock64 around the call), which there overlaps the
 * wait for the cluster, where before the shrink it delayed the shrink by as
 * much. y is not prefetched: an engine's y was just written by its GEMM.
 * Measured on the H200 over 60 decode cases (1 - 256 rows, five layouts, ranks
 * 16 and 64), against the same build with B and y prefetched by that warp
 * before its shrink: 0.7% shorter warm, 0.4% cold; against none at all, 0.4%
 * shorter warm, 1.5% cold. (Per-line prefetch.global.L2 from every thread cost
 * more than it saved: session 7, docs/kernels.md.) */
__device__ __forceinline__ void dop_prefetch_expand(const dop_kparams &p, const dop_tile &t, int slice, int col0,
                                                    int step)
{
    int dout = p.d_out[slice], lane = (int)threadIdx.x - (DOP_THREADS - 32);
    if (lane < 0)
        return; /* not the last warp */
    for (int i = lane; i < t.ngroups; i += 32) {
        int j = t.gfirst[i], rank = t.rank_of[j];
        for (int c0 = col0; c0 < dout; c0 += step)
            dop_bulk_prefetch_l2(t.rB[j] + (long long)c0 * rank, (long long)(min(dout, c0 + DOP_COLS) - c0) * rank * 2);
    }
}

extern "C" __global__ void __launch_bounds__(DOP_THREADS) dop_cluster(const dop_kparams p)
{
    __shared__ dop_tile t;
    __shared__ float sv[DOP_ROWS][DOP_MAXR];    /* this CTA's K part of the intermediate */
    __shared__ float sfull[DOP_ROWS][DOP_MAXR]; /* the cluster's sum */
    const unsigned cs = dop_cluster_size(), ks = dop_cluster_rank();
    const int rt = (int)dop_cluster_id(), slice = (int)blockIdx.y;
    int row0 = rt * DOP_ROWS, rend = min(row0 + DOP_ROWS, p.num_rows);
    const int kbeg = (int)ks * p.k_per_cta, kend = min(p.d_in, kbeg + p.k_per_cta);
    dop_zero_sv(sv);
    dop_seg_locate(p, rt, row0, rend); /* the same tile in every CTA of the cluster */
    dop_tile_init(p, row0, rend, slice, t);
    if (t.ngroups == 0)
        return; /* the same for every CTA of the cluster (same rows, same slice): none waits for another */
    dop_shrink_range(p, t, row0, kbeg, kend, sv);
    dop_cluster_arrive(); /* every CTA's partial is complete ... */
    dop_prefetch_expand(p, t, slice, (int)ks * DOP_COLS, (int)cs * DOP_COLS); /* while the cluster gathers */
    dop_cluster_wait();   /* ... and visible to the whole cluster */
    for (int i = threadIdx.x; i < DOP_ROWS * DOP_MAXR; i += DOP_THREADS) {
        int j = i / DOP_MAXR, r = i - j * DOP_MAXR;
        float s = 0.f;
        if (r < t.rank_of[j]) {
            float part[DOP_MAX_CLUSTER];
#pragma unroll
            for (unsigned c = 0; c < DOP_MAX_CLUSTER; ++c) /* all loads in flight, then a fixed-order sum */
                part[c] = c < cs ? dop_ld_peer(&sv[j][r], c) : 0.f;
#pragma unroll
            for (unsigned c = 0; c < DOP_MAX_CLUSTER; ++c)
                s += part[c];
        }
        sfull[j][r] = s;
    }
    dop_cluster_arrive_relaxed(); /* done reading the peers' partials */
    __syncthreads();      /* sfull is complete */
    dop_grid_wait();      /* before y (the prefetch above only asks for lines) */
    for (int col0 = (int)ks * DOP_COLS; col0 < p.d_out[slice]; col0 += (int)cs * DOP_COLS)
        dop_expand_tile(p, t, slice, row0, col0, sfull);
    dop_cluster_wait(); /* no CTA leaves while a peer may still read its shared memory */
}
#else
#error "DOP_SKETCH must be 1 (split), 2 (fused), 3 (counter) or 4 (cluster)"
#endif
