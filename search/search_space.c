/*
 * search_space.c -- the legal schedule space of a problem and the operators
 * on it (see search_space.h for the rules).
 *
 * The space is a subset of a grid: one index per annotation into its domain
 * (kc through its multiple of 32 * vec), so every schedule of the space is
 * exactly one grid point (kc of an mma schedule through its multiple of 16).
 * The rules are checked in stages, each needing only the annotations before
 * it in the order sketch, mma, rows, warps, vec, split_k, kc, stages, cols,
 * persist, so the enumeration prunes a whole subtree at the first broken rule
 * and costs about the size of the space, not of the grid (2764800 points). Sampling
 * draws grid points uniformly and keeps the first legal one, which is uniform
 * over the space; after a bounded number of misses (tiny spaces) it draws an
 * index into the enumeration instead, uniform too.
 *
 * Everything random comes from a splitmix64 state the caller owns, so a seed
 * gives the same schedules on every machine.
 */
#include "search_space.h"

#include <stdio.h>
#include <string.h>

/* ---- domains ------------------------------------------------------------------ */

static const unsigned k_rows[] = {1, 2, 4, 8, 16, 32};
static const unsigned k_warps[] = {1, 2, 4, 8, 16};
static const unsigned k_vec[] = {1, 2, 4, 8};
static const unsigned k_mult[] = {1, 2, 4, 8, 16}; /* kc = 32 * vec * mult (mma: 16 * mult, mult <= 8) */
static const unsigned k_split[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64};
static const unsigned k_cols[] = {32, 64, 128, 256, 512, 1024};
static const unsigned k_sketch[] = {SEARCH_SKETCH_SPLIT, SEARCH_SKETCH_FUSED, SEARCH_SKETCH_FUSED_COUNTER,
                                    SEARCH_SKETCH_CLUSTER};
static const unsigned k_mma[] = {0, 1};
static const unsigned k_stages[] = {1, 2, 3, 4}; /* 2..4: mma only */
static const unsigned k_persist[] = {0, 1};
#define MMA_ROWS 16u     /* the one tile height of the tensor-core path */
#define MMA_VEC 8u       /* and its vector width */
#define MMA_KC_STEP 16u  /* kc of an mma schedule: 16 * {1 2 4 8} */
#define MMA_MAX_MULT 8u  /* at most 8 k16 steps in flight */

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Fields, in the order of search_space_crossover and the repair cost. */
enum { F_SKETCH, F_ROWS, F_WARPS, F_VEC, F_KC, F_SPLIT, F_COLS, F_MMA, F_STAGES, F_PERSIST, F_COUNT };
_Static_assert(F_COUNT == SEARCH_SPACE_FIELDS, "field count");

static unsigned get_field(const search_schedule *s, int f)
{
    switch (f) {
    case F_SKETCH: return s->sketch;
    case F_ROWS: return s->rows;
    case F_WARPS: return s->warps;
    case F_VEC: return s->vec;
    case F_KC: return s->kc;
    case F_SPLIT: return s->split_k;
    case F_MMA: return s->mma;
    case F_STAGES: return s->stages;
    case F_PERSIST: return s->persist;
    default: return s->cols;
    }
}

static void set_field(search_schedule *s, int f, unsigned v)
{
    switch (f) {
    case F_SKETCH: s->sketch = (uint8_t)v; break;
    case F_ROWS: s->rows = (uint8_t)v; break;
    case F_WARPS: s->warps = (uint8_t)v; break;
    case F_VEC: s->vec = (uint8_t)v; break;
    case F_KC: s->kc = (uint16_t)v; break;
    case F_SPLIT: s->split_k = (uint8_t)v; break;
    case F_MMA: s->mma = (uint8_t)v; break;
    case F_STAGES: s->stages = (uint8_t)v; break;
    case F_PERSIST: s->persist = (uint8_t)v; break;
    default: s->cols = (uint16_t)v; break;
    }
}

static bool in_list(unsigned v, const unsigned *list, int n)
{
    for (int i = 0; i < n; ++i)
        if (list[i] == v)
            return true;
    return false;
}

/* Smallest power of two >= v, capped at cap (a power of two). */
static long next_pow2(long v, long cap)
{
    long p = 1;
    while (p < v && p < cap)
        p <<= 1;
    return p;
}

/* ---- the problem's rules ----------------------------------------------------------- */

typedef struct space_ctx {
    const search_problem *p;
    long rows_max;     /* rows per CTA allowed up to this */
    long cols_max;     /* cols per CTA allowed up to this */
    size_t smem_limit; /* static shared memory per CTA */
} space_ctx;

#define fail(why, len, ...) (search_say(why, len, __VA_ARGS__), false)

bool search_problem_valid(const search_problem *p, char *why, size_t why_len)
{
    if (!p)
        return fail(why, why_len, "problem is NULL");
    if (p->op < SEARCH_OP_APPLY || p->op > SEARCH_OP_EXPAND)
        return fail(why, why_len, "op %d is not apply (0), shrink (1) or expand (2)", p->op);
    if (p->dtype != SEARCH_DTYPE_F16 && p->dtype != SEARCH_DTYPE_BF16)
        return fail(why, why_len, "dtype %d is not f16 (1) or bf16 (2)", p->dtype);
    if (p->num_rows < 1)
        return fail(why, why_len, "num_rows %d < 1", p->num_rows);
    if (p->d_in < 1)
        return fail(why, why_len, "d_in %d < 1", p->d_in);
    if (p->num_slices < 1 || p->num_slices > SEARCH_MAX_SLICES)
        return fail(why, why_len, "num_slices %d not in 1..%d", p->num_slices, SEARCH_MAX_SLICES);
    if (p->op != SEARCH_OP_SHRINK)
        for (int i = 0; i < p->num_slices; ++i)
            if (p->d_out[i] < 1)
                return fail(why, why_len, "d_out[%d] = %d < 1", i, p->d_out[i]);
    if (p->max_rank < 1 || p->max_rank > 128)
        return fail(why, why_len, "max_rank %d not in 1..128", p->max_rank);
    if (p->cc_major < 8 || p->cc_minor < 0)
        return fail(why, why_len, "sm_%d%d: the kernels need sm_80 or newer", p->cc_major, p->cc_minor);
    if (p->smem_per_block < 0 || p->sm_count < 0)
        return fail(why, why_len, "negative smem_per_block or sm_count");
    return true;
}

static bool ctx_init(space_ctx *c, const search_problem *p)
{
    if (!search_problem_valid(p, NULL, 0))
        return false;
    c->p = p;
    c->rows_max = next_pow2(p->num_rows, 32);
    long dmax = 1;
    for (int i = 0; i < p->num_slices; ++i)
        if (p->d_out[i] > dmax)
            dmax = p->d_out[i];
    c->cols_max = next_pow2(dmax, 1024);
    if (c->cols_max < 32)
        c->cols_max = 32;
    c->smem_limit = SEARCH_STATIC_SMEM_LIMIT;
    if (p->smem_per_block > 0 && (size_t)p->smem_per_block < c->smem_limit)
        c->smem_limit = (size_t)p->smem_per_block;
    return true;
}

/* K step granularity: kc is this times 1, 2, 4, 8 (or 16 without mma). */
static unsigned kc_step(unsigned mma, unsigned vec)
{
    return mma ? MMA_KC_STEP : 32u * vec;
}

static bool split_pinned(const space_ctx *c, unsigned sketch)
{
    return sketch == SEARCH_SKETCH_FUSED || c->p->op == SEARCH_OP_EXPAND ||
           (c->p->op == SEARCH_OP_SHRINK && c->p->shrink_overwrite);
}

static bool rule_sketch(const space_ctx *c, unsigned sketch, char *why, size_t len)
{
    if (!in_list(sketch, k_sketch, N_OF(k_sketch)))
        return fail(why, len, "unknown sketch %u", sketch);
    if (sketch == SEARCH_SKETCH_FUSED && c->p->op != SEARCH_OP_APPLY)
        return fail(why, len, "the fused sketch is for op apply only");
    if (sketch == SEARCH_SKETCH_FUSED_COUNTER && c->p->op != SEARCH_OP_APPLY)
        return fail(why, len, "the counter sketch is for op apply only");
    if (sketch == SEARCH_SKETCH_CLUSTER && c->p->op != SEARCH_OP_APPLY)
        return fail(why, len, "the cluster sketch is for op apply only");
    /* thread-block clusters and distributed shared memory: the module does not compile for older targets */
    if (sketch == SEARCH_SKETCH_CLUSTER && c->p->cc_major < 9)
        return fail(why, len, "the cluster sketch needs thread-block clusters: sm_90 or newer (the target is sm_%d%d)",
                    c->p->cc_major, c->p->cc_minor);
    return true;
}

static bool rule_rows(const space_ctx *c, unsigned sketch, unsigned mma, unsigned rows, char *why, size_t len);

static bool rule_mma(const space_ctx *c, unsigned sketch, unsigned mma, char *why, size_t len)
{
    if (!in_list(mma, k_mma, N_OF(k_mma)))
        return fail(why, len, "mma %u not 0 or 1", mma);
    if (!mma)
        return true;
    if (c->p->d_in % (int)MMA_VEC != 0)
        return fail(why, len, "tensor cores (mma) load 8 elements at a time: d_in %d is not a multiple of 8",
                    c->p->d_in);
    char inner[160] = "";
    if (!rule_rows(c, sketch, 0, MMA_ROWS, inner, sizeof inner))
        return fail(why, len, "tensor cores (mma) need 16 rows per CTA: %s", inner);
    return true;
}

/* The shared memory of a row tile depends on the sketch: the cluster sketch holds two fp32 intermediates. */
static bool rule_rows(const space_ctx *c, unsigned sketch, unsigned mma, unsigned rows, char *why, size_t len)
{
    if (!in_list(rows, k_rows, N_OF(k_rows)))
        return fail(why, len, "rows per CTA %u not in the domain 1..32 (powers of two)", rows);
    if (mma && rows != MMA_ROWS)
        return fail(why, len, "tensor-core (mma) schedules take 16 rows per CTA, not %u", rows);
    if ((long)rows > c->rows_max)
        return fail(why, len, "rows per CTA %u more than the next power of two of num_rows %d (%ld)", rows,
                    c->p->num_rows, c->rows_max);
    search_schedule t;
    memset(&t, 0, sizeof t);
    t.sketch = (uint8_t)sketch;
    t.rows = (uint8_t)rows;
    size_t smem = search_schedule_smem(&t, c->p->max_rank);
    if (smem > c->smem_limit)
        return fail(why, len, "rows per CTA %u need %zu bytes of shared memory, more than the %zu of the target", rows,
                    smem, c->smem_limit);
    return true;
}

static bool rule_warps(const space_ctx *c, unsigned warps, char *why, size_t len)
{
    (void)c;
    if (!in_list(warps, k_warps, N_OF(k_warps)))
        return fail(why, len, "warps per CTA %u not in the domain 1..16 (powers of two)", warps);
    if (warps * 32u > 1024u)
        return fail(why, len, "%u threads per CTA, more than 1024", warps * 32u);
    return true;
}

static bool rule_vec(const space_ctx *c, unsigned mma, unsigned vec, char *why, size_t len)
{
    if (!in_list(vec, k_vec, N_OF(k_vec)))
        return fail(why, len, "vector width %u not 1, 2, 4 or 8", vec);
    if (mma && vec != MMA_VEC)
        return fail(why, len, "tensor-core (mma) schedules take vec 8, not %u", vec);
    if (c->p->op == SEARCH_OP_EXPAND && !mma && vec != 1)
        return fail(why, len, "op expand reads no vector width: vec is pinned to 1 (got %u)", vec);
    if (c->p->d_in % (int)vec != 0)
        return fail(why, len, "vector width %u does not divide d_in %d (the kernel would fall back to scalar loads)",
                    vec, c->p->d_in);
    return true;
}

static bool rule_split(const space_ctx *c, unsigned sketch, unsigned mma, unsigned vec, unsigned split, char *why,
                       size_t len)
{
    if (!in_list(split, k_split, N_OF(k_split)))
        return fail(why, len, "split-K %u not in the domain {1 2 3 4 6 8 12 16 24 32 48 64}", split);
    if (split_pinned(c, sketch)) {
        if (split != 1)
            return fail(why, len, "split-K %u where it must be 1 (%s)", split,
                        sketch == SEARCH_SKETCH_FUSED   ? "fused sketch"
                        : c->p->op == SEARCH_OP_EXPAND ? "op expand"
                                                       : "op shrink overwriting its output");
        return true;
    }
    if (sketch == SEARCH_SKETCH_CLUSTER && split > SEARCH_MAX_CLUSTER)
        return fail(why, len, "split-K %u of the cluster sketch is its cluster size, at most %d CTAs", split,
                    SEARCH_MAX_CLUSTER);
    long gran = search_k_gran(mma, vec), d_in = c->p->d_in;
    long most = (d_in + gran - 1) / gran;
    if ((long)split > most)
        return fail(why, len, "split-K %u more than ceil(d_in %ld / %ld (one warp-wide load)) = %ld", split, d_in, gran,
                    most);
    long kpc = search_k_per_cta(d_in, mma, vec, split);
    long made = (d_in + kpc - 1) / kpc;
    if (made != (long)split)
        return fail(why, len, "split-K %u launches as %ld CTAs (%ld K elements each, whole %ld-element loads)", split,
                    made, kpc, gran);
    return true;
}

static bool rule_kc(const space_ctx *c, unsigned sketch, unsigned mma, unsigned vec, unsigned split, unsigned kc,
                    char *why, size_t len)
{
    unsigned step = kc_step(mma, vec);
    if (mma) {
        if (kc == 0 || kc % step != 0 || !in_list(kc / step, k_mult, N_OF(k_mult)) || kc / step > MMA_MAX_MULT)
            return fail(why, len, "K step %u of an mma schedule is not 16 times 1, 2, 4 or 8", kc);
    } else if (kc == 0 || kc % step != 0 || !in_list(kc / step, k_mult, N_OF(k_mult))) {
        return fail(why, len, "K step %u is not 32 * vec (%u) times 1, 2, 4, 8 or 16", kc, step);
    }
    if (c->p->op == SEARCH_OP_EXPAND) {
        if (kc != step)
            return fail(why, len, "op expand reads no K step: kc is pinned to %u (got %u)", step, kc);
        return true;
    }
    long kpc = search_k_per_cta(c->p->d_in, mma, vec, split_pinned(c, sketch) ? 1 : split);
    long most = next_pow2(kpc / step, mma ? MMA_MAX_MULT : 16);
    if ((long)(kc / step) > most)
        return fail(why, len, "K step %u: %u loads per lane, more than the %ld a CTA's K range of %ld needs", kc,
                    kc / step, most, kpc);
    return true;
}

/* stages: 1 without mma and for op expand (its kernel has no shrink); with mma
 * the ring of x and A tiles must fit the target's shared memory with the rest
 * (the rest depends on the sketch: the cluster sketch has two intermediates) */
static bool rule_stages(const space_ctx *c, unsigned sketch, unsigned mma, unsigned kc, unsigned stages, char *why,
                        size_t len)
{
    if (!in_list(stages, k_stages, N_OF(k_stages)))
        return fail(why, len, "stages %u not in 1..4", stages);
    if (stages == 1)
        return true;
    if (!mma)
        return fail(why, len, "stages %u without mma: only the tensor-core shrink stages its tiles (pinned to 1)",
                    stages);
    if (c->p->op == SEARCH_OP_EXPAND)
        return fail(why, len, "op expand runs no shrink: stages is pinned to 1 (got %u)", stages);
    search_schedule t;
    memset(&t, 0, sizeof t);
    t.sketch = (uint8_t)sketch;
    t.rows = (uint8_t)MMA_ROWS;
    t.mma = 1;
    t.kc = (uint16_t)kc;
    t.stages = (uint8_t)stages;
    size_t smem = search_schedule_smem(&t, c->p->max_rank);
    if (smem > c->smem_limit)
        return fail(why, len, "%u stages of kc %u need %zu bytes of shared memory, more than the %zu of the target",
                    stages, kc, smem, c->smem_limit);
    return true;
}

/* persist: every entry point but the cluster sketch's has the persistent loop, so
 * it is free for the other sketches and every op; the cluster sketch pins it to 0 */
static bool rule_persist(unsigned sketch, unsigned persist, char *why, size_t len)
{
    if (!in_list(persist, k_persist, N_OF(k_persist)))
        return fail(why, len, "persist %u not 0 or 1", persist);
    if (sketch == SEARCH_SKETCH_CLUSTER && persist != 0)
        return fail(why, len, "the cluster sketch has no persistent grid: persist is pinned to 0 (got %u)", persist);
    return true;
}

static bool rule_cols(const space_ctx *c, unsigned cols, char *why, size_t len)
{
    if (!in_list(cols, k_cols, N_OF(k_cols)))
        return fail(why, len, "output columns per CTA %u not in the domain 32..1024 (powers of two)", cols);
    if (c->p->op == SEARCH_OP_SHRINK) {
        if (cols != 32)
            return fail(why, len, "op shrink reads no column tile: cols is pinned to 32 (got %u)", cols);
        return true;
    }
    if ((long)cols > c->cols_max)
        return fail(why, len, "output columns per CTA %u more than the next power of two of max d_out (%ld)", cols,
                    c->cols_max);
    return true;
}

static bool legal_ctx(const space_ctx *c, const search_schedule *s, char *why, size_t len)
{
    if (!search_schedule_legal(s, c->p->max_rank, why, len))
        return false;
    return rule_sketch(c, s->sketch, why, len) && rule_mma(c, s->sketch, s->mma, why, len) &&
           rule_rows(c, s->sketch, s->mma, s->rows, why, len) && rule_warps(c, s->warps, why, len) &&
           rule_vec(c, s->mma, s->vec, why, len) && rule_split(c, s->sketch, s->mma, s->vec, s->split_k, why, len) &&
           rule_kc(c, s->sketch, s->mma, s->vec, s->split_k, s->kc, why, len) &&
           rule_stages(c, s->sketch, s->mma, s->kc, s->stages, why, len) && rule_cols(c, s->cols, why, len) &&
           rule_persist(s->sketch, s->persist, why, len);
}

bool search_space_legal(const search_problem *p, const search_schedule *s, char *why, size_t why_len)
{
    space_ctx c;
    if (!search_problem_valid(p, why, why_len))
        return false;
    ctx_init(&c, p);
    if (!s)
        return fail(why, why_len, "schedule is NULL");
    return legal_ctx(&c, s, why, why_len);
}

/* ---- enumeration ------------------------------------------------------------------ */

static search_schedule blank(void)
{
    search_schedule s;
    memset(&s, 0, sizeof s);
    s.version = SEARCH_SCHEDULE_VERSION;
    s.stages = 1;
    return s;
}

/* Walks the space (only sketch `only` when nonzero) in the documented order;
 * fn's nonzero return stops it. Returns the number of schedules visited. */
static long walk(const space_ctx *c, unsigned only, search_space_fn fn, void *user)
{
    long n = 0;
    search_schedule s = blank();
    for (int a = 0; a < N_OF(k_sketch) * N_OF(k_mma); ++a) {
        /* sketch, then mma: one loop so the nesting below stays as deep as before */
        s.sketch = (uint8_t)k_sketch[a / N_OF(k_mma)];
        s.mma = (uint8_t)k_mma[a % N_OF(k_mma)];
        if ((only && s.sketch != only) || !rule_sketch(c, s.sketch, NULL, 0) || !rule_mma(c, s.sketch, s.mma, NULL, 0))
            continue;
        for (int r = 0; r < N_OF(k_rows); ++r) {
            if (!rule_rows(c, s.sketch, s.mma, k_rows[r], NULL, 0))
                continue;
            s.rows = (uint8_t)k_rows[r];
            for (int w = 0; w < N_OF(k_warps); ++w) {
                if (!rule_warps(c, k_warps[w], NULL, 0))
                    continue;
                s.warps = (uint8_t)k_warps[w];
                for (int v = 0; v < N_OF(k_vec); ++v) {
                    if (!rule_vec(c, s.mma, k_vec[v], NULL, 0))
                        continue;
                    s.vec = (uint8_t)k_vec[v];
                    for (int k = 0; k < N_OF(k_split); ++k) {
                        if (!rule_split(c, s.sketch, s.mma, s.vec, k_split[k], NULL, 0))
                            continue;
                        s.split_k = (uint8_t)k_split[k];
                        for (int m = 0; m < N_OF(k_mult); ++m) {
                            unsigned kc = kc_step(s.mma, s.vec) * k_mult[m];
                            if (!rule_kc(c, s.sketch, s.mma, s.vec, s.split_k, kc, NULL, 0))
                                continue;
                            s.kc = (uint16_t)kc;
                            for (int q = 0; q < N_OF(k_stages) * N_OF(k_cols) * N_OF(k_persist); ++q) {
                                /* stages, then cols, then persist: one loop, as for sketch and mma */
                                unsigned st = k_stages[q / (N_OF(k_cols) * N_OF(k_persist))];
                                unsigned co = k_cols[q / N_OF(k_persist) % N_OF(k_cols)];
                                unsigned pe = k_persist[q % N_OF(k_persist)];
                                if (!rule_stages(c, s.sketch, s.mma, s.kc, st, NULL, 0) ||
                                    !rule_cols(c, co, NULL, 0) || !rule_persist(s.sketch, pe, NULL, 0))
                                    continue;
                                s.stages = (uint8_t)st;
                                s.cols = (uint16_t)co;
                                s.persist = (uint8_t)pe;
                                if (!search_schedule_legal(&s, c->p->max_rank, NULL, 0))
                                    continue;
                                ++n;
                                if (fn && fn(&s, user))
                                    return n;
                            }
                        }
                    }
                }
            }
        }
    }
    return n;
}

long search_space_enumerate(const search_problem *p, search_space_fn fn, void *user)
{
    space_ctx c;
    if (!ctx_init(&c, p))
        return -1;
    return walk(&c, 0, fn, user);
}

static int count_fn(const search_schedule *s, void *user)
{
    long *counts = user;
    counts[s->sketch]++;
    return 0;
}

long search_space_count(const search_problem *p, long *counts)
{
    long local[SEARCH_SPACE_COUNTS] = {0};
    space_ctx c;
    if (!ctx_init(&c, p)) {
        if (counts)
            memset(counts, 0, sizeof local);
        return -1;
    }
    walk(&c, 0, count_fn, local);
    for (int k = 1; k < SEARCH_SPACE_COUNTS; ++k)
        local[0] += local[k];
    if (counts)
        memcpy(counts, local, sizeof local);
    return local[0];
}

typedef struct at_state {
    long left;
    search_schedule *out;
} at_state;

static int at_fn(const search_schedule *s, void *user)
{
    at_state *st = user;
    if (st->left-- == 0) {
        *st->out = *s;
        return 1;
    }
    return 0;
}

static int at_ctx(const space_ctx *c, unsigned only, long index, search_schedule *out)
{
    if (index < 0)
        return -1;
    at_state st = {index, out};
    long n = walk(c, only, at_fn, &st);
    return (n == index + 1 && st.left < 0) ? 0 : -1;
}

int search_space_at(const search_problem *p, long index, search_schedule *out)
{
    space_ctx c;
    if (!out || !ctx_init(&c, p))
        return -1;
    return at_ctx(&c, 0, index, out);
}

/* ---- random numbers --------------------------------------------------------------- */

uint64_t search_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t search_rng_below(uint64_t *state, uint64_t n)
{
    if (n <= 1)
        return 0;
    uint64_t limit = -n % n; /* values below 2^64 mod n would favour small results */
    for (;;) {
        uint64_t r = search_rng_next(state);
        if (r >= limit)
            return r % n;
    }
}

/* ---- sampling ----------------------------------------------------------------------- */

/* Grid points tried before the exact draw: enough that spaces holding a few
 * percent of the grid almost never get there. */
#define SAMPLE_TRIES 2048

static int sample_ctx(const space_ctx *c, unsigned only, uint64_t *rng, search_schedule *out)
{
    search_schedule s = blank();
    for (int t = 0; t < SAMPLE_TRIES; ++t) {
        s.sketch = (uint8_t)(only ? only : k_sketch[search_rng_below(rng, N_OF(k_sketch))]);
        s.mma = (uint8_t)k_mma[search_rng_below(rng, N_OF(k_mma))];
        s.rows = (uint8_t)k_rows[search_rng_below(rng, N_OF(k_rows))];
        s.warps = (uint8_t)k_warps[search_rng_below(rng, N_OF(k_warps))];
        s.vec = (uint8_t)k_vec[search_rng_below(rng, N_OF(k_vec))];
        s.split_k = (uint8_t)k_split[search_rng_below(rng, N_OF(k_split))];
        s.kc = (uint16_t)(kc_step(s.mma, s.vec) * k_mult[search_rng_below(rng, N_OF(k_mult))]);
        s.cols = (uint16_t)k_cols[search_rng_below(rng, N_OF(k_cols))];
        s.stages = (uint8_t)k_stages[search_rng_below(rng, N_OF(k_stages))];
        s.persist = (uint8_t)k_persist[search_rng_below(rng, N_OF(k_persist))];
        if (legal_ctx(c, &s, NULL, 0)) {
            *out = s;
            return 0;
        }
    }
    long n = walk(c, only, NULL, NULL);
    if (n <= 0)
        return -1;
    return at_ctx(c, only, (long)search_rng_below(rng, (uint64_t)n), out);
}

int search_space_sample_sketch(const search_problem *p, int sketch, uint64_t *rng, search_schedule *out)
{
    space_ctx c;
    if (!rng || !out || !ctx_init(&c, p))
        return -1;
    if (sketch != 0 && !in_list((unsigned)sketch, k_sketch, N_OF(k_sketch)))
        return -1;
    return sample_ctx(&c, (unsigned)sketch, rng, out);
}

int search_space_sample(const search_problem *p, uint64_t *rng, search_schedule *out)
{
    return search_space_sample_sketch(p, 0, rng, out);
}

/* ---- repair ------------------------------------------------------------------------- */

static int ilog2u(unsigned v)
{
    int l = 0;
    while (v > 1) {
        v >>= 1;
        ++l;
    }
    return l;
}

static long field_dist(unsigned a, unsigned b)
{
    if (a == b)
        return 0;
    int d = ilog2u(a) - ilog2u(b);
    return 1 + (d < 0 ? -d : d);
}

/* Position in the enumeration order (sketch, mma, rows, warps, vec, split_k, kc,
 * stages, cols, persist), for schedules of the space (each field in its domain). */
static uint64_t order_key(const search_schedule *s)
{
    uint64_t k = s->sketch & 7u;
    k = k << 1 | (s->mma & 1u);
    k = k << 6 | (s->rows & 63u);
    k = k << 5 | (s->warps & 31u);
    k = k << 4 | (s->vec & 15u);
    k = k << 7 | (s->split_k & 127u);
    k = k << 13 | (s->kc & 8191u);
    k = k << 3 | (s->stages & 7u);
    k = k << 11 | (s->cols & 2047u);
    return k << 1 | (s->persist & 1u);
}

typedef struct repair_state {
    search_schedule want, alt; /* the schedule to come near; fields of alt count as kept too */
    long best_cost;
    search_schedule best;
} repair_state;

/* Lexicographic: fields matching neither want nor alt, then fields changed
 * from want, then how far they moved (log2 steps). */
static long repair_cost(const search_schedule *s, const search_schedule *want, const search_schedule *alt)
{
    long neither = 0, changed = 0, dist = 0;
    for (int f = 0; f < F_COUNT; ++f) {
        unsigned v = get_field(s, f), w = get_field(want, f), a = get_field(alt, f);
        if (v == w)
            continue;
        ++changed;
        if (v != a)
            ++neither;
        long d1 = field_dist(v, w), d2 = field_dist(v, a);
        dist += d1 < d2 ? d1 : d2;
    }
    return neither * 1000000L + changed * 1000L + dist;
}

static int repair_fn(const search_schedule *s, void *user)
{
    repair_state *st = user;
    long cost = repair_cost(s, &st->want, &st->alt);
    if (cost < st->best_cost) {
        st->best_cost = cost;
        st->best = *s;
    }
    return cost == 0;
}

/* Nearest schedule of the space (sketch `only` when nonzero) to want; 0 or -1 (empty). */
static int repair_ctx(const space_ctx *c, unsigned only, const search_schedule *want, const search_schedule *alt,
                      search_schedule *out)
{
    repair_state st;
    st.want = *want;
    st.alt = *alt;
    st.best_cost = (long)(~0UL >> 1);
    st.best = blank();
    if (walk(c, only, repair_fn, &st) <= 0)
        return -1;
    *out = st.best;
    return 0;
}

int search_space_repair(const search_problem *p, const search_schedule *in, search_schedule *out)
{
    space_ctx c;
    if (!in || !out || !ctx_init(&c, p))
        return -1;
    if (legal_ctx(&c, in, NULL, 0)) {
        *out = *in;
        return 0;
    }
    return repair_ctx(&c, 0, in, in, out) == 0 ? 1 : -1;
}

/* ---- mutation ----------------------------------------------------------------------- */

#define MAX_MOVES 16

typedef struct different_state {
    const search_schedule *in;
    search_schedule found;
} different_state;

static int different_fn(const search_schedule *s, void *user)
{
    different_state *st = user;
    if (memcmp(s, st->in, sizeof *s) == 0)
        return 0;
    st->found = *s;
    return 1;
}

/* Fields whose domain depends on field f (the order sketch, mma, rows, vec,
 * split_k, kc, stages, persist): after f moves, these may have to follow. mma
 * pins rows and vec, changes the K granularity (split_k) and the K step (kc)
 * and allows stages; the stages' ring grows with kc. The sketch sets split_k
 * (fused: 1, cluster: at most 16) and with it kc and stages; the cluster
 * sketch also doubles the intermediate in shared memory (rows, stages) and
 * pins persist to 0. */
static unsigned dependents_of(int f)
{
    switch (f) {
    case F_MMA: return 1u << F_ROWS | 1u << F_VEC | 1u << F_SPLIT | 1u << F_KC | 1u << F_STAGES;
    case F_SKETCH: return 1u << F_ROWS | 1u << F_SPLIT | 1u << F_KC | 1u << F_STAGES | 1u << F_PERSIST;
    case F_VEC: return 1u << F_SPLIT | 1u << F_KC | 1u << F_STAGES;
    case F_SPLIT: return 1u << F_KC | 1u << F_STAGES;
    case F_KC: return 1u << F_STAGES;
    default: return 0;
    }
}

/* Makes t legal by changing only the dependents of field f, as little as
 * possible (fewest fields, then smallest steps; ties to the first in domain
 * order). 0, or -1 when no values of them make it legal. */
static int fix_dependents(const space_ctx *c, int f, search_schedule *t)
{
    if (legal_ctx(c, t, NULL, 0))
        return 0;
    unsigned dep = dependents_of(f);
    if (!dep)
        return -1;
    const search_schedule want = *t;
    long best = -1;
    search_schedule found = want;
    /* every dependent runs over its domain, the others stay */
    int nr = dep >> F_ROWS & 1u ? N_OF(k_rows) : 1;
    int nv = dep >> F_VEC & 1u ? N_OF(k_vec) : 1;
    int ns = dep >> F_SPLIT & 1u ? N_OF(k_split) : 1;
    int nm = dep >> F_KC & 1u ? N_OF(k_mult) : 1;
    int nt = dep >> F_STAGES & 1u ? N_OF(k_stages) : 1;
    int np = dep >> F_PERSIST & 1u ? N_OF(k_persist) : 1;
    for (int r = 0; r < nr; ++r)
        for (int v = 0; v < nv; ++v)
            for (int i = 0; i < ns; ++i)
                for (int m = 0; m < nm; ++m)
                    for (int q = 0; q < nt * np; ++q) {
                        /* stages, then persist: one loop so the nesting stays as deep as before */
                        search_schedule u = want;
                        if (dep >> F_ROWS & 1u)
                            u.rows = (uint8_t)k_rows[r];
                        if (dep >> F_VEC & 1u)
                            u.vec = (uint8_t)k_vec[v];
                        if (dep >> F_SPLIT & 1u)
                            u.split_k = (uint8_t)k_split[i];
                        if (dep >> F_KC & 1u)
                            u.kc = (uint16_t)(kc_step(u.mma, u.vec) * k_mult[m]);
                        if (dep >> F_STAGES & 1u)
                            u.stages = (uint8_t)k_stages[q / np];
                        if (dep >> F_PERSIST & 1u)
                            u.persist = (uint8_t)k_persist[q % np];
                        if (!legal_ctx(c, &u, NULL, 0))
                            continue;
                        long cost = repair_cost(&u, &want, &want);
                        if (best < 0 || cost < best) {
                            best = cost;
                            found = u;
                        }
                    }
    if (best < 0)
        return -1;
    *t = found;
    return 0;
}

int search_space_mutate(const search_problem *p, const search_schedule *in, uint64_t *rng, search_schedule *out)
{
    space_ctx c;
    if (!in || !rng || !out || !ctx_init(&c, p))
        return -1;
    if (!legal_ctx(&c, in, NULL, 0))
        return repair_ctx(&c, 0, in, in, out) == 0 ? 2 : -1;

    /*
     * A field first, each field with a legal move equally likely, then one of its
     * moves. The fields are visited in a random order and the first with a legal
     * move is taken: the same distribution as collecting every field's moves and
     * drawing among the fields that have some, for the moves of one or two fields
     * instead of all ten (a mutation is the search's innermost step).
     */
    int order[F_COUNT];
    for (int f = 0; f < F_COUNT; ++f)
        order[f] = f;
    for (int i = F_COUNT - 1; i > 0; --i) {
        int j = (int)search_rng_below(rng, (uint64_t)i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int o = 0; o < F_COUNT; ++o) {
        const int f = order[o];
        const unsigned *dom;
        unsigned kcdom[N_OF(k_mult)];
        int n;
        switch (f) {
        case F_SKETCH: dom = k_sketch, n = N_OF(k_sketch); break;
        case F_ROWS: dom = k_rows, n = N_OF(k_rows); break;
        case F_WARPS: dom = k_warps, n = N_OF(k_warps); break;
        case F_VEC: dom = k_vec, n = N_OF(k_vec); break;
        case F_MMA: dom = k_mma, n = N_OF(k_mma); break;
        case F_STAGES: dom = k_stages, n = N_OF(k_stages); break;
        case F_PERSIST: dom = k_persist, n = N_OF(k_persist); break;
        case F_KC:
            for (int i = 0; i < N_OF(k_mult); ++i)
                kcdom[i] = kc_step(in->mma, in->vec) * k_mult[i];
            dom = kcdom, n = N_OF(k_mult);
            break;
        case F_SPLIT: dom = k_split, n = N_OF(k_split); break;
        default: dom = k_cols, n = N_OF(k_cols); break;
        }
        search_schedule moves[MAX_MOVES];
        int nmoves = 0;
        for (int i = 0; i < n && nmoves < MAX_MOVES; ++i) {
            if (dom[i] == get_field(in, f))
                continue;
            search_schedule t = *in;
            set_field(&t, f, dom[i]);
            if (fix_dependents(&c, f, &t) == 0)
                moves[nmoves++] = t;
        }
        if (nmoves > 0) {
            *out = moves[search_rng_below(rng, (uint64_t)nmoves)];
            return 0;
        }
    }
    /* no single move: any other schedule of the space */
    long n = walk(&c, 0, NULL, NULL);
    if (n <= 1) {
        *out = *in;
        return 1;
    }
    for (int t = 0; t < SAMPLE_TRIES; ++t) {
        search_schedule s;
        if (sample_ctx(&c, 0, rng, &s) == 0 && memcmp(&s, in, sizeof s) != 0) {
            *out = s;
            return 1;
        }
    }
    /* (practically unreachable) the first other one in enumeration order */
    different_state st = {in, *in};
    walk(&c, 0, different_fn, &st);
    *out = st.found;
    return 1;
}

/* ---- crossover ---------------------------------------------------------------------- */

int search_space_crossover(const search_problem *p, const search_schedule *a, const search_schedule *b, uint64_t *rng,
                           search_schedule *out)
{
    space_ctx c;
    if (!a || !b || !rng || !out || !ctx_init(&c, p))
        return -1;
    uint64_t coins = search_rng_next(rng);
    search_schedule child = blank(), other = blank();
    for (int f = 0; f < F_COUNT; ++f) {
        int from_a = (int)(coins >> f & 1u);
        set_field(&child, f, get_field(from_a ? a : b, f));
        set_field(&other, f, get_field(from_a ? b : a, f));
    }
    if (legal_ctx(&c, &child, NULL, 0)) {
        *out = child;
        return 0;
    }
    /* the legal mixtures of the parents nearest to the child (what the full
     * repair below would find whenever one exists, including its tie-break) */
    search_schedule r = child;
    long best = -1;
    for (unsigned mask = 1; mask < 1u << F_COUNT; ++mask) {
        search_schedule u = child;
        for (int f = 0; f < F_COUNT; ++f)
            if (mask >> f & 1u)
                set_field(&u, f, get_field(&other, f));
        if (!legal_ctx(&c, &u, NULL, 0))
            continue;
        long cost = repair_cost(&u, &child, &other);
        if (best < 0 || cost < best || (cost == best && order_key(&u) < order_key(&r))) {
            best = cost;
            r = u;
        }
    }
    if (best < 0 && repair_ctx(&c, 0, &child, &other, &r) != 0)
        return -1;
    int neither = 0;
    for (int f = 0; f < F_COUNT; ++f) {
        unsigned v = get_field(&r, f);
        neither += v != get_field(a, f) && v != get_field(b, f);
    }
    *out = r;
    return neither;
}
