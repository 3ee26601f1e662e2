package store

import "syscall"

// mmapFlags prefault the state file's pages when it is opened: otherwise
// a large file's first touches, all over the tree as hashed keys are
// written, each take a page fault while the router serves.
const mmapFlags = syscall.MAP_POPULATE
