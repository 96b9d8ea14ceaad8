// Package mountns is for tests that mount small filesystems (tmpfs) to fill them: each
// such test runs again, alone, in a mount namespace of its own, where its mounts are
// invisible to the rest of the machine and end with it, whatever happens — a crash
// included. Mounting needs root; where the tests must run (DOCKYARD_MOUNT_TESTS=1:
// make test, as root) they fail instead of skipping.
package mountns

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"
)

// env names the test a process runs in a mount namespace of its own.
const env = "DOCKYARD_TEST_IN_MOUNT_NAMESPACE"

// Enter runs the calling test again, alone, in a private mount namespace (unshare
// --mount). It returns true in that run, false in the calling one, which has then
// reported the result (a crash of the run is the test's failure).
func Enter(t *testing.T) bool {
	if os.Getenv(env) == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		SkipUnlessRequired(t, "mounting a small filesystem needs root")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		SkipUnlessRequired(t, "unshare (util-linux) is not installed")
	}
	if out, err := exec.Command(unshare, "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
		SkipUnlessRequired(t, fmt.Sprintf("unshare --mount: %v %s", err, out))
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "private",
		os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), env+"="+t.Name())
	out, err := cmd.CombinedOutput()
	switch {
	case err == nil && bytes.Contains(out, []byte("--- PASS: "+t.Name())):
		t.Logf("in its mount namespace:\n%s", out)
	case err == nil && bytes.Contains(out, []byte("--- SKIP: "+t.Name())):
		SkipUnlessRequired(t, "skipped in its mount namespace:\n"+string(out))
	default:
		t.Fatalf("in its mount namespace: %v\n%s", err, out)
	}
	return false
}

// Tmpfs mounts a tmpfs of size bytes on dir until the test ends.
func Tmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		SkipUnlessRequired(t, fmt.Sprintf("mount a tmpfs: %v", err))
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// Free is the space available on dir's filesystem.
func Free(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// Fill makes another program's file take all but leave bytes of dir's filesystem (to
// the last byte with leave 0), and returns what removes it.
func Fill(t *testing.T, dir string, leave int64) (remove func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, "other-program-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := Free(t, dir) - leave; n > 0 {
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
			t.Fatalf("fill %s: %v", dir, err)
		}
	}
	if leave == 0 {
		f.Seek(0, io.SeekEnd)
		page := make([]byte, 4096)
		for {
			if _, err := f.Write(page); err != nil {
				break
			}
		}
	}
	if free := Free(t, dir); free > leave {
		t.Fatalf("fill %s: %d bytes free, want %d", dir, free, leave)
	}
	return func() {
		if err := os.Remove(f.Name()); err != nil {
			t.Fatal(err)
		}
	}
}

// SkipUnlessRequired skips t, or fails it where mount tests must run.
func SkipUnlessRequired(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("DOCKYARD_MOUNT_TESTS") != "" {
		t.Fatal(why)
	}
	t.Skip(why + " (make test runs this as root)")
}

// Inside reports whether this process is a test run again in its mount namespace
// (a TestMain starts no shared servers for it).
func Inside() bool { return os.Getenv(env) != "" }
