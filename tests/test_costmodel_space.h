/*
 * test_costmodel_space.h -- the schedule space for test_costmodel.c, through
 * plain numbers (see test_costmodel_space.c for why).
 */
#ifndef DOP_TEST_COSTMODEL_SPACE_H
#define DOP_TEST_COSTMODEL_SPACE_H

#include <stdint.h>

#include "search_schedule.h"

typedef struct test_cm_problem {
    int op, num_rows, d_in, num_slices, d_out[8], max_rank;
} test_cm_problem;

/* search_space_sample for the problem on an sm_90 GPU with 132 SMs. */
int test_cm_sample(const test_cm_problem *q, uint64_t *rng, search_schedule *out);
/* search_space_enumerate into out (up to cap); returns the space's size or -1. */
long test_cm_enumerate(const test_cm_problem *q, search_schedule *out, long cap);

#endif
