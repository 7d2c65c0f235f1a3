/*
 * runtime_context.c -- contexts, errors, logging, the kernel table and
 * adapter tables.
 *
 * Errors: each failing call formats its message into a thread-local buffer
 * tagged with the context it failed on, so messages never race between
 * threads and reading one needs no lock (sqlite3_errmsg without the mutex).
 *
 * Kernel table: a small array searched under a mutex. A miss compiles with
 * the mutex released; the loser of a race for the same key unloads its copy.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_internal.h"

/* Per thread, the last message of up to ERR_SLOTS contexts (0 = no context),
 * keyed by a context id that is never reused, least recently failed evicted. */
#define ERR_SLOTS 8
static _Thread_local struct {
    uint64_t id;
    uint64_t stamp;
    char msg[1024];
} t_err[ERR_SLOTS];
static _Thread_local uint64_t t_err_clock;
static uint64_t g_next_ctx_id = 1; /* atomic */

static uint64_t ctx_id(const dop_context *ctx)
{
    return ctx ? ctx->id : 0;
}

static void log_message(const dop_context *ctx, dop_log_level level, const char *msg)
{
    if (ctx && ctx->log && level <= ctx->log_level)
        ctx->log(ctx->log_user, level, msg);
}

void runtime_log(const dop_context *ctx, dop_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log || level > ctx->log_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, level, msg);
}

static char *err_slot(uint64_t id)
{
    int victim = 0;
    for (int i = 0; i < ERR_SLOTS; ++i) {
        if (t_err[i].stamp && t_err[i].id == id) {
            victim = i;
            break;
        }
        if (t_err[i].stamp < t_err[victim].stamp)
            victim = i;
    }
    t_err[victim].id = id;
    t_err[victim].stamp = ++t_err_clock;
    return t_err[victim].msg;
}

dop_status runtime_fail(const dop_context *ctx, dop_status status, const char *fmt, ...)
{
    char *msg = err_slot(ctx_id(ctx));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof t_err[0].msg, fmt, ap);
    va_end(ap);
    log_message(ctx, DOP_LOG_ERROR, msg);
    return status;
}

static dop_status fail_cu_with(const runtime_driver *drv, const dop_context *ctx, CUresult r, const char *what)
{
    char d[256];
    runtime_cu_describe(drv, r, d, sizeof d);
    dop_status st = r == CUDA_ERROR_OUT_OF_MEMORY ? DOP_ERR_OUT_OF_DEVICE_MEMORY : DOP_ERR_DEVICE_FAILED;
    return runtime_fail(ctx, st, "%s failed: %s", what, d);
}

dop_status runtime_fail_cu(const dop_context *ctx, CUresult r, const char *what)
{
    return fail_cu_with(ctx ? ctx->drv : NULL, ctx, r, what);
}

const char *dop_context_error(const dop_context *ctx)
{
    uint64_t id = ctx_id(ctx);
    for (int i = 0; i < ERR_SLOTS; ++i)
        if (t_err[i].stamp && t_err[i].id == id)
            return t_err[i].msg;
    return "";
}

unsigned dop_version(void)
{
    return DOP_VERSION_MAJOR * 10000u + DOP_VERSION_MINOR * 100u + DOP_VERSION_PATCH;
}

#define DOP_STR2(x) #x
#define DOP_STR(x) DOP_STR2(x)

const char *dop_version_string(void)
{
    return DOP_STR(DOP_VERSION_MAJOR) "." DOP_STR(DOP_VERSION_MINOR) "." DOP_STR(DOP_VERSION_PATCH);
}

const char *dop_status_string(dop_status s)
{
    switch (s) {
    case DOP_OK: return "DOP_OK";
    case DOP_ERR_INVALID_ARGUMENT: return "DOP_ERR_INVALID_ARGUMENT";
    case DOP_ERR_UNAVAILABLE: return "DOP_ERR_UNAVAILABLE";
    case DOP_ERR_UNSUPPORTED: return "DOP_ERR_UNSUPPORTED";
    case DOP_ERR_OUT_OF_HOST_MEMORY: return "DOP_ERR_OUT_OF_HOST_MEMORY";
    case DOP_ERR_OUT_OF_DEVICE_MEMORY: return "DOP_ERR_OUT_OF_DEVICE_MEMORY";
    case DOP_ERR_COMPILE_FAILED: return "DOP_ERR_COMPILE_FAILED";
    case DOP_ERR_DEVICE_FAILED: return "DOP_ERR_DEVICE_FAILED";
    case DOP_ERR_CACHE_CORRUPT: return "DOP_ERR_CACHE_CORRUPT";
    case DOP_ERR_INVALID_LAYOUT: return "DOP_ERR_INVALID_LAYOUT";
    case DOP_ERR_MISALIGNED: return "DOP_ERR_MISALIGNED";
    case DOP_ERR_WORKSPACE_TOO_SMALL: return "DOP_ERR_WORKSPACE_TOO_SMALL";
    case DOP_ERR_INTERNAL: return "DOP_ERR_INTERNAL";
    }
    return "DOP_ERR_(unknown)";
}

void dop_context_options_init(dop_context_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = sizeof *opt;
    opt->device = 0;
    opt->log_level = DOP_LOG_WARN;
}

dop_status runtime_enter(dop_context *ctx, bool *pushed)
{
    CUcontext cur = NULL;
    *pushed = false;
    CUresult r = ctx->drv->fn_cuCtxGetCurrent(&cur);
    if (r != CUDA_SUCCESS)
        return runtime_fail_cu(ctx, r, "cuCtxGetCurrent");
    if (cur == ctx->cuctx)
        return DOP_OK;
    r = ctx->drv->fn_cuCtxPushCurrent(ctx->cuctx);
    if (r != CUDA_SUCCESS)
        return runtime_fail_cu(ctx, r, "cuCtxPushCurrent");
    *pushed = true;
    return DOP_OK;
}

void runtime_leave(dop_context *ctx, bool pushed)
{
    if (pushed) {
        CUcontext dummy;
        ctx->drv->fn_cuCtxPopCurrent(&dummy);
    }
}

static dop_status context_open_cache(dop_context *ctx, const dop_context_options *opt);
static dop_status context_load_generic(dop_context *ctx);

static int attr(const runtime_driver *d, CUdevice dev, CUdevice_attribute a, int *out)
{
    return d->fn_cuDeviceGetAttribute(out, a, dev) == CUDA_SUCCESS ? 0 : -1;
}

dop_status dop_context_create(const dop_context_options *opt, dop_context **out)
{
    dop_context_options defaults;
    if (!out)
        return runtime_fail(NULL, DOP_ERR_INVALID_ARGUMENT, "dop_context_create: out is NULL");
    *out = NULL;
    if (!opt) {
        dop_context_options_init(&defaults);
        opt = &defaults;
    }
    if (opt->struct_size != sizeof(dop_context_options))
        return runtime_fail(NULL, DOP_ERR_INVALID_ARGUMENT,
                            "dop_context_create: opt->struct_size is %u, expected %zu (call dop_context_options_init)",
                            opt->struct_size, sizeof(dop_context_options));
    if (opt->device < 0)
        return runtime_fail(NULL, DOP_ERR_INVALID_ARGUMENT, "dop_context_create: opt->device is %d", opt->device);
    if ((unsigned)opt->log_level > DOP_LOG_DEBUG)
        return runtime_fail(NULL, DOP_ERR_INVALID_ARGUMENT, "dop_context_create: opt->log_level %d is unknown",
                            (int)opt->log_level);
    if (opt->flags & ~(DOP_CONTEXT_WAIT_FOR_COMPILE | DOP_CONTEXT_NO_CACHE | DOP_CONTEXT_CACHE_READONLY |
                       DOP_CONTEXT_PROGRAMMATIC_LAUNCH))
        return runtime_fail(NULL, DOP_ERR_INVALID_ARGUMENT, "dop_context_create: unknown flags 0x%x in opt->flags",
                            opt->flags);

    char why[512];
    const runtime_driver *drv = runtime_driver_load(why, sizeof why);
    if (!drv)
        return runtime_fail(NULL, DOP_ERR_UNAVAILABLE, "dop_context_create: %s", why);
    CUresult r = drv->fn_cuInit(0);
    if (r != CUDA_SUCCESS) {
        char d[256];
        runtime_cu_describe(drv, r, d, sizeof d);
        return runtime_fail(NULL, DOP_ERR_UNAVAILABLE, "dop_context_create: cuInit failed: %s", d);
    }
    int count = 0;
    if (drv->fn_cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0)
        return runtime_fail(NULL, DOP_ERR_UNAVAILABLE, "dop_context_create: no CUDA device");
    if (opt->device >= count)
        return runtime_fail(NULL, DOP_ERR_UNAVAILABLE, "dop_context_create: device %d requested, %d present",
                            opt->device, count);
    const runtime_nvrtc *nv = runtime_nvrtc_load(why, sizeof why);
    if (!nv)
        return runtime_fail(NULL, DOP_ERR_UNAVAILABLE, "dop_context_create: %s", why);

    dop_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return runtime_fail(NULL, DOP_ERR_OUT_OF_HOST_MEMORY, "dop_context_create: out of host memory");
    ctx->drv = drv;
    ctx->nvrtc = nv;
    ctx->id = __atomic_add_fetch(&g_next_ctx_id, 1, __ATOMIC_RELAXED);
    ctx->log = opt->log;
    ctx->log_user = opt->log_user;
    ctx->log_level = opt->log_level;
    ctx->flags = opt->flags & ~DOP_CONTEXT_PROGRAMMATIC_LAUNCH; /* that one lives in pdl, switchable */
    atomic_init(&ctx->pdl, (opt->flags & DOP_CONTEXT_PROGRAMMATIC_LAUNCH) != 0);
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_cond_init(&ctx->inflight_cond, NULL);
    if (!(ctx->plans = runtime_plans_new())) {
        pthread_cond_destroy(&ctx->inflight_cond);
        pthread_mutex_destroy(&ctx->lock);
        free(ctx);
        return runtime_fail(NULL, DOP_ERR_OUT_OF_HOST_MEMORY, "dop_context_create: out of host memory");
    }

    dop_status st = DOP_OK;
    dop_device_info *in = &ctx->info;
    if ((r = drv->fn_cuDeviceGet(&ctx->dev, opt->device)) != CUDA_SUCCESS ||
        (r = drv->fn_cuDeviceGetName(in->name, (int)sizeof in->name, ctx->dev)) != CUDA_SUCCESS) {
        st = fail_cu_with(drv, NULL, r, "dop_context_create: cuDeviceGet");
        goto fail;
    }
    in->ordinal = opt->device;
    if (attr(drv, ctx->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, &in->cc_major) ||
        attr(drv, ctx->dev, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, &in->cc_minor) ||
        attr(drv, ctx->dev, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, &in->sm_count) ||
        attr(drv, ctx->dev, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, &in->l2_bytes) ||
        attr(drv, ctx->dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, &in->smem_per_block_optin)) {
        st = runtime_fail(NULL, DOP_ERR_DEVICE_FAILED, "dop_context_create: cuDeviceGetAttribute failed");
        goto fail;
    }
    if (drv->fn_cuDriverGetVersion(&in->driver_version) != CUDA_SUCCESS)
        in->driver_version = 0;
    in->nvrtc_major = nv->major;
    in->nvrtc_minor = nv->minor;
    if (in->cc_major < 8) {
        st = runtime_fail(NULL, DOP_ERR_UNSUPPORTED, "dop_context_create: %s is sm_%d%d; dop needs sm_80 or newer",
                          in->name, in->cc_major, in->cc_minor);
        goto fail;
    }
    if ((r = drv->fn_cuDevicePrimaryCtxRetain(&ctx->cuctx, ctx->dev)) != CUDA_SUCCESS) {
        st = fail_cu_with(drv, NULL, r, "dop_context_create: cuDevicePrimaryCtxRetain");
        if (st == DOP_ERR_DEVICE_FAILED)
            st = DOP_ERR_UNAVAILABLE;
        ctx->cuctx = NULL;
        goto fail;
    }
    runtime_log(ctx, DOP_LOG_INFO, "dop %s on %s (sm_%d%d, %d SMs), NVRTC %d.%d", dop_version_string(), in->name,
                in->cc_major, in->cc_minor, in->sm_count, nv->major, nv->minor);
    if ((st = context_open_cache(ctx, opt)) != DOP_OK)
        goto fail;
    if ((st = context_load_generic(ctx)) != DOP_OK) {
        /* recorded under ctx's id, which dies with it: dop.h promises the message to
         * dop_context_error(NULL) */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", dop_context_error(ctx));
        dop_context_destroy(ctx);
        return runtime_fail(NULL, st, "dop_context_create: the generic kernels: %s", msg);
    }
    if (!(ctx->flags & DOP_CONTEXT_WAIT_FOR_COMPILE) && (st = runtime_compiler_start(ctx)) != DOP_OK)
        goto fail;
    *out = ctx;
    return DOP_OK;
fail:
    dop_context_destroy(ctx);
    return st;
}

/* The persistent cache: a failure to open it is logged and dop goes on without. */
static dop_status context_open_cache(dop_context *ctx, const dop_context_options *opt)
{
    if (opt->flags & DOP_CONTEXT_NO_CACHE) {
        snprintf(ctx->stats.cache_path, sizeof ctx->stats.cache_path, "disabled (DOP_CONTEXT_NO_CACHE)");
        return DOP_OK;
    }
    char why[512];
    unsigned flags = (opt->flags & DOP_CONTEXT_CACHE_READONLY) ? CACHE_READONLY : CACHE_CREATE;
    cache_status cs = cache_open(opt->cache_path, flags, &ctx->cache, why, sizeof why);
    if (cs != CACHE_OK) {
        ctx->cache = NULL;
        snprintf(ctx->stats.cache_path, sizeof ctx->stats.cache_path, "not in use: %.480s", why);
        runtime_log(ctx, DOP_LOG_WARN, "persistent cache not in use: %s", why);
        return DOP_OK;
    }
    ctx->cache_readonly = (opt->flags & DOP_CONTEXT_CACHE_READONLY) != 0;
    ctx->stats.cache_open = 1;
    snprintf(ctx->stats.cache_path, sizeof ctx->stats.cache_path, "%s", cache_path(ctx->cache));
    return DOP_OK;
}

/* The generic kernels, one per dtype, from the cache or compiled side by side. */
static dop_status context_load_generic(dop_context *ctx)
{
    search_schedule g = runtime_generic_schedule(RUNTIME_OP_APPLY, 1, 4096, 1, ctx->info.sm_count);
    runtime_module_req req[2] = {{KERNELS_F16, DOP_MAX_RANK, g}, {KERNELS_BF16, DOP_MAX_RANK, g}};
    dop_status st = runtime_kernels_prepare(ctx, req, 2, 2);
    bool pushed;
    if (st == DOP_OK && (st = runtime_enter(ctx, &pushed)) == DOP_OK) {
        st = runtime_kernel_get(ctx, KERNELS_F16, DOP_MAX_RANK, &g, &ctx->generic[0]);
        if (st == DOP_OK)
            st = runtime_kernel_get(ctx, KERNELS_BF16, DOP_MAX_RANK, &g, &ctx->generic[1]);
        runtime_leave(ctx, pushed);
    }
    return st;
}

void dop_context_destroy(dop_context *ctx)
{
    if (!ctx)
        return;
    runtime_compiler_stop(ctx);
    bool pushed = false;
    bool entered = ctx->cuctx && runtime_enter(ctx, &pushed) == DOP_OK;
    for (int i = 0; i < ctx->nkernels; ++i) {
        if (entered)
            ctx->drv->fn_cuModuleUnload(ctx->kernels[i]->module);
        free(ctx->kernels[i]);
    }
    if (entered)
        runtime_leave(ctx, pushed);
    free(ctx->kernels);
    if (ctx->cuctx)
        ctx->drv->fn_cuDevicePrimaryCtxRelease(ctx->dev);
    runtime_plans_free(ctx->plans);
    cache_close(ctx->cache);
    pthread_cond_destroy(&ctx->inflight_cond);
    pthread_mutex_destroy(&ctx->lock);
    for (int i = 0; i < ERR_SLOTS; ++i) /* this thread's message for ctx; ids are never reused */
        if (t_err[i].stamp && t_err[i].id == ctx->id)
            t_err[i].stamp = 0;
    free(ctx);
}

dop_status dop_context_device_info(dop_context *ctx, dop_device_info *out)
{
    if (!ctx || !out)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "dop_context_device_info: %s is NULL", ctx ? "out" : "ctx");
    *out = ctx->info;
    return DOP_OK;
}

dop_status dop_context_set_programmatic_launch(dop_context *ctx, int enable)
{
    if (!ctx)
        return runtime_fail(NULL, DOP_ERR_INVALID_ARGUMENT, "dop_context_set_programmatic_launch: ctx is NULL");
    atomic_store_explicit(&ctx->pdl, enable != 0, memory_order_relaxed);
    return DOP_OK;
}

dop_status dop_context_get_stats(dop_context *ctx, dop_context_stats *out)
{
    if (!ctx || !out)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "dop_context_get_stats: %s is NULL", ctx ? "out" : "ctx");
    pthread_mutex_lock(&ctx->lock);
    *out = ctx->stats;
    pthread_mutex_unlock(&ctx->lock);
    return DOP_OK;
}

/* ---- adapter tables -------------------------------------------------------- */

size_t runtime_packed_adapters_size(int32_t n)
{
    return (size_t)n * (8 + 8 + 4 + 4);
}

void runtime_pack_adapters(const dop_lora_adapter *e, int32_t n, void *buf)
{
    unsigned char *b = buf;
    for (int32_t i = 0; i < n; ++i) {
        uint64_t a = (uint64_t)(uintptr_t)e[i].A, bb = (uint64_t)(uintptr_t)e[i].B;
        memcpy(b + (size_t)i * 8, &a, 8);
        memcpy(b + (size_t)n * 8 + (size_t)i * 8, &bb, 8);
        memcpy(b + (size_t)n * 16 + (size_t)i * 4, &e[i].rank, 4);
        memcpy(b + (size_t)n * 20 + (size_t)i * 4, &e[i].scale, 4);
    }
}

static dop_status check_entries(const dop_context *ctx, const char *fn, const dop_lora_adapter *e, int32_t n,
                                int32_t first, int32_t num_slices)
{
    for (int32_t i = 0; i < n; ++i) {
        int32_t slot = first + i / num_slices, slice = i % num_slices;
        const dop_lora_adapter *a = &e[i];
        if (a->rank < 0)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: slot %d slice %d: rank %d is negative", fn, slot,
                                slice, a->rank);
        if (a->rank > DOP_MAX_RANK)
            return runtime_fail(ctx, DOP_ERR_UNSUPPORTED, "%s: slot %d slice %d: rank %d is above DOP_MAX_RANK (%d)",
                                fn, slot, slice, a->rank, DOP_MAX_RANK);
        if (a->rank == 0 && (a->A || a->B))
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT,
                                "%s: slot %d slice %d: rank is 0 but A or B is set (an empty entry has A = B = NULL)",
                                fn, slot, slice);
        if (a->rank > 0 && (!a->A || !a->B))
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: slot %d slice %d: rank %d but %s is NULL", fn,
                                slot, slice, a->rank, a->A ? "B" : "A");
        if (((uintptr_t)a->A | (uintptr_t)a->B) & 1u)
            return runtime_fail(ctx, DOP_ERR_MISALIGNED,
                                "%s: slot %d slice %d: weight pointer %s is not aligned to 2 bytes", fn, slot, slice,
                                ((uintptr_t)a->A & 1u) ? "A" : "B");
        if (a->scale != a->scale)
            return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: slot %d slice %d: scale is NaN", fn, slot, slice);
    }
    return DOP_OK;
}

dop_status runtime_check_adapters(const dop_context *ctx, const char *fn, const dop_lora_adapter *e, int32_t n,
                                  int32_t num_slices)
{
    return check_entries(ctx, fn, e, n, 0, num_slices);
}

dop_status dop_adapter_table_create(dop_context *ctx, int32_t num_slots, int32_t num_slices,
                                    const dop_lora_adapter *entries, dop_adapter_table **out)
{
    static const char fn[] = "dop_adapter_table_create";
    if (!ctx || !out || !entries)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                            !ctx ? "ctx" : !out ? "out" : "entries");
    *out = NULL;
    if (num_slots <= 0 || num_slots > (1 << 24))
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: num_slots %d not in 1..%d", fn, num_slots, 1 << 24);
    if (num_slices <= 0 || num_slices > DOP_MAX_SLICES)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: num_slices %d not in 1..%d", fn, num_slices,
                            DOP_MAX_SLICES);
    int32_t n = num_slots * num_slices;
    dop_status st = check_entries(ctx, fn, entries, n, 0, num_slices);
    if (st)
        return st;
    dop_adapter_table *t = calloc(1, sizeof *t);
    size_t bytes = runtime_packed_adapters_size(n);
    void *img = malloc(bytes);
    if (!t || !(t->host = malloc((size_t)n * sizeof *entries)) || !img) {
        if (t)
            free(t->host);
        free(t);
        free(img);
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    }
    memcpy(t->host, entries, (size_t)n * sizeof *entries);
    t->ctx = ctx;
    t->num_slots = num_slots;
    t->num_slices = num_slices;
    runtime_pack_adapters(entries, n, img);
    bool pushed;
    if ((st = runtime_enter(ctx, &pushed)) != DOP_OK)
        goto fail;
    CUresult r = ctx->drv->fn_cuMemAlloc(&t->dev, bytes);
    if (r != CUDA_SUCCESS) {
        t->dev = 0;
        st = runtime_fail_cu(ctx, r, "dop_adapter_table_create: cuMemAlloc");
    } else if ((r = ctx->drv->fn_cuMemcpyHtoD(t->dev, img, bytes)) != CUDA_SUCCESS) {
        st = runtime_fail_cu(ctx, r, "dop_adapter_table_create: cuMemcpyHtoD");
    } else if ((r = ctx->drv->fn_cuStreamSynchronize(NULL)) != CUDA_SUCCESS) {
        /* a copy from pageable memory may return before its DMA lands; kernels on
         * non-blocking streams would not wait for it */
        st = runtime_fail_cu(ctx, r, "dop_adapter_table_create: cuStreamSynchronize");
    }
    runtime_leave(ctx, pushed);
    if (st)
        goto fail;
    free(img);
    *out = t;
    return DOP_OK;
fail:
    free(img);
    dop_adapter_table_destroy(t);
    return st;
}

dop_status dop_adapter_table_update(dop_adapter_table *t, int32_t first_slot, int32_t count,
                                    const dop_lora_adapter *entries, dop_stream stream)
{
    static const char fn[] = "dop_adapter_table_update";
    if (!t || !entries)
        return runtime_fail(t ? t->ctx : NULL, DOP_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                            !t ? "table" : "entries");
    dop_context *ctx = t->ctx;
    if (first_slot < 0 || count <= 0 || first_slot > t->num_slots - count)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "%s: slots %d..%lld outside the table's 0..%d", fn,
                            first_slot, (long long)first_slot + count - 1, t->num_slots - 1);
    int32_t n = count * t->num_slices, total = t->num_slots * t->num_slices;
    dop_status st = check_entries(ctx, fn, entries, n, first_slot, t->num_slices);
    if (st)
        return st;
    memcpy(t->host + (size_t)first_slot * t->num_slices, entries, (size_t)n * sizeof *entries);
    /* re-pack the whole image: the SoA arrays of the updated slots are not contiguous */
    size_t bytes = runtime_packed_adapters_size(total);
    void *img = malloc(bytes);
    if (!img)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    runtime_pack_adapters(t->host, total, img);
    bool pushed;
    if ((st = runtime_enter(ctx, &pushed)) == DOP_OK) {
        CUresult r = ctx->drv->fn_cuMemcpyHtoDAsync(t->dev, img, bytes, (CUstream)stream);
        if (r != CUDA_SUCCESS)
            st = runtime_fail_cu(ctx, r, "dop_adapter_table_update: cuMemcpyHtoDAsync");
        runtime_leave(ctx, pushed);
    }
    free(img);
    return st;
}

void dop_adapter_table_destroy(dop_adapter_table *t)
{
    if (!t)
        return;
    if (t->dev) {
        bool pushed;
        if (runtime_enter(t->ctx, &pushed) == DOP_OK) {
            t->ctx->drv->fn_cuMemFree(t->dev);
            runtime_leave(t->ctx, pushed);
        }
    }
    free(t->host);
    free(t);
}

