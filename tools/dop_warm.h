/* dop warm (tools/dop_warm.c) and the named GPU profiles it knows. */
#ifndef DOP_TOOLS_WARM_H
#define DOP_TOOLS_WARM_H

#include "dop.h"

int dop_warm_command(int argc, char **argv);
/* Fills *out with a named profile's fingerprint; 0, or -1 if unknown. */
int dop_warm_profile(const char *name, dop_device_info *out);
const char *dop_warm_profile_names(void);

#endif
