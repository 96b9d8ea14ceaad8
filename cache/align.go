package cache

import "unsafe"

// directAlign is the alignment O_DIRECT needs for file offsets, lengths and memory.
const directAlign = 4096

// alignedBuffer returns a buffer of n bytes whose first byte is directAlign-aligned.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := 0
	if rem := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); rem != 0 {
		skip = directAlign - rem
	}
	return b[skip : skip+n : skip+n]
}

func isAligned(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%directAlign == 0
}
