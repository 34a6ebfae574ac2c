// Private: struct tcp_info (netinet/tcp.h) as deadpeer's tcp_snapshot, shared by TCP_INFO
// (getsockopt on our own sockets) and INET_DIAG_INFO (sock_diag on anyone's).
#pragma once

#include <deadpeer/tcp_info.hpp>

#ifdef __linux__
#include <netinet/tcp.h>

namespace deadpeer {

tcp_snapshot snapshot_of(const ::tcp_info& info);

}  // namespace deadpeer
#endif
