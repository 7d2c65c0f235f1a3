/*
 * dop -- command-line tool of the dop runtime.
 *
 *   dop info                      versions, driver, device
 *   dop jit [--gpu NAME | --arch sm_XY] [--dtype f16|bf16|all] [--rank R]
 *                                 compile, for a named GPU, the kernels dispatch picks
 *                                 on the workload grid; report registers and spills
 *                                 (no GPU needed)
 *   dop check [--quick] [--seed N]
 *                                 run the kernels on this machine's GPU against the
 *                                 CPU reference on the workload grid
 *   dop selftest                  `check --quick` with a GPU, `jit --gpu h200` without
 *   dop tune ...                  measured tuning (tools/dop_tune.c)
 *   dop cache ...                 the persistent cache (tools/dop_cache_cmd.c)
 *   dop costmodel ...             evaluate, train and list cost models (tools/dop_costmodel_cmd.c)
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dop.h"
#include "dop_cache_cmd.h"
#include "dop_costmodel_cmd.h"
#include "dop_tune.h"
#include "dop_warm.h"
#include "kernels_codegen.h"
#include "runtime_check.h"
#include "runtime_internal.h"
#include "runtime_jit.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: dop <command> [options]\n"
               "  info                                 versions, driver and device\n"
               "  jit [--gpu NAME|--arch sm_XY] [--dtype f16|bf16|all] [--rank R]\n"
               "                                       compile the dispatched kernels of the workload grid for a GPU\n"
               "                                       (no GPU needed); GPUs: a100-80gb h100-sxm h200 l40s rtx-4090\n"
               "  check [--quick] [--seed N] [--cache FILE [--readonly] | --no-cache]\n"
               "                                       run the kernels on this GPU against the CPU reference\n"
               "  selftest                             check --quick with a GPU, jit --gpu h200 without\n"
               "  warm [--gpu NAME] [--model NAME] [--ranks ...]   fill the persistent cache for a GPU, offline too\n"
               "  tune [--model NAME] [--ranks ...] [--budget 64] [--records FILE] [--exhaustive]\n"
               "                                       measure schedules on this GPU; store the best for dispatch\n"
               "  cache path|ls|stats|export|import|merge|verify|prune\n"
               "                                       the persistent cache (dop cache help)\n"
               "  costmodel eval|train|show            cost models: held-out ranking quality, training\n"
               "                                       from tuning records (dop costmodel help)\n");
}

static void print_stats(dop_context *ctx)
{
    dop_context_stats st;
    dop_context_get_stats(ctx, &st);
    printf("cache: %s\n", st.cache_path);
    printf("kernels: %llu compiled with NVRTC (%.1f s), %llu loaded from cached cubins, %llu loaded in all; "
           "schedules: %llu layout classes, %llu from the cache; %llu calls, %llu served by the generic kernel\n",
           (unsigned long long)st.kernels_compiled, st.compile_seconds, (unsigned long long)st.cubins_from_cache,
           (unsigned long long)st.kernels_loaded, (unsigned long long)st.plans,
           (unsigned long long)st.schedules_from_cache, (unsigned long long)st.calls,
           (unsigned long long)st.generic_calls);
}

static int cmd_info(void)
{
    printf("dop %s\n", dop_version_string());
    char why[512];
    const runtime_nvrtc *nv = runtime_nvrtc_load(why, sizeof why);
    if (nv)
        printf("NVRTC %d.%d\n", nv->major, nv->minor);
    else
        printf("NVRTC: unavailable (%s)\n", why);
    char path[512];
    if (cache_default_path(path, sizeof path, why, sizeof why) == CACHE_OK)
        printf("default cache file: %s\n", path);
    dop_context *ctx;
    if (dop_context_create(NULL, &ctx) != DOP_OK) {
        printf("device: none (%s)\n", dop_context_error(NULL));
        return 0;
    }
    dop_device_info in;
    dop_context_device_info(ctx, &in);
    printf("device %d: %s, sm_%d%d, %d SMs, L2 %d MiB, %d KiB shared memory per block, driver %d.%d\n", in.ordinal,
           in.name, in.cc_major, in.cc_minor, in.sm_count, in.l2_bytes >> 20, in.smem_per_block_optin >> 10,
           in.driver_version / 1000, in.driver_version % 1000 / 10);
    print_stats(ctx);
    dop_context_destroy(ctx);
    return 0;
}

/* The row counts and layouts of the workload grid (WORKLOADS.md). */
static const int grid_rows[] = {1, 8, 32, 64, 128, 256, 1024, 4096};
static const int grid_ranks[] = {8, 16, 32, 64, 128};

static int cmd_jit(int argc, char **argv)
{
    dop_device_info dev;
    dop_warm_profile("h200", &dev);
    int dtypes[2] = {DOP_DTYPE_F16, DOP_DTYPE_BF16}, ndt = 2;
    int rank_only = 0;
    for (int i = 0; i < argc; ++i) {
        if (!strcmp(argv[i], "--gpu") && i + 1 < argc) {
            if (dop_warm_profile(argv[++i], &dev)) {
                fprintf(stderr, "dop jit: unknown GPU '%s' (known: %s)\n", argv[i], dop_warm_profile_names());
                return 2;
            }
        } else if (!strcmp(argv[i], "--arch") && i + 1 < argc) {
            int v;
            if (sscanf(argv[++i], "sm_%d", &v) != 1 || v < 80) {
                fprintf(stderr, "dop jit: --arch wants sm_XY with XY >= 80, got '%s'\n", argv[i]);
                return 2;
            }
            dev.cc_major = v / 10;
            dev.cc_minor = v % 10;
            snprintf(dev.name, sizeof dev.name, "sm_%d", v);
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            ++i;
            if (!strcmp(argv[i], "f16"))
                dtypes[0] = DOP_DTYPE_F16, ndt = 1;
            else if (!strcmp(argv[i], "bf16"))
                dtypes[0] = DOP_DTYPE_BF16, ndt = 1;
            else if (strcmp(argv[i], "all")) {
                fprintf(stderr, "dop jit: --dtype is f16, bf16 or all\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--rank") && i + 1 < argc) {
            rank_only = atoi(argv[++i]);
            if (rank_only < 1 || rank_only > DOP_MAX_RANK) {
                fprintf(stderr, "dop jit: --rank must be in 1..%d\n", DOP_MAX_RANK);
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    char why[1024];
    const runtime_nvrtc *nv = runtime_nvrtc_load(why, sizeof why);
    if (!nv) {
        fprintf(stderr, "dop jit: %s\n", why);
        return 1;
    }
    printf("dop %s: JIT for %s (sm_%d%d, %d SMs) with NVRTC %d.%d, Llama-2-7B q/k/v shape 4096 -> 4096\n",
           dop_version_string(), dev.name, dev.cc_major, dev.cc_minor, dev.sm_count, nv->major, nv->minor);

    /* distinct schedules that dispatch picks on the grid */
    enum { MAXS = 256 };
    search_schedule seen[MAXS];
    int seen_rank[MAXS]; /* the module key includes max_rank */
    int nseen = 0;
    int32_t *rows = malloc(4096 * sizeof *rows);
    if (!rows)
        return 1;
    for (size_t ri = 0; ri < sizeof grid_ranks / sizeof grid_ranks[0]; ++ri) {
        int rank = grid_ranks[ri];
        if (rank_only && rank != rank_only)
            continue;
        for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl) {
            for (size_t ni = 0; ni < sizeof grid_rows / sizeof grid_rows[0]; ++ni) {
                uint64_t rng = 1;
                runtime_workload_rows((runtime_workload)wl, grid_rows[ni], &rng, rows);
                runtime_layout_summary sum;
                runtime_summarize_rows(rows, grid_rows[ni], &sum);
                for (int op = 0; op < 3; ++op) {
                    search_schedule s;
                    runtime_pick_schedule(&dev, (runtime_op)op, grid_rows[ni], 4096, 1, rank, &sum, &s);
                    s = search_schedule_module_key(&s);
                    int dup = 0;
                    for (int k = 0; k < nseen && !dup; ++k)
                        dup = seen_rank[k] == rank && !memcmp(&seen[k], &s, sizeof s);
                    if (!dup && nseen < MAXS) {
                        seen_rank[nseen] = rank;
                        seen[nseen++] = s;
                    }
                }
            }
        }
    }
    free(rows);
    printf("%-6s %-5s %-58s %9s  %s\n", "dtype", "rank", "module (its sketch's entry points only)", "time(ms)",
           "registers per entry point");
    int failures = 0, spills = 0;
    double total = 0;
    for (int di = 0; di < ndt; ++di) {
        for (int k = 0; k < nseen; ++k) {
            search_schedule s = seen[k];
            int rank = seen_rank[k];
            char name[128], *src;
            size_t len;
            search_schedule_format(&s, name, sizeof name); /* the module key: splitk=1 stands for every split */
            kernels_dtype kd = dtypes[di] == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16;
            if (kernels_codegen(&s, kd, rank, &src, &len, why, sizeof why)) {
                printf("codegen failed for [%s]: %s\n", name, why);
                failures++;
                continue;
            }
            const char *entries[2];
            int nent = kernels_entries(&s, entries);
            runtime_cubin cub;
            int rc = runtime_jit_compile(nv, src, dev.cc_major, dev.cc_minor, entries, nent, &cub, why, sizeof why);
            free(src);
            if (rc) {
                printf("%-6s %-5d %-52s FAILED: %s\n", kd == KERNELS_BF16 ? "bf16" : "f16", rank, name, why);
                failures++;
                continue;
            }
            char regs[128];
            int used = 0, spilled = 0;
            regs[0] = '\0';
            for (int e = 0; e < nent; ++e) {
                used += snprintf(regs + used, sizeof regs - (size_t)used, "%s%s %d", e ? ", " : "", entries[e],
                                 cub.entries[e].registers);
                if (cub.entries[e].spill_stores > 0)
                    spills++, spilled = 1;
            }
            printf("%-6s %-5d %-58s %9.1f  %s%s\n", kd == KERNELS_BF16 ? "bf16" : "f16", rank, name,
                   cub.seconds * 1e3, regs, spilled ? "  SPILLS" : "");
            total += cub.seconds;
            runtime_cubin_free(&cub);
        }
    }
    printf("%d kernels compiled for sm_%d%d in %.1f s, %d failed, %d entry points spill\n", nseen * ndt - failures,
           dev.cc_major, dev.cc_minor, total, failures, spills);
    return failures ? 1 : 0;
}

static int cmd_check(int argc, char **argv)
{
    int quick = 0;
    uint64_t seed = (uint64_t)time(NULL);
    dop_context_options opt;
    dop_context_options_init(&opt);
    opt.flags = DOP_CONTEXT_WAIT_FOR_COMPILE; /* check the kernels dispatch chose, not the generic one */
    for (int i = 0; i < argc; ++i) {
        if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--cache") && i + 1 < argc)
            opt.cache_path = argv[++i];
        else if (!strcmp(argv[i], "--readonly"))
            opt.flags |= DOP_CONTEXT_CACHE_READONLY;
        else if (!strcmp(argv[i], "--no-cache"))
            opt.flags |= DOP_CONTEXT_NO_CACHE;
        else {
            usage(stderr);
            return 2;
        }
    }
    dop_context *ctx;
    if (dop_context_create(&opt, &ctx) != DOP_OK) {
        fprintf(stderr, "dop check: %s\n", dop_context_error(NULL));
        return 1;
    }
    dop_device_info in;
    dop_context_device_info(ctx, &in);
    printf("dop %s check on %s (sm_%d%d), seed %llu\n", dop_version_string(), in.name, in.cc_major, in.cc_minor,
           (unsigned long long)seed);
    static const int rows_quick[] = {1, 8, 32, 256};
    const int *rows = quick ? rows_quick : grid_rows;
    int nrows = quick ? 4 : (int)(sizeof grid_rows / sizeof grid_rows[0]);
    int pass = 0, fail = 0;
    double worst[2] = {0, 0};
    printf("%-5s %-9s %5s %4s %-7s %-52s %9s %s\n", "dtype", "layout", "rows", "rank", "op", "schedule", "error",
           "result");
    for (int dt = 0; dt < 2; ++dt) {
        for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl) {
            for (int ni = 0; ni < nrows; ++ni) {
                for (int op = 0; op < 3; ++op) {
                    if (quick && op != RUNTIME_OP_APPLY && ni != 2)
                        continue;
                    runtime_case c;
                    memset(&c, 0, sizeof c);
                    c.dtype = dt ? DOP_DTYPE_BF16 : DOP_DTYPE_F16;
                    c.op = (runtime_op)op;
                    c.workload = (runtime_workload)wl;
                    c.layout_kind = (ni % 2) ? DOP_LAYOUT_SEGMENTS : DOP_LAYOUT_ROWS;
                    c.num_rows = rows[ni];
                    if (wl == RUNTIME_WL_DISTINCT && c.num_rows > 256)
                        continue; /* thousands of distinct adapters: not a serving layout */
                    c.d_in = 4096;
                    c.num_slices = 1;
                    c.d_out[0] = 4096;
                    c.max_rank = (ni % 3 == 0) ? 64 : 16;
                    c.hetero_ranks = wl == RUNTIME_WL_MIXED;
                    c.device_copies = ni % 2;
                    c.seed = seed + (uint64_t)(dt * 1000 + wl * 100 + ni * 10 + op);
                    runtime_case_result res;
                    dop_status st = runtime_check_case(ctx, &c, &res);
                    int ok = st == DOP_OK && res.ok;
                    if (ok) {
                        pass++;
                        if (res.err > worst[dt])
                            worst[dt] = res.err;
                    } else {
                        fail++;
                    }
                    static const char *const ops[] = {"apply", "shrink", "expand"};
                    printf("%-5s %-9s %5d %4d %-7s %-52s %9.2e %s %s\n", dt ? "bf16" : "f16",
                           runtime_workload_name(c.workload), c.num_rows, c.max_rank, ops[op], res.schedule, res.err,
                           ok ? "ok" : "FAIL", ok ? "" : res.message);
                    fflush(stdout);
                }
            }
        }
    }
    print_stats(ctx);
    printf("%d passed, %d failed; worst normalized error f16 %.2e, bf16 %.2e\n", pass, fail, worst[0], worst[1]);
    dop_context_destroy(ctx);
    return fail ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "info"))
        return cmd_info();
    if (!strcmp(cmd, "jit"))
        return cmd_jit(argc - 2, argv + 2);
    if (!strcmp(cmd, "check"))
        return cmd_check(argc - 2, argv + 2);
    if (!strcmp(cmd, "cache"))
        return dop_cache_command(argc - 2, argv + 2);
    if (!strcmp(cmd, "warm"))
        return dop_warm_command(argc - 2, argv + 2);
    if (!strcmp(cmd, "tune"))
        return dop_tune_command(argc - 2, argv + 2);
    if (!strcmp(cmd, "costmodel"))
        return dop_costmodel_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "selftest")) {
        dop_context *ctx;
        if (dop_context_create(NULL, &ctx) == DOP_OK) {
            dop_context_destroy(ctx);
            char *a[] = {"--quick"};
            return cmd_check(1, a);
        }
        printf("no usable GPU here (%s)\n", dop_context_error(NULL));
        printf("so: JIT-compiling the kernels for a named GPU instead\n\n");
        char *a[] = {"--gpu", "h200"};
        return cmd_jit(2, a);
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "dop: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
