/*
 * test_dispatch.c -- runtime dispatch and the persistent LMDB kernel cache,
 * on the fake CUDA driver (fake_cuda.h) with the real NVRTC:
 *   - layout classes and the performance key (pure functions);
 *   - the plan table: layouts of one class share a plan;
 *   - cubins stored by one context and loaded by the next, for the exact arch;
 *   - schedules found in the cache for this GPU only;
 *   - corrupt cubin records dropped and recompiled;
 *   - asynchronous contexts: the generic kernel serves a call while its own
 *     kernel compiles in the background;
 *   - two devices of different architectures sharing one cache file;
 *   - one compile per key: threads of a process wait for each other, a
 *     process waits for the cubin of a live one that holds the key's marker.
 * Every test makes its own modules (distinct max_rank values), so that what
 * one test stores in the group's cache file never changes another's counts.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "dop.h"
#include "fake_cuda.h"
#include "runtime_internal.h"

/* A schedule; designated, so that fields added to search_schedule start at zero. */
#define SCHED_INIT(SKETCH, ROWS, WARPS, VEC, SPLIT, KC, COLS)                                                      \
    {.version = SEARCH_SCHEDULE_VERSION, .sketch = SKETCH, .rows = ROWS, .warps = WARPS, .vec = VEC,               \
     .split_k = SPLIT, .kc = KC, .cols = COLS, .stages = 1}
#define AP RUNTIME_OP_APPLY
#define SH RUNTIME_OP_SHRINK
#define EX RUNTIME_OP_EXPAND
#define NSLOT 4
#define WS_BYTES (1u << 20)
#define FAKE_X ((const void *)(uintptr_t)0x10000000u)
#define FAKE_Y ((void *)(uintptr_t)0x20000000u)
#define FAKE_V ((float *)(uintptr_t)0x30000000u)

static char g_dir[256], g_file[300]; /* private directory; the group's cache file ($DOP_CACHE_DIR/cache.mdb) */
static dop_context *g_ctx;            /* a waiting context on g_file */
static cache_store *g_store;          /* the test's own handle on g_file */
static int g_bad_images_allowed;      /* non-cubin images planted on purpose that may reach the driver */

#define CHECK_OK(call)                                                                                             \
    do {                                                                                                           \
        dop_status st_ = (call);                                                                                   \
        if (st_ != DOP_OK) {                                                                                       \
            print_error("%s: %s (%s)\n", #call, dop_status_string(st_), dop_context_error(NULL));                \
            fail();                                                                                                \
        }                                                                                                          \
    } while (0)

/* ---- contexts and calls ------------------------------------------------------------ */

typedef struct log_rec {
    pthread_mutex_t mu;
    int nwarn;
    char warn[1024];
} log_rec;

static void log_cb(void *user, dop_log_level level, const char *msg)
{
    log_rec *r = user;
    pthread_mutex_lock(&r->mu);
    if (level == DOP_LOG_WARN)
        r->nwarn++, snprintf(r->warn, sizeof r->warn, "%s", msg);
    pthread_mutex_unlock(&r->mu);
}

/* A context on device dev with the given flags and cache file (NULL: default, $DOP_CACHE_DIR). */
static dop_context *make_ctx(int dev, uint32_t flags, const char *path, log_rec *rec)
{
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.device = dev;
    opt.flags = flags;
    opt.cache_path = path;
    if (rec)
        opt.log = log_cb, opt.log_user = rec, opt.log_level = DOP_LOG_WARN;
    dop_context *ctx = NULL;
    dop_status st = dop_context_create(&opt, &ctx);
    if (st != DOP_OK) {
        print_error("dop_context_create: %s: %s\n", dop_status_string(st), dop_context_error(NULL));
        fail();
    }
    return ctx;
}

static dop_context_stats stats(dop_context *ctx)
{
    dop_context_stats st;
    CHECK_OK(dop_context_get_stats(ctx, &st));
    return st;
}

static const void *wptr(int slot, int slice, int b)
{
    return (const void *)(uintptr_t)(0x40000000u + 0x10000u * (unsigned)slot + 0x100u * (unsigned)slice +
                                     0x10u * (unsigned)b);
}

/* A context with a table of NSLOT adapters x 2 slices, all of rank `rank`, and a workspace. */
typedef struct rig {
    dop_context *ctx;
    dop_adapter_table *tab;
    void *ws;
} rig;

static rig rig_make(dop_context *ctx, int rank)
{
    rig r = {ctx, NULL, aligned_alloc(256, WS_BYTES)};
    dop_lora_adapter ad[NSLOT * 2];
    for (int i = 0; i < NSLOT * 2; ++i)
        ad[i] = (dop_lora_adapter){wptr(i / 2, i % 2, 0), wptr(i / 2, i % 2, 1), rank, 1.f};
    assert_non_null(r.ws);
    CHECK_OK(dop_adapter_table_create(ctx, NSLOT, 2, ad, &r.tab));
    return r;
}

static void rig_free(rig *r, bool destroy_ctx)
{
    dop_adapter_table_destroy(r->tab);
    free(r->ws);
    if (destroy_ctx)
        dop_context_destroy(r->ctx);
}

/* A 2-slice shape (d_out 256 and 128). */
static dop_lora_shape shape_of(dop_dtype dt, int32_t rows, int32_t d_in, int32_t max_rank)
{
    dop_lora_shape s;
    dop_lora_shape_init(&s);
    s.dtype = dt, s.num_rows = rows, s.d_in = d_in, s.num_slices = 2, s.max_rank = max_rank;
    s.d_out[0] = 256, s.d_out[1] = 128;
    return s;
}

/* rows[i] = slot of run i / run (runs of `run` rows over slots 0..NSLOT-1), the last `none` rows -1. */
static void runs(int32_t *rows, int32_t n, int32_t run, int32_t none)
{
    for (int32_t i = 0; i < n; ++i)
        rows[i] = i >= n - none ? -1 : (i / run) % NSLOT;
}

/* One call of op with the table and a host-only row layout. */
static dop_status call(rig *r, runtime_op op, const dop_lora_shape *s, const int32_t *rows)
{
    dop_layout lay = {.kind = DOP_LAYOUT_ROWS, .row_slot = rows};
    dop_weights w = {.table = r->tab};
    size_t need;
    CHECK_OK(dop_lora_workspace_size(r->ctx, s, 0, &need));
    assert_true(need <= WS_BYTES);
    FK_LOCK();
    g_fk.nlaunch = g_fk.nmemset = 0; /* the records are of this call */
    FK_UNLOCK();
    int64_t ldv = (int64_t)s->num_slices * s->max_rank;
    if (op == AP)
        return dop_lora_apply(r->ctx, s, &lay, &w, FAKE_X, FAKE_Y, r->ws, WS_BYTES, FK_STREAM);
    if (op == SH)
        return dop_lora_shrink(r->ctx, s, &lay, &w, FAKE_X, FAKE_V, ldv, 0, r->ws, WS_BYTES, FK_STREAM);
    return dop_lora_expand(r->ctx, s, &lay, &w, FAKE_V, ldv, FAKE_Y, r->ws, WS_BYTES, FK_STREAM);
}

#define CALL_OK(r, op, s, rows)                                                                                    \
    do {                                                                                                           \
        dop_status st_ = call((r), (op), (s), (rows));                                                             \
        if (st_ != DOP_OK) {                                                                                       \
            print_error("call: %s (%s)\n", dop_status_string(st_), dop_context_error((r)->ctx));                 \
            fail();                                                                                                \
        }                                                                                                          \
    } while (0)

static search_schedule last_schedule(void)
{
    search_schedule s;
    runtime_last_schedule(&s);
    return s;
}

/* The module every launch of the last call used (they share one); NULL if they differ. */
static CUmodule launched_module(void)
{
    assert_true(g_fk.nlaunch >= 1);
    for (int i = 1; i < g_fk.nlaunch; ++i)
        if (g_fk.launch[i].module != g_fk.launch[0].module)
            return NULL;
    return g_fk.launch[0].module;
}

/* What run_call passes of a shape to dispatch (weights from a table). */
static runtime_perf_shape perf_shape_of(const dop_lora_shape *s)
{
    runtime_perf_shape ps;
    memset(&ps, 0, sizeof ps);
    ps.dtype = s->dtype;
    ps.kdtype = s->dtype == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16;
    ps.num_rows = s->num_rows, ps.d_in = s->d_in, ps.num_slices = s->num_slices, ps.max_rank = s->max_rank;
    for (int i = 0; i < s->num_slices; ++i)
        ps.d_out[i] = s->d_out[i];
    ps.weights_kind = 0;
    return ps;
}

/* The class of a row layout whose adapters all have one rank. */
static runtime_layout_class class_of(const int32_t *rows, int32_t n)
{
    runtime_layout_summary sum;
    runtime_layout_class cls;
    runtime_summarize_rows(rows, n, &sum);
    runtime_layout_classify(&sum, n, 0, &cls);
    return cls;
}

/* The cubin key of the module a schedule runs with on a device. */
static void cubin_key_of(cache_key *k, const dop_device_info *in, kernels_dtype dt, int max_rank,
                         const search_schedule *s)
{
    search_schedule mk = search_schedule_module_key(s);
    char *src = NULL, why[512];
    size_t len = 0;
    assert_int_equal(kernels_codegen(&mk, dt, max_rank, &src, &len, why, sizeof why), 0);
    runtime_cubin_key(k, in->nvrtc_major, in->nvrtc_minor, in->cc_major, in->cc_minor, runtime_source_hash(src, len));
    free(src);
}

/* The SM of the cubin stored under k (checking its tag), -1 if it is not a cubin, -2 if there is none. */
static int stored_sm(const cache_key *k)
{
    void *v = NULL;
    size_t n = 0;
    char tag[CACHE_TAG_MAX + 1], why[256], want[16];
    cache_status cs = cache_get(g_store, CACHE_DB_CUBINS, k->buf, k->len, &v, &n, tag, why, sizeof why);
    if (cs == CACHE_MISS)
        return -2;
    assert_int_equal(cs, CACHE_OK);
    int sm = n >= sizeof(Elf64_Ehdr) ? fk_cubin_sm(v) : -1;
    snprintf(want, sizeof want, "sm_%d", sm);
    assert_string_equal(tag, want);
    free(v);
    return sm;
}

/* ---- fixtures ---------------------------------------------------------------------- */

static int group_setup(void **state)
{
    fk_reset();
    runtime_driver_install(&g_fake);
    if (fk_tmpdir_make(g_dir, sizeof g_dir) != 0)
        return -1;
    snprintf(g_file, sizeof g_file, "%s/cache.mdb", g_dir);
    setenv("DOP_CACHE_DIR", g_dir, 1); /* contexts with default options use g_file too */
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE;
    opt.cache_path = g_file;
    if (dop_context_create(&opt, &g_ctx) != DOP_OK) {
        print_error("dop_context_create: %s\n", dop_context_error(NULL));
        return -1;
    }
    char why[256];
    if (cache_open(g_file, 0, &g_store, why, sizeof why) != CACHE_OK) {
        print_error("cache_open: %s\n", why);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    dop_context_destroy(g_ctx);
    g_ctx = NULL;
    cache_close(g_store);
    g_store = NULL;
    runtime_driver_install(NULL);
    unsetenv("DOP_CACHE_DIR");
    fk_tmpdir_remove(g_dir);
    int planted = fk_get(&g_fk.bad_images); /* the planted non-cubin may be refused before the driver sees it */
    const char *bad = fk_unbalanced(planted <= g_bad_images_allowed ? planted : g_bad_images_allowed);
    if (bad)
        print_error("fake driver out of balance: %s\n", bad);
    return bad ? -1 : 0;
}

static int setup(void **state)
{
    fk_reset();
    return 0;
}

static int teardown(void **state)
{
    runtime_force_schedule(NULL);
    fk_reset();
    /* every context of the test is gone: no thread holds a pushed context, nothing ran outside one */
    if (fk_depth || fk_get(&g_fk.pushed) || fk_get(&g_fk.bad_calls) || fk_get(&g_fk.wrong_arch)) {
        print_error("fake driver: pushed %d, bad calls %d, wrong arch %d\n", fk_get(&g_fk.pushed),
                    fk_get(&g_fk.bad_calls), fk_get(&g_fk.wrong_arch));
        return -1;
    }
    return 0;
}

/* ---- layout classes ------------------------------------------------------------------ */

static runtime_layout_class classify(int32_t rows, int32_t with, int32_t groups, int32_t longest, int differ)
{
    runtime_layout_summary sum = {with, groups, longest, groups};
    runtime_layout_class c;
    memset(&c, 0xAB, sizeof c); /* every field is written */
    runtime_layout_classify(&sum, rows, differ, &c);
    return c;
}

#define ASSERT_CLASS(c, R, G, L, M, Q, D)                                                                          \
    do {                                                                                                           \
        assert_int_equal((c).rows_log2, R);                                                                        \
        assert_int_equal((c).groups_log2, G);                                                                      \
        assert_int_equal((c).longest_log2, L);                                                                     \
        assert_int_equal((c).mean_log2, M);                                                                        \
        assert_int_equal((c).none_quarters, Q);                                                                    \
        assert_int_equal((c).ranks_differ, D);                                                                     \
    } while (0)

static bool same_class(runtime_layout_class a, runtime_layout_class b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static void test_layout_classify(void **state)
{
    /* 64 rows in 4 runs of 15, 4 without adapter: rows 2^6, groups 2^2, longest 2^4, mean 15 -> 2^4 */
    runtime_layout_class c = classify(64, 60, 4, 15, 0);
    ASSERT_CLASS(c, 6, 2, 4, 4, 1, 0);
    /* buckets are powers of two, rounded up */
    ASSERT_CLASS(classify(1, 1, 1, 1, 0), 0, 0, 0, 0, 0, 0);
    ASSERT_CLASS(classify(2, 2, 2, 1, 0), 1, 1, 0, 0, 0, 0);
    ASSERT_CLASS(classify(3, 3, 3, 1, 0), 2, 2, 0, 0, 0, 0);
    ASSERT_CLASS(classify(33, 33, 5, 9, 0), 6, 3, 4, 3, 0, 0);   /* mean 33/5 = 6 -> 2^3 */
    ASSERT_CLASS(classify(32, 32, 1, 32, 0), 5, 0, 5, 5, 0, 0);  /* one run */
    ASSERT_CLASS(classify(4096, 4096, 4096, 1, 0), 12, 12, 0, 0, 0, 0);
    /* rows without an adapter in quarters, rounded up: 0 only when every row has one */
    ASSERT_CLASS(classify(64, 63, 1, 63, 0), 6, 0, 6, 6, 1, 0);  /* 1 of 64 */
    ASSERT_CLASS(classify(64, 48, 1, 48, 0), 6, 0, 6, 6, 1, 0);  /* 16 of 64: 1 quarter */
    ASSERT_CLASS(classify(64, 47, 1, 47, 0), 6, 0, 6, 6, 2, 0);  /* 17 */
    ASSERT_CLASS(classify(64, 16, 1, 16, 0), 6, 0, 4, 4, 3, 0);  /* 48 */
    ASSERT_CLASS(classify(64, 15, 1, 15, 0), 6, 0, 4, 4, 4, 0);  /* 49 */
    ASSERT_CLASS(classify(64, 0, 0, 0, 0), 6, 0, 0, 0, 4, 0);    /* no adapter at all */
    /* ranks differ: any nonzero is 1 */
    ASSERT_CLASS(classify(64, 60, 4, 15, 1), 6, 2, 4, 4, 1, 1);
    ASSERT_CLASS(classify(64, 60, 4, 15, 7), 6, 2, 4, 4, 1, 1);

    /* inside every bucket the class is the same; across any bucket edge it differs */
    assert_true(same_class(classify(64, 60, 4, 15, 0), classify(40, 37, 3, 12, 0))); /* 2^6, 2^2, 2^4, 12 -> 2^4, 1/4 */
    assert_false(same_class(c, classify(32, 30, 4, 15, 0)));  /* rows 2^5 */
    assert_false(same_class(c, classify(64, 60, 5, 15, 0)));  /* groups 2^3 (mean 12 still 2^4) */
    assert_false(same_class(c, classify(64, 60, 4, 17, 0)));  /* longest 2^5 */
    assert_false(same_class(c, classify(64, 61, 2, 16, 0)));  /* groups 2^1, mean 30 -> 2^5 */
    assert_false(same_class(c, classify(64, 64, 4, 16, 0)));  /* mean 16 is still 2^4 ... */
    assert_false(same_class(c, classify(64, 40, 4, 15, 0)));  /* 24 without: 2 quarters */
    assert_false(same_class(c, classify(64, 60, 4, 15, 1)));  /* ranks differ */
    /* (the one above differs in none_quarters: 0 without any -1 row) */
    ASSERT_CLASS(classify(64, 64, 4, 16, 0), 6, 2, 4, 4, 0, 0);

    /* summaries of row layouts: runs of one slot, split by a change of slot or by -1 rows */
    int32_t r[12] = {0, 0, 1, 1, 1, -1, -1, 2, 0, 0, -1, 0};
    runtime_layout_summary sum;
    runtime_summarize_rows(r, 12, &sum);
    assert_true(sum.rows_with_adapter == 9 && sum.groups == 5 && sum.longest == 3 && sum.distinct >= 3);
    runtime_summarize_rows(r, 1, &sum);
    assert_true(sum.rows_with_adapter == 1 && sum.groups == 1 && sum.longest == 1);
    int32_t none[3] = {-1, -1, -1};
    runtime_summarize_rows(none, 3, &sum);
    assert_true(sum.rows_with_adapter == 0 && sum.groups == 0 && sum.longest == 0);
}

/* The heuristic's pick for a class (what dispatch runs on a miss) makes the tensor-core choice
 * it makes for a batch of the class: the bucket ends are capped at the batch's rows. */
static void test_pick_for_class(void **state)
{
    (void)state;
    dop_device_info dev;
    memset(&dev, 0, sizeof dev);
    dev.cc_major = 9, dev.sm_count = 132;
    runtime_perf_shape ps;
    memset(&ps, 0, sizeof ps);
    ps.dtype = DOP_DTYPE_F16, ps.d_in = 4096, ps.num_slices = 1, ps.d_out[0] = 4096, ps.max_rank = 64;
    search_schedule got, want;
    /* 4096 rows in 364 runs (mean 11, the skewed layout): buckets 512 runs of 16 would be 8192
     * rows, past the batch (mean 8 from the cap, 11 in the batch); no tensor cores for either */
    runtime_layout_summary sk = {4096, 364, 1500, 364};
    runtime_layout_class c = classify(4096, 4096, 364, 1500, 0);
    ps.num_rows = 4096;
    runtime_pick_for_class(&dev, AP, &ps, &c, &got);
    runtime_pick_schedule(&dev, AP, 4096, 4096, 1, 64, &sk, &want);
    assert_true(got.mma == 0 && want.mma == 0 && got.sketch == want.sketch);
    /* 256 rows in 16 runs of 16 at rank 64: tensor cores, for the class and for the batch */
    runtime_layout_summary un = {256, 16, 16, 16};
    c = classify(256, 256, 16, 16, 0);
    ps.num_rows = 256;
    runtime_pick_for_class(&dev, AP, &ps, &c, &got);
    runtime_pick_schedule(&dev, AP, 256, 4096, 1, 64, &un, &want);
    assert_int_equal(got.mma, 1);
    assert_memory_equal(&got, &want, sizeof got);
    /* the largest row bucket a batch can have: no overflow, a legal schedule */
    c = classify(INT32_MAX, INT32_MAX, INT32_MAX, 1, 0);
    runtime_pick_for_class(&dev, AP, &ps, &c, &got);
    assert_true(search_schedule_legal(&got, 64, NULL, 0));
}

/* ---- the performance key ------------------------------------------------------------------ */

typedef struct key_in {
    runtime_op op;
    runtime_perf_shape ps;
    runtime_gpu g;
    runtime_layout_class cls;
} key_in;

static key_in key_base(void)
{
    key_in k;
    memset(&k, 0, sizeof k);
    k.op = AP;
    k.ps.dtype = DOP_DTYPE_F16, k.ps.kdtype = KERNELS_F16;
    k.ps.num_rows = 64, k.ps.d_in = 4096, k.ps.num_slices = 3, k.ps.max_rank = 16;
    k.ps.d_out[0] = 4096, k.ps.d_out[1] = 1024, k.ps.d_out[2] = 1024;
    k.ps.weights_kind = 0;
    k.g = (runtime_gpu){9, 0, 132, 60 << 20, 227 << 10};
    k.cls = classify(64, 60, 4, 15, 0);
    return k;
}

static cache_key key_of(const key_in *in)
{
    cache_key k;
    runtime_perf_key(&k, in->op, &in->ps, &in->g, &in->cls);
    assert_false(k.overflow);
    return k;
}

static bool key_equal(const cache_key *a, const cache_key *b)
{
    return a->len == b->len && memcmp(a->buf, b->buf, a->len) == 0;
}

static void test_perf_key(void **state)
{
    key_in base = key_base();
    cache_key k0 = key_of(&base), k1;
    key_in again = key_base();
    k1 = key_of(&again);
    assert_true(key_equal(&k0, &k1)); /* equal inputs, equal bytes */
    /* what the key does not hold: d_out past num_slices, the row count inside its class, the kernel dtype
     * (the same as dtype) */
    again.ps.d_out[3] = 77, again.ps.d_out[DOP_MAX_SLICES - 1] = 5, again.ps.num_rows = 50;
    k1 = key_of(&again);
    assert_true(key_equal(&k0, &k1));

#define DIFFERS(MOD)                                                                                               \
    do {                                                                                                           \
        key_in in_ = key_base();                                                                                   \
        MOD;                                                                                                       \
        cache_key k_ = key_of(&in_);                                                                               \
        if (key_equal(&k0, &k_)) {                                                                                 \
            print_error("the key does not change with %s\n", #MOD);                                                \
            fail();                                                                                                \
        }                                                                                                          \
    } while (0)
    DIFFERS(in_.op = SH);
    DIFFERS(in_.op = EX);
    DIFFERS((in_.ps.dtype = DOP_DTYPE_BF16, in_.ps.kdtype = KERNELS_BF16));
    DIFFERS(in_.ps.d_in = 4095);
    DIFFERS(in_.ps.d_out[0] = 4095);
    DIFFERS(in_.ps.d_out[1] = 1025);
    DIFFERS(in_.ps.d_out[2] = 512);
    DIFFERS(in_.ps.num_slices = 2);
    DIFFERS((in_.ps.num_slices = 4, in_.ps.d_out[3] = 1024));
    DIFFERS(in_.ps.max_rank = 32);
    DIFFERS(in_.ps.max_rank = 15);
    DIFFERS(in_.ps.weights_kind = 1);
    DIFFERS(in_.ps.weights_kind = 2);
    DIFFERS(in_.g.cc_major = 10);
    DIFFERS(in_.g.cc_minor = 1);
    DIFFERS(in_.g.sm_count = 114);
    DIFFERS(in_.g.l2_bytes = 50 << 20);
    DIFFERS(in_.g.smem_optin = 163 << 10);
    DIFFERS(in_.cls.rows_log2 = 7);
    DIFFERS(in_.cls.groups_log2 = 3);
    DIFFERS(in_.cls.longest_log2 = 5);
    DIFFERS(in_.cls.mean_log2 = 3);
    DIFFERS(in_.cls.none_quarters = 0);
    DIFFERS(in_.cls.ranks_differ = 1);
    /* the fields do not run into each other: moving a value between d_in and a d_out changes the key */
    DIFFERS((in_.ps.d_in = 1024, in_.ps.d_out[1] = 4096));
    DIFFERS((in_.g.cc_major = 0, in_.g.cc_minor = 9));
#undef DIFFERS

    /* the GPU fingerprint of a context is its device's */
    dop_device_info in;
    CHECK_OK(dop_context_device_info(g_ctx, &in));
    runtime_gpu g;
    runtime_gpu_of(&in, &g);
    assert_true(g.cc_major == 9 && g.cc_minor == 0 && g.sm_count == 132 && g.l2_bytes == 60 << 20 &&
                g.smem_optin == 227 << 10);
    char tag[128];
    runtime_gpu_tag(&g, tag, sizeof tag);
    assert_string_equal(tag, "sm_90/132sm/61440KiB-L2/227KiB-smem");
}

/* ---- the plan table ------------------------------------------------------------------ */

static void test_plans_per_class(void **state)
{
    rig r = rig_make(g_ctx, 16);
    dop_lora_shape s = shape_of(DOP_DTYPE_F16, 64, 512, 16);
    int32_t l1[64], l2[64], l3[64], l4[60];
    runs(l1, 64, 16, 4); /* 4 runs (the last of 12), 4 rows without */
    for (int i = 0; i < 64; ++i) /* other slots, runs of 16, 16, 14, 14 */
        l2[i] = i >= 60 ? -1 : i < 16 ? 3 : i < 32 ? 2 : i < 46 ? 1 : 0;
    for (int i = 0; i < 64; ++i)
        l3[i] = 1; /* one run */
    runs(l4, 60, 14, 4); /* 60 rows: 4 runs of 14, 4 without */
    runtime_layout_class c1 = class_of(l1, 64);
    assert_true(same_class(c1, class_of(l2, 64)));
    assert_false(same_class(c1, class_of(l3, 64)));
    assert_true(same_class(c1, class_of(l4, 60)));

    dop_context_stats a = stats(g_ctx), b;
    CALL_OK(&r, AP, &s, l1);
    b = stats(g_ctx);
    assert_int_equal(b.plans, a.plans + 1);
    assert_true(b.kernels_loaded <= a.kernels_loaded + 1 && b.generic_calls == 0);
    search_schedule s1 = last_schedule();
    CUmodule m1 = launched_module();
    assert_non_null(m1);
    assert_true(m1 != g_ctx->generic[0]->module); /* the dispatched kernel, not the generic one */

    /* another layout of the class: the same plan, schedule and kernel; nothing compiled or loaded */
    a = b;
    CALL_OK(&r, AP, &s, l2);
    b = stats(g_ctx);
    assert_true(b.plans == a.plans && b.kernels_compiled == a.kernels_compiled && b.kernels_loaded == a.kernels_loaded);
    search_schedule s2 = last_schedule();
    assert_memory_equal(&s1, &s2, sizeof s1);
    assert_ptr_equal(launched_module(), m1);
    /* ... also with fewer rows in the same class: the grid follows the call's rows */
    dop_lora_shape s60 = s;
    s60.num_rows = 60;
    CALL_OK(&r, AP, &s60, l4);
    b = stats(g_ctx);
    assert_int_equal(b.plans, a.plans);
    s2 = last_schedule();
    assert_memory_equal(&s1, &s2, sizeof s1);
    assert_int_equal(g_fk.launch[0].grid[0], (60 + s1.rows - 1) / s1.rows);
    assert_int_equal(g_fk.launch[0].kp.num_rows, 60);

    /* another class: one more plan */
    CALL_OK(&r, AP, &s, l3);
    b = stats(g_ctx);
    assert_int_equal(b.plans, a.plans + 1);
    a = b;
    CALL_OK(&r, AP, &s, l1); /* back to the first: no new plan */
    CALL_OK(&r, AP, &s, l3);
    assert_int_equal(stats(g_ctx).plans, a.plans);

    /* the operation, the weights' kind and the shape are in the key too */
    CALL_OK(&r, SH, &s, l1);
    assert_int_equal(stats(g_ctx).plans, a.plans + 1);
    dop_lora_adapter ad[NSLOT * 2];
    memcpy(ad, r.tab->host, sizeof ad);
    dop_weights w = {.adapters = ad, .num_slots = NSLOT};
    dop_layout lay = {.kind = DOP_LAYOUT_ROWS, .row_slot = l1};
    CHECK_OK(dop_lora_apply(g_ctx, &s, &lay, &w, FAKE_X, FAKE_Y, r.ws, WS_BYTES, FK_STREAM));
    assert_int_equal(stats(g_ctx).plans, a.plans + 2);
    dop_lora_shape s2out = s;
    s2out.d_out[1] = 192;
    CALL_OK(&r, AP, &s2out, l1);
    assert_int_equal(stats(g_ctx).plans, a.plans + 3);
    b = stats(g_ctx);
    assert_true(b.generic_calls == 0 && b.schedules_from_cache == 0);
    rig_free(&r, false);
}

/* ---- cubins in the cache ---------------------------------------------------------------- */

static const search_schedule SA = SCHED_INIT(SEARCH_SKETCH_SPLIT, 2, 4, 8, 2, 512, 128);

static void test_cubins_from_cache(void **state)
{
    const int modules = fk_get(&g_fk.live_modules);
    dop_lora_shape sf = shape_of(DOP_DTYPE_F16, 32, 512, 24), sb = shape_of(DOP_DTYPE_BF16, 32, 512, 24);
    dop_lora_shape sd = shape_of(DOP_DTYPE_F16, 32, 512, 32); /* dispatched; max_rank 32 is this test's */
    int32_t rows[32];
    runs(rows, 32, 8, 0);
    search_schedule used[3];

    /* context A compiles three modules and stores their cubins */
    rig a = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, NULL), 24);
    dop_context_stats st = stats(a.ctx);
    assert_true(st.kernels_compiled == 0 && st.cubins_from_cache == 2 && st.kernels_loaded == 2);
    runtime_force_schedule(&SA);
    CALL_OK(&a, AP, &sf, rows);
    CALL_OK(&a, AP, &sb, rows);
    used[1] = last_schedule();
    runtime_force_schedule(NULL);
    rig_free(&a, false);
    a = rig_make(a.ctx, 32);
    CALL_OK(&a, AP, &sd, rows);
    used[2] = last_schedule();
    st = stats(a.ctx);
    assert_true(st.kernels_compiled == 3 && st.cubins_from_cache == 2 && st.kernels_loaded == 5);
    dop_device_info in;
    CHECK_OK(dop_context_device_info(a.ctx, &in));
    cache_key k[3];
    cubin_key_of(&k[0], &in, KERNELS_F16, 24, &SA);
    cubin_key_of(&k[1], &in, KERNELS_BF16, 24, &SA);
    cubin_key_of(&k[2], &in, KERNELS_F16, 32, &used[2]);
    for (int i = 0; i < 3; ++i)
        assert_int_equal(stored_sm(&k[i]), 90);
    assert_false(key_equal(&k[0], &k[1])); /* the dtype is in the source */
    rig_free(&a, true);
    assert_int_equal(fk_get(&g_fk.live_modules), modules);

    /* context B makes the same calls without compiling anything */
    int loads = fk_get(&g_fk.loads[0]);
    rig b = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, NULL), 24);
    runtime_force_schedule(&SA);
    CALL_OK(&b, AP, &sf, rows);
    CALL_OK(&b, AP, &sb, rows);
    used[0] = last_schedule();
    assert_memory_equal(&used[0], &used[1], sizeof used[0]);
    runtime_force_schedule(NULL);
    rig_free(&b, false);
    b = rig_make(b.ctx, 32);
    CALL_OK(&b, AP, &sd, rows);
    used[0] = last_schedule();
    assert_memory_equal(&used[0], &used[2], sizeof used[0]); /* the same dispatch, the same kernel */
    st = stats(b.ctx);
    assert_true(st.kernels_compiled == 0 && st.cubins_from_cache == 5 && st.kernels_loaded == 5);
    assert_true(st.compile_seconds == 0 && st.calls == 3);
    assert_int_equal(fk_get(&g_fk.loads[0]), loads + 5); /* each one a cubin of sm_90 (the fake checks) */
    rig_free(&b, true);

    /* a read-only context uses the cache but never writes it */
    rig ro = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE | DOP_CONTEXT_CACHE_READONLY, g_file, NULL), 24);
    st = stats(ro.ctx);
    assert_true(st.cache_open == 1 && st.cubins_from_cache == 2 && st.kernels_compiled == 0);
    search_schedule sr = SA;
    sr.cols = 64; /* a module nobody made */
    runtime_force_schedule(&sr);
    CALL_OK(&ro, AP, &sf, rows);
    st = stats(ro.ctx);
    assert_true(st.kernels_compiled == 1 && st.cubins_from_cache == 2);
    cache_key kr;
    cubin_key_of(&kr, &in, KERNELS_F16, 24, &sr);
    assert_int_equal(stored_sm(&kr), -2);
    runtime_force_schedule(NULL);
    rig_free(&ro, true);
    assert_int_equal(fk_get(&g_fk.live_modules), modules);
}

/* ---- schedules in the cache --------------------------------------------------------------- */

static void put_schedule(const cache_key *k, const void *val, size_t len)
{
    char why[256];
    assert_int_equal(cache_put(g_store, CACHE_DB_SCHEDULES, k->buf, k->len, "test", val, len, why, sizeof why),
                     CACHE_OK);
}

static void test_schedules_from_cache(void **state)
{
    rig r = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, NULL), 16);
    dop_device_info in;
    CHECK_OK(dop_context_device_info(r.ctx, &in));
    runtime_gpu gpu, other;
    runtime_gpu_of(&in, &gpu);
    other = gpu;
    other.sm_count = 100; /* another GPU of the same arch */

    /* shape X, two layouts of one class; a tuned schedule for (X, class, this GPU) */
    dop_lora_shape sx = shape_of(DOP_DTYPE_F16, 32, 1024, 16);
    int32_t lx[32], lx2[32], ly[32], lz[32], lw[32];
    runs(lx, 32, 8, 0);
    for (int i = 0; i < 32; ++i)
        lx2[i] = 3 - i / 8;
    assert_true(same_class(class_of(lx, 32), class_of(lx2, 32)));
    const search_schedule sx_sched = SCHED_INIT(SEARCH_SKETCH_SPLIT, 2, 4, 4, 4, 256, 128);
    assert_true(search_schedule_legal(&sx_sched, 16, NULL, 0));
    runtime_perf_shape ps = perf_shape_of(&sx);
    runtime_layout_class cls = class_of(lx, 32);
    cache_key k;
    unsigned char val[256];
    size_t len = 0;
    assert_true(runtime_plan_value_size() <= sizeof val);
    runtime_perf_key(&k, AP, &ps, &gpu, &cls);
    runtime_plan_value_encode(&sx_sched, 2, 3.5f, val, &len);
    put_schedule(&k, val, len);
    /* round trip of the value; an illegal schedule or a bad length is refused */
    search_schedule back;
    assert_int_equal(runtime_plan_value_decode(val, len, &back, 16), 0);
    assert_memory_equal(&back, &sx_sched, sizeof back);
    assert_int_equal(runtime_plan_value_decode(val, len - 1, &back, 16), -1);
    /* the origin (what dop warm reads so as not to overwrite a tuned schedule) */
    assert_int_equal(runtime_plan_value_origin(val, len), 2);
    assert_int_equal(runtime_plan_value_origin(val, len - 1), 0);
    {
        unsigned char warm[256];
        size_t wlen = 0;
        runtime_plan_value_encode(&sx_sched, 1, 0, warm, &wlen);
        assert_int_equal(runtime_plan_value_origin(warm, wlen), 1);
    }
    {
        /* a value written before schedule version 2: u32 version 1, u32 origin, the 12-byte
         * version-1 schedule (its last byte reserved where stages is now), f32 time: refused */
        unsigned char old[24];
        memset(old, 0, sizeof old);
        old[0] = 1;
        old[4] = 2;
        const unsigned char s1[12] = {1, SEARCH_SKETCH_SPLIT, 2, 4, 4, 4, 0, 1, 128, 0, 0, 0}; /* kc 256, cols 128 */
        memcpy(old + 8, s1, sizeof s1);
        assert_int_equal(runtime_plan_value_decode(old, sizeof old, &back, 16), -1);
        assert_int_equal(runtime_plan_value_origin(old, sizeof old), 0);
        /* the same bytes in a value of the current size and version: the schedule's version refuses it */
        unsigned char cur[256];
        size_t clen = 0;
        runtime_plan_value_encode(&sx_sched, 2, 3.5f, cur, &clen);
        assert_true(clen != sizeof old);
        memcpy(cur + 8, s1, sizeof s1);
        assert_int_equal(runtime_plan_value_decode(cur, clen, &back, 16), -1);
    }

    /* layout Y (another class): a schedule stored for another GPU only */
    runs(ly, 32, 2, 0);
    const search_schedule sy_sched = SCHED_INIT(SEARCH_SKETCH_SPLIT, 8, 2, 2, 2, 64, 32);
    assert_true(search_schedule_legal(&sy_sched, 16, NULL, 0));
    cls = class_of(ly, 32);
    assert_false(same_class(cls, class_of(lx, 32)));
    runtime_perf_key(&k, AP, &ps, &other, &cls);
    runtime_plan_value_encode(&sy_sched, 2, 1.f, val, &len);
    put_schedule(&k, val, len);
    /* layout Z: a record for this GPU holding an illegal schedule; layout W: one of a bad length */
    for (int i = 0; i < 32; ++i)
        lz[i] = i < 24 ? 0 : -1, lw[i] = i < 4 ? 1 : -1;
    search_schedule bad = sy_sched;
    bad.rows = 3;
    cls = class_of(lz, 32);
    runtime_perf_key(&k, AP, &ps, &gpu, &cls);
    runtime_plan_value_encode(&bad, 2, 1.f, val, &len);
    put_schedule(&k, val, len);
    cls = class_of(lw, 32);
    runtime_perf_key(&k, AP, &ps, &gpu, &cls);
    put_schedule(&k, "junk", 4);

    /* X: exactly the stored schedule (its split-K is what the launch uses for d_in 1024) */
    CALL_OK(&r, AP, &sx, lx);
    search_schedule got = last_schedule();
    assert_memory_equal(&got, &sx_sched, sizeof got);
    assert_true(g_fk.nlaunch == 2 && g_fk.launch[0].grid[1] == 4 && g_fk.launch[0].kp.k_per_cta == 256);
    dop_context_stats st = stats(r.ctx);
    assert_true(st.schedules_from_cache == 1 && st.plans == 1);
    CALL_OK(&r, AP, &sx, lx2); /* the same class: the plan, not the cache again */
    got = last_schedule();
    assert_memory_equal(&got, &sx_sched, sizeof got);
    st = stats(r.ctx);
    assert_true(st.schedules_from_cache == 1 && st.plans == 1);

    /* Y, Z, W: dispatch decides; the record of the other GPU and the bad records are not used */
    const int32_t *lays[3] = {ly, lz, lw};
    for (int i = 0; i < 3; ++i) {
        CALL_OK(&r, AP, &sx, lays[i]);
        runtime_layout_summary sum;
        search_schedule want;
        runtime_summarize_rows(lays[i], 32, &sum);
        runtime_pick_schedule(&in, AP, 32, 1024, 2, 16, &sum, &want);
        got = last_schedule();
        if (i == 0)
            assert_memory_not_equal(&got, &sy_sched, sizeof got);
        assert_true(got.rows == want.rows && got.warps == want.warps && got.vec == want.vec && got.kc == want.kc &&
                    got.cols == want.cols && got.sketch == want.sketch);
        st = stats(r.ctx);
        assert_true(st.schedules_from_cache == 1 && st.plans == (uint64_t)(2 + i));
    }

    /* V: no schedule for its class, a tuned one for the same layout with differing ranks (the
     * sibling class, ranks_differ 1, the nearest): dispatch takes it. U: the sibling holds a
     * warmed one (origin 1) and no tuned class is within 3: the heuristic decides, as for a miss. */
    int32_t lv[32], lu[32];
    runs(lv, 32, 16, 0);
    runs(lu, 32, 4, 8);
    const search_schedule sv_sched = SCHED_INIT(SEARCH_SKETCH_SPLIT, 4, 8, 2, 2, 64, 64);
    assert_true(search_schedule_legal(&sv_sched, 16, NULL, 0));
    const int32_t *sib_lays[2] = {lv, lu};
    for (int i = 0; i < 2; ++i) {
        cls = class_of(sib_lays[i], 32);
        assert_int_equal(cls.ranks_differ, 0);
        cls.ranks_differ = 1;
        runtime_perf_key(&k, AP, &ps, &gpu, &cls);
        runtime_plan_value_encode(&sv_sched, i == 0 ? 2 : 1, 2.f, val, &len);
        put_schedule(&k, val, len);
    }
    CALL_OK(&r, AP, &sx, lv);
    got = last_schedule();
    assert_memory_equal(&got, &sv_sched, sizeof got);
    st = stats(r.ctx);
    assert_true(st.schedules_from_cache == 2 && st.plans == 5);
    CALL_OK(&r, AP, &sx, lu);
    got = last_schedule();
    assert_memory_not_equal(&got, &sv_sched, sizeof got);
    st = stats(r.ctx);
    assert_true(st.schedules_from_cache == 2 && st.plans == 6);

    /* T: 16 rows in runs of 8, no class of its own stored; X's class (32 rows in runs of 8) is a
     * row bucket and a run count away (distance 3), U's warmed sibling further: X's tuned
     * schedule. S: runs of 4 over 32 rows, half of them without an adapter, 4 or more bucket
     * steps from every stored tuned class: the heuristic. */
    int32_t lt[16], ls[32];
    runs(lt, 16, 8, 0);
    runs(ls, 32, 4, 16);
    {
        runtime_layout_class ct = class_of(lt, 16), cx = class_of(lx, 32), cs = class_of(ls, 32);
        assert_int_equal(ct.rows_log2 + 1, cx.rows_log2);
        assert_int_equal(ct.groups_log2 + 1, cx.groups_log2);
        assert_true(ct.longest_log2 == cx.longest_log2 && ct.mean_log2 == cx.mean_log2 &&
                    ct.none_quarters == cx.none_quarters && ct.ranks_differ == cx.ranks_differ);
        assert_true(abs(cs.groups_log2 - cx.groups_log2) + abs(cs.longest_log2 - cx.longest_log2) +
                        abs(cs.mean_log2 - cx.mean_log2) + abs(cs.none_quarters - cx.none_quarters) >=
                    4);
    }
    dop_lora_shape sx16 = sx;
    sx16.num_rows = 16;
    CALL_OK(&r, AP, &sx16, lt);
    got = last_schedule();
    assert_memory_equal(&got, &sx_sched, sizeof got);
    st = stats(r.ctx);
    assert_true(st.schedules_from_cache == 3 && st.plans == 7);
    CALL_OK(&r, AP, &sx, ls);
    got = last_schedule();
    assert_memory_not_equal(&got, &sx_sched, sizeof got);
    assert_memory_not_equal(&got, &sv_sched, sizeof got);
    st = stats(r.ctx);
    assert_true(st.schedules_from_cache == 3 && st.plans == 8);
    rig_free(&r, true);

    /* the count is per context: a new one finds X's schedule again */
    r = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, NULL), 16);
    CALL_OK(&r, AP, &sx, lx2);
    got = last_schedule();
    assert_memory_equal(&got, &sx_sched, sizeof got);
    st = stats(r.ctx);
    assert_true(st.schedules_from_cache == 1 && st.plans == 1);
    rig_free(&r, true);

    /* without the cache, the heuristic */
    r = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE | DOP_CONTEXT_NO_CACHE, NULL, NULL), 16);
    CALL_OK(&r, AP, &sx, lx);
    got = last_schedule();
    assert_memory_not_equal(&got, &sx_sched, sizeof got);
    assert_int_equal(stats(r.ctx).schedules_from_cache, 0);
    rig_free(&r, true);
}

/* ---- corrupt cubin records ------------------------------------------------------------------- */

static const search_schedule SC = SCHED_INIT(SEARCH_SKETCH_SPLIT, 4, 2, 8, 1, 256, 256);

/* A new context makes the call of SC (max_rank 56) once; its statistics. The context is gone
 * before anything is asserted, so that a failure leaves nothing behind for the next test. */
static dop_context_stats run_sc(log_rec *rec)
{
    rig r = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, rec), 56);
    dop_lora_shape s = shape_of(DOP_DTYPE_F16, 16, 512, 56);
    int32_t rows[16];
    runs(rows, 16, 4, 0);
    runtime_force_schedule(&SC);
    dop_status called = call(&r, AP, &s, rows);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", dop_context_error(r.ctx));
    runtime_force_schedule(NULL);
    search_schedule got = last_schedule();
    dop_context_stats st = stats(r.ctx);
    rig_free(&r, true);
    if (called != DOP_OK) {
        print_error("the call of SC: %s (%s)\n", dop_status_string(called), msg);
        fail();
    }
    assert_true(got.rows == SC.rows && got.warps == SC.warps && got.cols == SC.cols);
    return st;
}

static void test_corrupt_cubin(void **state)
{
    dop_device_info in;
    CHECK_OK(dop_context_device_info(g_ctx, &in));
    cache_key k;
    cubin_key_of(&k, &in, KERNELS_F16, 56, &SC);
    unsigned char hash[CACHE_HASH_LEN];
    cache_key_hash(k.buf, k.len, hash);
    char why[256];

    dop_context_stats st = run_sc(NULL); /* compiles and stores SC */
    assert_true(st.kernels_compiled == 1 && st.cubins_from_cache == 2);
    assert_int_equal(stored_sm(&k), 90);
    st = run_sc(NULL);
    assert_true(st.kernels_compiled == 0 && st.cubins_from_cache == 3);

    for (int variant = 0; variant < 3; ++variant) {
        void *cubin = NULL;
        size_t n = 0;
        assert_int_equal(cache_get(g_store, CACHE_DB_CUBINS, k.buf, k.len, &cubin, &n, NULL, why, sizeof why),
                         CACHE_OK);
        if (variant == 0) {
            /* the stored record with bytes of the cubin flipped: the checksum fails */
            size_t rl = cache_record_size(5, k.len, n);
            unsigned char *rec = malloc(rl);
            assert_non_null(rec);
            assert_int_equal(cache_record_encode(rec, rl, CACHE_DB_CUBINS, (uint64_t)time(NULL), "sm_90", k.buf,
                                                 k.len, cubin, n, why, sizeof why),
                             CACHE_OK);
            for (size_t i = rl - n / 2; i < rl - n / 2 + 8; ++i)
                rec[i] ^= 0x5a;
            assert_int_equal(cache_test_put_raw(g_store, CACHE_DB_CUBINS, hash, rec, rl, why, sizeof why), CACHE_OK);
            free(rec);
        } else if (variant == 1) {
            /* garbage under the record's LMDB key */
            static const char junk[] = "this is not a dop cache record, just bytes";
            assert_int_equal(cache_test_put_raw(g_store, CACHE_DB_CUBINS, hash, junk, sizeof junk, why, sizeof why),
                             CACHE_OK);
        } else {
            /* a well-formed record whose value is not a cubin (the driver refuses it) */
            static const char notelf[] = "not a cubin, but long enough to look like one to a careless reader.......";
            assert_int_equal(cache_put(g_store, CACHE_DB_CUBINS, k.buf, k.len, "sm_90", notelf, sizeof notelf, why,
                                       sizeof why),
                             CACHE_OK);
            g_bad_images_allowed++;
        }
        free(cubin);
        log_rec rec = {PTHREAD_MUTEX_INITIALIZER, 0, ""};
        st = run_sc(&rec); /* the call succeeds: the record is dropped, SC compiled again and stored again */
        if (st.kernels_compiled != 1 || st.cubins_from_cache != 2)
            print_error("variant %d: compiled %llu, from the cache %llu, warning \"%s\"\n", variant,
                        (unsigned long long)st.kernels_compiled, (unsigned long long)st.cubins_from_cache, rec.warn);
        assert_true(st.kernels_compiled == 1 && st.cubins_from_cache == 2);
        assert_true(rec.nwarn >= 1 && strstr(rec.warn, "cubin") != NULL);
        assert_int_equal(stored_sm(&k), 90);
        st = run_sc(NULL); /* and the next context loads the good one */
        assert_true(st.kernels_compiled == 0 && st.cubins_from_cache == 3);
    }
}

/* ---- asynchronous contexts ------------------------------------------------------------------------ */

static void test_async_generic_then_dispatched(void **state)
{
    /* default options: compiles in the background, the cache file of $DOP_CACHE_DIR */
    dop_context *ctx = NULL;
    CHECK_OK(dop_context_create(NULL, &ctx));
    rig r = rig_make(ctx, 48);
    dop_context_stats st = stats(ctx);
    assert_true(st.cache_open == 1 && st.cubins_from_cache == 2 && st.kernels_compiled == 0);
    assert_string_equal(st.cache_path, g_file);
    assert_non_null(ctx->compiler);

    dop_lora_shape s = shape_of(DOP_DTYPE_F16, 16, 512, 48); /* max_rank 48: a module of this test only */
    int32_t rows[16];
    runs(rows, 16, 4, 0);
    CALL_OK(&r, AP, &s, rows);
    st = stats(ctx);
    assert_true(st.generic_calls == 1 && st.plans == 1 && st.calls == 1);
    search_schedule got = last_schedule(), want = runtime_generic_schedule(AP, 16, 512, 2, 132);
    assert_memory_equal(&got, &want, sizeof got);
    assert_ptr_equal(launched_module(), ctx->generic[0]->module);
    assert_true(g_fk.nlaunch == 2 && g_fk.launch[0].kind == FK_SHRINK && g_fk.launch[1].kind == FK_EXPAND);
    assert_int_equal(g_fk.launch[0].kp.max_rank, 48); /* the generic kernel (max_rank 128) runs the call's rank */

    runtime_compile_wait(ctx);
    st = stats(ctx);
    assert_true(st.kernels_compiled == 1 && st.kernels_loaded == 3);
    CALL_OK(&r, AP, &s, rows);
    st = stats(ctx);
    assert_true(st.generic_calls == 1 && st.plans == 1 && st.calls == 2);
    runtime_layout_summary sum;
    runtime_summarize_rows(rows, 16, &sum);
    runtime_pick_schedule(&ctx->info, AP, 16, 512, 2, 48, &sum, &want);
    got = last_schedule();
    assert_memory_equal(&got, &want, sizeof got);
    CUmodule m = launched_module();
    assert_true(m && m != ctx->generic[0]->module && m != ctx->generic[1]->module);

    /* bf16 goes to the other generic kernel; a shrink alone launches its half of the generic schedule */
    dop_lora_shape sb = shape_of(DOP_DTYPE_BF16, 16, 512, 48);
    CALL_OK(&r, SH, &sb, rows);
    st = stats(ctx);
    assert_int_equal(st.generic_calls, 2);
    assert_ptr_equal(launched_module(), ctx->generic[1]->module);
    want = runtime_generic_schedule(SH, 16, 512, 2, 132);
    want.split_k = 1; /* a shrink that overwrites v does not split K */
    got = last_schedule();
    assert_memory_equal(&got, &want, sizeof got);
    assert_true(g_fk.nlaunch == 1 && g_fk.launch[0].kind == FK_SHRINK && g_fk.launch[0].grid[1] == 1);
    runtime_compile_wait(ctx);
    rig_free(&r, true);

    /* another asynchronous context finds the kernel in the cache: no generic call at all */
    ctx = make_ctx(0, 0, g_file, NULL);
    r = rig_make(ctx, 48);
    CALL_OK(&r, AP, &s, rows);
    st = stats(ctx);
    assert_true(st.generic_calls == 0 && st.cubins_from_cache == 3 && st.kernels_compiled == 0);
    runtime_pick_schedule(&ctx->info, AP, 16, 512, 2, 48, &sum, &want);
    got = last_schedule();
    assert_memory_equal(&got, &want, sizeof got);
    m = launched_module();
    assert_true(m && m != ctx->generic[0]->module);
    rig_free(&r, true); /* destroyed with nothing queued: the worker stops and pops its context */
    assert_int_equal(fk_get(&g_fk.pushed), 0);

    /* destroyed right after a call queued a compile: the worker finishes or drops it, nothing leaks */
    ctx = make_ctx(0, 0, g_file, NULL);
    r = rig_make(ctx, 40);
    dop_lora_shape s40 = shape_of(DOP_DTYPE_F16, 16, 512, 40);
    CALL_OK(&r, AP, &s40, rows);
    assert_int_equal(stats(ctx).generic_calls, 1);
    rig_free(&r, true);
    assert_int_equal(fk_get(&g_fk.pushed), 0);
}

/* ---- two devices of different architectures, one cache file ----------------------------------- */

static const search_schedule SD = SCHED_INIT(SEARCH_SKETCH_SPLIT, 2, 8, 8, 1, 1024, 128);

/* A context on dev (waiting) and the calls of this test: SD forced, then a dispatched one; its stats. */
static dop_context_stats two_dev_calls(dop_context *ctx, search_schedule *dispatched)
{
    rig r = rig_make(ctx, 16);
    dop_lora_shape s = shape_of(DOP_DTYPE_F16, 8, 1024, 16);
    int32_t rows[8] = {0, 0, 1, 1, 2, 2, 3, 3};
    runtime_force_schedule(&SD);
    CALL_OK(&r, AP, &s, rows);
    runtime_force_schedule(NULL);
    CALL_OK(&r, EX, &s, rows);
    *dispatched = last_schedule();
    dop_context_stats st = stats(ctx);
    rig_free(&r, false);
    return st;
}

static void test_two_devices(void **state)
{
    char f2[400];
    snprintf(f2, sizeof f2, "%s/two.mdb", g_dir);
    g_fk.ndev = 2;
    fk_set_device(1, 8, 0);
    const int loads0 = fk_get(&g_fk.loads[0]), loads1 = fk_get(&g_fk.loads[1]);

    /* warm the file for sm_80 only */
    dop_context *c80 = make_ctx(1, DOP_CONTEXT_WAIT_FOR_COMPILE, f2, NULL);
    dop_device_info in80, in90;
    CHECK_OK(dop_context_device_info(c80, &in80));
    assert_true(in80.ordinal == 1 && in80.cc_major == 8 && in80.cc_minor == 0 && in80.sm_count == 108);
    assert_string_equal(in80.name, "Fake A100");
    assert_int_equal(g_fk.retained[1], 1);
    search_schedule d80, d90;
    dop_context_stats st = two_dev_calls(c80, &d80);
    assert_true(st.kernels_compiled == 4 && st.cubins_from_cache == 0 && st.kernels_loaded == 4);
    dop_context_destroy(c80);
    assert_int_equal(g_fk.retained[1], 0);
    assert_int_equal(fk_get(&g_fk.loads[1]), loads1 + 4);

    /* an sm_90 context on that file loads nothing from it: every module is compiled for sm_90 */
    dop_context *c90 = make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, f2, NULL);
    CHECK_OK(dop_context_device_info(c90, &in90));
    st = stats(c90);
    assert_true(st.cubins_from_cache == 0 && st.kernels_compiled == 2);
    st = two_dev_calls(c90, &d90);
    assert_true(st.kernels_compiled == 4 && st.cubins_from_cache == 0);
    dop_context_destroy(c90);
    assert_int_equal(fk_get(&g_fk.loads[0]), loads0 + 4);
    assert_int_equal(fk_get(&g_fk.wrong_arch), 0);

    /* the cubin keys of one source differ by arch, and the file holds both */
    char *src = NULL, why[256];
    size_t len = 0;
    search_schedule mk = search_schedule_module_key(&SD);
    assert_int_equal(kernels_codegen(&mk, KERNELS_F16, 16, &src, &len, why, sizeof why), 0);
    uint64_t h = runtime_source_hash(src, len);
    free(src);
    cache_key k80, k90;
    runtime_cubin_key(&k80, in80.nvrtc_major, in80.nvrtc_minor, 8, 0, h);
    runtime_cubin_key(&k90, in90.nvrtc_major, in90.nvrtc_minor, 9, 0, h);
    assert_false(key_equal(&k80, &k90));
    cache_store *s2 = NULL;
    assert_int_equal(cache_open(f2, CACHE_READONLY, &s2, why, sizeof why), CACHE_OK);
    cache_store *keep = g_store;
    g_store = s2;
    assert_int_equal(stored_sm(&k80), 80);
    assert_int_equal(stored_sm(&k90), 90);
    g_store = keep;
    cache_close(s2);

    /* both at once in one process: each loads its own arch's cubins from the shared file */
    c80 = make_ctx(1, DOP_CONTEXT_WAIT_FOR_COMPILE, f2, NULL);
    c90 = make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, f2, NULL);
    search_schedule e80, e90;
    dop_context_stats s80 = two_dev_calls(c80, &e80), s90 = two_dev_calls(c90, &e90);
    assert_true(s80.kernels_compiled == 0 && s80.cubins_from_cache == 4);
    assert_true(s90.kernels_compiled == 0 && s90.cubins_from_cache == 4);
    assert_memory_equal(&e80, &d80, sizeof e80);
    assert_memory_equal(&e90, &d90, sizeof e90);
    /* the fake's arch check is live: the sm_80 cubin is refused on the sm_90 device, taken on the sm_80 one */
    void *cub80 = NULL;
    size_t n80 = 0;
    assert_int_equal(cache_open(f2, CACHE_READONLY, &s2, why, sizeof why), CACHE_OK);
    assert_int_equal(cache_get(s2, CACHE_DB_CUBINS, k80.buf, k80.len, &cub80, &n80, NULL, why, sizeof why), CACHE_OK);
    cache_close(s2);
    CUcontext prev;
    CUmodule m;
    assert_int_equal(g_fake.fn_cuCtxPushCurrent(FK_PRIMARY(0)), CUDA_SUCCESS);
    assert_int_equal(g_fake.fn_cuModuleLoadData(&m, cub80), CUDA_ERROR_NO_BINARY_FOR_GPU);
    assert_int_equal(g_fake.fn_cuCtxPopCurrent(&prev), CUDA_SUCCESS);
    assert_int_equal(fk_get(&g_fk.wrong_arch), 1);
    FK_LOCK();
    g_fk.wrong_arch = 0; /* that one was on purpose */
    FK_UNLOCK();
    assert_int_equal(g_fake.fn_cuCtxPushCurrent(FK_PRIMARY(1)), CUDA_SUCCESS);
    assert_int_equal(g_fake.fn_cuModuleLoadData(&m, cub80), CUDA_SUCCESS);
    assert_int_equal(g_fake.fn_cuModuleUnload(m), CUDA_SUCCESS);
    assert_int_equal(g_fake.fn_cuCtxPopCurrent(&prev), CUDA_SUCCESS);
    free(cub80);
    /* each context's modules live on its device (the fake refuses launches across devices) */
    assert_true(c80->kernels[0] && c90->kernels[0] && c80->kernels[0]->module != c90->kernels[0]->module);
    dop_context_destroy(c80);
    dop_context_destroy(c90);
    assert_int_equal(fk_get(&g_fk.wrong_arch), 0);
    assert_true(g_fk.retained[0] == 1 && g_fk.retained[1] == 0); /* g_ctx's */
}

/* ---- one compile per key ------------------------------------------------------------------ */

typedef struct racer {
    rig *r;
    const dop_lora_shape *s;
    const int32_t *rows;
    pthread_barrier_t *go;
    dop_status st;
    search_schedule used;
} racer;

static void *race(void *p)
{
    racer *a = p;
    dop_layout lay = {.kind = DOP_LAYOUT_ROWS, .row_slot = a->rows};
    dop_weights w = {.table = a->r->tab};
    pthread_barrier_wait(a->go);
    a->st = dop_lora_apply(a->r->ctx, a->s, &lay, &w, FAKE_X, FAKE_Y, a->r->ws, WS_BYTES, FK_STREAM);
    runtime_last_schedule(&a->used);
    return NULL;
}

/* The cross-process marker of runtime_kernels.c: {'DOPM', pid, start} stored under
 * ("dop.compiling", the cubin key's bytes) in the cubins database while a process compiles. */
typedef struct marker {
    uint32_t magic;
    int32_t pid;
    int64_t started;
} marker;

static void put_marker(const cache_key *ck, pid_t pid, cache_key *mk)
{
    char why[256];
    cache_key_init(mk, "dop.compiling", 1);
    cache_key_bytes(mk, ck->buf, ck->len);
    marker m = {0x444f504du, (int32_t)pid, (int64_t)time(NULL)};
    assert_int_equal(cache_put(g_store, CACHE_DB_CUBINS, mk->buf, mk->len, "compiling", &m, sizeof m, why, sizeof why),
                     CACHE_OK);
}

/* "Another process": after a while, stores the cubin of a source for sm_90 and removes the marker. */
typedef struct publisher {
    cache_key ck, mk;
    char *src;
    int ok;
} publisher;

static void *publish(void *p)
{
    publisher *pb = p;
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    char why[1024];
    const runtime_nvrtc *nv = runtime_nvrtc_load(why, sizeof why);
    static const char *const entries[] = {KERNELS_ENTRY_SHRINK, KERNELS_ENTRY_EXPAND, KERNELS_ENTRY_FUSED};
    runtime_cubin c;
    if (nv && runtime_jit_compile(nv, pb->src, 9, 0, entries, 3, &c, why, sizeof why) == 0) {
        pb->ok = cache_put(g_store, CACHE_DB_CUBINS, pb->ck.buf, pb->ck.len, "sm_90", c.data, c.size, why,
                           sizeof why) == CACHE_OK &&
                 cache_delete(g_store, CACHE_DB_CUBINS, pb->mk.buf, pb->mk.len, why, sizeof why) == CACHE_OK;
        runtime_cubin_free(&c);
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void test_one_compile_per_key(void **state)
{
    /* four threads make the same new call at once: one compile, the others wait for it */
    rig r = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, NULL), 8);
    dop_lora_shape s = shape_of(DOP_DTYPE_F16, 32, 512, 8); /* max_rank 8: this test's modules */
    int32_t rows[32];
    runs(rows, 32, 8, 0);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 4);
    pthread_t t[4];
    racer a[4];
    FK_LOCK();
    g_fk.nlaunch = 0;
    FK_UNLOCK();
    for (int i = 0; i < 4; ++i) {
        a[i] = (racer){&r, &s, rows, &go, DOP_ERR_INTERNAL, {0}};
        assert_int_equal(pthread_create(&t[i], NULL, race, &a[i]), 0);
    }
    for (int i = 0; i < 4; ++i)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < 4; ++i) {
        assert_int_equal(a[i].st, DOP_OK);
        assert_memory_equal(&a[i].used, &a[0].used, sizeof a[0].used);
    }
    dop_context_stats st = stats(r.ctx);
    assert_true(st.calls == 4 && st.plans == 1 && st.kernels_compiled == 1 && st.kernels_loaded == 3);
    assert_int_equal(fk_get(&g_fk.nlaunch), 8);
    rig_free(&r, true);

    /* another live process holds the marker of a key: this one waits for its cubin instead of compiling */
    dop_device_info in;
    CHECK_OK(dop_context_device_info(g_ctx, &in));
    const search_schedule sm = SCHED_INIT(SEARCH_SKETCH_SPLIT, 2, 4, 8, 1, 512, 64);
    publisher pb;
    memset(&pb, 0, sizeof pb);
    search_schedule mk = search_schedule_module_key(&sm);
    char why[256];
    size_t len = 0;
    assert_int_equal(kernels_codegen(&mk, KERNELS_F16, 8, &pb.src, &len, why, sizeof why), 0);
    cubin_key_of(&pb.ck, &in, KERNELS_F16, 8, &sm);
    put_marker(&pb.ck, getppid(), &pb.mk);
    r = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, NULL), 8);
    pthread_t other;
    double t0 = now_s();
    assert_int_equal(pthread_create(&other, NULL, publish, &pb), 0);
    runtime_force_schedule(&sm);
    dop_status called = call(&r, AP, &s, rows);
    double waited = now_s() - t0;
    runtime_force_schedule(NULL);
    pthread_join(other, NULL);
    free(pb.src);
    st = stats(r.ctx);
    rig_free(&r, true);
    assert_int_equal(called, DOP_OK);
    assert_true(pb.ok);
    assert_true(waited >= 0.3);
    assert_true(st.kernels_compiled == 0 && st.cubins_from_cache == 3);

    /* a marker of a dead process, or of this one, is no reason to wait: compiled at once, marker gone */
    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    const pid_t owners[2] = {dead, getpid()};
    for (int i = 0; i < 2; ++i) {
        search_schedule sd = sm;
        sd.cols = (uint16_t)(i ? 32 : 128);
        cache_key ck, mkey;
        cubin_key_of(&ck, &in, KERNELS_F16, 8, &sd);
        put_marker(&ck, owners[i], &mkey);
        r = rig_make(make_ctx(0, DOP_CONTEXT_WAIT_FOR_COMPILE, g_file, NULL), 8);
        runtime_force_schedule(&sd);
        t0 = now_s();
        called = call(&r, AP, &s, rows);
        waited = now_s() - t0;
        runtime_force_schedule(NULL);
        st = stats(r.ctx);
        rig_free(&r, true);
        assert_int_equal(called, DOP_OK);
        assert_true(st.kernels_compiled == 1 && waited < 60);
        assert_int_equal(stored_sm(&ck), 90);
        void *v = NULL;
        size_t n = 0;
        assert_int_equal(cache_get(g_store, CACHE_DB_CUBINS, mkey.buf, mkey.len, &v, &n, NULL, why, sizeof why),
                         CACHE_MISS);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_layout_classify),     T(test_pick_for_class), T(test_perf_key),     T(test_plans_per_class),
        T(test_cubins_from_cache),   T(test_schedules_from_cache), T(test_corrupt_cubin),
        T(test_async_generic_then_dispatched), T(test_two_devices), T(test_one_compile_per_key),
    };
#undef T
    return cmocka_run_group_tests_name("dispatch and the kernel cache", tests, group_setup, group_teardown) ? 1 : 0;
}
