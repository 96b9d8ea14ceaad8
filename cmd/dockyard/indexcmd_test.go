package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/dockyard/dockyard/index/pgtest"
)

// A single node's Badger index moved into PostgreSQL: every image pulls through the
// PostgreSQL index afterwards, an upload begun before the move finishes after it, a
// second copy writes nothing, fsck is clean, and another node's index is refused.
func TestIndexCopyFromBadgerToPostgres(t *testing.T) {
	dsn := pgtest.Need(t, pgserver).NewDatabase(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	single := filepath.Join(dir, "single.yaml")
	os.WriteFile(single, []byte("{}\n"), 0o600)
	clustered := filepath.Join(dir, "pg.yaml")
	t.Setenv("COPY_TEST_DSN", dsn)
	os.WriteFile(clustered, []byte("index: {driver: postgres, postgres: {dsn_env: COPY_TEST_DSN}}\n"), 0o600)

	addr, stop := serveWith(t, single, data)
	digests := map[string]string{}
	for _, tag := range []string{"1", "2", "3"} {
		img, _ := random.Image(300<<10, 2)
		ref, _ := name.ParseReference(addr+"/team/app:"+tag, name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		digests[tag] = d.String()
	}
	blob := bytes.Repeat([]byte("half-done upload "), 1<<16)
	resp, err := http.Post("http://"+addr+"/v2/team/up/blobs/uploads/", "", nil)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("POST: %v %v", resp, err)
	}
	req, _ := http.NewRequest("PATCH", "http://"+addr+resp.Header.Get("Location"), bytes.NewReader(blob[:len(blob)/2]))
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("PATCH: %v %v", resp, err)
	}
	loc := resp.Header.Get("Location")
	stop()

	var mig bytes.Buffer
	if err := run([]string{"index", "migrate", "--config", clustered, "--data", filepath.Join(dir, "migrate")}, &mig, &mig); err != nil ||
		!strings.Contains(mig.String(), "up to date") {
		t.Fatalf("index migrate on an empty database: %v %s", err, mig.String())
	}
	copyOnce := func() string {
		var out, errb bytes.Buffer
		if err := run([]string{"index", "copy", "--from", "badger:" + data, "--config", clustered}, &out, &errb); err != nil {
			t.Fatalf("index copy: %v %s", err, errb.String())
		}
		return out.String()
	}
	first := copyOnce()
	if !strings.Contains(first, "verified") || strings.Contains(first, " 0 written") {
		t.Errorf("first copy: %s", first)
	}
	if again := copyOnce(); !strings.Contains(again, " 0 written") {
		t.Errorf("a second copy wrote again: %s", again)
	}

	addr, stop = serveWith(t, clustered, data)
	defer stop()
	var refused bytes.Buffer
	if err := run([]string{"index", "copy", "--from", "badger:" + data, "--config", clustered}, &refused, &refused); err == nil ||
		!strings.Contains(err.Error(), "serving") {
		t.Errorf("a copy into an index instances serve: %v", err)
	}
	for tag, want := range digests {
		ref, _ := name.ParseReference(addr+"/team/app:"+tag, name.Insecure)
		img, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("team/app:%s after the copy: %v", tag, err)
		}
		if d, _ := img.Digest(); d.String() != want {
			t.Errorf("team/app:%s is %s, want %s", tag, d, want)
		}
		layers, _ := img.Layers()
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			buf.ReadFrom(rc)
			rc.Close()
		}
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ = http.NewRequest("PUT", fmt.Sprintf("http://%s%s%sdigest=sha256:%x", addr, loc, sep, sha256Sum(blob)), bytes.NewReader(blob[len(blob)/2:]))
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("finishing the upload begun before the copy: %v %v", resp, err)
	}
	stop()
	var out bytes.Buffer
	if err := run([]string{"fsck", "--repair", "--config", clustered, "--data", data}, &out, &out); err != nil {
		t.Errorf("fsck --repair after the copy, no instance serving: %v\n%s", err, out.String())
	}

	// Another node's index into the same database: refused, nothing written.
	other := filepath.Join(dir, "other")
	addr, stop = serveWith(t, single, other)
	img, _ := random.Image(1024, 1)
	ref, _ := name.ParseReference(addr+"/else/where:1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	stop()
	var errb bytes.Buffer
	err = run([]string{"index", "copy", "--from", "badger:" + other, "--config", clustered}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("copying another node's index over this one: %v", err)
	}
}
