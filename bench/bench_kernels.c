/*
 * bench_kernels -- times dop_lora_apply on the workload grid (WORKLOADS.md):
 * dop's dispatched schedule against the best single static schedule and the
 * measured-best (oracle) schedule, with the floors.
 *
 *   bench_kernels [--layouts distinct,uniform,skewed,identical,mixed] [--rows 1,8,...]
 *                 [--ranks 16,64] [--dtypes f16,bf16] [--shapes 4096:4096,4096:11008,11008:4096]
 *                 [--replays N] [--verify] [--no-cold] [--json FILE] [--cache FILE | --no-cache]
 *                 [--records FILE] [--static auto|"split rows=.. warps=.. ..."] [--schedule S]
 *
 * Method (runtime_measure.h): one call, everything it enqueues, captured in a
 * CUDA graph; 20 warm-up replays, then samples of 10 back-to-back replays
 * bracketed by events, median. warm: one data set; cold: data sets rotated so
 * the working set is over 2.5x the L2. Floors are measured on the device: HBM
 * floor = bytes that must move (x, y read and written, each adapter in use
 * once) / device-to-device copy bandwidth; launch floor = one empty kernel
 * replayed in a graph; efficiency = max(floors) / dispatched warm time.
 *
 * Columns:
 *   dyn     dispatch's schedule (from the cache dop tune filled, else the heuristic)
 *   static  one schedule for every case: --static S, or with --static auto the
 *           schedule with the best geomean warm time over the cases among the
 *           per-class winners of --records (the best single static schedule)
 *   oracle  the best schedule the records hold for the case's class (measured
 *           by dop tune, exhaustively with --exhaustive), timed again here
 * --schedule forces one schedule in place of dispatch's. --verify checks every
 * timed schedule against the CPU reference first (a wrong one fails the run).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dop_args.h"
#include "runtime_measure.h"
#include "search_record.h"

#define MAX_LIST 16
#define MAX_CAND 512

typedef struct shape {
    int d_in, d_out;
} shape;

typedef struct bcase {
    runtime_case c;
    runtime_bench *warm, *cold;
    search_task task;
    int segs;
    double hbm_bytes;
    /* results */
    double dyn_w, dyn_c, st_w, st_c, or_w, or_c, or_rec;
    char dyn_name[128], or_name[128];
    int failed;
} bcase;

/* The records file: per task, the best measured schedule (ok records of this GPU). */
typedef struct best_rec {
    search_task task;
    search_schedule sched;
    double us;
} best_rec;

static int load_records(const char *path, const search_target *me, best_rec **out, int *nout)
{
    search_record *all;
    size_t nall, bad;
    int rc = dop_read_records(path, 0, &all, &nall, &bad);
    if (rc) {
        if (rc == -1)
            perror(path);
        else
            fprintf(stderr, "bench_kernels: out of memory reading %s\n", path);
        return -1;
    }
    if (bad)
        fprintf(stderr, "bench_kernels: %zu unreadable lines in %s skipped\n", bad, path);
    char tag_me[128], tag[128];
    search_target_tag(me, tag_me, sizeof tag_me);
    best_rec *b = NULL;
    int n = 0, cap = 0;
    for (size_t k = 0; k < nall; ++k) {
        const search_record *r = &all[k];
        search_target_tag(&r->target, tag, sizeof tag);
        if (r->error_no != SEARCH_ERR_OK || r->ncosts < 1 || strcmp(tag, tag_me))
            continue;
        double us = r->costs_us[0];
        int i;
        for (i = 0; i < n; ++i)
            if (!memcmp(&b[i].task, &r->task, sizeof r->task))
                break;
        if (i == n) {
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                best_rec *nb = realloc(b, (size_t)cap * sizeof *nb);
                if (!nb) {
                    free(all);
                    free(b);
                    return -1;
                }
                b = nb;
            }
            b[n].task = r->task;
            b[n].sched = r->sched;
            b[n].us = us;
            n++;
        } else if (us < b[i].us) {
            b[i].sched = r->sched;
            b[i].us = us;
        }
    }
    free(all);
    *out = b;
    *nout = n;
    return 0;
}

static double geomean_ratio(const double *num, const double *den, int n, int *used)
{
    double s = 0;
    int k = 0;
    for (int i = 0; i < n; ++i)
        if (num[i] > 0 && den[i] > 0 && isfinite(num[i]) && isfinite(den[i])) {
            s += log(num[i] / den[i]);
            k++;
        }
    *used = k;
    return k ? exp(s / k) : NAN;
}

/* Times s on b (NULL: dispatch); NAN when it failed (reported). */
static double timed(dop_context *ctx, runtime_bench *b, const search_schedule *s, int verify, const char *what,
                    bcase *bc, char *name, size_t name_len)
{
    if (!b)
        return NAN;
    runtime_measurement m;
    dop_status st = runtime_bench_measure(ctx, b, s, verify, &m);
    if (st != DOP_OK) {
        fprintf(stderr, "bench_kernels: %s: %s: %s\n", what, dop_status_string(st), dop_context_error(ctx));
        exit(1);
    }
    if (name)
        search_schedule_format(&m.used, name, name_len);
    if (m.error_no != SEARCH_ERR_OK) {
        fprintf(stderr, "bench_kernels: %s %s rows %d rank %d: %s: %s\n", what,
                runtime_workload_name(bc->c.workload), bc->c.num_rows, bc->c.max_rank, search_error_name(m.error_no),
                m.message);
        if (m.error_no == SEARCH_ERR_WRONG_RESULT)
            bc->failed = 1;
        return NAN;
    }
    return m.us;
}

static void usage(void)
{
    fprintf(stderr, "usage: see the comment at the top of bench/bench_kernels.c\n");
    exit(2);
}

/* A case's seed (its layout instance and data) from its own parameters, not
 * from its place in the run's list: a case is the same instance in every run
 * that includes it, so runs with different case lists compare like with like.
 * (Before session 11 it was 1000 + the case's index; the mixed layout's
 * instance then changed with the list, and one mixed case measured 283 us in
 * one run and 494 us in another with the same schedule.) */
static uint64_t case_seed(const runtime_case *c)
{
    const uint64_t v[] = {(uint64_t)c->dtype, (uint64_t)c->workload, (uint64_t)c->num_rows,
                          (uint64_t)c->d_in,  (uint64_t)c->d_out[0], (uint64_t)c->max_rank};
    uint64_t h = 1000;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; ++i)
        h = h * 1000003u + v[i];
    return h;
}

int main(int argc, char **argv)
{
    int layouts[RUNTIME_WL_COUNT] = {0, 1, 2, 3, 4}, nlayouts = 5;
    int rows[MAX_LIST] = {1, 8, 32, 64, 128, 256}, nrows = 6;
    int ranks[MAX_LIST] = {16, 64}, nranks = 2;
    dop_dtype dtypes[2] = {DOP_DTYPE_F16}; int ndt = 1;
    shape shapes[MAX_LIST] = {{4096, 4096}};
    int nshapes = 1;
    int replays = 200, verify = 0, cold = 1;
    const char *json = NULL, *force_text = NULL, *static_text = NULL, *records = NULL, *cache = NULL;
    int no_cache = 0;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--layouts") && v) {
            const char *bad;
            if ((nlayouts = dop_parse_layouts(v, layouts, RUNTIME_WL_COUNT, &bad)) < 1) {
                fprintf(stderr, "unknown layout '%s'\n", bad);
                return 2;
            }
            ++i;
        } else if (!strcmp(a, "--rows") && v) {
            if ((nrows = dop_parse_ints(v, rows, MAX_LIST)) < 1)
                usage();
            ++i;
        } else if (!strcmp(a, "--ranks") && v) {
            if ((nranks = dop_parse_ints(v, ranks, MAX_LIST)) < 1)
                usage();
            ++i;
        } else if (!strcmp(a, "--dtypes") && v) {
            ndt = 0;
            if (strstr(v, "f16") == v || strstr(v, ",f16"))
                dtypes[ndt++] = DOP_DTYPE_F16;
            if (strstr(v, "bf16"))
                dtypes[ndt++] = DOP_DTYPE_BF16;
            if (!ndt)
                usage();
            ++i;
        } else if (!strcmp(a, "--shapes") && v) {
            nshapes = 0;
            const char *p = v;
            while (*p && nshapes < MAX_LIST) {
                char *end;
                long di = strtol(p, &end, 10);
                if (*end != ':')
                    usage();
                long dd = strtol(end + 1, &end, 10);
                if (di <= 0 || dd <= 0 || (*end && *end != ','))
                    usage();
                shapes[nshapes++] = (shape){(int)di, (int)dd};
                p = *end ? end + 1 : end;
            }
            ++i;
        } else if (!strcmp(a, "--replays") && v) {
            replays = atoi(v), ++i;
        } else if (!strcmp(a, "--json") && v) {
            json = v, ++i;
        } else if (!strcmp(a, "--records") && v) {
            records = v, ++i;
        } else if (!strcmp(a, "--static") && v) {
            static_text = v, ++i;
        } else if (!strcmp(a, "--schedule") && v) {
            force_text = v, ++i;
        } else if (!strcmp(a, "--cache") && v) {
            cache = v, ++i;
        } else if (!strcmp(a, "--no-cache")) {
            no_cache = 1;
        } else if (!strcmp(a, "--verify")) {
            verify = 1;
        } else if (!strcmp(a, "--no-cold")) {
            cold = 0;
        } else {
            usage();
        }
    }
    if (replays < 100)
        replays = 100;
    search_schedule forced, stat;
    if (force_text && search_schedule_parse(force_text, &forced)) {
        fprintf(stderr, "bad --schedule '%s'\n", force_text);
        return 2;
    }
    int static_auto = static_text && !strcmp(static_text, "auto");
    if (static_text && !static_auto && search_schedule_parse(static_text, &stat)) {
        fprintf(stderr, "bad --static '%s'\n", static_text);
        return 2;
    }
    if (static_auto && !records) {
        fprintf(stderr, "--static auto needs --records FILE (the tuned classes' winners are its candidates)\n");
        return 2;
    }

    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags |= DOP_CONTEXT_WAIT_FOR_COMPILE;
    if (no_cache)
        opt.flags |= DOP_CONTEXT_NO_CACHE;
    opt.cache_path = cache;
    dop_context *ctx;
    if (dop_context_create(&opt, &ctx) != DOP_OK) {
        fprintf(stderr, "bench_kernels: %s\n", dop_context_error(NULL));
        return 1;
    }
    double bw, lf;
    if (runtime_copy_bandwidth(ctx, &bw) != DOP_OK || runtime_launch_floor(ctx, &lf) != DOP_OK) {
        fprintf(stderr, "bench_kernels: floors: %s\n", dop_context_error(ctx));
        return 1;
    }
    search_target me;
    runtime_record_target(&ctx->info, &me);
    best_rec *best = NULL;
    int nbest = 0;
    if (records && load_records(records, &me, &best, &nbest))
        return 1;
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    printf("# dop %s, %s, driver %d, %s; copy bandwidth %.2f TB/s, launch floor %.2f us (graph)%s\n",
           dop_version_string(), ctx->info.name, ctx->info.driver_version, date, bw / 1e12, lf,
           records ? "" : "; no --records: no oracle column");

    /* the cases, each with its warm (and cold) data */
    int ncase = ndt * nshapes * nranks * nlayouts * nrows;
    bcase *bc = calloc((size_t)ncase, sizeof *bc);
    runtime_bench_options wo, co;
    runtime_bench_options_init(&wo);
    wo.samples = replays / 10;
    co = wo;
    co.cold = 1;
    int k = 0;
    for (int d = 0; d < ndt; ++d)
        for (int si = 0; si < nshapes; ++si)
            for (int ri = 0; ri < nranks; ++ri)
                for (int li = 0; li < nlayouts; ++li)
                    for (int ni = 0; ni < nrows; ++ni, ++k) {
                        runtime_case *c = &bc[k].c;
                        c->dtype = dtypes[d];
                        c->op = RUNTIME_OP_APPLY;
                        c->workload = (runtime_workload)layouts[li];
                        c->layout_kind = DOP_LAYOUT_SEGMENTS;
                        c->num_rows = rows[ni];
                        c->d_in = shapes[si].d_in;
                        c->num_slices = 1;
                        c->d_out[0] = shapes[si].d_out;
                        c->max_rank = ranks[ri];
                        c->hetero_ranks = c->workload == RUNTIME_WL_MIXED;
                        c->device_copies = 1;
                        c->seed = case_seed(c);
                        bc[k].dyn_w = bc[k].dyn_c = bc[k].st_w = bc[k].st_c = NAN;
                        bc[k].or_w = bc[k].or_c = bc[k].or_rec = NAN;
                        if (runtime_bench_create(ctx, c, &wo, &bc[k].warm) != DOP_OK) {
                            fprintf(stderr, "bench_kernels: setup: %s\n", dop_context_error(ctx));
                            return 1;
                        }
                        runtime_case_data *cd = runtime_bench_case(bc[k].warm);
                        runtime_perf_shape ps;
                        runtime_layout_class cls;
                        runtime_case_class(cd, &ps, &cls);
                        runtime_record_task(RUNTIME_OP_APPLY, &ps, &cls, &bc[k].task);
                        bc[k].hbm_bytes = runtime_case_hbm_bytes(cd);
                        int32_t *tmp = malloc((size_t)c->num_rows * 4);
                        uint64_t rng = runtime_case_rng(c->seed);
                        runtime_workload_rows(c->workload, c->num_rows, &rng, tmp);
                        runtime_layout_summary sum;
                        runtime_summarize_rows(tmp, c->num_rows, &sum);
                        bc[k].segs = sum.groups;
                        free(tmp);
                    }

    /* the best single static schedule among the tuned winners */
    if (static_auto) {
        search_schedule *cand = calloc(MAX_CAND, sizeof *cand);
        int nc = 0;
        for (int i = 0; i < nbest && nc < MAX_CAND; ++i) {
            int dup = 0;
            for (int j = 0; j < nc && !dup; ++j)
                dup = !memcmp(&cand[j], &best[i].sched, sizeof cand[j]);
            if (!dup)
                cand[nc++] = best[i].sched;
        }
        if (!nc) {
            fprintf(stderr, "bench_kernels: --static auto: no ok records of this GPU in %s\n", records);
            return 1;
        }
        printf("# static: timing %d candidate schedules (the tuned classes' winners) on %d cases, warm\n", nc, ncase);
        double *lg = calloc((size_t)nc, sizeof *lg);
        for (int i = 0; i < nc; ++i) {
            for (int j = 0; j < ncase && isfinite(lg[i]); ++j) {
                if (!search_schedule_legal(&cand[i], bc[j].c.max_rank, NULL, 0)) {
                    lg[i] = INFINITY;
                    break;
                }
                runtime_measurement m;
                if (runtime_bench_measure(ctx, bc[j].warm, &cand[i], 0, &m) != DOP_OK) {
                    fprintf(stderr, "bench_kernels: %s\n", dop_context_error(ctx));
                    return 1;
                }
                lg[i] = m.error_no == SEARCH_ERR_OK ? lg[i] + log(m.us) : INFINITY;
            }
            fprintf(stderr, "\r# static candidates: %d/%d", i + 1, nc);
        }
        fprintf(stderr, "\n");
        int bi = 0;
        for (int i = 1; i < nc; ++i)
            if (lg[i] < lg[bi])
                bi = i;
        if (!isfinite(lg[bi])) {
            fprintf(stderr, "bench_kernels: no candidate runs on every case\n");
            return 1;
        }
        stat = cand[bi];
        free(lg);
        free(cand);
    }
    char stat_name[128] = "";
    if (static_text) {
        search_schedule_format(&stat, stat_name, sizeof stat_name);
        printf("# static schedule: %s\n", stat_name);
    }

    printf("%-9s %-4s %11s %5s %4s %4s %8s %8s %8s %8s %8s %8s %7s %7s %5s %6s %6s  %s\n", "layout", "dt", "shape",
           "rows", "segs", "rank", "dyn_w", "dyn_c", "stat_w", "stat_c", "orcl_w", "orcl_c", "hbm", "launch", "eff",
           "st/dyn", "dyn/or", "dispatched schedule");
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && !jf) {
        perror(json);
        return 1;
    }
    int nfail = 0;
    for (k = 0; k < ncase; ++k) {
        bcase *b = &bc[k];
        const runtime_case *c = &b->c;
        if (cold && runtime_bench_create(ctx, c, &co, &b->cold) != DOP_OK) {
            fprintf(stderr, "bench_kernels: setup: %s\n", dop_context_error(ctx));
            return 1;
        }
        const search_schedule *dyn = force_text ? &forced : NULL;
        b->dyn_w = timed(ctx, b->warm, dyn, verify, "dispatched", b, b->dyn_name, sizeof b->dyn_name);
        b->dyn_c = timed(ctx, b->cold, dyn, 0, "dispatched (cold)", b, NULL, 0);
        if (static_text && search_schedule_legal(&stat, c->max_rank, NULL, 0)) {
            b->st_w = timed(ctx, b->warm, &stat, verify, "static", b, NULL, 0);
            b->st_c = timed(ctx, b->cold, &stat, 0, "static (cold)", b, NULL, 0);
        }
        for (int i = 0; i < nbest; ++i)
            if (!memcmp(&best[i].task, &b->task, sizeof b->task)) {
                b->or_rec = best[i].us;
                search_schedule_format(&best[i].sched, b->or_name, sizeof b->or_name);
                b->or_w = timed(ctx, b->warm, &best[i].sched, verify, "oracle", b, NULL, 0);
                b->or_c = timed(ctx, b->cold, &best[i].sched, 0, "oracle (cold)", b, NULL, 0);
                break;
            }
        runtime_bench_free(ctx, b->cold);
        b->cold = NULL;
        nfail += b->failed;
        double hbm = b->hbm_bytes / bw * 1e6, fl = hbm > lf ? hbm : lf;
        char shp[32];
        snprintf(shp, sizeof shp, "%d>%d", c->d_in, c->d_out[0]);
        printf("%-9s %-4s %11s %5d %4d %4d %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %7.2f %7.2f %5.2f %6.2f %6.2f  %s%s\n",
               runtime_workload_name(c->workload), c->dtype == DOP_DTYPE_BF16 ? "bf16" : "f16", shp, c->num_rows,
               b->segs, c->max_rank, b->dyn_w, b->dyn_c, b->st_w, b->st_c, b->or_w, b->or_c, hbm, lf, fl / b->dyn_w,
               b->st_w / b->dyn_w, b->dyn_w / b->or_w, b->dyn_name, b->failed ? "  VERIFY-FAILED" : "");
        fflush(stdout);
        if (jf) {
            char v[9][32];
            const double nums[9] = {b->dyn_w, b->dyn_c, b->st_w, b->st_c, b->or_w, b->or_c, b->or_rec, hbm,
                                    fl / b->dyn_w};
            for (int j = 0; j < 9; ++j) /* JSON has no NaN: a missing time is null */
                snprintf(v[j], sizeof v[j], isfinite(nums[j]) ? "%.4f" : "null", nums[j]);
            fprintf(jf,
                    "{\"gpu\":\"%s\",\"driver\":%d,\"dop\":\"%s\",\"date\":\"%s\",\"dtype\":\"%s\",\"layout\":\"%s\","
                    "\"rows\":%d,\"segments\":%d,\"rank\":%d,\"d_in\":%d,\"d_out\":%d,\"dyn_warm_us\":%s,"
                    "\"dyn_cold_us\":%s,\"static_warm_us\":%s,\"static_cold_us\":%s,\"oracle_warm_us\":%s,"
                    "\"oracle_cold_us\":%s,\"oracle_record_us\":%s,\"hbm_floor_us\":%s,"
                    "\"launch_floor_us\":%.4f,\"efficiency\":%s,\"schedule\":\"%s\",\"static\":\"%s\","
                    "\"oracle\":\"%s\",\"verified\":%s}\n",
                    ctx->info.name, ctx->info.driver_version, dop_version_string(), date,
                    c->dtype == DOP_DTYPE_BF16 ? "bf16" : "f16", runtime_workload_name(c->workload), c->num_rows,
                    b->segs, c->max_rank, c->d_in, c->d_out[0], v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], lf,
                    v[8], b->dyn_name, stat_name, b->or_name, verify ? (b->failed ? "false" : "true") : "null");
        }
    }
    /* summary */
    double *dw = malloc((size_t)ncase * sizeof *dw), *dc = malloc((size_t)ncase * sizeof *dc);
    double *sw = malloc((size_t)ncase * sizeof *sw), *sc = malloc((size_t)ncase * sizeof *sc);
    double *ow = malloc((size_t)ncase * sizeof *ow), *fl2 = malloc((size_t)ncase * sizeof *fl2);
    int within2 = 0;
    for (k = 0; k < ncase; ++k) {
        dw[k] = bc[k].dyn_w, dc[k] = bc[k].dyn_c, sw[k] = bc[k].st_w, sc[k] = bc[k].st_c, ow[k] = bc[k].or_w;
        double hbm = bc[k].hbm_bytes / bw * 1e6;
        fl2[k] = 2 * (hbm > lf ? hbm : lf);
        within2 += dw[k] <= fl2[k];
    }
    int n1, n2, n3, n4;
    double s_w = geomean_ratio(sw, dw, ncase, &n1), s_c = geomean_ratio(sc, dc, ncase, &n2);
    double d_o = geomean_ratio(dw, ow, ncase, &n3), e = geomean_ratio(fl2, dw, ncase, &n4);
    printf("# %d cases; dynamic over static: %.3fx warm (%d cases), %.3fx cold (%d); dynamic / oracle %.3f (%d cases);"
           " %d of %d within 2x max(HBM floor, launch floor); geomean efficiency %.3f%s\n",
           ncase, s_w, n1, s_c, n2, d_o, n3, within2, ncase, e / 2, verify ? (nfail ? "; VERIFY FAILURES" : "; all verified") : "");
    if (jf)
        fclose(jf);
    for (k = 0; k < ncase; ++k)
        runtime_bench_free(ctx, bc[k].warm);
    free(bc);
    free(best);
    free(dw), free(dc), free(sw), free(sc), free(ow), free(fl2);
    dop_context_destroy(ctx);
    return nfail ? 1 : 0;
}
