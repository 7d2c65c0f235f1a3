/*
 * fuzz_costmodel.c -- libFuzzer target for the cost model's byte image
 * (costmodel_decode, costmodel/costmodel_model.c).
 *
 * The input is an image. costmodel_decode must never read outside it nor
 * crash; when it refuses, it says why and leaves the model zeroed; when it
 * accepts, the model must encode back to the same bytes (the decoder is
 * strict: one image per model) and predict a positive finite time, for a
 * split and a cluster schedule (on an sm_90 image; the cluster sketch is
 * refused, 1e9, before sm_90).
 *
 * Built with -fsanitize=fuzzer,address,undefined when DOP_FUZZ=ON (clang;
 * tools/fuzz.sh, which seeds the corpus with `test_costmodel --write-seeds`).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "costmodel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(void)
{
    __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so a read past the end is caught */
    unsigned char *img = malloc(size ? size : 1);
    if (!img)
        return 0;
    if (size)
        memcpy(img, data, size);
    costmodel m;
    char why[256];
    why[0] = '\0';
    if (costmodel_decode(img, size, &m, why, sizeof why) != 0) {
        costmodel zero;
        memset(&zero, 0, sizeof zero);
        if (!why[0] || memcmp(&m, &zero, sizeof m) != 0)
            fail();
        free(img);
        return 0;
    }
    unsigned char back[COSTMODEL_ENCODED_SIZE];
    if (size != COSTMODEL_ENCODED_SIZE || costmodel_encode(&m, back, sizeof back) != sizeof back ||
        memcmp(back, img, size) != 0)
        fail();
    search_task t;
    memset(&t, 0, sizeof t);
    t.op = SEARCH_OP_APPLY;
    t.dtype = SEARCH_DTYPE_F16;
    t.num_slices = 1;
    t.d_in = 4096;
    t.d_out[0] = 4096;
    t.max_rank = 16;
    t.rows_log2 = 5;
    t.groups_log2 = 5;
    const search_schedule s[2] = {search_schedule_make(SEARCH_SKETCH_SPLIT, 1, 8, 8, 1024, 8, 256, 0, 1, 0),
                                  search_schedule_make(SEARCH_SKETCH_CLUSTER, 1, 8, 8, 1024, 8, 256, 0, 1, 0)};
    for (int i = 0; i < 2; ++i) {
        double us = costmodel_predict_us(&m, &t, &s[i]);
        if (!(us > 0) || !isfinite(us))
            fail();
    }
    free(img);
    return 0;
}
