/*
 * dop tune -- measures schedules on this machine's GPU and stores the best
 * one of every (shape, layout class) for dispatch.
 *
 * Tasks: every shape of the models (--model) or --shape lists, rank, dtype,
 * layout and row count of the workload grid, reduced to distinct layout
 * classes (two row counts or layouts of one class are one task). For each
 * task, in order:
 *
 *   1. the evolutionary search (search/search_evo.h) proposes schedules,
 *      ranked by the cost model (costmodel/costmodel.h);
 *   2. the round's candidates are compiled with NVRTC in parallel on the
 *      host (runtime_kernels_prepare on a background thread) while the GPU
 *      measures them in order (runtime_measure.h): each is checked against
 *      the CPU reference first (a wrong one is recorded as wrong_result and
 *      can never win), then timed with CUDA-graph replays, weights rotated so
 *      the working set exceeds the L2 unless --warm;
 *   3. every measurement becomes a tuning record (search_record.h), appended
 *      to --records, and the cost model is retrained on all records of this
 *      GPU before the next round;
 *   4. the best schedule goes into the cache's schedules database under the
 *      task's performance key (origin "tuned"), where dispatch finds it.
 *
 * The first candidate of every task is the dispatch heuristic's pick, so the
 * table shows what tuning gained over it. With --exhaustive, tasks whose
 * space holds at most --max-space schedules are first measured entirely (the
 * oracle); the search then runs against those measurements (no second timing
 * of a schedule) and the table shows how far its pick is from the oracle.
 * The model is stored in the cache at the end.
 */
#define _GNU_SOURCE
#include "dop_tune.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "costmodel.h"
#include "costmodel_cache.h"
#include "dop_args.h"
#include "dop_warm.h"
#include "runtime_measure.h"
#include "search_evo.h"
#include "search_record.h"
#include "search_space.h"

typedef struct tune_task {
    runtime_case c; /* a representative call of the class */
    runtime_perf_shape ps;
    runtime_layout_class cls;
    search_task task;
    search_problem prob;
    char label[160];
    long space;
    /* results */
    search_schedule heur, best;
    double heur_us, best_us, oracle_us, seconds;
    double setup_s, wait_s, measure_s; /* of seconds: data sets and reference, waiting for NVRTC, on the GPU */
    int measured;
} tune_task;

/* Exhaustive measurements of the current task: schedule -> time. */
typedef struct oracle_map {
    search_schedule *key;
    double *us;
    size_t cap, n;
} oracle_map;

typedef struct tune_state {
    dop_context *ctx;
    search_target target;
    costmodel model;
    int model_trained;
    search_record *recs; /* what the model trains on: loaded + measured by the search */
    size_t nrecs, cap;
    FILE *rf;
    int threads, warm, quiet_bar;
    double compile_timeout; /* seconds a round waits for a module once nothing else is left */
    long timeouts;
    kernels_dtype kd;
    tune_task *cur;
    runtime_bench *bench;
    oracle_map *oracle; /* non-NULL: answer from it instead of the GPU */
    /* progress */
    double t0;
    long done_measures, total_measures;
    int task_index, ntasks;
    int fatal;
} tune_state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t sched_hash(const search_schedule *s)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *s; ++i)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int oracle_put(oracle_map *m, const search_schedule *s, double us)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? 2 * m->cap : 1024;
        oracle_map nm = {calloc(nc, sizeof *nm.key), calloc(nc, sizeof *nm.us), nc, 0};
        if (!nm.key || !nm.us) {
            free(nm.key);
            free(nm.us);
            return -1;
        }
        for (size_t i = 0; i < m->cap; ++i)
            if (m->key[i].version)
                oracle_put(&nm, &m->key[i], m->us[i]);
        free(m->key);
        free(m->us);
        *m = nm;
    }
    size_t i = sched_hash(s) & (m->cap - 1);
    while (m->key[i].version && memcmp(&m->key[i], s, sizeof *s))
        i = (i + 1) & (m->cap - 1);
    if (!m->key[i].version)
        m->n++;
    m->key[i] = *s;
    m->us[i] = us;
    return 0;
}

static int oracle_get(const oracle_map *m, const search_schedule *s, double *us)
{
    if (!m->cap)
        return -1;
    size_t i = sched_hash(s) & (m->cap - 1);
    while (m->key[i].version) {
        if (!memcmp(&m->key[i], s, sizeof *s)) {
            *us = m->us[i];
            return 0;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static int add_record(tune_state *T, const search_record *r)
{
    if (T->nrecs == T->cap) {
        size_t nc = T->cap ? 2 * T->cap : 1024;
        search_record *n = realloc(T->recs, nc * sizeof *n);
        if (!n)
            return -1;
        T->recs = n;
        T->cap = nc;
    }
    T->recs[T->nrecs++] = *r;
    return 0;
}

static void progress(tune_state *T, int force)
{
    static double last;
    double t = now_s();
    if (!force && t - last < 0.25)
        return;
    last = t;
    double el = t - T->t0;
    long done = T->done_measures, total = T->total_measures > done ? T->total_measures : done + 1;
    double eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    if (!T->quiet_bar) {
        int w = 30, f = (int)(w * done / total);
        char bar[32];
        for (int i = 0; i < w; ++i)
            bar[i] = i < f ? '=' : (i == f ? '>' : ' ');
        bar[w] = 0;
        fprintf(stderr, "\r[%s] task %d/%d  %ld/%ld measured  %4.0fs elapsed  ETA %4.0fs  %-40.40s", bar,
                T->task_index + 1, T->ntasks, done, total, el, eta, T->cur ? T->cur->label : "");
        fflush(stderr);
    }
}

static void make_record(tune_state *T, const search_schedule *s, const runtime_measurement *m, double seconds,
                        search_record *r)
{
    search_record_init(r);
    r->task = T->cur->task;
    r->target = T->target;
    r->sched = *s;
    r->error_no = m->error_no;
    r->all_cost_s = seconds;
    r->timestamp = (int64_t)time(NULL);
    r->compiled = m->error_no != SEARCH_ERR_COMPILE;
    r->ran = m->error_no == SEARCH_ERR_OK || m->error_no == SEARCH_ERR_WRONG_RESULT ||
             m->error_no == SEARCH_ERR_DEVICE || m->error_no == SEARCH_ERR_TIMEOUT;
    r->matched = m->error_no == SEARCH_ERR_OK;
    if (m->error_no == SEARCH_ERR_OK) {
        r->costs_us[0] = m->us;
        r->ncosts = 1;
    }
    if (r->compiled)
        for (int e = 0; e < SEARCH_ENTRY_COUNT; ++e)
            r->registers[e] = m->registers[e] <= 255 ? m->registers[e] : 255;
    r->max_error = m->max_error;
}

static void write_record(tune_state *T, const search_record *r)
{
    if (!T->rf)
        return;
    char line[SEARCH_RECORD_LINE_MAX];
    if (search_record_write(r, line, sizeof line) > 0)
        fprintf(T->rf, "%s\n", line);
}

/* A background compile of one round's modules. Rounds do not wait for a slow
 * compile: its thread is kept and joined at the end of the run. */
typedef struct prep_arg {
    dop_context *ctx;
    runtime_module_req *req;
    int n, threads;
    pthread_t tid;
    struct prep_arg *next;
    struct ahead *ahead; /* optional: first add the model's best modules of a task (req has room) */
} prep_arg;

/* The AHEAD_TOP modules of a task's space the model predicts fastest (the first round's picks,
 * mostly), found on the compile thread: a whole space takes ~0.1 s to predict. */
enum { AHEAD_TOP = 16 };
typedef struct ahead {
    costmodel model; /* a copy: the run retrains its own meanwhile */
    search_task task;
    search_problem prob;
    kernels_dtype kd;
    int max_rank, n;
    double cost[AHEAD_TOP];
    search_schedule key[AHEAD_TOP]; /* module keys, best first */
} ahead;

static int ahead_fn(const search_schedule *s, void *user)
{
    ahead *a = user;
    double c = costmodel_predict_us(&a->model, &a->task, s);
    if (!isfinite(c) || (a->n == AHEAD_TOP && c >= a->cost[AHEAD_TOP - 1]))
        return 0;
    search_schedule k = search_schedule_module_key(s);
    int at = a->n;
    for (int i = 0; i < a->n; ++i)
        if (!memcmp(&a->key[i], &k, sizeof k)) {
            if (c >= a->cost[i])
                return 0;
            at = i; /* the same module, predicted faster: moves up */
            break;
        }
    if (at == a->n && a->n < AHEAD_TOP)
        a->n++;
    else if (at == a->n)
        at = AHEAD_TOP - 1; /* drops the slowest */
    while (at > 0 && a->cost[at - 1] > c) {
        a->cost[at] = a->cost[at - 1];
        a->key[at] = a->key[at - 1];
        at--;
    }
    a->cost[at] = c;
    a->key[at] = k;
    return 0;
}

static prep_arg *g_preps;

static void *prep_thread(void *p)
{
    prep_arg *a = p;
    if (a->ahead) {
        search_space_enumerate(&a->ahead->prob, ahead_fn, a->ahead);
        for (int i = 0; i < a->ahead->n; ++i)
            a->req[a->n++] = (runtime_module_req){a->ahead->kd, a->ahead->max_rank, a->ahead->key[i]};
    }
    runtime_kernels_prepare(a->ctx, a->req, a->n, a->threads); /* failures are measured (and recorded) one by one */
    return NULL;
}

static void join_preps(void)
{
    while (g_preps) {
        prep_arg *a = g_preps;
        g_preps = a->next;
        pthread_join(a->tid, NULL);
        free(a->req);
        free(a->ahead);
        free(a);
    }
}

/* Compiles the n modules of req (taken over) on a thread of its own, joined at the end of the run;
 * 0, or -1 (req freed) when the thread could not start. */
static int start_prep(tune_state *T, runtime_module_req *req, int n, ahead *ah)
{
    prep_arg *pa = calloc(1, sizeof *pa);
    if (!pa) {
        free(req);
        free(ah);
        return -1;
    }
    *pa = (prep_arg){T->ctx, req, n, T->threads, 0, NULL, ah};
    if (pthread_create(&pa->tid, NULL, prep_thread, pa) != 0) {
        free(req);
        free(ah);
        free(pa);
        return -1;
    }
    pa->next = g_preps;
    g_preps = pa;
    return 0;
}

/* Search parameters of task i: the run's, with a seed of the task's own (so that tasks do not
 * all explore the same draws). */
static search_evo_params task_params(const search_evo_params *run, int i)
{
    search_evo_params q = *run;
    q.seed = run->seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    return q;
}

/* What tasks i and i+1 will compile: their exploration draws, the next task's heuristic pick and
 * (with a trained model) the modules the model predicts fastest for task i; started now, they
 * compile while this task sets up and measures its heuristic pick. */
static void compile_ahead(tune_state *T, const tune_task *tasks, int nt, int i, const search_evo_params *run)
{
    enum { PER_TASK = 16 };
    runtime_module_req *req = calloc(2 * PER_TASK + 1 + AHEAD_TOP, sizeof *req);
    ahead *ah = T->model_trained ? calloc(1, sizeof *ah) : NULL;
    if (!req) {
        free(ah);
        return;
    }
    if (ah) {
        ah->model = T->model;
        ah->task = tasks[i].task;
        ah->prob = tasks[i].prob;
        ah->kd = T->kd;
        ah->max_rank = tasks[i].c.max_rank;
    }
    int n = 0;
    for (int j = i; j < nt && j <= i + 1; ++j) {
        search_evo_params q = task_params(run, j);
        search_schedule ex[PER_TASK];
        int k = search_evo_exploration(&tasks[j].prob, &q, ex, PER_TASK);
        for (int e = 0; e < k; ++e)
            req[n++] = (runtime_module_req){T->kd, tasks[j].c.max_rank, ex[e]};
    }
    if (i + 1 < nt) {
        search_schedule h;
        runtime_pick_for_class(&T->ctx->info, RUNTIME_OP_APPLY, &tasks[i + 1].ps, &tasks[i + 1].cls, &h);
        req[n++] = (runtime_module_req){T->kd, tasks[i + 1].c.max_rank, h};
    }
    if (n == 0 && !ah) {
        free(req);
        return;
    }
    start_prep(T, req, n, ah);
}

/*
 * Measures n schedules of the current task on the GPU while they compile:
 * each is measured as soon as its module is loaded; one still compiling
 * compile_timeout seconds after the others are done is recorded as a timeout
 * (its compile goes on, for later rounds and runs).
 */
static int measure_gpu(tune_state *T, const search_schedule *s, int n, double *cost, search_record *out)
{
    runtime_module_req *req = calloc((size_t)n, sizeof *req);
    char *done = calloc((size_t)n, 1);
    if (!req || !done) {
        free(req), free(done);
        return -1;
    }
    for (int i = 0; i < n; ++i)
        req[i] = (runtime_module_req){T->kd, T->cur->c.max_rank, s[i]};
    int threaded = start_prep(T, req, n, NULL) == 0;
    int rc = 0, left = n;
    double idle_since = now_s(), t_round = now_s();
    while (left > 0 && rc == 0) {
        int pick = -1;
        for (int i = 0; i < n && pick < 0; ++i)
            if (!done[i] && (!threaded || runtime_kernel_loaded(T->ctx, T->kd, T->cur->c.max_rank, &s[i])))
                pick = i;
        if (pick < 0) {
            if (now_s() - idle_since < T->compile_timeout) {
                struct timespec ts = {0, 2000000};
                double w0 = now_s();
                nanosleep(&ts, NULL);
                T->cur->wait_s += now_s() - w0;
                continue;
            }
            for (int i = 0; i < n; ++i) /* the rest timed out */
                if (!done[i]) {
                    runtime_measurement m;
                    memset(&m, 0, sizeof m);
                    m.error_no = SEARCH_ERR_TIMEOUT;
                    m.max_error = -1;
                    cost[i] = INFINITY;
                    make_record(T, &s[i], &m, now_s() - t_round, &out[i]);
                    out[i].compiled = false;
                    out[i].ran = false;
                    memset(out[i].registers, 0, sizeof out[i].registers);
                    done[i] = 1;
                    left--;
                    T->done_measures++;
                    T->timeouts++;
                }
            break;
        }
        double t0 = now_s();
        runtime_measurement m;
        dop_status st = runtime_bench_measure(T->ctx, T->bench, &s[pick], 1, &m);
        if (st != DOP_OK) {
            fprintf(stderr, "\ndop tune: measuring: %s: %s\n", dop_status_string(st), dop_context_error(T->ctx));
            T->fatal = 1;
            rc = -1;
            break;
        }
        cost[pick] = m.error_no == SEARCH_ERR_OK ? m.us : INFINITY;
        T->cur->measure_s += now_s() - t0; /* includes a compile the unthreaded path does here */
        make_record(T, &s[pick], &m, now_s() - t0 + m.compile_s, &out[pick]);
        done[pick] = 1;
        left--;
        idle_since = now_s();
        T->done_measures++;
        progress(T, 0);
    }
    free(done);
    return rc;
}

static void retrain(tune_state *T)
{
    costmodel m;
    costmodel_init(&m, &T->target);
    char why[256];
    if (costmodel_train(&m, T->recs, T->nrecs, why, sizeof why) > 0) {
        T->model = m;
        T->model_trained = 1;
    }
}

static int cb_predict(void *user, const search_schedule *s, int n, double *cost)
{
    tune_state *T = user;
    for (int i = 0; i < n; ++i)
        cost[i] = costmodel_predict_us(&T->model, &T->cur->task, &s[i]);
    return 0;
}

static int cb_measure(void *user, const search_schedule *s, int n, double *cost)
{
    tune_state *T = user;
    search_record *r = calloc((size_t)n, sizeof *r);
    if (!r)
        return -1;
    int rc = 0;
    if (T->oracle) {
        for (int i = 0; i < n; ++i) {
            double us;
            cost[i] = oracle_get(T->oracle, &s[i], &us) == 0 ? us : INFINITY;
            runtime_measurement m;
            memset(&m, 0, sizeof m);
            m.error_no = isfinite(cost[i]) ? SEARCH_ERR_OK : SEARCH_ERR_UNKNOWN;
            m.us = cost[i];
            m.max_error = -1;
            make_record(T, &s[i], &m, 0, &r[i]);
            T->done_measures++;
        }
        progress(T, 0);
    } else {
        rc = measure_gpu(T, s, n, cost, r);
    }
    if (rc == 0) {
        for (int i = 0; i < n; ++i) {
            if (!T->oracle)
                write_record(T, &r[i]);
            if (add_record(T, &r[i])) {
                rc = -1;
                break;
            }
            T->cur->measured++;
        }
        if (T->rf)
            fflush(T->rf);
        retrain(T);
    }
    free(r);
    return rc;
}

/* Measures every schedule of the current task's space into *m (and the records file). */
typedef struct enum_buf {
    search_schedule *s;
    long n, cap;
} enum_buf;

static int collect(const search_schedule *s, void *user)
{
    enum_buf *b = user;
    if (b->n == b->cap) {
        long nc = b->cap ? 2 * b->cap : 4096;
        search_schedule *ns = realloc(b->s, (size_t)nc * sizeof *ns);
        if (!ns)
            return 1;
        b->s = ns;
        b->cap = nc;
    }
    b->s[b->n++] = *s;
    return 0;
}

static int measure_space(tune_state *T, oracle_map *m)
{
    enum_buf b = {0};
    if (search_space_enumerate(&T->cur->prob, collect, &b) != T->cur->space) {
        free(b.s);
        return -1;
    }
    enum { CHUNK = 256 };
    double timeout = T->compile_timeout;
    T->compile_timeout = 1e9; /* the oracle waits for every compile */
    double cost[CHUNK];
    search_record rec[CHUNK];
    double best = INFINITY;
    for (long i = 0; i < b.n; i += CHUNK) {
        int n = b.n - i < CHUNK ? (int)(b.n - i) : CHUNK;
        if (measure_gpu(T, b.s + i, n, cost, rec)) {
            free(b.s);
            T->compile_timeout = timeout;
            return -1;
        }
        for (int j = 0; j < n; ++j) {
            write_record(T, &rec[j]);
            if (oracle_put(m, &b.s[i + j], cost[j])) {
                free(b.s);
                return -1;
            }
            if (cost[j] < best)
                best = cost[j];
        }
        if (T->rf)
            fflush(T->rf);
    }
    T->compile_timeout = timeout;
    T->cur->oracle_us = best;
    free(b.s);
    return 0;
}

/* ---- --store-only ---------------------------------------------------------------------- */

/* Whether record task r is for the run's selection: the perf shape (op, dtype, weights, d_in,
 * slices, rank) and the row bucket of one of the run's tasks. The layout class is not compared:
 * the classes of the random layouts (mixed) depend on each task's seed, which depends on its
 * place in the run, so a run with other arguments draws other classes than the tuning run did. */
static int selected(const search_task *r, const tune_task *tasks, int nt)
{
    for (int i = 0; i < nt; ++i) {
        const search_task *t = &tasks[i].task;
        if (r->op == t->op && r->dtype == t->dtype && r->weights == t->weights && r->num_slices == t->num_slices &&
            r->d_in == t->d_in && !memcmp(r->d_out, t->d_out, sizeof r->d_out) && r->max_rank == t->max_rank &&
            r->rows_log2 == t->rows_log2)
            return i;
    }
    return -1;
}

/* Stores the best recorded schedule of every layout class the records hold for the run's
 * selection (every class: see selected) and compiles their modules. 0 or 1 (the message printed). */
static int store_recorded(dop_context *ctx, tune_state *T, const tune_task *tasks, int nt)
{
    /* per distinct record task: its best record and the run's task it was selected by */
    struct pick {
        size_t rec;
        int task;
    } *best = malloc((T->nrecs ? T->nrecs : 1) * sizeof *best);
    runtime_module_req *req = malloc((T->nrecs ? T->nrecs : 1) * sizeof *req);
    if (!best || !req) {
        free(best);
        free(req);
        fprintf(stderr, "dop tune: out of memory\n");
        return 1;
    }
    size_t nb = 0;
    for (size_t r = 0; r < T->nrecs; ++r) {
        const search_record *rec = &T->recs[r];
        int ti = rec->error_no == SEARCH_ERR_OK && rec->ncosts >= 1 ? selected(&rec->task, tasks, nt) : -1;
        if (ti < 0)
            continue;
        size_t j = 0;
        while (j < nb && memcmp(&T->recs[best[j].rec].task, &rec->task, sizeof rec->task))
            ++j;
        if (j == nb)
            best[nb++] = (struct pick){r, ti};
        else if (rec->costs_us[0] < T->recs[best[j].rec].costs_us[0])
            best[j].rec = r;
    }
    int rc = 0, nreq = 0;
    for (size_t j = 0; j < nb && rc == 0; ++j) {
        const search_record *rec = &T->recs[best[j].rec];
        const tune_task *like = &tasks[best[j].task];
        runtime_perf_shape ps = like->ps; /* the record's shape, rows of the same bucket */
        runtime_layout_class cls = {rec->task.rows_log2, rec->task.groups_log2, rec->task.longest_log2,
                                    rec->task.mean_log2, rec->task.none_quarters, rec->task.ranks_differ};
        if (runtime_store_tuned(ctx, RUNTIME_OP_APPLY, &ps, &cls, &rec->sched, (float)rec->costs_us[0]) != DOP_OK) {
            fprintf(stderr, "dop tune: storing a schedule of %s: %s\n", like->label, dop_context_error(ctx));
            rc = 1;
            break;
        }
        req[nreq++] = (runtime_module_req){T->kd, ps.max_rank, rec->sched};
    }
    double t0 = now_s();
    if (rc == 0 && nreq && runtime_kernels_prepare(ctx, req, nreq, T->threads) != DOP_OK)
        fprintf(stderr, "dop tune: compiling: %s\n", dop_context_error(ctx));
    if (rc == 0)
        printf("stored the best recorded schedule of %d layout classes (for the %d classes of these arguments); "
               "their modules compiled in %.1f s\n",
               nreq, nt, now_s() - t0);
    free(best);
    free(req);
    return rc;
}

/* ---- tasks -------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dop tune [--model llama-2-7b|llama-3-8b|mistral-7b|grid]... [--shape DIN:DOUT[,DOUT...]]...\n"
            "                [--ranks 16,...] [--dtype f16|bf16] [--layouts distinct,uniform,skewed,identical,mixed]\n"
            "                [--rows 1,8,32,64,128,256,1024,4096] [--budget 64] [--records FILE] [--cache FILE]\n"
            "                [--seed N] [--threads N] [--compile-timeout S] [--warm] [--exhaustive [--max-space N]]\n"
            "                [--no-store | --store-only]\n"
            "  default: --model llama-2-7b --ranks 16 --dtype f16, every layout and row count of the workload grid;\n"
            "  records are appended to --records (default dop-tune.jsonl); the best schedule of every layout class\n"
            "  goes into the cache for dispatch (not with --no-store). --store-only measures nothing: it stores the\n"
            "  best schedule --records holds for every layout class of the chosen shapes, ranks, dtype and row\n"
            "  counts (of any layout) and compiles its module.\n");
}

int dop_tune_command(int argc, char **argv)
{
    dop_model_shape shapes[64];
    int nshapes = 0, ranks[8] = {16}, nranks = 1, rows[16] = {1, 8, 32, 64, 128, 256, 1024, 4096}, nrows = 8;
    int layouts[RUNTIME_WL_COUNT] = {0, 1, 2, 3, 4}, nlayouts = 5, budget = 64, exhaustive = 0, no_store = 0;
    int store_only = 0;
    long max_space = 10000;
    uint64_t seed = 1;
    dop_dtype dtype = DOP_DTYPE_F16;
    const char *records = "dop-tune.jsonl";
    tune_state T;
    memset(&T, 0, sizeof T);
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    T.threads = nproc > 2 ? (int)nproc - 1 : 1;
    T.compile_timeout = 3;
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE;
    for (int i = 0; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) {
            int n = dop_model_shapes(v, shapes + nshapes, 64 - nshapes);
            if (n < 0) {
                fprintf(stderr, "dop tune: unknown model '%s' (llama-2-7b, llama-3-8b, mistral-7b, grid)\n", v);
                return 2;
            }
            nshapes += n, ++i;
        } else if (!strcmp(a, "--shape") && v) {
            if (nshapes == 64 || dop_parse_shape(v, &shapes[nshapes])) {
                fprintf(stderr, "dop tune: bad --shape '%s' (DIN:DOUT[,DOUT...])\n", v);
                return 2;
            }
            nshapes++, ++i;
        } else if (!strcmp(a, "--ranks") && v) {
            if ((nranks = dop_parse_ints(v, ranks, 8)) < 1) {
                fprintf(stderr, "dop tune: bad --ranks '%s'\n", v);
                return 2;
            }
            ++i;
        } else if (!strcmp(a, "--rows") && v) {
            if ((nrows = dop_parse_ints(v, rows, 16)) < 1) {
                fprintf(stderr, "dop tune: bad --rows '%s'\n", v);
                return 2;
            }
            ++i;
        } else if (!strcmp(a, "--layouts") && v) {
            const char *bad;
            if ((nlayouts = dop_parse_layouts(v, layouts, RUNTIME_WL_COUNT, &bad)) < 1) {
                fprintf(stderr, "dop tune: unknown layout '%s'\n", bad);
                return 2;
            }
            ++i;
        } else if (!strcmp(a, "--dtype") && v) {
            if (!strcmp(v, "f16"))
                dtype = DOP_DTYPE_F16;
            else if (!strcmp(v, "bf16"))
                dtype = DOP_DTYPE_BF16;
            else {
                fprintf(stderr, "dop tune: bad --dtype '%s' (f16, bf16)\n", v);
                return 2;
            }
            ++i;
        } else if (!strcmp(a, "--budget") && v) {
            budget = atoi(v), ++i;
            if (budget < 1 || budget > SEARCH_EVO_MAX_MEASURES) {
                fprintf(stderr, "dop tune: --budget must be 1..%d\n", SEARCH_EVO_MAX_MEASURES);
                return 2;
            }
        } else if (!strcmp(a, "--records") && v) {
            records = v, ++i;
        } else if (!strcmp(a, "--cache") && v) {
            opt.cache_path = v, ++i;
        } else if (!strcmp(a, "--seed") && v) {
            seed = strtoull(v, NULL, 10), ++i;
        } else if (!strcmp(a, "--threads") && v) {
            T.threads = atoi(v) > 0 ? atoi(v) : 1, ++i;
        } else if (!strcmp(a, "--compile-timeout") && v) {
            T.compile_timeout = atof(v), ++i;
        } else if (!strcmp(a, "--max-space") && v) {
            max_space = atol(v), ++i;
        } else if (!strcmp(a, "--warm")) {
            T.warm = 1;
        } else if (!strcmp(a, "--exhaustive")) {
            exhaustive = 1;
        } else if (!strcmp(a, "--store-only")) {
            store_only = 1;
        } else if (!strcmp(a, "--no-store")) {
            no_store = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!nshapes)
        nshapes = dop_model_shapes("llama-2-7b", shapes, 64);
    T.quiet_bar = !isatty(2);
    T.kd = dtype == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16;

    if (dop_context_create(&opt, &T.ctx) != DOP_OK) {
        fprintf(stderr, "dop tune: %s\n", dop_context_error(NULL));
        return 1;
    }
    dop_context *ctx = T.ctx;
    runtime_record_target(&ctx->info, &T.target);
    char tag[128];
    search_target_tag(&T.target, tag, sizeof tag);
    costmodel_init(&T.model, &T.target);

    /* what earlier runs measured on this GPU trains the model from the start */
    int loaded = 0;
    {
        search_record *all;
        size_t nall, bad;
        int rr = dop_read_records(records, 0, &all, &nall, &bad); /* -1: no file yet */
        if (rr == -2) {
            fprintf(stderr, "dop tune: out of memory reading %s\n", records);
            dop_context_destroy(ctx);
            return 1;
        }
        for (size_t k = 0; k < nall; ++k)
            if (costmodel_same_target(&all[k].target, &T.target) && add_record(&T, &all[k]) == 0)
                loaded++;
        free(all);
        if (loaded)
            retrain(&T);
    }
    if (!T.model_trained && ctx->cache) { /* no records here: what an earlier run stored */
        costmodel m;
        if (costmodel_load(ctx->cache, &T.target, &m, NULL, 0) == CACHE_OK && m.trained) {
            T.model = m;
            T.model_trained = 1;
        }
    }
    T.rf = fopen(records, "a");
    if (!T.rf) {
        perror(records);
        dop_context_destroy(ctx);
        return 1;
    }

    /* the tasks: distinct layout classes */
    int maxt = nshapes * nranks * nlayouts * nrows;
    tune_task *tasks = calloc((size_t)maxt, sizeof *tasks);
    int nt = 0;
    /* row counts outermost: decode batches first, prefill chunks (the slow tasks) last */
    for (int ni = 0; ni < nrows; ++ni)
        for (int si = 0; si < nshapes; ++si)
            for (int ri = 0; ri < nranks; ++ri)
                for (int li = 0; li < nlayouts; ++li) {
                    tune_task *t = &tasks[nt];
                    memset(t, 0, sizeof *t);
                    runtime_case *c = &t->c;
                    c->dtype = dtype;
                    c->op = RUNTIME_OP_APPLY;
                    c->workload = (runtime_workload)layouts[li];
                    c->layout_kind = DOP_LAYOUT_SEGMENTS;
                    c->num_rows = rows[ni];
                    c->d_in = shapes[si].d_in;
                    c->num_slices = shapes[si].num_slices;
                    memcpy(c->d_out, shapes[si].d_out, sizeof c->d_out);
                    c->max_rank = ranks[ri];
                    c->hetero_ranks = c->workload == RUNTIME_WL_MIXED;
                    c->device_copies = 1;
                    c->seed = 1000 + (uint64_t)nt;
                    /* the class, as dispatch will compute it for this call */
                    int32_t *rs = malloc((size_t)c->num_rows * sizeof *rs);
                    uint64_t rng = runtime_case_rng(c->seed);
                    runtime_workload_rows(c->workload, c->num_rows, &rng, rs);
                    runtime_layout_summary sum;
                    runtime_summarize_rows(rs, c->num_rows, &sum);
                    free(rs);
                    memset(&t->ps, 0, sizeof t->ps);
                    t->ps.dtype = dtype;
                    t->ps.kdtype = T.kd;
                    t->ps.num_rows = c->num_rows;
                    t->ps.d_in = c->d_in;
                    t->ps.num_slices = c->num_slices;
                    memcpy(t->ps.d_out, c->d_out, sizeof t->ps.d_out);
                    t->ps.max_rank = c->max_rank;
                    runtime_layout_classify(&sum, c->num_rows, c->hetero_ranks, &t->cls);
                    runtime_record_task(RUNTIME_OP_APPLY, &t->ps, &t->cls, &t->task);
                    int dup = 0;
                    for (int j = 0; j < nt && !dup; ++j)
                        dup = !memcmp(&tasks[j].task, &t->task, sizeof t->task);
                    if (dup)
                        continue;
                    runtime_search_problem(&ctx->info, RUNTIME_OP_APPLY, &t->ps, &t->prob);
                    t->space = search_space_count(&t->prob, NULL);
                    snprintf(t->label, sizeof t->label, "%.23s r%d %s %.12s %d", shapes[si].name, c->max_rank,
                             dtype == DOP_DTYPE_BF16 ? "bf16" : "f16", runtime_workload_name(c->workload), c->num_rows);
                    nt++;
                }
    T.ntasks = nt;
    for (int i = 0; i < nt; ++i) {
        T.total_measures += 1 + (budget < tasks[i].space ? budget : tasks[i].space);
        if (exhaustive && tasks[i].space <= max_space)
            T.total_measures += tasks[i].space;
    }
    printf("dop tune on %s (%s): %d shapes x %d ranks x %d layouts x %d row counts = %d layout classes; budget %d "
           "measurements each; %d records of this GPU loaded from %s%s\n",
           ctx->info.name, tag, nshapes, nranks, nlayouts, nrows, nt, budget, loaded, records,
           T.model_trained ? " (model trained on them)" : "");
    fflush(stdout);

    int rc = 0;
    if (store_only) {
        rc = store_recorded(ctx, &T, tasks, nt);
        nt = 0;
    }
    runtime_bench_options bo;
    runtime_bench_options_init(&bo);
    bo.cold = !T.warm;
    search_evo_params ep;
    search_evo_params_init(&ep);
    ep.max_measures = budget;
    ep.seed = seed;
    T.t0 = now_s();
    for (int i = 0; i < nt && !T.fatal; ++i) {
        tune_task *t = &tasks[i];
        T.cur = t;
        T.task_index = i;
        double t0 = now_s();
        search_evo_params tp = task_params(&ep, i);
        if (!(exhaustive && t->space <= max_space)) /* the oracle measures (and compiles) it all anyway */
            compile_ahead(&T, tasks, nt, i, &ep);
        if (runtime_bench_create(ctx, &t->c, &bo, &T.bench) != DOP_OK) {
            fprintf(stderr, "\ndop tune: %s: setting up: %s\n", t->label, dop_context_error(ctx));
            rc = 1;
            break;
        }
        t->setup_s = now_s() - t0;
        oracle_map om = {0};
        if (exhaustive && t->space <= max_space) {
            if (measure_space(&T, &om)) {
                free(om.key);
                free(om.us);
                runtime_bench_free(ctx, T.bench);
                rc = 1;
                break;
            }
            T.oracle = &om;
        } else {
            t->oracle_us = NAN;
        }
        /* seed: the heuristic's pick, and the winners of the tasks of this shape tuned so far */
        search_schedule seeds[4];
        int ns = 0;
        runtime_pick_for_class(&ctx->info, RUNTIME_OP_APPLY, &t->ps, &t->cls, &seeds[ns++]);
        t->heur = seeds[0];
        for (int j = i - 1; j >= 0 && ns < 4; --j)
            if (tasks[j].best_us > 0 && tasks[j].c.max_rank == t->c.max_rank &&
                search_space_legal(&t->prob, &tasks[j].best, NULL, 0))
                seeds[ns++] = tasks[j].best;
        /* the heuristic's pick exactly as dispatch would run it (the search sees it repaired into the space) */
        {
            double c;
            search_record r;
            if (measure_gpu(&T, &t->heur, 1, &c, &r)) {
                rc = 1;
                T.oracle = NULL;
                free(om.key);
                free(om.us);
                runtime_bench_free(ctx, T.bench);
                break;
            }
            write_record(&T, &r);
            add_record(&T, &r);
            t->heur_us = c;
        }
        search_evo_result res;
        char why[256];
        int er = search_evo_run(&t->prob, &tp, seeds, ns, cb_predict, cb_measure, &T, &res, why, sizeof why);
        T.oracle = NULL;
        free(om.key);
        free(om.us);
        runtime_bench_free(ctx, T.bench);
        T.bench = NULL;
        if (er < 0) {
            fprintf(stderr, "\ndop tune: %s: %s\n", t->label, why);
            rc = 1;
            break;
        }
        t->best = res.best;
        t->best_us = er == 0 ? res.best_cost : NAN;
        if (isfinite(t->heur_us) && !(t->best_us <= t->heur_us)) { /* never store worse than dispatch's own pick */
            t->best = t->heur;
            t->best_us = t->heur_us;
            er = 0;
        }
        t->seconds = now_s() - t0;
        if (er == 0 && !no_store &&
            runtime_store_tuned(ctx, RUNTIME_OP_APPLY, &t->ps, &t->cls, &t->best, (float)t->best_us) != DOP_OK) {
            fprintf(stderr, "\ndop tune: %s: %s\n", t->label, dop_context_error(ctx));
            rc = 1;
        }
        if (T.quiet_bar) {
            char bn[128];
            search_schedule_format(&t->best, bn, sizeof bn);
            printf("[%d/%d] %s: %d measured, best %.2f us [%s], heuristic %.2f us, %.1f s (set-up %.1f, waiting "
                   "for NVRTC %.1f, measuring %.1f)\n",
                   i + 1, nt, t->label, t->measured, t->best_us, bn, t->heur_us, t->seconds, t->setup_s, t->wait_s,
                   t->measure_s);
            fflush(stdout);
        }
    }
    progress(&T, 1);
    if (!T.quiet_bar)
        fprintf(stderr, "\n");
    double total = now_s() - T.t0;

    /* the table */
    printf("\n%-34s %7s %5s %10s %10s %7s %10s %7s  %s\n", "task", "space", "meas", "heur_us", "tuned_us", "gain",
           "oracle_us", "tun/or", "tuned schedule");
    double lg = 0, lo = 0, worst = 0;
    int ng = 0, no = 0, within = 0;
    double setup = 0, wait = 0, meas = 0;
    for (int i = 0; i < nt; ++i) {
        tune_task *t = &tasks[i];
        setup += t->setup_s, wait += t->wait_s, meas += t->measure_s;
        if (!t->measured)
            continue;
        char bn[128];
        search_schedule_format(&t->best, bn, sizeof bn);
        double gain = t->heur_us / t->best_us, ro = t->best_us / t->oracle_us;
        printf("%-34s %7ld %5d %10.2f %10.2f %6.2fx %10.2f %7.3f  %s\n", t->label, t->space, t->measured, t->heur_us,
               t->best_us, gain, t->oracle_us, ro, bn);
        if (isfinite(gain) && gain > 0)
            lg += log(gain), ng++;
        if (isfinite(ro) && ro > 0) {
            lo += log(ro), no++;
            within += ro <= 1.05;
            worst = ro > worst ? ro : worst;
        }
    }
    printf("\n%d layout classes tuned in %.1f s (%ld measurements, %ld compile timeouts); geomean gain over the "
           "heuristic %.3fx",
           nt, total, T.done_measures, T.timeouts, ng ? exp(lg / ng) : NAN);
    if (no)
        printf("; against the exhaustive oracle on %d classes: geomean %.3f, worst %.3f, %d within 5%%", no,
               exp(lo / no), worst, within);
    printf("\ntime: %.1f s setting up data sets and references, %.1f s waiting for NVRTC, %.1f s measuring", setup,
           wait, meas);
    printf("\nrecords: %s; ", records);
    /* the model, for cold picks and the next run */
    if (T.model_trained && ctx->cache && !ctx->cache_readonly) {
        char why[256];
        if (costmodel_store(ctx->cache, &T.model, why, sizeof why) == CACHE_OK)
            printf("cost model (trained on %u records, %u tasks) stored in the cache\n", T.model.records,
                   T.model.tasks);
        else
            printf("cost model not stored: %s\n", why);
    } else {
        printf("cost model not stored\n");
    }
    join_preps();
    fclose(T.rf);
    free(T.recs);
    free(tasks);
    dop_context_destroy(ctx);
    return rc;
}
