package gateway

import (
	"net/url"
	"strings"

	"github.com/dockyard/dockyard/auth"
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

// The route table: every V2 endpoint with, for each method it answers, the action
// rules must allow, whether the registry must take writes, and the handler. Dispatch,
// the Allow header and authorisation are lookups here, never separate switches that
// must agree.
var endpoints = map[Kind]endpoint{
	KindBase: {name: "base", scope: scopeNone, ops: []op{
		{method: "GET", handle: (*Gateway).base},
		{method: "HEAD", handle: (*Gateway).base},
	}},
	KindCatalog: {name: "catalog", scope: scopeRegistry, costly: true, ops: []op{
		{method: "GET", action: auth.Pull, handle: (*Gateway).catalog},
	}},
	KindTags: {name: "tags", ops: []op{
		{method: "GET", action: auth.Pull, handle: (*Gateway).tags},
	}},
	KindManifest: {name: "manifest", ops: []op{
		{method: "GET", action: auth.Pull, handle: (*Gateway).getManifest},
		{method: "HEAD", action: auth.Pull, handle: (*Gateway).getManifest},
		{method: "PUT", action: auth.Push, write: true, handle: (*Gateway).putManifest},
		{method: "DELETE", action: auth.Delete, write: true, handle: (*Gateway).deleteManifest},
	}},
	KindBlob: {name: "blob", ops: []op{
		{method: "GET", action: auth.Pull, handle: (*Gateway).getBlob},
		{method: "HEAD", action: auth.Pull, handle: (*Gateway).getBlob},
		{method: "DELETE", action: auth.Delete, write: true, handle: (*Gateway).deleteBlob},
	}},
	KindUploads: {name: "uploads", upload: true, ops: []op{
		{method: "POST", action: auth.Push, write: true, handle: (*Gateway).startUpload},
	}},
	KindUpload: {name: "upload", upload: true, ops: []op{
		{method: "GET", action: auth.Push, write: true, handle: (*Gateway).uploadStatus},
		{method: "PATCH", action: auth.Push, write: true, handle: (*Gateway).patchUpload},
		{method: "PUT", action: auth.Push, write: true, handle: (*Gateway).finishUpload},
		{method: "DELETE", action: auth.Push, write: true, handle: (*Gateway).cancelUpload},
	}},
	KindReferrers: {name: "referrers", ops: []op{
		{method: "GET", action: auth.Pull, handle: (*Gateway).referrers},
	}},
}

// endpoint is one row of the route table.
type endpoint struct {
	name  string
	scope scope
	// upload endpoints receive blob data: their bodies may take hours, so they get the
	// upload timeout; every other body is small and read under the short one.
	upload bool
	// costly endpoints count against each client's rate (Limits.RatePerSecond).
	costly bool
	ops    []op
}

// scope is what an endpoint addresses, and so what a request for it is resolved to.
type scope int

const (
	scopeRepository scope = iota // a repository of the registry the host and name route to
	scopeRegistry                // the registry serving the host (the catalog)
	scopeNone                    // nothing (the base endpoint)
)

// op is one method of an endpoint.
type op struct {
	method string
	// action is what the rules must allow the caller on the repository.
	action auth.Action
	// write: the registry must take writes (a proxy, or a group without push_to, is
	// answered DENIED before the handler runs).
	write  bool
	handle func(*Gateway, *request) error
}

// op finds the endpoint's handling of method.
func (e endpoint) op(method string) (op, bool) {
	for _, o := range e.ops {
		if o.method == method {
			return o, true
		}
	}
	return op{}, false
}

// allow lists the endpoint's methods for the Allow header.
func (e endpoint) allow() string {
	methods := make([]string, len(e.ops))
	for i, o := range e.ops {
		methods[i] = o.method
	}
	return strings.Join(methods, ", ")
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

// isUploadRequest reports whether a request (method and raw request URI) sends blob
// data to an upload endpoint.
func isUploadRequest(method, uri []byte) bool {
	switch string(method) {
	case "POST", "PATCH", "PUT":
	default:
		return false
	}
	path := string(uri)
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	r, err := ParseRoute(path)
	return err == nil && endpoints[r.Kind].upload
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
