package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/dockyard/dockyard/cache"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/test/mountns"
)

// The data directory on small filesystems (tmpfs), filled by pushes and by another
// program: pushes that do not fit fail with 507 and an OCI body, nothing is left half
// committed, pulls go on byte-identical, and pushes work again once there is room,
// without a restart. These tests mount, so each runs in a mount namespace of its own
// (see mountns.Enter).

// Everything shares one filesystem. Pushes stop where the space the index keeps for
// itself begins; the index still takes the writes that free space (a delete, a
// collection); filled to the last byte by another program, even the index refuses
// writes, deletes included (Badger, writing through memory maps, would otherwise kill
// the process).
func TestAFullDiskSharedByBlobsAndIndex(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mountns.Tmpfs(t, data, 192<<20) // uploads leave the index 128 MiB: twice its reserve of four 16 MiB memtables
	cfg := fullDiskConfig(t, dir)
	addr, a, stop := serveApp(t, cfg, data)
	stop = sync.OnceFunc(stop)
	defer stop()

	// Push images of 24 MiB until one does not fit.
	var pushed []v1.Image
	var failed v1.Image
	var err error
	for i := 0; i < 8 && failed == nil; i++ {
		img := bigImage(t, 12<<20, 2)
		if err = push(addr, fmt.Sprintf("team/app%d:v1", i), img); err != nil {
			failed = img
		} else {
			pushed = append(pushed, img)
		}
	}
	if failed == nil || len(pushed) == 0 {
		t.Fatalf("%d images pushed, none refused", len(pushed))
	}
	n := len(pushed)
	t.Logf("%d images pushed; the next: %v", n, err)
	wantStorageFull(t, err, "storage is full")
	nothingHalfCommitted(t, a.store, data)
	if err := head(addr, fmt.Sprintf("team/app%d", n), "v1"); err == nil {
		t.Errorf("the refused image's manifest is there")
	}
	for i, img := range pushed {
		pullSame(t, addr, fmt.Sprintf("team/app%d:v1", i), img)
	}

	// Another program takes the last byte: the index refuses its writes too, even
	// those that free space (a tag's delete, so Badger would write into a page the
	// filesystem does not have), and pulls go on.
	unfill := mountns.Fill(t, data, 0)
	big := annotated(t, pushed[0])
	wantStorageFull(t, push(addr, "team/app0:annotated", big), "storage is full")
	wantStorageFull(t, deleteRef(addr, "team/app0:v1"), "index storage is full")
	for i, img := range pushed {
		pullSame(t, addr, fmt.Sprintf("team/app%d:v1", i), img)
	}
	unfill()

	// Deleting an image and collecting it makes room for the refused one.
	ref, _ := name.ParseReference(fmt.Sprintf("%s/team/app0@%s", addr, digestOf(t, pushed[0])), name.Insecure)
	if err := remote.Delete(ref); err != nil {
		t.Fatalf("delete while full: %v", err)
	}
	collect(t, addr)
	if err := push(addr, fmt.Sprintf("team/app%d:v1", n), failed); err != nil {
		t.Fatalf("the refused image once there is room: %v", err)
	}
	pullSame(t, addr, fmt.Sprintf("team/app%d:v1", n), failed)
	for i := 1; i < n; i++ {
		pullSame(t, addr, fmt.Sprintf("team/app%d:v1", i), pushed[i])
	}
	stop()
	fsckClean(t, cfg, data)
}

// One client pushing manifests one after another (the index keeps them in its value
// log) stops where uploads do, twice the index's reserve from a full disk: the index
// keeps room for the deletes and the collection that free space, and for a restart.
// Manifests used to go on to the index's reserve itself, under which it refused every
// write, deletes and collections included, and could not be opened again.
func TestAFullDiskOfManifestsCanBeEmptied(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mountns.Tmpfs(t, data, 136<<20) // 8 MiB over the 128 MiB left to the index
	cfg := fullDiskConfig(t, dir)
	addr, _, stop := serveApp(t, cfg, data)
	stop = sync.OnceFunc(stop)
	defer stop()
	img := bigImage(t, 1<<10, 1)
	if err := push(addr, "team/app:base", img); err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	var pushed []string
	for i := 0; err == nil; i++ {
		if i == 136 {
			t.Fatalf("136 manifests of 1 MiB pushed on 136 MiB")
		}
		// img's manifest with an annotation of 1 MiB, its own.
		m := fmt.Appendf(bytes.TrimSuffix(bytes.Clone(raw), []byte("}")), `,"annotations":{"padding":"%04d%s"}}`, i, strings.Repeat("x", 1<<20))
		var d string
		if d, err = putManifest(addr, fmt.Sprintf("team/app/manifests/m%d", i), m); err == nil {
			pushed = append(pushed, d)
		}
	}
	t.Logf("%d manifests of 1 MiB pushed; the next: %v; %d MiB free", len(pushed), err, mountns.Free(t, data)>>20)
	wantStorageFull(t, err, "storage is full")
	if free := mountns.Free(t, data); free < 127<<20 {
		t.Errorf("%d KiB free: manifests went past the 128 MiB kept for the index", free>>10)
	}
	if err := deleteRef(addr, "team/app:m0"); err != nil {
		t.Fatalf("delete a tag: %v", err)
	}
	for _, d := range pushed[1:] {
		if err := deleteRef(addr, "team/app@"+d); err != nil {
			t.Fatalf("delete a manifest: %v", err)
		}
	}
	collect(t, addr)
	stop()
	addr, _, stop = serveApp(t, cfg, data)
	pullSame(t, addr, "team/app:base", img)
	stop()
	fsckClean(t, cfg, data)
}

// putManifest puts OCI image manifest m at path (repo/manifests/ref) and returns its
// digest.
func putManifest(addr, path string, m []byte) (string, error) {
	req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/v2/"+path, bytes.NewReader(m))
	req.Header.Set("Content-Type", string(types.OCIManifestSchema1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	return sha256Digest(bytes.NewReader(m)), transport.CheckError(resp, http.StatusCreated)
}

// The index on a filesystem of its own, the blobs on another without any reserve
// (storage.min_free_space: 0): the blobs' filesystem runs out in the middle of an
// upload (ENOSPC), then the index's fills up.
func TestAFullDiskUnderTheBlobsOrUnderTheIndex(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mountns.Tmpfs(t, data, 64<<20)
	mountns.Tmpfs(t, filepath.Join(data, "index"), 160<<20) // manifests leave the index 128 MiB
	cfg := fullDiskConfig(t, dir)
	addr, a, stop := serveApp(t, cfg, data)
	stop = sync.OnceFunc(stop)
	defer stop()

	first := bigImage(t, 8<<20, 2)
	if err := push(addr, "team/first:v1", first); err != nil {
		t.Fatal(err)
	}
	// 8 MiB left for an image of 24: its first layer meets the full disk half way.
	unfill := mountns.Fill(t, data, 8<<20)
	second := bigImage(t, 12<<20, 2)
	wantStorageFull(t, push(addr, "team/second:v1", second), "no room for blob data")
	nothingHalfCommitted(t, a.store, data)
	if err := head(addr, "team/second", "v1"); err == nil {
		t.Errorf("the refused image's manifest is there")
	}
	pullSame(t, addr, "team/first:v1", first)
	unfill()
	if err := push(addr, "team/second:v1", second); err != nil {
		t.Fatalf("once there is room: %v", err)
	}

	// The index's filesystem fills up: pushes are refused from their first request, an
	// 8 KiB manifest of stored layers too, and the chunk of an upload begun before,
	// which the blobs' filesystem took but the index could not record; every pull goes
	// on.
	loc := startUpload(t, addr, "team/chunked")
	unfill = mountns.Fill(t, filepath.Join(data, "index"), 0)
	third := bigImage(t, 1<<20, 1)
	wantStorageFull(t, push(addr, "team/third:v1", third), "index storage is full")
	wantStorageFull(t, push(addr, "team/first:annotated", annotated(t, first)), "index storage is full")
	chunk := bytes.Repeat([]byte("chunk of an upload "), 64<<10)
	wantStorageFull(t, sendChunk(loc, chunk), "index storage is full")
	nothingHalfCommitted(t, a.store, data)
	pullSame(t, addr, "team/first:v1", first)
	pullSame(t, addr, "team/second:v1", second)
	unfill()
	if err := push(addr, "team/third:v1", third); err != nil {
		t.Fatalf("once the index has room: %v", err)
	}
	pullSame(t, addr, "team/third:v1", third)
	if err := sendChunk(loc, chunk); err != nil {
		t.Fatalf("the chunk sent again: %v", err)
	}
	finishUpload(t, addr, loc, chunk)
	nothingHalfCommitted(t, a.store, data)
	stop()
	fsckClean(t, cfg, data)

	// Opening the index writes too: with a page left, Badger would die opening it.
	unfill = mountns.Fill(t, filepath.Join(data, "index"), 4096)
	err := run([]string{"fsck", "--config", cfg, "--data", data}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "index storage is full") {
		t.Errorf("fsck with the index's filesystem full: %v", err)
	}
	unfill()
	fsckClean(t, cfg, data)
}

func fullDiskConfig(t *testing.T, dir string) string {
	path := filepath.Join(dir, "dockyard.yaml")
	if err := os.WriteFile(path, []byte(`storage: {driver: filesystem, min_free_space: 0}
lifecycle: {gc: {interval: 0s, grace: 0s}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// bigImage is an image of layers layers of layerSize random bytes each (stored as
// they are: compressing random bytes gains nothing and costs the race detector time).
func bigImage(t *testing.T, layerSize, layers int64) v1.Image {
	var ls []v1.Layer
	for range layers {
		b := make([]byte, layerSize)
		rand.Read(b)
		ls = append(ls, static.NewLayer(b, types.OCIUncompressedLayer))
	}
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// annotated is img with 8 KiB of annotations in its manifest (its blobs are the same).
func annotated(t *testing.T, img v1.Image) v1.Image {
	return mutate.Annotations(img, map[string]string{"padding": strings.Repeat("x", 8<<10)}).(v1.Image)
}

// push writes img one blob at a time and without retries, so that its first failure
// is what it returns, after the server has answered.
func push(addr, ref string, img v1.Image) error {
	r, err := name.ParseReference(addr+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithJobs(1), remote.WithRetryPredicate(func(error) bool { return false }))
}

// deleteRef deletes ref (a tag, or repo@digest).
func deleteRef(addr, ref string) error {
	r, err := name.ParseReference(addr+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Delete(r)
}

func head(addr, repo, ref string) error {
	r, err := name.ParseReference(addr+"/"+repo+":"+ref, name.Insecure)
	if err != nil {
		return err
	}
	_, err = remote.Head(r)
	return err
}

// pullSame pulls ref and checks it is img: the same manifest bytes, and every blob
// it lists with the bytes its digest names.
func pullSame(t *testing.T, addr, ref string, img v1.Image) {
	t.Helper()
	r, _ := name.ParseReference(addr+"/"+ref, name.Insecure)
	got, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	want, _ := img.RawManifest()
	if raw, err := got.RawManifest(); err != nil || !bytes.Equal(raw, want) {
		t.Fatalf("pull %s: the manifest differs (%v)", ref, err)
	}
	m, _ := got.Manifest()
	config, err := got.RawConfigFile()
	if err != nil || sha256Digest(bytes.NewReader(config)) != m.Config.Digest.String() {
		t.Fatalf("pull %s: the config differs (%v)", ref, err)
	}
	layers, _ := got.Layers()
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("pull %s: layer %d: %v", ref, i, err)
		}
		d := sha256Digest(rc)
		rc.Close()
		if d != m.Layers[i].Digest.String() {
			t.Fatalf("pull %s: layer %d holds %s, not %s", ref, i, d, m.Layers[i].Digest)
		}
	}
}

func sha256Digest(r io.Reader) string {
	h := sha256.New()
	io.Copy(h, r)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// wantStorageFull checks that err is dockyard's answer to a full disk: 507 with an
// OCI error body whose message says so.
func wantStorageFull(t *testing.T, err error, says string) {
	t.Helper()
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusInsufficientStorage || len(terr.Errors) != 1 {
		t.Fatalf("want 507 with one OCI error, got %v", err)
	}
	if e := terr.Errors[0]; e.Code != "UNKNOWN" || !strings.Contains(e.Message, says) {
		t.Fatalf("want the OCI error saying %q, got %s: %s", says, e.Code, e.Message)
	}
}

// nothingHalfCommitted checks what a refused push leaves: every blob file has its
// index record and the content its name says (and, by the store's check, every
// record its file and every count its references), and uploads hold no bytes that
// were not acknowledged.
func nothingHalfCommitted(t *testing.T, store *cache.Store, data string) {
	t.Helper()
	root := filepath.Join(data, "blobs")
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		d := oci.Digest("sha256:" + e.Name())
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if got := sha256Digest(f); got != string(d) {
			t.Errorf("blob file %s holds content hashing to %s", e.Name(), got)
		}
		if refs, _, err := store.RefCounts(d); err != nil || refs < 0 {
			t.Errorf("blob file %s has no index record (%v)", e.Name(), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var held int64
	filepath.WalkDir(filepath.Join(data, "uploads"), func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if fi, err := e.Info(); err == nil {
				held += fi.Size()
			}
		}
		return nil
	})
	if held != 0 {
		t.Errorf("uploads hold %d bytes after the refused push", held)
	}
	rep, err := store.Check(t.Context(), cache.CheckOptions{VerifyDigests: true})
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("check: %v %v", rep.Problems, err)
	}
}

// startUpload opens an upload session in repo and returns its URL.
func startUpload(t *testing.T, addr, repo string) string {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start an upload: %d", resp.StatusCode)
	}
	return "http://" + addr + resp.Header.Get("Location")
}

// sendChunk sends chunk as the first of upload loc.
func sendChunk(loc string, chunk []byte) error {
	req, _ := http.NewRequest(http.MethodPatch, loc, bytes.NewReader(chunk))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("0-%d", len(chunk)-1))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return transport.CheckError(resp, http.StatusAccepted)
}

// finishUpload closes upload loc, which holds content, and checks the blob is stored.
func finishUpload(t *testing.T, addr, loc string, content []byte) {
	t.Helper()
	d := oci.FromBytes(oci.SHA256, content)
	req, _ := http.NewRequest(http.MethodPut, loc+"?digest="+string(d), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusCreated); err != nil {
		t.Fatalf("finish the upload: %v", err)
	}
	resp, err = http.Get("http://" + addr + resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, content) {
		t.Fatalf("the blob of the finished upload: %d bytes, want %d", len(got), len(content))
	}
}

// collect runs garbage collection on demand (from loopback: no credentials).
func collect(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/-/admin/gc", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("gc: %d %s", resp.StatusCode, body)
	}
}

// fsckClean runs dockyard fsck --verify-digests on the stopped server's data.
func fsckClean(t *testing.T, cfg, data string) {
	t.Helper()
	var out bytes.Buffer
	if err := run([]string{"fsck", "--config", cfg, "--data", data, "--verify-digests"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "; 0 problems") {
		t.Errorf("fsck: %v\n%s", err, out.String())
	}
}
