//go:build !linux

package index

// DiskFree returns nil: free space is not measured here, so no reserve is kept.
func DiskFree(dir string) func() (int64, error) { return nil }

// SameFilesystem reports false: filesystems are not told apart here.
func SameFilesystem(a, b string) bool { return false }
