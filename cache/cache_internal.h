/*
 * cache_internal.h -- helpers shared by the files of the cache module.
 */
#ifndef DOP_CACHE_INTERNAL_H
#define DOP_CACHE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* snprintf into why (when why && why_len), never fails, never prints. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void cache_say(char *why, size_t why_len, const char *fmt, ...);

static inline void cache_put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; ++i)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t cache_get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; ++i)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#endif
