//go:build !linux

package store

// mmapFlags: MAP_POPULATE is Linux's.
const mmapFlags = 0
