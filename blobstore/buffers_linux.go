package blobstore

import "syscall"

// partBuffer allocates a part buffer outside the Go heap: the pool keeps its buffers
// for the life of the process, and as heap memory they would let the collector leave
// as much garbage again before each collection (the heap goal grows with what is
// live).
func partBuffer(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n)
	}
	return b
}
