package gateway

import (
	"net/url"
	"strings"

	"github.com/dockyard/dockyard/oci"
)

// Kind names a V2 endpoint.
type Kind int

const (
	KindBase      Kind = iota // /v2/
	KindCatalog               // /v2/_catalog
	KindTags                  // /v2/<name>/tags/list
	KindManifest              // /v2/<name>/manifests/<reference>
	KindBlob                  // /v2/<name>/blobs/<digest>
	KindUploads               // /v2/<name>/blobs/uploads/
	KindUpload                // /v2/<name>/blobs/uploads/<id>
	KindReferrers             // /v2/<name>/referrers/<digest>
)

// endpoint is one row of the route table: the methods each endpoint answers.
type endpoint struct {
	name    string
	methods []string
}

var endpoints = map[Kind]endpoint{
	KindBase:      {"base", []string{"GET", "HEAD"}},
	KindCatalog:   {"catalog", []string{"GET"}},
	KindTags:      {"tags", []string{"GET"}},
	KindManifest:  {"manifest", []string{"GET", "HEAD", "PUT", "DELETE"}},
	KindBlob:      {"blob", []string{"GET", "HEAD", "DELETE"}},
	KindUploads:   {"uploads", []string{"POST"}},
	KindUpload:    {"upload", []string{"GET", "PATCH", "PUT", "DELETE"}},
	KindReferrers: {"referrers", []string{"GET"}},
}

// Route is a parsed V2 request path.
type Route struct {
	Kind      Kind
	Repo      oci.Repository // as the client named it
	Reference oci.Reference  // KindManifest
	Digest    oci.Digest     // KindBlob, KindReferrers
	UploadID  string         // KindUpload
}

// maxUploadID bounds upload ids taken from paths.
const maxUploadID = 128

// ParseRoute reads a request path into a Route. Repository names contain slashes, so
// the endpoint is found from the end of the path: the name is whatever precedes it.
func ParseRoute(rawPath string) (Route, error) {
	path, err := url.PathUnescape(rawPath)
	if err != nil {
		return Route{}, oci.ErrNotFound.Withf("malformed path %q", rawPath)
	}
	rest, ok := strings.CutPrefix(path, "/v2")
	if !ok || (rest != "" && rest[0] != '/') {
		return Route{}, oci.ErrNotFound.Withf("not a registry API path: %q", rawPath)
	}
	rest = strings.TrimPrefix(rest, "/")
	switch rest {
	case "":
		return Route{Kind: KindBase}, nil
	case "_catalog":
		return Route{Kind: KindCatalog}, nil
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	name := func(k int) (oci.Repository, error) { return oci.ParseRepository(strings.Join(segs[:n-k], "/")) }
	var r Route
	switch {
	case n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list":
		r.Kind = KindTags
		r.Repo, err = name(2)
	case n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads":
		r.Kind = KindUploads
		r.Repo, err = name(2)
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads" && segs[n-1] == "":
		r.Kind = KindUploads
		r.Repo, err = name(3)
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		r.Kind = KindUpload
		if r.Repo, err = name(3); err == nil {
			r.UploadID, err = parseUploadID(segs[n-1])
		}
	case n >= 3 && segs[n-2] == "manifests":
		r.Kind = KindManifest
		if r.Repo, err = name(2); err == nil {
			r.Reference, err = oci.ParseReference(segs[n-1])
		}
	case n >= 3 && segs[n-2] == "blobs":
		r.Kind = KindBlob
		if r.Repo, err = name(2); err == nil {
			r.Digest, err = oci.ParseDigest(segs[n-1])
		}
	case n >= 3 && segs[n-2] == "referrers":
		r.Kind = KindReferrers
		if r.Repo, err = name(2); err == nil {
			r.Digest, err = oci.ParseDigest(segs[n-1])
		}
	default:
		return Route{}, oci.ErrNotFound.Withf("not a registry API path: %q", rawPath)
	}
	return r, err
}

func parseUploadID(s string) (string, error) {
	if s == "" || len(s) > maxUploadID {
		return "", oci.ErrBlobUploadUnknown.Withf("invalid upload id")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", oci.ErrBlobUploadUnknown.Withf("invalid upload id %q", s)
		}
	}
	return s, nil
}
