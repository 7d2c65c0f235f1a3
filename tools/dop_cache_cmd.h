/*
 * dop_cache_cmd.h -- `dop cache ...`: the cache subcommands of the dop tool.
 */
#ifndef DOP_CACHE_CMD_H
#define DOP_CACHE_CMD_H

/* argv[0] is the word after "cache" (ls, stats, ...); argc counts from there.
 * Prints to stdout/stderr; returns the exit status (0 ok, 1 failed, 2 usage). */
int dop_cache_command(int argc, char **argv);

#endif
