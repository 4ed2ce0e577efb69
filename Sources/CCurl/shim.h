#ifndef TRACER_CCURL_SHIM_H
#define TRACER_CCURL_SHIM_H
#include <curl/curl.h>
#endif
