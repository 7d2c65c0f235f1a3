/*
 * costmodel_features.c -- the analytical model of dop's kernels and the
 * features derived from it, for (task, target, schedule), without compiling.
 *
 * What is modelled is what kernels/kernels_lora.cu does and how
 * runtime/runtime_lora.c launches it:
 *
 *   split    [memset of the fp32 scratch when split-K > 1] + dop_shrink on
 *            (row tiles x K splits x slices) + dop_expand on (row tiles x
 *            column tiles x slices): 2 launches;
 *   fused    dop_fused on (row tiles x column tiles x slices): 1 launch, and
 *            every column-tile CTA recomputes the shrink of its rows over all
 *            of d_in (re-reading x and A);
 *   counter  memset + dop_fused_counter on (row tiles x K splits x slices):
 *            the split's shrink with fp32 atomics, then the last CTA of each
 *            row tile expands every column tile serially;
 *   cluster  dop_cluster on (row tiles x K splits x slices) in clusters of the
 *            K splits (sm_90+): 1 launch, no memset; each CTA shrinks its K
 *            range as the split's shrink does, waits at a cluster barrier,
 *            adds up the cluster's partials from its peers' shared memory
 *            (DSMEM), then expands every split-th column tile of its row tile,
 *            whose B and y it prefetched into L2 while it shrank;
 *   op shrink / expand run one half of the split sketch.
 *
 * A launch costs a fixed floor (a graph node) plus the body, and the body is
 * a soft maximum (a 3-norm) of four limits, in microseconds:
 *   latency  waves x the serial chain of one CTA: its memory rounds (setup:
 *            the layout and adapter entries from L2; one round per K step of
 *            each warp's work items, per adapter group of the tile; the
 *            expand's column rounds), each costing a DRAM or L2 round trip;
 *            these kernels are latency-bound at decode sizes;
 *   DRAM     bytes that must come from DRAM (distinct weights once, x, y,
 *            scratch) / DRAM bandwidth;
 *   L2       bytes through L2 (every re-read of A and B by another row tile
 *            or adapter group, x re-read per work item when a CTA's slice of
 *            x does not stay in L1, v, fp32 atomics twice) / L2 bandwidth;
 *   issue    warp instructions of the busiest SM / its issue rate (4
 *            schedulers, fewer when the CTA has fewer warps).
 * Waves use the CTAs per SM that threads, static shared memory
 * (search_schedule_smem) and an estimate of registers allow.
 *
 * The layout class is given as ceil-log2 buckets; a representative batch is
 * taken at the buckets' upper edges (as runtime_pick_for_class does): rows =
 * 2^rows_log2, runs = 2^groups_log2 (at most the rows with an adapter), each
 * run of (rows with an adapter) / runs rows, rows without an adapter at the
 * middle of their quarter, and as many distinct adapters as runs. A row tile
 * of T consecutive rows then meets min(T, runs, 1 + (T - 1) / mean run)
 * adapter groups; each group re-reads its adapter's weights, and a
 * tensor-core group costs a full 16-row tile.
 *
 * Hardware numbers come from the fingerprint: SM count, L2 and shared memory
 * are in it; bandwidth per SM is taken from the compute capability (H200
 * 4.2 TB/s when sm_90 has >= 60 MiB of L2, H100 3.35 TB/s otherwise, A100
 * 2 TB/s, ...). They only need to be right to a factor: the learner corrects
 * the rest. docs/costmodel.md has the formulas.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "costmodel_internal.h"

/* ---- hardware --------------------------------------------------------------- */

typedef struct hw {
    double sms;
    double dram_bw;   /* bytes per microsecond */
    double l2_bw;     /* bytes per microsecond */
    double l2_bytes;
    double lat_dram;  /* microseconds per dependent DRAM round trip under load */
    double lat_l2;    /* microseconds per L2 round trip (layout, adapter table, v, atomics) */
    double lat_dsmem; /* microseconds per round of loads from the shared memory of other CTAs of a cluster */
    double cluster_sync; /* microseconds of a cluster barrier (arrive + wait) */
    double launch;    /* microseconds per kernel launch in a graph */
    double memset;    /* microseconds per memset node */
    double clock;     /* cycles per microsecond */
    double smem_sm;   /* shared memory per SM, bytes */
    double l1_bytes;  /* L1 a CTA's slice of x can stay in */
} hw;

static void hw_of(const search_target *g, hw *h)
{
    double sms = g->sm_count > 0 ? g->sm_count : 1;
    double per_sm; /* DRAM bytes per microsecond per SM */
    int cc = g->cc_major * 10 + g->cc_minor;
    if (cc >= 100)
        per_sm = 8.0e6 / 148; /* B200 */
    else if (cc >= 90)
        per_sm = (g->l2_bytes >= 60ll * 1024 * 1024 ? 4.2e6 : 3.35e6) / 132; /* H200 : H100 */
    else if (cc == 80)
        per_sm = 2.0e6 / 108; /* A100 80 GB */
    else if (cc >= 86)
        per_sm = 0.9e6 / 84; /* GA10x / AD10x boards */
    else
        per_sm = 1.5e6 / 108;
    h->sms = sms;
    h->dram_bw = per_sm * sms;
    h->l2_bw = 2.0 * h->dram_bw;
    h->l2_bytes = g->l2_bytes > 0 ? (double)g->l2_bytes : 4.0 * 1024 * 1024;
    h->lat_dram = 0.9;
    h->lat_l2 = 0.35;
    h->launch = 1.4;
    h->memset = 1.0;
    h->clock = cc >= 90 ? 1700 : 1400;
    h->lat_dsmem = 200 / h->clock;    /* SM to SM within a GPC: about a shared-memory access, ~200 cycles */
    h->cluster_sync = 300 / h->clock; /* every thread of every CTA arrives, then waits: a few hundred cycles */
    h->smem_sm = g->smem_per_block > 0 ? (double)g->smem_per_block + 1024 : 100.0 * 1024;
    h->l1_bytes = cc >= 90 ? 128.0 * 1024 : 64.0 * 1024;
}

/* ---- the representative batch of a layout class ------------------------------- */

typedef struct batch {
    double rows;     /* num_rows */
    double active;   /* rows with an adapter */
    double runs;     /* runs of rows of one adapter (= distinct adapters) */
    double mean;     /* rows per run */
    double none_frac;
} batch;

static double pow2(int e)
{
    return ldexp(1.0, e > 40 ? 40 : e);
}

static void batch_of(const search_task *t, batch *b)
{
    double rows = pow2(t->rows_log2);
    double active = rows;
    if (t->none_quarters > 0) {
        double q = t->none_quarters > 4 ? 4 : t->none_quarters;
        double mid = rows * (1.0 - (q - 0.5) / 4.0);
        double gm = pow2(t->groups_log2) * pow2(t->mean_log2);
        active = mid < gm ? mid : gm;
    }
    if (active < 1)
        active = 1;
    if (active > rows)
        active = rows;
    double runs = pow2(t->groups_log2);
    if (runs > active)
        runs = active;
    b->rows = rows;
    b->active = active;
    b->runs = runs;
    b->mean = active / runs;
    b->none_frac = 1.0 - active / rows;
}

/* ---- the model ------------------------------------------------------------------ */

/* What one launch costs, before it is added up. */
typedef struct launch_cost {
    double ctas;      /* CTAs that do work */
    double grid;      /* CTAs launched (some exit at once) */
    double per_sm;    /* resident CTAs per SM */
    double waves;
    double chain;     /* microseconds of one CTA's serial chain */
    double rounds;    /* memory rounds of that chain */
    double dram, l2;  /* bytes */
    double instr;     /* warp instructions per CTA */
    double warps;     /* warps per CTA */
} launch_cost;

typedef struct model {
    hw h;
    batch b;
    /* schedule as run */
    int sketch, mma, op;
    double T;         /* rows per CTA as used (at most the batch's rows) */
    double W, vec, U, split, cols, kpc;
    double rank, d_in, d_out_sum, d_out_max, slices;
    double row_tiles, col_tiles_sum, col_tiles_max;
    double gpt;       /* adapter groups per row tile */
    double rows_g;    /* rows with an adapter per group */
    double regs, reg_cap, smem;
    double a_hit, b_hit; /* share of weight re-reads that find L2 */
    /* results */
    double lat, dram, l2, issue, fixed, total;
    double launches, memsets, ctas, waves, wave_eff, per_sm, rounds;
    double dram_bytes, l2_bytes, w_req, w_unique, fma, fma_issued, partial_bytes;
} model;

static double dmin(double a, double b)
{
    return a < b ? a : b;
}

static double dmax(double a, double b)
{
    return a > b ? a : b;
}

static double ceil_div(double a, double b)
{
    return ceil(a / b - 1e-9);
}

/* Resident CTAs per SM for the current schedule. */
static double ctas_per_sm(const model *m)
{
    double threads = 32 * m->W;
    double by_threads = floor(2048 / threads);
    double by_smem = floor(m->h.smem_sm / (m->smem + 1024));
    double regs = dmin(m->regs, m->reg_cap);
    double by_regs = floor(65536 / (threads * ceil(regs / 8) * 8));
    double n = dmin(32, dmin(by_threads, dmin(by_smem, by_regs)));
    return n < 1 ? 1 : n;
}

/* The setup every CTA pays: zeroing sv, the layout of its rows and its
 * adapter entries (two dependent L2 round trips and three barriers). */
static double setup_chain(const model *m)
{
    return 2 * m->h.lat_l2 + 0.15;
}

/*
 * The shrink of one CTA over a K range kr for its row tile: serial memory
 * rounds per warp, warp instructions, and the weight and x bytes requested.
 */
static void shrink_cta(const model *m, double kr, double *rounds, double *instr, double *x_l2)
{
    double r = m->rank, W = m->W;
    double items, iters, per_iter;
    if (m->mma) {
        double ntiles = ceil_div(r, 8);
        double parts = floor(W / ntiles) > 1 ? floor(W / ntiles) : 1;
        items = ntiles * parts;
        double span = ceil_div(ceil_div(kr, parts), 16) * 16;
        iters = ceil_div(span, 16 * m->U);
        /* per lane and K step: 6 paired loads and an mma per 16 K, plus packing */
        per_iter = m->U * 12 + 4;
    } else {
        double parts = floor(W / r) > 1 ? floor(W / r) : 1;
        items = r * parts;
        double span = ceil_div(ceil_div(kr, parts), 32 * m->vec) * 32 * m->vec;
        iters = ceil_div(span, 32 * m->vec * m->U);
        /* per lane and K step: U loads of A, U loads of x per row, FMAs and conversions */
        per_iter = m->U * (1 + m->rows_g) + m->U * m->vec * m->rows_g * 2.5 + 4;
    }
    double items_per_warp = ceil_div(items, W);
    *rounds = m->gpt * items_per_warp * iters;
    /* shuffle reduction and shared atomics per item and row */
    double tail = m->mma ? 8 : 7 * m->rows_g;
    *instr = m->gpt * items * (iters * per_iter + tail);
    /* x: the CTA's slice is re-read by every work item; from L1 when it fits */
    double foot = m->T * kr * 2;
    double miss = foot > m->h.l1_bytes ? (foot - m->h.l1_bytes) / foot : 0;
    *x_l2 = m->T * (m->b.active / m->b.rows) * kr * 2 * (1 + (items - 1) * miss);
}

/* The expand of one CTA over `ncols` columns of one slice: rounds and instructions. */
static void expand_cta(const model *m, double ncols, double *rounds, double *instr)
{
    double r = m->rank, W = m->W;
    if (m->mma) {
        double ntiles = ceil_div(ncols, 8);
        double per_warp = ceil_div(ntiles, W);
        double ksteps = ceil_div(r, 16);
        /* B fragments, then y read-modify-write after the mmas */
        *rounds = m->gpt * per_warp * (2 + 0.25 * (ksteps - 1));
        *instr = m->gpt * ntiles * (ksteps * 30 + 16);
    } else {
        double threads = 32 * W;
        double col_rounds = ceil_div(ncols, threads);
        double vec = fmod(r, 8) == 0 ? 8 : 1;
        /* y and B loads of a column go together (#pragma unroll 4 over the rank) */
        *rounds = m->gpt * col_rounds * (1 + (ceil_div(r, 4 * vec) - 1) * 0.5);
        double per_col = r / vec + 2 * r * m->rows_g + 4 * m->rows_g + 4;
        *instr = m->gpt * ceil_div(ncols, 32) * per_col;
    }
}

static void add_launch(model *m, const launch_cost *lc)
{
    double slots = m->h.sms * lc->per_sm;
    double waves = ceil_div(lc->grid, slots);
    if (waves < 1)
        waves = 1;
    double lat = waves * lc->chain;
    double per_sm = ceil_div(lc->ctas, m->h.sms);
    double rate = m->h.clock * dmin(4, lc->warps * dmin(lc->per_sm, per_sm));
    double issue = per_sm * lc->instr / rate;
    m->lat += lat;
    m->dram += lc->dram / m->h.dram_bw;
    m->l2 += lc->l2 / m->h.l2_bw;
    m->issue += issue;
    double body = cbrt(pow(lat, 3) + pow(lc->dram / m->h.dram_bw, 3) + pow(lc->l2 / m->h.l2_bw, 3) + pow(issue, 3));
    m->total += m->h.launch + body;
    m->fixed += m->h.launch;
    m->launches += 1;
    m->ctas += lc->grid;
    m->rounds += lc->rounds;
    m->dram_bytes += lc->dram;
    m->l2_bytes += lc->l2;
    if (waves >= m->waves) {
        m->waves = waves;
        m->wave_eff = lc->grid / (waves * slots);
        m->per_sm = lc->per_sm;
    }
}

/* Shape checks the features need beyond search_schedule_legal. */
static bool task_valid(const search_task *t)
{
    if (t->op > SEARCH_OP_EXPAND || (t->dtype != SEARCH_DTYPE_F16 && t->dtype != SEARCH_DTYPE_BF16))
        return false;
    if (t->num_slices < 1 || t->num_slices > SEARCH_MAX_SLICES || t->d_in < 1 || t->d_in > SEARCH_DIM_MAX)
        return false;
    if (t->max_rank < 1 || t->max_rank > 128)
        return false;
    for (int i = 0; i < t->num_slices; ++i)
        if (t->d_out[i] < 1 || t->d_out[i] > SEARCH_DIM_MAX)
            return false;
    if (t->rows_log2 > 62 || t->groups_log2 > 62 || t->longest_log2 > 62 || t->mean_log2 > 62 ||
        t->none_quarters > 4 || t->ranks_differ > 1)
        return false;
    return true;
}

bool costmodel_target_valid(const search_target *g)
{
    return g && g->cc_major >= 1 && g->cc_major <= 99 && g->cc_minor >= 0 && g->cc_minor <= 9 && g->sm_count >= 1 &&
           g->sm_count <= 100000 && g->l2_bytes >= 0 && g->l2_bytes <= (1ll << 40) && g->l2_bytes % 1024 == 0 &&
           g->smem_per_block >= 0 && g->smem_per_block <= (1 << 30) && g->smem_per_block % 1024 == 0;
}

static int model_run(const search_task *t, const search_target *g, const search_schedule *s, model *m)
{
    if (!t || !g || !s || !task_valid(t) || !costmodel_target_valid(g))
        return -1;
    if (!search_schedule_legal(s, t->max_rank, NULL, 0))
        return -1;
    if (t->op != SEARCH_OP_APPLY && s->sketch != SEARCH_SKETCH_SPLIT)
        return -1;
    if (s->sketch == SEARCH_SKETCH_CLUSTER && g->cc_major < 9) /* thread-block clusters are sm_90+ */
        return -1;
    if (s->mma && t->d_in % 8 != 0)
        return -1;

    memset(m, 0, sizeof *m);
    hw_of(g, &m->h);
    batch_of(t, &m->b);
    m->op = t->op;
    m->sketch = s->sketch;
    m->mma = s->mma;
    m->W = s->warps;
    m->rank = t->max_rank;
    m->d_in = t->d_in;
    m->slices = t->num_slices;
    for (int i = 0; i < t->num_slices; ++i) {
        m->d_out_sum += t->d_out[i];
        m->d_out_max = dmax(m->d_out_max, t->d_out[i]);
    }
    /* the launcher: tiles, the K split it really makes, the vector width the kernel really uses */
    m->T = dmin(s->rows, m->b.rows);
    m->cols = s->cols;
    m->row_tiles = ceil_div(m->b.rows, s->rows);
    m->col_tiles_max = ceil_div(m->d_out_max, s->cols);
    for (int i = 0; i < t->num_slices; ++i)
        m->col_tiles_sum += ceil_div(t->d_out[i], s->cols);
    double split = s->sketch == SEARCH_SKETCH_FUSED || t->op == SEARCH_OP_EXPAND ? 1 : s->split_k;
    double kpc = (double)search_k_per_cta(t->d_in, s->mma, s->vec, (unsigned)split);
    m->split = ceil_div(m->d_in, kpc);
    m->kpc = dmin(kpc, m->d_in);
    if (s->mma) {
        m->vec = 8;
        m->U = s->kc / 16.0;
    } else {
        m->vec = t->d_in % s->vec == 0 ? s->vec : 1;
        m->U = dmin(16, dmax(1, floor(s->kc / (32.0 * m->vec))));
    }
    /* adapter groups a tile of T consecutive rows meets, and rows per group */
    m->gpt = dmin(m->T, dmin(m->b.runs, 1 + (m->T - 1) / m->b.mean));
    if (m->gpt < 1)
        m->gpt = 1;
    m->rows_g = dmax(1, m->T * (m->b.active / m->b.rows) / m->gpt);
    if (s->mma)
        m->rows_g = dmin(m->rows_g, 16);
    /* registers: accumulators per row, the loads in flight, addresses; capped by
     * __launch_bounds__ (65536 / threads, at most 255) */
    if (s->mma)
        m->regs = 64 + 6 * m->U;
    else
        m->regs = 40 + 2 * s->rows + m->U * m->vec / 2 * 2;
    m->reg_cap = dmin(255, floor(65536 / (32 * m->W)));
    m->smem = (double)search_schedule_smem(s, t->max_rank);

    /* weights: distinct bytes, and the share of re-reads L2 keeps */
    double esz = 2;
    double a_unique = m->b.runs * m->rank * m->d_in * esz * m->slices;
    double b_unique = m->b.runs * m->rank * m->d_out_sum * esz;
    double half_l2 = m->h.l2_bytes / 2;
    m->a_hit = a_unique <= half_l2 ? 1 : half_l2 / a_unique;
    m->b_hit = b_unique <= half_l2 ? 1 : half_l2 / b_unique;
    double active_frac = m->b.active / m->b.rows;
    double x_bytes = m->b.active * m->d_in * esz;
    double y_bytes = m->b.active * m->d_out_sum * esz * 2; /* read and write */
    double v_bytes = m->row_tiles * m->T * active_frac * m->rank * 4 * m->slices;
    double fma_useful = m->b.active * m->rank * (m->d_in * m->slices + m->d_out_sum);
    bool do_shrink = t->op != SEARCH_OP_EXPAND, do_expand = t->op != SEARCH_OP_SHRINK;
    if (t->op == SEARCH_OP_SHRINK)
        fma_useful = m->b.active * m->rank * m->d_in * m->slices;
    else if (t->op == SEARCH_OP_EXPAND)
        fma_useful = m->b.active * m->rank * m->d_out_sum;
    m->fma = fma_useful;
    double lat_a = m->a_hit >= 1 && m->row_tiles * m->gpt > m->b.runs * 4 ? m->h.lat_l2 + 0.6 * (m->h.lat_dram - m->h.lat_l2)
                                                                           : m->h.lat_dram;

    double shrink_rounds = 0, shrink_instr = 0, x_l2 = 0;
    if (do_shrink)
        shrink_cta(m, s->sketch == SEARCH_SKETCH_FUSED ? m->d_in : m->kpc, &shrink_rounds, &shrink_instr, &x_l2);
    double a_req_tile = m->gpt * m->rank * m->d_in * esz; /* per slice, over all its K splits */
    double a_req = m->row_tiles * a_req_tile * m->slices;
    double b_req = m->row_tiles * m->gpt * m->rank * m->d_out_sum * esz;
    double a_dram = a_unique + (a_req - a_unique) * (1 - m->a_hit);
    double b_dram = b_unique + (b_req - b_unique) * (1 - m->b_hit);

    if (s->sketch == SEARCH_SKETCH_SPLIT) {
        if (do_shrink) {
            launch_cost lc;
            memset(&lc, 0, sizeof lc);
            lc.ctas = lc.grid = m->row_tiles * m->split * m->slices;
            lc.warps = m->W;
            lc.per_sm = ctas_per_sm(m);
            lc.rounds = 2 + shrink_rounds + 1;
            lc.chain = setup_chain(m) + shrink_rounds * lat_a + m->h.lat_l2;
            lc.instr = shrink_instr + 40;
            double partials = m->split > 1 ? v_bytes * m->split : v_bytes;
            lc.dram = a_dram + x_bytes + v_bytes;
            lc.l2 = a_req + x_l2 * m->split * m->slices + (m->split > 1 ? 2 * partials : partials);
            m->partial_bytes = m->split > 1 ? partials : 0;
            if (t->op == SEARCH_OP_APPLY && m->split > 1) {
                m->total += m->h.memset;
                m->fixed += m->h.memset;
                m->memsets += 1;
            }
            add_launch(m, &lc);
        }
        if (do_expand) {
            double exp_rounds, exp_instr;
            expand_cta(m, dmin(m->cols, m->d_out_max), &exp_rounds, &exp_instr);
            launch_cost lc;
            memset(&lc, 0, sizeof lc);
            lc.grid = m->row_tiles * m->col_tiles_max * m->slices;
            lc.ctas = m->row_tiles * m->col_tiles_sum;
            lc.warps = m->W;
            lc.per_sm = ctas_per_sm(m);
            lc.rounds = 3 + exp_rounds;
            double lat_b = m->b_hit >= 1 && m->row_tiles * m->gpt > m->b.runs * 4
                               ? m->h.lat_l2 + 0.6 * (m->h.lat_dram - m->h.lat_l2)
                               : m->h.lat_dram;
            lc.chain = setup_chain(m) + m->h.lat_l2 + exp_rounds * lat_b;
            lc.instr = exp_instr + 40;
            lc.dram = b_dram + y_bytes + (t->op == SEARCH_OP_EXPAND ? v_bytes : 0);
            lc.l2 = b_req + v_bytes * m->col_tiles_max + y_bytes;
            add_launch(m, &lc);
        }
    } else if (s->sketch == SEARCH_SKETCH_FUSED) {
        double exp_rounds, exp_instr;
        expand_cta(m, dmin(m->cols, m->d_out_max), &exp_rounds, &exp_instr);
        launch_cost lc;
        memset(&lc, 0, sizeof lc);
        lc.grid = m->row_tiles * m->col_tiles_max * m->slices;
        lc.ctas = m->row_tiles * m->col_tiles_sum;
        lc.warps = m->W;
        lc.per_sm = ctas_per_sm(m);
        lc.rounds = 2 + shrink_rounds + exp_rounds;
        lc.chain = setup_chain(m) + shrink_rounds * lat_a + exp_rounds * m->h.lat_l2 + 0.05;
        lc.instr = shrink_instr + exp_instr + 60;
        /* every column tile recomputes the shrink: A and x re-read col_tiles times */
        double recompute = m->col_tiles_sum / m->slices;
        double a_req_f = a_req * recompute;
        lc.dram = a_unique + (a_req_f - a_unique) * (1 - m->a_hit) + x_bytes + b_dram + y_bytes;
        lc.l2 = a_req_f + x_l2 * m->col_tiles_sum + b_req + y_bytes;
        add_launch(m, &lc);
    } else if (s->sketch == SEARCH_SKETCH_CLUSTER) {
        double exp_rounds, exp_instr;
        expand_cta(m, dmin(m->cols, m->d_out_max), &exp_rounds, &exp_instr);
        double tiles_cta = ceil_div(m->col_tiles_max, m->split); /* every split-th column tile of the row tile */
        /* the cluster's sum: T x rank sums over the CTA's threads, each issuing the split DSMEM loads of one
         * sum together, then adding them: one round per sum a thread makes */
        double red_rounds = ceil_div(m->T * m->rank, 32 * m->W);
        launch_cost lc;
        memset(&lc, 0, sizeof lc);
        lc.ctas = lc.grid = m->row_tiles * m->split * m->slices;
        lc.warps = m->W;
        lc.per_sm = ctas_per_sm(m);
        lc.rounds = 2 + shrink_rounds + red_rounds + tiles_cta * exp_rounds;
        /* B and y of the CTA's column tiles were prefetched into L2 during the shrink: the expand's
         * rounds are L2 round trips */
        lc.chain = setup_chain(m) + shrink_rounds * lat_a + m->h.cluster_sync + red_rounds * m->h.lat_dsmem +
                   tiles_cta * exp_rounds * m->h.lat_l2;
        /* per sum and thread: an address map and a load per peer, the adds, the store */
        lc.instr = shrink_instr + tiles_cta * exp_instr + red_rounds * m->W * (3 * m->split + 8) + 60;
        /* no scratch: the partials meet SM to SM, not in L2 */
        lc.dram = a_dram + x_bytes + b_dram + y_bytes;
        lc.l2 = a_req + x_l2 * m->split * m->slices + b_req + y_bytes;
        add_launch(m, &lc);
    } else { /* counter */
        double exp_rounds, exp_instr;
        expand_cta(m, dmin(m->cols, m->d_out_max), &exp_rounds, &exp_instr);
        double tiles_serial = m->col_tiles_max; /* the last CTA walks every column tile */
        launch_cost lc;
        memset(&lc, 0, sizeof lc);
        lc.ctas = lc.grid = m->row_tiles * m->split * m->slices;
        lc.warps = m->W;
        lc.per_sm = ctas_per_sm(m);
        lc.rounds = 2 + shrink_rounds + 2 + tiles_serial * exp_rounds;
        /* the expanders run after the last wave of the shrink, in parallel over row tiles */
        double exp_waves = ceil_div(m->row_tiles * m->slices, m->h.sms * lc.per_sm);
        double exp_chain = 2 * m->h.lat_l2 + tiles_serial * exp_rounds * m->h.lat_dram;
        double shrink_chain = setup_chain(m) + shrink_rounds * lat_a + m->h.lat_l2;
        double shrink_waves = ceil_div(lc.grid, m->h.sms * lc.per_sm);
        /* add_launch multiplies the chain by the waves: fold the expanders into it */
        lc.chain = shrink_chain + exp_waves * exp_chain / dmax(1, shrink_waves);
        lc.instr = shrink_instr + 40 + (exp_instr * tiles_serial) / m->split;
        double partials = v_bytes * m->split;
        lc.dram = a_dram + x_bytes + v_bytes + b_dram + y_bytes;
        lc.l2 = a_req + x_l2 * m->split * m->slices + 2 * partials + v_bytes + b_req + y_bytes;
        m->partial_bytes = partials;
        m->total += m->h.memset;
        m->fixed += m->h.memset;
        m->memsets += 1;
        add_launch(m, &lc);
    }
    double fused_factor = s->sketch == SEARCH_SKETCH_FUSED ? m->col_tiles_sum / m->slices : 1;
    double mac_rows = m->row_tiles * m->gpt * (s->mma ? 16 : m->rows_g);
    double issued = 0;
    if (do_shrink)
        issued += mac_rows * m->rank * m->d_in * m->slices * fused_factor;
    if (do_expand)
        issued += mac_rows * m->rank * m->d_out_sum;
    m->fma_issued = dmax(issued, m->fma);
    m->w_req = (do_shrink ? a_req * fused_factor : 0) + (do_expand ? b_req : 0);
    m->w_unique = (do_shrink ? a_unique : 0) + (do_expand ? b_unique : 0);
    /* a spilling schedule pays local-memory traffic on every K step */
    double spill = m->regs - m->reg_cap;
    if (spill > 0)
        m->total += (m->total - m->fixed) * dmin(1.0, spill / 128.0);
    if (!(m->total > 0) || !isfinite(m->total))
        return -1;
    return 0;
}

static double lg2(double v)
{
    return log2(v > 1e-30 ? v : 1e-30);
}

static double lg2p(double v)
{
    return log2(1.0 + (v > 0 ? v : 0));
}

int costmodel_features(const search_task *t, const search_target *g, const search_schedule *s, double *f)
{
    model m;
    if (!f || model_run(t, g, s, &m) != 0)
        return -1;
    double v[COSTMODEL_NFEAT];
    v[COSTMODEL_F_LOG2_ANALYTICAL_US] = lg2(m.total);
    v[COSTMODEL_F_LOG2_LATENCY_US] = lg2p(m.lat);
    v[COSTMODEL_F_LOG2_DRAM_US] = lg2p(m.dram);
    v[COSTMODEL_F_LOG2_L2_US] = lg2p(m.l2);
    v[COSTMODEL_F_LOG2_ISSUE_US] = lg2p(m.issue);
    v[COSTMODEL_F_LAUNCHES] = m.launches;
    v[COSTMODEL_F_MEMSETS] = m.memsets;
    v[COSTMODEL_F_SPLIT] = s->sketch == SEARCH_SKETCH_SPLIT;
    v[COSTMODEL_F_FUSED] = s->sketch == SEARCH_SKETCH_FUSED;
    v[COSTMODEL_F_COUNTER] = s->sketch == SEARCH_SKETCH_FUSED_COUNTER;
    v[COSTMODEL_F_CLUSTER] = s->sketch == SEARCH_SKETCH_CLUSTER;
    v[COSTMODEL_F_MMA] = s->mma;
    v[COSTMODEL_F_LOG2_ROWS_CTA] = lg2(s->rows);
    v[COSTMODEL_F_LOG2_WARPS] = lg2(s->warps);
    v[COSTMODEL_F_LOG2_VEC] = lg2(m.vec);
    v[COSTMODEL_F_LOG2_LOADS] = lg2(m.U);
    v[COSTMODEL_F_LOG2_SPLIT_K] = lg2(m.split);
    v[COSTMODEL_F_LOG2_COLS] = lg2(s->cols);
    v[COSTMODEL_F_LOG2_CTAS] = lg2p(m.ctas);
    v[COSTMODEL_F_WAVES] = m.waves;
    v[COSTMODEL_F_WAVE_EFF] = m.wave_eff;
    v[COSTMODEL_F_CTAS_PER_SM] = m.per_sm;
    v[COSTMODEL_F_REGS] = dmin(m.regs, 255) / 256.0;
    v[COSTMODEL_F_SMEM_KIB] = m.smem / 1024.0;
    v[COSTMODEL_F_LOG2_DRAM_BYTES] = lg2p(m.dram_bytes);
    v[COSTMODEL_F_LOG2_L2_BYTES] = lg2p(m.l2_bytes);
    v[COSTMODEL_F_LOG2_WEIGHT_REREAD] = m.w_unique > 0 ? lg2(dmax(1, m.w_req / m.w_unique)) : 0;
    v[COSTMODEL_F_LOG2_FMA] = lg2p(m.fma);
    v[COSTMODEL_F_LOG2_FMA_ISSUED] = lg2p(m.fma_issued);
    v[COSTMODEL_F_PAD_WASTE] = m.fma_issued > 0 ? 1.0 - m.fma / m.fma_issued : 0;
    v[COSTMODEL_F_GROUPS_PER_TILE] = m.gpt;
    v[COSTMODEL_F_LOG2_ROUNDS] = lg2p(m.rounds);
    v[COSTMODEL_F_LOG2_PARTIAL_BYTES] = lg2p(m.partial_bytes);
    v[COSTMODEL_F_LOG2_ROWS] = lg2(m.b.rows);
    v[COSTMODEL_F_LOG2_RANK] = lg2(m.rank);
    v[COSTMODEL_F_LOG2_D_IN] = lg2(m.d_in);
    v[COSTMODEL_F_LOG2_D_OUT] = lg2(m.d_out_sum);
    v[COSTMODEL_F_LOG2_MEAN_RUN] = lg2(m.b.mean);
    v[COSTMODEL_F_NONE_FRAC] = m.b.none_frac;
    v[COSTMODEL_F_MMA_X_MEAN_RUN] = s->mma ? lg2(m.b.mean) : 0;
    v[COSTMODEL_F_FUSED_X_COL_TILES] = s->sketch == SEARCH_SKETCH_FUSED ? lg2(m.col_tiles_max) : 0;
    v[COSTMODEL_F_SPILL] = dmax(0, m.regs - m.reg_cap) / 64.0;
    v[COSTMODEL_F_SMALL_X_SPLIT] = dmax(0, 6 - lg2(m.b.rows)) * lg2(m.split);
    v[COSTMODEL_F_STAGES] = s->stages;
    v[COSTMODEL_F_PERSIST] = s->persist;
    for (int i = 0; i < COSTMODEL_NFEAT; ++i)
        if (!isfinite(v[i]))
            return -1;
    memcpy(f, v, sizeof v);
    return 0;
}

double costmodel_analytical_us(const search_task *t, const search_target *g, const search_schedule *s)
{
    model m;
    if (model_run(t, g, s, &m) != 0)
        return 1e9;
    return m.total;
}

static const char *const feature_names[COSTMODEL_NFEAT] = {
    "log2_analytical_us", "log2_latency_us",    "log2_dram_us",    "log2_l2_us",        "log2_issue_us",
    "launches",           "memsets",            "split",           "fused",             "counter",
    "cluster",            "mma",                "log2_rows_cta",   "log2_warps",        "log2_vec",
    "log2_loads",         "log2_split_k",       "log2_cols",       "log2_ctas",         "waves",
    "wave_eff",           "ctas_per_sm",        "regs",            "smem_kib",          "log2_dram_bytes",
    "log2_l2_bytes",      "log2_weight_reread", "log2_fma",        "log2_fma_issued",   "pad_waste",
    "groups_per_tile",    "log2_rounds",        "log2_partial_bytes", "log2_rows",      "log2_rank",
    "log2_d_in",          "log2_d_out",         "log2_mean_run",   "none_frac",         "mma_x_mean_run",
    "fused_x_col_tiles",  "spill",              "small_x_split",   "stages",            "persist",
};

const char *costmodel_feature_name(int i)
{
    return i >= 0 && i < COSTMODEL_NFEAT ? feature_names[i] : NULL;
}
