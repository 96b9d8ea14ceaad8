package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

const (
	mtOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex    = "application/vnd.oci.image.index.v1+json"
	mtOCIConfig   = "application/vnd.oci.image.config.v1+json"
	mtOCILayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

func sha256Of(b []byte) string { return string(oci.FromBytes(oci.SHA256, b)) }

// pushBlob stores b in repo with a single POST and returns its digest.
func (r *testRegistry) pushBlob(repo string, b []byte) string {
	r.t.Helper()
	d := sha256Of(b)
	resp := r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d, b)
	if resp.StatusCode != http.StatusCreated {
		r.t.Fatalf("push blob: %d %s", resp.StatusCode, resp.body)
	}
	return d
}

// imageManifest builds an OCI image manifest over config and layers already pushed.
func imageManifest(config []byte, layers ...[]byte) []byte {
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	m := map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIManifest,
		"config": desc{mtOCIConfig, sha256Of(config), len(config)},
	}
	ls := []desc{}
	for _, l := range layers {
		ls = append(ls, desc{mtOCILayer, sha256Of(l), len(l)})
	}
	m["layers"] = ls
	b, _ := json.Marshal(m)
	return b
}

// pushImage pushes a config, layers and manifest under tag; it returns the manifest.
func (r *testRegistry) pushImage(repo, tag string, config []byte, layers ...[]byte) []byte {
	r.t.Helper()
	r.pushBlob(repo, config)
	for _, l := range layers {
		r.pushBlob(repo, l)
	}
	m := imageManifest(config, layers...)
	resp := r.do("PUT", "/v2/"+repo+"/manifests/"+tag, m, "Content-Type", mtOCIManifest)
	if resp.StatusCode != http.StatusCreated {
		r.t.Fatalf("push manifest: %d %s", resp.StatusCode, resp.body)
	}
	return m
}

// startUpload opens an upload session and returns its location.
func (r *testRegistry) startUpload(repo string) string {
	r.t.Helper()
	resp := r.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("start upload: %d %s", resp.StatusCode, resp.body)
	}
	return resp.Header.Get("Location")
}

// state is what a bad request must leave untouched.
type state struct {
	blobs []string
	index string
}

// state snapshots the blob files, the catalog and tags, and the answers to GETs of
// probe paths (a rejected body's digest, as a manifest and as a blob: a manifest stored
// untagged shows in neither the catalog nor a tag list).
func (r *testRegistry) state(probes ...string) state {
	r.t.Helper()
	cat := r.do("GET", "/v2/_catalog", nil)
	var c struct{ Repositories []string }
	json.Unmarshal(cat.body, &c)
	idx := string(cat.body)
	for _, repo := range c.Repositories {
		idx += string(r.do("GET", "/v2/"+repo+"/tags/list", nil).body)
	}
	for _, p := range probes {
		idx += fmt.Sprintf(" %s→%d", p, r.do("GET", p, nil, "Accept", "*/*").StatusCode)
	}
	return state{blobs: r.blobFiles(), index: idx}
}

func TestMalformedRequestsGetOCIErrorsAndStoreNothing(t *testing.T) {
	r := startRegistry(t, t.TempDir(), registryOptions{})
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := []byte("layer bytes for the bad input test")
	manifest := r.pushImage("base/app", "v1", config, layer)
	layerDigest := sha256Of(layer)
	unknown := sha256Of([]byte("never pushed"))
	longName := strings.Repeat("a", 300)

	missingBlobManifest := imageManifest(config, layer, []byte("missing layer"))
	indexMissingChild, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtOCIIndex,
		"manifests": []map[string]any{{"mediaType": mtOCIManifest, "digest": unknown, "size": 10}}})
	badLayerDigest := bytes.Replace(manifest, []byte(layerDigest), []byte("sha256:nothex"), 1)
	wrongSchema := bytes.Replace(manifest, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":1`), 1)
	schema1 := []byte(`{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+json","name":"x","tag":"y","fsLayers":[]}`)
	oversized := append([]byte(`{"schemaVersion":2,"annotations":{"a":"`), bytes.Repeat([]byte("x"), 4<<20)...)
	oversized = append(oversized, `"}}`...)

	// withUpload opens an upload with 10 bytes written and returns its location.
	withUpload := func(r *testRegistry) string {
		loc := r.startUpload("base/app")
		resp := r.do("PATCH", loc, []byte("0123456789"), "Content-Range", "0-9", "Content-Type", "application/octet-stream")
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("setup PATCH: %d %s", resp.StatusCode, resp.body)
		}
		return loc
	}

	cases := []struct {
		name    string
		method  string
		path    string
		setup   func(r *testRegistry) string // returns the path when set
		suffix  string                       // appended to the setup path
		headers []string
		body    []byte
		status  int
		code    string
	}{
		{name: "uppercase repository name", method: "GET", path: "/v2/Base/App/manifests/v1", status: 400, code: "NAME_INVALID"},
		{name: "dot-dot in repository name", method: "GET", path: "/v2/base/../app/manifests/v1", status: 400, code: "NAME_INVALID"},
		{name: "encoded dot-dot in repository name", method: "GET", path: "/v2/base/%2E%2E/app/tags/list", status: 400, code: "NAME_INVALID"},
		{name: "over-long repository name", method: "GET", path: "/v2/" + longName + "/tags/list", status: 400, code: "NAME_INVALID"},
		{name: "empty path component", method: "GET", path: "/v2/base//app/tags/list", status: 400, code: "NAME_INVALID"},
		{name: "bad separator in name", method: "GET", path: "/v2/base/a_-b/tags/list", status: 400, code: "NAME_INVALID"},
		{name: "name ending in separator", method: "GET", path: "/v2/base/app-/tags/list", status: 400, code: "NAME_INVALID"},
		{name: "digest not hex", method: "GET", path: "/v2/base/app/blobs/sha256:zzzz", status: 400, code: "DIGEST_INVALID"},
		{name: "digest algorithm unknown", method: "GET", path: "/v2/base/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, code: "DIGEST_INVALID"},
		{name: "digest too short", method: "GET", path: "/v2/base/app/blobs/sha256:" + strings.Repeat("a", 63), status: 400, code: "DIGEST_INVALID"},
		{name: "digest uppercase hex", method: "HEAD", path: "/v2/base/app/blobs/sha256:" + strings.Repeat("A", 64), status: 400},
		{name: "unknown blob", method: "GET", path: "/v2/base/app/blobs/" + unknown, status: 404, code: "BLOB_UNKNOWN"},
		{name: "blob of another repository", method: "GET", path: "/v2/other/app/blobs/" + layerDigest, status: 404, code: "BLOB_UNKNOWN"},
		{name: "unsatisfiable range", method: "GET", path: "/v2/base/app/blobs/" + layerDigest, headers: []string{"Range", "bytes=100000-"}, status: 416},
		{name: "invalid tag", method: "GET", path: "/v2/base/app/manifests/-bad", status: 400, code: "MANIFEST_INVALID"},
		{name: "unknown tag", method: "GET", path: "/v2/base/app/manifests/nope", status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "manifest not JSON", method: "PUT", path: "/v2/base/app/manifests/bad", body: []byte("{not json"), headers: []string{"Content-Type", mtOCIManifest}, status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest trailing data", method: "PUT", path: "/v2/base/app/manifests/bad", body: append(bytes.Clone(manifest), "{}"...), headers: []string{"Content-Type", mtOCIManifest}, status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest schemaVersion 1", method: "PUT", path: "/v2/base/app/manifests/bad", body: wrongSchema, headers: []string{"Content-Type", mtOCIManifest}, status: 400, code: "MANIFEST_INVALID"},
		{name: "docker schema 1 manifest", method: "PUT", path: "/v2/base/app/manifests/bad", body: schema1, headers: []string{"Content-Type", "application/vnd.docker.distribution.manifest.v1+json"}, status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest with invalid layer digest", method: "PUT", path: "/v2/base/app/manifests/bad", body: badLayerDigest, headers: []string{"Content-Type", mtOCIManifest}, status: 400, code: "MANIFEST_INVALID"},
		{name: "content type differs from mediaType", method: "PUT", path: "/v2/base/app/manifests/bad", body: manifest, headers: []string{"Content-Type", mtOCIIndex}, status: 400, code: "MANIFEST_INVALID"},
		{name: "manifest references missing blob", method: "PUT", path: "/v2/base/app/manifests/bad", body: missingBlobManifest, headers: []string{"Content-Type", mtOCIManifest}, status: 400, code: "MANIFEST_BLOB_UNKNOWN"},
		{name: "index references missing manifest", method: "PUT", path: "/v2/base/app/manifests/bad", body: indexMissingChild, headers: []string{"Content-Type", mtOCIIndex}, status: 400, code: "MANIFEST_BLOB_UNKNOWN"},
		{name: "manifest digest mismatch", method: "PUT", path: "/v2/base/app/manifests/" + unknown, body: manifest, headers: []string{"Content-Type", mtOCIManifest}, status: 400, code: "DIGEST_INVALID"},
		{name: "oversized manifest", method: "PUT", path: "/v2/base/app/manifests/big", body: oversized, headers: []string{"Content-Type", mtOCIManifest}, status: 413, code: "MANIFEST_INVALID"},
		{name: "invalid tag parameter", method: "PUT", path: "/v2/base/app/manifests/" + sha256Of(manifest) + "?tag=bad!tag", body: manifest, headers: []string{"Content-Type", mtOCIManifest}, status: 400, code: "MANIFEST_INVALID"},
		{name: "monolithic push digest mismatch", method: "POST", path: "/v2/base/app/blobs/uploads/?digest=" + unknown, body: []byte("other bytes"), status: 400, code: "DIGEST_INVALID"},
		{name: "monolithic push malformed digest", method: "POST", path: "/v2/base/app/blobs/uploads/?digest=sha256:xyz", body: []byte("x"), status: 400, code: "DIGEST_INVALID"},
		{name: "unsupported digest algorithm", method: "POST", path: "/v2/base/app/blobs/uploads/?digest-algorithm=md5", status: 400, code: "DIGEST_INVALID"},
		{name: "mount with malformed digest", method: "POST", path: "/v2/base/app/blobs/uploads/?mount=nope&from=base/app", status: 400, code: "DIGEST_INVALID"},
		{name: "unknown upload id", method: "PATCH", path: "/v2/base/app/blobs/uploads/0123456789abcdef", body: []byte("x"), status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
		{name: "malformed upload id", method: "PATCH", path: "/v2/base/app/blobs/uploads/bad.id%21", body: []byte("x"), status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
		{name: "status of unknown upload", method: "GET", path: "/v2/base/app/blobs/uploads/0123456789abcdef", status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
		{name: "cancel of unknown upload", method: "DELETE", path: "/v2/base/app/blobs/uploads/0123456789abcdef", status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
		{name: "upload used through another repository", method: "GET", setup: withUpload, status: 404, code: "BLOB_UPLOAD_UNKNOWN",
			suffix: "#other"},
		{name: "first chunk not at 0", method: "PATCH", setup: func(r *testRegistry) string { return r.startUpload("base/app") },
			body: []byte("abcde"), headers: []string{"Content-Range", "5-9"}, status: 416, code: "BLOB_UPLOAD_INVALID"},
		{name: "overlapping chunk", method: "PATCH", setup: withUpload, body: []byte("abcdefghij"), headers: []string{"Content-Range", "5-14"}, status: 416, code: "BLOB_UPLOAD_INVALID"},
		{name: "chunk past the end", method: "PATCH", setup: withUpload, body: []byte("abc"), headers: []string{"Content-Range", "20-22"}, status: 416, code: "BLOB_UPLOAD_INVALID"},
		{name: "malformed Content-Range", method: "PATCH", setup: withUpload, body: []byte("abc"), headers: []string{"Content-Range", "ten-twelve"}, status: 416, code: "BLOB_UPLOAD_INVALID"},
		{name: "Content-Range disagrees with length", method: "PATCH", setup: withUpload, body: []byte("abc"), headers: []string{"Content-Range", "10-19"}, status: 416, code: "BLOB_UPLOAD_INVALID"},
		{name: "final PUT digest mismatch", method: "PUT", setup: withUpload, suffix: "?digest=" + unknown, status: 400, code: "DIGEST_INVALID"},
		{name: "final PUT with chunk and wrong digest", method: "PUT", setup: withUpload, suffix: "?digest=" + sha256Of([]byte("0123456789")), body: []byte("more"), headers: []string{"Content-Range", "10-13"}, status: 400, code: "DIGEST_INVALID"},
		{name: "final PUT without digest", method: "PUT", setup: withUpload, status: 400, code: "DIGEST_INVALID"},
		{name: "final PUT chunk out of order", method: "PUT", setup: withUpload, suffix: "?digest=" + unknown, body: []byte("abc"), headers: []string{"Content-Range", "3-5"}, status: 416, code: "BLOB_UPLOAD_INVALID"},
		{name: "POST on a manifest", method: "POST", path: "/v2/base/app/manifests/v1", status: 405, code: "UNSUPPORTED"},
		{name: "PUT on a blob", method: "PUT", path: "/v2/base/app/blobs/" + layerDigest, body: layer, status: 405, code: "UNSUPPORTED"},
		{name: "DELETE on tag list", method: "DELETE", path: "/v2/base/app/tags/list", status: 405, code: "UNSUPPORTED"},
		{name: "PATCH on uploads endpoint", method: "PATCH", path: "/v2/base/app/blobs/uploads/", body: []byte("x"), status: 405, code: "UNSUPPORTED"},
		{name: "tags of unknown repository", method: "GET", path: "/v2/no/such/repo/tags/list", status: 404, code: "NAME_UNKNOWN"},
		{name: "negative page size", method: "GET", path: "/v2/base/app/tags/list?n=-1", status: 400},
		{name: "non-numeric page size", method: "GET", path: "/v2/_catalog?n=ten", status: 400},
		{name: "delete unknown blob", method: "DELETE", path: "/v2/base/app/blobs/" + unknown, status: 404, code: "BLOB_UNKNOWN"},
		{name: "delete unknown manifest", method: "DELETE", path: "/v2/base/app/manifests/" + unknown, status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "delete unknown tag", method: "DELETE", path: "/v2/base/app/manifests/nope", status: 404, code: "MANIFEST_UNKNOWN"},
		{name: "referrers with bad digest", method: "GET", path: "/v2/base/app/referrers/sha256:1234", status: 400, code: "DIGEST_INVALID"},
		{name: "not a V2 path", method: "GET", path: "/v3/", status: 404},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			if c.setup != nil {
				path = c.setup(r)
				if c.suffix == "#other" {
					path = strings.Replace(path, "/v2/base/app/", "/v2/other/app/", 1)
				} else {
					path += c.suffix
				}
			}
			var probes []string
			if c.body != nil {
				d := sha256Of(c.body)
				probes = []string{"/v2/base/app/manifests/" + d, "/v2/base/app/blobs/" + d}
			}
			before := r.state(probes...)
			headers := c.headers
			if c.body != nil && !slices.Contains(headers, "Content-Type") {
				headers = append(headers, "Content-Type", "application/octet-stream")
			}
			resp := r.do(c.method, path, c.body, headers...)
			if resp.StatusCode != c.status {
				t.Errorf("%s %s: status %d, want %d (%s)", c.method, path, resp.StatusCode, c.status, resp.body)
			}
			if c.method != "HEAD" {
				var body struct {
					Errors []struct{ Code, Message string }
				}
				if err := json.Unmarshal(resp.body, &body); err != nil || len(body.Errors) == 0 {
					t.Errorf("body is not an OCI error: %q", resp.body)
				} else if c.code != "" && body.Errors[0].Code != c.code {
					t.Errorf("code %s, want %s (%s)", body.Errors[0].Code, c.code, body.Errors[0].Message)
				}
			}
			if after := r.state(probes...); !slices.Equal(after.blobs, before.blobs) || after.index != before.index {
				t.Errorf("the request changed what is stored:\nbefore %v %s\nafter  %v %s", before.blobs, before.index, after.blobs, after.index)
			}
		})
	}
	// The failed final PUTs left their uploads as they were: 10 bytes, still open.
	loc := withUpload(r)
	r.do("PUT", loc+"?digest="+unknown, []byte("tail"), "Content-Range", "10-13")
	if resp := r.do("GET", loc, nil); resp.StatusCode != 204 || resp.Header.Get("Range") != "0-9" {
		t.Errorf("after a failed final PUT: %d Range %q, want 204 0-9", resp.StatusCode, resp.Header.Get("Range"))
	}
}
