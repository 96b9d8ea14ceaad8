// Command faultyproxy runs the fault-injecting proxy of package test/peers/faulty as a
// process, for soak and end-to-end tests:
//
//	faultyproxy -listen 127.0.0.1:0 -upstream http://127.0.0.1:5001 [-rules JSON]
//
// It prints "listening on http://ADDR" once it serves. -rules takes a JSON rule or
// array of rules, e.g. [{"path":"/blobs/","cut":"reset","cut_at":-1,"probability":0.1}];
// more can be added, and the requests seen read, at http://ADDR/-/faulty/ (see
// faulty.Proxy.ServeHTTP).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"

	"github.com/dockyard/dockyard/test/peers/faulty"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := flag.String("upstream", "", "the registry behind, e.g. http://127.0.0.1:5001")
	rules := flag.String("rules", "", "initial rules (JSON rule or array of rules)")
	flag.Parse()
	p, err := faulty.New(*upstream)
	if err != nil {
		log.Fatal(err)
	}
	if *rules != "" {
		// The same parsing as the control API's.
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("POST", "/-/faulty/rules", bytes.NewBufferString(*rules)))
		if rec.Code != http.StatusNoContent {
			log.Fatalf("-rules: %s", rec.Body)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	log.Fatal(http.Serve(ln, p))
}
