// Command publicreg stands in front of a registry and answers the way public
// registries do for repositories they do not have, for dockyard's end-to-end tests: no
// public registry is reachable from the test machines, and the CNCF registry answers an
// honest 404.
//
//	publicreg -listen 127.0.0.1:PORT -backend http://127.0.0.1:PORT2 -mode hub|ghcr
//
// Both modes require a bearer token, granted anonymously for any scope at /token. For a
// repository the backend does not have, "hub" answers 401 with an insufficient_scope
// challenge (Docker Hub's answer), "ghcr" 403 DENIED (ghcr.io's). Everything else is
// passed to the backend.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

const token = "anonymous-public-token"

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	backend := flag.String("backend", "", "the registry behind, e.g. http://127.0.0.1:5001")
	mode := flag.String("mode", "hub", "hub (401 for unknown repositories) or ghcr (403)")
	flag.Parse()
	u, err := url.Parse(*backend)
	if err != nil || u.Host == "" {
		log.Fatalf("-backend %q: %v", *backend, err)
	}
	if *mode != "hub" && *mode != "ghcr" {
		log.Fatalf("-mode %q: hub or ghcr", *mode)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	realm := func(r *http.Request) string { return "http://" + r.Host + "/token" }
	challenge := func(w http.ResponseWriter, r *http.Request, scope, errName string) {
		v := fmt.Sprintf(`Bearer realm=%q,service="registry.test"`, realm(r))
		if scope != "" {
			v += fmt.Sprintf(`,scope=%q`, scope)
		}
		if errName != "" {
			v += fmt.Sprintf(`,error=%q`, errName)
		}
		w.Header().Set("WWW-Authenticate", v)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	}
	http.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":%q,"access_token":%q,"expires_in":300}`, token, token)
	})
	http.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		repo := repository(r.URL.Path)
		scope := ""
		if repo != "" {
			scope = "repository:" + repo + ":pull"
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			challenge(w, r, scope, "")
			return
		}
		if repo != "" && (r.Method == "GET" || r.Method == "HEAD") && !has(u, repo) {
			if *mode == "hub" {
				challenge(w, r, scope, "insufficient_scope")
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
			return
		}
		r.Header.Del("Authorization")
		proxy.ServeHTTP(w, r)
	})
	log.Printf("publicreg (%s) on %s in front of %s", *mode, *listen, u)
	log.Fatal(http.ListenAndServe(*listen, nil))
}

// repository is the repository a /v2/<name>/{manifests,blobs,tags,referrers}/ path names.
func repository(path string) string {
	rest := strings.TrimPrefix(path, "/v2/")
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, sep); i > 0 {
			return rest[:i]
		}
	}
	return ""
}

// has asks the backend whether it holds any tag of repo.
func has(backend *url.URL, repo string) bool {
	resp, err := http.Get(backend.String() + "/v2/" + repo + "/tags/list")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
