/* Helpers shared by the built-in middleware (lib/mw/). */
#ifndef NOOK_MW_UTIL_H
#define NOOK_MW_UTIL_H

#include "nook.h"

/* The client's address without the port, as a view into `peer` (nook_req_peer's text):
 * "127.0.0.1:51234" → "127.0.0.1", "[::1]:4000" → "::1", "unix" → "unix". Text of any other
 * shape is returned whole. */
nook_str mw_peer_host(nook_str peer);

#endif
