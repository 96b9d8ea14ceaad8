package gateway_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/gateway"
	"github.com/dockyard/dockyard/oci"
)

// A Docker daemon streams each layer as one chunked PATCH without Content-Range.
func TestChunkedTransferEncodingPatchUpload(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	blob := make([]byte, 5<<20+3)
	rand.Read(blob)
	loc := r.startUpload("docker/style")
	req, _ := http.NewRequest("PATCH", r.url(loc), io.MultiReader(bytes.NewReader(blob[:1<<20]), bytes.NewReader(blob[1<<20:])))
	req.ContentLength = -1 // forces Transfer-Encoding: chunked
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 || resp.Header.Get("Range") != fmt.Sprintf("0-%d", len(blob)-1) {
		t.Fatalf("chunked PATCH: %d Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	d := sha256Of(blob)
	if put := r.do("PUT", resp.Header.Get("Location")+"?digest="+d, nil); put.StatusCode != 201 {
		t.Fatalf("PUT: %d %s", put.StatusCode, put.body)
	}
	if got := r.do("GET", "/v2/docker/style/blobs/"+d, nil); !bytes.Equal(got.body, blob) {
		t.Fatal("blob differs")
	}
}

func TestSHA512ChunkedUpload(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	blob := []byte("sha512 content in two chunks")
	resp := r.do("POST", "/v2/algo/app/blobs/uploads/?digest-algorithm=sha512", nil)
	if resp.StatusCode != 202 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	resp = r.do("PATCH", resp.Header.Get("Location"), blob[:10], "Content-Range", "0-9")
	d := string(oci.FromBytes(oci.SHA512, blob))
	resp = r.do("PUT", resp.Header.Get("Location")+"?digest="+d, blob[10:], "Content-Range", fmt.Sprintf("10-%d", len(blob)-1))
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != d {
		t.Fatalf("PUT: %d %s", resp.StatusCode, resp.body)
	}
	if got := r.do("GET", "/v2/algo/app/blobs/"+d, nil); got.StatusCode != 200 || !bytes.Equal(got.body, blob) {
		t.Fatalf("GET sha512 blob: %d", got.StatusCode)
	}
}

func TestCrossRepositoryMount(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	d := r.pushBlob("src/app", []byte("mountable"))
	if resp := r.do("POST", "/v2/dst/app/blobs/uploads/?mount="+d+"&from=src/app", nil); resp.StatusCode != 201 ||
		resp.Header.Get("Location") != "/v2/dst/app/blobs/"+d || resp.Header.Get("Docker-Content-Digest") != d {
		t.Errorf("mount with from: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := r.do("POST", "/v2/dst2/app/blobs/uploads/?mount="+d, nil); resp.StatusCode != 201 {
		t.Errorf("mount without from: %d", resp.StatusCode)
	}
	// A blob the source repository does not have starts an ordinary upload.
	if resp := r.do("POST", "/v2/dst3/app/blobs/uploads/?mount="+d+"&from=nothere/app", nil); resp.StatusCode != 202 ||
		!strings.HasPrefix(resp.Header.Get("Location"), "/v2/dst3/app/blobs/uploads/") {
		t.Errorf("mount from a repository without the blob: %d %v", resp.StatusCode, resp.Header)
	}
	if b, _, _ := r.store.RefCounts(oci.Digest(d)); b != 0 {
		t.Errorf("blob refs after two mounts: %d, want 0 (links are not references)", b)
	}
}

func TestManifestNegotiationAndConditionalGet(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	m := r.pushImage("neg/app", "v1", []byte(`{}`), []byte("l"))
	d := sha256Of(m)
	if resp := r.do("GET", "/v2/neg/app/manifests/v1", nil, "Accept", "application/vnd.docker.distribution.manifest.v2+json"); resp.StatusCode != 404 {
		t.Errorf("OCI manifest for a client accepting only Docker types: %d", resp.StatusCode)
	}
	for _, accept := range []string{"", "*/*", mtOCIManifest, "application/vnd.docker.distribution.manifest.v2+json, " + mtOCIManifest + ";q=0.5"} {
		resp := r.do("GET", "/v2/neg/app/manifests/v1", nil, "Accept", accept)
		if resp.StatusCode != 200 || !bytes.Equal(resp.body, m) || resp.Header.Get("Content-Type") != mtOCIManifest || resp.Header.Get("Docker-Content-Digest") != d {
			t.Errorf("Accept %q: %d %q", accept, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	head := r.do("HEAD", "/v2/neg/app/manifests/"+d, nil)
	if head.StatusCode != 200 || head.ContentLength != int64(len(m)) || len(head.body) != 0 {
		t.Errorf("HEAD: %d length %d body %d", head.StatusCode, head.ContentLength, len(head.body))
	}
	if resp := r.do("GET", "/v2/neg/app/manifests/v1", nil, "If-None-Match", `"`+d+`"`); resp.StatusCode != 304 {
		t.Errorf("conditional GET: %d", resp.StatusCode)
	}
	// A manifest is readable through the blobs endpoint too.
	if resp := r.do("GET", "/v2/neg/app/blobs/"+d, nil); resp.StatusCode != 200 || !bytes.Equal(resp.body, m) {
		t.Errorf("manifest as blob: %d", resp.StatusCode)
	}
}

func TestListingsPaginateWithLinkHeaders(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	m := r.pushImage("page/app", "a", []byte(`{}`), []byte("l"))
	d := sha256Of(m)
	tags := []string{"b", "c", "d", "e"}
	q := ""
	for _, tg := range tags {
		q += "&tag=" + tg
	}
	resp := r.do("PUT", "/v2/page/app/manifests/"+d+"?"+q[1:], m, "Content-Type", mtOCIManifest)
	if resp.StatusCode != 201 || resp.Header.Get("OCI-Tag") != "b, c, d, e" {
		t.Fatalf("push with tags: %d OCI-Tag %q", resp.StatusCode, resp.Header.Get("OCI-Tag"))
	}
	var got []string
	next := "/v2/page/app/tags/list?n=2"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp := r.do("GET", next, nil)
		var body struct{ Tags []string }
		json.Unmarshal(resp.body, &body)
		got = append(got, body.Tags...)
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			next = strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
		}
	}
	if strings.Join(got, ",") != "a,b,c,d,e" {
		t.Errorf("paged tags: %v", got)
	}
	if resp := r.do("GET", "/v2/page/app/tags/list?n=0", nil); string(resp.body) != `{"name":"page/app","tags":[]}` || resp.Header.Get("Link") != "" {
		t.Errorf("n=0: %s Link %q", resp.body, resp.Header.Get("Link"))
	}
	r.pushBlob("page/other", []byte("x"))
	resp = r.do("GET", "/v2/_catalog?n=1", nil)
	if string(resp.body) != `{"repositories":["page/app"]}` || !strings.Contains(resp.Header.Get("Link"), "last=page%2Fapp") {
		t.Errorf("catalog page: %s Link %q", resp.body, resp.Header.Get("Link"))
	}
}

func TestDeletingAManifestRemovesItsTagsAndReferences(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	layer := []byte("layer to be released")
	m := r.pushImage("del/app", "v1", []byte(`{"a":1}`), layer)
	d := sha256Of(m)
	if resp := r.do("PUT", "/v2/del/app/manifests/v2", m, "Content-Type", mtOCIManifest); resp.StatusCode != 201 {
		t.Fatalf("tag v2: %d %s", resp.StatusCode, resp.body)
	}
	if resp := r.do("GET", "/v2/del/app/manifests/v2", nil); resp.StatusCode != 200 {
		t.Fatalf("v2 before the delete: %d", resp.StatusCode)
	}
	if b, mr, _ := r.store.RefCounts(oci.Digest(d)); mr != 1 || b != -1 {
		t.Fatalf("manifest refs before delete: %d", mr)
	}
	if resp := r.do("DELETE", "/v2/del/app/manifests/"+d, nil); resp.StatusCode != 202 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	for _, tag := range []string{"v1", "v2", d} {
		if resp := r.do("GET", "/v2/del/app/manifests/"+tag, nil); resp.StatusCode != 404 {
			t.Errorf("%s after delete: %d", tag, resp.StatusCode)
		}
	}
	if _, mr, _ := r.store.RefCounts(oci.Digest(d)); mr != 0 {
		t.Errorf("manifest refs after delete: %d, want 0", mr)
	}
	// The layer is still referenced by the manifest's content until garbage
	// collection removes it.
	if b, _, _ := r.store.RefCounts(oci.Digest(sha256Of(layer))); b != 1 {
		t.Errorf("layer refs: %d, want 1", b)
	}
	if resp := r.do("DELETE", "/v2/del/app/blobs/"+sha256Of(layer), nil); resp.StatusCode != 202 {
		t.Errorf("blob delete: %d", resp.StatusCode)
	}
	if resp := r.do("GET", "/v2/del/app/blobs/"+sha256Of(layer), nil); resp.StatusCode != 404 {
		t.Errorf("unlinked blob: %d", resp.StatusCode)
	}
}

func TestCORS(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{cors: gateway.CORS{
		AllowedOrigins: []string{"https://ui.example.com"}, AllowedMethods: []string{"GET", "HEAD"},
		AllowedHeaders: []string{"Authorization"}, ExposedHeaders: []string{"Docker-Content-Digest"}, MaxAge: time.Minute,
	}})
	resp := r.do("OPTIONS", "/v2/x/tags/list", nil, "Origin", "https://ui.example.com", "Access-Control-Request-Method", "GET")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "https://ui.example.com" ||
		resp.Header.Get("Access-Control-Allow-Methods") != "GET, HEAD" || resp.Header.Get("Access-Control-Max-Age") != "60" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp = r.do("GET", "/v2/", nil, "Origin", "https://ui.example.com")
	if resp.Header.Get("Access-Control-Expose-Headers") != "Docker-Content-Digest" {
		t.Errorf("simple request: %v", resp.Header)
	}
	if resp := r.do("GET", "/v2/", nil, "Origin", "https://evil.example.com"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("unlisted origin allowed")
	}
}
