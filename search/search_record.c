/*
 * search_record.c -- tuning records as JSON lines: writer, steps generator
 * and a strict, bounded parser.
 *
 * Steps. A schedule is written as the transform steps that describe what
 * kernels/kernels_lora.cu does with it (docs/records.md explains each one).
 * The steps are generated from the schedule by one function (gen_steps); the
 * parser reads the schedule's fields back from the few steps that carry them
 * (SP of v.i: rows; SP of v.k: split_k; SP of the warp-level K range: the
 * loads in flight, lanes and vector width; SP of the work items: warps; SP
 * of y.n: cols; CR v, CA of v at y's CTA (s) or row tile (i.0, cluster), or
 * CA of y at v: the sketch; AN tensorize: the tensor-core variant), then
 * regenerates the steps of that schedule and requires the record's steps to
 * be exactly those. So every accepted record describes its schedule
 * faithfully, any inconsistent step is refused with the step and what was
 * expected, and parse(write(r)) gives r back.
 *
 * JSON. Hand-written, no dependencies. The writer prints the shortest decimal
 * text that reads back to the same double. The parser builds a tree of at
 * most JSON_MAX_NODES values (nesting at most JSON_MAX_DEPTH, so its
 * recursion is bounded) with decoded strings in a fixed arena, inside one
 * allocation of fixed size; it checks the grammar strictly (RFC 8259, UTF-8
 * validated, no NUL in strings) and never reads past the given length.
 * Numbers are converted in the "C" locale whatever the process's locale.
 */
#define _POSIX_C_SOURCE 200809L
#include "search_record.h"

#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_NODES 1024
#define JSON_MAX_DEPTH 8
#define JSON_MAX_STRING 256  /* decoded bytes of one string */
#define JSON_STRING_ARENA 16384
#define MAX_STEPS 80

static const char *const op_names[] = {"apply", "shrink", "expand"};
static const char *const dtype_names[] = {NULL, "f16", "bf16"};
static const char *const weights_names[] = {"table", "arrays", "upload"};
static const char *const error_names[] = {"ok", "compile", "launch", "wrong_result", "timeout", "device", "unknown"};
static const char *const sketch_names[] = {NULL, "split", "fused", "counter", "cluster"};

#define say search_say

const char *search_error_name(int error_no)
{
    return error_no >= 0 && error_no < SEARCH_ERR_COUNT ? error_names[error_no] : NULL;
}

void search_record_init(search_record *r)
{
    memset(r, 0, sizeof *r);
    r->version = SEARCH_RECORD_VERSION;
    r->max_error = -1.0;
}

int search_target_tag(const search_target *t, char *buf, size_t len)
{
    return snprintf(buf, len, "sm_%d%d/%dsm/%lldKiB-L2/%dKiB-smem", (int)t->cc_major, (int)t->cc_minor,
                    (int)t->sm_count, (long long)(t->l2_bytes >> 10), (int)(t->smem_per_block >> 10));
}

/* ---- the "C" locale for number text --------------------------------------- */

typedef struct c_numeric {
    locale_t c, old;
} c_numeric;

static void c_numeric_enter(c_numeric *n)
{
    n->c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    n->old = n->c ? uselocale(n->c) : (locale_t)0;
}

static void c_numeric_leave(c_numeric *n)
{
    if (n->c) {
        uselocale(n->old);
        freelocale(n->c);
    }
}

/* ---- UTF-8 ----------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[0 .. n), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t k;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        k = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        k = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        k = 4, min = 0x10000;
    else
        return 0;
    if (n < k)
        return 0;
    unsigned cp = c & (0x7fu >> k);
    for (size_t i = 1; i < k; ++i) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

/* ---- checks ---------------------------------------------------------------- */

static bool in_range(int64_t v, int64_t lo, int64_t hi)
{
    return v >= lo && v <= hi;
}

static bool check_task(const search_task *t, char *why, size_t len)
{
    if (t->op > SEARCH_OP_EXPAND)
        return say(why, len, "task.op %u is not apply (0), shrink (1) or expand (2)", t->op), false;
    if (t->dtype != SEARCH_DTYPE_F16 && t->dtype != SEARCH_DTYPE_BF16)
        return say(why, len, "task.dtype %u is not f16 (1) or bf16 (2)", t->dtype), false;
    if (t->weights > SEARCH_WEIGHTS_UPLOAD)
        return say(why, len, "task.weights %u is not table (0), arrays (1) or upload (2)", t->weights), false;
    if (!in_range(t->num_slices, 1, SEARCH_MAX_SLICES))
        return say(why, len, "task.num_slices %u not in 1..%d", t->num_slices, SEARCH_MAX_SLICES), false;
    if (!in_range(t->d_in, 1, SEARCH_DIM_MAX))
        return say(why, len, "task.d_in %d not in 1..%d", (int)t->d_in, SEARCH_DIM_MAX), false;
    for (int i = 0; i < SEARCH_MAX_SLICES; ++i) {
        if (i < t->num_slices && !in_range(t->d_out[i], 1, SEARCH_DIM_MAX))
            return say(why, len, "task.d_out[%d] %d not in 1..%d", i, (int)t->d_out[i], SEARCH_DIM_MAX), false;
        if (i >= t->num_slices && t->d_out[i] != 0)
            return say(why, len, "task.d_out[%d] is %d past num_slices %u (must be 0)", i, (int)t->d_out[i],
                       t->num_slices),
                   false;
    }
    if (!in_range(t->max_rank, 1, 128))
        return say(why, len, "task.max_rank %d not in 1..128", (int)t->max_rank), false;
    const uint8_t lg[4] = {t->rows_log2, t->groups_log2, t->longest_log2, t->mean_log2};
    static const char *const lgn[4] = {"rows", "groups", "longest", "mean"};
    for (int i = 0; i < 4; ++i)
        if (lg[i] > 62)
            return say(why, len, "task layout class %s (log2) %u not in 0..62", lgn[i], lg[i]), false;
    if (t->none_quarters > 4)
        return say(why, len, "task layout class none (quarters) %u not in 0..4", t->none_quarters), false;
    if (t->ranks_differ > 1)
        return say(why, len, "task layout class rdiff %u not 0 or 1", t->ranks_differ), false;
    return true;
}

static bool check_target(const search_target *g, char *why, size_t len)
{
    size_t n = strnlen(g->name, sizeof g->name);
    if (n == sizeof g->name)
        return say(why, len, "target.name is not NUL-terminated within %d bytes", SEARCH_TARGET_NAME_MAX), false;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len((const unsigned char *)g->name + i, n - i);
        if (!k)
            return say(why, len, "target.name is not valid UTF-8 (byte %zu)", i), false;
        i += k;
    }
    if (!in_range(g->cc_major, 1, 99) || !in_range(g->cc_minor, 0, 9))
        return say(why, len, "target compute capability %d.%d not in 1..99 . 0..9", (int)g->cc_major,
                   (int)g->cc_minor),
               false;
    if (!in_range(g->sm_count, 1, 100000))
        return say(why, len, "target.sm_count %d not in 1..100000", (int)g->sm_count), false;
    if (!in_range(g->l2_bytes, 0, (int64_t)1 << 40) || g->l2_bytes % 1024)
        return say(why, len, "target.l2_bytes %lld is not a multiple of 1024 in 0..2^40", (long long)g->l2_bytes),
               false;
    if (!in_range(g->smem_per_block, 0, 1 << 30) || g->smem_per_block % 1024)
        return say(why, len, "target.smem_per_block %d is not a multiple of 1024 in 0..2^30",
                   (int)g->smem_per_block),
               false;
    return true;
}

static bool finite_in(double v, double lo, double hi)
{
    return isfinite(v) && v >= lo && v <= hi;
}

bool search_record_check(const search_record *r, char *why, size_t len)
{
    if (!r)
        return say(why, len, "record is NULL"), false;
    if (r->version != SEARCH_RECORD_VERSION)
        return say(why, len, "record version %d, this writer knows %d", (int)r->version, SEARCH_RECORD_VERSION),
               false;
    if (!check_task(&r->task, why, len) || !check_target(&r->target, why, len))
        return false;
    char sw[160];
    if (!search_schedule_legal(&r->sched, r->task.max_rank, sw, sizeof sw))
        return say(why, len, "schedule is illegal for max_rank %d: %s", (int)r->task.max_rank, sw), false;
    if (r->task.op != SEARCH_OP_APPLY && r->sched.sketch != SEARCH_SKETCH_SPLIT)
        return say(why, len, "a %s task runs the split sketch's kernels; the schedule's sketch is %s",
                   op_names[r->task.op], sketch_names[r->sched.sketch]),
               false;
    if (!in_range(r->ncosts, 0, SEARCH_RECORD_MAX_COSTS))
        return say(why, len, "ncosts %d not in 0..%d", (int)r->ncosts, SEARCH_RECORD_MAX_COSTS), false;
    for (int i = 0; i < SEARCH_RECORD_MAX_COSTS; ++i) {
        if (i < r->ncosts && !finite_in(r->costs_us[i], 0, 1e12))
            return say(why, len, "costs_us[%d] %g is not a finite time in 0..1e12 us", i, r->costs_us[i]), false;
        if (i >= r->ncosts && r->costs_us[i] != 0)
            return say(why, len, "costs_us[%d] is %g past ncosts %d (must be 0)", i, r->costs_us[i], (int)r->ncosts),
                   false;
    }
    if (!in_range(r->error_no, 0, SEARCH_ERR_COUNT - 1))
        return say(why, len, "error_no %d not in 0..%d", (int)r->error_no, SEARCH_ERR_COUNT - 1), false;
    if (!finite_in(r->all_cost_s, 0, 1e9))
        return say(why, len, "all_cost_s %g is not a finite time in 0..1e9 s", r->all_cost_s), false;
    if (!in_range(r->timestamp, 0, (int64_t)1 << 53))
        return say(why, len, "timestamp %lld not in 0..2^53", (long long)r->timestamp), false;
    const char *en = error_names[r->error_no];
    if (r->ran && !r->compiled)
        return say(why, len, "ran without having compiled"), false;
    if (r->matched && !r->ran)
        return say(why, len, "matched without having run"), false;
    if (r->matched != (r->error_no == SEARCH_ERR_OK))
        return say(why, len, "matched is %d with error_no %d (%s): matched exactly when error_no is 0 (ok)",
                   r->matched, (int)r->error_no, en),
               false;
    if (r->error_no == SEARCH_ERR_OK && r->ncosts < 1)
        return say(why, len, "error_no 0 (ok) needs at least one cost"), false;
    if (r->ncosts > 0 && !r->ran)
        return say(why, len, "costs without having run"), false;
    if (r->error_no == SEARCH_ERR_COMPILE && r->compiled)
        return say(why, len, "error_no 1 (compile) with compiled = 1"), false;
    if ((r->error_no == SEARCH_ERR_LAUNCH || r->error_no == SEARCH_ERR_DEVICE) && !r->compiled)
        return say(why, len, "error_no %d (%s) with compiled = 0", (int)r->error_no, en), false;
    if (r->error_no == SEARCH_ERR_LAUNCH && r->ran)
        return say(why, len, "error_no 2 (launch) with ran = 1"), false;
    if (r->error_no == SEARCH_ERR_WRONG_RESULT && !r->ran)
        return say(why, len, "error_no 3 (wrong_result) with ran = 0"), false;
    bool any_spill = false;
    for (int i = 0; i < SEARCH_ENTRY_COUNT; ++i) {
        if (!in_range(r->registers[i], 0, 255))
            return say(why, len, "registers[%d] %d not in 0..255", i, (int)r->registers[i]), false;
        if (!in_range(r->spill_bytes[i], 0, 1 << 30))
            return say(why, len, "spill_bytes[%d] %d not in 0..2^30", i, (int)r->spill_bytes[i]), false;
        if (!r->compiled && (r->registers[i] || r->spill_bytes[i]))
            return say(why, len, "registers and spill bytes must be 0 when the candidate did not compile"), false;
        any_spill |= r->spill_bytes[i] > 0;
    }
    if (r->spills != any_spill)
        return say(why, len, "spills is %d but the spill bytes say %d", r->spills, any_spill), false;
    double e = r->max_error;
    if (!(e == -1.0 || (isfinite(e) && e >= 0) || (isinf(e) && e > 0)))
        return say(why, len, "max_error %g is not -1 (not checked), a finite error >= 0 or +inf", e), false;
    if (!r->ran && e != -1.0)
        return say(why, len, "max_error %g without having run (must be -1)", e), false;
    if (r->matched && !(isfinite(e) && e >= 0))
        return say(why, len, "matched with max_error %g (must be the check's finite error)", e), false;
    return true;
}

/* ---- writer ---------------------------------------------------------------- */

typedef struct wbuf {
    char *p;
    size_t cap, n;
    bool bad;
} wbuf;

static void wput(wbuf *w, const char *s, size_t n)
{
    if (w->bad)
        return;
    if (n >= w->cap - w->n) {
        w->bad = true;
        return;
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
    w->p[w->n] = '\0';
}

static void ws(wbuf *w, const char *s)
{
    wput(w, s, strlen(s));
}

static void wvf(wbuf *w, const char *fmt, va_list ap)
{
    if (w->bad)
        return;
    size_t room = w->cap - w->n;
    int k = vsnprintf(w->p + w->n, room, fmt, ap);
    if (k < 0 || (size_t)k >= room) {
        w->bad = true;
        w->p[w->n] = '\0';
        return;
    }
    w->n += (size_t)k;
}

static void wf(wbuf *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wvf(w, fmt, ap);
    va_end(ap);
}

/* The shortest of %.15g, %.16g, %.17g that reads back as v (v finite). */
static void wdouble(wbuf *w, double v)
{
    char t[40];
    for (int prec = 15; prec <= 17; ++prec) {
        snprintf(t, sizeof t, "%.*g", prec, v);
        if (strtod(t, NULL) == v)
            break;
    }
    ws(w, t);
}

/* s[0 .. n) as a JSON string; bytes below 0x20 as \u00XX, UTF-8 as is. */
static void wstring_n(wbuf *w, const char *s, size_t n)
{
    wput(w, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\')
            ++j;
        wput(w, s + i, j - i);
        if (j == n)
            break;
        unsigned char c = (unsigned char)s[j];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            wput(w, e, 2);
        } else {
            wf(w, "\\u%04x", c);
        }
        i = j + 1;
    }
    wput(w, "\"", 1);
}

static void wstring(wbuf *w, const char *s)
{
    wstring_n(w, s, strlen(s));
}

/* ---- the steps ----------------------------------------------------------------- */

typedef struct stepgen {
    wbuf *w;
    int n;                      /* steps written */
    size_t start[MAX_STEPS], end[MAX_STEPS]; /* where each step is in w */
} stepgen;

/* Appends one step (a JSON array written by fmt) and returns its index. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int step(stepgen *g, const char *fmt, ...);

static int step(stepgen *g, const char *fmt, ...)
{
    if (g->n)
        ws(g->w, ",");
    if (g->n < MAX_STEPS)
        g->start[g->n] = g->w->n;
    va_list ap;
    va_start(ap, fmt);
    wvf(g->w, fmt, ap);
    va_end(ap);
    if (g->n < MAX_STEPS)
        g->end[g->n] = g->w->n;
    return g->n++;
}

/*
 * The steps of (t, s); s must be legal. Names: stages x, A, B, layout (the
 * inputs), x.f32/A.f32/B.f32 (their fp32 conversions), v (shrink: the fp32
 * intermediate) and y (expand); iterators of v: s (slice), i (row), r (rank),
 * k (d_in); of y: s, i, n (column), r. SP names its results <it>.0, <it>.1,
 * ...; FU names the fused iterator <a>@<b>. docs/records.md maps each step to
 * the kernel code. The CUDA-core (mma = 0) and tensor-core (mma = 1) variants
 * differ in how the innermost loops are split and executed.
 *
 * The cluster sketch computes v once per row tile and slice, at y's i.0 (y's
 * CTA loops run s, i.0, then the cluster's CTAs): k.0 (v) and n.0.1 (y) are
 * both bound to the CTA's rank in its cluster, the partials of k.0 meet
 * through distributed shared memory, and every CTA expands the column tiles
 * n.0.0 * S + its rank.
 */
static void gen_steps(wbuf *w, const search_task *t, const search_schedule *s, stepgen *g)
{
    const bool counter = s->sketch == SEARCH_SKETCH_FUSED_COUNTER, cluster = s->sketch == SEARCH_SKETCH_CLUSTER;
    const bool mma = s->mma != 0, staged = mma && s->stages > 1, persist = s->persist != 0;
    /* the intermediate goes through global memory, and v has a grid of its own */
    const bool global = s->sketch == SEARCH_SKETCH_SPLIT || counter;
    const bool split = global || cluster; /* d_in split over CTAs */
    const unsigned R = s->rows, W = s->warps, V = s->vec, S = s->split_k, C = s->cols;
    const unsigned U = mma ? s->kc / 16u : s->kc / (32u * s->vec); /* loads (mmas) in flight per K step */
    const long long D = t->d_in;
    const char *K = split ? "k.1" : "k";      /* the K range of one CTA */
    const char *KP = split ? "k.1.0" : "k.0"; /* its parts over warps */
    const char *KI = split ? "k.1.1" : "k.1"; /* one warp's part: steps x loads x (lanes x vector | mma K) */
    const char *RI = mma ? "r.0" : "r";       /* the rank (in n tiles of 8 for mma) */
    /* v's own CTA loops, outermost first, before its loops inside a CTA */
    const char *VB = global ? "\"i.0\",\"k.0\",\"s\"," : cluster ? "\"k.0\"," : "";
    char IT[16];                              /* work items (part, rank index or n tile) */
    snprintf(IT, sizeof IT, "%s@%s", KP, RI);
    g->w = w;
    g->n = 0;
    ws(w, "[");

    /* structure */
    if (counter)
        step(g, "[\"CA\",\"y\",\"v\",\"s\"]");
    else if (cluster)
        step(g, "[\"CA\",\"v\",\"y\",\"i.0\"]");
    else if (split)
        step(g, "[\"CR\",\"v\"]");
    else
        step(g, "[\"CA\",\"v\",\"y\",\"s\"]");
    step(g, "[\"CI\",\"x.f32\"]");
    step(g, "[\"CI\",\"A.f32\"]");
    step(g, "[\"CI\",\"B.f32\"]");
    step(g, "[\"CHR\",\"layout\",\"shared\",[\"v\",\"y\"],\"tile\"]");

    /* v (shrink): loops */
    int sp_rows = step(g, "[\"SP\",\"v\",\"i\",null,[%u],1]", R);
    if (split)
        step(g, "[\"SP\",\"v\",\"k\",%lld,[%u],0]", D, S);
    step(g, "[\"SP\",\"v\",\"%s\",%lld,[null],0]", K, split ? search_k_per_cta(D, mma, V, S) : D);
    int sp_k = mma ? step(g, "[\"SP\",\"v\",\"%s\",null,[%u,16],1]", KI, U)
                   : step(g, "[\"SP\",\"v\",\"%s\",null,[%u,32,%u],1]", KI, U, V);
    if (mma)
        step(g, "[\"SP\",\"v\",\"r\",null,[8],1]");
    step(g, "[\"FU\",\"v\",[\"%s\",\"%s\"]]", KP, RI);
    int sp_warps = step(g, "[\"SP\",\"v\",\"%s\",null,[%u],1]", IT, W);
    if (staged) /* the chunks of kc (the pipeline's stages) go round the whole CTA; the items split each chunk */
        step(g, "[\"RE\",\"v\",[%s\"%s.0\",\"%s.0\",\"%s.1\",\"%s.1\",\"i.1\",\"r.1\",\"%s.2\"]]", VB, KI, IT, IT, KI,
             KI);
    else if (mma)
        step(g, "[\"RE\",\"v\",[%s\"%s.0\",\"%s.1\",\"%s.0\",\"%s.1\",\"i.1\",\"r.1\",\"%s.2\"]]", VB, IT, IT, KI, KI,
             KI);
    else
        step(g, "[\"RE\",\"v\",[%s\"i.1\",\"%s.0\",\"%s.1\",\"%s.0\",\"%s.1\",\"%s.2\",\"%s.3\"]]", VB, IT, IT, KI,
             KI, KI, KI);
    step(g, "[\"PR\",\"v\",\"i.1\",\"group_by_adapter\"]");
    /* v: annotations */
    if (global && persist) {
        /* one loop over all CTA tiles, strided over the CTAs that fit on the device at once */
        step(g, "[\"FU\",\"v\",[\"i.0\",\"k.0\",\"s\"]]");
        step(g, "[\"AN\",\"v\",\"i.0@k.0@s\",\"persistent\"]");
    } else if (global) {
        step(g, "[\"AN\",\"v\",\"i.0\",\"blockIdx.x\"]");
        step(g, "[\"AN\",\"v\",\"k.0\",\"blockIdx.y\"]");
        step(g, "[\"AN\",\"v\",\"s\",\"blockIdx.z\"]");
    } else if (cluster) {
        step(g, "[\"AN\",\"v\",\"k.0\",\"cluster_ctarank\"]");
    }
    step(g, "[\"AN\",\"v\",\"%s.1\",\"warp\"]", IT);
    step(g, "[\"AN\",\"v\",\"%s.1\",\"unroll\"]", KI);
    if (mma) {
        step(g, "[\"AN\",\"v\",\"i.1\",\"tensorize\"]");
        step(g, "[\"PR\",\"v\",\"i.1\",\"mma.m16n8k16\"]");
        step(g, "[\"PR\",\"v\",\"%s.2\",\"pairs_if_aligned\"]", KI);
        if (staged)
            step(g, "[\"PR\",\"v\",\"%s.0\",\"software_pipeline$%u\"]", KI, (unsigned)s->stages);
    } else {
        step(g, "[\"AN\",\"v\",\"%s.2\",\"lane\"]", KI);
        step(g, "[\"AN\",\"v\",\"%s.3\",\"vectorize\"]", KI);
        step(g, "[\"PR\",\"v\",\"%s.3\",\"vector_if_aligned\"]", KI);
    }
    /* v: reductions */
    if (!mma)
        step(g, "[\"RF\",\"v\",\"%s.2\",32,\"shuffle\"]", KI);
    step(g, "[\"RF\",\"v\",\"%s\",null,\"atomic.shared\"]", KP);
    if (global)
        step(g, "[\"RF\",\"v\",\"k.0\",%u,\"atomic.global\"]", S);
    else if (cluster)
        step(g, "[\"RF\",\"v\",\"k.0\",%u,\"dsmem\"]", S);
    if (counter)
        step(g, "[\"PR\",\"v\",\"k.0\",\"completion_counter\"]");
    /* v: buffers */
    if (global)
        step(g, "[\"CHW\",\"v\",\"global\",\"v.fp32\"]");
    step(g, "[\"CHW\",\"v\",\"shared\",\"sv\"]");
    /* sv per CTA: v's own (global), the CTA of the cluster (k.0: its partial), or y's (fused) */
    step(g, "[\"CA\",\"sv\",\"%s\",\"%s\"]", global || cluster ? "v" : "y", cluster ? "k.0" : "s");
    step(g, "[\"CHW\",\"v\",\"local\",\"acc\"]");
    step(g, "[\"CA\",\"acc\",\"v\",\"%s.1\"]", IT);
    step(g, "[\"CHR\",\"A\",\"local\",[\"v\"],\"a\"]");
    step(g, "[\"CA\",\"a\",\"v\",\"%s.0\"]", KI);
    step(g, "[\"CHR\",\"x\",\"local\",[\"v\"],\"ux\"]");
    step(g, "[\"CA\",\"ux\",\"v\",\"%s.%d\"]", KI, mma ? 0 : 1);
    if (staged) {
        /* the cp.async ring: x's 16 rows and A's ranks, kc elements per stage, read by ldmatrix */
        step(g, "[\"CHR\",\"x\",\"shared\",[\"v\"],\"st.x\"]");
        step(g, "[\"CA\",\"st.x\",\"v\",\"%s.0\"]", KI);
        step(g, "[\"CHR\",\"A\",\"shared\",[\"v\"],\"st.a\"]");
        step(g, "[\"CA\",\"st.a\",\"v\",\"%s.0\"]", KI);
    }

    /* y (expand): loops */
    const char *YW = mma ? "n.1.0.1" : "n.1.1"; /* the iterator of a warp (mma) or a thread */
    step(g, "[\"FSP\",\"y\",\"i\",%d,1]", sp_rows);
    step(g, "[\"SP\",\"y\",\"n\",null,[%u],1]", C);
    if (cluster) /* column tiles interleaved over the cluster: n.0.1 its S CTAs, n.0.0 each one's serial loop */
        step(g, "[\"SP\",\"y\",\"n.0\",null,[%u],1]", S);
    /* the CTA loops: y's own grid, (counter) v's CTA with a serial loop over column tiles, or (cluster) the
     * clusters, their CTAs and each CTA's serial loop */
    const char *YB = counter   ? "\"i.0\",\"s\",\"n.0\""
                     : cluster ? "\"s\",\"i.0\",\"n.0.1\",\"n.0.0\""
                               : "\"i.0\",\"n.0\",\"s\"";
    if (mma) {
        step(g, "[\"SP\",\"y\",\"n.1\",null,[8],1]");
        step(g, "[\"FFSP\",\"y\",\"n.1.0\",[[%d,0]],1]", sp_warps);
        step(g, "[\"SP\",\"y\",\"r\",null,[16],1]");
        step(g, "[\"RE\",\"y\",[%s,\"n.1.0.0\",\"n.1.0.1\",\"r.0\",\"i.1\",\"n.1.1\",\"r.1\"]]", YB);
    } else {
        step(g, "[\"FFSP\",\"y\",\"n.1\",[[%d,0],[%d,1]],1]", sp_warps, sp_k);
        step(g, "[\"SP\",\"y\",\"r\",null,[8],1]");
        step(g, "[\"RE\",\"y\",[%s,\"i.1\",\"n.1.0\",\"n.1.1\",\"r.0\",\"r.1\"]]", YB);
    }
    step(g, "[\"PR\",\"y\",\"i.1\",\"group_by_adapter\"]");
    /* y: annotations */
    if (cluster) {
        step(g, "[\"AN\",\"y\",\"i.0\",\"clusterid.x\"]");
        step(g, "[\"AN\",\"y\",\"s\",\"clusterid.y\"]");
        step(g, "[\"AN\",\"y\",\"n.0.1\",\"cluster_ctarank\"]");
        step(g, "[\"PR\",\"y\",\"n.0.0\",\"prefetch_l2\"]");
    } else if (!counter && persist) {
        step(g, "[\"FU\",\"y\",[\"i.0\",\"n.0\",\"s\"]]");
        step(g, "[\"AN\",\"y\",\"i.0@n.0@s\",\"persistent\"]");
    } else if (!counter) {
        step(g, "[\"AN\",\"y\",\"i.0\",\"blockIdx.x\"]");
        step(g, "[\"AN\",\"y\",\"n.0\",\"blockIdx.y\"]");
        step(g, "[\"PR\",\"y\",\"n.0\",\"grid_stride\"]");
        step(g, "[\"AN\",\"y\",\"s\",\"blockIdx.z\"]");
    }
    if (mma) {
        step(g, "[\"AN\",\"y\",\"n.1.0.1\",\"warp\"]");
        step(g, "[\"AN\",\"y\",\"i.1\",\"tensorize\"]");
        step(g, "[\"PR\",\"y\",\"i.1\",\"mma.m16n8k16\"]");
        step(g, "[\"PR\",\"y\",\"r.1\",\"split_hi_lo\"]");
        step(g, "[\"PR\",\"y\",\"r.1\",\"pairs_if_aligned\"]");
    } else {
        step(g, "[\"AN\",\"y\",\"n.1.1\",\"thread\"]");
        step(g, "[\"PR\",\"y\",\"r.0\",\"unroll$4\"]");
        step(g, "[\"AN\",\"y\",\"r.1\",\"vectorize\"]");
        step(g, "[\"PR\",\"y\",\"r.1\",\"vector_if_aligned\"]");
    }
    /* y: buffers */
    if (global) {
        step(g, "[\"CHR\",\"v.fp32\",\"shared\",[\"y\"],\"sv.y\"]");
        step(g, "[\"CA\",\"sv.y\",\"y\",\"s\"]");
    } else if (cluster) { /* each CTA's copy of the cluster's sum, added up from the peers' sv */
        step(g, "[\"CHR\",\"sv\",\"shared\",[\"y\"],\"sfull\"]");
        step(g, "[\"CA\",\"sfull\",\"y\",\"n.0.1\"]");
    }
    step(g, "[\"CHW\",\"y\",\"local\",\"acc.y\"]");
    step(g, "[\"CA\",\"acc.y\",\"y\",\"%s\"]", YW);
    step(g, "[\"CHR\",\"y\",\"local\",[\"y\"],\"yv\"]");
    step(g, "[\"CA\",\"yv\",\"y\",\"%s\"]", YW);
    step(g, "[\"CHR\",\"B\",\"local\",[\"y\"],\"b\"]");
    step(g, "[\"CA\",\"b\",\"y\",\"r.0\"]");
    if (mma) {
        step(g, "[\"CHR\",\"%s\",\"local\",[\"y\"],\"vf\"]", global ? "sv.y" : cluster ? "sfull" : "sv");
        step(g, "[\"CA\",\"vf\",\"y\",\"r.0\"]");
    }
    ws(w, "]");
}

int search_record_steps(const search_task *t, const search_schedule *s, char *buf, size_t len)
{
    if (!t || !s || !buf || !len || !check_task(t, NULL, 0) || !search_schedule_legal(s, t->max_rank, NULL, 0))
        return -1;
    wbuf w = {buf, len, 0, false};
    stepgen g;
    buf[0] = '\0';
    gen_steps(&w, t, s, &g);
    return w.bad ? -1 : (int)w.n;
}

int search_record_write(const search_record *r, char *buf, size_t len)
{
    if (!buf || !len)
        return -1;
    buf[0] = '\0';
    if (!search_record_check(r, NULL, 0))
        return -1;
    c_numeric cn;
    c_numeric_enter(&cn);
    wbuf w = {buf, len, 0, false};
    const search_task *t = &r->task;
    wf(&w, "{\"i\":[[\"%s\",\"%s\",%d,[", op_names[t->op], dtype_names[t->dtype], (int)t->d_in);
    for (int i = 0; i < t->num_slices; ++i)
        wf(&w, "%s%d", i ? "," : "", (int)t->d_out[i]);
    wf(&w, "],%d,\"%s\",{\"rows\":%u,\"groups\":%u,\"longest\":%u,\"mean\":%u,\"none\":%u,\"rdiff\":%u}],",
       (int)t->max_rank, weights_names[t->weights], t->rows_log2, t->groups_log2, t->longest_log2, t->mean_log2,
       t->none_quarters, t->ranks_differ);
    char tag[128];
    search_target_tag(&r->target, tag, sizeof tag);
    wstring(&w, tag);
    ws(&w, ",");
    stepgen g;
    gen_steps(&w, t, &r->sched, &g);
    ws(&w, "],\"r\":[[");
    for (int i = 0; i < r->ncosts; ++i) {
        if (i)
            ws(&w, ",");
        wdouble(&w, r->costs_us[i]);
    }
    wf(&w, "],%d,", (int)r->error_no);
    wdouble(&w, r->all_cost_s);
    wf(&w, ",%lld],\"v\":%d,\"x\":{\"compiled\":%d,\"ran\":%d,\"matched\":%d,\"spills\":%d,\"regs\":[",
       (long long)r->timestamp, (int)r->version, r->compiled, r->ran, r->matched, r->spills);
    for (int i = 0; i < SEARCH_ENTRY_COUNT; ++i)
        wf(&w, "%s%d", i ? "," : "", (int)r->registers[i]);
    ws(&w, "],\"spill\":[");
    for (int i = 0; i < SEARCH_ENTRY_COUNT; ++i)
        wf(&w, "%s%d", i ? "," : "", (int)r->spill_bytes[i]);
    ws(&w, "],\"err\":");
    if (r->max_error == -1.0)
        ws(&w, "null");
    else if (isinf(r->max_error))
        ws(&w, "\"inf\"");
    else
        wdouble(&w, r->max_error);
    ws(&w, ",\"gpu\":");
    wstring(&w, r->target.name);
    char sched[96];
    search_schedule_format(&r->sched, sched, sizeof sched);
    ws(&w, ",\"sched\":");
    wstring(&w, sched);
    ws(&w, "}}");
    c_numeric_leave(&cn);
    if (w.bad) {
        buf[0] = '\0';
        return -1;
    }
    return (int)w.n;
}

/* ---- JSON reader ------------------------------------------------------------ */

enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };
static const char *const jtype_names[] = {"null", "false", "true", "a number", "a string", "an array", "an object"};

typedef struct jnode {
    uint8_t type;
    uint8_t is_int; /* a number written without fraction or exponent */
    uint8_t big;    /* ... and outside int64 */
    int32_t next;   /* next sibling, -1 */
    int32_t child;  /* first element or member, -1 */
    int32_t count;  /* elements or members */
    int32_t str, len;   /* J_STR: decoded bytes in the arena */
    int32_t key, klen;  /* member of an object: its key in the arena; else -1 */
    int32_t pos;    /* byte offset in the input */
    int64_t i;
    double d;
} jnode;

typedef struct jdoc {
    const unsigned char *src;
    size_t len, pos;
    int n, sn;
    char *why;
    size_t why_len;
    bool failed;
    jnode nodes[JSON_MAX_NODES];
    char strs[JSON_STRING_ARENA];
} jdoc;

static bool jfail(jdoc *d, const char *fmt, ...)
{
    if (!d->failed && d->why && d->why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->why, d->why_len, fmt, ap);
        va_end(ap);
    }
    d->failed = true;
    return false;
}

static void jskip(jdoc *d)
{
    while (d->pos < d->len) {
        unsigned char c = d->src[d->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        d->pos++;
    }
}

static int jnew(jdoc *d, int type)
{
    if (d->n >= JSON_MAX_NODES) {
        jfail(d, "byte %zu: more than %d values", d->pos, JSON_MAX_NODES);
        return -1;
    }
    jnode *x = &d->nodes[d->n];
    memset(x, 0, sizeof *x);
    x->type = (uint8_t)type;
    x->next = x->child = x->key = -1;
    x->pos = (int32_t)d->pos;
    return d->n++;
}

static bool jstr_put(jdoc *d, const char *p, size_t n, size_t start)
{
    if ((size_t)d->sn - start + n > JSON_MAX_STRING)
        return jfail(d, "byte %zu: string longer than %d bytes", d->pos, JSON_MAX_STRING);
    if (n > (size_t)(JSON_STRING_ARENA - d->sn))
        return jfail(d, "byte %zu: more than %d bytes of strings", d->pos, JSON_STRING_ARENA);
    memcpy(d->strs + d->sn, p, n);
    d->sn += (int)n;
    return true;
}

static int jhex4(jdoc *d, size_t at)
{
    if (d->len - at < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; ++i) {
        unsigned char c = d->src[at + (size_t)i];
        int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* A string at d->pos (the opening quote); its decoded bytes go to the arena. */
static bool jstring(jdoc *d, int32_t *off, int32_t *len)
{
    size_t start = (size_t)d->sn, open = d->pos;
    d->pos++;
    for (;;) {
        if (d->pos >= d->len)
            return jfail(d, "byte %zu: string not closed", open);
        size_t run = d->pos; /* plain ASCII: copied as one piece */
        while (run < d->len && d->src[run] >= 0x20 && d->src[run] < 0x80 && d->src[run] != '"' &&
               d->src[run] != '\\')
            run++;
        if (run > d->pos) {
            if (!jstr_put(d, (const char *)d->src + d->pos, run - d->pos, start))
                return false;
            d->pos = run;
            continue;
        }
        unsigned char c = d->src[d->pos];
        if (c == '"') {
            d->pos++;
            break;
        }
        if (c < 0x20)
            return jfail(d, "byte %zu: control character 0x%02x in a string", d->pos, c);
        if (c == '\\') {
            if (d->len - d->pos < 2)
                return jfail(d, "byte %zu: string not closed", open);
            unsigned char e = d->src[d->pos + 1];
            const char *map = "\"\"\\\\//b\bf\fn\nr\rt\t";
            const char *m = NULL;
            for (const char *q = map; *q; q += 2)
                if ((unsigned char)q[0] == e)
                    m = q + 1;
            if (m) {
                if (!jstr_put(d, m, 1, start))
                    return false;
                d->pos += 2;
                continue;
            }
            if (e != 'u')
                return jfail(d, "byte %zu: unknown escape \\%c", d->pos, e >= 0x20 && e < 0x7f ? e : '?');
            int cp = jhex4(d, d->pos + 2);
            if (cp < 0)
                return jfail(d, "byte %zu: \\u needs four hex digits", d->pos);
            d->pos += 6;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return jfail(d, "byte %zu: lone low surrogate \\u%04x", d->pos - 6, cp);
            if (cp >= 0xd800 && cp <= 0xdbff) {
                int lo = d->len - d->pos >= 6 && d->src[d->pos] == '\\' && d->src[d->pos + 1] == 'u'
                             ? jhex4(d, d->pos + 2)
                             : -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return jfail(d, "byte %zu: high surrogate \\u%04x without its low half", d->pos - 6, cp);
                d->pos += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0)
                return jfail(d, "byte %zu: NUL (\\u0000) in a string", d->pos - 6);
            char u[4];
            size_t k;
            if (cp < 0x80)
                u[0] = (char)cp, k = 1;
            else if (cp < 0x800)
                u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), k = 2;
            else if (cp < 0x10000)
                u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3f)), u[2] = (char)(0x80 | (cp & 0x3f)),
                k = 3;
            else
                u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3f)),
                u[2] = (char)(0x80 | (cp >> 6 & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), k = 4;
            if (!jstr_put(d, u, k, start))
                return false;
            continue;
        }
        size_t k = utf8_len(d->src + d->pos, d->len - d->pos);
        if (!k)
            return jfail(d, "byte %zu: invalid UTF-8 in a string", d->pos);
        if (!jstr_put(d, (const char *)d->src + d->pos, k, start))
            return false;
        d->pos += k;
    }
    *off = (int32_t)start;
    *len = (int32_t)((size_t)d->sn - start);
    return true;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool jnumber(jdoc *d, jnode *x)
{
    size_t s = d->pos, p = d->pos;
    const unsigned char *c = d->src;
    bool neg = false, frac = false, exp = false;
    if (p < d->len && c[p] == '-')
        neg = true, p++;
    if (p < d->len && c[p] == '0')
        p++;
    else if (p < d->len && c[p] >= '1' && c[p] <= '9')
        while (p < d->len && is_digit(c[p]))
            p++;
    else
        return jfail(d, "byte %zu: bad number", s);
    if (p < d->len && c[p] == '.') {
        frac = true;
        p++;
        if (p >= d->len || !is_digit(c[p]))
            return jfail(d, "byte %zu: bad number (no digit after '.')", s);
        while (p < d->len && is_digit(c[p]))
            p++;
    }
    if (p < d->len && (c[p] == 'e' || c[p] == 'E')) {
        exp = true;
        p++;
        if (p < d->len && (c[p] == '+' || c[p] == '-'))
            p++;
        if (p >= d->len || !is_digit(c[p]))
            return jfail(d, "byte %zu: bad number (no digit in the exponent)", s);
        while (p < d->len && is_digit(c[p]))
            p++;
    }
    if (p - s > 40)
        return jfail(d, "byte %zu: number longer than 40 characters", s);
    char t[48];
    memcpy(t, c + s, p - s);
    t[p - s] = '\0';
    if (!frac && !exp && p - s <= 15) {
        /* a short integer: exact as a double, no strtod */
        int64_t v = 0;
        for (size_t i = s + (neg ? 1 : 0); i < p; ++i)
            v = v * 10 + (c[i] - '0');
        x->is_int = 1;
        x->i = neg ? -v : v;
        x->d = (double)x->i;
        if (neg && v == 0)
            x->d = -0.0;
        d->pos = p;
        return true;
    }
    x->d = strtod(t, NULL);
    if (!isfinite(x->d))
        return jfail(d, "byte %zu: number %s out of range", s, t);
    if (!frac && !exp) {
        x->is_int = 1;
        uint64_t v = 0;
        for (size_t i = s + (neg ? 1 : 0); i < p; ++i) {
            unsigned dg = (unsigned)(c[i] - '0');
            if (v > (UINT64_C(9223372036854775807) - dg) / 10) {
                x->big = 1;
                break;
            }
            v = v * 10 + dg;
        }
        x->i = neg ? -(int64_t)v : (int64_t)v;
    }
    d->pos = p;
    return true;
}

static int jvalue(jdoc *d, int depth);

static bool jliteral(jdoc *d, const char *word)
{
    size_t n = strlen(word);
    if (d->len - d->pos < n || memcmp(d->src + d->pos, word, n) != 0)
        return jfail(d, "byte %zu: unexpected character", d->pos);
    d->pos += n;
    return true;
}

static int jvalue(jdoc *d, int depth)
{
    jskip(d);
    if (d->pos >= d->len) {
        jfail(d, "byte %zu: unexpected end (a value was expected)", d->pos);
        return -1;
    }
    unsigned char c = d->src[d->pos];
    int id;
    if (c == '{' || c == '[') {
        if (depth >= JSON_MAX_DEPTH) {
            jfail(d, "byte %zu: nested deeper than %d", d->pos, JSON_MAX_DEPTH);
            return -1;
        }
        bool obj = c == '{';
        unsigned char close = obj ? '}' : ']';
        if ((id = jnew(d, obj ? J_OBJ : J_ARR)) < 0)
            return -1;
        d->pos++;
        jskip(d);
        if (d->pos < d->len && d->src[d->pos] == close) {
            d->pos++;
            return id;
        }
        int last = -1;
        for (;;) {
            int32_t koff = -1, klen = 0;
            if (obj) {
                jskip(d);
                if (d->pos >= d->len || d->src[d->pos] != '"') {
                    jfail(d, "byte %zu: a member name (string) was expected", d->pos);
                    return -1;
                }
                if (!jstring(d, &koff, &klen))
                    return -1;
                jskip(d);
                if (d->pos >= d->len || d->src[d->pos] != ':') {
                    jfail(d, "byte %zu: ':' was expected", d->pos);
                    return -1;
                }
                d->pos++;
            }
            int v = jvalue(d, depth + 1);
            if (v < 0)
                return -1;
            d->nodes[v].key = koff;
            d->nodes[v].klen = klen;
            if (last < 0)
                d->nodes[id].child = v;
            else
                d->nodes[last].next = v;
            last = v;
            d->nodes[id].count++;
            jskip(d);
            if (d->pos >= d->len) {
                jfail(d, "byte %zu: unexpected end (',' or '%c' was expected)", d->pos, close);
                return -1;
            }
            if (d->src[d->pos] == ',') {
                d->pos++;
                continue;
            }
            if (d->src[d->pos] == close) {
                d->pos++;
                return id;
            }
            jfail(d, "byte %zu: ',' or '%c' was expected", d->pos, close);
            return -1;
        }
    }
    if (c == '"') {
        if ((id = jnew(d, J_STR)) < 0)
            return -1;
        int32_t off, len;
        if (!jstring(d, &off, &len))
            return -1;
        d->nodes[id].str = off;
        d->nodes[id].len = len;
        return id;
    }
    if (c == '-' || is_digit(c)) {
        if ((id = jnew(d, J_NUM)) < 0 || !jnumber(d, &d->nodes[id]))
            return -1;
        return id;
    }
    const char *word = c == 't' ? "true" : c == 'f' ? "false" : c == 'n' ? "null" : NULL;
    if (!word) {
        jfail(d, "byte %zu: unexpected character", d->pos);
        return -1;
    }
    if ((id = jnew(d, c == 't' ? J_TRUE : c == 'f' ? J_FALSE : J_NULL)) < 0 || !jliteral(d, word))
        return -1;
    return id;
}

/* Parses src[0 .. len) as one JSON value with nothing but whitespace after. */
static int jparse(jdoc *d, const char *src, size_t len)
{
    d->src = (const unsigned char *)src;
    d->len = len;
    d->pos = 0;
    d->n = d->sn = 0;
    d->failed = false;
    int root = jvalue(d, 0);
    if (root < 0)
        return -1;
    jskip(d);
    if (d->pos != d->len) {
        jfail(d, "byte %zu: trailing bytes after the record", d->pos);
        return -1;
    }
    return root;
}

/* Writes the value id back as compact JSON (for messages). */
static void jdump(const jdoc *d, int id, wbuf *w, int depth)
{
    const jnode *x = &d->nodes[id];
    switch (x->type) {
    case J_NULL:
        wput(w, "null", 4);
        break;
    case J_FALSE:
        ws(w, "false");
        break;
    case J_TRUE:
        ws(w, "true");
        break;
    case J_NUM:
        if (x->is_int && !x->big) {
            char t[24], *q = t + sizeof t;
            uint64_t u = x->i < 0 ? 0 - (uint64_t)x->i : (uint64_t)x->i;
            do
                *--q = (char)('0' + u % 10);
            while (u /= 10);
            if (x->i < 0)
                *--q = '-';
            wput(w, q, (size_t)(t + sizeof t - q));
        } else
            wf(w, "%.17g", x->d);
        break;
    case J_STR:
        wstring_n(w, d->strs + x->str, (size_t)x->len);
        break;
    default:
        wput(w, x->type == J_ARR ? "[" : "{", 1);
        if (depth >= JSON_MAX_DEPTH) {
            wput(w, "...", 3);
        } else {
            for (int c = x->child; c >= 0; c = d->nodes[c].next) {
                if (c != x->child)
                    wput(w, ",", 1);
                jdump(d, c, w, depth + 1);
            }
        }
        wput(w, x->type == J_ARR ? "]" : "}", 1);
    }
}

/* ---- typed access ----------------------------------------------------------- */

static const jnode *jn(const jdoc *d, int id)
{
    return &d->nodes[id];
}

/* The i-th element of array id. */
static int jat(const jdoc *d, int id, int i)
{
    int c = jn(d, id)->child;
    while (i-- > 0 && c >= 0)
        c = jn(d, c)->next;
    return c;
}

static bool jstreq(const jdoc *d, int id, const char *s)
{
    const jnode *x = jn(d, id);
    size_t n = strlen(s);
    return x->type == J_STR && (size_t)x->len == n && memcmp(d->strs + x->str, s, n) == 0;
}

/* Copies string id into out (NUL-terminated; the arena's strings are short). */
static void jcopy(const jdoc *d, int id, char *out, size_t cap)
{
    const jnode *x = jn(d, id);
    size_t n = (size_t)x->len < cap - 1 ? (size_t)x->len : cap - 1;
    memcpy(out, d->strs + x->str, n);
    out[n] = '\0';
}

static bool want_type(jdoc *d, int id, int type, const char *what)
{
    if (jn(d, id)->type != type)
        return jfail(d, "%s: %s was expected, found %s (byte %d)", what, jtype_names[type],
                     jtype_names[jn(d, id)->type], (int)jn(d, id)->pos);
    return true;
}

static bool want_arr(jdoc *d, int id, int lo, int hi, const char *what)
{
    if (!want_type(d, id, J_ARR, what))
        return false;
    int n = jn(d, id)->count;
    if (n < lo || n > hi) {
        if (lo == hi)
            return jfail(d, "%s: %d elements, %d were expected", what, n, lo);
        return jfail(d, "%s: %d elements, %d..%d were expected", what, n, lo, hi);
    }
    return true;
}

static bool want_int(jdoc *d, int id, int64_t lo, int64_t hi, int64_t *out, const char *what)
{
    const jnode *x = jn(d, id);
    if (x->type != J_NUM || !x->is_int)
        return jfail(d, "%s: an integer was expected, found %s (byte %d)", what,
                     x->type == J_NUM ? "a fraction" : jtype_names[x->type], (int)x->pos);
    if (x->big || x->i < lo || x->i > hi)
        return jfail(d, "%s: %.17g not in %lld..%lld", what, x->d, (long long)lo, (long long)hi);
    *out = x->i;
    return true;
}

static bool want_num(jdoc *d, int id, double *out, const char *what)
{
    if (!want_type(d, id, J_NUM, what))
        return false;
    *out = jn(d, id)->d;
    return true;
}

/* The index of one of names[0 .. n) that string id equals. */
static bool want_name(jdoc *d, int id, const char *const *names, int n, int *out, const char *what)
{
    if (!want_type(d, id, J_STR, what))
        return false;
    for (int i = 0; i < n; ++i) {
        if (names[i] && jstreq(d, id, names[i])) {
            *out = i;
            return true;
        }
    }
    char t[64];
    jcopy(d, id, t, sizeof t);
    return jfail(d, "%s: unknown value \"%s\"", what, t);
}

/*
 * Splits object id into its members named keys[0 .. n): all must be present,
 * once each, and nothing else. out[k] is the member's value.
 */
static bool want_members(jdoc *d, int id, const char *const *keys, int n, int *out, const char *what)
{
    if (!want_type(d, id, J_OBJ, what))
        return false;
    for (int k = 0; k < n; ++k)
        out[k] = -1;
    for (int c = jn(d, id)->child; c >= 0; c = jn(d, c)->next) {
        const jnode *m = jn(d, c);
        int k = 0;
        while (k < n && !(strlen(keys[k]) == (size_t)m->klen && memcmp(d->strs + m->key, keys[k], (size_t)m->klen) == 0))
            ++k;
        char t[64];
        size_t tl = (size_t)m->klen < sizeof t - 1 ? (size_t)m->klen : sizeof t - 1;
        memcpy(t, d->strs + m->key, tl);
        t[tl] = '\0';
        if (k == n)
            return jfail(d, "%s: unknown member \"%s\"", what, t);
        if (out[k] >= 0)
            return jfail(d, "%s: member \"%s\" appears twice", what, t);
        out[k] = c;
    }
    for (int k = 0; k < n; ++k)
        if (out[k] < 0)
            return jfail(d, "%s: member \"%s\" is missing", what, keys[k]);
    return true;
}

/* ---- steps: shape of each kind ---------------------------------------------- */

enum { A_STR, A_INT, A_INTN, A_BIT, A_STRS, A_INTNS, A_PAIRS };

typedef struct step_kind {
    const char *name;
    int nargs;
    uint8_t args[5];
} step_kind;

static const step_kind step_kinds[] = {
    {"SP", 5, {A_STR, A_STR, A_INTN, A_INTNS, A_BIT}},  /* stage, iterator, extent, lengths, inner_to_outer */
    {"FSP", 4, {A_STR, A_STR, A_INT, A_INT}},           /* stage, iterator, source step, n_split */
    {"FFSP", 4, {A_STR, A_STR, A_PAIRS, A_BIT}},        /* stage, iterator, [[step, level]...], factor (1) or nparts */
    {"RE", 2, {A_STR, A_STRS}},                         /* stage, order */
    {"FU", 2, {A_STR, A_STRS}},                         /* stage, iterators */
    {"AN", 3, {A_STR, A_STR, A_STR}},                   /* stage, iterator, annotation */
    {"PR", 3, {A_STR, A_STR, A_STR}},                   /* stage, iterator, pragma */
    {"SA", 4, {A_STR, A_STR, A_INT, A_INT}},            /* stage, iterator, factor, offset */
    {"CA", 3, {A_STR, A_STR, A_STR}},                   /* stage, target stage, target iterator */
    {"CI", 1, {A_STR}},                                 /* stage */
    {"CR", 1, {A_STR}},                                 /* stage */
    {"CHR", 4, {A_STR, A_STR, A_STRS, A_STR}},          /* source, scope, readers, buffer */
    {"CHW", 3, {A_STR, A_STR, A_STR}},                  /* stage, scope, buffer */
    {"RF", 4, {A_STR, A_STR, A_INTN, A_STR}},           /* stage, iterator, parts, combine */
};
#define NUM_STEP_KINDS ((int)(sizeof step_kinds / sizeof step_kinds[0]))

/* Whether value v has the shape of argument type t (no message). */
static bool arg_ok(const jdoc *d, int v, int t, int index)
{
    const jnode *x = jn(d, v);
    switch (t) {
    case A_STR:
        return x->type == J_STR;
    case A_INT:
        return x->type == J_NUM && x->is_int && !x->big && in_range(x->i, 0, 1 << 30);
    case A_INTN:
        return x->type == J_NULL || (x->type == J_NUM && x->is_int && !x->big && in_range(x->i, 0, (int64_t)1 << 40));
    case A_BIT:
        return x->type == J_NUM && x->is_int && !x->big && in_range(x->i, 0, 1);
    case A_STRS:
        if (x->type != J_ARR || !in_range(x->count, 1, 16))
            return false;
        for (int c = x->child; c >= 0; c = jn(d, c)->next)
            if (jn(d, c)->type != J_STR)
                return false;
        return true;
    case A_INTNS:
        if (x->type != J_ARR || !in_range(x->count, 1, 8))
            return false;
        for (int c = x->child; c >= 0; c = jn(d, c)->next)
            if (jn(d, c)->type != J_NULL && !arg_ok(d, c, A_INT, index))
                return false;
        return true;
    case A_PAIRS:
        if (x->type != J_ARR || !in_range(x->count, 1, 8))
            return false;
        for (int c = x->child; c >= 0; c = jn(d, c)->next) {
            const jnode *p = jn(d, c);
            if (p->type != J_ARR || p->count != 2)
                return false;
            int s0 = p->child, s1 = jn(d, s0)->next;
            if (!arg_ok(d, s0, A_INT, index) || jn(d, s0)->i >= index || !arg_ok(d, s1, A_INT, index) ||
                jn(d, s1)->i > 7)
                return false;
        }
        return true;
    }
    return false;
}

/* The message for argument v of type t that arg_ok refused. */
static bool arg_fail(jdoc *d, int v, int t, int index, const char *what)
{
    const jnode *x = jn(d, v);
    int64_t iv;
    switch (t) {
    case A_STR:
        return want_type(d, v, J_STR, what);
    case A_INT:
        return want_int(d, v, 0, 1 << 30, &iv, what);
    case A_INTN:
        return jfail(d, "%s: null or an integer in 0..2^40 was expected (byte %d)", what, (int)x->pos);
    case A_BIT:
        return want_int(d, v, 0, 1, &iv, what);
    case A_STRS:
        if (!want_arr(d, v, 1, 16, what))
            return false;
        for (int c = x->child; c >= 0; c = jn(d, c)->next)
            if (!want_type(d, c, J_STR, what))
                return false;
        return jfail(d, "%s: a list of strings was expected (byte %d)", what, (int)x->pos);
    case A_INTNS:
        if (!want_arr(d, v, 1, 8, what))
            return false;
        for (int c = x->child; c >= 0; c = jn(d, c)->next)
            if (jn(d, c)->type != J_NULL && !want_int(d, c, 0, 1 << 30, &iv, what))
                return false;
        return jfail(d, "%s: a list of integers in 0..2^30 or null was expected (byte %d)", what, (int)x->pos);
    default:
        if (!want_arr(d, v, 1, 8, what))
            return false;
        return jfail(d, "%s: a list of [earlier step, level 0..7] pairs was expected (byte %d, step %d)", what,
                     (int)x->pos, index);
    }
}

static bool check_step_shape(jdoc *d, int id, int index)
{
    const jnode *x = jn(d, id);
    char what[64];
    if (x->type != J_ARR || x->count < 1 || jn(d, x->child)->type != J_STR) {
        snprintf(what, sizeof what, "step %d", index);
        if (!want_arr(d, id, 1, 8, what))
            return false;
        return want_type(d, x->child, J_STR, what);
    }
    int kind = 0;
    while (kind < NUM_STEP_KINDS && !jstreq(d, x->child, step_kinds[kind].name))
        ++kind;
    if (kind == NUM_STEP_KINDS) {
        char t[64];
        jcopy(d, x->child, t, sizeof t);
        return jfail(d, "step %d: unknown step kind \"%s\"", index, t);
    }
    const step_kind *sk = &step_kinds[kind];
    if (x->count != sk->nargs + 1) {
        snprintf(what, sizeof what, "step %d (%s)", index, sk->name);
        return want_arr(d, id, sk->nargs + 1, sk->nargs + 1, what);
    }
    int a = 0;
    for (int v = jn(d, x->child)->next; v >= 0; v = jn(d, v)->next, ++a) {
        if (!arg_ok(d, v, sk->args[a], index)) {
            snprintf(what, sizeof what, "step %d (%s) argument %d", index, sk->name, a + 1);
            return arg_fail(d, v, sk->args[a], index, what);
        }
    }
    return true;
}

/* The SP steps that carry schedule fields, found in one pass (first of each). */
enum {
    SPF_ROWS, SPF_SPLIT, SPF_K_FUSED, SPF_K_SPLIT, SPF_IT_FUSED, SPF_IT_SPLIT, SPF_IT_FUSED_MMA, SPF_IT_SPLIT_MMA,
    SPF_COLS, SPF_COUNT
};
static const char *const spf_stage[SPF_COUNT] = {"v", "v", "v", "v", "v", "v", "v", "v", "y"};
static const char *const spf_iter[SPF_COUNT] = {"i", "k", "k.1", "k.1.1", "k.0@r", "k.1.0@r", "k.0@r.0", "k.1.0@r.0",
                                                "n"};

/* lengths[at] of SP step s (field f), in lo..hi. */
static bool sp_length(jdoc *d, const int *sp, int f, int nlen, int at, int64_t lo, int64_t hi, const char *field,
                      int64_t *out)
{
    if (sp[f] < 0)
        return jfail(d, "steps: no [\"SP\",\"%s\",\"%s\",...] step, which gives %s", spf_stage[f], spf_iter[f],
                     field);
    int lens = jat(d, sp[f], 4);
    if (jn(d, lens)->count == nlen) {
        const jnode *x = jn(d, jat(d, lens, at));
        if (x->type == J_NUM && x->is_int && !x->big && in_range(x->i, lo, hi)) {
            *out = x->i;
            return true;
        }
    }
    char what[96];
    snprintf(what, sizeof what, "[\"SP\",\"%s\",\"%s\",...] (%s)", spf_stage[f], spf_iter[f], field);
    return want_arr(d, lens, nlen, nlen, what) && want_int(d, jat(d, lens, at), lo, hi, out, what);
}

/* The schedule the steps describe (their consistency is checked by the caller). */
static bool steps_schedule(jdoc *d, int steps, search_schedule *s)
{
    bool split = false, fused = false, counter = false, cluster = false, mma = false, persist = false;
    int stages = 1;
    int sp[SPF_COUNT];
    for (int f = 0; f < SPF_COUNT; ++f)
        sp[f] = -1;
    for (int c = jn(d, steps)->child; c >= 0; c = jn(d, c)->next) {
        int k = jn(d, c)->child, a1 = jn(d, k)->next; /* every step has a kind and a first argument */
        if (jstreq(d, k, "SP")) {
            int a2 = jn(d, a1)->next;
            for (int f = 0; f < SPF_COUNT; ++f)
                if (sp[f] < 0 && jstreq(d, a1, spf_stage[f]) && jstreq(d, a2, spf_iter[f]))
                    sp[f] = c;
        } else if (jstreq(d, k, "AN")) {
            int a2 = jn(d, a1)->next, a3 = jn(d, a2)->next;
            mma |= jstreq(d, a1, "v") && jstreq(d, a2, "i.1") && jstreq(d, a3, "tensorize");
            persist |= jstreq(d, a3, "persistent");
        } else if (jstreq(d, k, "PR") && jstreq(d, a1, "v")) {
            /* ["PR","v",<K step>,"software_pipeline$N"]: N stages of the cp.async ring (one digit) */
            int a3 = jn(d, jn(d, a1)->next)->next;
            char pr[32];
            jcopy(d, a3, pr, sizeof pr);
            if (!strncmp(pr, "software_pipeline$", 18)) {
                if (pr[18] < '2' || pr[18] > '9' || pr[19] != '\0')
                    return jfail(d, "steps: \"%s\" is not software_pipeline$N with N stages in 2..9", pr);
                stages = pr[18] - '0';
            }
        } else if (jstreq(d, k, "CR")) {
            split |= jstreq(d, a1, "v");
        } else if (jstreq(d, k, "CA") && (jstreq(d, a1, "v") || jstreq(d, a1, "y"))) {
            int a2 = jn(d, a1)->next, a3 = jn(d, a2)->next;
            if (jstreq(d, a3, "s")) {
                fused |= jstreq(d, a1, "v") && jstreq(d, a2, "y");
                counter |= jstreq(d, a1, "y") && jstreq(d, a2, "v");
            }
            cluster |= jstreq(d, a1, "v") && jstreq(d, a2, "y") && jstreq(d, a3, "i.0");
        }
    }
    if ((int)split + (int)fused + (int)counter + (int)cluster != 1)
        return jfail(d, "steps: the sketch needs exactly one of [\"CR\",\"v\"] (split), [\"CA\",\"v\",\"y\",\"s\"] "
                        "(fused), [\"CA\",\"y\",\"v\",\"s\"] (counter) and [\"CA\",\"v\",\"y\",\"i.0\"] (cluster)");
    const int sketch = split     ? SEARCH_SKETCH_SPLIT
                       : fused   ? SEARCH_SKETCH_FUSED
                       : counter ? SEARCH_SKETCH_FUSED_COUNTER
                                 : SEARCH_SKETCH_CLUSTER;
    split |= counter || cluster; /* d_in split over CTAs: the same iterators */
    int KI = split ? SPF_K_SPLIT : SPF_K_FUSED;
    int IT = mma ? (split ? SPF_IT_SPLIT_MMA : SPF_IT_FUSED_MMA) : (split ? SPF_IT_SPLIT : SPF_IT_FUSED);
    int64_t rows, warps, u, lanes = 1, vec = 8, kstep, split_k = 1, cols;
    if (!sp_length(d, sp, SPF_ROWS, 1, 0, 1, 255, "rows", &rows) ||
        !sp_length(d, sp, IT, 1, 0, 1, 255, "warps", &warps) || !sp_length(d, sp, SPF_COLS, 1, 0, 1, 65535, "cols", &cols))
        return false;
    if (mma) {
        /* [loads in flight, 16]: one mma.m16n8k16 per load; vec is 8 in every mma schedule */
        if (!sp_length(d, sp, KI, 2, 0, 1, 8, "mmas in flight", &u) ||
            !sp_length(d, sp, KI, 2, 1, 16, 16, "mma K", &kstep))
            return false;
    } else {
        if (!sp_length(d, sp, KI, 3, 0, 1, 16, "loads in flight", &u) ||
            !sp_length(d, sp, KI, 3, 1, 32, 32, "lanes", &lanes) || !sp_length(d, sp, KI, 3, 2, 1, 8, "vec", &vec))
            return false;
        kstep = lanes * vec;
    }
    if (split && !sp_length(d, sp, SPF_SPLIT, 1, 0, 1, 255, "split_k", &split_k))
        return false;
    memset(s, 0, sizeof *s);
    s->version = SEARCH_SCHEDULE_VERSION;
    s->sketch = (uint8_t)sketch;
    s->rows = (uint8_t)rows;
    s->warps = (uint8_t)warps;
    s->vec = (uint8_t)vec;
    s->kc = (uint16_t)(u * kstep);
    s->split_k = (uint8_t)split_k;
    s->cols = (uint16_t)cols;
    s->mma = mma ? 1 : 0;
    s->stages = (uint8_t)stages;
    s->persist = persist ? 1 : 0;
    return true;
}

/* ---- record ------------------------------------------------------------------ */

typedef struct parse_state {
    jdoc rec;                          /* the line */
    char text[SEARCH_RECORD_LINE_MAX]; /* the steps this generator writes for the schedule read */
    stepgen gen;                       /* where each of them begins in text */
} parse_state;

static bool read_task(jdoc *d, int id, search_task *t)
{
    static const char *const cls_keys[] = {"rows", "groups", "longest", "mean", "none", "rdiff"};
    int64_t v;
    int e = 0;
    if (!want_arr(d, id, 7, 7, "task (i[0])"))
        return false;
    if (!want_name(d, jat(d, id, 0), op_names, 3, &e, "task op (i[0][0])"))
        return false;
    t->op = (uint8_t)e;
    if (!want_name(d, jat(d, id, 1), dtype_names, 3, &e, "task dtype (i[0][1])"))
        return false;
    t->dtype = (uint8_t)e;
    if (!want_int(d, jat(d, id, 2), 1, SEARCH_DIM_MAX, &v, "task d_in (i[0][2])"))
        return false;
    t->d_in = (int32_t)v;
    int outs = jat(d, id, 3);
    if (!want_arr(d, outs, 1, SEARCH_MAX_SLICES, "task d_out (i[0][3])"))
        return false;
    t->num_slices = (uint8_t)jn(d, outs)->count;
    for (int i = 0; i < t->num_slices; ++i) {
        if (!want_int(d, jat(d, outs, i), 1, SEARCH_DIM_MAX, &v, "task d_out (i[0][3])"))
            return false;
        t->d_out[i] = (int32_t)v;
    }
    if (!want_int(d, jat(d, id, 4), 1, 128, &v, "task max_rank (i[0][4])"))
        return false;
    t->max_rank = (int32_t)v;
    if (!want_name(d, jat(d, id, 5), weights_names, 3, &e, "task weights (i[0][5])"))
        return false;
    t->weights = (uint8_t)e;
    int m[6];
    if (!want_members(d, jat(d, id, 6), cls_keys, 6, m, "task layout class (i[0][6])"))
        return false;
    uint8_t *dst[6] = {&t->rows_log2, &t->groups_log2, &t->longest_log2, &t->mean_log2, &t->none_quarters,
                       &t->ranks_differ};
    const int64_t hi[6] = {62, 62, 62, 62, 4, 1};
    for (int k = 0; k < 6; ++k) {
        char what[48];
        snprintf(what, sizeof what, "task layout class \"%s\"", cls_keys[k]);
        if (!want_int(d, m[k], 0, hi[k], &v, what))
            return false;
        *dst[k] = (uint8_t)v;
    }
    return true;
}

/* Reads a non-negative decimal without leading zeros at *p; advances *p. */
static bool tag_num(const char **p, const char *end, int64_t max, int64_t *out)
{
    const char *q = *p;
    int64_t v = 0;
    if (q >= end || !is_digit((unsigned char)*q) || (*q == '0' && q + 1 < end && is_digit((unsigned char)q[1])))
        return false;
    while (q < end && is_digit((unsigned char)*q)) {
        v = v * 10 + (*q - '0');
        if (v > max)
            return false;
        ++q;
    }
    *p = q;
    *out = v;
    return true;
}

static bool tag_lit(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

static bool read_target(jdoc *d, int id, search_target *g)
{
    if (!want_type(d, id, J_STR, "target (i[1])"))
        return false;
    char tag[JSON_MAX_STRING + 1];
    jcopy(d, id, tag, sizeof tag);
    const char *p = tag, *end = tag + strlen(tag);
    int64_t cc, sm, l2, smem;
    /* "sm_<major><minor>/<n>sm/<n>KiB-L2/<n>KiB-smem", the minor being one digit */
    bool ok = tag_lit(&p, end, "sm_") && tag_num(&p, end, 999, &cc) && cc >= 10 && tag_lit(&p, end, "/") &&
              tag_num(&p, end, 100000, &sm) && tag_lit(&p, end, "sm/") && tag_num(&p, end, (int64_t)1 << 30, &l2) &&
              tag_lit(&p, end, "KiB-L2/") && tag_num(&p, end, (int64_t)1 << 20, &smem) &&
              tag_lit(&p, end, "KiB-smem") && p == end;
    if (!ok)
        return jfail(d, "target (i[1]) \"%s\" is not of the form \"sm_90/132sm/61440KiB-L2/227KiB-smem\"", tag);
    g->cc_major = (int32_t)(cc / 10);
    g->cc_minor = (int32_t)(cc % 10);
    g->sm_count = (int32_t)sm;
    g->l2_bytes = l2 << 10;
    g->smem_per_block = (int32_t)(smem << 10);
    return true;
}

static bool read_steps(parse_state *ps, int id, const search_task *t, search_schedule *s)
{
    jdoc *d = &ps->rec;
    if (!want_arr(d, id, 1, MAX_STEPS, "steps (i[2])"))
        return false;
    int index = 0;
    for (int c = jn(d, id)->child; c >= 0; c = jn(d, c)->next)
        if (!check_step_shape(d, c, index++))
            return false;
    if (!steps_schedule(d, id, s))
        return false;
    char fmt[96], why[160];
    search_schedule_format(s, fmt, sizeof fmt);
    if (!search_schedule_legal(s, t->max_rank, why, sizeof why))
        return jfail(d, "steps describe \"%s\", illegal for max_rank %d: %s", fmt, (int)t->max_rank, why);
    if (t->op != SEARCH_OP_APPLY && s->sketch != SEARCH_SKETCH_SPLIT)
        return jfail(d, "steps: a %s task runs the split sketch's kernels, the steps say %s", op_names[t->op],
                     sketch_names[s->sketch]);
    /* the steps this generator writes for that schedule, compared with the
     * record's written back compactly (their shapes are checked above, so
     * equal text means equal steps) */
    wbuf w = {ps->text, sizeof ps->text, 0, false};
    gen_steps(&w, t, s, &ps->gen);
    if (w.bad || ps->gen.n > MAX_STEPS)
        return jfail(d, "internal error: the steps of \"%s\" do not fit", fmt);
    index = 0;
    for (int c = jn(d, id)->child; c >= 0; c = jn(d, c)->next, ++index) {
        char got[512];
        wbuf wg = {got, sizeof got, 0, false};
        jdump(d, c, &wg, 0);
        const char *want = index < ps->gen.n ? ps->text + ps->gen.start[index] : "";
        size_t wlen = index < ps->gen.n ? ps->gen.end[index] - ps->gen.start[index] : 0;
        if (!wg.bad && wg.n == wlen && memcmp(got, want, wlen) == 0)
            continue;
        if (index >= ps->gen.n)
            return jfail(d, "steps: %d of them; for \"%s\" this generator writes %d", jn(d, id)->count, fmt,
                         ps->gen.n);
        if (wg.n > 160)
            strcpy(got + 157, "...");
        return jfail(d, "step %d is %s; for \"%s\" this generator writes %.*s", index, got, fmt, (int)wlen, want);
    }
    if (index != ps->gen.n)
        return jfail(d, "steps: %d of them; for \"%s\" this generator writes %d", index, fmt, ps->gen.n);
    return true;
}

static bool read_flag(jdoc *d, int id, bool *out, const char *what)
{
    int64_t v;
    if (!want_int(d, id, 0, 1, &v, what))
        return false;
    *out = v != 0;
    return true;
}

static bool read_record(parse_state *ps, int root, search_record *r)
{
    static const char *const top_keys[] = {"i", "r", "v", "x"};
    static const char *const x_keys[] = {"compiled", "ran", "matched", "spills", "regs", "spill", "err", "gpu", "sched"};
    jdoc *d = &ps->rec;
    int m[4], x[9];
    int64_t v;
    if (!want_type(d, root, J_OBJ, "record"))
        return false;
    /* the version first, so a newer record is refused as such */
    for (int c = jn(d, root)->child; c >= 0; c = jn(d, c)->next) {
        const jnode *n = jn(d, c);
        if (n->klen == 1 && d->strs[n->key] == 'v' && n->type == J_NUM && n->is_int && n->i != SEARCH_RECORD_VERSION)
            return jfail(d, "record version %.17g is not supported (this reader knows %d)", n->d,
                         SEARCH_RECORD_VERSION);
    }
    if (!want_members(d, root, top_keys, 4, m, "record"))
        return false;
    if (!want_int(d, m[2], SEARCH_RECORD_VERSION, SEARCH_RECORD_VERSION, &v, "record version (v)"))
        return false;
    r->version = (int32_t)v;
    /* i: task, target, steps */
    if (!want_arr(d, m[0], 3, 3, "i"))
        return false;
    if (!read_task(d, jat(d, m[0], 0), &r->task) || !read_target(d, jat(d, m[0], 1), &r->target) ||
        !read_steps(ps, jat(d, m[0], 2), &r->task, &r->sched))
        return false;
    /* r: costs, error_no, all_cost, timestamp */
    if (!want_arr(d, m[1], 4, 4, "r"))
        return false;
    int costs = jat(d, m[1], 0);
    if (!want_arr(d, costs, 0, SEARCH_RECORD_MAX_COSTS, "costs (r[0])"))
        return false;
    r->ncosts = jn(d, costs)->count;
    for (int i = 0; i < r->ncosts; ++i)
        if (!want_num(d, jat(d, costs, i), &r->costs_us[i], "costs (r[0])"))
            return false;
    if (!want_int(d, jat(d, m[1], 1), 0, SEARCH_ERR_COUNT - 1, &v, "error_no (r[1])"))
        return false;
    r->error_no = (int32_t)v;
    if (!want_num(d, jat(d, m[1], 2), &r->all_cost_s, "all_cost (r[2])") ||
        !want_int(d, jat(d, m[1], 3), 0, (int64_t)1 << 53, &r->timestamp, "timestamp (r[3])"))
        return false;
    /* x */
    if (!want_members(d, m[3], x_keys, 9, x, "x") || !read_flag(d, x[0], &r->compiled, "x.compiled") ||
        !read_flag(d, x[1], &r->ran, "x.ran") || !read_flag(d, x[2], &r->matched, "x.matched") ||
        !read_flag(d, x[3], &r->spills, "x.spills"))
        return false;
    for (int k = 0; k < 2; ++k) {
        const char *what = k ? "x.spill" : "x.regs";
        if (!want_arr(d, x[4 + k], SEARCH_ENTRY_COUNT, SEARCH_ENTRY_COUNT, what))
            return false;
        for (int i = 0; i < SEARCH_ENTRY_COUNT; ++i) {
            if (!want_int(d, jat(d, x[4 + k], i), 0, 1 << 30, &v, what))
                return false;
            (k ? r->spill_bytes : r->registers)[i] = (int32_t)v;
        }
    }
    const jnode *err = jn(d, x[6]);
    if (err->type == J_NULL)
        r->max_error = -1.0;
    else if (jstreq(d, x[6], "inf"))
        r->max_error = INFINITY;
    else if (err->type != J_NUM)
        return jfail(d, "x.err: a number, null (not checked) or \"inf\" was expected");
    else if (err->d < 0)
        return jfail(d, "x.err: %g is negative", err->d);
    else
        r->max_error = err->d;
    if (!want_type(d, x[7], J_STR, "x.gpu"))
        return false;
    if (jn(d, x[7])->len >= SEARCH_TARGET_NAME_MAX)
        return jfail(d, "x.gpu: longer than %d bytes", SEARCH_TARGET_NAME_MAX - 1);
    jcopy(d, x[7], r->target.name, sizeof r->target.name);
    char fmt[96];
    search_schedule_format(&r->sched, fmt, sizeof fmt);
    if (!want_type(d, x[8], J_STR, "x.sched"))
        return false;
    if (!jstreq(d, x[8], fmt)) {
        char t[JSON_MAX_STRING + 1];
        jcopy(d, x[8], t, sizeof t);
        return jfail(d, "x.sched \"%s\" differs from the steps' schedule \"%s\"", t, fmt);
    }
    char why[256];
    if (!search_record_check(r, why, sizeof why))
        return jfail(d, "%s", why);
    return true;
}

int search_record_parse(const char *line, size_t len, search_record *out, char *why, size_t why_len)
{
    if (why && why_len)
        why[0] = '\0';
    if (!out) {
        say(why, why_len, "output record is NULL");
        return -1;
    }
    memset(out, 0, sizeof *out);
    if (!line) {
        say(why, why_len, "line is NULL");
        return -1;
    }
    if (len > SEARCH_RECORD_PARSE_MAX) {
        say(why, why_len, "line of %zu bytes, longer than %d", len, SEARCH_RECORD_PARSE_MAX);
        return -1;
    }
    parse_state *ps = malloc(sizeof *ps);
    if (!ps) {
        say(why, why_len, "out of host memory for the parser (%zu bytes)", sizeof *ps);
        return -1;
    }
    ps->rec.why = why;
    ps->rec.why_len = why_len;
    c_numeric cn;
    c_numeric_enter(&cn);
    int root = jparse(&ps->rec, line, len);
    bool ok = root >= 0 && read_record(ps, root, out);
    c_numeric_leave(&cn);
    free(ps);
    if (!ok) {
        memset(out, 0, sizeof *out);
        if (why && why_len && !why[0])
            say(why, why_len, "not a record");
        return -1;
    }
    return 0;
}
