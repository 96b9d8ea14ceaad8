//go:build !linux

package blobstore

// partBuffer allocates a part buffer.
func partBuffer(n int) []byte { return make([]byte, n) }
