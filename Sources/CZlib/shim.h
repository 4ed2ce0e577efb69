#ifndef TRACER_CZLIB_SHIM_H
#define TRACER_CZLIB_SHIM_H
#include <zlib.h>

/// `deflateInit2` is a macro Swift cannot import: start a gzip-wrapped (windowBits 15 + 16) deflate stream.
static inline int tracer_deflate_init_gzip(z_stream *stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
#endif
