/*
 * test_api.c -- the public API without a GPU: argument validation, error
 * reporting, and dispatch against a fake CUDA driver (fake_cuda.h, installed
 * with runtime_driver_install) that records launches instead of running them.
 * NVRTC is real: the generic kernels and the few schedules used here are
 * compiled for sm_90 once, into a private cache file that every context of
 * the fake-driver group shares (contexts after the first load the generic
 * kernels from it). Every context waits for its compiles
 * (DOP_CONTEXT_WAIT_FOR_COMPILE). Dispatch and the cache: test_dispatch.c.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dop.h"
#include "fake_cuda.h"
#include "runtime_driver.h"
#include "runtime_internal.h"

/* ---- helpers ----------------------------------------------------------------------- */

#define FAKE_X ((const void *)(uintptr_t)0x10000000u)
#define FAKE_Y ((void *)(uintptr_t)0x20000000u)
#define FAKE_V ((float *)(uintptr_t)0x30000000u)
#define DEVP(v) ((const int32_t *)(uintptr_t)(v))
/* A schedule; designated, so that fields added to search_schedule start at zero. */
#define SCHED_INIT(SKETCH, ROWS, WARPS, VEC, SPLIT, KC, COLS)                                                      \
    {.version = SEARCH_SCHEDULE_VERSION, .sketch = SKETCH, .rows = ROWS, .warps = WARPS, .vec = VEC,               \
     .split_k = SPLIT, .kc = KC, .cols = COLS, .stages = 1}
#define AP RUNTIME_OP_APPLY
#define SH RUNTIME_OP_SHRINK
#define EX RUNTIME_OP_EXPAND
#define NSLOT 4
#define NROW 64

static dop_context *g_ctx; /* shared by the fake-driver tests */
static dop_context_stats g_created; /* g_ctx's statistics right after its creation */
static char g_dir[256], g_cache[300]; /* a private directory and the group's cache file in it */

/* Options of every fake-driver context: wait for compiles, the group's cache file. */
static void fk_options(dop_context_options *opt)
{
    dop_context_options_init(opt);
    opt->flags = DOP_CONTEXT_WAIT_FOR_COMPILE;
    opt->cache_path = g_cache;
}
static const search_schedule S1 = SCHED_INIT(SEARCH_SKETCH_SPLIT, 4, 4, 8, 2, 256, 128);

/* The status of a call, and a message (of ctx c, this thread) that contains needle. */
#define EXPECT(call, want, c, needle) expect_status((call), (want), (c), (needle), __LINE__)
#define EXPECT_OK(call, c) EXPECT(call, DOP_OK, c, NULL)
static void expect_status(dop_status got, dop_status want, const dop_context *c, const char *needle, int line)
{
    const char *m = dop_context_error(c);
    if (got != want || !m || (needle && !strstr(m, needle))) {
        print_error("line %d: got %s (\"%s\"), expected %s with \"%s\"\n", line, dop_status_string(got),
                    m ? m : "(null)", dop_status_string(want), needle ? needle : "");
        fail();
    }
}

static const void *wptr(int slot, int slice, int b)
{
    return (const void *)(uintptr_t)(0x40000000u + 0x10000u * (unsigned)slot + 0x100u * (unsigned)slice +
                                     0x10u * (unsigned)b);
}

/* Checks the SoA image (u64 A | u64 B | i32 rank | f32 scale) of n entries at dev. */
static void check_packed(uint64_t dev, const dop_lora_adapter *e, int n)
{
    const unsigned char *img = HOST(dev);
    for (int i = 0; i < n; ++i) {
        uint64_t a, b;
        int32_t r;
        float s;
        memcpy(&a, img + 8 * i, 8), memcpy(&b, img + 8 * n + 8 * i, 8);
        memcpy(&r, img + 16 * n + 4 * i, 4), memcpy(&s, img + 20 * n + 4 * i, 4);
        assert_int_equal(a, (uintptr_t)e[i].A);
        assert_int_equal(b, (uintptr_t)e[i].B);
        assert_true(r == e[i].rank && s == e[i].scale);
    }
}

/* Per-test fixture on g_ctx: 64 rows, d_in 512, slices {256, 128}, max_rank 16, a table of 4 slots
 * (slot 2 has no slice-1 weights, slot 3 rank 8 there), rows in runs of 16, the last 4 without adapter. */
typedef struct fx {
    dop_lora_shape shape;
    dop_lora_adapter ad[NSLOT * 2];
    dop_adapter_table *tab;
    int32_t rows[NROW];
    dop_layout lay;
    dop_weights w;
    void *ws;
    size_t ws_size; /* enough for 16 per-call slots */
} fx;

static int setup_fake(void **state)
{
    fk_reset();
    fx *f = calloc(1, sizeof *f);
    if (!(*state = f))
        return -1;
    dop_lora_shape_init(&f->shape);
    f->shape.num_rows = NROW, f->shape.d_in = 512, f->shape.num_slices = 2;
    f->shape.d_out[0] = 256, f->shape.d_out[1] = 128;
    for (int i = 0; i < NSLOT * 2; ++i)
        f->ad[i] = (dop_lora_adapter){wptr(i / 2, i % 2, 0), wptr(i / 2, i % 2, 1), 16, 0.5f * (float)(i / 2 + 1)};
    f->ad[5] = (dop_lora_adapter){NULL, NULL, 0, 1.f};
    f->ad[7].rank = 8;
    for (int i = 0; i < NROW; ++i)
        f->rows[i] = i >= 60 ? -1 : i / 16;
    f->lay = (dop_layout){.kind = DOP_LAYOUT_ROWS, .row_slot = f->rows};
    if (dop_adapter_table_create(g_ctx, NSLOT, 2, f->ad, &f->tab) != DOP_OK ||
        dop_lora_workspace_size(g_ctx, &f->shape, 16, &f->ws_size) != DOP_OK ||
        !(f->ws = aligned_alloc(256, f->ws_size)))
        return -1;
    f->w = (dop_weights){.table = f->tab};
    memset(f->ws, 0xEE, f->ws_size);
    return 0;
}

static int teardown_fake(void **state)
{
    fx *f = *state;
    runtime_force_schedule(NULL);
    fk_reset();
    if (f) {
        dop_adapter_table_destroy(f->tab);
        free(f->ws);
        free(f);
    }
    /* every runtime_enter was left, in every thread; nothing was called outside a context */
    return fk_depth == 0 && fk_get(&g_fk.pushed) == 0 && fk_get(&g_fk.bad_calls) == 0 ? 0 : -1;
}

static int group_setup(void **state)
{
    fk_reset();
    runtime_driver_install(&g_fake);
    if (fk_tmpdir_make(g_dir, sizeof g_dir) != 0)
        return -1;
    snprintf(g_cache, sizeof g_cache, "%s/api.mdb", g_dir);
    dop_context_options opt;
    fk_options(&opt);
    if (dop_context_create(&opt, &g_ctx) != DOP_OK) {
        print_error("dop_context_create: %s\n", dop_context_error(NULL));
        return -1;
    }
    return dop_context_get_stats(g_ctx, &g_created) == DOP_OK ? 0 : -1;
}

static int group_teardown(void **state)
{
    dop_context_destroy(g_ctx);
    g_ctx = NULL;
    runtime_driver_install(NULL);
    fk_tmpdir_remove(g_dir);
    /* everything allocated, retained, pushed and loaded was given back; every module was a cubin of sm_90 */
    const char *bad = fk_unbalanced(0);
    if (bad)
        print_error("fake driver out of balance: %s\n", bad);
    return bad ? -1 : 0;
}

/* One call of any of the three operations; mk() fills in the fixture's arguments. */
typedef struct call {
    runtime_op op;
    dop_context *ctx;
    const dop_lora_shape *shape;
    const dop_layout *lay;
    const dop_weights *w;
    const void *x;
    void *y, *ws;
    float *v;
    int64_t ldv;
    uint32_t flags;
    size_t wsz;
} call;

static call mk(fx *f, runtime_op op)
{
    return (call){op, g_ctx, &f->shape, &f->lay, &f->w, op == EX ? NULL : FAKE_X, op == SH ? NULL : FAKE_Y,
                  f->ws, op == AP ? NULL : FAKE_V, 32, 0, f->ws_size};
}

static dop_status run(const call *c)
{
    g_fk.nlaunch = g_fk.nmemset = 0; /* the records are of the last call */
    if (c->op == AP)
        return dop_lora_apply(c->ctx, c->shape, c->lay, c->w, c->x, c->y, c->ws, c->wsz, FK_STREAM);
    if (c->op == SH)
        return dop_lora_shrink(c->ctx, c->shape, c->lay, c->w, c->x, c->v, c->ldv, c->flags, c->ws, c->wsz,
                               FK_STREAM);
    return dop_lora_expand(c->ctx, c->shape, c->lay, c->w, c->v, c->ldv, c->y, c->ws, c->wsz, FK_STREAM);
}

/* CASE(op, change to the default call c_, expected status, needle of the message) */
#define CASE(OP, MOD, want, needle)                                                                                \
    do {                                                                                                           \
        call c_ = mk(f, OP);                                                                                       \
        MOD;                                                                                                       \
        EXPECT(run(&c_), want, c_.ctx, needle);                                                                    \
    } while (0)
#define RUN_OK(OP, MOD) CASE(OP, MOD, DOP_OK, NULL)

static uint64_t compiled(void)
{
    dop_context_stats st;
    assert_int_equal(dop_context_get_stats(g_ctx, &st), DOP_OK);
    return st.kernels_compiled;
}

static unsigned cdiv(long a, long b) { return (unsigned)((a + b - 1) / b); }

/* The launches of the last call agree with runtime_last_schedule() and the shape. */
/* The row tiles launch l must have: the plain count, or with segment-aligned tiles (tensor-core
 * schedules, some segment off the 16-row grid) the bound runtime_seg_row_tiles gave, which lies
 * between the plain count and num_rows. Checks that the argument block carries it too. */
static unsigned expect_row_tiles(const fk_launch *l, const search_schedule *sc, const dop_lora_shape *s)
{
    unsigned plain = cdiv(s->num_rows, sc->rows);
    unsigned rt = l->kp.seg_tiles ? (unsigned)l->kp.row_tiles : plain;
    assert_true(!l->kp.seg_tiles || (sc->mma && rt >= plain && rt <= (unsigned)s->num_rows));
    assert_int_equal(l->kp.row_tiles, rt);
    return rt;
}

static void check_grid(runtime_op op, const dop_lora_shape *s, int max_dout)
{
    search_schedule sc;
    runtime_last_schedule(&sc);
    assert_true(search_schedule_legal(&sc, s->max_rank, NULL, 0));
    int n = op == AP && sc.sketch == SEARCH_SKETCH_SPLIT ? 2 : 1;
    assert_int_equal(g_fk.nlaunch, n);
    if (op == AP && sc.sketch == SEARCH_SKETCH_CLUSTER) {
        /* one launch of clusters of the K splits: x = K splits x row tiles, y = slices */
        const fk_launch *l = &g_fk.launch[0];
        assert_int_equal(l->kind, FK_CLUSTER);
        assert_true(l->block[0] == 32u * sc.warps && l->block[1] == 1 && l->block[2] == 1 && l->smem == 0);
        assert_ptr_equal(l->stream, FK_STREAM);
        assert_int_equal(l->kp.k_per_cta % (32 * sc.vec), 0);
        assert_int_equal(l->cluster, cdiv(s->d_in, l->kp.k_per_cta));
        assert_true(l->cluster <= sc.split_k);
        assert_int_equal(l->grid[0], expect_row_tiles(l, &sc, s) * l->cluster);
        assert_int_equal(l->grid[1], (unsigned)s->num_slices);
        assert_int_equal(l->grid[2], 1);
        return;
    }
    for (int i = 0; i < n; ++i) {
        const fk_launch *l = &g_fk.launch[i];
        int kind = op == SH || (n == 2 && i == 0) ? FK_SHRINK : op == AP && n == 1 ? FK_FUSED : FK_EXPAND;
        assert_int_equal(l->kind, kind);
        assert_true(l->block[0] == 32u * sc.warps && l->block[1] == 1 && l->block[2] == 1 && l->smem == 0);
        assert_ptr_equal(l->stream, FK_STREAM);
        assert_int_equal(l->grid[0], expect_row_tiles(l, &sc, s));
        assert_int_equal(l->grid[2], (unsigned)s->num_slices);
        if (kind == FK_SHRINK) {
            assert_int_equal(l->grid[1], sc.split_k);
            assert_int_equal(l->kp.k_per_cta % (32 * sc.vec), 0);
            assert_int_equal(l->grid[1], cdiv(s->d_in, l->kp.k_per_cta));
        } else {
            assert_int_equal(l->grid[1], cdiv(max_dout, sc.cols));
        }
    }
}

/* The shape fields of an argument block. */
static void check_kp_shape(const dop_kparams *kp, const dop_lora_shape *s, int64_t ldy)
{
    assert_true(kp->num_rows == s->num_rows && kp->d_in == s->d_in && kp->num_slices == s->num_slices);
    assert_true(kp->max_rank == s->max_rank && kp->ldx == (s->ldx ? s->ldx : s->d_in) && kp->ldy == ldy);
    for (int i = 0, col = 0; i < s->num_slices; col = kp->y_col[i] + s->d_out[i], ++i) {
        assert_int_equal(kp->d_out[i], s->d_out[i]);
        assert_int_equal(kp->y_col[i], s->y_col[i] >= 0 ? s->y_col[i] : col);
    }
}

/* ---- without a driver ------------------------------------------------------------- */

static void test_no_driver(void **state)
{
    char why[256];
    if (runtime_driver_load(why, sizeof why))
        skip(); /* a real driver is present */
    dop_context *ctx = (dop_context *)(uintptr_t)0x1;
    assert_int_equal(dop_context_create(NULL, &ctx), DOP_ERR_UNAVAILABLE); /* NULL options: defaults */
    assert_null(ctx);
    assert_true(strlen(dop_context_error(NULL)) > 0);
    assert_non_null(strstr(dop_context_error(NULL), "libcuda"));

    dop_context_options opt;
    dop_context_options_init(&opt);
    assert_true(opt.struct_size == sizeof opt && opt.device == 0 && !opt.log && opt.log_level == DOP_LOG_WARN);
    ctx = (dop_context *)(uintptr_t)0x1;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_UNAVAILABLE, NULL, "libcuda");
    assert_null(ctx);
    EXPECT(dop_context_create(&opt, NULL), DOP_ERR_INVALID_ARGUMENT, NULL, "out is NULL");
    opt.struct_size = 8;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_INVALID_ARGUMENT, NULL, "struct_size");
    dop_context_options_init(&opt);
    opt.device = -1;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_INVALID_ARGUMENT, NULL, "device");
    dop_context_options_init(&opt);
    opt.log_level = (dop_log_level)4;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_INVALID_ARGUMENT, NULL, "log_level");
    opt.log_level = (dop_log_level)-1;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_INVALID_ARGUMENT, NULL, "log_level");
    assert_null(ctx);
    /* flags: the four known bits pass validation (then the driver is missing), any other bit is refused */
    dop_context_options_init(&opt);
    assert_true(opt.flags == 0 && opt.cache_path == NULL);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE | DOP_CONTEXT_NO_CACHE | DOP_CONTEXT_CACHE_READONLY |
                DOP_CONTEXT_PROGRAMMATIC_LAUNCH;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_UNAVAILABLE, NULL, "libcuda");
    const uint32_t unknown[] = {16u, 0x100u, 0x80000000u, DOP_CONTEXT_WAIT_FOR_COMPILE | 0x10u};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; ++i) {
        opt.flags = unknown[i];
        ctx = (dop_context *)(uintptr_t)0x1;
        EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_INVALID_ARGUMENT, NULL, "flags");
        assert_null(ctx);
    }
}

static void test_status_version_null(void **state)
{
    const char *names[DOP_ERR_INTERNAL + 1];
    for (int i = 0; i <= DOP_ERR_INTERNAL; ++i) {
        names[i] = dop_status_string((dop_status)i);
        assert_non_null(names[i]);
        assert_true(strncmp(names[i], "DOP_", 4) == 0);
        for (int j = 0; j < i; ++j)
            assert_string_not_equal(names[i], names[j]);
    }
    assert_string_equal(dop_status_string(DOP_ERR_MISALIGNED), "DOP_ERR_MISALIGNED");
    assert_non_null(dop_status_string((dop_status)999));

    unsigned maj, min, pat;
    assert_int_equal(sscanf(dop_version_string(), "%u.%u.%u", &maj, &min, &pat), 3);
    assert_int_equal(dop_version(), maj * 10000 + min * 100 + pat);
    assert_int_equal(dop_version(), DOP_VERSION_MAJOR * 10000 + DOP_VERSION_MINOR * 100 + DOP_VERSION_PATCH);

    dop_context_destroy(NULL);
    dop_adapter_table_destroy(NULL);
    dop_context_options_init(NULL);
    dop_lora_shape_init(NULL);
    dop_lora_shape s;
    dop_lora_shape_init(&s);
    assert_true(s.dtype == DOP_DTYPE_F16 && s.num_slices == 1 && s.max_rank == 16 && s.ldx == 0 && s.ldy == 0);
    assert_int_equal(s.y_col[DOP_MAX_SLICES - 1], -1);
    dop_device_info info;
    dop_context_stats stats;
    size_t bytes;
    dop_adapter_table *tab;
    dop_lora_adapter ad = {0};
    EXPECT(dop_context_device_info(NULL, &info), DOP_ERR_INVALID_ARGUMENT, NULL, "ctx");
    EXPECT(dop_context_get_stats(NULL, &stats), DOP_ERR_INVALID_ARGUMENT, NULL, "ctx");
    EXPECT(dop_lora_workspace_size(NULL, &s, 0, &bytes), DOP_ERR_INVALID_ARGUMENT, NULL, "ctx");
    EXPECT(dop_adapter_table_create(NULL, 1, 1, &ad, &tab), DOP_ERR_INVALID_ARGUMENT, NULL, "ctx is NULL");
    EXPECT(dop_adapter_table_update(NULL, 0, 1, &ad, NULL), DOP_ERR_INVALID_ARGUMENT, NULL, "table is NULL");
}

/* ---- contexts on the fake driver ---------------------------------------------------- */

static void test_context_fake(void **state)
{
    dop_device_info in;
    EXPECT_OK(dop_context_device_info(g_ctx, &in), g_ctx);
    assert_string_equal(in.name, "Fake H200");
    assert_true(in.ordinal == 0 && in.cc_major == 9 && in.cc_minor == 0 && in.sm_count == 132);
    assert_true(in.l2_bytes == 60 << 20 && in.smem_per_block_optin == 227 << 10 && in.driver_version == 13000);
    assert_true(in.nvrtc_major >= 12);
    EXPECT(dop_context_device_info(g_ctx, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "out is NULL");
    EXPECT(dop_context_get_stats(g_ctx, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "out is NULL");

    /* g_ctx was the first on the group's (new) cache file: it compiled the two generic kernels
     * (fp16 and bf16, max_rank 128) and stored them */
    const dop_context_stats *c0 = &g_created;
    assert_true(c0->calls == 0 && c0->kernels_compiled == 2 && c0->kernels_loaded == 2 && c0->compile_seconds > 0);
    assert_true(c0->cubins_from_cache == 0 && c0->schedules_from_cache == 0 && c0->generic_calls == 0);
    assert_true(c0->plans == 0 && c0->cache_open == 1);
    assert_string_equal(c0->cache_path, g_cache);
    assert_true(g_ctx->generic[0] && g_ctx->generic[1] && g_ctx->generic[0] != g_ctx->generic[1]);
    assert_true(g_ctx->generic[0]->dtype == KERNELS_F16 && g_ctx->generic[1]->dtype == KERNELS_BF16);
    assert_true(g_ctx->generic[0]->max_rank == DOP_MAX_RANK && g_ctx->generic[1]->max_rank == DOP_MAX_RANK);
    assert_true(g_ctx->compiler == NULL); /* DOP_CONTEXT_WAIT_FOR_COMPILE: no worker */

    int retained = g_fk.retained[0], modules = fk_get(&g_fk.live_modules);
    dop_context_options opt;
    fk_options(&opt);
    dop_context *ctx = NULL;
    EXPECT_OK(dop_context_create(&opt, &ctx), NULL);
    assert_non_null(ctx);
    assert_int_equal(g_fk.retained[0], retained + 1);
    assert_int_equal(fk_get(&g_fk.live_modules), modules + 2);
    dop_context_stats st;
    EXPECT_OK(dop_context_get_stats(ctx, &st), ctx);
    /* a later context loads both from the cache */
    assert_true(st.calls == 0 && st.kernels_compiled == 0 && st.kernels_loaded == 2 && st.cubins_from_cache == 2);
    assert_true(st.plans == 0 && st.generic_calls == 0 && st.cache_open == 1 && st.compile_seconds == 0);
    assert_string_equal(st.cache_path, g_cache);
    dop_context_destroy(ctx);
    assert_int_equal(g_fk.retained[0], retained);
    assert_int_equal(fk_get(&g_fk.live_modules), modules);

    /* without the cache both are compiled */
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE | DOP_CONTEXT_NO_CACHE;
    EXPECT_OK(dop_context_create(&opt, &ctx), NULL);
    EXPECT_OK(dop_context_get_stats(ctx, &st), ctx);
    assert_true(st.kernels_compiled == 2 && st.kernels_loaded == 2 && st.cubins_from_cache == 0);
    assert_true(st.cache_open == 0 && strstr(st.cache_path, "DOP_CONTEXT_NO_CACHE") != NULL);
    assert_null(ctx->cache);
    dop_context_destroy(ctx);
    assert_int_equal(fk_get(&g_fk.live_modules), modules);

    fk_options(&opt);
    opt.flags |= 0x40u; /* unknown flags are refused with the driver present too */
    ctx = (dop_context *)(uintptr_t)0x1;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_INVALID_ARGUMENT, NULL, "unknown flags 0x41");
    assert_null(ctx);

    fk_options(&opt);
    opt.device = 1; /* one device present */
    ctx = (dop_context *)(uintptr_t)0x1;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_UNAVAILABLE, NULL, "device 1");
    assert_null(ctx);
    opt.device = 0;
    g_fk.dev[0].cc_major = 7, g_fk.dev[0].cc_minor = 5;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_UNSUPPORTED, NULL, "sm_75");
    assert_null(ctx);
    fk_reset();
    g_fk.init_result = CUDA_ERROR_NO_DEVICE;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_UNAVAILABLE, NULL, "cuInit failed: CUDA_ERROR_NO_DEVICE");
    assert_null(ctx);
    fk_reset();

    /* loading the generic kernels fails: no context, nothing left loaded or retained, and the
     * reason is the thread's message for calls without a context (dop.h) */
    g_fk.module_result = CUDA_ERROR_OUT_OF_MEMORY;
    ctx = (dop_context *)(uintptr_t)0x1;
    EXPECT(dop_context_create(&opt, &ctx), DOP_ERR_OUT_OF_DEVICE_MEMORY, NULL, "cuModuleLoadData");
    assert_null(ctx);
    fk_reset();
    assert_int_equal(g_fk.retained[0], retained);
    assert_int_equal(fk_get(&g_fk.live_modules), modules);
    assert_int_equal(fk_get(&g_fk.pushed), 0);
}

/* Log callbacks may come from dop's worker threads (the generic kernels compile side by side). */
typedef struct log_rec { pthread_mutex_t mu; int n, nerror, nwarn, ninfo, saw_device; char last[1024], warn[1024]; } log_rec;
#define LOG_REC_INIT {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, "", ""}

static void log_cb(void *user, dop_log_level level, const char *msg)
{
    log_rec *r = user;
    pthread_mutex_lock(&r->mu);
    r->n++, r->nerror += level == DOP_LOG_ERROR, r->nwarn += level == DOP_LOG_WARN, r->ninfo += level == DOP_LOG_INFO;
    r->saw_device |= level == DOP_LOG_INFO && strstr(msg, "Fake H200") != NULL;
    snprintf(r->last, sizeof r->last, "%s", msg);
    if (level == DOP_LOG_WARN)
        snprintf(r->warn, sizeof r->warn, "%s", msg);
    pthread_mutex_unlock(&r->mu);
}

static void test_logging(void **state)
{
    fx *f = *state;
    log_rec rec = LOG_REC_INIT;
    dop_context_options opt;
    fk_options(&opt);
    opt.log = log_cb, opt.log_user = &rec, opt.log_level = DOP_LOG_DEBUG;
    dop_context *ctx = NULL;
    size_t bytes;
    EXPECT_OK(dop_context_create(&opt, &ctx), NULL);
    assert_true(rec.ninfo >= 1 && rec.saw_device && rec.nerror == 0 && rec.nwarn == 0);
    int n = rec.n;
    EXPECT(dop_lora_workspace_size(ctx, NULL, 0, &bytes), DOP_ERR_INVALID_ARGUMENT, ctx, "shape is NULL");
    assert_true(rec.n == n + 1 && rec.nerror == 1);
    assert_string_equal(rec.last, dop_context_error(ctx));
    dop_context_destroy(ctx);

    rec = (log_rec)LOG_REC_INIT;
    opt.log_level = DOP_LOG_ERROR; /* the INFO line of creation is dropped, errors are not */
    EXPECT_OK(dop_context_create(&opt, &ctx), NULL);
    assert_int_equal(rec.n, 0);
    EXPECT(dop_lora_workspace_size(ctx, &f->shape, -1, &bytes), DOP_ERR_INVALID_ARGUMENT, ctx, "max_call_slots");
    assert_true(rec.n == 1 && rec.nerror == 1);
    dop_context_destroy(ctx);

    /* a cache that cannot be opened is a warning, not a failure: the context works without it
     * (and compiles the generic kernels itself) */
    char missing[400];
    snprintf(missing, sizeof missing, "%s/missing.mdb", g_dir);
    rec = (log_rec)LOG_REC_INIT;
    opt.log_level = DOP_LOG_WARN;
    opt.cache_path = missing;
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE | DOP_CONTEXT_CACHE_READONLY; /* read-only: not created */
    EXPECT_OK(dop_context_create(&opt, &ctx), NULL);
    assert_true(rec.nwarn == 1 && rec.nerror == 0 && rec.ninfo == 0);
    assert_non_null(strstr(rec.warn, "persistent cache not in use"));
    dop_context_stats st;
    EXPECT_OK(dop_context_get_stats(ctx, &st), ctx);
    assert_true(st.cache_open == 0 && strncmp(st.cache_path, "not in use", 10) == 0);
    assert_true(st.kernels_compiled == 2 && st.cubins_from_cache == 0);
    assert_int_equal(access(missing, F_OK), -1);
    dop_context_destroy(ctx);

    /* without a callback nothing reaches stdout or stderr */
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stdout), fflush(stderr);
    int o1 = dup(1), o2 = dup(2);
    dup2(fileno(tmp), 1), dup2(fileno(tmp), 2);
    fk_options(&opt);
    opt.log_level = DOP_LOG_DEBUG;
    dop_status s1 = dop_context_create(&opt, &ctx);
    dop_status s2 = dop_lora_workspace_size(ctx, NULL, 0, &bytes);
    dop_status s3 = dop_lora_apply(ctx, &f->shape, &f->lay, &f->w, NULL, FAKE_Y, f->ws, f->ws_size, NULL);
    dop_context_destroy(ctx);
    g_fk.dev[0].cc_major = 7;
    dop_status s4 = dop_context_create(&opt, &ctx);
    g_fk.dev[0].cc_major = 9;
    fflush(stdout), fflush(stderr);
    dup2(o1, 1), dup2(o2, 2);
    close(o1), close(o2);
    struct stat sb;
    assert_int_equal(fstat(fileno(tmp), &sb), 0);
    fclose(tmp);
    assert_true(s1 == DOP_OK && s2 == DOP_ERR_INVALID_ARGUMENT && s3 == DOP_ERR_INVALID_ARGUMENT);
    assert_true(s4 == DOP_ERR_UNSUPPORTED && ctx == NULL);
    assert_int_equal(sb.st_size, 0);
}

/* ---- adapter tables --------------------------------------------------------------- */

static void test_table_create(void **state)
{
    fx *f = *state;
    dop_adapter_table *t = (dop_adapter_table *)(uintptr_t)0x1;
    dop_lora_adapter e[2] = {{wptr(0, 0, 0), wptr(0, 0, 1), 8, 1.f}, {NULL, NULL, 0, 0.f}}, b[2];
    EXPECT(dop_adapter_table_create(NULL, 2, 1, e, &t), DOP_ERR_INVALID_ARGUMENT, NULL, "ctx is NULL");
    EXPECT(dop_adapter_table_create(g_ctx, 2, 1, NULL, &t), DOP_ERR_INVALID_ARGUMENT, g_ctx, "entries is NULL");
    EXPECT(dop_adapter_table_create(g_ctx, 2, 1, e, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "out is NULL");
    EXPECT(dop_adapter_table_create(g_ctx, 0, 1, e, &t), DOP_ERR_INVALID_ARGUMENT, g_ctx, "num_slots");
    assert_null(t);
    EXPECT(dop_adapter_table_create(g_ctx, -3, 1, e, &t), DOP_ERR_INVALID_ARGUMENT, g_ctx, "num_slots");
    EXPECT(dop_adapter_table_create(g_ctx, 1, 0, e, &t), DOP_ERR_INVALID_ARGUMENT, g_ctx, "num_slices");
    EXPECT(dop_adapter_table_create(g_ctx, 1, 9, e, &t), DOP_ERR_INVALID_ARGUMENT, g_ctx, "num_slices");
#define BAD_ENTRY(A, B, RANK, SCALE, want, needle)                                                                 \
    do {                                                                                                           \
        b[0] = e[0], b[1] = (dop_lora_adapter){A, B, RANK, SCALE};                                                 \
        EXPECT(dop_adapter_table_create(g_ctx, 2, 1, b, &t), want, g_ctx, needle);                                 \
    } while (0)
    const void *a1 = wptr(1, 0, 0), *b1 = wptr(1, 0, 1);
    BAD_ENTRY(NULL, NULL, -1, 1.f, DOP_ERR_INVALID_ARGUMENT, "slot 1 slice 0: rank -1");
    BAD_ENTRY(a1, b1, DOP_MAX_RANK + 1, 1.f, DOP_ERR_UNSUPPORTED, "DOP_MAX_RANK");
    BAD_ENTRY(a1, NULL, 0, 1.f, DOP_ERR_INVALID_ARGUMENT, "rank is 0");
    BAD_ENTRY(a1, NULL, 4, 1.f, DOP_ERR_INVALID_ARGUMENT, "B is NULL");
    BAD_ENTRY((const char *)a1 + 1, b1, 4, 1.f, DOP_ERR_MISALIGNED, "pointer A");
    BAD_ENTRY(a1, b1, 4, NAN, DOP_ERR_INVALID_ARGUMENT, "NaN");
#undef BAD_ENTRY
    assert_null(t);

    int live = g_fk.live_allocs;
    g_fk.alloc_result = CUDA_ERROR_OUT_OF_MEMORY;
    t = (dop_adapter_table *)(uintptr_t)0x1;
    EXPECT(dop_adapter_table_create(g_ctx, 2, 1, e, &t), DOP_ERR_OUT_OF_DEVICE_MEMORY, g_ctx,
           "CUDA_ERROR_OUT_OF_MEMORY");
    assert_null(t);
    assert_int_equal(g_fk.live_allocs, live);

    /* the fixture's table: its image was uploaded, its host mirror kept */
    check_packed(f->tab->dev, f->ad, NSLOT * 2);
    assert_true(f->tab->num_slots == NSLOT && f->tab->num_slices == 2);
    assert_memory_equal(f->tab->host, f->ad, sizeof f->ad);
}

static void test_table_update(void **state)
{
    fx *f = *state;
    dop_lora_adapter upd[4], want[NSLOT * 2];
    memcpy(want, f->ad, sizeof want);
    for (int i = 0; i < 4; ++i)
        upd[i] = (dop_lora_adapter){wptr(9, i, 0), wptr(9, i, 1), 4 + i, 2.f};
    EXPECT(dop_adapter_table_update(f->tab, -1, 1, upd, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx,
           "dop_adapter_table_update");
    EXPECT(dop_adapter_table_update(f->tab, 0, 0, upd, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "outside");
    EXPECT(dop_adapter_table_update(f->tab, 3, 2, upd, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "outside");
    EXPECT(dop_adapter_table_update(f->tab, NSLOT, 1, upd, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "outside");
    EXPECT(dop_adapter_table_update(f->tab, 0, 1, NULL, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "entries");
    upd[3].rank = DOP_MAX_RANK + 1;
    EXPECT(dop_adapter_table_update(f->tab, 1, 2, upd, NULL), DOP_ERR_UNSUPPORTED, g_ctx, "slot 2 slice 1");
    check_packed(f->tab->dev, want, NSLOT * 2); /* nothing changed */
    assert_int_equal(g_fk.nupload, 0);
    upd[3].rank = 7;
    EXPECT_OK(dop_adapter_table_update(f->tab, 1, 2, upd, FK_STREAM), g_ctx);
    assert_int_equal(g_fk.nupload, 1);
    assert_ptr_equal(g_fk.upload_stream, FK_STREAM);
    memcpy(&want[2], upd, sizeof upd);
    check_packed(f->tab->dev, want, NSLOT * 2);
    assert_memory_equal(f->tab->host, want, sizeof want);
}

/* ---- workspace size ---------------------------------------------------------------- */

static void test_workspace_size(void **state)
{
    fx *f = *state;
    size_t b0, b1, b2;
    dop_lora_shape s;
#define WS_BAD(MOD, want, needle)                                                                                  \
    do {                                                                                                           \
        s = f->shape;                                                                                              \
        MOD;                                                                                                       \
        EXPECT(dop_lora_workspace_size(g_ctx, &s, 0, &b0), want, g_ctx, needle);                                   \
    } while (0)
    WS_BAD(s.dtype = (dop_dtype)3, DOP_ERR_INVALID_ARGUMENT, "dtype");
    WS_BAD(s.num_rows = 0, DOP_ERR_INVALID_ARGUMENT, "num_rows");
    WS_BAD(s.d_in = 0, DOP_ERR_INVALID_ARGUMENT, "d_in");
    WS_BAD(s.num_slices = 0, DOP_ERR_INVALID_ARGUMENT, "num_slices");
    WS_BAD(s.num_slices = DOP_MAX_SLICES + 1, DOP_ERR_INVALID_ARGUMENT, "num_slices");
    WS_BAD(s.d_out[1] = 0, DOP_ERR_INVALID_ARGUMENT, "d_out[1]");
    WS_BAD(s.max_rank = 0, DOP_ERR_INVALID_ARGUMENT, "max_rank");
    WS_BAD(s.max_rank = DOP_MAX_RANK + 1, DOP_ERR_UNSUPPORTED, "max_rank");
    WS_BAD(s.ldx = 511, DOP_ERR_INVALID_ARGUMENT, "ldx");
    WS_BAD(s.ldy = 383, DOP_ERR_INVALID_ARGUMENT, "ldy");
    WS_BAD((s.y_col[0] = 100, s.y_col[1] = 0), DOP_ERR_INVALID_ARGUMENT, "overlap");
    WS_BAD((s.y_col[0] = 0, s.y_col[1] = 255), DOP_ERR_INVALID_ARGUMENT, "overlap");
    WS_BAD(s.y_col[0] = -2, DOP_ERR_INVALID_ARGUMENT, "y_col[0]");
    WS_BAD((s.y_col[1] = 500, s.ldy = 600), DOP_ERR_INVALID_ARGUMENT, "ldy");
#undef WS_BAD
    s = f->shape;
    EXPECT(dop_lora_workspace_size(g_ctx, NULL, 0, &b0), DOP_ERR_INVALID_ARGUMENT, g_ctx, "shape is NULL");
    EXPECT(dop_lora_workspace_size(g_ctx, &s, 0, NULL), DOP_ERR_INVALID_ARGUMENT, g_ctx, "bytes is NULL");
    EXPECT(dop_lora_workspace_size(g_ctx, &s, -1, &b0), DOP_ERR_INVALID_ARGUMENT, g_ctx, "max_call_slots");
    s.dtype = DOP_DTYPE_BF16;
    s.y_col[0] = 128, s.y_col[1] = 0; /* slices in any order, gaps allowed */
    s.ldx = 1024;
    EXPECT_OK(dop_lora_workspace_size(g_ctx, &s, 0, &b0), g_ctx);

    s = f->shape;
    EXPECT_OK(dop_lora_workspace_size(g_ctx, &s, 0, &b0), g_ctx);
    assert_int_equal(b0 % 256, 0);
    assert_true(b0 >= (size_t)NROW * 2 * 16 * 4 + NROW * 4); /* fp32 intermediate + row ids */
    EXPECT_OK(dop_lora_workspace_size(g_ctx, &s, 1000, &b1), g_ctx);
    assert_true(b1 + 256 > b0 + 1000 * 2 * 24); /* room for 2000 packed entries */
    s.num_rows = 4096;
    EXPECT_OK(dop_lora_workspace_size(g_ctx, &s, 0, &b2), g_ctx);
    assert_true(b2 > b0);
    s.max_rank = 64;
    EXPECT_OK(dop_lora_workspace_size(g_ctx, &s, 0, &b1), g_ctx);
    assert_true(b1 > b2);
}

/* ---- argument validation of the calls ------------------------------------------------ */

static void test_call_arguments(void **state)
{
    fx *f = *state;
    dop_lora_shape bad = f->shape;
    bad.num_rows = -1;
    size_t need;
    EXPECT_OK(dop_lora_workspace_size(g_ctx, &f->shape, 0, &need), g_ctx);
    const char *fns[3] = {"dop_lora_apply: ", "dop_lora_shrink: ", "dop_lora_expand: "};
    for (int i = 0; i < 3; ++i) {
        runtime_op op = i == 0 ? AP : i == 1 ? SH : EX;
        char m[4][64];
        const char *what[4] = {"ctx", "shape", "layout", "weights"};
        for (int j = 0; j < 4; ++j)
            snprintf(m[j], sizeof m[j], "%s%s is NULL", fns[i], what[j]);
        CASE(op, c_.ctx = NULL, DOP_ERR_INVALID_ARGUMENT, m[0]);
        CASE(op, c_.shape = NULL, DOP_ERR_INVALID_ARGUMENT, m[1]);
        CASE(op, c_.lay = NULL, DOP_ERR_INVALID_ARGUMENT, m[2]);
        CASE(op, c_.w = NULL, DOP_ERR_INVALID_ARGUMENT, m[3]);
        CASE(op, c_.shape = &bad, DOP_ERR_INVALID_ARGUMENT, "shape->num_rows -1");
        CASE(op, c_.ws = NULL, DOP_ERR_INVALID_ARGUMENT, "workspace is NULL");
        CASE(op, c_.ws = (char *)f->ws + 128, DOP_ERR_MISALIGNED, "workspace is not 256-byte aligned");
        CASE(op, c_.wsz = need - 1, DOP_ERR_WORKSPACE_TOO_SMALL, "workspace_size");
        if (op != EX) {
            CASE(op, c_.x = NULL, DOP_ERR_INVALID_ARGUMENT, "x is NULL");
            CASE(op, c_.x = (const char *)FAKE_X + 1, DOP_ERR_MISALIGNED, "x is not aligned");
        }
        if (op != SH) {
            CASE(op, c_.y = NULL, DOP_ERR_INVALID_ARGUMENT, "y is NULL");
            CASE(op, c_.y = (char *)FAKE_Y + 1, DOP_ERR_MISALIGNED, "y is not aligned");
        }
        if (op != AP) {
            CASE(op, c_.v = NULL, DOP_ERR_INVALID_ARGUMENT, "v is NULL");
            CASE(op, c_.v = (float *)(uintptr_t)0x30000002u, DOP_ERR_MISALIGNED, "v is not 4-byte aligned");
            CASE(op, c_.ldv = 31, DOP_ERR_INVALID_ARGUMENT, "ldv 31");
        }
    }
    CASE(SH, c_.flags = 2, DOP_ERR_INVALID_ARGUMENT, "flags");
    /* an illegal forced schedule is refused before anything is compiled */
    search_schedule s = S1;
    s.rows = 3;
    runtime_force_schedule(&s);
    CASE(AP, (void)0, DOP_ERR_INVALID_ARGUMENT, "forced schedule");
    assert_int_equal(g_fk.nlaunch, 0);
}

static void test_layout_validation(void **state)
{
    fx *f = *state;
    int32_t rows[NROW];
    memcpy(rows, f->rows, sizeof rows);
    dop_layout l = {.kind = (dop_layout_kind)0, .row_slot = rows};
    CASE(AP, c_.lay = &l, DOP_ERR_INVALID_ARGUMENT, "layout->kind");
    l.kind = DOP_LAYOUT_ROWS, l.row_slot = NULL;
    CASE(AP, c_.lay = &l, DOP_ERR_INVALID_ARGUMENT, "row_slot");
    l.row_slot = rows, rows[17] = NSLOT;
    CASE(AP, c_.lay = &l, DOP_ERR_INVALID_LAYOUT, "row 17 uses adapter slot 4");
    rows[17] = -2;
    CASE(AP, c_.lay = &l, DOP_ERR_INVALID_LAYOUT, "row 17");
    rows[17] = 0, rows[63] = 99;
    CASE(SH, c_.lay = &l, DOP_ERR_INVALID_LAYOUT, "slot 99");
    CASE(EX, c_.lay = &l, DOP_ERR_INVALID_LAYOUT, "slot 99");
    rows[63] = -1, l.dev_row_slot = DEVP(0x60000002u);
    CASE(AP, c_.lay = &l, DOP_ERR_MISALIGNED, "dev_row_slot");
    dop_lora_shape s = f->shape; /* the slots in use have rank 16 */
    s.max_rank = 8;
    CASE(AP, c_.shape = &s, DOP_ERR_INVALID_ARGUMENT, "above shape->max_rank");

    int32_t ip[5] = {0, 20, 10, 40, 64}, ss[4] = {0, 1, 2, 3};
    dop_layout g = {.kind = DOP_LAYOUT_SEGMENTS, .num_segments = 4, .seg_indptr = ip, .seg_slot = ss};
    CASE(AP, c_.lay = &g, DOP_ERR_INVALID_LAYOUT, "not monotonic");
    ip[2] = 30, ip[4] = NROW + 1;
    CASE(AP, c_.lay = &g, DOP_ERR_INVALID_LAYOUT, "past num_rows");
    ip[4] = NROW, ip[0] = -1;
    CASE(AP, c_.lay = &g, DOP_ERR_INVALID_LAYOUT, "seg_indptr[0]");
    ip[0] = 0, g.num_segments = -1;
    CASE(AP, c_.lay = &g, DOP_ERR_INVALID_LAYOUT, "num_segments");
    g.num_segments = 4, ss[2] = NSLOT;
    CASE(AP, c_.lay = &g, DOP_ERR_INVALID_LAYOUT, "segment 2");
    ss[2] = -5;
    CASE(SH, c_.lay = &g, DOP_ERR_INVALID_LAYOUT, "segment 2");
    g.seg_indptr = NULL;
    CASE(AP, c_.lay = &g, DOP_ERR_INVALID_ARGUMENT, "seg_indptr");
    int32_t ip6[6] = {0, 10, 20, 30, 40, 50};
    dop_layout g2 = {.kind = DOP_LAYOUT_SEGMENTS, .num_segments = 5, .seg_indptr = ip6}; /* slot = index: 4 */
    CASE(AP, c_.lay = &g2, DOP_ERR_INVALID_LAYOUT, "segment 4");
    g2.num_segments = 4, g2.dev_seg_slot = DEVP(0x60000000u);
    CASE(AP, c_.lay = &g2, DOP_ERR_INVALID_ARGUMENT, "without layout->dev_seg_indptr");
    g2.dev_seg_indptr = DEVP(0x60001000u); /* dev_seg_slot without seg_slot */
    CASE(AP, c_.lay = &g2, DOP_ERR_INVALID_ARGUMENT, "dev_seg_slot");
    g2.row_slot = rows;
    CASE(AP, c_.lay = &g2, DOP_ERR_INVALID_ARGUMENT, "row arrays");
    assert_int_equal(g_fk.nlaunch, 0);
}

static void test_weights_validation(void **state)
{
    fx *f = *state;
    dop_lora_adapter ad[NSLOT * 2];
    memcpy(ad, f->ad, sizeof ad);
    dop_weights w = {.table = f->tab, .adapters = ad, .num_slots = NSLOT};
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "both a table and per-call");
    w = (dop_weights){0};
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "neither");
    dop_lora_shape s1 = f->shape;
    s1.num_slices = 1;
    CASE(EX, c_.shape = &s1, DOP_ERR_INVALID_ARGUMENT, "the table has 2 slices, the shape 1");

    dop_context *other = NULL;
    dop_adapter_table *ot = NULL;
    dop_context_options opt;
    fk_options(&opt);
    EXPECT_OK(dop_context_create(&opt, &other), NULL);
    EXPECT_OK(dop_adapter_table_create(other, NSLOT, 2, ad, &ot), other);
    w.table = ot;
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "another context");
    dop_adapter_table_destroy(ot);
    dop_context_destroy(other);

    w = (dop_weights){.adapters = ad, .num_slots = 0};
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "num_slots");
    w.num_slots = NSLOT, ad[5].rank = -1;
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "slot 2 slice 1");
    ad[5] = f->ad[5], ad[1].scale = NAN;
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "NaN");
    ad[1] = f->ad[1], w.dev_rank = DEVP(0x61000000u);
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "dev_rank/dev_scale given without dev_A");
    w.dev_rank = NULL, w.dev_A = (const void *const *)(uintptr_t)0x62000000u;
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "dev_B is NULL");
    w.dev_B = w.dev_A, w.dev_A = NULL;
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "dev_A is NULL");
    w.dev_A = (const void *const *)(uintptr_t)0x62000004u;
    CASE(AP, c_.w = &w, DOP_ERR_MISALIGNED, "8-byte aligned");
    w.dev_A = (const void *const *)(uintptr_t)0x62000000u;
    /* the fixture's entries differ in rank (16, 8, 0) and in scale */
    w.dev_scale = (const float *)(uintptr_t)0x61100000u;
    CASE(AP, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "give weights->dev_rank");
    w.dev_rank = DEVP(0x61000000u), w.dev_scale = NULL;
    CASE(SH, c_.w = &w, DOP_ERR_INVALID_ARGUMENT, "give weights->dev_scale");

    /* per-call weights to upload must fit the workspace */
    dop_lora_adapter many[16 * 2];
    for (int i = 0; i < 32; ++i)
        many[i] = (dop_lora_adapter){wptr(i / 2, i % 2, 0), wptr(i / 2, i % 2, 1), 16, 1.f};
    w = (dop_weights){.adapters = many, .num_slots = 16};
    size_t need0;
    EXPECT_OK(dop_lora_workspace_size(g_ctx, &f->shape, 0, &need0), g_ctx);
    CASE(AP, (c_.w = &w, c_.wsz = need0), DOP_ERR_WORKSPACE_TOO_SMALL, "workspace_size");
    assert_int_equal(g_fk.nlaunch, 0);
}

/* ---- successful calls (NVRTC compiles for sm_90) -------------------------------------- */

static void test_apply_table_device_layout(void **state)
{
    fx *f = *state;
    dop_layout l = f->lay;
    l.dev_row_slot = DEVP(0x60000000u);
    runtime_force_schedule(&S1);
    dop_context_stats a0;
    EXPECT_OK(dop_context_get_stats(g_ctx, &a0), g_ctx);
    RUN_OK(AP, c_.lay = &l);
    search_schedule used;
    runtime_last_schedule(&used);
    assert_memory_equal(&used, &S1, sizeof used);
    check_grid(AP, &f->shape, 256);
    assert_true(g_fk.launch[0].grid[0] == NROW / 4 && g_fk.launch[0].grid[1] == 2 && g_fk.launch[1].grid[1] == 2);
    assert_int_equal(g_fk.nupload, 0); /* nothing to upload */
    assert_int_equal(g_fk.nmemset, 1); /* split-K: the intermediate is zeroed first */
    assert_true(g_fk.memset_dst == (uintptr_t)f->ws && g_fk.memset_n == NROW * 2 * 16);
    for (int i = 0; i < 2; ++i) {
        const dop_kparams *kp = &g_fk.launch[i].kp;
        check_kp_shape(kp, &f->shape, 384);
        assert_true(kp->x == (uintptr_t)FAKE_X && kp->y == (uintptr_t)FAKE_Y && kp->v == (uintptr_t)f->ws);
        assert_true(kp->ldv == 32 && kp->num_slots == NSLOT && kp->accumulate == 0 && kp->k_per_cta == 256);
        assert_int_equal(kp->row_slot, 0x60000000u);
        assert_true(kp->seg_indptr == 0 && kp->seg_slot == 0 && kp->num_segments_dev == 0);
        assert_true(kp->a_ptrs == f->tab->dev && kp->b_ptrs == f->tab->dev + 8 * 8);
        assert_true(kp->ranks == f->tab->dev + 8 * 16 && kp->scales == f->tab->dev + 8 * 20);
    }
    /* the same call again: nothing compiled or loaded, one more call counted */
    dop_context_stats a, b;
    EXPECT_OK(dop_context_get_stats(g_ctx, &a), g_ctx);
    RUN_OK(AP, c_.lay = &l);
    EXPECT_OK(dop_context_get_stats(g_ctx, &b), g_ctx);
    assert_true(b.kernels_compiled == a.kernels_compiled && b.kernels_loaded == a.kernels_loaded);
    assert_int_equal(b.calls, a.calls + 1);
    /* the first call of S1 compiled its module (the group's cache file never held it) */
    assert_true(a.kernels_compiled == a0.kernels_compiled + 1 && a.kernels_loaded == a0.kernels_loaded + 1);
    assert_true(a.compile_seconds > a0.compile_seconds && a.cubins_from_cache == a0.cubins_from_cache);
    assert_true(a.plans == a0.plans && a.generic_calls == 0); /* a forced schedule bypasses dispatch */

    /* the fused sketch of the same tile sizes is another module (a module holds its sketch's
     * entry points only); another split_k of the split sketch is the same module */
    search_schedule fz = S1;
    fz.sketch = SEARCH_SKETCH_FUSED, fz.split_k = 1;
    runtime_force_schedule(&fz);
    RUN_OK(AP, c_.lay = &l);
    assert_int_equal(compiled(), a.kernels_compiled + 1);
    check_grid(AP, &f->shape, 256);
    assert_int_equal(g_fk.launch[0].kind, FK_FUSED);
    search_schedule s2 = S1;
    s2.split_k = S1.split_k == 1 ? 2 : 1;
    runtime_force_schedule(&s2);
    RUN_OK(AP, c_.lay = &l);
    assert_int_equal(compiled(), a.kernels_compiled + 1);

    /* a persistent grid: one dimension, the tiles of the one-tile grid or the CTAs that fit at
     * once (132 SMs x the fake's occupancy of 2), whichever is fewer; the same argument block */
    for (int sk = 0; sk < 3; ++sk) {
        search_schedule one = S1;
        one.sketch = (uint8_t)(sk == 0 ? SEARCH_SKETCH_SPLIT : sk == 1 ? SEARCH_SKETCH_FUSED : SEARCH_SKETCH_FUSED_COUNTER);
        if (one.sketch == SEARCH_SKETCH_FUSED)
            one.split_k = 1;
        runtime_force_schedule(&one);
        RUN_OK(AP, c_.lay = &l);
        int nl = g_fk.nlaunch;
        unsigned long long tiles[2];
        dop_kparams kps[2];
        for (int i = 0; i < nl; ++i) {
            tiles[i] = (unsigned long long)g_fk.launch[i].grid[0] * g_fk.launch[i].grid[1] * g_fk.launch[i].grid[2];
            kps[i] = g_fk.launch[i].kp;
        }
        search_schedule per = one;
        per.persist = 1;
        runtime_force_schedule(&per);
        RUN_OK(AP, c_.lay = &l);
        assert_int_equal(g_fk.nlaunch, nl);
        for (int i = 0; i < nl; ++i) {
            unsigned long long want = tiles[i] < 264 ? tiles[i] : 264;
            assert_int_equal(g_fk.launch[i].grid[0], want);
            assert_true(g_fk.launch[i].grid[1] == 1 && g_fk.launch[i].grid[2] == 1);
            assert_memory_equal(&g_fk.launch[i].kp, &kps[i], sizeof kps[i]);
        }
    }
}

static void test_apply_uploads(void **state)
{
    fx *f = *state;
    runtime_force_schedule(&S1);
    const uintptr_t ws = (uintptr_t)f->ws, v_end = ws + (uintptr_t)NROW * 32 * 4, ws_end = ws + f->ws_size;
    /* host-only row layout: uploaded into the workspace, after the intermediate */
    RUN_OK(AP, (void)0);
    assert_true(g_fk.nupload == 1 && g_fk.upload_stream == (CUstream)FK_STREAM);
    const dop_kparams *kp = &g_fk.launch[1].kp;
    assert_true(kp->row_slot >= v_end && kp->row_slot + NROW * 4 <= ws_end && kp->row_slot % 4 == 0);
    assert_memory_equal(HOST(kp->row_slot), f->rows, sizeof f->rows);
    assert_int_equal(kp->a_ptrs, f->tab->dev);

    /* per-call weights without device copies: packed into the workspace too */
    dop_weights w = {.adapters = f->ad, .num_slots = NSLOT};
    RUN_OK(AP, c_.w = &w);
    kp = &g_fk.launch[0].kp;
    assert_int_equal(kp->num_slots, NSLOT);
    assert_true(kp->a_ptrs % 8 == 0 && kp->a_ptrs >= kp->row_slot + NROW * 4 && kp->a_ptrs + 8 * 24 <= ws_end);
    assert_true(kp->b_ptrs == kp->a_ptrs + 8 * 8 && kp->ranks == kp->a_ptrs + 8 * 16);
    assert_int_equal(kp->scales, kp->a_ptrs + 8 * 20);
    check_packed(kp->a_ptrs, f->ad, NSLOT * 2);
    assert_memory_equal(HOST(kp->row_slot), f->rows, sizeof f->rows);

    /* per-call weights with device copies, uniform rank and scale: kernel constants */
    dop_lora_adapter uni[NSLOT * 2];
    for (int i = 0; i < NSLOT * 2; ++i)
        uni[i] = (dop_lora_adapter){wptr(i / 2, i % 2, 0), wptr(i / 2, i % 2, 1), 8, 0.25f};
    w = (dop_weights){.adapters = uni, .num_slots = NSLOT, .dev_A = (const void *const *)(uintptr_t)0x62000000u,
                      .dev_B = (const void *const *)(uintptr_t)0x63000000u};
    RUN_OK(AP, c_.w = &w);
    kp = &g_fk.launch[0].kp;
    assert_true(kp->a_ptrs == 0x62000000u && kp->b_ptrs == 0x63000000u && kp->ranks == 0 && kp->scales == 0);
    assert_true(kp->uniform_rank == 8 && kp->uniform_scale == 0.25f);

    /* host-only segments (one empty): boundaries and slots uploaded */
    int32_t ip[5] = {0, 10, 10, 30, 64}, ss[4] = {0, 3, 1, -1};
    dop_layout g = {.kind = DOP_LAYOUT_SEGMENTS, .num_segments = 4, .seg_indptr = ip, .seg_slot = ss};
    RUN_OK(AP, c_.lay = &g);
    check_grid(AP, &f->shape, 256);
    kp = &g_fk.launch[0].kp;
    assert_true(kp->row_slot == 0 && kp->num_segments == 4 && kp->num_segments_dev == 0);
    assert_true(kp->seg_indptr >= v_end && kp->seg_indptr % 4 == 0 && kp->seg_slot + sizeof ss <= ws_end);
    assert_memory_equal(HOST(kp->seg_indptr), ip, sizeof ip);
    assert_memory_equal(HOST(kp->seg_slot), ss, sizeof ss);
    g.seg_slot = NULL; /* slot = segment index */
    RUN_OK(AP, c_.lay = &g);
    assert_int_equal(g_fk.launch[0].kp.seg_slot, 0);
    assert_memory_equal(HOST(g_fk.launch[0].kp.seg_indptr), ip, sizeof ip);
    /* device copies of segments are passed through */
    g.seg_slot = ss, g.dev_seg_indptr = DEVP(0x64000000u), g.dev_seg_slot = DEVP(0x64100000u);
    g.dev_num_segments = DEVP(0x64200000u);
    g_fk.nupload = 0;
    RUN_OK(AP, c_.lay = &g);
    kp = &g_fk.launch[0].kp;
    assert_int_equal(g_fk.nupload, 0);
    assert_true(kp->seg_indptr == 0x64000000u && kp->seg_slot == 0x64100000u && kp->num_segments_dev == 0x64200000u);
}

static void test_graph_replay_same_grid(void **state)
{
    fx *f = *state;
    runtime_force_schedule(&S1);
    /* with device copies the launches do not depend on the host layout's contents */
    int32_t r2[NROW];
    for (int i = 0; i < NROW; ++i)
        r2[i] = (i * 7) % 5 - 1;
    dop_layout a = f->lay, b = {.kind = DOP_LAYOUT_ROWS, .row_slot = r2};
    a.dev_row_slot = b.dev_row_slot = DEVP(0x60000000u);
    fk_launch first[2];
    RUN_OK(AP, c_.lay = &a);
    memcpy(first, g_fk.launch, sizeof first);
    RUN_OK(AP, c_.lay = &b);
    assert_int_equal(g_fk.nlaunch, 2);
    assert_memory_equal(first, g_fk.launch, sizeof first); /* grids and argument blocks */
    /* segments with a device count: the same grids for 1 and 4 segments */
    int32_t ip1[2] = {0, NROW}, s1[1] = {2}, ip4[5] = {0, 1, 2, 3, 4}, s4[4] = {0, 1, 2, 3};
    dop_layout g1 = {.kind = DOP_LAYOUT_SEGMENTS, .num_segments = 1, .seg_indptr = ip1, .seg_slot = s1,
                     .dev_seg_indptr = DEVP(0x64000000u), .dev_seg_slot = DEVP(0x64100000u),
                     .dev_num_segments = DEVP(0x64200000u)};
    dop_layout g4 = g1;
    g4.num_segments = 4, g4.seg_indptr = ip4, g4.seg_slot = s4;
    RUN_OK(AP, c_.lay = &g1);
    memcpy(first, g_fk.launch, sizeof first);
    RUN_OK(AP, c_.lay = &g4);
    assert_int_equal(g_fk.nlaunch, 2);
    for (int i = 0; i < 2; ++i)
        assert_memory_equal(first[i].grid, g_fk.launch[i].grid, sizeof first[i].grid);
    assert_int_equal(g_fk.launch[0].kp.num_segments_dev, 0x64200000u);
}

/* Segment-aligned row tiles: when runtime_seg_row_tiles asks for them, and what the launches get. */
static void test_seg_tiles(void **state)
{
    fx *f = *state;
    /* the bound: ceil(rows / 16) + segments - 1, at most rows; 0 where the plain tiles do */
    int32_t off[4] = {0, 11, 22, 40}, on[3] = {0, 16, 40}, gap[4] = {0, 16, 32, 40}, gs[3] = {0, -1, 1};
    int32_t lead[3] = {0, 5, 16}, ls[2] = {-1, 2}, one[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8}, many[201];
    for (int i = 0; i <= 200; ++i)
        many[i] = i;
    assert_int_equal(runtime_seg_row_tiles(off, NULL, 3, 40, 4, 128), 5);
    assert_int_equal(runtime_seg_row_tiles(on, NULL, 2, 40, 4, 128), 0);     /* ends at num_rows: on the grid */
    assert_int_equal(runtime_seg_row_tiles(gap, gs, 3, 40, 4, 128), 0);     /* rows 16..31 have no adapter */
    assert_int_equal(runtime_seg_row_tiles(lead, ls, 2, 16, 4, 128), 2);    /* 5..15 off the grid */
    assert_int_equal(runtime_seg_row_tiles(lead, ls, 2, 16, 2, 128), 0);    /* slot 2 is out of range */
    assert_int_equal(runtime_seg_row_tiles(one, NULL, 8, 8, 8, 128), 8);    /* at most num_rows */
    assert_int_equal(runtime_seg_row_tiles(many, NULL, 200, 200, 200, 128), 0); /* more segments than threads */
    assert_int_equal(runtime_seg_row_tiles(many, NULL, 200, 200, 200, 256), 200);
    assert_int_equal(runtime_seg_row_tiles(NULL, NULL, 3, 40, 4, 128), 0);
    assert_int_equal(runtime_seg_row_tiles(off, NULL, 0, 40, 4, 128), 0);

    /* through a call: a tensor-core schedule over 4 segments with boundaries off the grid gets
     * ceil(64 / 16) + 3 = 7 row tiles in both launches; on the grid, or a row layout, or CUDA
     * cores, the plain 4 (16 for S1's 4-row tiles) */
    search_schedule m = SCHED_INIT(SEARCH_SKETCH_SPLIT, 16, 4, 8, 2, 64, 256);
    m.mma = 1;
    assert_true(search_schedule_legal(&m, f->shape.max_rank, NULL, 0));
    int32_t ip[5] = {0, 11, 22, 40, NROW}, ipg[5] = {0, 16, 32, 48, NROW};
    dop_layout seg = {.kind = DOP_LAYOUT_SEGMENTS, .num_segments = 4, .seg_indptr = ip,
                      .dev_seg_indptr = DEVP(0x64000000u)};
    dop_layout grid16 = seg;
    grid16.seg_indptr = ipg;
    struct {
        const search_schedule *s;
        const dop_layout *l;
        int tiles, seg;
    } want[] = {{&m, &seg, 7, 1}, {&m, &grid16, 4, 0}, {&m, &f->lay, 4, 0}, {&S1, &seg, 16, 0}};
    uint64_t c0 = compiled();
    for (size_t i = 0; i < sizeof want / sizeof want[0]; ++i) {
        runtime_force_schedule(want[i].s);
        RUN_OK(AP, c_.lay = want[i].l);
        if (i == 0) { /* m's module and its seg variant (DOP_SEGT), a module of its own */
            assert_int_equal(compiled(), c0 + 2);
            search_schedule used; /* what the call reports is m: the variant is not a schedule of its own */
            runtime_last_schedule(&used);
            assert_memory_equal(&used, &m, sizeof m);
        }
        if (i == 1 || i == 2) /* m's plain module again */
            assert_int_equal(compiled(), c0 + 2);
        check_grid(AP, &f->shape, 256);
        assert_int_equal(g_fk.nlaunch, 2);
        for (int k = 0; k < 2; ++k) {
            assert_int_equal(g_fk.launch[k].grid[0], want[i].tiles);
            assert_int_equal(g_fk.launch[k].kp.row_tiles, want[i].tiles);
            assert_int_equal(g_fk.launch[k].kp.seg_tiles, want[i].seg);
        }
    }
    /* the persistent grid carries the same count for its loop */
    search_schedule mp = m;
    mp.persist = 1;
    runtime_force_schedule(&mp);
    RUN_OK(AP, c_.lay = &seg);
    for (int k = 0; k < 2; ++k)
        assert_true(g_fk.launch[k].kp.row_tiles == 7 && g_fk.launch[k].kp.seg_tiles == 1);
}

static void test_shrink_expand(void **state)
{
    fx *f = *state;
    runtime_force_schedule(&S1);
    uint64_t before = compiled();
    RUN_OK(SH, c_.ldv = 40);
    check_grid(SH, &f->shape, 256);
    const dop_kparams *kp = &g_fk.launch[0].kp;
    assert_int_equal(g_fk.launch[0].grid[1], 1); /* overwriting v: no split-K */
    assert_true(kp->v == (uintptr_t)FAKE_V && kp->ldv == 40 && kp->accumulate == 0 && kp->k_per_cta == 512);
    check_kp_shape(kp, &f->shape, 384);
    assert_int_equal(g_fk.nmemset, 0);

    RUN_OK(SH, c_.flags = DOP_SHRINK_ACCUMULATE);
    check_grid(SH, &f->shape, 256);
    assert_true(g_fk.launch[0].grid[1] == 2 && g_fk.launch[0].kp.accumulate == 1);

    dop_lora_shape s = f->shape;
    s.y_col[0] = 128, s.y_col[1] = 0; /* slice 0 after slice 1 */
    s.ldy = 1000, s.ldx = 520;
    RUN_OK(EX, c_.shape = &s);
    check_grid(EX, &s, 256);
    kp = &g_fk.launch[0].kp;
    check_kp_shape(kp, &s, 1000);
    assert_true(kp->v == (uintptr_t)FAKE_V && kp->ldv == 32 && kp->y == (uintptr_t)FAKE_Y);
    assert_int_equal(compiled(), before); /* all of these share S1's module */
}

/* Whatever dispatch picks, the launches must agree with the schedule it reports. */
static void test_dispatch(void **state)
{
    fx *f = *state;
    dop_lora_shape s = f->shape; /* a tiny batch: the cluster sketch on the fake sm_90 device */
    s.num_rows = 3;
    int32_t r3[3] = {1, -1, 3};
    dop_layout l3 = {.kind = DOP_LAYOUT_ROWS, .row_slot = r3};
    uint64_t before = compiled();
    RUN_OK(AP, (c_.shape = &s, c_.lay = &l3));
    check_grid(AP, &s, 256);
    assert_int_equal(g_fk.launch[0].kp.num_rows, 3);
    assert_memory_equal(HOST(g_fk.launch[0].kp.row_slot), r3, sizeof r3);
    assert_true(compiled() <= before + 1);

    RUN_OK(AP, (void)0); /* a larger batch; the second identical call compiles nothing */
    check_grid(AP, &f->shape, 256);
    uint64_t after = compiled();
    RUN_OK(AP, (void)0);
    assert_int_equal(compiled(), after);
    check_grid(AP, &f->shape, 256);
    RUN_OK(SH, (void)0);
    check_grid(SH, &f->shape, 256);
    RUN_OK(EX, (void)0);
    check_grid(EX, &f->shape, 256);

    /* the cluster sketch needs thread-block clusters: forced before sm_90 it is refused
     * before anything is compiled or launched */
    search_schedule cl = search_schedule_make(SEARCH_SKETCH_CLUSTER, 1, 8, 8, 256, 16, 256, 0, 1, 0);
    runtime_force_schedule(&cl);
    RUN_OK(AP, (void)0);
    check_grid(AP, &f->shape, 256);
    g_ctx->info.cc_major = 8;
    before = compiled();
    CASE(AP, (void)0, DOP_ERR_INVALID_ARGUMENT, "the cluster sketch needs sm_90");
    assert_int_equal(g_fk.nlaunch, 0);
    assert_int_equal(compiled(), before);
    g_ctx->info.cc_major = 9;
    runtime_force_schedule(NULL);
}

/* Programmatic dependent launch on sm_90 (the fake device): the split sketch's expand always;
 * a call's first kernel only with DOP_CONTEXT_PROGRAMMATIC_LAUNCH and nothing of the call
 * (a memset, an upload) enqueued before it. */
static void test_programmatic_launch(void **state)
{
    fx *f = *state;
    dop_layout l = f->lay;
    l.dev_row_slot = DEVP(0x60000000u);
    search_schedule one = S1, fz = S1, ct = S1;
    one.split_k = 1; /* one K split: no memset before the shrink */
    fz.sketch = SEARCH_SKETCH_FUSED, fz.split_k = 1;
    ct.sketch = SEARCH_SKETCH_FUSED_COUNTER;
    search_schedule cl = search_schedule_make(SEARCH_SKETCH_CLUSTER, 1, 8, 8, 256, 16, 256, 0, 1, 0);
    static const struct {
        int flag, host_layout, sketch, split_k1; /* the call */
        int nlaunch, pdl0, pdl1, nmemset;        /* what it enqueues */
    } want[] = {
        {0, 0, 1, 0, 2, 0, 1, 1}, /* split, split-K: memset, shrink, programmatic expand */
        {0, 0, 1, 1, 2, 0, 1, 0}, /* split, one K split, no flag: the first kernel is plain */
        {0, 0, 2, 0, 1, 0, -1, 0}, {0, 0, 4, 0, 1, 0, -1, 0}, {0, 0, 3, 0, 1, 0, -1, 1},
        {1, 0, 1, 0, 2, 0, 1, 1}, /* with the flag: the memset stays first, the shrink after it is plain */
        {1, 0, 1, 1, 2, 1, 1, 0}, {1, 0, 2, 0, 1, 1, -1, 0}, {1, 0, 4, 0, 1, 1, -1, 0},
        {1, 0, 3, 0, 1, 0, -1, 1}, /* counter: its memset comes first */
        {1, 1, 2, 0, 1, 0, -1, 0}, /* a host layout is uploaded first */
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; ++i) {
        const search_schedule *s = want[i].sketch == 2 ? &fz : want[i].sketch == 3 ? &ct
                                   : want[i].sketch == 4 ? &cl : want[i].split_k1 ? &one : &S1;
        runtime_force_schedule(s);
        assert_int_equal(dop_context_set_programmatic_launch(g_ctx, want[i].flag), DOP_OK);
        RUN_OK(AP, c_.lay = want[i].host_layout ? &f->lay : &l);
        if (g_fk.nlaunch != want[i].nlaunch || g_fk.launch[0].pdl != want[i].pdl0 ||
            (want[i].pdl1 >= 0 && g_fk.launch[1].pdl != want[i].pdl1) || g_fk.nmemset != want[i].nmemset)
            print_error("case %zu: %d launches (pdl %d, %d), %d memsets\n", i, g_fk.nlaunch, g_fk.launch[0].pdl,
                        g_fk.launch[1].pdl, g_fk.nmemset);
        assert_int_equal(g_fk.nlaunch, want[i].nlaunch);
        assert_int_equal(g_fk.launch[0].pdl, want[i].pdl0);
        if (want[i].pdl1 >= 0)
            assert_int_equal(g_fk.launch[1].pdl, want[i].pdl1);
        assert_int_equal(g_fk.nmemset, want[i].nmemset);
        assert_true((g_fk.launch[0].cluster > 0) == (want[i].sketch == 4));
    }
    /* the shrink and expand ops with the flag: each kernel may start early */
    runtime_force_schedule(&one);
    RUN_OK(SH, c_.lay = &l);
    assert_true(g_fk.nlaunch == 1 && g_fk.launch[0].pdl == 1);
    RUN_OK(EX, c_.lay = &l);
    assert_true(g_fk.nlaunch == 1 && g_fk.launch[0].pdl == 1);
    /* switched off again (any nonzero value switches it on): a plain first kernel */
    assert_int_equal(dop_context_set_programmatic_launch(g_ctx, 0), DOP_OK);
    RUN_OK(SH, c_.lay = &l);
    assert_true(g_fk.nlaunch == 1 && g_fk.launch[0].pdl == 0);
    assert_int_equal(dop_context_set_programmatic_launch(g_ctx, 2), DOP_OK);
    RUN_OK(EX, c_.lay = &l);
    assert_true(g_fk.nlaunch == 1 && g_fk.launch[0].pdl == 1);
    assert_int_equal(dop_context_set_programmatic_launch(g_ctx, 0), DOP_OK);
    assert_int_equal(dop_context_set_programmatic_launch(NULL, 1), DOP_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(dop_context_error(NULL), "ctx is NULL"));
    runtime_force_schedule(NULL);
}

static void test_capture(void **state)
{
    fx *f = *state;
    runtime_force_schedule(&S1);
    g_fk.capture = CU_STREAM_CAPTURE_STATUS_ACTIVE;
    CASE(AP, (void)0, DOP_ERR_INVALID_ARGUMENT, "capturing a graph, so the layout");
    CASE(SH, (void)0, DOP_ERR_INVALID_ARGUMENT, "capturing a graph, so the layout");
    assert_true(g_fk.nlaunch == 0 && g_fk.nupload == 0);
    dop_layout l = f->lay;
    l.dev_row_slot = DEVP(0x60000000u);
    dop_weights w = {.adapters = f->ad, .num_slots = NSLOT};
    CASE(AP, (c_.lay = &l, c_.w = &w), DOP_ERR_INVALID_ARGUMENT, "capturing a graph, so the weights");
    assert_int_equal(g_fk.nlaunch, 0);
    RUN_OK(AP, c_.lay = &l); /* nothing to upload: fine while capturing */
    assert_true(g_fk.nlaunch == 2 && g_fk.nupload == 0);
}

static void test_launch_failure(void **state)
{
    fx *f = *state;
    runtime_force_schedule(&S1);
    dop_context_stats a, b;
    RUN_OK(AP, (void)0); /* compiled and loaded */
    EXPECT_OK(dop_context_get_stats(g_ctx, &a), g_ctx);
    g_fk.launch_result = CUDA_ERROR_LAUNCH_FAILED;
    CASE(AP, (void)0, DOP_ERR_DEVICE_FAILED, "cuLaunchKernel (shrink) failed: CUDA_ERROR_LAUNCH_FAILED");
    CASE(EX, (void)0, DOP_ERR_DEVICE_FAILED, "CUDA_ERROR_LAUNCH_FAILED");
    EXPECT_OK(dop_context_get_stats(g_ctx, &b), g_ctx);
    assert_int_equal(b.calls, a.calls);
    assert_int_equal(fk_depth, 0);
}

/* ---- errors are per thread ---------------------------------------------------------- */

typedef struct thr_arg { fx *f; int which, ok; } thr_arg;

static void *thr_main(void *p)
{
    thr_arg *a = p;
    fx *f = a->f;
    a->ok = dop_context_error(g_ctx)[0] == '\0'; /* a new thread has no message */
    for (int i = 0; i < 2000 && a->ok; ++i) {
        int ap = (i + a->which) % 2; /* both fail before reaching the driver */
        dop_status st = ap ? dop_lora_apply(g_ctx, &f->shape, &f->lay, &f->w, FAKE_X, NULL, f->ws, f->ws_size, NULL)
                           : dop_lora_shrink(g_ctx, &f->shape, &f->lay, &f->w, FAKE_X, FAKE_V, 32, 8, f->ws,
                                             f->ws_size, NULL);
        a->ok = st == DOP_ERR_INVALID_ARGUMENT && strstr(dop_context_error(g_ctx), ap ? "y is NULL" : "flags 0x8") &&
                dop_context_error(NULL)[0] == '\0';
    }
    dop_lora_apply(NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL);
    return NULL;
}

static void test_thread_errors(void **state)
{
    fx *f = *state;
    CASE(AP, c_.x = NULL, DOP_ERR_INVALID_ARGUMENT, "x is NULL");
    char mine[1024], mine_null[1024];
    snprintf(mine, sizeof mine, "%s", dop_context_error(g_ctx));
    snprintf(mine_null, sizeof mine_null, "%s", dop_context_error(NULL));
    pthread_t t[4];
    thr_arg args[4];
    for (int i = 0; i < 4; ++i) {
        args[i] = (thr_arg){f, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; ++i) {
        pthread_join(t[i], NULL);
        assert_true(args[i].ok);
    }
    assert_string_equal(dop_context_error(g_ctx), mine); /* untouched by the other threads */
    assert_string_equal(dop_context_error(NULL), mine_null);
}

/* dop.h: dop_context_error(NULL) is the last failure of a call that had no context.
 * A destroyed context's message must not become that. */
static void test_destroy_forgets_error(void **state)
{
    dop_context *ctx = NULL;
    size_t bytes;
    dop_context_options opt;
    fk_options(&opt);
    EXPECT_OK(dop_context_create(&opt, &ctx), NULL);
    EXPECT(dop_lora_workspace_size(ctx, NULL, 0, &bytes), DOP_ERR_INVALID_ARGUMENT, ctx, "shape is NULL");
    dop_context_destroy(ctx);
    assert_null(strstr(dop_context_error(NULL), "shape is NULL"));
}

int main(void)
{
    const struct CMUnitTest plain[] = {
        cmocka_unit_test(test_no_driver),
        cmocka_unit_test(test_status_version_null),
    };
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_fake, teardown_fake)
    const struct CMUnitTest fake[] = {
        T(test_context_fake),           T(test_logging),           T(test_table_create),
        T(test_table_update),           T(test_workspace_size),    T(test_call_arguments),
        T(test_layout_validation),      T(test_weights_validation), T(test_apply_table_device_layout),
        T(test_apply_uploads),          T(test_graph_replay_same_grid), T(test_shrink_expand),
        T(test_seg_tiles),              T(test_dispatch),          T(test_programmatic_launch),
        T(test_capture),                T(test_launch_failure),
        T(test_thread_errors),          T(test_destroy_forgets_error),
    };
#undef T
    int failed = cmocka_run_group_tests_name("api without a driver", plain, NULL, NULL);
    failed += cmocka_run_group_tests_name("api on a fake driver", fake, group_setup, group_teardown);
    return failed ? 1 : 0;
}
