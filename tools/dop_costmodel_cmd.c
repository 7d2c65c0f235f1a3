/*
 * dop_costmodel_cmd.c -- `dop costmodel ...`: evaluate, train and list cost
 * models (costmodel/).
 *
 *   dop costmodel eval --records FILE [--target TAG]
 *       held-out-shape cross validation of the analytical and the learned
 *       model on a log of tuning records (JSON lines), per shape and overall
 *   dop costmodel train --records FILE [--cache PATH]
 *       trains one model per GPU fingerprint found in the log and stores it
 *   dop costmodel show [--cache PATH]
 *       lists the stored models
 *
 * Bad lines of a log are counted and the first few reported; they never stop
 * the command.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "costmodel.h"
#include "costmodel_cache.h"
#include "dop_args.h"
#include "dop_costmodel_cmd.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: dop costmodel <command> [options]\n"
               "  eval --records FILE [--target TAG]   cross-validate by held-out shape: Spearman and\n"
               "                                       top-1/top-5 regret, analytical and learned\n"
               "  train --records FILE [--cache PATH]  train one model per GPU in the log and store it\n"
               "  show [--cache PATH]                  list the stored models\n"
               "TAG is a GPU fingerprint as in the records, e.g. sm_90/132sm/61440KiB-L2/227KiB-smem\n");
}

typedef struct log_data {
    search_record *recs;
    size_t n, bad;
} log_data;

/* Reads a JSON-lines log (the first 5 bad lines are shown). 0, or 1 when the file cannot be read or memory runs out. */
static int read_log(const char *path, log_data *d)
{
    int rc = dop_read_records(path, 5, &d->recs, &d->n, &d->bad);
    if (rc == -1)
        fprintf(stderr, "dop costmodel: cannot open %s\n", path);
    else if (rc == -2)
        fprintf(stderr, "dop costmodel: out of memory reading %s\n", path);
    return rc ? 1 : 0;
}

/* Distinct targets of the records, in order of first appearance. */
static size_t targets_of(const log_data *d, search_target *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; ++i) {
        size_t j = 0;
        while (j < n && !costmodel_same_target(&out[j], &d->recs[i].target))
            ++j;
        if (j == n && n < cap)
            out[n++] = d->recs[i].target;
    }
    return n;
}

static void shape_text(const search_task *t, char *buf, size_t len)
{
    static const char *const ops[] = {"apply", "shrink", "expand"};
    int w = snprintf(buf, len, "%s %s %d->", t->op <= 2 ? ops[t->op] : "?", t->dtype == SEARCH_DTYPE_BF16 ? "bf16" : "f16",
                     t->d_in);
    for (int i = 0; i < t->num_slices && i < SEARCH_MAX_SLICES && w > 0 && (size_t)w < len; ++i)
        w += snprintf(buf + w, len - (size_t)w, "%s%d", i ? "," : "", t->d_out[i]);
    if (w > 0 && (size_t)w < len)
        snprintf(buf + w, len - (size_t)w, " r%d", t->max_rank);
}

static void print_eval_row(const char *name, const costmodel_eval *a, const costmodel_eval *l, int trained_on)
{
    char on[16];
    snprintf(on, sizeof on, trained_on < 0 ? "-" : "%d", trained_on);
    printf("%-34s %6d %7d | %6.3f %6.3f %6.3f | %6.3f %6.3f %6.3f | %7s\n", name, a->tasks, a->records,
           a->spearman_mean, a->top1_regret_geomean, a->top5_regret_geomean, l->spearman_mean,
           l->top1_regret_geomean, l->top5_regret_geomean, on);
}

/* The start of eval and train: "--records FILE" (required) and one optional
 * "OPT VALUE" (*optval, NULL when absent), then the log read and counted.
 * Returns -1 to go on, else the command's exit code (2: usage, 1: unreadable). */
static int open_log(int argc, char **argv, const char *opt, const char **optval, log_data *d)
{
    const char *file = NULL;
    *optval = NULL;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--records") && i + 1 < argc)
            file = argv[++i];
        else if (!strcmp(argv[i], opt) && i + 1 < argc)
            *optval = argv[++i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!file) {
        usage(stderr);
        return 2;
    }
    if (read_log(file, d))
        return 1;
    printf("%s: %zu records, %zu bad lines\n", file, d->n, d->bad);
    return -1;
}

static int cmd_eval(int argc, char **argv)
{
    const char *want;
    log_data d;
    int early = open_log(argc, argv, "--target", &want, &d);
    if (early >= 0)
        return early;
    search_target tg[64];
    size_t nt = targets_of(&d, tg, 64);
    int shown = 0, rc = 0;
    costmodel_fold *folds = malloc((d.n ? d.n : 1) * sizeof *folds);
    if (!folds) {
        free(d.recs);
        return 1;
    }
    for (size_t t = 0; t < nt; ++t) {
        char tag[SEARCH_TARGET_NAME_MAX];
        search_target_tag(&tg[t], tag, sizeof tag);
        if (want && strcmp(want, tag) != 0)
            continue;
        shown++;
        costmodel_eval ea, el;
        int ns = costmodel_crossval_folds(&tg[t], d.recs, d.n, &ea, &el, folds, d.n);
        printf("\ntarget %s%s%s%s: %d shapes, %d tasks with >= 2 usable records, %d records\n", tag,
               tg[t].name[0] ? " (" : "", tg[t].name, tg[t].name[0] ? ")" : "", ns < 0 ? 0 : ns, ea.tasks,
               ea.records);
        if (ns < 0) {
            fprintf(stderr, "dop costmodel eval: out of memory\n");
            rc = 1;
            continue;
        }
        printf("%-34s %6s %7s | %-20s | %-20s | %7s\n", "held-out shape", "tasks", "records", "analytical",
               "learned", "trained");
        printf("%-34s %6s %7s | %6s %6s %6s | %6s %6s %6s | %7s\n", "", "", "", "rho", "top1", "top5", "rho",
               "top1", "top5", "on");
        for (int s = 0; s < ns; ++s) {
            char name[96];
            shape_text(&folds[s].shape, name, sizeof name);
            print_eval_row(name, &folds[s].analytical, &folds[s].learned, folds[s].train_records);
        }
        print_eval_row("all (mean rho, geomean regrets)", &ea, &el, -1);
        printf("worst top-1 regret: analytical %.3f, learned %.3f\n", ea.top1_regret_max, el.top1_regret_max);
    }
    if (!shown) {
        printf("no records%s%s\n", want ? " of target " : "", want ? want : "");
        rc = d.n ? 1 : rc;
    }
    free(folds);
    free(d.recs);
    return rc;
}

static int cmd_train(int argc, char **argv)
{
    const char *path;
    log_data d;
    int early = open_log(argc, argv, "--cache", &path, &d);
    if (early >= 0)
        return early;
    search_target tg[64];
    size_t nt = targets_of(&d, tg, 64);
    cache_store *s = NULL;
    char why[512];
    cache_status st = cache_open(path, CACHE_CREATE, &s, why, sizeof why);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop costmodel train: %s (%s)\n", why, cache_status_string(st));
        free(d.recs);
        return 1;
    }
    int rc = 0;
    for (size_t t = 0; t < nt; ++t) {
        costmodel m;
        costmodel_init(&m, &tg[t]);
        int used = costmodel_train(&m, d.recs, d.n, why, sizeof why);
        if (used < 0) {
            printf("%s: not trained: %s\n", m.tag, why);
            continue;
        }
        st = costmodel_store(s, &m, why, sizeof why);
        if (st != CACHE_OK) {
            fprintf(stderr, "dop costmodel train: storing %s: %s (%s)\n", m.tag, why, cache_status_string(st));
            rc = 1;
            continue;
        }
        printf("stored %s: trained on %u records of %u tasks (lambda %g) in %s\n", m.tag, m.records, m.tasks,
               m.lambda, cache_path(s));
    }
    if (!nt)
        printf("no records: nothing stored\n");
    cache_close(s);
    free(d.recs);
    return rc;
}

typedef struct show_ctx {
    int n, bad;
} show_ctx;

static int show_one(void *user, const cache_entry *e)
{
    show_ctx *c = user;
    costmodel m;
    char why[256];
    if (e->status != CACHE_OK || costmodel_decode(e->rec.value, e->rec.value_len, &m, why, sizeof why) != 0) {
        c->bad++;
        printf("(unreadable entry: %s)\n", e->status != CACHE_OK ? e->why : why);
        return 0;
    }
    c->n++;
    printf("%s  version %u  %s", m.tag, m.version, m.trained ? "learned" : "analytical only");
    if (m.trained) {
        printf(": %u records, %u tasks, lambda %g, intercept %+.3f\n  largest weights:", m.records, m.tasks,
               m.lambda, m.intercept);
        int used[COSTMODEL_NFEAT] = {0};
        for (int k = 0; k < 5; ++k) {
            int best = -1;
            for (int j = 0; j < COSTMODEL_NFEAT; ++j)
                if (!used[j] && m.w[j] != 0 && (best < 0 || fabs(m.w[j]) > fabs(m.w[best])))
                    best = j;
            if (best < 0)
                break;
            used[best] = 1;
            printf(" %s %+.3f", costmodel_feature_name(best), m.w[best]);
        }
    }
    printf("\n");
    return 0;
}

static int cmd_show(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--cache") && i + 1 < argc)
            path = argv[++i];
        else {
            usage(stderr);
            return 2;
        }
    }
    cache_store *s = NULL;
    char why[512];
    cache_status st = cache_open(path, CACHE_READONLY, &s, why, sizeof why);
    if (st == CACHE_ERR_NOTFOUND) {
        printf("no cache yet: %s\n", why);
        return 0;
    }
    if (st != CACHE_OK) {
        fprintf(stderr, "dop costmodel show: %s (%s)\n", why, cache_status_string(st));
        return 1;
    }
    show_ctx c = {0, 0};
    st = cache_foreach(s, CACHE_DB_COSTMODEL, show_one, &c, why, sizeof why);
    cache_close(s);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop costmodel show: %s (%s)\n", why, cache_status_string(st));
        return 1;
    }
    printf("%d model%s stored%s\n", c.n, c.n == 1 ? "" : "s", c.bad ? " (and unreadable entries)" : "");
    return 0;
}

int dop_costmodel_main(int argc, char **argv)
{
    if (argc < 1 || !argv || !argv[0]) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[0];
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc, argv);
    if (!strcmp(cmd, "train"))
        return cmd_train(argc, argv);
    if (!strcmp(cmd, "show"))
        return cmd_show(argc, argv);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "dop costmodel: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
