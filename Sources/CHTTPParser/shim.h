#ifndef FASTALLOC_CHTTPPARSER_SHIM_H
#define FASTALLOC_CHTTPPARSER_SHIM_H

// Debian's libhttp-parser-dev (nodejs/http-parser 2.9): a real HTTP/1.1 request parser for the
// stats endpoint. The parser's fields are bitfields; these accessors read them for Swift.
#include <http_parser.h>

static inline unsigned int fastalloc_http_method(const http_parser *parser) { return parser->method; }
static inline unsigned int fastalloc_http_errno(const http_parser *parser) { return parser->http_errno; }
static inline unsigned int fastalloc_http_upgrade(const http_parser *parser) { return parser->upgrade; }
static inline unsigned long long fastalloc_http_content_length(const http_parser *parser) { return parser->content_length; }

#endif
