/*
 * costmodel_model.c -- the learned correction and the model's byte image.
 *
 * The learner. For a record i of task t with measured time y_i (median of its
 * costs), analytical time a_i and features x_i, the residual r_i = ln y_i -
 * ln a_i is modelled as
 *
 *     r_i = c_t + w . z_i,     z_ij = (x_ij - mean_j) / scale_j
 *
 * with one free offset c_t per task. Eliminating c_t is the same as removing
 * each task's mean from r and x ("per-task centering"), so w is fitted on
 * within-task differences only: it learns which schedules are faster than
 * the analytical model says relative to the others of the same task, the
 * ranking search and dispatch need, and nothing about a task's absolute
 * level. Features that are constant inside every task (the task's own size
 * fields) are centered to zero and get weight 0.
 *
 * w minimizes  sum_i (r~_i - w . z~_i)^2 / n + lambda |w|^2  (ridge;
 * standardized features, scale_j = the within-task standard deviation), the
 * normal equations (G / n + lambda I) w = b / n solved by Cholesky: a
 * COSTMODEL_NFEAT-square system, deterministic, no dependency, microseconds.
 * Everything needed is a sum over records (costmodel_stats), so the cross
 * validation trains a fold by subtracting the held-out shape's sums.
 *
 * Prediction: ln t = ln a + intercept + w . z, the intercept being the mean
 * residual left after w (so microseconds are calibrated on average; it does
 * not change any ranking). The correction is squashed into (-8, 8) by a
 * strictly increasing map (costmodel_correction), so it never ties schedules;
 * feature scales are at least COSTMODEL_SCALE_MIN.
 *
 * The byte image (little endian, COSTMODEL_ENCODED_SIZE bytes):
 *   "DOPM" | u32 version | u32 nfeat | u32 trained | i32 cc_major | i32
 *   cc_minor | i32 sm_count | i64 l2_bytes | i32 smem_per_block | u32 records
 *   | u32 tasks | f64 lambda | f64 intercept | f64 mean[nfeat] | f64
 *   scale[nfeat] | f64 w[nfeat] | u64 checksum (FNV-1a 64 of all before it)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "costmodel_internal.h"

#define CORR_MAX 8.0   /* |ln correction| at most: a factor of ~3000 */
#define WEIGHT_MAX 1e6 /* |w|, |mean|, scale accepted by the decoder */

#define failf(why, len, ...) (search_say(why, len, __VA_ARGS__), -1)

int costmodel_same_target(const search_target *a, const search_target *b)
{
    return a && b && a->cc_major == b->cc_major && a->cc_minor == b->cc_minor && a->sm_count == b->sm_count &&
           a->l2_bytes == b->l2_bytes && a->smem_per_block == b->smem_per_block;
}

static void set_target(costmodel *m, const search_target *g)
{
    memset(&m->target, 0, sizeof m->target);
    m->target.cc_major = g->cc_major;
    m->target.cc_minor = g->cc_minor;
    m->target.sm_count = g->sm_count;
    m->target.l2_bytes = g->l2_bytes;
    m->target.smem_per_block = g->smem_per_block;
    search_target_tag(&m->target, m->tag, sizeof m->tag);
}

void costmodel_init(costmodel *m, const search_target *g)
{
    if (!m)
        return;
    memset(m, 0, sizeof *m);
    m->version = COSTMODEL_VERSION;
    if (g)
        set_target(m, g);
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        m->scale[j] = 1;
}

double costmodel_predict_us(const costmodel *m, const search_task *t, const search_schedule *s)
{
    double f[COSTMODEL_NFEAT];
    if (!m || m->version != COSTMODEL_VERSION || costmodel_features(t, &m->target, s, f) != 0)
        return 1e9;
    if (!m->trained)
        return costmodel_analytical_us(t, &m->target, s); /* exactly, not through its log */
    double a = exp2(f[COSTMODEL_F_LOG2_ANALYTICAL_US]);
    double us = a * exp(costmodel_correction(m, f));
    return isfinite(us) && us > 0 ? us : 1e9;
}

double costmodel_correction(const costmodel *m, const double *f)
{
    double c = m->intercept;
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        c += m->w[j] * (f[j] - m->mean[j]) / m->scale[j];
    if (!(c == c))
        return 0;
    /* |c| <= half: as is; beyond, half + half * x / (1 + x), x = (|c| - half) / half: increasing, below CORR_MAX */
    double half = CORR_MAX / 2, a = fabs(c);
    if (a <= half)
        return c;
    double x = (a - half) / half;
    double v = isfinite(x) ? half + half * x / (1 + x) : CORR_MAX;
    return c < 0 ? -v : v;
}

/* ---- sufficient statistics and the ridge solve ---------------------------------- */

void costmodel_stats_zero(costmodel_stats *s)
{
    memset(s, 0, sizeof *s);
}

void costmodel_stats_add_task(costmodel_stats *s, const double (*x)[COSTMODEL_NFEAT], const double *r, int k)
{
    if (k <= 0)
        return;
    double xbar[COSTMODEL_NFEAT] = {0}, rbar = 0;
    for (int i = 0; i < k; ++i) {
        for (int j = 0; j < COSTMODEL_NFEAT; ++j)
            xbar[j] += x[i][j];
        rbar += r[i];
    }
    for (int j = 0; j < COSTMODEL_NFEAT; ++j) {
        s->sx[j] += xbar[j];
        xbar[j] /= k;
    }
    s->sr += rbar;
    rbar /= k;
    for (int i = 0; i < k; ++i) {
        double d[COSTMODEL_NFEAT];
        for (int j = 0; j < COSTMODEL_NFEAT; ++j)
            d[j] = x[i][j] - xbar[j];
        double dr = r[i] - rbar;
        for (int a = 0; a < COSTMODEL_NFEAT; ++a) {
            if (d[a] == 0)
                continue;
            s->xr[a] += d[a] * dr;
            for (int b = 0; b < COSTMODEL_NFEAT; ++b)
                s->gram[a][b] += d[a] * d[b];
        }
    }
    s->n += k;
    s->tasks += 1;
}

void costmodel_stats_sub(costmodel_stats *a, const costmodel_stats *b)
{
    a->n -= b->n;
    a->tasks -= b->tasks;
    a->sr -= b->sr;
    for (int j = 0; j < COSTMODEL_NFEAT; ++j) {
        a->sx[j] -= b->sx[j];
        a->xr[j] -= b->xr[j];
        for (int k = 0; k < COSTMODEL_NFEAT; ++k)
            a->gram[j][k] -= b->gram[j][k];
    }
}

/* Solves A w = b for a symmetric positive definite A (n x n, row-major, overwritten). */
static int cholesky_solve(double *A, double *b, int n)
{
    for (int j = 0; j < n; ++j) {
        double d = A[j * n + j];
        for (int k = 0; k < j; ++k)
            d -= A[j * n + k] * A[j * n + k];
        if (!(d > 1e-12))
            return -1;
        d = sqrt(d);
        A[j * n + j] = d;
        for (int i = j + 1; i < n; ++i) {
            double v = A[i * n + j];
            for (int k = 0; k < j; ++k)
                v -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = v / d;
        }
    }
    for (int i = 0; i < n; ++i) { /* L y = b */
        double v = b[i];
        for (int k = 0; k < i; ++k)
            v -= A[i * n + k] * b[k];
        b[i] = v / A[i * n + i];
    }
    for (int i = n - 1; i >= 0; --i) { /* L^T w = y */
        double v = b[i];
        for (int k = i + 1; k < n; ++k)
            v -= A[k * n + i] * b[k];
        b[i] = v / A[i * n + i];
    }
    return 0;
}

int costmodel_stats_solve(const costmodel_stats *s, double lambda, costmodel *m)
{
    enum { F = COSTMODEL_NFEAT };
    if (s->n < 2 || !(lambda > 0))
        return -1;
    double n = s->n, scale[F], A[F * F], b[F];
    bool used[F];
    for (int j = 0; j < F; ++j) {
        double var = s->gram[j][j] / n;
        used[j] = var > 1e-10;
        /* a floor: a feature that barely moves inside tasks would otherwise get a huge raw weight
         * that ranks nothing and extrapolates wildly across tasks (the task's level) */
        scale[j] = used[j] ? (sqrt(var) > COSTMODEL_SCALE_MIN ? sqrt(var) : COSTMODEL_SCALE_MIN) : 1;
    }
    for (int a = 0; a < F; ++a) {
        for (int c = 0; c < F; ++c)
            A[a * F + c] = used[a] && used[c] ? s->gram[a][c] / (n * scale[a] * scale[c]) : 0;
        A[a * F + a] += lambda + (used[a] ? 0 : 1);
        b[a] = used[a] ? s->xr[a] / (n * scale[a]) : 0;
    }
    if (cholesky_solve(A, b, F) != 0)
        return -1;
    double intercept = s->sr / n;
    for (int j = 0; j < F; ++j) {
        double w = used[j] ? b[j] : 0;
        if (!isfinite(w))
            return -1;
        if (w > WEIGHT_MAX)
            w = WEIGHT_MAX;
        if (w < -WEIGHT_MAX)
            w = -WEIGHT_MAX;
        m->w[j] = w;
        m->scale[j] = scale[j] > WEIGHT_MAX ? WEIGHT_MAX : scale[j];
        m->mean[j] = s->sx[j] / n;
        /* the mean residual after w . z, with z taken at the training mean (= 0) */
    }
    if (!isfinite(intercept))
        return -1;
    m->intercept = intercept > CORR_MAX ? CORR_MAX : intercept < -CORR_MAX ? -CORR_MAX : intercept;
    m->lambda = lambda;
    m->records = (uint32_t)n;
    m->tasks = (uint32_t)s->tasks;
    m->trained = 1;
    return 0;
}

/* ---- records ------------------------------------------------------------------ */

bool costmodel_task_equal(const search_task *a, const search_task *b)
{
    if (!costmodel_shape_equal(a, b))
        return false;
    return a->weights == b->weights && a->rows_log2 == b->rows_log2 && a->groups_log2 == b->groups_log2 &&
           a->longest_log2 == b->longest_log2 && a->mean_log2 == b->mean_log2 &&
           a->none_quarters == b->none_quarters && a->ranks_differ == b->ranks_differ;
}

bool costmodel_shape_equal(const search_task *a, const search_task *b)
{
    if (a->op != b->op || a->dtype != b->dtype || a->d_in != b->d_in || a->num_slices != b->num_slices ||
        a->max_rank != b->max_rank)
        return false;
    for (int i = 0; i < a->num_slices && i < SEARCH_MAX_SLICES; ++i)
        if (a->d_out[i] != b->d_out[i])
            return false;
    return true;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

bool costmodel_record_usable(const search_target *g, const search_record *r, double *log_us, double *f)
{
    if (!r || r->error_no != SEARCH_ERR_OK || r->ncosts < 1 || r->ncosts > SEARCH_RECORD_MAX_COSTS)
        return false;
    if (!costmodel_same_target(g, &r->target))
        return false;
    double c[SEARCH_RECORD_MAX_COSTS];
    for (int i = 0; i < r->ncosts; ++i) {
        c[i] = r->costs_us[i];
        if (!isfinite(c[i]) || !(c[i] > 0))
            return false;
    }
    qsort(c, (size_t)r->ncosts, sizeof c[0], cmp_double);
    double med = r->ncosts % 2 ? c[r->ncosts / 2] : 0.5 * (c[r->ncosts / 2 - 1] + c[r->ncosts / 2]);
    double tmp[COSTMODEL_NFEAT];
    if (costmodel_features(&r->task, g, &r->sched, f ? f : tmp) != 0)
        return false;
    *log_us = log(med);
    return true;
}

/* ---- training ------------------------------------------------------------------ */

int costmodel_train(costmodel *m, const search_record *recs, size_t n, char *why, size_t why_len)
{
    if (!m || (!recs && n) || m->version != COSTMODEL_VERSION || !costmodel_target_valid(&m->target))
        return failf(why, why_len, "costmodel_train: NULL or uninitialized argument");
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    double (*x)[COSTMODEL_NFEAT] = malloc((n ? n : 1) * sizeof *x);
    double *r = malloc((n ? n : 1) * sizeof *r);
    char *done = calloc(n ? n : 1, 1);
    if (!idx || !x || !r || !done) {
        free(idx), free(x), free(r), free(done);
        return failf(why, why_len, "costmodel_train: out of memory");
    }
    /* usable records, then tasks in order of first appearance */
    size_t nu = 0;
    for (size_t i = 0; i < n; ++i) {
        double ly;
        if (costmodel_record_usable(&m->target, &recs[i], &ly, x[nu])) {
            r[nu] = ly - x[nu][COSTMODEL_F_LOG2_ANALYTICAL_US] * log(2.0);
            idx[nu++] = i;
        }
    }
    costmodel_stats *st = malloc(sizeof *st);
    double (*tx)[COSTMODEL_NFEAT] = malloc((nu ? nu : 1) * sizeof *tx);
    double *tr = malloc((nu ? nu : 1) * sizeof *tr);
    if (!st || !tx || !tr) {
        free(idx), free(x), free(r), free(done), free(st), free(tx), free(tr);
        return failf(why, why_len, "costmodel_train: out of memory");
    }
    costmodel_stats_zero(st);
    int used = 0;
    for (size_t i = 0; i < nu; ++i) {
        if (done[i])
            continue;
        int k = 0;
        for (size_t j = i; j < nu; ++j) {
            if (done[j] || !costmodel_task_equal(&recs[idx[i]].task, &recs[idx[j]].task))
                continue;
            done[j] = 1;
            memcpy(tx[k], x[j], sizeof tx[k]);
            tr[k++] = r[j];
        }
        if (k >= 2) {
            costmodel_stats_add_task(st, (const double (*)[COSTMODEL_NFEAT])tx, tr, k);
            used += k;
        }
    }
    costmodel next = *m;
    int rc = used >= 2 ? costmodel_stats_solve(st, COSTMODEL_RIDGE_LAMBDA, &next) : -1;
    free(idx), free(x), free(r), free(done), free(st), free(tx), free(tr);
    if (rc != 0) {
        return failf(why, why_len, "%zu of %zu records are usable for %s (ok, timed, legal) and no task has two of them",
                     nu, n, m->tag);
    }
    *m = next;
    return used;
}

/* ---- the byte image -------------------------------------------------------------- */

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void put_u32(unsigned char **p, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        (*p)[i] = (unsigned char)(v >> (8 * i));
    *p += 4;
}

static void put_u64(unsigned char **p, uint64_t v)
{
    for (int i = 0; i < 8; ++i)
        (*p)[i] = (unsigned char)(v >> (8 * i));
    *p += 8;
}

static void put_f64(unsigned char **p, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put_u64(p, u);
}

static uint32_t get_u32(const unsigned char **p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
        v |= (uint32_t)(*p)[i] << (8 * i);
    *p += 4;
    return v;
}

static uint64_t get_u64(const unsigned char **p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
        v |= (uint64_t)(*p)[i] << (8 * i);
    *p += 8;
    return v;
}

static double get_f64(const unsigned char **p)
{
    uint64_t u = get_u64(p);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

static bool finite_in(double v, double lo, double hi)
{
    return isfinite(v) && v >= lo && v <= hi;
}

/* The rules an image must pass; also what encode refuses to write. */
static bool model_valid(const costmodel *m, char *why, size_t why_len)
{
    if (m->version != COSTMODEL_VERSION)
        return search_say(why, why_len, "cost model version %u is not %u", m->version, COSTMODEL_VERSION), false;
    if (m->trained > 1)
        return search_say(why, why_len, "trained flag %u is not 0 or 1", m->trained), false;
    if (!costmodel_target_valid(&m->target))
        return search_say(why, why_len, "GPU fingerprint out of range"), false;
    if (!finite_in(m->lambda, 0, WEIGHT_MAX) || !finite_in(m->intercept, -CORR_MAX, CORR_MAX))
        return search_say(why, why_len, "lambda or intercept out of range"), false;
    for (int j = 0; j < COSTMODEL_NFEAT; ++j) {
        if (!finite_in(m->mean[j], -WEIGHT_MAX, WEIGHT_MAX) || !finite_in(m->w[j], -WEIGHT_MAX, WEIGHT_MAX) ||
            !finite_in(m->scale[j], 1e-300, WEIGHT_MAX))
            return search_say(why, why_len, "feature %d (%s): mean, scale or weight out of range", j,
                              costmodel_feature_name(j)),
                   false;
        if (!m->trained && (m->w[j] != 0 || m->mean[j] != 0 || m->scale[j] != 1))
            return search_say(why, why_len, "an untrained model has weights"), false;
    }
    if (!m->trained && (m->records || m->tasks || m->lambda != 0 || m->intercept != 0))
        return search_say(why, why_len, "an untrained model has training counts"), false;
    if (m->tasks > m->records)
        return search_say(why, why_len, "%u tasks in %u records", m->tasks, m->records), false;
    return true;
}

size_t costmodel_encode(const costmodel *m, void *buf, size_t len)
{
    if (!m || !model_valid(m, NULL, 0))
        return 0;
    if (!buf || len < COSTMODEL_ENCODED_SIZE)
        return COSTMODEL_ENCODED_SIZE;
    unsigned char *p = buf, *start = buf;
    memcpy(p, "DOPM", 4);
    p += 4;
    put_u32(&p, m->version);
    put_u32(&p, COSTMODEL_NFEAT);
    put_u32(&p, m->trained);
    put_u32(&p, (uint32_t)m->target.cc_major);
    put_u32(&p, (uint32_t)m->target.cc_minor);
    put_u32(&p, (uint32_t)m->target.sm_count);
    put_u64(&p, (uint64_t)m->target.l2_bytes);
    put_u32(&p, (uint32_t)m->target.smem_per_block);
    put_u32(&p, m->records);
    put_u32(&p, m->tasks);
    put_f64(&p, m->lambda);
    put_f64(&p, m->intercept);
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        put_f64(&p, m->mean[j]);
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        put_f64(&p, m->scale[j]);
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        put_f64(&p, m->w[j]);
    put_u64(&p, fnv1a(start, (size_t)(p - start)));
    return COSTMODEL_ENCODED_SIZE;
}

int costmodel_decode(const void *buf, size_t len, costmodel *m, char *why, size_t why_len)
{
    if (!m)
        return failf(why, why_len, "costmodel_decode: model is NULL");
    memset(m, 0, sizeof *m);
    if (!buf)
        return failf(why, why_len, "costmodel_decode: buffer is NULL");
    if (len < 12 || memcmp(buf, "DOPM", 4) != 0)
        return failf(why, why_len, "not a cost model (no \"DOPM\" magic in %zu bytes)", len);
    const unsigned char *p = (const unsigned char *)buf + 4;
    uint32_t version = get_u32(&p), nfeat = get_u32(&p);
    if (version != COSTMODEL_VERSION)
        return failf(why, why_len, "cost model version %u is not supported (this is %u)", version, COSTMODEL_VERSION);
    if (nfeat != COSTMODEL_NFEAT)
        return failf(why, why_len, "cost model has %u features, this version has %d", nfeat, COSTMODEL_NFEAT);
    if (len != COSTMODEL_ENCODED_SIZE)
        return failf(why, why_len, "cost model image is %zu bytes, expected %d", len, (int)COSTMODEL_ENCODED_SIZE);
    const unsigned char *start = buf;
    uint64_t sum = fnv1a(start, COSTMODEL_ENCODED_SIZE - 8);
    const unsigned char *q = start + COSTMODEL_ENCODED_SIZE - 8;
    if (get_u64(&q) != sum)
        return failf(why, why_len, "cost model checksum mismatch");
    costmodel t;
    memset(&t, 0, sizeof t);
    t.version = version;
    t.trained = get_u32(&p);
    t.target.cc_major = (int32_t)get_u32(&p);
    t.target.cc_minor = (int32_t)get_u32(&p);
    t.target.sm_count = (int32_t)get_u32(&p);
    t.target.l2_bytes = (int64_t)get_u64(&p);
    t.target.smem_per_block = (int32_t)get_u32(&p);
    t.records = get_u32(&p);
    t.tasks = get_u32(&p);
    t.lambda = get_f64(&p);
    t.intercept = get_f64(&p);
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        t.mean[j] = get_f64(&p);
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        t.scale[j] = get_f64(&p);
    for (int j = 0; j < COSTMODEL_NFEAT; ++j)
        t.w[j] = get_f64(&p);
    if (!model_valid(&t, why, why_len))
        return -1;
    search_target_tag(&t.target, t.tag, sizeof t.tag);
    *m = t;
    return 0;
}
