/*
 * test_records.c -- tuning records (search/search_record.c).
 *
 * - round trip over a deterministic sample of the schedule space: the four
 *   sketches (split, fused, counter, cluster), every rows/warps/vec value, loads in flight 1..16, split_k,
 *   cols, the tensor-core variant, legal ones only (search_schedule_legal), x
 *   several tasks (ops, dtypes, slices, ranks, layout classes) and targets, x
 *   every error_no with consistent flags: write -> parse gives the same
 *   fields, writing again gives the same bytes, and kernels_codegen of the
 *   parsed schedule gives byte-identical source (same hash);
 * - the record of docs/records.md is written exactly as printed there (and
 *   the page, when found, shows that line), and the steps of the split, fused
 *   and counter sketches are the ones written before the cluster sketch came
 *   (a hash of a fixed enumeration), so older records still parse;
 * - the cluster sketch: cluster sizes 1..16 with and without tensor cores and
 *   stages round-trip, and steps that do not describe it faithfully (another
 *   reduction, binding or interleave, a persistent grid, a cluster of 17, a
 *   shrink or expand task) are refused with a reason;
 * - the task and target follow the runtime's numbering and fingerprint text
 *   (runtime_op, dop_dtype, runtime_gpu_tag);
 * - malformed lines: a valid line cut at every byte, every byte of valid
 *   lines replaced by 31 byte classes (and by all 256 values at every 13th
 *   byte), random bytes and random token soup: -1 with a message, never a
 *   crash; a mutant that parses must be a valid record that round-trips, and
 *   no single-byte change inside the steps or the schedule text is accepted;
 * - targeted refusals, each with the message it must give: trailing bytes,
 *   unknown step kinds, inconsistent steps, wrong types, out-of-range
 *   numbers, missing and unknown members, newer versions, nesting, bad
 *   UTF-8, flags that contradict error_no;
 * - any JSON whitespace between tokens is accepted.
 *
 *   test_records --write-seeds DIR   writes valid records (the fuzz corpus seeds)
 *                                    and DIR/../records.dict, then exits
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels_codegen.h"
#include "runtime_internal.h"
#include "search_record.h"

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static search_schedule make(unsigned sketch, unsigned rows, unsigned warps, unsigned vec, unsigned kc,
                            unsigned split_k, unsigned cols, unsigned mma)
{
    return search_schedule_make(sketch, rows, warps, vec, kc, split_k, cols, mma, 1, 0);
}

/* make, then stages (cp.async ring, mma) and persist (persistent grid) */
static search_schedule make_sp(search_schedule s, unsigned stages, unsigned persist)
{
    s.stages = (uint8_t)stages;
    s.persist = (uint8_t)persist;
    return s;
}

static search_task task_apply(void)
{
    /* apply f16 4096 -> 4096, rank 16, adapter table, "uniform" with 64 rows */
    search_task t;
    memset(&t, 0, sizeof t);
    t.op = SEARCH_OP_APPLY;
    t.dtype = SEARCH_DTYPE_F16;
    t.weights = SEARCH_WEIGHTS_TABLE;
    t.num_slices = 1;
    t.d_in = 4096;
    t.d_out[0] = 4096;
    t.max_rank = 16;
    t.rows_log2 = 6;
    t.groups_log2 = 3;
    t.longest_log2 = 3;
    t.mean_log2 = 3;
    return t;
}

static search_target target_h200(void)
{
    search_target g;
    memset(&g, 0, sizeof g);
    strcpy(g.name, "NVIDIA H200");
    g.cc_major = 9;
    g.cc_minor = 0;
    g.sm_count = 132;
    g.l2_bytes = 62914560;
    g.smem_per_block = 232448;
    return g;
}

#define NUM_TASKS 5
static search_task sample_task(int i)
{
    search_task t = task_apply();
    switch (i) {
    case 1: /* bf16 fused q/k/v (GQA widths), rank 128, per-call arrays, a skewed mix with ranks that differ */
        t.dtype = SEARCH_DTYPE_BF16;
        t.weights = SEARCH_WEIGHTS_ARRAYS;
        t.num_slices = 3;
        t.d_out[0] = 4096;
        t.d_out[1] = 1024;
        t.d_out[2] = 1024;
        t.max_rank = 128;
        t.rows_log2 = 8;
        t.groups_log2 = 5;
        t.longest_log2 = 7;
        t.mean_log2 = 2;
        t.none_quarters = 1;
        t.ranks_differ = 1;
        break;
    case 2: /* shrink alone, odd d_in, rank 8, uploaded weights, 8 slices */
        t.op = SEARCH_OP_SHRINK;
        t.weights = SEARCH_WEIGHTS_UPLOAD;
        t.d_in = 3424;
        t.num_slices = 8;
        for (int k = 0; k < 8; ++k)
            t.d_out[k] = 11008 + k;
        t.max_rank = 8;
        t.rows_log2 = 0;
        t.groups_log2 = 0;
        t.longest_log2 = 0;
        t.mean_log2 = 0;
        t.none_quarters = 4;
        break;
    case 3: /* expand alone, d_in 1 (the extremes) */
        t.op = SEARCH_OP_EXPAND;
        t.d_in = 1;
        t.d_out[0] = SEARCH_DIM_MAX;
        t.max_rank = 64;
        t.rows_log2 = 62;
        break;
    case 4: /* apply, d_in at the API's limit, rank 1 */
        t.d_in = SEARCH_DIM_MAX;
        t.d_out[0] = 14336;
        t.max_rank = 1;
        break;
    default:
        break;
    }
    return t;
}

#define NUM_TARGETS 3
static search_target sample_target(int i)
{
    search_target g = target_h200();
    if (i == 1) { /* H100 SXM; a name that needs escaping */
        strcpy(g.name, "NVIDIA \"H100\" 80GB\\HBM3\t\xc3\xa9");
        g.sm_count = 132;
        g.l2_bytes = 52428800;
    } else if (i == 2) { /* an sm_120 part, empty name, zero L2 and smem */
        g.name[0] = '\0';
        g.cc_major = 12;
        g.cc_minor = 0;
        g.sm_count = 1;
        g.l2_bytes = 0;
        g.smem_per_block = 0;
    }
    return g;
}

static double rnd_double(double scale)
{
    return ldexp((double)(rnd() >> 11), -53) * scale;
}

/* A consistent outcome for error_no e. */
static void fill_outcome(search_record *r, int e)
{
    r->error_no = e;
    r->compiled = e != SEARCH_ERR_COMPILE && (e != SEARCH_ERR_TIMEOUT || rnd() % 2);
    r->ran = r->compiled && e != SEARCH_ERR_LAUNCH &&
             (e == SEARCH_ERR_OK || e == SEARCH_ERR_WRONG_RESULT || rnd() % 2);
    r->matched = e == SEARCH_ERR_OK;
    r->ncosts = 0;
    memset(r->costs_us, 0, sizeof r->costs_us);
    if (r->ran && (e == SEARCH_ERR_OK || rnd() % 2)) {
        r->ncosts = 1 + (int)(rnd() % SEARCH_RECORD_MAX_COSTS);
        for (int i = 0; i < r->ncosts; ++i)
            r->costs_us[i] = rnd() % 3 ? rnd_double(1000.0) : (double)(rnd() % 100000) / 100.0;
    }
    r->all_cost_s = rnd() % 2 ? rnd_double(30.0) : 0.0;
    r->timestamp = (int64_t)(1700000000 + rnd() % 100000000);
    r->spills = false;
    for (int i = 0; i < SEARCH_ENTRY_COUNT; ++i) {
        r->registers[i] = r->compiled ? (int)(rnd() % 256) : 0;
        r->spill_bytes[i] = r->compiled && rnd() % 5 == 0 ? (int)(rnd() % 4096) : 0;
        r->spills |= r->spill_bytes[i] > 0;
    }
    r->max_error = -1.0;
    if (r->ran && (r->matched || rnd() % 4))
        r->max_error = r->matched ? rnd_double(1e-2) : (rnd() % 3 ? rnd_double(10.0) : INFINITY);
}

static void expect_same(const search_record *a, const search_record *b)
{
    assert_memory_equal(&a->task, &b->task, sizeof a->task);
    assert_string_equal(a->target.name, b->target.name);
    assert_int_equal(a->target.cc_major, b->target.cc_major);
    assert_int_equal(a->target.cc_minor, b->target.cc_minor);
    assert_int_equal(a->target.sm_count, b->target.sm_count);
    assert_int_equal(a->target.l2_bytes, b->target.l2_bytes);
    assert_int_equal(a->target.smem_per_block, b->target.smem_per_block);
    assert_memory_equal(&a->sched, &b->sched, sizeof a->sched);
    assert_int_equal(a->ncosts, b->ncosts);
    for (int i = 0; i < SEARCH_RECORD_MAX_COSTS; ++i)
        assert_true(a->costs_us[i] == b->costs_us[i]);
    assert_int_equal(a->error_no, b->error_no);
    assert_true(a->all_cost_s == b->all_cost_s);
    assert_int_equal(a->timestamp, b->timestamp);
    assert_int_equal(a->compiled, b->compiled);
    assert_int_equal(a->ran, b->ran);
    assert_int_equal(a->matched, b->matched);
    assert_int_equal(a->spills, b->spills);
    assert_memory_equal(a->registers, b->registers, sizeof a->registers);
    assert_memory_equal(a->spill_bytes, b->spill_bytes, sizeof a->spill_bytes);
    assert_true(a->max_error == b->max_error);
    assert_int_equal(a->version, b->version);
}

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}

/* write -> parse -> same fields -> same bytes again; returns the line's length. */
static int round_trip(const search_record *r, char *line)
{
    char why[512] = "";
    if (!search_record_check(r, why, sizeof why)) {
        char t[128];
        search_schedule_format(&r->sched, t, sizeof t);
        fail_msg("record of %s rejected: %s", t, why);
    }
    int n = search_record_write(r, line, SEARCH_RECORD_LINE_MAX);
    assert_true(n > 0 && n < SEARCH_RECORD_LINE_MAX);
    assert_int_equal((size_t)n, strlen(line));
    search_record back;
    if (search_record_parse(line, (size_t)n, &back, why, sizeof why) != 0)
        fail_msg("parse of a written record failed: %s\n%s", why, line);
    expect_same(r, &back);
    char again[SEARCH_RECORD_LINE_MAX];
    assert_int_equal(search_record_write(&back, again, sizeof again), n);
    assert_memory_equal(line, again, (size_t)n);
    return n;
}

/* ---- round trip over the schedule space ---------------------------------------- */

static void test_round_trip_sample(void **state)
{
    (void)state;
    static const unsigned rows[] = {1, 2, 4, 8, 16, 32}, warps[] = {1, 2, 4, 8, 16}, vecs[] = {1, 2, 4, 8};
    static const unsigned cols[] = {1, 7, 32, 100, 256, 1000, 4096}, splits[] = {1, 2, 3, 8, 13, 64};
    char line[SEARCH_RECORD_LINE_MAX];
    int records = 0, sources = 0, illegal = 0, longest = 0;
    unsigned seen_rows = 0, seen_warps = 0, seen_vec = 0, seen_u = 0, seen_mma = 0, seen_sketch = 0;
    unsigned seen_stages = 0, seen_persist = 0;
    double t0 = now_s();
    for (int ti = 0; ti < NUM_TASKS; ++ti) {
        search_task task = sample_task(ti);
        for (int gi = 0; gi < NUM_TARGETS; ++gi) {
            search_target tgt = sample_target(gi);
            for (unsigned sk = SEARCH_SKETCH_SPLIT; sk <= SEARCH_SKETCH_CLUSTER; ++sk) {
                for (unsigned mma = 0; mma <= 1; ++mma) {
                    for (int a = 0; a < 6; ++a)
                        for (int b = 0; b < 5; ++b)
                            for (int c = 0; c < 4; ++c) {
                                /* loads in flight: 1, 16 and one more, chosen by the generator */
                                unsigned umax = mma ? 8 : 16;
                                unsigned us[3] = {1, umax, 2 + (unsigned)(rnd() % (umax - 2))};
                                for (int k = 0; k < 3; ++k) {
                                    unsigned u = us[k];
                                    unsigned kc = mma ? 16 * u : 32 * vecs[c] * u;
                                    unsigned split = sk == SEARCH_SKETCH_FUSED     ? 1
                                                     : sk == SEARCH_SKETCH_CLUSTER ? 1 + (unsigned)(rnd() % 16)
                                                                                   : splits[rnd() % 6];
                                    unsigned cl = mma ? 8 * (1 + (unsigned)(rnd() % 512)) : cols[rnd() % 7];
                                    /* with mma: stages 1..4 (the ring may not fit: then illegal); persist either
                                     * (the cluster sketch has no persistent grid) */
                                    search_schedule s = make_sp(make(sk, rows[a], warps[b], vecs[c], kc, split, cl, mma),
                                                                mma ? 1 + (unsigned)(rnd() % 4) : 1,
                                                                (unsigned)(rnd() % 2) && sk != SEARCH_SKETCH_CLUSTER);
                                    if (!search_schedule_legal(&s, task.max_rank, NULL, 0) ||
                                        (task.op != SEARCH_OP_APPLY && sk != SEARCH_SKETCH_SPLIT)) {
                                        ++illegal;
                                        continue;
                                    }
                                    search_record r;
                                    search_record_init(&r);
                                    r.task = task;
                                    r.target = tgt;
                                    r.sched = s;
                                    fill_outcome(&r, (int)(rnd() % SEARCH_ERR_COUNT));
                                    int n = round_trip(&r, line);
                                    longest = n > longest ? n : longest;
                                    ++records;
                                    seen_rows |= s.rows;
                                    seen_warps |= s.warps;
                                    seen_vec |= s.vec;
                                    seen_u |= 1u << u;
                                    seen_mma |= 1u << mma;
                                    seen_stages |= 1u << s.stages;
                                    seen_persist |= 1u << s.persist;
                                    seen_sketch |= 1u << sk;
                                    /* the parsed schedule generates the same kernel source */
                                    if (ti == 0 || ti == 1 || (records % 7) == 0) {
                                        search_record back;
                                        assert_int_equal(search_record_parse(line, (size_t)n, &back, NULL, 0), 0);
                                        kernels_dtype dt = task.dtype == SEARCH_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16;
                                        char *s1 = NULL, *s2 = NULL;
                                        size_t n1 = 0, n2 = 0;
                                        char why[256];
                                        assert_int_equal(kernels_codegen(&s, dt, task.max_rank, &s1, &n1, why, sizeof why), 0);
                                        assert_int_equal(
                                            kernels_codegen(&back.sched, dt, task.max_rank, &s2, &n2, why, sizeof why), 0);
                                        assert_int_equal(n1, n2);
                                        assert_true(fnv1a(s1, n1) == fnv1a(s2, n2));
                                        assert_memory_equal(s1, s2, n1);
                                        free(s1);
                                        free(s2);
                                        ++sources;
                                    }
                                }
                            }
                }
            }
        }
    }
    assert_int_equal(seen_rows, 1 | 2 | 4 | 8 | 16 | 32);
    assert_int_equal(seen_warps, 1 | 2 | 4 | 8 | 16);
    assert_int_equal(seen_vec, 1 | 2 | 4 | 8);
    assert_int_equal(seen_u, 0x1fffe); /* 1..16 */
    assert_int_equal(seen_mma, 3);
    assert_int_equal(seen_stages, 0x1e); /* 1..4 */
    assert_int_equal(seen_persist, 3);
    assert_int_equal(seen_sketch, (1u << SEARCH_SKETCH_SPLIT) | (1u << SEARCH_SKETCH_FUSED) |
                                      (1u << SEARCH_SKETCH_FUSED_COUNTER) | (1u << SEARCH_SKETCH_CLUSTER));
    print_message("%d records round-tripped (%d illegal combinations skipped), %d kernel sources identical, "
                  "longest line %d bytes, %.2f s\n",
                  records, illegal, sources, longest, now_s() - t0);
}

/* ---- the steps of the older sketches ------------------------------------------------- */

/*
 * FNV-1a of the step lists of a fixed enumeration of split, fused and counter
 * schedules (all five tasks; every rows, warps and vec value; loads in flight
 * 1, 3 and the most; split-K 1, 3, 8; two column counts; tensor cores with
 * stages 1..4; persistent or not; legal ones only), each list followed by a
 * newline. The parser accepts exactly what the generator writes, so while
 * this hash holds, every record written before the cluster sketch was added
 * (tuning logs, caches) parses as it did.
 */
static uint64_t older_steps_hash(int *count)
{
    static const unsigned rows[] = {1, 2, 4, 8, 16, 32}, warps[] = {1, 2, 4, 8, 16}, vecs[] = {1, 2, 4, 8};
    static const unsigned splits[] = {1, 3, 8}, cols[] = {7, 256}, loads[2][3] = {{1, 3, 16}, {1, 3, 8}};
    static char buf[SEARCH_RECORD_LINE_MAX];
    uint64_t h = 0xcbf29ce484222325ull;
    *count = 0;
    for (int ti = 0; ti < NUM_TASKS; ++ti) {
        search_task task = sample_task(ti);
        for (unsigned sk = SEARCH_SKETCH_SPLIT; sk <= SEARCH_SKETCH_FUSED_COUNTER; ++sk)
            for (unsigned mma = 0; mma <= 1; ++mma)
                for (int a = 0; a < 6; ++a)
                    for (int b = 0; b < 5; ++b)
                        for (int c = 0; c < 4; ++c)
                            for (int k = 0; k < 3; ++k)
                                for (int sp = 0; sp < 3; ++sp)
                                    for (int cl = 0; cl < 2; ++cl)
                                        for (unsigned st = 1; st <= (mma ? 4u : 1u); ++st)
                                            for (unsigned pe = 0; pe <= 1; ++pe) {
                                                unsigned u = loads[mma][k], kc = mma ? 16 * u : 32 * vecs[c] * u;
                                                search_schedule s = make_sp(
                                                    make(sk, rows[a], warps[b], vecs[c], kc,
                                                         sk == SEARCH_SKETCH_FUSED ? 1 : splits[sp],
                                                         mma ? 8 * cols[cl] : cols[cl], mma),
                                                    st, pe);
                                                if ((sk == SEARCH_SKETCH_FUSED && sp > 0) ||
                                                    (task.op != SEARCH_OP_APPLY && sk != SEARCH_SKETCH_SPLIT) ||
                                                    !search_schedule_legal(&s, task.max_rank, NULL, 0))
                                                    continue;
                                                int n = search_record_steps(&task, &s, buf, sizeof buf);
                                                assert_true(n > 0);
                                                buf[n] = '\n';
                                                for (int i = 0; i <= n; ++i)
                                                    h = (h ^ (unsigned char)buf[i]) * 0x100000001b3ull;
                                                ++*count;
                                            }
    }
    return h;
}

static void test_older_steps(void **state)
{
    (void)state;
    int count;
    uint64_t h = older_steps_hash(&count);
    print_message("%d step lists of the split, fused and counter sketches, FNV-1a %016llx\n", count,
                  (unsigned long long)h);
    /* as written by the generator of commit d475bb1, before the cluster sketch's steps */
    assert_int_equal(count, 44540);
    assert_true(h == 0x6678424e37b82fe5ull);
}

/* ---- the record of docs/records.md ---------------------------------------------------- */

/* The record of docs/records.md: the schedule, task, target and cost the page
 * names; the relative error of the check and the compile + check seconds
 * measured on an H200 on 2026-11-21; registers and spill stores from NVRTC
 * 13.0's ptxas report for sm_90 (the shrink, fused and counter kernels spill). */
static search_record doc_record(void)
{
    search_record r;
    search_record_init(&r);
    r.task = task_apply();
    r.target = target_h200();
    assert_int_equal(search_schedule_parse("split rows=2 warps=8 vec=8 kc=1024 splitk=8 cols=256", &r.sched), 0);
    r.ncosts = 1;
    r.costs_us[0] = 12.65;
    r.error_no = SEARCH_ERR_OK;
    r.all_cost_s = 0.645;
    r.timestamp = 1795256235; /* 2026-11-21T10:17:15Z */
    r.compiled = r.ran = r.matched = true;
    r.registers[SEARCH_ENTRY_SHRINK] = 80;
    r.registers[SEARCH_ENTRY_EXPAND] = 48;
    r.registers[SEARCH_ENTRY_FUSED] = 80;
    r.registers[SEARCH_ENTRY_COUNTER] = 80;
    r.spill_bytes[SEARCH_ENTRY_SHRINK] = 20;
    r.spill_bytes[SEARCH_ENTRY_FUSED] = 28;
    r.spill_bytes[SEARCH_ENTRY_COUNTER] = 28;
    r.spills = true;
    r.max_error = 0.000207;
    return r;
}

/* The doc record's task, target and outcome with schedule s of the cluster sketch. Its module holds
 * dop_cluster only, which is not one of the four entry points a record reports: registers and spill
 * stores all read 0 (not recorded). */
static search_record cluster_record(search_schedule s)
{
    search_record r = doc_record();
    r.sched = s;
    memset(r.registers, 0, sizeof r.registers);
    memset(r.spill_bytes, 0, sizeof r.spill_bytes);
    r.spills = false;
    return r;
}

static const char doc_line[] =
    "{\"i\":[[\"apply\",\"f16\",4096,[4096],16,\"table\",{\"rows\":6,\"groups\":3,\"longest\":3,\"mean\":3,\"none\":0,"
    "\"rdiff\":0}],\"sm_90/132sm/61440KiB-L2/227KiB-smem\",[[\"CR\",\"v\"],[\"CI\",\"x.f32\"],[\"CI\",\"A.f32\"],"
    "[\"CI\",\"B.f32\"],[\"CHR\",\"layout\",\"shared\",[\"v\",\"y\"],\"tile\"],[\"SP\",\"v\",\"i\",null,[2],1],"
    "[\"SP\",\"v\",\"k\",4096,[8],0],[\"SP\",\"v\",\"k.1\",512,[null],0],[\"SP\",\"v\",\"k.1.1\",null,[4,32,8],1],"
    "[\"FU\",\"v\",[\"k.1.0\",\"r\"]],[\"SP\",\"v\",\"k.1.0@r\",null,[8],1],[\"RE\",\"v\",[\"i.0\",\"k.0\",\"s\","
    "\"i.1\",\"k.1.0@r.0\",\"k.1.0@r.1\",\"k.1.1.0\",\"k.1.1.1\",\"k.1.1.2\",\"k.1.1.3\"]],[\"PR\",\"v\",\"i.1\","
    "\"group_by_adapter\"],[\"AN\",\"v\",\"i.0\",\"blockIdx.x\"],[\"AN\",\"v\",\"k.0\",\"blockIdx.y\"],[\"AN\",\"v\","
    "\"s\",\"blockIdx.z\"],[\"AN\",\"v\",\"k.1.0@r.1\",\"warp\"],[\"AN\",\"v\",\"k.1.1.1\",\"unroll\"],[\"AN\",\"v\","
    "\"k.1.1.2\",\"lane\"],[\"AN\",\"v\",\"k.1.1.3\",\"vectorize\"],[\"PR\",\"v\",\"k.1.1.3\",\"vector_if_aligned\"],"
    "[\"RF\",\"v\",\"k.1.1.2\",32,\"shuffle\"],[\"RF\",\"v\",\"k.1.0\",null,\"atomic.shared\"],[\"RF\",\"v\",\"k.0\","
    "8,\"atomic.global\"],[\"CHW\",\"v\",\"global\",\"v.fp32\"],[\"CHW\",\"v\",\"shared\",\"sv\"],[\"CA\",\"sv\",\"v\","
    "\"s\"],[\"CHW\",\"v\",\"local\",\"acc\"],[\"CA\",\"acc\",\"v\",\"k.1.0@r.1\"],[\"CHR\",\"A\",\"local\",[\"v\"],"
    "\"a\"],[\"CA\",\"a\",\"v\",\"k.1.1.0\"],[\"CHR\",\"x\",\"local\",[\"v\"],\"ux\"],[\"CA\",\"ux\",\"v\",\"k.1.1.1\"],"
    "[\"FSP\",\"y\",\"i\",5,1],[\"SP\",\"y\",\"n\",null,[256],1],[\"FFSP\",\"y\",\"n.1\",[[10,0],[8,1]],1],[\"SP\","
    "\"y\",\"r\",null,[8],1],[\"RE\",\"y\",[\"i.0\",\"n.0\",\"s\",\"i.1\",\"n.1.0\",\"n.1.1\",\"r.0\",\"r.1\"]],[\"PR\","
    "\"y\",\"i.1\",\"group_by_adapter\"],[\"AN\",\"y\",\"i.0\",\"blockIdx.x\"],[\"AN\",\"y\",\"n.0\",\"blockIdx.y\"],"
    "[\"PR\",\"y\",\"n.0\",\"grid_stride\"],[\"AN\",\"y\",\"s\",\"blockIdx.z\"],[\"AN\",\"y\",\"n.1.1\",\"thread\"],"
    "[\"PR\",\"y\",\"r.0\",\"unroll$4\"],[\"AN\",\"y\",\"r.1\",\"vectorize\"],[\"PR\",\"y\",\"r.1\","
    "\"vector_if_aligned\"],[\"CHR\",\"v.fp32\",\"shared\",[\"y\"],\"sv.y\"],[\"CA\",\"sv.y\",\"y\",\"s\"],[\"CHW\","
    "\"y\",\"local\",\"acc.y\"],[\"CA\",\"acc.y\",\"y\",\"n.1.1\"],[\"CHR\",\"y\",\"local\",[\"y\"],\"yv\"],[\"CA\","
    "\"yv\",\"y\",\"n.1.1\"],[\"CHR\",\"B\",\"local\",[\"y\"],\"b\"],[\"CA\",\"b\",\"y\",\"r.0\"]]],\"r\":[[12.65],0,"
    "0.645,1795256235],\"v\":1,\"x\":{\"compiled\":1,\"ran\":1,\"matched\":1,\"spills\":1,\"regs\":[80,48,80,80],"
    "\"spill\":[20,0,28,28],\"err\":0.000207,\"gpu\":\"NVIDIA H200\",\"sched\":\"split rows=2 warps=8 vec=8 kc=1024 "
    "splitk=8 cols=256\"}}";

static void test_doc_record(void **state)
{
    (void)state;
    search_record r = doc_record();
    char line[SEARCH_RECORD_LINE_MAX];
    int n = round_trip(&r, line);
    if (strcmp(line, doc_line) != 0)
        fail_msg("the record of docs/records.md changed; update the page and this test:\n%s", line);
    assert_int_equal((size_t)n, strlen(doc_line));
#ifdef DOP_SOURCE_DIR
    /* the page shows exactly this line (skipped where the sources are not at hand) */
    FILE *f = fopen(DOP_SOURCE_DIR "/docs/records.md", "rb");
    if (!f) {
        print_message("docs/records.md not found; not compared\n");
        return;
    }
    static char page[1 << 17];
    size_t got = fread(page, 1, sizeof page - 1, f);
    fclose(f);
    page[got] = '\0';
    if (!strstr(page, doc_line))
        fail_msg("docs/records.md does not show the record its writer writes:\n%s", doc_line);
#endif
}

/* ---- agreement with the runtime -------------------------------------------------- */

static void test_runtime_agreement(void **state)
{
    (void)state;
    assert_int_equal(SEARCH_OP_APPLY, RUNTIME_OP_APPLY);
    assert_int_equal(SEARCH_OP_SHRINK, RUNTIME_OP_SHRINK);
    assert_int_equal(SEARCH_OP_EXPAND, RUNTIME_OP_EXPAND);
    assert_int_equal(SEARCH_DTYPE_F16, DOP_DTYPE_F16);
    assert_int_equal(SEARCH_DTYPE_BF16, DOP_DTYPE_BF16);
    assert_int_equal(SEARCH_MAX_SLICES, DOP_MAX_SLICES);
    for (int i = 0; i < NUM_TARGETS; ++i) {
        search_target t = sample_target(i);
        runtime_gpu g = {t.cc_major, t.cc_minor, t.sm_count, (int)t.l2_bytes, t.smem_per_block};
        char a[128], b[128];
        runtime_gpu_tag(&g, a, sizeof a);
        search_target_tag(&t, b, sizeof b);
        assert_string_equal(a, b);
    }
    char tag[128];
    search_target h = target_h200();
    search_target_tag(&h, tag, sizeof tag);
    assert_string_equal(tag, "sm_90/132sm/61440KiB-L2/227KiB-smem");
    for (int e = 0; e < SEARCH_ERR_COUNT; ++e)
        assert_non_null(search_error_name(e));
    assert_null(search_error_name(SEARCH_ERR_COUNT));
    assert_null(search_error_name(-1));
    assert_string_equal(search_error_name(SEARCH_ERR_WRONG_RESULT), "wrong_result");
}

/* ---- the flags and error_no ---------------------------------------------------- */

static void expect_check_fails(const search_record *r, const char *needle)
{
    char why[512] = "", line[SEARCH_RECORD_LINE_MAX];
    assert_false(search_record_check(r, why, sizeof why));
    if (!strstr(why, needle))
        fail_msg("check said \"%s\", expected it to mention \"%s\"", why, needle);
    assert_int_equal(search_record_write(r, line, sizeof line), -1);
    assert_string_equal(line, "");
}

static void test_flags(void **state)
{
    (void)state;
    char line[SEARCH_RECORD_LINE_MAX];
    for (int e = 0; e < SEARCH_ERR_COUNT; ++e)
        for (int k = 0; k < 20; ++k) {
            search_record r = doc_record();
            fill_outcome(&r, e);
            round_trip(&r, line);
        }
    search_record r = doc_record();
    r.error_no = SEARCH_ERR_COMPILE;
    expect_check_fails(&r, "matched");
    r = doc_record();
    r.matched = false;
    expect_check_fails(&r, "matched");
    r = doc_record();
    r.compiled = false;
    expect_check_fails(&r, "ran without having compiled");
    r.ran = r.matched = false;
    r.error_no = SEARCH_ERR_COMPILE;
    r.ncosts = 0;
    r.costs_us[0] = 0;
    r.max_error = -1;
    expect_check_fails(&r, "registers and spill bytes must be 0");
    memset(r.registers, 0, sizeof r.registers);
    memset(r.spill_bytes, 0, sizeof r.spill_bytes);
    r.spills = false;
    round_trip(&r, line);
    r = doc_record();
    r.ncosts = 0;
    r.costs_us[0] = 0;
    expect_check_fails(&r, "at least one cost");
    r = doc_record();
    r.spills = false;
    expect_check_fails(&r, "spills is 0");
    memset(r.spill_bytes, 0, sizeof r.spill_bytes);
    r.spills = true;
    expect_check_fails(&r, "spills is 1");
    r = doc_record();
    r.max_error = NAN;
    expect_check_fails(&r, "max_error");
    r = doc_record();
    r.max_error = INFINITY;
    expect_check_fails(&r, "matched with max_error");
    r = doc_record();
    r.costs_us[0] = -1;
    expect_check_fails(&r, "costs_us[0]");
    r = doc_record();
    r.costs_us[3] = 1;
    expect_check_fails(&r, "past ncosts");
    r = doc_record();
    r.all_cost_s = INFINITY;
    expect_check_fails(&r, "all_cost_s");
    r = doc_record();
    r.error_no = SEARCH_ERR_LAUNCH;
    r.matched = false;
    expect_check_fails(&r, "launch");
    r = doc_record();
    r.sched.kc = 1000;
    expect_check_fails(&r, "illegal");
    r = doc_record();
    r.task.op = SEARCH_OP_SHRINK;
    r.sched = make(SEARCH_SKETCH_FUSED, 1, 16, 8, 2048, 1, 256, 0);
    expect_check_fails(&r, "split sketch");
    r = doc_record();
    r.task.d_out[1] = 5;
    expect_check_fails(&r, "d_out[1]");
    r = doc_record();
    r.target.l2_bytes = 1000;
    expect_check_fails(&r, "l2_bytes");
    r = doc_record();
    memcpy(r.target.name, "\xff\xfe", 3);
    expect_check_fails(&r, "UTF-8");
    r = doc_record();
    r.version = 2;
    expect_check_fails(&r, "version");
    /* a spilling schedule is marked (the doc record's does), and the mark survives the round trip */
    r = doc_record();
    round_trip(&r, line);
    assert_non_null(strstr(line, "\"spills\":1,\"regs\":[80,48,80,80],\"spill\":[20,0,28,28]"));
    memset(r.spill_bytes, 0, sizeof r.spill_bytes);
    r.spills = false;
    round_trip(&r, line);
    assert_non_null(strstr(line, "\"spills\":0,\"regs\":[80,48,80,80],\"spill\":[0,0,0,0]"));
    /* a buffer one byte short fails cleanly */
    r = doc_record();
    int n = search_record_write(&r, line, sizeof line);
    assert_int_equal(search_record_write(&r, line, (size_t)n), -1);
    assert_int_equal(search_record_write(&r, line, (size_t)n + 1), n);
}

/* ---- malformed input ---------------------------------------------------------- */

static int g_accepted, g_rejected;

/* line[0 .. n) must be refused with a message, or be a valid record that round-trips. */
static int parse_any(const char *p, size_t n)
{
    search_record r;
    char why[512];
    why[0] = '\0';
    int rc = search_record_parse(p, n, &r, why, sizeof why);
    if (rc != 0) {
        assert_int_equal(rc, -1);
        if (!why[0])
            fail_msg("a refusal without a message");
        search_record zero;
        memset(&zero, 0, sizeof zero);
        assert_memory_equal(&r, &zero, sizeof r);
        ++g_rejected;
        return rc;
    }
    ++g_accepted;
    char line[SEARCH_RECORD_LINE_MAX];
    int m = search_record_write(&r, line, sizeof line);
    assert_true(m > 0);
    search_record back;
    assert_int_equal(search_record_parse(line, (size_t)m, &back, why, sizeof why), 0);
    expect_same(&r, &back);
    return 0;
}

/* Valid lines of every shape: split, fused, cluster, counter, mma, shrink and expand tasks, a failed compile.
 * The first MUTATED_LINES get every single-byte mutation (test_mutated). */
#define NUM_VALID_LINES 12
#define MUTATED_LINES 6
static int valid_lines(char lines[][SEARCH_RECORD_LINE_MAX], int max)
{
    int n = 0;
    search_record r = doc_record();
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r.sched = make(SEARCH_SKETCH_FUSED, 1, 16, 8, 2048, 1, 256, 0);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = doc_record();
    r.sched = make(SEARCH_SKETCH_SPLIT, 16, 4, 8, 64, 4, 128, 1);
    r.target = sample_target(1);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = doc_record();
    r.task = sample_task(1);
    r.sched = make(SEARCH_SKETCH_FUSED, 16, 8, 8, 128, 1, 64, 1);
    fill_outcome(&r, SEARCH_ERR_WRONG_RESULT);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = cluster_record(make(SEARCH_SKETCH_CLUSTER, 2, 8, 8, 1024, 8, 256, 0));
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = cluster_record(make_sp(make(SEARCH_SKETCH_CLUSTER, 16, 4, 8, 16, 16, 128, 1), 3, 0));
    r.task = sample_task(1);
    r.target = sample_target(1);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = doc_record();
    r.sched = make(SEARCH_SKETCH_FUSED_COUNTER, 4, 8, 4, 256, 16, 512, 0);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r.sched = make(SEARCH_SKETCH_FUSED_COUNTER, 16, 16, 8, 128, 2, 64, 1);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = doc_record();
    r.task = sample_task(2);
    r.sched = make(SEARCH_SKETCH_SPLIT, 4, 2, 2, 256, 3, 100, 0);
    fill_outcome(&r, SEARCH_ERR_COMPILE);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = doc_record();
    r.task = sample_task(3);
    r.sched = make(SEARCH_SKETCH_SPLIT, 32, 1, 1, 32, 1, 1, 0);
    fill_outcome(&r, SEARCH_ERR_TIMEOUT);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r = doc_record();
    r.sched = make_sp(make(SEARCH_SKETCH_SPLIT, 16, 4, 8, 64, 4, 128, 1), 3, 1);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    r.sched = make_sp(make(SEARCH_SKETCH_FUSED, 16, 8, 8, 128, 1, 64, 1), 2, 1);
    search_record_write(&r, lines[n++], SEARCH_RECORD_LINE_MAX);
    assert_true(n <= max);
    for (int i = 0; i < n; ++i)
        assert_true(strlen(lines[i]) > 100);
    return n;
}

static void test_truncated(void **state)
{
    (void)state;
    static char lines[NUM_VALID_LINES][SEARCH_RECORD_LINE_MAX];
    int nl = valid_lines(lines, NUM_VALID_LINES);
    g_accepted = g_rejected = 0;
    for (int l = 0; l < nl; ++l) {
        size_t n = strlen(lines[l]);
        assert_int_equal(parse_any(lines[l], n), 0);
        for (size_t cut = 0; cut < n; ++cut) {
            /* a copy of exactly cut bytes, so reading past it is caught by ASan */
            char *p = malloc(cut ? cut : 1);
            memcpy(p, lines[l], cut);
            assert_int_equal(parse_any(p, cut), -1);
            free(p);
        }
    }
    print_message("%d cuts refused\n", g_rejected);
}

static void test_mutated(void **state)
{
    (void)state;
    static char lines[NUM_VALID_LINES][SEARCH_RECORD_LINE_MAX];
    int nl = valid_lines(lines, NUM_VALID_LINES);
    static const unsigned char classes[] = {0x00, '\t', '\n', '\r', 0x1f, ' ', '"', ',', '-', '.', '/', '0', '1', '9',
                                            ':', 'E', 'e', 'n', 'u', '[', '\\', ']', '{', '}', 0x7f, 0x80, 0xc3,
                                            0xe2, 0xff};
    double t0 = now_s();
    long long tried = 0;
    g_accepted = g_rejected = 0;
    for (int l = 0; l < nl; ++l) {
        size_t n = strlen(lines[l]);
        char *p = malloc(n);
        /* the bytes that no single-byte change may alter and still be accepted: the
         * steps (from the target's closing quote to "],\"r\"") and the schedule text */
        const char *st = strstr(lines[l], "-smem\",["), *se = strstr(lines[l], "]],\"r\":");
        const char *xs = strstr(lines[l], "\"sched\":\"");
        assert_non_null(st);
        assert_non_null(se);
        assert_non_null(xs);
        size_t lo = (size_t)(st - lines[l]) + 7, hi = (size_t)(se - lines[l]) + 1;
        size_t slo = (size_t)(xs - lines[l]) + 9, shi = n - 2;
        for (size_t i = 0; i < n; ++i) {
            int all = i % 13 == 0 && l < 2;
            if (l >= MUTATED_LINES && !all)
                break; /* the counter, shrink, expand and staged lines: the cuts and the sample cover them */
            int count = all ? 256 : (int)(sizeof classes + 2);
            for (int v = 0; v < count; ++v) {
                unsigned char b = all ? (unsigned char)v
                                  : v < (int)sizeof classes ? classes[v]
                                                            : (unsigned char)(lines[l][i] ^ (v == (int)sizeof classes ? 1 : 0x20));
                if (b == (unsigned char)lines[l][i])
                    continue;
                memcpy(p, lines[l], n);
                p[i] = (char)b;
                int rc = parse_any(p, n);
                ++tried;
                if (rc == 0 && ((i >= lo && i < hi) || (i >= slo && i < shi)))
                    fail_msg("line %d: byte %zu changed to 0x%02x inside the steps or schedule text was accepted:\n%.*s",
                             l, i, b, (int)n, p);
            }
        }
        free(p);
    }
    print_message("%lld single-byte mutants: %d refused, %d accepted (numbers, names, flags outside the steps: each "
                  "a valid record that round-trips), %.2f s\n",
                  tried, g_rejected, g_accepted, now_s() - t0);
}

static void test_random_bytes(void **state)
{
    (void)state;
    static const char *const tokens[] = {
        "{", "}", "[", "]", ",", ":", "\"i\"", "\"r\"", "\"v\"", "\"x\"", "1", "0", "-1", "1e999", "0.5", "null",
        "true", "\"SP\"", "\"v\"", "\"k\"", "\"apply\"", "\"f16\"", "[[", "]]", "\"\\u0000\"", "\"\\ud800\"", " ",
        "\"sm_90/132sm/61440KiB-L2/227KiB-smem\"", "\"CR\"", "\"CA\"", "4096", "[null]", "\"\xff\""};
    const int ntok = (int)(sizeof tokens / sizeof tokens[0]);
    char buf[4096];
    g_accepted = g_rejected = 0;
    for (int it = 0; it < 20000; ++it) {
        size_t n = 0;
        if (it % 2) {
            n = rnd() % sizeof buf;
            for (size_t i = 0; i < n; ++i)
                buf[i] = (char)rnd();
        } else {
            int k = (int)(rnd() % 300);
            for (int j = 0; j < k; ++j) {
                const char *t = tokens[rnd() % (uint64_t)ntok];
                size_t tl = strlen(t);
                if (n + tl > sizeof buf)
                    break;
                memcpy(buf + n, t, tl);
                n += tl;
            }
        }
        char *p = malloc(n ? n : 1);
        memcpy(p, buf, n);
        assert_int_equal(parse_any(p, n), -1);
        free(p);
    }
    /* nesting, sizes */
    char deep[200];
    memset(deep, '[', sizeof deep);
    assert_int_equal(parse_any(deep, sizeof deep), -1);
    char *big = malloc(SEARCH_RECORD_PARSE_MAX + 1);
    memset(big, ' ', SEARCH_RECORD_PARSE_MAX + 1);
    assert_int_equal(parse_any(big, SEARCH_RECORD_PARSE_MAX + 1), -1);
    for (size_t i = 0; i + 1 < SEARCH_RECORD_PARSE_MAX; i += 2)
        big[i] = '0', big[i + 1] = ',';
    big[0] = '[';
    big[SEARCH_RECORD_PARSE_MAX - 1] = ']';
    assert_int_equal(parse_any(big, SEARCH_RECORD_PARSE_MAX), -1); /* too many values */
    free(big);
    search_record r;
    assert_int_equal(search_record_parse(NULL, 0, &r, NULL, 0), -1);
    assert_int_equal(search_record_parse("{}", 2, NULL, NULL, 0), -1);
    print_message("%d random inputs refused\n", g_rejected);
}

/* ---- targeted refusals ------------------------------------------------------------ */

/* base with the first occurrence of from replaced by to must be refused, saying needle. */
static void expect_refused_in(const char *base, const char *from, const char *to, const char *needle)
{
    const char *at = strstr(base, from);
    if (!at)
        fail_msg("\"%s\" is not in the line", from);
    char line[SEARCH_RECORD_LINE_MAX + 256];
    size_t pre = (size_t)(at - base);
    snprintf(line, sizeof line, "%.*s%s%s", (int)pre, base, to, at + strlen(from));
    search_record r;
    char why[512] = "";
    if (search_record_parse(line, strlen(line), &r, why, sizeof why) == 0)
        fail_msg("accepted with \"%s\" -> \"%s\"", from, to);
    if (!strstr(why, needle))
        fail_msg("\"%s\" -> \"%s\": the message \"%s\" does not mention \"%s\"", from, to, why, needle);
}

static void expect_refused(const char *from, const char *to, const char *needle)
{
    expect_refused_in(doc_line, from, to, needle);
}

static void test_refusals(void **state)
{
    (void)state;
    search_record r;
    char why[512];
    /* trailing bytes; whitespace only is fine */
    char line[SEARCH_RECORD_LINE_MAX + 16];
    snprintf(line, sizeof line, "%s x", doc_line);
    assert_int_equal(search_record_parse(line, strlen(line), &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "trailing"));
    snprintf(line, sizeof line, "%s{}", doc_line);
    assert_int_equal(search_record_parse(line, strlen(line), &r, why, sizeof why), -1);
    snprintf(line, sizeof line, " \t%s\r\n", doc_line);
    assert_int_equal(search_record_parse(line, strlen(line), &r, why, sizeof why), 0);
    /* a NUL inside the given length is not the end */
    snprintf(line, sizeof line, "%s", doc_line);
    assert_int_equal(search_record_parse(line, strlen(line) + 1, &r, why, sizeof why), -1);

    expect_refused("[\"CR\",\"v\"]", "[\"XX\",\"v\"]", "unknown step kind \"XX\"");
    expect_refused("[\"CR\",\"v\"]", "[\"CR\",\"v\",1]", "step 0 (CR): 3 elements");
    expect_refused("[\"CR\",\"v\"],", "", "exactly one of");
    expect_refused("[\"CR\",\"v\"]", "[\"CR\",\"y\"]", "exactly one of");
    expect_refused("[\"CR\",\"v\"]", "[\"CA\",\"y\",\"v\",\"s\"]", "step 24 is"); /* counter: its pragma */
    expect_refused("[\"CR\",\"v\"]", "[\"CR\",\"v\"],[\"CA\",\"y\",\"v\",\"s\"]", "exactly one of");
    expect_refused("[4,32,8]", "[4,16,8]", "lanes");
    expect_refused("[4,32,8]", "[4,32,3]", "illegal");
    expect_refused("[4,32,8]", "[4,32,4]", "differs");                     /* kc 512 vs sched text */
    expect_refused("[4,32,8]", "[4,32,8.0]", "an integer was expected");
    expect_refused("[\"SP\",\"v\",\"k\",4096,[8],0]", "[\"SP\",\"v\",\"k\",4096,[3],0]", "step 7 is"); /* k_per_cta 1536 */
    expect_refused("[\"RF\",\"v\",\"k.0\",8,", "[\"RF\",\"v\",\"k.0\",4,", "this generator writes [\"RF\",\"v\",\"k.0\",8");
    expect_refused("\"blockIdx.y\"", "\"blockIdx.x\"", "step 14 is");
    expect_refused("[\"FSP\",\"y\",\"i\",5,1]", "[\"FSP\",\"y\",\"i\",6,1]", "step 33 is");
    expect_refused("[[10,0],[8,1]]", "[[10,0],[40,1]]", "earlier step");
    expect_refused("[\"CA\",\"b\",\"y\",\"r.0\"]", "[\"CA\",\"b\",\"y\",\"r.0\"],[\"SA\",\"sv\",\"r\",32,1]",
                   "this generator writes 55");
    expect_refused(",[\"CA\",\"b\",\"y\",\"r.0\"]", "", "54 of them; for");
    expect_refused("\"apply\"", "\"fuse\"", "unknown value \"fuse\"");
    expect_refused("\"f16\"", "\"fp8\"", "unknown value \"fp8\"");
    expect_refused("4096,[4096]", "4096,[]", "0 elements");
    expect_refused("4096,[4096]", "4096,[0]", "not in 1..16777216");
    expect_refused("4096,[4096]", "16777217,[4096]", "d_in");
    expect_refused("],16,\"table\"", "],129,\"table\"", "max_rank");
    expect_refused("\"rows\":6", "\"rows\":63", "not in 0..62");
    expect_refused("\"rows\":6,", "", "member \"rows\" is missing");
    expect_refused("\"rows\":6", "\"rows\":6,\"rows\":6", "appears twice");
    expect_refused("\"rdiff\":0", "\"rdiff\":0,\"zipf\":1", "unknown member \"zipf\"");
    expect_refused("sm_90/", "sm_09/", "is not of the form");
    expect_refused("132sm", "0132sm", "is not of the form");
    expect_refused("-smem\"", "-smem \"", "is not of the form");
    expect_refused("[[12.65],0,", "[[12.65],7,", "error_no");
    expect_refused("[[12.65],0,", "[[-12.65],0,", "costs_us[0]");
    expect_refused("[[12.65],0,", "[[12.65,1,2,3,4,5,6,7,8],0,", "0..8 were expected");
    expect_refused("[[12.65],0,", "[[],0,", "at least one cost");
    expect_refused("[[12.65],0,", "[[\"12.65\"],0,", "a number was expected");
    expect_refused("[[12.65],0,", "[[1e400],0,", "out of range");
    expect_refused("1795256235]", "-1]", "timestamp");
    expect_refused("1795256235]", "9007199254740993]", "timestamp");
    expect_refused("1795256235]", "99999999999999999999]", "timestamp");
    expect_refused("\"v\":1", "\"v\":2", "record version 2 is not supported");
    expect_refused("\"v\":1,", "", "member \"v\" is missing");
    expect_refused("\"compiled\":1", "\"compiled\":true", "an integer was expected");
    expect_refused("\"compiled\":1", "\"compiled\":0", "ran without having compiled");
    expect_refused("\"matched\":1", "\"matched\":0", "matched is 0");
    expect_refused("\"spills\":1", "\"spills\":0", "spills is 0");
    expect_refused("\"regs\":[80,48,80,80]", "\"regs\":[80,48,80]", "4 were expected");
    expect_refused("\"regs\":[80,48,80,80]", "\"regs\":[80,48,256,80]", "registers[2]");
    expect_refused("\"err\":0.000207", "\"err\":-1", "negative");
    expect_refused("\"err\":0.000207", "\"err\":null", "finite error");
    expect_refused("\"err\":0.000207", "\"err\":\"nan\"", "\"inf\" was expected");
    expect_refused("\"gpu\":\"NVIDIA H200\"", "\"gpu\":\"NVIDIA \xc3\x28\"", "invalid UTF-8");
    expect_refused("\"gpu\":\"NVIDIA H200\"", "\"gpu\":\"a\\u0000b\"", "NUL");
    expect_refused("\"gpu\":\"NVIDIA H200\"", "\"gpu\":\"\\ud800x\"", "surrogate");
    expect_refused("\"gpu\":\"NVIDIA H200\"", "\"gpu\":\"\\q\"", "unknown escape");
    expect_refused("\"gpu\":\"NVIDIA H200\"", "\"gpu\":\"NVIDIA\tH200\"", "control character");
    expect_refused("\"gpu\":\"NVIDIA H200\"",
                   "\"gpu\":\"0123456789012345678901234567890123456789012345678901234567890123\"", "longer than 63");
    expect_refused("cols=256\"", "cols=255\"", "differs from the steps' schedule");
    expect_refused("\"sched\":\"split", "\"sched\":\"fused", "differs from the steps' schedule");
    expect_refused("0.000207", "00.000207", "',' or '}' was expected");
    expect_refused("0.000207", "0.", "no digit after '.'");
    expect_refused("0.000207", "2e", "no digit in the exponent");
    expect_refused("{\"i\"", "{\"i\"  :  ", "byte 9: unexpected character");
    expect_refused("{\"i\"", "{i", "member name");
    {
        /* x of the wrong type */
        const char *xs = strstr(doc_line, ",\"x\":{");
        snprintf(line, sizeof line, "%.*s,\"x\":[7]}", (int)(xs - doc_line), doc_line);
        assert_int_equal(search_record_parse(line, strlen(line), &r, why, sizeof why), -1);
        assert_non_null(strstr(why, "x: an object was expected, found an array"));
    }
    expect_refused("\"x\":{", "\"y\":1,\"x\":{", "unknown member \"y\"");
    expect_refused("[[\"apply\"", "[[[[[[[[[[\"apply\"", "nested deeper than 8");

    /* the mma variant: the tensorize annotation is what marks it */
    search_record m = doc_record();
    m.sched = make(SEARCH_SKETCH_SPLIT, 16, 4, 8, 64, 4, 128, 1);
    char ml[SEARCH_RECORD_LINE_MAX];
    int n = round_trip(&m, ml);
    assert_non_null(strstr(ml, "[\"AN\",\"v\",\"i.1\",\"tensorize\"]"));
    assert_non_null(strstr(ml, "[\"SP\",\"v\",\"k.1.1\",null,[4,16],1]"));
    char *t = strstr(ml, "[\"AN\",\"v\",\"i.1\",\"tensorize\"],");
    memmove(t, t + 31, strlen(t + 31) + 1);
    assert_int_equal(search_record_parse(ml, strlen(ml), &r, why, sizeof why), -1);
    assert_true(n > 0);

    /* stages and persist: the software_pipeline pragma and the persistent annotation carry them */
    m.sched = make_sp(make(SEARCH_SKETCH_FUSED_COUNTER, 16, 4, 8, 64, 4, 128, 1), 3, 1);
    n = round_trip(&m, ml);
    assert_non_null(strstr(ml, "[\"PR\",\"v\",\"k.1.1.0\",\"software_pipeline$3\"]"));
    assert_non_null(strstr(ml, "[\"CHR\",\"x\",\"shared\",[\"v\"],\"st.x\"]"));
    assert_non_null(strstr(ml, "[\"AN\",\"v\",\"i.0@k.0@s\",\"persistent\"]"));
    assert_non_null(strstr(ml, "mma stages=3 persist=1\""));
    assert_null(strstr(ml, "blockIdx"));
    assert_int_equal(search_record_parse(ml, (size_t)n, &r, why, sizeof why), 0);
    assert_int_equal(r.sched.stages, 3);
    assert_int_equal(r.sched.persist, 1);
    char *pp = strstr(ml, "software_pipeline$3");
    static const char bad_stage[] = {'0', '1', '5', 'x'};
    for (size_t b = 0; b < sizeof bad_stage; ++b) {
        pp[18] = bad_stage[b]; /* another stage count than x.sched, or none */
        assert_int_equal(search_record_parse(ml, (size_t)n, &r, why, sizeof why), -1);
    }
    pp[18] = '3';
    assert_int_equal(search_record_parse(ml, (size_t)n, &r, why, sizeof why), 0);
    char *pa = strstr(ml, "\"persistent\"");
    memcpy(pa + 1, "persistenT", 10);
    assert_int_equal(search_record_parse(ml, (size_t)n, &r, why, sizeof why), -1);
}

/* ---- the cluster sketch ---------------------------------------------------------------- */

static void test_cluster(void **state)
{
    (void)state;
    char line[SEARCH_RECORD_LINE_MAX], want[128], why[512];
    search_record back;
    /* every cluster size, on CUDA cores and tensor cores with stages 1..4, for the apply tasks */
    static const int tasks[] = {0, 1, 4};
    unsigned seen_split = 0, seen_stages = 0;
    int records = 0;
    for (size_t ti = 0; ti < sizeof tasks / sizeof tasks[0]; ++ti)
        for (unsigned split = 1; split <= SEARCH_MAX_CLUSTER; ++split)
            for (unsigned v = 0; v <= SEARCH_MAX_STAGES; ++v) {
                search_schedule s = v == 0 ? make(SEARCH_SKETCH_CLUSTER, 2, 8, 8, 1024, split, 256, 0)
                                           : make_sp(make(SEARCH_SKETCH_CLUSTER, 16, 4, 8, 32, split, 128, 1), v, 0);
                search_record r = cluster_record(s);
                r.task = sample_task(tasks[ti]);
                if (!search_schedule_legal(&s, r.task.max_rank, NULL, 0))
                    continue; /* the stage ring does not fit beside rank 128's two intermediates */
                int n = round_trip(&r, line);
                assert_int_equal(search_record_parse(line, (size_t)n, &back, why, sizeof why), 0);
                assert_int_equal(back.sched.sketch, SEARCH_SKETCH_CLUSTER);
                assert_int_equal(back.sched.split_k, split);
                assert_non_null(strstr(line, "[[\"CA\",\"v\",\"y\",\"i.0\"],"));
                snprintf(want, sizeof want, "[\"SP\",\"v\",\"k\",%d,[%u],0]", (int)r.task.d_in, split);
                assert_non_null(strstr(line, want));
                snprintf(want, sizeof want, "[\"RF\",\"v\",\"k.0\",%u,\"dsmem\"]", split);
                assert_non_null(strstr(line, want));
                snprintf(want, sizeof want, "[\"SP\",\"y\",\"n.0\",null,[%u],1]", split);
                assert_non_null(strstr(line, want));
                assert_non_null(strstr(line, "[\"AN\",\"v\",\"k.0\",\"cluster_ctarank\"]"));
                assert_non_null(strstr(line, "[\"AN\",\"y\",\"n.0.1\",\"cluster_ctarank\"]"));
                assert_non_null(strstr(line, "[\"CHR\",\"sv\",\"shared\",[\"y\"],\"sfull\"]"));
                /* no grid of its own for either stage, no global intermediate, no global atomics */
                assert_null(strstr(line, "blockIdx"));
                assert_null(strstr(line, "v.fp32"));
                assert_null(strstr(line, "atomic.global"));
                assert_null(strstr(line, "persistent"));
                seen_split |= 1u << split;
                seen_stages |= 1u << s.stages;
                ++records;
            }
    assert_int_equal(seen_split, 0x1fffe); /* 1..16 */
    assert_int_equal(seen_stages, 0x1e);   /* 1..4 */
    print_message("%d cluster records round-tripped\n", records);

    /* steps that do not describe the cluster sketch faithfully */
    search_record r = cluster_record(make(SEARCH_SKETCH_CLUSTER, 2, 8, 8, 1024, 8, 256, 0));
    static char base[SEARCH_RECORD_LINE_MAX];
    assert_true(search_record_write(&r, base, sizeof base) > 0);
    expect_refused_in(base, "[\"SP\",\"v\",\"k\",4096,[8],0]", "[\"SP\",\"v\",\"k\",4096,[17],0]", "at most 16");
    expect_refused_in(base, "[\"RF\",\"v\",\"k.0\",8,\"dsmem\"]", "[\"RF\",\"v\",\"k.0\",8,\"atomic.global\"]",
                      "this generator writes [\"RF\",\"v\",\"k.0\",8,\"dsmem\"]");
    expect_refused_in(base, "[\"RF\",\"v\",\"k.0\",8,\"dsmem\"]", "[\"RF\",\"v\",\"k.0\",4,\"dsmem\"]",
                      "this generator writes [\"RF\",\"v\",\"k.0\",8,\"dsmem\"]");
    expect_refused_in(base, "[\"AN\",\"v\",\"k.0\",\"cluster_ctarank\"]", "[\"AN\",\"v\",\"k.0\",\"blockIdx.y\"]",
                      "this generator writes [\"AN\",\"v\",\"k.0\",\"cluster_ctarank\"]");
    expect_refused_in(base, "[\"SP\",\"y\",\"n.0\",null,[8],1]", "[\"SP\",\"y\",\"n.0\",null,[4],1]",
                      "this generator writes [\"SP\",\"y\",\"n.0\",null,[8],1]");
    expect_refused_in(base, "[\"SP\",\"y\",\"n.0\",null,[8],1],", "",
                      "this generator writes [\"SP\",\"y\",\"n.0\",null,[8],1]");
    expect_refused_in(base, "[\"RE\",\"y\",[\"s\",\"i.0\",", "[\"RE\",\"y\",[\"i.0\",\"s\",",
                      "this generator writes [\"RE\",\"y\",[\"s\",\"i.0\",\"n.0.1\",\"n.0.0\"");
    expect_refused_in(base, "[\"AN\",\"y\",\"n.0.1\",\"cluster_ctarank\"]", "[\"AN\",\"y\",\"n.0\",\"blockIdx.y\"]",
                      "this generator writes [\"AN\",\"y\",\"n.0.1\",\"cluster_ctarank\"]");
    expect_refused_in(base, "[\"PR\",\"y\",\"n.0.0\",\"prefetch_l2\"],", "",
                      "this generator writes [\"PR\",\"y\",\"n.0.0\",\"prefetch_l2\"]");
    expect_refused_in(base, "[\"CHR\",\"sv\",\"shared\",[\"y\"],\"sfull\"]",
                      "[\"CHR\",\"v.fp32\",\"shared\",[\"y\"],\"sv.y\"]",
                      "this generator writes [\"CHR\",\"sv\",\"shared\",[\"y\"],\"sfull\"]");
    expect_refused_in(base, "[\"CA\",\"v\",\"y\",\"i.0\"]", "[\"CA\",\"v\",\"y\",\"i.0\"],[\"CR\",\"v\"]",
                      "exactly one of");
    expect_refused_in(base, "[\"CA\",\"v\",\"y\",\"i.0\"]", "[\"CA\",\"v\",\"y\",\"s\"]", "which gives warps");
    expect_refused_in(base, "[\"CA\",\"v\",\"y\",\"i.0\"]", "[\"CA\",\"y\",\"v\",\"s\"]",
                      "step 11 is [\"RE\",\"v\",[\"k.0\",");
    /* a persistent grid: the annotation is read, and the schedule it gives is illegal */
    expect_refused_in(base, "[\"AN\",\"v\",\"k.0\",\"cluster_ctarank\"]",
                      "[\"FU\",\"v\",[\"i.0\",\"k.0\",\"s\"]],[\"AN\",\"v\",\"i.0@k.0@s\",\"persistent\"]",
                      "no persistent grid");
    expect_refused_in(base, "\"apply\"", "\"shrink\"",
                      "a shrink task runs the split sketch's kernels, the steps say cluster");
    expect_refused_in(base, "\"apply\"", "\"expand\"", "the steps say cluster");
    expect_refused_in(base, "\"sched\":\"cluster", "\"sched\":\"split", "differs from the steps' schedule");
    expect_refused_in(base, "splitk=8", "splitk=9", "differs from the steps' schedule");
    /* a fused line whose first step claims the cluster sketch lacks the iterators of a K split over CTAs */
    r = doc_record();
    r.sched = make(SEARCH_SKETCH_FUSED, 1, 16, 8, 2048, 1, 256, 0);
    assert_true(search_record_write(&r, line, sizeof line) > 0);
    expect_refused_in(line, "[\"CA\",\"v\",\"y\",\"s\"]", "[\"CA\",\"v\",\"y\",\"i.0\"]",
                      "no [\"SP\",\"v\",\"k.1.0@r\",...] step");
    /* and the writer refuses a cluster schedule for shrink and expand tasks */
    r = cluster_record(make(SEARCH_SKETCH_CLUSTER, 2, 8, 8, 1024, 8, 256, 0));
    r.task.op = SEARCH_OP_SHRINK;
    expect_check_fails(&r, "the schedule's sketch is cluster");
    r.task.op = SEARCH_OP_EXPAND;
    expect_check_fails(&r, "the schedule's sketch is cluster");
    r = cluster_record(make(SEARCH_SKETCH_CLUSTER, 2, 8, 8, 1024, SEARCH_MAX_CLUSTER + 1, 256, 0));
    expect_check_fails(&r, "at most 16");
    r = cluster_record(make_sp(make(SEARCH_SKETCH_CLUSTER, 2, 8, 8, 1024, 8, 256, 0), 1, 1));
    expect_check_fails(&r, "no persistent grid");
}

/* Any JSON whitespace between tokens: the doc line spread over lines and tabs. */
static void test_whitespace(void **state)
{
    (void)state;
    static char lines[NUM_VALID_LINES][SEARCH_RECORD_LINE_MAX];
    int nl = valid_lines(lines, NUM_VALID_LINES);
    static const char *const spaces[] = {" ", "\n", "\t", "\r\n", "  \n\t "};
    for (int l = 0; l < nl; ++l) {
        size_t n = strlen(lines[l]);
        char *wide = malloc(n * 8 + 16);
        size_t w = 0;
        int in_str = 0, k = 0;
        for (size_t i = 0; i < n; ++i) {
            char c = lines[l][i];
            wide[w++] = c;
            if (in_str) {
                if (c == '\\')
                    wide[w++] = lines[l][++i];
                else if (c == '"')
                    in_str = 0;
            } else if (c == '"') {
                in_str = 1;
            }
            if (!in_str && strchr("{}[],:\"", c)) {
                const char *sp = spaces[k++ % 5];
                memcpy(wide + w, sp, strlen(sp));
                w += strlen(sp);
            }
        }
        search_record a, b;
        char why[512] = "";
        assert_int_equal(search_record_parse(lines[l], n, &a, why, sizeof why), 0);
        if (search_record_parse(wide, w, &b, why, sizeof why) != 0)
            fail_msg("spread-out line %d refused: %s\n%.*s", l, why, (int)w, wide);
        expect_same(&a, &b);
        free(wide);
    }
}

/* ---- seeds for tools/fuzz.sh -------------------------------------------------------- */

static int write_seeds(const char *dir)
{
    static char lines[NUM_VALID_LINES][SEARCH_RECORD_LINE_MAX];
    int nl = valid_lines(lines, NUM_VALID_LINES);
    for (int l = 0; l < nl; ++l) {
        char path[4096];
        snprintf(path, sizeof path, "%s/record-%d.json", dir, l);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(lines[l], 1, strlen(lines[l]), f) != strlen(lines[l]) || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
    }
    /* a libFuzzer dictionary: the record's names and the step vocabulary */
    static const char *const words[] = {
        "\"i\"", "\"r\"", "\"v\"", "\"x\"", "\"apply\"", "\"shrink\"", "\"expand\"", "\"f16\"", "\"bf16\"",
        "\"table\"", "\"arrays\"", "\"upload\"", "\"rows\"", "\"groups\"", "\"longest\"", "\"mean\"", "\"none\"",
        "\"rdiff\"", "\"compiled\"", "\"ran\"", "\"matched\"", "\"spills\"", "\"regs\"", "\"spill\"", "\"err\"",
        "\"gpu\"", "\"sched\"", "\"SP\"", "\"FSP\"", "\"FFSP\"", "\"RE\"", "\"FU\"", "\"AN\"", "\"PR\"", "\"SA\"",
        "\"CA\"", "\"CI\"", "\"CR\"", "\"CHR\"", "\"CHW\"", "\"RF\"", "\"tensorize\"", "\"warp\"", "\"lane\"",
        "\"cluster_ctarank\"", "\"clusterid.x\"", "\"dsmem\"", "\"i.0\"",
        "null", "\"inf\"", "\"\\u00e9\"", "\"\\ud83d\\ude00\"", "1e308", "-0", "9007199254740992"};
    char path[4096];
    snprintf(path, sizeof path, "%s/../records.dict", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    for (size_t i = 0; i < sizeof words / sizeof words[0]; ++i) {
        fputc('"', f);
        for (const char *p = words[i]; *p; ++p) {
            if (*p == '"' || *p == '\\')
                fputc('\\', f);
            fputc(*p, f);
        }
        fputs("\"\n", f);
    }
    return fclose(f) != 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-seeds") == 0)
        return write_seeds(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime_agreement), cmocka_unit_test(test_doc_record),
        cmocka_unit_test(test_older_steps),
        cmocka_unit_test(test_flags),             cmocka_unit_test(test_round_trip_sample),
        cmocka_unit_test(test_refusals),          cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_whitespace),
        cmocka_unit_test(test_truncated),         cmocka_unit_test(test_mutated),
        cmocka_unit_test(test_random_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
