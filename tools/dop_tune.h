/* dop tune (tools/dop_tune.c): measured tuning of the layout classes of a model's shapes. */
#ifndef DOP_TOOLS_TUNE_H
#define DOP_TOOLS_TUNE_H

int dop_tune_command(int argc, char **argv);

#endif
