/*
 * search_schedule.c -- legality rules of the schedule space.
 *
 * The rules mirror what kernels/kernels_lora.cu needs: the row mask is a
 * 32-bit word (rows <= 32), the K step of a warp is a whole number (1..16)
 * of warp-wide vector loads per lane, and the static shared memory (fp32
 * intermediate, row grouping) stays under 48 KiB.
 *
 * With stages > 1 (tensor cores only) the shrink stages x and A tiles of kc
 * elements through a ring of `stages` shared-memory buffers (cp.async), which
 * counts against the same 48 KiB.
 *
 * Only the sketch (which entry points the module holds), rows, warps, vec, kc,
 * cols, mma, stages and persist shape the generated source; split_k is a
 * launch parameter, so schedules that differ only there share one compiled
 * module (search_schedule_module_key).
 */
#include "search_schedule.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static bool is_pow2_in(unsigned v, unsigned lo, unsigned hi)
{
    return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

search_schedule search_schedule_make(unsigned sketch, unsigned rows, unsigned warps, unsigned vec, unsigned kc,
                                     unsigned split_k, unsigned cols, unsigned mma, unsigned stages, unsigned persist)
{
    search_schedule s;
    memset(&s, 0, sizeof s);
    s.version = SEARCH_SCHEDULE_VERSION;
    s.sketch = (uint8_t)sketch;
    s.rows = (uint8_t)rows;
    s.warps = (uint8_t)warps;
    s.vec = (uint8_t)vec;
    s.kc = (uint16_t)kc;
    s.split_k = (uint8_t)split_k;
    s.cols = (uint16_t)cols;
    s.mma = (uint8_t)mma;
    s.stages = (uint8_t)stages;
    s.persist = (uint8_t)persist;
    return s;
}

size_t search_schedule_smem(const search_schedule *s, int max_rank)
{
    size_t tile = (size_t)s->rows * 36 + 8;            /* struct dop_tile */
    size_t v = (size_t)s->rows * (size_t)max_rank * 4; /* fp32 intermediate */
    if (s->sketch == SEARCH_SKETCH_CLUSTER)
        v *= 2; /* the CTA's partial and the cluster's sum */
    size_t ring = 0;
    if (!(s->mma && s->stages > 1) && !s->persist)
        tile += SEARCH_TILE_TABLE * 24 + 8; /* the adapter table read with the layout (two pointers, rank, scale) */
    if (s->mma && s->stages > 1) {
        /* struct dop_stage x stages: x [16][kc + 8] and A [ranks rounded up to 8][kc + 8]
         * of 16-bit elements (rows padded by 16 bytes), plus 16 bytes of alignment */
        size_t ra = ((size_t)(max_rank > 0 ? max_rank : 0) + 7) / 8 * 8;
        ring = (size_t)s->stages * (16 + ra) * ((size_t)s->kc + 8) * 2 + 16;
    }
    return tile + v + ring;
}

void search_say(char *why, size_t len, const char *fmt, ...)
{
    if (why && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
}

#define fail(why, len, ...) (search_say(why, len, __VA_ARGS__), false)

bool search_schedule_legal(const search_schedule *s, int max_rank, char *why, size_t why_len)
{
    if (!s)
        return fail(why, why_len, "schedule is NULL");
    if (s->version != SEARCH_SCHEDULE_VERSION)
        return fail(why, why_len, "schedule version %u, expected %u", s->version, SEARCH_SCHEDULE_VERSION);
    if (s->sketch != SEARCH_SKETCH_SPLIT && s->sketch != SEARCH_SKETCH_FUSED && s->sketch != SEARCH_SKETCH_FUSED_COUNTER &&
        s->sketch != SEARCH_SKETCH_CLUSTER)
        return fail(why, why_len, "unknown sketch %u", s->sketch);
    if (!is_pow2_in(s->rows, 1, 32))
        return fail(why, why_len, "rows per CTA %u is not a power of two in 1..32", s->rows);
    if (!is_pow2_in(s->warps, 1, 16))
        return fail(why, why_len, "warps per CTA %u is not a power of two in 1..16", s->warps);
    if (!is_pow2_in(s->vec, 1, 8))
        return fail(why, why_len, "vector width %u is not 1, 2, 4 or 8", s->vec);
    if (s->mma) {
        if (s->kc == 0 || s->kc % 16 != 0 || s->kc > 128)
            return fail(why, why_len, "K step %u of an mma schedule is not 1..8 times 16", s->kc);
    } else if (s->kc == 0 || s->kc % (32u * s->vec) != 0 || s->kc > 16u * 32u * s->vec) {
        return fail(why, why_len, "K step %u is not 1..16 times 32 * vec (%u)", s->kc, 32u * s->vec);
    }
    if (s->cols == 0 || s->cols > 4096)
        return fail(why, why_len, "output columns per CTA %u not in 1..4096", s->cols);
    if (s->split_k == 0 || s->split_k > 64)
        return fail(why, why_len, "split-K %u not in 1..64", s->split_k);
    if (s->sketch == SEARCH_SKETCH_FUSED && s->split_k != 1)
        return fail(why, why_len, "the fused sketch has no split-K (got %u)", s->split_k);
    if (s->sketch == SEARCH_SKETCH_CLUSTER && s->split_k > SEARCH_MAX_CLUSTER)
        return fail(why, why_len, "the cluster sketch's split-K is its cluster size, at most %d (got %u)",
                    SEARCH_MAX_CLUSTER, s->split_k);
    if (s->stages < 1 || s->stages > SEARCH_MAX_STAGES)
        return fail(why, why_len, "stages %u not in 1..%d", s->stages, SEARCH_MAX_STAGES);
    if (s->stages > 1 && !s->mma)
        return fail(why, why_len, "stages %u: only the tensor-core (mma) shrink stages its tiles (1 without mma)",
                    s->stages);
    if (s->persist > 1)
        return fail(why, why_len, "persist is %u, not 0 or 1", s->persist);
    if (s->persist && s->sketch == SEARCH_SKETCH_CLUSTER)
        return fail(why, why_len, "the cluster sketch has no persistent grid (persist must be 0)");
    if (s->seg > 1)
        return fail(why, why_len, "seg is %u, not 0 or 1", s->seg);
    if (s->seg && !s->mma)
        return fail(why, why_len, "row tiles aligned to segments (seg) are for tensor-core (mma) schedules only");
    if (s->mma > 1)
        return fail(why, why_len, "mma is %u, not 0 or 1", s->mma);
    if (s->mma && s->rows != 16)
        return fail(why, why_len, "tensor-core (mma) schedules take 16 rows per CTA, not %u", s->rows);
    if (s->mma && s->cols % 8 != 0)
        return fail(why, why_len, "tensor-core (mma) schedules take output columns in tiles of 8, not %u", s->cols);
    if (s->mma && s->vec != 8)
        return fail(why, why_len, "tensor-core (mma) schedules load pairs of elements; vec must be 8, not %u", s->vec);
    if (max_rank < 1 || max_rank > 128)
        return fail(why, why_len, "max_rank %d not in 1..128", max_rank);
    size_t smem = search_schedule_smem(s, max_rank);
    if (smem > SEARCH_STATIC_SMEM_LIMIT)
        return fail(why, why_len, "needs %zu bytes of shared memory, more than %d", smem, SEARCH_STATIC_SMEM_LIMIT);
    return true;
}

int search_schedule_format(const search_schedule *s, char *buf, size_t len)
{
    const char *sk = s->sketch == SEARCH_SKETCH_SPLIT            ? "split"
                     : s->sketch == SEARCH_SKETCH_FUSED          ? "fused"
                     : s->sketch == SEARCH_SKETCH_FUSED_COUNTER  ? "counter"
                     : s->sketch == SEARCH_SKETCH_CLUSTER        ? "cluster"
                                                                 : "?";
    char st[16] = "";
    if (s->stages != 1)
        snprintf(st, sizeof st, " stages=%u", s->stages);
    return snprintf(buf, len, "%s rows=%u warps=%u vec=%u kc=%u splitk=%u cols=%u%s%s%s%s", sk, s->rows, s->warps,
                    s->vec, s->kc, s->split_k, s->cols, s->mma ? " mma" : "", st, s->persist ? " persist=1" : "",
                    s->seg ? " seg" : "");
}

long search_k_gran(unsigned mma, unsigned vec)
{
    return mma ? 256L : 32L * vec;
}

long search_k_per_cta(long d_in, unsigned mma, unsigned vec, unsigned split_k)
{
    long gran = search_k_gran(mma, vec), k = (d_in + split_k - 1) / split_k;
    return (k + gran - 1) / gran * gran;
}

search_schedule search_schedule_module_key(const search_schedule *s)
{
    search_schedule k = *s;
    k.split_k = 1;
    return k;
}

int search_schedule_parse(const char *text, search_schedule *out)
{
    char sk[16];
    unsigned rows, warps, vec, kc, split, cols;
    int used = 0;
    if (!text || !out)
        return -1;
    if (sscanf(text, " %15s rows=%u warps=%u vec=%u kc=%u splitk=%u cols=%u %n", sk, &rows, &warps, &vec, &kc, &split,
               &cols, &used) != 7)
        return -1;
    int mma = 0;
    unsigned stages = 1, persist = 0;
    if (!strncmp(text + used, "mma", 3) && (text[used + 3] == ' ' || text[used + 3] == '\0')) {
        mma = 1;
        used += 3;
        while (text[used] == ' ')
            ++used;
    }
    if (!strncmp(text + used, "stages=", 7)) {
        int n = 0;
        if (sscanf(text + used, "stages=%u %n", &stages, &n) != 1 || n == 0 || stages > 255)
            return -1;
        used += n;
    }
    if (!strncmp(text + used, "persist=", 8)) {
        int n = 0;
        if (sscanf(text + used, "persist=%u %n", &persist, &n) != 1 || n == 0 || persist > 255)
            return -1;
        used += n;
    }
    int seg = 0;
    if (!strncmp(text + used, "seg", 3) && (text[used + 3] == ' ' || text[used + 3] == '\0')) {
        seg = 1;
        used += 3;
        while (text[used] == ' ')
            ++used;
    }
    if (text[used] != '\0')
        return -1;
    unsigned sketch;
    if (!strcmp(sk, "split"))
        sketch = SEARCH_SKETCH_SPLIT;
    else if (!strcmp(sk, "fused"))
        sketch = SEARCH_SKETCH_FUSED;
    else if (!strcmp(sk, "counter"))
        sketch = SEARCH_SKETCH_FUSED_COUNTER;
    else if (!strcmp(sk, "cluster"))
        sketch = SEARCH_SKETCH_CLUSTER;
    else
        return -1;
    if (rows > 255 || warps > 255 || vec > 255 || split > 255 || kc > 65535 || cols > 65535)
        return -1;
    search_schedule s = search_schedule_make(sketch, rows, warps, vec, kc, split, cols, (unsigned)mma, stages, persist);
    s.seg = (uint8_t)seg;
    *out = s;
    return 0;
}
