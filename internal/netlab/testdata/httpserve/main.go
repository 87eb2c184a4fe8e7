// Command httpserve is the lab's plain HTTP server: GET /hello answers
// "hello from HOST", GET /bytes/N streams N deterministic bytes (see
// netlab.Pattern), on every address of its namespace (IPv4 and IPv6).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func main() {
	addr := flag.String("listen", ":8080", "listen address")
	flag.Parse()
	host, _ := os.Hostname()
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s to %s", host, r.RemoteAddr)
	})
	http.HandleFunc("/bytes/", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/bytes/"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		bw := bufio.NewWriterSize(w, 64<<10)
		var x uint32 = 1
		for i := int64(0); i < n; i++ {
			x = x*1664525 + 1013904223 // same generator as netlab's test
			bw.WriteByte(byte(x >> 24))
		}
		bw.Flush()
	})
	fmt.Println("serving on", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
