#ifndef TRACER_CCURL_SHIM_H
#define TRACER_CCURL_SHIM_H
#include <curl/curl.h>

// curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call: typed wrappers.
static inline CURLcode tracer_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode tracer_curl_setopt_ptr(CURL *handle, CURLoption option, const void *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode tracer_curl_setopt_off(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}
typedef size_t (*tracer_curl_data_callback)(char *data, size_t size, size_t count, void *userdata);
static inline CURLcode tracer_curl_setopt_callback(CURL *handle, CURLoption option, tracer_curl_data_callback cb) {
    return curl_easy_setopt(handle, option, cb);
}
static inline CURLcode tracer_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}
#endif
