// Package pgtest starts a throwaway PostgreSQL cluster (Debian's postgresql, run as the
// postgres user when the tests run as root) for the tests of every package that keeps
// its index in PostgreSQL. It is for tests only.
package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a running cluster with one database, dockyard.
type Server struct {
	DSN  string // postgres://postgres@127.0.0.1:PORT/dockyard?sslmode=disable
	Port int
	bin  string
	dir  string
	mu   sync.Mutex
	dbs  int
}

// ErrUnavailable: PostgreSQL's programs were not found.
var ErrUnavailable = errors.New("pgtest: PostgreSQL is not installed (make tools installs Debian's postgresql)")

// Required tells whether PostgreSQL tests must run (make test sets DOCKYARD_PG_TESTS=1);
// otherwise they are skipped when PostgreSQL is missing.
func Required() bool { return os.Getenv("DOCKYARD_PG_TESTS") == "1" }

// binDir is the newest /usr/lib/postgresql/*/bin.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) < version(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	return "", ErrUnavailable
}

func version(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// Start initialises a cluster in a new temporary directory and starts it on a free
// loopback port.
func Start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dockyard-pg-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	if asRoot() {
		pg, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{Port: port, bin: bin, dir: dir,
		DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/dockyard?sslmode=disable", port)}
	if err := s.run("initdb", "-D", s.dir+"/db", "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.Resume(); err != nil {
		s.Stop()
		return nil, err
	}
	if err := s.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "dockyard"); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func asRoot() bool { return os.Geteuid() == 0 }

// run runs one of PostgreSQL's programs, as the postgres user when we are root.
func (s *Server) run(prog string, args ...string) error {
	path := filepath.Join(s.bin, prog)
	var cmd *exec.Cmd
	if asRoot() {
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		cmd = exec.Command("su", "postgres", "-s", "/bin/sh", "-c", path+" "+strings.Join(quoted, " "))
	} else {
		cmd = exec.Command(path, args...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s: %v: %s", prog, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Resume starts the cluster (again, after Pause) and waits until it accepts
// connections.
func (s *Server) Resume() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", s.Port, s.dir)
	if err := s.run("pg_ctl", "-D", s.dir+"/db", "-o", opts, "-l", s.dir+"/log", "-w", "-t", "30", "start"); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port)); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("pgtest: PostgreSQL did not listen on %d", s.Port)
}

// Pause stops the cluster at once (as a crash would); Resume brings it back.
func (s *Server) Pause() error {
	return s.run("pg_ctl", "-D", s.dir+"/db", "-m", "immediate", "-w", "stop")
}

// Stop stops the cluster and removes its files.
func (s *Server) Stop() {
	s.Pause()
	os.RemoveAll(s.dir)
}

// Shared starts one cluster for a test binary (call it from TestMain). It returns nil
// when PostgreSQL is missing and its tests are not required.
func Shared() (*Server, error) {
	s, err := Start()
	if errors.Is(err, ErrUnavailable) && !Required() {
		return nil, nil
	}
	return s, err
}

// Main is the TestMain of a package with PostgreSQL tests: it starts the shared
// cluster into *srv (nil when PostgreSQL is missing and its tests are not required),
// runs the tests and stops it.
func Main(m *testing.M, srv **Server) {
	s, err := Shared()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*srv = s
	if s != nil {
		// For tests inside package index, which cannot reach srv: its default database.
		os.Setenv("DOCKYARD_TEST_PG_DSN", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.Port))
	}
	code := m.Run()
	if s != nil {
		s.Stop()
	}
	os.Exit(code)
}

// Need returns the shared cluster or skips t when there is none.
func Need(t testing.TB, s *Server) *Server {
	t.Helper()
	if s == nil {
		t.Skip("PostgreSQL is not installed; PostgreSQL cases skipped (make test runs them)")
	}
	return s
}

// NewDatabase creates a fresh database on the cluster and returns its DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	s.dbs++
	name := fmt.Sprintf("t%d", s.dbs)
	s.mu.Unlock()
	if err := s.run("createdb", "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", name); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, name)
}
