/*
 * costmodel_cache.c -- cost models in the cache (see costmodel_cache.h). The
 * only file of the cost model that depends on the cache module.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "costmodel_cache.h"

#define failc(st, why, why_len, ...) (search_say(why, why_len, __VA_ARGS__), (st))

void costmodel_cache_key(const search_target *g, cache_key *k)
{
    cache_key_init(k, "dop.costmodel", COSTMODEL_VERSION);
    cache_key_i64(k, g->cc_major);
    cache_key_i64(k, g->cc_minor);
    cache_key_i64(k, g->sm_count);
    cache_key_i64(k, g->l2_bytes);
    cache_key_i64(k, g->smem_per_block);
}

cache_status costmodel_store(cache_store *s, const costmodel *m, char *why, size_t why_len)
{
    if (!s || !m)
        return failc(CACHE_ERR_INVALID, why, why_len, "costmodel_store: NULL argument");
    unsigned char img[COSTMODEL_ENCODED_SIZE];
    if (costmodel_encode(m, img, sizeof img) != sizeof img)
        return failc(CACHE_ERR_INVALID, why, why_len, "costmodel_store: the model is not valid");
    cache_key k;
    costmodel_cache_key(&m->target, &k);
    char tag[SEARCH_TARGET_NAME_MAX];
    search_target_tag(&m->target, tag, sizeof tag);
    return cache_put(s, CACHE_DB_COSTMODEL, k.buf, k.len, tag, img, sizeof img, why, why_len);
}

cache_status costmodel_load(cache_store *s, const search_target *g, costmodel *m, char *why, size_t why_len)
{
    if (!m)
        return failc(CACHE_ERR_INVALID, why, why_len, "costmodel_load: NULL model");
    costmodel_init(m, g);
    if (!s || !g)
        return failc(CACHE_ERR_INVALID, why, why_len, "costmodel_load: NULL argument");
    cache_key k;
    costmodel_cache_key(g, &k);
    void *val = NULL;
    size_t len = 0;
    cache_status st = cache_get(s, CACHE_DB_COSTMODEL, k.buf, k.len, &val, &len, NULL, why, why_len);
    if (st != CACHE_OK)
        return st;
    costmodel got;
    char w[256];
    int rc = costmodel_decode(val, len, &got, w, sizeof w);
    free(val);
    if (rc != 0)
        return failc(CACHE_CORRUPT, why, why_len, "stored cost model: %s", w);
    if (!costmodel_same_target(&got.target, g))
        return failc(CACHE_CORRUPT, why, why_len, "stored cost model is for %s", got.tag);
    *m = got;
    return CACHE_OK;
}
