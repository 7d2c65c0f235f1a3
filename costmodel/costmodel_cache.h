/*
 * costmodel_cache.h -- cost models in the cache's "costmodel" database
 * (CACHE_DB_COSTMODEL), one per GPU fingerprint and COSTMODEL_VERSION.
 *
 * Key: cache_key_init("dop.costmodel", COSTMODEL_VERSION) + the fingerprint
 * (cc_major, cc_minor, sm_count, l2_bytes, smem_per_block as i64); tag: the
 * fingerprint text (search_target_tag); value: costmodel_encode's image. A
 * model of another version has another key, so it is never read as this one.
 */
#ifndef DOP_COSTMODEL_CACHE_H
#define DOP_COSTMODEL_CACHE_H

#include "cache.h"
#include "costmodel.h"

/* The cache key of target g's model. */
void costmodel_cache_key(const search_target *g, cache_key *k);

/* Stores m under its target. CACHE_OK or cache_put's errors (CACHE_ERR_INVALID for a bad model). */
cache_status costmodel_store(cache_store *s, const costmodel *m, char *why, size_t why_len);

/*
 * Loads target g's model into m. CACHE_OK; CACHE_MISS (none stored: m is
 * costmodel_init(g), analytical); CACHE_CORRUPT (a stored image that does not
 * decode or is for another target: m is analytical too); cache_get's errors
 * (m analytical as well). So m is usable whatever it returns.
 */
cache_status costmodel_load(cache_store *s, const search_target *g, costmodel *m, char *why, size_t why_len);

#endif
