/*
 * dop warm -- fills the persistent cache for a GPU, with or without that GPU.
 *
 * For every shape of a model preset (or given with --shape), rank, dtype,
 * operation, layout and row count of the workload grid, it reduces the layout
 * to its layout class, picks the schedule dispatch would pick for the target
 * GPU (the heuristic today; the cost model when it exists), stores it under
 * the performance key (GPU fingerprint included) and compiles the schedule's
 * cubin with NVRTC for the target's exact arch, in parallel. The generic
 * kernels are compiled too. A context on the target GPU then finds every
 * schedule and cubin in the cache and compiles nothing.
 *
 * Without a GPU the target is a named profile (--gpu) or --arch/--sms/--l2-mib/
 * --smem-kib; with one and no --gpu, the device itself.
 */
#define _GNU_SOURCE
#include "dop_warm.h"
#include "dop_args.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime_check.h"

typedef struct gpu_profile {
    const char *name;
    int cc_major, cc_minor, sm_count, l2_bytes, smem_optin;
} gpu_profile;

/* L2 and opt-in shared memory as the devices report them (cuDeviceGetAttribute). */
static const gpu_profile profiles[] = {
    {"a100-80gb", 8, 0, 108, 40 << 20, 166912}, {"h100-sxm", 9, 0, 132, 50 << 20, 232448},
    {"h200", 9, 0, 132, 60 << 20, 232448},      {"l40s", 8, 9, 142, 96 << 20, 101376},
    {"rtx-4090", 8, 9, 128, 72 << 20, 101376},
};

int dop_warm_profile(const char *name, dop_device_info *out)
{
    for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; ++i) {
        if (strcmp(profiles[i].name, name) == 0) {
            memset(out, 0, sizeof *out);
            snprintf(out->name, sizeof out->name, "%s", name);
            out->cc_major = profiles[i].cc_major;
            out->cc_minor = profiles[i].cc_minor;
            out->sm_count = profiles[i].sm_count;
            out->l2_bytes = profiles[i].l2_bytes;
            out->smem_per_block_optin = profiles[i].smem_optin;
            return 0;
        }
    }
    return -1;
}

const char *dop_warm_profile_names(void)
{
    return "a100-80gb h100-sxm h200 l40s rtx-4090";
}

/* ---- parallel compile ------------------------------------------------------------ */

typedef struct warm_job {
    runtime_module_req req;
} warm_job;

typedef struct warm_pool {
    const runtime_nvrtc *nv;
    cache_store *cache;
    const dop_device_info *dev;
    warm_job *jobs;
    int njobs, next, done, compiled, present, failed;
    pthread_mutex_t lock;
    char first_error[1024];
    double t0;
    int tty;
} warm_pool;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(warm_pool *p)
{
    double el = now_s() - p->t0;
    double eta = p->done ? el / p->done * (p->njobs - p->done) : 0;
    if (p->tty) {
        int width = 30, fill = p->njobs ? p->done * width / p->njobs : width;
        fprintf(stderr, "\r[%.*s%*s] %d/%d kernels  %d compiled  %d cached  %.0fs elapsed, ETA %.0fs ", fill,
                "##############################", width - fill, "", p->done, p->njobs, p->compiled, p->present, el,
                eta);
        if (p->done == p->njobs)
            fputc('\n', stderr);
    } else if (p->done == p->njobs || p->done % 10 == 0) {
        fprintf(stderr, "warm: %d/%d kernels (%d compiled, %d already cached), %.0fs elapsed, ETA %.0fs\n", p->done,
                p->njobs, p->compiled, p->present, el, eta);
    }
}

static void *warm_worker(void *arg)
{
    warm_pool *p = arg;
    static const char *const entries[] = {KERNELS_ENTRY_SHRINK, KERNELS_ENTRY_EXPAND, KERNELS_ENTRY_FUSED};
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int i = p->next < p->njobs ? p->next++ : -1;
        pthread_mutex_unlock(&p->lock);
        if (i < 0)
            return NULL;
        const runtime_module_req *r = &p->jobs[i].req;
        char why[1024], *src = NULL;
        size_t len = 0;
        int compiled = 0, present = 0, failed = 0;
        if (kernels_codegen(&r->sched, r->dtype, r->max_rank, &src, &len, why, sizeof why) != 0) {
            failed = 1;
        } else {
            cache_key ck;
            runtime_cubin_key(&ck, p->nv->major, p->nv->minor, p->dev->cc_major, p->dev->cc_minor,
                              runtime_source_hash(src, len));
            void *val = NULL;
            size_t vlen = 0;
            if (cache_get(p->cache, CACHE_DB_CUBINS, ck.buf, ck.len, &val, &vlen, NULL, why, sizeof why) ==
                CACHE_OK) {
                present = 1;
                free(val);
            } else {
                runtime_cubin cub;
                if (runtime_jit_compile(p->nv, src, p->dev->cc_major, p->dev->cc_minor, entries, 3, &cub, why,
                                        sizeof why) != 0) {
                    failed = 1;
                } else {
                    char tag[32];
                    snprintf(tag, sizeof tag, "sm_%d%d", p->dev->cc_major, p->dev->cc_minor);
                    if (cache_put(p->cache, CACHE_DB_CUBINS, ck.buf, ck.len, tag, cub.data, cub.size, why,
                                  sizeof why) != CACHE_OK)
                        failed = 1;
                    else
                        compiled = 1;
                    runtime_cubin_free(&cub);
                }
            }
            free(src);
        }
        pthread_mutex_lock(&p->lock);
        p->done++;
        p->compiled += compiled;
        p->present += present;
        if (failed && !p->failed++)
            snprintf(p->first_error, sizeof p->first_error, "%s", why);
        progress(p);
        pthread_mutex_unlock(&p->lock);
    }
}

static int add_job(warm_pool *p, int *cap, kernels_dtype dt, int max_rank, const search_schedule *s)
{
    search_schedule key = search_schedule_module_key(s);
    for (int i = 0; i < p->njobs; ++i)
        if (p->jobs[i].req.dtype == dt && p->jobs[i].req.max_rank == max_rank &&
            !memcmp(&p->jobs[i].req.sched, &key, sizeof key))
            return 0;
    if (p->njobs == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        warm_job *g = realloc(p->jobs, (size_t)*cap * sizeof *g);
        if (!g)
            return -1;
        p->jobs = g;
    }
    p->jobs[p->njobs++].req = (runtime_module_req){dt, max_rank, key};
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dop warm [--gpu NAME | --arch sm_XY --sms N --l2-mib N --smem-kib N] [--model NAME]...\n"
            "                [--shape DIN:DOUT[,DOUT...]]... [--ranks 8,16,...] [--dtypes f16,bf16]\n"
            "                [--rows 1,8,...] [--weights table|all] [--cache FILE] [--threads N]\n"
            "  GPUs: %s (default: this machine's GPU, else h200)\n"
            "  models: llama-2-7b llama-3-8b mistral-7b grid (default: grid llama-2-7b llama-3-8b)\n",
            dop_warm_profile_names());
}

int dop_warm_command(int argc, char **argv)
{
    dop_device_info dev;
    int have_dev = 0, custom_arch = 0;
    dop_model_shape shapes[64];
    int nshapes = 0;
    int ranks[16] = {8, 16, 32, 64, 128}, nranks = 5;
    int rows[16] = {1, 8, 32, 64, 128, 256, 1024, 4096}, nrows = 8;
    int dtypes[2] = {DOP_DTYPE_F16, DOP_DTYPE_BF16}, ndt = 2;
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int nweights = 1; /* 0: adapter tables; --weights all adds the per-call forms */
    const char *cache_file = NULL;
    memset(&dev, 0, sizeof dev);
    for (int i = 0; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--gpu") && v) {
            if (dop_warm_profile(v, &dev)) {
                fprintf(stderr, "dop warm: unknown GPU '%s' (known: %s)\n", v, dop_warm_profile_names());
                return 2;
            }
            have_dev = 1, ++i;
        } else if (!strcmp(a, "--arch") && v) {
            int x;
            if (sscanf(v, "sm_%d", &x) != 1 || x < 80) {
                fprintf(stderr, "dop warm: --arch wants sm_XY with XY >= 80\n");
                return 2;
            }
            if (!have_dev)
                dop_warm_profile("h200", &dev);
            dev.cc_major = x / 10, dev.cc_minor = x % 10, custom_arch = have_dev = 1, ++i;
        } else if ((!strcmp(a, "--sms") || !strcmp(a, "--l2-mib") || !strcmp(a, "--smem-kib")) && v) {
            if (!custom_arch) {
                fprintf(stderr, "dop warm: %s goes with --arch\n", a);
                return 2;
            }
            int x = atoi(v);
            if (x <= 0) {
                fprintf(stderr, "dop warm: %s must be positive\n", a);
                return 2;
            }
            if (!strcmp(a, "--sms"))
                dev.sm_count = x;
            else if (!strcmp(a, "--l2-mib"))
                dev.l2_bytes = x << 20;
            else
                dev.smem_per_block_optin = x << 10;
            snprintf(dev.name, sizeof dev.name, "custom");
            ++i;
        } else if (!strcmp(a, "--model") && v) {
            int n = dop_model_shapes(v, shapes + nshapes, 64 - nshapes);
            if (n < 0) {
                fprintf(stderr, "dop warm: unknown model '%s'\n", v);
                return 2;
            }
            nshapes += n, ++i;
        } else if (!strcmp(a, "--shape") && v) {
            if (nshapes == 64 || dop_parse_shape(v, &shapes[nshapes])) {
                fprintf(stderr, "dop warm: --shape wants DIN:DOUT[,DOUT...] (at most %d slices)\n", DOP_MAX_SLICES);
                return 2;
            }
            nshapes++, ++i;
        } else if (!strcmp(a, "--ranks") && v) {
            nranks = dop_parse_ints(v, ranks, 16), ++i;
            for (int k = 0; k < nranks; ++k)
                if (ranks[k] < 1 || ranks[k] > DOP_MAX_RANK)
                    nranks = -1;
            if (nranks <= 0) {
                fprintf(stderr, "dop warm: --ranks wants numbers in 1..%d\n", DOP_MAX_RANK);
                return 2;
            }
        } else if (!strcmp(a, "--rows") && v) {
            nrows = dop_parse_ints(v, rows, 16), ++i;
            for (int k = 0; k < nrows; ++k)
                if (rows[k] < 1 || rows[k] > (1 << 20))
                    nrows = -1;
            if (nrows <= 0) {
                fprintf(stderr, "dop warm: --rows wants positive numbers\n");
                return 2;
            }
        } else if (!strcmp(a, "--dtypes") && v) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            ndt = 0;
            for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
                int dt = !strcmp(t, "f16") ? DOP_DTYPE_F16 : !strcmp(t, "bf16") ? DOP_DTYPE_BF16 : 0;
                if (!dt || ndt == 2) {
                    fprintf(stderr, "dop warm: --dtypes wants f16, bf16 or f16,bf16\n");
                    return 2;
                }
                dtypes[ndt++] = dt;
            }
            ++i;
        } else if (!strcmp(a, "--weights") && v) {
            if (!strcmp(v, "all"))
                nweights = 3;
            else if (strcmp(v, "table")) {
                fprintf(stderr, "dop warm: --weights is table or all\n");
                return 2;
            }
            ++i;
        } else if (!strcmp(a, "--cache") && v) {
            cache_file = v, ++i;
        } else if (!strcmp(a, "--threads") && v) {
            threads = atoi(v), ++i;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (threads < 1)
        threads = 1;
    if (!nshapes) {
        nshapes = dop_model_shapes("grid", shapes, 64);
        nshapes += dop_model_shapes("llama-2-7b", shapes + nshapes, 64 - nshapes);
        nshapes += dop_model_shapes("llama-3-8b", shapes + nshapes, 64 - nshapes);
    }
    if (!have_dev) {
        dop_context *ctx;
        dop_context_options o;
        dop_context_options_init(&o);
        o.flags = DOP_CONTEXT_NO_CACHE | DOP_CONTEXT_WAIT_FOR_COMPILE;
        if (dop_context_create(&o, &ctx) == DOP_OK) {
            dop_context_device_info(ctx, &dev);
            dop_context_destroy(ctx);
        } else {
            dop_warm_profile("h200", &dev);
            fprintf(stderr, "dop warm: no usable GPU here (%s); warming for h200 (choose with --gpu)\n",
                    dop_context_error(NULL));
        }
    }
    char why[1024];
    const runtime_nvrtc *nv = runtime_nvrtc_load(why, sizeof why);
    if (!nv) {
        fprintf(stderr, "dop warm: %s\n", why);
        return 1;
    }
    dev.nvrtc_major = nv->major;
    dev.nvrtc_minor = nv->minor;
    cache_store *cache;
    if (cache_open(cache_file, CACHE_CREATE, &cache, why, sizeof why) != CACHE_OK) {
        fprintf(stderr, "dop warm: %s\n", why);
        return 1;
    }
    runtime_gpu g;
    runtime_gpu_of(&dev, &g);
    char gtag[128];
    runtime_gpu_tag(&g, gtag, sizeof gtag);
    printf("dop %s warm: target %s (%s), NVRTC %d.%d, cache %s\n", dop_version_string(), dev.name, gtag, nv->major,
           nv->minor, cache_path(cache));

    warm_pool pool;
    memset(&pool, 0, sizeof pool);
    pool.nv = nv;
    pool.cache = cache;
    pool.dev = &dev;
    pool.tty = isatty(2);
    pthread_mutex_init(&pool.lock, NULL);
    int cap = 0, nplans = 0, ntuned = 0, rc = 0;
    size_t nseen = 0, seen_cap = 1 << 16;
    uint64_t *seen = calloc(seen_cap, sizeof *seen); /* open addressing on XXH3 of the key; 0 = empty */
    search_schedule gen = runtime_generic_schedule(RUNTIME_OP_APPLY, 1, 4096, 1, dev.sm_count);
    for (int d = 0; d < ndt; ++d)
        add_job(&pool, &cap, dtypes[d] == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16, DOP_MAX_RANK, &gen);
    int32_t *rs = malloc(sizeof(int32_t) << 20);
    if (!rs) {
        cache_close(cache);
        return 1;
    }
    /* the layouts dispatch will see: every workload, a few draws of the random ones */
    for (int si = 0; si < nshapes; ++si)
        for (int ri = 0; ri < nranks; ++ri)
            for (int d = 0; d < ndt; ++d)
                for (int op = 0; op < 3; ++op)
                    for (int wl = 0; wl < RUNTIME_WL_COUNT; ++wl)
                        for (int ni = 0; ni < nrows; ++ni)
                            for (int seed = 0; seed < (wl == RUNTIME_WL_MIXED ? 8 : 1); ++seed)
                                for (int wk = 0; wk < nweights; ++wk) {
                                    if (wl == RUNTIME_WL_DISTINCT && rows[ni] > 256)
                                        continue;
                                    uint64_t rng = (uint64_t)seed * 7919u + 1;
                                    runtime_workload_rows((runtime_workload)wl, rows[ni], &rng, rs);
                                    runtime_layout_summary sum;
                                    runtime_summarize_rows(rs, rows[ni], &sum);
                                    runtime_layout_class cls;
                                    runtime_layout_classify(&sum, rows[ni], wl == RUNTIME_WL_MIXED, &cls);
                                    runtime_perf_shape ps;
                                    memset(&ps, 0, sizeof ps);
                                    ps.dtype = (dop_dtype)dtypes[d];
                                    ps.kdtype = dtypes[d] == DOP_DTYPE_BF16 ? KERNELS_BF16 : KERNELS_F16;
                                    ps.num_rows = rows[ni];
                                    ps.d_in = shapes[si].d_in;
                                    ps.num_slices = shapes[si].num_slices;
                                    memcpy(ps.d_out, shapes[si].d_out, sizeof ps.d_out);
                                    ps.max_rank = ranks[ri];
                                    ps.weights_kind = wk;
                                    search_schedule s;
                                    runtime_pick_for_class(&dev, (runtime_op)op, &ps, &cls, &s);
                                    cache_key k;
                                    runtime_perf_key(&k, (runtime_op)op, &ps, &g, &cls);
                                    unsigned char hk[CACHE_HASH_LEN];
                                    cache_key_hash(k.buf, k.len, hk);
                                    uint64_t h;
                                    memcpy(&h, hk, 8);
                                    h |= 1;
                                    size_t slot = h & (seen_cap - 1);
                                    while (seen && seen[slot] && seen[slot] != h)
                                        slot = (slot + 1) & (seen_cap - 1);
                                    if (seen && seen[slot] == h)
                                        continue; /* this class of this shape is stored already */
                                    if (seen && nseen * 2 < seen_cap)
                                        seen[slot] = h, nseen++;
                                    unsigned char val[64];
                                    size_t vlen;
                                    void *old = NULL;
                                    size_t olen = 0;
                                    if (cache_get(cache, CACHE_DB_SCHEDULES, k.buf, k.len, &old, &olen, NULL, why,
                                                  sizeof why) == CACHE_OK &&
                                        runtime_plan_value_origin(old, olen) == 2) {
                                        free(old); /* measured by dop tune: better than any offline pick */
                                        ntuned++;
                                        continue;
                                    }
                                    free(old);
                                    runtime_plan_value_encode(&s, 1, 0, val, &vlen);
                                    if (cache_put(cache, CACHE_DB_SCHEDULES, k.buf, k.len, gtag, val, vlen, why,
                                                  sizeof why) != CACHE_OK) {
                                        fprintf(stderr, "dop warm: storing a schedule: %s\n", why);
                                        rc = 1;
                                        goto out;
                                    }
                                    nplans++;
                                    if (add_job(&pool, &cap, ps.kdtype, ps.max_rank, &s)) {
                                        rc = 1;
                                        goto out;
                                    }
                                }
    printf("%d shapes x %d ranks x %d dtypes x 3 ops x %d layouts x %d row counts: %d layout classes stored "
           "(%d kept as tuned by dop tune), %d distinct kernels\n",
           nshapes, nranks, ndt, RUNTIME_WL_COUNT, nrows, nplans, ntuned, pool.njobs);
    pool.t0 = now_s();
    {
        pthread_t tid[128];
        int started = 0;
        for (int t = 0; t < threads && t < 128; ++t)
            if (pthread_create(&tid[started], NULL, warm_worker, &pool) == 0)
                started++;
        if (!started)
            warm_worker(&pool);
        for (int t = 0; t < started; ++t)
            pthread_join(tid[t], NULL);
    }
    printf("kernels: %d compiled for sm_%d%d, %d already in the cache, %d failed; %.1f s with %d threads\n",
           pool.compiled, dev.cc_major, dev.cc_minor, pool.present, pool.failed, now_s() - pool.t0, threads);
    if (pool.failed) {
        fprintf(stderr, "dop warm: first failure: %s\n", pool.first_error);
        rc = 1;
    }
out:
    free(seen);
    free(rs);
    free(pool.jobs);
    pthread_mutex_destroy(&pool.lock);
    cache_close(cache);
    return rc;
}
