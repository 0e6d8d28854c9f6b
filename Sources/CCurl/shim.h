// libcurl for the agent's downloads from external artifact hosts (Artifactory, S3, any
// HTTP/1.1 or HTTP/2 server). curl_easy_setopt and curl_easy_getinfo are variadic, which
// Swift cannot call: these typed wrappers can be.
#include <curl/curl.h>

static inline CURLcode flotilla_curl_set_long(CURL *curl, CURLoption option, long value) {
    return curl_easy_setopt(curl, option, value);
}
static inline CURLcode flotilla_curl_set_off(CURL *curl, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(curl, option, value);
}
static inline CURLcode flotilla_curl_set_string(CURL *curl, CURLoption option, const char *value) {
    return curl_easy_setopt(curl, option, value);
}
static inline CURLcode flotilla_curl_set_pointer(CURL *curl, CURLoption option, void *value) {
    return curl_easy_setopt(curl, option, value);
}
typedef size_t (*flotilla_curl_write_callback)(char *data, size_t size, size_t count, void *context);
static inline CURLcode flotilla_curl_set_write(CURL *curl, flotilla_curl_write_callback callback) {
    return curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, callback);
}
static inline long flotilla_curl_response_code(CURL *curl) {
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    return code;
}
