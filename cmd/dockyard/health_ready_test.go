package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/blobstore/s3test"
	"github.com/dockyard/dockyard/index/pgtest"
)

// /-/healthy answers while the process runs; /-/ready turns 503, naming the check,
// while PostgreSQL or the S3 server is down, and 200 again once it is back — without
// credentials, with authentication on.
func TestReadinessFollowsTheIndexAndTheStorage(t *testing.T) {
	srv := s3test.Need(t, s3server)
	pgs := pgtest.Need(t, pgserver)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "htpasswd"), nil, 0o600)
	cfgFile := sharedConfig(t, dir, "auth: {mode: basic, users_file: htpasswd}\n")
	addr, stop := serveWith(t, cfgFile, filepath.Join(dir, "data"))
	defer stop()
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	checks := func(body map[string]any) string {
		c, _ := body["checks"].(map[string]any)
		return fmt.Sprintf("index=%v storage=%v", c["index"], c["storage"])
	}
	// until waits (bounded) for /-/ready to answer want with those checks.
	until := func(what string, want int, wantChecks string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, body := get("/-/ready")
			if st == want && checks(body) == wantChecks {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /-/ready is %d %s, want %d %s", what, st, checks(body), want, wantChecks)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if st, _ := get("/-/healthy"); st != 200 {
		t.Errorf("/-/healthy: %d", st)
	}
	until("all up", 200, "index=ok storage=ok")

	srv.Pause()
	until("S3 down", 503, "index=ok storage=unavailable")
	if st, _ := get("/-/healthy"); st != 200 {
		t.Errorf("/-/healthy with S3 down: %d (liveness must not follow dependencies)", st)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	until("S3 back", 200, "index=ok storage=ok")

	if err := pgs.Pause(); err != nil {
		t.Fatal(err)
	}
	until("PostgreSQL down", 503, "index=unavailable storage=ok")
	if err := pgs.Resume(); err != nil {
		t.Fatal(err)
	}
	until("PostgreSQL back", 200, "index=ok storage=ok")
}

// Metrics on an address of their own (metrics.listen), with the jobs' counters and the
// Go runtime's beside the gateway's.
func TestMetricsOnTheirOwnAddress(t *testing.T) {
	dir := t.TempDir()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	maddr := ln.Addr().String()
	ln.Close()
	cfgFile := filepath.Join(dir, "c.yaml")
	os.WriteFile(cfgFile, []byte("listen: 127.0.0.1:0\nmetrics: {listen: \""+maddr+"\"}\n"), 0o600)
	var errb bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- serve([]string{"--config", cfgFile, "--data", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0"}, &errb)
	}()
	scrape := func() string {
		for range 100 {
			resp, err := http.Get("http://" + maddr + "/metrics")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return string(b)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("no metrics on %s: %s", maddr, errb.String())
		return ""
	}
	body := scrape()
	if !strings.Contains(body, "dockyard_gc_runs_total 0") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics without the jobs' counters or the runtime's:\n%.2000s", body)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
}
