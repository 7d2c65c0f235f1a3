/*
 * test_codegen.c -- the code generator (kernels/kernels_codegen.c) and NVRTC
 * compilation of what it generates (runtime/runtime_jit.c), without a GPU.
 *
 * - codegen is deterministic, distinguishes every input that shapes the
 *   source (sketch, rows, warps, vec, kc, cols, dtype, max_rank) and only those
 *   (split_k gives the same source, as search_schedule_module_key promises),
 *   holds only its sketch's entry points, includes no header at all, and rejects illegal schedules and
 *   unknown dtypes;
 * - a fixed sample of 20 schedules covering both sketches, rows 1..32, warps
 *   1..16, vec 1..8, several kc and cols, both dtypes and ranks 8..128 is
 *   compiled for sm_80 and sm_90 (40 compiles): every one must compile, and
 *   ptxas' resource report must be read for each of the three entry points
 *   (a table of registers and spills is printed);
 * - runtime_jit_parse_usage on literal ptxas reports, and a compile error
 *   comes back as -1 with NVRTC's log in the message.
 *
 * NVRTC is required: when it cannot be loaded, the NVRTC tests fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_codegen.h"
#include "runtime_jit.h"
#include "search_schedule.h"

static search_schedule make(unsigned sketch, unsigned rows, unsigned warps, unsigned vec, unsigned kc,
                            unsigned split_k, unsigned cols)
{
    return search_schedule_make(sketch, rows, warps, vec, kc, split_k, cols, 0, 1, 0);
}

static char *gen(const search_schedule *s, kernels_dtype dtype, int max_rank, size_t *len)
{
    char *src = NULL, why[256] = "";
    size_t n = 0;
    if (kernels_codegen(s, dtype, max_rank, &src, &n, why, sizeof why) != 0) {
        print_error("codegen failed: %s\n", why);
        fail();
    }
    assert_non_null(src);
    assert_int_equal(n, strlen(src));
    if (len)
        *len = n;
    return src;
}

static void test_codegen_deterministic(void **state)
{
    (void)state;
    search_schedule s = make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 256, 4, 128);
    size_t n1, n2;
    char *a = gen(&s, KERNELS_F16, 16, &n1);
    char *b = gen(&s, KERNELS_F16, 16, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(a, b, n1 + 1);
    /* a copy of the schedule gives the same bytes too */
    search_schedule c;
    memcpy(&c, &s, sizeof c);
    char *d = gen(&c, KERNELS_F16, 16, NULL);
    assert_string_equal(a, d);
    free(a);
    free(b);
    free(d);
}

static void test_codegen_distinguishes(void **state)
{
    (void)state;
    search_schedule base = make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 512, 4, 128);
    char *ref = gen(&base, KERNELS_F16, 16, NULL);

    search_schedule v[5];
    for (int i = 0; i < 5; ++i)
        v[i] = base;
    v[0].rows = 4;
    v[1].warps = 8;
    v[2].vec = 4;
    v[3].kc = 256;
    v[4].cols = 256;
    for (int i = 0; i < 5; ++i) {
        char *o = gen(&v[i], KERNELS_F16, 16, NULL);
        if (strcmp(o, ref) == 0) {
            print_error("schedule variant %d gives the same source as the base\n", i);
            fail();
        }
        free(o);
    }
    char *o = gen(&base, KERNELS_BF16, 16, NULL);
    assert_true(strcmp(o, ref) != 0);
    free(o);
    o = gen(&base, KERNELS_F16, 17, NULL);
    assert_true(strcmp(o, ref) != 0);
    free(o);
    o = gen(&base, KERNELS_F16, 128, NULL);
    assert_true(strcmp(o, ref) != 0);
    free(o);

    /* split_k does not shape the source: one module serves every split */
    search_schedule f = base;
    f.split_k = base.split_k == 1 ? 2 : 1;
    o = gen(&f, KERNELS_F16, 16, NULL);
    assert_string_equal(o, ref);
    free(o);
    /* the sketch does: its module holds only the sketch's entry points */
    f = base;
    f.sketch = base.sketch == SEARCH_SKETCH_FUSED ? SEARCH_SKETCH_SPLIT : SEARCH_SKETCH_FUSED;
    f.split_k = 1;
    o = gen(&f, KERNELS_F16, 16, NULL);
    assert_true(strcmp(o, ref) != 0);
    free(o);
    search_schedule k = search_schedule_module_key(&base);
    o = gen(&k, KERNELS_F16, 16, NULL);
    assert_string_equal(o, ref);
    free(o);
    free(ref);
}

static void test_codegen_content(void **state)
{
    (void)state;
    search_schedule s = make(SEARCH_SKETCH_FUSED, 2, 8, 4, 384, 1, 96);
    for (int dt = KERNELS_F16; dt <= KERNELS_BF16; ++dt) {
        char *src = gen(&s, (kernels_dtype)dt, 24, NULL);
        /* no toolkit header exists on an engine's machine: no #include at all */
        assert_null(strstr(src, "#include"));
        assert_null(strstr(src, "# include"));
        assert_non_null(strstr(src, dt == KERNELS_BF16 ? "#define DOP_BF16 1\n" : "#define DOP_BF16 0\n"));
        assert_non_null(strstr(src, "#define DOP_ROWS 2\n"));
        assert_non_null(strstr(src, "#define DOP_WARPS 8\n"));
        assert_non_null(strstr(src, "#define DOP_VEC 4\n"));
        assert_non_null(strstr(src, "#define DOP_KC 384\n"));
        assert_non_null(strstr(src, "#define DOP_COLS 96\n"));
        assert_non_null(strstr(src, "#define DOP_MAXR 24\n"));
        assert_non_null(strstr(src, "typedef unsigned long long dop_u64;"));
        assert_non_null(strstr(src, "struct dop_kparams"));
        assert_non_null(strstr(src, "#define DOP_SKETCH 2\n"));
        assert_non_null(strstr(src, KERNELS_ENTRY_SHRINK "("));
        assert_non_null(strstr(src, KERNELS_ENTRY_EXPAND "("));
        assert_non_null(strstr(src, KERNELS_ENTRY_FUSED "("));
        const char *names[2];
        assert_int_equal(kernels_entries(&s, names), 1);
        assert_string_equal(names[0], KERNELS_ENTRY_FUSED);
        /* the template comes last, whole */
        const char *t = kernels_template_source();
        assert_non_null(t);
        assert_true(strlen(t) > 1000);
        size_t ls = strlen(src), lt = strlen(t);
        assert_true(ls > lt);
        assert_string_equal(src + ls - lt, t);
        /* the schedule is defined before the template uses it */
        assert_true(strstr(src, "#define DOP_ROWS") < src + ls - lt);
        free(src);
    }
    /* the template itself includes nothing either */
    assert_null(strstr(kernels_template_source(), "#include"));
}

static void expect_reject(const search_schedule *s, kernels_dtype dtype, int max_rank, const char *word)
{
    char *src = (char *)0x1, why[256] = "";
    size_t n = 12345;
    assert_int_equal(kernels_codegen(s, dtype, max_rank, &src, &n, why, sizeof why), -1);
    assert_null(src);
    assert_int_equal(n, 0);
    if (why[0] == '\0' || !strstr(why, word)) {
        print_error("reason \"%s\" does not mention \"%s\"\n", why, word);
        fail();
    }
}

static void test_codegen_rejects(void **state)
{
    (void)state;
    search_schedule ok = make(SEARCH_SKETCH_SPLIT, 8, 4, 8, 256, 4, 128);
    search_schedule s;
    s = ok;
    s.rows = 3;
    expect_reject(&s, KERNELS_F16, 16, "rows");
    s = ok;
    s.version = 7;
    expect_reject(&s, KERNELS_F16, 16, "version");
    s = ok;
    s.kc = 100;
    expect_reject(&s, KERNELS_BF16, 16, "K step");
    s = ok;
    s.sketch = SEARCH_SKETCH_FUSED; /* with split_k 4 */
    expect_reject(&s, KERNELS_F16, 16, "fused");
    s = ok;
    s.seg = 2;
    expect_reject(&s, KERNELS_F16, 16, "seg");
    s = make(SEARCH_SKETCH_SPLIT, 32, 4, 1, 1024, 1, 128); /* 32 single-element loads per lane: too many */
    expect_reject(&s, KERNELS_F16, 16, "K step");
    expect_reject(&ok, KERNELS_F16, 0, "max_rank");
    expect_reject(&ok, KERNELS_F16, 129, "max_rank");
    expect_reject(&ok, (kernels_dtype)0, 16, "dtype");
    expect_reject(&ok, (kernels_dtype)3, 16, "dtype");
    expect_reject(NULL, KERNELS_F16, 16, "NULL");

    char why[128] = "";
    size_t n;
    char *src;
    assert_int_equal(kernels_codegen(&ok, KERNELS_F16, 16, NULL, &n, why, sizeof why), -1);
    assert_true(why[0] != '\0');
    why[0] = '\0';
    assert_int_equal(kernels_codegen(&ok, KERNELS_F16, 16, &src, NULL, why, sizeof why), -1);
    assert_true(why[0] != '\0');
}

/* ---- NVRTC ------------------------------------------------------------------- */

static const runtime_nvrtc *load_nvrtc(void)
{
    char why[512] = "";
    const runtime_nvrtc *nv = runtime_nvrtc_load(why, sizeof why);
    if (!nv)
        fail_msg("NVRTC is required for this test (CI has it) but could not be loaded: %s", why);
    return nv;
}

typedef struct sample {
    unsigned sketch, rows, warps, vec, kc, split_k, cols;
    kernels_dtype dtype;
    int rank;
} sample;

#define SPLIT SEARCH_SKETCH_SPLIT
#define FUSED SEARCH_SKETCH_FUSED
#define F16 KERNELS_F16
#define BF16 KERNELS_BF16

/* A fixed sample of the schedule space (the coverage is checked below). */
static const sample samples[] = {
    {FUSED, 1, 8, 8, 512, 1, 256, F16, 16},      /* dispatch: decode */
    {SPLIT, 8, 4, 8, 256, 4, 128, BF16, 16},     /* dispatch: batch */
    {SPLIT, 1, 1, 1, 32, 1, 1, F16, 8},          /* the smallest everything */
    {FUSED, 2, 2, 2, 64, 1, 32, BF16, 8},
    {SPLIT, 4, 16, 4, 128, 2, 512, F16, 64},
    {FUSED, 16, 4, 8, 1024, 1, 128, BF16, 128},
    {SPLIT, 32, 16, 8, 256, 64, 4096, F16, 128}, /* the largest rows, warps, split, cols */
    {FUSED, 32, 8, 4, 512, 1, 64, BF16, 64},     /* 41348 bytes of shared memory */
    {SPLIT, 16, 2, 2, 192, 3, 100, BF16, 16},
    {FUSED, 8, 16, 1, 96, 1, 1024, F16, 128},
    {SPLIT, 2, 8, 8, 4096, 1, 256, F16, 64},     /* the largest K step */
    {FUSED, 4, 1, 8, 256, 1, 2048, BF16, 128},
    {SPLIT, 1, 16, 8, 2048, 8, 64, BF16, 8},
    {FUSED, 1, 4, 2, 128, 1, 4096, F16, 16},
    {SPLIT, 32, 1, 1, 32, 1, 32, BF16, 16},
    {FUSED, 8, 2, 4, 384, 1, 192, F16, 8},
    {SPLIT, 4, 8, 1, 512, 16, 96, BF16, 128},
    {FUSED, 32, 16, 2, 64, 1, 256, F16, 128},
    {SPLIT, 16, 8, 8, 512, 3, 512, F16, 64},
    {FUSED, 2, 16, 8, 256, 1, 128, BF16, 64},
};
#define NUM_SAMPLES ((int)(sizeof samples / sizeof samples[0]))

static search_schedule sample_schedule(const sample *p)
{
    return make(p->sketch, p->rows, p->warps, p->vec, p->kc, p->split_k, p->cols);
}

static void test_sample_coverage(void **state)
{
    (void)state;
    unsigned sketches = 0, rows = 0, warps = 0, vecs = 0, dtypes = 0, ranks = 0;
    unsigned kcs[64], cols[64];
    int nkc = 0, ncols = 0;
    for (int i = 0; i < NUM_SAMPLES; ++i) {
        const sample *p = &samples[i];
        search_schedule s = sample_schedule(p);
        char why[256] = "";
        if (!search_schedule_legal(&s, p->rank, why, sizeof why))
            fail_msg("sample %d is illegal: %s", i, why);
        sketches |= 1u << p->sketch;
        rows |= p->rows;
        warps |= p->warps;
        vecs |= p->vec;
        dtypes |= 1u << p->dtype;
        ranks |= 1u << (p->rank == 8 ? 0 : p->rank == 16 ? 1 : p->rank == 64 ? 2 : p->rank == 128 ? 3 : 4);
        int seen = 0;
        for (int j = 0; j < nkc; ++j)
            seen |= kcs[j] == p->kc;
        if (!seen)
            kcs[nkc++] = p->kc;
        seen = 0;
        for (int j = 0; j < ncols; ++j)
            seen |= cols[j] == p->cols;
        if (!seen)
            cols[ncols++] = p->cols;
    }
    assert_int_equal(sketches, (1u << SPLIT) | (1u << FUSED));
    assert_int_equal(rows, 1 | 2 | 4 | 8 | 16 | 32);
    assert_int_equal(warps, 1 | 2 | 4 | 8 | 16);
    assert_int_equal(vecs, 1 | 2 | 4 | 8);
    assert_int_equal(dtypes, (1u << F16) | (1u << BF16));
    assert_int_equal(ranks, 0xfu); /* 8, 16, 64, 128 and nothing else */
    assert_true(nkc >= 8);
    assert_true(ncols >= 8);
}

static int is_elf(const runtime_cubin *c)
{
    return c->size > 4 && memcmp(c->data, "\x7f" "ELF", 4) == 0;
}

static void test_nvrtc_compile_sample(void **state)
{
    (void)state;
    const runtime_nvrtc *nv = load_nvrtc();
    print_message("NVRTC %d.%d\n", nv->major, nv->minor);
    const char *const entries[] = {KERNELS_ENTRY_SHRINK, KERNELS_ENTRY_EXPAND, KERNELS_ENTRY_FUSED};
    const int archs[][2] = {{8, 0}, {9, 0}};
    int failures = 0, compiles = 0, spilling = 0;
    double seconds = 0;
    print_message("%-3s %-5s %-4s %-56s %-4s %-5s | %-25s | %-25s | %-25s\n", "#", "arch", "type", "schedule", "rank",
                  "s", "dop_shrink regs/stk/st/ld", "dop_expand regs/stk/st/ld", "dop_fused regs/stk/st/ld");
    for (int i = 0; i < NUM_SAMPLES; ++i) {
        const sample *p = &samples[i];
        search_schedule s = sample_schedule(p);
        char *src = gen(&s, p->dtype, p->rank, NULL);
        char txt[96];
        search_schedule_format(&s, txt, sizeof txt);
        for (int a = 0; a < 2; ++a) {
            /* alternate the order so neither arch always compiles first */
            int arch = (i & 1) ? 1 - a : a;
            runtime_cubin cub;
            char why[1024] = "";
            ++compiles;
            if (runtime_jit_compile(nv, src, archs[arch][0], archs[arch][1], entries, 3, &cub, why, sizeof why) !=
                0) {
                print_error("sample %d (%s, %s, rank %d) failed for sm_%d%d: %s\n", i, txt,
                            p->dtype == BF16 ? "bf16" : "fp16", p->rank, archs[arch][0], archs[arch][1], why);
                ++failures;
                continue;
            }
            seconds += cub.seconds;
            char cells[3][32];
            int bad = !is_elf(&cub) || cub.num_entries != 3 || !cub.log;
            const char *held[2];
            int nheld = kernels_entries(&s, held);
            for (int e = 0; e < 3; ++e) {
                const runtime_jit_entry_info *u = &cub.entries[e];
                int in_module = 0; /* a module holds its sketch's entry points only */
                for (int h = 0; h < nheld; ++h)
                    in_module |= !strcmp(held[h], entries[e]);
                snprintf(cells[e], sizeof cells[e], "%3d / %4d / %4d / %4d", u->registers, u->stack_bytes,
                         u->spill_stores, u->spill_loads);
                if (strcmp(u->name, entries[e]) != 0)
                    bad = 1;
                else if (!in_module && u->registers != -1)
                    bad = 1; /* an entry point of another sketch was compiled */
                else if (in_module && (u->registers <= 0 || u->registers > 255 || u->stack_bytes < 0 ||
                                       u->spill_stores < 0 || u->spill_loads < 0))
                    bad = 1;
                if (u->spill_stores > 0 || u->spill_loads > 0)
                    ++spilling;
            }
            print_message("%-3d sm_%d%d %-4s %-56s %-4d %5.2f | %-25s | %-25s | %-25s\n", i, archs[arch][0],
                          archs[arch][1], p->dtype == BF16 ? "bf16" : "fp16", txt, p->rank, cub.seconds, cells[0],
                          cells[1], cells[2]);
            if (bad) {
                print_error("sample %d for sm_%d%d: cubin or ptxas report unusable; log:\n%s\n", i, archs[arch][0],
                            archs[arch][1], cub.log ? cub.log : "(none)");
                ++failures;
            }
            runtime_cubin_free(&cub);
            assert_null(cub.data);
        }
        free(src);
    }
    print_message("%d compiles, %d failed, %.1f s in NVRTC, %d entry points spill\n", compiles, failures, seconds,
                  spilling);
    assert_int_equal(failures, 0);
}

static void test_nvrtc_compile_error(void **state)
{
    (void)state;
    const runtime_nvrtc *nv = load_nvrtc();
    const char *const entries[] = {KERNELS_ENTRY_FUSED};
    runtime_cubin cub;
    char why[2048] = "";
    memset(&cub, 0x5a, sizeof cub);
    assert_int_equal(runtime_jit_compile(nv, "this is not cuda", 8, 0, entries, 1, &cub, why, sizeof why), -1);
    print_message("compile error reported as: %s\n", why);
    assert_null(cub.data);
    assert_null(cub.log);
    assert_int_equal(cub.size, 0);
    assert_non_null(strstr(why, "NVRTC failed for sm_80"));
    assert_non_null(strstr(why, "error")); /* the log's own words */
    assert_non_null(strstr(why, "dop_lora.cu"));
    runtime_cubin_free(&cub); /* harmless on a zeroed result */

    /* requests refused before NVRTC runs */
    why[0] = '\0';
    assert_int_equal(runtime_jit_compile(nv, "", 7, 5, entries, 1, &cub, why, sizeof why), -1);
    assert_non_null(strstr(why, "sm_75"));
    why[0] = '\0';
    assert_int_equal(runtime_jit_compile(NULL, "", 8, 0, entries, 1, &cub, why, sizeof why), -1);
    assert_true(why[0] != '\0');
    why[0] = '\0';
    assert_int_equal(runtime_jit_compile(nv, NULL, 8, 0, entries, 1, &cub, why, sizeof why), -1);
    assert_true(why[0] != '\0');
    why[0] = '\0';
    assert_int_equal(runtime_jit_compile(nv, "", 8, 0, entries, RUNTIME_JIT_MAX_ENTRIES + 1, &cub, why, sizeof why),
                     -1);
    assert_true(why[0] != '\0');
}

/* An entry point the module lacks is reported as unknown (-1), the rest of
 * the module is still usable. */
static void test_nvrtc_missing_entry(void **state)
{
    (void)state;
    const runtime_nvrtc *nv = load_nvrtc();
    const char *src = "extern \"C\" __global__ void k(float *p) { p[threadIdx.x] = 1.0f; }\n";
    const char *const entries[] = {"k", "not_there"};
    runtime_cubin cub;
    char why[1024] = "";
    if (runtime_jit_compile(nv, src, 9, 0, entries, 2, &cub, why, sizeof why) != 0)
        fail_msg("%s", why);
    assert_true(is_elf(&cub));
    assert_int_equal(cub.num_entries, 2);
    assert_string_equal(cub.entries[0].name, "k");
    assert_true(cub.entries[0].registers > 0);
    assert_int_equal(cub.entries[0].spill_stores, 0);
    assert_string_equal(cub.entries[1].name, "not_there");
    assert_int_equal(cub.entries[1].registers, -1);
    runtime_cubin_free(&cub);
}

/* ---- ptxas report parsing ---------------------------------------------------- */

static void test_parse_usage(void **state)
{
    (void)state;
    const char *log = "ptxas info    : Function properties for dop_fused\n"
                      "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n"
                      "ptxas info    : Used 40 registers, used 1 barriers, 1104 bytes smem\n";
    runtime_jit_entry_info u;
    assert_int_equal(runtime_jit_parse_usage(log, "dop_fused", &u), 0);
    assert_string_equal(u.name, "dop_fused");
    assert_int_equal(u.registers, 40);
    assert_int_equal(u.stack_bytes, 8);
    assert_int_equal(u.spill_stores, 4);
    assert_int_equal(u.spill_loads, 8);

    /* absent entry: -1 and every field unknown */
    memset(&u, 0, sizeof u);
    assert_int_equal(runtime_jit_parse_usage(log, "dop_shrink", &u), -1);
    assert_string_equal(u.name, "dop_shrink");
    assert_int_equal(u.registers, -1);
    assert_int_equal(u.stack_bytes, -1);
    assert_int_equal(u.spill_stores, -1);
    assert_int_equal(u.spill_loads, -1);
    assert_int_equal(runtime_jit_parse_usage(NULL, "dop_fused", &u), -1);
    assert_int_equal(runtime_jit_parse_usage("", "dop_fused", &u), -1);
    /* a name that is a prefix of another is not confused with it */
    assert_int_equal(runtime_jit_parse_usage(log, "dop_fu", &u), -1);

    /* a full report of three kernels, in the layout ptxas prints it */
    const char *full =
        "ptxas info    : 0 bytes gmem\n"
        "ptxas info    : Compiling entry function 'dop_shrink' for 'sm_90'\n"
        "ptxas info    : Function properties for dop_shrink\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 32 registers, used 1 barriers, 4112 bytes smem, 432 bytes cmem[0]\n"
        "ptxas info    : Compiling entry function 'dop_expand' for 'sm_90'\n"
        "ptxas info    : Function properties for dop_expand\n"
        "    16 bytes stack frame, 12 bytes spill stores, 20 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 612 bytes smem, 432 bytes cmem[0]\n"
        "ptxas info    : Compiling entry function 'dop_fused' for 'sm_90'\n"
        "ptxas info    : Function properties for dop_fused\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 64 registers, used 1 barriers, 4708 bytes smem, 432 bytes cmem[0]\n";
    const struct {
        const char *name;
        int regs, stack, st, ld;
    } want[] = {{"dop_shrink", 32, 0, 0, 0}, {"dop_expand", 255, 16, 12, 20}, {"dop_fused", 64, 0, 0, 0}};
    for (int i = 0; i < 3; ++i) {
        assert_int_equal(runtime_jit_parse_usage(full, want[i].name, &u), 0);
        assert_int_equal(u.registers, want[i].regs);
        assert_int_equal(u.stack_bytes, want[i].stack);
        assert_int_equal(u.spill_stores, want[i].st);
        assert_int_equal(u.spill_loads, want[i].ld);
    }

    /* a truncated report is not read as a number */
    const char *cut = "ptxas info    : Function properties for dop_fused\n"
                      "ptxas         .     8 bytes stack frame\n";
    assert_int_equal(runtime_jit_parse_usage(cut, "dop_fused", &u), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codegen_deterministic),
        cmocka_unit_test(test_codegen_distinguishes),
        cmocka_unit_test(test_codegen_content),
        cmocka_unit_test(test_codegen_rejects),
        cmocka_unit_test(test_parse_usage),
        cmocka_unit_test(test_sample_coverage),
        cmocka_unit_test(test_nvrtc_compile_error),
        cmocka_unit_test(test_nvrtc_missing_entry),
        cmocka_unit_test(test_nvrtc_compile_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
