#include "CPacketBuffersShims.h"

__thread char fastalloc_thread_tag __attribute__((tls_model("initial-exec")));
