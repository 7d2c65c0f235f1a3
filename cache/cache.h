/*
 * cache.h -- dop's persistent cache: one LMDB file holding compiled cubins,
 * chosen schedules, tuning records and cost-model state. Private to the
 * project (the public API is include/dop.h); depends on LMDB and xxHash only.
 *
 * OVERVIEW
 *
 * A store is one LMDB file (MDB_NOSUBDIR; its lock file is "<file>-lock")
 * with four named databases (cache_db). The caller describes what it stores
 * with a canonical key: a byte string built with cache_key_* (typed, length-
 * prefixed, versioned fields, so that two different keys never encode to the
 * same bytes). The LMDB key is the XXH3-128 of those bytes; the LMDB value is
 * a record (cache_record_encode) that carries a magic, a format version, the
 * database id, a caller tag (e.g. a GPU fingerprint), a creation time, a
 * 64-bit XXH3 checksum, the full key bytes and the value. A record is trusted
 * only after its checksum, lengths and key bytes check out; a bad record is a
 * miss that is reported (CACHE_CORRUPT) and deleted, so the caller rebuilds
 * and stores it again. docs/cache.md has the byte layout.
 *
 * THREADING AND PROCESSES
 *
 * A store may be used by several threads at once (except cache_close, which
 * must be the last call on it). Any number of processes may use one file at
 * once; LMDB serializes writers and readers never block. Inside a process
 * there is one LMDB environment per file, shared by every cache_open of that
 * file (found by device and inode, reference counted). Transactions are
 * short and internal: no function keeps one open when it returns, and
 * cache_foreach calls its callback outside of any transaction.
 *
 * After fork() the child must not use the parent's LMDB environment: the
 * first call on an inherited store in the child opens the file again for the
 * child (the parent's mapping is left alone, never closed, in the child).
 *
 * ERRORS
 *
 * Every fallible function returns a cache_status and writes a one-line
 * message into the caller's buffer (why, why_len; either may be NULL/0).
 * Nothing here prints, exits or aborts. A caller that gets an error from
 * cache_open keeps working without a cache.
 */
#ifndef DOP_CACHE_H
#define DOP_CACHE_H

#include <stddef.h>
#include <stdint.h>

/* Values are never renumbered. */
typedef enum cache_status {
    CACHE_OK = 0,
    CACHE_MISS = 1,              /* no such record (or one written by a newer dop) */
    CACHE_CORRUPT = 2,           /* a record failed verification; it was deleted (unless read-only) */
    CACHE_ERR_INVALID = 3,       /* bad argument */
    CACHE_ERR_NOMEM = 4,         /* host allocation failed */
    CACHE_ERR_IO = 5,            /* file system or LMDB error; the message says which */
    CACHE_ERR_DAMAGED = 6,       /* the file is not a usable dop cache (truncated, garbage, foreign) */
    CACHE_ERR_READONLY = 7,      /* a write on a store opened read-only */
    CACHE_ERR_FULL = 8,          /* the map reached its limit (cache_options.map_max) */
    CACHE_ERR_BUSY = 9,          /* LMDB reader table full even after clearing stale readers */
    CACHE_ERR_UNSUPPORTED = 10,  /* network file system; cache or record format from a newer dop */
    CACHE_ERR_EXISTS = 11,       /* an export or merge target already exists */
    CACHE_ERR_NOTFOUND = 12      /* a read-only open of a file that does not exist */
} cache_status;

/* Short name of a status ("CACHE_CORRUPT"); static storage, never NULL. */
const char *cache_status_string(cache_status st);

/* The named databases. Values are stored in records and never renumbered. */
typedef enum cache_db {
    CACHE_DB_ALL = -1,        /* for cache_foreach: every database */
    CACHE_DB_CUBINS = 0,      /* "cubins": compiled kernels */
    CACHE_DB_SCHEDULES = 1,   /* "schedules": the schedule chosen for a (GPU, shape, layout class) */
    CACHE_DB_RECORDS = 2,     /* "records": tuning records (measured candidates) */
    CACHE_DB_COSTMODEL = 3,   /* "costmodel": cost-model state */
    CACHE_DB_COUNT = 4
} cache_db;

/* "cubins", "schedules", "records", "costmodel"; NULL for anything else. */
const char *cache_db_name(cache_db db);
/* The database of a name; CACHE_DB_ALL if there is none. */
cache_db cache_db_from_name(const char *name);

/* ---- canonical keys --------------------------------------------------------
 *
 * A key is a sequence of typed fields after a header naming the key's domain
 * and its schema version; bump the version whenever the meaning of the fields
 * changes, and old entries simply stop matching. Encoding (little endian):
 *   header:  'K' 0x01 | str(domain) | u32 schema version
 *   u64: 'u' + 8 bytes   i64: 'i' + 8 bytes   f64: 'f' + 8 bytes (IEEE bits;
 *   -0.0 as +0.0, every NaN as 0x7ff8000000000000)
 *   str: 's' + u32 length + bytes   bytes: 'b' + u32 length + bytes
 * A field that does not fit sets `overflow`; cache_put/cache_get refuse such
 * a key (CACHE_ERR_INVALID). */
#define CACHE_KEY_MAX 4096

typedef struct cache_key {
    size_t len;
    int overflow;
    unsigned char buf[CACHE_KEY_MAX];
} cache_key;

void cache_key_init(cache_key *k, const char *domain, uint32_t schema_version);
void cache_key_u64(cache_key *k, uint64_t v);
void cache_key_i64(cache_key *k, int64_t v);
void cache_key_f64(cache_key *k, double v);
void cache_key_str(cache_key *k, const char *s); /* NULL is stored as "" */
void cache_key_bytes(cache_key *k, const void *p, size_t n);

/* XXH3-128 of key bytes in canonical (big-endian) byte order: the LMDB key. */
#define CACHE_HASH_LEN 16
void cache_key_hash(const void *key, size_t key_len, unsigned char out[CACHE_HASH_LEN]);

/* ---- records (cache_record.c; pure C, no LMDB) -------------------------------- */

#define CACHE_RECORD_MAGIC "DOPC"
#define CACHE_RECORD_VERSION 1
#define CACHE_RECORD_HEADER 40
#define CACHE_TAG_MAX 64                    /* printable ASCII, 0x20..0x7e */
#define CACHE_KEY_LEN_MAX (64u * 1024u)      /* canonical key bytes */
#define CACHE_VALUE_MAX (256u * 1024u * 1024u)

/* A decoded record; the pointers point into the decoded buffer. */
typedef struct cache_record {
    unsigned version;
    cache_db db;
    unsigned flags; /* zero in version 1 */
    uint64_t created; /* seconds since the epoch */
    uint64_t checksum;
    const char *tag;  /* not NUL-terminated */
    size_t tag_len;
    const unsigned char *key;
    size_t key_len;
    const unsigned char *value;
    size_t value_len;
} cache_record;

/* Bytes a record of these sizes takes; 0 if a size is over its limit. */
size_t cache_record_size(size_t tag_len, size_t key_len, size_t value_len);

/* Writes a record into dst (dst_len >= cache_record_size(...)).
 * tag may be NULL (""). Returns CACHE_OK or CACHE_ERR_INVALID (a size over its
 * limit, a tag with a non-printable byte, db out of range, dst too short). */
cache_status cache_record_encode(void *dst, size_t dst_len, cache_db db, uint64_t created, const char *tag,
                                 const void *key, size_t key_len, const void *value, size_t value_len, char *why,
                                 size_t why_len);

/* Parses and verifies len bytes (magic, version, reserved fields, lengths
 * that add up exactly, db id, printable tag, checksum). Never reads outside
 * [buf, buf + len). Returns CACHE_OK; CACHE_CORRUPT (why says what is
 * wrong); CACHE_ERR_UNSUPPORTED (a format version newer than this code:
 * not corrupt, just not for us). */
cache_status cache_record_decode(const void *buf, size_t len, cache_record *out, char *why, size_t why_len);

/* Checks the two LMDB meta pages at the head of a data file: `head` holds the
 * first head_len bytes of a file of file_size bytes (pass up to 128 KiB).
 * CACHE_OK when both are LMDB 0.9 meta pages of one sane page size and the
 * newest one's root pages and page counts fit in the file; CACHE_ERR_DAMAGED
 * otherwise (cut short, garbage, not LMDB, another LMDB data format). A
 * zero-length file is CACHE_OK (LMDB initializes it). Run before
 * mdb_env_open, which trusts these pages and maps the file. */
cache_status cache_lmdb_meta_check(const void *head, size_t head_len, uint64_t file_size, char *why, size_t why_len);

/* ---- stores (cache_lmdb.c) ---------------------------------------------------- */

typedef struct cache_store cache_store;

enum {
    CACHE_READONLY = 1u << 0, /* never write; works on read-only files and directories */
    CACHE_CREATE = 1u << 1    /* create the file (and its directories) when missing */
};

typedef struct cache_options {
    unsigned flags;   /* CACHE_READONLY, CACHE_CREATE */
    size_t map_initial; /* bytes mapped at first (default 32 MiB); the map doubles when full */
    size_t map_max;     /* the map never grows past this (default 16 GiB) */
} cache_options;

void cache_options_init(cache_options *opt);

/* Default file: $DOP_CACHE_DIR/cache.mdb, else $XDG_CACHE_HOME/dop/cache.mdb
 * (an absolute XDG_CACHE_HOME only), else $HOME/.cache/dop/cache.mdb (HOME
 * from the password database when unset). CACHE_OK, or CACHE_ERR_INVALID when
 * it does not fit in len or no home directory is known. */
cache_status cache_default_path(char *buf, size_t len, char *why, size_t why_len);

/* Opens (or with CACHE_CREATE creates) a cache file; path NULL = default.
 * A file on a network file system (NFS, SMB/CIFS, AFS, Ceph, ...) is refused
 * for writing (CACHE_ERR_UNSUPPORTED) unless DOP_CACHE_ALLOW_NETWORK=1;
 * read-only opens of such files run without locks. A read-only open of a file
 * whose lock file cannot be opened (read-only directory, shipped cache) runs
 * without locks (MDB_NOLOCK): nobody may write that file meanwhile.
 * Returns CACHE_OK; CACHE_ERR_INVALID; CACHE_ERR_NOTFOUND (read-only, no
 * file); CACHE_ERR_DAMAGED; CACHE_ERR_UNSUPPORTED; CACHE_ERR_IO;
 * CACHE_ERR_READONLY (a writable open of a file this process holds read-only
 * without locks); CACHE_ERR_NOMEM. On failure *out is NULL. */
cache_status cache_open(const char *path, unsigned flags, cache_store **out, char *why, size_t why_len);
cache_status cache_open_ex(const char *path, const cache_options *opt, cache_store **out, char *why,
                           size_t why_len);
/* Releases a store (NULL is fine); the environment closes with its last store. */
void cache_close(cache_store *s);

/* The path the store was opened with. */
const char *cache_path(const cache_store *s);
int cache_is_readonly(const cache_store *s);

/* Stores value under key, replacing what was there. tag: printable ASCII of at
 * most CACHE_TAG_MAX bytes, or NULL. One short write transaction; the map
 * grows when full. Returns CACHE_OK; CACHE_ERR_INVALID; CACHE_ERR_READONLY;
 * CACHE_ERR_FULL; CACHE_ERR_IO; CACHE_ERR_DAMAGED; CACHE_ERR_NOMEM. */
cache_status cache_put(cache_store *s, cache_db db, const void *key, size_t key_len, const char *tag,
                       const void *value, size_t value_len, char *why, size_t why_len);

/* Fetches the value of key into a malloc'ed buffer (*value, *value_len; the
 * caller frees it; a zero-length value is a valid non-NULL buffer). Returns
 * CACHE_OK; CACHE_MISS (*value NULL); CACHE_CORRUPT (the record failed its
 * checks or holds other key bytes: it was deleted unless the store is
 * read-only; treat as a miss); CACHE_ERR_INVALID; CACHE_ERR_IO;
 * CACHE_ERR_DAMAGED; CACHE_ERR_BUSY; CACHE_ERR_NOMEM. tag_out, if not NULL,
 * receives the record's tag (CACHE_TAG_MAX + 1 bytes). */
cache_status cache_get(cache_store *s, cache_db db, const void *key, size_t key_len, void **value,
                       size_t *value_len, char *tag_out, char *why, size_t why_len);

/* Deletes the record of key. CACHE_OK; CACHE_MISS (there was none); errors as put. */
cache_status cache_delete(cache_store *s, cache_db db, const void *key, size_t key_len, char *why, size_t why_len);
/* Deletes by LMDB key (for tools). */
cache_status cache_delete_hash(cache_store *s, cache_db db, const unsigned char hash[CACHE_HASH_LEN], char *why,
                               size_t why_len);

/* One stored entry, as cache_foreach sees it. */
typedef struct cache_entry {
    cache_db db;
    unsigned char hash[CACHE_HASH_LEN]; /* the LMDB key */
    cache_status status; /* CACHE_OK, CACHE_CORRUPT, or CACHE_ERR_UNSUPPORTED (newer format) */
    const char *why;     /* "" when status is CACHE_OK */
    size_t stored_len;   /* bytes of the LMDB value */
    cache_record rec;    /* valid when status is CACHE_OK */
} cache_entry;

/* Return 0 to go on, anything else to stop (cache_foreach then returns CACHE_OK). */
typedef int (*cache_foreach_fn)(void *user, const cache_entry *e);

/* Visits every entry of db (or of all databases, CACHE_DB_ALL) in key order.
 * Entries are copied out in chunks, each read in its own short transaction,
 * and fn runs outside of any transaction: it may call any cache function,
 * including writes on the same store. An entry is checked (record decode, db
 * id, key hash) but never deleted here. Concurrent writes may or may not be
 * seen. Errors as cache_get. */
cache_status cache_foreach(cache_store *s, cache_db db, cache_foreach_fn fn, void *user, char *why, size_t why_len);

typedef struct cache_verify_report {
    uint64_t records; /* entries looked at */
    uint64_t ok;
    uint64_t corrupt;
    uint64_t dropped; /* corrupt ones deleted (drop_corrupt) */
    uint64_t newer;   /* records of a newer format: left alone */
} cache_verify_report;

/* Reports one bad entry to a cache_verify caller. */
typedef void (*cache_bad_fn)(void *user, cache_db db, const unsigned char hash[CACHE_HASH_LEN], const char *why);

/* Checks every record of every database; with drop_corrupt, deletes the bad
 * ones (needs a writable store). on_bad may be NULL. CACHE_OK when the walk
 * finished (look at report->corrupt); errors as cache_foreach. */
cache_status cache_verify(cache_store *s, int drop_corrupt, cache_verify_report *report, cache_bad_fn on_bad,
                          void *user, char *why, size_t why_len);

/* Writes a compacted copy of the store to path (mdb_env_copy2 with
 * MDB_CP_COMPACT) through a temporary file renamed into place. CACHE_OK;
 * CACHE_ERR_EXISTS (path exists); CACHE_ERR_IO. */
cache_status cache_export(cache_store *s, const char *path, char *why, size_t why_len);

typedef struct cache_import_report {
    uint64_t scanned;  /* entries in the source */
    uint64_t imported; /* stored in the target */
    uint64_t kept;     /* the target's own record was as new or newer: kept */
    uint64_t corrupt;  /* invalid in the source: skipped */
    uint64_t newer;    /* newer format in the source: skipped */
} cache_import_report;

/* Copies every valid record of the cache file src_path into s; on a key both
 * hold, the record created later wins (the target's on a tie). Records are
 * validated one by one (checksum, lengths, db, key hash); bad ones are
 * skipped and counted. Writes go in batches of short transactions. CACHE_OK;
 * CACHE_ERR_INVALID (src is the same file as s); CACHE_ERR_FULL (stopped when
 * the map could not grow: what fitted is kept and counted); errors of
 * cache_open for src and of cache_put. */
cache_status cache_import(cache_store *s, const char *src_path, cache_import_report *report, char *why,
                          size_t why_len);

/* Creates out_path (which must not exist) holding the valid records of a and
 * b (later creation time wins), then compacts it. CACHE_ERR_EXISTS when
 * out_path exists; otherwise as cache_import. report sums both imports. */
cache_status cache_merge(const char *a_path, const char *b_path, const char *out_path, cache_import_report *report,
                         char *why, size_t why_len);

typedef struct cache_prune_report {
    uint64_t scanned;
    uint64_t dropped_age;     /* created more than max_age seconds before now */
    uint64_t dropped_tag;     /* a non-empty tag that is not in keep_tags */
    uint64_t dropped_corrupt;
    uint64_t kept;
} cache_prune_report;

/* Drops records older than max_age_s seconds (0: no age limit) and, when
 * n_keep_tags > 0, records whose tag is non-empty and not one of keep_tags
 * (records of other GPUs); corrupt records always go. Records of a newer
 * format are kept. now: the current time in seconds (0: time(NULL)). The file
 * does not shrink (LMDB reuses the pages); cache_export makes a compact copy. */
cache_status cache_prune(cache_store *s, uint64_t max_age_s, const char *const *keep_tags, size_t n_keep_tags,
                         uint64_t now, cache_prune_report *report, char *why, size_t why_len);

typedef struct cache_stats {
    uint64_t entries[CACHE_DB_COUNT];
    uint64_t bytes[CACHE_DB_COUNT]; /* pages the database uses x page size */
    uint64_t file_bytes;            /* size of the data file */
    uint64_t map_bytes;             /* current map size */
    uint64_t used_bytes;            /* pages in use (last page + 1) x page size */
    unsigned page_size;
    unsigned readers_max;           /* reader slots in the lock file */
    unsigned readers_used;          /* slots ever used (high-water mark) */
    int readonly;
    int nolock;                     /* opened without the lock file (read-only shipped cache) */
} cache_stats;

cache_status cache_get_stats(cache_store *s, cache_stats *st, char *why, size_t why_len);

/* ---- for tests ------------------------------------------------------------------ */

/* Stores `len` arbitrary bytes under an LMDB key, unchecked (to plant damaged
 * records). */
cache_status cache_test_put_raw(cache_store *s, cache_db db, const unsigned char hash[CACHE_HASH_LEN],
                                const void *bytes, size_t len, char *why, size_t why_len);
/* Stores sharing one environment have the same id; 0 for NULL. */
uintptr_t cache_test_env_id(const cache_store *s);
/* References on the store's environment. */
int cache_test_env_refs(const cache_store *s);
/* Called inside every write transaction of cache_put, after the record is
 * written and before the commit (NULL: none). For SIGKILL-mid-transaction
 * tests. */
extern void (*cache_test_in_write_txn)(void);
/* Pretends every file lies on a file system of this statfs f_type (0: real). */
extern long cache_test_fs_type;

#endif
