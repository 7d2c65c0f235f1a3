/*
 * test_evo.c -- the evolutionary search (search/search_evo.c), on a real
 * schedule space with a hidden synthetic cost.
 *
 * The "GPU" is true_cost(): a made-up but plausible time of a schedule for
 * apply 4096 -> 16 -> 4096 fp16 on sm_90 with 64 rows (memory traffic that
 * grows with the number of row tiles, vector width and loads in flight,
 * occupancy from CTAs x warps, a second launch for split, recomputation for
 * fused, atomics for counter, tensor cores only at 16 rows, cp.async stages
 * helping the tensor-core shrink up to 3, a persistent grid helping when the
 * tiles are many waves of CTAs and costing a little otherwise), with the
 * interactions real kernels have. The "model" is true_cost times a
 * lognormal-like noise fixed per schedule (a hash), of a chosen spread.
 *
 * - quality: with the default 64 measurements, the best found is within 5%
 *   of the exhaustive optimum of true_cost, for several seeds and noise
 *   levels, and clearly better on average than the best of 64 uniform draws;
 * - determinism: the same seed measures the same schedules in the same order;
 *   another seed does not;
 * - no schedule is measured twice, the budget and the round size are kept,
 *   the eps share is drawn;
 * - failed measurements (INFINITY) are never the best; all failed: returns 1;
 * - a space smaller than the budget is measured exhaustively;
 * - seeds are measured first, repaired when illegal, once each;
 * - no model: random search within the budget;
 * - callbacks returning -1 abort with a message; invalid arguments are refused.
 *
 * Run with -v (or DOP_TEST_VERBOSE=1) for the ratios and the sizes of a few spaces.
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

#include "search_evo.h"
#include "search_schedule.h"
#include "search_space.h"

static int verbose;

static search_problem problem(int op, int num_rows, int d_in, int rank, int d_out)
{
    search_problem p;
    memset(&p, 0, sizeof p);
    p.op = op;
    p.dtype = SEARCH_DTYPE_F16;
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
    return problem(SEARCH_OP_APPLY, 64, 4096, 16, 4096);
}

/* ---- the hidden cost ------------------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t sched_hash(const search_schedule *s, uint64_t salt)
{
    uint64_t k = (uint64_t)s->sketch << 57 | (uint64_t)s->mma << 56 | (uint64_t)s->rows << 48 |
                 (uint64_t)s->warps << 40 | (uint64_t)s->vec << 32 | (uint64_t)s->split_k << 24 |
                 (uint64_t)s->kc << 8 | (uint64_t)(s->cols >> 5) | (uint64_t)((s->stages - 1u) & 7u) << 21 |
                 (uint64_t)(s->persist & 1u) << 54; /* stages 1 and persist 0 keep the version-1 hash */
    return mix64(k ^ mix64(salt + 0x9e3779b97f4a7c15ull));
}

/* Microseconds of s for p (a model of a model: only its shape matters). */
static double true_cost(const search_problem *p, const search_schedule *s)
{
    const double rows_total = p->num_rows, din = p->d_in, dout = p->d_out[0], rank = p->max_rank, sms = p->sm_count;
    double tiles = ceil(rows_total / s->rows);
    double col_tiles = ceil(dout / s->cols);
    double split = s->split_k;
    double loads = (double)s->kc / (32.0 * s->vec); /* loads in flight per lane */
    if (s->mma)
        loads = (double)s->kc / 16.0;
    double ctas_shrink = tiles * split;
    double ctas_expand = tiles * col_tiles;
    if (s->sketch == SEARCH_SKETCH_FUSED)
        ctas_shrink = ctas_expand;

    /* bytes: x once; A and B once per row tile, the L2 absorbing most re-reads */
    double wbytes = 2.0 * rank * din * 2.0;
    double bytes = rows_total * din * 2.0 + rows_total * dout * 4.0 + wbytes * (1.0 + 0.12 * (tiles - 1.0));
    /* memory efficiency: vector width, then latency hiding (loads in flight x warps) */
    static const double vec_eff[9] = {0, 0.35, 0.6, 0, 0.85, 0, 0, 0, 1.0};
    double inflight = loads * s->warps;
    double hide = inflight / (inflight + 6.0);
    double occ_s = fmin(1.0, ctas_shrink * s->warps / (sms * 8.0));
    double occ_e = fmin(1.0, ctas_expand * s->warps / (sms * 8.0));
    double bw = 3.0e6 * vec_eff[s->vec] * (0.25 + 0.75 * hide); /* bytes per microsecond */
    double t_shrink = (rows_total * din * 2.0 + wbytes / 2.0 * (1.0 + 0.12 * (tiles - 1.0))) / (bw * (0.1 + 0.9 * occ_s));
    double t_expand = (bytes - rows_total * din * 2.0 - wbytes / 2.0) / (3.0e6 * (0.1 + 0.9 * occ_e));
    /* cp.async staging (tensor cores only): the x and A fragments stop waiting
     * on global memory; two or three stages hide most of it, a fourth costs
     * shared memory (occupancy) for nothing */
    static const double stage_gain[SEARCH_MAX_STAGES + 1] = {1.0, 1.0, 0.86, 0.80, 0.83};
    if (s->mma && s->stages <= SEARCH_MAX_STAGES)
        t_shrink *= stage_gain[s->stages];
    /* too many loads in flight spill registers */
    if (loads * s->rows > 64)
        t_shrink *= 1.0 + 0.004 * (loads * s->rows - 64);
    /* compute: FMAs, or tensor cores at 16 rows */
    double flops = 2.0 * rows_total * rank * (din + dout);
    double rate = s->mma ? 1.2e8 : 6.0e7 * (s->rows >= 4 ? 1.0 : 0.5 + 0.125 * s->rows);
    double t_compute = flops / (rate * (0.1 + 0.9 * fmax(occ_s, occ_e)));
    /* expand: columns per thread want to be 1..4 */
    double cpt = (double)s->cols / (32.0 * s->warps);
    if (cpt < 1)
        t_expand *= 1.0 + 0.5 * (1.0 - cpt);
    else if (cpt > 4)
        t_expand *= 1.0 + 0.1 * (cpt - 4.0);

    double t;
    switch (s->sketch) {
    case SEARCH_SKETCH_SPLIT: /* two launches */
        t = fmax(t_shrink, t_compute * 0.5) + fmax(t_expand, t_compute * 0.5) + 2.0 + 0.02 * split;
        break;
    case SEARCH_SKETCH_FUSED: /* every column tile recomputes the intermediate of its rows */
        t = fmax(t_shrink * (1.0 + 0.08 * (col_tiles - 1.0)), t_compute) + t_expand;
        break;
    default: /* counter: memset, atomics on the partials, the last CTA expands (and cluster, which this cost
              * does not tell apart from counter) */
        t = fmax(t_shrink, t_compute * 0.5) + t_expand * (1.0 + 0.05 * split / 8.0) * (s->rows < 4 ? 1.6 : 1.0) +
            1.0 + 0.01 * split * s->rows;
        break;
    }
    /* persistent grid: saves block launches and the tail when the tiles are
     * many waves of resident CTAs (up to 8% at 5 waves and more); the
     * grid-stride loop costs 2% when every tile has a CTA of its own anyway */
    if (s->persist) {
        double ctas = s->sketch == SEARCH_SKETCH_SPLIT ? ctas_shrink + ctas_expand : fmax(ctas_shrink, ctas_expand);
        double waves = ctas / (sms * fmin(16.0, 64.0 / s->warps));
        t *= waves > 1.0 ? 1.02 - 0.10 * fmin(1.0, (waves - 1.0) / 4.0) : 1.02;
    }
    return t;
}

/* Noise of spread sigma: exp(sigma * z), z of mean 0 and variance 1 (a sum of
 * four uniforms), fixed per schedule and salt. */
static double noise(const search_schedule *s, double sigma, uint64_t salt)
{
    uint64_t h = sched_hash(s, salt);
    double z = 0;
    for (int i = 0; i < 4; ++i)
        z += (double)(h >> (16 * i) & 0xffffu) / 65535.0 - 0.5;
    return exp(sigma * z * sqrt(3.0));
}

/* ---- callbacks -------------------------------------------------------------------------- */

typedef struct harness {
    const search_problem *p;
    double sigma;          /* the model's noise */
    uint64_t salt;
    int predict_calls, measure_calls, predicted;
    int abort_predict_at;  /* predict call (1-based) that returns -1; 0: never */
    int abort_measure_at;  /* measure call that returns -1; 0: never */
    int fail_mod;          /* measurements fail for schedules whose hash % fail_mod == 0 (0: none) */
    int fail_all;
    int fail_mma;          /* every tensor-core schedule fails */
    int max_round;         /* largest n given to measure */
    int nlog, log_cap;
    search_schedule *log;  /* measured, in order */
    double *log_cost;
    int dup;               /* a schedule measured twice */
} harness;

static void harness_init(harness *h, const search_problem *p, double sigma, uint64_t salt)
{
    memset(h, 0, sizeof *h);
    h->p = p;
    h->sigma = sigma;
    h->salt = salt;
    h->log_cap = 1 << 16;
    h->log = malloc((size_t)h->log_cap * sizeof *h->log);
    h->log_cost = malloc((size_t)h->log_cap * sizeof *h->log_cost);
    assert_non_null(h->log);
    assert_non_null(h->log_cost);
}

static void harness_free(harness *h)
{
    free(h->log);
    free(h->log_cost);
}

static int predict_cb(void *user, const search_schedule *s, int n, double *cost)
{
    harness *h = user;
    h->predict_calls++;
    if (h->abort_predict_at && h->predict_calls >= h->abort_predict_at)
        return -1;
    h->predicted += n;
    for (int i = 0; i < n; ++i)
        cost[i] = true_cost(h->p, &s[i]) * noise(&s[i], h->sigma, h->salt);
    return 0;
}

static bool fails(const harness *h, const search_schedule *s)
{
    return h->fail_all || (h->fail_mma && s->mma) || (h->fail_mod && sched_hash(s, 77) % (uint64_t)h->fail_mod == 0);
}

static int measure_cb(void *user, const search_schedule *s, int n, double *cost)
{
    harness *h = user;
    h->measure_calls++;
    if (h->abort_measure_at && h->measure_calls >= h->abort_measure_at)
        return -1;
    if (n > h->max_round)
        h->max_round = n;
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < h->nlog; ++j)
            if (memcmp(&h->log[j], &s[i], sizeof s[i]) == 0)
                h->dup++;
        cost[i] = fails(h, &s[i]) ? INFINITY : true_cost(h->p, &s[i]);
        if (h->nlog < h->log_cap) {
            h->log[h->nlog] = s[i];
            h->log_cost[h->nlog++] = cost[i];
        }
    }
    return 0;
}

/* ---- the optimum ------------------------------------------------------------------------ */

typedef struct optimum {
    const search_problem *p;
    double best;
    long n, near; /* schedules; of them within 5% of the best */
    search_schedule at;
} optimum;

static int near_fn(const search_schedule *s, void *user)
{
    optimum *o = user;
    o->near += true_cost(o->p, s) <= 1.05 * o->best;
    return 0;
}

static int opt_fn(const search_schedule *s, void *user)
{
    optimum *o = user;
    double c = true_cost(o->p, s);
    if (o->n++ == 0 || c < o->best) {
        o->best = c;
        o->at = *s;
    }
    return 0;
}

static optimum optimum_of(const search_problem *p)
{
    optimum o;
    memset(&o, 0, sizeof o);
    o.p = p;
    search_space_enumerate(p, opt_fn, &o);
    search_space_enumerate(p, near_fn, &o);
    return o;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_defaults_and_sizes(void **state)
{
    (void)state;
    search_evo_params d;
    search_evo_params_init(&d);
    assert_int_equal(d.population, 512);
    assert_int_equal(d.generations, 4);
    assert_int_equal(d.measures_per_round, 16);
    assert_int_equal(d.max_measures, 64);
    assert_true(d.eps == 0.05);
    search_evo_params_init(NULL); /* no crash */

    /* the sizes docs/search.md quotes */
    static const struct {
        const char *name;
        int op, rows, din, rank, dout;
    } sz[] = {
        {"apply 64 x 4096->16->4096", SEARCH_OP_APPLY, 64, 4096, 16, 4096},
        {"apply 1 x 4096->16->4096", SEARCH_OP_APPLY, 1, 4096, 16, 4096},
        {"apply 8 x 4096->16->4096", SEARCH_OP_APPLY, 8, 4096, 16, 4096},
        {"apply 256 x 4096->64->4096", SEARCH_OP_APPLY, 256, 4096, 64, 4096},
        {"apply 32 x 4096->16->11008", SEARCH_OP_APPLY, 32, 4096, 16, 11008},
        {"apply 32 x 11008->16->4096", SEARCH_OP_APPLY, 32, 11008, 16, 4096},
        {"apply 32 x 3424->8->3424", SEARCH_OP_APPLY, 32, 3424, 8, 3424},
        {"shrink 64 x 4096->16", SEARCH_OP_SHRINK, 64, 4096, 16, 4096},
        {"expand 64 x 16->4096", SEARCH_OP_EXPAND, 64, 4096, 16, 4096},
        {"apply 1 x 32->1->32", SEARCH_OP_APPLY, 1, 32, 1, 32},
        {"apply 1 x 2->1->32", SEARCH_OP_APPLY, 1, 2, 1, 32},
        {"apply 1 x 1->1->32", SEARCH_OP_APPLY, 1, 1, 1, 32},
    };
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; ++i) {
        search_problem p = problem(sz[i].op, sz[i].rows, sz[i].din, sz[i].rank, sz[i].dout);
        long n = search_space_count(&p, NULL);
        assert_true(n > 0);
        if (verbose)
            print_message("space %-30s %8ld schedules\n", sz[i].name, n);
    }
    search_problem b = base_problem();
    long n = search_space_count(&b, NULL);
    assert_true(n > 130000 && n < 150000); /* 140,340 with stages, persist and the cluster sketch */
}

/* Best true cost among 64 uniform draws of the space, for a seed. */
static double random_best(const search_problem *p, uint64_t seed, int k)
{
    uint64_t rng = seed;
    double best = INFINITY;
    for (int i = 0; i < k; ++i) {
        search_schedule s;
        assert_int_equal(search_space_sample(p, &rng, &s), 0);
        double c = true_cost(p, &s);
        if (c < best)
            best = c;
    }
    return best;
}

typedef struct quality {
    double sum_evo, sum_rand, worst;
    int runs;
} quality;

/* Searches p with the defaults for each seed and noise level; asserts within 5%. */
static void quality_of(const search_problem *p0, const char *name, quality *q)
{
    search_problem p = *p0;
    optimum o = optimum_of(&p);
    assert_true(o.n > 0 && isfinite(o.best));
    if (verbose) {
        char buf[128];
        search_schedule_format(&o.at, buf, sizeof buf);
        print_message("%s: optimum %.3f us (%s), %ld of %ld schedules within 5%%\n", name, o.best, buf, o.near,
                      o.n);
    }
    static const double sigmas[] = {0.0, 0.1, 0.2, 0.3};
    static const uint64_t seeds[] = {1, 2, 3};
    enum { NS = sizeof sigmas / sizeof sigmas[0], NSEED = sizeof seeds / sizeof seeds[0] };
    for (int a = 0; a < NS; ++a) {
        char line[256];
        int len = snprintf(line, sizeof line, "  sigma %.1f: found/optimum", sigmas[a]);
        for (int b = 0; b < NSEED; ++b) {
            harness h;
            harness_init(&h, &p, sigmas[a], 1000 + seeds[b]);
            search_evo_params prm;
            search_evo_params_init(&prm);
            prm.seed = seeds[b];
            search_evo_result r;
            char why[256];
            int rc = search_evo_run(&p, &prm, NULL, 0, predict_cb, measure_cb, &h, &r, why, sizeof why);
            assert_int_equal(rc, 0);
            assert_int_equal(r.measured, 64);
            assert_int_equal(h.nlog, 64);
            assert_int_equal(h.dup, 0);
            assert_true(fabs(true_cost(&p, &r.best) - r.best_cost) < 1e-12);
            double ratio = r.best_cost / o.best;
            double rnd = random_best(&p, 500 + seeds[b] * 7 + (uint64_t)a, 64) / o.best;
            len += snprintf(line + len, sizeof line - (size_t)len, " %.3f", ratio);
            if (ratio > 1.05)
                fail_msg("%s sigma %.2f seed %llu: found/optimum %.4f > 1.05", name, sigmas[a],
                         (unsigned long long)seeds[b], ratio);
            q->sum_evo += ratio;
            q->sum_rand += rnd;
            q->runs++;
            if (ratio > q->worst)
                q->worst = ratio;
            harness_free(&h);
        }
        if (verbose)
            print_message("%s\n", line);
    }
}

static void test_quality(void **state)
{
    (void)state;
    quality q;
    memset(&q, 0, sizeof q);
    search_problem p = base_problem();
    quality_of(&p, "apply 64 x 4096->16->4096", &q);
    p = problem(SEARCH_OP_APPLY, 8, 4096, 16, 11008);
    quality_of(&p, "apply 8 x 4096->16->11008", &q);
    p = problem(SEARCH_OP_APPLY, 256, 4096, 64, 4096);
    quality_of(&p, "apply 256 x 4096->64->4096", &q);
    double mean_evo = q.sum_evo / q.runs, mean_rand = q.sum_rand / q.runs;
    if (verbose)
        print_message("%d runs: mean found/optimum %.4f (worst %.4f); best of 64 uniform draws: mean %.4f\n", q.runs,
                      mean_evo, q.worst, mean_rand);
    /* clearly better than random: at least half of random's excess over the optimum gone */
    assert_true(mean_evo - 1.0 < 0.5 * (mean_rand - 1.0));
}

/* The measured sequence of one run (into h). */
static int run_logged(const search_problem *p, const search_evo_params *prm, harness *h, search_evo_result *r)
{
    char why[256];
    return search_evo_run(p, prm, NULL, 0, predict_cb, measure_cb, h, r, why, sizeof why);
}

static void test_determinism(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.population = 128;
    prm.seed = 42;
    harness h1, h2, h3;
    harness_init(&h1, &p, 0.2, 5);
    harness_init(&h2, &p, 0.2, 5);
    harness_init(&h3, &p, 0.2, 5);
    search_evo_result r1, r2, r3;
    assert_int_equal(run_logged(&p, &prm, &h1, &r1), 0);
    assert_int_equal(run_logged(&p, &prm, &h2, &r2), 0);
    assert_int_equal(h1.nlog, h2.nlog);
    assert_memory_equal(h1.log, h2.log, (size_t)h1.nlog * sizeof *h1.log);
    assert_memory_equal(&r1.best, &r2.best, sizeof r1.best);
    assert_int_equal(h1.predicted, h2.predicted);
    prm.seed = 43;
    assert_int_equal(run_logged(&p, &prm, &h3, &r3), 0);
    assert_int_equal(h3.nlog, h1.nlog);
    assert_true(memcmp(h1.log, h3.log, (size_t)h1.nlog * sizeof *h1.log) != 0);
    harness_free(&h1);
    harness_free(&h2);
    harness_free(&h3);
}

static void test_budget_rounds_eps(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.population = 96;
    prm.measures_per_round = 10;
    prm.max_measures = 47;
    prm.eps = 0.25;
    harness h;
    harness_init(&h, &p, 0.3, 9);
    search_evo_result r;
    assert_int_equal(run_logged(&p, &prm, &h, &r), 0);
    assert_int_equal(r.measured, 47);
    assert_int_equal(h.nlog, 47);
    assert_int_equal(r.rounds, 5); /* 10 10 10 10 7 */
    assert_int_equal(h.measure_calls, 5);
    assert_int_equal(h.max_round, 10);
    assert_int_equal(h.dup, 0);
    for (int i = 0; i < h.nlog; ++i)
        assert_true(search_space_legal(&p, &h.log[i], NULL, 0));
    /* the best is the minimum of what was measured */
    double m = INFINITY;
    for (int i = 0; i < h.nlog; ++i)
        m = fmin(m, h.log_cost[i]);
    assert_true(r.best_cost == m);
    harness_free(&h);

    /* eps 1: every candidate is drawn at random, the model is never asked */
    prm.eps = 1.0;
    harness_init(&h, &p, 0.0, 9);
    assert_int_equal(run_logged(&p, &prm, &h, &r), 0);
    assert_int_equal(h.predict_calls, 0);
    assert_int_equal(r.measured, 47);
    harness_free(&h);
}

/* The exploration draws are known before the run, and the run measures every one of them. */
static void test_exploration_up_front(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.population = 96;
    prm.max_measures = 64;
    prm.eps = 0.1;
    prm.seed = 7;
    search_schedule ex[16], again[16];
    int n = search_evo_exploration(&p, &prm, ex, 16);
    assert_int_equal(n, 6); /* round(0.1 * 64) */
    assert_int_equal(search_evo_exploration(&p, &prm, again, 16), n);
    assert_memory_equal(ex, again, (size_t)n * sizeof *ex);
    assert_int_equal(search_evo_exploration(&p, &prm, again, 2), 2); /* max bounds it */
    assert_memory_equal(ex, again, 2 * sizeof *ex);
    for (int i = 0; i < n; ++i) {
        assert_true(search_space_legal(&p, &ex[i], NULL, 0));
        for (int j = 0; j < i; ++j)
            assert_true(memcmp(&ex[i], &ex[j], sizeof ex[i]) != 0);
    }
    harness h;
    harness_init(&h, &p, 0.3, 3);
    search_evo_result r;
    assert_int_equal(run_logged(&p, &prm, &h, &r), 0);
    for (int i = 0; i < n; ++i) {
        int found = 0;
        for (int j = 0; j < h.nlog && !found; ++j)
            found = !memcmp(&h.log[j], &ex[i], sizeof ex[i]);
        if (!found) {
            char b[128];
            search_schedule_format(&ex[i], b, sizeof b);
            fail_msg("exploration draw %d [%s] was not measured", i, b);
        }
    }
    harness_free(&h);

    /* another seed, other draws; none when the space fits in the budget; bad arguments */
    prm.seed = 8;
    assert_int_equal(search_evo_exploration(&p, &prm, again, 16), n);
    assert_true(memcmp(ex, again, (size_t)n * sizeof *ex) != 0);
    search_problem tiny = problem(SEARCH_OP_APPLY, 1, 1, 1, 32);
    assert_int_equal(search_evo_exploration(&tiny, &prm, ex, 16), 0);
    assert_int_equal(search_evo_exploration(NULL, &prm, ex, 16), -1);
    assert_int_equal(search_evo_exploration(&p, &prm, NULL, 16), -1);
    assert_int_equal(search_evo_exploration(&p, &prm, ex, -1), -1);
    prm.eps = 2;
    assert_int_equal(search_evo_exploration(&p, &prm, ex, 16), -1);
}

static void test_failures_never_best(void **state)
{
    (void)state;
    search_problem p = base_problem();
    optimum o = optimum_of(&p);
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.population = 256;
    harness h;
    harness_init(&h, &p, 0.0, 3);
    h.fail_mod = 3; /* a third of the space fails, */
    h.fail_mma = 1; /* and every tensor-core schedule */
    search_evo_result r;
    assert_int_equal(run_logged(&p, &prm, &h, &r), 0);
    assert_true(isfinite(r.best_cost));
    assert_false(fails(&h, &r.best));
    int failed = 0;
    for (int i = 0; i < h.nlog; ++i)
        failed += !isfinite(h.log_cost[i]);
    assert_int_equal(r.failed, failed);
    assert_true(failed > 0);
    assert_true(r.best_cost >= o.best);
    harness_free(&h);

    /* everything fails: 1, no best */
    harness_init(&h, &p, 0.0, 3);
    h.fail_all = 1;
    prm.max_measures = 20;
    assert_int_equal(run_logged(&p, &prm, &h, &r), 1);
    assert_true(isinf(r.best_cost));
    assert_int_equal(r.measured, 20);
    assert_int_equal(r.failed, 20);
    harness_free(&h);
}

/* NaN and negative measured costs count as failures too. */
static int measure_odd_cb(void *user, const search_schedule *s, int n, double *cost)
{
    int *calls = user;
    for (int i = 0; i < n; ++i)
        cost[i] = (i % 3 == 0) ? NAN : (i % 3 == 1) ? -1.0 : 5.0 + s[i].warps;
    ++*calls;
    return 0;
}

static void test_odd_costs(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.population = 32;
    prm.max_measures = 12;
    prm.measures_per_round = 12;
    int calls = 0;
    search_evo_result r;
    assert_int_equal(search_evo_run(&p, &prm, NULL, 0, NULL, measure_odd_cb, &calls, &r, NULL, 0), 0);
    assert_int_equal(r.failed, 8);
    assert_true(r.best_cost == 5.0 + r.best.warps);
}

static void test_tiny_space_exhaustive(void **state)
{
    (void)state;
    /* 35 schedules: vec 1, cols 32, warps 1..16, split, fused and counter with persist 0 or 1, cluster with 0 */
    search_problem p = problem(SEARCH_OP_APPLY, 1, 1, 1, 32);
    long n = search_space_count(&p, NULL);
    if (verbose)
        print_message("tiny space: %ld schedules\n", n);
    assert_true(n > 1 && n <= 64);
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.measures_per_round = 5;
    harness h;
    harness_init(&h, &p, 0.5, 1);
    search_evo_result r;
    assert_int_equal(run_logged(&p, &prm, &h, &r), 0);
    assert_int_equal(r.measured, (int)n);
    assert_int_equal(h.nlog, (int)n);
    assert_int_equal(h.dup, 0);
    assert_int_equal(h.predict_calls, 0); /* nothing to predict when all is measured */
    assert_int_equal(r.rounds, (int)((n + 4) / 5));
    optimum o = optimum_of(&p);
    assert_true(r.best_cost == o.best);
    harness_free(&h);

    /* a budget just under the space: the search must not run out of schedules */
    prm.max_measures = (int)n - 1;
    prm.population = 8;
    harness_init(&h, &p, 0.5, 1);
    assert_int_equal(run_logged(&p, &prm, &h, &r), 0);
    assert_int_equal(r.measured, (int)n - 1);
    assert_int_equal(h.dup, 0);
    harness_free(&h);
}

static void test_seeds(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_schedule seeds[4];
    seeds[0] = search_schedule_make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 512, 4, 256, 0, 1, 0);
    seeds[1] = search_schedule_make(SEARCH_SKETCH_FUSED, 16, 4, 8, 256, 1, 128, 0, 1, 0);
    seeds[2] = seeds[0];                                                            /* repeated */
    seeds[3] = search_schedule_make(SEARCH_SKETCH_FUSED, 64, 3, 5, 100, 7, 100, 0, 1, 0); /* illegal */
    assert_true(search_space_legal(&p, &seeds[0], NULL, 0));
    assert_true(search_space_legal(&p, &seeds[1], NULL, 0));
    assert_false(search_space_legal(&p, &seeds[3], NULL, 0));
    search_schedule fixed;
    assert_int_equal(search_space_repair(&p, &seeds[3], &fixed), 1);
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.population = 64;
    prm.measures_per_round = 2; /* the seeds span two rounds */
    prm.max_measures = 8;
    harness h;
    harness_init(&h, &p, 0.1, 2);
    search_evo_result r;
    char why[256];
    assert_int_equal(search_evo_run(&p, &prm, seeds, 4, predict_cb, measure_cb, &h, &r, why, sizeof why), 0);
    assert_int_equal(h.dup, 0);
    assert_int_equal(r.measured, 8);
    assert_memory_equal(&h.log[0], &seeds[0], sizeof seeds[0]);
    assert_memory_equal(&h.log[1], &seeds[1], sizeof seeds[1]);
    assert_memory_equal(&h.log[2], &fixed, sizeof fixed);
    harness_free(&h);
}

static void test_no_model(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_evo_params prm;
    search_evo_params_init(&prm);
    harness h;
    harness_init(&h, &p, 0, 0);
    search_evo_result r;
    char why[256];
    assert_int_equal(search_evo_run(&p, &prm, NULL, 0, NULL, measure_cb, &h, &r, why, sizeof why), 0);
    assert_int_equal(r.measured, 64);
    assert_int_equal(h.dup, 0);
    harness_free(&h);
}

static void test_abort(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_evo_params prm;
    search_evo_params_init(&prm);
    prm.population = 64;
    harness h;
    search_evo_result r;
    char why[256];

    harness_init(&h, &p, 0.1, 1);
    h.abort_predict_at = 3;
    assert_int_equal(search_evo_run(&p, &prm, NULL, 0, predict_cb, measure_cb, &h, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "predict"));
    assert_int_equal(r.measured, 0);
    harness_free(&h);

    harness_init(&h, &p, 0.1, 1);
    h.abort_measure_at = 2;
    assert_int_equal(search_evo_run(&p, &prm, NULL, 0, predict_cb, measure_cb, &h, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "measure"));
    assert_int_equal(r.measured, 16); /* the first round's results are kept */
    assert_int_equal(r.rounds, 2);
    assert_true(isfinite(r.best_cost));
    harness_free(&h);
}

static int never_cb(void *user, const search_schedule *s, int n, double *cost)
{
    (void)user, (void)s, (void)n, (void)cost;
    fail_msg("a callback was called for invalid arguments");
    return -1;
}

static void expect_invalid(const search_problem *p, const search_evo_params *prm, const char *needle)
{
    search_evo_result r;
    char why[256];
    assert_int_equal(search_evo_run(p, prm, NULL, 0, never_cb, never_cb, NULL, &r, why, sizeof why), -1);
    if (!strstr(why, needle))
        fail_msg("why \"%s\" lacks \"%s\"", why, needle);
}

static void test_invalid(void **state)
{
    (void)state;
    search_problem p = base_problem();
    search_evo_params d, q;
    search_evo_params_init(&d);
    search_evo_result r;
    char why[256];

    assert_int_equal(search_evo_run(&p, &d, NULL, 0, never_cb, never_cb, NULL, NULL, why, sizeof why), -1);
    assert_non_null(strstr(why, "out"));
    assert_int_equal(search_evo_run(&p, &d, NULL, 0, never_cb, NULL, NULL, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "measure"));
    assert_int_equal(search_evo_run(&p, &d, NULL, -1, never_cb, never_cb, NULL, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "nseeds"));
    assert_int_equal(search_evo_run(&p, &d, NULL, 2, never_cb, never_cb, NULL, &r, why, sizeof why), -1);
    assert_int_equal(search_evo_run(NULL, &d, NULL, 0, never_cb, never_cb, NULL, &r, NULL, 0), -1);
    assert_true(isinf(r.best_cost));
    search_problem bad = p;
    bad.max_rank = 0;
    expect_invalid(&bad, &d, "max_rank");

    q = d, q.population = 1;
    expect_invalid(&p, &q, "population");
    q = d, q.population = SEARCH_EVO_MAX_POPULATION + 1;
    expect_invalid(&p, &q, "population");
    q = d, q.generations = -1;
    expect_invalid(&p, &q, "generations");
    q = d, q.generations = SEARCH_EVO_MAX_GENERATIONS + 1;
    expect_invalid(&p, &q, "generations");
    q = d, q.max_measures = 0;
    expect_invalid(&p, &q, "max_measures");
    q = d, q.max_measures = SEARCH_EVO_MAX_MEASURES + 1;
    expect_invalid(&p, &q, "max_measures");
    q = d, q.measures_per_round = 0;
    expect_invalid(&p, &q, "measures_per_round");
    q = d, q.eps = -0.1;
    expect_invalid(&p, &q, "eps");
    q = d, q.eps = NAN;
    expect_invalid(&p, &q, "eps");
    q = d, q.crossover_share = 1.5;
    expect_invalid(&p, &q, "crossover_share");
    q = d, q.elite_measured = -1;
    expect_invalid(&p, &q, "elite_measured");
    q = d, q.elite_measured = d.population + 1;
    expect_invalid(&p, &q, "elite_measured");
}

int main(int argc, char **argv)
{
    const char *env = getenv("DOP_TEST_VERBOSE");
    verbose = (env && *env && *env != '0') || (argc > 1 && strcmp(argv[1], "-v") == 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_sizes),
        cmocka_unit_test(test_quality),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_budget_rounds_eps),
        cmocka_unit_test(test_exploration_up_front),
        cmocka_unit_test(test_failures_never_best),
        cmocka_unit_test(test_odd_costs),
        cmocka_unit_test(test_tiny_space_exhaustive),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_no_model),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
