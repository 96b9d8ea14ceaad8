// Package refreg starts the CNCF reference registry (distribution v3, installed into
// .tools/registry by make tools) for Go tests that need a real registry as a peer: an
// upstream for the proxy, a source for import.
package refreg

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Options tune the registry.
type Options struct {
	// User and Password, when set, make the registry require them (htpasswd, Basic).
	User, Password string
}

// Binary finds the registry: $DOCKYARD_REGISTRY, .tools/registry at the module's
// root, or registry in PATH. Without one the test is skipped, or fails when
// DOCKYARD_REGISTRY_TESTS is set (make test sets it, and installs the registry).
func Binary(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("DOCKYARD_REGISTRY"); bin != "" {
		return bin
	}
	if dir, err := os.Getwd(); err == nil {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				if p := filepath.Join(dir, ".tools", "registry"); isFile(p) {
					return p
				}
				break
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	if p, err := exec.LookPath("registry"); err == nil {
		return p
	}
	if os.Getenv("DOCKYARD_REGISTRY_TESTS") != "" {
		tb.Fatal("the CNCF reference registry is not installed (make tools installs it into .tools/)")
	}
	tb.Skip("the CNCF reference registry is not installed; make test runs this")
	return ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Start runs the registry on a free loopback port, with filesystem storage in a
// temporary directory (in memory where /dev/shm exists: the registry syncs every file
// it writes), until the test ends. It returns the registry's host:port.
func Start(tb testing.TB, o Options) string {
	tb.Helper()
	bin := Binary(tb)
	dir := memDir(tb)
	auth := ""
	if o.User != "" {
		// The lowest bcrypt cost: the registry checks the password on every request.
		hash, err := bcrypt.GenerateFromPassword([]byte(o.Password), bcrypt.MinCost)
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(o.User+":"+string(hash)+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd: {realm: refreg, path: %s}\n", filepath.Join(dir, "htpasswd"))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	config := fmt.Sprintf(`version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: %s}
http: {addr: %s}
%s`, filepath.Join(dir, "data"), addr, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	log := &lockedBuffer{}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return addr
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the reference registry did not start: %v\n%s", err, log.String())
		}
	}
}

// lockedBuffer is the registry's output, read while it may still write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// memDir is a temporary directory in /dev/shm where there is one.
func memDir(tb testing.TB) string {
	tb.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "dockyard-refreg-"); err == nil {
			tb.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return tb.TempDir()
}
