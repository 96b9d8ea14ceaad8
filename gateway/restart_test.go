package gateway_test

import (
	"bytes"
	"crypto/rand"
	"net/http"
	"strconv"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func TestPushedContentSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	r := startRegistry(t, dir, registryOptions{})
	img, err := random.Image(512<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := random.Index(64<<10, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r.ref("keep/img:v1"), img); err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r.ref("keep/idx:v1"), idx); err != nil {
		t.Fatal(err)
	}
	rawImg, _ := img.RawManifest()
	rawIdx, _ := idx.RawManifest()
	r.stop()

	r = startRegistry(t, dir, registryOptions{})
	got, err := remote.Image(r.ref("keep/img:v1"))
	if err != nil {
		t.Fatalf("pull after restart: %v", err)
	}
	if raw, _ := got.RawManifest(); !bytes.Equal(raw, rawImg) {
		t.Errorf("image manifest changed across restart")
	}
	if err := validate.Image(got); err != nil {
		t.Errorf("image after restart: %v", err)
	}
	gotIdx, err := remote.Index(r.ref("keep/idx:v1"))
	if err != nil {
		t.Fatalf("pull index after restart: %v", err)
	}
	if raw, _ := gotIdx.RawManifest(); !bytes.Equal(raw, rawIdx) {
		t.Errorf("index manifest changed across restart")
	}
	if err := validate.Index(gotIdx); err != nil {
		t.Errorf("index after restart: %v", err)
	}
}

func TestChunkedUploadResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	blob := make([]byte, 3<<20+17)
	rand.Read(blob)
	first := blob[:2<<20]

	r := startRegistry(t, dir, registryOptions{})
	loc := r.startUpload("resume/app")
	resp := r.do("PATCH", loc, first, "Content-Type", "application/octet-stream", "Content-Range", "0-"+strconv.Itoa(len(first)-1))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first chunk: %d %s", resp.StatusCode, resp.body)
	}
	r.stop()

	r = startRegistry(t, dir, registryOptions{})
	resp = r.do("GET", loc, nil)
	wantRange := "0-" + strconv.Itoa(len(first)-1)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != wantRange {
		t.Fatalf("upload status after restart: %d Range %q, want 204 %q", resp.StatusCode, resp.Header.Get("Range"), wantRange)
	}
	rest := blob[len(first):]
	resp = r.do("PATCH", resp.Header.Get("Location"), rest, "Content-Type", "application/octet-stream",
		"Content-Range", strconv.Itoa(len(first))+"-"+strconv.Itoa(len(blob)-1))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("second chunk: %d %s", resp.StatusCode, resp.body)
	}
	d := sha256Of(blob)
	resp = r.do("PUT", resp.Header.Get("Location")+"?digest="+d, nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("closing PUT: %d %s", resp.StatusCode, resp.body)
	}
	got := r.do("GET", "/v2/resume/app/blobs/"+d, nil)
	if got.StatusCode != http.StatusOK || !bytes.Equal(got.body, blob) {
		t.Fatalf("blob after resumed upload: status %d, %d bytes, equal=%v", got.StatusCode, len(got.body), bytes.Equal(got.body, blob))
	}
}
