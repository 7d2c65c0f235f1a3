/*
 * runtime_dispatch.c -- from a call to a schedule.
 *
 * Two keys. The correctness key of a kernel (the cubin key, runtime_kernels.c)
 * names what the code is: NVRTC version, exact arch, options, hash of the
 * generated source (dtype, max_rank and the schedule's tile sizes are in the
 * source). The performance key of a call names what it is for: operation,
 * dtype, d_in, the slices' d_out, max_rank, how weights are passed, the GPU
 * fingerprint (compute capability, SM count, L2 size, shared memory per
 * block) and the layout class. Any kernel of the right correctness key gives
 * the right answer for every layout; the performance key only steers which
 * one is fastest.
 *
 * The layout class buckets what moves the optimum: rows (power of two),
 * runs of rows of one adapter (count and longest, powers of two; their mean),
 * the share of rows without an adapter (quarters) and whether ranks differ.
 *
 * Lookup: the context's plan table (open addressing on the XXH3-64 of the
 * key bytes, under the context mutex) -> the cache's schedules database (what
 * `dop warm` or `dop tune` stored for this GPU) -> a schedule `dop tune`
 * stored for the nearest class of the same shape -> the heuristic below. The
 * plan remembers its kernel once loaded, so a warm call is one hash lookup.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "runtime_internal.h"
#include "search_record.h"
#include "search_space.h"

static uint8_t log2_ceil(int64_t v)
{
    uint8_t l = 0;
    while (((int64_t)1 << l) < v && l < 62)
        ++l;
    return l;
}

void runtime_layout_classify(const runtime_layout_summary *sum, int32_t num_rows, int ranks_differ,
                             runtime_layout_class *out)
{
    memset(out, 0, sizeof *out);
    out->rows_log2 = log2_ceil(num_rows);
    out->groups_log2 = log2_ceil(sum->groups);
    out->longest_log2 = log2_ceil(sum->longest);
    out->mean_log2 = log2_ceil(sum->groups ? sum->rows_with_adapter / sum->groups : 0);
    int none = num_rows - sum->rows_with_adapter;
    out->none_quarters = (uint8_t)((4 * (int64_t)none + num_rows - 1) / num_rows); /* 0 only when none */
    out->ranks_differ = ranks_differ ? 1 : 0;
}

void runtime_gpu_of(const dop_device_info *d, runtime_gpu *g)
{
    g->cc_major = d->cc_major;
    g->cc_minor = d->cc_minor;
    g->sm_count = d->sm_count;
    g->l2_bytes = d->l2_bytes;
    g->smem_optin = d->smem_per_block_optin;
}

void runtime_gpu_tag(const runtime_gpu *g, char *buf, size_t len)
{
    snprintf(buf, len, "sm_%d%d/%dsm/%dKiB-L2/%dKiB-smem", g->cc_major, g->cc_minor, g->sm_count, g->l2_bytes >> 10,
             g->smem_optin >> 10);
}

void runtime_perf_key(cache_key *k, runtime_op op, const runtime_perf_shape *ps, const runtime_gpu *g,
                      const runtime_layout_class *cls)
{
    cache_key_init(k, "dop.schedule", 1);
    cache_key_u64(k, (uint64_t)op);
    cache_key_u64(k, (uint64_t)ps->dtype);
    cache_key_i64(k, ps->d_in);
    cache_key_u64(k, (uint64_t)ps->num_slices);
    for (int i = 0; i < ps->num_slices; ++i)
        cache_key_i64(k, ps->d_out[i]);
    cache_key_i64(k, ps->max_rank);
    cache_key_u64(k, (uint64_t)ps->weights_kind);
    cache_key_i64(k, g->cc_major);
    cache_key_i64(k, g->cc_minor);
    cache_key_i64(k, g->sm_count);
    cache_key_i64(k, g->l2_bytes);
    cache_key_i64(k, g->smem_optin);
    cache_key_bytes(k, cls, sizeof *cls);
}

/* Value stored in the schedules database. Version 2 holds a version-2 schedule
 * (14 bytes: stages, persist); a version-1 value (12-byte schedule) has another
 * size and version and is refused, so dispatch picks again instead of misreading it. */
#define PLAN_VALUE_VERSION 2
typedef struct plan_value {
    uint32_t version;
    uint32_t origin; /* 1 warm (cost model / heuristic offline), 2 tuned (measured) */
    search_schedule sched;
    float measured_us; /* 0 when not measured */
} plan_value;

void runtime_plan_value_encode(const search_schedule *s, unsigned origin, float measured_us, void *buf,
                               size_t *len)
{
    plan_value v;
    memset(&v, 0, sizeof v);
    v.version = PLAN_VALUE_VERSION;
    v.origin = origin;
    v.sched = *s;
    v.measured_us = measured_us;
    memcpy(buf, &v, sizeof v);
    *len = sizeof v;
}

size_t runtime_plan_value_size(void)
{
    return sizeof(plan_value);
}

int runtime_plan_value_decode(const void *buf, size_t len, search_schedule *s, int max_rank)
{
    plan_value v;
    if (len != sizeof v)
        return -1;
    memcpy(&v, buf, sizeof v);
    if (v.version != PLAN_VALUE_VERSION || !search_schedule_legal(&v.sched, max_rank, NULL, 0))
        return -1;
    *s = v.sched;
    return 0;
}

unsigned runtime_plan_value_origin(const void *buf, size_t len)
{
    plan_value v;
    if (len != sizeof v)
        return 0;
    memcpy(&v, buf, sizeof v);
    return v.version == PLAN_VALUE_VERSION ? v.origin : 0;
}

/* The heuristic's pick for a layout class: it sees a representative of the
 * class (every bucket at its upper edge), so the plan is a function of the
 * performance key, whichever layout of the class comes first. */
void runtime_pick_for_class(const dop_device_info *dev, runtime_op op, const runtime_perf_shape *ps,
                            const runtime_layout_class *cls, search_schedule *out)
{
    /* the buckets' upper ends, capped at the rows a batch can have (int32) */
#define BUCKET(l) ((l) >= 30 ? (int64_t)1 << 30 : (int64_t)1 << (l))
    int64_t rows = BUCKET(cls->rows_log2), groups = BUCKET(cls->groups_log2), mean = BUCKET(cls->mean_log2);
    int64_t with = groups * mean;
    /* both buckets round up, so the representative cannot have more rows with an adapter than
     * the batch has rows (skewed at 4096 rows, 364 runs averaging 11 rows, would otherwise look
     * like 512 runs of 16 and get the tensor-core schedule, 2x slower there on the H200) */
    if (with > rows)
        with = rows;
    runtime_layout_summary rep;
    rep.groups = rep.distinct = (int32_t)groups;
    rep.rows_with_adapter = (int32_t)with;
    rep.longest = (int32_t)BUCKET(cls->longest_log2);
#undef BUCKET
    if (rep.rows_with_adapter == 0 || cls->none_quarters == 4)
        rep.groups = rep.rows_with_adapter = rep.longest = rep.distinct = 0;
    runtime_pick_schedule(dev, op, (int32_t)rows, ps->d_in, ps->num_slices, ps->max_rank, &rep, out);
}

/* ---- the plan table ------------------------------------------------------------- */

struct runtime_plans {
    runtime_plan *slots;
    size_t cap, count;
};

static runtime_plan *plan_find(runtime_plans *t, uint64_t h, const cache_key *k)
{
    if (!t->cap)
        return NULL;
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        runtime_plan *p = &t->slots[i];
        if (!p->key)
            return NULL;
        if (p->hash == h && p->key_len == k->len && memcmp(p->key, k->buf, k->len) == 0)
            return p;
    }
}

static runtime_plan *plan_insert(runtime_plans *t, uint64_t h, const cache_key *k)
{
    if ((t->count + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        runtime_plan *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return NULL;
        for (size_t i = 0; i < t->cap; ++i) {
            runtime_plan *p = &t->slots[i];
            if (!p->key)
                continue;
            size_t j = p->hash & (cap - 1);
            while (slots[j].key)
                j = (j + 1) & (cap - 1);
            slots[j] = *p;
        }
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    unsigned char *copy = malloc(k->len);
    if (!copy)
        return NULL;
    memcpy(copy, k->buf, k->len);
    size_t i = h & (t->cap - 1);
    while (t->slots[i].key)
        i = (i + 1) & (t->cap - 1);
    runtime_plan *p = &t->slots[i];
    memset(p, 0, sizeof *p);
    p->hash = h;
    p->key = copy;
    p->key_len = k->len;
    t->count++;
    return p;
}

void runtime_plans_free(runtime_plans *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->cap; ++i)
        free(t->slots[i].key);
    free(t->slots);
    free(t);
}

runtime_plans *runtime_plans_new(void)
{
    return calloc(1, sizeof(runtime_plans));
}

/* The performance key of a call on ctx's GPU and its hash in the plan table. */
static uint64_t plan_key(const dop_context *ctx, runtime_op op, const runtime_perf_shape *ps,
                         const runtime_layout_class *cls, cache_key *k)
{
    runtime_gpu g;
    runtime_gpu_of(&ctx->info, &g);
    runtime_perf_key(k, op, ps, &g, cls);
    return XXH3_64bits(k->buf, k->len);
}

/* The schedule the cache's schedules database holds under k (tuned_only: only one `dop tune`
 * measured); false when there is none or it cannot be read. */
static bool stored_schedule(dop_context *ctx, const cache_key *k, int max_rank, bool tuned_only,
                            search_schedule *out)
{
    void *val = NULL;
    size_t len = 0;
    char why[256];
    bool ok = false;
    cache_status cs = cache_get(ctx->cache, CACHE_DB_SCHEDULES, k->buf, k->len, &val, &len, NULL, why, sizeof why);
    if (cs == CACHE_OK)
        ok = (!tuned_only || runtime_plan_value_origin(val, len) == 2) &&
             runtime_plan_value_decode(val, len, out, max_rank) == 0;
    else if (cs != CACHE_MISS)
        runtime_log(ctx, DOP_LOG_WARN, "cache: schedule lookup: %s", why);
    free(val);
    return ok;
}

/* Delta order of one bucket field: 0, +1, -1, +2, -2, ... (a bigger bucket first: a schedule
 * tuned for more rows, runs or rows without an adapter keeps its grid in check for fewer) */
static int near_delta(int i)
{
    return (i & 1) ? (i + 1) / 2 : -i / 2;
}

/*
 * A schedule `dop tune` measured for the nearest layout class of the same
 * shape, when none is stored for the call's own class: the tuner measures one
 * representative layout per (layout kind, row count), and an engine's batches
 * land in classes next to those (another shuffle of the mixed layout has other
 * runs; batch 16 falls between the tuned 8 and 32 rows). Distance: the L1
 * distance over the class's buckets (runs, longest run, mean run, quarters
 * without an adapter, ranks differ: 1 per step), a row bucket up or down 2;
 * classes up to RUNTIME_NEAR_MAX away are probed in order of distance, in a
 * fixed order within one distance (the ranks-differ sibling first, then
 * the bigger bucket before the smaller: measured at batch 16 between the
 * tuned 8 and 32 rows, docs/benchmarks.md), and the
 * first tuned schedule found is taken. Schedules `dop warm` predicted are not:
 * a prediction for another class is no better than the heuristic. At most
 * about 150 cache reads (fewer where a bucket is at its end), once per class
 * and context (the plan keeps the result). Correctness never depends on the
 * class.
 */
#define RUNTIME_NEAR_MAX 3
static bool nearest_tuned(dop_context *ctx, runtime_op op, const runtime_perf_shape *ps,
                          const runtime_layout_class *cls, search_schedule *out)
{
    const int R = RUNTIME_NEAR_MAX, W = 2 * RUNTIME_NEAR_MAX + 1;
    for (int d = 1; d <= R; ++d)
        for (int ir = 0; ir < 3; ++ir)
            for (int ik = 1; ik >= 0; --ik)
                for (int in = 0; in < W; ++in)
                    for (int im = 0; im < W; ++im)
                        for (int il = 0; il < W; ++il)
                            for (int ig = 0; ig < W; ++ig) {
                                int dr = near_delta(ir), dn = near_delta(in), dm = near_delta(im),
                                    dl = near_delta(il), dg = near_delta(ig);
                                if (2 * abs(dr) + ik + abs(dn) + abs(dm) + abs(dl) + abs(dg) != d)
                                    continue;
                                int r = cls->rows_log2 + dr, g = cls->groups_log2 + dg,
                                    l = cls->longest_log2 + dl, m = cls->mean_log2 + dm,
                                    n = cls->none_quarters + dn;
                                if (r < 0 || r > 62 || g < 0 || g > r || l < 0 || l > r || m < 0 || m > l ||
                                    n < 0 || n > 4)
                                    continue; /* no batch has such a class */
                                runtime_layout_class c = {(uint8_t)r, (uint8_t)g, (uint8_t)l, (uint8_t)m,
                                                          (uint8_t)n, (uint8_t)(cls->ranks_differ ^ ik)};
                                cache_key kc;
                                plan_key(ctx, op, ps, &c, &kc);
                                if (stored_schedule(ctx, &kc, ps->max_rank, true, out))
                                    return true;
                            }
    return false;
}

/*
 * The schedule and kernel for a call. On return *sched is the schedule to
 * launch with and *kernel its module; when the chosen kernel is still being
 * compiled (asynchronous contexts) these are the generic ones.
 */
dop_status runtime_dispatch(dop_context *ctx, runtime_op op, const runtime_perf_shape *ps,
                            const runtime_layout_class *cls, bool wait, search_schedule *sched,
                            const runtime_kernel **kernel)
{
    cache_key k;
    uint64_t h = plan_key(ctx, op, ps, cls, &k);

    pthread_mutex_lock(&ctx->lock);
    runtime_plan *p = plan_find(ctx->plans, h, &k);
    if (p && p->kernel) {
        *sched = p->sched;
        *kernel = p->kernel;
        pthread_mutex_unlock(&ctx->lock);
        return DOP_OK;
    }
    search_schedule chosen;
    bool have = p != NULL, pending = p && p->pending;
    if (have)
        chosen = p->sched;
    pthread_mutex_unlock(&ctx->lock);
    if (pending) {
        /* queued already: until the worker has loaded it, no source, hash or cache read per call */
        const runtime_kernel *done = runtime_kernel_loaded(ctx, ps->kdtype, ps->max_rank, &chosen);
        if (!done)
            goto generic;
    }

    if (!have) {
        bool from_cache = false;
        if (ctx->cache) {
            from_cache = stored_schedule(ctx, &k, ps->max_rank, false, &chosen) ||
                         nearest_tuned(ctx, op, ps, cls, &chosen);
        }
        if (!from_cache)
            runtime_pick_for_class(&ctx->info, op, ps, cls, &chosen);
        if (op != RUNTIME_OP_APPLY)
            chosen.sketch = SEARCH_SKETCH_SPLIT; /* shrink and expand run the split sketch's entry points */
        pthread_mutex_lock(&ctx->lock);
        p = plan_find(ctx->plans, h, &k);
        if (!p && (p = plan_insert(ctx->plans, h, &k)) != NULL) {
            p->sched = chosen;
            ctx->stats.plans++;
            if (from_cache)
                ctx->stats.schedules_from_cache++;
        }
        if (p)
            chosen = p->sched;
        pthread_mutex_unlock(&ctx->lock);
        if (!p)
            return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "out of host memory for the plan table");
    }

    const runtime_kernel *kern = NULL;
    dop_status st = runtime_kernel_obtain(ctx, ps->kdtype, ps->max_rank, &chosen, wait || !ctx->compiler, &kern);
    if (st == DOP_OK) {
        pthread_mutex_lock(&ctx->lock);
        p = plan_find(ctx->plans, h, &k);
        if (p)
            p->kernel = kern;
        pthread_mutex_unlock(&ctx->lock);
        *sched = chosen;
        *kernel = kern;
        return DOP_OK;
    }
    if (st != DOP_ERR_UNAVAILABLE)
        return st;
    /* not compiled anywhere yet: compile in the background, serve with the generic kernel */
    runtime_compile_async(ctx, ps->kdtype, ps->max_rank, &chosen);
    pthread_mutex_lock(&ctx->lock);
    p = plan_find(ctx->plans, h, &k);
    if (p)
        p->pending = true;
    pthread_mutex_unlock(&ctx->lock);
generic:
    *kernel = ctx->generic[ps->kdtype == KERNELS_BF16];
    *sched = runtime_generic_schedule(op, ps->num_rows, ps->d_in, ps->num_slices, ctx->info.sm_count);
    pthread_mutex_lock(&ctx->lock);
    ctx->stats.generic_calls++;
    pthread_mutex_unlock(&ctx->lock);
    return *kernel ? DOP_OK : runtime_fail(ctx, DOP_ERR_INTERNAL, "the generic kernel is not loaded");
}

/* The always-ready kernel: correct for every shape of its dtype (compiled for
 * DOP_MAX_RANK, any smaller max_rank uses a prefix of its tile), reasonable at
 * every size. */
search_schedule runtime_generic_schedule(runtime_op op, int32_t num_rows, int32_t d_in, int32_t num_slices,
                                         int sm_count)
{
    search_schedule s = search_schedule_make(SEARCH_SKETCH_SPLIT, 1, 8, 8, 1024, 1, 256, 0, 1, 0);
    int want = num_rows > 0 ? (2 * sm_count + num_rows * num_slices - 1) / (num_rows * num_slices) : 1;
    int max_split = (d_in + 255) / 256;
    int split = want < 1 ? 1 : want > max_split ? max_split : want;
    s.split_k = (uint8_t)(op == RUNTIME_OP_EXPAND ? 1 : split > 64 ? 64 : split);
    return s;
}

/*
 * The heuristic until tuned schedules and the cost model take over. Decode
 * batches on sm_90+ take the cluster sketch (measured in place below). Otherwise fitted to
 * a sweep of 450 schedules x 38 layouts on an H200 (fp16, 4096 -> 4096, ranks
 * 16 and 64), where it came within 3% of the per-case best (geomean), and a
 * second sweep with 90 tensor-core schedules added:
 *   - small batches at small rank: the one-launch fused sketch, one row per
 *     CTA, 16 warps, 8 loads in flight per lane;
 *   - otherwise shrink + expand; rows per CTA follow the mean run of rows of
 *     one adapter (weights are shared inside a CTA); more warps for few rows;
 *     split-K until the shrink has about two CTAs per SM.
 */
void runtime_pick_schedule(const dop_device_info *dev, runtime_op op, int32_t num_rows, int32_t d_in,
                           int32_t num_slices, int32_t max_rank, const runtime_layout_summary *sum,
                           search_schedule *out)
{
    memset(out, 0, sizeof *out);
    out->version = SEARCH_SCHEDULE_VERSION;
    out->stages = 1;
    out->vec = d_in % 8 == 0 ? 8 : d_in % 4 == 0 ? 4 : d_in % 2 == 0 ? 2 : 1;
    int mean = sum->groups ? sum->rows_with_adapter / sum->groups : 1;
    out->cols = 256;
    if (op == RUNTIME_OP_APPLY && dev && dev->cc_major >= 9 && num_rows <= 16) {
        /* sm_90+, decode batches: one launch of clusters of up to 16 CTAs splitting d_in,
         * every lane's loads of its K range in flight at once. On the H200 (4096 -> 4096,
         * 11008 -> 4096, 4096 -> 11008, ranks 16 and 64, 1 to 16 rows) this was 6.3-10 us at
         * one row against 10-39 us for the best static split schedule and 8-31 us for the
         * fused sketch; two rows per CTA with 16 warps led where adapters repeat, one row
         * with 8 warps and wider column tiles where every row has its own */
        out->sketch = SEARCH_SKETCH_CLUSTER;
        out->rows = mean >= 2 || num_rows == 1 ? 2 : 1;
        out->warps = out->rows == 2 ? 16 : 8;
        out->cols = out->rows == 2 ? 256 : 512;
        int gran = (int)search_k_gran(0, out->vec), max_split = (d_in + gran - 1) / gran;
        int split = max_split < SEARCH_MAX_CLUSTER ? max_split : SEARCH_MAX_CLUSTER;
        int kpc = (int)search_k_per_cta(d_in, 0, out->vec, (unsigned)split);
        int mult = 1;
        while (mult < 16 && mult * gran < kpc)
            mult *= 2;
        out->kc = (uint16_t)(gran * mult);
        out->split_k = (uint8_t)((d_in + kpc - 1) / kpc); /* the CTAs the launcher makes of it */
        return;
    }
    if (op == RUNTIME_OP_APPLY && num_rows <= 8 && max_rank <= 16) {
        out->sketch = SEARCH_SKETCH_FUSED;
        out->rows = 1;
        out->warps = 16;
        out->kc = (uint16_t)(32 * out->vec * 8);
        out->split_k = 1;
        return;
    }
    out->sketch = SEARCH_SKETCH_SPLIT;
    if (num_rows >= 64 && d_in % 8 == 0 &&
        ((max_rank >= 64 && (mean >= 64 || (mean >= 16 && num_rows >= 256))) || (num_rows >= 1024 && mean >= 32))) {
        /* long runs of one adapter at a large rank, or prefill chunks: tensor cores. In the
         * sweep, MMA won at uniform 256 rows (runs of 16; 38.9 against 46.3 us) and identical
         * 64 rows, and lost wherever runs were short (uniform 128 rows, runs of 11: 46.2 vs
         * 38.6). After the expand kept its fragments in registers (H200, 4096 -> 4096),
         * 512 columns and a 2-stage ring took identical 4096 rows to 176 us at rank 64
         * (128 columns, 1 stage: 418; best CUDA-core split tried: 467) and 87 us at rank 16
         * (134), and uniform 1024 rows (runs of 32) at rank 16 to 33.9 us (40.6 tuned). At
         * 256 rows 512 columns left too few CTAs (identical, rank 64: 43.3 against 39.6), so
         * smaller batches keep 128 columns and one stage */
        out->rows = 16;
        out->vec = 8;
        out->mma = 1;
        out->warps = num_rows <= 64 ? 16 : 8;
        out->kc = 128;
        out->cols = 128;
        if (num_rows >= 1024) {
            out->cols = 512;
            out->stages = 2;
            if (op == RUNTIME_OP_EXPAND || search_schedule_smem(out, max_rank) > SEARCH_STATIC_SMEM_LIMIT)
                out->stages = 1; /* no shrink to stage, or the ring does not fit */
        }
    } else {
        out->rows = mean <= 8 ? 1 : mean <= 256 ? 2 : 4;
        out->warps = num_rows <= 8 ? 16 : (num_rows <= 32 || out->rows > 1 || max_rank >= 64) ? 8 : 4;
        out->kc = (uint16_t)(32 * out->vec * (num_rows > 128 && out->rows == 1 ? 8 : 4));
    }
    int row_tiles = (num_rows + out->rows - 1) / out->rows;
    int want = (2 * (dev ? dev->sm_count : 108) + row_tiles * num_slices - 1) / (row_tiles * num_slices);
    int gran = (int)search_k_gran(out->mma, out->vec); /* the K range of a CTA is a multiple of one warp-wide load */
    int max_split = (d_in + gran - 1) / gran;
    int split = want < 1 ? 1 : want;
    if (split > max_split)
        split = max_split;
    if (split > 64)
        split = 64;
    out->split_k = (uint8_t)(op == RUNTIME_OP_APPLY || op == RUNTIME_OP_SHRINK ? split : 1);
}


/* ---- tuning ----------------------------------------------------------------------- */

void runtime_record_task(runtime_op op, const runtime_perf_shape *ps, const runtime_layout_class *cls,
                         search_task *out)
{
    memset(out, 0, sizeof *out);
    out->op = (uint8_t)op;
    out->dtype = (uint8_t)ps->dtype;
    out->weights = (uint8_t)ps->weights_kind;
    out->num_slices = (uint8_t)ps->num_slices;
    out->d_in = ps->d_in;
    for (int i = 0; i < ps->num_slices; ++i)
        out->d_out[i] = ps->d_out[i];
    out->max_rank = ps->max_rank;
    out->rows_log2 = cls->rows_log2;
    out->groups_log2 = cls->groups_log2;
    out->longest_log2 = cls->longest_log2;
    out->mean_log2 = cls->mean_log2;
    out->none_quarters = cls->none_quarters;
    out->ranks_differ = cls->ranks_differ;
}

void runtime_record_target(const dop_device_info *d, search_target *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%.*s", (int)sizeof out->name - 1, d->name);
    out->cc_major = d->cc_major;
    out->cc_minor = d->cc_minor;
    out->sm_count = d->sm_count;
    out->l2_bytes = d->l2_bytes;
    out->smem_per_block = d->smem_per_block_optin;
}

void runtime_search_problem(const dop_device_info *d, runtime_op op, const runtime_perf_shape *ps,
                            search_problem *out)
{
    memset(out, 0, sizeof *out);
    out->op = (int)op;
    out->dtype = ps->kdtype == KERNELS_BF16 ? SEARCH_DTYPE_BF16 : SEARCH_DTYPE_F16;
    out->num_rows = ps->num_rows;
    out->d_in = ps->d_in;
    out->num_slices = ps->num_slices;
    for (int i = 0; i < ps->num_slices; ++i)
        out->d_out[i] = ps->d_out[i];
    out->max_rank = ps->max_rank;
    out->cc_major = d->cc_major;
    out->cc_minor = d->cc_minor;
    out->sm_count = d->sm_count;
    out->smem_per_block = 0; /* the kernels use static shared memory only */
}

dop_status runtime_store_tuned(dop_context *ctx, runtime_op op, const runtime_perf_shape *ps,
                               const runtime_layout_class *cls, const search_schedule *s, float measured_us)
{
    if (!ctx || !ps || !cls || !s)
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "runtime_store_tuned: NULL argument");
    char why[256];
    if (!search_schedule_legal(s, ps->max_rank, why, sizeof why))
        return runtime_fail(ctx, DOP_ERR_INVALID_ARGUMENT, "tuned schedule is illegal: %s", why);
    cache_key k;
    uint64_t h = plan_key(ctx, op, ps, cls, &k);
    /* this process's plan first: later calls of the class use the tuned schedule */
    pthread_mutex_lock(&ctx->lock);
    runtime_plan *p = plan_find(ctx->plans, h, &k);
    if (!p && (p = plan_insert(ctx->plans, h, &k)) != NULL)
        ctx->stats.plans++;
    if (p) {
        p->sched = *s;
        p->kernel = NULL;
        p->pending = false;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (!p)
        return runtime_fail(ctx, DOP_ERR_OUT_OF_HOST_MEMORY, "out of host memory for the plan table");
    if (!ctx->cache || ctx->cache_readonly)
        return DOP_OK;
    unsigned char val[64];
    size_t vlen;
    char tag[96];
    runtime_gpu g;
    runtime_gpu_of(&ctx->info, &g);
    runtime_gpu_tag(&g, tag, sizeof tag);
    runtime_plan_value_encode(s, 2, measured_us, val, &vlen);
    if (cache_put(ctx->cache, CACHE_DB_SCHEDULES, k.buf, k.len, tag, val, vlen, why, sizeof why) != CACHE_OK)
        return runtime_fail(ctx, DOP_ERR_CACHE_CORRUPT, "storing a tuned schedule: %s", why);
    return DOP_OK;
}
