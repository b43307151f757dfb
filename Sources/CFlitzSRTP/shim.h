// libsrtp2 (Debian libsrtp2-dev): SRTP and SRTCP per RFC 3711 and RFC 7714 (protocol/calls.md 6).
#include <srtp2/srtp.h>
