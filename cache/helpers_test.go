package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/index/pgtest"
	"github.com/dockyard/dockyard/oci"
)

// testStore opens a store in a temp dir on an optional clock.
func testStore(t *testing.T, now func() time.Time) *Store {
	t.Helper()
	o := Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now}
	if os.Getenv("DOCKYARD_CACHE_TESTS_INDEX") == "postgres" {
		db, err := index.OpenPostgres(context.Background(), index.PostgresOptions{DSN: pgtest.Need(t, pg).NewDatabase(t)})
		if err != nil {
			t.Fatal(err)
		}
		o.Index = db
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// putBlob stores b in reg/repo and returns its digest.
func putBlob(t *testing.T, s *Store, reg, repo string, b []byte) oci.Digest {
	t.Helper()
	d := oci.FromBytes(oci.SHA256, b)
	if _, err := s.PutBlob(context.Background(), reg, repo, d, bytes.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	return d
}

func desc(mt string, d oci.Digest, size int) string {
	return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mt, d, size)
}

// imageManifest is an OCI image manifest over config and layers (digest, size pairs
// given as descriptors' JSON).
func imageManifest(config string, layers ...string) []byte {
	l := ""
	for i, x := range layers {
		if i > 0 {
			l += ","
		}
		l += x
	}
	return []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + config + `,"layers":[` + l + `]}`)
}

func indexManifest(children ...string) []byte {
	c := ""
	for i, x := range children {
		if i > 0 {
			c += ","
		}
		c += x
	}
	return []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + c + `]}`)
}

// putManifest stores manifest bytes in reg/repo under tags (sparse: what it lists need
// not exist) and returns its digest.
func putManifest(t *testing.T, s *Store, reg, repo string, b []byte, sparse bool, tags ...oci.Tag) oci.Digest {
	t.Helper()
	d, err := tryPutManifest(s, reg, repo, b, sparse, tags...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func tryPutManifest(s *Store, reg, repo string, b []byte, sparse bool, tags ...oci.Tag) (oci.Digest, error) {
	m, err := oci.ParseManifest("", b)
	if err != nil {
		return "", err
	}
	d := oci.FromBytes(oci.SHA256, b)
	return d, s.PutManifest(context.Background(), PutManifestRequest{Registry: reg, Repo: repo, Digest: d,
		Content: b, Manifest: m, Tags: tags, AllowSparse: sparse})
}

// refs returns the blob and manifest reference counts of d (-1: no record).
func refs(t *testing.T, s *Store, d oci.Digest) (int64, int64) {
	t.Helper()
	b, m, err := s.RefCounts(d)
	if err != nil {
		t.Fatal(err)
	}
	return b, m
}

// clean fails the test unless fsck finds nothing wrong.
func clean(t *testing.T, s *Store) {
	t.Helper()
	rep, err := s.Check(context.Background(), CheckOptions{VerifyDigests: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) > 0 {
		t.Errorf("fsck: %v", rep.Problems)
	}
}

// pg is a PostgreSQL cluster for running the store's tests on the PostgreSQL index
// (DOCKYARD_CACHE_TESTS_INDEX=postgres).
var pg *pgtest.Server

func TestMain(m *testing.M) {
	if os.Getenv("DOCKYARD_CACHE_TESTS_INDEX") != "postgres" {
		os.Exit(m.Run())
	}
	pgtest.Main(m, &pg)
}
