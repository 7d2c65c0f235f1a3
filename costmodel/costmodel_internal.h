/*
 * costmodel_internal.h -- what the files of the cost model share.
 */
#ifndef DOP_COSTMODEL_INTERNAL_H
#define DOP_COSTMODEL_INTERNAL_H

#include <stdbool.h>

#include "costmodel.h"

/* Whether two tasks are the same (field by field; struct padding ignored). */
bool costmodel_task_equal(const search_task *a, const search_task *b);
/* Whether two tasks have the same shape: op, dtype, d_in, slices' d_out, max_rank. */
bool costmodel_shape_equal(const search_task *a, const search_task *b);
/* Whether r is usable for target g (same fingerprint, ok, a positive finite
 * cost, features computable); when it is, *log_us gets the log of its median
 * cost and f (if not NULL) its features. */
bool costmodel_record_usable(const search_target *g, const search_record *r, double *log_us, double *f);
/* The target's fields are in search_record's ranges. */
bool costmodel_target_valid(const search_target *g);

/* Sufficient statistics of the per-task-centered ridge problem for a set of
 * tasks: sums over records of x (features), r (log residual = log measured -
 * log analytical), and the within-task centered cross products. */
typedef struct costmodel_stats {
    double n, tasks;
    double sx[COSTMODEL_NFEAT], sr;
    double gram[COSTMODEL_NFEAT][COSTMODEL_NFEAT]; /* sum over tasks of sum (x - xbar_t)(x - xbar_t)^T */
    double xr[COSTMODEL_NFEAT];                    /* sum over tasks of sum (x - xbar_t)(r - rbar_t) */
} costmodel_stats;

void costmodel_stats_zero(costmodel_stats *s);
/* Adds one task's k records (features x[k][NFEAT], residuals r[k]). */
void costmodel_stats_add_task(costmodel_stats *s, const double (*x)[COSTMODEL_NFEAT], const double *r, int k);
/* a -= b (a fold's training set is everything minus the held-out shape). */
void costmodel_stats_sub(costmodel_stats *a, const costmodel_stats *b);
/* Solves the ridge problem into m (weights, means, scales, intercept, counts).
 * 0, or -1 when the stats hold fewer than 2 records. */
int costmodel_stats_solve(const costmodel_stats *s, double lambda, costmodel *m);

/* The learned log correction of m for features f (m trained): intercept + w . z,
 * squashed into (-8, 8) by a strictly increasing map (identity on [-4, 4]) so
 * that a far extrapolation never ties schedules a hard clamp would tie. */
double costmodel_correction(const costmodel *m, const double *f);

#endif
