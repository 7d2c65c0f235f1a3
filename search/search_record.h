/*
 * search_record.h -- tuning records: one JSON line per measured (or
 * compile-failed) candidate, in the spirit of TVM auto_scheduler logs.
 *
 *   {"i":[task,target,steps],"r":[costs_us,error_no,all_cost_s,timestamp],"v":1,"x":{...}}
 *
 * task    the performance key of the call the candidate was timed for: op,
 *         dtype, d_in, the slices' d_out, max_rank, how weights are passed
 *         and the layout class (what runtime_perf_key hashes, minus the GPU);
 * target  the GPU fingerprint text, "sm_90/132sm/61440KiB-L2/227KiB-smem"
 *         (runtime_gpu_tag's format);
 * steps   the schedule written as transform steps (SP, RE, FU, AN, PR, FSP,
 *         FFSP, CA, CI, CR, CHR, CHW, RF) that describe what the kernels of
 *         kernels/kernels_lora.cu do for it;
 * r       the measured times (microseconds), an error number (search_error),
 *         the seconds the candidate cost (compile + measurement) and when;
 * x       what happened: compiled, ran, matched the reference, spills,
 *         registers and spill bytes per entry point, the check's error, the
 *         device name and the schedule as text.
 *
 * docs/records.md explains every field and step with an annotated record.
 *
 * Guarantees: search_record_write writes only records search_record_check
 * accepts; search_record_parse accepts a line only if every field is in
 * range and the steps are exactly the ones this generator writes for the
 * schedule they describe, so parse(write(r)) == r field for field. The parser
 * is strict (no unknown keys, kinds or trailing bytes) and bounded: input at
 * most SEARCH_RECORD_PARSE_MAX bytes, nesting at most 8 deep, a fixed pool of
 * values, one fixed-size allocation; it never reads past len.
 *
 * The search module depends on nothing else in dop; the enums below use the
 * same numbers as the runtime's (runtime_op, dop_dtype, weights_kind).
 */
#ifndef DOP_SEARCH_RECORD_H
#define DOP_SEARCH_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "search_schedule.h"

#define SEARCH_RECORD_VERSION 1
#define SEARCH_RECORD_MAX_COSTS 8
#define SEARCH_RECORD_LINE_MAX 8192    /* every record search_record_write accepts fits */
#define SEARCH_RECORD_PARSE_MAX 65536  /* longest line search_record_parse reads */
#define SEARCH_TARGET_NAME_MAX 64      /* bytes of search_target.name, NUL included */
#define SEARCH_DIM_MAX (1 << 24)       /* largest d_in / d_out (the API's limit) */

typedef enum search_weights {
    SEARCH_WEIGHTS_TABLE = 0,  /* an adapter table registered once ("table") */
    SEARCH_WEIGHTS_ARRAYS = 1, /* per-call device pointer arrays ("arrays") */
    SEARCH_WEIGHTS_UPLOAD = 2  /* per-call host arrays uploaded by the call ("upload") */
} search_weights;

/* error_no of a record. Values are never renumbered. */
typedef enum search_error {
    SEARCH_ERR_OK = 0,           /* compiled, ran, matched the reference; costs hold the times */
    SEARCH_ERR_COMPILE = 1,      /* NVRTC (or loading the module) failed */
    SEARCH_ERR_LAUNCH = 2,       /* cuLaunchKernel refused it (resources, configuration) */
    SEARCH_ERR_WRONG_RESULT = 3, /* ran, but the output differs from the CPU reference */
    SEARCH_ERR_TIMEOUT = 4,      /* compile or run exceeded its time limit */
    SEARCH_ERR_DEVICE = 5,       /* launched, then faulted on the device (illegal address, ...) */
    SEARCH_ERR_UNKNOWN = 6,      /* anything else */
    SEARCH_ERR_COUNT = 7
} search_error;

/* Entry points (a module holds its sketch's only: registers and spills of the others are 0), the
 * index of registers[] and spill_bytes[]. */
enum {
    SEARCH_ENTRY_SHRINK = 0,  /* dop_shrink */
    SEARCH_ENTRY_EXPAND = 1,  /* dop_expand */
    SEARCH_ENTRY_FUSED = 2,   /* dop_fused */
    SEARCH_ENTRY_COUNTER = 3, /* dop_fused_counter */
    SEARCH_ENTRY_COUNT = 4
};

/* What a candidate was tuned for: the performance key without the GPU. */
typedef struct search_task {
    uint8_t op;         /* search_op */
    uint8_t dtype;      /* search_dtype */
    uint8_t weights;    /* search_weights */
    uint8_t num_slices; /* 1..SEARCH_MAX_SLICES */
    int32_t d_in;       /* 1..SEARCH_DIM_MAX */
    int32_t d_out[SEARCH_MAX_SLICES]; /* 1..SEARCH_DIM_MAX for the first num_slices, 0 after */
    int32_t max_rank;   /* 1..128 */
    /* the layout class (runtime_layout_class) */
    uint8_t rows_log2, groups_log2, longest_log2, mean_log2; /* 0..62 */
    uint8_t none_quarters;                                   /* 0..4 */
    uint8_t ranks_differ;                                    /* 0..1 */
} search_task;

/* The GPU fingerprint (runtime_gpu) and the device's name. */
typedef struct search_target {
    char name[SEARCH_TARGET_NAME_MAX]; /* e.g. "NVIDIA H200"; may be empty; valid UTF-8 */
    int32_t cc_major;                  /* 1..99 */
    int32_t cc_minor;                  /* 0..9 */
    int32_t sm_count;                  /* 1..100000 */
    int64_t l2_bytes;                  /* a multiple of 1024, 0..2^40 */
    int32_t smem_per_block;            /* opt-in shared memory per block: a multiple of 1024, 0..2^30 */
} search_target;

typedef struct search_record {
    search_task task;
    search_target target;
    search_schedule sched; /* legal for task.max_rank */
    double costs_us[SEARCH_RECORD_MAX_COSTS]; /* measured times, finite, 0..1e12; 0 past ncosts */
    int32_t ncosts;                           /* 0..SEARCH_RECORD_MAX_COSTS */
    int32_t error_no;                         /* search_error */
    double all_cost_s;                        /* compile + measurement seconds, finite, 0..1e9 */
    int64_t timestamp;                        /* seconds since the epoch, 0..2^53 */
    bool compiled, ran, matched, spills;
    int32_t registers[SEARCH_ENTRY_COUNT];    /* per entry point; 0 when unknown, 0..255 */
    int32_t spill_bytes[SEARCH_ENTRY_COUNT];  /* ptxas "bytes spill stores"; 0..2^30 */
    double max_error; /* the check's relative error; -1: not checked; INFINITY: output not finite */
    int32_t version;  /* SEARCH_RECORD_VERSION */
} search_record;

/* Zeroes *r and sets version and max_error = -1 (not checked). */
void search_record_init(search_record *r);

/* "ok", "compile", "launch", "wrong_result", "timeout", "device", "unknown"; NULL past the end. */
const char *search_error_name(int error_no);

/* The fingerprint text of t: "sm_90/132sm/61440KiB-L2/227KiB-smem". Returns snprintf's result. */
int search_target_tag(const search_target *t, char *buf, size_t len);

/*
 * Whether r can be written (and so read back identically): ranges, the
 * schedule's legality for task.max_rank, and the rules that tie the flags to
 * error_no (docs/records.md). When not, a sentence is written to why.
 */
bool search_record_check(const search_record *r, char *why, size_t why_len);

/*
 * The step list of (task, schedule) as a JSON array. Returns its length, or
 * -1 when the schedule is illegal for the task or buf is too small.
 */
int search_record_steps(const search_task *t, const search_schedule *s, char *buf, size_t len);

/*
 * Writes r as one JSON line (no newline) into buf. Returns its length, or -1
 * when r fails search_record_check or buf is too small
 * (SEARCH_RECORD_LINE_MAX always suffices).
 */
int search_record_write(const search_record *r, char *buf, size_t len);

/*
 * Reads one record from line[0 .. len) (no NUL needed; JSON whitespace
 * anywhere between tokens, a trailing newline included). Returns 0 and fills
 * *out, or -1 with a message in why (when why_len > 0); *out is zeroed then.
 * Never reads outside the input and never crashes, whatever the bytes.
 */
int search_record_parse(const char *line, size_t len, search_record *out, char *why, size_t why_len);

#endif
