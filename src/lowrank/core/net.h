// Small socket helpers for the programs that start servers or ranks on this machine.
#pragma once

namespace lowrank {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back, released), for
// a child process to listen on. Another process may take it in between; callers that can should
// let the server pick its own port instead. Throws IoError when no socket can be bound.
int free_loopback_port();

}  // namespace lowrank
