/*
 * costmodel.h -- predicts the time of a schedule for a task on a GPU without
 * compiling or running it, and learns a correction from measured records.
 *
 *   features   costmodel_features: what the kernels of kernels/kernels_lora.cu
 *              do for (task, target, schedule) -- bytes per operand, FMAs,
 *              CTAs, waves over the SMs, CTAs per SM, serial memory rounds per
 *              CTA, split-K partials, padding waste, launches -- computed from
 *              the task's layout class (docs/costmodel.md says how the class's
 *              buckets become representative numbers).
 *   analytical costmodel_analytical_us: a latency/bandwidth/issue model of those
 *              kernels that needs no measurement (cold, CPU-only, offline use).
 *   learned    log(t) = log(analytical) + w . z(features) + b, with w from a
 *              closed-form ridge regression on measured records, each task's
 *              mean removed first (the fit learns the ranking inside a task,
 *              which is what search and dispatch need).
 *
 * A model is a small fixed-size value for one GPU fingerprint; it is encoded
 * as a versioned little-endian byte image (costmodel_encode/decode) and kept
 * in the cache's "costmodel" database (costmodel_cache.h).
 *
 * Pure C11; depends on the search module only. Nothing here allocates except
 * costmodel_train / costmodel_evaluate / costmodel_crossval (malloc, freed
 * before they return), prints, or aborts. All functions are reentrant; a
 * costmodel may be read by several threads at once.
 */
#ifndef DOP_COSTMODEL_H
#define DOP_COSTMODEL_H

#include <stddef.h>
#include <stdint.h>

#include "search_record.h"

/* 2: the cluster sketch's one-hot feature (COSTMODEL_F_CLUSTER) and its analytical time; a
 * model of version 1 (44 features) is refused by costmodel_decode and has another cache key. */
#define COSTMODEL_VERSION 2

/* The features, in the order costmodel_features writes them. Values are
 * never reordered within a COSTMODEL_VERSION. */
enum {
    COSTMODEL_F_LOG2_ANALYTICAL_US = 0, /* log2 of costmodel_analytical_us */
    COSTMODEL_F_LOG2_LATENCY_US,        /* the latency-chain term (waves x serial rounds), all launches */
    COSTMODEL_F_LOG2_DRAM_US,           /* DRAM bytes / DRAM bandwidth */
    COSTMODEL_F_LOG2_L2_US,             /* L2 bytes / L2 bandwidth */
    COSTMODEL_F_LOG2_ISSUE_US,          /* warp instructions / issue rate of the SMs used */
    COSTMODEL_F_LAUNCHES,               /* kernel launches of one call */
    COSTMODEL_F_MEMSETS,                /* memsets of one call */
    COSTMODEL_F_SPLIT,                  /* 1 for the split sketch */
    COSTMODEL_F_FUSED,                  /* 1 for the fused sketch */
    COSTMODEL_F_COUNTER,                /* 1 for the counter sketch */
    COSTMODEL_F_CLUSTER,                /* 1 for the cluster sketch */
    COSTMODEL_F_MMA,                    /* 1 with tensor cores */
    COSTMODEL_F_LOG2_ROWS_CTA,          /* rows per CTA */
    COSTMODEL_F_LOG2_WARPS,             /* warps per CTA */
    COSTMODEL_F_LOG2_VEC,               /* vector width the kernel really uses (1 when d_in % vec != 0) */
    COSTMODEL_F_LOG2_LOADS,             /* loads in flight per lane (kc / (32 vec); mma: kc / 16) */
    COSTMODEL_F_LOG2_SPLIT_K,           /* K splits the launcher really makes */
    COSTMODEL_F_LOG2_COLS,              /* output columns per CTA */
    COSTMODEL_F_LOG2_CTAS,              /* CTAs launched, all kernels */
    COSTMODEL_F_WAVES,                  /* waves of the kernel with the most */
    COSTMODEL_F_WAVE_EFF,               /* CTAs / (waves x resident slots) of that kernel (1: no tail) */
    COSTMODEL_F_CTAS_PER_SM,            /* resident CTAs per SM (threads, smem, registers) */
    COSTMODEL_F_REGS,                   /* estimated registers per thread / 256 */
    COSTMODEL_F_SMEM_KIB,               /* static shared memory per CTA, KiB */
    COSTMODEL_F_LOG2_DRAM_BYTES,        /* bytes from DRAM (weights once, x, y, scratch) */
    COSTMODEL_F_LOG2_L2_BYTES,          /* bytes through L2 (every re-read of weights, x, v; atomics) */
    COSTMODEL_F_LOG2_WEIGHT_REREAD,     /* weight bytes requested / distinct weight bytes */
    COSTMODEL_F_LOG2_FMA,               /* useful multiply-adds */
    COSTMODEL_F_LOG2_FMA_ISSUED,        /* multiply-adds done (mma 16-row tiles, fused recompute) */
    COSTMODEL_F_PAD_WASTE,              /* 1 - useful / issued */
    COSTMODEL_F_GROUPS_PER_TILE,        /* adapter groups a row tile walks (each re-reads weights) */
    COSTMODEL_F_LOG2_ROUNDS,            /* serial memory rounds of one CTA, all launches */
    COSTMODEL_F_LOG2_PARTIAL_BYTES,     /* fp32 split-K partial bytes added by atomics */
    COSTMODEL_F_LOG2_ROWS,              /* task: representative rows */
    COSTMODEL_F_LOG2_RANK,              /* task: max_rank */
    COSTMODEL_F_LOG2_D_IN,              /* task: d_in */
    COSTMODEL_F_LOG2_D_OUT,             /* task: sum of the slices' d_out */
    COSTMODEL_F_LOG2_MEAN_RUN,          /* task: rows per run of one adapter */
    COSTMODEL_F_NONE_FRAC,              /* task: share of rows without an adapter */
    COSTMODEL_F_MMA_X_MEAN_RUN,         /* mma x log2 mean run (mma pays with long runs) */
    COSTMODEL_F_FUSED_X_COL_TILES,      /* fused x log2 column tiles (the shrink is recomputed per tile) */
    COSTMODEL_F_SPILL,                  /* estimated registers over the launch-bounds cap / 64 */
    COSTMODEL_F_SMALL_X_SPLIT,          /* (6 - log2 rows, at least 0) x log2 split-K: split-K at few rows */
    COSTMODEL_F_STAGES,                 /* cp.async stages of the tensor-core shrink (1: none) */
    COSTMODEL_F_PERSIST,                /* 1 for a persistent grid (not in the analytical time yet) */
    COSTMODEL_NFEAT
};

/* Short name of feature i ("log2_dram_bytes"); NULL out of range. */
const char *costmodel_feature_name(int i);

/*
 * Features of (task, target, schedule); writes COSTMODEL_NFEAT finite
 * doubles to f. Returns 0, or -1 (f untouched) when an argument is NULL or
 * invalid, or the schedule cannot run for the task: search_schedule_legal
 * fails for max_rank, a fused, counter or cluster sketch for an op other than
 * apply, the cluster sketch on a GPU before sm_90, or tensor cores with
 * d_in % 8 != 0. Other annotations are taken the way the
 * launcher takes them (a split-K it rounds, a vector width that does not
 * divide d_in and so falls back to scalar loads).
 */
int costmodel_features(const search_task *t, const search_target *g, const search_schedule *s, double *f);

/* Analytical prediction in microseconds (> 0, finite) with zero measurements;
 * 1e9 for arguments costmodel_features refuses. */
double costmodel_analytical_us(const search_task *t, const search_target *g, const search_schedule *s);

/* Ridge strength of costmodel_train, on standardized features (unit variance). */
#define COSTMODEL_RIDGE_LAMBDA 0.05
/* Smallest scale of a feature: within-task deviations below it are penalized as if it were this. */
#define COSTMODEL_SCALE_MIN 0.1

typedef struct costmodel {
    uint32_t version;   /* COSTMODEL_VERSION */
    uint32_t trained;   /* 0: analytical only (weights zero); 1: learned */
    search_target target; /* the GPU fingerprint (name not used) */
    char tag[SEARCH_TARGET_NAME_MAX]; /* search_target_tag of target */
    uint32_t records;   /* records trained on */
    uint32_t tasks;     /* distinct tasks among them */
    double lambda;      /* ridge strength used */
    double intercept;   /* b: mean log-residual (calibrates microseconds, not the ranking) */
    double mean[COSTMODEL_NFEAT];  /* feature means of the training set */
    double scale[COSTMODEL_NFEAT]; /* feature standard deviations (within tasks); 1 for unused features */
    double w[COSTMODEL_NFEAT];     /* weights on (f - mean) / scale */
} costmodel;

/* An analytical-only model for target g (m and g not NULL). */
void costmodel_init(costmodel *m, const search_target *g);

/* Predicted microseconds (> 0, finite) of s for t on m's target; 1e9 for
 * arguments costmodel_features refuses. */
double costmodel_predict_us(const costmodel *m, const search_task *t, const search_schedule *s);

/*
 * Trains m (initialized by costmodel_init: its target says which records
 * count) on recs[0..n): records of other targets, with error_no != OK, no
 * positive finite cost, or a schedule costmodel_features refuses are
 * ignored. The time of a record is the median of its costs. Returns the
 * number of records used; -1 with why when there is nothing to learn from
 * (no task with two usable records) or on bad arguments; m is then left as
 * it was.
 */
int costmodel_train(costmodel *m, const search_record *recs, size_t n, char *why, size_t why_len);

/* Versioned little-endian byte image: COSTMODEL_ENCODED_SIZE bytes. */
#define COSTMODEL_ENCODED_SIZE (4 + 4 + 4 + 4 + 4 + 4 + 8 + 4 + 4 + 4 + 4 + 8 + 8 + 24 * COSTMODEL_NFEAT + 8)

/* Writes m's image into buf if len is enough. Returns the bytes the image
 * needs (COSTMODEL_ENCODED_SIZE) either way; 0 for a NULL or invalid m. */
size_t costmodel_encode(const costmodel *m, void *buf, size_t len);

/*
 * Reads an image; strict: exact length, magic, version, feature count,
 * fingerprint ranges, finite numbers in range, checksum. 0 and *m filled, or
 * -1 with why (*m zeroed). Never reads outside [buf, buf + len).
 */
int costmodel_decode(const void *buf, size_t len, costmodel *m, char *why, size_t why_len);

typedef struct costmodel_eval {
    int tasks;                  /* tasks with at least two usable records */
    int records;                /* records in them */
    double spearman_mean;       /* mean over tasks (tasks whose times or predictions all tie are left out) */
    double top1_regret_geomean; /* geometric mean over tasks */
    double top1_regret_max;
    double top5_regret_geomean;
} costmodel_eval;

/*
 * Per task (records of m's target grouped by task, usable as for training),
 * the Spearman rank correlation between predicted and measured time; top-k
 * regret = best measured time among the model's k best-predicted records of
 * that task (ties broken by record order) / the task's best measured time.
 * Returns 0 (out zeroed when no task qualifies), -1 on bad arguments or
 * out of memory.
 */
int costmodel_evaluate(const costmodel *m, const search_record *recs, size_t n, costmodel_eval *out);

/* One held-out shape of costmodel_crossval_folds. */
typedef struct costmodel_fold {
    search_task shape;       /* op, dtype, d_in, slices, max_rank of the shape (layout fields of its first record) */
    int train_records;       /* records of the other shapes trained on (0: none, learned = analytical) */
    costmodel_eval analytical, learned;
} costmodel_fold;

/*
 * Held-out-shape cross validation: for each distinct shape (op, d_in, d_out
 * list, max_rank) among the usable records of target g, train on the
 * records of the other shapes and evaluate on it, analytical-only and
 * learned side by side; the summaries pool the held-out tasks of all
 * shapes. Returns the number of shapes (0: none), or -1 on bad arguments or
 * out of memory. analytical and learned may be NULL.
 */
int costmodel_crossval(const search_target *g, const search_record *recs, size_t n, costmodel_eval *analytical,
                       costmodel_eval *learned);

/* Same, also writing up to cap folds (in order of first appearance) to folds. */
int costmodel_crossval_folds(const search_target *g, const search_record *recs, size_t n, costmodel_eval *analytical,
                             costmodel_eval *learned, costmodel_fold *folds, size_t cap);

/* Whether two targets are the same GPU fingerprint (the name is ignored). */
int costmodel_same_target(const search_target *a, const search_target *b);

#endif
