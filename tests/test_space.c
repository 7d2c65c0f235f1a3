/*
 * test_space.c -- the schedule space of a problem (search/search_space.c).
 *
 * - the sizes of the space per sketch (split, fused, counter, cluster) and
 *   with tensor cores (mma) for 4096 -> 16 -> 4096 fp16 on sm_90 (op apply,
 *   and a table over num_rows, ranks and the other ops), the cluster sketch's
 *   also counted by hand;
 * - the cluster sketch only for op apply on sm_90 and newer, with split_k at
 *   most 16 and persist 0;
 * - the enumeration is exactly the set of grid points that pass
 *   search_schedule_legal and the problem rules (the rules re-stated here on
 *   their own), in order, without repeats, and search_space_at agrees;
 * - search_space_legal names the rule a schedule breaks;
 * - the sampler is deterministic per seed, always legal and uniform (a
 *   chi-square test over every schedule of the space, also on a space so
 *   small that the exact fallback draws most samples);
 * - mutation: always legal, one annotation changed (its dependents following
 *   only when they must, and no more of them than needed), every kind of
 *   move happens (mma switched both ways included), illegal inputs are
 *   repaired;
 * - crossover: always legal, every field from a parent unless repaired (and
 *   then the return value says how many are not), a x a = a;
 * - odd problems: d_in 100, 3424, 11008, ranks 1..128, num_rows 1..4096,
 *   several slices, a small shared-memory limit, every op and dtype.
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

#include "search_schedule.h"
#include "search_space.h"

static search_problem problem(int op, int dtype, int num_rows, int d_in, int rank, int d_out)
{
    search_problem p;
    memset(&p, 0, sizeof p);
    p.op = op;
    p.dtype = dtype;
    p.num_rows = num_rows;
    p.d_in = d_in;
    p.num_slices = 1;
    p.d_out[0] = d_out;
    p.max_rank = rank;
    p.cc_major = 9;
    p.cc_minor = 0;
    p.sm_count = 132;
    return p;
}

static search_problem base_problem(void)
{
    return problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 4096, 16, 4096);
}

static void fmt(const search_schedule *s, char *buf, size_t len)
{
    search_schedule_format(s, buf, len);
}

/* The enumeration order as a number, for schedules whose fields are within
 * the domains (sketch in the top bits: check_uniform reads it there). */
static uint64_t key_of(const search_schedule *s)
{
    return (uint64_t)s->sketch << 57 | (uint64_t)(s->mma & 1u) << 56 | (uint64_t)s->rows << 45 |
           (uint64_t)s->warps << 39 | (uint64_t)s->vec << 35 | (uint64_t)s->split_k << 28 | (uint64_t)s->kc << 15 |
           (uint64_t)s->stages << 12 | (uint64_t)s->cols << 1 | (uint64_t)(s->persist & 1u);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the rules, stated again independently of search_space.c ---------------------- */

static long np2(long v)
{
    long p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

static int is_pow2(unsigned v)
{
    return v && !(v & (v - 1));
}

/* Whether s should be in p's space (search_space.h's rules, re-derived). */
static int expected_legal(const search_problem *p, const search_schedule *s)
{
    if (!search_schedule_legal(s, p->max_rank, NULL, 0))
        return 0;
    if (s->sketch < SEARCH_SKETCH_SPLIT || s->sketch > SEARCH_SKETCH_CLUSTER)
        return 0;
    if (s->sketch != SEARCH_SKETCH_SPLIT && p->op != SEARCH_OP_APPLY) /* fused, counter, cluster: apply only */
        return 0;
    /* cluster: thread-block clusters (sm_90+) of at most 16 CTAs, no persistent grid */
    if (s->sketch == SEARCH_SKETCH_CLUSTER && (p->cc_major < 9 || s->split_k > 16 || s->persist != 0))
        return 0;
    if (s->mma > 1)
        return 0;
    if (s->stages < 1 || s->stages > 4 || (s->stages > 1 && (!s->mma || p->op == SEARCH_OP_EXPAND)))
        return 0;
    if (s->persist > 1)
        return 0;
    if (s->mma && (p->d_in % 8 || s->rows != 16 || s->vec != 8))
        return 0;
    if (!is_pow2(s->rows) || s->rows > 32 || s->rows > np2(p->num_rows))
        return 0;
    if (!is_pow2(s->warps) || s->warps > 16)
        return 0;
    if (!is_pow2(s->vec) || s->vec > 8 || p->d_in % s->vec)
        return 0;
    unsigned unit = s->mma ? 16u : 32u * s->vec; /* kc = unit x loads in flight */
    unsigned mult = s->kc / unit;
    if (s->kc % unit || !is_pow2(mult) || mult > (s->mma ? 8u : 16u))
        return 0;
    if (!is_pow2(s->cols) || s->cols < 32 || s->cols > 1024)
        return 0;
    static const unsigned splits[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64};
    int in = 0;
    for (int i = 0; i < 12; ++i)
        in |= splits[i] == s->split_k;
    if (!in)
        return 0;
    long gran = s->mma ? 256 : 32L * s->vec;
    long kpc = ((p->d_in + s->split_k - 1) / s->split_k + gran - 1) / gran * gran;
    if (s->sketch == SEARCH_SKETCH_FUSED || p->op == SEARCH_OP_EXPAND ||
        (p->op == SEARCH_OP_SHRINK && p->shrink_overwrite)) {
        if (s->split_k != 1)
            return 0;
    } else {
        if (s->split_k > (p->d_in + gran - 1) / gran)
            return 0;
        if ((p->d_in + kpc - 1) / kpc != s->split_k) /* the launcher would make fewer CTAs */
            return 0;
    }
    if (p->op == SEARCH_OP_EXPAND && !s->mma && (s->vec != 1 || s->kc != 32))
        return 0;
    if (p->op == SEARCH_OP_EXPAND && s->mma && (s->vec != 8 || s->kc != 16))
        return 0;
    if (p->op != SEARCH_OP_EXPAND && mult > np2(kpc / unit))
        return 0;
    if (p->op == SEARCH_OP_SHRINK) {
        if (s->cols != 32)
            return 0;
    } else {
        long dmax = 0;
        for (int i = 0; i < p->num_slices; ++i)
            dmax = p->d_out[i] > dmax ? p->d_out[i] : dmax;
        if (s->cols > 32 && s->cols > np2(dmax))
            return 0;
    }
    size_t lim = p->smem_per_block > 0 && p->smem_per_block < SEARCH_STATIC_SMEM_LIMIT ? (size_t)p->smem_per_block
                                                                                      : SEARCH_STATIC_SMEM_LIMIT;
    if (search_schedule_smem(s, p->max_rank) > lim)
        return 0;
    return 1;
}

static void expect_in_space(const search_problem *p, const search_schedule *s, const char *what)
{
    char why[256] = "", txt[96];
    if (!search_space_legal(p, s, why, sizeof why) || !expected_legal(p, s)) {
        fmt(s, txt, sizeof txt);
        fail_msg("%s: %s is not in the space (%s; independent rules say %d)", what, txt, why, expected_legal(p, s));
    }
    assert_true(search_schedule_legal(s, p->max_rank, NULL, 0));
}

/* ---- enumeration into an array ---------------------------------------------------- */

typedef struct list {
    search_schedule *s;
    long n, cap;
} list;

static int list_add(const search_schedule *s, void *user)
{
    list *l = user;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->s = realloc(l->s, (size_t)l->cap * sizeof *l->s);
        assert_non_null(l->s);
    }
    l->s[l->n++] = *s;
    return 0;
}

static list enumerate(const search_problem *p)
{
    list l = {NULL, 0, 0};
    long n = search_space_enumerate(p, list_add, &l);
    assert_int_equal(n, l.n);
    return l;
}

/* Sorted keys of a list, for lookups. */
static uint64_t *sorted_keys(const list *l)
{
    uint64_t *k = malloc((size_t)(l->n ? l->n : 1) * sizeof *k);
    assert_non_null(k);
    for (long i = 0; i < l->n; ++i)
        k[i] = key_of(&l->s[i]);
    qsort(k, (size_t)l->n, sizeof *k, cmp_u64);
    return k;
}

static long index_of(const uint64_t *keys, long n, const search_schedule *s)
{
    uint64_t k = key_of(s);
    const uint64_t *hit = bsearch(&k, keys, (size_t)n, sizeof k, cmp_u64);
    return hit ? (long)(hit - keys) : -1;
}

/* ---- problems used throughout ----------------------------------------------------- */

#define NUM_ODD 17
static search_problem odd_problem(int i)
{
    search_problem p;
    switch (i) {
    case 0: p = base_problem(); break;
    case 1: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_BF16, 1, 100, 8, 100); break;
    case 2: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 3, 3424, 128, 3424); break;
    case 3: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_BF16, 4096, 11008, 64, 4096); break;
    case 4: p = problem(SEARCH_OP_SHRINK, SEARCH_DTYPE_F16, 17, 11008, 32, 0); break;
    case 5: p = problem(SEARCH_OP_EXPAND, SEARCH_DTYPE_BF16, 5, 64, 16, 11008); break;
    case 6: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 1000, 4097, 1, 7); break;
    case 7:
        p = problem(SEARCH_OP_SHRINK, SEARCH_DTYPE_BF16, 33, 3424, 128, 0);
        p.shrink_overwrite = 1;
        break;
    case 8: /* fused QKV: three slices */
        p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 8, 4096, 64, 4096);
        p.num_slices = 3;
        p.d_out[1] = 1024;
        p.d_out[2] = 1024;
        break;
    case 9: /* a target with little shared memory: rows x rank bounded */
        p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 4096, 4096, 128, 4096);
        p.smem_per_block = 8192;
        p.cc_major = 8;
        break;
    case 10: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 2, 1, 4, 1); break;
    case 11: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_BF16, 7, 14336, 96, 4096); break;
    case 12: p = problem(SEARCH_OP_EXPAND, SEARCH_DTYPE_F16, 1, 4096, 128, 32); break;
    case 13: p = problem(SEARCH_OP_SHRINK, SEARCH_DTYPE_F16, 1, 8, 8, 0); break;
    case 14: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 128, 250, 48, 2000); break;
    case 15: /* 20 KiB: 32 rows of rank 128 fit one fp32 intermediate (16 KiB), not the cluster sketch's two */
        p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 4096, 128, 4096);
        p.smem_per_block = 20480;
        break;
    default: p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_BF16, 2048, 1536, 128, 8960); break;
    }
    return p;
}

static void describe(const search_problem *p, char *buf, size_t len)
{
    static const char *ops[] = {"apply", "shrink", "expand"};
    snprintf(buf, len, "%s %s rows=%d %d->%d->%d%s sm_%d%d", ops[p->op], p->dtype == SEARCH_DTYPE_BF16 ? "bf16" : "fp16",
             p->num_rows, p->d_in, p->max_rank, p->d_out[0], p->num_slices > 1 ? "(+slices)" : "", p->cc_major,
             p->cc_minor);
}

/* ---- counts --------------------------------------------------------------------------- */

/* Schedules with tensor cores (mma) per sketch: [0] total. */
static int count_mma_fn(const search_schedule *s, void *user)
{
    long *m = user;
    if (s->mma) {
        m[0]++;
        m[s->sketch]++;
    }
    return 0;
}

static long count_mma(const search_problem *p, long *per_sketch)
{
    long m[SEARCH_SPACE_COUNTS] = {0};
    search_space_enumerate(p, count_mma_fn, m);
    if (per_sketch)
        memcpy(per_sketch, m, sizeof m);
    return m[0];
}

/* Schedules with stages > 1 ([0] total, [sketch]), with persist 1 ([PERSISTENT]
 * total, [PERSISTENT + sketch]) and with both ([STAGED_PERSISTENT]). */
#define PERSISTENT SEARCH_SPACE_COUNTS
#define STAGED_PERSISTENT (2 * SEARCH_SPACE_COUNTS)
static int count_new_fn(const search_schedule *s, void *user)
{
    long *m = user;
    if (s->stages > 1)
        m[0]++, m[s->sketch]++;
    if (s->persist)
        m[PERSISTENT]++, m[PERSISTENT + s->sketch]++;
    if (s->stages > 1 && s->persist)
        m[STAGED_PERSISTENT]++;
    return 0;
}

static long count_staged(const search_problem *p)
{
    long m[STAGED_PERSISTENT + 1] = {0};
    search_space_enumerate(p, count_new_fn, m);
    return m[0];
}

/* Counts the counter schedules with split_k <= 16 and persist 0, each checked
 * to be in the space as a cluster schedule too. */
typedef struct twins {
    const search_problem *p;
    long n;
} twins;

static int cluster_twin_fn(const search_schedule *s, void *user)
{
    twins *t = user;
    if (s->sketch != SEARCH_SKETCH_FUSED_COUNTER || s->split_k > 16 || s->persist)
        return 0;
    search_schedule c = *s;
    c.sketch = SEARCH_SKETCH_CLUSTER;
    char why[256] = "", txt[96];
    if (!search_space_legal(t->p, &c, why, sizeof why)) {
        fmt(&c, txt, sizeof txt);
        fail_msg("%s is not in the space: %s", txt, why);
    }
    t->n++;
    return 0;
}

static void test_counts(void **state)
{
    (void)state;
    search_problem p = base_problem();
    long c[SEARCH_SPACE_COUNTS] = {-1, -1, -1, -1, -1}, m[SEARCH_SPACE_COUNTS];
    long n = search_space_count(&p, c);
    long nm = count_mma(&p, m);
    print_message("4096 -> 16 -> 4096 fp16 sm_90, op apply, num_rows 64: %ld schedules (split %ld, fused %ld, "
                  "counter %ld, cluster %ld); with mma %ld (split %ld, fused %ld, counter %ld, cluster %ld)\n",
                  n, c[SEARCH_SKETCH_SPLIT], c[SEARCH_SKETCH_FUSED], c[SEARCH_SKETCH_FUSED_COUNTER],
                  c[SEARCH_SKETCH_CLUSTER], nm, m[SEARCH_SKETCH_SPLIT], m[SEARCH_SKETCH_FUSED],
                  m[SEARCH_SKETCH_FUSED_COUNTER], m[SEARCH_SKETCH_CLUSTER]);
    long w[STAGED_PERSISTENT + 1] = {0};
    search_space_enumerate(&p, count_new_fn, w);
    print_message("  with stages > 1: %ld (split %ld, fused %ld, counter %ld, cluster %ld); persist 1: %ld (split %ld, "
                  "fused %ld, counter %ld, cluster %ld); both %ld\n",
                  w[0], w[1], w[2], w[3], w[4], w[PERSISTENT], w[PERSISTENT + 1], w[PERSISTENT + 2],
                  w[PERSISTENT + 3], w[PERSISTENT + 4], w[STAGED_PERSISTENT]);
    assert_int_equal(n, c[0]);
    assert_int_equal(c[0], c[SEARCH_SKETCH_SPLIT] + c[SEARCH_SKETCH_FUSED] + c[SEARCH_SKETCH_FUSED_COUNTER] +
                               c[SEARCH_SKETCH_CLUSTER]);
    /* persist is free but for the cluster sketch: every other schedule has its persistent twin */
    for (int k = SEARCH_SKETCH_SPLIT; k <= SEARCH_SKETCH_FUSED_COUNTER; ++k)
        assert_int_equal(2 * w[PERSISTENT + k], c[k]);
    assert_int_equal(w[PERSISTENT + SEARCH_SKETCH_CLUSTER], 0);
    assert_int_equal(2 * w[PERSISTENT], c[0] - c[SEARCH_SKETCH_CLUSTER]);
    /* stages 2..4 only with mma, for every sketch; here (rank 16) every mma schedule with kc <= 64
     * takes all of them, so there are more staged than unstaged mma schedules */
    assert_true(w[1] > 0 && w[2] > 0 && w[3] > 0 && w[4] > 0);
    assert_int_equal(w[1], w[3]);
    assert_true(w[0] > nm - w[0] && w[0] < nm);
    assert_true(w[STAGED_PERSISTENT] * 2 == w[0] - w[SEARCH_SKETCH_CLUSTER]);
    assert_true(c[SEARCH_SKETCH_SPLIT] >= 100);
    assert_true(c[SEARCH_SKETCH_FUSED] >= 100);
    assert_true(c[SEARCH_SKETCH_FUSED_COUNTER] >= 100);
    /* the counter sketch has split-K like split, and the same rules: the same size */
    assert_int_equal(c[SEARCH_SKETCH_FUSED_COUNTER], c[SEARCH_SKETCH_SPLIT]);
    assert_true(m[SEARCH_SKETCH_SPLIT] > 0 && m[SEARCH_SKETCH_FUSED] > 0 && m[SEARCH_SKETCH_FUSED_COUNTER] > 0 &&
                m[SEARCH_SKETCH_CLUSTER] > 0);
    assert_int_equal(m[SEARCH_SKETCH_FUSED_COUNTER], m[SEARCH_SKETCH_SPLIT]);
    assert_int_equal(search_space_count(&p, NULL), n);
    assert_int_equal(search_space_enumerate(&p, NULL, NULL), n);

    /*
     * The sizes, counted by hand. The cluster sketch has the counter sketch's
     * rules plus split_k <= 16 and persist 0 (its second fp32 intermediate
     * never decides anything at rank 16: 32 rows take 4 KiB of it, and the
     * largest mma ring, 4 x (16 + 16) x (128 + 8) x 2 bytes, still fits 48
     * KiB with it). With num_rows 64 and d_out 4096, rows (6 values), warps
     * (5) and cols (6) are free on CUDA cores: 180 combinations.
     * CUDA cores, per vec (all divide 4096), G = 4096 / (32 vec) loads along
     * d_in: split s is kept when ceil(G / ceil(G / s)) == s, and takes the kc
     * multipliers up to the next power of two of its L = ceil(G / s) loads
     * (at most 16: 5 values):
     *   vec 1, G 128: s 1 2 3 4 6 8 12 (L 128 .. 11: 5 kc each), 16 (L 8: 4) = 39
     *   vec 2, G  64: s 1 2 3 4 6 (5 each), 8 (L 8: 4), 16 (L 4: 3); 12 runs as 11 = 32
     *   vec 4, G  32: s 1 2 3 (5 each), 4 6 (L 8, 6: 4 each), 8 (L 4: 3), 16 (2); 12 -> 11 = 28
     *   vec 8, G  16: s 1 (5), 2 3 (L 8, 6: 4 each), 4 6 (L 4, 3: 3 each), 8 (2), 16 (1); 12 -> 8 = 22
     * 121 x 180 = 21,780. Tensor cores: rows 16, vec 8, the vec-8 splits (1 2 3
     * 4 6 8 16), kc 16 x {1 2 4 8} (a CTA's K range is at least 256 = 16 x 16),
     * stages 1..4 (all fit), warps 5, cols 6: 7 x 4 x 4 x 30 = 3,360. Cluster:
     * 25,140. The counter sketch adds splits 32 and 64 (vec 1: 3 + 2 kc, vec 2:
     * 2 + 1, vec 4: 1; 24 and 48 run as fewer CTAs): (121 + 9) x 180 + 3,360 =
     * 26,760, times 2 for persist: 53,520, as split. Fused (split_k 1): (4 x 5 x
     * 180 + 4 x 4 x 30) x 2 = 8,160. Total 140,340 (115,200 before the cluster
     * sketch).
     */
    assert_int_equal(c[SEARCH_SKETCH_CLUSTER], 25140);
    assert_int_equal(m[SEARCH_SKETCH_CLUSTER], 3360);
    assert_int_equal(c[SEARCH_SKETCH_FUSED_COUNTER], 53520);
    assert_int_equal(c[SEARCH_SKETCH_FUSED], 8160);
    assert_int_equal(n, 140340);
    /* and schedule by schedule: the cluster schedules are the counter schedules with split_k <= 16 and persist 0 */
    twins tw = {&p, 0};
    search_space_enumerate(&p, cluster_twin_fn, &tw);
    assert_int_equal(tw.n, c[SEARCH_SKETCH_CLUSTER]);
    /* one decode row: rows 1, no mma (16 rows per CTA), so 121 x 5 x 6 = 3,630 cluster schedules of 20,430 */
    search_problem one = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 1, 4096, 16, 4096);
    assert_int_equal(search_space_count(&one, c), 20430);
    assert_int_equal(c[SEARCH_SKETCH_CLUSTER], 3630);

    /* bf16 does not change the space; sm_80 only loses the cluster sketch */
    search_problem q = p;
    q.dtype = SEARCH_DTYPE_BF16;
    assert_int_equal(search_space_count(&q, NULL), n);
    q.cc_major = 8;
    assert_int_equal(search_space_count(&q, c), n - 25140);
    assert_int_equal(c[SEARCH_SKETCH_CLUSTER], 0);
    q.cc_major = 10; /* newer than Hopper: clusters too */
    assert_int_equal(search_space_count(&q, NULL), n);

    print_message("%-8s %-6s %8s %8s %8s %8s %8s %8s\n", "op", "rows", "split", "fused", "counter", "cluster", "total",
                  "mma");
    static const int rows[] = {1, 2, 4, 8, 9, 16, 32, 64, 4096};
    static const char *ops[] = {"apply", "shrink", "expand"};
    for (int op = 0; op < 3; ++op)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; ++r) {
            q = problem(op, SEARCH_DTYPE_F16, rows[r], 4096, 16, 4096);
            long t = search_space_count(&q, c), tm = count_mma(&q, NULL);
            print_message("%-8s %-6d %8ld %8ld %8ld %8ld %8ld %8ld\n", ops[op], rows[r], c[1], c[2], c[3], c[4], t,
                          tm);
            assert_true(t > 0);
            assert_true(op == SEARCH_OP_APPLY ? c[2] > 0 && c[3] > 0 && c[4] > 0
                                              : c[2] == 0 && c[3] == 0 && c[4] == 0);
            assert_true(rows[r] > 8 ? tm > 0 : tm == 0); /* 16 rows per CTA need more than 8 rows */
            if (rows[r] == 1 && op == SEARCH_OP_APPLY)
                assert_true(t >= 200);
        }
    /* rank and slices */
    static const int ranks[] = {1, 8, 16, 64, 128};
    long prev_staged = 0;
    for (size_t r = 0; r < sizeof ranks / sizeof ranks[0]; ++r) {
        q = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 4096, ranks[r], 4096);
        long t = search_space_count(&q, c), st = count_staged(&q);
        print_message("apply rank %-3d: split %ld fused %ld counter %ld cluster %ld total %ld (stages > 1: %ld)\n",
                      ranks[r], c[1], c[2], c[3], c[4], t, st);
        /* 48 KiB hold 32 rows at every rank; only the cp.async ring grows with the rank */
        assert_int_equal(t - st, n - w[0]);
        assert_true(st > 0);
        if (r > 0)
            assert_true(st <= prev_staged);
        prev_staged = st;
    }
    q = base_problem();
    q.shrink_overwrite = 1; /* no effect on apply */
    assert_int_equal(search_space_count(&q, NULL), n);
    /* d_in not a multiple of 8: no mma */
    q = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 4100, 16, 4096);
    assert_true(search_space_count(&q, NULL) > 0);
    assert_int_equal(count_mma(&q, NULL), 0);
}

static void test_invalid_problems(void **state)
{
    (void)state;
    long c[SEARCH_SPACE_COUNTS] = {7, 7, 7, 7, 7};
    search_schedule s;
    uint64_t rng = 1;
    char why[160];
    for (int i = 0; i < 11; ++i) {
        search_problem p = base_problem();
        const char *word = "";
        switch (i) {
        case 0: p.op = 3, word = "op"; break;
        case 1: p.dtype = 0, word = "dtype"; break;
        case 2: p.num_rows = 0, word = "num_rows"; break;
        case 3: p.d_in = 0, word = "d_in"; break;
        case 4: p.num_slices = 0, word = "num_slices"; break;
        case 5: p.num_slices = 9, word = "num_slices"; break;
        case 6: p.d_out[0] = 0, word = "d_out"; break;
        case 7: p.max_rank = 0, word = "max_rank"; break;
        case 8: p.max_rank = 129, word = "max_rank"; break;
        case 9: p.cc_major = 7, p.cc_minor = 5, word = "sm_75"; break;
        default: p.smem_per_block = -1, word = "smem"; break;
        }
        why[0] = '\0';
        assert_false(search_problem_valid(&p, why, sizeof why));
        if (!strstr(why, word))
            fail_msg("problem %d: reason \"%s\" does not name %s", i, why, word);
        assert_int_equal(search_space_count(&p, c), -1);
        assert_int_equal(c[0] + c[1] + c[2] + c[3] + c[4], 0);
        assert_int_equal(search_space_enumerate(&p, NULL, NULL), -1);
        assert_int_equal(search_space_sample(&p, &rng, &s), -1);
        assert_int_equal(search_space_at(&p, 0, &s), -1);
        search_schedule ok;
        search_problem b = base_problem();
        assert_int_equal(search_space_sample(&b, &rng, &ok), 0);
        assert_int_equal(search_space_mutate(&p, &ok, &rng, &s), -1);
        assert_int_equal(search_space_crossover(&p, &ok, &ok, &rng, &s), -1);
        assert_int_equal(search_space_repair(&p, &ok, &s), -1);
        assert_false(search_space_legal(&p, &ok, NULL, 0));
    }
    assert_false(search_problem_valid(NULL, why, sizeof why));
    /* shrink ignores d_out */
    search_problem p = problem(SEARCH_OP_SHRINK, SEARCH_DTYPE_F16, 4, 4096, 16, 0);
    assert_true(search_problem_valid(&p, NULL, 0));
    assert_true(search_space_count(&p, NULL) > 0);
    search_problem b = base_problem();
    assert_int_equal(search_space_sample_sketch(&b, 5, &rng, &s), -1); /* no such sketch */
    assert_int_equal(search_space_sample_sketch(&b, SEARCH_SKETCH_FUSED_COUNTER, &rng, &s), 0);
    assert_int_equal(s.sketch, SEARCH_SKETCH_FUSED_COUNTER);
    assert_int_equal(search_space_sample_sketch(&p, SEARCH_SKETCH_FUSED_COUNTER, &rng, &s), -1); /* shrink: none */
    assert_int_equal(search_space_sample_sketch(&b, SEARCH_SKETCH_CLUSTER, &rng, &s), 0);
    assert_int_equal(s.sketch, SEARCH_SKETCH_CLUSTER);
    assert_int_equal(search_space_sample_sketch(&p, SEARCH_SKETCH_CLUSTER, &rng, &s), -1); /* shrink: none */
    b.cc_major = 8;
    assert_int_equal(search_space_sample_sketch(&b, SEARCH_SKETCH_CLUSTER, &rng, &s), -1); /* sm_80: none */
    b.cc_major = 9;
    assert_int_equal(search_space_sample(&b, NULL, &s), -1);
    assert_int_equal(search_space_sample(&b, &rng, NULL), -1);
    assert_int_equal(search_space_at(&b, -1, &s), -1);
    assert_int_equal(search_space_at(&b, search_space_count(&b, NULL), &s), -1);
}

/* ---- enumeration ------------------------------------------------------------------- */

/* Every point of the annotation grid (plus values outside the domains): in
 * the enumeration exactly when the independent rules accept it. */
static void check_enumeration(const search_problem *p)
{
    char name[128];
    describe(p, name, sizeof name);
    list l = enumerate(p);
    long c[SEARCH_SPACE_COUNTS];
    assert_int_equal(search_space_count(p, c), l.n);
    assert_true(l.n > 0);
    long per[SEARCH_SPACE_COUNTS] = {0};
    for (long i = 0; i < l.n; ++i) {
        expect_in_space(p, &l.s[i], name);
        per[l.s[i].sketch]++;
        if (i > 0) /* the documented order (sketch, mma, rows, warps, vec, split_k, kc, stages, cols, persist) */
            assert_true(key_of(&l.s[i - 1]) < key_of(&l.s[i]));
    }
    assert_int_equal(per[1], c[1]);
    assert_int_equal(per[2], c[2]);
    assert_int_equal(per[3], c[3]);
    assert_int_equal(per[4], c[4]);
    uint64_t *keys = sorted_keys(&l);

    static const unsigned rows[] = {1, 2, 3, 4, 8, 16, 32, 64};
    static const unsigned warps[] = {1, 2, 4, 8, 16, 32};
    static const unsigned vecs[] = {1, 2, 4, 8};
    static const unsigned mults[] = {1, 2, 3, 4, 8, 16, 32};
    static const unsigned splits[] = {1, 2, 3, 4, 5, 6, 8, 12, 16, 20, 24, 32, 48, 64};
    static const unsigned cols[] = {16, 32, 64, 96, 128, 256, 512, 1024, 2048};
    long accepted = 0, point = 0;
    search_schedule s;
    memset(&s, 0, sizeof s);
    s.version = SEARCH_SCHEDULE_VERSION;
    static const unsigned stages[] = {1, 0, 2, 3, 4, 5};
    static const unsigned persists[] = {0, 1, 2};
    for (unsigned skm = 0; skm < 8; ++skm) /* sketch 1..4 x mma 0..1 */
        for (size_t a = 0; a < sizeof rows / sizeof *rows; ++a)
            for (size_t b = 0; b < sizeof warps / sizeof *warps; ++b)
                for (size_t v = 0; v < sizeof vecs / sizeof *vecs; ++v)
                    for (size_t m = 0; m < sizeof mults / sizeof *mults; ++m)
                        for (size_t k = 0; k < sizeof splits / sizeof *splits; ++k)
                            for (size_t o = 0; o < sizeof cols / sizeof *cols; ++o) {
                                unsigned mma = skm & 1u;
                                s.sketch = (uint8_t)(1 + skm / 2);
                                s.mma = (uint8_t)mma;
                                s.rows = (uint8_t)rows[a];
                                s.warps = (uint8_t)warps[b];
                                s.vec = (uint8_t)vecs[v];
                                s.kc = (uint16_t)((mma ? 16 : 32 * vecs[v]) * mults[m]);
                                s.split_k = (uint8_t)splits[k];
                                s.cols = (uint16_t)cols[o];
                                /* stages and persist only add rules, so a point illegal with
                                 * stages 1 and persist 0 is illegal with any: those get every
                                 * value only at every 61st point, the legal ones always */
                                for (size_t q = 0; q < 18; ++q) {
                                    s.stages = (uint8_t)stages[q / 3];
                                    s.persist = (uint8_t)persists[q % 3];
                                    int want = expected_legal(p, &s);
                                    int got = search_space_legal(p, &s, NULL, 0);
                                    if (want != got) {
                                        char txt[96];
                                        fmt(&s, txt, sizeof txt);
                                        fail_msg("%s: %s: search_space_legal %d, the rules %d", name, txt, got,
                                                 want);
                                    }
                                    if (got) {
                                        ++accepted;
                                        assert_true(index_of(keys, l.n, &s) >= 0);
                                    } else if (q == 0 && point % 61 != 0) {
                                        break;
                                    }
                                }
                                ++point;
                            }
    assert_int_equal(accepted, l.n);
    /* search_space_at walks the same order */
    long step = l.n > 200 ? l.n / 97 : 1;
    for (long i = 0; i < l.n; i += step) {
        assert_int_equal(search_space_at(p, i, &s), 0);
        assert_memory_equal(&s, &l.s[i], sizeof s);
    }
    assert_int_equal(search_space_at(p, l.n - 1, &s), 0);
    assert_memory_equal(&s, &l.s[l.n - 1], sizeof s);
    free(keys);
    free(l.s);
}

static int stop_at_3(const search_schedule *s, void *user)
{
    (void)s;
    return ++*(int *)user == 3;
}

static void test_enumeration(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_ODD; ++i)
    {
        search_problem p = odd_problem(i);
        check_enumeration(&p);
    }
    search_problem p = base_problem();
    int calls = 0;
    assert_int_equal(search_space_enumerate(&p, stop_at_3, &calls), 3);
    assert_int_equal(calls, 3);
}

static void test_legal_reasons(void **state)
{
    (void)state;
    struct {
        search_problem p;
        search_schedule s;
        const char *word;
    } cases[56];
    int n = 0;
    search_schedule ok;
    memset(&ok, 0, sizeof ok);
    ok.version = SEARCH_SCHEDULE_VERSION;
    ok.sketch = SEARCH_SKETCH_SPLIT;
    ok.rows = 4;
    ok.warps = 4;
    ok.vec = 8;
    ok.kc = 512;
    ok.split_k = 4;
    ok.cols = 256;
    ok.stages = 1;
    search_problem base = base_problem();
    char why[256];
    expect_in_space(&base, &ok, "typical");
#define CASE(problem_, field, value, w)                                                                               \
    do {                                                                                                               \
        cases[n].p = (problem_);                                                                                       \
        cases[n].s = ok;                                                                                               \
        cases[n].s.field = value;                                                                                      \
        cases[n].word = (w);                                                                                           \
        ++n;                                                                                                           \
    } while (0)
    search_problem p100 = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 100, 16, 4096);
    search_problem shrink = problem(SEARCH_OP_SHRINK, SEARCH_DTYPE_F16, 64, 4096, 16, 0);
    search_problem expand = problem(SEARCH_OP_EXPAND, SEARCH_DTYPE_F16, 64, 4096, 16, 4096);
    search_problem one = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 3, 4096, 16, 100);
    search_problem tight = base;
    tight.smem_per_block = 1024;
    CASE(p100, vec, 8, "divide");
    CASE(base, split_k, 12, "launches as");
    CASE(base, split_k, 5, "domain");
    CASE(base, split_k, 32, "more than ceil");
    CASE(base, sketch, SEARCH_SKETCH_FUSED, "split-K"); /* fused with split 4 */
    CASE(shrink, sketch, SEARCH_SKETCH_FUSED, "fused");
    CASE(expand, split_k, 4, "op expand");
    CASE(expand, vec, 8, "pinned");
    CASE(shrink, cols, 256, "pinned");
    CASE(one, rows, 8, "num_rows");
    CASE(one, cols, 256, "max d_out");
    CASE(base, cols, 100, "domain");
    CASE(tight, rows, 32, "shared memory");
    CASE(base, rows, 3, "rows");
    CASE(base, kc, 8192, "K step");
    cases[n].p = base;
    cases[n].s = ok;
    cases[n].s.split_k = 16; /* 256 elements per CTA: one load of 8 per lane */
    cases[n].word = "loads per lane";
    ++n;
    CASE(shrink, sketch, SEARCH_SKETCH_FUSED_COUNTER, "counter");
    CASE(expand, sketch, SEARCH_SKETCH_FUSED_COUNTER, "counter");
    CASE(base, stages, 2, "mma");
    CASE(base, stages, 0, "stages");
    CASE(base, persist, 2, "persist");
    /* tensor cores */
    search_schedule okm = ok;
    okm.mma = 1;
    okm.rows = 16;
    okm.kc = 64;
    expect_in_space(&base, &okm, "typical mma");
    search_schedule okc = okm;
    okc.sketch = SEARCH_SKETCH_FUSED_COUNTER;
    expect_in_space(&base, &okc, "typical counter mma");
    search_schedule oke = okm;
    oke.split_k = 1;
    oke.kc = 16;
    expect_in_space(&expand, &oke, "expand mma");
    search_problem p104 = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 100, 16, 4096);
    search_problem eight = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 8, 4096, 16, 4096);
    search_schedule keep = ok;
    ok = okm;
    CASE(base, rows, 8, "16 rows");
    CASE(base, vec, 4, "vec");
    CASE(base, kc, 256, "K step");
    CASE(base, kc, 48, "K step");
    CASE(p104, sketch, SEARCH_SKETCH_SPLIT, "multiple of 8");
    CASE(eight, sketch, SEARCH_SKETCH_SPLIT, "num_rows");
    CASE(base, split_k, 32, "more than ceil");
    CASE(base, split_k, 12, "launches as");
    CASE(base, stages, 5, "stages");
    search_problem big = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 4096, 128, 4096);
    ok.kc = 128;
    CASE(big, stages, 2, "shared memory"); /* 2 x (16 + 128) x 136 x 2 bytes */
    ok.kc = 64;
    okm.stages = 4;
    okm.persist = 1;
    expect_in_space(&base, &okm, "mma, 4 stages, persistent");
    ok = oke;
    CASE(expand, kc, 32, "pinned");
    CASE(expand, stages, 2, "pinned");
    ok = keep;
    /* the cluster sketch: op apply on sm_90 and newer, clusters of at most 16 CTAs, no persistent grid, and
     * two fp32 intermediates in shared memory where counter has one */
    search_schedule okcl = keep;
    okcl.sketch = SEARCH_SKETCH_CLUSTER;
    expect_in_space(&base, &okcl, "typical cluster");
    search_problem sm80 = base;
    sm80.cc_major = 8;
    search_problem sm100 = base;
    sm100.cc_major = 10;
    expect_in_space(&sm100, &okcl, "cluster on sm_100");
    search_problem t6k = base;
    t6k.smem_per_block = 6144; /* 32 rows of rank 16: 4,752 bytes with one intermediate, 6,800 with two */
    search_schedule c32 = okcl;
    c32.sketch = SEARCH_SKETCH_FUSED_COUNTER;
    c32.rows = 32;
    expect_in_space(&t6k, &c32, "counter, 32 rows, 6 KiB");
    ok = okcl;
    CASE(sm80, sketch, SEARCH_SKETCH_CLUSTER, "sm_90");
    CASE(shrink, sketch, SEARCH_SKETCH_CLUSTER, "apply only");
    CASE(expand, sketch, SEARCH_SKETCH_CLUSTER, "apply only");
    CASE(base, persist, 1, "persistent grid");
    CASE(base, split_k, 32, "cluster size");
    CASE(t6k, rows, 32, "shared memory");
    /* with mma: 3 stages of kc 32 at rank 128 fit next to one intermediate (43,368 bytes), not two (51,560) */
    search_schedule clm = okm;
    clm.sketch = SEARCH_SKETCH_CLUSTER;
    clm.stages = 4;
    clm.persist = 0;
    expect_in_space(&base, &clm, "cluster, mma, 4 stages");
    clm.kc = 32;
    clm.stages = 3;
    c32 = clm;
    c32.sketch = SEARCH_SKETCH_FUSED_COUNTER;
    expect_in_space(&big, &c32, "counter, mma, 3 stages of kc 32, rank 128");
    clm.stages = 2;
    expect_in_space(&big, &clm, "cluster, mma, 2 stages of kc 32, rank 128");
    ok = clm;
    CASE(big, stages, 3, "shared memory");
    ok = keep;
#undef CASE
    assert_true(n <= (int)(sizeof cases / sizeof cases[0]));
    for (int i = 0; i < n; ++i) {
        why[0] = '\0';
        char txt[96];
        fmt(&cases[i].s, txt, sizeof txt);
        if (search_space_legal(&cases[i].p, &cases[i].s, why, sizeof why))
            fail_msg("case %d: %s accepted", i, txt);
        assert_false(expected_legal(&cases[i].p, &cases[i].s));
        if (!strstr(why, cases[i].word))
            fail_msg("case %d: %s: reason \"%s\" does not mention \"%s\"", i, txt, why, cases[i].word);
        print_message("rejected %-48s %s\n", txt, why);
    }
    assert_false(search_space_legal(&base, NULL, why, sizeof why));
}

/* ---- sampling ------------------------------------------------------------------------ */

/* Chi-square of per-schedule counts against uniform; asserts every sample is
 * legal and (when each schedule is expected >= 15 times) that every one was
 * drawn. */
static void check_uniform(const search_problem *p, int sketch, long per_cell, uint64_t seed)
{
    char name[128];
    describe(p, name, sizeof name);
    list l = enumerate(p);
    long n = 0;
    for (long i = 0; i < l.n; ++i)
        n += !sketch || l.s[i].sketch == sketch;
    uint64_t *keys = sorted_keys(&l);
    assert_true(l.n > 0);
    long *hits = calloc((size_t)l.n + 1, sizeof *hits);
    assert_non_null(hits);
    long draws = n * per_cell;
    uint64_t rng = seed;
    for (long d = 0; d < draws; ++d) {
        search_schedule s;
        assert_int_equal(search_space_sample_sketch(p, sketch, &rng, &s), 0);
        long at = index_of(keys, l.n, &s);
        if (at < 0) {
            char txt[96];
            fmt(&s, txt, sizeof txt);
            fail_msg("%s: sampled %s is not in the space", name, txt);
        }
        if (sketch)
            assert_int_equal(s.sketch, sketch);
        hits[at]++;
    }
    double chi = 0, e = (double)per_cell;
    long unseen = 0;
    for (long i = 0; i < l.n; ++i) {
        if (sketch && (int)((keys[i] >> 57) & 0x7f) != sketch)
            continue;
        chi += (hits[i] - e) * (hits[i] - e) / e;
        unseen += hits[i] == 0;
    }
    double dof = (double)(n - 1), z = (chi - dof) / sqrt(2 * dof > 1 ? 2 * dof : 1);
    print_message("%-52s sketch %d: %6ld schedules, %8ld draws, chi2 %.0f (dof %.0f, z %+.2f), unseen %ld\n", name,
                  sketch, n, draws, chi, dof, z, unseen);
    if (n > 1 && fabs(z) > 5)
        fail_msg("%s: the sample is not uniform (z = %.2f)", name, z);
    if (per_cell >= 15)
        assert_int_equal(unseen, 0);
    free(hits);
    free(keys);
    free(l.s);
}

static void test_sample_uniform(void **state)
{
    (void)state;
    search_problem p = base_problem();
    check_uniform(&p, 0, 20, 42);
    check_uniform(&p, SEARCH_SKETCH_FUSED, 20, 43);
    check_uniform(&p, SEARCH_SKETCH_SPLIT, 20, 44);
    check_uniform(&p, SEARCH_SKETCH_FUSED_COUNTER, 20, 49);
    check_uniform(&p, SEARCH_SKETCH_CLUSTER, 20, 51);
    /* tiny spaces: mostly the exact fallback draws */
    search_problem q = odd_problem(13); /* shrink, d_in 8, one row */
    check_uniform(&q, 0, 400, 45);
    q = odd_problem(10); /* apply, d_in 1, d_out 1 */
    check_uniform(&q, 0, 400, 46);
    q = odd_problem(12); /* expand, one row */
    check_uniform(&q, 0, 400, 47);
    q = odd_problem(1);
    check_uniform(&q, SEARCH_SKETCH_FUSED, 50, 48);
    q = problem(SEARCH_OP_EXPAND, SEARCH_DTYPE_F16, 16, 4096, 16, 4096); /* expand with mma */
    check_uniform(&q, 0, 100, 50);
}

static void test_sample_deterministic(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_ODD; ++i) {
        search_problem p = odd_problem(i);
        uint64_t r1 = 1234 + (uint64_t)i, r2 = r1, r3 = r1 + 1;
        int differ = 0;
        for (int k = 0; k < 200; ++k) {
            search_schedule a, b, c;
            assert_int_equal(search_space_sample(&p, &r1, &a), 0);
            assert_int_equal(search_space_sample(&p, &r2, &b), 0);
            assert_int_equal(search_space_sample(&p, &r3, &c), 0);
            assert_memory_equal(&a, &b, sizeof a);
            differ |= memcmp(&a, &c, sizeof a) != 0;
            expect_in_space(&p, &a, "sample");
        }
        assert_int_equal(r1, r2);
        if (search_space_count(&p, NULL) > 1)
            assert_true(differ);
    }
    /* a fixed seed gives fixed schedules on every machine (splitmix64) */
    uint64_t rng = 0;
    assert_int_equal(search_rng_next(&rng), 0xe220a8397b1dcdafull);
    rng = 7;
    for (int i = 0; i < 1000; ++i)
        assert_true(search_rng_below(&rng, 3) < 3);
    assert_int_equal(search_rng_below(&rng, 1), 0);
    assert_int_equal(search_rng_below(&rng, 0), 0);
}

/* ---- mutation ------------------------------------------------------------------------- */

/* Fields in the order of search_space_crossover's coins. */
#define NF 10
static unsigned get_fld(const search_schedule *s, int f)
{
    const unsigned v[NF] = {s->sketch, s->rows, s->warps, s->vec, s->kc, s->split_k, s->cols, s->mma, s->stages,
                            s->persist};
    return v[f];
}

static void set_fld(search_schedule *s, int f, unsigned v)
{
    switch (f) {
    case 0: s->sketch = (uint8_t)v; break;
    case 1: s->rows = (uint8_t)v; break;
    case 2: s->warps = (uint8_t)v; break;
    case 3: s->vec = (uint8_t)v; break;
    case 4: s->kc = (uint16_t)v; break;
    case 5: s->split_k = (uint8_t)v; break;
    case 7: s->mma = (uint8_t)v; break;
    case 8: s->stages = (uint8_t)v; break;
    case 9: s->persist = (uint8_t)v; break;
    default: s->cols = (uint16_t)v; break;
    }
}

static int fields_differing(const search_schedule *a, const search_schedule *b, unsigned *which)
{
    unsigned w = 0;
    w |= (unsigned)(a->sketch != b->sketch) << 0;
    w |= (unsigned)(a->rows != b->rows) << 1;
    w |= (unsigned)(a->warps != b->warps) << 2;
    w |= (unsigned)(a->vec != b->vec) << 3;
    w |= (unsigned)(a->kc != b->kc) << 4;
    w |= (unsigned)(a->split_k != b->split_k) << 5;
    w |= (unsigned)(a->cols != b->cols) << 6;
    w |= (unsigned)(a->mma != b->mma) << 7;
    w |= (unsigned)(a->stages != b->stages) << 8;
    w |= (unsigned)(a->persist != b->persist) << 9;
    if (which)
        *which = w;
    return __builtin_popcount(w);
}

static void test_mutate(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_ODD; ++i) {
        search_problem p = odd_problem(i);
        char name[128];
        describe(&p, name, sizeof name);
        long size = search_space_count(&p, NULL);
        uint64_t rng = 99 + (uint64_t)i;
        unsigned seen = 0;
        long moved[NF] = {0}, repaired = 0, to_mma = 0, from_mma = 0, to_cluster = 0, from_cluster = 0;
        long persist_followed = 0, rows_followed = 0; /* by a move to the cluster sketch */
        long has_mma = count_mma(&p, NULL), has_stages = count_staged(&p);
        int trials = i == 0 ? 20000 : 2000;
        for (int t = 0; t < trials; ++t) {
            search_schedule in, out;
            assert_int_equal(search_space_sample(&p, &rng, &in), 0);
            int r = search_space_mutate(&p, &in, &rng, &out);
            expect_in_space(&p, &out, "mutate");
            unsigned which;
            int d = fields_differing(&in, &out, &which);
            char a[96], b[96];
            fmt(&in, a, sizeof a);
            fmt(&out, b, sizeof b);
            if (r == 0) {
                /* the moved field is the first that differs; after it only its dependents may
                 * (mma -> rows, vec, split_k, kc, stages; sketch -> rows, split_k, kc, stages,
                 * persist; vec -> split_k, kc, stages; split_k -> kc, stages; kc -> stages), and
                 * only when they had to */
                static const int order[] = {7, 0, 1, 2, 3, 6, 9, 5, 4, 8}; /* mma first, stages last */
                int f = 8;
                for (int o = NF - 1; o >= 0; --o)
                    if (which >> order[o] & 1u)
                        f = order[o];
                unsigned deps = f == 7   ? (1u << 1 | 1u << 3 | 1u << 5 | 1u << 4 | 1u << 8)
                                : f == 0 ? (1u << 1 | 1u << 5 | 1u << 4 | 1u << 8 | 1u << 9)
                                : f == 3 ? (1u << 5 | 1u << 4 | 1u << 8)
                                : f == 5 ? (1u << 4 | 1u << 8)
                                : f == 4 ? 1u << 8
                                         : 0;
                if (d < 1 || (which & ~(1u << f) & ~deps) != 0)
                    fail_msg("%s: mutate %s -> %s changed fields 0x%x", name, a, b, which);
                if (d > 1) {
                    search_schedule only = in;
                    set_fld(&only, f, get_fld(&out, f));
                    if (search_space_legal(&p, &only, NULL, 0))
                        fail_msg("%s: mutate %s -> %s changed dependents it did not need to", name, a, b);
                    /* no more dependents than needed: putting any one of them back is illegal */
                    for (int g = 0; g < NF; ++g) {
                        if (g == f || !(which >> g & 1u))
                            continue;
                        search_schedule back = out;
                        set_fld(&back, g, get_fld(&in, g));
                        if (search_space_legal(&p, &back, NULL, 0))
                            fail_msg("%s: mutate %s -> %s: field %d need not have followed", name, a, b, g);
                    }
                }
                if (out.sketch == SEARCH_SKETCH_FUSED)
                    assert_int_equal(out.split_k, 1);
                if (out.mma)
                    assert_true(out.rows == 16 && out.vec == 8);
                moved[f]++;
                to_mma += f == 7 && out.mma;
                from_mma += f == 7 && !out.mma;
                to_cluster += f == 0 && out.sketch == SEARCH_SKETCH_CLUSTER;
                from_cluster += f == 0 && in.sketch == SEARCH_SKETCH_CLUSTER;
                persist_followed += f == 0 && (which >> 9 & 1u);
                rows_followed += f == 0 && (which >> 1 & 1u);
                repaired += d > 1;
            } else if (r == 1) {
                /* no single move exists: another schedule, or the only one */
                assert_true(d > 0 || size == 1);
            } else {
                fail_msg("%s: mutate(%s) returned %d", name, a, r);
            }
            seen |= which;
        }
        /* every annotation a move can change for this op moved at least once */
        unsigned want = 0x3ffu;
        if (!has_mma)
            want &= ~(1u << 7);
        if (!has_stages)
            want &= ~(1u << 8);
        if (p.op != SEARCH_OP_APPLY)
            want &= ~1u; /* one sketch */
        if (p.op == SEARCH_OP_EXPAND)
            want &= ~(1u << 3 | 1u << 4 | 1u << 5); /* vec, kc, split pinned */
        if (p.op == SEARCH_OP_SHRINK)
            want &= ~(1u << 6); /* cols pinned */
        if (p.op == SEARCH_OP_SHRINK && p.shrink_overwrite)
            want &= ~(1u << 5);
        if (p.num_rows == 1)
            want &= ~(1u << 1);
        if (p.d_in % 2)
            want &= ~(1u << 3);
        if (p.op != SEARCH_OP_SHRINK && p.d_out[0] <= 32 && p.num_slices == 1)
            want &= ~(1u << 6);
        if (p.d_in <= 32)
            want &= ~(1u << 4 | 1u << 5); /* d_in 1 or 8: one load covers it */
        print_message("%-52s moves: sketch %ld (to cluster %ld, from %ld; persist following %ld, rows %ld) rows %ld "
                      "warps %ld vec %ld kc %ld split_k %ld cols %ld mma %ld (to %ld, from %ld) stages %ld persist "
                      "%ld; %ld with dependents following\n",
                      name, moved[0], to_cluster, from_cluster, persist_followed, rows_followed, moved[1], moved[2],
                      moved[3], moved[4], moved[5], moved[6], moved[7], to_mma, from_mma, moved[8], moved[9],
                      repaired);
        if ((seen & want) != want)
            fail_msg("%s: fields moved 0x%x, expected at least 0x%x", name, seen, want);
        if (has_mma)
            assert_true(to_mma > 0 && from_mma > 0);
        else
            assert_int_equal(moved[7], 0);
        /* to and from the cluster sketch where it is (a persistent schedule's move there sets persist 0); with
         * 20 KiB (problem 15) a move there from 32 rows per CTA takes 16 */
        if (p.op == SEARCH_OP_APPLY && p.cc_major >= 9)
            assert_true(to_cluster > 0 && from_cluster > 0 && persist_followed > 0);
        else
            assert_int_equal(to_cluster + from_cluster, 0);
        if (i == 15)
            assert_true(rows_followed > 0);
    }
    /* an input outside the space comes back repaired */
    search_problem p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 100, 16, 4096);
    search_schedule in, out;
    memset(&in, 0, sizeof in);
    in.version = SEARCH_SCHEDULE_VERSION;
    in.sketch = SEARCH_SKETCH_FUSED;
    in.rows = 4;
    in.warps = 8;
    in.vec = 8; /* does not divide 100 */
    in.kc = 256;
    in.split_k = 1;
    in.cols = 256;
    in.stages = 1;
    uint64_t rng = 5;
    assert_int_equal(search_space_mutate(&p, &in, &rng, &out), 2);
    expect_in_space(&p, &out, "repaired");
    search_schedule rep;
    assert_int_equal(search_space_repair(&p, &in, &rep), 1);
    assert_memory_equal(&rep, &out, sizeof rep);
    assert_int_equal(out.rows, 4);
    assert_int_equal(out.warps, 8);
    assert_int_equal(out.cols, 256);
    assert_int_equal(out.sketch, SEARCH_SKETCH_FUSED);
    assert_int_equal(search_space_repair(&p, &out, &rep), 0);
    assert_memory_equal(&rep, &out, sizeof rep);
    /* the dispatch heuristic's expand schedule (vec 8, kc 1024) is repaired to the pinned values */
    p = problem(SEARCH_OP_EXPAND, SEARCH_DTYPE_F16, 64, 4096, 16, 4096);
    in.sketch = SEARCH_SKETCH_SPLIT;
    in.kc = 1024;
    assert_int_equal(search_space_repair(&p, &in, &rep), 1);
    assert_int_equal(rep.vec, 1);
    assert_int_equal(rep.kc, 32);
    assert_int_equal(rep.rows, 4);
    /* deterministic */
    p = base_problem();
    uint64_t r1 = 77, r2 = 77;
    assert_int_equal(search_space_sample(&p, &r1, &in), 0);
    r2 = r1;
    search_schedule o1, o2;
    for (int k = 0; k < 100; ++k) {
        assert_int_equal(search_space_mutate(&p, &in, &r1, &o1), 0);
        assert_int_equal(search_space_mutate(&p, &in, &r2, &o2), 0);
        assert_memory_equal(&o1, &o2, sizeof o1);
    }
}

/* ---- crossover ------------------------------------------------------------------------- */

static void test_crossover(void **state)
{
    (void)state;
    for (int i = 0; i < NUM_ODD; ++i) {
        search_problem p = odd_problem(i);
        char name[128];
        describe(&p, name, sizeof name);
        uint64_t rng = 1000 + (uint64_t)i;
        long repaired = 0, mixed = 0, illegal_child = 0, mma_children = 0, mma_mixed = 0;
        int trials = 3000;
        for (int t = 0; t < trials; ++t) {
            search_schedule a, b, c;
            assert_int_equal(search_space_sample(&p, &rng, &a), 0);
            assert_int_equal(search_space_sample(&p, &rng, &b), 0);
            uint64_t before = rng;
            int r = search_space_crossover(&p, &a, &b, &rng, &c);
            assert_true(r >= 0);
            expect_in_space(&p, &c, "crossover");
            int neither = 0, from_a = 0, from_b = 0;
            unsigned wa, wb;
            fields_differing(&c, &a, &wa);
            fields_differing(&c, &b, &wb);
            neither = __builtin_popcount(wa & wb);
            from_a = __builtin_popcount(~wa & 0x3ffu);
            from_b = __builtin_popcount(~wb & 0x3ffu);
            assert_int_equal(neither, r);
            repaired += r > 0;
            mixed += from_a < NF && from_b < NF;
            mma_children += c.mma;
            mma_mixed += c.mma && a.mma != b.mma;
            /* the child the coins make (the first draw of the generator) */
            uint64_t peek = before;
            uint64_t coins = search_rng_next(&peek);
            search_schedule child = a, other = b;
            for (int f = 0; f < NF; ++f)
                if (!(coins >> f & 1u))
                    set_fld(&child, f, get_fld(&b, f)), set_fld(&other, f, get_fld(&a, f));
            if (search_space_legal(&p, &child, NULL, 0)) {
                assert_memory_equal(&c, &child, sizeof c);
            } else {
                ++illegal_child;
                /* no legal mixture of the parents is nearer to the child */
                unsigned wc;
                int changed = fields_differing(&c, &child, &wc), nearest = NF + 1;
                for (unsigned mask = 0; mask < 1u << NF; ++mask) {
                    search_schedule u = child;
                    for (int f = 0; f < NF; ++f)
                        if (mask >> f & 1u)
                            set_fld(&u, f, get_fld(&other, f));
                    int du = fields_differing(&u, &child, NULL);
                    if (search_space_legal(&p, &u, NULL, 0) && du < nearest)
                        nearest = du;
                }
                if (nearest <= NF)
                    assert_int_equal(changed, nearest);
                else
                    assert_true(r > 0);
            }
            /* deterministic */
            search_schedule c2;
            uint64_t again = before;
            assert_int_equal(search_space_crossover(&p, &a, &b, &again, &c2), r);
            assert_memory_equal(&c, &c2, sizeof c);
            assert_int_equal(again, rng);
            /* a x a = a */
            assert_int_equal(search_space_crossover(&p, &a, &a, &rng, &c2), 0);
            assert_memory_equal(&a, &c2, sizeof a);
        }
        print_message("%-52s %d crossovers: %ld mixed both parents, %ld children repaired, %ld of them with a field "
                      "from neither parent; %ld with mma (%ld of parents differing in mma)\n",
                      name, trials, mixed, illegal_child, repaired, mma_children, mma_mixed);
        if (count_mma(&p, NULL) > 0)
            assert_true(mma_mixed > 0);
        else
            assert_int_equal(mma_children, 0);
        if (search_space_count(&p, NULL) > 50)
            assert_true(mixed > trials / 2);
        assert_true(repaired < trials / 4);
    }
    /* parents outside the space: a field neither has is needed, and counted */
    {
        search_problem p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 100, 16, 4096);
        search_schedule a, b, c;
        memset(&a, 0, sizeof a);
        a.version = SEARCH_SCHEDULE_VERSION;
        a.sketch = SEARCH_SKETCH_SPLIT;
        a.rows = 4;
        a.warps = 4;
        a.vec = 8; /* neither divides 100 ... */
        a.kc = 256;
        a.split_k = 1;
        a.cols = 256;
        a.stages = 1;
        b = a;
        b.warps = 8;
        b.kc = 512;
        b.split_k = 5; /* ... and 5 is no split of the domain */
        uint64_t rng = 11;
        for (int t = 0; t < 50; ++t) {
            int r = search_space_crossover(&p, &a, &b, &rng, &c);
            expect_in_space(&p, &c, "crossover of illegal parents");
            assert_true(r >= 1);
            assert_true(c.vec != 8);
            unsigned wa, wb;
            fields_differing(&c, &a, &wa);
            fields_differing(&c, &b, &wb);
            assert_int_equal(__builtin_popcount(wa & wb), r);
        }
    }
    /* the base problem: every mixture of two schedules is repaired from the parents' own values */
    search_problem p = base_problem();
    uint64_t rng = 3;
    for (int t = 0; t < 2000; ++t) {
        search_schedule a, b, c;
        assert_int_equal(search_space_sample(&p, &rng, &a), 0);
        assert_int_equal(search_space_sample(&p, &rng, &b), 0);
        assert_int_equal(search_space_crossover(&p, &a, &b, &rng, &c), 0);
    }
}

/* ---- the cluster sketch ------------------------------------------------------------------ */

/* Per sketch: schedules, the largest split_k, how many have persist 1. */
typedef struct sketch_stats {
    long n[SEARCH_SPACE_COUNTS], persist[SEARCH_SPACE_COUNTS];
    unsigned max_split[SEARCH_SPACE_COUNTS];
} sketch_stats;

static int stats_fn(const search_schedule *s, void *user)
{
    sketch_stats *st = user;
    st->n[s->sketch]++;
    st->persist[s->sketch] += s->persist;
    if (s->split_k > st->max_split[s->sketch])
        st->max_split[s->sketch] = s->split_k;
    return 0;
}

static void test_cluster_sketch(void **state)
{
    (void)state;
    for (int i = 0; i <= NUM_ODD; ++i) {
        /* the odd problems, and d_in 14336 (splits up to 64 at vec 1) */
        search_problem p =
            i < NUM_ODD ? odd_problem(i) : problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 14336, 16, 4096);
        for (int cc = 8; cc <= 9; ++cc) {
            p.cc_major = cc;
            char name[128];
            describe(&p, name, sizeof name);
            sketch_stats st;
            memset(&st, 0, sizeof st);
            search_space_enumerate(&p, stats_fn, &st);
            print_message("%-52s counter %6ld (split_k <= %2u, %6ld persistent), cluster %6ld (split_k <= %2u, %ld "
                          "persistent)\n",
                          name, st.n[SEARCH_SKETCH_FUSED_COUNTER], st.max_split[SEARCH_SKETCH_FUSED_COUNTER],
                          st.persist[SEARCH_SKETCH_FUSED_COUNTER], st.n[SEARCH_SKETCH_CLUSTER],
                          st.max_split[SEARCH_SKETCH_CLUSTER], st.persist[SEARCH_SKETCH_CLUSTER]);
            /* op apply on sm_90 only */
            if (p.op != SEARCH_OP_APPLY || cc < 9)
                assert_int_equal(st.n[SEARCH_SKETCH_CLUSTER], 0);
            else
                assert_true(st.n[SEARCH_SKETCH_CLUSTER] > 0);
            /* never persistent, never more than 16 CTAs: where counter has either, the rule bites */
            assert_int_equal(st.persist[SEARCH_SKETCH_CLUSTER], 0);
            assert_true(st.max_split[SEARCH_SKETCH_CLUSTER] <= SEARCH_MAX_CLUSTER);
            if (st.n[SEARCH_SKETCH_CLUSTER] > 0) {
                assert_true(st.persist[SEARCH_SKETCH_FUSED_COUNTER] > 0);
                unsigned cmax = st.max_split[SEARCH_SKETCH_FUSED_COUNTER];
                assert_int_equal(st.max_split[SEARCH_SKETCH_CLUSTER], cmax < 16 ? cmax : 16);
            }
            if (i == NUM_ODD)
                assert_int_equal(st.max_split[SEARCH_SKETCH_FUSED_COUNTER], 64);
            /* the sampler and the operators stay inside too */
            uint64_t rng = 7 + (uint64_t)i;
            for (int k = 0; k < 200; ++k) {
                search_schedule a, b, x;
                int r = search_space_sample_sketch(&p, SEARCH_SKETCH_CLUSTER, &rng, &a);
                assert_int_equal(r, st.n[SEARCH_SKETCH_CLUSTER] > 0 ? 0 : -1);
                if (r != 0)
                    break;
                assert_true(a.sketch == SEARCH_SKETCH_CLUSTER && a.persist == 0 && a.split_k <= SEARCH_MAX_CLUSTER);
                expect_in_space(&p, &a, name);
                assert_int_equal(search_space_sample(&p, &rng, &b), 0);
                assert_true(search_space_mutate(&p, &a, &rng, &x) >= 0);
                expect_in_space(&p, &x, name);
                assert_true(search_space_crossover(&p, &a, &b, &rng, &x) >= 0);
                expect_in_space(&p, &x, name);
            }
        }
    }
    /* repair: a cluster of 24 CTAs (which counter could launch over 14336 at vec 1) becomes one of 16: one field
     * changed either way, and split_k 24 -> 16 is one step (field_dist: same power-of-two octave) where the
     * counter sketch, 4 -> 3, is two */
    search_problem p = problem(SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 64, 14336, 16, 4096);
    search_schedule in = search_schedule_make(SEARCH_SKETCH_CLUSTER, 4, 4, 1, 64, 24, 256, 0, 1, 0), out;
    char why[256] = "";
    assert_false(search_space_legal(&p, &in, why, sizeof why));
    assert_non_null(strstr(why, "cluster size"));
    assert_int_equal(search_space_repair(&p, &in, &out), 1);
    expect_in_space(&p, &out, "repaired cluster");
    search_schedule want = in;
    want.split_k = 16;
    assert_memory_equal(&out, &want, sizeof out);
    /* a persistent cluster schedule: persist 0 */
    in.split_k = 8;
    in.persist = 1;
    assert_int_equal(search_space_repair(&p, &in, &out), 1);
    want = in;
    want.persist = 0;
    assert_memory_equal(&out, &want, sizeof out);
    /* on sm_80: the counter schedule (only the sketch changes) */
    p.cc_major = 8;
    assert_int_equal(search_space_repair(&p, &in, &out), 1);
    want = in;
    want.sketch = SEARCH_SKETCH_FUSED_COUNTER;
    assert_memory_equal(&out, &want, sizeof out);
}

/* ---- odd problems end to end ------------------------------------------------------------ */

static void test_odd_problems(void **state)
{
    (void)state;
    static const int d_ins[] = {1, 2, 7, 100, 250, 3424, 4096, 4097, 11008, 14336, 65536};
    static const int ranks[] = {1, 8, 16, 32, 64, 100, 128};
    static const int rows[] = {1, 2, 3, 5, 8, 31, 64, 1000, 4096};
    long total = 0;
    uint64_t rng = 2024;
    for (int op = 0; op < 3; ++op)
        for (size_t d = 0; d < sizeof d_ins / sizeof *d_ins; ++d)
            for (size_t r = 0; r < sizeof ranks / sizeof *ranks; ++r)
                for (size_t n = 0; n < sizeof rows / sizeof *rows; ++n) {
                    search_problem p = problem(op, 1 + (int)((d + r + n) & 1), rows[n], d_ins[d], ranks[r],
                                               d_ins[(d + 3) % (sizeof d_ins / sizeof *d_ins)]);
                    p.cc_major = (n & 1) ? 8 : 9;
                    long c[SEARCH_SPACE_COUNTS];
                    long size = search_space_count(&p, c);
                    char name[128];
                    describe(&p, name, sizeof name);
                    if (size <= 0)
                        fail_msg("%s: empty space", name);
                    assert_true(op == SEARCH_OP_APPLY ? c[2] > 0 && c[3] > 0 : c[2] == 0 && c[3] == 0);
                    /* cluster: wherever counter is, on sm_90 (split_k 1 and persist 0 always qualify) */
                    assert_true(op == SEARCH_OP_APPLY && p.cc_major >= 9 ? c[4] > 0 : c[4] == 0);
                    total += size;
                    for (int k = 0; k < 5; ++k) {
                        search_schedule a, b, m, x;
                        assert_int_equal(search_space_sample(&p, &rng, &a), 0);
                        assert_int_equal(search_space_sample(&p, &rng, &b), 0);
                        expect_in_space(&p, &a, name);
                        int rm = search_space_mutate(&p, &a, &rng, &m);
                        assert_true(rm == 0 || rm == 1);
                        expect_in_space(&p, &m, name);
                        if (size > 1)
                            assert_true(memcmp(&a, &m, sizeof a) != 0);
                        assert_true(search_space_crossover(&p, &a, &b, &rng, &x) >= 0);
                        expect_in_space(&p, &x, name);
                    }
                }
    print_message("%ld schedules over %zu odd problems\n", total,
                  3 * (sizeof d_ins / sizeof *d_ins) * (sizeof ranks / sizeof *ranks) * (sizeof rows / sizeof *rows));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts),
        cmocka_unit_test(test_invalid_problems),
        cmocka_unit_test(test_legal_reasons),
        cmocka_unit_test(test_enumeration),
        cmocka_unit_test(test_sample_deterministic),
        cmocka_unit_test(test_sample_uniform),
        cmocka_unit_test(test_mutate),
        cmocka_unit_test(test_crossover),
        cmocka_unit_test(test_cluster_sketch),
        cmocka_unit_test(test_odd_problems),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
