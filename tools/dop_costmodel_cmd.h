/*
 * dop_costmodel_cmd.h -- `dop costmodel ...`: evaluate, train and list cost
 * models (tools/dop_costmodel_cmd.c).
 */
#ifndef DOP_COSTMODEL_CMD_H
#define DOP_COSTMODEL_CMD_H

/* argv[0] is the word after "costmodel" (eval, train, show); argc counts from
 * there. Prints to stdout/stderr; returns the exit status (0 ok, 1 failed, 2 usage). */
int dop_costmodel_main(int argc, char **argv);

#endif
