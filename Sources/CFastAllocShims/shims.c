#include "CFastAllocShims.h"

__thread fastalloc_magazine_cache fastalloc_magazine_tls __attribute__((tls_model("initial-exec")));
