package cache

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// extract unpacks a tar.gz data directory into a temp dir.
func extract(t *testing.T, archive string) string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		out, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, os.FileMode(h.Mode))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, tr); err != nil {
			t.Fatal(err)
		}
		out.Close()
	}
}

// A data directory written by the previous version (index format 1, see
// testdata/make-v1.sh) opens, is upgraded, and everything in it is there: images,
// indexes, referrers, tags, pull records, CI tokens, the pending references of sparse
// content (counted once the content arrives) and a half-done upload that completes.
func TestADataDirectoryOfTheFirstFormatIsUpgraded(t *testing.T) {
	var want struct {
		App                 string `json:"app"`
		GhostManifest       string `json:"ghost_manifest"`
		GhostManifestDigest string `json:"ghost_manifest_digest"`
		GhostLayer          string `json:"ghost_layer"`
		GhostLayerDigest    string `json:"ghost_layer_digest"`
		Upload              string `json:"upload"`
		Half                string `json:"half"`
		Token               string `json:"token"`
	}
	b, err := os.ReadFile("testdata/v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	dir := extract(t, "testdata/v1.tar.gz")
	s, err := Open(Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if v, err := s.formatVersion(); err != nil || v != formatVersion {
		t.Fatalf("format after opening: %d %v, want %d", v, err, formatVersion)
	}
	// A crash after the migration but before the version was written runs it again.
	if err := s.splitPendingReferences(); err != nil {
		t.Fatal(err)
	}
	clean(t, s)

	m, err := s.GetManifest(ctx, "dev", "team/app", oci.Reference{Tag: "1.0"})
	if err != nil || string(m.Digest) != want.App || oci.FromBytes(oci.SHA256, m.Content) != m.Digest {
		t.Fatalf("team/app:1.0: %v %+v", err, m)
	}
	parsed, _ := oci.ParseManifest(m.MediaType, m.Content)
	for _, l := range parsed.RequiredBlobs() {
		rc, _, err := s.OpenBlob(ctx, "dev", "team/app", l.Digest)
		if err != nil {
			t.Fatalf("blob %s of team/app:1.0: %v", l.Digest, err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		if oci.FromBytes(oci.SHA256, data) != l.Digest {
			t.Errorf("blob %s reads back as %s", l.Digest, oci.FromBytes(oci.SHA256, data))
		}
	}
	idx, err := s.GetManifest(ctx, "dev", "team/multi", oci.Reference{Tag: "2.0"})
	if err != nil {
		t.Fatal(err)
	}
	pidx, _ := oci.ParseManifest(idx.MediaType, idx.Content)
	for _, c := range pidx.Children {
		if _, err := s.GetManifest(ctx, "dev", "team/multi", oci.Reference{Digest: c.Digest}); err != nil {
			t.Errorf("child %s of team/multi:2.0: %v", c.Digest, err)
		}
	}
	if refs, err := s.Referrers(ctx, "dev", "team/app", oci.Digest(want.App)); err != nil || len(refs) != 1 {
		t.Errorf("referrers of team/app:1.0: %v %v", refs, err)
	}
	if _, tagged, err := s.PullInfo(ctx, "dev", "team/app", "1.0", oci.Digest(want.App)); err != nil || tagged.Pulls < 3 {
		t.Errorf("pull record of team/app:1.0: %+v %v", tagged, err)
	}
	id := strings.Split(strings.TrimPrefix(want.Token, "dyt_"), "_")[0]
	if _, ok, err := s.CITokenRecords().Get(id); !ok || err != nil {
		t.Errorf("CI token %s: %v %v", id, ok, err)
	}

	// The sparse index waited for the ghost manifest as a child, the sparse image for
	// the ghost layer as a layer: each is counted when it arrives, as its own kind.
	putBlob(t, s, "dev", "team/sparse", []byte("{}"))
	ghost := putManifest(t, s, "dev", "team/sparse", []byte(want.GhostManifest), false)
	if string(ghost) != want.GhostManifestDigest {
		t.Fatalf("ghost manifest digest %s, want %s", ghost, want.GhostManifestDigest)
	}
	if _, m := refs(t, s, ghost); m != 2 {
		t.Errorf("ghost manifest: %d references, want 2 (the sparse index, the repository)", m)
	}
	if gl := putBlob(t, s, "dev", "team/sparse", []byte(want.GhostLayer)); string(gl) != want.GhostLayerDigest {
		t.Fatalf("ghost layer digest %s", gl)
	} else if b, _ := refs(t, s, gl); b != 1 {
		t.Errorf("ghost layer: %d references, want 1 (the sparse image)", b)
	}

	// The half-done upload goes on from where it stopped.
	u, err := s.GetUpload(ctx, "dev", "team/app", want.Upload)
	if err != nil || u.Offset != int64(len(want.Half)) {
		t.Fatalf("the half-done upload: %+v %v", u, err)
	}
	rest := "and the second half after the upgrade"
	d := oci.FromBytes(oci.SHA256, []byte(want.Half+rest))
	if _, err := s.FinishUpload(ctx, "dev", "team/app", want.Upload, d, u.Offset, strings.NewReader(rest), int64(len(rest))); err != nil {
		t.Fatalf("finishing the upload: %v", err)
	}
	rc, _, err := s.OpenBlob(ctx, "dev", "team/app", d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != want.Half+rest {
		t.Errorf("the finished upload reads %q", got)
	}
	clean(t, s)
}

// An index written by a newer dockyard is refused, not misread.
func TestANewerIndexFormatIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update(func(txn index.Txn) error { return txn.Set(formatKey, []byte("99")) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Errorf("opening format 99: %v", err)
	}
}
