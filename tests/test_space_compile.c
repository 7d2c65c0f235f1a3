/*
 * test_space_compile.c -- every schedule of a deterministic sample of the
 * schedule space compiles with NVRTC, for sm_80 and sm_90 (no GPU needed).
 *
 * The sample: a fixed seed draws, from the sm_90 spaces of a few problems
 * (ranks 16 and 64, fp16 and bf16, d_in 4096, 11008 and 3424, decode and
 * batch row counts), 68 schedules of each sketch (split, fused, counter,
 * cluster): 54 on CUDA cores and 14 with tensor cores (mma, from the two
 * problems of more than 8 rows, whose spaces have them), each a distinct
 * module (schedules equal
 * under search_schedule_module_key compile to the same source, so the
 * sample skips repeats), with at most one CUDA-core schedule of 16 and one
 * of 32 rows per CTA per problem where the space has them (those compile 5
 * to 70 times slower than the rest; mma schedules, always 16 rows, compile
 * in under a second). The stages (2..4, with mma) and persist annotations
 * come with the uniform draw: the test checks that every stage count and
 * persistent grids of every sketch but cluster (which has none) are in the
 * sample. Every schedule is generated (kernels_codegen) and compiled
 * (runtime_jit_compile) for both architectures by two threads, as CI has two
 * cores; the cluster sketch's schedules for sm_90 only (thread-block clusters:
 * the sm_80 space refuses them, and so does the test).
 *
 * The test fails on any compile error (with the schedule and the head of
 * the log) and on an unreadable ptxas report; it prints a table of
 * registers and spills of the five entry points and marks "SPILLS" where an
 * entry point the schedule's sketch launches spills (split: dop_shrink and
 * dop_expand, fused: dop_fused, counter: dop_fused_counter, cluster:
 * dop_cluster). Spilling is
 * reported, not failed: whether a spilling schedule is slow is for
 * measurements to say.
 *
 * NVRTC is required: when it cannot be loaded, the test fails.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels_codegen.h"
#include "runtime_driver.h"
#include "runtime_jit.h"
#include "search_schedule.h"
#include "search_space.h"

#define SEED 0x5eed2024u
#define THREADS 2
#define NUM_ARCHS 2
static const int archs[NUM_ARCHS][2] = {{8, 0}, {9, 0}};
#define NUM_ENTRIES 5
static const char *const entries[NUM_ENTRIES] = {KERNELS_ENTRY_SHRINK, KERNELS_ENTRY_EXPAND, KERNELS_ENTRY_FUSED,
                                                 KERNELS_ENTRY_COUNTER, KERNELS_ENTRY_CLUSTER};
#define NUM_SKETCHES 4 /* split, fused, counter, cluster: search_sketch 1..4 */

typedef struct cproblem {
    const char *tag;
    int op, dtype, num_rows, d_in, rank, num_slices, d_out[2];
    int per_sketch; /* CUDA-core schedules drawn of each sketch */
    int per_mma;    /* tensor-core (mma) schedules drawn of each sketch */
} cproblem;

/* 68 schedules of each sketch (14 of them mma), 272 schedules, 476 compiles (cluster: sm_90 only). */
static const cproblem problems[] = {
    {"A", SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 8, 4096, 16, 1, {4096, 0}, 16, 0},      /* decode, rank 16 */
    {"B", SEARCH_OP_APPLY, SEARCH_DTYPE_BF16, 16, 4096, 64, 1, {4096, 0}, 11, 7},    /* rank 64 */
    {"C", SEARCH_OP_APPLY, SEARCH_DTYPE_F16, 4, 11008, 64, 1, {4096, 0}, 16, 0},     /* down projection */
    {"D", SEARCH_OP_APPLY, SEARCH_DTYPE_BF16, 64, 3424, 16, 2, {4096, 1024}, 11, 7}, /* two slices, batch */
};
/* CUDA-core schedules of 16 or 32 rows per CTA take 5 to 70 s each to
 * compile (against about 1 s for the rest): one of each per problem (where
 * the space has them; the module does not depend on the sketch), so the test
 * stays within minutes on two cores. */
#define HEAVY_ROWS 16
#define NUM_PROBLEMS ((int)(sizeof problems / sizeof problems[0]))
#define MAX_ITEMS 512

static search_problem to_problem(const cproblem *c, int cc_major)
{
    search_problem p;
    memset(&p, 0, sizeof p);
    p.op = c->op;
    p.dtype = c->dtype;
    p.num_rows = c->num_rows;
    p.d_in = c->d_in;
    p.max_rank = c->rank;
    p.num_slices = c->num_slices;
    for (int i = 0; i < c->num_slices; ++i)
        p.d_out[i] = c->d_out[i];
    p.cc_major = cc_major;
    p.cc_minor = 0;
    p.sm_count = cc_major == 9 ? 132 : 108;
    return p;
}

typedef struct item {
    int problem;
    search_schedule s;
    kernels_dtype dtype;
    int rank;
} item;

/* Whether the item is compiled for arch a: the cluster sketch needs thread-block clusters (sm_90+). */
static int compiled_for(const item *it, int a)
{
    return it->s.sketch != SEARCH_SKETCH_CLUSTER || archs[a][0] >= 9;
}

typedef struct result {
    int ok;            /* compiled and the report read */
    char why[1024];    /* the failure, with the head of the log */
    runtime_jit_entry_info e[NUM_ENTRIES];
    double seconds;
} result;

typedef struct job {
    int item, arch;
} job;

typedef struct pool {
    const runtime_nvrtc *nv;
    const item *items;
    const job *jobs;
    int njobs;
    result *results; /* [item * NUM_ARCHS + arch] */
    pthread_mutex_t lock;
    int next;
} pool;

static void compile_one(const pool *pl, const job *j)
{
    const item *it = &pl->items[j->item];
    result *r = &pl->results[j->item * NUM_ARCHS + j->arch];
    char *src = NULL, why[512] = "";
    size_t len = 0;
    memset(r, 0, sizeof *r);
    if (kernels_codegen(&it->s, it->dtype, it->rank, &src, &len, why, sizeof why) != 0) {
        snprintf(r->why, sizeof r->why, "codegen: %s", why);
        return;
    }
    runtime_cubin cub;
    if (runtime_jit_compile(pl->nv, src, archs[j->arch][0], archs[j->arch][1], entries, NUM_ENTRIES, &cub, r->why,
                            sizeof r->why) != 0) {
        free(src);
        return;
    }
    free(src);
    r->seconds = cub.seconds;
    int good = cub.size > 4 && memcmp(cub.data, "\x7f" "ELF", 4) == 0 && cub.num_entries == NUM_ENTRIES;
    const char *held[2];
    int nheld = kernels_entries(&it->s, held);
    for (int e = 0; e < NUM_ENTRIES && good; ++e) {
        r->e[e] = cub.entries[e];
        int in_module = 0; /* a module holds its sketch's entry points only (-1: not in the ptxas report) */
        for (int h = 0; h < nheld; ++h)
            in_module |= !strcmp(held[h], entries[e]);
        if (strcmp(cub.entries[e].name, entries[e]) != 0)
            good = 0;
        else if (!in_module)
            good = cub.entries[e].registers == -1;
        else if (cub.entries[e].registers <= 0 || cub.entries[e].registers > 255 || cub.entries[e].spill_stores < 0 ||
                 cub.entries[e].spill_loads < 0)
            good = 0;
    }
    if (!good)
        snprintf(r->why, sizeof r->why, "cubin or ptxas report unusable; log head: %.800s", cub.log ? cub.log : "");
    r->ok = good;
    runtime_cubin_free(&cub);
}

static void *worker(void *arg)
{
    pool *pl = arg;
    for (;;) {
        pthread_mutex_lock(&pl->lock);
        int k = pl->next++;
        pthread_mutex_unlock(&pl->lock);
        if (k >= pl->njobs)
            return NULL;
        compile_one(pl, &pl->jobs[k]);
    }
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Whether the entry points the sketch launches spill; bytes stored + loaded. */
static int spill_bytes(const search_schedule *s, const result *r)
{
    int b = 0;
    for (int e = 0; e < NUM_ENTRIES; ++e) {
        int used = s->sketch == SEARCH_SKETCH_FUSED           ? e == 2
                   : s->sketch == SEARCH_SKETCH_FUSED_COUNTER ? e == 3
                   : s->sketch == SEARCH_SKETCH_CLUSTER       ? e == 4
                                                              : e < 2;
        if (used)
            b += r->e[e].spill_stores + r->e[e].spill_loads;
    }
    return b;
}

/* Larger tiles (rows x loads per lane) compile longest: those go first so the
 * two threads finish together. */
static const item *g_items;
static int job_cmp(const void *pa, const void *pb)
{
    const job *a = pa, *b = pb;
    const search_schedule *x = &g_items[a->item].s, *y = &g_items[b->item].s;
    /* mma modules compile in under a second whatever their rows */
    long wx = x->mma ? 1 : (long)x->rows * (x->kc / (32 * x->vec)) + x->rows * 4;
    long wy = y->mma ? 1 : (long)y->rows * (y->kc / (32 * y->vec)) + y->rows * 4;
    if (wx != wy)
        return wx > wy ? -1 : 1;
    if (a->item != b->item)
        return a->item < b->item ? -1 : 1;
    return a->arch - b->arch;
}

static void test_compile_sample(void **state)
{
    (void)state;
    char why[512] = "";
    const runtime_nvrtc *nv = runtime_nvrtc_load(why, sizeof why);
    if (!nv)
        fail_msg("NVRTC is required for this test (CI has it) but could not be loaded: %s", why);
    print_message("NVRTC %d.%d, seed 0x%x, %d threads\n", nv->major, nv->minor, SEED, THREADS);

    /* the sample */
    static item items[MAX_ITEMS];
    int n = 0, per[NUM_SKETCHES + 1] = {0}, per_mma[NUM_SKETCHES + 1] = {0}, rows_hist[33] = {0}, mma_total = 0;
    int stages_hist[SEARCH_MAX_STAGES + 1] = {0}, per_persist[NUM_SKETCHES + 1] = {0}, persist_mma = 0;
    uint64_t rng = SEED;
    for (int pi = 0; pi < NUM_PROBLEMS; ++pi) {
        const cproblem *cp = &problems[pi];
        search_problem p90 = to_problem(cp, 9), p80 = to_problem(cp, 8);
        long counts[SEARCH_SPACE_COUNTS];
        assert_true(search_space_count(&p90, counts) > 0);
        print_message("problem %s: op %d %s rows=%d %d->%d->%d%s: space %ld (split %ld, fused %ld, counter %ld, "
                      "cluster %ld)\n",
                      cp->tag, cp->op, cp->dtype == SEARCH_DTYPE_BF16 ? "bf16" : "fp16", cp->num_rows, cp->d_in,
                      cp->rank, cp->d_out[0], cp->num_slices > 1 ? "+" : "", counts[0], counts[1], counts[2],
                      counts[3], counts[4]);
        unsigned heavy = 0; /* rows values >= HEAVY_ROWS drawn so far (CUDA cores) */
        for (int sk = SEARCH_SKETCH_SPLIT; sk <= SEARCH_SKETCH_CLUSTER; ++sk) {
            int got = 0, got_mma = 0, tries = 0;
            while (got < cp->per_sketch || got_mma < cp->per_mma) {
                assert_true(++tries < 200000);
                search_schedule s;
                assert_int_equal(search_space_sample_sketch(&p90, sk, &rng, &s), 0);
                char w[256] = "";
                if (!search_space_legal(&p90, &s, w, sizeof w))
                    fail_msg("problem %s: a sampled schedule is illegal: %s", cp->tag, w);
                /* the sm_80 space holds the same schedules but the cluster sketch's */
                if (search_space_legal(&p80, &s, w, sizeof w) != (sk != SEARCH_SKETCH_CLUSTER))
                    fail_msg("problem %s: sketch %d on sm_80: %s", cp->tag, sk, w[0] ? w : "legal");
                assert_int_equal(s.sketch, sk);
                if (s.mma ? got_mma >= cp->per_mma : got >= cp->per_sketch)
                    continue; /* this kind is full: draw on for the other */
                if (!s.mma && s.rows >= HEAVY_ROWS && (heavy & s.rows))
                    continue;
                search_schedule key = search_schedule_module_key(&s);
                int dup = 0;
                for (int i = 0; i < n && !dup; ++i) {
                    search_schedule k2 = search_schedule_module_key(&items[i].s);
                    dup = items[i].dtype == (kernels_dtype)cp->dtype && items[i].rank == cp->rank &&
                          memcmp(&k2, &key, sizeof key) == 0;
                }
                if (dup)
                    continue;
                assert_true(n < MAX_ITEMS);
                items[n].problem = pi;
                items[n].s = s;
                items[n].dtype = (kernels_dtype)cp->dtype;
                items[n].rank = cp->rank;
                ++n;
                if (s.mma) {
                    ++got_mma;
                    ++mma_total;
                    per_mma[sk]++;
                } else {
                    ++got;
                    if (s.rows >= HEAVY_ROWS)
                        heavy |= s.rows;
                }
                rows_hist[s.rows]++;
                per[sk]++;
                stages_hist[s.stages]++;
                per_persist[sk] += s.persist;
                persist_mma += s.persist && s.mma;
            }
        }
    }
    print_message("sample: %d schedules (split %d, fused %d, counter %d, cluster %d; with mma %d: split %d, fused %d, "
                  "counter %d, cluster %d); rows per CTA 1: %d, 2: %d, 4: %d, 8: %d, 16: %d, 32: %d\n",
                  n, per[SEARCH_SKETCH_SPLIT], per[SEARCH_SKETCH_FUSED], per[SEARCH_SKETCH_FUSED_COUNTER],
                  per[SEARCH_SKETCH_CLUSTER], mma_total, per_mma[SEARCH_SKETCH_SPLIT], per_mma[SEARCH_SKETCH_FUSED],
                  per_mma[SEARCH_SKETCH_FUSED_COUNTER], per_mma[SEARCH_SKETCH_CLUSTER], rows_hist[1], rows_hist[2],
                  rows_hist[4], rows_hist[8], rows_hist[16], rows_hist[32]);
    assert_true(n >= 270);
    assert_true(rows_hist[32] >= 1); /* problem D: one (CUDA cores) */
    for (int sk = SEARCH_SKETCH_SPLIT; sk <= SEARCH_SKETCH_CLUSTER; ++sk) {
        assert_true(per[sk] >= 50);
        assert_true(per_mma[sk] > 0);
    }
    assert_true(mma_total >= 50);
    /* the cp.async ring at every stage count, and persistent grids of every sketch that has them, with and
     * without mma */
    print_message("stages 1: %d, 2: %d, 3: %d, 4: %d; persist: split %d, fused %d, counter %d, cluster %d (%d with "
                  "mma)\n",
                  stages_hist[1], stages_hist[2], stages_hist[3], stages_hist[4], per_persist[SEARCH_SKETCH_SPLIT],
                  per_persist[SEARCH_SKETCH_FUSED], per_persist[SEARCH_SKETCH_FUSED_COUNTER],
                  per_persist[SEARCH_SKETCH_CLUSTER], persist_mma);
    for (int st = 2; st <= SEARCH_MAX_STAGES; ++st)
        assert_true(stages_hist[st] >= 3);
    for (int sk = SEARCH_SKETCH_SPLIT; sk <= SEARCH_SKETCH_FUSED_COUNTER; ++sk)
        assert_true(per_persist[sk] >= 10);
    assert_int_equal(per_persist[SEARCH_SKETCH_CLUSTER], 0);
    assert_true(persist_mma >= 5);

    /* compile: THREADS workers over (schedule, arch) jobs */
    static job jobs[MAX_ITEMS * NUM_ARCHS];
    int njobs = 0;
    for (int i = 0; i < n; ++i)
        for (int a = 0; a < NUM_ARCHS; ++a)
            if (compiled_for(&items[i], a))
                jobs[njobs++] = (job){i, a};
    g_items = items;
    qsort(jobs, (size_t)njobs, sizeof jobs[0], job_cmp);
    result *results = calloc((size_t)n * NUM_ARCHS, sizeof *results);
    assert_non_null(results);
    pool pl = {nv, items, jobs, njobs, results, PTHREAD_MUTEX_INITIALIZER, 0};
    double t0 = now();
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; ++t)
        assert_int_equal(pthread_create(&th[t], NULL, worker, &pl), 0);
    for (int t = 0; t < THREADS; ++t)
        pthread_join(th[t], NULL);
    double wall = now() - t0;

    /* the table, in sample order */
    print_message("%-4s %-2s %-4s %-4s %-56s %-5s %5s | %-19s | %-23s | %s\n", "#", "pb", "type", "rank", "schedule",
                  "arch", "s", "regs s/e/f/c/cl", "spill st/ld s/e/f/c/cl", "");
    int failures = 0, spill_compiles = 0, spill_sched = 0, spill_per[NUM_SKETCHES + 1] = {0}, spill_mma = 0;
    double cpu = 0, slowest = 0;
    for (int i = 0; i < n; ++i) {
        const item *it = &items[i];
        char txt[96];
        search_schedule_format(&it->s, txt, sizeof txt);
        int sched_spills = 0;
        for (int a = 0; a < NUM_ARCHS; ++a) {
            const result *r = &results[i * NUM_ARCHS + a];
            if (!compiled_for(it, a))
                continue;
            if (!r->ok) {
                print_error("FAILED: #%d problem %s %s rank %d %s for sm_%d%d: %s\n", i, problems[it->problem].tag,
                            it->dtype == KERNELS_BF16 ? "bf16" : "fp16", it->rank, txt, archs[a][0], archs[a][1],
                            r->why);
                ++failures;
                continue;
            }
            cpu += r->seconds;
            slowest = r->seconds > slowest ? r->seconds : slowest;
            int sp = spill_bytes(&it->s, r);
            sched_spills |= sp > 0;
            spill_compiles += sp > 0;
            char regs[64], spills[80];
            snprintf(regs, sizeof regs, "%d/%d/%d/%d/%d", r->e[0].registers, r->e[1].registers, r->e[2].registers,
                     r->e[3].registers, r->e[4].registers);
            snprintf(spills, sizeof spills, "%d/%d %d/%d %d/%d %d/%d %d/%d", r->e[0].spill_stores,
                     r->e[0].spill_loads, r->e[1].spill_stores, r->e[1].spill_loads, r->e[2].spill_stores,
                     r->e[2].spill_loads, r->e[3].spill_stores, r->e[3].spill_loads, r->e[4].spill_stores,
                     r->e[4].spill_loads);
            print_message("%-4d %-2s %-4s %-4d %-56s sm_%d%d %5.1f | %-19s | %-23s | %s\n", i,
                          problems[it->problem].tag,
                          it->dtype == KERNELS_BF16 ? "bf16" : "fp16", it->rank, txt, archs[a][0], archs[a][1],
                          r->seconds, regs, spills, sp ? "SPILLS" : "");
        }
        spill_sched += sched_spills;
        spill_per[it->s.sketch] += sched_spills;
        spill_mma += sched_spills && it->s.mma;
    }
    print_message("summary: %d schedules (split %d, fused %d, counter %d, cluster %d; %d with mma), %d compiles "
                  "(cluster: sm_90 only), %d compiled, %d failed; %d compiles spill (marked SPILLS), %d schedules "
                  "spill on some arch (split %d, fused %d, counter %d, cluster %d; mma %d); %.0f s wall with %d "
                  "threads, %.0f s in NVRTC, slowest %.1f s\n",
                  n, per[SEARCH_SKETCH_SPLIT], per[SEARCH_SKETCH_FUSED], per[SEARCH_SKETCH_FUSED_COUNTER],
                  per[SEARCH_SKETCH_CLUSTER], mma_total, njobs, njobs - failures, failures, spill_compiles,
                  spill_sched, spill_per[SEARCH_SKETCH_SPLIT], spill_per[SEARCH_SKETCH_FUSED],
                  spill_per[SEARCH_SKETCH_FUSED_COUNTER], spill_per[SEARCH_SKETCH_CLUSTER], spill_mma, wall, THREADS,
                  cpu, slowest);
    free(results);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
