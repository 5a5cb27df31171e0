package gateway

import "syscall"

// syscallEMFILE: running out of file descriptors is transient for a server; retry Accept.
var syscallEMFILE = syscall.EMFILE
