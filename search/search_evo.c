/*
 * search_evo.c -- evolutionary search of a schedule space, guided by a cost
 * model, in measurement rounds (see search_evo.h for the contract).
 *
 * Why this shape. The model is cheap and wrong in places; the GPU is right
 * and expensive (64 measurements per task). So each round spends thousands
 * of predictions to find the schedules the current model likes best, spends
 * a few measurements on them (plus a few random ones where the model may be
 * blind), and lets the caller retrain the model on the answers before the
 * next round. Elites (the best measured) start every round's population, so
 * the neighbourhood of what really is fast gets predicted again under the
 * retrained model; the mutants of the best few measured are kept apart, and a
 * quarter of the model's picks come from them. Without that share, the
 * version-2 space (stages and persist: twice the schedules, more of them
 * near-equal) let a noisy model's lucky schedules crowd out the neighbours of
 * the measured best: test_evo's base problem at sigma 0.3 went over 5% of the
 * optimum in 3 of 20 seeds (0 of 20 with it, as good as measuring the 61
 * best predicted of the whole space).
 *
 * Selection is a tournament on predicted cost: only the order of predictions
 * matters, so it works the same whether the model returns microseconds,
 * log-microseconds or anything monotone. Every schedule a round predicts is
 * kept with its prediction (a hash set bounded by population x (generations +
 * 1) and by the size of the space), which dedupes predictions and is where
 * the round's best candidates are taken from: a good schedule seen in the
 * second generation is not lost if its children are worse.
 *
 * Memory is bounded by the parameters (their ranges are checked) and by the
 * size of the space; no allocation happens inside the loops. Determinism:
 * one splitmix64 stream (search_rng_next) from params->seed drives every
 * draw, hash sets are only probed (never iterated), and every sort breaks
 * ties on the enumeration order of the schedules.
 */
#include "search_evo.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Schedules per tournament: the best predicted of this many uniform draws
 * from the population becomes a parent. */
#define TOURNAMENT 3
/* Uniform draws that may miss (already measured or chosen) before a random
 * pick walks the space instead. */
#define DRAW_TRIES 64
/* Local search around what really is fast: the LOCAL_ELITES best measured
 * schedules each put up to LOCAL_MUTANTS distinct one-move mutants into a
 * round's first population, and a quarter of the round's model-picked
 * candidates (LOCAL_SHARE) are the best predicted of those mutants. */
#define LOCAL_ELITES 4
#define LOCAL_MUTANTS 32
#define LOCAL_SHARE 4 /* 1 / LOCAL_SHARE of the candidates */

void search_evo_params_init(search_evo_params *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof *p);
    p->population = 512;
    p->generations = 4;
    p->measures_per_round = 16;
    p->max_measures = 64;
    p->eps = 0.05;
    p->crossover_share = 0.2;
    p->elite_measured = 8;
    p->seed = 1;
}

#define fail(why, len, ...) (search_say(why, len, __VA_ARGS__), -1)

/* ---- schedules as keys ------------------------------------------------------------ */

/* The schedule with version and seg bytes normalised: two schedules are
 * the same candidate exactly when their canonical bytes are equal. */
static search_schedule canon(const search_schedule *s)
{
    return search_schedule_make(s->sketch, s->rows, s->warps, s->vec, s->kc, s->split_k, s->cols, s->mma, s->stages,
                                s->persist);
}

/* A total order on schedules (sketch, mma, rows, warps, vec, split_k, kc,
 * cols, stages, persist): the tie-break of every sort. */
static uint64_t order_key(const search_schedule *s)
{
    return (uint64_t)(s->sketch & 3u) << 62 | (uint64_t)(s->mma & 1u) << 61 | (uint64_t)(s->rows & 63u) << 55 |
           (uint64_t)(s->warps & 31u) << 50 | (uint64_t)(s->vec & 15u) << 46 | (uint64_t)(s->split_k & 127u) << 39 |
           (uint64_t)(s->kc & 0x1fffu) << 26 | (uint64_t)(s->cols >> 5 & 0xffu) << 18 |
           (uint64_t)(s->stages & 7u) << 15 | (uint64_t)(s->persist & 1u) << 14;
}

static uint64_t hash_schedule(const search_schedule *s)
{
    unsigned char b[sizeof *s];
    memcpy(b, s, sizeof b);
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a, then a splitmix finaliser */
    for (size_t i = 0; i < sizeof b; ++i)
        h = (h ^ b[i]) * 0x100000001b3ull;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

/* Open-addressing set of canonical schedules, each with a value; sized once
 * for at most `limit` members (insert fails past it, never grows). */
typedef struct sched_set {
    search_schedule *key;
    double *val;
    unsigned char *used;
    size_t mask;  /* capacity - 1 (a power of two >= 2 x limit) */
    size_t n, limit;
} sched_set;

static bool set_init(sched_set *t, size_t limit)
{
    size_t cap = 16;
    while (cap < 2 * limit)
        cap <<= 1;
    t->key = malloc(cap * sizeof *t->key);
    t->val = malloc(cap * sizeof *t->val);
    t->used = calloc(cap, 1);
    t->mask = cap - 1;
    t->n = 0;
    t->limit = limit;
    return t->key && t->val && t->used;
}

static void set_free(sched_set *t)
{
    free(t->key);
    free(t->val);
    free(t->used);
}

static void set_clear(sched_set *t)
{
    memset(t->used, 0, t->mask + 1);
    t->n = 0;
}

/* Slot of s (canonical): its own when present, else the empty one it would take. */
static size_t set_slot(const sched_set *t, const search_schedule *s)
{
    size_t i = (size_t)hash_schedule(s) & t->mask;
    while (t->used[i] && memcmp(&t->key[i], s, sizeof *s) != 0)
        i = (i + 1) & t->mask;
    return i;
}

static bool set_has(const sched_set *t, const search_schedule *s)
{
    return t->used[set_slot(t, s)] != 0;
}

/* Value of s, or false when absent. */
static bool set_get(const sched_set *t, const search_schedule *s, double *val)
{
    size_t i = set_slot(t, s);
    if (!t->used[i])
        return false;
    *val = t->val[i];
    return true;
}

/* Adds s (canonical) with val; false when already there or full. */
static bool set_add(sched_set *t, const search_schedule *s, double val)
{
    size_t i = set_slot(t, s);
    if (t->used[i] || t->n >= t->limit)
        return false;
    t->used[i] = 1;
    t->key[i] = *s;
    t->val[i] = val;
    t->n++;
    return true;
}

static void set_put(sched_set *t, const search_schedule *s, double val)
{
    size_t i = set_slot(t, s);
    if (t->used[i])
        t->val[i] = val;
}

/* ---- the search state ---------------------------------------------------------------- */

typedef struct ranked {
    search_schedule s;
    double cost;
    long order; /* tie-break after cost */
} ranked;

typedef struct evo {
    const search_problem *p;
    search_evo_params prm;
    search_evo_predict_fn predict;
    search_evo_measure_fn measure;
    void *user;
    uint64_t rng;
    long space;          /* size of the space */
    long budget;         /* measurements this run may make: min(max_measures, space) */

    sched_set taken;     /* measured or chosen for this round; value: measured cost */
    search_schedule *ms; /* measured, in order */
    double *mc;          /* their costs (INFINITY: failed) */
    long nm, nrandom;    /* measured; of them drawn at random (eps) */
    search_schedule *pool; /* the exploration draws, made up front (search_evo_exploration) */
    int npool, pool_next;
    int rounds;          /* measure calls made */

    sched_set seen;      /* predicted this round; value: predicted cost */
    search_schedule *seen_list; /* the same, in the order first predicted */
    long seen_cap;
    sched_set gen;       /* members of the generation being built (dedupe) */
    sched_set local;     /* this round's mutants of the best measured */
    search_schedule *pop, *next, *batch;
    double *pop_cost, *batch_cost;
    int npop;
    ranked *rank;        /* sort scratch: max(seen_cap, budget) */

    search_schedule *cand; /* the round's candidates */
    double *cand_cost;

    char *why;
    size_t why_len;
} evo;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->cost < y->cost)
        return -1;
    if (x->cost > y->cost)
        return 1;
    return (x->order > y->order) - (x->order < y->order);
}

/* A cost as the engine orders it: anything not a finite number >= 0 is +inf. */
static double clean_cost(double c)
{
    return (isfinite(c) && c >= 0) ? c : INFINITY;
}

/* ---- drawing unmeasured schedules --------------------------------------------------- */

typedef struct nth_state {
    const sched_set *skip;
    long left;
    search_schedule *out;
    bool found;
} nth_state;

static int nth_fn(const search_schedule *s, void *user)
{
    nth_state *st = user;
    search_schedule c = canon(s);
    if (set_has(st->skip, &c))
        return 0;
    if (st->left-- == 0) {
        *st->out = c;
        st->found = true;
        return 1;
    }
    return 0;
}

/* A schedule of the space not in e->taken, uniformly; false when none is left. */
static bool draw_untaken(evo *e, search_schedule *out)
{
    long left = e->space - (long)e->taken.n;
    if (left <= 0)
        return false;
    while (e->pool_next < e->npool) { /* the draws made up front first */
        const search_schedule *s = &e->pool[e->pool_next++];
        if (!set_has(&e->taken, s)) {
            *out = *s;
            return true;
        }
    }
    for (int t = 0; t < DRAW_TRIES; ++t) {
        search_schedule s;
        if (search_space_sample(e->p, &e->rng, &s) != 0)
            return false;
        s = canon(&s);
        if (!set_has(&e->taken, &s)) {
            *out = s;
            return true;
        }
    }
    /* the space is mostly taken: the k-th untaken one in enumeration order */
    nth_state st = {&e->taken, (long)search_rng_below(&e->rng, (uint64_t)left), out, false};
    search_space_enumerate(e->p, nth_fn, &st);
    return st.found;
}

/* ---- evolution ------------------------------------------------------------------------- */

/* Predicts the members of the population the round has not seen, then reads
 * every member's prediction. 0, or -1 when predict aborted. */
static int predict_population(evo *e)
{
    int nb = 0;
    for (int i = 0; i < e->npop; ++i) {
        double c;
        if (!set_get(&e->seen, &e->pop[i], &c))
            e->batch[nb++] = e->pop[i];
    }
    if (nb > 0) {
        for (int i = 0; i < nb; ++i)
            e->batch_cost[i] = INFINITY;
        if (e->predict(e->user, e->batch, nb, e->batch_cost) != 0)
            return fail(e->why, e->why_len, "the predict callback aborted the search (round %d)", e->rounds + 1);
        for (int i = 0; i < nb; ++i)
            if (set_add(&e->seen, &e->batch[i], clean_cost(e->batch_cost[i])))
                e->seen_list[e->seen.n - 1] = e->batch[i];
    }
    for (int i = 0; i < e->npop; ++i) {
        double c = INFINITY;
        set_get(&e->seen, &e->pop[i], &c);
        e->pop_cost[i] = c;
    }
    return 0;
}

/* Index of a parent: the best predicted of TOURNAMENT uniform draws (first drawn on ties). */
static int tournament(evo *e)
{
    int best = (int)search_rng_below(&e->rng, (uint64_t)e->npop);
    for (int t = 1; t < TOURNAMENT; ++t) {
        int i = (int)search_rng_below(&e->rng, (uint64_t)e->npop);
        if (e->pop_cost[i] < e->pop_cost[best])
            best = i;
    }
    return best;
}

/* Adds s to the generation being built in e->next unless already there. */
static void gen_add(evo *e, int *n, const search_schedule *s)
{
    search_schedule c = canon(s);
    if (*n < e->prm.population && set_add(&e->gen, &c, 0))
        e->next[(*n)++] = c;
}

/* Fills e->next from position *n up to the population with uniform draws
 * (bounded tries: a space smaller than the population leaves it short). */
static void fill_random(evo *e, int *n)
{
    long tries = 4L * e->prm.population + 64;
    while (*n < e->prm.population && tries-- > 0 && (long)e->gen.n < e->space) {
        search_schedule s;
        if (search_space_sample(e->p, &e->rng, &s) != 0)
            return;
        gen_add(e, n, &s);
    }
}

static void swap_generations(evo *e, int n)
{
    search_schedule *t = e->pop;
    e->pop = e->next;
    e->next = t;
    e->npop = n;
}

/* The first population of a round: the best measured, then uniform draws. */
static void first_population(evo *e)
{
    set_clear(&e->gen);
    int n = 0;
    if (e->prm.elite_measured > 0 && e->nm > 0) {
        for (long i = 0; i < e->nm; ++i)
            e->rank[i] = (ranked){e->ms[i], e->mc[i], i};
        qsort(e->rank, (size_t)e->nm, sizeof *e->rank, cmp_ranked);
        for (long i = 0; i < e->nm && i < e->prm.elite_measured && isfinite(e->rank[i].cost); ++i)
            gen_add(e, &n, &e->rank[i].s);
        /* the neighbourhoods of the best few: one-move mutants not measured yet */
        for (long i = 0; i < e->nm && i < LOCAL_ELITES && isfinite(e->rank[i].cost); ++i) {
            for (int t = 0, k = 0; k < LOCAL_MUTANTS && t < 3 * LOCAL_MUTANTS && n < e->prm.population; ++t) {
                search_schedule m;
                if (search_space_mutate(e->p, &e->rank[i].s, &e->rng, &m) != 0)
                    continue;
                m = canon(&m);
                if (set_has(&e->taken, &m) || !set_add(&e->local, &m, 0))
                    continue;
                k++;
                gen_add(e, &n, &m);
            }
        }
    }
    fill_random(e, &n);
    swap_generations(e, n);
}

/* Children of the current population: crossover or mutation of tournament winners. */
static void next_generation(evo *e)
{
    set_clear(&e->gen);
    int n = 0;
    long tries = 4L * e->prm.population;
    while (n < e->prm.population && tries-- > 0) {
        search_schedule child;
        /* a draw in [0, 2^53) against the share, so 0 and 1 are exact */
        double u = (double)(search_rng_next(&e->rng) >> 11) * 0x1p-53;
        int rc;
        if (u < e->prm.crossover_share && e->npop > 1) {
            int a = tournament(e), b = tournament(e);
            rc = search_space_crossover(e->p, &e->pop[a], &e->pop[b], &e->rng, &child);
        } else {
            rc = search_space_mutate(e->p, &e->pop[tournament(e)], &e->rng, &child);
        }
        if (rc >= 0)
            gen_add(e, &n, &child);
    }
    fill_random(e, &n);
    swap_generations(e, n);
}

/* Evolves one round's populations; the predictions end in e->seen. 0 or -1. */
static int evolve(evo *e)
{
    set_clear(&e->seen);
    set_clear(&e->local);
    first_population(e);
    for (int g = 0;; ++g) {
        if (predict_population(e) != 0)
            return -1;
        if (g == e->prm.generations || (long)e->seen.n >= e->seen_cap)
            return 0;
        next_generation(e);
    }
}

/* ---- a round ---------------------------------------------------------------------------- */

/* Takes s (canonical) as a candidate of this round unless already taken. */
static void take(evo *e, int *n, const search_schedule *s)
{
    if (set_add(&e->taken, s, INFINITY))
        e->cand[(*n)++] = *s;
}

typedef struct exhaust_state {
    evo *e;
    int *n;
    int want;
} exhaust_state;

static int exhaust_fn(const search_schedule *s, void *user)
{
    exhaust_state *st = user;
    search_schedule c = canon(s);
    take(st->e, st->n, &c);
    return *st->n >= st->want;
}

/* Picks up to `want` candidates after the seeds in cand[0..*n). 0 or -1. */
static int pick_candidates(evo *e, int *n, int want)
{
    if (e->space <= e->prm.max_measures) {
        /* the whole space fits in the budget: measure it in enumeration order */
        exhaust_state st = {e, n, want};
        if (*n < want)
            search_space_enumerate(e->p, exhaust_fn, &st);
        return 0;
    }
    /* the eps share of all measurements so far, rounded, drawn at random */
    long target = (long)(e->prm.eps * (double)(e->nm + want) + 0.5);
    long nrand = target - e->nrandom;
    if (!e->predict)
        nrand = want;
    if (nrand > want - *n)
        nrand = want - *n;
    if (nrand < 0)
        nrand = 0;
    if (e->predict && want - *n > nrand) {
        if (evolve(e) != 0)
            return -1;
        long ns = 0;
        for (size_t i = 0; i < e->seen.n; ++i) {
            const search_schedule *s = &e->seen_list[i];
            double c = INFINITY;
            if (set_has(&e->taken, s))
                continue;
            set_get(&e->seen, s, &c);
            e->rank[ns++] = (ranked){*s, c, (long)(order_key(s) >> 1)};
        }
        qsort(e->rank, (size_t)ns, sizeof *e->rank, cmp_ranked);
        /* a share for the best predicted neighbours of the best measured
         * (they are near what the GPU said is fast, whatever the model's
         * errors elsewhere), then the best predicted of all */
        int nlocal = (want - nrand - *n) / LOCAL_SHARE;
        for (long i = 0; i < ns && nlocal > 0; ++i)
            if (set_has(&e->local, &e->rank[i].s)) {
                take(e, n, &e->rank[i].s);
                nlocal--;
            }
        for (long i = 0; i < ns && *n < want - nrand; ++i)
            take(e, n, &e->rank[i].s);
    }
    /* exploration, and whatever the model could not fill */
    int before = *n;
    search_schedule s;
    while (*n < want && draw_untaken(e, &s))
        take(e, n, &s);
    e->nrandom += *n - before;
    return 0;
}

/* Fills out from the measurements so far. */
static void result_of(const evo *e, search_evo_result *out)
{
    memset(out, 0, sizeof *out);
    out->best_cost = INFINITY;
    for (long i = 0; i < e->nm; ++i) {
        if (!isfinite(e->mc[i]))
            out->failed++;
        else if (e->mc[i] < out->best_cost) {
            out->best_cost = e->mc[i];
            out->best = e->ms[i];
        }
    }
    out->measured = (int)e->nm;
}

static int check_params(const search_evo_params *q, char *why, size_t len)
{
    if (q->population < 2 || q->population > SEARCH_EVO_MAX_POPULATION)
        return fail(why, len, "population %d not in 2..%d", q->population, SEARCH_EVO_MAX_POPULATION);
    if (q->generations < 0 || q->generations > SEARCH_EVO_MAX_GENERATIONS)
        return fail(why, len, "generations %d not in 0..%d", q->generations, SEARCH_EVO_MAX_GENERATIONS);
    if (q->max_measures < 1 || q->max_measures > SEARCH_EVO_MAX_MEASURES)
        return fail(why, len, "max_measures %d not in 1..%d", q->max_measures, SEARCH_EVO_MAX_MEASURES);
    if (q->measures_per_round < 1)
        return fail(why, len, "measures_per_round %d < 1", q->measures_per_round);
    if (!(q->eps >= 0 && q->eps <= 1))
        return fail(why, len, "eps %g not in 0..1", q->eps);
    if (!(q->crossover_share >= 0 && q->crossover_share <= 1))
        return fail(why, len, "crossover_share %g not in 0..1", q->crossover_share);
    if (q->elite_measured < 0 || q->elite_measured > q->population)
        return fail(why, len, "elite_measured %d not in 0..population (%d)", q->elite_measured, q->population);
    return 0;
}

/* ---- exploration drawn up front ------------------------------------------------------------
 * The eps share is drawn before the first round, from its own stream of the seed, so that a
 * tuner can compile those schedules while it sets up: drawn uniformly, they are nearly always
 * modules no earlier task compiled, and each round that measures one used to wait for NVRTC. */

#define EXPLORE_SALT 0x6578706c6f726521ull

/* How many draws a run of this budget takes at random when the model fills the rest. */
static int explore_count(const search_evo_params *q, long space, long budget)
{
    if (space <= q->max_measures)
        return 0; /* the whole space is measured in order */
    long n = (long)(q->eps * (double)budget + 0.5);
    return (int)(n < space ? n : space);
}

/* n distinct draws (fewer when the space runs out of them) into out; -1 for an invalid space. */
static int explore_draw(const search_problem *p, const search_evo_params *q, int n, search_schedule *out)
{
    uint64_t rng = q->seed ^ EXPLORE_SALT;
    int got = 0;
    for (int t = 0; got < n && t < n * DRAW_TRIES; ++t) {
        search_schedule s;
        if (search_space_sample(p, &rng, &s) != 0)
            return -1;
        s = canon(&s);
        int dup = 0;
        for (int i = 0; i < got && !dup; ++i)
            dup = !memcmp(&out[i], &s, sizeof s);
        if (!dup)
            out[got++] = s;
    }
    return got;
}

int search_evo_exploration(const search_problem *p, const search_evo_params *params, search_schedule *out, int max)
{
    search_evo_params q;
    if (params)
        q = *params;
    else
        search_evo_params_init(&q);
    if (!p || !search_problem_valid(p, NULL, 0) || (max > 0 && !out) || max < 0 || check_params(&q, NULL, 0) != 0)
        return -1;
    long space = search_space_count(p, NULL);
    if (space <= 0)
        return -1;
    long budget = q.max_measures < space ? q.max_measures : space;
    int n = explore_count(&q, space, budget);
    search_schedule *all = malloc((size_t)(n > 0 ? n : 1) * sizeof *all);
    if (!all)
        return -1;
    int got = explore_draw(p, &q, n, all);
    if (got > max)
        got = max;
    if (got > 0)
        memcpy(out, all, (size_t)got * sizeof *out);
    free(all);
    return got;
}

static void evo_free(evo *e)
{
    set_free(&e->taken);
    set_free(&e->seen);
    set_free(&e->gen);
    set_free(&e->local);
    free(e->ms);
    free(e->mc);
    free(e->seen_list);
    free(e->pop);
    free(e->next);
    free(e->batch);
    free(e->pop_cost);
    free(e->batch_cost);
    free(e->rank);
    free(e->cand);
    free(e->cand_cost);
    free(e->pool);
}

static bool evo_alloc(evo *e)
{
    size_t P = (size_t)e->prm.population, B = (size_t)e->budget;
    long visits = (long)e->prm.population * (e->prm.generations + 1);
    e->seen_cap = visits < e->space ? visits : e->space;
    size_t per_round = (size_t)(e->prm.measures_per_round < e->budget ? e->prm.measures_per_round : e->budget);
    size_t nrank = (size_t)e->seen_cap > B ? (size_t)e->seen_cap : B;
    /* every allocation is attempted, so the release path sees the same state whichever failed */
    bool ok = set_init(&e->taken, B);
    ok = set_init(&e->seen, (size_t)e->seen_cap) && ok;
    ok = set_init(&e->gen, P) && ok;
    ok = set_init(&e->local, LOCAL_ELITES * LOCAL_MUTANTS) && ok;
    e->ms = malloc(B * sizeof *e->ms);
    e->mc = malloc(B * sizeof *e->mc);
    e->seen_list = malloc((size_t)e->seen_cap * sizeof *e->seen_list);
    e->pop = malloc(P * sizeof *e->pop);
    e->next = malloc(P * sizeof *e->next);
    e->batch = malloc(P * sizeof *e->batch);
    e->pop_cost = malloc(P * sizeof *e->pop_cost);
    e->batch_cost = malloc(P * sizeof *e->batch_cost);
    e->rank = malloc(nrank * sizeof *e->rank);
    e->cand = malloc(per_round * sizeof *e->cand);
    e->cand_cost = malloc(per_round * sizeof *e->cand_cost);
    int np = explore_count(&e->prm, e->space, e->budget);
    e->pool = malloc((size_t)(np > 0 ? np : 1) * sizeof *e->pool);
    if (e->pool)
        e->npool = explore_draw(e->p, &e->prm, np, e->pool);
    return ok && e->ms && e->mc && e->seen_list && e->pop && e->next && e->batch && e->pop_cost && e->batch_cost &&
           e->rank && e->cand && e->cand_cost && e->pool && e->npool >= 0;
}

/* The search loop, once e is set up; seeds already repaired in seeds[0..nseeds). */
static int run_rounds(evo *e, const search_schedule *seeds, int nseeds)
{
    int next_seed = 0;
    while (e->nm < e->budget && (long)e->taken.n < e->space) {
        long room = e->budget - e->nm;
        int want = (int)(e->prm.measures_per_round < room ? e->prm.measures_per_round : room);
        int n = 0;
        while (next_seed < nseeds && n < want)
            take(e, &n, &seeds[next_seed++]);
        if (pick_candidates(e, &n, want) != 0)
            return -1;
        if (n == 0)
            break;
        for (int i = 0; i < n; ++i)
            e->cand_cost[i] = INFINITY;
        e->rounds++;
        if (e->measure(e->user, e->cand, n, e->cand_cost) != 0)
            return fail(e->why, e->why_len, "the measure callback aborted the search (round %d, %ld measured before)",
                        e->rounds, e->nm);
        for (int i = 0; i < n; ++i) {
            double c = clean_cost(e->cand_cost[i]);
            set_put(&e->taken, &e->cand[i], c);
            e->ms[e->nm] = e->cand[i];
            e->mc[e->nm++] = c;
        }
    }
    return 0;
}

int search_evo_run(const search_problem *p, const search_evo_params *params, const search_schedule *seeds, int nseeds,
                   search_evo_predict_fn predict, search_evo_measure_fn measure, void *user, search_evo_result *out,
                   char *why, size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (!out)
        return fail(why, why_len, "out is NULL");
    memset(out, 0, sizeof *out);
    out->best_cost = INFINITY;
    char pwhy[160];
    if (!search_problem_valid(p, pwhy, sizeof pwhy))
        return fail(why, why_len, "invalid problem: %s", pwhy);
    if (!measure)
        return fail(why, why_len, "measure callback is NULL");
    if (nseeds < 0 || (nseeds > 0 && !seeds))
        return fail(why, why_len, "nseeds %d with seeds %s", nseeds, seeds ? "given" : "NULL");

    evo e;
    memset(&e, 0, sizeof e);
    if (params)
        e.prm = *params;
    else
        search_evo_params_init(&e.prm);
    if (check_params(&e.prm, why, why_len) != 0)
        return -1;
    e.space = search_space_count(p, NULL);
    if (e.space <= 0)
        return fail(why, why_len, "the problem's schedule space is empty");
    e.p = p;
    e.predict = predict;
    e.measure = measure;
    e.user = user;
    e.rng = e.prm.seed;
    e.budget = e.prm.max_measures < e.space ? e.prm.max_measures : e.space;
    e.why = why;
    e.why_len = why_len;

    search_schedule *fixed = NULL;
    int rc = -1;
    if (!evo_alloc(&e) || (nseeds > 0 && !(fixed = malloc((size_t)nseeds * sizeof *fixed)))) {
        search_say(why, why_len, "out of host memory");
        goto done;
    }
    for (int i = 0; i < nseeds; ++i) {
        search_schedule r;
        if (search_space_repair(p, &seeds[i], &r) < 0) {
            search_say(why, why_len, "seed %d could not be repaired", i);
            goto done;
        }
        fixed[i] = canon(&r);
    }
    if (run_rounds(&e, fixed, nseeds) != 0)
        goto done;
    rc = 0;
done:
    result_of(&e, out);
    out->rounds = e.rounds;
    if (rc == 0 && !isfinite(out->best_cost))
        rc = 1;
    free(fixed);
    evo_free(&e);
    return rc;
}
