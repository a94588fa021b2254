#ifndef FASTALLOC_CYAML_SHIM_H
#define FASTALLOC_CYAML_SHIM_H

// Debian's libyaml-dev (libyaml 0.2, the YAML 1.1 parser PyYAML and Yams build on): its event
// parser, whose every event carries its line, for the server's config file (ConfigYAML).
#include <yaml.h>

#endif
