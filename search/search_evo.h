/*
 * search_evo.h -- evolutionary schedule search guided by a cost model, in
 * measurement rounds (Ansor's search policy, sized to our space).
 *
 * The engine knows neither the GPU nor the model: it draws schedules from a
 * problem's space (search_space.h) and asks two callbacks, one that predicts
 * the cost of schedules (cheap, called often) and one that measures them
 * (the GPU, called once per round). Each round it
 *
 *   1. builds a population: the best measured schedules so far (elites),
 *      up to 32 unmeasured one-move mutants of each of the best 4 measured
 *      (their neighbourhoods), then schedules drawn uniformly from the space;
 *   2. evolves it `generations` times: every member's predicted cost (each
 *      distinct schedule predicted once per round), tournament selection on
 *      it, children by mutation (search_space_mutate) or crossover
 *      (search_space_crossover), no schedule twice in one population;
 *   3. picks the round's candidates: first any seeds not measured yet, then a
 *      quarter of the model's share from the best predicted of those
 *      neighbourhoods (local search around what the GPU said is fast: it
 *      holds up where the model's errors are large), then the best predicted
 *      schedules of everything the round saw that were never measured, and an
 *      eps share drawn uniformly from the space (exploration: a model is blind
 *      where it has no data); those draws are made up front, before the
 *      first round, so a tuner can compile them early
 *      (search_evo_exploration);
 *   4. measures them (one call), and goes on until max_measures schedules
 *      were measured or the space has none left.
 *
 * A space no larger than max_measures is measured entirely (seeds first,
 * then in enumeration order) without predicting anything. A schedule is never
 * measured twice: identity is the whole schedule (split_k and cols change
 * the time, not only the compiled module). Every draw comes from a splitmix64
 * stream seeded by params->seed, so equal callback answers give the same
 * schedules measured in the same order, on any machine.
 *
 * Defaults (search_evo_params_init), and why. Our spaces are small next to
 * Ansor's (search_space_count: 4096 -> 16 -> 4096 fp16 apply on sm_90 with
 * 64 rows holds 140,340 schedules with the stages and persist annotations
 * and the cluster sketch;
 * docs/search.md has a table), and the budget is 64 measurements per task,
 * not Ansor's ~1000, so:
 *   population 512, generations 4: 2,560 predictions a round visit a few
 *       percent of the space, and the mutation neighbourhoods of the best
 *       predicted schedules (Ansor: 2048 and 4 for spaces of 10^8 and more;
 *       doubling ours helped less on the bigger space than the local share);
 *   measures_per_round 16, max_measures 64: four rounds, so the model is
 *       retrained three times on what the GPU said before the budget is spent
 *       (Ansor: 64 a round, one round = its whole budget here);
 *   eps 0.05 (Ansor's): 3 of the 64 measurements are uniform random;
 *   crossover_share 0.2: most children are one-field mutations (the
 *       neighbourhood of good schedules); crossover mixes good tile shapes
 *       with good launch shapes;
 *   elite_measured 8: the measured best re-enter every round's population, so
 *       their neighbours are predicted under the retrained model.
 */
#ifndef DOP_SEARCH_EVO_H
#define DOP_SEARCH_EVO_H

#include <stddef.h>
#include <stdint.h>

#include "search_schedule.h"
#include "search_space.h"

/* Bounds that search_evo_run checks (they bound its memory). */
#define SEARCH_EVO_MAX_POPULATION 65536
#define SEARCH_EVO_MAX_GENERATIONS 64
#define SEARCH_EVO_MAX_MEASURES 65536

typedef struct search_evo_params {
    int population;         /* schedules per generation: 2 .. SEARCH_EVO_MAX_POPULATION (512) */
    int generations;        /* evolution steps per round: 0 .. SEARCH_EVO_MAX_GENERATIONS (4);
                               0: the candidates are the best predicted of the first population */
    int measures_per_round; /* schedules measured per round (one measure call): >= 1 (16) */
    int max_measures;       /* measurements for the whole task: 1 .. SEARCH_EVO_MAX_MEASURES (64) */
    double eps;             /* share of all measurements drawn uniformly from the space: 0 .. 1 (0.05) */
    double crossover_share; /* share of children made by crossover, the rest by mutation: 0 .. 1 (0.2) */
    int elite_measured;     /* best measured schedules put into each round's first population:
                               0 .. population (8) */
    uint64_t seed;          /* every random draw comes from it (1) */
} search_evo_params;

/* Fills p with the defaults above (nothing when p is NULL). */
void search_evo_params_init(search_evo_params *p);

/*
 * Predicted cost of n >= 1 schedules (lower is better, e.g. microseconds):
 * writes cost[0..n-1]. NaN, negative or infinite means "hopeless" (never
 * preferred to a finite cost). Returns 0, or -1 to abort the search. Called
 * several times per round with up to `population` schedules; s and cost are
 * valid during the call only. Must not call back into the search.
 */
typedef int (*search_evo_predict_fn)(void *user, const search_schedule *s, int n, double *cost);

/*
 * Measures n >= 1 schedules (the GPU): cost[i] the measured time of s[i]
 * (e.g. microseconds), INFINITY when it failed (compile error, launch error,
 * wrong result; NaN and negative values count as failed too). Returns 0, or
 * -1 to abort. Called once per round with up to measures_per_round
 * schedules; the caller typically records the results and retrains its model
 * here, so the next round's predictions use them.
 */
typedef int (*search_evo_measure_fn)(void *user, const search_schedule *s, int n, double *cost);

typedef struct search_evo_result {
    search_schedule best; /* fastest measured schedule (first measured on ties); zeroed when none ran */
    double best_cost;     /* its cost; INFINITY when no measurement succeeded */
    int measured;         /* schedules measured (failures included) */
    int rounds;           /* measure calls */
    int failed;           /* measurements that failed */
} search_evo_result;

/*
 * Searches p's space for its fastest schedule with at most
 * params->max_measures measurements.
 *
 *   p        the problem (search_problem_valid), its space not empty;
 *   params   NULL for the defaults; else every field in its range above;
 *   seeds    nseeds >= 0 schedules measured first, in order (the dispatch
 *            heuristic's pick, the cache's current best...); one outside the
 *            space is repaired to its nearest legal schedule (search_space_repair);
 *            repeats are measured once; NULL when nseeds is 0;
 *   predict  the cost model; NULL: no model, every candidate is drawn uniformly
 *            (random search);
 *   measure  required;
 *   user     passed to both callbacks;
 *   out      required; filled on every return, with what was measured until then;
 *   why      when not NULL, a sentence on failure (why_len bytes).
 *
 * Returns 0 when at least one measurement succeeded; 1 when the search ran to
 * its end but every measurement failed (out->best_cost is INFINITY); -1 for
 * invalid arguments, an empty space, a callback that returned -1, or an
 * allocation failure (why says which). Never aborts, prints or keeps state
 * between calls; thread-safe when the callbacks are.
 */
int search_evo_run(const search_problem *p, const search_evo_params *params, const search_schedule *seeds, int nseeds,
                   search_evo_predict_fn predict, search_evo_measure_fn measure, void *user, search_evo_result *out,
                   char *why, size_t why_len);

/*
 * The exploration draws of search_evo_run(p, params, ...): the round(eps * budget) schedules
 * (budget = min(max_measures, space size)) it measures as its random share, drawn up front
 * from the seed, in the order it takes them. Up to max of them go to out; returns how many
 * (0 when the whole space fits in the budget), or -1 for an invalid problem, params or out.
 * The run skips a draw already measured (a seed, a model's pick) and draws further schedules
 * when it needs more (no model, a space nearly measured). A tuner compiles these ahead.
 */
int search_evo_exploration(const search_problem *p, const search_evo_params *params, search_schedule *out, int max);

#endif
