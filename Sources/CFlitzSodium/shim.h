#ifndef CFLITZ_SODIUM_SHIM_H
#define CFLITZ_SODIUM_SHIM_H
#include <sodium.h>
#endif
