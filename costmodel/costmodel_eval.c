/*
 * costmodel_eval.c -- how well a model ranks measured schedules, and the
 * held-out-shape cross validation.
 *
 * Per task (records grouped by task), with p the predicted and y the
 * measured times of its k >= 2 records:
 *   Spearman  Pearson correlation of the ranks of p and of y (ties take
 *             their mean rank); left out of the mean when p or y all tie;
 *   top-k     min over the k best-predicted records (ties by record order) of
 *             y, divided by min y: 1 when the model's pick is the measured
 *             best, 1.3 when it is 30% slower.
 * Summaries: the mean Spearman over tasks, the geometric means (and the
 * maximum) of the regrets.
 *
 * Cross validation holds out one shape (op, dtype, d_in, slices' d_out,
 * max_rank) at a time, every layout class of it, so a score says how the
 * model does on a model shape it has never seen. Training sums are
 * per-shape (costmodel_stats), and a fold is the total minus its shape, so
 * the whole validation costs one pass over the records plus one small solve
 * per shape.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "costmodel_internal.h"

typedef struct eval_acc {
    int tasks, records, n_spearman;
    double spearman, log_top1, log_top5, max_top1;
} eval_acc;

typedef struct keyed {
    double v;
    size_t i;
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->v != y->v)
        return x->v < y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Mean ranks (1-based) of v[0..k) into rank; tmp holds k entries. */
static void ranks_of(const double *v, int k, double *rank, keyed *tmp)
{
    for (int i = 0; i < k; ++i) {
        tmp[i].v = v[i];
        tmp[i].i = (size_t)i;
    }
    qsort(tmp, (size_t)k, sizeof *tmp, cmp_keyed);
    for (int i = 0; i < k;) {
        int j = i;
        while (j + 1 < k && tmp[j + 1].v == tmp[i].v)
            ++j;
        double r = 0.5 * (i + j) + 1;
        for (int q = i; q <= j; ++q)
            rank[tmp[q].i] = r;
        i = j + 1;
    }
}

/* Adds one task: pred and meas of k records (k >= 2), in record order; work holds 3k doubles and k keyed. */
static void eval_task(const double *pred, const double *meas, int k, double *work, keyed *kw, eval_acc *acc)
{
    if (k < 2)
        return;
    double *rp = work, *ry = work + k;
    ranks_of(pred, k, rp, kw);
    ranks_of(meas, k, ry, kw);
    double mp = 0, my = 0;
    for (int i = 0; i < k; ++i) {
        mp += rp[i];
        my += ry[i];
    }
    mp /= k;
    my /= k;
    double sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < k; ++i) {
        sxy += (rp[i] - mp) * (ry[i] - my);
        sxx += (rp[i] - mp) * (rp[i] - mp);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    if (sxx > 0 && syy > 0) {
        acc->spearman += sxy / sqrt(sxx * syy);
        acc->n_spearman++;
    }
    double best = meas[0];
    for (int i = 1; i < k; ++i)
        best = meas[i] < best ? meas[i] : best;
    for (int i = 0; i < k; ++i) {
        kw[i].v = pred[i];
        kw[i].i = (size_t)i;
    }
    qsort(kw, (size_t)k, sizeof *kw, cmp_keyed);
    double top1 = meas[kw[0].i], top5 = top1;
    for (int i = 1; i < k && i < 5; ++i)
        top5 = meas[kw[i].i] < top5 ? meas[kw[i].i] : top5;
    double r1 = top1 / best, r5 = top5 / best;
    acc->log_top1 += log(r1);
    acc->log_top5 += log(r5);
    acc->max_top1 = r1 > acc->max_top1 ? r1 : acc->max_top1;
    acc->tasks++;
    acc->records += k;
}

static void eval_finish(const eval_acc *acc, costmodel_eval *out)
{
    memset(out, 0, sizeof *out);
    out->tasks = acc->tasks;
    out->records = acc->records;
    if (acc->n_spearman)
        out->spearman_mean = acc->spearman / acc->n_spearman;
    if (acc->tasks) {
        out->top1_regret_geomean = exp(acc->log_top1 / acc->tasks);
        out->top5_regret_geomean = exp(acc->log_top5 / acc->tasks);
        out->top1_regret_max = acc->max_top1;
    }
}

/* ln of m's prediction from features f (see costmodel_predict_us). */
static double predict_log(const costmodel *m, const double *f)
{
    double la = f[COSTMODEL_F_LOG2_ANALYTICAL_US] * log(2.0);
    if (!m->trained)
        return la;
    return la + costmodel_correction(m, f);
}

/* ---- grouping ---------------------------------------------------------------------- */

typedef struct usable {
    size_t rec;     /* index into recs */
    double log_us;  /* ln measured */
    double f[COSTMODEL_NFEAT];
    int task, shape; /* ids, in order of first appearance */
} usable;

typedef struct order {
    size_t u;   /* index into the usable array */
    size_t rec; /* record index (ties) */
    const search_task *t;
} order;

static int cmp_task_fields(const search_task *a, const search_task *b, int whole)
{
#define CMPF(f)                                                                                                        \
    if (a->f != b->f)                                                                                                  \
        return a->f < b->f ? -1 : 1;
    CMPF(op)
    CMPF(dtype)
    CMPF(d_in)
    CMPF(num_slices)
    CMPF(max_rank)
    for (int i = 0; i < a->num_slices && i < SEARCH_MAX_SLICES; ++i)
        CMPF(d_out[i])
    if (whole) {
        CMPF(weights)
        CMPF(rows_log2)
        CMPF(groups_log2)
        CMPF(longest_log2)
        CMPF(mean_log2)
        CMPF(none_quarters)
        CMPF(ranks_differ)
    }
#undef CMPF
    return 0;
}

static int cmp_order_task(const void *a, const void *b)
{
    const order *x = a, *y = b;
    int c = cmp_task_fields(x->t, y->t, 1);
    return c ? c : (x->rec < y->rec ? -1 : x->rec > y->rec);
}

static int cmp_order_shape(const void *a, const void *b)
{
    const order *x = a, *y = b;
    int c = cmp_task_fields(x->t, y->t, 0);
    return c ? c : (x->rec < y->rec ? -1 : x->rec > y->rec);
}

/*
 * Collects the usable records of g and numbers their tasks and shapes
 * (ids in order of first appearance). Returns the count, or -1 (out of memory).
 */
static long collect(const search_target *g, const search_record *recs, size_t n, usable **out, int *ntasks,
                    int *nshapes)
{
    usable *u = malloc((n ? n : 1) * sizeof *u);
    if (!u)
        return -1;
    size_t nu = 0;
    for (size_t i = 0; i < n; ++i) {
        if (costmodel_record_usable(g, &recs[i], &u[nu].log_us, u[nu].f)) {
            u[nu].rec = i;
            nu++;
        }
    }
    order *o = malloc((nu ? nu : 1) * sizeof *o);
    int *first = malloc((nu ? nu : 1) * sizeof *first);
    if (!o || !first) {
        free(u), free(o), free(first);
        return -1;
    }
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t i = 0; i < nu; ++i) {
            o[i].u = i;
            o[i].rec = u[i].rec;
            o[i].t = &recs[u[i].rec].task;
        }
        qsort(o, nu, sizeof *o, pass == 0 ? cmp_order_task : cmp_order_shape);
        /* group runs of equal keys; number groups by their first record */
        size_t ng = 0;
        for (size_t i = 0; i < nu;) {
            size_t j = i;
            while (j + 1 < nu && cmp_task_fields(o[j + 1].t, o[i].t, pass == 0) == 0)
                ++j;
            for (size_t q = i; q <= j; ++q)
                first[o[q].u] = (int)o[i].u; /* the group's earliest usable index */
            ng++;
            i = j + 1;
        }
        /* ids in order of first appearance */
        int *id = malloc((nu ? nu : 1) * sizeof *id);
        if (!id) {
            free(u), free(o), free(first);
            return -1;
        }
        int next = 0;
        for (size_t i = 0; i < nu; ++i)
            id[i] = -1;
        for (size_t i = 0; i < nu; ++i) {
            int f0 = first[i];
            if (id[f0] < 0)
                id[f0] = next++;
            if (pass == 0)
                u[i].task = id[f0];
            else
                u[i].shape = id[f0];
        }
        free(id);
        if (pass == 0)
            *ntasks = (int)ng;
        else
            *nshapes = (int)ng;
    }
    free(o), free(first);
    *out = u;
    return (long)nu;
}

/* Indices of the usable records, grouped by task id (CSR: start[t] .. start[t+1]). */
static int by_task(const usable *u, long nu, int ntasks, size_t **idx_out, size_t **start_out)
{
    size_t *start = calloc((size_t)ntasks + 1, sizeof *start);
    size_t *idx = malloc((nu ? (size_t)nu : 1) * sizeof *idx);
    size_t *fill = calloc((size_t)ntasks + 1, sizeof *fill);
    if (!start || !idx || !fill) {
        free(start), free(idx), free(fill);
        return -1;
    }
    for (long i = 0; i < nu; ++i)
        start[u[i].task + 1]++;
    for (int t = 0; t < ntasks; ++t)
        start[t + 1] += start[t];
    for (long i = 0; i < nu; ++i)
        idx[start[u[i].task] + fill[u[i].task]++] = (size_t)i;
    free(fill);
    *idx_out = idx;
    *start_out = start;
    return 0;
}

int costmodel_evaluate(const costmodel *m, const search_record *recs, size_t n, costmodel_eval *out)
{
    if (!m || !out || (!recs && n) || m->version != COSTMODEL_VERSION)
        return -1;
    memset(out, 0, sizeof *out);
    usable *u = NULL;
    int ntasks = 0, nshapes = 0;
    long nu = collect(&m->target, recs, n, &u, &ntasks, &nshapes);
    if (nu < 0)
        return -1;
    size_t *idx = NULL, *start = NULL;
    double *work = malloc(((size_t)nu + 1) * 5 * sizeof *work);
    keyed *kw = malloc(((size_t)nu + 1) * sizeof *kw);
    if (!work || !kw || by_task(u, nu, ntasks, &idx, &start) != 0) {
        free(u), free(work), free(kw);
        return -1;
    }
    eval_acc acc;
    memset(&acc, 0, sizeof acc);
    for (int t = 0; t < ntasks; ++t) {
        int k = (int)(start[t + 1] - start[t]);
        double *pred = work + 2 * (size_t)nu, *meas = pred + k; /* eval_task uses work[0 .. 2k) */
        for (int i = 0; i < k; ++i) {
            const usable *r = &u[idx[start[t] + (size_t)i]];
            pred[i] = predict_log(m, r->f);
            meas[i] = exp(r->log_us);
        }
        eval_task(pred, meas, k, work, kw, &acc);
    }
    eval_finish(&acc, out);
    free(u), free(work), free(kw), free(idx), free(start);
    return 0;
}

int costmodel_crossval_folds(const search_target *g, const search_record *recs, size_t n, costmodel_eval *analytical,
                             costmodel_eval *learned, costmodel_fold *folds, size_t cap)
{
    if (!g || (!recs && n) || (!folds && cap) || !costmodel_target_valid(g))
        return -1;
    if (analytical)
        memset(analytical, 0, sizeof *analytical);
    if (learned)
        memset(learned, 0, sizeof *learned);
    usable *u = NULL;
    int ntasks = 0, nshapes = 0;
    long nu = collect(g, recs, n, &u, &ntasks, &nshapes);
    if (nu < 0)
        return -1;
    size_t *idx = NULL, *start = NULL;
    double *work = malloc(((size_t)nu + 1) * 5 * sizeof *work);
    keyed *kw = malloc(((size_t)nu + 1) * sizeof *kw);
    costmodel_stats *st = calloc((size_t)nshapes + 1, sizeof *st); /* st[nshapes]: the total */
    double (*tx)[COSTMODEL_NFEAT] = malloc(((size_t)nu + 1) * sizeof *tx);
    int *task_shape = malloc(((size_t)ntasks + 1) * sizeof *task_shape);
    if (!work || !kw || !st || !tx || !task_shape || by_task(u, nu, ntasks, &idx, &start) != 0) {
        free(u), free(work), free(kw), free(st), free(tx), free(task_shape);
        return -1;
    }
    /* per-shape sums of the tasks' centered problems */
    for (int t = 0; t < ntasks; ++t) {
        int k = (int)(start[t + 1] - start[t]);
        double *r = work;
        for (int i = 0; i < k; ++i) {
            const usable *x = &u[idx[start[t] + (size_t)i]];
            memcpy(tx[i], x->f, sizeof tx[i]);
            r[i] = x->log_us - x->f[COSTMODEL_F_LOG2_ANALYTICAL_US] * log(2.0);
        }
        task_shape[t] = k ? u[idx[start[t]]].shape : 0;
        if (k >= 2) {
            costmodel_stats_add_task(&st[task_shape[t]], (const double (*)[COSTMODEL_NFEAT])tx, r, k);
            costmodel_stats_add_task(&st[nshapes], (const double (*)[COSTMODEL_NFEAT])tx, r, k);
        }
    }
    eval_acc all_a, all_l;
    memset(&all_a, 0, sizeof all_a);
    memset(&all_l, 0, sizeof all_l);
    costmodel cm_a, cm_l;
    costmodel_init(&cm_a, g);
    costmodel_stats fold;
    for (int s = 0; s < nshapes; ++s) {
        fold = st[nshapes];
        costmodel_stats_sub(&fold, &st[s]);
        costmodel_init(&cm_l, g);
        int trained = fold.n >= 2 && costmodel_stats_solve(&fold, COSTMODEL_RIDGE_LAMBDA, &cm_l) == 0;
        if (!trained)
            costmodel_init(&cm_l, g);
        eval_acc fa, fl;
        memset(&fa, 0, sizeof fa);
        memset(&fl, 0, sizeof fl);
        const search_task *shape_task = NULL;
        for (int t = 0; t < ntasks; ++t) {
            if (task_shape[t] != s)
                continue;
            int k = (int)(start[t + 1] - start[t]);
            if (!shape_task && k)
                shape_task = &recs[u[idx[start[t]]].rec].task;
            double *pa = work + 2 * (size_t)nu, *pl = pa + k, *meas = pl + k; /* eval_task uses work[0 .. 2k) */
            for (int i = 0; i < k; ++i) {
                const usable *x = &u[idx[start[t] + (size_t)i]];
                pa[i] = predict_log(&cm_a, x->f);
                pl[i] = predict_log(&cm_l, x->f);
                meas[i] = exp(x->log_us);
            }
            eval_task(pa, meas, k, work, kw, &fa);
            eval_task(pa, meas, k, work, kw, &all_a);
            eval_task(pl, meas, k, work, kw, &fl);
            eval_task(pl, meas, k, work, kw, &all_l);
        }
        if ((size_t)s < cap) {
            costmodel_fold *f = &folds[s];
            memset(f, 0, sizeof *f);
            if (shape_task)
                f->shape = *shape_task;
            f->train_records = trained ? (int)fold.n : 0;
            eval_finish(&fa, &f->analytical);
            eval_finish(&fl, &f->learned);
        }
    }
    if (analytical)
        eval_finish(&all_a, analytical);
    if (learned)
        eval_finish(&all_l, learned);
    free(u), free(work), free(kw), free(st), free(tx), free(task_shape), free(idx), free(start);
    return nshapes;
}

int costmodel_crossval(const search_target *g, const search_record *recs, size_t n, costmodel_eval *analytical,
                       costmodel_eval *learned)
{
    return costmodel_crossval_folds(g, recs, n, analytical, learned, NULL, 0);
}
