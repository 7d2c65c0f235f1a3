/*
 * cache_lmdb.c -- the cache store over LMDB: environments, transactions, map
 * growth, fork, file checks, and the whole-store operations (verify, export,
 * import, merge, prune, stats).
 *
 * The LMDB rules this file follows, and why:
 *
 * - One environment per file per process. LMDB's locks are POSIX fcntl locks
 *   plus a shared reader table; a second mdb_env_open of the same file in one
 *   process, closed later, drops the locks of the first. So environments live
 *   in a process-wide registry keyed by the file's (st_dev, st_ino), with a
 *   reference count, and every cache_open of that file shares one.
 * - MDB_NOTLS: read transactions are not tied to threads (callers' threads
 *   come and go; a thread may hold several), and MDB_NOSUBDIR: one file plus
 *   "<file>-lock".
 * - Short transactions, never handed out: each call opens one, does its work
 *   and ends it. Long-lived readers would pin old pages and make the file
 *   grow; cache_foreach therefore reads in chunks, one transaction each.
 * - Map growth. The map starts at cache_options.map_initial and doubles on
 *   MDB_MAP_FULL up to map_max. mdb_env_set_mapsize may only run while this
 *   process has no transaction on the environment, so every transaction holds
 *   a read lock of the environment's `remap` rwlock and a resize takes it
 *   exclusively (writer-preferring, so a stream of readers cannot starve it).
 *   When another process grew the map, mdb_txn_begin says MDB_MAP_RESIZED:
 *   mdb_env_set_mapsize(env, 0) adopts the new size and the call is retried.
 * - Stale readers: a process that dies inside a read transaction leaves its
 *   slot taken. mdb_reader_check runs at open and when MDB_READERS_FULL comes
 *   back. A writer that dies holds LMDB's writer mutex, which is a robust
 *   process-shared mutex on Linux: the next writer recovers it. The data file
 *   is copy-on-write with two meta pages, so a killed writer loses only its
 *   own uncommitted transaction.
 * - fork(): the child must not use the parent's environment (its mapping,
 *   reader slots and locks belong to the parent). Each store records the pid
 *   that opened its environment; a call in another process opens the file
 *   again for that process. pthread_atfork handlers keep the registry mutex
 *   consistent and give the child an empty registry. The parent's environment
 *   is abandoned in the child, never closed (closing could release state that
 *   is the parent's).
 * - Network file systems are refused for writing: LMDB needs a coherent
 *   shared mmap and working fcntl locks.
 * - Files are checked before LMDB maps them (cache_lmdb_meta_check): LMDB
 *   trusts its meta pages, and a truncated file would fault, not fail.
 * - A new file appears atomically: it is built under a temporary name and
 *   hard-linked into place, so another process never sees it half-made.
 * - A marker database ("dop", key "format") tells a dop cache from any other
 *   LMDB file, which is refused rather than written into.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "cache.h"
#include "cache_internal.h"

#define CACHE_FILE_FORMAT 1u
#define MAP_INITIAL_DEFAULT ((size_t)32 << 20)
#define MAP_MAX_DEFAULT ((size_t)16 << 30)
#define MAX_READERS 1024
#define MAX_RETRIES 64
#define CHUNK_ENTRIES 256
#define CHUNK_BYTES ((size_t)8 << 20)
#define BATCH_ENTRIES 256
#define BATCH_BYTES ((size_t)16 << 20)
#define HEAD_BYTES (128u * 1024u)
#define LKEY_MAX 511 /* LMDB's default maximum key size */
#define FN_FAILED (-1) /* a transaction body set its own status */

void (*cache_test_in_write_txn)(void);
long cache_test_fs_type;

typedef struct cache_env {
    struct cache_env *next;
    dev_t dev;
    ino_t ino;
    pid_t pid;
    int refs;
    int readonly, nolock;
    size_t map_max;
    MDB_env *env;
    MDB_dbi dbi[CACHE_DB_COUNT];
    int have_dbi[CACHE_DB_COUNT];
    pthread_rwlock_t remap; /* shared: a transaction is open; exclusive: remapping */
} cache_env;

struct cache_store {
    _Atomic pid_t pid; /* the process s->env belongs to */
    cache_env *env;
    int readonly;
    cache_options opt;
    char path[];
};

/* ---- registry ------------------------------------------------------------------ */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static cache_env *g_envs;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static _Atomic unsigned g_tmp_counter;

static void atfork_prepare(void) { pthread_mutex_lock(&g_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_lock); }
static void atfork_child(void)
{
    g_envs = NULL; /* the parent's environments are not ours; abandoned, never closed */
    pthread_mutex_unlock(&g_lock);
}
static void register_atfork(void) { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); }

/* ---- small helpers --------------------------------------------------------------- */

static cache_status lmdb_fail(int rc, const char *what, const char *path, char *why, size_t why_len)
{
    cache_status st;
    switch (rc) {
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
        st = CACHE_ERR_DAMAGED;
        break;
    case MDB_MAP_FULL:
        st = CACHE_ERR_FULL;
        break;
    case MDB_READERS_FULL:
        st = CACHE_ERR_BUSY;
        break;
    case ENOMEM:
        st = CACHE_ERR_NOMEM;
        break;
    default:
        st = CACHE_ERR_IO;
    }
    cache_say(why, why_len, "%s: %s: %s", path ? path : "cache", what, mdb_strerror(rc));
    return st;
}

static uint64_t now_s(void)
{
    time_t t = time(NULL);
    return t > 0 ? (uint64_t)t : 0;
}

static int mkdir_p(const char *dir, mode_t mode)
{
    char buf[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, dir, n + 1);
    for (char *p = buf + 1; *p; ++p) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return errno;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return errno;
    return 0;
}

static void dir_of(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(out, len, ".");
    else if (slash == path)
        snprintf(out, len, "/");
    else
        snprintf(out, len, "%.*s", (int)(slash - path), path);
}

static int make_tmp_name(char *out, size_t len, const char *path, const char *what)
{
    unsigned n = atomic_fetch_add(&g_tmp_counter, 1);
    int w = snprintf(out, len, "%s.%s.%ld.%u", path, what, (long)getpid(), n);
    return w > 0 && (size_t)w < len;
}

static void unlink_with_lock(const char *path)
{
    char lock[PATH_MAX];
    unlink(path);
    if (snprintf(lock, sizeof lock, "%s-lock", path) < (int)sizeof lock)
        unlink(lock);
}

/* statfs f_type of file systems LMDB cannot be shared on. */
static const char *network_fs_name(long type)
{
    switch ((unsigned long)type & 0xffffffffu) {
    case 0x6969: return "NFS";
    case 0x517B: return "SMB";
    case 0xFF534D42: return "CIFS";
    case 0xFE534D42: return "SMB2";
    case 0x5346414F: return "AFS";
    case 0x6B414653: return "kAFS";
    case 0x00C36400: return "Ceph";
    case 0x01021997: return "9P";
    case 0x0BD00BD0: return "Lustre";
    }
    return NULL; /* FUSE (0x65735546) and the local ones are fine */
}

static const char *network_fs_of(const char *path)
{
    long type = cache_test_fs_type;
    if (!type) {
        struct statfs sf;
        if (statfs(path, &sf) != 0)
            return NULL;
        type = (long)sf.f_type;
    }
    return network_fs_name(type);
}

static int allow_network(void)
{
    const char *v = getenv("DOP_CACHE_ALLOW_NETWORK");
    return v && strcmp(v, "1") == 0;
}

/* ---- paths and options --------------------------------------------------------- */

void cache_options_init(cache_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->flags = CACHE_CREATE;
    opt->map_initial = MAP_INITIAL_DEFAULT;
    opt->map_max = MAP_MAX_DEFAULT;
}

cache_status cache_default_path(char *buf, size_t len, char *why, size_t why_len)
{
    if (!buf || !len) {
        cache_say(why, why_len, "no buffer for the path");
        return CACHE_ERR_INVALID;
    }
    const char *d = getenv("DOP_CACHE_DIR");
    const char *x = getenv("XDG_CACHE_HOME");
    const char *h = getenv("HOME");
    int n;
    if (d && *d)
        n = snprintf(buf, len, "%s/cache.mdb", d);
    else if (x && x[0] == '/')
        n = snprintf(buf, len, "%s/dop/cache.mdb", x);
    else {
        char pwbuf[4096];
        struct passwd pw, *res = NULL;
        if ((!h || !*h) && getpwuid_r(getuid(), &pw, pwbuf, sizeof pwbuf, &res) == 0 && res)
            h = res->pw_dir;
        if (!h || !*h) {
            cache_say(why, why_len, "no cache location: set DOP_CACHE_DIR, XDG_CACHE_HOME or HOME");
            return CACHE_ERR_INVALID;
        }
        n = snprintf(buf, len, "%s/.cache/dop/cache.mdb", h);
    }
    if (n < 0 || (size_t)n >= len) {
        cache_say(why, why_len, "cache path does not fit in %zu bytes", len);
        return CACHE_ERR_INVALID;
    }
    return CACHE_OK;
}

const char *cache_path(const cache_store *s) { return s ? s->path : NULL; }
int cache_is_readonly(const cache_store *s) { return s ? s->readonly : 0; }
uintptr_t cache_test_env_id(const cache_store *s) { return s ? (uintptr_t)s->env : 0; }

int cache_test_env_refs(const cache_store *s)
{
    if (!s)
        return 0;
    pthread_mutex_lock(&g_lock);
    int r = s->env->refs;
    pthread_mutex_unlock(&g_lock);
    return r;
}

/* ---- environments ------------------------------------------------------------------- */

/* Reads the head of the file and checks its LMDB meta pages. */
static cache_status check_file(const char *path, uint64_t *size_out, char *why, size_t why_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        cache_say(why, why_len, "%s: cannot open: %s", path, strerror(e));
        return e == ENOENT ? CACHE_ERR_NOTFOUND : CACHE_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        cache_say(why, why_len, "%s: not a regular file", path);
        return CACHE_ERR_INVALID;
    }
    *size_out = (uint64_t)sb.st_size;
    unsigned char *head = malloc(HEAD_BYTES);
    if (!head) {
        close(fd);
        cache_say(why, why_len, "out of memory");
        return CACHE_ERR_NOMEM;
    }
    /* A writer in another process may be rewriting a meta page while we read
     * it; a torn read looks damaged once, not three times in a row. */
    cache_status st = CACHE_OK;
    for (int attempt = 0; attempt < 3; ++attempt) {
        if (attempt) {
            struct timespec ts = {0, 2000000L * attempt};
            nanosleep(&ts, NULL);
            if (fstat(fd, &sb) != 0)
                break;
            *size_out = (uint64_t)sb.st_size;
        }
        size_t want = sb.st_size < (off_t)HEAD_BYTES ? (size_t)sb.st_size : HEAD_BYTES, got = 0;
        int read_err = 0;
        while (got < want) {
            ssize_t r = pread(fd, head + got, want - got, (off_t)got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                read_err = errno;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (read_err) {
            cache_say(why, why_len, "%s: cannot read: %s", path, strerror(read_err));
            st = CACHE_ERR_IO;
            break;
        }
        char w[256];
        st = cache_lmdb_meta_check(head, got, (uint64_t)sb.st_size, w, sizeof w);
        if (st == CACHE_OK)
            break;
        cache_say(why, why_len, "%s: damaged cache file: %s", path, w);
    }
    close(fd);
    free(head);
    return st;
}

/* Creates the marker and the named databases, or (read-only) finds them.
 * Runs once per environment, before anyone else uses it. */
static cache_status env_layout(cache_env *e, const char *path, char *why, size_t why_len)
{
    static const char *const names[CACHE_DB_COUNT] = {"cubins", "schedules", "records", "costmodel"};
    for (int attempt = 0;; ++attempt) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(e->env, NULL, e->readonly ? MDB_RDONLY : 0, &txn);
        if ((rc == MDB_MAP_RESIZED || rc == MDB_READERS_FULL) && attempt < 3) {
            if (rc == MDB_MAP_RESIZED)
                mdb_env_set_mapsize(e->env, 0);
            else
                mdb_reader_check(e->env, NULL);
            continue;
        }
        if (rc)
            return lmdb_fail(rc, "begin transaction", path, why, why_len);
        MDB_dbi marker;
        rc = mdb_dbi_open(txn, "dop", 0, &marker);
        if (rc == MDB_NOTFOUND) {
            MDB_dbi main_dbi;
            MDB_stat ms;
            rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
            if (!rc)
                rc = mdb_stat(txn, main_dbi, &ms);
            if (rc) {
                mdb_txn_abort(txn);
                return lmdb_fail(rc, "read the main database", path, why, why_len);
            }
            if (ms.ms_entries != 0) {
                mdb_txn_abort(txn);
                cache_say(why, why_len, "%s: an LMDB file but not a dop cache (no \"dop\" marker); not touched",
                          path);
                return CACHE_ERR_DAMAGED;
            }
            if (e->readonly) { /* empty: nothing stored yet */
                mdb_txn_abort(txn);
                return CACHE_OK;
            }
            unsigned char v[12];
            cache_put_le(v, CACHE_FILE_FORMAT, 4);
            cache_put_le(v + 4, now_s(), 8);
            MDB_val k = {6, (void *)"format"}, d = {sizeof v, v};
            rc = mdb_dbi_open(txn, "dop", MDB_CREATE, &marker);
            if (!rc)
                rc = mdb_put(txn, marker, &k, &d, 0);
        } else if (!rc) {
            MDB_val k = {6, (void *)"format"}, d;
            rc = mdb_get(txn, marker, &k, &d);
            if (rc || d.mv_size < 4) {
                mdb_txn_abort(txn);
                cache_say(why, why_len, "%s: the dop marker has no format record (damaged)", path);
                return CACHE_ERR_DAMAGED;
            }
            unsigned fmt = (unsigned)cache_get_le(d.mv_data, 4);
            if (fmt != CACHE_FILE_FORMAT) {
                mdb_txn_abort(txn);
                cache_say(why, why_len, "%s: cache file format %u, this dop reads %u", path, fmt, CACHE_FILE_FORMAT);
                return fmt > CACHE_FILE_FORMAT ? CACHE_ERR_UNSUPPORTED : CACHE_ERR_DAMAGED;
            }
        }
        for (int i = 0; !rc && i < CACHE_DB_COUNT; ++i) {
            rc = mdb_dbi_open(txn, names[i], e->readonly ? 0 : MDB_CREATE, &e->dbi[i]);
            e->have_dbi[i] = rc == 0;
            if (rc == MDB_NOTFOUND && e->readonly)
                rc = 0;
        }
        if (rc) {
            mdb_txn_abort(txn);
            if (rc == MDB_MAP_FULL && attempt < 3) {
                MDB_envinfo info;
                mdb_env_info(e->env, &info);
                mdb_env_set_mapsize(e->env, info.me_mapsize * 2);
                continue;
            }
            return lmdb_fail(rc, "open the named databases", path, why, why_len);
        }
        rc = mdb_txn_commit(txn); /* keeps the dbi handles (an abort would close them) */
        if (rc == MDB_MAP_FULL && attempt < 3) {
            MDB_envinfo info;
            mdb_env_info(e->env, &info);
            mdb_env_set_mapsize(e->env, info.me_mapsize * 2);
            continue;
        }
        if (rc)
            return lmdb_fail(rc, "commit", path, why, why_len);
        return CACHE_OK;
    }
}

static cache_status env_open_lmdb(cache_env *e, const char *path, const cache_options *opt, unsigned flags,
                                  char *why, size_t why_len)
{
    int rc = mdb_env_create(&e->env);
    if (rc)
        return lmdb_fail(rc, "create environment", path, why, why_len);
    mdb_env_set_maxdbs(e->env, 8);
    mdb_env_set_maxreaders(e->env, MAX_READERS);
    mdb_env_set_mapsize(e->env, opt->map_initial);
    rc = mdb_env_open(e->env, path, flags, 0644);
    if (rc) {
        mdb_env_close(e->env);
        e->env = NULL;
        return lmdb_fail(rc, "open", path, why, why_len);
    }
    return CACHE_OK;
}

static void env_free(cache_env *e)
{
    if (!e)
        return;
    if (e->env)
        mdb_env_close(e->env);
    pthread_rwlock_destroy(&e->remap);
    free(e);
}

static cache_status env_create(const char *path, const struct stat *sb, int readonly, int nolock,
                               const cache_options *opt, cache_env **out, char *why, size_t why_len)
{
    cache_env *e = calloc(1, sizeof *e);
    if (!e) {
        cache_say(why, why_len, "out of memory");
        return CACHE_ERR_NOMEM;
    }
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&e->remap, &ra);
    pthread_rwlockattr_destroy(&ra);
    e->dev = sb->st_dev;
    e->ino = sb->st_ino;
    e->pid = getpid();
    e->refs = 1;
    e->readonly = readonly;
    e->nolock = nolock;
    e->map_max = opt->map_max;

    cache_status st;
    unsigned base = MDB_NOSUBDIR | MDB_NOTLS;
    if (readonly) {
        st = env_open_lmdb(e, path, opt, base | MDB_RDONLY | (nolock ? MDB_NOLOCK : 0), why, why_len);
        if (st != CACHE_OK && !nolock) {
            /* No usable lock file (read-only directory or file system, or a lock
             * file we may not write): a shipped cache, read without locks. */
            char lock[PATH_MAX];
            snprintf(lock, sizeof lock, "%s-lock", path);
            if (access(lock, R_OK | W_OK) != 0) {
                e->nolock = 1;
                st = env_open_lmdb(e, path, opt, base | MDB_RDONLY | MDB_NOLOCK, why, why_len);
            }
        }
    } else {
        st = env_open_lmdb(e, path, opt, base | MDB_NOMETASYNC, why, why_len);
    }
    if (st == CACHE_OK && !e->nolock) {
        int dead = 0;
        mdb_reader_check(e->env, &dead);
    }
    if (st == CACHE_OK)
        st = env_layout(e, path, why, why_len);
    if (st != CACHE_OK) {
        env_free(e);
        return st;
    }
    *out = e;
    return CACHE_OK;
}

/* Builds an initialized cache under a temporary name and links it to path,
 * unless path appeared meanwhile. Called with g_lock held. */
static cache_status create_file(const char *path, const cache_options *opt, char *why, size_t why_len)
{
    char tmp[PATH_MAX];
    if (!make_tmp_name(tmp, sizeof tmp, path, "new")) {
        cache_say(why, why_len, "%s: path too long", path);
        return CACHE_ERR_INVALID;
    }
    unlink(tmp);
    cache_env e;
    memset(&e, 0, sizeof e);
    cache_status st = env_open_lmdb(&e, tmp, opt, MDB_NOSUBDIR | MDB_NOTLS | MDB_NOLOCK, why, why_len);
    if (st == CACHE_OK)
        st = env_layout(&e, tmp, why, why_len);
    if (e.env) {
        if (st == CACHE_OK) {
            int rc = mdb_env_sync(e.env, 1);
            if (rc)
                st = lmdb_fail(rc, "sync", tmp, why, why_len);
        }
        mdb_env_close(e.env);
    }
    if (st == CACHE_OK && link(tmp, path) != 0 && errno != EEXIST) {
        int err = errno;
        /* No hard links here (some FUSE and SMB mounts): rename without replacing. */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) != 0 && errno != EEXIST) {
            cache_say(why, why_len, "%s: cannot create: %s", path, strerror(err));
            st = CACHE_ERR_IO;
        }
    }
    unlink(tmp);
    return st;
}

/* Finds or opens the environment of path for this process. g_lock held. */
static cache_status env_acquire(const char *path, const cache_options *opt, int readonly, cache_env **out, char *why,
                                size_t why_len)
{
    int nolock = 0;
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    const char *net = network_fs_of(dir);
    if (net) {
        if (readonly)
            nolock = 1; /* a shipped cache on a share: nobody writes it */
        else if (!allow_network()) {
            cache_say(why, why_len,
                      "%s: on a network file system (%s); LMDB needs a local one. Point DOP_CACHE_DIR at a local "
                      "directory, open read-only, or set DOP_CACHE_ALLOW_NETWORK=1 if this mount is used by one "
                      "host only",
                      path, net);
            return CACHE_ERR_UNSUPPORTED;
        }
    }
    struct stat sb;
    int created = 0;
    if (stat(path, &sb) != 0) {
        int err = errno;
        if (err != ENOENT) {
            cache_say(why, why_len, "%s: %s", path, strerror(err));
            return CACHE_ERR_IO;
        }
        if (readonly || !(opt->flags & CACHE_CREATE)) {
            cache_say(why, why_len, "%s: no cache file", path);
            return CACHE_ERR_NOTFOUND;
        }
        cache_status st = create_file(path, opt, why, why_len);
        if (st != CACHE_OK)
            return st;
        if (stat(path, &sb) != 0) {
            cache_say(why, why_len, "%s: %s", path, strerror(errno));
            return CACHE_ERR_IO;
        }
        created = 1;
    }
    if (S_ISDIR(sb.st_mode)) {
        cache_say(why, why_len, "%s: is a directory, not a cache file", path);
        return CACHE_ERR_INVALID;
    }
    if (!S_ISREG(sb.st_mode)) {
        cache_say(why, why_len, "%s: not a regular file", path);
        return CACHE_ERR_INVALID;
    }
    pid_t me = getpid();
    for (cache_env *e = g_envs; e; e = e->next) {
        if (e->dev != sb.st_dev || e->ino != sb.st_ino || e->pid != me)
            continue;
        if (e->readonly && !readonly) {
            cache_say(why, why_len, "%s: this process has the file open read-only; close it before opening it "
                                    "for writing", path);
            return CACHE_ERR_READONLY;
        }
        e->refs++;
        *out = e;
        return CACHE_OK;
    }
    uint64_t size = 0;
    if (!created) {
        cache_status st = check_file(path, &size, why, why_len);
        if (st != CACHE_OK)
            return st;
        if (size == 0 && readonly) {
            cache_say(why, why_len, "%s: empty file, nothing cached", path);
            return CACHE_ERR_NOTFOUND;
        }
    }
    cache_env *e;
    cache_status st = env_create(path, &sb, readonly, nolock, opt, &e, why, why_len);
    if (st != CACHE_OK)
        return st;
    e->next = g_envs;
    g_envs = e;
    *out = e;
    return CACHE_OK;
}

/* g_lock held. */
static void env_release(cache_env *e)
{
    if (--e->refs > 0)
        return;
    for (cache_env **pp = &g_envs; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    env_free(e);
}

cache_status cache_open(const char *path, unsigned flags, cache_store **out, char *why, size_t why_len)
{
    cache_options opt;
    cache_options_init(&opt);
    opt.flags = flags;
    return cache_open_ex(path, &opt, out, why, why_len);
}

cache_status cache_open_ex(const char *path, const cache_options *opt_in, cache_store **out, char *why,
                           size_t why_len)
{
    if (why && why_len)
        why[0] = 0;
    if (!out) {
        cache_say(why, why_len, "out is NULL");
        return CACHE_ERR_INVALID;
    }
    *out = NULL;
    cache_options opt;
    cache_options_init(&opt);
    if (opt_in)
        opt = *opt_in;
    if (!opt.map_initial)
        opt.map_initial = MAP_INITIAL_DEFAULT;
    if (!opt.map_max)
        opt.map_max = MAP_MAX_DEFAULT;
    if (opt.map_max < opt.map_initial)
        opt.map_max = opt.map_initial;
    if (opt.flags & ~(unsigned)(CACHE_READONLY | CACHE_CREATE)) {
        cache_say(why, why_len, "unknown flags 0x%x", opt.flags);
        return CACHE_ERR_INVALID;
    }
    int readonly = (opt.flags & CACHE_READONLY) != 0;
    char def[PATH_MAX];
    int is_default = 0;
    if (!path) {
        cache_status st = cache_default_path(def, sizeof def, why, why_len);
        if (st != CACHE_OK)
            return st;
        path = def;
        is_default = 1;
    }
    size_t plen = strlen(path);
    if (plen == 0 || plen >= PATH_MAX - 64) {
        cache_say(why, why_len, "cache path empty or too long");
        return CACHE_ERR_INVALID;
    }
    if (!readonly && (opt.flags & CACHE_CREATE)) {
        char dir[PATH_MAX];
        dir_of(path, dir, sizeof dir);
        int err = mkdir_p(dir, is_default ? 0700 : 0777);
        if (err) {
            cache_say(why, why_len, "%s: cannot create directory: %s", dir, strerror(err));
            return CACHE_ERR_IO;
        }
    }
    cache_store *s = calloc(1, sizeof *s + plen + 1);
    if (!s) {
        cache_say(why, why_len, "out of memory");
        return CACHE_ERR_NOMEM;
    }
    memcpy(s->path, path, plen + 1);
    s->opt = opt;
    s->readonly = readonly;
    pthread_once(&g_once, register_atfork);
    pthread_mutex_lock(&g_lock);
    cache_status st = env_acquire(path, &opt, readonly, &s->env, why, why_len);
    pthread_mutex_unlock(&g_lock);
    if (st != CACHE_OK) {
        free(s);
        return st;
    }
    atomic_store_explicit(&s->pid, getpid(), memory_order_release);
    *out = s;
    return CACHE_OK;
}

void cache_close(cache_store *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&g_lock);
    if (atomic_load_explicit(&s->pid, memory_order_acquire) == getpid())
        env_release(s->env);
    pthread_mutex_unlock(&g_lock);
    free(s);
}

/* The store's environment in this process; opens the file again in a child
 * after fork. */
static cache_status store_env(cache_store *s, cache_env **out, char *why, size_t why_len)
{
    pid_t me = getpid();
    if (atomic_load_explicit(&s->pid, memory_order_acquire) == me) {
        *out = s->env;
        return CACHE_OK;
    }
    cache_status st = CACHE_OK;
    pthread_mutex_lock(&g_lock);
    if (atomic_load_explicit(&s->pid, memory_order_acquire) != me) {
        cache_env *e;
        st = env_acquire(s->path, &s->opt, s->readonly, &e, why, why_len);
        if (st == CACHE_OK) {
            s->env = e;
            atomic_store_explicit(&s->pid, me, memory_order_release);
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (st == CACHE_OK)
        *out = s->env;
    return st;
}

/* ---- transactions --------------------------------------------------------------- */

static void adopt_mapsize(cache_env *e)
{
    pthread_rwlock_wrlock(&e->remap);
    mdb_env_set_mapsize(e->env, 0);
    pthread_rwlock_unlock(&e->remap);
}

static cache_status grow_map(cache_env *e, size_t seen, const char *path, char *why, size_t why_len)
{
    cache_status st = CACHE_OK;
    pthread_rwlock_wrlock(&e->remap);
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    if (info.me_mapsize <= seen) { /* nobody grew it meanwhile */
        if (seen >= e->map_max) {
            cache_say(why, why_len, "%s: cache full: the map is %zu bytes, its limit; prune it (dop cache prune)",
                      path, seen);
            st = CACHE_ERR_FULL;
        } else {
            size_t want = seen > e->map_max / 2 ? e->map_max : seen * 2;
            int rc = mdb_env_set_mapsize(e->env, want);
            if (rc)
                st = lmdb_fail(rc, "grow the map", path, why, why_len);
        }
    }
    pthread_rwlock_unlock(&e->remap);
    return st;
}

/* Begins a transaction holding e->remap shared. *seen: the map size then. */
static cache_status txn_begin(cache_store *s, int write, cache_env **pe, MDB_txn **txn, size_t *seen, char *why,
                              size_t why_len)
{
    cache_env *e;
    cache_status st = store_env(s, &e, why, why_len);
    if (st != CACHE_OK)
        return st;
    if (write && (s->readonly || e->readonly)) {
        cache_say(why, why_len, "%s: opened read-only", s->path);
        return CACHE_ERR_READONLY;
    }
    for (int attempt = 0;; ++attempt) {
        pthread_rwlock_rdlock(&e->remap);
        int rc = mdb_txn_begin(e->env, NULL, write ? 0 : MDB_RDONLY, txn);
        if (rc == 0) {
            if (seen) {
                MDB_envinfo info;
                mdb_env_info(e->env, &info);
                *seen = info.me_mapsize;
            }
            *pe = e;
            return CACHE_OK;
        }
        pthread_rwlock_unlock(&e->remap);
        if (rc == MDB_MAP_RESIZED && attempt < MAX_RETRIES) {
            adopt_mapsize(e);
            continue;
        }
        if (rc == MDB_READERS_FULL && attempt < 2 && !e->nolock) {
            int dead = 0;
            mdb_reader_check(e->env, &dead);
            if (dead > 0 || attempt == 0)
                continue;
        }
        if (rc == MDB_READERS_FULL)
            cache_say(why, why_len, "%s: all %d LMDB reader slots are taken by live readers", s->path, MAX_READERS);
        return rc == MDB_READERS_FULL ? CACHE_ERR_BUSY : lmdb_fail(rc, "begin transaction", s->path, why, why_len);
    }
}

static void txn_end(cache_env *e, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&e->remap);
}

/* A write transaction body: returns 0 (commit), an LMDB/errno code (abort;
 * MDB_MAP_FULL and MDB_MAP_RESIZED are retried), or FN_FAILED with *st and
 * why set (abort). It may run several times: it must start from scratch. */
typedef int (*write_body)(cache_env *e, MDB_txn *txn, void *ctx, cache_status *st, char *why, size_t why_len);

static cache_status with_write(cache_store *s, write_body body, void *ctx, const char *what, char *why,
                               size_t why_len)
{
    for (int attempt = 0;; ++attempt) {
        cache_env *e;
        MDB_txn *txn;
        size_t seen = 0;
        cache_status st = txn_begin(s, 1, &e, &txn, &seen, why, why_len);
        if (st != CACHE_OK)
            return st;
        st = CACHE_OK;
        int rc = body(e, txn, ctx, &st, why, why_len);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        pthread_rwlock_unlock(&e->remap);
        if (rc == 0)
            return CACHE_OK;
        if (rc == FN_FAILED)
            return st;
        if (rc == MDB_MAP_FULL && attempt < MAX_RETRIES) {
            st = grow_map(e, seen, s->path, why, why_len);
            if (st != CACHE_OK)
                return st;
            continue;
        }
        if (rc == MDB_MAP_RESIZED && attempt < MAX_RETRIES) {
            adopt_mapsize(e);
            continue;
        }
        return lmdb_fail(rc, what, s->path, why, why_len);
    }
}

static int valid_db(cache_db db) { return db >= 0 && db < CACHE_DB_COUNT; }

static cache_status check_key_args(cache_db db, const void *key, size_t key_len, char *why, size_t why_len)
{
    if (!valid_db(db)) {
        cache_say(why, why_len, "no database %d", (int)db);
        return CACHE_ERR_INVALID;
    }
    if ((!key && key_len) || key_len > CACHE_KEY_LEN_MAX) {
        cache_say(why, why_len, "key NULL or longer than %u bytes", CACHE_KEY_LEN_MAX);
        return CACHE_ERR_INVALID;
    }
    return CACHE_OK;
}

/* ---- put / get / delete -------------------------------------------------------- */

typedef struct put_ctx {
    cache_db db;
    const unsigned char *hash;
    const void *key, *value;
    size_t key_len, value_len, rec_len;
    const char *tag;
    uint64_t created;
    const void *raw; /* cache_test_put_raw: bytes stored as they are */
} put_ctx;

static int put_body(cache_env *e, MDB_txn *txn, void *ctx, cache_status *st, char *why, size_t why_len)
{
    put_ctx *p = ctx;
    MDB_val k = {CACHE_HASH_LEN, (void *)p->hash}, v = {p->rec_len, NULL};
    int rc = mdb_put(txn, e->dbi[p->db], &k, &v, MDB_RESERVE);
    if (rc)
        return rc;
    if (p->raw) {
        if (p->rec_len)
            memcpy(v.mv_data, p->raw, p->rec_len);
    } else {
        *st = cache_record_encode(v.mv_data, v.mv_size, p->db, p->created, p->tag, p->key, p->key_len, p->value,
                                  p->value_len, why, why_len);
        if (*st != CACHE_OK)
            return FN_FAILED;
    }
    if (cache_test_in_write_txn)
        cache_test_in_write_txn();
    return 0;
}

cache_status cache_put(cache_store *s, cache_db db, const void *key, size_t key_len, const char *tag,
                       const void *value, size_t value_len, char *why, size_t why_len)
{
    if (!s) {
        cache_say(why, why_len, "store is NULL");
        return CACHE_ERR_INVALID;
    }
    cache_status st = check_key_args(db, key, key_len, why, why_len);
    if (st != CACHE_OK)
        return st;
    size_t tag_len = tag ? strnlen(tag, CACHE_TAG_MAX + 1) : 0;
    size_t n = cache_record_size(tag_len, key_len, value_len);
    if (!n || (!value && value_len)) {
        cache_say(why, why_len, "value NULL, value over %u bytes or tag over %d", CACHE_VALUE_MAX, CACHE_TAG_MAX);
        return CACHE_ERR_INVALID;
    }
    /* Validate the tag before taking the writer lock. */
    for (size_t i = 0; i < tag_len; ++i)
        if ((unsigned char)tag[i] < 0x20 || (unsigned char)tag[i] > 0x7e) {
            cache_say(why, why_len, "tag must be printable ASCII");
            return CACHE_ERR_INVALID;
        }
    unsigned char hash[CACHE_HASH_LEN];
    cache_key_hash(key, key_len, hash);
    put_ctx p = {.db = db, .hash = hash, .key = key, .value = value, .key_len = key_len, .value_len = value_len,
                 .rec_len = n, .tag = tag, .created = now_s()};
    return with_write(s, put_body, &p, "put", why, why_len);
}

cache_status cache_test_put_raw(cache_store *s, cache_db db, const unsigned char hash[CACHE_HASH_LEN],
                                const void *bytes, size_t len, char *why, size_t why_len)
{
    if (!s || !valid_db(db) || !hash || (!bytes && len)) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    put_ctx p = {.db = db, .hash = hash, .rec_len = len, .raw = bytes ? bytes : ""};
    return with_write(s, put_body, &p, "put", why, why_len);
}

/* Why a stored value does not serve `key` (NULL key: any key, as long as the
 * record is sound and hashes to its LMDB key). */
static cache_status judge(cache_db db, const MDB_val *k, const MDB_val *v, const void *key, size_t key_len,
                          cache_record *rec, char *why, size_t why_len)
{
    cache_status st = cache_record_decode(v->mv_data, v->mv_size, rec, why, why_len);
    if (st != CACHE_OK)
        return st;
    if (rec->db != db) {
        cache_say(why, why_len, "record of database %s found in %s", cache_db_name(rec->db), cache_db_name(db));
        return CACHE_CORRUPT;
    }
    unsigned char h[CACHE_HASH_LEN];
    cache_key_hash(rec->key, rec->key_len, h);
    if (k->mv_size != CACHE_HASH_LEN || memcmp(h, k->mv_data, CACHE_HASH_LEN) != 0) {
        cache_say(why, why_len, "stored key bytes do not hash to the record's LMDB key");
        return CACHE_CORRUPT;
    }
    if (key && (rec->key_len != key_len || (key_len && memcmp(rec->key, key, key_len) != 0))) {
        cache_say(why, why_len, "stored key bytes differ from the requested ones (hash collision)");
        return CACHE_CORRUPT;
    }
    return CACHE_OK;
}

typedef struct drop_ctx {
    cache_db db;
    const unsigned char *lkey; /* LMDB keys */
    const size_t *lkey_len;
    size_t n;
    /* drop when judge() says CACHE_CORRUPT (key/key_len as in judge), or when
     * prune criteria match */
    const void *key;
    size_t key_len;
    const struct prune_rule *prune;
    uint64_t dropped;
    cache_prune_report pr; /* prune counts of this attempt */
} drop_ctx;

typedef struct prune_rule {
    uint64_t max_age_s, now;
    const char *const *keep;
    size_t n_keep;
} prune_rule;

/* 0: keep; 1: too old; 2: other tag; 3: corrupt. */
static int prune_verdict(const prune_rule *r, cache_db db, const MDB_val *k, const MDB_val *v)
{
    cache_record rec;
    cache_status st = judge(db, k, v, NULL, 0, &rec, NULL, 0);
    if (st == CACHE_ERR_UNSUPPORTED)
        return 0;
    if (st != CACHE_OK)
        return 3;
    if (r->max_age_s && rec.created + r->max_age_s < r->now)
        return 1;
    if (r->n_keep && rec.tag_len) {
        for (size_t i = 0; i < r->n_keep; ++i)
            if (strlen(r->keep[i]) == rec.tag_len && memcmp(r->keep[i], rec.tag, rec.tag_len) == 0)
                return 0;
        return 2;
    }
    return 0;
}

static int drop_body(cache_env *e, MDB_txn *txn, void *ctx, cache_status *st, char *why, size_t why_len)
{
    (void)st, (void)why, (void)why_len;
    drop_ctx *d = ctx;
    d->dropped = 0;
    memset(&d->pr, 0, sizeof d->pr);
    const unsigned char *lk = d->lkey;
    for (size_t i = 0; i < d->n; lk += d->lkey_len[i], ++i) {
        MDB_val k = {d->lkey_len[i], (void *)lk}, v;
        int rc = mdb_get(txn, e->dbi[d->db], &k, &v);
        if (rc == MDB_NOTFOUND)
            continue;
        if (rc)
            return rc;
        int drop;
        if (d->prune) {
            int verdict = prune_verdict(d->prune, d->db, &k, &v);
            drop = verdict != 0;
            if (verdict == 1)
                d->pr.dropped_age++;
            else if (verdict == 2)
                d->pr.dropped_tag++;
            else if (verdict == 3)
                d->pr.dropped_corrupt++;
        } else {
            cache_record rec;
            drop = judge(d->db, &k, &v, d->key, d->key_len, &rec, NULL, 0) == CACHE_CORRUPT;
        }
        if (!drop)
            continue;
        rc = mdb_del(txn, e->dbi[d->db], &k, NULL);
        if (rc)
            return rc;
        d->dropped++;
    }
    return 0;
}

/* Deletes the record at hash if it still does not serve key (another process
 * may have replaced it with a good one meanwhile). */
static cache_status drop_if_bad(cache_store *s, cache_db db, const unsigned char *lkey, size_t lkey_len,
                                const void *key, size_t key_len, uint64_t *dropped)
{
    drop_ctx d = {.db = db, .lkey = lkey, .lkey_len = &lkey_len, .n = 1, .key = key, .key_len = key_len};
    char w[64];
    cache_status st = with_write(s, drop_body, &d, "delete", w, sizeof w);
    if (dropped)
        *dropped = st == CACHE_OK ? d.dropped : 0;
    return st;
}

cache_status cache_get(cache_store *s, cache_db db, const void *key, size_t key_len, void **value,
                       size_t *value_len, char *tag_out, char *why, size_t why_len)
{
    if (value)
        *value = NULL;
    if (value_len)
        *value_len = 0;
    if (tag_out)
        tag_out[0] = 0;
    if (!s || !value || !value_len) {
        cache_say(why, why_len, "store, value or value_len is NULL");
        return CACHE_ERR_INVALID;
    }
    cache_status st = check_key_args(db, key, key_len, why, why_len);
    if (st != CACHE_OK)
        return st;
    unsigned char hash[CACHE_HASH_LEN];
    cache_key_hash(key, key_len, hash);
    cache_env *e;
    MDB_txn *txn;
    st = txn_begin(s, 0, &e, &txn, NULL, why, why_len);
    if (st != CACHE_OK)
        return st;
    if (!e->have_dbi[db]) {
        txn_end(e, txn);
        cache_say(why, why_len, "no %s database in this cache", cache_db_name(db));
        return CACHE_MISS;
    }
    MDB_val k = {CACHE_HASH_LEN, hash}, v;
    int rc = mdb_get(txn, e->dbi[db], &k, &v);
    if (rc) {
        txn_end(e, txn);
        if (rc == MDB_NOTFOUND) {
            cache_say(why, why_len, "not cached");
            return CACHE_MISS;
        }
        return lmdb_fail(rc, "get", s->path, why, why_len);
    }
    cache_record rec;
    char bad[200];
    st = judge(db, &k, &v, key, key_len, &rec, bad, sizeof bad);
    if (st == CACHE_OK) {
        void *copy = malloc(rec.value_len ? rec.value_len : 1);
        if (!copy) {
            txn_end(e, txn);
            cache_say(why, why_len, "out of memory for a value of %zu bytes", rec.value_len);
            return CACHE_ERR_NOMEM;
        }
        if (rec.value_len)
            memcpy(copy, rec.value, rec.value_len);
        if (tag_out) {
            memcpy(tag_out, rec.tag, rec.tag_len);
            tag_out[rec.tag_len] = 0;
        }
        txn_end(e, txn);
        *value = copy;
        *value_len = rec.value_len;
        return CACHE_OK;
    }
    txn_end(e, txn);
    if (st == CACHE_ERR_UNSUPPORTED) {
        cache_say(why, why_len, "%s", bad);
        return CACHE_MISS;
    }
    /* Corrupt: drop it, so that the caller's rebuild can store a good one. */
    if (s->readonly || e->readonly) {
        cache_say(why, why_len, "corrupt record in %s: %s (left in place: read-only)", cache_db_name(db), bad);
        return CACHE_CORRUPT;
    }
    cache_status dst = drop_if_bad(s, db, hash, CACHE_HASH_LEN, key, key_len, NULL);
    cache_say(why, why_len, "corrupt record in %s: %s (%s)", cache_db_name(db), bad,
              dst == CACHE_OK ? "dropped" : "could not drop it");
    return CACHE_CORRUPT;
}

typedef struct del_ctx {
    cache_db db;
    const unsigned char *hash;
    int found;
} del_ctx;

static int del_body(cache_env *e, MDB_txn *txn, void *ctx, cache_status *st, char *why, size_t why_len)
{
    (void)st, (void)why, (void)why_len;
    del_ctx *d = ctx;
    MDB_val k = {CACHE_HASH_LEN, (void *)d->hash};
    int rc = mdb_del(txn, e->dbi[d->db], &k, NULL);
    d->found = rc == 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

cache_status cache_delete_hash(cache_store *s, cache_db db, const unsigned char hash[CACHE_HASH_LEN], char *why,
                               size_t why_len)
{
    if (!s || !valid_db(db) || !hash) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    del_ctx d = {.db = db, .hash = hash};
    cache_status st = with_write(s, del_body, &d, "delete", why, why_len);
    if (st == CACHE_OK && !d.found) {
        cache_say(why, why_len, "not cached");
        return CACHE_MISS;
    }
    return st;
}

cache_status cache_delete(cache_store *s, cache_db db, const void *key, size_t key_len, char *why, size_t why_len)
{
    cache_status st = check_key_args(db, key, key_len, why, why_len);
    if (st != CACHE_OK)
        return st;
    unsigned char hash[CACHE_HASH_LEN];
    cache_key_hash(key, key_len, hash);
    return cache_delete_hash(s, db, hash, why, why_len);
}

/* ---- iteration ------------------------------------------------------------------- */

typedef struct chunk_item {
    size_t lkey_len, len;
    unsigned char lkey[LKEY_MAX];
    unsigned char *bytes;
} chunk_item;

/* The internal walker: like cache_foreach, but also hands over the raw LMDB key. */
typedef int (*walk_fn)(void *user, const cache_entry *e, const unsigned char *lkey, size_t lkey_len,
                       const void *bytes);

static cache_status walk(cache_store *s, cache_db which, walk_fn fn, void *user, char *why, size_t why_len)
{
    chunk_item *items = calloc(CHUNK_ENTRIES, sizeof *items);
    if (!items) {
        cache_say(why, why_len, "out of memory");
        return CACHE_ERR_NOMEM;
    }
    cache_status st = CACHE_OK;
    int stop = 0;
    for (int db = which == CACHE_DB_ALL ? 0 : which; !stop && st == CACHE_OK && db < CACHE_DB_COUNT;
         db = which == CACHE_DB_ALL ? db + 1 : CACHE_DB_COUNT) {
        unsigned char last[LKEY_MAX];
        size_t last_len = 0;
        int started = 0, done = 0;
        while (!done && !stop && st == CACHE_OK) {
            cache_env *e;
            MDB_txn *txn;
            st = txn_begin(s, 0, &e, &txn, NULL, why, why_len);
            if (st != CACHE_OK)
                break;
            if (!e->have_dbi[db]) {
                txn_end(e, txn);
                break;
            }
            MDB_cursor *cur;
            int rc = mdb_cursor_open(txn, e->dbi[db], &cur);
            if (rc) {
                txn_end(e, txn);
                st = lmdb_fail(rc, "open cursor", s->path, why, why_len);
                break;
            }
            MDB_val k = {last_len, last}, v;
            if (!started)
                rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
            else {
                rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
                if (!rc && k.mv_size == last_len && memcmp(k.mv_data, last, last_len) == 0)
                    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            }
            size_t n = 0, bytes = 0;
            while (!rc && n < CHUNK_ENTRIES && (n == 0 || bytes + v.mv_size <= CHUNK_BYTES)) {
                chunk_item *it = &items[n];
                it->lkey_len = k.mv_size < LKEY_MAX ? k.mv_size : LKEY_MAX;
                memcpy(it->lkey, k.mv_data, it->lkey_len);
                it->len = v.mv_size;
                it->bytes = malloc(v.mv_size ? v.mv_size : 1);
                if (!it->bytes) {
                    rc = ENOMEM;
                    break;
                }
                memcpy(it->bytes, v.mv_data, v.mv_size);
                bytes += v.mv_size;
                ++n;
                rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            }
            mdb_cursor_close(cur);
            txn_end(e, txn);
            if (rc == MDB_NOTFOUND)
                done = 1;
            else if (rc) /* 0: the chunk is full, more to come */
                st = lmdb_fail(rc, "read", s->path, why, why_len);
            for (size_t i = 0; i < n; ++i) {
                chunk_item *it = &items[i];
                if (!stop && st == CACHE_OK) {
                    cache_entry ent;
                    char bad[200] = "";
                    memset(&ent, 0, sizeof ent);
                    ent.db = (cache_db)db;
                    memcpy(ent.hash, it->lkey, it->lkey_len < CACHE_HASH_LEN ? it->lkey_len : CACHE_HASH_LEN);
                    ent.stored_len = it->len;
                    MDB_val kk = {it->lkey_len, it->lkey}, vv = {it->len, it->bytes};
                    ent.status = judge((cache_db)db, &kk, &vv, NULL, 0, &ent.rec, bad, sizeof bad);
                    ent.why = ent.status == CACHE_OK ? "" : bad;
                    if (ent.status != CACHE_OK)
                        memset(&ent.rec, 0, sizeof ent.rec);
                    if (fn(user, &ent, it->lkey, it->lkey_len, it->bytes))
                        stop = 1;
                }
                free(it->bytes);
                it->bytes = NULL;
            }
            if (n) {
                last_len = items[n - 1].lkey_len;
                memcpy(last, items[n - 1].lkey, last_len);
                started = 1;
            } else {
                done = 1;
            }
        }
    }
    free(items);
    return st;
}

typedef struct foreach_ctx {
    cache_foreach_fn fn;
    void *user;
} foreach_ctx;

static int foreach_adapter(void *user, const cache_entry *e, const unsigned char *lkey, size_t lkey_len,
                           const void *bytes)
{
    (void)lkey, (void)lkey_len, (void)bytes;
    foreach_ctx *c = user;
    return c->fn(c->user, e);
}

cache_status cache_foreach(cache_store *s, cache_db db, cache_foreach_fn fn, void *user, char *why, size_t why_len)
{
    if (!s || !fn || (db != CACHE_DB_ALL && !valid_db(db))) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    foreach_ctx c = {fn, user};
    return walk(s, db, foreach_adapter, &c, why, why_len);
}

/* ---- verify ------------------------------------------------------------------------ */

typedef struct verify_ctx {
    cache_store *s;
    int drop;
    cache_verify_report *r;
    cache_bad_fn on_bad;
    void *user;
} verify_ctx;

static int verify_one(void *user, const cache_entry *e, const unsigned char *lkey, size_t lkey_len,
                      const void *bytes)
{
    (void)bytes;
    verify_ctx *v = user;
    v->r->records++;
    if (e->status == CACHE_OK) {
        v->r->ok++;
        return 0;
    }
    if (e->status == CACHE_ERR_UNSUPPORTED) {
        v->r->newer++;
        return 0;
    }
    v->r->corrupt++;
    if (v->on_bad)
        v->on_bad(v->user, e->db, e->hash, e->why);
    if (v->drop) {
        uint64_t n = 0;
        drop_if_bad(v->s, e->db, lkey, lkey_len, NULL, 0, &n);
        v->r->dropped += n;
    }
    return 0;
}

cache_status cache_verify(cache_store *s, int drop_corrupt, cache_verify_report *report, cache_bad_fn on_bad,
                          void *user, char *why, size_t why_len)
{
    cache_verify_report dummy;
    if (!report)
        report = &dummy;
    memset(report, 0, sizeof *report);
    if (!s) {
        cache_say(why, why_len, "store is NULL");
        return CACHE_ERR_INVALID;
    }
    if (drop_corrupt && s->readonly) {
        cache_say(why, why_len, "%s: opened read-only, cannot drop records", s->path);
        return CACHE_ERR_READONLY;
    }
    verify_ctx v = {s, drop_corrupt, report, on_bad, user};
    return walk(s, CACHE_DB_ALL, verify_one, &v, why, why_len);
}

/* ---- prune --------------------------------------------------------------------------- */

typedef struct key_batch {
    size_t n, used, cap;
    unsigned char *keys;
    size_t lens[BATCH_ENTRIES];
} key_batch;

static int batch_add(key_batch *b, const unsigned char *k, size_t len)
{
    if (b->used + len > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->used + len)
            cap *= 2;
        unsigned char *p = realloc(b->keys, cap);
        if (!p)
            return 0;
        b->keys = p;
        b->cap = cap;
    }
    memcpy(b->keys + b->used, k, len);
    b->used += len;
    b->lens[b->n++] = len;
    return 1;
}

typedef struct prune_ctx {
    cache_store *s;
    prune_rule rule;
    cache_prune_report *r;
    key_batch batch[CACHE_DB_COUNT];
    cache_status st;
    char *why;
    size_t why_len;
} prune_ctx;

static cache_status prune_flush(prune_ctx *p, int db)
{
    key_batch *b = &p->batch[db];
    if (!b->n)
        return CACHE_OK;
    drop_ctx d = {.db = (cache_db)db, .lkey = b->keys, .lkey_len = b->lens, .n = b->n, .prune = &p->rule};
    cache_status st = with_write(p->s, drop_body, &d, "prune", p->why, p->why_len);
    if (st == CACHE_OK) {
        p->r->dropped_age += d.pr.dropped_age;
        p->r->dropped_tag += d.pr.dropped_tag;
        p->r->dropped_corrupt += d.pr.dropped_corrupt;
    }
    b->n = b->used = 0;
    return st;
}

static int prune_one(void *user, const cache_entry *e, const unsigned char *lkey, size_t lkey_len, const void *bytes)
{
    prune_ctx *p = user;
    p->r->scanned++;
    MDB_val k = {lkey_len, (void *)lkey}, v = {e->stored_len, (void *)bytes};
    if (prune_verdict(&p->rule, e->db, &k, &v) == 0)
        return 0;
    if (!batch_add(&p->batch[e->db], lkey, lkey_len)) {
        p->st = CACHE_ERR_NOMEM;
        cache_say(p->why, p->why_len, "out of memory");
        return 1;
    }
    if (p->batch[e->db].n == BATCH_ENTRIES) {
        p->st = prune_flush(p, e->db);
        return p->st != CACHE_OK;
    }
    return 0;
}

cache_status cache_prune(cache_store *s, uint64_t max_age_s, const char *const *keep_tags, size_t n_keep_tags,
                         uint64_t now, cache_prune_report *report, char *why, size_t why_len)
{
    cache_prune_report dummy;
    if (!report)
        report = &dummy;
    memset(report, 0, sizeof *report);
    if (!s || (n_keep_tags && !keep_tags)) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    for (size_t i = 0; i < n_keep_tags; ++i)
        if (!keep_tags[i]) {
            cache_say(why, why_len, "keep tag %zu is NULL", i);
            return CACHE_ERR_INVALID;
        }
    if (s->readonly) {
        cache_say(why, why_len, "%s: opened read-only", s->path);
        return CACHE_ERR_READONLY;
    }
    prune_ctx *p = calloc(1, sizeof *p);
    if (!p) {
        cache_say(why, why_len, "out of memory");
        return CACHE_ERR_NOMEM;
    }
    p->s = s;
    p->rule = (prune_rule){max_age_s, now ? now : now_s(), keep_tags, n_keep_tags};
    p->r = report;
    p->why = why;
    p->why_len = why_len;
    cache_status st = walk(s, CACHE_DB_ALL, prune_one, p, why, why_len);
    if (st == CACHE_OK)
        st = p->st;
    for (int db = 0; db < CACHE_DB_COUNT; ++db) {
        if (st == CACHE_OK)
            st = prune_flush(p, db);
        free(p->batch[db].keys);
    }
    uint64_t dropped = report->dropped_age + report->dropped_tag + report->dropped_corrupt;
    report->kept = report->scanned > dropped ? report->scanned - dropped : 0;
    free(p);
    return st;
}

/* ---- stats ------------------------------------------------------------------------------ */

cache_status cache_get_stats(cache_store *s, cache_stats *out, char *why, size_t why_len)
{
    if (!s || !out) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    memset(out, 0, sizeof *out);
    cache_env *e;
    MDB_txn *txn;
    cache_status st = txn_begin(s, 0, &e, &txn, NULL, why, why_len);
    if (st != CACHE_OK)
        return st;
    MDB_envinfo info;
    MDB_stat es;
    mdb_env_info(e->env, &info);
    mdb_env_stat(e->env, &es);
    out->page_size = es.ms_psize;
    out->map_bytes = info.me_mapsize;
    out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * es.ms_psize;
    out->readers_max = info.me_maxreaders;
    out->readers_used = info.me_numreaders;
    out->readonly = s->readonly || e->readonly;
    out->nolock = e->nolock;
    for (int db = 0; db < CACHE_DB_COUNT; ++db) {
        MDB_stat ms;
        if (!e->have_dbi[db] || mdb_stat(txn, e->dbi[db], &ms) != 0)
            continue;
        out->entries[db] = ms.ms_entries;
        out->bytes[db] = (uint64_t)(ms.ms_branch_pages + ms.ms_leaf_pages + ms.ms_overflow_pages) * ms.ms_psize;
    }
    int fd;
    struct stat sb;
    if (mdb_env_get_fd(e->env, &fd) == 0 && fstat(fd, &sb) == 0)
        out->file_bytes = (uint64_t)sb.st_size;
    txn_end(e, txn);
    return CACHE_OK;
}

/* ---- export / import / merge ---------------------------------------------------------- */

cache_status cache_export(cache_store *s, const char *path, char *why, size_t why_len)
{
    if (!s || !path || !*path) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    if (access(path, F_OK) == 0) {
        cache_say(why, why_len, "%s: exists; export writes a new file", path);
        return CACHE_ERR_EXISTS;
    }
    cache_env *e;
    cache_status st = store_env(s, &e, why, why_len);
    if (st != CACHE_OK)
        return st;
    char tmp[PATH_MAX];
    if (!make_tmp_name(tmp, sizeof tmp, path, "export")) {
        cache_say(why, why_len, "%s: path too long", path);
        return CACHE_ERR_INVALID;
    }
    unlink(tmp);
    /* The copy runs its own read transaction: no remap meanwhile. */
    int rc;
    for (int attempt = 0;; ++attempt) {
        pthread_rwlock_rdlock(&e->remap);
        rc = mdb_env_copy2(e->env, tmp, MDB_CP_COMPACT);
        pthread_rwlock_unlock(&e->remap);
        if (rc != MDB_MAP_RESIZED || attempt == MAX_RETRIES)
            break;
        unlink(tmp);
        adopt_mapsize(e);
    }
    if (rc) {
        unlink(tmp);
        return lmdb_fail(rc, "compact copy", tmp, why, why_len);
    }
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    if (link(tmp, path) != 0) {
        int err = errno;
        if (err != EEXIST && renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) == 0)
            return CACHE_OK;
        unlink(tmp);
        cache_say(why, why_len, "%s: %s", path, err == EEXIST ? "appeared during the export" : strerror(err));
        return err == EEXIST ? CACHE_ERR_EXISTS : CACHE_ERR_IO;
    }
    unlink(tmp);
    return CACHE_OK;
}

typedef struct import_rec {
    cache_db db;
    size_t len;
    uint64_t created;
    unsigned char hash[CACHE_HASH_LEN];
    unsigned char *bytes;
} import_rec;

typedef struct import_ctx {
    cache_store *dst;
    cache_import_report *r;
    import_rec recs[BATCH_ENTRIES];
    size_t n, bytes, first; /* first: index the current body starts at */
    size_t limit;           /* records the current body writes */
    uint64_t imported, kept;
    cache_status st;
    char *why;
    size_t why_len;
} import_ctx;

static int import_body(cache_env *e, MDB_txn *txn, void *ctx, cache_status *st, char *why, size_t why_len)
{
    (void)st, (void)why, (void)why_len;
    import_ctx *c = ctx;
    c->imported = c->kept = 0;
    for (size_t i = c->first; i < c->first + c->limit; ++i) {
        import_rec *r = &c->recs[i];
        MDB_val k = {CACHE_HASH_LEN, r->hash}, v;
        int rc = mdb_get(txn, e->dbi[r->db], &k, &v);
        if (rc && rc != MDB_NOTFOUND)
            return rc;
        if (rc == 0) {
            cache_record have;
            cache_status js = judge(r->db, &k, &v, NULL, 0, &have, NULL, 0);
            if ((js == CACHE_OK && have.created >= r->created) || js == CACHE_ERR_UNSUPPORTED) {
                c->kept++;
                continue;
            }
        }
        v.mv_size = r->len;
        v.mv_data = r->bytes;
        rc = mdb_put(txn, e->dbi[r->db], &k, &v, 0);
        if (rc)
            return rc;
        c->imported++;
    }
    return 0;
}

static cache_status import_flush(import_ctx *c)
{
    cache_status st = CACHE_OK;
    if (c->n) {
        c->first = 0;
        c->limit = c->n;
        st = with_write(c->dst, import_body, c, "import", c->why, c->why_len);
        if (st == CACHE_ERR_FULL && c->n > 1) {
            /* Keep what fits: one record per transaction until the map is at its limit. */
            st = CACHE_OK;
            for (size_t i = 0; i < c->n && st == CACHE_OK; ++i) {
                c->first = i;
                c->limit = 1;
                st = with_write(c->dst, import_body, c, "import", c->why, c->why_len);
                if (st == CACHE_OK) {
                    c->r->imported += c->imported;
                    c->r->kept += c->kept;
                }
            }
        } else if (st == CACHE_OK) {
            c->r->imported += c->imported;
            c->r->kept += c->kept;
        }
    }
    for (size_t i = 0; i < c->n; ++i)
        free(c->recs[i].bytes);
    c->n = c->bytes = 0;
    return st;
}

static int import_one(void *user, const cache_entry *e, const unsigned char *lkey, size_t lkey_len, const void *bytes)
{
    (void)lkey, (void)lkey_len;
    import_ctx *c = user;
    c->r->scanned++;
    if (e->status == CACHE_ERR_UNSUPPORTED) {
        c->r->newer++;
        return 0;
    }
    if (e->status != CACHE_OK) {
        c->r->corrupt++;
        return 0;
    }
    import_rec *r = &c->recs[c->n];
    r->bytes = malloc(e->stored_len);
    if (!r->bytes) {
        c->st = CACHE_ERR_NOMEM;
        cache_say(c->why, c->why_len, "out of memory");
        return 1;
    }
    memcpy(r->bytes, bytes, e->stored_len);
    r->len = e->stored_len;
    r->db = e->db;
    r->created = e->rec.created;
    memcpy(r->hash, e->hash, CACHE_HASH_LEN);
    c->n++;
    c->bytes += e->stored_len;
    if (c->n == BATCH_ENTRIES || c->bytes >= BATCH_BYTES) {
        c->st = import_flush(c);
        return c->st != CACHE_OK;
    }
    return 0;
}

cache_status cache_import(cache_store *s, const char *src_path, cache_import_report *report, char *why,
                          size_t why_len)
{
    cache_import_report dummy;
    if (!report)
        report = &dummy;
    memset(report, 0, sizeof *report);
    if (!s || !src_path) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    if (s->readonly) {
        cache_say(why, why_len, "%s: opened read-only", s->path);
        return CACHE_ERR_READONLY;
    }
    cache_env *de;
    cache_status st = store_env(s, &de, why, why_len);
    if (st != CACHE_OK)
        return st;
    struct stat sb;
    if (stat(src_path, &sb) == 0 && sb.st_dev == de->dev && sb.st_ino == de->ino) {
        cache_say(why, why_len, "%s: is the cache being imported into", src_path);
        return CACHE_ERR_INVALID;
    }
    cache_store *src;
    st = cache_open(src_path, CACHE_READONLY, &src, why, why_len);
    if (st != CACHE_OK)
        return st;
    import_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        cache_close(src);
        cache_say(why, why_len, "out of memory");
        return CACHE_ERR_NOMEM;
    }
    c->dst = s;
    c->r = report;
    c->why = why;
    c->why_len = why_len;
    st = walk(src, CACHE_DB_ALL, import_one, c, why, why_len);
    if (st == CACHE_OK)
        st = c->st;
    if (st == CACHE_OK)
        st = import_flush(c);
    else {
        for (size_t i = 0; i < c->n; ++i)
            free(c->recs[i].bytes);
    }
    free(c);
    cache_close(src);
    return st;
}

static void add_report(cache_import_report *sum, const cache_import_report *r)
{
    sum->scanned += r->scanned;
    sum->imported += r->imported;
    sum->kept += r->kept;
    sum->corrupt += r->corrupt;
    sum->newer += r->newer;
}

cache_status cache_merge(const char *a_path, const char *b_path, const char *out_path, cache_import_report *report,
                         char *why, size_t why_len)
{
    cache_import_report dummy, r;
    if (!report)
        report = &dummy;
    memset(report, 0, sizeof *report);
    if (!a_path || !b_path || !out_path || !*out_path) {
        cache_say(why, why_len, "bad argument");
        return CACHE_ERR_INVALID;
    }
    if (access(out_path, F_OK) == 0) {
        cache_say(why, why_len, "%s: exists; merge writes a new file", out_path);
        return CACHE_ERR_EXISTS;
    }
    /* Build under a temporary name, then export it compacted to out_path. */
    char build[PATH_MAX];
    if (!make_tmp_name(build, sizeof build, out_path, "merge")) {
        cache_say(why, why_len, "%s: path too long", out_path);
        return CACHE_ERR_INVALID;
    }
    unlink_with_lock(build);
    cache_store *s;
    cache_status st = cache_open(build, CACHE_CREATE, &s, why, why_len);
    if (st != CACHE_OK)
        return st;
    st = cache_import(s, a_path, &r, why, why_len);
    add_report(report, &r);
    if (st == CACHE_OK) {
        st = cache_import(s, b_path, &r, why, why_len);
        add_report(report, &r);
    }
    if (st == CACHE_OK)
        st = cache_export(s, out_path, why, why_len);
    cache_close(s);
    unlink_with_lock(build);
    return st;
}
