/*
 * runtime_kernels.c -- compiled modules: the context's table, the cubins of
 * the persistent cache, NVRTC, and the background compiler.
 *
 * A module is the code of one (dtype, max_rank, schedule module key). Finding
 * one goes: the context's table (a short array under a mutex, never held
 * across a compile or a load) -> the cache's cubin for the exact key (NVRTC
 * version, arch, options, hash of the generated source) -> NVRTC. A compiled
 * cubin is stored in the cache for every later process and machine of the
 * same arch. Asynchronous requests go to one worker thread per context.
 *
 * One compile per key: inside a process, a thread that needs a key another
 * thread is compiling waits for it (the context's in-flight list); between
 * processes, the compiling one leaves a marker record in the cache (its pid
 * and the time) and the others wait for the cubin to appear while that
 * process lives, up to a bound, then compile themselves.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "runtime_internal.h"

static const char jit_options_tag[] = "--std=c++17 --ptxas-options=-v"; /* keep in step with runtime_jit.c */

static runtime_kernel *kernel_find(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s)
{
    for (int i = 0; i < ctx->nkernels; ++i) {
        runtime_kernel *k = ctx->kernels[i];
        if (k->dtype == dtype && k->max_rank == max_rank && memcmp(&k->sched, s, sizeof *s) == 0)
            return k;
    }
    return NULL;
}

const runtime_kernel *runtime_kernel_loaded(dop_context *ctx, kernels_dtype dtype, int max_rank,
                                            const search_schedule *s)
{
    search_schedule key = search_schedule_module_key(s);
    pthread_mutex_lock(&ctx->lock);
    const runtime_kernel *k = kernel_find(ctx, dtype, max_rank, &key);
    pthread_mutex_unlock(&ctx->lock);
    return k;
}

void runtime_cubin_key(cache_key *k, int nvrtc_major, int nvrtc_minor, int cc_major, int cc_minor,
                       uint64_t source_hash)
{
    cache_key_init(k, "dop.cubin", 1);
    cache_key_i64(k, nvrtc_major);
    cache_key_i64(k, nvrtc_minor);
    cache_key_i64(k, cc_major);
    cache_key_i64(k, cc_minor);
    cache_key_str(k, jit_options_tag);
    cache_key_u64(k, source_hash);
}

uint64_t runtime_source_hash(const char *src, size_t len)
{
    return XXH3_64bits(src, len);
}

/* Loads a cubin, resolves the entry points and adds the module to the table
 * (or returns the copy another thread added meanwhile). */
static dop_status kernel_install(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s,
                                 const void *cubin, int from_cache, double compile_s, const runtime_kernel **out)
{
    runtime_kernel *k = calloc(1, sizeof *k);
    if (!k)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "out of host memory");
    k->dtype = dtype;
    k->max_rank = max_rank;
    k->sched = *s;
    CUresult r = ctx->drv->fn_cuModuleLoadData(&k->module, cubin);
    if (r != CUDA_SUCCESS) {
        free(k);
        return runtime_fail_cu(ctx, r, "cuModuleLoadData");
    }
    /* the module holds its sketch's entry points only (kernels_entries); the others stay NULL */
    const char *names[2];
    int nnames = kernels_entries(s, names);
    for (int i = 0; i < nnames && r == CUDA_SUCCESS; ++i) {
        CUfunction *slot = !strcmp(names[i], KERNELS_ENTRY_SHRINK)    ? &k->shrink
                           : !strcmp(names[i], KERNELS_ENTRY_EXPAND)  ? &k->expand
                           : !strcmp(names[i], KERNELS_ENTRY_FUSED)   ? &k->fused
                           : !strcmp(names[i], KERNELS_ENTRY_CLUSTER) ? &k->cluster
                                                                      : &k->counter;
        r = ctx->drv->fn_cuModuleGetFunction(slot, k->module, names[i]);
    }
    if (r == CUDA_SUCCESS && k->cluster) /* clusters of more than 8 CTAs (SEARCH_MAX_CLUSTER) need the opt-in */
        r = ctx->drv->fn_cuFuncSetAttribute(k->cluster, CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1);
    if (r != CUDA_SUCCESS) {
        ctx->drv->fn_cuModuleUnload(k->module);
        free(k);
        return runtime_fail_cu(ctx, r, "cuModuleGetFunction / cuFuncSetAttribute");
    }
    if (s->persist) {
        /* a persistent grid is as many CTAs as run at once: SMs x the occupancy of
         * each entry point (registers, static shared memory, threads); at least one per SM */
        CUfunction fs[4] = {k->shrink, k->expand, k->fused, k->counter};
        unsigned sms = ctx->info.sm_count > 0 ? (unsigned)ctx->info.sm_count : 1u;
        for (int i = 0; i < 4; ++i) {
            int n = 0;
            if (!fs[i] ||
                ctx->drv->fn_cuOccupancyMaxActiveBlocksPerMultiprocessor(&n, fs[i], 32 * (int)s->warps, 0) !=
                    CUDA_SUCCESS ||
                n < 1)
                n = 1;
            k->resident[i] = sms * (unsigned)n;
        }
    }
    pthread_mutex_lock(&ctx->lock);
    if (from_cache)
        ctx->stats.cubins_from_cache++;
    else {
        ctx->stats.kernels_compiled++;
        ctx->stats.compile_seconds += compile_s;
    }
    runtime_kernel *other = kernel_find(ctx, dtype, max_rank, s);
    if (!other && ctx->nkernels == ctx->kernels_cap) {
        int cap = ctx->kernels_cap ? ctx->kernels_cap * 2 : 16;
        runtime_kernel **grown = realloc(ctx->kernels, (size_t)cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&ctx->lock);
            ctx->drv->fn_cuModuleUnload(k->module);
            free(k);
            return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "out of host memory for the kernel table");
        }
        ctx->kernels = grown;
        ctx->kernels_cap = cap;
    }
    if (!other) {
        ctx->kernels[ctx->nkernels++] = k;
        ctx->stats.kernels_loaded++;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (other) {
        ctx->drv->fn_cuModuleUnload(k->module);
        free(k);
        k = other;
    }
    *out = k;
    return DOP_OK;
}

/* ---- one compile per key ------------------------------------------------------- */

#define MARKER_MAX_AGE_S 600 /* a marker older than this is stale (its owner hung or died) */
#define MARKER_WAIT_S 120    /* the longest a process waits for another's compile */

typedef struct compile_marker {
    uint32_t magic; /* 'DOPM' */
    int32_t pid;
    int64_t started; /* seconds since the epoch */
} compile_marker;

static void marker_key(cache_key *m, const cache_key *cubin_key)
{
    cache_key_init(m, "dop.compiling", 1);
    cache_key_bytes(m, cubin_key->buf, cubin_key->len);
}

/* Another live process compiles this key right now. */
static bool marker_held_by_other(dop_context *ctx, const cache_key *mk)
{
    void *val = NULL;
    size_t len = 0;
    if (cache_get(ctx->cache, CACHE_DB_CUBINS, mk->buf, mk->len, &val, &len, NULL, NULL, 0) != CACHE_OK)
        return false;
    compile_marker m;
    bool held = false;
    if (len == sizeof m) {
        memcpy(&m, val, sizeof m);
        int64_t age = (int64_t)time(NULL) - m.started;
        held = m.magic == 0x444f504du && m.pid != (int32_t)getpid() && age >= 0 && age < MARKER_MAX_AGE_S &&
               (kill(m.pid, 0) == 0 || errno == EPERM);
    }
    free(val);
    return held;
}

/* In-process: registers key as being compiled by this thread, or waits while
 * another thread compiles it. Returns true if this thread must compile. */
static bool inflight_begin(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s)
{
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        if (kernel_find(ctx, dtype, max_rank, s)) {
            pthread_mutex_unlock(&ctx->lock);
            return false;
        }
        bool busy = false;
        for (int i = 0; i < ctx->ninflight && !busy; ++i)
            busy = ctx->inflight[i].dtype == dtype && ctx->inflight[i].max_rank == max_rank &&
                   !memcmp(&ctx->inflight[i].sched, s, sizeof *s);
        if (!busy)
            break;
        pthread_cond_wait(&ctx->inflight_cond, &ctx->lock);
    }
    if (ctx->ninflight < RUNTIME_MAX_INFLIGHT)
        ctx->inflight[ctx->ninflight++] = (runtime_module_req){dtype, max_rank, *s};
    pthread_mutex_unlock(&ctx->lock);
    return true;
}

static void inflight_end(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s)
{
    pthread_mutex_lock(&ctx->lock);
    for (int i = 0; i < ctx->ninflight; ++i) {
        if (ctx->inflight[i].dtype == dtype && ctx->inflight[i].max_rank == max_rank &&
            !memcmp(&ctx->inflight[i].sched, s, sizeof *s)) {
            ctx->inflight[i] = ctx->inflight[--ctx->ninflight];
            break;
        }
    }
    pthread_cond_broadcast(&ctx->inflight_cond);
    pthread_mutex_unlock(&ctx->lock);
}

/* Loads the cubin of ck from the cache; DOP_ERR_UNAVAILABLE (no message) when absent. */
static dop_status load_cached(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s,
                              const cache_key *ck, const char *name, const runtime_kernel **out)
{
    if (!ctx->cache)
        return DOP_ERR_UNAVAILABLE;
    void *cub = NULL;
    size_t cub_len = 0;
    char why[512];
    cache_status cs = cache_get(ctx->cache, CACHE_DB_CUBINS, ck->buf, ck->len, &cub, &cub_len, NULL, why, sizeof why);
    if (cs == CACHE_OK) {
        /* an intact record may still hold no usable cubin (not an ELF image, or one the driver
         * refuses): drop it and build the kernel again, as for a corrupt record */
        dop_status st = DOP_ERR_DEVICE_FAILED;
        if (cub_len >= 64 && memcmp(cub, "\177ELF", 4) == 0)
            st = kernel_install(ctx, dtype, max_rank, s, cub, 1, 0, out);
        free(cub);
        if (st != DOP_ERR_DEVICE_FAILED)
            return st;
        runtime_log(ctx, DOP_LOG_WARN, "cache: cubin of [%s]: not loadable, dropped (compiling it)", name);
        if (!ctx->cache_readonly)
            cache_delete(ctx->cache, CACHE_DB_CUBINS, ck->buf, ck->len, NULL, 0);
        return DOP_ERR_UNAVAILABLE;
    }
    if (cs != CACHE_MISS)
        runtime_log(ctx, DOP_LOG_WARN, "cache: cubin of [%s]: %s (compiling it)", name, why);
    return DOP_ERR_UNAVAILABLE;
}

dop_status runtime_kernel_obtain(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *sched,
                                 bool may_compile, const runtime_kernel **out)
{
    search_schedule key = search_schedule_module_key(sched);
    const search_schedule *s = &key;
    *out = NULL;
    if (s->sketch == SEARCH_SKETCH_CLUSTER && ctx->info.cc_major < 9)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                            "the cluster sketch needs sm_90 or newer (thread-block clusters); the device is sm_%d%d",
                            ctx->info.cc_major, ctx->info.cc_minor);
    pthread_mutex_lock(&ctx->lock);
    runtime_kernel *found = kernel_find(ctx, dtype, max_rank, s);
    pthread_mutex_unlock(&ctx->lock);
    if (found) {
        *out = found;
        return DOP_OK;
    }

    char why[1024], name[128];
    search_schedule_format(s, name, sizeof name);
    char *src = NULL;
    size_t len = 0;
    if (kernels_codegen(s, dtype, max_rank, &src, &len, why, sizeof why) != 0)
        return runtime_fail(ctx, DOP_ERR_INTERNAL, "code generation failed for [%s]: %s", name, why);
    cache_key ck;
    runtime_cubin_key(&ck, ctx->info.nvrtc_major, ctx->info.nvrtc_minor, ctx->info.cc_major, ctx->info.cc_minor,
                      runtime_source_hash(src, len));
    dop_status st = load_cached(ctx, dtype, max_rank, s, &ck, name, out);
    if (st != DOP_ERR_UNAVAILABLE || !may_compile) {
        free(src);
        return st; /* loaded, failed, or (UNAVAILABLE) the caller queues a compile */
    }
    if (!inflight_begin(ctx, dtype, max_rank, s)) { /* another thread compiled it meanwhile */
        free(src);
        return runtime_kernel_obtain(ctx, dtype, max_rank, sched, false, out);
    }
    cache_key mk;
    marker_key(&mk, &ck);
    bool writable = ctx->cache && !ctx->cache_readonly;
    if (writable) {
        /* wait while another live process compiles the same key */
        for (int waited_ms = 0; marker_held_by_other(ctx, &mk) && waited_ms < MARKER_WAIT_S * 1000; waited_ms += 50) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if ((st = load_cached(ctx, dtype, max_rank, s, &ck, name, out)) != DOP_ERR_UNAVAILABLE) {
            inflight_end(ctx, dtype, max_rank, s);
            free(src);
            return st;
        }
        compile_marker m = {0x444f504du, (int32_t)getpid(), (int64_t)time(NULL)};
        cache_put(ctx->cache, CACHE_DB_CUBINS, mk.buf, mk.len, "compiling", &m, sizeof m, NULL, 0);
    }
    const char *entries[2];
    int nentries = kernels_entries(s, entries);
    runtime_cubin cubin;
    int rc = runtime_jit_compile(ctx->nvrtc, src, ctx->info.cc_major, ctx->info.cc_minor, entries, nentries, &cubin,
                                 why, sizeof why);
    free(src);
    if (rc != 0) {
        if (writable)
            cache_delete(ctx->cache, CACHE_DB_CUBINS, mk.buf, mk.len, NULL, 0);
        inflight_end(ctx, dtype, max_rank, s);
        return runtime_fail(ctx, DOP_ERR_COMPILE_FAILED, "compiling [%s]: %s", name, why);
    }
    if (writable) {
        char tag[32];
        snprintf(tag, sizeof tag, "sm_%d%d", ctx->info.cc_major, ctx->info.cc_minor);
        cache_status cs = cache_put(ctx->cache, CACHE_DB_CUBINS, ck.buf, ck.len, tag, cubin.data, cubin.size, why,
                                    sizeof why);
        if (cs != CACHE_OK)
            runtime_log(ctx, DOP_LOG_WARN, "cache: storing the cubin of [%s]: %s", name, why);
        cache_delete(ctx->cache, CACHE_DB_CUBINS, mk.buf, mk.len, NULL, 0);
    }
    st = kernel_install(ctx, dtype, max_rank, s, cubin.data, 0, cubin.seconds, out);
    inflight_end(ctx, dtype, max_rank, s);
    runtime_log(ctx, DOP_LOG_INFO, "compiled [%s] for sm_%d%d in %.0f ms", name, ctx->info.cc_major,
                ctx->info.cc_minor, cubin.seconds * 1e3);
    runtime_cubin_free(&cubin);
    return st;
}

dop_status runtime_kernel_get(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s,
                              const runtime_kernel **out)
{
    return runtime_kernel_obtain(ctx, dtype, max_rank, s, true, out);
}

/* ---- background compiler -------------------------------------------------------- */

typedef struct compile_job {
    kernels_dtype dtype;
    int max_rank;
    search_schedule key;
} compile_job;

struct runtime_compiler {
    pthread_t thread;
    pthread_cond_t cond;
    compile_job *jobs;
    int njobs, cap, busy, stop, started;
    compile_job current;
};

static bool job_equal(const compile_job *a, const compile_job *b)
{
    return a->dtype == b->dtype && a->max_rank == b->max_rank && memcmp(&a->key, &b->key, sizeof a->key) == 0;
}

static void *compiler_main(void *arg)
{
    dop_context *ctx = arg;
    runtime_compiler *c = ctx->compiler;
    bool pushed = false;
    int entered = runtime_enter(ctx, &pushed) == DOP_OK;
    pthread_mutex_lock(&ctx->lock);
    for (;;) {
        while (!c->stop && c->njobs == 0)
            pthread_cond_wait(&c->cond, &ctx->lock);
        if (c->stop)
            break;
        c->current = c->jobs[0];
        memmove(c->jobs, c->jobs + 1, (size_t)(c->njobs - 1) * sizeof *c->jobs);
        c->njobs--;
        c->busy = 1;
        pthread_mutex_unlock(&ctx->lock);
        if (entered) {
            const runtime_kernel *k;
            if (runtime_kernel_obtain(ctx, c->current.dtype, c->current.max_rank, &c->current.key, true, &k) != DOP_OK)
                runtime_log(ctx, DOP_LOG_WARN, "background compile failed: %s", dop_context_error(ctx));
        }
        pthread_mutex_lock(&ctx->lock);
        c->busy = 0;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&ctx->lock);
    if (entered)
        runtime_leave(ctx, pushed);
    return NULL;
}

dop_status runtime_compiler_start(dop_context *ctx)
{
    runtime_compiler *c = calloc(1, sizeof *c);
    if (!c)
        return runtime_fail(NULL, DOP_ERR_OUT_OF_HOST_MEMORY, "dop_context_create: out of host memory");
    pthread_cond_init(&c->cond, NULL);
    ctx->compiler = c;
    if (pthread_create(&c->thread, NULL, compiler_main, ctx) != 0) {
        pthread_cond_destroy(&c->cond);
        free(c);
        ctx->compiler = NULL;
        return runtime_fail(NULL, DOP_ERR_INTERNAL, "dop_context_create: could not start the compile thread");
    }
    c->started = 1;
    return DOP_OK;
}

void runtime_compiler_stop(dop_context *ctx)
{
    runtime_compiler *c = ctx->compiler;
    if (!c)
        return;
    pthread_mutex_lock(&ctx->lock);
    c->stop = 1;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&ctx->lock);
    if (c->started)
        pthread_join(c->thread, NULL);
    pthread_cond_destroy(&c->cond);
    free(c->jobs);
    free(c);
    ctx->compiler = NULL;
}

void runtime_compile_async(dop_context *ctx, kernels_dtype dtype, int max_rank, const search_schedule *s)
{
    runtime_compiler *c = ctx->compiler;
    if (!c)
        return;
    compile_job j = {dtype, max_rank, search_schedule_module_key(s)};
    pthread_mutex_lock(&ctx->lock);
    bool queued = c->busy && job_equal(&c->current, &j);
    for (int i = 0; i < c->njobs && !queued; ++i)
        queued = job_equal(&c->jobs[i], &j);
    if (!queued && c->njobs == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        compile_job *grown = realloc(c->jobs, (size_t)cap * sizeof *grown);
        if (grown) {
            c->jobs = grown;
            c->cap = cap;
        }
    }
    if (!queued && c->njobs < c->cap) {
        c->jobs[c->njobs++] = j;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&ctx->lock);
}

void runtime_compile_wait(dop_context *ctx)
{
    runtime_compiler *c = ctx->compiler;
    if (!c)
        return;
    pthread_mutex_lock(&ctx->lock);
    while (c->njobs > 0 || c->busy)
        pthread_cond_wait(&c->cond, &ctx->lock);
    pthread_mutex_unlock(&ctx->lock);
}

/* ---- parallel preparation ---------------------------------------------------- */

typedef struct prep_job {
    dop_context *ctx;
    const runtime_module_req *list;
    int n;
    int next; /* guarded by lock */
    pthread_mutex_t lock;
    dop_status status;
    char message[1024];
} prep_job;

static void *prep_worker(void *arg)
{
    prep_job *j = arg;
    bool pushed;
    if (runtime_enter(j->ctx, &pushed) != DOP_OK)
        return NULL;
    for (;;) {
        pthread_mutex_lock(&j->lock);
        int i = j->next < j->n ? j->next++ : -1;
        pthread_mutex_unlock(&j->lock);
        if (i < 0)
            break;
        const runtime_kernel *k;
        const runtime_module_req *r = &j->list[i];
        dop_status st = runtime_kernel_get(j->ctx, r->dtype, r->max_rank, &r->sched, &k);
        if (st != DOP_OK) {
            pthread_mutex_lock(&j->lock);
            if (j->status == DOP_OK) {
                j->status = st;
                snprintf(j->message, sizeof j->message, "%s", dop_context_error(j->ctx));
            }
            pthread_mutex_unlock(&j->lock);
        }
    }
    runtime_leave(j->ctx, pushed);
    return NULL;
}

dop_status runtime_kernels_prepare(dop_context *ctx, const runtime_module_req *list, int n, int threads)
{
    prep_job j;
    memset(&j, 0, sizeof j);
    j.ctx = ctx;
    j.list = list;
    j.n = n;
    pthread_mutex_init(&j.lock, NULL);
    if (threads > n)
        threads = n;
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    pthread_t tid[64];
    int started = 0;
    for (int i = 0; i < threads; ++i)
        if (pthread_create(&tid[started], NULL, prep_worker, &j) == 0)
            started++;
    if (started == 0)
        prep_worker(&j);
    for (int i = 0; i < started; ++i)
        pthread_join(tid[i], NULL);
    pthread_mutex_destroy(&j.lock);
    if (j.status != DOP_OK)
        return runtime_fail(ctx, j.status, "%s", j.message);
    return DOP_OK;
}
