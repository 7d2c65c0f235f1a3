/*
 * runtime_measure.h -- the measurement harness: how the tuner and the
 * benchmarks time a call on the device.
 *
 * A runtime_bench holds one case (runtime_check.h) in `sets` copies of its
 * data. Measuring a schedule: its module is loaded (compiled if needed), one
 * eager call is checked against the CPU reference (a wrong schedule gets
 * SEARCH_ERR_WRONG_RESULT and no time), then one call per data set is captured
 * in a CUDA graph and the graphs are replayed round-robin: warm-up replays,
 * then `samples` samples of `burst` back-to-back replays each bracketed by
 * events; the time is the median sample divided by burst. With one set the
 * data stays in L2 ("warm"); with cold, enough sets that the working set is
 * over 2.5x the L2, so weights and activations come from HBM ("cold").
 */
#ifndef DOP_RUNTIME_MEASURE_H
#define DOP_RUNTIME_MEASURE_H

#include "runtime_check.h"

typedef struct runtime_bench_options {
    int cold;     /* rotate data sets beyond the L2 (default 0: one set) */
    int max_sets; /* at most this many sets when cold (default 48) */
    int warmup;   /* replays before timing (default 20; fewer for long calls: about 2 ms) */
    int samples;  /* timed samples, the median is kept (default 15) */
    int burst;    /* replays per sample (default 10; fewer for long calls: samples of ~100 us) */
} runtime_bench_options;

void runtime_bench_options_init(runtime_bench_options *o);

typedef struct runtime_bench runtime_bench;

/* What one measurement gave. error_no is a search_error (search_record.h). */
typedef struct runtime_measurement {
    int error_no;
    double us;            /* median time per call; 0 unless error_no == SEARCH_ERR_OK */
    double max_error;     /* the check's normalized error; -1 when not checked */
    double compile_s;     /* seconds spent obtaining the module (0 when it was loaded) */
    int registers[4], spill_bytes[4]; /* per entry point, when the module was compiled here; else 0 */
    search_schedule used; /* the schedule that ran (dispatch's pick for a NULL schedule) */
    char message[640];    /* why it failed */
} runtime_measurement;

/* Sets up a case for measuring; *out is freed with runtime_bench_free. */
dop_status runtime_bench_create(dop_context *ctx, const runtime_case *c, const runtime_bench_options *o,
                                runtime_bench **out);
void runtime_bench_free(dop_context *ctx, runtime_bench *b);

/*
 * Measures schedule s (NULL: what dispatch picks) on b. With verify, the
 * schedule is first checked against the reference. A failure of the schedule
 * (compile, launch, wrong result) is reported in m with DOP_OK returned; a
 * failure of the harness itself (out of memory, a faulted device) returns an
 * error status.
 */
dop_status runtime_bench_measure(dop_context *ctx, runtime_bench *b, const search_schedule *s, int verify,
                                 runtime_measurement *m);

/* The first data set (for its stream, bytes and layout). */
runtime_case_data *runtime_bench_case(runtime_bench *b);
int runtime_bench_sets(const runtime_bench *b);

/* Device-to-device copy bandwidth in bytes per second (bytes read + written). */
dop_status runtime_copy_bandwidth(dop_context *ctx, double *bytes_per_s);
/* One empty kernel replayed in a CUDA graph, microseconds. */
dop_status runtime_launch_floor(dop_context *ctx, double *us);

#endif
