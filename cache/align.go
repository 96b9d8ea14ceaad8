package cache

import (
	"unsafe"

	"github.com/dockyard/dockyard/blobstore"
)

// directAlign is the alignment of copy buffers: the filesystem store writes aligned
// blocks past the page cache (O_DIRECT).
const directAlign = blobstore.BlockSize

// alignedBuffer returns a buffer of n bytes whose first byte is directAlign-aligned.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := 0
	if rem := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); rem != 0 {
		skip = directAlign - rem
	}
	return b[skip : skip+n : skip+n]
}
