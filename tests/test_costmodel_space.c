/*
 * test_costmodel_space.c -- the schedule space for test_costmodel.c.
 *
 * search_space.h and search_record.h both declare SEARCH_OP_* (one as an
 * anonymous enum, one as search_op), so no file can include both; the test
 * reaches the space through these two functions, which take plain numbers.
 */
#include <string.h>

#include "search_space.h"
#include "test_costmodel_space.h"

static void problem_of(const test_cm_problem *q, search_problem *p)
{
    memset(p, 0, sizeof *p);
    p->op = q->op;
    p->dtype = SEARCH_DTYPE_F16;
    p->num_rows = q->num_rows;
    p->d_in = q->d_in;
    p->num_slices = q->num_slices;
    for (int i = 0; i < q->num_slices && i < SEARCH_MAX_SLICES; ++i)
        p->d_out[i] = q->d_out[i];
    p->max_rank = q->max_rank;
    p->cc_major = 9;
    p->cc_minor = 0;
    p->sm_count = 132;
}

int test_cm_sample(const test_cm_problem *q, uint64_t *rng, search_schedule *out)
{
    search_problem p;
    problem_of(q, &p);
    return search_space_sample(&p, rng, out);
}

typedef struct collect {
    search_schedule *out;
    long cap, n;
} collect;

static int collect_one(const search_schedule *s, void *user)
{
    collect *c = user;
    if (c->n < c->cap)
        c->out[c->n] = *s;
    c->n++;
    return 0;
}

long test_cm_enumerate(const test_cm_problem *q, search_schedule *out, long cap)
{
    search_problem p;
    problem_of(q, &p);
    collect c = {out, cap, 0};
    if (search_space_enumerate(&p, collect_one, &c) < 0)
        return -1;
    return c.n;
}
